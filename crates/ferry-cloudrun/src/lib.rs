//! Starting Cloud Run Job executions over the Cloud Run Admin API v2 (`projects.locations.jobs.run`
//! with container overrides): how `ferry serve` hands a long export to a job.
//!
//! REST rather than the gRPC client crates, for the reason `ferry-pubsub` gives: one small HTTPS
//! call per export, and no minutes of tonic/prost in every build.
//!
//! The call answers with a long-running operation whose `metadata` is the new Execution; its
//! `name` is what ferry records. ferry does not poll the operation: the execution records its
//! own outcome in the metadata table, which is also why the service identity needs only the
//! role that runs a job with overrides, not one that reads executions.
//!
//! Starting a job is not idempotent (the API takes no request id), so a call is sent again only
//! when the connection could not be made, or the API answered 429 before doing anything. A
//! timeout or a 5xx is returned as it is; the caller treats it as "maybe started" (see
//! [`ferry_core::Dispatcher`]).

use std::time::Duration;

use async_trait::async_trait;
use ferry_core::config::CloudRunJob;
use ferry_core::{Classify, ErrorClass, Failure, RetryPolicy, Verdict};
/// How requests are authorised; shared with the other Google clients.
pub use ferry_google::Auth;
use ferry_google::{percent_encode, ApiError, GoogleError, TokenSource};
use serde_json::{json, Value};

/// What failed while starting an execution.
#[derive(Debug, thiserror::Error)]
pub enum CloudRunError {
    /// No answer; `connected` is false when the connection could not even be made (then
    /// nothing started).
    #[error("Cloud Run Admin API at {endpoint}: {reason}")]
    Transport { endpoint: String, reason: String, connected: bool },
    /// The API refused: nothing started.
    #[error("Cloud Run refused to run job {job}: {api}")]
    Api { job: String, api: ApiError },
    /// The API accepted the call, but its answer names no execution.
    #[error("Cloud Run accepted the run of job {job}, but its answer names no execution: {answer}")]
    NoExecution { job: String, answer: String },
    #[error("Cloud Run credentials: {0}")]
    Credentials(GoogleError),
}

impl From<GoogleError> for CloudRunError {
    fn from(e: GoogleError) -> Self {
        CloudRunError::Credentials(e)
    }
}

impl Classify for CloudRunError {
    fn class(&self) -> ErrorClass {
        match self {
            CloudRunError::Transport { .. } | CloudRunError::NoExecution { .. } => ErrorClass::Transient,
            CloudRunError::Api { api, .. } => api.class(),
            CloudRunError::Credentials(e) => e.class(),
        }
    }
}

/// Whether a failed start may be sent again without starting two executions.
fn resend(e: &CloudRunError) -> Verdict {
    match e {
        CloudRunError::Transport { connected: false, .. } => Verdict::Retry,
        CloudRunError::Api { api, .. } if api.status == 429 => Verdict::Retry,
        CloudRunError::Credentials(g) => g.class().into(),
        _ => Verdict::Stop,
    }
}

/// Starts executions of one Cloud Run Job.
pub struct JobRunner {
    http: reqwest::Client,
    endpoint: String,
    /// `projects/P/locations/L/jobs/J`.
    job: String,
    tokens: TokenSource,
    retry: RetryPolicy,
}

impl JobRunner {
    /// A runner for `job` at `endpoint` (`https://run.googleapis.com`, or a stand-in's
    /// `http://host:port`); one call may take `timeout`, connecting at most 10 s of it.
    pub fn new(endpoint: &str, job: &str, auth: Auth, timeout: Duration) -> Self {
        let http =
            reqwest::Client::builder().timeout(timeout).connect_timeout(timeout.min(Duration::from_secs(10))).build().expect("HTTP client");
        Self {
            tokens: TokenSource::new(http.clone(), auth),
            http,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            job: job.to_owned(),
            retry: RetryPolicy::default(),
        }
    }

