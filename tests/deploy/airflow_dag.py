"""Loads the example DAG (the path given) with stand-ins for Airflow, google-auth and requests,
which the test machines do not have, and checks what it builds and how its tasks judge ferry's
answers. Exits non-zero, with the reason, when a check fails. Run by tests/deploy/main.rs.
"""

import importlib.util
import json
import sys
import types


class AirflowException(Exception):
    pass


class Response:
    def __init__(self, status, text):
        self.status_code, self.text = status, text

    def json(self):
        return json.loads(self.text)

    def raise_for_status(self):
        if self.status_code >= 400:
            raise RequestException(self.status_code)


class RequestException(Exception):
    pass


# requests.post: each call is recorded and answered with the next of `answers`.
posts = []
answers = []


def post(url, json=None, headers=None, timeout=None):
    posts.append({"url": url, "json": json, "headers": headers, "timeout": timeout})
    return Response(*answers.pop(0))


# Operators record their arguments and `>>` edges, with their group's id as a prefix.
tasks = {}
groups = []


class Operator:
    def __init__(self, task_id, **kwargs):
        self.task_id = ".".join(groups + [task_id])
        self.kwargs, self.downstream = kwargs, []
        tasks[self.task_id] = self

    def __rshift__(self, other):
        self.downstream.append(other.task_id)
        return other


class TaskGroup:
    def __init__(self, group_id):
        self.group_id = group_id

    def __enter__(self):
        groups.append(self.group_id)
        return self

    def __exit__(self, *_):
        groups.pop()


class DAG:
    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def __enter__(self):
        return self

    def __exit__(self, *_):
        pass


CONFIG = {
    "gcs_bucket": "acme-exports",
    "gcs_expiration_days": 30,
    "cloud_run_url": "https://ferry-123456789012.europe-west1.run.app/",
    "sftp": {"host": "sftp.partner.example", "port": 22, "username": "acme", "directory": "/uploads"},
    "exports": {
        "product_data": {"query": "SELECT * FROM shop.products WHERE DATE(created_at) = '{date}';", "format": "CSV", "compression": "GZIP"},
        "customer_data": {"source_table": "shop.customers", "columns": ["id", "email"], "format": "PARQUET", "compression": "SNAPPY"},
    },
}
variables = {"sftp_export_config": CONFIG}


class Variable:
    @staticmethod
    def get(key, default_var=None, deserialize_json=False):
        return variables.get(key, default_var)


def module(name, **attrs):
    """A stand-in module `name` holding `attrs`, with its parent packages."""
    m = sys.modules.setdefault(name, types.ModuleType(name))
    m.__dict__.update(attrs)
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(module(parent), child, m)
    return m


module("airflow", DAG=DAG)
module("airflow.exceptions", AirflowException=AirflowException)
module("airflow.models", Variable=Variable)
module("airflow.operators.python", PythonOperator=Operator)
module("airflow.providers.google.cloud.operators.bigquery", BigQueryInsertJobOperator=Operator)
module("airflow.utils.task_group", TaskGroup=TaskGroup)
module("google.auth.transport.requests", Request=lambda: "transport")
module("google.oauth2.id_token", fetch_id_token=lambda request, audience: f"id-token({audience})")
module("requests", post=post, RequestException=RequestException)

spec = importlib.util.spec_from_file_location("ferry_staged_exports", sys.argv[1])
dag = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dag)


def check(ok, what):
    if not ok:
        sys.exit(f"the DAG: {what}")


# One group per export, EXPORT DATA >> transfer >> verify in each, and no edge between groups:
# the groups run in parallel.
edges = sorted((t.task_id, d) for t in tasks.values() for d in t.downstream)
check(
    edges
    == [
        ("customer_data.export_data", "customer_data.transfer"),
        ("customer_data.transfer", "customer_data.verify"),
        ("product_data.export_data", "product_data.transfer"),
        ("product_data.transfer", "product_data.verify"),
    ],
    f"tasks and edges {edges}",
)
sql = tasks["product_data.export_data"].kwargs["configuration"]["query"]["query"]
check(
    sql.startswith("EXPORT DATA OPTIONS(uri='gs://acme-exports/product_data/{{ ds_nodash }}/product_data-*.csv.gz', format='CSV'"),
    f"EXPORT DATA of product_data: {sql}",
)
check(sql.endswith("\nSELECT * FROM shop.products WHERE DATE(created_at) = DATE '{{ ds }}'"), f"EXPORT DATA of product_data: {sql}")
sql = tasks["customer_data.export_data"].kwargs["configuration"]["query"]["query"]
check("uri='gs://acme-exports/customer_data/{{ ds_nodash }}/customer_data-*.parquet'" in sql, f"EXPORT DATA of customer_data: {sql}")
check(sql.endswith("\nSELECT `id`, `email` FROM `shop.customers`"), f"EXPORT DATA of customer_data: {sql}")
for name in CONFIG["exports"]:
    path = f"gs://acme-exports/{name}/{{{{ ds_nodash }}}}/"
    url = CONFIG["cloud_run_url"]
    got = tasks[f"{name}.transfer"].kwargs["op_kwargs"]
    check(got == {"service_url": url, "export_name": name, "gcs_path": path, "date": "{{ ds }}"}, f"transfer's arguments {got}")
    got = tasks[f"{name}.verify"].kwargs["op_kwargs"]
    check(got == {"service_url": url, "export_name": name, "gcs_path": path}, f"verify's arguments {got}")


