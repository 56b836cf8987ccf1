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

/// A partner that collects every file the moment it appears: a run interrupted after publishing
/// finds neither its file nor its temporary file, and counts the delivery as done.
#[tokio::test]
async fn a_partner_collecting_files_on_arrival_gets_every_row_once() {
    let f = Fixture::new("partner").await;
    orders(&f, &[(1, "2026-06-11 00:00:00+00"), (2, "2026-06-12 00:00:00+00")]).await;
    let config = f.config("orders", json!({}));
    let collected = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let partner = {
        let (dir, collected, stop) = (f.dir.path.clone(), collected.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for entry in std::fs::read_dir(&dir).expect("read_dir").flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if !name.starts_with('.') {
                        if let Ok(bytes) = std::fs::read(entry.path()) {
                            if std::fs::remove_file(entry.path()).is_ok() {
                                collected.lock().unwrap().push(bytes);
                            }
                        }
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        })
    };

    failpoint::arm("publish:after", &f.export);
    let r = f.run(&config, false).await;
    assert!(!r.succeeded(), "interrupted after publishing");
    insert(&f, &[(3, "2026-06-13 00:00:00+00")]).await;
    let r = f.run(&config, false).await;
    assert!(r.succeeded(), "{r:?}");
    let settled = f.metadata().await;
    assert_eq!(settled.iter().filter(|m| m.0 == "SUCCESS").count(), 2, "the interrupted run counts as delivered: {settled:?}");
    assert_eq!(r.outcomes[0].rows, 1, "only the new row is read");
    std::thread::sleep(std::time::Duration::from_millis(100));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    partner.join().expect("partner");

    let mut ids = Vec::new();
    for bytes in collected.lock().unwrap().iter() {
        let mut r = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes.as_slice());
        ids.extend(r.records().map(|rec| rec.expect("a whole CSV file")[0].parse::<i64>().expect("id")));
    }
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3], "every row once");
    let note = f.column("error_message", Some("SUCCESS")).await.into_iter().flatten().next().unwrap_or_default();
    assert!(note.contains("collected by the partner"), "the history says how the run was settled: {note}");
}

/// Runs that follow each other within one second never reuse a `{datetime}` file name.
#[tokio::test]
async fn runs_within_one_second_never_share_a_file_name() {
    let f = Fixture::new("second").await;
    orders(&f, &[(1, "2026-06-21 00:00:00+00")]).await;
    let config = f.config("orders", json!({"destination_filename": "{name}_{datetime}.csv"}));
    for id in 2..=4 {
        assert!(f.run(&config, false).await.succeeded());
        insert(&f, &[(id, &format!("2026-06-2{id} 00:00:00+00"))]).await;
    }
    assert!(f.run(&config, false).await.succeeded());
    assert_eq!(f.dir.names().len(), 4, "four runs, four files: {:?}", f.dir.names());
    assert_eq!(ids(&f.delivered_rows()), [1, 2, 3, 4]);
}

#[tokio::test]
async fn a_connection_lost_between_exports_of_one_run_is_made_again() {
    let f = Fixture::new("fp").await;
    orders(&f, &[(1, "2026-07-01 00:00:00+00"), (2, "2026-07-02 00:00:00+00")]).await;
    let export = |name: String| {
        json!({"name": name, "source_table": format!("{}.orders", f.ds.name), "destination_filename": "{name}_{datetime}.csv",
               "timestamp_column": "updated_at", "incremental": true})
    };
    let mut doc = f.json(export(f.export.clone()), json!({}));
    let second = format!("{}_b", f.export);
    doc["exports"].as_array_mut().unwrap().push(export(second.clone()));
    let config = f.load(&doc).expect("valid config");
    // The first export's publish succeeds, then the server drops the connection.
    let server = format!("{}:{}", stack().var("FERRY_SFTP_HOST"), stack().var("FERRY_SFTP_PORT"));
    failpoint::arm("sftp:drop-after-publish", &server);
    let r = f.run(&config, false).await;
    assert!(r.succeeded(), "the second export connects again: {r:?}");
    let names = f.dir.names();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().any(|n| n.starts_with(&format!("{second}_"))), "{names:?}");
    let mut delivered = ids(&f.delivered_rows());
    delivered.sort_unstable();
    assert_eq!(delivered, [1, 1, 2, 2], "each export delivered both rows once");
}
