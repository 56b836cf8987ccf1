//! The run skeleton's crash matrix, on the in-memory backends: a fault (an error before the
//! effect, or after it: a lost reply) at every call a run makes, the lease taken away at every
//! step, and faults while the next run finishes an interrupted one, for both destination
//! shapes, for files also with a partner that collects files as they arrive, and for a staged
//! export (its source writes files into a bucket, the run copies them). After the
//! faulty runs, later runs must converge: every source row delivered exactly once, no
//! temporary file left, the watermark at the last row. Runs follow each other within the same
//! second, so file names with `{datetime}` must not collide either.

use std::collections::BTreeSet;
use std::time::Duration;

use ferry_core::config::{Compression, FileSettings, OnExisting, Shape, Split};
use ferry_core::run::{RunOptions, Runner};
use ferry_core::template::FileTemplate;
use ferry_core::StateStore;
use ferry_testkit::faults::{Fault, Faults, Rule};
use ferry_testkit::memory::{
    memory_config, staged_config, MemorySink, MemorySource, MemoryStaging, MemoryStateStore, MemoryTable, MemoryWiring, StagedWiring,
};

const EXPORT: &str = "orders";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Table,
    /// Files of 10 rows written by the source into a bucket, copied by the run.
    Staged,
}

fn shape(kind: Kind) -> Shape {
    match kind {
        Kind::File | Kind::Staged => Shape::File(FileSettings {
            // Three files of at most 10 rows for the first 25 rows.
            template: FileTemplate::parse("{name}_{datetime}_{part}.csv").expect("template"),
            compression: Compression::None,
            delimiter: b',',
            header: true,
            split: Split { max_rows: Some(10), max_bytes: None },
            on_existing: OnExisting::Fail,
            allow_repeating_names: false,
            object_names: false,
            encoding_fields: Vec::new(),
        }),
        Kind::Table => Shape::Table(ferry_core::config::TableMode::Append),
    }
}

/// Ids in every published file, on the server or collected by the partner (first column,
/// header skipped).
fn delivered_files(sink: &MemorySink) -> Vec<i64> {
    let mut ids = Vec::new();
    for bytes in sink.files().values().chain(sink.taken().iter().map(|(_, b)| b)) {
        let text = String::from_utf8(bytes.clone()).expect("UTF-8");
        for line in text.split("\r\n").skip(1).filter(|l| !l.is_empty()) {
            ids.push(line.split(',').next().expect("id").parse().expect("an id"));
        }
    }
    ids
}

/// What one case does: faults armed for the first run, and for the run after it.
#[derive(Clone, Default)]
struct Plan {
    first: Vec<Rule>,
    second: Vec<Rule>,
    /// A partner collects every `.csv` file as soon as it is published.
    partner: bool,
}

/// Runs one case; `Err` says how the promise broke.
async fn case(kind: Kind, plan: impl FnOnce(&MemoryStateStore) -> Plan) -> Result<(), String> {
    let faults = Faults::new();
    let source = MemorySource::new(7);
    let sink = MemorySink::new().with_faults(faults.clone());
    let table = MemoryTable::new().with_faults(faults.clone());
    let state = MemoryStateStore::new().with_faults(faults.clone());
    let memory = MemoryWiring { source: source.clone(), sink: sink.clone(), table: table.clone() };
    let (config, wiring): (_, Box<dyn ferry_core::run::Wiring>) = match (kind, shape(kind)) {
        (Kind::Staged, Shape::File(file)) => (
            staged_config(EXPORT, file),
            Box::new(StagedWiring { inner: memory, staging: MemoryStaging::new().with_faults(faults.clone()), rows_per_file: 10 }),
        ),
        (_, shape) => (memory_config(EXPORT, shape), Box::new(memory)),
    };
    let runner = Runner { config: &config, wiring: wiring.as_ref(), state: &state, notifiers: Vec::new(), progress: None };
    let mut opts = RunOptions::new();
    opts.lease_ttl = Duration::from_secs(60);
    let plan = plan(&state);
    if plan.partner {
        sink.partner_takes(|name| name.ends_with(".csv"));
    }

    source.push((1..=25).map(|i| (i, i)));
    for rule in plan.first {
        faults.arm(rule);
    }
    let first = runner.run(&opts).await;
    faults.disarm();
    // The lease a lost reply (or a thief) left behind runs out, and so do the temporary files
    // of uploads nobody owns: both are older than the lease by the next scheduled run.
    state.expire(EXPORT);
    sink.backdate(opts.lease_ttl + Duration::from_secs(1));
    for rule in plan.second {
        faults.arm(rule);
    }
    let second = runner.run(&opts).await;
    faults.disarm();
    for round in 0..3 {
        state.expire(EXPORT);
        if round == 1 {
            source.push((26..=30).map(|i| (i, i)));
        }
        let r = runner.run(&opts).await;
        if !r.succeeded() {
            return Err(format!("a run without faults failed: {:?}", r.outcomes[0].error));
        }
    }
    let mut got = match kind {
        Kind::File | Kind::Staged => delivered_files(&sink),
        Kind::Table => table.rows(),
    };
    got.sort_unstable();
    let want: Vec<i64> = (1..=30).collect();
    if got != want {
        let seen: BTreeSet<i64> = got.iter().copied().collect();
        let doubled = got.len() - seen.len();
        let lost: Vec<i64> = want.iter().copied().filter(|i| !seen.contains(i)).collect();
        return Err(format!(
            "{doubled} rows doubled, lost {lost:?} (first run: {:?}; second: {:?})",
            first.outcomes[0].error, second.outcomes[0].error
        ));
    }
    let leftovers = sink.temp_files();
    if !leftovers.is_empty() {
        return Err(format!("temporary files left: {:?}", leftovers.keys().collect::<Vec<_>>()));
    }
    let watermark = state.watermark(EXPORT).await.map_err(|e| e.to_string())?;
    if watermark.as_ref().map(|w| w.1.as_str()) != Some("30") {
        return Err(format!("watermark {watermark:?}, expected 30"));
    }
    Ok(())
}

