//! One run: for each export, plan → lease → reconcile → read → write → record, then notify.
//! Written once for every transfer: generic over the export's [`Source`] and the two shapes of
//! destination, files ([`file`]) and tables ([`table`]).
//!
//! The modules: [`plan`] (windows and watermarks), [`reconcile`] (settling interrupted runs),
//! [`file`] and [`table`] (writing), [`report`] (outcomes, the run report, notifying).
//!
//! For files, delivery and the watermark move together through the metadata table:
//! 1. Rows `(lo, hi]` stream into temporary files on the server (one, or one per part of a
//!    split export); each is closed and its size verified.
//! 2. The run confirms it still holds the export's lease; a PENDING record stores every file's
//!    final and temporary name, size, row count and SHA-256, and `hi`.
//! 3. The sink publishes the files under their final names, in order.
//! 4. A SUCCESS record moves the watermark to `hi`.
//!
//! A failure before 2 removes the temporary files and records FAILED: the watermark stays, and
//! the next run reads the same rows again. In 3 the sink reports one of three outcomes; only a
//! definite "not published" of the first file records FAILED. Any other failure between 2 and 4
//! leaves the PENDING record and the temporary files; the next run rolls it forward first
//! ([`reconcile`]): it publishes the verified temporary files that are left, counts a file whose
//! temporary file is gone as published, and records SUCCESS, so no row is read twice.
//!
//! A table destination keeps the same order with one load instead of files: rows go into a
//! load that readers cannot see, PENDING names the load (the run id), the load commits
//! atomically, SUCCESS moves the watermark; reconcile asks the table whether a PENDING run's
//! load committed.

pub mod dispatch;
mod file;
mod hourly;
mod plan;
mod reconcile;
mod report;
mod staged;
mod table;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

pub use plan::ExportPlan;
use report::{destinations, names_of};
pub use report::{notify, ExportOutcome, Progress, RunReport, Skip, Stages};
pub use staged::{SizeMismatch, SyncReport, Transfer};

use crate::config::{Config, ExportSpec, Shape};
use crate::cursor::CursorValue;
use crate::roles::{Claim, RunRecord, RunStatus, Source, StateStore};
use crate::table::TableSink;
use crate::{ErrorClass, Failure, Notifier, Sink};

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Only these exports (all enabled ones when `None`).
    pub exports: Option<Vec<String>>,
    /// Ignore the watermark and deliver everything up to `hi`.
    pub full: bool,
    /// Plan and read, but deliver and record nothing.
    pub dry_run: bool,
    /// The date `{date}` in queries stands for; `None`: today in the time zone of the
    /// schedules that run the export (UTC when none does), see [`RunOptions::date_for`].
    pub run_date: Option<NaiveDate>,
    /// The triggering Pub/Sub message, recorded with each run.
    pub message_id: Option<String>,
    /// Run id; a fresh one when `None`.
    pub run_id: Option<String>,
    /// The Cloud Run Job execution this run is part of (`CLOUD_RUN_EXECUTION`), recorded with
    /// each run.
    pub execution: Option<String>,
    /// How long an export's lease lasts without renewal; renewed every third of it while the
    /// export runs. A run that dies holds up the next one for at most this long.
    pub lease_ttl: Duration,
    /// How long to keep trying when another run holds an export's lease (0: give up at once).
    pub lease_wait: Duration,
    /// Copy the objects under this path instead of reading the export's source (`ferry
    /// transfer`, `POST /transfer`).
    pub transfer: Option<Transfer>,
    /// Where an incremental export's first window starts when it has no watermark yet (a job
    /// taken over from another tool); `None`: at the beginning.
    pub first_start: Option<FirstStart>,
}

/// Where an incremental export's first window starts, as text in (or convertible to) the
/// cursor's type: a timestamp without a zone is UTC, a date is its midnight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstStart {
    /// Rows whose cursor is greater than this (the other tool's last synced value).
    After(String),
    /// Rows whose cursor is this or later (a historical start date).
    From(String),
}

impl RunOptions {
    /// All exports, incremental, today (in each export's schedule time zone).
    pub fn new() -> Self {
        Self {
            exports: None,
            full: false,
            dry_run: false,
            run_date: None,
            message_id: None,
            run_id: None,
            execution: None,
            lease_ttl: Duration::from_secs(600),
            lease_wait: Duration::ZERO,
            transfer: None,
            first_start: None,
        }
    }

