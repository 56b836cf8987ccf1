//! Notifiers (email, Slack): see the notifications issue.
