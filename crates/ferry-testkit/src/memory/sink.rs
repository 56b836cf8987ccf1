//! [`MemorySink`]: a destination directory in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ferry_core::{Failure, Leftover, PublishError, Published, PutMode, Sink, Upload, TEMP_SUFFIX};

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
    /// When each entry was last written.
    modified: BTreeMap<String, DateTime<Utc>>,
    temps: BTreeSet<String>,
    taken: Vec<(String, Vec<u8>)>,
}

impl Dir {
    fn put(&mut self, name: &str, bytes: Vec<u8>) {
        self.entries.insert(name.to_owned(), bytes);
        self.modified.insert(name.to_owned(), Utc::now());
    }

    fn delete(&mut self, name: &str) -> Option<Vec<u8>> {
        self.temps.remove(name);
        self.modified.remove(name);
        self.entries.remove(name)
    }
}

struct Shared {
    /// The directory's path, as [`Published::path`] and errors give it.
    path: String,
    dir: Mutex<Dir>,
    taker: Mutex<Option<Taker>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Dir> {
        self.dir.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path_of(&self, name: &str) -> String {
        format!("{}/{name}", self.path)
    }

    /// Renames `temp` to `name` under `mode`, handing it to the partner if it takes it.
    fn publish(&self, temp: &str, name: &str, mode: PutMode) -> Result<(), MemoryError> {
        let mut d = self.lock();
        if !d.temps.contains(temp) {
            return Err(MemoryError::Vanished { server: SERVER, path: self.path_of(temp) });
        }
        if mode == PutMode::Create && d.entries.contains_key(name) {
            return Err(MemoryError::Exists { server: SERVER, path: self.path_of(name) });
        }
        let bytes = d.delete(temp).unwrap_or_default();
        let taker = self.taker.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if taker.is_some_and(|take| take(name)) {
            d.delete(name);
            d.taken.push((name.to_owned(), bytes));
        } else {
            d.put(name, bytes);
        }
        Ok(())
    }
}

/// A [`Sink`] whose directory is a map in memory, keeping the Sink contract: bytes go to the
/// temporary name the caller chose, [`Upload::seal`] checks that it holds exactly the bytes
/// written, [`Upload::commit`] and [`Sink::publish`] publish it atomically under [`PutMode`], a
/// failed publish leaves the temporary file, and a failed, aborted or unsealed dropped upload
/// removes it.
///
/// Injected faults at `upload.commit` and `sink.publish` are outcomes the caller cannot read
/// ([`PublishError::Unknown`]): an error before the effect is a request that never arrived, an
/// error after it a lost reply. The server's own refusals (the name is taken under
/// [`PutMode::Create`], the temporary file is gone) are [`PublishError::NotPublished`].
///
/// Tests read the directory with [`MemorySink::files`] and [`MemorySink::temp_files`], arm
/// faults on [`MemorySink::faults`], age temporary files ([`MemorySink::backdate`]), and can
/// play a partner that takes files away as they arrive ([`MemorySink::partner_takes`]). Clones
/// share the directory.
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
        let shared = Shared { path: "/out".to_owned(), dir: Mutex::default(), taker: Mutex::default() };
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
        d.put(name, bytes.to_vec());
    }

    /// Removes any file, temporary or final, behind the sink's back.
    pub fn delete(&self, name: &str) {
        self.shared.lock().delete(name);
    }

    /// Makes every file in the directory look `by` older.
    pub fn backdate(&self, by: std::time::Duration) {
        let by = chrono::Duration::from_std(by).expect("a duration");
        for t in self.shared.lock().modified.values_mut() {
            *t -= by;
        }
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
        let mut d = self.shared.lock();
        if d.entries.contains_key(name) {
            d.put(name, bytes.to_vec());
        }
    }
}

fn bare(name: &str) -> bool {
    !(name.is_empty() || name.contains('/') || name.contains('\0') || name == "." || name == "..")
}

