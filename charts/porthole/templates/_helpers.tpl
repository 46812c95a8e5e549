{{- define "porthole.labels" -}}
app.kubernetes.io/name: porthole-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{- define "porthole.selectorLabels" -}}
app.kubernetes.io/name: porthole-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "porthole.fullname" -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- /* Where sessions' children live: sessionsNamespace, or the release's. */ -}}
{{- define "porthole.sessionsNamespace" -}}
{{- default .Release.Namespace .Values.sessionsNamespace }}
{{- end }}
