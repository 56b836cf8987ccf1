//! What a notification says: one message per run, a line block per export, and for each failed
//! export the error and what it means for the next run.
//!
//! The texts are built only from the [`RunReport`], whose error texts the runner has already
//! redacted; nothing here sees a secret.

use ferry_core::run::{ExportOutcome, RunReport, Skip};
use ferry_core::{ErrorClass, RunStatus};
use serde_json::{json, Value};

/// Slack allows 50 blocks per message; the rest of the exports are summarised in one line.
const SLACK_MAX_EXPORT_BLOCKS: usize = 40;
/// Slack's limit for a section's text is 3000 characters.
const SLACK_MAX_SECTION: usize = 2900;

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn failed(report: &RunReport) -> Vec<&ExportOutcome> {
    report.outcomes.iter().filter(|o| o.status == RunStatus::Failed).collect()
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The subject line: `[ferry] OK: …` or `[ferry] FAILED: …` with the figures that matter.
pub fn subject(report: &RunReport) -> String {
    let failed = failed(report);
    let total = report.outcomes.len();
    if failed.is_empty() {
        let rows: u64 = report.outcomes.iter().map(|o| o.rows).sum();
        let files = report.outcomes.iter().filter(|o| o.status == RunStatus::Success).count();
        let what = match report.outcomes.as_slice() {
            [one] => one.export.clone(),
            _ => plural(total, "export", "exports"),
        };
        format!("[ferry] OK: {what}, {} rows in {}", thousands(rows), plural(files, "file", "files"))
    } else {
        let names: Vec<&str> = failed.iter().map(|o| o.export.as_str()).collect();
        format!("[ferry] FAILED: {} ({} of {} failed)", names.join(", "), failed.len(), plural(total, "export", "exports"))
    }
}

/// What a failure means for the next run, by retry class.
pub fn consequence(class: Option<ErrorClass>) -> &'static str {
    match class {
        Some(ErrorClass::Transient) => {
            "This looks temporary. The watermark did not move, so the next run delivers these rows; nothing is lost."
        }
        _ => "This needs a fix before the next run succeeds. The watermark did not move, so nothing is lost once it is fixed.",
    }
}

fn seconds(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1} s")
    } else {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    }
}

fn export_lines(o: &ExportOutcome) -> Vec<String> {
    let mut lines = vec![format!("{} — {}", o.export, o.status.as_str())];
    if !o.source.is_empty() {
        lines.push(format!("  source:   {}", o.source));
    }
    match o.status {
        RunStatus::Failed => {}
        RunStatus::Empty => lines.push("  rows:     0 (nothing new since the last delivery; no file sent)".into()),
        _ => {
            lines.push(format!("  rows:     {}", thousands(o.rows)));
            if let Some(f) = &o.file {
                lines.push(format!("  file:     {f} ({} bytes)", thousands(o.bytes)));
            }
            if let Some(h) = &o.sha256 {
                lines.push(format!("  sha256:   {h}"));
            }
        }
    }
    if o.window.lo.is_some() || o.window.hi.is_some() {
        lines.push(format!("  window:   {}", o.window));
    }
    lines.push(format!("  duration: {}", seconds(o.seconds)));
    if let Some(note) = o.null_cursor_note() {
        lines.push(format!("  warning:  {note}"));
    }
    for r in &o.reconciled {
        lines.push(format!("  note:     settled interrupted run {r}"));
    }
    if let Some(Skip::AlreadyDelivered { run_id }) = &o.skipped {
        lines.push(format!("  note:     already delivered for this trigger message by run {run_id}; nothing sent again"));
    }
    lines
}

