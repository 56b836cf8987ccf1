//! Configuration: the JSON file users write, checked in two phases.
//!
//! 1. [`RawConfig::from_json`]: syntax and the shape of the shared parts. Unknown fields are
//!    errors; every error names the field path (`exports[1].timestamp_column`). A seed-form
//!    file is rewritten into components first ([`legacy`]).
//! 2. [`RawConfig::validate_with`]: meaning, without any network call. Each export's `source`
//!    and `destination` are checked by the crate of their `type` ([`Components`]); the shared
//!    parts here: names, cursors, the metadata table, schedules, notifications. All problems
//!    are reported at once, each at the path the user wrote.
//!
//! Secrets never live in the file: the file names environment variables or files that hold
//! them, and resolved values are [`Secret`]s.
//!
//! The modules: [`check`] (the context checks report through), [`component`] (sources and
//! destinations), [`file`] (settings every file destination shares), [`legacy`] (the seed
//! form), [`notify`], [`schedule`].

pub mod check;
pub mod component;
pub mod file;
pub mod job;
pub mod legacy;
pub mod limits;
pub mod notify;
pub mod schedule;
pub mod staging;

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::Deserialize;
use serde_json::Value;

pub use check::{Check, SecretField};
pub use chrono_tz::Tz;
pub use component::{Component, Components, Destination, HourlyLoad, Shape, StagedFiles, TableMode};
pub use file::{Compression, FileSettings, Format, OnExisting, RawFile, Split, MIN_FILE_BYTES};
pub use job::{CloudRunJob, Execution, RawCloudRunJob};
pub use notify::{EmailSpec, Notifications, RawNotifications, SlackSpec, SmtpTls, When};
pub use schedule::RawSchedule;
pub use staging::{Cleanup, RawStaging, StagingSpec};

use crate::ident::{is_column, TableName};
use crate::Secret;

/// One configuration problem: where it is and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Field path, e.g. `exports[1].timestamp_column`; empty for the document itself.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// All problems found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "invalid configuration ({n} problem{})", if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

fn one(path: impl Into<String>, message: impl Into<String>) -> ConfigErrors {
    ConfigErrors(vec![ConfigError { path: path.into(), message: limits::bound_message(message.into()) }])
}

/// Where the configuration is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deployment {
    /// In the environment it runs in: secrets are resolved and files must exist.
    Here,
    /// Before deployment (CI, an image build): secrets, mounted files and the settings the
    /// deployment passes as environment variables are not looked at.
    Elsewhere,
}

// ------------------------------------------------------------------ the file's shape

/// The configuration file, in component form (the seed form is rewritten into it by
/// [`RawConfig::from_json`]). Everything but `exports` and `metadata_table` is optional with a
/// safe default.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "ferry configuration")]
pub struct RawConfig {
    /// The exports this file defines.
    pub exports: Vec<RawExport>,
    /// `project.dataset.table` (or `dataset.table`) of the run history and watermarks;
    /// `FERRY_METADATA_TABLE`, else `ferry.export_runs` (created, with its dataset, if missing).
    #[serde(default)]
    pub metadata_table: Option<String>,
    /// The Cloud Storage bucket of staged exports (`bigquery_export` sources, `POST /transfer`).
    #[serde(default)]
    pub staging: Option<RawStaging>,
    /// Exports one run delivers at once; 1 by default (one after the other), at most 16. Each
    /// holds its own lease.
    #[serde(default)]
    #[schemars(range(min = 1, max = 16))]
    pub parallel_exports: Option<u32>,
    /// The service's URL (seed form: `cloud_run_url`): the audience push and `/transfer`
    /// callers' ID tokens are checked against when `FERRY_PUSH_AUDIENCE` names none.
    #[serde(default)]
    pub service_url: Option<String>,
    /// The Google Cloud project and BigQuery endpoint: the metadata table, and BigQuery
    /// sources and destinations.
    #[serde(default)]
    pub bigquery: RawBigQuery,
    /// Who hears about runs.
    #[serde(default)]
    pub notifications: Option<RawNotifications>,
    /// When Cloud Scheduler runs this config. Read by `deploy/scheduler.sh`, which makes one
    /// job per entry; a run ignores it.
    #[serde(default)]
    pub schedules: Vec<RawSchedule>,
    /// The Cloud Run Job that `ferry serve` starts for exports with `execution: job`; needed
    /// only by them (its `job` may come from `FERRY_CLOUD_RUN_JOB`).
    #[serde(default)]
    pub cloud_run_job: Option<RawCloudRunJob>,
    /// Normalised field path → the path the user wrote (seed form).
    #[serde(skip)]
    #[schemars(skip)]
    aliases: HashMap<String, String>,
    /// Problems found while rewriting the seed form.
    #[serde(skip)]
    #[schemars(skip)]
    seed_errors: Vec<(String, String)>,
    /// The file in component form, for `ferry check --explain`.
    #[serde(skip)]
    #[schemars(skip)]
    normalized: Value,
}

