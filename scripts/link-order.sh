#!/usr/bin/env bash
# Regenerates src/link-order.txt: the functions the release binary runs while it starts
# and while it serves the common requests. build.rs hands the file to the linker
# (`--symbol-ordering-file`), which places those functions side by side at the start of the
# code, so the pages the kernel maps in (64 KiB around each first touch) hold code that runs
# instead of its scattered neighbours: it sets most of the idle RSS. In order: what serving
# runs and the start ran too (resident at idle), hottest first; what only the release of the
# start-up code and the first probe ran; what only serving runs; then, between the markers
# floodgate_startup_code_begin and _end, what only the start ran (until
# startup_code::release, which hands those pages back).
#
# Symbol names carry a hash of their crate's build (version, features, profile), so the file
# matches a binary built the way the image and scripts/test.sh build it:
# `cargo build --release --bin floodgate` on its own. (Built in one invocation with the
# examples, dependencies get the dev-dependencies' features and other names.) A function the
# file names but the binary lacks is left in the default order, the linker told not to warn:
# a stale file costs memory, never correctness. `--check` fails when under 90% of the listed
# functions are found; rerun this script then (it takes about a minute).
#
# Usage: scripts/link-order.sh [--check] [BINARY]   (default: target/release/floodgate;
#        generating needs valgrind, checking only nm)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
check=0
if [ "${1:-}" = --check ]; then check=1; shift; fi
binary=${1:-${CARGO_TARGET_DIR:-$root/target}/release/floodgate}
out=$root/src/link-order.txt
log() { printf '%s\n' "$*" >&2; }
# defined_in FILE: the lines of FILE that name a symbol the binary defines.
defined_in() {
    nm --defined-only "$binary" | awk '{print $3}' | sort -u |
        awk 'NR == FNR { defined[$1] = 1; next } defined[$1]' - "$1"
}

