//! In-memory backends for tests that need no server: a [`Sink`](ferry_core::Sink) and a
//! [`StateStore`](ferry_core::StateStore) that keep their role's full contract (the same
//! conformance suites run against them and against the real backends), a
//! [`TableSink`](ferry_core::TableSink), all taking [`Faults`](crate::faults::Faults) to fail,
//! lose a reply or hang at any call; and a [`Source`](ferry_core::Source) and a
//! [`Wiring`](ferry_core::run::Wiring) to run the whole skeleton on them.

mod dispatch;
mod sink;
mod source;
mod staging;
mod state;
mod table;
mod wiring;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use ferry_core::{Classify, ErrorClass};

pub use dispatch::MemoryDispatcher;
pub use sink::MemorySink;
pub use source::MemorySource;
pub use staging::{MemoryExporter, MemoryStaging};
pub use state::MemoryStateStore;
pub use table::MemoryTable;
pub use wiring::{memory_config, staged_config, MemoryWiring, StagedWiring};

/// Errors of the in-memory backends, worded like the real ones'.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemoryError {
    /// `PutMode::Create` and the final name exists.
    #[error("{server}: {path} already exists")]
    Exists { server: &'static str, path: String },
    /// A file name that is not a bare name.
    #[error("invalid file name {name:?}: must be a bare name without '/'")]
    BadName { name: String },
    /// The temporary file does not hold the bytes written.
    #[error("{server}: {path} holds {actual} bytes after upload, expected {expected}")]
    SizeMismatch { server: &'static str, path: String, expected: u64, actual: u64 },
    /// The temporary file was removed behind the upload's back.
    #[error("{server}: {path} vanished during the upload")]
    Vanished { server: &'static str, path: String },
}

impl Classify for MemoryError {
    fn class(&self) -> ErrorClass {
        match self {
            MemoryError::SizeMismatch { .. } | MemoryError::Vanished { .. } => ErrorClass::Transient,
            MemoryError::Exists { .. } | MemoryError::BadName { .. } => ErrorClass::Permanent,
        }
    }
}

/// The time as a [`MemoryStateStore`] or a [`MemorySource`] sees it: the real clock plus an
/// offset a test moves forward, so leases expire without waiting; or, once [`Clock::set`], a
/// fixed time that moves only when the test moves it. Waiting itself (`acquire`'s `wait`)
/// stays real. Clones share the offset.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset: Arc<Mutex<TimeDelta>>,
    pinned: Arc<Mutex<Option<DateTime<Utc>>>>,
}

impl Clock {
    /// Now, on this clock.
    pub fn now(&self) -> DateTime<Utc> {
        let base = (*self.pinned.lock().unwrap_or_else(|e| e.into_inner())).unwrap_or_else(Utc::now);
        base + *self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops this clock at `t`: it stays there until moved.
    pub fn set(&self, t: DateTime<Utc>) {
        *self.pinned.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
        *self.offset.lock().unwrap_or_else(|e| e.into_inner()) = TimeDelta::zero();
    }

    /// Moves this clock `d` forward.
    pub fn advance(&self, d: Duration) {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner()) += TimeDelta::from_std(d).expect("duration in range");
    }
}

#[cfg(test)]
mod conformance {
    mod sink {
        crate::sink_conformance!(async { crate::memory::MemorySink::new().fixture() });
    }

    mod state {
        crate::state_conformance!(async { crate::memory::MemoryStateStore::new() });
    }
}