    /// The date `{date}` stands for in a run of `export` at `now`: the date given, else
    /// today in the export's schedule time zone.
    pub fn date_for(&self, export: &ExportSpec, now: DateTime<Utc>) -> NaiveDate {
        self.run_date.unwrap_or_else(|| now.with_timezone(&export.date_zone).date_naive())
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        Self::new()
    }
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
    /// The table of the export's table destination.
    async fn table(&self, export: &ExportSpec) -> Result<Arc<dyn TableSink>, Failure> {
        Err(Failure::with_class(
            ErrorClass::Permanent,
            format!(
                "export {}: destination type {} has no table loader in this build",
                export.name, export.destination.component.type_name
            ),
        ))
    }
    /// The staged source of an export whose source writes its own files (`bigquery_export`).
    fn staged(&self, export: &ExportSpec) -> Result<Box<dyn crate::StagedSource>, Failure> {
        Err(Failure::with_class(
            ErrorClass::Permanent,
            format!("export {}: source type {} does not write staged files in this build", export.name, export.source.type_name),
        ))
    }
    /// The staging bucket (`staging`).
    async fn staging(&self) -> Result<Arc<dyn crate::Staging>, Failure> {
        Err(Failure::with_class(ErrorClass::Permanent, "no staging bucket in this build"))
    }
    /// Closes every connection opened.
    async fn close(&self);
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
                // Up to `parallel_exports` at once, each under its own lease; reported in
                // the config's order.
                use futures::stream::StreamExt;
                type Run<'r> = std::pin::Pin<Box<dyn std::future::Future<Output = ExportOutcome> + Send + 'r>>;
                let run_id = &run_id;
                let runs: Vec<Run<'_>> =
                    exports.into_iter().map(|export| Box::pin(self.run_export(export, opts, run_id)) as Run<'_>).collect();
                outcomes = futures::stream::iter(runs).buffered(self.config.parallel_exports.max(1)).collect().await;
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
            execution: opts.execution.clone(),
        };
        notify(self.config, &self.notifiers, &mut report).await;
        report
    }

    async fn run_export(&self, export: &ExportSpec, opts: &RunOptions, run_id: &str) -> ExportOutcome {
        let t0 = Instant::now();
        let started_at = Utc::now();
        let mut outcome = ExportOutcome::new(export.name.clone(), export.source.describe.clone());
        let mut lease = None;
        let result = if opts.dry_run {
            let ctx = RunCtx {
                run_id,
                started_at,
                started: t0,
                message_id: opts.message_id.as_deref(),
                execution: opts.execution.as_deref(),
                lease: None,
            };
            self.deliver(export, opts, &ctx, &mut outcome).await
        } else {
            match self
                .state
                .acquire(&export.name, run_id, opts.message_id.as_deref(), opts.lease_ttl, opts.lease_wait.min(opts.lease_ttl / 2))
                .await
            {
                Ok(Claim::Acquired) => {
                    let held = lease.insert(Lease::new(self.state, &export.name, run_id, opts.lease_ttl));
                    let ctx = RunCtx {
                        run_id,
                        started_at,
                        started: t0,
                        message_id: opts.message_id.as_deref(),
                        execution: opts.execution.as_deref(),
                        lease: Some(held),
                    };
                    // The lease is renewed alongside the delivery, which is never dropped
                    // mid-call: a lost lease is noticed where stopping is safe (see `Lease`).
                    tokio::select! {
                        biased;
                        r = self.deliver(export, opts, &ctx, &mut outcome) => r,
                        never = held.keep() => match never {},
                    }
                }
                Ok(Claim::Held { holder, message_id, expires_at }) => {
                    let until = expires_at.format("%Y-%m-%d %H:%M:%S UTC");
                    // In a job execution, a holder of the same message is a second execution
                    // (a redelivery started it before the first was recorded) or an attempt of
                    // this task that died: it delivers and reports, unless it is dead, and then a
                    // later retry of this task takes over once the lease has expired.
                    let why = if opts.execution.is_some() && message_id.is_some() && message_id == opts.message_id {
                        tracing::info!(run_id, export = %export.name, holder = %holder, "this message is being delivered by another run; trying again later");
                        outcome.skipped = Some(Skip::SameMessage { holder: holder.clone() });
                        format!("export {}: run {holder} holds the lease for this same message until {until} unless renewed", export.name)
                    } else {
                        tracing::warn!(run_id, export = %export.name, holder = %holder, holder_message_id = message_id.as_deref().unwrap_or("-"), "another run is delivering this export");
                        outcome.skipped = Some(Skip::Busy);
                        format!("export {} is being delivered by run {holder} (its lease runs until {until} unless renewed)", export.name)
                    };
                    Err(Stop::quiet(Failure::with_class(ErrorClass::Transient, format!("{why}; this run did nothing for it"))))
                }
                Err(e) => Err(Stop::quiet(e)),
            }
        };
        let ctx = RunCtx {
            run_id,
            started_at,
            started: t0,
            message_id: opts.message_id.as_deref(),
            execution: opts.execution.as_deref(),
            lease: None,
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
        // Released only after the outcome is recorded: the next run must see this run's record.
        if lease.is_some() {
            if let Err(e) = self.state.release(&export.name, run_id).await {
                tracing::warn!(run_id, export = %export.name, error = %e, "could not release the lease; it expires by itself");
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
            null_cursor_rows: o.null_cursor_rows,
            null_arrival_hi: match &o.window.nulls {
                crate::roles::NullRows::Arrived { hi, .. } => Some(crate::text::format_timestamp(*hi)),
                _ => None,
            },
            execution: ctx.execution.map(str::to_owned),
        }
    }

    async fn connected_sink(&self, export: &ExportSpec) -> Result<Arc<dyn Sink>, Stop> {
        self.wiring.sink(export).await.map_err(Stop::record)
    }

    async fn deliver(&self, export: &ExportSpec, opts: &RunOptions, ctx: &RunCtx<'_>, o: &mut ExportOutcome) -> Result<(), Stop> {
        if !opts.dry_run {
            // The destination is reached first, even when there turns out to be nothing new:
            // wrong credentials or an untrusted host fail every run, not only runs with rows.
            match &export.destination.shape {
                Shape::File(_) => drop(self.connected_sink(export).await?),
                Shape::Table(_) => drop(self.wiring.table(export).await.map_err(Stop::record)?),
            }
            self.reconcile(export, o).await.map_err(Stop::record)?;
            if let (Shape::File(_), Some(lease)) = (&export.destination.shape, ctx.lease) {
                // Housekeeping only: a server that does not let ferry list or remove files
                // (some partners allow writing alone) must not stop deliveries.
                if let Err(e) = self.sweep(export, lease.ttl, o).await {
                    tracing::warn!(run_id = ctx.run_id, export = %export.name, error = %self.config.redact(&e.to_string()), "could not look for stale temporary files");
                }
            }
            if self.already_delivered(export, opts, o).await.map_err(Stop::quiet)? {
                return Ok(());
            }
            if let Some(transfer) = &opts.transfer {
                return self.deliver_transfer(export, transfer, ctx, o).await;
            }
        }
        if let Shape::Table(crate::config::TableMode::Hourly(hourly)) = &export.destination.shape {
            return self.deliver_hours(export, hourly, opts, ctx, o).await;
        }
        let plan = self.plan_export(export, opts).await.map_err(Stop::record)?;
        o.stages.plan = ctx.started.elapsed();
        o.window = plan.window.clone();
        o.null_cursor_rows = plan.null_cursor_rows;
        if let Some(e) = plan.null_cursor_failure(export) {
            return Err(Stop::record(e));
        }
        if plan.nothing_new {
            o.status = RunStatus::Empty;
            // An EMPTY record keeps the history complete; it never moves the watermark.
            if !opts.dry_run {
                let rec = self.record(export, ctx, RunStatus::Empty, o, None);
                self.state.append(&rec).await.map_err(Stop::quiet)?;
            }
            return Ok(());
        }
        if let (Some(_), Shape::File(file)) = (&export.source.staged, &export.destination.shape) {
            return self.deliver_staged(export, file, opts, ctx, &plan, o).await;
        }
        let run_date = plan.run_date.format("%Y-%m-%d").to_string();
        let t = Instant::now();
        let source = self.wiring.source(export).map_err(Stop::record)?;
        let reader = source.read(export, &plan.window, &run_date).await.map_err(Stop::record)?;
        o.stages.query = t.elapsed();
        match &export.destination.shape {
            Shape::File(file) => self.deliver_files(export, file, opts, ctx, &plan, reader, o).await,
            Shape::Table(_) => self.deliver_table(export, opts, ctx, reader, o, None).await,
        }
    }
}

/// What every record of one export run shares.
pub(super) struct RunCtx<'a> {
    run_id: &'a str,
    started_at: DateTime<Utc>,
    /// When the export started, lease included.
    started: Instant,
    message_id: Option<&'a str>,
    execution: Option<&'a str>,
    /// The export's lease; `None` in a dry run.
    lease: Option<&'a Lease<'a>>,
}

