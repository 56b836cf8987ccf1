//! The trigger: a Pub/Sub push request (or the same body delivered by Eventarc with `ce-*`
//! headers) carrying `{"config": "default", "exports": [..], "full": .., "date": .., "dry_run": ..}`.

use axum::http::HeaderMap;
use base64::Engine;
use chrono::NaiveDate;
use ferry_core::config::limits::{bound_message, quote};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What the message asks for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// Selects `<config dir>/<config>.json`; `default` when absent.
    #[serde(default = "default_config")]
    pub config: String,
    /// Only these exports; every enabled one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exports: Option<Vec<String>>,
    /// Ignore the watermark.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full: bool,
    /// The run date for `{date}` (backfills); today (UTC) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<NaiveDate>,
    /// Read and encode only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

fn default_config() -> String {
    "default".into()
}

/// A push request ferry can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// Pub/Sub's message id: the same on every redelivery.
    pub message_id: String,
    pub trigger: Trigger,
    /// `pubsub` or `eventarc`.
    pub form: &'static str,
}

/// A request ferry cannot act on: it is acknowledged (redelivering it cannot help) and reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub message_id: Option<String>,
    /// What is wrong, in words for the person who published it.
    pub reason: String,
}

/// Parses a push request body (and, for Eventarc, its `ce-*` headers).
pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Push, Malformed> {
    let form = if headers.contains_key("ce-id") || headers.contains_key("ce-type") { "eventarc" } else { "pubsub" };
    let bad = |message_id: Option<String>, reason: String| Malformed { message_id, reason: bound_message(reason) };
    let envelope: Value = serde_json::from_slice(body).map_err(|e| bad(None, format!("the request body is not JSON ({e})")))?;
    let message = envelope.get("message").filter(|m| m.is_object()).ok_or_else(|| {
        bad(
            None,
            "the request body has no `message` object (expected a Pub/Sub push envelope {\"message\": {...}, \"subscription\": ...})"
                .into(),
        )
    })?;
    let message_id = message
        .get("messageId")
        .or_else(|| message.get("message_id"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| headers.get("ce-id").and_then(|v| v.to_str().ok()).map(str::to_owned))
        .filter(|id| !id.is_empty());
    let Some(message_id) = message_id else {
        return Err(bad(None, "the message has no messageId, so a redelivery could not be recognised".into()));
    };
    if message_id.len() > MAX_MESSAGE_ID {
        return Err(bad(None, format!("the messageId {} is longer than {MAX_MESSAGE_ID} characters", quote(&message_id))));
    }
    if message_id.chars().any(char::is_control) {
        return Err(bad(None, format!("the messageId {} holds control characters", quote(&message_id.escape_default().to_string()))));
    }
    let some = Some(message_id.clone());
    let data = match message.get("data") {
        None => "",
        Some(Value::String(data)) => data,
        Some(other) => return Err(bad(some, format!("message data is {}, not a base64 string", kind(other)))),
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| bad(some.clone(), format!("message data is not base64 ({e})")))?;
    let trigger: Trigger = if bytes.iter().all(u8::is_ascii_whitespace) {
        serde_json::from_str("{}").expect("empty trigger")
    } else if let Some(not_object) = json_kind(&bytes).filter(|k| *k != "an object") {
        return Err(bad(some, format!("message data is {not_object}; expected a JSON object such as {{\"config\": \"default\"}}")));
    } else {
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                bad(some.clone(), format!("message data is not JSON ({inner})"))
            } else if path == "." {
                bad(some.clone(), format!("message data: {inner}"))
            } else {
                bad(some.clone(), format!("message data field {path}: {inner}"))
            }
        })?
    };
    if !valid_config_name(&trigger.config) {
        return Err(bad(
            some,
            format!(
                "message data field config: {} is not a config name (letters, digits, `_` and `-`, at most 64)",
                quote(&trigger.config)
            ),
        ));
    }
    if let Some(exports) = &trigger.exports {
        if exports.is_empty() {
            return Err(bad(
                some,
                "message data field exports: the list is empty; leave exports out to run every enabled export, or name at least one".into(),
            ));
        }
        if exports.len() > MAX_EXPORTS {
            return Err(bad(some, format!("message data field exports: {} names, at most {MAX_EXPORTS}", exports.len())));
        }
        if let Some((i, name)) = exports.iter().enumerate().find(|(_, n)| !valid_config_name(n)) {
            return Err(bad(
                some,
                format!(
                    "message data field exports[{i}]: {} is not an export name (letters, digits, `_` and `-`, at most 64)",
                    quote(name)
                ),
            ));
        }
    }
    Ok(Push { message_id, trigger, form })
}

/// The longest message id accepted (Pub/Sub's are about 16 digits, CloudEvents ids similar).
pub const MAX_MESSAGE_ID: usize = 100;

