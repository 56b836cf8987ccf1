//! The command line: subcommands and their flags.

use std::path::PathBuf;

use chrono::NaiveDate;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Deliver warehouse data to partners: BigQuery → CSV → SFTP, with watermarks that move only after verified delivery"
)]
pub struct Cli {
    /// Configuration file; `FERRY_CONFIG`, else the seed deployment's `CONFIG_PATH`, else
    /// `configs/default.json`.
    #[arg(long, short, env = "FERRY_CONFIG", default_value_os_t = default_config(), global = true)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

/// `CONFIG_PATH` (the seed deployment's variable), else `configs/default.json`.
fn default_config() -> PathBuf {
    std::env::var_os("CONFIG_PATH").filter(|p| !p.is_empty()).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("configs/default.json"))
}

/// Which exports a run covers, and how.
#[derive(clap::Args)]
pub struct Selection {
    /// Export to run (repeatable); every enabled one by default.
    #[arg(long = "export")]
    pub exports: Vec<String>,
    /// Ignore the watermark: deliver every row up to the current maximum.
    #[arg(long)]
    pub full: bool,
    /// Read and encode, deliver and record nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run date for `{date}` in queries (YYYY-MM-DD); today (UTC) by default.
    #[arg(long)]
    pub date: Option<NaiveDate>,
}

/// How runs take an export's lease: the same settings for `ferry run` and `ferry serve`.
#[derive(clap::Args, Clone, Copy)]
pub struct LeaseSettings {
    /// Seconds a run waits while another run (an instance, a redelivery, a CLI run) delivers
    /// the same export.
    #[arg(long, env = "FERRY_LEASE_WAIT_SECONDS", default_value_t = 8)]
    pub lease_wait: u64,
    /// Seconds an export's lease lasts without renewal (at least 3); a run that dies holds up
    /// the next one for at most this long.
    #[arg(long, env = "FERRY_LEASE_TTL_SECONDS", default_value_t = 600)]
    pub lease_ttl: u64,
}

impl LeaseSettings {
    /// The wait.
    pub fn wait(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lease_wait)
    }

    /// The lifetime, at least 3 s (renewals come every third of it).
    pub fn ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lease_ttl.max(3))
    }
}

/// Seed 004's ETL runner flags, in its spellings too (`--data_source_id=123`): the job's config
/// comes from the API at `DJANGO_API_URL`, and the run's status goes back to it.
#[derive(clap::Args, Clone, Copy)]
pub struct EtlArgs {
    /// Run the ETL job of this data source: its config comes from `GET
    /// {DJANGO_API_URL}/api/etl/job-config/{ID}/`; --config is not read.
    #[arg(long = "data-source-id", alias = "data_source_id", value_name = "ID", value_parser = clap::value_parser!(u64).range(1..),
          conflicts_with_all = ["exports", "message_id"])]
    pub data_source_id: Option<u64>,
    /// Report the run's status to `PATCH {DJANGO_API_URL}/api/etl/runs/{ID}/update/` (running,
    /// progress, then completed or failed).
    #[arg(long = "etl-run-id", alias = "etl_run_id", value_name = "ID", requires = "data_source_id", value_parser = clap::value_parser!(u64).range(1..))]
    pub etl_run_id: Option<u64>,
    /// Log level: debug, info, warning, error or critical (the seed's names); else `FERRY_LOG`,
    /// else (with --data-source-id) the seed's `LOG_LEVEL`.
    #[arg(long = "log-level", alias = "log_level", value_enum, ignore_case = true, value_name = "LEVEL")]
    pub log_level: Option<LogLevel>,
    /// JSON log lines on stdout, as Cloud Logging reads them (`--json-logs false`: text on
    /// stderr). On by default with --data-source-id, as in the seed; off otherwise.
    #[arg(long = "json-logs", alias = "json_logs", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub json_logs: Option<bool>,
}

/// A log level as the seed names it.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    #[value(alias = "warn")]
    Warning,
    Error,
    /// As `error`: ferry has no level above it.
    Critical,
}

