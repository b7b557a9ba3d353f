//! The Helm chart (charts/capstan), checked with the real `helm` and
//! `kubernetes-validate`: lint, render for each mode, validate, and check
//! that each value changes what it must; the values schema refuses what the
//! binaries refuse and knows the keys they accept; the config rendered for
//! each mode starts the real binaries, with the chart's ServiceAccounts and
//! RBAC, on a real control plane; and a real `helm install`, upgrade and
//! uninstall (with the default issuer, whose CRD comes in the same release)
//! into a real control plane, the issuer running as the chart's
//! ServiceAccount. Each values profile in `charts/capstan/ci` lints
//! strictly, validates, keeps its promise (see [`check_profile`]) and
//! installs with Ready pods into a control plane whose namespace enforces
//! the restricted Pod Security Standard; the subchart profile through a
//! parent chart that sets cert-manager's `global.*` values.
//!
//! The tests that install or run binaries each start their own control
//! plane (etcd, kube-apiserver, kube-controller-manager, and for `helm
//! --wait` the scheduler and kwok, so the chart's Deployments get Ready
//! pods): a release makes cluster-scoped objects (CRDs, ClusterRoles).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use capstan_tests::chart::{
    Profile, documents, missing_labels, parent_chart, profiles, restricted_scc_findings,
    run_as_user_anywhere,
};
use capstan_tests::controlplane::ControlPlane;
use capstan_tests::harness::{
    Kubectl, RunningBinary, await_condition, helm_path, workspace_binary, workspace_root,
};
use serde::Deserialize as _;
use serde_norway::Value;

const WAIT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(200);

fn chart() -> PathBuf {
    workspace_root().join("charts/capstan")
}

fn helm(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(helm_path().unwrap())
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `helm template <release> <chart> --namespace capstan` with `--set` values
/// and `extra` flags.
fn template(release: &str, sets: &[&str], extra: &[&str]) -> (bool, String) {
    let chart = chart();
    let mut args = vec![
        "template",
        release,
        chart.to_str().unwrap(),
        "--namespace",
        "capstan",
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    args.extend_from_slice(extra);
    helm(&args)
}

/// Renders the chart as release `capstan` with `--set` values; returns the
/// documents.
fn render(sets: &[&str]) -> Vec<Value> {
    render_as("capstan", sets)
}

/// Renders the chart as `release`: the output must pass
/// `kubernetes-validate`, `helm lint --strict` with the same values, and the
/// monitor endpoint checks.
fn render_as(release: &str, sets: &[&str]) -> Vec<Value> {
    let (ok, text) = template(release, sets, &[]);
    assert!(ok, "helm template {sets:?}:\n{text}");
    validate(&text, sets);
    lint(sets);
    let docs: Vec<Value> = serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect();
    check_monitors(&docs, sets);
    docs
}

/// `helm template` must fail; returns its output.
fn refused(sets: &[&str]) -> String {
    let (ok, text) = template("capstan", sets, &[]);
    assert!(!ok, "helm template {sets:?} should fail, rendered:\n{text}");
    text
}

fn lint(sets: &[&str]) {
    let chart = chart();
    let mut args = vec!["lint", "--strict", chart.to_str().unwrap()];
    for s in sets {
        args.extend(["--set", s]);
    }
    let (ok, text) = helm(&args);
    assert!(ok, "helm lint {sets:?}:\n{text}");
}

/// kubernetes-validate (strict, Kubernetes 1.34) over rendered YAML; CRD-based
/// kinds (monitors, rules, issuers) have no schema there and are checked by
/// [`check_monitors`] and the assertions instead.
fn validate(yaml: &str, sets: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = std::process::Command::new("kubernetes-validate")
        .args(["--strict", "-k", "1.34.0", "--quiet"])
        .arg(&file)
        .output()
        .expect("kubernetes-validate (pip install kubernetes-validate)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kubernetes-validate {sets:?}:\n{text}"
    );
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.contains("Couldn't find schema for kind")
                && [
                    "ServiceMonitor",
                    "PodMonitor",
                    "PrometheusRule",
                    "ClusterCAIssuer"
                ]
                .iter()
                .any(|k| line.contains(k)),
            "kubernetes-validate {sets:?}: {line}"
        );
    }
}

/// Fields of a prometheus-operator `monitoring.coreos.com/v1`
/// PodMetricsEndpoint, which a ServiceMonitor `Endpoint` has too.
const ENDPOINT_FIELDS: &[&str] = &[
    "port",
    "portNumber",
    "targetPort",
    "path",
    "scheme",
    "params",
    "interval",
    "scrapeTimeout",
    "tlsConfig",
    "bearerTokenSecret",
    "honorLabels",
    "honorTimestamps",
    "trackTimestampsStaleness",
    "basicAuth",
    "oauth2",
    "authorization",
    "metricRelabelings",
    "relabelings",
    "proxyUrl",
    "noProxy",
    "proxyFromEnvironment",
    "proxyConnectHeader",
    "followRedirects",
    "enableHttp2",
    "filterRunning",
];
/// `SafeTLSConfig`: the tlsConfig of a PodMonitor (no file paths: the
/// operator cannot mount them into Prometheus).
const SAFE_TLS_FIELDS: &[&str] = &[
    "ca",
    "cert",
    "keySecret",
    "serverName",
    "insecureSkipVerify",
    "minVersion",
    "maxVersion",
];
/// What a ServiceMonitor endpoint has beyond a PodMonitor's.
const SERVICE_ENDPOINT_ONLY: &[&str] = &["bearerTokenFile"];
/// What a ServiceMonitor tlsConfig (`TLSConfig`) has beyond `SafeTLSConfig`.
const TLS_FILE_FIELDS: &[&str] = &["caFile", "certFile", "keyFile"];

/// Every monitor endpoint uses only fields its kind has, scrapes the
/// `http-metrics` port, and names a TLS server when it uses https.
fn check_monitors(docs: &[Value], sets: &[&str]) {
    for kind in ["ServiceMonitor", "PodMonitor"] {
        let service = kind == "ServiceMonitor";
        for monitor in kinds(docs, kind) {
            let list = if service {
                "endpoints"
            } else {
                "podMetricsEndpoints"
            };
            let endpoints = monitor["spec"][list].as_sequence().unwrap();
            assert!(!endpoints.is_empty(), "{sets:?}: {monitor:?}");
            for endpoint in endpoints {
                for (key, _) in endpoint.as_mapping().unwrap() {
                    let key = key.as_str().unwrap();
                    assert!(
                        ENDPOINT_FIELDS.contains(&key)
                            || (service && SERVICE_ENDPOINT_ONLY.contains(&key)),
                        "{sets:?}: a {kind} endpoint has no field {key:?}: {endpoint:?}"
                    );
                }
                if let Some(tls) = endpoint.get("tlsConfig") {
                    for (key, _) in tls.as_mapping().unwrap() {
                        let key = key.as_str().unwrap();
                        assert!(
                            SAFE_TLS_FIELDS.contains(&key)
                                || (service && TLS_FILE_FIELDS.contains(&key)),
                            "{sets:?}: a {kind} tlsConfig has no field {key:?}: {tls:?}"
                        );
                    }
                }
                assert_eq!(endpoint["port"], "http-metrics", "{sets:?}");
                if endpoint["scheme"] == "https" {
                    assert!(
                        endpoint["tlsConfig"]["serverName"].as_str().is_some(),
                        "{sets:?}: {endpoint:?}"
                    );
                }
            }
        }
    }
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
}

fn kinds<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

/// The config file a component's ConfigMap carries, as text.
fn config_text(docs: &[Value], component: &str) -> String {
    let cm = find(docs, "ConfigMap", &format!("capstan-{component}-config")).unwrap();
    cm["data"]["config.yaml"].as_str().unwrap().to_owned()
}

/// The config file a component's ConfigMap carries.
fn config(docs: &[Value], component: &str) -> Value {
    serde_norway::from_str(&config_text(docs, component)).unwrap()
}

/// The first endpoint of a component's monitor of `kind`.
fn endpoint<'a>(docs: &'a [Value], kind: &str, component: &str) -> &'a Value {
    let monitor = find(docs, kind, &format!("capstan-{component}"))
        .unwrap_or_else(|| panic!("no {kind} capstan-{component}"));
    let list = if kind == "ServiceMonitor" {
        "endpoints"
    } else {
        "podMetricsEndpoints"
    };
    &monitor["spec"][list][0]
}

/// The pod spec of a component's Deployment.
fn pod<'a>(docs: &'a [Value], component: &str) -> &'a Value {
    &find(docs, "Deployment", &format!("capstan-{component}")).unwrap()["spec"]["template"]["spec"]
}

#[test]
fn helm_lint_passes_for_the_defaults_and_every_mode() {
    let chart = chart();
    for sets in [
        vec![],
        vec![
            "prometheus.servicemonitor.enabled=true",
            "prometheus.rules.enabled=true",
        ],
        vec!["defaultIssuer.enabled=true", "crds.enabled=false"],
    ] {
        let mut args = vec!["lint", "--strict", chart.to_str().unwrap()];
        for s in &sets {
            args.extend(["--set", s]);
        }
        let (ok, text) = helm(&args);
        assert!(ok, "helm lint {sets:?}:\n{text}");
    }
}

#[test]
fn the_charts_copies_of_crds_and_rules_are_current() {
    let root = workspace_root();
    let files = chart().join("files");
    let mut pairs: Vec<(PathBuf, PathBuf)> = std::fs::read_dir(root.join("crds"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| (p.clone(), files.join("crds").join(p.file_name().unwrap())))
        .collect();
    for name in ["alerts.yaml", "rules.yaml"] {
        pairs.push((
            root.join("docs/mixin").join(name),
            files.join("mixin").join(name),
        ));
    }
    for (source, copy) in pairs {
        assert_eq!(
            std::fs::read_to_string(&source).unwrap(),
            std::fs::read_to_string(&copy).unwrap_or_default(),
            "{} is stale: run `cargo xtask chart-files`",
            copy.display()
        );
    }
}

#[test]
fn defaults_render_hardened_components_with_least_privilege() {
    let docs = render(&[]);
    assert_eq!(kinds(&docs, "CustomResourceDefinition").len(), 3);
    for crd in kinds(&docs, "CustomResourceDefinition") {
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep"
        );
    }
    for component in ["issuer", "rotator"] {
        let name = format!("capstan-{component}");
        let deployment = find(&docs, "Deployment", &name).unwrap();
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        let container = &pod["containers"][0];
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(
            container["securityContext"]["allowPrivilegeEscalation"],
            false
        );
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(
            container["args"][0],
            "--config=/etc/capstan/config/config.yaml"
        );
        let service = find(&docs, "Service", &name).unwrap();
        assert_eq!(service["spec"]["ports"][0]["name"], "http-metrics");
        let config = config(&docs, component);
        assert_eq!(config["clusterResourceNamespace"], "capstan");
        assert_eq!(config["leaderElection"]["namespace"], "capstan");
        assert!(config.get("metricsTLSConfig").is_none());
    }
    // The approver may approve for our signers, and only those.
    let approve = find(&docs, "ClusterRole", "capstan-issuer:approve").unwrap();
    assert_eq!(approve["rules"][0]["verbs"][0], "approve");
    assert_eq!(approve["rules"][0]["resources"][0], "signers");
    let binding = find(&docs, "ClusterRoleBinding", "capstan-issuer:approve").unwrap();
    assert_eq!(binding["subjects"][0]["name"], "cert-manager");
    assert_eq!(binding["subjects"][0]["namespace"], "cert-manager");
    // Nothing about scraping unless asked.
    assert!(find(&docs, "ClusterRole", "capstan-metrics-reader").is_none());
    assert!(kinds(&docs, "ServiceMonitor").is_empty());
    assert!(kinds(&docs, "PodMonitor").is_empty());
    assert!(kinds(&docs, "ClusterCAIssuer").is_empty());
    assert!(kinds(&docs, "PrometheusRule").is_empty());
    // The rotator never writes Secrets.
    let rotator = find(&docs, "ClusterRole", "capstan-rotator").unwrap();
    for rule in rotator["rules"].as_sequence().unwrap() {
        if rule["resources"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|r| r == "secrets")
        {
            assert_eq!(rule["verbs"].as_sequence().unwrap().len(), 3, "{rule:?}");
        }
    }
}

