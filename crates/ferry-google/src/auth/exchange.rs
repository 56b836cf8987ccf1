//! Access tokens from a token endpoint (OAuth 2.0): a service account's signed assertion
//! (RFC 7523, `jwt-bearer`) or a user's refresh token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use ferry_core::Secret;
use ring::signature::RSA_PKCS1_SHA256;
use serde::Deserialize;
use serde_json::json;

use super::adc::{AuthorizedUser, CredentialsFile, FileKind, ServiceAccount};
use crate::GoogleError;

/// The scope of the tokens ferry asks for: BigQuery, Pub/Sub and GCS all accept it.
pub(crate) const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// How long an assertion is valid: Google accepts at most an hour.
const ASSERTION_LIFETIME: u64 = 3600;

/// A bound on one token request.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);

/// The signed assertion of `sa`, issued at `now` (seconds since the epoch).
pub(crate) fn assertion(sa: &ServiceAccount, now: u64, file: &CredentialsFile) -> Result<String, GoogleError> {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let mut header = json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = &sa.private_key_id {
        header["kid"] = kid.as_str().into();
    }
    let claims = json!({
        "iss": sa.client_email,
        "scope": SCOPE,
        "aud": sa.token_uri,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME,
    });
    let signed = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let mut signature = vec![0; sa.key.public().modulus_len()];
    sa.key
        .sign(&RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), signed.as_bytes(), &mut signature)
        .map_err(|_| file.error("private_key", "signing the assertion failed"))?;
    Ok(format!("{signed}.{}", b64(&signature)))
}

/// A token for the credentials of `file`: the token and how long it is valid.
pub(crate) async fn token(http: &reqwest::Client, file: &CredentialsFile) -> Result<(Secret, Duration), GoogleError> {
    match &file.kind {
        FileKind::ServiceAccount(sa) => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let assertion = assertion(sa, now, file)?;
            request(http, &sa.token_uri, file, &[("grant_type", JWT_BEARER), ("assertion", &assertion)]).await
        }
        FileKind::AuthorizedUser(AuthorizedUser { client_id, client_secret, refresh_token, token_uri }) => {
            let form = [
                ("grant_type", "refresh_token"),
                ("client_id", client_id.as_str()),
                ("client_secret", client_secret.expose()),
                ("refresh_token", refresh_token.expose()),
            ];
            request(http, token_uri, file, &form).await
        }
    }
}

/// One form POST to the token endpoint `uri`.
async fn request(
    http: &reqwest::Client,
    uri: &str,
    file: &CredentialsFile,
    form: &[(&str, &str)],
) -> Result<(Secret, Duration), GoogleError> {
    #[derive(Deserialize)]
    struct TokenAnswer {
        access_token: String,
        expires_in: u64,
    }
    #[derive(Deserialize)]
    struct ErrorAnswer {
        error: String,
        #[serde(default)]
        error_description: Option<String>,
    }
    let path = file.path.display().to_string();
    let unreachable = |e: reqwest::Error| GoogleError::TokenEndpointUnreachable {
        uri: uri.to_owned(),
        file: path.clone(),
        reason: e.without_url().to_string(),
    };
    let resp = http.post(uri).form(form).timeout(TOKEN_TIMEOUT).send().await.map_err(unreachable)?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(unreachable)?;
    if !status.is_success() {
        // An OAuth error names itself (`invalid_grant`) and says why; anything else is shown
        // as a short prefix of the body.
        let (error, description) = match serde_json::from_slice::<ErrorAnswer>(&body) {
            Ok(e) => (short(&e.error, 60), e.error_description.map(|d| short(&d, 200))),
            Err(_) => (String::new(), Some(short(&String::from_utf8_lossy(&body), 200)).filter(|s| !s.is_empty())),
        };
        return Err(GoogleError::TokenEndpointRefused { uri: uri.to_owned(), file: path, status: status.as_u16(), error, description });
    }
    let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| GoogleError::TokenEndpointAnswer {
        uri: uri.to_owned(),
        file: path.clone(),
        reason: format!("invalid JSON or missing field at line {} column {}", e.line(), e.column()),
    })?;
    if answer.access_token.is_empty() {
        return Err(GoogleError::TokenEndpointAnswer { uri: uri.to_owned(), file: path, reason: "the access token is empty".into() });
    }
    Ok((Secret::new(answer.access_token), Duration::from_secs(answer.expires_in)))
}

/// At most `max` characters of `s`, with control characters replaced.
fn short(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}
