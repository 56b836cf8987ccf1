//! The Sink role: where encoded files are delivered.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::Failure;

/// What publishing does when the final name is already taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Fail if a file already has the final name.
    Create,
    /// Replace an existing file under the final name atomically where the server allows it.
    Overwrite,
}

/// A file published under its final name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The final file name (no directory).
    pub name: String,
    /// The full path on the destination.
    pub path: String,
    /// Size in bytes, as the destination reported it after the upload.
    pub bytes: u64,
}

/// Why publishing a file failed, and what the caller may conclude about the final name.
#[derive(Debug)]
pub enum PublishError {
    /// The destination answered that it did not publish the file (the name was taken under
    /// [`PutMode::Create`], a permission was missing): the final name is unchanged and the
    /// temporary file is still there.
    NotPublished(Failure),
    /// No answer, or one that does not say (the connection dropped, the reply was lost): the
    /// file may have been published. The temporary file is left alone; only a later look at
    /// the directory can tell.
    Unknown(Failure),
}

impl PublishError {
    /// The failure, whatever the outcome.
    pub fn failure(&self) -> &Failure {
        match self {
            Self::NotPublished(f) | Self::Unknown(f) => f,
        }
    }

    /// The failure, whatever the outcome.
    pub fn into_failure(self) -> Failure {
        match self {
            Self::NotPublished(f) | Self::Unknown(f) => f,
        }
    }
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.failure().fmt(f)
    }
}

/// A temporary file found in a sink's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// Its bare name (see [`temp_name`]).
    pub name: String,
    pub bytes: u64,
    /// When it was last written, as the destination reports it.
    pub modified: Option<DateTime<Utc>>,
}

/// Suffix of every temporary file ferry writes.
pub const TEMP_SUFFIX: &str = ".ferry-tmp";

/// The temporary name for a file `name` of export `export`: `.<name>.<tag>-<nonce>.ferry-tmp`,
/// where `tag` is derived from the export's name, so a run can recognise its export's
/// leftovers among other exports' files in a shared directory ([`is_temp_of`]), and `nonce`
/// makes it unique.
///
/// The temporary name is at most [`TEMP_NAME_EXTRA`] bytes longer than `name`, and never
/// longer than 255 bytes: of a longer `name` it keeps only the first bytes (a file system's
/// name limit then still admits every final name up to 255 bytes).
pub fn temp_name(export: &str, name: &str) -> String {
    let nonce = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let mut keep = name.len().min(crate::config::limits::MAX_NAME_BYTES - TEMP_NAME_EXTRA);
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    format!(".{}.{}-{nonce}{TEMP_SUFFIX}", &name[..keep], export_tag(export))
}

/// How many bytes [`temp_name`] adds to a name: a dot, a dot, 8 + 1 + 12 characters of tag and
/// nonce, and [`TEMP_SUFFIX`].
pub const TEMP_NAME_EXTRA: usize = 2 + 8 + 1 + 12 + TEMP_SUFFIX.len();

/// Whether `file` is a temporary name [`temp_name`] made for `export`.
pub fn is_temp_of(export: &str, file: &str) -> bool {
    let Some(stem) = file.strip_suffix(TEMP_SUFFIX) else { return false };
    let Some((_, tail)) = stem.rsplit_once('.') else { return false };
    tail.split_once('-').is_some_and(|(tag, nonce)| tag == export_tag(export) && nonce.len() == 12)
}

