//! Handing an export to a Cloud Run Job execution (`execution: job`), for `ferry serve`.
//!
//! For one export of one trigger message:
//! 1. The message's records are read: a SUCCESS or EMPTY one means it was delivered; a
//!    DISPATCHED one means an earlier delivery of the message already started an execution.
//!    Either way nothing is started again.
//! 2. Otherwise one execution is started, running `ferry run` for this export with the
//!    message's selection, its run date (fixed now, so a late start cannot change `{date}`) and
//!    its message id.
//! 3. A DISPATCHED record names the execution and the message. Only after it is durable may
//!    the push be acknowledged.
//!
//! When the start fails, nothing is recorded and the caller asks for a redelivery. When the
//! process dies, or the record fails, after the execution started, the redelivery starts a
//! second one: both run `ferry run` with the same message id, take the export's lease in turn,
//! and the second finds the message delivered (or waits, and is retried by Cloud Run), so the
//! rows go once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use super::RunOptions;
use crate::config::ExportSpec;
use crate::roles::{Dispatcher, RunRecord, RunStatus, StateStore};
use crate::Failure;

/// How [`dispatch`] left an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatched {
    /// An execution was started now, and recorded.
    Started { execution: String },
    /// An earlier delivery of the same message started `execution` (recorded by `run_id`).
    Earlier { execution: String, run_id: String },
    /// The message was already delivered for this export, by run `run_id` (SUCCESS or EMPTY).
    Delivered { run_id: String, status: RunStatus },
}

/// The arguments of `ferry` in the execution: `run` for `export` with the message's
/// selection (`--full`, `--dry-run`), the run date and the message id. `config` is the config file's path in the
/// image, the same for the service and the job.
pub fn job_args(config: &str, export: &ExportSpec, opts: &RunOptions, message_id: &str, now: DateTime<Utc>) -> Vec<String> {
    // `--flag=value`: a value that starts with `-` (export names may) stays a value.
    let mut args = vec![
        "run".to_owned(),
        format!("--config={config}"),
        format!("--export={}", export.name),
        format!("--date={}", opts.date_for(export, now).format("%Y-%m-%d")),
        format!("--message-id={message_id}"),
    ];
    if opts.full {
        args.push("--full".to_owned());
    }
    if opts.dry_run {
        args.push("--dry-run".to_owned());
    }
    args
}

/// The hand-offs in flight in this process, by export and message: a redelivery that arrives
/// while the first delivery is still starting its execution waits for it, then finds its
/// DISPATCHED record instead of starting a second execution. (Across instances that race stays
/// possible, and harmless: see the module docs.)
type Gates = HashMap<(String, String), Arc<tokio::sync::Mutex<()>>>;
static IN_FLIGHT: Mutex<Option<Gates>> = Mutex::new(None);

/// Hands `export` to an execution for the message `opts.message_id` (see the module docs).
/// `Err` when nothing is known to have started; the push must then be redelivered.
pub async fn dispatch(
    state: &dyn StateStore,
    dispatcher: &dyn Dispatcher,
    export: &ExportSpec,
    opts: &RunOptions,
    config: &str,
) -> Result<Dispatched, Failure> {
    let message_id = opts
        .message_id
        .as_deref()
        .ok_or_else(|| Failure::with_class(crate::ErrorClass::Permanent, "a dispatched run needs the trigger message's id"))?;
    let key = (export.name.clone(), message_id.to_owned());
    let gate = IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(HashMap::new).entry(key.clone()).or_default().clone();
    let result = {
        let _one_at_a_time = gate.lock().await;
        dispatch_once(state, dispatcher, export, opts, config, message_id).await
    };
    drop(gate);
    let mut in_flight = IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner());
    // The last one out removes the gate: then only the map holds it.
    if let Some(map) = in_flight.as_mut() {
        if map.get(&key).is_some_and(|g| Arc::strong_count(g) == 1) {
            map.remove(&key);
        }
    }
    result
}

async fn dispatch_once(
    state: &dyn StateStore,
    dispatcher: &dyn Dispatcher,
    export: &ExportSpec,
    opts: &RunOptions,
    config: &str,
    message_id: &str,
) -> Result<Dispatched, Failure> {
    let records = state.by_message(&export.name, message_id).await?;
    if let Some(done) = records.iter().rev().find(|r| matches!(r.status, RunStatus::Success | RunStatus::Empty)) {
        return Ok(Dispatched::Delivered { run_id: done.run_id.clone(), status: done.status });
    }
    if let Some(d) = records.iter().rev().find(|r| r.status == RunStatus::Dispatched) {
        tracing::info!(export = %export.name, message_id, execution = d.execution.as_deref().unwrap_or("-"), "message already dispatched; no second execution");
        return Ok(Dispatched::Earlier { execution: d.execution.clone().unwrap_or_default(), run_id: d.run_id.clone() });
    }
    let started_at = Utc::now();
    let args = job_args(config, export, opts, message_id, started_at);
    crate::failpoint::hit("dispatch:start", &export.name).await?;
    let execution = dispatcher
        .start(&args)
        .await
        .map_err(|e| Failure::with_class(e.class(), format!("export {}: could not start a Cloud Run Job execution: {e}", export.name)))?;
    tracing::info!(export = %export.name, message_id, execution = %execution, "Cloud Run Job execution started");
    crate::failpoint::hit("dispatch:record", &export.name).await?;
    let record = RunRecord {
        run_id: opts.run_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        export_name: export.name.clone(),
        source_table: export.source.describe.clone(),
        status: RunStatus::Dispatched,
        last_exported_value: None,
        cursor_type: None,
        window_lo: None,
        rows_exported: 0,
        bytes: 0,
        sha256: None,
        file_name: None,
        files: Vec::new(),
        started_at,
        completed_at: Utc::now(),
        error_message: None,
        message_id: Some(message_id.to_owned()),
        null_cursor_rows: None,
        null_arrival_hi: None,
        execution: Some(execution.clone()),
    };
    state.append(&record).await.map_err(|e| {
        Failure::with_class(
            e.class(),
            format!(
                "export {}: execution {execution} started, but the DISPATCHED record could not be written ({e}); a redelivery starts another, which finds the rows delivered or waits for the first",
                export.name
            ),
        )
    })?;
    Ok(Dispatched::Started { execution })
}
