//! The `bigquery` table destination: windows of rows loaded into a BigQuery table as Parquet
//! load jobs, made visible at once by one copy job.
//!
//! A load goes through a staging table of its own, `<table>__ferry_<load id>`, in the
//! destination's dataset, created with the schema mapped from the rows (below) and expiring
//! after a day, so that one abandoned by a killed run goes by itself:
//!
//! 1. Rows are gathered into batches of `batch_rows` and each batch is loaded into the staging
//!    table by a Parquet load job (up to four at once) whose id names the export, the load and
//!    the batch (`ferry_<export>_<load>_b<n>`). A batch retried after a lost answer finds its
//!    job and is not loaded twice.
//! 2. The commit is one job named `ferry_<export>_<load>_commit`: a copy job from the staging
//!    table into the destination, `WRITE_TRUNCATE` for `mode: replace` (the seed's *catalog*
//!    mode: readers see the old snapshot or the new one, never part of one), `WRITE_APPEND` for
//!    `mode: append` (*transactional*: all of the window's rows appear together); for `mode:
//!    hourly`, a transaction that deletes the hour's rows and inserts the staged ones stamped
//!    with the hour. Whether a load committed is whether that job completed without error.
//! 3. The staging table is deleted.
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
use crate::jobs::{JobState, WriteDisposition};
use crate::BigQueryError;

/// Batch loads running at once for one load.
const MAX_INFLIGHT: usize = 4;

/// How long an abandoned staging table is kept.
const STAGING_EXPIRY: Duration = Duration::from_secs(24 * 3600);

/// A BigQuery table that an export loads.
pub struct BigQueryTable {
    bq: BigQuery,
    table: TableRef,
    mode: TableMode,
    batch_rows: usize,
    /// The export's name: part of every job id, so that exports of one run never share one.
    export: String,
}

