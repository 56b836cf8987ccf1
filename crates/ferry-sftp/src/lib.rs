//! SFTP [`Sink`] for ferry, on russh + russh-sftp.
//!
//! - The server's host key is checked during the handshake, before authentication and before
//!   any byte of data is sent: against an OpenSSH `known_hosts` file or a pinned
//!   `SHA256:` fingerprint. There is no trust-on-first-use.
//! - A file is written to the temporary name the caller chose in the target directory
//!   ([`ferry_core::temp_name`]), its size is checked with a `stat`, and only then is it
//!   published under its final name.
//!
//! Publishing ([`Upload::commit`] and [`Sink::publish`] share it):
//! 1. [`PutMode::Create`]: plain `SSH_FXP_RENAME`. SFTPv3 servers refuse it when the target
//!    exists, which is exactly "create, do not replace".
//! 2. [`PutMode::Overwrite`] on a server offering `posix-rename@openssh.com` (OpenSSH): an
//!    atomic `rename(2)` that replaces the target.
//! 3. [`PutMode::Overwrite`] without it: plain rename; if the server refuses with a generic
//!    failure (the target exists), the old file is first moved aside to the temporary name with
//!    `.ferry-old` in place of `.ferry-tmp`, the new one renamed into place, then the old one
//!    removed. Readers may briefly find no file, but never a partial one.
//!
//! Outcomes. A request the server answered with an error status did not take effect: the
//! publish is [`PublishError::NotPublished`]. A request without an answer (the connection
//! dropped, the channel closed, the request timed out) may have: [`PublishError::Unknown`].
//! The temporary file is never removed after a failed publish. In steps 1 and 2 there is one
//! request: refused, the directory is unchanged; unanswered, the new file is under its
//! temporary name or its final one. What the directory holds when step 3 stops part-way
//! (`temp`, `final`, `aside` the three names):
//!
//! | stopped at | answer | directory | outcome |
//! |---|---|---|---|
//! | first rename `temp` → `final` | refused, not "exists" | unchanged | not published |
//! | first rename `temp` → `final` | none | new file under `temp` or `final` | unknown |
//! | rename `final` → `aside` | refused | unchanged | not published |
//! | rename `final` → `aside` | none | old file under `final` or `aside`; `temp` intact | unknown |
//! | second rename `temp` → `final` | refused; moving back done | unchanged | not published |
//! | second rename `temp` → `final` | refused; moving back failed | old file under `aside`, `final` free, `temp` intact | unknown |
//! | second rename `temp` → `final` | none | old file under `aside`; new under `temp` or `final` | unknown |
//! | remove `aside` | any failure | published; old file left under `aside` (logged) | published |
//!
//! In every row the new bytes are under `temp` or `final`, and the old ones under `final` or
//! `aside`: nothing is lost. While `temp` exists, a later [`Sink::publish`] of it finishes the
//! job; a file under `aside` is not a temporary file ([`Sink::leftovers`] does not list it)
//! and stays until someone removes it.

