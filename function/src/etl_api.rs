//! Seed 004's ETL runner job definitions: `ferry run --data-source-id N [--etl-run-id M]`.
//!
//! The seed's runner took its job from a Django API and reported back to it; ferry takes over
//! those job definitions unchanged:
//!
//! 1. `GET {DJANGO_API_URL}/api/etl/job-config/{N}/` (bearer `ETL_API_TOKEN`), retried on
//!    connection errors and 5xx answers as `ETL_MAX_RETRIES` and `ETL_RETRY_DELAY` say.
//! 2. The answer ([`JobConfig`]) becomes a ferry config with one export, `etl_<N>`: a
//!    `postgres` (or `mysql`) source and a `bigquery` table destination in `BIGQUERY_DATASET`,
//!    validated like a config file; problems name the API's fields. The database password
//!    never enters the config text: validation reads it as `FERRY_ETL_SOURCE_PASSWORD` from a
//!    lookup that answers that one name from the API's answer.
//! 3. With `--etl-run-id M`, `PATCH {DJANGO_API_URL}/api/etl/runs/{M}/update/`: `running` at
//!    the start, row counts while loading (at most every 2 s), then `completed` or `failed` with
//!    the counts, the duration and a redacted error. A PATCH that fails is logged; it never
//!    changes the run's outcome.

use std::time::{Duration, Instant};

use ferry_core::config::check::{is_loopback, PLAINTEXT_LOOPBACK_ENV};
use ferry_core::config::{limits, Components, Config, ConfigErrors, RawConfig};
use ferry_core::run::{Progress, RunOptions, RunReport};
use ferry_core::{RetryPolicy, Secret, Verdict};
use reqwest::header::ACCEPT;
use reqwest::StatusCode;
use serde_json::{json, Map, Value};
use tokio::sync::{oneshot, watch};
use tracing::Instrument;

/// The API's base address (the seed's variable).
pub const API_URL_ENV: &str = "DJANGO_API_URL";
/// The API's bearer token (the seed's variable); optional.
pub const API_TOKEN_ENV: &str = "ETL_API_TOKEN";
/// Retries of a failed API call after the first attempt; 3 by default.
pub const MAX_RETRIES_ENV: &str = "ETL_MAX_RETRIES";
/// Seconds before the first retry; 5 by default. Each further wait may be twice as long.
pub const RETRY_DELAY_ENV: &str = "ETL_RETRY_DELAY";
/// The dataset the job's table is loaded into; `raw_data` by default.
pub const DATASET_ENV: &str = "BIGQUERY_DATASET";
/// The Google Cloud project of the job's table and of the queries.
pub const PROJECT_ENV: &str = "GCP_PROJECT_ID";
/// `bigquery.auth` for these runs (`application_default` when unset; `none` for an emulator).
pub const BIGQUERY_AUTH_ENV: &str = "FERRY_BIGQUERY_AUTH";
/// The name validation reads the source's password under (from the API's answer only).
pub const PASSWORD_ENV: &str = "FERRY_ETL_SOURCE_PASSWORD";
/// `BIGQUERY_DATASET` when unset.
pub const DEFAULT_DATASET: &str = "raw_data";

/// The most retries `ETL_MAX_RETRIES` may ask for.
const MAX_RETRIES: u32 = 10;
/// The longest first wait `ETL_RETRY_DELAY` may ask for, in seconds.
const MAX_RETRY_DELAY_SECS: f64 = 300.0;
/// The longest wait between two attempts (unless `ETL_RETRY_DELAY` is longer).
const MAX_WAIT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one call to the API may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one progress PATCH may take: a slow API holds up the end of the run this long at most.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(10);
/// Progress is reported at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// The largest job config ferry reads.
const MAX_ANSWER_BYTES: usize = 1 << 20;
/// The longest `error_message` sent, in characters.
const MAX_ERROR_CHARS: usize = 1000;

/// What `ferry run --data-source-id` was asked to do.
#[derive(Debug, Clone, Copy)]
pub struct EtlJob {
    pub data_source_id: u64,
    /// The run record to report to; no report without it.
    pub etl_run_id: Option<u64>,
}

/// The name of the export a data source's job runs as.
pub fn export_name(data_source_id: u64) -> String {
    format!("etl_{data_source_id}")
}

// ------------------------------------------------------------------ errors

/// Why a job did not get as far as running.
#[derive(Debug)]
pub enum EtlError {
    /// A setting from the environment is missing or wrong.
    Settings(String),
    /// The API could not be asked, or did not answer with a job config.
    Api { message: String, transient: bool },
    /// The job config is not one ferry can run.
    Invalid(JobConfigErrors),
}

impl EtlError {
    /// 1 when trying again later may help (the API could not be reached), else 2: what ferry
    /// was given is wrong.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Api { transient: true, .. } => 1,
            _ => 2,
        }
    }
}

impl std::fmt::Display for EtlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Settings(m) | Self::Api { message: m, .. } => f.write_str(m),
            Self::Invalid(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for EtlError {}

/// The problems of a job config, each at the API's field (`load_type`,
/// `connection_params.host`) or the setting (`BIGQUERY_DATASET`) it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobConfigErrors {
    pub data_source_id: u64,
    /// `(field, message)`; the field is empty for the answer as a whole.
    pub problems: Vec<(String, String)>,
}

impl std::fmt::Display for JobConfigErrors {
    /// One line per problem: `job config of data source 7: load_type: expected …`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (field, message)) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "job config of data source {}: ", self.data_source_id)?;
            if !field.is_empty() {
                write!(f, "{field}: ")?;
            }
            f.write_str(message)?;
        }
        Ok(())
    }
}

/// A failed call: what to say, and whether to try again.
#[derive(Debug)]
struct CallError {
    message: String,
    transient: bool,
    retry_after: Option<Duration>,
}

impl CallError {
    fn permanent(message: String) -> Self {
        Self { message, transient: false, retry_after: None }
    }

