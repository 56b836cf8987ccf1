use ferry_core::{Classify, ErrorClass};

use crate::auth::Origin;
use crate::ApiError;

/// Errors of getting an access token. Messages name the metadata server, the credentials file
/// and its field, or the token endpoint, and never contain a token or a key.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum GoogleError {
    /// The metadata server gave no answer (off Google Cloud its name does not resolve).
    #[error("metadata server {host}: no answer: {reason}")]
    MetadataUnreachable { host: String, reason: String },
    /// The metadata server refused the token request (404: the instance has no service account).
    #[error("metadata server {host} refused the token request: {api}")]
    MetadataRefused { host: String, api: ApiError },
    /// The metadata server's answer is not an access token.
    #[error("metadata server {host}: the answer is not an access token: {reason}")]
    MetadataToken { host: String, reason: String },
    /// A credentials file is missing, unreadable, or not a JSON object.
    #[error("Google credentials file {file} ({origin}): {reason}")]
    CredentialsFile { file: String, origin: Origin, reason: String },
    /// A field of a credentials file is missing or wrong.
    #[error("Google credentials file {file} ({origin}): {field}: {reason}")]
    CredentialsField { file: String, origin: Origin, field: &'static str, reason: String },
    /// The token endpoint of a credentials file gave no answer.
    #[error("token endpoint {uri} (credentials file {file}): no answer: {reason}")]
    TokenEndpointUnreachable { uri: String, file: String, reason: String },
    /// The token endpoint refused the credentials (`invalid_grant`: a deleted key, a revoked
    /// refresh token, a clock far off).
    #[error("token endpoint {uri} refused the credentials of {file}: HTTP {status}{}{}", error_part(.error), description_part(.description))]
    TokenEndpointRefused { uri: String, file: String, status: u16, error: String, description: Option<String> },
    /// The token endpoint's answer is not an access token.
    #[error("token endpoint {uri} (credentials file {file}): the answer is not an access token: {reason}")]
    TokenEndpointAnswer { uri: String, file: String, reason: String },
}

fn error_part(error: &str) -> String {
    if error.is_empty() {
        String::new()
    } else {
        format!(": {error}")
    }
}

fn description_part(description: &Option<String>) -> String {
    description.as_ref().map(|d| format!(": {d:?}")).unwrap_or_default()
}

impl Classify for GoogleError {
    fn class(&self) -> ErrorClass {
        match self {
            GoogleError::MetadataUnreachable { .. } | GoogleError::TokenEndpointUnreachable { .. } => ErrorClass::Transient,
            GoogleError::MetadataRefused { api, .. } => api.class(),
            GoogleError::TokenEndpointRefused { status, .. } => match status {
                408 | 429 | 500..=599 => ErrorClass::Transient,
                _ => ErrorClass::Permanent,
            },
            GoogleError::MetadataToken { .. }
            | GoogleError::CredentialsFile { .. }
            | GoogleError::CredentialsField { .. }
            | GoogleError::TokenEndpointAnswer { .. } => ErrorClass::Permanent,
        }
    }
}