/// A publish's result as the caller sees it: injected faults make the outcome unknown, the
/// directory's own refusals are definite.
fn outcome(pass: Result<crate::faults::Pass, Failure>, publish: impl FnOnce() -> Result<(), MemoryError>) -> Result<(), PublishError> {
    let pass = pass.map_err(PublishError::Unknown)?;
    let lost = pass.loses_reply();
    match publish() {
        Err(e) => Err(PublishError::NotPublished(e.into())),
        Ok(()) if lost => Err(PublishError::Unknown(pass.reply(Ok(())).expect_err("a lost reply"))),
        Ok(()) => Ok(()),
    }
}

#[async_trait]
impl Sink for MemorySink {
    async fn begin(&self, name: &str, temp: &str, mode: PutMode) -> Result<Box<dyn Upload>, Failure> {
        let pass = self.faults.enter("sink.begin", name).await?;
        for n in [name, temp] {
            if !bare(n) {
                return Err(MemoryError::BadName { name: n.to_owned() }.into());
            }
        }
        {
            let mut d = self.shared.lock();
            if d.entries.contains_key(temp) {
                return Err(MemoryError::Exists { server: SERVER, path: self.shared.path_of(temp) }.into());
            }
            d.put(temp, Vec::new());
            d.temps.insert(temp.to_owned());
        }
        // A lost reply leaves the temporary file behind with no upload to remove it.
        pass.reply(Ok(()))?;
        let upload = MemoryUpload {
            shared: self.shared.clone(),
            faults: self.faults.clone(),
            name: name.to_owned(),
            temp: temp.to_owned(),
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

    async fn publish(&self, temp: &str, name: &str, mode: PutMode) -> Result<(), PublishError> {
        if let Some(bad) = [temp, name].into_iter().find(|n| !bare(n)) {
            return Err(PublishError::NotPublished(MemoryError::BadName { name: bad.to_owned() }.into()));
        }
        let pass = self.faults.enter("sink.publish", name).await;
        outcome(pass, || self.shared.publish(temp, name, mode))
    }

    async fn leftovers(&self) -> Result<Vec<Leftover>, Failure> {
        let pass = self.faults.enter("sink.leftovers", "").await?;
        let d = self.shared.lock();
        let found = d
            .entries
            .iter()
            .filter(|(n, _)| n.ends_with(TEMP_SUFFIX))
            .map(|(n, b)| Leftover { name: n.clone(), bytes: b.len() as u64, modified: d.modified.get(n).copied() })
            .collect();
        pass.reply(Ok(found))
    }

    async fn remove(&self, name: &str) -> Result<(), Failure> {
        if !bare(name) {
            return Err(MemoryError::BadName { name: name.to_owned() }.into());
        }
        let pass = self.faults.enter("sink.remove", name).await?;
        self.shared.lock().delete(name);
        pass.reply(Ok(()))
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
        self.shared.lock().delete(&self.temp);
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
        d.modified.insert(self.temp.clone(), Utc::now());
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

    async fn commit(mut self: Box<Self>) -> Result<Published, PublishError> {
        let size = self.seal().await.map_err(PublishError::NotPublished)?;
        // From here the temporary file is the caller's, whatever happens.
        self.done = true;
        let pass = self.faults.enter("upload.commit", &self.name).await;
        outcome(pass, || self.shared.publish(&self.temp, &self.name, self.mode))?;
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
    /// sink removes it in the background, unless the upload was sealed (a record may name it).
    fn drop(&mut self) {
        if !self.done && self.sealed.is_none() {
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
        let mut up = sink.begin(name, &ferry_core::temp_name("e", name), PutMode::Create).await?;
        for c in chunks {
            up.write(c).await?;
        }
        up.commit().await.map_err(PublishError::into_failure)
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
        let Err(err) = sink.begin("a.csv", ".a.csv.t.ferry-tmp", PutMode::Create).await else { panic!("the reply is lost") };
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
    async fn a_lost_commit_reply_still_publishes_and_the_outcome_is_unknown() {
        let sink = MemorySink::new();
        sink.faults().arm(Rule::at("upload.commit", Fault::ErrorAfter).when(|name| name == "b.csv"));
        put(&sink, "a.csv", &[b"a"]).await.expect("not armed for a.csv");
        let mut up = sink.begin("b.csv", ".b.csv.t.ferry-tmp", PutMode::Create).await.expect("begin");
        up.write(b"b").await.expect("write");
        assert!(matches!(up.commit().await, Err(PublishError::Unknown(_))), "the reply is lost");
        assert_eq!(sink.files().keys().collect::<Vec<_>>(), ["a.csv", "b.csv"], "published all the same");
        assert!(sink.temp_files().is_empty());
    }

    #[tokio::test]
    async fn a_commit_that_fails_before_publishing_leaves_the_temporary_file() {
        let sink = MemorySink::new();
        sink.faults().arm(Rule::at("upload.commit", Fault::ErrorBefore));
        let mut up = sink.begin("a.csv", ".a.csv.t.ferry-tmp", PutMode::Create).await.expect("begin");
        up.write(b"a").await.expect("write");
        assert!(matches!(up.commit().await, Err(PublishError::Unknown(_))), "no answer: unknown");
        assert!(sink.files().is_empty());
        sink.publish(".a.csv.t.ferry-tmp", "a.csv", PutMode::Create).await.expect("published later");
        assert_eq!(sink.files()["a.csv"], b"a");
        assert!(sink.temp_files().is_empty());
    }

    #[tokio::test]
    async fn leftovers_age_and_go() {
        let sink = MemorySink::new();
        let mut up = sink.begin("a.csv", ".a.csv.t.ferry-tmp", PutMode::Create).await.expect("begin");
        up.write(b"abc").await.expect("write");
        up.seal().await.expect("seal");
        drop(up);
        sink.backdate(std::time::Duration::from_secs(60));
        let left = sink.leftovers().await.expect("leftovers");
        assert_eq!(left.len(), 1);
        assert_eq!((left[0].name.as_str(), left[0].bytes), (".a.csv.t.ferry-tmp", 3));
        assert!(left[0].modified.expect("mtime") < Utc::now() - chrono::Duration::seconds(59));
        sink.remove(".a.csv.t.ferry-tmp").await.expect("remove");
        sink.remove(".a.csv.t.ferry-tmp").await.expect("removing an absent file succeeds");
        assert!(sink.leftovers().await.expect("leftovers").is_empty());
    }

    #[tokio::test]
    async fn an_abort_whose_removal_fails_leaves_the_temporary_file() {
        let sink = MemorySink::new();
        sink.faults().arm(Rule::at("upload.abort", Fault::ErrorBefore));
        let mut up = sink.begin("a.csv", ".a.csv.t.ferry-tmp", PutMode::Create).await.expect("begin");
        up.write(b"partial").await.expect("write");
        up.abort().await;
        assert_eq!(sink.temp_files().into_values().collect::<Vec<_>>(), [b"partial".to_vec()]);
    }

    #[tokio::test]
    async fn a_hung_commit_publishes_nothing_and_leaves_the_sealed_file_when_dropped() {
        let sink = MemorySink::new();
        sink.faults().arm(Rule::at("upload.commit", Fault::Hang));
        let mut up = sink.begin("a.csv", ".a.csv.t.ferry-tmp", PutMode::Create).await.expect("begin");
        up.write(b"bytes").await.expect("write");
        let mut commit = up.commit();
        assert!(tokio::time::timeout(Duration::from_millis(50), &mut commit).await.is_err(), "hangs");
        assert!(sink.files().is_empty());
        drop(commit);
        assert_eq!(sink.temp_files().len(), 1, "a sealed upload's file stays for a record that may name it");
        let mut up = sink.begin("b.csv", ".b.csv.t.ferry-tmp", PutMode::Create).await.expect("begin");
        up.write(b"bytes").await.expect("write");
        drop(up);
        assert_eq!(sink.temp_files().len(), 1, "an unsealed upload's file goes when it is dropped");
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
        sink.delete("old.csv");
        put(&sink, "old.csv", &[b"new"]).await.expect("the name is free again");
        assert_eq!(sink.files()["old.csv"], b"new");
    }
}
