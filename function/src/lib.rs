//! Wiring shared by the CLI and the service: a validated [`Config`] becomes the concrete roles
//! (BigQuery source and metadata store, SFTP sink, notifiers) and a run.

pub mod logging;
pub mod oidc;
pub mod serve;
pub mod trigger;

use std::time::Duration;

use ferry_bigquery::{Auth, BigQuery, BigQuerySource, MetadataStore};
use ferry_core::config::{BigQueryAuth, Config, HostKey, SftpAuth};
use ferry_core::run::{ExportPlan, Progress, RunOptions, RunReport, Runner};
use ferry_core::{ErrorClass, Failure, StateStore};
use ferry_sftp::{HostKeyPolicy, SftpSettings, SftpSink};

/// The BigQuery client a config asks for.
pub fn bigquery(config: &Config) -> Result<BigQuery, Failure> {
    let auth = match &config.bigquery.auth {
        BigQueryAuth::MetadataServer => Auth::MetadataServer,
        BigQueryAuth::Token(t) => Auth::Token(t.clone()),
        BigQueryAuth::None => Auth::None,
    };
    BigQuery::new(&config.bigquery.endpoint, &config.bigquery.project, auth).map_err(Failure::new)
}

/// SFTP settings from a config.
pub fn sftp_settings(config: &Config) -> SftpSettings {
    let s = &config.sftp;
    SftpSettings {
        host: s.host.clone(),
        port: s.port,
        username: s.username.clone(),
        auth: match &s.auth {
            SftpAuth::Password(p) => ferry_sftp::Auth::Password(p.clone()),
            SftpAuth::PrivateKey { path, passphrase } => {
                ferry_sftp::Auth::PrivateKey { path: path.clone(), passphrase: passphrase.clone() }
            }
        },
        host_key: match &s.host_key {
            HostKey::KnownHosts(p) => HostKeyPolicy::KnownHosts(p.clone()),
            HostKey::Fingerprint(f) => HostKeyPolicy::Fingerprint(f.clone()),
        },
        directory: s.path.clone(),
        timeout: Duration::from_secs(s.timeout_secs),
    }
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
    let source = BigQuerySource::new(bq.clone(), config.bigquery.page_size);
    let state = metadata_store(config, &bq).await?;
    let runner = Runner {
        config,
        source: &source,
        sink: Err((ErrorClass::Permanent, "planning only".into())),
        state: &state,
        notifiers: Vec::new(),
        progress: None,
    };
    runner.plan(opts).await.map_err(anyhow::Error::msg)
}

/// Runs `opts` with the roles `config` names, then notifies. The SFTP connection is opened once
/// per run (not for a dry run); a connection failure is recorded as each export's failure. When
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
            let source = BigQuerySource::new(bq, config.bigquery.page_size);
            let sink = if opts.dry_run { None } else { Some(SftpSink::connect(sftp_settings(config)).await) };
            let sink_ref: Result<&dyn ferry_core::Sink, (ErrorClass, String)> = match &sink {
                Some(Ok(s)) => Ok(s),
                Some(Err(e)) => Err((ferry_core::Classify::class(e), e.to_string())),
                None => Err((ErrorClass::Permanent, "dry run: nothing is delivered".into())),
            };
            let runner = Runner { config, source: &source, sink: sink_ref, state: &state, notifiers, progress };
            let report = runner.run(opts).await;
            if let Some(Ok(s)) = sink {
                s.close().await;
            }
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
    let notifiers = match ferry_notify::from_config(&config.notifications) {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %config.redact(&e.to_string()), "notifications cannot be sent");
            return;
        }
    };
    let mut opts = RunOptions::new();
    opts.exports = Some(vec!["(trigger message)".into()]);
    let text = format!(
        "trigger message {} was rejected and acknowledged (it will not be redelivered): {reason}. Nothing was exported; publish a corrected message to run.",
        message_id.unwrap_or("without an id")
    );
    let mut report = RunReport::failed_before_start(config, &opts, ErrorClass::Permanent, &text);
    ferry_core::run::notify(config, &notifiers, &mut report).await;
}
