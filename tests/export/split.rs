//! Split exports: `max_rows_per_file` / `max_bytes_per_file` and `{part}`.

use std::io::Read;

use ferry_core::failpoint;
use ferry_core::run::RunOptions;
use ferry_core::FileRecord;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::common::{ids, insert, orders, Fixture};

/// `(id, ts)` rows 1..=n, one second apart.
fn rows(from: i64, n: i64) -> Vec<(i64, String)> {
    (from..from + n).map(|i| (i, format!("2026-08-01 00:{:02}:{:02}+00", i / 60, i % 60))).collect()
}

async fn orders_n(f: &Fixture, from: i64, n: i64) {
    let r = rows(from, n);
    let r: Vec<(i64, &str)> = r.iter().map(|(i, t)| (*i, t.as_str())).collect();
    if from == 1 {
        orders(f, &r).await;
    } else {
        insert(f, &r).await;
    }
}

/// The `files` column of the latest record with `status`.
async fn recorded_files(f: &Fixture, status: &str) -> Vec<FileRecord> {
    let latest = f.column("files", Some(status)).await.pop().flatten().expect("files recorded");
    serde_json::from_str(&latest).expect("files JSON")
}

fn csv_text(bytes: &[u8], gzip: bool) -> String {
    let mut text = String::new();
    if gzip {
        flate2::read::GzDecoder::new(bytes).read_to_string(&mut text).expect("each file is a gzip file of its own");
    } else {
        text = String::from_utf8(bytes.to_vec()).expect("UTF-8");
    }
    text
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn split_by_rows_delivers_numbered_files_each_with_a_header() {
    let f = Fixture::new("split").await;
    orders_n(&f, 1, 7).await;
    let config = f.config("orders", json!({"destination_filename": "{name}_{date}_{part}.csv", "max_rows_per_file": 3}));

    // A dry run counts and names the files and writes none.
    let mut opts = RunOptions::new();
    opts.dry_run = true;
    let r = ferry::run(&config, &opts, None).await;
    assert!(r.succeeded(), "{r:?}");
    assert_eq!(r.outcomes[0].files.iter().map(|x| x.rows).collect::<Vec<_>>(), [3, 3, 1]);
    assert!(f.dir.names().is_empty(), "a dry run writes nothing: {:?}", f.dir.names());

    let r = f.run(&config, false).await;
    assert!(r.succeeded(), "{r:?}");
    let names = f.dir.names();
    let date = chrono::Utc::now().format("%Y%m%d");
    let expected: Vec<String> = (1..=3).map(|p| format!("{}_{date}_{p:03}.csv", f.export)).collect();
    assert_eq!(names, expected);
    let mut per_file = Vec::new();
    for name in &names {
        let text = csv_text(&f.dir.read(name), false);
        assert!(text.starts_with("id,note,updated_at\r\n"), "{name} has its own header: {text:?}");
        per_file.push(text.lines().count() - 1);
    }
    assert_eq!(per_file, [3, 3, 1]);
    // The read query has no ORDER BY: rows arrive in BigQuery's order.
    let mut got = ids(&f.delivered_rows());
    got.sort_unstable();
    assert_eq!(got, [1, 2, 3, 4, 5, 6, 7], "every row once");

    let o = &r.outcomes[0];
    assert_eq!((o.rows, o.files.len()), (7, 3));
    assert_eq!(o.file.as_deref(), Some(expected.join(", ").as_str()));
    let files = recorded_files(&f, "SUCCESS").await;
    assert_eq!(files, o.files, "the metadata row lists every file");
    for (file, name) in files.iter().zip(&names) {
        let bytes = f.dir.read(name);
        assert_eq!(&file.name, name);
        assert_eq!(file.bytes, bytes.len() as u64);
        assert_eq!(file.sha256, hex_sha256(&bytes), "{name}");
    }
    let meta = f.metadata().await;
    assert_eq!(meta.last().map(|m| (m.0.as_str(), m.1)), Some(("SUCCESS", 7)));
}

#[tokio::test]
async fn split_by_bytes_with_gzip_keeps_every_file_under_the_limit() {
    let f = Fixture::new("split").await;
    orders_n(&f, 1, 100).await;
    let config = f.config(
        "orders",
        json!({"destination_filename": "{name}_{datetime}_{part}.csv.gz", "compression": "GZIP", "max_bytes_per_file": 1024}),
    );
    let r = f.run(&config, false).await;
    assert!(r.succeeded(), "{r:?}");
    let names = f.dir.names();
    assert!(names.len() >= 3, "100 rows of ~40 bytes make several 1 KiB files: {names:?}");
    let mut all = Vec::new();
    for name in &names {
        let text = csv_text(&f.dir.read(name), true);
        assert!(text.len() <= 1024, "{name}: {} bytes of CSV", text.len());
        assert!(text.len() > 1024 - 80, "{name} is filled up to the limit: {} bytes", text.len());
        let mut r = csv::ReaderBuilder::new().has_headers(true).from_reader(text.as_bytes());
        assert_eq!(r.headers().expect("header").iter().collect::<Vec<_>>(), ["id", "note", "updated_at"]);
        for rec in r.records() {
            all.push(rec.expect("CSV")[0].parse::<i64>().expect("id"));
        }
    }
    all.sort_unstable();
    assert_eq!(all, (1..=100).collect::<Vec<_>>(), "every row once, across the files");

    // The next run starts again at part 001 with only the new rows.
    insert(&f, &[(101, "2026-08-02 00:00:00+00")]).await;
    let r = f.run(&config, false).await;
    assert!(r.succeeded(), "{r:?}");
    assert_eq!(r.outcomes[0].files.len(), 1);
    assert_eq!(r.outcomes[0].rows, 1);
    assert!(r.outcomes[0].files[0].name.ends_with("_001.csv.gz"), "{:?}", r.outcomes[0].files);
}

#[tokio::test]
async fn a_publish_interrupted_between_files_is_finished_by_the_next_run() {
    let f = Fixture::new("split").await;
    orders_n(&f, 1, 5).await;
    let config = f.config("orders", json!({"destination_filename": "{name}_{datetime}_{part}.csv", "max_rows_per_file": 2}));
    failpoint::arm("publish:part", &f.export);
    let r = f.run(&config, false).await;
    assert!(!r.succeeded());
    let err = r.outcomes[0].error.clone().unwrap_or_default();
    let names = f.dir.names();
    let published: Vec<&String> = names.iter().filter(|n| !n.starts_with('.')).collect();
    let temps: Vec<&String> = names.iter().filter(|n| n.starts_with('.')).collect();
    assert_eq!(published.len(), 1, "only the first file was published: {names:?}");
    assert!(published[0].ends_with("_001.csv"));
    assert_eq!(temps.len(), 2, "the other two wait, verified, under their temporary names: {names:?}");
    assert!(err.contains("injected failure at publish:part") && err.contains("the next run finishes publishing"), "{err}");
    assert_eq!(f.watermark().await, None, "the watermark did not move");
    assert_eq!(f.metadata().await.last().map(|m| m.0.clone()).as_deref(), Some("PENDING"), "no FAILED record hides the PENDING one");

    // The next run, at once (file names with {datetime} must not collide within a second).
    orders_n(&f, 6, 1).await;
    let r = f.run(&config, false).await;
    assert!(r.succeeded(), "{r:?}");
    assert_eq!(r.outcomes[0].reconciled.len(), 1, "{r:?}");
    assert_eq!(r.outcomes[0].rows, 1, "only the new row is read");
    let mut got = ids(&f.delivered_rows());
    got.sort_unstable();
    assert_eq!(got, [1, 2, 3, 4, 5, 6], "every row exactly once");
    assert_eq!(f.watermark().await.as_deref(), Some("2026-08-01T00:00:06.000000Z"));
    let statuses: Vec<String> = f.metadata().await.into_iter().map(|m| m.0).collect();
    assert_eq!(statuses, ["PENDING", "SUCCESS", "PENDING", "SUCCESS"], "the interrupted run is SUCCESS, then the new one");
}

#[tokio::test]
async fn an_interrupted_split_run_is_reconciled_when_every_file_is_there() {
    let f = Fixture::new("split").await;
    orders_n(&f, 1, 5).await;
    let config = f.config("orders", json!({"destination_filename": "{name}_{datetime}_{part}.csv", "max_rows_per_file": 2}));
    failpoint::arm("publish:after", &f.export);
    let r = f.run(&config, false).await;
    assert!(!r.succeeded());
    assert_eq!(f.dir.names().len(), 3, "all three files were published before the failure");
    assert_eq!(recorded_files(&f, "PENDING").await.len(), 3);

    orders_n(&f, 6, 1).await;
    let r = f.run(&config, false).await;
    assert!(r.succeeded(), "{r:?}");
    assert_eq!(r.outcomes[0].reconciled.len(), 1, "{r:?}");
    assert_eq!(r.outcomes[0].rows, 1, "only the new row is read");
    assert_eq!(ids(&f.delivered_rows()), [1, 2, 3, 4, 5, 6], "every row exactly once");
}

#[tokio::test]
async fn a_row_larger_than_max_bytes_per_file_is_a_clear_error_and_writes_nothing() {
    let f = Fixture::new("split").await;
    orders(&f, &[(1, "2026-08-01 00:00:00+00")]).await;
    f.ds.exec(&format!(
        "INSERT INTO `{}` (id, note, updated_at) VALUES (2, REPEAT('x', 2000), TIMESTAMP '2026-08-01 00:00:01+00')",
        f.ds.table("orders")
    ))
    .await;
    let config = f.config("orders", json!({"destination_filename": "{name}_{datetime}_{part}.csv", "max_bytes_per_file": 1024}));
    let r = f.run(&config, false).await;
    assert!(!r.succeeded());
    let err = r.outcomes[0].error.clone().unwrap_or_default();
    assert!(err.contains("does not fit in a file of max_bytes_per_file = 1024 bytes") && err.contains("raise max_bytes_per_file"), "{err}");
    assert!(f.dir.names().is_empty(), "nothing published, no temporary file left: {:?}", f.dir.names());
    assert_eq!(f.watermark().await, None);
}
