//! The BigQuery Storage Read API client against the emulator's gRPC endpoint: a session over a
//! table with selected columns and a row restriction, every stream read, batches decoded.

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use ferry_bigquery::storage::StorageRead;
use ferry_bigquery::TableRef;
use ferry_google::{Auth, TokenSource};
use ferry_testkit::{stack, TestDataset};

fn client() -> StorageRead {
    let s = stack();
    StorageRead::new(&s.var("FERRY_BQ_GRPC_ENDPOINT"), &s.bq_project(), TokenSource::new(reqwest::Client::new(), Auth::None))
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
        let mut batches = read.read_stream(&session, stream, 0).await.expect("ReadRows");
        while let Some(batch) = batches.next().await.expect("a batch") {
            let schema = batch.schema();
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            assert_eq!(names, ["id", "updated_at"]);
            ids.extend(batch.column(0).as_primitive::<Int64Type>().values().iter().copied());
        }
        assert_eq!(batches.rows as usize, ids.len());
    }
    ids.sort_unstable();
    assert_eq!(ids, (601..=1000).collect::<Vec<i64>>(), "rows after 00:10:00, each once");

    // A predicate the server cannot run is its error, named.
    let e = read.create_session(&table, &[], "no_such_column > 1", 0).await.expect_err("bad restriction");
    assert!(e.to_string().contains("CreateReadSession"), "{e}");
}
