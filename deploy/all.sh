#!/usr/bin/env bash
# Everything, in order: IAM, the staging buckets, the service and its job, Pub/Sub, the
# schedules. Takes the flags of all of them. bucket.sh grants on the buckets to the identity
# iam.sh made, and sets their lifecycle before anything can stage a file there. service.sh
# deploys the job with the service, so that both run the same image and the job exists before
# Pub/Sub pushes anything.
# shellcheck source=deploy/lib.sh source-path=SCRIPTDIR/..
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_flags "$@"
[ -n "$IMAGE" ] || die "--image is required (or FERRY_IMAGE): service.sh deploys it"
here="$(dirname "${BASH_SOURCE[0]}")"
for step in iam bucket service pubsub scheduler; do
  echo "# ---- $step.sh"
  "$here/$step.sh" "$@"
done
