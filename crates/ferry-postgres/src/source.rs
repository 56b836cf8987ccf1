//! The PostgreSQL [`Source`]: `MAX(cursor)`, the NULL-cursor count and the server's clock in
//! one statement at plan time; the window's rows through a server-side cursor, one batch per
//! `FETCH`, inside one read-only REPEATABLE READ transaction.

use std::collections::HashSet;
use std::pin::pin;
use std::time::Duration;

use arrow_array::{RecordBatch, RecordBatchOptions};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use ferry_core::config::ExportSpec;
use ferry_core::cursor::{CursorType, CursorValue};
use ferry_core::retry::{GaveUp, RetryPolicy};
use ferry_core::rows::{Schema, SchemaRef};
use ferry_core::{BatchReader, Bounds, Classify, DeleteFailure, ErrorClass, Failure, NullRows, Source, Window};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Statement};

use crate::component::{quote_identifier, PostgresSettings, SourceSpec};
use crate::decode::{cursor_type, cursor_value, plan, unknown_types, ColumnBuilder, ColumnPlan, Raw};
use crate::tls::{client_config, MakeRustls};
use crate::PostgresError;

/// How long connecting (TCP, TLS and login) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The name of the server-side cursor a read declares.
const CURSOR: &str = "ferry_read";

/// Session settings every connection starts with, so that values cast to text, and `timestamp`
/// compared with `timestamptz`, do not depend on the server's or the role's defaults.
const SESSION: &str =
    "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET bytea_output = 'hex'";

/// Reads one export's rows from PostgreSQL.
///
/// Connecting and the plan-time statements ([`Source::bounds`], [`Source::count`]) are retried
/// under a [`RetryPolicy`] when they fail in a way that may pass (a refused or broken
/// connection, a serialization failure, a server shutting down); a read that fails midway is
/// not resumed here: the run starts it again.
#[derive(Debug, Clone)]
pub struct PostgresSource {
    settings: PostgresSettings,
    retry: RetryPolicy,
}

impl PostgresSource {
    /// A source reading what `settings` name.
    pub fn new(settings: PostgresSettings) -> Self {
        Self { settings, retry: RetryPolicy::default() }
    }

    /// The same source with another retry policy (the default is [`RetryPolicy::default`]).
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Its settings.
    pub fn settings(&self) -> &PostgresSettings {
        &self.settings
    }

    fn error(&self, e: tokio_postgres::Error, what: &str) -> PostgresError {
        PostgresError::from_pg(e, &self.settings.server(), what)
    }

    fn data(&self, what: String, reason: String) -> PostgresError {
        PostgresError::Data { server: self.settings.server(), what, reason }
    }

