//! Fault injection for the in-memory backends, and a log of the calls they served.
//!
//! A test arms a [`Rule`] on a [`Faults`] handle; the backend consults the handle at every
//! call, at a named point. Share one handle between a [`MemorySink`](crate::memory::MemorySink)
//! and a [`MemoryStateStore`](crate::memory::MemoryStateStore) to see their calls interleaved in
//! one log.
//!
//! Points, and the detail string a rule's predicate sees:
//!
//! | point              | detail                 | effect                                      |
//! |--------------------|------------------------|---------------------------------------------|
//! | `sink.begin`       | file name              | the temporary file is created               |
//! | `sink.stat`        | file name              | none                                        |
//! | `sink.publish`     | file name              | a temporary file is published               |
//! | `sink.leftovers`   | empty                  | none                                        |
//! | `sink.remove`      | file name              | the file is removed                         |
//! | `upload.write`     | file name              | the chunk is appended to the temporary file |
//! | `upload.seal`      | file name              | the temporary file is closed and verified   |
//! | `upload.commit`    | file name              | the file is published under its final name  |
//! | `upload.abort`     | file name              | the temporary file is removed               |
//! | `state.ensure`     | empty                  | none                                        |
//! | `state.watermark`  | export                 | none                                        |
//! | `state.arrival_mark` | export               | none                                        |
//! | `state.pending`    | export                 | none                                        |
//! | `state.append`     | status, e.g. `SUCCESS` | the record is appended                      |
//! | `state.history`    | export, or empty       | none                                        |
//! | `state.by_message` | export                 | none                                        |
//! | `state.acquire`    | holder                 | the lease is taken (or found held)          |
//! | `state.renew`      | holder                 | the lease is extended                       |
//! | `state.release`    | holder                 | the lease is given up                       |
//! | `state.lease`      | export                 | none                                        |
//! | `table.begin`      | load id                | the load is opened                          |
//! | `table.write`      | load id                | the rows are added to the load              |
//! | `table.commit`     | load id                | the load's rows become visible at once      |
//! | `table.committed`  | load id                | none                                        |
//! | `dispatch.start`   | export                 | an execution is started                     |
//! | `staging.list`     | prefix                 | none                                        |
//! | `staging.open`     | object name            | none                                        |
//! | `staging.delete`   | object name            | the object is deleted                       |
//! | `staged.export`    | URI                    | the window's files are written              |
//!
//! After an injected error a backend is left as its contract says a real error leaves it: an
//! upload whose write or seal fails has removed its temporary file; a failed commit or publish
//! leaves it (after a lost reply the file is published all the same, and the caller is told
//! the outcome is unknown). Two cases leave debris, as real servers do: a lost
//! `sink.begin` reply leaves a temporary file no upload owns, and [`Fault::ErrorBefore`] at
//! `upload.abort` stands for a removal that failed, leaving the temporary file.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_core::{Classify, ErrorClass, Failure};

/// Every point a backend consults, in the order of the table above.
pub const POINTS: &[&str] = &[
    "sink.begin",
    "sink.stat",
    "sink.publish",
    "sink.leftovers",
    "sink.remove",
    "upload.write",
    "upload.seal",
    "upload.commit",
    "upload.abort",
    "state.ensure",
    "state.watermark",
    "state.arrival_mark",
    "state.pending",
    "state.append",
    "state.history",
    "state.by_message",
    "state.acquire",
    "state.renew",
    "state.release",
    "state.lease",
    "table.begin",
    "table.write",
    "table.commit",
    "table.committed",
    "source.delete",
    "dispatch.start",
    "staging.list",
    "staging.open",
    "staging.delete",
    "staged.export",
];

/// What happens at an armed point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call fails before it has any effect: the caller sees a transient error and nothing
    /// changed (the request never reached the server).
    ErrorBefore,
    /// The call takes effect, then the caller sees a transient error anyway: the reply was lost.
    /// A call whose effect itself fails returns that error instead.
    ErrorAfter,
    /// The call never returns and has no effect (a server that stopped answering). Only the
    /// caller's own timeout, or dropping the future, ends it.
    Hang,
    /// The call waits this long before it proceeds normally (a slow server).
    Delay(Duration),
    /// The call proceeds normally; with [`Rule::then`], something else happens at that moment.
    Proceed,
}

