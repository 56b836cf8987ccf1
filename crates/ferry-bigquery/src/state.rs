//! The metadata table as ferry's [`StateStore`]: one appended row per run and export.
//!
//! Columns: the seed deployment's (export_name, source_table, last_export_timestamp,
//! last_exported_value, rows_exported, file_name, export_status, started_at, completed_at,
//! error_message) plus ferry's (run_id, cursor_type, window_lo, bytes, sha256, message_id,
//! `files`: a JSON array with the name, bytes, rows and sha256 of each file, `null_cursor_rows`:
//! rows whose cursor was NULL when the run planned, `null_arrival_hi`: the upper bound of the
//! window of NULL-cursor rows by their arrival column, `execution`: the Cloud Run Job execution
//! a DISPATCHED row started or a run ran in, and `recorded_at`: the server's
//! `CURRENT_TIMESTAMP()` when the row was inserted). A table created by the seed deployment, or
//! by an earlier ferry, is extended with ferry's columns.
//!
//! Rows are ordered by `recorded_at`, the server's clock, so that a process whose clock is
//! behind cannot put its record before an earlier one; rows written before the column existed
//! have none and are ordered by their `completed_at`.
//!
//! Leases live in a sibling table, `<metadata table>_leases` (export_name, holder, message_id,
//! acquired_at, expires_at, and the host and pid of the holder's process), one row per claim. Every time in it is the server's
//! `CURRENT_TIMESTAMP()`, so the clocks of the instances do not matter. To acquire, a holder
//! inserts its row and then reads the live rows of the export: it holds the lease only if its
//! row is the only one. Two racing holders cannot both see only themselves (each inserted
//! before it read), so at most one wins. A waiting run inserts its claim only when it sees no
//! live claim; when claims race, the oldest keeps its row and reads again while younger ones
//! delete theirs, so contenders neither all give way at once nor crowd out the next winner.

use std::time::Duration;

use crate::client::Cell;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ferry_core::ident::TableName;
use ferry_core::{Claim, Failure, HolderProcess, Lease, RunRecord, RunStatus, StateStore};

use crate::client::{BigQuery, QueryParam};
use crate::BigQueryError;

const SEED_COLUMNS: &str = "export_name STRING NOT NULL, source_table STRING NOT NULL, last_export_timestamp TIMESTAMP, \
     last_exported_value STRING, rows_exported INT64, file_name STRING, export_status STRING, started_at TIMESTAMP, \
     completed_at TIMESTAMP, error_message STRING";

const FERRY_COLUMNS: &[(&str, &str)] = &[
    ("run_id", "STRING"),
    ("cursor_type", "STRING"),
    ("window_lo", "STRING"),
    ("bytes", "INT64"),
    ("sha256", "STRING"),
    ("message_id", "STRING"),
    ("files", "STRING"),
    ("recorded_at", "TIMESTAMP"),
    ("null_cursor_rows", "INT64"),
    ("null_arrival_hi", "STRING"),
    ("execution", "STRING"),
];

/// Columns of the leases table added after it was first shipped.
const LEASE_COLUMNS: &[(&str, &str)] = &[("host", "STRING"), ("pid", "INT64")];

/// The order rows were recorded in: the server's clock, else (rows from before `recorded_at`)
/// the writer's.
const RECORDED: &str = "COALESCE(recorded_at, completed_at)";

const SELECT: &str = "run_id, export_name, source_table, export_status, last_exported_value, cursor_type, window_lo, \
     rows_exported, bytes, sha256, file_name, started_at, completed_at, error_message, message_id, files, null_cursor_rows, null_arrival_hi, execution";

/// Records runs in a BigQuery table.
#[derive(Debug, Clone)]
pub struct MetadataStore {
    bq: BigQuery,
    table: String,
    leases: String,
    name: TableName,
    /// Create the dataset too when it is missing (ferry's default table only).
    create_dataset: bool,
}

impl MetadataStore {
    /// The store for `table` (queried through `bq`).
    pub fn new(bq: BigQuery, table: &TableName) -> Self {
        let leases = TableName { table: format!("{}_leases", table.table), ..table.clone() };
        Self { table: table.quoted(bq.project()), leases: leases.quoted(bq.project()), bq, name: table.clone(), create_dataset: false }
    }

    /// The same store, creating the table's dataset when it is missing: for ferry's default
    /// table, never for a named one (a mistyped dataset must fail, not start a new history).
    pub fn creating_dataset(mut self, create: bool) -> Self {
        self.create_dataset = create;
        self
    }

