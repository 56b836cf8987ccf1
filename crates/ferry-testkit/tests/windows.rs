//! The planning rules of the README's "Windows" section, on the in-memory backends with a
//! source clock the tests set: `settle` for TIMESTAMP and DATETIME, complete days for DATE,
//! INT64, `lookback` in the cursor's unit, rows whose cursor is NULL, and the date of a run.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use ferry_core::config::{Compression, Config, FileSettings, NullCursor, OnExisting, Shape, Split, Tz};
use ferry_core::cursor::{CursorType, CursorValue};
use ferry_core::run::{RunOptions, RunReport, Runner};
use ferry_core::template::FileTemplate;
use ferry_core::{NullRows, RunStatus, StateStore};
use ferry_testkit::memory::{memory_config, MemorySink, MemorySource, MemoryStateStore, MemoryTable, MemoryWiring};

const EXPORT: &str = "orders";

/// One export on an in-memory source whose clock the test sets, with a file name per run.
struct Bench {
    source: MemorySource,
    sink: MemorySink,
    state: MemoryStateStore,
    config: Config,
    runs: u32,
}

impl Bench {
    fn new(ty: CursorType) -> Self {
        let mut config = memory_config(EXPORT, Shape::Table(ferry_core::config::TableMode::Append));
        config.exports[0].settle = 300;
        Self { source: MemorySource::typed(100, ty), sink: MemorySink::new(), state: MemoryStateStore::new(), config, runs: 0 }
    }

    fn export(&mut self) -> &mut ferry_core::config::ExportSpec {
        &mut self.config.exports[0]
    }

    fn at(&self, t: DateTime<Utc>) -> &Self {
        self.source.clock().set(t);
        self
    }

    /// Runs the export once (`full`: ignoring the watermark); each run writes `orders_<n>.csv`.
    async fn run(&mut self, full: bool) -> RunReport {
        self.runs += 1;
        let mut config = self.config.clone();
        config.exports[0].destination.shape = Shape::File(FileSettings {
            template: FileTemplate::parse(&format!("{{name}}_{}.csv", self.runs)).expect("template"),
            compression: Compression::None,
            delimiter: b',',
            header: true,
            split: Split::default(),
            on_existing: OnExisting::Fail,
            allow_repeating_names: false,
            object_names: false,
            encoding_fields: Vec::new(),
        });
        let wiring = MemoryWiring { source: self.source.clone(), sink: self.sink.clone(), table: MemoryTable::new() };
        let runner = Runner { config: &config, wiring: &wiring, state: &self.state, notifiers: Vec::new(), progress: None };
        let mut opts = RunOptions::new();
        opts.full = full;
        runner.run(&opts).await
    }

    /// Ids delivered by run `n` (1-based), in the order written.
    fn delivered(&self, n: u32) -> Vec<i64> {
        let Some(bytes) = self.sink.files().get(&format!("{EXPORT}_{n}.csv")).cloned() else { return Vec::new() };
        String::from_utf8(bytes)
            .expect("UTF-8")
            .split("\r\n")
            .skip(1)
            .filter(|l| !l.is_empty())
            .map(|l| l.split(',').next().unwrap().parse().unwrap())
            .collect()
    }

    /// Every delivered id, sorted.
    fn all_delivered(&self) -> Vec<i64> {
        let mut all: Vec<i64> = (1..=self.runs).flat_map(|n| self.delivered(n)).collect();
        all.sort_unstable();
        all
    }

    async fn watermark(&self) -> Option<String> {
        self.state.watermark(EXPORT).await.expect("watermark").map(|w| w.1)
    }
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("an RFC 3339 time").with_timezone(&Utc)
}

fn ts(s: &str) -> Option<CursorValue> {
    Some(CursorValue::Timestamp(utc(s).timestamp_micros()))
}

fn dt(s: &str) -> Option<CursorValue> {
    Some(CursorValue::parse(CursorType::Datetime, s).expect("a DATETIME"))
}

fn day(s: &str) -> Option<CursorValue> {
    Some(CursorValue::parse(CursorType::Date, s).expect("a DATE"))
}

fn hi(r: &RunReport) -> Option<String> {
    r.outcomes[0].window.hi.as_ref().map(CursorValue::canonical)
}

fn status(r: &RunReport) -> RunStatus {
    assert!(r.outcomes[0].error.is_none(), "{:?}", r.outcomes[0].error);
    r.outcomes[0].status
}

