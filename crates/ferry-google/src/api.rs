//! Google JSON error bodies.

use std::fmt;

use ferry_core::{Classify, ErrorClass};
use serde_json::Value;

/// How many characters of a body that is not a Google error are quoted.
const QUOTED_CHARS: usize = 200;

/// Reasons Google's API docs ask clients to retry with backoff, whatever the HTTP status
/// (BigQuery answers `rateLimitExceeded` with 403).
const TRANSIENT_REASONS: [&str; 4] = ["rateLimitExceeded", "userRateLimitExceeded", "backendError", "internalError"];

/// The error answer of a Google REST API. `Display` is `HTTP 404 Not Found (notFound): <message>`;
/// the client that made the call names itself, the operation and the object around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status of the answer.
    pub status: u16,
    /// The first `error.errors[].reason` (`notFound`, `rateLimitExceeded`, …), else
    /// `error.status` (`NOT_FOUND`, …), when the body has either.
    pub reason: Option<String>,
    /// `error.message`; for a body without one, its first characters, quoted.
    pub message: String,
}

impl ApiError {
    /// Reads an error answer: `status` is its HTTP status, `body` whatever came with it (a
    /// Google error object, a list of them, an OAuth error, an HTML page from a proxy, nothing).
    pub fn parse(status: u16, body: &[u8]) -> Self {
        let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        // Batch endpoints answer with a list of error objects.
        let value = match value {
            Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
            other => other,
        };
        let err = &value["error"];
        let (reason, message) = match err {
            Value::Object(_) => (
                err["errors"][0]["reason"].as_str().filter(|r| !r.is_empty()).or(err["status"].as_str()),
                err["message"].as_str().filter(|m| !m.is_empty()).or(err["errors"][0]["message"].as_str()),
            ),
            // OAuth endpoints: {"error": "invalid_grant", "error_description": "…"}.
            Value::String(code) => (Some(code.as_str()), value["error_description"].as_str()),
            _ => (None, None),
        };
        Self {
            status,
            reason: reason.filter(|r| !r.is_empty()).map(str::to_owned),
            message: match message {
                Some(m) if !m.is_empty() => m.to_owned(),
                _ => quote(body),
            },
        }
    }

    /// Whether Google asks for a retry: 408, 429, any 5xx, or a rate-limit or backend reason.
    pub fn is_transient(&self) -> bool {
        self.status == 408 || self.status == 429 || self.status >= 500 || self.reason.as_deref().is_some_and(Self::is_transient_reason)
    }

    /// Whether an error reason (`errors[].reason`, also found in BigQuery job results) asks
    /// for a retry: `rateLimitExceeded`, `userRateLimitExceeded`, `backendError`, `internalError`.
    pub fn is_transient_reason(reason: &str) -> bool {
        TRANSIENT_REASONS.contains(&reason)
    }
}

