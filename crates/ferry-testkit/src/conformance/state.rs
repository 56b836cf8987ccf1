//! The [`StateStore`] contract, case by case.
//!
//! Records carry distinct `completed_at` times that grow in append order, so "latest" means
//! the same by time and by order, except in the case that proves order is the store's own
//! (`a_record_appended_later_is_later_whatever_its_completed_at`). Lease cases use a TTL of ten minutes unless they are about
//! expiry, so a slow server cannot make a lease run out by accident.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeDelta, TimeZone, Utc};
use ferry_core::{Claim, FileRecord, HolderProcess, RunRecord, RunStatus, StateStore};

/// A store on an empty, `ensure`d table, and what a test needs beyond the trait to reach the
/// states leases pass through.
#[async_trait]
pub trait StateBackend: Send + Sync {
    /// The store under test.
    fn store(&self) -> &dyn StateStore;
    /// Another handle on the same records and leases, as a second process would open it.
    fn other(&self) -> &dyn StateStore;
    /// Makes `holder`'s lease on `export` run out now, as if the holder had died and its TTL
    /// had passed.
    async fn expire(&self, export: &str, holder: &str);
    /// Lets `d` pass on the clock the store reads lease times from (a real store sleeps).
    async fn pass(&self, d: Duration);
}

const LONG: Duration = Duration::from_secs(600);
const E: &str = "orders";
const OTHER: &str = "customers";

/// A record of `run` for `export`, completed `at` seconds after a fixed start.
fn record(export: &str, run: &str, status: RunStatus, value: Option<&str>, at: i64) -> RunRecord {
    let completed_at = Utc.with_ymd_and_hms(2026, 10, 1, 12, 0, 0).single().expect("valid time") + TimeDelta::seconds(at);
    RunRecord {
        run_id: run.to_owned(),
        export_name: export.to_owned(),
        source_table: "shop.orders".to_owned(),
        status,
        last_exported_value: value.map(str::to_owned),
        cursor_type: Some("TIMESTAMP".to_owned()),
        window_lo: None,
        rows_exported: 0,
        bytes: 0,
        sha256: None,
        file_name: None,
        files: Vec::new(),
        started_at: completed_at - TimeDelta::seconds(1),
        completed_at,
        error_message: None,
        message_id: None,
        null_cursor_rows: None,
        null_arrival_hi: None,
        execution: None,
    }
}

fn with_message(mut r: RunRecord, message_id: &str) -> RunRecord {
    r.message_id = Some(message_id.to_owned());
    r
}

async fn append(s: &dyn StateStore, records: &[&RunRecord]) {
    for r in records {
        s.append(r).await.unwrap_or_else(|e| panic!("append {} {}: {e}", r.run_id, r.status.as_str()));
    }
}

fn ids(records: &[RunRecord]) -> Vec<(&str, &str)> {
    records.iter().map(|r| (r.run_id.as_str(), r.status.as_str())).collect()
}

fn sorted(mut records: Vec<RunRecord>) -> Vec<RunRecord> {
    records.sort_by(|a, b| (a.completed_at, &a.run_id).cmp(&(b.completed_at, &b.run_id)));
    records
}

/// `ensure` can be called again and again; it keeps what the table holds.
pub async fn ensure_is_idempotent_and_keeps_records(b: impl StateBackend) {
    let s = b.store();
    s.ensure().await.expect("ensure on an ensured table");
    let r = record(E, "r1", RunStatus::Success, Some("2026-10-01 00:00:00+00"), 1);
    append(s, &[&r]).await;
    s.ensure().await.expect("ensure again");
    assert_eq!(s.history(Some(E), 10).await.expect("history"), [r]);
}

