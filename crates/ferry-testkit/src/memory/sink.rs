//! [`MemorySink`]: a destination directory in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use ferry_core::{Failure, Published, PutMode, Sink, Upload};

use super::MemoryError;
use crate::conformance::sink::{Directory, SinkFixture};
use crate::faults::Faults;

/// The "server" errors name.
const SERVER: &str = "memory";

type Taker = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// What the directory holds. Temporary and final files share one namespace, as on a server.
#[derive(Default)]
struct Dir {
    entries: BTreeMap<String, Vec<u8>>,
    temps: BTreeSet<String>,
    taken: Vec<(String, Vec<u8>)>,
}

struct Shared {
    /// The directory's path, as [`Published::path`] and errors give it.
    path: String,
    dir: Mutex<Dir>,
    nonce: AtomicU64,
    taker: Mutex<Option<Taker>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Dir> {
        self.dir.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path_of(&self, name: &str) -> String {
        format!("{}/{name}", self.path)
    }
}

/// A [`Sink`] whose directory is a map in memory, keeping the Sink contract: bytes go to a
/// temporary name (`.<name>.<n>.ferry-tmp`), [`Upload::seal`] checks that it holds exactly the
/// bytes written, [`Upload::commit`] publishes it atomically under [`PutMode`], and a failed,
/// aborted or dropped upload removes its temporary file.
///
/// Tests read the directory with [`MemorySink::files`] and [`MemorySink::temp_files`], arm
/// faults on [`MemorySink::faults`], and can play a partner that takes files away as they
/// arrive ([`MemorySink::partner_takes`]). Clones share the directory.
#[derive(Clone)]
pub struct MemorySink {
    shared: Arc<Shared>,
    faults: Faults,
}

impl std::fmt::Debug for MemorySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemorySink").field("path", &self.shared.path).finish_non_exhaustive()
    }
}

impl Default for MemorySink {
    fn default() -> Self {
        Self::new()
    }
}

impl MemorySink {
    /// An empty directory, `/out` (described as `memory:///out`), with its own [`Faults`].
    pub fn new() -> Self {
        let shared = Shared { path: "/out".to_owned(), dir: Mutex::default(), nonce: AtomicU64::new(1), taker: Mutex::default() };
        Self { shared: Arc::new(shared), faults: Faults::new() }
    }

    /// Uses `faults` (e.g. one shared with a state store) instead of its own.
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// The rules this sink obeys and the log of its calls.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Files under their final names, with their bytes.
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        let d = self.shared.lock();
        d.entries.iter().filter(|(n, _)| !d.temps.contains(*n)).map(|(n, b)| (n.clone(), b.clone())).collect()
    }

    /// Temporary files of uploads in flight, or left behind, with their bytes.
    pub fn temp_files(&self) -> BTreeMap<String, Vec<u8>> {
        let d = self.shared.lock();
        d.temps.iter().filter_map(|n| Some((n.clone(), d.entries.get(n)?.clone()))).collect()
    }

    /// Puts a file under its final name directly, as if someone else had delivered it.
    pub fn insert(&self, name: &str, bytes: &[u8]) {
        let mut d = self.shared.lock();
        d.temps.remove(name);
        d.entries.insert(name.to_owned(), bytes.to_vec());
    }

    /// Removes any file, temporary or final, behind the sink's back.
    pub fn remove(&self, name: &str) {
        let mut d = self.shared.lock();
        d.temps.remove(name);
        d.entries.remove(name);
    }

    /// Plays a partner that picks up every published file whose name satisfies `pred` as soon
    /// as it arrives: the file disappears from the directory right after the commit (which
    /// still succeeds) and is listed by [`MemorySink::taken`].
    pub fn partner_takes(&self, pred: impl Fn(&str) -> bool + Send + Sync + 'static) {
        *self.shared.taker.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(pred));
    }

    /// Files the partner picked up, in order of arrival.
    pub fn taken(&self) -> Vec<(String, Vec<u8>)> {
        self.shared.lock().taken.clone()
    }

    /// This sink and its directory, for the conformance suite.
    pub fn fixture(&self) -> SinkFixture {
        SinkFixture { sink: Box::new(self.clone()), dir: Box::new(self.clone()) }
    }
}

