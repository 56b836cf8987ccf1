//! `ferry serve`: the Cloud Run service. `POST /` takes Pub/Sub push requests (and the same
//! body from Eventarc); `GET /health` answers `ok`.
//!
//! Answers, as Pub/Sub reads them:
//! - 200 once every export of the message committed, had nothing new, was already delivered
//!   for this message (a redelivery), or failed in a way retrying cannot fix (reported).
//! - 503 when an export failed in a way that may pass on retry (a server briefly down, another
//!   instance still delivering the same export): Pub/Sub redelivers with backoff.
//! - 200 for a malformed message (not JSON, not base64, unknown config): redelivering it cannot
//!   help; it is logged and reported through the failure notifications of the default config.
//! - 401 when push authentication is configured and the token does not verify.
//!
//! Response bodies carry statuses, plus for a rejected message what is wrong with it; never the
//! text of an internal error: details go to the log and the
//! notifications.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
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
    /// How long a request waits for another instance that is delivering the same export.
    pub lease_wait: Duration,
    /// Lease lifetime without renewal (see [`RunOptions::lease_ttl`]).
    pub lease_ttl: Duration,
    /// After SIGTERM, how long requests in flight may run before the process exits.
    pub grace: Duration,
    /// Push authentication, when configured.
    pub oidc: Option<Verifier>,
}

/// Serves until SIGTERM (or Ctrl-C), then lets requests in flight finish within the grace time.
pub async fn serve(settings: ServeSettings) -> anyhow::Result<()> {
    let listener =
        tokio::net::TcpListener::bind(settings.addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.addr))?;
    let grace = settings.grace;
    tracing::info!(addr = %listener.local_addr()?, config_dir = %settings.config_dir.display(), oidc = settings.oidc.is_some(), "ferry serve listening");
    let app = router(Arc::new(settings));
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
    Router::new().route("/", post(push)).route("/health", get(|| async { "ok" })).with_state(settings)
}

async fn push(State(s): State<Arc<ServeSettings>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(v) = &s.oidc {
        if let Err(reason) = v.verify(headers.get(axum::http::header::AUTHORIZATION)).await {
            tracing::warn!(reason = %reason, "push request refused: authentication failed");
            return (StatusCode::UNAUTHORIZED, Json(json!({"status": "unauthorized"}))).into_response();
        }
    }
    match trigger::parse(&headers, &body) {
        Err(m) => rejected(&s, m).await,
        Ok(p) => {
            let span = tracing::info_span!("push", message_id = %p.message_id, config = %p.trigger.config, form = p.form);
            run(&s, p).instrument(span).await
        }
    }
}

/// Acknowledges a message ferry cannot act on, and reports it.
async fn rejected(s: &ServeSettings, m: Malformed) -> Response {
    tracing::error!(message_id = m.message_id.as_deref().unwrap_or("-"), reason = %m.reason, "trigger message rejected; acknowledged so that it is not redelivered");
    let default = s.config_dir.join("default.json");
    match crate::components::load(&default) {
        Ok(config) => crate::report_rejected(&config, m.message_id.as_deref(), &m.reason).await,
        Err(_) => tracing::warn!(path = %default.display(), "no valid default config: the rejection is reported in this log only"),
    }
    (StatusCode::OK, Json(json!({"status": "rejected", "reason": m.reason}))).into_response()
}

async fn run(s: &ServeSettings, p: Push) -> Response {
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
    opts.lease_wait = s.lease_wait;
    opts.lease_ttl = s.lease_ttl;
    let report = crate::run(&config, &opts, None).await;
    let retry = report.outcomes.iter().any(|o| o.status == RunStatus::Failed && o.error_class == Some(ErrorClass::Transient));
    let exports: Vec<_> = report
        .outcomes
        .iter()
        .map(|o| {
            let status = match &o.skipped {
                Some(Skip::AlreadyDelivered { .. }) => "ALREADY_DELIVERED",
                Some(Skip::Busy) => "BUSY",
                None => o.status.as_str(),
            };
            json!({"export": o.export, "status": status, "rows": o.rows, "file": o.file})
        })
        .collect();
    let (code, status) = match (retry, report.succeeded()) {
        (true, _) => (StatusCode::SERVICE_UNAVAILABLE, "retry"),
        (false, true) => (StatusCode::OK, "ok"),
        (false, false) => (StatusCode::OK, "failed"),
    };
    tracing::info!(run_id = %report.run_id, status, http_status = code.as_u16(), "push handled");
    (code, Json(json!({"run_id": report.run_id, "status": status, "exports": exports}))).into_response()
}
