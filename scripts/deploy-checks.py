#!/usr/bin/env python3
"""Structural checks used by scripts/validate-deploy.sh (needs PyYAML and jsonschema,
both in the tools venv from scripts/install-test-tools.sh).

  deploy-checks.py split RENDERED.yaml CORE.yaml CRD.yaml
      Split a rendered manifest stream into objects of the Kubernetes API
      itself (for kubernetes-validate) and custom resources, every other
      API group (for scripts/validate-crds.mjs).
  deploy-checks.py crds CRD.yaml RULES_OUT_DIR
      Check ServiceMonitor/PrometheusRule structure (the chart's own rules
      on top of their CRD schemas) and write each PrometheusRule spec to
      RULES_OUT_DIR for `promtool check rules`.
  deploy-checks.py keda-queries CRD.yaml RULES_OUT.yaml
      Write the PromQL of every prometheus trigger of the ScaledObjects as
      recording rules, so `promtool check rules` parses the queries.
  deploy-checks.py embedded-dashboards RENDERED.yaml DASHBOARD_DIR
      Check that the dashboard ConfigMaps carry the dashboards byte for byte.
  deploy-checks.py runbooks RULES.yaml README.md
      Check that every alert has a runbook_url README.md#anchor whose
      heading exists in README.md.
  deploy-checks.py dashboards DASHBOARD.json...
      Lint Grafana dashboards: fixed unique uids, $datasource/$namespace/$pod
      variables, every target on ${datasource}, every expr filtered by
      namespace and pod, rate windows on $__rate_interval, units set.
"""
import json
import os
import re
import sys

import jsonschema
import yaml

# API groups the Kubernetes API server serves itself; kubernetes-validate has their schemas.
# Objects of any other group are custom resources (gateway.networking.k8s.io included: the
# Gateway API is installed as CRDs).
CORE_GROUPS = {
    "", "admissionregistration.k8s.io", "apiextensions.k8s.io", "apiregistration.k8s.io", "apps",
    "authentication.k8s.io", "authorization.k8s.io", "autoscaling", "batch", "certificates.k8s.io",
    "coordination.k8s.io", "discovery.k8s.io", "events.k8s.io", "flowcontrol.apiserver.k8s.io",
    "internal.apiserver.k8s.io", "networking.k8s.io", "node.k8s.io", "policy",
    "rbac.authorization.k8s.io", "resource.k8s.io", "scheduling.k8s.io", "storage.k8s.io",
    "storagemigration.k8s.io",
}
PROMETHEUS_OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}


def api_group(doc):
    api_version = str(doc.get("apiVersion", ""))
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""

SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name", "namespace"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "selector": {
                    "type": "object",
                    "properties": {"matchLabels": {"type": "object", "minProperties": 1}},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port", "path"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "honorLabels": {"type": "boolean"},
                            "scheme": {"enum": ["http", "https"]},
                            "tlsConfig": {"type": "object"},
                            "relabelings": {"type": "array", "items": {"type": "object"}},
                            "metricRelabelings": {"type": "array", "items": {"type": "object"}},
                        },
                    },
                },
            },
        },
    },
}

PROMETHEUS_RULE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": {"type": "object", "required": ["name", "namespace"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["groups"],
            "properties": {"groups": {"type": "array", "minItems": 1}},
        },
    },
}


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def dump_all(docs, path):
    with open(path, "w") as f:
        yaml.safe_dump_all(docs, f, sort_keys=False)


def cmd_split(rendered, core_out, crd_out):
    docs = load_all(rendered)
    core = [d for d in docs if api_group(d) in CORE_GROUPS]
    crds = [d for d in docs if api_group(d) not in CORE_GROUPS]
    dump_all(core, core_out)
    dump_all(crds, crd_out)
    print(f"{len(core)} core objects, {len(crds)} custom resources")
    return 0


def cmd_crds(crd_file, rules_dir):
    os.makedirs(rules_dir, exist_ok=True)
    errors = 0
    for doc in load_all(crd_file):
        kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
        if api_group(doc) != "monitoring.coreos.com" or kind not in PROMETHEUS_OPERATOR_KINDS:
            continue
        schema = SERVICE_MONITOR_SCHEMA if kind == "ServiceMonitor" else PROMETHEUS_RULE_SCHEMA
        try:
            jsonschema.validate(doc, schema)
            print(f"ok   {kind}/{name}")
        except jsonschema.ValidationError as err:
            errors += 1
            print(f"FAIL {kind}/{name}: {err.message} at {list(err.absolute_path)}")
        if kind == "PrometheusRule":
            with open(os.path.join(rules_dir, f"{name}.yaml"), "w") as f:
                yaml.safe_dump(doc.get("spec", {}), f, sort_keys=False)
    return 1 if errors else 0


def cmd_keda_queries(crd_file, rules_out):
    rules = []
    for doc in load_all(crd_file):
        if doc.get("kind") != "ScaledObject":
            continue
        for trigger in doc.get("spec", {}).get("triggers", []):
            if trigger.get("type") != "prometheus":
                continue
            name = re.sub(r"[^a-zA-Z0-9_]", "_", trigger.get("name", "trigger"))
            rules.append({"record": f"keda_trigger:{name}", "expr": trigger["metadata"]["query"]})
            print(f"ok   {doc['metadata']['name']} trigger {name}: {trigger['metadata']['query']}")
    if not rules:
        print(f"FAIL {crd_file}: no ScaledObject with a prometheus trigger")
        return 1
    with open(rules_out, "w") as f:
        yaml.safe_dump({"groups": [{"name": "keda-triggers", "rules": rules}]}, f, sort_keys=False)
    return 0


