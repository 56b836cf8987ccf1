#!/usr/bin/env bash
# Service accounts and the least IAM they need. Safe to run again.
#
#   <service>-runtime   the identity ferry runs as on Cloud Run
#     roles/bigquery.jobUser             (project)  run query jobs
#     roles/bigquery.readSessionUser     (project)  create Storage Read sessions (read_api: storage)
#     roles/bigquery.dataViewer          (each source dataset, from the configs' BigQuery sources,
#                                         staged ones (bigquery_export) too, and --read-dataset)
#                                         read the exported tables
#     roles/bigquery.dataEditor          (the metadata dataset, from metadata_table)  create the
#                                         metadata table, append run rows, take run leases
#     roles/secretmanager.secretAccessor (each --secret)  read the mounted secrets
#     roles/run.jobsExecutorWithOverrides (the job <service>-run only; granted by service.sh once it
#                                         exists)  start executions of it with a run's arguments; it
#                                         cannot read executions, and ferry never does: the
#                                         outcome is in the metadata table
#     roles/storage.objectAdmin          (each staging bucket, "staging.bucket" or "gcs_bucket";
#                                         granted by bucket.sh)  EXPORT DATA into it (a BigQuery
#                                         export creates and deletes objects), read the staged
#                                         files, delete them after delivery
#   <service>-push      the identity Pub/Sub signs push requests as (OIDC token)
#     roles/run.invoker                  (the service only; granted by service.sh once it exists)
#   Pub/Sub service agent
#     roles/iam.serviceAccountTokenCreator (on <service>-push)  mint the push OIDC tokens
#   <service>-deployer  the identity GitHub Actions deploys as (see github-wif.sh)
#     roles/run.developer                (project)  deploy new revisions and update the job
#     roles/iam.serviceAccountUser       (on <service>-runtime)  run revisions and the job as it
#     roles/artifactregistry.writer      (the image repository)  push images
# Cloud Scheduler needs nothing: it publishes to a topic of its own project as its service agent.
# Starting a job execution as <service>-runtime needs no iam.serviceAccounts.actAs in our reading:
# the jobs.run reference asks for run.jobs.run and run.jobs.runWithOverrides only, and actAs for
# creating or updating a job (not yet confirmed on a live project).
# jq filters are single-quoted on purpose.
# shellcheck source=deploy/lib.sh source-path=SCRIPTDIR/.. disable=SC2016
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_flags "$@"
need gcloud bq jq

# `project:dataset` of a `dataset.table` or `project.dataset.table` name.
ds='def ds: split(".") | if length == 3 then "\(.[0]):\(.[1])" elif length == 2 then "\($project):\(.[0])" else empty end;'
source_datasets=$(config_values "$ds"' .exports[] | select(.enabled != false) | (.source_table // (.source | objects | select(.type == "bigquery" or .type == "bigquery_export") | .table) // empty) | ds')
# A config without metadata_table records runs in ferry's default table, ferry.export_runs.
metadata_datasets=$(config_values "$ds"' (.metadata_table // "ferry.export_runs") | ds')
default_datasets=$(config_values "$ds"' select(.metadata_table == null) | "ferry.export_runs" | ds')

lookup PROJECT_NUMBER gcloud projects describe "$PROJECT" --format=value\(projectNumber\)

for sa in runtime push deployer; do
  ensure gcloud iam service-accounts describe "${SERVICE}-${sa}@${PROJECT}.iam.gserviceaccount.com" --project="$PROJECT" -- \
    gcloud iam service-accounts create "${SERVICE}-${sa}" --project="$PROJECT" --display-name="ferry ${sa}"
done

run gcloud projects add-iam-policy-binding "$PROJECT" --member="serviceAccount:${RUNTIME_SA}" \
  --role=roles/bigquery.jobUser --condition=None --quiet
run gcloud projects add-iam-policy-binding "$PROJECT" --member="serviceAccount:${RUNTIME_SA}" \
  --role=roles/bigquery.readSessionUser --condition=None --quiet
while read -r ds; do
  [ -n "$ds" ] || continue
  run bq add-iam-policy-binding --member="serviceAccount:${RUNTIME_SA}" --role=roles/bigquery.dataViewer "$ds"
done < <({ echo "$source_datasets"; printf '%s\n' "${READ_DATASETS[@]+"${READ_DATASETS[@]}"}"; } | sort -u)
# The default table's dataset is made here, so that it can be granted (ferry would make it too).
while read -r ds; do
  [ -n "$ds" ] || continue
  ensure bq show --dataset "$ds" -- bq mk --dataset "$ds"
done < <(echo "$default_datasets" | sort -u)
while read -r ds; do
  [ -n "$ds" ] || continue
  run bq add-iam-policy-binding --member="serviceAccount:${RUNTIME_SA}" --role=roles/bigquery.dataEditor "$ds"
done < <(echo "$metadata_datasets" | sort -u)
for s in "${SECRETS[@]+"${SECRETS[@]}"}"; do
  secret="${s#*=}"
  secret="${secret%%:*}"
  run gcloud secrets add-iam-policy-binding "$secret" --project="$PROJECT" \
    --member="serviceAccount:${RUNTIME_SA}" --role=roles/secretmanager.secretAccessor --condition=None --quiet
done

run gcloud iam service-accounts add-iam-policy-binding "$PUSH_SA" --project="$PROJECT" \
  --member="serviceAccount:service-${PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com" \
  --role=roles/iam.serviceAccountTokenCreator --condition=None --quiet

run gcloud projects add-iam-policy-binding "$PROJECT" --member="serviceAccount:${DEPLOYER_SA}" \
  --role=roles/run.developer --condition=None --quiet
run gcloud iam service-accounts add-iam-policy-binding "$RUNTIME_SA" --project="$PROJECT" \
  --member="serviceAccount:${DEPLOYER_SA}" --role=roles/iam.serviceAccountUser --condition=None --quiet
ensure gcloud artifacts repositories describe "$SERVICE" --project="$PROJECT" --location="$REGION" -- \
  gcloud artifacts repositories create "$SERVICE" --project="$PROJECT" --location="$REGION" --repository-format=docker
run gcloud artifacts repositories add-iam-policy-binding "$SERVICE" --project="$PROJECT" --location="$REGION" \
  --member="serviceAccount:${DEPLOYER_SA}" --role=roles/artifactregistry.writer --quiet
