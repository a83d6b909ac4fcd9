#!/usr/bin/env bash
# Instructions per request: what floodgate executes to answer a request, next to the bare
# axum and lean axum references answering the same one, counted by callgrind.
#
# Time-based ratios (scripts/bench.sh) move by 10-25 % between runs on a shared virtual
# machine; the instructions a request executes do not, so a change to the request path can
# be judged here to within a fraction of a percent in a couple of minutes. They are not
# time: a cache or TLB miss, a system call or a context switch costs far more than an
# instruction, and the kernel's share (two thirds of a call's CPU on loopback) is not counted
# at all. Use both: this for what floodgate's own code costs, bench.sh for what it amounts
# to.
#
# Each server runs under `valgrind --tool=callgrind` with counting off; floodgate-load sends
# WARMUP requests, then counting is switched on (every thread of the server) for REQUESTS
# closed-loop requests on 8 connections, and off again. floodgate runs as scripts/bench.sh
# runs it (JSON logs, an access log to a file, metrics, the rate limiter, SQLite jobs), without
# traces.
#
# Usage: scripts/bench-instructions.sh [--no-build]
#   --no-build   use the release binaries already in the target directory
# Env: REQUESTS (default 10000), WARMUP (default 2000), CARGO_TARGET_DIR.
# Needs: valgrind (callgrind, callgrind_control), jq. Writes target/bench/instructions.json
# and instructions.md.
set -euo pipefail

build=1
case "${1:-}" in
    --no-build) build=0 ;;
    "") ;;
    *) echo "usage: $0 [--no-build]" >&2; exit 2 ;;
esac
requests=${REQUESTS:-10000}
warmup=${WARMUP:-2000}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=scripts/lib/bench-common.sh
. "$root/scripts/lib/bench-common.sh"
require_tools "apt-get install valgrind jq" valgrind callgrind_control jq cargo awk

target_dir=${CARGO_TARGET_DIR:-$root/target}
release=$target_dir/release
out_dir=$target_dir/bench
if [ "$build" = 1 ]; then
    log "== building release binaries (fat LTO: this takes a while) =="
    cargo build --release --locked --bin floodgate --example bare_axum --example lean_axum
    cargo build --release --locked -p floodgate-load --bin floodgate-load
fi
for bin in "$release/floodgate" "$release/floodgate-load" "$release/examples/bare_axum" "$release/examples/lean_axum"; do
    [ -x "$bin" ] || { log "missing $bin (run without --no-build)"; exit 1; }
done

bench_setup
port=$((18400 + RANDOM % 500))
addr=127.0.0.1:$port

# callgrind_start NAME BINARY [VAR=VALUE...]: BINARY under callgrind with that environment,
# counting off, on core 0; returns once it answers /health.
callgrind_start() {
    local name=$1 binary=$2
    shift 2
    # `env` runs valgrind, not the other way round: valgrind would count `env` and then lose
    # the program it executes.
    server_start "$name" env "$@" valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$work/$name.callgrind" "$binary"
    # Start-up under callgrind takes seconds.
    server_await_seconds=120 server_await "answer /health under callgrind" http_ok "$addr" /health
}

# send METHOD PATH COUNT: COUNT closed-loop requests; exits unless every one was a 2xx.
send() {
    local body=() report ok
    [ "$1" = POST ] && body=(--body '{"number": 42}')
    report=$("$release/floodgate-load" --url "http://$addr" --method "$1" --path "$2" "${body[@]}" \
        --threads 1 --concurrency 8 --requests "$3" --warmup 0 --no-health-check \
        --no-server-metrics --quiet --output json 2>"$work/load.err") || true
    ok=$(jq -r '.scenarios[0].requests.successful // 0' <<<"$report" 2>/dev/null || echo 0)
    if [ "$ok" != "$3" ]; then
        log "$server_name: $ok of $3 requests to $1 $2 answered 2xx: $report $(cat "$work/load.err")"
        exit 1
    fi
}

