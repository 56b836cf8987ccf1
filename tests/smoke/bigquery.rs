use ferry_bigquery::Cell;
use ferry_bigquery::QueryParam;
use ferry_testkit::TestDataset;

#[tokio::test]
async fn parameterized_query_against_the_emulator() {
    let ds = TestDataset::create("smoke_bq").await;
    let table = ds.table("events");
    ds.exec(&format!("CREATE TABLE `{table}` (id INT64, name STRING, ts TIMESTAMP)")).await;
    ds.exec(&format!(
        "INSERT INTO `{table}` (id, name, ts) VALUES (1, 'a', TIMESTAMP '2024-01-01 00:00:00.000001+00'), \
         (2, 'b', TIMESTAMP '2024-01-02 00:00:00+00'), (3, 'c', TIMESTAMP '2024-01-03 00:00:00+00')"
    ))
    .await;

    let params = [QueryParam::new("lo", "TIMESTAMP", "2024-01-01 00:00:00.000001+00:00"), QueryParam::new("name", "STRING", "c")];
    let job =
        ds.bq.query(&format!("SELECT id, ts FROM `{table}` WHERE ts > @lo OR name = @name ORDER BY id"), &params, 1).await.expect("query");
    assert_eq!(job.schema.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), ["id", "ts"]);
    let rows = job.collect().await.expect("pages");
    // Page size 1: three pages were fetched. Timestamps come back as int64 microseconds.
    let t = |s: &str| Cell::Text(s.into());
    assert_eq!(rows, vec![vec![t("2"), t("1704153600000000")], vec![t("3"), t("1704240000000000")]]);
}

#[tokio::test]
async fn bad_sql_is_an_error_that_names_the_problem() {
    let ds = TestDataset::create("smoke_bq").await;
    let err = ds.bq.query(&format!("SELECT nope FROM `{}`", ds.table("missing")), &[], 10).await.expect_err("must fail");
    let text = err.to_string();
    assert!(text.contains("missing"), "{text}");
}