/// One export: rows of a source delivered to a destination.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawExport {
    /// Unique name: letters, digits, `_` and `-`.
    pub name: String,
    /// Where rows come from: an object with a `type` (`bigquery`) and that type's settings.
    #[serde(default)]
    pub source: Option<Value>,
    /// Where rows go: an object with a `type` (`sftp`) and that type's settings.
    #[serde(default)]
    pub destination: Option<Value>,
    /// Cursor column for incremental windows (TIMESTAMP, DATETIME, DATE or INT64).
    #[serde(default)]
    pub timestamp_column: Option<String>,
    /// Deliver only rows newer than the last delivered watermark.
    #[serde(default)]
    pub incremental: bool,
    /// Skip this export when false.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Re-read this far behind the watermark to catch rows that arrive late, in the cursor's
    /// own unit: seconds for TIMESTAMP and DATETIME cursors, days for DATE, units for INT64.
    /// A run delivers whenever this window holds rows, even when nothing newer arrived; rows in
    /// the overlap are delivered again (at least once). `settle` is the exact tool.
    #[serde(default)]
    pub lookback: Option<u64>,
    /// Seconds a row may take to become visible after the time in its cursor (TIMESTAMP,
    /// DATETIME, DATE): a run delivers rows up to `min(MAX(cursor), server time − settle)`,
    /// and a DATE day once `settle` has passed after its end. 300 by default; 0 allowed.
    /// INT64 cursors ignore it: their values must be assigned in commit order.
    #[serde(default)]
    pub settle: Option<u64>,
    /// IANA time zone that DATETIME and DATE cursor values are written in, for `settle` and
    /// for when a day is complete; `Etc/UTC` by default.
    #[serde(default)]
    pub cursor_time_zone: Option<String>,
    /// DATE cursors: also deliver today, the day not yet complete. Its later rows are then only
    /// delivered with `lookback` (at least 1). False by default: only complete days.
    #[serde(default)]
    pub partial_days: bool,
    /// Rows whose `timestamp_column` is NULL, which no incremental window holds (full and
    /// non-incremental exports deliver them): `report` (default) counts them every run and
    /// reports the count; `fail` fails the run before anything is written;
    /// `{"arrival_column": "COLUMN"}` delivers each of them once, with the run whose window of
    /// that TIMESTAMP column (its own watermark, also held back by `settle`) holds its value.
    #[serde(default)]
    pub null_cursor: Option<NullCursor>,
    /// Where `ferry serve` runs this export: `inline` (default), inside the push request, which
    /// must then end within the subscription's acknowledgement deadline (at most 600 s); or
    /// `job`, in a Cloud Run Job execution (`cloud_run_job`) that the service starts and records
    /// as DISPATCHED before it answers the push: for exports that may run longer. `ferry run`
    /// ignores it.
    #[serde(default)]
    pub execution: Execution,
}

/// What an incremental run does about rows whose cursor is NULL.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum NullCursor {
    /// Count them every run and report the count (run summary, notifications, metadata row).
    #[default]
    Report,
    /// Fail the run, before anything is written, while any exist.
    Fail,
    /// Deliver them by another TIMESTAMP column of theirs, e.g. the time they were loaded: each
    /// run also sends the rows with a NULL cursor whose value of this column is in
    /// `(previous run's bound, source clock − settle]`, so each of them goes exactly once.
    ArrivalColumn(String),
}

/// Where runs are recorded when the file names no `metadata_table` and neither does
/// [`METADATA_TABLE_ENV`].
pub const DEFAULT_METADATA_TABLE: &str = "ferry.export_runs";
/// The variable naming the metadata table when the file names none.
pub const METADATA_TABLE_ENV: &str = "FERRY_METADATA_TABLE";
/// The most staged files copied at once by one run: `parallel_exports` × `staging.parallel_objects`.
pub const MAX_COPIES: usize = 32;
/// The most exports one run delivers at once (`parallel_exports`).
pub const MAX_PARALLEL_EXPORTS: u32 = 16;

/// `settle` when the config names none: five minutes (see the README's "Windows").
pub const DEFAULT_SETTLE_SECONDS: u64 = 300;
/// The largest `settle`: a day.
pub const MAX_SETTLE_SECONDS: u64 = 86_400;
/// The largest `lookback` in any unit: a year of seconds (DATE cursors: at most 366 days,
/// checked when the column's type is known).
pub const MAX_LOOKBACK: u64 = 366 * 86_400;

