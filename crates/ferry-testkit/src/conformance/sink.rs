//! The [`Sink`] / [`Upload`](ferry_core::Upload) contract, case by case.
//!
//! Besides the trait, a case looks into the sink's directory through [`Directory`]: to read
//! what arrived, to see that no temporary file is left, and to tamper with a temporary file
//! the way another program could. A backend whose directory a test cannot look into cannot run
//! this suite; nothing is skipped.

use std::time::Duration;

use chrono::Utc;
use ferry_core::{temp_name, ErrorClass, PublishError, Published, PutMode, Sink, Upload, TEMP_SUFFIX};

use crate::TestDir;

/// The sink's directory as the test sees it, past the [`Sink`] trait.
pub trait Directory: Send + Sync {
    /// Every name in the directory, temporary files included, sorted.
    fn names(&self) -> Vec<String>;
    /// The bytes of the file `name`, `None` when there is none.
    fn read(&self, name: &str) -> Option<Vec<u8>>;
    /// Replaces the bytes of the existing file `name` behind the sink's back, as another
    /// program writing into the directory would.
    fn replace(&self, name: &str, bytes: &[u8]);
}

/// A sink on an empty directory, and a view of that directory.
pub struct SinkFixture {
    pub sink: Box<dyn Sink>,
    pub dir: Box<dyn Directory>,
}

/// The SFTP server's directory of one test, read from the local disk it shares with the server.
impl Directory for TestDir {
    fn names(&self) -> Vec<String> {
        TestDir::names(self)
    }

    fn read(&self, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.path.join(name)).ok()
    }

    /// Writes the new bytes aside and renames them over `name`: the server's open handle keeps
    /// the old file, so writes still in flight cannot undo the change.
    fn replace(&self, name: &str, bytes: &[u8]) {
        let aside = self.path.join(format!(".{name}.replaced"));
        std::fs::write(&aside, bytes).unwrap_or_else(|e| panic!("{}: {e}", aside.display()));
        std::fs::rename(&aside, self.path.join(name)).unwrap_or_else(|e| panic!("replacing {name}: {e}"));
    }
}

/// The export the suite's temporary names belong to.
const EXPORT: &str = "conformance";

/// Begins `name` under a fresh temporary name.
async fn begin(sink: &dyn Sink, name: &str, mode: PutMode) -> Box<dyn Upload> {
    sink.begin(name, &temp_name(EXPORT, name), mode).await.unwrap_or_else(|e| panic!("begin {name}: {e}"))
}

/// Begins, writes `chunks`, commits.
async fn put(sink: &dyn Sink, name: &str, mode: PutMode, chunks: &[&[u8]]) -> Result<Published, PublishError> {
    let mut up = begin(sink, name, mode).await;
    for chunk in chunks {
        up.write(chunk).await.unwrap_or_else(|e| panic!("write {name}: {e}"));
    }
    up.commit().await
}

/// Begins, writes `bytes`, seals and drops the upload, as a process that stopped after
/// sealing would: returns the temporary name it leaves.
async fn sealed_and_dropped(sink: &dyn Sink, name: &str, mode: PutMode, bytes: &[u8]) -> String {
    let temp = temp_name(EXPORT, name);
    let mut up = sink.begin(name, &temp, mode).await.unwrap_or_else(|e| panic!("begin {name}: {e}"));
    up.write(bytes).await.expect("write");
    assert_eq!(up.seal().await.expect("seal"), bytes.len() as u64);
    drop(up);
    temp
}

