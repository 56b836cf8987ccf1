"""Stand-in for the Cloud Run Admin API's jobs.run (v2 REST), for ferry's local stack.

usage: cloud_run_jobs.py --host H --port P --out DIR --command PATH
                         [--default-args ARGS] [--max-retries 3] [--retry-delay 1.0]

It imitates one Cloud Run job whose container runs PATH with ARGS (split as a shell would), under
any project, location and job name:
- POST /v2/projects/P/locations/L/jobs/J:run takes a RunJobRequest ({"overrides":
  {"containerOverrides": [{"name", "args", "env", "clearArgs"}], "taskCount", "timeout"},
  "validateOnly", "etag"}), checked strictly (unknown fields and wrong types are 400
  INVALID_ARGUMENT), and answers a long-running Operation whose metadata is the new Execution
  P/L/jobs/J/executions/J-xxxxx. The execution then really runs PATH + args (the override's args,
  none with clearArgs, else ARGS) as a child process, with this process's environment, the
  /standin/env extras, the override's env and CLOUD_RUN_JOB, _EXECUTION, _TASK_INDEX (0),
  _TASK_COUNT (1) and _TASK_ATTEMPT (0, 1, ...). An attempt that exits non-zero, is killed,
  outlives the override's timeout (SIGTERM, SIGKILL 10 s later) or cannot be started (recorded
  as exit code 127) is started again after --retry-delay, up to --max-retries times.
- GET .../jobs/J/executions/E and GET .../operations/O answer the Execution and the Operation
  (done with `response` once the execution succeeded, with `error` once it failed). Fields
  whose value is zero or false are left out, as proto3 JSON does.
Left out: IAM (a request without Authorization is accepted; whether it had one is recorded),
real containers and images, more than one task per execution (taskCount must be 1), the job's
own default task timeout, cancellation and the other methods. The code of a failed execution's
operation error (9, FAILED_PRECONDITION) is a guess: read the Execution's conditions instead.

Control, not in the real API (J restricts a setting to the job named J; tests use their own
job names so that they can run in parallel):
- GET /standin/executions[?job=J]: every execution {name, id, job, operation, args, env_overrides,
  state: running|succeeded|failed, attempts: [{attempt, pid, state, exit_code (null while running
  or when killed), signal (the number that killed it, or null), timed_out, log}]}
- POST /standin/fault {"status": 403|500|503|..., "times": N[, "job": J]} or
  {"hang": SECONDS, "times": N[, "job": J]}: the next N :run calls are refused with that status
  (or answered 504 after SECONDS) and start nothing; {"times": 0} clears.
- POST /standin/env[?job=J] {"K": "V", ...}: extra environment for executions started from now on.
Every request is appended to DIR/requests.jsonl when it is answered ({time received, method, path,
authorization: "Bearer <redacted>" or null, body, status, execution}); attempt A of execution E
writes its stdout and stderr to DIR/E-A.log. GET /health answers 200 "ok". SIGTERM or SIGINT
stops the children still running (SIGTERM, SIGKILL 5 s later), then the stand-in exits 0.
"""
import argparse
import json
import os
import random
import re
import shlex
import shutil
import signal
import string
import subprocess
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

CODES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
         409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 501: "UNIMPLEMENTED",
         503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
RUN = re.compile(r"/v2/(projects/[^/:]+/locations/[^/:]+)/jobs/([^/:]+):run")
EXECUTION = re.compile(r"/v2/(projects/[^/:]+/locations/[^/:]+/jobs/[^/:]+/executions/[^/:]+)")
OPERATION = re.compile(r"/v2/(projects/[^/:]+/locations/[^/:]+/operations/[^/:]+)")
MESSAGES = {500: "Internal error encountered.", 503: "The service is currently unavailable."}
EXECUTION_TYPE = "type.googleapis.com/google.cloud.run.v2.Execution"

lock = threading.Lock()
executions = {}  # execution name -> Execution, in start order
faults = {"times": 0}
extra_env = {}  # job name or None (every job) -> {K: V}
stopping = threading.Event()


def now():
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


class ApiError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def check(ok, message):
    if not ok:
        raise ApiError(400, message)


def fields(obj, where, allowed):
    """The object's fields by their JSON names (proto3 JSON also takes snake_case); 400 on unknown ones."""
    check(isinstance(obj, dict), f"Invalid value at '{where or 'request'}': expected an object")
    out = {re.sub(r"_([a-z])", lambda m: m[1].upper(), k): v for k, v in obj.items() if v is not None}
    for k in out:
        check(k in allowed, f'Invalid JSON payload received. Unknown name "{k}"'
                            + (f" at '{where}'" if where else "") + ": Cannot find field.")
    return out


