#!/usr/bin/env bash
# Deploy (or update) the Cloud Run service from an image.
#
# The service is private (no unauthenticated calls): only the push identity may invoke it, and
# ferry itself checks the push request's OIDC token again (audience = the service URL, email =
# the push identity). Secrets are mounted from Secret Manager with --secret; the configs are
# baked into the image at /app/configs.
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

run gcloud run deploy "$SERVICE" --project="$PROJECT" --region="$REGION" --image="$IMAGE" \
  --service-account="$RUNTIME_SA" --no-allow-unauthenticated \
  --cpu=1 --memory=512Mi --concurrency=4 --max-instances=3 --timeout=3600 \
  --set-env-vars="FERRY_PUSH_AUDIENCE=${SERVICE_URL},FERRY_PUSH_SERVICE_ACCOUNT=${PUSH_SA},GOOGLE_CLOUD_PROJECT=${PROJECT}" \
  "${secret_flags[@]+"${secret_flags[@]}"}" --quiet
# Only the push identity may call the service. CI (--revision-only) cannot and need not set IAM.
if [ "$REVISION_ONLY" = 0 ]; then
  run gcloud run services add-iam-policy-binding "$SERVICE" --project="$PROJECT" --region="$REGION" \
    --member="serviceAccount:${PUSH_SA}" --role=roles/run.invoker --quiet
fi
