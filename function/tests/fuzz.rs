//! Property tests ("fuzz targets") for the two places untrusted input enters: the config loader
//! (`RawConfig::from_json`, `Config::load_raw`, validation) and the push parser
//! (`trigger::parse`). Inputs are structured but hostile: config-shaped JSON with known keys
//! holding wrong types, multi-megabyte strings, deep nesting, unicode and NUL bytes; random
//! bytes; push envelopes with random base64 data.
//!
//! Every case must not panic and must finish within `SLOW_CASE` (a guard against pathological
//! behaviour such as quadratic loops, not a performance assertion). The `limits_*` targets
//! also require every error message to stay under `MAX_MESSAGE` bytes however long the input:
//! that is issue #15's input limits for config strings and message bodies.
//!
//! The number of cases is bounded (`CASES`, overridden by `PROPTEST_CASES`) so the targets
//! finish in about a second within the test suite; the seed is fixed (`SEED`, overridden by
//! `PROPTEST_RNG_SEED`) so a run is repeatable.

use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};
use base64::Engine;
use ferry::trigger;
use ferry_core::config::{Config, ConfigErrors, Deployment, RawConfig};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};
use serde_json::{json, Map, Value};

/// Cases per target unless `PROPTEST_CASES` says otherwise.
const CASES: u32 = 256;
/// The longest one case may take: generous, it only catches pathological inputs.
const SLOW_CASE: Duration = Duration::from_secs(2);
/// The longest error message one problem may produce, whatever the input's size.
const MAX_MESSAGE: usize = 2_000;

/// The seed of every run unless `PROPTEST_RNG_SEED` gives another: the suite sees the same
/// cases each time, and a seed of one's own explores others.
const SEED: u64 = 15;

fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    // No regression files in the source tree; a failure prints its seed and minimal input.
    let mut c = ProptestConfig { cases, failure_persistence: None, max_shrink_time: 20_000, ..ProptestConfig::default() };
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        c.rng_seed = RngSeed::Fixed(SEED);
    }
    c
}

/// Strings a user (or an attacker) might put anywhere: short unicode with control characters
/// and NUL, a few kilobytes, or a few megabytes.
fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "\\PC{0,12}",
        2 => "[\\x00-\\x1f\"\\\\{}\\[\\]/*, -]{0,16}",
        2 => (1usize..5_000, any::<char>()).prop_map(|(n, c)| c.to_string().repeat(n)),
        1 => (1usize..=3 << 20).prop_map(|n| "x".repeat(n)),
    ]
}

/// Any JSON value, nested a few levels, with hostile strings.
fn hostile_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        hostile_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Keys ferry knows (so the value reaches its checks), and now and then an unknown one.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(&[
            "exports", "sftp", "metadata_table", "bigquery", "notifications", "schedules", "name", "source_table",
            "query", "destination_filename", "timestamp_column", "incremental", "columns", "cursor_time_zone",
            "format", "compression", "delimiter", "max_rows_per_file", "path", "host", "port", "username",
            "password_env", "host_key_fingerprint", "cron", "time_zone", "project", "endpoint", "email", "slack",
            "source", "destination", "type", "table", "file", "settle", "enabled",
        ][..])
        .prop_map(str::to_owned),
        1 => hostile_string(),
    ]
}

/// A valid seed-form config, for mutation.
fn base() -> Value {
    json!({
        "exports": [{
            "name": "orders", "source_table": "shop.orders", "destination_filename": "ORDERS_{datetime}.csv",
            "timestamp_column": "updated_at", "incremental": true, "columns": ["id", "updated_at"]
        }],
        "sftp": {"path": "/upload", "host": "127.0.0.1", "username": "u", "host_key_fingerprint": "SHA256:AnxDfrPmOL4De0eahuVc3Rk2UV15ZF6y0jItw/GoFp4"},
        "metadata_table": "proj-1.ops.export_metadata",
        "schedules": [{"name": "nightly", "cron": "0 2 * * *", "time_zone": "Europe/Berlin"}]
    })
}

