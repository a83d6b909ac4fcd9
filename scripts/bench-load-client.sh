#!/usr/bin/env bash
# Is floodgate-load fast enough not to be the bottleneck?
#
# Builds floodgate-load and the bare hyper reference server (examples/bare_hyper.rs,
# the one scripts/bench.sh uses, here with a single tokio worker thread) in
# release mode, pins the server to core 0 and the load generators to core 1,
# then drives the server alternately with wrk and with floodgate-load
# (single-threaded runtime), same connection count and duration, three rounds
# each. Prints the median requests/s of each and the ratio floodgate-load / wrk
# (target: >= 0.95).
# Finally it measures floodgate-load's peak RSS for 10x more requests to show
# memory does not grow with the request count.
#
# Usage: scripts/bench-load-client.sh [--quick]
#   --quick   2 s per measurement instead of 10 s, smaller RSS runs
# Env: CONNECTIONS (default 64), ROUNDS (default 3), CARGO_TARGET_DIR.
# Needs: wrk, taskset (util-linux), /usr/bin/time (Debian package `time`), jq,
# at least 2 CPU cores, Linux /proc.
# Shares its server handling with scripts/bench.sh (scripts/lib/bench-common.sh).
set -euo pipefail

duration=10
rss_small=100000
rss_large=1000000
case "${1:-}" in
    --quick) duration=2; rss_small=50000; rss_large=500000 ;;
    "") ;;
    *) echo "usage: $0 [--quick]" >&2; exit 2 ;;
esac
connections=${CONNECTIONS:-64}
rounds=${ROUNDS:-3}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=scripts/lib/bench-common.sh
. "$root/scripts/lib/bench-common.sh"

require_tools "apt-get install wrk util-linux time jq" wrk taskset /usr/bin/time jq cargo awk
require_cores

target_dir=${CARGO_TARGET_DIR:-$root/target}
echo "== building (release) =="
cargo build --release -p floodgate-load --bin floodgate-load
cargo build --release --example bare_hyper
load=$target_dir/release/floodgate-load
hyper_server=$target_dir/release/examples/bare_hyper

pin_self
bench_setup

# A free port, and one worker thread: the whole server on its one core.
server_start bare-hyper env SERVER_PORT=127.0.0.1:0 TOKIO_WORKER_THREADS=1 "$hyper_server"
server_await "print its address" server_listening
server_await "answer on $server_addr" http_ok "$server_addr" /
url=http://$server_addr
echo "== reference server on $url (core 0); load generators on core 1; $connections connections, ${duration}s each =="

run_wrk() {
    taskset -c 1 wrk -t1 -c"$connections" -d"${duration}s" "$url/" | awk '/^Requests\/sec:/ {print $2}'
}

run_load() {
    taskset -c 1 "$load" --url "$url" --method GET --path / --threads 1 \
        --concurrency "$connections" --duration "${duration}s" --requests 1000000000 \
        --warmup 0 --no-health-check --no-server-metrics --quiet --output json |
        jq -er '.scenarios[0].rps'
}

median() { sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

: >"$work/wrk"
: >"$work/load"
for round in $(seq "$rounds"); do
    w=$(run_wrk)
    echo "$w" >>"$work/wrk"
    l=$(run_load) || { echo "floodgate-load reported no requests/s" >&2; exit 1; }
    echo "$l" >>"$work/load"
    printf 'round %d: wrk %10.0f req/s   floodgate-load %10.0f req/s\n' "$round" "$w" "$l"
done
wrk_median=$(median <"$work/wrk")
load_median=$(median <"$work/load")
ratio=$(awk -v a="$load_median" -v b="$wrk_median" 'BEGIN {printf "%.2f", a / b}')
printf 'median: wrk %.0f req/s, floodgate-load %.0f req/s\n' "$wrk_median" "$load_median"
echo "ratio floodgate-load / wrk: $ratio (target >= 0.95)"

peak_rss() {
    /usr/bin/time -v taskset -c 1 "$load" --url "$url" --method GET --path / --threads 1 \
        --concurrency "$connections" --requests "$1" --duration 10m \
        --warmup 0 --no-health-check --no-server-metrics --quiet --output json \
        2>"$work/time.txt" >/dev/null
    awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt"
}
echo "== peak RSS of floodgate-load =="
small=$(peak_rss "$rss_small")
large=$(peak_rss "$rss_large")
printf '%10d requests: %6d KiB\n%10d requests: %6d KiB\n' "$rss_small" "$small" "$rss_large" "$large"
awk -v s="$small" -v l="$large" 'BEGIN {printf "growth for 10x the requests: %+.1f%%\n", (l - s) * 100 / s}'
awk -v r="$ratio" 'BEGIN {exit !(r >= 0.95)}' || { echo "floodgate-load is below 0.95x wrk" >&2; exit 3; }
