//! `ferry serve`: the Cloud Run service. `POST /` takes Pub/Sub push requests (and the same
//! body from Eventarc); `GET /health` answers `ok`.
//!
//! An export with `execution: job` is not run here: it is handed to a Cloud Run Job execution,
//! recorded DISPATCHED, and answered at once (see `ferry_core::run::dispatch`). The others run
//! in the request, so the answer to a message that mixes both waits for them.
//!
//! Answers, as Pub/Sub reads them:
//! - 200 once every export of the message committed, had nothing new, was already delivered
//!   or dispatched for this message (a redelivery), was handed to a job execution, or failed in
//!   a way retrying cannot fix (reported).
//! - 503 when an export failed in a way that may pass on retry (a server briefly down, another
//!   instance still delivering the same export), and when a job execution could not be started
//!   (whatever the Admin API said: nothing was recorded): Pub/Sub redelivers with backoff.
//! - 200 for a malformed message (not JSON, not base64, not an object, unknown fields or config,
//!   an empty export list, a body over [`MAX_BODY_BYTES`]): redelivering it cannot help. Each
//!   is logged; the first of a burst is reported at once through the failure notifications of
//!   the default config, the rest of the burst in one summary per window ([`Rejections`]).
//! - 401 when push authentication is configured and the token does not verify.
//!
//! Response bodies carry statuses, plus for a rejected message what is wrong with it; never the
//! text of an internal error: details go to the log and the
//! notifications.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ferry_core::run::dispatch::Dispatched;
use ferry_core::run::{RunOptions, Skip};
use ferry_core::{ErrorClass, RunStatus};
use serde_json::json;
use tracing::Instrument;

use crate::oidc::Verifier;
use crate::trigger::{self, Malformed, Push};

/// How the service runs.
pub struct ServeSettings {
    pub addr: SocketAddr,
    /// Where `<name>.json` configs live.
    pub config_dir: PathBuf,
    /// The config of `/transfer` and `/verify` requests that name none: `CONFIG_PATH` (the
    /// seed deployment's variable), else `default.json` in `config_dir`.
    pub default_config: PathBuf,
    /// How long a request waits for another instance that is delivering the same export.
    pub lease_wait: Duration,
    /// Lease lifetime without renewal (see [`RunOptions::lease_ttl`]).
    pub lease_ttl: Duration,
    /// After SIGTERM, how long requests in flight may run before the process exits.
    pub grace: Duration,
    /// Push authentication, when configured.
    pub oidc: Option<Verifier>,
    /// How rejected messages are reported.
    pub rejections: Rejections,
    /// The runs in flight, each detached from the request that started it.
    pub runs: Detached,
}

/// Runs in flight. A run is a task of its own, not part of its request's future: when the
/// client goes away (a push that outlived its deadline), hyper drops the request, and the run
/// goes on to its end, recorded as usual; the redelivery then finds it done (or still running:
/// `BUSY`, 503). At shutdown the service waits for them like for requests, within the grace time.
pub struct Detached {
    permits: Arc<tokio::sync::Semaphore>,
}

/// More runs than one instance can hold at once.
const MAX_DETACHED: u32 = 1 << 20;

impl Default for Detached {
    fn default() -> Self {
        Self { permits: Arc::new(tokio::sync::Semaphore::new(MAX_DETACHED as usize)) }
    }
}

impl Detached {
    /// Runs `work` as a task of its own; its result, if the caller is still there to take it.
    async fn run<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        let permit = self.permits.clone().acquire_owned().await.expect("the semaphore is never closed");
        tokio::spawn(
            async move {
                let _in_flight = permit;
                work.await
            }
            .in_current_span(),
        )
        .await
    }

    /// Waits until no run is in flight.
    async fn drained(&self) {
        let in_flight = MAX_DETACHED as usize - self.permits.available_permits();
        if in_flight > 0 {
            tracing::info!(in_flight, "waiting for runs whose requests have ended");
        }
        let _all = self.permits.acquire_many(MAX_DETACHED).await;
    }
}

