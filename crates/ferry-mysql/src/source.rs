//! The MySQL [`Source`]: `MAX(cursor)`, the NULL-cursor count and the server's clock in one
//! statement at plan time; the window's rows through one prepared SELECT streamed in the
//! binary protocol, inside one read-only transaction with a consistent snapshot.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{RecordBatch, RecordBatchOptions};
use async_trait::async_trait;
use chrono::NaiveDate;
use ferry_core::config::ExportSpec;
use ferry_core::cursor::CursorValue;
use ferry_core::retry::{GaveUp, RetryPolicy};
use ferry_core::rows::{Schema, SchemaRef};
use ferry_core::{BatchReader, Bounds, Classify, ErrorClass, Failure, NullRows, Source, Window};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row, Statement, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::component::{quote_identifier, MySqlSettings, SourceSpec, TableName};
use crate::decode::{cursor_param, cursor_type, cursor_value, datetime, datetime_param, maybe_json, plan, ColumnBuilder, ColumnPlan};
use crate::tls::ssl_opts;
use crate::MySqlError;

/// How long connecting (TCP, TLS and login) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Session settings every connection starts with: TIMESTAMP values in UTC, text in UTF-8
/// whatever the columns' character sets, and 10 minutes (not the server's 60 s) before the
/// server gives up on a slow reader of a result.
const SESSION: &str = "SET SESSION time_zone = '+00:00', character_set_results = 'utf8mb4', net_write_timeout = 600";

/// Reads one export's rows from MySQL or MariaDB.
///
/// Connecting and the plan-time statements ([`Source::bounds`], [`Source::count`]) are retried
/// under a [`RetryPolicy`] when they fail in a way that may pass (a refused or broken
/// connection, a deadlock, a lock wait timeout, a server shutting down); a read that fails
/// midway is not resumed here: the run starts it again.
#[derive(Debug, Clone)]
pub struct MySqlSource {
    settings: MySqlSettings,
    retry: RetryPolicy,
}

impl MySqlSource {
    /// A source reading what `settings` name.
    pub fn new(settings: MySqlSettings) -> Self {
        Self { settings, retry: RetryPolicy::default() }
    }

    /// The same source with another retry policy (the default is [`RetryPolicy::default`]).
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Its settings.
    pub fn settings(&self) -> &MySqlSettings {
        &self.settings
    }

    fn error(&self, e: mysql_async::Error, what: &str) -> MySqlError {
        MySqlError::from_mysql(e, &self.settings.server(), what)
    }

    fn data(&self, what: String, reason: String) -> MySqlError {
        MySqlError::Data { server: self.settings.server(), what, reason }
    }

