//! Notifications from real runs, captured by the stack's SMTP server (STARTTLS + AUTH, implicit
//! TLS) and Slack capture.

use std::process::Command;

use ferry_core::config::Config;
use ferry_core::failpoint;
use ferry_testkit::{mails_to, slack_posts, slack_url, stack, unique, Mail};
use serde_json::{json, Value};

use crate::common::{ferry_bin, orders, Fixture};

fn rcpt(prefix: &str) -> String {
    format!("{}@example.test", unique(prefix))
}

/// STARTTLS with AUTH against the stack's CA, as a production relay would be configured.
fn starttls_email(to: &[&str], when: &str) -> Value {
    let s = stack();
    json!({
        "smtp_host": s.var("FERRY_SMTP_HOST"),
        "smtp_port": s.var("FERRY_SMTP_TLS_PORT").parse::<u16>().unwrap(),
        "tls": "starttls",
        "username": s.var("FERRY_SMTP_USER"),
        "password_file": s.var("FERRY_SMTP_PASSWORD_FILE"),
        "ca_file": s.var("FERRY_SMTP_CA"),
        "from": "ferry@example.test",
        "to": to,
        "when": when,
    })
}

/// The fixture's one-export config with `notifications`.
fn config_with(f: &Fixture, notifications: Value) -> Config {
    let export = json!({
        "name": f.export,
        "source_table": format!("{}.orders", f.ds.name),
        "destination_filename": "{name}_{datetime}.csv",
        "timestamp_column": "updated_at",
        "incremental": true,
    });
    let mut v = f.json(export, json!({}));
    v["notifications"] = notifications;
    f.load(&v).expect("valid config")
}

fn only_mail(to: &str) -> Mail {
    let mut got = mails_to(to);
    assert_eq!(got.len(), 1, "one mail to {to}");
    got.remove(0)
}

