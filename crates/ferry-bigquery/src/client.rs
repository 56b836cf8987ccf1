use std::time::Duration;

use ferry_google::{percent_encode, ApiError, Auth, TokenSource};
use serde::Deserialize;
use serde_json::{json, Value};

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

/// A BigQuery REST client for one project.
#[derive(Clone)]
pub struct BigQuery {
    http: reqwest::Client,
    /// `<endpoint>/bigquery/v2`.
    api: String,
    /// `<api>/projects/<project>`.
    base: String,
    project: String,
    tokens: TokenSource,
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
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| BigQueryError::Transport { op: "client", endpoint: endpoint.into(), reason: e.to_string() })?;
        let api = format!("{}/bigquery/v2", endpoint.trim_end_matches('/'));
        Ok(Self {
            tokens: TokenSource::new(http.clone(), auth),
            http,
            base: format!("{api}/projects/{}", percent_encode(project)),
            api,
            project: project.into(),
        })
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

    async fn call(&self, op: &'static str, method: reqwest::Method, url: String, body: Option<&Value>) -> Result<Value, BigQueryError> {
        let bytes = self.call_bytes(op, method, url, body).await?;
        let value: Value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        // Some servers report a failed job with HTTP 200 and an `errors` list.
        if let Some(e) = value["status"]["errorResult"].as_object().or_else(|| value["errors"][0].as_object()) {
            return Err(job_error(op, e.get("reason").and_then(Value::as_str), e.get("message").and_then(Value::as_str)));
        }
        Ok(value)
    }

    async fn call_results(
        &self,
        op: &'static str,
        method: reqwest::Method,
        url: String,
        body: Option<&Value>,
    ) -> Result<Results, BigQueryError> {
        let bytes = self.call_bytes(op, method, url, body).await?;
        let r: Results = serde_json::from_slice(&bytes).map_err(|e| BigQueryError::Decode { op, reason: e.to_string() })?;
        if let Some(e) = r.status.as_ref().and_then(|s| s.error_result.as_ref()).or(r.errors.first()) {
            return Err(job_error(op, e.reason.as_deref(), e.message.as_deref()));
        }
        Ok(r)
    }

    /// Starts a query with named parameters and waits until it is complete.
    pub async fn query(&self, sql: &str, params: &[QueryParam], page_size: u32) -> Result<QueryJob, BigQueryError> {
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
        let body = json!({
            "query": sql,
            "useLegacySql": false,
            "parameterMode": "NAMED",
            "queryParameters": params,
            "maxResults": page_size,
            "timeoutMs": 10000,
            "formatOptions": {"useInt64Timestamp": true},
        });
        let mut resp = self.call_results("jobs.query", reqwest::Method::POST, format!("{}/queries", self.base), Some(&body)).await?;
        let job_id = resp.job_reference.as_ref().map(|j| j.job_id.clone()).unwrap_or_default();
        let location = resp.job_reference.as_ref().and_then(|j| j.location.clone());
        while resp.job_complete == Some(false) {
            resp = self.results_raw(&job_id, location.as_deref(), None, 0).await?;
        }
        Ok(QueryJob {
            client: self.clone(),
            job_id,
            location,
            schema: resp.schema.map(|s| s.fields).unwrap_or_default(),
            dml_affected: resp.num_dml_affected_rows.as_deref().and_then(|s| s.parse().ok()),
            first: Some(resp.rows.into_iter().map(|r| r.f.into_iter().map(|c| c.0).collect()).collect()),
            next_token: resp.page_token,
            page_size,
        })
    }

    async fn results_raw(
        &self,
        job_id: &str,
        location: Option<&str>,
        page_token: Option<&str>,
        page_size: u32,
    ) -> Result<Results, BigQueryError> {
        let mut url = format!(
            "{}/queries/{}?formatOptions.useInt64Timestamp=true&timeoutMs=10000&maxResults={}",
            self.base,
            percent_encode(job_id),
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

    /// Streams rows into a table with `tabledata.insertAll`.
    pub async fn insert_rows(&self, table: &TableRef, rows: &[Value]) -> Result<(), BigQueryError> {
        let body = json!({"rows": rows.iter().map(|r| json!({"json": r})).collect::<Vec<_>>()});
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
        match self.call("datasets.insert", reqwest::Method::POST, format!("{}/datasets", self.base), Some(&body)).await {
            Err(BigQueryError::Api { api: ApiError { status: 409, .. }, .. }) => Ok(()),
            other => other.map(|_| ()),
        }
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
        match self
            .call(
                "datasets.delete",
                reqwest::Method::DELETE,
                format!("{}/datasets/{}?deleteContents=true", self.base, percent_encode(dataset)),
                None,
            )
            .await
        {
            Err(BigQueryError::Api { api: ApiError { status: 404, .. }, .. }) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// The schema of a table, or `None` when it does not exist.
    pub async fn table_schema(&self, table: &TableRef) -> Result<Option<Vec<Field>>, BigQueryError> {
        let url = self.table_url(table);
        match self.call("tables.get", reqwest::Method::GET, url, None).await {
            Err(BigQueryError::Api { api: ApiError { status: 404, .. }, .. }) => Ok(None),
            Err(e) => Err(e),
            Ok(v) => Ok(Some(
                serde_json::from_value(v["schema"]["fields"].clone())
                    .map_err(|e| BigQueryError::Decode { op: "tables.get", reason: e.to_string() })?,
            )),
        }
    }
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
    first: Option<Page>,
    next_token: Option<String>,
    page_size: u32,
}

impl QueryJob {
    /// The next page of rows, `None` after the last. Only one page is held at a time.
    pub async fn next_page(&mut self) -> Result<Option<Page>, BigQueryError> {
        if let Some(rows) = self.first.take() {
            if !rows.is_empty() || self.next_token.is_none() {
                return Ok(Some(rows));
            }
        }
        let Some(token) = self.next_token.take() else { return Ok(None) };
        let resp = self.client.results_raw(&self.job_id, self.location.as_deref(), Some(&token), self.page_size).await?;
        self.next_token = resp.page_token;
        Ok(Some(resp.rows.into_iter().map(|r| r.f.into_iter().map(|c| c.0).collect()).collect()))
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
    num_dml_affected_rows: Option<String>,
    #[serde(default)]
    errors: Vec<ErrorProto>,
    status: Option<JobStatus>,
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
