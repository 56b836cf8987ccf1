//! The `mysql` source component (MySQL and MariaDB): a server, the login, TLS, and a table or
//! a query.
//!
//! ```json
//! "source": {"type": "mysql", "host": "db.internal", "port": 3306, "database": "app", "user": "etl",
//!            "password_file": "/secrets/mysql-password", "tls": "verify-full", "ca_file": "/secrets/ca.pem",
//!            "table": "orders", "columns": ["id", "updated_at"], "batch_rows": 10000}
//! "source": {"type": "mysql", …, "query": "SELECT … WHERE day = {date}"}
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use ferry_core::config::check::{is_loopback, PLAINTEXT_LOOPBACK_ENV};
use ferry_core::config::{limits, Check, Component, SecretField};
use ferry_core::Secret;
use serde::Deserialize;
use serde_json::Value;

/// Rows per batch unless `batch_rows` says otherwise.
pub const DEFAULT_BATCH_ROWS: usize = 10_000;
/// The most rows a batch may hold.
pub const MAX_BATCH_ROWS: usize = 1_000_000;
/// The variable the password is read from when neither `password_env` nor `password_file` is
/// set (the variable MySQL's own clients read).
pub const DEFAULT_PASSWORD_ENV: &str = "MYSQL_PWD";
/// The longest identifier MySQL and MariaDB keep (database, table and column names).
const MAX_IDENTIFIER_BYTES: usize = 64;
/// The longest user name (MariaDB's limit; MySQL's is 32).
const MAX_USER_BYTES: usize = 80;

/// The `mysql` source as configured.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "mysql source")]
pub struct RawMySqlSource {
    /// The server's host name or IP address.
    #[serde(default)]
    pub host: Option<String>,
    /// Port; 3306 by default.
    #[serde(default = "port3306")]
    pub port: u16,
    /// The database to read (the schema a bare `table` is in).
    #[serde(default)]
    pub database: Option<String>,
    /// The login.
    #[serde(default)]
    pub user: Option<String>,
    /// Never accepted: a password does not belong in a config file. Refused with a message
    /// that names `password_env` and `password_file`.
    #[serde(default)]
    #[schemars(skip)]
    pub password: Option<Value>,
    /// Environment variable holding the password; `MYSQL_PWD` by default.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password (a mounted secret).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// `verify-full` (default: the server's certificate chains to `ca_file`, else to the
    /// webpki roots, and names `host`), `require` (encrypted, the certificate not checked) or
    /// `disable` (only for a server on this machine, with `FERRY_ALLOW_PLAINTEXT_LOOPBACK=1`).
    #[serde(default)]
    pub tls: TlsSetting,
    /// PEM file of the CA certificates to trust instead of the webpki roots (`verify-full`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// `table` (in `database`) or `database.table`; or use `query`. Letters, digits, `_` and
    /// `$`; case-sensitive where the server's file system is.
    #[serde(default)]
    pub table: Option<String>,
    /// A SELECT whose result is exported; `{date}` becomes the run date, a `DATE` parameter.
    #[serde(default)]
    pub query: Option<String>,
    /// Columns to export, in order; all columns when absent.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Rows read and decoded per batch; 10000 by default, 1 to 1000000. About two batches are
    /// in memory at a time.
    #[serde(default)]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub batch_rows: Option<u64>,
}

fn port3306() -> u16 {
    3306
}

/// `tls` as configured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TlsSetting {
    #[default]
    VerifyFull,
    Require,
    Disable,
}

/// How the connection is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tls {
    /// The certificate chains to `ca_file` (else the webpki roots) and names the host.
    VerifyFull { ca_file: Option<PathBuf> },
    /// Encrypted; the certificate is not checked.
    Require,
    /// No TLS: only to a server on this machine.
    Disable,
}

/// A table, `database.table` or `table` (in the connection's database); both parts validated
/// identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub database: Option<String>,
    pub table: String,
}

