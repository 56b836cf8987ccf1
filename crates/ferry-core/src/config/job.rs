//! Where the service runs an export: inside the push request (`execution: inline`), or in a
//! Cloud Run Job execution it starts (`execution: job`), named by the `cloud_run_job` section.

use serde::Deserialize;

use super::check::Check;
use super::{limits, BigQueryAuth, BigQueryAuthKind};

/// Where `ferry serve` runs an export. The CLI always runs it in its own process.
#[derive(Debug, Clone, Copy, Default, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Execution {
    /// Inside the push request that triggered it: the push is answered when the run ends, so
    /// the run must end well within the subscription's acknowledgement deadline (at most 600 s).
    #[default]
    Inline,
    /// In a Cloud Run Job execution (`cloud_run_job`): the service starts it, records
    /// DISPATCHED and answers the push at once; the execution runs `ferry run` for hours if it
    /// must.
    Job,
}

/// The Cloud Run Job that runs exports with `execution: job`.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCloudRunJob {
    /// `projects/PROJECT/locations/REGION/jobs/JOB`; `FERRY_CLOUD_RUN_JOB` when absent (set by
    /// `deploy/service.sh`).
    #[serde(default)]
    pub job: Option<String>,
    /// Cloud Run Admin API endpoint; `FERRY_CLOUD_RUN_ENDPOINT`, else `https://run.googleapis.com`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Credentials for the Admin API, as `bigquery.auth`: `application_default` (default),
    /// `metadata_server`, `token_env` or `none` (a local stand-in only).
    #[serde(default)]
    pub auth: BigQueryAuthKind,
    /// With `auth: token_env`: the variable holding an OAuth access token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Seconds the call that starts an execution may take; 30 by default, 5 to 120.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// The validated `cloud_run_job` section.
#[derive(Debug, Clone)]
pub struct CloudRunJob {
    /// `projects/P/locations/L/jobs/J`.
    pub job: String,
    pub endpoint: String,
    pub auth: BigQueryAuth,
    pub timeout: std::time::Duration,
}

/// Where the variables of [`RawCloudRunJob`] come from when the file leaves them out.
pub const JOB_ENV: &str = "FERRY_CLOUD_RUN_JOB";
pub const ENDPOINT_ENV: &str = "FERRY_CLOUD_RUN_ENDPOINT";

/// Whether `name` is `projects/P/locations/L/jobs/J` with a project id, a location and a job
/// name (lowercase letters, digits and `-`, starting with a letter, at most 63).
pub fn is_job_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    let word = |s: &str, max: usize| {
        !s.is_empty()
            && s.len() <= max
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    matches!(parts.as_slice(), ["projects", p, "locations", l, "jobs", j]
        if crate::ident::is_project(p) && word(l, 63) && word(j, 63) && !j.ends_with('-'))
}

/// Checks the section; `needed` when an export runs as a job (the job must then be known).
pub(super) fn validate(raw: Option<&RawCloudRunJob>, needed: bool, cx: &Check<'_>) -> Option<CloudRunJob> {
    if raw.is_none() && !needed {
        return None;
    }
    let default = RawCloudRunJob::default();
    let r = raw.unwrap_or(&default);
    let cx = cx.at("cloud_run_job");
    let (job, job_field) = match &r.job {
        Some(j) => (Some(j.clone()), "job".to_owned()),
        None => (cx.env(JOB_ENV).filter(|j| !j.is_empty()), format!("job ({JOB_ENV})")),
    };
    // Every field is checked before a missing or bad job ends the check.
    let job = match job {
        Some(j) if is_job_name(&j) => Some(j),
        Some(j) => {
            cx.err(&job_field, format!("{} is not a job name: expected projects/PROJECT/locations/REGION/jobs/JOB", limits::quote(&j)));
            None
        }
        None if cx.elsewhere() => Some(format!("projects/<project>/locations/<region>/jobs/<{JOB_ENV}>")),
        None => {
            let why = if needed { "an export has execution \"job\", so ferry must know the Cloud Run Job to start" } else { "no job" };
            cx.err("job", format!("{why}: set cloud_run_job.job or {JOB_ENV} to projects/PROJECT/locations/REGION/jobs/JOB"));
            None
        }
    };
    let (endpoint, endpoint_field) = match &r.endpoint {
        Some(e) => (e.clone(), "endpoint".to_owned()),
        None => (cx.env(ENDPOINT_ENV).unwrap_or_else(|| "https://run.googleapis.com".into()), format!("endpoint ({ENDPOINT_ENV})")),
    };
    super::check_google_endpoint(&cx, &endpoint_field, &endpoint, r.auth);
    let auth = super::google_auth(&cx, r.auth, r.token_env.as_deref());
    if r.auth != BigQueryAuthKind::TokenEnv && r.token_env.is_some() {
        cx.err("token_env", "applies only with auth: token_env");
    }
    let timeout = r.timeout_secs.unwrap_or(30);
    if !(5..=120).contains(&timeout) {
        cx.err("timeout_secs", format!("expected 5 to 120 seconds, found {timeout}"));
    }
    Some(CloudRunJob { job: job?, endpoint, auth, timeout: std::time::Duration::from_secs(timeout) })
}

#[cfg(test)]
mod tests {
    use super::is_job_name;

    #[test]
    fn job_names_are_full_resource_names() {
        assert!(is_job_name("projects/acme-data/locations/europe-west1/jobs/ferry-run"));
        for bad in [
            "ferry-run",
            "projects/acme-data/locations/europe-west1/jobs/",
            "projects/Acme/locations/europe-west1/jobs/ferry-run",
            "projects/acme-data/locations/europe-west1/jobs/ferry-run/executions/x",
            "projects/acme-data/locations/europe-west1/jobs/Ferry",
            "projects/acme-data/locations/europe-west1/jobs/ferry-",
            "projects/acme-data/locations/../jobs/ferry-run",
        ] {
            assert!(!is_job_name(bad), "{bad}");
        }
    }
}