/// A record reads back with every field as appended: text with quotes, line breaks and
/// non-ASCII, counts beyond 32 bits, microsecond times, the list of files, and absent fields
/// as absent.
pub async fn a_record_reads_back_as_appended(b: impl StateBackend) {
    let s = b.store();
    let minimal = RunRecord { cursor_type: None, ..record(E, "r1", RunStatus::Empty, None, 1) };
    let mut full = record(E, "r2", RunStatus::Failed, Some("2026-10-01 08:30:00.123456+00"), 2);
    full.window_lo = Some("2026-09-30 08:30:00+00".to_owned());
    full.rows_exported = 123_456_789;
    full.bytes = 5_000_000_000;
    full.sha256 = Some("ab".repeat(32));
    full.file_name = Some("orders_1.csv, orders_2.csv".to_owned());
    full.files = vec![
        FileRecord {
            name: "orders_1.csv".to_owned(),
            bytes: 4_000_000_000,
            rows: 100_000_000,
            sha256: "cd".repeat(32),
            temp: Some(".orders_1.csv.0a1b2c3d-0123456789ab.ferry-tmp".to_owned()),
            // A file copied from a staging bucket keeps the object it came from.
            object: Some(ferry_core::roles::ObjectRecord {
                uri: "gs://acme-exports/ferry/orders/20250108/r1/orders-000000000000.csv.gz".to_owned(),
                generation: "1796283233567561".to_owned(),
                crc32c: Some("mnG7TA==".to_owned()),
                md5: Some("XUFAKrxLKna5cZ2REBfFkg==".to_owned()),
            }),
        },
        FileRecord {
            name: "orders_2.csv".to_owned(),
            bytes: 1_000_000_000,
            rows: 23_456_789,
            sha256: "ef".repeat(32),
            temp: None,
            object: None,
        },
    ];
    full.started_at += TimeDelta::microseconds(123_456);
    full.error_message = Some("sftp: \"quoted\" 'text'\nsecond line, caf\u{e9} \u{2713}".to_owned());
    full.message_id = Some("msg-1".to_owned());
    full.null_cursor_rows = Some(3_000_000_000);
    full.null_arrival_hi = Some("2026-10-01T08:25:00.000000Z".to_owned());
    full.execution = Some("ferry-run-x7k2p".to_owned());
    let mut dispatched = record(E, "r3", RunStatus::Dispatched, None, 3);
    dispatched.cursor_type = None;
    dispatched.message_id = Some("msg-2".to_owned());
    dispatched.execution = Some("projects/p/locations/europe-west1/jobs/ferry-run/executions/ferry-run-x7k2p".to_owned());
    append(s, &[&minimal, &full, &dispatched]).await;

    assert_eq!(s.history(Some(E), 10).await.expect("history"), [dispatched, full, minimal]);
}

/// The arrival mark of NULL-cursor rows is the largest `null_arrival_hi` of the export's
/// SUCCESS records; other statuses and other exports do not move it.
pub async fn the_null_arrival_mark_is_the_largest_success_bound(b: impl StateBackend) {
    let s = b.store();
    let with = |run: &str, status: RunStatus, hi: Option<&str>, at: i64, export: &str| RunRecord {
        null_arrival_hi: hi.map(str::to_owned),
        ..record(export, run, status, Some("2026-10-01T08:00:00.000000Z"), at)
    };
    assert_eq!(s.null_arrival_mark(E).await.expect("mark"), None, "no record, no mark");
    let early = with("r1", RunStatus::Success, Some("2026-10-01T08:00:00.000000Z"), 1, E);
    let failed = with("r2", RunStatus::Failed, Some("2026-10-01T09:00:00.000000Z"), 2, E);
    let other = with("r3", RunStatus::Success, Some("2026-10-01T10:00:00.000000Z"), 3, OTHER);
    let none = with("r4", RunStatus::Success, None, 4, E);
    let later = with("r5", RunStatus::Success, Some("2026-10-01T08:30:00.000000Z"), 5, E);
    append(s, &[&early, &failed, &other, &none]).await;
    assert_eq!(s.null_arrival_mark(E).await.expect("mark").as_deref(), Some("2026-10-01T08:00:00.000000Z"));
    append(s, &[&later]).await;
    assert_eq!(s.null_arrival_mark(E).await.expect("mark").as_deref(), Some("2026-10-01T08:30:00.000000Z"));
}

