//! The roles a run is made of, besides the [`Sink`](crate::Sink): where rows come from
//! ([`Source`]), where runs and watermarks are recorded ([`StateStore`]) and who hears about
//! them ([`Notifier`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::ExportSpec;
use crate::cursor::CursorValue;
use crate::rows::{RecordBatch, SchemaRef};
use crate::Failure;

/// The rows an export reads: `(lo, hi]` of its cursor column, and with [`NullRows::Included`]
/// also every row whose cursor is NULL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Exclusive lower bound; `None` reads from the beginning (first run, full export).
    pub lo: Option<CursorValue>,
    /// Inclusive upper bound fixed at plan time; `None` when the export has no cursor, or when
    /// no row has a cursor value.
    pub hi: Option<CursorValue>,
    /// Whether rows with a NULL cursor belong to the window.
    pub nulls: NullRows,
}

impl Window {
    /// `(lo, hi]` without NULL cursors.
    pub fn between(lo: Option<CursorValue>, hi: Option<CursorValue>) -> Self {
        Self { lo, hi, nulls: NullRows::Excluded }
    }
}

/// Rows whose cursor column is NULL: no window of cursor values holds them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NullRows {
    /// Not read (incremental runs: they are counted and reported instead).
    #[default]
    Excluded,
    /// Read with the window (full and non-incremental exports).
    Included,
    /// Those whose TIMESTAMP `column` is in `(lo, hi]` (microseconds since the epoch; `lo`
    /// `None`: from the beginning) are read with the window (`null_cursor: {"arrival_column"}`).
    Arrived { column: String, lo: Option<i64>, hi: i64 },
}

impl std::fmt::Display for Window {
    /// `(lo, hi]` with canonical values; `-∞` / `∞` for an open side; `+ NULL` when rows with a
    /// NULL cursor are read too.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side = |v: &Option<CursorValue>, open: &str| v.as_ref().map(|v| v.canonical()).unwrap_or_else(|| open.to_owned());
        write!(f, "({}, {}]", side(&self.lo, "-∞"), side(&self.hi, "∞"))?;
        match &self.nulls {
            NullRows::Excluded => {}
            NullRows::Included => f.write_str(" + NULL")?,
            NullRows::Arrived { column, lo, hi } => {
                let at = |us: i64| crate::text::format_timestamp(us);
                write!(f, " + NULL with {column} in ({}, {}]", lo.map(at).unwrap_or_else(|| "-∞".to_owned()), at(*hi))?;
            }
        }
        Ok(())
    }
}

/// What a source says about its cursor column at plan time, from one look at the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounds {
    /// `MAX(cursor)`, typed like the column; `None` when no row has a cursor value.
    pub max: Option<CursorValue>,
    /// The source's own clock when it looked (BigQuery: `CURRENT_TIMESTAMP()`), so that
    /// `settle` does not depend on the clock of the machine ferry runs on.
    pub now: DateTime<Utc>,
    /// Rows whose cursor is NULL.
    pub null_rows: u64,
}

/// A stream of typed row batches (see [`crate::rows`]).
#[async_trait]
pub trait BatchReader: Send {
    /// The columns of every batch, in order.
    fn schema(&self) -> SchemaRef;
    /// The next batch of rows; `None` after the last.
    async fn next_batch(&mut self) -> Result<Option<RecordBatch>, Failure>;
}

/// Where rows come from.
///
/// Contract:
/// - Identifiers are validated and quoted; every value (window bounds, run date) is bound as a
///   typed query parameter, never pasted into SQL.
/// - [`Source::read`] returns exactly the rows with `lo < cursor <= hi`, plus the rows whose
///   cursor is NULL when the window includes them (in no particular order: `hi` is fixed at
///   plan time), decoded into typed batches, and holds a bounded number of batches in memory
///   whatever the window's size. [`Source::count`] counts the same rows.
/// - [`Source::bounds`] reads `MAX(cursor)`, the NULL-cursor count and the source's clock in
///   one consistent look (one query).
#[async_trait]
pub trait Source: Send + Sync {
    /// `MAX(cursor)`, the number of rows whose cursor is NULL and the source's clock, for an
    /// export with a cursor column.
    async fn bounds(&self, export: &ExportSpec, run_date: &str) -> Result<Bounds, Failure>;

    /// How many rows [`Source::read`] would return for `window` now.
    async fn count(&self, export: &ExportSpec, window: &Window, run_date: &str) -> Result<u64, Failure>;

    /// Starts reading the window.
    async fn read(&self, export: &ExportSpec, window: &Window, run_date: &str) -> Result<Box<dyn BatchReader>, Failure>;

    /// Deletes exactly the rows [`Source::read`] returns for `window`, when they are
    /// `expected` rows, in one transaction; any other number deletes nothing and fails. Returns
    /// the rows deleted. A failure says whether the rows may have gone all the same (the answer
    /// to the commit was lost). Sources that cannot delete refuse.
    async fn delete(&self, export: &ExportSpec, window: &Window, expected: u64) -> Result<u64, DeleteFailure> {
        let _ = (window, expected);
        Err(DeleteFailure {
            failure: Failure::with_class(
                crate::ErrorClass::Permanent,
                format!("export {}: source type {} cannot delete rows", export.name, export.source.type_name),
            ),
            maybe_deleted: false,
        })
    }

