#!/usr/bin/env bash
# The published build of the service: a release build whose code is laid out by a profile of
# that same build, so what serving runs sits together at the start of the code.
#
#   1. cargo build --release --bin floodgate
#   2. run it under callgrind: start it, wait until start-up is over, then count only what
#      serving runs (health, metrics, the v1 and v2 APIs) and write those functions, hottest
#      first, to target/release/code-layout.txt
#   3. build again with FLOODGATE_CODE_LAYOUT set to that file: build.rs hands it to the
#      linker (--symbol-ordering-file), which places them side by side
#
# Why: the service hands the executable's pages back once it serves (src/startup_code.rs),
# and the kernel reads executable pages back 64 KiB at a time; serving's functions scattered
# over 13 MiB of code keep about 6.5 MiB resident under load, packed together under 4.
# Nothing derived from the build is kept in the tree: the list is made from, and used for,
# this build only, whatever the toolchain. A plain `cargo build --release` works too, with
# the default layout (more memory, same behaviour).
#
# Needs valgrind, curl and strip (binutils). Usage: scripts/release-build.sh   (CARGO_TARGET_DIR is honoured)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
binary=$target/release/floodgate
layout=$target/release/code-layout.txt
log() { printf '==> %s\n' "$*" >&2; }
command -v valgrind >/dev/null || { log "needs valgrind (apt-get install valgrind)"; exit 1; }
command -v callgrind_control >/dev/null || { log "needs callgrind_control (valgrind)"; exit 1; }
command -v curl >/dev/null || { log "needs curl"; exit 1; }

log "[1/3] cargo build --release --bin floodgate (default layout)"
FLOODGATE_CODE_LAYOUT= cargo build --release --locked --bin floodgate

work=$(mktemp -d /tmp/floodgate-release.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

log "[2/3] profiling what serving runs, under callgrind"
ENVIRONMENT=production LOG_LEVEL=info SERVER_PORT=127.0.0.1:0 \
    FLOODGATE__LOG__ACCESS_LOG_PATH="$work/access.log" DATABASE_URL="sqlite://$work/jobs.db" \
    valgrind --tool=callgrind --demangle=no --compress-strings=no --compress-pos=no \
    --callgrind-out-file="$work/callgrind.out" "$binary" >"$work/out" 2>"$work/err" &
pid=$!
addr=
for _ in $(seq 1200); do
    addr=$(grep -m1 '"message":"listening"' "$work/out" 2>/dev/null |
        grep -o '"address":"[0-9.:]*"' | cut -d'"' -f4) || true
    [ -n "$addr" ] && break
    kill -0 "$pid" 2>/dev/null || { log "it exited while starting: $(tail -n5 "$work/err")"; exit 1; }
    sleep 0.1
done
[ -n "$addr" ] || { log "it did not start within 120 s under callgrind"; exit 1; }
url=http://$addr
for _ in $(seq 600); do
    curl -fsS "$url/health" -o /dev/null 2>/dev/null && break
    sleep 0.1
done
# Start-up ends with the first round of the job runner and the release of the executable's
# pages; what ran until then is not counted.
for _ in $(seq 600); do
    grep -q '"message":"executable pages released"' "$work/out" 2>/dev/null && break
    sleep 0.1
done
callgrind_control --zero "$pid" >/dev/null
json=(-H 'content-type: application/json')
for round in $(seq 20); do
    curl -fsS "$url/health" "$url/health/live" "$url/health/ready" -o /dev/null -o /dev/null -o /dev/null
    curl -fsS "${json[@]}" -d "{\"number\": $round}" "$url/api/v1/compute/fast" -o /dev/null
    curl -fsS "${json[@]}" -d "{\"number\": $round}" "$url/api/v1/compute/intensive" -o /dev/null
    curl -sS "${json[@]}" -d '{"number": "x"}' "$url/api/v1/compute/fast" -o /dev/null
    job=$(curl -fsS "${json[@]}" -d "{\"number\": $round, \"rounds\": 1000}" "$url/api/v2/jobs" |
        grep -o '"id":"[^"]*"' | cut -d'"' -f4)
    curl -fsS "$url/api/v2/jobs/$job" "$url/metrics" "$url/api/v1/stats" "$url/metrics/prometheus" \
        -o /dev/null -o /dev/null -o /dev/null -o /dev/null
    printf '\r    requests: round %d/20' "$round" >&2
done
printf '\n' >&2
callgrind_control --dump=serving "$pid" >/dev/null
for _ in $(seq 600); do
    compgen -G "$work/callgrind.out.*" >/dev/null && break
    sleep 0.1
done
kill -TERM "$pid"
wait "$pid" || true
pid=
# Each `fn=` line names a function that ran; its self cost is on the lines that follow, up
# to the next `fn=` (lines after `calls=` are the callee's inclusive cost, not counted).
awk '
    /^fn=/ { fn = substr($0, 4); next }
    /^(cfn|cfi|cfl|calls)=/ { skip = ($1 ~ /^calls=/); next }
    /^[0-9+*-]/ { if (skip) { skip = 0; next } if (fn != "") cost[fn] += $2 }
    END { for (f in cost) if (cost[f] > 0) printf "%d\t%s\n", cost[f], f }
' "$work"/callgrind.out.* | sort -t$'\t' -k1,1nr | cut -f2 >"$work/ran"
# Only the symbols this binary defines (callgrind also names libc's), each once.
nm --defined-only "$binary" | awk '{print $3}' | sort -u >"$work/defined"
awk 'NR == FNR { defined[$1] = 1; next } defined[$1] && !seen[$1]++' "$work/defined" "$work/ran" >"$layout"
count=$(wc -l <"$layout")
[ "$count" -gt 500 ] || { log "the profile found only $count functions: not laying out"; exit 1; }
log "      $count functions serving runs, in $layout"

log "[3/3] cargo build --release --bin floodgate, laid out"
FLOODGATE_CODE_LAYOUT=$layout cargo build --release --locked --bin floodgate
# The listed functions should now lie together: the span of their addresses says so.
span=$(nm --defined-only "$binary" | awk '
    function hex(s,   n, i) { n = 0; for (i = 1; i <= length(s); i++) n = n * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1; return n }
    NR == FNR { want[$1] = 1; next }
    ($3 in want) { a = hex($1); if (lo == "" || a < lo) lo = a; if (a > hi) hi = a }
    END { printf "%d", (hi - lo) / 1024 }' "$layout" -)
# What the image ships is the binary without its debug information: bounded, so a
# dependency that bloats it fails the build rather than the image.
strip --strip-debug --output-file "$work/shipped" "$binary"
shipped=$(stat -c %s "$work/shipped")
[ "$shipped" -lt 36000000 ] || { log "without debug information the binary is $shipped bytes, over 36 MB"; exit 1; }
log "done: $binary ($((shipped / 1000000)) MB without debug information); the $count functions lie within $span KiB"