    fn fail(&self, e: BigQueryError) -> Failure {
        let class = ferry_core::Classify::class(&e);
        Failure::with_class(class, format!("metadata table {}: {e}", self.name))
    }

    /// Creates `table` with `create` (a `CREATE TABLE IF NOT EXISTS`) when it does not exist,
    /// then adds the columns of `columns` it lacks. A table that exists whole costs one
    /// `tables.get` and no query.
    async fn ensure_table(&self, table: &TableName, quoted: &str, create: &str, columns: &[(&str, &str)]) -> Result<(), Failure> {
        let table_ref = crate::client::TableRef {
            project: table.project.clone().unwrap_or_else(|| self.bq.project().to_owned()),
            dataset: table.dataset.clone(),
            table: table.table.clone(),
        };
        let existing = match self.bq.table_schema(&table_ref).await.map_err(|e| self.fail(e))? {
            Some(fields) => fields,
            None => {
                if let Err(e) = self.bq.execute(create, &[]).await {
                    // A missing dataset (the default `ferry.export_runs` on a first run) is
                    // created, in the project's default location; then the table.
                    if !self.create_dataset || !matches!(&e, crate::BigQueryError::Api { api, .. } if api.status == 404) {
                        return Err(self.fail(e));
                    }
                    let dataset = format!("`{}.{}`", table_ref.project, table_ref.dataset);
                    tracing::info!(dataset = %dataset, "creating the metadata table's dataset");
                    self.bq.execute(&format!("CREATE SCHEMA IF NOT EXISTS {dataset}"), &[]).await.map_err(|e| self.fail(e))?;
                    self.bq.execute(create, &[]).await.map_err(|e| self.fail(e))?;
                }
                self.bq.table_schema(&table_ref).await.map_err(|e| self.fail(e))?.unwrap_or_default()
            }
        };
        for (col, ty) in columns {
            if !existing.iter().any(|f| f.name.eq_ignore_ascii_case(col)) {
                let sql = format!("ALTER TABLE {quoted} ADD COLUMN IF NOT EXISTS {col} {ty}");
                self.bq.execute(&sql, &[]).await.map_err(|e| self.fail(e))?;
            }
        }
        Ok(())
    }

    /// Every row `sql` returns.
    async fn rows(&self, sql: &str, params: &[QueryParam]) -> Result<Vec<Vec<Cell>>, Failure> {
        self.bq.query(sql, params, 1000).await.map_err(|e| self.fail(e))?.collect().await.map_err(|e| self.fail(e))
    }

    async fn records(&self, sql: &str, params: &[QueryParam]) -> Result<Vec<RunRecord>, Failure> {
        Ok(self.rows(sql, params).await?.iter().map(|r| parse_record(r)).collect())
    }
}

fn text(c: Option<&Cell>) -> Option<String> {
    match c {
        Some(Cell::Text(t)) => Some(t.clone()),
        _ => None,
    }
}