/// The names in the directory once they are `expected`, waiting up to ten seconds for work a
/// dropped upload does in the background.
async fn settles_to(dir: &dyn Directory, expected: &[String]) -> Vec<String> {
    for _ in 0..100 {
        if dir.names() == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    dir.names()
}

/// The one name in the directory, which must be a temporary file of an upload of `name`.
fn only_temp(dir: &dyn Directory, name: &str) -> String {
    let names = dir.names();
    assert_eq!(names.len(), 1, "an upload in flight has exactly one temporary file in the directory: {names:?}");
    assert_ne!(names[0], name, "the temporary file does not have the final name");
    names[0].clone()
}

/// A committed file holds exactly the bytes written, in order; `stat` reports its size, and
/// [`Published`] its name, path and size. Nothing else remains in the directory.
pub async fn commit_publishes_exactly_the_bytes_written(f: SinkFixture) {
    assert!(!f.sink.describe().is_empty(), "describe names the destination");
    assert_eq!(f.sink.stat("data.csv").await.expect("stat"), None, "stat of a missing file is None");
    let chunks: [&[u8]; 4] = [b"id,name\n", "1,\u{e9}t\u{e9}\n".as_bytes(), b"2,\0 binary\r\n", b"3,last line without newline"];
    let all = chunks.concat();

    let published = put(f.sink.as_ref(), "data.csv", PutMode::Create, &chunks).await.expect("upload");

    assert_eq!(published.name, "data.csv");
    assert!(published.path.ends_with("/data.csv"), "Published.path is the full path: {}", published.path);
    assert_eq!(published.bytes, all.len() as u64, "Published.bytes");
    assert_eq!(f.sink.stat("data.csv").await.expect("stat"), Some(all.len() as u64), "stat after commit");
    assert_eq!(f.dir.read("data.csv"), Some(all), "the bytes on the destination");
    assert_eq!(f.dir.names(), ["data.csv"], "only the final name remains");
}

/// Bytes go to a temporary name in the same directory; the final name does not exist while
/// writing, nor after a seal, and appears only at commit.
pub async fn nothing_is_visible_under_the_final_name_before_commit(f: SinkFixture) {
    let mut up = begin(f.sink.as_ref(), "late.csv", PutMode::Create).await;
    up.write(b"partial").await.expect("write");
    assert_eq!(f.sink.stat("late.csv").await.expect("stat"), None, "final name while writing");
    only_temp(f.dir.as_ref(), "late.csv");
    up.write(b" and the rest").await.expect("write");

    let size = up.seal().await.expect("seal");
    assert_eq!(size, 20, "seal returns the size written");
    assert_eq!(f.sink.stat("late.csv").await.expect("stat"), None, "final name after seal");
    assert_eq!(f.dir.read("late.csv"), None, "final name after seal");
    only_temp(f.dir.as_ref(), "late.csv");

    let published = up.commit().await.expect("commit");
    assert_eq!(published.bytes, size, "commit after seal publishes the sealed size");
    assert_eq!(f.dir.read("late.csv").as_deref(), Some(&b"partial and the rest"[..]));
    assert_eq!(f.dir.names(), ["late.csv"], "only the final name remains");
}

/// Abort removes the temporary file, whether the upload was written to, sealed, or neither;
/// nothing is published.
pub async fn abort_removes_the_temporary_file(f: SinkFixture) {
    let mut up = begin(f.sink.as_ref(), "written.csv", PutMode::Create).await;
    up.write(b"some bytes").await.expect("write");
    up.abort().await;
    assert_eq!(f.dir.names(), Vec::<String>::new(), "after abort of a written upload");

    let mut up = begin(f.sink.as_ref(), "sealed.csv", PutMode::Create).await;
    up.write(b"some bytes").await.expect("write");
    up.seal().await.expect("seal");
    up.abort().await;
    assert_eq!(f.dir.names(), Vec::<String>::new(), "after abort of a sealed upload");

    let up = begin(f.sink.as_ref(), "untouched.csv", PutMode::Create).await;
    up.abort().await;
    assert_eq!(f.dir.names(), Vec::<String>::new(), "after abort of an upload never written to");

    for name in ["written.csv", "sealed.csv", "untouched.csv"] {
        assert_eq!(f.sink.stat(name).await.expect("stat"), None, "{name} was never published");
    }
}

/// Seal verifies that the temporary file holds exactly the bytes written: when it does not
/// (another program changed it), seal fails, names the file, and has removed the temporary
/// file by the time it returns.
pub async fn a_failed_seal_removes_the_temporary_file(f: SinkFixture) {
    let mut up = begin(f.sink.as_ref(), "checked.csv", PutMode::Create).await;
    up.write(b"twelve bytes").await.expect("write");
    let temp = only_temp(f.dir.as_ref(), "checked.csv");
    f.dir.replace(&temp, b"thirteen bytes");

    let err = up.seal().await.expect_err("seal must find that the temporary file does not hold the bytes written");
    let text = err.to_string();
    assert!(text.contains("checked.csv") || text.contains(&temp), "the error names the file: {text}");
    assert_eq!(f.dir.names(), Vec::<String>::new(), "no temporary file after a failed seal");
    assert_eq!(f.sink.stat("checked.csv").await.expect("stat"), None, "nothing published");
}

/// [`PutMode::Create`] refuses a final name that exists: not published, with a permanent error
/// naming it; the old file keeps its bytes and the refused upload's temporary file stays, whole.
pub async fn create_refuses_an_existing_name_and_keeps_the_old_file(f: SinkFixture) {
    put(f.sink.as_ref(), "out.csv", PutMode::Create, &[b"first\n"]).await.expect("first upload");

    let err = put(f.sink.as_ref(), "out.csv", PutMode::Create, &[b"second, longer\n"]).await.expect_err("create over an existing file");
    let PublishError::NotPublished(err) = err else { panic!("the destination answered: not published: {err}") };
    assert_eq!(err.class(), ErrorClass::Permanent, "retrying gives the same answer: {err}");
    assert!(err.to_string().contains("out.csv"), "the error names the file: {err}");
    assert_eq!(f.dir.read("out.csv").as_deref(), Some(&b"first\n"[..]), "the old file is intact");
    assert_eq!(f.sink.stat("out.csv").await.expect("stat"), Some(6));
    let names = f.dir.names();
    assert_eq!(names.len(), 2, "the final file and the refused upload's temporary file: {names:?}");
    let temp = names.iter().find(|n| *n != "out.csv").expect("the temporary file");
    assert_eq!(f.dir.read(temp).as_deref(), Some(&b"second, longer\n"[..]), "the temporary file keeps its bytes");
}

/// [`PutMode::Overwrite`] creates a missing file and replaces an existing one with exactly the
/// new bytes (a shorter file is not padded with the old tail); until the commit the old file
/// stays whole under the final name.
pub async fn overwrite_replaces_an_existing_file(f: SinkFixture) {
    put(f.sink.as_ref(), "out.csv", PutMode::Overwrite, &[b"first, the longer one\n"]).await.expect("overwrite of nothing creates");
    assert_eq!(f.dir.read("out.csv").as_deref(), Some(&b"first, the longer one\n"[..]));

    let mut up = begin(f.sink.as_ref(), "out.csv", PutMode::Overwrite).await;
    up.write(b"second\n").await.expect("write");
    up.seal().await.expect("seal");
    assert_eq!(f.dir.read("out.csv").as_deref(), Some(&b"first, the longer one\n"[..]), "the old file until commit");
    up.commit().await.expect("overwrite");

    assert_eq!(f.dir.read("out.csv").as_deref(), Some(&b"second\n"[..]), "exactly the new bytes");
    assert_eq!(f.sink.stat("out.csv").await.expect("stat"), Some(7));
    assert_eq!(f.dir.names(), ["out.csv"], "neither a temporary nor a set-aside file remains");
}

/// A name that is not a bare file name is refused at `begin` with a permanent error, and
/// nothing is written.
pub async fn names_that_are_not_bare_are_refused(f: SinkFixture) {
    let temp = sealed_and_dropped(f.sink.as_ref(), "ok.csv", PutMode::Create, b"bytes").await;
    for bad in ["", ".", "..", "a/b.csv", "../escape.csv", "/absolute.csv", "dir/"] {
        for (name, temp_) in [(bad.to_owned(), temp_name(EXPORT, "ok.csv")), ("ok.csv".to_owned(), bad.to_owned())] {
            match f.sink.begin(&name, &temp_, PutMode::Create).await {
                Ok(up) => {
                    up.abort().await;
                    panic!("begin({name:?}, {temp_:?}) must be refused");
                }
                Err(e) => assert_eq!(e.class(), ErrorClass::Permanent, "begin({name:?}, {temp_:?}): {e}"),
            }
        }
        for (temp_, name) in [(bad, "ok.csv"), (temp.as_str(), bad)] {
            match f.sink.publish(temp_, name, PutMode::Overwrite).await {
                Err(PublishError::NotPublished(e)) => assert_eq!(e.class(), ErrorClass::Permanent, "publish({temp_:?}, {name:?}): {e}"),
                other => panic!("publish({temp_:?}, {name:?}) must be refused, not published: {other:?}"),
            }
        }
        let err = f.sink.remove(bad).await.expect_err("remove of a name that is not bare");
        assert_eq!(err.class(), ErrorClass::Permanent, "remove({bad:?}): {err}");
    }
    assert_eq!(f.dir.names(), [temp], "nothing was written, moved or removed");
}

/// An upload with no bytes publishes an empty file.
pub async fn an_empty_file_can_be_delivered(f: SinkFixture) {
    let published = begin(f.sink.as_ref(), "empty.csv", PutMode::Create).await.commit().await.expect("commit");
    assert_eq!(published.bytes, 0);
    assert_eq!(f.sink.stat("empty.csv").await.expect("stat"), Some(0));
    assert_eq!(f.dir.read("empty.csv"), Some(Vec::new()));
    assert_eq!(f.dir.names(), ["empty.csv"]);
}

/// Several megabytes written in chunks of very different sizes arrive byte for byte.
pub async fn a_large_file_in_many_chunks_arrives_intact(f: SinkFixture) {
    let data = pseudo_random(6 * (1 << 20) + 123);
    let sizes = [1, 7, 4096, 65_536, 100_003, 1 << 20];
    let mut up = begin(f.sink.as_ref(), "large.bin", PutMode::Create).await;
    let (mut at, mut chunks) = (0, 0);
    while at < data.len() {
        let end = (at + sizes[chunks % sizes.len()]).min(data.len());
        up.write(&data[at..end]).await.expect("write");
        at = end;
        chunks += 1;
    }
    let published = up.commit().await.expect("commit");

    assert_eq!(published.bytes, data.len() as u64);
    assert_eq!(f.sink.stat("large.bin").await.expect("stat"), Some(data.len() as u64));
    let arrived = f.dir.read("large.bin").expect("the file arrived");
    assert_eq!(arrived.len(), data.len(), "{chunks} chunks");
    let first_difference = arrived.iter().zip(&data).position(|(a, b)| a != b);
    assert_eq!(first_difference, None, "the file differs from the bytes written ({chunks} chunks)");
    assert_eq!(f.dir.names(), ["large.bin"]);
}

/// Uploads in flight at the same time, written in turns and committed together, each publish
/// exactly their own bytes.
pub async fn uploads_in_flight_at_once_do_not_mix(f: SinkFixture) {
    let names: Vec<String> = (0..4).map(|i| format!("part{i}.csv")).collect();
    let mut uploads = Vec::new();
    for name in &names {
        uploads.push(begin(f.sink.as_ref(), name, PutMode::Create).await);
    }
    let mut expected = vec![Vec::new(); names.len()];
    for line in 0..50 {
        for (i, up) in uploads.iter_mut().enumerate() {
            let bytes = format!("{} line {line}\n", names[i]).repeat(i + 1).into_bytes();
            up.write(&bytes).await.expect("write");
            expected[i].extend_from_slice(&bytes);
        }
    }
    assert_eq!(f.dir.names().len(), names.len(), "one temporary file per upload");
    assert!(f.dir.names().iter().all(|n| !names.contains(n)), "nothing published before commit");

    let published = futures::future::join_all(uploads.into_iter().map(|up| up.commit())).await;
    for (i, p) in published.into_iter().enumerate() {
        let p = p.unwrap_or_else(|e| panic!("commit {}: {e}", names[i]));
        assert_eq!(p.name, names[i]);
        assert_eq!(p.bytes, expected[i].len() as u64, "{}", names[i]);
        assert_eq!(f.dir.read(&names[i]).as_ref(), Some(&expected[i]), "{} holds its own bytes", names[i]);
    }
    assert_eq!(f.dir.names(), names, "only the final names remain");
}

/// Two uploads of one name in [`PutMode::Create`], committed at the same time: exactly one is
/// published, whole; the other fails and leaves nothing behind.
pub async fn racing_creates_of_one_name_publish_exactly_one(f: SinkFixture) {
    let contents: [&[u8]; 2] = [b"from the first upload\n", b"from the second, longer upload\n"];
    let temps = [temp_name(EXPORT, "race.csv"), temp_name(EXPORT, "race.csv")];
    let mut uploads = Vec::new();
    for (bytes, temp) in contents.iter().zip(&temps) {
        let mut up = f.sink.begin("race.csv", temp, PutMode::Create).await.expect("begin");
        up.write(bytes).await.expect("write");
        up.seal().await.expect("seal");
        uploads.push(up);
    }
    let [a, b]: [_; 2] = uploads.try_into().ok().expect("two uploads");
    let (a, b) = futures::join!(a.commit(), b.commit());

    let winner = match (&a, &b) {
        (Ok(_), Err(PublishError::NotPublished(_))) => 0,
        (Err(PublishError::NotPublished(_)), Ok(_)) => 1,
        _ => panic!("exactly one commit succeeds, the other is not published: {a:?}, {b:?}"),
    };
    assert_eq!(f.dir.read("race.csv").as_deref(), Some(contents[winner]), "the winner's bytes, whole");
    let loser = &temps[1 - winner];
    let mut expected = vec!["race.csv".to_owned(), loser.clone()];
    expected.sort();
    assert_eq!(f.dir.names(), expected, "the loser's temporary file stays");
    assert_eq!(f.dir.read(loser).as_deref(), Some(contents[1 - winner]), "with its bytes");
}

/// A failed commit leaves the temporary file, whole, for the caller: publishing it later
/// under [`PutMode::Overwrite`] replaces the file that was in the way.
pub async fn a_failed_commit_leaves_the_temporary_file_for_a_later_publish(f: SinkFixture) {
    put(f.sink.as_ref(), "out.csv", PutMode::Create, &[b"in the way\n"]).await.expect("first upload");
    let temp = temp_name(EXPORT, "out.csv");
    let mut up = f.sink.begin("out.csv", &temp, PutMode::Create).await.expect("begin");
    up.write(b"the new rows\n").await.expect("write");
    let err = up.commit().await.expect_err("create over an existing file");
    assert!(matches!(err, PublishError::NotPublished(_)), "{err}");
    assert_eq!(f.dir.read(&temp).as_deref(), Some(&b"the new rows\n"[..]), "the temporary file stays after the failed commit");

    f.sink.publish(&temp, "out.csv", PutMode::Overwrite).await.expect("publish");
    assert_eq!(f.dir.read("out.csv").as_deref(), Some(&b"the new rows\n"[..]));
    assert_eq!(f.dir.names(), ["out.csv"], "the temporary file was published, nothing else remains");
}

/// A process that sealed an upload and stopped leaves its temporary file; another one (here:
/// a later call on the sink, holding only the names) publishes it: the final file holds
/// exactly the bytes, under either mode, and the temporary file is gone.
pub async fn publish_finishes_a_sealed_upload_that_was_dropped(f: SinkFixture) {
    let data = pseudo_random(100_000);
    let temp = sealed_and_dropped(f.sink.as_ref(), "data.csv", PutMode::Create, &data).await;
    let _ = f.sink.stat("data.csv").await.expect("stat");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(f.dir.names(), std::slice::from_ref(&temp), "the sealed upload's temporary file stays after the drop");

    f.sink.publish(&temp, "data.csv", PutMode::Create).await.expect("publish");
    assert_eq!(f.sink.stat("data.csv").await.expect("stat"), Some(data.len() as u64));
    assert_eq!(f.dir.read("data.csv"), Some(data), "exactly the bytes written");
    assert_eq!(f.dir.names(), ["data.csv"], "the temporary file is gone");

    put(f.sink.as_ref(), "over.csv", PutMode::Create, &[b"the old file, longer\n"]).await.expect("upload");
    let temp = sealed_and_dropped(f.sink.as_ref(), "over.csv", PutMode::Overwrite, b"new\n").await;
    f.sink.publish(&temp, "over.csv", PutMode::Overwrite).await.expect("publish over an existing file");
    assert_eq!(f.dir.read("over.csv").as_deref(), Some(&b"new\n"[..]), "exactly the new bytes");
    assert_eq!(f.dir.names(), ["data.csv", "over.csv"], "neither a temporary nor a set-aside file remains");
}

/// [`Sink::publish`] under [`PutMode::Create`] onto a name that is taken is not published,
/// with a permanent error naming the file; the old file and the temporary file are intact.
pub async fn publish_under_create_onto_a_taken_name_is_not_published(f: SinkFixture) {
    put(f.sink.as_ref(), "taken.csv", PutMode::Create, &[b"old\n"]).await.expect("upload");
    let temp = sealed_and_dropped(f.sink.as_ref(), "taken.csv", PutMode::Create, b"new rows\n").await;

    match f.sink.publish(&temp, "taken.csv", PutMode::Create).await {
        Err(PublishError::NotPublished(e)) => {
            assert_eq!(e.class(), ErrorClass::Permanent, "retrying gives the same answer: {e}");
            assert!(e.to_string().contains("taken.csv"), "the error names the file: {e}");
        }
        other => panic!("the destination answered: not published: {other:?}"),
    }
    assert_eq!(f.dir.read("taken.csv").as_deref(), Some(&b"old\n"[..]), "the old file is intact");
    assert_eq!(f.dir.read(&temp).as_deref(), Some(&b"new rows\n"[..]), "the temporary file is intact");
    let mut expected = vec!["taken.csv".to_owned(), temp];
    expected.sort();
    assert_eq!(f.dir.names(), expected);
}

/// Publishing a temporary file that is not there is not published, under either mode, and
/// changes nothing: a missing final name stays missing, an existing one keeps its file.
pub async fn publishing_a_missing_temporary_file_is_not_published(f: SinkFixture) {
    let missing = temp_name(EXPORT, "ghost.csv");
    for mode in [PutMode::Create, PutMode::Overwrite] {
        let result = f.sink.publish(&missing, "ghost.csv", mode).await;
        assert!(matches!(result, Err(PublishError::NotPublished(_))), "{mode:?}: {result:?}");
        assert_eq!(f.sink.stat("ghost.csv").await.expect("stat"), None, "{mode:?}");
    }
    assert_eq!(f.dir.names(), Vec::<String>::new());

    put(f.sink.as_ref(), "kept.csv", PutMode::Create, &[b"kept\n"]).await.expect("upload");
    let missing = temp_name(EXPORT, "kept.csv");
    for mode in [PutMode::Create, PutMode::Overwrite] {
        let result = f.sink.publish(&missing, "kept.csv", mode).await;
        assert!(matches!(result, Err(PublishError::NotPublished(_))), "{mode:?}: {result:?}");
        assert_eq!(f.dir.read("kept.csv").as_deref(), Some(&b"kept\n"[..]), "{mode:?}: the file under the final name is intact");
    }
    assert_eq!(f.dir.names(), ["kept.csv"], "nothing set aside or left behind");
}

/// Dropping an upload before it is sealed (a panic, a cancelled task) removes its temporary
/// file; dropping a sealed one leaves it, whole, since a record may name it.
pub async fn dropping_an_upload_removes_its_temporary_file_only_before_seal(f: SinkFixture) {
    let mut up = begin(f.sink.as_ref(), "unsealed.csv", PutMode::Create).await;
    up.write(b"partial").await.expect("write");
    drop(up);
    drop(begin(f.sink.as_ref(), "untouched.csv", PutMode::Create).await);
    assert_eq!(settles_to(f.dir.as_ref(), &[]).await, Vec::<String>::new(), "the unsealed uploads' temporary files are removed");

    let temp = sealed_and_dropped(f.sink.as_ref(), "sealed.csv", PutMode::Create, b"whole").await;
    let _ = f.sink.stat("sealed.csv").await.expect("stat");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(f.dir.names(), std::slice::from_ref(&temp), "the sealed upload's temporary file stays");
    assert_eq!(f.dir.read(&temp).as_deref(), Some(&b"whole"[..]));
    for name in ["unsealed.csv", "untouched.csv", "sealed.csv"] {
        assert_eq!(f.sink.stat(name).await.expect("stat"), None, "{name} was never published");
    }
}

/// [`Sink::leftovers`] lists exactly the temporary files in the directory (those left by
/// dropped uploads and those of uploads in flight) with their sizes, and no final file.
pub async fn leftovers_lists_exactly_the_temporary_files(f: SinkFixture) {
    assert!(f.sink.leftovers().await.expect("leftovers").is_empty(), "an empty directory");
    put(f.sink.as_ref(), "done.csv", PutMode::Create, &[b"published\n"]).await.expect("upload");
    assert!(f.sink.leftovers().await.expect("leftovers").is_empty(), "a final file is not a leftover");

    let a = sealed_and_dropped(f.sink.as_ref(), "a.csv", PutMode::Create, b"0123456789").await;
    let b = sealed_and_dropped(f.sink.as_ref(), "b.csv", PutMode::Create, b"").await;
    let c = temp_name(EXPORT, "c.csv");
    let mut in_flight = f.sink.begin("c.csv", &c, PutMode::Create).await.expect("begin");
    in_flight.write(b"abc").await.expect("write");
    in_flight.seal().await.expect("seal");

    let mut expected = vec![(a.clone(), 10), (b.clone(), 0), (c, 3)];
    expected.sort();
    let leftovers = f.sink.leftovers().await.expect("leftovers");
    let mut found: Vec<(String, u64)> = leftovers.iter().map(|l| (l.name.clone(), l.bytes)).collect();
    found.sort();
    assert_eq!(found, expected, "exactly the temporary files, with their sizes");
    for l in &leftovers {
        assert!(l.name.ends_with(TEMP_SUFFIX), "{}", l.name);
        if let Some(modified) = l.modified {
            let age = Utc::now() - modified;
            assert!(age.num_hours().abs() < 24, "{} was written just now, not at {modified}", l.name);
        }
    }

    in_flight.commit().await.expect("commit");
    let mut found: Vec<String> = f.sink.leftovers().await.expect("leftovers").into_iter().map(|l| l.name).collect();
    found.sort();
    let mut expected = vec![a, b];
    expected.sort();
    assert_eq!(found, expected, "a published file is no longer a leftover");
}

/// [`Sink::remove`] removes a temporary or a final file, and succeeds for a name that is not
/// there (twice in a row, or never there).
pub async fn remove_deletes_a_file_and_succeeds_when_it_is_absent(f: SinkFixture) {
    put(f.sink.as_ref(), "final.csv", PutMode::Create, &[b"rows\n"]).await.expect("upload");
    let temp = sealed_and_dropped(f.sink.as_ref(), "left.csv", PutMode::Create, b"left\n").await;

    f.sink.remove(&temp).await.expect("remove a temporary file");
    assert_eq!(f.dir.names(), ["final.csv"]);
    assert!(f.sink.leftovers().await.expect("leftovers").is_empty(), "the removed temporary file is no longer a leftover");
    f.sink.remove("final.csv").await.expect("remove a final file");
    assert_eq!(f.sink.stat("final.csv").await.expect("stat"), None);
    assert_eq!(f.dir.names(), Vec::<String>::new());

    f.sink.remove(&temp).await.expect("removing it again succeeds");
    f.sink.remove("never-there.csv").await.expect("removing a name never there succeeds");
    assert_eq!(f.dir.names(), Vec::<String>::new());
}

/// Bytes that no chunking can line up by accident.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
