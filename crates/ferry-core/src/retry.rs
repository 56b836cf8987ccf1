//! One retry policy for every call to a server that may be repeated: exponential backoff with
//! full jitter, a bounded number of attempts and an overall deadline. Whether an error is worth
//! another attempt is its [`ErrorClass`]; a caller may also pass a server's `Retry-After`.
//!
//! Only calls that are idempotent, or made idempotent first (a request id, an insert id, a
//! page token), go through [`RetryPolicy::run`]: a retried call must not do its work twice.

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use tokio::time::Instant;

use crate::{Classify, ErrorClass};

/// How patiently a call is retried.
///
/// The wait before retry `n` (1-based) is drawn uniformly from `0..=min(max_delay, initial ×
/// multiplier^(n-1))` ("full jitter", so that many clients that failed together do not come
/// back together). Retrying stops after `max_attempts` attempts, or when the next wait would
/// end after `deadline` counted from the start of the first attempt, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The ceiling of the first wait. Default 500 ms.
    pub initial: Duration,
    /// The largest ceiling of any wait. Default 30 s.
    pub max_delay: Duration,
    /// How much the ceiling grows from one wait to the next; at least 1. Default 2.
    pub multiplier: u32,
    /// Attempts in total, the first included; at least 1. Default 8.
    pub max_attempts: u32,
    /// No retry starts later than this after the first attempt began. Default 120 s.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    /// 500 ms doubling up to 30 s, 8 attempts, 2 minutes: a call survives a server that is
    /// away for about a minute (a restart, a failover, a burst of 503s), and a run that cannot
    /// reach its server fails within minutes instead of hanging.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            multiplier: 2,
            max_attempts: 8,
            deadline: Duration::from_secs(120),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Stop: trying again gives the same answer, or could do the work twice.
    Stop,
    /// Try again after the policy's backoff.
    Retry,
    /// Try again, not before this long (a server's `Retry-After`); still within the deadline.
    RetryAfter(Duration),
}

impl From<ErrorClass> for Verdict {
    fn from(class: ErrorClass) -> Self {
        match class {
            ErrorClass::Transient => Verdict::Retry,
            ErrorClass::Permanent => Verdict::Stop,
        }
    }
}

/// Why [`RetryPolicy::run`] returned an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaveUpBecause {
    /// The error is not worth another attempt.
    NotRetryable,
    /// `max_attempts` attempts were made.
    Attempts,
    /// The next attempt would have started after the deadline.
    Deadline,
}

/// The last error of a call that did not succeed, with the number of attempts made.
#[derive(Debug)]
pub struct GaveUp<E> {
    /// The error of the last attempt.
    pub error: E,
    /// Attempts made, the first included.
    pub attempts: u32,
    /// Why no further attempt was made.
    pub because: GaveUpBecause,
}

impl<E> GaveUp<E> {
    /// The last error alone.
    pub fn into_inner(self) -> E {
        self.error
    }

    /// `(gave up after 3 attempts: …)` for a message, empty after a single attempt.
    pub fn context(&self) -> String {
        if self.attempts <= 1 {
            return String::new();
        }
        let why = match self.because {
            GaveUpBecause::NotRetryable => "the last error is not worth retrying",
            GaveUpBecause::Attempts => "no attempts left",
            GaveUpBecause::Deadline => "the retry deadline was reached",
        };
        format!(" (gave up after {} attempts: {why})", self.attempts)
    }
}

impl<E: fmt::Display> fmt::Display for GaveUp<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.error, self.context())
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for GaveUp<E> {}

impl<E: Classify> Classify for GaveUp<E> {
    fn class(&self) -> ErrorClass {
        self.error.class()
    }
}

impl RetryPolicy {
    /// A policy for tests: the given attempts and deadline, waits of at most a few milliseconds.
    pub fn fast(max_attempts: u32, deadline: Duration) -> Self {
        Self { initial: Duration::from_millis(1), max_delay: Duration::from_millis(4), multiplier: 2, max_attempts, deadline }
    }

