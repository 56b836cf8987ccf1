#!/usr/bin/env bash
# One Cloud Scheduler job per entry of `schedules` in each config under --config-dir:
#
#   "schedules": [{"name": "nightly", "cron": "0 2 * * *", "time_zone": "Europe/Berlin",
#                  "exports": ["orders"], "full": false}]
#
# Job `<service>-<config>-<name>` publishes {"config": "<config>", ...} to the trigger topic
# at that time; `exports` and `full` are passed on when given. `ferry check` validates the
# entries. Jobs are created or updated; jobs this script did not define are left alone.
# jq filters are single-quoted on purpose.
# shellcheck source=deploy/lib.sh source-path=SCRIPTDIR/.. disable=SC2016
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_flags "$@"
need gcloud jq

# One `job<TAB>cron<TAB>time zone<TAB>message` line per schedule entry.
jobs=$(config_values '(input_filename | split("/") | last | rtrimstr(".json")) as $config |
  (.schedules // [])[] |
  ["\($service)-\($config)-\(.name)", .cron, (.time_zone // "Etc/UTC"),
   ({config: $config} + (if .exports then {exports} else {} end) + (if .full then {full: true} else {} end) | tojson)]
  | @tsv')
[ -n "$jobs" ] || { echo "# no config under $CONFIG_DIR has \"schedules\"; nothing to schedule" >&2; exit 0; }
while IFS=$'\t' read -r job cron tz body; do
  flags=(--project="$PROJECT" --location="$REGION" --schedule="$cron" --time-zone="$tz" --topic="$TOPIC" --message-body="$body")
  upsert gcloud scheduler jobs describe "$job" --project="$PROJECT" --location="$REGION" -- \
    gcloud scheduler jobs create pubsub "$job" "${flags[@]}" -- \
    gcloud scheduler jobs update pubsub "$job" "${flags[@]}"
done <<<"$jobs"
