#!/usr/bin/env bash
# Static validation of everything under deploy/, dashboards/ and the Dockerfile.
# No cluster, Docker engine or Grafana is needed: rendering and validating with
# the real tools is the bar. Install the tools with scripts/install-test-tools.sh.
#
#   scripts/validate-deploy.sh
#
# Environment:
#   KUBERNETES_VERSION   schema version for kubernetes-validate (default 1.33.0)
#   FLOODGATE_TOOLS      where install-test-tools.sh put helm, the venv and the npm models
#
# Ends with "N passed, M failed" and exits non-zero if anything failed.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/tools-env.sh
. "$ROOT/scripts/tools-env.sh"

CHART=deploy/helm/floodgate
RELEASE=floodgate
NAMESPACE=floodgate
KUBERNETES_VERSION="${KUBERNETES_VERSION:-1.33.0}"
PY="$FLOODGATE_TOOLS/venv/bin/python"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/render" "$TMP/core" "$TMP/crd" "$TMP/rules"

passed=0
failed=0
failures=()

# check DESCRIPTION COMMAND...: run one check, show its output on failure.
check() {
  local desc="$1"
  shift
  printf -- '--- %s\n' "$desc"
  if "$@" >"$TMP/out" 2>&1; then
    passed=$((passed + 1))
    printf 'PASS  %s\n' "$desc"
  else
    failed=$((failed + 1))
    failures+=("$desc")
    sed 's/^/      /' "$TMP/out"
    printf 'FAIL  %s\n' "$desc"
  fi
}

# expect_failure DESCRIPTION PATTERN COMMAND...: the command must fail and print PATTERN.
expect_failure() {
  local desc="$1" pattern="$2"
  shift 2
  printf -- '--- %s\n' "$desc"
  if "$@" >"$TMP/out" 2>&1; then
    failed=$((failed + 1))
    failures+=("$desc")
    printf '      command succeeded but should have been rejected: %s\n' "$*"
    printf 'FAIL  %s\n' "$desc"
  elif grep -q -- "$pattern" "$TMP/out"; then
    passed=$((passed + 1))
    printf 'PASS  %s (rejected: %s)\n' "$desc" "$(grep -m1 -- "$pattern" "$TMP/out" | sed 's/^[[:space:]-]*//')"
  else
    failed=$((failed + 1))
    failures+=("$desc")
    sed 's/^/      /' "$TMP/out"
    printf '      failed, but without the expected message %q\n' "$pattern"
    printf 'FAIL  %s\n' "$desc"
  fi
}

# Every tool is checked up front; a missing tool is a failure, never a skip.
missing=()
tool() {
  local name="$1"
  if command -v "$name" >/dev/null 2>&1; then
    printf '      %-20s %s\n' "$name" "$(command -v "$name")"
  else
    printf '      %-20s MISSING\n' "$name"
    missing+=("$name")
  fi
}
echo "=== tools"
for t in helm kubernetes-validate yamllint hadolint promtool docker-compose diff cmp node; do tool "$t"; done
if [ ! -x "$PY" ] || ! "$PY" -c 'import yaml, jsonschema' >/dev/null 2>&1; then
  printf '      %-20s MISSING (%s with PyYAML and jsonschema)\n' "tools venv" "$PY"
  missing+=("tools venv")
fi
# The custom-resource models, exactly as scripts/crd-models/package-lock.json pins them.
if [ ! -d "$FLOODGATE_TOOLS/npm/node_modules/@kubernetes-models" ] \
  || ! cmp -s scripts/crd-models/package-lock.json "$FLOODGATE_TOOLS/npm/package-lock.json"; then
  printf '      %-20s MISSING or stale (%s, pinned by scripts/crd-models/package-lock.json)\n' \
    "npm models" "$FLOODGATE_TOOLS/npm"
  missing+=("npm models")
else
  printf '      %-20s %s\n' "npm models" "$FLOODGATE_TOOLS/npm/node_modules"
fi
if [ "${#missing[@]}" -gt 0 ]; then
  failed=$((failed + 1))
  failures+=("tools present")
  echo "FAIL  tools present: missing ${missing[*]} -- run scripts/install-test-tools.sh"
  echo "$passed passed, $failed failed"
  exit 1
