//! The `bigquery` source component: a table or a query, and the columns to read; and the
//! `bigquery_export` source, which has BigQuery write the same rows as files into the staging
//! bucket (`EXPORT DATA`) in the format the partner wants.
//!
//! ```json
//! "source": {"type": "bigquery", "table": "dataset.table", "columns": ["id", "updated_at"]}
//! "source": {"type": "bigquery", "query": "SELECT … WHERE day = {date}"}
//! "source": {"type": "bigquery_export", "query": "SELECT …", "format": "PARQUET", "compression": "SNAPPY"}
//! ```

use std::sync::Arc;

use ferry_core::config::{Check, Component, StagedFiles};
use ferry_core::ident::{is_column, TableName};
use serde::Deserialize;
use serde_json::Value;

/// The `bigquery` source as configured.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "bigquery source")]
pub struct RawBigQuerySource {
    /// `dataset.table` or `project.dataset.table`; or use `query`.
    #[serde(default)]
    pub table: Option<String>,
    /// A SELECT whose result is exported; `{date}` becomes the `@run_date` DATE parameter.
    #[serde(default)]
    pub query: Option<String>,
    /// Columns to export, in order; all columns when absent.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
}

/// What a BigQuery source reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// A table.
    Table(TableName),
    /// A SELECT statement (with `@run_date` in place of `{date}`).
    Query(String),
}

impl SourceSpec {
    /// The table name, or `query`: for reports and the metadata table's `source_table`.
    pub fn describe(&self) -> String {
        match self {
            SourceSpec::Table(t) => t.to_string(),
            SourceSpec::Query(_) => "query".into(),
        }
    }
}

/// Validated settings of a `bigquery` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSettings {
    pub source: SourceSpec,
    /// Empty means all columns.
    pub columns: Vec<String>,
}

/// Checks a `bigquery` source; problems go to `cx` (which stands at the source).
pub fn validate_source(value: &Value, cx: &Check<'_>) -> Option<Component> {
    let raw: RawBigQuerySource = cx.parse(value)?;
    let settings = validate_rows(&raw, cx)?;
    Some(Component {
        type_name: "bigquery".into(),
        describe: settings.source.describe(),
        settings: Arc::new(settings),
        secrets: Vec::new(),
        staged: None,
    })
}

/// The `bigquery_export` source as configured.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "bigquery_export source")]
pub struct RawExportSource {
    /// `dataset.table` or `project.dataset.table`; or use `query`.
    #[serde(default)]
    pub table: Option<String>,
    /// A SELECT whose result is exported; `{date}` becomes the `@run_date` DATE parameter.
    #[serde(default)]
    pub query: Option<String>,
    /// Columns to export, in order; all columns when absent.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// `CSV` (default), `JSON` (newline-delimited), `AVRO` or `PARQUET`.
    #[serde(default)]
    pub format: Option<String>,
    /// What BigQuery allows for the format: CSV and JSON `GZIP` (default) or `NONE`; AVRO
    /// `DEFLATE`, `SNAPPY` (default) or `NONE`; PARQUET `SNAPPY` (default), `GZIP`, `ZSTD` or `NONE`.
    #[serde(default)]
    pub compression: Option<String>,
    /// CSV: a header row in each file; true by default.
    #[serde(default)]
    pub header: Option<bool>,
    /// CSV: the field delimiter, one character; `,` by default.
    #[serde(default)]
    pub delimiter: Option<String>,
}

/// A file format of `EXPORT DATA`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    Json,
    Avro,
    Parquet,
}

impl ExportFormat {
    /// The name `EXPORT DATA` takes.
    pub fn sql_name(self) -> &'static str {
        match self {
            Self::Csv => "CSV",
            Self::Json => "JSON",
            Self::Avro => "AVRO",
            Self::Parquet => "PARQUET",
        }
    }

    /// Compressions BigQuery accepts for the format; the first is ferry's default.
    pub fn compressions(self) -> &'static [&'static str] {
        match self {
            Self::Csv | Self::Json => &["GZIP", "NONE"],
            Self::Avro => &["SNAPPY", "DEFLATE", "NONE"],
            Self::Parquet => &["SNAPPY", "GZIP", "ZSTD", "NONE"],
        }
    }
}

/// Validated settings of a `bigquery_export` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSettings {
    /// What is read, as a `bigquery` source reads it (bounds and counts use it).
    pub rows: SourceSettings,
    pub format: ExportFormat,
    /// `NONE` or one of [`ExportFormat::compressions`].
    pub compression: String,
    pub header: bool,
    pub delimiter: char,
}

impl ExportSettings {
    /// The files' extension: `csv.gz`, `json`, `avro`, `parquet`.
    pub fn extension(&self) -> String {
        let base = self.format.sql_name().to_ascii_lowercase();
        match (self.format, self.compression.as_str()) {
            (ExportFormat::Csv | ExportFormat::Json, "GZIP") => format!("{base}.gz"),
            _ => base,
        }
    }
}