    /// One connection, TLS as configured, its session settings made.
    async fn connect(&self) -> Result<Conn, MySqlError> {
        let s = &self.settings;
        let ssl = ssl_opts(&s.tls).map_err(|reason| MySqlError::Tls { server: s.server(), reason })?;
        let opts = OptsBuilder::default()
            .ip_or_hostname(s.host.as_str())
            .tcp_port(s.port)
            .user(Some(s.user.as_str()))
            .pass(Some(s.password.expose()))
            .db_name(Some(s.database.as_str()))
            // Never switch to the server's Unix socket: the login and the rows go over TLS.
            .prefer_socket(false)
            .ssl_opts(ssl);
        let mut conn = match tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts)).await {
            Ok(connected) => connected.map_err(|e| self.error(e, "connect"))?,
            Err(_) => {
                return Err(MySqlError::Connection {
                    server: s.server(),
                    what: "connect".into(),
                    reason: format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()),
                })
            }
        };
        conn.query_drop(SESSION).await.map_err(|e| self.error(e, "connect"))?;
        Ok(conn)
    }

    /// A connection under the retry policy.
    async fn connect_retried(&self) -> Result<Conn, MySqlError> {
        self.retry.run("mysql connect", || self.connect()).await.map_err(gave_up)
    }

    /// `SELECT {columns} FROM {source} s{window}` and its parameters: the run date for each
    /// `{date}` of a query first, then the window's bounds.
    fn select(&self, columns: &str, cursor: Option<&str>, window: Option<&Window>, run_date: &str) -> (String, Vec<Param>) {
        let mut params = Vec::new();
        let from = match &self.settings.source {
            SourceSpec::Table(t) => t.quoted(),
            SourceSpec::Query { sql, run_dates } => {
                params.extend((0..*run_dates).map(|_| Param::RunDate(run_date.to_owned())));
                format!("({sql})")
            }
        };
        let filter = match window {
            Some(w) => where_clause(cursor, w, &mut params),
            None => String::new(),
        };
        (format!("SELECT {columns} FROM {from} s{filter}"), params)
    }

    /// The configured columns (`s.`a`, s.`b``), or `*`.
    fn columns(&self) -> String {
        if self.settings.columns.is_empty() {
            return "*".to_owned();
        }
        self.settings.columns.iter().map(|c| format!("s.{}", quote_identifier(c))).collect::<Vec<_>>().join(", ")
    }

    fn bind(&self, params: &[Param]) -> Result<Vec<Value>, MySqlError> {
        params.iter().map(Param::value).collect::<Result<_, _>>().map_err(|reason| self.data(self.settings.what(), reason))
    }

    /// The columns the source selects, as the server describes them (a statement prepared, not
    /// run), and how each is read.
    async fn plan_columns(&self, conn: &mut Conn, run_date: &str) -> Result<Vec<ColumnPlan>, MySqlError> {
        let what = self.settings.what();
        let (sql, _) = self.select(&self.columns(), None, None, run_date);
        let statement = conn.prep(&sql).await.map_err(|e| self.error(e, &what))?;
        let columns = statement.columns();
        let mut plans = Vec::with_capacity(columns.len());
        for c in columns.iter() {
            plans.push(plan(c).map_err(|reason| self.data(format!("{what}, column {}", c.name_str()), reason))?);
        }
        // MariaDB's JSON is a LONGTEXT checked by json_valid(): the catalog tells.
        if let SourceSpec::Table(table) = &self.settings.source {
            if columns.iter().any(maybe_json) {
                let json = self.json_columns(conn, table).await?;
                for (c, p) in columns.iter().zip(plans.iter_mut()) {
                    if maybe_json(c) && json.contains(&c.org_name_str().to_lowercase()) {
                        p.as_json();
                    }
                }
            }
        }
        conn.close(statement).await.map_err(|e| self.error(e, &what))?;
        Ok(plans)
    }

    /// The columns of `table` that MariaDB's `JSON` made (lower case): each has a column check
    /// constraint `json_valid(`column`)`, named like the column. Empty on MySQL, whose catalog
    /// has no such table or column (its JSON has a type of its own).
    async fn json_columns(&self, conn: &mut Conn, table: &TableName) -> Result<HashSet<String>, MySqlError> {
        let database = table.database.as_deref().unwrap_or(&self.settings.database);
        let sql = "SELECT CONSTRAINT_NAME FROM information_schema.CHECK_CONSTRAINTS \
                   WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ? AND CHECK_CLAUSE = CONCAT('json_valid(`', CONSTRAINT_NAME, '`)')";
        let rows: Vec<Row> = match conn.exec(sql, vec![Value::from(database), Value::from(table.table.as_str())]).await {
            Ok(rows) => rows,
            // 1054 unknown column, 1109 unknown table: MySQL.
            Err(mysql_async::Error::Server(e)) if matches!(e.code, 1054 | 1109) => return Ok(HashSet::new()),
            Err(e) => return Err(self.error(e, "information_schema.CHECK_CONSTRAINTS")),
        };
        let mut names = HashSet::new();
        for row in rows {
            if let Some(Value::Bytes(name)) = row.as_ref(0) {
                names.insert(String::from_utf8_lossy(name).to_lowercase());
            }
        }
        Ok(names)
    }

    async fn bounds_once(&self, cursor: &str, run_date: &str) -> Result<Bounds, MySqlError> {
        let mut conn = self.connect().await?;
        let what = self.settings.what();
        let c = format!("s.{}", quote_identifier(cursor));
        let column = |reason: String| self.data(format!("{what}, column {cursor}"), reason);
        // The cursor's type, from the column itself (a statement prepared, not run).
        let (sql, _) = self.select(&c, None, None, run_date);
        let described = conn.prep(&sql).await.map_err(|e| self.error(e, &what))?;
        let ty = described.columns().first().cloned().ok_or_else(|| column("no column".into()))?;
        conn.close(described).await.map_err(|e| self.error(e, &what))?;
        let cursor_ty = cursor_type(&ty).ok_or_else(|| {
            column(format!(
                "timestamp_column {cursor} is of type {}; expected TIMESTAMP, DATETIME, DATE or an integer type",
                plan(&ty).map(|p| p.sql_type).unwrap_or_else(|_| format!("{:?}", ty.column_type()))
            ))
        })?;
        // One statement, so that the maximum, the NULL count and the clock are one look.
        let (sql, params) = self.select(&format!("MAX({c}), COUNT(*) - COUNT({c}), UTC_TIMESTAMP(6)"), None, None, run_date);
        let values = self.bind(&params)?;
        let row: Row = conn.exec_first(&sql, values).await.map_err(|e| self.error(e, &what))?.ok_or_else(|| column("no row".into()))?;
        let get = |i: usize| row.as_ref(i).cloned().unwrap_or(Value::NULL);
        let max = cursor_value(cursor_ty, &get(0)).map_err(|e| column(format!("MAX: {e}")))?;
        let null_rows = match get(1) {
            Value::Int(n) => n.max(0) as u64,
            Value::UInt(n) => n,
            other => return Err(self.data(what, format!("the count of NULL cursors is {other:?}"))),
        };
        let now = datetime(&get(2)).ok().flatten().ok_or_else(|| self.data(what.clone(), "UTC_TIMESTAMP(6) is not a time".into()))?;
        let _ = conn.disconnect().await;
        Ok(Bounds { max, now: now.and_utc(), null_rows })
    }

    async fn count_once(&self, cursor: Option<&str>, window: &Window, run_date: &str) -> Result<u64, MySqlError> {
        let mut conn = self.connect().await?;
        let what = self.settings.what();
        let (sql, params) = self.select("COUNT(*)", cursor, Some(window), run_date);
        let values = self.bind(&params)?;
        let n: Option<Value> = conn.exec_first(&sql, values).await.map_err(|e| self.error(e, &what))?;
        let _ = conn.disconnect().await;
        match n {
            Some(Value::Int(n)) => Ok(n.max(0) as u64),
            Some(Value::UInt(n)) => Ok(n),
            other => Err(self.data(what, format!("COUNT(*) is {other:?}"))),
        }
    }

    /// Opens the read: a read-only transaction with a consistent snapshot, the columns' plan,
    /// and the window's SELECT prepared.
    async fn open(&self, conn: &mut Conn, export: &ExportSpec, window: &Window, run_date: &str) -> Result<Opened, MySqlError> {
        let what = self.settings.what();
        conn.query_drop("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").await.map_err(|e| self.error(e, "SET TRANSACTION"))?;
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY").await.map_err(|e| self.error(e, "START TRANSACTION"))?;
        let plans = self.plan_columns(conn, run_date).await?;
        let (sql, params) = self.select(&select_list(&plans), export.cursor.as_deref(), Some(window), run_date);
        let params = self.bind(&params)?;
        let statement = conn.prep(&sql).await.map_err(|e| self.error(e, &what))?;
        if statement.columns().len() != plans.len() {
            return Err(self.data(what, format!("the SELECT has {} columns, not the {} described", statement.columns().len(), plans.len())));
        }
        let schema = SchemaRef::new(Schema::new(plans.iter().map(|p| p.field.clone()).collect::<Vec<_>>()));
        Ok(Opened { statement, params, plans, schema })
    }

    /// Ends the server's work for an abandoned read: `KILL` of its connection from another
    /// one, in the background, so that the server stops sending rows nobody reads (mysql_async
    /// would otherwise read the rest of the result before closing the connection).
    fn abandon(&self, connection_id: u32) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let source = self.clone();
        runtime.spawn(async move {
            let killed = async {
                let mut conn = source.connect().await?;
                let killed = conn.query_drop(format!("KILL {connection_id}")).await.map_err(|e| source.error(e, "KILL"));
                let _ = conn.disconnect().await;
                killed
            };
            match killed.await {
                Ok(()) => tracing::debug!(connection_id, "killed the connection of an abandoned MySQL read"),
                // 1094: the connection had ended already.
                Err(e) if e.code() == Some(1094) => {}
                Err(e) => tracing::warn!(error = %e, connection_id, "could not end the connection of an abandoned MySQL read"),
            }
        });
    }
}

