//! Configuration: the JSON file users write, checked in two phases.
//!
//! 1. [`RawConfig::from_json`]: syntax and shape. Unknown fields are errors; every error names
//!    the field path (`exports[1].timestamp_column`).
//! 2. [`RawConfig::validate`]: meaning, without any network call: identifiers, templates,
//!    which settings go together, and secrets resolved from the environment or files. All
//!    problems are reported at once.
//!
//! Secrets never live in the file: the file names environment variables or files that hold
//! them, and resolved values are [`Secret`]s.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use crate::ident::{is_column, TableName};
use crate::template::FileTemplate;
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
    ConfigErrors(vec![ConfigError { path: path.into(), message: message.into() }])
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

/// The configuration file as written. The seed format (exports, sftp, metadata_table) loads
/// unchanged; everything else is optional with a safe default.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "ferry configuration")]
pub struct RawConfig {
    /// The exports this file defines.
    pub exports: Vec<RawExport>,
    /// The partner's SFTP server.
    pub sftp: RawSftp,
    /// `project.dataset.table` (or `dataset.table`) of the run history and watermarks.
    pub metadata_table: String,
    /// Where queries run.
    #[serde(default)]
    pub bigquery: RawBigQuery,
    /// Who hears about runs.
    #[serde(default)]
    pub notifications: Option<RawNotifications>,
    /// When Cloud Scheduler runs this config. Read by `deploy/scheduler.sh`, which makes one
    /// job per entry; a run ignores it.
    #[serde(default)]
    pub schedules: Vec<RawSchedule>,
}

/// One Cloud Scheduler job for this config.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    /// Job name suffix: lowercase letters, digits and `-` (the job is `<service>-<config>-<name>`).
    pub name: String,
    /// Five-field cron expression, e.g. `0 2 * * *`.
    pub cron: String,
    /// IANA time zone the cron expression is read in; `Etc/UTC` by default.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// Run only these exports; all enabled exports when absent.
    #[serde(default)]
    pub exports: Option<Vec<String>>,
    /// Ignore the watermark and deliver everything.
    #[serde(default)]
    pub full: bool,
}

/// One export.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawExport {
    /// Unique name: letters, digits, `_` and `-`.
    pub name: String,
    /// `dataset.table` or `project.dataset.table`; or use `query`.
    #[serde(default)]
    pub source_table: Option<String>,
    /// A SELECT whose result is exported; `{date}` becomes the `@run_date` DATE parameter.
    #[serde(default)]
    pub query: Option<String>,
    /// File name template: `{date}`, `{datetime}`, `{name}`, and `{part}` for split exports.
    pub destination_filename: String,
    /// Cursor column for incremental windows (TIMESTAMP, DATETIME, DATE or INT64).
    #[serde(default)]
    pub timestamp_column: Option<String>,
    /// Deliver only rows newer than the last delivered watermark.
    #[serde(default)]
    pub incremental: bool,
    /// Columns to export, in order; all columns when absent.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Output format; only `CSV` for now.
    #[serde(default)]
    pub format: Format,
    /// `NONE` or `GZIP`.
    #[serde(default)]
    pub compression: Compression,
    /// Field delimiter, one ASCII character; `,` by default.
    #[serde(default)]
    pub delimiter: Option<String>,
    /// Write a header row; true by default.
    #[serde(default = "yes")]
    pub header: bool,
    /// Skip this export when false.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Re-read this far behind the watermark to catch rows that arrive late: seconds for
    /// TIMESTAMP and DATETIME cursors, whole days (rounded up) for DATE, units for INT64. Rows
    /// in the overlap are delivered again.
    #[serde(default)]
    pub lookback: Option<u64>,
    /// Start a new file after this many rows. Needs `{part}` in the file name.
    #[serde(default)]
    pub max_rows_per_file: Option<u64>,
    /// Start a new file before one would grow past this many bytes (of CSV before compression,
    /// so a GZIP file stays well below it). Needs `{part}` in the file name.
    #[serde(default)]
    pub max_bytes_per_file: Option<u64>,
}

/// The JSON Schema of the configuration file, generated from [`RawConfig`] and its doc
/// comments; `configs/ferry.schema.json` is this text.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(RawConfig);
    serde_json::to_string_pretty(&schema).expect("a JSON Schema serializes") + "\n"
}