def fails(call, *args):
    try:
        call(*args)
    except AirflowException as e:
        return str(e)
    sys.exit(f"the DAG: {call.__name__} did not fail on {posts[-1]}")


url = "https://ferry-123456789012.europe-west1.run.app/"
path = "gs://acme-exports/product_data/20250108/"
token = {"Authorization": "Bearer id-token(https://ferry-123456789012.europe-west1.run.app)"}

answers[:] = [(200, '{"status": "success", "export_name": "product_data", "files_transferred": 3}')]
check(dag.transfer(url, "product_data", path, "2025-01-08")["files_transferred"] == 3, "transfer's XCom")
want = {
    "url": "https://ferry-123456789012.europe-west1.run.app/transfer",
    "json": {"export_name": "product_data", "gcs_path": path, "date": "2025-01-08"},
    "headers": token,
    "timeout": 1800,
}
check(posts[-1] == want, f"transfer's request {posts[-1]}")
answers[:] = [(200, '{"status": "success", "in_sync": true, "gcs_file_count": 3, "sftp_file_count": 3}')]
dag.verify(url, "product_data", path)
want = {"url": "https://ferry-123456789012.europe-west1.run.app/verify", "json": {"export_name": "product_data", "gcs_path": path}, "headers": token}
check({k: posts[-1][k] for k in want} == want, f"verify's request {posts[-1]}")

# Not 2xx fails whatever the body says.
for answer in [(500, "upstream failed"), (403, '{"status": "success"}'), (200, '{"status": "error", "error": "no files"}'), (200, "ok"), (200, "[]")]:
    answers[:] = [answer]
    fails(dag.transfer, url, "product_data", path, "2025-01-08")
for answer in [
    (503, "busy"),
    (409, '{"status": "success", "in_sync": true}'),
    (200, '{"status": "success", "in_sync": false, "missing_on_sftp": ["product_data-000000000000.csv.gz"]}'),
    (200, '{"status": "success"}'),
    (200, '{"status": "success", "in_sync": "true"}'),
]:
    answers[:] = [answer]
    fails(dag.verify, url, "product_data", path)
answers[:] = [(200, '{"in_sync": false, "missing_on_sftp": ["product_data-000000000000.csv.gz"]}')]
check("product_data-000000000000.csv.gz" in fails(dag.verify, url, "product_data", path), "verify's error names the missing file")

# A failed task is posted to Slack when the Variable names a webhook, and only then.
ti = types.SimpleNamespace(dag_id="ferry_staged_exports", task_id="product_data.transfer", log_url="https://airflow.example/log")
context = {"task_instance": ti, "ds": "2025-01-08", "exception": AirflowException("POST /transfer answered HTTP 500")}
check(dag.dag.kwargs["default_args"]["on_failure_callback"] is dag.notify_slack, "on_failure_callback")
before = len(posts)
dag.notify_slack(context)
check(len(posts) == before, "posted to Slack without a webhook")
variables["slack_webhook_url"] = "https://hooks.slack.example/services/T/B/X"
answers[:] = [(200, "ok")]
dag.notify_slack(context)
text = posts[-1]["json"]["text"]
check(posts[-1]["url"] == "https://hooks.slack.example/services/T/B/X", f"Slack post {posts[-1]}")
check("product_data.transfer" in text and "2025-01-08" in text and "HTTP 500" in text, f"Slack text {text!r}")
answers[:] = [(500, "down")]
dag.notify_slack(context)  # must not raise
print("ok")
