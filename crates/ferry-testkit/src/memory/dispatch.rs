//! A [`Dispatcher`] that records the executions it starts instead of starting them; tests run
//! each one with a [`Runner`](ferry_core::run::Runner), as Cloud Run would run `ferry run`.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ferry_core::{Dispatcher, Failure};

use crate::faults::Faults;

/// An execution's name and the arguments it was started with.
pub type Started = (String, Vec<String>);

/// Starts nothing; remembers each execution's name and arguments.
#[derive(Clone, Default)]
pub struct MemoryDispatcher {
    started: Arc<Mutex<Vec<Started>>>,
    faults: Faults,
}

impl MemoryDispatcher {
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `faults` (point `dispatch.start`, detail: the export of `--export=`).
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Every execution started, in order: `(name, args)`.
    pub fn started(&self) -> Vec<Started> {
        self.started.lock().expect("lock").clone()
    }
}

#[async_trait]
impl Dispatcher for MemoryDispatcher {
    async fn start(&self, args: &[String]) -> Result<String, Failure> {
        let export = args.iter().find_map(|a| a.strip_prefix("--export=")).unwrap_or_default().to_owned();
        let pass = self.faults.enter("dispatch.start", &export).await?;
        let mut started = self.started.lock().expect("lock");
        let name = format!("projects/memory/locations/here/jobs/ferry-run/executions/ferry-run-{}", started.len() + 1);
        started.push((name.clone(), args.to_vec()));
        drop(started);
        pass.reply(Ok(name))
    }
}
