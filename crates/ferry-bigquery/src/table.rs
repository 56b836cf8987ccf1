//! The `bigquery` table destination: windows of rows loaded into a BigQuery table as Parquet
//! load jobs whose files are streamed as they are written.
//!
//! Every load job's file is encoded on a thread of its own, in row groups of `batch_rows`
//! rows, and sent in pieces of 4 MiB through a resumable upload while the rows are still being
//! read, so memory holds a few pieces and one row group however many rows there are. The job
//! exists only once the file's last bytes arrive; an upload abandoned before then loads
//! nothing. After a lost answer the session is asked how much it holds and only the rest is
//! sent, so no byte arrives twice.
//!
//! **One job (the default for `replace` and `append`).** The load is one job straight into
//! the table, named `ferry_<export>_<load>_commit`, with the mapped schema (creating the table
//! when it is missing): `WRITE_TRUNCATE` for `mode: replace` (the seed's *catalog* mode:
//! readers see the old snapshot or the new one, never part of one), `WRITE_APPEND` for `mode:
//! append` (*transactional*: the window's rows appear together). Its last bytes go only after
//! the PENDING record is written, so that job is the commit.
//!
//! **Staging (`hourly`, `job_rows`, or BIGNUMERIC columns).** The load goes through a staging
//! table of its own, `<table>__ferry_<load id>`, created with the mapped schema and expiring
//! after a day, so that one abandoned by a killed run goes by itself:
//!
//! 1. Rows are loaded into it by jobs of at most `job_rows` rows (one job without it), up to
//!    four finishing at once, each named by the export, the load and its number
//!    (`ferry_<export>_<load>_b<n>`), so one retried after a lost answer is not loaded twice.
//!    A job also ends when its file cannot hold the next rows' BIGNUMERIC values exactly (see
//!    `DecimalNeeds`).
//! 2. The commit is one job named `ferry_<export>_<load>_commit`: a copy job into the table,
//!    `WRITE_TRUNCATE` or `WRITE_APPEND` as above; for `mode: hourly`, a transaction that
//!    deletes the hour's rows and inserts the staged ones stamped with the hour.
//! 3. The staging table is deleted, whatever the commit's outcome.
//!
//! Either way, whether a load committed is whether its commit job completed without error.
//!
//! ## Type mapping (Arrow → BigQuery)
//!
//! | Arrow | BigQuery |
//! |---|---|
//! | `Utf8` | STRING (JSON for the `arrow.json` extension) |
//! | `Int8`…`Int64`, `UInt8`…`UInt32` | INT64 |
//! | `Float16`…`Float64` | FLOAT64 |
//! | `Decimal128(p, s)`, s ≤ 9 and p − s ≤ 29 | NUMERIC |
//! | other `Decimal128`, `Decimal256` | BIGNUMERIC |
//! | `Boolean` | BOOL |
//! | `Timestamp(_, zone)` | TIMESTAMP |
//! | `Timestamp(_, None)` | DATETIME |
//! | `Date32` | DATE |
//! | `Time64` | TIME |
//! | `Binary` | BYTES |
//! | `List(T)` | REPEATED T |
//! | `Struct` | RECORD |
//!
//! Other Arrow types are refused before anything is loaded, naming the column.

use std::sync::Arc;
use std::time::Duration;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use ferry_core::config::TableMode;
use ferry_core::cursor::CursorValue;
use ferry_core::rows::RecordBatch;
use ferry_core::{failpoint, Classify, ErrorClass, Failure, TableLoad, TableSink};
use serde_json::{json, Value};

use crate::client::{BigQuery, TableRef};
use crate::jobs::{JobState, LoadUpload, WriteDisposition, UPLOAD_QUANTUM};
use crate::BigQueryError;

/// Batch loads finishing at once for one load.
const MAX_INFLIGHT: usize = 4;

/// How long an abandoned staging table is kept.
const STAGING_EXPIRY: Duration = Duration::from_secs(24 * 3600);

/// Bytes of Parquet gathered before they are sent as one piece of the upload (a multiple of
/// [`UPLOAD_QUANTUM`]). At most three pieces are held at once: one filling, one waiting and
/// one being sent.
const PIECE_BYTES: usize = 16 * UPLOAD_QUANTUM;

/// A BigQuery table that an export loads.
pub struct BigQueryTable {
    bq: BigQuery,
    table: TableRef,
    mode: TableMode,
    batch_rows: usize,
    job_rows: Option<u64>,
    /// The export's name: part of every job id, so that exports of one run never share one.
    export: String,
}

