//! Test kit: reach the local stack (`dev/stack up`) and isolate each test.
//!
//! Addresses and credentials come from the `FERRY_*` variables that `dev/stack env` prints, or,
//! when they are not set, from the file `dev/stack env` reads: `$FERRY_STACK_DIR/env`, else the
//! checkout's `.stack/env`. A test that needs a service which is not there fails with a message
//! saying so; nothing is skipped.
//!
//! Tests that need no server use the in-memory backends of [`memory`], which obey the same
//! contracts (the [`conformance`] suites run against both) and fail on demand ([`faults`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use ferry_bigquery::Cell;
use ferry_bigquery::{Auth, BigQuery};
use serde_json::Value;

pub mod conformance;
pub mod faults;
pub mod memory;
pub mod oidc;
pub mod pubsub;

/// The local stack's settings.
#[derive(Debug, Clone)]
pub struct Stack {
    vars: HashMap<String, String>,
}

static STACK: OnceLock<Stack> = OnceLock::new();

/// The stack settings, loaded once per test binary.
pub fn stack() -> &'static Stack {
    STACK.get_or_init(Stack::load)
}

impl Stack {
    fn load() -> Self {
        Self::from_vars(std::env::vars().filter(|(k, _)| k.starts_with("FERRY_")).collect())
    }

    /// The settings from `FERRY_*` variables, completed from the stack's env file when the
    /// stack's own variables are not among them.
    fn from_vars(mut vars: HashMap<String, String>) -> Self {
        if !vars.contains_key("FERRY_BQ_ENDPOINT") {
            let dir = vars.get("FERRY_STACK_DIR").map_or_else(|| workspace_root().join(".stack"), PathBuf::from);
            let file = dir.join("env");
            let text = std::fs::read_to_string(&file).unwrap_or_else(|_| {
                panic!("the local stack is not up: no FERRY_* variables and no {}; run `dev/stack up`", file.display())
            });
            for line in text.lines() {
                if let Some((k, v)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
                    vars.insert(k.to_owned(), v.trim_matches('\'').to_owned());
                }
            }
        }
        Self { vars }
    }

    /// One stack variable; panics with a clear message when it is missing.
    pub fn var(&self, name: &str) -> String {
        self.vars.get(name).cloned().unwrap_or_else(|| panic!("stack variable {name} is not set; run `dev/stack up`"))
    }

    /// Contents of the file a stack variable points at, trimmed.
    pub fn file(&self, name: &str) -> String {
        let p = self.var(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{name}={p}: {e}")).trim().to_owned()
    }

    /// The BigQuery emulator's REST endpoint.
    pub fn bq_endpoint(&self) -> String {
        self.var("FERRY_BQ_ENDPOINT")
    }

    /// The emulator's project.
    pub fn bq_project(&self) -> String {
        self.var("FERRY_BQ_PROJECT")
    }

    /// A BigQuery client for the emulator.
    pub fn bigquery(&self) -> BigQuery {
        BigQuery::new(&self.bq_endpoint(), &self.bq_project(), Auth::None).expect("bigquery client")
    }
}

/// The workspace root (where `.stack/` lives).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// A name unique to this call: `prefix_<hex>`, safe as a dataset, topic or directory name.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple().to_string().get(..12).unwrap_or_default())
}

/// A dataset of its own for one test, in the emulator.
pub struct TestDataset {
    pub bq: BigQuery,
    pub name: String,
}

impl TestDataset {
    /// Creates `prefix_<hex>`.
    pub async fn create(prefix: &str) -> Self {
        let bq = stack().bigquery();
        let name = unique(prefix);
        bq.create_dataset(&name).await.unwrap_or_else(|e| panic!("creating dataset {name} in the BigQuery emulator: {e}"));
        Self { bq, name }
    }

    /// `project.dataset.table` for a table in this dataset.
    pub fn table(&self, table: &str) -> String {
        format!("{}.{}.{}", self.bq.project(), self.name, table)
    }

    /// Runs SQL (DDL/DML), panicking with the statement on failure.
    pub async fn exec(&self, sql: &str) {
        self.bq.execute(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}\n-> {e}"));
    }

    /// Runs a query and returns its rows.
    pub async fn rows(&self, sql: &str) -> Vec<Vec<Cell>> {
        self.bq.query(sql, &[], 10_000).await.unwrap_or_else(|e| panic!("{sql}\n-> {e}")).collect().await.expect("rows")
    }
}

