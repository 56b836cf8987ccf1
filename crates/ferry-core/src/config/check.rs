//! The context a configuration is checked in: where in the file a check is (for field paths),
//! the environment, the deployment, and the list of problems found so far. Component crates
//! validate their settings through it, so every error names the field as the user wrote it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{ConfigError, Deployment};
use crate::Secret;

/// Where the checks of one part of the configuration report, and what they may look up.
#[derive(Clone)]
pub struct Check<'a> {
    prefix: String,
    env: &'a dyn Fn(&str) -> Option<String>,
    deployment: Deployment,
    /// Normalised path → the path the user wrote (seed-form files, see `legacy`).
    aliases: Rc<HashMap<String, String>>,
    errors: Rc<RefCell<Vec<ConfigError>>>,
    /// Settings that are valid but risky, as the user allowed them: printed by `ferry check`.
    warnings: Rc<RefCell<Vec<ConfigError>>>,
}

impl<'a> Check<'a> {
    /// A check of a whole file.
    pub(crate) fn root(env: &'a dyn Fn(&str) -> Option<String>, deployment: Deployment, aliases: HashMap<String, String>) -> Self {
        Self { prefix: String::new(), env, deployment, aliases: Rc::new(aliases), errors: Rc::default(), warnings: Rc::default() }
    }

    /// The same check one field deeper: `cx.at("file")`, `cx.at("columns[2]")`.
    pub fn at(&self, field: &str) -> Check<'a> {
        Check { prefix: self.join(field), ..self.clone() }
    }

    fn join(&self, field: &str) -> String {
        match (self.prefix.is_empty(), field.starts_with('[')) {
            (true, _) => field.to_owned(),
            (false, true) => format!("{}{field}", self.prefix),
            (false, false) => format!("{}.{field}", self.prefix),
        }
    }

    /// The path of `field` (empty: this part itself) as the user wrote it, for messages:
    /// `exports[0].destination.host`, or `sftp.host` for a seed-form file.
    pub fn path(&self, field: &str) -> String {
        let full = if field.is_empty() { self.prefix.clone() } else { self.join(field) };
        translate(&self.aliases, &full)
    }

    /// The name of `field` as the user wrote it: `table`, or `source_table` in a seed-form file.
    pub fn name(&self, field: &str) -> String {
        let path = self.path(field);
        let last = path.rsplit('.').next().unwrap_or(&path);
        last.split('[').next().unwrap_or(last).to_owned()
    }

    /// Records a problem with `field` (empty: this part itself).
    pub fn err(&self, field: &str, message: impl Into<String>) {
        let path = self.path(field);
        let message = super::limits::bound_message(message.into());
        let mut errors = self.errors.borrow_mut();
        if !errors.iter().any(|e| e.path == path && e.message == message) {
            errors.push(ConfigError { path, message });
        }
    }

    /// Records a warning about `field`: valid, but risky in a way the user said they accept.
    pub fn warn(&self, field: &str, message: impl Into<String>) {
        let path = self.path(field);
        let message = super::limits::bound_message(message.into());
        let mut warnings = self.warnings.borrow_mut();
        if !warnings.iter().any(|e| e.path == path && e.message == message) {
            warnings.push(ConfigError { path, message });
        }
    }

    /// The warnings recorded so far, through every `at` of the same root.
    pub(crate) fn take_warnings(&self) -> Vec<ConfigError> {
        std::mem::take(&mut self.warnings.borrow_mut())
    }

    /// The problems recorded so far, through every `at` of the same root.
    pub(crate) fn take_errors(&self) -> Vec<ConfigError> {
        std::mem::take(&mut self.errors.borrow_mut())
    }

    /// An environment variable.
    pub fn env(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }

    /// Whether secrets, mounted files and deployment settings are looked at.
    pub fn deployment(&self) -> Deployment {
        self.deployment
    }

    /// True when checking before deployment ([`Deployment::Elsewhere`]).
    pub fn elsewhere(&self) -> bool {
        self.deployment == Deployment::Elsewhere
    }

    /// Reads this part's settings from `value` as `T`, reporting shape errors (unknown fields,
    /// wrong types) with their full path.
    pub fn parse<T: DeserializeOwned>(&self, value: &Value) -> Option<T> {
        serde_path_to_error::deserialize(value).map_err(|e| self.shape_error(e)).ok()
    }

    fn shape_error(&self, e: serde_path_to_error::Error<serde_json::Error>) {
        let inner = e.path().to_string();
        let field = if inner == "." { String::new() } else { inner };
        self.err(&field, e.into_inner().to_string());
    }

    /// A secret from a file, else from an environment variable (`var`, else `default_var`).
    /// Before deployment it is a placeholder. The error is `(field, message)` for the caller
    /// to report, in its own words, with [`Check::err`].
    pub fn secret(&self, field: SecretField<'_>) -> Result<Secret, (&'static str, String)> {
        let SecretField { env_field, var, default_var, file_field, file } = field;
        if self.elsewhere() {
            return Ok(Secret::new(""));
        }
        if let Some(f) = file {
            return match std::fs::read_to_string(f) {
                Ok(v) => Ok(Secret::new(v.trim_end_matches(['\r', '\n']))),
                Err(e) => Err((file_field, format!("cannot read {}: {e}", f.display()))),
            };
        }
        let var = var.unwrap_or(default_var);
        match self.env(var) {
            Some(v) if !v.is_empty() => Ok(Secret::new(v)),
            _ => Err((env_field, format!("environment variable {var} is not set"))),
        }
    }
}

