use std::path::PathBuf;
use std::time::Duration;

use ferry_core::{temp_name, ErrorClass, PublishError, Published, PutMode, Secret, Sink};
use ferry_sftp::{Auth, HostKeyPolicy, SftpError, SftpSettings, SftpSink};
use ferry_testkit::{stack, TestDir};

fn key_settings(dir: &TestDir) -> SftpSettings {
    let s = stack();
    SftpSettings {
        host: s.var("FERRY_SFTP_HOST"),
        port: s.var("FERRY_SFTP_PORT").parse().expect("port"),
        username: s.var("FERRY_SFTP_KEY_USER"),
        auth: Auth::PrivateKey { path: PathBuf::from(s.var("FERRY_SFTP_KEY_FILE")), passphrase: None },
        host_key: HostKeyPolicy::KnownHosts(PathBuf::from(s.var("FERRY_SFTP_KNOWN_HOSTS"))),
        directory: dir.remote(),
        timeout: Duration::from_secs(10),
    }
}

fn password_settings(dir: &TestDir, password: &str) -> SftpSettings {
    let s = stack();
    SftpSettings {
        username: s.var("FERRY_SFTP_PASSWORD_USER"),
        auth: Auth::Password(Secret::new(password)),
        host_key: HostKeyPolicy::Fingerprint(s.var("FERRY_SFTP_FINGERPRINT")),
        ..key_settings(dir)
    }
}

async fn put(sink: &SftpSink, name: &str, mode: PutMode, chunks: &[&[u8]]) -> Result<Published, PublishError> {
    let mut up = sink.begin(name, &temp_name("smoke", name), mode).await.expect("begin");
    for c in chunks {
        up.write(c).await.expect("write");
    }
    up.commit().await
}

/// The one temporary file in the directory.
fn only_temp(dir: &TestDir) -> String {
    let temps: Vec<String> = dir.names().into_iter().filter(|n| n.ends_with(ferry_core::TEMP_SUFFIX)).collect();
    assert_eq!(temps.len(), 1, "{:?}", dir.names());
    temps[0].clone()
}

#[tokio::test]
async fn upload_to_temporary_name_then_publish() {
    let dir = TestDir::create("smoke_sftp");
    let sink = SftpSink::connect(key_settings(&dir)).await.expect("connect with key");
    assert!(sink.offers_posix_rename(), "OpenSSH offers posix-rename@openssh.com");

    let big = vec![b'x'; 1 << 20];
    let published = put(&sink, "data.csv", PutMode::Create, &[b"id,name\n", &big, b"\n"]).await.expect("upload");
    assert_eq!(published.bytes, 8 + (1 << 20) + 1);
    assert_eq!(dir.names(), ["data.csv"], "only the final name remains");
    let bytes = dir.read("data.csv");
    assert_eq!(bytes.len() as u64, published.bytes);
    assert!(bytes.starts_with(b"id,name\nxxx"));
    sink.close().await;
}

#[tokio::test]
async fn posix_rename_replaces_an_existing_file_and_create_refuses() {
    let dir = TestDir::create("smoke_sftp");
    let sink = SftpSink::connect(key_settings(&dir)).await.expect("connect");
    put(&sink, "out.csv", PutMode::Create, &[b"first\n"]).await.expect("first");

    // Plain SFTP rename onto an existing file is refused by OpenSSH: Create mode reports it.
    let err = put(&sink, "out.csv", PutMode::Create, &[b"second\n"]).await.expect_err("create over existing");
    let PublishError::NotPublished(err) = err else { panic!("the server answered: {err}") };
    assert!(matches!(err.downcast_ref::<SftpError>(), Some(SftpError::Exists { .. })), "{err}");
    assert_eq!(dir.read("out.csv"), b"first\n");
    let temp = only_temp(&dir);
    assert_eq!(dir.read(&temp), b"second\n", "the refused upload's temporary file stays");
    sink.remove(&temp).await.expect("remove");

    // Overwrite goes through posix-rename@openssh.com: atomic replace.
    put(&sink, "out.csv", PutMode::Overwrite, &[b"third\n"]).await.expect("overwrite");
    assert_eq!(dir.read("out.csv"), b"third\n");
    assert_eq!(dir.names(), ["out.csv"]);
    sink.close().await;
}