/// A directory of its own on the SFTP server. Without a chroot the server path and the local
/// path are the same, so tests read delivered bytes straight from disk.
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    /// Creates a fresh directory under the SFTP root, writable by both SFTP users.
    pub fn create(prefix: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let path = PathBuf::from(stack().var("FERRY_SFTP_ROOT")).join(unique(prefix));
        std::fs::create_dir_all(&path).expect("create SFTP test directory");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).expect("chmod SFTP test directory");
        Self { path }
    }

    /// The directory as the server names it.
    pub fn remote(&self) -> String {
        self.path.display().to_string()
    }

    /// File names in the directory, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.path)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Bytes of one file.
    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path.join(name)).unwrap_or_else(|e| panic!("{}: {e}", self.path.join(name).display()))
    }
}

/// One mail the SMTP capture received.
pub struct Mail {
    /// The capture's index record: `port`, `tls`, `auth_user`, `mail_from`, `rcpt_tos`.
    pub record: Value,
    /// The message as it arrived.
    pub raw: String,
    /// Headers, unfolded, in order.
    pub headers: Vec<(String, String)>,
    /// The body, with its transfer encoding (quoted-printable, base64) undone and LF line ends.
    pub body: String,
}

impl Mail {
    fn parse(record: Value, raw: String) -> Self {
        let text = raw.replace("\r\n", "\n");
        let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.lines() {
            match (line.starts_with([' ', '\t']), headers.last_mut()) {
                (true, Some(last)) => last.1.push_str(line.trim_start()),
                _ => {
                    if let Some((k, v)) = line.split_once(':') {
                        headers.push((k.to_owned(), v.trim().to_owned()));
                    }
                }
            }
        }
        let encoding =
            headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-transfer-encoding")).map(|(_, v)| v.to_ascii_lowercase());
        let body = match encoding.as_deref() {
            Some("quoted-printable") => decode_quoted_printable(body),
            Some("base64") => {
                let compact: String = body.split_whitespace().collect();
                String::from_utf8_lossy(&base64::Engine::decode(&base64::engine::general_purpose::STANDARD, compact).unwrap_or_default())
                    .into_owned()
            }
            _ => body.to_owned(),
        };
        Self { record, raw, headers, body }
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn decode_quoted_printable(text: &str) -> String {
    let joined = text.replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mails the SMTP capture received for `recipient`, oldest first.
pub fn mails_to(recipient: &str) -> Vec<Mail> {
    let dir = PathBuf::from(stack().var("FERRY_SMTP_OUT"));
    let index = std::fs::read_to_string(dir.join("index.jsonl")).unwrap_or_default();
    index
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["rcpt_tos"].as_array().is_some_and(|a| a.iter().any(|x| x.as_str() == Some(recipient))))
        .map(|r| {
            let raw = std::fs::read_to_string(dir.join(r["file"].as_str().unwrap_or_default())).unwrap_or_default();
            Mail::parse(r, raw)
        })
        .collect()
}

/// A Slack webhook URL on the local capture, unique to one test.
pub fn slack_url(test: &str) -> String {
    format!("{}/hooks/{test}", stack().var("FERRY_SLACK_ENDPOINT"))
}

/// Requests the Slack capture received on paths that contain `/hooks/<test>`.
pub fn slack_posts(test: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(stack().var("FERRY_SLACK_OUT")).unwrap_or_default();
    let needle = format!("/hooks/{test}");
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["path"].as_str().is_some_and(|p| p.contains(&needle)))
        .collect()
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_settings_are_read_from_the_env_file_in_ferry_stack_dir() {
        let dir = std::env::temp_dir().join(unique("ferry-stack-env"));
        std::fs::create_dir_all(&dir).expect("state dir");
        std::fs::write(
            dir.join("env"),
            "export FERRY_BQ_ENDPOINT='http://127.0.0.1:2/from-file'\nexport FERRY_SFTP_PASSWORD_USER='from-file'\n",
        )
        .expect("env file");
        let state = ("FERRY_STACK_DIR".to_owned(), dir.display().to_string());

        let s = Stack::from_vars(HashMap::from([state.clone()]));
        assert_eq!(s.bq_endpoint(), "http://127.0.0.1:2/from-file");
        assert_eq!(s.var("FERRY_SFTP_PASSWORD_USER"), "from-file");

        // Exported stack variables win: the file is not read then.
        let s = Stack::from_vars(HashMap::from([state, ("FERRY_BQ_ENDPOINT".to_owned(), "http://127.0.0.1:1".to_owned())]));
        assert_eq!(s.bq_endpoint(), "http://127.0.0.1:1");
        assert!(!s.vars.contains_key("FERRY_SFTP_PASSWORD_USER"), "{:?}", s.vars);
        std::fs::remove_dir_all(&dir).ok();
    }
}
