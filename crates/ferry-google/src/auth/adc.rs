//! Application Default Credentials: where Google's own client libraries look for credentials,
//! in their order, and the two kinds of credentials file ferry reads.
//!
//! 1. the file named by `GOOGLE_APPLICATION_CREDENTIALS` (an error if it cannot be used);
//! 2. gcloud's application-default file, `$CLOUDSDK_CONFIG/application_default_credentials.json`
//!    or `$HOME/.config/gcloud/application_default_credentials.json` (skipped when absent);
//! 3. the metadata server.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use ferry_core::Secret;
use ring::signature::RsaKeyPair;
use serde_json::{Map, Value};

use crate::GoogleError;

/// The variable naming a credentials file, as Google's client libraries read it.
pub const CREDENTIALS_ENV: &str = "GOOGLE_APPLICATION_CREDENTIALS";

/// The variable moving gcloud's configuration directory.
pub const CLOUDSDK_CONFIG_ENV: &str = "CLOUDSDK_CONFIG";

/// The name of gcloud's application-default file (`gcloud auth application-default login`).
const GCLOUD_FILE: &str = "application_default_credentials.json";

/// Google's token endpoint, for files that do not name one.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// A credentials file is a few kilobytes; a larger file is not one, and is not read whole.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// What the discovery reads from the environment, taken when a token source is made.
#[derive(Debug, Clone, Default)]
pub(crate) struct AdcEnv {
    /// `GOOGLE_APPLICATION_CREDENTIALS`.
    pub credentials: Option<String>,
    /// `CLOUDSDK_CONFIG`.
    pub cloudsdk_config: Option<String>,
    /// `HOME`.
    pub home: Option<String>,
}

impl AdcEnv {
    pub fn read(env: &dyn Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        Self { credentials: var(CREDENTIALS_ENV), cloudsdk_config: var(CLOUDSDK_CONFIG_ENV), home: var("HOME") }
    }

    /// gcloud's application-default file, if there is a directory to look in.
    fn gcloud_file(&self) -> Option<PathBuf> {
        match (&self.cloudsdk_config, &self.home) {
            (Some(dir), _) => Some(Path::new(dir).join(GCLOUD_FILE)),
            (None, Some(home)) => Some(Path::new(home).join(".config/gcloud").join(GCLOUD_FILE)),
            (None, None) => None,
        }
    }
}

/// Where a credentials file was found, for messages and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Named by `GOOGLE_APPLICATION_CREDENTIALS`.
    EnvVar,
    /// gcloud's application-default file.
    Gcloud,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::EnvVar => "named by GOOGLE_APPLICATION_CREDENTIALS",
            Origin::Gcloud => "gcloud application-default credentials",
        })
    }
}

/// The credentials a token source settled on.
pub(crate) enum Found {
    File(CredentialsFile),
    MetadataServer,
}

/// A credentials file that was read and checked.
pub(crate) struct CredentialsFile {
    pub path: PathBuf,
    pub origin: Origin,
    pub kind: FileKind,
}

pub(crate) enum FileKind {
    ServiceAccount(ServiceAccount),
    AuthorizedUser(AuthorizedUser),
}

/// A service-account key (`"type": "service_account"`).
pub(crate) struct ServiceAccount {
    pub client_email: String,
    pub private_key_id: Option<String>,
    pub key: Arc<RsaKeyPair>,
    pub token_uri: String,
}

/// A user's refresh token (`"type": "authorized_user"`, what `gcloud auth application-default
/// login` writes).
pub(crate) struct AuthorizedUser {
    pub client_id: String,
    pub client_secret: Secret,
    pub refresh_token: Secret,
    pub token_uri: String,
}

impl CredentialsFile {
    /// What the log says about these credentials: the kind, the file, the account; no secret.
    pub fn describe(&self) -> String {
        let path = self.path.display();
        match &self.kind {
            FileKind::ServiceAccount(sa) => {
                format!("service-account key {path} ({}), account {}, token endpoint {}", self.origin, sa.client_email, sa.token_uri)
            }
            FileKind::AuthorizedUser(u) => {
                format!("authorized-user file {path} ({}), client {}, token endpoint {}", self.origin, u.client_id, u.token_uri)
            }
        }
    }

    pub fn error(&self, field: &'static str, reason: impl Into<String>) -> GoogleError {
        field_error(&self.path, self.origin, field, reason)
    }
}

/// Discovers credentials in Google's order. A file that is named or present but cannot be
/// used is an error, never a silent fall-through to the next source.
pub(crate) fn discover(env: &AdcEnv) -> Result<Found, GoogleError> {
    if let Some(path) = &env.credentials {
        let path = PathBuf::from(path);
        let Some(bytes) = read(&path, Origin::EnvVar)? else {
            return Err(file_error(&path, Origin::EnvVar, "no such file"));
        };
        return parse(&path, Origin::EnvVar, &bytes).map(Found::File);
    }
    if let Some(path) = env.gcloud_file() {
        if let Some(bytes) = read(&path, Origin::Gcloud)? {
            return parse(&path, Origin::Gcloud, &bytes).map(Found::File);
        }
    }
    Ok(Found::MetadataServer)
}

