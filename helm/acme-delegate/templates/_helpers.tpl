{{/* Names. */}}
{{- define "acme-delegate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "acme-delegate.fullname" -}}
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

{{- define "acme-delegate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "acme-delegate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "acme-delegate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "acme-delegate.labels" -}}
helm.sh/chart: {{ include "acme-delegate.chart" . }}
{{ include "acme-delegate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "acme-delegate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Secret the chart creates from values (digitalocean.token, admin.token, database.url). */}}
{{- define "acme-delegate.secretName" -}}
{{- include "acme-delegate.fullname" . }}
{{- end }}

{{- define "acme-delegate.createSecret" -}}
{{- if or (and .Values.digitalocean.token (not .Values.digitalocean.existingSecret)) (and .Values.admin.token (not .Values.admin.existingSecret)) (and .Values.registrationToken.token (not .Values.registrationToken.existingSecret)) (and .Values.database.url (not .Values.database.existingSecret)) }}true{{ end }}
{{- end }}

{{/* Where each secret value comes from: "name key". */}}
{{- define "acme-delegate.doTokenRef" -}}
{{- if .Values.digitalocean.existingSecret }}
{{- printf "%s %s" .Values.digitalocean.existingSecret .Values.digitalocean.existingSecretKey }}
{{- else if .Values.digitalocean.token }}
{{- printf "%s do-token" (include "acme-delegate.secretName" .) }}
{{- end }}
{{- end }}

{{- define "acme-delegate.adminTokenRef" -}}
{{- if .Values.admin.existingSecret }}
{{- printf "%s %s" .Values.admin.existingSecret .Values.admin.existingSecretKey }}
{{- else if .Values.admin.token }}
{{- printf "%s admin-token" (include "acme-delegate.secretName" .) }}
{{- end }}
{{- end }}

{{- define "acme-delegate.registrationTokenRef" -}}
{{- if .Values.registrationToken.existingSecret }}
{{- printf "%s %s" .Values.registrationToken.existingSecret .Values.registrationToken.existingSecretKey }}
{{- else if .Values.registrationToken.token }}
{{- printf "%s registration-token" (include "acme-delegate.secretName" .) }}
{{- end }}
{{- end }}

{{- define "acme-delegate.databaseRef" -}}
{{- if .Values.database.existingSecret }}
{{- printf "%s %s" .Values.database.existingSecret .Values.database.existingSecretKey }}
{{- else if .Values.database.url }}
{{- printf "%s database-url" (include "acme-delegate.secretName" .) }}
{{- end }}
{{- end }}

{{/* "true" when the database is PostgreSQL (a URL or a Secret), empty for SQLite. */}}
{{- define "acme-delegate.externalDatabase" -}}
{{- if or .Values.database.existingSecret .Values.database.url }}true{{ end }}
{{- end }}

{{- define "acme-delegate.sqliteUrl" -}}
sqlite:////data/acme-delegate.sqlite3
{{- end }}

{{/* The chart refuses values that cannot work, with a message that says what to set. */}}
{{- define "acme-delegate.validate" -}}
{{- if not .Values.image.repository }}
{{- fail "image.repository is required: build the image from the repository's Dockerfile, push it to your registry and set image.repository (no public registry carries it)" }}
{{- end }}
{{- $drain := 30 }}{{/* serve's graceful drain: DRAIN_SECONDS in app/server.py */}}
{{- if le (int .Values.terminationGracePeriodSeconds) (add $drain (int .Values.lifecycle.preStopSeconds)) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed lifecycle.preStopSeconds (%d) plus the %d s drain, or pods are killed mid-drain" (int .Values.terminationGracePeriodSeconds) (int .Values.lifecycle.preStopSeconds) $drain) }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (not (include "acme-delegate.externalDatabase" .)) }}
{{- fail (printf "replicaCount is %d, but the database is SQLite, which one pod only may use: set database.existingSecret (or database.url) to a PostgreSQL URL, or set replicaCount to 1" (int .Values.replicaCount)) }}
{{- end }}
{{- if not (include "acme-delegate.doTokenRef" .) }}
{{- fail "no DigitalOcean token: set digitalocean.existingSecret (a Secret holding the token under digitalocean.existingSecretKey) or digitalocean.token" }}
{{- end }}
{{- if and (eq .Values.config.registration "token") (not (include "acme-delegate.registrationTokenRef" .)) }}
{{- fail "config.registration=token needs the registration token: set registrationToken.existingSecret or registrationToken.token" }}
{{- end }}
{{- if and (ne .Values.config.registration "closed") (not .Values.config.delegationDomain) }}
{{- fail (printf "config.registration=%s hands out delegated names: set config.delegationDomain" .Values.config.registration) }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.hosts) }}
{{- fail "ingress.enabled needs at least one entry in ingress.hosts" }}
{{- end }}
{{- end }}

{{/* Volumes for the token files, mounted read-only. */}}
{{- define "acme-delegate.secretVolume" -}}
{{- $parts := splitList " " .ref }}
{{- if eq (len $parts) 2 }}{{/* else validate failed; helm lint goes on past fail */}}
- name: {{ .name }}
  secret:
    secretName: {{ index $parts 0 }}
    defaultMode: 0440
    items:
      - key: {{ index $parts 1 }}
        path: token
{{- end }}
{{- end }}

{{- define "acme-delegate.databaseEnv" -}}
{{- if include "acme-delegate.externalDatabase" . }}
{{- $parts := splitList " " (include "acme-delegate.databaseRef" .) }}
- name: ACME_DELEGATE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ index $parts 0 }}
      key: {{ index $parts 1 }}
{{- else }}
- name: ACME_DELEGATE_DATABASE_URL
  value: {{ include "acme-delegate.sqliteUrl" . | quote }}
{{- end }}
{{- end }}

{{- define "acme-delegate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "acme-delegate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- .Values.serviceAccount.name }}
{{- end }}
{{- end }}