/// The largest push request body read. Trigger messages are a few hundred bytes; a larger body
/// is acknowledged with 200 and reported as rejected (a 413 would make Pub/Sub redeliver it
/// until it is dead-lettered).
pub const MAX_BODY_BYTES: usize = 256 << 10;

/// The reports of rejected messages: the first of a burst goes out at once; the ones that
/// follow within `window` are only counted, and one summary with the count and the reasons
/// goes out when the window ends (which opens the next window if there was anything to say).
/// Every rejection is logged regardless.
pub struct Rejections {
    window: Duration,
    /// Config file → what the open window has held back.
    open: Mutex<HashMap<PathBuf, Held>>,
}

#[derive(Default)]
struct Held {
    count: u64,
    /// Distinct reasons with their counts, in order of arrival (at most [`HELD_REASONS`]).
    reasons: Vec<(String, u64)>,
}

/// How many distinct reasons a summary lists.
const HELD_REASONS: usize = 5;

impl Rejections {
    pub fn new(window: Duration) -> Self {
        Self { window, open: Mutex::default() }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Held>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a rejection reported through `config` goes out now (true) or is held for the
    /// window's summary (false, counted).
    fn admit(&self, config: &std::path::Path, reason: &str) -> bool {
        let mut open = self.open();
        match open.get_mut(config) {
            None => {
                open.insert(config.to_owned(), Held::default());
                true
            }
            Some(held) => {
                held.count += 1;
                if let Some((_, n)) = held.reasons.iter_mut().find(|(r, _)| r == reason) {
                    *n += 1;
                } else if held.reasons.len() < HELD_REASONS {
                    held.reasons.push((reason.to_owned(), 1));
                }
                false
            }
        }
    }

    /// Closes the window of `config`: what it held back, if anything (the window then stays
    /// open for another round), else `None` (closed).
    fn close(&self, config: &std::path::Path) -> Option<Held> {
        let mut open = self.open();
        match open.get_mut(config) {
            Some(held) if held.count > 0 => Some(std::mem::take(held)),
            _ => {
                open.remove(config);
                None
            }
        }
    }
}

impl Held {
    fn summary(&self, window: Duration) -> String {
        let mut text = format!(
            "{} more trigger message{} rejected in the last {} s (reported together so that a burst cannot flood this channel; each is in the service log)",
            self.count,
            if self.count == 1 { " was" } else { "s were" },
            window.as_secs()
        );
        for (reason, n) in &self.reasons {
            text.push_str(&format!("; {n}× {reason}"));
        }
        text
    }
}

/// Serves until SIGTERM (or Ctrl-C), then lets requests in flight finish within the grace time.
pub async fn serve(settings: ServeSettings) -> anyhow::Result<()> {
    let listener =
        tokio::net::TcpListener::bind(settings.addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.addr))?;
    let grace = settings.grace;
    tracing::info!(addr = %listener.local_addr()?, config_dir = %settings.config_dir.display(), oidc = settings.oidc.is_some(), "ferry serve listening");
    let settings = Arc::new(settings);
    let settings_for_drain = settings.clone();
    let app = router(settings);
    let shutdown = async move {
        wait_for_signal().await;
        tracing::info!(grace_seconds = grace.as_secs(), "shutdown requested: no new requests; finishing those in flight");
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            // Runs still in flight hold leases that expire by themselves; PENDING records are
            // reconciled by the redelivery, so what is cut here converges.
            tracing::error!("grace time over with requests in flight; exiting. Their messages are redelivered.");
            std::process::exit(1);
        });
    };
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    settings_for_drain.runs.drained().await;
    tracing::info!("ferry serve stopped");
    Ok(())
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// The service's routes.
pub fn router(settings: Arc<ServeSettings>) -> Router {
    Router::new()
        .route("/", post(push))
        .route("/transfer", post(transfer))
        .route("/verify", post(verify))
        .route("/health", get(|| async { "ok" }))
        .with_state(settings)
}