    /// One connection, TLS as configured, its session settings made.
    async fn connect(&self) -> Result<Client, PostgresError> {
        let s = &self.settings;
        let mut config = tokio_postgres::Config::new();
        config
            .host(&s.host)
            .port(s.port)
            .dbname(&s.database)
            .user(&s.user)
            .password(s.password.expose())
            .application_name("ferry")
            .connect_timeout(CONNECT_TIMEOUT);
        let tls = client_config(&s.tls).map_err(|reason| PostgresError::Tls { server: s.server(), reason })?;
        let connecting = async {
            match tls {
                None => {
                    config.ssl_mode(SslMode::Disable);
                    let (client, connection) = config.connect(NoTls).await?;
                    tokio::spawn(drive(connection));
                    Ok(client)
                }
                Some(tls) => {
                    config.ssl_mode(SslMode::Require);
                    let (client, connection) = config.connect(MakeRustls(tls)).await?;
                    tokio::spawn(drive(connection));
                    Ok(client)
                }
            }
        };
        let client = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(connected) => connected.map_err(|e| self.error(e, "connect"))?,
            Err(_) => {
                return Err(PostgresError::Connection {
                    server: s.server(),
                    what: "connect".into(),
                    reason: format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()),
                })
            }
        };
        client.batch_execute(SESSION).await.map_err(|e| self.error(e, "connect"))?;
        Ok(client)
    }

    /// A connection under the retry policy.
    async fn connect_retried(&self) -> Result<Client, PostgresError> {
        self.retry.run("postgres connect", || self.connect()).await.map_err(gave_up)
    }

    /// `SELECT {columns} FROM {source} s{window}` and its parameters: the run date first (`$1`)
    /// when the query has `{date}`, then the window's bounds.
    fn select(&self, columns: &str, cursor: Option<&str>, window: Option<&Window>, run_date: &str) -> (String, Vec<Param>) {
        let mut params = Vec::new();
        let from = match &self.settings.source {
            SourceSpec::Table(t) => t.quoted(),
            SourceSpec::Query { sql, run_date: uses } => {
                if *uses {
                    params.push(Param::RunDate(run_date.to_owned()));
                }
                format!("({sql})")
            }
        };
        let filter = match window {
            Some(w) => where_clause(cursor, w, &mut params),
            None => String::new(),
        };
        (format!("SELECT {columns} FROM {from} s{filter}"), params)
    }

    /// The columns the source selects, as the server describes them (a statement prepared, not
    /// run), and how each is read.
    async fn plan_columns(&self, client: &Client, run_date: &str) -> Result<Vec<ColumnPlan>, PostgresError> {
        let what = self.settings.what();
        let columns = if self.settings.columns.is_empty() {
            "*".to_owned()
        } else {
            self.settings.columns.iter().map(|c| format!("s.{}", quote_identifier(c))).collect::<Vec<_>>().join(", ")
        };
        let (sql, _) = self.select(&columns, None, None, run_date);
        let statement = client.prepare(&sql).await.map_err(|e| self.error(e, &what))?;
        let unknown = unknown_types(statement.columns().iter().map(|c| c.type_()));
        let mut text_like = HashSet::new();
        if !unknown.is_empty() {
            // Extension types (citext, …): those in the string category are text.
            let rows = client
                .query("SELECT oid FROM pg_catalog.pg_type WHERE oid = ANY($1) AND typcategory = 'S'", &[&unknown])
                .await
                .map_err(|e| self.error(e, "pg_type"))?;
            for row in rows {
                text_like.insert(row.try_get::<_, u32>(0).map_err(|e| self.error(e, "pg_type"))?);
            }
        }
        let text_like = |t: &tokio_postgres::types::Type| text_like.contains(&t.oid());
        Ok(statement.columns().iter().map(|c| plan(c.name(), c.type_(), c.type_modifier(), &text_like)).collect())
    }

    async fn bounds_once(&self, cursor: &str, run_date: &str) -> Result<Bounds, PostgresError> {
        let client = self.connect().await?;
        let what = self.settings.what();
        let c = format!("s.{}", quote_identifier(cursor));
        // One statement, so that the maximum, the NULL count and the clock are one look.
        let (sql, params) = self.select(&format!("MAX({c}), count(*) FILTER (WHERE {c} IS NULL), clock_timestamp()"), None, None, run_date);
        let statement = client.prepare(&sql).await.map_err(|e| self.error(e, &what))?;
        let column = |reason: String| self.data(format!("{what}, column {cursor}"), reason);
        let ty = statement.columns().first().map(|c| c.type_().clone()).ok_or_else(|| column("no column".into()))?;
        let cursor_ty = cursor_type(&ty).ok_or_else(|| {
            column(format!(
                "timestamp_column {cursor} is of type {}; expected timestamptz, timestamp, date, smallint, integer or bigint",
                ty.name()
            ))
        })?;
        let values = bind(&params).map_err(|reason| self.data(what.clone(), reason))?;
        let row = client.query_one(&statement, &refs(&values)).await.map_err(|e| self.error(e, &what))?;
        let get = |i: usize| row.try_get::<_, Raw>(i).map(|r| r.0).map_err(|e| self.error(e, &what));
        let max = get(0)?.map(|raw| cursor_value(cursor_ty, raw)).transpose().map_err(|e| column(format!("MAX: {e}")))?;
        let null_rows: i64 = row.try_get(1).map_err(|e| self.error(e, &what))?;
        let now: DateTime<Utc> = row.try_get(2).map_err(|e| self.error(e, &what))?;
        Ok(Bounds { max, now, null_rows: null_rows.max(0) as u64 })
    }

    async fn count_once(&self, cursor: Option<&str>, window: &Window, run_date: &str) -> Result<u64, PostgresError> {
        let client = self.connect().await?;
        let what = self.settings.what();
        let (sql, params) = self.select("count(*)", cursor, Some(window), run_date);
        let values = bind(&params).map_err(|reason| self.data(what.clone(), reason))?;
        let row = client.query_one(&sql, &refs(&values)).await.map_err(|e| self.error(e, &what))?;
        let n: i64 = row.try_get(0).map_err(|e| self.error(e, &what))?;
        Ok(n.max(0) as u64)
    }

    /// Deletes the window's rows of the table in one transaction, committed only when it
    /// deleted exactly `expected` rows.
    /// `Err((e, true))`: the COMMIT was sent and its answer lost, so the rows may be gone.
    async fn delete_once(&self, cursor: &str, window: &Window, expected: u64) -> Result<Result<u64, u64>, (PostgresError, bool)> {
        let SourceSpec::Table(table) = &self.settings.source else {
            return Err((self.data(self.settings.what(), "rows can be deleted from a table source only, not a query".into()), false));
        };
        let sure = |e: PostgresError| (e, false);
        let mut client = self.connect().await.map_err(sure)?;
        let what = self.settings.what();
        let mut params = Vec::new();
        let filter = where_clause(Some(cursor), window, &mut params);
        let sql = format!("DELETE FROM {} s{filter}", table.quoted());
        let values = bind(&params).map_err(|reason| sure(self.data(what.clone(), reason)))?;
        let tx = client.transaction().await.map_err(|e| sure(self.error(e, "BEGIN")))?;
        let deleted = tx.execute(&sql, &refs(&values)).await.map_err(|e| sure(self.error(e, &what)))?;
        if deleted != expected {
            // Dropping the transaction rolls it back; so does the server when the connection goes.
            tx.rollback().await.map_err(|e| sure(self.error(e, "ROLLBACK")))?;
            return Ok(Err(deleted));
        }
        tx.commit().await.map_err(|e| (self.error(e, "COMMIT"), true))?;
        Ok(Ok(deleted))
    }

    /// Opens the read: a transaction, the columns' plan, the cursor over the window, and the
    /// prepared FETCH.
    async fn open(&self, client: &Client, export: &ExportSpec, window: &Window, run_date: &str) -> Result<Opened, PostgresError> {
        let what = self.settings.what();
        client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await.map_err(|e| self.error(e, "BEGIN"))?;
        let plans = self.plan_columns(client, run_date).await?;
        let (sql, params) = self.select(&select_list(&plans), export.cursor.as_deref(), Some(window), run_date);
        let values = bind(&params).map_err(|reason| self.data(what.clone(), reason))?;
        // Parameters of DECLARE are bound like those of any statement (extended protocol).
        client.execute(&format!("DECLARE {CURSOR} NO SCROLL CURSOR FOR {sql}"), &refs(&values)).await.map_err(|e| self.error(e, &what))?;
        let fetch =
            client.prepare(&format!("FETCH FORWARD {} FROM {CURSOR}", self.settings.batch_rows)).await.map_err(|e| self.error(e, &what))?;
        let schema = SchemaRef::new(Schema::new(plans.iter().map(|p| p.field.clone()).collect::<Vec<_>>()));
        Ok(Opened { fetch, plans, schema })
    }
}

