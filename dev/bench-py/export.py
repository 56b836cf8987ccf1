"""Benchmark peer (see dev/bench): a full export as the Python functions ferry replaces do it:
google-cloud-bigquery query, iterate the rows into a local CSV file with the csv module, paramiko
put() to the final name, then a metadata row by DML.
Usage: export.py ENDPOINT PROJECT TABLE METADATA_TABLE HOST PORT USER KEY_FILE KNOWN_HOSTS REMOTE_DIR LOCAL_DIR
Prints `rows query_s read_encode_s upload_s record_s total_s`."""
import csv
import datetime as dt
import os
import sys
import time

import paramiko
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

endpoint, project, table, metadata, host, port, user, key, known_hosts, remote_dir, local_dir = sys.argv[1:12]
t0 = time.perf_counter()
client = bigquery.Client(project=project, credentials=AnonymousCredentials(),
                         client_options=ClientOptions(api_endpoint=endpoint))
rows = client.query(f"SELECT * FROM `{table}` ORDER BY updated_at").result(page_size=20000)
t1 = time.perf_counter()
name = f"BIG_{dt.datetime.now(dt.timezone.utc):%Y%m%d_%H%M%S}.csv"
local = os.path.join(local_dir, name)
n = 0
with open(local, "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow([field.name for field in rows.schema])
    for row in rows:
        w.writerow(row.values())
        n += 1
t2 = time.perf_counter()
ssh = paramiko.SSHClient()
ssh.load_host_keys(known_hosts)
ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
ssh.connect(host, int(port), username=user, key_filename=key, allow_agent=False, look_for_keys=False)
ssh.open_sftp().put(local, f"{remote_dir}/{name}")
ssh.close()
os.remove(local)
t3 = time.perf_counter()
client.query(
    f"INSERT INTO `{metadata}` (export_name, rows_exported, file_name, completed_at) VALUES ('big', @n, @f, CURRENT_TIMESTAMP())",
    job_config=bigquery.QueryJobConfig(query_parameters=[
        bigquery.ScalarQueryParameter("n", "INT64", n), bigquery.ScalarQueryParameter("f", "STRING", name)]),
).result()
t4 = time.perf_counter()
print(f"{n} {t1 - t0:.2f} {t2 - t1:.2f} {t3 - t2:.2f} {t4 - t3:.2f} {t4 - t0:.2f}")