/// `POST /transfer` and `POST /verify` bodies, as the seed's Airflow DAG sends them; `config`
/// (a `<name>.json` of the config directory) is ferry's addition.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CopyRequest {
    export_name: String,
    gcs_path: String,
    #[serde(default)]
    date: Option<String>,
    #[serde(default)]
    config: Option<String>,
}

/// An answer to a caller's own mistake: 400 with what is wrong.
fn bad_request(reason: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"status": "error", "error": reason.into()}))).into_response()
}

/// Authentication, body and config of a `/transfer` or `/verify` request.
async fn copy_request(s: &ServeSettings, headers: &HeaderMap, body: Body) -> Result<(CopyRequest, ferry_core::config::Config), Response> {
    if let Some(v) = &s.oidc {
        if let Err(reason) = v.verify_caller(headers.get(axum::http::header::AUTHORIZATION)).await {
            tracing::warn!(reason = %reason, "request refused: authentication failed");
            return Err((StatusCode::UNAUTHORIZED, Json(json!({"status": "unauthorized"}))).into_response());
        }
    }
    let body = match read_body(body).await {
        Ok(Some(b)) => b,
        Ok(None) => return Err(bad_request(format!("the request body is larger than {MAX_BODY_BYTES} bytes"))),
        Err(_) => return Err(bad_request("the request body could not be read")),
    };
    let req: CopyRequest = serde_json::from_slice(&body)
        .map_err(|e| bad_request(format!("expected a JSON object with export_name and gcs_path (and optionally date, config): {e}")))?;
    let path = match &req.config {
        Some(name) if !trigger::valid_config_name(name) => return Err(bad_request("config: expected letters, digits, `_` and `-`")),
        Some(name) => s.config_dir.join(format!("{name}.json")),
        None => s.default_config.clone(),
    };
    if !path.exists() {
        return Err(bad_request(format!(
            "unknown config: there is no {} in the config directory",
            path.file_name().unwrap_or_default().to_string_lossy()
        )));
    }
    let config = crate::components::load(&path).map_err(|e| {
        tracing::error!(path = %path.display(), errors = %e, "configuration is invalid");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"status": "error", "error": "the service's configuration is invalid; see its log"})),
        )
            .into_response()
    })?;
    Ok((req, config))
}

/// `POST /transfer`: copies the objects under `gcs_path` to the export's destination, as
/// `ferry transfer` does, and answers in the seed service's shape. 200 on success; 400 for a
/// request that names no export of the config, or a path outside the staging bucket; 404 when
/// the path holds no files; 503 when trying again may help; 500 otherwise.
async fn transfer(State(s): State<Arc<ServeSettings>>, headers: HeaderMap, body: Body) -> Response {
    let (req, config) = match copy_request(&s, &headers, body).await {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    let (spec, target) = match crate::transfer_target(&config, &req.export_name, &req.gcs_path) {
        Ok(t) => t,
        Err(e) => return bad_request(e),
    };
    let date = match req.date.as_deref() {
        None | Some("") => None,
        Some(d) => match chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").or_else(|_| chrono::NaiveDate::parse_from_str(d, "%Y%m%d")) {
            Ok(d) => Some(d),
            Err(_) => return bad_request(format!("date: expected YYYY-MM-DD, found {d:?}")),
        },
    };
    let mut opts = RunOptions::new();
    opts.exports = Some(vec![spec.name.clone()]);
    opts.run_date = date;
    opts.lease_wait = s.lease_wait;
    opts.lease_ttl = s.lease_ttl;
    opts.transfer = Some(target.clone());
    let spec = spec.clone();
    let started = std::time::Instant::now();
    let work = async move {
        let report = crate::run(&config, &opts, None).await;
        let answer = crate::transfer_answer(&spec, &report, started.elapsed().as_secs_f64());
        (report.outcomes.first().and_then(|o| o.error.clone()), answer)
    };
    let (error, (ok, transient, mut answer)) = match s.runs.run(work).await {
        Ok(done) => done,
        Err(e) => {
            tracing::error!(error = %e, "the transfer ended abnormally");
            return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"status": "error", "error": "the transfer ended abnormally"})))
                .into_response();
        }
    };
    let code = if ok {
        StatusCode::OK
    } else if error.as_deref().is_some_and(|e| e.contains(crate::NO_FILES)) {
        // The caller's own path: saying so leaks nothing.
        answer["error"] = format!("no files under {}; nothing was transferred", target.uri).into();
        StatusCode::NOT_FOUND
    } else if transient {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    tracing::info!(export = %req.export_name, path = %target.uri, http_status = code.as_u16(), "transfer handled");
    (code, Json(answer)).into_response()
}