/// The file's bytes; `None` when it does not exist.
fn read(path: &Path, origin: Origin) -> Result<Option<Vec<u8>>, GoogleError> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(file_error(path, origin, format!("cannot be read: {e}"))),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| file_error(path, origin, format!("cannot be read: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(file_error(path, origin, format!("larger than {} KiB: not a credentials file", MAX_FILE_BYTES / 1024)));
    }
    Ok(Some(bytes))
}

/// Reads a credentials file. Messages name the file and the field and never quote a value that
/// could be secret.
pub(crate) fn parse(path: &Path, origin: Origin, bytes: &[u8]) -> Result<CredentialsFile, GoogleError> {
    // serde's messages can quote the text: report the position only.
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| file_error(path, origin, format!("not JSON (line {}, column {})", e.line(), e.column())))?;
    let Value::Object(map) = value else {
        return Err(file_error(path, origin, "not a JSON object"));
    };
    let fields = Fields { path, origin, map: &map };
    let kind = match fields.string("type")?.as_str() {
        "service_account" => FileKind::ServiceAccount(ServiceAccount {
            client_email: fields.string("client_email")?,
            private_key_id: fields.optional("private_key_id")?,
            key: Arc::new(private_key(&fields)?),
            token_uri: fields.token_uri()?,
        }),
        "authorized_user" => FileKind::AuthorizedUser(AuthorizedUser {
            client_id: fields.string("client_id")?,
            client_secret: Secret::new(fields.string("client_secret")?),
            refresh_token: Secret::new(fields.string("refresh_token")?),
            token_uri: fields.token_uri()?,
        }),
        other => {
            let shown: String = other.chars().take(40).collect();
            return Err(
                fields.error("type", format!("{shown:?} is not supported: ferry reads \"service_account\" and \"authorized_user\" files"))
            );
        }
    };
    Ok(CredentialsFile { path: path.to_owned(), origin, kind })
}

struct Fields<'a> {
    path: &'a Path,
    origin: Origin,
    map: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn error(&self, field: &'static str, reason: impl Into<String>) -> GoogleError {
        field_error(self.path, self.origin, field, reason)
    }

    fn optional(&self, field: &'static str) -> Result<Option<String>, GoogleError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.error(field, "expected a string")),
        }
    }

    fn string(&self, field: &'static str) -> Result<String, GoogleError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Err(self.error(field, "missing")),
            Some(Value::String(s)) if s.trim().is_empty() => Err(self.error(field, "empty")),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(self.error(field, "expected a string")),
        }
    }

    /// `token_uri`, Google's endpoint by default. It receives a signed assertion or a refresh
    /// token, so it must be HTTPS; plain HTTP only to this machine (a local stand-in).
    fn token_uri(&self) -> Result<String, GoogleError> {
        let Some(uri) = self.optional("token_uri")? else {
            return Ok(DEFAULT_TOKEN_URI.to_owned());
        };
        let shown: String = uri.chars().take(80).collect();
        let url = reqwest::Url::parse(&uri).map_err(|e| self.error("token_uri", format!("{shown:?} is not a URL: {e}")))?;
        let local = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        match url.scheme() {
            "https" => Ok(uri),
            "http" if local => Ok(uri),
            _ => Err(self.error("token_uri", format!("{shown:?}: expected an https:// URL (http:// only to 127.0.0.1 or localhost)"))),
        }
    }
}

/// The RSA key of `private_key`: PKCS#8 in PEM, as Google writes it.
fn private_key(fields: &Fields<'_>) -> Result<RsaKeyPair, GoogleError> {
    const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
    const END: &str = "-----END PRIVATE KEY-----";
    let pem = fields.string("private_key")?;
    if pem.contains("-----BEGIN RSA PRIVATE KEY-----") {
        return Err(fields.error(
            "private_key",
            "a PKCS#1 key (BEGIN RSA PRIVATE KEY); Google's key files hold PKCS#8 (BEGIN PRIVATE KEY): convert it with `openssl pkcs8 -topk8 -nocrypt`",
        ));
    }
    let body = pem
        .split_once(BEGIN)
        .and_then(|(_, rest)| rest.split_once(END))
        .map(|(body, _)| body)
        .ok_or_else(|| fields.error("private_key", format!("not a PEM private key (no {BEGIN} … {END})")))?;
    let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der =
        base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| fields.error("private_key", "the PEM body is not base64"))?;
    RsaKeyPair::from_pkcs8(&der).map_err(|e| fields.error("private_key", format!("not a usable RSA private key ({e})")))
}

fn file_error(path: &Path, origin: Origin, reason: impl Into<String>) -> GoogleError {
    GoogleError::CredentialsFile { file: path.display().to_string(), origin, reason: reason.into() }
}

fn field_error(path: &Path, origin: Origin, field: &'static str, reason: impl Into<String>) -> GoogleError {
    GoogleError::CredentialsField { file: path.display().to_string(), origin, field, reason: reason.into() }
}