def cmd_embedded_dashboards(rendered, dashboard_dir):
    expected = {n: open(os.path.join(dashboard_dir, n)).read()
                for n in os.listdir(dashboard_dir) if n.endswith(".json")}
    found = {}
    for doc in load_all(rendered):
        if doc.get("kind") == "ConfigMap" and doc.get("metadata", {}).get("labels", {}).get("grafana_dashboard") == "1":
            found.update(doc.get("data", {}))
    errors = 0
    for name, text in sorted(expected.items()):
        if name not in found:
            errors += 1
            print(f"FAIL {name}: no dashboard ConfigMap carries it")
        elif found[name].rstrip("\n") != text.rstrip("\n"):
            errors += 1
            print(f"FAIL {name}: ConfigMap content differs from {dashboard_dir}/{name}")
        else:
            json.loads(found[name])
            print(f"ok   {name} embedded intact")
    return 1 if errors else 0


def walk(panels):
    for p in panels or []:
        yield p
        yield from walk(p.get("panels"))


def cmd_dashboards(paths):
    errors = []
    uids = {}
    for path in paths:
        name = os.path.basename(path)
        try:
            d = json.load(open(path))
        except ValueError as err:
            errors.append(f"{name}: invalid JSON: {err}")
            continue
        uid = d.get("uid")
        if not uid or not re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", uid):
            errors.append(f"{name}: missing or invalid uid {uid!r}")
        elif uid in uids:
            errors.append(f"{name}: uid {uid} also used by {uids[uid]}")
        uids[uid] = name
        if d.get("id") is not None:
            errors.append(f"{name}: id must be null so the dashboard imports anywhere")
        variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
        ds = variables.get("datasource")
        if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
            errors.append(f"{name}: needs a $datasource variable of type datasource (prometheus)")
        for var in ("namespace", "pod"):
            v = variables.get(var)
            q = (v or {}).get("query")
            q = q.get("query") if isinstance(q, dict) else q
            if not v or v.get("type") != "query" or "label_values(floodgate_build_info" not in (q or ""):
                errors.append(f"{name}: needs a ${var} query variable on label_values(floodgate_build_info...)")
        ids = set()
        for p in walk(d.get("panels")):
            pid, title = p.get("id"), p.get("title")
            if pid in ids:
                errors.append(f"{name}: duplicate panel id {pid}")
            ids.add(pid)
            if p.get("type") == "row":
                continue
            if "gridPos" not in p:
                errors.append(f"{name}: panel {title!r} has no gridPos")
            if p.get("datasource", {}).get("uid") != "${datasource}":
                errors.append(f"{name}: panel {title!r} does not use ${{datasource}}")
            if not p.get("fieldConfig", {}).get("defaults", {}).get("unit"):
                errors.append(f"{name}: panel {title!r} has no unit")
            if not p.get("targets"):
                errors.append(f"{name}: panel {title!r} has no targets")
            for t in p.get("targets", []):
                expr = t.get("expr", "")
                if t.get("datasource", {}).get("uid") != "${datasource}":
                    errors.append(f"{name}: {title!r} {t.get('refId')} does not use ${{datasource}}")
                if 'namespace=~"$namespace"' not in expr or 'pod=~"$pod"' not in expr:
                    errors.append(f"{name}: {title!r} {t.get('refId')} is not filtered by $namespace and $pod")
                for window in re.findall(r"\[([^\]]+)\]", expr):
                    if window != "$__rate_interval":
                        errors.append(f"{name}: {title!r} {t.get('refId')} uses window [{window}], not [$__rate_interval]")
        print(f"ok   {name}: uid {uid}, {len(ids)} panels" if not errors else f"..   {name} checked")
    for e in errors:
        print(f"FAIL {e}")
    return 1 if errors else 0


def cmd_runbooks(rules, readme):
    text = open(readme).read()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", text, re.M)}
    errors = 0
    for group in yaml.safe_load(open(rules))["groups"]:
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            url = rule.get("annotations", {}).get("runbook_url", "")
            doc, _, anchor = url.partition("#")
            if not doc.endswith(os.path.basename(readme)) or anchor not in anchors:
                errors += 1
                print(f"FAIL {rule['alert']}: runbook_url {url!r} has no heading in {readme}")
            else:
                print(f"ok   {rule['alert']}: {url}")
    return 1 if errors else 0


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "split" and len(args) == 3:
        return cmd_split(*args)
    if cmd == "crds" and len(args) == 2:
        return cmd_crds(*args)
    if cmd == "keda-queries" and len(args) == 2:
        return cmd_keda_queries(*args)
    if cmd == "embedded-dashboards" and len(args) == 2:
        return cmd_embedded_dashboards(*args)
    if cmd == "runbooks" and len(args) == 2:
        return cmd_runbooks(*args)
    if cmd == "dashboards" and args:
        return cmd_dashboards(args)
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