/// Drives a connection until its client is dropped.
async fn drive<F: std::future::Future<Output = Result<(), tokio_postgres::Error>>>(connection: F) {
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "PostgreSQL connection ended with an error");
    }
}

/// The last error, with the number of attempts when there was more than one.
fn gave_up(g: GaveUp<PostgresError>) -> PostgresError {
    if g.attempts <= 1 {
        return g.error;
    }
    let context = g.context();
    PostgresError::GaveUp { last: Box::new(g.error), context }
}

fn context(e: PostgresError, export: &ExportSpec) -> Failure {
    Failure::with_class(e.class(), format!("export {}: {e}", export.name))
}

/// A statement parameter, bound with an explicit type in the SQL (`$1::timestamptz`).
#[derive(Debug, Clone)]
enum Param {
    /// The run date, `YYYY-MM-DD`.
    RunDate(String),
    /// A window bound, typed like the cursor.
    Cursor(CursorValue),
    /// A TIMESTAMP as microseconds since the epoch (the arrival window of NULL cursors).
    Micros(i64),
}

impl Param {
    fn sql_type(&self) -> &'static str {
        match self {
            Param::RunDate(_) => "date",
            Param::Cursor(v) => match v.ty() {
                CursorType::Timestamp => "timestamptz",
                CursorType::Datetime => "timestamp",
                CursorType::Date => "date",
                CursorType::Int64 => "int8",
            },
            Param::Micros(_) => "timestamptz",
        }
    }

    fn value(&self) -> Result<Box<dyn ToSql + Sync + Send>, String> {
        let micros = |us: i64| DateTime::<Utc>::from_timestamp_micros(us).ok_or_else(|| format!("timestamp {us} µs is out of range"));
        Ok(match self {
            Param::RunDate(d) => {
                Box::new(NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| format!("run date {d:?} is not a date (YYYY-MM-DD)"))?)
            }
            Param::Cursor(CursorValue::Timestamp(us)) | Param::Micros(us) => Box::new(micros(*us)?),
            Param::Cursor(CursorValue::Datetime(dt)) => Box::new(*dt),
            Param::Cursor(CursorValue::Date(d)) => Box::new(*d),
            Param::Cursor(CursorValue::Int64(i)) => Box::new(*i),
        })
    }
}