    fn verdict(&self) -> Verdict {
        match (self.transient, self.retry_after) {
            (false, _) => Verdict::Stop,
            (true, Some(d)) => Verdict::RetryAfter(d),
            (true, None) => Verdict::Retry,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A transport error in words, without the URL reqwest puts in (the caller names it); a call
/// may take `timeout`.
fn transport(e: reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", timeout.as_secs());
    }
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Whether an answer with `status` is worth another attempt, and not before when.
fn status_error(status: StatusCode, retry_after: Option<&reqwest::header::HeaderValue>, message: String) -> CallError {
    let transient = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT;
    let retry_after = retry_after
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(MAX_WAIT))
        .filter(|_| transient);
    CallError { message, transient, retry_after }
}

// ------------------------------------------------------------------ the API

/// The Django API of seed 004: its address, token, and how calls to it are retried.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    /// `https://app.example.com` (no trailing `/`): holds no credentials, so it may be shown.
    base: String,
    token: Option<Secret>,
    retry: RetryPolicy,
}

impl Api {
    /// The API the seed's variables name: `DJANGO_API_URL` (https, or http to this machine with
    /// `FERRY_ALLOW_PLAINTEXT_LOOPBACK=1`), `ETL_API_TOKEN`, `ETL_MAX_RETRIES`, `ETL_RETRY_DELAY`.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, EtlError> {
        let var = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let Some(url) = var(API_URL_ENV) else {
            return Err(EtlError::Settings(format!(
                "{API_URL_ENV} is not set: a data source's job config comes from the API at that address (e.g. https://app.example.com)"
            )));
        };
        let base = api_base(&url, env).map_err(|m| EtlError::Settings(format!("{API_URL_ENV}: {m}")))?;
        let token = var(API_TOKEN_ENV).map(|t| Secret::new(t.trim()));
        let retry = retry_policy(env).map_err(EtlError::Settings)?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // A redirect could lead the token elsewhere: the address must be the one that answers.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| EtlError::Settings(format!("cannot make an HTTP client: {}", transport(e, REQUEST_TIMEOUT))))?;
        Ok(Self { http, base, token, retry })
    }

    /// How the run's calls to the database and BigQuery are retried: as the API's, with
    /// room for attempts that take longer than an API call (at least ferry's own deadline).
    pub fn operations_retry(&self) -> RetryPolicy {
        RetryPolicy { deadline: self.retry.deadline.max(RetryPolicy::default().deadline), ..self.retry }
    }

    /// The API's base address, for messages.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `text` without the token.
    pub fn redact(&self, text: &str) -> String {
        match &self.token {
            Some(t) => t.redact_in(text),
            None => text.to_owned(),
        }
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, url).header(ACCEPT, "application/json");
        match &self.token {
            Some(t) => r.bearer_auth(t.expose()),
            None => r,
        }
    }

    /// The job config of data source `id`, retried while the API fails in a way that may pass.
    pub async fn job_config(&self, id: u64) -> Result<JobConfig, EtlError> {
        let url = format!("{}/api/etl/job-config/{id}/", self.base);
        tracing::info!(url = %url, "fetching the job config");
        let body = self.retry.run_with("GET job config", || self.get_job_config(id, &url), CallError::verdict).await.map_err(|g| {
            let message = format!("{}{}", g.error.message, g.context());
            EtlError::Api { message: self.redact(&message), transient: g.error.transient }
        })?;
        JobConfig::from_json(&body).map_err(|problems| EtlError::Invalid(JobConfigErrors { data_source_id: id, problems }))
    }

    async fn get_job_config(&self, id: u64, url: &str) -> Result<Vec<u8>, CallError> {
        let cannot = |why: String| CallError {
            message: format!("data source {id}: cannot get its job config from {url}: {why}"),
            transient: true,
            retry_after: None,
        };
        let mut resp = self.request(reqwest::Method::GET, url).send().await.map_err(|e| cannot(transport(e, REQUEST_TIMEOUT)))?;
        let status = resp.status();
        if !status.is_success() {
            let code = status.as_u16();
            let message = match status {
                StatusCode::NOT_FOUND => format!("data source {id}: the API has no job config ({code} from {url})"),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN if self.token.is_none() => {
                    format!("data source {id}: the API refused the request ({code} from {url}): {API_TOKEN_ENV} is not set")
                }
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    format!("data source {id}: the API refused the token ({code} from {url}): check {API_TOKEN_ENV}")
                }
                s if s.is_redirection() => {
                    format!("data source {id}: the API answered {code} from {url}; redirects are not followed: set {API_URL_ENV} to the address that answers")
                }
                _ => format!("data source {id}: the API answered {code} from {url}"),
            };
            return Err(status_error(status, resp.headers().get(reqwest::header::RETRY_AFTER), message));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| cannot(transport(e, REQUEST_TIMEOUT)))? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(CallError::permanent(format!(
                    "data source {id}: the job config from {url} is larger than {} KiB, more than a job config holds",
                    MAX_ANSWER_BYTES >> 10
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Reports the status of ETL run `etl_run_id`.
    pub fn reporter(&self, etl_run_id: u64) -> Reporter {
        Reporter { api: self.clone(), url: format!("{}/api/etl/runs/{etl_run_id}/update/", self.base), etl_run_id }
    }
}

/// `DJANGO_API_URL` checked: an https URL without credentials, query or fragment, or http to
/// this machine when `FERRY_ALLOW_PLAINTEXT_LOOPBACK=1`. Messages never quote the URL.
fn api_base(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let parsed = reqwest::Url::parse(url.trim()).map_err(|e| format!("expected an https:// URL such as https://app.example.com ({e})"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!("credentials in the URL are not used: the API's token goes in {API_TOKEN_ENV}"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("expected the API's base address, without a ?query or #fragment".into());
    }
    let host = parsed.host_str().unwrap_or_default();
    match parsed.scheme() {
        "https" => {}
        "http" if is_loopback(host) && env(PLAINTEXT_LOOPBACK_ENV).as_deref() == Some("1") => {}
        "http" => {
            let local =
                if is_loopback(host) { format!("; for a stand-in on this machine set {PLAINTEXT_LOOPBACK_ENV}=1") } else { String::new() };
            return Err(format!(
                "an http:// URL would send the API token and receive the database password unencrypted: use https://{local}"
            ));
        }
        other => return Err(format!("expected an https:// URL, found {}", limits::quote(other))),
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

/// The retries `ETL_MAX_RETRIES` (after the first attempt; 3) and `ETL_RETRY_DELAY` (seconds
/// before the first; 5) ask for: waits that double up to a minute, each a random part of its
/// ceiling so that many jobs that failed together do not come back together.
fn retry_policy(env: &dyn Fn(&str) -> Option<String>) -> Result<RetryPolicy, String> {
    let var = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let retries = match var(MAX_RETRIES_ENV) {
        None => 3,
        Some(v) => v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n <= MAX_RETRIES)
            .ok_or_else(|| format!("{MAX_RETRIES_ENV}: expected 0 to {MAX_RETRIES} retries, found {}", limits::quote(&v)))?,
    };
    let delay = match var(RETRY_DELAY_ENV) {
        None => 5.0,
        Some(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|d| d.is_finite() && (0.0..=MAX_RETRY_DELAY_SECS).contains(d))
            .ok_or_else(|| format!("{RETRY_DELAY_ENV}: expected 0 to {MAX_RETRY_DELAY_SECS} seconds, found {}", limits::quote(&v)))?,
    };
    let initial = Duration::from_secs_f64(delay);
    let mut policy =
        RetryPolicy { initial, max_delay: initial.max(MAX_WAIT), multiplier: 2, max_attempts: retries + 1, deadline: Duration::ZERO };
    // Every retry the count allows fits: the longest waits, and each attempt taking its whole time.
    let waits: Duration = (1..=retries).map(|n| policy.ceiling(n)).sum();
    policy.deadline = waits + REQUEST_TIMEOUT * (retries + 1) + Duration::from_secs(1);
    Ok(policy)
}

// ------------------------------------------------------------------ the job config

/// The source database's kind, from `source_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// `postgresql` (or `postgres`).
    Postgres,
    Mysql,
}

impl SourceKind {
    /// The ferry source `type`.
    pub fn type_name(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
        }
    }
}

/// `load_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadType {
    /// A full snapshot: each run's rows replace the table's.
    Catalog,
    /// Incremental: each run adds the rows newer than the last run's, by `timestamp_column`.
    Transactional,
}

/// A job config as the API answers it (the seed's `GET /api/etl/job-config/{id}/`). Fields
/// ferry does not use are ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct JobConfig {
    pub source: SourceKind,
    /// `source_type` as the API wrote it, for messages.
    pub source_type: String,
    pub host: String,
    /// `None`: the database's default port.
    pub port: Option<u16>,
    pub database: String,
    pub username: String,
    pub password: Secret,
    pub source_table_name: String,
    pub schema_name: Option<String>,
    pub dest_table_name: String,
    pub load: LoadType,
    pub timestamp_column: Option<String>,
    /// `None`: every column.
    pub selected_columns: Option<Vec<String>>,
    pub last_sync_value: Option<String>,
    pub historical_start_date: Option<String>,
}

/// Problems found while reading the answer, by API field.
#[derive(Default)]
struct Problems(Vec<(String, String)>);

impl Problems {
    fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0.push((field.to_owned(), message.into()));
    }

    /// A string field that must be there and not be empty.
    fn required(&mut self, obj: &Map<String, Value>, path: &str, key: &str, what: &str) -> Option<String> {
        match obj.get(key) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            None | Some(Value::Null) | Some(Value::String(_)) => {
                self.add(path, format!("missing: {what}"));
                None
            }
            Some(other) => {
                self.add(path, format!("expected {what} (a string), found {}", kind(other)));
                None
            }
        }
    }

    /// A string field that may be absent, null or empty.
    fn optional(&mut self, obj: &Map<String, Value>, key: &str) -> Option<String> {
        match obj.get(key) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            None | Some(Value::Null) | Some(Value::String(_)) => None,
            Some(other) => {
                self.add(key, format!("expected a string or null, found {}", kind(other)));
                None
            }
        }
    }
}

