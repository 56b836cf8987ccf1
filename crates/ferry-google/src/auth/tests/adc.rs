//! Application Default Credentials against a token endpoint on 127.0.0.1 that verifies the
//! signed assertion with the key's public key, as Google's does. The RSA keys are made with the
//! `openssl` command when the tests run; none is kept in the repository.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use ring::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};

use super::*;
use crate::auth::exchange::{JWT_BEARER, SCOPE};

const EMAIL: &str = "ferry-test@acme-data.iam.gserviceaccount.com";
const KEY_ID: &str = "0123456789abcdef";
const CLIENT_ID: &str = "764086051850-test.apps.googleusercontent.com";
const CLIENT_SECRET: &str = "client-secret-sentinel";
const REFRESH_TOKEN: &str = "refresh-token-sentinel";

/// A throwaway RSA key: its PKCS#8 PEM (what a key file holds) and its public key as PKCS#1 DER
/// (what `ring` verifies with), both from `openssl`, not from the code under test.
struct TestKey {
    pem: String,
    public_der: Vec<u8>,
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("these tests make their RSA keys with the `openssl` command: install it (Debian: apt-get install openssl)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn make_key(dir: &Path, name: &str) -> TestKey {
    let pem_path = dir.join(format!("{name}.pem"));
    let pem_path = pem_path.to_str().expect("utf-8 path");
    openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", pem_path]);
    let public_der = openssl(&["rsa", "-in", pem_path, "-RSAPublicKey_out", "-outform", "DER"]);
    let pem = std::fs::read_to_string(pem_path).expect("key");
    std::fs::remove_file(pem_path).expect("remove the key");
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "openssl genpkey writes PKCS#8");
    TestKey { pem, public_der }
}

/// The key the token endpoint knows, and another one it does not; made once per test run.
fn keys() -> &'static (TestKey, TestKey) {
    static KEYS: OnceLock<(TestKey, TestKey)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = TempDir::new();
        (make_key(&dir.0, "known"), make_key(&dir.0, "unknown"))
    })
}

/// A directory removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("ferry-adc-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("directory");
        std::fs::write(&path, text).expect("write");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the token endpoint saw.
#[derive(Default)]
struct Seen {
    requests: AtomicUsize,
    /// Assertions whose signature and claims checked out.
    verified: AtomicUsize,
    /// Why the last request was refused.
    refused: Mutex<Vec<String>>,
    /// The `Authorization` headers `/api` received.
    api_auth: Mutex<Vec<String>>,
}

/// A token endpoint on 127.0.0.1 that checks what Google's checks: the RS256 signature of the
/// assertion with the service account's public key, its claims, or the refresh token and client
/// of an authorized-user file. It also serves `/api`, which records the bearer token it gets.
struct TokenEndpoint {
    uri: String,
    api: String,
    seen: Arc<Seen>,
    answer: Arc<Mutex<Answer>>,
}