impl TableName {
    /// Parses and validates; the error says what was expected.
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('.').collect();
        let (database, table) = match parts.as_slice() {
            [t] => (None, *t),
            [d, t] => (Some(*d), *t),
            _ => return Err(format!("expected `database.table` or `table`, found {}", limits::quote(s))),
        };
        for part in database.iter().chain([&table]) {
            if !is_identifier(part) {
                return Err(format!(
                    "{} is not a valid name (letters, digits, '_' and '$', at most {MAX_IDENTIFIER_BYTES} bytes)",
                    limits::quote(part)
                ));
            }
        }
        Ok(Self { database: database.map(str::to_owned), table: table.to_owned() })
    }

    /// The quoted form: `` `database`.`table` ``.
    pub fn quoted(&self) -> String {
        match &self.database {
            Some(d) => format!("{}.{}", quote_identifier(d), quote_identifier(&self.table)),
            None => quote_identifier(&self.table),
        }
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.database {
            Some(d) => write!(f, "{d}.{}", self.table),
            None => f.write_str(&self.table),
        }
    }
}

/// Whether `s` is a name ferry puts into SQL: 1 to 64 bytes of ASCII letters, digits, `_` and
/// `$` (MySQL's unquoted identifier characters; ferry quotes them all the same).
pub fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_IDENTIFIER_BYTES && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

/// A backtick-quoted identifier, with any `` ` `` doubled (names the server reports for a
/// query's columns may hold any character).
pub fn quote_identifier(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// What a `mysql` source reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// A table.
    Table(TableName),
    /// A SELECT statement, with `CAST(? AS DATE)` in place of each `{date}`; `run_dates` is
    /// how many there are, each bound to the run date.
    Query { sql: String, run_dates: usize },
}

/// Validated settings of a `mysql` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MySqlSettings {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: Secret,
    pub tls: Tls,
    pub source: SourceSpec,
    /// Empty means all columns.
    pub columns: Vec<String>,
    pub batch_rows: usize,
}

impl MySqlSettings {
    /// `host:port/database`, for messages.
    pub fn server(&self) -> String {
        format!("{}:{}/{}", self.host_for_url(), self.port, self.database)
    }

    /// The source for reports and the metadata table: `mysql://host:port/database/table`, or
    /// `…/query`.
    pub fn describe(&self) -> String {
        let what = match &self.source {
            SourceSpec::Table(t) => t.to_string(),
            SourceSpec::Query { .. } => "query".into(),
        };
        format!("mysql://{}/{what}", self.server())
    }

    /// `table orders` or `query`, for messages.
    pub(crate) fn what(&self) -> String {
        match &self.source {
            SourceSpec::Table(t) => format!("table {t}"),
            SourceSpec::Query { .. } => "query".into(),
        }
    }