/// Binds `p` as the next parameter: `$n::type`.
fn push(params: &mut Vec<Param>, p: Param) -> String {
    let ty = p.sql_type();
    params.push(p);
    format!("${}::{ty}", params.len())
}

fn bind(params: &[Param]) -> Result<Vec<Box<dyn ToSql + Sync + Send>>, String> {
    params.iter().map(Param::value).collect()
}

fn refs(values: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v.as_ref() as &(dyn ToSql + Sync)).collect()
}

/// ` WHERE …` selecting the window's rows of `s` (empty when it is every row).
fn where_clause(cursor: Option<&str>, window: &Window, params: &mut Vec<Param>) -> String {
    let Some(cursor) = cursor else { return String::new() };
    let c = format!("s.{}", quote_identifier(cursor));
    let mut range = Vec::new();
    if let Some(lo) = &window.lo {
        range.push(format!("{c} > {}", push(params, Param::Cursor(lo.clone()))));
    }
    if let Some(hi) = &window.hi {
        range.push(format!("{c} <= {}", push(params, Param::Cursor(hi.clone()))));
    }
    let mut arrived = |column: &str, lo: &Option<i64>, hi: i64| {
        let a = format!("s.{}", quote_identifier(column));
        match lo {
            Some(lo) => {
                format!("{c} IS NULL AND {a} > {} AND {a} <= {}", push(params, Param::Micros(*lo)), push(params, Param::Micros(hi)))
            }
            None => format!("{c} IS NULL AND {a} <= {}", push(params, Param::Micros(hi))),
        }
    };
    match (range.is_empty(), &window.nulls) {
        (true, NullRows::Included) => String::new(),
        (true, NullRows::Excluded) => format!(" WHERE {c} IS NOT NULL"),
        (false, NullRows::Excluded) => format!(" WHERE {}", range.join(" AND ")),
        (false, NullRows::Included) => format!(" WHERE ({}) OR {c} IS NULL", range.join(" AND ")),
        // No cursor value bounds the window: it holds no row with a cursor value.
        (true, NullRows::Arrived { column, lo, hi }) => format!(" WHERE {}", arrived(column, lo, *hi)),
        (false, NullRows::Arrived { column, lo, hi }) => {
            let range = range.join(" AND ");
            format!(" WHERE ({range}) OR ({})", arrived(column, lo, *hi))
        }
    }
}

