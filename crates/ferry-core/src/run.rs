//! One run: for each export, plan → read → encode → deliver → verify → record, then notify.
//!
//! Delivery and the watermark move together through the metadata table:
//! 1. Rows `(lo, hi]` stream into temporary files on the server (one, or one per part of a
//!    split export); each is closed and its size verified.
//! 2. A PENDING record stores every file's name, size, row count and SHA-256, and `hi`.
//! 3. The sink publishes the files under their final names, in order.
//! 4. A SUCCESS record moves the watermark to `hi`.
//!
//! A failure before 2 removes the temporary files and records FAILED: the watermark stays, and
//! the next run reads the same rows again. A failure in 3 that the sink reports removes the
//! files not yet published and records FAILED, naming those already published. Any other
//! failure between 2 and 4 leaves a PENDING record; the next run reconciles it first: if every
//! file is on the server with the recorded size, the delivery happened and a SUCCESS record is
//! added (no second copy of those rows is sent); otherwise the run is recorded FAILED and its
//! rows are read again.

use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::{Config, ExportSpec, FileSettings, OnExisting};
use crate::cursor::{CursorType, CursorValue};
use crate::encode::{CsvEncoder, CsvOptions};
use crate::roles::{Claim, FileRecord, Notifier, RunRecord, RunStatus, Source, StateStore, Window};
use crate::{failpoint, ErrorClass, Failure, PutMode, Sink};

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Only these exports (all enabled ones when `None`).
    pub exports: Option<Vec<String>>,
    /// Ignore the watermark and deliver everything up to `hi`.
    pub full: bool,
    /// Plan and read, but deliver and record nothing.
    pub dry_run: bool,
    /// The date `{date}` in queries stands for.
    pub run_date: NaiveDate,
    /// The triggering Pub/Sub message, recorded with each run.
    pub message_id: Option<String>,
    /// Run id; a fresh one when `None`.
    pub run_id: Option<String>,
    /// How long an export's lease lasts without renewal; renewed every third of it while the
    /// export runs. A run that dies holds up the next one for at most this long.
    pub lease_ttl: Duration,
    /// How long to keep trying when another run holds an export's lease (0: give up at once).
    pub lease_wait: Duration,
}

impl RunOptions {
    /// All exports, incremental, today (UTC).
    pub fn new() -> Self {
        Self {
            exports: None,
            full: false,
            dry_run: false,
            run_date: Utc::now().date_naive(),
            message_id: None,
            run_id: None,
            lease_ttl: Duration::from_secs(600),
            lease_wait: Duration::ZERO,
        }
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// The plan for one export.
#[derive(Debug, Clone)]
pub struct ExportPlan {
    pub export: String,
    pub window: Window,
    /// The (first) file's name; `None` when there is nothing new to deliver.
    pub file_name: Option<String>,
    /// When the plan was made; file names are rendered for this time.
    pub planned_at: DateTime<Utc>,
    pub sql: String,
    pub full: bool,
    /// Nothing new to deliver.
    pub nothing_new: bool,
}

/// How one export ended.
#[derive(Debug, Clone)]
pub struct ExportOutcome {
    pub export: String,
    pub source: String,
    pub status: RunStatus,
    pub window: Window,
    pub rows: u64,
    pub bytes: u64,
    /// The delivered file; for a split export the names, joined by `, `.
    pub file: Option<String>,
    /// SHA-256 of the delivered file, when there is one file.
    pub sha256: Option<String>,
    /// Every delivered file, in order.
    pub files: Vec<FileRecord>,
    /// What went wrong, in words a data engineer can act on; secrets redacted.
    pub error: Option<String>,
    pub error_class: Option<ErrorClass>,
    pub seconds: f64,
    /// Earlier interrupted runs this run reconciled.
    pub reconciled: Vec<String>,
    /// Why this run did nothing for the export, when it did nothing on purpose.
    pub skipped: Option<Skip>,
    /// Where the time went.
    pub stages: Stages,
}

/// Wall time of an export by stage. The stages run one after another (reading overlaps only
/// with the prefetch of the next page), so they add up to about the export's time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stages {
    /// Lease, reconciling interrupted runs, watermark and `MAX(cursor)`.
    pub plan: Duration,
    /// Starting the read query, until its first page.
    pub query: Duration,
    /// Waiting for further pages of rows.
    pub read: Duration,
    /// Encoding rows to CSV (and gzip).
    pub encode: Duration,
    /// Writing to the server and verifying the temporary files.
    pub upload: Duration,
    /// Renaming to the final names.
    pub publish: Duration,
    /// Appending PENDING and SUCCESS records.
    pub record: Duration,
}

impl std::fmt::Display for Stages {
    /// `plan 0.4s · query 0.2s · read 15.0s · encode 2.1s · upload 1.2s · publish 0.0s · record 0.6s`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all = [
            ("plan", self.plan),
            ("query", self.query),
            ("read", self.read),
            ("encode", self.encode),
            ("upload", self.upload),
            ("publish", self.publish),
            ("record", self.record),
        ];
        let parts: Vec<String> = all.iter().map(|(n, d)| format!("{n} {:.2}s", d.as_secs_f64())).collect();
        f.write_str(&parts.join(" · "))
    }
}

