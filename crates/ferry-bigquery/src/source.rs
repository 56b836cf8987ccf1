//! The BigQuery [`Source`]: `MAX(cursor)`, the server's clock and the NULL-cursor count at plan
//! time in one query, then the window's rows page by page.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ferry_core::config::ExportSpec;
use ferry_core::cursor::{CursorType, CursorValue};
use ferry_core::ident::quote_column;
use ferry_core::rows::{RecordBatch, SchemaRef};
use ferry_core::{BatchReader, Bounds, ErrorClass, Failure, NullRows, Source, Window};
use tokio::task::JoinHandle;

use crate::arrow::{rest_to_batch, schema_of};
use crate::client::{BigQuery, Cell, Field, QueryJob, QueryParam, TableRef};
use crate::component::{SourceSettings, SourceSpec};
use crate::storage::reader::{restriction, StorageReader};
use crate::storage::StorageRead;
use crate::BigQueryError;
use ferry_core::ident::TableName;
use ferry_core::Classify;

/// Reads one export's rows from BigQuery.
#[derive(Debug, Clone)]
pub struct BigQuerySource {
    bq: BigQuery,
    page_size: u32,
    settings: SourceSettings,
    /// Reads table sources through the Storage Read API when set (`bigquery.read_api`).
    storage: Option<Storage>,
}

/// How sources use the Storage Read API.
#[derive(Debug, Clone)]
pub struct Storage {
    pub read: StorageRead,
    pub usage: StorageUse,
    /// Streams open at once (`bigquery.storage_streams`).
    pub streams: usize,
}

/// Which table sources are read through the Storage Read API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageUse {
    /// Tables and table snapshots; views, materialized views and external tables through REST
    /// (`read_api: auto`).
    Tables,
    /// Every table source, whatever its kind (`read_api: storage`).
    Always,
}

impl BigQuerySource {
    /// A source reading what `settings` name with `bq`, fetching `page_size` rows per page.
    pub fn new(bq: BigQuery, page_size: u32, settings: SourceSettings) -> Self {
        Self { bq, page_size, settings, storage: None }
    }

    /// The same source reading table sources through the Storage Read API as `storage` says
    /// (a query still runs as a query job).
    pub fn with_storage(mut self, storage: Storage) -> Self {
        self.storage = Some(storage);
        self
    }

    /// The window of a table through the Storage Read API: the table's schema decides the
    /// columns and their types (as the REST path's), the window becomes the row restriction.
    /// `None` when `auto` leaves this table to REST (a view, an external table).
    async fn read_storage(
        &self,
        storage: &Storage,
        table: &TableName,
        export: &ExportSpec,
        window: &Window,
    ) -> Result<Option<Box<dyn BatchReader>>, Failure> {
        let table_ref = TableRef {
            project: table.project.clone().unwrap_or_else(|| self.bq.project().to_owned()),
            dataset: table.dataset.clone(),
            table: table.table.clone(),
        };
        let permanent = |m: String| Failure::with_class(ErrorClass::Permanent, format!("export {}: {m}", export.name));
        let info = self
            .bq
            .table_info(&table_ref)
            .await
            .map_err(|e| context(e, export))?
            .ok_or_else(|| permanent(format!("table {table_ref} does not exist")))?;
        if storage.usage == StorageUse::Tables && !matches!(info.kind.as_str(), "TABLE" | "SNAPSHOT") {
            tracing::info!(export = %export.name, table = %table_ref, kind = %info.kind, "read through REST: the Storage Read API reads tables");
            return Ok(None);
        }
        let fields = info.fields;
        let selected: Vec<Field> = if self.settings.columns.is_empty() {
            fields
        } else {
            self.settings
                .columns
                .iter()
                .map(|c| {
                    // Named as configured, as the REST path's `SELECT c` names it.
                    fields
                        .iter()
                        .find(|f| f.name.eq_ignore_ascii_case(c))
                        .map(|f| Field { name: c.clone(), ..f.clone() })
                        .ok_or_else(|| permanent(format!("table {table_ref} has no column {c}")))
                })
                .collect::<Result<_, _>>()?
        };
        let schema = SchemaRef::new(schema_of(&selected));
        let names: Vec<String> = selected.iter().map(|f| f.name.clone()).collect();
        let session =
            storage.read.create_session(&table_ref, &names, &restriction(export.cursor.as_deref(), window), 0).await.map_err(|e| {
                Failure::with_class(e.class(), format!("export {}: table {table_ref}: BigQuery Storage Read {e}", export.name))
            })?;
        tracing::info!(export = %export.name, table = %table_ref, streams = session.streams.len(), estimated_rows = session.estimated_rows, "Storage Read session");
        Ok(Some(Box::new(StorageReader::start(
            storage.read.clone(),
            session,
            schema,
            table_ref.to_string(),
            export.name.clone(),
            storage.streams,
        ))))
    }

