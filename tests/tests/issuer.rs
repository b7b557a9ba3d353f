//! End to end: the real `capstan-issuer` against the test API server, driven
//! with the real kubectl, checked with the real openssl.
//!
//! Each test starts its own API server and issuer. Requests are approved the
//! way cert-manager's approver does it: an `Approved` condition written
//! through the status subresource.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use capstan_tests::apiserver::auth::UserInfo;
use capstan_tests::apiserver::{TestApiServer, kubeconfig};
use capstan_tests::harness::{
    Kubectl, RunningBinary, await_condition, shared_dir, workspace_binary, workspace_root,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

struct Env {
    /// Kept alive for the test's duration; dropping it stops the server.
    _server: TestApiServer,
    kubectl: Kubectl,
    issuer: RunningBinary,
    dir: tempfile::TempDir,
}

async fn start() -> Env {
    let server = TestApiServer::start().await.unwrap();
    let kubectl = Kubectl::for_server(&server).unwrap();
    let crds = shared_dir().join("cert-manager-crds");
    kubectl
        .run_ok(&["apply", "-f", crds.to_str().unwrap()])
        .await
        .unwrap();
    let ours = workspace_root().join("crds");
    kubectl
        .run_ok(&["apply", "-f", ours.to_str().unwrap()])
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    server
        .add_token(
            "capstan-issuer-token",
            UserInfo::new(ISSUER_USER, &["system:masters"]),
        )
        .unwrap();
    let issuer_kubeconfig = dir.path().join("issuer.kubeconfig");
    kubeconfig::write(
        &issuer_kubeconfig,
        server.url(),
        server.ca_pem(),
        "capstan-issuer-token",
    )
    .unwrap();
    let issuer = start_issuer(&issuer_kubeconfig, "issuer-0");
    Env {
        _server: server,
        kubectl,
        issuer,
        dir,
    }
}

/// The user the issuer runs as, with its own token, so the request log tells
/// its calls from the test's.
const ISSUER_USER: &str = "system:serviceaccount:default:capstan-issuer";

/// Starts one issuer replica.
fn start_issuer(kubeconfig: &std::path::Path, pod: &str) -> RunningBinary {
    RunningBinary::start(
        &workspace_binary("capstan-issuer").unwrap(),
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--cluster-resource-namespace",
            "default",
            "--leader-election-namespace",
            "default",
        ],
        &[
            ("POD_NAMESPACE", "default"),
            ("POD_NAME", pod),
            ("RUST_LOG", "info"),
        ],
    )
    .unwrap()
}

impl Env {
    async fn apply(&self, yaml: &str) {
        let out = self
            .kubectl
            .run_with_stdin(&["apply", "-f", "-"], Some(yaml))
            .await
            .unwrap();
        assert!(out.success(), "kubectl apply failed: {out:?}\n{yaml}");
    }

    async fn get_json(&self, args: &[&str]) -> Option<Value> {
        let mut full = vec!["get"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["-o", "json"]);
        let out = self.kubectl.run(&full).await.ok()?;
        if !out.success() {
            return None;
        }
        serde_json::from_str(&out.stdout).ok()
    }