/// The last error, with the number of attempts when there was more than one.
fn gave_up(g: GaveUp<MySqlError>) -> MySqlError {
    if g.attempts <= 1 {
        return g.error;
    }
    let context = g.context();
    MySqlError::GaveUp { last: Box::new(g.error), context }
}

fn context(e: MySqlError, export: &ExportSpec) -> Failure {
    Failure::with_class(e.class(), format!("export {}: {e}", export.name))
}

/// A statement parameter, bound as a typed value of the binary protocol.
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
    /// The placeholder: dates cast, so that they compare as dates.
    fn placeholder(&self) -> &'static str {
        match self {
            Param::RunDate(_) | Param::Cursor(CursorValue::Date(_)) => "CAST(? AS DATE)",
            _ => "?",
        }
    }

    fn value(&self) -> Result<Value, String> {
        match self {
            Param::RunDate(d) => {
                let date = NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| format!("run date {d:?} is not a date (YYYY-MM-DD)"))?;
                Ok(datetime_param(date.and_time(chrono::NaiveTime::MIN)))
            }
            Param::Cursor(v) => cursor_param(v),
            Param::Micros(us) => cursor_param(&CursorValue::Timestamp(*us)),
        }
    }
}

/// Binds `p` as the next parameter.
fn push(params: &mut Vec<Param>, p: Param) -> &'static str {
    let placeholder = p.placeholder();
    params.push(p);
    placeholder
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

