//! SFTP [`Sink`] for ferry, on russh + russh-sftp.
//!
//! - The server's host key is checked during the handshake, before authentication and before
//!   any byte of data is sent: against an OpenSSH `known_hosts` file or a pinned
//!   `SHA256:` fingerprint. There is no trust-on-first-use.
//! - A file is written to a temporary name in the target directory
//!   (`.<name>.<random>.ferry-tmp`), its size is checked with a `stat`, and only then is it
//!   published under its final name.
//!
//! Publishing (the fallback chain):
//! 1. [`PutMode::Create`]: plain `SSH_FXP_RENAME`. SFTPv3 servers refuse it when the target
//!    exists, which is exactly "create, do not replace".
//! 2. [`PutMode::Overwrite`] on a server offering `posix-rename@openssh.com` (OpenSSH): an
//!    atomic `rename(2)` that replaces the target.
//! 3. [`PutMode::Overwrite`] without it: plain rename; if the server refuses because the target
//!    exists, the old file is first moved aside to `.<name>.<random>.ferry-old`, the new one
//!    renamed into place, then the old one removed. Readers may briefly find no file, but never
//!    a partial one.

pub mod component;
mod error;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ferry_core::{Failure, Published, PutMode, Secret, Sink, Upload};
use russh::client;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg};
use russh_sftp::client::fs::File;
use russh_sftp::client::{RawSftpSession, SftpSession};
use russh_sftp::protocol::{OpenFlags, StatusCode};
use tokio::io::AsyncWriteExt;

pub use error::SftpError;

/// How ferry proves who it is to the SFTP server.
#[derive(Clone)]
pub enum Auth {
    /// Password authentication.
    Password(Secret),
    /// Public-key authentication with an OpenSSH private key file.
    PrivateKey {
        /// Path of the private key file.
        path: PathBuf,
        /// Passphrase of an encrypted key.
        passphrase: Option<Secret>,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Password(_) => f.write_str("Password(**REDACTED**)"),
            Auth::PrivateKey { path, .. } => f.debug_struct("PrivateKey").field("path", path).finish_non_exhaustive(),
        }
    }
}

/// Which host keys are trusted. There is deliberately no "accept anything" variant.
#[derive(Debug, Clone)]
pub enum HostKeyPolicy {
    /// Trust the keys recorded for `[host]:port` (or `host` on port 22) in this OpenSSH
    /// `known_hosts` file.
    KnownHosts(PathBuf),
    /// Trust exactly the key with this fingerprint, as `ssh-keygen -l -E sha256` prints it
    /// (`SHA256:…`).
    Fingerprint(String),
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct SftpSettings {
    /// Server host name or address.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Login name.
    pub username: String,
    /// Credentials.
    pub auth: Auth,
    /// Host-key trust.
    pub host_key: HostKeyPolicy,
    /// Target directory on the server; files are published here.
    pub directory: String,
    /// Limit for connecting and for each SFTP request.
    pub timeout: Duration,
}

impl SftpSettings {
    fn server(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

struct Verifier {
    host: String,
    port: u16,
    policy: HostKeyPolicy,
    rejection: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &russh::keys::PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let key = match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => key,
            russh::keys::PublicKeyOrCertificate::Certificate(_) => {
                *self.rejection.lock().expect("lock") =
                    Some("the server presented a host certificate; ferry trusts only plain host keys".into());
                return Ok(false);
            }
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let algorithm = key.algorithm().to_string();
        let verdict = match &self.policy {
            HostKeyPolicy::Fingerprint(pinned) => {
                if pinned.trim() == fingerprint {
                    Ok(())
                } else {
                    Err(format!("its {algorithm} host key {fingerprint} is not the pinned fingerprint {}", pinned.trim()))
                }
            }
            HostKeyPolicy::KnownHosts(path) => match russh::keys::check_known_hosts_path(&self.host, self.port, key, path) {
                Ok(true) => Ok(()),
                Ok(false) => Err(format!("its {algorithm} host key {fingerprint} is not listed for this host in {}", path.display())),
                Err(russh::keys::Error::KeyChanged { line }) => {
                    Err(format!("its {algorithm} host key {fingerprint} does not match the key recorded at {}:{line}", path.display()))
                }
                Err(e) => Err(format!("known_hosts file {} could not be read: {e}", path.display())),
            },
        };
        match verdict {
            Ok(()) => Ok(true),
            Err(reason) => {
                *self.rejection.lock().expect("lock") = Some(reason);
                Ok(false)
            }
        }
    }
}

struct Connection {
    handle: client::Handle<Verifier>,
    sftp: SftpSession,
    raw: RawSftpSession,
}

/// An SFTP destination directory. One SSH connection, opened by [`SftpSink::connect`].
pub struct SftpSink {
    settings: SftpSettings,
    conn: Arc<Connection>,
    posix_rename: bool,
}

impl fmt::Debug for SftpSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SftpSink")
            .field("server", &self.settings.server())
            .field("directory", &self.settings.directory)
            .finish_non_exhaustive()
    }
}

