#!/usr/bin/env bash
# Everything, in order: IAM, the service, Pub/Sub, the schedules. Takes the flags of all of them.
# shellcheck source=deploy/lib.sh source-path=SCRIPTDIR/..
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_flags "$@"
[ -n "$IMAGE" ] || die "--image is required (or FERRY_IMAGE): service.sh deploys it"
here="$(dirname "${BASH_SOURCE[0]}")"
for step in iam service pubsub scheduler; do
  echo "# ---- $step.sh"
  "$here/$step.sh" "$@"
done
