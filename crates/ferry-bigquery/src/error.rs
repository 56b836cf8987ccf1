use ferry_core::{Classify, ErrorClass};

/// Errors of the BigQuery client. Messages quote BigQuery's own reason; they contain no token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BigQueryError {
    /// BigQuery answered with an error status, or a job finished with an error.
    #[error("BigQuery {op}: {status_text}{reason}: {message}")]
    Api { op: &'static str, status: u16, status_text: String, reason: String, message: String },
    /// The request did not get an answer.
    #[error("BigQuery {op}: no answer from {endpoint}: {reason}")]
    Transport { op: &'static str, endpoint: String, reason: String },
    /// The answer could not be understood.
    #[error("BigQuery {op}: unexpected response: {reason}")]
    Decode { op: &'static str, reason: String },
    /// Getting an access token failed.
    #[error("BigQuery credentials: {0}")]
    Auth(String),
}

impl Classify for BigQueryError {
    fn class(&self) -> ErrorClass {
        match self {
            BigQueryError::Api { status, reason, .. } => {
                if *status == 429 || *status >= 500 || reason.contains("rateLimitExceeded") || reason.contains("backendError") {
                    ErrorClass::Transient
                } else {
                    ErrorClass::Permanent
                }
            }
            BigQueryError::Transport { .. } => ErrorClass::Transient,
            BigQueryError::Decode { .. } | BigQueryError::Auth(_) => ErrorClass::Permanent,
        }
    }
}
