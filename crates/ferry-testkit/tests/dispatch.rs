//! Handing exports to Cloud Run Job executions, on the in-memory backends: a fault before and
//! after every effect of the hand-off (reading the message's records, starting the execution,
//! writing the DISPATCHED record), then redeliveries of the message until one is answered, and
//! every execution that was started run as Cloud Run would run it (`ferry run` with its
//! arguments), some twice (a task retry). Whatever failed, the rows go exactly once, and no
//! DISPATCHED record names an execution that was not started.

use std::time::Duration;

use chrono::NaiveDate;
use ferry_core::config::{Compression, FileSettings, OnExisting, Shape, Split};
use ferry_core::run::dispatch::{dispatch, Dispatched};
use ferry_core::run::{RunOptions, Runner};
use ferry_core::template::FileTemplate;
use ferry_core::{RunStatus, StateStore};
use ferry_testkit::faults::{Fault, Faults, Rule};
use ferry_testkit::memory::{memory_config, MemoryDispatcher, MemorySink, MemorySource, MemoryStateStore, MemoryTable, MemoryWiring};

const EXPORT: &str = "orders";
const CONFIG: &str = "/app/configs/default.json";

/// The options `ferry run` builds from an execution's arguments.
fn options_of(args: &[String]) -> RunOptions {
    assert_eq!(args.first().map(String::as_str), Some("run"), "{args:?}");
    let mut opts = RunOptions::new();
    for arg in &args[1..] {
        let (flag, value) = arg.split_once('=').unwrap_or((arg.as_str(), ""));
        match flag {
            "--config" => assert_eq!(value, CONFIG),
            "--export" => opts.exports.get_or_insert_with(Vec::new).push(value.to_owned()),
            "--date" => opts.run_date = Some(value.parse().expect("a date")),
            "--message-id" => opts.message_id = Some(value.to_owned()),
            "--full" => opts.full = true,
            other => panic!("ferry run has no flag {other}"),
        }
    }
    opts
}

struct World {
    faults: Faults,
    source: MemorySource,
    sink: MemorySink,
    state: MemoryStateStore,
    dispatcher: MemoryDispatcher,
    wiring: MemoryWiring,
    config: ferry_core::config::Config,
}

impl World {
    fn new() -> Self {
        let faults = Faults::new();
        let source = MemorySource::new(7);
        let sink = MemorySink::new().with_faults(faults.clone());
        let state = MemoryStateStore::new().with_faults(faults.clone());
        let dispatcher = MemoryDispatcher::new().with_faults(faults.clone());
        let wiring = MemoryWiring { source: source.clone(), sink: sink.clone(), table: MemoryTable::new() };
        let file = FileSettings {
            template: FileTemplate::parse("{name}_{datetime}.csv").expect("template"),
            compression: Compression::None,
            delimiter: b',',
            header: true,
            split: Split { max_rows: None, max_bytes: None },
            on_existing: OnExisting::Fail,
            allow_repeating_names: false,
            object_names: false,
            encoding_fields: Vec::new(),
        };
        let mut config = memory_config(EXPORT, Shape::File(file));
        config.exports[0].execution = ferry_core::config::Execution::Job;
        Self { faults, source, sink, state, dispatcher, wiring, config }
    }

    fn push_options(&self, message_id: &str) -> RunOptions {
        let mut opts = RunOptions::new();
        opts.message_id = Some(message_id.to_owned());
        opts.run_date = Some(NaiveDate::from_ymd_opt(2026, 12, 1).expect("date"));
        opts
    }

    async fn dispatch(&self, message_id: &str) -> Result<Dispatched, ferry_core::Failure> {
        dispatch(&self.state, &self.dispatcher, &self.config.exports[0], &self.push_options(message_id), CONFIG).await
    }

    /// Runs execution number `i` (0-based) as Cloud Run does: `ferry run` with its arguments.
    async fn execute(&self, i: usize) -> ferry_core::run::RunReport {
        let (name, args) = self.dispatcher.started()[i].clone();
        let mut opts = options_of(&args);
        opts.execution = Some(name.rsplit('/').next().expect("id").to_owned());
        opts.lease_ttl = Duration::from_secs(60);
        let runner = Runner { config: &self.config, wiring: &self.wiring, state: &self.state, notifiers: Vec::new(), progress: None };
        runner.run(&opts).await
    }

    fn delivered(&self) -> Vec<i64> {
        let mut ids = Vec::new();
        for bytes in self.sink.files().values() {
            let text = String::from_utf8(bytes.clone()).expect("UTF-8");
            ids.extend(text.split("\r\n").skip(1).filter(|l| !l.is_empty()).map(|l| l.split(',').next().unwrap().parse::<i64>().unwrap()));
        }
        ids.sort_unstable();
        ids
    }
}