impl BigQueryTable {
    /// The table `table` loaded by `export` in `mode`, `batch_rows` rows per load job.
    pub fn new(bq: BigQuery, table: TableRef, mode: TableMode, batch_rows: usize, export: &str) -> Self {
        Self { bq, table, mode, batch_rows: batch_rows.max(1), export: export.to_owned() }
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

    /// Creates the load's staging table.
    async fn start(&self, load_id: &str, schema: SchemaRef, hour: Option<(CursorValue, String)>) -> Result<Load, Failure> {
        let fields = schema_fields(&schema)
            .map_err(|m| Failure::with_class(ErrorClass::Permanent, format!("BigQuery table {}: {m}", self.table)))?;
        let staging = self.staging(load_id);
        self.bq.create_table(&staging, &Value::Array(fields), Some(STAGING_EXPIRY)).await.map_err(|e| self.failure(e))?;
        Ok(Load {
            bq: self.bq.clone(),
            table: self.table.clone(),
            staging,
            schema,
            mode: self.mode.clone(),
            hour,
            batch_rows: self.batch_rows,
            export: self.export.clone(),
            batch_job: self.job_id(load_id, "b"),
            commit_job: self.job_id(load_id, "commit"),
            pending: Vec::new(),
            pending_rows: 0,
            batches: 0,
            inflight: tokio::task::JoinSet::new(),
            loaded: 0,
        })
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

/// One load in progress: batches go into the staging table.
struct Load {
    bq: BigQuery,
    table: TableRef,
    staging: TableRef,
    schema: SchemaRef,
    mode: TableMode,
    /// For an hourly load: the hour's first instant and the column it goes into.
    hour: Option<(CursorValue, String)>,
    batch_rows: usize,
    export: String,
    /// Prefix of the batch jobs' ids (`…_b`), followed by the batch number.
    batch_job: String,
    commit_job: String,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    batches: u64,
    /// Batch loads running: each answers the rows the staging table took.
    inflight: tokio::task::JoinSet<Result<u64, Failure>>,
    /// Rows the staging table took, by the load jobs' statistics.
    loaded: u64,
}

impl Load {
    fn failure(&self, e: BigQueryError) -> Failure {
        Failure::with_class(e.class(), format!("BigQuery table {}: {e}", self.table))
    }

    /// Starts loading the gathered rows as one Parquet file, encoded off the runtime's
    /// threads; at most [`MAX_INFLIGHT`] batch loads run at once, so reading the next rows,
    /// encoding and BigQuery's work on earlier batches overlap.
    async fn flush(&mut self) -> Result<(), Failure> {
        if self.pending_rows == 0 {
            return Ok(());
        }
        let rows = self.pending_rows as u64;
        let batches = std::mem::take(&mut self.pending);
        self.pending_rows = 0;
        let job = format!("{}{}", self.batch_job, self.batches);
        self.batches += 1;
        let (bq, staging, schema, table) = (self.bq.clone(), self.staging.clone(), Arc::clone(&self.schema), self.table.to_string());
        self.inflight.spawn(async move {
            let permanent = |m: String| Failure::with_class(ErrorClass::Permanent, format!("BigQuery table {table}: {m}"));
            let data = tokio::task::spawn_blocking(move || parquet_file(&schema, &batches))
                .await
                .map_err(|e| permanent(format!("encoding a batch stopped: {e}")))?
                .map_err(permanent)?;
            let done = bq
                .load_upload(&job, &staging, "PARQUET", WriteDisposition::Append, data.into())
                .await
                .map_err(|e| Failure::with_class(e.class(), format!("BigQuery table {table}: {e}")))?;
            if done.rows != rows {
                return Err(permanent(format!("load job {job} took {} rows of the {rows} sent", done.rows)));
            }
            Ok(rows)
        });
        while self.inflight.len() >= MAX_INFLIGHT {
            self.reap().await?;
        }
        Ok(())
    }

    /// Waits for one batch load to finish.
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

    /// Loads what is gathered and waits for every batch load.
    async fn finish_batches(&mut self) -> Result<(), Failure> {
        self.flush().await?;
        while !self.inflight.is_empty() {
            self.reap().await?;
        }
        Ok(())
    }
}

impl Load {
    /// Loads the last batch, waits for every batch, then runs the commit job.
    async fn commit_all(&mut self) -> Result<u64, Failure> {
        self.finish_batches().await?;
        if let Some((hour, column)) = self.hour.clone() {
            return self.commit_hour(&hour, &column).await;
        }
        let write = match self.mode {
            TableMode::Replace => WriteDisposition::Truncate,
            TableMode::Append | TableMode::Hourly(_) => WriteDisposition::Append,
        };
        let done = self.bq.copy_table(&self.commit_job, &self.staging, &self.table, write).await.map_err(|e| self.failure(e))?;
        failpoint::hit("load:commit", &self.export).await?;
        if done.rows != self.loaded {
            tracing::warn!(table = %self.table, copied = done.rows, loaded = self.loaded, "the commit copied another number of rows than were loaded");
        }
        Ok(done.rows)
    }

    /// Replaces the hour in the table with the staged rows in one transaction (a query job
    /// named by the load, so that it runs once), creating the table, partitioned by day on
    /// the hour column, when it is missing; returns the rows the table then holds for the hour.
    async fn commit_hour(&self, hour: &CursorValue, column: &str) -> Result<u64, Failure> {
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
            staging = q(&self.staging),
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
}

#[async_trait]
impl TableLoad for Load {
    async fn write(&mut self, batch: &RecordBatch) -> Result<(), Failure> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.pending_rows += batch.num_rows();
        self.pending.push(batch.clone());
        if self.pending_rows >= self.batch_rows {
            self.flush().await?;
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<u64, Failure> {
        let committed = self.commit_all().await;
        // Whatever the outcome, the staging table holds nothing the table needs any more: a
        // commit job that ran has copied it, and one that did not run must not later.
        self.inflight.abort_all();
        while self.inflight.join_next().await.is_some() {}
        if let Err(e) = self.bq.delete_table(&self.staging).await {
            tracing::warn!(table = %self.staging, error = %e, "could not delete a staging table; it expires in a day");
        }
        committed
    }

    async fn abort(mut self: Box<Self>) {
        // Batch loads still running stop here, before their table goes.
        self.inflight.abort_all();
        while self.inflight.join_next().await.is_some() {}
        if let Err(e) = self.bq.delete_table(&self.staging).await {
            tracing::warn!(table = %self.staging, error = %e, "could not delete a staging table; it expires in a day");
        }
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

/// `batches` as one Parquet file (Snappy-compressed).
///
/// BIGNUMERIC (`Decimal256(76, 38)`) columns whose values all fit 38 digits are written as
/// `DECIMAL(38, s)` with the largest scale that holds them, exactly: BigQuery loads any
/// Parquet decimal of precision ≤ 76 into BIGNUMERIC, and readers that know only 128-bit
/// decimals (the emulator's) then read them exactly too. Other values stay 256-bit.
fn parquet_file(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, String> {
    use parquet::arrow::ArrowWriter;
    use parquet::basic::Compression;
    use parquet::file::properties::WriterProperties;

    let narrowed = narrow_decimals(schema, batches)?;
    let (schema, batches) = match &narrowed {
        Some((schema, batches)) => (schema, batches.as_slice()),
        None => (schema, batches),
    };
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, Arc::clone(schema), Some(props)).map_err(|e| format!("Parquet: {e}"))?;
    for b in batches {
        w.write(b).map_err(|e| format!("Parquet: {e}"))?;
    }
    w.close().map_err(|e| format!("Parquet: {e}"))?;
    Ok(out)
}

/// The batches with each top-level `Decimal256` column as `Decimal128(38, s)`, where every
/// value of the file fits exactly; `None` when no column changes.
fn narrow_decimals(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Option<(SchemaRef, Vec<RecordBatch>)>, String> {
    use arrow_array::{Array, Decimal128Array, Decimal256Array};
    use arrow_buffer::i256;

    let mut scales: Vec<Option<i8>> = vec![None; schema.fields().len()];
    for (i, f) in schema.fields().iter().enumerate() {
        let DataType::Decimal256(_, from) = f.data_type() else { continue };
        // The fewest integer digits that hold every value, and no fractional digit may be cut.
        let mut int_digits = 0i32;
        let mut frac_needed = 0i32;
        for b in batches {
            let a = b.column(i).as_any().downcast_ref::<Decimal256Array>().ok_or("a BIGNUMERIC column is not 256-bit")?;
            for v in a.iter().flatten() {
                let digits = v.wrapping_abs().to_string().trim_start_matches('-').len() as i32;
                int_digits = int_digits.max(digits - i32::from(*from));
                let mut frac = i32::from(*from);
                let mut x = v;
                while frac > 0 && x % i256::from_i128(10) == i256::ZERO {
                    x /= i256::from_i128(10);
                    frac -= 1;
                }
                frac_needed = frac_needed.max(frac);
            }
        }
        let scale = 38 - int_digits.max(0);
        if scale >= frac_needed && scale <= i32::from(*from) {
            scales[i] = Some(scale as i8);
        }
    }
    if scales.iter().all(Option::is_none) {
        return Ok(None);
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .zip(&scales)
        .map(|(f, s)| match s {
            Some(s) => Field::new(f.name(), DataType::Decimal128(38, *s), f.is_nullable()).with_metadata(f.metadata().clone()),
            None => f.as_ref().clone(),
        })
        .collect();
    let narrowed_schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    let mut out = Vec::with_capacity(batches.len());
    for b in batches {
        let mut columns = b.columns().to_vec();
        for (i, s) in scales.iter().enumerate() {
            let (Some(s), DataType::Decimal256(_, from)) = (s, schema.field(i).data_type()) else { continue };
            let a = b.column(i).as_any().downcast_ref::<Decimal256Array>().ok_or("a BIGNUMERIC column is not 256-bit")?;
            let div = i256::from_i128(10).wrapping_pow(u32::try_from(i32::from(*from) - i32::from(*s)).unwrap_or(0));
            let values: Decimal128Array = a.iter().map(|v| v.and_then(|v| (v / div).to_i128())).collect();
            if values.null_count() != a.null_count() {
                return Err("a BIGNUMERIC value did not fit while narrowing it".into());
            }
            columns[i] = Arc::new(values.with_precision_and_scale(38, *s).map_err(|e| e.to_string())?);
        }
        out.push(RecordBatch::try_new(Arc::clone(&narrowed_schema), columns).map_err(|e| e.to_string())?);
    }
    Ok(Some((narrowed_schema, out)))
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

    #[test]
    fn bignumeric_values_that_fit_38_digits_are_narrowed_exactly() {
        let (schema, batches) = big(&[Some("12345678901234567890.123456789012345678"), Some("-1.5"), None]);
        let (s, b) = narrow_decimals(&schema, &batches).unwrap().expect("narrowed");
        assert_eq!(s.field(0).data_type(), &DataType::Decimal128(38, 18));
        let a = b[0].column(0).as_any().downcast_ref::<Decimal128Array>().unwrap();
        assert_eq!(a.value_as_string(0), "12345678901234567890.123456789012345678");
        assert_eq!(a.value_as_string(1), "-1.500000000000000000");
        assert!(a.is_null(2));
    }

    #[test]
    fn bignumeric_values_wider_than_38_digits_stay_256_bit() {
        let (schema, batches) = big(&[Some("12345678901234567890123456789012345678.5")]);
        assert!(narrow_decimals(&schema, &batches).unwrap().is_none());
        let (schema, batches) = big(&[Some("1.00000000000000000000000000000000000001")]);
        assert!(narrow_decimals(&schema, &batches).unwrap().is_none(), "38 decimals and an integer digit need 39");
    }
}
