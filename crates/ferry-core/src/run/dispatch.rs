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
/// selection, the run date and the message id. `config` is the config file's path in the
/// image, the same for the service and the job.
pub fn job_args(config: &str, export: &ExportSpec, opts: &RunOptions, message_id: &str, now: DateTime<Utc>) -> Vec<String> {
    let mut args = vec![
        "run".to_owned(),
        "--config".to_owned(),
        config.to_owned(),
        "--export".to_owned(),
        export.name.clone(),
        "--date".to_owned(),
        opts.date_for(export, now).format("%Y-%m-%d").to_string(),
        "--message-id".to_owned(),
        message_id.to_owned(),
    ];
    if opts.full {
        args.push("--full".to_owned());
    }
    args
}

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