#[tokio::test]
async fn without_posix_rename_overwrite_moves_the_old_file_aside_and_removes_it() {
    let dir = TestDir::create("smoke_sftp");
    let sink = SftpSink::connect(key_settings(&dir)).await.expect("connect").without_posix_rename();
    assert!(!sink.offers_posix_rename());
    // No file yet: the plain rename succeeds.
    put(&sink, "out.csv", PutMode::Overwrite, &[b"first\n"]).await.expect("first");
    assert_eq!(dir.read("out.csv"), b"first\n");
    // OpenSSH refuses the plain rename onto it: the old file goes aside, the new one in, the old one away.
    put(&sink, "out.csv", PutMode::Overwrite, &[b"second\n"]).await.expect("overwrite by the fallback");
    assert_eq!(dir.read("out.csv"), b"second\n");
    assert_eq!(dir.names(), ["out.csv"], "neither the temporary nor the set-aside file is left");
    // Create still refuses to replace.
    let err = put(&sink, "out.csv", PutMode::Create, &[b"third\n"]).await.expect_err("create over existing");
    let PublishError::NotPublished(err) = err else { panic!("the server answered: {err}") };
    assert!(matches!(err.downcast_ref::<SftpError>(), Some(SftpError::Exists { .. })), "{err}");
    assert_eq!(dir.read("out.csv"), b"second\n");
    sink.close().await;
}

/// The fallback cannot move the old file aside when something has the name it would use: the
/// publish is refused and nothing moved; once the name is free, publishing the temporary file
/// finishes the job.
#[tokio::test]
async fn without_posix_rename_a_taken_aside_name_publishes_nothing_and_moves_nothing() {
    let dir = TestDir::create("smoke_sftp");
    let sink = SftpSink::connect(key_settings(&dir)).await.expect("connect").without_posix_rename();
    put(&sink, "out.csv", PutMode::Create, &[b"old\n"]).await.expect("first");
    let temp = temp_name("smoke", "out.csv");
    let aside = format!("{}.ferry-old", temp.strip_suffix(ferry_core::TEMP_SUFFIX).expect("suffix"));
    std::fs::write(dir.path.join(&aside), b"in the way\n").expect("write");

    let mut up = sink.begin("out.csv", &temp, PutMode::Overwrite).await.expect("begin");
    up.write(b"new\n").await.expect("write");
    let err = up.commit().await.expect_err("the old file cannot be moved aside");
    assert!(matches!(err, PublishError::NotPublished(_)), "{err}");
    assert_eq!(dir.read("out.csv"), b"old\n", "the final name is unchanged");
    assert_eq!(dir.read(&temp), b"new\n", "the temporary file stays");
    assert_eq!(dir.read(&aside), b"in the way\n");

    std::fs::remove_file(dir.path.join(&aside)).expect("remove");
    sink.publish(&temp, "out.csv", PutMode::Overwrite).await.expect("publish");
    assert_eq!(dir.read("out.csv"), b"new\n");
    assert_eq!(dir.names(), ["out.csv"]);
    sink.close().await;
}

/// A publish sent on a connection that is gone gets no answer: the outcome is unknown, never
/// "not published", and the temporary file is not touched.
#[tokio::test]
async fn a_publish_without_an_answer_is_unknown_and_keeps_the_temporary_file() {
    for mode in [PutMode::Create, PutMode::Overwrite] {
        for posix_rename in [true, false] {
            let dir = TestDir::create("smoke_sftp");
            let sink = SftpSink::connect(key_settings(&dir)).await.expect("connect");
            let sink = if posix_rename { sink } else { sink.without_posix_rename() };
            let temp = temp_name("smoke", "lost.csv");
            let mut up = sink.begin("lost.csv", &temp, mode).await.expect("begin");
            up.write(b"rows\n").await.expect("write");
            up.seal().await.expect("seal");
            sink.close().await;

            let err = up.commit().await.expect_err("no connection");
            let PublishError::Unknown(err) = err else { panic!("{mode:?}, posix-rename {posix_rename}: must be unknown: {err}") };
            assert_eq!(err.class(), ErrorClass::Transient, "{err}");
            assert!(err.to_string().contains("lost.csv"), "the error names the file: {err}");
            assert_eq!(dir.names(), std::slice::from_ref(&temp), "{mode:?}, posix-rename {posix_rename}: the temporary file stays");
            assert_eq!(dir.read(&temp), b"rows\n");
        }
    }
}

