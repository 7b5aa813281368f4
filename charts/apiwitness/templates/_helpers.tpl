{{- define "apiwitness.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "apiwitness.injector" -}}{{ include "apiwitness.fullname" . }}-injector{{- end -}}
{{- define "apiwitness.aggregator" -}}{{ include "apiwitness.fullname" . }}-aggregator{{- end -}}

{{- define "apiwitness.labels" -}}
app.kubernetes.io/part-of: apiwitness
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "apiwitness.image" -}}
{{- $root := index . 0 -}}{{- $name := index . 1 -}}
{{- printf "%s/%s:%s" $root.Values.images.registry $name (default $root.Chart.AppVersion $root.Values.images.tag) -}}
{{- end -}}

{{- define "apiwitness.aggregatorUrl" -}}
{{- default (printf "http://%s.%s.svc:%d/ingest" (include "apiwitness.aggregator" .) .Release.Namespace (int .Values.aggregator.port)) .Values.injector.aggregatorUrl -}}
{{- end -}}
