//! Verification of the OIDC token Pub/Sub attaches to push requests when the subscription has
//! a push service account: RS256 signature against Google's published keys, issuer, audience,
//! expiry, and (when configured) the service account's email.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use base64::Engine;
use ferry_core::config::limits::{bound_message, quote};
use serde::Deserialize;

/// Google's signing keys for ID tokens.
pub const GOOGLE_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";
const ISSUERS: &[&str] = &["https://accounts.google.com", "accounts.google.com"];
/// Clock skew tolerated on `exp` and `iat`.
const LEEWAY: i64 = 60;

/// RSA public keys by `kid`: (modulus, exponent), big-endian.
type Keys = HashMap<String, (Vec<u8>, Vec<u8>)>;

/// How long fetched keys are used when the answer has no `Cache-Control: max-age`.
const DEFAULT_KEYS_TTL: Duration = Duration::from_secs(3600);
/// Bounds on a `max-age`: keys are looked at again at least daily, at most every minute.
const MIN_KEYS_TTL: Duration = Duration::from_secs(60);
const MAX_KEYS_TTL: Duration = Duration::from_secs(86_400);
/// An unknown key id fetches the keys again, but not more often than this.
const UNKNOWN_KID_REFETCH: Duration = Duration::from_secs(30);

/// Checks push tokens.
///
/// Signing keys are fetched on first use and cached as long as the answer's
/// `Cache-Control: max-age` says. When that has passed, verification goes on with the cached
/// keys while one background request refreshes them (Google publishes a new key well before it
/// signs with it); if that request fails the cached keys stay. A token with a key id not in the
/// cache waits for one fetch (at most one at a time, at most every 30 s).
pub struct Verifier {
    audience: String,
    service_account: Option<String>,
    /// Further accounts whose tokens `/transfer` and `/verify` accept (an Airflow worker's).
    callers: Vec<String>,
    keys: Arc<KeyCache>,
}

struct KeyCache {
    url: String,
    http: reqwest::Client,
    state: std::sync::RwLock<KeySet>,
    /// Held by the one request that fetches keys.
    fetching: tokio::sync::Mutex<()>,
    /// A background refresh is under way.
    refreshing: AtomicBool,
    /// The shortest time keys are cached ([`MIN_KEYS_TTL`]; shorter in tests).
    min_ttl: Duration,
}

#[derive(Default)]
struct KeySet {
    keys: Arc<Keys>,
    /// When the last fetch finished (successfully or not).
    fetched: Option<Instant>,
    /// Until when the keys are fresh.
    fresh_until: Option<Instant>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    exp: i64,
    #[serde(default)]
    iat: i64,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<bool>,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kid: String,
    #[serde(default)]
    kty: String,
    n: String,
    e: String,
}

impl KeyCache {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, KeySet> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fetches the keys, one request at a time.
    async fn fetch(&self) -> Result<(), String> {
        let _one = self.fetching.lock().await;
        self.fetch_locked().await
    }

    /// Fetches the keys; the caller holds `fetching`.
    async fn fetch_locked(&self) -> Result<(), String> {
        let result = self.request().await;
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        state.fetched = Some(Instant::now());
        let (keys, ttl) = result?;
        state.keys = Arc::new(keys);
        state.fresh_until = Some(Instant::now() + ttl);
        Ok(())
    }

    async fn request(&self) -> Result<(Keys, Duration), String> {
        let resp = self
            .http
            .get(&self.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("fetching signing keys: {}", e.without_url()))?;
        let ttl = resp
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age)
            .map_or(DEFAULT_KEYS_TTL, |ttl| ttl.clamp(self.min_ttl, MAX_KEYS_TTL));
        let jwks: Jwks = resp.json().await.map_err(|e| format!("signing keys: {e}"))?;
        let keys = jwks
            .keys
            .into_iter()
            .filter(|k| k.kty.is_empty() || k.kty == "RSA")
            .filter_map(|k| Some((k.kid, (b64(&k.n).ok()?, b64(&k.e).ok()?))))
            .collect();
        Ok((keys, ttl))
    }
}