/// The watermark is the `(cursor_type, last_exported_value)` of the latest SUCCESS record of
/// the export; EMPTY, FAILED, PENDING and DISPATCHED records and other exports do not move it.
pub async fn the_watermark_is_the_latest_success(b: impl StateBackend) {
    let s = b.store();
    let watermark = || async { s.watermark(E).await.expect("watermark") };
    let wm = |v: &str| Some(("TIMESTAMP".to_owned(), v.to_owned()));
    assert_eq!(watermark().await, None, "no record, no watermark");

    append(s, &[&record(E, "r1", RunStatus::Success, Some("v1"), 1)]).await;
    assert_eq!(watermark().await, wm("v1"), "a SUCCESS sets it");
    append(s, &[&record(E, "r2", RunStatus::Empty, Some("v2"), 2)]).await;
    assert_eq!(watermark().await, wm("v1"), "EMPTY does not move it");
    append(s, &[&record(E, "r3", RunStatus::Failed, Some("v3"), 3)]).await;
    assert_eq!(watermark().await, wm("v1"), "FAILED does not move it");
    append(s, &[&record(E, "r4", RunStatus::Pending, Some("v4"), 4)]).await;
    assert_eq!(watermark().await, wm("v1"), "PENDING does not move it");
    append(s, &[&record(E, "r4d", RunStatus::Dispatched, Some("v4d"), 4)]).await;
    assert_eq!(watermark().await, wm("v1"), "DISPATCHED does not move it");
    append(s, &[&record(OTHER, "r5", RunStatus::Success, Some("v5"), 5)]).await;
    assert_eq!(watermark().await, wm("v1"), "another export's SUCCESS does not move it");
    let mut r6 = record(E, "r6", RunStatus::Success, Some("42"), 6);
    r6.cursor_type = Some("INT64".to_owned());
    append(s, &[&r6]).await;
    assert_eq!(watermark().await, Some(("INT64".to_owned(), "42".to_owned())), "the latest SUCCESS, with its cursor type");
    assert_eq!(s.watermark(OTHER).await.expect("watermark"), wm("v5"));
}

/// `pending` lists the export's PENDING records whose run has no later record (of any other
/// status) for that export, each as appended.
pub async fn pending_lists_the_runs_not_settled(b: impl StateBackend) {
    let s = b.store();
    let pending = || async { sorted(s.pending(E).await.expect("pending")) };
    assert_eq!(pending().await, [], "nothing recorded");

    let mut p1 = record(E, "r1", RunStatus::Pending, Some("v1"), 1);
    p1.files = vec![FileRecord { name: "a.csv".to_owned(), bytes: 10, rows: 2, sha256: "00".repeat(32), temp: None, object: None }];
    let p2 = record(E, "r2", RunStatus::Pending, Some("v2"), 2);
    append(s, &[&p1]).await;
    assert_eq!(pending().await, [p1.clone()], "a PENDING record alone is pending, as appended");
    append(s, &[&p2]).await;
    assert_eq!(ids(&pending().await), [("r1", "PENDING"), ("r2", "PENDING")]);

    append(s, &[&record(E, "r1", RunStatus::Success, Some("v1"), 3)]).await;
    assert_eq!(ids(&pending().await), [("r2", "PENDING")], "a SUCCESS settles its run");
    append(s, &[&record(E, "r2", RunStatus::Failed, None, 4)]).await;
    assert_eq!(pending().await, [], "a FAILED settles its run");
    append(s, &[&record(E, "r3", RunStatus::Pending, Some("v3"), 5), &record(E, "r3", RunStatus::Empty, None, 6)]).await;
    assert_eq!(pending().await, [], "an EMPTY settles its run");
    append(s, &[&record(E, "r3d", RunStatus::Dispatched, None, 6)]).await;
    assert_eq!(pending().await, [], "a DISPATCHED record is not pending");

    append(s, &[&record(E, "r4", RunStatus::Pending, Some("v4"), 7), &record(OTHER, "r4", RunStatus::Success, Some("v4"), 8)]).await;
    assert_eq!(ids(&pending().await), [("r4", "PENDING")], "a record of the same run for another export settles nothing here");
    append(s, &[&record(OTHER, "r5", RunStatus::Pending, Some("v5"), 9)]).await;
    assert_eq!(ids(&pending().await), [("r4", "PENDING")], "another export's PENDING is not this export's");
    assert_eq!(ids(&sorted(s.pending(OTHER).await.expect("pending"))), [("r5", "PENDING")]);
}

