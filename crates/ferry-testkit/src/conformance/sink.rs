//! The [`Sink`] / [`Upload`](ferry_core::Upload) contract, case by case.
//!
//! Besides the trait, a case looks into the sink's directory through [`Directory`]: to read
//! what arrived, to see that no temporary file is left, and to tamper with a temporary file
//! the way another program could. A backend whose directory a test cannot look into cannot run
//! this suite; nothing is skipped.

use ferry_core::{ErrorClass, Failure, Published, PutMode, Sink};

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

/// Begins, writes `chunks`, commits.
async fn put(sink: &dyn Sink, name: &str, mode: PutMode, chunks: &[&[u8]]) -> Result<Published, Failure> {
    let mut up = sink.begin(name, &ferry_core::temp_name("conformance", name), mode).await?;
    for chunk in chunks {
        up.write(chunk).await?;
    }
    up.commit().await.map_err(ferry_core::PublishError::into_failure)
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
    let mut up = f.sink.begin("late.csv", &ferry_core::temp_name("conformance", "late.csv"), PutMode::Create).await.expect("begin");
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
    let mut up = f.sink.begin("written.csv", &ferry_core::temp_name("conformance", "written.csv"), PutMode::Create).await.expect("begin");
    up.write(b"some bytes").await.expect("write");
    up.abort().await;
    assert_eq!(f.dir.names(), Vec::<String>::new(), "after abort of a written upload");

    let mut up = f.sink.begin("sealed.csv", &ferry_core::temp_name("conformance", "sealed.csv"), PutMode::Create).await.expect("begin");
    up.write(b"some bytes").await.expect("write");
    up.seal().await.expect("seal");
    up.abort().await;
    assert_eq!(f.dir.names(), Vec::<String>::new(), "after abort of a sealed upload");

    let up = f.sink.begin("untouched.csv", &ferry_core::temp_name("conformance", "untouched.csv"), PutMode::Create).await.expect("begin");
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
    let mut up = f.sink.begin("checked.csv", &ferry_core::temp_name("conformance", "checked.csv"), PutMode::Create).await.expect("begin");
    up.write(b"twelve bytes").await.expect("write");
    let temp = only_temp(f.dir.as_ref(), "checked.csv");
    f.dir.replace(&temp, b"thirteen bytes");

    let err = up.seal().await.expect_err("seal must find that the temporary file does not hold the bytes written");
    let text = err.to_string();
    assert!(text.contains("checked.csv") || text.contains(&temp), "the error names the file: {text}");
    assert_eq!(f.dir.names(), Vec::<String>::new(), "no temporary file after a failed seal");
    assert_eq!(f.sink.stat("checked.csv").await.expect("stat"), None, "nothing published");
}

/// [`PutMode::Create`] refuses a final name that exists, with a permanent error naming it;
/// the sink says for sure that it did not publish; the old file keeps its bytes and the refused
/// upload's temporary file stays for its caller to remove.
pub async fn create_refuses_an_existing_name_and_keeps_the_old_file(f: SinkFixture) {
    put(f.sink.as_ref(), "out.csv", PutMode::Create, &[b"first\n"]).await.expect("first upload");

    let temp = ferry_core::temp_name("conformance", "out.csv");
    let mut up = f.sink.begin("out.csv", &temp, PutMode::Create).await.expect("begin");
    up.write(b"second, longer\n").await.expect("write");
    let err = match up.commit().await {
        Err(ferry_core::PublishError::NotPublished(e)) => e,
        other => panic!("create over an existing file is definitely not published: {other:?}"),
    };
    assert_eq!(err.class(), ErrorClass::Permanent, "retrying gives the same answer: {err}");
    assert!(err.to_string().contains("out.csv"), "the error names the file: {err}");
    assert_eq!(f.dir.read("out.csv").as_deref(), Some(&b"first\n"[..]), "the old file is intact");
    assert_eq!(f.sink.stat("out.csv").await.expect("stat"), Some(6));
    assert_eq!(f.dir.read(&temp).as_deref(), Some(&b"second, longer\n"[..]), "the refused upload's temporary file stays");
    f.sink.remove(&temp).await.expect("remove");
    assert_eq!(f.dir.names(), ["out.csv"]);
}

