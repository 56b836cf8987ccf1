use ferry_core::RunStatus;
use serde_json::json;
use sha2::Digest;

use crate::common::{ids, insert, orders, Fixture};

crate::both_read_paths!(first_run_delivers_all_then_only_new_rows);
async fn first_run_delivers_all_then_only_new_rows(read: &'static str) {
    let f = Fixture::on("inc", read).await;
    orders(&f, &[(1, "2026-01-01 00:00:00+00"), (2, "2026-01-02 00:00:00.000001+00"), (3, "2026-01-03 00:00:00+00")]).await;
    let config = f.config("orders", json!({"columns": ["id", "note", "updated_at"]}));

    let r1 = f.run(&config, false).await;
    assert!(r1.succeeded(), "{r1:?}");
    assert_eq!(r1.outcomes[0].rows, 3);
    assert_eq!(ids(&f.delivered_rows()), [1, 2, 3]);
    assert_eq!(f.watermark().await.as_deref(), Some("2026-01-03T00:00:00.000000Z"));
    assert_eq!(f.delivered_rows()[1], ["2", "row 2", "2026-01-02T00:00:00.000001Z"]);

    // Nothing new: no file, an EMPTY record, the watermark stays.
    let r2 = f.run(&config, false).await;
    assert_eq!(r2.outcomes[0].status, RunStatus::Empty);
    assert_eq!(f.dir.names().len(), 1);

    insert(&f, &[(4, "2026-01-03 00:00:00.000001+00"), (5, "2026-01-04 00:00:00+00")]).await;
    let r3 = f.run(&config, false).await;
    assert!(r3.succeeded(), "{r3:?}");
    assert_eq!(r3.outcomes[0].rows, 2);
    assert_eq!(f.dir.names().len(), 2);
    assert_eq!(ids(&f.delivered_rows()), [1, 2, 3, 4, 5], "each row exactly once");
    assert_eq!(f.watermark().await.as_deref(), Some("2026-01-04T00:00:00.000000Z"));

    let statuses: Vec<String> = f.metadata().await.into_iter().map(|m| m.0).collect();
    assert_eq!(statuses, ["PENDING", "SUCCESS", "EMPTY", "PENDING", "SUCCESS"]);
}

crate::both_read_paths!(rows_tied_on_the_boundary_are_delivered_once);
async fn rows_tied_on_the_boundary_are_delivered_once(read: &'static str) {
    let f = Fixture::on("tie", read).await;
    let t = "2026-02-01 12:00:00.123456+00";
    orders(&f, &[(1, "2026-02-01 00:00:00+00"), (2, t), (3, t)]).await;
    let config = f.config("orders", json!({}));
    assert!(f.run(&config, false).await.succeeded());
    assert_eq!(f.watermark().await.as_deref(), Some("2026-02-01T12:00:00.123456Z"));

    // New rows one microsecond after the boundary and later: they arrive, and the rows tied on
    // the old boundary are not sent again.
    insert(&f, &[(4, "2026-02-01 12:00:00.123457+00"), (5, "2026-02-02 00:00:00+00")]).await;
    assert!(f.run(&config, false).await.succeeded());
    let mut got = ids(&f.delivered_rows());
    got.sort();
    assert_eq!(got, [1, 2, 3, 4, 5], "the tied rows 2 and 3 arrive once, 4 is one microsecond later and still arrives");
}

crate::both_read_paths!(full_export_delivers_everything_and_watermark_only_moves_forward);
async fn full_export_delivers_everything_and_watermark_only_moves_forward(read: &'static str) {
    let f = Fixture::on("full", read).await;
    orders(&f, &[(1, "2026-03-01 00:00:00+00"), (2, "2026-03-02 00:00:00+00")]).await;
    let config = f.config("orders", json!({}));
    assert!(f.run(&config, false).await.succeeded());
    let full = f.run(&config, true).await;
    assert!(full.succeeded(), "{full:?}");
    assert_eq!(full.outcomes[0].rows, 2);
    assert_eq!(ids(&f.delivered_rows()), [1, 2, 1, 2]);
    assert_eq!(f.watermark().await.as_deref(), Some("2026-03-02T00:00:00.000000Z"));
}

crate::both_read_paths!(gzip_delivery_matches_the_recorded_size_and_hash);
async fn gzip_delivery_matches_the_recorded_size_and_hash(read: &'static str) {
    let f = Fixture::on("gz", read).await;
    orders(&f, &[(1, "2026-04-01 00:00:00+00"), (2, "2026-04-02 00:00:00+00")]).await;
    let config = f.config("orders", json!({"compression": "GZIP", "destination_filename": "{name}_{date}.csv.gz"}));
    let r = f.run(&config, false).await;
    assert!(r.succeeded(), "{r:?}");
    let name = &f.dir.names()[0];
    assert!(name.ends_with(".csv.gz"));
    let bytes = f.dir.read(name);
    assert_eq!(bytes.len() as u64, r.outcomes[0].bytes);
    let sha256: String = sha2::Sha256::digest(&bytes).iter().map(|x| format!("{x:02x}")).collect();
    assert_eq!(Some(sha256), r.outcomes[0].sha256);
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(bytes.as_slice()), &mut text).expect("gunzip");
    assert_eq!(text, "id,note,updated_at\r\n1,row 1,2026-04-01T00:00:00.000000Z\r\n2,row 2,2026-04-02T00:00:00.000000Z\r\n");
}