impl LogLevel {
    /// The level as a log filter.
    pub fn filter(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warning => "warn",
            Self::Error | Self::Critical => "error",
        }
    }

    /// The seed's `LOG_LEVEL` value (`INFO`, `warning`, …); `None` when it names no level.
    pub fn parse(s: &str) -> Option<Self> {
        <Self as clap::ValueEnum>::from_str(s.trim(), true).ok()
    }
}

/// The process's arguments, with `run` put in front when they start with one of the seed's
/// runner flags: an existing Cloud Run Job definition passes `--data_source_id=123,--etl_run_id=456`
/// as the container's whole argument list.
pub fn args() -> Vec<std::ffi::OsString> {
    with_run_for_seed_flags(std::env::args_os().collect())
}

/// [`args`] on a given argument list (the program's name first).
pub fn with_run_for_seed_flags(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    const SEED_FLAGS: [&str; 8] = [
        "--data_source_id",
        "--data-source-id",
        "--etl_run_id",
        "--etl-run-id",
        "--log_level",
        "--log-level",
        "--json_logs",
        "--json-logs",
    ];
    let seed_flag = args.get(1).and_then(|a| a.to_str()).is_some_and(|a| SEED_FLAGS.contains(&a.split('=').next().unwrap_or(a)));
    if seed_flag {
        args.insert(1, "run".into());
    }
    args
}

