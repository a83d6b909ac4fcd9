#!/usr/bin/env bash
# The ceilings of the shared dependencies, for the capacity model in docs/performance.md
# ("Capacity model"): how many rate-limit decisions one redis-server makes per second with
# floodgate's own GCRA script, and how many job claims per second one PostgreSQL makes with
# floodgate's own claim statement. The server under test is pinned to core 0, the load to core 1.
#
#   Redis: redis-benchmark EVALSHA of the script in src/admission/rate_limit/redis.rs,
#          50 connections, on one hot key (one principal) and on 10,000 keys.
#   PostgreSQL, a fresh cluster (fsync and synchronous commit on): the reference, pgbench's
#          one-line INSERT with CLIENTS clients for SECONDS_PER_RUN seconds; then QUEUED jobs
#          claimed and finished by floodgate's own statements (examples/claim_capacity.rs:
#          store::JobStore::claim, up to 8 jobs per statement, and ::finish, one commit per
#          batch) from CLIENTS claim loops. The figure is their ratio.
#
# Writes target/bench/capacity.md and capacity.json; progress goes to stderr.
# Usage: scripts/capacity.sh   Env: REQUESTS (200000), QUEUED (50000), CLIENTS (8),
#        SECONDS_PER_RUN (8), CAPACITY_PORT (18281), CAPACITY_PROFILE (the cargo profile the
#        claim-path client is built with: release)
# Needs: redis-server, redis-benchmark, PostgreSQL's initdb/pg_ctl/psql/pgbench, taskset, jq;
# as root, a `postgres` user and runuser.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
requests=${REQUESTS:-200000}
queued=${QUEUED:-50000}
clients=${CLIENTS:-8}
profile=${CAPACITY_PROFILE:-release}
seconds=${SECONDS_PER_RUN:-8}
port=${CAPACITY_PORT:-18281}
out_dir=${CARGO_TARGET_DIR:-$root/target}/bench
work=$(mktemp -d)
chmod 755 "$work"
redis_pid=
pg_data=
log() { printf '==> %s\n' "$*" >&2; }
cleanup() {
    [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true
    [ -n "$pg_data" ] && pg "$pg_bin/pg_ctl" -D "$pg_data" -m immediate -w -s stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

for tool in redis-server redis-benchmark taskset jq; do
    command -v "$tool" >/dev/null || { log "$tool is required"; exit 1; }
done
pg_bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | tail -n1)")
[ -x "$pg_bin/pgbench" ] || { log "PostgreSQL's pgbench is required (apt-get install postgresql)"; exit 1; }
pg() { # CMD...: as postgres when root (initdb refuses root)
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# ---------------------------------------------------------------- Redis
log "[1/4] redis-server on core 0, port $port"
taskset -c 0 redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$work" >"$work/redis.log" 2>&1 &
redis_pid=$!
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
# The script as the service ships it.
gcra=$(sed -n '/^const GCRA: &str = r#"/,/^"#;/p' src/admission/rate_limit/redis.rs | sed '1d;$d')
[ -n "$gcra" ] || { log "cannot find the GCRA script in src/admission/rate_limit/redis.rs"; exit 1; }
sha=$(redis-cli -p "$port" script load "$gcra")
# 1,000 decisions/s per key with a burst of 10^9 µs: every decision is computed, none refused.
bench_redis() { # KEYS-ARGS...
    taskset -c 1 redis-benchmark -p "$port" -c 50 -n "$requests" --csv "$@" 2>/dev/null \
        | awk -F'"' 'NR == 2 {print $4}'
}
log "[2/4] GCRA decisions on one hot key ($requests)"
hot=$(bench_redis evalsha "$sha" 1 'rl:{key:hot}' 1000 1000000000)
log "      $hot decisions/s"
log "[3/4] GCRA decisions on 10,000 keys ($requests)"
spread=$(bench_redis -r 10000 evalsha "$sha" 1 'rl:{key:__rand_int__}' 1000 1000000000)
log "      $spread decisions/s"
kill "$redis_pid"; redis_pid=

# ---------------------------------------------------------------- PostgreSQL
log "[4/4] PostgreSQL: the reference (pgbench, one-line INSERT, $clients clients), then floodgate's claim path"
pg_data=$work/pg
chown postgres "$work" 2>/dev/null || true
pg "$pg_bin/initdb" -D "$pg_data" -A trust -U floodgate >/dev/null
pg_port=$((port + 1))
pg taskset -c 0 "$pg_bin/pg_ctl" -D "$pg_data" -l "$work/pg.log" -w -s \
    -o "-p $pg_port -k $work -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on -c max_connections=100" start
psql=("$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U floodgate -q -v ON_ERROR_STOP=1)
"${psql[@]}" -d postgres -c "CREATE DATABASE reference" -c "CREATE DATABASE floodgate" >/dev/null
"${psql[@]}" -d reference -c "CREATE TABLE inserts (id bigserial PRIMARY KEY, v text NOT NULL)" >/dev/null
echo "INSERT INTO inserts (v) VALUES ('x');" >"$work/insert.sql"
inserts=$(taskset -c 1 "$pg_bin/pgbench" -h 127.0.0.1 -p "$pg_port" -U floodgate -n -c "$clients" -j 2 \
    -M prepared -T "$seconds" -f "$work/insert.sql" reference 2>"$work/pgbench.err" | awk '/^tps = / {print $3}')
[ -n "$inserts" ] || { log "pgbench failed: $(tail -n 3 "$work/pgbench.err")"; exit 1; }
log "      reference: $inserts single-row inserts/s, each committed"
# floodgate's own statements (store::JobStore::claim and ::finish), as its runners issue them:
# $clients claim loops, each claiming up to 8 jobs per statement and finishing them in one commit.
log "      building the claim-path client (cargo build --profile $profile --example claim_capacity)"
cargo build --profile "$profile" --quiet --example claim_capacity
profile_dir=$profile
[ "$profile" = dev ] && profile_dir=debug
claim_json=$(taskset -c 1 "${CARGO_TARGET_DIR:-$root/target}/$profile_dir/examples/claim_capacity" \
    --url "postgres://floodgate@127.0.0.1:$pg_port/floodgate" --jobs "$queued" --runners "$clients" --batch 8)
claims=$(jq -r .per_s <<<"$claim_json")
ratio=$(awk -v a="$claims" -v b="$inserts" 'BEGIN {printf "%.2f", a / b}')
log "      floodgate: $(printf '%.0f' "$claims") jobs claimed and finished/s, ${ratio}x the reference"

mkdir -p "$out_dir"
jq -n --arg hot "$hot" --arg spread "$spread" --arg claims "$claims" --arg inserts "$inserts" \
    --arg ratio "$ratio" --argjson clients "$clients" \
    --arg date "$(date -u '+%Y-%m-%d %H:%M UTC')" --arg commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    --arg cpu "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" \
    '{redis_decisions_per_s: {hot_key: ($hot | tonumber), keys_10000: ($spread | tonumber)},
      postgres_claims_per_s: ($claims | tonumber), postgres_inserts_per_s: ($inserts | tonumber),
      claims_to_inserts: ($ratio | tonumber), postgres_clients: $clients,
      date: $date, commit: $commit, cpu: $cpu}' >"$out_dir/capacity.json"
{
    echo "| shared dependency (server on one core) | ceiling |"
    echo "|---|---|"
    printf '| redis-server: GCRA decisions/s, one hot key | %.0f |\n' "$hot"
    printf '| redis-server: GCRA decisions/s, 10,000 keys | %.0f |\n' "$spread"
    printf '| PostgreSQL: single-row inserts/s (pgbench, %s clients, fsync on): the reference | %.0f |\n' "$clients" "$inserts"
    printf '| PostgreSQL: jobs claimed and finished/s (floodgate'"'"'s statements, %s claim loops, 8 per claim) | %.0f (%sx the reference) |\n' "$clients" "$claims" "$ratio"
} | tee "$out_dir/capacity.md"
log "written to $out_dir/capacity.md and capacity.json"
