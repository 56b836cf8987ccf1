//! The `sftp` destination component: a directory on a partner's SFTP server, and the files
//! written into it.
//!
//! ```json
//! "destination": {"type": "sftp", "host": "sftp.partner.example", "username": "acme",
//!                 "path": "/upload", "known_hosts_file": "/secrets/known-hosts/known_hosts",
//!                 "file": {"name": "ORDERS_{datetime}.csv", "compression": "GZIP"}}
//! ```
//!
//! As in the seed deployment, host, user and password may come from `SFTP_HOST`,
//! `SFTP_USERNAME`, `SFTP_PASSWORD`, and host-key trust from `SFTP_KNOWN_HOSTS` (a file) or
//! `SFTP_HOST_KEY_FINGERPRINT`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferry_core::config::{limits, Check, Component, Destination, RawFile, SecretField, Shape};
use serde::Deserialize;
use serde_json::Value;

use crate::{Auth, HostKeyPolicy, SftpSettings};

/// The `sftp` destination as configured.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "sftp destination")]
pub struct RawSftpDestination {
    /// Target directory on the server; `SFTP_DIRECTORY` when absent.
    #[serde(default)]
    pub path: Option<String>,
    /// Never accepted: a password does not belong in a config file. Refused with a message
    /// that names `SFTP_PASSWORD`, `password_env` and `password_file`.
    #[serde(default)]
    #[schemars(skip)]
    pub password: Option<Value>,
    /// Port; 22 by default.
    #[serde(default = "port22")]
    pub port: u16,
    /// Host; `SFTP_HOST` when absent.
    #[serde(default)]
    pub host: Option<String>,
    /// Login; `SFTP_USERNAME` when absent.
    #[serde(default)]
    pub username: Option<String>,
    /// Environment variable holding the password; `SFTP_PASSWORD` by default.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password (a mounted secret).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// OpenSSH private key file for key authentication.
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    /// Environment variable holding the key's passphrase.
    #[serde(default)]
    pub private_key_passphrase_env: Option<String>,
    /// OpenSSH known_hosts file listing the server's host keys.
    #[serde(default)]
    pub known_hosts_file: Option<PathBuf>,
    /// Pinned host key fingerprint, `SHA256:…` as `ssh-keygen -l -E sha256` prints it.
    #[serde(default)]
    pub host_key_fingerprint: Option<String>,
    /// Connect and per-request timeout in seconds; 30 by default.
    #[serde(default = "secs30")]
    pub timeout_secs: u64,
    /// The files written: name template, format, splitting, and what to do when a name is taken.
    pub file: RawFile,
}

fn port22() -> u16 {
    22
}

fn secs30() -> u64 {
    30
}