/// The first characters of a body, quoted (escaping control characters), or a note that it is empty.
fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "no details (empty body)".to_owned();
    }
    let mut chars = text.chars();
    let prefix: String = chars.by_ref().take(QUOTED_CHARS).collect();
    let cut = if chars.next().is_some() { "…" } else { "" };
    format!("{prefix:?}{cut}")
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if let Some(text) = reqwest::StatusCode::from_u16(self.status).ok().and_then(|s| s.canonical_reason()) {
            write!(f, " {text}")?;
        }
        if let Some(reason) = &self.reason {
            write!(f, " ({reason})")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ApiError {}

impl Classify for ApiError {
    fn class(&self) -> ErrorClass {
        if self.is_transient() {
            ErrorClass::Transient
        } else {
            ErrorClass::Permanent
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_error_object() {
        let body = br#"{"error": {"code": 404, "message": "Not found: Table p:d.t was not found in location US",
            "errors": [{"message": "Not found: Table p:d.t", "domain": "global", "reason": "notFound"}], "status": "NOT_FOUND"}}"#;
        let e = ApiError::parse(404, body);
        assert_eq!(e.status, 404);
        assert_eq!(e.reason.as_deref(), Some("notFound"));
        assert_eq!(e.message, "Not found: Table p:d.t was not found in location US");
        assert_eq!(e.to_string(), "HTTP 404 Not Found (notFound): Not found: Table p:d.t was not found in location US");
        assert_eq!(e.class(), ErrorClass::Permanent);
    }

    #[test]
    fn status_is_the_reason_without_errors() {
        // Pub/Sub and other gRPC-transcoded APIs send no `errors` list.
        let e = ApiError::parse(
            403,
            br#"{"error": {"code": 403, "message": "User not authorized to perform this action.", "status": "PERMISSION_DENIED"}}"#,
        );
        assert_eq!(e.reason.as_deref(), Some("PERMISSION_DENIED"));
        assert_eq!(e.message, "User not authorized to perform this action.");
        let e = ApiError::parse(400, br#"{"error": {"message": "bad", "errors": [{"reason": ""}], "status": "INVALID_ARGUMENT"}}"#);
        assert_eq!(e.reason.as_deref(), Some("INVALID_ARGUMENT"));
        let e = ApiError::parse(400, br#"{"error": {"errors": [{"reason": "invalid", "message": "from the list"}]}}"#);
        assert_eq!((e.reason.as_deref(), e.message.as_str()), (Some("invalid"), "from the list"));
    }

    #[test]
    fn lists_and_oauth_errors() {
        let e = ApiError::parse(429, br#"[{"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}}]"#);
        assert_eq!((e.reason.as_deref(), e.message.as_str()), (Some("RESOURCE_EXHAUSTED"), "slow down"));
        let e = ApiError::parse(400, br#"{"error": "invalid_grant", "error_description": "Bad Request"}"#);
        assert_eq!((e.reason.as_deref(), e.message.as_str()), (Some("invalid_grant"), "Bad Request"));
    }

    #[test]
    fn other_bodies_are_quoted_short() {
        let page = format!("<html>\n<title>502 Bad Gateway</title>{}</html>", "x".repeat(1000));
        let e = ApiError::parse(502, page.as_bytes());
        assert_eq!(e.reason, None);
        assert!(e.message.starts_with(r#""<html>\n<title>502 Bad Gateway</title>xxx"#), "{}", e.message);
        assert!(e.message.ends_with("\"…"), "{}", e.message);
        assert!(e.message.chars().count() < 220, "{}", e.message);
        assert_eq!(e.to_string(), format!("HTTP 502 Bad Gateway: {}", e.message));

        assert_eq!(ApiError::parse(404, b"Not Found\n").message, r#""Not Found""#);
        assert_eq!(ApiError::parse(500, b"").message, "no details (empty body)");
        assert_eq!(ApiError::parse(500, b"{}").message, r#""{}""#);
        assert_eq!(ApiError::parse(400, b"\xff\xfe oops").message, "\"\u{fffd}\u{fffd} oops\"");
        assert_eq!(ApiError::parse(599, b"").to_string(), "HTTP 599: no details (empty body)");
    }

    #[test]
    fn retry_class() {
        let class = |status, reason: Option<&str>| ApiError { status, reason: reason.map(str::to_owned), message: String::new() }.class();
        assert_eq!(class(429, None), ErrorClass::Transient);
        assert_eq!(class(503, Some("backendError")), ErrorClass::Transient);
        assert_eq!(class(408, None), ErrorClass::Transient);
        assert_eq!(class(403, Some("rateLimitExceeded")), ErrorClass::Transient);
        assert_eq!(class(403, Some("quotaExceeded")), ErrorClass::Permanent);
        assert_eq!(class(401, Some("UNAUTHENTICATED")), ErrorClass::Permanent);
        assert_eq!(class(409, Some("duplicate")), ErrorClass::Permanent);
    }
}