#[tokio::test]
async fn timestamp_hi_is_the_source_clock_minus_settle_and_a_late_row_comes_with_the_next_run() {
    let mut b = Bench::new(CursorType::Timestamp);
    b.at(utc("2026-05-01T12:00:00Z"));
    b.source.push_values([(1, ts("2026-05-01T11:40:00Z")), (2, ts("2026-05-01T11:58:00Z"))]);
    let r1 = b.run(false).await;
    assert_eq!(status(&r1), RunStatus::Success);
    assert_eq!(hi(&r1).as_deref(), Some("2026-05-01T11:55:00.000000Z"), "min(MAX, now − 300 s)");
    assert_eq!(b.delivered(1), [1], "row 2 is younger than settle: it waits");
    assert_eq!(b.watermark().await.as_deref(), Some("2026-05-01T11:55:00.000000Z"));

    // Committed after run 1 with a cursor older than run 1's clock, but inside settle.
    b.source.push_values([(3, ts("2026-05-01T11:57:00Z"))]);
    b.at(utc("2026-05-01T12:10:00Z"));
    let r2 = b.run(false).await;
    assert_eq!(hi(&r2).as_deref(), Some("2026-05-01T11:58:00.000000Z"), "MAX, now older than now − settle");
    assert_eq!(b.delivered(2), [2, 3]);
    assert_eq!(b.all_delivered(), [1, 2, 3], "each row once");
}

#[tokio::test]
async fn settle_zero_takes_max_and_int64_ignores_settle() {
    let mut b = Bench::new(CursorType::Timestamp);
    b.export().settle = 0;
    b.at(utc("2026-05-01T12:00:00Z"));
    b.source.push_values([(1, ts("2026-05-01T11:59:59.999999Z"))]);
    assert_eq!(hi(&b.run(false).await).as_deref(), Some("2026-05-01T11:59:59.999999Z"));

    let mut b = Bench::new(CursorType::Int64);
    b.export().settle = 86_400;
    b.source.push([(1, 7), (2, 9)]);
    let r = b.run(false).await;
    assert_eq!(hi(&r).as_deref(), Some("9"), "INT64: MAX, whatever settle says");
    assert_eq!(b.delivered(1), [1, 2]);
}

#[tokio::test]
async fn a_window_cut_by_settle_that_holds_no_row_is_empty() {
    let mut b = Bench::new(CursorType::Timestamp);
    b.at(utc("2026-05-01T12:00:00Z"));
    b.source.push_values([(1, ts("2026-05-01T11:00:00Z")), (2, ts("2026-05-01T11:59:00Z"))]);
    b.run(false).await;
    assert_eq!(b.delivered(1), [1]);
    // 100 s later: (11:55, 11:56:40] holds no row; no file, and the watermark stays.
    b.at(utc("2026-05-01T12:01:40Z"));
    let r = b.run(false).await;
    assert_eq!(status(&r), RunStatus::Empty);
    assert!(b.delivered(2).is_empty());
    assert_eq!(b.watermark().await.as_deref(), Some("2026-05-01T11:55:00.000000Z"));
}

#[tokio::test]
async fn a_watermark_ahead_of_hi_never_moves_back() {
    // Recorded without settle (an older ferry, or settle raised since): hi is behind it.
    let mut b = Bench::new(CursorType::Timestamp);
    b.export().settle = 0;
    b.export().lookback = 3600;
    b.at(utc("2026-05-01T12:00:00Z"));
    b.source.push_values([(1, ts("2026-05-01T11:59:00Z"))]);
    b.run(false).await;
    b.export().settle = 300;
    let r = b.run(false).await;
    assert_eq!(status(&r), RunStatus::Empty, "no lookback re-send behind a hi that is behind the watermark");
    assert_eq!(b.watermark().await.as_deref(), Some("2026-05-01T11:59:00.000000Z"));
}

#[tokio::test]
async fn datetime_is_read_in_the_cursor_time_zone() {
    // 12:00 UTC is 14:00 in Berlin (summer time).
    let mut b = Bench::new(CursorType::Datetime);
    b.export().cursor_zone = "Europe/Berlin".parse().unwrap();
    b.at(utc("2026-06-01T12:00:00Z"));
    b.source.push_values([(1, dt("2026-06-01T13:00:00")), (2, dt("2026-06-01T13:58:00"))]);
    let r = b.run(false).await;
    assert_eq!(hi(&r).as_deref(), Some("2026-06-01T13:55:00.000000"));
    assert_eq!(b.delivered(1), [1]);

    // The same rows read as UTC are all in the future: nothing is settled yet.
    let mut b = Bench::new(CursorType::Datetime);
    b.at(utc("2026-06-01T12:00:00Z"));
    b.source.push_values([(1, dt("2026-06-01T13:00:00"))]);
    let r = b.run(false).await;
    assert_eq!(status(&r), RunStatus::Empty);
    assert_eq!(hi(&r).as_deref(), Some("2026-06-01T11:55:00.000000"));
}

