#!/usr/bin/env bash
# Deploy (or update) the Cloud Run service, and the Cloud Run Job that runs its long exports,
# from one image.
#
# The service is private (no unauthenticated calls): only the push identity may invoke it, and
# ferry itself checks the push request's OIDC token again (audience = the service URL, email =
# the push identity). Secrets are mounted from Secret Manager with --secret; the configs are
# baked into the image at /app/configs.
#
# The job <service>-run is the same image with `run` as its arguments, the same variables,
# secrets and identity, one task, 3 retries and --task-timeout (24h by default). For an export
# with `"execution": "job"` the service starts an execution of it with the run's own arguments
# (`run --config … --export … --date … --message-id …`), so the job is deployed first and with
# the same image: an execution always knows the exports of the service that started it, and CI's
# --revision-only deployment keeps the two in step. The service finds the job through
# FERRY_CLOUD_RUN_JOB.
# shellcheck source=deploy/lib.sh source-path=SCRIPTDIR/..
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_flags "$@"
[ -n "$IMAGE" ] || die "--image is required (or FERRY_IMAGE), e.g. ${REPOSITORY}/ferry:TAG"
need gcloud

lookup PROJECT_NUMBER gcloud projects describe "$PROJECT" --format=value\(projectNumber\)
# Cloud Run's deterministic URL for the service; Pub/Sub uses it as endpoint and audience.
SERVICE_URL="https://${SERVICE}-${PROJECT_NUMBER}.${REGION}.run.app"

secret_flags=()
if [ "${#SECRETS[@]}" -gt 0 ]; then
  joined=""
  for s in "${SECRETS[@]}"; do
    case "$s" in *:*) ;; *) s="$s:latest" ;; esac
    joined+="${joined:+,}$s"
  done
  secret_flags=(--set-secrets="$joined")
fi
# The job gets the service's variables, so that a run reads the same settings in either place,
# and waits up to 5 minutes (not 8 s) for the lease of an export another run is delivering: its
# message is acknowledged, so a busy attempt costs a task retry, and the last one is a failure.
env_vars="FERRY_PUSH_AUDIENCE=${SERVICE_URL},FERRY_PUSH_SERVICE_ACCOUNT=${PUSH_SA},GOOGLE_CLOUD_PROJECT=${PROJECT},FERRY_CLOUD_RUN_JOB=${JOB_NAME}"
# An Airflow worker that calls /transfer and /verify (deploy/airflow/).
if [ -n "$CALLER_ACCOUNT" ]; then env_vars+=",FERRY_CALLER_SERVICE_ACCOUNTS=${CALLER_ACCOUNT}"; fi

run gcloud run jobs deploy "$JOB" --project="$PROJECT" --region="$REGION" --image="$IMAGE" \
  --service-account="$RUNTIME_SA" --args=run \
  --tasks=1 --max-retries=3 --task-timeout="$TASK_TIMEOUT" --cpu=1 --memory=512Mi \
  --set-env-vars="$env_vars,FERRY_LEASE_WAIT_SECONDS=300" \
  "${secret_flags[@]+"${secret_flags[@]}"}" --quiet
run gcloud run deploy "$SERVICE" --project="$PROJECT" --region="$REGION" --image="$IMAGE" \
  --service-account="$RUNTIME_SA" --no-allow-unauthenticated \
  --cpu=1 --memory=512Mi --concurrency=4 --max-instances=3 --timeout=3600 \
  --set-env-vars="$env_vars" \
  "${secret_flags[@]+"${secret_flags[@]}"}" --quiet
# Only the push identity (and --caller-account) may call the service; only the runtime identity
# (the service's) may start executions of the job, with overrides. CI (--revision-only) cannot
# and need not set IAM.
if [ "$REVISION_ONLY" = 0 ]; then
  run gcloud run services add-iam-policy-binding "$SERVICE" --project="$PROJECT" --region="$REGION" \
    --member="serviceAccount:${PUSH_SA}" --role=roles/run.invoker --quiet
  if [ -n "$CALLER_ACCOUNT" ]; then
    run gcloud run services add-iam-policy-binding "$SERVICE" --project="$PROJECT" --region="$REGION" \
      --member="serviceAccount:${CALLER_ACCOUNT}" --role=roles/run.invoker --quiet
  fi
  run gcloud run jobs add-iam-policy-binding "$JOB" --project="$PROJECT" --region="$REGION" \
    --member="serviceAccount:${RUNTIME_SA}" --role=roles/run.jobsExecutorWithOverrides --quiet
fi
