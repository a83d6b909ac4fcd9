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
# Then durable jobs (API v2), with floodgate-load --scenario jobs (skipped
# without floodgate-load): jobs submitted and completed per second, time to
# completion and submit latency, every digest checked, on SQLite and, when
# PostgreSQL's initdb and pg_ctl are found, on PostgreSQL (a fresh copy of one
# initdb cluster per run, pinned with the load generator as if on another
# machine; as root it runs as the `postgres` user); and the p99 of the v1 fast
# endpoint (floodgate-load) while jobs run, against its p99 alone.
# Then gRPC (with floodgate-load --grpc --threads 1): the Fast RPC on floodgate's
# full stack against a bare tonic server with the same generated service
# (examples/bare_tonic.rs), alternating ROUNDS times.
# With SWEEP=1 (or --sweep-only, which runs nothing else), last: the fast case
# as an open-loop sweep (floodgate-load --sweep, --threads 1) against bare axum
# and against floodgate, each freshly started: offered rates stepped up until
# p99 passes SWEEP_MAX_P99 ms or errors appear, both latency-versus-throughput
# curves drawn on one chart (floodgate-load --compare) in target/bench/sweep.html,
# their knees in target/bench/sweep.md (appended to results.md in a full run).
# The sweeps alternate (SWEEP_ROUNDS rounds, the order reversed every other round,
# all from the same start rate) over bare axum, lean axum (examples/lean_axum.rs:
# bare axum with the least of floodgate's per-request features), floodgate and
# floodgate-fixed (admission.adaptive = false): the knee ratio to bare axum is the
# median of the rounds' ratios (target/bench/knee.json), not judged when bare
# axum's own knee moved more than 25 % between rounds (the machine drifted).
# With OVERLOAD=1 (or --overload-only), last: the overload scenarios of
# scripts/lib/bench-overload.sh, adaptive admission against the fixed limits
# side by side (intensive open loop at 80 %, 2x and 5x its capacity with
# /health probed alongside; fast at 50 % with intensive at 5x; a CPU hog on the
# server's core half-way through a 2x run), figures and targets in
# target/bench/overload.json and overload.md (appended to results.md).
#
# floodgate runs with its production configuration: ENVIRONMENT=production
# (JSON logs), the access log written to a file, metrics, request IDs,
# timeouts, LOG_LEVEL=info, and the rate limiter on with a limit far above
# what one core can serve.
#
# Prints a markdown report (targets first) to stdout and writes it to
# target/bench/results.md, and the same figures as target/bench/results.json
# (scripts/bench-report.py, which also regenerates docs/performance.md's tables from it);
# progress lines go to stderr.
#
# Usage: scripts/bench.sh [--quick] [--no-build] [--sweep-only] [--jobs-only] [--overload-only]
#   --quick          2 s runs, one round, 3 starts (1 s sweep steps, one sweep round,
#                    3 s overload runs, 6 s slowed-machine run): a smoke test of the harness
#   --no-build       use the release binaries already in the target directory
#   --sweep-only     only the sweeps (needs floodgate-load)
#   --jobs-only      only the durable jobs, and the fast case alone with floodgate-load (the
#                    reference of the fast p99 while jobs run); needs floodgate-load
#   --overload-only  only the overload scenarios (needs floodgate-load); with
#                    --sweep-only, both
# Env: DURATION (s, default 10), ROUNDS (3), CONNECTIONS (64),
#      BIG_CONNECTIONS (500), STARTS (5), BENCH_PORT (18181; +1 Redis, +2 PostgreSQL),
#      JOBS_CONNECTIONS (jobs followed at once, 16), JOBS_ROUNDS (rounds per
#      job; default: the server's), JOBS_POLL_INTERVAL (20ms), PG_CLIENTS (pgbench clients
#      of the PostgreSQL reference, 16),
#      BENCH_DB_DIR (directory of the SQLite jobs database, $CARGO_TARGET_DIR/bench),
#      BENCH_LOCK (/tmp/floodgate-bench.lock; empty: take no lock),
#      SWEEP (1: add the sweeps to a full run), SWEEP_RATES (floodgate-load
#      --sweep: auto, or START..END[:STEP] req/s), SWEEP_STEP (each step, 3s),
#      SWEEP_MAX_P99 (ms, 10), SWEEP_RETRIES (a step over the limit is run again
#      this many times before it counts, 1), SWEEP_CONNECTIONS (128), SWEEP_ROUNDS (3),
#      OVERLOAD (1: add the overload scenarios to a full run), OVERLOAD_DURATION
#      (s per overload run, 20), HOG_DURATION (s of the slowed-machine run, 30),
#      OVERLOAD_CONNECTIONS (most requests in flight, 2000), OVERLOAD_FAST_CONNECTIONS
#      (the mixed case's fast client, SWEEP_CONNECTIONS), MIXED_LEAD (s the mixed case's
#      intensive flood runs before its fast client starts, 2), CARGO_TARGET_DIR,
#      BENCH_TRACES (1: floodgate samples BENCH_TRACE_RATIO of requests, 0.1 by
#      default, and exports their spans to a rotel-agent that drops them (+3), so its
#      duration histograms carry exemplars, as in production; 0: no tracing).
# Needs: wrk, taskset (util-linux), flock, jq, at least 2 CPU cores, Linux /proc;
# optional: redis-server, PostgreSQL's initdb and pg_ctl (on PATH or in
# /usr/lib/postgresql/*/bin), runuser when run as root, rotel-agent (on PATH or
# installed by scripts/install-test-tools.sh) for the traces and exemplars.
# Shares its server handling with scripts/bench-load-client.sh (scripts/lib/bench-common.sh).
set -euo pipefail

duration=${DURATION:-10}
rounds=${ROUNDS:-3}
starts=${STARTS:-5}
build=1
sweep=${SWEEP:-0}
sweep_only=0
jobs_only=0
sweep_step=${SWEEP_STEP:-3s}
sweep_rounds=${SWEEP_ROUNDS:-3}
overload=${OVERLOAD:-0}
overload_only=0
for arg in "$@"; do
    case $arg in
        --quick) duration=${DURATION:-2}; rounds=${ROUNDS:-1}; starts=${STARTS:-3}; sweep_step=${SWEEP_STEP:-1s}
                 sweep_rounds=${SWEEP_ROUNDS:-1}; export OVERLOAD_DURATION=${OVERLOAD_DURATION:-3} HOG_DURATION=${HOG_DURATION:-6} ;;
        --no-build) build=0 ;;
        --sweep-only) sweep=1; sweep_only=1 ;;
        --jobs-only) jobs_only=1 ;;
        --overload-only) overload=1; overload_only=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "usage: $0 [--quick] [--no-build] [--sweep-only] [--jobs-only] [--overload-only]" >&2; exit 2 ;;
    esac
