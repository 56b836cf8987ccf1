#!/usr/bin/env bash
# Build deploy/Dockerfile with podman and run `ferry --version` and `ferry check` in the image.
#
# The machines this runs on reach no container registry, so the two base images are stood in
# for: the runtime base by a root file system holding only the binary's own shared libraries,
# CA certificates and a `nonroot` user (what distroless/cc provides), and the build stage by
# the binary cargo already built (FERRY_BINARY). Everything after the bases is the Dockerfile
# as deployed: paths, user, entrypoint, baked configs.
#
# usage: deploy/test-image.sh [path/to/ferry]   (default target/debug/ferry)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin="${1:-target/debug/ferry}"
[ -x "$bin" ] || { echo "test-image: no ferry binary at $bin; build it first" >&2; exit 2; }

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
