//! The Storage Read client against a scripted gRPC server (HTTP/2 on 127.0.0.1): streams that
//! break off half-way and are read again from their offset, streams that never recover, a
//! status the server refuses with, and several streams read at once. The server answers with
//! Arrow IPC written by arrow-ipc, framed as gRPC messages, and records every request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use bytes::{BufMut, Bytes, BytesMut};
use ferry_bigquery::storage::proto::{ArrowRecordBatch, ReadRowsRequest, ReadRowsResponse};
use ferry_bigquery::storage::reader::StorageReader;
use ferry_bigquery::storage::{Session, StorageRead};
use ferry_core::{BatchReader, ErrorClass};
use ferry_google::{Auth, TokenSource};
use prost::Message;
use tokio::net::TcpListener;

/// What a stream's answer holds: batches of ids, then how it ends.
#[derive(Clone, Debug)]
struct Answer {
    batches: Vec<Vec<i64>>,
    end: End,
    /// How long the server takes before it answers.
    delay: Duration,
}

#[derive(Clone, Debug)]
enum End {
    /// Trailers with grpc-status 0.
    Ok,
    /// Trailers with this gRPC status and message.
    Status(u32, &'static str),
    /// The HTTP/2 stream reset, as a proxy or a dying server does.
    Reset,
}

/// Decides the answer to a ReadRows request from the stream name, the offset and how many
/// requests for that stream came before.
type Script = Arc<dyn Fn(&str, i64, usize) -> Answer + Send + Sync>;

struct Server {
    endpoint: String,
    /// (stream, offset) of every ReadRows request, in order.
    seen: Arc<Mutex<Vec<(String, i64)>>>,
    /// The most calls the server was answering at once.
    peak: Arc<AtomicUsize>,
}

/// Calls being answered, and the most at once.
#[derive(Clone, Default)]
struct Open {
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]))
}

/// The IPC schema message, and each batch's IPC message, as the API sends them.
fn ipc(batches: &[Vec<i64>]) -> (Bytes, Vec<Bytes>) {
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &schema()).expect("a writer");
    let schema_len = writer.get_ref().len();
    let mut messages = Vec::new();
    let mut at = schema_len;
    for ids in batches {
        let batch = RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(ids.clone()))]).expect("a batch");
        writer.write(&batch).expect("written");
        let bytes = writer.get_ref();
        messages.push(Bytes::copy_from_slice(&bytes[at..]));
        at = bytes.len();
    }
    let bytes = writer.into_inner().expect("the bytes");
    (Bytes::copy_from_slice(&bytes[..schema_len]), messages)
}

fn frame(message: &impl Message) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u8(0);
    out.put_u32(message.encoded_len() as u32);
    message.encode(&mut out).expect("encoded");
    out.freeze()
}

async fn serve(script: Script) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let endpoint = format!("http://{}", listener.local_addr().expect("an address"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let open = Open::default();
    let peak = open.peak.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else { return };
            let (script, log, open) = (script.clone(), log.clone(), open.clone());
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else { return };
                while let Some(Ok((request, respond))) = conn.accept().await {
                    let (script, log, open) = (script.clone(), log.clone(), open.clone());
                    tokio::spawn(async move {
                        let now = open.now.fetch_add(1, Ordering::SeqCst) + 1;
                        open.peak.fetch_max(now, Ordering::SeqCst);
                        answer(request, respond, script, log).await;
                        open.now.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            });
        }
    });
    Server { endpoint, seen, peak }
}

