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
    /// The run's id, for `{run_id}`.
    run_id: &'a str,
    current: Option<Box<dyn crate::Upload>>,
    sealed: Vec<Box<dyn crate::Upload>>,
    files: Vec<FileRecord>,
    /// Bytes handed to the sink so far, for progress.
    sent: u64,
}

impl Parts<'_> {
    fn next_name(&self) -> String {
        let cx = crate::template::NameContext { export: self.export, at: self.at, run_id: self.run_id };
        self.file.template.render(&cx, self.files.len() as u32 + 1)
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
