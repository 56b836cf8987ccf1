//! The `postgres` source component: a server, the login, TLS, and a table or a query.
//!
//! ```json
//! "source": {"type": "postgres", "host": "db.internal", "port": 5432, "database": "app", "user": "etl",
//!            "password_file": "/secrets/pg-password", "tls": "verify-full", "ca_file": "/secrets/ca.pem",
//!            "table": "public.orders", "columns": ["id", "updated_at"], "batch_rows": 10000}
//! "source": {"type": "postgres", …, "query": "SELECT … WHERE day = {date}"}
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
/// The variable the password is read from when neither `password_env` nor `password_file` is set.
pub const DEFAULT_PASSWORD_ENV: &str = "PGPASSWORD";
/// The longest identifier PostgreSQL keeps (`NAMEDATALEN - 1`); a longer one would be cut.
const MAX_IDENTIFIER_BYTES: usize = 63;

/// The `postgres` source as configured.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "postgres source")]
pub struct RawPostgresSource {
    /// The server's host name or IP address.
    #[serde(default)]
    pub host: Option<String>,
    /// Port; 5432 by default.
    #[serde(default = "port5432")]
    pub port: u16,
    /// The database to read.
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
    /// Environment variable holding the password; `PGPASSWORD` by default.
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
    /// `schema.table` or `table` (the search path's); or use `query`. Letters, digits and `_`,
    /// case-sensitive (unquoted names are stored in lower case).
    #[serde(default)]
    pub table: Option<String>,
    /// A SELECT whose result is exported; `{date}` becomes the run date, a `date` parameter.
    #[serde(default)]
    pub query: Option<String>,
    /// Columns to export, in order; all columns when absent. Case-sensitive, like `table`.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Rows fetched and decoded per batch; 10000 by default, 1 to 1000000. About two batches
    /// are in memory at a time.
    #[serde(default)]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub batch_rows: Option<u64>,
}

fn port5432() -> u16 {
    5432
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

/// A table, `schema.table` or `table`; both parts validated identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: Option<String>,
    pub table: String,
}

impl TableName {
    /// Parses and validates; the error says what was expected.
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('.').collect();
        let (schema, table) = match parts.as_slice() {
            [t] => (None, *t),
            [s, t] => (Some(*s), *t),
            _ => return Err(format!("expected `schema.table` or `table`, found {}", limits::quote(s))),
        };
        for part in schema.iter().chain([&table]) {
            if !is_identifier(part) {
                return Err(format!(
                    "{} is not a valid name (letters, digits and '_', not starting with a digit, at most {MAX_IDENTIFIER_BYTES} bytes)",
                    limits::quote(part)
                ));
            }
        }
        Ok(Self { schema: schema.map(str::to_owned), table: table.to_owned() })
    }

    /// The quoted form: `"schema"."table"`.
    pub fn quoted(&self) -> String {
        match &self.schema {
            Some(s) => format!("{}.{}", quote_identifier(s), quote_identifier(&self.table)),
            None => quote_identifier(&self.table),
        }
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.table),
            None => f.write_str(&self.table),
        }
    }
}

/// Whether `s` is a name ferry puts into SQL: ASCII letters, digits and `_`, not starting with a
/// digit, at most 63 bytes.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && s.len() <= MAX_IDENTIFIER_BYTES
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A double-quoted identifier, with any `"` doubled (names the server reports for a query's
/// columns may hold any character).
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// What a `postgres` source reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// A table.
    Table(TableName),
    /// A SELECT statement, with `$1::date` in place of `{date}` when `run_date` is set.
    Query { sql: String, run_date: bool },
}

/// Validated settings of a `postgres` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresSettings {
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

impl PostgresSettings {
    /// `host:port/database`, for messages.
    pub fn server(&self) -> String {
        format!("{}:{}/{}", self.host_for_url(), self.port, self.database)
    }

    /// The source for reports and the metadata table: `postgres://host:port/database/schema.table`,
    /// or `…/query`.
    pub fn describe(&self) -> String {
        let what = match &self.source {
            SourceSpec::Table(t) => t.to_string(),
            SourceSpec::Query { .. } => "query".into(),
        };
        format!("postgres://{}/{what}", self.server())
    }

