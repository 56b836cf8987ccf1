//! Benchmark client (see `dev/bench`): streams a local file through ferry's SFTP sink, exactly
//! as an export does (1 MiB writes, temporary name, size check, rename), and prints the seconds
//! from connect to published.
//!
//! Usage: upload HOST PORT USER KEY_FILE KNOWN_HOSTS REMOTE_DIR LOCAL_FILE

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ferry_core::{temp_name, PublishError, PutMode, Sink};
use ferry_sftp::{Auth, HostKeyPolicy, SftpSettings, SftpSink};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [host, port, user, key, known_hosts, dir, file] = args.as_slice() else {
        return Err("usage: upload HOST PORT USER KEY_FILE KNOWN_HOSTS REMOTE_DIR LOCAL_FILE".into());
    };
    let settings = SftpSettings {
        host: host.clone(),
        port: port.parse()?,
        username: user.clone(),
        auth: Auth::PrivateKey { path: PathBuf::from(key), passphrase: None },
        host_key: HostKeyPolicy::KnownHosts(PathBuf::from(known_hosts)),
        directory: dir.clone(),
        timeout: Duration::from_secs(60),
    };
    let mut input = std::fs::File::open(file)?;
    let name = PathBuf::from(file).file_name().and_then(|n| n.to_str()).ok_or("bad file name")?.to_owned();
    let t0 = Instant::now();
    let sink = SftpSink::connect(settings).await?;
    let mut upload = sink.begin(&name, &temp_name("bench", &name), PutMode::Overwrite).await?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        upload.write(&buf[..n]).await?;
    }
    let published = upload.commit().await.map_err(PublishError::into_failure)?;
    let secs = t0.elapsed().as_secs_f64();
    sink.close().await;
    println!("{secs:.3} {}", published.bytes);
    Ok(())
}
