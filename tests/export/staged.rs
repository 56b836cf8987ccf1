//! Staged exports on the real stack: the BigQuery emulator's `EXPORT DATA` writes objects into
//! fake-gcs-server, ferry streams them to OpenSSH's sshd. Files on the server must be the
//! objects' bytes exactly; nothing partial is ever visible under a final name.

use std::process::Stdio;
use std::time::Duration;

use ferry_core::run::RunOptions;
use ferry_core::RunStatus;
use ferry_testkit::{stack, unique};
use serde_json::{json, Value};

use crate::common::{ferry_bin, Fixture};
use crate::serve::Service;

/// A bucket of its own in fake-gcs-server.
pub struct Bucket {
    pub name: String,
    endpoint: String,
    http: reqwest::Client,
}

impl Bucket {
    pub async fn create() -> Self {
        let endpoint = stack().var("FERRY_GCS_ENDPOINT");
        let http = reqwest::Client::new();
        let name = unique("stg").replace('_', "-");
        let r = http
            .post(format!("{endpoint}/storage/v1/b?project=ferry-test"))
            .json(&json!({"name": name}))
            .send()
            .await
            .expect("create bucket");
        assert!(r.status().is_success(), "create bucket: {}", r.status());
        Self { name, endpoint, http }
    }

    fn object_url(&self, name: &str) -> String {
        format!("{}/storage/v1/b/{}/o/{}", self.endpoint, self.name, name.replace('/', "%2F"))
    }

    pub async fn put(&self, name: &str, bytes: Vec<u8>) {
        let r = self
            .http
            .post(format!("{}/upload/storage/v1/b/{}/o?uploadType=media&name={}", self.endpoint, self.name, name.replace('/', "%2F")))
            .body(bytes)
            .send()
            .await
            .expect("upload");
        assert!(r.status().is_success(), "upload {name}: {}", r.status());
    }

    pub async fn get(&self, name: &str) -> Vec<u8> {
        let r = self.http.get(format!("{}?alt=media", self.object_url(name))).send().await.expect("download");
        assert!(r.status().is_success(), "download {name}: {}", r.status());
        r.bytes().await.expect("bytes").to_vec()
    }

    /// Object names under `prefix`, sorted.
    pub async fn list(&self, prefix: &str) -> Vec<String> {
        let r = self
            .http
            .get(format!("{}/storage/v1/b/{}/o", self.endpoint, self.name))
            .query(&[("prefix", prefix)])
            .send()
            .await
            .expect("list");
        let v: Value = r.json().await.expect("listing");
        let mut names: Vec<String> = v["items"].as_array().into_iter().flatten().map(|o| o["name"].as_str().unwrap().to_owned()).collect();
        names.sort();
        names
    }
}

impl Fixture {
    /// A config of `exports` (component form) delivering to this fixture's directory, with
    /// `bucket` as the staging bucket.
    fn staged_config(&self, bucket: &Bucket, exports: Vec<Value>, staging: Value) -> Value {
        let mut v = self.json(json!({}), json!({}));
        let sftp = v.as_object_mut().unwrap().remove("sftp").unwrap();
        let mut st = json!({"bucket": bucket.name, "endpoint": stack().var("FERRY_GCS_ENDPOINT"), "auth": "none"});
        for (k, x) in staging.as_object().cloned().unwrap_or_default() {
            st[k] = x;
        }
        v["staging"] = st;
        v["exports"] = Value::Array(
            exports
                .into_iter()
                .map(|mut x| {
                    let mut d = sftp.clone();
                    d["type"] = json!("sftp");
                    d["file"] = x.as_object_mut().unwrap().remove("file").unwrap_or(json!({}));
                    x["destination"] = d;
                    x
                })
                .collect(),
        );
        v
    }
}

async fn table(f: &Fixture, rows: i64) {
    f.ds.exec(&format!("CREATE TABLE `{}` (id INT64, note STRING, updated_at TIMESTAMP)", f.ds.table("orders"))).await;
    f.ds.exec(&format!(
        "INSERT INTO `{}` (id, note, updated_at) SELECT id, CONCAT('row ', CAST(id AS STRING)), \
         TIMESTAMP_ADD(TIMESTAMP '2026-01-01 00:00:00+00', INTERVAL id SECOND) FROM UNNEST(GENERATE_ARRAY(1, {rows})) AS id",
        f.ds.table("orders")
    ))
    .await;
}

