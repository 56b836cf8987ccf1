use ferry_core::{Classify, ErrorClass};
use russh_sftp::protocol::StatusCode;

/// Errors of the SFTP sink. Each names the server; none contains a credential.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SftpError {
    /// The server's host key is not trusted. Nothing was sent after the handshake.
    #[error("SFTP server {server} refused: {reason}; no data was sent")]
    HostKey { server: String, reason: String },
    /// The server rejected the credentials.
    #[error("SFTP server {server} rejected {method} authentication for user {user:?}")]
    Auth { server: String, user: String, method: &'static str },
    /// The private key file could not be loaded.
    #[error("SFTP private key {path}: {reason}")]
    Key { path: String, reason: String },
    /// Connecting or the SSH handshake failed.
    #[error("SFTP server {server}: cannot connect: {reason}")]
    Connect { server: String, reason: String },
    /// A file operation failed.
    #[error("SFTP server {server}: {op} {path}: {reason}")]
    Io { server: String, op: &'static str, path: String, reason: String, transient: bool },
    /// The uploaded file does not have the size that was written.
    #[error("SFTP server {server}: {path} holds {actual} bytes after upload, expected {expected}")]
    SizeMismatch { server: String, path: String, expected: u64, actual: u64 },
    /// `PutMode::Create` and the final name exists.
    #[error("SFTP server {server}: {path} already exists")]
    Exists { server: String, path: String },
    /// A request of a publish got no answer (a timeout, a closed channel, a dropped
    /// connection): it may have taken effect.
    #[error("SFTP server {server}: {op} {path}: no answer ({reason}); it may have taken effect")]
    NoAnswer { server: String, op: &'static str, path: String, reason: String },
    /// `PutMode::Overwrite` without `posix-rename@openssh.com`: the old file was moved aside, the
    /// new one was refused its place, and the old one could not be moved back. The final name
    /// is free; the new file is still under its temporary name.
    #[error("SFTP server {server}: publishing {path}: the replaced file is left under {aside}: {reason}")]
    LeftAside { server: String, path: String, aside: String, reason: String },
    /// A file name that is not a bare name.
    #[error("invalid file name {name:?}: must be a bare name without '/'")]
    BadName { name: String },
    /// A temporary name that is the final name.
    #[error("invalid temporary name {name:?}: it is the final name")]
    TempIsFinal { name: String },
}

impl SftpError {
    pub(crate) fn from_sftp(server: String, op: &'static str, path: String, e: russh_sftp::client::error::Error) -> Self {
        use russh_sftp::client::error::Error as E;
        let transient = match &e {
            E::Status(s) => !matches!(
                s.status_code,
                StatusCode::NoSuchFile | StatusCode::PermissionDenied | StatusCode::OpUnsupported | StatusCode::BadMessage
            ),
            _ => true,
        };
        let reason = match &e {
            E::Status(s) if s.error_message.is_empty() => format!("{:?}", s.status_code),
            E::Status(s) => format!("{:?} ({})", s.status_code, s.error_message),
            other => other.to_string(),
        };
        SftpError::Io { server, op, path, reason, transient }
    }
}

impl Classify for SftpError {
    fn class(&self) -> ErrorClass {
        match self {
            SftpError::Connect { .. } | SftpError::SizeMismatch { .. } | SftpError::NoAnswer { .. } => ErrorClass::Transient,
            // Publishing the temporary file again finds the final name free.
            SftpError::LeftAside { .. } => ErrorClass::Transient,
            SftpError::Io { transient: true, .. } => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        }
    }
}
