#!/usr/bin/env bash
# Build deploy/Dockerfile with podman and run `ferry --version` and `ferry check` in the image;
# then prove, with a real export on the local stack (dev/stack up), that the binary in the image
# ignores FERRY_FAILPOINTS, which a build with the `failpoints` feature honours.
#
# The machines this runs on reach no container registry, so the two base images are stood in
# for: the runtime base by a root file system holding only the binary's own shared libraries,
# CA certificates and a `nonroot` user (what distroless/cc provides), and the build stage by
# the binary cargo already built (FERRY_BINARY). Everything after the bases is the Dockerfile
# as deployed: paths, user, entrypoint, baked configs.
#
# The binary should be built as the Dockerfile builds it (cargo build --release --locked -p ferry);
# the second one, the control, with failpoints (cargo build --workspace enables them).
#
# usage: deploy/test-image.sh [path/to/ferry [path/to/ferry-with-failpoints]]
#        (default target/release/ferry and target/debug/ferry)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin="${1:-target/release/ferry}"
control="${2:-target/debug/ferry}"
[ -x "$bin" ] || { echo "test-image: no ferry binary at $bin; build it first" >&2; exit 2; }
[ -x "$control" ] || { echo "test-image: no ferry binary with failpoints at $control; build it first" >&2; exit 2; }
stack_env="$(dev/stack env)" || { echo "test-image: the local stack is needed (dev/stack up)" >&2; exit 2; }
eval "$stack_env"

if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "test-image: podman and runc are needed (apt-get install podman runc)" >&2; exit 2; }
  echo "[image] installing podman and runc"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends podman runc >/dev/null
fi
# This machine's sandbox allows neither crun's cgroup handling nor raising rlimits.
podman=(podman --runtime runc --cgroup-manager cgroupfs)
limits=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Runtime base: the binary's libraries (ldd), CA certificates, passwd/group with nonroot.
root="$work/root"
mkdir -p "$root/etc/ssl/certs" "$root/tmp"
chmod 1777 "$root/tmp"
ldd "$bin" | grep -o '/[^ ]*' | sort -u | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/" 2>/dev/null || true
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
tar -C "$root" -c . | "${podman[@]}" import --quiet - localhost/ferry-test-runtime:latest >/dev/null

# The build stage's output: /out/ferry.
mkdir -p "$work/binary/out"
cp "$bin" "$work/binary/out/ferry"
tar -C "$work/binary" -c out | "${podman[@]}" import --quiet - localhost/ferry-test-binary:latest >/dev/null

echo "[image] podman build -f deploy/Dockerfile"
"${podman[@]}" build --quiet -f deploy/Dockerfile \
  --build-arg RUNTIME_IMAGE=localhost/ferry-test-runtime:latest \
  --build-arg FERRY_BINARY=localhost/ferry-test-binary:latest \
  -t localhost/ferry:test . >/dev/null

fail() {
  echo "test-image: $*" >&2
  exit 1
}
user="$("${podman[@]}" image inspect --format '{{.Config.User}}' localhost/ferry:test)"
[ "$user" = "65532:65532" ] || fail "image user is '$user', expected 65532:65532 (non-root)"
cmd="$("${podman[@]}" image inspect --format '{{json .Config.Entrypoint}} {{json .Config.Cmd}}' localhost/ferry:test)"
[ "$cmd" = '["/usr/local/bin/ferry"] ["serve"]' ] || fail "entrypoint/cmd is $cmd"

version="$("${podman[@]}" run --rm --network=none "${limits[@]}" localhost/ferry:test --version)"
expected="$("$bin" --version)"
[ "$version" = "$expected" ] || fail "ferry --version in the image printed '$version', expected '$expected'"
echo "[image] ferry --version in the image: $version"

# The baked configs are where the service looks for them, and validate inside the image as
# its user; the default one is what `ferry check` finds without --config.
"${podman[@]}" run --rm --network=none "${limits[@]}" localhost/ferry:test check --no-secrets >"$work/check.out" ||
  fail "ferry check --no-secrets of the default config failed in the image: $(cat "$work/check.out")"
