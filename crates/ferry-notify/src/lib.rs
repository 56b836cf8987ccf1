//! Notifiers for ferry: email over SMTP ([`EmailNotifier`]) and Slack incoming webhooks
//! ([`SlackNotifier`]).
//!
//! Both send one message per run that summarises every export and spells out each failure
//! ([`message`]). Both retry a bounded number of times with backoff ([`retry_policy`]); Slack
//! only when posting again cannot post twice. Their errors name the server and what to fix, and never contain a secret: the
//! SMTP password and the webhook URL are only ever handed to the transport.

mod email;
pub mod message;
mod retry;
mod slack;

use ferry_core::config::{Notifications, When};
use ferry_core::run::RunReport;
use ferry_core::{Classify, ErrorClass, Notifier, Verdict};

pub use email::EmailNotifier;
pub use retry::policy as retry_policy;
pub use slack::SlackNotifier;

/// What went wrong while setting up or sending a notification.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// A configured file could not be used.
    #[error("{field}: {reason}")]
    Setup { field: &'static str, reason: String },
    /// The SMTP server refused or could not be reached.
    #[error("email via {server}: {reason}")]
    Smtp { server: String, reason: String, class: ErrorClass },
    /// The Slack webhook refused or could not be reached. `resend` says whether posting again
    /// is safe: only when the message provably did not arrive, or Slack asked for it (429).
    #[error("slack webhook: {reason}")]
    Slack { reason: String, class: ErrorClass, resend: Verdict },
}

impl Classify for NotifyError {
    fn class(&self) -> ErrorClass {
        match self {
            NotifyError::Setup { .. } => ErrorClass::Permanent,
            NotifyError::Smtp { class, .. } | NotifyError::Slack { class, .. } => *class,
        }
    }
}

/// An error and its sources as one line, each source once (some errors already repeat their
/// source in their own text). Callers strip secrets first (reqwest: `without_url`).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        source = s.source();
    }
    text
}

/// Whether a channel configured with `when` sends for `report`.
pub fn wants(when: When, report: &RunReport) -> bool {
    match when {
        When::Always => true,
        When::Success => report.succeeded(),
        When::Failure => !report.succeeded(),
    }
}

/// The notifiers `notifications` configures, ready to send. Fails on what can be checked
/// before a run: an unreadable CA file, an address lettre cannot parse.
pub fn from_config(notifications: &Notifications) -> Result<Vec<Box<dyn Notifier>>, NotifyError> {
    let mut out: Vec<Box<dyn Notifier>> = Vec::new();
    if let Some(e) = &notifications.email {
        out.push(Box::new(EmailNotifier::new(e, retry_policy())?));
    }
    if let Some(s) = &notifications.slack {
        out.push(Box::new(SlackNotifier::new(s, retry_policy())?));
    }
    Ok(out)
}