impl SftpSink {
    /// Connects, verifies the host key, authenticates and opens the SFTP subsystem.
    pub async fn connect(settings: SftpSettings) -> Result<Self, SftpError> {
        let server = settings.server();
        let rejection = Arc::new(Mutex::new(None));
        let verifier =
            Verifier { host: settings.host.clone(), port: settings.port, policy: settings.host_key.clone(), rejection: rejection.clone() };
        let config = Arc::new(client::Config {
            inactivity_timeout: Some(Duration::from_secs(300)),
            keepalive_interval: Some(Duration::from_secs(30)),
            preferred: russh::Preferred {
                // AEAD ciphers first (no separate MAC pass); AES-GCM runs on AES-NI / ARMv8 AES.
                cipher: std::borrow::Cow::Borrowed(&[
                    russh::cipher::AES_256_GCM,
                    russh::cipher::AES_128_GCM,
                    russh::cipher::CHACHA20_POLY1305,
                    russh::cipher::AES_256_CTR,
                    russh::cipher::AES_128_CTR,
                ]),
                // For CTR ciphers: SHA-256 has hardware support on current x86 (SHA-NI) and ARMv8
                // where SHA-512 mostly has not; russh's default puts SHA-512 first. Measured on
                // aes128-ctr to the local sshd: 1 GiB in 2.9 s with SHA-256, 5.6-6.4 s with SHA-512.
                mac: std::borrow::Cow::Borrowed(&[
                    russh::mac::HMAC_SHA256_ETM,
                    russh::mac::HMAC_SHA512_ETM,
                    russh::mac::HMAC_SHA256,
                    russh::mac::HMAC_SHA512,
                ]),
                ..Default::default()
            },
            nodelay: true,
            ..Default::default()
        });
        let connecting = client::connect(config, (settings.host.as_str(), settings.port), verifier);
        let mut handle = match tokio::time::timeout(settings.timeout, connecting).await {
            Err(_) => return Err(SftpError::Connect { server, reason: format!("no SSH handshake within {:?}", settings.timeout) }),
            Ok(Ok(handle)) => handle,
            Ok(Err(e)) => {
                if let Some(reason) = rejection.lock().expect("lock").take() {
                    return Err(SftpError::HostKey { server, reason });
                }
                return Err(SftpError::Connect { server, reason: e.to_string() });
            }
        };

        let user = settings.username.clone();
        let result = match &settings.auth {
            Auth::Password(pw) => handle.authenticate_password(user, pw.expose()).await,
            Auth::PrivateKey { path, passphrase } => {
                let key = russh::keys::load_secret_key(path, passphrase.as_ref().map(|p| p.expose()))
                    .map_err(|e| SftpError::Key { path: path.display().to_string(), reason: e.to_string() })?;
                let hash = handle
                    .best_supported_rsa_hash()
                    .await
                    .map_err(|e| SftpError::Connect { server: server.clone(), reason: e.to_string() })?
                    .flatten();
                handle.authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash)).await
            }
        }
        .map_err(|e| SftpError::Connect { server: server.clone(), reason: e.to_string() })?;
        if !result.success() {
            let method = match settings.auth {
                Auth::Password(_) => "password",
                Auth::PrivateKey { .. } => "private key",
            };
            return Err(SftpError::Auth { server, user: settings.username.clone(), method });
        }

        let sftp = SftpSession::new(open_subsystem(&handle, &server).await?)
            .await
            .map_err(|e| SftpError::Connect { server: server.clone(), reason: format!("SFTP subsystem: {e}") })?;
        sftp.set_timeout(settings.timeout.as_secs().max(1));
        // A second SFTP channel, used raw, for the extension requests the high-level session
        // does not expose (posix-rename@openssh.com).
        let raw = RawSftpSession::new(open_subsystem(&handle, &server).await?);
        raw.set_timeout(settings.timeout.as_secs().max(1));
        let version =
            raw.init().await.map_err(|e| SftpError::Connect { server: server.clone(), reason: format!("SFTP subsystem: {e}") })?;
        let posix_rename = version.extensions.get("posix-rename@openssh.com").is_some_and(|v| v == "1");

        Ok(Self { settings, conn: Arc::new(Connection { handle, sftp, raw }), posix_rename })
    }

    /// Whether the server offers `posix-rename@openssh.com`.
    pub fn offers_posix_rename(&self) -> bool {
        self.posix_rename
    }

    /// Publishes as if the server did not offer `posix-rename@openssh.com`: step 3 of the
    /// fallback chain. For servers whose extension misbehaves, and to exercise the chain
    /// against servers that have it.
    pub fn without_posix_rename(mut self) -> Self {
        self.posix_rename = false;
        self
    }

    /// The target directory.
    pub fn directory(&self) -> &str {
        &self.settings.directory
    }

    fn path_of(&self, name: &str) -> String {
        format!("{}/{}", self.settings.directory.trim_end_matches('/'), name)
    }

    /// Closes the SSH connection.
    pub async fn close(&self) {
        let _ = self.conn.sftp.close().await;
        let _ = self.conn.handle.disconnect(russh::Disconnect::ByApplication, "", "en").await;
    }

    fn io(&self, op: &'static str, path: &str, e: russh_sftp::client::error::Error) -> SftpError {
        SftpError::from_sftp(self.settings.server(), op, path.to_owned(), e)
    }
}