#[tokio::test]
async fn a_message_starts_one_execution_whose_run_is_recorded_beside_it() {
    let w = World::new();
    w.source.push((1..=10).map(|i| (i, i)));
    let Dispatched::Started { execution } = w.dispatch("m-1").await.expect("dispatched") else { panic!("not started") };
    let (name, args) = w.dispatcher.started()[0].clone();
    assert_eq!(execution, name);
    assert_eq!(
        args,
        ["run", &format!("--config={CONFIG}"), "--export=orders", "--date=2026-12-01", "--message-id=m-1"].map(str::to_owned),
        "the selection, the run date and the message id"
    );
    let records = w.state.by_message(EXPORT, "m-1").await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].status, records[0].execution.as_deref()), (RunStatus::Dispatched, Some(name.as_str())));

    // A redelivery while the execution has not run yet: the record answers, nothing starts.
    assert_eq!(w.dispatch("m-1").await.unwrap(), Dispatched::Earlier { execution: name.clone(), run_id: records[0].run_id.clone() });
    assert_eq!(w.dispatcher.started().len(), 1);

    let report = w.execute(0).await;
    assert!(report.succeeded(), "{:?}", report.outcomes[0].error);
    let records = w.state.by_message(EXPORT, "m-1").await.unwrap();
    let statuses: Vec<_> = records.iter().map(|r| (r.status.as_str(), r.execution.clone().unwrap_or_default())).collect();
    assert_eq!(
        statuses,
        [("DISPATCHED", name.clone()), ("PENDING", "ferry-run-1".into()), ("SUCCESS", "ferry-run-1".into())],
        "the execution's records carry its id"
    );
    assert!(matches!(w.dispatch("m-1").await.unwrap(), Dispatched::Delivered { status: RunStatus::Success, .. }));
    // A task retried after it delivered finds the message delivered.
    let again = w.execute(0).await;
    assert!(again.succeeded());
    assert_eq!(w.delivered(), (1..=10).collect::<Vec<_>>());
    assert_eq!(w.dispatcher.started().len(), 1);
}

#[tokio::test]
async fn a_dispatch_without_a_message_id_is_refused() {
    let w = World::new();
    let mut opts = w.push_options("x");
    opts.message_id = None;
    let e = dispatch(&w.state, &w.dispatcher, &w.config.exports[0], &opts, CONFIG).await.expect_err("no message id");
    assert!(e.to_string().contains("message"), "{e}");
    assert!(w.dispatcher.started().is_empty());
}

/// One case: `rule` armed for the first delivery of the message. Then redeliveries until one
/// is answered, and every started execution run, the first one twice.
async fn case(rule: Rule) -> Result<(), String> {
    let w = World::new();
    w.source.push((1..=25).map(|i| (i, i)));
    w.faults.arm(rule);
    let first = w.dispatch("m-1").await;
    w.faults.disarm();
    let mut answered = first.is_ok();
    for _ in 0..3 {
        if answered {
            break;
        }
        answered = w.dispatch("m-1").await.is_ok();
    }
    if !answered {
        return Err("no redelivery was answered".into());
    }
    let started = w.dispatcher.started();
    for r in w.state.records().iter().filter(|r| r.status == RunStatus::Dispatched) {
        if !started.iter().any(|(name, _)| Some(name) == r.execution.as_ref()) {
            return Err(format!("DISPATCHED names {:?}, which was not started", r.execution));
        }
    }
    for i in 0..started.len() {
        w.state.expire(EXPORT);
        let r = w.execute(i).await;
        if !r.succeeded() {
            return Err(format!("execution {i} failed: {:?}", r.outcomes[0].error));
        }
    }
    w.state.expire(EXPORT);
    w.execute(0).await;
    if w.delivered() != (1..=25).collect::<Vec<_>>() {
        return Err(format!("delivered {:?} (first dispatch: {first:?})", w.delivered()));
    }
    Ok(())
}

