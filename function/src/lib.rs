//! Wiring shared by the CLI and the service: a validated [`Config`] becomes the concrete roles
//! (BigQuery source and metadata store, SFTP sink, notifiers) and a run.

pub mod components;
pub mod etl_api;
pub mod logging;
pub mod oidc;
pub mod serve;
pub mod trigger;

use ferry_bigquery::{Auth, BigQuery, MetadataStore};
use ferry_core::config::Execution;
use ferry_core::config::{BigQueryAuth, Config};
use ferry_core::run::dispatch::Dispatched;
use ferry_core::run::{ExportPlan, Progress, RunOptions, RunReport, Runner, Wiring};
use ferry_core::{ErrorClass, Failure, StateStore};

use crate::components::Wired;

/// The credentials a config's `auth` names.
pub fn auth(auth: &BigQueryAuth) -> Auth {
    match auth {
        BigQueryAuth::ApplicationDefault => Auth::ApplicationDefault,
        BigQueryAuth::MetadataServer => Auth::MetadataServer,
        BigQueryAuth::Token(t) => Auth::Token(t.clone()),
        BigQueryAuth::None => Auth::None,
    }
}

/// The BigQuery client a config asks for.
pub fn bigquery(config: &Config) -> Result<BigQuery, Failure> {
    let auth = auth(&config.bigquery.auth);
    let b = &config.bigquery;
    BigQuery::with_request_timeout(&b.endpoint, &b.project, auth, b.timeout)
        .map(|c| c.with_query_deadline(b.query_deadline))
        .map_err(Failure::new)
}

/// The metadata store on `bq`, with its table created if missing.
pub async fn metadata_store(config: &Config, bq: &BigQuery) -> Result<MetadataStore, Failure> {
    let store = MetadataStore::new(bq.clone(), &config.metadata_table).creating_dataset(config.metadata_table_default);
    store.ensure().await?;
    Ok(store)
}

/// What a run would do, changing nothing but creating the metadata table if it is missing.
pub async fn plan(config: &Config, opts: &RunOptions) -> Result<Vec<ExportPlan>, anyhow::Error> {
    let bq = bigquery(config)?;
    let state = metadata_store(config, &bq).await?;
    let wiring = Wired::new(config, bq);
    let runner = Runner { config, wiring: &wiring, state: &state, notifiers: Vec::new(), progress: None };
    runner.plan(opts).await.map_err(anyhow::Error::msg)
}

