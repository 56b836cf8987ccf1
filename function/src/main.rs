//! `ferry`: the CLI and the Cloud Run service (`ferry serve`), one binary.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::NaiveDate;
use clap::{Parser, Subcommand};
use ferry_core::config::{Config, Deployment};
use ferry_core::run::{Progress, RunOptions, RunReport, Skip};
use ferry_core::{RunStatus, StateStore};

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Deliver warehouse data to partners: BigQuery → CSV → SFTP, with watermarks that move only after verified delivery"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, short, env = "FERRY_CONFIG", default_value = "configs/default.json", global = true)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

/// Which exports a run covers, and how.
#[derive(clap::Args)]
struct Selection {
    /// Export to run (repeatable); every enabled one by default.
    #[arg(long = "export")]
    exports: Vec<String>,
    /// Ignore the watermark: deliver every row up to the current maximum.
    #[arg(long)]
    full: bool,
    /// Read and encode, deliver and record nothing.
    #[arg(long)]
    dry_run: bool,
    /// Run date for `{date}` in queries (YYYY-MM-DD); today (UTC) by default.
    #[arg(long)]
    date: Option<NaiveDate>,
}

#[derive(Subcommand)]
enum Command {
    /// Run exports: all enabled ones, or those named with --export.
    Run {
        #[command(flatten)]
        what: Selection,
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
        /// Seconds a request waits while another instance delivers the same export.
        #[arg(long, env = "FERRY_LEASE_WAIT_SECONDS", default_value_t = 8)]
        lease_wait: u64,
        /// Seconds an export's lease lasts without renewal.
        #[arg(long, env = "FERRY_LEASE_TTL_SECONDS", default_value_t = 600)]
        lease_ttl: u64,
        /// Seconds requests in flight may run after SIGTERM (Cloud Run allows 10).
        #[arg(long, env = "FERRY_SHUTDOWN_GRACE_SECONDS", default_value_t = 9)]
        grace: u64,
        /// Verify push OIDC tokens for this audience (off when unset).
        #[arg(long, env = "FERRY_PUSH_AUDIENCE")]
        push_audience: Option<String>,
        /// Accept push tokens only for this service account email.
        #[arg(long, env = "FERRY_PUSH_SERVICE_ACCOUNT", requires = "push_audience")]
        push_service_account: Option<String>,
        /// Where the token signing keys are published.
        #[arg(long, env = "FERRY_PUSH_JWKS_URL", default_value = ferry::oidc::GOOGLE_JWKS_URL)]
        push_jwks_url: String,
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
        /// when it is unset or empty, the metadata server's. Ignored with PUBSUB_EMULATOR_HOST.
        #[arg(long, default_value = "GOOGLE_OAUTH_ACCESS_TOKEN")]
        token_env: String,
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

fn options(exports: Vec<String>, full: bool, dry_run: bool, date: Option<NaiveDate>) -> RunOptions {
    let mut o = RunOptions::new();
    o.exports = (!exports.is_empty()).then_some(exports);
    o.full = full;
    o.dry_run = dry_run;
    if let Some(d) = date {
        o.run_date = d;
    }
    o
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    ferry::components::load(path).map_err(|e| {
        eprintln!("{}: {e}", path.display());
        ExitCode::from(2)
    })
}

/// What `ferry check` prints about a valid config.
fn print_check(raw: &ferry_core::config::RawConfig, config: &Config) {
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
    }
}

fn print_report(r: &RunReport) {
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
        for rc in &o.reconciled {
            println!("  {:<24} reconciled interrupted run {rc}", "");
        }
    }
    for e in &r.notify_errors {
        println!("  notification failed: {e}");
    }
}