/// Every format × compression the emulator writes goes table → GCS → SFTP, several exports
/// at once, and each file on the server is its object's bytes; the metadata row lists each
/// file with its object, generation and CRC32C.
#[tokio::test]
async fn every_format_lands_byte_identical() {
    let f = Fixture::new("staged").await;
    table(&f, 3_000).await;
    let bucket = Bucket::create().await;
    let pairs = [
        ("CSV", "GZIP"),
        ("CSV", "NONE"),
        ("JSON", "GZIP"),
        ("JSON", "NONE"),
        ("AVRO", "NONE"),
        ("AVRO", "DEFLATE"),
        ("AVRO", "SNAPPY"),
        ("PARQUET", "SNAPPY"),
        ("PARQUET", "GZIP"),
        ("PARQUET", "ZSTD"),
        ("PARQUET", "NONE"),
    ];
    let exports: Vec<Value> = pairs
        .iter()
        .map(|(format, compression)| {
            json!({"name": format!("{}_{}_{}", f.export, format.to_lowercase(), compression.to_lowercase()),
                   "source": {"type": "bigquery_export", "table": format!("{}.orders", f.ds.name), "format": format, "compression": compression}})
        })
        .collect();
    let mut v = f.staged_config(&bucket, exports, json!({}));
    v["parallel_exports"] = json!(4);
    let config = f.load(&v).expect("valid config");
    // `ferry plan` shows the statement that writes the files, and where they go.
    let plans = ferry::plan(&config, &RunOptions::new()).await.expect("plan");
    let p = &plans[0];
    assert!(p.sql.starts_with(&format!("EXPORT DATA OPTIONS(uri='gs://{}/ferry/{}/", bucket.name, p.export)), "{}", p.sql);
    assert!(p.sql.contains("format='CSV'") && p.sql.contains("compression='GZIP'") && p.sql.contains(" AS SELECT * FROM "), "{}", p.sql);
    assert!(p.file_name.as_deref().is_some_and(|n| n.starts_with("gs://") && n.ends_with("-*.csv.gz")), "{:?}", p.file_name);
    let report = ferry::run(&config, &RunOptions::new(), None).await;
    for o in &report.outcomes {
        assert_eq!(o.status, RunStatus::Success, "{}: {:?}", o.export, o.error);
        assert_eq!(o.rows, 3_000, "{}", o.export);
        assert_eq!(o.files.len(), 1, "{}: the emulator writes one file per export", o.export);
        let file = &o.files[0];
        let object = file.object.as_ref().expect("the file's object is recorded");
        let name = object.uri.strip_prefix(&format!("gs://{}/", bucket.name)).expect("in the staging bucket");
        assert!(name.starts_with(&format!("ferry/{}/", o.export)), "per-run prefix: {name}");
        assert!(object.crc32c.is_some() && object.md5.is_some(), "{object:?}");
        let on_server = f.dir.read(&file.name);
        assert_eq!(on_server, bucket.get(name).await, "{}: the file is the object's bytes", o.export);
        assert_eq!(on_server.len() as u64, file.bytes);
    }
    // The CSV file is what EXPORT DATA wrote: a header and every row.
    let csv = report.outcomes.iter().find(|o| o.export.ends_with("_csv_none")).unwrap();
    let text = String::from_utf8(f.dir.read(&csv.files[0].name)).unwrap();
    assert_eq!(text.lines().count(), 3_001);
    assert!(text.starts_with("id,note,updated_at"), "{}", &text[..40]);
    assert!(f.dir.names().iter().all(|n| !n.starts_with('.')), "no temporary file is left: {:?}", f.dir.names());
    // A second run writes under a prefix of its own, and files of names of its own.
    let again = ferry::run(&config, &RunOptions { exports: Some(vec![csv.export.clone()]), ..RunOptions::new() }, None).await;
    let o = &again.outcomes[0];
    assert_eq!(o.status, RunStatus::Success, "{:?}", o.error);
    assert_ne!(o.files[0].name, csv.files[0].name);
    assert_eq!(bucket.list(&format!("ferry/{}/", csv.export)).await.len(), 2, "each run has its own objects");
}