fn yes() -> bool {
    true
}

/// BigQuery settings.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBigQuery {
    /// Project that runs the queries; `GOOGLE_CLOUD_PROJECT`, else the metadata table's project.
    #[serde(default)]
    pub project: Option<String>,
    /// API endpoint; `FERRY_BIGQUERY_ENDPOINT`, else `https://bigquery.googleapis.com`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `application_default` (default: Google's Application Default Credentials: the key file
    /// in `GOOGLE_APPLICATION_CREDENTIALS`, else gcloud's application-default file, else the
    /// metadata server), `metadata_server` (Cloud Run's service account only), `token_env`, or
    /// `none` (emulators only).
    #[serde(default)]
    pub auth: BigQueryAuthKind,
    /// With `auth: token_env`: the variable holding an OAuth access token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Seconds one request to BigQuery may take (a result page included); 300 by default, 30 to
    /// 3600. Connecting is bounded by 10 s.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Seconds a query may take to complete before it is cancelled and the run fails; 1800 by
    /// default, 10 to 86400.
    #[serde(default)]
    pub query_deadline_secs: Option<u64>,
    /// Rows per result page; 10000 by default. ferry holds about two pages at a time (one being
    /// written, the next being fetched), so this bounds its memory: about 40 MiB at the default.
    #[serde(default)]
    pub page_size: Option<u32>,
    /// How table sources are read: `auto` (default: tables through the BigQuery Storage Read
    /// API, views and external tables through REST), `storage` (every table source through the
    /// Storage Read API) or `rest` (a query, then its result pages). Query sources are always
    /// read through REST. With a custom `endpoint` (an emulator) and no `storage_endpoint`,
    /// `auto` reads through REST.
    #[serde(default)]
    pub read_api: ReadApi,
    /// The Storage Read API's gRPC endpoint; `FERRY_BIGQUERY_STORAGE_ENDPOINT`, else
    /// `https://bigquerystorage.googleapis.com`.
    #[serde(default)]
    pub storage_endpoint: Option<String>,
    /// Storage Read streams open at once; 2 by default, 1 to 16. Their rows are decoded one
    /// batch at a time; each further stream holds up to 2 MiB of received data in memory.
    #[serde(default)]
    #[schemars(range(min = 1, max = 16))]
    pub storage_streams: Option<u32>,
}

/// BigQuery's REST endpoint.
pub const BIGQUERY_ENDPOINT: &str = "https://bigquery.googleapis.com";

/// The BigQuery Storage Read API's endpoint.
pub const BIGQUERY_STORAGE_ENDPOINT: &str = "https://bigquerystorage.googleapis.com";

/// The most Storage Read streams open at once (`bigquery.storage_streams`).
pub const MAX_STORAGE_STREAMS: u32 = 16;

/// How table sources are read (`bigquery.read_api`).
#[derive(Debug, Clone, Copy, Default, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReadApi {
    /// Tables through the Storage Read API, views, external tables and queries through REST.
    #[default]
    Auto,
    /// A query job and its result pages over REST.
    Rest,
    /// The Storage Read API over gRPC, as Arrow, for every table source.
    Storage,
}

/// How BigQuery requests are authorised.
#[derive(Debug, Clone, Copy, Default, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BigQueryAuthKind {
    /// Application Default Credentials, found the way Google's client libraries find them.
    #[default]
    ApplicationDefault,
    /// The metadata server's token for the attached service account.
    MetadataServer,
    /// An access token from an environment variable.
    TokenEnv,
    /// No credentials: only for a local emulator.
    None,
}

