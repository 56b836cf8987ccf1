//! A source of rows held in memory: `(id, seq)`, both INT64, with `seq` the cursor.

use std::sync::{Arc, Mutex};

use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use ferry_core::config::ExportSpec;
use ferry_core::cursor::CursorValue;
use ferry_core::{BatchReader, Failure, Source, Window};

/// Rows `(id, seq)` that tests add to; reads return the window's rows in batches of
/// `batch_rows`. Clones share the rows.
#[derive(Debug, Clone)]
pub struct MemorySource {
    rows: Arc<Mutex<Vec<(i64, i64)>>>,
    batch_rows: usize,
}

impl MemorySource {
    /// An empty source reading `batch_rows` rows per batch.
    pub fn new(batch_rows: usize) -> Self {
        Self { rows: Arc::default(), batch_rows: batch_rows.max(1) }
    }

    /// Adds rows `(id, seq)`.
    pub fn push(&self, rows: impl IntoIterator<Item = (i64, i64)>) {
        self.rows.lock().unwrap_or_else(|e| e.into_inner()).extend(rows);
    }

    /// Every id, in insertion order.
    pub fn ids(&self) -> Vec<i64> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|r| r.0).collect()
    }

    /// The schema of every batch.
    pub fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("seq", DataType::Int64, false)]))
    }
}

fn int(v: &Option<CursorValue>) -> Option<i64> {
    match v {
        Some(CursorValue::Int64(i)) => Some(*i),
        _ => None,
    }
}

#[async_trait]
impl Source for MemorySource {
    async fn upper_bound(&self, _export: &ExportSpec, _run_date: &str) -> Result<Option<CursorValue>, Failure> {
        Ok(self.rows.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|r| r.1).max().map(CursorValue::Int64))
    }

    async fn read(&self, _export: &ExportSpec, window: &Window, _run_date: &str) -> Result<Box<dyn BatchReader>, Failure> {
        let (lo, hi) = (int(&window.lo), int(&window.hi));
        let rows: Vec<(i64, i64)> = self
            .rows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .filter(|(_, seq)| lo.is_none_or(|lo| *seq > lo) && hi.is_none_or(|hi| *seq <= hi))
            .collect();
        Ok(Box::new(Reader { rows, at: 0, batch_rows: self.batch_rows }))
    }

    fn read_sql(&self, _export: &ExportSpec, window: &Window) -> String {
        format!("memory rows with seq in {window}")
    }

    fn describe(&self, _export: &ExportSpec) -> String {
        "memory".into()
    }
}

struct Reader {
    rows: Vec<(i64, i64)>,
    at: usize,
    batch_rows: usize,
}

#[async_trait]
impl BatchReader for Reader {
    fn schema(&self) -> SchemaRef {
        MemorySource::schema()
    }

    async fn next_batch(&mut self) -> Result<Option<RecordBatch>, Failure> {
        if self.at >= self.rows.len() {
            return Ok(None);
        }
        let part = &self.rows[self.at..(self.at + self.batch_rows).min(self.rows.len())];
        self.at += part.len();
        let batch = RecordBatch::try_new(
            MemorySource::schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(part.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(part.iter().map(|r| r.1))),
            ],
        )
        .expect("two INT64 columns");
        Ok(Some(batch))
    }
}
