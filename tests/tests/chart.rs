//! The Helm chart (charts/capstan), checked with the real `helm` and
//! `kubernetes-validate`: lint, render for each mode, validate, and check
//! that each value changes what it must. Then a real `helm install` into the
//! test API server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use capstan_tests::apiserver::TestApiServer;
use capstan_tests::harness::{Kubectl, helm_path, workspace_root};
use serde_yaml::Value;

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

/// Renders the chart with `--set` values; returns the documents.
fn render(sets: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec![
        "template",
        "capstan",
        chart.to_str().unwrap(),
        "--namespace",
        "capstan",
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    let (ok, text) = helm(&args);
    assert!(ok, "helm template {sets:?}:\n{text}");
    validate(&text, sets);
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize as _;

/// kubernetes-validate (strict, Kubernetes 1.34) over rendered YAML; CRD-based
/// kinds (monitors, rules, issuers) have no schema there and are checked by
/// the assertions instead.
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

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
}

fn kinds<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

/// The config file a component's ConfigMap carries.
fn config(docs: &[Value], component: &str) -> Value {
    let cm = find(docs, "ConfigMap", &format!("capstan-{component}-config")).unwrap();
    serde_yaml::from_str(cm["data"]["config.yaml"].as_str().unwrap()).unwrap()
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
fn values_change_what_they_must() {
    let docs = render(&[
        "issuer.replicaCount=2",
        "issuer.resources.limits.memory=512Mi",
        "crds.enabled=false",
        "defaultIssuer.enabled=true",
        "rotator.enabled=false",
        "leaderElection.namespace=kube-system",
    ]);
    assert!(kinds(&docs, "CustomResourceDefinition").is_empty());
    let issuer = find(&docs, "Deployment", "capstan-issuer").unwrap();
    assert_eq!(issuer["spec"]["replicas"], 2);
    assert_eq!(
        issuer["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"],
        "512Mi"
    );
    assert!(find(&docs, "Deployment", "capstan-rotator").is_none());
    let default = find(&docs, "ClusterCAIssuer", "monitoring-ca").unwrap();
    assert_eq!(
        default["spec"]["selfManaged"]["secretName"],
        "monitoring-ca"
    );
    let role = find(&docs, "Role", "capstan-issuer:leader-election").unwrap();
    assert_eq!(role["metadata"]["namespace"], "kube-system");
    assert_eq!(
        config(&docs, "issuer")["leaderElection"]["namespace"],
        "kube-system"
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
fn dynamic_tls_grants_the_secret_writes_it_needs() {
    let docs = render(&[
        "rotator.config.metricsTLSConfig.dynamic.secretNamespace=capstan",
        "rotator.config.metricsTLSConfig.dynamic.secretName=capstan-metrics-ca",
        "rotator.config.metricsTLSConfig.dynamic.dnsNames={capstan-rotator.capstan.svc}",
        "prometheus.podmonitor.enabled=true",
    ]);
    let config = config(&docs, "rotator");
    assert_eq!(
        config["metricsTLSConfig"]["dynamic"]["dnsNames"][0],
        "capstan-rotator.capstan.svc"
    );
    let role = find(&docs, "Role", "capstan-rotator:dynamic-serving").unwrap();
    assert_eq!(role["metadata"]["namespace"], "capstan");
    assert_eq!(role["rules"][0]["resources"][0], "secrets");
    let monitor = find(&docs, "PodMonitor", "capstan-rotator").unwrap();
    assert_eq!(monitor["spec"]["podMetricsEndpoints"][0]["scheme"], "https");
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
        "rotator"
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
    let delegator = find(&docs, "ClusterRoleBinding", "capstan-issuer:auth-delegator").unwrap();
    assert_eq!(delegator["roleRef"]["name"], "system:auth-delegator");
    let endpoint =
        &find(&docs, "ServiceMonitor", "capstan-issuer").unwrap()["spec"]["endpoints"][0];
    assert_eq!(
        endpoint["bearerTokenFile"],
        "/var/run/secrets/kubernetes.io/serviceaccount/token"
    );

    let docs = render(&[
        "issuer.config.metricsTLSConfig.filesystem.certFile=/tls/tls.crt",
        "issuer.config.metricsTLSConfig.filesystem.keyFile=/tls/tls.key",
        "issuer.config.metricsAuth.tokenReview=true",
        "prometheus.authorization.type=secret",
        "prometheus.authorization.secretName=prometheus-token",
        "prometheus.servicemonitor.enabled=true",
    ]);
    let endpoint =
        &find(&docs, "ServiceMonitor", "capstan-issuer").unwrap()["spec"]["endpoints"][0];
    assert_eq!(endpoint["authorization"]["type"], "Bearer");
    assert_eq!(
        endpoint["authorization"]["credentials"]["name"],
        "prometheus-token"
    );
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
    let (ok, text) = helm(&[
        "template",
        "capstan",
        chart().to_str().unwrap(),
        "--set",
        "issuer.config.metricsTLSconfig.dynamic.secretName=x",
    ]);
    assert!(!ok);
    assert!(text.contains("metricsTLSconfig"), "{text}");
}

#[tokio::test]
async fn helm_installs_the_chart_into_the_api_server() {
    let server = TestApiServer::builder()
        .rollout_delay(Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    let kubectl = Kubectl::for_server(&server).unwrap();
    let chart = chart();
    let out = tokio::process::Command::new(helm_path().unwrap())
        .args([
            "install",
            "capstan",
            chart.to_str().unwrap(),
            "--namespace",
            "capstan",
            "--create-namespace",
            "--wait",
            "--timeout",
            "120s",
            "--kubeconfig",
        ])
        .arg(server.kubeconfig_path())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "helm install:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
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
}