/// Decides from a call's detail whether a rule applies to it.
type Predicate = Arc<dyn Fn(&str) -> bool + Send + Sync>;
type Hook = Arc<dyn Fn() + Send + Sync>;

/// One armed fault: where, when, and what.
#[derive(Clone)]
pub struct Rule {
    point: &'static str,
    fault: Fault,
    when: Option<Predicate>,
    skip: u32,
    always: bool,
    then: Option<Hook>,
}

impl Rule {
    /// `fault` at the next call of `point`. Panics on a point not in [`POINTS`].
    pub fn at(point: &str, fault: Fault) -> Self {
        let point = POINTS.iter().copied().find(|p| *p == point).unwrap_or_else(|| panic!("unknown fault point {point:?}"));
        Self { point, fault, when: None, skip: 0, always: false, then: None }
    }

    /// Only calls whose detail (see the module table) satisfies `pred` match.
    pub fn when(mut self, pred: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        self.when = Some(Arc::new(pred));
        self
    }

    /// Fires at the `n`-th matching call after arming (1 is the next one).
    pub fn nth(mut self, n: u32) -> Self {
        assert!(n >= 1, "calls are counted from 1");
        self.skip = n - 1;
        self
    }

    /// Runs `hook` when the rule fires, before the fault takes effect: another process acting
    /// at exactly that moment (e.g. taking a lease away).
    pub fn then(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.then = Some(Arc::new(hook));
        self
    }

    /// Keeps firing at every matching call from then on, instead of once.
    pub fn always(mut self) -> Self {
        self.always = true;
        self
    }

    fn matches(&self, point: &str, detail: &str) -> bool {
        self.point == point && self.when.as_ref().is_none_or(|pred| pred(detail))
    }
}

/// One call a backend served, as the log has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub point: &'static str,
    pub detail: String,
    /// The fault injected into this call, if any.
    pub fault: Option<Fault>,
}

/// An injected failure. Always [`ErrorClass::Transient`]: it stands for the network or a server
/// hiccup, which a retry may get past.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("injected fault at {point} ({detail}): failed before taking effect")]
    Before { point: &'static str, detail: String },
    #[error("injected fault at {point} ({detail}): took effect, but the reply was lost")]
    After { point: &'static str, detail: String },
}

impl Classify for FaultError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Transient
    }
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    log: Vec<Call>,
}

/// The armed rules and the call log. Clones share both.
#[derive(Clone, Default)]
pub struct Faults {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("Faults").field("armed", &s.rules.len()).field("calls", &s.log.len()).finish()
    }
}

impl Faults {
    /// No rules, an empty log.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Arms `rule`. When several rules match a call, each counts it towards its `nth`, and the
    /// first armed one that is due fires.
    pub fn arm(&self, rule: Rule) {
        self.lock().rules.push(rule);
    }

    /// Removes every armed rule; the log stays.
    pub fn disarm(&self) {
        self.lock().rules.clear();
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().log.clone()
    }

