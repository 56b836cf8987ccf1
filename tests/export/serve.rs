//! `ferry serve` as a separate process: Pub/Sub emulator pushes, duplicates, malformed
//! messages, CloudEvents, push authentication and SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use ferry_testkit::oidc::TokenSigner;
use ferry_testkit::pubsub::TestTopic;
use ferry_testkit::{eventually, mails_to, stack, unique};
use serde_json::{json, Value};

use crate::common::{ferry_bin, ids, insert, orders, Fixture};

/// A running `ferry serve` with its own config directory; killed when dropped.
pub(crate) struct Service {
    child: Child,
    pub(crate) url: String,
    dir: PathBuf,
}

impl Service {
    pub(crate) async fn start(dir: &Path, env: &[(&str, String)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::fs::File::create(dir.join("serve.log")).unwrap();
        let child = Command::new(ferry_bin())
            .arg("serve")
            .env("PORT", port.to_string())
            .env("FERRY_LISTEN", "127.0.0.1")
            .env("FERRY_CONFIG_DIR", dir)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start ferry serve");
        let url = format!("http://127.0.0.1:{port}");
        let health = format!("{url}/health");
        eventually(Duration::from_secs(15), "ferry serve /health", || {
            let health = health.clone();
            async move { reqwest::get(&health).await.ok().filter(|r| r.status() == 200).map(|_| ()) }
        })
        .await;
        Self { child, url, dir: dir.to_owned() }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    /// The log as JSON entries; every line must be one.
    pub(crate) fn entries(&self) -> Vec<Value> {
        self.log().lines().map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"))).collect()
    }

    pub(crate) async fn post(&self, body: &Value, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut req = reqwest::Client::new().post(format!("{}/", self.url)).json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("POST /");
        (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn envelope(message_id: &str, data: &Value) -> Value {
    envelope_raw(message_id, &data.to_string())
}

fn envelope_raw(message_id: &str, data: &str) -> Value {
    let data = base64::engine::general_purpose::STANDARD.encode(data);
    json!({"message": {"data": data, "messageId": message_id, "attributes": {}}, "subscription": "projects/p/subscriptions/s"})
}

/// A config directory holding `<name>.json` for the fixture's export, plus `default.json`
/// when `default` is given.
fn config_dir(f: &Fixture, notifications: Option<Value>) -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(unique("ferry-configs"));
    std::fs::create_dir_all(&dir).unwrap();
    let export = json!({"name": f.export, "source_table": format!("{}.orders", f.ds.name), "destination_filename": "{name}_{datetime}.csv", "timestamp_column": "updated_at", "incremental": true});
    let mut v = f.json(export, json!({}));
    if let Some(n) = notifications {
        v["notifications"] = n;
    }
    let name = unique("cfg");
    std::fs::write(dir.join(format!("{name}.json")), v.to_string()).unwrap();
    std::fs::write(dir.join("default.json"), v.to_string()).unwrap();
    (dir, name)
}

/// This export's metadata rows for `message_id`: statuses in order.
pub(crate) async fn statuses_for(f: &Fixture, message_id: &str) -> Vec<String> {
    let sql = format!(
        "SELECT export_status FROM `{}` WHERE export_name = '{}' AND message_id = '{message_id}' ORDER BY completed_at",
        f.ds.table("export_metadata"),
        f.export
    );
    // Before the service's first run the table does not exist yet: no rows.
    let Ok(job) = stack().bigquery().query(&sql, &[], 1000).await else { return Vec::new() };
    job.collect().await.unwrap_or_default().iter().filter_map(|r| crate::common::text(&r[0])).collect()
}

/// How long a redelivered message may take to succeed: the Pub/Sub emulator's redelivery
/// backoff plus a run's dozen metadata-table calls, each of which a loaded BigQuery emulator
/// answers in seconds.
pub(crate) const DELIVERY: u64 = 240;

pub(crate) async fn wait_for_success(f: &Fixture, message_id: &str, secs: u64) -> Vec<String> {
    eventually(Duration::from_secs(secs), "a SUCCESS row for the message", || async {
        let s = statuses_for(f, message_id).await;
        s.iter().any(|x| x == "SUCCESS").then_some(s)
    })
    .await
}

fn plain_email(to: &str) -> Value {
    json!({"smtp_host": stack().var("FERRY_SMTP_HOST"), "smtp_port": stack().var("FERRY_SMTP_PLAIN_PORT").parse::<u16>().unwrap(), "tls": "none", "from": "ferry@example.test", "to": [to], "when": "failure"})
}

#[tokio::test]
async fn a_message_published_with_ferry_publish_is_delivered_and_recorded() {
    let f = Fixture::new("serve").await;
    orders(&f, &[(1, "2026-10-01 00:00:00+00"), (2, "2026-10-02 00:00:00+00")]).await;
    let (dir, name) = config_dir(&f, None);
    let svc = Service::start(&dir, &[]).await;
    let topic = TestTopic::create("ferry").await;
    topic.push_to(&format!("{}/", svc.url)).await;

    let emulator = stack().var("FERRY_PUBSUB_ENDPOINT").trim_start_matches("http://").to_owned();
    let out = Command::new(ferry_bin())
        .args(["publish", "--topic", &topic.name, "--config-name", &name])
        .env("PUBSUB_EMULATOR_HOST", &emulator)
        .output()
        .expect("ferry publish");
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{printed}{}", String::from_utf8_lossy(&out.stderr));
    let message_id = printed.split_whitespace().nth(2).expect("message id").to_owned();

    assert_eq!(wait_for_success(&f, &message_id, DELIVERY).await, ["PENDING", "SUCCESS"]);
    assert_eq!(ids(&f.delivered_rows()), [1, 2]);
    // Under load the emulator may redeliver before the first delivery answers; such a redelivery
    // is answered 503 (busy) or 200 (already delivered). The delivery itself is the 200 answer.
    let handled = eventually(Duration::from_secs(60), "the delivering answer in the log", || async {
        svc.entries().into_iter().find(|e| e["message"] == "push handled" && e["status"] == "ok")
    })
    .await;
    assert_eq!(handled["severity"], "INFO");
    assert_eq!(handled["message_id"], message_id.as_str());
    assert_eq!(handled["http_status"], 200);
    let finished = eventually(Duration::from_secs(60), "the export's log entry", || async {
        svc.entries().into_iter().find(|e| e["message"] == "export finished" && e["status"] == "SUCCESS")
    })
    .await;
    assert_eq!((finished["export"].as_str(), finished["message_id"].as_str()), (Some(f.export.as_str()), Some(message_id.as_str())));
    assert_eq!(finished["run_id"], handled["run_id"], "export entries carry the run id of the request that delivered");
    assert!(
        svc.entries().iter().all(|e| !(e["message"] == "push handled" && e["status"] == "failed")),
        "no delivery of this message was acknowledged as failed: {}",
        svc.log()
    );
}

#[tokio::test]
async fn a_retryable_failure_is_redelivered_by_the_emulator_and_delivered_once() {
    let f = Fixture::new("serve").await;
    orders(&f, &[(1, "2026-10-01 00:00:00+00"), (2, "2026-10-02 00:00:00+00")]).await;
    let (dir, name) = config_dir(&f, None);
    let svc = Service::start(&dir, &[("FERRY_FAILPOINTS", format!("upload:after@{}", f.export))]).await;
    let topic = TestTopic::create("ferry").await;
    topic.push_to(&format!("{}/", svc.url)).await;
    let message_id = topic.publish(json!({"config": name}).to_string().as_bytes(), json!({})).await;

    assert_eq!(wait_for_success(&f, &message_id, DELIVERY).await, ["FAILED", "PENDING", "SUCCESS"]);
    assert!(svc.entries().iter().any(|e| e["message"] == "push handled" && e["http_status"] == 503), "the first attempt asked for a retry");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(statuses_for(&f, &message_id).await, ["FAILED", "PENDING", "SUCCESS"], "no further delivery");
    assert_eq!(ids(&f.delivered_rows()), [1, 2], "one file with every row");
}

#[tokio::test]
async fn duplicate_deliveries_serial_and_concurrent_deliver_once() {
    let f = Fixture::new("serve").await;
    orders(&f, &[(1, "2026-10-01 00:00:00+00")]).await;
    let (dir, name) = config_dir(&f, None);
    // A generous wait: on a busy emulator the first delivery can take a while.
    let svc = Service::start(&dir, &[("FERRY_LEASE_WAIT_SECONDS", "120".into())]).await;

    let m1 = unique("m");
    let body = envelope(&m1, &json!({"config": name}));
    let (s1, b1) = svc.post(&body, &[]).await;
    assert_eq!((s1, b1["exports"][0]["status"].as_str()), (200, Some("SUCCESS")), "{b1}");
    insert(&f, &[(2, "2026-10-02 00:00:00+00")]).await;
    let (s2, b2) = svc.post(&body, &[]).await;
    assert_eq!((s2, b2["exports"][0]["status"].as_str()), (200, Some("ALREADY_DELIVERED")), "{b2}");
    assert_eq!(f.dir.names().len(), 1, "a redelivery sends nothing, not even rows that arrived since");

    let m2 = unique("m");
    let body = envelope(&m2, &json!({"config": name}));
    let ((sa, ba), (sb, bb)) = tokio::join!(svc.post(&body, &[]), svc.post(&body, &[]));
    assert_eq!((sa, sb), (200, 200), "{ba} {bb}");
    let mut got = [ba["exports"][0]["status"].as_str().unwrap_or_default(), bb["exports"][0]["status"].as_str().unwrap_or_default()];
    got.sort();
    assert_eq!(got, ["ALREADY_DELIVERED", "SUCCESS"], "one delivers, the other waits for it and finds it done");
    assert_eq!(statuses_for(&f, &m2).await, ["PENDING", "SUCCESS"]);
    assert_eq!(ids(&f.delivered_rows()), [1, 2], "each row once");
}

#[tokio::test]
async fn a_redelivery_while_the_first_delivery_still_runs_is_retried_until_it_is_a_no_op() {
    let f = Fixture::new("serve").await;
    orders(&f, &[(1, "2026-10-01 00:00:00+00")]).await;
    let (dir, name) = config_dir(&f, None);
    // The first delivery stalls past the subscription's 10 s ack deadline, so the emulator
    // redelivers while it runs; the redelivery waits at most 1 s for the lease.
    let svc = Service::start(
        &dir,
        &[("FERRY_FAILPOINTS", format!("upload:during@{}=sleep:14000", f.export)), ("FERRY_LEASE_WAIT_SECONDS", "1".into())],
    )
    .await;
    let topic = TestTopic::create("ferry").await;
    topic.push_to(&format!("{}/", svc.url)).await;
    let message_id = topic.publish(json!({"config": name}).to_string().as_bytes(), json!({})).await;

    assert_eq!(wait_for_success(&f, &message_id, DELIVERY).await, ["PENDING", "SUCCESS"]);
    eventually(Duration::from_secs(30), "a redelivery answered after the delivery", || async {
        svc.entries().iter().any(|e| e["message"] == "message already delivered; nothing to do").then_some(())
    })
    .await;
    let entries = svc.entries();
    assert!(
        entries.iter().any(|e| e["message"] == "push handled" && e["http_status"] == 503),
        "a redelivery arrived while the first ran and was sent back: {}",
        svc.log()
    );
    assert_eq!(statuses_for(&f, &message_id).await, ["PENDING", "SUCCESS"]);
    assert_eq!(f.dir.names().len(), 1);
}

#[tokio::test]
async fn the_cloudevent_form_is_served_by_the_same_handler() {
    let f = Fixture::new("serve").await;
    orders(&f, &[(1, "2026-10-01 00:00:00+00")]).await;
    let (dir, name) = config_dir(&f, None);
    let svc = Service::start(&dir, &[]).await;
    let id = unique("ce");
    let data = base64::engine::general_purpose::STANDARD.encode(json!({"config": name}).to_string());
    let body = json!({"message": {"data": data, "messageId": id}, "subscription": "projects/p/subscriptions/eventarc-s"});
    let headers = [
        ("ce-id", id.as_str()),
        ("ce-specversion", "1.0"),
        ("ce-type", "google.cloud.pubsub.topic.v1.messagePublished"),
        ("ce-source", "//pubsub.googleapis.com/projects/p/topics/t"),
    ];
    let (status, b) = svc.post(&body, &headers).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(statuses_for(&f, &id).await, ["PENDING", "SUCCESS"]);
    assert!(svc.entries().iter().any(|e| e["message"] == "push handled" && e["form"] == "eventarc"));
}

#[tokio::test]
async fn malformed_messages_are_acknowledged_logged_and_reported_once_per_burst() {
    let f = Fixture::new("serve").await;
    orders(&f, &[(1, "2026-10-01 00:00:00+00")]).await;
    let to = format!("{}@example.test", unique("ops"));
    let (dir, name) = config_dir(&f, Some(json!({"email": plain_email(&to)})));
    // Long enough that the burst below fits in one window on a loaded machine.
    let window = 15;
    let svc = Service::start(&dir, &[("FERRY_REJECT_REPORT_WINDOW_SECONDS", window.to_string())]).await;
    let client = reqwest::Client::new();

    let raw = client.post(format!("{}/", svc.url)).body("not json at all").send().await.unwrap();
    assert_eq!(raw.status(), 200, "acknowledged, not redelivered forever");
    let huge = json!({"message": {"data": "", "messageId": unique("big"), "padding": "x".repeat(300 << 10)}});
    let cases = [
        (json!({"message": {"data": "***", "messageId": unique("bad")}}), "message data is not base64"),
        (envelope_raw(&unique("bad"), "{not json"), "message data is not JSON"),
        (envelope(&unique("bad"), &json!(42)), "message data is a number; expected a JSON object"),
        (envelope(&unique("bad"), &json!({"config": "no_such_config"})), "unknown config \"no_such_config\""),
        (json!({"message": {"data": 42, "messageId": unique("bad")}}), "message data is a number, not a base64 string"),
        (envelope(&unique("bad"), &Value::Null), "message data is null"),
        (envelope(&unique("bad"), &json!({"config": name, "exports": []})), "message data field exports: the list is empty"),
        (envelope(&unique("bad"), &json!({"config": name, "colour": "red"})), "unknown field `colour`"),
        (huge, "the request body is larger than 262144 bytes"),
    ];
    for (body, reason) in &cases {
        let (status, b) = svc.post(body, &[]).await;
        assert_eq!((status, b["status"].as_str()), (200, Some("rejected")), "{b}");
        assert!(b["reason"].as_str().unwrap_or_default().contains(reason), "{reason:?} in {b}");
    }
    for _ in 0..35 {
        let raw = client.post(format!("{}/", svc.url)).body("not json at all").send().await.unwrap();
        assert_eq!(raw.status(), 200);
    }
    let (status, b) = svc.post(&envelope(&unique("bad"), &json!({"config": name, "exports": ["no_such_export"]})), &[]).await;
    assert_eq!((status, b["status"].as_str()), (200, Some("failed")), "an unknown export is a permanent failure: {b}");

    let health = reqwest::get(format!("{}/health", svc.url)).await.unwrap();
    assert_eq!(health.status(), 200, "still serving");
    let entries = svc.entries();
    let rejected: Vec<&Value> =
        entries.iter().filter(|e| e["message"].as_str().is_some_and(|m| m.starts_with("trigger message rejected"))).collect();
    assert_eq!(rejected.len(), 1 + cases.len() + 35, "every rejection is logged: {}", svc.log());
    assert!(rejected.iter().all(|e| e["severity"] == "ERROR" && e["reason"].is_string()));
    for (_, reason) in &cases {
        assert!(rejected.iter().any(|e| e["reason"].as_str().unwrap_or_default().contains(reason)), "{reason:?} logged");
    }

    // 45 rejections: the first is mailed at once, the other 44 in one summary when the window
    // ends; the unknown export is a failed run, mailed on its own.
    let mails = eventually(Duration::from_secs(window + 30), "the burst's summary mail", || async {
        let mails = mails_to(&to);
        (mails.len() >= 3).then_some(mails)
    })
    .await;
    let bodies: Vec<&str> = mails.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    assert!(bodies.iter().any(|b| b.contains("the request body is not JSON")), "{bodies:?}");
    assert!(bodies.iter().any(|b| b.contains("unknown export \"no_such_export\"")), "{bodies:?}");
    let summary = bodies.iter().find(|b| b.contains("more trigger messages were rejected")).expect("a summary");
    assert!(summary.contains(&format!("{} more trigger messages were rejected in the last {window} s", cases.len() + 35)), "{summary}");
    assert!(summary.contains("1× message data is not base64"), "{summary}");
    tokio::time::sleep(Duration::from_secs(window + 2)).await;
    assert_eq!(mails_to(&to).len(), 3, "a window without rejections sends nothing");
}

#[tokio::test]
async fn a_run_goes_on_when_its_push_request_is_abandoned() {
    let f = Fixture::new("serve").await;
    orders(&f, &[(1, "2026-10-01 00:00:00+00")]).await;
    let (dir, name) = config_dir(&f, None);
    let svc = Service::start(&dir, &[("FERRY_FAILPOINTS", format!("upload:during@{}=sleep:4000", f.export))]).await;
    let id = unique("gone");
    let body = envelope(&id, &json!({"config": name}));
    let url = format!("{}/", svc.url);
    let request = tokio::spawn(async move { reqwest::Client::new().post(url).json(&body).send().await.map(|r| r.status().as_u16()) });
    eventually(Duration::from_secs(120), "the run to reach the destination", || async {
        svc.entries().iter().any(|e| e["message"] == "failpoint armed from FERRY_FAILPOINTS").then_some(())
    })
    .await;
    // The client goes away, as Pub/Sub does when a push outlives its deadline.
    request.abort();
    assert!(request.await.unwrap_err().is_cancelled());
    let statuses = wait_for_success(&f, &id, DELIVERY).await;
    assert_eq!(statuses, ["PENDING", "SUCCESS"], "the run finished without its request: {}", svc.log());
    assert_eq!(f.dir.names().len(), 1, "{:?}", f.dir.names());
    // The redelivery finds the message delivered, and no lease left behind.
    let (status, b) = svc.post(&envelope(&id, &json!({"config": name})), &[]).await;
    assert_eq!((status, b["exports"][0]["status"].as_str()), (200, Some("ALREADY_DELIVERED")), "{b}");
}

#[tokio::test]
async fn sigterm_lets_the_run_in_flight_finish() {
    let f = Fixture::new("serve").await;
    orders(&f, &[(1, "2026-10-01 00:00:00+00")]).await;
    let (dir, name) = config_dir(&f, None);
    let mut svc = Service::start(
        &dir,
        &[("FERRY_FAILPOINTS", format!("upload:during@{}=sleep:3000", f.export)), ("FERRY_SHUTDOWN_GRACE_SECONDS", "60".into())],
    )
    .await;
    let id = unique("term");
    let body = envelope(&id, &json!({"config": name}));
    let url = format!("{}/", svc.url);
    let request = tokio::spawn(async move { reqwest::Client::new().post(url).json(&body).send().await.map(|r| r.status().as_u16()) });
    // SIGTERM while the upload is under way.
    eventually(Duration::from_secs(120), "the upload to start", || async {
        svc.entries().iter().any(|e| e["message"] == "failpoint armed from FERRY_FAILPOINTS").then_some(())
    })
    .await;
    let kill = Command::new("kill").args(["-TERM", &svc.child.id().to_string()]).status().expect("kill -TERM");
    assert!(kill.success());
    assert_eq!(request.await.unwrap().expect("the request in flight is answered"), 200);
    let status = svc.child.wait().expect("wait");
    assert!(status.success(), "clean exit after draining: {status:?}\n{}", svc.log());
    assert_eq!(statuses_for(&f, &id).await, ["PENDING", "SUCCESS"]);
    assert!(svc.entries().iter().any(|e| e["message"] == "ferry serve stopped"));
}

#[tokio::test]
async fn push_tokens_are_verified_when_configured() {
    let f = Fixture::new("serve").await;
    orders(&f, &[(1, "2026-10-01 00:00:00+00")]).await;
    let (dir, name) = config_dir(&f, None);
    let signer = TokenSigner::new(&dir);
    let impostor = TokenSigner { key: TokenSigner::new(&dir).key, kid: signer.kid.clone() };
    let jwks = signer.jwks();
    let app = axum::Router::new().route("/certs", axum::routing::get(move || async move { axum::Json(jwks) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let certs = format!("http://{}/certs", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let audience = "https://ferry.example.test/";
    let account = "pusher@proj.iam.gserviceaccount.com";
    let svc = Service::start(
        &dir,
        &[("FERRY_PUSH_AUDIENCE", audience.into()), ("FERRY_PUSH_SERVICE_ACCOUNT", account.into()), ("FERRY_PUSH_JWKS_URL", certs)],
    )
    .await;
    let now = chrono::Utc::now().timestamp();
    let good = json!({"iss": "https://accounts.google.com", "aud": audience, "email": account, "email_verified": true, "iat": now, "exp": now + 3600});
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let body = envelope(&unique("auth"), &json!({"config": name, "dry_run": true}));
    let refused = [
        (None, "no token"),
        (Some(format!("Bearer {}", signer.token(&with("aud", json!("https://other.example/"))))), "wrong audience"),
        (Some(format!("Bearer {}", signer.token(&with("exp", json!(now - 3600))))), "expired"),
        (Some(format!("Bearer {}", signer.token(&with("iss", json!("https://evil.example"))))), "wrong issuer"),
        (Some(format!("Bearer {}", signer.token(&with("email", json!("someone@else.example"))))), "wrong service account"),
        (Some(format!("Bearer {}", impostor.token(&good))), "signed by another key"),
        (Some("Bearer not.a-token".into()), "garbage"),
    ];
    for (auth, what) in &refused {
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let (status, _) = svc.post(&body, &headers).await;
        assert_eq!(status, 401, "{what} is refused");
    }
    let token = format!("Bearer {}", signer.token(&good));
    let (status, b) = svc.post(&body, &[("authorization", token.as_str())]).await;
    assert_eq!(status, 200, "a valid token is accepted: {b}");
    assert!(f.dir.names().is_empty(), "a dry run delivers nothing");
    let refusals = svc.entries().iter().filter(|e| e["message"] == "push request refused: authentication failed").count();
    assert_eq!(refusals, refused.len());
    assert!(!svc.log().contains(&token[7..]), "tokens are never logged");
}