/// Why an export did nothing in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// The triggering message was already delivered by run `run_id`: this is a redelivery.
    AlreadyDelivered { run_id: String },
    /// Another run holds the export's lease (the outcome's error names it); this run must try
    /// again later.
    Busy,
}

impl ExportOutcome {
    /// An outcome that has not got anywhere yet: FAILED until the export says otherwise.
    fn new(export: String, source: String) -> Self {
        Self {
            export,
            source,
            status: RunStatus::Failed,
            window: Window { lo: None, hi: None },
            rows: 0,
            bytes: 0,
            file: None,
            sha256: None,
            files: Vec::new(),
            error: None,
            error_class: None,
            seconds: 0.0,
            reconciled: Vec::new(),
            skipped: None,
            stages: Stages::default(),
        }
    }
}

/// The whole run, for notifications and callers.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub run_id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub dry_run: bool,
    pub destination: String,
    pub outcomes: Vec<ExportOutcome>,
    /// Notification channels that failed, with the reason.
    pub notify_errors: Vec<String>,
}

impl RunReport {
    /// True when no export failed.
    pub fn succeeded(&self) -> bool {
        self.outcomes.iter().all(|o| o.status != RunStatus::Failed)
    }

    /// The report of a run that failed before any export started (the metadata table or the
    /// trigger message could not be used): every export it would have run is FAILED with
    /// `error`. Nothing was delivered and no watermark moved.
    pub fn failed_before_start(config: &Config, opts: &RunOptions, class: ErrorClass, error: &str) -> Self {
        let now = Utc::now();
        let error = config.redact(error);
        let names: Vec<String> = match &opts.exports {
            Some(names) => names.clone(),
            None => config.exports.iter().filter(|e| e.enabled).map(|e| e.name.clone()).collect(),
        };
        let names = if names.is_empty() { vec!["(run)".to_owned()] } else { names };
        let outcomes = names
            .into_iter()
            .map(|name| {
                let source = config.exports.iter().find(|e| e.name == name).map(|e| e.source.describe.clone()).unwrap_or_default();
                let mut o = ExportOutcome::new(name, source);
                o.error = Some(error.clone());
                o.error_class = Some(class);
                o
            })
            .collect();
        Self {
            run_id: opts.run_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            started_at: now,
            finished_at: now,
            dry_run: opts.dry_run,
            destination: destinations(config, &names_of(opts, config)),
            outcomes,
            notify_errors: Vec::new(),
        }
    }
}

/// The names of the exports `opts` selects (unknown names included).
fn names_of(opts: &RunOptions, config: &Config) -> Vec<String> {
    match &opts.exports {
        Some(names) => names.clone(),
        None => config.exports.iter().filter(|e| e.enabled).map(|e| e.name.clone()).collect(),
    }
}

/// The distinct destinations of the exports named, for reports: `sftp://host:22/upload`.
fn destinations(config: &Config, names: &[String]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for x in config.exports.iter().filter(|x| names.contains(&x.name)) {
        if !seen.contains(&x.destination.component.describe.as_str()) {
            seen.push(&x.destination.component.describe);
        }
    }
    seen.join(", ")
}