/// The connection goes down while the rename is in flight: whether the server renamed the
/// file or not, the outcome is done or unknown, never "not published", and the bytes are under
/// exactly one of the two names.
#[tokio::test]
async fn a_connection_lost_during_publish_loses_nothing() {
    let mut unknown = 0;
    for round in 0..10 {
        let dir = TestDir::create("smoke_sftp");
        let sink = SftpSink::connect(key_settings(&dir)).await.expect("connect");
        let temp = temp_name("smoke", "race.csv");
        let mut up = sink.begin("race.csv", &temp, PutMode::Create).await.expect("begin");
        up.write(b"rows\n").await.expect("write");
        up.seal().await.expect("seal");

        let (result, ()) = tokio::join!(up.commit(), sink.close());
        match &result {
            Ok(_) => assert_eq!(dir.names(), ["race.csv"], "round {round}"),
            Err(PublishError::Unknown(_)) => {
                unknown += 1;
                let names = dir.names();
                assert!(names == [temp.clone()] || names == ["race.csv"], "round {round}: {names:?}");
            }
            Err(e @ PublishError::NotPublished(_)) => panic!("round {round}: the rename may have happened: {e}"),
        }
        let name = dir.names().pop().expect("one file");
        assert_eq!(dir.read(&name), b"rows\n", "round {round}");
    }
    assert!(unknown > 0, "closing the connection with the rename in flight never lost its answer");
}

#[tokio::test]
async fn password_auth_with_pinned_fingerprint() {
    let dir = TestDir::create("smoke_sftp");
    let password = stack().file("FERRY_SFTP_PASSWORD_FILE");
    let sink = SftpSink::connect(password_settings(&dir, &password)).await.expect("password login");
    put(&sink, "pw.csv", PutMode::Create, &[b"ok\n"]).await.expect("upload");
    assert_eq!(dir.read("pw.csv"), b"ok\n");
    sink.close().await;
}

#[tokio::test]
async fn wrong_password_is_a_clear_error() {
    let dir = TestDir::create("smoke_sftp");
    let err = SftpSink::connect(password_settings(&dir, "not-the-password-sentinel")).await.expect_err("must fail");
    assert!(matches!(err, SftpError::Auth { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("rejected password authentication"), "{text}");
    assert!(!text.contains("not-the-password-sentinel"), "the password must not appear: {text}");
}

#[tokio::test]
async fn wrong_host_key_is_refused_before_any_byte_is_written() {
    let dir = TestDir::create("smoke_sftp");
    let s = stack();
    let wrong_known_hosts =
        SftpSettings { host_key: HostKeyPolicy::KnownHosts(PathBuf::from(s.var("FERRY_SFTP_KNOWN_HOSTS_WRONG"))), ..key_settings(&dir) };
    let err = SftpSink::connect(wrong_known_hosts).await.expect_err("must refuse");
    assert!(matches!(err, SftpError::HostKey { .. }), "{err}");
    assert!(err.to_string().contains("does not match the key recorded at"), "{err}");

    let wrong_pin = SftpSettings {
        host_key: HostKeyPolicy::Fingerprint("SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into()),
        ..key_settings(&dir)
    };
    let err = SftpSink::connect(wrong_pin).await.expect_err("must refuse");
    assert!(err.to_string().contains("is not the pinned fingerprint"), "{err}");

    let empty = dir.path.join("empty_known_hosts");
    std::fs::write(&empty, "").expect("write");
    let unknown = SftpSettings { host_key: HostKeyPolicy::KnownHosts(empty), ..key_settings(&dir) };
    let err = SftpSink::connect(unknown).await.expect_err("must refuse an unknown host");
    assert!(err.to_string().contains("is not listed for this host"), "{err}");

    assert_eq!(dir.names(), ["empty_known_hosts"], "nothing was uploaded");
}

#[tokio::test]
async fn authentication_and_the_subsystem_have_a_deadline() {
    let dir = TestDir::create("smoke_sftp");
    let settings = SftpSettings { timeout: Duration::from_secs(1), ..key_settings(&dir) };
    let server = format!("{}:{}", settings.host, settings.port);
    for (point, says) in
        [("sftp:authenticate", "no answer to authentication within 1s"), ("sftp:subsystem", "the SFTP subsystem did not start within 1s")]
    {
        ferry_core::failpoint::arm_sleep(point, &server, Duration::from_secs(30));
        let started = std::time::Instant::now();
        let err = SftpSink::connect(settings.clone()).await.expect_err("a stalled step ends at the deadline");
        assert!(err.to_string().contains(says), "{point}: {err}");
        assert_eq!(ferry_core::Classify::class(&err), ErrorClass::Transient, "{err}");
        assert!(started.elapsed() < Duration::from_secs(20), "{point} waited for the stall, not the deadline");
    }
    let sink = SftpSink::connect(settings).await.expect("unarmed, it connects");
    assert!(sink.responds(Duration::from_secs(5)).await, "a live connection answers");
    sink.close().await;
    ferry_testkit::eventually(Duration::from_secs(10), "the closed connection to stop answering", || async {
        (!sink.responds(Duration::from_secs(1)).await).then_some(())
    })
    .await;
}
