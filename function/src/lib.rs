//! Wiring shared by the CLI and the service: a validated [`Config`] becomes the concrete roles
//! (BigQuery source and metadata store, SFTP sink, notifiers) and a run.

pub mod components;
pub mod logging;
pub mod oidc;
pub mod serve;
pub mod trigger;

use ferry_bigquery::{Auth, BigQuery, MetadataStore};
use ferry_core::config::{BigQueryAuth, Config};
use ferry_core::run::{ExportPlan, Progress, RunOptions, RunReport, Runner, Wiring};
use ferry_core::{ErrorClass, Failure, StateStore};

use crate::components::Wired;

/// The BigQuery client a config asks for.
pub fn bigquery(config: &Config) -> Result<BigQuery, Failure> {
    let auth = match &config.bigquery.auth {
        BigQueryAuth::ApplicationDefault => Auth::ApplicationDefault,
        BigQueryAuth::MetadataServer => Auth::MetadataServer,
        BigQueryAuth::Token(t) => Auth::Token(t.clone()),
        BigQueryAuth::None => Auth::None,
    };
    let b = &config.bigquery;
    BigQuery::with_request_timeout(&b.endpoint, &b.project, auth, b.timeout)
        .map(|c| c.with_query_deadline(b.query_deadline))
        .map_err(Failure::new)
}

/// The metadata store on `bq`, with its table created if missing.
pub async fn metadata_store(config: &Config, bq: &BigQuery) -> Result<MetadataStore, Failure> {
    let store = MetadataStore::new(bq.clone(), &config.metadata_table);
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
    let (notifiers, notify_setup_error) = match ferry_notify::from_config(&config.notifications) {
        Ok(n) => (n, None),
        Err(e) => {
            let msg = config.redact(&e.to_string());
            tracing::error!(error = %msg, "notifications cannot be sent");
            (Vec::new(), Some(msg))
        }
    };
    let setup = async {
        let bq = bigquery(config)?;
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
            let wiring = Wired::new(config, bq);
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
