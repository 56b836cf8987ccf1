use ferry_core::{Classify, ErrorClass};

use crate::ApiError;

/// Errors of getting an access token. Messages name the metadata server and never contain a
/// token.
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
}

impl Classify for GoogleError {
    fn class(&self) -> ErrorClass {
        match self {
            GoogleError::MetadataUnreachable { .. } => ErrorClass::Transient,
            GoogleError::MetadataRefused { api, .. } => api.class(),
            GoogleError::MetadataToken { .. } => ErrorClass::Permanent,
        }
    }
}
