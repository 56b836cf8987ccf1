//! A table source read through the Storage Read API: the window as a row restriction of typed
//! literals, the configured columns as the selected fields, and the streams' batches conformed
//! to the schema the REST path gives (the table's own schema, the configured column order), so
//! that both paths deliver the same bytes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow_array::cast::AsArray;
use arrow_array::types::Decimal128Type;
use arrow_array::{make_array, Array, ArrayRef, Decimal256Array, RecordBatch, RecordBatchOptions};
use arrow_buffer::i256;
use arrow_schema::DataType;
use async_trait::async_trait;
use ferry_core::cursor::CursorValue;
use ferry_core::ident::quote_column;
use ferry_core::rows::SchemaRef;
use ferry_core::{BatchReader, Classify, ErrorClass, Failure, NullRows, Window};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{GrpcError, Session, StorageRead, StreamBatches};

/// How often one stream is opened again after it broke off, each time from the row after the
/// last one received.
const STREAM_RETRIES: u32 = 3;

/// The row restriction selecting `window` of the `cursor` column (empty: every row), as the
/// REST path's `WHERE`.
pub fn restriction(cursor: Option<&str>, window: &Window) -> String {
    let Some(cursor) = cursor else { return String::new() };
    let c = quote_column(cursor);
    let mut range = Vec::new();
    if let Some(lo) = &window.lo {
        range.push(format!("{c} > {}", lo.sql_literal()));
    }
    if let Some(hi) = &window.hi {
        range.push(format!("{c} <= {}", hi.sql_literal()));
    }
    let arrived = |column: &str, lo: &Option<i64>, hi: i64| {
        let a = quote_column(column);
        let hi = CursorValue::Timestamp(hi).sql_literal();
        match lo {
            Some(lo) => format!("{c} IS NULL AND {a} > {} AND {a} <= {hi}", CursorValue::Timestamp(*lo).sql_literal()),
            None => format!("{c} IS NULL AND {a} <= {hi}"),
        }
    };
    match (range.is_empty(), &window.nulls) {
        (true, NullRows::Included) => String::new(),
        (true, NullRows::Excluded) => format!("{c} IS NOT NULL"),
        (false, NullRows::Excluded) => range.join(" AND "),
        (false, NullRows::Included) => format!("({}) OR {c} IS NULL", range.join(" AND ")),
        (true, NullRows::Arrived { column, lo, hi }) => arrived(column, lo, *hi),
        (false, NullRows::Arrived { column, lo, hi }) => format!("({}) OR ({})", range.join(" AND "), arrived(column, lo, *hi)),
    }
}

/// `batch` with the columns of `schema`, in its order, typed as it says: a column whose type
/// differs only in the names or metadata of nested fields is relabelled; any other difference is
/// an error naming the table and the column.
pub fn conform(batch: &RecordBatch, schema: &SchemaRef, table: &str) -> Result<RecordBatch, String> {
    let got = batch.schema();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let Some(i) = got.fields().iter().position(|f| f.name().eq_ignore_ascii_case(field.name())) else {
            return Err(format!("table {table}: the Storage Read API returned no column {}", field.name()));
        };
        let column = batch.column(i);
        if column.data_type() == field.data_type() {
            columns.push(column.clone());
        } else if let (DataType::Decimal128(_, from), DataType::Decimal256(precision, to)) = (column.data_type(), field.data_type()) {
            // BIGNUMERIC as a server without 256-bit decimals sends it: rescaled exactly (the
            // target scale is never smaller).
            columns.push(widen_decimal(column, *from, *precision, *to).map_err(|e| format!("table {table} column {}: {e}", field.name()))?);
        } else if column.data_type().equals_datatype(field.data_type()) {
            let data = column
                .to_data()
                .into_builder()
                .data_type(field.data_type().clone())
                .build()
                .map_err(|e| format!("table {table} column {}: {e}", field.name()))?;
            columns.push(make_array(data));
        } else {
            return Err(format!(
                "table {table} column {}: the Storage Read API returned {}, where ferry reads {}; set bigquery.read_api to \"rest\" (it applies to every table source of the config)",
                field.name(),
                column.data_type(),
                field.data_type()
            ));
        }
    }
    RecordBatch::try_new_with_options(schema.clone(), columns, &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())))
        .map_err(|e| format!("table {table}: {e}"))
}