/// The select list of a read: each column, cast to text where ferry has no binary decoding
/// for its type.
fn select_list(plans: &[ColumnPlan]) -> String {
    let columns: Vec<String> = plans
        .iter()
        .map(|p| {
            let name = quote_identifier(&p.name);
            match p.cast {
                Some(cast) => format!("s.{name}::{cast} AS {name}"),
                None => format!("s.{name}"),
            }
        })
        .collect();
    columns.join(", ")
}

/// An open read: the cursor is declared, FETCH prepared.
struct Opened {
    fetch: Statement,
    plans: Vec<ColumnPlan>,
    schema: SchemaRef,
}

#[async_trait]
impl Source for PostgresSource {
    async fn bounds(&self, export: &ExportSpec, run_date: &str) -> Result<Bounds, Failure> {
        let Some(cursor) = &export.cursor else {
            return Err(Failure::with_class(ErrorClass::Permanent, format!("export {}: no timestamp_column to bound", export.name)));
        };
        self.retry.run("postgres bounds", || self.bounds_once(cursor, run_date)).await.map_err(|g| context(gave_up(g), export))
    }

    async fn count(&self, export: &ExportSpec, window: &Window, run_date: &str) -> Result<u64, Failure> {
        let cursor = export.cursor.as_deref();
        self.retry.run("postgres count", || self.count_once(cursor, window, run_date)).await.map_err(|g| context(gave_up(g), export))
    }

    async fn delete(&self, export: &ExportSpec, window: &Window, expected: u64) -> Result<u64, DeleteFailure> {
        let Some(cursor) = &export.cursor else {
            let failure = Failure::with_class(ErrorClass::Permanent, format!("export {}: no timestamp_column to delete by", export.name));
            return Err(DeleteFailure { failure, maybe_deleted: false });
        };
        // Not retried: the run records a failure that deleted nothing, and the next run loads the
        // hour again and deletes then.
        match self.delete_once(cursor, window, expected).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(found)) => Err(DeleteFailure {
                failure: Failure::with_class(
                    ErrorClass::Transient,
                    format!(
                        "export {}: {}: the window {window} holds {found} rows now, not the {expected} loaded; nothing was deleted",
                        export.name,
                        self.settings.what()
                    ),
                ),
                maybe_deleted: false,
            }),
            Err((e, maybe_deleted)) => Err(DeleteFailure { failure: context(e, export), maybe_deleted }),
        }
    }

    async fn read(&self, export: &ExportSpec, window: &Window, run_date: &str) -> Result<Box<dyn BatchReader>, Failure> {
        let client = self.connect_retried().await.map_err(|e| context(e, export))?;
        let opened = self.open(&client, export, window, run_date).await.map_err(|e| context(e, export))?;
        tracing::info!(
            export = %export.name,
            source = %self.settings.describe(),
            columns = opened.plans.len(),
            batch_rows = self.settings.batch_rows,
            "PostgreSQL read"
        );
        let schema = opened.schema.clone();
        // One batch waits in the channel while the next is fetched and decoded.
        let (tx, rx) = mpsc::channel(1);
        let pump = Pump { source: self.clone(), client, opened, tx };
        let task = tokio::spawn(pump.run());
        Ok(Box::new(Reader { schema, rx, task, export: export.name.clone(), done: false }))
    }

    fn read_sql(&self, export: &ExportSpec, window: &Window) -> String {
        let columns = if self.settings.columns.is_empty() {
            "*".to_owned()
        } else {
            self.settings.columns.iter().map(|c| format!("s.{}", quote_identifier(c))).collect::<Vec<_>>().join(", ")
        };
        // Types without a binary decoding of ferry's are cast to text when the read starts.
        self.select(&columns, export.cursor.as_deref(), Some(window), "").0
    }

    fn describe(&self, _export: &ExportSpec) -> String {
        self.settings.describe()
    }
}

