use std::future::Future;
use std::time::Duration;

use ferry_core::retry::{GaveUp, RetryPolicy, Verdict};
use ferry_core::{Classify, ErrorClass};
use ferry_google::{percent_encode, ApiError, Auth, TokenSource};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::BigQueryError;

/// `project.dataset.table`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRef {
    pub project: String,
    pub dataset: String,
    pub table: String,
}

impl std::fmt::Display for TableRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.project, self.dataset, self.table)
    }
}

/// A named query parameter. `value: None` binds SQL NULL.
#[derive(Debug, Clone)]
pub struct QueryParam {
    pub name: String,
    /// A BigQuery scalar type name: `TIMESTAMP`, `DATETIME`, `DATE`, `INT64`, `STRING`, ...
    pub type_name: String,
    pub value: Option<String>,
}

impl QueryParam {
    pub fn new(name: &str, type_name: &str, value: impl Into<String>) -> Self {
        Self { name: name.into(), type_name: type_name.into(), value: Some(value.into()) }
    }
}

/// A result-schema field (recursive for RECORD).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Field {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub fields: Vec<Field>,
}

impl Field {
    /// `REPEATED` mode.
    pub fn is_repeated(&self) -> bool {
        self.mode.as_deref() == Some("REPEATED")
    }
}

/// A value as the REST API returns it: scalars as text, arrays and records nested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Null,
    Text(String),
    List(Vec<Cell>),
    Record(Vec<Cell>),
}

/// One page of rows.
pub type Page = Vec<Vec<Cell>>;

/// How long one request may take, unless [`BigQuery::with_request_timeout`] says.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a query may take to complete, unless [`BigQuery::with_query_deadline`] says.
pub const DEFAULT_QUERY_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// How long BigQuery holds one `jobs.query` or `jobs.getQueryResults` call open while the job
/// runs (`timeoutMs`).
const SERVER_WAIT: Duration = Duration::from_secs(10);

/// A BigQuery REST client for one project.
///
/// Every call is retried under one [`RetryPolicy`] when it failed on the way (no answer, a
/// dropped connection) or BigQuery asks for a retry (408, 429, 5xx, `rateLimitExceeded`,
/// `backendError`); calls that are not idempotent by nature are made so first: `jobs.query`
/// carries a `requestId` made once per query, `tabledata.insertAll` an `insertId` per row, and
/// pages are fetched by their `pageToken`, so a retried page is the same page.
#[derive(Clone)]
pub struct BigQuery {
    http: reqwest::Client,
    /// `<endpoint>/bigquery/v2`.
    api: String,
    /// `<api>/projects/<project>`.
    base: String,
    project: String,
    tokens: TokenSource,
    retry: RetryPolicy,
    query_deadline: Duration,
}

impl std::fmt::Debug for BigQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BigQuery").field("base", &self.base).field("project", &self.project).finish_non_exhaustive()
    }
}

impl BigQuery {
    /// `endpoint` is `https://bigquery.googleapis.com` in production or the emulator's address.
    /// The metadata server of [`Auth::MetadataServer`] is moved by `GCE_METADATA_HOST`.
    pub fn new(endpoint: &str, project: &str, auth: Auth) -> Result<Self, BigQueryError> {
        Self::with_request_timeout(endpoint, project, auth, DEFAULT_REQUEST_TIMEOUT)
    }

