//! The Sink role: where encoded files are delivered.

use async_trait::async_trait;

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

/// A destination directory that files are delivered into.
///
/// Contract every implementation MUST keep:
/// - **No partial file is ever visible under a final name.** Bytes go to a temporary name in
///   the same directory; the final name appears only in [`Upload::commit`], after the
///   destination confirmed the temporary file holds exactly the bytes written.
/// - A failed or abandoned upload removes its temporary file (best effort; a failure to remove
///   is logged, never hidden behind a success).
/// - Names given to [`Sink::begin`] are bare file names; the sink never writes outside its
///   directory.
/// - Errors name the server and path and never contain credentials.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Starts an upload of `name` into the sink's directory.
    async fn begin(&self, name: &str, mode: PutMode) -> Result<Box<dyn Upload>, Failure>;

    /// Size of the file `name` in the sink's directory, `None` when there is none.
    async fn stat(&self, name: &str) -> Result<Option<u64>, Failure>;

    /// Human-readable destination, e.g. `sftp://host:22/path`, for logs and notifications.
    fn describe(&self) -> String;
}

/// One file being written. Finish with [`Upload::commit`] or [`Upload::abort`].
#[async_trait]
pub trait Upload: Send {
    /// Appends bytes to the temporary file.
    async fn write(&mut self, chunk: &[u8]) -> Result<(), Failure>;

    /// Closes the temporary file and verifies that the destination holds exactly the bytes
    /// written, without publishing anything; returns the size. After this only
    /// [`Upload::commit`] or [`Upload::abort`] may follow. On error the temporary file has been
    /// removed. Lets a caller verify every file of a set before it publishes any of them.
    async fn seal(&mut self) -> Result<u64, Failure>;

    /// Seals the upload unless [`Upload::seal`] already did, then publishes it under the final
    /// name. On error the temporary file has been removed.
    async fn commit(self: Box<Self>) -> Result<Published, Failure>;

    /// Discards the upload and removes the temporary file.
    async fn abort(self: Box<Self>);
}