impl RawConfig {
    /// Parses the JSON text, rewriting the seed form into components. Errors name the field
    /// path as the user wrote it.
    pub fn from_json(text: &str) -> Result<Self, ConfigErrors> {
        if text.len() > limits::MAX_CONFIG_BYTES {
            return Err(one("", format!("the file holds more than {} bytes, the most a configuration may have", limits::MAX_CONFIG_BYTES)));
        }
        if !text.trim_start().starts_with('{') {
            return Err(one("", "expected a JSON object with `exports`, `sftp` and `metadata_table`"));
        }
        let value: Value = serde_json::from_str(text).map_err(|e| one("", e.to_string()))?;
        let too_big = limits::check_document(&value);
        if !too_big.is_empty() {
            return Err(ConfigErrors(
                too_big.into_iter().map(|(path, message)| ConfigError { path, message: limits::bound_message(message) }).collect(),
            ));
        }
        let legacy::Normalized { value, aliases, errors } = legacy::normalize(value);
        let mut raw: RawConfig = serde_path_to_error::deserialize(&value).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { check::translate(&aliases, &path) };
            one(path, e.into_inner().to_string())
        })?;
        raw.aliases = aliases;
        raw.seed_errors = errors;
        raw.normalized = value;
        Ok(raw)
    }

    /// The file in component form, as ferry reads it.
    pub fn normalized(&self) -> &Value {
        &self.normalized
    }

    /// Checks meaning and resolves secrets, in the environment it runs in.
    pub fn validate(&self, components: &dyn Components, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
        self.validate_with(components, env, Deployment::Here)
    }

    /// Checks meaning, and with [`Deployment::Elsewhere`] leaves out what only the deployment
    /// provides: secrets, mounted files, and the settings the seed deployment passes as
    /// environment variables. What it returns then holds placeholders and must not be run.
    pub fn validate_with(
        &self,
        components: &dyn Components,
        env: &dyn Fn(&str) -> Option<String>,
        deployment: Deployment,
    ) -> Result<Config, ConfigErrors> {
        let cx = Check::root(env, deployment, self.aliases.clone());
        for (path, message) in &self.seed_errors {
            cx.err(path, message.clone());
        }
        let (metadata_field, metadata_name) = match (&self.metadata_table, cx.env(METADATA_TABLE_ENV)) {
            (Some(t), _) => ("metadata_table".to_owned(), t.clone()),
            (None, Some(t)) => (format!("metadata_table ({METADATA_TABLE_ENV})"), t),
            (None, None) => ("metadata_table".to_owned(), DEFAULT_METADATA_TABLE.to_owned()),
        };
        let metadata_table = TableName::parse(&metadata_name).map_err(|m| cx.err(&metadata_field, m)).ok();
        let bigquery = self.validate_bigquery(&cx.at("bigquery"), metadata_table.as_ref());

        if self.exports.is_empty() {
            cx.err("exports", "expected at least one export");
        }
        let mut names = HashSet::new();
        let mut exports = Vec::new();
        for (i, x) in self.exports.iter().enumerate() {
            let at = cx.at(&format!("exports[{i}]"));
            if let Some(export) = validate_export(x, components, &at, &mut names) {
                exports.push(export);
            }
        }
        schedule::validate_schedules(&self.schedules, &names, &cx);
        for export in &mut exports {
            if let Some(zone) = schedule::date_zone(&self.schedules, &export.name, &cx) {
                export.date_zone = zone;
            }
        }
        let notifications =
            self.notifications.as_ref().map(|n| notify::validate_notifications(n, &cx.at("notifications"))).unwrap_or_default();
        let needs_job = self.exports.iter().any(|x| x.execution == Execution::Job);
        let cloud_run_job = job::validate(self.cloud_run_job.as_ref(), needs_job, &cx);
        let staged =
            exports.iter().find(|x| x.source.staged.is_some()).map(|x| format!("export {} (a {} source)", x.name, x.source.type_name));
        let staging = staging::validate(self.staging.as_ref(), staged.as_deref(), &cx);
        let parallel_exports = self.parallel_exports.unwrap_or(1);
        if !(1..=MAX_PARALLEL_EXPORTS).contains(&parallel_exports) {
            cx.err("parallel_exports", format!("expected 1 to {MAX_PARALLEL_EXPORTS}, found {parallel_exports}"));
        }
        if let Some(st) = staging.as_ref().filter(|st| parallel_exports as usize * st.parallel_objects > MAX_COPIES) {
            cx.err(
                "parallel_exports",
                format!(
                    "{parallel_exports} exports at once with staging.parallel_objects = {} copy up to {} files at once; keep the product at most {MAX_COPIES} (each copy holds up to 8 MiB in flight)",
                    st.parallel_objects,
                    parallel_exports as usize * st.parallel_objects
                ),
            );
        }
        if let Some(url) = &self.service_url {
            if !url.starts_with("https://") && !url.starts_with("http://") {
                cx.err("service_url", format!("expected the service's http(s) URL, found {}", limits::quote(url)));
            }
        }

        let errors = cx.take_errors();
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let (Some(metadata_table), Some(bigquery)) = (metadata_table, bigquery) else {
            unreachable!("every missing piece recorded an error");
        };
        Ok(Config {
            exports,
            metadata_table,
            bigquery,
            notifications,
            cloud_run_job,
            staging,
            metadata_table_default: self.metadata_table.is_none() && cx.env(METADATA_TABLE_ENV).is_none(),
            parallel_exports: parallel_exports as usize,
            service_url: self.service_url.clone(),
            warnings: cx.take_warnings(),
        })
    }

    fn validate_bigquery(&self, cx: &Check<'_>, metadata_table: Option<&TableName>) -> Option<BigQuerySpec> {
        let b = &self.bigquery;
        let project = b
            .project
            .clone()
            .or_else(|| cx.env("GOOGLE_CLOUD_PROJECT"))
            .or_else(|| metadata_table.and_then(|t| t.project.clone()))
            .or_else(|| cx.elsewhere().then(|| "<GOOGLE_CLOUD_PROJECT>".to_owned()));
        if project.is_none() {
            cx.err("project", "no project: set bigquery.project, GOOGLE_CLOUD_PROJECT, or write metadata_table as project.dataset.table");
        }
        let project = match project {
            // Before deployment the project may be a `<GOOGLE_CLOUD_PROJECT>` placeholder.
            Some(p) if !(crate::ident::is_project(&p) || cx.elsewhere() && p.starts_with('<')) => {
                let from = if b.project.is_some() { "" } else { " (from GOOGLE_CLOUD_PROJECT)" };
                cx.err(
                    "project",
                    format!(
                        "{}{from} is not a project id: expected lowercase letters, digits and '-', starting with a letter",
                        limits::quote(&p)
                    ),
                );
                None
            }
            other => other,
        };
        let endpoint = b.endpoint.clone().or_else(|| cx.env("FERRY_BIGQUERY_ENDPOINT")).unwrap_or_else(|| BIGQUERY_ENDPOINT.into());
        let endpoint_field = if b.endpoint.is_some() { "endpoint".to_owned() } else { "endpoint (FERRY_BIGQUERY_ENDPOINT)".to_owned() };
        check_google_endpoint(cx, &endpoint_field, &endpoint, b.auth);
        let auth = google_auth(cx, b.auth, b.token_env.as_deref());
        let page_size = b.page_size.unwrap_or(10_000);
        if !(1..=100_000).contains(&page_size) {
            cx.err("page_size", format!("expected 1 to 100000 rows, found {page_size}"));
        }
        let timeout = b.timeout_secs.unwrap_or(300);
        // At least 30 s: BigQuery holds a call open up to 10 s while a query runs.
        if !(30..=3600).contains(&timeout) {
            cx.err(
                "timeout_secs",
                format!("expected 30 to 3600 seconds (BigQuery holds a call open up to 10 s while a query runs), found {timeout}"),
            );
        }
        let query_deadline = b.query_deadline_secs.unwrap_or(1800);
        if !(10..=86_400).contains(&query_deadline) {
            cx.err("query_deadline_secs", format!("expected 10 to 86400 seconds, found {query_deadline}"));
        }
        let configured_storage = b.storage_endpoint.clone().or_else(|| cx.env("FERRY_BIGQUERY_STORAGE_ENDPOINT"));
        let storage_configured = configured_storage.is_some();
        let storage_endpoint = configured_storage.unwrap_or_else(|| BIGQUERY_STORAGE_ENDPOINT.into());
        let storage_field = if b.storage_endpoint.is_some() {
            "storage_endpoint".to_owned()
        } else {
            "storage_endpoint (FERRY_BIGQUERY_STORAGE_ENDPOINT)".to_owned()
        };
        // `auto` with an emulator's REST endpoint and no Storage Read endpoint: REST, since
        // the production Storage Read endpoint would not hold the emulator's tables.
        let storage_known = storage_configured || endpoint.trim_end_matches('/') == BIGQUERY_ENDPOINT;
        let read_api = match b.read_api {
            ReadApi::Auto if !storage_known => ReadApi::Rest,
            other => other,
        };
        if read_api != ReadApi::Rest {
            check_google_endpoint(cx, &storage_field, &storage_endpoint, b.auth);
        }
        let storage_streams = b.storage_streams.unwrap_or(2);
        if !(1..=MAX_STORAGE_STREAMS).contains(&storage_streams) {
            cx.err("storage_streams", format!("expected 1 to {MAX_STORAGE_STREAMS} streams, found {storage_streams}"));
        }
        Some(BigQuerySpec {
            project: project?,
            endpoint,
            auth,
            page_size,
            read_api,
            storage_endpoint,
            storage_streams: storage_streams as usize,
            timeout: std::time::Duration::from_secs(timeout),
            query_deadline: std::time::Duration::from_secs(query_deadline),
        })
    }
}

