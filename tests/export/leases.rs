//! Export leases in the metadata table's sibling `_leases` table, on the BigQuery emulator.

use std::time::Duration;

use std::process::Command;

use chrono::TimeDelta;
use ferry_core::{Claim, HolderProcess, StateStore};
use ferry_testkit::eventually;
use serde_json::json;

use crate::common::{ferry_bin, orders, Fixture};

const TTL: Duration = Duration::from_secs(600);

async fn store(f: &Fixture) -> ferry_bigquery::MetadataStore {
    let config = f.config("orders", json!({}));
    ferry::metadata_store(&config, &ferry::bigquery(&config).unwrap()).await.expect("metadata store")
}

#[tokio::test]
async fn one_holder_at_a_time_and_expired_leases_are_free() {
    let f = Fixture::new("lease").await;
    orders(&f, &[(1, "2026-10-01 00:00:00+00")]).await;
    let s = store(&f).await;
    let e = &f.export;
    assert_eq!(s.acquire(e, "a", Some("m1"), TTL, Duration::ZERO).await.unwrap(), Claim::Acquired);
    match s.acquire(e, "b", None, TTL, Duration::from_millis(600)).await.unwrap() {
        Claim::Held { holder, message_id, .. } => assert_eq!((holder.as_str(), message_id.as_deref()), ("a", Some("m1"))),
        other => panic!("b must not get the lease a holds: {other:?}"),
    }
    assert!(s.renew(e, "a", TTL).await.unwrap(), "the holder renews");
    assert!(!s.renew(e, "b", TTL).await.unwrap(), "a non-holder cannot renew");
    s.release(e, "a").await.unwrap();
    assert_eq!(s.acquire(e, "b", None, TTL, Duration::ZERO).await.unwrap(), Claim::Acquired, "free after release");
    s.release(e, "b").await.unwrap();

    // A holder that died: its lease runs out. Expire it in the table rather than wait for a short
    // TTL, whose outcome would depend on how fast a busy emulator answers.
    assert_eq!(s.acquire(e, "c", None, TTL, Duration::ZERO).await.unwrap(), Claim::Acquired);
    f.ds.exec(&format!(
        "UPDATE `{}` SET expires_at = TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 1 SECOND) WHERE export_name = '{e}' AND holder = 'c'",
        f.ds.table("export_metadata_leases")
    ))
    .await;
    match s.acquire(e, "late", None, TTL, Duration::ZERO).await.unwrap() {
        Claim::Acquired => s.release(e, "late").await.unwrap(),
        other => panic!("an expired lease is free: {other:?}"),
    }
    assert_eq!(s.acquire(e, "d", None, TTL, Duration::ZERO).await.unwrap(), Claim::Acquired, "an expired lease is free");
    assert!(!s.renew(e, "c", TTL).await.unwrap(), "the expired holder learns it lost the lease");
}

#[tokio::test]
async fn racing_holders_get_it_one_at_a_time() {
    let f = Fixture::new("lease").await;
    orders(&f, &[(1, "2026-10-01 00:00:00+00")]).await;
    let s = store(&f).await;
    let e = f.export.clone();
    // Each contender may wait long (a busy emulator answers slowly); what must hold is that
    // all three get the lease and that their holds never overlap.
    let try_hold = |who: &'static str| {
        let (s, e) = (s.clone(), e.clone());
        async move {
            let claim = s.acquire(&e, who, None, TTL, Duration::from_secs(240)).await.unwrap();
            assert_eq!(claim, Claim::Acquired, "{who} gets the lease in turn");
            let start = std::time::Instant::now();
            tokio::time::sleep(Duration::from_millis(300)).await;
            // Measured before the release: the real hold lasts at least this long.
            let end = std::time::Instant::now();
            s.release(&e, who).await.unwrap();
            (start, end)
        }
    };
    let (a, b, c) = tokio::join!(try_hold("a"), try_hold("b"), try_hold("c"));
    let mut holds = [a, b, c];
    holds.sort();
    assert!(holds.windows(2).all(|w| w[0].1 <= w[1].0), "the three held it one after another, never two at once");
}

#[tokio::test]
async fn a_run_does_nothing_for_an_export_another_run_holds() {
    let f = Fixture::new("lease").await;
    orders(&f, &[(1, "2026-10-01 00:00:00+00")]).await;
    let config = f.config("orders", json!({}));
    let s = store(&f).await;
    assert_eq!(s.acquire(&f.export, "other-run", None, TTL, Duration::ZERO).await.unwrap(), Claim::Acquired);
    let r = f.run(&config, false).await;
    assert!(!r.succeeded());
    let err = r.outcomes[0].error.clone().unwrap_or_default();
    assert!(err.contains("is being delivered by run other-run"), "{err}");
    assert!(f.dir.names().is_empty());
    assert!(f.metadata().await.is_empty(), "nothing recorded for a run that did nothing");
    s.release(&f.export, "other-run").await.unwrap();
    assert!(f.run(&config, false).await.succeeded());
    assert_eq!(f.dir.names().len(), 1);
}

