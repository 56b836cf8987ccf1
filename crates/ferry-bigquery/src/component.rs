//! The `bigquery` source component: a table or a query, and the columns to read.
//!
//! ```json
//! "source": {"type": "bigquery", "table": "dataset.table", "columns": ["id", "updated_at"]}
//! "source": {"type": "bigquery", "query": "SELECT … WHERE day = {date}"}
//! ```

use std::sync::Arc;

use ferry_core::config::{Check, Component};
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
    let source = source?;
    Some(Component {
        type_name: "bigquery".into(),
        describe: source.describe(),
        settings: Arc::new(SourceSettings { source, columns }),
        secrets: Vec::new(),
    })
}
