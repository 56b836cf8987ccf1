//! [`MemoryStateStore`]: the metadata table and its leases in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::TimeDelta;
use ferry_core::{Claim, Failure, HolderProcess, Lease, RunRecord, RunStatus, StateStore};

use super::Clock;
use crate::conformance::state::StateBackend;
use crate::faults::Faults;

/// How often a waiting `acquire` looks again. Releases are seen at the next look.
const POLL: Duration = Duration::from_millis(5);

#[derive(Default)]
struct Tables {
    /// In append order.
    records: Vec<RunRecord>,
    leases: HashMap<String, Lease>,
}

/// A [`StateStore`] in memory with [`MetadataStore`](ferry_bigquery::MetadataStore)'s
/// semantics: records are only appended; "latest" means appended last (the table orders by
/// the server's clock when it recorded a row; `completed_at` plays no part); `history` clamps
/// its limit to 1..=10 000 as the table's query does; lease times come from a [`Clock`] that
/// tests can move forward, while `acquire` waits in real time. Leases record this process as
/// their holder's ([`HolderProcess::current`]).
///
/// Where the contract is silent it differs from the table: a TTL is kept exactly (the table
/// rounds it down to whole seconds, at least one).
///
/// Clones share records, leases, faults and clock, like two processes sharing one table.
#[derive(Clone, Default)]
pub struct MemoryStateStore {
    tables: Arc<Mutex<Tables>>,
    faults: Faults,
    clock: Clock,
}

impl std::fmt::Debug for MemoryStateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStateStore").field("records", &self.lock().records.len()).finish_non_exhaustive()
    }
}

impl MemoryStateStore {
    /// An empty store, ready without [`StateStore::ensure`], with its own faults and clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `faults` (e.g. one shared with a sink) instead of its own.
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// The rules this store obeys and the log of its calls.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The store's clock; [`Clock::advance`] makes leases run out.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every record, in append order.
    pub fn records(&self) -> Vec<RunRecord> {
        self.lock().records.clone()
    }

    /// The export's live lease, if any.
    pub fn live_lease(&self, export: &str) -> Option<Lease> {
        let now = self.clock.now();
        self.lock().leases.get(export).filter(|l| l.expires_at > now).cloned().map(|l| Lease { live: true, ..l })
    }

    /// Makes the export's lease run out now, as if its holder had died and its TTL passed.
    pub fn expire(&self, export: &str) {
        let now = self.clock.now();
        if let Some(l) = self.lock().leases.get_mut(export) {
            l.expires_at = l.expires_at.min(now);
        }
    }

    /// Gives the export's lease to `holder` for an hour, whoever held it: another run taking
    /// over after this one's lease ran out unnoticed.
    pub fn steal(&self, export: &str, holder: &str) {
        let now = self.clock.now();
        let lease = Lease {
            holder: holder.to_owned(),
            message_id: None,
            acquired_at: now,
            expires_at: now + TimeDelta::hours(1),
            live: true,
            process: None,
        };
        self.lock().leases.insert(export.to_owned(), lease);
    }

    /// Records of `export` that satisfy `keep`, in append order.
    fn select(&self, export: Option<&str>, keep: impl Fn(&RunRecord) -> bool) -> Vec<RunRecord> {
        let t = self.lock();
        t.records.iter().filter(|r| export.is_none_or(|e| r.export_name == e) && keep(r)).cloned().collect()
    }
}

fn ttl_delta(ttl: Duration) -> TimeDelta {
    TimeDelta::from_std(ttl).unwrap_or(TimeDelta::MAX)
}

#[async_trait]
impl StateStore for MemoryStateStore {
    async fn ensure(&self) -> Result<(), Failure> {
        self.faults.enter("state.ensure", "").await?.reply(Ok(()))
    }

    async fn watermark(&self, export: &str) -> Result<Option<(String, String)>, Failure> {
        let pass = self.faults.enter("state.watermark", export).await?;
        let latest = self.select(Some(export), |r| r.status == RunStatus::Success && r.last_exported_value.is_some()).pop();
        pass.reply(Ok(latest.and_then(|r| Some((r.cursor_type.unwrap_or_default(), r.last_exported_value?)))))
    }

    async fn null_arrival_mark(&self, export: &str) -> Result<Option<String>, Failure> {
        let pass = self.faults.enter("state.arrival_mark", export).await?;
        let mark = self.select(Some(export), |r| r.status == RunStatus::Success).into_iter().filter_map(|r| r.null_arrival_hi).max();
        pass.reply(Ok(mark))
    }

