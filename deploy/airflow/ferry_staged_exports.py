"""Staged exports through ferry, for teams that keep Airflow (Airflow 2.4 or later).

One TaskGroup per export of ferry's config, all groups in parallel; in each group:

    export_data  BigQuery's EXPORT DATA writes the day's files to
                 gs://{gcs_bucket}/{export}/{ds_nodash}/ (set RUN_EXPORT_DATA = False when
                 something else writes them there)
    transfer     POST {cloud_run_url}/transfer {"export_name", "gcs_path", "date"}: ferry copies
                 the files to SFTP; fails unless the answer is 2xx with "status": "success"
    verify       POST {cloud_run_url}/verify {"export_name", "gcs_path"}: fails unless the
                 answer is 2xx with "in_sync": true

The requests carry a Google ID token whose audience is the service URL, minted for the identity
Airflow runs as (Application Default Credentials: Composer's environment service account, or a
service account key). A task that fails for good posts to the Slack webhook in the Variable
"slack_webhook_url", if there is one.

The config is read from the Variable CONFIG_VARIABLE, ferry's config in the seed form:

    {"gcs_bucket": "acme-exports", "gcs_expiration_days": 30,
     "cloud_run_url": "https://ferry-123456789012.europe-west1.run.app",
     "sftp": {...},
     "exports": {"product_data": {"query": "SELECT ... WHERE day = '{date}'",
                                  "format": "CSV", "compression": "GZIP"}}}

`{date}` in a query is the run's date, as a DATE (ferry reads it the same way).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import google.auth.transport.requests
import google.oauth2.id_token
import requests
from airflow import DAG
from airflow.exceptions import AirflowException
from airflow.models import Variable
from airflow.operators.python import PythonOperator
from airflow.providers.google.cloud.operators.bigquery import BigQueryInsertJobOperator
from airflow.utils.task_group import TaskGroup

log = logging.getLogger(__name__)

# The Variable holding ferry's config (the seed's name, so that an existing one serves).
CONFIG_VARIABLE = "sftp_export_config"
SLACK_VARIABLE = "slack_webhook_url"
# Run EXPORT DATA in Airflow before each transfer, as the seed did.
RUN_EXPORT_DATA = True
# How long to wait for ferry's answers. A transfer answers when every file was delivered; the
# service's own request timeout (deploy/service.sh: 3600 s) is longer.
TRANSFER_TIMEOUT_SECONDS = 1800
VERIFY_TIMEOUT_SECONDS = 300
# Longest excerpt of an answer quoted in an error.
EXCERPT = 2000


def run_folder(bucket: str, export_name: str) -> str:
    """The folder of one run's files, the gcs_path of its requests; Airflow renders `{{ ds_nodash }}`."""
    return f"gs://{bucket}/{export_name}/" + "{{ ds_nodash }}/"


def post(service_url: str, path: str, body: dict[str, Any], timeout: int) -> dict[str, Any]:
    """POSTs `body` to ferry with an ID token for the service URL; the answer's JSON object.

    Raises AirflowException on an answer other than 2xx, or one that is not a JSON object.
    """
    audience = service_url.rstrip("/")
    token = google.oauth2.id_token.fetch_id_token(google.auth.transport.requests.Request(), audience)
    response = requests.post(
        audience + path,
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=timeout,
    )
    if not 200 <= response.status_code < 300:
        raise AirflowException(f"POST {path} answered HTTP {response.status_code}: {response.text[:EXCERPT]}")
    try:
        answer = response.json()
    except ValueError as e:
        raise AirflowException(f"POST {path} answered HTTP {response.status_code} without JSON: {response.text[:EXCERPT]}") from e
    if not isinstance(answer, dict):
        raise AirflowException(f"POST {path} answered HTTP {response.status_code} with JSON that is not an object: {response.text[:EXCERPT]}")
    return answer


def transfer(service_url: str, export_name: str, gcs_path: str, date: str) -> dict[str, Any]:
    """Has ferry copy the files under `gcs_path` to SFTP; the answer goes to XCom.

    Safe to retry: ferry does not deliver again what it delivered from the same objects.
    """
    answer = post(
        service_url,
        "/transfer",
        {"export_name": export_name, "gcs_path": gcs_path, "date": date},
        TRANSFER_TIMEOUT_SECONDS,
    )
    if answer.get("status") != "success":
        raise AirflowException(f"transfer of {export_name} from {gcs_path} did not succeed: {answer}")
    log.info(
        "%s: %s file(s) transferred from %s to %s",
        export_name,
        answer.get("files_transferred"),
        gcs_path,
        answer.get("destination"),
    )
    return answer