fn ts(c: Option<&Cell>) -> DateTime<Utc> {
    text(c)
        .and_then(|t| ferry_core::cursor::parse_rest_timestamp(&t))
        .and_then(DateTime::<Utc>::from_timestamp_micros)
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

fn parse_record(r: &[Cell]) -> RunRecord {
    let g = |i: usize| text(r.get(i));
    RunRecord {
        run_id: g(0).unwrap_or_default(),
        export_name: g(1).unwrap_or_default(),
        source_table: g(2).unwrap_or_default(),
        status: g(3).and_then(|s| RunStatus::parse(&s.to_ascii_uppercase())).unwrap_or(RunStatus::Failed),
        last_exported_value: g(4),
        cursor_type: g(5),
        window_lo: g(6),
        rows_exported: g(7).and_then(|v| v.parse().ok()).unwrap_or(0),
        bytes: g(8).and_then(|v| v.parse().ok()).unwrap_or(0),
        sha256: g(9),
        file_name: g(10),
        started_at: ts(r.get(11)),
        completed_at: ts(r.get(12)),
        error_message: g(13),
        message_id: g(14),
        files: g(15).and_then(|j| serde_json::from_str(&j).ok()).unwrap_or_default(),
        null_cursor_rows: g(16).and_then(|v| v.parse().ok()),
        null_arrival_hi: g(17),
        execution: g(18),
    }
}

fn p(name: &str, ty: &str, v: Option<String>) -> QueryParam {
    QueryParam { name: name.into(), type_name: ty.into(), value: v }
}

fn ts_param(t: DateTime<Utc>) -> Option<String> {
    Some(t.format("%Y-%m-%d %H:%M:%S%.6f+00:00").to_string())
}

#[async_trait]
impl StateStore for MetadataStore {
    async fn ensure(&self) -> Result<(), Failure> {
        let t = &self.table;
        self.ensure_table(&self.name, t, &format!("CREATE TABLE IF NOT EXISTS {t} ({SEED_COLUMNS})"), FERRY_COLUMNS).await?;
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {} (export_name STRING NOT NULL, holder STRING NOT NULL, message_id STRING, \
             acquired_at TIMESTAMP NOT NULL, expires_at TIMESTAMP NOT NULL, host STRING, pid INT64)",
            self.leases
        );
        let leases = TableName { table: format!("{}_leases", self.name.table), ..self.name.clone() };
        self.ensure_table(&leases, &self.leases, &create, LEASE_COLUMNS).await?;
        Ok(())
    }

    async fn watermark(&self, export: &str) -> Result<Option<(String, String)>, Failure> {
        let sql = format!(
            "SELECT cursor_type, last_exported_value FROM {} WHERE export_name = @export AND UPPER(export_status) = 'SUCCESS' \
             AND last_exported_value IS NOT NULL ORDER BY {RECORDED} DESC, completed_at DESC LIMIT 1",
            self.table
        );
        let rows = self.rows(&sql, &[QueryParam::new("export", "STRING", export)]).await?;
        Ok(rows.first().and_then(|r| Some((text(r.first()).unwrap_or_default(), text(r.get(1))?))))
    }

    async fn null_arrival_mark(&self, export: &str) -> Result<Option<String>, Failure> {
        // Canonical TIMESTAMP text has a fixed width, so its largest value is the latest.
        let sql =
            format!("SELECT MAX(null_arrival_hi) FROM {} WHERE export_name = @export AND UPPER(export_status) = 'SUCCESS'", self.table);
        let rows = self.rows(&sql, &[QueryParam::new("export", "STRING", export)]).await?;
        Ok(rows.first().and_then(|r| text(r.first())))
    }

    async fn pending(&self, export: &str) -> Result<Vec<RunRecord>, Failure> {
        let t = &self.table;
        let sql = format!(
            "SELECT {SELECT} FROM {t} AS p WHERE p.export_name = @export AND p.export_status = 'PENDING' \
             AND NOT EXISTS (SELECT 1 FROM {t} AS q WHERE q.run_id = p.run_id AND q.export_name = p.export_name AND q.export_status != 'PENDING') \
             ORDER BY COALESCE(p.recorded_at, p.completed_at), p.completed_at"
        );
        self.records(&sql, &[QueryParam::new("export", "STRING", export)]).await
    }

    async fn append(&self, r: &RunRecord) -> Result<(), Failure> {
        let sql = format!(
            "INSERT INTO {} (export_name, source_table, last_export_timestamp, last_exported_value, rows_exported, file_name, \
             export_status, started_at, completed_at, error_message, run_id, cursor_type, window_lo, bytes, sha256, message_id, files, \
             null_cursor_rows, null_arrival_hi, execution, recorded_at) \
             VALUES (@export_name, @source_table, @last_export_timestamp, @last_exported_value, @rows_exported, @file_name, \
             @export_status, @started_at, @completed_at, @error_message, @run_id, @cursor_type, @window_lo, @bytes, @sha256, @message_id, @files, \
             @null_cursor_rows, @null_arrival_hi, @execution, CURRENT_TIMESTAMP())",
            self.table
        );
        let params = [
            p("export_name", "STRING", Some(r.export_name.clone())),
            p("source_table", "STRING", Some(r.source_table.clone())),
            p("last_export_timestamp", "TIMESTAMP", (r.status == RunStatus::Success).then(|| ts_param(r.completed_at)).flatten()),
            p("last_exported_value", "STRING", r.last_exported_value.clone()),
            p("rows_exported", "INT64", Some(r.rows_exported.to_string())),
            p("file_name", "STRING", r.file_name.clone()),
            p("export_status", "STRING", Some(r.status.as_str().to_owned())),
            p("started_at", "TIMESTAMP", ts_param(r.started_at)),
            p("completed_at", "TIMESTAMP", ts_param(r.completed_at)),
            p("error_message", "STRING", r.error_message.clone()),
            p("run_id", "STRING", Some(r.run_id.clone())),
            p("cursor_type", "STRING", r.cursor_type.clone()),
            p("window_lo", "STRING", r.window_lo.clone()),
            p("bytes", "INT64", Some(r.bytes.to_string())),
            p("sha256", "STRING", r.sha256.clone()),
            p("message_id", "STRING", r.message_id.clone()),
            p("files", "STRING", (!r.files.is_empty()).then(|| serde_json::to_string(&r.files).expect("files to JSON"))),
            p("null_cursor_rows", "INT64", r.null_cursor_rows.map(|n| n.to_string())),
            p("null_arrival_hi", "STRING", r.null_arrival_hi.clone()),
            p("execution", "STRING", r.execution.clone()),
        ];
        self.bq.execute(&sql, &params).await.map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn by_message(&self, export: &str, message_id: &str) -> Result<Vec<RunRecord>, Failure> {
        let sql = format!(
            "SELECT {SELECT} FROM {} WHERE export_name = @export AND message_id = @message ORDER BY {RECORDED}, completed_at",
            self.table
        );
        self.records(&sql, &[QueryParam::new("export", "STRING", export), QueryParam::new("message", "STRING", message_id)]).await
    }

    async fn acquire(&self, export: &str, holder: &str, message_id: Option<&str>, ttl: Duration, wait: Duration) -> Result<Claim, Failure> {
        let deadline = std::time::Instant::now() + wait;
        let l = &self.leases;
        let who = [QueryParam::new("export", "STRING", export), QueryParam::new("holder", "STRING", holder)];
        // A claim is inserted only when no live claim is there, so that waiting claims do not
        // crowd out the one that is about to win; the check and the insert are one statement.
        let insert = format!(
            "INSERT INTO {l} (export_name, holder, message_id, acquired_at, expires_at, host, pid) SELECT @export, @holder, @message, \
             CURRENT_TIMESTAMP(), TIMESTAMP_ADD(CURRENT_TIMESTAMP(), INTERVAL @ttl SECOND), @host, @pid FROM UNNEST([1]) \
             WHERE NOT EXISTS (SELECT 1 FROM {l} WHERE export_name = @export AND expires_at > CURRENT_TIMESTAMP())"
        );
        let me = HolderProcess::current();
        let mut params = who.to_vec();
        params.push(p("message", "STRING", message_id.map(str::to_owned)));
        params.push(QueryParam::new("ttl", "INT64", ttl.as_secs().max(1).to_string()));
        params.push(QueryParam::new("host", "STRING", &me.host));
        params.push(QueryParam::new("pid", "INT64", me.pid.to_string()));
        // Every claim of the export, each marked live or expired (by the server's clock).
        let claims = format!(
            "SELECT holder, message_id, expires_at, expires_at > CURRENT_TIMESTAMP() AS live FROM {l} \
             WHERE export_name = @export ORDER BY acquired_at, holder"
        );
        let mine = |r: &Vec<Cell>| text(r.first()).as_deref() == Some(holder);
        // `rows` are live claims, at least one. The holder named is the oldest other one; a
        // holder that asks again for a lease it holds is told it holds it.
        let held = |rows: &[Vec<Cell>]| {
            let first = rows.iter().find(|r| !mine(r)).or(rows.first());
            Claim::Held {
                holder: first.and_then(|r| text(r.first())).unwrap_or_default(),
                message_id: first.and_then(|r| text(r.get(1))),
                expires_at: ts(first.and_then(|r| r.get(2))),
            }
        };
        // Whether this run's claim is in the table: it inserted one and has not stepped back
        // since. (A retried insert keeps its request id, so a lost answer still says 1 row.)
        let mut claiming = false;
        loop {
            let out_of_time = std::time::Instant::now() >= deadline;
            if !claiming {
                let inserted = self.bq.execute(&insert, &params).await.map_err(|e| self.fail(e))?;
                claiming = inserted.is_none_or(|n| n > 0);
            }
            let all = self.rows(&claims, &who[..1]).await?;
            let is_live = |r: &Vec<Cell>| text(r.get(3)).as_deref() == Some("true");
            let expired = all.iter().any(|r| !is_live(r));
            // Our claim, live or not: with a TTL shorter than the round trip it may have
            // expired by the time it is read back, and the lease is then ours, already run out.
            let claimed = claiming && all.iter().any(mine);
            let rows: Vec<Vec<Cell>> = all.into_iter().filter(is_live).collect();
            if !claimed {
                // Another claim was live when this one would have gone in.
                claiming = false;
                if rows.is_empty() {
                    // It has expired since: claim again at once (an expired claim stays
                    // expired, so this happens once per claim that runs out).
                    continue;
                }
                if out_of_time {
                    return Ok(held(&rows));
                }
            } else if rows.iter().all(mine) {
                // Expired claims (of runs that died) are only clutter now: nobody can hold them.
                if expired {
                    let purge = format!("DELETE FROM {l} WHERE export_name = @export AND expires_at <= CURRENT_TIMESTAMP()");
                    if let Err(e) = self.bq.execute(&purge, &who[..1]).await {
                        tracing::warn!(export, error = %e, "could not purge expired leases");
                    }
                }
                return Ok(Claim::Acquired);
            } else if out_of_time || !rows.first().is_some_and(mine) {
                // Racing claims: the oldest keeps its row and waits to be alone; younger ones
                // step back, so two contenders never both give way.
                self.release(export, holder).await?;
                claiming = false;
                if out_of_time {
                    return Ok(held(&rows));
                }
            }
            // About a second between reads keeps waiting cheap for BigQuery; the jitter keeps
            // contenders from moving in step.
            let jitter =
                u64::from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos() % 500);
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            tokio::time::sleep(Duration::from_millis(750 + jitter).min(left)).await;
        }
    }

    async fn renew(&self, export: &str, holder: &str, ttl: Duration) -> Result<bool, Failure> {
        let sql = format!(
            "UPDATE {} SET expires_at = TIMESTAMP_ADD(CURRENT_TIMESTAMP(), INTERVAL @ttl SECOND) \
             WHERE export_name = @export AND holder = @holder AND expires_at > CURRENT_TIMESTAMP()",
            self.leases
        );
        let params = [
            QueryParam::new("export", "STRING", export),
            QueryParam::new("holder", "STRING", holder),
            QueryParam::new("ttl", "INT64", ttl.as_secs().max(1).to_string()),
        ];
        let changed = self.bq.execute(&sql, &params).await.map_err(|e| self.fail(e))?;
        Ok(changed.unwrap_or(0) > 0)
    }

    async fn release(&self, export: &str, holder: &str) -> Result<(), Failure> {
        let sql = format!("DELETE FROM {} WHERE export_name = @export AND holder = @holder", self.leases);
        let params = [QueryParam::new("export", "STRING", export), QueryParam::new("holder", "STRING", holder)];
        self.bq.execute(&sql, &params).await.map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn lease(&self, export: &str) -> Result<Option<Lease>, Failure> {
        let sql = format!(
            "SELECT holder, message_id, acquired_at, expires_at, expires_at > CURRENT_TIMESTAMP() AS live, host, pid FROM {} \
             WHERE export_name = @export ORDER BY acquired_at, holder",
            self.leases
        );
        let rows = self.rows(&sql, &[QueryParam::new("export", "STRING", export)]).await?;
        let leases: Vec<Lease> = rows
            .iter()
            .map(|r| Lease {
                holder: text(r.first()).unwrap_or_default(),
                message_id: text(r.get(1)),
                acquired_at: ts(r.get(2)),
                expires_at: ts(r.get(3)),
                live: text(r.get(4)).as_deref() == Some("true"),
                process: text(r.get(5)).zip(text(r.get(6)).and_then(|p| p.parse().ok())).map(|(host, pid)| HolderProcess { host, pid }),
            })
            .collect();
        // The oldest live claim holds (or is about to); with none live, the last to expire.
        let live = leases.iter().find(|l| l.live).cloned();
        Ok(live.or_else(|| leases.into_iter().max_by_key(|l| l.expires_at)))
    }

    async fn history(&self, export: Option<&str>, limit: u32) -> Result<Vec<RunRecord>, Failure> {
        let filter = if export.is_some() { "WHERE export_name = @export " } else { "" };
        let sql = format!(
            "SELECT {SELECT} FROM {} {filter}ORDER BY {RECORDED} DESC, completed_at DESC LIMIT {}",
            self.table,
            limit.clamp(1, 10_000)
        );
        let params: Vec<QueryParam> = export.map(|e| QueryParam::new("export", "STRING", e)).into_iter().collect();
        self.records(&sql, &params).await
    }
}