#[tokio::test]
async fn date_cursors_deliver_complete_days_only() {
    let mut b = Bench::new(CursorType::Date);
    b.at(utc("2026-06-02T10:00:00Z"));
    b.source.push_values([(1, day("2026-06-01")), (2, day("2026-06-02"))]);
    let r1 = b.run(false).await;
    assert_eq!(hi(&r1).as_deref(), Some("2026-06-01"), "today is not complete");
    assert_eq!(b.delivered(1), [1]);

    // The rest of the day arrives; just after midnight, but within settle, the day still waits.
    b.source.push_values([(3, day("2026-06-02"))]);
    b.at(utc("2026-06-03T00:02:00Z"));
    assert_eq!(status(&b.run(false).await), RunStatus::Empty);
    b.at(utc("2026-06-03T00:06:00Z"));
    let r3 = b.run(false).await;
    assert_eq!(hi(&r3).as_deref(), Some("2026-06-02"));
    assert_eq!(b.delivered(3), [2, 3]);
    assert_eq!(b.all_delivered(), [1, 2, 3]);
}

#[tokio::test]
async fn date_days_end_in_the_cursor_time_zone_and_partial_days_is_explicit() {
    // 2026-06-02 22:30 UTC is 2026-06-03 10:30 in Auckland: there 06-02 is complete.
    let mut b = Bench::new(CursorType::Date);
    b.export().cursor_zone = "Pacific/Auckland".parse().unwrap();
    b.at(utc("2026-06-02T22:30:00Z"));
    b.source.push_values([(1, day("2026-06-02")), (2, day("2026-06-03"))]);
    assert_eq!(hi(&b.run(false).await).as_deref(), Some("2026-06-02"));

    let mut b = Bench::new(CursorType::Date);
    b.export().partial_days = true;
    b.at(utc("2026-06-02T10:00:00Z"));
    b.source.push_values([(1, day("2026-06-01")), (2, day("2026-06-02"))]);
    let r = b.run(false).await;
    assert_eq!(hi(&r).as_deref(), Some("2026-06-02"), "partial_days: today too");
    assert_eq!(b.delivered(1), [1, 2]);
}

#[tokio::test]
async fn date_lookback_counts_days() {
    let mut b = Bench::new(CursorType::Date);
    b.export().lookback = 3;
    b.at(utc("2026-06-11T10:00:00Z"));
    b.source.push_values([(1, day("2026-06-05")), (2, day("2026-06-10"))]);
    b.run(false).await;
    assert_eq!(b.watermark().await.as_deref(), Some("2026-06-10"));
    b.source.push_values([(3, day("2026-06-08"))]);
    let r = b.run(false).await;
    assert_eq!(r.outcomes[0].window.lo.as_ref().map(CursorValue::canonical).as_deref(), Some("2026-06-07"), "3 days, not 3 s");
    assert_eq!(b.delivered(2), [2, 3], "the late row and the overlap");

    b.export().lookback = 400;
    let r = b.run(false).await;
    let err = r.outcomes[0].error.as_deref().unwrap_or_default();
    assert!(err.contains("lookback is 400") && err.contains("at most 366"), "{err}");
}

#[tokio::test]
async fn lookback_delivers_when_no_newer_row_arrived() {
    let mut b = Bench::new(CursorType::Int64);
    b.export().lookback = 5;
    b.source.push((1..=10).map(|i| (i, i)));
    b.run(false).await;
    assert_eq!(b.delivered(1), (1..=10).collect::<Vec<_>>());
    // A late row behind the maximum; nothing newer.
    b.source.push([(11, 8)]);
    let r = b.run(false).await;
    assert_eq!(status(&r), RunStatus::Success);
    let mut got = b.delivered(2);
    got.sort_unstable();
    assert_eq!(got, [6, 7, 8, 9, 10, 11], "the late row, and the overlap (5, 10] again");

    // Without lookback the same late row is never delivered: the INT64 rule.
    let mut b = Bench::new(CursorType::Int64);
    b.source.push((1..=10).map(|i| (i, i)));
    b.run(false).await;
    b.source.push([(11, 8)]);
    assert_eq!(status(&b.run(false).await), RunStatus::Empty);
}

