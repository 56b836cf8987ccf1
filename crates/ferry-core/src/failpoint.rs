//! Named points where tests make a run fail, to prove what a failure at that point leaves
//! behind. Points are armed per export name, so tests running in one process do not trip
//! each other. Unarmed points cost one uncontended lock.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::{ErrorClass, Failure};

static ARMED: Mutex<Option<HashSet<(String, String)>>> = Mutex::new(None);

/// Every point a run passes, in order.
pub const POINTS: &[&str] = &["upload:during", "upload:after", "publish:after"];

/// Makes `point` fail for the export named `export`, once.
pub fn arm(point: &str, export: &str) {
    assert!(POINTS.contains(&point), "unknown failpoint {point}");
    ARMED.lock().expect("failpoints").get_or_insert_with(HashSet::new).insert((point.to_owned(), export.to_owned()));
}

/// Called by the pipeline at `point`: an error if a test armed it.
pub fn hit(point: &str, export: &str) -> Result<(), Failure> {
    let mut armed = ARMED.lock().expect("failpoints");
    let fired = armed.as_mut().is_some_and(|s| s.remove(&(point.to_owned(), export.to_owned())));
    if fired {
        return Err(Failure::with_class(ErrorClass::Transient, format!("injected failure at {point}")));
    }
    Ok(())
}