/// `by_message` returns exactly the export's records carrying the message id.
pub async fn by_message_finds_the_records_of_one_message(b: impl StateBackend) {
    let s = b.store();
    let m1 = [
        with_message(record(E, "d1", RunStatus::Dispatched, None, 0), "m1"),
        with_message(record(E, "r1", RunStatus::Pending, Some("v1"), 1), "m1"),
        with_message(record(E, "r1", RunStatus::Success, Some("v1"), 2), "m1"),
    ];
    let others = [
        with_message(record(E, "r2", RunStatus::Failed, None, 3), "m2"),
        record(E, "r3", RunStatus::Success, Some("v3"), 4),
        with_message(record(OTHER, "r4", RunStatus::Success, Some("v4"), 5), "m1"),
    ];
    append(s, &m1.iter().chain(&others).collect::<Vec<_>>()).await;

    assert_eq!(sorted(s.by_message(E, "m1").await.expect("by_message")), m1);
    assert_eq!(ids(&s.by_message(E, "m2").await.expect("by_message")), [("r2", "FAILED")]);
    assert_eq!(s.by_message(E, "unknown").await.expect("by_message"), []);
    assert_eq!(ids(&s.by_message(OTHER, "m1").await.expect("by_message")), [("r4", "SUCCESS")]);
}

/// `history` returns the latest records, newest first, at most `limit`, of one export or of
/// all.
pub async fn history_is_newest_first_and_limited(b: impl StateBackend) {
    let s = b.store();
    assert_eq!(s.history(Some(E), 10).await.expect("history"), [], "nothing recorded");
    for i in 1..=5 {
        append(s, &[&record(E, &format!("r{i}"), RunStatus::Success, Some("v"), 2 * i)]).await;
        append(s, &[&record(OTHER, &format!("o{i}"), RunStatus::Empty, None, 2 * i + 1)]).await;
    }
    let runs = |records: Vec<RunRecord>| records.into_iter().map(|r| r.run_id).collect::<Vec<_>>();
    assert_eq!(runs(s.history(Some(E), 10).await.expect("history")), ["r5", "r4", "r3", "r2", "r1"]);
    assert_eq!(runs(s.history(Some(E), 2).await.expect("history")), ["r5", "r4"]);
    assert_eq!(runs(s.history(Some(E), 1).await.expect("history")), ["r5"]);
    assert_eq!(runs(s.history(None, 3).await.expect("history")), ["o5", "r5", "o4"]);
    assert_eq!(s.history(None, 100).await.expect("history").len(), 10);
}

/// Order is the store's: a record appended later is later even when its `completed_at` is
/// earlier (the clock of the process that wrote it is behind) — for the watermark, `history`,
/// `pending` and `by_message`.
pub async fn a_record_appended_later_is_later_whatever_its_completed_at(b: impl StateBackend) {
    let s = b.store();
    // r2 is appended after r1 by a process whose clock is an hour behind.
    let r1 = with_message(record(E, "r1", RunStatus::Success, Some("v1"), 3600), "m");
    let r2 = with_message(record(E, "r2", RunStatus::Success, Some("v2"), 0), "m");
    append(s, &[&r1]).await;
    append(s, &[&r2]).await;
    assert_eq!(s.watermark(E).await.expect("watermark"), Some(("TIMESTAMP".to_owned(), "v2".to_owned())), "the later append wins");
    assert_eq!(ids(&s.history(Some(E), 10).await.expect("history")), [("r2", "SUCCESS"), ("r1", "SUCCESS")], "newest first");
    assert_eq!(ids(&s.history(Some(E), 1).await.expect("history")), [("r2", "SUCCESS")]);
    assert_eq!(ids(&s.by_message(E, "m").await.expect("by_message")), [("r1", "SUCCESS"), ("r2", "SUCCESS")], "in append order");

    let p3 = record(E, "r3", RunStatus::Pending, Some("v3"), 7200);
    let p4 = record(E, "r4", RunStatus::Pending, Some("v4"), 60);
    append(s, &[&p3]).await;
    append(s, &[&p4]).await;
    assert_eq!(ids(&s.pending(E).await.expect("pending")), [("r3", "PENDING"), ("r4", "PENDING")], "in append order");
    append(s, &[&record(E, "r5", RunStatus::Success, Some("v5"), 1)]).await;
    assert_eq!(s.watermark(E).await.expect("watermark").map(|w| w.1).as_deref(), Some("v5"), "still the last SUCCESS appended");
}

