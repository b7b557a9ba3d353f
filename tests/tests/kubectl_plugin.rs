//! `kubectl capstan`, end to end: the built `kubectl-capstan` on PATH, found
//! and run by the real kubectl's plugin discovery, against a real control
//! plane with the real `capstan-issuer` and `capstan-rotator`; values
//! checked with kubectl and openssl.
//!
//! One story: `status` shows a self-managed ClusterCAIssuer's phase and CAs
//! (fingerprints as openssl computes them); `inspect` shows a leaf the
//! issuer signed, which CA verifies it, and never the key; `check` finds the
//! injected ConfigMap, a CABundle's target and the restart-annotated
//! Deployment in sync;
//! `rotate --no-wait` sets `capstan.dev/rotate`, and `rotate` (waiting)
//! follows a second rotation to its end, a third one outlasts `--timeout`
//! (exit 4); with the rotator stopped, a
//! tampered bundle and a changed Secret make `check` exit 3 and say why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use capstan_tests::cluster::{
    MASTERS, decode_b64, openssl_in, p256_ca, p256_csr, start_binary, start_issuer, user_kubeconfig,
};
use capstan_tests::controlplane::ControlPlane;
use capstan_tests::harness::{
    Kubectl, Output, RunningBinary, await_condition, kubectl_path, workspace_binary,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(250);
const NS: &str = "apps";

const ISSUER: &str = "apiVersion: capstan.dev/v1alpha1
kind: ClusterCAIssuer
metadata:
  name: monitoring-ca
spec:
  maxDuration: 10m
  selfManaged:
    secretName: monitoring-ca
    commonName: capstan plugin test CA
    duration: 2h
    propagationDelay: 3s
";

const TARGETS: &str = "apiVersion: capstan.dev/v1alpha1
kind: CABundle
metadata:
  name: trust
spec:
  sources:
    - secret: {namespace: certs, name: monitoring-ca, key: ca-bundle.crt}
  target: {configMap: trust}
  namespaceSelector:
    matchLabels: {trust: \"yes\"}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: scrape-ca
  namespace: apps
  annotations:
    capstan.dev/inject-ca-from-issuer: monitoring-ca
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: exporter
  namespace: apps
  annotations:
    capstan.dev/restart-on-change: \"true\"
spec:
  replicas: 1
  selector:
    matchLabels: {app: exporter}
  template:
    metadata:
      labels: {app: exporter}
    spec:
      containers:
        - name: exporter
          image: exporter
          volumeMounts: [{name: tls, mountPath: /tls, readOnly: true}]
      volumes:
        - name: tls
          secret: {secretName: leaf-tls}
";

struct Env {
    kubectl: Kubectl,
    kubeconfig: PathBuf,
    /// Holds `kubectl-capstan`, put first on kubectl's PATH.
    plugins: tempfile::TempDir,
    dir: tempfile::TempDir,
    issuer: RunningBinary,
    rotator: Option<RunningBinary>,
    _cp: ControlPlane,
}

impl Env {
    async fn start() -> Self {
        let cp = ControlPlane::start().await.unwrap();
        let kubectl = Kubectl::for_server(&cp).unwrap();
        kubectl.apply_crds(true).await.unwrap();
        for ns in ["certs", NS] {
            kubectl.run_ok(&["create", "namespace", ns]).await.unwrap();
        }
        kubectl
            .run_ok(&["label", "namespace", NS, "trust=yes"])
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = |name: &str| {
            let user = format!("system:serviceaccount:default:{name}");
            user_kubeconfig(&cp, dir.path(), name, &user, MASTERS).unwrap()
        };
        let issuer = start_issuer(&config("capstan-issuer"), "certs", "issuer-0").unwrap();
        let rotator = start_binary(
            "capstan-rotator",
            &config("capstan-rotator"),
            &[
                "--leader-election-namespace",
                "default",
                "--cluster-resource-namespace",
                "certs",
                "--restart-debounce",
                "1s",
            ],
            &[("POD_NAMESPACE", "default"), ("POD_NAME", "rotator-0")],
        )
        .unwrap();
        let plugins = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(
            workspace_binary("kubectl-capstan").unwrap(),
            plugins.path().join("kubectl-capstan"),
        )
        .unwrap();
        Self {
            kubectl,
            kubeconfig: cp.kubeconfig_path().to_path_buf(),
            plugins,
            dir,
            issuer,
            rotator: Some(rotator),
            _cp: cp,
        }
    }

    fn logs(&self) -> String {
        format!(
            "issuer logs:\n{}\nrotator logs:\n{}",
            self.issuer.logs().join("\n"),
            self.rotator
                .as_ref()
                .map(|r| r.logs().join("\n"))
                .unwrap_or_default()
        )
    }

    /// The real kubectl with the plugin directory first on its PATH and
    /// the admin kubeconfig in `KUBECONFIG`, as a user's shell has them.
    async fn kubectl_with_plugin(&self, args: &[&str]) -> Output {
        let path = format!(
            "{}:{}",
            self.plugins.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = tokio::process::Command::new(kubectl_path().unwrap())
            .args(args)
            .env("PATH", path)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", self.dir.path().join("kubecache"))
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(180), out)
            .await
            .expect("kubectl finished")
            .expect("kubectl ran");
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `kubectl capstan ARGS`.
    async fn capstan(&self, args: &[&str]) -> Output {
        let mut all = vec!["capstan"];
        all.extend_from_slice(args);
        self.kubectl_with_plugin(&all).await
    }

    /// `kubectl capstan ARGS -o json`, which must succeed and parse.
    async fn capstan_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.capstan(&all).await;
        assert_eq!(
            out.code,
            0,
            "kubectl capstan {args:?}: {out:?}\n{}",
            self.logs()
        );
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("kubectl capstan {args:?} -o json: {e}\n{}", out.stdout))
    }

    async fn wait<T, Fut>(&self, what: &str, check: impl FnMut() -> Fut) -> T
    where
        Fut: Future<Output = Option<T>>,
    {
        match await_condition(what, WAIT, POLL, check).await {
            Ok(v) => v,
            Err(e) => panic!("{e}\n{}", self.logs()),
        }
    }

    fn write(&self, file: &str, content: &str) -> String {
        let path = self.dir.path().join(file);
        std::fs::write(&path, content).unwrap();
        path.to_str().unwrap().to_owned()
    }

    /// openssl's SHA-256 fingerprint of the PEM certificate `pem`, as
    /// capstan writes fingerprints (lowercase hex, no colons).
    fn openssl_fingerprint(&self, pem: &str) -> String {
        let file = self.write("fingerprint.pem", pem);
        let (ok, out) = openssl_in(
            self.dir.path(),
            &["x509", "-in", &file, "-noout", "-fingerprint", "-sha256"],
        );
        assert!(ok, "{out}");
        out.trim()
            .rsplit('=')
            .next()
            .unwrap()
            .replace(':', "")
            .to_lowercase()
    }

    /// Signs a leaf through a CertificateRequest approved as cert-manager's
    /// approver does, and stores it as cert-manager would: Secret
    /// `leaf-tls` with `tls.crt`, `tls.key` and `ca.crt`.
    async fn leaf_secret(&self) -> String {
        let csr = p256_csr(
            self.dir.path(),
            "leaf",
            "/CN=exporter.apps.svc",
            Some("DNS:exporter.apps.svc,IP:10.0.0.7"),
        );
        self.kubectl
            .apply(&format!(
                "apiVersion: cert-manager.io/v1\nkind: CertificateRequest\nmetadata:\n  name: leaf\n  namespace: {NS}\nspec:\n  request: {csr}\n  issuerRef:\n    group: capstan.dev\n    kind: ClusterCAIssuer\n    name: monitoring-ca\n"
            ))
            .await;
        self.kubectl.approve_request(NS, "leaf").await.unwrap();
        let cr = self
            .kubectl
            .wait_condition(
                &["certificaterequest", "leaf", "-n", NS],
                "Ready",
                "True",
                WAIT,
                POLL,
            )
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
        let leaf = decode_b64(&cr["status"]["certificate"]);
        let ca = decode_b64(&cr["status"]["ca"]);
        let crt = self.write("leaf.crt", &leaf);
        let ca_file = self.write("leaf-ca.crt", &ca);
        let key = self.dir.path().join("leaf.key");
        self.kubectl
            .run_ok(&[
                "create",
                "secret",
                "generic",
                "leaf-tls",
                "-n",
                NS,
                &format!("--from-file=tls.crt={crt}"),
                &format!("--from-file=tls.key={}", key.display()),
                &format!("--from-file=ca.crt={ca_file}"),
            ])
            .await
            .unwrap();
        leaf
    }

    async fn signing_fingerprint(&self) -> Option<String> {
        let issuer = self
            .kubectl
            .get_json(&["clustercaissuer", "monitoring-ca"])
            .await?;
        issuer["status"]["ca"]["fingerprint"]
            .as_str()
            .map(str::to_owned)
    }
}

fn items<'a>(check: &'a Value, kind: &str, name: &str) -> Vec<&'a Value> {
    check["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == kind && i["name"] == name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_capstan_status_inspect_check_and_rotate() {
    let env = Env::start().await;

    // kubectl's plugin discovery finds the binary on PATH.
    let list = env.kubectl_with_plugin(&["plugin", "list"]).await;
    assert!(
        list.stdout.contains("kubectl-capstan"),
        "kubectl plugin list: {list:?}"
    );

    env.kubectl.apply(ISSUER).await;
    env.kubectl
        .wait_condition(
            &["clustercaissuer", "monitoring-ca"],
            "Ready",
            "True",
            WAIT,
            POLL,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", env.logs()));
    let first = env.signing_fingerprint().await.unwrap();

    // status: a bare name is the ClusterCAIssuer; phase and CAs as the
    // issuer reports them; fingerprints as openssl computes them.
    let status = env
        .wait("status with a Stable phase and the bundle", || async {
            let s = env
                .capstan_json(&["status", "monitoring-ca", "-n", NS])
                .await;
            (s["rotation"]["phase"] == "Stable" && !s["bundle"].as_array()?.is_empty()).then_some(s)
        })
        .await;
    assert_eq!(status["issuer"]["kind"], "ClusterCAIssuer");
    assert_eq!(status["ready"]["status"], "True");
    assert_eq!(status["signingCa"]["fingerprint"], first.as_str());
    assert_eq!(status["bundle"][0]["role"], "Signing");
    assert!(
        status["rotation"]["nextRotationTime"].is_string(),
        "{status}"
    );
    let secret = env
        .kubectl
        .get_json(&["secret", "monitoring-ca", "-n", "certs"])
        .await
        .unwrap();
    let ca_pem = decode_b64(&secret["data"]["ca.crt"]);
    assert_eq!(env.openssl_fingerprint(&ca_pem), first);
    assert_eq!(status["bundle"][0]["fingerprint"], first.as_str());
    let text = env
        .capstan(&["status", "clustercaissuer/monitoring-ca"])
        .await;
    assert_eq!(text.code, 0, "{text:?}");
    println!(
        "$ kubectl capstan status clustercaissuer/monitoring-ca\n{}",
        text.stdout
    );
    for want in [
        "Phase:            Stable",
        "Next rotation:",
        "Signing   ",
        &first,
        "CAGenerated",
    ] {
        assert!(
            text.stdout.contains(want),
            "missing {want:?}:\n{}",
            text.stdout
        );
    }
    // kubectl's --kubeconfig and --context, as kube-rs loads them.
    let context = env
        .kubectl
        .run_ok(&["config", "current-context"])
        .await
        .unwrap();
    let kubeconfig = env.kubeconfig.to_str().unwrap().to_owned();
    let explicit = env
        .capstan(&[
            "status",
            "monitoring-ca",
            "--kubeconfig",
            &kubeconfig,
            "--context",
            context.trim(),
            "-o",
            "yaml",
        ])
        .await;
    assert_eq!(explicit.code, 0, "{explicit:?}");
    assert!(
        explicit.stdout.contains("phase: Stable"),
        "{}",
        explicit.stdout
    );
    let wrong = env
        .capstan(&["status", "monitoring-ca", "--context", "no-such-context"])
        .await;
    assert_eq!(wrong.code, 1, "{wrong:?}");
    assert!(wrong.stderr.contains("kubeconfig"), "{wrong:?}");
    let missing = env.capstan(&["status", "caissuer/nope", "-n", NS]).await;
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(
        missing.stderr.contains("CAIssuer/nope -n apps not found"),
        "{missing:?}"
    );

    // inspect: the leaf, its names, which CA verifies it; never the key.
    let leaf = env.leaf_secret().await;
    let inspect = env
        .capstan_json(&["inspect", "secret", "leaf-tls", "-n", NS])
        .await;
    let certs = inspect["certificates"].as_array().unwrap();
    let leaf_cert = certs
        .iter()
        .find(|c| c["position"]["key"] == "tls.crt")
        .unwrap();
    assert_eq!(leaf_cert["sha256"], env.openssl_fingerprint(&leaf).as_str());
    assert_eq!(
        leaf_cert["sans"],
        serde_json::json!(["DNS:exporter.apps.svc", "IP:10.0.0.7"])
    );
    assert_eq!(leaf_cert["validity"], "Valid");
    assert_eq!(leaf_cert["isCa"], false);
    assert_eq!(
        leaf_cert["verifiedBy"],
        serde_json::json!([{"key": "ca.crt", "index": 0}])
    );
    let ca_cert = certs
        .iter()
        .find(|c| c["position"]["key"] == "ca.crt")
        .unwrap();
    assert_eq!(ca_cert["sha256"], first.as_str());
    let (ok, out) = openssl_in(
        env.dir.path(),
        &["verify", "-CAfile", "leaf-ca.crt", "leaf.crt"],
    );
    assert!(ok, "openssl agrees the CA verifies the leaf: {out}");
    let table = env
        .capstan(&["inspect", "secret", "leaf-tls", "-n", NS])
        .await;
    assert_eq!(table.code, 0, "{table:?}");
    println!(
        "$ kubectl capstan inspect secret leaf-tls -n apps\n{}",
        table.stdout
    );
    assert!(
        table.stdout.contains("1 private key(s) (not shown)"),
        "{}",
        table.stdout
    );
    assert!(!table.stdout.contains("PRIVATE KEY") && !inspect.to_string().contains("PRIVATE KEY"));

    // check: the injected ConfigMap and the Deployment, in sync once the
    // rotator has written the bundle and recorded the baseline.
    env.kubectl.apply(TARGETS).await;
    let check = env
        .wait("check in sync", || async {
            let out = env
                .capstan(&[
                    "check",
                    "-n",
                    NS,
                    "--cluster-resource-namespace",
                    "certs",
                    "-o",
                    "json",
                ])
                .await;
            let v: Value = serde_json::from_str(&out.stdout).ok()?;
            (out.code == 0 && v["items"].as_array()?.len() == 3).then_some(v)
        })
        .await;
    assert_eq!(check["inSync"], true);
    assert_eq!(
        items(&check, "ConfigMap", "scrape-ca")[0]["state"],
        "InSync"
    );
    assert_eq!(
        items(&check, "Deployment", "exporter")[0]["state"],
        "InSync"
    );

    // rotate --no-wait: the annotation is set, the command returns.
    let started = env
        .capstan_json(&["rotate", "monitoring-ca", "--no-wait"])
        .await;
    assert_eq!(started["completed"], false);
    assert_eq!(started["previousCa"], first.as_str());
    let issuer = env
        .kubectl
        .get_json(&["clustercaissuer", "monitoring-ca"])
        .await
        .unwrap();
    assert_eq!(
        issuer["metadata"]["annotations"]["capstan.dev/rotate"],
        started["trigger"]
    );
    let second = env
        .wait("the first rotation's CA signs", || async {
            env.signing_fingerprint().await.filter(|f| *f != first)
        })
        .await;

    // rotate, waiting: each step, then the new CA signs.
    let waited = env
        .capstan(&["rotate", "clustercaissuer/monitoring-ca", "--timeout", "2m"])
        .await;
    assert_eq!(waited.code, 0, "{waited:?}\n{}", env.logs());
    println!(
        "$ kubectl capstan rotate clustercaissuer/monitoring-ca\n{}",
        waited.stdout
    );
    for want in [
        "set capstan.dev/rotate=",
        "CARotationStarted",
        "Phase Retiring -> Publishing",
        "CARotated",
        "Signing with the new CA",
        "rotated in",
    ] {
        assert!(
            waited.stdout.contains(want),
            "missing {want:?}:\n{}",
            waited.stdout
        );
    }
    let third = env.signing_fingerprint().await.unwrap();
    assert!(third != second && third != first);
    let after = env.capstan_json(&["status", "monitoring-ca"]).await;
    assert_eq!(after["signingCa"]["fingerprint"], third.as_str());
    let roles: Vec<(&str, &str)> = after["bundle"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["fingerprint"].as_str().unwrap(),
                c["role"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(roles.contains(&(third.as_str(), "Signing")), "{roles:?}");
    assert!(roles.contains(&(second.as_str(), "Retired")), "{roles:?}");
    assert!(
        after["bundle"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["retireTime"].is_string())
    );

    // A timeout shorter than propagationDelay (3s): exit code 4, and the
    // rotation goes on without the plugin.
    let short = env
        .capstan(&["rotate", "monitoring-ca", "--timeout", "1s"])
        .await;
    assert_eq!(short.code, 4, "{short:?}");
    assert!(short.stderr.contains("did not sign within 1s"), "{short:?}");
    let fourth = env
        .wait("the timed-out rotation's CA signs anyway", || async {
            env.signing_fingerprint().await.filter(|f| *f != third)
        })
        .await;

    // The rotator catches up with the new bundle; then, with it stopped, a
    // tampered bundle and a changed Secret are out of sync, with reasons.
    env.wait("check in sync after the rotations", || async {
        let out = env
            .capstan(&["check", "-n", NS, "--cluster-resource-namespace", "certs"])
            .await;
        (out.code == 0).then_some(())
    })
    .await;
    let mut env = env;
    env.rotator.take().unwrap().kill().await.unwrap();
    let stranger = p256_ca(env.dir.path(), "stranger");
    let stranger_fp = env.openssl_fingerprint(&stranger);
    env.kubectl
        .run_ok(&[
            "patch",
            "configmap",
            "scrape-ca",
            "-n",
            NS,
            "--type=merge",
            "-p",
            &serde_json::json!({"data": {"ca-bundle.crt": stranger}}).to_string(),
        ])
        .await
        .unwrap();
    env.kubectl
        .run_ok(&[
            "patch",
            "secret",
            "leaf-tls",
            "-n",
            NS,
            "--type=merge",
            "-p",
            r#"{"stringData":{"extra":"changed"}}"#,
        ])
        .await
        .unwrap();
    let out = env
        .capstan(&[
            "check",
            "-n",
            NS,
            "--cluster-resource-namespace",
            "certs",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(out.code, 3, "{out:?}");
    let check: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(check["inSync"], false);
    let cm = items(&check, "ConfigMap", "scrape-ca")[0];
    assert_eq!(cm["state"], "OutOfSync");
    let reason = cm["reason"].as_str().unwrap();
    let (lacks, holds) = reason.split_once("; still holds").unwrap();
    assert!(
        lacks.contains(&fourth[..16]) && lacks.contains(&third[..16]),
        "{reason}"
    );
    assert!(holds.trim() == &stranger_fp[..16], "{reason}");
    let deploy = items(&check, "Deployment", "exporter")[0];
    assert_eq!(deploy["state"], "OutOfSync");
    assert!(
        deploy["reason"].as_str().unwrap().contains("differs"),
        "{deploy}"
    );
    // A CABundle reading an injection target is refused, as the rotator
    // refuses it (SourceIsTarget), even before its target exists.
    env.kubectl
        .apply(
            "apiVersion: capstan.dev/v1alpha1
kind: CABundle
metadata:
  name: loop
spec:
  sources:
    - configMap: {namespace: apps, name: scrape-ca}
  target: {configMap: loop-out}
",
        )
        .await;
    let out = env
        .capstan(&[
            "check",
            "-n",
            NS,
            "--cluster-resource-namespace",
            "certs",
            "-o",
            "yaml",
        ])
        .await;
    assert_eq!(out.code, 3, "{out:?}");
    let check: Value = serde_norway::from_str(&out.stdout).unwrap();
    let looped = items(&check, "ConfigMap", "loop-out")[0];
    assert_eq!(looped["state"], "Error");
    assert!(
        looped["reason"]
            .as_str()
            .unwrap()
            .starts_with("SourceIsTarget: spec.sources[0]: ConfigMap/scrape-ca -n apps"),
        "{looped}"
    );
    let table = env
        .capstan(&["check", "-n", NS, "--cluster-resource-namespace", "certs"])
        .await;
    assert_eq!(table.code, 3);
    assert!(table.stdout.contains("OutOfSync"), "{}", table.stdout);
    println!("$ kubectl capstan check -n apps\n{}", table.stdout);
}