impl Directory for MemorySink {
    fn names(&self) -> Vec<String> {
        self.shared.lock().entries.keys().cloned().collect()
    }

    fn read(&self, name: &str) -> Option<Vec<u8>> {
        self.shared.lock().entries.get(name).cloned()
    }

    fn replace(&self, name: &str, bytes: &[u8]) {
        if let Some(b) = self.shared.lock().entries.get_mut(name) {
            *b = bytes.to_vec();
        }
    }
}

fn bare(name: &str) -> bool {
    !(name.is_empty() || name.contains('/') || name == "." || name == "..")
}

#[async_trait]
impl Sink for MemorySink {
    async fn begin(&self, name: &str, mode: PutMode) -> Result<Box<dyn Upload>, Failure> {
        let pass = self.faults.enter("sink.begin", name).await?;
        if !bare(name) {
            return Err(MemoryError::BadName { name: name.to_owned() }.into());
        }
        let n = self.shared.nonce.fetch_add(1, Ordering::Relaxed);
        let temp = format!(".{name}.{n}.ferry-tmp");
        {
            let mut d = self.shared.lock();
            d.entries.insert(temp.clone(), Vec::new());
            d.temps.insert(temp.clone());
        }
        // A lost reply leaves the temporary file behind with no upload to remove it.
        pass.reply(Ok(()))?;
        let upload = MemoryUpload {
            shared: self.shared.clone(),
            faults: self.faults.clone(),
            name: name.to_owned(),
            temp,
            mode,
            written: 0,
            sealed: None,
            done: false,
        };
        Ok(Box::new(upload))
    }

    async fn stat(&self, name: &str) -> Result<Option<u64>, Failure> {
        let pass = self.faults.enter("sink.stat", name).await?;
        let size = self.shared.lock().entries.get(name).map(|b| b.len() as u64);
        pass.reply(Ok(size))
    }

    fn describe(&self) -> String {
        format!("{SERVER}://{}", self.shared.path)
    }
}

struct MemoryUpload {
    shared: Arc<Shared>,
    faults: Faults,
    name: String,
    temp: String,
    mode: PutMode,
    written: u64,
    /// The verified size, once sealed.
    sealed: Option<u64>,
    /// Committed, aborted or failed: the temporary file is no longer this upload's.
    done: bool,
}

impl MemoryUpload {
    fn remove_temp(&mut self) {
        self.done = true;
        let mut d = self.shared.lock();
        d.temps.remove(&self.temp);
        d.entries.remove(&self.temp);
    }

    /// `result`, after removing the temporary file if it is an error (the Upload contract).
    fn cleaned<T>(&mut self, result: Result<T, Failure>) -> Result<T, Failure> {
        if result.is_err() {
            self.remove_temp();
        }
        result
    }

    fn append(&mut self, chunk: &[u8]) -> Result<(), Failure> {
        let mut d = self.shared.lock();
        let Some(bytes) = d.entries.get_mut(&self.temp) else {
            let path = self.shared.path_of(&self.temp);
            return Err(MemoryError::Vanished { server: SERVER, path }.into());
        };
        bytes.extend_from_slice(chunk);
        self.written += chunk.len() as u64;
        Ok(())
    }

    fn verify(&mut self) -> Result<u64, Failure> {
        let path = self.shared.path_of(&self.temp);
        let Some(actual) = self.shared.lock().entries.get(&self.temp).map(|b| b.len() as u64) else {
            return Err(MemoryError::Vanished { server: SERVER, path }.into());
        };
        if actual != self.written {
            return Err(MemoryError::SizeMismatch { server: SERVER, path, expected: self.written, actual }.into());
        }
        self.sealed = Some(self.written);
        Ok(self.written)
    }

