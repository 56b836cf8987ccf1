//! Exports handed to Cloud Run Job executions (`execution: job`), the whole path for real:
//! Pub/Sub emulator push → `ferry serve` → DISPATCHED → the Admin API stand-in
//! (`dev/capture/cloud_run_jobs.py`, which starts `ferry run` as a child process and retries a
//! failed task like Cloud Run) → PENDING/SUCCESS, delivered to sshd.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferry_testkit::pubsub::TestTopic;
use ferry_testkit::{eventually, stack, unique};
use serde_json::{json, Value};

use crate::common::{ferry_bin, ids, orders, Fixture};
use crate::serve::{envelope, statuses_for, wait_for_success, Service, DELIVERY};

/// The Admin API stand-in on a port of its own, its executions running the ferry binary under
/// test; stopped (with the executions it started) when dropped.
struct AdminApi {
    child: Child,
    url: String,
    out: PathBuf,
}

impl AdminApi {
    /// Started with `env` for its executions, and up to `retries` task retries.
    async fn start(env: &[(&str, String)], retries: u32) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let out = std::env::temp_dir().join(unique("cloudrun"));
        std::fs::create_dir_all(&out).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dev/capture/cloud_run_jobs.py");
        let child = Command::new("python3")
            .arg(script)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--default-args", "run", "--retry-delay", "1"])
            .arg("--out")
            .arg(&out)
            .arg("--command")
            .arg(ferry_bin())
            .args(["--max-retries", &retries.to_string()])
            .env("FERRY_ALLOW_PLAINTEXT_LOOPBACK", "1")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(out.join("standin.log")).unwrap())
            .spawn()
            .expect("start the Cloud Run Admin API stand-in");
        let url = format!("http://127.0.0.1:{port}");
        // A path only the stand-in serves: not another server that took the port meanwhile.
        let probe = format!("{url}/standin/executions");
        eventually(Duration::from_secs(15), "the Admin API stand-in", || {
            let probe = probe.clone();
            async move { reqwest::get(&probe).await.ok().filter(|r| r.status() == 200).map(|_| ()) }
        })
        .await;
        Self { child, url, out }
    }

    async fn executions(&self) -> Vec<Value> {
        let v: Value = reqwest::get(format!("{}/standin/executions", self.url)).await.unwrap().json().await.unwrap();
        v.as_array().cloned().unwrap_or_default()
    }

    async fn fault(&self, fault: Value) {
        let r = reqwest::Client::new().post(format!("{}/standin/fault", self.url)).json(&fault).send().await.unwrap();
        assert!(r.status().is_success(), "arming {fault}: {}", r.status());
    }

    /// The `:run` calls it received.
    fn run_calls(&self) -> Vec<Value> {
        std::fs::read_to_string(self.out.join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r["path"].as_str().is_some_and(|p| p.ends_with(":run")))
            .collect()
    }

    fn attempt_log(&self, attempt: &Value) -> String {
        attempt["log"].as_str().map(|p| std::fs::read_to_string(p).unwrap_or_default()).unwrap_or_default()
    }
}