    fn host_for_url(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

/// Checks a `mysql` source; problems go to `cx` (which stands at the source).
pub fn validate_source(value: &Value, cx: &Check<'_>) -> Option<Component> {
    let raw: RawMySqlSource = cx.parse(value)?;
    if raw.password.is_some() {
        cx.err(
            "password",
            format!(
                "a password does not belong in a config file: remove it and name an environment variable with {} \
                 or a mounted file with {}",
                cx.path("password_env"),
                cx.path("password_file")
            ),
        );
    }
    let host = required(cx, "host", raw.host.as_deref(), "the server's host name or IP address");
    if let Some(h) = &host {
        if h.len() > limits::MAX_HOST_BYTES || !h.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_')) {
            cx.err("host", format!("expected a host name or IP address, found {}", limits::quote(h)));
        }
    }
    if raw.port == 0 {
        cx.err("port", "expected a port from 1 to 65535");
    }
    let database = required(cx, "database", raw.database.as_deref(), "the database to read");
    let user = required(cx, "user", raw.user.as_deref(), "the login");
    // Neither is put into SQL: the login sends both, and catalog look-ups bind the database.
    for (field, value, max) in [("database", &database, MAX_IDENTIFIER_BYTES), ("user", &user, MAX_USER_BYTES)] {
        if let Some(v) = value.as_deref().filter(|v| v.len() > max || v.chars().any(char::is_control)) {
            cx.err(field, format!("expected at most {max} bytes without control characters, found {}", limits::quote(v)));
        }
    }
    let password = password(&raw, cx);
    let tls = tls(&raw, host.as_deref(), cx);
    let source = source_spec(&raw, cx);
    let columns = columns(&raw, cx);
    let batch_rows = match raw.batch_rows {
        None => Some(DEFAULT_BATCH_ROWS),
        Some(n) if (1..=MAX_BATCH_ROWS as u64).contains(&n) => Some(n as usize),
        Some(n) => {
            cx.err("batch_rows", format!("expected 1 to {MAX_BATCH_ROWS}, found {n}"));
            None
        }
    };
    let settings = MySqlSettings {
        host: host?,
        port: raw.port,
        database: database?,
        user: user?,
        password: password?,
        tls: tls?,
        source: source?,
        columns: columns?,
        batch_rows: batch_rows?,
    };
    Some(Component {
        type_name: "mysql".into(),
        describe: settings.describe(),
        secrets: vec![settings.password.clone()],
        settings: Arc::new(settings),
        staged: None,
    })
}

fn required(cx: &Check<'_>, field: &str, value: Option<&str>, what: &str) -> Option<String> {
    match value {
        Some(v) if !v.is_empty() => Some(v.to_owned()),
        _ => {
            cx.err(field, format!("missing: set {} ({what})", cx.path(field)));
            None
        }
    }
}

fn password(raw: &RawMySqlSource, cx: &Check<'_>) -> Option<Secret> {
    if raw.password_env.is_some() && raw.password_file.is_some() {
        cx.err("password_file", format!("set either {} or {}, not both", cx.name("password_env"), cx.name("password_file")));
        return None;
    }
    let field = SecretField {
        env_field: "password_env",
        var: raw.password_env.as_deref(),
        default_var: DEFAULT_PASSWORD_ENV,
        file_field: "password_file",
        file: raw.password_file.as_ref(),
    };
    match cx.secret(field) {
        Ok(p) => Some(p),
        Err((field, message)) => {
            let hint = if raw.password_env.is_none() && raw.password_file.is_none() {
                format!(" (or name another variable with {} or a mounted file with {})", cx.path("password_env"), cx.path("password_file"))
            } else {
                String::new()
            };
            cx.err(field, format!("no password: {message}{hint}"));
            None
        }
    }
}

fn tls(raw: &RawMySqlSource, host: Option<&str>, cx: &Check<'_>) -> Option<Tls> {
    if raw.ca_file.is_some() && raw.tls != TlsSetting::VerifyFull {
        cx.err("ca_file", format!("{} applies to tls: verify-full only", cx.name("ca_file")));
        return None;
    }
    match raw.tls {
        TlsSetting::VerifyFull => {
            if let (Some(path), false) = (&raw.ca_file, cx.elsewhere()) {
                let checked = std::fs::read(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))
                    .and_then(|pem| crate::tls::check_ca_pem(&pem).map_err(|e| format!("{}: {e}", path.display())));
                if let Err(e) = checked {
                    cx.err("ca_file", e);
                    return None;
                }
            }
            Some(Tls::VerifyFull { ca_file: raw.ca_file.clone() })
        }
        TlsSetting::Require => Some(Tls::Require),
        TlsSetting::Disable => {
            let host = host?;
            if cx.plaintext_allowed(host) {
                return Some(Tls::Disable);
            }
            let local = if is_loopback(host) {
                format!("; for a server on this machine, {PLAINTEXT_LOOPBACK_ENV}=1 allows it")
            } else {
                " (127.0.0.1, ::1 or localhost)".to_owned()
            };
            cx.err(
                "tls",
                format!(
                    "tls: disable would send the login unencrypted to {}; it is allowed only for a server on this machine{local}. \
                     To encrypt without checking the certificate, use tls: require",
                    limits::quote(host)
                ),
            );
            None
        }
    }
}

fn source_spec(raw: &RawMySqlSource, cx: &Check<'_>) -> Option<SourceSpec> {
    let (table, query) = (cx.name("table"), cx.name("query"));
    match (&raw.table, &raw.query) {
        (Some(_), Some(_)) => {
            cx.err("query", format!("set either {table} or {query}, not both"));
            None
        }
        (None, None) => {
            cx.err("table", format!("missing: set {table} (table or database.table) or {query}"));
            None
        }
        (Some(t), None) => TableName::parse(t).map(SourceSpec::Table).map_err(|m| cx.err("table", m)).ok(),
        (None, Some(q)) => {
            let trimmed = q.trim().trim_end_matches(';').trim();
            if trimmed.is_empty() {
                cx.err("query", "the query is empty");
                return None;
            }
            if trimmed.contains(';') {
                cx.err("query", "expected a single SELECT statement, found ';'");
                return None;
            }
            if has_placeholder(trimmed) {
                cx.err("query", "the query may not use ? parameters: ferry binds its own; write {date} for the run date");
                return None;
            }
            let sql = trimmed.replace("'{date}'", "{date}");
            let run_dates = sql.matches("{date}").count();
            Some(SourceSpec::Query { sql: sql.replace("{date}", RUN_DATE), run_dates })
        }
    }
}