fn progress_printer(p: Progress<'_>) {
    let secs = p.elapsed.as_secs_f64().max(0.001);
    eprint!("\r{}: {} rows, {:.1} MB, {:.0} rows/s   ", p.export, p.rows, p.bytes as f64 / 1e6, p.rows as f64 / secs);
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve { .. }) {
        ferry::logging::init_json();
    } else {
        ferry::logging::init_text();
    }
    match dispatch(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { port, listen, config_dir, lease_wait, lease_ttl, grace, push_audience, push_service_account, push_jwks_url } => {
            let settings = ferry::serve::ServeSettings {
                addr: std::net::SocketAddr::new(listen, port),
                config_dir,
                lease_wait: std::time::Duration::from_secs(lease_wait),
                lease_ttl: std::time::Duration::from_secs(lease_ttl.max(3)),
                grace: std::time::Duration::from_secs(grace),
                oidc: push_audience.map(|aud| ferry::oidc::Verifier::new(aud, push_service_account, push_jwks_url)),
            };
            ferry::serve::serve(settings).await?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Publish { topic, project, config_name, what, token_env } => {
            let Selection { exports, full, dry_run, date } = what;
            let trigger =
                ferry::trigger::Trigger { config: config_name, exports: (!exports.is_empty()).then_some(exports), full, date, dry_run };
            if !ferry::trigger::valid_config_name(&trigger.config) {
                eprintln!("--config-name {:?}: expected letters, digits, `_` and `-`", trigger.config);
                return Ok(ExitCode::from(2));
            }
            let topic = match ferry_pubsub::topic_name(&topic, project.as_deref()) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("--topic: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let (endpoint, auth) = match std::env::var("PUBSUB_EMULATOR_HOST") {
                Ok(host) => (format!("http://{host}"), ferry_pubsub::Auth::None),
                Err(_) => (
                    ferry_pubsub::PUBSUB_ENDPOINT.to_owned(),
                    std::env::var(&token_env)
                        .ok()
                        .filter(|t| !t.trim().is_empty())
                        .map(|t| ferry_pubsub::Auth::Token(ferry_core::Secret::new(t.trim())))
                        .unwrap_or(ferry_pubsub::Auth::MetadataServer),
                ),
            };
            let data = serde_json::to_vec(&trigger)?;
            let id = ferry_pubsub::Publisher::new(&endpoint, auth).publish(&topic, &data, &[("origin", "ferry-publish")]).await?;
            println!("published message {id} to {topic}: {}", String::from_utf8_lossy(&data));
            return Ok(ExitCode::SUCCESS);
        }
        Command::Schema => {
            print!("{}", ferry::components::json_schema());
            return Ok(ExitCode::SUCCESS);
        }
        Command::Check { no_secrets, explain } => {
            let deployment = if no_secrets { Deployment::Elsewhere } else { Deployment::Here };
            let checked = Config::load_raw(&cli.config)
                .and_then(|raw| ferry::components::validate(&raw, &|k| std::env::var(k).ok(), deployment).map(|c| (raw, c)));
            let (raw, config) = match checked {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("{}: {e}", cli.config.display());
                    return Ok(ExitCode::from(2));
                }
            };
            if no_secrets {
                println!("{}: ok (secrets, mounted files and settings from the environment not checked)", cli.config.display());
            } else if let Err(e) = ferry_notify::from_config(&config.notifications) {
                eprintln!("{}: {e}", cli.config.display());
                return Ok(ExitCode::from(2));
            } else {
                println!("{}: ok", cli.config.display());
            }
            print_check(&raw, &config);
            if explain {
                println!("{}", serde_json::to_string_pretty(raw.normalized())?);
            }
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let config = match load(&cli.config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    match cli.command {
        Command::Plan { exports, full, date } => {
            let opts = options(exports, full, true, date);
            let plans = ferry::plan(&config, &opts).await?;
            for p in plans {
                println!("{}", p.export);
                println!("  window: {}{}", p.window, if p.full { " (full)" } else { "" });
                let split = config.exports.iter().find(|x| x.name == p.export).and_then(|x| x.file()).map(|f| f.split).unwrap_or_default();
                match &p.file_name {
                    None => println!("  file:   (nothing new: no file)"),
                    Some(f) if split.is_split() => println!("  files:  {f}, … ({split})"),
                    Some(f) => println!("  file:   {f}"),
                }
                println!("  sql:    {}", p.sql);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::History { export, limit } => {
            let state = ferry::metadata_store(&config, &ferry::bigquery(&config)?).await?;
            let rows = state.history(export.as_deref(), limit).await.context("reading the metadata table")?;
            println!(
                "{:<20} {:<20} {:<8} {:>10} {:>12}  {:<32} file / error",
                "completed_at", "export", "status", "rows", "bytes", "watermark"
            );
            for r in rows {
                println!(
                    "{:<20} {:<20} {:<8} {:>10} {:>12}  {:<32} {}",
                    r.completed_at.format("%Y-%m-%d %H:%M:%S"),
                    r.export_name,
                    r.status.as_str(),
                    r.rows_exported,
                    r.bytes,
                    r.last_exported_value.unwrap_or_default(),
                    r.error_message.or(r.file_name).unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { .. } | Command::Publish { .. } | Command::Schema | Command::Check { .. } => unreachable!("handled above"),
        Command::Run { what: Selection { exports, full, dry_run, date } } => {
            let opts = options(exports, full, dry_run, date);
            let show = std::io::stderr().is_terminal();
            let progress: Option<&(dyn Fn(Progress<'_>) + Sync)> = if show { Some(&progress_printer) } else { None };
            let report = ferry::run(&config, &opts, progress).await;
            if show {
                eprintln!();
            }
            print_report(&report);
            Ok(if report.succeeded() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}