/// `max-age` of a `Cache-Control` value (`public, max-age=19800, must-revalidate`).
fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control.split(',').find_map(|d| d.trim().strip_prefix("max-age=")?.trim().parse().ok()).map(Duration::from_secs)
}

fn b64(part: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).map_err(|e| format!("token is not base64url ({e})"))
}

impl Verifier {
    /// Accepts tokens for `audience` (the push endpoint URL or the audience set on the
    /// subscription), optionally only from `service_account`, signed by a key at `jwks_url`.
    pub fn new(audience: String, service_account: Option<String>, jwks_url: String) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client");
        let keys = KeyCache {
            url: jwks_url,
            http,
            state: std::sync::RwLock::default(),
            fetching: tokio::sync::Mutex::new(()),
            refreshing: AtomicBool::new(false),
            min_ttl: MIN_KEYS_TTL,
        };
        Self { audience, service_account, callers: Vec::new(), keys: Arc::new(keys) }
    }

    /// The same check, where [`Verifier::verify_caller`] also accepts tokens of `callers`.
    pub fn with_callers(mut self, callers: Vec<String>) -> Self {
        self.callers = callers;
        self
    }

    async fn key(&self, kid: &str) -> Result<(Vec<u8>, Vec<u8>), String> {
        let cache = &self.keys;
        let (known, stale, last_fetch) = {
            let state = cache.read();
            (state.keys.get(kid).cloned(), state.fresh_until.is_none_or(|t| Instant::now() >= t), state.fetched)
        };
        if let Some(key) = known {
            if stale && !cache.refreshing.swap(true, Ordering::AcqRel) {
                let cache = cache.clone();
                tokio::spawn(async move {
                    if let Err(e) = cache.fetch().await {
                        tracing::warn!(error = %e, "refreshing the push token signing keys failed; the cached keys stay in use");
                    }
                    cache.refreshing.store(false, Ordering::Release);
                });
            }
            return Ok(key);
        }
        // Unknown key id: Google rotates keys; fetch once, one request at a time.
        let _one = cache.fetching.lock().await;
        let (known, last) = {
            let state = cache.read();
            (state.keys.get(kid).cloned(), state.fetched)
        };
        if let Some(key) = known {
            return Ok(key);
        }
        if last != last_fetch || last.is_some_and(|t| t.elapsed() < UNKNOWN_KID_REFETCH) {
            // A fetch finished while this token waited, or one did recently: it had no such key.
            return Err(format!("no signing key {} (the keys fetched last do not have it, or that fetch failed)", quote(kid)));
        }
        cache.fetch_locked().await?;
        cache.read().keys.get(kid).cloned().ok_or_else(|| format!("no signing key {}", quote(kid)))
    }

    /// Verifies the `Authorization: Bearer` header; the error says why a token was refused.
    pub async fn verify(&self, header: Option<&HeaderValue>) -> Result<(), String> {
        self.check(header, false).await
    }

    /// As [`Verifier::verify`], also accepting the tokens of the caller accounts (`POST
    /// /transfer`, `POST /verify`).
    pub async fn verify_caller(&self, header: Option<&HeaderValue>) -> Result<(), String> {
        self.check(header, true).await
    }

    async fn check(&self, header: Option<&HeaderValue>, callers: bool) -> Result<(), String> {
        let value = header.and_then(|h| h.to_str().ok()).ok_or("no Authorization header")?;
        let token = value.strip_prefix("Bearer ").ok_or("Authorization is not a Bearer token")?;
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err("token is not a JWT".into());
        };
        let header: Header = serde_json::from_slice(&b64(h)?).map_err(|e| bound_message(format!("token header: {e}")))?;
        if header.alg != "RS256" {
            return Err(format!("token algorithm {} is not RS256", quote(&header.alg)));
        }
        let (n, e) = self.key(header.kid.as_deref().unwrap_or_default()).await?;
        ring::signature::RsaPublicKeyComponents { n, e }
            .verify(&ring::signature::RSA_PKCS1_2048_8192_SHA256, format!("{h}.{p}").as_bytes(), &b64(s)?)
            .map_err(|_| "token signature does not verify")?;
        let claims: Claims = serde_json::from_slice(&b64(p)?).map_err(|e| bound_message(format!("token claims: {e}")))?;
        let now = chrono::Utc::now().timestamp();
        if !ISSUERS.contains(&claims.iss.as_str()) {
            return Err(format!("token issuer {} is not Google", quote(&claims.iss)));
        }
        if claims.aud != self.audience {
            return Err(format!("token audience {} is not {:?}", quote(&claims.aud), self.audience));
        }
        if claims.exp + LEEWAY < now {
            return Err("token expired".into());
        }
        if claims.iat - LEEWAY > now {
            return Err("token issued in the future".into());
        }
        if let Some(sa) = &self.service_account {
            let email = claims.email.as_deref().unwrap_or_default();
            let allowed = email == sa || (callers && self.callers.iter().any(|c| c == email));
            if !allowed || claims.email_verified != Some(true) {
                let who = if callers { "the push service account or a caller account" } else { "the push service account" };
                return Err(format!("token email {} is not {who}", quote(email)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use ferry_testkit::oidc::TokenSigner;
    use serde_json::{json, Value};

    use super::*;

    /// A JWKS endpoint that counts its requests, answers `max-age=1`, and holds each answer
    /// while `hold` is set, until it is cleared.
    struct Keys {
        url: String,
        fetches: Arc<AtomicUsize>,
        hold: Arc<AtomicBool>,
        jwks: Arc<std::sync::Mutex<Value>>,
    }

    async fn keys(jwks: Value) -> Keys {
        let fetches = Arc::new(AtomicUsize::new(0));
        let hold = Arc::new(AtomicBool::new(false));
        let jwks = Arc::new(std::sync::Mutex::new(jwks));
        let (f, h, j) = (fetches.clone(), hold.clone(), jwks.clone());
        let app = axum::Router::new().route(
            "/certs",
            axum::routing::get(move || {
                let (f, h, j) = (f.clone(), h.clone(), j.clone());
                async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    while h.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    let body = j.lock().unwrap().clone();
                    ([(axum::http::header::CACHE_CONTROL, "public, max-age=1, must-revalidate")], axum::Json(body))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/certs", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Keys { url, fetches, hold, jwks }
    }

    fn verifier(url: &str) -> Verifier {
        let mut v = Verifier::new("aud".into(), None, url.into());
        Arc::get_mut(&mut v.keys).unwrap().min_ttl = Duration::from_secs(1);
        v
    }

    fn bearer(signer: &TokenSigner) -> HeaderValue {
        let now = chrono::Utc::now().timestamp();
        let claims = json!({"iss": "https://accounts.google.com", "aud": "aud", "iat": now, "exp": now + 600});
        format!("Bearer {}", signer.token(&claims)).parse().unwrap()
    }

    /// `/transfer` and `/verify` accept the caller accounts besides the push account; `POST /`
    /// only the push account.
    #[tokio::test]
    async fn caller_accounts_pass_only_the_caller_check() {
        let dir = std::env::temp_dir();
        let signer = TokenSigner::new(&dir);
        let k = keys(signer.jwks()).await;
        let v = Verifier::new("aud".into(), Some("push@p.iam.gserviceaccount.com".into()), k.url.clone())
            .with_callers(vec!["airflow@p.iam.gserviceaccount.com".into()]);
        let token = |email: &str| -> HeaderValue {
            let now = chrono::Utc::now().timestamp();
            let claims = json!({"iss": "https://accounts.google.com", "aud": "aud", "iat": now, "exp": now + 600,
                                "email": email, "email_verified": true});
            format!("Bearer {}", signer.token(&claims)).parse().unwrap()
        };
        let (push, airflow, other) =
            (token("push@p.iam.gserviceaccount.com"), token("airflow@p.iam.gserviceaccount.com"), token("x@p.iam.gserviceaccount.com"));
        assert!(v.verify(Some(&push)).await.is_ok());
        assert!(v.verify_caller(Some(&push)).await.is_ok());
        assert!(v.verify_caller(Some(&airflow)).await.is_ok());
        let refused = v.verify(Some(&airflow)).await.expect_err("a caller account does not push");
        assert!(refused.contains("is not the push service account"), "{refused}");
        let refused = v.verify_caller(Some(&other)).await.expect_err("not a caller");
        assert!(refused.contains("is not the push service account or a caller account"), "{refused}");
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(max_age("public, max-age=19800, must-revalidate, no-transform"), Some(Duration::from_secs(19800)));
        assert_eq!(max_age("no-cache"), None);
        assert_eq!(max_age("max-age=x"), None);
    }

    #[tokio::test]
    async fn keys_are_cached_for_max_age_and_refreshed_without_blocking_verification() {
        let dir = std::env::temp_dir();
        let signer = TokenSigner::new(&dir);
        let k = keys(signer.jwks()).await;
        let v = verifier(&k.url);
        let token = bearer(&signer);

        v.verify(Some(&token)).await.unwrap();
        v.verify(Some(&token)).await.unwrap();
        assert_eq!(k.fetches.load(Ordering::SeqCst), 1, "fresh keys are not fetched again");

        tokio::time::sleep(Duration::from_millis(1100)).await;
        k.hold.store(true, Ordering::SeqCst);
        v.verify(Some(&token)).await.expect("stale keys still verify while the refresh is held");
        v.verify(Some(&token)).await.expect("and again, without a second refresh");
        ferry_testkit::eventually(Duration::from_secs(5), "the background refresh", || async {
            (k.fetches.load(Ordering::SeqCst) == 2).then_some(())
        })
        .await;
        k.hold.store(false, Ordering::SeqCst);
        ferry_testkit::eventually(Duration::from_secs(5), "the refresh to finish", || async {
            (!v.keys.refreshing.load(Ordering::SeqCst)).then_some(())
        })
        .await;
        v.verify(Some(&token)).await.unwrap();
        assert_eq!(k.fetches.load(Ordering::SeqCst), 2, "refreshed keys are fresh again");
    }

    #[tokio::test]
    async fn a_new_key_id_fetches_the_keys_once() {
        let dir = std::env::temp_dir();
        let (old, new) = (TokenSigner::new(&dir), TokenSigner::new(&dir));
        let k = keys(old.jwks()).await;
        let v = verifier(&k.url);
        v.verify(Some(&bearer(&old))).await.unwrap();
        // Google publishes the next key before it signs with it.
        let mut both = old.jwks();
        both["keys"].as_array_mut().unwrap().push(new.jwks()["keys"][0].clone());
        *k.jwks.lock().unwrap() = both;
        let e = v.verify(Some(&bearer(&new))).await.unwrap_err();
        assert!(e.contains("no signing key"), "within 30 s of the last fetch an unknown id is refused: {e}");
        assert_eq!(k.fetches.load(Ordering::SeqCst), 1);
        v.keys.state.write().unwrap().fetched = Some(Instant::now() - UNKNOWN_KID_REFETCH);
        v.verify(Some(&bearer(&new))).await.expect("after that, an unknown id fetches the keys");
        assert_eq!(k.fetches.load(Ordering::SeqCst), 2);
        v.verify(Some(&bearer(&old))).await.expect("the old key is still listed");
    }
}
