#!/usr/bin/env bash
# One Cloud Scheduler job per entry of `schedules` in each config under --config-dir:
#
#   "schedules": [{"name": "nightly", "cron": "0 2 * * *", "time_zone": "Europe/Berlin",
#                  "exports": ["orders"], "full": false}]
#
# Job `<service>-<config>-<name>` publishes {"config": "<config>", ...} to the trigger topic
# at that time; `exports` and `full` are passed on when given. `ferry check` validates the
# entries. Jobs are created or updated; jobs this script did not define are left alone.
# shellcheck source=deploy/lib.sh source-path=SCRIPTDIR/..
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_flags "$@"
need gcloud jq

found=0
while IFS=$'\t' read -r config file; do
  while IFS=$'\t' read -r name cron tz body; do
    found=$((found + 1))
    job="${SERVICE}-${config}-${name}"
    flags=(--project="$PROJECT" --location="$REGION" --schedule="$cron" --time-zone="$tz"
      --topic="$TOPIC" --message-body="$body")
    if [ "$DRY_RUN" = 0 ] && gcloud scheduler jobs describe "$job" --project="$PROJECT" --location="$REGION" >/dev/null 2>&1; then
      run gcloud scheduler jobs update pubsub "$job" "${flags[@]}"
    else
      [ "$DRY_RUN" = 0 ] || echo "# 'update' instead of 'create' if the job exists"
      run gcloud scheduler jobs create pubsub "$job" "${flags[@]}"
    fi
  done < <(jq -r --arg config "$config" '
    (.schedules // [])[] |
    [.name, .cron, (.time_zone // "Etc/UTC"),
     ({config: $config} + (if .exports then {exports} else {} end) + (if .full then {full: true} else {} end) | tojson)]
    | @tsv' "$file" || die "cannot read schedules from $file")
done < <(config_files)
[ "$found" -gt 0 ] || echo "# no config under $CONFIG_DIR has \"schedules\"; nothing to schedule" >&2