/// The plain-text body: the run, every export, then the details of each failure.
pub fn text(report: &RunReport) -> String {
    let took = (report.finished_at - report.started_at).num_milliseconds() as f64 / 1000.0;
    let mut out = vec![
        format!("ferry run {} {}.", report.run_id, if report.succeeded() { "succeeded" } else { "FAILED" }),
        format!("Finished {} after {}.", report.finished_at.format("%Y-%m-%d %H:%M:%S UTC"), seconds(took)),
        format!("Destination: {}", report.destination),
        String::new(),
    ];
    for o in &report.outcomes {
        out.extend(export_lines(o));
        out.push(String::new());
    }
    let failed = failed(report);
    if !failed.is_empty() {
        out.push("What failed".into());
        out.push("-----------".into());
        for o in failed {
            out.push(format!("{}: {}", o.export, o.error.as_deref().unwrap_or("unknown error")));
            out.push(format!("  {}", consequence(o.error_class)));
            out.push(String::new());
        }
    }
    if !report.notify_errors.is_empty() {
        out.push("Other notification channels failed:".into());
        out.extend(report.notify_errors.iter().map(|e| format!("  {e}")));
        out.push(String::new());
    }
    out.join("\n")
}

/// Escapes text for Slack mrkdwn (`&`, `<`, `>`).
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn clip(s: String, max: usize) -> String {
    if s.chars().count() <= max {
        return s;
    }
    let mut t: String = s.chars().take(max).collect();
    t.push('…');
    t
}