/// What `{date}` becomes in a query: a parameter typed as a date.
pub(crate) const RUN_DATE: &str = "CAST(? AS DATE)";

/// Whether `sql` holds a `?` placeholder outside string literals, quoted identifiers and
/// comments.
fn has_placeholder(sql: &str) -> bool {
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'?' => return true,
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < b.len() {
                    if b[i] == b'\\' && q != b'`' {
                        i += 2;
                        continue;
                    }
                    if b[i] == q {
                        // A doubled quote stands for itself.
                        if b.get(i + 1) == Some(&q) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') && b.get(i + 2).is_none_or(|c| c.is_ascii_whitespace()) => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    false
}

fn columns(raw: &RawMySqlSource, cx: &Check<'_>) -> Option<Vec<String>> {
    let Some(cols) = &raw.columns else { return Some(Vec::new()) };
    if cols.is_empty() {
        cx.err("columns", "expected at least one column, or leave columns out to export all");
        return None;
    }
    let mut ok = true;
    let mut seen = std::collections::HashSet::new();
    for (j, c) in cols.iter().enumerate() {
        let at = format!("columns[{j}]");
        if !is_identifier(c) {
            cx.err(
                &at,
                format!(
                    "{} is not a valid column name (letters, digits, '_' and '$', at most {MAX_IDENTIFIER_BYTES} bytes)",
                    limits::quote(c)
                ),
            );
            ok = false;
        } else if !seen.insert(c.to_ascii_lowercase()) {
            // Column names are case-insensitive in MySQL.
            cx.err(&at, format!("duplicate column {}", limits::quote(c)));
            ok = false;
        }
    }
    ok.then(|| cols.clone())
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use ferry_core::config::{Components, ConfigErrors, Destination, RawConfig};

    use super::*;

    thread_local! {
        static VALIDATED: RefCell<Option<Component>> = const { RefCell::new(None) };
    }

    /// Knows the `mysql` source only; its destination is accepted without settings, so that
    /// every error comes from the source.
    struct OnlyMySql;

    impl Components for OnlyMySql {
        fn source_types(&self) -> Vec<&'static str> {
            vec!["mysql"]
        }
        fn destination_types(&self) -> Vec<&'static str> {
            vec!["none"]
        }
        fn source(&self, type_name: &str, value: &Value, cx: &Check<'_>) -> Option<Option<Component>> {
            (type_name == "mysql").then(|| {
                let c = validate_source(value, cx);
                VALIDATED.with(|v| *v.borrow_mut() = c.clone());
                c
            })
        }
        fn destination(&self, _: &str, _: &Value, _: &Check<'_>) -> Option<Option<Destination>> {
            Some(None)
        }
    }

    fn env(k: &str) -> Option<String> {
        match k {
            "MYSQL_PWD" => Some("pw-from-env".into()),
            "DB_PASSWORD" => Some("pw-named".into()),
            PLAINTEXT_LOOPBACK_ENV => Some("1".into()),
            _ => None,
        }
    }

    /// Validates a source with `fields` over a valid base; the settings, or every error as
    /// `path: message`.
    fn check(fields: Value) -> Result<MySqlSettings, Vec<String>> {
        check_in(fields, &env)
    }

    fn check_in(fields: Value, env: &dyn Fn(&str) -> Option<String>) -> Result<MySqlSettings, Vec<String>> {
        let mut source = serde_json::json!({"type": "mysql", "host": "db.internal", "database": "app", "user": "etl", "table": "orders"});
        for (k, v) in fields.as_object().cloned().unwrap_or_default() {
            if v.is_null() {
                source.as_object_mut().unwrap().remove(&k);
            } else {
                source[k] = v;
            }
        }
        let json = serde_json::json!({"exports": [{"name": "x", "source": source, "destination": {"type": "none"}}], "bigquery": {"project": "p"}});
        VALIDATED.with(|v| *v.borrow_mut() = None);
        let raw = RawConfig::from_json(&json.to_string()).map_err(|ConfigErrors(e)| e.iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
        if let Err(ConfigErrors(errors)) = raw.validate(&OnlyMySql, env) {
            return Err(errors.iter().map(|e| format!("{}: {}", e.path, e.message)).collect());
        }
        let component = VALIDATED.with(|v| v.borrow_mut().take()).expect("validated");
        Ok(component.settings::<MySqlSettings>().expect("mysql settings").clone())
    }

    fn errors(fields: Value) -> Vec<String> {
        check(fields).expect_err("invalid")
    }

    #[test]
    fn a_valid_source_with_defaults() {
        let s = check(serde_json::json!({})).expect("valid");
        assert_eq!((s.host.as_str(), s.port, s.database.as_str(), s.user.as_str()), ("db.internal", 3306, "app", "etl"));
        assert_eq!(s.password.expose(), "pw-from-env");
        assert_eq!(s.tls, Tls::VerifyFull { ca_file: None });
        assert_eq!(s.source, SourceSpec::Table(TableName { database: None, table: "orders".into() }));
        assert_eq!(s.batch_rows, DEFAULT_BATCH_ROWS);
        assert_eq!(s.describe(), "mysql://db.internal:3306/app/orders");
        let s = check(serde_json::json!({"password_env": "DB_PASSWORD", "host": "::1", "table": null, "query": "SELECT 1"})).unwrap();
        assert_eq!(s.password.expose(), "pw-named");
        assert_eq!(s.describe(), "mysql://[::1]:3306/app/query");
        let s = check(serde_json::json!({"table": "sales.orders", "port": 3307})).unwrap();
        assert_eq!(s.describe(), "mysql://db.internal:3307/app/sales.orders");
        assert_eq!(s.source, SourceSpec::Table(TableName { database: Some("sales".into()), table: "orders".into() }));
    }

    #[test]
    fn a_literal_password_is_refused_naming_the_other_fields() {
        let e = errors(serde_json::json!({"password": "hunter2-sentinel"}));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("exports[0].source.password: a password does not belong in a config file"), "{e:?}");
        assert!(e[0].contains("exports[0].source.password_env") && e[0].contains("exports[0].source.password_file"), "{e:?}");
        assert!(!e[0].contains("hunter2-sentinel"), "{e:?}");
    }

    #[test]
    fn exactly_one_of_table_and_query() {
        let e = errors(serde_json::json!({"query": "SELECT 1"}));
        assert_eq!(e, ["exports[0].source.query: set either table or query, not both"]);
        let e = errors(serde_json::json!({"table": null}));
        assert_eq!(e, ["exports[0].source.table: missing: set table (table or database.table) or query"]);
    }

    #[test]
    fn identifiers_are_validated() {
        for bad in ["orders; DROP TABLE x", "app.orders`--", "a.b.c", "", "or ders", "`orders`", "orders\"", "app."] {
            let e = errors(serde_json::json!({"table": bad}));
            assert!(e.len() == 1 && e[0].starts_with("exports[0].source.table: "), "{bad}: {e:?}");
        }
        let long = "t".repeat(65);
        assert!(errors(serde_json::json!({"table": long}))[0].contains("at most 64 bytes"));
        let e = errors(serde_json::json!({"columns": ["id", "x` FROM mysql.user --", "ID"]}));
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("exports[0].source.columns[1]: \"x` FROM mysql.user --\" is not a valid column name"), "{e:?}");
        assert_eq!(e[1], "exports[0].source.columns[2]: duplicate column \"ID\"");
        assert_eq!(errors(serde_json::json!({"columns": []})).len(), 1);
        let e = errors(serde_json::json!({"database": "d".repeat(65)}));
        assert!(e[0].starts_with("exports[0].source.database: expected at most 64 bytes"), "{e:?}");
        let s = check(serde_json::json!({"table": "Orders_2$", "columns": ["Id", "1st"]})).unwrap();
        assert_eq!(s.source, SourceSpec::Table(TableName { database: None, table: "Orders_2$".into() }));
        assert_eq!(TableName::parse("app.Orders").unwrap().quoted(), "`app`.`Orders`");
        assert_eq!(quote_identifier("a`b"), "`a``b`");
    }

    #[test]
    fn tls_disable_only_for_this_machine() {
        let e = errors(serde_json::json!({"tls": "disable"}));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("exports[0].source.tls: tls: disable would send the login unencrypted to \"db.internal\""), "{e:?}");
        assert!(e[0].contains("use tls: require"), "{e:?}");
        for host in ["127.0.0.1", "::1", "localhost"] {
            assert_eq!(check(serde_json::json!({"tls": "disable", "host": host})).unwrap().tls, Tls::Disable, "{host}");
        }
        let strict = |k: &str| (k == "MYSQL_PWD").then(|| "pw".to_owned());
        let e = check_in(serde_json::json!({"tls": "disable", "host": "127.0.0.1"}), &strict).unwrap_err();
        assert!(e[0].contains("FERRY_ALLOW_PLAINTEXT_LOOPBACK=1 allows it") && e[0].contains("use tls: require"), "{e:?}");
        assert_eq!(check(serde_json::json!({"tls": "require"})).unwrap().tls, Tls::Require);
        let e = errors(serde_json::json!({"tls": "preferred"}));
        assert!(e[0].starts_with("exports[0].source.tls: unknown variant `preferred`"), "{e:?}");
        let e = errors(serde_json::json!({"tls": "require", "ca_file": "/nonexistent/ca.pem"}));
        assert_eq!(e, ["exports[0].source.ca_file: ca_file applies to tls: verify-full only"]);
        let e = errors(serde_json::json!({"ca_file": "/nonexistent/ca.pem"}));
        assert!(e[0].starts_with("exports[0].source.ca_file: cannot read /nonexistent/ca.pem"), "{e:?}");
    }

    #[test]
    fn other_fields() {
        let e = errors(serde_json::json!({"ssl_mode": "REQUIRED"}));
        assert!(e[0].starts_with("exports[0].source.ssl_mode: unknown field `ssl_mode`"), "{e:?}");
        assert_eq!(errors(serde_json::json!({"batch_rows": 0})), ["exports[0].source.batch_rows: expected 1 to 1000000, found 0"]);
        assert_eq!(check(serde_json::json!({"batch_rows": 1_000_000})).unwrap().batch_rows, 1_000_000);
        assert_eq!(
            errors(serde_json::json!({"host": null})),
            ["exports[0].source.host: missing: set exports[0].source.host (the server's host name or IP address)"]
        );
        let e = errors(serde_json::json!({"password_env": "UNSET_VAR"}));
        assert_eq!(e, ["exports[0].source.password_env: no password: environment variable UNSET_VAR is not set"]);
        let e = errors(serde_json::json!({"password_env": "DB_PASSWORD", "password_file": "/x"}));
        assert_eq!(e, ["exports[0].source.password_file: set either password_env or password_file, not both"]);
        let none = |_: &str| None;
        let e = check_in(serde_json::json!({}), &none).unwrap_err();
        assert!(e[0].starts_with("exports[0].source.password_env: no password: environment variable MYSQL_PWD is not set"), "{e:?}");
    }

    #[test]
    fn queries() {
        let s = check(serde_json::json!({"table": null, "query": " SELECT * FROM t WHERE day = {date} OR d2 = '{date}';  "})).unwrap();
        assert_eq!(
            s.source,
            SourceSpec::Query { sql: "SELECT * FROM t WHERE day = CAST(? AS DATE) OR d2 = CAST(? AS DATE)".into(), run_dates: 2 }
        );
        assert_eq!(errors(serde_json::json!({"table": null, "query": "SELECT 1; SELECT 2"})).len(), 1);
        let e = errors(serde_json::json!({"table": null, "query": "SELECT * FROM t WHERE id = ?"}));
        assert!(e[0].contains("? parameters"), "{e:?}");
        // A question mark in a literal, a quoted name or a comment is no parameter.
        for ok in [
            "SELECT 'why?' AS q",
            "SELECT \"a\\\"?\" AS q",
            "SELECT `what?` FROM t",
            "SELECT 1 -- really?\n",
            "SELECT 1 # huh?",
            "SELECT /* ? */ 1",
            "SELECT 'it''s?' AS q",
        ] {
            assert!(check(serde_json::json!({"table": null, "query": ok})).is_ok(), "{ok}");
        }
        assert!(has_placeholder("SELECT 'a' FROM t WHERE x = ?"));
        assert!(has_placeholder("SELECT 1--? \nWHERE 1 = ?"));
    }
}