type Fetched = Result<Option<RecordBatch>, PostgresError>;

/// Fetches batches off the caller's task and hands them over one at a time; `Ok(None)` after
/// the transaction committed.
struct Pump {
    source: PostgresSource,
    client: Client,
    opened: Opened,
    tx: mpsc::Sender<Fetched>,
}

impl Pump {
    async fn run(self) {
        let batch_rows = self.source.settings.batch_rows;
        loop {
            let (batch, rows) = match self.fetch().await {
                Ok(fetched) => fetched,
                Err(e) => {
                    let _ = self.tx.send(Err(e)).await;
                    return;
                }
            };
            if rows > 0 && self.tx.send(Ok(Some(batch))).await.is_err() {
                return; // The reader was dropped; dropping the client ends the transaction.
            }
            if rows < batch_rows {
                // A short batch is the last: the cursor is exhausted.
                let end = self.client.batch_execute("COMMIT").await.map(|_| None).map_err(|e| self.source.error(e, "COMMIT"));
                let _ = self.tx.send(end).await;
                return;
            }
        }
    }

    /// One FETCH, its rows decoded into one batch as they arrive.
    async fn fetch(&self) -> Result<(RecordBatch, usize), PostgresError> {
        let what = self.source.settings.what();
        let plans = &self.opened.plans;
        let mut builders: Vec<ColumnBuilder> = plans.iter().map(|p| ColumnBuilder::new(p, self.source.settings.batch_rows)).collect();
        let stream = self
            .client
            .query_raw(&self.opened.fetch, std::iter::empty::<&(dyn ToSql + Sync)>())
            .await
            .map_err(|e| self.source.error(e, &what))?;
        let mut stream = pin!(stream);
        let mut rows = 0;
        while let Some(row) = stream.next().await {
            let row = row.map_err(|e| self.source.error(e, &what))?;
            for (j, builder) in builders.iter_mut().enumerate() {
                let Raw(raw) = row.try_get(j).map_err(|e| self.source.error(e, &what))?;
                builder.push(raw).map_err(|reason| self.source.data(format!("{what}, column {}", plans[j].name), reason))?;
            }
            rows += 1;
        }
        let mut columns = Vec::with_capacity(builders.len());
        for (j, builder) in builders.iter_mut().enumerate() {
            columns.push(builder.finish().map_err(|reason| self.source.data(format!("{what}, column {}", plans[j].name), reason))?);
        }
        let batch =
            RecordBatch::try_new_with_options(self.opened.schema.clone(), columns, &RecordBatchOptions::new().with_row_count(Some(rows)))
                .map_err(|e| self.source.data(what.clone(), e.to_string()))?;
        Ok((batch, rows))
    }
}

/// Hands over the batches the [`Pump`] fetched. At most three batches are in memory: one the
/// caller holds, one waiting, one being decoded.
struct Reader {
    schema: SchemaRef,
    rx: mpsc::Receiver<Fetched>,
    task: JoinHandle<()>,
    export: String,
    done: bool,
}