fn yes() -> bool {
    true
}

/// File format.
#[derive(Debug, Clone, Copy, Default, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum Format {
    /// RFC 4180 CSV.
    #[default]
    Csv,
}

/// Compression of the delivered file.
#[derive(Debug, Clone, Copy, Default, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum Compression {
    /// Plain bytes.
    #[default]
    None,
    /// gzip; `.gz` is not appended automatically, write it in the template.
    Gzip,
}

/// What to do when the final file name already exists on the server.
#[derive(Debug, Clone, Copy, Default, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnExisting {
    /// Fail the export and leave the existing file alone.
    #[default]
    Fail,
    /// Replace it atomically.
    Overwrite,
}

/// SFTP settings. Host, user and password may come from `SFTP_HOST`, `SFTP_USERNAME`,
/// `SFTP_PASSWORD` as in the seed deployment.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSftp {
    /// Target directory on the server.
    pub path: String,
    /// Port; 22 by default.
    #[serde(default = "port22")]
    pub port: u16,
    /// Host; `SFTP_HOST` when absent.
    #[serde(default)]
    pub host: Option<String>,
    /// Login; `SFTP_USERNAME` when absent.
    #[serde(default)]
    pub username: Option<String>,
    /// Environment variable holding the password; `SFTP_PASSWORD` by default.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password (a mounted secret).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// OpenSSH private key file for key authentication.
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    /// Environment variable holding the key's passphrase.
    #[serde(default)]
    pub private_key_passphrase_env: Option<String>,
    /// OpenSSH known_hosts file listing the server's host keys.
    #[serde(default)]
    pub known_hosts_file: Option<PathBuf>,
    /// Pinned host key fingerprint, `SHA256:…` as `ssh-keygen -l -E sha256` prints it.
    #[serde(default)]
    pub host_key_fingerprint: Option<String>,
    /// `fail` (default) or `overwrite` when the final name exists.
    #[serde(default)]
    pub on_existing: OnExisting,
    /// Connect and per-request timeout in seconds; 30 by default.
    #[serde(default = "secs30")]
    pub timeout_secs: u64,
}

fn port22() -> u16 {
    22
}

fn secs30() -> u64 {
    30
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
    /// `metadata_server` (default: Cloud Run's service account), `token_env`, or `none`
    /// (emulators only).
    #[serde(default)]
    pub auth: BigQueryAuthKind,
    /// With `auth: token_env`: the variable holding an OAuth access token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Rows per result page; 10000 by default. ferry holds about two pages at a time (one being
    /// written, the next being fetched), so this bounds its memory: about 40 MiB at the default.
    #[serde(default)]
    pub page_size: Option<u32>,
}

/// How BigQuery requests are authorised.
#[derive(Debug, Clone, Copy, Default, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BigQueryAuthKind {
    /// The metadata server's token for the attached service account.
    #[default]
    MetadataServer,
    /// An access token from an environment variable.
    TokenEnv,
    /// No credentials: only for a local emulator.
    None,
}

/// Notification channels.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNotifications {
    /// Email over SMTP.
    #[serde(default)]
    pub email: Option<RawEmail>,
    /// Slack incoming webhook.
    #[serde(default)]
    pub slack: Option<RawSlack>,
}

/// When a channel sends.
#[derive(Debug, Clone, Copy, Default, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// Only after a run in which every export succeeded.
    Success,
    /// Only after a run with a failed export.
    Failure,
    /// After every run.
    #[default]
    Always,
}

/// SMTP transport security.
#[derive(Debug, Clone, Copy, Default, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// STARTTLS, required.
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Implicit,
    /// No TLS: local relays only.
    None,
}

/// Email settings.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawEmail {
    /// SMTP server.
    pub smtp_host: String,
    /// SMTP port; 587 by default.
    #[serde(default = "port587")]
    pub smtp_port: u16,
    /// `starttls` (default), `implicit` or `none`.
    #[serde(default)]
    pub tls: SmtpTls,
    /// SMTP login; no authentication when absent.
    #[serde(default)]
    pub username: Option<String>,
    /// Variable holding the SMTP password; `EMAIL_PASSWORD` by default.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the SMTP password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Extra PEM CA certificate to trust (private relays, tests).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Sender address.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// `success`, `failure` or `always` (default).
    #[serde(default)]
    pub when: When,
}

