//! Wiring by component type: which crate defines, validates and runs each `source` and
//! `destination` type, and the JSON Schema of the whole file.
//!
//! Adding a type is one arm in each `match` below (and its crate's `component` module).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use ferry_bigquery::component::{ExportSettings, SourceSettings, TableSettings};
use ferry_bigquery::storage::StorageRead;
use ferry_bigquery::{BigQuery, BigQueryExport, BigQuerySource, BigQueryTable};
use ferry_bigquery::{Storage, StorageUse};
use ferry_core::config::ReadApi;
use ferry_core::config::{Check, Component, Components, Config, ConfigErrors, Deployment, Destination, RawConfig};
use ferry_core::run::Wiring;
use ferry_core::{ErrorClass, Failure, Sink, Source, StagedSource, Staging, TableSink};
use ferry_sftp::{SftpSettings, SftpSink};
use serde_json::{json, Value};
use tokio::sync::Mutex;

/// The component types this build knows.
pub struct Registry;

impl Components for Registry {
    fn source_types(&self) -> Vec<&'static str> {
        vec!["bigquery", "bigquery_export", "postgres", "mysql"]
    }

    fn destination_types(&self) -> Vec<&'static str> {
        vec!["sftp", "bigquery"]
    }

    fn source(&self, type_name: &str, value: &Value, cx: &Check<'_>) -> Option<Option<Component>> {
        match type_name {
            "bigquery" => Some(ferry_bigquery::component::validate_source(value, cx)),
            "bigquery_export" => Some(ferry_bigquery::component::validate_export_source(value, cx)),
            "postgres" => Some(ferry_postgres::validate_source(value, cx)),
            "mysql" => Some(ferry_mysql::validate_source(value, cx)),
            _ => None,
        }
    }

    fn destination(&self, type_name: &str, value: &Value, cx: &Check<'_>) -> Option<Option<Destination>> {
        match type_name {
            "sftp" => Some(ferry_sftp::component::validate_destination(value, cx)),
            "bigquery" => Some(ferry_bigquery::component::validate_table_destination(value, cx)),
            _ => None,
        }
    }
}

/// Loads and validates a file with the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    Config::load_raw(path)?.validate(&Registry, &|k| std::env::var(k).ok())
}

/// Validates a parsed file.
pub fn validate(raw: &RawConfig, env: &dyn Fn(&str) -> Option<String>, deployment: Deployment) -> Result<Config, ConfigErrors> {
    raw.validate_with(&Registry, env, deployment)
}

/// The roles of a run, built from each export's components: one BigQuery client for every
/// BigQuery source, and one SFTP connection per distinct destination server and directory.
pub struct Wired {
    bq: BigQuery,
    page_size: u32,
    /// Unless `bigquery.read_api` is `rest`: how table sources use the Storage Read API.
    storage: Option<Storage>,
    sinks: Mutex<HashMap<String, Connected>>,
    /// The staging bucket, when the config has one.
    staging: Option<Arc<ferry_gcs::Gcs>>,
    /// How database sources retry, when not by their own policy.
    retry: Option<ferry_core::RetryPolicy>,
}

/// How long a shared SFTP connection may take to answer before the next export makes a new one.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A connection, or why connecting failed (the same failure for every export using it).
type Connected = Result<Arc<SftpSink>, (ErrorClass, String)>;

impl Wired {
    /// Wiring for `config`'s exports, reading BigQuery with `bq`.
    pub fn new(config: &Config, bq: BigQuery) -> Self {
        let b = &config.bigquery;
        let usage = match b.read_api {
            ReadApi::Rest => None,
            ReadApi::Auto => Some(StorageUse::Tables),
            ReadApi::Storage => Some(StorageUse::Always),
        };
        let storage = usage.map(|usage| {
            let http = reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .timeout(b.timeout)
                .build()
                .expect("an HTTP client for tokens");
            let tokens = ferry_google::TokenSource::new(http, crate::auth(&b.auth));
            Storage { read: StorageRead::new(&b.storage_endpoint, &b.project, tokens, b.timeout), usage, streams: b.storage_streams }
        });
        let staging =
            config.staging.as_ref().map(|st| Arc::new(ferry_gcs::Gcs::new(&st.endpoint, &st.bucket, crate::auth(&st.auth), b.timeout)));
        Self { bq, page_size: b.page_size, storage, sinks: Mutex::default(), staging, retry: None }
    }