    /// The statement [`Source::read`] runs, for `ferry plan`.
    fn read_sql(&self, export: &ExportSpec, window: &Window) -> String;

    /// The source's display name (table, or `query`).
    fn describe(&self, export: &ExportSpec) -> String;
}

/// Why [`Source::delete`] failed, and whether the rows may have been deleted all the same.
#[derive(Debug)]
pub struct DeleteFailure {
    pub failure: Failure,
    /// `false`: nothing was deleted, for certain. `true`: the delete may have committed.
    pub maybe_deleted: bool,
}

/// Status of a run, as recorded in the metadata table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// The file was verified on the server and is about to be published.
    Pending,
    /// Delivered; the watermark moved to this run's `hi`.
    Success,
    /// Nothing new to deliver.
    Empty,
    /// Failed; the watermark did not move.
    Failed,
    /// Handed to a Cloud Run Job execution (named in [`RunRecord::execution`]), which runs the
    /// export and records its own outcome. Moves nothing; a redelivery of the same message
    /// finds it and starts no second execution.
    Dispatched,
}

impl RunStatus {
    /// The text stored in `export_status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Success => "SUCCESS",
            Self::Empty => "EMPTY",
            Self::Failed => "FAILED",
            Self::Dispatched => "DISPATCHED",
        }
    }

    /// Parses `export_status`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "PENDING" => Self::Pending,
            "SUCCESS" => Self::Success,
            "EMPTY" => Self::Empty,
            "FAILED" => Self::Failed,
            "DISPATCHED" => Self::Dispatched,
            _ => return None,
        })
    }
}

/// One row of the metadata table.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub run_id: String,
    pub export_name: String,
    pub source_table: String,
    pub status: RunStatus,
    /// `hi` of the window; for SUCCESS the new watermark (canonical text).
    pub last_exported_value: Option<String>,
    /// `TIMESTAMP`, `DATETIME`, `DATE` or `INT64`.
    pub cursor_type: Option<String>,
    pub window_lo: Option<String>,
    pub rows_exported: u64,
    pub bytes: u64,
    /// SHA-256 of the file when the run delivered one file; per file in `files`.
    pub sha256: Option<String>,
    /// The delivered file's name; for a split export the names, joined by `, `.
    pub file_name: Option<String>,
    /// Every file of the run, in order. Empty in records written before ferry recorded them.
    pub files: Vec<FileRecord>,
    pub started_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    pub error_message: Option<String>,
    pub message_id: Option<String>,
    /// Rows whose cursor was NULL when the run planned (an incremental run does not deliver
    /// them); `None` for an export without a cursor and in records written before ferry
    /// counted them.
    pub null_cursor_rows: Option<u64>,
    /// With `null_cursor: {"arrival_column"}`: the upper bound of the arrival window this run
    /// read (canonical TIMESTAMP text); the next run's lower bound once SUCCESS.
    pub null_arrival_hi: Option<String>,
    /// The Cloud Run Job execution: in a DISPATCHED record the full name of the execution it
    /// started (`projects/P/locations/L/jobs/J/executions/E`); in the records of a run inside an
    /// execution, its id (`CLOUD_RUN_EXECUTION`). `None` otherwise.
    pub execution: Option<String>,
}

/// One file of a run, as delivered (or, in a PENDING record, as verified before publishing).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileRecord {
    pub name: String,
    pub bytes: u64,
    pub rows: u64,
    /// Hex SHA-256 of the file's bytes.
    pub sha256: String,
    /// The temporary name the file was written under before it was published; reconcile
    /// looks for it to finish an interrupted publish. `None` in records written before ferry
    /// recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp: Option<String>,
    /// For a file copied from a staging bucket: the object it was copied from. (`sha256` and
    /// `rows` are then empty and 0: the bytes are checked against the object's CRC32C.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectRecord>,
}

/// The staged object a delivered file was copied from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectRecord {
    /// `gs://bucket/name`.
    pub uri: String,
    pub generation: String,
    /// CRC32C as GCS writes it (base64 of the big-endian bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32c: Option<String>,
    /// MD5 as GCS writes it (base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
}

