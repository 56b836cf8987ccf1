//! Seed 004's ETL runner job definitions on the stack: the `ferry` binary, run with the seed's
//! own arguments (`--data_source_id=N --etl_run_id=M`), takes its job from the ETL API stand-in
//! (`dev/capture/etl_api.py`), copies a table of the stack's PostgreSQL into the BigQuery
//! emulator, and reports to the stand-in, which records every PATCH.

use std::path::PathBuf;
use std::process::Stdio;

use ferry_testkit::{stack, unique, TestDataset};
use serde_json::{json, Value};
use tokio::process::Command;

use crate::common::{ferry_bin, text};

/// A number no other test uses: data source and run ids.
fn new_id() -> u64 {
    let hex = unique("x");
    u64::from_str_radix(&hex[2..], 16).expect("hex") % 1_000_000_000_000 + 1
}

fn api_dir() -> PathBuf {
    PathBuf::from(stack().var("FERRY_ETL_API_DIR"))
}

/// The stack's PostgreSQL as its user `ferry`, for making tables.
struct Pg(tokio_postgres::Client);

impl Pg {
    async fn connect() -> Self {
        let s = stack();
        let (client, connection) = tokio_postgres::Config::new()
            .host(s.var("FERRY_PG_HOST"))
            .port(s.var("FERRY_PG_PORT").parse().expect("FERRY_PG_PORT"))
            .dbname(s.var("FERRY_PG_DATABASE"))
            .user(s.var("FERRY_PG_USER"))
            .password(s.file("FERRY_PG_PASSWORD_FILE"))
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting to the stack's PostgreSQL (dev/stack up): {e}"));
        tokio::spawn(connection);
        Self(client)
    }

    async fn exec(&self, sql: &str) {
        self.0.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}\n-> {e:?}"));
    }

    /// A new table `public.<name>(id, note, created_at)`, dropped by nobody: names are unique.
    async fn table(&self, prefix: &str) -> String {
        let name = unique(prefix);
        self.exec(&format!("CREATE TABLE public.{name} (id bigint PRIMARY KEY, note text, amount numeric(10,2), created_at timestamptz)"))
            .await;
        name
    }

    /// Rows `ids`, created on 2024-01-`day`.
    async fn insert(&self, table: &str, ids: std::ops::RangeInclusive<i64>, day: u32) {
        self.exec(&format!(
            "INSERT INTO public.{table} SELECT i, 'row ' || i, i * 1.5, TIMESTAMPTZ '2024-01-{day:02} 00:00:00+00' + i * INTERVAL '1 second' \
             FROM generate_series({}, {}) AS i",
            ids.start(),
            ids.end()
        ))
        .await;
    }
}