impl TokenEndpoint {
    async fn start(prefix: &'static str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let uri = format!("http://{addr}/token");
        let seen = Arc::new(Seen::default());
        let answer = Arc::new(Mutex::new(Answer::Token { expires_in: 3599 }));
        let public_der = keys().0.public_der.clone();
        let (s, a, u) = (seen.clone(), answer.clone(), uri.clone());
        let token = axum::routing::post(move |body: String| {
            let (seen, answer, uri, public_der) = (s.clone(), a.clone(), u.clone(), public_der.clone());
            async move {
                let n = seen.requests.fetch_add(1, Ordering::SeqCst) + 1;
                // Slow enough that concurrent callers overlap with the request.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let form = form(&body);
                let checked = match form.get("grant_type").map(String::as_str) {
                    Some(JWT_BEARER) => check_assertion(form.get("assertion").map_or("", String::as_str), &public_der, &uri),
                    Some("refresh_token") => check_refresh(&form),
                    other => Err(format!("unsupported grant_type {other:?}")),
                };
                if let Err(why) = checked {
                    seen.refused.lock().expect("lock").push(why.clone());
                    let body = serde_json::json!({"error": "invalid_grant", "error_description": why}).to_string();
                    return (StatusCode::BAD_REQUEST, body);
                }
                if form.get("grant_type").map(String::as_str) == Some(JWT_BEARER) {
                    seen.verified.fetch_add(1, Ordering::SeqCst);
                }
                match answer.lock().expect("lock").clone() {
                    Answer::Token { expires_in } => {
                        (StatusCode::OK, format!(r#"{{"access_token":"{prefix}-{n}","expires_in":{expires_in},"token_type":"Bearer"}}"#))
                    }
                    Answer::Raw(status, body) => (StatusCode::from_u16(status).expect("status"), body.to_owned()),
                }
            }
        });
        let s = seen.clone();
        let api = axum::routing::get(move |headers: HeaderMap| {
            let seen = s.clone();
            async move {
                let auth = headers.get("authorization").map(|v| v.to_str().expect("ascii").to_owned()).unwrap_or_default();
                seen.api_auth.lock().expect("lock").push(auth);
                "ok"
            }
        });
        let app = axum::Router::new().route("/token", token).route("/api", api);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { uri, api: format!("http://{addr}/api"), seen, answer }
    }

    fn requests(&self) -> usize {
        self.seen.requests.load(Ordering::SeqCst)
    }

    fn answer(&self, answer: Answer) {
        *self.answer.lock().expect("lock") = answer;
    }

    fn service_account(&self, key: &TestKey) -> String {
        serde_json::json!({
            "type": "service_account",
            "project_id": "acme-data",
            "private_key_id": KEY_ID,
            "private_key": key.pem,
            "client_email": EMAIL,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.uri,
        })
        .to_string()
    }

    fn authorized_user(&self) -> String {
        serde_json::json!({
            "type": "authorized_user",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "refresh_token": REFRESH_TOKEN,
            "token_uri": self.uri,
        })
        .to_string()
    }
}

fn form(body: &str) -> HashMap<String, String> {
    let url = reqwest::Url::parse(&format!("http://form.invalid/?{body}")).expect("form body");
    url.query_pairs().into_owned().collect()
}

fn b64(part: &str) -> Result<serde_json::Value, String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).map_err(|e| format!("not base64url: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))
}

/// What Google's token endpoint checks of a `jwt-bearer` assertion.
fn check_assertion(assertion: &str, public_der: &[u8], uri: &str) -> Result<(), String> {
    let [header, claims, signature] = assertion.split('.').collect::<Vec<_>>()[..] else {
        return Err("not a JWT".into());
    };
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature).map_err(|e| format!("signature: {e}"))?;
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public_der)
        .verify(format!("{header}.{claims}").as_bytes(), &signature)
        .map_err(|_| "Invalid JWT Signature.".to_owned())?;
    let (header, claims) = (b64(header)?, b64(claims)?);
    let expect = |what: &str, found: &serde_json::Value, want: &str| {
        if found.as_str() == Some(want) {
            Ok(())
        } else {
            Err(format!("{what}: expected {want:?}, found {found}"))
        }
    };
    expect("alg", &header["alg"], "RS256")?;
    expect("typ", &header["typ"], "JWT")?;
    expect("kid", &header["kid"], KEY_ID)?;
    expect("iss", &claims["iss"], EMAIL)?;
    expect("aud", &claims["aud"], uri)?;
    expect("scope", &claims["scope"], SCOPE)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    let (iat, exp) = (claims["iat"].as_u64().ok_or("iat")?, claims["exp"].as_u64().ok_or("exp")?);
    if now.abs_diff(iat) > 60 || exp != iat + 3600 {
        return Err(format!("iat {iat} / exp {exp}: expected now ({now}) and an hour later"));
    }
    Ok(())
}

