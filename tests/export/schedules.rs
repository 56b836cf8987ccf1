//! `ferry check` on schedules: each cron and zone is checked, and the next three run times are
//! printed in the schedule's zone and in UTC, after the time `FERRY_CHECK_NOW` fixes.

use std::process::Command;

use serde_json::{json, Value};

use crate::common::ferry_bin;

fn config(schedules: Value) -> Value {
    json!({
        "exports": [{
            "name": "orders", "source_table": "shop.orders", "destination_filename": "ORDERS_{datetime}.csv",
            "timestamp_column": "updated_at", "incremental": true, "columns": ["id", "updated_at"]
        }, {
            "name": "refunds", "source_table": "shop.refunds", "destination_filename": "REFUNDS_{datetime}.csv",
            "timestamp_column": "updated_at", "incremental": true, "columns": ["id", "updated_at"]
        }],
        "sftp": {"path": "/upload", "host": "127.0.0.1", "username": "u", "host_key_fingerprint": "SHA256:AnxDfrPmOL4De0eahuVc3Rk2UV15ZF6y0jItw/GoFp4"},
        "metadata_table": "proj-1.ops.export_metadata",
        "schedules": schedules
    })
}

/// `ferry check --no-secrets` on `v` with `FERRY_CHECK_NOW=now`: exit code, stdout, stderr.
fn check(v: &Value, now: &str) -> (Option<i32>, String, String) {
    let dir = std::env::temp_dir().join(ferry_testkit::unique("ferry-schedules"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ferry.json");
    std::fs::write(&path, v.to_string()).unwrap();
    let out = Command::new(ferry_bin())
        .env_clear()
        .env("FERRY_CHECK_NOW", now)
        .args(["--config", path.to_str().unwrap(), "check", "--no-secrets"])
        .output()
        .expect("ferry check");
    std::fs::remove_dir_all(&dir).ok();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Europe/London skips 01:00-02:00 on 2026-03-29: the 01:30 run of that day is at 02:00 BST.
#[test]
fn ferry_check_prints_each_schedules_next_three_runs_in_its_zone_and_in_utc() {
    let v = config(json!([
        {"name": "nightly", "cron": "30 1 * * *", "time_zone": "Europe/London", "exports": ["orders"]},
        {"name": "weekdays", "cron": "0 9 * * MON-FRI", "exports": ["refunds"], "full": true}
    ]));
    let (code, stdout, stderr) = check(&v, "2026-03-28T12:00:00Z");
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let schedule_lines: Vec<&str> = stdout.lines().skip_while(|l| !l.trim_start().starts_with("schedule ")).collect();
    assert_eq!(
        schedule_lines,
        [
            "  schedule nightly         30 1 * * * (Europe/London): orders",
            "    next 2026-03-29 02:00 BST (+01:00) = 2026-03-29 01:00 UTC",
            "    next 2026-03-30 01:30 BST (+01:00) = 2026-03-30 00:30 UTC",
            "    next 2026-03-31 01:30 BST (+01:00) = 2026-03-31 00:30 UTC",
            "  schedule weekdays        0 9 * * MON-FRI (Etc/UTC): refunds, full",
            "    next 2026-03-30 09:00 UTC (+00:00) = 2026-03-30 09:00 UTC",
            "    next 2026-03-31 09:00 UTC (+00:00) = 2026-03-31 09:00 UTC",
            "    next 2026-04-01 09:00 UTC (+00:00) = 2026-04-01 09:00 UTC",
        ],
        "{stdout}"
    );

    // Another `now`, other times: the times follow FERRY_CHECK_NOW, not the clock.
    let (code, stdout, stderr) = check(&v, "2026-10-24T23:59:00Z");
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("    next 2026-10-25 01:30 BST (+01:00) = 2026-10-25 00:30 UTC\n    next 2026-10-26 01:30 GMT (+00:00) = 2026-10-26 01:30 UTC\n"), "{stdout}");
}

#[test]
fn ferry_check_refuses_a_bad_cron_or_zone_naming_the_field() {
    let v = config(json!([
        {"name": "a", "cron": "99 99 * * *"},
        {"name": "b", "cron": "0 2 * * *", "time_zone": "Mars/Olympus"},
        {"name": "c", "cron": "0 0 L * *"}
    ]));
    let (code, stdout, stderr) = check(&v, "2026-03-28T12:00:00Z");
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    for want in [
        "schedules[0].cron: minute 99 is out of range 0-59",
        "schedules[1].time_zone: expected an IANA time zone such as \"Europe/Berlin\" or \"Etc/UTC\", found \"Mars/Olympus\"",
        "schedules[2].cron: day-of-month \"L\" is not a number 1-31 (Cloud Scheduler's cron has no L, W, #, ? or +)",
    ] {
        assert!(stderr.contains(want), "{want} not in:\n{stderr}");
    }

    let (code, _, stderr) = check(&config(json!([{"name": "a", "cron": "0 2 * * *"}])), "tomorrow");
    assert_eq!(code, Some(2), "a FERRY_CHECK_NOW that is no RFC 3339 time is refused: {stderr}");
    assert!(stderr.contains("FERRY_CHECK_NOW") || stderr.contains("--now"), "{stderr}");
}
