//! Load and copy jobs with ids chosen by the caller, and table creation and deletion: what
//! the table loader needs of BigQuery's REST API.
//!
//! A job id names one effect. A job inserted again under the same id (a retry after a lost
//! answer, or a later run settling an earlier one) is answered `409 Already Exists` and does
//! nothing; [`BigQuery::run_job`] then waits for the job of that id and reports its outcome,
//! so an effect is never applied twice.

use std::time::Duration;

use ferry_google::{percent_encode, ApiError};
use serde_json::{json, Value};

use crate::client::{BigQuery, TableRef};
use crate::BigQueryError;

/// How a job writes its destination table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteDisposition {
    /// Replaces the table's rows and schema, atomically.
    Truncate,
    /// Adds rows.
    Append,
}

impl WriteDisposition {
    fn api_name(self) -> &'static str {
        match self {
            Self::Truncate => "WRITE_TRUNCATE",
            Self::Append => "WRITE_APPEND",
        }
    }
}

/// A job that completed without error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDone {
    /// Rows the job wrote: `statistics.load.outputRows` or `statistics.copy.copiedRows`.
    pub rows: u64,
}

/// What `jobs.get` says of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Pending or running.
    Running,
    /// Completed without error.
    Done(JobDone),
    /// Completed with an error: it changed nothing.
    Failed(String),
}

/// Longest wait between two looks at a running job.
const MAX_POLL: Duration = Duration::from_secs(5);

impl BigQuery {
    fn upload_base(&self) -> String {
        format!("{}/projects/{}/jobs", self.api_root().replacen("/bigquery/v2", "/upload/bigquery/v2", 1), percent_encode(self.project()))
    }

    fn job_url(&self, job_id: &str) -> String {
        format!("{}/jobs/{}", self.project_base(), percent_encode(job_id))
    }

    /// The state of job `job_id`; `None` when there is no such job.
    pub async fn job_state(&self, job_id: &str) -> Result<Option<JobState>, BigQueryError> {
        let url = self.job_url(job_id);
        let found = self
            .retried("jobs.get", || async {
                match self.call_json_once("jobs.get", reqwest::Method::GET, &url, None).await {
                    Err(BigQueryError::Api { api: ApiError { status: 404, .. }, .. }) => Ok(None),
                    other => other.map(Some),
                }
            })
            .await?;
        Ok(found.map(|job| state_of(&job)))
    }

