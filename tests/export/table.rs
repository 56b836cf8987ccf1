//! The `bigquery` table destination on the emulator: a BigQuery source loaded into another
//! BigQuery table, replaced atomically or appended once per window.

use std::time::Duration;

use ferry_core::roles::RunStatus;
use ferry_testkit::stack;
use serde_json::{json, Value};

use crate::common::{text, Fixture};

/// A config loading `source` into `<ds>.<table>` with the destination's `extra` settings.
fn config_json(f: &Fixture, export: Value) -> Value {
    let s = stack();
    json!({
        "exports": [export],
        "metadata_table": format!("{}.export_metadata", f.ds.name),
        "bigquery": {"project": s.bq_project(), "endpoint": s.bq_endpoint(), "auth": "none", "read_api": "rest"},
    })
}

fn export(f: &Fixture, source: &str, destination: Value, extra: Value) -> Value {
    let mut x = json!({
        "name": f.export,
        "source": {"type": "bigquery", "table": format!("{}.{source}", f.ds.name)},
        "destination": destination,
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        x[k] = v;
    }
    x
}

async fn count(f: &Fixture, table: &str) -> u64 {
    let rows = f.ds.rows(&format!("SELECT COUNT(*) FROM `{}`", f.ds.table(table))).await;
    text(&rows[0][0]).and_then(|v| v.parse().ok()).unwrap_or(0)
}

async fn ids(f: &Fixture, table: &str) -> Vec<i64> {
    let rows = f.ds.rows(&format!("SELECT id FROM `{}` ORDER BY id", f.ds.table(table))).await;
    rows.iter().map(|r| text(&r[0]).and_then(|v| v.parse().ok()).expect("id")).collect()
}

async fn seed(f: &Fixture, table: &str, ids: std::ops::Range<i64>, ts: &str) {
    f.ds.exec(&format!("CREATE TABLE IF NOT EXISTS `{}` (id INT64, note STRING, updated_at TIMESTAMP)", f.ds.table(table))).await;
    let values: Vec<String> = ids.map(|id| format!("({id}, 'row {id}', TIMESTAMP '{ts}')")).collect();
    f.ds.exec(&format!("INSERT INTO `{}` VALUES {}", f.ds.table(table), values.join(", "))).await;
}

/// Tables in the fixture's dataset whose name starts with `prefix`.
async fn tables_like(f: &Fixture, prefix: &str) -> Vec<String> {
    let rows = f.ds.rows(&format!("SELECT table_name FROM `{}`.INFORMATION_SCHEMA.TABLES ORDER BY table_name", f.ds.name)).await;
    rows.iter().filter_map(|r| text(&r[0])).filter(|t| t.starts_with(prefix)).collect()
}

/// Runs `config` while a reader keeps counting `table`'s rows and looking for its staging
/// tables: the report, every count seen, and whether a staging table was seen.
async fn watch(
    f: &Fixture,
    config: &ferry_core::config::Config,
    table: &str,
) -> (ferry_core::run::RunReport, std::collections::BTreeSet<u64>, bool) {
    let run = f.run(config, false);
    tokio::pin!(run);
    let (mut seen, mut staged) = (std::collections::BTreeSet::new(), false);
    let staging = format!("{table}__ferry_");
    let report = loop {
        tokio::select! {
            r = &mut run => break r,
            n = count(f, table) => { seen.insert(n); }
        }
        tokio::select! {
            r = &mut run => break r,
            t = tables_like(f, &staging) => { staged |= !t.is_empty(); }
        }
    };
    (report, seen, staged)
}

#[tokio::test]
async fn every_bigquery_type_is_loaded_with_its_type_and_value() {
    let f = Fixture::new("tbl_types").await;
    f.ds.exec(&format!(
        "CREATE TABLE `{}` (id INT64, name STRING, amount NUMERIC, big BIGNUMERIC, ts TIMESTAMP, dt DATETIME, d DATE, t TIME, flag BOOL, \
         f FLOAT64, j JSON, b BYTES, tags ARRAY<STRING>, rec STRUCT<a STRING, n INT64>)",
        f.ds.table("src")
    ))
    .await;
    f.ds.exec(&format!(
        "INSERT INTO `{}` VALUES (1, 'zürich, \"q\"', NUMERIC '-123.456789', BIGNUMERIC '12345678901234567890.123456789012345678', TIMESTAMP '2024-05-01 12:34:56.123456+00', \
         DATETIME '2024-05-01 01:02:03.5', DATE '2024-05-01', TIME '12:00:01.25', true, 1.5, JSON '{{\"k\":[1,2]}}', b'hello', \
         ['x', 'y'], STRUCT('A', 7)), (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, [], NULL)",
        f.ds.table("src")
    ))
    .await;
    let dest = json!({"type": "bigquery", "table": format!("{}.dst", f.ds.name), "mode": "replace"});
    let config = f.load(&config_json(&f, export(&f, "src", dest, json!({})))).expect("valid config");
    let report = f.run(&config, false).await;
    assert_eq!(report.outcomes[0].status, RunStatus::Success, "{:?}", report.outcomes[0].error);
    assert_eq!(report.outcomes[0].rows, 2);

    let types =
        f.ds.rows(&format!(
            "SELECT column_name, data_type FROM `{}`.INFORMATION_SCHEMA.COLUMNS WHERE table_name = 'dst' ORDER BY ordinal_position",
            f.ds.name
        ))
        .await;
    let types: Vec<(String, String)> = types.iter().map(|r| (text(&r[0]).unwrap(), text(&r[1]).unwrap())).collect();
    let want = [
        ("id", "INT64"),
        ("name", "STRING"),
        ("amount", "NUMERIC"),
        ("big", "BIGNUMERIC"),
        ("ts", "TIMESTAMP"),
        ("dt", "DATETIME"),
        ("d", "DATE"),
        ("t", "TIME"),
        ("flag", "BOOL"),
        ("f", "FLOAT64"),
        ("j", "JSON"),
        ("b", "BYTES"),
        ("tags", "ARRAY<STRING>"),
        ("rec", "STRUCT<a STRING, n INT64>"),
    ];
    assert_eq!(types, want.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>());

    // Every value compared as BigQuery prints it, source against destination.
    let as_text = "SELECT TO_JSON_STRING(r) FROM `{}` r ORDER BY id";
    let src = f.ds.rows(&as_text.replace("{}", &f.ds.table("src"))).await;
    let dst = f.ds.rows(&as_text.replace("{}", &f.ds.table("dst"))).await;
    assert_eq!(dst, src);
    assert!(text(&dst[0][0]).unwrap().contains("-123.456789"), "{dst:?}");
    assert!(text(&dst[0][0]).unwrap().contains("12345678901234567890.123456789012345678"), "{dst:?}");
    assert!(tables_like(&f, "dst__ferry_").await.is_empty(), "the staging table was left behind");
}

#[tokio::test]
async fn replace_swaps_the_table_at_once_while_a_reader_watches() {
    let f = Fixture::new("tbl_replace").await;
    seed(&f, "src", 0..10, "2024-01-01 00:00:00+00").await;
    let dest = json!({"type": "bigquery", "table": format!("{}.snap", f.ds.name), "mode": "catalog", "job_rows": 100});
    let config = f.load(&config_json(&f, export(&f, "src", dest, json!({})))).expect("valid config");
    assert_eq!(f.run(&config, false).await.outcomes[0].status, RunStatus::Success);
    assert_eq!(ids(&f, "snap").await, (0..10).collect::<Vec<_>>());

    // The new snapshot: 300 other rows, loaded into a staging table by 3 jobs, each followed
    // by a stall.
    f.ds.exec(&format!("DELETE FROM `{}` WHERE true", f.ds.table("src"))).await;
    seed(&f, "src", 1000..1300, "2024-01-02 00:00:00+00").await;
    for _ in 0..3 {
        ferry_core::failpoint::arm_sleep("load:batch", &f.export, Duration::from_millis(700));
    }
    let (report, mut seen, _) = watch(&f, &config, "snap").await;
    assert_eq!(report.outcomes[0].status, RunStatus::Success, "{:?}", report.outcomes[0].error);
    seen.insert(count(&f, "snap").await);
    assert!(seen.iter().all(|n| *n == 10 || *n == 300), "a reader saw a partial table: counts {seen:?}");
    assert_eq!(ids(&f, "snap").await, (1000..1300).collect::<Vec<_>>());
    assert!(tables_like(&f, "snap__ferry_").await.is_empty(), "the staging table was left behind");
}

#[tokio::test]
async fn replace_by_default_is_one_load_job_into_the_table_that_runs_only_with_the_last_bytes() {
    let f = Fixture::new("tbl_direct").await;
    seed(&f, "src", 0..10, "2024-01-01 00:00:00+00").await;
    let dest = json!({"type": "bigquery", "table": format!("{}.snap", f.ds.name), "mode": "catalog", "batch_rows": 7});
    let config = f.load(&config_json(&f, export(&f, "src", dest, json!({})))).expect("valid config");
    let r = f.run(&config, false).await;
    assert_eq!(r.outcomes[0].status, RunStatus::Success, "{:?}", r.outcomes[0].error);
    assert_eq!(ids(&f, "snap").await, (0..10).collect::<Vec<_>>());

    // A new snapshot, every row of it sent; the run stops before the file's last bytes go.
    f.ds.exec(&format!("DELETE FROM `{}` WHERE true", f.ds.table("src"))).await;
    seed(&f, "src", 1000..1300, "2024-01-02 00:00:00+00").await;
    ferry_core::failpoint::arm("lease:confirm", &f.export);
    let r = f.run(&config, false).await;
    assert_eq!(r.outcomes[0].status, RunStatus::Failed);
    assert_eq!(ids(&f, "snap").await, (0..10).collect::<Vec<_>>(), "an unfinished upload loaded rows");

    // A reader watching the next run sees the old snapshot or the new one.
    ferry_core::failpoint::arm_sleep("load:commit", &f.export, Duration::from_millis(700));
    let (report, seen, staged) = watch(&f, &config, "snap").await;
    assert_eq!(report.outcomes[0].status, RunStatus::Success, "{:?}", report.outcomes[0].error);
    assert!(seen.iter().all(|n| *n == 10 || *n == 300), "a reader saw a partial table: counts {seen:?}");
    assert_eq!(ids(&f, "snap").await, (1000..1300).collect::<Vec<_>>());
    // The run stalls after its commit, where a staging table would still be there.
    assert!(!staged, "a staging table was made");
}

#[tokio::test]
async fn append_adds_each_window_once_with_tied_and_late_cursor_values() {
    let f = Fixture::new("tbl_append").await;
    seed(&f, "src", 0..5, "2024-01-01 00:00:00+00").await;
    seed(&f, "src", 5..8, "2024-01-01 00:00:05+00").await; // tied at the watermark
    let dest = json!({"type": "bigquery", "table": format!("{}.facts", f.ds.name), "mode": "append", "batch_rows": 3});
    let x = export(&f, "src", dest, json!({"timestamp_column": "updated_at", "incremental": true}));
    let config = f.load(&config_json(&f, x)).expect("valid config");
    let r = f.run(&config, false).await;
    assert_eq!(r.outcomes[0].status, RunStatus::Success, "{:?}", r.outcomes[0].error);
    assert_eq!(ids(&f, "facts").await, (0..8).collect::<Vec<_>>());

    // Nothing new: nothing added.
    assert_eq!(f.run(&config, false).await.outcomes[0].status, RunStatus::Empty);
    // A late row above the watermark and one more tied with it: only the one above is new.
    seed(&f, "src", 8..9, "2024-01-01 00:00:06+00").await;
    let r = f.run(&config, false).await;
    assert_eq!((r.outcomes[0].status, r.outcomes[0].rows), (RunStatus::Success, 1));
    assert_eq!(ids(&f, "facts").await, (0..9).collect::<Vec<_>>());
    assert_eq!(f.watermark().await.as_deref(), Some("2024-01-01T00:00:06.000000Z"));
}

#[tokio::test]
async fn a_failure_after_a_batch_was_loaded_loads_nothing_and_the_next_run_loads_each_row_once() {
    let f = Fixture::new("tbl_batchfail").await;
    seed(&f, "src", 0..10, "2024-01-01 00:00:00+00").await;
    let dest = json!({"type": "bigquery", "table": format!("{}.facts", f.ds.name), "mode": "append", "job_rows": 4});
    let x = export(&f, "src", dest, json!({"timestamp_column": "updated_at", "incremental": true}));
    let config = f.load(&config_json(&f, x)).expect("valid config");
    // The first staging job ran; then the run fails before anything records it.
    ferry_core::failpoint::arm("load:batch", &f.export);
    let r = f.run(&config, false).await;
    assert_eq!(r.outcomes[0].status, RunStatus::Failed);
    assert!(f.ds.rows(&format!("SELECT 1 FROM `{}`.INFORMATION_SCHEMA.TABLES WHERE table_name = 'facts'", f.ds.name)).await.is_empty());
    assert!(tables_like(&f, "facts__ferry_").await.is_empty(), "the staging table was left behind");
    assert_eq!(f.watermark().await, None);

    let r = f.run(&config, false).await;
    assert_eq!((r.outcomes[0].status, r.outcomes[0].rows), (RunStatus::Success, 10), "{:?}", r.outcomes[0].error);
    assert_eq!(ids(&f, "facts").await, (0..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_lost_answer_after_the_commit_is_settled_by_the_next_run_without_loading_twice() {
    let f = Fixture::new("tbl_commitfail").await;
    seed(&f, "src", 0..6, "2024-01-01 00:00:00+00").await;
    let dest = json!({"type": "bigquery", "table": format!("{}.facts", f.ds.name), "mode": "append"});
    let x = export(&f, "src", dest, json!({"timestamp_column": "updated_at", "incremental": true}));
    let config = f.load(&config_json(&f, x)).expect("valid config");
    // The commit's copy job ran; the run dies before SUCCESS is recorded.
    ferry_core::failpoint::arm("load:commit", &f.export);
    let r = f.run(&config, false).await;
    assert_ne!(r.outcomes[0].status, RunStatus::Success);
    assert_eq!(count(&f, "facts").await, 6);
    assert_eq!(f.watermark().await, None);
    assert!(tables_like(&f, "facts__ferry_").await.is_empty(), "the staging table was left behind");

    // The next run finds the commit job done: SUCCESS for the first load, nothing loaded again.
    let r = f.run(&config, false).await;
    assert_eq!(r.outcomes[0].status, RunStatus::Empty, "{:?}", r.outcomes[0].error);
    assert_eq!(ids(&f, "facts").await, (0..6).collect::<Vec<_>>());
    assert_eq!(f.watermark().await.as_deref(), Some("2024-01-01T00:00:00.000000Z"));
    let reconciled = f.column("error_message", Some("SUCCESS")).await;
    assert!(reconciled.iter().flatten().any(|m| m.contains("reconciled")), "{reconciled:?}");
}

#[tokio::test]
async fn table_destination_settings_are_checked() {
    let f = Fixture::new("tbl_config").await;
    let table = format!("{}.t", f.ds.name);
    let cases = [
        (json!({"type": "bigquery", "table": table, "mode": "merge"}), json!({}), "destination.mode", "expected replace"),
        (json!({"type": "bigquery", "table": table}), json!({}), "destination", "mode"),
        (json!({"type": "bigquery", "table": "a.b.c.d", "mode": "append"}), json!({}), "destination.table", ""),
        (
            json!({"type": "bigquery", "table": table, "mode": "append", "batch_rows": 0}),
            json!({}),
            "destination.batch_rows",
            "expected 1 to",
        ),
        (json!({"type": "bigquery", "table": table, "mode": "append", "job_rows": 0}), json!({}), "destination.job_rows", "at least 1"),
        (
            json!({"type": "bigquery", "table": table, "mode": "replace"}),
            json!({"timestamp_column": "updated_at", "incremental": true}),
            "destination.mode",
            "incremental",
        ),
        (
            json!({"type": "bigquery", "table": table, "mode": "append"}),
            json!({"timestamp_column": "updated_at", "incremental": true, "lookback": 60}),
            "lookback",
            "a second time",
        ),
    ];
    for (dest, extra, field, words) in cases {
        let err = f.load(&config_json(&f, export(&f, "src", dest.clone(), extra))).expect_err("refused").to_string();
        assert!(err.contains(field) && err.contains(words), "{dest}: {err}");
    }
    // ETL_BATCH_SIZE, the seed's setting, stands in for batch_rows.
    let mut f = f;
    f.env.insert("ETL_BATCH_SIZE".into(), "ten".into());
    let dest = json!({"type": "bigquery", "table": table, "mode": "append"});
    let err = f.load(&config_json(&f, export(&f, "src", dest.clone(), json!({})))).expect_err("refused").to_string();
    assert!(err.contains("destination.batch_rows (ETL_BATCH_SIZE)") && err.contains("found ten"), "{err}");
    f.env.insert("ETL_BATCH_SIZE".into(), "2500".into());
    let config = f.load(&config_json(&f, export(&f, "src", dest, json!({})))).expect("valid config");
    let s = config.exports[0].destination.component.settings::<ferry_bigquery::component::TableSettings>().unwrap();
    assert_eq!(s.batch_rows, 2500);
}

/// The start of the current hour, minus `hours`, as BigQuery prints a TIMESTAMP literal.
fn hour_ago(hours: i64) -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now();
    let start = now - chrono::Duration::microseconds(now.timestamp_micros().rem_euclid(3_600_000_000));
    start - chrono::Duration::hours(hours)
}

#[tokio::test]
async fn hourly_recovers_missed_hours_in_order_and_replaces_an_hour_idempotently() {
    let f = Fixture::new("tbl_hourly").await;
    f.ds.exec(&format!("CREATE TABLE `{}` (id INT64, note STRING, updated_at TIMESTAMP)", f.ds.table("src"))).await;
    // Rows in each of the last five hours, on both edges of the hours, and in the current one.
    let mut values = Vec::new();
    for h in 0..=5i64 {
        let start = hour_ago(h);
        for (k, at) in
            [start, start + chrono::Duration::minutes(30), start + chrono::Duration::microseconds(3_599_999_999)].iter().enumerate()
        {
            values.push(format!("({}, 'h{h}', TIMESTAMP '{}')", h * 10 + k as i64, at.format("%Y-%m-%d %H:%M:%S%.6f+00")));
        }
    }
    f.ds.exec(&format!("INSERT INTO `{}` VALUES {}", f.ds.table("src"), values.join(", "))).await;
    let dest =
        |recover: bool| json!({"type": "bigquery", "table": format!("{}.hourly", f.ds.name), "mode": "hourly", "recover_missed": recover});
    let x = |settle: u64, recover: bool| {
        export(&f, "src", dest(recover), json!({"timestamp_column": "updated_at", "incremental": true, "settle": settle}))
    };
    // With four hours of settle, the last complete hour is five hours ago: the first run loads it alone.
    let config = f.load(&config_json(&f, x(4 * 3600, true))).expect("valid config");
    let r = f.run(&config, false).await;
    assert_eq!((r.outcomes[0].status, r.outcomes[0].rows), (RunStatus::Success, 3), "{:?}", r.outcomes[0].error);

    // Three hours are due now that settle is one hour: loaded in order, each recorded.
    let config = f.load(&config_json(&f, x(3600, true))).expect("valid config");
    let r = f.run(&config, false).await;
    assert_eq!((r.outcomes[0].status, r.outcomes[0].rows), (RunStatus::Success, 9), "{:?}", r.outcomes[0].error);
    let hours = f
        .ds
        .rows(&format!("SELECT import_hour, COUNT(*), MIN(note) FROM `{}` GROUP BY import_hour ORDER BY import_hour", f.ds.table("hourly")))
        .await;
    let hours: Vec<(String, String)> = hours.iter().map(|r| (text(&r[1]).unwrap(), text(&r[2]).unwrap())).collect();
    let want: Vec<(String, String)> = [5, 4, 3, 2].iter().map(|h| ("3".to_owned(), format!("h{h}"))).collect();
    assert_eq!(hours, want, "each loaded hour holds exactly its own rows");
    let success = f.column("last_exported_value", Some("SUCCESS")).await;
    let ends: Vec<String> = [5, 4, 3, 2]
        .iter()
        .map(|h| (hour_ago(h - 1) - chrono::Duration::microseconds(1)).format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .collect();
    assert_eq!(success.into_iter().flatten().collect::<Vec<_>>(), ends, "one SUCCESS per hour, oldest first");

    // Nothing more is complete: an EMPTY run. Then a full reload of the last hour replaces it.
    assert_eq!(f.run(&config, false).await.outcomes[0].status, RunStatus::Empty);
    f.ds.exec(&format!(
        "INSERT INTO `{}` VALUES (99, 'late', TIMESTAMP '{}')",
        f.ds.table("src"),
        (hour_ago(2) + chrono::Duration::minutes(1)).format("%Y-%m-%d %H:%M:%S+00")
    ))
    .await;
    let config = f.load(&config_json(&f, x(3600, false))).expect("valid config");
    let r = f.run(&config, true).await;
    assert_eq!((r.outcomes[0].status, r.outcomes[0].rows), (RunStatus::Success, 4), "{:?}", r.outcomes[0].error);
    assert_eq!(count(&f, "hourly").await, 13, "the reloaded hour replaced its 3 rows with 4");
    assert!(tables_like(&f, "hourly__ferry_").await.is_empty(), "a staging table was left behind");
}
