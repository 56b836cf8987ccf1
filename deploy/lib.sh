# shellcheck shell=bash disable=SC2034,SC2016
# (SC2034: the variables set here are read by the scripts that source this file;
#  SC2016: '${VAR}' is printed literally on purpose, see `lookup`.)
# Shared by the deploy scripts; sourced, not run.
#
# Every script takes the same flags (see `usage`), and every change it makes goes through `run`,
# so that `--dry-run` prints exactly the commands a real run executes, as a shell script that
# can be read, reviewed and run by hand. Values that only Google Cloud knows (the project
# number) are looked up with `lookup`; a dry run prints the lookup as a variable assignment and
# uses the variable in the commands that follow, so it needs neither credentials nor network.

set -euo pipefail

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$DEPLOY_DIR")"

DRY_RUN=0
REVISION_ONLY=0
PROJECT="${FERRY_PROJECT:-}"
REGION="${FERRY_REGION:-}"
SERVICE="${FERRY_SERVICE:-ferry}"
IMAGE="${FERRY_IMAGE:-}"
TOPIC="${FERRY_TOPIC:-ferry-trigger}"
CONFIG_DIR="${FERRY_CONFIG_DIR:-$REPO_DIR/configs}"
GITHUB_REPO="${FERRY_GITHUB_REPO:-}"
TASK_TIMEOUT="${FERRY_TASK_TIMEOUT:-24h}"
CALLER_ACCOUNT="${FERRY_CALLER_ACCOUNT:-}"
SECRETS=()
READ_DATASETS=()

usage() {
  cat <<'EOF'
Flags shared by every deploy script (environment variables in brackets):
  --project ID           Google Cloud project [FERRY_PROJECT] (required)
  --region REGION        Cloud Run, Scheduler and Artifact Registry region [FERRY_REGION] (required)
  --service NAME         Cloud Run service name [FERRY_SERVICE] (default ferry)
  --image REF            container image to deploy [FERRY_IMAGE] (service.sh)
  --topic NAME           Pub/Sub topic the schedules publish to [FERRY_TOPIC] (default ferry-trigger)
  --config-dir DIR       directory of ferry configs baked into the image [FERRY_CONFIG_DIR] (default configs/)
  --secret TARGET=NAME[:VERSION]
                         mount Secret Manager secret NAME as environment variable TARGET, or as a
                         file when TARGET starts with / (one secret per directory); repeatable
  --read-dataset PROJECT:DATASET
                         extra dataset the exports' queries read (tables named in source_table
                         are found in the configs); repeatable
  --github-repo OWNER/NAME
                         repository allowed to deploy through Workload Identity Federation [FERRY_GITHUB_REPO]
  --task-timeout DURATION
                         service.sh: how long one attempt of a job execution may run, in seconds or
                         with s, m or h (1s to 168h) [FERRY_TASK_TIMEOUT] (default 24h)
  --caller-account EMAIL service.sh: a service account (an Airflow worker's) whose ID tokens
                         POST /transfer and POST /verify accept besides the push account [FERRY_CALLER_ACCOUNT]
  --revision-only        service.sh: deploy a new revision and the job, and leave IAM alone (what CI does)
  --dry-run              print the commands, run nothing
  -h, --help             this text
EOF
}

die() {
  echo "deploy: $*" >&2
  exit 2
}

