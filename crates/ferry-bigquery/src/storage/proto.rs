//! The messages of the BigQuery Storage Read API (`google.cloud.bigquery.storage.v1`) that
//! ferry sends and reads, written by hand with prost's derive: the field numbers are those of
//! Google's `storage.proto`, `stream.proto` and `arrow.proto`. Fields ferry never sets or reads
//! are left out; protobuf skips unknown fields when decoding.

/// `DataFormat.ARROW`.
pub const DATA_FORMAT_ARROW: i32 = 2;

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateReadSessionRequest {
    /// `projects/{project}`: the project billed for the read.
    #[prost(string, tag = "1")]
    pub parent: String,
    #[prost(message, optional, tag = "2")]
    pub read_session: Option<ReadSession>,
    /// 0 lets the server choose.
    #[prost(int32, tag = "3")]
    pub max_stream_count: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadSession {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int32, tag = "3")]
    pub data_format: i32,
    #[prost(message, optional, tag = "5")]
    pub arrow_schema: Option<ArrowSchema>,
    /// `projects/{p}/datasets/{d}/tables/{t}`.
    #[prost(string, tag = "6")]
    pub table: String,
    #[prost(message, optional, tag = "8")]
    pub read_options: Option<TableReadOptions>,
    #[prost(message, repeated, tag = "10")]
    pub streams: Vec<ReadStream>,
    #[prost(int64, tag = "14")]
    pub estimated_row_count: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TableReadOptions {
    #[prost(string, repeated, tag = "1")]
    pub selected_fields: Vec<String>,
    #[prost(string, tag = "2")]
    pub row_restriction: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadStream {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ArrowSchema {
    /// An Arrow IPC schema message.
    #[prost(bytes = "bytes", tag = "1")]
    pub serialized_schema: bytes::Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ArrowRecordBatch {
    /// An Arrow IPC record batch message.
    #[prost(bytes = "bytes", tag = "1")]
    pub serialized_record_batch: bytes::Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadRowsRequest {
    #[prost(string, tag = "1")]
    pub read_stream: String,
    /// The row of the stream to start at: a retry resumes after the rows already received.
    #[prost(int64, tag = "2")]
    pub offset: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadRowsResponse {
    #[prost(message, optional, tag = "4")]
    pub arrow_record_batch: Option<ArrowRecordBatch>,
    /// Rows in this response's batch.
    #[prost(int64, tag = "6")]
    pub row_count: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Bytes as Google's generated code writes them, field by field.
    #[test]
    fn field_numbers_match_googles() {
        let r = ReadRowsRequest { read_stream: "s".into(), offset: 5 };
        assert_eq!(r.encode_to_vec(), [0x0a, 1, b's', 0x10, 5]);
        let session = ReadSession {
            data_format: DATA_FORMAT_ARROW,
            table: "t".into(),
            read_options: Some(TableReadOptions { selected_fields: vec!["a".into()], row_restriction: "x".into() }),
            ..Default::default()
        };
        // data_format = 3 (varint), table = 6, read_options = 8 { 1: "a", 2: "x" }.
        assert_eq!(session.encode_to_vec(), [0x18, 2, 0x32, 1, b't', 0x42, 6, 0x0a, 1, b'a', 0x12, 1, b'x']);
        // arrow_record_batch = 4 { 1: bytes }, row_count = 6.
        let resp = ReadRowsResponse::decode(&[0x22, 3, 0x0a, 1, 0xff, 0x30, 7][..]).expect("decodes");
        assert_eq!(resp.row_count, 7);
        assert_eq!(resp.arrow_record_batch.expect("batch").serialized_record_batch.as_ref(), [0xff]);
    }
}