/// Where runs and watermarks are recorded.
///
/// Contract:
/// - Records are appended, never updated; the watermark of an export is the
///   `last_exported_value` of its latest SUCCESS record.
/// - "Latest" and every order below are the order in which the store recorded the records, by
///   its own clock or sequence, never the callers' `completed_at`: a record appended later is
///   later even when the clock of the process that wrote it is behind. (Records written before
///   a store kept that order are ordered by `completed_at`.)
/// - [`StateStore::append`] returns only once the record is durable and visible to
///   [`StateStore::watermark`], [`StateStore::pending`] and [`StateStore::by_message`].
/// - Leases serialise runs of one export: a run delivers only while it holds the export's
///   lease, so two runs never read the same window or settle each other's PENDING records.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// Creates the table if it does not exist.
    async fn ensure(&self) -> Result<(), Failure>;
    /// The latest SUCCESS record's `(cursor_type, last_exported_value)`.
    async fn watermark(&self, export: &str) -> Result<Option<(String, String)>, Failure>;
    /// The largest `null_arrival_hi` of the export's SUCCESS records: where the window of
    /// NULL-cursor rows by arrival starts (`null_cursor: {"arrival_column"}`).
    async fn null_arrival_mark(&self, export: &str) -> Result<Option<String>, Failure>;
    /// PENDING records with no later record of the same run: runs interrupted between
    /// recording their verified upload and publishing the final result.
    async fn pending(&self, export: &str) -> Result<Vec<RunRecord>, Failure>;
    /// Appends one record.
    async fn append(&self, record: &RunRecord) -> Result<(), Failure>;
    /// The latest records, newest first.
    async fn history(&self, export: Option<&str>, limit: u32) -> Result<Vec<RunRecord>, Failure>;
    /// Records of `export` appended by runs triggered by the message `message_id`.
    async fn by_message(&self, export: &str, message_id: &str) -> Result<Vec<RunRecord>, Failure>;

    /// Takes the export's lease for `holder` for `ttl`, waiting up to `wait` (which must be
    /// well below `ttl`) while another holder has a live one. At most one holder has a live
    /// lease on an export at any time, across every process sharing the store; an expired lease
    /// counts as free.
    async fn acquire(
        &self,
        export: &str,
        holder: &str,
        message_id: Option<&str>,
        ttl: std::time::Duration,
        wait: std::time::Duration,
    ) -> Result<Claim, Failure>;
    /// Extends a live lease by `ttl` from now. `Ok(false)` when `holder` no longer holds it
    /// (it expired, and another holder may have taken it): the holder must stop before it
    /// publishes anything.
    async fn renew(&self, export: &str, holder: &str, ttl: std::time::Duration) -> Result<bool, Failure>;
    /// Gives the lease up. Releasing a lease one does not hold does nothing. An operator frees
    /// the lease of a dead run by releasing it for the holder [`StateStore::lease`] names.
    async fn release(&self, export: &str, holder: &str) -> Result<(), Failure>;
    /// The export's lease as the store holds it, live or expired (by the store's clock);
    /// `None` when nobody claims it. While claims race, the oldest live one.
    async fn lease(&self, export: &str) -> Result<Option<Lease>, Failure>;
}

/// An export's lease, as [`StateStore::lease`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The holder: the run id of the run that took it.
    pub holder: String,
    /// The Pub/Sub message that run was triggered by.
    pub message_id: Option<String>,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Whether it had not expired when it was read, by the store's clock.
    pub live: bool,
    /// The process that took it; `None` for claims recorded before ferry kept it.
    pub process: Option<HolderProcess>,
}

/// Where a lease holder runs: enough for a command on the same host to tell whether the holder
/// is still alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderProcess {
    pub host: String,
    pub pid: u32,
}

impl HolderProcess {
    /// This process: the kernel's host name (else `HOSTNAME`, else `unknown`) and its pid.
    pub fn current() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown".to_owned());
        Self { host, pid: std::process::id() }
    }
}

impl std::fmt::Display for HolderProcess {
    /// `pid 4242 on host-a`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} on {}", self.pid, self.host)
    }
}

/// The answer to [`StateStore::acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The caller holds the lease until it releases it or the lease expires.
    Acquired,
    /// Another run holds a live lease.
    Held { holder: String, message_id: Option<String>, expires_at: DateTime<Utc> },
}

/// Who hears about runs.
///
/// Contract: a notifier's failure is reported and recorded by the caller, but never changes
/// the outcome of a run that already committed.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Sends one message summarising the run.
    async fn notify(&self, report: &crate::run::RunReport) -> Result<(), Failure>;
    /// The channel's name for logs (`email`, `slack`).
    fn name(&self) -> &'static str;
}

/// Starts runs elsewhere: a Cloud Run Job execution that runs `ferry` with given arguments.
///
/// Contract:
/// - `Ok(name)` only once the execution exists and will run (its tasks retried as the job says);
///   `name` is its full resource name, unique per call.
/// - An `Err` whose request provably never arrived, or that the API refused (4xx, 5xx with an
///   error body), started nothing. Any other `Err` (a timeout, a lost answer) may have started
///   one: callers rely on the runs being safe to duplicate (leases and message ids), never on
///   an `Err` meaning "nothing runs".
/// - A call is never sent twice by the dispatcher itself: starting a job is not idempotent.
#[async_trait]
pub trait Dispatcher: Send + Sync {
    /// Starts one execution of `ferry <args>`; its name.
    async fn start(&self, args: &[String]) -> Result<String, Failure>;
}