/// A Google API endpoint: an http(s) URL, and TLS whenever a token goes to it (see
/// [`Check::require_tls_url`]). `field` is named in the error.
pub(crate) fn check_google_endpoint(cx: &Check<'_>, field: &str, url: &str, auth: BigQueryAuthKind) {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        cx.err(field, format!("expected an http(s) URL, found {}", limits::quote(url)));
    } else if auth != BigQueryAuthKind::None {
        cx.require_tls_url(field, url, "the access token");
    }
}

/// The credentials of a Google API's `auth` (and `token_env`) setting, checked at `cx`.
pub(crate) fn google_auth(cx: &Check<'_>, kind: BigQueryAuthKind, token_env: Option<&str>) -> BigQueryAuth {
    match kind {
        BigQueryAuthKind::ApplicationDefault => BigQueryAuth::ApplicationDefault,
        BigQueryAuthKind::MetadataServer => BigQueryAuth::MetadataServer,
        BigQueryAuthKind::None => BigQueryAuth::None,
        BigQueryAuthKind::TokenEnv => match token_env {
            None => {
                cx.err("token_env", "auth is token_env: name the environment variable that holds the access token");
                BigQueryAuth::None
            }
            Some(var) => match cx.env(var) {
                Some(t) if !t.is_empty() => BigQueryAuth::Token(Secret::new(t)),
                _ if cx.elsewhere() => BigQueryAuth::None,
                _ => {
                    cx.err("token_env", format!("environment variable {var} is not set"));
                    BigQueryAuth::None
                }
            },
        },
    }
}