    fn source_sql(&self) -> String {
        match &self.settings.source {
            SourceSpec::Table(t) => t.quoted(self.bq.project()),
            SourceSpec::Query(q) => format!("({q})"),
        }
    }

    fn params(sql: &str, window: Option<&Window>, run_date: &str) -> Vec<QueryParam> {
        let mut params = Vec::new();
        if let Some(w) = window {
            if let Some(lo) = &w.lo {
                params.push(QueryParam::new("ferry_lo", lo.ty().sql_name(), lo.param_literal()));
            }
            if let Some(hi) = &w.hi {
                params.push(QueryParam::new("ferry_hi", hi.ty().sql_name(), hi.param_literal()));
            }
            if let NullRows::Arrived { lo, hi, .. } = &w.nulls {
                for (name, us) in [("ferry_alo", *lo), ("ferry_ahi", Some(*hi))] {
                    if let Some(us) = us {
                        params.push(QueryParam::new(name, "TIMESTAMP", CursorValue::Timestamp(us).param_literal()));
                    }
                }
            }
        }
        if sql.contains("@run_date") {
            params.push(QueryParam::new("run_date", "DATE", run_date));
        }
        params
    }
}

#[async_trait]
impl Source for BigQuerySource {
    async fn bounds(&self, export: &ExportSpec, run_date: &str) -> Result<Bounds, Failure> {
        let Some(cursor) = &export.cursor else {
            return Err(Failure::with_class(ErrorClass::Permanent, format!("export {}: no timestamp_column to bound", export.name)));
        };
        let c = quote_column(cursor);
        // One query, so that the maximum, the clock and the NULL count are one look at the data.
        let sql =
            format!("SELECT MAX({c}) AS hi, CURRENT_TIMESTAMP() AS now, COUNTIF({c} IS NULL) AS null_rows FROM {}", self.source_sql());
        let job = self.bq.query(&sql, &Self::params(&sql, None, run_date), 1).await.map_err(|e| context(e, export))?;
        let type_name = job.schema.first().map(|f| f.type_name.clone()).unwrap_or_default();
        let ty = CursorType::from_bigquery(&type_name).ok_or_else(|| {
            Failure::with_class(
                ErrorClass::Permanent,
                format!("export {}: timestamp_column {cursor} is {type_name}; expected TIMESTAMP, DATETIME, DATE or INT64", export.name),
            )
        })?;
        let rows = job.collect().await.map_err(|e| context(e, export))?;
        let row = rows.first().map(Vec::as_slice).unwrap_or_default();
        let bad = |what: &str, e: String| Failure::with_class(ErrorClass::Permanent, format!("export {}: {what}: {e}", export.name));
        let max = match row.first() {
            Some(Cell::Text(t)) => Some(CursorValue::parse(ty, t).map_err(|e| bad(&format!("MAX({cursor})"), e))?),
            _ => None,
        };
        let now = match row.get(1) {
            Some(Cell::Text(t)) => ferry_core::cursor::parse_rest_timestamp(t).and_then(DateTime::<Utc>::from_timestamp_micros),
            _ => None,
        }
        .ok_or_else(|| bad("CURRENT_TIMESTAMP()", "no value".into()))?;
        let null_rows = match row.get(2) {
            Some(Cell::Text(t)) => t.parse().map_err(|_| bad(&format!("COUNTIF({cursor} IS NULL)"), format!("{t:?} is not a count")))?,
            _ => 0,
        };
        Ok(Bounds { max, now, null_rows })
    }