crate::both_read_paths!(lookback_catches_late_rows_and_resends_the_overlap);
async fn lookback_catches_late_rows_and_resends_the_overlap(read: &'static str) {
    let f = Fixture::on("lookback", read).await;
    orders(&f, &[(1, "2026-09-01 00:00:00+00"), (2, "2026-09-01 10:00:00+00")]).await;
    let config = f.config("orders", json!({"lookback": 3600}));
    assert!(f.run(&config, false).await.succeeded());
    // Nothing newer, but the lookback window (09:00, 10:00] holds row 2: it is sent again
    // (lookback is at least once for the overlap).
    let again = f.run(&config, false).await;
    assert_eq!(again.outcomes[0].status, RunStatus::Success, "{again:?}");
    assert_eq!(again.outcomes[0].rows, 1);

    // Row 3 arrives late (behind the watermark, inside the hour of lookback), row 4 is new.
    insert(&f, &[(3, "2026-09-01 09:30:00+00"), (4, "2026-09-01 11:00:00+00")]).await;
    let r = f.run(&config, false).await;
    assert!(r.succeeded(), "{r:?}");
    assert_eq!(r.outcomes[0].window.lo.as_ref().map(|v| v.canonical()).as_deref(), Some("2026-09-01T09:00:00.000000Z"));
    // Files in run order; within a file, BigQuery's order (the read query has no ORDER BY).
    let got = ids(&f.delivered_rows());
    assert_eq!(got.len(), 6, "{got:?}");
    let runs: Vec<Vec<i64>> = [&got[..2], &got[2..3], &got[3..]]
        .iter()
        .map(|run| {
            let mut run = run.to_vec();
            run.sort_unstable();
            run
        })
        .collect();
    assert_eq!(runs, [vec![1, 2], vec![2], vec![2, 3, 4]], "row 2 is in the overlap and is sent again");
    assert_eq!(f.watermark().await.as_deref(), Some("2026-09-01T11:00:00.000000Z"));
}

crate::both_read_paths!(query_export_with_run_date_delimiter_and_no_header);
async fn query_export_with_run_date_delimiter_and_no_header(read: &'static str) {
    let f = Fixture::on("query", read).await;
    orders(&f, &[(1, "2026-10-01 08:00:00+00"), (2, "2026-10-02 08:00:00+00"), (3, "2026-10-02 09:00:00+00")]).await;
    let export = json!({
        "name": f.export,
        "query": format!("SELECT id, note, updated_at FROM `{}` WHERE DATE(updated_at) = '{{date}}'", f.ds.table("orders")),
        "destination_filename": "{name}_{date}.txt",
        "delimiter": "|",
        "header": false,
    });
    let config = f.load(&f.json(export, json!({}))).expect("config");
    let mut opts = ferry_core::run::RunOptions::new();
    opts.run_date = chrono::NaiveDate::from_ymd_opt(2026, 10, 2);
    let r = ferry::run(&config, &opts, None).await;
    assert!(r.succeeded(), "{r:?}");
    let name = &f.dir.names()[0];
    assert_eq!(name, &format!("{}_{}.txt", f.export, chrono::Utc::now().format("%Y%m%d")));
    let text = String::from_utf8(f.dir.read(name)).unwrap();
    let mut lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
    lines.sort();
    assert_eq!(lines, ["2|row 2|2026-10-02T08:00:00.000000Z", "3|row 3|2026-10-02T09:00:00.000000Z"]);
}

crate::both_read_paths!(dry_run_reads_everything_and_delivers_nothing);
async fn dry_run_reads_everything_and_delivers_nothing(read: &'static str) {
    let f = Fixture::on("dry", read).await;
    orders(&f, &[(1, "2026-11-01 00:00:00+00"), (2, "2026-11-02 00:00:00+00")]).await;
    let config = f.config("orders", json!({}));
    let mut opts = ferry_core::run::RunOptions::new();
    opts.dry_run = true;
    let r = ferry::run(&config, &opts, None).await;
    assert!(r.succeeded(), "{r:?}");
    assert_eq!(r.outcomes[0].rows, 2);
    assert!(f.dir.names().is_empty(), "nothing delivered");
    assert!(f.metadata().await.is_empty(), "nothing recorded");
    // The real run afterwards still starts from the beginning.
    assert_eq!(f.run(&config, false).await.outcomes[0].rows, 2);
}
