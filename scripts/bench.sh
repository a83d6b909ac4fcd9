#!/usr/bin/env bash
# How much does floodgate cost over a bare axum and a bare hyper server?
#
# Builds floodgate and the two reference servers (examples/bare_hyper.rs,
# examples/bare_axum.rs) in release mode, plus floodgate-load if it builds.
# The server runs on core 0, the load generator on core 1. For each case
# (GET /health, POST /api/v1/compute/fast, POST /api/v1/compute/intensive)
# the servers take turns, ROUNDS times, each run on a freshly started server:
# wrk -t1 -c64 for DURATION seconds (scripts/bench-wrk.lua), then the same
# with floodgate-load --threads 1 as a second generator. Each run records
# req/s, p50/p99 latency, non-2xx responses and socket errors, the server's
# peak RSS (VmHWM, read just before it is stopped) and its CPU time per request.
# Then, for floodgate alone: startup time to the first 200 from /health and the
# idle RSS after it (median of STARTS starts), and the peak RSS of a fast run
# with 500 connections.
#
# floodgate runs with its production configuration: ENVIRONMENT=production
# (JSON logs), the access log written to a file, metrics, request IDs,
# timeouts, LOG_LEVEL=info, and the rate limiter on with a limit far above
# what one core can serve.
#
# Prints a markdown report (targets first) to stdout and writes it to
# target/bench/results.md; progress lines go to stderr.
#
# Usage: scripts/bench.sh [--quick] [--no-build]
#   --quick     2 s runs, one round, 3 starts: a smoke test of the harness
#   --no-build  use the release binaries already in the target directory
# Env: DURATION (s, default 10), ROUNDS (3), CONNECTIONS (64),
#      BIG_CONNECTIONS (500), STARTS (5), BENCH_PORT (18181),
#      BENCH_LOCK (/tmp/floodgate-bench.lock; empty: take no lock),
#      CARGO_TARGET_DIR.
# Needs: wrk, taskset (util-linux), flock, jq, at least 2 CPU cores, Linux /proc.
# Shares its server handling with scripts/bench-load-client.sh (scripts/lib/bench-common.sh).
set -euo pipefail

duration=${DURATION:-10}
rounds=${ROUNDS:-3}
starts=${STARTS:-5}
build=1
for arg in "$@"; do
    case $arg in
        --quick) duration=${DURATION:-2}; rounds=${ROUNDS:-1}; starts=${STARTS:-3} ;;
        --no-build) build=0 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "usage: $0 [--quick] [--no-build]" >&2; exit 2 ;;
    esac
done
connections=${CONNECTIONS:-64}
big_connections=${BIG_CONNECTIONS:-500}
port=${BENCH_PORT:-18181}
lock=${BENCH_LOCK-/tmp/floodgate-bench.lock}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=scripts/lib/bench-common.sh
. "$root/scripts/lib/bench-common.sh"

require_tools "apt-get install wrk util-linux jq" wrk taskset flock jq cargo awk
require_cores
target_dir=${CARGO_TARGET_DIR:-$root/target}
release=$target_dir/release
lua=$root/scripts/bench-wrk.lua
out_dir=$target_dir/bench

# ---------------------------------------------------------------- build
have_load=0
if [ "$build" = 1 ]; then
    log "== building release binaries (fat LTO: this takes a while) =="
    cargo build --release --bin floodgate --example bare_hyper --example bare_axum
    if cargo build --release -p floodgate-load --bin floodgate-load; then
        have_load=1
    else
        log "floodgate-load does not build: measuring with wrk only"
    fi
elif [ -x "$release/floodgate-load" ]; then
    have_load=1
fi
for bin in "$release/floodgate" "$release/examples/bare_hyper" "$release/examples/bare_axum"; do
    [ -x "$bin" ] || { log "missing $bin (run without --no-build)"; exit 1; }