#[test]
fn replicas_resources_crds_and_leader_election_follow_their_values() {
    let docs = render(&[
        "issuer.replicaCount=2",
        "issuer.resources.limits.memory=512Mi",
        "crds.enabled=false",
        "rotator.enabled=false",
        "leaderElection.namespace=kube-system",
    ]);
    assert!(kinds(&docs, "CustomResourceDefinition").is_empty());
    let issuer = find(&docs, "Deployment", "capstan-issuer").unwrap();
    assert_eq!(issuer["spec"]["replicas"], 2);
    assert_eq!(
        pod(&docs, "issuer")["containers"][0]["resources"]["limits"]["memory"],
        "512Mi"
    );
    assert!(find(&docs, "Deployment", "capstan-rotator").is_none());
    assert!(find(&docs, "ClusterRole", "capstan-rotator").is_none());
    assert!(find(&docs, "ConfigMap", "capstan-rotator-config").is_none());
    let role = find(&docs, "Role", "capstan-issuer:leader-election").unwrap();
    assert_eq!(role["metadata"]["namespace"], "kube-system");
    assert_eq!(
        config(&docs, "issuer")["leaderElection"]["namespace"],
        "kube-system"
    );

    // crds.keep=false: Helm may delete the CRDs (and every issuer) on uninstall.
    let docs = render(&["crds.keep=false"]);
    let crds = kinds(&docs, "CustomResourceDefinition");
    assert_eq!(crds.len(), 3);
    for crd in crds {
        assert!(
            crd["metadata"]["annotations"]
                .get("helm.sh/resource-policy")
                .is_none(),
            "{crd:?}"
        );
    }
}

#[test]
fn the_config_changes_roll_the_pods() {
    let checksum = |sets: &[&str]| {
        render(sets)
            .iter()
            .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "capstan-rotator")
            .unwrap()["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let plain = checksum(&[]);
    assert_eq!(plain, checksum(&["issuer.config.logLevel=debug"]));
    assert_ne!(plain, checksum(&["rotator.config.logLevel=debug"]));
}

#[test]
fn prometheus_disabled_renders_no_services_and_no_monitors() {
    let docs = render(&[
        "prometheus.enabled=false",
        "prometheus.servicemonitor.enabled=true",
        "prometheus.podmonitor.enabled=true",
    ]);
    assert!(kinds(&docs, "Service").is_empty());
    assert!(kinds(&docs, "ServiceMonitor").is_empty());
    assert!(kinds(&docs, "PodMonitor").is_empty());
    // The pods still serve /metrics; only the scraping objects go.
    assert_eq!(
        pod(&docs, "issuer")["containers"][0]["ports"][0]["name"],
        "http-metrics"
    );
}

#[test]
fn podmonitor_and_servicemonitor_select_each_component() {
    let docs = render(&["prometheus.podmonitor.enabled=true"]);
    assert!(kinds(&docs, "ServiceMonitor").is_empty());
    assert_eq!(kinds(&docs, "PodMonitor").len(), 2);
    let docs = render(&["prometheus.servicemonitor.enabled=true"]);
    assert!(kinds(&docs, "PodMonitor").is_empty());
    assert_eq!(kinds(&docs, "ServiceMonitor").len(), 2);
    for component in ["issuer", "rotator"] {
        let monitor = find(&docs, "ServiceMonitor", &format!("capstan-{component}")).unwrap();
        let selector = &monitor["spec"]["selector"]["matchLabels"];
        assert_eq!(
            selector["app.kubernetes.io/name"],
            format!("capstan-{component}")
        );
        assert_eq!(selector["app.kubernetes.io/instance"], "capstan");
        assert_eq!(selector["app.kubernetes.io/component"], component);
        assert_eq!(monitor["spec"]["jobLabel"], "app.kubernetes.io/name");
        // The selector picks this component's Service (and so its pods).
        let service = find(&docs, "Service", &format!("capstan-{component}")).unwrap();
        for (k, v) in selector.as_mapping().unwrap() {
            assert_eq!(&service["metadata"]["labels"][k], v);
            assert_eq!(&service["spec"]["selector"][k], v);
        }
        let ep = endpoint(&docs, "ServiceMonitor", component);
        assert_eq!(ep["path"], "/metrics");
        assert!(ep.get("scheme").is_none(), "plain HTTP by default: {ep:?}");
    }
}

#[test]
fn monitor_namespace_labels_annotations_and_intervals_follow_their_values() {
    for kind in ["podmonitor", "servicemonitor"] {
        let sets: Vec<String> = [
            "enabled=true",
            "namespace=monitoring",
            "labels.release=kube-prometheus-stack",
            "annotations.team=platform",
            "interval=15s",
            "scrapeTimeout=10s",
            "honorLabels=true",
            "prometheusInstance=k8s",
        ]
        .iter()
        .map(|s| format!("prometheus.{kind}.{s}"))
        .collect();
        let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
        let docs = render(&sets);
        let kind = if kind == "podmonitor" {
            "PodMonitor"
        } else {
            "ServiceMonitor"
        };
        let monitor = find(&docs, kind, "capstan-issuer").unwrap();
        assert_eq!(monitor["metadata"]["namespace"], "monitoring");
        assert_eq!(
            monitor["metadata"]["labels"]["release"],
            "kube-prometheus-stack"
        );
        assert_eq!(monitor["metadata"]["labels"]["prometheus"], "k8s");
        assert_eq!(monitor["metadata"]["annotations"]["team"], "platform");
        // From another namespace the monitor must say where the pods are.
        assert_eq!(
            monitor["spec"]["namespaceSelector"]["matchNames"][0],
            "capstan"
        );
        let ep = endpoint(&docs, kind, "issuer");
        assert_eq!(ep["interval"], "15s");
        assert_eq!(ep["scrapeTimeout"], "10s");
        assert_eq!(ep["honorLabels"], true);
    }
    // In the release namespace no namespaceSelector is needed.
    let docs = render(&["prometheus.podmonitor.enabled=true"]);
    let monitor = find(&docs, "PodMonitor", "capstan-issuer").unwrap();
    assert_eq!(monitor["metadata"]["namespace"], "capstan");
    assert!(monitor["spec"].get("namespaceSelector").is_none());
}

#[test]
fn endpoint_additional_properties_are_merged_into_the_endpoint() {
    let docs = render(&[
        "issuer.config.metricsTLSConfig.filesystem.certFile=/tls/tls.crt",
        "issuer.config.metricsTLSConfig.filesystem.keyFile=/tls/tls.key",
        "prometheus.tls.caConfigMap.name=capstan-metrics-ca",
        "prometheus.podmonitor.enabled=true",
        "prometheus.podmonitor.endpointAdditionalProperties.relabelings[0].action=replace",
        "prometheus.podmonitor.endpointAdditionalProperties.relabelings[0].targetLabel=cluster",
        "prometheus.podmonitor.endpointAdditionalProperties.relabelings[0].replacement=prod",
        "prometheus.podmonitor.endpointAdditionalProperties.tlsConfig.serverName=metrics.example.com",
        "prometheus.podmonitor.endpointAdditionalProperties.interval=5s",
    ]);
    let ep = endpoint(&docs, "PodMonitor", "issuer");
    assert_eq!(ep["relabelings"][0]["targetLabel"], "cluster");
    assert_eq!(ep["interval"], "5s", "the additional properties win");
    // Merged, not appended: the chart's tlsConfig keeps its CA and takes
    // the user's server name (a second tlsConfig key would be invalid YAML
    // or drop the chart's).
    assert_eq!(ep["tlsConfig"]["serverName"], "metrics.example.com");
    assert_eq!(
        ep["tlsConfig"]["ca"]["configMap"]["name"],
        "capstan-metrics-ca"
    );
    assert_eq!(ep["scheme"], "https");
    assert_eq!(ep["path"], "/metrics");
    let rotator = endpoint(&docs, "PodMonitor", "rotator");
    assert_eq!(rotator["relabelings"][0]["replacement"], "prod");
}

#[test]
fn service_account_create_false_uses_the_named_account() {
    let docs = render(&[
        "issuer.serviceAccount.create=false",
        "issuer.serviceAccount.name=platform-issuer",
        "rotator.serviceAccount.annotations.iam\\.example\\.com/role=rotator",
    ]);
    assert!(find(&docs, "ServiceAccount", "capstan-issuer").is_none());
    assert!(find(&docs, "ServiceAccount", "platform-issuer").is_none());
    assert_eq!(
        pod(&docs, "issuer")["serviceAccountName"],
        "platform-issuer"
    );
    for binding in [
        find(&docs, "ClusterRoleBinding", "capstan-issuer").unwrap(),
        find(&docs, "RoleBinding", "capstan-issuer:leader-election").unwrap(),
    ] {
        assert_eq!(binding["subjects"][0]["name"], "platform-issuer");
        assert_eq!(binding["subjects"][0]["namespace"], "capstan");
    }
    let rotator = find(&docs, "ServiceAccount", "capstan-rotator").unwrap();
    assert_eq!(
        rotator["metadata"]["annotations"]["iam.example.com/role"],
        "rotator"
    );
    assert_eq!(
        pod(&docs, "rotator")["serviceAccountName"],
        "capstan-rotator"
    );
}

#[test]
fn extra_args_env_pull_secrets_volumes_and_scheduling_reach_the_pods() {
    let docs = render(&[
        "rotator.extraArgs={--restart-debounce=30s}",
        "rotator.extraEnv[0].name=RUST_LOG",
        "rotator.extraEnv[0].value=debug",
        "imagePullSecrets[0].name=registry-creds",
        "rotator.volumes[0].name=tls",
        "rotator.volumes[0].secret.secretName=rotator-metrics-tls",
        "rotator.volumeMounts[0].name=tls",
        "rotator.volumeMounts[0].mountPath=/etc/capstan/tls",
        "rotator.volumeMounts[0].readOnly=true",
        "rotator.image.tag=v9.9.9",
        "rotator.priorityClassName=system-cluster-critical",
        "rotator.podLabels.team=platform",
        "rotator.podAnnotations.note=hello",
        "rotator.tolerations[0].key=dedicated",
        "rotator.tolerations[0].operator=Exists",
    ]);
    let rotator = pod(&docs, "rotator");
    let container = &rotator["containers"][0];
    assert_eq!(
        container["args"].as_sequence().unwrap(),
        &[
            Value::from("--config=/etc/capstan/config/config.yaml"),
            Value::from("--restart-debounce=30s")
        ]
    );
    let env = container["env"].as_sequence().unwrap();
    assert!(
        env.iter()
            .any(|e| e["name"] == "RUST_LOG" && e["value"] == "debug")
    );
    assert!(env.iter().any(|e| e["name"] == "POD_NAMESPACE"));
    assert_eq!(
        container["image"],
        "ghcr.io/capstan-dev/capstan-rotator:v9.9.9"
    );
    assert_eq!(rotator["imagePullSecrets"][0]["name"], "registry-creds");
    assert_eq!(rotator["volumes"][0]["name"], "config");
    assert_eq!(
        rotator["volumes"][1]["secret"]["secretName"],
        "rotator-metrics-tls"
    );
    assert_eq!(
        container["volumeMounts"][1]["mountPath"],
        "/etc/capstan/tls"
    );
    assert_eq!(rotator["priorityClassName"], "system-cluster-critical");
    assert_eq!(rotator["tolerations"][0]["key"], "dedicated");
    let template = &find(&docs, "Deployment", "capstan-rotator").unwrap()["spec"]["template"];
    assert_eq!(template["metadata"]["labels"]["team"], "platform");
    assert_eq!(template["metadata"]["annotations"]["note"], "hello");
    // The pull secret is for every component; the rest only where set.
    let issuer = pod(&docs, "issuer");
    assert_eq!(issuer["imagePullSecrets"][0]["name"], "registry-creds");
    assert_eq!(issuer["volumes"].as_sequence().unwrap().len(), 1);
    assert_eq!(
        issuer["containers"][0]["args"].as_sequence().unwrap().len(),
        1
    );
    assert!(issuer.get("tolerations").is_none());
    assert_eq!(
        issuer["containers"][0]["image"],
        "ghcr.io/capstan-dev/capstan-issuer:0.1.0"
    );
}

#[test]
fn the_default_issuer_is_a_hook_that_follows_the_crds() {
    let docs = render(&[
        "defaultIssuer.enabled=true",
        "defaultIssuer.name=platform-ca",
        "defaultIssuer.selfManaged.keyAlgorithm=ECDSAP384",
    ]);
    let issuer = find(&docs, "ClusterCAIssuer", "platform-ca").unwrap();
    assert_eq!(issuer["spec"]["selfManaged"]["secretName"], "monitoring-ca");
    assert_eq!(issuer["spec"]["selfManaged"]["keyAlgorithm"], "ECDSAP384");
    assert_eq!(issuer["spec"]["maxDuration"], "2160h");
    // A hook, so that Helm creates it after the CRDs of the same release.
    assert_eq!(
        issuer["metadata"]["annotations"]["helm.sh/hook"],
        "post-install,post-upgrade"
    );
}

#[test]
fn static_tls_renders_https_endpoints_with_the_bundle_ca() {
    let docs = render(&[
        "issuer.config.metricsTLSConfig.filesystem.certFile=/etc/capstan/tls/tls.crt",
        "issuer.config.metricsTLSConfig.filesystem.keyFile=/etc/capstan/tls/tls.key",
        "issuer.config.tlsSecurityProfile.type=Modern",
        "prometheus.servicemonitor.enabled=true",
        "prometheus.tls.caConfigMap.name=capstan-metrics-ca",
    ]);
    let config = config(&docs, "issuer");
    assert_eq!(
        config["metricsTLSConfig"]["filesystem"]["certFile"],
        "/etc/capstan/tls/tls.crt"
    );
    assert_eq!(config["tlsSecurityProfile"]["type"], "Modern");
    let monitor = find(&docs, "ServiceMonitor", "capstan-issuer").unwrap();
    assert_eq!(monitor["spec"]["jobLabel"], "app.kubernetes.io/name");
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], "http-metrics");
    assert_eq!(endpoint["scheme"], "https");
    assert_eq!(
        endpoint["tlsConfig"]["serverName"],
        "capstan-issuer.capstan.svc"
    );
    assert_eq!(
        endpoint["tlsConfig"]["ca"]["configMap"]["name"],
        "capstan-metrics-ca"
    );
    // The rotator still serves plain HTTP.
    let rotator = find(&docs, "ServiceMonitor", "capstan-rotator").unwrap();
    assert!(rotator["spec"]["endpoints"][0].get("scheme").is_none());
}