    /// Like [`BigQuery::new`], with a deadline for each request other than
    /// [`DEFAULT_REQUEST_TIMEOUT`] (connecting is bounded by 10 s either way).
    pub fn with_request_timeout(endpoint: &str, project: &str, auth: Auth, timeout: Duration) -> Result<Self, BigQueryError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(timeout)
            .build()
            .map_err(|e| BigQueryError::Transport { op: "client", endpoint: endpoint.into(), reason: e.to_string() })?;
        let api = format!("{}/bigquery/v2", endpoint.trim_end_matches('/'));
        Ok(Self {
            tokens: TokenSource::new(http.clone(), auth),
            http,
            base: format!("{api}/projects/{}", percent_encode(project)),
            api,
            project: project.into(),
            retry: RetryPolicy::default(),
            query_deadline: DEFAULT_QUERY_DEADLINE,
        })
    }

    /// The same client with another retry policy (the default is [`RetryPolicy::default`]).
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The same client with another query deadline: a query whose job is not complete this
    /// long after it was started is cancelled and fails with [`BigQueryError::QueryTimeout`].
    /// The default is [`DEFAULT_QUERY_DEADLINE`].
    pub fn with_query_deadline(mut self, deadline: Duration) -> Self {
        self.query_deadline = deadline;
        self
    }

    /// Runs one HTTP call under the retry policy: again after a transport error or an answer
    /// that asks for a retry; never after an answer about the job itself.
    pub(crate) async fn retried<T, F, Fut>(&self, op: &'static str, call: F) -> Result<T, BigQueryError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, BigQueryError>>,
    {
        self.retry.run_with(op, call, http_verdict).await.map_err(gave_up)
    }

    /// The billing project queries run in.
    pub fn project(&self) -> &str {
        &self.project
    }

    async fn call_bytes(
        &self,
        op: &'static str,
        method: reqwest::Method,
        url: String,
        body: Option<&Value>,
    ) -> Result<bytes::Bytes, BigQueryError> {
        let mut req = self.tokens.authorize(self.http.request(method, &url)).await?;
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| BigQueryError::Transport {
            op,
            endpoint: self.base.clone(),
            reason: e.without_url().to_string(),
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| BigQueryError::Transport {
            op,
            endpoint: self.base.clone(),
            reason: e.without_url().to_string(),
        })?;
        if !status.is_success() {
            return Err(BigQueryError::Api { op, api: ApiError::parse(status.as_u16(), &bytes) });
        }
        Ok(bytes)
    }

    /// `<endpoint>/bigquery/v2`.
    pub(crate) fn api_root(&self) -> &str {
        &self.api
    }

    /// `<endpoint>/bigquery/v2/projects/<project>`.
    pub(crate) fn project_base(&self) -> &str {
        &self.base
    }

    pub(crate) fn table_url_of(&self, t: &TableRef) -> String {
        self.table_url(t)
    }

    /// One attempt; the answer as JSON, whatever job status it reports.
    pub(crate) async fn call_json_once(
        &self,
        op: &'static str,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Value, BigQueryError> {
        let bytes = self.call_bytes(op, method, url.to_owned(), body).await?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| BigQueryError::Decode { op, reason: e.to_string() })
    }

    /// One attempt to send `body` as the bytes `range` (a `Content-Range` value) of a
    /// resumable upload: `308` says how much the session holds, success gives the job.
    pub(crate) async fn put_piece_once(
        &self,
        location: &str,
        range: String,
        body: bytes::Bytes,
    ) -> Result<crate::jobs::Piece, BigQueryError> {
        const OP: &str = "jobs.insert (load)";
        let req = self.tokens.authorize(self.http.put(location)).await?;
        let resp = req
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_RANGE, range)
            .body(body)
            .send()
            .await
            .map_err(|e| BigQueryError::Transport { op: OP, endpoint: self.base.clone(), reason: e.without_url().to_string() })?;
        let status = resp.status();
        // `Range: bytes=0-N`: the session holds N + 1 bytes; no Range: none.
        let held = resp
            .headers()
            .get(reqwest::header::RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit('-').next())
            .and_then(|n| n.trim().parse::<u64>().ok())
            .map_or(0, |last| last + 1);
        let bytes = resp.bytes().await.map_err(|e| BigQueryError::Transport {
            op: OP,
            endpoint: self.base.clone(),
            reason: e.without_url().to_string(),
        })?;
        if status.as_u16() == 308 {
            return Ok(crate::jobs::Piece::Incomplete(held));
        }
        if !status.is_success() {
            return Err(BigQueryError::Api { op: OP, api: ApiError::parse(status.as_u16(), &bytes) });
        }
        serde_json::from_slice(&bytes).map(crate::jobs::Piece::Done).map_err(|e| BigQueryError::Decode { op: OP, reason: e.to_string() })
    }

    /// Starts a resumable upload: the session URI (`Location`) to send the bytes to.
    pub(crate) async fn start_upload(&self, op: &'static str, url: &str, body: &Value) -> Result<String, BigQueryError> {
        let req = self.tokens.authorize(self.http.post(url)).await?;
        let resp = req.json(body).send().await.map_err(|e| BigQueryError::Transport {
            op,
            endpoint: self.base.clone(),
            reason: e.without_url().to_string(),
        })?;
        let status = resp.status();
        let location = resp.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let bytes = resp.bytes().await.map_err(|e| BigQueryError::Transport {
            op,
            endpoint: self.base.clone(),
            reason: e.without_url().to_string(),
        })?;
        if !status.is_success() {
            return Err(BigQueryError::Api { op, api: ApiError::parse(status.as_u16(), &bytes) });
        }
        location.ok_or(BigQueryError::Decode { op, reason: "the upload session has no Location".into() })
    }

    /// One attempt; the answer as JSON, a job error reported with HTTP 200 as an error.
    async fn call_once(&self, op: &'static str, method: reqwest::Method, url: &str, body: Option<&Value>) -> Result<Value, BigQueryError> {
        let bytes = self.call_bytes(op, method, url.to_owned(), body).await?;
        let value: Value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        // Some servers report a failed job with HTTP 200 and an `errors` list.
        if let Some(e) = value["status"]["errorResult"].as_object().or_else(|| value["errors"][0].as_object()) {
            return Err(job_error(op, e.get("reason").and_then(Value::as_str), e.get("message").and_then(Value::as_str)));
        }
        Ok(value)
    }

    /// [`Self::call_once`] under the retry policy.
    async fn call(&self, op: &'static str, method: reqwest::Method, url: String, body: Option<&Value>) -> Result<Value, BigQueryError> {
        self.retried(op, || self.call_once(op, method.clone(), &url, body)).await
    }

    /// One `jobs.query` or `jobs.getQueryResults` call, under the retry policy.
    async fn call_results(
        &self,
        op: &'static str,
        method: reqwest::Method,
        url: String,
        body: Option<&Value>,
    ) -> Result<Results, BigQueryError> {
        self.retried(op, || self.call_results_once(op, method.clone(), &url, body)).await
    }

    async fn call_results_once(
        &self,
        op: &'static str,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Results, BigQueryError> {
        let bytes = self.call_bytes(op, method, url.to_owned(), body).await?;
        let r: Results = serde_json::from_slice(&bytes).map_err(|e| BigQueryError::Decode { op, reason: e.to_string() })?;
        // `errors` of a job still running are warnings or passing trouble, not its end (a
        // statement failed then and re-run would run twice): only a complete job's count.
        let errors = if r.job_complete == Some(false) { None } else { r.errors.first() };
        if let Some(e) = r.status.as_ref().and_then(|s| s.error_result.as_ref()).or(errors) {
            return Err(job_error(op, e.reason.as_deref(), e.message.as_deref()));
        }
        Ok(r)
    }

    /// Starts a query with named parameters and waits until it is complete, at most the query
    /// deadline.
    ///
    /// A call that got no answer is sent again with the same `requestId`, so BigQuery runs the
    /// statement once. A job that ran and failed for a reason worth a retry (a concurrent
    /// update, `backendError`) changed nothing; it is run again as a new query.
    pub async fn query(&self, sql: &str, params: &[QueryParam], page_size: u32) -> Result<QueryJob, BigQueryError> {
        self.retry.run_with("jobs.query", || self.query_once(sql, params, page_size), rerun_verdict).await.map_err(gave_up)
    }

    async fn query_once(&self, sql: &str, params: &[QueryParam], page_size: u32) -> Result<QueryJob, BigQueryError> {
        let params: Vec<Value> = params
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "parameterType": {"type": p.type_name},
                    "parameterValue": match &p.value { Some(v) => json!({"value": v}), None => json!({}) },
                })
            })
            .collect();
        let request_id = uuid::Uuid::new_v4().to_string();
        let body = json!({
            "query": sql,
            "useLegacySql": false,
            "parameterMode": "NAMED",
            "queryParameters": params,
            "maxResults": page_size,
            "timeoutMs": SERVER_WAIT.as_millis() as u64,
            "formatOptions": {"useInt64Timestamp": true},
            // Made once per query and sent again on a retry: BigQuery answers a repeated
            // request id with the job the first request started.
            "requestId": request_id,
        });
        let started = Instant::now();
        let url = format!("{}/queries", self.base);
        let mut attempt = 0;
        let mut resp = self
            .retried("jobs.query", || {
                attempt += 1;
                let again = attempt > 1;
                let (url, body, request_id) = (&url, &body, &request_id);
                async move {
                    match self.call_results_once("jobs.query", reqwest::Method::POST, url, Some(body)).await {
                        // The emulator makes the request id the job id and answers a repeated
                        // one "409 Already Exists: Job …": the first attempt started the job.
                        Err(BigQueryError::Api { api: ApiError { status: 409, .. }, .. }) if again => Ok(Results::started(request_id)),
                        other => other,
                    }
                }
            })
            .await?;
        let job_id = resp.job_reference.as_ref().map(|j| j.job_id.clone()).unwrap_or_default();
        let location = resp.job_reference.as_ref().and_then(|j| j.location.clone());
        let mut polls = 0;
        while resp.job_complete == Some(false) {
            let left = self.query_deadline.saturating_sub(started.elapsed());
            if left.is_zero() {
                self.cancel(&job_id, location.as_deref()).await;
                return Err(BigQueryError::QueryTimeout { job: job_id, waited: started.elapsed() });
            }
            polls += 1;
            if polls > 1 {
                tokio::time::sleep(self.retry.delay(polls - 1).min(left)).await;
            }
            let wait = SERVER_WAIT.min(self.query_deadline.saturating_sub(started.elapsed()));
            resp = self.results_raw(&job_id, location.as_deref(), None, page_size, wait).await?;
        }
        Ok(QueryJob {
            client: self.clone(),
            job_id,
            location,
            schema: resp.schema.map(|s| s.fields).unwrap_or_default(),
            dml_affected: resp.num_dml_affected_rows.as_deref().and_then(|s| s.parse().ok()),
            total_rows: if resp.num_dml_affected_rows.is_some() { None } else { resp.total_rows.as_deref().and_then(|s| s.parse().ok()) },
            read: 0,
            first: Some(resp.rows.into_iter().map(|r| r.f.into_iter().map(|c| c.0).collect()).collect()),
            next_token: resp.page_token,
            page_size,
        })
    }

    /// Asks BigQuery to cancel a job, once; a failure is only logged (the job ends anyway).
    async fn cancel(&self, job_id: &str, location: Option<&str>) {
        let mut url = format!("{}/jobs/{}/cancel", self.base, percent_encode(job_id));
        if let Some(loc) = location {
            url.push_str(&format!("?location={}", percent_encode(loc)));
        }
        if let Err(e) = self.call_once("jobs.cancel", reqwest::Method::POST, &url, None).await {
            tracing::warn!(job = job_id, error = %e, "could not cancel a query job past its deadline");
        }
    }

    async fn results_raw(
        &self,
        job_id: &str,
        location: Option<&str>,
        page_token: Option<&str>,
        page_size: u32,
        wait: Duration,
    ) -> Result<Results, BigQueryError> {
        let mut url = format!(
            "{}/queries/{}?formatOptions.useInt64Timestamp=true&timeoutMs={}&maxResults={}",
            self.base,
            percent_encode(job_id),
            wait.as_millis(),
            page_size
        );
        if let Some(loc) = location {
            url.push_str(&format!("&location={}", percent_encode(loc)));
        }
        if let Some(t) = page_token {
            url.push_str(&format!("&pageToken={}", percent_encode(t)));
        }
        self.call_results("jobs.getQueryResults", reqwest::Method::GET, url, None).await
    }

    /// Runs a statement (DDL/DML) and returns the number of affected rows when BigQuery reports it.
    pub async fn execute(&self, sql: &str, params: &[QueryParam]) -> Result<Option<u64>, BigQueryError> {
        Ok(self.query(sql, params, 1).await?.dml_affected)
    }

    /// Streams rows into a table with `tabledata.insertAll`. Each row gets an `insertId` made
    /// for this call (`<uuid>-<index>`), so a retried request does not insert a row twice.
    pub async fn insert_rows(&self, table: &TableRef, rows: &[Value]) -> Result<(), BigQueryError> {
        let batch = uuid::Uuid::new_v4();
        let rows: Vec<(String, Value)> = rows.iter().enumerate().map(|(i, r)| (format!("{batch}-{i}"), r.clone())).collect();
        self.insert_rows_with_ids(table, &rows).await
    }

    /// Streams `(insertId, row)` pairs into a table with `tabledata.insertAll`. BigQuery drops
    /// a row whose `insertId` it saw in the last minute or so, which makes a retry safe; a
    /// caller that sends the same rows again later (another run) supplies the same ids.
    pub async fn insert_rows_with_ids(&self, table: &TableRef, rows: &[(String, Value)]) -> Result<(), BigQueryError> {
        let body = json!({"rows": rows.iter().map(|(id, r)| json!({"insertId": id, "json": r})).collect::<Vec<_>>()});
        let url = format!("{}/insertAll", self.table_url(table));
        let resp = self.call("tabledata.insertAll", reqwest::Method::POST, url, Some(&body)).await?;
        if let Some(errs) = resp["insertErrors"].as_array().filter(|e| !e.is_empty()) {
            return Err(BigQueryError::Job {
                op: "tabledata.insertAll",
                what: "rows rejected",
                reason: None,
                message: errs[0].to_string(),
            });
        }
        Ok(())
    }

    /// Creates a dataset in the client's project; an existing one is fine.
    pub async fn create_dataset(&self, dataset: &str) -> Result<(), BigQueryError> {
        let body = json!({"datasetReference": {"projectId": self.project, "datasetId": dataset}});
        let url = format!("{}/datasets", self.base);
        // A retry after a lost answer finds the dataset the first attempt made: 409 is success.
        self.retried("datasets.insert", || async {
            match self.call_once("datasets.insert", reqwest::Method::POST, &url, Some(&body)).await {
                Err(BigQueryError::Api { api: ApiError { status: 409, .. }, .. }) => Ok(()),
                other => other.map(|_| ()),
            }
        })
        .await
    }

    fn table_url(&self, t: &TableRef) -> String {
        format!(
            "{}/projects/{}/datasets/{}/tables/{}",
            self.api,
            percent_encode(&t.project),
            percent_encode(&t.dataset),
            percent_encode(&t.table)
        )
    }

    /// Deletes a dataset and its tables.
    pub async fn delete_dataset(&self, dataset: &str) -> Result<(), BigQueryError> {
        let url = format!("{}/datasets/{}?deleteContents=true", self.base, percent_encode(dataset));
        // A retry after a lost answer finds the dataset gone: 404 is success.
        self.retried("datasets.delete", || async {
            match self.call_once("datasets.delete", reqwest::Method::DELETE, &url, None).await {
                Err(BigQueryError::Api { api: ApiError { status: 404, .. }, .. }) => Ok(()),
                other => other.map(|_| ()),
            }
        })
        .await
    }

    /// The schema of a table, or `None` when it does not exist.
    pub async fn table_schema(&self, table: &TableRef) -> Result<Option<Vec<Field>>, BigQueryError> {
        Ok(self.table_info(table).await?.map(|t| t.fields))
    }

    /// `table`'s kind and schema; `None` when it does not exist.
    pub async fn table_info(&self, table: &TableRef) -> Result<Option<TableInfo>, BigQueryError> {
        let url = self.table_url(table);
        let found = self
            .retried("tables.get", || async {
                match self.call_once("tables.get", reqwest::Method::GET, &url, None).await {
                    Err(BigQueryError::Api { api: ApiError { status: 404, .. }, .. }) => Ok(None),
                    other => other.map(Some),
                }
            })
            .await?;
        match found {
            None => Ok(None),
            Some(v) => Ok(Some(TableInfo {
                kind: v["type"].as_str().unwrap_or("TABLE").to_owned(),
                fields: serde_json::from_value(v["schema"]["fields"].clone())
                    .map_err(|e| BigQueryError::Decode { op: "tables.get", reason: e.to_string() })?,
            })),
        }
    }
}