/// Checks an `sftp` destination; problems go to `cx` (which stands at the destination).
pub fn validate_destination(value: &Value, cx: &Check<'_>) -> Option<Destination> {
    let s: RawSftpDestination = cx.parse(value)?;
    let placeholder = |var: &str| cx.elsewhere().then(|| format!("<{var}>"));
    let file = s.file.validate(&cx.at("file"));
    let host = s.host.clone().or_else(|| cx.env("SFTP_HOST")).filter(|h| !h.is_empty()).or_else(|| placeholder("SFTP_HOST"));
    if host.is_none() {
        cx.err("host", format!("missing: set {} or the SFTP_HOST environment variable", cx.path("host")));
    }
    let username =
        s.username.clone().or_else(|| cx.env("SFTP_USERNAME")).filter(|h| !h.is_empty()).or_else(|| placeholder("SFTP_USERNAME"));
    if username.is_none() {
        cx.err("username", format!("missing: set {} or the SFTP_USERNAME environment variable", cx.path("username")));
    }
    if s.password.is_some() {
        cx.err(
            "password",
            format!(
                "a password does not belong in a config file: remove it and set the SFTP_PASSWORD environment variable \
                 (or name another variable with {} or a mounted file with {})",
                cx.path("password_env"),
                cx.path("password_file")
            ),
        );
    }
    let path = s.path.clone().or_else(|| cx.env("SFTP_DIRECTORY")).or_else(|| placeholder("SFTP_DIRECTORY")).unwrap_or_default();
    if s.path.is_none() && path.is_empty() {
        cx.err("path", format!("missing: set {} (the target directory on the server) or SFTP_DIRECTORY", cx.path("path")));
    } else if path.is_empty() || path.contains('\0') {
        cx.err("path", "expected the target directory on the server, e.g. \"/upload\"");
    } else if path.len() > limits::MAX_PATH_BYTES {
        cx.err(
            "path",
            format!("{} is longer than {} bytes, the longest path a server accepts", limits::quote(&path), limits::MAX_PATH_BYTES),
        );
    } else if let Some(part) = path.split('/').find(|p| p.len() > limits::MAX_NAME_BYTES) {
        cx.err("path", format!("the directory name {} is longer than {} bytes", limits::quote(part), limits::MAX_NAME_BYTES));
    }
    if let Some(h) = host.as_deref().filter(|h| !cx.elsewhere() || !h.starts_with('<')) {
        if h.len() > limits::MAX_HOST_BYTES || !h.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_')) {
            cx.err("host", format!("expected a host name or IP address, found {}", limits::quote(h)));
        }
    }
    if let Some(u) = username.as_deref().filter(|u| u.len() > 256 || u.chars().any(char::is_control)) {
        cx.err(
            "username",
            format!("expected a login name of at most 256 characters without control characters, found {}", limits::quote(u)),
        );
    }
    if s.port == 0 {
        cx.err("port", "expected a port from 1 to 65535");
    }
    if s.timeout_secs == 0 || s.timeout_secs > 3600 {
        cx.err("timeout_secs", format!("expected 1 to 3600 seconds, found {}", s.timeout_secs));
    }
    let mut secrets = Vec::new();
    let auth = if let Some(key) = &s.private_key_file {
        let passphrase = match &s.private_key_passphrase_env {
            Some(var) => match cx.env(var) {
                Some(p) => Some(ferry_core::Secret::new(p)),
                None if cx.elsewhere() => None,
                None => {
                    cx.err("private_key_passphrase_env", format!("environment variable {var} is not set"));
                    None
                }
            },
            None => None,
        };
        if !cx.elsewhere() && !key.exists() {
            cx.err("private_key_file", format!("file {} does not exist", key.display()));
        }
        secrets.extend(passphrase.clone());
        Some(Auth::PrivateKey { path: key.clone(), passphrase })
    } else {
        let field = SecretField {
            env_field: "password_env",
            var: s.password_env.as_deref(),
            default_var: "SFTP_PASSWORD",
            file_field: "password_file",
            file: s.password_file.as_ref(),
        };
        match cx.secret(field) {
            Ok(p) => {
                secrets.push(p.clone());
                Some(Auth::Password(p))
            }
            Err((field, message)) => {
                let hint = if s.password_env.is_none() && s.password_file.is_none() {
                    format!(" (or set {} or {})", cx.path("password_file"), cx.path("private_key_file"))
                } else {
                    String::new()
                };
                cx.err(field, format!("no credentials: {message}{hint}"));
                None
            }
        }
    };
    let known_hosts_file = s.known_hosts_file.clone().or_else(|| {
        if s.host_key_fingerprint.is_none() {
            cx.env("SFTP_KNOWN_HOSTS").map(PathBuf::from)
        } else {
            None
        }
    });
    let fingerprint =
        s.host_key_fingerprint.clone().or_else(|| if known_hosts_file.is_none() { cx.env("SFTP_HOST_KEY_FINGERPRINT") } else { None });
    let host_key = match (&known_hosts_file, &fingerprint) {
        (Some(_), Some(_)) => {
            cx.err(
                "host_key_fingerprint",
                format!("set either {} or {}, not both", cx.name("known_hosts_file"), cx.name("host_key_fingerprint")),
            );
            None
        }
        (None, None) if cx.elsewhere() => Some(HostKeyPolicy::Fingerprint("<SFTP_HOST_KEY_FINGERPRINT>".into())),
        (None, None) => {
            cx.err(
                "known_hosts_file",
                "missing: ferry never trusts an unknown host key; set known_hosts_file or host_key_fingerprint (SHA256:…), or SFTP_KNOWN_HOSTS / SFTP_HOST_KEY_FINGERPRINT",
            );
            None
        }
        (Some(f), None) => {
            if !cx.elsewhere() && !f.exists() {
                cx.err("known_hosts_file", format!("file {} does not exist", f.display()));
            }
            Some(HostKeyPolicy::KnownHosts(f.clone()))
        }
        (None, Some(fp)) => {
            let body = fp.strip_prefix("SHA256:").unwrap_or("");
            if body.len() != 43 || !body.chars().all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/') {
                cx.err(
                    "host_key_fingerprint",
                    format!("expected SHA256: followed by 43 base64 characters (ssh-keygen -l -E sha256), found {}", limits::quote(fp)),
                );
            }
            Some(HostKeyPolicy::Fingerprint(fp.clone()))
        }
    };
    let settings = SftpSettings {
        host: host?,
        port: s.port,
        username: username?,
        auth: auth?,
        host_key: host_key?,
        directory: path,
        timeout: Duration::from_secs(s.timeout_secs),
    };
    let describe = format!("sftp://{}:{}{}", settings.host, settings.port, settings.directory);
    Some(Destination {
        component: Component { type_name: "sftp".into(), describe, settings: Arc::new(settings), secrets, staged: None },
        shape: Shape::File(file?),
    })
}