#[tokio::test]
async fn success_and_failure_are_mailed_and_posted_with_their_figures() {
    let mut f = Fixture::new("notify").await;
    let hook = unique("hook");
    f.env.insert("SLACK_WEBHOOK_URL".into(), slack_url(&hook));
    orders(&f, &[(1, "2026-09-01 00:00:00+00"), (2, "2026-09-02 00:00:00+00"), (3, "2026-09-03 00:00:00+00")]).await;
    let (ops, lead) = (rcpt("ops"), rcpt("lead"));
    let config = config_with(&f, json!({"email": starttls_email(&[&ops, &lead], "always"), "slack": {"when": "always"}}));

    let r = f.run(&config, false).await;
    assert!(r.succeeded(), "{r:?}");
    assert!(r.notify_errors.is_empty(), "{:?}", r.notify_errors);
    let file = r.outcomes[0].file.clone().expect("a file");
    let bytes = f.dir.read(&file).len();

    let m = only_mail(&ops);
    assert_eq!(m.record["tls"], true, "sent over STARTTLS");
    assert_eq!(m.record["auth_user"], stack().var("FERRY_SMTP_USER"));
    let mut rcpts: Vec<&str> = m.record["rcpt_tos"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    rcpts.sort();
    let mut want = vec![ops.as_str(), lead.as_str()];
    want.sort();
    assert_eq!(rcpts, want, "one mail to every recipient");
    assert_eq!(m.header("Subject"), Some(format!("[ferry] OK: {}, 3 rows in 1 file", f.export).as_str()));
    assert_eq!(m.header("X-Ferry-Run-Id"), Some(r.run_id.as_str()));
    let body = &m.body;
    assert!(body.contains(&format!("{} — SUCCESS", f.export)), "{body}");
    assert!(body.contains("  rows:     3\n"), "{body}");
    assert!(body.contains(&format!("  file:     {file} ({bytes} bytes)")), "{body}");
    assert!(body.contains("  window:   (-∞, 2026-09-03T00:00:00.000000Z]"), "{body}");
    assert!(body.contains(&r.run_id), "{body}");

    let posts = slack_posts(&hook);
    assert_eq!(posts.len(), 1);
    let payload: Value = serde_json::from_str(posts[0]["body"].as_str().unwrap()).expect("JSON body");
    assert_eq!(posts[0]["headers"]["content-type"], "application/json");
    assert_eq!(payload["blocks"][0]["text"]["text"], format!("[ferry] OK: {}, 3 rows in 1 file", f.export));
    let section = payload["blocks"][1]["text"]["text"].as_str().unwrap();
    assert!(section.contains(&format!("3 rows → `{file}` ({bytes} bytes)")), "{section}");
    assert!(payload["text"].as_str().unwrap().starts_with("[ferry] OK:"), "a plain-text fallback: {payload}");

    // A failed run: one more mail and post, with the error and what it means.
    crate::common::insert(&f, &[(4, "2026-09-04 00:00:00+00")]).await;
    failpoint::arm("upload:after", &f.export);
    let r = f.run(&config, false).await;
    assert!(!r.succeeded());
    let mails = mails_to(&ops);
    assert_eq!(mails.len(), 2);
    let m = &mails[1];
    assert_eq!(m.header("Subject"), Some(format!("[ferry] FAILED: {} (1 of 1 export failed)", f.export).as_str()));
    assert!(m.body.contains(&format!("{}: injected failure at upload:after", f.export)), "{}", m.body);
    assert!(m.body.contains("The watermark did not move, so the next run delivers these rows"), "{}", m.body);
    assert!(m.body.contains("  window:   (2026-09-03T00:00:00.000000Z, 2026-09-04T00:00:00.000000Z]"), "{}", m.body);
    let posts = slack_posts(&hook);
    assert_eq!(posts.len(), 2);
    let payload: Value = serde_json::from_str(posts[1]["body"].as_str().unwrap()).unwrap();
    assert!(payload["blocks"][1]["text"]["text"].as_str().unwrap().contains("injected failure at upload:after"), "{payload}");
}

#[tokio::test]
async fn channels_send_only_for_the_outcomes_they_ask_for() {
    let mut f = Fixture::new("notify").await;
    let hook = unique("hook");
    f.env.insert("SLACK_WEBHOOK_URL".into(), slack_url(&hook));
    orders(&f, &[(1, "2026-09-01 00:00:00+00")]).await;
    let on_success = rcpt("ok");
    let config = config_with(&f, json!({"email": starttls_email(&[&on_success], "success"), "slack": {"when": "failure"}}));

    let r = f.run(&config, false).await;
    assert!(r.succeeded());
    assert_eq!(mails_to(&on_success).len(), 1);
    assert!(slack_posts(&hook).is_empty(), "slack only hears about failures");

    failpoint::arm("upload:during", &f.export);
    crate::common::insert(&f, &[(2, "2026-09-02 00:00:00+00")]).await;
    let r = f.run(&config, false).await;
    assert!(!r.succeeded());
    assert_eq!(mails_to(&on_success).len(), 1, "email only hears about successes");
    assert_eq!(slack_posts(&hook).len(), 1);
}

#[tokio::test]
async fn implicit_tls_delivers_too() {
    let f = Fixture::new("notify").await;
    orders(&f, &[(1, "2026-09-01 00:00:00+00")]).await;
    let to = rcpt("tls");
    let mut email = starttls_email(&[&to], "always");
    email["tls"] = json!("implicit");
    email["smtp_port"] = json!(stack().var("FERRY_SMTP_IMPLICIT_TLS_PORT").parse::<u16>().unwrap());
    let r = f.run(&config_with(&f, json!({"email": email})), false).await;
    assert!(r.succeeded() && r.notify_errors.is_empty(), "{r:?}");
    let m = only_mail(&to);
    assert_eq!(m.record["port"].as_u64().map(|p| p.to_string()), Some(stack().var("FERRY_SMTP_IMPLICIT_TLS_PORT")));
    assert_eq!(m.record["auth_user"], stack().var("FERRY_SMTP_USER"));
}

/// Runs one export with a broken channel: the export commits, the report names the problem.
async fn broken_channel(email: Option<Value>, slack: Option<String>) -> (Fixture, Vec<String>) {
    let mut f = Fixture::new("notify").await;
    orders(&f, &[(1, "2026-09-01 00:00:00+00"), (2, "2026-09-02 00:00:00+00")]).await;
    let mut n = json!({});
    if let Some(e) = email {
        n["email"] = e;
    }
    if let Some(url) = slack {
        f.env.insert("SLACK_WEBHOOK_URL".into(), url);
        n["slack"] = json!({});
    }
    let r = f.run(&config_with(&f, n), false).await;
    assert!(r.succeeded(), "a notification failure never fails the export: {r:?}");
    assert_eq!(f.delivered_rows().len(), 2, "the file was delivered");
    assert_eq!(f.watermark().await.as_deref(), Some("2026-09-02T00:00:00.000000Z"), "and the watermark moved");
    assert_eq!(r.notify_errors.len(), 1, "{:?}", r.notify_errors);
    (f, r.notify_errors)
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_clear_error_and_the_export_commits() {
    let to = rcpt("ca");
    let mut email = starttls_email(&[&to], "always");
    email["ca_file"] = json!(stack().var("FERRY_SMTP_OTHER_CA"));
    let (_f, errors) = broken_channel(Some(email), None).await;
    let e = &errors[0];
    assert!(e.starts_with("email: email via 127.0.0.1:"), "{e}");
    assert!(e.contains("TLS failed") && e.contains("UnknownIssuer") && e.contains("notifications.email.ca_file"), "{e}");
    assert!(!e.contains("gave up after"), "a certificate problem is not retried: {e}");
    assert!(mails_to(&to).is_empty());
}

#[tokio::test]
async fn a_wrong_smtp_password_is_a_clear_error_and_the_export_commits() {
    let to = rcpt("pw");
    let mut email = starttls_email(&[&to], "always");
    email.as_object_mut().unwrap().remove("password_file");
    email["password_env"] = json!("FERRY_TEST_SMTP_PASSWORD");
    let mut f = Fixture::new("notify").await;
    f.env.insert("FERRY_TEST_SMTP_PASSWORD".into(), "wrong-password".into());
    orders(&f, &[(1, "2026-09-01 00:00:00+00")]).await;
    let r = f.run(&config_with(&f, json!({"email": email})), false).await;
    assert!(r.succeeded(), "{r:?}");
    assert_eq!(f.delivered_rows().len(), 1);
    let e = &r.notify_errors[0];
    assert!(e.contains("rejected the login of user \"mailer\"") && e.contains("535"), "{e}");
    assert!(mails_to(&to).is_empty());
}

#[tokio::test]
async fn a_slack_500_is_reported_without_posting_twice_and_the_export_commits() {
    let hook = unique("hook500");
    let url = format!("{}/status/500/hooks/{hook}", stack().var("FERRY_SLACK_ENDPOINT"));
    let (_f, errors) = broken_channel(None, Some(url)).await;
    let e = &errors[0];
    assert!(e.contains("slack webhook: HTTP 500") && !e.contains("gave up"), "{e}");
    // A webhook post has no request id: after a 5xx the message may be in the channel already.
    assert_eq!(slack_posts(&hook).len(), 1, "one attempt");
}

/// Through the CLI: the export fails on a wrong SFTP password that is a sentinel; neither it nor
/// the webhook token appears in the mail, the Slack post, or anything ferry prints.
#[tokio::test]
async fn no_secret_reaches_a_mail_a_slack_post_or_the_log() {
    let f = Fixture::new("notify").await;
    orders(&f, &[(1, "2026-09-01 00:00:00+00")]).await;
    let password = "sentinel-Sftp-7f1e22";
    let token = "XoxSentinelToken93b1";
    let hook = unique("hook");
    let to = rcpt("secret");
    let export = json!({"name": f.export, "source_table": format!("{}.orders", f.ds.name), "destination_filename": "s_{datetime}.csv", "timestamp_column": "updated_at", "incremental": true});
    let mut v = f.json(export, json!({"username": stack().var("FERRY_SFTP_PASSWORD_USER"), "private_key_file": null}));
    v["notifications"] = json!({"email": starttls_email(&[&to], "always"), "slack": {}});
    let path = f.dir.path.join("config.json");
    std::fs::write(&path, v.to_string()).unwrap();
    let run = |webhook: String| {
        Command::new(ferry_bin())
            .args(["--config", path.to_str().unwrap(), "run"])
            .env("SFTP_PASSWORD", password)
            .env("SLACK_WEBHOOK_URL", webhook)
            .env("FERRY_LOG", "info")
            .output()
            .expect("run ferry")
    };
    let out = run(format!("{}/{token}", slack_url(&hook)));
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "the wrong password fails the export: {printed}");
    let m = only_mail(&to);
    assert!(m.body.contains("rejected password authentication"), "the mail says why: {}", m.body);
    let posts = slack_posts(&hook);
    assert_eq!(posts.len(), 1);
    for (what, text) in
        [("mail", m.raw.as_str()), ("mail body", m.body.as_str()), ("slack post", posts[0]["body"].as_str().unwrap()), ("output", &printed)]
    {
        assert!(!text.contains(password), "the SFTP password leaked into the {what}");
        assert!(!text.contains(token), "the webhook token leaked into the {what}");
    }

    // An unreachable webhook: the connection error names no URL.
    let out = run(format!("http://127.0.0.1:9/hooks/{token}"));
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains("notification failed: slack: slack webhook: cannot reach the webhook"), "{printed}");
    assert!(!printed.contains(token), "the webhook token leaked:\n{printed}");
    assert!(!printed.contains(password), "the password leaked:\n{printed}");
}