fn port587() -> u16 {
    587
}

/// Slack settings.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSlack {
    /// Variable holding the webhook URL; `SLACK_WEBHOOK_URL` by default.
    #[serde(default)]
    pub webhook_url_env: Option<String>,
    /// File holding the webhook URL.
    #[serde(default)]
    pub webhook_url_file: Option<PathBuf>,
    /// `success`, `failure` or `always` (default).
    #[serde(default)]
    pub when: When,
}

impl RawConfig {
    /// Parses the JSON text. Errors name the field path and line.
    pub fn from_json(text: &str) -> Result<Self, ConfigErrors> {
        if !text.trim_start().starts_with('{') {
            return Err(one("", "expected a JSON object with `exports`, `sftp` and `metadata_table`"));
        }
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let path = if path == "." { String::new() } else { path };
            one(path, inner.to_string())
        })
    }

    /// Checks meaning and resolves secrets. `env` looks up environment variables.
    pub fn validate(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
        self.validate_with(env, Deployment::Here)
    }

    /// Checks meaning, and with [`Deployment::Elsewhere`] leaves out what only the deployment
    /// provides: secrets, mounted files, and the settings the seed deployment passes as
    /// environment variables. What it returns then holds placeholders and must not be run.
    pub fn validate_with(&self, env: &dyn Fn(&str) -> Option<String>, deployment: Deployment) -> Result<Config, ConfigErrors> {
        let elsewhere = deployment == Deployment::Elsewhere;
        let placeholder = |var: &str| elsewhere.then(|| format!("<{var}>"));
        let mut errs = Vec::new();
        let mut err = |path: String, message: String| errs.push(ConfigError { path, message });

        let metadata_table = match TableName::parse(&self.metadata_table) {
            Ok(t) => Some(t),
            Err(m) => {
                err("metadata_table".into(), m);
                None
            }
        };

        // BigQuery
        let project = self
            .bigquery
            .project
            .clone()
            .or_else(|| env("GOOGLE_CLOUD_PROJECT"))
            .or_else(|| metadata_table.as_ref().and_then(|t| t.project.clone()))
            .or_else(|| placeholder("GOOGLE_CLOUD_PROJECT"));
        if project.is_none() {
            err(
                "bigquery.project".into(),
                "no project: set bigquery.project, GOOGLE_CLOUD_PROJECT, or write metadata_table as project.dataset.table".into(),
            );
        }
        let endpoint = self
            .bigquery
            .endpoint
            .clone()
            .or_else(|| env("FERRY_BIGQUERY_ENDPOINT"))
            .unwrap_or_else(|| "https://bigquery.googleapis.com".into());
        if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
            err("bigquery.endpoint".into(), format!("expected an http(s) URL, found {endpoint:?}"));
        }
        let bq_auth = match self.bigquery.auth {
            BigQueryAuthKind::MetadataServer => BigQueryAuth::MetadataServer,
            BigQueryAuthKind::None => BigQueryAuth::None,
            BigQueryAuthKind::TokenEnv => match self.bigquery.token_env.as_deref() {
                None => {
                    err("bigquery.token_env".into(), "auth is token_env: name the environment variable that holds the access token".into());
                    BigQueryAuth::None
                }
                Some(var) => match env(var) {
                    Some(t) if !t.is_empty() => BigQueryAuth::Token(Secret::new(t)),
                    _ if elsewhere => BigQueryAuth::None,
                    _ => {
                        err("bigquery.token_env".into(), format!("environment variable {var} is not set"));
                        BigQueryAuth::None
                    }
                },
            },
        };
        let page_size = self.bigquery.page_size.unwrap_or(10_000);
        if !(1..=100_000).contains(&page_size) {
            err("bigquery.page_size".into(), format!("expected 1 to 100000 rows, found {page_size}"));
        }

        // Exports
        if self.exports.is_empty() {
            err("exports".into(), "expected at least one export".into());
        }
        let mut names = HashSet::new();
        let mut exports = Vec::new();
        for (i, x) in self.exports.iter().enumerate() {
            let at = |f: &str| format!("exports[{i}].{f}");
            if x.name.is_empty() || x.name.len() > 64 || !x.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                err(at("name"), format!("expected 1 to 64 letters, digits, '_' or '-', found {:?}", x.name));
            } else if !names.insert(x.name.clone()) {
                err(at("name"), format!("duplicate export name {:?}", x.name));
            }
            let source = match (&x.source_table, &x.query) {
                (Some(_), Some(_)) => {
                    err(at("query"), "set either source_table or query, not both".into());
                    None
                }
                (None, None) => {
                    err(at("source_table"), "missing: set source_table (dataset.table) or query".into());
                    None
                }
                (Some(t), None) => match TableName::parse(t) {
                    Ok(t) => Some(SourceSpec::Table(t)),
                    Err(m) => {
                        err(at("source_table"), m);
                        None
                    }
                },
                (None, Some(q)) => {
                    let trimmed = q.trim().trim_end_matches(';').trim();
                    if trimmed.is_empty() {
                        err(at("query"), "the query is empty".into());
                        None
                    } else if trimmed.contains(';') {
                        err(at("query"), "expected a single SELECT statement, found ';'".into());
                        None
                    } else {
                        Some(SourceSpec::Query(trimmed.replace("'{date}'", "@run_date").replace("{date}", "@run_date")))
                    }
                }
            };
            let cursor = match &x.timestamp_column {
                Some(c) if !is_column(c) => {
                    err(
                        at("timestamp_column"),
                        format!("{c:?} is not a valid column name (letters, digits and '_', not starting with a digit)"),
                    );
                    None
                }
                Some(c) => Some(c.clone()),
                None => None,
            };
            if x.lookback.is_some() && !x.incremental {
                err(at("lookback"), "lookback applies to incremental exports only".into());
            }
            if x.lookback.is_some_and(|l| l > 366 * 86_400) {
                err(at("lookback"), format!("expected at most 31622400 (a year in seconds), found {}", x.lookback.unwrap_or_default()));
            }
            if x.incremental && x.timestamp_column.is_none() {
                err(at("timestamp_column"), "incremental exports need a timestamp_column (TIMESTAMP, DATETIME, DATE or INT64)".into());
            }
            let mut columns = Vec::new();
            if let Some(cols) = &x.columns {
                if cols.is_empty() {
                    err(at("columns"), "expected at least one column, or leave columns out to export all".into());
                }
                let mut seen = HashSet::new();
                for (j, c) in cols.iter().enumerate() {
                    if !is_column(c) {
                        err(
                            format!("exports[{i}].columns[{j}]"),
                            format!("{c:?} is not a valid column name (letters, digits and '_', not starting with a digit)"),
                        );
                    } else if !seen.insert(c.to_ascii_lowercase()) {
                        err(format!("exports[{i}].columns[{j}]"), format!("duplicate column {c:?}"));
                    } else {
                        columns.push(c.clone());
                    }
                }
            }
            let template = match FileTemplate::parse(&x.destination_filename) {
                Ok(t) => Some(t),
                Err(m) => {
                    err(at("destination_filename"), m);
                    None
                }
            };
            let delimiter = match x.delimiter.as_deref() {
                None => b',',
                Some(d) if d.len() == 1 && d.is_ascii() && !matches!(d, "\"" | "\r" | "\n") => d.as_bytes()[0],
                Some("\\t") => b'\t',
                Some(d) => {
                    err(at("delimiter"), format!("expected one ASCII character other than a quote or line break, found {d:?}"));
                    b','
                }
            };
            if x.max_rows_per_file == Some(0) {
                err(at("max_rows_per_file"), "expected a number of rows of at least 1, found 0".into());
            }
            if let Some(b) = x.max_bytes_per_file.filter(|b| *b < MIN_FILE_BYTES) {
                err(at("max_bytes_per_file"), format!("expected at least {MIN_FILE_BYTES} bytes, found {b}"));
            }
            let split = Split { max_rows: x.max_rows_per_file, max_bytes: x.max_bytes_per_file };
            if let Some(t) = template.as_ref().filter(|t| split.is_split() && !t.has_part()) {
                let field = if x.max_rows_per_file.is_some() { "max_rows_per_file" } else { "max_bytes_per_file" };
                err(
                    at("destination_filename"),
                    format!(
                        "{:?} has no {{part}} placeholder, which {field} needs to name each file, e.g. \"{}\"",
                        t.as_str(),
                        with_part(t.as_str())
                    ),
                );
            }
            if let (Some(source), Some(template)) = (source, template) {
                exports.push(ExportSpec {
                    name: x.name.clone(),
                    source,
                    columns,
                    cursor,
                    incremental: x.incremental,
                    template,
                    compression: x.compression,
                    delimiter,
                    header: x.header,
                    enabled: x.enabled,
                    lookback: x.lookback.unwrap_or(0),
                    split,
                });
            }
        }

        validate_schedules(&self.schedules, &names, &mut err);

        // SFTP
        let s = &self.sftp;
        let host = s.host.clone().or_else(|| env("SFTP_HOST")).filter(|h| !h.is_empty()).or_else(|| placeholder("SFTP_HOST"));
        if host.is_none() {
            err("sftp.host".into(), "missing: set sftp.host or the SFTP_HOST environment variable".into());
        }
        let username =
            s.username.clone().or_else(|| env("SFTP_USERNAME")).filter(|h| !h.is_empty()).or_else(|| placeholder("SFTP_USERNAME"));
        if username.is_none() {
            err("sftp.username".into(), "missing: set sftp.username or the SFTP_USERNAME environment variable".into());
        }
        if s.path.is_empty() || s.path.contains('\0') {
            err("sftp.path".into(), "expected the target directory on the server, e.g. \"/upload\"".into());
        }
        if s.port == 0 {
            err("sftp.port".into(), "expected a port from 1 to 65535".into());
        }
        if s.timeout_secs == 0 || s.timeout_secs > 3600 {
            err("sftp.timeout_secs".into(), format!("expected 1 to 3600 seconds, found {}", s.timeout_secs));
        }
        let auth = if let Some(key) = &s.private_key_file {
            let passphrase = match &s.private_key_passphrase_env {
                Some(var) => match env(var) {
                    Some(p) => Some(Secret::new(p)),
                    None if elsewhere => None,
                    None => {
                        err("sftp.private_key_passphrase_env".into(), format!("environment variable {var} is not set"));
                        None
                    }
                },
                None => None,
            };
            if !elsewhere && !key.exists() {
                err("sftp.private_key_file".into(), format!("file {} does not exist", key.display()));
            }
            Some(SftpAuth::PrivateKey { path: key.clone(), passphrase })
        } else {
            let no_credentials = s.password_env.is_none() && s.password_file.is_none();
            let mut secret_err = |path: String, message: String| {
                let hint = if no_credentials { " (or set sftp.password_file or sftp.private_key_file)" } else { "" };
                err(path, format!("no credentials: {message}{hint}"))
            };
            resolve_secret(
                SecretField {
                    env_field: "sftp.password_env",
                    var: s.password_env.as_deref(),
                    default_var: "SFTP_PASSWORD",
                    file_field: "sftp.password_file",
                    file: s.password_file.as_ref(),
                },
                env,
                deployment,
                &mut secret_err,
            )
            .map(SftpAuth::Password)
        };
        // As the seed deployment passes credentials, host-key trust may come from the
        // environment (a mounted secret): SFTP_KNOWN_HOSTS (a file) or SFTP_HOST_KEY_FINGERPRINT.
        let known_hosts_file = s.known_hosts_file.clone().or_else(|| {
            if s.host_key_fingerprint.is_none() {
                env("SFTP_KNOWN_HOSTS").map(PathBuf::from)
            } else {
                None
            }
        });
        let fingerprint =
            s.host_key_fingerprint.clone().or_else(|| if known_hosts_file.is_none() { env("SFTP_HOST_KEY_FINGERPRINT") } else { None });
        let host_key = match (&known_hosts_file, &fingerprint) {
            (Some(_), Some(_)) => {
                err("sftp.host_key_fingerprint".into(), "set either known_hosts_file or host_key_fingerprint, not both".into());
                None
            }
            (None, None) if elsewhere => Some(HostKey::Fingerprint("<SFTP_HOST_KEY_FINGERPRINT>".into())),
            (None, None) => {
                err(
                    "sftp.known_hosts_file".into(),
                    "missing: ferry never trusts an unknown host key; set known_hosts_file or host_key_fingerprint (SHA256:…), or SFTP_KNOWN_HOSTS / SFTP_HOST_KEY_FINGERPRINT".into(),
                );
                None
            }
            (Some(f), None) => {
                if !elsewhere && !f.exists() {
                    err("sftp.known_hosts_file".into(), format!("file {} does not exist", f.display()));
                }
                Some(HostKey::KnownHosts(f.clone()))
            }
            (None, Some(fp)) => {
                let body = fp.strip_prefix("SHA256:").unwrap_or("");
                if body.len() != 43 || !body.chars().all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/') {
                    err(
                        "sftp.host_key_fingerprint".into(),
                        format!("expected SHA256: followed by 43 base64 characters (ssh-keygen -l -E sha256), found {fp:?}"),
                    );
                }
                Some(HostKey::Fingerprint(fp.clone()))
            }
        };

        let notifications = self.notifications.as_ref().map(|n| validate_notifications(n, env, deployment, &mut err)).unwrap_or_default();

        if !errs.is_empty() {
            return Err(ConfigErrors(errs));
        }
        let (Some(metadata_table), Some(project), Some(host), Some(username), Some(auth), Some(host_key)) =
            (metadata_table, project, host, username, auth, host_key)
        else {
            unreachable!("every missing piece recorded an error");
        };
        Ok(Config {
            exports,
            sftp: SftpSpec {
                host,
                port: s.port,
                username,
                auth,
                host_key,
                path: s.path.clone(),
                on_existing: s.on_existing,
                timeout_secs: s.timeout_secs,
            },
            metadata_table,
            bigquery: BigQuerySpec { project, endpoint, auth: bq_auth, page_size },
            notifications,
        })
    }
}

