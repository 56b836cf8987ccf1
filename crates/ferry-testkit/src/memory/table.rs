//! A table in memory, keeping the [`TableSink`] contract: loads are invisible until they
//! commit, and commit all at once; committed load ids are remembered.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::RecordBatch;
use async_trait::async_trait;
use ferry_core::cursor::CursorValue;
use ferry_core::rows::SchemaRef;
use ferry_core::{Failure, TableLoad, TableSink};

use crate::faults::Faults;

#[derive(Debug, Default)]
struct Shared {
    /// The first column of every committed row, in commit order.
    rows: Vec<i64>,
    /// Hourly loads: the rows of each hour (by its canonical start), replaced as a whole.
    hours: BTreeMap<String, Vec<i64>>,
    committed: BTreeSet<String>,
}

/// A table whose rows are the first (INT64) column of what is loaded. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct MemoryTable {
    shared: Arc<Mutex<Shared>>,
    faults: Faults,
}

impl MemoryTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same table, consulting `faults` at every call.
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// The committed rows' first column, in commit order.
    pub fn rows(&self) -> Vec<i64> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner()).rows.clone()
    }

    /// Hourly loads: each hour's rows (first column), by the hour's canonical start.
    pub fn hours(&self) -> BTreeMap<String, Vec<i64>> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner()).hours.clone()
    }
}

#[async_trait]
impl TableSink for MemoryTable {
    async fn begin(&self, load_id: &str, _schema: SchemaRef) -> Result<Box<dyn TableLoad>, Failure> {
        let pass = self.faults.enter("table.begin", load_id).await?;
        pass.reply(Ok(()))?;
        Ok(Box::new(Load { table: self.clone(), id: load_id.to_owned(), rows: Vec::new(), hour: None }))
    }

    async fn begin_hour(&self, load_id: &str, _schema: SchemaRef, hour: &CursorValue) -> Result<Box<dyn TableLoad>, Failure> {
        let pass = self.faults.enter("table.begin", load_id).await?;
        pass.reply(Ok(()))?;
        Ok(Box::new(Load { table: self.clone(), id: load_id.to_owned(), rows: Vec::new(), hour: Some(hour.canonical()) }))
    }

    async fn committed(&self, load_id: &str) -> Result<bool, Failure> {
        let pass = self.faults.enter("table.committed", load_id).await?;
        let done = self.shared.lock().unwrap_or_else(|e| e.into_inner()).committed.contains(load_id);
        pass.reply(Ok(done))
    }

    fn describe(&self) -> String {
        "memory://table".into()
    }
}

struct Load {
    table: MemoryTable,
    id: String,
    rows: Vec<i64>,
    /// An hourly load's hour: the commit replaces its rows and answers how many it holds.
    hour: Option<String>,
}

#[async_trait]
impl TableLoad for Load {
    async fn write(&mut self, batch: &RecordBatch) -> Result<(), Failure> {
        let pass = self.table.faults.enter("table.write", &self.id).await?;
        self.rows.extend(batch.column(0).as_primitive::<Int64Type>().values().iter().copied());
        pass.reply(Ok(()))
    }

    async fn commit(self: Box<Self>) -> Result<u64, Failure> {
        let pass = self.table.faults.enter("table.commit", &self.id).await?;
        let n = {
            let mut t = self.table.shared.lock().unwrap_or_else(|e| e.into_inner());
            let first = t.committed.insert(self.id.clone());
            match &self.hour {
                Some(hour) => {
                    if first {
                        t.hours.insert(hour.clone(), self.rows.clone());
                    }
                    t.hours.get(hour).map_or(0, Vec::len) as u64
                }
                None => {
                    if first {
                        t.rows.extend(&self.rows);
                    }
                    self.rows.len() as u64
                }
            }
        };
        pass.reply(Ok(n))
    }

    async fn abort(self: Box<Self>) {}
}
