//! The BigQuery [`Source`]: `MAX(cursor)` at plan time, then the window's rows page by page.

use async_trait::async_trait;
use ferry_core::config::{ExportSpec, SourceSpec};
use ferry_core::cursor::{CursorType, CursorValue};
use ferry_core::encode::{Column, ColumnType};
use ferry_core::ident::quote_column;
use ferry_core::{ErrorClass, Failure, RowReader, Source, Window};
use tokio::task::JoinHandle;

use crate::client::{BigQuery, Field, Page, QueryJob, QueryParam};
use crate::BigQueryError;

/// Reads exports from BigQuery.
#[derive(Debug, Clone)]
pub struct BigQuerySource {
    bq: BigQuery,
    page_size: u32,
}

impl BigQuerySource {
    /// A source running queries with `bq`, fetching `page_size` rows per page.
    pub fn new(bq: BigQuery, page_size: u32) -> Self {
        Self { bq, page_size }
    }

    fn source_sql(&self, export: &ExportSpec) -> String {
        match &export.source {
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
        }
        if sql.contains("@run_date") {
            params.push(QueryParam::new("run_date", "DATE", run_date));
        }
        params
    }
}

fn to_column(f: &Field) -> Column {
    Column {
        name: f.name.clone(),
        ty: ColumnType::from_bigquery(&f.type_name, f.fields.iter().map(to_column).collect()),
        repeated: f.is_repeated(),
    }
}

#[async_trait]
impl Source for BigQuerySource {
    async fn upper_bound(&self, export: &ExportSpec, run_date: &str) -> Result<Option<CursorValue>, Failure> {
        let Some(cursor) = &export.cursor else { return Ok(None) };
        let sql = format!("SELECT MAX({}) AS hi FROM {}", quote_column(cursor), self.source_sql(export));
        let job = self.bq.query(&sql, &Self::params(&sql, None, run_date), 1).await.map_err(|e| context(e, export))?;
        let type_name = job.schema.first().map(|f| f.type_name.clone()).unwrap_or_default();
        let ty = CursorType::from_bigquery(&type_name).ok_or_else(|| {
            Failure::with_class(
                ErrorClass::Permanent,
                format!("export {}: timestamp_column {cursor} is {type_name}; expected TIMESTAMP, DATETIME, DATE or INT64", export.name),
            )
        })?;
        let rows = job.collect().await.map_err(|e| context(e, export))?;
        match rows.first().and_then(|r| r.first()) {
            Some(ferry_core::encode::Cell::Text(t)) => CursorValue::parse(ty, t)
                .map(Some)
                .map_err(|e| Failure::with_class(ErrorClass::Permanent, format!("export {}: MAX({cursor}): {e}", export.name))),
            _ => Ok(None),
        }
    }

    async fn read(&self, export: &ExportSpec, window: &Window, run_date: &str) -> Result<Box<dyn RowReader>, Failure> {
        let sql = self.read_sql(export, window);
        let job = self.bq.query(&sql, &Self::params(&sql, Some(window), run_date), self.page_size).await.map_err(|e| context(e, export))?;
        let columns: Vec<Column> = job.schema.iter().map(to_column).collect();
        let export_name = export.name.clone();
        let first = tokio::spawn(fetch(job));
        Ok(Box::new(Reader { columns, next: Some(first), export: export_name }))
    }

    fn read_sql(&self, export: &ExportSpec, window: &Window) -> String {
        let cols = if export.columns.is_empty() {
            "*".to_owned()
        } else {
            export.columns.iter().map(|c| quote_column(c)).collect::<Vec<_>>().join(", ")
        };
        let mut sql = format!("SELECT {cols} FROM {}", self.source_sql(export));
        if let Some(cursor) = &export.cursor {
            let c = quote_column(cursor);
            let mut conds = Vec::new();
            if window.lo.is_some() {
                conds.push(format!("{c} > @ferry_lo"));
            }
            if window.hi.is_some() {
                conds.push(format!("{c} <= @ferry_hi"));
            }
            if !conds.is_empty() {
                sql.push_str(&format!(" WHERE {}", conds.join(" AND ")));
            }
            sql.push_str(&format!(" ORDER BY {c}"));
        }
        sql
    }

    fn describe(&self, export: &ExportSpec) -> String {
        export.source.describe()
    }
}

fn context(e: BigQueryError, export: &ExportSpec) -> Failure {
    let class = ferry_core::Classify::class(&e);
    Failure::with_class(class, format!("export {}: {e}", export.name))
}

type Fetched = (QueryJob, Result<Option<Page>, BigQueryError>);

async fn fetch(mut job: QueryJob) -> Fetched {
    let page = job.next_page().await;
    (job, page)
}

/// Reads pages with one page fetched ahead, so that the network and encoding overlap. At
/// most two pages are in memory.
struct Reader {
    columns: Vec<Column>,
    next: Option<JoinHandle<Fetched>>,
    export: String,
}

#[async_trait]
impl RowReader for Reader {
    fn columns(&self) -> &[Column] {
        &self.columns
    }

    async fn next_page(&mut self) -> Result<Option<Vec<Vec<ferry_core::encode::Cell>>>, Failure> {
        let Some(handle) = self.next.take() else { return Ok(None) };
        let (job, page) = handle
            .await
            .map_err(|e| Failure::with_class(ErrorClass::Transient, format!("export {}: page reader stopped: {e}", self.export)))?;
        match page {
            Ok(Some(rows)) => {
                self.next = Some(tokio::spawn(fetch(job)));
                Ok(Some(rows))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                let class = ferry_core::Classify::class(&e);
                Err(Failure::with_class(class, format!("export {}: {e}", self.export)))
            }
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
