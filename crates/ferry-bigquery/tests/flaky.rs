//! The BigQuery client against servers that fail: a proxy in front of the emulator that answers
//! 503 or drops the connection on chosen requests, and stand-ins that never finish a query,
//! miscount their rows or refuse a statement.
//!
//! The proxy speaks plain HTTP/1.1 over its own socket so that it can do what a real server
//! or load balancer does and a web framework will not: read a request, pass it on, and close
//! the connection without answering.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_bigquery::{Auth, BigQuery, BigQueryError, Cell, TableRef};
use ferry_core::{Classify, ErrorClass, RetryPolicy};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A request as the proxy saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query.
    target: String,
    /// `content-range`, when sent (a piece of a resumable upload).
    range: Option<String>,
    body: Vec<u8>,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn is(&self, method: &str, path_part: &str) -> bool {
        self.method == method && self.target.contains(path_part)
    }

    /// A `jobs.getQueryResults` call for a page after the first.
    fn is_page(&self) -> bool {
        self.method == "GET" && self.target.contains("/queries/") && self.target.contains("pageToken=")
    }

    fn query_param(&self, name: &str) -> Option<String> {
        let query = self.target.split_once('?')?.1;
        query.split('&').find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_owned))
    }
}

/// What the proxy does with a request.
enum Act {
    /// Pass it to the emulator and return the answer.
    Forward,
    /// Pass it to the emulator, then close the connection without answering: the work is done,
    /// the answer is lost.
    ForwardThenDrop,
    /// Answer this status and body without asking the emulator.
    Answer(u16, String),
}

/// Decides per request; gets the request and how many requests came before it.
type Plan = Arc<dyn Fn(&Seen, usize) -> Act + Send + Sync>;

struct Proxy {
    endpoint: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Proxy {
    /// A proxy on 127.0.0.1 in front of `upstream` (or of nothing, when every request gets an
    /// [`Act::Answer`]).
    async fn start(upstream: Option<String>, plan: Plan) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                let Ok((socket, _)) = listener.accept().await else { return };
                tokio::spawn(connection(socket, upstream.clone(), plan.clone(), log.clone(), http.clone()));
            }
        });
        Self { endpoint, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// A client for `project` through this proxy, retrying within milliseconds.
    fn client(&self, project: &str) -> BigQuery {
        BigQuery::new(&self.endpoint, project, Auth::None).expect("client").with_retry(RetryPolicy::fast(5, Duration::from_secs(20)))
    }
}

/// Serves one keep-alive connection.
async fn connection(socket: TcpStream, upstream: Option<String>, plan: Plan, log: Arc<Mutex<Vec<Seen>>>, http: reqwest::Client) {
    let mut socket = BufReader::new(socket);
    loop {
        let Some(req) = read_request(&mut socket).await else { return };
        let n = {
            let mut log = log.lock().expect("lock");
            log.push(req.clone());
            log.len() - 1
        };
        let mut extra = String::new();
        let (status, body) = match plan(&req, n) {
            Act::Answer(status, body) => (status, body.into_bytes()),
            act => {
                let upstream = upstream.as_deref().expect("a proxy that forwards needs an upstream");
                let method = reqwest::Method::from_bytes(req.method.as_bytes()).expect("method");
                let mut call = http.request(method, format!("{upstream}{}", req.target));
                if let Some(range) = &req.range {
                    call = call.header("content-range", range).body(req.body.clone());
                } else if !req.body.is_empty() {
                    call = call.header("content-type", "application/json").body(req.body.clone());
                }
                let resp = call.send().await.expect("the emulator answers");
                let status = resp.status().as_u16();
                // An upload session's address points back at the proxy; `range` says what
                // the session holds.
                if let Some(v) = resp.headers().get("location").and_then(|v| v.to_str().ok()) {
                    let path = v.splitn(4, '/').nth(3).unwrap_or_default();
                    extra.push_str(&format!("location: {}/{path}\r\n", endpoint_of(&socket)));
                }
                if let Some(v) = resp.headers().get("range").and_then(|v| v.to_str().ok()) {
                    extra.push_str(&format!("range: {v}\r\n"));
                }
                let body = resp.bytes().await.expect("body").to_vec();
                if matches!(act, Act::ForwardThenDrop) {
                    return;
                }
                (status, body)
            }
        };
        let head = format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n", body.len());
        let stream = socket.get_mut();
        if stream.write_all(head.as_bytes()).await.is_err() || stream.write_all(&body).await.is_err() {
            return;
        }
    }
}

