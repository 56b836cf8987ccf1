//! Verification of the OIDC token Pub/Sub attaches to push requests when the subscription has
//! a push service account: RS256 signature against Google's published keys, issuer, audience,
//! expiry, and (when configured) the service account's email.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use base64::Engine;
use serde::Deserialize;
use tokio::sync::Mutex;

/// Google's signing keys for ID tokens.
pub const GOOGLE_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";
const ISSUERS: &[&str] = &["https://accounts.google.com", "accounts.google.com"];
/// Clock skew tolerated on `exp` and `iat`.
const LEEWAY: i64 = 60;

/// RSA public keys by `kid`: (modulus, exponent), big-endian.
type Keys = HashMap<String, (Vec<u8>, Vec<u8>)>;

/// Checks push tokens.
pub struct Verifier {
    audience: String,
    service_account: Option<String>,
    jwks_url: String,
    http: reqwest::Client,
    /// `kid` → (n, e), and when they were fetched.
    keys: Mutex<(Keys, Option<Instant>)>,
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

fn b64(part: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).map_err(|e| format!("token is not base64url ({e})"))
}

impl Verifier {
    /// Accepts tokens for `audience` (the push endpoint URL or the audience set on the
    /// subscription), optionally only from `service_account`, signed by a key at `jwks_url`.
    pub fn new(audience: String, service_account: Option<String>, jwks_url: String) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("HTTP client");
        Self { audience, service_account, jwks_url, http, keys: Mutex::new((HashMap::new(), None)) }
    }

    async fn key(&self, kid: &str) -> Result<(Vec<u8>, Vec<u8>), String> {
        let mut keys = self.keys.lock().await;
        if let Some(k) = keys.0.get(kid) {
            return Ok(k.clone());
        }
        // Unknown key id: Google rotates keys; refetch, but at most every 30 s.
        if keys.1.is_some_and(|t| t.elapsed() < Duration::from_secs(30)) {
            return Err(format!("no signing key {kid:?}"));
        }
        let jwks: Jwks = self
            .http
            .get(&self.jwks_url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("fetching signing keys: {}", e.without_url()))?
            .json()
            .await
            .map_err(|e| format!("signing keys: {e}"))?;
        keys.0 = jwks
            .keys
            .into_iter()
            .filter(|k| k.kty.is_empty() || k.kty == "RSA")
            .filter_map(|k| Some((k.kid, (b64(&k.n).ok()?, b64(&k.e).ok()?))))
            .collect();
        keys.1 = Some(Instant::now());
        keys.0.get(kid).cloned().ok_or_else(|| format!("no signing key {kid:?}"))
    }

    /// Verifies the `Authorization: Bearer` header; the error says why a token was refused.
    pub async fn verify(&self, header: Option<&HeaderValue>) -> Result<(), String> {
        let value = header.and_then(|h| h.to_str().ok()).ok_or("no Authorization header")?;
        let token = value.strip_prefix("Bearer ").ok_or("Authorization is not a Bearer token")?;
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err("token is not a JWT".into());
        };
        let header: Header = serde_json::from_slice(&b64(h)?).map_err(|e| format!("token header: {e}"))?;
        if header.alg != "RS256" {
            return Err(format!("token algorithm {} is not RS256", header.alg));
        }
        let (n, e) = self.key(header.kid.as_deref().unwrap_or_default()).await?;
        ring::signature::RsaPublicKeyComponents { n, e }
            .verify(&ring::signature::RSA_PKCS1_2048_8192_SHA256, format!("{h}.{p}").as_bytes(), &b64(s)?)
            .map_err(|_| "token signature does not verify")?;
        let claims: Claims = serde_json::from_slice(&b64(p)?).map_err(|e| format!("token claims: {e}"))?;
        let now = chrono::Utc::now().timestamp();
        if !ISSUERS.contains(&claims.iss.as_str()) {
            return Err(format!("token issuer {:?} is not Google", claims.iss));
        }
        if claims.aud != self.audience {
            return Err(format!("token audience {:?} is not {:?}", claims.aud, self.audience));
        }
        if claims.exp + LEEWAY < now {
            return Err("token expired".into());
        }
        if claims.iat - LEEWAY > now {
            return Err("token issued in the future".into());
        }
        if let Some(sa) = &self.service_account {
            if claims.email.as_deref() != Some(sa.as_str()) || claims.email_verified != Some(true) {
                return Err(format!("token email {:?} is not the push service account", claims.email.unwrap_or_default()));
            }
        }
        Ok(())
    }
}
