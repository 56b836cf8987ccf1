//! Publishing to Pub/Sub over its REST API (`projects.topics.publish`): how a person triggers
//! an export by hand, the way Cloud Scheduler does.
//!
//! REST rather than the gRPC client crates: publishing one small message needs one HTTPS call,
//! and the gRPC stack (tonic, prost) would add minutes to every build of the binary.
//!
//! A publish is not idempotent: a message sent twice is two messages, and two runs of the
//! export. So it is sent again only when it provably was not taken: the connection could not
//! be made, or Pub/Sub answered 429 (`RESOURCE_EXHAUSTED`). A timeout or a 5xx is reported, not
//! retried; the person or scheduler that published decides.

use std::time::Duration;

use base64::Engine;
use ferry_core::{Classify, ErrorClass, RetryPolicy, Verdict};
/// How requests are authorised; shared with the other Google clients.
pub use ferry_google::Auth;
use ferry_google::{percent_encode, ApiError, GoogleError, TokenSource};
use serde_json::{json, Value};

/// The production endpoint.
pub const PUBSUB_ENDPOINT: &str = "https://pubsub.googleapis.com";

/// What failed while publishing.
#[derive(Debug, thiserror::Error)]
pub enum PubSubError {
    #[error("topic {0:?} is not a topic name: expected projects/PROJECT/topics/TOPIC, or TOPIC with a project")]
    Topic(String),
    /// No answer; `connected` is false when the connection could not even be made.
    #[error("Pub/Sub at {endpoint}: {reason}")]
    Transport { endpoint: String, reason: String, connected: bool },
    #[error("Pub/Sub refused to publish to {topic}: {api}")]
    Api { topic: String, api: ApiError },
    #[error("Pub/Sub published to {topic}, but the answer has no message id")]
    NoMessageId { topic: String },
    #[error("Pub/Sub credentials: {0}")]
    Credentials(GoogleError),
}

impl From<GoogleError> for PubSubError {
    fn from(e: GoogleError) -> Self {
        PubSubError::Credentials(e)
    }
}

impl Classify for PubSubError {
    fn class(&self) -> ErrorClass {
        match self {
            PubSubError::Transport { .. } => ErrorClass::Transient,
            PubSubError::Api { api, .. } => api.class(),
            PubSubError::Credentials(e) => e.class(),
            PubSubError::Topic(_) | PubSubError::NoMessageId { .. } => ErrorClass::Permanent,
        }
    }
}

/// `projects/P/topics/T` from a full name, or from `T` and a project.
pub fn topic_name(topic: &str, project: Option<&str>) -> Result<String, PubSubError> {
    let parts: Vec<&str> = topic.split('/').collect();
    let ok =
        |s: &str| s.starts_with(|c: char| c.is_ascii_alphabetic()) && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.~+%".contains(c));
    match (parts.as_slice(), project) {
        (["projects", p, "topics", t], _) if ok(p) && ok(t) => Ok(topic.to_owned()),
        ([t], Some(p)) if ok(t) && ok(p) => Ok(format!("projects/{p}/topics/{t}")),
        _ => Err(PubSubError::Topic(topic.to_owned())),
    }
}

/// Whether a failed publish may be sent again without publishing twice.
fn resend(e: &PubSubError) -> Verdict {
    match e {
        PubSubError::Transport { connected: false, .. } => Verdict::Retry,
        PubSubError::Api { api, .. } if api.status == 429 => Verdict::Retry,
        PubSubError::Credentials(g) => g.class().into(),
        _ => Verdict::Stop,
    }
}

/// Publishes messages to topics.
pub struct Publisher {
    http: reqwest::Client,
    endpoint: String,
    tokens: TokenSource,
    retry: RetryPolicy,
}

