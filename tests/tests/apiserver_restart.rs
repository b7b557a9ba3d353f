//! End to end on the real control plane: kube-apiserver and etcd go away
//! and come back (same ports, same data), and both controllers carry on
//! without being restarted.
//!
//! The real `capstan-issuer` and `capstan-rotator` run against their own
//! control plane (etcd and kube-apiserver 1.35 with kube-controller-manager).
//! Before the outages the issuer signs a request and the rotator fills an
//! annotated ConfigMap; then the kube-apiserver process is SIGKILLed and
//! started again, and later the etcd process likewise (kube-apiserver stays
//! up and answers errors meanwhile); after each outage new work — a new
//! request, a new annotated ConfigMap, a rotated source Secret — must be
//! handled by the same two processes (same PIDs, still running). Each
//! process is down twice: 3 s (within the 15 s leader-election lease) and
//! 20 s (past it).
//!
//! A second test runs the controllers as ServiceAccounts whose requests
//! kube-apiserver's API priority and fairness puts in a priority level of
//! one seat that rejects what it cannot serve (tiny `--max-requests-inflight`
//! limits, `limitResponse: Reject`): real 429s, most of all when every watch
//! relists after a kube-apiserver restart. The work must still be finished,
//! and the audit log must show the 429s they got.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use base64::Engine;
use capstan_tests::cluster::{
    MASTERS, p256_ca, p256_csr, request_condition_args, request_condition_patch, start_binary,
    start_issuer, user_kubeconfig,
};
use capstan_tests::controlplane::ControlPlane;
use capstan_tests::harness::{Kubectl, RunningBinary, await_condition};
use capstan_tests::hygiene;
use serde_json::Value;

/// Generous: after an outage longer than a few seconds, kube-runtime's
/// default watcher backoff (up to 30 s, with jitter up to twice that) alone
/// can take a minute before a controller looks again.
const WAIT: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_millis(200);
const ISSUER_USER: &str = "system:serviceaccount:default:capstan-issuer";
const ROTATOR_USER: &str = "system:serviceaccount:default:capstan-rotator";
const BUNDLE_KEY: &str = "ca-bundle.crt";

/// The two controllers, started once and never restarted.
struct Controllers {
    issuer: RunningBinary,
    rotator: RunningBinary,
}

impl Controllers {
    fn logs(&self) -> String {
        format!(
            "issuer logs:\n{}\nrotator logs:\n{}",
            self.issuer.logs().join("\n"),
            self.rotator.logs().join("\n")
        )
    }

    /// Both still running, with the PIDs they started with.
    fn assert_same(&mut self, pids: (u32, u32)) {
        assert!(self.issuer.is_running(), "{}", self.logs());
        assert!(self.rotator.is_running(), "{}", self.logs());
        assert_eq!(self.issuer.pid(), pids.0);
        assert_eq!(self.rotator.pid(), pids.1);
    }
}

/// Starts the issuer and the rotator with kubeconfigs `issuer` and
/// `rotator`, their Leases in `default`.
fn start_controllers(issuer: &std::path::Path, rotator: &std::path::Path) -> Controllers {
    let issuer = start_issuer(issuer, "certs", "issuer-0").unwrap();
    let rotator = start_binary(
        "capstan-rotator",
        rotator,
        &["--leader-election-namespace", "default"],
        &[
            ("POD_NAMESPACE", "default"),
            ("POD_NAME", "rotator-0"),
            ("CAPSTAN_CLUSTER_RESOURCE_NAMESPACE", "certs"),
            ("RUST_LOG", "info"),
        ],
    )
    .unwrap();
    Controllers { issuer, rotator }
}

/// kubectl (as the admin) and openssl in the test's directory.
struct Tools {
    kubectl: Kubectl,
    dir: std::path::PathBuf,
}

impl Tools {
    async fn stdin(&self, verb: &str, yaml: &str) {
        let out = self.kubectl.stdin(verb, yaml).await;
        assert!(
            out.success(),
            "kubectl {verb}: {}{}",
            out.stderr,
            out.stdout
        );
    }

    async fn get_json(&self, args: &[&str]) -> Option<Value> {
        self.kubectl.get_json(args).await
    }

    /// A self-signed P-256 CA; its certificate PEM.
    fn ca(&self, name: &str) -> String {
        p256_ca(&self.dir, name)
    }

