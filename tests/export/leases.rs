//! Export leases in the metadata table's sibling `_leases` table, on the BigQuery emulator.

use std::time::Duration;

use ferry_core::{Claim, StateStore};
use serde_json::json;

use crate::common::{orders, Fixture};

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
