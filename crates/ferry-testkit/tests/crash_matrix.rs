//! The run skeleton's crash matrix, on the in-memory backends: a fault (an error before the
//! effect, or after it: a lost reply) at every call a run makes, for both destination shapes.
//! After the faulty run, later runs must converge: every source row delivered exactly once,
//! no temporary file left, the watermark at the last row.
//!
//! Cases the skeleton does not yet survive are listed in `KNOWN_GAPS` with the reason; the test
//! fails when a listed case starts passing (so the list only shrinks) as well as when any other
//! case fails.

use std::collections::BTreeSet;
use std::time::Duration;

use ferry_core::config::{Compression, FileSettings, OnExisting, Shape, Split};
use ferry_core::run::{RunOptions, Runner};
use ferry_core::template::FileTemplate;
use ferry_core::StateStore;
use ferry_testkit::faults::{Fault, Faults, Rule};
use ferry_testkit::memory::{memory_config, MemorySink, MemorySource, MemoryStateStore, MemoryTable, MemoryWiring};

const EXPORT: &str = "orders";

/// What the skeleton does not yet survive, for the exactly-once issue: a rename the server
/// performed but whose answer was lost is recorded FAILED and its rows are sent again; a split
/// export whose publish stopped after some files is recorded FAILED, and the next run sends
/// the whole window again instead of finishing the publish.
const KNOWN_GAPS: &[&str] = &[
    "file upload.commit#1 ErrorAfter",
    "file upload.commit#2 ErrorBefore",
    "file upload.commit#2 ErrorAfter",
    "file upload.commit#3 ErrorBefore",
    "file upload.commit#3 ErrorAfter",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Table,
}

fn shape(kind: Kind) -> Shape {
    match kind {
        Kind::File => Shape::File(FileSettings {
            // Three files of at most 10 rows for the first 25 rows.
            template: FileTemplate::parse("{name}_{datetime}_{part}.csv").expect("template"),
            compression: Compression::None,
            delimiter: b',',
            header: true,
            split: Split { max_rows: Some(10), max_bytes: None },
            on_existing: OnExisting::Fail,
            allow_repeating_names: false,
        }),
        Kind::Table => Shape::Table,
    }
}

/// Ids in every published file (first column, header skipped).
fn delivered_files(sink: &MemorySink) -> Vec<i64> {
    let mut ids = Vec::new();
    for bytes in sink.files().values() {
        let text = String::from_utf8(bytes.clone()).expect("UTF-8");
        for line in text.split("\r\n").skip(1).filter(|l| !l.is_empty()) {
            ids.push(line.split(',').next().expect("id").parse().expect("an id"));
        }
    }
    ids
}

/// Runs one case; `Err` says how the promise broke.
async fn case(kind: Kind, point: &'static str, detail: Option<&'static str>, nth: u32, fault: Fault) -> Result<(), String> {
    let faults = Faults::new();
    let source = MemorySource::new(7);
    let sink = MemorySink::new().with_faults(faults.clone());
    let table = MemoryTable::new().with_faults(faults.clone());
    let state = MemoryStateStore::new().with_faults(faults.clone());
    let wiring = MemoryWiring { source: source.clone(), sink: sink.clone(), table: table.clone() };
    let config = memory_config(EXPORT, shape(kind));
    let runner = Runner { config: &config, wiring: &wiring, state: &state, notifiers: Vec::new(), progress: None };
    let mut opts = RunOptions::new();
    opts.lease_ttl = Duration::from_secs(60);

    source.push((1..=25).map(|i| (i, i)));
    let mut rule = Rule::at(point, fault).nth(nth);
    if let Some(d) = detail {
        rule = rule.when(move |s| s == d);
    }
    faults.arm(rule);
    let first = runner.run(&opts).await;
    faults.disarm();
    for round in 0..3 {
        // The next scheduled run: file names have one-second resolution, and a lease a lost
        // reply left behind has expired by then.
        tokio::time::sleep(Duration::from_millis(1100)).await;
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
        Kind::File => delivered_files(&sink),
        Kind::Table => table.rows(),
    };
    got.sort_unstable();
    let want: Vec<i64> = (1..=30).collect();
    if got != want {
        let seen: BTreeSet<i64> = got.iter().copied().collect();
        let doubled = got.len() - seen.len();
        let lost: Vec<i64> = want.iter().copied().filter(|i| !seen.contains(i)).collect();
        return Err(format!("{doubled} rows doubled, lost {lost:?} (first run: {:?})", first.outcomes[0].error));
    }
    let leftovers = sink.temp_files();
    // A lost reply to creating the temporary file leaves one no upload owns: housekeeping of
    // such files is the exactly-once issue's.
    let orphan_expected = point == "sink.begin" && fault == Fault::ErrorAfter;
    if !leftovers.is_empty() && !orphan_expected {
        return Err(format!("temporary files left: {:?}", leftovers.keys().collect::<Vec<_>>()));
    }
    let watermark = state.watermark(EXPORT).await.map_err(|e| e.to_string())?;
    if watermark.as_ref().map(|w| w.1.as_str()) != Some("30") {
        return Err(format!("watermark {watermark:?}, expected 30"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_fault_at_every_call_converges_to_each_row_once() {
    let file_points: &[(&str, Option<&str>, u32)] = &[
        ("sink.begin", None, 1),
        ("sink.begin", None, 2),
        ("upload.write", None, 1),
        ("upload.seal", None, 1),
        ("upload.seal", None, 3),
        ("upload.commit", None, 1),
        ("upload.commit", None, 2),
        ("upload.commit", None, 3),
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
    ];
    let mut cases = Vec::new();
    for (kind, name, own) in [(Kind::File, "file", file_points), (Kind::Table, "table", table_points)] {
        for &(point, detail, nth) in own.iter().chain(state_points) {
            for fault in [Fault::ErrorBefore, Fault::ErrorAfter] {
                let label = format!("{name} {point}{}#{nth} {fault:?}", detail.map(|d| format!("({d})")).unwrap_or_default());
                cases.push((label, tokio::spawn(case(kind, point, detail, nth, fault))));
            }
        }
    }
    assert!(cases.len() >= 48, "{} cases", cases.len());
    let mut broken = Vec::new();
    for (label, handle) in cases {
        if let Err(why) = handle.await.expect("case") {
            broken.push((label, why));
        }
    }
    let broken_labels: Vec<&str> = broken.iter().map(|(l, _)| l.as_str()).collect();
    let unexpected: Vec<&(String, String)> = broken.iter().filter(|(l, _)| !KNOWN_GAPS.contains(&l.as_str())).collect();
    assert!(unexpected.is_empty(), "cases that broke the promise:\n{unexpected:#?}");
    let fixed: Vec<&&str> = KNOWN_GAPS.iter().filter(|g| !broken_labels.contains(*g)).collect();
    assert!(fixed.is_empty(), "known gaps that now hold (remove them from KNOWN_GAPS): {fixed:?}");
}