def load(raw):
    try:
        return json.loads(raw) if raw.strip() else {}
    except ValueError as e:
        raise ApiError(400, f"Invalid JSON payload received. {e}")


def parse_run(raw):
    req = fields(load(raw), "", ("overrides", "validateOnly", "etag"))
    ov = fields(req.get("overrides", {}), "overrides", ("containerOverrides", "taskCount", "timeout"))
    cos = ov.get("containerOverrides", [])
    check(isinstance(cos, list), "Invalid value at 'overrides.container_overrides': expected a list")
    check(len(cos) <= 1, "overrides.container_overrides: the job has one container; at most one override")
    co = fields(cos[0], "overrides.container_overrides[0]", ("name", "args", "env", "clearArgs")) if cos else {}
    check(isinstance(co.get("name", ""), str), "Invalid value at 'overrides.container_overrides[0].name'")
    args = co.get("args", [])
    check(isinstance(args, list) and all(isinstance(a, str) for a in args),
          "Invalid value at 'overrides.container_overrides[0].args': expected a list of strings")
    clear = co.get("clearArgs", False)
    check(isinstance(clear, bool), "Invalid value at 'overrides.container_overrides[0].clear_args' (TYPE_BOOL)")
    check(not (clear and args), "overrides.container_overrides[0]: args and clear_args are mutually exclusive")
    env = co.get("env", [])
    check(isinstance(env, list), "Invalid value at 'overrides.container_overrides[0].env': expected a list")
    env_pairs = []
    for i, e in enumerate(env):
        e = fields(e, f"overrides.container_overrides[0].env[{i}]", ("name", "value"))
        check(isinstance(e.get("name"), str) and e["name"], f"overrides.container_overrides[0].env[{i}].name: required")
        check(isinstance(e.get("value", ""), str), f"Invalid value at 'overrides.container_overrides[0].env[{i}].value'")
        env_pairs.append((e["name"], e.get("value", "")))
    tasks = ov.get("taskCount", 0)
    check(type(tasks) is int or (isinstance(tasks, str) and tasks.isdigit()), "Invalid value at 'overrides.task_count' (TYPE_INT32)")
    check(int(tasks) in (0, 1), "overrides.task_count: this stand-in runs one task per execution")
    timeout = ov.get("timeout")
    if timeout is not None:
        m = isinstance(timeout, str) and re.fullmatch(r"(\d+)(\.\d{1,9})?s", timeout)
        check(m, f"Invalid value at 'overrides.timeout' (type.googleapis.com/google.protobuf.Duration), {json.dumps(timeout)}")
        timeout = float(timeout[:-1])
        check(0 < timeout <= 168 * 3600, "overrides.timeout: must be more than 0 s and at most 168 h")
    check(isinstance(req.get("validateOnly", False), bool), "Invalid value at 'validate_only' (TYPE_BOOL)")
    check(isinstance(req.get("etag", ""), str), "Invalid value at 'etag' (TYPE_STRING)")
    return {"args": args, "clear": clear, "env": env_pairs, "timeout": timeout,
            "validate_only": req.get("validateOnly", False), "override": bool(cos)}


