#!/usr/bin/env bash
# The trigger topic, a dead-letter topic, and the push subscription that calls the service.
#
# Pub/Sub redelivers on any non-2xx answer. ferry answers 2xx for a message it will never be
# able to run (malformed, unknown config) and non-2xx for one worth retrying, so the retry
# policy backs off up to 10 minutes, and after 5 attempts the message goes to the dead-letter
# topic instead of looping. The ack deadline (600 s), the longest Pub/Sub allows, is how long an
# inline run may take; an export that may take longer runs as a job execution (`"execution":
# "job"`), and its push is answered as soon as the execution has started.
# shellcheck source=deploy/lib.sh source-path=SCRIPTDIR/..
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_flags "$@"
need gcloud

lookup PROJECT_NUMBER gcloud projects describe "$PROJECT" --format=value\(projectNumber\)
SERVICE_URL="https://${SERVICE}-${PROJECT_NUMBER}.${REGION}.run.app"
PUBSUB_AGENT="service-${PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"
DEAD="${TOPIC}-dead-letter"
SUBSCRIPTION="${SERVICE}-push"

for t in "$TOPIC" "$DEAD"; do
  ensure gcloud pubsub topics describe "$t" --project="$PROJECT" -- \
    gcloud pubsub topics create "$t" --project="$PROJECT"
done
ensure gcloud pubsub subscriptions describe "${DEAD}-hold" --project="$PROJECT" -- \
  gcloud pubsub subscriptions create "${DEAD}-hold" --project="$PROJECT" --topic="$DEAD" --message-retention-duration=7d

push_flags=(--project="$PROJECT" --push-endpoint="${SERVICE_URL}/"
  --push-auth-service-account="$PUSH_SA" --push-auth-token-audience="$SERVICE_URL"
  --ack-deadline=600 --min-retry-delay=30s --max-retry-delay=600s
  --dead-letter-topic="$DEAD" --max-delivery-attempts=5)
upsert gcloud pubsub subscriptions describe "$SUBSCRIPTION" --project="$PROJECT" -- \
  gcloud pubsub subscriptions create "$SUBSCRIPTION" --topic="$TOPIC" "${push_flags[@]}" -- \
  gcloud pubsub subscriptions update "$SUBSCRIPTION" "${push_flags[@]}"
# Dead-lettering needs the Pub/Sub service agent to publish to the dead-letter topic and to
# acknowledge on the subscription.
run gcloud pubsub topics add-iam-policy-binding "$DEAD" --project="$PROJECT" \
  --member="serviceAccount:${PUBSUB_AGENT}" --role=roles/pubsub.publisher --quiet
run gcloud pubsub subscriptions add-iam-policy-binding "$SUBSCRIPTION" --project="$PROJECT" \
  --member="serviceAccount:${PUBSUB_AGENT}" --role=roles/pubsub.subscriber --quiet