/// One HTTP/1.1 request with a `content-length` body (reqwest sends nothing else here).
async fn read_request(socket: &mut BufReader<TcpStream>) -> Option<Seen> {
    let mut line = String::new();
    if socket.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut length = 0;
    let mut range = None;
    loop {
        let mut header = String::new();
        socket.read_line(&mut header).await.ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
            if name.eq_ignore_ascii_case("content-range") {
                range = Some(value.trim().to_owned());
            }
        }
    }
    let mut body = vec![0; length];
    socket.read_exact(&mut body).await.ok()?;
    Some(Seen { method, target, range, body })
}

/// `http://address` of the proxy that `socket` came in on.
fn endpoint_of(socket: &BufReader<TcpStream>) -> String {
    format!("http://{}", socket.get_ref().local_addr().expect("address"))
}

fn stack_var(name: &str) -> String {
    if let Ok(v) = std::env::var(name) {
        return v;
    }
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.stack/env");
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|_| panic!("the local stack is not up: no {name} and no {}; run `dev/stack up`", file.display()));
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("export {name}=")).map(|v| v.trim_matches('\'').to_owned()))
        .unwrap_or_else(|| panic!("{name} is not in {}", file.display()))
}

fn emulator() -> String {
    stack_var("FERRY_BQ_ENDPOINT")
}

fn project() -> String {
    stack_var("FERRY_BQ_PROJECT")
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple().to_string().get(..12).unwrap_or_default())
}

/// A dataset with table `t (id INT64, name STRING)` in the emulator, made without the proxy.
async fn table() -> (BigQuery, TableRef) {
    let direct = BigQuery::new(&emulator(), &project(), Auth::None).expect("client");
    let dataset = unique("flaky");
    direct.create_dataset(&dataset).await.expect("dataset");
    let t = TableRef { project: project(), dataset, table: "t".into() };
    direct.execute(&format!("CREATE TABLE `{t}` (id INT64, name STRING)"), &[]).await.expect("table");
    (direct, t)
}

async fn count(bq: &BigQuery, t: &TableRef) -> i64 {
    let rows = bq.query(&format!("SELECT COUNT(*) FROM `{t}`"), &[], 10).await.expect("count").collect().await.expect("rows");
    match &rows[0][0] {
        Cell::Text(n) => n.parse().expect("a count"),
        other => panic!("count: {other:?}"),
    }
}