    async fn count(&self, export: &ExportSpec, window: &Window, run_date: &str) -> Result<u64, Failure> {
        let sql = format!("SELECT COUNT(*) AS n FROM {}{}", self.source_sql(), where_clause(export, window));
        let rows = self
            .bq
            .query(&sql, &Self::params(&sql, Some(window), run_date), 1)
            .await
            .map_err(|e| context(e, export))?
            .collect()
            .await
            .map_err(|e| context(e, export))?;
        match rows.first().and_then(|r| r.first()) {
            Some(Cell::Text(t)) => t
                .parse()
                .map_err(|_| Failure::with_class(ErrorClass::Permanent, format!("export {}: COUNT(*): {t:?} is not a count", export.name))),
            _ => Ok(0),
        }
    }

    async fn read(&self, export: &ExportSpec, window: &Window, run_date: &str) -> Result<Box<dyn BatchReader>, Failure> {
        if let (Some(storage), SourceSpec::Table(table)) = (&self.storage, &self.settings.source) {
            if let Some(reader) = self.read_storage(storage, table, export, window).await? {
                return Ok(reader);
            }
        }
        let sql = self.read_sql(export, window);
        let job = self.bq.query(&sql, &Self::params(&sql, Some(window), run_date), self.page_size).await.map_err(|e| context(e, export))?;
        let schema = SchemaRef::new(schema_of(&job.schema));
        let export_name = export.name.clone();
        let first = tokio::spawn(fetch(job, schema.clone()));
        Ok(Box::new(Reader { schema, next: Some(first), export: export_name }))
    }

    fn read_sql(&self, export: &ExportSpec, window: &Window) -> String {
        let cols = if self.settings.columns.is_empty() {
            "*".to_owned()
        } else {
            self.settings.columns.iter().map(|c| quote_column(c)).collect::<Vec<_>>().join(", ")
        };
        // No ORDER BY: the window's bounds were fixed at plan time and the watermark becomes
        // its `hi`, not the last row read, so the order of rows does not matter; sorting the
        // whole window would make BigQuery gather it in one place first.
        format!("SELECT {cols} FROM {}{}", self.source_sql(), where_clause(export, window))
    }

    fn describe(&self, _export: &ExportSpec) -> String {
        self.settings.source.describe()
    }
}

/// ` WHERE …` selecting the window's rows (empty when it is every row). The bounds are the
/// parameters `@ferry_lo` and `@ferry_hi`.
fn where_clause(export: &ExportSpec, window: &Window) -> String {
    let Some(cursor) = &export.cursor else { return String::new() };
    let c = quote_column(cursor);
    let mut range = Vec::new();
    if window.lo.is_some() {
        range.push(format!("{c} > @ferry_lo"));
    }
    if window.hi.is_some() {
        range.push(format!("{c} <= @ferry_hi"));
    }
    let arrived = |column: &str, lo: &Option<i64>| {
        let a = quote_column(column);
        match lo {
            Some(_) => format!("{c} IS NULL AND {a} > @ferry_alo AND {a} <= @ferry_ahi"),
            None => format!("{c} IS NULL AND {a} <= @ferry_ahi"),
        }
    };
    match (range.is_empty(), &window.nulls) {
        (true, NullRows::Included) => String::new(),
        (true, NullRows::Excluded) => format!(" WHERE {c} IS NOT NULL"),
        (false, NullRows::Excluded) => format!(" WHERE {}", range.join(" AND ")),
        (false, NullRows::Included) => format!(" WHERE ({}) OR {c} IS NULL", range.join(" AND ")),
        // No cursor value bounds the window: it holds no row with a cursor value.
        (true, NullRows::Arrived { column, lo, .. }) => format!(" WHERE {}", arrived(column, lo)),
        (false, NullRows::Arrived { column, lo, .. }) => format!(" WHERE ({}) OR ({})", range.join(" AND "), arrived(column, lo)),
    }
}

