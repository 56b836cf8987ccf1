//! Writing a window to a table destination: one named load, committed atomically between the
//! PENDING and SUCCESS records.

use std::time::Instant;

use super::{ExportOutcome, Progress, RunCtx, RunOptions, Runner, Stop};
use crate::config::ExportSpec;
use crate::roles::{BatchReader, RunStatus};
use crate::Failure;

impl Runner<'_> {
    /// Loads the window into the export's table: rows go into a load named by the run id, a
    /// PENDING record names it, the load commits, and a SUCCESS record moves the watermark. A
    /// dry run reads and counts the rows and loads nothing.
    pub(super) async fn deliver_table(
        &self,
        export: &ExportSpec,
        opts: &RunOptions,
        ctx: &RunCtx<'_>,
        mut reader: Box<dyn BatchReader>,
        o: &mut ExportOutcome,
    ) -> Result<(), Stop> {
        let table = if opts.dry_run { None } else { Some(self.wiring.table(export).await.map_err(Stop::record)?) };
        let mut load = match &table {
            Some(t) => Some(t.begin(ctx.run_id, reader.schema()).await.map_err(Stop::record)?),
            None => None,
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
        let confirmed = match (written, ctx.lease) {
            (Ok(()), Some(lease)) => lease.confirm().await,
            (written, _) => written,
        };
        if let Err(e) = confirmed {
            load.abort().await;
            return Err(Stop::record(e));
        }
        let t = Instant::now();
        let pending = self.record(export, ctx, RunStatus::Pending, o, None);
        if let Err(e) = self.state.append(&pending).await {
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
        let done = self.record(export, ctx, RunStatus::Success, o, None);
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
