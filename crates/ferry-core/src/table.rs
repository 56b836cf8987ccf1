//! The Table role: a database table that windows of rows are loaded into (the destination shape
//! of the loaders: BigQuery, Postgres).

use async_trait::async_trait;

use crate::rows::{RecordBatch, SchemaRef};
use crate::Failure;

/// A table rows are loaded into.
///
/// Contract every implementation MUST keep:
/// - **All or nothing.** Rows written to a [`TableLoad`] are invisible to readers of the table
///   until [`TableLoad::commit`], which makes all of them visible at once; a load that is
///   aborted, fails or is dropped leaves the table as it was.
/// - **Named loads.** A load is named by `load_id` (the run id) when it begins, and
///   [`TableSink::committed`] answers whether the load of that name committed, durably, so a
///   run that lost the answer to its commit is settled by the next run without loading its
///   rows twice. Committing a load whose name already committed loads nothing more.
/// - Errors name the table and never contain credentials.
#[async_trait]
pub trait TableSink: Send + Sync {
    /// Starts a load named `load_id` of rows of `schema`.
    async fn begin(&self, load_id: &str, schema: SchemaRef) -> Result<Box<dyn TableLoad>, Failure>;
    /// Starts a load named `load_id` that replaces one hour of the table: every row committed
    /// gets `hour` (the hour's first instant, typed like the cursor) in the hourly column, and
    /// the commit removes the rows that hour had before, in the same transaction, so loading an
    /// hour again is idempotent. [`TableLoad::commit`] returns the rows the table holds for
    /// that hour afterwards. Sinks without hourly loads refuse.
    async fn begin_hour(&self, load_id: &str, schema: SchemaRef, hour: &crate::cursor::CursorValue) -> Result<Box<dyn TableLoad>, Failure> {
        let _ = (load_id, schema, hour);
        Err(Failure::with_class(crate::ErrorClass::Permanent, format!("{} does not load hours", self.describe())))
    }
    /// Whether the load named `load_id` committed.
    async fn committed(&self, load_id: &str) -> Result<bool, Failure>;
    /// Human-readable destination, e.g. `bigquery://project.dataset.table`.
    fn describe(&self) -> String;
}

/// One load in progress. Finish with [`TableLoad::commit`] or [`TableLoad::abort`].
#[async_trait]
pub trait TableLoad: Send {
    /// Adds rows to the load.
    async fn write(&mut self, batch: &RecordBatch) -> Result<(), Failure>;
    /// Makes every row written visible at once; returns the number of rows the table took.
    async fn commit(self: Box<Self>) -> Result<u64, Failure>;
    /// Discards the load.
    async fn abort(self: Box<Self>);
}
