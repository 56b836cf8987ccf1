//! The trigger: a Pub/Sub push request (or the same body delivered by Eventarc with `ce-*`
//! headers) carrying `{"config": "default", "exports": [..], "full": .., "date": .., "dry_run": ..}`.

use axum::http::HeaderMap;
use base64::Engine;
use chrono::NaiveDate;
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
    let bad = |message_id: Option<String>, reason: String| Malformed { message_id, reason };
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
    let some = Some(message_id.clone());
    let data = message.get("data").and_then(Value::as_str).unwrap_or_default();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| bad(some.clone(), format!("message data is not base64 ({e})")))?;
    let trigger: Trigger = if bytes.iter().all(u8::is_ascii_whitespace) {
        serde_json::from_str("{}").expect("empty trigger")
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
            format!("message data field config: {:?} is not a config name (letters, digits, `_` and `-`, at most 64)", trigger.config),
        ));
    }
    Ok(Push { message_id, trigger, form })
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
        ];
        for (body, want) in cases {
            let e = parse(&HeaderMap::new(), body).unwrap_err();
            assert!(e.reason.contains(want), "{want:?} not in {:?}", e.reason);
        }
    }
}