/// `lease` shows the export's lease: nothing when free; the holder, its message, when it was
/// taken and runs out, that it is live and which process took it; an expired one as expired,
/// until it is released for its holder, which frees it for the next.
pub async fn lease_shows_the_holder_and_whether_it_is_live(b: impl StateBackend) {
    let (s, o) = (b.store(), b.other());
    assert_eq!(s.lease(E).await.expect("lease"), None, "nobody claimed it");
    assert_eq!(s.acquire(E, "a", Some("m1"), LONG, Duration::ZERO).await.expect("acquire"), Claim::Acquired);
    let lease = o.lease(E).await.expect("lease").expect("a holds it");
    assert_eq!((lease.holder.as_str(), lease.message_id.as_deref(), lease.live), ("a", Some("m1"), true));
    assert_eq!(lease.expires_at - lease.acquired_at, TimeDelta::from_std(LONG).expect("ttl"), "expires its TTL after it was taken");
    let from_now = lease.expires_at - Utc::now();
    assert!(from_now > TimeDelta::minutes(9) && from_now <= TimeDelta::minutes(11), "expires about ten minutes from now: {lease:?}");
    assert_eq!(lease.process, Some(HolderProcess::current()), "the holder's host and pid");
    assert_eq!(s.lease(OTHER).await.expect("lease"), None, "leases are per export");

    assert!(s.renew(E, "a", LONG).await.expect("renew"));
    assert!(o.lease(E).await.expect("lease").expect("held").expires_at >= lease.expires_at, "a renewal moves the expiry");

    b.expire(E, "a").await;
    let expired = o.lease(E).await.expect("lease").expect("an expired claim is still shown");
    assert_eq!((expired.holder.as_str(), expired.live), ("a", false));
    assert!(expired.expires_at <= Utc::now() + TimeDelta::seconds(5), "{expired:?}");

    o.release(E, &expired.holder).await.expect("release for the holder lease named");
    assert_eq!(s.lease(E).await.expect("lease"), None, "free once released");
    assert_eq!(o.acquire(E, "b", None, LONG, Duration::ZERO).await.expect("acquire"), Claim::Acquired);
    assert_eq!(s.lease(E).await.expect("lease").map(|l| (l.holder, l.live)), Some(("b".to_owned(), true)));
}

/// Releasing the live lease of a holder that `lease` named (an operator freeing the lease of a
/// run known to be dead) frees it at once; the old holder's `renew` then fails.
pub async fn a_live_lease_released_for_its_holder_is_free_and_the_holder_learns_it(b: impl StateBackend) {
    let (s, o) = (b.store(), b.other());
    assert_eq!(s.acquire(E, "a", None, LONG, Duration::ZERO).await.expect("acquire"), Claim::Acquired);
    let holder = o.lease(E).await.expect("lease").expect("held").holder;
    o.release(E, &holder).await.expect("release");
    assert_eq!(o.lease(E).await.expect("lease"), None);
    assert!(!s.renew(E, "a", LONG).await.expect("renew"), "the holder learns it lost the lease");
    assert_eq!(o.acquire(E, "b", None, LONG, Duration::ZERO).await.expect("acquire"), Claim::Acquired);
}

/// A holder that asks again for a lease it holds is answered `Held`, naming itself, and keeps
/// the lease.
pub async fn acquiring_a_lease_one_holds_answers_held_by_oneself(b: impl StateBackend) {
    let s = b.store();
    assert_eq!(s.acquire(E, "a", Some("m1"), LONG, Duration::ZERO).await.expect("acquire"), Claim::Acquired);
    held_by(s.acquire(E, "a", Some("m1"), LONG, Duration::ZERO).await.expect("acquire"), "a", Some("m1"), LONG);
    assert!(s.renew(E, "a", LONG).await.expect("renew"), "still the holder");
    held_by(b.other().acquire(E, "b", None, LONG, Duration::ZERO).await.expect("acquire"), "a", Some("m1"), LONG);
}