fn validate_schedules(schedules: &[RawSchedule], exports: &HashSet<String>, err: &mut dyn FnMut(String, String)) {
    let mut seen = HashSet::new();
    for (i, sc) in schedules.iter().enumerate() {
        let at = |f: &str| format!("schedules[{i}].{f}");
        let name_ok = (1..=40).contains(&sc.name.len())
            && sc.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !sc.name.starts_with('-')
            && !sc.name.ends_with('-');
        if !name_ok {
            err(at("name"), format!("expected 1 to 40 lowercase letters, digits or '-' (not first or last), found {:?}", sc.name));
        } else if !seen.insert(sc.name.as_str()) {
            err(at("name"), format!("duplicate schedule name {:?}", sc.name));
        }
        let fields: Vec<&str> = sc.cron.split_whitespace().collect();
        if fields.len() != 5 || !fields.iter().all(|f| f.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | '/' | ',' | '-'))) {
            err(
                at("cron"),
                format!("expected five cron fields (minute hour day-of-month month day-of-week), e.g. \"0 2 * * *\", found {:?}", sc.cron),
            );
        }
        if let Some(tz) = &sc.time_zone {
            let ok = !tz.is_empty()
                && tz.split('/').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+')));
            if !ok {
                err(at("time_zone"), format!("expected an IANA time zone such as \"Europe/Berlin\" or \"Etc/UTC\", found {tz:?}"));
            }
        }
        if let Some(names) = &sc.exports {
            if names.is_empty() {
                err(at("exports"), "expected at least one export name, or leave exports out to run all".into());
            }
            for (j, n) in names.iter().enumerate() {
                if !exports.contains(n) {
                    err(format!("schedules[{i}].exports[{j}]"), format!("no export is named {n:?}"));
                }
            }
        }
    }
}

