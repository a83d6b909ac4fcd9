# shellcheck shell=bash
# Shared by scripts/bench.sh and scripts/bench-load-client.sh; source it after
# `set -euo pipefail`. The server under test runs on core 0, the load generator
# (and the script itself, once pin_self has run) on core 1.
#
#   require_tools HINT TOOL...   exit 1 if a tool is missing (HINT: how to install)
#   require_cores                exit 1 with fewer than 2 usable CPU cores
#   bench_setup                  scratch directory $work and the cleanup trap
#   pin_self                     move this shell to core 1
#   server_start NAME CMD...     run CMD on core 0 (`env VAR=value prog` for its
#                                environment); output in $work/NAME.out, .err
#   server_await WHAT COND...    run COND until it succeeds (no sleeps), for at most
#                                server_await_seconds
#   http_ok ADDR PATH            one GET, true on status 200
#   server_listening             true once the server printed `listening on ADDR`
#   server_kib FIELD             VmRSS / VmHWM of the server, KiB
#   server_cpu_ticks             user + system clock ticks of the server
#   machine_cpu_ticks            "TOTAL STOLEN": the machine's CPU time, all CPUs, in
#                                clock ticks, and the part of it its host took (steal)
#   stolen_pct BEFORE AFTER      percent of the CPU time between two machine_cpu_ticks
#                                readings that was stolen (0 where none is reported)
#   server_stop                  TERM, then KILL after 5 s
#
# Globals: work, server_pid, server_name, server_addr.

log() { printf '%s\n' "$*" >&2; }

# now_us: wall clock in microseconds, without a fork.
now_us() { local t=$EPOCHREALTIME; echo $(( ${t/./} )); }

require_tools() { # HINT TOOL...
    local hint=$1 tool
    shift
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { log "missing $tool ($hint)"; exit 1; }
    done
}

require_cores() {
    if [ "$(nproc)" -lt 2 ]; then
        log "needs at least 2 CPU cores (server on core 0, load generator on core 1)"
        exit 1
    fi
}

work=
server_pid=
server_name=
server_addr=

bench_setup() {
    work=$(mktemp -d /tmp/floodgate-bench.XXXXXX)
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

bench_cleanup() {
    server_stop
    if [ -n "$work" ]; then rm -rf "$work"; fi
}

# The script itself (readiness polls, parsing) stays off the server's core.
pin_self() { taskset -pc 1 $$ >/dev/null; }

server_start() { # NAME CMD...
    server_name=$1
    shift
    taskset -c 0 "$@" >"$work/$server_name.out" 2>"$work/$server_name.err" &
    server_pid=$!
}

# server_await WHAT COND...: runs COND until it succeeds, without sleeping
# between tries (this shell is on core 1). If the server exits first, or
# server_await_seconds (20) pass, prints "NAME did not WHAT" and the server's
# output, and exits 1.
server_await_seconds=20
server_await() {
    local what=$1 deadline
    shift
    deadline=$(( $(now_us) + server_await_seconds * 1000000 ))
    until "$@"; do
        if ! kill -0 "$server_pid" 2>/dev/null || [ "$(now_us)" -gt "$deadline" ]; then
            log "$server_name did not $what; its output:"
            cat "$work/$server_name.out" "$work/$server_name.err" >&2 2>/dev/null || true
            exit 1
        fi
    done
}

# http_ok ADDR PATH: one GET over bash's /dev/tcp (no fork); true on status 200.
http_ok() {
    local addr=$1 line=
    { exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}"; } 2>/dev/null || return 1
    printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$2" "$addr" >&3 2>/dev/null || true
    IFS= read -r -t 2 line <&3 || true
    exec 3>&- 3<&-
    [[ $line == "HTTP/1."?" 200 "* ]]
}

# server_listening: true once the server's first line of output is
# `listening on ADDR` (the reference servers print it once bound); sets server_addr.
server_listening() {
    local line
    { IFS= read -r line <"$work/$server_name.out"; } 2>/dev/null || return 1
    [[ $line == "listening on "?* ]] || return 1
    # shellcheck disable=SC2034 # read by the sourcing script
    server_addr=${line#listening on }
}

server_kib() { # FIELD
    awk -v f="$1:" '$1 == f {print $2}' "/proc/$server_pid/status"
}

# All threads; fields 14 and 15 of /proc/PID/stat, counted after the command name.
server_cpu_ticks() {
    local stat fields
    stat=$(<"/proc/$server_pid/stat")
    read -ra fields <<<"${stat##*) }"
    echo $(( fields[11] + fields[12] ))
}

# /proc/stat's cpu line: user nice system idle iowait irq softirq steal (guest time is
# counted in user). On a virtual machine, steal is time the host ran something else while
# this machine wanted the CPU: the server and the load generator stall alike, and a run
# with much of it measured the host.
machine_cpu_ticks() {
    awk '$1 == "cpu" { print $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, $9; exit }' /proc/stat
}

stolen_pct() { # BEFORE AFTER
    # iowait may go backwards, so neither difference is trusted to be positive.
    awk -v a="$1" -v b="$2" 'BEGIN {
        split(a, x, " "); split(b, y, " "); t = y[1] - x[1]; s = y[2] - x[2]
        if (s < 0) s = 0; if (s > t) s = t
        printf "%.2f", (t > 0 ? 100 * s / t : 0) }'
}

server_stop() {
    [ -n "$server_pid" ] || return 0
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
}
