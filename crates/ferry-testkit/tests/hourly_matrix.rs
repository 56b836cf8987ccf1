//! Hourly loads with `delete_from_source`, on the in-memory backends: a fault (an error before
//! the effect, or after it: a lost reply) at every call of a run that loads three missed hours
//! and deletes each from the source, and the lease taken away. Later runs must converge: every
//! row in the table exactly once, in its own hour, and a row gone from the source only when the
//! table holds it.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use ferry_core::config::{HourlyLoad, Shape, TableMode};
use ferry_core::cursor::{CursorType, CursorValue};
use ferry_core::run::{RunOptions, Runner};
use ferry_testkit::faults::{Fault, Faults, Rule};
use ferry_testkit::memory::{memory_config, MemorySink, MemorySource, MemoryStateStore, MemoryTable, MemoryWiring};

const EXPORT: &str = "events";

fn at(hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, hour, minute, 0).single().expect("a time")
}

/// Rows 100·h + k for hours 9 to 12: at the hour's start, its middle and its last microsecond.
fn rows() -> Vec<(i64, Option<CursorValue>)> {
    let mut v = Vec::new();
    for h in 9..=12u32 {
        for (k, t) in
            [at(h, 0).timestamp_micros(), at(h, 30).timestamp_micros(), at(h, 0).timestamp_micros() + 3_599_999_999].into_iter().enumerate()
        {
            v.push((i64::from(h) * 100 + k as i64, Some(CursorValue::Timestamp(t))));
        }
    }
    v
}

