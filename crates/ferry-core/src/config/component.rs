//! Components: an export's `source` and `destination`, each tagged by `type` and defined and
//! validated by the crate of its system. The core sees only what every run needs: a name for
//! reports, the secrets to redact, and for destinations the shape (files or a table). The
//! wiring (`function/`) implements [`Components`], mapping each `type` to its crate, and builds
//! the roles from the validated settings.

use std::any::Any;
use std::sync::Arc;

use serde_json::Value;

use super::file::FileSettings;
use super::Check;
use crate::Secret;

/// A validated component.
#[derive(Clone)]
pub struct Component {
    /// The `type` it was configured with (`bigquery`, `sftp`).
    pub type_name: String,
    /// What it reads or writes, for plans, reports and the metadata table (`dataset.table`,
    /// `query`, `sftp://host:22/upload`).
    pub describe: String,
    /// The backend crate's validated settings; only that crate (through the wiring) reads them.
    pub settings: Arc<dyn Any + Send + Sync>,
    /// Every secret the settings resolved, for redaction.
    pub secrets: Vec<Secret>,
    /// For a source that writes its files itself into the staging bucket (`bigquery_export`):
    /// what they are. `None` for sources that rows are read from, and for destinations.
    pub staged: Option<StagedFiles>,
}

/// The files a staged source writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedFiles {
    /// The file name extension, without the dot (`csv.gz`, `parquet`).
    pub extension: String,
    /// Format and compression, for plans and reports (`CSV, GZIP`).
    pub describe: String,
}

impl Component {
    /// The settings as the backend's type; `None` for another backend's component.
    pub fn settings<T: Any>(&self) -> Option<&T> {
        self.settings.downcast_ref::<T>()
    }
}

impl std::fmt::Debug for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Component").field("type_name", &self.type_name).field("describe", &self.describe).finish_non_exhaustive()
    }
}

/// The two shapes of destination the run skeleton knows.
#[derive(Debug, Clone)]
pub enum Shape {
    /// Files: an encoder, a name template and the temporary-name → verify → publish protocol
    /// of a [`Sink`](crate::Sink).
    File(FileSettings),
    /// A database table, loaded with an atomic or idempotent commit.
    Table(TableMode),
}

/// What a load does to its table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableMode {
    /// Each run's rows replace the table's, atomically (a full snapshot; the seed's "catalog").
    Replace,
    /// Each run's rows are added, all at once (incremental; the seed's "transactional").
    Append,
    /// Each complete hour of the cursor is loaded on its own and replaces that hour in the
    /// table, stamped with the hour's start in a column of its own.
    Hourly(HourlyLoad),
}

/// The settings of [`TableMode::Hourly`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourlyLoad {
    /// The column holding each row's hour (`import_hour`), added to the source's columns.
    pub column: String,
    /// Load every complete hour since the last one loaded, in order (else only the last).
    pub recover_missed: bool,
    /// After an hour is loaded and the table holds exactly as many of its rows as were read,
    /// delete them from the source.
    pub delete_from_source: bool,
}

impl TableMode {
    /// The config's name of the mode.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Replace => "replace",
            Self::Append => "append",
            Self::Hourly(_) => "hourly",
        }
    }
}

/// A validated destination.
#[derive(Debug, Clone)]
pub struct Destination {
    pub component: Component,
    pub shape: Shape,
}

/// The component types a build of ferry knows. Implementations read `value` (the component's
/// settings without `type`) with [`Check::parse`] and report every problem through `cx`, which
/// stands at the component (`exports[0].source`).
pub trait Components {
    /// Source types, for messages.
    fn source_types(&self) -> Vec<&'static str>;
    /// Destination types, for messages.
    fn destination_types(&self) -> Vec<&'static str>;
    /// Validates a source of `type_name`; `None` for an unknown type (the caller reports it) or
    /// when a problem was reported.
    fn source(&self, type_name: &str, value: &Value, cx: &Check<'_>) -> Option<Option<Component>>;
    /// Validates a destination of `type_name`, like [`Components::source`].
    fn destination(&self, type_name: &str, value: &Value, cx: &Check<'_>) -> Option<Option<Destination>>;
}
