{{/* Names, labels and the checks that refuse an unsafe release. */}}

{{- define "checkout-strangler.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "checkout-strangler.fullname" -}}
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

{{- define "checkout-strangler.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "checkout-strangler.labels" -}}
helm.sh/chart: {{ include "checkout-strangler.chart" . }}
app.kubernetes.io/name: {{ include "checkout-strangler.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: checkout-strangler
{{- end }}

{{/* Selector labels of one component: include with (dict "ctx" $ "component" "proxy"). */}}
{{- define "checkout-strangler.selectorLabels" -}}
app.kubernetes.io/name: {{ include "checkout-strangler.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "checkout-strangler.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "checkout-strangler.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "checkout-strangler.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "checkout-strangler.rulesConfigMap" -}}
{{- default (printf "%s-rules" (include "checkout-strangler.fullname" .)) .Values.rules.existingConfigMap }}
{{- end }}

{{- define "checkout-strangler.redisEnabled" -}}
{{- if or .Values.redis.url .Values.redis.existingSecret }}true{{ end }}
{{- end }}

{{- define "checkout-strangler.coreUrl" -}}
{{- if .Values.proxy.coreUrl }}
{{- .Values.proxy.coreUrl }}
{{- else if .Values.demo.core.enabled }}
{{- printf "http://%s-core:%d" (include "checkout-strangler.fullname" .) (int .Values.demo.core.port) }}
{{- end }}
{{- end }}

{{- define "checkout-strangler.legacyUrl" -}}
{{- if .Values.proxy.legacyUrl }}
{{- .Values.proxy.legacyUrl }}
{{- else if .Values.demo.legacy.enabled }}
{{- printf "http://%s-legacy:%d" (include "checkout-strangler.fullname" .) (int .Values.demo.legacy.port) }}
{{- end }}
{{- end }}

{{/* The port the admin surface is on: its own, else the main one. */}}
{{- define "checkout-strangler.adminPortName" -}}
{{- if gt (int .Values.proxy.adminPort) 0 }}admin{{ else }}http{{ end }}
{{- end }}

{{- define "checkout-strangler.terminationGracePeriodSeconds" -}}
{{- $t := .Values.termination }}
{{- if gt (int $t.terminationGracePeriodSeconds) 0 }}
{{- int $t.terminationGracePeriodSeconds }}
{{- else }}
{{- add (int $t.preStopSleepSeconds) (int $t.drainSeconds) 5 }}
{{- end }}
{{- end }}

{{/*
One probe: an httpGet of the admin surface's /livez or /readyz, on the admin port when there
is one. Both answer without the admin token (they reveal nothing), so no Secret goes into
the probe.
*/}}
{{- define "checkout-strangler.probe" -}}
httpGet:
  path: {{ .path }}
  port: {{ include "checkout-strangler.adminPortName" .ctx }}
periodSeconds: {{ .spec.periodSeconds }}
failureThreshold: {{ .spec.failureThreshold }}
timeoutSeconds: {{ .spec.timeoutSeconds }}
{{- end }}

{{/* Refuse what cannot work, before anything is applied. */}}
{{- define "checkout-strangler.validate" -}}
{{- $redis := include "checkout-strangler.redisEnabled" . }}
{{- $maxReplicas := int .Values.replicaCount }}
{{- if .Values.autoscaling.enabled }}{{ $maxReplicas = int .Values.autoscaling.maxReplicas }}{{ end }}
{{- if and (gt $maxReplicas 1) (not $redis) }}
{{- fail (printf "replicaCount/autoscaling.maxReplicas is %d but no Redis is set (redis.url or redis.existingSecret): SQLite is one replica's store, so replicas would not share kill switches, rules or sticky assignments. Set a Redis URL, or replicaCount=1 without autoscaling." $maxReplicas) }}
{{- end }}
{{- if and (gt (int .Values.proxy.workers) 1) (not $redis) }}
{{- fail "proxy.workers > 1 needs Redis (redis.url or redis.existingSecret): workers share sticky state through it" }}
{{- end }}
{{- if and .Values.redis.url .Values.redis.existingSecret }}
{{- fail "set redis.url or redis.existingSecret, not both" }}
{{- end }}
{{- if and .Values.trafficRedis.url .Values.trafficRedis.existingSecret }}
{{- fail "set trafficRedis.url or trafficRedis.existingSecret, not both" }}
{{- end }}
{{- if and (or .Values.trafficRedis.url .Values.trafficRedis.existingSecret) (not $redis) }}
{{- fail "trafficRedis needs redis (the control store) too: without it the proxy keeps sticky state and telemetry in process" }}
{{- end }}
{{- if not (include "checkout-strangler.coreUrl" .) }}
{{- fail "proxy.coreUrl is required (or demo.core.enabled=true)" }}
{{- end }}
{{- if not (include "checkout-strangler.legacyUrl" .) }}
{{- fail "proxy.legacyUrl is required (or demo.legacy.enabled=true)" }}
{{- end }}
{{- $t := .Values.termination }}
{{- if and (gt (int $t.terminationGracePeriodSeconds) 0) (lt (int $t.terminationGracePeriodSeconds) (add (int $t.preStopSleepSeconds) (int $t.drainSeconds))) }}
{{- fail (printf "termination.terminationGracePeriodSeconds (%d) is shorter than preStopSleepSeconds + drainSeconds (%d): requests in flight would be cut" (int $t.terminationGracePeriodSeconds) (add (int $t.preStopSleepSeconds) (int $t.drainSeconds))) }}
{{- end }}
{{- if and .Values.state.existingClaim (gt $maxReplicas 1) }}
{{- fail "state.existingClaim is for one replica (SQLite); with Redis the state cache belongs in each pod's emptyDir" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (gt (int .Values.proxy.adminPort) 0) (not .Values.service.admin.enabled) }}
{{- fail "serviceMonitor needs service.admin.enabled when proxy.adminPort is set (metrics are on the admin port only)" }}
{{- end }}
{{- if and (gt (int .Values.proxy.adminPort) 0) (eq (int .Values.proxy.adminPort) (int .Values.proxy.port)) }}
{{- fail "proxy.adminPort must differ from proxy.port (or be 0)" }}
{{- end }}
{{- end }}