async fn answer(
    request: hyper::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    script: Script,
    log: Arc<Mutex<Vec<(String, i64)>>>,
) {
    let mut body = request.into_body();
    let mut bytes = BytesMut::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    let request = ReadRowsRequest::decode(&bytes[5..]).expect("a ReadRowsRequest");
    let before = {
        let mut log = log.lock().unwrap();
        let before = log.iter().filter(|(s, _)| *s == request.read_stream).count();
        log.push((request.read_stream.clone(), request.offset));
        before
    };
    let Answer { batches, end, delay } = script(&request.read_stream, request.offset, before);
    tokio::time::sleep(delay).await;
    let response = hyper::Response::builder().status(200).header("content-type", "application/grpc").body(()).unwrap();
    let Ok(mut send) = respond.send_response(response, false) else { return };
    for message in ipc(&batches).1.into_iter().zip(&batches) {
        let (bytes, ids) = message;
        let response =
            ReadRowsResponse { arrow_record_batch: Some(ArrowRecordBatch { serialized_record_batch: bytes }), row_count: ids.len() as i64 };
        if send.send_data(frame(&response), false).is_err() {
            return;
        }
    }
    let mut trailers = hyper::HeaderMap::new();
    match end {
        End::Ok => trailers.insert("grpc-status", "0".parse().unwrap()),
        End::Status(code, message) => {
            trailers.insert("grpc-message", message.replace(' ', "%20").parse().unwrap());
            trailers.insert("grpc-status", code.to_string().parse().unwrap())
        }
        End::Reset => {
            // Let the data go out first, then break the stream off.
            tokio::time::sleep(Duration::from_millis(50)).await;
            send.send_reset(h2::Reason::INTERNAL_ERROR);
            return;
        }
    };
    let _ = send.send_trailers(trailers);
}

/// A reader of `streams` (named `s0`, `s1`, …) of the server, `concurrency` at a time.
fn reader(server: &Server, streams: usize, concurrency: usize) -> StorageReader {
    let tokens = TokenSource::new(reqwest::Client::new(), Auth::None);
    let read = StorageRead::new(&server.endpoint, "p", tokens, Duration::from_secs(10));
    let session = Session {
        name: "projects/p/locations/us/sessions/x".into(),
        schema: ipc(&[]).0,
        streams: (0..streams).map(|i| format!("s{i}")).collect(),
        estimated_rows: 0,
    };
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
    StorageReader::start(read, session, schema, "p.d.t".into(), "e".into(), concurrency)
}

/// Every id read, in the order read, or the failure.
async fn read_all(mut reader: StorageReader) -> Result<Vec<i64>, ferry_core::Failure> {
    let mut ids = Vec::new();
    while let Some(batch) = reader.next_batch().await? {
        ids.extend(batch.column(0).as_primitive::<Int64Type>().values().iter().copied());
    }
    Ok(ids)
}

/// Rows `from..to` of a stream holding `0..10`, in batches of 2, ending with `end`.
fn rows(from: i64, to: i64, end: End) -> Answer {
    let ids: Vec<i64> = (from..to).collect();
    Answer { batches: ids.chunks(2).map(<[i64]>::to_vec).collect(), end, delay: Duration::ZERO }
}

#[tokio::test]
async fn a_stream_that_breaks_off_is_read_again_from_the_row_after_the_last_one_received() {
    // First answer: rows 0..4, then UNAVAILABLE; second (at offset 4): rows 4..6, then the
    // stream is reset; third (at offset 6): the rest.
    let server = serve(Arc::new(|_, offset, before| match before {
        0 => rows(offset, 4, End::Status(14, "the server is shutting down")),
        1 => rows(offset, 6, End::Reset),
        _ => rows(offset, 10, End::Ok),
    }))
    .await;
    let ids = read_all(reader(&server, 1, 1)).await.expect("the stream read to its end");
    assert_eq!(ids, (0..10).collect::<Vec<_>>(), "every row once, none twice");
    assert_eq!(*server.seen.lock().unwrap(), vec![("s0".into(), 0), ("s0".into(), 4), ("s0".into(), 6)]);
}

#[tokio::test]
async fn a_stream_that_keeps_breaking_off_fails_the_read_after_three_retries_naming_the_table() {
    let server = serve(Arc::new(|_, offset, _| rows(offset, offset + 2, End::Status(14, "overloaded")))).await;
    let failure = read_all(reader(&server, 1, 1)).await.expect_err("a failure");
    assert_eq!(failure.class(), ErrorClass::Transient, "{failure}");
    let text = failure.to_string();
    assert!(text.contains("export e: table p.d.t: BigQuery Storage Read") && text.contains("UNAVAILABLE (14): overloaded"), "{text}");
    let offsets: Vec<i64> = server.seen.lock().unwrap().iter().map(|(_, o)| *o).collect();
    assert_eq!(offsets, vec![0, 2, 4, 6], "each retry resumes where the last one stopped; 3 retries");
}