fn validate_export(x: &RawExport, components: &dyn Components, cx: &Check<'_>, names: &mut HashSet<String>) -> Option<ExportSpec> {
    if x.name.is_empty() || x.name.len() > 64 || !x.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        cx.err("name", format!("expected 1 to 64 letters, digits, '_' or '-', found {:?}", x.name));
    } else if !names.insert(x.name.clone()) {
        cx.err("name", format!("duplicate export name {:?}", x.name));
    }
    let cursor = match &x.timestamp_column {
        Some(c) if !is_column(c) => {
            cx.err("timestamp_column", format!("{c:?} is not a valid column name (letters, digits and '_', not starting with a digit)"));
            None
        }
        other => other.clone(),
    };
    if x.lookback.is_some() && !x.incremental {
        cx.err("lookback", "lookback applies to incremental exports only");
    }
    if let Some(l) = x.lookback.filter(|l| *l > MAX_LOOKBACK) {
        cx.err("lookback", format!("expected at most {MAX_LOOKBACK} (a year in seconds), found {l}"));
    }
    for (field, set) in [
        ("settle", x.settle.is_some()),
        ("cursor_time_zone", x.cursor_time_zone.is_some()),
        ("partial_days", x.partial_days),
        ("null_cursor", x.null_cursor.is_some()),
    ] {
        if set && !x.incremental {
            cx.err(field, format!("{field} applies to incremental exports only"));
        }
    }
    if let Some(NullCursor::ArrivalColumn(a)) = &x.null_cursor {
        if !is_column(a) {
            cx.at("null_cursor")
                .err("arrival_column", format!("{a:?} is not a valid column name (letters, digits and '_', not starting with a digit)"));
        } else if x.timestamp_column.as_deref() == Some(a.as_str()) {
            cx.at("null_cursor").err("arrival_column", format!("{a:?} is the timestamp_column itself; name another TIMESTAMP column"));
        }
    }
    if let Some(s) = x.settle.filter(|s| *s > MAX_SETTLE_SECONDS) {
        cx.err("settle", format!("expected at most {MAX_SETTLE_SECONDS} seconds (a day), found {s}"));
    }
    let cursor_zone = match x.cursor_time_zone.as_deref() {
        None => chrono_tz::Tz::UTC,
        Some(z) => z.parse().unwrap_or_else(|_| {
            cx.err("cursor_time_zone", format!("expected an IANA time zone such as \"Europe/Berlin\" or \"Etc/UTC\", found {z:?}"));
            chrono_tz::Tz::UTC
        }),
    };
    if x.incremental && x.timestamp_column.is_none() {
        cx.err("timestamp_column", "incremental exports need a timestamp_column (TIMESTAMP, DATETIME, DATE or INT64)");
    }
    let source = component(x.source.as_ref(), "source", &components.source_types(), cx, |t, v, c| components.source(t, v, c));
    let destination =
        component(x.destination.as_ref(), "destination", &components.destination_types(), cx, |t, v, c| components.destination(t, v, c));
    if let (Some(Destination { shape: Shape::File(file), .. }), Some(src)) = (&destination, &source) {
        let at = cx.at("destination").at("file");
        match &src.staged {
            None if file.object_names => at.err("name", "missing: the file name template, e.g. \"EXPORT_{datetime}.csv\""),
            None => {}
            Some(staged) => {
                for field in &file.encoding_fields {
                    at.err(
                        field,
                        format!(
                            "the {} source writes the files itself ({}): set format, compression, delimiter and header in the source; \
                             its files are not re-encoded or split",
                            src.type_name, staged.describe
                        ),
                    );
                }
                if !file.object_names && !file.template.has_part() {
                    at.err(
                        "name",
                        format!(
                            "{} has no {{part}}: a staged export may write several files; leave name out to keep the object names",
                            limits::quote(file.template.as_str())
                        ),
                    );
                }
            }
        }
    }
    match (&destination, x.incremental) {
        (Some(Destination { shape: Shape::Table(TableMode::Replace), .. }), true) => cx.at("destination").err(
            "mode",
            "replace makes each run's rows the whole table, and an incremental export reads only the new rows: \
             use mode append, or make the export non-incremental",
        ),
        (Some(Destination { shape: Shape::Table(TableMode::Append), .. }), false) => cx.at("destination").warn(
            "mode",
            "append to a non-incremental export adds every row again on each run; set incremental and timestamp_column \
             to add only new rows, or use mode replace",
        ),
        (Some(Destination { shape: Shape::Table(TableMode::Hourly(_)), .. }), false) => cx
            .at("destination")
            .err("mode", "hourly loads each complete hour of the timestamp_column once: set incremental and timestamp_column"),
        (Some(Destination { shape: Shape::Table(TableMode::Append | TableMode::Hourly(_)), .. }), true)
            if x.lookback.is_some_and(|l| l > 0) =>
        {
            cx.err(
                "lookback",
                "a table destination in mode append or hourly would take the rows lookback reads again a second time; \
                 leave lookback out (a table load is never partial, so nothing needs reading again)",
            )
        }
        _ => {}
    }
    if let Some(Destination { shape: Shape::File(file), .. }) = &destination {
        let at = cx.at("destination").at("file");
        file.check_repeating_names(x.incremental, &at);
        let longest = file.template.longest(&x.name);
        if longest > limits::MAX_NAME_BYTES {
            at.err(
                "name",
                format!(
                    "{} can render names of {longest} bytes; servers accept at most {} bytes per name",
                    limits::quote(file.template.as_str()),
                    limits::MAX_NAME_BYTES
                ),
            );
        }
    }
    Some(ExportSpec {
        name: x.name.clone(),
        source: source?,
        destination: destination?,
        cursor,
        incremental: x.incremental,
        enabled: x.enabled,
        lookback: x.lookback.unwrap_or(0),
        settle: x.settle.unwrap_or(DEFAULT_SETTLE_SECONDS),
        cursor_zone,
        partial_days: x.partial_days,
        null_cursor: x.null_cursor.clone().unwrap_or_default(),
        date_zone: chrono_tz::Tz::UTC,
        execution: x.execution,
    })
}

