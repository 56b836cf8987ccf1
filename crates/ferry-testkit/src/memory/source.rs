//! A source of rows held in memory: `(id, seq)`, with `seq` the cursor: INT64 by default, or
//! any cursor type, and NULL for rows without a cursor value. Its clock can be set, so that the
//! planning rules (`settle`, complete days) are tested without waiting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use ferry_core::config::ExportSpec;
use ferry_core::cursor::{CursorType, CursorValue};
use ferry_core::{BatchReader, Bounds, DeleteFailure, Failure, NullRows, Source, Window};

use crate::faults::Faults;

use super::Clock;

/// A row: its id and its cursor value (`None`: NULL).
type Row = (i64, Option<CursorValue>);

/// Rows `(id, seq)` that tests add to; reads return the window's rows in batches of
/// `batch_rows`. Clones share the rows and the clock.
#[derive(Debug, Clone)]
pub struct MemorySource {
    rows: Arc<Mutex<Vec<Row>>>,
    /// The arrival column's value of rows that have one (microseconds since the epoch).
    arrived: Arc<Mutex<HashMap<i64, i64>>>,
    batch_rows: usize,
    ty: CursorType,
    clock: Clock,
    /// Consulted by [`Source::delete`] (`source.delete`).
    faults: Faults,
}

impl MemorySource {
    /// An empty source with an INT64 cursor, reading `batch_rows` rows per batch.
    pub fn new(batch_rows: usize) -> Self {
        Self::typed(batch_rows, CursorType::Int64)
    }

    /// An empty source whose cursor has type `ty`.
    pub fn typed(batch_rows: usize, ty: CursorType) -> Self {
        Self {
            rows: Arc::default(),
            arrived: Arc::default(),
            batch_rows: batch_rows.max(1),
            ty,
            clock: Clock::default(),
            faults: Faults::default(),
        }
    }

    /// The same source, consulting `faults` when it deletes rows.
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// The source's clock (what [`Source::bounds`] reports as `now`); move or set it.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Adds rows `(id, seq)` with an INT64 cursor.
    pub fn push(&self, rows: impl IntoIterator<Item = (i64, i64)>) {
        self.push_values(rows.into_iter().map(|(id, seq)| (id, Some(CursorValue::Int64(seq)))));
    }

    /// Adds rows with a cursor value of the source's type (`None`: NULL).
    pub fn push_values(&self, rows: impl IntoIterator<Item = (i64, Option<CursorValue>)>) {
        let mut all = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        for (id, v) in rows {
            assert!(v.as_ref().is_none_or(|v| v.ty() == self.ty), "row {id}: a {:?} cursor in a {:?} source", v.map(|v| v.ty()), self.ty);
            all.push((id, v));
        }
    }

    /// Adds rows whose cursor is NULL.
    pub fn push_nulls(&self, ids: impl IntoIterator<Item = i64>) {
        self.push_values(ids.into_iter().map(|id| (id, None)));
    }

    /// Adds rows whose cursor is NULL and whose arrival column (`null_cursor:
    /// {"arrival_column"}`) holds `at`.
    pub fn push_nulls_arrived(&self, ids: impl IntoIterator<Item = i64>, at: chrono::DateTime<chrono::Utc>) {
        let ids: Vec<i64> = ids.into_iter().collect();
        self.arrived.lock().unwrap_or_else(|e| e.into_inner()).extend(ids.iter().map(|id| (*id, at.timestamp_micros())));
        self.push_nulls(ids);
    }

