# Overload scenarios of scripts/bench.sh (sourced by it; uses its start_server,
# server_stop, $release, $addr, $work and $out_dir): adaptive admission (floodgate, the
# default configuration) against the fixed limits of before (floodgate-fixed:
# admission.adaptive = false), side by side in the same run, each run on a fresh server on
# core 0 with floodgate-load --threads 1 on core 1, open loop (latency from each request's
# scheduled time).
#
#   capacity   intensive, closed loop (-c 64, DURATION s) on floodgate-fixed: C req/s; the
#              fast endpoint likewise: Cf (for the mixed case)
#   80 %       intensive offered at 0.8 C: the p99 of the 200s that bounds the others (2x)
#   2x, 5x     intensive offered at 2 C and 5 C for OVERLOAD_DURATION s, /health probed
#              (GET, 50/s) alongside: goodput (200s/s) / C, p99 of the 200s / p99 at 80 %,
#              p99 of the refusals, /health p99, 408s and timeouts
#   mixed      fast at 0.5 Cf alone; then with intensive alongside at 0.1 C (calm: the
#              server has room for both) and at 5 C: fast p99 with intensive at 5 C / with
#              intensive at 0.1 C, fast requests refused. The fast client keeps at most
#              OVERLOAD_FAST_CONNECTIONS (the sweep's 128) requests in flight: spread over
#              2,000 connections, 0.5 Cf costs the server's event loop so much more per call
#              that bare axum's own p99 at that rate is about 100 ms. The intensive client
#              runs at `nice 10` on the fast client's core and starts MIXED_LEAD (2) s
#              before it, so the fast client measures the flood, not its 2,000 connections
#              being opened. The calm run is the reference because the intensive client's
#              work on that core alone (its 2,000 connections, even at 0.1 C, or a busy loop
#              at `nice 10`) multiplies the fast client's own p99 several times over while
#              the server is far from busy: that share is the harness's, not the server's.
#   slowed     intensive at 2 C for HOG_DURATION s, a CPU hog (a busy shell loop) pinned on
#              the server's core from half-way: goodput over the last quarter / the
#              capacity left (closed loop with the hog, on floodgate-fixed), and how many
#              seconds after the hog started the per-second p99 of the 200s came back under
#              2x the p99 at 80 % and stayed there (the last, partial second left out of the
#              goodput)
#
# Writes $out_dir/overload.json (every figure, and the targets with their verdicts),
# $out_dir/overload.md (the same as tables), and the floodgate-load reports of every run
# in $out_dir/overload/.

overload_connections=${OVERLOAD_CONNECTIONS:-2000}
overload_fast_connections=${OVERLOAD_FAST_CONNECTIONS:-$sweep_connections}
mixed_lead=${MIXED_LEAD:-2}
hog_pid=

# ol_load NAME ARGS...: floodgate-load on core 1 against $addr (at niceness OL_NICE, 0 by
# default), its JSON report in $out_dir/overload/NAME.json; exits with its errors when it
# wrote no report.
ol_load() {
    local name=$1 out
    shift
    out=$out_dir/overload/$name.json
    rm -f "$out"
    nice -n "${OL_NICE:-0}" taskset -c 1 "$release/floodgate-load" --url "http://$addr" --threads 1 --warmup 0 \
        --requests 1000000000 --no-health-check --no-server-metrics --timeout 60s --quiet \
        --output json --output-file "$out" "$@" 2>>"$work/overload.err" || true
    if ! jq -e '.scenarios[0].requests' "$out" >/dev/null 2>&1; then
        log "floodgate-load wrote no report for $name: $(tail -n 5 "$work/overload.err")"
        exit 1
    fi
}

# ol_open NAME SCENARIO RATE SECONDS [CONNECTIONS]: open loop at RATE req/s.
ol_open() {
    ol_load "$1" --scenario "$2" --rate "$3" --duration "$4s" --concurrency "${5:-$overload_connections}"
}

# ol_health_start NAME SECONDS: /health probed at 50/s in the background (ol_health_wait).
ol_health_start() {
    taskset -c 1 "$release/floodgate-load" --url "http://$addr" --method GET --path /health \
        --rate 50 --concurrency 8 --duration "$2s" --threads 1 --warmup 0 --requests 1000000000 \
        --no-health-check --no-server-metrics --quiet --output json \
        --output-file "$out_dir/overload/$1.json" 2>>"$work/overload.err" &
    health_pid=$!
}

ol_health_wait() { wait "$health_pid" || true; }