# count NAME METHOD PATH: sets per_request to the instructions per request of the server
# started last, and stops it.
per_request=
count() {
    local name=$1 total
    send "$2" "$3" "$warmup"
    callgrind_control --instr=on "$server_pid" >/dev/null 2>&1 || { log "callgrind_control failed"; exit 1; }
    send "$2" "$3" "$requests"
    callgrind_control --instr=off "$server_pid" >/dev/null 2>&1 || { log "callgrind_control failed"; exit 1; }
    # Written before callgrind_control returns, as $work/NAME.callgrind.1.
    callgrind_control --dump "$server_pid" >/dev/null 2>&1 || { log "callgrind_control failed"; exit 1; }
    server_stop
    total=$(cat "$work/$name.callgrind".* 2>/dev/null | awk '$1 == "totals:" {t += $2; found = 1} END {if (found) print t}')
    [ -n "$total" ] || { log "$name: callgrind wrote no counts"; exit 1; }
    per_request=$(awk -v t="$total" -v n="$requests" 'BEGIN {printf "%.0f", t / n}')
}

results=$work/instructions.tsv
: >"$results"
cases=("health GET /health" "fast POST /api/v1/compute/fast")
servers=(bare-axum lean-axum floodgate)
step=0
for s in "${servers[@]}"; do
    for c in "${cases[@]}"; do
        read -r name method path <<<"$c"
        step=$((step + 1))
        log "[$step/$(( ${#servers[@]} * ${#cases[@]} ))] $name: $s, $requests requests under callgrind"
        # A fresh server per case, so a case counts only its own requests.
        rm -f "$work"/*.callgrind* "$work/jobs.db"*
        case $s in
            bare-axum) callgrind_start "$s" "$release/examples/bare_axum" SERVER_PORT="$addr" ;;
            lean-axum) callgrind_start "$s" "$release/examples/lean_axum" SERVER_PORT="$addr" \
                ACCESS_LOG_PATH="$work/lean-access.log" ;;
            floodgate) callgrind_start "$s" "$release/floodgate" ENVIRONMENT=production LOG_LEVEL=info \
                RATE_LIMIT=10000000 SERVER_PORT="$addr" FLOODGATE__LOG__ACCESS_LOG_PATH="$work/access.log" \
                DATABASE_URL="sqlite://$work/jobs.db" ;;
        esac
        count "$s" "$method" "$path"
        log "      $per_request instructions per request"
        printf '%s\t%s\t%s\n' "$name" "$s" "$per_request" >>"$results"
    done
done

mkdir -p "$out_dir"
awk -F'\t' -v commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" -v n="$requests" '
    { ins[$1, $2] = $3; if (!($1 in seen)) { seen[$1] = 1; order[++k] = $1 } }
    END {
        printf "Instructions per request (callgrind, every thread of the server; %d closed-loop requests on 8 connections after a warm-up), floodgate %s.\n\n", n, commit
        print "| case | bare axum | lean axum | floodgate | floodgate × bare axum | floodgate × lean axum |"
        print "|---|---|---|---|---|---|"
        for (i = 1; i <= k; i++) {
            c = order[i]; b = ins[c, "bare-axum"]; l = ins[c, "lean-axum"]; f = ins[c, "floodgate"]
            printf "| %s | %d | %d | %d | %.2f | %.2f |\n", c, b, l, f, (b > 0 ? f / b : 0), (l > 0 ? f / l : 0)
        }
    }' "$results" | tee "$out_dir/instructions.md"
jq -R -s --arg commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" --argjson requests "$requests" '
    [split("\n")[] | select(length > 0) | split("\t") | {case: .[0], server: .[1], instructions_per_request: (.[2] | tonumber)}]
    | {commit: $commit, requests: $requests, runs: .}' "$results" >"$out_dir/instructions.json"
log "written: $out_dir/instructions.md and instructions.json"