/// What a JSON value is, for messages that must not quote it.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

impl JobConfig {
    /// Reads the API's answer; every problem at the field it is in. Values are quoted in
    /// messages, except the password's.
    pub fn from_json(body: &[u8]) -> Result<Self, Vec<(String, String)>> {
        let value: Value = serde_json::from_slice(body).map_err(|e| vec![(String::new(), format!("the answer is not JSON: {e}"))])?;
        let Some(top) = value.as_object() else {
            return Err(vec![(String::new(), format!("expected a JSON object, found {}", kind(&value)))]);
        };
        let mut p = Problems::default();
        let source_type = p.required(top, "source_type", "source_type", "the source database's type, postgresql or mysql");
        let source = source_type.as_deref().and_then(|t| match t.to_ascii_lowercase().as_str() {
            "postgresql" | "postgres" => Some(SourceKind::Postgres),
            "mysql" => Some(SourceKind::Mysql),
            _ => {
                p.add("source_type", format!("expected postgresql or mysql, found {}", limits::quote(t)));
                None
            }
        });
        let conn = match top.get("connection_params") {
            Some(Value::Object(m)) => Some(m),
            None | Some(Value::Null) => {
                p.add("connection_params", "missing: the source database's host, port, database, username and password");
                None
            }
            Some(other) => {
                p.add(
                    "connection_params",
                    format!("expected an object with host, port, database, username and password, found {}", kind(other)),
                );
                None
            }
        };
        let empty = Map::new();
        let c = conn.unwrap_or(&empty);
        let (host, database, username) = if conn.is_some() {
            (
                p.required(c, "connection_params.host", "host", "the database server's host name or IP address"),
                p.required(c, "connection_params.database", "database", "the database to read"),
                p.required(c, "connection_params.username", "username", "the database user"),
            )
        } else {
            (None, None, None)
        };
        let port = match c.get("port") {
            None | Some(Value::Null) => Some(None),
            Some(Value::Number(n)) => match n.as_u64().filter(|p| (1..=65535).contains(p)) {
                Some(port) => Some(Some(port as u16)),
                None => {
                    p.add("connection_params.port", format!("expected a port from 1 to 65535, found {n}"));
                    None
                }
            },
            Some(Value::String(s)) if s.trim().is_empty() => Some(None),
            Some(Value::String(s)) => match s.trim().parse::<u16>().ok().filter(|p| *p > 0) {
                Some(port) => Some(Some(port)),
                None => {
                    p.add("connection_params.port", format!("expected a port from 1 to 65535, found {}", limits::quote(s)));
                    None
                }
            },
            Some(other) => {
                p.add("connection_params.port", format!("expected a port number, found {}", kind(other)));
                None
            }
        };
        // The password is never quoted, whatever its type.
        let password = match c.get("password") {
            Some(Value::String(s)) if !s.is_empty() => Some(Secret::new(s.clone())),
            _ if conn.is_none() => None,
            None | Some(Value::Null) | Some(Value::String(_)) => {
                p.add("connection_params.password", "missing: the database user's password");
                None
            }
            Some(other) => {
                p.add("connection_params.password", format!("expected a string, found {}", kind(other)));
                None
            }
        };
        let source_table_name = p.required(top, "source_table_name", "source_table_name", "the table to read");
        let schema_name = p.optional(top, "schema_name");
        let dest_table_name = p.required(top, "dest_table_name", "dest_table_name", "the BigQuery table to load");
        let load_type = p.required(top, "load_type", "load_type", "catalog or transactional");
        let load = load_type.as_deref().and_then(|t| match t.to_ascii_lowercase().as_str() {
            "catalog" => Some(LoadType::Catalog),
            "transactional" => Some(LoadType::Transactional),
            _ => {
                p.add("load_type", format!("expected catalog or transactional, found {}", limits::quote(t)));
                None
            }
        });
        let timestamp_column = p.optional(top, "timestamp_column");
        if load == Some(LoadType::Transactional) && timestamp_column.is_none() {
            p.add("timestamp_column", "missing: a transactional load adds the rows whose timestamp_column is newer than the last run's");
        }
        let selected_columns = match top.get("selected_columns") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) if a.is_empty() => None,
            Some(Value::Array(a)) => {
                let mut cols = Vec::new();
                for (i, v) in a.iter().enumerate() {
                    match v.as_str() {
                        Some(s) => cols.push(s.to_owned()),
                        None => p.add(&format!("selected_columns[{i}]"), format!("expected a column name, found {}", kind(v))),
                    }
                }
                Some(cols)
            }
            Some(other) => {
                p.add("selected_columns", format!("expected a list of column names, found {}", kind(other)));
                None
            }
        };
        let last_sync_value = match top.get("last_sync_value") {
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => p.optional(top, "last_sync_value"),
        };
        let historical_start_date = p.optional(top, "historical_start_date");
        if !p.0.is_empty() {
            return Err(p.0);
        }
        let missing = "checked above";
        Ok(Self {
            source: source.expect(missing),
            source_type: source_type.expect(missing),
            host: host.expect(missing),
            port: port.expect(missing),
            database: database.expect(missing),
            username: username.expect(missing),
            password: password.expect(missing),
            source_table_name: source_table_name.expect(missing),
            schema_name,
            dest_table_name: dest_table_name.expect(missing),
            load: load.expect(missing),
            timestamp_column,
            selected_columns,
            last_sync_value,
            historical_start_date,
        })
    }

    /// The source's `table`: `schema.table` for PostgreSQL (the table alone without a
    /// `schema_name`); the table alone for MySQL, whose database is its schema.
    fn source_table(&self) -> String {
        match (self.source, &self.schema_name) {
            (SourceKind::Postgres, Some(schema)) => format!("{schema}.{}", self.source_table_name),
            _ => self.source_table_name.clone(),
        }
    }

    /// The ferry config (component form) of data source `id`'s job. The password is not in
    /// it: the source names [`PASSWORD_ENV`].
    pub fn config_json(&self, id: u64, target: &Target) -> Value {
        // Without TLS only to this machine, where ferry's own rule allows it.
        let tls = if is_loopback(&self.host) && target.plaintext_loopback { "disable" } else { "require" };
        let mut source = json!({
            "type": self.source.type_name(),
            "host": self.host,
            "database": self.database,
            "user": self.username,
            "password_env": PASSWORD_ENV,
            "tls": tls,
            "table": self.source_table(),
        });
        if let Some(port) = self.port {
            source["port"] = port.into();
        }
        if let Some(columns) = &self.selected_columns {
            source["columns"] = json!(columns);
        }
        let mode = match self.load {
            LoadType::Catalog => "replace",
            LoadType::Transactional => "append",
        };
        let mut export = json!({
            "name": export_name(id),
            "source": source,
            "destination": {"type": "bigquery", "table": format!("{}.{}", target.dataset, self.dest_table_name), "mode": mode},
        });
        if self.load == LoadType::Transactional {
            export["incremental"] = true.into();
            export["timestamp_column"] = json!(self.timestamp_column);
        }
        let mut bigquery = json!({});
        if let Some(p) = &target.project {
            bigquery["project"] = p.as_str().into();
        }
        if let Some(a) = &target.auth {
            bigquery["auth"] = a.as_str().into();
        }
        json!({"exports": [export], "bigquery": bigquery})
    }

    /// The validated config of data source `id`'s job, with the source types of `components`;
    /// `env` is the process environment (validation reads the password from the answer).
    pub fn validate(
        &self,
        id: u64,
        target: &Target,
        components: &dyn Components,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, JobConfigErrors> {
        let type_name = self.source.type_name();
        let known = components.source_types();
        if !known.contains(&type_name) {
            return Err(JobConfigErrors {
                data_source_id: id,
                problems: vec![(
                    "source_type".into(),
                    format!(
                        "{} sources are not supported by this build of ferry (its sources: {})",
                        limits::quote(&self.source_type),
                        known.join(", ")
                    ),
                )],
            });
        }
        let json = self.config_json(id, target);
        let lookup = |k: &str| if k == PASSWORD_ENV { Some(self.password.expose().to_owned()) } else { env(k) };
        let raw = RawConfig::from_json(&json.to_string()).map_err(|e| self.problems(id, e))?;
        raw.validate(components, &lookup).map_err(|e| self.problems(id, e))
    }

    /// Configuration problems at the API's fields and the settings they come from.
    fn problems(&self, id: u64, errors: ConfigErrors) -> JobConfigErrors {
        let problems = errors
            .0
            .into_iter()
            .map(|e| {
                let message = self.password.redact_in(&e.message.replace("exports[0].", ""));
                (self.api_field(&e.path), message)
            })
            .collect();
        JobConfigErrors { data_source_id: id, problems }
    }

    /// The API field (or setting) behind a field of the translated config.
    fn api_field(&self, path: &str) -> String {
        let p = path.strip_prefix("exports[0].").unwrap_or(path);
        if let Some(rest) = p.strip_prefix("source.columns") {
            return format!("selected_columns{rest}");
        }
        let table = match (self.source, &self.schema_name) {
            (SourceKind::Postgres, Some(_)) => "schema_name, source_table_name",
            _ => "source_table_name",
        };
        match p {
            "source" | "source.type" => "source_type",
            "source.host" => "connection_params.host",
            "source.tls" => "connection_params.host (TLS)",
            "source.port" => "connection_params.port",
            "source.database" => "connection_params.database",
            "source.user" => "connection_params.username",
            "source.password" | "source.password_env" => "connection_params.password",
            "source.table" => table,
            "destination" | "destination.mode" | "incremental" => "load_type",
            "destination.table" => "BIGQUERY_DATASET, dest_table_name",
            "destination.batch_rows (ETL_BATCH_SIZE)" => "ETL_BATCH_SIZE",
            "timestamp_column" => "timestamp_column",
            "name" => "data source id",
            "bigquery.project" => "GCP_PROJECT_ID",
            "bigquery.auth" => BIGQUERY_AUTH_ENV,
            other => return other.to_owned(),
        }
        .to_owned()
    }
}