grep -q '^/app/configs/default.json: ok' "$work/check.out" || fail "unexpected check output: $(cat "$work/check.out")"
for f in configs/examples/*.json; do
  "${podman[@]}" run --rm --network=none "${limits[@]}" localhost/ferry:test --config "/app/$f" check --no-secrets >/dev/null ||
    fail "ferry check --no-secrets /app/$f failed in the image"
done

size="$("${podman[@]}" image inspect --format '{{.Size}}' localhost/ferry:test)"
base="$("${podman[@]}" image inspect --format '{{.Size}}' localhost/ferry-test-runtime:latest)"
echo "[image] ok: runs as 65532, baked configs check; $((size / 1048576)) MiB with the stand-in base, $(((size - base) / 1048576)) MiB of it ferry's layers"

# FERRY_FAILPOINTS is for tests only. The same export runs twice with a failpoint armed that
# fails a run after the upload, before the file is published: the control (failpoints compiled
# in) must fail there and deliver nothing, which shows the setting would bite if honoured; the
# binary in the image must then deliver the file and record success as if it were not set.
# It runs on this machine, not in the container (which has no network here): it is the same file.
name="failpoints_$(date +%s)_$$"
dir="$FERRY_SFTP_ROOT/$name"
mkdir -p "$dir"
chmod 777 "$dir"
trap 'rm -rf "$work" "$dir"' EXIT
curl -sSf -o /dev/null -X POST "$FERRY_BQ_ENDPOINT/bigquery/v2/projects/$FERRY_BQ_PROJECT/datasets" \
  -H 'Content-Type: application/json' -d "{\"datasetReference\":{\"projectId\":\"$FERRY_BQ_PROJECT\",\"datasetId\":\"$name\"}}" ||
  fail "creating dataset $name in the BigQuery emulator"
dev/bq "CREATE TABLE $name.orders (id INT64, updated_at TIMESTAMP)" >/dev/null
dev/bq "INSERT INTO $name.orders VALUES (1, TIMESTAMP '2026-01-01 00:00:00+00'), (2, TIMESTAMP '2026-01-02 00:00:00+00')" >/dev/null
cat >"$work/failpoints.json" <<JSON
{
  "exports": [{"name": "orders", "source_table": "$name.orders", "destination_filename": "orders_{datetime}.csv",
               "timestamp_column": "updated_at", "incremental": true}],
  "sftp": {"path": "$dir", "host": "$FERRY_SFTP_HOST", "port": $FERRY_SFTP_PORT, "username": "$FERRY_SFTP_KEY_USER",
           "private_key_file": "$FERRY_SFTP_KEY_FILE", "known_hosts_file": "$FERRY_SFTP_KNOWN_HOSTS"},
  "metadata_table": "$FERRY_BQ_PROJECT.$name.export_metadata",
  "bigquery": {"endpoint": "$FERRY_BQ_ENDPOINT", "auth": "none"}
}
JSON
export FERRY_FAILPOINTS="upload:after@orders"
if grep -qa FERRY_FAILPOINTS "$bin"; then fail "$bin holds the string FERRY_FAILPOINTS: built with failpoints?"; fi

if "$control" --config "$work/failpoints.json" run >"$work/control.out" 2>&1; then
  fail "the control ($control) ignored FERRY_FAILPOINTS: is it built with failpoints? $(cat "$work/control.out")"
fi
grep -q 'injected failure at upload:after' "$work/control.out" ||
  fail "the control ($control) failed, but not at the failpoint: $(cat "$work/control.out")"
[ -z "$(ls -A "$dir")" ] || fail "the failed control run left files: $(ls -A "$dir")"

"$bin" --config "$work/failpoints.json" run >"$work/release.out" 2>&1 ||
  fail "$bin honoured FERRY_FAILPOINTS (or failed otherwise): $(cat "$work/release.out")"
if grep -qi 'failpoint\|injected failure' "$work/release.out"; then fail "$bin mentions failpoints: $(cat "$work/release.out")"; fi
files=("$dir"/orders_*.csv)
if [ "${#files[@]}" != 1 ] || [ ! -f "${files[0]}" ]; then fail "expected one delivered file, found: $(ls -A "$dir")"; fi
[ "$(wc -l <"${files[0]}")" = 3 ] || fail "expected a header and 2 rows in ${files[0]}: $(cat "${files[0]}")"
status="$(dev/bq "SELECT export_status FROM $name.export_metadata ORDER BY completed_at DESC LIMIT 1")"
[ "$status" = SUCCESS ] || fail "the run is recorded as '$status', expected SUCCESS"
echo "[image] ok: $bin ignores FERRY_FAILPOINTS (the control, $control, failed at the failpoint)"
