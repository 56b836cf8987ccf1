//! Staged exports: a source that writes a window as files into a bucket itself (BigQuery's
//! `EXPORT DATA`), the [`Staging`] bucket those files are copied from, and the [`StagedSource`]
//! that writes them. The run copies each object to the sink through the same protocol as files
//! it encodes itself (temporary name, verify, publish every file of the run together).

use async_trait::async_trait;

use crate::config::ExportSpec;
use crate::roles::Window;
use crate::Failure;

/// One object of a staging bucket, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedObject {
    /// The full object name (`ferry/orders/20250108/<run id>/orders-20250108-1a2b3c4d5e6f-000000000000.csv.gz`).
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// The object's generation when it was listed: the version of its bytes. Reading or
    /// deleting pins it, so a replaced object is never mistaken for the one listed.
    pub generation: String,
    /// CRC32C of the bytes, as the store computed it (GCS: every object has one).
    pub crc32c: Option<u32>,
    /// MD5 of the bytes, base64, when the store has one (GCS: not for composite objects).
    pub md5: Option<String>,
}

impl StagedObject {
    /// The name after the last `/`: the file name it is delivered under by default.
    pub fn base_name(&self) -> &str {
        self.name.rsplit('/').next().unwrap_or(&self.name)
    }
}

/// A stream of an object's bytes.
#[async_trait]
pub trait ObjectReader: Send {
    /// The next chunk; `None` after the last byte.
    async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>, Failure>;
}

/// A bucket that staged sources write into and runs copy from.
///
/// Contract every implementation MUST keep:
/// - [`Staging::list`] returns every object whose name starts with the prefix, with the size,
///   generation and checksums the store holds now, ordered by name.
/// - [`Staging::open`] streams exactly the bytes of the listed generation, or fails: an object
///   replaced or deleted since it was listed is an error (naming the object), never another
///   version's bytes. The stream holds a bounded amount of data in memory whatever the size.
/// - [`Staging::delete`] removes the object only while it still has the listed generation;
///   deleting an object that is already gone succeeds.
/// - Errors name the bucket and object and never contain credentials.
#[async_trait]
pub trait Staging: Send + Sync {
    /// The objects under `prefix`, by name.
    async fn list(&self, prefix: &str) -> Result<Vec<StagedObject>, Failure>;
    /// The bytes of `object` at its listed generation.
    async fn open(&self, object: &StagedObject) -> Result<Box<dyn ObjectReader>, Failure>;
    /// Deletes `object` if it still has its listed generation.
    async fn delete(&self, object: &StagedObject) -> Result<(), Failure>;
    /// The bucket's name.
    fn bucket(&self) -> &str;
}

/// A source that writes a window as files itself.
///
/// Contract: [`StagedSource::export`] writes exactly the rows [`crate::Source::read`] of the same
/// export would return for `window` (the same bounds, parameters and NULL rules), as files whose
/// names are `uri` with its one `*` replaced by a file number, in the export's configured format,
/// and returns only once every file is complete. It writes nothing else.
#[async_trait]
pub trait StagedSource: Send + Sync {
    /// Writes the window's rows to `uri` (`gs://bucket/prefix/name-*.csv.gz`).
    async fn export(&self, export: &ExportSpec, window: &Window, run_date: &str, uri: &str) -> Result<(), Failure>;
    /// The statement [`StagedSource::export`] runs, for `ferry plan`.
    fn export_sql(&self, export: &ExportSpec, window: &Window, uri: &str) -> String;
}

/// `gs://bucket/name`.
pub fn gs_uri(bucket: &str, name: &str) -> String {
    format!("gs://{bucket}/{name}")
}

/// Splits `gs://bucket/prefix` into bucket and prefix; `None` when it is not a `gs://` URI
/// with a bucket name.
pub fn parse_gs_uri(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix("gs://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then_some((bucket, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        assert_eq!(parse_gs_uri("gs://b/p/20250108/"), Some(("b", "p/20250108/")));
        assert_eq!(parse_gs_uri("gs://b"), Some(("b", "")));
        assert_eq!(parse_gs_uri("gs:///x"), None);
        assert_eq!(parse_gs_uri("s3://b/x"), None);
        let o = StagedObject { name: "a/b/c.csv".into(), bytes: 1, generation: "1".into(), crc32c: None, md5: None };
        assert_eq!(o.base_name(), "c.csv");
    }
}
