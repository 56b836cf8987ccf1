//! The BigQuery Storage Read API: a read session over a table (its columns, a row filter, a
//! number of streams), and each stream's rows as Arrow record batches.
//!
//! - [`proto`]: the request and response messages.
//! - [`grpc`]: the transport.
//!
//! The session's Arrow schema comes once, with the session; each stream's answers carry
//! record batches in that schema, decoded with arrow-ipc. A stream that breaks off can be read
//! again from the row after the last one received ([`StorageRead::read_stream`]'s `offset`).

pub mod grpc;
pub mod proto;
pub mod reader;

use arrow_ipc::reader::StreamDecoder;
use bytes::Bytes;
use ferry_core::rows::RecordBatch;
use ferry_google::TokenSource;

use crate::client::TableRef;
pub use grpc::GrpcError;
use grpc::{Channel, Messages};
use proto::*;

const CREATE_READ_SESSION: &str = "/google.cloud.bigquery.storage.v1.BigQueryRead/CreateReadSession";
const READ_ROWS: &str = "/google.cloud.bigquery.storage.v1.BigQueryRead/ReadRows";

/// A client of the Read API, billing reads to one project.
#[derive(Debug, Clone)]
pub struct StorageRead {
    channel: Channel,
    project: String,
}

/// A read session: the streams that together hold every row it selected, once.
#[derive(Debug, Clone)]
pub struct Session {
    pub name: String,
    /// The Arrow IPC schema message of every stream's batches.
    pub schema: Bytes,
    /// Stream names; none when no row matched.
    pub streams: Vec<String>,
    /// The server's estimate of the rows (exact on the emulator).
    pub estimated_rows: i64,
}

impl StorageRead {
    /// A client of `endpoint` for reads billed to `project`; each call, and each wait for the
    /// next message of a stream, is bounded by `timeout`.
    pub fn new(endpoint: &str, project: &str, tokens: TokenSource, timeout: std::time::Duration) -> Self {
        Self { channel: Channel::new(endpoint, tokens, timeout), project: project.to_owned() }
    }

    /// Opens a session over `table`: `fields` only (all when empty), rows where `restriction`
    /// holds (all when empty), in at most `max_streams` streams (0: the server decides).
    pub async fn create_session(
        &self,
        table: &TableRef,
        fields: &[String],
        restriction: &str,
        max_streams: i32,
    ) -> Result<Session, GrpcError> {
        let table_path = format!("projects/{}/datasets/{}/tables/{}", table.project, table.dataset, table.table);
        let request = CreateReadSessionRequest {
            parent: format!("projects/{}", self.project),
            read_session: Some(ReadSession {
                data_format: DATA_FORMAT_ARROW,
                table: table_path.clone(),
                read_options: Some(TableReadOptions { selected_fields: fields.to_vec(), row_restriction: restriction.to_owned() }),
                ..Default::default()
            }),
            max_stream_count: max_streams,
        };
        let mut answer = self.channel.call(CREATE_READ_SESSION, &request, &format!("read_session.table={table_path}")).await?;
        let session: ReadSession = answer
            .next()
            .await?
            .ok_or_else(|| GrpcError::Protocol { method: CREATE_READ_SESSION, reason: "no session in the answer".into() })?;
        // The status follows the one message.
        if answer.next::<ReadSession>().await?.is_some() {
            return Err(GrpcError::Protocol { method: CREATE_READ_SESSION, reason: "more than one session in the answer".into() });
        }
        let schema = session.arrow_schema.map(|s| s.serialized_schema).unwrap_or_default();
        Ok(Session {
            name: session.name,
            schema: first_message(&schema),
            streams: session.streams.into_iter().map(|s| s.name).collect(),
            estimated_rows: session.estimated_row_count,
        })
    }

    /// The batches of `stream`, from row `offset` on.
    pub async fn read_stream(&self, session: &Session, stream: &str, offset: i64) -> Result<StreamBatches, GrpcError> {
        let request = ReadRowsRequest { read_stream: stream.to_owned(), offset };
        let messages = self.channel.call(READ_ROWS, &request, &format!("read_stream={stream}")).await?;
        let mut decoder = StreamDecoder::new();
        let mut schema = arrow_buffer::Buffer::from(session.schema.clone());
        while !schema.is_empty() {
            if decoder.decode(&mut schema).map_err(|e| decode_error(&e))?.is_some() {
                return Err(GrpcError::Protocol { method: READ_ROWS, reason: "the session's schema holds rows".into() });
            }
        }
        Ok(StreamBatches { messages, decoder, rows: 0 })
    }
}

fn decode_error(e: &arrow_schema::ArrowError) -> GrpcError {
    GrpcError::Protocol { method: READ_ROWS, reason: format!("Arrow IPC: {e}") }
}

/// The first IPC message of `bytes` (a continuation marker, a length, the message): some
/// servers (emulators) append an end-of-stream marker to the schema, after which a decoder
/// would take no batch.
fn first_message(bytes: &Bytes) -> Bytes {
    if bytes.len() >= 8 && bytes[..4] == [0xff; 4] {
        let len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
        if len > 0 && 8 + len <= bytes.len() {
            return bytes.slice(..8 + len);
        }
    }
    bytes.clone()
}

/// One stream's rows, batch by batch.
pub struct StreamBatches {
    messages: Messages,
    decoder: StreamDecoder,
    /// Rows received so far: where a retry resumes.
    pub rows: i64,
}

impl StreamBatches {
    /// The next batch; `None` once the stream ended well.
    pub async fn next(&mut self) -> Result<Option<RecordBatch>, GrpcError> {
        loop {
            let Some(response) = self.messages.next::<ReadRowsResponse>().await? else { return Ok(None) };
            let Some(batch) = response.arrow_record_batch else { continue };
            let mut buffer = arrow_buffer::Buffer::from(batch.serialized_record_batch);
            let mut decoded: Option<RecordBatch> = None;
            while !buffer.is_empty() {
                if let Some(b) = self.decoder.decode(&mut buffer).map_err(|e| decode_error(&e))? {
                    if decoded.replace(b).is_some() {
                        return Err(GrpcError::Protocol { method: READ_ROWS, reason: "two batches in one message".into() });
                    }
                }
            }
            let Some(batch) = decoded else {
                return Err(GrpcError::Protocol { method: READ_ROWS, reason: "a message without a whole batch".into() });
            };
            if response.row_count != 0 && response.row_count != batch.num_rows() as i64 {
                return Err(GrpcError::Protocol {
                    method: READ_ROWS,
                    reason: format!("a batch of {} rows said to hold {}", batch.num_rows(), response.row_count),
                });
            }
            self.rows += batch.num_rows() as i64;
            return Ok(Some(batch));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trailing_end_of_stream_marker_is_cut_from_the_schema() {
        let mut bytes = vec![0xff, 0xff, 0xff, 0xff, 8, 0, 0, 0];
        bytes.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 0]);
        let message = Bytes::from(bytes.clone());
        bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        assert_eq!(first_message(&Bytes::from(bytes)), message);
        assert_eq!(first_message(&message), message, "nothing to cut");
    }
}