impl BigQueryTable {
    /// The table `table` loaded by `export` in `mode`: Parquet row groups of `batch_rows`
    /// rows, load jobs of at most `job_rows` rows (`None`: one job per load).
    pub fn new(bq: BigQuery, table: TableRef, mode: TableMode, batch_rows: usize, job_rows: Option<u64>, export: &str) -> Self {
        Self { bq, table, mode, batch_rows: batch_rows.max(1), job_rows: job_rows.map(|n| n.max(1)), export: export.to_owned() }
    }

    fn job_id(&self, load_id: &str, what: &str) -> String {
        format!("ferry_{}_{}_{what}", self.export, load_id)
    }

    fn staging(&self, load_id: &str) -> TableRef {
        let id: String = load_id.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let mut name = format!("{}__ferry_{id}", self.table.table);
        name.truncate(1024);
        TableRef { table: name, ..self.table.clone() }
    }

    fn failure(&self, e: BigQueryError) -> Failure {
        Failure::with_class(e.class(), format!("BigQuery table {}: {e}", self.table))
    }

    /// Starts a load: straight into the table as its commit job when one job can carry it,
    /// else into a staging table of its own.
    async fn start(&self, load_id: &str, schema: SchemaRef, hour: Option<(CursorValue, String)>) -> Result<Load, Failure> {
        let fields = Value::Array(
            schema_fields(&schema)
                .map_err(|m| Failure::with_class(ErrorClass::Permanent, format!("BigQuery table {}: {m}", self.table)))?,
        );
        let has_bignumeric = schema.fields().iter().any(|f| matches!(f.data_type(), DataType::Decimal256(..)));
        let direct = hour.is_none() && self.job_rows.is_none() && !has_bignumeric;
        let mut load = Load {
            bq: self.bq.clone(),
            table: self.table.clone(),
            staging: None,
            schema: Arc::clone(&schema),
            mode: self.mode.clone(),
            hour,
            batch_rows: self.batch_rows,
            job_rows: self.job_rows,
            export: self.export.clone(),
            batch_job: self.job_id(load_id, "b"),
            commit_job: self.job_id(load_id, "commit"),
            current: None,
            needs: vec![None; schema.fields().len()],
            jobs: 0,
            inflight: tokio::task::JoinSet::new(),
            loaded: 0,
        };
        if direct {
            let write = match self.mode {
                TableMode::Replace => WriteDisposition::Truncate,
                TableMode::Append | TableMode::Hourly(_) => WriteDisposition::Append,
            };
            let job = load.commit_job.clone();
            load.current = Some(load.open(&job, &self.table, write, Some(&fields), vec![None; schema.fields().len()]).await?);
        } else {
            let staging = self.staging(load_id);
            self.bq.create_table(&staging, &fields, Some(STAGING_EXPIRY)).await.map_err(|e| self.failure(e))?;
            load.staging = Some(staging);
        }
        Ok(load)
    }
}

#[async_trait]
impl TableSink for BigQueryTable {
    async fn begin(&self, load_id: &str, schema: SchemaRef) -> Result<Box<dyn TableLoad>, Failure> {
        if let TableMode::Hourly(_) = self.mode {
            return Err(Failure::with_class(ErrorClass::Permanent, format!("BigQuery table {}: an hourly table loads hours", self.table)));
        }
        Ok(Box::new(self.start(load_id, schema, None).await?))
    }

    async fn begin_hour(&self, load_id: &str, schema: SchemaRef, hour: &CursorValue) -> Result<Box<dyn TableLoad>, Failure> {
        let TableMode::Hourly(h) = &self.mode else {
            return Err(Failure::with_class(
                ErrorClass::Permanent,
                format!("BigQuery table {}: mode {} loads no hours", self.table, self.mode.name()),
            ));
        };
        if schema.fields().iter().any(|f| f.name().eq_ignore_ascii_case(&h.column)) {
            return Err(Failure::with_class(
                ErrorClass::Permanent,
                format!("BigQuery table {}: the source has a column {} already; name another hour_column", self.table, h.column),
            ));
        }
        Ok(Box::new(self.start(load_id, schema, Some((hour.clone(), h.column.clone()))).await?))
    }

    async fn committed(&self, load_id: &str) -> Result<bool, Failure> {
        match self.bq.job_state(&self.job_id(load_id, "commit")).await.map_err(|e| self.failure(e))? {
            None | Some(JobState::Failed(_)) => Ok(false),
            Some(JobState::Done(_)) => Ok(true),
            Some(JobState::Running) => Err(Failure::with_class(
                ErrorClass::Transient,
                format!("BigQuery table {}: the commit of load {load_id} is still running; the next run settles it", self.table),
            )),
        }
    }

    fn describe(&self) -> String {
        format!("bigquery://{}", self.table)
    }
}

