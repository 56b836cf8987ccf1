//! Writing a window to a file destination: the encoder, the name template and the
//! Sink/Upload protocol (temporary names, verify every file, then publish them all).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::{ExportOutcome, ExportPlan, Progress, RunCtx, RunOptions, Runner, Stages, Stop};
use crate::config::{ExportSpec, FileSettings, OnExisting};
use crate::encode::{CsvEncoder, CsvOptions};
use crate::roles::{BatchReader, FileRecord, RunStatus};
use crate::{failpoint, ErrorClass, Failure, PutMode, Sink};

const CHUNK: usize = 1 << 20;

impl Runner<'_> {
    /// Streams the window into files (encoder, name template, the Sink/Upload protocol), then
    /// records PENDING, publishes and records SUCCESS.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn deliver_files(
        &self,
        export: &ExportSpec,
        file: &FileSettings,
        opts: &RunOptions,
        ctx: &RunCtx<'_>,
        plan: &ExportPlan,
        mut reader: Box<dyn BatchReader>,
        o: &mut ExportOutcome,
    ) -> Result<(), Stop> {
        let mut st = Stages { plan: o.stages.plan, query: o.stages.query, ..Stages::default() };
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
            run_id: ctx.run_id,
            current: None,
            sealed: Vec::new(),
            files: Vec::new(),
            sent: 0,
        };
        let t0 = Instant::now();
        let streamed: Result<(), Failure> = async {
            let t = Instant::now();
            parts.claim_names().await?;
            parts.start().await?;
            st.upload += t.elapsed();
            let mut first = true;
            let mut first_page = true;
            loop {
                let t = Instant::now();
                let Some(batch) = reader.next_batch().await? else { break };
                if let Some(lease) = ctx.lease {
                    lease.held()?;
                }
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
                    // A chunk goes out as soon as it is full, so that a batch of any size (a
                    // Storage Read message can hold 100,000 rows) is never held encoded whole.
                    if encoder.buffered() >= CHUNK {
                        let chunk = encoder.take();
                        let t = Instant::now();
                        parts.write(&chunk).await?;
                        uploading += t.elapsed();
                        if first && sink.is_some() {
                            failpoint::hit("upload:during", &export.name).await?;
                            first = false;
                        }
                    }
                }
                st.encode += t.elapsed().saturating_sub(uploading);
                st.upload += uploading;
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
        let checked = async {
            failpoint::hit("upload:after", &export.name).await?;
            match ctx.lease {
                Some(lease) => lease.confirm().await,
                None => Ok(()),
            }
        };
        if let Err(e) = checked.await {
            parts.abort().await;
            return Err(Stop::record(e));
        }
        self.commit_parts(export, ctx, &mut parts, o).await
    }

    /// The files of `parts` are all written and verified: records PENDING, publishes them and
    /// records SUCCESS (a staged copy ends the same way).
    pub(super) async fn commit_parts(
        &self,
        export: &ExportSpec,
        ctx: &RunCtx<'_>,
        parts: &mut Parts<'_>,
        o: &mut ExportOutcome,
    ) -> Result<(), Stop> {
        let pending = self.record(export, ctx, RunStatus::Pending, o, None);
        let t = Instant::now();
        if let Err(e) = self.state.append(&pending).await {
            parts.abort().await;
            return Err(Stop::record(e));
        }
        o.stages.record = t.elapsed();
        // From here on a FAILED record would hide files that may be published: failures leave
        // the PENDING record, and the temporary files, for the next run to finish, unless the
        // sink says for sure that nothing was published.
        let t = Instant::now();
        parts.publish().await?;
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
                    "{} delivered, but recording it failed ({e}); the next run reconciles it without sending them twice",
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
pub(super) struct Parts<'a> {
    /// `None` in a dry run: files are counted and named, nothing is written.
    pub(super) sink: Option<&'a dyn Sink>,
    pub(super) mode: PutMode,
    /// The export's name.
    pub(super) export: &'a str,
    pub(super) file: &'a FileSettings,
    pub(super) at: DateTime<Utc>,
    /// The run's id, for `{run_id}`.
    pub(super) run_id: &'a str,
    /// The file being written, and its temporary name.
    pub(super) current: Option<(Box<dyn crate::Upload>, String)>,
    /// Files written and verified, in the order of `files` (which has their names).
    pub(super) sealed: Vec<Box<dyn crate::Upload>>,
    pub(super) files: Vec<FileRecord>,
    /// Bytes handed to the sink so far, for progress.
    pub(super) sent: u64,
}