    /// `table public.orders` or `query`, for messages.
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

/// Checks a `postgres` source; problems go to `cx` (which stands at the source).
pub fn validate_source(value: &Value, cx: &Check<'_>) -> Option<Component> {
    let raw: RawPostgresSource = cx.parse(value)?;
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
    for (field, value) in [("database", &database), ("user", &user)] {
        if let Some(v) = value.as_deref().filter(|v| v.len() > MAX_IDENTIFIER_BYTES || v.chars().any(char::is_control)) {
            cx.err(field, format!("expected at most {MAX_IDENTIFIER_BYTES} bytes without control characters, found {}", limits::quote(v)));
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
    let settings = PostgresSettings {
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
        type_name: "postgres".into(),
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

fn password(raw: &RawPostgresSource, cx: &Check<'_>) -> Option<Secret> {
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

fn tls(raw: &RawPostgresSource, host: Option<&str>, cx: &Check<'_>) -> Option<Tls> {
    if raw.ca_file.is_some() && raw.tls != TlsSetting::VerifyFull {
        cx.err("ca_file", format!("{} applies to tls: verify-full only", cx.name("ca_file")));
        return None;
    }
    match raw.tls {
        TlsSetting::VerifyFull => {
            if let (Some(path), false) = (&raw.ca_file, cx.elsewhere()) {
                let checked = std::fs::read(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))
                    .and_then(|pem| crate::tls::roots_from_pem(&pem).map_err(|e| format!("{}: {e}", path.display())));
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

fn source_spec(raw: &RawPostgresSource, cx: &Check<'_>) -> Option<SourceSpec> {
    let (table, query) = (cx.name("table"), cx.name("query"));
    match (&raw.table, &raw.query) {
        (Some(_), Some(_)) => {
            cx.err("query", format!("set either {table} or {query}, not both"));
            None
        }
        (None, None) => {
            cx.err("table", format!("missing: set {table} (schema.table) or {query}"));
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
            if has_positional_parameter(trimmed) {
                cx.err("query", "the query may not use $1-style parameters: ferry binds its own; write {date} for the run date");
                return None;
            }
            let run_date = trimmed.contains("{date}");
            Some(SourceSpec::Query { sql: trimmed.replace("'{date}'", "$1::date").replace("{date}", "$1::date"), run_date })
        }
    }
}

/// Whether `sql` holds `$` followed by a digit (a positional parameter).
fn has_positional_parameter(sql: &str) -> bool {
    sql.as_bytes().windows(2).any(|w| w[0] == b'$' && w[1].is_ascii_digit())
}

fn columns(raw: &RawPostgresSource, cx: &Check<'_>) -> Option<Vec<String>> {
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
                    "{} is not a valid column name (letters, digits and '_', not starting with a digit, at most {MAX_IDENTIFIER_BYTES} bytes)",
                    limits::quote(c)
                ),
            );
            ok = false;
        } else if !seen.insert(c.as_str()) {
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

    /// Knows the `postgres` source only; its destination is accepted without settings, so
    /// that every error comes from the source.
    struct OnlyPostgres;

    impl Components for OnlyPostgres {
        fn source_types(&self) -> Vec<&'static str> {
            vec!["postgres"]
        }
        fn destination_types(&self) -> Vec<&'static str> {
            vec!["none"]
        }
        fn source(&self, type_name: &str, value: &Value, cx: &Check<'_>) -> Option<Option<Component>> {
            (type_name == "postgres").then(|| {
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
            "PGPASSWORD" => Some("pw-from-env".into()),
            "PG_PASSWORD" => Some("pw-named".into()),
            PLAINTEXT_LOOPBACK_ENV => Some("1".into()),
            _ => None,
        }
    }

    /// Validates a source with `fields` over a valid base; the settings, or every error as
    /// `path: message`.
    fn check(fields: Value) -> Result<PostgresSettings, Vec<String>> {
        check_in(fields, &env)
    }

    fn check_in(fields: Value, env: &dyn Fn(&str) -> Option<String>) -> Result<PostgresSettings, Vec<String>> {
        let mut source =
            serde_json::json!({"type": "postgres", "host": "db.internal", "database": "app", "user": "etl", "table": "public.orders"});
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
        if let Err(ConfigErrors(errors)) = raw.validate(&OnlyPostgres, env) {
            return Err(errors.iter().map(|e| format!("{}: {}", e.path, e.message)).collect());
        }
        let component = VALIDATED.with(|v| v.borrow_mut().take()).expect("validated");
        Ok(component.settings::<PostgresSettings>().expect("postgres settings").clone())
    }

    fn errors(fields: Value) -> Vec<String> {
        check(fields).expect_err("invalid")
    }

    #[test]
    fn a_valid_source_with_defaults() {
        let s = check(serde_json::json!({})).expect("valid");
        assert_eq!((s.host.as_str(), s.port, s.database.as_str(), s.user.as_str()), ("db.internal", 5432, "app", "etl"));
        assert_eq!(s.password.expose(), "pw-from-env");
        assert_eq!(s.tls, Tls::VerifyFull { ca_file: None });
        assert_eq!(s.source, SourceSpec::Table(TableName { schema: Some("public".into()), table: "orders".into() }));
        assert_eq!(s.batch_rows, DEFAULT_BATCH_ROWS);
        assert_eq!(s.describe(), "postgres://db.internal:5432/app/public.orders");
        let s = check(serde_json::json!({"password_env": "PG_PASSWORD", "host": "::1", "table": null, "query": "SELECT 1"})).unwrap();
        assert_eq!(s.password.expose(), "pw-named");
        assert_eq!(s.describe(), "postgres://[::1]:5432/app/query");
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
        assert_eq!(e, ["exports[0].source.table: missing: set table (schema.table) or query"]);
    }

    #[test]
    fn identifiers_are_validated() {
        for bad in ["orders; DROP TABLE x", "public.orders\"--", "a.b.c", "1orders", "", "or ders", "\"orders\""] {
            let e = errors(serde_json::json!({"table": bad}));
            assert!(e.len() == 1 && e[0].starts_with("exports[0].source.table: "), "{bad}: {e:?}");
        }
        let long = "t".repeat(64);
        assert!(errors(serde_json::json!({"table": long}))[0].contains("at most 63 bytes"));
        let e = errors(serde_json::json!({"columns": ["id", "x\" FROM pg_shadow --", "id"]}));
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("exports[0].source.columns[1]: \"x\\\" FROM pg_shadow --\" is not a valid column name"), "{e:?}");
        assert_eq!(e[1], "exports[0].source.columns[2]: duplicate column \"id\"");
        assert_eq!(errors(serde_json::json!({"columns": []})).len(), 1);
        let s = check(serde_json::json!({"table": "Orders_2", "columns": ["Id", "id"]})).unwrap();
        assert_eq!(s.source, SourceSpec::Table(TableName { schema: None, table: "Orders_2".into() }));
        assert_eq!(TableName::parse("public.Orders").unwrap().quoted(), "\"public\".\"Orders\"");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
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
        // On this machine too, only when plaintext to it is allowed.
        let strict = |k: &str| (k == "PGPASSWORD").then(|| "pw".to_owned());
        let e = check_in(serde_json::json!({"tls": "disable", "host": "127.0.0.1"}), &strict).unwrap_err();
        assert!(e[0].contains("FERRY_ALLOW_PLAINTEXT_LOOPBACK=1 allows it") && e[0].contains("use tls: require"), "{e:?}");
        assert_eq!(check(serde_json::json!({"tls": "require"})).unwrap().tls, Tls::Require);
        let e = errors(serde_json::json!({"tls": "verify-ca"}));
        assert!(e[0].starts_with("exports[0].source.tls: unknown variant `verify-ca`"), "{e:?}");
        let e = errors(serde_json::json!({"tls": "require", "ca_file": "/nonexistent/ca.pem"}));
        assert_eq!(e, ["exports[0].source.ca_file: ca_file applies to tls: verify-full only"]);
        let e = errors(serde_json::json!({"ca_file": "/nonexistent/ca.pem"}));
        assert!(e[0].starts_with("exports[0].source.ca_file: cannot read /nonexistent/ca.pem"), "{e:?}");
    }

    #[test]
    fn other_fields() {
        let e = errors(serde_json::json!({"sslmode": "require"}));
        assert!(e[0].starts_with("exports[0].source.sslmode: unknown field `sslmode`"), "{e:?}");
        assert_eq!(errors(serde_json::json!({"batch_rows": 0})), ["exports[0].source.batch_rows: expected 1 to 1000000, found 0"]);
        assert_eq!(check(serde_json::json!({"batch_rows": 1_000_000})).unwrap().batch_rows, 1_000_000);
        assert_eq!(
            errors(serde_json::json!({"host": null})),
            ["exports[0].source.host: missing: set exports[0].source.host (the server's host name or IP address)"]
        );
        assert_eq!(
            errors(serde_json::json!({"host": "db/../x"})),
            ["exports[0].source.host: expected a host name or IP address, found \"db/../x\""]
        );
        let e = errors(serde_json::json!({"password_env": "UNSET_VAR"}));
        assert_eq!(e, ["exports[0].source.password_env: no password: environment variable UNSET_VAR is not set"]);
        let e = errors(serde_json::json!({"password_env": "PG_PASSWORD", "password_file": "/x"}));
        assert_eq!(e, ["exports[0].source.password_file: set either password_env or password_file, not both"]);
    }

    #[test]
    fn queries() {
        let s = check(serde_json::json!({"table": null, "query": " SELECT * FROM t WHERE day = {date} OR d2 = '{date}';  "})).unwrap();
        assert_eq!(s.source, SourceSpec::Query { sql: "SELECT * FROM t WHERE day = $1::date OR d2 = $1::date".into(), run_date: true });
        assert_eq!(errors(serde_json::json!({"table": null, "query": "SELECT 1; SELECT 2"})).len(), 1);
        let e = errors(serde_json::json!({"table": null, "query": "SELECT * FROM t WHERE id = $1"}));
        assert!(e[0].contains("$1-style parameters"), "{e:?}");
        // Dollar quoting is no parameter.
        assert!(check(serde_json::json!({"table": null, "query": "SELECT $$a$$ AS x"})).is_ok());
    }
}