/// One load job whose Parquet file is sent while it is written: batches go to an encoder on a
/// thread of its own, which hands every [`PIECE_BYTES`] of the file to a task that uploads
/// them. Memory stays a few pieces and one row group, however many rows the job carries. The
/// job exists only once [`JobStream::finish`] sends the file's last bytes.
struct JobStream {
    job_id: String,
    table: String,
    rows: u64,
    /// Decimal scales the file narrows BIGNUMERIC columns to (see [`DecimalNeeds`]).
    scales: Vec<Option<i8>>,
    batches: Option<tokio::sync::mpsc::Sender<RecordBatch>>,
    /// The encoder: the file's last bytes (those not yet sent as a piece).
    encoder: tokio::task::JoinHandle<Result<Vec<u8>, String>>,
    /// The uploader: the session, once every piece is sent.
    sender: tokio::task::JoinHandle<Result<LoadUpload, BigQueryError>>,
    bq: BigQuery,
}

impl Drop for JobStream {
    fn drop(&mut self) {
        // An abandoned stream sends nothing more; its session never completes, so no job runs.
        self.sender.abort();
    }
}

impl JobStream {
    fn permanent(&self, m: impl std::fmt::Display) -> Failure {
        Failure::with_class(ErrorClass::Permanent, format!("BigQuery table {}: {m}", self.table))
    }

    fn failure(&self, e: BigQueryError) -> Failure {
        Failure::with_class(e.class(), format!("BigQuery table {}: {e}", self.table))
    }

    /// Why the stream stopped taking batches: the uploader's error (which also stops the
    /// encoder), else the encoder's. Polls each task at most once.
    async fn stopped(&mut self) -> Failure {
        self.batches = None;
        if self.sender.is_finished() {
            match (&mut self.sender).await {
                Ok(Err(e)) => return self.failure(e),
                Err(e) => return self.permanent(format!("an upload stopped: {e}")),
                Ok(Ok(_)) => {}
            }
        }
        match (&mut self.encoder).await {
            Ok(Err(m)) => self.permanent(m),
            Err(e) => self.permanent(format!("encoding stopped: {e}")),
            Ok(Ok(_)) => self.permanent("the encoder stopped early"),
        }
    }

    async fn write(&mut self, batch: RecordBatch) -> Result<(), Failure> {
        self.rows += batch.num_rows() as u64;
        let Some(tx) = &self.batches else {
            return Err(self.permanent("the load stopped earlier"));
        };
        if tx.send(batch).await.is_ok() {
            return Ok(());
        }
        Err(self.stopped().await)
    }

    /// Ends the file, sends its last bytes and waits for the job; checks that it loaded every
    /// row sent.
    async fn finish(mut self) -> Result<u64, Failure> {
        if self.batches.take().is_none() {
            return Err(self.permanent("the load stopped earlier"));
        }
        let last = match (&mut self.encoder).await {
            Ok(Ok(last)) => last,
            Ok(Err(m)) => {
                // An encoder stopped by the upload: the upload's error says why.
                if self.sender.is_finished() {
                    if let Ok(Err(e)) = (&mut self.sender).await {
                        return Err(self.failure(e));
                    }
                }
                return Err(self.permanent(m));
            }
            Err(e) => return Err(self.permanent(format!("encoding stopped: {e}"))),
        };
        let upload = match (&mut self.sender).await {
            Ok(Ok(upload)) => upload,
            Ok(Err(e)) => return Err(self.failure(e)),
            Err(e) => return Err(self.permanent(format!("an upload stopped: {e}"))),
        };
        let done = self.bq.finish_load(upload, last.into()).await.map_err(|e| self.failure(e))?;
        if done.rows != self.rows {
            return Err(self.permanent(format!("load job {} took {} rows of the {} sent", self.job_id, done.rows, self.rows)));
        }
        Ok(done.rows)
    }
}

/// One load in progress.
struct Load {
    bq: BigQuery,
    table: TableRef,
    /// The staging table, unless the load is one job straight into the table.
    staging: Option<TableRef>,
    schema: SchemaRef,
    mode: TableMode,
    /// For an hourly load: the hour's first instant and the column it goes into.
    hour: Option<(CursorValue, String)>,
    batch_rows: usize,
    job_rows: Option<u64>,
    export: String,
    /// Prefix of the staging jobs' ids (`…_b`), followed by the job's number.
    batch_job: String,
    commit_job: String,
    /// The job being streamed.
    current: Option<JobStream>,
    /// What the BIGNUMERIC values so far need, by column.
    needs: Vec<Option<DecimalNeeds>>,
    jobs: u64,
    /// Staging jobs finishing: each answers the rows the staging table took.
    inflight: tokio::task::JoinSet<Result<u64, Failure>>,
    /// Rows the staging table took, by the load jobs' statistics.
    loaded: u64,
}