/// Eight hex digits of the SHA-256 of the export's name.
fn export_tag(export: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(export.as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// A destination directory that files are delivered into.
///
/// Contract every implementation MUST keep:
/// - **No partial file is ever visible under a final name.** Bytes go to the temporary name
///   the caller chose, in the same directory; the final name appears only through
///   [`Upload::commit`] or [`Sink::publish`], after the destination confirmed the temporary file
///   holds exactly the bytes written.
/// - **A publish reports one of three outcomes**: done (`Ok`), definitely not done
///   ([`PublishError::NotPublished`]) or unknown ([`PublishError::Unknown`]). A sink never
///   reports "not done" for a request whose effect it cannot rule out.
/// - **A temporary file disappears only by being published or removed on request**: after a
///   failed publish, whatever the outcome, it is left for the caller to publish later or
///   remove, and so is the file of a sealed upload that is dropped (a record may name it).
///   Before sealing, a failed write or seal, an abort or dropping the upload removes it (best
///   effort; a failure to remove is logged), as does an abort after sealing.
/// - Names are bare file names; the sink never writes outside its directory.
/// - Errors name the server and path and never contain credentials.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Starts an upload of `name` into the sink's directory, writing to the temporary name
    /// `temp` (from [`temp_name`]) until it is published.
    async fn begin(&self, name: &str, temp: &str, mode: PutMode) -> Result<Box<dyn Upload>, Failure>;

    /// Size of the file `name` in the sink's directory, `None` when there is none.
    async fn stat(&self, name: &str) -> Result<Option<u64>, Failure>;

    /// Publishes the temporary file `temp`, written and verified earlier (perhaps by another
    /// process), under `name`, as [`Upload::commit`] does.
    async fn publish(&self, temp: &str, name: &str, mode: PutMode) -> Result<(), PublishError>;

    /// The temporary files (names ending in [`TEMP_SUFFIX`]) in the directory.
    async fn leftovers(&self) -> Result<Vec<Leftover>, Failure>;

    /// Removes the file `name`; removing a file that is not there succeeds.
    async fn remove(&self, name: &str) -> Result<(), Failure>;

    /// Human-readable destination, e.g. `sftp://host:22/path`, for logs and notifications.
    fn describe(&self) -> String;
}

/// One file being written. Finish with [`Upload::commit`] or [`Upload::abort`].
#[async_trait]
pub trait Upload: Send {
    /// Appends bytes to the temporary file. On error the temporary file has been removed.
    async fn write(&mut self, chunk: &[u8]) -> Result<(), Failure>;

    /// Closes the temporary file and verifies that the destination holds exactly the bytes
    /// written, without publishing anything; returns the size. After this only
    /// [`Upload::commit`] or [`Upload::abort`] may follow. On error the temporary file has been
    /// removed. Lets a caller verify every file of a set before it publishes any of them.
    async fn seal(&mut self) -> Result<u64, Failure>;

    /// Seals the upload unless [`Upload::seal`] already did (an error there removes the
    /// temporary file and is [`PublishError::NotPublished`]), then publishes it under the final
    /// name. A failed publish leaves the temporary file in place, whatever the outcome.
    async fn commit(self: Box<Self>) -> Result<Published, PublishError>;

    /// Discards the upload and removes the temporary file.
    async fn abort(self: Box<Self>);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_belong_to_their_export() {
        let t = temp_name("orders", "orders_001.csv");
        assert!(t.starts_with(".orders_001.csv.") && t.ends_with(TEMP_SUFFIX), "{t}");
        assert!(is_temp_of("orders", &t));
        assert!(!is_temp_of("orders_eu", &t));
        assert!(!is_temp_of("orders", "orders_001.csv"));
        assert!(!is_temp_of("orders", ".orders_001.csv.1.ferry-tmp"), "an older form of temporary name is not claimed");
        assert_ne!(temp_name("orders", "a.csv"), temp_name("orders", "a.csv"), "unique");
        assert_eq!(t.len(), ".orders_001.csv".len() + 1 + 21 + TEMP_SUFFIX.len());
        assert_eq!(TEMP_NAME_EXTRA, 33);
        for long in ["n".repeat(255), format!("{}.csv", "é".repeat(120))] {
            let t = temp_name("orders", &long);
            assert!(t.len() <= 255, "{} bytes", t.len());
            assert!(is_temp_of("orders", &t), "{t}");
        }
    }
}