/// Runs one case: hour 9 loaded first; then the clock moves to 13:10, the faulty run loads
/// hours 10 to 12, and later runs without faults finish. `Err` says how the promise broke.
async fn case(first: Vec<Rule>, steal: Option<Rule>) -> Result<(), String> {
    let faults = Faults::new();
    let source = MemorySource::typed(2, CursorType::Timestamp).with_faults(faults.clone());
    let table = MemoryTable::new().with_faults(faults.clone());
    let state = MemoryStateStore::new().with_faults(faults.clone());
    let wiring = MemoryWiring { source: source.clone(), sink: MemorySink::new(), table: table.clone() };
    let hourly = HourlyLoad { column: "import_hour".into(), recover_missed: true, delete_from_source: true };
    let config = memory_config(EXPORT, Shape::Table(TableMode::Hourly(hourly)));
    let runner = Runner { config: &config, wiring: &wiring, state: &state, notifiers: Vec::new(), progress: None };
    let mut opts = RunOptions::new();
    opts.lease_ttl = Duration::from_secs(60);
    source.push_values(rows());

    source.clock().set(at(10, 10));
    let r = runner.run(&opts).await;
    if !r.succeeded() {
        return Err(format!("the first hour failed: {:?}", r.outcomes[0].error));
    }
    source.clock().set(at(13, 10));
    for rule in first {
        faults.arm(rule);
    }
    if let Some(rule) = steal {
        let thief = state.clone();
        faults.arm(rule.then(move || thief.steal(EXPORT, "another run")));
    }
    let faulty = runner.run(&opts).await;
    faults.disarm();
    for _ in 0..3 {
        state.expire(EXPORT);
        let r = runner.run(&opts).await;
        if !r.succeeded() {
            return Err(format!("a run without faults failed: {:?} (the faulty run: {:?})", r.outcomes[0].error, faulty.outcomes[0].error));
        }
    }
    let hours = table.hours();
    let mut loaded: Vec<i64> = hours.values().flatten().copied().collect();
    loaded.sort_unstable();
    let all: Vec<i64> = rows().iter().map(|r| r.0).filter(|id| *id < 1300).collect();
    if loaded != all {
        let seen: BTreeSet<i64> = loaded.iter().copied().collect();
        return Err(format!(
            "{} rows doubled, lost {:?} (faulty run: {:?})",
            loaded.len() - seen.len(),
            all.iter().filter(|i| !seen.contains(i)).collect::<Vec<_>>(),
            faulty.outcomes[0].error
        ));
    }
    for (hour, ids) in &hours {
        let h: i64 = hour[11..13].parse().map_err(|_| format!("hour {hour}"))?;
        if ids.iter().any(|id| id / 100 != h) {
            return Err(format!("hour {hour} holds {ids:?}"));
        }
    }
    // Every row of a loaded hour is gone from the source: a lost reply of a delete that went
    // through is settled as loaded, and a delete that did not happen is done by a later run.
    let left = source.ids();
    if !left.is_empty() {
        return Err(format!("rows left in the source: {left:?} (faulty run: {:?})", faulty.outcomes[0].error));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_fault_of_an_hourly_load_with_deletes_converges() {
    let points: &[(&str, Option<&str>, u32)] = &[
        ("state.watermark", None, 1),
        ("table.begin", None, 1),
        ("table.begin", None, 2),
        ("table.write", None, 1),
        ("table.commit", None, 1),
        ("table.commit", None, 3),
        ("source.delete", None, 1),
        ("source.delete", None, 2),
        ("state.append", Some("PENDING"), 1),
        ("state.append", Some("PENDING"), 2),
        ("state.append", Some("SUCCESS"), 1),
        ("state.append", Some("SUCCESS"), 3),
        ("state.pending", None, 1),
        ("state.release", None, 1),
    ];
    let mut cases = Vec::new();
    for &(point, detail, nth) in points {
        for fault in [Fault::ErrorBefore, Fault::ErrorAfter] {
            let mut rule = Rule::at(point, fault).nth(nth);
            if let Some(d) = detail {
                rule = rule.when(move |s| s == d);
            }
            let label = format!("{point}{}#{nth} {fault:?}", detail.map(|d| format!("({d})")).unwrap_or_default());
            cases.push((label, tokio::spawn(case(vec![rule], None))));
        }
    }
    for &(point, detail, nth) in &[("table.write", None, 2), ("table.commit", None, 2), ("state.append", Some("PENDING"), 2)] {
        let mut rule = Rule::at(point, Fault::Proceed).nth(nth);
        if let Some(d) = detail {
            rule = rule.when(move |s: &str| s == d);
        }
        cases.push((format!("lease lost at {point}#{nth}"), tokio::spawn(case(Vec::new(), Some(rule)))));
    }
    assert_eq!(cases.len(), 31, "cases");
    let mut broken = Vec::new();
    for (label, handle) in cases {
        if let Err(why) = handle.await.expect("case") {
            broken.push((label, why));
        }
    }
    assert!(broken.is_empty(), "cases that broke the promise:\n{broken:#?}");
}

/// The two outcomes of a failed delete: nothing deleted → FAILED, and the next run loads the
/// hour again and deletes; the commit's answer lost → the load is settled as committed and
/// the hour is never loaded again from a source that may have lost its rows.
#[tokio::test]
async fn a_delete_that_may_have_happened_never_lets_the_hour_load_again() {
    let faults = Faults::new();
    let source = MemorySource::typed(2, CursorType::Timestamp).with_faults(faults.clone());
    let table = MemoryTable::new();
    let state = MemoryStateStore::new();
    let wiring = MemoryWiring { source: source.clone(), sink: MemorySink::new(), table: table.clone() };
    let hourly = HourlyLoad { column: "import_hour".into(), recover_missed: true, delete_from_source: true };
    let config = memory_config(EXPORT, Shape::Table(TableMode::Hourly(hourly)));
    let runner = Runner { config: &config, wiring: &wiring, state: &state, notifiers: Vec::new(), progress: None };
    source.push_values(rows());
    source.clock().set(at(10, 10));
    faults.arm(Rule::at("source.delete", Fault::ErrorAfter));
    let r = runner.run(&RunOptions::new()).await;
    assert!(!r.succeeded());
    let statuses: Vec<&str> = state.records().iter().map(|r| r.status.as_str()).collect();
    assert_eq!(statuses, ["PENDING"], "no FAILED record: the hour must not be loaded again");
    assert_eq!(table.hours().values().flatten().count(), 3);
    let r = runner.run(&RunOptions::new()).await;
    assert!(r.succeeded(), "{:?}", r.outcomes[0].error);
    assert_eq!(r.outcomes[0].reconciled.len(), 1);
    assert_eq!(table.hours().values().next().map(Vec::len), Some(3), "hour 9 kept its rows");
}
