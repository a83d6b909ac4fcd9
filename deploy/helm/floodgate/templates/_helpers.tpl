{{/*
Expand the name of the chart.
*/}}
{{- define "floodgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
Truncated at 63 chars because some Kubernetes name fields are limited to this
(by the DNS naming spec). If the release name contains the chart name it is
used as the full name.
*/}}
{{- define "floodgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version as used by the chart label.
*/}}
{{- define "floodgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "floodgate.labels" -}}
helm.sh/chart: {{ include "floodgate.chart" . }}
{{ include "floodgate.selectorLabels" . }}
app.kubernetes.io/version: {{ include "floodgate.imageTag" . | quote }}
app.kubernetes.io/component: server
app.kubernetes.io/part-of: floodgate
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels.
*/}}
{{- define "floodgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "floodgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the service account to use.
*/}}
{{- define "floodgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "floodgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image tag: values override, else the chart's appVersion.
*/}}
{{- define "floodgate.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full image reference; a digest, when given, pins the image.
*/}}
{{- define "floodgate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "floodgate.imageTag" .) }}
{{- end }}
{{- end }}

{{/*
Path at which the rendered TOML configuration is mounted.
*/}}
{{/*
The port name probes and scrapes use: the admin listener when enabled.
*/}}
{{- define "floodgate.opsPort" -}}
{{- if .Values.admin.enabled }}admin{{ else }}http{{ end }}
{{- end }}

{{/*
A probe from values, pointed at the operational port.
Usage: include "floodgate.probe" (dict "probe" .Values.livenessProbe "root" .)
*/}}
{{- define "floodgate.probe" -}}
{{- $probe := deepCopy .probe }}
{{- if and $probe.httpGet (eq (toString $probe.httpGet.port) "http") }}
{{- $_ := set $probe.httpGet "port" (include "floodgate.opsPort" .root) }}
{{- end }}
{{- toYaml $probe }}
{{- end }}

{{- define "floodgate.configDir" -}}/etc/floodgate{{- end }}
{{- define "floodgate.configFile" -}}floodgate.toml{{- end }}

{{/*
terminationGracePeriodSeconds: explicit value, or preStop sleep + shutdown
timeout + 10s margin. The pod must outlive the server's own drain deadline,
otherwise the kubelet SIGKILLs requests that are still being answered.
*/}}
{{- define "floodgate.terminationGracePeriodSeconds" -}}
{{- $shutdown := int .Values.config.server.shutdownTimeoutSeconds }}
{{- $preStop := int .Values.lifecycle.preStopSleepSeconds }}
{{- $minimum := add $shutdown $preStop }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $minimum 10 }}
{{- else }}
{{- $grace := int .Values.terminationGracePeriodSeconds }}
{{- if le $grace $minimum }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be greater than lifecycle.preStopSleepSeconds + config.server.shutdownTimeoutSeconds (%d)" $grace $minimum) }}
{{- end }}
{{- $grace }}
{{- end }}
{{- end }}

{{/*
OTEL_RESOURCE_ATTRIBUTES: Kubernetes identity (expanded by the kubelet from the
POD_NAME / POD_NAMESPACE variables), the service version, then user attributes.
*/}}
{{- define "floodgate.otelResourceAttributes" -}}
{{- $attrs := list "k8s.pod.name=$(POD_NAME)" "k8s.namespace.name=$(POD_NAMESPACE)" (printf "service.version=%s" (include "floodgate.imageTag" .)) }}
{{- range $key, $value := .Values.otel.resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%s" $key $value) }}
{{- end }}
{{- join "," $attrs }}
{{- end }}

{{/*
Where the Redis password from redis.existingSecret is mounted.
*/}}
{{- define "floodgate.redisPasswordDir" -}}/etc/floodgate/redis{{- end }}
{{- define "floodgate.redisPasswordFile" -}}{{ include "floodgate.redisPasswordDir" . }}/password{{- end }}

{{/*
Refuse Redis settings the server could not use: a Redis backend without redis.url, a
password inside the URL (it would land in the ConfigMap; use redis.existingSecret), and
[cache] / [redis] tables in extraToml that the chart renders itself (TOML forbids a table twice).
*/}}
{{- define "floodgate.validateRedis" -}}
{{- $url := .Values.redis.url }}
{{- if and (eq (toString .Values.config.rateLimit.backend) "redis") (not $url) }}
{{- fail "config.rateLimit.backend=redis needs redis.url" }}
{{- end }}
{{- if and .Values.config.cache (eq (toString .Values.config.cache.backend) "redis") (not $url) }}
{{- fail "config.cache.backend=redis needs redis.url" }}
{{- end }}
{{- if or (regexMatch "^rediss?://[^/?#@]*:[^/?#@]*@" $url) (regexMatch "[?&]password=" $url) }}
{{- fail "redis.url must not carry a password: put it in a Secret and set redis.existingSecret" }}
{{- end }}
{{- if and .Values.redis.existingSecret (not $url) }}
{{- fail "redis.existingSecret needs redis.url" }}
{{- end }}
{{- $cache := .Values.config.cache | default dict }}
{{- if and (or (not (kindIs "invalid" $cache.enabled)) $cache.backend) (regexMatch "(?m)^\\s*\\[cache\\]" .Values.config.extraToml) }}
{{- fail "config.extraToml must not have a [cache] table when config.cache.enabled or config.cache.backend is set" }}
{{- end }}
{{- if and $url (regexMatch "(?m)^\\s*\\[redis\\]" .Values.config.extraToml) }}
{{- fail "config.extraToml must not have a [redis] table when redis.url is set" }}
{{- end }}
{{- end }}

{{/*
Where the job database lives: "" (jobs off), "postgres" (database.existingSecret) or "sqlite"
(a file in the pod, on the data volume).
*/}}
{{- define "floodgate.jobsStore" -}}
{{- if .Values.jobs.enabled }}{{ if .Values.database.existingSecret }}postgres{{ else }}sqlite{{ end }}{{ end }}
{{- end }}

{{/*
The data volume (emptyDir or PVC) holding the SQLite file, and its URL (three slashes: an
absolute path). The root filesystem stays read-only.
*/}}
{{- define "floodgate.dataDir" -}}/var/lib/floodgate{{- end }}
{{- define "floodgate.sqliteUrl" -}}sqlite://{{ include "floodgate.dataDir" . }}/floodgate-jobs.db{{- end }}
{{- define "floodgate.jobsClaimName" -}}
{{- .Values.jobs.persistence.existingClaim | default (printf "%s-jobs" (include "floodgate.fullname" .)) }}
{{- end }}

{{/*
Refuse job settings the server could not use: SQLite with more than one replica or an autoscaler
(the HPA or KEDA: each pod would have its own SQLite file, so a job submitted to one pod would be unknown to the
others), a Secret without jobs, persistence with PostgreSQL, a claim without persistence, and
[jobs] / [database] tables in extraToml (the chart renders [jobs] itself, and the database URL
must come from DATABASE_URL, never from a rendered file).
*/}}
{{- define "floodgate.validateJobs" -}}
{{- $store := include "floodgate.jobsStore" . }}
{{- $p := .Values.jobs.persistence }}
{{- if eq $store "sqlite" }}
{{- if .Values.autoscaling.enabled }}
{{- fail "jobs on SQLite cannot autoscale (autoscaling.enabled): the SQLite file lives in one pod; several replicas need PostgreSQL (database.existingSecret)" }}
{{- end }}
{{- if .Values.autoscaling.keda.enabled }}
{{- fail "jobs on SQLite cannot autoscale (autoscaling.keda.enabled): the SQLite file lives in one pod; several replicas need PostgreSQL (database.existingSecret)" }}
{{- end }}
{{- if gt (int .Values.replicaCount) 1 }}
{{- fail (printf "jobs on SQLite need replicaCount: 1 (got %d): the SQLite file lives in one pod; several replicas need PostgreSQL (database.existingSecret)" (int .Values.replicaCount)) }}
{{- end }}
{{- end }}
{{- if and .Values.database.existingSecret (not .Values.jobs.enabled) }}
{{- fail "database.existingSecret needs jobs.enabled" }}
{{- end }}
{{- if and (eq $store "postgres") $p.enabled }}
{{- fail "jobs.persistence.enabled is for SQLite: with database.existingSecret the jobs are in PostgreSQL" }}
{{- end }}
{{- if and $p.existingClaim (not $p.enabled) }}
{{- fail "jobs.persistence.existingClaim needs jobs.persistence.enabled" }}
{{- end }}
{{- if regexMatch "(?m)^\\s*\\[jobs(\\]|\\.)" .Values.config.extraToml }}
{{- fail "config.extraToml must not have a [jobs] table: the chart renders it from jobs.*" }}
{{- end }}
{{- if regexMatch "(?m)^\\s*\\[database(\\]|\\.)" .Values.config.extraToml }}
{{- fail "config.extraToml must not have a [database] table: set database.* (the URL is passed as DATABASE_URL)" }}
{{- end }}
{{- end }}

{{/*
gRPC, as far as the chart can tell: off only when config.grpc.enabled is false (null keeps the
server default, on). Prints "true" or nothing.
*/}}
{{- define "floodgate.grpcEnabled" -}}
{{- $grpc := .Values.config.grpc | default dict }}
{{- if not (and (kindIs "bool" $grpc.enabled) (not $grpc.enabled)) }}true{{ end }}
{{- end }}

{{/*
appProtocol of the http Service port: service.appProtocol when set ("" = none), else "http" with
Istio (its name for HTTP/1.1) and none otherwise. The port carries REST over HTTP/1.1 (WebSocket
upgrades included), so proxies must not be told h2c. Prints nothing for none.
*/}}
{{- define "floodgate.appProtocol" -}}
{{- if not (kindIs "invalid" .Values.service.appProtocol) }}
{{- .Values.service.appProtocol }}
{{- else if .Values.mesh.istio.enabled }}http
{{- end }}
{{- end }}

{{/*
The grpc Service port (same container port as http), present while gRPC is on. Its name is
"grpc" in cleartext; with tls.secretName it is "tls-grpc", which a mesh reading protocols from
port names (Istio: <protocol>[-<suffix>]) takes for TLS rather than for plaintext gRPC.
*/}}
{{- define "floodgate.grpcPortName" -}}
{{- if .Values.tls.secretName }}tls-grpc{{ else }}grpc{{ end }}
{{- end }}

{{/*
appProtocol of the grpc Service port: service.grpcAppProtocol when set ("" = none), else
kubernetes.io/h2c while the port speaks cleartext, none with TLS (no kubernetes.io/ name
describes HTTP/2 over TLS by ALPN). Prints nothing for none.
*/}}
{{- define "floodgate.grpcAppProtocol" -}}
{{- if kindIs "invalid" .Values.service.grpcAppProtocol }}
{{- if .Values.mesh.istio.enabled }}grpc
{{- else if not .Values.tls.secretName }}kubernetes.io/h2c{{ end }}
{{- else }}
{{- .Values.service.grpcAppProtocol }}
{{- end }}
{{- end }}

{{/*
The readiness probe: readinessProbe from values (pointed at the operational port), or with
grpcProbe.enabled the same timing with a gRPC health check on the API port instead of its
handler. Kubernetes gRPC probes take a port number, not a name.
*/}}
{{- define "floodgate.readinessProbe" -}}
{{- if .Values.grpcProbe.enabled }}
{{- $probe := omit (deepCopy (.Values.readinessProbe | default dict)) "httpGet" "tcpSocket" "exec" "grpc" }}
{{- $_ := set $probe "grpc" (dict "port" (int .Values.containerPort) "service" .Values.grpcProbe.service) }}
{{- toYaml $probe }}
{{- else if .Values.readinessProbe }}
{{- include "floodgate.probe" (dict "probe" .Values.readinessProbe "root" .) }}
{{- end }}
{{- end }}

{{/*
Refuse gRPC settings the server or the kubelet could not use: a [grpc] table in extraToml (the
chart must know whether gRPC is on), a grpc Service port number already taken, and the gRPC readiness probe with TLS on the API port
(Kubernetes gRPC probes cannot do TLS) or with gRPC off.
*/}}
{{- define "floodgate.validateGrpc" -}}
{{- if regexMatch "(?m)^\\s*\\[grpc(\\]|\\.)" .Values.config.extraToml }}
{{- fail "config.extraToml must not have a [grpc] table: set config.grpc.enabled and config.grpc.reflection" }}
{{- end }}
{{- if include "floodgate.grpcEnabled" . }}
{{- if eq (int .Values.service.grpcPort) (int .Values.service.port) }}
{{- fail (printf "service.grpcPort (%d) must differ from service.port: both are ports of one Service" (int .Values.service.grpcPort)) }}
{{- end }}
{{- if and .Values.admin.enabled (eq (int .Values.service.grpcPort) (int .Values.admin.port)) }}
{{- fail (printf "service.grpcPort (%d) must differ from admin.port: both are ports of one Service" (int .Values.service.grpcPort)) }}
{{- end }}
{{- end }}
{{- if .Values.grpcProbe.enabled }}
{{- if .Values.tls.secretName }}
{{- fail "grpcProbe.enabled cannot be used with tls.secretName: Kubernetes gRPC probes cannot do TLS, and the API port (the only one serving gRPC) then speaks only TLS; keep the HTTP readinessProbe on the admin port" }}
{{- end }}
{{- if not (include "floodgate.grpcEnabled" .) }}
{{- fail "grpcProbe.enabled needs gRPC: config.grpc.enabled is false" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
PromQL label matchers selecting this release's pods for the KEDA triggers:
autoscaling.keda.prometheus.selector, else the namespace and the Deployment's pod names
(<fullname>-<pod-template-hash>-<suffix>), the labels Prometheus attaches to the pods' series.
*/}}
{{- define "floodgate.kedaSelector" -}}
{{- .Values.autoscaling.keda.prometheus.selector | default (printf "namespace=%q,pod=~%q" .Release.Namespace (printf "%s-[a-z0-9]+-[a-z0-9]+" (include "floodgate.fullname" .))) }}
{{- end }}

{{/*
Refuse autoscaler settings that cannot work: the chart's HPA and KEDA's (KEDA creates its own HPA
for the Deployment; two would fight over its replicas).
*/}}
{{- define "floodgate.validateAutoscaling" -}}
{{- if and .Values.autoscaling.enabled .Values.autoscaling.keda.enabled }}
{{- fail "autoscaling.enabled and autoscaling.keda.enabled cannot be used together: KEDA creates and drives its own HorizontalPodAutoscaler for the Deployment, and two autoscalers would fight over its replicas; keep one" }}
{{- end }}
{{- end }}

{{/*
Whether two hostname lists can match a common host: "true" or nothing. An empty list matches every
host (a route without hostnames takes all of its listener's, an Ingress rule without host takes
any); "*.example.com" matches any name ending in ".example.com" (the Gateway API's suffix match,
the wider of the two APIs' wildcards).
Usage: include "floodgate.hostsOverlap" (list $a $b)
*/}}
{{- define "floodgate.hostsOverlap" -}}
{{- $a := index . 0 | default list }}
{{- $b := index . 1 | default list }}
{{- $overlap := or (empty $a) (empty $b) }}
{{- range $x := $a }}
{{- range $y := $b }}
{{- if or (eq $x $y) (and (hasPrefix "*." $x) (hasSuffix (trimPrefix "*" $x) $y)) (and (hasPrefix "*." $y) (hasSuffix (trimPrefix "*" $y) $x)) }}
{{- $overlap = true }}
{{- end }}
{{- end }}
{{- end }}
{{- if $overlap }}true{{ end }}
{{- end }}

{{/*
Refuse Gateway API settings that cannot work: routes without a parent Gateway; an HTTPRoute and a
GRPCRoute on the same Gateways sharing a hostname (the Gateway API accepts only one of them for
it); and the routes exposing a host the Ingress exposes too (two controllers would answer for one
name, and which one a client reaches would depend on DNS, not on the chart).
*/}}
{{- define "floodgate.validateGateway" -}}
{{- $gw := .Values.gateway }}
{{- if $gw.enabled }}
{{- if empty $gw.parentRefs }}
{{- fail "gateway.enabled needs gateway.parentRefs: the Gateway (and listener, with sectionName) the routes attach to" }}
{{- end }}
{{- $grpcRoute := and $gw.grpc.enabled (include "floodgate.grpcEnabled" .) }}
{{- if and $grpcRoute (eq (toJson ($gw.grpc.parentRefs | default $gw.parentRefs)) (toJson $gw.parentRefs)) (include "floodgate.hostsOverlap" (list $gw.http.hostnames $gw.grpc.hostnames)) }}
{{- fail "gateway.http.hostnames and gateway.grpc.hostnames overlap on the same gateway.parentRefs: the Gateway API lets only one of an HTTPRoute and a GRPCRoute serve a hostname on a listener; give the GRPCRoute its own hostnames (e.g. grpc.<domain>) or its own listener (gateway.grpc.parentRefs with a sectionName)" }}
{{- end }}
{{- if .Values.ingress.enabled }}
{{- $hosts := list }}
{{- range .Values.ingress.hosts }}{{ $hosts = append $hosts .host }}{{ end }}
{{- $routeHosts := $gw.http.hostnames }}
{{- if $grpcRoute }}{{ $routeHosts = concat $routeHosts $gw.grpc.hostnames }}{{ end }}
{{- if or (empty $gw.http.hostnames) (and $grpcRoute (empty $gw.grpc.hostnames)) (include "floodgate.hostsOverlap" (list $routeHosts $hosts)) }}
{{- fail "gateway.enabled and ingress.enabled expose the same host (a route without hostnames takes every host of its listener): two controllers would answer for one name. Give them different hosts (e.g. while moving from the Ingress to the Gateway API), or keep one" }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Seconds from the pod's termination until the server has finished draining: the preStop sleep
plus the server's shutdown timeout. A mesh proxy must keep forwarding that long.
*/}}
{{- define "floodgate.drainSeconds" -}}
{{- add (int .Values.lifecycle.preStopSleepSeconds) (int .Values.config.server.shutdownTimeoutSeconds) }}
{{- end }}

{{/*
Pod labels a mesh needs (YAML of a map; empty without a mesh).
*/}}
{{- define "floodgate.meshPodLabels" -}}
{{- if .Values.mesh.istio.enabled }}
sidecar.istio.io/inject: "true"
{{- end }}
{{- end }}

{{/*
Pod annotations a mesh needs (YAML of a map; empty without a mesh): the proxy is injected, the
server starts only once the proxy is ready, and the proxy keeps forwarding until the server has
drained (preStop sleep + shutdown timeout), well inside terminationGracePeriodSeconds.
*/}}
{{- define "floodgate.meshPodAnnotations" -}}
{{- $drain := include "floodgate.drainSeconds" . }}
{{- if .Values.mesh.istio.enabled }}
proxy.istio.io/config: |
  holdApplicationUntilProxyStarts: true
  terminationDrainDuration: {{ $drain }}s
{{- if not .Values.mesh.istio.mergeMetrics }}
prometheus.istio.io/merge-metrics: "false"
{{- end }}
{{- end }}
{{- if .Values.mesh.linkerd.enabled }}
linkerd.io/inject: enabled
config.linkerd.io/proxy-await: enabled
config.alpha.linkerd.io/proxy-wait-before-exit-seconds: {{ $drain | quote }}
{{- if .Values.mesh.linkerd.nativeSidecar }}
config.alpha.linkerd.io/proxy-enable-native-sidecar: "true"
{{- end }}
{{- end }}
{{- end }}

{{/*
Refuse mesh settings that cannot work: two meshes at once; Istio with TLS the server terminates
(the sidecar would see opaque TLS); retries on the server's load-shedding and rate-limit refusals;
the AuthorizationPolicy while the metrics are also served on the API port.
*/}}
{{- define "floodgate.validateMesh" -}}
{{- $istio := .Values.mesh.istio }}
{{- if and $istio.enabled .Values.mesh.linkerd.enabled }}
{{- fail "mesh.istio.enabled and mesh.linkerd.enabled cannot be used together: a pod runs one mesh proxy; keep one" }}
{{- end }}
{{- if $istio.enabled }}
{{- if .Values.tls.secretName }}
{{- fail "mesh.istio.enabled cannot be used with tls.secretName: the sidecar cannot see into TLS the server terminates itself, so the VirtualService's routes, timeouts and retries and the DestinationRule's limits would not apply; in the mesh Istio's mutual TLS encrypts (mesh.istio.peerAuthentication)" }}
{{- end }}
{{- range $token := splitList "," $istio.virtualService.retries.retryOn }}
{{- if has $token (list "5xx" "gateway-error" "retriable-status-codes" "unavailable" "resource-exhausted" "429" "503") }}
{{- fail (printf "mesh.istio.virtualService.retries.retryOn must not retry %s: 503 (gRPC unavailable) is the server shedding load and 429 (resource-exhausted) its rate limit, so retrying them multiplies the load when there is already too much" $token) }}
{{- end }}
{{- end }}
{{- if and $istio.authorizationPolicy.enabled (not (and .Values.admin.enabled .Values.admin.exclusive)) }}
{{- fail "mesh.istio.authorizationPolicy.enabled needs admin.enabled and admin.exclusive: the policy keeps the admin port to the monitoring namespaces, which protects the metrics only when they are served there alone" }}
{{- end }}
{{- end }}
{{- end }}
