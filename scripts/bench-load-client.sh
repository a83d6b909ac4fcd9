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
# Then it measures floodgate-load's peak RSS for 10x more requests to show
# memory does not grow with the request count.
# Finally HTTP/2 over TLS: the bare TLS reference server (examples/bare_hyper_tls.rs,
# one worker, ALPN h2) driven alternately by h2load (nghttp2) and by
# floodgate-load --http2, the same H2_CONNECTIONS connections carrying
# H2_STREAMS streams each, ROUNDS rounds; medians and their ratio (reported,
# no target: the TLS server is the likelier limit). The figures also go to
# target/bench/load-client.json.
#
# Usage: scripts/bench-load-client.sh [--quick]
#   --quick   2 s per measurement instead of 10 s, smaller RSS runs
# Env: CONNECTIONS (default 64), ROUNDS (default 3), H2_CONNECTIONS (default 8),
#      H2_STREAMS (default 16), PROFILE (Cargo profile, default release; `ci`
#      builds in minutes for a smoke test of the script), CARGO_TARGET_DIR.
# Needs: wrk, h2load (Debian package `nghttp2-client`), taskset (util-linux),
# /usr/bin/time (Debian package `time`), jq, at least 2 CPU cores, Linux /proc.
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
h2_connections=${H2_CONNECTIONS:-8}
h2_streams=${H2_STREAMS:-16}
profile=${PROFILE:-release}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=scripts/lib/bench-common.sh
. "$root/scripts/lib/bench-common.sh"

require_tools "apt-get install wrk nghttp2-client util-linux time jq" wrk h2load taskset /usr/bin/time jq cargo awk
require_cores

target_dir=${CARGO_TARGET_DIR:-$root/target}
echo "== building ($profile) =="
cargo build --profile "$profile" -p floodgate-load --bin floodgate-load
cargo build --profile "$profile" --example bare_hyper --example bare_hyper_tls
[ "$profile" = dev ] && profile=debug
load=$target_dir/$profile/floodgate-load
hyper_server=$target_dir/$profile/examples/bare_hyper
tls_server=$target_dir/$profile/examples/bare_hyper_tls

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
server_stop

# ---------------------------------------------------------------- HTTP/2 over TLS
server_start bare-hyper-tls env SERVER_PORT=127.0.0.1:0 TOKIO_WORKER_THREADS=1 \
    TLS_CA_OUT="$work/ca.pem" "$tls_server"
server_await "print its address" server_listening
tls_url=https://$server_addr
echo "== HTTP/2 over TLS: $tls_url (core 0); h2load and floodgate-load --http2 on core 1; $h2_connections connections x $h2_streams streams, ${duration}s each =="

run_h2load() {
    taskset -c 1 h2load -t1 -c"$h2_connections" -m"$h2_streams" -D"$duration" "$tls_url/" |
        awk '/^finished in/ {gsub(",", "", $4); print $4}'
}

run_load_h2() {
    taskset -c 1 "$load" --url "$tls_url" --cacert "$work/ca.pem" --http2 --streams "$h2_streams" \
        --method GET --path / --threads 1 --concurrency "$h2_connections" --duration "${duration}s" \
        --requests 1000000000 --warmup 0 --no-health-check --no-server-metrics --quiet --output json |
        jq -er '.scenarios[0] | select(.requests.successful == .requests.total) | .rps'
}

: >"$work/h2load"
: >"$work/load-h2"
for round in $(seq "$rounds"); do
    h=$(run_h2load)
    [ -n "$h" ] || { echo "h2load reported no requests/s" >&2; exit 1; }
    echo "$h" >>"$work/h2load"
    l=$(run_load_h2) || { echo "floodgate-load --http2 reported no requests/s, or failures" >&2; exit 1; }
    echo "$l" >>"$work/load-h2"
    printf 'round %d: h2load %10.0f req/s   floodgate-load %10.0f req/s\n' "$round" "$h" "$l"
done
h2load_median=$(median <"$work/h2load")
load_h2_median=$(median <"$work/load-h2")
printf 'median: h2load %.0f req/s, floodgate-load --http2 %.0f req/s\n' "$h2load_median" "$load_h2_median"
awk -v a="$load_h2_median" -v b="$h2load_median" \
    'BEGIN {printf "ratio floodgate-load / h2load (HTTP/2 over TLS): %.2f\n", a / b}'

# The figures, for the record: target/bench/load-client.json.
mkdir -p "$target_dir/bench"
jq -n --arg profile "$profile" --argjson duration "$duration" --argjson rounds "$rounds" \
    --argjson connections "$connections" --argjson wrk "$wrk_median" --argjson load "$load_median" \
    --argjson rss_small_requests "$rss_small" --argjson rss_small_kib "$small" \
    --argjson rss_large_requests "$rss_large" --argjson rss_large_kib "$large" \
    --argjson h2_connections "$h2_connections" --argjson h2_streams "$h2_streams" \
    --argjson h2load "$h2load_median" --argjson load_h2 "$load_h2_median" \
    '{profile: $profile, duration_secs: $duration, rounds: $rounds,
      http1: {connections: $connections, wrk_rps: $wrk, floodgate_load_rps: $load, ratio: ($load / $wrk)},
      rss_kib: {($rss_small_requests | tostring): $rss_small_kib, ($rss_large_requests | tostring): $rss_large_kib},
      http2_tls: {connections: $h2_connections, streams: $h2_streams, h2load_rps: $h2load,
                  floodgate_load_rps: $load_h2, ratio: ($load_h2 / $h2load)}}' \
    >"$target_dir/bench/load-client.json"
echo "figures in $target_dir/bench/load-client.json"

echo "== HTTP/1.1 ratio floodgate-load / wrk: $ratio (target >= 0.95) =="
awk -v r="$ratio" 'BEGIN {exit !(r >= 0.95)}' || { echo "floodgate-load is below 0.95x wrk" >&2; exit 3; }
