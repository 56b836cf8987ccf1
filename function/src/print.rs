//! What the CLI prints: a checked config, a run report, progress, the history.

use ferry_core::config::{Config, RawConfig};
use ferry_core::run::{Progress, RunReport, Skip};
use ferry_core::{Lease, RunRecord, RunStatus};

/// How many run times `ferry check` prints for each schedule.
const NEXT_RUNS: usize = 3;

/// `ferry check`: what a valid config holds, with each schedule's next run times after `now`
/// in its zone and in UTC.
pub fn check(raw: &RawConfig, config: &Config, now: chrono::DateTime<chrono::Utc>) {
    for x in &config.exports {
        println!(
            "  {:<24} {}{} -> {}{}",
            x.name,
            if x.incremental { "incremental on " } else { "full" },
            x.cursor.as_deref().filter(|_| x.incremental).unwrap_or_default(),
            x.file().map(|f| f.template.as_str()).unwrap_or_else(|| x.destination.component.describe.as_str()),
            x.file().filter(|f| f.split.is_split()).map(|f| format!(" ({})", f.split)).unwrap_or_default()
        );
    }
    let n = &config.notifications;
    if let Some(e) = &n.email {
        println!("  notify email ({}) via {}:{} to {}", format!("{:?}", e.when).to_lowercase(), e.host, e.port, e.to.join(", "));
    }
    if let Some(s) = &n.slack {
        println!("  notify slack ({})", format!("{:?}", s.when).to_lowercase());
    }
    for sc in &raw.schedules {
        let what = sc.exports.as_ref().map(|e| e.join(", ")).unwrap_or_else(|| "all exports".into());
        println!(
            "  schedule {:<15} {} ({}): {what}{}",
            sc.name,
            sc.cron,
            sc.time_zone.as_deref().unwrap_or("Etc/UTC"),
            if sc.full { ", full" } else { "" }
        );
        match sc.next_runs(now, NEXT_RUNS) {
            Ok(runs) => {
                for t in runs {
                    println!(
                        "    next {} = {}",
                        t.format("%Y-%m-%d %H:%M %Z (%:z)"),
                        t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M UTC")
                    );
                }
            }
            Err(e) => println!("    next: {e}"),
        }
    }
}

/// `ferry run`: each export's outcome.
pub fn report(r: &RunReport) {
    println!("run {}{}", r.run_id, if r.dry_run { " (dry run)" } else { "" });
    for o in &r.outcomes {
        let window = &o.window;
        match o.status {
            RunStatus::Failed => println!("  {:<24} FAILED   {}", o.export, o.error.as_deref().unwrap_or_default()),
            RunStatus::Empty => {
                println!("  {:<24} EMPTY    no rows after {}", o.export, o.window.lo.as_ref().map(|v| v.canonical()).unwrap_or_default())
            }
            _ => println!(
                "  {:<24} {:<8} {} rows, {} bytes -> {} window {window} in {:.1}s",
                o.export,
                o.status.as_str(),
                o.rows,
                o.bytes,
                o.file.as_deref().unwrap_or_default(),
                o.seconds
            ),
        }
        if o.status == RunStatus::Success && o.skipped.is_none() {
            println!("  {:<24} time: {}", "", o.stages);
        }
        if let Some(Skip::AlreadyDelivered { run_id }) = &o.skipped {
            println!("  {:<24} already delivered for this message by run {run_id}", "");
        }
        if let Some(Skip::SameMessage { holder }) = &o.skipped {
            println!("  {:<24} being delivered for this message by run {holder}", "");
        }
        for rc in &o.reconciled {
            println!("  {:<24} reconciled interrupted run {rc}", "");
        }
        if let Some(note) = o.null_cursor_note() {
            println!("  {:<24} warning: {note}", "");
        }
    }
    for e in &r.notify_errors {
        println!("  notification failed: {e}");
    }
}

/// Rows, bytes and rows/s of the export being delivered, on one terminal line.
pub fn progress(p: Progress<'_>) {
    let secs = p.elapsed.as_secs_f64().max(0.001);
    eprint!("\r{}: {} rows, {:.1} MB, {:.0} rows/s   ", p.export, p.rows, p.bytes as f64 / 1e6, p.rows as f64 / secs);
}

/// `ferry history`: one line per run, newest first. A run in a Cloud Run Job execution, and
/// the DISPATCHED record that started it, end with `execution <id>`.
pub fn history(rows: Vec<RunRecord>) {
    println!(
        "{:<20} {:<20} {:<10} {:>10} {:>12}  {:<32} file / error / execution",
        "completed_at", "export", "status", "rows", "bytes", "watermark"
    );
    for r in rows {
        let what = r.error_message.or(r.file_name);
        let execution = r.execution.map(|e| format!("execution {}", e.rsplit('/').next().unwrap_or(&e)));
        let last = match (what, execution) {
            (Some(w), Some(e)) => format!("{w} ({e})"),
            (w, e) => w.or(e).unwrap_or_default(),
        };
        println!(
            "{:<20} {:<20} {:<10} {:>10} {:>12}  {:<32} {}",
            r.completed_at.format("%Y-%m-%d %H:%M:%S"),
            r.export_name,
            r.status.as_str(),
            r.rows_exported,
            r.bytes,
            r.last_exported_value.unwrap_or_default(),
            last
        );
    }
}

/// A time as `ferry lease` prints it: `2026-12-02 06:42:01 UTC`.
pub fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `ferry lease show`: the holder and its times, or `free`.
pub fn lease(export: &str, lease: Option<&Lease>) {
    let Some(l) = lease else {
        println!("export {export}: free");
        return;
    };
    println!("export {export}: {}", if l.live { "held (live)" } else { "expired (free for the next run)" });
    println!("  holder:   run {}", l.holder);
    println!("  message:  {}", l.message_id.as_deref().unwrap_or("-"));
    println!("  process:  {}", l.process.as_ref().map(|p| p.to_string()).unwrap_or_else(|| "-".to_owned()));
    println!("  acquired: {}", time(l.acquired_at));
    println!("  expires:  {}", time(l.expires_at));
}
