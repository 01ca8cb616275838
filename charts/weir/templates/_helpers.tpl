{{/* The driver name is part of weir's CSI contract, not a setting. */}}
{{- define "weir.driverName" -}}fuse.csi.weir.dev{{- end -}}

{{- define "weir.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "weir.labels" -}}
app.kubernetes.io/name: weir
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: weir
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "weir.selector" -}}
app.kubernetes.io/name: weir
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The chosen resource profile, as YAML. */}}
{{- define "weir.profile" -}}
{{- $p := index .Values.profiles .Values.profile -}}
{{- if not $p -}}
{{- fail (printf "profile %q is not defined under profiles" .Values.profile) -}}
{{- end -}}
{{- toYaml $p -}}
{{- end -}}

{{/* The effective tuning: explicit values win over the profile's. */}}
{{- define "weir.tuning" -}}
{{- $p := include "weir.profile" . | fromYaml -}}
{{- $c := .Values.cache -}}
threads: {{ ternary $p.threads .Values.fuse.threads (kindIs "invalid" .Values.fuse.threads) }}
capacity: {{ ternary $p.cache.capacity $c.capacity (kindIs "invalid" $c.capacity) | quote }}
memory: {{ ternary $p.cache.memory $c.memory (kindIs "invalid" $c.memory) | quote }}
readahead: {{ ternary $p.cache.readahead $c.readahead (kindIs "invalid" $c.readahead) | quote }}
resources:
{{- toYaml (.Values.resources | default $p.resources) | nindent 2 }}
sizedFor: {{ printf "readers=%d files=%d" (int64 $p.sizedFor.readers) (int64 $p.sizedFor.files) | quote }}
{{- end -}}

{{/* weir.yaml: the whole configuration, every key spelt out. */}}
{{- define "weir.config" -}}
{{- $t := include "weir.tuning" . | fromYaml -}}
mounts:
{{- toYaml .Values.mounts | nindent 2 }}
cache:
  dir: {{ .Values.cache.dir }}
  capacity: {{ $t.capacity }}
  page_size: {{ .Values.cache.pageSize }}
  memory: {{ $t.memory | quote }}
  readahead: {{ $t.readahead }}
metadata:
  ttl: {{ .Values.metadata.ttl }}
fuse:
  options:
{{- toYaml .Values.fuse.options | nindent 4 }}
  random_writes: {{ .Values.semantics.randomWrites }}
  symlinks: {{ .Values.semantics.symlinks }}
  parallel_dirops: {{ .Values.semantics.parallelDirops }}
  threads: {{ $t.threads }}
  read_ahead_kb: {{ .Values.fuse.readAheadKb }}
{{- end -}}

{{/* Environment shared by every weir container. */}}
{{- define "weir.env" -}}
- name: WEIR_LOG
  value: {{ .Values.logLevel | quote }}
{{- end -}}

{{- define "weir.envFrom" -}}
{{- if .Values.credentialsSecret }}
envFrom:
  - secretRef:
      name: {{ .Values.credentialsSecret }}
      optional: true
{{- end }}
{{- end -}}
