"""Benchmark peer (see dev/bench): the fastest full or incremental export a data engineer would write in
Python: the BigQuery Storage Read API (google-cloud-bigquery-storage, Arrow format) with STREAMS streams
read concurrently, one thread each, each stream's Arrow record batches encoded to CSV by pyarrow.csv into
memory, the streams written in stream order to one local CSV file (one header line), paramiko put() to
the final name (known_hosts checked, key auth), then a metadata row by DML through the REST API
(google-cloud-bigquery).
Usage: export_storage.py ENDPOINT GRPC_ENDPOINT PROJECT TABLE METADATA_TABLE HOST PORT USER KEY_FILE KNOWN_HOSTS REMOTE_DIR LOCAL_DIR [STREAMS [ROW_RESTRICTION]]
  ENDPOINT       REST endpoint (for the metadata DML), e.g. http://127.0.0.1:9050
  GRPC_ENDPOINT  Storage Read gRPC endpoint, plaintext, e.g. http://127.0.0.1:9060
  TABLE          project.dataset.table; METADATA_TABLE likewise
  STREAMS        max_stream_count of the read session (default 4); the server may grant fewer
  ROW_RESTRICTION  a SQL predicate for an incremental export, e.g. "updated_at > TIMESTAMP '2024-01-02'"
                 (empty or absent: a full export)
Rows come in stream order, not sorted: the Storage Read API has no ORDER BY. Cells are pyarrow.csv's
text (strings quoted, NUMERIC as 0.010000000, TIMESTAMP as "2024-01-01 00:00:01.000000Z"); TIMESTAMP
columns are turned into that text by reinterpreting them as zone-less UTC first, since pyarrow formats a
zoned timestamp some 20x more slowly than the rest of a row put together.
Prints `rows session_s read_encode_s upload_s record_s total_s`: session_s is CreateReadSession;
read_encode_s is reading every stream and encoding it to the local CSV file, which overlap (the
streams are read and encoded in parallel, and a finished stream is written while later ones are still
being read), so they are one figure."""
import datetime as dt
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import paramiko
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from google.cloud.bigquery_storage_v1 import BigQueryReadClient, types
from google.cloud.bigquery_storage_v1.services.big_query_read.transports import BigQueryReadGrpcTransport

(endpoint, grpc_endpoint, project, table, metadata, host, port, user, key, known_hosts, remote_dir,
 local_dir) = sys.argv[1:13]
streams = int(sys.argv[13]) if len(sys.argv) > 13 else 4
row_restriction = sys.argv[14] if len(sys.argv) > 14 else ""

t0 = time.perf_counter()
# The emulator sends a whole stream as one ReadRows message, far above gRPC's 4 MiB default.
channel = grpc.insecure_channel(grpc_endpoint.split("://", 1)[-1],
                                options=[("grpc.max_receive_message_length", -1)])
read_client = BigQueryReadClient(transport=BigQueryReadGrpcTransport(channel=channel))
table_project, dataset_id, table_id = table.split(".")
session = read_client.create_read_session(
    parent=f"projects/{project}",
    read_session=types.ReadSession(
        table=f"projects/{table_project}/datasets/{dataset_id}/tables/{table_id}",
        data_format=types.DataFormat.ARROW,
        read_options=types.ReadSession.TableReadOptions(row_restriction=row_restriction),
    ),
    max_stream_count=streams,
)
schema = pa.ipc.read_schema(pa.py_buffer(session.arrow_schema.serialized_schema))
t1 = time.perf_counter()

zoned = [pa.types.is_timestamp(f.type) and f.type.tz is not None for f in schema]
csv_schema = pa.schema([pa.field(f.name, pa.string()) if z else f for f, z in zip(schema, zoned)])


def csv_ready(batch):
    """The batch with each TIMESTAMP (always UTC) column as text: formatted zone-less, plus "Z"."""
    return pa.RecordBatch.from_arrays(
        [pc.binary_join_element_wise(c.cast(pa.timestamp(c.type.unit)).cast(pa.string()), "Z", "") if z else c
         for c, z in zip(batch.columns, zoned)], schema=csv_schema)


def read_encode(stream_name):
    """Reads one stream and encodes it to CSV in memory; returns (rows, CSV bytes as a pyarrow Buffer)."""
    sink = pa.BufferOutputStream()
    rows = 0
    with pacsv.CSVWriter(sink, csv_schema, write_options=pacsv.WriteOptions(include_header=False)) as writer:
        for response in read_client.read_rows(stream_name):
            batch = pa.ipc.read_record_batch(
                pa.py_buffer(response.arrow_record_batch.serialized_record_batch), schema)
            writer.write_batch(csv_ready(batch))
            rows += batch.num_rows
    return rows, sink.getvalue()


name = f"{table_id.upper()}_{dt.datetime.now(dt.timezone.utc):%Y%m%d_%H%M%S}.csv"
local = os.path.join(local_dir, name)
n = 0
with open(local, "wb") as f:
    header = pa.BufferOutputStream()
    # BigQuery column names are letters, digits and underscores: nothing to quote.
    pacsv.write_csv(csv_schema.empty_table(), header, pacsv.WriteOptions(quoting_header="none"))
    f.write(header.getvalue())
    with ThreadPoolExecutor(max_workers=max(len(session.streams), 1)) as pool:
        for rows, csv_bytes in pool.map(read_encode, [s.name for s in session.streams]):
            f.write(csv_bytes)
            n += rows
t2 = time.perf_counter()

ssh = paramiko.SSHClient()
ssh.load_host_keys(known_hosts)
ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
ssh.connect(host, int(port), username=user, key_filename=key, allow_agent=False, look_for_keys=False)
ssh.open_sftp().put(local, f"{remote_dir}/{name}")
ssh.close()
os.remove(local)
t3 = time.perf_counter()

client = bigquery.Client(project=project, credentials=AnonymousCredentials(),
                         client_options=ClientOptions(api_endpoint=endpoint))
client.query(
    f"INSERT INTO `{metadata}` (export_name, rows_exported, file_name, completed_at) VALUES (@e, @n, @f, CURRENT_TIMESTAMP())",
    job_config=bigquery.QueryJobConfig(query_parameters=[
        bigquery.ScalarQueryParameter("e", "STRING", table_id), bigquery.ScalarQueryParameter("n", "INT64", n),
        bigquery.ScalarQueryParameter("f", "STRING", name)]),
).result()
t4 = time.perf_counter()
print(f"{n} {t1 - t0:.2f} {t2 - t1:.2f} {t3 - t2:.2f} {t4 - t3:.2f} {t4 - t0:.2f}")