fn context(e: BigQueryError, export: &ExportSpec) -> Failure {
    let class = ferry_core::Classify::class(&e);
    Failure::with_class(class, format!("export {}: {e}", export.name))
}

type Fetched = (QueryJob, Result<Option<RecordBatch>, Failure>);

/// Fetches the next page and decodes it into a batch, off the caller's task.
async fn fetch(mut job: QueryJob, schema: SchemaRef) -> Fetched {
    let page = match job.next_page().await {
        Ok(Some(rows)) => rest_to_batch(&schema, rows).map(Some).map_err(|e| Failure::with_class(ErrorClass::Permanent, e)),
        Ok(None) => Ok(None),
        Err(e) => Err(Failure::new(e)),
    };
    (job, page)
}

/// Reads pages with one page fetched and decoded ahead, so that the network and encoding
/// overlap. At most two pages are in memory.
struct Reader {
    schema: SchemaRef,
    next: Option<JoinHandle<Fetched>>,
    export: String,
}

#[async_trait]
impl BatchReader for Reader {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn next_batch(&mut self) -> Result<Option<RecordBatch>, Failure> {
        let Some(handle) = self.next.take() else { return Ok(None) };
        let (job, page) = handle
            .await
            .map_err(|e| Failure::with_class(ErrorClass::Transient, format!("export {}: page reader stopped: {e}", self.export)))?;
        match page {
            Ok(Some(batch)) => {
                self.next = Some(tokio::spawn(fetch(job, self.schema.clone())));
                Ok(Some(batch))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(Failure::with_class(e.class(), format!("export {}: {e}", self.export))),
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(h) = self.next.take() {
            h.abort();
        }
    }
}

/// A `bigquery_export` source: BigQuery writes the window's rows into the staging bucket
/// itself, with `EXPORT DATA`, in the configured format. Bounds and counts are a
/// [`BigQuerySource`]'s over the same table or query.
#[derive(Debug, Clone)]
pub struct BigQueryExport {
    rows: BigQuerySource,
    settings: crate::component::ExportSettings,
}

impl BigQueryExport {
    /// The export of `settings` with `bq`.
    pub fn new(bq: BigQuery, settings: crate::component::ExportSettings) -> Self {
        Self { rows: BigQuerySource::new(bq, 1, settings.rows.clone()), settings }
    }
}

/// A GoogleSQL string literal.
fn sql_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[async_trait]
impl ferry_core::StagedSource for BigQueryExport {
    async fn export(&self, export: &ExportSpec, window: &Window, run_date: &str, uri: &str) -> Result<(), Failure> {
        let sql = self.export_sql(export, window, uri);
        let params = BigQuerySource::params(&sql, Some(window), run_date);
        self.rows.bq.execute(&sql, &params).await.map_err(|e| {
            Failure::with_class(ferry_core::Classify::class(&e), format!("export {}: EXPORT DATA to {uri}: {e}", export.name))
        })?;
        Ok(())
    }

    fn export_sql(&self, export: &ExportSpec, window: &Window, uri: &str) -> String {
        use crate::component::ExportFormat;
        let s = &self.settings;
        // `overwrite`: the run's prefix is its own, so only a retry of this same export can
        // have written there.
        let mut options =
            vec![format!("uri={}", sql_string(uri)), format!("format='{}'", s.format.sql_name()), "overwrite=true".to_owned()];
        if s.format == ExportFormat::Csv {
            options.push(format!("header={}", s.header));
            options.push(format!("field_delimiter={}", sql_string(&s.delimiter.to_string())));
        }
        if s.compression != "NONE" {
            options.push(format!("compression='{}'", s.compression));
        }
        format!("EXPORT DATA OPTIONS({}) AS {}", options.join(", "), self.rows.read_sql(export, window))
    }
}

#[cfg(test)]
mod tests {
    use super::sql_string;

    #[test]
    fn string_literals() {
        assert_eq!(sql_string("gs://b/p/x-*.csv"), "'gs://b/p/x-*.csv'");
        assert_eq!(sql_string("a'b\\c\td"), "'a\\'b\\\\c\\td'");
    }
}