    /// The runner a validated `cloud_run_job` section describes, with the credentials its
    /// `auth` names.
    pub fn from_config(c: &CloudRunJob, auth: Auth) -> Self {
        // Inside a push request: a few quick attempts, then the push is answered and Pub/Sub
        // redelivers.
        Self::new(&c.endpoint, &c.job, auth, c.timeout).with_retry(RetryPolicy {
            max_attempts: 3,
            deadline: Duration::from_secs(10),
            ..RetryPolicy::default()
        })
    }

    /// The same runner with another retry policy (the default is [`RetryPolicy::default`]).
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Starts one execution whose container runs with `args` instead of the job's own; the
    /// execution's full name.
    pub async fn run(&self, args: &[String]) -> Result<String, CloudRunError> {
        self.retry.run_with("cloud run jobs.run", || self.run_once(args), resend).await.map_err(|g| {
            if g.attempts <= 1 {
                return g.error;
            }
            let context = g.context();
            match g.error {
                CloudRunError::Transport { endpoint, reason, connected } => {
                    CloudRunError::Transport { endpoint, reason: format!("{reason}{context}"), connected }
                }
                CloudRunError::Api { job, api } => {
                    CloudRunError::Api { job, api: ApiError { message: format!("{}{context}", api.message), ..api } }
                }
                other => other,
            }
        })
    }

    async fn run_once(&self, args: &[String]) -> Result<String, CloudRunError> {
        let body = json!({"overrides": {"containerOverrides": [{"args": args}]}});
        let path: Vec<String> = self.job.split('/').map(percent_encode).collect();
        let req = self.http.post(format!("{}/v2/{}:run", self.endpoint, path.join("/"))).json(&body);
        let req = self.tokens.authorize(req).await?;
        let transport = |e: reqwest::Error| CloudRunError::Transport {
            endpoint: self.endpoint.clone(),
            connected: !e.is_connect(),
            reason: if e.is_timeout() {
                "no answer in time (the execution may have started)".to_owned()
            } else {
                e.without_url().to_string()
            },
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(CloudRunError::Api { job: self.job.clone(), api: ApiError::parse(status.as_u16(), &bytes) });
        }
        execution_name(&bytes).ok_or_else(|| CloudRunError::NoExecution {
            job: self.job.clone(),
            answer: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
        })
    }
}

/// The execution an Operation answer names: `metadata.name` (v2), else the v1 answer's own
/// `metadata.name` inside an Execution object.
fn execution_name(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v["metadata"]["name"].as_str().filter(|n| n.contains("/executions/")).map(str::to_owned)
}

