//! Notification settings: email over SMTP and a Slack incoming webhook.

use std::path::PathBuf;

use serde::Deserialize;

use super::check::{Check, SecretField};
use super::Deployment;
use crate::Secret;

/// Notification channels.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNotifications {
    /// Email over SMTP.
    #[serde(default)]
    pub email: Option<RawEmail>,
    /// Slack incoming webhook.
    #[serde(default)]
    pub slack: Option<RawSlack>,
}

/// When a channel sends.
#[derive(Debug, Clone, Copy, Default, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// Only after a run in which every export succeeded.
    Success,
    /// Only after a run with a failed export.
    Failure,
    /// After every run.
    #[default]
    Always,
}

/// SMTP transport security.
#[derive(Debug, Clone, Copy, Default, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// STARTTLS, required.
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Implicit,
    /// No TLS: local relays only.
    None,
}

/// Email settings.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawEmail {
    /// SMTP server.
    pub smtp_host: String,
    /// SMTP port; 587 by default.
    #[serde(default = "port587")]
    pub smtp_port: u16,
    /// `starttls` (default), `implicit` or `none`.
    #[serde(default)]
    pub tls: SmtpTls,
    /// SMTP login; no authentication when absent.
    #[serde(default)]
    pub username: Option<String>,
    /// Variable holding the SMTP password; `EMAIL_PASSWORD` by default.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the SMTP password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Extra PEM CA certificate to trust (private relays, tests).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Sender address.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// `success`, `failure` or `always` (default).
    #[serde(default)]
    pub when: When,
    /// Seconds connecting, TLS, login and sending one mail may take; 30 by default (1 to 600).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

fn port587() -> u16 {
    587
}

/// The email deadline when the config names none.
pub const DEFAULT_EMAIL_TIMEOUT_SECS: u64 = 30;
/// The Slack deadline when the config names none.
pub const DEFAULT_SLACK_TIMEOUT_SECS: u64 = 15;

/// Slack settings.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSlack {
    /// Variable holding the webhook URL; `SLACK_WEBHOOK_URL` by default.
    #[serde(default)]
    pub webhook_url_env: Option<String>,
    /// File holding the webhook URL.
    #[serde(default)]
    pub webhook_url_file: Option<PathBuf>,
    /// `success`, `failure` or `always` (default).
    #[serde(default)]
    pub when: When,
    /// Seconds one post may take, connecting included; 15 by default (1 to 600).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

fn is_email(s: &str) -> bool {
    let addr = match (s.rfind('<'), s.rfind('>')) {
        (Some(a), Some(b)) if a < b => &s[a + 1..b],
        _ => s,
    };
    let mut parts = addr.split('@');
    matches!((parts.next(), parts.next(), parts.next()), (Some(l), Some(d), None) if !l.is_empty() && d.contains('.') && !d.starts_with('.') && !addr.contains(char::is_whitespace))
}

/// A deadline in seconds from `field` (1 to 600), else `default`.
fn timeout(cx: &Check<'_>, field: &str, secs: Option<u64>, default: u64) -> std::time::Duration {
    let secs = secs.unwrap_or(default);
    if !(1..=600).contains(&secs) {
        cx.err(field, format!("expected 1 to 600 seconds, found {secs}"));
    }
    std::time::Duration::from_secs(secs)
}

/// Checks the channels; `cx` stands at `notifications`.
pub(super) fn validate_notifications(n: &RawNotifications, cx: &Check<'_>) -> Notifications {
    let email = n.email.as_ref().map(|e| {
        if !is_email(&e.from) {
            cx.err("email.from", format!("expected an email address, found {}", super::limits::quote(&e.from)));
        }
        if e.to.is_empty() {
            cx.err("email.to", "expected at least one recipient");
        }
        for (i, to) in e.to.iter().enumerate() {
            if !is_email(to) {
                cx.err(&format!("email.to[{i}]"), format!("expected an email address, found {}", super::limits::quote(to)));
            }
        }
        if e.smtp_host.is_empty() {
            cx.err("email.smtp_host", "expected the SMTP server's host name");
        }
        let password = e.username.as_ref().and_then(|_| {
            cx.secret(SecretField {
                env_field: "email.password_env",
                var: e.password_env.as_deref(),
                default_var: "EMAIL_PASSWORD",
                file_field: "email.password_file",
                file: e.password_file.as_ref(),
            })
            .map_err(|(f, m)| cx.err(f, m))
            .ok()
        });
        if e.tls == SmtpTls::None && e.username.is_some() && !cx.plaintext_allowed(&e.smtp_host) {
            let local = if super::check::is_loopback(&e.smtp_host) {
                format!("; for a test server on this machine set {}=1", super::check::PLAINTEXT_LOOPBACK_ENV)
            } else {
                String::new()
            };
            cx.err("email.tls", format!("tls none would send the SMTP password unencrypted: use starttls or implicit{local}"));
        }
        if let Some(ca) = &e.ca_file {
            if cx.deployment() == Deployment::Here && !ca.exists() {
                cx.err("email.ca_file", format!("file {} does not exist", ca.display()));
            }
        }
        EmailSpec {
            host: e.smtp_host.clone(),
            port: e.smtp_port,
            tls: e.tls,
            username: e.username.clone(),
            password,
            ca_file: e.ca_file.clone(),
            from: e.from.clone(),
            to: e.to.clone(),
            when: e.when,
            timeout: timeout(cx, "email.timeout_secs", e.timeout_secs, DEFAULT_EMAIL_TIMEOUT_SECS),
        }
    });
    let slack = n.slack.as_ref().and_then(|s| {
        let url = cx
            .secret(SecretField {
                env_field: "slack.webhook_url_env",
                var: s.webhook_url_env.as_deref(),
                default_var: "SLACK_WEBHOOK_URL",
                file_field: "slack.webhook_url_file",
                file: s.webhook_url_file.as_ref(),
            })
            .map_err(|(f, m)| cx.err(f, m))
            .ok()?;
        if cx.deployment() == Deployment::Here {
            let field = if s.webhook_url_file.is_some() { "slack.webhook_url_file" } else { "slack.webhook_url_env" };
            cx.require_tls_url(field, url.expose(), "the webhook URL (a secret)");
        }
        Some(SlackSpec {
            webhook_url: url,
            when: s.when,
            timeout: timeout(cx, "slack.timeout_secs", s.timeout_secs, DEFAULT_SLACK_TIMEOUT_SECS),
        })
    });
    Notifications { email, slack }
}

/// Validated notification channels.
#[derive(Debug, Clone, Default)]
pub struct Notifications {
    pub email: Option<EmailSpec>,
    pub slack: Option<SlackSpec>,
}

/// Validated email settings.
#[derive(Debug, Clone)]
pub struct EmailSpec {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub ca_file: Option<PathBuf>,
    pub from: String,
    pub to: Vec<String>,
    pub when: When,
    /// How long connecting, TLS, login and sending one mail may take.
    pub timeout: std::time::Duration,
}

/// Validated Slack settings.
#[derive(Debug, Clone)]
pub struct SlackSpec {
    pub webhook_url: Secret,
    pub when: When,
    /// How long one post may take.
    pub timeout: std::time::Duration,
}