async fn open_subsystem(handle: &client::Handle<Verifier>, server: &str) -> Result<russh::ChannelStream<client::Msg>, SftpError> {
    let channel = handle
        .channel_open_session()
        .await
        .map_err(|e| SftpError::Connect { server: server.to_owned(), reason: format!("opening a channel: {e}") })?;
    channel
        .request_subsystem(true, "sftp")
        .await
        .map_err(|e| SftpError::Connect { server: server.to_owned(), reason: format!("requesting the sftp subsystem: {e}") })?;
    Ok(channel.into_stream())
}

#[async_trait]
impl Sink for SftpSink {
    async fn begin(&self, name: &str, mode: PutMode) -> Result<Box<dyn Upload>, Failure> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(SftpError::BadName { name: name.to_owned() }.into());
        }
        let nonce = &uuid::Uuid::new_v4().simple().to_string()[..12];
        let temp = self.path_of(&format!(".{name}.{nonce}.ferry-tmp"));
        let file = self
            .conn
            .sftp
            .open_with_flags(temp.clone(), OpenFlags::CREATE | OpenFlags::EXCLUDE | OpenFlags::WRITE | OpenFlags::TRUNCATE)
            .await
            .map_err(|e| self.io("create", &temp, e))?;
        Ok(Box::new(SftpUpload {
            server: self.settings.server(),
            conn: self.conn.clone(),
            file: Some(file),
            temp,
            final_path: self.path_of(name),
            name: name.to_owned(),
            nonce: nonce.to_owned(),
            mode,
            written: 0,
            posix_rename: self.posix_rename,
            sealed: None,
            finished: false,
        }))
    }

    async fn stat(&self, name: &str) -> Result<Option<u64>, Failure> {
        let path = self.path_of(name);
        match self.conn.sftp.metadata(path.clone()).await {
            Ok(m) => Ok(m.size),
            Err(russh_sftp::client::error::Error::Status(s)) if s.status_code == StatusCode::NoSuchFile => Ok(None),
            Err(e) => Err(self.io("stat", &path, e).into()),
        }
    }

    fn describe(&self) -> String {
        format!("sftp://{}@{}{}", self.settings.username, self.settings.server(), self.settings.directory)
    }
}

struct SftpUpload {
    server: String,
    conn: Arc<Connection>,
    file: Option<File>,
    temp: String,
    final_path: String,
    name: String,
    nonce: String,
    mode: PutMode,
    written: u64,
    posix_rename: bool,
    /// The verified size, once sealed.
    sealed: Option<u64>,
    finished: bool,
}

impl SftpUpload {
    fn io(&self, op: &'static str, path: &str, e: russh_sftp::client::error::Error) -> SftpError {
        SftpError::from_sftp(self.server.clone(), op, path.to_owned(), e)
    }

    async fn remove_temp(&mut self) {
        self.finished = true;
        if let Some(mut f) = self.file.take() {
            let _ = f.shutdown().await;
        }
        if let Err(e) = self.conn.sftp.remove_file(self.temp.clone()).await {
            tracing::warn!(server = %self.server, path = %self.temp, error = %e, "could not remove temporary file");
        }
    }