#[tokio::test]
async fn a_read_through_503s_and_dropped_connections_gets_every_row_once() {
    let (direct, t) = table().await;
    // (page fetches so far, method and path of the other requests so far)
    let state = Arc::new(Mutex::new((0, std::collections::HashSet::new())));
    let plan: Plan = Arc::new(move |req: &Seen, _| {
        let mut state = state.lock().expect("lock");
        if req.is_page() {
            state.0 += 1;
            // The 3rd page's first fetch gets a 503; the 4th page's first fetch is served by
            // the emulator, and then the connection is closed without the answer.
            return match state.0 {
                2 => Act::Answer(
                    503,
                    r#"{"error": {"code": 503, "message": "backend unavailable", "errors": [{"reason": "backendError"}]}}"#.into(),
                ),
                4 => Act::ForwardThenDrop,
                _ => Act::Forward,
            };
        }
        // The first insertAll and the first jobs.query are carried out, and their answers lost.
        let first = state.1.insert(format!("{} {}", req.method, req.target.split('?').next().unwrap_or_default()));
        if first && (req.is("POST", "/insertAll") || req.is("POST", "/queries")) {
            return Act::ForwardThenDrop;
        }
        Act::Forward
    });
    let proxy = Proxy::start(Some(emulator()), plan).await;
    let bq = proxy.client(&project());

    let rows: Vec<Value> = (1..=2500).map(|i| json!({"id": i, "name": format!("row {i}")})).collect();
    bq.insert_rows(&t, &rows).await.expect("insertAll is retried");
    assert_eq!(count(&direct, &t).await, 2500, "the retried insertAll must not insert a row twice");

    let job = bq.query(&format!("SELECT id, name FROM `{t}`"), &[], 500).await.expect("query");
    let rows = job.collect().await.expect("every page, and as many rows as totalRows");
    let mut ids: Vec<i64> = rows
        .iter()
        .map(|r| match (&r[0], &r[1]) {
            (Cell::Text(id), Cell::Text(name)) => {
                assert_eq!(name, &format!("row {id}"));
                id.parse().expect("id")
            }
            other => panic!("row {other:?}"),
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=2500).collect::<Vec<i64>>());

    let seen = proxy.seen();
    let inserts: Vec<&Seen> = seen.iter().filter(|s| s.is("POST", "/insertAll")).collect();
    assert_eq!(inserts.len(), 2);
    assert_eq!(inserts[0].body, inserts[1].body, "a retried insertAll sends the same insertIds");
    assert_eq!(inserts[0].json()["rows"][2499]["insertId"].as_str().map(|s| s.ends_with("-2499")), Some(true));
    let queries: Vec<Value> = seen
        .iter()
        .filter(|s| s.is("POST", "/queries") && s.json()["query"].as_str().is_some_and(|q| q.starts_with("SELECT id")))
        .map(Seen::json)
        .collect();
    assert_eq!(queries.len(), 2);
    assert!(queries[0]["requestId"].as_str().is_some_and(|id| id.len() == 36), "{}", queries[0]);
    assert_eq!(queries[0]["requestId"], queries[1]["requestId"], "a retried jobs.query keeps its requestId");
    let tokens: Vec<String> = seen.iter().filter(|s| s.is_page()).map(|s| s.query_param("pageToken").expect("token")).collect();
    assert_eq!(tokens.len(), 6, "four pages after the first, two of them fetched twice: {tokens:?}");
    assert_eq!((&tokens[1], &tokens[3]), (&tokens[2], &tokens[4]), "a retried page is fetched with the same token: {tokens:?}");
    direct.delete_dataset(&t.dataset).await.expect("cleanup");
}

/// A stand-in that answers every request with `status` and `body`.
async fn stand_in(status: u16, body: &'static str) -> Proxy {
    Proxy::start(None, Arc::new(move |_: &Seen, _| Act::Answer(status, body.into()))).await
}

#[tokio::test]
async fn a_permanent_error_is_not_retried() {
    let proxy = stand_in(
        400,
        r#"{"error": {"code": 400, "message": "Syntax error: Unexpected end of script", "errors": [{"reason": "invalidQuery"}]}}"#,
    )
    .await;
    let err = proxy.client("p").query("SELECT", &[], 10).await.expect_err("refused");
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_eq!(err.to_string(), "BigQuery jobs.query: HTTP 400 Bad Request (invalidQuery): Syntax error: Unexpected end of script");
    assert_eq!(proxy.seen().len(), 1);
}