#[test]
fn dynamic_tls_defaults_the_dns_names_and_injects_the_ca_for_the_monitors() {
    let docs = render(&[
        "rotator.config.metricsTLSConfig.dynamic.secretName=capstan-metrics-ca",
        "prometheus.podmonitor.enabled=true",
        "prometheus.podmonitor.namespace=monitoring",
    ]);
    // The binary refuses a dynamic secretName without dnsNames: the chart
    // gives the Service's names.
    assert_eq!(
        config(&docs, "rotator")["metricsTLSConfig"]["dynamic"]["dnsNames"],
        serde_norway::from_str::<Value>(
            "[capstan-rotator.capstan.svc, capstan-rotator.capstan.svc.cluster.local]"
        )
        .unwrap()
    );
    let role = find(&docs, "Role", "capstan-rotator:dynamic-serving").unwrap();
    assert_eq!(role["metadata"]["namespace"], "capstan");
    assert_eq!(role["rules"][0]["resources"][0], "secrets");
    // The monitor trusts a ConfigMap in its own namespace that the rotator
    // fills with the dynamic serving CA.
    let ep = endpoint(&docs, "PodMonitor", "rotator");
    assert_eq!(ep["scheme"], "https");
    assert_eq!(ep["tlsConfig"]["serverName"], "capstan-rotator.capstan.svc");
    assert_eq!(
        ep["tlsConfig"]["ca"]["configMap"],
        serde_norway::from_str::<Value>("{name: capstan-rotator-metrics-ca, key: ca-bundle.crt}")
            .unwrap()
    );
    let bundle = find(&docs, "ConfigMap", "capstan-rotator-metrics-ca").unwrap();
    assert_eq!(bundle["metadata"]["namespace"], "monitoring");
    assert_eq!(
        bundle["metadata"]["annotations"]["capstan.dev/inject-ca-from"],
        "capstan/capstan-metrics-ca"
    );
    assert!(bundle.get("data").is_none(), "the rotator owns the data");
    assert!(find(&docs, "ConfigMap", "capstan-issuer-metrics-ca").is_none());
    assert!(
        endpoint(&docs, "PodMonitor", "issuer")
            .get("tlsConfig")
            .is_none()
    );

    // Both monitor kinds in one namespace share one bundle ConfigMap; names
    // given by the user win over the defaults.
    let docs = render(&[
        "issuer.config.metricsTLSConfig.dynamic.secretNamespace=kube-system",
        "issuer.config.metricsTLSConfig.dynamic.secretName=metrics-ca",
        "issuer.config.metricsTLSConfig.dynamic.dnsNames={issuer.example.com}",
        "prometheus.tls.serverName=issuer.example.com",
        "prometheus.podmonitor.enabled=true",
        "prometheus.servicemonitor.enabled=true",
    ]);
    assert_eq!(
        config(&docs, "issuer")["metricsTLSConfig"]["dynamic"]["dnsNames"],
        serde_norway::from_str::<Value>("[issuer.example.com]").unwrap()
    );
    let bundles: Vec<_> = kinds(&docs, "ConfigMap")
        .into_iter()
        .filter(|c| c["metadata"]["name"] == "capstan-issuer-metrics-ca")
        .collect();
    assert_eq!(bundles.len(), 1);
    assert_eq!(
        bundles[0]["metadata"]["annotations"]["capstan.dev/inject-ca-from"],
        "kube-system/metrics-ca"
    );
    for kind in ["PodMonitor", "ServiceMonitor"] {
        let tls = &endpoint(&docs, kind, "issuer")["tlsConfig"];
        assert_eq!(tls["serverName"], "issuer.example.com");
        assert_eq!(tls["ca"]["configMap"]["name"], "capstan-issuer-metrics-ca");
    }

    // A CA ConfigMap of the user's replaces the injected one.
    let docs = render(&[
        "issuer.config.metricsTLSConfig.dynamic.secretName=metrics-ca",
        "prometheus.tls.caConfigMap.name=my-ca",
        "prometheus.servicemonitor.enabled=true",
    ]);
    assert!(find(&docs, "ConfigMap", "capstan-issuer-metrics-ca").is_none());
    assert_eq!(
        endpoint(&docs, "ServiceMonitor", "issuer")["tlsConfig"]["ca"]["configMap"]["name"],
        "my-ca"
    );

    // Without the rotator nothing would fill the ConfigMap.
    let text = refused(&[
        "issuer.config.metricsTLSConfig.dynamic.secretName=metrics-ca",
        "rotator.enabled=false",
        "prometheus.servicemonitor.enabled=true",
    ]);
    assert!(
        text.contains("issuer.config.metricsTLSConfig.dynamic")
            && text.contains("prometheus.tls.caConfigMap.name"),
        "{text}"
    );
}

#[test]
fn token_review_renders_the_reader_role_and_bearer_endpoints() {
    let docs = render(&[
        "issuer.config.metricsTLSConfig.filesystem.certFile=/tls/tls.crt",
        "issuer.config.metricsTLSConfig.filesystem.keyFile=/tls/tls.key",
        "issuer.config.metricsAuth.tokenReview=true",
        "prometheus.serviceAccount.name=prometheus-k8s",
        "prometheus.servicemonitor.enabled=true",
    ]);
    let reader = find(&docs, "ClusterRole", "capstan-metrics-reader").unwrap();
    assert_eq!(reader["rules"][0]["nonResourceURLs"][0], "/metrics");
    assert_eq!(reader["rules"][0]["verbs"][0], "get");
    let binding = find(
        &docs,
        "ClusterRoleBinding",
        "capstan-metrics-reader:monitoring:prometheus-k8s",
    )
    .unwrap();
    assert_eq!(binding["subjects"][0]["name"], "prometheus-k8s");
    assert_eq!(binding["roleRef"]["name"], "capstan-metrics-reader");
    let delegator = find(&docs, "ClusterRoleBinding", "capstan-issuer:auth-delegator").unwrap();
    assert_eq!(delegator["roleRef"]["name"], "system:auth-delegator");
    assert!(
        find(
            &docs,
            "ClusterRoleBinding",
            "capstan-rotator:auth-delegator"
        )
        .is_none()
    );
    let ep = endpoint(&docs, "ServiceMonitor", "issuer");
    assert_eq!(
        ep["bearerTokenFile"],
        "/var/run/secrets/kubernetes.io/serviceaccount/token"
    );
    assert!(ep.get("authorization").is_none());
    // The rotator does not review tokens: its endpoint sends none.
    assert!(
        endpoint(&docs, "ServiceMonitor", "rotator")
            .get("bearerTokenFile")
            .is_none()
    );

    let docs = render(&[
        "issuer.config.metricsTLSConfig.filesystem.certFile=/tls/tls.crt",
        "issuer.config.metricsTLSConfig.filesystem.keyFile=/tls/tls.key",
        "issuer.config.metricsAuth.tokenReview=true",
        "prometheus.authorization.type=secret",
        "prometheus.authorization.secretName=prometheus-token",
        "prometheus.servicemonitor.enabled=true",
    ]);
    let ep = endpoint(&docs, "ServiceMonitor", "issuer");
    assert_eq!(ep["authorization"]["type"], "Bearer");
    assert_eq!(
        ep["authorization"]["credentials"]["name"],
        "prometheus-token"
    );
    assert!(ep.get("bearerTokenFile").is_none());
    // No binding without a ServiceAccount to bind.
    assert!(
        kinds(&docs, "ClusterRoleBinding")
            .iter()
            .all(|b| b["roleRef"]["name"] != "capstan-metrics-reader")
    );
}