/// The fields of `base()` a mutation may replace.
const FIELDS: &[&str] = &[
    "/exports/0/name",
    "/exports/0/source_table",
    "/exports/0/destination_filename",
    "/exports/0/timestamp_column",
    "/exports/0/incremental",
    "/exports/0/columns",
    "/exports/0/columns/0",
    "/exports/0",
    "/exports",
    "/sftp/path",
    "/sftp/host",
    "/sftp/username",
    "/sftp/host_key_fingerprint",
    "/sftp",
    "/metadata_table",
    "/schedules/0/name",
    "/schedules/0/cron",
    "/schedules/0/time_zone",
    "/schedules",
];

/// `base()` with up to three fields replaced by hostile values.
fn mutated_config() -> impl Strategy<Value = Value> {
    prop::collection::vec((prop::sample::select(FIELDS), hostile_value()), 1..4).prop_map(|changes| {
        let mut v = base();
        for (field, value) in changes {
            if let Some(slot) = v.pointer_mut(field) {
                *slot = value;
            }
        }
        v
    })
}

/// A config-shaped object: the known top-level keys with arbitrary values.
fn shaped_config() -> impl Strategy<Value = Value> {
    prop::collection::vec(
        (prop::sample::select(&["exports", "sftp", "metadata_table", "bigquery", "notifications", "schedules"][..]), hostile_value()),
        0..6,
    )
    .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

/// Loads and validates `text` as `ferry check --no-secrets` would, timing it.
fn load(text: &str) -> (Result<Config, ConfigErrors>, Duration) {
    let start = Instant::now();
    let result = RawConfig::from_json(text).and_then(|raw| ferry::components::validate(&raw, &|_| None, Deployment::Elsewhere));
    (result, start.elapsed())
}

/// The problems of an error longer than `MAX_MESSAGE`: their length and start.
fn long_problems(e: &ConfigErrors) -> Vec<String> {
    e.0.iter()
        .map(ToString::to_string)
        .filter(|m| m.len() > MAX_MESSAGE)
        .map(|m| format!("{} bytes: {}...", m.len(), m.chars().take(80).collect::<String>()))
        .collect()
}

/// Deeper than serde_json's recursion limit: refused, not a stack overflow.
#[test]
fn a_deeply_nested_config_is_refused_without_overflowing_the_stack() {
    for depth in [100, 1_000, 100_000] {
        for (open, close) in [("[", "]"), ("{\"exports\":", "}")] {
            let text = format!("{{\"exports\": {}0{}}}", open.repeat(depth), close.repeat(depth));
            let (result, took) = load(&text);
            assert!(result.is_err(), "depth {depth} {open}");
            assert!(took < SLOW_CASE, "depth {depth} {open}: {took:?}");
        }
    }
}

/// #15 input limits, deterministically: each field of `base()` in turn holds a 3 MiB string;
/// every problem reported must stay under `MAX_MESSAGE` bytes. Fails until the config loader
/// limits its strings; the message lists each field that echoes the value.
#[test]
fn limits_a_multi_megabyte_value_is_not_echoed_in_errors() {
    let huge = Value::from("x".repeat(3 << 20));
    let mut echoed = Vec::new();
    for field in FIELDS {
        let mut v = base();
        *v.pointer_mut(field).unwrap() = huge.clone();
        let (result, took) = load(&v.to_string());
        assert!(took < SLOW_CASE, "{field}: slow case {took:?}");
        if let Err(e) = result {
            echoed.extend(long_problems(&e).into_iter().map(|p| format!("{field}: {p}")));
        }
    }
    assert!(echoed.is_empty(), "{} fields echo a 3 MiB value:\n{}", echoed.len(), echoed.join("\n"));
}

proptest! {
    #![proptest_config(config(CASES))]

    /// Config-shaped JSON with hostile values: an error or a config, quickly, never a panic.
    #[test]
    fn config_loader_survives_hostile_json(v in prop_oneof![mutated_config(), shaped_config()]) {
        let (_, took) = load(&v.to_string());
        prop_assert!(took < SLOW_CASE, "slow case: {took:?}");
    }

    /// Random bytes, read from a file as `ferry check` reads one.
    #[test]
    fn config_loader_survives_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096), json_prefix in any::<bool>()) {
        let dir = std::env::temp_dir().join(format!("ferry-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ferry.json");
        let mut body = if json_prefix { b"{\"exports\": ".to_vec() } else { Vec::new() };
        body.extend_from_slice(&bytes);
        std::fs::write(&path, &body).unwrap();
        let start = Instant::now();
        let result = Config::load_raw(&path).and_then(|raw| ferry::components::validate(&raw, &|_| None, Deployment::Elsewhere));
        let took = start.elapsed();
        prop_assert!(result.is_err(), "random bytes made a valid config");
        prop_assert!(took < SLOW_CASE, "slow case: {took:?}");
        let e = result.err().unwrap();
        prop_assert!(long_problems(&e).is_empty(), "{:?}", long_problems(&e));
    }

    /// #15 input limits: however long a value, no problem's message exceeds `MAX_MESSAGE`
    /// (errors quote at most a short prefix). Fails until the config loader limits its strings.
    #[test]
    fn limits_config_errors_stay_short_whatever_the_input(v in mutated_config()) {
        let (result, took) = load(&v.to_string());
        prop_assert!(took < SLOW_CASE, "slow case: {took:?}");
        if let Err(e) = result {
            prop_assert!(long_problems(&e).is_empty(), "{:?}", long_problems(&e));
        }
    }
}