/// Where a secret may come from: a file, else an environment variable.
struct SecretField<'a> {
    env_field: &'a str,
    var: Option<&'a str>,
    default_var: &'a str,
    file_field: &'a str,
    file: Option<&'a PathBuf>,
}

fn resolve_secret(
    field: SecretField<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    deployment: Deployment,
    err: &mut dyn FnMut(String, String),
) -> Option<Secret> {
    let SecretField { env_field: path_env, var, default_var, file_field: path_file, file } = field;
    if deployment == Deployment::Elsewhere {
        return Some(Secret::new(""));
    }
    if let Some(f) = file {
        return match std::fs::read_to_string(f) {
            Ok(v) => Some(Secret::new(v.trim_end_matches(['\r', '\n']))),
            Err(e) => {
                err(path_file.into(), format!("cannot read {}: {e}", f.display()));
                None
            }
        };
    }
    let var = var.unwrap_or(default_var);
    match env(var) {
        Some(v) if !v.is_empty() => Some(Secret::new(v)),
        _ => {
            err(path_env.into(), format!("environment variable {var} is not set"));
            None
        }
    }
}

fn is_email(s: &str) -> bool {
    let addr = match (s.rfind('<'), s.rfind('>')) {
        (Some(a), Some(b)) if a < b => &s[a + 1..b],
        _ => s,
    };
    let mut parts = addr.split('@');
    matches!((parts.next(), parts.next(), parts.next()), (Some(l), Some(d), None) if !l.is_empty() && d.contains('.') && !d.starts_with('.') && !addr.contains(char::is_whitespace))
}

