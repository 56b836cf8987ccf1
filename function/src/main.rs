//! `ferry`: the CLI and the Cloud Run service (`ferry serve`), one binary.
//!
//! `cli` defines the commands, `print` what they print; this file loads the config and runs
//! the command.

mod cli;
mod print;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use chrono::NaiveDate;
use clap::Parser;
use ferry_core::config::{Config, Deployment};
use ferry_core::run::{Progress, RunOptions};
use ferry_core::StateStore;

use crate::cli::{Cli, Command, LeaseAction, Selection};

/// Run options from the command line's selection.
fn options(exports: Vec<String>, full: bool, dry_run: bool, date: Option<NaiveDate>) -> RunOptions {
    let mut o = RunOptions::new();
    o.exports = (!exports.is_empty()).then_some(exports);
    o.full = full;
    o.dry_run = dry_run;
    o.run_date = date;
    o
}

/// The config at `path`, validated; an invalid one is printed and exits 2.
fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    ferry::components::load(path).map_err(|e| {
        eprintln!("{}: {e}", path.display());
        ExitCode::from(2)
    })
}

/// glibc's allocator raises its mmap threshold each time a large block is freed, up to 32 MiB,
/// and from then on serves blocks of that size from its heaps, which keep the memory after they
/// are freed. ferry's large blocks are a batch of rows at a time (a Storage Read message can hold
/// 100,000 rows, about 10 MiB), so a fixed threshold returns each to the system when it is
/// done: measured on a 1M-row export through Storage Read with the release build, peak RSS
/// fell from 66–82 MiB to 49–57 MiB over three runs each.
fn fixed_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; 128 KiB is glibc's default threshold.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

fn main() -> ExitCode {
    fixed_mmap_threshold();
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("the async runtime").block_on(run())
}