#[test]
fn a_podmonitor_with_token_review_presents_a_token_from_a_secret() {
    let tls = [
        "rotator.config.metricsTLSConfig.dynamic.secretName=capstan-metrics-ca",
        "rotator.config.metricsAuth.tokenReview=true",
        "prometheus.podmonitor.enabled=true",
    ];
    let mut sets = tls.to_vec();
    sets.extend([
        "prometheus.authorization.type=secret",
        "prometheus.authorization.secretName=prometheus-scrape-token",
        "prometheus.authorization.key=bearer",
    ]);
    let docs = render(&sets);
    let ep = endpoint(&docs, "PodMonitor", "rotator");
    assert_eq!(
        ep["authorization"],
        serde_norway::from_str::<Value>(
            "{type: Bearer, credentials: {name: prometheus-scrape-token, key: bearer}}"
        )
        .unwrap()
    );
    assert!(ep.get("bearerTokenFile").is_none());
    assert_eq!(ep["scheme"], "https");
    assert!(find(&docs, "ClusterRole", "capstan-metrics-reader").is_some());

    // The chart can create that Secret: a token of Prometheus's own
    // ServiceAccount, which is bound to the metrics-reader role.
    let mut sets = tls.to_vec();
    sets.extend([
        "prometheus.podmonitor.namespace=monitoring",
        "prometheus.authorization.type=secret",
        "prometheus.authorization.secretName=prometheus-scrape-token",
        "prometheus.authorization.createSecret=true",
        "prometheus.serviceAccount.name=prometheus",
    ]);
    let docs = render(&sets);
    let secret = find(&docs, "Secret", "prometheus-scrape-token").unwrap();
    assert_eq!(secret["type"], "kubernetes.io/service-account-token");
    assert_eq!(secret["metadata"]["namespace"], "monitoring");
    assert_eq!(
        secret["metadata"]["annotations"]["kubernetes.io/service-account.name"],
        "prometheus"
    );
    assert!(
        secret.get("data").is_none(),
        "Kubernetes fills the token in"
    );
    let binding = find(
        &docs,
        "ClusterRoleBinding",
        "capstan-metrics-reader:monitoring:prometheus",
    )
    .unwrap();
    assert_eq!(binding["subjects"][0]["name"], "prometheus");
    assert_eq!(
        endpoint(&docs, "PodMonitor", "rotator")["authorization"]["credentials"]["name"],
        "prometheus-scrape-token"
    );
    // The operator reads credentials from the monitor's namespace only.
    let misplaced: Vec<&str> = sets
        .iter()
        .copied()
        .filter(|s| !s.starts_with("prometheus.podmonitor.namespace"))
        .collect();
    let text = refused(&misplaced);
    assert!(
        text.contains("set prometheus.podmonitor.namespace=monitoring"),
        "{text}"
    );
    let text = refused(&["prometheus.authorization.createSecret=true"]);
    assert!(
        text.contains("/prometheus/authorization/type") && text.contains("'secret'"),
        "{text}"
    );

    // PodMonitor endpoints have no bearerTokenFile: the chart says so
    // instead of rendering a field the operator rejects.
    let text = refused(&tls);
    assert!(
        text.contains("PodMonitor endpoints have no bearerTokenFile")
            && text.contains("prometheus.authorization.type=secret"),
        "{text}"
    );
    let mut sets = tls.to_vec();
    sets.push("prometheus.authorization.type=secret");
    let text = refused(&sets);
    assert!(
        text.contains("prometheus.authorization.secretName is required"),
        "{text}"
    );
}

#[test]
fn the_metrics_reader_role_is_named_after_the_release() {
    let sets = [
        "issuer.config.metricsTLSConfig.dynamic.secretName=capstan-metrics-ca",
        "issuer.config.metricsAuth.tokenReview=true",
        "prometheus.serviceAccount.name=prometheus",
    ];
    let mut names = BTreeSet::new();
    for (release, reader) in [
        ("capstan", "capstan-metrics-reader"),
        ("team-a", "team-a-capstan-metrics-reader"),
        ("capstan-b", "capstan-b-metrics-reader"),
    ] {
        let docs = render_as(release, &sets);
        let role = kinds(&docs, "ClusterRole")
            .into_iter()
            .find(|r| r["metadata"]["labels"]["app.kubernetes.io/name"] == "capstan-metrics-reader")
            .unwrap();
        assert_eq!(role["metadata"]["name"], reader, "release {release}");
        let binding = find(
            &docs,
            "ClusterRoleBinding",
            &format!("{reader}:monitoring:prometheus"),
        )
        .unwrap();
        assert_eq!(binding["roleRef"]["name"], reader);
        names.insert(reader);
    }
    assert_eq!(names.len(), 3, "two releases must not share the role");
}

#[test]
fn mtls_renders_the_client_certificate_for_the_scraper() {
    let docs = render(&[
        "issuer.config.metricsTLSConfig.filesystem.certFile=/tls/tls.crt",
        "issuer.config.metricsTLSConfig.filesystem.keyFile=/tls/tls.key",
        "issuer.config.metricsAuth.clientCAFile=/etc/capstan/client-ca/ca.crt",
        "prometheus.tls.clientCertSecret=prometheus-client-tls",
        "prometheus.servicemonitor.enabled=true",
        "issuer.volumes[0].name=client-ca",
        "issuer.volumes[0].configMap.name=capstan-client-ca",
        "issuer.volumeMounts[0].name=client-ca",
        "issuer.volumeMounts[0].mountPath=/etc/capstan/client-ca",
    ]);
    assert_eq!(
        config(&docs, "issuer")["metricsAuth"]["clientCAFile"],
        "/etc/capstan/client-ca/ca.crt"
    );
    let tls = &find(&docs, "ServiceMonitor", "capstan-issuer").unwrap()["spec"]["endpoints"][0]["tlsConfig"];
    assert_eq!(tls["cert"]["secret"]["name"], "prometheus-client-tls");
    assert_eq!(tls["keySecret"]["key"], "tls.key");
    let pod = &find(&docs, "Deployment", "capstan-issuer").unwrap()["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"][1]["configMap"]["name"], "capstan-client-ca");
    assert_eq!(
        pod["containers"][0]["volumeMounts"][1]["mountPath"],
        "/etc/capstan/client-ca"
    );
}

#[test]
fn the_prometheus_rule_carries_the_mixin() {
    let docs = render(&["prometheus.rules.enabled=true"]);
    let rule = find(&docs, "PrometheusRule", "capstan").unwrap();
    let groups = rule["spec"]["groups"].as_sequence().unwrap();
    let rules: Vec<&Value> = groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap())
        .collect();
    assert_eq!(rules.iter().filter(|r| r.get("alert").is_some()).count(), 9);
    assert_eq!(
        rules.iter().filter(|r| r.get("record").is_some()).count(),
        6
    );
    let expiring = rules
        .iter()
        .find(|r| r["alert"] == "CapstanCAExpiringSoon")
        .unwrap();
    assert!(
        expiring["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains("{{ $value | humanizeDuration }}"),
        "alert templates pass through Helm untouched"
    );
}

#[test]
fn a_typo_in_the_config_is_refused_by_the_schema() {
    let text = refused(&["issuer.config.metricsTLSconfig.dynamic.secretName=x"]);
    assert!(text.contains("metricsTLSconfig"), "{text}");
}

/// Runs a capstan binary with `config` as its config file and a kubeconfig
/// that does not exist; returns whether it failed and what it printed. A
/// config the binary accepts gets as far as reading the kubeconfig.
fn run_with_config(binary: &str, config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, config).unwrap();
    let out = std::process::Command::new(workspace_binary(binary).unwrap())
        .arg("--config")
        .arg(&file)
        .args(["--kubeconfig", "/nonexistent/kubeconfig"])
        .env("RUST_BACKTRACE", "0")
        .env_remove("RUST_LOG")
        .env("POD_NAMESPACE", "capstan")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (!out.status.success(), text)
}

/// Combinations the binaries refuse: (component, values, what the schema
/// says, what the binary says). The schema must refuse each with an error
/// naming the value, and the config the chart would render without the
/// schema must be refused by the binary: the schema refuses exactly these,
/// not the binary's mistakes.
const REFUSED: &[(&str, &[&str], &[&str], &str)] = &[
    (
        "issuer",
        &["issuer.config.metricsAuth.clientAllowedNames={prometheus}"],
        &[
            "/issuer/config/metricsAuth",
            "'clientCAFile' required, if 'clientAllowedNames' exists",
        ],
        "--metrics-client-allowed-names needs --metrics-client-ca-file",
    ),
    (
        "rotator",
        &["rotator.config.metricsAuth.tokenAudiences={capstan-metrics}"],
        &[
            "/rotator/config/metricsAuth",
            "missing property 'tokenReview'",
        ],
        "--metrics-auth-token-audiences needs --metrics-auth-token-review",
    ),
    (
        "issuer",
        &["issuer.config.metricsTLSConfig.filesystem.certFile=/tls/tls.crt"],
        &[
            "/issuer/config/metricsTLSConfig/filesystem",
            "'keyFile' required",
        ],
        "--metrics-tls-cert-file and --metrics-tls-private-key-file go together",
    ),
    (
        "rotator",
        &["rotator.config.metricsTLSConfig.filesystem.keyFile=/tls/tls.key"],
        &[
            "/rotator/config/metricsTLSConfig/filesystem",
            "'certFile' required",
        ],
        "--metrics-tls-cert-file and --metrics-tls-private-key-file go together",
    ),
    (
        "issuer",
        &[
            "issuer.config.metricsTLSConfig.filesystem.certFile=/tls/tls.crt",
            "issuer.config.metricsTLSConfig.filesystem.keyFile=/tls/tls.key",
            "issuer.config.metricsTLSConfig.dynamic.secretName=metrics-ca",
        ],
        &["/issuer/config/metricsTLSConfig/dynamic/secretName"],
        "choose one metrics TLS source",
    ),
    (
        "issuer",
        &["issuer.config.metricsTLSConfig.dynamic.dnsNames={a.example.com}"],
        &[
            "/issuer/config/metricsTLSConfig/dynamic",
            "'secretName' required",
        ],
        "dynamic serving TLS needs both",
    ),
    (
        "rotator",
        &["rotator.config.metricsTLSConfig.dynamic.secretNamespace=capstan"],
        &[
            "/rotator/config/metricsTLSConfig/dynamic",
            "'secretName' required",
        ],
        "dynamic serving TLS needs both",
    ),
    (
        "issuer",
        &["issuer.config.metricsAuth.tokenReview=true"],
        &["/issuer/config", "missing property 'metricsTLSConfig'"],
        "needs TLS on /metrics",
    ),
    (
        "rotator",
        &["rotator.config.metricsAuth.clientCAFile=/etc/capstan/client-ca/ca.crt"],
        &["/rotator/config", "missing property 'metricsTLSConfig'"],
        "needs TLS on /metrics",
    ),
    (
        "issuer",
        &[
            "issuer.config.metricsAuth.tokenReview=true",
            "issuer.config.metricsTLSConfig.filesystem.keyFile=/tls/tls.key",
        ],
        &[
            "/issuer/config/metricsTLSConfig",
            "'anyOf' failed",
            "'certFile' required",
        ],
        "go together",
    ),
    (
        "issuer",
        &["issuer.config.tlsSecurityProfile.type=Old"],
        &[
            "/issuer/config/tlsSecurityProfile/type",
            "value must be one of",
        ],
        "\"Old\" is not supported",
    ),
    (
        "issuer",
        &["issuer.config.tlsSecurityProfile.type=Custom"],
        &[
            "/issuer/config/tlsSecurityProfile",
            "missing property 'custom'",
        ],
        "needs minTLSVersion",
    ),
    (
        "rotator",
        &["rotator.config.tlsSecurityProfile.custom.minTLSVersion=VersionTLS13"],
        &["/rotator/config/tlsSecurityProfile/custom/minTLSVersion"],
        "apply only to the \"Custom\" TLS security profile",
    ),
    (
        "rotator",
        &[
            "rotator.config.tlsSecurityProfile.type=Custom",
            "rotator.config.tlsSecurityProfile.custom.minTLSVersion=VersionTLS12",
            "rotator.config.tlsSecurityProfile.custom.ciphers={TLS_AES_128_GCM_SHA256}",
        ],
        &[
            "/rotator/config/tlsSecurityProfile/custom/ciphers",
            "contains",
        ],
        "needs at least one TLS 1.2 cipher",
    ),
    (
        "issuer",
        &[
            "issuer.config.tlsSecurityProfile.type=Custom",
            "issuer.config.tlsSecurityProfile.custom.minTLSVersion=VersionTLS13",
            "issuer.config.tlsSecurityProfile.custom.ciphers={AES128-SHA}",
        ],
        &[
            "/issuer/config/tlsSecurityProfile/custom/ciphers/0",
            "value must be one of",
        ],
        "cipher \"AES128-SHA\" is not supported",
    ),
    (
        "issuer",
        &["issuer.config.leaderElection.leaseDuration=0s"],
        &["/issuer/config/leaderElection/leaseDuration", "[1-9]"],
        "must be longer than zero",
    ),
    (
        "rotator",
        &["rotator.config.restartDebounce=soon"],
        &["/rotator/config/restartDebounce", "does not match pattern"],
        "is not a duration",
    ),
    (
        "issuer",
        &["issuer.config.metricsListenAddress=metrics.local:9402"],
        &[
            "/issuer/config/metricsListenAddress",
            "does not match pattern",
        ],
        "is not a listen address",
    ),
    (
        "issuer",
        &["issuer.config.concurrentWorkers=0"],
        &["/issuer/config/concurrentWorkers", "minimum"],
        "concurrent-workers",
    ),
    (
        "rotator",
        &["rotator.config.maxConcurrentRollouts=70000"],
        &["/rotator/config/maxConcurrentRollouts", "maximum"],
        "max-concurrent-rollouts",
    ),
];

