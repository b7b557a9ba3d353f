{{/* The release's base name. */}}
{{- define "capstan.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The namespace of the release's namespaced objects: namespace, else the release's (cert-manager's value, for a parent chart that puts capstan elsewhere). */}}
{{- define "capstan.namespace" -}}
{{- default .Release.Namespace .Values.namespace -}}
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
{{- include "capstan.commonLabels" $root }}
{{- end -}}

{{/* global.commonLabels (cert-manager's name), on a new line each, for every object the chart makes; empty when none. */}}
{{- define "capstan.commonLabels" -}}
{{- with .Values.global.commonLabels }}
{{ toYaml . }}
{{- end -}}
{{- end -}}

{{/* The labels of the release-wide objects (default issuer, metrics reader, rules): app.kubernetes.io/name is the argument. */}}
{{- define "capstan.releaseLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ index . 1 }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/part-of: capstan
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
{{- include "capstan.commonLabels" $root }}
{{- end -}}

{{/* A component's image: [registry/]repository, then @digest when set, else :tag (default the chart's appVersion), as cert-manager's charts spell it. */}}
{{- define "capstan.image" -}}
{{- $root := index . 0 -}}{{- $image := (index $root.Values (index . 1)).image -}}
{{- if $image.registry -}}{{ printf "%s/%s" $image.registry $image.repository }}{{- else -}}{{ $image.repository }}{{- end -}}
{{- if $image.digest -}}@{{ $image.digest }}{{- else -}}:{{ default $root.Chart.AppVersion $image.tag }}{{- end -}}
{{- end -}}

{{/* Namespace of the leader-election Leases: leaderElection.namespace, else global.leaderElection.namespace, else the release namespace. */}}
{{- define "capstan.leaseNamespace" -}}
{{- default (default (include "capstan.namespace" .) (dig "leaderElection" "namespace" "" .Values.global)) .Values.leaderElection.namespace -}}
{{- end -}}

{{/* "true" when the chart makes RBAC objects (global.rbac.create, cert-manager's name). */}}
{{- define "capstan.rbac" -}}
{{- if dig "rbac" "create" true .Values.global -}}true{{- end -}}
{{- end -}}

{{/* global.logLevel, cert-manager's verbosity 0-6, as a capstan log level: 0 warn, 1-2 info, 3-4 debug, 5-6 trace; empty when unset. */}}
{{- define "capstan.globalLogLevel" -}}
{{- $level := .Values.global.logLevel -}}
{{- if and (not (kindIs "invalid" $level)) (ne (toString $level) "") -}}
{{- $v := int $level -}}
{{- if eq $v 0 -}}warn{{- else if le $v 2 -}}info{{- else if le $v 4 -}}debug{{- else -}}trace{{- end -}}
{{- end -}}
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
{{- default (include "capstan.namespace" .) .Values.clusterResourceNamespace -}}
{{- end -}}

{{/* The config file of a component: its config values plus the namespaces the chart decides, and the Service's DNS names as the default dnsNames of dynamic metrics TLS. */}}
{{- define "capstan.config" -}}
{{- $root := index . 0 -}}{{- $component := index . 1 -}}
{{- $values := index $root.Values $component -}}
{{- $election := dict "namespace" (include "capstan.leaseNamespace" $root) -}}
{{- with dig "leaderElection" "leaseDuration" "" $root.Values.global -}}
{{- $_ := set $election "leaseDuration" . -}}
{{- end -}}
{{- $chart := dict "clusterResourceNamespace" (include "capstan.clusterResourceNamespace" $root) "leaderElection" $election -}}
{{- with include "capstan.globalLogLevel" $root -}}
{{- $_ := set $chart "logLevel" . -}}
{{- end -}}
{{- $config := mustMergeOverwrite $chart (deepCopy $values.config) -}}
{{- $dynamic := dig "metricsTLSConfig" "dynamic" dict $config -}}
{{- if and $dynamic.secretName (not $dynamic.dnsNames) -}}
{{- $service := include "capstan.fullname" (list $root $component) -}}
{{- $_ := set $dynamic "dnsNames" (list (printf "%s.%s.svc" $service (include "capstan.namespace" $root)) (printf "%s.%s.svc.cluster.local" $service (include "capstan.namespace" $root))) -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{/* "<namespace>/<name>" of the Secret holding the component's dynamic metrics serving CA; empty without dynamic TLS. */}}
{{- define "capstan.dynamicCASecret" -}}
{{- $root := index . 0 -}}{{- $values := index $root.Values (index . 1) -}}
{{- $dynamic := dig "metricsTLSConfig" "dynamic" dict $values.config -}}
{{- with $dynamic.secretName -}}
{{- printf "%s/%s" (default (include "capstan.namespace" $root) $dynamic.secretNamespace) . -}}
{{- end -}}
{{- end -}}

{{/* The ConfigMap, in the monitor's namespace, into which the rotator injects a component's dynamic serving CA. */}}
{{- define "capstan.metricsCAConfigMap" -}}
{{- printf "%s-metrics-ca" (include "capstan.fullname" .) -}}
{{- end -}}

{{/* The ClusterRole to bind to the ServiceAccount Prometheus scrapes with: <release>-capstan-metrics-reader, or <release>-metrics-reader when the release name contains "capstan" (capstan-metrics-reader for a release named capstan). */}}
{{- define "capstan.metricsReader" -}}
{{- include "capstan.fullname" (list . "metrics-reader") -}}
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

{{/* One scrape endpoint (kind ServiceMonitor or PodMonitor) for a component, with the monitor's endpointAdditionalProperties merged over it. */}}
{{- define "capstan.endpoint" -}}
{{- $root := index . 0 -}}{{- $component := index . 1 -}}{{- $monitor := index . 2 -}}{{- $kind := index . 3 -}}
{{- $tls := $root.Values.prometheus.tls -}}
{{- $auth := $root.Values.prometheus.authorization -}}
{{- $endpoint := dict "port" "http-metrics" "path" "/metrics" "interval" $monitor.interval "scrapeTimeout" $monitor.scrapeTimeout "honorLabels" $monitor.honorLabels -}}
{{- if include "capstan.metricsTLS" (list $root $component) -}}
{{- $tlsConfig := dict "serverName" (default (printf "%s.%s.svc" (include "capstan.fullname" (list $root $component)) (include "capstan.namespace" $root)) $tls.serverName) -}}
{{- if $tls.caConfigMap.name -}}
{{- $_ := set $tlsConfig "ca" (dict "configMap" (dict "name" $tls.caConfigMap.name "key" $tls.caConfigMap.key)) -}}
{{- else if include "capstan.dynamicCASecret" (list $root $component) -}}
{{- if not $root.Values.rotator.enabled -}}
{{- fail (printf "%s.config.metricsTLSConfig.dynamic: the monitors need the serving CA; set prometheus.tls.caConfigMap.name, or enable the rotator to inject it" $component) -}}
{{- end -}}
{{- $_ := set $tlsConfig "ca" (dict "configMap" (dict "name" (include "capstan.metricsCAConfigMap" (list $root $component)) "key" "ca-bundle.crt")) -}}
{{- end -}}
{{- with $tls.clientCertSecret -}}
{{- $_ := set $tlsConfig "cert" (dict "secret" (dict "name" . "key" "tls.crt")) -}}
{{- $_ := set $tlsConfig "keySecret" (dict "name" . "key" "tls.key") -}}
{{- end -}}
{{- $_ := set $endpoint "scheme" "https" -}}
{{- $_ := set $endpoint "tlsConfig" $tlsConfig -}}
{{- end -}}
{{- if include "capstan.tokenReview" (list $root $component) -}}
{{- if eq $auth.type "secret" -}}
{{- $secret := required "prometheus.authorization.secretName is required when prometheus.authorization.type is secret: the Secret, in the monitor's namespace, holding the token Prometheus presents" $auth.secretName -}}
{{- $_ := set $endpoint "authorization" (dict "type" "Bearer" "credentials" (dict "name" $secret "key" $auth.key)) -}}
{{- else if eq $kind "ServiceMonitor" -}}
{{- $_ := set $endpoint "bearerTokenFile" "/var/run/secrets/kubernetes.io/serviceaccount/token" -}}
{{- else -}}
{{- fail (printf "%s.config.metricsAuth.tokenReview with prometheus.podmonitor: PodMonitor endpoints have no bearerTokenFile, so Prometheus cannot present its own ServiceAccount token; set prometheus.authorization.type=secret and prometheus.authorization.secretName (a Secret in the monitor's namespace holding the token), or use prometheus.servicemonitor" $component) -}}
{{- end -}}
{{- end -}}
{{- toYaml (list (mustMergeOverwrite $endpoint (deepCopy $monitor.endpointAdditionalProperties))) -}}
{{- end -}}