/// Builds the roles of each export from its components: the map from component `type` to the
/// crate of its system. Implemented by the wiring (`function/`) and by the test kit.
#[async_trait]
pub trait Wiring: Send + Sync {
    /// The export's source.
    fn source(&self, export: &ExportSpec) -> Result<Box<dyn Source>, Failure>;
    /// The connected sink of the export's file destination. Connections are opened on first
    /// use and shared by exports with the same settings; a failure to connect is the same
    /// failure for each of them.
    async fn sink(&self, export: &ExportSpec) -> Result<Arc<dyn Sink>, Failure>;
    /// Closes every connection opened.
    async fn close(&self);
}

/// Sends `report` through every notifier, unless it is a dry run. A failing channel is logged
/// and listed in `report.notify_errors`; it never changes an export's outcome.
pub async fn notify(config: &Config, notifiers: &[Box<dyn Notifier>], report: &mut RunReport) {
    if report.dry_run || (!report.outcomes.is_empty() && report.outcomes.iter().all(|o| o.skipped.is_some())) {
        // A redelivery or a run that found every export busy changed nothing worth a message.
        return;
    }
    for n in notifiers {
        if let Err(e) = n.notify(report).await {
            let msg = config.redact(&e.to_string());
            tracing::error!(run_id = %report.run_id, channel = n.name(), error = %msg, "notification failed; the run's outcome stands");
            report.notify_errors.push(format!("{}: {msg}", n.name()));
        }
    }
}

/// Progress of the export being delivered.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    pub export: &'a str,
    pub rows: u64,
    pub bytes: u64,
    pub elapsed: std::time::Duration,
}

/// Runs exports with the roles it is given.
pub struct Runner<'a> {
    pub config: &'a Config,
    /// Builds each export's source and sink.
    pub wiring: &'a dyn Wiring,
    pub state: &'a dyn StateStore,
    pub notifiers: Vec<Box<dyn Notifier>>,
    pub progress: Option<&'a (dyn Fn(Progress<'_>) + Sync)>,
}

const CHUNK: usize = 1 << 20;