#[test]
fn the_schema_refuses_what_the_binaries_refuse() {
    for (component, sets, schema_says, binary_says) in REFUSED {
        let text = refused(sets);
        for said in *schema_says {
            assert!(
                text.contains(said),
                "helm template {sets:?}: {said:?} in\n{text}"
            );
        }
        // What the chart would render without the schema: the binary's turn.
        let (ok, rendered) = template("capstan", sets, &["--skip-schema-validation"]);
        assert!(ok, "{sets:?} renders without the schema:\n{rendered}");
        let docs: Vec<Value> = serde_norway::Deserializer::from_str(&rendered)
            .map(|d| Value::deserialize(d).unwrap())
            .filter(|v| !v.is_null())
            .collect();
        let config = config_text(&docs, component);
        let (failed, out) = run_with_config(&format!("capstan-{component}"), &config);
        assert!(
            failed && out.contains(binary_says),
            "capstan-{component} with {sets:?}:\n{config}\nshould say {binary_says:?}:\n{out}"
        );
        assert!(
            !out.contains("kubeconfig"),
            "refused before the cluster:\n{out}"
        );
    }
}

#[test]
fn a_config_the_schema_accepts_gets_past_the_binaries_checks() {
    // The other direction for a few edge cases the schema allows.
    for (component, sets) in [
        (
            "issuer",
            &[
                "issuer.config.tlsSecurityProfile.type=Custom",
                "issuer.config.tlsSecurityProfile.custom.minTLSVersion=VersionTLS12",
                "issuer.config.tlsSecurityProfile.custom.ciphers={TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_AES_256_GCM_SHA384}",
                "issuer.config.metricsListenAddress=:9402",
                "issuer.config.healthListenAddress=[::1]:9403",
            ][..],
        ),
        (
            "rotator",
            &[
                "rotator.config.metricsTLSConfig.dynamic.secretName=metrics-ca",
                "rotator.config.metricsTLSConfig.dynamic.secretNamespace=kube-system",
                "rotator.config.metricsAuth.tokenReview=false",
                "rotator.config.leaderElection.leaseDuration=1m30s",
                "rotator.config.rolloutTimeout=1.5h",
                "rotator.config.dryRun=true",
            ][..],
        ),
    ] {
        let docs = render(sets);
        let config = config_text(&docs, component);
        let (failed, out) = run_with_config(&format!("capstan-{component}"), &config);
        assert!(
            failed && out.contains("/nonexistent/kubeconfig"),
            "capstan-{component} should get as far as the kubeconfig with\n{config}\n{out}"
        );
    }
}

/// The dotted keys of a `config` schema's leaves.
fn schema_keys(prefix: &str, schema: &serde_json::Value, out: &mut BTreeSet<String>) {
    for (name, property) in schema["properties"].as_object().unwrap() {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        if property["type"] == "object" {
            schema_keys(&key, property, out);
        } else {
            out.insert(key);
        }
    }
}

#[test]
fn the_schema_knows_exactly_the_config_keys_the_binaries_accept() {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(chart().join("values.schema.json")).unwrap())
            .unwrap();
    for component in ["issuer", "rotator"] {
        let mut keys = BTreeSet::new();
        schema_keys(
            "",
            &schema["properties"][component]["properties"]["config"],
            &mut keys,
        );
        // The binary lists the keys it accepts (COMMON_KEYS and its own
        // CONFIG_KEYS) when it meets one it does not.
        let (failed, out) = run_with_config(&format!("capstan-{component}"), "noSuchKey: 1\n");
        assert!(failed, "{out}");
        let listed = out
            .split("known keys: ")
            .nth(1)
            .unwrap_or_else(|| panic!("no list of known keys in:\n{out}"));
        let accepted: BTreeSet<String> = listed
            .lines()
            .next()
            .unwrap()
            .split(", ")
            .map(|k| k.trim().to_owned())
            .collect();
        assert!(accepted.len() >= 20, "{accepted:?}");
        assert_eq!(
            keys, accepted,
            "{component}: values.schema.json config keys (left) and the binary's (right)"
        );
    }
}

/// A kubeconfig `<dir>/<sa>.kubeconfig` with a token of ServiceAccount
/// `ns/sa`, which the chart must have made.
async fn service_account_kubeconfig(
    server: &ControlPlane,
    dir: &Path,
    ns: &str,
    sa: &str,
) -> PathBuf {
    let kubectl = Kubectl::for_server(server).unwrap();
    kubectl
        .run_ok(&["get", "serviceaccount", sa, "-n", ns])
        .await
        .unwrap_or_else(|e| panic!("the chart's ServiceAccount: {e:#}"));
    let token = server.service_account_token(ns, sa, &[]).await.unwrap();
    server
        .token_kubeconfig_at(&server.url(), dir, sa, &token)
        .unwrap()
}

