use ferry_core::failpoint;
use ferry_testkit::stack;
use serde_json::json;

use crate::common::{ids, insert, orders, Fixture};

async fn fails_then_recovers(point: &str) {
    let f = Fixture::new("fp").await;
    orders(&f, &[(1, "2026-05-01 00:00:00+00"), (2, "2026-05-02 00:00:00+00"), (3, "2026-05-03 00:00:00+00")]).await;
    // Small pages and chunks are not needed: the failpoint fires after the first chunk is sent.
    let config = f.config("orders", json!({}));
    failpoint::arm(point, &f.export);
    let r = f.run(&config, false).await;
    assert!(!r.succeeded(), "the injected failure fails the run");
    assert!(r.outcomes[0].error.as_deref().unwrap_or_default().contains(&format!("injected failure at {point}")), "{r:?}");
    assert!(f.dir.names().is_empty(), "no file under a final name and no temporary file: {:?}", f.dir.names());
    assert_eq!(f.watermark().await, None, "the watermark did not move");
    assert_eq!(f.metadata().await.last().map(|m| m.0.clone()).as_deref(), Some("FAILED"));

    let r = f.run(&config, false).await;
    assert!(r.succeeded(), "{r:?}");
    assert_eq!(ids(&f.delivered_rows()), [1, 2, 3], "the next run delivers every missing row");
    assert_eq!(f.watermark().await.as_deref(), Some("2026-05-03T00:00:00.000000Z"));
}

#[tokio::test]
async fn failure_during_upload_leaves_nothing_and_the_next_run_delivers_all() {
    fails_then_recovers("upload:during").await;
}

#[tokio::test]
async fn failure_after_upload_before_the_metadata_write_leaves_nothing() {
    fails_then_recovers("upload:after").await;
}

#[tokio::test]
async fn failure_after_publish_is_reconciled_without_sending_rows_twice() {
    let f = Fixture::new("fp").await;
    orders(&f, &[(1, "2026-06-01 00:00:00+00"), (2, "2026-06-02 00:00:00+00")]).await;
    let config = f.config("orders", json!({}));
    failpoint::arm("publish:after", &f.export);
    let r = f.run(&config, false).await;
    assert!(!r.succeeded());
    assert_eq!(f.dir.names().len(), 1, "the file was published before the failure");
    assert_eq!(f.watermark().await, None, "but the watermark did not move");

    insert(&f, &[(3, "2026-06-03 00:00:00+00")]).await;
    let r = f.run(&config, false).await;
    assert!(r.succeeded(), "{r:?}");
    assert_eq!(r.outcomes[0].reconciled.len(), 1, "{r:?}");
    assert_eq!(r.outcomes[0].rows, 1, "only the new row is read");
    assert_eq!(ids(&f.delivered_rows()), [1, 2, 3], "every row exactly once");
    assert_eq!(f.watermark().await.as_deref(), Some("2026-06-03T00:00:00.000000Z"));
}

#[tokio::test]
async fn wrong_host_key_is_a_clear_error_and_writes_nothing() {
    let f = Fixture::new("hostkey").await;
    orders(&f, &[(1, "2026-07-01 00:00:00+00")]).await;
    let export = json!({"name": f.export, "source_table": format!("{}.orders", f.ds.name), "destination_filename": "o_{datetime}.csv", "timestamp_column": "updated_at", "incremental": true});
    let config = f.load(&f.json(export, json!({"known_hosts_file": stack().var("FERRY_SFTP_KNOWN_HOSTS_WRONG")}))).expect("config");
    let r = f.run(&config, false).await;
    let err = r.outcomes[0].error.clone().unwrap_or_default();
    assert!(err.contains("refused") && err.contains("does not match the key recorded"), "{err}");
    assert!(f.dir.names().is_empty());
    assert_eq!(f.watermark().await, None);
    assert_eq!(f.metadata().await.last().map(|m| m.0.clone()).as_deref(), Some("FAILED"));
}

#[tokio::test]
async fn wrong_password_is_a_clear_error_without_the_password() {
    let mut f = Fixture::new("pw").await;
    orders(&f, &[(1, "2026-07-01 00:00:00+00")]).await;
    let sentinel = "sentinel-Pa55-9f2c1e";
    f.env.insert("SFTP_PASSWORD".into(), sentinel.into());
    let export = json!({"name": f.export, "source_table": format!("{}.orders", f.ds.name), "destination_filename": "o_{datetime}.csv", "timestamp_column": "updated_at", "incremental": true});
    let sftp = json!({"username": stack().var("FERRY_SFTP_PASSWORD_USER"), "private_key_file": null});
    let config = f.load(&f.json(export, sftp)).expect("config");
    assert!(!format!("{config:?}").contains(sentinel));
    let r = f.run(&config, false).await;
    let err = r.outcomes[0].error.clone().unwrap_or_default();
    assert!(err.contains("rejected password authentication"), "{err}");
    assert!(!format!("{r:?}").contains(sentinel));
    let recorded = f.ds.rows(&format!("SELECT error_message FROM `{}`", f.ds.table("export_metadata"))).await;
    assert!(!format!("{recorded:?}").contains(sentinel));
    assert!(format!("{recorded:?}").contains("rejected password authentication"));
}
