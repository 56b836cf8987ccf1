//! The BigQuery Storage Read API client against the emulator's gRPC endpoint: a session over a
//! table with selected columns and a row restriction, every stream read, batches decoded.

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use ferry_bigquery::storage::StorageRead;
use ferry_bigquery::TableRef;
use ferry_google::{Auth, TokenSource};
use ferry_testkit::{stack, unique, TestDataset};
use serde_json::{json, Value};

use crate::common::{orders, Fixture};

fn client() -> StorageRead {
    let s = stack();
    let tokens = TokenSource::new(reqwest::Client::new(), Auth::None);
    StorageRead::new(&s.var("FERRY_BQ_GRPC_ENDPOINT"), &s.bq_project(), tokens, std::time::Duration::from_secs(60))
}

#[tokio::test]
async fn a_session_reads_the_selected_columns_of_the_restricted_rows_once() {
    let ds = TestDataset::create("storage").await;
    ds.exec(&format!("CREATE TABLE `{}` (id INT64, note STRING, updated_at TIMESTAMP)", ds.table("t"))).await;
    ds.exec(&format!(
        "INSERT INTO `{}` (id, note, updated_at) SELECT n, CONCAT('row ', CAST(n AS STRING)), TIMESTAMP_ADD(TIMESTAMP '2026-10-01 00:00:00+00', INTERVAL n SECOND) FROM UNNEST(GENERATE_ARRAY(1, 1000)) AS n",
        ds.table("t")
    ))
    .await;
    let table = TableRef { project: stack().bq_project(), dataset: ds.name.clone(), table: "t".into() };
    let read = client();
    let session = read
        .create_session(&table, &["id".into(), "updated_at".into()], "updated_at > TIMESTAMP '2026-10-01 00:10:00+00'", 0)
        .await
        .expect("a read session");
    assert!(!session.streams.is_empty(), "{session:?}");
    let mut ids = Vec::new();
    for stream in &session.streams {
        let before = ids.len();
        let mut batches = read.read_stream(&session, stream, 0).await.expect("ReadRows");
        while let Some(batch) = batches.next().await.expect("a batch") {
            let schema = batch.schema();
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            assert_eq!(names, ["id", "updated_at"]);
            ids.extend(batch.column(0).as_primitive::<Int64Type>().values().iter().copied());
        }
        assert_eq!(batches.rows as usize, ids.len() - before, "the stream's own count");
    }
    ids.sort_unstable();
    assert_eq!(ids, (601..=1000).collect::<Vec<i64>>(), "rows after 00:10:00, each once");

    // A predicate the server cannot run is its error, named.
    let e = read.create_session(&table, &[], "no_such_column > 1", 0).await.expect_err("bad restriction");
    assert!(e.to_string().contains("CreateReadSession") && e.to_string().contains("INVALID_ARGUMENT"), "{e}");
}

