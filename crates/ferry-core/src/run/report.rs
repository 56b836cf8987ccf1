//! What a run reports: each export's outcome with its time by stage, the run report, and
//! sending it to the notifiers.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::RunOptions;
use crate::config::Config;
use crate::roles::{FileRecord, NullRows, RunStatus, Window};
use crate::{ErrorClass, Notifier};

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
    /// Rows whose cursor was NULL at plan time; an incremental run leaves them out (see
    /// `null_cursor`). `None` without a cursor column or before planning.
    pub null_cursor_rows: Option<u64>,
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
    /// In a job execution: run `holder`, triggered by the same message, holds the export's
    /// lease: a second execution started by a redelivery before the first was recorded, or an
    /// earlier attempt of this task that died. FAILED so that the task is tried again (and takes
    /// over once a dead holder's lease expires), but not notified: a live holder reports the
    /// message's outcome itself.
    SameMessage { holder: String },
}

impl ExportOutcome {
    /// An outcome that has not got anywhere yet: FAILED until the export says otherwise.
    pub(super) fn new(export: String, source: String) -> Self {
        Self {
            export,
            source,
            status: RunStatus::Failed,
            window: Window::between(None, None),
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
            null_cursor_rows: None,
        }
    }
}

impl ExportOutcome {
    /// What this run did about rows whose cursor is NULL, in one sentence for summaries and
    /// notifications; `None` when there were none.
    pub fn null_cursor_note(&self) -> Option<String> {
        let n = self.null_cursor_rows.filter(|n| *n > 0)?;
        let rows = if n == 1 { "1 row has".to_owned() } else { format!("{n} rows have") };
        Some(match &self.window.nulls {
            NullRows::Included => format!("{rows} a NULL cursor; this full export read them too"),
            NullRows::Excluded => {
                format!("{rows} a NULL cursor and are not delivered by incremental runs (deliver them with a full export)")
            }
            NullRows::Arrived { column, .. } => {
                format!("{rows} a NULL cursor; each is delivered once, by the run whose window of {column} holds its value")
            }
        })
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
    /// The Cloud Run Job execution the run ran in (`CLOUD_RUN_EXECUTION`).
    pub execution: Option<String>,
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
            execution: opts.execution.clone(),
        }
    }
}

/// The names of the exports `opts` selects (unknown names included).
pub(super) fn names_of(opts: &RunOptions, config: &Config) -> Vec<String> {
    match &opts.exports {
        Some(names) => names.clone(),
        None => config.exports.iter().filter(|e| e.enabled).map(|e| e.name.clone()).collect(),
    }
}

/// The distinct destinations of the exports named, for reports: `sftp://host:22/upload`.
pub(super) fn destinations(config: &Config, names: &[String]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for x in config.exports.iter().filter(|x| names.contains(&x.name)) {
        if !seen.contains(&x.destination.component.describe.as_str()) {
            seen.push(&x.destination.component.describe);
        }
    }
    seen.join(", ")
}

/// Sends `report` through every notifier, unless it is a dry run. A failing channel is logged
/// and listed in `report.notify_errors`; it never changes an export's outcome.
pub async fn notify(config: &Config, notifiers: &[Box<dyn Notifier>], report: &mut RunReport) {
    // A redelivery, or a run that found every export busy, changed nothing worth a message;
    // except a busy export in a job execution: its message is acknowledged, and once Cloud Run
    // has no retries left, nothing else would say that it was not delivered.
    let busy_in_execution = report.execution.is_some() && report.outcomes.iter().any(|o| o.skipped == Some(Skip::Busy));
    if report.dry_run || (!report.outcomes.is_empty() && report.outcomes.iter().all(|o| o.skipped.is_some()) && !busy_in_execution) {
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
