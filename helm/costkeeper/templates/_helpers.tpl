{{/* Names and labels. */}}
{{- define "costkeeper.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "costkeeper.fullname" -}}
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

{{- define "costkeeper.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "costkeeper.selectorLabels" -}}
app.kubernetes.io/name: {{ include "costkeeper.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "costkeeper.labels" -}}
helm.sh/chart: {{ include "costkeeper.chart" . }}
{{ include "costkeeper.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: {{ .Values.mode }}
{{- end }}

{{- define "costkeeper.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "costkeeper.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "costkeeper.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The config.yaml document of the current mode. */}}
{{- define "costkeeper.config" -}}
{{- $config := deepCopy (.Values.config | default dict) }}
{{- if eq .Values.mode "sidecar" }}
{{- $store := mergeOverwrite (deepCopy (get $config "store" | default dict)) (deepCopy .Values.sidecar.store) }}
{{- if eq (get $store "backend") "sqlite" }}
{{- $_ := set $store "path" (get $store "path" | default "/var/lib/costkeeper/usage.db") }}
{{- end }}
{{- $_ := set $config "store" $store }}
{{- $auth := mergeOverwrite (deepCopy (get $config "auth" | default dict)) (dict "mode" "trust" "trust_org" .Values.sidecar.trustOrg "trust_app" .Values.sidecar.trustApp) }}
{{- $_ := set $config "auth" $auth }}
{{- $_ := set $config "server" (mergeOverwrite (deepCopy (get $config "server" | default dict)) (dict "host" "127.0.0.1" "port" (int .Values.sidecar.port) "admin_host" "0.0.0.0" "admin_port" (int .Values.sidecar.adminPort))) }}
{{- else }}
{{- $_ := set $config "server" (mergeOverwrite (deepCopy (get $config "server" | default dict)) (dict "host" "0.0.0.0" "port" (int .Values.service.port) "admin_host" "0.0.0.0" "admin_port" (int .Values.service.adminPort) "workers" (int .Values.workers))) }}
{{- end }}
{{- $store := get $config "store" | default dict }}
{{- $_ := set $store "journal_dir" (get $store "journal_dir" | default "/var/lib/costkeeper/journal") }}
{{- $_ := set $config "store" $store }}
{{- toYaml $config }}
{{- end }}

{{/* The proxy's environment: config file, the admin token and secret key references. */}}
{{- define "costkeeper.env" -}}
- name: COSTKEEPER_CONFIG
  value: /etc/costkeeper/config.yaml
{{- /* The image's COSTKEEPER_HOST/… would win over config.yaml: set them per mode. */}}
{{- if eq .Values.mode "sidecar" }}
- name: COSTKEEPER_HOST
  value: "127.0.0.1"
- name: COSTKEEPER_PORT
  value: {{ .Values.sidecar.port | quote }}
- name: COSTKEEPER_ADMIN_PORT
  value: {{ .Values.sidecar.adminPort | quote }}
{{- else }}
- name: COSTKEEPER_HOST
  value: "0.0.0.0"
- name: COSTKEEPER_PORT
  value: {{ .Values.service.port | quote }}
- name: COSTKEEPER_ADMIN_PORT
  value: {{ .Values.service.adminPort | quote }}
{{- end }}
- name: COSTKEEPER_ADMIN_HOST
  value: "0.0.0.0"
{{- with .Values.adminToken.existingSecret }}
- name: COSTKEEPER_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.adminToken.key }}
{{- end }}
{{- with .Values.secretKey.existingSecret }}
- name: COSTKEEPER_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.secretKey.key }}
{{- if $.Values.secretKey.previousKey }}
- name: COSTKEEPER_SECRET_KEY_PREVIOUS
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.secretKey.previousKey }}
      optional: true
{{- end }}
{{- end }}
{{- with .Values.env }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "costkeeper.probes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: admin
  {{- toYaml .Values.probes.liveness | nindent 2 }}
readinessProbe:
  httpGet:
    path: /readyz
    port: admin
  {{- toYaml .Values.probes.readiness | nindent 2 }}
{{- end }}

{{- define "costkeeper.volumeMounts" -}}
- name: costkeeper-config
  mountPath: /etc/costkeeper
  readOnly: true
- name: costkeeper-state
  mountPath: /var/lib/costkeeper
- name: costkeeper-tmp
  mountPath: /tmp
{{- end }}

{{/*
Sidecar mode: the volumes the sidecar container needs, for the pod's `volumes`.
*/}}
{{- define "costkeeper.sidecar.volumes" -}}
- name: costkeeper-config
  configMap:
    name: {{ include "costkeeper.fullname" . }}
- name: costkeeper-state
  emptyDir:
    sizeLimit: {{ .Values.journal.sizeLimit }}
- name: costkeeper-tmp
  emptyDir:
    medium: Memory
    sizeLimit: 16Mi
{{- end }}

{{/*
Sidecar mode: the proxy container, for the pod's `initContainers` (native
sidecar, sidecar.native: true) or `containers`.
*/}}
{{- define "costkeeper.sidecar.container" -}}
- name: costkeeper
  image: {{ include "costkeeper.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- if .Values.sidecar.native }}
  restartPolicy: Always
  {{- end }}
  args: ["serve"]
  ports:
    - name: admin
      containerPort: {{ .Values.sidecar.adminPort }}
      protocol: TCP
  env:
    {{- include "costkeeper.env" . | nindent 4 }}
  {{- with .Values.envFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- include "costkeeper.probes" . | nindent 2 }}
  startupProbe:
    httpGet:
      path: /healthz
      port: admin
    periodSeconds: 1
    failureThreshold: 30
  resources:
    {{- toYaml .Values.sidecar.resources | nindent 4 }}
  securityContext:
    runAsNonRoot: true
    runAsUser: 10001
    runAsGroup: 10001
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    {{- include "costkeeper.volumeMounts" . | nindent 4 }}
{{- end }}

{{/*
Sidecar mode: the env var the application container needs, so its AWS SDK
sends Bedrock Runtime calls through the sidecar.
*/}}
{{- define "costkeeper.sidecar.appEnv" -}}
- name: AWS_ENDPOINT_URL_BEDROCK_RUNTIME
  value: {{ printf "http://127.0.0.1:%v" .Values.sidecar.port | quote }}
{{- end }}