pub mod component;
mod error;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ferry_core::{Failure, Leftover, PublishError, Published, PutMode, Secret, Sink, Upload, TEMP_SUFFIX};
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
    remote: Remote,
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

        let deadline = settings.timeout;
        let authenticating = authenticate(&mut handle, &settings, &server);
        match tokio::time::timeout(deadline, authenticating).await {
            Err(_) => return Err(SftpError::Connect { server, reason: format!("no answer to authentication within {deadline:?}") }),
            Ok(result) => result?,
        }
        let opening = open_sessions(&handle, &server);
        let (sftp, raw, posix_rename) = match tokio::time::timeout(deadline, opening).await {
            Err(_) => return Err(SftpError::Connect { server, reason: format!("the SFTP subsystem did not start within {deadline:?}") }),
            Ok(result) => result?,
        };
        sftp.set_timeout(deadline.as_secs().max(1));
        raw.set_timeout(deadline.as_secs().max(1));

        let remote = Remote {
            conn: Arc::new(Connection { handle, sftp, raw }),
            server,
            directory: settings.directory.trim_end_matches('/').to_owned(),
            posix_rename,
        };
        Ok(Self { settings, remote })
    }

    /// Whether the SSH connection is gone (closed by either side, or dropped).
    pub fn is_closed(&self) -> bool {
        self.remote.conn.handle.is_closed()
    }

    /// Whether the server still answers: the connection is open and a `stat` of the target
    /// directory is answered (with any status) within `within`. A connection a firewall dropped
    /// without a word looks open until keepalives notice; this notices at once.
    pub async fn responds(&self, within: Duration) -> bool {
        if self.is_closed() {
            return false;
        }
        let stat = self.remote.conn.sftp.metadata(self.settings.directory.clone());
        match tokio::time::timeout(within, stat).await {
            Err(_) => false,
            Ok(Ok(_)) => true,
            Ok(Err(e)) => effect(&e) == Effect::None,
        }
    }

    /// Whether the server offers `posix-rename@openssh.com`.
    pub fn offers_posix_rename(&self) -> bool {
        self.remote.posix_rename
    }

    /// Publishes as if the server did not offer `posix-rename@openssh.com`: step 3 of the
    /// fallback chain. For servers whose extension misbehaves, and to exercise the chain
    /// against servers that have it.
    pub fn without_posix_rename(mut self) -> Self {
        self.remote.posix_rename = false;
        self
    }

    /// The target directory.
    pub fn directory(&self) -> &str {
        &self.settings.directory
    }

    /// Closes the SSH connection.
    pub async fn close(&self) {
        let _ = self.remote.conn.sftp.close().await;
        let _ = self.remote.conn.handle.disconnect(russh::Disconnect::ByApplication, "", "en").await;
    }
}

/// Authenticates with the configured password or key.
async fn authenticate(handle: &mut client::Handle<Verifier>, settings: &SftpSettings, server: &str) -> Result<(), SftpError> {
    ferry_core::failpoint::hit("sftp:authenticate", server)
        .await
        .map_err(|f| SftpError::Connect { server: server.to_owned(), reason: f.to_string() })?;
    let user = settings.username.clone();
    let result = match &settings.auth {
        Auth::Password(pw) => handle.authenticate_password(user, pw.expose()).await,
        Auth::PrivateKey { path, passphrase } => {
            let key = russh::keys::load_secret_key(path, passphrase.as_ref().map(|p| p.expose()))
                .map_err(|e| SftpError::Key { path: path.display().to_string(), reason: e.to_string() })?;
            let hash = handle
                .best_supported_rsa_hash()
                .await
                .map_err(|e| SftpError::Connect { server: server.to_owned(), reason: e.to_string() })?
                .flatten();
            handle.authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash)).await
        }
    }
    .map_err(|e| SftpError::Connect { server: server.to_owned(), reason: e.to_string() })?;
    if !result.success() {
        let method = match settings.auth {
            Auth::Password(_) => "password",
            Auth::PrivateKey { .. } => "private key",
        };
        return Err(SftpError::Auth { server: server.to_owned(), user: settings.username.clone(), method });
    }
    Ok(())
}

/// Opens the two SFTP channels: the session for files, and a raw one for the extension
/// requests the session does not expose (posix-rename@openssh.com), which it reports.
async fn open_sessions(handle: &client::Handle<Verifier>, server: &str) -> Result<(SftpSession, RawSftpSession, bool), SftpError> {
    ferry_core::failpoint::hit("sftp:subsystem", server)
        .await
        .map_err(|f| SftpError::Connect { server: server.to_owned(), reason: f.to_string() })?;
    let subsystem = |e: &dyn fmt::Display| SftpError::Connect { server: server.to_owned(), reason: format!("SFTP subsystem: {e}") };
    let sftp = SftpSession::new_with_config(open_subsystem(handle, server).await?, sftp_config()).await.map_err(|e| subsystem(&e))?;
    let raw = RawSftpSession::new(open_subsystem(handle, server).await?);
    let version = raw.init().await.map_err(|e| subsystem(&e))?;
    let posix_rename = version.extensions.get("posix-rename@openssh.com").is_some_and(|v| v == "1");
    Ok((sftp, raw, posix_rename))
}