fn held_by(claim: Claim, holder: &str, message_id: Option<&str>, ttl: Duration) {
    let Claim::Held { holder: h, message_id: m, expires_at } = claim else { panic!("must be Held by {holder}, got {claim:?}") };
    assert_eq!((h.as_str(), m.as_deref()), (holder, message_id), "Held names the holder and its message");
    let from_now = expires_at - Utc::now();
    let ttl = TimeDelta::from_std(ttl).expect("ttl");
    assert!(
        from_now > ttl / 2 && from_now <= ttl + TimeDelta::seconds(60),
        "Held gives the lease's expiry, about {ttl} from now: {expires_at}"
    );
}

/// A free lease is acquired; while it is live, every other holder (from any handle on the
/// store, waiting or not) gets `Held`, naming the holder, its message and the expiry.
pub async fn a_free_lease_is_acquired_and_a_held_one_is_refused(b: impl StateBackend) {
    let (s, o) = (b.store(), b.other());
    assert_eq!(s.acquire(E, "a", Some("m1"), LONG, Duration::ZERO).await.expect("acquire"), Claim::Acquired);
    held_by(s.acquire(E, "b", None, LONG, Duration::ZERO).await.expect("acquire"), "a", Some("m1"), LONG);
    held_by(o.acquire(E, "c", Some("m2"), LONG, Duration::ZERO).await.expect("acquire"), "a", Some("m1"), LONG);
    held_by(o.acquire(E, "c", None, LONG, Duration::from_millis(300)).await.expect("acquire"), "a", Some("m1"), LONG);
    assert_eq!(o.acquire(OTHER, "c", None, LONG, Duration::ZERO).await.expect("acquire"), Claim::Acquired, "leases are per export");
}

/// A holder waiting in `acquire` gets the lease once the holder before it releases it, and not
/// before.
pub async fn acquire_waits_for_a_release(b: impl StateBackend) {
    let (s, o) = (b.store(), b.other());
    assert_eq!(s.acquire(E, "a", None, LONG, Duration::ZERO).await.expect("acquire"), Claim::Acquired);
    let released = std::sync::atomic::AtomicBool::new(false);
    let waiter = async {
        let claim = o.acquire(E, "b", None, LONG, Duration::from_secs(60)).await.expect("acquire");
        (claim, released.load(Ordering::SeqCst))
    };
    let releaser = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        released.store(true, Ordering::SeqCst);
        s.release(E, "a").await.expect("release");
    };
    let ((claim, after_release), ()) = tokio::join!(waiter, releaser);
    assert_eq!(claim, Claim::Acquired, "the waiter gets the lease once it is released");
    assert!(after_release, "the waiter got the lease only after the release");
}

/// Release frees the lease for the next holder; a release by anyone else (including a holder
/// that never held it) does nothing.
pub async fn release_frees_the_lease_and_a_non_holder_release_does_nothing(b: impl StateBackend) {
    let (s, o) = (b.store(), b.other());
    assert_eq!(s.acquire(E, "a", Some("m1"), LONG, Duration::ZERO).await.expect("acquire"), Claim::Acquired);
    o.release(E, "b").await.expect("a release by a non-holder is not an error");
    held_by(o.acquire(E, "b", None, LONG, Duration::ZERO).await.expect("acquire"), "a", Some("m1"), LONG);
    s.release(E, "a").await.expect("release");
    assert_eq!(o.acquire(E, "b", None, LONG, Duration::ZERO).await.expect("acquire"), Claim::Acquired, "free after release");
    s.release(E, "a").await.expect("releasing again is not an error");
    held_by(s.acquire(E, "c", None, LONG, Duration::ZERO).await.expect("acquire"), "b", None, LONG);
    s.release(OTHER, "b").await.expect("a release of another export's lease");
    held_by(s.acquire(E, "c", None, LONG, Duration::ZERO).await.expect("acquire"), "b", None, LONG);
}