fn check_refresh(form: &HashMap<String, String>) -> Result<(), String> {
    let field = |name: &str| form.get(name).map(String::as_str);
    if field("client_id") != Some(CLIENT_ID) || field("client_secret") != Some(CLIENT_SECRET) {
        return Err("The OAuth client was not found.".into());
    }
    if field("refresh_token") != Some(REFRESH_TOKEN) {
        return Err("Token has been expired or revoked.".into());
    }
    Ok(())
}

/// An environment of these variables only (the metadata server on a closed port unless given).
fn env(vars: &[(&str, &Path)]) -> impl Fn(&str) -> Option<String> {
    let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), v.to_str().expect("utf-8").to_owned())).collect();
    move |name| vars.get(name).cloned()
}

fn adc(vars: &[(&str, &Path)]) -> TokenSource {
    TokenSource::with_env(reqwest::Client::new(), Auth::ApplicationDefault, &env(vars))
}

fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").to_string()
}

#[tokio::test]
async fn a_service_account_key_signs_an_assertion_the_token_endpoint_verifies() {
    let endpoint = TokenEndpoint::start("sa").await;
    let dir = TempDir::new();
    let key_file = dir.write("key.json", &endpoint.service_account(&keys().0));
    let tokens = adc(&[(CREDENTIALS_ENV, &key_file), ("HOME", &dir.0)]);
    assert_eq!(token(&tokens).await, "sa-1");
    assert_eq!(endpoint.seen.verified.load(Ordering::SeqCst), 1, "refused: {:?}", endpoint.seen.refused.lock().expect("lock"));

    // The request to the API carries that token.
    let req = tokens.authorize(reqwest::Client::new().get(&endpoint.api)).await.expect("authorize");
    assert!(req.send().await.expect("api").status().is_success());
    assert_eq!(*endpoint.seen.api_auth.lock().expect("lock"), ["Bearer sa-1"]);
    assert_eq!(endpoint.requests(), 1, "the token is cached");
}

#[tokio::test]
async fn a_key_the_endpoint_does_not_know_is_refused_with_invalid_grant() {
    let endpoint = TokenEndpoint::start("sa").await;
    let dir = TempDir::new();
    let key_file = dir.write("other-key.json", &endpoint.service_account(&keys().1));
    let tokens = adc(&[(CREDENTIALS_ENV, &key_file)]);
    let err = tokens.bearer().await.expect_err("wrong key");
    assert_eq!(*endpoint.seen.refused.lock().expect("lock"), ["Invalid JWT Signature."]);
    assert!(matches!(&err, GoogleError::TokenEndpointRefused { status: 400, error, .. } if error == "invalid_grant"), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_eq!(
        err.to_string(),
        format!(
            r#"token endpoint {} refused the credentials of {}: HTTP 400: invalid_grant: "Invalid JWT Signature.""#,
            endpoint.uri,
            key_file.display()
        )
    );
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("PRIVATE KEY") && !shown.contains(&keys().1.pem[40..80]), "{shown}");
}

#[tokio::test]
async fn an_authorized_user_file_in_cloudsdk_config_is_refreshed_with_its_refresh_token() {
    let endpoint = TokenEndpoint::start("user").await;
    let gcloud = TempDir::new();
    gcloud.write("application_default_credentials.json", &endpoint.authorized_user());
    let home = TempDir::new();
    let tokens = adc(&[(CLOUDSDK_CONFIG_ENV, &gcloud.0), ("HOME", &home.0), (METADATA_HOST_ENV, Path::new(&closed_port()))]);
    assert_eq!(token(&tokens).await, "user-1");
    assert!(endpoint.seen.refused.lock().expect("lock").is_empty());

    // A revoked refresh token: invalid_grant, permanent, and neither secret in the message.
    let revoked = TempDir::new();
    let text = endpoint.authorized_user().replace(REFRESH_TOKEN, "revoked-sentinel");
    revoked.write("application_default_credentials.json", &text);
    let err = adc(&[(CLOUDSDK_CONFIG_ENV, &revoked.0)]).bearer().await.expect_err("revoked");
    assert_eq!(err.class(), ErrorClass::Permanent);
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("invalid_grant") && shown.contains("Token has been expired or revoked."), "{shown}");
    assert!(shown.contains(&revoked.0.join("application_default_credentials.json").display().to_string()), "{shown}");
    assert!(!shown.contains("sentinel"), "{shown}");
}