    /// Every id, in insertion order.
    pub fn ids(&self) -> Vec<i64> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|r| r.0).collect()
    }

    /// The schema of every batch of an INT64 source.
    pub fn schema() -> SchemaRef {
        Self::schema_of(CursorType::Int64)
    }

    /// The schema of every batch: `seq` is INT64, or its canonical text for other types.
    pub fn schema_of(ty: CursorType) -> SchemaRef {
        let seq = if ty == CursorType::Int64 { DataType::Int64 } else { DataType::Utf8 };
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("seq", seq, true)]))
    }

    fn window_rows(&self, window: &Window) -> Vec<Row> {
        let above = |v: &CursorValue| window.lo.as_ref().is_none_or(|lo| v.compare(lo) == Some(std::cmp::Ordering::Greater));
        let below = |v: &CursorValue| window.hi.as_ref().is_none_or(|hi| v.compare(hi) != Some(std::cmp::Ordering::Greater));
        let arrived = self.arrived.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.rows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(id, v)| match v {
                Some(v) => above(v) && below(v),
                None => match &window.nulls {
                    NullRows::Excluded => false,
                    NullRows::Included => true,
                    NullRows::Arrived { lo, hi, .. } => arrived.get(id).is_some_and(|at| lo.is_none_or(|lo| *at > lo) && *at <= *hi),
                },
            })
            .cloned()
            .collect()
    }
}

#[async_trait]
impl Source for MemorySource {
    async fn bounds(&self, _export: &ExportSpec, _run_date: &str) -> Result<Bounds, Failure> {
        let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        let mut max: Option<CursorValue> = None;
        for v in rows.iter().filter_map(|r| r.1.as_ref()) {
            if max.as_ref().is_none_or(|m| v.compare(m) == Some(std::cmp::Ordering::Greater)) {
                max = Some(v.clone());
            }
        }
        Ok(Bounds { max, now: self.clock.now(), null_rows: rows.iter().filter(|r| r.1.is_none()).count() as u64 })
    }

    async fn count(&self, _export: &ExportSpec, window: &Window, _run_date: &str) -> Result<u64, Failure> {
        Ok(self.window_rows(window).len() as u64)
    }

    async fn read(&self, _export: &ExportSpec, window: &Window, _run_date: &str) -> Result<Box<dyn BatchReader>, Failure> {
        Ok(Box::new(Reader { rows: self.window_rows(window), at: 0, batch_rows: self.batch_rows, ty: self.ty }))
    }

    async fn delete(&self, _export: &ExportSpec, window: &Window, expected: u64) -> Result<u64, DeleteFailure> {
        let sure = |failure: Failure| DeleteFailure { failure, maybe_deleted: false };
        let pass = self.faults.enter("source.delete", &window.to_string()).await.map_err(sure)?;
        let doomed: Vec<i64> = self.window_rows(window).iter().map(|r| r.0).collect();
        if doomed.len() as u64 != expected {
            return Err(sure(Failure::with_class(
                ferry_core::ErrorClass::Transient,
                format!("the window holds {} rows, not {expected}; nothing was deleted", doomed.len()),
            )));
        }
        self.rows.lock().unwrap_or_else(|e| e.into_inner()).retain(|r| !doomed.contains(&r.0));
        pass.reply(Ok(expected)).map_err(|failure| DeleteFailure { failure, maybe_deleted: true })
    }

    fn read_sql(&self, _export: &ExportSpec, window: &Window) -> String {
        format!("memory rows with seq in {window}")
    }

    fn describe(&self, _export: &ExportSpec) -> String {
        "memory".into()
    }
}

struct Reader {
    rows: Vec<Row>,
    at: usize,
    batch_rows: usize,
    ty: CursorType,
}

#[async_trait]
impl BatchReader for Reader {
    fn schema(&self) -> SchemaRef {
        MemorySource::schema_of(self.ty)
    }

    async fn next_batch(&mut self) -> Result<Option<RecordBatch>, Failure> {
        if self.at >= self.rows.len() {
            return Ok(None);
        }
        let part = &self.rows[self.at..(self.at + self.batch_rows).min(self.rows.len())];
        self.at += part.len();
        let seq: ArrayRef = if self.ty == CursorType::Int64 {
            Arc::new(Int64Array::from_iter(part.iter().map(|r| match r.1 {
                Some(CursorValue::Int64(i)) => Some(i),
                _ => None,
            })))
        } else {
            Arc::new(StringArray::from_iter(part.iter().map(|r| r.1.as_ref().map(CursorValue::canonical))))
        };
        let batch = RecordBatch::try_new(self.schema(), vec![Arc::new(Int64Array::from_iter_values(part.iter().map(|r| r.0))), seq])
            .expect("an INT64 and a cursor column");
        Ok(Some(batch))
    }
}