/// The select list of a read: each column by name, or the expression that reads it as text.
fn select_list(plans: &[ColumnPlan]) -> String {
    let columns: Vec<String> = plans
        .iter()
        .map(|p| {
            let name = quote_identifier(&p.name);
            match &p.select {
                Some(expression) => format!("{expression} AS {name}"),
                None => format!("s.{name}"),
            }
        })
        .collect();
    columns.join(", ")
}

/// An open read: the transaction started, the SELECT prepared.
struct Opened {
    statement: Statement,
    params: Vec<Value>,
    plans: Vec<ColumnPlan>,
    schema: SchemaRef,
}

#[async_trait]
impl Source for MySqlSource {
    async fn bounds(&self, export: &ExportSpec, run_date: &str) -> Result<Bounds, Failure> {
        let Some(cursor) = &export.cursor else {
            return Err(Failure::with_class(ErrorClass::Permanent, format!("export {}: no timestamp_column to bound", export.name)));
        };
        self.retry.run("mysql bounds", || self.bounds_once(cursor, run_date)).await.map_err(|g| context(gave_up(g), export))
    }

    async fn count(&self, export: &ExportSpec, window: &Window, run_date: &str) -> Result<u64, Failure> {
        let cursor = export.cursor.as_deref();
        self.retry.run("mysql count", || self.count_once(cursor, window, run_date)).await.map_err(|g| context(gave_up(g), export))
    }

    async fn read(&self, export: &ExportSpec, window: &Window, run_date: &str) -> Result<Box<dyn BatchReader>, Failure> {
        let mut conn = self.connect_retried().await.map_err(|e| context(e, export))?;
        let opened = self.open(&mut conn, export, window, run_date).await.map_err(|e| context(e, export))?;
        tracing::info!(
            export = %export.name,
            source = %self.settings.describe(),
            columns = opened.plans.len(),
            batch_rows = self.settings.batch_rows,
            "MySQL read"
        );
        let schema = opened.schema.clone();
        let connection_id = conn.id();
        let finished = Arc::new(AtomicBool::new(false));
        // One batch waits in the channel while the next is read and decoded.
        let (tx, rx) = mpsc::channel(1);
        let pump = Pump { source: self.clone(), conn, opened, tx, finished: finished.clone() };
        let task = tokio::spawn(pump.run());
        Ok(Box::new(Reader { source: self.clone(), schema, rx, task, export: export.name.clone(), done: false, connection_id, finished }))
    }

    fn read_sql(&self, export: &ExportSpec, window: &Window) -> String {
        // Types read as text (GEOMETRY) are selected as such when the read starts.
        self.select(&self.columns(), export.cursor.as_deref(), Some(window), "").0
    }

