{{/*
The chart keeps no copy of the manifests: files/base, files/cert-manager and files/monitoring are
links to manifests/base, manifests/overlays/cert-manager and manifests/monitoring (Helm's loader
and `helm package` follow them), and the templates read those files and set the values in.
*/}}

{{/* Labels every object of the chart carries besides its own: Helm's, for `helm ls`/`kubectl -l`. */}}
{{- define "cfo.chartLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
{{- end }}

{{/*
The objects of one file of the repository's manifests, set up as kustomize does for manifests/base:
the documents split, the install namespace (manifests/base/kustomization.yaml's) replaced by the
release's everywhere it is named (subjects, the webhook's Service, DNS names, the selector),
metadata.namespace set on namespaced kinds, and base's `labels` added when asked (`baseLabels`).
A YAML list: read it back with fromYamlArray.
Arguments: root (the top context), path (under files/), baseLabels (bool).
*/}}
{{- define "cfo.objects" -}}
{{- $root := .root }}
{{- $kustomization := $root.Files.Get "files/base/kustomization.yaml" | fromYaml }}
{{- $text := $root.Files.Get .path }}
{{- if not $text }}
{{- fail (printf "%s: missing or empty (the chart's files/ links into manifests/)" .path) }}
{{- end }}
{{- $clusterScoped := list "Namespace" "ClusterRole" "ClusterRoleBinding" "MutatingWebhookConfiguration" "ValidatingWebhookConfiguration" }}
{{- $objects := list }}
{{- range $doc := regexSplit `(?m)^---[ \t]*$` (replace $kustomization.namespace $root.Release.Namespace $text) -1 }}
{{- $obj := fromYaml $doc }}
{{- if hasKey $obj "Error" }}
{{- fail (printf "%s: %s" $.path $obj.Error) }}
{{- end }}
{{- if $obj }}
{{- $meta := $obj.metadata }}
{{- if not (has $obj.kind $clusterScoped) }}
{{- $_ := set $meta "namespace" $root.Release.Namespace }}
{{- end }}
{{- $labels := $meta.labels | default dict }}
{{- if $.baseLabels }}
{{- range $kustomization.labels }}
{{- range $key, $value := .pairs }}
{{- $_ := set $labels $key $value }}
{{- end }}
{{- end }}
{{- end }}
{{- $_ := set $meta "labels" (merge (include "cfo.chartLabels" $root | fromYaml) $labels) }}
{{- $objects = append $objects $obj }}
{{- end }}
{{- end }}
{{- toYaml $objects }}
{{- end }}

{{/*
An image of manifests/base with the values' repository and tag in place of base's where set.
Arguments: image (base's, such as ghcr.io/customer-friendly/webhook:0.1.0), values (images.<name>).
*/}}
{{- define "cfo.image" -}}
{{- $tag := regexFind `:[^:/]+$` .image }}
{{- $repository := trimSuffix $tag .image }}
{{- printf "%s:%s" (.values.repository | default $repository) (.values.tag | default (trimPrefix ":" $tag) | toString) }}
{{- end }}