/// Reads a component's `type` and hands the rest of its settings to the crate of that type.
fn component<T>(
    value: Option<&Value>,
    field: &str,
    known: &[&str],
    cx: &Check<'_>,
    validate: impl Fn(&str, &Value, &Check<'_>) -> Option<Option<T>>,
) -> Option<T> {
    let Some(value) = value else {
        cx.err(field, format!("missing: set {field} to an object with a `type` ({})", known.join(", ")));
        return None;
    };
    let at = cx.at(field);
    let Some(map) = value.as_object() else {
        at.err("", format!("expected an object with a `type` ({}), found {value}", known.join(", ")));
        return None;
    };
    let Some(type_name) = map.get("type").and_then(Value::as_str) else {
        at.err("type", format!("missing: expected one of {}", known.join(", ")));
        return None;
    };
    let mut settings = map.clone();
    settings.remove("type");
    match validate(type_name, &Value::Object(settings), &at) {
        Some(valid) => valid,
        None => {
            at.err("type", format!("unknown {field} type {type_name:?}; expected one of {}", known.join(", ")));
            None
        }
    }
}

// ------------------------------------------------------------------ validated

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub exports: Vec<ExportSpec>,
    pub metadata_table: TableName,
    pub bigquery: BigQuerySpec,
    pub notifications: Notifications,
    /// The Cloud Run Job for exports with `execution: job`; `None` when no export has it and
    /// the file has no `cloud_run_job` section.
    pub cloud_run_job: Option<CloudRunJob>,
    /// The staging bucket; `None` when no export is staged and the file has no `staging`.
    pub staging: Option<StagingSpec>,
    /// Whether `metadata_table` is ferry's default ([`DEFAULT_METADATA_TABLE`]): only then is
    /// its dataset created when missing (a mistyped dataset name fails instead of starting an
    /// empty history).
    pub metadata_table_default: bool,
    /// Exports a run delivers at once.
    pub parallel_exports: usize,
    /// The service's URL (`service_url`, seed form `cloud_run_url`).
    pub service_url: Option<String>,
    /// Valid but risky settings the user allowed (`allow_repeating_names`), with their paths.
    pub warnings: Vec<ConfigError>,
}