#[derive(Subcommand)]
pub enum Command {
    /// Run exports: all enabled ones, or those named with --export.
    Run {
        #[command(flatten)]
        what: Selection,
        #[command(flatten)]
        lease: LeaseSettings,
        /// The trigger message this run delivers (set by `ferry serve` when it hands an export
        /// to a Cloud Run Job): recorded with the run, and a message already delivered is not
        /// delivered again.
        #[arg(long, value_parser = message_id)]
        message_id: Option<String>,
        #[command(flatten)]
        etl: EtlArgs,
    },
    /// Show what a run would do: window, SQL, file names.
    Plan {
        #[arg(long = "export")]
        exports: Vec<String>,
        #[arg(long)]
        full: bool,
        #[arg(long)]
        date: Option<NaiveDate>,
    },
    /// Validate the configuration offline.
    Check {
        /// Leave out what the deployment provides (secrets, mounted files, SFTP_HOST and the
        /// other settings read from the environment): for CI and image builds.
        #[arg(long)]
        no_secrets: bool,
        /// Also print the file in component form, as ferry reads it (a seed-form file's
        /// `sftp` section and export fields become each export's `source` and `destination`).
        #[arg(long)]
        explain: bool,
        /// For tests: the time the printed next runs of each schedule follow (RFC 3339, e.g.
        /// `2026-03-28T12:00:00Z`); now when absent.
        #[arg(long, hide = true, env = "FERRY_CHECK_NOW", value_name = "RFC3339")]
        now: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Print the JSON Schema of the configuration file.
    Schema,
    /// The Cloud Run service: Pub/Sub push requests on `POST /`, `GET /health`.
    Serve {
        /// Port (Cloud Run sets PORT).
        #[arg(long, env = "PORT", default_value_t = 8080)]
        port: u16,
        /// Address to listen on.
        #[arg(long, env = "FERRY_LISTEN", default_value = "0.0.0.0")]
        listen: std::net::IpAddr,
        /// Directory of `<name>.json` configs that messages select with `{"config": "<name>"}`.
        #[arg(long, env = "FERRY_CONFIG_DIR", default_value = "configs")]
        config_dir: PathBuf,
        #[command(flatten)]
        lease: LeaseSettings,
        /// Seconds requests in flight may run after SIGTERM (Cloud Run allows 10).
        #[arg(long, env = "FERRY_SHUTDOWN_GRACE_SECONDS", default_value_t = 9)]
        grace: u64,
        /// Verify push OIDC tokens for this audience (off when unset).
        #[arg(long, env = "FERRY_PUSH_AUDIENCE")]
        push_audience: Option<String>,
        /// Accept push tokens only for this service account email.
        #[arg(long, env = "FERRY_PUSH_SERVICE_ACCOUNT", requires = "push_audience")]
        push_service_account: Option<String>,
        /// Further service accounts whose ID tokens `POST /transfer` and `POST /verify` accept
        /// besides the push account (comma-separated; an Airflow worker's, say).
        #[arg(long, env = "FERRY_CALLER_SERVICE_ACCOUNTS", value_delimiter = ',')]
        caller_service_accounts: Vec<String>,
        /// Where the token signing keys are published.
        #[arg(long, env = "FERRY_PUSH_JWKS_URL", default_value = ferry::oidc::GOOGLE_JWKS_URL)]
        push_jwks_url: String,
        /// Rejected messages are reported at once, then for this many seconds only counted:
        /// one summary follows, so a burst of garbage sends two notifications, not one each.
        #[arg(long, env = "FERRY_REJECT_REPORT_WINDOW_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        reject_report_window: u64,
    },
    /// Publish a trigger message to a topic: run exports by hand, the way Cloud Scheduler does.
    Publish {
        /// `projects/P/topics/T`, or `T` with --project.
        #[arg(long, env = "FERRY_TOPIC")]
        topic: String,
        /// Project of a short topic name.
        #[arg(long, env = "GOOGLE_CLOUD_PROJECT")]
        project: Option<String>,
        /// The config the service should use (`<name>.json` in its config directory).
        #[arg(long = "config-name", default_value = "default")]
        config_name: String,
        #[command(flatten)]
        what: Selection,
        /// Variable holding an access token (e.g. from `gcloud auth print-access-token`);
        /// when it is unset or empty, Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS,
        /// gcloud's application-default file, the metadata server). Ignored with PUBSUB_EMULATOR_HOST.
        #[arg(long, default_value = "GOOGLE_OAUTH_ACCESS_TOKEN")]
        token_env: String,
    },
    /// Show or release an export's lease (the claim of the run delivering it).
    Lease {
        #[command(subcommand)]
        action: LeaseAction,
    },
    /// Copy the files under a `gs://` path of the staging bucket to an export's destination
    /// (what `POST /transfer` does): each through a temporary name, verified, then all
    /// published; recorded like a run. Prints the seed service's JSON answer.
    Transfer {
        /// The export whose destination receives the files.
        #[arg(long = "export")]
        export: String,
        /// `gs://BUCKET/PATH/` inside the configured staging bucket.
        #[arg(long)]
        gcs_path: String,
        /// The date the files are for, as the seed's callers send it; accepted and not used
        /// (`{date}` in a file name is the day the transfer runs, in UTC).
        #[arg(long)]
        date: Option<NaiveDate>,
        #[command(flatten)]
        lease: LeaseSettings,
    },
    /// Compare the files under a `gs://` path with the export's destination (what `POST
    /// /verify` does); prints the seed service's JSON answer. Exit code 0 only when in sync.
    Verify {
        #[arg(long = "export")]
        export: String,
        #[arg(long)]
        gcs_path: String,
    },
    /// Show recent runs from the metadata table.
    History {
        /// Only this export.
        #[arg(long)]
        export: Option<String>,
        /// How many rows.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

#[derive(Subcommand)]
pub enum LeaseAction {
    /// Who holds the export's lease (run, message, process), since and until when, and whether
    /// it is live; or that it is free.
    Show {
        #[arg(long)]
        export: String,
    },
    /// Release the export's lease: only when it expired, or its holder is known to be dead (a
    /// process on this host that is gone); --force releases a live lease whatever holds it.
    Release {
        #[arg(long)]
        export: String,
        /// Release even a lease whose holder may still be running: it may then deliver the same
        /// rows as the next run.
        #[arg(long)]
        force: bool,
    },
}

/// A trigger message id as `--message-id` takes it: 1 to 100 characters, none of them a
/// control character (what `ferry serve` accepts from a push).
fn message_id(s: &str) -> Result<String, String> {
    if s.is_empty() || s.chars().count() > 100 || s.chars().any(char::is_control) {
        return Err("expected 1 to 100 characters without control characters, as trigger message ids are".into());
    }
    Ok(s.to_owned())
}