done
if [ "$have_load" = 1 ] && ! "$release/floodgate-load" --help >/dev/null 2>&1; then
    log "floodgate-load does not run: measuring with wrk only"
    have_load=0
fi

# ---------------------------------------------------------------- lock, pinning, cleanup
if [ -n "$lock" ]; then
    exec 9>"$lock"
    if ! flock -n 9; then
        log "waiting for another benchmark run to release $lock ..."
        flock 9
    fi
fi
pin_self
bench_setup

clk_tck=$(getconf CLK_TCK)
addr=127.0.0.1:$port

# ---------------------------------------------------------------- servers
# start_server NAME: starts it on core 0, waits for a 200 from /health;
# sets server_pid and startup_ms (launch to first 200).
start_server() {
    local name=$1 t0
    t0=$(now_us)
    case $name in
        floodgate)
            server_start floodgate env ENVIRONMENT=production LOG_LEVEL=info RATE_LIMIT=10000000 \
                SERVER_PORT="$addr" FLOODGATE__LOG__ACCESS_LOG_PATH="$work/access.log" "$release/floodgate" ;;
        bare-axum)
            server_start bare-axum env SERVER_PORT="$addr" "$release/examples/bare_axum" ;;
        bare-hyper)
            server_start bare-hyper env SERVER_PORT="$addr" "$release/examples/bare_hyper" ;;
        floodgate-redis)
            # The same production configuration, with the rate limit decided in Redis.
            server_start floodgate-redis env ENVIRONMENT=production LOG_LEVEL=info RATE_LIMIT=10000000 \
                RATE_LIMIT_BACKEND=redis REDIS_URL="redis://127.0.0.1:$redis_port/0" \
                SERVER_PORT="$addr" FLOODGATE__LOG__ACCESS_LOG_PATH="$work/access.log" "$release/floodgate" ;;
    esac
    server_await "answer /health on $addr" http_ok "$addr" /health
    startup_ms=$(( ($(now_us) - t0) / 1000 ))
}

