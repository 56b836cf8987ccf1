//! Writing a window to a table destination: one named load, committed atomically between the
//! PENDING and SUCCESS records.

use std::time::Instant;

use super::{ExportOutcome, Progress, RunCtx, RunOptions, Runner, Stop};
use crate::config::ExportSpec;
use crate::cursor::CursorValue;
use crate::roles::{BatchReader, DeleteFailure, RunStatus, Source};
use crate::Failure;

/// One hour of an hourly load: its first instant, and the source to delete its rows from
/// once the table holds them (`delete_from_source`).
pub(super) struct Hour<'a> {
    pub start: CursorValue,
    pub delete_from: Option<&'a dyn Source>,
}

impl Runner<'_> {
    /// Loads the window into the export's table: rows go into a load named by the run id, a
    /// PENDING record names it, the load commits, and a SUCCESS record moves the watermark. A
    /// dry run reads and counts the rows and loads nothing.
    ///
    /// With `hour`, the load replaces that hour of the table; with its `delete_from`, the
    /// hour's rows are then deleted from the source (exactly as many as the table holds) before
    /// SUCCESS is recorded. A delete that certainly deleted nothing is recorded FAILED, so the
    /// next run loads the hour again (idempotent) and deletes then; one that may have deleted
    /// leaves the PENDING record for the next run to settle without loading the hour again.
    pub(super) async fn deliver_table(
        &self,
        export: &ExportSpec,
        opts: &RunOptions,
        ctx: &RunCtx<'_>,
        mut reader: Box<dyn BatchReader>,
        o: &mut ExportOutcome,
        hour: Option<Hour<'_>>,
    ) -> Result<(), Stop> {
        let table = if opts.dry_run { None } else { Some(self.wiring.table(export).await.map_err(Stop::record)?) };
        let mut load = match (&table, &hour) {
            (Some(t), None) => Some(t.begin(ctx.run_id, reader.schema()).await.map_err(Stop::record)?),
            (Some(t), Some(h)) => Some(t.begin_hour(ctx.run_id, reader.schema(), &h.start).await.map_err(Stop::record)?),
            (None, _) => None,
        };
        let t0 = Instant::now();
        let written: Result<(), Failure> = async {
            loop {
                let t = Instant::now();
                let Some(batch) = reader.next_batch().await? else { break };
                if let Some(lease) = ctx.lease {
                    lease.held()?;
                }
                o.stages.read += t.elapsed();
                let t = Instant::now();
                if let Some(load) = &mut load {
                    load.write(&batch).await?;
                }
                o.stages.upload += t.elapsed();
                o.rows += batch.num_rows() as u64;
                if let Some(p) = self.progress {
                    p(Progress { export: &export.name, rows: o.rows, bytes: 0, elapsed: t0.elapsed() });
                }
            }
            Ok(())
        }
        .await;
        let Some(load) = load else {
            written.map_err(Stop::record)?;
            o.status = RunStatus::Success;
            return Ok(());
        };
        if let Err(e) = written {
            load.abort().await;
            return Err(Stop::record(e));
        }
        // The lease is confirmed and the PENDING record written at once: a PENDING record of
        // a run that then stops is settled by the next run as not committed, and nothing is
        // committed before both are done.
        let t = Instant::now();
        let pending = self.record(export, ctx, RunStatus::Pending, o, None);
        let confirm = async {
            match ctx.lease {
                Some(lease) => lease.confirm().await,
                None => Ok(()),
            }
        };
        let (confirmed, recorded) = tokio::join!(confirm, self.state.append(&pending));
        if let Err(e) = confirmed.and(recorded) {
            load.abort().await;
            return Err(Stop::record(e));
        }
        o.stages.record = t.elapsed();
        // From here on a FAILED record could hide a load that committed: failures leave the
        // PENDING record for the next run to settle by asking the table.
        let t = Instant::now();
        let loaded = load.commit().await.map_err(Stop::quiet)?;
        o.stages.publish = t.elapsed();
        if loaded != o.rows {
            return Err(Stop::quiet(Failure::with_class(
                crate::ErrorClass::Permanent,
                format!("export {}: the table took {loaded} rows of the {} read; the next run settles the load", export.name, o.rows),
            )));
        }
        let mut note = None;
        if let Some(source) = hour.and_then(|h| h.delete_from) {
            let t = Instant::now();
            match source.delete(export, &o.window, loaded).await {
                Ok(n) => note = Some(format!("deleted {n} rows of the hour from the source after the table held all {loaded}")),
                // Nothing was deleted: FAILED, so that the next run loads the hour again (its
                // rows are all still in the source) and deletes then.
                Err(DeleteFailure { failure, maybe_deleted: false }) => {
                    return Err(Stop::record(Failure::with_class(
                        failure.class(),
                        format!(
                            "the hour's {loaded} rows are loaded, but deleting them from the source failed ({failure}); \
                             nothing was deleted, and the next run loads the hour again and deletes then"
                        ),
                    )))
                }
                // The rows may be gone from the source: the hour must never be loaded again
                // from it. The PENDING record stays; the next run settles the load as committed
                // (SUCCESS) and deletes the hour's rows only if exactly as many are still there.
                Err(DeleteFailure { failure, maybe_deleted: true }) => {
                    return Err(Stop::quiet(Failure::with_class(
                        failure.class(),
                        format!(
                            "the hour's {loaded} rows are loaded; whether deleting them from the source committed is unknown \
                             ({failure}); the next run records the hour as loaded and does not load it again"
                        ),
                    )))
                }
            }
            o.stages.publish += t.elapsed();
        }
        let done = self.record(export, ctx, RunStatus::Success, o, note);
        let t = Instant::now();
        self.state.append(&done).await.map_err(|e| {
            Stop::quiet(Failure::with_class(
                e.class(),
                format!("rows loaded, but recording it failed ({e}); the next run settles the load without loading the rows twice"),
            ))
        })?;
        o.stages.record += t.elapsed();
        o.status = RunStatus::Success;
        Ok(())
    }
}