fn validate_notifications(
    n: &RawNotifications,
    env: &dyn Fn(&str) -> Option<String>,
    deployment: Deployment,
    err: &mut dyn FnMut(String, String),
) -> Notifications {
    let email = n.email.as_ref().map(|e| {
        if !is_email(&e.from) {
            err("notifications.email.from".into(), format!("expected an email address, found {:?}", e.from));
        }
        if e.to.is_empty() {
            err("notifications.email.to".into(), "expected at least one recipient".into());
        }
        for (i, to) in e.to.iter().enumerate() {
            if !is_email(to) {
                err(format!("notifications.email.to[{i}]"), format!("expected an email address, found {to:?}"));
            }
        }
        if e.smtp_host.is_empty() {
            err("notifications.email.smtp_host".into(), "expected the SMTP server's host name".into());
        }
        let password = e.username.as_ref().and_then(|_| {
            resolve_secret(
                SecretField {
                    env_field: "notifications.email.password_env",
                    var: e.password_env.as_deref(),
                    default_var: "EMAIL_PASSWORD",
                    file_field: "notifications.email.password_file",
                    file: e.password_file.as_ref(),
                },
                env,
                deployment,
                err,
            )
        });
        if let Some(ca) = &e.ca_file {
            if deployment == Deployment::Here && !ca.exists() {
                err("notifications.email.ca_file".into(), format!("file {} does not exist", ca.display()));
            }
        }
        EmailSpec {
            host: e.smtp_host.clone(),
            port: e.smtp_port,
            tls: e.tls,
            username: e.username.clone(),
            password,
            ca_file: e.ca_file.clone(),
            from: e.from.clone(),
            to: e.to.clone(),
            when: e.when,
        }
    });
    let slack = n.slack.as_ref().and_then(|s| {
        let url = resolve_secret(
            SecretField {
                env_field: "notifications.slack.webhook_url_env",
                var: s.webhook_url_env.as_deref(),
                default_var: "SLACK_WEBHOOK_URL",
                file_field: "notifications.slack.webhook_url_file",
                file: s.webhook_url_file.as_ref(),
            },
            env,
            deployment,
            err,
        )?;
        if deployment == Deployment::Here && !(url.expose().starts_with("https://") || url.expose().starts_with("http://")) {
            err("notifications.slack.webhook_url_env".into(), "the webhook URL must start with https://".into());
        }
        Some(SlackSpec { webhook_url: url, when: s.when })
    });
    Notifications { email, slack }
}

