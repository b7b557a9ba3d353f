{{/* The release's base name. */}}
{{- define "capstan.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The full name of a component: <release>-<component> unless the release already says capstan. */}}
{{- define "capstan.fullname" -}}
{{- $root := index . 0 -}}{{- $component := index . 1 -}}
{{- if contains "capstan" $root.Release.Name -}}
{{- printf "%s-%s" $root.Release.Name $component | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-capstan-%s" $root.Release.Name $component | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Selector labels of a component (stable across upgrades). */}}
{{- define "capstan.selectorLabels" -}}
{{- $root := index . 0 -}}{{- $component := index . 1 -}}
app.kubernetes.io/name: capstan-{{ $component }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ $component }}
{{- end -}}

{{/* All labels of a component's objects. */}}
{{- define "capstan.labels" -}}
{{ include "capstan.selectorLabels" . }}
{{- $root := index . 0 }}
app.kubernetes.io/part-of: capstan
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The ServiceAccount name of a component. */}}
{{- define "capstan.serviceAccountName" -}}
{{- $root := index . 0 -}}{{- $component := index . 1 -}}
{{- $values := index $root.Values $component -}}
{{- if $values.serviceAccount.create -}}
{{- default (include "capstan.fullname" (list $root $component)) $values.serviceAccount.name -}}
{{- else -}}
{{- default "default" $values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Namespace of ClusterCAIssuer CA Secrets. */}}
{{- define "capstan.clusterResourceNamespace" -}}
{{- default .Release.Namespace .Values.clusterResourceNamespace -}}
{{- end -}}

{{/* The config file of a component: its config values plus the namespaces the chart decides. */}}
{{- define "capstan.config" -}}
{{- $root := index . 0 -}}{{- $component := index . 1 -}}
{{- $values := index $root.Values $component -}}
{{- $chart := dict "clusterResourceNamespace" (include "capstan.clusterResourceNamespace" $root) "leaderElection" (dict "namespace" (default $root.Release.Namespace $root.Values.leaderElection.namespace)) -}}
{{- toYaml (mustMergeOverwrite $chart (deepCopy $values.config)) -}}
{{- end -}}

{{/* "true" when the component serves /metrics over TLS. */}}
{{- define "capstan.metricsTLS" -}}
{{- $values := index (index . 0).Values (index . 1) -}}
{{- $tls := dig "metricsTLSConfig" dict $values.config -}}
{{- if or (dig "filesystem" "certFile" "" $tls) (dig "dynamic" "secretName" "" $tls) -}}true{{- end -}}
{{- end -}}

{{/* "true" when the component reviews scrapers' bearer tokens. */}}
{{- define "capstan.tokenReview" -}}
{{- $values := index (index . 0).Values (index . 1) -}}
{{- if dig "metricsAuth" "tokenReview" false $values.config -}}true{{- end -}}
{{- end -}}

{{/* "true" when any enabled component reviews tokens. */}}
{{- define "capstan.anyTokenReview" -}}
{{- range $component := list "issuer" "rotator" -}}
{{- if and (index $.Values $component).enabled (include "capstan.tokenReview" (list $ $component)) -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{/* One scrape endpoint (ServiceMonitor or PodMonitor) for a component. */}}
{{- define "capstan.endpoint" -}}
{{- $root := index . 0 -}}{{- $component := index . 1 -}}{{- $monitor := index . 2 -}}
- port: http-metrics
  path: /metrics
  interval: {{ $monitor.interval }}
  scrapeTimeout: {{ $monitor.scrapeTimeout }}
  honorLabels: {{ $monitor.honorLabels }}
{{- if include "capstan.metricsTLS" (list $root $component) }}
  scheme: https
  tlsConfig:
    serverName: {{ default (printf "%s.%s.svc" (include "capstan.fullname" (list $root $component)) $root.Release.Namespace) $root.Values.prometheus.tls.serverName }}
    {{- with $root.Values.prometheus.tls.caConfigMap.name }}
    ca:
      configMap:
        name: {{ . }}
        key: {{ $root.Values.prometheus.tls.caConfigMap.key }}
    {{- end }}
    {{- with $root.Values.prometheus.tls.clientCertSecret }}
    cert:
      secret:
        name: {{ . }}
        key: tls.crt
    keySecret:
      name: {{ . }}
      key: tls.key
    {{- end }}
{{- end }}
{{- if include "capstan.tokenReview" (list $root $component) }}
{{- if eq $root.Values.prometheus.authorization.type "secret" }}
  authorization:
    type: Bearer
    credentials:
      name: {{ required "prometheus.authorization.secretName is required when type is secret" $root.Values.prometheus.authorization.secretName }}
      key: {{ $root.Values.prometheus.authorization.key }}
{{- else }}
  bearerTokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token
{{- end }}
{{- end }}
{{- with $monitor.endpointAdditionalProperties }}
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
