"""Benchmark peer (see dev/bench): what the BigQuery Storage Read API alone serves, with nothing done to
the rows: one read session in Arrow format (google-cloud-bigquery-storage over a plaintext gRPC channel),
its STREAMS streams read concurrently, one thread each, counting rows (no decoding, no CSV, no upload).
Usage: read_storage.py GRPC_ENDPOINT TABLE [STREAMS [ROW_RESTRICTION]]
  GRPC_ENDPOINT  e.g. http://127.0.0.1:9060; TABLE project.dataset.table
  STREAMS        max_stream_count of the read session (default 4); the server may grant fewer
  ROW_RESTRICTION  a SQL predicate, e.g. "updated_at > TIMESTAMP '2024-01-02'" (empty or absent: all rows)
Prints `rows seconds`, seconds from CreateReadSession to the last row of the last stream."""
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
from google.cloud.bigquery_storage_v1 import BigQueryReadClient, types
from google.cloud.bigquery_storage_v1.services.big_query_read.transports import BigQueryReadGrpcTransport

grpc_endpoint, table = sys.argv[1:3]
streams = int(sys.argv[3]) if len(sys.argv) > 3 else 4
row_restriction = sys.argv[4] if len(sys.argv) > 4 else ""

# The emulator sends a whole stream as one ReadRows message, far above gRPC's 4 MiB default.
channel = grpc.insecure_channel(grpc_endpoint.split("://", 1)[-1],
                                options=[("grpc.max_receive_message_length", -1)])
client = BigQueryReadClient(transport=BigQueryReadGrpcTransport(channel=channel))
project, dataset_id, table_id = table.split(".")
t0 = time.perf_counter()
session = client.create_read_session(
    parent=f"projects/{project}",
    read_session=types.ReadSession(
        table=f"projects/{project}/datasets/{dataset_id}/tables/{table_id}",
        data_format=types.DataFormat.ARROW,
        read_options=types.ReadSession.TableReadOptions(row_restriction=row_restriction),
    ),
    max_stream_count=streams,
)


def count(stream_name):
    return sum(response.row_count for response in client.read_rows(stream_name))


with ThreadPoolExecutor(max_workers=max(len(session.streams), 1)) as pool:
    n = sum(pool.map(count, [s.name for s in session.streams]))
print(f"{n} {time.perf_counter() - t0:.3f}")