/// Checks a `bigquery_export` source; problems go to `cx` (which stands at the source).
pub fn validate_export_source(value: &Value, cx: &Check<'_>) -> Option<Component> {
    let raw: RawExportSource = cx.parse(value)?;
    let rows = validate_rows(&RawBigQuerySource { table: raw.table.clone(), query: raw.query.clone(), columns: raw.columns.clone() }, cx);
    let format = match raw.format.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("CSV") => Some(ExportFormat::Csv),
        Some("JSON" | "NEWLINE_DELIMITED_JSON") => Some(ExportFormat::Json),
        Some("AVRO") => Some(ExportFormat::Avro),
        Some("PARQUET") => Some(ExportFormat::Parquet),
        Some(_) => {
            cx.err("format", format!("expected CSV, JSON, AVRO or PARQUET, found {:?}", raw.format.as_deref().unwrap_or_default()));
            None
        }
    };
    let mut compression = String::new();
    if let Some(f) = format {
        let allowed = f.compressions();
        compression = raw.compression.as_deref().map(str::to_ascii_uppercase).unwrap_or_else(|| allowed[0].to_owned());
        if !allowed.contains(&compression.as_str()) {
            cx.err(
                "compression",
                format!("BigQuery does not export {} with compression {compression}; expected {}", f.sql_name(), allowed.join(", ")),
            );
        }
        if f != ExportFormat::Csv {
            for (field, set) in [("header", raw.header.is_some()), ("delimiter", raw.delimiter.is_some())] {
                if set {
                    cx.err(field, format!("{field} applies to CSV only; this export's format is {}", f.sql_name()));
                }
            }
        }
    }
    let delimiter = match raw.delimiter.as_deref() {
        None => ',',
        Some("\\t") => '\t',
        Some(d) if d.chars().count() == 1 && !matches!(d, "\"" | "\r" | "\n" | "'" | "\\") => d.chars().next().unwrap_or(','),
        Some(d) => {
            cx.err("delimiter", format!("expected one character other than a quote, backslash or line break, found {d:?}"));
            ','
        }
    };
    let settings = ExportSettings { rows: rows?, format: format?, compression, header: raw.header.unwrap_or(true), delimiter };
    let staged =
        StagedFiles { extension: settings.extension(), describe: format!("{}, {}", settings.format.sql_name(), settings.compression) };
    Some(Component {
        type_name: "bigquery_export".into(),
        describe: settings.rows.source.describe(),
        settings: Arc::new(settings),
        secrets: Vec::new(),
        staged: Some(staged),
    })
}

/// The table or query and the columns, shared by both sources.
fn validate_rows(raw: &RawBigQuerySource, cx: &Check<'_>) -> Option<SourceSettings> {
    let (table, query) = (cx.name("table"), cx.name("query"));
    let source = match (&raw.table, &raw.query) {
        (Some(_), Some(_)) => {
            cx.err("query", format!("set either {table} or {query}, not both"));
            None
        }
        (None, None) => {
            cx.err("table", format!("missing: set {table} (dataset.table) or {query}"));
            None
        }
        (Some(t), None) => TableName::parse(t).map(SourceSpec::Table).map_err(|m| cx.err("table", m)).ok(),
        (None, Some(q)) => {
            let trimmed = q.trim().trim_end_matches(';').trim();
            if trimmed.is_empty() {
                cx.err("query", "the query is empty");
                None
            } else if trimmed.contains(';') {
                cx.err("query", "expected a single SELECT statement, found ';'");
                None
            } else {
                Some(SourceSpec::Query(trimmed.replace("'{date}'", "@run_date").replace("{date}", "@run_date")))
            }
        }
    };
    let mut columns = Vec::new();
    if let Some(cols) = &raw.columns {
        if cols.is_empty() {
            cx.err("columns", "expected at least one column, or leave columns out to export all");
        }
        let mut seen = std::collections::HashSet::new();
        for (j, c) in cols.iter().enumerate() {
            let at = format!("columns[{j}]");
            if !is_column(c) {
                cx.err(&at, format!("{c:?} is not a valid column name (letters, digits and '_', not starting with a digit)"));
            } else if !seen.insert(c.to_ascii_lowercase()) {
                cx.err(&at, format!("duplicate column {c:?}"));
            } else {
                columns.push(c.clone());
            }
        }
    }
    Some(SourceSettings { source: source?, columns })
}