/// `renew` is true for the holder of a live lease, false for anyone else and after a release.
pub async fn renew_is_true_only_for_the_live_holder(b: impl StateBackend) {
    let (s, o) = (b.store(), b.other());
    assert!(!s.renew(E, "a", LONG).await.expect("renew"), "nobody holds the lease");
    assert_eq!(s.acquire(E, "a", None, LONG, Duration::ZERO).await.expect("acquire"), Claim::Acquired);
    assert!(s.renew(E, "a", LONG).await.expect("renew"), "the holder renews");
    assert!(o.renew(E, "a", LONG).await.expect("renew"), "from any handle");
    assert!(!o.renew(E, "b", LONG).await.expect("renew"), "a non-holder cannot renew");
    assert!(!s.renew(OTHER, "a", LONG).await.expect("renew"), "a lease on another export is not this one");
    s.release(E, "a").await.expect("release");
    assert!(!s.renew(E, "a", LONG).await.expect("renew"), "released, not renewable");
}

/// An expired lease counts as free: another holder acquires it, the old holder's `renew` is
/// false, and its `release` does not free the new holder's lease.
pub async fn an_expired_lease_is_free(b: impl StateBackend) {
    let (s, o) = (b.store(), b.other());
    assert_eq!(s.acquire(E, "a", None, LONG, Duration::ZERO).await.expect("acquire"), Claim::Acquired);
    b.expire(E, "a").await;
    assert_eq!(o.acquire(E, "b", Some("m2"), LONG, Duration::ZERO).await.expect("acquire"), Claim::Acquired, "an expired lease is free");
    assert!(!s.renew(E, "a", LONG).await.expect("renew"), "the expired holder learns it lost the lease");
    s.release(E, "a").await.expect("release");
    held_by(s.acquire(E, "c", None, LONG, Duration::ZERO).await.expect("acquire"), "b", Some("m2"), LONG);
    assert!(o.renew(E, "b", LONG).await.expect("renew"), "the new holder's lease is untouched");
}

/// A lease runs out `ttl` after it was taken or last renewed: taken for a few seconds it is
/// free once they passed; renewed for 2 s it is free 3 s later; renewed for long it is still
/// held.
pub async fn a_lease_lasts_its_ttl_from_the_last_renewal(b: impl StateBackend) {
    let (s, o) = (b.store(), b.other());
    // One second: the shortest TTL, and on a busy server shorter than the round trip in which
    // `acquire` reads its claim back. The lease is still acquired (already run out, then), never
    // `Held` by nobody.
    let taken = Duration::from_secs(1);
    assert_eq!(s.acquire(E, "a", None, taken, Duration::ZERO).await.expect("acquire"), Claim::Acquired);
    b.pass(taken + Duration::from_secs(1)).await;
    assert!(!s.renew(E, "a", LONG).await.expect("renew"), "past its TTL the lease is gone");
    assert_eq!(o.acquire(E, "b", None, LONG, Duration::ZERO).await.expect("acquire"), Claim::Acquired, "free after its TTL");

    let short = Duration::from_secs(2);
    assert!(o.renew(E, "b", short).await.expect("renew"), "the holder renews");
    b.pass(short + Duration::from_secs(1)).await;
    assert_eq!(s.acquire(E, "c", None, LONG, Duration::ZERO).await.expect("acquire"), Claim::Acquired, "renew counts its TTL from now");

    assert!(s.renew(E, "c", LONG).await.expect("renew"), "the holder renews");
    b.pass(short + Duration::from_secs(1)).await;
    held_by(o.acquire(E, "d", None, LONG, Duration::ZERO).await.expect("acquire"), "c", None, LONG);
}

/// Contenders that all wait for the lease get it one at a time: never two holders at once.
pub async fn one_holder_at_a_time_among_contenders(b: impl StateBackend) {
    let holding = AtomicUsize::new(0);
    let most = AtomicUsize::new(0);
    let contend = |who: &'static str, on_other: bool| {
        let (holding, most) = (&holding, &most);
        let store = if on_other { b.other() } else { b.store() };
        async move {
            // Long waits: a busy server answers slowly, and what matters is that all get it.
            let claim = store.acquire(E, who, None, LONG, Duration::from_secs(240)).await.expect("acquire");
            assert_eq!(claim, Claim::Acquired, "{who} gets the lease in turn");
            most.fetch_max(holding.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            holding.fetch_sub(1, Ordering::SeqCst);
            store.release(E, who).await.expect("release");
        }
    };
    tokio::join!(contend("a", false), contend("b", true), contend("c", false), contend("d", true));
    assert_eq!(most.load(Ordering::SeqCst), 1, "at most one holder at a time");
}