#[tokio::test]
async fn the_gcloud_file_is_found_under_home_without_cloudsdk_config() {
    let endpoint = TokenEndpoint::start("home").await;
    let home = TempDir::new();
    home.write(".config/gcloud/application_default_credentials.json", &endpoint.authorized_user());
    assert_eq!(token(&adc(&[("HOME", &home.0)])).await, "home-1");
}

#[tokio::test]
async fn discovery_follows_googles_order() {
    let sa = TokenEndpoint::start("sa").await;
    let user = TokenEndpoint::start("user").await;
    let metadata = FakeMetadata::start(Answer::Token { expires_in: 3599 }).await;
    let dir = TempDir::new();
    let key_file = dir.write("key.json", &sa.service_account(&keys().0));
    let gcloud = TempDir::new();
    gcloud.write("application_default_credentials.json", &user.authorized_user());
    let empty = TempDir::new();
    let host = Path::new(&metadata.host);

    // GOOGLE_APPLICATION_CREDENTIALS beats the gcloud file, which beats the metadata server.
    let all = adc(&[(CREDENTIALS_ENV, &key_file), (CLOUDSDK_CONFIG_ENV, &gcloud.0), (METADATA_HOST_ENV, host)]);
    assert_eq!(token(&all).await, "sa-1");
    let gcloud_and_metadata = adc(&[(CLOUDSDK_CONFIG_ENV, &gcloud.0), (METADATA_HOST_ENV, host)]);
    assert_eq!(token(&gcloud_and_metadata).await, "user-1");
    let metadata_only = adc(&[(CLOUDSDK_CONFIG_ENV, &empty.0), ("HOME", &empty.0), (METADATA_HOST_ENV, host)]);
    assert_eq!(token(&metadata_only).await, "tok-1");
    assert_eq!((sa.requests(), user.requests(), metadata.requests()), (1, 1, 1));

    // CLOUDSDK_CONFIG replaces ~/.config/gcloud: a file under HOME is not looked at then.
    let home = TempDir::new();
    home.write(".config/gcloud/application_default_credentials.json", &user.authorized_user());
    let moved = adc(&[(CLOUDSDK_CONFIG_ENV, &empty.0), ("HOME", &home.0), (METADATA_HOST_ENV, host)]);
    assert_eq!(token(&moved).await, "tok-2");

    // A file named by the variable that is not there is an error, not a fall-through.
    let missing = dir.0.join("missing.json");
    let err = adc(&[(CREDENTIALS_ENV, &missing), (CLOUDSDK_CONFIG_ENV, &gcloud.0), (METADATA_HOST_ENV, host)])
        .bearer()
        .await
        .expect_err("missing file");
    assert_eq!(
        err.to_string(),
        format!("Google credentials file {} (named by GOOGLE_APPLICATION_CREDENTIALS): no such file", missing.display())
    );
    assert_eq!(user.requests(), 1, "the gcloud file was not used instead");

    // `metadata_server` asks the metadata server whatever files there are.
    let forced = TokenSource::with_env(
        reqwest::Client::new(),
        Auth::MetadataServer,
        &env(&[(CREDENTIALS_ENV, &key_file), (METADATA_HOST_ENV, host)]),
    );
    assert_eq!(token(&forced).await, "tok-3");
    assert_eq!(sa.requests(), 1);
}