/// Where a job's table goes, from the seed's variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `GCP_PROJECT_ID`; without it, `GOOGLE_CLOUD_PROJECT`.
    pub project: Option<String>,
    /// `BIGQUERY_DATASET`, `raw_data` by default.
    pub dataset: String,
    /// `FERRY_BIGQUERY_AUTH` (`none` for an emulator, which `FERRY_BIGQUERY_ENDPOINT` names).
    pub auth: Option<String>,
    /// `FERRY_ALLOW_PLAINTEXT_LOOPBACK=1`: a database on this machine is read without TLS.
    pub plaintext_loopback: bool,
}

impl Target {
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Self {
        let var = |k: &str| env(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        Self {
            project: var(PROJECT_ENV),
            dataset: var(DATASET_ENV).unwrap_or_else(|| DEFAULT_DATASET.to_owned()),
            auth: var(BIGQUERY_AUTH_ENV),
            plaintext_loopback: env(PLAINTEXT_LOOPBACK_ENV).as_deref() == Some("1"),
        }
    }
}

// ------------------------------------------------------------------ status reports

/// Reports one ETL run's status to the API. Failures are logged, never returned: the status
/// report never changes a run's outcome.
#[derive(Clone)]
pub struct Reporter {
    api: Api,
    url: String,
    etl_run_id: u64,
}

impl Reporter {
    async fn patch(&self, body: &Value, timeout: Duration) -> Result<(), CallError> {
        let url = &self.url;
        let sent = self.api.request(reqwest::Method::PATCH, url).timeout(timeout).json(body).send().await;
        let resp = sent.map_err(|e| CallError {
            message: format!("cannot reach {url}: {}", transport(e, timeout)),
            transient: true,
            retry_after: None,
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        Err(status_error(
            status,
            resp.headers().get(reqwest::header::RETRY_AFTER),
            format!("the API answered {} from {url}", status.as_u16()),
        ))
    }

    /// Sends `body`, retried as the API's calls are when `retry`; a failure is logged.
    pub async fn send(&self, body: &Value, retry: bool) {
        let status = body["status"].as_str().unwrap_or_default();
        let result = if retry {
            let policy = self.api.retry;
            policy
                .run_with("PATCH run status", || self.patch(body, REQUEST_TIMEOUT), CallError::verdict)
                .await
                .map_err(|g| format!("{}{}", g.error, g.context()))
        } else {
            self.patch(body, PROGRESS_TIMEOUT).await.map_err(|e| e.to_string())
        };
        match result {
            Ok(()) => tracing::debug!(etl_run_id = self.etl_run_id, status, "reported the run's status"),
            Err(e) => tracing::warn!(
                etl_run_id = self.etl_run_id,
                status,
                error = %self.api.redact(&e),
                "could not report the run's status to the API; the run's outcome stands"
            ),
        }
    }
}

/// Progress reports while the rows load: the run's progress callback stores the row count,
/// and a task sends it when it changed, at most every [`PROGRESS_EVERY`].
pub struct ProgressReports {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl ProgressReports {
    /// Starts the task; the sender takes the row count.
    pub fn start(reporter: Reporter) -> (watch::Sender<u64>, Self) {
        let (rows, mut seen) = watch::channel(0u64);
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut sent = 0;
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = tick.tick() => {}
                }
                let n = *seen.borrow_and_update();
                if n != sent {
                    sent = n;
                    reporter.send(&json!({"status": "running", "rows_extracted": n, "rows_loaded": n}), false).await;
                }
            }
        });
        (rows, Self { stop, task })
    }