fn envelope(message: Value) -> Vec<u8> {
    json!({"message": message, "subscription": "projects/p/subscriptions/s"}).to_string().into_bytes()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// What a push message's `data` may decode to: trigger-shaped JSON with hostile values, any
/// JSON, or random bytes.
fn hostile_data() -> impl Strategy<Value = Vec<u8>> {
    let trigger_key = prop_oneof![
        6 => prop::sample::select(&["config", "exports", "full", "date", "dry_run"][..]).prop_map(str::to_owned),
        1 => hostile_string(),
    ];
    prop_oneof![
        3 => prop::collection::vec((trigger_key, hostile_value()), 0..5)
            .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>()).to_string().into_bytes()),
        1 => hostile_value().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

/// Push request bodies: envelopes with random base64 data and ids, broken envelopes, bytes.
fn hostile_body() -> impl Strategy<Value = Vec<u8>> {
    let id = prop_oneof![Just(Value::from("123")), hostile_value()];
    let data = prop_oneof![
        4 => hostile_data().prop_map(|d| Value::from(b64(&d))),
        1 => hostile_string().prop_map(Value::from),
        1 => hostile_value(),
    ];
    prop_oneof![
        4 => (id, data).prop_map(|(id, data)| envelope(json!({"messageId": id, "data": data}))),
        1 => hostile_value().prop_map(|v| json!({"message": v}).to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..2048),
    ]
}

fn headers(eventarc: bool) -> HeaderMap {
    let mut h = HeaderMap::new();
    if eventarc {
        h.insert("ce-id", HeaderValue::from_static("42"));
        h.insert("ce-type", HeaderValue::from_static("google.cloud.pubsub.topic.v1.messagePublished"));
    }
    h
}

proptest! {
    #![proptest_config(config(CASES * 2))]

    /// The push parser answers every body quickly, never panicking.
    #[test]
    fn push_parser_survives_hostile_bodies(body in hostile_body(), eventarc in any::<bool>()) {
        let start = Instant::now();
        let _ = trigger::parse(&headers(eventarc), &body);
        let took = start.elapsed();
        prop_assert!(took < SLOW_CASE, "slow case: {took:?}");
    }

    /// #15 input limits: a rejected message's reason (reported to Slack and email) stays under
    /// `MAX_MESSAGE` bytes whatever the body holds. Fails until the push parser quotes prefixes.
    #[test]
    fn limits_push_rejections_stay_short_whatever_the_body(body in hostile_body(), eventarc in any::<bool>()) {
        if let Err(m) = trigger::parse(&headers(eventarc), &body) {
            prop_assert!(m.reason.len() <= MAX_MESSAGE, "{} bytes: {}...", m.reason.len(), m.reason.chars().take(80).collect::<String>());
        }
    }
}