#[tokio::test]
async fn null_cursors_are_counted_every_incremental_run_and_recorded() {
    let mut b = Bench::new(CursorType::Int64);
    b.source.push([(1, 1), (2, 2)]);
    b.source.push_nulls([3, 4]);
    let r1 = b.run(false).await;
    assert_eq!(status(&r1), RunStatus::Success);
    assert_eq!(b.delivered(1), [1, 2]);
    assert_eq!(r1.outcomes[0].null_cursor_rows, Some(2));
    assert!(r1.outcomes[0].null_cursor_note().unwrap().contains("2 rows have a NULL cursor and are not delivered"));
    let r2 = b.run(false).await;
    assert_eq!(status(&r2), RunStatus::Empty);
    assert_eq!(r2.outcomes[0].null_cursor_rows, Some(2), "counted on a run with nothing new too");
    let recorded: Vec<(RunStatus, Option<u64>)> = b.state.records().iter().map(|r| (r.status, r.null_cursor_rows)).collect();
    assert_eq!(recorded, [(RunStatus::Pending, Some(2)), (RunStatus::Success, Some(2)), (RunStatus::Empty, Some(2))]);
}

#[tokio::test]
async fn null_cursor_fail_stops_the_run_before_anything_is_written() {
    let mut b = Bench::new(CursorType::Int64);
    b.export().null_cursor = NullCursor::Fail;
    b.source.push([(1, 1)]);
    b.source.push_nulls([2]);
    let r = b.run(false).await;
    let o = &r.outcomes[0];
    assert_eq!(o.status, RunStatus::Failed);
    let err = o.error.as_deref().unwrap();
    assert!(err.contains("1 row of the source have a NULL timestamp_column seq") && err.contains("null_cursor: fail"), "{err}");
    assert!(b.sink.files().is_empty() && b.sink.temp_files().is_empty(), "nothing written");
    assert_eq!(b.watermark().await, None);
    let last = b.state.records().pop().unwrap();
    assert_eq!((last.status, last.null_cursor_rows), (RunStatus::Failed, Some(1)));

    // A full export delivers them, so it is not stopped.
    let full = b.run(true).await;
    assert_eq!(status(&full), RunStatus::Success);
    let mut got = b.delivered(2);
    got.sort_unstable();
    assert_eq!(got, [1, 2]);
}

#[tokio::test]
async fn full_and_non_incremental_exports_deliver_null_cursor_rows() {
    let mut b = Bench::new(CursorType::Timestamp);
    b.at(utc("2026-05-01T12:00:00Z"));
    b.source.push_values([(1, ts("2026-05-01T10:00:00Z")), (2, ts("2026-05-01T11:59:00Z"))]);
    b.source.push_nulls([3]);
    let full = b.run(true).await;
    assert_eq!(full.outcomes[0].window.nulls, NullRows::Included);
    let mut got = b.delivered(1);
    got.sort_unstable();
    assert_eq!(got, [1, 3], "the NULL row too; row 2 waits for settle even in a full export");
    assert_eq!(b.watermark().await.as_deref(), Some("2026-05-01T11:55:00.000000Z"));
    b.at(utc("2026-05-01T12:10:00Z"));
    b.run(false).await;
    assert_eq!(b.all_delivered(), [1, 2, 3], "the incremental run after it sends neither row again");

    // Non-incremental: everything, NULL rows included, every run; no settle.
    let mut b = Bench::new(CursorType::Timestamp);
    b.export().incremental = false;
    b.at(utc("2026-05-01T12:00:00Z"));
    b.source.push_values([(1, ts("2026-05-01T11:59:00Z"))]);
    b.source.push_nulls([2]);
    for n in 1..=2 {
        let r = b.run(false).await;
        assert_eq!(status(&r), RunStatus::Success);
        let mut got = b.delivered(n);
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
    }
    // Only NULL rows: still delivered.
    let mut b = Bench::new(CursorType::Int64);
    b.export().incremental = false;
    b.source.push_nulls([1]);
    b.run(false).await;
    assert_eq!(b.delivered(1), [1]);
}