fi
passed=$((passed + 1))
echo "PASS  tools present"

values_files=("$CHART/values.yaml")
for f in "$CHART"/ci/*-values.yaml; do values_files+=("$f"); done

echo "=== Helm chart"
check "helm lint (default values)" helm lint --strict "$CHART"
for f in "$CHART"/ci/*-values.yaml; do
  check "helm lint -f $f" helm lint --strict "$CHART" -f "$f"
done

render() {
  local name="$1"
  shift
  helm template "$RELEASE" "$CHART" --namespace "$NAMESPACE" "$@" >"$TMP/render/$name.yaml"
}
check "helm template (default values)" render default
for f in "$CHART"/ci/*-values.yaml; do
  check "helm template -f $f" render "$(basename "$f" .yaml)" -f "$f"
done

echo "=== values.schema.json rejects bad values"
expect_failure "schema: replicaCount as a string" "Invalid type" \
  helm template "$RELEASE" "$CHART" --set-string replicaCount=two
expect_failure "schema: shutdownTimeoutSeconds as a string" "Invalid type" \
  helm template "$RELEASE" "$CHART" --set-string config.server.shutdownTimeoutSeconds=30s
expect_failure "schema: otel.enabled as a string" "Invalid type" \
  helm template "$RELEASE" "$CHART" --set-string otel.enabled=yes
expect_failure "schema: unknown OTLP protocol" "otel.protocol" \
  helm template "$RELEASE" "$CHART" --set otel.protocol=udp
expect_failure "schema: unknown top-level key (typo)" "Additional property" \
  helm template "$RELEASE" "$CHART" --set replicas=3
expect_failure "template: grace period not above the shutdown timeout" "must be greater than" \
  helm template "$RELEASE" "$CHART" --set terminationGracePeriodSeconds=30
expect_failure "template: otel enabled without an endpoint" "otel.endpoint is required" \
  helm template "$RELEASE" "$CHART" --set otel.enabled=true
expect_failure "template: TLS without the admin port for probes" "tls.secretName needs admin.enabled" \
  helm template "$RELEASE" "$CHART" --set tls.secretName=floodgate-tls
expect_failure "template: admin port equal to the API port" "admin.port must differ" \
  helm template "$RELEASE" "$CHART" --set admin.enabled=true --set admin.port=8080
expect_failure "template: rate limiter on Redis without redis.url" "config.rateLimit.backend=redis needs redis.url" \
  helm template "$RELEASE" "$CHART" --set config.rateLimit.backend=redis
expect_failure "template: result cache on Redis without redis.url" "config.cache.backend=redis needs redis.url" \
  helm template "$RELEASE" "$CHART" --set config.cache.enabled=true --set config.cache.backend=redis
expect_failure "template: a password inside redis.url" "redis.url must not carry a password" \
  helm template "$RELEASE" "$CHART" --set redis.url=redis://default:hunter2@redis:6379/0
expect_failure "schema: redis.url with a scheme other than redis:// or rediss://" "redis.url" \
  helm template "$RELEASE" "$CHART" --set redis.url=http://redis:6379
expect_failure "schema: unknown Redis fallback mode" "config.rateLimit.redisFallback" \
  helm template "$RELEASE" "$CHART" --set config.rateLimit.redisFallback=ignore
expect_failure "template: jobs on SQLite with two replicas" "jobs on SQLite need replicaCount: 1" \
  helm template "$RELEASE" "$CHART" --set jobs.enabled=true --set replicaCount=2
expect_failure "template: jobs on SQLite with the HPA" "jobs on SQLite cannot autoscale" \
  helm template "$RELEASE" "$CHART" --set jobs.enabled=true --set replicaCount=1 --set autoscaling.enabled=true
expect_failure "template: a database Secret without jobs" "database.existingSecret needs jobs.enabled" \
  helm template "$RELEASE" "$CHART" --set database.existingSecret=floodgate-database
expect_failure "template: a SQLite volume with PostgreSQL" "jobs.persistence.enabled is for SQLite" \
  helm template "$RELEASE" "$CHART" --set jobs.enabled=true --set database.existingSecret=floodgate-database \
  --set jobs.persistence.enabled=true
expect_failure "template: a [database] table (a URL with a password) in extraToml" "must not have a \[database\] table" \
  helm template "$RELEASE" "$CHART" --set-string 'config.extraToml=[database]
url = "postgres://floodgate:hunter2@db:5432/floodgate"'
expect_failure "schema: jobs.lease that is not a duration" "jobs.lease" \
  helm template "$RELEASE" "$CHART" --set jobs.lease=30
expect_failure "schema: service.appProtocol that is not a protocol name" "service.appProtocol" \
  helm template "$RELEASE" "$CHART" --set 'service.appProtocol=h2c please'
expect_failure "schema: service.grpcAppProtocol that is not a protocol name" "service.grpcAppProtocol" \
  helm template "$RELEASE" "$CHART" --set 'service.grpcAppProtocol=h2c please'
expect_failure "template: the gRPC Service port equal to the http one" "service.grpcPort (8080) must differ from service.port" \
  helm template "$RELEASE" "$CHART" --set service.grpcPort=8080
expect_failure "template: KEDA together with the chart's HPA" "autoscaling.enabled and autoscaling.keda.enabled cannot be used together" \
  helm template "$RELEASE" "$CHART" --set autoscaling.enabled=true --set autoscaling.keda.enabled=true
expect_failure "template: jobs on SQLite with KEDA" "jobs on SQLite cannot autoscale (autoscaling.keda.enabled)" \
  helm template "$RELEASE" "$CHART" --set jobs.enabled=true --set replicaCount=1 --set autoscaling.keda.enabled=true
expect_failure "schema: a KEDA target that is not a positive number" "autoscaling.keda.poolSaturation" \
  helm template "$RELEASE" "$CHART" --set autoscaling.keda.enabled=true --set-string autoscaling.keda.poolSaturation=80%
expect_failure "template: Gateway API routes without a parent Gateway" "gateway.enabled needs gateway.parentRefs" \
  helm template "$RELEASE" "$CHART" --set gateway.enabled=true
expect_failure "template: an HTTPRoute and a GRPCRoute sharing a hostname" "gateway.http.hostnames and gateway.grpc.hostnames overlap" \
  helm template "$RELEASE" "$CHART" --set gateway.enabled=true --set 'gateway.parentRefs[0].name=public' \
  --set 'gateway.grpc.hostnames[0]=*.local'
expect_failure "template: Gateway API routes and the Ingress on the same host" "gateway.enabled and ingress.enabled expose the same host" \
  helm template "$RELEASE" "$CHART" --set gateway.enabled=true --set 'gateway.parentRefs[0].name=public' \
  --set ingress.enabled=true
expect_failure "template: Istio and Linkerd together" "mesh.istio.enabled and mesh.linkerd.enabled cannot be used together" \
  helm template "$RELEASE" "$CHART" --set mesh.istio.enabled=true --set mesh.linkerd.enabled=true
expect_failure "template: Istio with TLS terminated by the server" "mesh.istio.enabled cannot be used with tls.secretName" \
  helm template "$RELEASE" "$CHART" --set mesh.istio.enabled=true --set tls.secretName=floodgate-tls --set admin.enabled=true
expect_failure "template: Istio retries on the server's 503 refusals" "retryOn must not retry 503" \
  helm template "$RELEASE" "$CHART" --set mesh.istio.enabled=true \
  --set mesh.istio.virtualService.retries.retryOn=connect-failure\\,503
expect_failure "template: Istio retries on gRPC UNAVAILABLE" "retryOn must not retry unavailable" \
  helm template "$RELEASE" "$CHART" --set mesh.istio.enabled=true \
  --set mesh.istio.virtualService.retries.retryOn=unavailable\\,connect-failure
expect_failure "template: the Istio AuthorizationPolicy with metrics on the API port" \
  "mesh.istio.authorizationPolicy.enabled needs admin.enabled and admin.exclusive" \
  helm template "$RELEASE" "$CHART" --set mesh.istio.enabled=true --set mesh.istio.authorizationPolicy.enabled=true \
  --set admin.enabled=true
expect_failure "template: the gRPC readiness probe with TLS" "grpcProbe.enabled cannot be used with tls.secretName" \
  helm template "$RELEASE" "$CHART" --set grpcProbe.enabled=true --set tls.secretName=floodgate-tls --set admin.enabled=true
expect_failure "template: the gRPC readiness probe with gRPC off" "grpcProbe.enabled needs gRPC" \
  helm template "$RELEASE" "$CHART" --set grpcProbe.enabled=true --set config.grpc.enabled=false
expect_failure "template: a [grpc] table in extraToml" "must not have a \[grpc\] table" \
  helm template "$RELEASE" "$CHART" --set-string 'config.extraToml=[grpc]
enabled = false'

echo "=== Kubernetes $KUBERNETES_VERSION schemas (kubernetes-validate --strict)"
for r in "$TMP"/render/*.yaml; do
  name="$(basename "$r" .yaml)"
  "$PY" scripts/deploy-checks.py split "$r" "$TMP/core/$name.yaml" "$TMP/crd/$name.yaml" >/dev/null
  check "kubernetes-validate --strict: $name" \
    kubernetes-validate --strict --quiet -k "$KUBERNETES_VERSION" "$TMP/core/$name.yaml"
done
check "kubernetes-validate --strict: deploy/kubernetes" \
  kubernetes-validate --strict --quiet -k "$KUBERNETES_VERSION" \
  $(ls deploy/kubernetes/*.yaml | grep -v kustomization.yaml)

echo "=== Custom resources against their CRD schemas (scripts/validate-crds.mjs)"
for r in "$TMP"/render/*.yaml; do
  name="$(basename "$r" .yaml)"
  check "CRD schemas: $name" node scripts/validate-crds.mjs "$TMP/crd/$name.yaml"
done

# validate_crds_of VALUES: render the chart with VALUES and validate its custom resources.
validate_crds_of() {
  helm template "$RELEASE" "$CHART" --namespace "$NAMESPACE" -f "$1" >"$TMP/invalid.yaml" || return 3
  "$PY" scripts/deploy-checks.py split "$TMP/invalid.yaml" "$TMP/invalid-core.yaml" "$TMP/invalid-crd.yaml" >/dev/null || return 3
  node scripts/validate-crds.mjs "$TMP/invalid-crd.yaml"
}
INVALID="$CHART/ci-invalid"
expect_failure "CRD schemas reject: a ServiceMonitor relabeling action out of its enum" \
  "FAIL .*ServiceMonitor/.*relabelings/0/action must be equal to one of the allowed values" \
  validate_crds_of "$INVALID/crd-schema-values.yaml"
expect_failure "CRD schemas reject: a field the ServiceMonitor CRD does not declare" \
  "FAIL .*ServiceMonitor/.*unknown field .spec.endpoints\[0\].metricRelabelings\[0\].sourceLabel" \
  validate_crds_of "$INVALID/crd-schema-values.yaml"
expect_failure "CRD schemas reject: a ScaledObject scaling policy period that is not an integer" \
  "FAIL .*ScaledObject/.*scaleDown/policies/0/periodSeconds must be integer" \
  validate_crds_of "$INVALID/crd-schema-values.yaml"
expect_failure "CRD schemas reject: an HTTPRoute parent port out of range" \
  "FAIL .*HTTPRoute/.*parentRefs/0/port must be <= 65535" \
  validate_crds_of "$INVALID/crd-schema-values.yaml"
expect_failure "CRD schemas reject: a DestinationRule connection limit that is not an integer" \
  "FAIL .*DestinationRule/.*connectionPool/tcp/maxConnections must be integer" \
  validate_crds_of "$INVALID/crd-schema-values.yaml"
expect_failure "CRD schemas reject: a custom resource of an API group without models" \
  "FAIL .*Widget/-/floodgate: no model package for API group widgets.example.com" \
  node scripts/validate-crds.mjs "$INVALID/unknown-kinds.yaml"
expect_failure "CRD schemas reject: a kind its API group's package has no model for" \
  "FAIL .*ScaledWidget/-/floodgate: @kubernetes-models/keda .* has no model for keda.sh/v1alpha1 ScaledWidget" \
  node scripts/validate-crds.mjs "$INVALID/unknown-kinds.yaml"

echo "=== Prometheus Operator objects (structure + promtool on the PrometheusRule)"
check "ServiceMonitor/PrometheusRule structure (monitoring-values)" \
  "$PY" scripts/deploy-checks.py crds "$TMP/crd/monitoring-values.yaml" "$TMP/rules"
check "promtool check rules on the rendered PrometheusRule" \
  bash -c 'ls "$1"/*.yaml >/dev/null && promtool check rules "$1"/*.yaml' _ "$TMP/rules"
check "promtool parses the KEDA trigger queries (keda-values)" \
  bash -c '"$1" scripts/deploy-checks.py keda-queries "$2/crd/keda-values.yaml" "$2/keda-rules.yaml" \
    && promtool check rules "$2/keda-rules.yaml"' _ "$PY" "$TMP"
check "dashboard ConfigMaps carry dashboards/ intact (dashboards-values)" \
  "$PY" scripts/deploy-checks.py embedded-dashboards "$TMP/render/dashboards-values.yaml" dashboards

echo "=== YAML lint"
check "yamllint chart values, Chart.yaml, ci and ci-invalid values" \
  yamllint --strict "$CHART/Chart.yaml" "${values_files[@]}" "$CHART"/ci-invalid/*.yaml
check "yamllint rendered manifests" yamllint --strict "$TMP/render"
check "yamllint deploy/kubernetes, deploy/prometheus, deploy/compose" \
  yamllint --strict deploy/kubernetes deploy/prometheus deploy/compose .yamllint

echo "=== Dockerfile"
check "hadolint Dockerfile" hadolint Dockerfile

echo "=== Prometheus rules and configs"
check "promtool check rules deploy/prometheus/floodgate-rules.yaml" \
  promtool check rules deploy/prometheus/floodgate-rules.yaml
check "SLO rules match deploy/prometheus/floodgate-slos.yaml (scripts/slo-rules.py --check)" \
  "$PY" scripts/slo-rules.py --check
# One promtool per file, side by side: promtool evaluates every rule at every minute of a
# test's series, one test after another, on one core.
check "promtool test rules deploy/prometheus/tests/*.yaml (one process per file)" \
  bash -c 'pids=(); for f; do promtool test rules "$f" & pids+=($!); done
    rc=0; for p in "${pids[@]}"; do wait "$p" || rc=1; done; exit $rc' _ deploy/prometheus/tests/*.yaml
check "promtool check config deploy/prometheus/prometheus.yml (compose)" \
  promtool check config deploy/prometheus/prometheus.yml
check "promtool check config deploy/prometheus/ci-scrape.yml (PORT templated)" \
  bash -c 'sed "s/127\.0\.0\.1:PORT/127.0.0.1:8080/" deploy/prometheus/ci-scrape.yml >deploy/prometheus/.ci-scrape.check.yml \
    && promtool check config deploy/prometheus/.ci-scrape.check.yml; rc=$?; rm -f deploy/prometheus/.ci-scrape.check.yml; exit $rc'

check "every alert's runbook_url has a heading in deploy/README.md" \
  "$PY" scripts/deploy-checks.py runbooks deploy/prometheus/floodgate-rules.yaml deploy/README.md

echo "=== Dashboards"
check "dashboard lint (uids, variables, selectors, units)" \
  "$PY" scripts/deploy-checks.py dashboards dashboards/*.json
check "chart dashboards are byte-identical to dashboards/" \
  diff -r dashboards "$CHART/dashboards"
check "chart rules are byte-identical to deploy/prometheus/floodgate-rules.yaml" \
  cmp deploy/prometheus/floodgate-rules.yaml "$CHART/rules/floodgate-rules.yaml"

echo "=== Plain manifests"
check "deploy/kubernetes matches a fresh render (scripts/render-manifests.sh)" \
  bash -c 'scripts/render-manifests.sh "$1/k8s" >/dev/null && diff -r deploy/kubernetes "$1/k8s"' _ "$TMP"

echo "=== Compose"
check "docker-compose config -q deploy/compose/docker-compose.yml" \
  docker-compose -f deploy/compose/docker-compose.yml config -q

echo
if [ "$failed" -gt 0 ]; then
  echo "Failed checks:"
  printf '  - %s\n' "${failures[@]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