/// What `tables.get` says of a table.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// `TABLE`, `VIEW`, `MATERIALIZED_VIEW`, `EXTERNAL`, `SNAPSHOT`, …
    pub kind: String,
    pub fields: Vec<Field>,
}

/// A completed query whose rows are read page by page.
#[derive(Debug)]
pub struct QueryJob {
    client: BigQuery,
    job_id: String,
    location: Option<String>,
    /// The result schema.
    pub schema: Vec<Field>,
    /// Rows changed by a DML statement.
    pub dml_affected: Option<u64>,
    /// `totalRows` of the result (not for DML statements).
    total_rows: Option<u64>,
    /// Rows handed out so far.
    read: u64,
    first: Option<Page>,
    next_token: Option<String>,
    page_size: u32,
}

impl QueryJob {
    /// The job's id (for messages).
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// The next page of rows, `None` after the last. Only one page is held at a time.
    ///
    /// Pages are fetched by their `pageToken`; a page whose call failed is fetched again with
    /// the same token. With the last page, the rows read are compared with the job's
    /// `totalRows`: a difference is [`BigQueryError::RowCount`].
    pub async fn next_page(&mut self) -> Result<Option<Page>, BigQueryError> {
        if let Some(rows) = self.first.take() {
            if !rows.is_empty() || self.next_token.is_none() {
                return self.hand_out(rows).map(Some);
            }
        }
        let Some(token) = self.next_token.take() else { return Ok(None) };
        let resp = self.client.results_raw(&self.job_id, self.location.as_deref(), Some(&token), self.page_size, SERVER_WAIT).await?;
        self.next_token = resp.page_token;
        self.hand_out(resp.rows.into_iter().map(|r| r.f.into_iter().map(|c| c.0).collect()).collect()).map(Some)
    }

