//! The chart's RBAC is exactly what the code uses, judged by a real
//! kube-apiserver, and nothing leaks a private key.
//!
//! A real control plane of its own (etcd, kube-apiserver with RBAC,
//! kube-controller-manager, kube-scheduler and kwok, so the rolled
//! Deployment's pods become Ready) gets the chart's ServiceAccounts,
//! ClusterRoles, Roles and bindings, rendered by `helm template`. The issuer
//! and rotator run out of cluster with the chart's config files and their
//! ServiceAccounts' tokens from the TokenRequest API (as `kubectl create
//! token` gets them), so kube-apiserver's RBAC authorizer and its
//! CertificateSigning admission judge every call, through a scenario that
//! exercises every feature: self-managed and user-provided CAs,
//! CertificateRequests, Kubernetes CSRs for both signer kinds, a CA
//! rotation, bundle injection (including a refused private-key source), a
//! `CABundle` that creates and deletes targets, and a restart. Then, from
//! kube-apiserver's audit log:
//! * no call was refused (the roles grant all the code needs);
//! * every granted verb on every resource was used (the roles grant
//!   nothing more), except the few listed with their reason;
//! * the `sign` grant on `certificates.k8s.io` signers covers exactly the
//!   signer names whose CSRs the issuer signed (CertificateSigning
//!   admission checks it on every write of `status.certificate`), and the
//!   approver's `approve` grant on `cert-manager.io` signers lets
//!   cert-manager approve exactly capstan's requests, asked with the
//!   SubjectAccessReviews cert-manager's webhook makes;
//! * no ConfigMap, Event, status, log line or metric holds private-key
//!   material, neither PEM headers nor any line of the CA keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine as _;
use capstan_tests::cluster::{self, request_condition_args, request_condition_patch, start_binary};
use capstan_tests::controlplane::ControlPlane;
use capstan_tests::harness::{Kubectl, RunningBinary, await_condition, rendered_chart};
use capstan_tests::hygiene::assert_no_key_leaks;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::Api;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(200);
const ISSUER: &str = "system:serviceaccount:capstan:capstan-issuer";
const ROTATOR: &str = "system:serviceaccount:capstan:capstan-rotator";

/// Granted but not used by this scenario: (verb, group, resource, why).
/// `*` matches any group or resource.
const UNUSED_ON_PURPOSE: &[(&str, &str, &str, &str)] = &[
    (
        "get",
        "*",
        "*",
        "reads go through watches; a get happens only after a conflict or restart",
    ),
    (
        "patch",
        "apps",
        "statefulsets",
        "the scenario rolls a Deployment; StatefulSets take the same code path",
    ),
    (
        "patch",
        "apps",
        "daemonsets",
        "the scenario rolls a Deployment; DaemonSets take the same code path",
    ),
];

/// cert-manager's controller, whose approver the chart lets approve
/// capstan's requests.
const CERT_MANAGER: &str = "system:serviceaccount:cert-manager:cert-manager";

/// The kinds of the chart's RBAC: all this suite applies of it.
const RBAC_KINDS: &[&str] = &[
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
];

struct Env {
    cp: ControlPlane,
    admin: Kubectl,
    dir: tempfile::TempDir,
}

impl Env {
    async fn apply(&self, yaml: &str) {
        let out = self.admin.stdin("apply", yaml).await;
        assert!(out.success(), "kubectl apply:\n{}\n{yaml}", out.stderr);
    }