impl Config {
    /// Reads and parses a file without validating its meaning.
    pub fn load_raw(path: &std::path::Path) -> Result<RawConfig, ConfigErrors> {
        use std::io::Read;
        let cannot = |e: std::io::Error| one("", format!("cannot read config file {}: {e}", path.display()));
        let mut bytes = Vec::new();
        // One byte more than the limit is enough to tell that the file is too large.
        std::fs::File::open(path).map_err(cannot)?.take(limits::MAX_CONFIG_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(cannot)?;
        if bytes.len() > limits::MAX_CONFIG_BYTES {
            return Err(one(
                "",
                format!("{} holds more than {} bytes, the most a configuration may have", path.display(), limits::MAX_CONFIG_BYTES),
            ));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            one("", format!("{} is not UTF-8 text (invalid byte at offset {})", path.display(), e.utf8_error().valid_up_to()))
        })?;
        RawConfig::from_json(&text)
    }

    /// Every secret the configuration resolved, for redaction of text that leaves ferry.
    pub fn secrets(&self) -> Vec<&Secret> {
        let mut v = Vec::new();
        for x in &self.exports {
            v.extend(x.source.secrets.iter());
            v.extend(x.destination.component.secrets.iter());
        }
        if let BigQueryAuth::Token(t) = &self.bigquery.auth {
            v.push(t);
        }
        if let Some(CloudRunJob { auth: BigQueryAuth::Token(t), .. }) = &self.cloud_run_job {
            v.push(t);
        }
        if let Some(StagingSpec { auth: BigQueryAuth::Token(t), .. }) = &self.staging {
            v.push(t);
        }
        if let Some(e) = &self.notifications.email {
            v.extend(e.password.as_ref());
        }
        if let Some(s) = &self.notifications.slack {
            v.push(&s.webhook_url);
        }
        v
    }

    /// `text` with every secret of this configuration replaced by `**REDACTED**`.
    pub fn redact(&self, text: &str) -> String {
        self.secrets().iter().fold(text.to_owned(), |t, s| s.redact_in(&t))
    }
}

/// A validated export.
#[derive(Debug, Clone)]
pub struct ExportSpec {
    pub name: String,
    pub source: Component,
    pub destination: Destination,
    pub cursor: Option<String>,
    pub incremental: bool,
    pub enabled: bool,
    /// How far behind the watermark to re-read, in the cursor's unit (see
    /// [`RawExport::lookback`]); 0 for none.
    pub lookback: u64,
    /// Seconds a row may take to become visible (see [`RawExport::settle`]).
    pub settle: u64,
    /// The zone DATETIME and DATE cursor values are in.
    pub cursor_zone: chrono_tz::Tz,
    /// DATE cursors: deliver the incomplete current day too.
    pub partial_days: bool,
    /// What an incremental run does about rows whose cursor is NULL.
    pub null_cursor: NullCursor,
    /// The time zone of the schedules that run this export (UTC without one): a run's default
    /// date (`{date}` in a query) is today there.
    pub date_zone: chrono_tz::Tz,
    /// Where `ferry serve` runs it.
    pub execution: Execution,
}

impl ExportSpec {
    /// The file settings of a file destination.
    pub fn file(&self) -> Option<&FileSettings> {
        match &self.destination.shape {
            Shape::File(f) => Some(f),
            Shape::Table(_) => None,
        }
    }
}

/// BigQuery credentials.
#[derive(Debug, Clone)]
pub enum BigQueryAuth {
    /// Application Default Credentials (see [`BigQueryAuthKind::ApplicationDefault`]).
    ApplicationDefault,
    MetadataServer,
    Token(Secret),
    None,
}

/// Validated BigQuery settings.
#[derive(Debug, Clone)]
pub struct BigQuerySpec {
    pub project: String,
    /// How table sources are read: never `Auto` with no Storage Read endpoint to use.
    pub read_api: ReadApi,
    /// The Storage Read API endpoint.
    pub storage_endpoint: String,
    /// Storage Read streams read at once.
    pub storage_streams: usize,
    pub endpoint: String,
    pub auth: BigQueryAuth,
    pub page_size: u32,
    /// How long one request may take.
    pub timeout: std::time::Duration,
    /// How long a query may take to complete.
    pub query_deadline: std::time::Duration,
}