/// [`PutMode::Overwrite`] creates a missing file and replaces an existing one with exactly the
/// new bytes (a shorter file is not padded with the old tail); until the commit the old file
/// stays whole under the final name.
pub async fn overwrite_replaces_an_existing_file(f: SinkFixture) {
    put(f.sink.as_ref(), "out.csv", PutMode::Overwrite, &[b"first, the longer one\n"]).await.expect("overwrite of nothing creates");
    assert_eq!(f.dir.read("out.csv").as_deref(), Some(&b"first, the longer one\n"[..]));

    let mut up = f.sink.begin("out.csv", &ferry_core::temp_name("conformance", "out.csv"), PutMode::Overwrite).await.expect("begin");
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
    for name in ["", ".", "..", "a/b.csv", "../escape.csv", "/absolute.csv", "dir/"] {
        match f.sink.begin(name, &ferry_core::temp_name("conformance", name), PutMode::Create).await {
            Ok(up) => {
                up.abort().await;
                panic!("{name:?} must be refused");
            }
            Err(e) => assert_eq!(e.class(), ErrorClass::Permanent, "{name:?}: {e}"),
        }
    }
    assert_eq!(f.dir.names(), Vec::<String>::new(), "nothing was written");
}

/// An upload with no bytes publishes an empty file.
pub async fn an_empty_file_can_be_delivered(f: SinkFixture) {
    let published = f
        .sink
        .begin("empty.csv", &ferry_core::temp_name("conformance", "empty.csv"), PutMode::Create)
        .await
        .expect("begin")
        .commit()
        .await
        .expect("commit");
    assert_eq!(published.bytes, 0);
    assert_eq!(f.sink.stat("empty.csv").await.expect("stat"), Some(0));
    assert_eq!(f.dir.read("empty.csv"), Some(Vec::new()));
    assert_eq!(f.dir.names(), ["empty.csv"]);
}

/// Several megabytes written in chunks of very different sizes arrive byte for byte.
pub async fn a_large_file_in_many_chunks_arrives_intact(f: SinkFixture) {
    let data = pseudo_random(6 * (1 << 20) + 123);
    let sizes = [1, 7, 4096, 65_536, 100_003, 1 << 20];
    let mut up = f.sink.begin("large.bin", &ferry_core::temp_name("conformance", "large.bin"), PutMode::Create).await.expect("begin");
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
        uploads.push(f.sink.begin(name, &ferry_core::temp_name("conformance", name), PutMode::Create).await.expect("begin"));
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
    let mut uploads = Vec::new();
    for bytes in contents {
        let mut up = f.sink.begin("race.csv", &ferry_core::temp_name("conformance", "race.csv"), PutMode::Create).await.expect("begin");
        up.write(bytes).await.expect("write");
        up.seal().await.expect("seal");
        uploads.push(up);
    }
    let [a, b]: [_; 2] = uploads.try_into().ok().expect("two uploads");
    let (a, b) = futures::join!(a.commit(), b.commit());

    let winner = match (&a, &b) {
        (Ok(_), Err(ferry_core::PublishError::NotPublished(_))) => 0,
        (Err(ferry_core::PublishError::NotPublished(_)), Ok(_)) => 1,
        _ => panic!("exactly one commit succeeds, and the other is told it did not: {a:?}, {b:?}"),
    };
    assert_eq!(f.dir.read("race.csv").as_deref(), Some(contents[winner]), "the winner's bytes, whole");
    let names = f.dir.names();
    assert_eq!(names.len(), 2, "the loser's temporary file stays for its caller: {names:?}");
    let loser = names.iter().find(|n| *n != "race.csv").expect("the loser's temporary file");
    assert_eq!(f.dir.read(loser).as_deref(), Some(contents[1 - winner]), "with the loser's bytes");
    f.sink.remove(loser).await.expect("remove");
    assert_eq!(f.dir.names(), ["race.csv"]);
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
