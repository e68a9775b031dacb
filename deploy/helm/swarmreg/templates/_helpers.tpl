{{/* The objects' base name: the release's name if it holds the chart's, else release-chart. */}}
{{- define "swarmreg.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "swarmreg.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Every object's labels: the selector's and Helm's own. */}}
{{- define "swarmreg.labels" -}}
{{ include "swarmreg.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "swarmreg.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "swarmreg.secretName" -}}
{{ .Values.clusterSecret.name | default (printf "%s-cluster-secret" (include "swarmreg.fullname" .)) }}
{{- end -}}

{{/* The pod's security context: the image's non-root user; fsGroup makes the volumes its own. */}}
{{- define "swarmreg.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.uid }}
runAsGroup: {{ .Values.uid }}
fsGroup: {{ .Values.uid }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "swarmreg.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* The cluster secret, at the path the configs' cluster.secret_file reads. */}}
{{- define "swarmreg.secretVolume" -}}
- name: secret
  secret:
    secretName: {{ include "swarmreg.secretName" . }}
    defaultMode: 0440
    items: [{key: secret, path: swarmreg-cluster-secret}]
{{- end -}}
