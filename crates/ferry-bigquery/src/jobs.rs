//! Load and copy jobs with ids chosen by the caller, and table creation and deletion: what
//! the table loader needs of BigQuery's REST API.
//!
//! A job id names one effect. A job inserted again under the same id (a retry after a lost
//! answer, or a later run settling an earlier one) is answered `409 Already Exists` and does
//! nothing; [`BigQuery::run_job`] then waits for the job of that id and reports its outcome,
//! so an effect is never applied twice.

use std::sync::atomic::{AtomicBool, Ordering};
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

/// Resumable uploads take pieces whose length is a multiple of this, but for the last.
pub const UPLOAD_QUANTUM: usize = 256 * 1024;

const LOAD_OP: &str = "jobs.insert (load)";

/// A load job's file being sent through a resumable upload session (see
/// [`BigQuery::start_load`]).
#[derive(Debug)]
pub struct LoadUpload {
    job_id: String,
    location: String,
    /// Bytes the session holds.
    sent: u64,
}

/// What an upload session said to a piece.
pub(crate) enum Piece {
    /// It holds this many bytes and waits for more.
    Incomplete(u64),
    /// The file is complete: the job resource.
    Done(Value),
}

fn lost_bytes(held: u64, sent: u64) -> BigQueryError {
    BigQueryError::Decode { op: LOAD_OP, reason: format!("the upload holds {held} bytes, fewer than the {sent} it had taken") }
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

    /// Opens a resumable upload for a Parquet load job named `job_id` into `table`. Nothing
    /// is loaded and no job exists until [`Self::finish_load`] sends the last piece; a session
    /// abandoned before then loads nothing. With `fields` (the REST schema) a missing table is
    /// created with them; without, the table must exist and its own schema is used.
    pub async fn start_load(
        &self,
        job_id: &str,
        table: &TableRef,
        write: WriteDisposition,
        fields: Option<&Value>,
    ) -> Result<LoadUpload, BigQueryError> {
        let mut load = json!({
            "destinationTable": {"projectId": table.project, "datasetId": table.dataset, "tableId": table.table},
            "sourceFormat": "PARQUET",
            "writeDisposition": write.api_name(),
            "createDisposition": "CREATE_NEVER",
        });
        if let Some(fields) = fields {
            load["createDisposition"] = json!("CREATE_IF_NEEDED");
            load["schema"] = json!({"fields": fields});
        }
        let body = json!({
            "jobReference": {"projectId": self.project(), "jobId": job_id},
            "configuration": {"load": load},
        });
        let url = format!("{}?uploadType=resumable", self.upload_base());
        let location = self.retried(LOAD_OP, || self.start_upload(LOAD_OP, &url, &body)).await?;
        Ok(LoadUpload { job_id: job_id.to_owned(), location, sent: 0 })
    }

    /// Sends `piece`, the next bytes of the file; its length is a multiple of
    /// [`UPLOAD_QUANTUM`]. After a failed attempt the session is asked how much it holds and
    /// only the rest is sent again, so no byte arrives twice.
    pub async fn send_piece(&self, upload: &mut LoadUpload, piece: bytes::Bytes) -> Result<(), BigQueryError> {
        let (start, end) = (upload.sent, upload.sent + piece.len() as u64);
        let tried = AtomicBool::new(false);
        let location = upload.location.as_str();
        self.retried(LOAD_OP, || async {
            let mut from = if tried.swap(true, Ordering::Relaxed) { self.upload_held(location).await? } else { start };
            // A server may take only part of a piece; it says how much, and gets the rest.
            loop {
                if from >= end {
                    return Ok(());
                }
                if from < start {
                    return Err(lost_bytes(from, start));
                }
                let rest = piece.slice((from - start) as usize..);
                match self.put_piece_once(location, format!("bytes {from}-{}/*", end - 1), rest).await? {
                    Piece::Incomplete(held) if held > from => from = held,
                    Piece::Incomplete(held) => {
                        return Err(BigQueryError::Decode {
                            op: LOAD_OP,
                            reason: format!("the upload holds {held} bytes after bytes from {from} to {end} were sent"),
                        })
                    }
                    Piece::Done(_) => {
                        return Err(BigQueryError::Decode { op: LOAD_OP, reason: "the upload ended before its last piece".into() })
                    }
                }
            }
        })
        .await?;
        upload.sent = end;
        Ok(())
    }

    /// Sends the file's last bytes, `last`, which creates the load job, and waits for it. A
    /// job of that id that already exists (an attempt whose answer was lost) is waited for,
    /// not loaded again.
    pub async fn finish_load(&self, upload: LoadUpload, last: bytes::Bytes) -> Result<JobDone, BigQueryError> {
        let (start, total) = (upload.sent, upload.sent + last.len() as u64);
        let tried = AtomicBool::new(false);
        let location = upload.location.as_str();
        let answer = self
            .retried(LOAD_OP, || async {
                let mut from = if tried.swap(true, Ordering::Relaxed) {
                    if self.job_state(&upload.job_id).await?.is_some() {
                        return Ok(None);
                    }
                    self.upload_held(location).await?
                } else {
                    start
                };
                loop {
                    if from < start {
                        return Err(lost_bytes(from, start));
                    }
                    let range = if from >= total { format!("bytes */{total}") } else { format!("bytes {from}-{}/{total}", total - 1) };
                    let rest = last.slice((from.min(total) - start) as usize..);
                    match self.put_piece_once(location, range, rest).await {
                        Ok(Piece::Done(job)) => return Ok(Some(job)),
                        // Part of the last bytes taken: the rest follows.
                        Ok(Piece::Incomplete(held)) if held > from && held < total => from = held,
                        Ok(Piece::Incomplete(held)) => {
                            return Err(BigQueryError::Decode {
                                op: LOAD_OP,
                                reason: format!("the upload holds {held} of the file's {total} bytes after its last piece"),
                            })
                        }
                        Err(BigQueryError::Api { api: ApiError { status: 409, .. }, .. }) => return Ok(None),
                        Err(e) => return Err(e),
                    }
                }
            })
            .await?;
        match answer.map(|job| state_of(&job)) {
            Some(JobState::Done(d)) => Ok(d),
            Some(JobState::Failed(message)) => Err(BigQueryError::Job { op: LOAD_OP, what: "job failed", reason: None, message }),
            Some(JobState::Running) | None => self.wait_job(LOAD_OP, &upload.job_id).await,
        }
    }

    /// How many bytes the upload session at `location` holds.
    async fn upload_held(&self, location: &str) -> Result<u64, BigQueryError> {
        match self.put_piece_once(location, "bytes */*".into(), bytes::Bytes::new()).await? {
            Piece::Incomplete(held) => Ok(held),
            Piece::Done(_) => Err(BigQueryError::Decode { op: LOAD_OP, reason: "the upload ended before its last piece".into() }),
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
    /// existing table of that name is left as it is (names given to it are fresh per load).
    pub async fn create_table(&self, table: &TableRef, fields: &Value, expires_in: Option<Duration>) -> Result<(), BigQueryError> {
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
