//! End to end: the API server goes away and comes back (same port, same
//! data), and both controllers carry on without being restarted.
//!
//! The real `capstan-issuer` and `capstan-rotator` run against a test API
//! server with a data directory. Before the restart the issuer signs a
//! request and the rotator fills an annotated ConfigMap; the server is
//! stopped and started again on the same port with the same data; then new
//! work — a new request, a new annotated ConfigMap, a rotated source Secret —
//! must be handled by the same two processes (same PIDs, still running).
//! Two outages: 3 s (within the 15 s leader-election lease) and 20 s
//! (past it), each followed by new work.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use base64::Engine;
use capstan_tests::apiserver::TestApiServer;
use capstan_tests::cluster::{
    MASTERS, p256_ca, p256_csr, request_condition_args, request_condition_patch, start_component,
    start_issuer, user_kubeconfig,
};
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
}

fn start_controllers(server: &TestApiServer, dir: &std::path::Path) -> Controllers {
    let issuer_config = user_kubeconfig(server, dir, "issuer", ISSUER_USER, MASTERS).unwrap();
    let issuer = start_issuer(&issuer_config, "certs", "issuer-0").unwrap();
    let rotator = start_component(
        server,
        "capstan-rotator",
        "rotator",
        ROTATOR_USER,
        dir,
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

/// kubectl and openssl in the test's directory.
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
}

#[tokio::test]
async fn both_controllers_recover_from_an_api_server_restart_without_restarting() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // The admin kubeconfig lives outside the server's own temporary
    // directory, so the test's kubectl keeps working across the restart.
    let admin = work.path().join("admin.kubeconfig");
    let server = TestApiServer::builder()
        .data_dir(data.path())
        .kubeconfig_path(&admin)
        .start()
        .await
        .unwrap();
    let port = server.addr().port();
    let tools = Tools {
        kubectl: Kubectl::for_server(&server).unwrap(),
        dir: work.path().to_path_buf(),
    };
    tools.kubectl.apply_crds(true).await.unwrap();
    for ns in ["certs", "apps"] {
        tools
            .kubectl
            .run_ok(&["create", "namespace", ns])
            .await
            .unwrap();
    }
    let mut controllers = start_controllers(&server, work.path());
    let (issuer_pid, rotator_pid) = (controllers.issuer.pid(), controllers.rotator.pid());

    // Before: an issuer with a request Issued, a ConfigMap filled.
    tools
        .stdin(
            "apply",
            "apiVersion: capstan.dev/v1alpha1\nkind: ClusterCAIssuer\nmetadata:\n  name: monitoring-ca\nspec:\n  selfManaged:\n    secretName: monitoring-ca\n",
        )
        .await;
    let first_ca = tools.ca("first");
    tools.source(&first_ca).await;
    tools.trust_config_map("trust").await;
    tools.request("before").await;
    let before = tools.wait_issued("before", &controllers).await;
    tools.wait_bundle("trust", 1, &controllers).await;
    println!("before the restart: request Issued, ConfigMap filled");

    // Two outages: one shorter than the 15 s leader-election lease (the
    // leaders keep their leases), one longer (both lose them and must take
    // them back). After each, new work for both controllers.
    let mut server = server;
    let mut sources = first_ca.clone();
    let mut checked = 0;
    for (round, outage) in [Duration::from_secs(3), Duration::from_secs(20)]
        .into_iter()
        .enumerate()
    {
        // The API server goes away: every watch and request fails.
        server.stop().await;
        tokio::time::sleep(outage).await;
        assert!(controllers.issuer.is_running(), "{}", controllers.logs());
        assert!(controllers.rotator.is_running(), "{}", controllers.logs());

        // Back on the same port with the same data.
        server = TestApiServer::builder()
            .port(port)
            .data_dir(data.path())
            .kubeconfig_path(&admin)
            .start()
            .await
            .unwrap();
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
            "outage of {outage:?}: new request Issued after {:.1} s, rotated source in the old ConfigMap after {:.1} s, new ConfigMap filled after {:.1} s (from the server's return)",
            issued_after.as_secs_f64(),
            rotated_after.as_secs_f64(),
            back.elapsed().as_secs_f64()
        );
        // CAPSTAN_RESTART_LOGS=1 prints both controllers' logs per round.
        if std::env::var_os("CAPSTAN_RESTART_LOGS").is_some() {
            println!("{}", controllers.logs());
        }

        // The same processes did it.
        assert!(controllers.issuer.is_running(), "{}", controllers.logs());
        assert!(controllers.rotator.is_running(), "{}", controllers.logs());
        assert_eq!(controllers.issuer.pid(), issuer_pid);
        assert_eq!(controllers.rotator.pid(), rotator_pid);
        checked += 1;
    }
    let logs = controllers.logs();
    assert!(!logs.contains("panicked"), "{logs}");
    let keys = hygiene::keys_in_dir(&tools.dir);
    hygiene::assert_no_key_leaks(
        &tools.kubectl,
        &[&controllers.issuer, &controllers.rotator],
        &keys,
    )
    .await;
    drop(server);
    println!("{checked} outages survived by the same issuer and rotator processes");
}