fn rule(point: &'static str, detail: Option<&'static str>, nth: u32, fault: Fault) -> Rule {
    let mut r = Rule::at(point, fault).nth(nth);
    if let Some(d) = detail {
        r = r.when(move |s| s == d);
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_fault_at_every_call_converges_to_each_row_once() {
    let file_points: &[(&str, Option<&str>, u32)] = &[
        ("sink.stat", None, 1),
        ("sink.begin", None, 1),
        ("sink.begin", None, 2),
        ("upload.write", None, 1),
        ("upload.seal", None, 1),
        ("upload.seal", None, 3),
        ("upload.commit", None, 1),
        ("upload.commit", None, 2),
        ("upload.commit", None, 3),
    ];
    // A staged run: the export, both listings (before the copy, and the check after it), the
    // downloads, the deletes after delivery, and every sink call of the copies.
    let staged_points: &[(&str, Option<&str>, u32)] = &[
        ("staged.export", None, 1),
        ("staging.list", None, 1),
        ("staging.list", None, 2),
        ("staging.open", None, 1),
        ("staging.open", None, 3),
        ("staging.delete", None, 1),
        ("sink.stat", None, 1),
        ("sink.begin", None, 2),
        ("upload.write", None, 1),
        ("upload.seal", None, 3),
        ("upload.commit", None, 1),
        ("upload.commit", None, 2),
    ];
    let table_points: &[(&str, Option<&str>, u32)] =
        &[("table.begin", None, 1), ("table.write", None, 1), ("table.write", None, 3), ("table.commit", None, 1)];
    let state_points: &[(&str, Option<&str>, u32)] = &[
        ("state.acquire", None, 1),
        ("state.pending", None, 1),
        ("state.watermark", None, 1),
        ("state.append", Some("PENDING"), 1),
        ("state.append", Some("SUCCESS"), 1),
        ("state.release", None, 1),
        ("state.renew", None, 1),
    ];
    // Points where the lease is taken away while the run is there.
    let theft_points: &[(&str, Option<&str>, u32)] = &[
        ("sink.begin", None, 1),
        ("upload.write", None, 1),
        ("upload.seal", None, 3),
        ("state.append", Some("PENDING"), 1),
        ("upload.commit", None, 2),
        ("table.write", None, 2),
        ("table.commit", None, 1),
        ("state.append", Some("SUCCESS"), 1),
    ];
    // Calls of the run that finishes one interrupted after publishing the first of three files.
    let finish_points: &[(&str, Option<&str>, u32)] = &[
        ("state.pending", None, 1),
        ("sink.stat", None, 1),
        ("sink.stat", None, 2),
        ("sink.publish", None, 1),
        ("sink.publish", None, 2),
        ("state.append", Some("SUCCESS"), 1),
        ("sink.leftovers", None, 1),
    ];
    let mut cases = Vec::new();
    let kinds = [
        (Kind::File, "file", file_points, false),
        (Kind::File, "file+partner", file_points, true),
        (Kind::Table, "table", table_points, false),
        (Kind::Staged, "staged", staged_points, false),
    ];
    for (kind, name, own, partner) in kinds {
        for &(point, detail, nth) in own.iter().chain(state_points) {
            for fault in [Fault::ErrorBefore, Fault::ErrorAfter] {
                let label = format!("{name} {point}{}#{nth} {fault:?}", detail.map(|d| format!("({d})")).unwrap_or_default());
                let plan = move |_: &MemoryStateStore| Plan { first: vec![rule(point, detail, nth, fault)], second: vec![], partner };
                cases.push((label, tokio::spawn(case(kind, plan))));
            }
        }
        for &(point, detail, nth) in theft_points {
            let file_only = point.starts_with("upload.") || point.starts_with("sink.");
            if (kind == Kind::Table && file_only) || (kind != Kind::Table && point.starts_with("table.")) {
                continue;
            }
            let label = format!("{name} lease lost at {point}{}#{nth}", detail.map(|d| format!("({d})")).unwrap_or_default());
            let plan = move |state: &MemoryStateStore| {
                let state = state.clone();
                let thief = rule(point, detail, nth, Fault::Proceed).then(move || state.steal(EXPORT, "another run"));
                Plan { first: vec![thief], second: vec![], partner }
            };
            cases.push((label, tokio::spawn(case(kind, plan))));
        }
        if kind != Kind::Table {
            for &(point, detail, nth) in finish_points {
                for fault in [Fault::ErrorBefore, Fault::ErrorAfter] {
                    let label =
                        format!("{name} finishing: {point}{}#{nth} {fault:?}", detail.map(|d| format!("({d})")).unwrap_or_default());
                    let plan = move |_: &MemoryStateStore| Plan {
                        first: vec![rule("upload.commit", None, 2, Fault::ErrorBefore)],
                        second: vec![rule(point, detail, nth, fault)],
                        partner,
                    };
                    cases.push((label, tokio::spawn(case(kind, plan))));
                }
            }
        }
    }
    assert_eq!(cases.len(), 188, "cases");
    let mut broken = Vec::new();
    for (label, handle) in cases {
        if let Err(why) = handle.await.expect("case") {
            broken.push((label, why));
        }
    }
    assert!(broken.is_empty(), "cases that broke the promise:\n{broken:#?}");
}

/// A run whose lease is taken away at any step before it records PENDING publishes nothing,
/// records FAILED, and leaves no temporary file: the run that took the lease owns the window.
#[tokio::test]
async fn a_run_that_lost_its_lease_publishes_nothing() {
    for (point, nth) in [("sink.stat", 1), ("sink.begin", 1), ("upload.write", 1), ("upload.seal", 3), ("state.renew", 1)] {
        let faults = Faults::new();
        let source = MemorySource::new(7);
        let sink = MemorySink::new().with_faults(faults.clone());
        let state = MemoryStateStore::new().with_faults(faults.clone());
        let wiring = MemoryWiring { source: source.clone(), sink: sink.clone(), table: MemoryTable::new() };
        let config = memory_config(EXPORT, shape(Kind::File));
        let runner = Runner { config: &config, wiring: &wiring, state: &state, notifiers: Vec::new(), progress: None };
        let opts = RunOptions::new();
        source.push((1..=25).map(|i| (i, i)));
        let thief = state.clone();
        faults.arm(Rule::at(point, Fault::Proceed).nth(nth).then(move || thief.steal(EXPORT, "another run")));

        let report = runner.run(&opts).await;

        let error = report.outcomes[0].error.clone().unwrap_or_default();
        assert!(error.contains("lease"), "{point}: the run stops for its lease: {error:?}");
        assert!(sink.files().is_empty() && sink.temp_files().is_empty(), "{point}: nothing published, nothing left");
        let statuses: Vec<&str> = state.records().iter().map(|r| r.status.as_str()).collect();
        assert_eq!(statuses, ["FAILED"], "{point}: no PENDING record");
        let lease = StateStore::lease(&state, EXPORT).await.expect("lease");
        assert_eq!(lease.map(|l| l.holder), Some("another run".to_owned()), "{point}: the thief keeps it");
    }
}

/// A staged run with `cleanup: after_delivery` deletes its objects once SUCCESS is recorded,
/// and a failed one keeps them (the next run exports afresh under a prefix of its own).
#[tokio::test]
async fn a_delivered_staged_run_deletes_its_objects() {
    let faults = Faults::new();
    let source = MemorySource::new(7);
    let sink = MemorySink::new().with_faults(faults.clone());
    let state = MemoryStateStore::new();
    let staging = MemoryStaging::new();
    let memory = MemoryWiring { source: source.clone(), sink: sink.clone(), table: MemoryTable::new() };
    let wiring = StagedWiring { inner: memory, staging: staging.clone(), rows_per_file: 10 };
    let Shape::File(file) = shape(Kind::Staged) else { unreachable!() };
    let config = staged_config(EXPORT, file);
    let runner = Runner { config: &config, wiring: &wiring, state: &state, notifiers: Vec::new(), progress: None };
    source.push((1..=25).map(|i| (i, i)));
    faults.arm(Rule::at("upload.commit", Fault::ErrorBefore).nth(1));
    let failed = runner.run(&RunOptions::new()).await;
    assert!(!failed.succeeded());
    assert_eq!(staging.names().len(), 3, "a failed run keeps its objects: {:?}", staging.names());
    faults.disarm();
    let done = runner.run(&RunOptions::new()).await;
    assert!(done.succeeded(), "{:?}", done.outcomes[0].error);
    assert_eq!(staging.names().len(), 3, "only the delivered run's objects are deleted: {:?}", staging.names());
    let mut ids = delivered_files(&sink);
    ids.sort_unstable();
    assert_eq!(ids, (1..=25).collect::<Vec<i64>>());
}
