#!/usr/bin/env python3
"""The benchmark's JSON report, and the generated tables of docs/performance.md from it.

    scripts/bench-report.py [BENCH_DIR]                 write BENCH_DIR/results.json
    scripts/bench-report.py [BENCH_DIR] --readme FILE   also rewrite FILE's blocks between
                                                        <!-- bench:begin --> and
                                                        <!-- bench:end --> (the results) and
                                                        <!-- scaling:begin --> and
                                                        <!-- scaling:end --> (the capacity
                                                        model) from that JSON; FILE is
                                                        docs/performance.md, which holds both

BENCH_DIR (default target/bench) holds what scripts/bench.sh wrote: runs.tsv (one line per
run), startup.tsv, jobs.tsv and meta.json (date, commit, machine), and optionally
capacity.json (scripts/capacity.sh), sweep.svg (the latency-versus-throughput curves),
knee.json (the alternating sweeps' knees) and overload.json (the overload scenarios, adaptive
admission against the fixed limits); a run of only the sweeps or the overload scenarios
(--sweep-only, --overload-only) has no runs.tsv, and its results.json holds what it measured.
Every number in those blocks comes from results.json; none is typed by hand.
"""
import csv
import json
import os
import re
import statistics
import sys
from collections import defaultdict

TARGETS = [
    # (key, label, limit text, test)
    ("fast_rps_ratio", "fast: floodgate / bare axum req/s", "≥ 0.85", lambda v: v >= 0.85),
    ("fast_p99_ratio", "fast: floodgate / bare axum p99", "≤ 1.5×", lambda v: 0 < v <= 1.5),
    ("intensive_rps_ratio", "intensive: floodgate / bare axum req/s", "≥ 0.90", lambda v: v >= 0.90),
    ("grpc_rps_ratio", "gRPC Fast: floodgate / bare tonic req/s", "≥ 0.75", lambda v: v >= 0.75),
    ("redis_rps_ratio", "fast: Redis limiter / local limiter req/s", "≥ 0.60", lambda v: v >= 0.60),
    ("idle_rss_mib", "idle RSS after startup (MiB)", "≤ 8", lambda v: v <= 8),
    ("peak_rss_500_mib", "peak RSS, 500 connections (MiB)", "≤ 16", lambda v: v <= 16),
    ("startup_ms", "startup to first `/health` 200 (ms)", "≤ 50", lambda v: v <= 50),
]


def fmt_stolen(pct):
    return "–" if pct is None else f"{pct:.2f} %"


def median(values):
    return statistics.median(values) if values else None


def load_runs(path):
    runs = defaultdict(list)
    if not os.path.exists(path):
        return runs
    with open(path) as f:
        for row in csv.DictReader(f, delimiter="\t"):
            runs[(row["generator"], row["case"], row["server"])].append(row)
    return runs


def summary(rows):
    return {
        "runs": len(rows),
        "rps": median([float(r["rps"]) for r in rows]),
        "p50_ms": median([int(r["p50_us"]) for r in rows]) / 1000,
        "p99_ms": median([int(r["p99_us"]) for r in rows]) / 1000,
        "peak_rss_mib": max(int(r["peak_rss_kib"]) for r in rows) / 1024,
        "cpu_us_per_request": median([float(r["cpu_us_per_req"]) for r in rows]),
        "bad": sum(int(r["non2xx"]) + int(r["socket_errors"]) for r in rows),
        # The most of the machine's CPU time its host took during one of the runs (steal);
        # None in a runs.tsv written before it was recorded.
        "stolen_pct_max": max((float(r["stolen_pct"]) for r in rows if r.get("stolen_pct")), default=None),
    }