    fn publish(&mut self) -> Result<(), Failure> {
        let mut d = self.shared.lock();
        if self.mode == PutMode::Create && d.entries.contains_key(&self.name) {
            return Err(MemoryError::Exists { server: SERVER, path: self.shared.path_of(&self.name) }.into());
        }
        let Some(bytes) = d.entries.remove(&self.temp) else {
            return Err(MemoryError::Vanished { server: SERVER, path: self.shared.path_of(&self.temp) }.into());
        };
        d.temps.remove(&self.temp);
        self.done = true;
        let taker = self.shared.taker.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if taker.is_some_and(|take| take(&self.name)) {
            d.entries.remove(&self.name);
            d.taken.push((self.name.clone(), bytes));
        } else {
            d.entries.insert(self.name.clone(), bytes);
        }
        Ok(())
    }
}

#[async_trait]
impl Upload for MemoryUpload {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), Failure> {
        assert!(!self.done && self.sealed.is_none(), "write after seal or after a failed write");
        let pass = self.faults.enter("upload.write", &self.name).await;
        let pass = self.cleaned(pass)?;
        let result = self.append(chunk);
        let result = pass.reply(result);
        self.cleaned(result)
    }

    async fn seal(&mut self) -> Result<u64, Failure> {
        assert!(!self.done, "seal after the upload failed");
        if let Some(size) = self.sealed {
            return Ok(size);
        }
        let pass = self.faults.enter("upload.seal", &self.name).await;
        let pass = self.cleaned(pass)?;
        let result = self.verify();
        let result = pass.reply(result);
        self.cleaned(result)
    }

    async fn commit(mut self: Box<Self>) -> Result<Published, Failure> {
        let size = self.seal().await?;
        let pass = self.faults.enter("upload.commit", &self.name).await;
        let pass = self.cleaned(pass)?;
        let result = self.publish();
        let result = pass.reply(result);
        self.cleaned(result)?;
        Ok(Published { name: self.name.clone(), path: self.shared.path_of(&self.name), bytes: size })
    }

    /// An injected error before the effect leaves the temporary file behind (a removal that
    /// failed); abort has no error to report it with.
    async fn abort(mut self: Box<Self>) {
        match self.faults.enter("upload.abort", &self.name).await {
            Ok(_) => self.remove_temp(),
            Err(_) => self.done = true,
        }
    }
}