/// The seed's job config for `table`, loaded into `dest`; `extra` overrides fields
/// (`connection_params` field by field).
fn job_config(table: &str, dest: &str, load_type: &str, extra: Value) -> Value {
    let s = stack();
    let mut c = json!({
        "source_type": "postgresql",
        "connection_params": {
            "host": s.var("FERRY_PG_HOST"),
            "port": s.var("FERRY_PG_PORT").parse::<u16>().unwrap(),
            "database": s.var("FERRY_PG_DATABASE"),
            "username": s.var("FERRY_PG_USER"),
            "password": s.file("FERRY_PG_PASSWORD_FILE"),
        },
        "source_table_name": table,
        "schema_name": "public",
        "dest_table_name": dest,
        "load_type": load_type,
        "timestamp_column": "created_at",
        "selected_columns": ["id", "note", "created_at"],
        "last_sync_value": null,
        "historical_start_date": null,
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        match (c[&k].as_object_mut(), v) {
            (Some(obj), Value::Object(fields)) => obj.extend(fields),
            (_, v) => c[k] = v,
        }
    }
    c
}

/// Serves `config` as data source `id`'s job config.
fn serve(id: u64, config: &Value) {
    std::fs::write(api_dir().join("job-config").join(format!("{id}.json")), config.to_string()).expect("job config file");
}

/// A finished `ferry` process.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs `ferry ARGS` as a Cloud Run Job of the seed would: the seed's variables, the emulator
/// for BigQuery, the test's dataset for the table and the metadata, and `env` on top.
async fn ferry(ds: &TestDataset, args: &[String], env: &[(&str, &str)]) -> Ran {
    let s = stack();
    let mut c = Command::new(ferry_bin());
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DJANGO_API_URL", s.var("FERRY_ETL_API_URL"))
        .env("ETL_API_TOKEN", s.file("FERRY_ETL_API_TOKEN_FILE"))
        .env("ETL_RETRY_DELAY", "0")
        .env("GCP_PROJECT_ID", s.bq_project())
        .env("BIGQUERY_DATASET", &ds.name)
        .env("FERRY_BIGQUERY_ENDPOINT", s.bq_endpoint())
        .env("FERRY_BIGQUERY_AUTH", "none")
        .env("FERRY_METADATA_TABLE", format!("{}.export_metadata", ds.name))
        .env("FERRY_ALLOW_PLAINTEXT_LOOPBACK", "1")
        .env("FERRY_LEASE_WAIT_SECONDS", "0")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    let out = c.output().await.expect("ferry runs");
    let ran = Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!("ferry {}: exit {}\n{}", args.join(" "), ran.code, ran.all());
    ran
}

/// The seed's own spelling of a job's arguments.
fn seed_args(id: u64, run: Option<u64>) -> Vec<String> {
    let mut a = vec![format!("--data_source_id={id}")];
    a.extend(run.map(|r| format!("--etl_run_id={r}")));
    a
}

/// Every PATCH the stand-in received for run `run`, in order: (HTTP status, body).
fn patches(run: u64) -> Vec<(u64, Value)> {
    let text = std::fs::read_to_string(api_dir().join("patches.jsonl")).expect("patches.jsonl");
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
        .filter(|p| p["run_id"] == run)
        .map(|p| (p["status"].as_u64().unwrap_or(0), p["body"].clone()))
        .collect()
}

/// The answered PATCH bodies of run `run`.
fn bodies(run: u64) -> Vec<Value> {
    patches(run).into_iter().filter(|(s, _)| *s == 200).map(|(_, b)| b).collect()
}

/// How many times the stand-in was asked for data source `id`'s job config, and how it answered.
fn config_requests(id: u64) -> Vec<u64> {
    let text = std::fs::read_to_string(api_dir().join("requests.jsonl")).expect("requests.jsonl");
    let path = format!("/api/etl/job-config/{id}/");
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
        .filter(|r| r["path"] == path)
        .map(|r| r["status"].as_u64().unwrap_or(0))
        .collect()
}

/// The last body, `completed` or `failed`, after `running` first and only `running` between,
/// each of those with counts that never go down.
fn final_report(run: u64) -> Value {
    let b = bodies(run);
    assert!(b.len() >= 2, "run {run}: {b:?}");
    assert_eq!(b[0], json!({"status": "running"}), "run {run}: {b:?}");
    let mut last = 0;
    for p in &b[1..b.len() - 1] {
        assert_eq!(p["status"], "running", "{b:?}");
        let n = p["rows_extracted"].as_u64().expect("rows_extracted");
        assert!(n >= last && p["rows_loaded"].as_u64().is_some(), "{b:?}");
        last = n;
    }
    let end = b.last().cloned().unwrap();
    assert!(end["duration_seconds"].as_u64().is_some(), "a whole number of seconds: {end}");
    end
}

async fn ids(ds: &TestDataset, table: &str) -> Vec<i64> {
    let rows = ds.rows(&format!("SELECT id FROM `{}` ORDER BY id", ds.table(table))).await;
    rows.iter().map(|r| text(&r[0]).and_then(|v| v.parse().ok()).expect("id")).collect()
}

#[tokio::test]
async fn a_catalog_job_config_copies_a_postgres_table_and_reports_completed() {
    let (pg, ds) = (Pg::connect().await, TestDataset::create("etl_catalog").await);
    let table = pg.table("etl_cat").await;
    pg.insert(&table, 1..=25, 1).await;
    let (id, run) = (new_id(), new_id());
    serve(id, &job_config(&table, "products", "catalog", json!({})));

    let r = ferry(&ds, &seed_args(id, Some(run)), &[]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(ids(&ds, "products").await, (1..=25).collect::<Vec<_>>());
    let cols = ds.rows(&format!("SELECT note, CAST(created_at AS STRING) FROM `{}` WHERE id = 2", ds.table("products"))).await;
    assert_eq!(text(&cols[0][0]).as_deref(), Some("row 2"));
    assert!(text(&cols[0][1]).is_some_and(|t| t.starts_with("2024-01-01 00:00:02")), "{cols:?}");
    let end = final_report(run);
    assert_eq!((&end["status"], &end["rows_extracted"], &end["rows_loaded"]), (&json!("completed"), &json!(25), &json!(25)), "{end}");
    assert!(end.get("error_message").is_none(), "{end}");

    // The next snapshot replaces the table.
    pg.exec(&format!("DELETE FROM public.{table} WHERE id > 20")).await;
    pg.insert(&table, 100..=101, 2).await;
    let run2 = new_id();
    let r = ferry(&ds, &seed_args(id, Some(run2)), &[]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(ids(&ds, "products").await, (1..=20).chain(100..=101).collect::<Vec<_>>());
    let end = final_report(run2);
    assert_eq!((&end["status"], &end["rows_extracted"], &end["rows_loaded"]), (&json!("completed"), &json!(22), &json!(22)), "{end}");
}

#[tokio::test]
async fn a_transactional_job_config_adds_only_the_new_rows() {
    let (pg, ds) = (Pg::connect().await, TestDataset::create("etl_trans").await);
    let table = pg.table("etl_tx").await;
    pg.insert(&table, 1..=10, 1).await;
    let (id, run) = (new_id(), new_id());
    // The seed's runner had synced up to row 5's time (a value without a zone: UTC): the first
    // run starts after it.
    serve(id, &job_config(&table, "transactions", "transactional", json!({"last_sync_value": "2024-01-01T00:00:05"})));

    let r = ferry(&ds, &seed_args(id, Some(run)), &[]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(ids(&ds, "transactions").await, (6..=10).collect::<Vec<_>>());
    let end = final_report(run);
    assert_eq!((&end["status"], &end["rows_extracted"], &end["rows_loaded"]), (&json!("completed"), &json!(5), &json!(5)), "{end}");

    // Three new rows: the second run adds those alone (ferry's spelling of the flags this time).
    pg.insert(&table, 11..=13, 2).await;
    let run2 = new_id();
    let args = ["run".to_owned(), "--data-source-id".to_owned(), id.to_string(), "--etl-run-id".to_owned(), run2.to_string()];
    let r = ferry(&ds, &args, &[]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(ids(&ds, "transactions").await, (6..=13).collect::<Vec<_>>());
    let end = final_report(run2);
    assert_eq!((&end["status"], &end["rows_extracted"], &end["rows_loaded"]), (&json!("completed"), &json!(3), &json!(3)), "{end}");

    // Nothing new: completed with no rows.
    let run3 = new_id();
    assert_eq!(ferry(&ds, &seed_args(id, Some(run3)), &[]).await.code, 0);
    let end = final_report(run3);
    assert_eq!((&end["status"], &end["rows_extracted"], &end["rows_loaded"]), (&json!("completed"), &json!(0), &json!(0)), "{end}");
    assert_eq!(ids(&ds, "transactions").await.len(), 8);
}

#[tokio::test]
async fn a_missing_config_a_wrong_token_and_an_invalid_config_fail_with_clear_messages() {
    let ds = TestDataset::create("etl_refused").await;
    let url = stack().var("FERRY_ETL_API_URL");

    // 404: no job config for this data source.
    let (id, run) = (new_id(), new_id());
    let r = ferry(&ds, &seed_args(id, Some(run)), &[]).await;
    assert_eq!(r.code, 2, "{}", r.all());
    let want = format!("data source {id}: the API has no job config (404 from {url}/api/etl/job-config/{id}/)");
    assert!(r.stderr.contains(&want), "{}", r.all());
    let end = final_report(run);
    assert_eq!(end["status"], "failed");
    assert_eq!(end["error_message"], json!(want));
    assert_eq!((&end["rows_extracted"], &end["rows_loaded"]), (&json!(0), &json!(0)));
    assert_eq!(config_requests(id), [404], "a 404 is not retried");

    // 401: the wrong token. Its PATCHes are refused too; the run's outcome stays the API's 401.
    let (id, run) = (new_id(), new_id());
    serve(id, &job_config("t", "d", "catalog", json!({})));
    let r = ferry(&ds, &seed_args(id, Some(run)), &[("ETL_API_TOKEN", "wrong-token-sentinel")]).await;
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains(&format!(
            "data source {id}: the API refused the token (401 from {url}/api/etl/job-config/{id}/): check ETL_API_TOKEN"
        )),
        "{}",
        r.all()
    );
    assert!(!r.all().contains("wrong-token-sentinel"), "the token is never shown: {}", r.all());
    let p = patches(run);
    assert!(p.len() >= 2 && p.iter().all(|(s, _)| *s == 401), "running and failed were sent, and refused: {p:?}");
    assert_eq!(config_requests(id), [401], "a 401 is not retried");

    // An invalid job config: every problem at the API's field.
    let (id, run) = (new_id(), new_id());
    serve(id, &job_config("t", "d", "weekly", json!({"connection_params": {"port": "x"}})));
    let r = ferry(&ds, &seed_args(id, Some(run)), &[]).await;
    assert_eq!(r.code, 2, "{}", r.all());
    let port = format!("job config of data source {id}: connection_params.port: expected a port from 1 to 65535, found \"x\"");
    let load = format!("job config of data source {id}: load_type: expected catalog or transactional, found \"weekly\"");
    assert!(r.stderr.contains(&port) && r.stderr.contains(&load), "{}", r.all());
    let end = final_report(run);
    assert_eq!(end["status"], "failed");
    assert_eq!(end["error_message"], json!(format!("{port}\n{load}")));
    assert!(!r.all().contains(&stack().file("FERRY_PG_PASSWORD_FILE")), "{}", r.all());

    // A job config without --etl-run-id: nothing to report to.
    let id = new_id();
    let r = ferry(&ds, &seed_args(id, None), &[]).await;
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(!r.all().contains("run's status"), "{}", r.all());
}

#[tokio::test]
async fn a_500_is_retried_and_the_job_runs_once_the_api_answers() {
    let (pg, ds) = (Pg::connect().await, TestDataset::create("etl_retry").await);
    let table = pg.table("etl_retry").await;
    pg.insert(&table, 1..=4, 1).await;

    // Two 500s, then the config: the third attempt runs the job.
    let (id, run) = (new_id(), new_id());
    let mut config = job_config(&table, "recovered", "catalog", json!({}));
    config["__status"] = json!(500);
    config["__times"] = json!(2);
    serve(id, &config);
    let r = ferry(&ds, &seed_args(id, Some(run)), &[("ETL_MAX_RETRIES", "3")]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(config_requests(id), [500, 500, 200]);
    assert_eq!(ids(&ds, "recovered").await, (1..=4).collect::<Vec<_>>());
    assert_eq!(final_report(run)["status"], "completed");

    // 500s for longer than ETL_MAX_RETRIES allows: exit 1 (trying later may help).
    let (id, run) = (new_id(), new_id());
    serve(id, &json!({"__status": 500}));
    let r = ferry(&ds, &seed_args(id, Some(run)), &[("ETL_MAX_RETRIES", "2")]).await;
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(config_requests(id), [500, 500, 500]);
    let url = stack().var("FERRY_ETL_API_URL");
    let want =
        format!("data source {id}: the API answered 500 from {url}/api/etl/job-config/{id}/ (gave up after 3 attempts: no attempts left)");
    assert!(r.stderr.contains(&want), "{}", r.all());
    assert_eq!(final_report(run)["error_message"], json!(want));
}

#[tokio::test]
async fn a_wrong_database_password_fails_the_run_without_showing_the_password() {
    let (pg, ds) = (Pg::connect().await, TestDataset::create("etl_badpw").await);
    let table = pg.table("etl_badpw").await;
    pg.insert(&table, 1..=3, 1).await;
    let (id, run) = (new_id(), new_id());
    let password = format!("{}-sentinel", unique("wrong"));
    serve(id, &job_config(&table, "never", "catalog", json!({"connection_params": {"password": password}})));

    let r = ferry(&ds, &seed_args(id, Some(run)), &[]).await;
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(!r.all().contains(&password), "{}", r.all());
    let end = final_report(run);
    assert_eq!((&end["status"], &end["rows_loaded"]), (&json!("failed"), &json!(0)), "{end}");
    let message = end["error_message"].as_str().expect("error_message");
    assert!(!message.is_empty() && !message.contains(&password), "{end}");
    eprintln!("error_message: {message}");
    assert!(patches(run).iter().all(|(_, b)| !b.to_string().contains(&password)));
}

#[tokio::test]
async fn the_seeds_retry_settings_govern_the_database_calls_too() {
    let ds = TestDataset::create("etl_retries").await;
    // A port nothing listens on: every connect is refused, which is worth retrying.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port();
    let (id, run) = (new_id(), new_id());
    serve(id, &job_config("anything", "never", "catalog", json!({"connection_params": {"port": port}})));

    let r = ferry(&ds, &seed_args(id, Some(run)), &[("ETL_MAX_RETRIES", "1")]).await;
    assert_eq!(r.code, 1, "{}", r.all());
    let end = final_report(run);
    assert_eq!(end["status"], "failed", "{end}");
    let message = end["error_message"].as_str().expect("error_message");
    assert!(message.contains("after 2 attempts"), "one retry, as ETL_MAX_RETRIES says: {message}");

    let (id, run) = (new_id(), new_id());
    serve(id, &job_config("anything", "never", "catalog", json!({"connection_params": {"port": port}})));
    let r = ferry(&ds, &seed_args(id, Some(run)), &[("ETL_MAX_RETRIES", "0")]).await;
    assert_eq!(r.code, 1, "{}", r.all());
    let message = final_report(run)["error_message"].as_str().expect("error_message").to_owned();
    assert!(!message.contains("attempts"), "no retry at all: {message}");
    assert!(message.contains(&port.to_string()), "the message names the server: {message}");
}

#[tokio::test]
async fn a_failing_status_report_does_not_change_the_runs_outcome() {
    let (pg, ds) = (Pg::connect().await, TestDataset::create("etl_patchfail").await);
    let table = pg.table("etl_pf").await;
    pg.insert(&table, 1..=5, 1).await;
    let (id, run) = (new_id(), new_id());
    serve(id, &job_config(&table, "loaded", "catalog", json!({})));
    std::fs::write(api_dir().join("runs").join(format!("{run}.json")), json!({"__status": 503}).to_string()).expect("run fault");

    let r = ferry(&ds, &seed_args(id, Some(run)), &[("ETL_MAX_RETRIES", "1")]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(ids(&ds, "loaded").await, (1..=5).collect::<Vec<_>>());
    let p = patches(run);
    assert!(p.iter().all(|(s, _)| *s == 503), "{p:?}");
    assert_eq!(p.first().map(|(_, b)| b["status"].clone()), Some(json!("running")));
    assert_eq!(p.last().map(|(_, b)| b["status"].clone()), Some(json!("completed")), "{p:?}");
    assert!(r.stdout.contains("could not report the run's status to the API; the run's outcome stands"), "{}", r.all());
}