impl Load {
    fn failure(&self, e: BigQueryError) -> Failure {
        Failure::with_class(e.class(), format!("BigQuery table {}: {e}", self.table))
    }

    /// Opens job `job_id` into `to`, its file's BIGNUMERIC columns narrowed to `scales`.
    async fn open(
        &self,
        job_id: &str,
        to: &TableRef,
        write: WriteDisposition,
        fields: Option<&Value>,
        scales: Vec<Option<i8>>,
    ) -> Result<JobStream, Failure> {
        let upload = self.bq.start_load(job_id, to, write, fields).await.map_err(|e| self.failure(e))?;
        let file_schema = narrowed_schema(&self.schema, &scales);
        let (batches_tx, batches_rx) = tokio::sync::mpsc::channel::<RecordBatch>(2);
        let (pieces_tx, mut pieces_rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(1);
        let (schema, narrow, rows) = (Arc::clone(&self.schema), scales.clone(), self.batch_rows);
        let encoder = tokio::task::spawn_blocking(move || encode(&schema, &file_schema, &narrow, rows, batches_rx, &pieces_tx));
        let bq = self.bq.clone();
        let sender = tokio::spawn(async move {
            let mut upload = upload;
            while let Some(piece) = pieces_rx.recv().await {
                bq.send_piece(&mut upload, piece).await?;
            }
            Ok(upload)
        });
        Ok(JobStream {
            job_id: job_id.to_owned(),
            table: self.table.to_string(),
            rows: 0,
            scales,
            batches: Some(batches_tx),
            encoder,
            sender,
            bq: self.bq.clone(),
        })
    }

    /// Lets the staging job being streamed finish in the background; at most
    /// [`MAX_INFLIGHT`] finish at once.
    async fn close_job(&mut self) -> Result<(), Failure> {
        let Some(job) = self.current.take() else { return Ok(()) };
        self.inflight.spawn(job.finish());
        while self.inflight.len() >= MAX_INFLIGHT {
            self.reap().await?;
        }
        Ok(())
    }

    /// Waits for one staging job to finish.
    async fn reap(&mut self) -> Result<(), Failure> {
        match self.inflight.join_next().await {
            None => Ok(()),
            Some(Ok(Ok(rows))) => {
                self.loaded += rows;
                failpoint::hit("load:batch", &self.export).await
            }
            Some(Ok(Err(e))) => Err(e),
            Some(Err(e)) => {
                Err(Failure::with_class(ErrorClass::Permanent, format!("BigQuery table {}: a batch load stopped: {e}", self.table)))
            }
        }
    }

    /// Writes `batch` to the staging table: into the job being streamed unless the batch would
    /// take it past `job_rows` (a batch is never split) or its file cannot hold the batch's
    /// BIGNUMERIC values exactly; then into a new job.
    async fn write_staged(&mut self, batch: RecordBatch) -> Result<(), Failure> {
        let batch_needs = decimal_needs(&self.schema, &batch)
            .map_err(|m| Failure::with_class(ErrorClass::Permanent, format!("BigQuery table {}: {m}", self.table)))?;
        let merged: Vec<Option<DecimalNeeds>> = self.needs.iter().zip(&batch_needs).map(|(a, b)| DecimalNeeds::merge(*a, *b)).collect();
        if let Some(job) = &self.current {
            let full = self.job_rows.is_some_and(|n| job.rows + batch.num_rows() as u64 > n && job.rows > 0);
            if full || !fits(&job.scales, &batch_needs) {
                self.close_job().await?;
            }
        }
        self.needs = merged;
        if self.current.is_none() {
            let (job, staging) = (format!("{}{}", self.batch_job, self.jobs), self.staging.clone().expect("a staged load"));
            self.jobs += 1;
            let scales = self.schema.fields().iter().zip(&self.needs).map(|(f, n)| n.and_then(|n| n.scale(f.data_type()))).collect();
            self.current = Some(self.open(&job, &staging, WriteDisposition::Append, None, scales).await?);
        }
        self.current.as_mut().expect("a job").write(batch).await
    }

    /// Streams the last job and waits for every staging job.
    async fn finish_staged(&mut self) -> Result<(), Failure> {
        self.close_job().await?;
        while !self.inflight.is_empty() {
            self.reap().await?;
        }
        Ok(())
    }

    /// Makes the load's rows visible: the job straight into the table, or the staging jobs
    /// and then the commit job.
    async fn commit_all(&mut self) -> Result<u64, Failure> {
        let Some(staging) = self.staging.clone() else {
            let rows = self.current.take().expect("a direct load streams one job").finish().await?;
            failpoint::hit("load:commit", &self.export).await?;
            return Ok(rows);
        };
        self.finish_staged().await?;
        if let Some((hour, column)) = self.hour.clone() {
            return self.commit_hour(&staging, &hour, &column).await;
        }
        let write = match self.mode {
            TableMode::Replace => WriteDisposition::Truncate,
            TableMode::Append | TableMode::Hourly(_) => WriteDisposition::Append,
        };
        let done = self.bq.copy_table(&self.commit_job, &staging, &self.table, write).await.map_err(|e| self.failure(e))?;
        failpoint::hit("load:commit", &self.export).await?;
        if done.rows != self.loaded {
            tracing::warn!(table = %self.table, copied = done.rows, loaded = self.loaded, "the commit copied another number of rows than were loaded");
        }
        Ok(done.rows)
    }

    /// Replaces the hour in the table with the staged rows in one transaction (a query job
    /// named by the load, so that it runs once), creating the table, partitioned by day on
    /// the hour column, when it is missing; returns the rows the table then holds for the hour.
    async fn commit_hour(&self, staging: &TableRef, hour: &CursorValue, column: &str) -> Result<u64, Failure> {
        let hour_type = hour.ty().sql_name();
        if self.bq.table_info(&self.table).await.map_err(|e| self.failure(e))?.is_none() {
            let mut fields = schema_fields(&self.schema)
                .map_err(|m| Failure::with_class(ErrorClass::Permanent, format!("BigQuery table {}: {m}", self.table)))?;
            fields.push(json!({"name": column, "type": hour_type, "mode": "REQUIRED"}));
            self.bq.create_table_partitioned(&self.table, &Value::Array(fields), column).await.map_err(|e| self.failure(e))?;
        }
        let q = |t: &TableRef| format!("`{}`.`{}`.`{}`", t.project, t.dataset, t.table);
        let columns: Vec<String> = self.schema.fields().iter().map(|f| format!("`{}`", f.name())).collect();
        let columns = columns.join(", ");
        let sep = if columns.is_empty() { "" } else { ", " };
        let script = format!(
            "BEGIN TRANSACTION;\n\
             DELETE FROM {table} WHERE `{column}` = @hour;\n\
             INSERT INTO {table} ({columns}{sep}`{column}`) SELECT {columns}{sep}@hour FROM {staging};\n\
             COMMIT TRANSACTION;",
            table = q(&self.table),
            staging = q(staging),
        );
        let params = json!([{"name": "hour", "parameterType": {"type": hour_type}, "parameterValue": {"value": hour.param_literal()}}]);
        let config = json!({"query": {"query": script, "useLegacySql": false, "parameterMode": "NAMED", "queryParameters": params}});
        self.bq.run_job("jobs.insert (hour)", &self.commit_job, config).await.map_err(|e| self.failure(e))?;
        failpoint::hit("load:commit", &self.export).await?;
        let count = self
            .bq
            .query(
                &format!("SELECT COUNT(*) FROM {} WHERE `{column}` = @hour", q(&self.table)),
                &[crate::QueryParam::new("hour", hour_type, hour.param_literal())],
                1,
            )
            .await
            .map_err(|e| self.failure(e))?
            .collect()
            .await
            .map_err(|e| self.failure(e))?;
        match count.first().and_then(|r| r.first()) {
            Some(crate::Cell::Text(n)) => n
                .parse()
                .map_err(|_| Failure::with_class(ErrorClass::Permanent, format!("BigQuery table {}: COUNT(*) answered {n:?}", self.table))),
            other => Err(Failure::with_class(ErrorClass::Permanent, format!("BigQuery table {}: COUNT(*) answered {other:?}", self.table))),
        }
    }

    /// Stops every job still streaming or finishing (none of them may load after this) and
    /// deletes the staging table.
    async fn clean_up(&mut self) {
        self.current = None;
        self.inflight.abort_all();
        while self.inflight.join_next().await.is_some() {}
        if let Some(staging) = &self.staging {
            if let Err(e) = self.bq.delete_table(staging).await {
                tracing::warn!(table = %staging, error = %e, "could not delete a staging table; it expires in a day");
            }
        }
    }
}

#[async_trait]
impl TableLoad for Load {
    async fn write(&mut self, batch: &RecordBatch) -> Result<(), Failure> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.staging.is_some() {
            return self.write_staged(batch.clone()).await;
        }
        self.current.as_mut().expect("a direct load streams one job").write(batch.clone()).await
    }