/// Runs a command and returns (success, output).
async fn run(program: &Path, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test]
async fn helm_installs_the_chart_and_the_default_issuer_into_the_api_server() {
    // With workloads: `helm --wait` waits for the Deployments' pods.
    let server = ControlPlane::start().await.unwrap();
    let kubectl = Kubectl::for_server(&server).unwrap();
    let chart = chart();
    let helm = helm_path().unwrap();
    let kubeconfig = server.kubeconfig_path().to_str().unwrap().to_owned();
    let base = [
        chart.to_str().unwrap(),
        "--namespace",
        "capstan",
        "--wait",
        "--timeout",
        "120s",
        "--kubeconfig",
        &kubeconfig,
    ];
    // A fresh install: the CRDs and a ClusterCAIssuer in one release.
    let mut args = vec!["install", "capstan"];
    args.extend(base);
    args.extend(["--create-namespace", "--set", "defaultIssuer.enabled=true"]);
    let (ok, out) = run(&helm, &args).await;
    assert!(ok, "helm install:\n{out}");
    let crds = kubectl.run_ok(&["get", "crd"]).await.unwrap();
    assert!(crds.contains("clustercaissuers.capstan.dev"), "{crds}");
    let deployments = kubectl
        .run_ok(&["get", "deployments", "-n", "capstan"])
        .await
        .unwrap();
    assert!(
        deployments.contains("capstan-issuer") && deployments.contains("capstan-rotator"),
        "{deployments}"
    );
    let issuer: serde_json::Value = serde_json::from_str(
        &kubectl
            .run_ok(&["get", "clustercaissuer", "monitoring-ca", "-o", "json"])
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(issuer["spec"]["selfManaged"]["secretName"], "monitoring-ca");
    assert_eq!(issuer["spec"]["maxDuration"], "2160h");
    let first_uid = issuer["metadata"]["uid"].as_str().unwrap().to_owned();

    // The real issuer, with the config file the release carries, makes the
    // default issuer Ready with a CA in the release namespace.
    let config = kubectl
        .run_ok(&[
            "get",
            "configmap",
            "capstan-issuer-config",
            "-n",
            "capstan",
            "-o",
            "jsonpath={.data.config\\.yaml}",
        ])
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("config.yaml");
    std::fs::write(&config_file, config).unwrap();
    // As the pod would: with a token of the release's ServiceAccount, so
    // the chart's RBAC is what kube-apiserver judges.
    let issuer_kubeconfig =
        service_account_kubeconfig(&server, dir.path(), "capstan", "capstan-issuer").await;
    let binary = RunningBinary::start(
        &workspace_binary("capstan-issuer").unwrap(),
        &[
            "--config",
            config_file.to_str().unwrap(),
            "--kubeconfig",
            issuer_kubeconfig.to_str().unwrap(),
        ],
        &[
            ("POD_NAMESPACE", "capstan"),
            ("POD_NAME", "capstan-issuer-0"),
            ("RUST_LOG", "info"),
        ],
    )
    .unwrap();
    let ready = || async {
        let out = kubectl
            .run(&[
                "get",
                "clustercaissuer",
                "monitoring-ca",
                "-o",
                "jsonpath={.metadata.uid} {.status.conditions[?(@.type==\"Ready\")].status}",
            ])
            .await
            .ok()?;
        let text = out.stdout.trim().to_owned();
        text.ends_with(" True")
            .then(|| text.trim_end_matches(" True").to_owned())
    };
    let ca = || async {
        let out = kubectl
            .run(&[
                "get",
                "secret",
                "monitoring-ca",
                "-n",
                "capstan",
                "-o",
                "jsonpath={.data.tls\\.crt}",
            ])
            .await
            .ok()?;
        (out.success() && !out.stdout.trim().is_empty()).then(|| out.stdout.trim().to_owned())
    };
    let uid = await_condition("the default issuer Ready", WAIT, POLL, ready)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", binary.logs().join("\n")));
    assert_eq!(uid, first_uid);
    let first_ca = await_condition("the default issuer's CA", WAIT, POLL, ca)
        .await
        .unwrap();

    // An upgrade applies a changed value to it: the hook replaces the
    // object; the CA Secret stays and the new object takes it up.
    let mut args = vec!["upgrade", "capstan"];
    args.extend(base);
    args.extend([
        "--set",
        "defaultIssuer.enabled=true",
        "--set",
        "defaultIssuer.maxDuration=720h",
    ]);
    let (ok, out) = run(&helm, &args).await;
    assert!(ok, "helm upgrade:\n{out}");
    let max = kubectl
        .run_ok(&[
            "get",
            "clustercaissuer",
            "monitoring-ca",
            "-o",
            "jsonpath={.spec.maxDuration}",
        ])
        .await
        .unwrap();
    assert_eq!(max.trim(), "720h");
    let uid = await_condition("the replaced issuer Ready", WAIT, POLL, || async {
        ready().await.filter(|uid| *uid != first_uid)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", binary.logs().join("\n")));
    assert_ne!(uid, first_uid, "the hook replaced the object");
    assert_eq!(ca().await.unwrap(), first_ca, "the CA survives the upgrade");
    binary.kill().await.unwrap();

    // Uninstalling keeps the CRDs (crds.keep) and the issuer.
    let (ok, out) = run(
        &helm,
        &[
            "uninstall",
            "capstan",
            "--namespace",
            "capstan",
            "--wait",
            "--kubeconfig",
            &kubeconfig,
        ],
    )
    .await;
    assert!(ok, "helm uninstall:\n{out}");
    let deployments = kubectl
        .run_ok(&["get", "deployments", "-n", "capstan", "-o", "name"])
        .await
        .unwrap();
    assert!(deployments.trim().is_empty(), "{deployments}");
    let left = kubectl
        .run_ok(&["get", "clustercaissuer", "-o", "name"])
        .await
        .unwrap();
    assert_eq!(left.trim(), "clustercaissuer.capstan.dev/monitoring-ca");
}

/// A self-signed serving certificate for `name` and a CA file, made with
/// openssl in `dir`; returns (cert, key, client CA).
fn tls_files(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let cert = dir.join("tls.crt");
    let key = dir.join("tls.key");
    let ca = dir.join("client-ca.crt");
    for (out, k, cn) in [
        (&cert, &key, name),
        (&ca, &dir.join("client-ca.key"), "client CA"),
    ] {
        let status = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "1", "-subj", &format!("/CN={cn}")])
            .args(["-addext", &format!("subjectAltName=DNS:{name}")])
            .arg("-keyout")
            .arg(k)
            .arg("-out")
            .arg(out)
            .output()
            .unwrap();
        assert!(status.status.success(), "{status:?}");
    }
    (cert, key, ca)
}

/// One chart mode and what the binaries must say when they start with its
/// config: (name, values, scheme, token review, mTLS).
struct Mode {
    name: &'static str,
    sets: Vec<String>,
    scheme: &'static str,
    token_review: bool,
    mtls: bool,
}

#[tokio::test]
async fn the_binaries_start_with_the_config_rendered_for_every_mode() {
    // Its own control plane: the binaries act cluster-wide and the chart
    // makes cluster-scoped RBAC. No pod needs to run (the binaries run
    // here), so no workloads.
    let server = ControlPlane::builder()
        .workloads(false)
        .start()
        .await
        .unwrap();
    let kubectl = Kubectl::for_server(&server).unwrap();
    kubectl
        .run_ok(&["create", "namespace", "capstan"])
        .await
        .unwrap();
    kubectl.apply_crds(true).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, client_ca) = tls_files(dir.path(), "capstan-issuer.capstan.svc");
    let files = |component: &str| {
        vec![
            format!(
                "{component}.config.metricsTLSConfig.filesystem.certFile={}",
                cert.display()
            ),
            format!(
                "{component}.config.metricsTLSConfig.filesystem.keyFile={}",
                key.display()
            ),
        ]
    };
    let both = |f: &dyn Fn(&str) -> Vec<String>| {
        let mut sets = f("issuer");
        sets.extend(f("rotator"));
        sets
    };
    let modes = vec![
        Mode {
            name: "plain",
            sets: vec![],
            scheme: "http",
            token_review: false,
            mtls: false,
        },
        Mode {
            name: "filesystem TLS",
            sets: both(&|c| {
                let mut s = files(c);
                s.push(format!("{c}.config.tlsSecurityProfile.type=Modern"));
                s
            }),
            scheme: "https",
            token_review: false,
            mtls: false,
        },
        Mode {
            name: "dynamic TLS",
            sets: both(&|c| {
                vec![
                    format!("{c}.config.metricsTLSConfig.dynamic.secretName=capstan-metrics-ca"),
                    "prometheus.servicemonitor.enabled=true".to_owned(),
                ]
            }),
            scheme: "https",
            token_review: false,
            mtls: false,
        },
        Mode {
            name: "token review",
            sets: both(&|c| {
                let mut s = files(c);
                s.push(format!("{c}.config.metricsAuth.tokenReview=true"));
                s
            }),
            scheme: "https",
            token_review: true,
            mtls: false,
        },
        Mode {
            name: "mTLS",
            sets: both(&|c| {
                let mut s = files(c);
                s.push(format!(
                    "{c}.config.metricsAuth.clientCAFile={}",
                    client_ca.display()
                ));
                s.extend([
                    format!("{c}.config.tlsSecurityProfile.type=Custom"),
                    format!("{c}.config.tlsSecurityProfile.custom.minTLSVersion=VersionTLS12"),
                    format!(
                        "{c}.config.tlsSecurityProfile.custom.ciphers={{ECDHE-ECDSA-AES128-GCM-SHA256}}"
                    ),
                ]);
                s
            }),
            scheme: "https",
            token_review: false,
            mtls: true,
        },
    ];
    let mut previous: Option<String> = None;
    for mode in &modes {
        let sets: Vec<&str> = mode.sets.iter().map(String::as_str).collect();
        let docs = render(&sets);
        // The mode's objects, for real: kube-apiserver validates them, and
        // the binaries run as the mode's ServiceAccounts with only its RBAC
        // (the previous mode's objects are deleted first, so no permission
        // is left over from it).
        if let Some(yaml) = previous.take() {
            let out = kubectl
                .run_with_stdin(&["delete", "--ignore-not-found", "-f", "-"], Some(&yaml))
                .await
                .unwrap();
            assert!(
                out.success(),
                "deleting the previous mode's objects: {out:?}"
            );
        }
        let yaml = objects_yaml(&docs);
        let out = kubectl
            .run_with_stdin(&["apply", "--validate=strict", "-f", "-"], Some(&yaml))
            .await
            .unwrap();
        assert!(
            out.success(),
            "{}: kube-apiserver refuses the chart's objects: {out:?}",
            mode.name
        );
        previous = Some(yaml);
        for component in ["issuer", "rotator"] {
            let file = dir.path().join(format!("{component}.yaml"));
            std::fs::write(&file, config_text(&docs, component)).unwrap();
            let sa = format!("capstan-{component}");
            let config = service_account_kubeconfig(&server, dir.path(), "capstan", &sa).await;
            // A Lease left by the previous mode's (killed) binary would keep
            // this one waiting for it to expire.
            kubectl
                .run_ok(&[
                    "delete",
                    "lease",
                    &sa,
                    "-n",
                    "capstan",
                    "--ignore-not-found",
                ])
                .await
                .unwrap();
            let pod = format!("{component}-drift");
            let binary = RunningBinary::start(
                &workspace_binary(&sa).unwrap(),
                &[
                    "--config",
                    file.to_str().unwrap(),
                    "--kubeconfig",
                    config.to_str().unwrap(),
                ],
                &[
                    ("POD_NAMESPACE", "capstan"),
                    ("POD_NAME", &pod),
                    ("RUST_LOG", "info"),
                    ("RUST_BACKTRACE", "0"),
                ],
            )
            .unwrap();
            let what = format!("{}: capstan-{component}", mode.name);
            binary
                .serving_addresses(WAIT)
                .await
                .unwrap_or_else(|e| panic!("{what} did not start serving: {e:#}"));
            // The chart's leader-election Role lets it take its Lease.
            let identity = format!("{pod}-{}", binary.pid());
            await_condition(&format!("{what} holding its Lease"), WAIT, POLL, || async {
                let holder = kubectl
                    .run_ok(&[
                        "get",
                        "lease",
                        &sa,
                        "-n",
                        "capstan",
                        "-o",
                        "jsonpath={.spec.holderIdentity}",
                    ])
                    .await
                    .ok()?;
                (holder == identity).then_some(())
            })
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", binary.logs().join("\n")));
            let line = binary
                .logs()
                .into_iter()
                .map(|l| capstan_tests::harness::strip_ansi(&l))
                .find(|l| l.contains("serving metrics and health"))
                .unwrap();
            let field = |name: &str, value: &str| {
                line.contains(&format!("{name}={value}"))
                    || line.contains(&format!("{name}=\"{value}\""))
            };
            assert!(field("scheme", mode.scheme), "{what}: {line}");
            assert!(
                field("token_review", &mode.token_review.to_string()),
                "{what}: {line}"
            );
            assert!(field("mtls", &mode.mtls.to_string()), "{what}: {line}");
            if mode.name == "dynamic TLS" {
                dynamic_ca_is_injected(&kubectl, &docs, component).await;
            }
            binary.kill().await.unwrap();
        }
    }
}

/// The rendered objects but the CRDs (applied once, from `crds/`, which
/// the chart's copies equal) and the Prometheus Operator's (whose CRDs the
/// control plane does not have), as one YAML stream.
fn objects_yaml(docs: &[Value]) -> String {
    docs.iter()
        .filter(|d| {
            d["kind"] != "CustomResourceDefinition"
                && !d["apiVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("monitoring.coreos.com/")
        })
        .map(|d| format!("---\n{}", serde_norway::to_string(d).unwrap()))
        .collect()
}

/// With dynamic TLS the binary keeps its serving CA in the Secret the chart
/// named; once the rotator runs, the monitors' bundle ConfigMap the chart
/// renders holds that CA (and never its key).
async fn dynamic_ca_is_injected(kubectl: &Kubectl, docs: &[Value], component: &str) {
    let ca = await_condition("the dynamic serving CA Secret", WAIT, POLL, || async {
        let out = kubectl
            .run(&[
                "get",
                "secret",
                "capstan-metrics-ca",
                "-n",
                "capstan",
                "-o",
                "jsonpath={.data.ca\\.crt}",
            ])
            .await
            .ok()?;
        (out.success() && !out.stdout.trim().is_empty()).then(|| out.stdout.trim().to_owned())
    })
    .await
    .unwrap();
    if component != "rotator" {
        return;
    }
    use base64::Engine as _;
    let ca = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(ca)
            .unwrap(),
    )
    .unwrap();
    let bundle = find(docs, "ConfigMap", "capstan-rotator-metrics-ca").unwrap();
    let applied = kubectl
        .stdin("apply", &serde_norway::to_string(bundle).unwrap())
        .await;
    assert!(applied.success(), "{}", applied.stderr);
    let injected = await_condition("the injected serving CA", WAIT, POLL, || async {
        let out = kubectl
            .run(&[
                "get",
                "configmap",
                "capstan-rotator-metrics-ca",
                "-n",
                "capstan",
                "-o",
                "jsonpath={.data.ca-bundle\\.crt}",
            ])
            .await
            .ok()?;
        (out.success() && !out.stdout.trim().is_empty()).then_some(out.stdout)
    })
    .await
    .unwrap();
    assert_eq!(injected.trim(), ca.trim());
    assert!(!injected.contains("PRIVATE KEY"));
}

// ---------------------------------------------------------------------------
// Values profiles: charts/capstan/ci/*-values.yaml (chart-testing's
// convention). Each lints strictly, renders manifests kubernetes-validate
// accepts, keeps what its comment promises, and installs into a real
// control plane with Ready pods.
// ---------------------------------------------------------------------------

/// The profiles the chart promises; a new file in ci/ needs its promise in
/// [`check_profile`].
const PROFILES: &[&str] = &["default", "ha", "minimal", "openshift", "subchart"];

fn profile(name: &str) -> Profile {
    profiles()
        .unwrap()
        .into_iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("charts/capstan/ci/{name}-values.yaml is missing"))
}