    /// Waits until job `job_id` is complete and returns its outcome.
    async fn wait_job(&self, op: &'static str, job_id: &str) -> Result<JobDone, BigQueryError> {
        let mut polls = 0u32;
        loop {
            match self.job_state(job_id).await? {
                None => {
                    return Err(BigQueryError::Job { op, what: "job lost", reason: None, message: format!("job {job_id} does not exist") })
                }
                Some(JobState::Done(d)) => return Ok(d),
                Some(JobState::Failed(message)) => return Err(BigQueryError::Job { op, what: "job failed", reason: None, message }),
                Some(JobState::Running) => {
                    polls += 1;
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(polls.min(50))).min(MAX_POLL)).await;
                }
            }
        }
    }

    /// Inserts a job named `job_id` with `configuration` and waits for its outcome. A job of
    /// that id that already exists is not run again: its outcome is the answer.
    pub async fn run_job(&self, op: &'static str, job_id: &str, configuration: Value) -> Result<JobDone, BigQueryError> {
        let body = json!({
            "jobReference": {"projectId": self.project(), "jobId": job_id},
            "configuration": configuration,
        });
        let url = format!("{}/jobs", self.project_base());
        let inserted = self
            .retried(op, || async {
                match self.call_json_once(op, reqwest::Method::POST, &url, Some(&body)).await {
                    Err(BigQueryError::Api { api: ApiError { status: 409, .. }, .. }) => Ok(None),
                    other => other.map(Some),
                }
            })
            .await;
        match inserted {
            Ok(Some(job)) => match state_of(&job) {
                JobState::Done(d) => Ok(d),
                JobState::Failed(message) => Err(BigQueryError::Job { op, what: "job failed", reason: None, message }),
                JobState::Running => self.wait_job(op, job_id).await,
            },
            Ok(None) => self.wait_job(op, job_id).await,
            Err(e) => Err(e),
        }
    }

    /// Loads `data` (one file in `format`: `PARQUET`, `CSV`, …) into `table` as job `job_id`,
    /// through a resumable upload (no size limit), and waits for the job. The table's own
    /// schema is used; the table must exist.
    pub async fn load_upload(
        &self,
        job_id: &str,
        table: &TableRef,
        format: &str,
        write: WriteDisposition,
        data: bytes::Bytes,
    ) -> Result<JobDone, BigQueryError> {
        const OP: &str = "jobs.insert (load)";
        let body = json!({
            "jobReference": {"projectId": self.project(), "jobId": job_id},
            "configuration": {"load": {
                "destinationTable": {"projectId": table.project, "datasetId": table.dataset, "tableId": table.table},
                "sourceFormat": format,
                "writeDisposition": write.api_name(),
                "createDisposition": "CREATE_NEVER",
            }},
        });
        let url = format!("{}?uploadType=resumable", self.upload_base());
        // Each attempt starts a new upload session; a job that the lost answer of an earlier
        // attempt had already started answers 409, and is waited for instead.
        let started = self
            .retried(OP, || async {
                let location = self.start_upload(OP, &url, &body).await?;
                match self.call_json_raw_once(OP, reqwest::Method::PUT, &location, data.clone()).await {
                    Err(BigQueryError::Api { api: ApiError { status: 409, .. }, .. }) => Ok(None),
                    other => other.map(Some),
                }
            })
            .await?;
        match started.map(|job| state_of(&job)) {
            Some(JobState::Done(d)) => Ok(d),
            Some(JobState::Failed(message)) => Err(BigQueryError::Job { op: OP, what: "job failed", reason: None, message }),
            Some(JobState::Running) | None => self.wait_job(OP, job_id).await,
        }
    }

    /// Copies `from` into `to` as job `job_id` and waits for it. `to` is created when missing.
    pub async fn copy_table(
        &self,
        job_id: &str,
        from: &TableRef,
        to: &TableRef,
        write: WriteDisposition,
    ) -> Result<JobDone, BigQueryError> {
        let configuration = json!({"copy": {
            "sourceTable": {"projectId": from.project, "datasetId": from.dataset, "tableId": from.table},
            "destinationTable": {"projectId": to.project, "datasetId": to.dataset, "tableId": to.table},
            "writeDisposition": write.api_name(),
            "createDisposition": "CREATE_IF_NEEDED",
        }});
        self.run_job("jobs.insert (copy)", job_id, configuration).await
    }

    /// Creates `table` with `fields` (the REST schema) that expires after `expires_in`; an
    /// existing table of that name is replaced.
    pub async fn create_table(&self, table: &TableRef, fields: &Value, expires_in: Option<Duration>) -> Result<(), BigQueryError> {
        self.delete_table(table).await?;
        let mut body = json!({
            "tableReference": {"projectId": table.project, "datasetId": table.dataset, "tableId": table.table},
            "schema": {"fields": fields},
        });
        if let Some(d) = expires_in {
            let at = chrono::Utc::now() + chrono::Duration::from_std(d).unwrap_or_default();
            body["expirationTime"] = json!(at.timestamp_millis().to_string());
        }
        let url = format!("{}/datasets/{}/tables", self.project_base(), percent_encode(&table.dataset));
        // A retry after a lost answer finds the table the first attempt made: 409 is success.
        self.retried("tables.insert", || async {
            match self.call_json_once("tables.insert", reqwest::Method::POST, &url, Some(&body)).await {
                Err(BigQueryError::Api { api: ApiError { status: 409, .. }, .. }) => Ok(()),
                other => other.map(|_| ()),
            }
        })
        .await
    }

    /// Creates `table` with `fields`, partitioned by day on the TIMESTAMP or DATETIME column
    /// `column`; an existing table is left as it is.
    pub async fn create_table_partitioned(&self, table: &TableRef, fields: &Value, column: &str) -> Result<(), BigQueryError> {
        let body = json!({
            "tableReference": {"projectId": table.project, "datasetId": table.dataset, "tableId": table.table},
            "schema": {"fields": fields},
            "timePartitioning": {"type": "DAY", "field": column},
        });
        let url = format!("{}/datasets/{}/tables", self.project_base(), percent_encode(&table.dataset));
        self.retried("tables.insert", || async {
            match self.call_json_once("tables.insert", reqwest::Method::POST, &url, Some(&body)).await {
                Err(BigQueryError::Api { api: ApiError { status: 409, .. }, .. }) => Ok(()),
                other => other.map(|_| ()),
            }
        })
        .await
    }

    /// Deletes `table`; a missing table is fine.
    pub async fn delete_table(&self, table: &TableRef) -> Result<(), BigQueryError> {
        let url = self.table_url_of(table);
        self.retried("tables.delete", || async {
            match self.call_json_once("tables.delete", reqwest::Method::DELETE, &url, None).await {
                Err(BigQueryError::Api { api: ApiError { status: 404, .. }, .. }) => Ok(()),
                other => other.map(|_| ()),
            }
        })
        .await
    }
}

/// A job resource's state.
fn state_of(job: &Value) -> JobState {
    if job["status"]["state"].as_str() != Some("DONE") {
        return JobState::Running;
    }
    if let Some(e) = job["status"]["errorResult"].as_object() {
        let reason = e.get("reason").and_then(Value::as_str).unwrap_or_default();
        let message = e.get("message").and_then(Value::as_str).unwrap_or_default();
        return JobState::Failed(if reason.is_empty() { message.to_owned() } else { format!("{message} ({reason})") });
    }
    let stats = &job["statistics"];
    let rows = stats["load"]["outputRows"].as_str().or_else(|| stats["copy"]["copiedRows"].as_str()).and_then(|s| s.parse().ok());
    JobState::Done(JobDone { rows: rows.unwrap_or(0) })
}