    fn describe(&self, _export: &ExportSpec) -> String {
        self.settings.describe()
    }
}

type Fetched = Result<Option<RecordBatch>, MySqlError>;

/// How the rows of a read ended.
enum Streamed {
    /// Every row was handed over.
    All,
    /// The reader went away.
    Abandoned,
}

/// Runs the SELECT off the caller's task and hands its batches over one at a time; `Ok(None)`
/// after the transaction committed.
struct Pump {
    source: MySqlSource,
    conn: Conn,
    opened: Opened,
    tx: mpsc::Sender<Fetched>,
    finished: Arc<AtomicBool>,
}

impl Pump {
    async fn run(mut self) {
        let end = match self.stream().await {
            Ok(Streamed::Abandoned) => return,
            Ok(Streamed::All) => match self.conn.query_drop("COMMIT").await {
                Ok(()) => {
                    self.finished.store(true, Ordering::SeqCst);
                    Ok(None)
                }
                Err(e) => Err(self.source.error(e, "COMMIT")),
            },
            Err(e) => Err(e),
        };
        let _ = self.tx.send(end).await;
        if self.finished.load(Ordering::SeqCst) {
            let _ = self.conn.disconnect().await;
        }
    }

    /// The rows of the SELECT, `batch_rows` to a batch, each sent as soon as it is full.
    async fn stream(&mut self) -> Result<Streamed, MySqlError> {
        let Pump { source, conn, opened, tx, .. } = self;
        let what = source.settings.what();
        let batch_rows = source.settings.batch_rows;
        let plans = &opened.plans;
        let mut builders: Vec<ColumnBuilder> = plans.iter().map(|p| ColumnBuilder::new(p, batch_rows)).collect();
        let mut result = conn.exec_iter(&opened.statement, opened.params.clone()).await.map_err(|e| source.error(e, &what))?;
        let mut rows = 0;
        loop {
            let row = result.next().await.map_err(|e| source.error(e, &what))?;
            let Some(row) = row else { break };
            for (j, builder) in builders.iter_mut().enumerate() {
                let column = || format!("{what}, column {}", plans[j].name);
                let value = row.as_ref(j).ok_or_else(|| source.data(column(), "no value in the row".into()))?;
                builder.push(value).map_err(|reason| source.data(column(), reason))?;
            }
            rows += 1;
            if rows == batch_rows {
                let batch = finish(source, &opened.schema, &mut builders, rows)?;
                rows = 0;
                if tx.send(Ok(Some(batch))).await.is_err() {
                    return Ok(Streamed::Abandoned);
                }
            }
        }
        drop(result);
        if rows > 0 {
            let batch = finish(source, &opened.schema, &mut builders, rows)?;
            if tx.send(Ok(Some(batch))).await.is_err() {
                return Ok(Streamed::Abandoned);
            }
        }
        Ok(Streamed::All)
    }
}

/// The batch of the builders' `rows` rows; the builders start over.
fn finish(source: &MySqlSource, schema: &SchemaRef, builders: &mut [ColumnBuilder], rows: usize) -> Result<RecordBatch, MySqlError> {
    let columns = builders.iter_mut().map(ColumnBuilder::finish).collect();
    RecordBatch::try_new_with_options(schema.clone(), columns, &RecordBatchOptions::new().with_row_count(Some(rows)))
        .map_err(|e| source.data(source.settings.what(), e.to_string()))
}