    /// Counts a page, and checks the count after the last one.
    fn hand_out(&mut self, rows: Page) -> Result<Page, BigQueryError> {
        self.read += rows.len() as u64;
        if self.next_token.is_some() {
            return Ok(rows);
        }
        match self.total_rows {
            Some(expected) if expected != self.read => Err(BigQueryError::RowCount { job: self.job_id.clone(), expected, read: self.read }),
            _ => Ok(rows),
        }
    }

    /// Reads every remaining row (tests and small results only).
    pub async fn collect(mut self) -> Result<Page, BigQueryError> {
        let mut all = Vec::new();
        while let Some(p) = self.next_page().await? {
            all.extend(p);
        }
        Ok(all)
    }
}

/// Whether an HTTP call is tried again: after no answer, or an answer that asks for it.
fn http_verdict(e: &BigQueryError) -> Verdict {
    match e {
        BigQueryError::Transport { .. } => Verdict::Retry,
        BigQueryError::Api { api, .. } if api.is_transient() => Verdict::Retry,
        BigQueryError::Credentials(g) => g.class().into(),
        _ => Verdict::Stop,
    }
}

/// Whether a whole query is run again as a new job: only when BigQuery said that this job
/// failed for a passing reason (a concurrent update, `backendError` in the job's status). A
/// call that was already retried and still failed, a deadline, a bad statement: no.
fn rerun_verdict(e: &BigQueryError) -> Verdict {
    match e {
        BigQueryError::Job { .. } | BigQueryError::Api { .. } if e.class() == ErrorClass::Transient => Verdict::Retry,
        _ => Verdict::Stop,
    }
}