    /// Database sources retried by `policy` (BigQuery's by the client given to [`Wired::new`]).
    pub fn with_retry(mut self, policy: ferry_core::RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }
}

#[async_trait]
impl Wiring for Wired {
    fn source(&self, export: &ferry_core::config::ExportSpec) -> Result<Box<dyn Source>, Failure> {
        let c = &export.source;
        match c.type_name.as_str() {
            "bigquery" => {
                let settings = c.settings::<SourceSettings>().ok_or_else(|| mismatch(c))?;
                let source = BigQuerySource::new(self.bq.clone(), self.page_size, settings.clone());
                Ok(Box::new(match &self.storage {
                    Some(storage) => source.with_storage(storage.clone()),
                    None => source,
                }))
            }
            "postgres" => {
                let settings = c.settings::<ferry_postgres::PostgresSettings>().ok_or_else(|| mismatch(c))?;
                let source = ferry_postgres::PostgresSource::new(settings.clone());
                Ok(Box::new(match &self.retry {
                    Some(p) => source.with_retry(*p),
                    None => source,
                }))
            }
            "mysql" => {
                let settings = c.settings::<ferry_mysql::MySqlSettings>().ok_or_else(|| mismatch(c))?;
                let source = ferry_mysql::MySqlSource::new(settings.clone());
                Ok(Box::new(match &self.retry {
                    Some(p) => source.with_retry(*p),
                    None => source,
                }))
            }
            // Bounds and counts of a staged export read the same table or query.
            "bigquery_export" => {
                let settings = c.settings::<ExportSettings>().ok_or_else(|| mismatch(c))?;
                Ok(Box::new(BigQuerySource::new(self.bq.clone(), self.page_size, settings.rows.clone())))
            }
            _ => Err(mismatch(c)),
        }
    }

    fn staged(&self, export: &ferry_core::config::ExportSpec) -> Result<Box<dyn StagedSource>, Failure> {
        let c = &export.source;
        match c.type_name.as_str() {
            "bigquery_export" => {
                let settings = c.settings::<ExportSettings>().ok_or_else(|| mismatch(c))?;
                Ok(Box::new(BigQueryExport::new(self.bq.clone(), settings.clone())))
            }
            _ => Err(mismatch(c)),
        }
    }

    async fn staging(&self) -> Result<Arc<dyn Staging>, Failure> {
        match &self.staging {
            Some(g) => Ok(g.clone() as Arc<dyn Staging>),
            None => Err(Failure::with_class(ErrorClass::Permanent, "no staging bucket is configured (staging.bucket)")),
        }
    }

    async fn sink(&self, export: &ferry_core::config::ExportSpec) -> Result<Arc<dyn Sink>, Failure> {
        let c = &export.destination.component;
        let settings = match c.type_name.as_str() {
            "sftp" => c.settings::<SftpSettings>().ok_or_else(|| mismatch(c))?,
            _ => return Err(mismatch(c)),
        };
        // Secrets stay out of the key: one connection per server, user and directory.
        let key = format!("{}@{}:{}{}", settings.username, settings.host, settings.port, settings.directory);
        let mut sinks = self.sinks.lock().await;
        // A connection is shared by the exports of a run; one that was lost since (or that
        // failed in a way that may pass) is made again, so a drop during one export does not
        // fail the exports after it.
        let reuse = match sinks.get(&key) {
            None => false,
            Some(Ok(s)) => s.responds(PROBE_TIMEOUT).await,
            Some(Err((class, _))) => *class == ErrorClass::Permanent,
        };
        if !reuse {
            if sinks.contains_key(&key) {
                tracing::info!(server = %format!("{}:{}", settings.host, settings.port), "SFTP connection lost or not made; connecting again");
            }
            let connected =
                SftpSink::connect(settings.clone()).await.map(Arc::new).map_err(|e| (ferry_core::Classify::class(&e), e.to_string()));
            sinks.insert(key.clone(), connected);
        }
        match &sinks[&key] {
            Ok(s) => Ok(s.clone() as Arc<dyn Sink>),
            Err((class, msg)) => Err(Failure::with_class(*class, msg.clone())),
        }
    }

