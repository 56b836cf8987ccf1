"""Benchmark peer (see dev/bench): the fastest copy of a PostgreSQL table into BigQuery in catalog mode a
data engineer would write in Python: the whole table read into one local Parquet file (zstd), then ONE
load job (google-cloud-bigquery load_table_from_file, PARQUET, WRITE_TRUNCATE).
Usage: pg_peer.py ENGINE HOST PORT DATABASE USER PASSWORD_FILE CA_FILE SOURCE ENDPOINT PROJECT TABLE LOCAL_DIR [PARQUET]
  ENGINE    how the table becomes Parquet:
              duckdb      DuckDB's postgres extension (ATTACH ... TYPE postgres): the table's pages read
                          in parallel over several connections (binary COPY), written by DuckDB's
                          parallel Parquet writer with COPY ... TO;
              adbc        the ADBC PostgreSQL driver (libpq, binary COPY) to Arrow record batches, the
                          table cut on its first column into one range per core, each range read
                          over its own connection in its own thread, the batches written as they
                          come by one pyarrow.parquet.ParquetWriter (numeric(p, s), which the
                          driver hands over as text, cast to decimal128(p, s));
              load        nothing read: PARQUET, a file made before, is loaded (the emulator alone)
  CA_FILE   the server's CA: every connection is TLS with sslmode=verify-full
  SOURCE    schema.table in PostgreSQL; TABLE project.dataset.table in BigQuery
  LOCAL_DIR where the Parquet file is written, and deleted after the load
  PARQUET   duckdb, adbc: the Parquet file to write instead, kept after the load; load: the file to load
Prints `rows read_s load_s seconds`: read_s is the table to the local Parquet file, load_s the load job,
seconds the whole, from the first connection on (no interpreter start or imports)."""
import os
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import adbc_driver_postgresql.dbapi as pgdb
import duckdb  # its postgres extension is installed from the duckdb-extension-postgres-scanner wheel
import pyarrow as pa
import pyarrow.parquet as pq
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

engine, host, port, database, user, password_file, ca, source, endpoint, project, table, local_dir = sys.argv[1:13]
keep = sys.argv[13] if len(sys.argv) > 13 else ""
with open(password_file, encoding="utf-8") as f:
    password = f.read().strip()


def to_parquet_duckdb(path):
    con = duckdb.connect()
    # libpq's key=value string: single quotes in a value would need escaping; these have none.
    dsn = (f"host={host} port={port} dbname={database} user={user} password={password} "
           f"sslmode=verify-full sslrootcert={ca}")
    con.execute(f"ATTACH '{dsn}' AS pg (TYPE postgres, READ_ONLY)")
    schema_name, table_name = source.split(".")
    # COPY answers the rows it wrote.
    return con.execute(f"COPY (SELECT * FROM pg.{schema_name}.{table_name}) TO '{path}' (FORMAT parquet, COMPRESSION zstd)").fetchone()[0]


def to_parquet_adbc(path):
    q = urllib.parse.quote
    uri = (f"postgresql://{q(user, safe='')}:{q(password, safe='')}@{host}:{port}/{q(database, safe='')}"
           f"?sslmode=verify-full&sslrootcert={q(ca, safe='')}")
    with pgdb.connect(uri) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT * FROM {source} LIMIT 0")
        first = cur.fetch_arrow_table().schema.names[0]
        cur.execute(f"SELECT min({first}), max({first}) FROM {source}")
        lo, hi = cur.fetchone()
    parts = os.cpu_count() or 2
    step = (hi - lo) // parts + 1
    ranges = [(lo + i * step, min(lo + (i + 1) * step - 1, hi)) for i in range(parts)]
    lock = threading.Lock()
    writer = None

    def fixed(batch):
        """The batch with each PostgreSQL numeric(p, s) (text in an opaque extension type) as decimal128(p, s)."""
        columns, fields = [], []
        for column, field in zip(batch.columns, batch.schema):
            typmod = int((field.metadata or {}).get(b"POSTGRESQL:typmod", b"-1"))
            if isinstance(field.type, pa.BaseExtensionType) and typmod > 4:
                ty = pa.decimal128((typmod - 4) >> 16, (typmod - 4) & 0xFFFF)
                column, field = column.storage.cast(ty), pa.field(field.name, ty)
            columns.append(column)
            fields.append(field)
        return pa.RecordBatch.from_arrays(columns, schema=pa.schema(fields))

    def read(r):
        nonlocal writer
        rows = 0
        with pgdb.connect(uri) as conn, conn.cursor() as cur:
            cur.execute(f"SELECT * FROM {source} WHERE {first} BETWEEN {r[0]} AND {r[1]}")
            for batch in cur.fetch_record_batch():
                batch = fixed(batch)
                with lock:
                    if writer is None:
                        writer = pq.ParquetWriter(path, batch.schema, compression="zstd")
                    writer.write_batch(batch)
                rows += batch.num_rows
        return rows

    with ThreadPoolExecutor(max_workers=parts) as pool:
        n = sum(pool.map(read, ranges))
    writer.close()
    return n


t0 = time.perf_counter()
path = keep or os.path.join(local_dir, f"pg_peer_{os.getpid()}.parquet")
if engine == "duckdb":
    n = to_parquet_duckdb(path)
elif engine == "adbc":
    n = to_parquet_adbc(path)
elif engine == "load":
    n = pq.ParquetFile(path).metadata.num_rows
else:
    sys.exit(f"pg_peer.py: unknown ENGINE {engine}")
t1 = time.perf_counter()
client = bigquery.Client(project=project, credentials=AnonymousCredentials(),
                         client_options=ClientOptions(api_endpoint=endpoint))
with open(path, "rb") as f:
    job = client.load_table_from_file(f, table, job_config=bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET, write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE))
job.result()
t2 = time.perf_counter()
if not keep:
    os.remove(path)
if job.output_rows != n:
    sys.exit(f"pg_peer.py: the load job took {job.output_rows} rows of the {n} written")
print(f"{n} {t1 - t0:.3f} {t2 - t1:.3f} {t2 - t0:.3f}")