#[async_trait]
impl ferry_core::Dispatcher for JobRunner {
    async fn start(&self, args: &[String]) -> Result<String, Failure> {
        self.run(args).await.map_err(|e| Failure::with_class(e.class(), e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Clone)]
    struct Seen {
        path: String,
        authorization: Option<String>,
        body: Value,
    }

    /// A stand-in Admin API: job `denied` answers 403, `busy` 429 once, `mute` an answer
    /// without an execution, `slow` after 3 s; any other job starts `<job>-abcde`.
    async fn stand_in() -> (String, Arc<Mutex<Vec<Seen>>>) {
        use axum::http::{HeaderMap, StatusCode, Uri};
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
            let log = log.clone();
            async move {
                let authorization = headers.get("authorization").map(|v| v.to_str().expect("header").to_owned());
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let n = {
                    let mut l = log.lock().expect("lock");
                    l.push(Seen { path: uri.path().to_owned(), authorization, body });
                    l.len()
                };
                let path = uri.path().to_owned();
                if path.ends_with("/jobs/denied:run") {
                    let body = r#"{"error": {"code": 403, "message": "Permission 'run.jobs.runWithOverrides' denied", "status": "PERMISSION_DENIED"}}"#;
                    return (StatusCode::FORBIDDEN, body.to_owned());
                }
                if path.ends_with("/jobs/busy:run") && n == 1 {
                    return (StatusCode::TOO_MANY_REQUESTS, r#"{"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}}"#.to_owned());
                }
                if path.ends_with("/jobs/down:run") {
                    return (StatusCode::INTERNAL_SERVER_ERROR, r#"{"error": {"code": 500, "message": "internal", "status": "INTERNAL"}}"#.to_owned());
                }
                if path.ends_with("/jobs/mute:run") {
                    return (StatusCode::OK, r#"{"name": "projects/p/locations/l/operations/1", "done": false}"#.to_owned());
                }
                if path.ends_with("/jobs/slow:run") {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
                let job = path.trim_start_matches("/v2/").trim_end_matches(":run").to_owned();
                let answer = json!({"name": "projects/p/locations/l/operations/7f0c", "done": false,
                    "metadata": {"@type": "type.googleapis.com/google.cloud.run.v2.Execution", "name": format!("{job}/executions/x-abcde")}});
                (StatusCode::OK, answer.to_string())
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (endpoint, seen)
    }

    fn args() -> Vec<String> {
        ["run", "--export", "orders", "--message-id", "m-1"].map(str::to_owned).to_vec()
    }

    fn runner(endpoint: &str, job: &str) -> JobRunner {
        JobRunner::new(
            endpoint,
            &format!("projects/p/locations/europe-west1/jobs/{job}"),
            Auth::Token(ferry_core::Secret::new("tok")),
            Duration::from_secs(1),
        )
        .with_retry(RetryPolicy { initial: Duration::from_millis(10), ..RetryPolicy::default() })
    }

    #[tokio::test]
    async fn a_run_sends_the_overrides_and_returns_the_execution_name() {
        let (endpoint, seen) = stand_in().await;
        let name = runner(&endpoint, "ferry-run").run(&args()).await.expect("started");
        assert_eq!(name, "projects/p/locations/europe-west1/jobs/ferry-run/executions/x-abcde");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path, "/v2/projects/p/locations/europe-west1/jobs/ferry-run:run");
        assert_eq!(seen[0].authorization.as_deref(), Some("Bearer tok"));
        assert_eq!(seen[0].body, json!({"overrides": {"containerOverrides": [{"args": args()}]}}));
    }

    #[tokio::test]
    async fn a_refusal_is_returned_with_the_apis_reason_and_not_sent_again() {
        let (endpoint, seen) = stand_in().await;
        let e = runner(&endpoint, "denied").run(&args()).await.expect_err("refused");
        assert!(e.to_string().contains("run.jobs.runWithOverrides"), "{e}");
        assert_eq!(e.class(), ErrorClass::Permanent);
        let e = runner(&endpoint, "down").run(&args()).await.expect_err("refused");
        assert_eq!(e.class(), ErrorClass::Transient, "{e}");
        assert_eq!(seen.lock().unwrap().len(), 2, "a 5xx may have started an execution: never sent twice");
    }

    #[tokio::test]
    async fn only_a_429_or_a_refused_connection_is_sent_again() {
        let (endpoint, seen) = stand_in().await;
        runner(&endpoint, "busy").run(&args()).await.expect("started on the second attempt");
        assert_eq!(seen.lock().unwrap().len(), 2);

        let e = runner(&endpoint, "slow").run(&args()).await.expect_err("timed out");
        assert!(matches!(e, CloudRunError::Transport { connected: true, .. }), "{e:?}");
        assert!(e.to_string().contains("may have started"), "{e}");
        assert_eq!(seen.lock().unwrap().len(), 3, "a timeout is not sent again");

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let e = runner(&format!("http://{closed}"), "x").run(&args()).await.expect_err("nobody listens");
        assert!(matches!(e, CloudRunError::Transport { connected: false, .. }), "{e:?}");
        assert!(e.to_string().contains("attempts"), "tried again: {e}");
    }

    #[tokio::test]
    async fn an_answer_without_an_execution_is_an_error() {
        let (endpoint, _) = stand_in().await;
        let e = runner(&endpoint, "mute").run(&args()).await.expect_err("no execution");
        assert!(e.to_string().contains("names no execution"), "{e}");
    }
}