/// `ferry check` reports what would stop a notification before any run.
#[tokio::test]
async fn check_reports_notification_problems_before_any_run() {
    let f = Fixture::new("notify").await;
    let export = json!({"name": f.export, "source_table": format!("{}.orders", f.ds.name), "destination_filename": "c_{datetime}.csv", "timestamp_column": "updated_at", "incremental": true});
    let path = f.dir.path.join("config.json");
    let check = |notifications: Value| {
        let mut v = f.json(export.clone(), json!({}));
        v["notifications"] = notifications;
        std::fs::write(&path, v.to_string()).unwrap();
        let out = Command::new(ferry_bin())
            .args(["--config", path.to_str().unwrap(), "check"])
            .env_remove("EMAIL_PASSWORD")
            .output()
            .expect("check");
        (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    let to = rcpt("check");

    let (code, out) = check(json!({"email": starttls_email(&[&to], "failure")}));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("notify email (failure) via 127.0.0.1:{} to {to}", stack().var("FERRY_SMTP_TLS_PORT"))), "{out}");

    let not_pem = f.dir.path.join("not-a-ca.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let mut email = starttls_email(&[&to], "always");
    email["ca_file"] = json!(not_pem);
    let (code, out) = check(json!({"email": email}));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("notifications.email.ca_file:") && out.contains("is not a PEM certificate"), "{out}");

    let mut email = starttls_email(&[&to], "always");
    email.as_object_mut().unwrap().remove("password_file");
    email["to"] = json!(["ops@example.test", "not an address"]);
    let (code, out) = check(json!({"email": email}));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("notifications.email.password_env: environment variable EMAIL_PASSWORD is not set"), "{out}");
    assert!(out.contains("notifications.email.to[1]: expected an email address"), "{out}");
    assert!(mails_to(&to).is_empty(), "check sends nothing");
}

/// When the metadata table cannot be used no export starts, and that failure is not silent.
#[tokio::test]
async fn a_run_that_cannot_start_is_still_reported() {
    let f = Fixture::new("notify").await;
    let to = rcpt("start");
    let export = json!({"name": f.export, "source_table": format!("{}.orders", f.ds.name), "destination_filename": "n_{datetime}.csv", "timestamp_column": "updated_at", "incremental": true});
    let mut v = f.json(export, json!({}));
    v["metadata_table"] = json!(format!("{}.export_metadata", unique("no_such_dataset")));
    v["notifications"] = json!({"email": starttls_email(&[&to], "failure")});
    let r = f.run(&f.load(&v).expect("valid config"), false).await;
    assert!(!r.succeeded());
    assert!(f.dir.names().is_empty());
    let m = only_mail(&to);
    assert_eq!(m.header("Subject"), Some(format!("[ferry] FAILED: {} (1 of 1 export failed)", f.export).as_str()));
    assert!(m.body.contains("no_such_dataset"), "the mail names the table that failed: {}", m.body);
}