impl Drop for AdminApi {
    fn drop(&mut self) {
        // SIGTERM: the stand-in stops the executions it started, then exits.
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        for _ in 0..100 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const JOB: &str = "projects/ferry-test/locations/local/jobs/ferry-run";

/// A config directory with `<name>.json`: the fixture's export with `execution: job`, and the
/// stand-in as its Cloud Run Admin API. Returns the directory, the name and the file.
fn job_config(f: &Fixture, api: &AdminApi, timeout_secs: u64) -> (PathBuf, String, PathBuf) {
    let dir = std::env::temp_dir().join(unique("ferry-configs"));
    std::fs::create_dir_all(&dir).unwrap();
    let export = json!({"name": f.export, "source_table": format!("{}.orders", f.ds.name), "destination_filename": "{name}_{datetime}.csv",
        "timestamp_column": "updated_at", "incremental": true, "execution": "job"});
    let mut v = f.json(export, json!({}));
    v["cloud_run_job"] = json!({"job": JOB, "endpoint": api.url, "auth": "none", "timeout_secs": timeout_secs});
    let name = unique("cfg");
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, v.to_string()).unwrap();
    std::fs::write(dir.join("default.json"), v.to_string()).unwrap();
    (dir, name, path)
}

/// This export's records for `message_id` as `(status, execution)`, in order.
async fn records_for(f: &Fixture, message_id: &str) -> Vec<(String, String)> {
    let sql = format!(
        "SELECT export_status, COALESCE(execution, '') FROM `{}` WHERE export_name = '{}' AND message_id = '{message_id}' ORDER BY COALESCE(recorded_at, completed_at)",
        f.ds.table("export_metadata"),
        f.export
    );
    // Before the service's first run the table does not exist yet: no rows.
    let Ok(job) = stack().bigquery().query(&sql, &[], 1000).await else { return Vec::new() };
    job.collect()
        .await
        .unwrap()
        .iter()
        .map(|r| (crate::common::text(&r[0]).unwrap_or_default(), crate::common::text(&r[1]).unwrap_or_default()))
        .collect()
}

fn push_answers(svc: &Service) -> Vec<i64> {
    svc.entries().iter().filter(|e| e["message"] == "push handled").filter_map(|e| e["http_status"].as_i64()).collect()
}

#[tokio::test]
async fn an_export_stalled_far_past_the_ack_deadline_is_delivered_once_through_a_job() {
    let f = Fixture::new("jobs").await;
    orders(&f, &[(1, "2026-10-01 00:00:00+00"), (2, "2026-10-01 00:01:00+00")]).await;
    // The execution stalls 25 s mid-upload; the subscription's ack deadline is 10 s.
    let api = AdminApi::start(&[("FERRY_FAILPOINTS", format!("upload:during@{}=sleep:25000", f.export))], 3).await;
    let (dir, name, path) = job_config(&f, &api, 10);
    let svc = Service::start(&dir, &[]).await;
    let topic = TestTopic::create("ferry-jobs").await;
    let dead = TestTopic::create("ferry-dead").await;
    let dead_sub = dead.pull_subscription().await;
    topic
        .push_to_with(&format!("{}/", svc.url), json!({"deadLetterPolicy": {"deadLetterTopic": dead.name, "maxDeliveryAttempts": 5}}))
        .await;
    let today = chrono::Utc::now().date_naive();
    let message_id = topic.publish(json!({"config": name}).to_string().as_bytes(), json!({})).await;

    let dispatched = eventually(Duration::from_secs(DELIVERY), "a DISPATCHED record", || async {
        let r = records_for(&f, &message_id).await;
        r.first().filter(|(s, _)| s == "DISPATCHED").cloned()
    })
    .await;
    assert!(dispatched.1.starts_with(&format!("{JOB}/executions/")), "{dispatched:?}");
    // A redelivery while the execution still runs is answered from the record (or, on a slow
    // machine where the stall is over, from the delivery).
    let (status, body) = svc.post(&envelope(&message_id, &json!({"config": name})), &[]).await;
    assert_eq!(status, 200, "{body}");
    match body["exports"][0]["status"].as_str() {
        Some("DISPATCHED") => {
            let execution = body["exports"][0]["execution"].as_str().unwrap_or_default().to_owned();
            let started = api.executions().await;
            assert!(started.iter().any(|e| e["name"] == execution.as_str()), "an execution that started: {body}");
        }
        other => assert_eq!(other, Some("ALREADY_DELIVERED"), "{body}"),
    }

    assert_eq!(wait_for_success(&f, &message_id, DELIVERY).await, ["DISPATCHED", "PENDING", "SUCCESS"]);
    let short = dispatched.1.rsplit('/').next().unwrap().to_owned();
    assert_eq!(
        records_for(&f, &message_id).await,
        [("DISPATCHED".to_owned(), dispatched.1.clone()), ("PENDING".to_owned(), short.clone()), ("SUCCESS".to_owned(), short.clone())],
        "the execution's records carry its id"
    );
    // One execution, unless the emulator pushed again before the first push was answered (a
    // loaded machine): a second one then found the rows delivered.
    let executions = api.executions().await;
    assert!(!executions.is_empty() && executions.len() == api.run_calls().len(), "{executions:#?}");
    assert!(executions.iter().any(|e| e["name"] == dispatched.1.as_str()), "{executions:#?}");
    let args: Vec<&str> = executions[0]["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let dates = [today, chrono::Utc::now().date_naive()].map(|d| format!("--date={d}"));
    assert!(dates.iter().any(|d| args.get(3) == Some(&d.as_str())), "{args:?}");
    let (config_arg, export_arg, message_arg) =
        (format!("--config={}", path.display()), format!("--export={}", f.export), format!("--message-id={message_id}"));
    assert_eq!([args[0], args[1], args[2], args[4]], ["run", config_arg.as_str(), export_arg.as_str(), message_arg.as_str()]);
    assert_eq!(ids(&f.delivered_rows()), [1, 2], "each row once");
    assert_eq!(f.dir.names().len(), 1);

    // Nothing was dead-lettered, and every push was acknowledged.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(dead_sub.pull().await.is_empty(), "a message reached the dead-letter topic");
    let answers = push_answers(&svc);
    assert!(!answers.is_empty() && answers.iter().all(|s| *s == 200), "every push answered 200: {answers:?}\n{}", svc.log());
    assert_eq!(statuses_for(&f, &message_id).await.iter().filter(|s| *s == "SUCCESS").count(), 1);

    // What an operator sees.
    let history = Command::new(ferry_bin())
        .args(["history", "--export", &f.export])
        .arg("--config")
        .arg(&path)
        .env("FERRY_ALLOW_PLAINTEXT_LOOPBACK", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&history.stdout);
    assert!(history.status.success(), "{text}{}", String::from_utf8_lossy(&history.stderr));
    assert!(text.contains("DISPATCHED") && text.contains(&format!("execution {short}")), "{text}");
}

#[tokio::test]
async fn an_execution_killed_half_way_is_retried_by_the_job_and_converges() {
    let f = Fixture::new("jobs").await;
    orders(&f, &[(1, "2026-10-01 00:00:00+00"), (2, "2026-10-01 00:01:00+00"), (3, "2026-10-01 00:02:00+00")]).await;
    // Every attempt stalls 20 s mid-upload; a killed attempt's lease runs out after 30 s (long
    // enough for a loaded emulator to renew it in time), and a retry waits up to 15 s for it
    // (then fails BUSY and is retried again).
    let env = [
        ("FERRY_FAILPOINTS", format!("upload:during@{}=sleep:20000", f.export)),
        ("FERRY_LEASE_TTL_SECONDS", "30".to_owned()),
        ("FERRY_LEASE_WAIT_SECONDS", "15".to_owned()),
    ];
    let api = AdminApi::start(&env, 6).await;
    let (dir, name, path) = job_config(&f, &api, 10);
    let svc = Service::start(&dir, &[]).await;
    let message_id = unique("kill");
    let (status, body) = svc.post(&envelope(&message_id, &json!({"config": name})), &[]).await;
    assert_eq!((status, body["exports"][0]["status"].as_str()), (200, Some("DISPATCHED")), "{body}");

    let pid = eventually(Duration::from_secs(DELIVERY), "the first attempt stalled mid-upload", || async {
        let e = api.executions().await;
        let attempt = e.first()?["attempts"].get(0)?.clone();
        api.attempt_log(&attempt).contains("failpoint armed").then(|| attempt["pid"].as_i64()).flatten()
    })
    .await;
    // Half-way: the temporary file is on the server.
    eventually(Duration::from_secs(60), "the upload to begin", || async { (!f.dir.names().is_empty()).then_some(()) }).await;
    assert!(Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());
    let killed = std::time::Instant::now();

    wait_for_success(&f, &message_id, DELIVERY * 2).await;
    eventually(Duration::from_secs(60), "the execution to end", || async {
        (api.executions().await[0]["state"] == "succeeded").then_some(())
    })
    .await;
    let statuses = statuses_for(&f, &message_id).await;
    assert_eq!(statuses.iter().filter(|s| *s == "SUCCESS").count(), 1, "{statuses:?}");
    assert_eq!(statuses.first().map(String::as_str), Some("DISPATCHED"));
    let e = api.executions().await;
    assert_eq!(e.len(), 1, "Cloud Run retried the task; nothing started a second execution");
    let attempts = e[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["signal"], 9, "{attempts:#?}");
    assert!(attempts.len() >= 2);
    // The killed attempt's temporary file goes with the export's next run, once it is older
    // than the lease.
    tokio::time::sleep(Duration::from_secs(31).saturating_sub(killed.elapsed())).await;
    let next = Command::new(ferry_bin())
        .args(["run", "--export", &f.export])
        .arg("--config")
        .arg(&path)
        .env("FERRY_ALLOW_PLAINTEXT_LOOPBACK", "1")
        .env("FERRY_LEASE_TTL_SECONDS", "30")
        .output()
        .unwrap();
    assert!(next.status.success(), "{}", String::from_utf8_lossy(&next.stderr));
    assert_eq!(f.dir.names().len(), 1, "no temporary file left: {:?}", f.dir.names());
    assert_eq!(ids(&f.delivered_rows()), [1, 2, 3], "nothing lost or doubled");
}

#[tokio::test]
async fn an_admin_api_that_refuses_or_hangs_gets_the_message_redelivered_and_records_nothing() {
    let f = Fixture::new("jobs").await;
    orders(&f, &[(1, "2026-10-01 00:00:00+00")]).await;
    let api = AdminApi::start(&[], 2).await;
    let (dir, name, _) = job_config(&f, &api, 5);
    let svc = Service::start(&dir, &[]).await;
    let message_id = unique("refused");
    let push = envelope(&message_id, &json!({"config": name}));
    for (fault, what) in [
        (json!({"status": 403, "times": 1}), "403"),
        (json!({"status": 500, "times": 1}), "500"),
        (json!({"hang": 15, "times": 1}), "a call that outlives timeout_secs"),
    ] {
        api.fault(fault).await;
        let (status, body) = svc.post(&push, &[]).await;
        assert_eq!(status, 503, "{what}: Pub/Sub must redeliver: {body}");
        assert_eq!(body["exports"][0]["status"], "NOT_DISPATCHED", "{what}: {body}");
        assert!(!body.to_string().contains("runWithOverrides"), "the caller gets no internal error text: {body}");
        assert!(statuses_for(&f, &message_id).await.is_empty(), "{what}: no DISPATCHED record");
        assert!(api.executions().await.is_empty(), "{what}: nothing started");
    }
    assert!(svc.log().contains("run.jobs.runWithOverrides"), "the log names the permission the API asked for: {}", svc.log());
    // The redelivery after the API recovered.
    let (status, body) = svc.post(&push, &[]).await;
    assert_eq!((status, body["exports"][0]["status"].as_str()), (200, Some("DISPATCHED")), "{body}");
    assert_eq!(wait_for_success(&f, &message_id, DELIVERY).await, ["DISPATCHED", "PENDING", "SUCCESS"]);
    assert_eq!(api.executions().await.len(), 1);
    let recorded = records_for(&f, &message_id).await;
    assert_eq!(recorded[0].1, api.executions().await[0]["name"].as_str().unwrap(), "DISPATCHED names the execution that started");
}