    async fn commit(mut self: Box<Self>) -> Result<u64, Failure> {
        let committed = self.commit_all().await;
        // Whatever the outcome, the staging table holds nothing the table needs any more: a
        // commit job that ran has copied it, and one that did not run must not later.
        self.clean_up().await;
        committed
    }

    async fn abort(mut self: Box<Self>) {
        self.clean_up().await;
    }
}

/// The encoder of one job's file: writes the batches from `batches` as Parquet (Snappy, row
/// groups of `group_rows`), BIGNUMERIC columns narrowed to `scales`, handing every
/// [`PIECE_BYTES`] to `pieces`; returns the file's last bytes.
fn encode(
    schema: &SchemaRef,
    file_schema: &SchemaRef,
    scales: &[Option<i8>],
    group_rows: usize,
    mut batches: tokio::sync::mpsc::Receiver<RecordBatch>,
    pieces: &tokio::sync::mpsc::Sender<bytes::Bytes>,
) -> Result<Vec<u8>, String> {
    use parquet::arrow::ArrowWriter;
    use parquet::basic::Compression;
    use parquet::file::properties::WriterProperties;

    // No statistics: BigQuery does not read them, and parquet keeps each row group's minimum
    // and maximum of a FIXED_LEN_BYTE_ARRAY column (a NUMERIC or BIGNUMERIC) as slices of the
    // whole column's buffer until the file ends, which made memory grow with the rows.
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(group_rows.max(1)))
        .set_statistics_enabled(parquet::file::properties::EnabledStatistics::None)
        .build();
    let out = Pieces { buf: Vec::with_capacity(PIECE_BYTES), pieces };
    let mut w = ArrowWriter::try_new(out, Arc::clone(file_schema), Some(props)).map_err(|e| format!("Parquet: {e}"))?;
    while let Some(b) = batches.blocking_recv() {
        let b = narrow_batch(schema, file_schema, scales, &b)?;
        w.write(&b).map_err(|e| format!("Parquet: {e}"))?;
    }
    Ok(w.into_inner().map_err(|e| format!("Parquet: {e}"))?.buf)
}