#[tokio::test]
async fn null_cursor_rows_go_once_with_the_window_of_their_arrival() {
    let mut b = Bench::new(CursorType::Timestamp);
    b.export().null_cursor = NullCursor::ArrivalColumn("loaded_at".to_owned());
    b.at(utc("2026-05-01T12:00:00Z"));
    b.source.push_values([(1, ts("2026-05-01T11:00:00Z"))]);
    b.source.push_nulls_arrived([2], utc("2026-05-01T11:10:00Z"));
    // Arrived inside settle: waits for the next run, as a cursor value would.
    b.source.push_nulls_arrived([3], utc("2026-05-01T11:58:00Z"));
    let r1 = b.run(false).await;
    assert_eq!(status(&r1), RunStatus::Success);
    let mut got = b.delivered(1);
    got.sort_unstable();
    assert_eq!(got, [1, 2], "row 2 arrived before now − settle; row 3 not yet");
    let w = &r1.outcomes[0].window;
    assert_eq!(w.nulls, NullRows::Arrived { column: "loaded_at".to_owned(), lo: None, hi: utc("2026-05-01T11:55:00Z").timestamp_micros() });
    assert!(w.to_string().ends_with("+ NULL with loaded_at in (-∞, 2026-05-01T11:55:00.000000Z]"), "{w}");
    let recorded = b.state.records().pop().unwrap();
    assert_eq!(recorded.null_arrival_hi.as_deref(), Some("2026-05-01T11:55:00.000000Z"));

    // No new cursor value, but NULL rows arrived: the run delivers them, and only them.
    b.at(utc("2026-05-01T12:30:00Z"));
    b.source.push_nulls_arrived([4], utc("2026-05-01T12:20:00Z"));
    assert_eq!(status(&b.run(false).await), RunStatus::Success);
    let mut got = b.delivered(2);
    got.sort_unstable();
    assert_eq!(got, [3, 4]);
    // Nothing new anywhere: EMPTY, and the arrival mark does not move back.
    let r3 = b.run(false).await;
    assert_eq!(status(&r3), RunStatus::Empty);
    assert_eq!(b.all_delivered(), [1, 2, 3, 4], "each row once");
    assert_eq!(b.state.null_arrival_mark(EXPORT).await.unwrap().as_deref(), Some("2026-05-01T12:25:00.000000Z"));

    // A full export reads every NULL row that has arrived, and the next run goes on from there.
    b.source.push_nulls_arrived([5], utc("2026-05-01T12:24:00Z"));
    b.at(utc("2026-05-01T12:40:00Z"));
    let full = b.run(true).await;
    let mut got = b.delivered(4);
    got.sort_unstable();
    assert_eq!(got, [1, 2, 3, 4, 5], "{:?}", full.outcomes[0].window);
    b.source.push_nulls_arrived([6], utc("2026-05-01T12:36:00Z"));
    b.at(utc("2026-05-01T12:50:00Z"));
    b.run(false).await;
    assert_eq!(b.delivered(5), [6]);
}

#[tokio::test]
async fn an_incremental_export_of_only_null_cursors_is_empty_and_says_so() {
    let mut b = Bench::new(CursorType::Timestamp);
    b.source.push_nulls([1, 2, 3]);
    let r = b.run(false).await;
    assert_eq!(status(&r), RunStatus::Empty);
    assert_eq!(r.outcomes[0].null_cursor_rows, Some(3));
}

#[tokio::test]
async fn plan_shows_how_hi_was_chosen() {
    let b = Bench::new(CursorType::Timestamp);
    b.at(utc("2026-05-01T12:00:00Z"));
    b.source.push_values([(1, ts("2026-05-01T11:59:00Z"))]);
    b.source.push_nulls([2]);
    let wiring = MemoryWiring { source: b.source.clone(), sink: b.sink.clone(), table: MemoryTable::new() };
    let runner = Runner { config: &b.config, wiring: &wiring, state: &b.state, notifiers: Vec::new(), progress: None };
    let plan = runner.plan(&RunOptions::new()).await.expect("a plan").remove(0);
    let rule = plan.hi_rule.unwrap();
    assert!(rule.starts_with("source clock 2026-05-01T12:00:0") && rule.ends_with("− settle 300 s"), "{rule}");
    assert_eq!(plan.null_cursor_rows, Some(1));
    assert_eq!(plan.bounds.unwrap().max, ts("2026-05-01T11:59:00Z"));
}

#[test]
fn the_run_date_is_today_in_the_schedules_time_zone() {
    let mut config = memory_config(EXPORT, Shape::Table(ferry_core::config::TableMode::Append));
    let at = Utc.with_ymd_and_hms(2026, 6, 1, 20, 0, 0).unwrap();
    let opts = RunOptions::new();
    assert_eq!(opts.date_for(&config.exports[0], at), NaiveDate::from_ymd_opt(2026, 6, 1).unwrap());
    config.exports[0].date_zone = "Pacific/Auckland".parse::<Tz>().unwrap();
    assert_eq!(opts.date_for(&config.exports[0], at), NaiveDate::from_ymd_opt(2026, 6, 2).unwrap(), "08:00 the next day there");
    let mut given = RunOptions::new();
    given.run_date = NaiveDate::from_ymd_opt(2026, 1, 1);
    assert_eq!(given.date_for(&config.exports[0], at), NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(), "a date given wins");
}