/// `POST /verify`: compares the objects under `gcs_path` with the export's destination, as
/// `ferry verify` does: 200 with `in_sync`, `gcs_file_count`, `sftp_file_count`,
/// `missing_on_sftp`, `size_mismatches`, whatever the comparison found.
async fn verify(State(s): State<Arc<ServeSettings>>, headers: HeaderMap, body: Body) -> Response {
    let (req, config) = match copy_request(&s, &headers, body).await {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    let (spec, target) = match crate::transfer_target(&config, &req.export_name, &req.gcs_path) {
        Ok(t) => t,
        Err(e) => return bad_request(e),
    };
    match crate::verify(&config, spec, &target).await {
        Ok(report) => {
            let mut answer = serde_json::to_value(&report).unwrap_or_default();
            answer["status"] = "success".into();
            (StatusCode::OK, Json(answer)).into_response()
        }
        Err(e) => {
            tracing::error!(export = %req.export_name, error = %config.redact(&e.to_string()), "verify failed");
            let code = if e.class() == ErrorClass::Transient { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::INTERNAL_SERVER_ERROR };
            (code, Json(json!({"status": "error", "error": "the comparison could not be made; see the service's log"}))).into_response()
        }
    }
}

async fn push(State(s): State<Arc<ServeSettings>>, headers: HeaderMap, body: Body) -> Response {
    if let Some(v) = &s.oidc {
        if let Err(reason) = v.verify(headers.get(axum::http::header::AUTHORIZATION)).await {
            tracing::warn!(reason = %reason, "push request refused: authentication failed");
            return (StatusCode::UNAUTHORIZED, Json(json!({"status": "unauthorized"}))).into_response();
        }
    }
    let body = match read_body(body).await {
        Ok(Some(b)) => b,
        Ok(None) => {
            let reason = format!("the request body is larger than {MAX_BODY_BYTES} bytes; trigger messages are small JSON objects");
            return rejected(&s, Malformed { message_id: None, reason }).await;
        }
        Err(e) => {
            // The body broke off: nothing was read, and Pub/Sub's redelivery is what is wanted.
            tracing::warn!(error = %e, "push request body could not be read");
            return (StatusCode::BAD_REQUEST, Json(json!({"status": "unreadable"}))).into_response();
        }
    };
    match trigger::parse(&headers, &body) {
        Err(m) => rejected(&s, m).await,
        Ok(p) => {
            let span = tracing::info_span!("push", message_id = %p.message_id, config = %p.trigger.config, form = p.form);
            run(&s, p).instrument(span).await
        }
    }
}

/// How much of a body over [`MAX_BODY_BYTES`] is read and dropped, so that the client, still
/// sending, gets the answer (Pub/Sub's largest push is about 14 MB): beyond it the connection
/// is closed.
const MAX_DRAIN_BYTES: usize = 16 << 20;

/// The body, or `None` when it is longer than [`MAX_BODY_BYTES`] (what follows is dropped).
async fn read_body(body: Body) -> Result<Option<Vec<u8>>, axum::Error> {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    let mut drained = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if drained > 0 || bytes.len() + chunk.len() > MAX_BODY_BYTES {
            drained += chunk.len();
            if drained > MAX_DRAIN_BYTES {
                break;
            }
            continue;
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok((drained == 0).then_some(bytes))
}

/// Acknowledges a message ferry cannot act on, and reports it (or counts it into the summary
/// of a burst, see [`Rejections`]).
async fn rejected(s: &Arc<ServeSettings>, m: Malformed) -> Response {
    tracing::error!(message_id = m.message_id.as_deref().unwrap_or("-"), reason = %m.reason, "trigger message rejected; acknowledged so that it is not redelivered");
    let default = s.config_dir.join("default.json");
    if s.rejections.admit(&default, &m.reason) {
        match crate::components::load(&default) {
            Ok(config) => crate::report_rejected(&config, m.message_id.as_deref(), &m.reason).await,
            Err(_) => tracing::warn!(path = %default.display(), "no valid default config: the rejection is reported in this log only"),
        }
        tokio::spawn(summarise(s.clone(), default));
    }
    (StatusCode::OK, Json(json!({"status": "rejected", "reason": m.reason}))).into_response()
}

/// At the end of each window: reports what it held back, until a window holds nothing.
async fn summarise(s: Arc<ServeSettings>, config: PathBuf) {
    loop {
        tokio::time::sleep(s.rejections.window).await;
        let Some(held) = s.rejections.close(&config) else { return };
        let text = held.summary(s.rejections.window);
        tracing::warn!(count = held.count, "rejected trigger messages summarised");
        match crate::components::load(&config) {
            Ok(c) => crate::report_rejected_burst(&c, &text).await,
            Err(_) => tracing::warn!(path = %config.display(), "no valid default config: the summary is in this log only"),
        }
    }
}

async fn run(s: &Arc<ServeSettings>, p: Push) -> Response {
    let path = s.config_dir.join(format!("{}.json", p.trigger.config));
    if !path.exists() {
        let reason = format!("unknown config {:?}: there is no {}.json in the config directory", p.trigger.config, p.trigger.config);
        return rejected(s, Malformed { message_id: Some(p.message_id), reason }).await;
    }
    let config = match crate::components::load(&path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(path = %path.display(), errors = %e, "configuration is invalid; message acknowledged: fix the configuration, then publish again");
            return (
                StatusCode::OK,
                Json(json!({"status": "rejected", "reason": format!("configuration {} is invalid", p.trigger.config)})),
            )
                .into_response();
        }
    };
    let mut opts = RunOptions::new();
    opts.exports = p.trigger.exports.clone();
    opts.full = p.trigger.full;
    opts.dry_run = p.trigger.dry_run;
    opts.run_date = p.trigger.date;
    opts.message_id = Some(p.message_id.clone());
    opts.run_id = Some(uuid::Uuid::new_v4().to_string());
    opts.lease_wait = s.lease_wait;
    opts.lease_ttl = s.lease_ttl;
    let run_id = opts.run_id.clone().unwrap_or_default();
    let (jobs, inline) = crate::split_jobs(&config, &opts);
    // The job runs the same image: the same path, made absolute, names the same file there.
    let config_path = std::path::absolute(&path).unwrap_or_else(|_| path.clone()).to_string_lossy().into_owned();
    // Both the hand-off and the run are tasks of their own: a client that goes away cancels
    // neither between starting an execution and recording it, nor in the middle of a run.
    let work = async move {
        let dispatched = if jobs.is_empty() { Vec::new() } else { crate::dispatch(&config, &opts, &config_path, &jobs).await };
        let report = match inline {
            Some(o) => Some(crate::run(&config, &o, None).await),
            None => None,
        };
        (dispatched, report)
    };
    let (dispatched, report) = match s.runs.run(work).await {
        Ok(done) => done,
        Err(e) => {
            tracing::error!(error = %e, "the run ended abnormally; the message will be redelivered");
            return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"status": "retry"}))).into_response();
        }
    };
    let mut retry = dispatched.iter().any(|(_, r)| r.is_err());
    let mut failed = false;
    let mut exports: Vec<serde_json::Value> = dispatched
        .iter()
        .map(|(export, r)| match r {
            Ok(Dispatched::Started { execution }) | Ok(Dispatched::Earlier { execution, .. }) => {
                json!({"export": export, "status": "DISPATCHED", "execution": execution})
            }
            Ok(Dispatched::Delivered { run_id, .. }) => json!({"export": export, "status": "ALREADY_DELIVERED", "run_id": run_id}),
            Err(_) => json!({"export": export, "status": "NOT_DISPATCHED"}),
        })
        .collect();
    let mut run_id = run_id.clone();
    if let Some(report) = &report {
        run_id = report.run_id.clone();
        retry |= report.outcomes.iter().any(|o| o.status == RunStatus::Failed && o.error_class == Some(ErrorClass::Transient));
        failed = !report.succeeded();
        exports.extend(report.outcomes.iter().map(|o| {
            let status = match &o.skipped {
                Some(Skip::AlreadyDelivered { .. }) => "ALREADY_DELIVERED",
                Some(Skip::Busy) => "BUSY",
                Some(Skip::SameMessage { .. }) => "IN_PROGRESS",
                None => o.status.as_str(),
            };
            json!({"export": o.export, "status": status, "rows": o.rows, "file": o.file})
        }));
    }
    let (code, status) = match (retry, failed) {
        (true, _) => (StatusCode::SERVICE_UNAVAILABLE, "retry"),
        (false, false) => (StatusCode::OK, "ok"),
        (false, true) => (StatusCode::OK, "failed"),
    };
    tracing::info!(run_id = %run_id, status, http_status = code.as_u16(), dispatched = dispatched.len(), "push handled");
    (code, Json(json!({"run_id": run_id, "status": status, "exports": exports}))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_one_report_and_one_summary_per_window() {
        let r = Rejections::new(Duration::from_secs(300));
        let cfg = std::path::Path::new("default.json");
        assert!(r.admit(cfg, "first"), "the first of a burst goes out at once");
        for i in 0..39 {
            assert!(!r.admit(cfg, if i % 2 == 0 { "not JSON" } else { "not base64" }));
        }
        assert!(r.admit(std::path::Path::new("other.json"), "x"), "windows are per config");
        let held = r.close(cfg).expect("the window held 39");
        assert_eq!(held.count, 39);
        assert_eq!(held.reasons, [("not JSON".to_owned(), 20), ("not base64".to_owned(), 19)]);
        let text = held.summary(Duration::from_secs(300));
        assert!(text.starts_with("39 more trigger messages were rejected in the last 300 s"), "{text}");
        assert!(text.contains("; 20× not JSON; 19× not base64"), "{text}");
        assert!(!r.admit(cfg, "later"), "after a summary the next window is open: still counted");
        assert_eq!(r.close(cfg).map(|h| h.count), Some(1));
        assert!(r.close(cfg).is_none(), "an empty window closes");
        assert!(r.admit(cfg, "again"), "and the next rejection goes out at once");
    }

    #[test]
    fn a_summary_lists_at_most_five_reasons() {
        let r = Rejections::new(Duration::from_secs(1));
        let cfg = std::path::Path::new("default.json");
        r.admit(cfg, "first");
        for i in 0..20 {
            r.admit(cfg, &format!("reason {i}"));
        }
        let held = r.close(cfg).unwrap();
        assert_eq!((held.count, held.reasons.len()), (20, 5));
    }
}
