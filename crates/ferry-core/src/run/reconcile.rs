//! Settling runs that stopped between their PENDING record and their outcome, and
//! recognising a redelivered trigger message.

use chrono::Utc;

use super::{ExportOutcome, RunOptions, Runner, Skip};
use crate::config::{ExportSpec, Shape};
use crate::roles::{RunRecord, RunStatus};
use crate::Failure;

impl Runner<'_> {
    /// When this run's message was already delivered for `export`, fills `o` from that record.
    pub(super) async fn already_delivered(&self, export: &ExportSpec, opts: &RunOptions, o: &mut ExportOutcome) -> Result<bool, Failure> {
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
    pub(super) async fn reconcile(&self, export: &ExportSpec, outcome: &mut ExportOutcome) -> Result<(), Failure> {
        let pending = self.state.pending(&export.name).await?;
        if pending.is_empty() {
            return Ok(());
        }
        for pending in pending {
            let rec = match &export.destination.shape {
                Shape::File(_) => self.settle_files(export, &pending).await?,
                Shape::Table => self.settle_load(export, &pending).await?,
            };
            tracing::warn!(export = %export.name, run_id = %pending.run_id, status = rec.status.as_str(), "reconciled an interrupted run");
            self.state.append(&rec).await?;
            outcome.reconciled.push(format!("{} {}", pending.run_id, rec.status.as_str()));
        }
        Ok(())
    }

    /// A file run is settled by what the destination holds under the recorded names.
    async fn settle_files(&self, export: &ExportSpec, pending: &RunRecord) -> Result<RunRecord, Failure> {
        let sink = self.wiring.sink(export).await?;
        {
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
            Ok(rec)
        }
    }

    /// A table run is settled by whether its load (named by the run id) committed.
    async fn settle_load(&self, export: &ExportSpec, pending: &RunRecord) -> Result<RunRecord, Failure> {
        let table = self.wiring.table(export).await?;
        let mut rec = pending.clone();
        rec.completed_at = Utc::now();
        if table.committed(&pending.run_id).await? {
            rec.status = RunStatus::Success;
            rec.error_message = Some(format!("reconciled: load {} had committed before the run was interrupted", pending.run_id));
        } else {
            rec.status = RunStatus::Failed;
            rec.error_message = Some(format!("interrupted before load {} committed; its rows are loaded again", pending.run_id));
        }
        Ok(rec)
    }
}