def build(bench_dir):
    runs = load_runs(os.path.join(bench_dir, "runs.tsv"))
    cases = {}
    for (gen, case, server), rows in sorted(runs.items()):
        cases.setdefault(gen, {}).setdefault(case, {})[server] = summary(rows)

    def ratio(gen, case, server, ref, field="rps"):
        c = cases.get(gen, {}).get(case, {})
        if server in c and ref in c and c[ref][field]:
            return round(c[server][field] / c[ref][field], 2)
        return None

    starts = []
    startup_path = os.path.join(bench_dir, "startup.tsv")
    if os.path.exists(startup_path):
        with open(startup_path) as f:
            starts = list(csv.DictReader(f, delimiter="\t"))
    measured = {
        "fast_rps_ratio": ratio("wrk", "fast", "floodgate", "bare-axum"),
        "fast_rps_ratio_floodgate_load": ratio("floodgate-load", "fast", "floodgate", "bare-axum"),
        "fast_p99_ratio": ratio("wrk", "fast", "floodgate", "bare-axum", "p99_ms"),
        "intensive_rps_ratio": ratio("wrk", "intensive", "floodgate", "bare-axum"),
        "grpc_rps_ratio": ratio("grpc-load", "grpc-fast", "floodgate", "bare-tonic"),
        "redis_rps_ratio": ratio("wrk", "fast", "floodgate-redis", "floodgate"),
        "idle_rss_mib": round(median([int(s["idle_rss_kib"]) for s in starts]) / 1024, 1) if starts else None,
        "peak_rss_500_mib": round(
            cases.get("wrk", {}).get("fast-c500", {}).get("floodgate", {}).get("peak_rss_mib", 0), 1
        ),
        "startup_ms": median([int(s["startup_ms"]) for s in starts]),
    }
    targets = []
    for key, label, limit, test in TARGETS if runs else []:
        value = measured.get(key)
        targets.append(
            {"key": key, "label": label, "measured": value, "limit": limit,
             "met": value is not None and bool(test(value))}
        )
    jobs = defaultdict(list)
    jobs_path = os.path.join(bench_dir, "jobs.tsv")
    if os.path.exists(jobs_path):
        with open(jobs_path) as f:
            for row in csv.DictReader(f, delimiter="\t"):
                jobs[(row["database"], row["mode"])].append(row)
    job_summary = {}
    for (db, mode), rows in sorted(jobs.items()):
        job_summary.setdefault(db, {})[mode] = {
            "submitted_per_s": round(median([float(r["submitted_per_s"]) for r in rows]), 1),
            "completed_per_s": round(median([float(r["completed_per_s"]) for r in rows]), 1),
            "completion_p99_ms": median([int(r["ttc_p99_us"]) for r in rows]) / 1000,
            "wrong_digests": sum(int(r["wrong_digests"]) for r in rows),
        }
        if mode == "fleet":
            reference = median([float(r["reference_inserts_per_s"]) for r in rows])
            job_summary[db][mode]["reference_inserts_per_s"] = round(reference, 1)
            job_summary[db][mode]["to_reference"] = round(
                job_summary[db][mode]["completed_per_s"] / reference, 3) if reference else None
        if mode == "mixed":
            job_summary[db][mode]["fast_p99_ms"] = median([int(r["fast_p99_us"]) for r in rows]) / 1000
    result = {"targets": targets, "measured": measured, "cases": cases, "jobs": job_summary}
    for extra in ("meta.json", "capacity.json", "knee.json", "overload.json"):
        path = os.path.join(bench_dir, extra)
        if os.path.exists(path):
            with open(path) as f:
                result[extra.split(".")[0]] = json.load(f)
    # The knee and overload targets, judged by bench.sh, join the others.
    for extra in ("knee", "overload"):
        targets.extend(result.get(extra, {}).get("targets", []))
    return result


def fmt(v, digits=2):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def readme_block(r):
    meta = r.get("meta", {})
    lines = [
        f"Generated by `scripts/bench-report.py` from `target/bench/results.json` of a "
        f"`scripts/bench.sh` run on {meta.get('date', '?')}: {meta.get('cpus', '?')} vCPU "
        f"({meta.get('cpu', '?')}), commit {meta.get('commit', '?')}.",
        "",
        "| target | measured | limit | |",
        "|---|---|---|---|",
    ]
    for t in r["targets"]:
        lines.append(
            f"| {t['label']} | {fmt(t['measured'])} | {t['limit']} | "
            f"{'pass' if t['met'] else '**miss**'} |"
        )
    lines += ["", "| case | server | req/s | p50 | p99 | server CPU/req | peak RSS | CPU stolen (most in a run) |",
              "|---|---|---|---|---|---|---|---|"]
    names = {"wrk": "wrk -c64", "floodgate-load": "floodgate-load -c64", "grpc-load": "floodgate-load --grpc -c64"}
    for gen in ("wrk", "grpc-load"):
        for case, servers in r["cases"].get(gen, {}).items():
            for server, s in servers.items():
                label = names[gen]
                if "-c" in case:  # the many-connections run, e.g. fast-c500
                    label = label.replace("-c64", "-c" + case.split("-c")[-1])
                lines.append(
                    f"| {case} ({label}) | {server} | {s['rps']:.0f} | {s['p50_ms']:.2f} ms | "
                    f"{s['p99_ms']:.2f} ms | {s['cpu_us_per_request']:.1f} µs | {s['peak_rss_mib']:.1f} MiB | "
                    f"{fmt_stolen(s.get('stolen_pct_max'))} |"
                )
    if r.get("jobs"):
        lines += ["", "| durable jobs (floodgate-load --scenario jobs -c 16) | submitted/s | completed/s | completion p99 |",
                  "|---|---|---|---|"]
        for db, modes in r["jobs"].items():
            alone = modes.get("alone")
            if alone:
                lines.append(f"| {db} | {alone['submitted_per_s']:.0f} | {alone['completed_per_s']:.0f} | {alone['completion_p99_ms']:.1f} ms |")
            fleet = modes.get("fleet")
            if fleet:
                lines.append(
                    f"| {db}, 3 replicas ({fleet['to_reference']:.2f}× pgbench's "
                    f"{fleet['reference_inserts_per_s']:.0f} one-line inserts/s) | "
                    f"{fleet['submitted_per_s']:.0f} | {fleet['completed_per_s']:.0f} | "
                    f"{fleet['completion_p99_ms']:.1f} ms |")
    cap = r.get("capacity")
    if cap:
        lines += ["", "| shared dependency, one core (`scripts/capacity.sh`) | ceiling |", "|---|---|",
                  f"| redis-server, GCRA decisions/s (one hot key / 10,000 keys) | {cap['redis_decisions_per_s']['hot_key']:.0f} / {cap['redis_decisions_per_s']['keys_10000']:.0f} |",
                  f"| PostgreSQL, single-row inserts/s (pgbench, fsync on): the reference | {cap.get('postgres_inserts_per_s', 0):.0f} |",
                  f"| PostgreSQL, jobs claimed and finished/s (floodgate's statements) | {cap['postgres_claims_per_s']:.0f} ({cap.get('claims_to_inserts', 0):.2f}× the reference) |"]
    return "\n".join(lines)


