#!/usr/bin/env bash
# Build the Dockerfile's runtime stage with podman and run the image as a cluster would:
#
#   - the image, from the real Dockerfile's `runtime` stage, with the given binary taken in
#     through `--build-context builder=DIR` (the builder stages need a registry; this
#     machine has none); what the stage adds to the binary stays under 8 MB (the published
#     binary's own size is bounded by scripts/release-build.sh);
#   - the base `gcr.io/distroless/cc-debian12:nonroot`, when no registry can provide it,
#     assembled from this Debian 12 host's own files (glibc, libgcc, the `nonroot` user
#     65532, /tmp) and imported under that name;
#   - the container: UID 65532, a read-only root filesystem, every capability dropped, no
#     new privileges; it serves /health; a real Prometheus scrapes its /metrics;
#   - SIGTERM to the container while intensive requests are in flight: every one is
#     answered 200 and the container exits 0.
#
# Where podman cannot run at all, it says so and skips (exit 0 with a SKIP line); any
# failed check exits 1. Everything is bounded in time.
#
# Usage: scripts/test-image.sh [BINARY]   (default: target/release/floodgate)
# Facts found by trying on these machines: podman works as root with `--runtime runc`
# (crun refuses the cgroup setup) and a containers.conf with `default_ulimits = []`.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
binary=${1:-${CARGO_TARGET_DIR:-$root/target}/release/floodgate}
base=gcr.io/distroless/cc-debian12:nonroot
image=localhost/floodgate:image-test
work=$(mktemp -d)
cid=
prom_pid=

