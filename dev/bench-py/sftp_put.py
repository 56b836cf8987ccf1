"""Benchmark peer (see dev/bench): what the Python functions ferry replaces do to deliver a file:
paramiko SSHClient (known_hosts checked), open_sftp(), put() straight to the final name.
Usage: sftp_put.py HOST PORT USER KEY_FILE KNOWN_HOSTS REMOTE_DIR LOCAL_FILE
Prints `seconds cipher`."""
import os
import sys
import time

import paramiko

host, port, user, key, known_hosts, remote_dir, local = sys.argv[1:8]
t0 = time.perf_counter()
client = paramiko.SSHClient()
client.load_host_keys(known_hosts)
client.set_missing_host_key_policy(paramiko.RejectPolicy())
client.connect(host, int(port), username=user, key_filename=key, allow_agent=False, look_for_keys=False)
sftp = client.open_sftp()
sftp.put(local, f"{remote_dir}/{os.path.basename(local)}")
secs = time.perf_counter() - t0
cipher = client.get_transport().local_cipher
client.close()
print(f"{secs:.3f} {cipher}")