if [ "$check" = 1 ]; then
    [ -x "$binary" ] || { log "no binary at $binary (cargo build --release --bin floodgate)"; exit 1; }
    listed=$(wc -l <"$out")
    found=$(defined_in "$out" | wc -l)
    log "link order: $found of $listed functions in src/link-order.txt are in $binary"
    if [ $((found * 10)) -lt $((listed * 9)) ]; then
        log "src/link-order.txt no longer matches the code: run scripts/link-order.sh (or build with \`cargo build --release --bin floodgate\` alone)"
        exit 1
    fi
    # The startup-only block: both markers, in order, a plausible size apart.
    read -r begin end < <(nm --defined-only "$binary" |
        awk '$3 == "floodgate_startup_code_begin" { b = $1 } $3 == "floodgate_startup_code_end" { e = $1 }
             END { print (b == "" ? "0" : b), (e == "" ? "0" : e) }')
    size=$(( 0x$end - 0x$begin ))
    log "link order: the startup-only block is $((size / 1024)) KiB"
    if [ "$size" -le 65536 ] || [ "$size" -gt $((64 << 20)) ]; then
        log "the startup-only block is not laid out between its markers (begin 0x$begin, end 0x$end)"
        exit 1
    fi
    exit 0
fi
command -v valgrind >/dev/null || { log "needs valgrind (apt-get install valgrind)"; exit 1; }
command -v curl >/dev/null || { log "needs curl"; exit 1; }
[ -x "$binary" ] || { log "no binary at $binary (cargo build --release --bin floodgate)"; exit 1; }

work=$(mktemp -d /tmp/floodgate-link-order.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# Callgrind dumps what ran (and zeroes its counts) as startup_code::release begins:
# OUT.1 is the start. The release itself falls in the next dump, with the first probe, so
# its code stays mapped while it runs on after the unmapping.
release='_ZN9floodgate12startup_code7release17h*'
# profile OUT: start the binary under callgrind, writing OUT; sets pid.
profile() {
    ENVIRONMENT=production LOG_LEVEL=info SERVER_PORT=127.0.0.1:0 \
        FLOODGATE__LOG__ACCESS_LOG_PATH="$work/access.log" DATABASE_URL="sqlite://$work/jobs.db" \
        valgrind --tool=callgrind --demangle=no --compress-strings=no --compress-pos=no \
        --dump-before="$release" --callgrind-out-file="$1" "$binary" >"$work/out" 2>"$work/err" &
    pid=$!
}
# await_file FILE WHAT: wait for FILE (60 s at most).
await_file() {
    for _ in $(seq 600); do
        [ -e "$1" ] && return
        kill -0 "$pid" 2>/dev/null || { log "it exited before $2: $(tail -n5 "$work/err")"; exit 1; }
        sleep 0.1
    done
    log "callgrind wrote nothing for $2 within 60 s"
    exit 1
}

# A first start creates the database; the second finds it there, as a restart does.
log "[1/4] two starts under callgrind (the production configuration), on a new database and on the same one again"
profile "$work/first.out"
await_file "$work/first.out.1" "the end of the first start"
kill -TERM "$pid"
wait "$pid" || true
profile "$work/callgrind.out"
await_file "$work/callgrind.out.1" "the end of the second start"
addr=$(grep -m1 '"message":"listening"' "$work/out" | grep -o '"address":"[0-9.:]*"' | cut -d'"' -f4) || true
[ -n "$addr" ] || { log "it logged no address: $(tail -n5 "$work/out")"; exit 1; }
url=http://$addr
log "[2/4] the first probe, then the common requests on $addr"
curl -fsS "$url/health" -o /dev/null
callgrind_control --dump=probed "$pid" >/dev/null
await_file "$work/callgrind.out.2" "the first probe"
json=(-H 'content-type: application/json')
for round in $(seq 20); do
    curl -fsS "$url/health" "$url/health/live" "$url/health/ready" -o /dev/null -o /dev/null -o /dev/null
    curl -fsS "${json[@]}" -d "{\"number\": $round}" "$url/api/v1/compute/fast" -o /dev/null
    curl -fsS "${json[@]}" -d "{\"number\": $round}" "$url/api/v1/compute/intensive" -o /dev/null
    curl -sS "${json[@]}" -d '{"number": "x"}' "$url/api/v1/compute/fast" -o /dev/null
    curl -fsS "$url/metrics" "$url/api/v1/stats" -o /dev/null -o /dev/null
    printf '\r      %d/20' "$round" >&2
done
log ""

log "[3/4] stopping it"
kill -TERM "$pid"
wait "$pid" || true
pid=

log "[4/4] writing $out"
# Each `fn=` line names a function that ran; its cost lines follow.
costs() {
    awk '
        /^fn=/ { fn = substr($0, 4); next }
        /^(cfn|cfi|cfl|calls)=/ { skip = ($1 ~ /^calls=/); next }
        /^[0-9+*-]/ { if (skip) { skip = 0; next } if (fn != "") cost[fn] += $2 }
        END { for (f in cost) printf "%d\t%s\n", cost[f], f }
    ' "$@" | sort -t$'\t' -k1,1nr | cut -f2
}
# among WANT LAST LIST...: the lines of LAST, in its order, that are (WANT=1) or are not
# (WANT=0) lines of a LIST file.
among() {
    local want=$1 last=$2
    shift 2
    awk -v want="$want" -v last="$last" \
        'FILENAME != last { seen[$0] = 1; next } (want == 1) == ($0 in seen)' "$@" "$last"
}
costs "$work/callgrind.out.1" "$work/first.out.1" >"$work/start"
costs "$work/callgrind.out.2" >"$work/probe"
costs "$work/callgrind.out" >"$work/serve"
{
    among 1 "$work/serve" "$work/start" "$work/probe"
    among 0 "$work/probe" "$work/serve"
    among 0 "$work/serve" "$work/start" "$work/probe"
    echo floodgate_startup_code_begin
    among 0 "$work/start" "$work/probe" "$work/serve"
    echo floodgate_startup_code_end
} >"$work/ran"
# Keep only the symbols the binary defines (callgrind also names libc's), each once.
defined_in "$work/ran" | awk '!seen[$0]++' >"$out"
log "$(wc -l <"$work/start") functions run by the start, $(wc -l <"$work/probe") by the release and the first probe, $(wc -l <"$work/serve") by requests and idle; $(wc -l <"$out") in $out"
