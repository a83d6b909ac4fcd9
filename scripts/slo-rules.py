#!/usr/bin/env python3
"""Generate the SLO rules of deploy/prometheus/floodgate-rules.yaml from the
objectives in deploy/prometheus/floodgate-slos.yaml.

Usage: scripts/slo-rules.py           rewrite the generated part of the rules (and the
                                      chart's copy) in place
       scripts/slo-rules.py --check   exit 1, showing the difference, if it is out of date

The generated part is everything from the `# --- SLO rules` marker to the end of the file:
two groups, floodgate.slo.recording and floodgate.slo.alerts.

Recording rules, one per class, objective and window (the alerts' windows and the period),
all labelled {slo="<class>", objective="availability"|"latency"}:

  namespace_job_slo:error_budget_burn:rate<window>
      the share of bad requests over the window divided by the error budget
      (1 - objective): 1 spends the budget exactly over the period
  namespace_job_slo:error_budget_remaining:ratio
      1 - the burn over the period: the share of the period's budget left

Alerts (SRE workbook, multi-window, multi-burn-rate): FloodgateErrorBudgetBurnPage
(critical) and FloodgateErrorBudgetBurnTicket (warning), from the `alerts` section.

A latency threshold must be a bucket bound of the duration histograms (DURATION_BUCKETS
in src/observability/metrics.rs): the script fails otherwise. Needs PyYAML.
"""

import difflib
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
OBJECTIVES = ROOT / "deploy/prometheus/floodgate-slos.yaml"
RULES = [ROOT / "deploy/prometheus/floodgate-rules.yaml",
         ROOT / "deploy/helm/floodgate/rules/floodgate-rules.yaml"]
METRICS = ROOT / "src/observability/metrics.rs"
MARKER = "  # --- SLO rules"
COUNT = "http_server_request_duration_seconds_count"
BUCKET = "http_server_request_duration_seconds_bucket"
RPC_COUNT = "rpc_server_call_duration_seconds_count"
RPC_BUCKET = "rpc_server_call_duration_seconds_bucket"
# OpenTelemetry's server errors without UNAVAILABLE, which is load shedding (as 503 is).
RPC_SERVER_ERRORS = "UNKNOWN|DEADLINE_EXCEEDED|UNIMPLEMENTED|INTERNAL|DATA_LOSS"
SECONDS = {"m": 60, "h": 3600, "d": 86400}


def seconds(window):
    return int(window[:-1]) * SECONDS[window[-1]]


def buckets():
    text = METRICS.read_text()
    body = re.search(r"DURATION_BUCKETS: &\[f64\] = &\[(.*?)\];", text, re.S).group(1)
    return {float(b.replace("_", "")) for b in re.findall(r"[0-9][0-9_.]*", body)}


def number(x):
    """A float as Prometheus writes it in `le` and as PromQL reads it (0.25, 0.5, 14.4, 6)."""
    return repr(float(x)).removesuffix(".0")


def regex(routes):
    """A PromQL (RE2) alternation matching exactly these routes or methods, in a double-quoted
    string."""
    def escape(r):
        return re.sub(r"([.{}()*+?|\[\]^$])", r"\\\\\1", r)
    return "|".join(escape(r) for r in routes)


def either(http, rpc):
    """HTTP's series, with the gRPC methods' beside them when the class has any: `or` keeps
    both (their label sets never coincide), and the sum around it adds them up."""
    return http if rpc is None else f"(\n{indent(http, 2)}\n  or\n{indent(rpc, 2)}\n)"


def ratio_expr(cls, objective, window):
    routes = f'http_route=~"{regex(cls["routes"])}"'
    methods = cls.get("rpc_methods")
    rpc = f'rpc_method=~"{regex(methods)}"' if methods else None

    def summed(http_metric, http_matchers, rpc_metric, rpc_matchers):
        h = f"rate({http_metric}{{\n{matchers(http_matchers)}\n}}[{window}])"
        r = None if rpc is None else f"rate({rpc_metric}{{\n{matchers(rpc_matchers)}\n}}[{window}])"
        return f"sum by (namespace, job) (\n{indent(either(h, r), 2)}\n)"

    total = summed(COUNT, [routes], RPC_COUNT, [rpc])
    if objective == "availability":
        budget = round(1 - cls["availability"], 12)
        errors = summed(COUNT, [routes, 'http_response_status_code=~"5.."',
                                'http_response_status_code!="503"'],
                        RPC_COUNT, [rpc, f'rpc_response_status_code=~"{RPC_SERVER_ERRORS}"'])
        # No server error at all is a ratio of 0, not no series.
        bad = f"(\n{indent(errors, 2)}\n  or\n{indent(total, 2)} * 0\n)"
    else:
        lat = cls["latency"]
        budget = round(1 - lat["objective"], 12)
        le = f'le="{number(lat["threshold"])}"'
        fast = summed(BUCKET, [routes, le], RPC_BUCKET, [rpc, le])
        # 1 - fast / total, written as (total - fast) / total.
        bad = f"(\n{indent(total, 2)}\n  -\n{indent(fast, 2)}\n)"
    return f"(\n{indent(bad, 2)}\n  /\n{indent(total, 2)}\n) / {number(budget)}", budget