def scaling_block(r):
    """Replicas (one core each, run at 70% of the measured per-core rate) for 10k, 100k and
    1M requests/s, and what the shared dependencies allow."""
    cases = r["cases"].get("wrk", {})
    per_core = {
        "fast": cases.get("fast", {}).get("floodgate", {}).get("rps"),
        "intensive": cases.get("intensive", {}).get("floodgate", {}).get("rps"),
        "fast, limiter in Redis": cases.get("fast", {}).get("floodgate-redis", {}).get("rps"),
    }
    lines = ["| workload | req/s per core | replicas for 10k/s | 100k/s | 1M/s |", "|---|---|---|---|---|"]
    for name, rps in per_core.items():
        if not rps:
            continue
        usable = rps * 0.7
        need = [max(1, -(-n // int(usable))) for n in (10_000, 100_000, 1_000_000)]
        lines.append(f"| {name} | {rps:.0f} | {need[0]} | {need[1]} | {need[2]} |")
    cap = r.get("capacity")
    if cap:
        hot = cap["redis_decisions_per_s"]["hot_key"]
        spread = cap["redis_decisions_per_s"]["keys_10000"]
        claims = cap["postgres_claims_per_s"]
        lines += [
            "",
            "| shared dependency | ceiling here (`scripts/capacity.sh`) | 10k req/s | 100k req/s | 1M req/s |",
            "|---|---|---|---|---|",
            f"| one redis-server, one decision per request | {spread:.0f}/s (10,000 keys), {hot:.0f}/s (one key) | "
            + " | ".join(f"{n / spread:.1f}× its ceiling" for n in (10_000, 100_000, 1_000_000)) + " |",
            f"| one PostgreSQL, one claim per job | {claims:.0f} claims/s | jobs, not requests: "
            f"{claims:.0f} jobs/s | | |",
        ]
    return "\n".join(lines)


def main():
    args = sys.argv[1:]
    readme = None
    if "--readme" in args:
        i = args.index("--readme")
        readme = args[i + 1]
        del args[i : i + 2]
    bench_dir = args[0] if args else os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "bench")
    result = build(bench_dir)
    with open(os.path.join(bench_dir, "results.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {os.path.join(bench_dir, 'results.json')}", file=sys.stderr)
    if readme:
        with open(readme) as f:
            text = f.read()
        for name, block in (("bench", readme_block(result)), ("scaling", scaling_block(result))):
            text, n = re.subn(
                rf"(<!-- {name}:begin -->\n)(?:.*?\n)?(<!-- {name}:end -->)",
                lambda m: m.group(1) + block + "\n" + m.group(2),
                text,
                flags=re.S,
            )
            if n != 1:
                sys.exit(f"{readme} has no <!-- {name}:begin --> … <!-- {name}:end --> block")
        new = text
        with open(readme, "w") as f:
            f.write(new)
        print(f"rewrote the performance block of {readme}", file=sys.stderr)


if __name__ == "__main__":
    main()