done
sweep_rates=${SWEEP_RATES:-auto}
sweep_max_p99=${SWEEP_MAX_P99:-10}
sweep_retries=${SWEEP_RETRIES:-1}
sweep_connections=${SWEEP_CONNECTIONS:-128}
connections=${CONNECTIONS:-64}
big_connections=${BIG_CONNECTIONS:-500}
jobs_connections=${JOBS_CONNECTIONS:-16}
jobs_rounds=${JOBS_ROUNDS:-}
jobs_poll=${JOBS_POLL_INTERVAL:-20ms}
pg_clients=${PG_CLIENTS:-16}
port=${BENCH_PORT:-18181}
traces=${BENCH_TRACES:-1}
trace_ratio=${BENCH_TRACE_RATIO:-0.1}
lock=${BENCH_LOCK-/tmp/floodgate-bench.lock}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=scripts/lib/bench-common.sh
. "$root/scripts/lib/bench-common.sh"
# shellcheck source=scripts/lib/bench-overload.sh
. "$root/scripts/lib/bench-overload.sh"

require_tools "apt-get install wrk util-linux jq" wrk taskset flock jq cargo awk
require_cores
target_dir=${CARGO_TARGET_DIR:-$root/target}
release=$target_dir/release
lua=$root/scripts/bench-wrk.lua
out_dir=$target_dir/bench
db_dir=${BENCH_DB_DIR:-$out_dir}

# ---------------------------------------------------------------- build
have_load=0
if [ "$build" = 1 ]; then
    log "== building release binaries (fat LTO: this takes a while) =="
    if [ "$jobs_only" = 1 ]; then
        # The jobs are bound by the database: the plain release build serves.
        cargo build --release --bin floodgate
    else
        # floodgate as the image is built: laid out by a profile of itself.
        scripts/release-build.sh
        cargo build --release --example bare_hyper --example bare_axum --example lean_axum --example bare_tonic
    fi
    if cargo build --release -p floodgate-load --bin floodgate-load; then
        have_load=1
    else
        log "floodgate-load does not build: measuring with wrk only"
    fi
elif [ -x "$release/floodgate-load" ]; then
    have_load=1
fi
bins=("$release/floodgate")
[ "$jobs_only" = 1 ] || bins+=("$release/examples/bare_hyper" "$release/examples/bare_axum" "$release/examples/lean_axum" "$release/examples/bare_tonic")
for bin in "${bins[@]}"; do
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

# ---------------------------------------------------------------- traces
# floodgate's environment for tracing: a sampled share of requests, exported over OTLP to a
# collector on core 1 that drops them; sampled requests leave exemplars on the histograms.
trace_env=()
otel_pid=
if [ "$traces" = 1 ]; then
    rotel=$(command -v rotel-agent || echo "${FLOODGATE_TOOLS:-$HOME/.cache/floodgate-tools}/bin/rotel-agent")
    if [ -x "$rotel" ]; then
        otel_port=$((port + 3))
        taskset -c 1 "$rotel" start --otlp-grpc-endpoint "127.0.0.1:$otel_port" \
            --otlp-http-endpoint "127.0.0.1:$((port + 4))" --exporter blackhole \
            >"$work/rotel.log" 2>&1 &
        otel_pid=$!
        for _ in $(seq 200); do
            (exec 3<>"/dev/tcp/127.0.0.1/$otel_port") 2>/dev/null && break
            sleep 0.05
        done
        trace_env=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$otel_port" OTEL_EXPORTER_OTLP_PROTOCOL=grpc
            OTEL_TRACES_SAMPLER=traceidratio OTEL_TRACES_SAMPLER_ARG="$trace_ratio")
        log "traces: $trace_ratio of floodgate's requests sampled (exemplars on), spans to rotel-agent on 127.0.0.1:$otel_port"
    else
        log "rotel-agent not found (scripts/install-test-tools.sh): floodgate runs without traces or exemplars"
        traces=0
    fi
fi

# Everything this script starts besides the server under test, stopped on exit.
redis_pid=
jobs_pid=
pg_dir=
pg_data=
jobs_db=
fleet_pids=()
fleet_addrs=()
cleanup() {
    hog_stop
    server_stop
    fleet_stop
    if [ -n "$jobs_pid" ]; then kill "$jobs_pid" 2>/dev/null || true; fi
    if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null || true; fi
    if [ -n "${otel_pid:-}" ]; then kill "$otel_pid" 2>/dev/null || true; fi
    if [ -n "$pg_data" ]; then pg_stop; fi
    if [ -n "$pg_dir" ]; then rm -rf "$pg_dir"; fi
    if [ -n "$jobs_db" ]; then rm -f "$jobs_db" "$jobs_db-wal" "$jobs_db-shm"; fi
    bench_cleanup
}
trap cleanup EXIT

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
            server_start floodgate env ENVIRONMENT=production LOG_LEVEL=info RATE_LIMIT=10000000 "${trace_env[@]}" \
                SERVER_PORT="$addr" FLOODGATE__LOG__ACCESS_LOG_PATH="$work/access.log" \
                DATABASE_URL="sqlite://$work/jobs.db" "$release/floodgate" ;;
        floodgate-fixed)
            # The same production configuration with the fixed limits of before: the baseline
            # of the overload scenarios.
            server_start floodgate-fixed env ENVIRONMENT=production LOG_LEVEL=info RATE_LIMIT=10000000 "${trace_env[@]}" \
                FLOODGATE__ADMISSION__ADAPTIVE=false \
                SERVER_PORT="$addr" FLOODGATE__LOG__ACCESS_LOG_PATH="$work/access.log" \
                DATABASE_URL="sqlite://$work/jobs.db" "$release/floodgate" ;;
        bare-axum)
            server_start bare-axum env SERVER_PORT="$addr" "$release/examples/bare_axum" ;;
        lean-axum)
            # bare axum with the least of floodgate's per-request features in one layer.
            server_start lean-axum env SERVER_PORT="$addr" ACCESS_LOG_PATH="$work/lean-access.log" \
                "$release/examples/lean_axum" ;;
        bare-hyper)
            server_start bare-hyper env SERVER_PORT="$addr" "$release/examples/bare_hyper" ;;
        bare-tonic)
            # gRPC only, no /health: ready once it says it listens.
            server_start bare-tonic env SERVER_PORT="$addr" "$release/examples/bare_tonic"
            server_await "start listening" server_listening
            startup_ms=$(( ($(now_us) - t0) / 1000 ))
            return ;;
        floodgate-redis)
            # The same production configuration, with the rate limit decided in Redis.
            server_start floodgate-redis env ENVIRONMENT=production LOG_LEVEL=info RATE_LIMIT=10000000 "${trace_env[@]}" \
                RATE_LIMIT_BACKEND=redis REDIS_URL="redis://127.0.0.1:$redis_port/0" \
                SERVER_PORT="$addr" FLOODGATE__LOG__ACCESS_LOG_PATH="$work/access.log" \
                DATABASE_URL="sqlite://$work/jobs.db" "$release/floodgate" ;;
        floodgate-sqlite)
            # The same production configuration, its jobs in a new SQLite database.
            rm -f "$jobs_db" "$jobs_db-wal" "$jobs_db-shm"
            server_start floodgate-sqlite env ENVIRONMENT=production LOG_LEVEL=info RATE_LIMIT=10000000 "${trace_env[@]}" \
                DATABASE_URL="sqlite://$jobs_db" \
                SERVER_PORT="$addr" FLOODGATE__LOG__ACCESS_LOG_PATH="$work/access.log" "$release/floodgate" ;;
        floodgate-postgres)
            # The same, its jobs in a fresh PostgreSQL cluster (pg_start).
            server_start floodgate-postgres env ENVIRONMENT=production LOG_LEVEL=info RATE_LIMIT=10000000 "${trace_env[@]}" \
                DATABASE_URL="postgres://floodgate@127.0.0.1:$pg_port/postgres" \
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