#[tokio::test]
async fn every_fault_of_the_hand_off_converges_to_one_delivery() {
    let mut failures = Vec::new();
    let points: [(&str, Option<&'static str>); 3] =
        [("state.by_message", None), ("dispatch.start", None), ("state.append", Some("DISPATCHED"))];
    for (point, detail) in points {
        for fault in [Fault::ErrorBefore, Fault::ErrorAfter] {
            let mut rule = Rule::at(point, fault);
            if let Some(d) = detail {
                rule = rule.when(move |s| s == d);
            }
            if let Err(e) = case(rule).await {
                failures.push(format!("{point} {fault:?}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test]
async fn a_start_whose_answer_was_lost_is_started_again_and_the_second_execution_finds_the_rows_delivered() {
    let w = World::new();
    w.source.push((1..=5).map(|i| (i, i)));
    w.faults.arm(Rule::at("dispatch.start", Fault::ErrorAfter));
    let e = w.dispatch("m-1").await.expect_err("the answer was lost");
    assert!(e.to_string().contains("could not start a Cloud Run Job execution"), "{e}");
    assert!(w.state.records().is_empty(), "nothing is recorded for an execution not known to have started");
    assert!(matches!(w.dispatch("m-1").await.unwrap(), Dispatched::Started { .. }));
    assert_eq!(w.dispatcher.started().len(), 2, "the redelivery starts another");
    assert!(w.execute(0).await.succeeded());
    let second = w.execute(1).await;
    assert!(second.succeeded());
    assert!(matches!(second.outcomes[0].skipped, Some(ferry_core::run::Skip::AlreadyDelivered { .. })), "{:?}", second.outcomes[0]);
    assert_eq!(w.delivered(), [1, 2, 3, 4, 5]);
}

/// Counts the reports it is sent.
#[derive(Clone, Default)]
struct Heard(std::sync::Arc<std::sync::Mutex<Vec<Vec<String>>>>);

#[async_trait::async_trait]
impl ferry_core::Notifier for Heard {
    async fn notify(&self, report: &ferry_core::run::RunReport) -> Result<(), ferry_core::Failure> {
        self.0.lock().unwrap().push(report.outcomes.iter().map(|o| format!("{} {}", o.export, o.status.as_str())).collect());
        Ok(())
    }
    fn name(&self) -> &'static str {
        "heard"
    }
}

#[tokio::test]
async fn an_execution_that_finds_the_export_busy_says_so_and_an_inline_redelivery_stays_quiet() {
    let w = World::new();
    w.source.push((1..=3).map(|i| (i, i)));
    w.dispatch("m-1").await.expect("dispatched");
    let taken = w.state.acquire(EXPORT, "another-run", None, Duration::from_secs(600), Duration::ZERO).await.unwrap();
    assert_eq!(taken, ferry_core::Claim::Acquired);
    let heard = Heard::default();
    let (_, args) = w.dispatcher.started()[0].clone();
    for execution in [None, Some("ferry-run-1".to_owned())] {
        let mut opts = options_of(&args);
        opts.execution = execution.clone();
        let runner =
            Runner { config: &w.config, wiring: &w.wiring, state: &w.state, notifiers: vec![Box::new(heard.clone())], progress: None };
        let report = runner.run(&opts).await;
        assert!(!report.succeeded(), "busy is a failure: the task is retried");
        assert_eq!(report.outcomes[0].skipped, Some(ferry_core::run::Skip::Busy));
    }
    assert_eq!(heard.0.lock().unwrap().clone(), [vec![format!("{EXPORT} FAILED")]], "only the execution's busy run is reported");
}

#[tokio::test]
async fn a_redelivery_that_arrives_while_the_first_is_starting_its_execution_waits_and_starts_none() {
    let w = World::new();
    w.faults.arm(Rule::at("dispatch.start", Fault::Delay(Duration::from_millis(200))));
    let (a, b) = tokio::join!(w.dispatch("m-1"), w.dispatch("m-1"));
    let mut got = [a.expect("first"), b.expect("second")].map(|d| match d {
        Dispatched::Started { .. } => "started",
        Dispatched::Earlier { .. } => "earlier",
        Dispatched::Delivered { .. } => "delivered",
    });
    got.sort_unstable();
    assert_eq!(got, ["earlier", "started"]);
    assert_eq!(w.dispatcher.started().len(), 1);
    // Other messages are not held up by it.
    w.faults.arm(Rule::at("dispatch.start", Fault::Delay(Duration::from_millis(200))));
    let (a, b) = tokio::join!(w.dispatch("m-2"), w.dispatch("m-3"));
    assert!(matches!((a, b), (Ok(Dispatched::Started { .. }), Ok(Dispatched::Started { .. }))));
}

#[tokio::test]
async fn a_second_execution_of_the_message_leaves_it_to_the_first_without_notifying() {
    let w = World::new();
    w.source.push((1..=3).map(|i| (i, i)));
    w.dispatch("m-1").await.expect("dispatched");
    let (_, args) = w.dispatcher.started()[0].clone();
    // The first execution holds the lease, for the same message.
    let claim = w.state.acquire(EXPORT, "first-execution", Some("m-1"), Duration::from_secs(600), Duration::ZERO).await.unwrap();
    assert_eq!(claim, ferry_core::Claim::Acquired);
    let heard = Heard::default();
    let mut opts = options_of(&args);
    opts.execution = Some("ferry-run-2".into());
    let runner = Runner { config: &w.config, wiring: &w.wiring, state: &w.state, notifiers: vec![Box::new(heard.clone())], progress: None };
    let report = runner.run(&opts).await;
    assert!(!report.succeeded(), "the task is tried again, in case the holder died: {:?}", report.outcomes[0]);
    assert_eq!(report.outcomes[0].skipped, Some(ferry_core::run::Skip::SameMessage { holder: "first-execution".into() }));
    assert!(heard.0.lock().unwrap().is_empty(), "nothing to tell");
    assert!(w.delivered().is_empty(), "the first delivers");
}
