//! An in-memory staging bucket and a staged source that writes into it, for the run skeleton's
//! staged path: objects with generations and CRC32C, and an "EXPORT DATA" that writes a
//! window's rows as CSV files of a few rows each.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ferry_core::config::ExportSpec;
use ferry_core::{ErrorClass, Failure, ObjectReader, Source, StagedObject, StagedSource, Staging, Window};

use super::MemorySource;
use crate::faults::Faults;

/// Objects by name: (generation, bytes).
type Objects = BTreeMap<String, (u64, Vec<u8>)>;

/// A bucket in memory.
#[derive(Debug, Clone, Default)]
pub struct MemoryStaging {
    objects: Arc<Mutex<Objects>>,
    generation: Arc<Mutex<u64>>,
    faults: Faults,
}

impl MemoryStaging {
    pub fn new() -> Self {
        Self::default()
    }

    /// The same bucket, with faults at `staging.list`, `staging.open` and `staging.delete`.
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Writes (or replaces, with a new generation) an object.
    pub fn put(&self, name: &str, bytes: Vec<u8>) {
        let mut g = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        *g += 1;
        self.objects.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_owned(), (*g, bytes));
    }

    /// Object names.
    pub fn names(&self) -> Vec<String> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect()
    }

    fn meta(name: &str, generation: u64, bytes: &[u8]) -> StagedObject {
        StagedObject {
            name: name.to_owned(),
            bytes: bytes.len() as u64,
            generation: generation.to_string(),
            crc32c: Some(crc32c::crc32c(bytes)),
            md5: None,
        }
    }
}

/// An object's bytes, in chunks of at most 7 bytes so that copies take several writes.
struct Chunks {
    bytes: Vec<u8>,
    at: usize,
}

#[async_trait]
impl ObjectReader for Chunks {
    async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>, Failure> {
        if self.at >= self.bytes.len() {
            return Ok(None);
        }
        let end = (self.at + 7).min(self.bytes.len());
        let chunk = bytes::Bytes::copy_from_slice(&self.bytes[self.at..end]);
        self.at = end;
        Ok(Some(chunk))
    }
}

#[async_trait]
impl Staging for MemoryStaging {
    async fn list(&self, prefix: &str) -> Result<Vec<StagedObject>, Failure> {
        let pass = self.faults.enter("staging.list", prefix).await?;
        let listed = self
            .objects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(n, (g, b))| Self::meta(n, *g, b))
            .collect();
        pass.reply(Ok(listed))
    }

    async fn open(&self, object: &StagedObject) -> Result<Box<dyn ObjectReader>, Failure> {
        let pass = self.faults.enter("staging.open", &object.name).await?;
        let bytes = match self.objects.lock().unwrap_or_else(|e| e.into_inner()).get(&object.name) {
            Some((g, b)) if g.to_string() == object.generation => b.clone(),
            _ => {
                return Err(Failure::with_class(
                    ErrorClass::Transient,
                    format!("memory bucket: {} generation {} is gone", object.name, object.generation),
                ))
            }
        };
        pass.reply(Ok(Box::new(Chunks { bytes, at: 0 }) as Box<dyn ObjectReader>))
    }

    async fn delete(&self, object: &StagedObject) -> Result<(), Failure> {
        let pass = self.faults.enter("staging.delete", &object.name).await?;
        let mut objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        if objects.get(&object.name).is_some_and(|(g, _)| g.to_string() == object.generation) {
            objects.remove(&object.name);
        }
        drop(objects);
        pass.reply(Ok(()))
    }

    fn bucket(&self) -> &str {
        "memory"
    }
}

/// A staged source: writes the window's rows of a [`MemorySource`] into a [`MemoryStaging`]
/// as CSV files (`id,seq` header, CRLF lines) of at most `rows_per_file` rows, named by the
/// URI with `*` replaced by the file number, as EXPORT DATA names them.
#[derive(Debug, Clone)]
pub struct MemoryExporter {
    pub source: MemorySource,
    pub staging: MemoryStaging,
    pub rows_per_file: usize,
}

#[async_trait]
impl StagedSource for MemoryExporter {
    async fn export(&self, export: &ExportSpec, window: &Window, run_date: &str, uri: &str) -> Result<(), Failure> {
        let pass = self.staging.faults.enter("staged.export", uri).await?;
        let mut reader = self.source.read(export, window, run_date).await?;
        let mut ids = Vec::new();
        while let Some(batch) = reader.next_batch().await? {
            let col = batch.column(0).as_any().downcast_ref::<arrow_array::Int64Array>().expect("an INT64 id column");
            ids.extend(col.iter().flatten());
        }
        let name = uri.strip_prefix("gs://memory/").unwrap_or(uri);
        for (n, chunk) in ids.chunks(self.rows_per_file.max(1)).enumerate() {
            let mut text = String::from("id,seq\r\n");
            for id in chunk {
                text.push_str(&format!("{id},{id}\r\n"));
            }
            self.staging.put(&name.replace('*', &format!("{n:012}")), text.into_bytes());
        }
        pass.reply(Ok(()))
    }

    fn export_sql(&self, _export: &ExportSpec, window: &Window, uri: &str) -> String {
        format!("EXPORT {window} TO {uri}")
    }
}