// ------------------------------------------------------------------ validated

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub exports: Vec<ExportSpec>,
    pub sftp: SftpSpec,
    pub metadata_table: TableName,
    pub bigquery: BigQuerySpec,
    pub notifications: Notifications,
}

impl Config {
    /// Loads and validates a file, with the process environment.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigErrors> {
        Self::load_raw(path)?.validate(&|k| std::env::var(k).ok())
    }

    /// Reads and parses a file without validating its meaning.
    pub fn load_raw(path: &std::path::Path) -> Result<RawConfig, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| one("", format!("cannot read config file {}: {e}", path.display())))?;
        RawConfig::from_json(&text)
    }

    /// Every secret the configuration resolved, for redaction of text that leaves ferry.
    pub fn secrets(&self) -> Vec<&Secret> {
        let mut v = Vec::new();
        match &self.sftp.auth {
            SftpAuth::Password(p) => v.push(p),
            SftpAuth::PrivateKey { passphrase: Some(p), .. } => v.push(p),
            SftpAuth::PrivateKey { .. } => {}
        }
        if let BigQueryAuth::Token(t) = &self.bigquery.auth {
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

/// Where rows come from.
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

/// A validated export.
#[derive(Debug, Clone)]
pub struct ExportSpec {
    pub name: String,
    pub source: SourceSpec,
    /// Empty means all columns.
    pub columns: Vec<String>,
    pub cursor: Option<String>,
    pub incremental: bool,
    pub template: FileTemplate,
    pub compression: Compression,
    pub delimiter: u8,
    pub header: bool,
    pub enabled: bool,
    /// How far behind the watermark to re-read (see [`RawExport::lookback`]); 0 for none.
    pub lookback: u64,
    /// When to start a new file.
    pub split: Split,
}

/// The smallest `max_bytes_per_file` accepted.
pub const MIN_FILE_BYTES: u64 = 1024;

/// When a split export starts a new file. A file always holds at least one row, and every file
/// has its own header row (and is a gzip file of its own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Split {
    /// At most this many rows per file.
    pub max_rows: Option<u64>,
    /// At most this many bytes of CSV (before compression) per file, header included.
    pub max_bytes: Option<u64>,
}

impl Split {
    /// True when either limit is set.
    pub fn is_split(&self) -> bool {
        self.max_rows.is_some() || self.max_bytes.is_some()
    }

    /// Whether a file holding `rows` rows and `bytes` bytes may not take a row of `row_bytes`
    /// more.
    pub fn is_full(&self, rows: u64, bytes: u64, row_bytes: u64) -> bool {
        self.max_rows.is_some_and(|m| rows >= m) || self.max_bytes.is_some_and(|m| bytes + row_bytes > m)
    }
}

impl fmt::Display for Split {
    /// `a new file every 1000 rows or 1048576 bytes`; empty when not split.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let limits: Vec<String> =
            [self.max_rows.map(|r| format!("{r} rows")), self.max_bytes.map(|b| format!("{b} bytes"))].into_iter().flatten().collect();
        if limits.is_empty() {
            return Ok(());
        }
        write!(f, "a new file every {}", limits.join(" or "))
    }
}