    async fn table(&self, export: &ferry_core::config::ExportSpec) -> Result<Arc<dyn TableSink>, Failure> {
        let c = &export.destination.component;
        match c.type_name.as_str() {
            "bigquery" => {
                let s = c.settings::<TableSettings>().ok_or_else(|| mismatch(c))?;
                let table = ferry_bigquery::TableRef {
                    project: s.table.project.clone().unwrap_or_else(|| self.bq.project().to_owned()),
                    dataset: s.table.dataset.clone(),
                    table: s.table.table.clone(),
                };
                Ok(Arc::new(BigQueryTable::new(self.bq.clone(), table, s.mode.clone(), s.batch_rows, s.job_rows, &export.name)))
            }
            _ => Err(mismatch(c)),
        }
    }

    async fn close(&self) {
        for (_, sink) in self.sinks.lock().await.drain() {
            if let Ok(s) = sink {
                s.close().await;
            }
        }
    }
}

fn mismatch(c: &Component) -> Failure {
    Failure::with_class(ErrorClass::Permanent, format!("component {} ({}) has settings of another type", c.type_name, c.describe))
}

/// The JSON Schema of the configuration file, generated from the config types of the core and
/// of every component crate, with their doc comments; `configs/ferry.schema.json` is this text.
/// It accepts the component form and the seed form.
pub fn json_schema() -> String {
    let mut root = schemars::schema_for!(RawConfig).to_value();
    let mut defs = root["$defs"].take();
    let variants = |tag: &str, schema: schemars::Schema, defs: &mut Value| {
        let mut v = schema.to_value();
        for (k, d) in v.as_object_mut().and_then(|o| o.remove("$defs")).and_then(|d| d.as_object().cloned()).unwrap_or_default() {
            defs[k] = d;
        }
        if let Some(o) = v.as_object_mut() {
            o.remove("$schema");
        }
        v["properties"]["type"] = json!({"const": tag, "description": "The component type."});
        let mut required = vec![json!("type")];
        required.extend(v["required"].as_array().cloned().unwrap_or_default());
        v["required"] = Value::Array(required);
        v
    };
    let bigquery = variants("bigquery", schemars::schema_for!(ferry_bigquery::component::RawBigQuerySource), &mut defs);
    let bigquery_export = variants("bigquery_export", schemars::schema_for!(ferry_bigquery::component::RawExportSource), &mut defs);
    let postgres = variants("postgres", schemars::schema_for!(ferry_postgres::RawPostgresSource), &mut defs);
    let mysql = variants("mysql", schemars::schema_for!(ferry_mysql::RawMySqlSource), &mut defs);
    let sftp_schema = schemars::schema_for!(ferry_sftp::component::RawSftpDestination);
    let sftp = variants("sftp", sftp_schema.clone(), &mut defs);
    let bigquery_table = variants("bigquery", schemars::schema_for!(ferry_bigquery::component::RawTableDestination), &mut defs);
    // The seed's staged form: `exports` as a map of name → a bigquery_export source's fields.
    let mut staged_seed = bigquery_export.clone();
    if let Some(o) = staged_seed.as_object_mut() {
        o.remove("required");
        o.insert("title".into(), json!("staged export (seed form)"));
    }
    if let Some(p) = staged_seed["properties"].as_object_mut() {
        p.remove("type");
    }
    let exports = root["properties"]["exports"].take();
    root["properties"]["exports"] = json!({"description": exports["description"], "oneOf": [exports, {
        "type": "object", "description": "Seed form (staged exports): export name → its query and file format.",
        "additionalProperties": staged_seed}]});
    for (field, schema) in [
        ("gcs_bucket", json!({"type": "string", "description": "Seed form: the staging bucket (staging.bucket)."})),
        ("gcs_expiration_days", json!({"type": "integer", "minimum": 1, "description": "Seed form: staging.expiration_days."})),
        ("cloud_run_url", json!({"type": "string", "description": "Seed form: the service's URL (service_url)."})),
    ] {
        root["properties"][field] = schema;
    }
    let export = &mut defs["RawExport"]["properties"];
    export["source"] = json!({"description": export["source"]["description"], "oneOf": [bigquery, bigquery_export, postgres, mysql]});
    export["destination"] = json!({"description": export["destination"]["description"], "oneOf": [sftp, bigquery_table]});
    // The seed form: file settings and the BigQuery source's fields beside the export's own,
    // and one `sftp` section (without `file`) shared by every export.
    let seed = schemars::schema_for!(SeedExport).to_value();
    for (k, v) in seed["properties"].as_object().cloned().unwrap_or_default() {
        export[k] = v;
    }
    for (k, d) in seed.get("$defs").and_then(Value::as_object).cloned().unwrap_or_default() {
        defs[k] = d;
    }
    let mut seed_sftp = sftp_schema.to_value();
    if let Some(o) = seed_sftp.as_object_mut() {
        o.remove("$schema");
        o.remove("$defs");
    }
    seed_sftp["title"] = json!("sftp (seed form)");
    if let Some(p) = seed_sftp["properties"].as_object_mut() {
        p.remove("file");
    }
    seed_sftp["properties"]["on_existing"] =
        json!({"$ref": "#/$defs/OnExisting", "description": "`fail` (default) or `overwrite` when the final name exists."});
    seed_sftp["required"] = json!([]);
    seed_sftp["properties"]["directory"] = json!({"type": "string", "description": "Seed form (staged exports): the target directory, as `path`; `SFTP_DIRECTORY` when absent."});
    root["properties"]["sftp"] = json!({"description": "Seed form: the partner's SFTP server, shared by every export without a `destination`.", "allOf": [seed_sftp]});
    root["$defs"] = defs;
    serde_json::to_string_pretty(&root).expect("a JSON Schema serializes") + "\n"
}