/// `helm lint --strict` and `helm template` of `chart` as `release` in
/// `namespace` with a values file; the output must pass
/// `kubernetes-validate` and the monitor checks. Returns the documents.
fn render_values(chart: &Path, release: &str, namespace: &str, values: &Path) -> Vec<Value> {
    let what = [values.to_str().unwrap()];
    let (ok, text) = helm(&[
        "lint",
        "--strict",
        chart.to_str().unwrap(),
        "--namespace",
        namespace,
        "-f",
        what[0],
    ]);
    assert!(ok, "helm lint --strict -f {}:\n{text}", what[0]);
    let (ok, text) = helm(&[
        "template",
        release,
        chart.to_str().unwrap(),
        "--namespace",
        namespace,
        "-f",
        what[0],
    ]);
    assert!(ok, "helm template -f {}:\n{text}", what[0]);
    validate(&text, &what);
    let docs = documents(&text).unwrap();
    check_monitors(&docs, &what);
    docs
}

/// What every profile keeps, and what each one promises beyond it.
fn check_profile(name: &str, docs: &[Value]) {
    // Installs anywhere: every profile fits OpenShift's restricted-v2 SCC
    // and Kubernetes' restricted Pod Security Standard.
    assert_eq!(
        restricted_scc_findings(docs),
        Vec::<String>::new(),
        "{name}: restricted-v2"
    );
    let deployments = kinds(docs, "Deployment");
    assert_eq!(deployments.len(), 2, "{name}");
    for deployment in &deployments {
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            container["securityContext"]["readOnlyRootFilesystem"], true,
            "{name}"
        );
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    }
    let replicas = |n: u64| {
        for deployment in &deployments {
            assert_eq!(deployment["spec"]["replicas"], n, "{name}");
        }
    };
    match name {
        "default" | "openshift" => {
            // No fixed UID: the image's non-root user, or the SCC's.
            assert_eq!(
                run_as_user_anywhere(docs),
                Vec::<String>::new(),
                "{name}: runAsUser"
            );
            replicas(1);
            assert_eq!(kinds(docs, "CustomResourceDefinition").len(), 3);
            assert!(find(docs, "ClusterRole", "capstan-issuer:approve").is_some());
            assert!(kinds(docs, "PodDisruptionBudget").is_empty());
            let reader = find(docs, "ClusterRole", "capstan-cluster-view").unwrap();
            assert_eq!(
                reader["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-cluster-reader"],
                "true"
            );
        }
        "ha" => {
            replicas(2);
            for component in ["issuer", "rotator"] {
                let fullname = format!("capstan-{component}");
                let pdb = find(docs, "PodDisruptionBudget", &fullname)
                    .unwrap_or_else(|| panic!("ha: no PodDisruptionBudget {fullname}"));
                assert_eq!(pdb["spec"]["minAvailable"], 1);
                let deployment = find(docs, "Deployment", &fullname).unwrap();
                assert_eq!(
                    pdb["spec"]["selector"]["matchLabels"],
                    deployment["spec"]["selector"]["matchLabels"]
                );
                assert_eq!(
                    deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
                    0
                );
                assert_eq!(
                    pod(docs, component)["topologySpreadConstraints"][0]["topologyKey"],
                    "kubernetes.io/hostname"
                );
            }
        }
        "minimal" => {
            replicas(1);
            assert!(kinds(docs, "CustomResourceDefinition").is_empty());
            assert!(kinds(docs, "Service").is_empty());
            assert!(kinds(docs, "ServiceMonitor").is_empty());
            assert!(kinds(docs, "PodMonitor").is_empty());
            assert!(find(docs, "ClusterRole", "capstan-issuer:approve").is_none());
            assert!(find(docs, "ClusterRoleBinding", "capstan-issuer:approve").is_none());
            assert!(find(docs, "ClusterRole", "capstan-view").is_none());
            // The components' own RBAC stays.
            assert!(find(docs, "ClusterRole", "capstan-issuer").is_some());
            assert!(find(docs, "ClusterRole", "capstan-rotator").is_some());
        }
        "subchart" => check_subchart(docs, "capstan"),
        other => panic!("profile {other} has no promise here: add it to check_profile"),
    }
}

/// What the subchart profile's globals make of the release `release`
/// (cert-manager's names, as a parent chart sets them).
fn check_subchart(docs: &[Value], release: &str) {
    let values = profile("subchart").parsed().unwrap();
    let global = &values["global"];
    let labels = global["commonLabels"].as_mapping().unwrap();
    assert_eq!(
        missing_labels(docs, labels),
        Vec::<String>::new(),
        "global.commonLabels on every object"
    );
    for component in ["issuer", "rotator"] {
        let name = format!("{release}-{component}");
        let deployment = find(docs, "Deployment", &name).unwrap();
        assert_eq!(deployment["spec"]["revisionHistoryLimit"], 3);
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["priorityClassName"], global["priorityClassName"]);
        assert_eq!(pod["imagePullSecrets"], global["imagePullSecrets"]);
        // global.nodeSelector merged under the component's.
        assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux");
        assert_eq!(pod["nodeSelector"]["platform.example.com/pool"], "system");
        let role = find(docs, "Role", &format!("{name}:leader-election")).unwrap();
        assert_eq!(role["metadata"]["namespace"], "kube-system");
        let cm = find(docs, "ConfigMap", &format!("{name}-config")).unwrap();
        let config: Value =
            serde_norway::from_str(cm["data"]["config.yaml"].as_str().unwrap()).unwrap();
        // global.logLevel 4 (cert-manager's verbosity) is capstan's debug.
        assert_eq!(config["logLevel"], "debug");
        assert_eq!(config["leaderElection"]["namespace"], "kube-system");
    }
}

#[test]
fn every_profile_lints_validates_and_keeps_its_promise() {
    let found: Vec<String> = profiles().unwrap().into_iter().map(|p| p.name).collect();
    for name in PROFILES {
        assert!(found.iter().any(|f| f == name), "no ci/{name}-values.yaml");
    }
    for name in &found {
        let docs = render_values(&chart(), "capstan", "capstan", &profile(name).values);
        check_profile(name, &docs);
    }
}

#[test]
fn the_subchart_profile_works_from_a_parent_chart() {
    let dir = tempfile::tempdir().unwrap();
    let parent = parent_chart(dir.path(), &profile("subchart").parsed().unwrap()).unwrap();
    let docs = render_values(&parent, "platform", "platform", &parent.join("values.yaml"));
    check_subchart(&docs, "platform-capstan");
    let class = find(&docs, "PriorityClass", "platform-critical").unwrap();
    assert_eq!(class["value"], 1_000_000);
}

#[test]
fn defaults_fix_no_uid_and_a_value_sets_one() {
    let docs = render(&[]);
    assert_eq!(run_as_user_anywhere(&docs), Vec::<String>::new());
    let docs = render(&[
        "issuer.securityContext.runAsUser=65532",
        "issuer.securityContext.runAsGroup=65532",
    ]);
    assert_eq!(pod(&docs, "issuer")["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod(&docs, "issuer")["securityContext"]["runAsNonRoot"],
        true
    );
    assert!(
        pod(&docs, "rotator")["securityContext"]
            .get("runAsUser")
            .is_none()
    );
}

#[test]
fn cert_manager_value_names_reach_the_manifests() {
    let docs = render(&[
        "issuer.image.digest=sha256:0e072dddd1f7f8fc8909a2ca6f65e76c5f0d2fcfb8be47935ae3457e8bbceb20",
        "issuer.image.registry=registry.example.com",
        "rotator.livenessProbe.enabled=false",
        "rotator.readinessProbe.periodSeconds=20",
        "rotator.containerSecurityContext.readOnlyRootFilesystem=false",
        "rotator.deploymentAnnotations.owner=sre",
        "rotator.serviceLabels.scrape=yes",
        "rotator.serviceAccount.labels.team=sre",
        "rotator.serviceAccount.automountServiceAccountToken=false",
        "rotator.strategy.type=Recreate",
        "rotator.podDisruptionBudget.enabled=true",
        "rotator.podDisruptionBudget.maxUnavailable=50%",
        "rotator.enableServiceLinks=true",
        "global.priorityClassName=from-global",
        "global.imagePullSecrets[0].name=global-creds",
        "imagePullSecrets[0].name=chart-creds",
        "global.hostUsers=false",
        "global.logLevel=0",
        "global.leaderElection.leaseDuration=60s",
        "issuer.priorityClassName=issuer-own",
        "issuer.config.logLevel=trace",
    ]);
    let issuer = pod(&docs, "issuer");
    assert_eq!(
        issuer["containers"][0]["image"],
        "registry.example.com/ghcr.io/capstan-dev/capstan-issuer@sha256:0e072dddd1f7f8fc8909a2ca6f65e76c5f0d2fcfb8be47935ae3457e8bbceb20"
    );
    assert_eq!(issuer["priorityClassName"], "issuer-own");
    assert_eq!(issuer["hostUsers"], false);
    let secrets: Vec<&str> = issuer["imagePullSecrets"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(secrets, ["global-creds", "chart-creds"]);
    let rotator = pod(&docs, "rotator");
    assert_eq!(rotator["priorityClassName"], "from-global");
    assert_eq!(rotator["enableServiceLinks"], true);
    let container = &rotator["containers"][0];
    assert!(container.get("livenessProbe").is_none());
    assert_eq!(container["readinessProbe"]["periodSeconds"], 20);
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"],
        false
    );
    let deployment = find(&docs, "Deployment", "capstan-rotator").unwrap();
    assert_eq!(deployment["metadata"]["annotations"]["owner"], "sre");
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    let pdb = find(&docs, "PodDisruptionBudget", "capstan-rotator").unwrap();
    assert_eq!(pdb["spec"]["maxUnavailable"], "50%");
    assert!(pdb["spec"].get("minAvailable").is_none());
    assert!(find(&docs, "PodDisruptionBudget", "capstan-issuer").is_none());
    let service = find(&docs, "Service", "capstan-rotator").unwrap();
    assert_eq!(service["metadata"]["labels"]["scrape"], "yes");
    let account = find(&docs, "ServiceAccount", "capstan-rotator").unwrap();
    assert_eq!(account["metadata"]["labels"]["team"], "sre");
    assert_eq!(account["automountServiceAccountToken"], false);
    // global.logLevel 0 is warn; a component's config.logLevel wins.
    assert_eq!(config(&docs, "rotator")["logLevel"], "warn");
    assert_eq!(config(&docs, "issuer")["logLevel"], "trace");
    assert_eq!(
        config(&docs, "rotator")["leaderElection"]["leaseDuration"],
        "60s"
    );
    // The binaries take the levels and lease duration the globals render.
    for component in ["issuer", "rotator"] {
        let config = config_text(&docs, component);
        let (failed, out) = run_with_config(&format!("capstan-{component}"), &config);
        assert!(
            failed && out.contains("/nonexistent/kubeconfig"),
            "capstan-{component} should get as far as the kubeconfig with\n{config}\n{out}"
        );
    }
}

#[test]
fn rbac_and_approval_switches_and_bad_pdb_values_are_refused() {
    // global.rbac.create=false: no RBAC at all; the workloads stay.
    let docs = render(&["global.rbac.create=false"]);
    for kind in ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"] {
        assert!(kinds(&docs, kind).is_empty(), "{kind}");
    }
    assert_eq!(kinds(&docs, "Deployment").len(), 2);
    // approval.subjects replaces cert-manager's ServiceAccount.
    let docs = render(&[
        "approval.subjects[0].kind=ServiceAccount",
        "approval.subjects[0].name=cert-manager-approver-policy",
        "approval.subjects[0].namespace=cert-manager",
    ]);
    let binding = find(&docs, "ClusterRoleBinding", "capstan-issuer:approve").unwrap();
    assert_eq!(
        binding["subjects"].as_sequence().unwrap().len(),
        1,
        "{binding:?}"
    );
    assert_eq!(
        binding["subjects"][0]["name"],
        "cert-manager-approver-policy"
    );
    // Both PDB bounds, or a malformed one, are refused before Kubernetes sees them.
    let out = refused(&[
        "issuer.podDisruptionBudget.enabled=true",
        "issuer.podDisruptionBudget.minAvailable=1",
        "issuer.podDisruptionBudget.maxUnavailable=1",
    ]);
    assert!(out.contains("podDisruptionBudget"), "{out}");
    let out = refused(&["issuer.podDisruptionBudget.minAvailable=half"]);
    assert!(out.contains("minAvailable"), "{out}");
    let out = refused(&["global.logLevel=9"]);
    assert!(out.contains("logLevel"), "{out}");
    // A parent's globals for other charts are accepted.
    render(&[
        "global.storageClass=fast",
        "global.podSecurityPolicy.enabled=false",
    ]);
}

