//! `ferry run` killed with SIGKILL at random moments, on the real stack: whatever moment the
//! process dies, the next runs converge to every source row delivered exactly once, and no
//! partial file is ever listed under a final name.
//!
//! The `ferry` processes are run with `tokio::process`: a blocking wait would stall the test's
//! runtime long enough for the BigQuery client's pooled connection to go stale.
//!
//! The moments come from a seed, printed first and in every failure; set `FERRY_KILL_SEED` to
//! replay a run, `FERRY_KILL_ITERATIONS` for more iterations.

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::process::Command;

use crate::common::{ferry_bin, Fixture};

/// Rows in the table before the first run, and added before some later runs.
const ROWS: i64 = 200_000;
const MORE: i64 = 5_000;
/// Long enough for a busy emulator to renew a lease in time. A killed run's lease is freed
/// with `ferry lease release`, which sees that its holder's process is gone; its temporary
/// files are removed by the first run after they are older than this.
const LEASE_TTL: u64 = 30;

/// A small deterministic generator (xorshift64*), so a seed replays the same kill moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

async fn add_rows(f: &Fixture, from: i64, to: i64) {
    f.ds.exec(&format!(
        "INSERT INTO `{}` (id, note, updated_at) SELECT id, CONCAT('row ', CAST(id AS STRING)), \
         TIMESTAMP_ADD(TIMESTAMP '2026-01-01 00:00:00+00', INTERVAL id SECOND) FROM UNNEST(GENERATE_ARRAY({from}, {to})) AS id",
        f.ds.table("orders")
    ))
    .await;
}

/// Every file name and size any record of the export lists (PENDING records list a run's
/// files before any of them is published).
async fn recorded_files(f: &Fixture) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for json in f.column("files", None).await.into_iter().flatten() {
        let files: Vec<ferry_core::FileRecord> = serde_json::from_str(&json).expect("files JSON");
        for file in files {
            out.insert(file.name, file.bytes);
        }
    }
    out
}

/// Every final-name file must be one a record lists, with the recorded size: never partial.
async fn no_partial_file_listed(f: &Fixture, seed: u64, when: &str) {
    let recorded = recorded_files(f).await;
    for name in f.dir.names().into_iter().filter(|n| !n.starts_with('.')) {
        let size = f.dir.read(&name).len() as u64;
        assert_eq!(recorded.get(&name), Some(&size), "seed {seed}, {when}: {name} ({size} bytes) is listed but no record has it whole");
    }
}