/// The seed form's export fields, for the schema only (the loader rewrites them into
/// components).
#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
struct SeedExport {
    /// Seed form: `dataset.table` or `project.dataset.table` of a BigQuery source; or use `query`.
    source_table: Option<String>,
    /// Seed form: a SELECT whose result is exported; `{date}` becomes the `@run_date` DATE parameter.
    query: Option<String>,
    /// Seed form: columns to export, in order; all columns when absent.
    columns: Option<Vec<String>>,
    /// Seed form: file name template: `{date}`, `{datetime}`, `{datetime_ms}`, `{run_id}`, `{name}`,
    /// and `{part}` for split exports.
    destination_filename: Option<String>,
    /// Seed form: output format; only `CSV` for now.
    format: Option<ferry_core::config::Format>,
    /// Seed form: `NONE` or `GZIP`.
    compression: Option<ferry_core::config::Compression>,
    /// Seed form: field delimiter, one ASCII character; `,` by default.
    delimiter: Option<String>,
    /// Seed form: write a header row; true by default.
    header: Option<bool>,
    /// Seed form: start a new file after this many rows. Needs `{part}` in the file name.
    max_rows_per_file: Option<u64>,
    /// Seed form: start a new file before one would grow past this many bytes. Needs `{part}`.
    max_bytes_per_file: Option<u64>,
    /// Seed form: allow an incremental export with `on_existing: overwrite` a name that can
    /// repeat between runs (no `{run_id}`, `{datetime}` or `{datetime_ms}`); `ferry check` then
    /// warns instead of refusing.
    allow_repeating_names: Option<bool>,
}
