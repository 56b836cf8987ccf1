//! Named points where tests make a run fail (or stall), to prove what a failure at that point
//! leaves behind. Points are armed per export name, so tests running in one process do not
//! trip each other. Unarmed points cost one uncontended lock.
//!
//! Tests that run `ferry` as a separate process arm points with the `FERRY_FAILPOINTS`
//! environment variable, read once: `point@export` (fail once) or `point@export=sleep:MS`
//! (stall once), comma-separated.
//!
//! All of this exists only with the `failpoints` cargo feature, which the integration tests
//! enable. Without it (the release build, as deployed) `hit` does nothing and
//! `FERRY_FAILPOINTS` is never read.

use crate::Failure;

#[cfg(feature = "failpoints")]
pub use armed::{arm, arm_sleep, hit, CONNECT_POINTS, POINTS};

#[cfg(feature = "failpoints")]
mod armed {
    use std::collections::HashMap;
    use std::sync::{Mutex, Once};
    use std::time::Duration;

    use super::Failure;
    use crate::ErrorClass;

    /// What an armed point does when reached.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Action {
        Fail,
        Sleep(Duration),
    }

    static ARMED: Mutex<Option<HashMap<(String, String), Action>>> = Mutex::new(None);
    static FROM_ENV: Once = Once::new();

    /// Every point a run passes, in order.
    pub const POINTS: &[&str] = &[
        "upload:during",
        "upload:after",
        "lease:confirm",
        "publish:part",
        "publish:after",
        "dispatch:start",
        "dispatch:record",
        "load:batch",
        "load:commit",
    ];

    /// Points of a destination's connection (set-up, and a drop after a publish), armed by the
    /// server (`host:port`) instead of an export.
    pub const CONNECT_POINTS: &[&str] = &["sftp:authenticate", "sftp:subsystem", "sftp:drop-after-publish"];

    fn insert(point: &str, export: &str, action: Action) {
        assert!(POINTS.contains(&point) || CONNECT_POINTS.contains(&point), "unknown failpoint {point}");
        ARMED.lock().expect("failpoints").get_or_insert_with(HashMap::new).insert((point.to_owned(), export.to_owned()), action);
    }

    /// Makes `point` fail for the export named `export`, once.
    pub fn arm(point: &str, export: &str) {
        insert(point, export, Action::Fail);
    }

    /// Makes `point` wait `delay` for the export named `export`, once.
    pub fn arm_sleep(point: &str, export: &str, delay: Duration) {
        insert(point, export, Action::Sleep(delay));
    }

    fn load_env() {
        let Ok(spec) = std::env::var("FERRY_FAILPOINTS") else { return };
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (target, action) = item.split_once('=').unwrap_or((item, "fail"));
            let Some((point, export)) = target.split_once('@') else {
                tracing::error!(item, "FERRY_FAILPOINTS: expected point@export[=sleep:MS]");
                continue;
            };
            let action = match action.strip_prefix("sleep:").map(str::parse::<u64>) {
                Some(Ok(ms)) => Action::Sleep(Duration::from_millis(ms)),
                _ => Action::Fail,
            };
            if POINTS.contains(&point) || CONNECT_POINTS.contains(&point) {
                tracing::warn!(point, export, ?action, "failpoint armed from FERRY_FAILPOINTS");
                insert(point, export, action);
            }
        }
    }

    /// Called by the pipeline at `point`: an error or a stall if a test armed it.
    pub async fn hit(point: &str, export: &str) -> Result<(), Failure> {
        FROM_ENV.call_once(load_env);
        let action = ARMED.lock().expect("failpoints").as_mut().and_then(|s| s.remove(&(point.to_owned(), export.to_owned())));
        match action {
            None => Ok(()),
            Some(Action::Sleep(d)) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            Some(Action::Fail) => Err(Failure::with_class(ErrorClass::Transient, format!("injected failure at {point}"))),
        }
    }
}

/// Called by the pipeline at `point`: without the `failpoints` feature, nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub async fn hit(_point: &str, _export: &str) -> Result<(), Failure> {
    Ok(())
}