async fn run() -> ExitCode {
    let cli = Cli::parse_from(cli::args());
    match &cli.command {
        Command::Serve { .. } => ferry::logging::init_json(),
        Command::Run { etl, .. } => {
            let seed = etl.data_source_id.is_some();
            // The seed's LOG_LEVEL counts only for its job definitions; FERRY_LOG comes first.
            let level = etl.log_level.or_else(|| {
                let set = seed && std::env::var_os("FERRY_LOG").is_none();
                set.then(|| std::env::var("LOG_LEVEL").ok()).flatten().and_then(|l| cli::LogLevel::parse(&l))
            });
            ferry::logging::init(etl.json_logs.unwrap_or(seed), level.map(cli::LogLevel::filter));
        }
        _ => ferry::logging::init_text(),
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
        Command::Serve {
            port,
            listen,
            config_dir,
            lease,
            grace,
            push_audience,
            push_service_account,
            caller_service_accounts,
            push_jwks_url,
            reject_report_window,
        } => {
            let default_config = std::env::var_os("CONFIG_PATH")
                .filter(|p| !p.is_empty())
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| config_dir.join("default.json"));
            // The seed form's `cloud_run_url` is the audience its callers' ID tokens carry.
            let push_audience = push_audience.or_else(|| match ferry::components::load(&default_config) {
                Ok(c) => {
                    let url = c.service_url?;
                    tracing::info!(audience = %url, "checking ID tokens for the config's service_url");
                    Some(url)
                }
                Err(e) => {
                    if default_config.exists() {
                        tracing::warn!(path = %default_config.display(), errors = %e, "the default config is invalid: its service_url cannot turn on the ID token check");
                    }
                    None
                }
            });
            let settings = ferry::serve::ServeSettings {
                addr: std::net::SocketAddr::new(listen, port),
                default_config,
                config_dir,
                lease_wait: lease.wait(),
                lease_ttl: lease.ttl(),
                grace: std::time::Duration::from_secs(grace),
                oidc: push_audience.map(|aud| {
                    if push_service_account.is_none() && !caller_service_accounts.is_empty() {
                        tracing::warn!("FERRY_CALLER_SERVICE_ACCOUNTS has no effect without FERRY_PUSH_SERVICE_ACCOUNT: any account's token with the audience passes");
                    }
                    let callers = caller_service_accounts.into_iter().map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()).collect();
                    ferry::oidc::Verifier::new(aud, push_service_account, push_jwks_url).with_callers(callers)
                }),
                rejections: ferry::serve::Rejections::new(std::time::Duration::from_secs(reject_report_window)),
                runs: ferry::serve::Detached::default(),
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
                        .unwrap_or(ferry_pubsub::Auth::ApplicationDefault),
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
        Command::Run { what, lease, etl: cli::EtlArgs { data_source_id: Some(id), etl_run_id, .. }, .. } => {
            return etl(id, etl_run_id, what, lease).await;
        }
        Command::Check { no_secrets, explain, now } => {
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
            print::check(&raw, &config, now.unwrap_or_else(chrono::Utc::now));
            for w in &config.warnings {
                eprintln!("{}: warning: {w}", cli.config.display());
            }
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
                let spec = config.exports.iter().find(|x| x.name == p.export);
                if let (Some(rule), Some(b), Some(x)) = (&p.hi_rule, &p.bounds, spec) {
                    let max = b.max.as_ref().map(|v| v.canonical()).unwrap_or_else(|| "none".into());
                    println!(
                        "  hi:     {} = {rule} (MAX {max}; settle {} s)",
                        p.window.hi.as_ref().map(|v| v.canonical()).unwrap_or_else(|| "none".into()),
                        x.settle
                    );
                }
                if let Some(n) = p.null_cursor_rows.filter(|n| *n > 0) {
                    let what = match &p.window.nulls {
                        ferry_core::NullRows::Included => "read by this full export".to_owned(),
                        ferry_core::NullRows::Excluded => "not delivered by incremental runs".to_owned(),
                        ferry_core::NullRows::Arrived { column, .. } => format!("those that arrived by {column} in the window are read"),
                    };
                    println!("  nulls:  {n} rows with a NULL cursor ({what})");
                }
                println!("  date:   {}", p.run_date);
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
            print::history(rows);
            Ok(ExitCode::SUCCESS)
        }
        Command::Lease { action } => {
            if let Some(code) = unknown_export(&config, action.export()) {
                return Ok(code);
            }
            let state = ferry::metadata_store(&config, &ferry::bigquery(&config)?).await?;
            lease(&state, action).await
        }
        Command::Serve { .. } | Command::Publish { .. } | Command::Schema | Command::Check { .. } => unreachable!("handled above"),
        Command::Transfer { export, gcs_path, date, lease } => {
            let (spec, transfer) = match ferry::transfer_target(&config, &export, &gcs_path) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let mut opts = options(vec![export], false, false, date);
            opts.lease_ttl = lease.ttl();
            opts.lease_wait = lease.wait();
            opts.transfer = Some(transfer);
            let t = std::time::Instant::now();
            let report = ferry::run(&config, &opts, None).await;
            let (ok, _, answer) = ferry::transfer_answer(spec, &report, t.elapsed().as_secs_f64());
            print::report(&report);
            println!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Verify { export, gcs_path } => {
            let (spec, transfer) = match ferry::transfer_target(&config, &export, &gcs_path) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let report = ferry::verify(&config, spec, &transfer).await.map_err(|e| anyhow::anyhow!(config.redact(&e.to_string())))?;
            let mut answer = serde_json::to_value(&report)?;
            answer["status"] = "success".into();
            println!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(if report.in_sync { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Run { what: Selection { exports, full, dry_run, date }, lease, message_id, .. } => {
            let mut opts = options(exports, full, dry_run, date);
            opts.lease_ttl = lease.ttl();
            opts.lease_wait = lease.wait();
            opts.message_id = message_id;
            // Inside a Cloud Run Job execution: recorded with each run, beside the DISPATCHED
            // record that started it.
            opts.execution = std::env::var("CLOUD_RUN_EXECUTION").ok().filter(|e| !e.is_empty() && e.len() <= 200);
            let show = std::io::stderr().is_terminal();
            let progress: Option<&(dyn Fn(Progress<'_>) + Sync)> = if show { Some(&print::progress) } else { None };
            let report = ferry::run(&config, &opts, progress).await;
            if show {
                eprintln!();
            }
            print::report(&report);
            Ok(if report.succeeded() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

/// `ferry run --data-source-id`: a job definition of seed 004's ETL runner. Its config comes from
/// the API (`DJANGO_API_URL`), its status goes back there with --etl-run-id. Exit code 2 when
/// the settings or the job config are wrong (or the API refuses them), 1 when the API cannot be
/// reached or the run failed.
async fn etl(data_source_id: u64, etl_run_id: Option<u64>, what: Selection, lease: cli::LeaseSettings) -> anyhow::Result<ExitCode> {
    let Selection { exports: _, full, dry_run, date } = what;
    let mut opts = options(Vec::new(), full, dry_run, date);
    opts.lease_ttl = lease.ttl();
    opts.lease_wait = lease.wait();
    opts.execution = std::env::var("CLOUD_RUN_EXECUTION").ok().filter(|e| !e.is_empty() && e.len() <= 200);
    let show = std::io::stderr().is_terminal();
    let progress: Option<&(dyn Fn(Progress<'_>) + Sync)> = if show { Some(&print::progress) } else { None };
    let job = ferry::etl_api::EtlJob { data_source_id, etl_run_id };
    let result = ferry::etl_api::run(job, opts, progress).await;
    if show {
        eprintln!();
    }
    match result {
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(e.exit_code()))
        }
        Ok(report) => {
            print::report(&report);
            Ok(if report.succeeded() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

impl LeaseAction {
    fn export(&self) -> &str {
        match self {
            Self::Show { export } | Self::Release { export, .. } => export,
        }
    }
}

/// Exit code 2 and a message naming the exports there are, when `export` is not one of them.
fn unknown_export(config: &Config, export: &str) -> Option<ExitCode> {
    if config.exports.iter().any(|x| x.name == export) {
        return None;
    }
    let known: Vec<&str> = config.exports.iter().map(|x| x.name.as_str()).collect();
    eprintln!("--export: unknown export {export:?}; this config has {}", known.join(", "));
    Some(ExitCode::from(2))
}

/// Whether process `pid` runs on this host (Linux: it has a `/proc` entry).
fn running_here(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// `ferry lease show|release`.
async fn lease(state: &dyn StateStore, action: LeaseAction) -> anyhow::Result<ExitCode> {
    let export = action.export().to_owned();
    let current = state.lease(&export).await.context("reading the lease")?;
    let LeaseAction::Release { force, .. } = action else {
        print::lease(&export, current.as_ref());
        return Ok(ExitCode::SUCCESS);
    };
    let Some(l) = current else {
        println!("export {export}: the lease is free; nothing to release");
        return Ok(ExitCode::SUCCESS);
    };
    let here = ferry_core::HolderProcess::current();
    let dead = l.process.as_ref().filter(|p| p.host == here.host && !running_here(p.pid));
    let why = if !l.live {
        format!("it expired at {}", print::time(l.expires_at))
    } else if let Some(p) = dead {
        format!("its holder's process ({p}) is not running")
    } else if force {
        "--force".to_owned()
    } else {
        let process = match &l.process {
            Some(p) if p.host == here.host => format!("{p}, still running"),
            Some(p) => format!("{p}, another host: its state cannot be seen from {}", here.host),
            None => "process not recorded".to_owned(),
        };
        eprintln!(
            "export {export}: the lease is held by run {} ({process}) until {}; it is released only once it expired or its \
             holder is known to be dead. Wait for the run to finish or the lease to expire, or, if you know the run is dead, \
             release it with --force (a run that is still alive may then deliver the same rows as the next run)",
            l.holder,
            print::time(l.expires_at)
        );
        return Ok(ExitCode::FAILURE);
    };
    state.release(&export, &l.holder).await.context("releasing the lease")?;
    println!("export {export}: released the lease of run {} ({why})", l.holder);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<cli::Cli, clap::Error> {
        let args = cli::with_run_for_seed_flags(std::iter::once("ferry").chain(args.iter().copied()).map(Into::into).collect());
        cli::Cli::try_parse_from(args)
    }

    fn etl_args(args: &[&str]) -> cli::EtlArgs {
        match parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}")).command {
            cli::Command::Run { etl, .. } => etl,
            _ => panic!("not run: {args:?}"),
        }
    }

    /// Seed 004's job definitions pass their own spellings, without `run` (a Cloud Run Job's
    /// `--args="--data_source_id=123,--etl_run_id=456"` replaces the container's arguments).
    #[test]
    fn the_seeds_runner_arguments_parse_as_ferry_run() {
        for args in [
            &["--data_source_id=123", "--etl_run_id=456"][..],
            &["--data_source_id", "123", "--etl_run_id", "456"],
            &["run", "--data-source-id", "123", "--etl-run-id=456"],
            &["run", "--etl_run_id=456", "--data_source_id=123"],
            &["--etl_run_id=456", "--data_source_id=123"],
        ] {
            let e = etl_args(args);
            assert_eq!((e.data_source_id, e.etl_run_id), (Some(123), Some(456)), "{args:?}");
            assert_eq!((e.log_level, e.json_logs), (None, None));
        }
        let e = etl_args(&["--data_source_id", "7", "--log_level", "DEBUG", "--json_logs", "False"]);
        assert_eq!((e.data_source_id, e.etl_run_id, e.log_level, e.json_logs), (Some(7), None, Some(cli::LogLevel::Debug), Some(false)));
        let e = etl_args(&["--log_level=critical", "--json_logs", "--data_source_id=7"]);
        assert_eq!((e.log_level.map(cli::LogLevel::filter), e.json_logs), (Some("error"), Some(true)));
        assert_eq!(etl_args(&["run", "--log-level", "warn"]).log_level, Some(cli::LogLevel::Warning));
        assert_eq!(cli::LogLevel::parse(" INFO "), Some(cli::LogLevel::Info));
        assert_eq!(cli::LogLevel::parse("verbose"), None);
        // A plain `ferry run` is untouched.
        let e = etl_args(&["run", "--export", "x"]);
        assert_eq!((e.data_source_id, e.json_logs), (None, None));
        for bad in [
            &["--data_source_id=0"][..],
            &["--data_source_id=abc"],
            &["--etl_run_id=4"],
            &["--data_source_id=1", "--export", "x"],
            &["run", "--data_source_id=1", "--message-id", "m"],
            &["--data_source_id=1", "--log_level", "loud"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    /// What the service hands to the job, `ferry run` takes: odd export names and message ids
    /// included.
    #[test]
    fn the_job_arguments_parse_as_ferry_run() {
        let mut c = ferry_testkit::memory::memory_config("-off", ferry_core::config::Shape::Table(ferry_core::config::TableMode::Append));
        c.exports[0].execution = ferry_core::config::Execution::Job;
        let export = &c.exports[0];
        for (message_id, full, dry_run) in [("-1", true, false), ("12345678901234", false, true), ("ce id with spaces/ü", false, false)] {
            let o = ferry_core::run::RunOptions {
                full,
                dry_run,
                run_date: chrono::NaiveDate::from_ymd_opt(2026, 12, 1),
                ..ferry_core::run::RunOptions::new()
            };
            let args = ferry_core::run::dispatch::job_args("/app/configs/x y.json", export, &o, message_id, chrono::Utc::now());
            let cli = cli::Cli::try_parse_from(std::iter::once("ferry".to_owned()).chain(args.clone()))
                .unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(cli.config, std::path::PathBuf::from("/app/configs/x y.json"));
            let cli::Command::Run { what, message_id: got, .. } = cli.command else { panic!("not run: {args:?}") };
            assert_eq!((what.exports, what.full, what.dry_run), (vec!["-off".to_owned()], full, dry_run));
            assert_eq!(what.date, o.run_date);
            assert_eq!(got.as_deref(), Some(message_id));
        }
    }
}