def verify(service_url: str, export_name: str, gcs_path: str) -> dict[str, Any]:
    """Has ferry compare the files under `gcs_path` with what SFTP holds; the answer goes to XCom."""
    answer = post(service_url, "/verify", {"export_name": export_name, "gcs_path": gcs_path}, VERIFY_TIMEOUT_SECONDS)
    if answer.get("in_sync") is not True:
        raise AirflowException(
            f"{export_name}: SFTP is not in sync with {gcs_path}: "
            f"missing on SFTP {answer.get('missing_on_sftp')}, size mismatches {answer.get('size_mismatches')} ({answer})"
        )
    log.info("%s: %s file(s) in sync", export_name, answer.get("gcs_file_count"))
    return answer


def notify_slack(context: dict[str, Any]) -> None:
    """on_failure_callback: posts the failed task to Slack. Never raises."""
    url = Variable.get(SLACK_VARIABLE, default_var=None)
    if not url:
        log.warning("no Variable %s: no Slack notification", SLACK_VARIABLE)
        return
    ti = context.get("task_instance")
    where = f"{ti.dag_id}.{ti.task_id}" if ti else "a task"
    text = f":red_circle: {where} failed for {context.get('ds')}: {context.get('exception')}"
    if ti:
        text += f"\n{ti.log_url}"
    try:
        requests.post(url, json={"text": text}, timeout=30).raise_for_status()
    except requests.RequestException as e:
        log.error("the Slack notification failed: %s", e)


def sql_string(s: str) -> str:
    """A GoogleSQL string literal."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def export_data_sql(bucket: str, export_name: str, settings: dict[str, Any]) -> str:
    """The EXPORT DATA statement of one export, with Airflow's `{{ ds }}` and `{{ ds_nodash }}`."""
    fmt = str(settings.get("format", "CSV")).upper()
    compression = str(settings.get("compression", "GZIP")).upper()
    extension = {"CSV": "csv", "JSON": "json", "AVRO": "avro", "PARQUET": "parquet"}.get(fmt, fmt.lower())
    if compression == "GZIP" and fmt in ("CSV", "JSON"):
        extension += ".gz"
    options = [
        "uri=" + sql_string(f"{run_folder(bucket, export_name)}{export_name}-*.{extension}"),
        "format=" + sql_string(fmt),
        "overwrite=true",
    ]
    if compression != "NONE":
        options.append("compression=" + sql_string(compression))
    if fmt == "CSV":
        options.append("header=" + ("true" if settings.get("header", True) else "false"))
        if settings.get("delimiter"):
            options.append("field_delimiter=" + sql_string(str(settings["delimiter"])))
    if settings.get("query"):
        query = str(settings["query"]).strip().rstrip(";")
        query = query.replace("'{date}'", "DATE '{{ ds }}'").replace("{date}", "DATE '{{ ds }}'")
    elif settings.get("source_table"):
        columns = ", ".join(f"`{c}`" for c in settings.get("columns") or []) or "*"
        query = f"SELECT {columns} FROM `{settings['source_table']}`"
    else:
        raise ValueError(f"export {export_name}: no query and no source_table")
    return f"EXPORT DATA OPTIONS({', '.join(options)}) AS\n{query}"


# Read whenever Airflow parses this file, so that the groups follow the Variable.
config = Variable.get(CONFIG_VARIABLE, deserialize_json=True)
SERVICE_URL = config["cloud_run_url"]
BUCKET = config["gcs_bucket"]

with DAG(
    dag_id="ferry_staged_exports",
    description="BigQuery EXPORT DATA to GCS, then ferry's /transfer and /verify",
    schedule="0 6 * * *",
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "data",
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "on_failure_callback": notify_slack,
    },
    tags=["ferry", "sftp"],
) as dag:
    for name, settings in sorted(config["exports"].items()):
        with TaskGroup(group_id=name):
            path = run_folder(BUCKET, name)
            transfer_task = PythonOperator(
                task_id="transfer",
                python_callable=transfer,
                op_kwargs={"service_url": SERVICE_URL, "export_name": name, "gcs_path": path, "date": "{{ ds }}"},
                # requests' timeout bounds each wait for data, not the whole answer; this does.
                execution_timeout=timedelta(seconds=TRANSFER_TIMEOUT_SECONDS + 300),
            )
            verify_task = PythonOperator(
                task_id="verify",
                python_callable=verify,
                op_kwargs={"service_url": SERVICE_URL, "export_name": name, "gcs_path": path},
                execution_timeout=timedelta(seconds=VERIFY_TIMEOUT_SECONDS + 300),
            )
            if RUN_EXPORT_DATA:
                export_task = BigQueryInsertJobOperator(
                    task_id="export_data",
                    configuration={"query": {"query": export_data_sql(BUCKET, name, settings), "useLegacySql": False}},
                )
                export_task >> transfer_task
            transfer_task >> verify_task
