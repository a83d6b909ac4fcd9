#!/usr/bin/env python3
"""Rewrite PromQL written for floodgate's old HTTP and gRPC metric names to the
OpenTelemetry semantic-convention names floodgate exposes now (README, "Observing it").

Usage: scripts/migrate-metric-names.py FILE...   (rewrites the files in place)

Grafana dashboards (*.json) are rewritten target by target (expr and legendFormat);
any other file (Prometheus rules, promtool tests, Markdown) line by line: a line's
`route`, `status` and `method` labels are renamed only when the line names one of the
HTTP server metrics, so other metrics' labels of the same name (floodgate_jobs{status})
are left alone. An expression split over lines with its label list away from the
metric's name needs a look by hand; the script prints every line it changed.

  http_server_requests_total                 -> http_server_request_duration_seconds_count
  {method, route, status}                    -> {http_request_method, http_route,
                                                 http_response_status_code}
  route="unmatched"                          -> http_route=""
  floodgate_rpc_server_call_duration_seconds -> rpc_server_call_duration_seconds
  rpc_system                                 -> rpc_system_name
  rpc_service="S", rpc_method="M"            -> rpc_method="S/M" (unknown ones: "_OTHER")
  rpc_grpc_status_code="13"                  -> rpc_response_status_code="INTERNAL"
"""

import json
import re
import sys

GRPC = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
        "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
        "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
        "UNAUTHENTICATED"]
HTTP_METRICS = re.compile(r"\bhttp_server_(requests_total|request_duration_seconds|active_requests)")
HTTP_LABELS = {"route": "http_route", "status": "http_response_status_code",
               "method": "http_request_method"}


def codes(m):
    op, value = m.group(1), m.group(2)
    names = "|".join(GRPC[int(c)] if c.isdigit() and int(c) < len(GRPC) else c
                     for c in value.split("|"))
    return f'rpc_response_status_code{op}"{names}"'


def migrate(expr):
    """One PromQL expression (or one line of text holding PromQL)."""
    out = expr
    if HTTP_METRICS.search(out):
        out = out.replace("http_server_requests_total", "http_server_request_duration_seconds_count")
        out = re.sub(r'\broute\s*=\s*"unmatched"', 'http_route=""', out)
        out = re.sub(r'(?<![\w.])(route|status|method)\b(?=\s*(=~|!~|!=|=|,|\)))',
                     lambda m: HTTP_LABELS[m.group(1)], out)
        out = re.sub(r"\{\{\s*(route|status|method)\s*\}\}",
                     lambda m: "{{" + HTTP_LABELS[m.group(1)] + "}}", out)
    if "floodgate_rpc_server_call_duration_seconds" in out or "rpc_grpc_status_code" in out \
            or "rpc_service" in out:
        out = out.replace("floodgate_rpc_server_call_duration_seconds",
                          "rpc_server_call_duration_seconds")
        out = re.sub(r'\brpc_system\b(?!_)', "rpc_system_name", out)
        out = re.sub(r'rpc_service="unknown",\s*rpc_method="unknown"', 'rpc_method="_OTHER"', out)
        out = re.sub(r'rpc_service="([^"]*)",\s*rpc_method="([^"]*)"', r'rpc_method="\1/\2"', out)
        out = re.sub(r'rpc_service="([^"]*)"', lambda m: f'rpc_method=~"{m.group(1)}/.*"', out)
        out = re.sub(r'rpc_method(!~|=~)"([^"]*)"',
                     lambda m: m.group(0) if "/" in m.group(2)
                     else f'rpc_method{m.group(1)}".*/({m.group(2)})"', out)
        out = re.sub(r'rpc_grpc_status_code(=~|!~|!=|=)"([^"]*)"', codes, out)
        out = re.sub(r"\brpc_service,\s*rpc_method\b", "rpc_method", out)
        out = re.sub(r"\{\{rpc_service\}\}/\{\{rpc_method\}\}", "{{rpc_method}}", out)
        out = out.replace("rpc_grpc_status_code", "rpc_response_status_code")
    return out


def migrate_dashboard(doc):
    def walk(o):
        if isinstance(o, dict):
            if "expr" in o and isinstance(o["expr"], str):
                new = migrate(o["expr"])
                if "legendFormat" in o and new != o["expr"]:
                    o["legendFormat"] = migrate(o["expr"] + "\0" + o["legendFormat"]).split("\0", 1)[1]
                o["expr"] = new
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(doc)
    return doc


def main(paths):
    for path in paths:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if path.endswith(".json"):
            new = json.dumps(migrate_dashboard(json.loads(text)), indent=2, ensure_ascii=False) + "\n"
        else:
            lines = text.split("\n")
            new = "\n".join(migrate(line) for line in lines)
        if new != text:
            for old_line, new_line in zip(text.split("\n"), new.split("\n")):
                if old_line != new_line:
                    print(f"{path}: {new_line.strip()}")
            with open(path, "w", encoding="utf-8") as f:
                f.write(new)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
