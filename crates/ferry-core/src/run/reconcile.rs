//! Settling runs that stopped between their PENDING record and their outcome, and
//! recognising a redelivered trigger message.

use chrono::Utc;

use super::{ExportOutcome, RunOptions, Runner, Skip};
use crate::config::{ExportSpec, HourlyLoad, OnExisting, Shape, TableMode};
use crate::cursor::{CursorType, CursorValue};
use crate::roles::{RunRecord, RunStatus, Window};
use crate::{Failure, PublishError, PutMode, Sink};

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
                Shape::Table(_) => self.settle_load(export, &pending).await?,
            };
            tracing::warn!(export = %export.name, run_id = %pending.run_id, status = rec.status.as_str(), "reconciled an interrupted run");
            self.state.append(&rec).await?;
            outcome.reconciled.push(format!("{} {}", pending.run_id, rec.status.as_str()));
        }
        Ok(())
    }

    /// A file run is settled by rolling it forward from what the destination holds.
    ///
    /// For each recorded file, in order: its temporary file present with the recorded size →
    /// publish it; gone → it was published (only publishing takes a temporary file away, and
    /// a run never removes one a PENDING record names), whether or not the partner has since
    /// collected the final file. Every file published that way → SUCCESS. A temporary file with
    /// another size, a final file of another size after its temporary file went, or a publish
    /// the server refuses → FAILED with the reason, and the remaining temporary files are
    /// removed. A publish whose outcome is unknown leaves the record PENDING for the next run.
    async fn settle_files(&self, export: &ExportSpec, pending: &RunRecord) -> Result<RunRecord, Failure> {
        let sink = self.wiring.sink(export).await?;
        let mode = match export.file().map(|f| f.on_existing) {
            Some(OnExisting::Overwrite) => PutMode::Overwrite,
            _ => PutMode::Create,
        };
        let mut rec = pending.clone();
        if pending.files.is_empty() || pending.files.iter().any(|f| f.temp.is_none()) {
            rec.completed_at = Utc::now();
            return self.settle_by_final_names(sink.as_ref(), rec).await;
        }
        let mut found = Vec::new();
        let mut gone = Vec::new();
        let mut to_publish = Vec::new();
        let mut refused = None;
        for f in &pending.files {
            let temp = f.temp.as_deref().unwrap_or_default();
            match sink.stat(temp).await? {
                Some(n) if n == f.bytes => to_publish.push(f),
                Some(n) => {
                    refused = Some(format!("the temporary file of {} holds {n} bytes, not the {} recorded", f.name, f.bytes));
                    break;
                }
                None => match sink.stat(&f.name).await? {
                    Some(n) if n == f.bytes => found.push(f.name.as_str()),
                    None => gone.push(f.name.as_str()),
                    Some(n) => {
                        refused = Some(format!(
                            "{} holds {n} bytes, not the {} recorded, and its temporary file is gone; this run's file was replaced",
                            f.name, f.bytes
                        ));
                        break;
                    }
                },
            }
        }
        let mut published = Vec::new();
        if refused.is_none() {
            for f in &to_publish {
                match sink.publish(f.temp.as_deref().unwrap_or_default(), &f.name, mode).await {
                    Ok(()) => published.push(f.name.as_str()),
                    Err(PublishError::NotPublished(e)) => {
                        refused = Some(format!("publishing {} was refused: {e}", f.name));
                        break;
                    }
                    Err(PublishError::Unknown(e)) => {
                        return Err(Failure::with_class(
                            e.class(),
                            format!("finishing run {}: publishing {}: {e}; the next run tries again", pending.run_id, f.name),
                        ))
                    }
                }
            }
        }
        rec.completed_at = Utc::now();
        let mut said = Vec::new();
        if !published.is_empty() {
            said.push(format!("published {} from the verified temporary files", published.join(", ")));
        }
        if !found.is_empty() {
            said.push(format!("{} found on the server with the recorded size", found.join(", ")));
        }
        if !gone.is_empty() {
            said.push(format!(
                "{} no longer on the server and their temporary files gone: taken as published and collected by the partner",
                gone.join(", ")
            ));
        }
        match refused {
            None => {
                rec.status = RunStatus::Success;
                rec.error_message = Some(format!("reconciled after an interrupted run: {}", said.join("; ")));
            }
            Some(why) => {
                for f in &pending.files {
                    let temp = f.temp.as_deref().unwrap_or_default();
                    if !published.contains(&f.name.as_str()) {
                        if let Err(e) = sink.remove(temp).await {
                            tracing::warn!(export = %export.name, file = temp, error = %e, "could not remove a temporary file");
                        }
                    }
                }
                let done = published.iter().chain(&found).chain(&gone).copied().collect::<Vec<_>>();
                let done = if done.is_empty() { String::new() } else { format!("; {} had been delivered", done.join(", ")) };
                rec.status = RunStatus::Failed;
                rec.error_message = Some(format!("interrupted run could not be finished: {why}{done}; the rows are delivered again"));
            }
        }
        Ok(rec)
    }

    /// Records from before ferry recorded temporary names: settled by the final names alone.
    async fn settle_by_final_names(&self, sink: &dyn Sink, mut rec: RunRecord) -> Result<RunRecord, Failure> {
        let files: Vec<(String, u64)> = if rec.files.is_empty() {
            vec![(rec.file_name.clone().unwrap_or_default(), rec.bytes)]
        } else {
            rec.files.iter().map(|f| (f.name.clone(), f.bytes)).collect()
        };
        let mut found = Vec::new();
        for (name, bytes) in &files {
            if sink.stat(name).await? == Some(*bytes) {
                found.push(name.as_str());
            }
        }
        let file = rec.file_name.clone().unwrap_or_default();
        if found.len() == files.len() {
            rec.status = RunStatus::Success;
            rec.error_message = Some(format!("reconciled: {file} was found on the server with the recorded size after an interrupted run"));
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

    /// Removes this export's temporary files older than the lease: left by runs that were
    /// killed before their PENDING record (which names the files it needs, and is settled
    /// before this runs).
    pub(super) async fn sweep(&self, export: &ExportSpec, ttl: std::time::Duration, o: &mut ExportOutcome) -> Result<(), Failure> {
        let sink = self.wiring.sink(export).await?;
        let cutoff = Utc::now() - chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let mut removed = 0;
        for left in sink.leftovers().await? {
            if !crate::sink::is_temp_of(&export.name, &left.name) || left.modified.is_none_or(|m| m > cutoff) {
                continue;
            }
            sink.remove(&left.name).await?;
            tracing::info!(export = %export.name, file = %left.name, bytes = left.bytes, "removed a stale temporary file");
            removed += 1;
        }
        if removed > 0 {
            o.reconciled.push(format!("removed {removed} stale temporary file(s)"));
        }
        Ok(())
    }

    /// A table run is settled by whether its load (named by the run id) committed.
    async fn settle_load(&self, export: &ExportSpec, pending: &RunRecord) -> Result<RunRecord, Failure> {
        let table = self.wiring.table(export).await?;
        let mut rec = pending.clone();
        rec.completed_at = Utc::now();
        if table.committed(&pending.run_id).await? {
            rec.status = RunStatus::Success;
            rec.error_message = Some(format!("reconciled: load {} had committed before the run was interrupted", pending.run_id));
            if let Shape::Table(TableMode::Hourly(HourlyLoad { delete_from_source: true, .. })) = &export.destination.shape {
                let note = self.delete_settled_hour(export, pending).await;
                rec.error_message = rec.error_message.map(|m| format!("{m}; {note}"));
            }
        } else {
            rec.status = RunStatus::Failed;
            rec.error_message = Some(format!("interrupted before load {} committed; its rows are loaded again", pending.run_id));
        }
        Ok(rec)
    }

    /// The delete of an hour whose load committed before its run stopped: the rows the load
    /// read, if the source still holds exactly that many for the hour (none when an earlier
    /// delete went through, more when rows arrived late: then nothing is deleted and they stay).
    /// The hour is loaded either way; the answer is a note for its record.
    async fn delete_settled_hour(&self, export: &ExportSpec, pending: &RunRecord) -> String {
        let window = (|| {
            let ty = CursorType::from_bigquery(pending.cursor_type.as_deref()?)?;
            let lo = CursorValue::parse(ty, pending.window_lo.as_deref()?).ok()?;
            let hi = CursorValue::parse(ty, pending.last_exported_value.as_deref()?).ok()?;
            Some(Window::between(Some(lo), Some(hi)))
        })();
        let Some(window) = window else { return "the hour's window is not in its record; nothing deleted from the source".into() };
        let source = match self.wiring.source(export) {
            Ok(s) => s,
            Err(e) => return format!("nothing deleted from the source ({e})"),
        };
        match source.delete(export, &window, pending.rows_exported).await {
            Ok(n) => format!("deleted {n} rows of the hour from the source"),
            Err(e) => format!("rows of the hour stay in the source ({})", self.config.redact(&e.failure.to_string())),
        }
    }
}
