#!/usr/bin/env python3
"""Run every query of the Grafana dashboards against a live Prometheus.

Usage: scripts/check-dashboard-queries.py PROM_URL [DASHBOARD.json ...]

Every panel target `expr` (nested rows included) and every query template
variable of dashboards/*.json is evaluated through PROM_URL/api/v1/query after
substituting Grafana's variables ($datasource, $namespace and $pod become ".*",
$__rate_interval becomes 1m, ...). The check fails if any query errors or
returns no series; each query is printed with its result count.

Only the standard library is used, so it runs anywhere python3 does.
"""
import json
import pathlib
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Grafana variables and what they stand for in the check. Longest names first so
# that $__rate_interval is not eaten by $__interval.
SUBSTITUTIONS = [
    ("$__rate_interval", "1m"),
    ("${__rate_interval}", "1m"),
    ("$__interval_ms", "15000"),
    ("${__interval_ms}", "15000"),
    ("$__interval", "15s"),
    ("${__interval}", "15s"),
    ("$__range_s", "3600"),
    ("${__range_s}", "3600"),
    ("$__range_ms", "3600000"),
    ("${__range_ms}", "3600000"),
    ("$__range", "1h"),
    ("${__range}", "1h"),
]
# Template variables (selection "All", i.e. their allValue) are matched by name.
VARIABLE_VALUE = ".*"
VARIABLE_RE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
LABEL_VALUES_RE = re.compile(r"^\s*label_values\(\s*(?:(?P<expr>.+),\s*)?(?P<label>\w+)\s*\)\s*$", re.S)


def substitute(expr):
    for name, value in SUBSTITUTIONS:
        expr = expr.replace(name, value)
    return VARIABLE_RE.sub(lambda m: VARIABLE_VALUE, expr)


def walk_panels(panels):
    for panel in panels or []:
        yield panel
        yield from walk_panels(panel.get("panels"))


def queries(dashboard):
    """Yield (where, kind, query) for every Prometheus query in a dashboard."""
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query", "")
        yield f"variable ${var['name']}", "variable", query
    for panel in walk_panels(dashboard.get("panels")):
        for target in panel.get("targets", []) or []:
            if target.get("expr"):
                yield f"panel {panel.get('title')!r} {target.get('refId', '')}", "expr", target["expr"]


def api(base, path, params):
    url = f"{base.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            body = json.load(resp)
    except urllib.error.HTTPError as err:
        try:
            body = json.load(err)
        except ValueError:
            return None, f"HTTP {err.code}"
    except (urllib.error.URLError, OSError, ValueError) as err:
        return None, str(err)
    if body.get("status") != "success":
        return None, f"{body.get('errorType', 'error')}: {body.get('error', body)}"
    return body["data"], None


def count_results(base, kind, query):
    """Return (number of series, error) for one query."""
    if kind == "variable":
        m = LABEL_VALUES_RE.match(query)
        if not m:
            return api_count(base, substitute(query))
        label = m.group("label")
        if m.group("expr"):
            data, err = api(base, "/api/v1/series", {"match[]": substitute(m.group("expr"))})
            if err:
                return 0, err
            return len({s[label] for s in data if label in s}), None
        data, err = api(base, f"/api/v1/label/{label}/values", {})
        return (0, err) if err else (len(data), None)
    return api_count(base, substitute(query))


def api_count(base, query):
    data, err = api(base, "/api/v1/query", {"query": query})
    if err:
        return 0, err
    result = data.get("result", [])
    if data.get("resultType") in ("scalar", "string"):
        return 1, None
    return len(result), None


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 2
    base = argv[1]
    files = [pathlib.Path(p) for p in argv[2:]] or sorted((ROOT / "dashboards").glob("*.json"))
    if not files:
        print("no dashboards found", file=sys.stderr)
        return 2
    failed = passed = 0
    for path in files:
        dashboard = json.loads(path.read_text())
        print(f"== {path.name} ({dashboard.get('title')})")
        for where, kind, query in queries(dashboard):
            count, err = count_results(base, kind, query)
            flat = " ".join(query.split())
            if err or count == 0:
                failed += 1
                reason = err or "no series"
                print(f"FAIL  {where}: {reason}\n      {flat}")
            else:
                passed += 1
                print(f"ok    {count:4d} series  {where}\n      {flat}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