    async fn publish(&self) -> Result<(), SftpError> {
        match self.mode {
            PutMode::Create => self.conn.sftp.rename(self.temp.clone(), self.final_path.clone()).await.map_err(|e| {
                let exists = matches!(&e, russh_sftp::client::error::Error::Status(s) if s.status_code == StatusCode::Failure);
                if exists {
                    SftpError::Exists { server: self.server.clone(), path: self.final_path.clone() }
                } else {
                    self.io("rename", &self.final_path, e)
                }
            }),
            PutMode::Overwrite if self.posix_rename => self.posix_rename(&self.temp, &self.final_path).await,
            PutMode::Overwrite => {
                if self.conn.sftp.rename(self.temp.clone(), self.final_path.clone()).await.is_ok() {
                    return Ok(());
                }
                let aside = format!("{}.{}.ferry-old", self.final_path, self.nonce);
                self.conn.sftp.rename(self.final_path.clone(), aside.clone()).await.map_err(|e| self.io("rename", &self.final_path, e))?;
                if let Err(e) = self.conn.sftp.rename(self.temp.clone(), self.final_path.clone()).await {
                    let _ = self.conn.sftp.rename(aside.clone(), self.final_path.clone()).await;
                    return Err(self.io("rename", &self.final_path, e));
                }
                let _ = self.conn.sftp.remove_file(aside).await;
                Ok(())
            }
        }
    }

    async fn posix_rename(&self, from: &str, to: &str) -> Result<(), SftpError> {
        let mut data = Vec::with_capacity(8 + from.len() + to.len());
        for s in [from, to] {
            data.extend_from_slice(&(s.len() as u32).to_be_bytes());
            data.extend_from_slice(s.as_bytes());
        }
        match self.conn.raw.extended("posix-rename@openssh.com", data).await {
            Ok(russh_sftp::protocol::Packet::Status(s)) if s.status_code == StatusCode::Ok => Ok(()),
            Ok(russh_sftp::protocol::Packet::Status(s)) => Err(self.io("posix-rename", to, russh_sftp::client::error::Error::Status(s))),
            Ok(_) => Err(self.io("posix-rename", to, russh_sftp::client::error::Error::UnexpectedPacket)),
            Err(e) => Err(self.io("posix-rename", to, e)),
        }
    }
}

#[async_trait]
impl Upload for SftpUpload {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), Failure> {
        let file = self.file.as_mut().expect("write after commit or abort");
        if let Err(e) = file.write_all(chunk).await {
            let err =
                SftpError::Io { server: self.server.clone(), op: "write", path: self.temp.clone(), reason: e.to_string(), transient: true };
            self.remove_temp().await;
            return Err(err.into());
        }
        self.written += chunk.len() as u64;
        Ok(())
    }

    async fn seal(&mut self) -> Result<u64, Failure> {
        if let Some(size) = self.sealed {
            return Ok(size);
        }
        let mut file = self.file.take().expect("seal after abort");
        // shutdown() waits for every outstanding write to be acknowledged, then closes the handle.
        if let Err(e) = file.shutdown().await {
            let err =
                SftpError::Io { server: self.server.clone(), op: "close", path: self.temp.clone(), reason: e.to_string(), transient: true };
            self.remove_temp().await;
            return Err(err.into());
        }
        let size = match self.conn.sftp.metadata(self.temp.clone()).await {
            Ok(m) => m.size.unwrap_or(u64::MAX),
            Err(e) => {
                let err = self.io("stat", &self.temp.clone(), e);
                self.remove_temp().await;
                return Err(err.into());
            }
        };
        if size != self.written {
            let err =
                SftpError::SizeMismatch { server: self.server.clone(), path: self.temp.clone(), expected: self.written, actual: size };
            self.remove_temp().await;
            return Err(err.into());
        }
        self.sealed = Some(size);
        Ok(size)
    }

    async fn commit(mut self: Box<Self>) -> Result<Published, Failure> {
        let size = self.seal().await?;
        if let Err(e) = self.publish().await {
            self.remove_temp().await;
            return Err(e.into());
        }
        self.finished = true;
        Ok(Published { name: self.name.clone(), path: self.final_path.clone(), bytes: size })
    }

    async fn abort(mut self: Box<Self>) {
        self.remove_temp().await;
    }
}

impl Drop for SftpUpload {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Dropped mid-upload (a panic or a cancelled task): remove the temporary file in the
        // background if a runtime is still there.
        let conn = self.conn.clone();
        let temp = self.temp.clone();
        let file = self.file.take();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Some(mut f) = file {
                    let _ = f.shutdown().await;
                }
                let _ = conn.sftp.remove_file(temp).await;
            });
        }
    }
}