#[async_trait]
impl BatchReader for Reader {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn next_batch(&mut self) -> Result<Option<RecordBatch>, Failure> {
        if self.done {
            return Ok(None);
        }
        match self.rx.recv().await {
            Some(Ok(Some(batch))) => Ok(Some(batch)),
            Some(Ok(None)) => {
                self.done = true;
                Ok(None)
            }
            Some(Err(e)) => {
                self.done = true;
                Err(Failure::with_class(e.class(), format!("export {}: {e}", self.export)))
            }
            None => {
                self.done = true;
                Err(Failure::with_class(
                    ErrorClass::Transient,
                    format!("export {}: the PostgreSQL reader stopped before the last batch", self.export),
                ))
            }
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::component::{TableName, Tls};

    fn source(spec: SourceSpec) -> PostgresSource {
        PostgresSource::new(PostgresSettings {
            host: "db".into(),
            port: 5432,
            database: "app".into(),
            user: "etl".into(),
            password: ferry_core::Secret::new("pw"),
            tls: Tls::Require,
            source: spec,
            columns: Vec::new(),
            batch_rows: 10,
        })
    }

    fn table() -> PostgresSource {
        source(SourceSpec::Table(TableName { schema: Some("public".into()), table: "orders".into() }))
    }

    #[test]
    fn windows_bind_typed_parameters() {
        let ts = |us| Some(CursorValue::Timestamp(us));
        let (sql, params) = table().select("count(*)", Some("updated_at"), Some(&Window::between(ts(1), ts(2))), "2024-01-02");
        assert_eq!(
            sql,
            r#"SELECT count(*) FROM "public"."orders" s WHERE s."updated_at" > $1::timestamptz AND s."updated_at" <= $2::timestamptz"#
        );
        assert_eq!(params.len(), 2);
        let w = Window { lo: None, hi: Some(CursorValue::Int64(5)), nulls: NullRows::Included };
        let (sql, _) = table().select("*", Some("id"), Some(&w), "");
        assert!(sql.ends_with(r#" WHERE (s."id" <= $1::int8) OR s."id" IS NULL"#), "{sql}");
        let w = Window { lo: None, hi: None, nulls: NullRows::Excluded };
        assert!(table().select("*", Some("id"), Some(&w), "").0.ends_with(r#" WHERE s."id" IS NOT NULL"#));
        let w = Window { lo: None, hi: None, nulls: NullRows::Included };
        assert!(table().select("*", Some("id"), Some(&w), "").0.ends_with(" s"));
        let w = Window {
            lo: Some(CursorValue::Date(NaiveDate::from_ymd_opt(2024, 1, 1).unwrap())),
            hi: None,
            nulls: NullRows::Arrived { column: "loaded_at".into(), lo: Some(1), hi: 2 },
        };
        let (sql, params) = table().select("*", Some("day"), Some(&w), "");
        assert!(
            sql.ends_with(r#" WHERE (s."day" > $1::date) OR (s."day" IS NULL AND s."loaded_at" > $2::timestamptz AND s."loaded_at" <= $3::timestamptz)"#),
            "{sql}"
        );
        assert_eq!(bind(&params).unwrap().len(), 3);
    }

    #[test]
    fn the_run_date_is_the_first_parameter_of_a_query() {
        let q = source(SourceSpec::Query { sql: "SELECT * FROM t WHERE day = $1::date".into(), run_date: true });
        let w = Window::between(Some(CursorValue::Int64(1)), None);
        let (sql, params) = q.select("*", Some("id"), Some(&w), "2024-03-04");
        assert_eq!(sql, r#"SELECT * FROM (SELECT * FROM t WHERE day = $1::date) s WHERE s."id" > $2::int8"#);
        assert!(matches!(&params[0], Param::RunDate(d) if d == "2024-03-04"));
        assert!(bind(&params).is_ok());
        let (_, params) = q.select("*", None, None, "yesterday");
        assert_eq!(bind(&params).err().unwrap(), "run date \"yesterday\" is not a date (YYYY-MM-DD)");
    }

    #[test]
    fn the_select_list_casts_what_ferry_does_not_decode() {
        let no = |_: &tokio_postgres::types::Type| false;
        let plans = [
            plan("id", &tokio_postgres::types::Type::INT8, -1, &no),
            plan("span", &tokio_postgres::types::Type::INTERVAL, -1, &no),
            plan("we\"ird", &tokio_postgres::types::Type::TEXT, -1, &no),
        ];
        assert_eq!(select_list(&plans), r#"s."id", s."span"::text AS "span", s."we""ird""#);
    }
}