    /// The points of every call so far, in order.
    pub fn points(&self) -> Vec<&'static str> {
        self.lock().log.iter().map(|c| c.point).collect()
    }

    /// How many calls reached `point`.
    pub fn count(&self, point: &str) -> usize {
        self.lock().log.iter().filter(|c| c.point == point).count()
    }

    /// Called by a backend at the start of a call: logs it, then applies a fault that is due.
    /// `Err` means fail now, before any effect. Otherwise the backend does the call's work and
    /// passes its result through [`Pass::reply`].
    pub async fn enter(&self, point: &'static str, detail: &str) -> Result<Pass, Failure> {
        debug_assert!(POINTS.contains(&point), "unknown fault point {point}");
        let fault = {
            let mut s = self.lock();
            let mut due = None;
            for (i, rule) in s.rules.iter_mut().enumerate() {
                if !rule.matches(point, detail) {
                    continue;
                }
                if rule.skip > 0 {
                    rule.skip -= 1;
                    continue;
                }
                due = Some((i, rule.fault, rule.always, rule.then.clone()));
                break;
            }
            if let Some((i, _, false, _)) = due {
                s.rules.remove(i);
            }
            let fault = due.as_ref().map(|d| d.1);
            s.log.push(Call { point, detail: detail.to_owned(), fault });
            (fault, due.and_then(|d| d.3))
        };
        let (fault, hook) = fault;
        if let Some(hook) = hook {
            hook();
        }
        let detail = detail.to_owned();
        match fault {
            None | Some(Fault::Proceed) => Ok(Pass { lost: None }),
            Some(Fault::ErrorBefore) => Err(FaultError::Before { point, detail }.into()),
            Some(Fault::ErrorAfter) => Ok(Pass { lost: Some(FaultError::After { point, detail }) }),
            Some(Fault::Hang) => std::future::pending().await,
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                Ok(Pass { lost: None })
            }
        }
    }
}

/// Permission to proceed with a call; carries a reply to lose, if one is armed.
#[must_use = "pass the call's result through Pass::reply"]
#[derive(Debug)]
pub struct Pass {
    lost: Option<FaultError>,
}

impl Pass {
    /// Whether the reply to this call will be lost (the caller will see an error).
    pub fn loses_reply(&self) -> bool {
        self.lost.is_some()
    }

    /// The result the caller sees: `result`, unless it succeeded and the reply is lost.
    pub fn reply<T>(self, result: Result<T, Failure>) -> Result<T, Failure> {
        match (result, self.lost) {
            (Ok(_), Some(lost)) => Err(lost.into()),
            (result, _) => result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_rule_fires_once_at_the_nth_matching_call_and_everything_is_logged() {
        let f = Faults::new();
        f.arm(Rule::at("state.append", Fault::ErrorBefore).when(|s| s == "SUCCESS").nth(2));
        for status in ["SUCCESS", "PENDING", "SUCCESS", "SUCCESS"] {
            let r = f.enter("state.append", status).await;
            assert_eq!(r.is_err(), f.count("state.append") == 3, "{status}");
        }
        let fired: Vec<_> = f.calls().iter().map(|c| c.fault).collect();
        assert_eq!(fired, [None, None, Some(Fault::ErrorBefore), None]);
        assert_eq!(f.points(), ["state.append"; 4]);
    }

    #[tokio::test]
    async fn error_after_loses_only_a_successful_reply_and_errors_are_transient() {
        let f = Faults::new();
        f.arm(Rule::at("upload.commit", Fault::ErrorAfter).always());
        let pass = f.enter("upload.commit", "a.csv").await.expect("proceeds");
        assert!(pass.loses_reply());
        let err = pass.reply(Ok(())).expect_err("reply lost");
        assert_eq!(err.class(), ErrorClass::Transient);
        assert!(err.to_string().contains("upload.commit (a.csv)"), "{err}");
        let real = Failure::with_class(ErrorClass::Permanent, "exists");
        let err = f.enter("upload.commit", "a.csv").await.expect("proceeds").reply::<()>(Err(real)).expect_err("real error");
        assert_eq!(err.class(), ErrorClass::Permanent, "the effect's own error wins");
    }

    #[tokio::test]
    async fn hang_never_returns_and_delay_returns_late() {
        let f = Faults::new();
        f.arm(Rule::at("sink.stat", Fault::Hang));
        let hung = tokio::time::timeout(Duration::from_millis(50), f.enter("sink.stat", "x")).await;
        assert!(hung.is_err(), "still hanging");
        f.arm(Rule::at("sink.stat", Fault::Delay(Duration::from_millis(30))));
        let start = std::time::Instant::now();
        assert!(!f.enter("sink.stat", "x").await.expect("delayed, then fine").loses_reply());
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    #[should_panic(expected = "unknown fault point")]
    fn a_misspelt_point_is_refused() {
        let _ = Rule::at("state.apend", Fault::Hang);
    }
}