/// Hands over the batches the [`Pump`] read. At most three batches are in memory: one the
/// caller holds, one waiting, one being decoded.
struct Reader {
    source: MySqlSource,
    schema: SchemaRef,
    rx: mpsc::Receiver<Fetched>,
    task: JoinHandle<()>,
    export: String,
    done: bool,
    connection_id: u32,
    /// Set once the transaction committed.
    finished: Arc<AtomicBool>,
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
                    format!("export {}: the MySQL reader stopped before the last batch", self.export),
                ))
            }
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.task.abort();
        if !self.finished.load(Ordering::SeqCst) {
            self.source.abandon(self.connection_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::component::Tls;

    fn source(spec: SourceSpec) -> MySqlSource {
        MySqlSource::new(MySqlSettings {
            host: "db".into(),
            port: 3306,
            database: "app".into(),
            user: "etl".into(),
            password: ferry_core::Secret::new("pw"),
            tls: Tls::Require,
            source: spec,
            columns: Vec::new(),
            batch_rows: 10,
        })
    }

    fn table() -> MySqlSource {
        source(SourceSpec::Table(TableName { database: Some("app".into()), table: "orders".into() }))
    }

    #[test]
    fn windows_bind_typed_parameters() {
        let ts = |us| Some(CursorValue::Timestamp(us));
        let (sql, params) = table().select("COUNT(*)", Some("updated_at"), Some(&Window::between(ts(1), ts(2))), "2024-01-02");
        assert_eq!(sql, "SELECT COUNT(*) FROM `app`.`orders` s WHERE s.`updated_at` > ? AND s.`updated_at` <= ?");
        let values = table().bind(&params).unwrap();
        assert_eq!(values, [Value::Date(1970, 1, 1, 0, 0, 0, 1), Value::Date(1970, 1, 1, 0, 0, 0, 2)]);
        let w = Window { lo: None, hi: Some(CursorValue::Int64(5)), nulls: NullRows::Included };
        let (sql, params) = table().select("*", Some("id"), Some(&w), "");
        assert!(sql.ends_with(" WHERE (s.`id` <= ?) OR s.`id` IS NULL"), "{sql}");
        assert_eq!(table().bind(&params).unwrap(), [Value::Int(5)]);
        let w = Window { lo: None, hi: None, nulls: NullRows::Excluded };
        assert!(table().select("*", Some("id"), Some(&w), "").0.ends_with(" WHERE s.`id` IS NOT NULL"));
        let w = Window { lo: None, hi: None, nulls: NullRows::Included };
        assert!(table().select("*", Some("id"), Some(&w), "").0.ends_with(" s"));
        let w = Window {
            lo: Some(CursorValue::Date(NaiveDate::from_ymd_opt(2024, 1, 1).unwrap())),
            hi: None,
            nulls: NullRows::Arrived { column: "loaded_at".into(), lo: Some(1), hi: 2 },
        };
        let (sql, params) = table().select("*", Some("day"), Some(&w), "");
        assert!(
            sql.ends_with(" WHERE (s.`day` > CAST(? AS DATE)) OR (s.`day` IS NULL AND s.`loaded_at` > ? AND s.`loaded_at` <= ?)"),
            "{sql}"
        );
        assert_eq!(table().bind(&params).unwrap().len(), 3);
    }

    #[test]
    fn the_run_date_is_bound_for_each_date_of_a_query() {
        let q =
            source(SourceSpec::Query { sql: "SELECT * FROM t WHERE day = CAST(? AS DATE) OR d = CAST(? AS DATE)".into(), run_dates: 2 });
        let w = Window::between(Some(CursorValue::Int64(1)), None);
        let (sql, params) = q.select("*", Some("id"), Some(&w), "2024-03-04");
        assert_eq!(sql, "SELECT * FROM (SELECT * FROM t WHERE day = CAST(? AS DATE) OR d = CAST(? AS DATE)) s WHERE s.`id` > ?");
        let day = Value::Date(2024, 3, 4, 0, 0, 0, 0);
        assert_eq!(q.bind(&params).unwrap(), [day.clone(), day, Value::Int(1)]);
        let (_, params) = q.select("*", None, None, "yesterday");
        let e = q.bind(&params).unwrap_err();
        assert_eq!(e.to_string(), "MySQL db:3306/app: query: run date \"yesterday\" is not a date (YYYY-MM-DD)");
    }

    #[test]
    fn the_select_list_reads_geometry_as_text() {
        use mysql_async::consts::ColumnType;
        let column = |name: &[u8], ty| mysql_async::Column::new(ty).with_name(name).with_character_set(45);
        let plans = [
            plan(&column(b"id", ColumnType::MYSQL_TYPE_LONGLONG)).unwrap(),
            plan(&column(b"shape", ColumnType::MYSQL_TYPE_GEOMETRY)).unwrap(),
            plan(&column(b"we`ird", ColumnType::MYSQL_TYPE_VAR_STRING)).unwrap(),
        ];
        assert_eq!(select_list(&plans), "s.`id`, ST_AsText(s.`shape`) AS `shape`, s.`we``ird`");
    }
}
