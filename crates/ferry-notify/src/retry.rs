//! Bounded retries with exponential backoff, for transient failures only.

use std::future::Future;
use std::time::Duration;

use ferry_core::{Classify, ErrorClass};

/// How often and how patiently a notifier retries.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Attempts in total, the first included; at least 1.
    pub attempts: u32,
    /// Wait before the second attempt; doubled before each later one.
    pub first_delay: Duration,
}

impl Default for Backoff {
    /// Three attempts, waiting 0.5 s and then 1 s: a notification is late by at most a few
    /// seconds, and a run is never held up for long by a channel that is down.
    fn default() -> Self {
        Self { attempts: 3, first_delay: Duration::from_millis(500) }
    }
}

impl Backoff {
    /// Runs `op` until it succeeds, fails permanently, or the attempts are used up. Returns the
    /// last error and the number of attempts made.
    pub async fn run<T, E, F, Fut>(&self, mut op: F) -> Result<T, (E, u32)>
    where
        E: Classify + std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut delay = self.first_delay;
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.class() == ErrorClass::Transient && attempt < self.attempts.max(1) => {
                    tracing::warn!(attempt, error = %e, retry_in_ms = delay.as_millis() as u64, "notification attempt failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                Err(e) => return Err((e, attempt)),
            }
        }
    }
}

/// The failure to report after [`Backoff::run`] gave up: the last error, and how many attempts
/// were made when there was more than one.
pub(crate) fn gave_up((e, attempts): (crate::NotifyError, u32)) -> ferry_core::Failure {
    if attempts > 1 {
        ferry_core::Failure::with_class(e.class(), format!("{e} (gave up after {attempts} attempts)"))
    } else {
        e.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug)]
    struct E(ErrorClass);
    impl Classify for E {
        fn class(&self) -> ErrorClass {
            self.0
        }
    }
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0.as_str())
        }
    }

    const FAST: Backoff = Backoff { attempts: 3, first_delay: Duration::from_millis(1) };

    #[tokio::test]
    async fn transient_errors_are_retried_up_to_the_bound() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = FAST
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(E(ErrorClass::Transient))
            })
            .await;
        assert_eq!(r.unwrap_err().1, 3);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = FAST
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(E(ErrorClass::Permanent))
            })
            .await;
        assert_eq!(r.unwrap_err().1, 1);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_later_success_ends_the_retries() {
        let calls = AtomicU32::new(0);
        let r = FAST
            .run(|| async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(E(ErrorClass::Transient)),
                    n => Ok(n),
                }
            })
            .await;
        assert_eq!(r.ok(), Some(1));
    }
}