/// A lease held by this run, renewed every third of its lifetime by [`Lease::keep`] while the
/// export runs.
///
/// Losing it never interrupts a call in flight: a run stops at the next point where stopping
/// is safe, before anything is published: between batches ([`Lease::held`]) and right before
/// its PENDING record, where [`Lease::confirm`] renews it and stops the run unless the store
/// confirms this run still holds it.
pub(super) struct Lease<'a> {
    state: &'a dyn StateStore,
    export: &'a str,
    holder: &'a str,
    ttl: Duration,
    lost: AtomicBool,
    /// When the store last confirmed the lease.
    renewed: Mutex<Instant>,
}

impl<'a> Lease<'a> {
    fn new(state: &'a dyn StateStore, export: &'a str, holder: &'a str, ttl: Duration) -> Self {
        Self { state, export, holder, ttl, lost: AtomicBool::new(false), renewed: Mutex::new(Instant::now()) }
    }

    /// Renews the lease every third of its lifetime; marks it lost when the store says another
    /// run may hold it, or when no renewal succeeded for a whole lifetime. Never returns.
    async fn keep(&self) -> std::convert::Infallible {
        loop {
            tokio::time::sleep(self.ttl / 3).await;
            // A failed renewal is tried again a third of a lifetime later, until the lease is lost.
            let _ = self.renew().await;
            if self.lost.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
        }
    }