# ---------------------------------------------------------------- generators
# Each sets: r_requests r_rps r_p50_us r_p99_us r_non2xx r_errors
run_wrk() { # METHOD PATH CONNECTIONS
    local out line kv
    out=$(BENCH_METHOD=$1 taskset -c 1 wrk -t1 -c"$3" -d"${duration}s" --timeout 5s -s "$lua" \
        "http://$addr$2" 2>&1) || { log "wrk failed: $out"; exit 1; }
    line=$(grep '^BENCH ' <<<"$out") || { log "unexpected wrk output: $out"; exit 1; }
    for kv in ${line#BENCH }; do
        case ${kv%%=*} in
            requests) r_requests=${kv#*=} ;;
            rps) r_rps=${kv#*=} ;;
            p50_us) r_p50_us=${kv#*=} ;;
            p99_us) r_p99_us=${kv#*=} ;;
            non2xx) r_non2xx=${kv#*=} ;;
            socket_errors) r_errors=${kv#*=} ;;
        esac
    done
}

run_floodgate_load() { # METHOD PATH CONNECTIONS
    local out fields responses successful body=()
    [ "$1" = POST ] && body=(--body '{"number": 42}')
    out=$(taskset -c 1 "$release/floodgate-load" --url "http://$addr" --method "$1" --path "$2" \
        "${body[@]}" --threads 1 --concurrency "$3" --duration "${duration}s" \
        --requests 1000000000 --warmup 0 --no-health-check --no-server-metrics \
        --quiet --output json 2>"$work/load.err") || true
    # Latencies in whole microseconds; no latency at all (no responses) counts as 0.
    if ! fields=$(jq -er '.scenarios[0]
            | [.requests.total, .rps,
               ((.latency_ms.p50_ms // 0) * 1000 | floor), ((.latency_ms.p99_ms // 0) * 1000 | floor),
               .requests.responses, .requests.successful]
            | if any(. == null) then null else @tsv end' <<<"$out" 2>/dev/null); then
        log "unexpected floodgate-load output: $out $(cat "$work/load.err")"
        exit 1
    fi
    read -r r_requests r_rps r_p50_us r_p99_us responses successful <<<"$fields"
    r_non2xx=$((responses - successful))
    r_errors=$((r_requests - responses))
}

# ---------------------------------------------------------------- plan
cases=(health fast intensive)
declare -A method=([health]=GET [fast]=POST [intensive]=POST)
declare -A path=([health]=/health [fast]=/api/v1/compute/fast [intensive]=/api/v1/compute/intensive)
# The many-connections run of the fast case.
big_case=fast-c$big_connections
method[$big_case]=POST
path[$big_case]=${path[fast]}
declare -A servers=([health]="bare-hyper bare-axum floodgate" [fast]="bare-hyper bare-axum floodgate" [intensive]="bare-axum floodgate")
# With redis-server installed, the fast case also runs floodgate with its limiter in Redis
# (pinned with the load generator, as it would be on another machine).
redis_port=$((port + 1))
if command -v redis-server >/dev/null; then
    taskset -c 1 redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$work" >"$work/redis.log" 2>&1 &
    redis_pid=$!
    trap 'kill "$redis_pid" 2>/dev/null || true; bench_cleanup' EXIT
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null && break
        sleep 0.05
    done
    servers[fast]+=" floodgate-redis"
else
    log "redis-server not found: the Redis limiter is not measured"
fi
generators=(wrk)
[ "$have_load" = 1 ] && generators+=(floodgate-load)

total=$((starts + 2))
for g in "${generators[@]}"; do
    for c in "${cases[@]}"; do
        read -ra list <<<"${servers[$c]}"
        total=$((total + rounds * ${#list[@]}))
    done
done
step=0
progress() { step=$((step + 1)); log "[$step/$total] $*"; }

results=$work/results.tsv
: >"$results"
log "== server on core 0, load on core 1; $connections connections, ${duration}s per run, $rounds round(s) =="

# measure GENERATOR CASE SERVER ROUND CONNECTIONS: one run on a fresh server.
measure() {
    local g=$1 c=$2 s=$3 round=$4 conns=$5 ticks0 ticks1 hwm cpu_us
    start_server "$s"
    ticks0=$(server_cpu_ticks)
    "run_${g//-/_}" "${method[$c]}" "${path[$c]}" "$conns"
    ticks1=$(server_cpu_ticks)
    hwm=$(server_kib VmHWM)
    server_stop
    cpu_us=$(awk -v t=$((ticks1 - ticks0)) -v hz="$clk_tck" -v n="$r_requests" \
        'BEGIN {printf "%.1f", (n > 0 ? t / hz * 1e6 / n : 0)}')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$g" "$c" "$s" "$round" "$conns" \
        "$r_rps" "$r_p50_us" "$r_p99_us" "$r_non2xx" "$r_errors" "$hwm" "$cpu_us" >>"$results"
    log "      $(printf '%.0f' "$r_rps") req/s, p99 $((r_p99_us / 1000)).$(printf '%03d' $((r_p99_us % 1000))) ms, peak RSS $((hwm / 1024)) MiB, non-2xx $r_non2xx, socket errors $r_errors"
}

for g in "${generators[@]}"; do
    for c in "${cases[@]}"; do
        for round in $(seq "$rounds"); do
            for s in ${servers[$c]}; do
                progress "$c: $s run $round ($g)"
                measure "$g" "$c" "$s" "$round" "$connections"
            done
        done
    done
done

startup_file=$work/startup.tsv
: >"$startup_file"
for i in $(seq "$starts"); do
    progress "startup: floodgate start $i"
    start_server floodgate
    sleep 1
    printf '%s\t%s\n' "$startup_ms" "$(server_kib VmRSS)" >>"$startup_file"
    server_stop
    log "      first /health 200 after $startup_ms ms, idle RSS $(( $(tail -n1 "$startup_file" | cut -f2) / 1024 )) MiB"
done

progress "fast: floodgate with $big_connections connections (wrk)"
measure wrk "$big_case" floodgate 1 "$big_connections"
progress "fast: bare-axum with $big_connections connections (wrk)"
measure wrk "$big_case" bare-axum 1 "$big_connections"

# ---------------------------------------------------------------- report
mkdir -p "$out_dir"
{
    printf 'generator\tcase\tserver\tround\tconnections\trps\tp50_us\tp99_us\tnon2xx\tsocket_errors\tpeak_rss_kib\tcpu_us_per_req\n'
    cat "$results"
} >"$out_dir/runs.tsv"
{
    printf 'startup_ms\tidle_rss_kib\n'
    cat "$startup_file"
} >"$out_dir/startup.tsv"
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$root" status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock config 2>/dev/null | head -n1)
[ -n "$dirty" ] && commit="$commit (+ uncommitted changes)"
cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)

awk -F'\t' -v gens="${generators[*]}" -v cases="health fast intensive" \
    -v conns="$connections" -v big="$big_connections" -v dur="$duration" -v rounds="$rounds" \
    -v startup_file="$startup_file" -v starts="$starts" \
    -v nproc="$(nproc --all)" -v cpu="$cpu" -v date="$(date -u '+%Y-%m-%d %H:%M UTC')" \
    -v commit="$commit" -v quick="$([ "$duration" -lt 10 ] && echo 1 || echo 0)" '
function median(list,    a, n, i, j, t) {
    n = split(list, a, " ")
    for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j > 0 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function ms(us) { return sprintf("%.2f ms", us / 1000) }
function mib(kib) { return sprintf("%.1f MiB", kib / 1024) }
function ratio(a, b) { return b > 0 ? a / b : 0 }
function verdict(ok) { return ok ? "PASS" : "**MISS**" }
{
    k = $1 SUBSEP $2 SUBSEP $3
    if (!(k in seen)) { seen[k] = 1 }
    rps[k] = rps[k] " " $6; p50[k] = p50[k] " " $7; p99[k] = p99[k] " " $8; cpu_us[k] = cpu_us[k] " " $12
    bad[k] += $9; err[k] += $10
    if ($11 + 0 > hwm[k]) hwm[k] = $11 + 0
    if ($3 ~ /^floodgate/) { fg_bad += $9 + $10; if ($2 !~ /-c/ && $11 + 0 > fg_hwm) fg_hwm = $11 + 0 }
}
END {
    while ((getline line < startup_file) > 0) { split(line, f, "\t"); st = st " " f[1]; idle = idle " " f[2] }
    m_start = median(st); m_idle = median(idle)

    w = "wrk" SUBSEP
    fast_ratio = ratio(median(rps[w "fast" SUBSEP "floodgate"]), median(rps[w "fast" SUBSEP "bare-axum"]))
    fast_p99 = ratio(median(p99[w "fast" SUBSEP "floodgate"]), median(p99[w "fast" SUBSEP "bare-axum"]))
    int_ratio = ratio(median(rps[w "intensive" SUBSEP "floodgate"]), median(rps[w "intensive" SUBSEP "bare-axum"]))
    redis_ratio = ratio(median(rps[w "fast" SUBSEP "floodgate-redis"]), median(rps[w "fast" SUBSEP "floodgate"]))
    big_k = w "fast-c" big SUBSEP "floodgate"

    if (quick) print "> Smoke run (`--quick`): " dur " s runs, " rounds " round(s); not for publishing.\n"
    print "| target | measured | limit | |"
    print "|---|---|---|---|"
    printf "| fast: floodgate / bare axum req/s | %.2f | ≥ 0.70 | %s |\n", fast_ratio, verdict(fast_ratio >= 0.70)
    printf "| fast: floodgate / bare axum p99 | %.2f× | ≤ 2× | %s |\n", fast_p99, verdict(fast_p99 > 0 && fast_p99 <= 2)
    printf "| intensive: floodgate / bare axum req/s | %.2f | ≥ 0.85 | %s |\n", int_ratio, verdict(int_ratio >= 0.85)
    if ((w "fast" SUBSEP "floodgate-redis") in seen)
        printf "| fast: Redis limiter / local limiter req/s | %.2f | ≥ 0.60 | %s |\n", redis_ratio, verdict(redis_ratio >= 0.60)
    printf "| peak RSS, %d connections (all cases) | %s | ≤ 20 MiB | %s |\n", conns, mib(fg_hwm), verdict(fg_hwm <= 20 * 1024)
    printf "| peak RSS, %d connections (fast) | %s | ≤ 40 MiB | %s |\n", big, mib(hwm[big_k]), verdict(hwm[big_k] <= 40 * 1024)
    printf "| idle RSS after startup | %s | ≤ 10 MiB | %s |\n", mib(m_idle), verdict(m_idle <= 10 * 1024)
    printf "| startup to first `/health` 200 (median of %d) | %d ms | ≤ 50 ms | %s |\n", starts, m_start, verdict(m_start <= 50)
    printf "| non-2xx responses and socket errors (floodgate, all runs) | %d | 0 | %s |\n", fg_bad, verdict(fg_bad == 0)

    ng = split(gens, g, " "); nc = split(cases, c, " "); ns = split("bare-hyper bare-axum floodgate floodgate-redis", s, " ")
    for (gi = 1; gi <= ng; gi++) {
        gen = g[gi]
        if (gen == "wrk") desc = "wrk -t1 -c" conns
        else desc = "floodgate-load --threads 1 --concurrency " conns
        printf "\n%s, %d s per run, median of %d run(s); server on core 0, load on core 1.\n\n", desc, dur, rounds
        print "| case | server | req/s | × bare axum | × bare hyper | p50 | p99 | peak RSS | server CPU/req | non-2xx + errors |"
        print "|---|---|---|---|---|---|---|---|---|---|"
        for (ci = 1; ci <= nc; ci++) {
            ax = median(rps[gen SUBSEP c[ci] SUBSEP "bare-axum"]); hy = median(rps[gen SUBSEP c[ci] SUBSEP "bare-hyper"])
            for (si = 1; si <= ns; si++) {
                k = gen SUBSEP c[ci] SUBSEP s[si]
                if (!(k in seen)) continue
                r = median(rps[k])
                printf "| %s | %s | %.0f | %s | %s | %s | %s | %s | %.1f µs | %d |\n", c[ci], s[si], r,
                    (ax > 0 ? sprintf("%.2f", r / ax) : "–"), (hy > 0 ? sprintf("%.2f", r / hy) : "–"),
                    ms(median(p50[k])), ms(median(p99[k])), mib(hwm[k]), median(cpu_us[k]), bad[k] + err[k]
            }
        }
    }
    printf "\nwrk -t1 -c%d, fast case, one run:\n\n", big
    print "| server | req/s | p50 | p99 | peak RSS | non-2xx + errors |"
    print "|---|---|---|---|---|---|"
    for (si = 2; si <= 3; si++) {
        k = w "fast-c" big SUBSEP s[si]
        if (!(k in seen)) continue
        printf "| %s | %.0f | %s | %s | %s | %d |\n", s[si], median(rps[k]), ms(median(p50[k])), ms(median(p99[k])), mib(hwm[k]), bad[k] + err[k]
    }
    printf "\n%d CPUs (%s), %s, floodgate %s. floodgate in production configuration: JSON logs, access log to a file, metrics, request IDs, timeouts, rate limiter on.\n", nproc, cpu, date, commit
}' "$results" | tee "$out_dir/results.md"

log "report written to $out_dir/results.md; raw runs in $out_dir/runs.tsv, starts in $out_dir/startup.tsv"
