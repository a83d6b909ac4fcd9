-- wrk script for scripts/bench.sh.
--
-- BENCH_METHOD=POST (default GET) sends {"number": N} with
-- Content-Type: application/json, N from BENCH_NUMBER (default 42); the
-- request is built once, so wrk spends no Lua time per request.
-- done() prints one machine-readable line after wrk's own summary:
--   BENCH requests=<n> duration_us=<n> rps=<n> p50_us=<n> p99_us=<n> non2xx=<n> socket_errors=<n>

local method = os.getenv("BENCH_METHOD") or "GET"
if method == "POST" then
    wrk.method = "POST"
    wrk.body = string.format('{"number": %d}', tonumber(os.getenv("BENCH_NUMBER") or "42"))
    wrk.headers["Content-Type"] = "application/json"
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "BENCH requests=%d duration_us=%d rps=%.1f p50_us=%d p99_us=%d non2xx=%d socket_errors=%d\n",
        summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
        latency:percentile(50), latency:percentile(99), e.status,
        e.connect + e.read + e.write + e.timeout))
end