    /// A P-256 CSR for `name`, base64 for `spec.request`.
    fn csr(&self, name: &str) -> String {
        p256_csr(
            &self.dir,
            name,
            &format!("/CN={name}"),
            Some(&format!("DNS:{name}.example")),
        )
    }

    /// Creates and approves a request to the ClusterCAIssuer `monitoring-ca`.
    async fn request(&self, name: &str) {
        let csr = self.csr(name);
        self.stdin(
            "apply",
            &format!(
                "apiVersion: cert-manager.io/v1\nkind: CertificateRequest\nmetadata:\n  name: {name}\n  namespace: apps\nspec:\n  request: {csr}\n  issuerRef:\n    group: capstan.dev\n    kind: ClusterCAIssuer\n    name: monitoring-ca\n"
            ),
        )
        .await;
        let patch = request_condition_patch("Approved", "set by test");
        // The approval goes through while the controllers may still be
        // reconnecting: retry it until the server takes it.
        await_condition("the approval", WAIT, POLL, || async {
            self.kubectl
                .run(&request_condition_args("apps", name, &patch))
                .await
                .ok()
                .filter(|o| o.success())
        })
        .await
        .unwrap();
    }

    /// An annotated ConfigMap taking its bundle from Secret `certs/root-ca`.
    async fn trust_config_map(&self, name: &str) {
        self.stdin(
            "apply",
            &format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: apps\n  annotations:\n    capstan.dev/inject-ca-from: certs/root-ca\ndata:\n  app.conf: keep me\n"
            ),
        )
        .await;
    }

    /// Secret `certs/root-ca` holding `pem` as `ca.crt`.
    async fn source(&self, pem: &str) {
        let b64 = base64::engine::general_purpose::STANDARD.encode(pem);
        self.stdin(
            "apply",
            &format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: root-ca\n  namespace: certs\ndata:\n  ca.crt: {b64}\n"
            ),
        )
        .await;
    }

    /// The ClusterCAIssuer `monitoring-ca`, self-managed.
    async fn issuer(&self) {
        self.stdin(
            "apply",
            "apiVersion: capstan.dev/v1alpha1\nkind: ClusterCAIssuer\nmetadata:\n  name: monitoring-ca\nspec:\n  selfManaged:\n    secretName: monitoring-ca\n",
        )
        .await;
    }

    /// Waits for request `apps/name` to be `Ready=True/Issued`.
    async fn wait_issued(&self, name: &str, controllers: &Controllers) -> Value {
        await_condition(&format!("{name} Issued"), WAIT, POLL, || async {
            let cr = self
                .get_json(&["certificaterequest", name, "-n", "apps"])
                .await?;
            let issued = cr["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True" && c["reason"] == "Issued");
            issued.then_some(cr)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", controllers.logs()))
    }

    /// Waits for ConfigMap `apps/name` to hold exactly `certs` certificates
    /// under the bundle key (and to keep its other key).
    async fn wait_bundle(&self, name: &str, certs: usize, controllers: &Controllers) -> String {
        let what = format!("{name} holding {certs} CA(s)");
        await_condition(&what, WAIT, POLL, || async {
            let cm = self.get_json(&["configmap", name, "-n", "apps"]).await?;
            let bundle = cm["data"][BUNDLE_KEY].as_str()?.to_owned();
            let n = bundle.matches("-----BEGIN CERTIFICATE-----").count();
            (n == certs && cm["data"]["app.conf"] == "keep me").then_some(bundle)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", controllers.logs()))
    }

    /// The CRDs and the namespaces `certs` and `apps`.
    async fn prepare(&self) {
        self.kubectl.apply_crds(true).await.unwrap();
        for ns in ["certs", "apps"] {
            self.kubectl
                .run_ok(&["create", "namespace", ns])
                .await
                .unwrap();
        }
    }

    /// Fails on any private key outside Secrets: objects, both
    /// controllers' logs and metrics, besides the test's own keys.
    async fn assert_no_key_leaks(&self, controllers: &Controllers) {
        let keys = hygiene::keys_in_dir(&self.dir);
        hygiene::assert_no_key_leaks(
            &self.kubectl,
            &[&controllers.issuer, &controllers.rotator],
            &keys,
        )
        .await;
    }
}

/// What goes away.
#[derive(Debug, Clone, Copy)]
enum Outage {
    /// The kube-apiserver process: connections are refused.
    ApiServer(Duration),
    /// The etcd process: kube-apiserver stays up, fails `/readyz` and
    /// answers errors (or nothing, until its timeouts) meanwhile.
    Etcd(Duration),
}

impl Outage {
    /// Kills the process, waits out the outage, starts it again on the same
    /// ports and data, and waits until kube-apiserver is ready again.
    async fn run(self, cp: &mut ControlPlane) {
        match self {
            Outage::ApiServer(d) => {
                cp.kill_apiserver();
                // The outage itself, not a wait for anything.
                tokio::time::sleep(d).await;
                cp.start_apiserver().await.unwrap();
            }
            Outage::Etcd(d) => {
                cp.kill_etcd();
                tokio::time::sleep(d).await;
                // Back once kube-apiserver is ready again.
                cp.start_etcd()
                    .await
                    .unwrap_or_else(|e| panic!("{e:#}\n{}", cp.logs(20)));
            }
        }
    }
}

#[tokio::test]
async fn both_controllers_recover_from_kube_apiserver_and_etcd_restarts_without_restarting() {
    let work = tempfile::tempdir().unwrap();
    let mut cp = ControlPlane::builder()
        .workloads(false)
        .start()
        .await
        .unwrap();
    let tools = Tools {
        kubectl: Kubectl::for_server(&cp).unwrap(),
        dir: work.path().to_path_buf(),
    };
    tools.prepare().await;
    let issuer_config = user_kubeconfig(&cp, work.path(), "issuer", ISSUER_USER, MASTERS).unwrap();
    let rotator_config =
        user_kubeconfig(&cp, work.path(), "rotator", ROTATOR_USER, MASTERS).unwrap();
    let mut controllers = start_controllers(&issuer_config, &rotator_config);
    let pids = (controllers.issuer.pid(), controllers.rotator.pid());

    // Before: an issuer with a request Issued, a ConfigMap filled.
    tools.issuer().await;
    let first_ca = tools.ca("first");
    tools.source(&first_ca).await;
    tools.trust_config_map("trust").await;
    tools.request("before").await;
    let before = tools.wait_issued("before", &controllers).await;
    tools.wait_bundle("trust", 1, &controllers).await;
    println!("before the outages: request Issued, ConfigMap filled");

    // Each process down twice: shorter than the 15 s leader-election lease
    // (the leaders keep their leases), and longer (both lose them and must
    // take them back). After each outage, new work for both controllers.
    let outages = [
        Outage::ApiServer(Duration::from_secs(3)),
        Outage::ApiServer(Duration::from_secs(20)),
        Outage::Etcd(Duration::from_secs(3)),
        Outage::Etcd(Duration::from_secs(20)),
    ];
    let mut sources = first_ca.clone();
    let mut checked = 0;
    for (round, outage) in outages.into_iter().enumerate() {
        outage.run(&mut cp).await;
        controllers.assert_same(pids);
        let back = std::time::Instant::now();
        let kept = tools
            .get_json(&["certificaterequest", "before", "-n", "apps"])
            .await
            .expect("the request survived the restart");
        assert_eq!(kept["metadata"]["uid"], before["metadata"]["uid"]);
        assert_eq!(
            kept["status"]["certificate"], before["status"]["certificate"],
            "a signed request is never signed again"
        );

        // New work for both controllers.
        let (request, config_map) = (format!("after-{round}"), format!("trust-{round}"));
        tools.request(&request).await;
        tools.trust_config_map(&config_map).await;
        sources.push_str(&tools.ca(&format!("ca-{round}")));
        tools.source(&sources).await;
        let cas = round + 2;

        let after = tools.wait_issued(&request, &controllers).await;
        let issued_after = back.elapsed();
        assert_eq!(
            after["status"]["ca"], before["status"]["ca"],
            "the same CA signs after the restart"
        );
        let rotated = tools.wait_bundle("trust", cas, &controllers).await;
        let rotated_after = back.elapsed();
        let fresh = tools.wait_bundle(&config_map, cas, &controllers).await;
        assert_eq!(rotated, fresh, "both ConfigMaps hold the same bundle");
        println!(
            "{outage:?}: new request Issued after {:.1} s, rotated source in the old ConfigMap after {:.1} s, new ConfigMap filled after {:.1} s (from kube-apiserver's return)",
            issued_after.as_secs_f64(),
            rotated_after.as_secs_f64(),
            back.elapsed().as_secs_f64()
        );
        // CAPSTAN_RESTART_LOGS=1 prints both controllers' logs per round.
        if std::env::var_os("CAPSTAN_RESTART_LOGS").is_some() {
            println!("{}", controllers.logs());
        }

        // The same processes did it.
        controllers.assert_same(pids);
        checked += 1;
    }
    let logs = controllers.logs();
    assert!(!logs.contains("panicked"), "{logs}");
    tools.assert_no_key_leaks(&controllers).await;
    println!("{checked} outages survived by the same issuer and rotator processes");
}

/// Requests created at once in each burst of the priority-and-fairness test.
const BURST: usize = 40;

/// A priority level of one seat (with the tiny inflight limits) that rejects
/// what it cannot serve at once, and a FlowSchema that puts both
/// controllers' ServiceAccounts in it, ahead of the stock `service-accounts`
/// schema.
const ONE_SEAT: &str = "apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: PriorityLevelConfiguration
metadata:
  name: capstan-one-seat
spec:
  type: Limited
  limited:
    nominalConcurrencyShares: 1
    lendablePercent: 0
    borrowingLimitPercent: 0
    limitResponse:
      type: Reject
---
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: FlowSchema
metadata:
  name: capstan
spec:
  priorityLevelConfiguration:
    name: capstan-one-seat
  matchingPrecedence: 500
  distinguisherMethod:
    type: ByUser
  rules:
  - subjects:
    - kind: ServiceAccount
      serviceAccount: {name: capstan-issuer, namespace: default}
    - kind: ServiceAccount
      serviceAccount: {name: capstan-rotator, namespace: default}
    resourceRules:
    - verbs: ['*']
      apiGroups: ['*']
      resources: ['*']
      clusterScope: true
      namespaces: ['*']
    nonResourceRules:
    - verbs: ['*']
      nonResourceURLs: ['*']
";

/// Cluster-wide rights for both controllers' ServiceAccounts (what they may
/// do is the least-privilege suite's business; here only who they are
/// matters, since priority and fairness classifies by user).
const BINDING: &str = "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: capstan-controllers
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: cluster-admin
subjects:
- kind: ServiceAccount
  name: capstan-issuer
  namespace: default
- kind: ServiceAccount
  name: capstan-rotator
  namespace: default
";

/// A user's 429s in kube-apiserver's audit log.
#[derive(Debug, Default, Clone, Copy)]
#[allow(dead_code)] // read through Debug
struct Rejections {
    /// By priority and fairness (a bare 429, no Status body).
    by_priority_and_fairness: usize,
    /// By a watch cache (re)initializing after the restart (a Status
    /// `storage is (re)initializing`), which even exempt users get.
    by_initializing_cache: usize,
}

/// The 429s in kube-apiserver's audit log, per user (impersonated or not),
/// each request once (a watch is audited when its answer starts and when it
/// ends).
fn audited_429s(cp: &ControlPlane) -> std::collections::BTreeMap<String, Rejections> {
    let text = std::fs::read_to_string(cp.dir().join("audit.log")).unwrap_or_default();
    let mut seen = std::collections::BTreeSet::new();
    let mut out: std::collections::BTreeMap<String, Rejections> = Default::default();
    for e in text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    {
        let status = &e["responseStatus"];
        if status["code"] != 429 || !seen.insert(e["auditID"].to_string()) {
            continue;
        }
        let user = e["impersonatedUser"]["username"]
            .as_str()
            .or(e["user"]["username"].as_str())
            .unwrap_or_default()
            .to_owned();
        let r = out.entry(user).or_default();
        if status["message"]
            .as_str()
            .is_some_and(|m| m.contains("initializing"))
        {
            r.by_initializing_cache += 1;
        } else {
            r.by_priority_and_fairness += 1;
        }
    }
    out
}

/// How many requests priority level `capstan-one-seat` has rejected, from
/// kube-apiserver's own metrics (since it started).
async fn apf_rejections(cp: &ControlPlane) -> f64 {
    let client = cp.client().await.unwrap();
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(req).await.unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("apiserver_flowcontrol_rejected_requests_total{")
                && l.contains("priority_level=\"capstan-one-seat\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Creates `BURST` requests named `<prefix>-<i>` and approves them, eight
/// kubectls at a time (the test's admin is exempt from priority and
/// fairness).
async fn burst(tools: &Tools, prefix: &str) -> Vec<String> {
    use futures::StreamExt as _;
    let names: Vec<String> = (0..BURST).map(|i| format!("{prefix}-{i:02}")).collect();
    futures::stream::iter(&names)
        .for_each_concurrent(8, |n| tools.request(n))
        .await;
    names
}

#[tokio::test]
async fn both_controllers_finish_their_work_through_priority_and_fairness_rejections() {
    let work = tempfile::tempdir().unwrap();
    let mut cp = ControlPlane::builder()
        .workloads(false)
        .apiserver_arg("--max-requests-inflight=2")
        .apiserver_arg("--max-mutating-requests-inflight=1")
        .start()
        .await
        .unwrap();
    let tools = Tools {
        kubectl: Kubectl::for_server(&cp).unwrap(),
        dir: work.path().to_path_buf(),
    };
    tools.prepare().await;
    tools.stdin("apply", BINDING).await;
    tools.stdin("apply", ONE_SEAT).await;
    // In force once kube-apiserver's flow-control configuration controller
    // has taken it in and found its priority level.
    await_condition("the FlowSchema in force", WAIT, POLL, || async {
        let fs = tools.get_json(&["flowschema", "capstan"]).await?;
        fs["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Dangling" && c["status"] == "False")
            .then_some(())
    })
    .await
    .unwrap();
    let mut configs = Vec::new();
    for name in ["capstan-issuer", "capstan-rotator"] {
        let token = cp
            .service_account_token("default", name, &[])
            .await
            .unwrap();
        configs.push(
            cp.token_kubeconfig_at(&cp.url(), work.path(), name, &token)
                .unwrap(),
        );
    }
    let mut controllers = start_controllers(&configs[0], &configs[1]);
    let pids = (controllers.issuer.pid(), controllers.rotator.pid());

    tools.issuer().await;
    let mut sources = tools.ca("first");
    tools.source(&sources).await;
    for c in 0..5 {
        tools.trust_config_map(&format!("trust-{c}")).await;
    }
    let names = burst(&tools, "before").await;
    for n in &names {
        tools.wait_issued(n, &controllers).await;
    }
    for c in 0..5 {
        tools
            .wait_bundle(&format!("trust-{c}"), 1, &controllers)
            .await;
    }
    println!("before the restart: {BURST} requests Issued, 5 ConfigMaps filled");

    // A kube-apiserver restart: every watch of both controllers relists at
    // once, into the one seat; and new work straight after.
    Outage::ApiServer(Duration::from_secs(3)).run(&mut cp).await;
    let back = std::time::Instant::now();
    let (after, ()) = tokio::join!(burst(&tools, "after"), async {
        sources.push_str(&tools.ca("second"));
        tools.source(&sources).await;
    });
    for n in &after {
        tools.wait_issued(n, &controllers).await;
    }
    println!("DEBUG issued after {:?}", back.elapsed());
    for c in 0..5 {
        tools
            .wait_bundle(&format!("trust-{c}"), 2, &controllers)
            .await;
    }
    println!(
        "after the restart: {BURST} more requests Issued and the rotated source in 5 ConfigMaps after {:.1} s",
        back.elapsed().as_secs_f64()
    );
    controllers.assert_same(pids);
    if std::env::var_os("CAPSTAN_RESTART_LOGS").is_some() {
        println!("{}", controllers.logs());
    }

    // Priority and fairness rejected requests of capstan's flow: its own
    // count (since the restart, which reset it) and the audit log's, per
    // controller. The audit log is written as requests complete: poll.
    let rejected_by_level = apf_rejections(&cp).await;
    let rejected = await_condition(
        "priority-and-fairness 429s for both controllers in the audit log",
        WAIT,
        POLL,
        || {
            let r = audited_429s(&cp);
            let both = [ISSUER_USER, ROTATOR_USER]
                .iter()
                .all(|u| r.get(*u).is_some_and(|c| c.by_priority_and_fairness > 0));
            async move { both.then_some(r) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", audited_429s(&cp), controllers.logs()));
    println!(
        "kube-apiserver's 429s (by priority and fairness, by a watch cache still initializing) per user: {rejected:?}; \
         priority level capstan-one-seat rejected {rejected_by_level} requests since the restart"
    );
    assert!(rejected_by_level > 0.0, "{rejected:?}");
    let admin = rejected.get("admin").copied().unwrap_or_default();
    assert_eq!(
        admin.by_priority_and_fairness, 0,
        "the admin (system:masters) is exempt from priority and fairness"
    );
    let logs = controllers.logs();
    assert!(!logs.contains("panicked"), "{logs}");
    tools.assert_no_key_leaks(&controllers).await;
}