/// The file being written: every [`PIECE_BYTES`] go to the uploader.
struct Pieces<'a> {
    buf: Vec<u8>,
    pieces: &'a tokio::sync::mpsc::Sender<bytes::Bytes>,
}

impl std::io::Write for Pieces<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        // Every piece is one allocation of exactly PIECE_BYTES, so the allocator reuses freed
        // pieces instead of fragmenting over a long upload.
        let mut rest = data;
        while !rest.is_empty() {
            let take = (PIECE_BYTES - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.buf.len() == PIECE_BYTES {
                let piece = std::mem::replace(&mut self.buf, Vec::with_capacity(PIECE_BYTES));
                self.pieces
                    .blocking_send(piece.into())
                    .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload stopped"))?;
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The REST schema fields of `schema`; an error names a column whose type has no mapping.
pub fn schema_fields(schema: &Schema) -> Result<Vec<Value>, String> {
    schema.fields().iter().map(|f| field_json(f, f.name())).collect()
}

fn field_json(f: &Field, path: &str) -> Result<Value, String> {
    let (type_name, mode, fields) = match f.data_type() {
        DataType::List(item) | DataType::LargeList(item) => {
            if matches!(item.data_type(), DataType::List(_) | DataType::LargeList(_)) {
                return Err(format!("column {path} is an array of arrays, which BigQuery cannot hold"));
            }
            let inner = field_json(item, path)?;
            return Ok(
                json!({"name": f.name(), "type": inner["type"], "mode": "REPEATED", "fields": inner.get("fields").cloned().unwrap_or(json!([]))}),
            );
        }
        DataType::Struct(children) => {
            let fields: Result<Vec<Value>, String> = children.iter().map(|c| field_json(c, &format!("{path}.{}", c.name()))).collect();
            ("RECORD", "NULLABLE", fields?)
        }
        other => (
            scalar_type(f, other).ok_or_else(|| format!("column {path} has type {other}, which ferry does not load into BigQuery"))?,
            "NULLABLE",
            Vec::new(),
        ),
    };
    let mut v = json!({"name": f.name(), "type": type_name, "mode": mode});
    if !fields.is_empty() {
        v["fields"] = Value::Array(fields);
    }
    Ok(v)
}

fn scalar_type(f: &Field, t: &DataType) -> Option<&'static str> {
    Some(match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View if ferry_core::rows::is_json(f) => "JSON",
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "STRING",
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 | DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => {
            "INTEGER"
        }
        DataType::Float16 | DataType::Float32 | DataType::Float64 => "FLOAT",
        DataType::Decimal128(p, s) if *s >= 0 && *s <= 9 && (*p as i16 - *s as i16) <= 29 => "NUMERIC",
        DataType::Decimal128(..) | DataType::Decimal256(..) => "BIGNUMERIC",
        DataType::Boolean => "BOOLEAN",
        DataType::Timestamp(_, Some(_)) => "TIMESTAMP",
        DataType::Timestamp(_, None) => "DATETIME",
        DataType::Date32 => "DATE",
        DataType::Time64(TimeUnit::Microsecond | TimeUnit::Nanosecond) | DataType::Time32(_) => "TIME",
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BYTES",
        _ => return None,
    })
}

/// What one BIGNUMERIC (`Decimal256(76, 38)`) column's values need: their most integer
/// digits and their most fractional digits that are not zero.
///
/// BigQuery loads any Parquet decimal of precision ≤ 76 into BIGNUMERIC, and readers that know
/// only 128-bit decimals (the emulator's) read `DECIMAL(38, s)` exactly but 256-bit decimals as
/// doubles. So a file writes such a column as `DECIMAL(38, s)` when its values fit, exactly,
/// and as 256-bit otherwise; a staging job whose file cannot hold the next values ends, and a
/// new one takes them ([`Load::write_staged`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DecimalNeeds {
    int_digits: i32,
    frac_digits: i32,
}