parse_flags() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --dry-run) DRY_RUN=1 ;;
      --revision-only) REVISION_ONLY=1 ;;
      -h | --help) usage; exit 0 ;;
      --project | --region | --service | --image | --topic | --config-dir | --secret | --read-dataset | --github-repo | --task-timeout | --caller-account)
        [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value"
        case "$1" in
          --project) PROJECT="$2" ;;
          --region) REGION="$2" ;;
          --service) SERVICE="$2" ;;
          --image) IMAGE="$2" ;;
          --topic) TOPIC="$2" ;;
          --config-dir) CONFIG_DIR="$2" ;;
          --secret) SECRETS+=("$2") ;;
          --read-dataset) READ_DATASETS+=("$2") ;;
          --github-repo) GITHUB_REPO="$2" ;;
          --task-timeout) TASK_TIMEOUT="$2" ;;
          --caller-account) CALLER_ACCOUNT="$2" ;;
        esac
        shift
        ;;
      *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
  done
  [ -n "$PROJECT" ] || die "--project is required (or FERRY_PROJECT)"
  [ -n "$REGION" ] || die "--region is required (or FERRY_REGION)"
  [[ "$PROJECT" =~ ^[a-z][a-z0-9-]{4,28}[a-z0-9]$ ]] || die "--project '$PROJECT' is not a Google Cloud project id"
  [[ "$REGION" =~ ^[a-z]+-[a-z]+[0-9]+$ ]] || die "--region '$REGION' is not a region name such as europe-west1"
  [[ "$SERVICE" =~ ^[a-z]([a-z0-9-]{0,47}[a-z0-9])?$ ]] || die "--service '$SERVICE' is not a Cloud Run service name"
  [[ "$TOPIC" =~ ^[A-Za-z][A-Za-z0-9._~%+-]{2,254}$ ]] || die "--topic '$TOPIC' is not a Pub/Sub topic name"
  local s
  for s in "${SECRETS[@]+"${SECRETS[@]}"}"; do
    [[ "$s" =~ ^(/[^=,]+|[A-Z_][A-Z0-9_]*)=[A-Za-z0-9_-]+(:([0-9]+|latest))?$ ]] ||
      die "--secret '$s' must be ENV_VAR=secret[:version] or /path/file=secret[:version]"
  done
  for s in "${READ_DATASETS[@]+"${READ_DATASETS[@]}"}"; do
    [[ "$s" =~ ^[a-z][a-z0-9-]+:[A-Za-z0-9_]+$ ]] || die "--read-dataset '$s' must be PROJECT:DATASET"
  done
  if [ -n "$GITHUB_REPO" ]; then
    [[ "$GITHUB_REPO" =~ ^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$ ]] || die "--github-repo '$GITHUB_REPO' must be OWNER/NAME"
  fi
  # Cloud Run's task timeout: 1 s to 168 h (7 days), in seconds, minutes or hours.
  local secs=0
  if [ -n "$CALLER_ACCOUNT" ] && ! [[ "$CALLER_ACCOUNT" =~ ^[a-z0-9._%+-]+@[a-z0-9.-]+$ ]]; then
    die "--caller-account '$CALLER_ACCOUNT' must be one service account's email"
  fi
  if [[ "$TASK_TIMEOUT" =~ ^([0-9]{1,6})([smh]?)$ ]]; then
    secs=$((10#${BASH_REMATCH[1]}))
    case "${BASH_REMATCH[2]}" in h) secs=$((secs * 3600)) ;; m) secs=$((secs * 60)) ;; esac
  fi
  [ "$secs" -ge 1 ] && [ "$secs" -le 604800 ] ||
    die "--task-timeout '$TASK_TIMEOUT' must be a duration from 1s to 168h, such as 24h, 90m or 3600s"
  RUNTIME_SA="${SERVICE}-runtime@${PROJECT}.iam.gserviceaccount.com"
  PUSH_SA="${SERVICE}-push@${PROJECT}.iam.gserviceaccount.com"
  DEPLOYER_SA="${SERVICE}-deployer@${PROJECT}.iam.gserviceaccount.com"
  REPOSITORY="${REGION}-docker.pkg.dev/${PROJECT}/${SERVICE}"
  # The Cloud Run Job that runs the exports the service hands off (`execution: "job"`).
  JOB="${SERVICE}-run"
  JOB_NAME="projects/${PROJECT}/locations/${REGION}/jobs/${JOB}"
}