impl Drop for MemoryUpload {
    /// Dropped mid-upload (a panic or a cancelled task): the temporary file goes, as the real
    /// sink removes it in the background.
    fn drop(&mut self) {
        if !self.done {
            self.remove_temp();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ferry_core::ErrorClass;

    use super::*;
    use crate::faults::{Fault, Rule};

    async fn put(sink: &MemorySink, name: &str, chunks: &[&[u8]]) -> Result<Published, Failure> {
        let mut up = sink.begin(name, PutMode::Create).await?;
        for c in chunks {
            up.write(c).await?;
        }
        up.commit().await
    }

    #[tokio::test]
    async fn the_call_log_follows_an_upload() {
        let sink = MemorySink::new();
        put(&sink, "a.csv", &[b"1", b"2"]).await.expect("upload");
        sink.stat("a.csv").await.expect("stat");
        let points = sink.faults().points();
        assert_eq!(points, ["sink.begin", "upload.write", "upload.write", "upload.seal", "upload.commit", "sink.stat"]);
        assert!(sink.faults().calls().iter().all(|c| c.detail == "a.csv" && c.fault.is_none()));
    }

    #[tokio::test]
    async fn a_lost_begin_reply_leaves_an_orphaned_temporary_file() {
        let sink = MemorySink::new();
        sink.faults().arm(Rule::at("sink.begin", Fault::ErrorAfter));
        let Err(err) = sink.begin("a.csv", PutMode::Create).await else { panic!("the reply is lost") };
        assert_eq!(err.class(), ErrorClass::Transient);
        assert_eq!(sink.temp_files().len(), 1, "the server created it; nobody will remove it");
        assert!(sink.files().is_empty());
    }

    #[tokio::test]
    async fn a_write_that_fails_removes_the_temporary_file_and_nothing_is_published() {
        let sink = MemorySink::new();
        sink.faults().arm(Rule::at("upload.write", Fault::ErrorBefore).nth(2));
        let err = put(&sink, "a.csv", &[b"one", b"two"]).await.expect_err("second write fails");
        assert_eq!(err.class(), ErrorClass::Transient);
        assert!(sink.temp_files().is_empty() && sink.files().is_empty());
    }

    #[tokio::test]
    async fn a_lost_commit_reply_still_publishes() {
        let sink = MemorySink::new();
        sink.faults().arm(Rule::at("upload.commit", Fault::ErrorAfter).when(|name| name == "b.csv"));
        put(&sink, "a.csv", &[b"a"]).await.expect("not armed for a.csv");
        put(&sink, "b.csv", &[b"b"]).await.expect_err("the reply is lost");
        assert_eq!(sink.files().keys().collect::<Vec<_>>(), ["a.csv", "b.csv"], "published all the same");
        assert!(sink.temp_files().is_empty());
    }

    #[tokio::test]
    async fn a_commit_that_fails_before_publishing_leaves_nothing() {
        let sink = MemorySink::new();
        sink.faults().arm(Rule::at("upload.commit", Fault::ErrorBefore));
        put(&sink, "a.csv", &[b"a"]).await.expect_err("injected");
        assert!(sink.files().is_empty() && sink.temp_files().is_empty());
    }

    #[tokio::test]
    async fn an_abort_whose_removal_fails_leaves_the_temporary_file() {
        let sink = MemorySink::new();
        sink.faults().arm(Rule::at("upload.abort", Fault::ErrorBefore));
        let mut up = sink.begin("a.csv", PutMode::Create).await.expect("begin");
        up.write(b"partial").await.expect("write");
        up.abort().await;
        assert_eq!(sink.temp_files().into_values().collect::<Vec<_>>(), [b"partial".to_vec()]);
    }

    #[tokio::test]
    async fn a_hung_commit_publishes_nothing_and_dropping_it_removes_the_temporary_file() {
        let sink = MemorySink::new();
        sink.faults().arm(Rule::at("upload.commit", Fault::Hang));
        let mut up = sink.begin("a.csv", PutMode::Create).await.expect("begin");
        up.write(b"bytes").await.expect("write");
        let mut commit = up.commit();
        assert!(tokio::time::timeout(Duration::from_millis(50), &mut commit).await.is_err(), "hangs");
        assert!(sink.files().is_empty());
        assert_eq!(sink.temp_files().len(), 1, "the upload is still in flight");
        drop(commit);
        assert!(sink.temp_files().is_empty(), "a dropped upload removes its temporary file");
    }

    #[tokio::test]
    async fn a_partner_takes_files_as_they_arrive() {
        let sink = MemorySink::new();
        sink.partner_takes(|name| name.ends_with(".csv"));
        let published = put(&sink, "a.csv", &[b"rows"]).await.expect("commit succeeds");
        assert_eq!(published.bytes, 4);
        put(&sink, "a.done", &[]).await.expect("commit");
        assert_eq!(sink.stat("a.csv").await.expect("stat"), None, "gone on arrival");
        assert_eq!(sink.taken(), [("a.csv".to_owned(), b"rows".to_vec())]);
        assert_eq!(sink.files().keys().collect::<Vec<_>>(), ["a.done"]);
    }

    #[tokio::test]
    async fn insert_and_remove_change_the_directory_behind_the_sink() {
        let sink = MemorySink::new();
        sink.insert("old.csv", b"old");
        put(&sink, "old.csv", &[b"new"]).await.expect_err("create over an inserted file");
        sink.remove("old.csv");
        put(&sink, "old.csv", &[b"new"]).await.expect("the name is free again");
        assert_eq!(sink.files()["old.csv"], b"new");
    }
}