# ol_figures NAME: one JSON object of a run's figures.
ol_figures() {
    jq -c '.scenarios[0] | {
        offered: (.load_model.rate // null), duration_s: .duration_secs,
        requests: .requests.total, successful: .requests.successful,
        goodput: (.requests.successful / (if .duration_secs > 0 then .duration_secs else 1 end)),
        refused: ((.status_codes["503"] // 0) + (.status_codes["429"] // 0)),
        timeouts_408: ((.status_codes["408"] // 0) + .requests.timeouts),
        unsent: .requests.unsent,
        p99_ms: (.latency_ms.p99_ms // null),
        success_p99_ms: (.success_latency_ms.p99_ms // null),
        refused_p99_ms: (.refused_latency_ms.p99_ms // null),
        stolen_pct: (.stolen_pct // null),
        timeline: [.timeline.points[] | {s: .start_secs, ok: .successful, p99: .success_p99_ms}]
    }' "$out_dir/overload/$1.json"
}

hog_start() {
    taskset -c 0 bash -c 'while :; do :; done' &
    hog_pid=$!
}

# hog_stop: the hog of hog_start, or of the one a background shell started (its pid in
# $work/hog.pid).
hog_stop() {
    local pid=$hog_pid
    [ -n "$pid" ] || pid=$(cat "$work/hog.pid" 2>/dev/null || true)
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    hog_pid=
    rm -f "$work/hog.pid"
}

# run_overload: everything above; progress on stderr.
run_overload() {
    local secs=${OVERLOAD_DURATION:-20} hog_secs=${HOG_DURATION:-30} cap_secs=$duration
    local runs=$work/overload-runs.jsonl s c cf c_hog rate offered n=0 total=17
    mkdir -p "$out_dir/overload"
    : >"$runs"
    step() { n=$((n + 1)); log "[overload $n/$total] $*"; }
    record() { # CONFIG CASE NAME [EXTRA_JSON]
        local extra=${4:-}
        [ -n "$extra" ] || extra='{}'
        ol_figures "$3" | jq -c --arg config "$1" --arg case "$2" --argjson extra "$extra" \
            '. + {config: $config, case: $case} + $extra' >>"$runs"
    }

    step "capacity: intensive, closed loop, floodgate-fixed"
    start_server floodgate-fixed
    ol_load capacity-intensive --scenario intensive --concurrency 64 --duration "${cap_secs}s"
    server_stop
    c=$(jq -r '.scenarios[0].requests.successful / .scenarios[0].duration_secs | floor' "$out_dir/overload/capacity-intensive.json")
    step "capacity: fast, closed loop, floodgate-fixed"
    start_server floodgate-fixed
    ol_load capacity-fast --scenario fast --concurrency 64 --duration "${cap_secs}s"
    server_stop
    cf=$(jq -r '.scenarios[0].requests.successful / .scenarios[0].duration_secs | floor' "$out_dir/overload/capacity-fast.json")
    step "capacity left with a CPU hog on the server's core: intensive, closed loop, floodgate-fixed"
    start_server floodgate-fixed
    hog_start
    ol_load capacity-intensive-hog --scenario intensive --concurrency 64 --duration "${cap_secs}s"
    hog_stop
    server_stop
    c_hog=$(jq -r '.scenarios[0].requests.successful / .scenarios[0].duration_secs | floor' "$out_dir/overload/capacity-intensive-hog.json")
    log "      capacity: intensive $c req/s ($c_hog with the hog), fast $cf req/s"
    if [ "$c" -le 0 ] || [ "$cf" -le 0 ] || [ "$c_hog" -le 0 ]; then
        log "no capacity measured: see $out_dir/overload/"
        exit 1
    fi

    for s in floodgate floodgate-fixed; do
        step "$s: intensive at 80 % of capacity"
        start_server "$s"
        ol_open "$s-80pct" intensive $((c * 8 / 10)) "$secs"
        server_stop
        record "$s" 80pct "$s-80pct"
        for x in 2 5; do
            step "$s: intensive at ${x}x capacity, /health alongside"
            start_server "$s"
            ol_health_start "$s-${x}x-health" "$secs"
            ol_open "$s-${x}x" intensive $((c * x)) "$secs"
            ol_health_wait
            server_stop
            record "$s" "${x}x" "$s-${x}x" \
                "$(jq -c '{health_p99_ms: (.scenarios[0].latency_ms.p99_ms // null), health_failed: .scenarios[0].requests.failed}' "$out_dir/overload/$s-${x}x-health.json")"
        done
        step "$s: fast at 50 % of its capacity, alone"
        start_server "$s"
        ol_open "$s-fast-alone" fast $((cf / 2)) "$secs" "$overload_fast_connections"
        server_stop
        record "$s" fast-alone "$s-fast-alone"
        for x in calm mixed; do
            if [ "$x" = calm ]; then offered=$((c / 10)); else offered=$((c * 5)); fi
            step "$s: fast at 50 % with intensive at $offered req/s alongside ($x)"
            start_server "$s"
            (OL_NICE=10 ol_open "$s-$x-intensive" intensive "$offered" $((secs + 2 * mixed_lead))) &
            rate=$!
            sleep "$mixed_lead"
            ol_open "$s-$x-fast" fast $((cf / 2)) "$secs" "$overload_fast_connections"
            wait "$rate" || true
            server_stop
            record "$s" "$x-fast" "$s-$x-fast"
        done
        step "$s: intensive at 2x for ${hog_secs} s, a CPU hog on the server's core from $((hog_secs / 2)) s"
        start_server "$s"
        (sleep $((hog_secs / 2)); hog_start; echo "$hog_pid" >"$work/hog.pid"; wait) &
        rate=$!
        ol_open "$s-slowed" intensive $((c * 2)) "$hog_secs"
        hog_stop
        wait "$rate" 2>/dev/null || true
        server_stop
        record "$s" slowed "$s-slowed" "{\"hog_from_s\": $((hog_secs / 2))}"
    done

    overload_summary "$runs" "$c" "$cf" "$c_hog" >"$out_dir/overload.json"
    overload_markdown >"$out_dir/overload.md"
    cat "$out_dir/overload.md"
    log "overload: figures in $out_dir/overload.json and overload.md, reports in $out_dir/overload/"
}

# overload_summary RUNS C CF C_HOG: the figures of every run (RUNS, one JSON object a line)
# as one JSON document, with the targets judged.
overload_summary() {
    jq -s --argjson c "$2" --argjson cf "$3" --argjson c_hog "$4" '
        . as $runs
        | def run($cfg; $case): $runs | map(select(.config == $cfg and .case == $case))[0];
        def t($key; $what; $limit; $v; $ok): {key: $key, label: $what, measured: $v, limit: $limit, met: ($v != null and $ok)};
        def ratio($a; $b): if $a == null or $b == null or $b == 0 then null else ($a / $b * 100 | round / 100) end;
        def settle($r; $bound): ($r.timeline | map(select(.s >= $r.hog_from_s))) as $after
            | [range(0; $after | length) as $i
               | select($after[$i:] | all(.p99 != null and .p99 <= $bound)) | $after[$i].s - $r.hog_from_s]
            | first // null;
        def figures($cfg):
            run($cfg; "80pct").success_p99_ms as $p80
            | {
                p99_at_80pct_ms: $p80,
                overload: ([2, 5] | map(tostring + "x") | map(. as $x | run($cfg; $x) | {
                    key: $x, value: {
                        offered: .offered, goodput: (.goodput | floor), goodput_ratio: ratio(.goodput; $c),
                        success_p99_ms: .success_p99_ms, success_p99_vs_80pct: ratio(.success_p99_ms; $p80),
                        refused: .refused, refused_p99_ms: .refused_p99_ms,
                        health_p99_ms: .health_p99_ms, timeouts_408: .timeouts_408, unsent: .unsent,
                        stolen_pct: .stolen_pct}})
                    | from_entries),
                mixed: (run($cfg; "fast-alone") as $a | run($cfg; "calm-fast") as $q | run($cfg; "mixed-fast") as $m | {
                    fast_p99_alone_ms: $a.success_p99_ms, fast_p99_calm_ms: $q.success_p99_ms,
                    fast_p99_mixed_ms: $m.success_p99_ms,
                    fast_p99_ratio: ratio($m.success_p99_ms; $q.success_p99_ms),
                    fast_p99_vs_alone: ratio($m.success_p99_ms; $a.success_p99_ms),
                    fast_refused: ($m.requests - $m.successful)}),
                slowed: (run($cfg; "slowed") as $r
                    | ($r.timeline[:-1] | map(select(.s >= ($r.duration_s * 3 / 4 | floor)))) as $tail
                    | {hog_from_s: $r.hog_from_s,
                       goodput_last_quarter: (if ($tail | length) > 0 then ($tail | map(.ok) | add / length | floor) else null end),
                       goodput_vs_capacity_left: (if ($tail | length) > 0 then ratio($tail | map(.ok) | add / length; $c_hog) else null end),
                       settled_after_s: settle($r; 2 * $p80),
                       timeline: $r.timeline})
              };
        (figures("floodgate")) as $a | (figures("floodgate-fixed")) as $f |
        {
            capacity: {intensive: $c, fast: $cf, intensive_with_hog: $c_hog},
            adaptive: $a, fixed: $f, runs: .,
            targets: (([2, 5] | map(tostring + "x") | map(. as $x | $a.overload[$x] as $o | (
                t("overload_\($x)_goodput"; "overload \($x): goodput / capacity"; "≥ 0.90"; $o.goodput_ratio; $o.goodput_ratio >= 0.9),
                t("overload_\($x)_p99"; "overload \($x): p99 of the 200s / p99 at 80 %"; "≤ 2×"; $o.success_p99_vs_80pct; $o.success_p99_vs_80pct <= 2),
                t("overload_\($x)_refusal_p99_ms"; "overload \($x): p99 of the refusals (ms)"; "≤ 5"; $o.refused_p99_ms; $o.refused_p99_ms <= 5),
                t("overload_\($x)_health_p99_ms"; "overload \($x): /health p99 (ms)"; "≤ 10"; $o.health_p99_ms; $o.health_p99_ms <= 10),
                t("overload_\($x)_408"; "overload \($x): 408s and timeouts"; "0"; $o.timeouts_408; $o.timeouts_408 == 0)
            )) | flatten) + [
                t("mixed_fast_p99"; "mixed: fast p99 / fast p99 with intensive at 0.1 C"; "≤ 2×"; $a.mixed.fast_p99_ratio; $a.mixed.fast_p99_ratio <= 2),
                t("mixed_fast_refused"; "mixed: fast requests refused"; "0"; $a.mixed.fast_refused; $a.mixed.fast_refused == 0),
                t("slowed_goodput"; "slowed machine: goodput (last quarter) / capacity left"; "≥ 0.90"; $a.slowed.goodput_vs_capacity_left; $a.slowed.goodput_vs_capacity_left >= 0.9),
                t("slowed_settle_s"; "slowed machine: s until the 200s p99 stays ≤ 2× p99 at 80 %"; "≤ 5"; $a.slowed.settled_after_s; $a.slowed.settled_after_s <= 5)
            ])
        }' "$1"
}

# overload_markdown: $out_dir/overload.json as tables.
overload_markdown() {
    jq -r --arg secs "${OVERLOAD_DURATION:-20}" --arg conns "$overload_connections" \
        --arg fconns "$overload_fast_connections" '
        def f: if . == null then "–" elif type == "number" then (. * 100 | round / 100 | tostring) else tostring end;
        "\nOverload: intensive offered open loop (floodgate-load --rate, --concurrency \($conns), latency from the scheduled send time), \($secs) s per run on a fresh server; capacity C = \(.capacity.intensive) req/s (closed loop, fixed limits), fast \(.capacity.fast) req/s, \(.capacity.intensive_with_hog) req/s with a CPU hog on the server core. Adaptive = the default configuration; fixed = admission.adaptive = false (the baseline).\n",
        "| target (adaptive) | measured | limit | |", "|---|---|---|---|",
        (.targets[] | "| \(.label) | \(.measured | f) | \(.limit) | \(if .met then "PASS" else "**MISS**" end) |"),
        "", "| case | config | goodput req/s | × C | p99 of 200s | × p99 at 80 % | refused | p99 of refusals | /health p99 | 408s + timeouts | CPU stolen |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        (. as $r | ("2x", "5x") as $x | ("adaptive", "fixed") as $cfg | $r[$cfg].overload[$x]
            | "| \($x) | \($cfg) | \(.goodput) | \(.goodput_ratio | f) | \(.success_p99_ms | f) ms | \(.success_p99_vs_80pct | f) | \(.refused) | \(.refused_p99_ms | f) ms | \(.health_p99_ms | f) ms | \(.timeouts_408) | \(.stolen_pct | f) % |"),
        "", "| mixed (fast at 50 %, at most \($fconns) in flight) | fast p99 alone | + intensive at 0.1 C | + intensive at 5 C | × 0.1 C | × alone | fast refused |", "|---|---|---|---|---|---|---|",
        (. as $r | ("adaptive", "fixed") as $cfg | $r[$cfg].mixed
            | "| \($cfg) | \(.fast_p99_alone_ms | f) ms | \(.fast_p99_calm_ms | f) ms | \(.fast_p99_mixed_ms | f) ms | \(.fast_p99_ratio | f) | \(.fast_p99_vs_alone | f) | \(.fast_refused) |"),
        "", "| slowed machine (2x, hog from half-way) | p99 at 80 % | goodput, last quarter | × capacity left | s until the p99 of 200s stays ≤ 2× |", "|---|---|---|---|---|",
        (. as $r | ("adaptive", "fixed") as $cfg | $r[$cfg]
            | "| \($cfg) | \(.p99_at_80pct_ms | f) ms | \(.slowed.goodput_last_quarter | f) | \(.slowed.goodput_vs_capacity_left | f) | \(.slowed.settled_after_s | f) |")
    ' "$out_dir/overload.json"
}