/// Writes as large as the server takes (OpenSSH's limit is 256 KiB a packet), 32 of them in
/// flight: against russh-sftp's defaults (32 KiB, 16), 8 times fewer requests,
/// acknowledgements and server writes per file, which put ferry ahead of OpenSSH's `sftp` on
/// aes128-ctr and chacha20-poly1305 too (bench/RESULTS.md §1). 64 in flight, as `sftp` sends,
/// measured no faster here and can hold 16 MiB of written data instead of 8: peak RSS of a
/// 10M-row export was 58–60 MiB with 64, 53–54 MiB with 32.
fn sftp_config() -> russh_sftp::client::Config {
    russh_sftp::client::Config { max_write_packet_len: 256 * 1024, max_concurrent_writes: 32, ..Default::default() }
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

type SftpErr = russh_sftp::client::error::Error;

/// What a failed request says about its effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// The server answered with an error status, or the request was never sent: it did not
    /// take effect.
    None,
    /// No answer (a timeout, a closed channel, a dropped connection) or one that does not say:
    /// the request may have taken effect.
    Unknown,
}

fn effect(e: &SftpErr) -> Effect {
    match e {
        // NO_CONNECTION and CONNECTION_LOST are what a client reports for a lost link, not
        // answers; an OK status carried as an error is not an answer that says "not done".
        SftpErr::Status(s) => match s.status_code {
            StatusCode::Ok | StatusCode::NoConnection | StatusCode::ConnectionLost => Effect::Unknown,
            _ => Effect::None,
        },
        // Refused by the client against the server's limits, before sending.
        SftpErr::Limited(_) => Effect::None,
        SftpErr::IO(_) | SftpErr::Timeout | SftpErr::UnexpectedPacket | SftpErr::UnexpectedBehavior(_) => Effect::Unknown,
    }
}

fn is_status(e: &SftpErr, code: StatusCode) -> bool {
    matches!(e, SftpErr::Status(s) if s.status_code == code)
}

/// `Ok` for a bare file name.
fn bare(name: &str) -> Result<(), SftpError> {
    if name.is_empty() || name.contains(['/', '\0']) || name == "." || name == ".." {
        return Err(SftpError::BadName { name: name.to_owned() });
    }
    Ok(())
}

/// Where the fallback of [`PutMode::Overwrite`] moves the old file while it renames `temp` into
/// place: the temporary name with `.ferry-old` for its suffix, so it is never taken for a
/// temporary file ([`Sink::leftovers`]) and a look at the directory shows whose it is.
fn aside_name(temp: &str) -> String {
    format!("{}.ferry-old", temp.strip_suffix(TEMP_SUFFIX).unwrap_or(temp))
}

/// The connection and directory an upload shares with its sink.
#[derive(Clone)]
struct Remote {
    conn: Arc<Connection>,
    /// `host:port`, for errors.
    server: String,
    /// The target directory, without a trailing `/`.
    directory: String,
    posix_rename: bool,
}

impl Remote {
    fn path_of(&self, name: &str) -> String {
        format!("{}/{name}", self.directory)
    }

    fn io(&self, op: &'static str, path: &str, e: SftpErr) -> SftpError {
        SftpError::from_sftp(self.server.clone(), op, path.to_owned(), e)
    }

    /// A request of a publish that failed, with the outcome its answer (or the lack of one)
    /// allows.
    fn failed(&self, op: &'static str, path: &str, e: SftpErr) -> PublishError {
        match effect(&e) {
            Effect::None => PublishError::NotPublished(self.io(op, path, e).into()),
            Effect::Unknown => PublishError::Unknown(self.no_answer(op, path, e.to_string()).into()),
        }
    }

    fn no_answer(&self, op: &'static str, path: &str, reason: String) -> SftpError {
        SftpError::NoAnswer { server: self.server.clone(), op, path: path.to_owned(), reason }
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), SftpErr> {
        self.conn.sftp.rename(from, to).await
    }

    async fn posix_rename(&self, from: &str, to: &str) -> Result<(), SftpErr> {
        let mut data = Vec::with_capacity(8 + from.len() + to.len());
        for s in [from, to] {
            data.extend_from_slice(&(s.len() as u32).to_be_bytes());
            data.extend_from_slice(s.as_bytes());
        }
        match self.conn.raw.extended("posix-rename@openssh.com", data).await? {
            russh_sftp::protocol::Packet::Status(s) if s.status_code == StatusCode::Ok => Ok(()),
            russh_sftp::protocol::Packet::Status(s) => Err(SftpErr::Status(s)),
            _ => Err(SftpErr::UnexpectedPacket),
        }
    }