/// The environment variable that allows credentials to travel unencrypted, to a server on
/// this machine only (`127.0.0.1`, `::1`, `localhost`): `1` allows it. For local emulators and
/// stand-ins; without it, an `http://` URL or an SMTP server without TLS that would receive a
/// token, password or webhook URL is a configuration error.
pub const PLAINTEXT_LOOPBACK_ENV: &str = "FERRY_ALLOW_PLAINTEXT_LOOPBACK";

impl Check<'_> {
    /// Whether a credential may go unencrypted to `host`: only to this machine, and only with
    /// [`PLAINTEXT_LOOPBACK_ENV`] set to `1`.
    pub fn plaintext_allowed(&self, host: &str) -> bool {
        is_loopback(host) && self.env(PLAINTEXT_LOOPBACK_ENV).as_deref() == Some("1")
    }

    /// Refuses `url` for `field` when it is not `https://`, unless it is `http://` to this
    /// machine and [`PLAINTEXT_LOOPBACK_ENV`] allows it. `what` says what the URL would carry.
    pub fn require_tls_url(&self, field: &str, url: &str, what: &str) {
        let Some(rest) = url.strip_prefix("http://") else {
            if !url.starts_with("https://") {
                self.err(field, format!("expected an https:// URL, found {}", super::limits::quote(scheme_only(url))));
            }
            return;
        };
        let host = url_host(rest);
        if !self.plaintext_allowed(host) {
            let local =
                if is_loopback(host) { format!("; for a stand-in on this machine set {PLAINTEXT_LOOPBACK_ENV}=1") } else { String::new() };
            self.err(field, format!("an http:// URL would send {what} unencrypted: use https://{local}"));
        }
    }
}

/// The scheme of a URL, for messages that must not quote the rest (it may be a secret).
fn scheme_only(url: &str) -> &str {
    url.split_once("://").map_or("(no scheme)", |(scheme, _)| scheme)
}

/// The host of the part of a URL after `scheme://`: `[::1]` → `::1`, `h:8080/x` → `h`. An
/// authority with user information (`@`), or a backslash that URL parsers read as a path
/// separator, has no host here: it is never taken for this machine.
fn url_host(rest: &str) -> &str {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains(['@', '\\']) || authority.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return "";
    }
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or_default();
    }
    authority.split(':').next().unwrap_or_default()
}

/// Whether `host` is this machine: `localhost`, `127.x.y.z` or `::1`.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Where a secret may come from: a file, else an environment variable.
pub struct SecretField<'a> {
    /// The field naming the variable (`password_env`).
    pub env_field: &'static str,
    /// The variable the config names, if any.
    pub var: Option<&'a str>,
    /// The variable read when the config names none (`SFTP_PASSWORD`).
    pub default_var: &'a str,
    /// The field naming the file (`password_file`).
    pub file_field: &'static str,
    /// The file the config names, if any.
    pub file: Option<&'a PathBuf>,
}

/// `full` as the user wrote it: an exact alias, else the longest aliased prefix.
pub(crate) fn translate(aliases: &HashMap<String, String>, full: &str) -> String {
    if let Some(a) = aliases.get(full) {
        return a.clone();
    }
    let mut best: Option<(&String, &String)> = None;
    for (from, to) in aliases {
        let under = full.len() > from.len() && full.starts_with(from.as_str()) && matches!(full.as_bytes()[from.len()], b'.' | b'[');
        if under && best.is_none_or(|(b, _)| from.len() > b.len()) {
            best = Some((from, to));
        }
    }
    match best {
        Some((from, to)) => format!("{to}{}", &full[from.len()..]),
        None => full.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_urls() {
        assert_eq!(url_host("127.0.0.1:9050/bigquery"), "127.0.0.1");
        assert_eq!(url_host("[::1]:80/x"), "::1");
        assert_eq!(url_host("user:pw@localhost:1/x"), "", "user information: not taken for this machine");
        assert_eq!(url_host("evil.example\\@127.0.0.1/x"), "", "a backslash is a path separator to URL parsers");
        assert_eq!(url_host("evil.example\\.127.0.0.1/x"), "");
        assert_eq!(url_host("hooks.example?x=1"), "hooks.example");
        assert!(is_loopback("localhost") && is_loopback("127.9.9.9") && is_loopback("::1") && is_loopback("[::1]"));
        assert!(!is_loopback("127.0.0.1.example.com") && !is_loopback("10.0.0.1") && !is_loopback("localhost.example"));
    }

    #[test]
    fn credentials_need_tls_except_to_this_machine_when_allowed() {
        let allow = |k: &str| (k == PLAINTEXT_LOOPBACK_ENV).then(|| "1".to_owned());
        let deny = |_: &str| None;
        let errors = |env: &dyn Fn(&str) -> Option<String>, url: &str| {
            let cx = Check::root(env, super::super::Deployment::Here, HashMap::new());
            cx.require_tls_url("url", url, "the token");
            cx.take_errors().into_iter().map(|e| e.message).collect::<Vec<_>>()
        };
        assert!(errors(&deny, "https://bigquery.googleapis.com").is_empty());
        assert!(errors(&allow, "http://127.0.0.1:9050").is_empty());
        assert!(errors(&allow, "http://localhost/x").is_empty());
        let e = errors(&deny, "http://127.0.0.1:9050");
        assert!(e[0].contains("unencrypted") && e[0].contains("FERRY_ALLOW_PLAINTEXT_LOOPBACK=1"), "{e:?}");
        let e = errors(&allow, "http://hooks.example.com/services/T/B/secret");
        assert!(e[0].contains("use https://") && !e[0].contains(PLAINTEXT_LOOPBACK_ENV) && !e[0].contains("secret"), "{e:?}");
        let e = errors(&allow, "ftp://x/secret");
        assert!(e[0].contains("\"ftp\"") && !e[0].contains("secret"), "{e:?}");
    }
}