/// The `bigquery` destination as configured: a table that each run's rows are loaded into.
///
/// ```json
/// "destination": {"type": "bigquery", "table": "raw.orders", "mode": "append", "batch_rows": 10000}
/// ```
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "bigquery destination")]
pub struct RawTableDestination {
    /// `dataset.table` or `project.dataset.table`; created with the rows' schema when missing.
    pub table: String,
    /// `replace` (each run's rows become the table, swapped in atomically; also `catalog`),
    /// `append` (each run's new rows are added, all at once; also `transactional`) or `hourly`
    /// (each complete hour of the timestamp_column replaces that hour, stamped in `hour_column`).
    pub mode: String,
    /// Rows per Parquet row group, the unit the rows are encoded and sent in; 10000 by default
    /// (`ETL_BATCH_SIZE` when set).
    #[serde(default)]
    pub batch_rows: Option<u64>,
    /// Rows per load job. By default a load is one job whose file is streamed as it is
    /// written; with a limit, the rows go into a staging table by jobs of at most this many
    /// and one commit job makes them visible.
    #[serde(default)]
    pub job_rows: Option<u64>,
    /// `hourly`: the column that holds each row's hour; `import_hour` by default.
    #[serde(default)]
    pub hour_column: Option<String>,
    /// `hourly`: load every complete hour since the last one loaded, oldest first (default
    /// true); false loads only the last complete hour.
    #[serde(default)]
    pub recover_missed: Option<bool>,
    /// `hourly`: delete an hour's rows from the source once the table holds exactly as many
    /// (default false). The source must be a table.
    #[serde(default)]
    pub delete_from_source: Option<bool>,
}

/// Rows per row group unless the destination or `ETL_BATCH_SIZE` says.
pub const DEFAULT_BATCH_ROWS: usize = 10_000;
/// The most rows of one row group (a row group is held in memory until it is encoded).
pub const MAX_BATCH_ROWS: u64 = 1_000_000;

/// Validated settings of a `bigquery` destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSettings {
    pub table: TableName,
    pub mode: ferry_core::config::TableMode,
    pub batch_rows: usize,
    /// Rows per load job; `None`: one job per load.
    pub job_rows: Option<u64>,
}

/// Checks a `bigquery` destination; problems go to `cx` (which stands at the destination).
pub fn validate_table_destination(value: &Value, cx: &Check<'_>) -> Option<ferry_core::config::Destination> {
    use ferry_core::config::{Destination, Shape, TableMode};
    let raw: RawTableDestination = cx.parse(value)?;
    let table = TableName::parse(&raw.table).map_err(|m| cx.err("table", m)).ok();
    let mode = match raw.mode.to_ascii_lowercase().as_str() {
        "replace" | "catalog" => Some(TableMode::Replace),
        "append" | "transactional" => Some(TableMode::Append),
        "hourly" => {
            let column = raw.hour_column.clone().unwrap_or_else(|| "import_hour".to_owned());
            if !is_column(&column) {
                cx.err(
                    "hour_column",
                    format!("{column:?} is not a valid column name (letters, digits and '_', not starting with a digit)"),
                );
            }
            Some(TableMode::Hourly(ferry_core::config::HourlyLoad {
                column,
                recover_missed: raw.recover_missed.unwrap_or(true),
                delete_from_source: raw.delete_from_source.unwrap_or(false),
            }))
        }
        _ => {
            cx.err("mode", format!("expected replace (catalog), append (transactional) or hourly, found {:?}", raw.mode));
            None
        }
    };
    if !matches!(mode, Some(TableMode::Hourly(_))) {
        for (field, set) in [
            ("hour_column", raw.hour_column.is_some()),
            ("recover_missed", raw.recover_missed.is_some()),
            ("delete_from_source", raw.delete_from_source.is_some()),
        ] {
            if set {
                cx.err(field, format!("{field} applies to mode hourly only"));
            }
        }
    }
    let (batch_field, batch) = match (raw.batch_rows, cx.env("ETL_BATCH_SIZE")) {
        (Some(n), _) => ("batch_rows".to_owned(), Some(n.to_string())),
        (None, Some(v)) => ("batch_rows (ETL_BATCH_SIZE)".to_owned(), Some(v)),
        (None, None) => (String::new(), None),
    };
    let batch_rows = match batch.as_deref().map(|s| s.trim().parse::<u64>()) {
        None => Some(DEFAULT_BATCH_ROWS),
        Some(Ok(n)) if (1..=MAX_BATCH_ROWS).contains(&n) => Some(n as usize),
        Some(_) => {
            cx.err(&batch_field, format!("expected 1 to {MAX_BATCH_ROWS} rows, found {}", batch.unwrap_or_default()));
            None
        }
    };
    let job_rows = match raw.job_rows {
        Some(0) => {
            cx.err("job_rows", "expected at least 1 row per load job, found 0");
            None
        }
        n => Some(n),
    };
    let (table, mode, batch_rows, job_rows) = (table?, mode?, batch_rows?, job_rows?);
    Some(Destination {
        component: Component {
            type_name: "bigquery".into(),
            describe: format!("bigquery://{table} ({})", mode.name()),
            settings: Arc::new(TableSettings { table, mode: mode.clone(), batch_rows, job_rows }),
            secrets: Vec::new(),
            staged: None,
        },
        shape: Shape::Table(mode),
    })
}