/// Installs `chart` (`-f values`) as `release` into namespace `ns` of its
/// own control plane, where Pod Security Admission enforces the
/// restricted standard, with `helm install --wait`; checks that every
/// Deployment's pods are Ready. Returns the control plane, for more checks.
async fn install_profile(
    release: &str,
    ns: &str,
    chart: &Path,
    values: &Path,
    prepare: impl AsyncFnOnce(&ControlPlane, &Kubectl),
) -> (ControlPlane, Kubectl, Vec<Value>) {
    let server = ControlPlane::start().await.unwrap();
    let kubectl = Kubectl::for_server(&server).unwrap();
    kubectl.run_ok(&["create", "namespace", ns]).await.unwrap();
    kubectl
        .run_ok(&[
            "label",
            "namespace",
            ns,
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/enforce-version=latest",
        ])
        .await
        .unwrap();
    // The namespace does enforce it: a pod without the hardening is refused.
    let plain = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: plain, namespace: {ns}}}\n\
         spec: {{containers: [{{name: c, image: example.com/c}}]}}\n"
    );
    let out = kubectl
        .run_with_stdin(&["create", "--dry-run=server", "-f", "-"], Some(&plain))
        .await
        .unwrap();
    assert!(
        !out.success() && out.stderr.contains("restricted"),
        "Pod Security Admission should refuse a plain pod: {}",
        out.stderr
    );
    prepare(&server, &kubectl).await;
    let helm = helm_path().unwrap();
    let kubeconfig = server.kubeconfig_path().to_str().unwrap().to_owned();
    let (ok, out) = run(
        &helm,
        &[
            "install",
            release,
            chart.to_str().unwrap(),
            "--namespace",
            ns,
            "-f",
            values.to_str().unwrap(),
            "--wait",
            "--timeout",
            "180s",
            "--kubeconfig",
            &kubeconfig,
        ],
    )
    .await;
    assert!(ok, "helm install -f {}:\n{out}", values.display());
    let deployments: serde_json::Value = serde_json::from_str(
        &kubectl
            .run_ok(&["get", "deployments", "-n", ns, "-o", "json"])
            .await
            .unwrap(),
    )
    .unwrap();
    let mut expected = 0;
    for deployment in deployments["items"].as_array().unwrap() {
        let want = deployment["spec"]["replicas"].as_u64().unwrap();
        assert_eq!(
            deployment["status"]["readyReplicas"].as_u64(),
            Some(want),
            "{}",
            deployment["metadata"]["name"]
        );
        expected += want;
    }
    let pods: serde_json::Value = serde_json::from_str(
        &kubectl
            .run_ok(&["get", "pods", "-n", ns, "-o", "json"])
            .await
            .unwrap(),
    )
    .unwrap();
    let ready = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .count() as u64;
    assert_eq!(ready, expected, "Ready pods in {ns}");
    let (ok, manifest) = helm_async(&[
        "get",
        "manifest",
        release,
        "--namespace",
        ns,
        "--kubeconfig",
        &kubeconfig,
    ])
    .await;
    assert!(ok, "{manifest}");
    (server, kubectl, documents(&manifest).unwrap())
}

async fn helm_async(args: &[&str]) -> (bool, String) {
    run(&helm_path().unwrap(), args).await
}

async fn nothing(_: &ControlPlane, _: &Kubectl) {}

/// Names of the objects of `kind` in namespace `ns` (all namespaces' for
/// cluster-scoped kinds when `ns` is empty).
async fn names(kubectl: &Kubectl, kind: &str, ns: &str) -> Vec<String> {
    let mut args = vec!["get", kind, "-o", "name"];
    if !ns.is_empty() {
        args.extend(["-n", ns]);
    }
    kubectl
        .run_ok(&args)
        .await
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_default_profile_installs_with_ready_pods() {
    let p = profile("default");
    let (_server, kubectl, docs) =
        install_profile("capstan", "capstan", &chart(), &p.values, nothing).await;
    check_profile("default", &docs);
    let crds = names(&kubectl, "crd", "").await;
    assert!(
        crds.contains(
            &"customresourcedefinition.apiextensions.k8s.io/caissuers.capstan.dev".to_owned()
        ),
        "{crds:?}"
    );
}

#[tokio::test]
async fn the_openshift_profile_installs_with_ready_pods_and_no_fixed_uid() {
    let p = profile("openshift");
    let (_server, kubectl, docs) =
        install_profile("capstan", "capstan", &chart(), &p.values, nothing).await;
    check_profile("openshift", &docs);
    // What kube-apiserver stored (after admission and defaulting) fixes no UID.
    let pods = documents(
        &kubectl
            .run_ok(&["get", "pods", "-n", "capstan", "-o", "yaml"])
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(run_as_user_anywhere(&pods), Vec::<String>::new());
}

#[tokio::test]
async fn the_ha_profile_installs_two_ready_replicas_behind_a_disruption_budget() {
    let p = profile("ha");
    let (_server, kubectl, docs) =
        install_profile("capstan", "capstan", &chart(), &p.values, nothing).await;
    check_profile("ha", &docs);
    for component in ["issuer", "rotator"] {
        let pdb: serde_json::Value = serde_json::from_str(
            &kubectl
                .run_ok(&[
                    "get",
                    "pdb",
                    &format!("capstan-{component}"),
                    "-n",
                    "capstan",
                    "-o",
                    "json",
                ])
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(pdb["spec"]["minAvailable"], 1);
        // The budget's selector picks exactly the component's two pods.
        let selector = pdb["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
            .collect::<Vec<_>>()
            .join(",");
        let pods = names(&kubectl, "pods", "capstan").await;
        let selected = kubectl
            .run_ok(&[
                "get", "pods", "-n", "capstan", "-l", &selector, "-o", "name",
            ])
            .await
            .unwrap();
        assert_eq!(selected.lines().count(), 2, "{selector}: {pods:?}");
    }
}

#[tokio::test]
async fn the_minimal_profile_installs_beside_crds_managed_outside_helm() {
    let p = profile("minimal");
    let (_server, kubectl, docs) = install_profile(
        "capstan",
        "capstan",
        &chart(),
        &p.values,
        async |server: &ControlPlane, _: &Kubectl| {
            // The CRDs come from elsewhere (crds.enabled=false).
            server
                .apply_crd_dir(&chart().join("files/crds"))
                .await
                .unwrap();
        },
    )
    .await;
    check_profile("minimal", &docs);
    assert!(names(&kubectl, "services", "capstan").await.is_empty());
    let roles = names(&kubectl, "clusterroles", "").await;
    assert!(roles.contains(&"clusterrole.rbac.authorization.k8s.io/capstan-issuer".to_owned()));
    assert!(
        !roles.iter().any(|r| r.ends_with("capstan-issuer:approve")),
        "{roles:?}"
    );
}

#[tokio::test]
async fn the_subchart_profile_installs_from_a_parent_chart_with_its_globals() {
    let dir = tempfile::tempdir().unwrap();
    let parent = parent_chart(dir.path(), &profile("subchart").parsed().unwrap()).unwrap();
    let values = parent.join("values.yaml");
    let (_server, kubectl, docs) = install_profile(
        "platform",
        "platform",
        &parent,
        &values,
        async |_: &ControlPlane, kubectl: &Kubectl| {
            // The platform's system pool (global.nodeSelector).
            kubectl
                .run_ok(&[
                    "label",
                    "node",
                    "kwok-node-0",
                    "platform.example.com/pool=system",
                ])
                .await
                .unwrap();
        },
    )
    .await;
    check_subchart(&docs, "platform-capstan");
    // In the cluster: the labelled objects are the release's, and the pods
    // got the parent's PriorityClass from admission.
    let labelled = kubectl
        .run_ok(&[
            "get",
            "deployments",
            "-n",
            "platform",
            "-l",
            "platform.example.com/stack=monitoring,platform.example.com/owner=sre",
            "-o",
            "name",
        ])
        .await
        .unwrap();
    assert_eq!(labelled.lines().count(), 2, "{labelled}");
    let priorities = kubectl
        .run_ok(&[
            "get",
            "pods",
            "-n",
            "platform",
            "-o",
            "jsonpath={range .items[*]}{.spec.priority}{\"\\n\"}{end}",
        ])
        .await
        .unwrap();
    let priorities: Vec<&str> = priorities.lines().collect();
    assert_eq!(priorities, ["1000000", "1000000"]);
    let leases = names(&kubectl, "roles", "kube-system").await;
    assert!(
        leases
            .iter()
            .any(|r| r.ends_with("platform-capstan-issuer:leader-election")),
        "{leases:?}"
    );
}

#[test]
fn the_namespace_value_moves_every_namespaced_object() {
    // cert-manager's `namespace`, for a parent chart that installs capstan
    // outside its own release namespace.
    let docs = render(&["namespace=platform-system", "defaultIssuer.enabled=true"]);
    let mut namespaced = 0;
    for doc in &docs {
        if let Some(ns) = doc["metadata"].get("namespace") {
            assert_eq!(ns, "platform-system", "{doc:?}");
            namespaced += 1;
        }
        for subject in doc["subjects"].as_sequence().into_iter().flatten() {
            if subject["name"] != "cert-manager" {
                assert_eq!(subject["namespace"], "platform-system", "{doc:?}");
            }
        }
    }
    // Deployment, ConfigMap, ServiceAccount, Service per component, and
    // the two leader-election Roles and RoleBindings.
    assert_eq!(namespaced, 12);
    for component in ["issuer", "rotator"] {
        let config = config(&docs, component);
        assert_eq!(config["clusterResourceNamespace"], "platform-system");
        assert_eq!(config["leaderElection"]["namespace"], "platform-system");
    }
}

#[test]
fn a_disruption_budget_that_blocks_drains_is_warned_about() {
    let notes = |sets: &[&str]| {
        let chart = chart();
        let mut args = vec![
            "install",
            "--dry-run=client",
            "capstan",
            chart.to_str().unwrap(),
            "--namespace",
            "capstan",
        ];
        for s in sets {
            args.extend(["--set", s]);
        }
        let (ok, out) = helm(&args);
        assert!(ok, "{out}");
        out
    };
    let one = notes(&["issuer.podDisruptionBudget.enabled=true"]);
    assert!(
        one.contains("WARNING: issuer.podDisruptionBudget keeps 1 of 1 replica(s)"),
        "{one}"
    );
    let two = notes(&[
        "issuer.podDisruptionBudget.enabled=true",
        "issuer.replicaCount=2",
    ]);
    assert!(!two.contains("WARNING"), "{two}");
    let unavailable = notes(&[
        "rotator.podDisruptionBudget.enabled=true",
        "rotator.podDisruptionBudget.maxUnavailable=1",
    ]);
    assert!(!unavailable.contains("WARNING"), "{unavailable}");
}
