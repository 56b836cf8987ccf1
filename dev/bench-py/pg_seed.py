"""Benchmark peer (see dev/bench): a PostgreSQL table copied into BigQuery in catalog mode as the seed's
ETL runner does it: psycopg2 with a server-side (named) cursor, fetchmany(BATCH) at a time, each batch
turned into JSON-ready dicts (Decimal -> float, datetime, date and time -> isoformat()) and loaded by
google-cloud-bigquery load_table_from_json, the first batch WRITE_TRUNCATE and the others WRITE_APPEND,
one load job after the other. The table's schema comes from the source's columns (the seed's wizard
created the BigQuery table with it).
Usage: pg_seed.py HOST PORT DATABASE USER PASSWORD_FILE CA_FILE SOURCE ENDPOINT PROJECT TABLE [BATCH]
  CA_FILE   the server's CA: the connection is TLS with sslmode=verify-full
  SOURCE    schema.table in PostgreSQL; TABLE project.dataset.table in BigQuery
  BATCH     rows per fetchmany() and per load job (default 10000, the seed's ETL_BATCH_SIZE)
Prints `rows load_jobs seconds`, seconds from connecting on (no interpreter start or imports)."""
import datetime as dt
import decimal
import sys
import time

import psycopg2
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

host, port, database, user, password_file, ca, source, endpoint, project, table = sys.argv[1:11]
batch = int(sys.argv[11]) if len(sys.argv) > 11 else 10000
with open(password_file, encoding="utf-8") as f:
    password = f.read().strip()

# PostgreSQL type -> BigQuery type, as the seed's table creation maps them.
TYPES = {"bigint": "INT64", "integer": "INT64", "smallint": "INT64", "numeric": "NUMERIC", "double precision": "FLOAT64",
         "real": "FLOAT64", "boolean": "BOOL", "timestamp with time zone": "TIMESTAMP",
         "timestamp without time zone": "DATETIME", "date": "DATE", "text": "STRING", "character varying": "STRING"}


def convert(v):
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    return v


t0 = time.perf_counter()
client = bigquery.Client(project=project, credentials=AnonymousCredentials(),
                         client_options=ClientOptions(api_endpoint=endpoint))
conn = psycopg2.connect(host=host, port=int(port), dbname=database, user=user, password=password,
                        sslmode="verify-full", sslrootcert=ca)
schema_name, table_name = source.split(".")
with conn.cursor() as cur:
    cur.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
                "ORDER BY ordinal_position", (schema_name, table_name))
    columns = cur.fetchall()
schema = [bigquery.SchemaField(name, TYPES[ty]) for name, ty in columns]
names = [name for name, _ in columns]
n = jobs = 0
with conn.cursor(name="etl_extract") as cur:
    cur.itersize = batch
    cur.execute(f'SELECT {", ".join(names)} FROM {source}')
    while True:
        rows = cur.fetchmany(batch)
        if not rows:
            break
        records = [{c: convert(v) for c, v in zip(names, row)} for row in rows]
        disposition = bigquery.WriteDisposition.WRITE_TRUNCATE if jobs == 0 else bigquery.WriteDisposition.WRITE_APPEND
        job = client.load_table_from_json(records, table, job_config=bigquery.LoadJobConfig(
            schema=schema, write_disposition=disposition))
        job.result()
        n += len(rows)
        jobs += 1
conn.close()
print(f"{n} {jobs} {time.perf_counter() - t0:.3f}")