log() { printf '==> %s\n' "$*" >&2; }
fail() { printf 'FAIL image test: %s\n' "$*" >&2; exit 1; }
skip() { printf 'SKIP image test: %s\n' "$*"; exit 0; }
cleanup() {
    [ -n "$prom_pid" ] && kill "$prom_pid" 2>/dev/null || true
    [ -n "$cid" ] && podman rm -f "$cid" >/dev/null 2>&1 || true
    podman rmi -f "$image" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

command -v podman >/dev/null || skip "podman is not installed (apt-get install podman runc)"
cat >"$work/containers.conf" <<'EOF'
[containers]
default_ulimits = []
[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF=$work/containers.conf
podman info >/dev/null 2>"$work/info.err" || skip "podman cannot run here: $(tail -n1 "$work/info.err")"
[ -x "$binary" ] || fail "no binary at $binary (cargo build --release --bin floodgate)"

# ---------------------------------------------------------------- base image
if ! podman image exists "$base"; then
    log "assembling $base from this host's files"
    rootfs=$work/rootfs
    mkdir -p "$rootfs"/{etc,tmp,home/nonroot,lib64,lib/x86_64-linux-gnu,etc/ssl/certs}
    chmod 1777 "$rootfs/tmp"
    # What the dynamic binary needs, as distroless/cc carries it: glibc, libm, libgcc_s.
    for lib in $(ldd "$binary" | awk '/=>/ {print $3} /ld-linux/ {print $1}'); do
        cp -L "$lib" "$rootfs$lib"
    done
    cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/" 2>/dev/null || true
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
    printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
    chown 65532:65532 "$rootfs/home/nonroot"
    tar -C "$rootfs" -cf "$work/rootfs.tar" .
    podman import --quiet "$work/rootfs.tar" "$base" >/dev/null
fi

# ---------------------------------------------------------------- build
log "building the Dockerfile's runtime stage"
builder=$work/builder
mkdir -p "$builder/jobs-data"
strip --strip-debug --output-file "$builder/floodgate" "$binary"
podman build --quiet --pull=never --target runtime --build-context "builder=$builder" \
    -t "$image" -f Dockerfile . >/dev/null
size=$(podman image inspect --format '{{.Size}}' "$image")
shipped=$(stat -c %s "$builder/floodgate")
added=$((size - shipped))
log "image size: $((size / 1000000)) MB, of which the binary $((shipped / 1000000)) MB and the runtime stage $((added / 1000000)) MB"
[ "$added" -lt 8000000 ] || fail "the runtime stage adds $added bytes to the binary, over 8 MB"

# ---------------------------------------------------------------- run
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# Rounds so an intensive request takes a good fraction of a second: in flight at SIGTERM.
# The jobs database goes to /tmp, the tmpfs podman gives a read-only container (the chart
# mounts a volume at /app/data instead).
cid=$(podman run -d --read-only --cap-drop=ALL --security-opt=no-new-privileges \
    -e DATABASE_URL=sqlite:///tmp/floodgate-jobs.db \
    -e INTENSIVE_ROUNDS=100000000 -e WORKER_COUNT=2 -e SHUTDOWN_TIMEOUT=60s \
    -p "127.0.0.1:$port:8080" "$image")
base_url=http://127.0.0.1:$port
deadline=$((SECONDS + 30))
until curl -fsS -o /dev/null "$base_url/health" 2>/dev/null; do
    [ "$(podman inspect -f '{{.State.Running}}' "$cid")" = true ] \
        || fail "the container exited: $(podman logs "$cid" 2>&1 | tail -n 5)"
    [ "$SECONDS" -lt "$deadline" ] || fail "no /health 200 within 30 s"
    sleep 0.1
done
log "serving /health on $base_url"

pid=$(podman inspect -f '{{.State.Pid}}' "$cid")
uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
capeff=$(awk '/^CapEff:/ {print $2}' "/proc/$pid/status")
readonly_root=$(podman inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$cid")
[ "$uid" = 65532 ] || fail "runs as UID $uid, not 65532"
[ "$capeff" = 0000000000000000 ] || fail "effective capabilities $capeff, not none"
[ "$readonly_root" = true ] || fail "the root filesystem is writable"
log "UID $uid, capabilities $capeff, read-only root filesystem"

# ---------------------------------------------------------------- Prometheus
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: floodgate
    static_configs:
      - targets: ["127.0.0.1:$port"]
EOF
prom_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
prom_pid=$!
deadline=$((SECONDS + 30))
until curl -fsS "http://127.0.0.1:$prom_port/api/v1/query?query=up%7Bjob%3D%22floodgate%22%7D" 2>/dev/null \
        | grep -q '"value":\[[0-9.]*,"1"\]'; do
    [ "$SECONDS" -lt "$deadline" ] || fail "Prometheus did not see the container up within 30 s"
    sleep 0.2
done
log "a real Prometheus scrapes the container (up == 1)"

# ---------------------------------------------------------------- graceful drain
requests=4
curls=()
for i in $(seq "$requests"); do
    curl -sS -o "$work/answer.$i" -w '%{http_code}' --max-time 120 \
        -H 'Content-Type: application/json' -d "{\"number\": $i}" \
        "$base_url/api/v1/compute/intensive" >"$work/status.$i" 2>"$work/curl.$i" &
    curls+=($!)
done
deadline=$((SECONDS + 30))
until [ "$(curl -fsS "$base_url/api/v1/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["active_requests"])')" -ge "$requests" ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "the $requests requests were not all in flight within 30 s"
    sleep 0.05
done
log "$requests intensive requests in flight: SIGTERM"
podman kill --signal TERM "$cid" >/dev/null
wait_deadline=$((SECONDS + 120))
while [ "$(podman inspect -f '{{.State.Running}}' "$cid")" = true ]; do
    [ "$SECONDS" -lt "$wait_deadline" ] || fail "the container did not exit within 120 s of SIGTERM"
    sleep 0.1
done
wait "${curls[@]}" || true
exit_code=$(podman inspect -f '{{.State.ExitCode}}' "$cid")
for i in $(seq "$requests"); do
    code=$(cat "$work/status.$i")
    [ "$code" = 200 ] || fail "request $i was answered $code after SIGTERM: $(cat "$work/answer.$i" "$work/curl.$i")"
done
[ "$exit_code" = 0 ] || fail "the container exited $exit_code: $(podman logs "$cid" 2>&1 | tail -n 5)"
log "all $requests in-flight requests answered 200; the container exited 0"
echo "PASS image test: the runtime stage adds $((added / 1000000)) MB to the binary, UID 65532, read-only root, no capabilities, scraped by Prometheus, drained on SIGTERM"