impl Runner<'_> {
    fn selected(&self, opts: &RunOptions) -> Result<Vec<&ExportSpec>, String> {
        match &opts.exports {
            None => Ok(self.config.exports.iter().filter(|e| e.enabled).collect()),
            Some(names) => names
                .iter()
                .map(|n| {
                    self.config.exports.iter().find(|e| &e.name == n).ok_or_else(|| {
                        let known: Vec<&str> = self.config.exports.iter().map(|e| e.name.as_str()).collect();
                        format!("unknown export {n:?}; this config has {}", known.join(", "))
                    })
                })
                .collect(),
        }
    }

    /// Plans every selected export without changing anything.
    pub async fn plan(&self, opts: &RunOptions) -> Result<Vec<ExportPlan>, String> {
        let mut plans = Vec::new();
        for export in self.selected(opts)? {
            let plan =
                self.plan_export(export, opts).await.map_err(|e| format!("{}: {}", export.name, self.config.redact(&e.to_string())))?;
            plans.push(plan);
        }
        Ok(plans)
    }

    async fn plan_export(&self, export: &ExportSpec, opts: &RunOptions) -> Result<ExportPlan, Failure> {
        let run_date = opts.run_date.format("%Y-%m-%d").to_string();
        let source = self.wiring.source(export)?;
        let hi = match &export.cursor {
            Some(_) => source.upper_bound(export, &run_date).await?,
            None => None,
        };
        let full = opts.full || !export.incremental;
        let watermark = if full { None } else { self.watermark(export, hi.as_ref().map(CursorValue::ty)).await? };
        let nothing_new = match (&watermark, &hi) {
            (_, None) if export.cursor.is_some() => true,
            (Some(lo), Some(hi)) => lo.compare(hi) != Some(std::cmp::Ordering::Less),
            _ => false,
        };
        // Lookback widens the window downwards only; whether there is anything new is decided
        // by the watermark itself, so a quiet table does not re-send its last rows every run.
        let lo = watermark.map(|w| if export.lookback > 0 { w.minus(export.lookback) } else { w });
        let window = Window { lo, hi };
        let planned_at = Utc::now();
        let file_name = match export.file() {
            Some(file) => (!nothing_new).then(|| file.template.render(&export.name, planned_at, 1)),
            None => None,
        };
        Ok(ExportPlan {
            export: export.name.clone(),
            sql: source.read_sql(export, &window),
            window,
            file_name,
            planned_at,
            full,
            nothing_new,
        })
    }

    async fn watermark(&self, export: &ExportSpec, column_type: Option<CursorType>) -> Result<Option<CursorValue>, Failure> {
        let Some((ty, value)) = self.state.watermark(&export.name).await? else { return Ok(None) };
        // Rows written by the seed deployment carry no cursor type: take the column's.
        let stored = (if ty.is_empty() { column_type } else { CursorType::from_bigquery(&ty) }).ok_or_else(|| {
            Failure::with_class(ErrorClass::Permanent, format!("metadata table: unknown cursor type {ty:?} for export {}", export.name))
        })?;
        if let Some(col) = column_type {
            if col != stored {
                return Err(Failure::with_class(
                    ErrorClass::Permanent,
                    format!(
                        "export {}: the watermark was recorded as {} but column {} is now {}; deliver once with a full export",
                        export.name,
                        stored.sql_name(),
                        export.cursor.as_deref().unwrap_or_default(),
                        col.sql_name()
                    ),
                ));
            }
        }
        CursorValue::parse(stored, &value)
            .map(Some)
            .map_err(|e| Failure::with_class(ErrorClass::Permanent, format!("metadata table: watermark of export {}: {e}", export.name)))
    }

    /// Runs every selected export, then notifies.
    pub async fn run(&self, opts: &RunOptions) -> RunReport {
        let run_id = opts.run_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let started_at = Utc::now();
        let mut outcomes = Vec::new();
        let destination = destinations(self.config, &names_of(opts, self.config));
        match self.selected(opts) {
            Err(e) => {
                let mut o = ExportOutcome::new(opts.exports.clone().unwrap_or_default().join(","), String::new());
                o.error = Some(e);
                o.error_class = Some(ErrorClass::Permanent);
                outcomes.push(o);
            }
            Ok(exports) => {
                for export in exports {
                    outcomes.push(self.run_export(export, opts, &run_id).await);
                }
            }
        }
        let mut report = RunReport {
            run_id,
            started_at,
            finished_at: Utc::now(),
            dry_run: opts.dry_run,
            destination,
            outcomes,
            notify_errors: Vec::new(),
        };
        notify(self.config, &self.notifiers, &mut report).await;
        report
    }

    async fn run_export(&self, export: &ExportSpec, opts: &RunOptions, run_id: &str) -> ExportOutcome {
        let t0 = Instant::now();
        let started_at = Utc::now();
        let mut outcome = ExportOutcome::new(export.name.clone(), export.source.describe.clone());
        let ctx = RunCtx { run_id, started_at, started: t0, message_id: opts.message_id.as_deref() };
        let result = if opts.dry_run {
            self.deliver(export, opts, &ctx, &mut outcome).await
        } else {
            match self
                .state
                .acquire(&export.name, run_id, opts.message_id.as_deref(), opts.lease_ttl, opts.lease_wait.min(opts.lease_ttl / 2))
                .await
            {
                Ok(Claim::Acquired) => {
                    let result = tokio::select! {
                        r = self.deliver(export, opts, &ctx, &mut outcome) => r,
                        lost = self.keep_lease(&export.name, run_id, opts.lease_ttl) => Err(Stop::record(lost)),
                    };
                    if let Err(e) = self.state.release(&export.name, run_id).await {
                        tracing::warn!(run_id, export = %export.name, error = %e, "could not release the lease; it expires by itself");
                    }
                    result
                }
                Ok(Claim::Held { holder, message_id, expires_at }) => {
                    tracing::warn!(run_id, export = %export.name, holder = %holder, holder_message_id = message_id.as_deref().unwrap_or("-"), "another run is delivering this export");
                    outcome.skipped = Some(Skip::Busy);
                    Err(Stop::quiet(Failure::with_class(
                        ErrorClass::Transient,
                        format!(
                            "export {} is being delivered by run {holder} (its lease runs until {} unless renewed); this run did nothing for it",
                            export.name,
                            expires_at.format("%Y-%m-%d %H:%M:%S UTC")
                        ),
                    )))
                }
                Err(e) => Err(Stop::quiet(e)),
            }
        };
        outcome.seconds = t0.elapsed().as_secs_f64();
        match result {
            Ok(()) => {
                tracing::info!(run_id, export = %export.name, status = outcome.status.as_str(), rows = outcome.rows, bytes = outcome.bytes, file = ?outcome.file, stages = %outcome.stages, "export finished");
            }
            Err(Stop { failure, record }) => {
                let msg = self.config.redact(&failure.to_string());
                tracing::error!(run_id, export = %export.name, error = %msg, class = failure.class().as_str(), "export failed");
                outcome.status = RunStatus::Failed;
                outcome.error = Some(msg.clone());
                outcome.error_class = Some(failure.class());
                if record && !opts.dry_run {
                    let rec = self.record(export, &ctx, RunStatus::Failed, &outcome, Some(msg));
                    if let Err(e) = self.state.append(&rec).await {
                        tracing::error!(run_id, export = %export.name, error = %self.config.redact(&e.to_string()), "could not record the failure in the metadata table");
                    }
                }
            }
        }
        outcome
    }

    fn record(&self, export: &ExportSpec, ctx: &RunCtx<'_>, status: RunStatus, o: &ExportOutcome, error: Option<String>) -> RunRecord {
        RunRecord {
            run_id: ctx.run_id.to_owned(),
            export_name: export.name.clone(),
            source_table: o.source.clone(),
            status,
            last_exported_value: o.window.hi.as_ref().map(CursorValue::canonical),
            cursor_type: o.window.hi.as_ref().map(|v| v.ty().sql_name().to_owned()),
            window_lo: o.window.lo.as_ref().map(CursorValue::canonical),
            rows_exported: o.rows,
            bytes: o.bytes,
            sha256: o.sha256.clone(),
            file_name: o.file.clone(),
            files: o.files.clone(),
            started_at: ctx.started_at,
            completed_at: Utc::now(),
            error_message: error,
            message_id: ctx.message_id.map(str::to_owned),
        }
    }

    /// Renews the export's lease every third of its lifetime; returns only if the lease is lost.
    async fn keep_lease(&self, export: &str, run_id: &str, ttl: Duration) -> Failure {
        loop {
            tokio::time::sleep(ttl / 3).await;
            match self.state.renew(export, run_id, ttl).await {
                Ok(true) => {}
                Ok(false) => {
                    return Failure::with_class(
                        ErrorClass::Transient,
                        format!(
                            "export {export}: the run's lease expired before it finished, so it stopped; the next run delivers these rows"
                        ),
                    )
                }
                Err(e) => tracing::warn!(run_id, export, error = %e, "could not renew the lease; trying again"),
            }
        }
    }

    /// When this run's message was already delivered for `export`, fills `o` from that record.
    async fn already_delivered(&self, export: &ExportSpec, opts: &RunOptions, o: &mut ExportOutcome) -> Result<bool, Failure> {
        let Some(message_id) = &opts.message_id else { return Ok(false) };
        let records = self.state.by_message(&export.name, message_id).await?;
        let Some(done) = records.iter().rev().find(|r| matches!(r.status, RunStatus::Success | RunStatus::Empty)) else {
            return Ok(false);
        };
        tracing::info!(export = %export.name, message_id, delivered_by = %done.run_id, "message already delivered; nothing to do");
        o.status = done.status;
        o.rows = done.rows_exported;
        o.bytes = done.bytes;
        o.file = done.file_name.clone();
        o.files = done.files.clone();
        o.sha256 = done.sha256.clone();
        o.skipped = Some(Skip::AlreadyDelivered { run_id: done.run_id.clone() });
        Ok(true)
    }

    /// Settles runs that stopped between their PENDING record and their outcome.
    async fn reconcile(&self, export: &ExportSpec, sink: &dyn Sink, outcome: &mut ExportOutcome) -> Result<(), Failure> {
        for pending in self.state.pending(&export.name).await? {
            // Records from before ferry listed files name one file and its size.
            let files: Vec<(String, u64)> = if pending.files.is_empty() {
                vec![(pending.file_name.clone().unwrap_or_default(), pending.bytes)]
            } else {
                pending.files.iter().map(|f| (f.name.clone(), f.bytes)).collect()
            };
            let mut found = Vec::new();
            for (name, bytes) in &files {
                if sink.stat(name).await? == Some(*bytes) {
                    found.push(name.as_str());
                }
            }
            let file = pending.file_name.clone().unwrap_or_default();
            let mut rec = pending.clone();
            rec.completed_at = Utc::now();
            if found.len() == files.len() {
                rec.status = RunStatus::Success;
                rec.error_message =
                    Some(format!("reconciled: {file} was found on the server with the recorded size after an interrupted run"));
            } else if found.is_empty() {
                rec.status = RunStatus::Failed;
                rec.error_message = Some(format!("interrupted before {file} was published; its rows are delivered again"));
            } else {
                rec.status = RunStatus::Failed;
                rec.error_message = Some(format!(
                    "interrupted while publishing: {} had been published, the other files had not; the rows are delivered again",
                    found.join(", ")
                ));
            }
            tracing::warn!(export = %export.name, run_id = %pending.run_id, file = %file, status = rec.status.as_str(), "reconciled an interrupted run");
            self.state.append(&rec).await?;
            outcome.reconciled.push(format!("{} {}", pending.run_id, rec.status.as_str()));
        }
        Ok(())
    }

    async fn connected_sink(&self, export: &ExportSpec) -> Result<Arc<dyn Sink>, Stop> {
        self.wiring.sink(export).await.map_err(Stop::record)
    }

    async fn deliver(&self, export: &ExportSpec, opts: &RunOptions, ctx: &RunCtx<'_>, o: &mut ExportOutcome) -> Result<(), Stop> {
        if !opts.dry_run {
            let sink = self.connected_sink(export).await?;
            self.reconcile(export, sink.as_ref(), o).await.map_err(Stop::record)?;
            if self.already_delivered(export, opts, o).await.map_err(Stop::quiet)? {
                return Ok(());
            }
        }
        let plan = self.plan_export(export, opts).await.map_err(Stop::record)?;
        o.stages.plan = ctx.started.elapsed();
        o.window = plan.window.clone();
        if plan.nothing_new {
            o.status = RunStatus::Empty;
            // An EMPTY record keeps the history complete; it never moves the watermark.
            if !opts.dry_run {
                let rec = self.record(export, ctx, RunStatus::Empty, o, None);
                self.state.append(&rec).await.map_err(Stop::quiet)?;
            }
            return Ok(());
        }
        let run_date = opts.run_date.format("%Y-%m-%d").to_string();
        let t = Instant::now();
        let Some(file) = export.file() else {
            return Err(Stop::record(Failure::with_class(
                ErrorClass::Permanent,
                format!(
                    "export {}: destination type {} loads tables, which this build cannot run yet",
                    export.name, export.destination.component.type_name
                ),
            )));
        };
        let source = self.wiring.source(export).map_err(Stop::record)?;
        let mut reader = source.read(export, &plan.window, &run_date).await.map_err(Stop::record)?;
        let mut st = Stages { plan: o.stages.plan, query: t.elapsed(), ..Stages::default() };
        let mut encoder =
            CsvEncoder::new(&reader.schema(), CsvOptions { delimiter: file.delimiter, header: file.header, compression: file.compression })
                .map_err(|e| Stop::record(Failure::with_class(ErrorClass::Permanent, format!("export {}: {e}", export.name))))?;
        let sink = if opts.dry_run { None } else { Some(self.connected_sink(export).await?) };
        let mode = match file.on_existing {
            OnExisting::Fail => PutMode::Create,
            OnExisting::Overwrite => PutMode::Overwrite,
        };
        let mut parts = Parts {
            sink: sink.as_deref(),
            mode,
            export: &export.name,
            file,
            at: plan.planned_at,
            current: None,
            sealed: Vec::new(),
            files: Vec::new(),
            sent: 0,
        };
        let t0 = Instant::now();
        let streamed: Result<(), Failure> = async {
            let t = Instant::now();
            parts.start().await?;
            st.upload += t.elapsed();
            let mut first = true;
            let mut first_page = true;
            loop {
                let t = Instant::now();
                let Some(batch) = reader.next_batch().await? else { break };
                if std::mem::take(&mut first_page) {
                    st.query += t.elapsed();
                } else {
                    st.read += t.elapsed();
                }
                let t = Instant::now();
                let mut uploading = Duration::ZERO;
                let view = encoder
                    .view(&batch)
                    .map_err(|e| Failure::with_class(ErrorClass::Permanent, format!("encoding rows of {}: {e}", export.name)))?;
                for row in 0..view.num_rows() {
                    let n = encoder.stage_row(&view, row) as u64;
                    if encoder.rows() > 0 && file.split.is_full(encoder.rows(), encoder.part_bytes(), n) {
                        let (tail, totals) = encoder.next_part();
                        let t = Instant::now();
                        parts.finish(&tail, totals).await?;
                        parts.start().await?;
                        uploading += t.elapsed();
                    }
                    if file.split.is_full(encoder.rows(), encoder.part_bytes(), n) {
                        // Even an empty file cannot take this row.
                        return Err(Failure::with_class(
                            ErrorClass::Permanent,
                            format!(
                                "export {}: a row of {n} bytes does not fit in a file of max_bytes_per_file = {} bytes (with the header); raise max_bytes_per_file",
                                export.name,
                                file.split.max_bytes.unwrap_or_default()
                            ),
                        ));
                    }
                    encoder.push_staged();
                }
                let chunk = (encoder.buffered() >= CHUNK).then(|| encoder.take());
                st.encode += t.elapsed().saturating_sub(uploading);
                st.upload += uploading;
                if let Some(chunk) = chunk {
                    let t = Instant::now();
                    parts.write(&chunk).await?;
                    st.upload += t.elapsed();
                    if first && sink.is_some() {
                        failpoint::hit("upload:during", &export.name).await?;
                        first = false;
                    }
                }
                if let Some(p) = self.progress {
                    p(Progress { export: &export.name, rows: parts.rows() + encoder.rows(), bytes: parts.sent, elapsed: t0.elapsed() });
                }
            }
            if sink.is_some() {
                failpoint::hit("upload:during", &export.name).await?;
            }
            let t = Instant::now();
            let (tail, totals) = encoder.next_part();
            st.encode += t.elapsed();
            let t = Instant::now();
            parts.finish(&tail, totals).await?;
            st.upload += t.elapsed();
            Ok(())
        }
        .await;
        o.stages = st;
        if let Err(e) = streamed {
            parts.abort().await;
            return Err(Stop::record(e));
        }
        o.rows = parts.rows();
        o.bytes = parts.files.iter().map(|f| f.bytes).sum();
        o.sha256 = match parts.files.as_slice() {
            [one] => Some(one.sha256.clone()),
            _ => None,
        };
        o.file = Some(parts.files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", "));
        o.files = parts.files.clone();
        if opts.dry_run {
            o.status = RunStatus::Success;
            return Ok(());
        }
        if let Err(e) = failpoint::hit("upload:after", &export.name).await {
            parts.abort().await;
            return Err(Stop::record(e));
        }
        let pending = self.record(export, ctx, RunStatus::Pending, o, None);
        let t = Instant::now();
        if let Err(e) = self.state.append(&pending).await {
            parts.abort().await;
            return Err(Stop::record(e));
        }
        o.stages.record = t.elapsed();
        // From here on a FAILED record would hide files that may be published: failures leave
        // the PENDING record for the next run to reconcile, unless the sink says for sure which
        // files it published.
        let t = Instant::now();
        parts.publish().await.map_err(Stop::record)?;
        o.stages.publish = t.elapsed();
        failpoint::hit("publish:after", &export.name).await.map_err(Stop::quiet)?;
        let done = self.record(export, ctx, RunStatus::Success, o, None);
        let t = Instant::now();
        let recorded = self.state.append(&done).await;
        o.stages.record += t.elapsed();
        recorded.map_err(|e| {
            Stop::quiet(Failure::with_class(
                e.class(),
                format!(
                    "{} delivered, but recording it failed ({e}); the next run reconciles it without sending the rows twice",
                    o.file.as_deref().unwrap_or_default()
                ),
            ))
        })?;
        o.status = RunStatus::Success;
        Ok(())
    }
}