impl DecimalNeeds {
    fn merge(a: Option<Self>, b: Option<Self>) -> Option<Self> {
        match (a, b) {
            (Some(a), Some(b)) => Some(Self { int_digits: a.int_digits.max(b.int_digits), frac_digits: a.frac_digits.max(b.frac_digits) }),
            (a, b) => a.or(b),
        }
    }

    /// The scale of the `DECIMAL(38, s)` that holds these values of a column of type `t`
    /// exactly: the most that leaves room for their integer digits; `None` when there is none.
    fn scale(self, t: &DataType) -> Option<i8> {
        let DataType::Decimal256(_, from) = t else { return None };
        let scale = 38 - self.int_digits.max(0);
        (scale >= self.frac_digits && scale <= i32::from(*from)).then_some(scale as i8)
    }
}

/// What `batch`'s values of each `Decimal256` column need; `None` for other columns.
fn decimal_needs(schema: &SchemaRef, batch: &RecordBatch) -> Result<Vec<Option<DecimalNeeds>>, String> {
    use arrow_array::{Array, Decimal256Array};
    use arrow_buffer::i256;

    let mut out = vec![None; schema.fields().len()];
    for (i, f) in schema.fields().iter().enumerate() {
        let DataType::Decimal256(_, from) = f.data_type() else { continue };
        let a = batch.column(i).as_any().downcast_ref::<Decimal256Array>().ok_or("a BIGNUMERIC column is not 256-bit")?;
        let mut needs = DecimalNeeds { int_digits: 0, frac_digits: 0 };
        for v in a.iter().flatten() {
            let digits = v.wrapping_abs().to_string().trim_start_matches('-').len() as i32;
            needs.int_digits = needs.int_digits.max(digits - i32::from(*from));
            let mut frac = i32::from(*from);
            let mut x = v;
            while frac > 0 && x % i256::from_i128(10) == i256::ZERO {
                x /= i256::from_i128(10);
                frac -= 1;
            }
            needs.frac_digits = needs.frac_digits.max(frac);
        }
        out[i] = Some(needs);
    }
    Ok(out)
}

/// Whether a file whose columns are narrowed to `scales` holds values that need `needs`.
fn fits(scales: &[Option<i8>], needs: &[Option<DecimalNeeds>]) -> bool {
    scales.iter().zip(needs).all(|(s, n)| match (s, n) {
        (Some(s), Some(n)) => n.frac_digits <= i32::from(*s) && n.int_digits <= 38 - i32::from(*s),
        _ => true,
    })
}