#[tokio::test]
async fn a_server_that_stays_unavailable_is_given_up_on_with_the_number_of_attempts() {
    let proxy = stand_in(503, r#"{"error": {"code": 503, "message": "try later", "status": "UNAVAILABLE"}}"#).await;
    let err = proxy.client("p").query("SELECT 1", &[], 10).await.expect_err("unavailable");
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_eq!(
        err.to_string(),
        "BigQuery jobs.query: HTTP 503 Service Unavailable (UNAVAILABLE): try later (gave up after 5 attempts: no attempts left)"
    );
    let seen = proxy.seen();
    assert_eq!(seen.len(), 5);
    assert!(seen.iter().all(|s| s.json()["requestId"] == seen[0].json()["requestId"]));
}

#[tokio::test]
async fn a_row_count_that_differs_from_total_rows_fails() {
    let proxy = Proxy::start(
        None,
        Arc::new(|req: &Seen, _| {
            let row = |id: u32| json!({"f": [{"v": id.to_string()}]});
            let schema = json!({"fields": [{"name": "id", "type": "INTEGER"}]});
            let job = json!({"projectId": "p", "jobId": "job_short"});
            if req.method == "POST" {
                // Page 1 of a result of 5 rows; the second page has 2 rows and no next page.
                return Act::Answer(
                    200,
                    json!({"jobReference": job, "jobComplete": true, "schema": schema, "totalRows": "5", "rows": [row(1), row(2)], "pageToken": "2"})
                        .to_string(),
                );
            }
            Act::Answer(200, json!({"jobReference": job, "jobComplete": true, "schema": schema, "totalRows": "5", "rows": [row(3), row(4)]}).to_string())
        }),
    )
    .await;
    let err = proxy.client("p").query("SELECT id FROM t", &[], 2).await.expect("query").collect().await.expect_err("4 of 5 rows");
    assert!(matches!(&err, BigQueryError::RowCount { job, expected: 5, read: 4 } if job == "job_short"), "{err:?}");
    assert_eq!(err.to_string(), "BigQuery jobs.getQueryResults: job job_short has 5 rows (totalRows), but 4 were read");
}

#[tokio::test]
async fn a_query_that_never_completes_stops_at_the_deadline_and_is_cancelled() {
    let proxy = Proxy::start(
        None,
        Arc::new(|req: &Seen, _| {
            let job = json!({"projectId": "p", "jobId": "job_slow", "location": "EU"});
            if req.target.contains("/cancel") {
                return Act::Answer(200, json!({"job": {"jobReference": job}}).to_string());
            }
            Act::Answer(200, json!({"jobReference": job, "jobComplete": false}).to_string())
        }),
    )
    .await;
    let bq = proxy.client("p").with_query_deadline(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let err = bq.query("SELECT 1", &[], 10).await.expect_err("deadline");
    assert!(matches!(&err, BigQueryError::QueryTimeout { job, .. } if job == "job_slow"), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let seen = proxy.seen();
    let polls: Vec<&Seen> = seen.iter().filter(|s| s.is("GET", "/queries/job_slow")).collect();
    assert!(polls.len() >= 2, "polled until the deadline: {seen:?}");
    assert!(polls.iter().all(|p| p.query_param("location").as_deref() == Some("EU")));
    // Each poll asks BigQuery to wait no longer than what is left of the deadline.
    assert!(polls.iter().all(|p| p.query_param("timeoutMs").and_then(|t| t.parse::<u64>().ok()).is_some_and(|t| t <= 300)), "{polls:?}");
    assert_eq!(
        seen.last().map(|s| (s.method.as_str(), s.target.split('?').next().unwrap_or_default())),
        Some(("POST", "/bigquery/v2/projects/p/jobs/job_slow/cancel"))
    );
}

#[tokio::test]
async fn a_request_without_an_answer_ends_at_the_request_timeout() {
    // A server that takes every connection and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let bq = BigQuery::with_request_timeout(&endpoint, "p", Auth::None, Duration::from_secs(1))
        .expect("client")
        .with_retry(RetryPolicy::fast(2, Duration::from_secs(60)));
    let started = std::time::Instant::now();
    let err = bq.query("SELECT 1", &[], 10).await.expect_err("no answer");
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    assert!(err.to_string().contains("gave up after 2 attempts"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30), "each attempt ended at the 1 s timeout, not the server's leisure");
}

#[tokio::test]
async fn errors_of_a_job_still_running_do_not_end_it_or_run_it_again() {
    let proxy = Proxy::start(
        None,
        Arc::new(|req: &Seen, _| {
            let job = json!({"projectId": "p", "jobId": "job_warned"});
            let schema = json!({"fields": [{"name": "n", "type": "INTEGER"}]});
            if req.method == "POST" {
                // BigQuery: errors of a running job "do not necessarily mean that the job has
                // completed or was unsuccessful".
                let warning = json!([{"reason": "backendError", "message": "a slot was lost; retrying internally"}]);
                return Act::Answer(200, json!({"jobReference": job, "jobComplete": false, "errors": warning}).to_string());
            }
            Act::Answer(
                200,
                json!({"jobReference": job, "jobComplete": true, "schema": schema, "totalRows": "1", "rows": [{"f": [{"v": "7"}]}]})
                    .to_string(),
            )
        }),
    )
    .await;
    let rows = proxy.client("p").query("INSERT INTO t VALUES (7)", &[], 10).await.expect("the job completes").collect().await.unwrap();
    assert_eq!(rows, [vec![Cell::Text("7".into())]]);
    let posts = proxy.seen().iter().filter(|s| s.method == "POST").count();
    assert_eq!(posts, 1, "the statement was sent once, not run again");
}

/// A Parquet file of `rows` rows of `t (id INT64, name STRING)`, names that do not compress.
fn parquet_rows(rows: i64) -> Vec<u8> {
    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    let ids = Int64Array::from_iter_values(1..=rows);
    let names = StringArray::from_iter_values((1..=rows).map(|i| format!("{:016x}", (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))));
    let batch = RecordBatch::try_from_iter([("id", Arc::new(ids) as ArrayRef), ("name", Arc::new(names) as ArrayRef)]).expect("batch");
    let mut out = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None).expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
    out
}

#[tokio::test]
async fn a_streamed_load_whose_answers_are_lost_sends_every_byte_once_and_loads_once() {
    let (direct, t) = table().await;
    let file = parquet_rows(100_000);
    let quantum = ferry_bigquery::UPLOAD_QUANTUM;
    assert!(file.len() > 3 * quantum, "the file must make several pieces: {} bytes", file.len());
    // The second piece and the last bytes reach the emulator, and their answers are lost.
    let pieces = Arc::new(Mutex::new(0));
    let plan: Plan = Arc::new(move |req: &Seen, _| {
        let Some(range) = &req.range else { return Act::Forward };
        if range.starts_with("bytes */") {
            return Act::Forward; // asking what the session holds
        }
        let mut n = pieces.lock().expect("lock");
        *n += 1;
        if *n == 2 || !range.ends_with("/*") && *n <= 4 {
            Act::ForwardThenDrop
        } else {
            Act::Forward
        }
    });
    let proxy = Proxy::start(Some(emulator()), plan).await;
    let bq = proxy.client(&project());
    let job = unique("ferry_stream");
    let mut upload = bq.start_load(&job, &t, ferry_bigquery::WriteDisposition::Append, None).await.expect("session");
    let (first, rest) = file.split_at(quantum);
    let (second, last) = rest.split_at(2 * quantum);
    bq.send_piece(&mut upload, bytes::Bytes::copy_from_slice(first)).await.expect("first piece");
    bq.send_piece(&mut upload, bytes::Bytes::copy_from_slice(second)).await.expect("second piece, its answer lost");
    let done = bq.finish_load(upload, bytes::Bytes::copy_from_slice(last)).await.expect("the job, its answer lost");
    assert_eq!(done.rows, 100_000);
    assert_eq!(count(&direct, &t).await, 100_000, "a load job ran twice or took a byte twice");

    let seen = proxy.seen();
    let ranges: Vec<&str> = seen.iter().filter_map(|s| s.range.as_deref()).collect();
    let total = file.len();
    assert_eq!(ranges[0], format!("bytes 0-{}/*", quantum - 1));
    assert_eq!(ranges[1], format!("bytes {quantum}-{}/*", 3 * quantum - 1));
    assert_eq!(ranges[2], "bytes */*", "after a lost answer the session is asked what it holds: {ranges:?}");
    assert_eq!(ranges[3], format!("bytes {}-{}/{total}", 3 * quantum, total - 1));
    // The last bytes' answer was lost: the job is looked up, not sent again.
    assert_eq!(ranges.len(), 4, "{ranges:?}");
    assert!(seen.iter().any(|s| s.is("GET", &format!("/jobs/{job}"))), "the job was not looked up");
    direct.delete_dataset(&t.dataset).await.expect("cleanup");
}
