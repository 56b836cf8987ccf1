//! The `staging` section: the Cloud Storage bucket that staged sources (`bigquery_export`)
//! write a run's files into, and `POST /transfer` copies from.
//!
//! ```json
//! "staging": {"bucket": "acme-exports", "prefix": "ferry/", "expiration_days": 30,
//!             "cleanup": "after_delivery", "parallel_objects": 4}
//! ```
//!
//! A run's objects are `PREFIX<export>/<YYYYMMDD>/<run id>/<export>-<YYYYMMDD>-<short run id>-<n>.<ext>`:
//! every run has a prefix of its own, so a rerun never mixes its files with another run's.

use serde::Deserialize;

use super::check::Check;
use super::{check_google_endpoint, google_auth, limits, BigQueryAuth, BigQueryAuthKind};

/// The `staging` section as written.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStaging {
    /// The bucket's name (seed form: `gcs_bucket`).
    #[serde(default)]
    pub bucket: Option<String>,
    /// Where in the bucket runs write: `ferry/` by default; empty for the bucket's root. Ends
    /// with `/` (added when missing).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Days after which the bucket deletes staged objects (seed form: `gcs_expiration_days`):
    /// a lifecycle rule on `prefix`, set by `deploy/bucket.sh`. A run does not read it.
    #[serde(default)]
    #[schemars(range(min = 1, max = 3650))]
    pub expiration_days: Option<u32>,
    /// `keep` (default: the lifecycle rule removes them) or `after_delivery`: a run deletes its
    /// objects once every file was delivered, verified and recorded.
    #[serde(default)]
    pub cleanup: Cleanup,
    /// Objects copied to the destination at once; 4 by default, 1 to 16.
    #[serde(default)]
    #[schemars(range(min = 1, max = 16))]
    pub parallel_objects: Option<u32>,
    /// Cloud Storage endpoint; `FERRY_STORAGE_ENDPOINT`, else `https://storage.googleapis.com`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Credentials, as `bigquery.auth`.
    #[serde(default)]
    pub auth: BigQueryAuthKind,
    /// With `auth: token_env`: the variable holding an OAuth access token.
    #[serde(default)]
    pub token_env: Option<String>,
}

/// What happens to a run's staged objects after delivery.
#[derive(Debug, Clone, Copy, Default, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Cleanup {
    /// Left for the bucket's lifecycle rule.
    #[default]
    Keep,
    /// Deleted once the run recorded SUCCESS.
    AfterDelivery,
}

/// The validated `staging` section.
#[derive(Debug, Clone)]
pub struct StagingSpec {
    pub bucket: String,
    /// Empty, or ends with `/`.
    pub prefix: String,
    pub expiration_days: Option<u32>,
    pub cleanup: Cleanup,
    pub parallel_objects: usize,
    pub endpoint: String,
    pub auth: BigQueryAuth,
}

/// Cloud Storage's endpoint.
pub const STORAGE_ENDPOINT: &str = "https://storage.googleapis.com";
/// The variable that moves the endpoint when the file names none.
pub const STORAGE_ENDPOINT_ENV: &str = "FERRY_STORAGE_ENDPOINT";
/// The most objects copied at once.
pub const MAX_PARALLEL_OBJECTS: u32 = 16;

/// Whether `name` is a bucket name Cloud Storage accepts (3 to 63 lowercase letters, digits,
/// `-`, `_` and `.`, starting and ending with a letter or digit; dotted names up to 222).
pub fn is_bucket(name: &str) -> bool {
    let ok_chars = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let max = if name.contains('.') { 222 } else { 63 };
    (3..=max).contains(&name.len()) && ok_chars && ends(name.chars().next()) && ends(name.chars().last()) && !name.contains("..")
}

impl StagingSpec {
    /// The prefix of one run's objects: `PREFIX<export>/<YYYYMMDD>/<run id>/`.
    pub fn run_prefix(&self, export: &str, run_date: chrono::NaiveDate, run_id: &str) -> String {
        format!("{}{export}/{}/{run_id}/", self.prefix, run_date.format("%Y%m%d"))
    }
}

/// Checks the section (at `staging`); `needed` names what needs a bucket when there is none.
pub(super) fn validate(raw: Option<&RawStaging>, needed: Option<&str>, cx: &Check<'_>) -> Option<StagingSpec> {
    let Some(r) = raw else {
        if let Some(who) = needed {
            cx.err("staging", format!("missing: {who} writes its files to a Cloud Storage bucket; set staging.bucket"));
        }
        return None;
    };
    let cx = cx.at("staging");
    let bucket = match &r.bucket {
        None => {
            cx.err("bucket", "missing: the Cloud Storage bucket that staged exports write to");
            None
        }
        Some(b) if !is_bucket(b) => {
            cx.err(
                "bucket",
                format!("{} is not a bucket name: expected 3 to 63 lowercase letters, digits, '-', '_' or '.'", limits::quote(b)),
            );
            None
        }
        Some(b) => Some(b.clone()),
    };
    let mut prefix = r.prefix.clone().unwrap_or_else(|| "ferry/".to_owned());
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    if prefix.starts_with('/')
        || prefix.contains("//")
        || prefix.split('/').any(|s| s == "." || s == "..")
        || prefix.chars().any(|c| c.is_control() || c == '*')
    {
        cx.err(
            "prefix",
            format!("{} is not an object prefix: no leading '/', empty, '.' or '..' segments, no '*'", limits::quote(&prefix)),
        );
    }
    if let Some(d) = r.expiration_days.filter(|d| !(1..=3650).contains(d)) {
        cx.err("expiration_days", format!("expected 1 to 3650 days, found {d}"));
    }
    let parallel = r.parallel_objects.unwrap_or(4);
    if !(1..=MAX_PARALLEL_OBJECTS).contains(&parallel) {
        cx.err("parallel_objects", format!("expected 1 to {MAX_PARALLEL_OBJECTS}, found {parallel}"));
    }
    let endpoint = r.endpoint.clone().or_else(|| cx.env(STORAGE_ENDPOINT_ENV)).unwrap_or_else(|| STORAGE_ENDPOINT.into());
    let field = if r.endpoint.is_some() { "endpoint".to_owned() } else { format!("endpoint ({STORAGE_ENDPOINT_ENV})") };
    check_google_endpoint(&cx, &field, &endpoint, r.auth);
    let auth = google_auth(&cx, r.auth, r.token_env.as_deref());
    Some(StagingSpec {
        bucket: bucket?,
        prefix,
        expiration_days: r.expiration_days,
        cleanup: r.cleanup,
        parallel_objects: parallel as usize,
        endpoint: endpoint.trim_end_matches('/').to_owned(),
        auth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        for ok in ["abc", "acme-exports", "a.b.c", "x_1"] {
            assert!(is_bucket(ok), "{ok}");
        }
        for bad in ["ab", "Acme", "-a-", "a..b", "a/b", "gs://a", &"a".repeat(64)] {
            assert!(!is_bucket(bad), "{bad}");
        }
    }
}