/// The Storage Read path delivers the same bytes as the REST path: every type of the type test,
/// NULLs, and the window (full, then incremental).
#[tokio::test]
async fn the_storage_path_delivers_what_the_rest_path_delivers() {
    let f = crate::common::Fixture::new("storage").await;
    let t = f.ds.table("all_types");
    f.ds.exec(&format!(
        "CREATE TABLE `{t}` (id INT64, s STRING, i INT64, fl FLOAT64, n NUMERIC, bn BIGNUMERIC, b BOOL, ts TIMESTAMP, d DATE, \
         dt DATETIME, tm TIME, by BYTES, j JSON, arr ARRAY<INT64>, st STRUCT<x INT64, y STRING>, updated_at TIMESTAMP)"
    ))
    .await;
    let rows = |first: i64| {
        format!(
            "INSERT INTO `{t}` VALUES \
             ({first}, 'plain', 9223372036854775807, 3.25, NUMERIC '12345678901234567890.123456789', BIGNUMERIC '12345678901234567890.123456789012345678', \
              TRUE, TIMESTAMP '2024-01-02 03:04:05.123456+00', DATE '2024-01-02', DATETIME '2024-01-02 03:04:05.250000', TIME '03:04:05.250000', \
              b'ab', JSON '{{\"k\":[1,2]}}', [1, 2, 3], STRUCT(7 AS x, 'z\"q' AS y), TIMESTAMP '2026-01-01 00:00:{first:02}+00'), \
             ({}, 'comma, \"quote\"\\nnew line ünï', -5, -0.5, NUMERIC '-0.000000001', BIGNUMERIC '0', FALSE, TIMESTAMP '1970-01-01 00:00:00+00', \
              DATE '1999-12-31', DATETIME '1999-12-31 23:59:59', TIME '00:00:00', b'', JSON 'null', [], STRUCT(NULL AS x, '' AS y), TIMESTAMP '2026-01-01 00:00:{:02}+00'), \
             ({}, '', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, TIMESTAMP '2026-01-01 00:00:{:02}+00')",
            first + 1,
            first + 1,
            first + 2,
            first + 2
        )
    };
    f.ds.exec(&rows(1)).await;
    let storage_dir = ferry_testkit::TestDir::create("storage-path");
    let config = |name: &str, storage: bool| {
        let export = serde_json::json!({
            "name": name, "source_table": format!("{}.all_types", f.ds.name), "destination_filename": "types_{datetime}.csv",
            "timestamp_column": "updated_at", "incremental": true, "settle": 0,
            "columns": ["id", "s", "i", "fl", "n", "bn", "b", "ts", "d", "dt", "tm", "by", "j", "arr", "st"],
        });
        let sftp = if storage { serde_json::json!({"path": storage_dir.remote()}) } else { serde_json::json!({}) };
        let mut v = f.json(export, sftp);
        v["bigquery"]["read_api"] = if storage { "storage" } else { "rest" }.into();
        f.load(&v).expect("config")
    };
    let (rest, storage) = (config(&f.export, false), config(&ferry_testkit::unique("s"), true));
    // The control: the storage config reads through the Storage Read endpoint, not REST.
    let mut dead = f.json(
        serde_json::json!({"name": ferry_testkit::unique("d"), "source_table": format!("{}.all_types", f.ds.name), "destination_filename": "x_{datetime}.csv"}),
        serde_json::json!({"path": storage_dir.remote()}),
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    dead["bigquery"]["read_api"] = "storage".into();
    dead["bigquery"]["storage_endpoint"] = format!("http://{closed}").into();
    let r = f.run(&f.load(&dead).expect("config"), false).await;
    assert!(!r.succeeded() && r.outcomes[0].error.as_deref().unwrap_or_default().contains("Storage Read"), "{:?}", r.outcomes[0].error);
    assert!(storage_dir.names().is_empty());
    let files = |dir: &ferry_testkit::TestDir| -> Vec<Vec<u8>> { dir.names().iter().map(|n| dir.read(n)).collect() };
    for round in 0..2 {
        if round == 1 {
            f.ds.exec(&rows(4)).await;
        }
        for (what, c) in [("rest", &rest), ("storage", &storage)] {
            let r = f.run(c, false).await;
            assert!(r.succeeded(), "{what} round {round}: {:?}", r.outcomes[0].error);
        }
        let (a, b) = (files(&f.dir), files(&storage_dir));
        assert_eq!(a.len(), round + 1);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(String::from_utf8_lossy(y), String::from_utf8_lossy(x), "round {round}: storage path vs REST path");
        }
        assert_eq!(a.len(), b.len());
    }
}

/// A config of `f` exporting `source` (a `source_table` or `query` object) with `read_api`, the
/// Storage Read endpoint being `storage_endpoint`.
fn export_config(f: &Fixture, source: Value, read_api: &str, storage_endpoint: &str) -> Value {
    let mut export = json!({"name": unique("a"), "destination_filename": "{name}_{datetime}.csv"});
    for (k, v) in source.as_object().cloned().unwrap_or_default() {
        export[k] = v;
    }
    let mut v = f.json(export, json!({}));
    v["bigquery"]["read_api"] = read_api.into();
    v["bigquery"]["storage_endpoint"] = storage_endpoint.into();
    v
}

/// `auto` reads a table through the Storage Read API (a dead Storage Read endpoint fails it,
/// nothing delivered), and a view and a query through REST (the dead endpoint is never called).
#[tokio::test]
async fn auto_reads_tables_through_storage_and_views_and_queries_through_rest() {
    let f = Fixture::new("auto").await;
    orders(&f, &[(1, "2026-01-01 00:00:00"), (2, "2026-01-01 00:00:01")]).await;
    f.ds.exec(&format!("CREATE VIEW `{}` AS SELECT id, updated_at FROM `{}`", f.ds.table("v"), f.ds.table("orders"))).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dead = format!("http://{closed}");
    let table = json!({"source_table": format!("{}.orders", f.ds.name)});
    let r = f.run(&f.load(&export_config(&f, table, "auto", &dead)).expect("config"), false).await;
    let error = r.outcomes[0].error.clone().unwrap_or_default();
    assert!(!r.succeeded() && error.contains("Storage Read") && error.contains("orders"), "{error}");
    assert!(f.dir.names().is_empty(), "nothing delivered");

    for source in
        [json!({"source_table": format!("{}.v", f.ds.name)}), json!({"query": format!("SELECT id FROM `{}`", f.ds.table("orders"))})]
    {
        let before = f.dir.names().len();
        let r = f.run(&f.load(&export_config(&f, source.clone(), "auto", &dead)).expect("config"), false).await;
        assert!(r.succeeded(), "{source}: {:?}", r.outcomes[0].error);
        assert_eq!(f.dir.names().len(), before + 1, "{source}");
    }
    // `storage` insists: the view goes to the (dead) Storage Read endpoint.
    let view = json!({"source_table": format!("{}.v", f.ds.name)});
    let r = f.run(&f.load(&export_config(&f, view, "storage", &dead)).expect("config"), false).await;
    let error = r.outcomes[0].error.clone().unwrap_or_default();
    assert!(
        !r.succeeded() && error.contains("Storage Read") && error.contains(".v"),
        "storage reads a view through the Storage Read API: {error}"
    );
}