/// A `Decimal128` column of scale `from` as `Decimal256(precision, to)`, value for value.
fn widen_decimal(column: &ArrayRef, from: i8, precision: u8, to: i8) -> Result<ArrayRef, String> {
    if to < from {
        return Err(format!("a decimal of scale {from} cannot become one of scale {to} without rounding"));
    }
    let factor = i256::from_i128(10).checked_pow((to - from) as u32).ok_or("decimal scale out of range")?;
    let values = column.as_primitive::<Decimal128Type>();
    let widened: Decimal256Array = values.iter().map(|v| v.and_then(|v| i256::from_i128(v).checked_mul(factor))).collect();
    if widened.null_count() != values.null_count() {
        return Err("a decimal value does not fit 256 bits".into());
    }
    Ok(Arc::new(widened.with_precision_and_scale(precision, to).map_err(|e| e.to_string())?))
}

/// The batches of every stream of a session, `concurrency` streams read at a time.
///
/// Each stream is read by a task that decodes and conforms its batches and hands them over one
/// at a time; a task takes the next message only once it has a place to hand its batch to, so
/// two batches (one with the caller, one being decoded or handed over) and the other streams'
/// HTTP/2 windows (up to 2 MiB each) are in memory at once. The caller encodes one batch while
/// the next is decoded; the streams open at once let the server prepare and send their rows
/// meanwhile. Rows come in no particular order: the window's bounds were fixed at plan time.
pub struct StorageReader {
    schema: SchemaRef,
    batches: mpsc::Receiver<Result<RecordBatch, Failure>>,
    tasks: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    streams: usize,
}

/// What the stream tasks share.
struct Shared {
    read: StorageRead,
    session: Session,
    /// Streams no task has taken yet.
    queue: Mutex<VecDeque<String>>,
    /// Streams read to their end.
    finished: AtomicUsize,
    schema: SchemaRef,
    table: String,
    export: String,
}

impl StorageReader {
    /// Starts reading `session`'s streams, `concurrency` at a time, conforming each batch to
    /// `schema`.
    pub fn start(read: StorageRead, session: Session, schema: SchemaRef, table: String, export: String, concurrency: usize) -> Self {
        let streams = session.streams.len();
        let shared = Arc::new(Shared {
            read,
            queue: Mutex::new(session.streams.iter().cloned().collect()),
            session,
            finished: AtomicUsize::new(0),
            schema: schema.clone(),
            table,
            export,
        });
        let (tx, batches) = mpsc::channel(1);
        let tasks = if streams == 0 { 0 } else { concurrency.clamp(1, streams) };
        let tasks = (0..tasks).map(|_| tokio::spawn(read_streams(shared.clone(), tx.clone()))).collect();
        Self { schema, batches, tasks, shared, streams }
    }
}