    async fn pending(&self, export: &str) -> Result<Vec<RunRecord>, Failure> {
        let pass = self.faults.enter("state.pending", export).await?;
        let settled: Vec<(String, String)> =
            self.select(Some(export), |r| r.status != RunStatus::Pending).into_iter().map(|r| (r.export_name, r.run_id)).collect();
        let pending = self.select(Some(export), |r| {
            r.status == RunStatus::Pending && !settled.iter().any(|(e, id)| *e == r.export_name && *id == r.run_id)
        });
        pass.reply(Ok(pending))
    }

    async fn append(&self, record: &RunRecord) -> Result<(), Failure> {
        let pass = self.faults.enter("state.append", record.status.as_str()).await?;
        self.lock().records.push(record.clone());
        pass.reply(Ok(()))
    }

    async fn history(&self, export: Option<&str>, limit: u32) -> Result<Vec<RunRecord>, Failure> {
        let pass = self.faults.enter("state.history", export.unwrap_or_default()).await?;
        let mut all = self.select(export, |_| true);
        all.reverse();
        all.truncate(limit.clamp(1, 10_000) as usize);
        pass.reply(Ok(all))
    }

    async fn by_message(&self, export: &str, message_id: &str) -> Result<Vec<RunRecord>, Failure> {
        let pass = self.faults.enter("state.by_message", export).await?;
        pass.reply(Ok(self.select(Some(export), |r| r.message_id.as_deref() == Some(message_id))))
    }

    async fn acquire(&self, export: &str, holder: &str, message_id: Option<&str>, ttl: Duration, wait: Duration) -> Result<Claim, Failure> {
        let pass = self.faults.enter("state.acquire", holder).await?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let held = {
                let mut t = self.lock();
                let now = self.clock.now();
                match t.leases.get(export) {
                    Some(l) if l.expires_at > now => {
                        Claim::Held { holder: l.holder.clone(), message_id: l.message_id.clone(), expires_at: l.expires_at }
                    }
                    _ => {
                        let lease = Lease {
                            holder: holder.to_owned(),
                            message_id: message_id.map(str::to_owned),
                            acquired_at: now,
                            expires_at: now + ttl_delta(ttl),
                            live: true,
                            process: Some(HolderProcess::current()),
                        };
                        t.leases.insert(export.to_owned(), lease);
                        return pass.reply(Ok(Claim::Acquired));
                    }
                }
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return pass.reply(Ok(held));
            }
            tokio::time::sleep(POLL.min(left)).await;
        }
    }

    async fn renew(&self, export: &str, holder: &str, ttl: Duration) -> Result<bool, Failure> {
        let pass = self.faults.enter("state.renew", holder).await?;
        let now = self.clock.now();
        let renewed = match self.lock().leases.get_mut(export) {
            Some(l) if l.holder == holder && l.expires_at > now => {
                l.expires_at = now + ttl_delta(ttl);
                true
            }
            _ => false,
        };
        pass.reply(Ok(renewed))
    }

    async fn release(&self, export: &str, holder: &str) -> Result<(), Failure> {
        let pass = self.faults.enter("state.release", holder).await?;
        {
            let mut t = self.lock();
            if t.leases.get(export).is_some_and(|l| l.holder == holder) {
                t.leases.remove(export);
            }
        }
        pass.reply(Ok(()))
    }

    async fn lease(&self, export: &str) -> Result<Option<Lease>, Failure> {
        let pass = self.faults.enter("state.lease", export).await?;
        let now = self.clock.now();
        let lease = self.lock().leases.get(export).cloned().map(|l| Lease { live: l.expires_at > now, ..l });
        pass.reply(Ok(lease))
    }
}

/// Clones share everything, so the store is its own "other process".
#[async_trait]
impl StateBackend for MemoryStateStore {
    fn store(&self) -> &dyn StateStore {
        self
    }

    fn other(&self) -> &dyn StateStore {
        self
    }

    async fn expire(&self, export: &str, holder: &str) {
        if self.live_lease(export).is_some_and(|l| l.holder == holder) {
            MemoryStateStore::expire(self, export);
        }
    }

