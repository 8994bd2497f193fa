{{/* Names, labels and images shared by every template of the chart. */}}

{{- define "kuberank.name" -}}
kuberank-operator
{{- end -}}

{{/* The release's object names: `<release>-kuberank-operator`, or the release name alone when it already says kuberank. */}}
{{- define "kuberank.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains "kuberank" .Release.Name -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-kuberank-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Selector labels: immutable on a Deployment, so they never carry versions. */}}
{{- define "kuberank.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kuberank.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kuberank.labels" -}}
{{ include "kuberank.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: kuberank
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "kuberank.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kuberank.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kuberank.operatorImage" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The playground's objects and its selector labels (a second app of the release). */}}
{{- define "kuberank.playground.fullname" -}}
{{- printf "%s-playground" (include "kuberank.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kuberank.playground.selectorLabels" -}}
app.kubernetes.io/name: kuberank-playground
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kuberank.playground.labels" -}}
{{ include "kuberank.playground.selectorLabels" . }}
app.kubernetes.io/component: playground
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: kuberank
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Restricted Pod Security Standard, shared by the operator and the playground pods. */}}
{{- define "kuberank.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "kuberank.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
