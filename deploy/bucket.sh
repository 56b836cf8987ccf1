#!/usr/bin/env bash
# The staging buckets of staged exports: how long what is staged in them lives, and the runtime
# identity's access to it. Reads the configs under --config-dir:
#
#   "staging": {"bucket": "acme-staging", "prefix": "ferry/", "expiration_days": 30,
#               "cleanup": "keep"}
#
# BigQuery's EXPORT DATA writes a run's files under gs://BUCKET/PREFIX<export>/<YYYYMMDD>/<run id>/
# ("ferry/" when no prefix is given), and ferry copies them to SFTP. With expiration_days, the
# bucket's lifecycle configuration deletes the objects under PREFIX that many days after they
# were written. The older form of config ("gcs_bucket", "gcs_expiration_days") has no prefix, and
# its callers' own EXPORT DATA put files anywhere in the bucket (POST /transfer names them), so
# its rule covers the whole bucket, whatever else it holds.
#
# A bucket has one lifecycle configuration, and this script sets it whole, with one Delete rule
# per prefix from every config that names the bucket and gives an expiration: rules set on the
# bucket in another way are replaced. A bucket no config gives an expiration keeps its lifecycle
# configuration as it is. Configs whose rules would cut each other short (one prefix with two
# expirations, or a shorter one on a prefix holding another config's prefix, such as the whole
# bucket) stop the script before it changes anything. The buckets must exist: where they are
# (BigQuery exports only to a bucket colocated with the dataset) and what else they hold are the
# owner's choice, so this script creates none.
#
# The runtime identity gets roles/storage.objectAdmin on each bucket (not on the project): ferry's
# staged sources run EXPORT DATA as this identity, in either form of config, and a BigQuery
# export needs storage.objects.create and storage.objects.delete; ferry lists and reads the
# files to copy them, and deletes them with "cleanup": "after_delivery". objectViewer would
# only read, and objectCreator would not delete: objectAdmin is the one predefined role holding
# all of these, so "cleanup" changes nothing here. The grants need the identity iam.sh makes.
# jq filters are single-quoted on purpose.
# shellcheck source=deploy/lib.sh source-path=SCRIPTDIR/.. disable=SC2016
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_flags "$@"
need gcloud jq

# One JSON object per config with a staging bucket: {file, bucket, prefix, days}. A prefix
# ends with `/`, as ferry reads it; "" is the whole bucket.
entries=$(config_values '(input_filename | split("/") | last) as $file |
  if (.staging | type) == "object" then
    {bucket: .staging.bucket, prefix: (.staging.prefix // "ferry/"), days: .staging.expiration_days}
    | if (.prefix | type) == "string" and .prefix != "" and (.prefix | endswith("/") | not) then .prefix += "/" else . end
  elif .gcs_bucket != null then {bucket: .gcs_bucket, prefix: "", days: .gcs_expiration_days}
  else empty end | . + {file: $file} | tojson')
[ -n "$entries" ] || { echo "# no config under $CONFIG_DIR has a staging bucket; nothing to do" >&2; exit 0; }

problem=$(jq -rs '
  def where: "gs://\(.bucket)/\(.prefix)";
  [.[] |
    (select((.bucket | type) != "string" or (.bucket | test("^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$") | not)
            or (.bucket | contains("..")))
     | "\(.file): the staging bucket \(.bucket | tojson) is not a bucket name (no gs://, no path)"),
    (select((.prefix | type) != "string") | "\(.file): the staging prefix \(.prefix | tojson) is not a string"),
    (select(.days != null and ((.days | type) != "number" or .days < 1 or .days > 3650 or .days != (.days | floor)))
     | "\(.file): the expiration \(.days | tojson) is not a whole number of days from 1 to 3650")] as $bad |
  if $bad != [] then $bad[0] else
    [[.[] | select(.days != null)] | group_by(.bucket)[] | .[] as $a | .[] as $b
     | select($a.days < $b.days and ($b.prefix | startswith($a.prefix)))
     | "\($a.file) deletes what is under \($a | where) after \($a.days) days, so what \($b.file) stages under \($b | where) would not last its \($b.days) days: give them one expiration, or prefixes apart"][0] // empty
  end' <<<"$entries")
[ -z "$problem" ] || die "$problem"

# One `bucket<TAB>lifecycle` line per bucket; the lifecycle is `-` when no config gives the
# bucket an expiration.
plan=$(jq -rs 'group_by(.bucket)[] |
  ([.[] | select(.days != null)] | group_by(.prefix) | map({action: {type: "Delete"},
     condition: ({age: .[0].days} + (if .[0].prefix == "" then {} else {matchesPrefix: [.[0].prefix]} end))})) as $rules |
  [.[0].bucket, (if $rules == [] then "-" else {rule: $rules} | tojson end)] | join("\t")' <<<"$entries")

# The lifecycle files are written to a temporary directory, which a dry run prints as a variable.
scratch=0
while IFS=$'\t' read -r -u 3 bucket lifecycle; do
  run gcloud storage buckets add-iam-policy-binding "gs://${bucket}" --member="serviceAccount:${RUNTIME_SA}" \
    --role=roles/storage.objectAdmin --condition=None --quiet
  if [ "$lifecycle" = - ]; then
    echo "# gs://${bucket}: no config gives an expiration; its lifecycle configuration is left as it is"
    continue
  fi
  [ "$scratch" = 1 ] || { scratch_dir LIFECYCLE_DIR; scratch=1; }
  # One rule a line.
  write_file "${LIFECYCLE_DIR}/${bucket}.json" "$(jq -r '"{\"rule\": [\n  \(.rule | map(tojson) | join(",\n  "))\n]}"' <<<"$lifecycle")"
  run gcloud storage buckets update "gs://${bucket}" --lifecycle-file="${LIFECYCLE_DIR}/${bucket}.json"
done 3<<<"$plan"