/// The most export names one message may list.
pub const MAX_EXPORTS: usize = 1000;

/// What kind of JSON value `bytes` holds (`an object`, `a number`, …), or `None` when they are
/// not JSON (the parser then says where).
fn json_kind(bytes: &[u8]) -> Option<&'static str> {
    serde_json::from_slice::<Value>(bytes).ok().map(|v| kind(&v))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Config names select files in the config directory: no paths.
pub fn valid_config_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(data: &str) -> Vec<u8> {
        serde_json::json!({"message": {"data": data, "messageId": "42", "attributes": {}}, "subscription": "projects/p/subscriptions/s"})
            .to_string()
            .into_bytes()
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn a_push_envelope_selects_config_and_options() {
        let p =
            parse(&HeaderMap::new(), &envelope(&b64(r#"{"config":"nightly","exports":["a"],"full":true,"date":"2026-11-01"}"#))).unwrap();
        assert_eq!(p.message_id, "42");
        assert_eq!(p.form, "pubsub");
        assert_eq!(p.trigger.config, "nightly");
        assert_eq!(p.trigger.exports, Some(vec!["a".to_owned()]));
        assert!(p.trigger.full && !p.trigger.dry_run);
        assert_eq!(p.trigger.date, NaiveDate::from_ymd_opt(2026, 11, 1));
    }

    #[test]
    fn empty_data_means_the_default_config() {
        assert_eq!(parse(&HeaderMap::new(), &envelope("")).unwrap().trigger.config, "default");
    }

    #[test]
    fn reasons_quote_a_short_prefix() {
        let long = "x".repeat(1 << 20);
        for body in [
            envelope(&b64(&format!(r#"{{"config":"{long}"}}"#))),
            envelope(&b64(&format!(r#"{{"exports":["{long}"]}}"#))),
            envelope(&b64(&format!(r#"{{"colour":"{long}"}}"#))),
            envelope(&b64(&format!(r#"{{"full":"{long}"}}"#))),
            serde_json::json!({"message": {"data": "", "messageId": long}}).to_string().into_bytes(),
        ] {
            let e = parse(&HeaderMap::new(), &body).unwrap_err();
            assert!(e.reason.len() < 1200, "{} bytes: {}", e.reason.len(), &e.reason[..200]);
            assert!(e.message_id.as_ref().is_none_or(|id| id.len() <= MAX_MESSAGE_ID));
        }
    }

    #[test]
    fn eventarc_headers_are_recognised() {
        let mut h = HeaderMap::new();
        h.insert("ce-id", "99".parse().unwrap());
        h.insert("ce-type", "google.cloud.pubsub.topic.v1.messagePublished".parse().unwrap());
        let body = serde_json::json!({"message": {"data": b64("{}")}, "subscription": "s"}).to_string();
        let p = parse(&h, body.as_bytes()).unwrap();
        assert_eq!((p.form, p.message_id.as_str()), ("eventarc", "99"));
    }

    #[test]
    fn malformed_requests_say_what_is_wrong() {
        let cases: &[(Vec<u8>, &str)] = &[
            (b"nope".to_vec(), "the request body is not JSON"),
            (b"{}".to_vec(), "has no `message` object"),
            (br#"{"message":{"data":""}}"#.to_vec(), "has no messageId"),
            (envelope("***"), "message data is not base64"),
            (envelope(&b64("{not json")), "message data is not JSON"),
            (envelope(&b64(r#"{"config":"default","colour":1}"#)), "unknown field `colour`"),
            (envelope(&b64(r#"{"full":"yes"}"#)), "message data field full: invalid type"),
            (envelope(&b64(r#"{"date":"2026-13-01"}"#)), "message data field date:"),
            (envelope(&b64(r#"{"config":"../etc/passwd"}"#)), "is not a config name"),
            (envelope(&b64("42")), "message data is a number; expected a JSON object"),
            (envelope(&b64("null")), "message data is null; expected a JSON object"),
            (envelope(&b64("[]")), "message data is a list; expected a JSON object"),
            (envelope(&b64(r#"{"exports":[]}"#)), "message data field exports: the list is empty"),
            (envelope(&b64(r#"{"exports":["a","b/c"]}"#)), "message data field exports[1]: \"b/c\" is not an export name"),
            (br#"{"message":{"data":42,"messageId":"1"}}"#.to_vec(), "message data is a number, not a base64 string"),
            (br#"{"message":{"data":null,"messageId":"1"}}"#.to_vec(), "message data is null, not a base64 string"),
        ];
        for (body, want) in cases {
            let e = parse(&HeaderMap::new(), body).unwrap_err();
            assert!(e.reason.contains(want), "{want:?} not in {:?}", e.reason);
        }
    }
}