impl Parts<'_> {
    fn next_name(&self) -> String {
        let cx = crate::template::NameContext { export: self.export, at: self.at, run_id: self.run_id };
        self.file.template.render(&cx, self.files.len() as u32 + 1)
    }

    fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }

    /// Makes sure this run's first file name is not one already on the server: a time-based
    /// name that an earlier run took within the same second moves on to the next second, so
    /// two runs never write the same name. A name that does not change with time and is taken
    /// stops the run before anything is written when it would not be replaced.
    async fn claim_names(&mut self) -> Result<(), Failure> {
        let Some(sink) = self.sink else { return Ok(()) };
        // A few seconds at most: names of earlier seconds are not reused by later runs.
        for _ in 0..5 {
            let name = self.next_name();
            match sink.stat(&name).await {
                Ok(None) => return Ok(()),
                Ok(Some(_)) => {}
                Err(e) => {
                    // A server that does not answer stat for files not yet there: publishing
                    // still refuses a taken name under on_existing fail.
                    tracing::warn!(export = self.export, file = %name, error = %e, "could not check whether the file name is taken");
                    return Ok(());
                }
            }
            let cx = crate::template::NameContext { export: self.export, at: self.at + chrono::Duration::seconds(1), run_id: self.run_id };
            let later = self.file.template.render(&cx, self.files.len() as u32 + 1);
            if later == name {
                return match self.mode {
                    PutMode::Overwrite => Ok(()),
                    PutMode::Create => Err(Failure::with_class(
                        ErrorClass::Transient,
                        format!(
                            "export {}: {name} is already on {} and on_existing is fail, so nothing was sent; the next run tries again (after the partner collects it, or with a name that changes between runs)",
                            self.export,
                            sink.describe()
                        ),
                    )),
                };
            }
            let into_second = u64::from(Utc::now().timestamp_subsec_millis());
            tokio::time::sleep(Duration::from_millis(1000u64.saturating_sub(into_second) + 1)).await;
            self.at = Utc::now();
        }
        Ok(())
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
            let name = self.next_name();
            let temp = crate::sink::temp_name(self.export, &name);
            self.current = Some((sink.begin(&name, &temp, self.mode).await?, temp));
        }
        Ok(())
    }

    async fn write(&mut self, chunk: &[u8]) -> Result<(), Failure> {
        self.sent += chunk.len() as u64;
        if let Some((u, _)) = &mut self.current {
            u.write(chunk).await?;
        }
        Ok(())
    }

    /// Writes the file's last bytes and verifies it on the destination.
    async fn finish(&mut self, tail: &[u8], totals: crate::encode::Encoded) -> Result<(), Failure> {
        self.write(tail).await?;
        let mut temp = None;
        if let Some((mut upload, t)) = self.current.take() {
            upload.seal().await?;
            temp = Some(t);
            self.sealed.push(upload);
        }
        let name = self.next_name();
        self.files.push(FileRecord { name, bytes: totals.bytes, rows: totals.rows, sha256: totals.sha256, temp, object: None });
        Ok(())
    }

    /// Removes every temporary file.
    pub(super) async fn abort(&mut self) {
        for upload in self.current.take().map(|(u, _)| u).into_iter().chain(self.sealed.drain(..)) {
            upload.abort().await;
        }
    }

    /// Publishes every file in order. When one fails and the sink is sure it published
    /// nothing at all, every temporary file is removed and the run may be recorded FAILED.
    /// Otherwise (an unknown outcome, or files already published) the remaining temporary
    /// files stay where they are and the PENDING record stays: the next run finishes the
    /// publish from them.
    pub(super) async fn publish(&mut self) -> Result<(), Stop> {
        let mut published: Vec<String> = Vec::new();
        let mut uploads = std::mem::take(&mut self.sealed).into_iter().zip(&self.files);
        while let Some((upload, file)) = uploads.next() {
            let failed = match upload.commit().await {
                Ok(p) => {
                    published.push(p.name);
                    match failpoint::hit("publish:part", self.export).await {
                        Ok(()) => continue,
                        Err(e) => crate::PublishError::Unknown(e),
                    }
                }
                Err(e) => e,
            };
            let rest: Vec<_> = uploads.collect();
            if let (crate::PublishError::NotPublished(e), true) = (&failed, published.is_empty()) {
                if let (Some(sink), Some(temp)) = (self.sink, &file.temp) {
                    if let Err(r) = sink.remove(temp).await {
                        tracing::warn!(export = self.export, file = %temp, error = %r, "could not remove a temporary file");
                    }
                }
                for (u, _) in rest {
                    u.abort().await;
                }
                return Err(Stop::record(Failure::with_class(e.class(), format!("{e}; nothing was published"))));
            }
            // The uploads not yet published are dropped without removing their files: a
            // sealed upload leaves its temporary file when dropped (the Upload contract).
            drop(rest);
            let done = if published.is_empty() { String::new() } else { format!("{} published; ", published.join(", ")) };
            let e = failed.into_failure();
            return Err(Stop::quiet(Failure::with_class(
                e.class(),
                format!("publishing {}: {e}; {done}the next run finishes publishing from the verified temporary files", file.name),
            )));
        }
        Ok(())
    }
}