/// Runs `opts` with the roles `config` names, then notifies. Each destination's connection is
/// opened once per run, when the first export needs it (not in a dry run); a connection failure
/// is recorded as the failure of each export using it. When
/// the metadata table cannot be used, no export starts: every selected export is reported
/// FAILED and the notifiers still hear about it.
pub async fn run(config: &Config, opts: &RunOptions, progress: Option<&(dyn Fn(Progress<'_>) + Sync)>) -> RunReport {
    run_retrying(config, opts, progress, None).await
}

/// [`run`], with every call to BigQuery (the metadata table's included) and to a database
/// source retried by `retry` instead of each client's own policy.
pub async fn run_retrying(
    config: &Config,
    opts: &RunOptions,
    progress: Option<&(dyn Fn(Progress<'_>) + Sync)>,
    retry: Option<ferry_core::RetryPolicy>,
) -> RunReport {
    let (notifiers, notify_setup_error) = match ferry_notify::from_config(&config.notifications) {
        Ok(n) => (n, None),
        Err(e) => {
            let msg = config.redact(&e.to_string());
            tracing::error!(error = %msg, "notifications cannot be sent");
            (Vec::new(), Some(msg))
        }
    };
    let setup = async {
        let mut bq = bigquery(config)?;
        if let Some(policy) = &retry {
            bq = bq.with_retry(*policy);
        }
        let state = metadata_store(config, &bq).await?;
        Ok::<_, Failure>((bq, state))
    };
    let mut report = match setup.await {
        Err(e) => {
            let mut report = RunReport::failed_before_start(config, opts, e.class(), &e.to_string());
            tracing::error!(run_id = %report.run_id, error = %config.redact(&e.to_string()), "run failed before any export started");
            ferry_core::run::notify(config, &notifiers, &mut report).await;
            report
        }
        Ok((bq, state)) => {
            let mut wiring = Wired::new(config, bq);
            if let Some(policy) = retry {
                wiring = wiring.with_retry(policy);
            }
            let runner = Runner { config, wiring: &wiring, state: &state, notifiers, progress };
            let report = runner.run(opts).await;
            wiring.close().await;
            report
        }
    };
    if let Some(e) = notify_setup_error {
        report.notify_errors.insert(0, e);
    }
    report
}

/// Splits what a push asks for: the exports with `execution: job` (handed to Cloud Run Job
/// executions, a dry run included: it reads every row too) and the options of the run the
/// service does itself (`None` when nothing is left). A selection that names an export the
/// config does not have is run inline as a whole, so that it fails before anything starts.
pub fn split_jobs(config: &Config, opts: &RunOptions) -> (Vec<String>, Option<RunOptions>) {
    let names: Vec<String> = match &opts.exports {
        Some(names) => names.clone(),
        None => config.exports.iter().filter(|e| e.enabled).map(|e| e.name.clone()).collect(),
    };
    let find = |n: &String| config.exports.iter().find(|e| &e.name == n);
    if names.iter().any(|n| find(n).is_none()) {
        return (Vec::new(), Some(opts.clone()));
    }
    let mut jobs: Vec<String> = Vec::new();
    let mut rest: Vec<String> = Vec::new();
    for n in names {
        let list = if find(&n).is_some_and(|e| e.execution == Execution::Job) { &mut jobs } else { &mut rest };
        if !list.contains(&n) {
            list.push(n);
        }
    }
    if jobs.is_empty() {
        return (jobs, Some(opts.clone()));
    }
    let inline = (!rest.is_empty()).then(|| RunOptions { exports: Some(rest), ..opts.clone() });
    (jobs, inline)
}

/// Hands each export of `jobs` to a Cloud Run Job execution for the message in `opts`
/// (see [`ferry_core::run::dispatch`]); `config_path` is the config file as the job's
/// container finds it. A failure is reported through the failure notifications, redacted, and
/// returned as its redacted text.
pub async fn dispatch(config: &Config, opts: &RunOptions, config_path: &str, jobs: &[String]) -> Vec<(String, Result<Dispatched, String>)> {
    let setup = async {
        let Some(job) = &config.cloud_run_job else {
            return Err(Failure::with_class(ErrorClass::Permanent, "no cloud_run_job is configured"));
        };
        let bq = bigquery(config)?;
        let state = metadata_store(config, &bq).await?;
        Ok((ferry_cloudrun::JobRunner::from_config(job, auth(&job.auth)), state))
    };
    let mut results = Vec::new();
    match setup.await {
        Err(e) => {
            for name in jobs {
                results.push((name.clone(), Err(e.to_string())));
            }
        }
        Ok((runner, state)) => {
            for name in jobs {
                let export = config.exports.iter().find(|e| &e.name == name).expect("split_jobs names configured exports");
                let r = ferry_core::run::dispatch::dispatch(&state, &runner, export, opts, config_path).await;
                results.push((name.clone(), r.map_err(|e| e.to_string())));
            }
        }
    }
    for (name, r) in &mut results {
        if let Err(e) = r {
            *e = config.redact(e);
            tracing::error!(export = %name, error = %e, "the export could not be handed to a Cloud Run Job; the push is answered 503 so that Pub/Sub delivers it again");
            let text = format!("{e}; the trigger message is delivered again by Pub/Sub, and the export runs once an execution starts");
            report_trigger_failure(config, name, &text).await;
        }
    }
    results
}

/// Reports a trigger message that was rejected (malformed, unknown config) through the failure
/// notifications of `config`, as a failed run of a pseudo-export `(trigger message)`.
pub async fn report_rejected(config: &Config, message_id: Option<&str>, reason: &str) {
    let text = format!(
        "trigger message {} was rejected and acknowledged (it will not be redelivered): {reason}. Nothing was exported; publish a corrected message to run.",
        message_id.unwrap_or("without an id")
    );
    report_trigger_failure(config, "(trigger message)", &text).await;
}

/// Reports the summary of a burst of rejected trigger messages (`text`) like
/// [`report_rejected`] reports one.
pub async fn report_rejected_burst(config: &Config, text: &str) {
    let text = format!("{text}. Nothing was exported for them; publish corrected messages to run.");
    report_trigger_failure(config, "(trigger messages)", &text).await;
}

/// Sends `text` through the failure notifications of `config`, as a failed run of the
/// pseudo-export `what`.
async fn report_trigger_failure(config: &Config, what: &str, text: &str) {
    let notifiers = match ferry_notify::from_config(&config.notifications) {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %config.redact(&e.to_string()), "notifications cannot be sent");
            return;
        }
    };
    let mut opts = RunOptions::new();
    opts.exports = Some(vec![what.into()]);
    let mut report = RunReport::failed_before_start(config, &opts, ErrorClass::Permanent, text);
    ferry_core::run::notify(config, &notifiers, &mut report).await;
}

/// What a transfer or verify request names, checked against the config: the export (with a
/// file destination) and the `gs://` path inside the staging bucket. The error is for the
/// caller: it names the field and the value.
pub fn transfer_target<'c>(
    config: &'c Config,
    export: &str,
    gcs_path: &str,
) -> Result<(&'c ferry_core::config::ExportSpec, ferry_core::run::Transfer), String> {
    let Some(spec) = config.exports.iter().find(|x| x.name == export) else {
        let known: Vec<&str> = config.exports.iter().map(|x| x.name.as_str()).collect();
        return Err(format!("export_name: unknown export {export:?}; this config has {}", known.join(", ")));
    };
    if spec.file().is_none() {
        return Err(format!("export_name: export {export} does not deliver files"));
    }
    let Some(staging) = &config.staging else {
        return Err("the config has no staging bucket (staging.bucket, or gcs_bucket in the seed form)".into());
    };
    let transfer = ferry_core::run::Transfer::parse(gcs_path, staging)?;
    let names: Vec<&str> = config.exports.iter().map(|x| x.name.as_str()).collect();
    transfer.check_export(&spec.name, staging, &names)?;
    Ok((spec, transfer))
}

/// What the failure of a transfer from an empty path says (see `ferry_core::run`).
pub const NO_FILES: &str = ": no files under ";

/// The directory files of `export` go to (`/uploads/`), as the seed's answers name it.
pub fn destination_dir(export: &ferry_core::config::ExportSpec) -> String {
    match export.destination.component.settings::<ferry_sftp::SftpSettings>() {
        Some(s) if s.directory.ends_with('/') => s.directory.clone(),
        Some(s) => format!("{}/", s.directory),
        None => export.destination.component.describe.clone(),
    }
}

/// The answer to a transfer, in the seed service's shape: `status` (`success` or `error`),
/// `export_name`, `files_transferred`, `files`, `total_mb`, `destination`,
/// `total_time_seconds`, and ferry's `run_id`; for an error, a short `error` that never holds
/// an internal message (those go to the log and the notifications). Also whether it succeeded
/// and whether trying again may help.
pub fn transfer_answer(export: &ferry_core::config::ExportSpec, report: &RunReport, seconds: f64) -> (bool, bool, serde_json::Value) {
    let o = report.outcomes.first();
    let ok = report.succeeded() && o.is_some();
    let transient = o.is_some_and(|o| o.error_class == Some(ErrorClass::Transient));
    let mut v = serde_json::json!({
        "status": if ok { "success" } else { "error" },
        "export_name": export.name,
        "run_id": report.run_id,
    });
    if ok {
        let o = o.expect("checked");
        let bytes: u64 = o.files.iter().map(|f| f.bytes).sum();
        v["files_transferred"] = o.files.len().into();
        v["files"] = o.files.iter().map(|f| f.name.clone()).collect::<Vec<_>>().into();
        v["total_mb"] = ((bytes as f64 / 1_048_576.0 * 100.0).round() / 100.0).into();
        v["destination"] = destination_dir(export).into();
        v["total_time_seconds"] = ((seconds * 10.0).round() / 10.0).into();
        if matches!(o.skipped, Some(ferry_core::run::Skip::AlreadyDelivered { .. })) {
            v["already_delivered"] = true.into();
        }
    } else {
        v["error"] = if o.and_then(|o| o.error.as_deref()).is_some_and(|e| e.contains(NO_FILES)) {
            "no files under the path; nothing was transferred"
        } else if transient {
            "the transfer failed and may succeed when tried again; nothing was published. The run's record and notifications have the details"
        } else {
            "the transfer failed; nothing was published. The run's record and notifications have the details"
        }
        .into();
    }
    (ok, transient, v)
}

/// `ferry verify` / `POST /verify`: compares the objects under `transfer`'s path with the
/// export's destination.
pub async fn verify(
    config: &Config,
    export: &ferry_core::config::ExportSpec,
    transfer: &ferry_core::run::Transfer,
) -> Result<ferry_core::run::SyncReport, Failure> {
    let bq = bigquery(config)?;
    let state = metadata_store(config, &bq).await?;
    let wiring = Wired::new(config, bq);
    let runner = Runner { config, wiring: &wiring, state: &state, notifiers: Vec::new(), progress: None };
    let result = runner.verify(export, transfer).await;
    wiring.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::config::Shape;

    fn config() -> Config {
        let mut c = ferry_testkit::memory::memory_config("big", Shape::Table(ferry_core::config::TableMode::Append));
        let mut small = c.exports[0].clone();
        small.name = "small".into();
        let mut off = c.exports[0].clone();
        off.name = "-off".into();
        off.enabled = false;
        c.exports[0].execution = Execution::Job;
        off.execution = Execution::Job;
        c.exports.extend([small, off]);
        c
    }

    fn opts(exports: Option<&[&str]>) -> RunOptions {
        RunOptions { exports: exports.map(|e| e.iter().map(|s| s.to_string()).collect()), ..RunOptions::new() }
    }

    #[test]
    fn a_push_is_split_into_job_exports_and_an_inline_run() {
        let c = config();
        let (jobs, inline) = split_jobs(&c, &opts(None));
        assert_eq!((jobs, inline.and_then(|o| o.exports)), (vec!["big".to_owned()], Some(vec!["small".to_owned()])), "enabled ones only");
        let (jobs, inline) = split_jobs(&c, &opts(Some(&["-off", "big", "big"])));
        assert_eq!(jobs, ["-off", "big"], "a disabled export named runs, once");
        assert!(inline.is_none(), "nothing is left to run inline");
        let (jobs, inline) = split_jobs(&c, &opts(Some(&["small"])));
        assert!(jobs.is_empty());
        assert_eq!(inline.and_then(|o| o.exports), Some(vec!["small".to_owned()]));
        let (jobs, inline) = split_jobs(&c, &opts(Some(&["big", "typo"])));
        assert!(jobs.is_empty(), "an unknown name: nothing is handed off");
        assert_eq!(inline.and_then(|o| o.exports), Some(vec!["big".to_owned(), "typo".to_owned()]), "the run reports it");
        let (jobs, _) = split_jobs(&c, &RunOptions { dry_run: true, ..opts(Some(&["big"])) });
        assert_eq!(jobs, ["big"], "a dry run of a job export runs in the job too");
    }
}
