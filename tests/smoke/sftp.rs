use std::path::PathBuf;
use std::time::Duration;

use ferry_core::{PutMode, Secret};
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

async fn put(sink: &SftpSink, name: &str, mode: PutMode, chunks: &[&[u8]]) -> Result<ferry_core::Published, ferry_core::Failure> {
    use ferry_core::Sink;
    let mut up = sink.begin(name, mode).await?;
    for c in chunks {
        up.write(c).await?;
    }
    up.commit().await
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
    assert!(matches!(err.downcast_ref::<SftpError>(), Some(SftpError::Exists { .. })), "{err}");
    assert_eq!(dir.read("out.csv"), b"first\n");
    assert_eq!(dir.names(), ["out.csv"], "the refused upload's temporary file was removed");

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
    assert!(matches!(err.downcast_ref::<SftpError>(), Some(SftpError::Exists { .. })), "{err}");
    assert_eq!(dir.read("out.csv"), b"second\n");
    sink.close().await;
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
