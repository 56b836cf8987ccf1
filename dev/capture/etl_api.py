"""Stand-in for seed 004's Django ETL API, for ferry's local stack.

usage: etl_api.py --host H --port P --dir DIR --token-file FILE

The two endpoints the seed's ETL runner calls, with DRF-like answers:
- GET /api/etl/job-config/ID/ answers the JSON object in DIR/job-config/ID.json (404 {"detail":
  "Not found."} when there is none).
- PATCH /api/etl/runs/ID/update/ takes a JSON object (415 for another Content-Type, 400 for a
  body that is not a JSON object) and answers it back with "id".
Both need "Authorization: Bearer TOKEN", TOKEN being FILE's content (read at each request);
without it 401 {"detail": ...}. A file's "__status": N answers N instead, "__times": K only
for its next K requests (after which the file's other fields are answered), so retries can be
tested; DIR/runs/ID.json does the same for run ID's PATCHes. Fields starting with "__" are
never answered.
Every request is appended to DIR/requests.jsonl ({time, method, path, authorized, status}),
and every PATCH, answered or not, to DIR/patches.jsonl ({time, path, run_id, authorized,
status, body}). The token itself is never written. GET /health answers 200 "ok".
"""
import argparse
import json
import os
import re
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

JOB_CONFIG = re.compile(r"/api/etl/job-config/(\d+)/")
RUN_UPDATE = re.compile(r"/api/etl/runs/(\d+)/update/")

lock = threading.Lock()
served = {}  # (file, mtime_ns) -> requests answered with its __status so far


def now():
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def append(name, record):
    with lock, open(os.path.join(ARGS.dir, name), "a") as f:
        f.write(json.dumps(record) + "\n")


def token():
    with open(ARGS.token_file) as f:
        return f.read().strip()


def control(path):
    """The file's answer: (status, its fields without the __ ones), None when there is no file."""
    try:
        with open(path) as f:
            doc = json.load(f)
        mtime = os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return None
    except ValueError as e:
        return 500, {"detail": f"stand-in: {os.path.basename(path)} is not JSON: {e}"}
    if not isinstance(doc, dict):
        return 200, doc
    fields = {k: v for k, v in doc.items() if not k.startswith("__")}
    status = doc.get("__status")
    if status is None:
        return 200, fields
    times = doc.get("__times")
    with lock:
        n = served.get((path, mtime), 0)
        if times is not None and n >= times:
            return 200, fields
        served[(path, mtime)] = n + 1
    return int(status), {"detail": f"stand-in fault {status}"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, status, body):
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="api"')
        self.end_headers()
        self.wfile.write(data)

    def authorized(self):
        auth = self.headers.get("Authorization") or ""
        return auth == f"Bearer {token()}"

    def handle_one(self, method):
        path = urlsplit(self.path).path
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8", "replace")
        authorized = self.authorized()
        status, body = self.route(method, path, raw, authorized)
        append("requests.jsonl", {"time": now(), "method": method, "path": path, "authorized": authorized, "status": status})
        self.reply(status, body)

    def route(self, method, path, raw, authorized):
        if method == "GET" and path == "/health":
            return 200, "ok"
        m = JOB_CONFIG.fullmatch(path) if method == "GET" else RUN_UPDATE.fullmatch(path) if method == "PATCH" else None
        if not m:
            return 404, {"detail": "Not found."}
        if method == "PATCH":
            return self.patch(path, int(m[1]), raw, authorized)
        if not authorized:
            return 401, {"detail": "Authentication credentials were not provided or are invalid."}
        answer = control(os.path.join(ARGS.dir, "job-config", f"{m[1]}.json"))
        return answer or (404, {"detail": "Not found."})

    def patch(self, path, run_id, raw, authorized):
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            body = raw
        record = {"time": now(), "path": path, "run_id": run_id, "authorized": authorized, "body": body}
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if not authorized:
            status, answer = 401, {"detail": "Authentication credentials were not provided or are invalid."}
        elif ctype != "application/json":
            status, answer = 415, {"detail": f'Unsupported media type "{ctype}" in request.'}
        elif not isinstance(body, dict):
            status, answer = 400, {"detail": "expected a JSON object"}
        else:
            status, answer = control(os.path.join(ARGS.dir, "runs", f"{run_id}.json")) or (200, {})
            if status == 200:
                answer = {"id": run_id, **body}
        record["status"] = status
        append("patches.jsonl", record)
        return status, answer

    def do_GET(self):
        self.handle_one("GET")

    def do_PATCH(self):
        self.handle_one("PATCH")

    def do_POST(self):
        self.handle_one("POST")

    def log_message(self, fmt, *args):
        pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True, help="job-config/ID.json and runs/ID.json in, requests.jsonl and patches.jsonl out")
    parser.add_argument("--token-file", required=True, help="the bearer token requests must carry")
    ARGS = parser.parse_args()
    for d in ("job-config", "runs"):
        os.makedirs(os.path.join(ARGS.dir, d), exist_ok=True)
    for f in ("requests.jsonl", "patches.jsonl"):
        open(os.path.join(ARGS.dir, f), "a").close()
    token()  # fails at once when the file is missing
    server = ThreadingHTTPServer((ARGS.host, ARGS.port), Handler)
    server.daemon_threads = True
    print(f"etl api stand-in on {ARGS.host}:{ARGS.port} serving {ARGS.dir}", flush=True)
    server.serve_forever()