/// The last error, with the number of attempts when there was more than one.
fn gave_up(g: GaveUp<BigQueryError>) -> BigQueryError {
    if g.attempts <= 1 {
        return g.error;
    }
    let context = g.context();
    BigQueryError::GaveUp { last: Box::new(g.error), context }
}

fn job_error(op: &'static str, reason: Option<&str>, message: Option<&str>) -> BigQueryError {
    BigQueryError::Job {
        op,
        what: "job failed",
        reason: reason.filter(|r| !r.is_empty()).map(str::to_owned),
        message: message.unwrap_or_default().to_owned(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Results {
    job_reference: Option<JobRef>,
    job_complete: Option<bool>,
    schema: Option<Schema>,
    #[serde(default)]
    rows: Vec<Row>,
    page_token: Option<String>,
    total_rows: Option<String>,
    num_dml_affected_rows: Option<String>,
    #[serde(default)]
    errors: Vec<ErrorProto>,
    status: Option<JobStatus>,
}

impl Results {
    /// A job known only by its id, not yet seen complete.
    fn started(job_id: &str) -> Self {
        Self {
            job_reference: Some(JobRef { job_id: job_id.to_owned(), location: None }),
            job_complete: Some(false),
            schema: None,
            rows: Vec::new(),
            page_token: None,
            total_rows: None,
            num_dml_affected_rows: None,
            errors: Vec::new(),
            status: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobRef {
    job_id: String,
    location: Option<String>,
}

#[derive(Deserialize)]
struct Schema {
    #[serde(default)]
    fields: Vec<Field>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobStatus {
    error_result: Option<ErrorProto>,
}

#[derive(Deserialize)]
struct ErrorProto {
    reason: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct Row {
    f: Vec<RestCell>,
}

/// A cell in BigQuery's REST form: `{"v": null | "text" | [{"v":..}] | {"f":[..]}}`.
struct RestCell(Cell);

impl<'de> Deserialize<'de> for RestCell {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Outer;
        impl<'de> serde::de::Visitor<'de> for Outer {
            type Value = RestCell;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a cell {\"v\": ...}")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<RestCell, A::Error> {
                let mut cell = Cell::Null;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "v" {
                        cell = map.next_value::<Inner>()?.0;
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(RestCell(cell))
            }
        }
        d.deserialize_map(Outer)
    }
}

struct Inner(Cell);

impl<'de> Deserialize<'de> for Inner {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Inner;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("null, a string, a list of cells or a record")
            }
            fn visit_unit<E>(self) -> Result<Inner, E> {
                Ok(Inner(Cell::Null))
            }
            fn visit_none<E>(self) -> Result<Inner, E> {
                Ok(Inner(Cell::Null))
            }
            fn visit_str<E>(self, v: &str) -> Result<Inner, E> {
                Ok(Inner(Cell::Text(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Inner, E> {
                Ok(Inner(Cell::Text(v)))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Inner, E> {
                Ok(Inner(Cell::Text(v.to_string())))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Inner, E> {
                Ok(Inner(Cell::Text(v.to_string())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Inner, E> {
                Ok(Inner(Cell::Text(v.to_string())))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Inner, E> {
                Ok(Inner(Cell::Text(v.to_string())))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Inner, A::Error> {
                let mut items = Vec::new();
                while let Some(c) = seq.next_element::<RestCell>()? {
                    items.push(c.0);
                }
                Ok(Inner(Cell::List(items)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Inner, A::Error> {
                let mut fields = Vec::new();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "f" {
                        fields = map.next_value::<Vec<RestCell>>()?.into_iter().map(|c| c.0).collect();
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(Inner(Cell::Record(fields)))
            }
        }
        d.deserialize_any(V)
    }
}
