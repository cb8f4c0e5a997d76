{{/* The chart's name (app.kubernetes.io/name). */}}
{{- define "deployer-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object's name: the release name if it contains the chart's name (so the release
"deployer-operator" names its objects as deploy/ does), else <release>-<chart>.
*/}}
{{- define "deployer-operator.fullname" -}}
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
The labels of every object: the same two that deploy/'s kustomization adds. Helm adds
app.kubernetes.io/managed-by=Helm and its release annotations itself when it installs.
*/}}
{{- define "deployer-operator.labels" -}}
app.kubernetes.io/name: {{ include "deployer-operator.name" . }}
app.kubernetes.io/part-of: deployer-operator
{{- end }}

{{/* The operator's pods: the Deployment's selector, the Service's and the pod template's labels. */}}
{{- define "deployer-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "deployer-operator.name" . }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "deployer-operator.serviceAccountName" -}}
{{ include "deployer-operator.fullname" . }}
{{- end }}

{{/* The ServiceAccount as an RBAC subject. */}}
{{- define "deployer-operator.subject" -}}
- kind: ServiceAccount
  name: {{ include "deployer-operator.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}

{{/* The rules of the ClusterRole or of each Role: exactly docs/operations.md's list. */}}
{{- define "deployer-operator.rules" -}}
- apiGroups: [deploy.example.com]
  resources: [deployers]
  verbs: [get, list, watch]
- apiGroups: [deploy.example.com]
  resources: [deployers/status]
  verbs: [patch]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}

{{/* repository:tag or repository@digest; never :latest, never without a tag or a digest. */}}
{{- define "deployer-operator.image" -}}
{{- $image := .Values.image }}
{{- if $image.digest }}
{{- if not (hasPrefix "sha256:" $image.digest) }}
{{- fail (printf "image.digest must look like sha256:<hex>, not %q" $image.digest) }}
{{- end }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- $tag := toString $image.tag }}
{{- if or (eq $tag "") (eq $tag "latest") }}
{{- fail "image.tag must be an explicit tag (not empty, not latest), or set image.digest" }}
{{- end }}
{{- printf "%s:%s" $image.repository $tag }}
{{- end }}
{{- end }}