fn cli(f: &Fixture, config: &std::path::Path) -> Command {
    let mut c = Command::new(ferry_bin());
    c.args(["run", "--config"])
        .arg(config)
        .envs(f.env.iter())
        .env("FERRY_LEASE_TTL_SECONDS", LEASE_TTL.to_string())
        .env("FERRY_LEASE_WAIT_SECONDS", "0")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

#[tokio::test]
async fn sigkill_at_random_moments_loses_and_doubles_nothing() {
    let seed = std::env::var("FERRY_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64 | 1);
    let iterations: u32 = std::env::var("FERRY_KILL_ITERATIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    eprintln!("sigkill test: FERRY_KILL_SEED={seed} FERRY_KILL_ITERATIONS={iterations}");
    let mut rng = Rng(seed);

    let f = Fixture::new("kill").await;
    f.ds.exec(&format!("CREATE TABLE `{}` (id INT64, note STRING, updated_at TIMESTAMP)", f.ds.table("orders"))).await;
    add_rows(&f, 1, ROWS).await;
    let export = json!({
        "name": f.export,
        "source_table": format!("{}.orders", f.ds.name),
        "destination_filename": "{name}_{datetime}_{part}.csv",
        "timestamp_column": "updated_at",
        "incremental": true,
        "max_rows_per_file": 60_000,
    });
    let config = std::env::temp_dir().join(format!("{}.json", f.export));
    std::fs::write(&config, f.json(export, json!({})).to_string()).expect("config");

    // How long an uninterrupted run of the whole table takes on this machine, on a copy of
    // the export (its own name, so its records and lease are its own): kill moments are drawn
    // from up to a little more than that.
    let t = Instant::now();
    let probe_dir = ferry_testkit::TestDir::create("kill-probe");
    let probe = {
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
        v["exports"][0]["name"] = json!(format!("{}_probe", f.export));
        v["sftp"]["path"] = json!(probe_dir.remote());
        let p = std::env::temp_dir().join(format!("{}_probe.json", f.export));
        std::fs::write(&p, v.to_string()).unwrap();
        p
    };
    let out = cli(&f, &probe).stdout(Stdio::piped()).stderr(Stdio::piped()).output().await.expect("run ferry");
    assert!(
        out.status.success(),
        "an uninterrupted run succeeds: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(probe_dir.names().len(), 4, "200 000 rows in files of 60 000");
    let full_run = t.elapsed();
    eprintln!("an uninterrupted run of {ROWS} rows takes {full_run:?}");

    let mut total = ROWS;
    let mut kills = BTreeMap::new();
    for i in 0..iterations {
        if i % 3 == 2 {
            add_rows(&f, total + 1, total + MORE).await;
            total += MORE;
        }
        let at = Duration::from_millis(rng.below(full_run.as_millis() as u64 * 6 / 5));
        let mut child = cli(&f, &config).spawn().expect("start ferry run");
        let started = Instant::now();
        let mut finished = false;
        while started.elapsed() < at {
            if child.try_wait().expect("wait").is_some() {
                finished = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !finished {
            child.start_kill().expect("SIGKILL");
        }
        child.wait().await.expect("reaped");
        *kills.entry(if finished { "finished" } else { "killed" }).or_insert(0) += 1;
        no_partial_file_listed(&f, seed, &format!("after iteration {i} (kill at {at:?})")).await;
        // The killed run's lease: its process is gone, so it may be released without --force.
        let released = Command::new(ferry_bin())
            .args(["lease", "release", "--export", &f.export, "--config"])
            .arg(&config)
            .envs(f.env.iter())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .expect("ferry lease release");
        assert!(released.success(), "seed {seed}: the lease of a killed run is released");
    }
    eprintln!("runs: {kills:?}");

    // The temporary files of killed runs are older than the lease by the next run.
    tokio::time::sleep(Duration::from_secs(LEASE_TTL + 1)).await;
    let out = cli(&f, &config).stdout(Stdio::piped()).stderr(Stdio::piped()).output().await.expect("run ferry");
    assert!(
        out.status.success(),
        "seed {seed}: a run without kills succeeds: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    no_partial_file_listed(&f, seed, "at the end").await;

    let names = f.dir.names();
    let temps: Vec<&String> = names.iter().filter(|n| n.starts_with('.')).collect();
    assert!(temps.is_empty(), "seed {seed}: temporary files left: {temps:?}");
    let mut ids: Vec<i64> = f.delivered_rows().iter().map(|r| r[0].parse().expect("id")).collect();
    ids.sort_unstable();
    let mut counts: BTreeMap<i64, u32> = BTreeMap::new();
    for id in &ids {
        *counts.entry(*id).or_default() += 1;
    }
    let doubled = counts.values().filter(|c| **c > 1).count();
    let lost = (1..=total).filter(|id| !counts.contains_key(id)).count();
    assert_eq!((lost, doubled), (0, 0), "seed {seed}: {lost} rows lost, {doubled} doubled of {total}");
    assert_eq!(ids.len() as i64, total, "seed {seed}");
    let statuses: Vec<String> = f.metadata().await.into_iter().map(|m| m.0).collect();
    let last = statuses.iter().rev().find(|s| *s != "EMPTY").map(String::as_str);
    assert_eq!(last, Some("SUCCESS"), "seed {seed}: every run settled, the last delivery succeeded: {statuses:?}");
}