    /// Waits for condition `type_` of an object to reach `status`; returns the object.
    async fn wait_condition(&self, args: &[&str], type_: &str, status: &str) -> Value {
        let what = format!("{args:?} {type_}={status}");
        let found = await_condition(&what, WAIT, POLL, || async {
            let obj = self.get_json(args).await?;
            let ok = obj["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == type_ && c["status"] == status);
            ok.then_some(obj)
        })
        .await;
        match found {
            Ok(obj) => obj,
            Err(e) => panic!("{e}\nissuer logs:\n{}", self.issuer.logs().join("\n")),
        }
    }

    fn openssl(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("openssl is required: run scripts/install-tools");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// An openssl-made CSR for `key_args` (genpkey arguments), base64 for `spec.request`.
    fn csr(&self, name: &str, key_args: &[&str], sans: &str) -> String {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let mut genpkey = vec!["genpkey"];
        genpkey.extend_from_slice(key_args);
        genpkey.extend_from_slice(&["-out", &key]);
        assert!(self.openssl(&genpkey).0);
        let (ok, out) = self.openssl(&[
            "req",
            "-new",
            "-key",
            &key,
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            &format!("subjectAltName={sans}"),
            "-out",
            &csr,
        ]);
        assert!(ok, "{out}");
        base64::engine::general_purpose::STANDARD
            .encode(std::fs::read(self.dir.path().join(csr)).unwrap())
    }

    async fn request(&self, name: &str, csr_b64: &str, extra_spec: &str, kind: &str) {
        self.apply(&format!(
            "apiVersion: cert-manager.io/v1\nkind: CertificateRequest\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  request: {csr_b64}\n  issuerRef:\n    group: capstan.dev\n    kind: {kind}\n    name: monitoring-ca\n{extra_spec}"
        ))
        .await;
    }

    /// Approves a request as cert-manager's approver does.
    async fn approve(&self, name: &str, type_: &str) {
        let patch = format!(
            r#"{{"status":{{"conditions":[{{"type":"{type_}","status":"True","reason":"cert-manager.io","message":"set by test","lastTransitionTime":"2026-01-01T00:00:00Z"}}]}}}}"#
        );
        self.kubectl
            .run_ok(&[
                "patch",
                "certificaterequest",
                name,
                "-n",
                "default",
                "--subresource=status",
                "--type=merge",
                "-p",
                &patch,
            ])
            .await
            .unwrap();
    }

    /// A `kubernetes.io/tls` Secret from files in the test's directory,
    /// written as a generic Secret so kubectl does not check the pair first.
    async fn tls_secret(&self, name: &str, cert: &str, key: &str) {
        let dir = self.dir.path().display();
        self.kubectl
            .run_ok(&[
                "create",
                "secret",
                "generic",
                name,
                "-n",
                "default",
                "--type=kubernetes.io/tls",
                &format!("--from-file=tls.crt={dir}/{cert}"),
                &format!("--from-file=tls.key={dir}/{key}"),
            ])
            .await
            .unwrap();
    }

    fn write(&self, file: &str, content: &str) -> String {
        let path = self.dir.path().join(file);
        std::fs::write(&path, content).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

fn decode(b64: &Value) -> String {
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap(),
    )
    .unwrap()
}

const SELF_MANAGED: &str = "apiVersion: capstan.dev/v1alpha1
kind: ClusterCAIssuer
metadata:
  name: monitoring-ca
spec:
  maxDuration: 720h
  selfManaged:
    secretName: monitoring-ca
    keyAlgorithm: KEYALG
";

#[tokio::test]
async fn self_managed_issuer_signs_approved_requests_for_every_key_algorithm() {
    let cases: [(&str, &[&str]); 6] = [
        (
            "ECDSAP256",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        ),
        ("Ed25519", &["-algorithm", "ED25519"]),
        (
            "RSA2048",
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        ),
        (
            "ECDSAP384",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
        ),
        (
            "RSA3072",
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072"],
        ),
        (
            "RSA4096",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        ),
    ];
    for (alg, key_args) in cases {
        println!("CA key algorithm {alg}");
        let env = start().await;
        env.apply(&SELF_MANAGED.replace("KEYALG", alg)).await;
        let issuer = env
            .wait_condition(&["clustercaissuer", "monitoring-ca"], "Ready", "True")
            .await;
        assert!(
            issuer["status"]["ca"]["fingerprint"]
                .as_str()
                .unwrap()
                .len()
                == 64,
            "{issuer}"
        );

        let csr = env.csr(
            "metrics",
            key_args,
            "DNS:metrics.monitoring.svc,IP:10.0.0.9",
        );
        env.request(
            "metrics",
            &csr,
            "  duration: 24h\n  usages: [digital signature, key encipherment, server auth]\n",
            "ClusterCAIssuer",
        )
        .await;
        env.approve("metrics", "Approved").await;
        let cr = env
            .wait_condition(
                &["certificaterequest", "metrics", "-n", "default"],
                "Ready",
                "True",
            )
            .await;
        let ready = cr["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap()
            .clone();
        assert_eq!(ready["reason"], "Issued");

        let leaf = env.write("leaf.pem", &decode(&cr["status"]["certificate"]));
        let ca = env.write("ca.pem", &decode(&cr["status"]["ca"]));
        let (ok, out) = env.openssl(&["verify", "-CAfile", &ca, &leaf]);
        assert!(ok && out.contains(": OK"), "{alg}: {out}");
        let (_, text) = env.openssl(&["x509", "-in", &leaf, "-noout", "-text"]);
        for needle in [
            "DNS:metrics.monitoring.svc",
            "IP Address:10.0.0.9",
            "TLS Web Server Authentication",
            "CA:FALSE",
        ] {
            assert!(text.contains(needle), "{alg}: missing {needle} in\n{text}");
        }
        let (_, dates) = env.openssl(&["x509", "-in", &leaf, "-noout", "-startdate", "-enddate"]);
        assert!(dates.contains("notAfter"), "{dates}");

        // The CA Secret holds the bundle, and the Event tells the story.
        let secret = env
            .get_json(&["secret", "monitoring-ca", "-n", "default"])
            .await
            .unwrap();
        assert!(decode(&secret["data"]["ca-bundle.crt"]).contains("BEGIN CERTIFICATE"));
        let events = env
            .kubectl
            .run_ok(&["get", "events", "-n", "default"])
            .await
            .unwrap();
        assert!(
            events.contains("Issued") && events.contains("certificaterequest/metrics"),
            "{events}"
        );
        drop(env);
    }
}

#[tokio::test]
async fn every_row_of_the_request_contract() {
    let env = start().await;
    env.apply(&SELF_MANAGED.replace("KEYALG", "ECDSAP256"))
        .await;
    env.wait_condition(&["clustercaissuer", "monitoring-ca"], "Ready", "True")
        .await;
    let good = env.csr(
        "good",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "DNS:good.example",
    );

    // Not approved: untouched.
    env.request("waiting", &good, "", "ClusterCAIssuer").await;
    // Denied: Ready=False/Denied with failureTime, never signed.
    env.request("denied", &good, "", "ClusterCAIssuer").await;
    env.approve("denied", "Denied").await;
    let denied = env
        .wait_condition(
            &["certificaterequest", "denied", "-n", "default"],
            "Ready",
            "False",
        )
        .await;
    assert!(denied["status"]["failureTime"].is_string(), "{denied}");
    assert!(denied["status"].get("certificate").is_none());
    // Another issuer's kind: never touched.
    env.apply(&format!("apiVersion: cert-manager.io/v1\nkind: CertificateRequest\nmetadata:\n  name: foreign\n  namespace: default\nspec:\n  request: {good}\n  issuerRef:\n    name: monitoring-ca\n")).await;
    env.approve("foreign", "Approved").await;
    // Malformed CSR: Failed with a message, failureTime set.
    let garbage = base64::engine::general_purpose::STANDARD
        .encode("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n");
    env.request("malformed", &garbage, "", "ClusterCAIssuer")
        .await;
    env.approve("malformed", "Approved").await;
    let failed = env
        .wait_condition(
            &["certificaterequest", "malformed", "-n", "default"],
            "Ready",
            "False",
        )
        .await;
    let ready = failed["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["reason"], "Failed", "{failed}");
    assert!(
        ready["message"].as_str().unwrap().contains("CSR"),
        "{ready}"
    );
    assert!(failed["status"]["failureTime"].is_string());
    // Missing issuer that appears later: Pending, then Issued.
    env.request("later", &good, "", "CAIssuer").await;
    env.approve("later", "Approved").await;
    let pending = env
        .wait_condition(
            &["certificaterequest", "later", "-n", "default"],
            "Ready",
            "False",
        )
        .await;
    let ready = pending["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["reason"], "Pending", "{pending}");
    assert!(pending["status"].get("failureTime").is_none());
    env.apply("apiVersion: capstan.dev/v1alpha1\nkind: CAIssuer\nmetadata:\n  name: monitoring-ca\n  namespace: default\nspec:\n  selfManaged:\n    secretName: local-ca\n").await;
    env.wait_condition(
        &["certificaterequest", "later", "-n", "default"],
        "Ready",
        "True",
    )
    .await;
    // A name outside the constraints: Failed, naming the SAN.
    env.apply("apiVersion: capstan.dev/v1alpha1\nkind: CAIssuer\nmetadata:\n  name: constrained\n  namespace: default\nspec:\n  nameConstraints:\n    permittedDnsDomains: [svc.cluster.local]\n  selfManaged:\n    secretName: constrained-ca\n").await;
    env.wait_condition(
        &["caissuer", "constrained", "-n", "default"],
        "Ready",
        "True",
    )
    .await;
    env.apply(&format!("apiVersion: cert-manager.io/v1\nkind: CertificateRequest\nmetadata:\n  name: outside\n  namespace: default\nspec:\n  request: {good}\n  issuerRef:\n    group: capstan.dev\n    kind: CAIssuer\n    name: constrained\n")).await;
    env.approve("outside", "Approved").await;
    let outside = env
        .wait_condition(
            &["certificaterequest", "outside", "-n", "default"],
            "Ready",
            "False",
        )
        .await;
    let msg = outside["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()["message"]
        .clone();
    assert!(msg.as_str().unwrap().contains("good.example"), "{outside}");

    // A duration over the cap: issued, shortened, and the Event says so.
    env.request("long", &good, "  duration: 2000h\n", "ClusterCAIssuer")
        .await;
    env.approve("long", "Approved").await;
    let long = env
        .wait_condition(
            &["certificaterequest", "long", "-n", "default"],
            "Ready",
            "True",
        )
        .await;
    let leaf = env.write("long.pem", &decode(&long["status"]["certificate"]));
    let (_, end) = env.openssl(&[
        "x509",
        "-in",
        &leaf,
        "-noout",
        "-checkend",
        &(721 * 3600).to_string(),
    ]);
    assert!(
        end.contains("will expire"),
        "capped at maxDuration (720h): {end}"
    );
    let events = env
        .kubectl
        .run_ok(&[
            "get",
            "events",
            "-n",
            "default",
            "--field-selector",
            "involvedObject.name=long",
        ])
        .await
        .unwrap();
    assert!(events.contains("maxDuration"), "{events}");

    // The untouched ones are still untouched.
    for name in ["waiting", "foreign"] {
        let cr = env
            .get_json(&["certificaterequest", name, "-n", "default"])
            .await
            .unwrap();
        let has_ready = cr["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready"));
        assert!(!has_ready, "{name} was touched: {cr}");
    }
    // Events visible to kubectl, with their usual columns.
    let events = env
        .kubectl
        .run_ok(&["get", "events", "-n", "default"])
        .await
        .unwrap();
    for needle in [
        "LAST SEEN",
        "TYPE",
        "REASON",
        "OBJECT",
        "MESSAGE",
        "Denied",
        "Failed",
        "Issued",
    ] {
        assert!(events.contains(needle), "missing {needle}:\n{events}");
    }
}

fn ready_reason(obj: &Value) -> String {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["reason"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// A drill on compressed time: `capstan.dev/rotate` publishes a new CA in the
/// bundle while the old one keeps signing; after `propagationDelay` the new
/// one signs; every leaf verifies against the published bundle.
#[tokio::test]
async fn manual_rotation_publishes_then_switches_after_the_propagation_delay() {
    let env = start().await;
    env.apply(
        "apiVersion: capstan.dev/v1alpha1
kind: ClusterCAIssuer
metadata:
  name: monitoring-ca
spec:
  maxDuration: 10m
  selfManaged:
    secretName: monitoring-ca
    duration: 1h
    rotateBefore: 20m
    propagationDelay: 6s
",
    )
    .await;
    let before = env
        .wait_condition(&["clustercaissuer", "monitoring-ca"], "Ready", "True")
        .await;
    let first = before["status"]["ca"]["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    let csr = env.csr(
        "leaf",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "DNS:leaf.example",
    );

    env.kubectl
        .run_ok(&[
            "annotate",
            "clustercaissuer",
            "monitoring-ca",
            "capstan.dev/rotate=drill-1",
        ])
        .await
        .unwrap();
    // Published: two CAs in the bundle, the old one still signs.
    let published = await_condition("two CAs in the bundle", WAIT, POLL, || async {
        let issuer = env.get_json(&["clustercaissuer", "monitoring-ca"]).await?;
        (issuer["status"]["bundleSize"] == 2).then_some(issuer)
    })
    .await
    .unwrap();
    assert_eq!(
        published["status"]["ca"]["fingerprint"],
        first.as_str(),
        "the new CA must not sign yet"
    );
    env.request("during", &csr, "", "ClusterCAIssuer").await;
    env.approve("during", "Approved").await;
    let during = env
        .wait_condition(
            &["certificaterequest", "during", "-n", "default"],
            "Ready",
            "True",
        )
        .await;

    // Switched after the delay.
    let switched = await_condition("the new CA to sign", WAIT, POLL, || async {
        let issuer = env.get_json(&["clustercaissuer", "monitoring-ca"]).await?;
        let fp = issuer["status"]["ca"]["fingerprint"].as_str()?.to_owned();
        (fp != first).then_some(issuer)
    })
    .await
    .unwrap();
    assert_eq!(ready_reason(&switched), "Ready");
    env.request("after", &csr, "", "ClusterCAIssuer").await;
    env.approve("after", "Approved").await;
    let after = env
        .wait_condition(
            &["certificaterequest", "after", "-n", "default"],
            "Ready",
            "True",
        )
        .await;

    // Both leaves verify against the published bundle; each against its own CA.
    let secret = env
        .get_json(&["secret", "monitoring-ca", "-n", "default"])
        .await
        .unwrap();
    let bundle = env.write("bundle.pem", &decode(&secret["data"]["ca-bundle.crt"]));
    for (name, cr) in [("during", &during), ("after", &after)] {
        let leaf = env.write(
            &format!("{name}.pem"),
            &decode(&cr["status"]["certificate"]),
        );
        let (ok, out) = env.openssl(&["verify", "-CAfile", &bundle, &leaf]);
        assert!(ok, "{name} does not verify against the bundle: {out}");
    }
    assert_ne!(
        during["status"]["ca"], after["status"]["ca"],
        "the switch changes the issuing root"
    );
    let events = env
        .kubectl
        .run_ok(&["get", "events", "-n", "default"])
        .await
        .unwrap();
    for reason in [
        "CAGenerated",
        "CARotationStarted",
        "CARotated",
        "SecretUpdated",
    ] {
        assert!(events.contains(reason), "missing {reason}:\n{events}");
    }
}

/// The CA source a user provides: missing, then a key that does not match,
/// then a valid PKCS#1 pair as `openssl genrsa -traditional` writes it.
#[tokio::test]
async fn user_ca_secret_problems_are_reported_then_it_signs() {
    let env = start().await;
    env.apply(
        "apiVersion: capstan.dev/v1alpha1\nkind: ClusterCAIssuer\nmetadata:\n  name: monitoring-ca\nspec:\n  ca:\n    secretName: user-ca\n",
    )
    .await;
    let missing = env
        .wait_condition(&["clustercaissuer", "monitoring-ca"], "Ready", "False")
        .await;
    assert_eq!(ready_reason(&missing), "SecretNotFound", "{missing}");

    assert!(
        env.openssl(&["genrsa", "-traditional", "-out", "ca.key", "2048"])
            .0
    );
    assert!(
        env.openssl(&["genrsa", "-traditional", "-out", "other.key", "2048"])
            .0
    );
    let (ok, out) = env.openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-subj",
        "/CN=user root",
        "-days",
        "30",
        "-out",
        "ca.crt",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    assert!(ok, "{out}");
    let dir = env.dir.path().to_str().unwrap().to_owned();
    env.tls_secret("user-ca", "ca.crt", "other.key").await;
    let mismatch = await_condition("InvalidKeyPair", WAIT, POLL, || async {
        let issuer = env.get_json(&["clustercaissuer", "monitoring-ca"]).await?;
        (ready_reason(&issuer) == "InvalidKeyPair").then_some(issuer)
    })
    .await
    .unwrap();
    let message = mismatch["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("does not match"), "{message}");
    assert!(
        !message.contains("PRIVATE KEY"),
        "no key material in status: {message}"
    );

    env.kubectl
        .run_ok(&["delete", "secret", "user-ca", "-n", "default"])
        .await
        .unwrap();
    env.tls_secret("user-ca", "ca.crt", "ca.key").await;
    env.wait_condition(&["clustercaissuer", "monitoring-ca"], "Ready", "True")
        .await;
    let csr = env.csr(
        "app",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "DNS:app.example",
    );
    env.request("app", &csr, "", "ClusterCAIssuer").await;
    env.approve("app", "Approved").await;
    let cr = env
        .wait_condition(
            &["certificaterequest", "app", "-n", "default"],
            "Ready",
            "True",
        )
        .await;
    let leaf = env.write("app.pem", &decode(&cr["status"]["certificate"]));
    let (ok, out) = env.openssl(&["verify", "-CAfile", &format!("{dir}/ca.crt"), &leaf]);
    assert!(ok, "{out}");
}

/// Kubernetes CertificateSigningRequests addressed to the issuer's signer
/// name, approved and denied with the real `kubectl certificate`.
#[tokio::test]
async fn kubernetes_csrs_are_signed_when_approved_and_fail_when_denied() {
    let env = start().await;
    env.apply(&SELF_MANAGED.replace("KEYALG", "ECDSAP256"))
        .await;
    env.wait_condition(&["clustercaissuer", "monitoring-ca"], "Ready", "True")
        .await;
    let csr = env.csr(
        "node-exporter",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "DNS:node-exporter.monitoring.svc",
    );
    for name in ["approved", "denied", "other-signer"] {
        let signer = if name == "other-signer" {
            "example.com/other"
        } else {
            "clustercaissuers.capstan.dev/monitoring-ca"
        };
        env.apply(&format!(
            "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  request: {csr}\n  signerName: {signer}\n  expirationSeconds: 3600\n  usages: [digital signature, key encipherment, server auth]\n"
        ))
        .await;
    }
    env.kubectl
        .run_ok(&["certificate", "approve", "approved", "other-signer"])
        .await
        .unwrap();
    env.kubectl
        .run_ok(&["certificate", "deny", "denied"])
        .await
        .unwrap();
    let signed = await_condition("the approved CSR's certificate", WAIT, POLL, || async {
        let csr = env.get_json(&["csr", "approved"]).await?;
        csr["status"]["certificate"].is_string().then_some(csr)
    })
    .await
    .unwrap();
    let leaf = env.write("ne.pem", &decode(&signed["status"]["certificate"]));
    let secret = env
        .get_json(&["secret", "monitoring-ca", "-n", "default"])
        .await
        .unwrap();
    let ca = env.write("ca.pem", &decode(&secret["data"]["ca.crt"]));
    let (ok, out) = env.openssl(&["verify", "-CAfile", &ca, &leaf]);
    assert!(ok, "{out}");
    let denied = await_condition("the denied CSR's Failed condition", WAIT, POLL, || async {
        let csr = env.get_json(&["csr", "denied"]).await?;
        csr["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Failed")
            .then_some(csr)
    })
    .await
    .unwrap();
    assert!(denied["status"].get("certificate").is_none(), "{denied}");
    let other = env.get_json(&["csr", "other-signer"]).await.unwrap();
    assert!(
        other["status"].get("certificate").is_none(),
        "another signer's CSR was signed: {other}"
    );
}

/// Two replicas at once: one holds the lease and every request gets exactly
/// one certificate, written once.
#[tokio::test]
async fn two_replicas_sign_every_request_exactly_once() {
    let env = start().await;
    let second = start_issuer(&env.dir.path().join("issuer.kubeconfig"), "issuer-1");
    env.apply(&SELF_MANAGED.replace("KEYALG", "ECDSAP256"))
        .await;
    env.wait_condition(&["clustercaissuer", "monitoring-ca"], "Ready", "True")
        .await;
    let csr = env.csr(
        "twin",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "DNS:twin.example",
    );
    let names: Vec<String> = (0..12).map(|i| format!("twin-{i}")).collect();
    for name in &names {
        env.request(name, &csr, "", "ClusterCAIssuer").await;
        env.approve(name, "Approved").await;
    }
    let mut serials = std::collections::BTreeSet::new();
    for name in &names {
        let cr = env
            .wait_condition(
                &["certificaterequest", name, "-n", "default"],
                "Ready",
                "True",
            )
            .await;
        let leaf = env.write("twin.pem", &decode(&cr["status"]["certificate"]));
        let (_, serial) = env.openssl(&["x509", "-in", &leaf, "-noout", "-serial"]);
        assert!(
            serials.insert(serial.clone()),
            "serial {serial} issued twice"
        );
    }
    // Each request's certificate was written by exactly one successful
    // status write carrying a certificate.
    let writes = env
        ._server
        .request_log()
        .into_iter()
        .filter(|r| {
            r.resource == "certificaterequests"
                && r.subresource == "status"
                && r.code == 200
                && r.verb == "patch"
        })
        .filter(|r| r.name.starts_with("twin-") && r.user == ISSUER_USER)
        .count();
    assert_eq!(writes, names.len(), "one status write per request");
    assert!(
        second
            .logs()
            .iter()
            .chain(env.issuer.logs().iter())
            .any(|l| l.contains("leadership changed"))
    );
}

/// SHA-256 fingerprint of the first certificate in a PEM file, as capstan
/// writes it (lowercase hex, no separators).
fn fingerprint(env: &Env, file: &str) -> String {
    let (ok, out) = env.openssl(&["x509", "-in", file, "-noout", "-fingerprint", "-sha256"]);
    assert!(ok, "{out}");
    out.trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_lowercase()
}

/// `kill -9` of the issuer at each step of a rotation: the restarted issuer
/// finishes the same rotation — the CA it published is the one that signs —
/// so no key is lost or silently replaced.
#[tokio::test]
async fn kill_9_at_each_rotation_step_loses_nothing() {
    let mut env = start().await;
    env.apply(
        "apiVersion: capstan.dev/v1alpha1
kind: ClusterCAIssuer
metadata:
  name: monitoring-ca
spec:
  maxDuration: 10m
  selfManaged:
    secretName: monitoring-ca
    duration: 1h
    rotateBefore: 20m
    propagationDelay: 8s
",
    )
    .await;
    let before = env
        .wait_condition(&["clustercaissuer", "monitoring-ca"], "Ready", "True")
        .await;
    let first = before["status"]["ca"]["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    let kubeconfig = env.dir.path().join("issuer.kubeconfig");

    // Crash right after the trigger.
    env.kubectl
        .run_ok(&[
            "annotate",
            "clustercaissuer",
            "monitoring-ca",
            "capstan.dev/rotate=drill-1",
        ])
        .await
        .unwrap();
    env.issuer.sigkill().await.unwrap();
    env.issuer = start_issuer(&kubeconfig, "issuer-0");
    // Published (by whichever process got there): remember the next CA.
    let secret = await_condition("the next CA to be published", WAIT, POLL, || async {
        let secret = env
            .get_json(&["secret", "monitoring-ca", "-n", "default"])
            .await?;
        secret["data"]["next.crt"].is_string().then_some(secret)
    })
    .await
    .unwrap();
    let next_file = env.write("next.pem", &decode(&secret["data"]["next.crt"]));
    let next = fingerprint(&env, &next_file);
    assert_ne!(next, first);

    // Crash during the propagation delay.
    env.issuer.sigkill().await.unwrap();
    env.issuer = start_issuer(&kubeconfig, "issuer-0");
    let switched = await_condition("the switch to the published CA", WAIT, POLL, || async {
        let issuer = env.get_json(&["clustercaissuer", "monitoring-ca"]).await?;
        let fp = issuer["status"]["ca"]["fingerprint"].as_str()?.to_owned();
        (fp != first).then_some(fp)
    })
    .await
    .unwrap();
    assert_eq!(
        switched, next,
        "the CA that signs must be the one that was published, not a new one"
    );

    // The retired CA is still trusted; a new leaf verifies against the bundle.
    let secret = env
        .get_json(&["secret", "monitoring-ca", "-n", "default"])
        .await
        .unwrap();
    let bundle = env.write("bundle.pem", &decode(&secret["data"]["ca-bundle.crt"]));
    assert_eq!(
        decode(&secret["data"]["ca-bundle.crt"])
            .matches("BEGIN CERTIFICATE")
            .count(),
        2,
        "both CAs trusted"
    );
    assert!(secret["data"].get("next.crt").is_none() && secret["data"].get("next.key").is_none());
    let csr = env.csr(
        "after-crash",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "DNS:after.example",
    );
    env.request("after-crash", &csr, "", "ClusterCAIssuer")
        .await;
    env.approve("after-crash", "Approved").await;
    let cr = env
        .wait_condition(
            &["certificaterequest", "after-crash", "-n", "default"],
            "Ready",
            "True",
        )
        .await;
    let leaf = env.write("after.pem", &decode(&cr["status"]["certificate"]));
    let (ok, out) = env.openssl(&["verify", "-CAfile", &bundle, &leaf]);
    assert!(ok, "{out}");
}