impl Publisher {
    /// `endpoint` is [`PUBSUB_ENDPOINT`] or an emulator's `http://host:port`. The metadata
    /// server of [`Auth::MetadataServer`] is moved by `GCE_METADATA_HOST`.
    pub fn new(endpoint: &str, auth: Auth) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("HTTP client");
        Self {
            tokens: TokenSource::new(http.clone(), auth),
            http,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            retry: RetryPolicy::default(),
        }
    }

    /// The same publisher with another retry policy (the default is [`RetryPolicy::default`]).
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Publishes `data` with `attributes` to `topic` (`projects/P/topics/T`); returns the
    /// message id. Sent again only when that cannot publish twice (see the crate docs).
    pub async fn publish(&self, topic: &str, data: &[u8], attributes: &[(&str, &str)]) -> Result<String, PubSubError> {
        self.retry.run_with("pubsub publish", || self.publish_once(topic, data, attributes), resend).await.map_err(|g| {
            if g.attempts <= 1 {
                return g.error;
            }
            let context = g.context();
            match g.error {
                PubSubError::Transport { endpoint, reason, connected } => {
                    PubSubError::Transport { endpoint, reason: format!("{reason}{context}"), connected }
                }
                PubSubError::Api { topic, api } => {
                    PubSubError::Api { topic, api: ApiError { message: format!("{}{context}", api.message), ..api } }
                }
                other => other,
            }
        })
    }

    async fn publish_once(&self, topic: &str, data: &[u8], attributes: &[(&str, &str)]) -> Result<String, PubSubError> {
        let attrs: serde_json::Map<String, Value> = attributes.iter().map(|(k, v)| ((*k).to_owned(), Value::from(*v))).collect();
        let body = json!({"messages": [{"data": base64::engine::general_purpose::STANDARD.encode(data), "attributes": attrs}]});
        let path: Vec<String> = topic.split('/').map(percent_encode).collect();
        let req = self.http.post(format!("{}/v1/{}:publish", self.endpoint, path.join("/"))).json(&body);
        let req = self.tokens.authorize(req).await?;
        let transport = |e: reqwest::Error| PubSubError::Transport {
            endpoint: self.endpoint.clone(),
            connected: !e.is_connect(),
            reason: e.without_url().to_string(),
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(PubSubError::Api { topic: topic.to_owned(), api: ApiError::parse(status.as_u16(), &bytes) });
        }
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        v["messageIds"][0].as_str().map(str::to_owned).ok_or_else(|| PubSubError::NoMessageId { topic: topic.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert_eq!(topic_name("projects/p-1/topics/ferry", None).unwrap(), "projects/p-1/topics/ferry");
        assert_eq!(topic_name("ferry", Some("p-1")).unwrap(), "projects/p-1/topics/ferry");
        assert!(topic_name("ferry", None).is_err());
        assert!(topic_name("projects/p/topics/../x", None).is_err());
        assert!(topic_name("projects/p/subscriptions/s", None).is_err());
    }

    /// What the stand-in Pub/Sub saw of a request.
    #[derive(Debug, Clone, PartialEq)]
    struct Seen {
        path: String,
        authorization: Option<String>,
        body: Value,
    }

    /// A stand-in Pub/Sub on 127.0.0.1: publishing to `projects/p/topics/denied` is refused
    /// with a Google error body, anything else gets message id 42.
    async fn stand_in() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Seen>>>) {
        use axum::http::{HeaderMap, StatusCode, Uri};
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
            let log = log.clone();
            async move {
                let authorization = headers.get("authorization").map(|v| v.to_str().expect("header").to_owned());
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                log.lock().expect("lock").push(Seen { path: uri.path().to_owned(), authorization, body });
                if uri.path().contains("/topics/busy:") && log.lock().expect("lock").len() == 1 {
                    return (StatusCode::TOO_MANY_REQUESTS, r#"{"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}}"#);
                }
                if uri.path().contains("/topics/down:") {
                    return (StatusCode::SERVICE_UNAVAILABLE, r#"{"error": {"code": 503, "message": "try later", "status": "UNAVAILABLE"}}"#);
                }
                if uri.path().contains("/topics/denied:") {
                    let denied = r#"{"error": {"code": 403, "message": "User not authorized to perform this action.", "status": "PERMISSION_DENIED"}}"#;
                    return (StatusCode::FORBIDDEN, denied);
                }
                (StatusCode::OK, r#"{"messageIds": ["42"]}"#)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (endpoint, seen)
    }

    #[tokio::test]
    async fn publishes_with_the_token_to_an_encoded_topic_path() {
        let (endpoint, seen) = stand_in().await;
        let publisher = Publisher::new(&endpoint, Auth::Token(ferry_core::Secret::new("t0ken")));
        let id = publisher.publish("projects/p-1/topics/a%b+c", b"{}", &[("origin", "test")]).await.expect("publish");
        assert_eq!(id, "42");
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path, "/v1/projects/p-1/topics/a%25b%2Bc:publish");
        assert_eq!(seen[0].authorization.as_deref(), Some("Bearer t0ken"));
        assert_eq!(seen[0].body, json!({"messages": [{"data": "e30=", "attributes": {"origin": "test"}}]}));
    }

    #[tokio::test]
    async fn a_refusal_quotes_google_s_error() {
        let (endpoint, seen) = stand_in().await;
        let err = Publisher::new(&endpoint, Auth::None).publish("projects/p/topics/denied", b"x", &[]).await.expect_err("denied");
        assert_eq!(
            err.to_string(),
            "Pub/Sub refused to publish to projects/p/topics/denied: HTTP 403 Forbidden (PERMISSION_DENIED): \
             User not authorized to perform this action."
        );
        assert_eq!(err.class(), ErrorClass::Permanent);
        assert_eq!(seen.lock().expect("lock")[0].authorization, None);
    }

    fn fast(publisher: Publisher) -> Publisher {
        publisher.with_retry(RetryPolicy::fast(3, Duration::from_secs(10)))
    }

    #[tokio::test]
    async fn a_429_is_published_again_a_503_is_not() {
        let (endpoint, seen) = stand_in().await;
        let id = fast(Publisher::new(&endpoint, Auth::None)).publish("projects/p/topics/busy", b"x", &[]).await.expect("second attempt");
        assert_eq!(id, "42");
        assert_eq!(seen.lock().expect("lock").len(), 2);

        let (endpoint, seen) = stand_in().await;
        let err = fast(Publisher::new(&endpoint, Auth::None)).publish("projects/p/topics/down", b"x", &[]).await.expect_err("503");
        assert_eq!(seen.lock().expect("lock").len(), 1, "the message may have been taken: not published twice");
        assert_eq!(err.class(), ErrorClass::Transient);
    }

    #[tokio::test]
    async fn a_refused_connection_is_tried_again_up_to_the_bound() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port();
        let err = fast(Publisher::new(&format!("http://127.0.0.1:{port}"), Auth::None))
            .publish("projects/p/topics/t", b"x", &[])
            .await
            .expect_err("nobody listens");
        assert!(matches!(err, PubSubError::Transport { connected: false, .. }), "{err:?}");
        assert!(err.to_string().ends_with("(gave up after 3 attempts: no attempts left)"), "{err}");
    }
}
