//! Wiring shared by the CLI and the service: a validated [`Config`] becomes the concrete roles
//! (BigQuery source and metadata store, SFTP sink, notifiers) and a run.

use std::time::Duration;

use ferry_bigquery::{Auth, BigQuery, BigQuerySource, MetadataStore};
use ferry_core::config::{BigQueryAuth, Config, HostKey, SftpAuth};
use ferry_core::run::{Progress, RunOptions, RunReport, Runner};
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

/// The metadata store, with its table created if missing.
pub async fn metadata_store(config: &Config) -> Result<MetadataStore, Failure> {
    let store = MetadataStore::new(bigquery(config)?, &config.metadata_table);
    store.ensure().await?;
    Ok(store)
}

/// Runs `opts` with the roles `config` names. The SFTP connection is opened once per run;
/// a connection failure is recorded as each export's failure.
pub async fn run(config: &Config, opts: &RunOptions, progress: Option<&(dyn Fn(Progress<'_>) + Sync)>) -> Result<RunReport, Failure> {
    let bq = bigquery(config)?;
    let source = BigQuerySource::new(bq.clone(), config.bigquery.page_size);
    let state = metadata_store(config).await?;
    let sink = if opts.dry_run { None } else { Some(SftpSink::connect(sftp_settings(config)).await) };
    let sink_ref: Result<&dyn ferry_core::Sink, (ErrorClass, String)> = match &sink {
        Some(Ok(s)) => Ok(s),
        Some(Err(e)) => Err((ferry_core::Classify::class(e), e.to_string())),
        None => Err((ErrorClass::Permanent, "dry run: no delivery".into())),
    };
    let runner = Runner { config, source: &source, sink: sink_ref, state: &state, notifiers: Vec::new(), progress };
    let report = if opts.dry_run { dry_run(&runner, opts).await } else { runner.run(opts).await };
    if let Some(Ok(s)) = sink {
        s.close().await;
    }
    Ok(report)
}

async fn dry_run(runner: &Runner<'_>, opts: &RunOptions) -> RunReport {
    // A dry run reads and encodes without a destination: give the runner a sink that is never used.
    struct Nowhere;
    #[async_trait::async_trait]
    impl ferry_core::Sink for Nowhere {
        async fn begin(&self, _: &str, _: ferry_core::PutMode) -> Result<Box<dyn ferry_core::Upload>, Failure> {
            Err(Failure::with_class(ErrorClass::Permanent, "dry run: nothing is delivered"))
        }
        async fn stat(&self, _: &str) -> Result<Option<u64>, Failure> {
            Ok(None)
        }
        fn describe(&self) -> String {
            "nowhere (dry run)".into()
        }
    }
    let nowhere = Nowhere;
    let r = Runner {
        config: runner.config,
        source: runner.source,
        sink: Ok(&nowhere),
        state: runner.state,
        notifiers: Vec::new(),
        progress: runner.progress,
    };
    r.run(opts).await
}