    /// Publishes the temporary file `temp` under `name` (bare names): see the module
    /// documentation for the steps, and what each failure leaves. Never removes `temp`.
    async fn publish(&self, temp: &str, name: &str, mode: PutMode) -> Result<(), PublishError> {
        let published = self.publish_once(temp, name, mode).await;
        if published.is_ok() && ferry_core::failpoint::hit("sftp:drop-after-publish", &self.server).await.is_err() {
            // Tests: the connection drops right after a publish, as a server or network may.
            let _ = self.conn.handle.disconnect(russh::Disconnect::ByApplication, "", "en").await;
        }
        published
    }

    async fn publish_once(&self, temp: &str, name: &str, mode: PutMode) -> Result<(), PublishError> {
        let (from, to) = (self.path_of(temp), self.path_of(name));
        let what = format!("{from} -> {to}");
        match mode {
            PutMode::Create => self.rename(&from, &to).await.map_err(|e| {
                // OpenSSH answers a rename onto an existing name with a generic failure.
                if is_status(&e, StatusCode::Failure) {
                    PublishError::NotPublished(SftpError::Exists { server: self.server.clone(), path: to.clone() }.into())
                } else {
                    self.failed("rename", &what, e)
                }
            }),
            PutMode::Overwrite if self.posix_rename => {
                self.posix_rename(&from, &to).await.map_err(|e| self.failed("posix-rename", &what, e))
            }
            PutMode::Overwrite => self.publish_moving_aside(temp, &from, &to).await,
        }
    }