# parse_load_report REPORT: sets the r_* variables from floodgate-load's JSON
# report (its first scenario); exits with the output and $work/load.err when
# REPORT is not one. Latencies in whole microseconds; no latency at all (no
# responses) counts as 0.
parse_load_report() {
    local fields responses successful
    if ! fields=$(jq -er '.scenarios[0]
            | [.requests.total, .rps,
               ((.latency_ms.p50_ms // 0) * 1000 | floor), ((.latency_ms.p99_ms // 0) * 1000 | floor),
               .requests.responses, .requests.successful]
            | if any(. == null) then null else @tsv end' <<<"$1" 2>/dev/null); then
        log "unexpected floodgate-load output: $1 $(cat "$work/load.err")"
        exit 1
    fi
    read -r r_requests r_rps r_p50_us r_p99_us responses successful <<<"$fields"
    r_non2xx=$((responses - successful))
    r_errors=$((r_requests - responses))
}

run_floodgate_load() { # METHOD PATH CONNECTIONS
    local out body=()
    [ "$1" = POST ] && body=(--body '{"number": 42}')
    out=$(taskset -c 1 "$release/floodgate-load" --url "http://$addr" --method "$1" --path "$2" \
        "${body[@]}" --threads 1 --concurrency "$3" --duration "${duration}s" \
        --requests 1000000000 --warmup 0 --no-health-check --no-server-metrics \
        --quiet --output json 2>"$work/load.err") || true
    parse_load_report "$out"
}

run_grpc_load() { # METHOD PATH CONNECTIONS (the path names the RPC)
    local out scenario=fast
    [[ $2 == */Intensive ]] && scenario=intensive
    out=$(taskset -c 1 "$release/floodgate-load" --url "http://$addr" --grpc --scenario "$scenario" \
        --threads 1 --concurrency "$3" --duration "${duration}s" \
        --requests 1000000000 --warmup 0 --no-health-check --no-server-metrics \
        --quiet --output json 2>"$work/load.err") || true
    parse_load_report "$out"
}

# jobs_start CONNECTIONS SECONDS OUT: floodgate-load --scenario jobs in the
# background, its JSON report to OUT; sets jobs_pid.
jobs_start() {
    local per_job=() urls=(--url "http://$addr")
    [ -n "$jobs_rounds" ] && per_job=(--rounds "$jobs_rounds")
    for a in "${fleet_addrs[@]}"; do urls+=(--url "http://$a"); done
    taskset -c 1 "$release/floodgate-load" "${urls[@]}" --scenario jobs "${per_job[@]}" \
        --poll-interval "$jobs_poll" --threads 1 --concurrency "$1" --duration "${2}s" \
        --requests 1000000000 --warmup 0 --no-server-metrics --quiet --output json \
        >"$3" 2>"$work/jobs.err" &
    jobs_pid=$!
}

# jobs_wait OUT: waits for jobs_start's run (a wrong digest exits 4: it is
# recorded, not fatal here) and sets: j_submitted j_completed (per second)
# j_ttc_p50_us j_ttc_p99_us j_submit_p99_us j_wrong j_bad (failed, cancelled,
# lost or not submitted).
jobs_wait() {
    local fields
    wait "$jobs_pid" || true
    jobs_pid=
    if ! fields=$(jq -er '.scenarios[0].jobs
            | [.submitted_per_sec, .completed_per_sec,
               ((.time_to_completion_ms.p50_ms // 0) * 1000 | floor),
               ((.time_to_completion_ms.p99_ms // 0) * 1000 | floor),
               ((.submit_latency_ms.p99_ms // 0) * 1000 | floor),
               .digest_mismatches, (.failed + .cancelled + .lost + .submit_failed)]
            | if any(. == null) then null else @tsv end' "$1" 2>/dev/null); then
        log "unexpected floodgate-load --scenario jobs output: $(cat "$1" "$work/jobs.err")"
        exit 1
    fi
    read -r j_submitted j_completed j_ttc_p50_us j_ttc_p99_us j_submit_p99_us j_wrong j_bad <<<"$fields"
}

# ---------------------------------------------------------------- PostgreSQL
# pg_find: sets pg_initdb and pg_ctl to those programs, and pg_as to the user to
# run them as (initdb refuses root); else returns 1 and sets pg_skip.
pg_initdb=
pg_ctl=
pg_as=
pg_skip=
pg_port=$((port + 2))
pg_find() {
    local d
    if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
        pg_initdb=$(command -v initdb)
        pg_ctl=$(command -v pg_ctl)
    else
        for d in /usr/lib/postgresql/*/bin; do
            if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then pg_initdb=$d/initdb pg_ctl=$d/pg_ctl; fi
        done
    fi
    if [ -z "$pg_ctl" ]; then
        pg_skip="initdb and pg_ctl not found"
        return 1
    fi
    if [ "$(id -u)" = 0 ]; then
        if ! id -u postgres >/dev/null 2>&1 || ! command -v runuser >/dev/null; then
            pg_skip="running as root with no postgres user or no runuser to run PostgreSQL as"
            return 1
        fi
        pg_as=postgres
    fi
}

pg_run() { # CMD...: as pg_as, if set
    if [ -n "$pg_as" ]; then runuser -u "$pg_as" -- "$@"; else "$@"; fi
}

# pg_init: one cluster (user floodgate, trust on 127.0.0.1) that each run copies.
pg_init() {
    pg_dir=$(mktemp -d /tmp/floodgate-bench-pg.XXXXXX)
    if [ -n "$pg_as" ]; then chown "$pg_as" "$pg_dir"; fi
    if ! pg_run "$pg_initdb" -D "$pg_dir/template" -U floodgate --auth=trust -E UTF8 \
            >"$work/initdb.log" 2>&1; then
        pg_skip="initdb failed (see $work/initdb.log)"
        log "PostgreSQL: $pg_skip: $(tail -n 3 "$work/initdb.log")"
        return 1
    fi
}

# pg_start: a fresh copy of the cluster, on core 1 with the load generator.
pg_start() {
    pg_data=$pg_dir/run
    rm -rf "$pg_data"
    cp -a "$pg_dir/template" "$pg_data"
    if ! pg_run taskset -c 1 "$pg_ctl" -D "$pg_data" -l "$pg_dir/postgres.log" -w -s \
            -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1" start; then
        log "PostgreSQL did not start; its log:"
        cat "$pg_dir/postgres.log" >&2 2>/dev/null || true
        exit 1
    fi
}

pg_stop() {
    [ -n "$pg_data" ] || return 0
    pg_run "$pg_ctl" -D "$pg_data" -m fast -w -s stop >/dev/null 2>&1 || true
    pg_data=
}

# fleet_start: two more floodgate replicas on core 0, on the same PostgreSQL as
# floodgate-postgres; jobs_start spreads its jobs over all three.
fleet_start() {
    local i a
    for i in 1 2; do
        a=127.0.0.1:$((port + 4 + i))
        taskset -c 0 env ENVIRONMENT=production LOG_LEVEL=info RATE_LIMIT=10000000 "${trace_env[@]}" \
            DATABASE_URL="postgres://floodgate@127.0.0.1:$pg_port/postgres" \
            SERVER_PORT="$a" FLOODGATE__LOG__ACCESS_LOG_PATH="$work/access-$i.log" \
            "$release/floodgate" >"$work/replica-$i.out" 2>&1 &
        fleet_pids+=($!)
        fleet_addrs+=("$a")
    done
    for a in "${fleet_addrs[@]}"; do
        server_await "start a replica on $a" http_ok "$a" /health
    done
}

fleet_stop() {
    local pid
    for pid in "${fleet_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${fleet_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    fleet_pids=()
    fleet_addrs=()
}

# pg_reference: the database's own commit rate, pgbench's one-line INSERT with
# PG_CLIENTS clients, where the replicas would run (core 0), on the fresh cluster
# pg_start made; sets pg_inserts.
pg_reference() {
    local pgbench psql d
    for d in "$(dirname "$pg_ctl")" /usr/lib/postgresql/*/bin; do
        if [ -x "$d/pgbench" ] && [ -x "$d/psql" ]; then pgbench=$d/pgbench psql=$d/psql; fi
    done
    [ -n "$pgbench" ] || { log "pgbench and psql not found next to $pg_ctl"; exit 1; }
    pg_run "$psql" -h 127.0.0.1 -p "$pg_port" -U floodgate -d postgres -q \
        -c "CREATE TABLE bench_inserts (id bigserial PRIMARY KEY, v text NOT NULL)" >/dev/null
    echo "INSERT INTO bench_inserts (v) VALUES ('x');" >"$work/insert.sql"
    pg_inserts=$(taskset -c 0 "$pgbench" -h 127.0.0.1 -p "$pg_port" -U floodgate -n \
        -c "$pg_clients" -j 2 -M prepared -T "$duration" -f "$work/insert.sql" postgres \
        2>"$work/pgbench.err" | awk '/^tps = / {print $3}')
    [ -n "$pg_inserts" ] || { log "pgbench failed: $(tail -n 3 "$work/pgbench.err")"; exit 1; }
}

# ---------------------------------------------------------------- sweeps
# run_sweeps: the fast case as an open-loop sweep against bare axum, lean axum,
# floodgate and floodgate-fixed, each freshly started on core 0 (floodgate-load --threads 1
# on core 1; floodgate's /metrics checked at every step), SWEEP_ROUNDS rounds in
# alternating order (bare axum first, then last, …), every sweep from the same
# start rate. The last round's curves on one chart in $out_dir/sweep.html; every
# knee and the median of the rounds' knee ratios to bare axum in
# $out_dir/sweep.md and $out_dir/knee.json.
run_sweeps() {
    local s r json order curves=() metrics=() knees=$work/knees.jsonl
    local -a servers_fwd=(bare-axum lean-axum floodgate floodgate-fixed) servers_rev=(floodgate-fixed floodgate lean-axum bare-axum)
    mkdir -p "$out_dir"
    : >"$knees"
    for r in $(seq "$sweep_rounds"); do
        if [ $((r % 2)) = 1 ]; then order=("${servers_fwd[@]}"); else order=("${servers_rev[@]}"); fi
        curves=()
        for s in "${order[@]}"; do
            log "== sweep $r/$sweep_rounds, fast case: $s (rates $sweep_rates, $sweep_step per step, until p99 > $sweep_max_p99 ms or errors > 1 %) =="
            start_server "$s"
            json=$out_dir/sweep-$s-$r.json
            metrics=()
            [[ $s == floodgate* ]] || metrics=(--no-server-metrics)
            if ! taskset -c 1 "$release/floodgate-load" --url "http://$addr" --scenario fast --threads 1 \
                    --concurrency "$sweep_connections" --sweep "$sweep_rates" --sweep-step-duration "$sweep_step" \
                    --sweep-max-p99 "$sweep_max_p99" --sweep-retries "$sweep_retries" "${metrics[@]}" --output json --output-file "$json" \
                    2>"$work/sweep.err"; then
                log "floodgate-load --sweep failed against $s:"
                cat "$work/sweep.err" >&2
                exit 1
            fi
            grep '^Sweep ' "$work/sweep.err" | sed 's/^/      /' >&2 || true
            server_stop
            cp "$json" "$out_dir/sweep-$s.json"
            curves+=(--compare "$s=$json")
            jq -c --arg s "$s" --argjson r "$r" '.sweeps[0] | {server: $s, round: $r,
                knee: (.knee.offered_rate // null), achieved: (.knee.achieved_rate // null),
                p50_ms: (.knee.p50_ms // null), p99_ms: (.knee.p99_ms // null),
                steps: (.steps | length), not_judged: ([.steps[] | select(.not_judged == true)] | length),
                stopped: .stopped}' "$json" >>"$knees"
        done
    done
    "$release/floodgate-load" "${curves[@]}" --quiet --output html --output-file "$out_dir/sweep.html"
    jq -s --arg rates "$sweep_rates" --arg step "$sweep_step" --argjson max_p99 "$sweep_max_p99" --argjson retries "$sweep_retries" '
        def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor]
            else (.[length / 2 - 1] + .[length / 2]) / 2 end;
        def ratios($s): group_by(.round) | map((map(select(.server == $s))[0].knee) as $k
            | (map(select(.server == "bare-axum"))[0].knee) as $b
            | if $k == null or $b == null or $b == 0 then null else $k / $b end) | map(select(. != null));
        {rates: $rates, step: $step, max_p99_ms: $max_p99, retries: $retries, knees: .,
         floodgate_ratio: (ratios("floodgate") | median), floodgate_fixed_ratio: (ratios("floodgate-fixed") | median),
         floodgate_ratios: ratios("floodgate"), floodgate_fixed_ratios: ratios("floodgate-fixed"),
         lean_axum_ratio: (ratios("lean-axum") | median), lean_axum_ratios: ratios("lean-axum"),
         # How far the reference knee moved between rounds: on a shared machine whose speed
         # drifts, the ratios of different rounds stop being comparable; the target is not judged.
         reference_spread: ([.[] | select(.server == "bare-axum") | .knee | select(. != null)]
             | if length < 2 then 0 else (max - min) / median end)}
        | .reliable = (.reference_spread <= 0.25)
        | .unjudged = (if .reliable then null
              else "not judged: bare axum'"'"'s knee moved \(.reference_spread * 100 | round) % between rounds" end)
        | .targets = [{key: "knee_ratio", label: ("fast open-loop knee: floodgate / bare axum (median of alternating sweeps)"
                           + (if .unjudged then ", " + .unjudged else "" end)),
                       measured: (if .floodgate_ratio then (.floodgate_ratio * 100 | round / 100) else null end),
                       limit: "≥ 0.85", met: (.reliable and .floodgate_ratio != null and .floodgate_ratio >= 0.85)}]' \
        "$knees" >"$out_dir/knee.json"
    {
        printf '\nFast case as an open-loop sweep: floodgate-load --sweep %s --threads 1 --concurrency %s, %s per step, until p99 > %s ms or more than 1 %% errors (latency from the scheduled send time), a step over the limits run again up to %s time(s) before it counts, and one over them while the host took more than 2 %% of the CPU time (steal) not judged but run again, up to 3 times in a row; server on core 0, load on core 1; %s round(s), the order reversed every other round. Last round: %s.\n\n' \
            "$sweep_rates" "$sweep_connections" "$sweep_step" "$sweep_max_p99" "$sweep_retries" "$sweep_rounds" "${out_dir#"$root"/}/sweep.html"
        jq -r '"| knee ratio to bare axum (median of the rounds) | floodgate \(.floodgate_ratio // "–" | if type == "number" then . * 100 | round / 100 else . end) | floodgate-fixed \(.floodgate_fixed_ratio // "–" | if type == "number" then . * 100 | round / 100 else . end) | lean axum \(.lean_axum_ratio // "–" | if type == "number" then . * 100 | round / 100 else . end) | target ≥ 0.85: \(.unjudged // if .targets[0].met then "PASS" else "**MISS**" end) |", "|---|---|---|---|---|", ""' "$out_dir/knee.json"
        echo "| round | server | knee: offered req/s | achieved req/s | p50 | p99 | steps | stopped |"
        echo "|---|---|---|---|---|---|---|---|"
        jq -r '.knees[] | [.round, .server, (.knee // "none" | if type == "number" then floor else . end),
                (.achieved // "–" | if type == "number" then floor else . end),
                (.p50_ms // "–" | if type == "number" then "\(. * 100 | round / 100) ms" else . end),
                (.p99_ms // "–" | if type == "number" then "\(. * 100 | round / 100) ms" else . end),
                (if (.not_judged // 0) > 0 then "\(.steps) (\(.not_judged) not judged)" else .steps end),
                .stopped] | "| " + (map(tostring) | join(" | ")) + " |"' "$out_dir/knee.json"
    } >"$out_dir/sweep.md"
    cat "$out_dir/sweep.md"
    log "sweeps: chart in $out_dir/sweep.html, knees in $out_dir/knee.json, reports in $out_dir/sweep-SERVER-ROUND.json"
}

# write_meta: the date, commit and machine of this run, for bench-report.py.
write_meta() {
    local commit dirty cpu
    commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
    dirty=$(git -C "$root" status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock config 2>/dev/null | head -n1)
    [ -n "$dirty" ] && commit="$commit (+ uncommitted changes)"
    cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
    mkdir -p "$out_dir"
    jq -n --arg date "$(date -u '+%Y-%m-%d %H:%M UTC')" --arg commit "$commit" --arg cpu "$cpu" \
        --argjson cpus "$(nproc --all)" --argjson duration "$duration" --argjson rounds "$rounds" \
        --arg traces "$([ "$traces" = 1 ] && echo "$trace_ratio of floodgate's requests sampled, exemplars on" || echo off)" \
        '{date: $date, commit: $commit, cpu: $cpu, cpus: $cpus, seconds_per_run: $duration, rounds: $rounds, traces: $traces}' \
        >"$out_dir/meta.json"
}

if [ "$sweep_only" = 1 ] || [ "$overload_only" = 1 ]; then
    if [ "$have_load" != 1 ]; then
        log "--sweep-only and --overload-only need floodgate-load, which did not build or run"
        exit 1
    fi
    log "== server on core 0, load on core 1 =="
    # This run's figures alone: the tables of a full run are not mixed in.
    mkdir -p "$out_dir"
    rm -f "$out_dir/runs.tsv" "$out_dir/startup.tsv" "$out_dir/jobs.tsv" "$out_dir/knee.json" "$out_dir/overload.json"
    write_meta
    : >"$out_dir/results.md"
    if [ "$sweep_only" = 1 ]; then run_sweeps >>"$out_dir/results.md"; fi
    if [ "$overload_only" = 1 ]; then run_overload >>"$out_dir/results.md"; fi
    python3 "$root/scripts/bench-report.py" "$out_dir"
    log "report written to $out_dir/results.md and results.json"
    exit 0
fi

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

# Durable jobs: SQLite always, PostgreSQL when it can be started; both need floodgate-load.
jobs_backends=()
if [ "$have_load" = 1 ]; then
    mkdir -p "$db_dir"
    jobs_db=$(cd "$db_dir" && pwd)/floodgate-bench-jobs.db
    jobs_backends+=(sqlite)
    if pg_find && pg_init; then
        jobs_backends+=(postgres)
    else
        log "PostgreSQL: $pg_skip: jobs are not measured on PostgreSQL"
    fi
else
    pg_skip="floodgate-load unavailable"
    log "floodgate-load unavailable: durable jobs are not measured"
fi

# gRPC: the Fast RPC, floodgate against bare tonic (needs floodgate-load).
method[grpc-fast]=POST
path[grpc-fast]=/floodgate.v1.ComputeService/Fast
grpc_servers=()
[ "$have_load" = 1 ] && grpc_servers=(bare-tonic floodgate)
if [ "$jobs_only" = 1 ]; then
    [ "$have_load" = 1 ] || { log "--jobs-only needs floodgate-load, which did not build or run"; exit 1; }
    generators=(floodgate-load)
    cases=(fast)
    servers[fast]=floodgate
    grpc_servers=()
    starts=0
fi

big_runs=2
[ "$jobs_only" = 1 ] && big_runs=0
total=$((starts + big_runs + 2 * rounds * ${#jobs_backends[@]} + rounds * ${#grpc_servers[@]}))
[[ " ${jobs_backends[*]} " == *" postgres "* ]] && total=$((total + rounds))
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
    local g=$1 c=$2 s=$3 round=$4 conns=$5 ticks0 ticks1 machine0 machine1 hwm cpu_us stolen
    start_server "$s"
    ticks0=$(server_cpu_ticks)
    machine0=$(machine_cpu_ticks)
    "run_${g//-/_}" "${method[$c]}" "${path[$c]}" "$conns"
    machine1=$(machine_cpu_ticks)
    ticks1=$(server_cpu_ticks)
    hwm=$(server_kib VmHWM)
    server_stop
    cpu_us=$(awk -v t=$((ticks1 - ticks0)) -v hz="$clk_tck" -v n="$r_requests" \
        'BEGIN {printf "%.1f", (n > 0 ? t / hz * 1e6 / n : 0)}')
    stolen=$(stolen_pct "$machine0" "$machine1")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$g" "$c" "$s" "$round" "$conns" \
        "$r_rps" "$r_p50_us" "$r_p99_us" "$r_non2xx" "$r_errors" "$hwm" "$cpu_us" "$stolen" >>"$results"
    log "      $(printf '%.0f' "$r_rps") req/s, p99 $((r_p99_us / 1000)).$(printf '%03d' $((r_p99_us % 1000))) ms, peak RSS $((hwm / 1024)) MiB, non-2xx $r_non2xx, socket errors $r_errors, CPU stolen $stolen %"
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

if [ "$jobs_only" = 0 ]; then
    progress "fast: floodgate with $big_connections connections (wrk)"
    measure wrk "$big_case" floodgate 1 "$big_connections"
    progress "fast: bare-axum with $big_connections connections (wrk)"
    measure wrk "$big_case" bare-axum 1 "$big_connections"
fi

jobs_file=$work/jobs.tsv
: >"$jobs_file"
# measure_jobs BACKEND MODE ROUND: one run on a fresh server and database. MODE
# alone: jobs only; mixed: the fast case (floodgate-load) while jobs run, the
# jobs started a second before it and ending a second after.
measure_jobs() {
    local b=$1 mode=$2 round=$3 fast_rps=- fast_p99=- reference=-
    [ "$b" = postgres ] && pg_start
    if [ "$mode" = fleet ]; then
        pg_reference
        reference=$pg_inserts
        log "      reference: $(printf '%.0f' "$pg_inserts") single-row inserts/s (pgbench, $pg_clients clients)"
    fi
    start_server "floodgate-$b"
    [ "$mode" = fleet ] && fleet_start
    if [ "$mode" != mixed ]; then
        jobs_start "$jobs_connections" "$duration" "$work/jobs.json"
    else
        jobs_start "$jobs_connections" $((duration + 2)) "$work/jobs.json"
        sleep 1
        run_floodgate_load POST "${path[fast]}" "$connections"
        fast_rps=$r_rps
        fast_p99=$r_p99_us
    fi
    jobs_wait "$work/jobs.json"
    fleet_stop
    server_stop
    pg_stop
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$b" "$mode" "$round" "$j_submitted" \
        "$j_completed" "$j_ttc_p50_us" "$j_ttc_p99_us" "$j_submit_p99_us" "$j_wrong" "$j_bad" \
        "$fast_rps" "$fast_p99" "$reference" >>"$jobs_file"
    local alongside=
    if [ "$mode" = mixed ]; then
        alongside=$(printf ', fast alongside: %.0f req/s, p99 %d.%03d ms' "$fast_rps" \
            $((fast_p99 / 1000)) $((fast_p99 % 1000)))
    fi
    log "      jobs: $(printf '%.1f' "$j_submitted") submitted/s, $(printf '%.1f' "$j_completed") completed/s, time to completion p99 $((j_ttc_p99_us / 1000)) ms, wrong digests $j_wrong, failed/cancelled/lost $j_bad$alongside"
}

for b in "${jobs_backends[@]}"; do
    for round in $(seq "$rounds"); do
        progress "jobs on $b: run $round"
        measure_jobs "$b" alone "$round"
    done
    for round in $(seq "$rounds"); do
        progress "fast while jobs run on $b: run $round"
        measure_jobs "$b" mixed "$round"
    done
    if [ "$b" = postgres ]; then
        for round in $(seq "$rounds"); do
            progress "jobs on three replicas and one PostgreSQL, against pgbench's inserts: run $round"
            measure_jobs "$b" fleet "$round"
        done
    fi
done

for round in $(seq "$rounds"); do
    for s in "${grpc_servers[@]}"; do
        progress "gRPC fast: $s run $round (floodgate-load --grpc)"
        measure grpc-load grpc-fast "$s" "$round" "$connections"
    done
done

# ---------------------------------------------------------------- report
mkdir -p "$out_dir"
{
    printf 'generator\tcase\tserver\tround\tconnections\trps\tp50_us\tp99_us\tnon2xx\tsocket_errors\tpeak_rss_kib\tcpu_us_per_req\tstolen_pct\n'
    cat "$results"
} >"$out_dir/runs.tsv"
{
    printf 'startup_ms\tidle_rss_kib\n'
    cat "$startup_file"
} >"$out_dir/startup.tsv"
{
    printf 'database\tmode\tround\tsubmitted_per_s\tcompleted_per_s\tttc_p50_us\tttc_p99_us\tsubmit_p99_us\twrong_digests\tfailed_cancelled_lost\tfast_rps\tfast_p99_us\treference_inserts_per_s\n'
    cat "$jobs_file"
} >"$out_dir/jobs.tsv"
jobs_desc="floodgate-load --scenario jobs --threads 1 -c $jobs_connections, polled every $jobs_poll"
if [ -n "$jobs_rounds" ]; then
    jobs_desc+=", $jobs_rounds rounds per job"
else
    jobs_desc+=", the server's default rounds"
fi
db_fs=$( [ -n "$jobs_db" ] && stat -f -c %T "$(dirname "$jobs_db")" 2>/dev/null || echo unknown)
write_meta
commit=$(jq -r .commit "$out_dir/meta.json")
cpu=$(jq -r .cpu "$out_dir/meta.json")
rm -f "$out_dir/knee.json" "$out_dir/overload.json"

awk -F'\t' -v gens="${generators[*]}" -v cases="health fast intensive" \
    -v conns="$connections" -v big="$big_connections" -v dur="$duration" -v rounds="$rounds" \
    -v startup_file="$startup_file" -v starts="$starts" \
    -v jobs_file="$jobs_file" -v jconns="$pg_clients" -v jobs_desc="$jobs_desc" -v pg_skip="$pg_skip" -v db_fs="$db_fs" \
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
    if ($13 + 0 > stolen[k]) stolen[k] = $13 + 0
    if ($13 + 0 > 2) disturbed++
    if ($3 ~ /^floodgate/) { fg_bad += $9 + $10; if ($2 !~ /-c/ && $11 + 0 > fg_hwm) fg_hwm = $11 + 0 }
}
END {
    while ((getline line < startup_file) > 0) { split(line, f, "\t"); st = st " " f[1]; idle = idle " " f[2] }
    m_start = median(st); m_idle = median(idle)
    # Jobs: database, mode (alone|mixed), round, submitted/s, completed/s, time to completion
    # p50/p99, submit p99 (µs), wrong digests, failed+cancelled+lost, fast req/s and p99 (mixed).
    while ((getline line < jobs_file) > 0) {
        split(line, f, "\t"); jk = f[1] SUBSEP f[2]; jseen[jk] = 1; jruns++
        jsub[jk] = jsub[jk] " " f[4]; jdone[jk] = jdone[jk] " " f[5]
        jt50[jk] = jt50[jk] " " f[6]; jt99[jk] = jt99[jk] " " f[7]; js99[jk] = js99[jk] " " f[8]
        jwrong += f[9]; jbad[jk] += f[10]
        if (f[2] == "mixed") { jfrps[f[1]] = jfrps[f[1]] " " f[11]; jfp99[f[1]] = jfp99[f[1]] " " f[12] }
        if (f[2] == "fleet") jref = jref " " f[13]
    }

    w = "wrk" SUBSEP
    fast_ratio = ratio(median(rps[w "fast" SUBSEP "floodgate"]), median(rps[w "fast" SUBSEP "bare-axum"]))
    fast_p99 = ratio(median(p99[w "fast" SUBSEP "floodgate"]), median(p99[w "fast" SUBSEP "bare-axum"]))
    int_ratio = ratio(median(rps[w "intensive" SUBSEP "floodgate"]), median(rps[w "intensive" SUBSEP "bare-axum"]))
    redis_ratio = ratio(median(rps[w "fast" SUBSEP "floodgate-redis"]), median(rps[w "fast" SUBSEP "floodgate"]))
    gk = "grpc-load" SUBSEP "grpc-fast" SUBSEP
    grpc_ratio = ratio(median(rps[gk "floodgate"]), median(rps[gk "bare-tonic"]))
    big_k = w "fast-c" big SUBSEP "floodgate"

    if (quick) print "> Smoke run (`--quick`): " dur " s runs, " rounds " round(s); not for publishing.\n"
    print "| target | measured | limit | |"
    print "|---|---|---|---|"
    printf "| fast: floodgate / bare axum req/s | %.2f | ≥ 0.85 | %s |\n", fast_ratio, verdict(fast_ratio >= 0.85)
    printf "| fast: floodgate / bare axum p99 | %.2f× | ≤ 1.5× | %s |\n", fast_p99, verdict(fast_p99 > 0 && fast_p99 <= 1.5)
    printf "| intensive: floodgate / bare axum req/s | %.2f | ≥ 0.90 | %s |\n", int_ratio, verdict(int_ratio >= 0.90)
    if ((w "fast" SUBSEP "floodgate-redis") in seen)
        printf "| fast: Redis limiter / local limiter req/s | %.2f | ≥ 0.60 | %s |\n", redis_ratio, verdict(redis_ratio >= 0.60)
    if ((gk "floodgate") in seen)
        printf "| gRPC fast: floodgate / bare tonic req/s | %.2f | ≥ 0.75 | %s |\n", grpc_ratio, verdict(grpc_ratio >= 0.75)
    printf "| peak RSS, %d connections (all cases) | %s | ≤ 20 MiB | %s |\n", conns, mib(fg_hwm), verdict(fg_hwm <= 20 * 1024)
    printf "| peak RSS, %d connections (fast) | %s | ≤ 16 MiB | %s |\n", big, mib(hwm[big_k]), verdict(hwm[big_k] <= 16 * 1024)
    printf "| idle RSS after startup | %s | ≤ 12 MiB | %s |\n", mib(m_idle), verdict(m_idle <= 12 * 1024)
    printf "| startup to first `/health` 200 (median of %d) | %d ms | ≤ 50 ms | %s |\n", starts, m_start, verdict(m_start <= 50)
    printf "| non-2xx responses and socket errors (floodgate, all runs) | %d | 0 | %s |\n", fg_bad, verdict(fg_bad == 0)
    if (jruns > 0)
        printf "| jobs: wrong digests or results (all runs) | %d | 0 | %s |\n", jwrong, verdict(jwrong == 0)
    if (("postgres" SUBSEP "fleet") in jseen) {
        fleet_ratio = ratio(median(jdone["postgres" SUBSEP "fleet"]), median(jref))
        printf "| jobs: 3 replicas on PostgreSQL / pgbench inserts, completed/s | %.2f | ≥ 0.40 | %s |\n", fleet_ratio, verdict(fleet_ratio >= 0.40)
    }
    if (("sqlite" SUBSEP "alone") in jseen) {
        sqlite_done = median(jdone["sqlite" SUBSEP "alone"])
        printf "| jobs: SQLite completed/s / 507 (the one-at-a-time claim'"'"'s figure) | %.2f | ≥ 4 | %s |\n", sqlite_done / 507, verdict(sqlite_done >= 4 * 507)
    }
    fkk = "floodgate-load" SUBSEP "fast" SUBSEP "floodgate"
    for (bi2 = split("sqlite postgres", dbs, " "); bi2 >= 1; bi2--) {
        if (!((dbs[bi2] SUBSEP "mixed") in jseen) || !(fkk in seen)) continue
        mixed_ratio = ratio(median(jfp99[dbs[bi2]]), median(p99[fkk]))
        printf "| fast p99 with jobs running on %s / alone | %.2f× | ≤ 1.5× | %s |\n", dbs[bi2], mixed_ratio, verdict(mixed_ratio > 0 && mixed_ratio <= 1.5)
    }

    ng = split(gens, g, " "); nc = split(cases, c, " "); ns = split("bare-hyper bare-axum floodgate floodgate-redis", s, " ")
    for (gi = 1; gi <= ng; gi++) {
        gen = g[gi]
        if (gen == "wrk") desc = "wrk -t1 -c" conns
        else desc = "floodgate-load --threads 1 --concurrency " conns
        printf "\n%s, %d s per run, median of %d run(s); server on core 0, load on core 1.\n\n", desc, dur, rounds
        print "| case | server | req/s | × bare axum | × bare hyper | p50 | p99 | peak RSS | server CPU/req | non-2xx + errors | CPU stolen (most in a run) |"
        print "|---|---|---|---|---|---|---|---|---|---|---|"
        for (ci = 1; ci <= nc; ci++) {
            ax = median(rps[gen SUBSEP c[ci] SUBSEP "bare-axum"]); hy = median(rps[gen SUBSEP c[ci] SUBSEP "bare-hyper"])
            for (si = 1; si <= ns; si++) {
                k = gen SUBSEP c[ci] SUBSEP s[si]
                if (!(k in seen)) continue
                r = median(rps[k])
                printf "| %s | %s | %.0f | %s | %s | %s | %s | %s | %.1f µs | %d | %.2f %% |\n", c[ci], s[si], r,
                    (ax > 0 ? sprintf("%.2f", r / ax) : "–"), (hy > 0 ? sprintf("%.2f", r / hy) : "–"),
                    ms(median(p50[k])), ms(median(p99[k])), mib(hwm[k]), median(cpu_us[k]), bad[k] + err[k], stolen[k]
            }
        }
    }
    if (disturbed > 0)
        printf "\n%d run(s) had more than 2 %% of the machine'"'"'s CPU time stolen by its host (steal; the CPU stolen columns): the server and the load generator stalled alike, so the ratios of those cases measured the host as much as the servers; run the bench again.\n", disturbed
    printf "\nwrk -t1 -c%d, fast case, one run:\n\n", big
    print "| server | req/s | p50 | p99 | peak RSS | non-2xx + errors |"
    print "|---|---|---|---|---|---|"
    for (si = 2; si <= 3; si++) {
        k = w "fast-c" big SUBSEP s[si]
        if (!(k in seen)) continue
        printf "| %s | %.0f | %s | %s | %s | %d |\n", s[si], median(rps[k]), ms(median(p50[k])), ms(median(p99[k])), mib(hwm[k]), bad[k] + err[k]
    }

    if ((gk "floodgate") in seen) {
        printf "\nfloodgate-load --grpc --threads 1 --concurrency %d, Fast RPC, %d s per run, median of %d run(s); server on core 0, load on core 1.\n\n", conns, dur, rounds
        print "| server | req/s | × bare tonic | p50 | p99 | peak RSS | server CPU/req | non-OK | CPU stolen (most in a run) |"
        print "|---|---|---|---|---|---|---|---|---|"
        tonic_rps = median(rps[gk "bare-tonic"])
        split("bare-tonic floodgate", gs, " ")
        for (gi2 = 1; gi2 <= 2; gi2++) {
            k = gk gs[gi2]
            if (!(k in seen)) continue
            r = median(rps[k])
            printf "| %s | %.0f | %s | %s | %s | %s | %.1f µs | %d | %.2f %% |\n", gs[gi2], r, (tonic_rps > 0 ? sprintf("%.2f", r / tonic_rps) : "–"),
                ms(median(p50[k])), ms(median(p99[k])), mib(hwm[k]), median(cpu_us[k]), bad[k] + err[k], stolen[k]
        }
    }

    nb = split("sqlite postgres", db, " "); dbname["sqlite"] = "SQLite"; dbname["postgres"] = "PostgreSQL"
    printf "\nDurable jobs (API v2): %s, %d s per run, median of %d run(s), each on a fresh server and database; SQLite file on %s, PostgreSQL pinned with the load generator.\n\n", jobs_desc, dur, rounds, db_fs
    print "| database | jobs submitted/s | jobs completed/s | time to completion p50 | p99 | submit p99 | failed, cancelled, lost |"
    print "|---|---|---|---|---|---|---|"
    for (bi = 1; bi <= nb; bi++) {
        k = db[bi] SUBSEP "alone"
        if (k in jseen)
            printf "| %s | %.1f | %.1f | %s | %s | %s | %d |\n", dbname[db[bi]], median(jsub[k]), median(jdone[k]),
                ms(median(jt50[k])), ms(median(jt99[k])), ms(median(js99[k])), jbad[k]
        else
            printf "| %s | not measured (%s) | | | | | |\n", dbname[db[bi]], (db[bi] == "postgres" && pg_skip != "" ? pg_skip : "floodgate-load unavailable")
    }
    fleet = "postgres" SUBSEP "fleet"
    if (fleet in jseen) {
        printf "\nThree replicas on one PostgreSQL (all on core 0, the database and the load on core 1), against the same fresh cluster'"'"'s pgbench one-line INSERT with %s clients; median of %d run(s).\n\n", jconns, rounds
        print "| run | jobs completed/s | × pgbench inserts/s | completion p99 | failed, cancelled or lost |"
        print "|---|---|---|---|---|"
        printf "| pgbench one-line INSERT (the reference) | %.0f | 1.00 | – | – |\n", median(jref)
        printf "| floodgate, 3 replicas | %.0f | %.2f | %s | %d |\n", median(jdone[fleet]), ratio(median(jdone[fleet]), median(jref)), ms(median(jt99[fleet])), jbad[fleet]
    }
    fk = "floodgate-load" SUBSEP "fast" SUBSEP "floodgate"
    if (jruns > 0) {
        printf "\nv1 fast p99 while jobs run: floodgate-load --threads 1 --concurrency %d on the fast case, the jobs as above, both on core 1; median of %d run(s).\n\n", conns, rounds
        print "| load | fast req/s | fast p99 | × p99 alone | jobs completed/s alongside |"
        print "|---|---|---|---|---|"
        if (fk in seen)
            printf "| fast alone (table above) | %.0f | %s | 1.00 | – |\n", median(rps[fk]), ms(median(p99[fk]))
        for (bi = 1; bi <= nb; bi++) {
            k = db[bi] SUBSEP "mixed"
            if (!(k in jseen)) continue
            alone_p99 = (fk in seen) ? median(p99[fk]) : 0
            printf "| fast + jobs on %s | %.0f | %s | %s | %.1f |\n", dbname[db[bi]], median(jfrps[db[bi]]), ms(median(jfp99[db[bi]])),
                (alone_p99 > 0 ? sprintf("%.2f", median(jfp99[db[bi]]) / alone_p99) : "–"), median(jdone[k])
        }
    }
    printf "\n%d CPUs (%s), %s, floodgate %s. floodgate in production configuration: JSON logs, access log to a file, metrics, request IDs, timeouts, rate limiter on.\n", nproc, cpu, date, commit
}' "$results" | tee "$out_dir/results.md"

if [ "$sweep" = 1 ]; then
    if [ "$have_load" = 1 ]; then
        run_sweeps >>"$out_dir/results.md"
        cat "$out_dir/sweep.md"
    else
        log "floodgate-load unavailable: no sweeps"
    fi
fi
if [ "$overload" = 1 ]; then
    if [ "$have_load" = 1 ]; then
        run_overload >>"$out_dir/results.md"
        cat "$out_dir/overload.md"
    else
        log "floodgate-load unavailable: no overload scenarios"
    fi
fi
python3 "$root/scripts/bench-report.py" "$out_dir"
log "report written to $out_dir/results.md and results.json (tables in docs/performance.md: scripts/bench-report.py $out_dir --readme docs/performance.md); raw runs in $out_dir/runs.tsv, starts in $out_dir/startup.tsv, jobs in $out_dir/jobs.tsv"
