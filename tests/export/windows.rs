//! Windows against the BigQuery emulator and sshd: `settle` for late rows, DATE complete days,
//! DATETIME in a time zone, INT64 with lookback, and rows whose cursor is NULL.

use ferry_core::config::{Config, Tz};
use ferry_core::run::RunReport;
use ferry_core::RunStatus;
use serde_json::{json, Value};

use crate::common::{ids, text, Fixture};

/// Runs `f`'s export once as run `n`, with `extra` settings; its file is `<export>_r<n>.csv`.
async fn run(f: &Fixture, table: &str, extra: Value, n: u32, full: bool) -> RunReport {
    let mut settings = json!({"destination_filename": format!("{{name}}_r{n}.csv")});
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        settings[k] = v;
    }
    let config: Config = f.config(table, settings);
    f.run(&config, full).await
}

/// Ids in run `n`'s file, sorted (empty when it wrote none).
fn delivered(f: &Fixture, n: u32) -> Vec<i64> {
    let name = format!("{}_r{n}.csv", f.export);
    if !f.dir.names().contains(&name) {
        return Vec::new();
    }
    let bytes = f.dir.read(&name);
    let mut r = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes.as_slice());
    let mut got: Vec<i64> = r.records().map(|rec| rec.expect("CSV")[0].parse().expect("id")).collect();
    got.sort_unstable();
    got
}

fn all_delivered(f: &Fixture) -> Vec<i64> {
    let mut got = ids(&f.delivered_rows());
    got.sort_unstable();
    got
}

fn ok(r: &RunReport) -> RunStatus {
    assert!(r.outcomes[0].error.is_none(), "{:?}", r.outcomes[0].error);
    r.outcomes[0].status
}

/// `(status, null_cursor_rows)` of every metadata row of the export, in order.
async fn null_counts(f: &Fixture) -> Vec<(String, Option<u64>)> {
    let rows =
        f.ds.rows(&format!(
            "SELECT export_status, null_cursor_rows FROM `{}` WHERE export_name = '{}' ORDER BY completed_at, export_status",
            f.ds.table("export_metadata"),
            f.export
        ))
        .await;
    rows.iter().map(|r| (text(&r[0]).unwrap_or_default(), text(&r[1]).and_then(|v| v.parse().ok()))).collect()
}

