//! How notifications are retried: [`ferry_core::RetryPolicy`] with small numbers, so that a
//! channel that is down delays the end of a run by seconds, not minutes.

use std::time::Duration;

use ferry_core::retry::GaveUp;
use ferry_core::{Classify, RetryPolicy};

/// The policy of every notifier: at most 3 attempts, waits drawn below 0.5 s and then 1 s, no
/// retry later than 30 s after the first attempt (a `Retry-After` longer than that ends the
/// retries).
pub fn policy() -> RetryPolicy {
    RetryPolicy {
        initial: Duration::from_millis(500),
        max_delay: Duration::from_secs(5),
        multiplier: 2,
        max_attempts: 3,
        deadline: Duration::from_secs(30),
    }
}

/// The failure to report after a notifier gave up: the last error, and how many attempts
/// were made when there was more than one.
pub(crate) fn gave_up(g: GaveUp<crate::NotifyError>) -> ferry_core::Failure {
    if g.attempts > 1 {
        ferry_core::Failure::with_class(g.error.class(), g.to_string())
    } else {
        g.error.into()
    }
}