/// `schema` with each column that has a scale in `scales` as `Decimal128(38, scale)`.
fn narrowed_schema(schema: &SchemaRef, scales: &[Option<i8>]) -> SchemaRef {
    if scales.iter().all(Option::is_none) {
        return Arc::clone(schema);
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .zip(scales)
        .map(|(f, s)| match s {
            Some(s) => Field::new(f.name(), DataType::Decimal128(38, *s), f.is_nullable()).with_metadata(f.metadata().clone()),
            None => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` (of `schema`) as a batch of `narrowed` (see [`narrowed_schema`]), exactly.
fn narrow_batch(schema: &SchemaRef, narrowed: &SchemaRef, scales: &[Option<i8>], batch: &RecordBatch) -> Result<RecordBatch, String> {
    use arrow_array::{Array, Decimal128Array, Decimal256Array};
    use arrow_buffer::i256;

    if scales.iter().all(Option::is_none) {
        return Ok(batch.clone());
    }
    let mut columns = batch.columns().to_vec();
    for (i, s) in scales.iter().enumerate() {
        let (Some(s), DataType::Decimal256(_, from)) = (s, schema.field(i).data_type()) else { continue };
        let a = batch.column(i).as_any().downcast_ref::<Decimal256Array>().ok_or("a BIGNUMERIC column is not 256-bit")?;
        let div = i256::from_i128(10).wrapping_pow(u32::try_from(i32::from(*from) - i32::from(*s)).unwrap_or(0));
        let values: Decimal128Array = a
            .iter()
            .map(|v| {
                v.and_then(|v| if v % div == i256::ZERO { (v / div).to_i128() } else { None }).filter(|x| x.unsigned_abs() < 10u128.pow(38))
            })
            .collect();
        if values.null_count() != a.null_count() {
            return Err(format!("a BIGNUMERIC value of column {} did not fit while narrowing it", schema.field(i).name()));
        }
        columns[i] = Arc::new(values.with_precision_and_scale(38, *s).map_err(|e| e.to_string())?);
    }
    RecordBatch::try_new(Arc::clone(narrowed), columns).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, Decimal128Array, Decimal256Array};
    use arrow_buffer::i256;

    fn big(values: &[Option<&str>]) -> (SchemaRef, Vec<RecordBatch>) {
        let schema = Arc::new(Schema::new(vec![Field::new("b", DataType::Decimal256(76, 38), true)]));
        let a: Decimal256Array = values
            .iter()
            .map(|v| {
                v.map(|v| {
                    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
                    let digits = format!("{int}{frac:0<38}");
                    i256::from_string(&digits).expect("digits")
                })
            })
            .collect();
        let a = a.with_precision_and_scale(76, 38).unwrap();
        (Arc::clone(&schema), vec![RecordBatch::try_new(schema, vec![Arc::new(a)]).unwrap()])
    }

    fn narrowed(schema: &SchemaRef, batches: &[RecordBatch]) -> Option<(SchemaRef, RecordBatch)> {
        let needs = decimal_needs(schema, &batches[0]).unwrap();
        let scales: Vec<Option<i8>> = schema.fields().iter().zip(&needs).map(|(f, n)| n.and_then(|n| n.scale(f.data_type()))).collect();
        if scales.iter().all(Option::is_none) {
            return None;
        }
        let s = narrowed_schema(schema, &scales);
        let b = narrow_batch(schema, &s, &scales, &batches[0]).unwrap();
        Some((s, b))
    }

    #[test]
    fn bignumeric_values_that_fit_38_digits_are_narrowed_exactly() {
        let (schema, batches) = big(&[Some("12345678901234567890.123456789012345678"), Some("-1.5"), None]);
        let (s, b) = narrowed(&schema, &batches).expect("narrowed");
        assert_eq!(s.field(0).data_type(), &DataType::Decimal128(38, 18));
        let a = b.column(0).as_any().downcast_ref::<Decimal128Array>().unwrap();
        assert_eq!(a.value_as_string(0), "12345678901234567890.123456789012345678");
        assert_eq!(a.value_as_string(1), "-1.500000000000000000");
        assert!(a.is_null(2));
    }

    #[test]
    fn bignumeric_values_wider_than_38_digits_stay_256_bit() {
        let (schema, batches) = big(&[Some("12345678901234567890123456789012345678.5")]);
        assert!(narrowed(&schema, &batches).is_none());
        let (schema, batches) = big(&[Some("1.00000000000000000000000000000000000001")]);
        assert!(narrowed(&schema, &batches).is_none(), "38 decimals and an integer digit need 39");
    }

    #[test]
    fn later_values_that_a_file_cannot_hold_do_not_fit_it() {
        let (schema, first) = big(&[Some("123.5")]);
        let needs = decimal_needs(&schema, &first[0]).unwrap();
        let scales: Vec<Option<i8>> = needs.iter().map(|n| n.and_then(|n| n.scale(schema.field(0).data_type()))).collect();
        assert_eq!(scales, [Some(35)]);
        let (_, same) = big(&[Some("-999.25"), None]);
        assert!(fits(&scales, &decimal_needs(&schema, &same[0]).unwrap()));
        let (_, wider) = big(&[Some("12345.5")]);
        let wider_needs = decimal_needs(&schema, &wider[0]).unwrap();
        assert!(!fits(&scales, &wider_needs), "five integer digits do not fit DECIMAL(38, 35)");
        // The next file holds both.
        let merged = DecimalNeeds::merge(needs[0], wider_needs[0]).unwrap();
        assert_eq!(merged.scale(schema.field(0).data_type()), Some(33));
        let s = narrowed_schema(&schema, &[Some(35)]);
        assert!(narrow_batch(&schema, &s, &[Some(35)], &wider[0]).is_err(), "narrowing never loses a digit");
    }
}
