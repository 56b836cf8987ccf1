"""HTTP capture for ferry's local stack (stands in for Slack incoming webhooks).

usage: http_capture.py HOST PORT OUT.jsonl

Every POST is appended to OUT.jsonl as {"path", "headers", "body"} and answered 200 "ok", as
Slack does. A path containing /status/NNN/ is answered with status NNN instead (to test error
handling); GET /health answers 200.
"""
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST, PORT, OUT = sys.argv[1], int(sys.argv[2]), sys.argv[3]
_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _reply(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._reply(200 if self.path == "/health" else 404, "ok" if self.path == "/health" else "not found")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        m = re.search(r"/status/(\d{3})/", self.path)
        status = int(m.group(1)) if m else 200
        record = {"path": self.path, "status": status, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
        with _lock, open(OUT, "a") as f:
            f.write(json.dumps(record) + "\n")
        self._reply(status, "ok" if status == 200 else "server_error")

    def log_message(self, fmt, *args):
        pass


if __name__ == "__main__":
    open(OUT, "a").close()
    server = ThreadingHTTPServer((HOST, PORT), Handler)
    print(f"http capture on {HOST}:{PORT} -> {OUT}", flush=True)
    server.serve_forever()