/// Takes streams from the queue and reads each to its end; stops at the first failure, which
/// it hands over in place of a batch.
async fn read_streams(shared: Arc<Shared>, tx: mpsc::Sender<Result<RecordBatch, Failure>>) {
    loop {
        let Some(stream) = shared.queue.lock().expect("the stream queue").pop_front() else { return };
        match shared.read_stream(&stream, &tx).await {
            Ok(()) => {
                shared.finished.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}

impl Shared {
    /// Every batch of `stream`, handed to `tx`; a stream that breaks off is read again from the
    /// row after the last one received, up to [`STREAM_RETRIES`] times.
    async fn read_stream(&self, stream: &str, tx: &mpsc::Sender<Result<RecordBatch, Failure>>) -> Result<(), Failure> {
        let mut retries = 0;
        let mut batches = self.open(stream, 0, &mut retries).await?;
        loop {
            // The place in the hand-over first, then the next message: a task never holds a
            // decoded batch while it waits, so at most one batch is being decoded or waiting to
            // be taken, whatever the number of streams (the others' data waits in their
            // HTTP/2 stream windows).
            let Ok(place) = tx.reserve().await else {
                // The reader is gone: nobody wants the rest.
                return Ok(());
            };
            match batches.next().await {
                Ok(Some(batch)) => {
                    let batch = conform(&batch, &self.schema, &self.table)
                        .map_err(|e| Failure::with_class(ErrorClass::Permanent, format!("export {}: {e}", self.export)))?;
                    place.send(Ok(batch));
                }
                Ok(None) => return Ok(()),
                Err(e) if e.class() == ErrorClass::Transient && retries < STREAM_RETRIES => {
                    // The place is given back while the stream is opened again, so that the
                    // other streams go on meanwhile.
                    drop(place);
                    retries += 1;
                    let offset = batches.rows;
                    tracing::warn!(export = %self.export, stream, offset, attempt = retries, error = %e, "a Storage Read stream broke off; reading it again from where it stopped");
                    batches = self.open(stream, offset, &mut retries).await?;
                }
                Err(e) => return Err(self.fail(e)),
            }
        }
    }

    /// Opens `stream` at row `offset`; a transient failure is tried again, counted in
    /// `retries` with the stream's other retries (up to [`STREAM_RETRIES`] for the stream in
    /// all), after growing pauses.
    async fn open(&self, stream: &str, offset: i64, retries: &mut u32) -> Result<StreamBatches, Failure> {
        loop {
            if *retries > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(500 << (*retries).min(6))).await;
            }
            match self.read.read_stream(&self.session, stream, offset).await {
                Ok(mut batches) => {
                    batches.rows = offset;
                    return Ok(batches);
                }
                Err(e) if e.class() == ErrorClass::Transient && *retries < STREAM_RETRIES => {
                    tracing::warn!(export = %self.export, stream, offset, attempt = *retries, error = %e, "a Storage Read stream could not be opened; trying again");
                    *retries += 1;
                }
                Err(e) => return Err(self.fail(e)),
            }
        }
    }

    fn fail(&self, e: GrpcError) -> Failure {
        Failure::with_class(e.class(), format!("export {}: table {}: BigQuery Storage Read {e}", self.export, self.table))
    }
}

#[async_trait]
impl BatchReader for StorageReader {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn next_batch(&mut self) -> Result<Option<RecordBatch>, Failure> {
        match self.batches.recv().await {
            Some(batch) => batch.map(Some),
            // Every task is gone: the end only if every stream was read to its end (a task
            // that panicked would otherwise look like one).
            None if self.shared.finished.load(Ordering::SeqCst) == self.streams => Ok(None),
            None => Err(Failure::with_class(
                ErrorClass::Transient,
                format!(
                    "export {}: table {}: a Storage Read stream stopped before its end ({} of {} streams read)",
                    self.shared.export,
                    self.shared.table,
                    self.shared.finished.load(Ordering::SeqCst),
                    self.streams
                ),
            )),
        }
    }
}

impl Drop for StorageReader {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    #[test]
    fn a_window_becomes_a_restriction_of_typed_literals() {
        let ts = |s: i64| Some(CursorValue::Timestamp(1_767_225_600_000_000 + s * 1_000_000));
        assert_eq!(restriction(None, &Window::between(None, None)), "");
        assert_eq!(restriction(Some("updated_at"), &Window::between(None, None)), "`updated_at` IS NOT NULL");
        assert_eq!(
            restriction(Some("updated_at"), &Window::between(ts(0), ts(1))),
            "`updated_at` > TIMESTAMP '2026-01-01 00:00:00.000000+00:00' AND `updated_at` <= TIMESTAMP '2026-01-01 00:00:01.000000+00:00'"
        );
        let day = |d| Some(CursorValue::Date(NaiveDate::from_ymd_opt(2026, 1, d).unwrap()));
        let w = Window { lo: day(1), hi: day(2), nulls: NullRows::Included };
        assert_eq!(restriction(Some("d"), &w), "(`d` > DATE '2026-01-01' AND `d` <= DATE '2026-01-02') OR `d` IS NULL");
        let w =
            Window { lo: None, hi: Some(CursorValue::Int64(-3)), nulls: NullRows::Arrived { column: "loaded".into(), lo: None, hi: 0 } };
        assert_eq!(restriction(Some("n"), &w), "(`n` <= -3) OR (`n` IS NULL AND `loaded` <= TIMESTAMP '1970-01-01 00:00:00.000000+00:00')");
        let dt = CursorValue::Datetime(NaiveDate::from_ymd_opt(2026, 1, 1).unwrap().and_hms_micro_opt(1, 2, 3, 4).unwrap());
        assert_eq!(dt.sql_literal(), "DATETIME '2026-01-01 01:02:03.000004'");
    }

    #[test]
    fn a_narrow_decimal_widens_exactly() {
        let narrow: ArrayRef = Arc::new(
            arrow_array::Decimal128Array::from(vec![Some(12_345_000_000_000_000_000i128), None, Some(-1)])
                .with_precision_and_scale(38, 18)
                .unwrap(),
        );
        let wide = widen_decimal(&narrow, 18, 76, 38).unwrap();
        let wide = wide.as_primitive::<arrow_array::types::Decimal256Type>();
        assert_eq!(wide.value_as_string(0), "12.34500000000000000000000000000000000000");
        assert!(wide.is_null(1));
        assert_eq!(wide.value_as_string(2), "-0.00000000000000000100000000000000000000");
        assert!(widen_decimal(&narrow, 18, 76, 9).is_err(), "no rounding");
    }
}