    /// [`PutMode::Overwrite`] without `posix-rename@openssh.com`: step 3 of the module
    /// documentation.
    async fn publish_moving_aside(&self, temp: &str, from: &str, to: &str) -> Result<(), PublishError> {
        let what = format!("{from} -> {to}");
        match self.rename(from, to).await {
            Ok(()) => return Ok(()),
            // A generic failure may be "the target exists": move it aside and try again.
            Err(e) if is_status(&e, StatusCode::Failure) => {}
            // Any other answer is final (no such temporary file, permission denied), and no
            // answer may have been a rename done.
            Err(e) => return Err(self.failed("rename", &what, e)),
        }
        let aside = self.path_of(&aside_name(temp));
        if let Err(e) = self.rename(to, &aside).await {
            // Refused: nothing moved. No answer: the old file is under one of the two names.
            return Err(self.failed("rename", &format!("{to} -> {aside}"), e));
        }
        match self.rename(from, to).await {
            Ok(()) => {}
            Err(e) if effect(&e) == Effect::Unknown => {
                let reason = format!("{e}; the replaced file is under {aside}");
                return Err(PublishError::Unknown(self.no_answer("rename", &what, reason).into()));
            }
            Err(e) => {
                let refused = self.io("rename", &what, e);
                return Err(match self.rename(&aside, to).await {
                    Ok(()) => PublishError::NotPublished(refused.into()),
                    Err(back) => PublishError::Unknown(
                        SftpError::LeftAside {
                            server: self.server.clone(),
                            path: to.to_owned(),
                            aside,
                            reason: format!("{refused}; {back}"),
                        }
                        .into(),
                    ),
                });
            }
        }
        if let Err(e) = self.conn.sftp.remove_file(aside.clone()).await {
            tracing::warn!(server = %self.server, path = %aside, error = %e, "published; could not remove the replaced file");
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for SftpSink {
    async fn begin(&self, name: &str, temp: &str, mode: PutMode) -> Result<Box<dyn Upload>, Failure> {
        bare(name)?;
        bare(temp)?;
        if temp == name {
            return Err(SftpError::TempIsFinal { name: name.to_owned() }.into());
        }
        let path = self.remote.path_of(temp);
        let file = self
            .remote
            .conn
            .sftp
            .open_with_flags(path.clone(), OpenFlags::CREATE | OpenFlags::EXCLUDE | OpenFlags::WRITE | OpenFlags::TRUNCATE)
            .await
            .map_err(|e| self.remote.io("create", &path, e))?;
        Ok(Box::new(SftpUpload {
            remote: self.remote.clone(),
            file: Some(file),
            name: name.to_owned(),
            temp: temp.to_owned(),
            mode,
            written: 0,
            state: State::Writing,
        }))
    }

    async fn stat(&self, name: &str) -> Result<Option<u64>, Failure> {
        let path = self.remote.path_of(name);
        match self.remote.conn.sftp.metadata(path.clone()).await {
            Ok(m) => Ok(m.size),
            Err(e) if is_status(&e, StatusCode::NoSuchFile) => Ok(None),
            Err(e) => Err(self.remote.io("stat", &path, e).into()),
        }
    }

    async fn publish(&self, temp: &str, name: &str, mode: PutMode) -> Result<(), PublishError> {
        for n in [temp, name] {
            bare(n).map_err(|e| PublishError::NotPublished(e.into()))?;
        }
        self.remote.publish(temp, name, mode).await
    }

    async fn leftovers(&self) -> Result<Vec<Leftover>, Failure> {
        let dir = self.settings.directory.as_str();
        let entries = self.remote.conn.sftp.read_dir(dir).await.map_err(|e| self.remote.io("list", dir, e))?;
        let mut found = Vec::new();
        for entry in entries {
            let name = entry.file_name();
            let meta = entry.metadata();
            if !name.ends_with(TEMP_SUFFIX) || meta.file_type().is_dir() {
                continue;
            }
            let bytes = match meta.size {
                Some(bytes) => bytes,
                None => match self.stat(&name).await? {
                    Some(bytes) => bytes,
                    // Published or removed since the listing.
                    None => continue,
                },
            };
            let modified = meta.mtime.and_then(|secs| DateTime::<Utc>::from_timestamp(i64::from(secs), 0));
            found.push(Leftover { name, bytes, modified });
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    async fn remove(&self, name: &str) -> Result<(), Failure> {
        bare(name)?;
        let path = self.remote.path_of(name);
        match self.remote.conn.sftp.remove_file(path.clone()).await {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, StatusCode::NoSuchFile) => Ok(()),
            Err(e) => Err(self.remote.io("remove", &path, e).into()),
        }
    }

    fn describe(&self) -> String {
        format!("sftp://{}@{}{}", self.settings.username, self.settings.server(), self.settings.directory)
    }
}

/// Where an upload stands, which decides what becomes of its temporary file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Being written: dropping the upload removes the temporary file.
    Writing,
    /// Verified to hold this many bytes: the temporary file stays until it is published or
    /// removed on request (a record may name it).
    Sealed(u64),
    /// Published, removed, or handed to the caller after a failed publish.
    Done,
}

struct SftpUpload {
    remote: Remote,
    file: Option<File>,
    name: String,
    /// The temporary name (bare).
    temp: String,
    mode: PutMode,
    written: u64,
    state: State,
}

impl SftpUpload {
    fn temp_path(&self) -> String {
        self.remote.path_of(&self.temp)
    }

    /// Removes the temporary file (after a failure before sealing, or an abort) and returns
    /// `err`.
    async fn failed(&mut self, err: SftpError) -> Failure {
        self.remove_temp().await;
        err.into()
    }

    async fn remove_temp(&mut self) {
        self.state = State::Done;
        if let Some(mut f) = self.file.take() {
            let _ = f.shutdown().await;
        }
        let path = self.temp_path();
        if let Err(e) = self.remote.conn.sftp.remove_file(path.clone()).await {
            tracing::warn!(server = %self.remote.server, path = %path, error = %e, "could not remove temporary file");
        }
    }

    fn transfer(&self, op: &'static str, e: std::io::Error) -> SftpError {
        SftpError::Io { server: self.remote.server.clone(), op, path: self.temp_path(), reason: e.to_string(), transient: true }
    }
}

#[async_trait]
impl Upload for SftpUpload {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), Failure> {
        let file = self.file.as_mut().expect("write after seal, commit, abort or a failed write");
        if let Err(e) = file.write_all(chunk).await {
            let err = self.transfer("write", e);
            return Err(self.failed(err).await);
        }
        self.written += chunk.len() as u64;
        Ok(())
    }

    async fn seal(&mut self) -> Result<u64, Failure> {
        if let State::Sealed(size) = self.state {
            return Ok(size);
        }
        let mut file = self.file.take().expect("seal after a failed write or seal");
        // shutdown() waits for every outstanding write to be acknowledged, then closes the handle.
        if let Err(e) = file.shutdown().await {
            let err = self.transfer("close", e);
            return Err(self.failed(err).await);
        }
        let path = self.temp_path();
        let size = match self.remote.conn.sftp.metadata(path.clone()).await {
            Ok(m) => m.size.unwrap_or(u64::MAX),
            Err(e) => {
                let err = self.remote.io("stat", &path, e);
                return Err(self.failed(err).await);
            }
        };
        if size != self.written {
            let err = SftpError::SizeMismatch { server: self.remote.server.clone(), path, expected: self.written, actual: size };
            return Err(self.failed(err).await);
        }
        self.state = State::Sealed(size);
        Ok(size)
    }

    async fn commit(mut self: Box<Self>) -> Result<Published, PublishError> {
        let bytes = self.seal().await.map_err(PublishError::NotPublished)?;
        let result = self.remote.publish(&self.temp, &self.name, self.mode).await;
        // Published, or left for the caller to publish later or remove, whatever the outcome.
        self.state = State::Done;
        result?;
        Ok(Published { name: self.name.clone(), path: self.remote.path_of(&self.name), bytes })
    }

    async fn abort(mut self: Box<Self>) {
        self.remove_temp().await;
    }
}

impl Drop for SftpUpload {
    fn drop(&mut self) {
        match self.state {
            State::Done => return,
            State::Sealed(_) => {
                // A commit may have been cancelled with its rename in flight, and a record may
                // name the file: it stays for a later publish or removal.
                tracing::debug!(server = %self.remote.server, path = %self.temp_path(), "sealed upload dropped; its temporary file stays");
                return;
            }
            State::Writing => {}
        }
        // Dropped mid-upload (a panic or a cancelled task): remove the temporary file in the
        // background if a runtime is still there.
        let conn = self.remote.conn.clone();
        let path = self.temp_path();
        let server = self.remote.server.clone();
        let file = self.file.take();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Some(mut f) = file {
                    let _ = f.shutdown().await;
                }
                if let Err(e) = conn.sftp.remove_file(path.clone()).await {
                    tracing::warn!(server = %server, path = %path, error = %e, "could not remove the temporary file of a dropped upload");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use russh_sftp::protocol::Status;

    use super::*;

    fn status(code: StatusCode) -> SftpErr {
        SftpErr::Status(Status { id: 7, status_code: code, error_message: String::new(), language_tag: "en".into() })
    }

    #[test]
    fn an_error_status_is_an_answer_and_a_lost_reply_is_not() {
        for code in [
            StatusCode::Failure,
            StatusCode::NoSuchFile,
            StatusCode::PermissionDenied,
            StatusCode::OpUnsupported,
            StatusCode::BadMessage,
            StatusCode::Eof,
        ] {
            assert_eq!(effect(&status(code)), Effect::None, "{code:?}");
        }
        assert_eq!(effect(&SftpErr::Limited("packet exceeds server limit".into())), Effect::None, "never sent");
        for code in [StatusCode::NoConnection, StatusCode::ConnectionLost, StatusCode::Ok] {
            assert_eq!(effect(&status(code)), Effect::Unknown, "{code:?}");
        }
        for e in [
            SftpErr::Timeout,
            SftpErr::IO("broken pipe".into()),
            SftpErr::UnexpectedPacket,
            SftpErr::UnexpectedBehavior("sender dropped".into()),
            SftpErr::UnexpectedBehavior("session closed".into()),
        ] {
            assert_eq!(effect(&e), Effect::Unknown, "{e:?}");
        }
    }

    #[test]
    fn names_must_be_bare() {
        for bad in ["", ".", "..", "a/b", "/abs", "dir/", "nul\0byte"] {
            assert!(matches!(bare(bad), Err(SftpError::BadName { .. })), "{bad:?}");
        }
        for good in ["a.csv", ".a.csv.0123abcd-0123456789ab.ferry-tmp", "..a", "a b"] {
            assert!(bare(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn the_old_file_is_set_aside_under_a_name_that_is_not_temporary() {
        let temp = ferry_core::temp_name("orders", "orders.csv");
        let aside = aside_name(&temp);
        assert!(aside.starts_with(".orders.csv.") && aside.ends_with(".ferry-old"), "{aside}");
        assert!(!aside.ends_with(TEMP_SUFFIX));
        assert_eq!(aside_name("plain"), "plain.ferry-old");
    }
}