/// `template` with `_{part}` before its extensions, for error messages.
fn with_part(template: &str) -> String {
    match template.find('.') {
        Some(dot) => format!("{}_{{part}}{}", &template[..dot], &template[dot..]),
        None => format!("{template}_{{part}}"),
    }
}

/// SFTP credentials.
#[derive(Debug, Clone)]
pub enum SftpAuth {
    Password(Secret),
    PrivateKey { path: PathBuf, passphrase: Option<Secret> },
}

/// Host-key trust.
#[derive(Debug, Clone)]
pub enum HostKey {
    KnownHosts(PathBuf),
    Fingerprint(String),
}

/// Validated SFTP settings.
#[derive(Debug, Clone)]
pub struct SftpSpec {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub auth: SftpAuth,
    pub host_key: HostKey,
    pub path: String,
    pub on_existing: OnExisting,
    pub timeout_secs: u64,
}

/// BigQuery credentials.
#[derive(Debug, Clone)]
pub enum BigQueryAuth {
    MetadataServer,
    Token(Secret),
    None,
}

/// Validated BigQuery settings.
#[derive(Debug, Clone)]
pub struct BigQuerySpec {
    pub project: String,
    pub endpoint: String,
    pub auth: BigQueryAuth,
    pub page_size: u32,
}

/// Validated notification channels.
#[derive(Debug, Clone, Default)]
pub struct Notifications {
    pub email: Option<EmailSpec>,
    pub slack: Option<SlackSpec>,
}

/// Validated email settings.
#[derive(Debug, Clone)]
pub struct EmailSpec {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub ca_file: Option<PathBuf>,
    pub from: String,
    pub to: Vec<String>,
    pub when: When,
}

/// Validated Slack settings.
#[derive(Debug, Clone)]
pub struct SlackSpec {
    pub webhook_url: Secret,
    pub when: When,
}
