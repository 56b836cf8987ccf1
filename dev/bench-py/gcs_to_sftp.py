"""Benchmark peer (see dev/bench): a staged export's delivery as the Python service ferry replaces does
it: google-cloud-storage lists the objects under a prefix and downloads each in turn to a temporary
directory (download_to_filename), then paramiko (known_hosts checked, key auth) put()s each file in
turn to the final name, the object's base name.
Usage: gcs_to_sftp.py ENDPOINT PROJECT BUCKET PREFIX HOST PORT USER KEY_FILE KNOWN_HOSTS REMOTE_DIR LOCAL_DIR
  ENDPOINT   the JSON API's endpoint (fake-gcs-server), e.g. http://127.0.0.1:19043
  LOCAL_DIR  where the temporary directory is made
Prints `objects bytes download_s upload_s total_s cipher`."""
import os
import sys
import tempfile
import time

import paramiko
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

endpoint, project, bucket, prefix, host, port, user, key, known_hosts, remote_dir, local_dir = sys.argv[1:12]
t0 = time.perf_counter()
client = storage.Client(project=project, credentials=AnonymousCredentials(),
                        client_options=ClientOptions(api_endpoint=endpoint))
with tempfile.TemporaryDirectory(dir=local_dir) as tmp:
    files = []
    for blob in client.list_blobs(bucket, prefix=prefix):
        if blob.name.endswith("/"):
            continue
        local = os.path.join(tmp, os.path.basename(blob.name))
        blob.download_to_filename(local)
        files.append(local)
    t1 = time.perf_counter()
    ssh = paramiko.SSHClient()
    ssh.load_host_keys(known_hosts)
    ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
    ssh.connect(host, int(port), username=user, key_filename=key, allow_agent=False, look_for_keys=False)
    sftp = ssh.open_sftp()
    size = 0
    for local in files:
        size += sftp.put(local, f"{remote_dir}/{os.path.basename(local)}").st_size
    cipher = ssh.get_transport().local_cipher
    ssh.close()
t2 = time.perf_counter()
print(f"{len(files)} {size} {t1 - t0:.3f} {t2 - t1:.3f} {t2 - t0:.3f} {cipher}")
