use std::collections::HashMap;

use ferry_bigquery::Cell;
use ferry_core::config::{Config, ConfigErrors, RawConfig};
use ferry_core::run::{RunOptions, RunReport};
use ferry_testkit::{stack, unique, TestDataset, TestDir};
use serde_json::{json, Value};

/// A dataset, an SFTP directory and a config pointing at both.
pub struct Fixture {
    pub ds: TestDataset,
    pub dir: TestDir,
    /// Unique export name for this test (failpoints are armed per export name).
    pub export: String,
    pub env: HashMap<String, String>,
    /// `bigquery.read_api`: `auto` (table sources through the Storage Read API) or `rest`.
    pub read: &'static str,
}

/// Runs the test `$name(read)` once per read path, as `$name::storage` (`read_api: auto`, the
/// default) and `$name::rest`.
#[macro_export]
macro_rules! both_read_paths {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn storage() {
                super::$name("auto").await
            }
            #[tokio::test]
            async fn rest() {
                super::$name("rest").await
            }
        }
    };
}

impl Fixture {
    /// A fixture reading table sources as BigQuery's default does (`read_api: auto`).
    pub async fn new(prefix: &str) -> Self {
        Self::on(prefix, "auto").await
    }

    /// A fixture whose config reads with `bigquery.read_api: read`.
    pub async fn on(prefix: &str, read: &'static str) -> Self {
        let ds = TestDataset::create(prefix).await;
        let dir = TestDir::create(prefix);
        let mut env = HashMap::new();
        env.insert("SFTP_PASSWORD".to_owned(), stack().file("FERRY_SFTP_PASSWORD_FILE"));
        // The Slack and SMTP stand-ins listen on 127.0.0.1 without TLS.
        env.insert("FERRY_ALLOW_PLAINTEXT_LOOPBACK".to_owned(), "1".to_owned());
        Self { ds, dir, export: unique("x"), env, read }
    }

    /// The config JSON: key auth with known_hosts unless `sftp` overrides fields.
    pub fn json(&self, export: Value, sftp: Value) -> Value {
        let s = stack();
        let mut sftp_obj = json!({
            "path": self.dir.remote(),
            "host": s.var("FERRY_SFTP_HOST"),
            "port": s.var("FERRY_SFTP_PORT").parse::<u16>().unwrap(),
            "username": s.var("FERRY_SFTP_KEY_USER"),
            "private_key_file": s.var("FERRY_SFTP_KEY_FILE"),
            "known_hosts_file": s.var("FERRY_SFTP_KNOWN_HOSTS"),
        });
        for (k, v) in sftp.as_object().cloned().unwrap_or_default() {
            if v.is_null() {
                sftp_obj.as_object_mut().unwrap().remove(&k);
            } else {
                sftp_obj[k] = v;
            }
        }
        json!({
            "exports": [export],
            "sftp": sftp_obj,
            "metadata_table": format!("{}.export_metadata", self.ds.name),
            "bigquery": {
                "project": s.bq_project(), "endpoint": s.bq_endpoint(), "auth": "none",
                "read_api": self.read, "storage_endpoint": s.var("FERRY_BQ_GRPC_ENDPOINT"),
            },
        })
    }

    pub fn load(&self, json: &Value) -> Result<Config, ConfigErrors> {
        RawConfig::from_json(&json.to_string())?.validate(&ferry::components::Registry, &|k| self.env.get(k).cloned())
    }

    /// A config with one incremental export of `table` on `updated_at`.
    pub fn config(&self, table: &str, extra: Value) -> Config {
        let mut export = json!({
            "name": self.export,
            "source_table": format!("{}.{table}", self.ds.name),
            "destination_filename": "{name}_{datetime}.csv",
            "timestamp_column": "updated_at",
            "incremental": true,
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            export[k] = v;
        }
        self.load(&self.json(export, json!({}))).expect("valid config")
    }

    pub async fn run(&self, config: &Config, full: bool) -> RunReport {
        let mut opts = RunOptions::new();
        opts.full = full;
        ferry::run(config, &opts, None).await
    }

    /// Every delivered (final-name) file's data rows, in file-name order, header dropped.
    pub fn delivered_rows(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        for name in self.dir.names() {
            assert!(!name.starts_with('.'), "a temporary file was left behind: {name}");
            let bytes = self.dir.read(&name);
            let mut r = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes.as_slice());
            for rec in r.records() {
                out.push(rec.expect("valid CSV").iter().map(str::to_owned).collect());
            }
        }
        out
    }

    /// Metadata rows of this fixture's export: (status, rows_exported, last_exported_value).
    pub async fn metadata(&self) -> Vec<(String, u64, Option<String>)> {
        let rows = self
            .ds
            .rows(&format!(
                "SELECT export_status, rows_exported, last_exported_value FROM `{}` WHERE export_name = '{}' ORDER BY completed_at, export_status",
                self.ds.table("export_metadata"),
                self.export
            ))
            .await;
        rows.iter().map(|r| (text(&r[0]).unwrap_or_default(), text(&r[1]).and_then(|v| v.parse().ok()).unwrap_or(0), text(&r[2]))).collect()
    }

    /// `column` of the export's metadata rows (those with `status`, or all), in the order
    /// `metadata` lists them; NULL is `None`.
    pub async fn column(&self, column: &str, status: Option<&str>) -> Vec<Option<String>> {
        let only = status.map(|s| format!(" AND export_status = '{s}'")).unwrap_or_default();
        let rows = self
            .ds
            .rows(&format!(
                "SELECT {column} FROM `{}` WHERE export_name = '{}'{only} ORDER BY completed_at, export_status",
                self.ds.table("export_metadata"),
                self.export
            ))
            .await;
        rows.iter().map(|r| text(&r[0])).collect()
    }

    /// The export's watermark as the metadata table has it.
    pub async fn watermark(&self) -> Option<String> {
        self.metadata().await.into_iter().rev().find(|m| m.0 == "SUCCESS").and_then(|m| m.2)
    }
}

pub fn text(c: &Cell) -> Option<String> {
    match c {
        Cell::Text(t) => Some(t.clone()),
        _ => None,
    }
}

/// Creates `orders(id INT64, note STRING, updated_at TIMESTAMP)` and inserts `(id, ts)` rows.
pub async fn orders(f: &Fixture, rows: &[(i64, &str)]) {
    f.ds.exec(&format!("CREATE TABLE IF NOT EXISTS `{}` (id INT64, note STRING, updated_at TIMESTAMP)", f.ds.table("orders"))).await;
    insert(f, rows).await;
}

pub async fn insert(f: &Fixture, rows: &[(i64, &str)]) {
    let values: Vec<String> = rows.iter().map(|(id, ts)| format!("({id}, 'row {id}', TIMESTAMP '{ts}')")).collect();
    f.ds.exec(&format!("INSERT INTO `{}` (id, note, updated_at) VALUES {}", f.ds.table("orders"), values.join(", "))).await;
}

/// The ids in delivered rows, in delivery order.
pub fn ids(rows: &[Vec<String>]) -> Vec<i64> {
    rows.iter().map(|r| r[0].parse().expect("id")).collect()
}

/// The `ferry` binary of this build.
pub fn ferry_bin() -> std::path::PathBuf {
    // Test binaries live in target/<profile>/deps; the ferry binary one level up.
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe.parent().and_then(|d| d.parent()).map(|d| d.join("ferry")).expect("target dir");
    assert!(bin.exists(), "{} is missing: build the workspace (cargo build) first", bin.display());
    bin
}
