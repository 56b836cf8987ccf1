use serde_json::json;

use crate::common::Fixture;

crate::both_read_paths!(delivered_bytes_parse_back_to_the_source_values);
/// Every BigQuery type the CSV rendering documents, written and parsed back.
async fn delivered_bytes_parse_back_to_the_source_values(read: &'static str) {
    let f = Fixture::on("types", read).await;
    let t = f.ds.table("all_types");
    f.ds.exec(&format!(
        "CREATE TABLE `{t}` (id INT64, s STRING, i INT64, fl FLOAT64, n NUMERIC, bn BIGNUMERIC, b BOOL, ts TIMESTAMP, d DATE, \
         dt DATETIME, tm TIME, by BYTES, j JSON, arr ARRAY<INT64>, st STRUCT<x INT64, y STRING>, updated_at TIMESTAMP)"
    ))
    .await;
    f.ds.exec(&format!(
        "INSERT INTO `{t}` VALUES \
         (1, 'plain', 9223372036854775807, 3.25, NUMERIC '12345678901234567890.123456789', BIGNUMERIC '12345678901234567890.123456789012345678', \
          TRUE, TIMESTAMP '2024-01-02 03:04:05.123456+00', DATE '2024-01-02', DATETIME '2024-01-02 03:04:05.250000', TIME '03:04:05.250000', \
          b'ab', JSON '{{\"k\":[1,2]}}', [1, 2, 3], STRUCT(7 AS x, 'z\"q' AS y), TIMESTAMP '2026-01-01 00:00:00+00'), \
         (2, 'comma, \"quote\"\\nnew line ünï', -5, -0.5, NUMERIC '-0.000000001', BIGNUMERIC '0', FALSE, TIMESTAMP '1970-01-01 00:00:00+00', \
          DATE '1999-12-31', DATETIME '1999-12-31 23:59:59', TIME '00:00:00', b'', JSON 'null', [], STRUCT(NULL AS x, '' AS y), TIMESTAMP '2026-01-01 00:00:01+00'), \
         (3, '', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, TIMESTAMP '2026-01-01 00:00:02+00')"
    ))
    .await;
    let mut export = json!({
        "name": f.export, "source_table": format!("{}.all_types", f.ds.name), "destination_filename": "types_{datetime}.csv",
        "timestamp_column": "updated_at", "incremental": true,
    });
    export["columns"] = json!(["id", "s", "i", "fl", "n", "bn", "b", "ts", "d", "dt", "tm", "by", "j", "arr", "st"]);
    let config = f.load(&f.json(export, json!({}))).expect("config");
    let r = f.run(&config, false).await;
    assert!(r.succeeded(), "{r:?}");

    let name = &f.dir.names()[0];
    let bytes = f.dir.read(name);
    let text = String::from_utf8(bytes.clone()).expect("UTF-8");
    assert!(text.starts_with("id,s,i,fl,n,bn,b,ts,d,dt,tm,by,j,arr,st\r\n"), "{text}");
    // NULL is an empty field; the empty string is a quoted empty field; BigQuery has no NULL
    // ARRAY (it answers an empty one), so that column reads [].
    assert!(text.ends_with("\r\n3,\"\",,,,,,,,,,,,[],\r\n"), "{text}");
    // Empty BYTES (row 2) is a quoted empty field too, so it differs from NULL BYTES (row 3).
    assert!(text.contains(",00:00:00,\"\",null,[],"), "{text}");

    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes.as_slice());
    let rows: Vec<Vec<String>> = reader.records().map(|r| r.expect("RFC 4180").iter().map(str::to_owned).collect()).collect();
    assert_eq!(
        rows[0],
        [
            "1",
            "plain",
            "9223372036854775807",
            "3.25",
            "12345678901234567890.123456789",
            "12345678901234567890.123456789012345678",
            "true",
            "2024-01-02T03:04:05.123456Z",
            "2024-01-02",
            "2024-01-02T03:04:05.250000",
            "03:04:05.250000",
            "YWI=",
            r#"{"k":[1,2]}"#,
            "[1,2,3]",
            r#"{"x":7,"y":"z\"q"}"#,
        ]
    );
    assert_eq!(rows[1][1], "comma, \"quote\"\nnew line ünï");
    assert_eq!(&rows[1][2..8], ["-5", "-0.5", "-0.000000001", "0", "false", "1970-01-01T00:00:00.000000Z"]);
    assert_eq!(rows[1][12], "null");
    assert_eq!(rows[1][13], "[]");
    assert_eq!(rows[1][14], r#"{"x":null,"y":""}"#);
    assert_eq!(rows[2][1], "");
    assert_eq!(rows[2][2], "");
    assert_eq!(rows[2][13], "[]");
    assert_eq!(rows[2][14], "");
}
