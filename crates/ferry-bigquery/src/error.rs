use ferry_core::{Classify, ErrorClass};
use ferry_google::{ApiError, GoogleError};

/// Errors of the BigQuery client. Messages quote BigQuery's own reason; they contain no token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BigQueryError {
    /// BigQuery answered with an error status.
    #[error("BigQuery {op}: {api}")]
    Api { op: &'static str, api: ApiError },
    /// BigQuery answered 200, but the job finished with an error (`what`: `job failed`) or
    /// rows were not inserted (`rows rejected`).
    #[error("BigQuery {op}: {what}{}: {message}", .reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default())]
    Job { op: &'static str, what: &'static str, reason: Option<String>, message: String },
    /// The request did not get an answer.
    #[error("BigQuery {op}: no answer from {endpoint}: {reason}")]
    Transport { op: &'static str, endpoint: String, reason: String },
    /// The answer could not be understood.
    #[error("BigQuery {op}: unexpected response: {reason}")]
    Decode { op: &'static str, reason: String },
    /// Getting an access token failed.
    #[error("BigQuery credentials: {0}")]
    Credentials(GoogleError),
    /// A query job was not complete when the query deadline passed; it was asked to cancel.
    #[error("BigQuery jobs.query: job {job} was not complete after {} s (the query deadline); it was cancelled", .waited.as_secs())]
    QueryTimeout { job: String, waited: std::time::Duration },
    /// The rows read from a job's pages are not as many as the job reported (`totalRows`):
    /// a page was skipped or read twice, so the export cannot be trusted.
    #[error("BigQuery jobs.getQueryResults: job {job} has {expected} rows (totalRows), but {read} were read")]
    RowCount { job: String, expected: u64, read: u64 },
    /// The last error of a call that was retried and still failed; `context` says how often
    /// and why it stopped.
    #[error("{last}{context}")]
    GaveUp { last: Box<BigQueryError>, context: String },
}

impl BigQueryError {
    /// The error itself, or the last error of a call that was retried.
    pub fn last(&self) -> &BigQueryError {
        match self {
            BigQueryError::GaveUp { last, .. } => last.last(),
            other => other,
        }
    }
}

impl From<GoogleError> for BigQueryError {
    fn from(e: GoogleError) -> Self {
        BigQueryError::Credentials(e)
    }
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
            BigQueryError::Api { api, .. } if api.is_transient() || is_concurrent_update(&api.message) => ErrorClass::Transient,
            BigQueryError::Job { reason, message, .. }
                if reason.as_deref().is_some_and(ApiError::is_transient_reason) || is_concurrent_update(message) =>
            {
                ErrorClass::Transient
            }
            BigQueryError::Api { .. } | BigQueryError::Job { .. } => ErrorClass::Permanent,
            BigQueryError::Transport { .. } => ErrorClass::Transient,
            BigQueryError::Decode { .. } => ErrorClass::Permanent,
            BigQueryError::Credentials(e) => e.class(),
            // A slow or unlucky job: the next run may well succeed.
            BigQueryError::QueryTimeout { .. } | BigQueryError::RowCount { .. } => ErrorClass::Transient,
            BigQueryError::GaveUp { last, .. } => last.class(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, message: &str) -> BigQueryError {
        BigQueryError::Api { op: "jobs.query", api: ApiError { status, reason: Some("invalidQuery".into()), message: message.into() } }
    }

    fn job(reason: &str, message: &str) -> BigQueryError {
        BigQueryError::Job { op: "jobs.query", what: "job failed", reason: Some(reason.into()), message: message.into() }
    }

    #[test]
    fn concurrent_update_conflicts_are_transient() {
        assert_eq!(api(400, "Could not serialize access to table p:d.t due to concurrent update").class(), ErrorClass::Transient);
        assert_eq!(api(400, "Transaction is aborted due to concurrent update against table p.d.t").class(), ErrorClass::Transient);
        assert_eq!(api(400, "Failed to commit: Failed to commit DuckLake transaction.").class(), ErrorClass::Transient);
        assert_eq!(api(400, "Syntax error: Unexpected keyword").class(), ErrorClass::Permanent);
        assert_eq!(api(503, "backend").class(), ErrorClass::Transient);
        assert_eq!(job("invalidQuery", "Transaction is aborted due to concurrent update").class(), ErrorClass::Transient);
        assert_eq!(job("backendError", "try again").class(), ErrorClass::Transient);
        assert_eq!(job("invalidQuery", "Unrecognized name: x").class(), ErrorClass::Permanent);
    }

    #[test]
    fn messages() {
        assert_eq!(api(400, "Syntax error").to_string(), "BigQuery jobs.query: HTTP 400 Bad Request (invalidQuery): Syntax error");
        assert_eq!(
            job("invalidQuery", "Unrecognized name: x").to_string(),
            "BigQuery jobs.query: job failed (invalidQuery): Unrecognized name: x"
        );
        let rejected = BigQueryError::Job { op: "tabledata.insertAll", what: "rows rejected", reason: None, message: "{}".into() };
        assert_eq!(rejected.to_string(), "BigQuery tabledata.insertAll: rows rejected: {}");
        let late = BigQueryError::QueryTimeout { job: "j1".into(), waited: std::time::Duration::from_millis(1_800_400) };
        assert_eq!(late.to_string(), "BigQuery jobs.query: job j1 was not complete after 1800 s (the query deadline); it was cancelled");
        assert_eq!(late.class(), ErrorClass::Transient);
    }

    #[test]
    fn a_retried_error_keeps_the_class_and_text_of_the_last_one() {
        let last = api(400, "Syntax error");
        let wrapped = BigQueryError::GaveUp { last: Box::new(api(400, "Syntax error")), context: " (gave up after 2 attempts)".into() };
        assert_eq!(wrapped.class(), ErrorClass::Permanent);
        assert_eq!(wrapped.to_string(), format!("{last} (gave up after 2 attempts)"));
        assert!(matches!(wrapped.last(), BigQueryError::Api { api: ApiError { status: 400, .. }, .. }));
        let wrapped = BigQueryError::GaveUp { last: Box::new(api(503, "later")), context: String::new() };
        assert_eq!(wrapped.class(), ErrorClass::Transient);
    }
}