    async fn json(&self, args: &[&str]) -> Option<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.admin.run(&all).await.ok()?;
        out.success()
            .then(|| serde_json::from_str(&out.stdout).ok())
            .flatten()
    }

    async fn condition(&self, args: &[&str], type_: &str, status: &str) -> Value {
        self.admin
            .wait_condition(args, type_, status, WAIT, POLL)
            .await
            .unwrap_or_else(|e| panic!("{e}\nrefused so far: {:#?}", self.refused()))
    }

    /// Calls of the components kube-apiserver refused (RBAC or admission).
    fn refused(&self) -> Vec<String> {
        self.cp
            .request_log()
            .iter()
            .filter(|r| (r.user == ISSUER || r.user == ROTATOR) && r.code == 403)
            .map(|r| {
                format!(
                    "{} {} {}/{} {} {}/{}",
                    r.user, r.verb, r.group, r.resource, r.subresource, r.namespace, r.name
                )
            })
            .collect()
    }

    async fn event(&self, namespace: &str, reason: &str) {
        await_condition(&format!("event {reason}"), WAIT, POLL, || async {
            let events = self.json(&["get", "events", "-n", namespace]).await?;
            events["items"]
                .as_array()?
                .iter()
                .any(|e| e["reason"] == reason)
                .then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\nrefused so far: {:#?}", self.refused()));
    }

    /// Starts `binary` out of cluster as ServiceAccount `capstan/<binary>`
    /// with a token from the TokenRequest API and the chart's config file
    /// for `component`, then `args`.
    async fn start(
        &self,
        chart: &str,
        binary: &str,
        component: &str,
        args: &[&str],
    ) -> RunningBinary {
        let token = self
            .cp
            .service_account_token("capstan", binary, &[])
            .await
            .unwrap();
        let path = self
            .cp
            .token_kubeconfig_at(&self.cp.url(), self.dir.path(), binary, &token)
            .unwrap();
        let config = self.dir.path().join(format!("{component}-config.yaml"));
        std::fs::write(&config, chart_config(chart, component)).unwrap();
        let mut all = vec!["--config", config.to_str().unwrap()];
        all.extend_from_slice(args);
        start_binary(
            binary,
            &path,
            &all,
            &[
                ("POD_NAMESPACE", "capstan"),
                ("POD_NAME", binary),
                (
                    "RUST_LOG",
                    "debug,kube=info,hyper=info,tower=info,rustls=info",
                ),
            ],
        )
        .unwrap()
    }

    /// Whether kube-apiserver's authorizer lets ServiceAccount `user` (in
    /// its groups) `verb` the `group/signers` named `name`.
    async fn may_on_signer(&self, user: &str, verb: &str, group: &str, name: &str) -> bool {
        let namespace = user.split(':').nth(2).unwrap();
        let sa_group = format!("system:serviceaccounts:{namespace}");
        let groups = [
            "system:serviceaccounts",
            sa_group.as_str(),
            "system:authenticated",
        ];
        cluster::may_on_signer(
            self.cp.client().await.unwrap(),
            user,
            &groups,
            verb,
            group,
            name,
        )
        .await
        .unwrap()
    }
}

/// The chart's documents.
fn documents(chart: &str) -> Vec<serde_norway::Value> {
    use serde::Deserialize as _;
    serde_norway::Deserializer::from_str(chart)
        .map(|d| serde_norway::Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// The chart's ServiceAccounts, roles and bindings, as one YAML stream.
fn rbac_manifests(chart: &str) -> String {
    let docs: Vec<String> = documents(chart)
        .into_iter()
        .filter(|d| d["kind"].as_str().is_some_and(|k| RBAC_KINDS.contains(&k)))
        .map(|d| serde_norway::to_string(&d).unwrap())
        .collect();
    assert!(docs.len() >= 8, "the chart's RBAC: {docs:#?}");
    docs.join("---\n")
}

/// The `config.yaml` of the chart's ConfigMap for `component`, which its
/// Deployment mounts and passes as `--config`.
fn chart_config(chart: &str, component: &str) -> String {
    let name = format!("capstan-{component}-config");
    documents(chart)
        .into_iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"].as_str() == Some(&name))
        .and_then(|d| d["data"]["config.yaml"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("the chart has no ConfigMap {name}"))
}

/// The rules of the chart's ClusterRoles and Roles bound to ServiceAccount
/// `service_account`.
fn bound_rules(chart: &str, service_account: &str) -> Vec<serde_norway::Value> {
    let docs = documents(chart);
    let bound: BTreeSet<String> = docs
        .iter()
        .filter(|d| {
            matches!(
                d["kind"].as_str(),
                Some("ClusterRoleBinding" | "RoleBinding")
            )
        })
        .filter(|d| {
            d["subjects"]
                .as_sequence()
                .is_some_and(|s| s.iter().any(|s| s["name"] == service_account))
        })
        .map(|d| d["roleRef"]["name"].as_str().unwrap().to_owned())
        .collect();
    docs.iter()
        .filter(|d| {
            matches!(d["kind"].as_str(), Some("ClusterRole" | "Role"))
                && bound.contains(d["metadata"]["name"].as_str().unwrap())
        })
        .flat_map(|role| role["rules"].as_sequence().unwrap().clone())
        .collect()
}

/// The strings of list `key` of an RBAC rule.
fn rule_list(rule: &serde_norway::Value, key: &str) -> Vec<String> {
    rule[key]
        .as_sequence()
        .map(|s| s.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// (verb, group, resource[/subresource]) granted to a ServiceAccount by the
/// chart's ClusterRoles and Roles bound to it.
fn granted(chart: &str, service_account: &str) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in bound_rules(chart, service_account) {
        for group in rule_list(&rule, "apiGroups") {
            for resource in rule_list(&rule, "resources") {
                for verb in rule_list(&rule, "verbs") {
                    out.insert((verb, group.clone(), resource.clone()));
                }
            }
        }
    }
    out
}

/// The resourceNames the chart grants `verb` on `group/signers` with to
/// ServiceAccount `service_account` (signers are only ever granted by name).
fn granted_signers(chart: &str, service_account: &str, verb: &str, group: &str) -> Vec<String> {
    let mut names = Vec::new();
    for rule in bound_rules(chart, service_account) {
        if rule_list(&rule, "apiGroups").iter().any(|g| g == group)
            && rule_list(&rule, "resources").iter().any(|r| r == "signers")
            && rule_list(&rule, "verbs").iter().any(|v| v == verb)
        {
            let named = rule_list(&rule, "resourceNames");
            assert!(
                !named.is_empty(),
                "{verb} on every {group} signer: {rule:?}"
            );
            names.extend(named);
        }
    }
    names
}

/// Whether RBAC resourceName `granted` covers `signer` the way
/// kube-apiserver's certificate admission and cert-manager's webhook look
/// it up: the name itself, or its domain's `<domain>/*`.
fn covers(granted: &str, signer: &str) -> bool {
    granted == signer
        || granted
            .strip_suffix("/*")
            .is_some_and(|domain| signer.split_once('/').is_some_and(|(d, _)| d == domain))
}

/// (verb, group, resource[/subresource]) a user called, from kube-apiserver's
/// audit log.
fn used(cp: &ControlPlane, user: &str) -> BTreeSet<(String, String, String)> {
    cp.request_log()
        .into_iter()
        .filter(|r| r.user == user && !r.resource.is_empty())
        .map(|r| {
            let resource = if r.subresource.is_empty() {
                r.resource.clone()
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            (r.verb.clone(), r.group.clone(), resource)
        })
        .collect()
}

fn user_ca_secret() -> (String, String) {
    let now = time::OffsetDateTime::now_utc();
    let ca = capstan_pki::generate_ca(
        &capstan_pki::CaSpec {
            common_name: "team CA".into(),
            organization: None,
            algorithm: capstan_pki::KeyAlgorithm::EcdsaP256,
            lifetime: Duration::from_secs(24 * 3600),
        },
        now,
    )
    .unwrap();
    (ca.cert_pem, ca.key.expose().to_owned())
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn csr_pem() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["app.monitoring.svc".to_owned()]).unwrap();
    (
        params.serialize_request(&key).unwrap().pem().unwrap(),
        key.serialize_pem(),
    )
}

#[tokio::test]
async fn the_chart_grants_exactly_what_the_code_uses_and_no_key_leaks() {
    // With workloads: the rolled Deployment's pods must become Ready for
    // its RolloutCompleted.
    let cp = ControlPlane::start().await.unwrap();
    let admin = Kubectl::for_server(&cp).unwrap();
    let env = Env {
        cp,
        admin,
        dir: tempfile::tempdir().unwrap(),
    };
    env.admin.apply_crds(true).await.unwrap();
    env.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: capstan\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: monitoring\n")
        .await;
    let chart = rendered_chart().unwrap();
    env.apply(&rbac_manifests(&chart)).await;

    let issuer = env.start(&chart, "capstan-issuer", "issuer", &[]).await;
    let rotator = env
        .start(
            &chart,
            "capstan-rotator",
            "rotator",
            &["--restart-debounce=1s"],
        )
        .await;

    // Issuers: self-managed (cluster) and user-provided (namespaced).
    env.apply("apiVersion: capstan.dev/v1alpha1\nkind: ClusterCAIssuer\nmetadata:\n  name: monitoring-ca\nspec:\n  maxDuration: 1h\n  selfManaged:\n    secretName: monitoring-ca\n    duration: 2h\n    rotateBefore: 30m\n    propagationDelay: 2s\n").await;
    let (team_crt, team_key) = user_ca_secret();
    env.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: team-ca\n  namespace: monitoring\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n---\napiVersion: capstan.dev/v1alpha1\nkind: CAIssuer\nmetadata:\n  name: team\n  namespace: monitoring\nspec:\n  ca:\n    secretName: team-ca\n",
        b64(&team_crt),
        b64(&team_key)
    ))
    .await;
    env.condition(&["clustercaissuer", "monitoring-ca"], "Ready", "True")
        .await;
    env.condition(&["caissuer", "team", "-n", "monitoring"], "Ready", "True")
        .await;

    // CertificateRequests for both, approved as cert-manager's approver
    // does (the test stands in for it; cert-manager's webhook would check
    // the approver's `approve` grant, asked below as it asks).
    let mut leaf_keys = Vec::new();
    let mut approvals = Vec::new();
    for (name, kind, issuer_name) in [
        ("app-cluster", "ClusterCAIssuer", "monitoring-ca"),
        ("app-team", "CAIssuer", "team"),
    ] {
        let (csr, key) = csr_pem();
        leaf_keys.push(key);
        env.apply(&format!(
            "apiVersion: cert-manager.io/v1\nkind: CertificateRequest\nmetadata:\n  name: {name}\n  namespace: monitoring\nspec:\n  request: {}\n  issuerRef:\n    group: capstan.dev\n    kind: {kind}\n    name: {issuer_name}\n",
            b64(&csr)
        ))
        .await;
        let approve = request_condition_patch("Approved", "approved");
        let out = env
            .admin
            .run(&request_condition_args("monitoring", name, &approve))
            .await
            .unwrap();
        assert!(out.success(), "{}", out.stderr);
        env.condition(
            &["certificaterequest", name, "-n", "monitoring"],
            "Ready",
            "True",
        )
        .await;
        // cert-manager's signer names for the request's issuer: the
        // resource's domain wildcard and the issuer itself.
        let domain = match kind {
            "ClusterCAIssuer" => "clustercaissuers.capstan.dev",
            _ => "caissuers.capstan.dev",
        };
        let exact = match kind {
            "ClusterCAIssuer" => format!("{domain}/{issuer_name}"),
            _ => format!("{domain}/monitoring.{issuer_name}"),
        };
        approvals.push((name, [format!("{domain}/*"), exact]));
    }

    // Kubernetes CSRs for both signer kinds, approved by the admin:
    // kube-apiserver's CertificateSigning admission lets the issuer write
    // status.certificate only with `sign` on the signer name.
    let mut csr_names = Vec::new();
    for (name, signer) in [
        ("app-csr", "clustercaissuers.capstan.dev/monitoring-ca"),
        ("app-team-csr", "caissuers.capstan.dev/monitoring.team"),
    ] {
        let (csr, key) = csr_pem();
        leaf_keys.push(key);
        env.apply(&format!(
            "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  request: {}\n  signerName: {signer}\n  usages: [digital signature, server auth]\n",
            b64(&csr)
        ))
        .await;
        env.admin
            .run_ok(&["certificate", "approve", name])
            .await
            .unwrap();
        await_condition(&format!("{name}'s certificate"), WAIT, POLL, || async {
            let csr = env.json(&["get", "csr", name]).await?;
            csr["status"]["certificate"].as_str().map(|_| ())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\nrefused so far: {:#?}", env.refused()));
        csr_names.push(name);
    }

    // Bundles: an injected ConfigMap, a refused private-key source, and a
    // CABundle whose selected namespace comes and goes.
    env.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: scrape-ca\n  namespace: monitoring\n  annotations:\n    capstan.dev/inject-ca-from-issuer: monitoring-ca\n").await;
    env.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: careless\n  namespace: monitoring\ndata:\n  ca.crt: {}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: careless-ca\n  namespace: monitoring\n  annotations:\n    capstan.dev/inject-ca-from: monitoring/careless\n",
        b64(&format!("{team_crt}{team_key}"))
    ))
    .await;
    env.apply("apiVersion: capstan.dev/v1alpha1\nkind: CABundle\nmetadata:\n  name: corp\nspec:\n  sources:\n  - secret: {namespace: monitoring, name: team-ca, key: tls.crt}\n  target:\n    configMap: corp-ca\n  namespaceSelector:\n    matchLabels: {corp-ca: \"yes\"}\n").await;
    env.admin
        .run_ok(&["label", "namespace", "monitoring", "corp-ca=yes"])
        .await
        .unwrap();
    await_condition("the CABundle target", WAIT, POLL, || async {
        env.json(&["get", "configmap", "corp-ca", "-n", "monitoring"])
            .await
            .map(|_| ())
    })
    .await
    .unwrap();
    env.admin
        .run_ok(&["label", "namespace", "monitoring", "corp-ca-"])
        .await
        .unwrap();
    await_condition("the CABundle target to go", WAIT, POLL, || async {
        env.json(&["get", "configmap", "corp-ca", "-n", "monitoring"])
            .await
            .is_none()
            .then_some(())
    })
    .await
    .unwrap();

    // A restart, then a CA rotation that reaches the injected ConfigMap.
    env.apply("apiVersion: v1\nkind: Secret\nmetadata:\n  name: app-config\n  namespace: monitoring\nstringData:\n  level: info\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\n  namespace: monitoring\n  annotations:\n    capstan.dev/restart-on-change: \"true\"\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: app}\n  template:\n    metadata:\n      labels: {app: app}\n    spec:\n      containers:\n      - name: app\n        image: registry.k8s.io/pause:3.10\n        envFrom:\n        - secretRef: {name: app-config}\n").await;
    // Change only once the rotator knows the content (it says so once).
    rotator
        .wait_for_log(WAIT, |l| {
            l.contains("watching the sources of Deployment/app") && l.contains("Secret/app-config")
        })
        .await
        .unwrap();
    env.apply("apiVersion: v1\nkind: Secret\nmetadata:\n  name: app-config\n  namespace: monitoring\nstringData:\n  level: debug\n").await;
    env.event("monitoring", "RolloutCompleted").await;
    env.admin.rotate("monitoring-ca", "drill-1").await.unwrap();
    env.event("default", "CARotated").await;
    env.event("monitoring", "ConfigMapUpdated").await;

    // 1. Nothing was refused, by RBAC or by admission.
    let refused = env.refused();
    assert!(refused.is_empty(), "the chart's RBAC refused: {refused:#?}");

    // 2. Everything granted was used, as the audit log tells.
    let mut overgranted = Vec::new();
    for (user, service_account) in [(ISSUER, "capstan-issuer"), (ROTATOR, "capstan-rotator")] {
        let granted = granted(&chart, service_account);
        let used = used(&env.cp, user);
        println!("{service_account}: granted {granted:?}\n  used {used:?}");
        let unused: Vec<_> = granted
            .iter()
            .filter(|g| !used.contains(g))
            .filter(|(verb, group, resource)| {
                // The issuer's `sign` is used by admission, not by a call
                // of its own: judged in 3.
                let signing = verb == "sign"
                    && resource == "signers"
                    && group == "certificates.k8s.io"
                    && user == ISSUER;
                let exempt = UNUSED_ON_PURPOSE.iter().any(|(v, g, r, _)| {
                    v == verb && (*g == "*" || g == group) && (*r == "*" || r == resource)
                });
                !signing && !exempt
            })
            .collect();
        overgranted.extend(
            unused
                .into_iter()
                .map(|u| format!("{service_account}: {u:?}")),
        );
    }
    assert!(
        overgranted.is_empty(),
        "granted more than used: {overgranted:#?}"
    );

    // 3. The issuer's `sign` names: each covers a signer whose CSR the
    // issuer wrote a certificate to (with a 2xx, so admission allowed it),
    // and every such signer is covered.
    let csrs: Api<CertificateSigningRequest> = Api::all(env.cp.client().await.unwrap());
    let written: BTreeSet<String> = env
        .cp
        .request_log()
        .into_iter()
        .filter(|r| {
            r.user == ISSUER
                && r.resource == "certificatesigningrequests"
                && r.subresource == "status"
                && matches!(r.verb.as_str(), "patch" | "update")
                && (200..300).contains(&r.code)
        })
        .map(|r| r.name)
        .collect();
    let mut signed = BTreeSet::new();
    for name in &csr_names {
        assert!(
            written.contains(*name),
            "the issuer wrote {name}'s status: {written:?}"
        );
        let csr = csrs.get(name).await.unwrap();
        assert!(csr.status.and_then(|s| s.certificate).is_some(), "{name}");
        signed.insert(csr.spec.signer_name);
    }
    let sign = granted_signers(&chart, "capstan-issuer", "sign", "certificates.k8s.io");
    println!("capstan-issuer: sign {sign:?}, signed for {signed:?}");
    for name in &sign {
        assert!(
            signed.iter().any(|s| covers(name, s)),
            "sign granted on {name}, which no signed CSR needed ({signed:?})"
        );
    }
    for signer in &signed {
        assert!(
            sign.iter().any(|g| covers(g, signer)),
            "{signer} signed without a grant"
        );
        // The real authorizer agrees, and nothing wider is granted.
        assert!(
            env.may_on_signer(ISSUER, "sign", "certificates.k8s.io", signer)
                .await
                || env
                    .may_on_signer(
                        ISSUER,
                        "sign",
                        "certificates.k8s.io",
                        &format!("{}/*", signer.split_once('/').unwrap().0),
                    )
                    .await
        );
    }
    for (verb, foreign) in [
        ("sign", "kubernetes.io/kube-apiserver-client"),
        ("sign", "issuers.cert-manager.io/*"),
        ("approve", "clustercaissuers.capstan.dev/*"),
    ] {
        assert!(
            !env.may_on_signer(ISSUER, verb, "certificates.k8s.io", foreign)
                .await,
            "the issuer may {verb} {foreign}"
        );
    }

    // 4. The approver's `approve` names: cert-manager's webhook lets
    // cert-manager approve a request when a SubjectAccessReview allows
    // `approve` on cert-manager.io signers for any of the request's signer
    // names. Each of capstan's requests passes, each granted name is needed
    // by one, and nothing else is granted.
    let approve = granted_signers(&chart, "cert-manager", "approve", "cert-manager.io");
    println!("cert-manager: approve {approve:?}");
    for (request, names) in &approvals {
        let mut allowed = false;
        for name in names {
            allowed |= env
                .may_on_signer(CERT_MANAGER, "approve", "cert-manager.io", name)
                .await;
        }
        assert!(allowed, "cert-manager may not approve {request}: {names:?}");
    }
    for name in &approve {
        assert!(
            approvals.iter().any(|(_, names)| names.contains(name)),
            "approve granted on {name}, which no request needed"
        );
    }
    assert_eq!(
        granted(&chart, "cert-manager"),
        BTreeSet::from([(
            "approve".to_owned(),
            "cert-manager.io".to_owned(),
            "signers".to_owned()
        )]),
        "cert-manager is granted only approval"
    );
    for foreign in [
        "issuers.cert-manager.io/*",
        "clusterissuers.cert-manager.io/*",
    ] {
        assert!(
            !env.may_on_signer(CERT_MANAGER, "approve", "cert-manager.io", foreign)
                .await,
            "cert-manager may approve {foreign} through capstan's chart"
        );
    }

    // 5. No private key anywhere but Secrets: the CA keys the Secrets hold,
    // the user CA's key and the leaf keys this test made.
    for binary in [&issuer, &rotator] {
        assert!(binary.metrics_text().await.is_some(), "metrics are scanned");
    }
    let mut keys: Vec<String> = vec![team_key];
    keys.extend(leaf_keys);
    let scanned = assert_no_key_leaks(&env.admin, &[&issuer, &rotator], &keys).await;
    assert!(scanned.keys >= 7, "the CA keys and ours: {scanned:?}");
    println!(
        "scanned {} bytes of ConfigMaps, Events, statuses, logs and metrics for {} private keys",
        scanned.bytes, scanned.keys
    );
}