    /// Stops the task once a report it is sending is done: nothing is sent after this returns.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// `text` cut to [`MAX_ERROR_CHARS`].
fn bounded(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(MAX_ERROR_CHARS).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

/// The final report of a job that failed before its run started.
pub fn failed_body(error: &str, duration: Duration) -> Value {
    json!({
        "status": "failed",
        "rows_extracted": 0,
        "rows_loaded": 0,
        "duration_seconds": duration.as_secs_f64().round() as u64,
        "error_message": bounded(error),
    })
}

/// The final report of a run: `completed` with the rows loaded, or `failed` with the rows read
/// and none loaded (a failed load commits nothing) and the run's error, passed through `redact`.
pub fn final_body(report: &RunReport, duration: Duration, redact: &dyn Fn(&str) -> String) -> Value {
    let rows = report.outcomes.iter().map(|o| o.rows).sum::<u64>();
    let seconds = duration.as_secs_f64().round() as u64;
    if report.succeeded() {
        return json!({"status": "completed", "rows_extracted": rows, "rows_loaded": rows, "duration_seconds": seconds});
    }
    let errors: Vec<&str> = report.outcomes.iter().filter_map(|o| o.error.as_deref()).collect();
    let error = if errors.is_empty() { "the run failed".to_owned() } else { errors.join("; ") };
    json!({
        "status": "failed",
        "rows_extracted": rows,
        "rows_loaded": 0,
        "duration_seconds": seconds,
        "error_message": bounded(&redact(&error)),
    })
}

// ------------------------------------------------------------------ the run

/// Runs data source `job`'s ETL job with `opts` (its export selection is set here): fetches
/// and validates the job config, reports `running`, runs, and reports the outcome. `progress`
/// also sees the run's progress (a terminal's line). An error means the run did not start; it
/// was reported as `failed` when there is a run to report to.
pub async fn run(job: EtlJob, opts: RunOptions, progress: Option<&(dyn Fn(Progress<'_>) + Sync)>) -> Result<RunReport, EtlError> {
    let span = tracing::info_span!("etl", data_source_id = job.data_source_id, etl_run_id = job.etl_run_id);
    run_job(job, opts, progress).instrument(span).await
}

async fn run_job(job: EtlJob, mut opts: RunOptions, progress: Option<&(dyn Fn(Progress<'_>) + Sync)>) -> Result<RunReport, EtlError> {
    let env = |k: &str| std::env::var(k).ok();
    let started = Instant::now();
    let id = job.data_source_id;
    let api = Api::from_env(&env)?;
    let reporter = match job.etl_run_id {
        Some(_) if opts.dry_run => {
            tracing::info!("a dry run records nothing: no status is reported");
            None
        }
        Some(run) => Some(api.reporter(run)),
        None => None,
    };
    if let Some(r) = &reporter {
        r.send(&json!({"status": "running"}), true).await;
    }
    let prepared = async {
        let job_config = api.job_config(id).await?;
        let config = job_config.validate(id, &Target::from_env(&env), &crate::components::Registry, &env).map_err(EtlError::Invalid)?;
        Ok::<_, EtlError>((job_config, config))
    };
    let (job_config, config) = match prepared.await {
        Ok(x) => x,
        Err(e) => {
            if let Some(r) = &reporter {
                r.send(&failed_body(&api.redact(&e.to_string()), started.elapsed()), true).await;
            }
            return Err(e);
        }
    };
    for w in &config.warnings {
        tracing::warn!(warning = %w, "job config");
    }
    let export = &config.exports[0];
    tracing::info!(source = %export.source.describe, destination = %export.destination.component.describe, "running the job");
    opts.exports = Some(vec![export.name.clone()]);
    // A first run (no watermark yet) starts where the job's earlier runner stopped.
    if job_config.load == LoadType::Transactional {
        opts.first_start = match (&job_config.last_sync_value, &job_config.historical_start_date) {
            (Some(v), _) => Some(ferry_core::run::FirstStart::After(v.clone())),
            (None, Some(d)) => Some(ferry_core::run::FirstStart::From(d.clone())),
            (None, None) => None,
        };
    }
    let (rows, reports) = match &reporter {
        Some(r) => {
            let (rows, reports) = ProgressReports::start(r.clone());
            (Some(rows), Some(reports))
        }
        None => (None, None),
    };
    let on_progress = |p: Progress<'_>| {
        if let Some(show) = progress {
            show(p);
        }
        if let Some(rows) = &rows {
            rows.send_replace(p.rows);
        }
    };
    // The seed's retry settings govern the whole run: the database, BigQuery and the
    // metadata table, not only the API.
    let report = crate::run_retrying(&config, &opts, Some(&on_progress), Some(api.operations_retry())).await;
    if let Some(reports) = reports {
        reports.stop().await;
    }
    if let Some(r) = &reporter {
        let redact = |t: &str| api.redact(&config.redact(t));
        r.send(&final_body(&report, started.elapsed(), &redact), true).await;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use ferry_core::config::{Check, Component, Destination};

    use super::*;

    fn answer() -> Value {
        json!({
            "source_type": "postgresql",
            "connection_params": {"host": "db.example.com", "port": 5432, "database": "mydb", "username": "user", "password": "hunter2-sentinel"},
            "source_table_name": "transactions",
            "schema_name": "public",
            "dest_table_name": "bq_transactions",
            "load_type": "transactional",
            "timestamp_column": "created_at",
            "selected_columns": ["id", "amount", "created_at"],
            "last_sync_value": "2024-01-01T00:00:00",
            "historical_start_date": "2023-01-01",
            "id": 7,
            "name": "fields ferry does not use are ignored"
        })
    }

    fn with(changes: Value) -> Value {
        let mut a = answer();
        for (k, v) in changes.as_object().cloned().unwrap_or_default() {
            if let (Some(obj), Value::Object(inner)) = (a[&k].as_object_mut(), &v) {
                for (ik, iv) in inner {
                    obj.insert(ik.clone(), iv.clone());
                }
            } else {
                a[k] = v;
            }
        }
        a
    }

    fn parse(v: &Value) -> Result<JobConfig, Vec<String>> {
        JobConfig::from_json(v.to_string().as_bytes()).map_err(|p| p.into_iter().map(|(f, m)| format!("{f}: {m}")).collect())
    }

    fn target() -> Target {
        Target { project: Some("acme-data".into()), dataset: "raw_data".into(), auth: None, plaintext_loopback: false }
    }

    #[test]
    fn the_seeds_example_becomes_one_incremental_export() {
        let job = parse(&answer()).expect("valid");
        assert_eq!(job.password.expose(), "hunter2-sentinel");
        assert_eq!(job.last_sync_value.as_deref(), Some("2024-01-01T00:00:00"));
        let config = job.config_json(7, &target());
        assert_eq!(
            config,
            json!({"exports": [{
                "name": "etl_7",
                "source": {"type": "postgres", "host": "db.example.com", "port": 5432, "database": "mydb", "user": "user",
                           "password_env": "FERRY_ETL_SOURCE_PASSWORD", "tls": "require", "table": "public.transactions",
                           "columns": ["id", "amount", "created_at"]},
                "destination": {"type": "bigquery", "table": "raw_data.bq_transactions", "mode": "append"},
                "incremental": true,
                "timestamp_column": "created_at",
            }], "bigquery": {"project": "acme-data"}})
        );
        assert!(!config.to_string().contains("hunter2"), "the password stays out of the config text");
    }

    #[test]
    fn a_catalog_load_replaces_and_mysql_tables_have_no_schema() {
        let job = parse(&with(
            json!({"source_type": "MySQL", "load_type": "catalog", "selected_columns": [], "connection_params": {"port": "3306"}}),
        ))
        .expect("valid");
        let t = Target { project: None, dataset: "staging".into(), auth: Some("none".into()), plaintext_loopback: true };
        let c = job.config_json(12, &t);
        let x = &c["exports"][0];
        assert_eq!(x["source"]["type"], "mysql");
        assert_eq!(x["source"]["table"], "transactions", "the database is the schema");
        assert_eq!(x["source"]["port"], 3306);
        assert!(x["source"].get("columns").is_none(), "an empty list: every column");
        assert_eq!(x["destination"], json!({"type": "bigquery", "table": "staging.bq_transactions", "mode": "replace"}));
        assert!(x.get("incremental").is_none() && x.get("timestamp_column").is_none(), "a snapshot has no window: {x}");
        assert_eq!(c["bigquery"], json!({"auth": "none"}));
        assert_eq!(x["source"]["tls"], "require", "db.example.com is not this machine");
    }

    #[test]
    fn tls_is_left_out_only_for_a_database_on_this_machine_when_allowed() {
        for (host, allowed, tls) in
            [("127.0.0.1", true, "disable"), ("localhost", true, "disable"), ("127.0.0.1", false, "require"), ("10.0.0.5", true, "require")]
        {
            let job = parse(&with(json!({"connection_params": {"host": host}}))).unwrap();
            let t = Target { plaintext_loopback: allowed, ..target() };
            assert_eq!(job.config_json(1, &t)["exports"][0]["source"]["tls"], tls, "{host} {allowed}");
        }
        let job = parse(&with(json!({"schema_name": null}))).unwrap();
        assert_eq!(job.config_json(1, &target())["exports"][0]["source"]["table"], "transactions");
    }

    #[test]
    fn problems_name_the_apis_fields_and_never_quote_the_password() {
        let e = parse(&with(json!({"load_type": "weekly"}))).unwrap_err();
        assert_eq!(e, ["load_type: expected catalog or transactional, found \"weekly\""]);
        let e = parse(&with(json!({"timestamp_column": null}))).unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("timestamp_column: missing: a transactional load"), "{e:?}");
        assert!(parse(&with(json!({"timestamp_column": null, "load_type": "catalog"}))).is_ok());
        let e =
            parse(&with(json!({"source_type": "oracle", "connection_params": {"port": 0, "password": 12345678, "host": ""}}))).unwrap_err();
        assert_eq!(
            e,
            [
                "source_type: expected postgresql or mysql, found \"oracle\"",
                "connection_params.host: missing: the database server's host name or IP address",
                "connection_params.port: expected a port from 1 to 65535, found 0",
                "connection_params.password: expected a string, found a number",
            ]
        );
        let e = parse(&with(json!({"connection_params": {"password": ""}, "selected_columns": ["id", 3]}))).unwrap_err();
        assert_eq!(
            e,
            [
                "connection_params.password: missing: the database user's password",
                "selected_columns[1]: expected a column name, found a number"
            ]
        );
        let e = parse(&json!({"connection_params": "postgres://u:hunter2-sentinel@h/db"})).unwrap_err();
        assert!(e.iter().all(|m| !m.contains("hunter2")), "{e:?}");
        assert!(e.contains(
            &"connection_params: expected an object with host, port, database, username and password, found a string".to_owned()
        ));
        assert_eq!(e.len(), 5, "source_type, connection_params, source_table_name, dest_table_name, load_type: {e:?}");
        assert_eq!(parse(&json!([1])).unwrap_err(), [": expected a JSON object, found a list"]);
        assert!(parse(&json!("x")).is_err());
        let e = JobConfig::from_json(b"<html>").unwrap_err();
        assert!(e[0].1.starts_with("the answer is not JSON"), "{e:?}");
        // A numeric watermark is kept as its text.
        assert_eq!(parse(&with(json!({"last_sync_value": 1234}))).unwrap().last_sync_value.as_deref(), Some("1234"));
    }

    /// Knows a `postgres` source (accepted as it is) and ferry's `bigquery` table destination.
    struct Stub;

    impl Components for Stub {
        fn source_types(&self) -> Vec<&'static str> {
            vec!["postgres"]
        }
        fn destination_types(&self) -> Vec<&'static str> {
            vec!["bigquery"]
        }
        fn source(&self, type_name: &str, value: &Value, cx: &Check<'_>) -> Option<Option<Component>> {
            (type_name == "postgres").then(|| {
                let var = value["password_env"].as_str().unwrap_or_default();
                let password = cx.env(var).expect("the password is answered");
                if value["table"] == "bad.table.name" {
                    cx.err("table", "expected `schema.table` or `table`");
                }
                Some(Component {
                    type_name: "postgres".into(),
                    describe: "postgres://db".into(),
                    settings: Arc::new(()),
                    secrets: vec![Secret::new(password)],
                    staged: None,
                })
            })
        }
        fn destination(&self, type_name: &str, value: &Value, cx: &Check<'_>) -> Option<Option<Destination>> {
            (type_name == "bigquery").then(|| ferry_bigquery::component::validate_table_destination(value, cx))
        }
    }

    fn validate(job: &Value, target: &Target, env: &[(&str, &str)]) -> Result<Config, String> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let job = parse(job).expect("valid answer");
        job.validate(7, target, &Stub, &|k| env.get(k).cloned()).map_err(|e| e.to_string())
    }

    #[test]
    fn validation_reads_the_password_from_the_answer_and_names_the_apis_fields() {
        let env = [(PASSWORD_ENV, "from-the-process"), ("ETL_BATCH_SIZE", "500")];
        let config = validate(&answer(), &target(), &env).expect("valid");
        assert_eq!(config.exports[0].name, "etl_7");
        assert_eq!(config.bigquery.project, "acme-data");
        assert_eq!(config.redact("login failed for hunter2-sentinel"), "login failed for **REDACTED**", "the answer's password");

        let e = validate(&with(json!({"schema_name": "bad.table", "source_table_name": "name"})), &target(), &[]).unwrap_err();
        assert_eq!(e, "job config of data source 7: schema_name, source_table_name: expected `schema.table` or `table`");
        let e = validate(&with(json!({"dest_table_name": "x.y"})), &target(), &[]).unwrap_err();
        assert!(e.starts_with("job config of data source 7: BIGQUERY_DATASET, dest_table_name: "), "{e}");
        let e = validate(&answer(), &Target { project: Some("Bad_Project".into()), ..target() }, &[]).unwrap_err();
        assert!(e.starts_with("job config of data source 7: GCP_PROJECT_ID: \"Bad_Project\" is not a project id"), "{e}");
        let e = validate(&answer(), &Target { project: None, ..target() }, &[]).unwrap_err();
        assert!(e.starts_with("job config of data source 7: GCP_PROJECT_ID: no project"), "{e}");
        let e = validate(&answer(), &Target { auth: Some("magic".into()), ..target() }, &[]).unwrap_err();
        assert!(e.starts_with("job config of data source 7: FERRY_BIGQUERY_AUTH: unknown variant `magic`"), "{e}");
        let e = validate(&answer(), &target(), &[("ETL_BATCH_SIZE", "0")]).unwrap_err();
        assert!(e.starts_with("job config of data source 7: ETL_BATCH_SIZE: expected 1 to"), "{e}");
        let e = validate(&with(json!({"source_type": "mysql"})), &target(), &[]).unwrap_err();
        assert_eq!(
            e,
            "job config of data source 7: source_type: \"mysql\" sources are not supported by this build of ferry (its sources: postgres)"
        );
        let two = JobConfigErrors { data_source_id: 3, problems: vec![("a".into(), "x".into()), (String::new(), "y".into())] };
        assert_eq!(two.to_string(), "job config of data source 3: a: x\njob config of data source 3: y");
    }

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| vars.get(k).cloned()
    }

    #[test]
    fn the_api_url_must_be_https_unless_it_is_this_machine_and_allowed() {
        let base = |url: &str, allow: bool| api_base(url, &env(if allow { &[(PLAINTEXT_LOOPBACK_ENV, "1")] } else { &[] }));
        assert_eq!(base("https://app.example.com", false).unwrap(), "https://app.example.com");
        assert_eq!(base(" https://app.example.com/prefix/ ", false).unwrap(), "https://app.example.com/prefix");
        assert_eq!(base("http://127.0.0.1:8000", true).unwrap(), "http://127.0.0.1:8000");
        assert_eq!(base("http://[::1]:8000/", true).unwrap(), "http://[::1]:8000");
        let e = base("http://localhost:8000", false).unwrap_err();
        assert!(e.contains("unencrypted") && e.contains("FERRY_ALLOW_PLAINTEXT_LOOPBACK=1"), "{e}");
        let e = base("http://app.example.com", true).unwrap_err();
        assert!(e.contains("use https://") && !e.contains(PLAINTEXT_LOOPBACK_ENV), "{e}");
        let e = base("https://user:hunter2-sentinel@app.example.com", false).unwrap_err();
        assert!(e.contains(API_TOKEN_ENV) && !e.contains("hunter2"), "{e}");
        assert!(base("https://app.example.com/?token=hunter2-sentinel", false).unwrap_err().contains("without a ?query"));
        let e = base("ftp://app.example.com", false).unwrap_err();
        assert_eq!(e, "expected an https:// URL, found \"ftp\"");
        assert!(base("app.example.com", false).unwrap_err().starts_with("expected an https:// URL"));
        let e = Api::from_env(&env(&[])).err().expect("unset").to_string();
        assert!(e.starts_with("DJANGO_API_URL is not set"), "{e}");
    }

    #[test]
    fn retries_follow_the_seeds_variables() {
        let p = retry_policy(&env(&[])).unwrap();
        assert_eq!((p.max_attempts, p.initial, p.max_delay, p.multiplier), (4, Duration::from_secs(5), Duration::from_secs(60), 2));
        assert_eq!((1..=3).map(|n| p.ceiling(n).as_secs()).collect::<Vec<_>>(), [5, 10, 20]);
        assert_eq!(p.deadline, Duration::from_secs(35 + 4 * 30 + 1));
        let p = retry_policy(&env(&[(MAX_RETRIES_ENV, "0"), (RETRY_DELAY_ENV, "0.5")])).unwrap();
        assert_eq!((p.max_attempts, p.initial), (1, Duration::from_millis(500)));
        let p = retry_policy(&env(&[(MAX_RETRIES_ENV, "10"), (RETRY_DELAY_ENV, "120")])).unwrap();
        assert_eq!((p.max_delay, p.ceiling(5)), (Duration::from_secs(120), Duration::from_secs(120)));
        assert_eq!(retry_policy(&env(&[(MAX_RETRIES_ENV, "11")])).unwrap_err(), "ETL_MAX_RETRIES: expected 0 to 10 retries, found \"11\"");
        assert!(retry_policy(&env(&[(RETRY_DELAY_ENV, "-1")])).unwrap_err().starts_with("ETL_RETRY_DELAY: expected 0 to 300 seconds"));
        assert!(retry_policy(&env(&[(RETRY_DELAY_ENV, "NaN")])).is_err());
    }

    #[test]
    fn the_runs_calls_retry_as_the_seed_says_with_room_for_long_attempts() {
        let vars = [(API_URL_ENV, "https://app.example.com"), (MAX_RETRIES_ENV, "1"), (RETRY_DELAY_ENV, "2")];
        let p = Api::from_env(&env(&vars)).unwrap().operations_retry();
        assert_eq!((p.max_attempts, p.initial, p.multiplier), (2, Duration::from_secs(2), 2));
        assert_eq!(p.deadline, RetryPolicy::default().deadline, "an API call's 63 s would cut a slow load's retry");
        let vars = [(API_URL_ENV, "https://app.example.com"), (MAX_RETRIES_ENV, "10"), (RETRY_DELAY_ENV, "300")];
        let p = Api::from_env(&env(&vars)).unwrap().operations_retry();
        assert!(p.deadline > Duration::from_secs(10 * 300), "every retry the count allows fits: {:?}", p.deadline);
    }

    #[test]
    fn answers_worth_another_attempt() {
        let verdict = |s: u16, after: Option<&str>| {
            let h = after.map(|a| reqwest::header::HeaderValue::from_str(a).unwrap());
            status_error(StatusCode::from_u16(s).unwrap(), h.as_ref(), String::new()).verdict()
        };
        assert_eq!(verdict(500, None), Verdict::Retry);
        assert_eq!(verdict(503, Some("7")), Verdict::RetryAfter(Duration::from_secs(7)));
        assert_eq!(verdict(429, Some("100000")), Verdict::RetryAfter(MAX_WAIT));
        assert_eq!(verdict(404, Some("7")), Verdict::Stop);
        assert_eq!(verdict(401, None), Verdict::Stop);
        assert_eq!(verdict(400, None), Verdict::Stop);
    }

    #[test]
    fn final_reports() {
        let config = ferry_testkit::memory::memory_config("etl_7", ferry_core::config::Shape::Table(ferry_core::config::TableMode::Append));
        let mut opts = RunOptions::new();
        opts.exports = Some(vec!["etl_7".into()]);
        let mut report =
            RunReport::failed_before_start(&config, &opts, ferry_core::ErrorClass::Permanent, "login failed: pw hunter2-sentinel");
        report.outcomes[0].rows = 40;
        let redact = |t: &str| t.replace("hunter2-sentinel", "**REDACTED**");
        let body = final_body(&report, Duration::from_millis(2600), &redact);
        assert_eq!(
            body,
            json!({"status": "failed", "rows_extracted": 40, "rows_loaded": 0, "duration_seconds": 3, "error_message": "login failed: pw **REDACTED**"})
        );
        report.outcomes[0].status = ferry_core::roles::RunStatus::Success;
        report.outcomes[0].error = None;
        let body = final_body(&report, Duration::from_secs(120), &redact);
        assert_eq!(body, json!({"status": "completed", "rows_extracted": 40, "rows_loaded": 40, "duration_seconds": 120}));
        let long = "x".repeat(5000);
        let body = failed_body(&long, Duration::ZERO);
        assert_eq!(body["error_message"].as_str().unwrap().chars().count(), MAX_ERROR_CHARS + 1);
        assert_eq!(body["status"], "failed");
    }
}