/// More files than this in one run is a configuration mistake (limits far too small).
const MAX_FILES: usize = 10_000;

/// The files of one export run: the one being written and those written and verified, which
/// are published together only once the last one is verified.
struct Parts<'a> {
    /// `None` in a dry run: files are counted and named, nothing is written.
    sink: Option<&'a dyn Sink>,
    mode: PutMode,
    /// The export's name.
    export: &'a str,
    file: &'a FileSettings,
    at: DateTime<Utc>,
    current: Option<Box<dyn crate::Upload>>,
    sealed: Vec<Box<dyn crate::Upload>>,
    files: Vec<FileRecord>,
    /// Bytes handed to the sink so far, for progress.
    sent: u64,
}

impl Parts<'_> {
    fn next_name(&self) -> String {
        self.file.template.render(self.export, self.at, self.files.len() as u32 + 1)
    }

    fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }

    async fn start(&mut self) -> Result<(), Failure> {
        if self.files.len() >= MAX_FILES {
            return Err(Failure::with_class(
                ErrorClass::Permanent,
                format!(
                    "export {}: the window needs more than {MAX_FILES} files; raise max_rows_per_file or max_bytes_per_file",
                    self.export
                ),
            ));
        }
        if let Some(sink) = self.sink {
            self.current = Some(sink.begin(&self.next_name(), self.mode).await?);
        }
        Ok(())
    }

    async fn write(&mut self, chunk: &[u8]) -> Result<(), Failure> {
        self.sent += chunk.len() as u64;
        if let Some(u) = &mut self.current {
            u.write(chunk).await?;
        }
        Ok(())
    }

    /// Writes the file's last bytes and verifies it on the destination.
    async fn finish(&mut self, tail: &[u8], totals: crate::encode::Encoded) -> Result<(), Failure> {
        self.write(tail).await?;
        if let Some(mut upload) = self.current.take() {
            upload.seal().await?;
            self.sealed.push(upload);
        }
        let name = self.next_name();
        self.files.push(FileRecord { name, bytes: totals.bytes, rows: totals.rows, sha256: totals.sha256 });
        Ok(())
    }

    /// Removes every temporary file.
    async fn abort(&mut self) {
        for upload in self.current.take().into_iter().chain(self.sealed.drain(..)) {
            upload.abort().await;
        }
    }

    /// Publishes every file in order. When one fails, the rest are removed, and the error says
    /// which files were already published.
    async fn publish(&mut self) -> Result<(), Failure> {
        let mut published = Vec::new();
        let mut uploads = std::mem::take(&mut self.sealed).into_iter();
        while let Some(upload) = uploads.next() {
            let result = match upload.commit().await {
                Ok(p) => {
                    published.push(p.name);
                    failpoint::hit("publish:part", self.export).await
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {}
                Err(e) => {
                    for rest in uploads {
                        rest.abort().await;
                    }
                    if published.is_empty() {
                        return Err(e);
                    }
                    return Err(Failure::with_class(
                        e.class(),
                        format!("{e}; {} had already been published, and the next run delivers their rows again", published.join(", ")),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What every record of one export run shares.
struct RunCtx<'a> {
    run_id: &'a str,
    started_at: DateTime<Utc>,
    /// When the export started, lease included.
    started: Instant,
    message_id: Option<&'a str>,
}

/// Why an export stopped, and whether to append a FAILED record.
struct Stop {
    failure: Failure,
    record: bool,
}

impl Stop {
    fn record(failure: Failure) -> Self {
        Self { failure, record: true }
    }

    fn quiet(failure: Failure) -> Self {
        Self { failure, record: false }
    }
}