    async fn pass(&self, d: Duration) {
        self.clock.advance(d);
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use ferry_core::{ErrorClass, PutMode, Sink};

    use super::*;
    use crate::faults::{Fault, Rule};
    use crate::memory::MemorySink;

    const TTL: Duration = Duration::from_secs(60);

    fn record(run: &str, status: RunStatus, value: &str) -> RunRecord {
        let at = Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0).single().expect("time");
        RunRecord {
            run_id: run.to_owned(),
            export_name: "e".to_owned(),
            source_table: "ds.t".to_owned(),
            status,
            last_exported_value: Some(value.to_owned()),
            cursor_type: Some("INT64".to_owned()),
            window_lo: None,
            rows_exported: 1,
            bytes: 1,
            sha256: None,
            file_name: None,
            files: Vec::new(),
            started_at: at,
            completed_at: at,
            error_message: None,
            message_id: None,
            null_cursor_rows: None,
            null_arrival_hi: None,
            execution: None,
        }
    }

    #[tokio::test]
    async fn an_append_that_fails_before_records_nothing_and_one_whose_reply_is_lost_records_anyway() {
        let s = MemoryStateStore::new();
        s.faults().arm(Rule::at("state.append", Fault::ErrorBefore).when(|status| status == "SUCCESS"));
        s.append(&record("r1", RunStatus::Pending, "1")).await.expect("PENDING is not armed");
        let err = s.append(&record("r1", RunStatus::Success, "1")).await.expect_err("injected");
        assert_eq!(err.class(), ErrorClass::Transient);
        assert_eq!(s.records().len(), 1);
        assert_eq!(s.watermark("e").await.expect("watermark"), None);

        s.faults().arm(Rule::at("state.append", Fault::ErrorAfter));
        s.append(&record("r1", RunStatus::Success, "1")).await.expect_err("reply lost");
        assert_eq!(s.watermark("e").await.expect("watermark"), Some(("INT64".to_owned(), "1".to_owned())), "recorded anyway");
    }

    #[tokio::test]
    async fn a_lost_acquire_reply_leaves_the_lease_taken() {
        let s = MemoryStateStore::new();
        s.faults().arm(Rule::at("state.acquire", Fault::ErrorAfter).when(|holder| holder == "a"));
        s.acquire("e", "a", None, TTL, Duration::ZERO).await.expect_err("reply lost");
        assert_eq!(s.live_lease("e").map(|l| l.holder).as_deref(), Some("a"));
        assert!(matches!(s.acquire("e", "b", None, TTL, Duration::ZERO).await.expect("acquire"), Claim::Held { .. }));
    }

    #[tokio::test]
    async fn leases_run_out_when_the_clock_moves_past_their_ttl() {
        let s = MemoryStateStore::new();
        assert_eq!(s.acquire("e", "a", None, TTL, Duration::ZERO).await.expect("acquire"), Claim::Acquired);
        s.clock().advance(TTL - Duration::from_secs(1));
        assert!(s.live_lease("e").is_some(), "still live");
        s.clock().advance(Duration::from_secs(2));
        assert_eq!(s.live_lease("e"), None, "past its TTL");
        assert_eq!(s.acquire("e", "b", None, TTL, Duration::ZERO).await.expect("acquire"), Claim::Acquired);
    }

    #[tokio::test]
    async fn a_hung_renew_never_answers() {
        let s = MemoryStateStore::new();
        s.faults().arm(Rule::at("state.renew", Fault::Hang));
        assert!(tokio::time::timeout(Duration::from_millis(50), s.renew("e", "a", TTL)).await.is_err());
    }

    #[tokio::test]
    async fn history_clamps_its_limit_like_the_metadata_table() {
        let s = MemoryStateStore::new();
        s.append(&record("r1", RunStatus::Empty, "1")).await.expect("append");
        s.append(&record("r2", RunStatus::Empty, "1")).await.expect("append");
        let runs: Vec<String> = s.history(None, 0).await.expect("history").into_iter().map(|r| r.run_id).collect();
        assert_eq!(runs, ["r2"], "limit 0 reads as 1; of equal times the later append is newer");
    }

    #[tokio::test]
    async fn a_sink_and_a_store_sharing_faults_log_their_calls_in_one_order() {
        let s = MemoryStateStore::new();
        let sink = MemorySink::new().with_faults(s.faults().clone());
        let up = sink.begin("a.csv", ".a.csv.t.ferry-tmp", PutMode::Create).await.expect("begin");
        s.append(&record("r1", RunStatus::Pending, "1")).await.expect("append");
        up.commit().await.expect("commit");
        s.append(&record("r1", RunStatus::Success, "1")).await.expect("append");
        assert_eq!(s.faults().points(), ["sink.begin", "state.append", "upload.seal", "upload.commit", "state.append"]);
    }
}