    /// The ceiling of the wait before retry `retry` (1 for the first retry): `initial ×
    /// multiplier^(retry-1)`, at most `max_delay`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let mut d = self.initial;
        for _ in 1..retry {
            d = d.saturating_mul(self.multiplier.max(1));
            if d >= self.max_delay {
                break;
            }
        }
        d.min(self.max_delay)
    }

    /// The wait before retry `retry`: uniform in `0..=ceiling(retry)`.
    pub fn delay(&self, retry: u32) -> Duration {
        let ceiling = self.ceiling(retry);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(random_u64() % nanos.saturating_add(1))
    }

    /// Runs `op` until it succeeds or gives up, retrying errors whose class is transient.
    /// `what` names the call in the logs.
    pub async fn run<T, E, F, Fut>(&self, what: &str, op: F) -> Result<T, GaveUp<E>>
    where
        E: Classify + fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_with(what, op, |e: &E| Verdict::from(e.class())).await
    }

    /// Runs `op` until it succeeds or gives up; `verdict` decides after each failure.
    pub async fn run_with<T, E, F, Fut, V>(&self, what: &str, mut op: F, mut verdict: V) -> Result<T, GaveUp<E>>
    where
        E: fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        V: FnMut(&E) -> Verdict,
    {
        let start = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let error = match op().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let wait = match verdict(&error) {
                Verdict::Stop => return Err(GaveUp { error, attempts, because: GaveUpBecause::NotRetryable }),
                Verdict::Retry => self.delay(attempts),
                Verdict::RetryAfter(at_least) => at_least,
            };
            if attempts >= self.max_attempts.max(1) {
                return Err(GaveUp { error, attempts, because: GaveUpBecause::Attempts });
            }
            if start.elapsed() + wait > self.deadline {
                return Err(GaveUp { error, attempts, because: GaveUpBecause::Deadline });
            }
            tracing::warn!(call = what, attempt = attempts, error = %error, retry_in_ms = wait.as_millis() as u64, "call failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

/// A random number from the standard library's per-process random hash keys (no extra
/// dependency; good enough to spread out retries, not for anything secret).
fn random_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[derive(Debug, Clone, Copy, PartialEq)]
    struct E(ErrorClass);
    impl Classify for E {
        fn class(&self) -> ErrorClass {
            self.0
        }
    }
    impl fmt::Display for E {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{} failure", self.0.as_str())
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            multiplier: 2,
            max_attempts: 10,
            deadline: Duration::from_secs(3600),
        }
    }

    /// Runs `policy` over an operation that fails with `errors` in turn and then succeeds;
    /// returns the result and the (paused-clock) time of each attempt since the start.
    async fn drive(policy: RetryPolicy, errors: &[E]) -> (Result<u32, GaveUp<E>>, Vec<Duration>) {
        let start = Instant::now();
        let times = RefCell::new(Vec::new());
        let r = policy
            .run("test", || {
                let mut t = times.borrow_mut();
                t.push(start.elapsed());
                let n = t.len();
                async move {
                    match errors.get(n - 1) {
                        Some(e) => Err(*e),
                        None => Ok(n as u32),
                    }
                }
            })
            .await;
        (r, times.into_inner())
    }

    fn gaps(times: &[Duration]) -> Vec<Duration> {
        times.windows(2).map(|w| w[1] - w[0]).collect()
    }

    #[test]
    fn the_ceiling_grows_and_is_capped() {
        let p = policy();
        let ceilings: Vec<u64> = (1..=7).map(|n| p.ceiling(n).as_millis() as u64).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(RetryPolicy { multiplier: 0, ..p }.ceiling(5), Duration::from_millis(100));
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(1));
        let d = RetryPolicy::default();
        assert_eq!(
            (d.initial, d.max_delay, d.multiplier, d.max_attempts, d.deadline.as_secs()),
            (Duration::from_millis(500), Duration::from_secs(30), 2, 8, 120)
        );
    }

    #[test]
    fn jitter_stays_within_the_ceiling_and_spreads() {
        let p = policy();
        for retry in 1..=6 {
            let delays: Vec<Duration> = (0..500).map(|_| p.delay(retry)).collect();
            assert!(delays.iter().all(|d| *d <= p.ceiling(retry)), "retry {retry}: {delays:?}");
            let low = delays.iter().filter(|d| **d < p.ceiling(retry) / 2).count();
            // Uniform over the range: about half below the middle (500 draws; 150..350 is far
            // outside any plausible deviation).
            assert!((150..350).contains(&low), "retry {retry}: {low} of 500 below half the ceiling");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_with_growing_capped_waits() {
        let t = E(ErrorClass::Transient);
        let (r, times) = drive(policy(), &[t; 7]).await;
        assert_eq!(r.expect("succeeds on the 8th attempt"), 8);
        assert_eq!(times.len(), 8);
        for (i, gap) in gaps(&times).iter().enumerate() {
            let ceiling = policy().ceiling(i as u32 + 1);
            assert!(*gap <= ceiling, "wait {i} was {gap:?}, above {ceiling:?}");
        }
        // The sum of the seven waits is at most 100+200+400+800+1000+1000+1000 ms.
        assert!(times[7] <= Duration::from_millis(4500), "{times:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_waits_are_actually_taken_and_grow() {
        // Over 100 runs of 7 retries, each wait averages half its ceiling: 50, 100, 200, 400,
        // 500, 500, 500 ms.
        let mut sums = [Duration::ZERO; 7];
        for _ in 0..100 {
            let (r, times) = drive(policy(), &[E(ErrorClass::Transient); 7]).await;
            assert!(r.is_ok());
            for (sum, gap) in sums.iter_mut().zip(gaps(&times)) {
                *sum += gap;
            }
        }
        let means: Vec<u64> = sums.iter().map(|s| s.as_millis() as u64 / 100).collect();
        for (mean, expected) in means.iter().zip([50, 100, 200, 400, 500, 500, 500]) {
            assert!((expected * 7 / 10..=expected * 13 / 10).contains(mean), "mean waits {means:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_bounded_and_the_last_error_is_returned_with_their_number() {
        let p = RetryPolicy { max_attempts: 4, ..policy() };
        let (r, times) = drive(p, &[E(ErrorClass::Transient); 10]).await;
        let e = r.expect_err("gives up");
        assert_eq!((e.attempts, e.because, times.len()), (4, GaveUpBecause::Attempts, 4));
        assert_eq!(e.to_string(), "transient failure (gave up after 4 attempts: no attempts left)");
        assert_eq!(e.class(), ErrorClass::Transient);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_stops_retries() {
        // Waits of exactly 1 s (a ceiling of 1 s and Retry-After 1 s), deadline 3.5 s: attempts at 0, 1, 2, 3 s.
        let p = RetryPolicy { deadline: Duration::from_millis(3500), ..policy() };
        let start = Instant::now();
        let mut attempts = 0;
        let r: Result<(), _> = p
            .run_with(
                "test",
                || {
                    attempts += 1;
                    async { Err(E(ErrorClass::Transient)) }
                },
                |_| Verdict::RetryAfter(Duration::from_secs(1)),
            )
            .await;
        let e = r.expect_err("gives up");
        assert_eq!((e.attempts, e.because), (4, GaveUpBecause::Deadline));
        assert_eq!(attempts, 4);
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        assert_eq!(e.to_string(), "transient failure (gave up after 4 attempts: the retry deadline was reached)");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_attempt_counts_against_the_deadline() {
        let p = RetryPolicy { deadline: Duration::from_secs(10), ..policy() };
        let mut attempts = 0;
        let r: Result<(), _> = p
            .run("test", || {
                attempts += 1;
                async {
                    tokio::time::sleep(Duration::from_secs(6)).await;
                    Err(E(ErrorClass::Transient))
                }
            })
            .await;
        assert_eq!(r.expect_err("gives up").because, GaveUpBecause::Deadline);
        assert_eq!(attempts, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let (r, times) = drive(policy(), &[E(ErrorClass::Transient), E(ErrorClass::Permanent)]).await;
        let e = r.expect_err("permanent");
        assert_eq!((e.error, e.attempts, e.because), (E(ErrorClass::Permanent), 2, GaveUpBecause::NotRetryable));
        assert_eq!(times.len(), 2);
        let (r, times) = drive(policy(), &[E(ErrorClass::Permanent)]).await;
        let e = r.expect_err("permanent");
        assert_eq!((e.attempts, times.len()), (1, 1));
        // A single attempt adds nothing to the message.
        assert_eq!(e.to_string(), "permanent failure");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured() {
        let start = Instant::now();
        let mut attempts = 0;
        let r = policy()
            .run_with(
                "test",
                || {
                    attempts += 1;
                    let n = attempts;
                    async move {
                        if n < 3 {
                            Err(E(ErrorClass::Transient))
                        } else {
                            Ok(n)
                        }
                    }
                },
                |_| Verdict::RetryAfter(Duration::from_secs(7)),
            )
            .await;
        assert_eq!(r.expect("third attempt"), 3);
        assert_eq!(start.elapsed(), Duration::from_secs(14));
    }
}