    /// One renewal; `Err` once the lease is lost.
    async fn renew(&self) -> Result<(), Failure> {
        if !self.lost.load(Ordering::SeqCst) {
            match self.state.renew(self.export, self.holder, self.ttl).await {
                Ok(true) => {
                    *self.renewed.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                    return Ok(());
                }
                Ok(false) => self.lost.store(true, Ordering::SeqCst),
                Err(e) => {
                    let since = self.renewed.lock().unwrap_or_else(|e| e.into_inner()).elapsed();
                    tracing::warn!(run_id = self.holder, export = self.export, error = %e, "could not renew the lease");
                    if since < self.ttl {
                        return Err(self.lost_failure(Some(&e)));
                    }
                    self.lost.store(true, Ordering::SeqCst);
                }
            }
        }
        Err(self.lost_failure(None))
    }

    fn lost_failure(&self, cause: Option<&Failure>) -> Failure {
        let cause = cause.map(|e| format!(" ({e})")).unwrap_or_default();
        Failure::with_class(
            ErrorClass::Transient,
            format!(
                "export {}: the run could not confirm its lease{cause}, so it stopped before publishing; the next run delivers these rows",
                self.export
            ),
        )
    }

    /// `Err` once the lease is known to be lost.
    pub(super) fn held(&self) -> Result<(), Failure> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(self.lost_failure(None));
        }
        Ok(())
    }

    /// Renews the lease now; `Err` unless the store confirms this run holds it. Called right
    /// before a run records PENDING and publishes.
    pub(super) async fn confirm(&self) -> Result<(), Failure> {
        crate::failpoint::hit("lease:confirm", self.export).await?;
        self.renew().await
    }
}

/// Why an export stopped, and whether to append a FAILED record.
pub(super) struct Stop {
    failure: Failure,
    record: bool,
}

impl Stop {
    pub(super) fn record(failure: Failure) -> Self {
        Self { failure, record: true }
    }

    pub(super) fn quiet(failure: Failure) -> Self {
        Self { failure, record: false }
    }
}
