#!/usr/bin/env bash
# The ceilings of the shared dependencies, for the capacity model in docs/performance.md
# ("Capacity model"): how many rate-limit decisions one redis-server makes per second with
# floodgate's own GCRA script, and how many job claims per second one PostgreSQL makes with
# floodgate's own claim statement. The server under test is pinned to core 0, the load to core 1.
#
#   Redis: redis-benchmark EVALSHA of the script in src/admission/rate_limit/redis.rs,
#          50 connections, on one hot key (one principal) and on 10,000 keys.
#   PostgreSQL: migrations/postgres applied to a fresh cluster, QUEUED jobs queued, then
#          pgbench with 8 clients, each transaction claiming the oldest queued job
#          (UPDATE … FOR UPDATE SKIP LOCKED, as store::JobStore::claim) and finishing it.
#
# Writes target/bench/capacity.md and capacity.json; progress goes to stderr.
# Usage: scripts/capacity.sh   Env: REQUESTS (200000), QUEUED (50000), CAPACITY_PORT (18281)
# Needs: redis-server, redis-benchmark, PostgreSQL's initdb/pg_ctl/psql/pgbench, taskset, jq;
# as root, a `postgres` user and runuser.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
requests=${REQUESTS:-200000}
queued=${QUEUED:-50000}
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
log "[4/4] PostgreSQL: $queued queued jobs claimed by 8 pgbench clients"
pg_data=$work/pg
chown postgres "$work" 2>/dev/null || true
pg "$pg_bin/initdb" -D "$pg_data" -A trust -U floodgate >/dev/null
pg_port=$((port + 1))
pg taskset -c 0 "$pg_bin/pg_ctl" -D "$pg_data" -l "$work/pg.log" -w -s \
    -o "-p $pg_port -k $work -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on" start
psql=("$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U floodgate -d postgres -q -v ON_ERROR_STOP=1)
"${psql[@]}" -f migrations/postgres/0001_jobs.sql >/dev/null
"${psql[@]}" -c "INSERT INTO jobs (id, status, number, rounds, created_at)
    SELECT lpad(g::text, 36, '0'), 'queued', g % 1000, 1000, g FROM generate_series(1, $queued) g" >/dev/null
# The claim of store::JobStore::claim, then the finish, as one replica's runner does.
cat >"$work/claim.sql" <<'EOF'
UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = 'capacity',
    lease_until = 9000000000000000, started_at = COALESCE(started_at, 1)
  WHERE id = (SELECT id FROM jobs WHERE (status = 'queued' OR (status = 'running' AND lease_until < 1))
              AND attempts < 5 ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
  RETURNING id \gset
UPDATE jobs SET status = 'succeeded', result = 1, digest = 1, finished_at = 2,
    lease_owner = NULL, lease_until = NULL WHERE id = :id;
EOF
per_client=$((queued / 8 - 100))
claims=$(taskset -c 1 "$pg_bin/pgbench" -h 127.0.0.1 -p "$pg_port" -U floodgate -n -c 8 -j 1 \
    -M prepared -t "$per_client" -f "$work/claim.sql" postgres 2>"$work/pgbench.err" | awk '/^tps = / {print $3}')
[ -n "$claims" ] || { log "pgbench failed: $(tail -n 3 "$work/pgbench.err")"; exit 1; }
log "      $claims claims/s (each committed, then finished)"
left=$("${psql[@]}" -At -c "SELECT count(*) FROM jobs WHERE status = 'queued'")
done_jobs=$("${psql[@]}" -At -c "SELECT count(*) FROM jobs WHERE status = 'succeeded'")
[ "$done_jobs" = $((per_client * 8)) ] || { log "expected $((per_client * 8)) finished jobs, found $done_jobs"; exit 1; }

mkdir -p "$out_dir"
jq -n --arg hot "$hot" --arg spread "$spread" --arg claims "$claims" --argjson left "$left" \
    --arg date "$(date -u '+%Y-%m-%d %H:%M UTC')" --arg commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    --arg cpu "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" \
    '{redis_decisions_per_s: {hot_key: ($hot | tonumber), keys_10000: ($spread | tonumber)},
      postgres_claims_per_s: ($claims | tonumber), jobs_left_queued: $left,
      date: $date, commit: $commit, cpu: $cpu}' >"$out_dir/capacity.json"
{
    echo "| shared dependency (server on one core) | ceiling |"
    echo "|---|---|"
    printf '| redis-server: GCRA decisions/s, one hot key | %.0f |\n' "$hot"
    printf '| redis-server: GCRA decisions/s, 10,000 keys | %.0f |\n' "$spread"
    printf '| PostgreSQL: job claims/s (claim + finish, 8 clients, fsync on) | %.0f |\n' "$claims"
} | tee "$out_dir/capacity.md"
log "written to $out_dir/capacity.md and capacity.json"