# Quote one word for the printed script. Words holding a looked-up `${VAR}` are double-quoted
# so that the variable expands when the printed script is run.
quote() {
  local w="$1"
  if [[ "$w" =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then
    printf '%s' "$w"
  elif [[ "$w" == *'${'* ]]; then
    w="${w//\\/\\\\}"
    w="${w//\"/\\\"}"
    w="${w//\`/\\\`}"
    printf '"%s"' "$w"
  else
    printf "'%s'" "${w//\'/\'\\\'\'}"
  fi
}

print_command() {
  local out="" w
  for w in "$@"; do out+="$(quote "$w") "; done
  printf '%s\n' "${out% }"
}

# Run a command that changes something; a dry run prints it instead.
run() {
  print_command "$@"
  if [ "$DRY_RUN" = 0 ]; then "$@"; fi
}

# Run a command unless the thing it creates exists: `ensure DESCRIBE... -- CREATE...`.
# A dry run prints the creation with the check as a comment, since it cannot ask.
ensure() {
  local describe=()
  while [ "$1" != -- ]; do describe+=("$1"); shift; done
  shift
  if [ "$DRY_RUN" = 1 ]; then
    echo "# unless it exists: $(print_command "${describe[@]}")"
    print_command "$@"
  elif "${describe[@]}" >/dev/null 2>&1; then
    echo "# exists: $(print_command "${describe[@]}")"
  else
    run "$@"
  fi
}

# `upsert DESCRIBE... -- CREATE... -- UPDATE...`: update what exists, create what does not.
# A dry run prints the creation, with the update as a comment.
upsert() {
  local describe=() create=()
  while [ "$1" != -- ]; do describe+=("$1"); shift; done
  shift
  while [ "$1" != -- ]; do create+=("$1"); shift; done
  shift
  if [ "$DRY_RUN" = 1 ]; then
    echo "# if it exists, instead: $(print_command "$@")"
    print_command "${create[@]}"
  elif "${describe[@]}" >/dev/null 2>&1; then
    run "$@"
  else
    run "${create[@]}"
  fi
}

# `lookup VAR COMMAND...` sets VAR to the command's output; a dry run prints the assignment and
# sets VAR to the literal `${VAR}`.
lookup() {
  local var="$1"
  shift
  if [ "$DRY_RUN" = 1 ]; then
    echo "$var=\"\$($(print_command "$@"))\""
    printf -v "$var" '${%s}' "$var"
  else
    local value
    value="$("$@")" || die "lookup of $var failed: $(print_command "$@")"
    [ -n "$value" ] || die "lookup of $var returned nothing: $(print_command "$@")"
    printf -v "$var" '%s' "$value"
    echo "$var=$(quote "$value")"
  fi
}

# `scratch_dir VAR` sets VAR to a new temporary directory, removed when the script exits. Like
# `lookup`, a dry run prints the assignment (and the removal) and sets VAR to the literal `${VAR}`;
# a real run prints the directory it made.
scratch_dir() {
  local var="$1"
  if [ "$DRY_RUN" = 1 ]; then
    echo "$var=\"\$(mktemp -d)\""
    echo "trap 'rm -rf \"\$$var\"' EXIT"
    printf -v "$var" '${%s}' "$var"
  else
    local dir
    dir="$(mktemp -d)" || die "cannot make a temporary directory"
    # shellcheck disable=SC2064 # the path is expanded now, on purpose
    trap "rm -rf $(quote "$dir")" EXIT
    printf -v "$var" '%s' "$dir"
    echo "$var=$(quote "$dir")"
  fi
}

# `write_file PATH CONTENT` writes CONTENT (and a newline) to PATH, a file of a `scratch_dir`.
# Both runs print it as a here-document, so that a dry run shows what the file will hold and its
# printed script writes the same file.
write_file() {
  local path="$1" content="$2"
  [[ $'\n'"$content"$'\n' != *$'\n'EOF$'\n'* ]] || die "cannot print $path: a line of it reads EOF"
  echo "cat >$(quote "$path") <<'EOF'"
  printf '%s\nEOF\n' "$content"
  if [ "$DRY_RUN" = 0 ]; then printf '%s\n' "$content" >"$path"; fi
}

need() {
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || die "'$c' is not installed; it is needed here"
  done
}

# `config_values JQ_FILTER`: the filter's output lines over every config (with $project and
# $service bound), or exit naming the file it cannot read. Called as `x=$(config_values …)`,
# so that the exit stops the script before it changes anything.
config_values() {
  local file
  while IFS=$'\t' read -r _ file; do
    jq -r --arg project "$PROJECT" --arg service "$SERVICE" "$1" "$file" || die "cannot read $file (is it JSON? ferry check tells more)"
  done < <(config_files)
}

# The configs the image carries: one `NAME<TAB>PATH` line per configs/NAME.json.
config_files() {
  local f
  shopt -s nullglob
  for f in "$CONFIG_DIR"/*.json; do
    case "$f" in *.schema.json) continue ;; esac
    printf '%s\t%s\n' "$(basename "$f" .json)" "$f"
  done
  shopt -u nullglob
}
