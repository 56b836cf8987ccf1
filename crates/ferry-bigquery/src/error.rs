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

/// Two statements changed the same table at once and one lost: BigQuery answers 400 ("Could not
/// serialize access to table … due to concurrent update", "Transaction is aborted due to
/// concurrent update") and asks for a retry; the DuckDB-backed emulator says "Failed to commit".
fn is_concurrent_update(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("concurrent update") || m.contains("could not serialize access") || m.contains("failed to commit")
}

impl Classify for BigQueryError {
    fn class(&self) -> ErrorClass {
        match self {
            BigQueryError::Api { status, reason, message, .. } => {
                if *status == 429
                    || *status >= 500
                    || reason.contains("rateLimitExceeded")
                    || reason.contains("backendError")
                    || is_concurrent_update(message)
                {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, message: &str) -> BigQueryError {
        BigQueryError::Api {
            op: "jobs.query",
            status,
            status_text: String::new(),
            reason: " (invalidQuery)".into(),
            message: message.into(),
        }
    }

    #[test]
    fn concurrent_update_conflicts_are_transient() {
        assert_eq!(api(400, "Could not serialize access to table p:d.t due to concurrent update").class(), ErrorClass::Transient);
        assert_eq!(api(400, "Transaction is aborted due to concurrent update against table p.d.t").class(), ErrorClass::Transient);
        assert_eq!(api(400, "Failed to commit: Failed to commit DuckLake transaction.").class(), ErrorClass::Transient);
        assert_eq!(api(400, "Syntax error: Unexpected keyword").class(), ErrorClass::Permanent);
        assert_eq!(api(503, "backend").class(), ErrorClass::Transient);
    }
}