/// `ferry lease show|release` on the metadata table's leases, and `ferry run` taking its lease
/// for `FERRY_LEASE_TTL_SECONDS`. Release frees a lease only when it expired or its holder's
/// process (on this host) is gone, and `--force` whatever holds it.
#[tokio::test]
async fn cli_shows_the_lease_and_releases_it_only_when_its_holder_is_gone() {
    let f = Fixture::new("lease").await;
    orders(&f, &[(1, "2026-10-01 00:00:00+00")]).await;
    let export = json!({"name": f.export, "source_table": format!("{}.orders", f.ds.name), "destination_filename": "{name}_{run_id}.csv",
                        "timestamp_column": "updated_at", "incremental": true});
    let path = f.dir.path.join("config.json");
    std::fs::write(&path, f.json(export, json!({})).to_string()).unwrap();
    // On a blocking thread: the runtime keeps serving the store's connections meanwhile (a
    // connection the server closed while nobody polled it would fail the next query).
    let ferry = |args: &[&str]| {
        let (path, args) = (path.clone(), args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
        async move {
            let out = tokio::task::spawn_blocking(move || Command::new(ferry_bin()).arg("--config").arg(&path).args(&args).output())
                .await
                .expect("join")
                .expect("run ferry");
            (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
        }
    };
    let e = f.export.as_str();
    let (code, out, err) = ferry(&["lease", "show", "--export", e]).await;
    assert_eq!((code, out.trim()), (Some(0), format!("export {e}: free").as_str()), "{err}");
    let (code, _, err) = ferry(&["lease", "show", "--export", "nope"]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("unknown export \"nope\""), "{err}");

    // A CLI run that stalls while uploading, with a lease TTL of its own, then is killed.
    let mut run = Command::new(ferry_bin())
        .arg("--config")
        .arg(&path)
        .arg("run")
        .env("FERRY_FAILPOINTS", format!("upload:during@{e}=sleep:120000"))
        .env("FERRY_LEASE_TTL_SECONDS", "300")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start ferry run");
    let s = store(&f).await;
    let lease = eventually(Duration::from_secs(60), "the run's lease", || async { s.lease(e).await.ok().flatten() }).await;
    assert!(lease.live, "{lease:?}");
    assert_eq!(lease.expires_at - lease.acquired_at, TimeDelta::seconds(300), "the CLI run took its lease for FERRY_LEASE_TTL_SECONDS");
    let here = HolderProcess::current();
    assert_eq!(lease.process, Some(HolderProcess { host: here.host.clone(), pid: run.id() }), "the run's own process holds it");

    let (code, out, err) = ferry(&["lease", "show", "--export", e]).await;
    assert_eq!(code, Some(0), "{err}");
    for part in [
        format!("export {e}: held (live)"),
        format!("holder:   run {}", lease.holder),
        format!("process:  pid {} on {}", run.id(), here.host),
        format!("expires:  {}", lease.expires_at.format("%Y-%m-%d %H:%M:%S UTC")),
    ] {
        assert!(out.contains(&part), "{part:?} missing in:\n{out}");
    }
    let (code, out, err) = ferry(&["lease", "release", "--export", e]).await;
    assert_eq!(code, Some(1), "refused while the holder runs: {out}{err}");
    assert!(err.contains(&format!("is held by run {} (pid {} on {}, still running) until", lease.holder, run.id(), here.host)), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(s.lease(e).await.unwrap().map(|l| l.holder), Some(lease.holder.clone()), "still held");

    run.kill().expect("kill the run");
    run.wait().expect("reap the run");
    assert!(s.lease(e).await.unwrap().is_some_and(|l| l.live), "a killed run leaves its lease behind");
    let (code, out, err) = ferry(&["lease", "release", "--export", e]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(&format!("released the lease of run {} (its holder's process (pid {} on", lease.holder, lease.process.unwrap().pid)),
        "{out}"
    );
    let (_, out, _) = ferry(&["lease", "show", "--export", e]).await;
    assert_eq!(out.trim(), format!("export {e}: free"));

    // A live holder that is not known to be dead (this test process): refused, then --force.
    assert_eq!(s.acquire(e, "other-run", Some("m9"), TTL, Duration::ZERO).await.unwrap(), Claim::Acquired);
    let (code, _, err) = ferry(&["lease", "release", "--export", e]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("is held by run other-run"), "{err}");
    let (code, out, err) = ferry(&["lease", "release", "--export", e, "--force"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("released the lease of run other-run (--force)"), "{out}");
    assert!(!s.renew(e, "other-run", TTL).await.unwrap(), "the holder learns it lost the lease");

    // An expired lease: released without --force.
    assert_eq!(s.acquire(e, "late-run", None, TTL, Duration::ZERO).await.unwrap(), Claim::Acquired);
    f.ds.exec(&format!(
        "UPDATE `{}` SET expires_at = TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 1 SECOND) WHERE export_name = '{e}' AND holder = 'late-run'",
        f.ds.table("export_metadata_leases")
    ))
    .await;
    let (_, out, _) = ferry(&["lease", "show", "--export", e]).await;
    assert!(out.contains("expired (free for the next run)") && out.contains("run late-run"), "{out}");
    let (code, out, err) = ferry(&["lease", "release", "--export", e]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("released the lease of run late-run (it expired at"), "{out}");
    let (_, out, _) = ferry(&["lease", "release", "--export", e]).await;
    assert!(out.contains("the lease is free; nothing to release"), "{out}");

    // The next run delivers.
    let (code, out, err) = ferry(&["run"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let finals: Vec<String> = f.dir.names().into_iter().filter(|n| n.ends_with(".csv") && !n.starts_with('.')).collect();
    assert_eq!(finals.len(), 1, "{finals:?}");
    // `{name}_{run_id}.csv`: the run id's first 12 hex digits.
    let id = finals[0].strip_prefix(&format!("{e}_")).and_then(|n| n.strip_suffix(".csv")).unwrap_or_default();
    assert!(id.len() == 12 && id.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{finals:?}");
}

/// Tables made by an earlier ferry get the new columns (`recorded_at`; the leases' `host` and
/// `pid`); their old rows, which have no `recorded_at`, are ordered by `completed_at`, and a
/// row recorded now is later than all of them.
#[tokio::test]
async fn tables_of_an_earlier_version_are_extended_and_old_rows_keep_their_order() {
    let f = Fixture::new("lease").await;
    let meta = f.ds.table("export_metadata");
    f.ds.exec(&format!(
        "CREATE TABLE `{meta}` (export_name STRING NOT NULL, source_table STRING NOT NULL, last_export_timestamp TIMESTAMP, \
         last_exported_value STRING, rows_exported INT64, file_name STRING, export_status STRING, started_at TIMESTAMP, \
         completed_at TIMESTAMP, error_message STRING, run_id STRING, cursor_type STRING, window_lo STRING, bytes INT64, \
         sha256 STRING, message_id STRING, files STRING)"
    ))
    .await;
    f.ds.exec(&format!(
        "CREATE TABLE `{}` (export_name STRING NOT NULL, holder STRING NOT NULL, message_id STRING, acquired_at TIMESTAMP NOT NULL, \
         expires_at TIMESTAMP NOT NULL)",
        f.ds.table("export_metadata_leases")
    ))
    .await;
    let e = &f.export;
    // Two old rows, without recorded_at: the one completed later is the watermark, although it
    // was inserted first.
    f.ds.exec(&format!(
        "INSERT INTO `{meta}` (export_name, source_table, export_status, last_exported_value, cursor_type, completed_at, run_id) VALUES \
         ('{e}', 't', 'SUCCESS', '2', 'INT64', TIMESTAMP '2020-01-02 00:00:00+00', 'old2')"
    ))
    .await;
    f.ds.exec(&format!(
        "INSERT INTO `{meta}` (export_name, source_table, export_status, last_exported_value, cursor_type, completed_at, run_id) VALUES \
         ('{e}', 't', 'SUCCESS', '1', 'INT64', TIMESTAMP '2020-01-01 00:00:00+00', 'old1')"
    ))
    .await;
    let s = store(&f).await;
    assert_eq!(s.watermark(e).await.unwrap(), Some(("INT64".to_owned(), "2".to_owned())), "old rows by completed_at");
    let mut r = s.history(Some(e), 1).await.unwrap().remove(0);
    r.run_id = "new".to_owned();
    r.last_exported_value = Some("3".to_owned());
    // Completed (by its writer's clock) before both old rows.
    r.completed_at = chrono::DateTime::from_timestamp(1_500_000_000, 0).unwrap();
    s.append(&r).await.unwrap();
    assert_eq!(s.watermark(e).await.unwrap(), Some(("INT64".to_owned(), "3".to_owned())), "recorded now: later than every old row");
    let runs: Vec<String> = s.history(Some(e), 10).await.unwrap().into_iter().map(|r| r.run_id).collect();
    assert_eq!(runs, ["new", "old2", "old1"]);

    assert_eq!(s.acquire(e, "a", None, TTL, Duration::ZERO).await.unwrap(), Claim::Acquired);
    assert_eq!(s.lease(e).await.unwrap().and_then(|l| l.process), Some(HolderProcess::current()));
}
