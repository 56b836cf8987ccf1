//! Slack incoming webhooks: `POST` the Block Kit payload; Slack answers `200 ok`.

use std::time::Duration;

use async_trait::async_trait;
use ferry_core::config::SlackSpec;
use ferry_core::run::RunReport;
use ferry_core::{ErrorClass, Failure, Notifier};

use crate::{error_chain, message, wants, Backoff, NotifyError};

/// Posts the run summary to a Slack channel.
pub struct SlackNotifier {
    spec: SlackSpec,
    client: reqwest::Client,
    backoff: Backoff,
}

impl SlackNotifier {
    /// Prepares the HTTP client. The webhook URL is the secret: it is only handed to reqwest,
    /// and reqwest errors are stripped of it before they are reported.
    pub fn new(spec: &SlackSpec, backoff: Backoff) -> Result<Self, NotifyError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| NotifyError::Setup { field: "notifications.slack", reason: e.without_url().to_string() })?;
        Ok(Self { spec: spec.clone(), client, backoff })
    }

    async fn post(&self, payload: &serde_json::Value) -> Result<(), NotifyError> {
        let response = self.client.post(self.spec.webhook_url.expose()).json(payload).send().await.map_err(|e| {
            let class = if e.is_builder() { ErrorClass::Permanent } else { ErrorClass::Transient };
            NotifyError::Slack { reason: format!("cannot reach the webhook: {}", error_chain(&e.without_url())), class }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body: String = response.text().await.unwrap_or_default().chars().take(200).collect();
        let class = if status.is_server_error() || status.as_u16() == 429 { ErrorClass::Transient } else { ErrorClass::Permanent };
        let hint = match status.as_u16() {
            403 | 404 | 410 => "; the webhook URL is wrong or the app was removed from the channel",
            400 => "; Slack rejected the message",
            _ => "",
        };
        Err(NotifyError::Slack { reason: format!("HTTP {status} {:?}{hint}", body.trim()), class })
    }
}

#[async_trait]
impl Notifier for SlackNotifier {
    async fn notify(&self, report: &RunReport) -> Result<(), Failure> {
        if !wants(self.spec.when, report) {
            return Ok(());
        }
        let payload = message::slack_payload(report);
        match self.backoff.run(|| self.post(&payload)).await {
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