/// A table of several streams (the emulator cuts one per 100,000 rows), read two at a time:
/// every row delivered once, and the incremental window through the row restriction.
#[tokio::test]
async fn a_table_of_several_streams_is_delivered_whole_and_once() {
    let f = Fixture::new("streams").await;
    let t = f.ds.table("big");
    f.ds.exec(&format!(
        "CREATE TABLE `{t}` AS SELECT id, CONCAT('row-', CAST(id AS STRING)) AS note, \
         TIMESTAMP_ADD(TIMESTAMP '2026-01-01 00:00:00+00', INTERVAL id SECOND) AS updated_at FROM UNNEST(GENERATE_ARRAY(1, 250000)) AS id"
    ))
    .await;
    let mut v = f.json(
        json!({"name": f.export, "source_table": format!("{}.big", f.ds.name), "destination_filename": "{name}_{datetime}.csv",
               "timestamp_column": "updated_at", "incremental": true, "settle": 0}),
        json!({}),
    );
    v["bigquery"]["storage_streams"] = 2.into();
    let config = f.load(&v).expect("config");
    let table = TableRef { project: stack().bq_project(), dataset: f.ds.name.clone(), table: "big".into() };
    let streams = client().create_session(&table, &[], "", 0).await.expect("a session").streams.len();
    assert!(streams >= 3, "the emulator cuts the table into several streams: {streams}");
    let r = f.run(&config, false).await;
    assert!(r.succeeded(), "{:?}", r.outcomes[0].error);
    let ids = |rows: Vec<Vec<String>>| {
        let mut ids: Vec<i64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
        ids.sort_unstable();
        ids
    };
    let rows = f.delivered_rows();
    assert!(rows.iter().all(|r| r[1] == format!("row-{}", r[0])), "rows whole");
    assert_eq!(ids(rows), (1..=250_000).collect::<Vec<i64>>(), "every row once");
    assert_eq!(f.metadata().await.last().map(|m| m.1), Some(250_000));

    // The next window: 150,000 rows (two streams) after the watermark.
    f.ds.exec(&format!(
        "INSERT INTO `{t}` SELECT id, CONCAT('row-', CAST(id AS STRING)), TIMESTAMP_ADD(TIMESTAMP '2026-01-01 00:00:00+00', INTERVAL id SECOND) \
         FROM UNNEST(GENERATE_ARRAY(250001, 400000)) AS id"
    ))
    .await;
    let r = f.run(&config, false).await;
    assert!(r.succeeded(), "{:?}", r.outcomes[0].error);
    assert_eq!(ids(f.delivered_rows()), (1..=400_000).collect::<Vec<i64>>(), "the window's rows, none twice");
}

/// Identifiers are quoted in the row restriction (a cursor column named by a reserved word), and
/// a configured column the table lacks is an error naming the table and the column, before
/// anything is read or delivered.
#[tokio::test]
async fn reserved_names_are_quoted_and_a_missing_column_is_named() {
    let f = Fixture::new("names").await;
    let t = f.ds.table("t");
    f.ds.exec(&format!("CREATE TABLE `{t}` (id INT64, `from` TIMESTAMP)")).await;
    f.ds.exec(&format!("INSERT INTO `{t}` VALUES (1, TIMESTAMP '2026-01-01 00:00:00+00'), (2, TIMESTAMP '2026-01-02 00:00:00+00')")).await;
    let export = |columns: Value| {
        json!({"name": f.export, "source_table": format!("{}.t", f.ds.name), "destination_filename": "{name}_{datetime}.csv",
               "timestamp_column": "from", "incremental": true, "settle": 0, "columns": columns})
    };
    let config = f.load(&f.json(export(json!(["id", "nope"])), json!({}))).expect("config");
    let r = f.run(&config, false).await;
    let error = r.outcomes[0].error.clone().unwrap_or_default();
    assert!(error.contains(&format!("table {}.{}.t has no column nope", stack().bq_project(), f.ds.name)), "{error}");
    assert!(f.dir.names().is_empty());

    let config = f.load(&f.json(export(json!(["id", "from"])), json!({}))).expect("config");
    let r = f.run(&config, false).await;
    assert!(r.succeeded(), "{:?}", r.outcomes[0].error);
    assert_eq!(f.delivered_rows().iter().map(|r| r[0].clone()).collect::<Vec<_>>(), ["1", "2"]);
    f.ds.exec(&format!("INSERT INTO `{t}` VALUES (3, TIMESTAMP '2026-01-03 00:00:00+00')")).await;
    let r = f.run(&config, false).await;
    assert!(r.succeeded(), "{:?}", r.outcomes[0].error);
    assert_eq!(f.delivered_rows().iter().map(|r| r[0].clone()).collect::<Vec<_>>(), ["1", "2", "3"], "only the new row");
}
