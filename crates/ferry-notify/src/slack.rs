//! Slack incoming webhooks: `POST` the Block Kit payload; Slack answers `200 ok`.
//!
//! A webhook post is not idempotent: Slack has no request id, and a post whose answer was lost
//! (a timeout, a dropped connection, a 5xx from a proxy after Slack took it) may have reached
//! the channel. So a post is sent again only when it provably did not arrive (the connection
//! could not be made) or when Slack answered 429, waiting at least its `Retry-After`.

use std::time::Duration;

use async_trait::async_trait;
use ferry_core::config::SlackSpec;
use ferry_core::run::RunReport;
use ferry_core::{ErrorClass, Failure, Notifier, RetryPolicy, Verdict};

use crate::{error_chain, message, wants, NotifyError};

/// Posts the run summary to a Slack channel.
pub struct SlackNotifier {
    spec: SlackSpec,
    client: reqwest::Client,
    retry: RetryPolicy,
}

impl SlackNotifier {
    /// Prepares the HTTP client. The webhook URL is the secret: it is only handed to reqwest,
    /// and reqwest errors are stripped of it before they are reported.
    pub fn new(spec: &SlackSpec, retry: RetryPolicy) -> Result<Self, NotifyError> {
        let client = reqwest::Client::builder()
            .timeout(spec.timeout)
            .build()
            .map_err(|e| NotifyError::Setup { field: "notifications.slack", reason: e.without_url().to_string() })?;
        Ok(Self { spec: spec.clone(), client, retry })
    }

    async fn post(&self, payload: &serde_json::Value) -> Result<(), NotifyError> {
        let response = self.client.post(self.spec.webhook_url.expose()).json(payload).send().await.map_err(|e| {
            let class = if e.is_builder() { ErrorClass::Permanent } else { ErrorClass::Transient };
            // Only a connection that was never made proves that the message did not arrive.
            let resend = if e.is_connect() { Verdict::Retry } else { Verdict::Stop };
            NotifyError::Slack { reason: format!("cannot reach the webhook: {}", error_chain(&e.without_url())), class, resend }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let resend = match status.as_u16() {
            429 => response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(Verdict::Retry, |s| Verdict::RetryAfter(Duration::from_secs(s))),
            _ => Verdict::Stop,
        };
        let body: String = response.text().await.unwrap_or_default().chars().take(200).collect();
        let class = if status.is_server_error() || status.as_u16() == 429 { ErrorClass::Transient } else { ErrorClass::Permanent };
        let hint = match status.as_u16() {
            403 | 404 | 410 => "; the webhook URL is wrong or the app was removed from the channel",
            400 => "; Slack rejected the message",
            _ => "",
        };
        Err(NotifyError::Slack { reason: format!("HTTP {status} {:?}{hint}", body.trim()), class, resend })
    }
}

impl SlackNotifier {
    /// Posts under the retry policy, again only when that cannot post twice.
    async fn send(&self, payload: &serde_json::Value) -> Result<(), ferry_core::retry::GaveUp<NotifyError>> {
        let resend = |e: &NotifyError| match e {
            NotifyError::Slack { resend, .. } => *resend,
            _ => Verdict::Stop,
        };
        self.retry.run_with("slack webhook", || self.post(payload), resend).await
    }
}

#[async_trait]
impl Notifier for SlackNotifier {
    async fn notify(&self, report: &RunReport) -> Result<(), Failure> {
        if !wants(self.spec.when, report) {
            return Ok(());
        }
        let payload = message::slack_payload(report);
        match self.send(&payload).await {
            Ok(()) => {
                tracing::info!(run_id = %report.run_id, "slack message sent");
                Ok(())
            }
            Err(given_up) => Err(crate::retry::gave_up(given_up)),
        }
    }

    fn name(&self) -> &'static str {
        "slack"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use axum::http::{HeaderMap, StatusCode};
    use ferry_core::config::When;
    use ferry_core::Secret;

    /// A stand-in webhook on 127.0.0.1 that answers the n-th post (0-based) with `answer(n)`.
    async fn webhook(answer: fn(u32) -> (StatusCode, HeaderMap)) -> (String, Arc<AtomicU32>) {
        let posts = Arc::new(AtomicU32::new(0));
        let seen = posts.clone();
        let app = axum::Router::new().fallback(move || {
            let seen = seen.clone();
            async move { answer(seen.fetch_add(1, Ordering::SeqCst)) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hooks/x", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, posts)
    }

    fn notifier(url: &str) -> SlackNotifier {
        let spec = SlackSpec { webhook_url: Secret::new(url), when: When::Always, timeout: Duration::from_secs(15) };
        SlackNotifier::new(&spec, RetryPolicy::fast(3, Duration::from_secs(10))).expect("notifier")
    }

    #[tokio::test]
    async fn a_5xx_is_not_posted_again() {
        let (url, posts) = webhook(|_| (StatusCode::INTERNAL_SERVER_ERROR, HeaderMap::new())).await;
        let e = notifier(&url).send(&serde_json::json!({})).await.expect_err("500");
        assert_eq!(posts.load(Ordering::SeqCst), 1, "the message may have arrived: not posted twice");
        assert_eq!(e.attempts, 1);
        assert_eq!(e.to_string(), "slack webhook: HTTP 500 Internal Server Error \"\"");
    }

    #[tokio::test]
    async fn a_429_is_posted_again_after_retry_after() {
        let (url, posts) = webhook(|n| {
            let mut h = HeaderMap::new();
            h.insert("retry-after", "0".parse().expect("header"));
            (if n == 0 { StatusCode::TOO_MANY_REQUESTS } else { StatusCode::OK }, h)
        })
        .await;
        notifier(&url).send(&serde_json::json!({})).await.expect("second post");
        assert_eq!(posts.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_connection_is_posted_again_up_to_the_bound() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port();
        let e = notifier(&format!("http://127.0.0.1:{port}/hooks/x")).send(&serde_json::json!({})).await.expect_err("nobody listens");
        assert_eq!(e.attempts, 3);
        let text = e.to_string();
        assert!(
            text.starts_with("slack webhook: cannot reach the webhook") && text.ends_with("(gave up after 3 attempts: no attempts left)"),
            "{text}"
        );
        assert!(!text.contains(&port.to_string()), "the webhook URL is a secret: {text}");
    }
}