/// A Slack incoming-webhook payload: Block Kit blocks plus `text`, the plain fallback that
/// notifications and clients without blocks show.
pub fn slack_payload(report: &RunReport) -> Value {
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": clip(subject(report), 140)},
    })];
    for o in report.outcomes.iter().take(SLACK_MAX_EXPORT_BLOCKS) {
        let mut t = format!("*{}* — {}", esc(&o.export), o.status.as_str());
        match o.status {
            RunStatus::Failed => {
                t.push_str(&format!("\n```{}```\n{}", esc(o.error.as_deref().unwrap_or("unknown error")), consequence(o.error_class)))
            }
            RunStatus::Empty => t.push_str("\nno new rows; no file sent"),
            _ => t.push_str(&format!(
                "\n{} rows → `{}` ({} bytes)",
                thousands(o.rows),
                esc(o.file.as_deref().unwrap_or("-")),
                thousands(o.bytes)
            )),
        }
        if o.window.lo.is_some() || o.window.hi.is_some() {
            t.push_str(&format!("\nwindow `{}`", esc(&o.window.to_string())));
        }
        t.push_str(&format!(" · {}", seconds(o.seconds)));
        if let Some(note) = o.null_cursor_note() {
            t.push_str(&format!("\n:warning: {}", esc(&note)));
        }
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(t, SLACK_MAX_SECTION)}}));
    }
    if report.outcomes.len() > SLACK_MAX_EXPORT_BLOCKS {
        let rest = report.outcomes.len() - SLACK_MAX_EXPORT_BLOCKS;
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("…and {rest} more exports (see the email or `ferry history`)")}}));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": esc(&format!("run {} → {}", report.run_id, report.destination))}],
    }));
    let mut fallback = vec![subject(report)];
    for o in report.outcomes.iter().filter(|o| o.status == RunStatus::Failed) {
        fallback.push(format!("{}: {}", o.export, o.error.as_deref().unwrap_or("unknown error")));
    }
    for o in &report.outcomes {
        if let Some(note) = o.null_cursor_note() {
            fallback.push(format!("{}: {note}", o.export));
        }
    }
    fallback.push(format!("run {}", report.run_id));
    json!({"text": clip(fallback.join("\n"), 3000), "blocks": blocks})
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use ferry_core::cursor::CursorValue;
    use ferry_core::Window;

    fn outcome(name: &str, status: RunStatus, rows: u64) -> ExportOutcome {
        ExportOutcome {
            export: name.into(),
            source: format!("ds.{name}"),
            status,
            window: Window::between(Some(CursorValue::Int64(10)), Some(CursorValue::Int64(20))),
            rows,
            bytes: rows * 100,
            file: (status == RunStatus::Success).then(|| format!("{name}.csv")),
            sha256: None,
            files: Vec::new(),
            error: (status == RunStatus::Failed).then(|| "sftp 127.0.0.1:22: permission denied for <user>".into()),
            error_class: (status == RunStatus::Failed).then_some(ErrorClass::Permanent),
            seconds: 1.25,
            reconciled: Vec::new(),
            skipped: None,
            stages: Default::default(),
            null_cursor_rows: None,
        }
    }

    fn report(outcomes: Vec<ExportOutcome>) -> RunReport {
        RunReport {
            run_id: "run-1".into(),
            started_at: Utc.with_ymd_and_hms(2026, 11, 22, 6, 0, 0).unwrap(),
            finished_at: Utc.with_ymd_and_hms(2026, 11, 22, 6, 0, 3).unwrap(),
            dry_run: false,
            destination: "sftp://h:22/in".into(),
            outcomes,
            notify_errors: Vec::new(),
            execution: None,
        }
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn subjects_name_the_outcome_and_figures() {
        assert_eq!(subject(&report(vec![outcome("orders", RunStatus::Success, 1234)])), "[ferry] OK: orders, 1,234 rows in 1 file");
        assert_eq!(
            subject(&report(vec![outcome("a", RunStatus::Success, 2), outcome("b", RunStatus::Empty, 0)])),
            "[ferry] OK: 2 exports, 2 rows in 1 file"
        );
        assert_eq!(
            subject(&report(vec![outcome("a", RunStatus::Success, 2), outcome("b", RunStatus::Failed, 0)])),
            "[ferry] FAILED: b (1 of 2 exports failed)"
        );
    }

    #[test]
    fn body_lists_every_export_and_explains_failures() {
        let t = text(&report(vec![outcome("a", RunStatus::Success, 1500), outcome("b", RunStatus::Failed, 0)]));
        assert!(
            t.contains("a — SUCCESS\n  source:   ds.a\n  rows:     1,500\n  file:     a.csv (150,000 bytes)\n  window:   (10, 20]"),
            "{t}"
        );
        assert!(t.contains("b: sftp 127.0.0.1:22: permission denied for <user>\n  This needs a fix"), "{t}");
        assert!(t.contains("after 3.0 s"), "{t}");
    }

    #[test]
    fn slack_payload_escapes_mrkdwn_and_has_a_fallback() {
        let p = slack_payload(&report(vec![outcome("b", RunStatus::Failed, 0)]));
        let section = p["blocks"][1]["text"]["text"].as_str().unwrap();
        assert!(section.contains("&lt;user&gt;"), "{section}");
        assert!(p["text"].as_str().unwrap().starts_with("[ferry] FAILED: b"));
        assert_eq!(p["blocks"][0]["type"], "header");
    }

    #[test]
    fn null_cursor_rows_are_reported_in_mail_and_slack() {
        let mut o = outcome("orders", RunStatus::Success, 5);
        o.null_cursor_rows = Some(2);
        let r = report(vec![o]);
        let t = text(&r);
        assert!(t.contains("  warning:  2 rows have a NULL cursor and are not delivered by incremental runs"), "{t}");
        let p = slack_payload(&r);
        assert!(p["blocks"][1]["text"]["text"].as_str().unwrap().contains(":warning: 2 rows have a NULL cursor"), "{p}");
        assert!(p["text"].as_str().unwrap().contains("orders: 2 rows have a NULL cursor"), "{p}");
        // None, or zero: nothing said.
        assert!(!text(&report(vec![outcome("orders", RunStatus::Success, 5)])).contains("NULL"));
    }

    #[test]
    fn slack_payload_stays_within_the_block_limit() {
        let many = (0..100).map(|i| outcome(&format!("e{i}"), RunStatus::Success, 1)).collect();
        let p = slack_payload(&report(many));
        let blocks = p["blocks"].as_array().unwrap();
        assert!(blocks.len() <= 50);
        assert!(blocks.iter().any(|b| b["text"]["text"].as_str().is_some_and(|t| t.contains("and 60 more"))));
    }
}