#[tokio::test]
async fn a_refusal_is_not_retried() {
    let server = serve(Arc::new(|_, offset, _| rows(offset, offset, End::Status(7, "the caller may not read table t")))).await;
    let failure = read_all(reader(&server, 1, 1)).await.expect_err("a failure");
    assert_eq!(failure.class(), ErrorClass::Permanent, "{failure}");
    assert!(failure.to_string().contains("PERMISSION_DENIED (7): the caller may not read table t"), "{failure}");
    assert_eq!(server.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn streams_are_read_at_once_and_every_row_arrives_once() {
    // Six streams of 10 rows each (stream i holds 10·i … 10·i + 9); the third breaks off once.
    let server = serve(Arc::new(|stream: &str, offset, before| {
        let i: i64 = stream[1..].parse().unwrap();
        let base = 10 * i;
        let ids: Vec<i64> = (base + offset..base + 10).collect();
        let end = if i == 2 && before == 0 { End::Reset } else { End::Ok };
        let ids = if matches!(end, End::Reset) { ids[..3].to_vec() } else { ids };
        Answer { batches: ids.chunks(3).map(<[i64]>::to_vec).collect(), end, delay: Duration::from_millis(200) }
    }))
    .await;
    let mut ids = read_all(reader(&server, 6, 3)).await.expect("every stream read");
    ids.sort_unstable();
    assert_eq!(ids, (0..60).collect::<Vec<_>>());
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 7, "{seen:?}");
    assert!(seen.contains(&("s2".into(), 3)), "the broken stream resumed at its offset: {seen:?}");
    let peak = server.peak.load(Ordering::SeqCst);
    assert!((2..=3).contains(&peak), "streams open at once: {peak}");
}

/// Streams whose messages are larger than the HTTP/2 stream window, all open at once: the ones
/// waiting for their turn must not hold up the one being read.
#[tokio::test]
async fn large_messages_on_many_streams_at_once_all_arrive() {
    const ROWS: i64 = 700_000; // 5.6 MB of Int64 per message, more than a 4 MiB window
    let server = serve(Arc::new(|stream: &str, offset, _| {
        let i: i64 = stream[1..].parse().unwrap();
        Answer { batches: vec![(i * ROWS + offset..(i + 1) * ROWS).collect()], end: End::Ok, delay: Duration::ZERO }
    }))
    .await;
    let started = std::time::Instant::now();
    let ids = read_all(reader(&server, 5, 5)).await.expect("every stream read");
    assert_eq!(ids.len() as i64, 5 * ROWS);
    let mut sorted = ids;
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len() as i64, 5 * ROWS, "no row twice");
    assert_eq!(server.seen.lock().unwrap().len(), 5, "no stream read again");
    assert!(started.elapsed() < Duration::from_secs(10), "no stream waited for a timeout: {:?}", started.elapsed());
}

/// One stream refused among several that deliver: the read fails with that stream's error.
#[tokio::test]
async fn one_failing_stream_among_several_fails_the_read() {
    let server =
        serve(Arc::new(
            |stream: &str, offset, _| {
                if stream == "s1" {
                    rows(offset, offset, End::Status(5, "stream s1 expired"))
                } else {
                    rows(offset, 10, End::Ok)
                }
            },
        ))
        .await;
    let failure = read_all(reader(&server, 4, 2)).await.expect_err("a failure");
    assert!(failure.to_string().contains("NOT_FOUND (5): stream s1 expired"), "{failure}");
    assert_eq!(failure.class(), ErrorClass::Permanent);
}

#[tokio::test]
async fn a_session_without_streams_reads_no_rows() {
    let server = serve(Arc::new(|_, _, _| rows(0, 0, End::Ok))).await;
    assert_eq!(read_all(reader(&server, 0, 2)).await.expect("no rows"), Vec::<i64>::new());
    assert!(server.seen.lock().unwrap().is_empty());
}