#[tokio::test]
async fn bad_files_name_the_file_and_the_field_and_never_quote_the_key() {
    let endpoint = TokenEndpoint::start("sa").await;
    let good: serde_json::Value = serde_json::from_str(&endpoint.service_account(&keys().0)).expect("json");
    let with = |field: &str, value: serde_json::Value| {
        let mut v = good.clone();
        if value.is_null() {
            v.as_object_mut().expect("object").remove(field);
        } else {
            v[field] = value;
        }
        v.to_string()
    };
    let huge = format!(r#"{{"type": "service_account", "padding": "{}"}}"#, "x".repeat(70_000));
    let cases: Vec<(&str, String, &str)> = vec![
        ("not-json.json", "private_key-sentinel: this is not JSON".into(), "not JSON (line 1, column 1)"),
        ("array.json", "[1, 2]".into(), "not a JSON object"),
        ("huge.json", huge, "larger than 64 KiB: not a credentials file"),
        ("no-type.json", with("type", serde_json::Value::Null), "type: missing"),
        (
            "external.json",
            with("type", "external_account".into()),
            r#"type: "external_account" is not supported: ferry reads "service_account" and "authorized_user" files"#,
        ),
        ("no-key.json", with("private_key", serde_json::Value::Null), "private_key: missing"),
        ("number-key.json", with("private_key", 42.into()), "private_key: expected a string"),
        (
            "garbage-key.json",
            with("private_key", "-----BEGIN PRIVATE KEY-----\nsentinel+secret+key+material\n-----END PRIVATE KEY-----\n".into()),
            "private_key: not a usable RSA private key (InvalidEncoding)",
        ),
        ("not-pem.json", with("private_key", "sentinel-secret-key".into()), "private_key: not a PEM private key"),
        (
            "pkcs1.json",
            with("private_key", "-----BEGIN RSA PRIVATE KEY-----\nsentinel\n-----END RSA PRIVATE KEY-----\n".into()),
            "private_key: a PKCS#1 key (BEGIN RSA PRIVATE KEY)",
        ),
        ("no-email.json", with("client_email", serde_json::Value::Null), "client_email: missing"),
        (
            "http-token-uri.json",
            with("token_uri", "http://oauth2.example.com/token".into()),
            r#"token_uri: "http://oauth2.example.com/token": expected an https:// URL (http:// only to 127.0.0.1 or localhost)"#,
        ),
        (
            "user-no-refresh.json",
            r#"{"type": "authorized_user", "client_id": "c", "client_secret": "sentinel-client-secret"}"#.into(),
            "refresh_token: missing",
        ),
    ];
    let dir = TempDir::new();
    for (name, text, want) in cases {
        let path = dir.write(name, &text);
        let err = adc(&[(CREDENTIALS_ENV, &path)]).bearer().await.expect_err(name);
        let shown = err.to_string();
        let prefix = format!("Google credentials file {} (named by GOOGLE_APPLICATION_CREDENTIALS): {want}", path.display());
        assert!(shown.starts_with(&prefix), "{name}:\n  {shown}\n  expected to start with\n  {prefix}");
        assert_eq!(err.class(), ErrorClass::Permanent, "{name}");
        let debug = format!("{err:?}");
        for secret in ["sentinel", &keys().0.pem[40..80]] {
            assert!(!shown.contains(secret) && !debug.contains(secret), "{name} shows {secret:?}: {shown} {debug}");
        }
    }
    assert_eq!(endpoint.requests(), 0, "no bad file reached the token endpoint");
}

#[tokio::test]
async fn tokens_from_a_key_file_are_cached_shared_and_refreshed() {
    let endpoint = TokenEndpoint::start("sa").await;
    // Valid for one second once the refresh margin is taken off.
    endpoint.answer(Answer::Token { expires_in: REFRESH_MARGIN.as_secs() + 1 });
    let dir = TempDir::new();
    let key_file = dir.write("key.json", &endpoint.service_account(&keys().0));
    let tokens = adc(&[(CREDENTIALS_ENV, &key_file)]);
    let clone = tokens.clone();
    let (a, b, c, d) = tokio::join!(token(&tokens), token(&tokens), token(&clone), token(&tokens));
    assert_eq!([a, b, c, d], ["sa-1", "sa-1", "sa-1", "sa-1"]);
    assert_eq!(endpoint.requests(), 1, "concurrent callers wait for one request");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(token(&tokens).await, "sa-2");
    assert_eq!(token(&tokens).await, "sa-2");
    assert_eq!(endpoint.seen.verified.load(Ordering::SeqCst), 2, "each refresh signs a new assertion");

    // A failure is shared by its waiters, not cached, and classed by its status.
    endpoint.answer(Answer::Raw(503, "backend unavailable"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (x, y) = tokio::join!(tokens.bearer(), tokens.bearer());
    assert_eq!(endpoint.requests(), 3);
    for err in [x.expect_err("503"), y.expect_err("503")] {
        assert_eq!(err.class(), ErrorClass::Transient);
        assert!(err.to_string().ends_with(r#"HTTP 503: "backend unavailable""#), "{err}");
    }
    endpoint.answer(Answer::Raw(200, r#"{"access_token": "sentinel-token", "expires_in": "soon"}"#));
    let err = tokens.bearer().await.expect_err("garbled");
    assert!(matches!(err, GoogleError::TokenEndpointAnswer { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("sentinel"), "{err:?}");
    endpoint.answer(Answer::Token { expires_in: 3599 });
    assert_eq!(token(&tokens).await, "sa-5");
}

#[tokio::test]
async fn an_unreachable_token_endpoint_is_transient() {
    let endpoint = TokenEndpoint::start("sa").await;
    let dir = TempDir::new();
    let closed = format!("http://{}/token", closed_port());
    let key_file = dir.write("key.json", &endpoint.service_account(&keys().0).replace(&endpoint.uri, &closed));
    let err = adc(&[(CREDENTIALS_ENV, &key_file)]).bearer().await.expect_err("nothing listens");
    assert!(matches!(&err, GoogleError::TokenEndpointUnreachable { uri, .. } if *uri == closed), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);
}

/// Log lines written while a test runs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_credentials_in_use_are_logged_once_without_secrets() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let endpoint = TokenEndpoint::start("sa").await;
    endpoint.answer(Answer::Token { expires_in: REFRESH_MARGIN.as_secs() + 1 });
    let dir = TempDir::new();
    let key_file = dir.write("key.json", &endpoint.service_account(&keys().0));
    let tokens = adc(&[(CREDENTIALS_ENV, &key_file)]);
    assert_eq!(token(&tokens).await, "sa-1");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(token(&tokens).await, "sa-2");
    // Another client of the same run, with the same credentials.
    assert_eq!(token(&adc(&[(CREDENTIALS_ENV, &key_file)])).await, "sa-3");

    let user_dir = TempDir::new();
    user_dir.write("application_default_credentials.json", &endpoint.authorized_user());
    assert_eq!(token(&adc(&[(CLOUDSDK_CONFIG_ENV, &user_dir.0)])).await, "sa-4");

    let log = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("Google credentials")).collect();
    assert_eq!(lines.len(), 2, "{log}");
    let want = format!(
        "service-account key {} (named by GOOGLE_APPLICATION_CREDENTIALS), account {EMAIL}, token endpoint {}",
        key_file.display(),
        endpoint.uri
    );
    assert!(lines[0].contains(&want), "{}", lines[0]);
    assert!(lines[1].contains("authorized-user file") && lines[1].contains("gcloud application-default credentials"), "{}", lines[1]);
    assert!(lines[1].contains(CLIENT_ID), "{}", lines[1]);
    for secret in [CLIENT_SECRET, REFRESH_TOKEN, "sa-1", &keys().0.pem[40..80]] {
        assert!(!log.contains(secret), "the log shows {secret:?}: {log}");
    }
}