def matchers(ms):
    return ",\n".join("  " + m for m in ms)


def indent(text, n):
    pad = " " * n
    return "\n".join(pad + line if line else line for line in text.split("\n"))


def generate(slos):
    known = buckets()
    period = slos["period"]
    alerts = slos["alerts"]
    windows = sorted({w[k] for a in alerts.values() for w in a["windows"] for k in ("long", "short")}
                     | {period}, key=seconds)
    out = [
        MARKER + " (generated by scripts/slo-rules.py from floodgate-slos.yaml: edit that",
        "  # file and run the script; scripts/validate-deploy.sh checks they agree) ---",
        "  - name: floodgate.slo.recording",
        "    rules:",
    ]
    for cls in slos["classes"]:
        if float(cls["latency"]["threshold"]) not in known:
            sys.exit(f"{cls['name']}: latency threshold {cls['latency']['threshold']} is not a "
                     f"bucket bound of the duration histograms ({sorted(known)})")
        for objective in ("availability", "latency"):
            for window in windows:
                expr, budget = ratio_expr(cls, objective, window)
                out += [
                    f"      - record: namespace_job_slo:error_budget_burn:rate{window}",
                    "        expr: |",
                    indent(expr, 10),
                    "        labels:",
                    f"          slo: {cls['name']}",
                    f"          objective: {objective}",
                ]
    out += [
        "      # The share of the period's error budget left (negative when overspent).",
        "      - record: namespace_job_slo:error_budget_remaining:ratio",
        f"        expr: 1 - namespace_job_slo:error_budget_burn:rate{period}",
        "",
        "  - name: floodgate.slo.alerts",
        "    rules:",
    ]
    described = {
        "page": ("critical", "fast", "exhausts the period's budget within days"),
        "ticket": ("warning", "steadily", "exhausts the period's budget before the period ends"),
    }
    for kind, spec in alerts.items():
        severity, how, horizon = described[kind]
        terms = []
        for w in spec["windows"]:
            f = number(w["factor"])
            terms.append(f"(\n  namespace_job_slo:error_budget_burn:rate{w['long']} > {f}\n  and\n"
                         f"  namespace_job_slo:error_budget_burn:rate{w['short']} > {f}\n)")
        over = " or ".join(
            f"{number(w['factor'])}× over {w['long']} and {w['short']}" for w in spec["windows"])
        out += [
            f"      - alert: FloodgateErrorBudgetBurn{kind.capitalize()}",
            "        expr: |",
            indent("\nor\n".join(terms), 10),
            f"        for: {spec['for']}",
            "        labels:",
            f"          severity: {severity}",
            "        annotations:",
            "          summary: >-",
            f"            floodgate's {{{{ $labels.slo }}}} routes are burning their {{{{ $labels.objective }}}}",
            f"            error budget {how}",
            "          description: >-",
            "            The {{ $labels.slo }} routes in {{ $labels.namespace }} are spending their",
            "            {{ $labels.objective }} error budget {{ $value | printf \"%.1f\" }} times as fast as the",
            f"            objective allows ({over}),",
            f"            which {horizon}.",
            "          runbook_url: deploy/README.md#floodgateerrorbudgetburn",
        ]
        if kind != list(alerts)[-1]:
            out.append("")
    return "\n".join(out) + "\n"


def main(argv):
    check = argv[1:] == ["--check"]
    if argv[1:] and not check:
        sys.exit(__doc__)
    slos = yaml.safe_load(OBJECTIVES.read_text())
    generated = generate(slos)
    stale = 0
    # The chart's copy is the canonical file, byte for byte.
    canonical = RULES[0].read_text()
    new = canonical.split(MARKER, 1)[0].rstrip("\n") + "\n\n" + generated
    for path in RULES:
        text = path.read_text()
        if new == text:
            continue
        if check:
            stale += 1
            sys.stdout.writelines(difflib.unified_diff(
                text.splitlines(True), new.splitlines(True), str(path), "generated"))
        else:
            path.write_text(new)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(f"the SLO rules are out of date with {OBJECTIVES.relative_to(ROOT)}: "
              "run scripts/slo-rules.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