crate::both_read_paths!(settle_late_row_is_delivered_by_the_next_run_once);
/// A row inserted after a run, with a cursor older than the newest row that run saw but newer
/// than its `hi` (server clock − settle), is delivered by the next run, and no row twice.
async fn settle_late_row_is_delivered_by_the_next_run_once(read: &'static str) {
    const SETTLE: i64 = 60;
    let f = Fixture::on("settle", read).await;
    let t = f.ds.table("orders");
    f.ds.exec(&format!("CREATE TABLE `{t}` (id INT64, note STRING, updated_at TIMESTAMP)")).await;
    let recent = chrono::Utc::now() - chrono::TimeDelta::seconds(5);
    let literal = |d: chrono::DateTime<chrono::Utc>| d.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string();
    f.ds.exec(&format!(
        "INSERT INTO `{t}` (id, note, updated_at) VALUES (1, 'old', TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 1 HOUR)), \
         (2, 'recent', TIMESTAMP '{}')",
        literal(recent)
    ))
    .await;
    let settle = json!({"settle": SETTLE});
    let r1 = run(&f, "orders", settle.clone(), 1, false).await;
    assert_eq!(ok(&r1), RunStatus::Success);
    assert_eq!(delivered(&f, 1), [1], "row 2 is younger than settle");
    let hi1 = f.watermark().await.expect("a watermark");

    // Committed after run 1, one second after its hi: older than row 2, which run 1 saw.
    f.ds.exec(&format!("INSERT INTO `{t}` (id, note, updated_at) VALUES (3, 'late', TIMESTAMP_ADD(TIMESTAMP '{hi1}', INTERVAL 1 SECOND))"))
        .await;
    // The next run, once row 2 has settled.
    let settled = recent + chrono::TimeDelta::seconds(SETTLE + 1);
    if let Ok(wait) = (settled - chrono::Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
    let r2 = run(&f, "orders", settle, 2, false).await;
    assert_eq!(ok(&r2), RunStatus::Success);
    assert_eq!(delivered(&f, 2), [2, 3]);
    assert_eq!(all_delivered(&f), [1, 2, 3], "each row once");
    let statuses: Vec<String> = f.metadata().await.into_iter().map(|m| m.0).collect();
    assert_eq!(statuses, ["PENDING", "SUCCESS", "PENDING", "SUCCESS"]);
}

crate::both_read_paths!(date_cursor_delivers_complete_days);
/// A DATE cursor delivers complete days only (by the server's clock, in UTC): today's rows
/// wait for tomorrow, however many runs happen today; `partial_days` asks for today too.
async fn date_cursor_delivers_complete_days(read: &'static str) {
    let f = Fixture::on("dates", read).await;
    let t = f.ds.table("orders");
    f.ds.exec(&format!("CREATE TABLE `{t}` (id INT64, note STRING, updated_at DATE)")).await;
    f.ds.exec(&format!(
        "INSERT INTO `{t}` (id, note, updated_at) VALUES (1, 'a', DATE_SUB(CURRENT_DATE(), INTERVAL 2 DAY)), \
         (2, 'b', DATE_SUB(CURRENT_DATE(), INTERVAL 1 DAY)), (3, 'c', CURRENT_DATE())"
    ))
    .await;
    let today = chrono::Utc::now().date_naive();
    let s = json!({"settle": 0});
    let r1 = run(&f, "orders", s.clone(), 1, false).await;
    assert_eq!(ok(&r1), RunStatus::Success);
    assert_eq!(delivered(&f, 1), [1, 2]);
    assert_eq!(f.watermark().await, Some(today.pred_opt().unwrap().format("%Y-%m-%d").to_string()));

    // More of today arrives: still not complete.
    f.ds.exec(&format!("INSERT INTO `{t}` (id, note, updated_at) VALUES (4, 'd', CURRENT_DATE())")).await;
    assert_eq!(ok(&run(&f, "orders", s, 2, false).await), RunStatus::Empty);

    let r3 = run(&f, "orders", json!({"settle": 0, "partial_days": true}), 3, false).await;
    assert_eq!(ok(&r3), RunStatus::Success);
    assert_eq!(delivered(&f, 3), [3, 4]);
    assert_eq!(all_delivered(&f), [1, 2, 3, 4]);
}

crate::both_read_paths!(datetime_cursor_in_its_time_zone);
/// A DATETIME cursor is compared in its `cursor_time_zone`: wall-clock values of a zone 14
/// hours ahead of UTC are delivered once settled there, and not before.
async fn datetime_cursor_in_its_time_zone(read: &'static str) {
    let f = Fixture::on("datetime", read).await;
    let t = f.ds.table("orders");
    f.ds.exec(&format!("CREATE TABLE `{t}` (id INT64, note STRING, updated_at DATETIME)")).await;
    let zone: Tz = "Pacific/Kiritimati".parse().unwrap();
    let local = chrono::Utc::now().with_timezone(&zone).naive_local();
    let fmt = |d: chrono::NaiveDateTime| d.format("%Y-%m-%d %H:%M:%S%.6f").to_string();
    f.ds.exec(&format!(
        "INSERT INTO `{t}` (id, note, updated_at) VALUES (1, 'an hour ago there', DATETIME '{}'), (2, 'now there', DATETIME '{}')",
        fmt(local - chrono::TimeDelta::hours(1)),
        fmt(local)
    ))
    .await;
    // Read as UTC (the default), both rows lie hours in the future: nothing is settled.
    assert_eq!(ok(&run(&f, "orders", json!({}), 1, false).await), RunStatus::Empty);
    let r = run(&f, "orders", json!({"cursor_time_zone": "Pacific/Kiritimati"}), 2, false).await;
    assert_eq!(ok(&r), RunStatus::Success);
    assert_eq!(delivered(&f, 2), [1], "row 2 is younger than the default settle of 300 s there");
    let hi = r.outcomes[0].window.hi.as_ref().unwrap().canonical();
    let canonical = |d: chrono::NaiveDateTime| d.format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
    assert!(hi > canonical(local - chrono::TimeDelta::hours(1)) && hi < canonical(local), "{hi}");
}

crate::both_read_paths!(int64_cursor_with_lookback_in_units);
/// An INT64 cursor's `hi` is MAX (settle does not apply); a late row behind it is delivered
/// only through lookback, counted in units, even when no newer row arrived.
async fn int64_cursor_with_lookback_in_units(read: &'static str) {
    let f = Fixture::on("int64", read).await;
    let t = f.ds.table("orders");
    f.ds.exec(&format!("CREATE TABLE `{t}` (id INT64, note STRING, updated_at INT64)")).await;
    f.ds.exec(&format!("INSERT INTO `{t}` (id, note, updated_at) VALUES (1, 'a', 10), (2, 'b', 20), (3, 'c', 30)")).await;
    let lb = json!({"lookback": 15});
    assert_eq!(ok(&run(&f, "orders", lb.clone(), 1, false).await), RunStatus::Success);
    assert_eq!(delivered(&f, 1), [1, 2, 3]);
    assert_eq!(f.watermark().await.as_deref(), Some("30"));

    f.ds.exec(&format!("INSERT INTO `{t}` (id, note, updated_at) VALUES (4, 'late', 25)")).await;
    let r = run(&f, "orders", lb, 2, false).await;
    assert_eq!(ok(&r), RunStatus::Success);
    assert_eq!(r.outcomes[0].window.lo.as_ref().unwrap().canonical(), "15");
    assert_eq!(delivered(&f, 2), [2, 3, 4], "the late row, and the overlap (15, 30] again");
    assert_eq!(f.watermark().await.as_deref(), Some("30"));
}

/// `orders` with two dated rows and two whose cursor is NULL.
async fn with_nulls(f: &Fixture) {
    let t = f.ds.table("orders");
    f.ds.exec(&format!("CREATE TABLE `{t}` (id INT64, note STRING, updated_at TIMESTAMP)")).await;
    f.ds.exec(&format!(
        "INSERT INTO `{t}` (id, note, updated_at) VALUES (1, 'a', TIMESTAMP '2026-01-01 00:00:00+00'), (2, 'null', NULL), \
         (3, 'null', NULL), (4, 'b', TIMESTAMP '2026-01-02 00:00:00+00')"
    ))
    .await;
}

crate::both_read_paths!(null_cursor_rows_are_counted_in_the_metadata_row);
/// Incremental runs leave NULL-cursor rows out, count them every run, and record the count in
/// the metadata row.
async fn null_cursor_rows_are_counted_in_the_metadata_row(read: &'static str) {
    let f = Fixture::on("nulls", read).await;
    with_nulls(&f).await;
    let r1 = run(&f, "orders", json!({}), 1, false).await;
    assert_eq!(ok(&r1), RunStatus::Success);
    assert_eq!(r1.outcomes[0].null_cursor_rows, Some(2));
    assert_eq!(delivered(&f, 1), [1, 4]);
    assert_eq!(ok(&run(&f, "orders", json!({}), 2, false).await), RunStatus::Empty);
    assert_eq!(null_counts(&f).await, [("PENDING".to_owned(), Some(2)), ("SUCCESS".to_owned(), Some(2)), ("EMPTY".to_owned(), Some(2))]);
}

crate::both_read_paths!(null_cursor_fail_writes_nothing);
/// `null_cursor: fail` fails the run before anything is written, naming the column and count.
async fn null_cursor_fail_writes_nothing(read: &'static str) {
    let f = Fixture::on("nullfail", read).await;
    with_nulls(&f).await;
    let r = run(&f, "orders", json!({"null_cursor": "fail"}), 1, false).await;
    assert_eq!(r.outcomes[0].status, RunStatus::Failed);
    let err = r.outcomes[0].error.as_deref().unwrap();
    assert!(err.contains("2 rows of the source have a NULL timestamp_column updated_at"), "{err}");
    assert!(f.dir.names().is_empty(), "no file, not even a temporary one: {:?}", f.dir.names());
    assert_eq!(f.watermark().await, None);
    assert_eq!(null_counts(&f).await, [("FAILED".to_owned(), Some(2))]);
}

crate::both_read_paths!(full_and_non_incremental_exports_deliver_null_cursor_rows);
/// A full export delivers the NULL-cursor rows (and moves the watermark); so does a
/// non-incremental export that names a timestamp_column, every time.
async fn full_and_non_incremental_exports_deliver_null_cursor_rows(read: &'static str) {
    let f = Fixture::on("nullfull", read).await;
    with_nulls(&f).await;
    let r = run(&f, "orders", json!({}), 1, true).await;
    assert_eq!(ok(&r), RunStatus::Success);
    assert_eq!(delivered(&f, 1), [1, 2, 3, 4]);
    assert_eq!(f.watermark().await.as_deref(), Some("2026-01-02T00:00:00.000000Z"));
    assert_eq!(ok(&run(&f, "orders", json!({}), 2, false).await), RunStatus::Empty, "the next incremental run sends none again");

    for n in [3, 4] {
        let r = run(&f, "orders", json!({"incremental": false}), n, false).await;
        assert_eq!(ok(&r), RunStatus::Success);
        assert_eq!(delivered(&f, n), [1, 2, 3, 4]);
    }
}

crate::both_read_paths!(an_existing_metadata_table_gains_the_null_cursor_rows_column);
/// A metadata table made by the previous version (no `null_cursor_rows` column) gains the
/// column on the next run, which records its count there.
async fn an_existing_metadata_table_gains_the_null_cursor_rows_column(read: &'static str) {
    let f = Fixture::on("nullmigrate", read).await;
    with_nulls(&f).await;
    f.ds.exec(&format!(
        "CREATE TABLE `{}` (export_name STRING NOT NULL, source_table STRING NOT NULL, last_export_timestamp TIMESTAMP, \
         last_exported_value STRING, rows_exported INT64, file_name STRING, export_status STRING, started_at TIMESTAMP, \
         completed_at TIMESTAMP, error_message STRING, run_id STRING, cursor_type STRING, window_lo STRING, bytes INT64, \
         sha256 STRING, message_id STRING, files STRING)",
        f.ds.table("export_metadata")
    ))
    .await;
    assert_eq!(ok(&run(&f, "orders", json!({}), 1, false).await), RunStatus::Success);
    assert_eq!(null_counts(&f).await, [("PENDING".to_owned(), Some(2)), ("SUCCESS".to_owned(), Some(2))]);
}

crate::both_read_paths!(null_cursor_rows_are_delivered_by_their_arrival_column);
/// `null_cursor: {"arrival_column": …}` delivers each NULL-cursor row once, with the run whose
/// window of the arrival column holds its value; a row with no arrival value is never sent.
async fn null_cursor_rows_are_delivered_by_their_arrival_column(read: &'static str) {
    let f = Fixture::on("arrival", read).await;
    let t = f.ds.table("orders");
    f.ds.exec(&format!("CREATE TABLE `{t}` (id INT64, note STRING, updated_at TIMESTAMP, loaded_at TIMESTAMP)")).await;
    f.ds.exec(&format!(
        "INSERT INTO `{t}` (id, note, updated_at, loaded_at) VALUES \
         (1, 'a', TIMESTAMP '2026-01-01 00:00:00+00', TIMESTAMP '2026-01-01 00:00:00+00'), \
         (2, 'null', NULL, TIMESTAMP '2026-01-05 00:00:00+00'), (3, 'never', NULL, NULL)"
    ))
    .await;
    let settings = json!({"settle": 0, "null_cursor": {"arrival_column": "loaded_at"}});
    let r1 = run(&f, "orders", settings.clone(), 1, false).await;
    assert_eq!(ok(&r1), RunStatus::Success);
    assert_eq!(delivered(&f, 1), [1, 2]);
    assert_eq!(r1.outcomes[0].null_cursor_rows, Some(2));

    // A NULL-cursor row that arrives after run 1: the next run sends it, and nothing else.
    f.ds.exec(&format!("INSERT INTO `{t}` (id, note, updated_at, loaded_at) VALUES (4, 'late', NULL, CURRENT_TIMESTAMP())")).await;
    assert_eq!(ok(&run(&f, "orders", settings.clone(), 2, false).await), RunStatus::Success);
    assert_eq!(delivered(&f, 2), [4]);
    assert_eq!(ok(&run(&f, "orders", settings, 3, false).await), RunStatus::Empty);
    assert_eq!(all_delivered(&f), [1, 2, 4], "each once; row 3 has no arrival time");

    let marks: Vec<String> =
        f.column("null_arrival_hi", Some("SUCCESS")).await.into_iter().map(|m| m.expect("a mark on every SUCCESS")).collect();
    assert_eq!(marks.len(), 2);
    assert!(marks[0] < marks[1], "the mark moves forward: {marks:?}");
}