class Execution:
    def __init__(self, parent, job, args, env_overrides, timeout, env):
        chars = string.ascii_lowercase + string.digits
        self.id = f"{job}-" + "".join(random.choices(chars, k=5))
        self.name = f"{parent}/jobs/{job}/executions/{self.id}"
        self.operation = f"{parent}/operations/{uuid.uuid4()}"
        self.job, self.uid, self.args, self.timeout = job, str(uuid.uuid4()), args, timeout
        self.env_overrides, self.env = env_overrides, env
        self.create_time, self.start_time, self.completion_time = now(), None, None
        self.attempts, self.state, self.proc = [], "running", None

    def resource(self):
        last = self.attempts[-1] if self.attempts else None
        running = last is not None and last["state"] == "running"
        state = {"running": "CONDITION_PENDING", "succeeded": "CONDITION_SUCCEEDED", "failed": "CONDITION_FAILED"}[self.state]
        cond = {"type": "Completed", "state": state, "lastTransitionTime": self.completion_time or self.create_time}
        if self.state == "failed":
            cond["message"] = f"Task {self.id}-task0 failed with message: The container exited with an error."
        r = {"name": self.name, "uid": self.uid, "generation": "1", "job": self.job, "createTime": self.create_time,
             "startTime": self.start_time, "completionTime": self.completion_time, "parallelism": 1, "taskCount": 1,
             "runningCount": int(running), "succeededCount": int(self.state == "succeeded"),
             "failedCount": int(self.state == "failed"), "retriedCount": max(len(self.attempts) - 1, 0),
             "conditions": [cond], "reconciling": self.state == "running", "etag": f'"{self.uid}"'}
        return {k: v for k, v in r.items() if v is not None and v is not False and v != 0}

    def operation_json(self):
        ex = {"@type": EXECUTION_TYPE, **self.resource()}
        op = {"name": self.operation, "done": self.state != "running", "metadata": ex}
        if self.state == "succeeded":
            op["response"] = ex
        elif self.state == "failed":  # a failed execution's operation carries an error, not a response
            op["error"] = {"code": 9, "message": ex["conditions"][0]["message"]}
        return op

    def control_json(self):
        return {"name": self.name, "id": self.id, "job": self.job, "operation": self.operation, "args": self.args,
                "env_overrides": dict(self.env_overrides), "state": self.state,
                "attempts": [{k: v for k, v in a.items() if k != "proc"} for a in self.attempts]}

    def run(self):
        """Runs the task's attempts one after the other, as Cloud Run retries a task."""
        for n in range(ARGS.max_retries + 1):
            env = {**self.env, "CLOUD_RUN_JOB": self.job, "CLOUD_RUN_EXECUTION": self.id, "CLOUD_RUN_TASK_INDEX": "0",
                   "CLOUD_RUN_TASK_COUNT": "1", "CLOUD_RUN_TASK_ATTEMPT": str(n)}
            log = os.path.join(ARGS.out, f"{self.id}-{n}.log")
            with lock:
                if stopping.is_set():
                    break
                attempt = {"attempt": n, "pid": None, "state": "running", "exit_code": None, "signal": None,
                           "timed_out": False, "log": log}
                self.attempts.append(attempt)
                self.start_time = self.start_time or now()
                with open(log, "wb") as out:
                    try:
                        proc = subprocess.Popen([*DIE_WITH_PARENT, ARGS.command, *self.args], env=env, stdout=out,
                                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                        attempt["pid"], self.proc = proc.pid, proc
                    except OSError as e:  # a container that cannot start fails its task, like exit 127
                        out.write(f"cannot start {ARGS.command}: {e}\n".encode())
                        proc = None
            try:
                code = proc.wait(timeout=self.timeout) if proc else 127
            except subprocess.TimeoutExpired:  # the task timeout: SIGTERM, then SIGKILL after 10 s
                attempt["timed_out"] = True
                proc.terminate()
                try:
                    code = proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    code = proc.wait()
            with lock:
                attempt["exit_code"], attempt["signal"] = (code, None) if code >= 0 else (None, -code)
                attempt["state"] = "succeeded" if code == 0 and not attempt["timed_out"] else "failed"
                if attempt["state"] == "succeeded":
                    break
            if n < ARGS.max_retries and stopping.wait(ARGS.retry_delay):
                break
        with lock:
            self.state = "succeeded" if self.attempts and self.attempts[-1]["state"] == "succeeded" else "failed"
            self.completion_time, self.proc = now(), None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def handle_one(self, method):
        url = urlsplit(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8", "replace")
        auth = self.headers.get("Authorization")
        self.record = {"time": now(), "method": method, "path": self.path,
                       "authorization": auth and re.sub(r"^(\S+ )?.*", r"\1<redacted>", auth, flags=re.S), "execution": None}
        try:
            self.record["body"] = json.loads(raw) if raw.strip() else None
        except ValueError:
            self.record["body"] = raw
        try:
            status, body = self.route(method, path, query, raw)
        except ApiError as e:
            status, body = e.status, {"error": {"code": e.status, "message": str(e), "status": CODES.get(e.status, "UNKNOWN")}}
        self.record["status"] = status
        with lock, open(os.path.join(ARGS.out, "requests.jsonl"), "a") as f:
            f.write(json.dumps(self.record) + "\n")
        data = body.encode() if isinstance(body, str) else json.dumps(body, indent=2).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client went away (a hung :run)
            pass

    def route(self, method, path, query, raw):
        job_filter = query.get("job", [None])[0]
        if method == "GET" and path == "/health":
            return 200, "ok"
        if method == "GET" and path == "/standin/executions":
            with lock:
                return 200, [e.control_json() for e in executions.values() if job_filter in (None, e.job)]
        if method == "POST" and path == "/standin/fault":
            return 200, self.set_fault(raw)
        if method == "POST" and path == "/standin/env":
            env = load(raw)
            check(isinstance(env, dict) and all(isinstance(v, str) for v in env.values()), 'expected {"K": "V", ...}')
            with lock:
                extra_env.setdefault(job_filter, {}).update(env)
                return 200, extra_env[job_filter]
        m = (RUN if method == "POST" else EXECUTION).fullmatch(path)
        if m and method == "POST":
            return 200, self.run_job(m[1], m[2], raw)
        m = m or (OPERATION.fullmatch(path) if method == "GET" else None)
        with lock:
            ex = m and next((e for e in executions.values() if m[1] in (e.name, e.operation)), None)
            if ex:
                self.record["execution"] = ex.name
                return 200, {"@type": EXECUTION_TYPE, **ex.resource()} if m[1] == ex.name else ex.operation_json()
        raise ApiError(404, f"Resource '{path[4:] if m else path}' was not found")

    def set_fault(self, raw):
        f = load(raw)
        check(isinstance(f, dict) and set(f) <= {"status", "hang", "times", "job"}, "fields: status|hang, times, job")
        check(type(f.get("times")) is int and f["times"] >= 0, "times: a count (0 clears)")
        check(f["times"] == 0 or ("status" in f) != ("hang" in f), "status or hang, not both")
        check(type(f.get("status", 500)) is int and 400 <= f.get("status", 500) <= 599, "status: 400 to 599")
        check(isinstance(f.get("hang", 0), (int, float)) and f.get("hang", 0) >= 0, "hang: seconds")
        with lock:
            faults.clear()
            faults.update(f)
            return dict(faults)

    def run_job(self, parent, job, raw):
        with lock:
            fault = dict(faults) if faults["times"] > 0 and faults.get("job") in (None, job) else None
            if fault:
                faults["times"] -= 1
        if fault and "hang" in fault:
            time.sleep(fault["hang"])
            raise ApiError(504, "The request was aborted because it timed out.")
        if fault and fault["status"] == 403:
            raise ApiError(403, f"Permission 'run.jobs.runWithOverrides' denied on resource "
                                f"'{parent}/jobs/{job}' (or resource may not exist).")
        if fault:
            raise ApiError(fault["status"], MESSAGES.get(fault["status"], "Stand-in fault."))
        req = parse_run(raw)
        args = req["args"] if req["args"] else [] if req["clear"] else DEFAULT_ARGS
        with lock:
            env = {**os.environ, **extra_env.get(None, {}), **extra_env.get(job, {}), **dict(req["env"])}
            ex = Execution(parent, job, args, req["env"], req["timeout"], env)
            while ex.name in executions:
                ex = Execution(parent, job, args, req["env"], req["timeout"], env)
            if req["validate_only"]:
                return ex.operation_json()
            executions[ex.name] = ex
            self.record["execution"] = ex.name
            op = ex.operation_json()
        threading.Thread(target=ex.run, daemon=True).start()
        return op

    def do_GET(self):
        self.handle_one("GET")

    def do_POST(self):
        self.handle_one("POST")

    def log_message(self, fmt, *args):
        pass


def shutdown(server):
    """Stops every child still running: SIGTERM, then SIGKILL after 5 s."""
    stopping.set()
    with lock:
        procs = [e.proc for e in executions.values() if e.proc and e.proc.poll() is None]
    for p in procs:
        p.terminate()
    deadline = time.monotonic() + 5
    for p in procs:
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    server.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True, help="directory for requests.jsonl and the attempts' logs")
    parser.add_argument("--command", required=True, help="the container's entrypoint")
    parser.add_argument("--default-args", default="", help="the job's args, split as a shell would")
    parser.add_argument("--max-retries", type=int, default=3, choices=range(0, 11), metavar="0..10")
    parser.add_argument("--retry-delay", type=float, default=1.0, help="seconds before a task is retried")
    ARGS = parser.parse_args()
    DEFAULT_ARGS = shlex.split(ARGS.default_args)
    # An execution is SIGKILLed when the stand-in dies, however it dies: util-linux's setpriv
    # sets the parent-death signal and execs the command (same pid), where it is installed.
    DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []
    os.makedirs(ARGS.out, exist_ok=True)
    open(os.path.join(ARGS.out, "requests.jsonl"), "a").close()
    server = ThreadingHTTPServer((ARGS.host, ARGS.port), Handler)
    server.daemon_threads = True
    # A plain flag: a handler that took a lock the main thread holds could deadlock.
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"cloud run jobs stand-in on {ARGS.host}:{ARGS.port} running {ARGS.command} -> {ARGS.out}", flush=True)
    while not stop:
        time.sleep(0.2)
    shutdown(server)