/// A format and compression BigQuery refuses together, and file settings a staged export
/// cannot follow, are configuration errors that name the field.
#[tokio::test]
async fn refused_settings_name_their_field() {
    let f = Fixture::new("staged_bad").await;
    let bucket = Bucket::create().await;
    let src =
        |format: &str, compression: &str| json!({"type": "bigquery_export", "table": "d.t", "format": format, "compression": compression});
    let v = f.staged_config(
        &bucket,
        vec![
            json!({"name": "a", "source": src("AVRO", "GZIP")}),
            json!({"name": "b", "source": src("CSV", "SNAPPY")}),
            json!({"name": "c", "source": src("XML", "NONE")}),
            json!({"name": "d", "source": {"type": "bigquery_export", "table": "d.t"}, "file": {"compression": "GZIP", "name": "x.csv"}}),
        ],
        json!({}),
    );
    let e = f.load(&v).expect_err("refused").to_string();
    for want in [
        "exports[0].source.compression: BigQuery does not export AVRO with compression GZIP",
        "exports[1].source.compression: BigQuery does not export CSV with compression SNAPPY",
        "exports[2].source.format: expected CSV, JSON, AVRO or PARQUET",
        "exports[3].destination.file.compression: the bigquery_export source writes the files itself",
        "exports[3].destination.file.name: \"x.csv\" has no {part}",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
    let mut v = f.staged_config(&bucket, vec![json!({"name": "a", "source": src("CSV", "GZIP")})], json!({}));
    v.as_object_mut().unwrap().remove("staging");
    let e = f.load(&v).expect_err("no bucket").to_string();
    assert!(e.contains("staging: missing: export a (a bigquery_export source) writes its files to a Cloud Storage bucket"), "{e}");
}

/// The seed's config file, as its README shows it: loads unchanged, except the literal
/// password, refused with a message that names SFTP_PASSWORD.
#[tokio::test]
async fn the_seed_config_loads_and_its_password_is_refused() {
    let f = Fixture::new("staged_seed").await;
    let seed = json!({
      "gcs_bucket": "your-bucket-name",
      "gcs_expiration_days": 30,
      "cloud_run_url": "https://your-service.run.app",
      "sftp": {"host": "sftp.example.com", "port": 22, "username": "user", "password": "password", "directory": "/uploads"},
      "exports": {
        "product_data": {"query": "SELECT * FROM `project.dataset.products` WHERE DATE(created_at) = '{date}'", "format": "CSV", "compression": "GZIP"},
        "customer_data": {"query": "SELECT id, name, email FROM `project.dataset.customers`", "format": "CSV", "compression": "GZIP"}
      }
    });
    let e = f.load(&seed).expect_err("a literal password").to_string();
    assert!(e.contains("sftp.password: a password does not belong in a config file"), "{e}");
    assert!(e.contains("SFTP_PASSWORD"), "{e}");
    let mut seed = seed;
    seed["sftp"].as_object_mut().unwrap().remove("password");
    let raw = ferry_core::config::RawConfig::from_json(&seed.to_string()).expect("parses");
    let env = |k: &str| match k {
        "SFTP_PASSWORD" => Some("pw".to_owned()),
        "SFTP_HOST_KEY_FINGERPRINT" => Some(format!("SHA256:{}", "A".repeat(43))),
        "GOOGLE_CLOUD_PROJECT" => Some("acme-data".to_owned()),
        _ => None,
    };
    let config = raw.validate(&ferry::components::Registry, &env).expect("the seed's file loads");
    let names: Vec<&str> = config.exports.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(names, ["customer_data", "product_data"]);
    let staging = config.staging.as_ref().expect("gcs_bucket is the staging bucket");
    assert_eq!((staging.bucket.as_str(), staging.expiration_days), ("your-bucket-name", Some(30)));
    assert_eq!(config.service_url.as_deref(), Some("https://your-service.run.app"));
    assert_eq!(config.metadata_table.to_string(), "ferry.export_runs", "the documented default table");
    assert_eq!(ferry::destination_dir(&config.exports[0]), "/uploads/");
    assert!(config.exports.iter().all(|x| x.source.type_name == "bigquery_export" && x.file().is_some_and(|f| f.object_names)));
    // An error inside an export names it as the seed wrote it.
    let mut bad = seed.clone();
    bad["exports"]["product_data"]["compression"] = json!("SNAPPY");
    let e = f.load(&bad).expect_err("CSV with SNAPPY").to_string();
    assert!(e.contains("exports.product_data.compression"), "{e}");
}

/// A config dir whose default config is in the seed's form (plus the emulators' endpoints),
/// the environment its deployment sets, and a service on it.
async fn seed_service(f: &Fixture, bucket: &Bucket) -> (Service, std::path::PathBuf) {
    let s = stack();
    let config = json!({
        "gcs_bucket": bucket.name,
        "gcs_expiration_days": 30,
        "sftp": {"host": s.var("FERRY_SFTP_HOST"), "port": s.var("FERRY_SFTP_PORT").parse::<u16>().unwrap(),
                 "known_hosts_file": s.var("FERRY_SFTP_KNOWN_HOSTS")},
        "exports": {"product_data": {"query": format!("SELECT * FROM `{}.orders` WHERE DATE(updated_at) = '{{date}}'", f.ds.name), "format": "CSV", "compression": "GZIP"}},
        "bigquery": {"project": s.bq_project(), "endpoint": s.bq_endpoint(), "auth": "none"},
        "staging": {"endpoint": s.var("FERRY_GCS_ENDPOINT"), "auth": "none"},
    });
    let dir = std::env::temp_dir().join(unique("ferry-configs"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("exports.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let env = [
        ("CONFIG_PATH", path.display().to_string()),
        ("SFTP_USERNAME", s.var("FERRY_SFTP_PASSWORD_USER")),
        ("SFTP_PASSWORD", s.file("FERRY_SFTP_PASSWORD_FILE")),
        ("SFTP_DIRECTORY", f.dir.remote()),
        ("FERRY_METADATA_TABLE", format!("{}.export_metadata", f.ds.name)),
    ];
    (Service::start(&dir, &env).await, path)
}

async fn post(svc: &Service, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new().post(format!("{}{path}", svc.url)).json(&body).send().await.expect("POST");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// The seed's Airflow calls: its own EXPORT DATA into the bucket, then `POST /transfer` and
/// `POST /verify` with the seed's bodies, answered in the seed's shapes; verify names a missing
/// and a resized file; bad paths are refused and an empty path is a FAILED run.
#[tokio::test]
async fn seed_endpoints_transfer_and_verify() {
    let f = Fixture::new("staged_api").await;
    table(&f, 2_000).await;
    let bucket = Bucket::create().await;
    let path = format!("gs://{}/product_data/20260101/", bucket.name);
    // As the seed's DAG does: EXPORT DATA with a wildcard, plus two more shards.
    f.ds.exec(&format!(
        "EXPORT DATA OPTIONS(uri='{path}part-*.csv.gz', format='CSV', compression='GZIP', header=true, overwrite=true) AS SELECT * FROM `{}`",
        f.ds.table("orders")
    ))
    .await;
    bucket.put("product_data/20260101/part-000000000001.csv.gz", vec![7u8; 300_000]).await;
    bucket.put("product_data/20260101/part-000000000002.csv.gz", vec![9u8; 1_000]).await;
    bucket.put("product_data/20260102/part-000000000000.csv.gz", vec![1u8; 10]).await;
    let (svc, config_path) = seed_service(&f, &bucket).await;

    let (code, body) = post(&svc, "/transfer", json!({"export_name": "product_data", "gcs_path": path, "date": "2026-01-01"})).await;
    assert_eq!(code, 200, "{body}\n{}", svc.log());
    assert_eq!(body["status"], "success");
    assert_eq!(body["export_name"], "product_data");
    assert_eq!(body["files_transferred"], 3);
    assert_eq!(body["files"], json!(["part-000000000000.csv.gz", "part-000000000001.csv.gz", "part-000000000002.csv.gz"]));
    assert_eq!(body["destination"], format!("{}/", f.dir.remote()));
    assert!(body["total_mb"].as_f64().unwrap() > 0.28 && body["total_time_seconds"].is_number(), "{body}");
    for name in ["part-000000000000.csv.gz", "part-000000000001.csv.gz", "part-000000000002.csv.gz"] {
        assert_eq!(f.dir.read(name), bucket.get(&format!("product_data/20260101/{name}")).await, "{name}");
    }
    assert_eq!(f.dir.names().len(), 3, "only this path's files: {:?}", f.dir.names());

    // The same request again (an Airflow retry): the latest delivery holds these objects.
    let (code, again) = post(&svc, "/transfer", json!({"export_name": "product_data", "gcs_path": path})).await;
    assert_eq!((code, &again["status"], &again["already_delivered"]), (200, &json!("success"), &json!(true)), "{again}");

    let (code, v) = post(&svc, "/verify", json!({"export_name": "product_data", "gcs_path": path})).await;
    assert_eq!(code, 200);
    assert_eq!(
        v,
        json!({"status": "success", "in_sync": true, "gcs_file_count": 3, "sftp_file_count": 3, "missing_on_sftp": [], "size_mismatches": []})
    );
    std::fs::remove_file(f.dir.path.join("part-000000000001.csv.gz")).unwrap();
    std::fs::write(f.dir.path.join("part-000000000002.csv.gz"), b"short").unwrap();
    let (_, v) = post(&svc, "/verify", json!({"export_name": "product_data", "gcs_path": path})).await;
    assert_eq!(v["in_sync"], false);
    assert_eq!(v["sftp_file_count"], 2);
    assert_eq!(v["missing_on_sftp"], json!(["part-000000000001.csv.gz"]));
    assert_eq!(v["size_mismatches"], json!([{"file": "part-000000000002.csv.gz", "gcs_size": 1000, "sftp_size": 5}]));
    // The CLI says the same, and exits 1 when out of sync.
    let out = std::process::Command::new(ferry_bin())
        .args(["verify", "--export", "product_data", "--gcs-path", &path])
        .envs([
            ("CONFIG_PATH", config_path.display().to_string()),
            ("SFTP_USERNAME", stack().var("FERRY_SFTP_PASSWORD_USER")),
            ("SFTP_PASSWORD", stack().file("FERRY_SFTP_PASSWORD_FILE")),
            ("SFTP_DIRECTORY", f.dir.remote()),
            ("FERRY_METADATA_TABLE", format!("{}.export_metadata", f.ds.name)),
        ])
        .env_remove("FERRY_CONFIG")
        .output()
        .expect("ferry verify");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(printed["missing_on_sftp"], json!(["part-000000000001.csv.gz"]));

    // Bad paths: outside the bucket, the whole bucket, an unknown export: 400, nothing run.
    for (body, want) in [
        (json!({"export_name": "product_data", "gcs_path": "gs://other-bucket/product_data/20260101/"}), "outside the configured bucket"),
        (json!({"export_name": "product_data", "gcs_path": format!("gs://{}/", bucket.name)}), "names the whole bucket"),
        (json!({"export_name": "nope", "gcs_path": path}), "unknown export"),
        (
            json!({"export_name": "product_data", "gcs_path": format!("gs://{}/ferry/customer_data/20260101/", bucket.name)}),
            "in the staged files of other exports",
        ),
        (json!({"export_name": "product_data"}), "gcs_path"),
    ] {
        let (code, v) = post(&svc, "/transfer", body).await;
        assert_eq!(code, 400, "{v}");
        assert!(v["error"].as_str().unwrap_or_default().contains(want), "{v}");
    }
    // An empty path: a clear FAILED, not SUCCESS.
    let (code, v) =
        post(&svc, "/transfer", json!({"export_name": "product_data", "gcs_path": format!("gs://{}/product_data/20991231/", bucket.name)}))
            .await;
    assert_eq!((code, &v["status"]), (404, &json!("error")), "{v}");
    assert!(v["error"].as_str().unwrap().contains("no files under"), "{v}");
    let rows =
        f.ds.rows(&format!(
            "SELECT export_status FROM `{}` WHERE export_name = 'product_data' ORDER BY completed_at",
            f.ds.table("export_metadata")
        ))
        .await;
    let last = rows.last().and_then(|r| crate::common::text(&r[0]));
    assert_eq!(last.as_deref(), Some("FAILED"), "the empty path is recorded FAILED");
}

/// An object replaced during the copy (a new generation): the run fails and nothing is
/// published; the next run delivers the new bytes.
#[tokio::test]
async fn an_object_replaced_during_the_copy_publishes_nothing() {
    let f = Fixture::new("staged_gen").await;
    let bucket = Bucket::create().await;
    let export = f.export.clone();
    for i in 0..3 {
        bucket.put(&format!("in/{i}.bin"), vec![i as u8; 600_000]).await;
    }
    let v = f.staged_config(
        &bucket,
        vec![json!({"name": export, "source": {"type": "bigquery_export", "table": "d.t"}, "file": {"on_existing": "overwrite"}})],
        json!({"parallel_objects": 1}),
    );
    let config = f.load(&v).expect("valid");
    let transfer = ferry_core::run::Transfer::parse(&format!("gs://{}/in/", bucket.name), config.staging.as_ref().unwrap()).unwrap();
    let opts = RunOptions { exports: Some(vec![export.clone()]), transfer: Some(transfer), ..RunOptions::new() };
    ferry_core::failpoint::arm_sleep("upload:during", &export, Duration::from_secs(3));
    let run = tokio::spawn({
        let config = config.clone();
        let opts = opts.clone();
        async move { ferry::run(&config, &opts, None).await }
    });
    // Replaced once the copy has begun (the objects were listed before it).
    ferry_testkit::eventually(Duration::from_secs(30), "a temporary file", || {
        let names = f.dir.names();
        async move { names.iter().any(|n| n.starts_with('.')).then_some(()) }
    })
    .await;
    bucket.put("in/2.bin", vec![42u8; 600_000]).await;
    let report = run.await.unwrap();
    let o = &report.outcomes[0];
    assert_eq!(o.status, RunStatus::Failed);
    assert!(o.error.as_deref().unwrap_or_default().contains("in/2.bin"), "{:?}", o.error);
    assert!(f.dir.names().is_empty(), "nothing published, no temporary file left: {:?}", f.dir.names());
    let report = ferry::run(&config, &opts, None).await;
    assert_eq!(report.outcomes[0].status, RunStatus::Success, "{:?}", report.outcomes[0].error);
    assert_eq!(f.dir.read("2.bin"), vec![42u8; 600_000]);
}

/// `ferry transfer` killed in the middle of the copy: no final name holds a partial file, and
/// the next transfer delivers every object whole.
#[tokio::test]
async fn a_killed_transfer_converges() {
    let f = Fixture::new("staged_kill").await;
    let bucket = Bucket::create().await;
    let export = f.export.clone();
    let objects: Vec<Vec<u8>> = (0..4u8).map(|i| (0..2_000_000u32).map(|j| (j % 251) as u8 ^ i).collect()).collect();
    for (i, o) in objects.iter().enumerate() {
        bucket.put(&format!("k/{i}.bin"), o.clone()).await;
    }
    // Files named by a template: the objects' number in name order.
    let v = f.staged_config(
        &bucket,
        vec![json!({"name": export, "source": {"type": "bigquery_export", "table": "d.t"}, "file": {"name": "K_{part}.bin"}})],
        json!({"parallel_objects": 2}),
    );
    let cfg = std::env::temp_dir().join(format!("{}.json", unique("staged-kill")));
    std::fs::write(&cfg, v.to_string()).unwrap();
    let path = format!("gs://{}/k/", bucket.name);
    let transfer = |failpoints: &str| {
        let mut c = tokio::process::Command::new(ferry_bin());
        c.args(["transfer", "--export", &export, "--gcs-path", &path, "--config"])
            .arg(&cfg)
            .envs(f.env.iter())
            .env("FERRY_LEASE_TTL_SECONDS", "30")
            .env("FERRY_FAILPOINTS", failpoints)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    };
    let mut child = transfer(&format!("upload:during@{export}=sleep:20000")).spawn().expect("ferry transfer");
    // Killed while the first object waits after its first write: a temporary file exists.
    ferry_testkit::eventually(Duration::from_secs(30), "a temporary file", || {
        let names = f.dir.names();
        async move { names.iter().any(|n| n.starts_with('.')).then_some(()) }
    })
    .await;
    child.kill().await.expect("kill");
    assert!(f.dir.names().iter().all(|n| n.starts_with('.')), "nothing under a final name: {:?}", f.dir.names());
    let release = std::process::Command::new(ferry_bin())
        .args(["lease", "release", "--export", &export, "--config"])
        .arg(&cfg)
        .envs(f.env.iter())
        .output()
        .expect("lease release");
    assert!(release.status.success(), "{}", String::from_utf8_lossy(&release.stderr));
    let out = transfer("").output().await.expect("second transfer");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (i, o) in objects.iter().enumerate() {
        assert_eq!(&f.dir.read(&format!("K_{:03}.bin", i + 1)), o, "K_{:03}.bin is the bytes of k/{i}.bin", i + 1);
    }
    assert_eq!(f.dir.names().iter().filter(|n| !n.starts_with('.')).count(), 4);
}
