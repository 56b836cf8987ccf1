//! The token cache against a stand-in metadata server on 127.0.0.1.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use ferry_core::{Classify, ErrorClass};

use super::*;

mod adc;

/// What the stand-in answers to a token request.
#[derive(Clone)]
enum Answer {
    /// `{"access_token": "tok-N", "expires_in": …}`, N counting the requests.
    Token { expires_in: u64 },
    /// This status and body.
    Raw(u16, &'static str),
}

#[derive(Default)]
struct Seen {
    requests: AtomicUsize,
    without_flavor: AtomicUsize,
}

/// A metadata server on 127.0.0.1 that answers the token path like the real one, including the
/// 403 for a request without `Metadata-Flavor: Google`.
struct FakeMetadata {
    host: String,
    answer: Arc<Mutex<Answer>>,
    seen: Arc<Seen>,
}

impl FakeMetadata {
    async fn start(answer: Answer) -> Self {
        let answer = Arc::new(Mutex::new(answer));
        let seen = Arc::new(Seen::default());
        let (a, s) = (answer.clone(), seen.clone());
        let app = axum::Router::new().route(
            TOKEN_PATH,
            axum::routing::get(move |headers: HeaderMap| {
                let (answer, seen) = (a.clone(), s.clone());
                async move {
                    let n = seen.requests.fetch_add(1, Ordering::SeqCst) + 1;
                    // Slow enough that concurrent callers overlap with the request.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
                        seen.without_flavor.fetch_add(1, Ordering::SeqCst);
                        return (StatusCode::FORBIDDEN, "Missing Metadata-Flavor:Google header.".to_owned());
                    }
                    let answer = answer.lock().expect("lock").clone();
                    match answer {
                        Answer::Token { expires_in } => {
                            (StatusCode::OK, format!(r#"{{"access_token":"tok-{n}","expires_in":{expires_in},"token_type":"Bearer"}}"#))
                        }
                        Answer::Raw(status, body) => (StatusCode::from_u16(status).expect("status"), body.to_owned()),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let host = listener.local_addr().expect("address").to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { host, answer, seen }
    }

    fn answer(&self, answer: Answer) {
        *self.answer.lock().expect("lock") = answer;
    }

    fn requests(&self) -> usize {
        self.seen.requests.load(Ordering::SeqCst)
    }

    fn tokens(&self) -> TokenSource {
        TokenSource::with_metadata_host(reqwest::Client::new(), Auth::MetadataServer, &self.host)
    }
}

async fn token(tokens: &TokenSource) -> String {
    tokens.bearer().await.expect("token").expect("a bearer token").expose().to_owned()
}

#[tokio::test]
async fn sends_the_flavor_header_and_caches_the_token() {
    let server = FakeMetadata::start(Answer::Token { expires_in: 3599 }).await;
    let tokens = server.tokens();
    assert_eq!(token(&tokens).await, "tok-1");
    assert_eq!(token(&tokens).await, "tok-1");
    assert_eq!(token(&tokens.clone()).await, "tok-1", "clones share the cache");
    assert_eq!(server.requests(), 1);
    assert_eq!(server.seen.without_flavor.load(Ordering::SeqCst), 0);

    // The stand-in refuses a request without the header, as the real server does.
    let plain = reqwest::get(format!("http://{}{TOKEN_PATH}", server.host)).await.expect("request");
    assert_eq!(plain.status(), 403);
    assert_eq!(server.seen.without_flavor.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn refreshes_after_expiry() {
    // Valid for one second once the refresh margin is taken off.
    let server = FakeMetadata::start(Answer::Token { expires_in: REFRESH_MARGIN.as_secs() + 1 }).await;
    let tokens = server.tokens();
    assert_eq!(token(&tokens).await, "tok-1");
    assert_eq!(token(&tokens).await, "tok-1");
    assert_eq!(server.requests(), 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(token(&tokens).await, "tok-2");
    assert_eq!(token(&tokens).await, "tok-2");
    assert_eq!(server.requests(), 2);

    // A token that expires within the margin is never reused.
    server.answer(Answer::Token { expires_in: REFRESH_MARGIN.as_secs() - 1 });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(token(&tokens).await, "tok-3");
    assert_eq!(token(&tokens).await, "tok-4");
}

#[tokio::test]
async fn concurrent_callers_wait_for_one_request() {
    let server = FakeMetadata::start(Answer::Token { expires_in: 3599 }).await;
    let tokens = server.tokens();
    let (a, b, c, d) = tokio::join!(token(&tokens), token(&tokens), token(&tokens), token(&tokens));
    assert_eq!([a, b, c, d], ["tok-1", "tok-1", "tok-1", "tok-1"]);
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn a_failed_request_is_shared_by_its_waiters_and_not_cached() {
    let server = FakeMetadata::start(Answer::Raw(503, "metadata server is restarting")).await;
    let tokens = server.tokens();
    let (a, b, c) = tokio::join!(tokens.bearer(), tokens.bearer(), tokens.bearer());
    assert_eq!(server.requests(), 1, "the waiters share the one failed request");
    for result in [a, b, c] {
        let err = result.expect_err("503");
        assert!(matches!(&err, GoogleError::MetadataRefused { api, .. } if api.status == 503), "{err:?}");
        assert_eq!(err.class(), ErrorClass::Transient);
        assert_eq!(
            err.to_string(),
            format!(
                r#"metadata server {} refused the token request: HTTP 503 Service Unavailable: "metadata server is restarting""#,
                server.host
            )
        );
    }
    server.answer(Answer::Token { expires_in: 3599 });
    assert_eq!(token(&tokens).await, "tok-2", "the next caller asks again");
}

#[tokio::test]
async fn refused_and_garbled_answers() {
    let server = FakeMetadata::start(Answer::Raw(404, "Not Found")).await;
    let tokens = server.tokens();
    let err = tokens.bearer().await.expect_err("404");
    assert_eq!(err.class(), ErrorClass::Permanent, "no service account: asking again does not help");
    assert!(err.to_string().contains("HTTP 404 Not Found"), "{err}");

    // A wrong answer is reported by position only: serde's message could quote the token.
    server.answer(Answer::Raw(200, r#"{"access_token": "ya29.sentinel-token", "expires_in": "soon"}"#));
    let err = tokens.bearer().await.expect_err("not a token");
    assert!(matches!(err, GoogleError::MetadataToken { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(!format!("{err} {err:?}").contains("sentinel"), "{err:?}");

    server.answer(Answer::Raw(200, r#"{"access_token": "", "expires_in": 3599}"#));
    let err = tokens.bearer().await.expect_err("empty token");
    assert!(err.to_string().ends_with("the access token is empty"), "{err}");
}

#[tokio::test]
async fn an_unreachable_metadata_server_is_transient() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").to_string()
    };
    let tokens = TokenSource::with_metadata_host(reqwest::Client::new(), Auth::MetadataServer, &closed);
    let err = tokens.bearer().await.expect_err("nothing listens");
    assert!(matches!(err, GoogleError::MetadataUnreachable { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);
}

#[tokio::test]
async fn no_auth_and_fixed_tokens_ask_nobody() {
    let server = FakeMetadata::start(Answer::Token { expires_in: 3599 }).await;
    let none = TokenSource::with_metadata_host(reqwest::Client::new(), Auth::None, &server.host);
    assert!(none.bearer().await.expect("none").is_none());
    let req = none.authorize(reqwest::Client::new().get("http://127.0.0.1/")).await.expect("authorize");
    assert!(req.build().expect("request").headers().get("authorization").is_none());

    let fixed = TokenSource::with_metadata_host(reqwest::Client::new(), Auth::Token(Secret::new("fixed-token")), &server.host);
    assert_eq!(token(&fixed).await, "fixed-token");
    let req = fixed.authorize(reqwest::Client::new().get("http://127.0.0.1/")).await.expect("authorize").build().expect("request");
    let header = req.headers().get("authorization").expect("authorization header");
    assert_eq!(header, "Bearer fixed-token");
    assert!(header.is_sensitive());
    assert_eq!(server.requests(), 0);
}

#[tokio::test]
async fn debug_never_shows_a_token() {
    let server = FakeMetadata::start(Answer::Token { expires_in: 3599 }).await;
    let tokens = server.tokens();
    assert_eq!(token(&tokens).await, "tok-1");
    let shown = format!("{tokens:?}");
    assert!(!shown.contains("tok-1"), "{shown}");
    assert!(shown.contains("MetadataServer") && shown.contains(&server.host), "{shown}");

    let fixed = TokenSource::with_metadata_host(reqwest::Client::new(), Auth::Token(Secret::new("fixed-sentinel")), DEFAULT_METADATA_HOST);
    let shown = format!("{fixed:?} {:?}", Auth::Token(Secret::new("fixed-sentinel")));
    assert!(!shown.contains("fixed-sentinel"), "{shown}");
    assert!(shown.contains("Token(**REDACTED**)"), "{shown}");
}
