//! End to end: the real `capstan-issuer` against a real control plane, driven
//! with the real kubectl, checked with the real openssl.
//!
//! Each test starts its own control plane and issuer. Requests are approved the
//! way cert-manager's approver does it: an `Approved` condition written
//! through the status subresource.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use base64::Engine;
use capstan_tests::cluster::{
    self, MASTERS, decode_b64, metric_value, openssl_in, scrape_metrics, user_kubeconfig,
};
use capstan_tests::controlplane::ControlPlane;
use capstan_tests::harness::{Kubectl, RunningBinary, await_condition, condition};
use capstan_tests::hygiene;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

struct Env {
    /// Kept alive for the test's duration; dropping it stops the server.
    _server: ControlPlane,
    kubectl: Kubectl,
    issuer: RunningBinary,
    dir: tempfile::TempDir,
}

async fn start() -> Env {
    let server = ControlPlane::builder()
        .workloads(false)
        .start()
        .await
        .unwrap();
    let kubectl = Kubectl::for_server(&server).unwrap();
    kubectl.apply_crds(true).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let issuer_kubeconfig =
        user_kubeconfig(&server, dir.path(), "issuer", ISSUER_USER, MASTERS).unwrap();
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
    cluster::start_issuer(kubeconfig, "default", pod).unwrap()
}

impl Env {
    async fn apply(&self, yaml: &str) {
        self.kubectl.apply(yaml).await;
    }

    async fn get_json(&self, args: &[&str]) -> Option<Value> {
        self.kubectl.get_json(args).await
    }

    /// Waits for condition `type_` of an object to reach `status`; returns the object.
    async fn wait_condition(&self, args: &[&str], type_: &str, status: &str) -> Value {
        let found = self
            .kubectl
            .wait_condition(args, type_, status, WAIT, POLL)
            .await;
        match found {
            Ok(obj) => obj,
            Err(e) => panic!("{e}\nissuer logs:\n{}", self.issuer.logs().join("\n")),
        }
    }

    fn openssl(&self, args: &[&str]) -> (bool, String) {
        openssl_in(self.dir.path(), args)
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
        self.kubectl
            .set_request_condition("default", name, type_, "set by test")
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

    /// Fails on any private key (the cluster's CA keys, the keys this test
    /// made for its CSRs) outside Secrets: objects, issuer logs, metrics.
    async fn assert_no_key_leaks(&self) {
        let keys = hygiene::keys_in_dir(self.dir.path());
        let scanned = hygiene::assert_no_key_leaks(&self.kubectl, &[&self.issuer], &keys).await;
        println!("key scan: {scanned:?}");
    }

    /// Waits for an Event with `reason` on CertificateRequest `name`.
    async fn event_for(&self, name: &str, reason: &str) -> Value {
        let selector = format!("involvedObject.name={name},reason={reason}");
        let found = await_condition(&format!("event {reason} on {name}"), WAIT, POLL, || async {
            let events = self
                .get_json(&["events", "-n", "default", "--field-selector", &selector])
                .await?;
            events["items"].as_array()?.first().cloned()
        })
        .await;
        match found {
            Ok(event) => event,
            Err(e) => panic!("{e}\nissuer logs:\n{}", self.issuer.logs().join("\n")),
        }
    }

    /// How many times Events with `reason` were recorded in `default`.
    async fn event_count(&self, reason: &str) -> i64 {
        let selector = format!("reason={reason}");
        self.get_json(&["events", "-n", "default", "--field-selector", &selector])
            .await
            .and_then(|e| {
                e["items"]
                    .as_array()
                    .map(|a| a.iter().map(|e| e["count"].as_i64().unwrap_or(1)).sum())
            })
            .unwrap_or(0)
    }

    fn write(&self, file: &str, content: &str) -> String {
        let path = self.dir.path().join(file);
        std::fs::write(&path, content).unwrap();
        path.to_str().unwrap().to_owned()
    }
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
        // An RSA 4096 CA signing a P-256 leaf: CA and leaf keys differ.
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
        let ready = condition(&cr, "Ready").unwrap().clone();
        assert_eq!(ready["reason"], "Issued");

        let leaf = env.write("leaf.pem", &decode_b64(&cr["status"]["certificate"]));
        let ca = env.write("ca.pem", &decode_b64(&cr["status"]["ca"]));
        let (ok, out) = env.openssl(&["verify", "-CAfile", &ca, &leaf]);
        assert!(ok && out.contains(": OK"), "{alg}: {out}");
        let (_, text) = env.openssl(&["x509", "-in", &leaf, "-noout", "-text"]);
        for needle in [
            "Subject: CN = metrics",
            "DNS:metrics.monitoring.svc",
            "IP Address:10.0.0.9",
            "Digital Signature, Key Encipherment",
            "TLS Web Server Authentication",
            "CA:FALSE",
        ] {
            assert!(text.contains(needle), "{alg}: missing {needle} in\n{text}");
        }
        // Valid now, for the 24h asked: not expired in 23h, expired in 25h.
        for (seconds, expected) in [(23 * 3600, "will not expire"), (25 * 3600, "will expire")] {
            let (_, end) = env.openssl(&[
                "x509",
                "-in",
                &leaf,
                "-noout",
                "-checkend",
                &seconds.to_string(),
            ]);
            assert!(end.contains(expected), "{alg}: -checkend {seconds}: {end}");
        }
        let (_, ca_text) = env.openssl(&["x509", "-in", &ca, "-noout", "-text"]);
        let ca_key = match alg {
            "ECDSAP256" => "NIST CURVE: P-256",
            "ECDSAP384" => "NIST CURVE: P-384",
            "Ed25519" => "ED25519",
            "RSA2048" => "(2048 bit)",
            "RSA3072" => "(3072 bit)",
            _ => "(4096 bit)",
        };
        assert!(
            ca_text.to_uppercase().contains(&ca_key.to_uppercase()),
            "{alg}: the CA's key is not {ca_key}:\n{ca_text}"
        );

        // The CA Secret holds the bundle, and the Event tells the story.
        let secret = env
            .get_json(&["secret", "monitoring-ca", "-n", "default"])
            .await
            .unwrap();
        assert!(decode_b64(&secret["data"]["ca-bundle.crt"]).contains("BEGIN CERTIFICATE"));
        let events = env
            .kubectl
            .run_ok(&["get", "events", "-n", "default"])
            .await
            .unwrap();
        assert!(
            events.contains("Issued") && events.contains("certificaterequest/metrics"),
            "{events}"
        );
        env.assert_no_key_leaks().await;
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
    let ready = condition(&failed, "Ready").unwrap().clone();
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
    let ready = condition(&pending, "Ready").unwrap().clone();
    assert_eq!(ready["reason"], "Pending", "{pending}");
    assert!(pending["status"].get("failureTime").is_none());
    env.event_for("later", "Pending").await;
    env.apply("apiVersion: capstan.dev/v1alpha1\nkind: CAIssuer\nmetadata:\n  name: monitoring-ca\n  namespace: default\nspec:\n  selfManaged:\n    secretName: local-ca\n").await;
    env.wait_condition(
        &["certificaterequest", "later", "-n", "default"],
        "Ready",
        "True",
    )
    .await;
    // A deleted issuer stops signing at once: new requests wait for it.
    env.kubectl
        .run_ok(&["delete", "caissuer", "monitoring-ca", "-n", "default"])
        .await
        .unwrap();
    env.request("after-delete", &good, "", "CAIssuer").await;
    env.approve("after-delete", "Approved").await;
    let orphan = env
        .wait_condition(
            &["certificaterequest", "after-delete", "-n", "default"],
            "Ready",
            "False",
        )
        .await;
    let ready = condition(&orphan, "Ready").unwrap().clone();
    assert_eq!(ready["reason"], "Pending", "{orphan}");
    assert!(
        ready["message"].as_str().unwrap().contains("not found"),
        "{ready}"
    );
    assert!(orphan["status"].get("certificate").is_none(), "{orphan}");
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
    let msg = condition(&outside, "Ready").unwrap()["message"].clone();
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
    let leaf = env.write("long.pem", &decode_b64(&long["status"]["certificate"]));
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

    // A duration past the CA's own notAfter: issued, ending with the CA,
    // and the Event says so.
    env.apply("apiVersion: capstan.dev/v1alpha1\nkind: CAIssuer\nmetadata:\n  name: short-lived\n  namespace: default\nspec:\n  selfManaged:\n    secretName: short-lived-ca\n    duration: 2h\n").await;
    env.wait_condition(
        &["caissuer", "short-lived", "-n", "default"],
        "Ready",
        "True",
    )
    .await;
    env.apply(&format!("apiVersion: cert-manager.io/v1\nkind: CertificateRequest\nmetadata:\n  name: past-ca\n  namespace: default\nspec:\n  request: {good}\n  duration: 24h\n  issuerRef:\n    group: capstan.dev\n    kind: CAIssuer\n    name: short-lived\n")).await;
    env.approve("past-ca", "Approved").await;
    let past = env
        .wait_condition(
            &["certificaterequest", "past-ca", "-n", "default"],
            "Ready",
            "True",
        )
        .await;
    let leaf = env.write("past-ca.pem", &decode_b64(&past["status"]["certificate"]));
    let ca = env.write("past-ca-ca.pem", &decode_b64(&past["status"]["ca"]));
    let (_, leaf_end) = env.openssl(&["x509", "-in", &leaf, "-noout", "-enddate"]);
    let (_, ca_end) = env.openssl(&["x509", "-in", &ca, "-noout", "-enddate"]);
    assert_eq!(leaf_end, ca_end, "the leaf must end with its CA");
    let issued = env.event_for("past-ca", "Issued").await;
    assert!(
        issued["message"].as_str().unwrap().contains("CA's"),
        "the Event must say the lifetime was shortened: {issued}"
    );

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
    // The metrics count what happened, per issuer and reason; the deleted
    // issuer's gauges are gone, and the request waiting for it is pending.
    let cluster = [
        ("issuer_kind", "ClusterCAIssuer"),
        ("issuer_name", "monitoring-ca"),
    ];
    let deleted = [
        ("issuer_kind", "CAIssuer"),
        ("issuer_namespace", "default"),
        ("issuer_name", "monitoring-ca"),
    ];
    let body = await_condition("the pending gauge", WAIT, POLL, || async {
        let body = scrape_metrics(&env.issuer, WAIT).await?;
        (metric_value(&body, "capstan_issuer_requests_pending", &deleted) == Some(1.0))
            .then_some(body)
    })
    .await
    .unwrap();
    assert_eq!(
        metric_value(&body, "capstan_issuer_requests_signed_total", &cluster),
        Some(1.0),
        "{body}"
    );
    let mut failed = cluster.to_vec();
    failed.push(("reason", "Failed"));
    assert_eq!(
        metric_value(&body, "capstan_issuer_requests_failed_total", &failed),
        Some(1.0)
    );
    failed.pop();
    failed.push(("reason", "Denied"));
    assert_eq!(
        metric_value(&body, "capstan_issuer_requests_failed_total", &failed),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&body, "capstan_issuer_ready", &cluster),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&body, "capstan_issuer_ready", &deleted),
        None,
        "a deleted issuer's series must go: {body}"
    );

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
    env.assert_no_key_leaks().await;
}

fn ready_reason(obj: &Value) -> String {
    condition(obj, "Ready")
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
    // Stable: one signing CA, the next rotation 20 minutes before it expires,
    // shown by `kubectl get` and served as a metric.
    let stable = &before["status"];
    assert_eq!(stable["rotation"]["phase"], "Stable", "{stable}");
    let next_rotation = stable["rotation"]["nextRotationTime"].as_str().unwrap();
    assert_eq!(
        unix(next_rotation),
        unix(stable["ca"]["notAfter"].as_str().unwrap()) - 20 * 60,
        "{stable}"
    );
    assert_eq!(stable["rotation"].get("switchTime"), None, "{stable}");
    assert_eq!(
        bundle_roles(stable),
        [(first.clone(), "Signing".to_owned())]
    );
    assert_columns(&env, &["Stable", next_rotation]).await;
    assert_next_rotation_metric(&env, Some(unix(next_rotation))).await;
    let csr = env.csr(
        "leaf",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "DNS:leaf.example",
    );

    env.kubectl
        .rotate("monitoring-ca", "drill-1")
        .await
        .unwrap();
    // Published: two CAs in the bundle, the old one still signs.
    let published = await_condition("the Publishing phase", WAIT, POLL, || async {
        let issuer = env.get_json(&["clustercaissuer", "monitoring-ca"]).await?;
        (issuer["status"]["rotation"]["phase"] == "Publishing").then_some(issuer)
    })
    .await
    .unwrap();
    assert_eq!(
        published["status"]["ca"]["fingerprint"],
        first.as_str(),
        "the new CA must not sign yet"
    );
    assert_eq!(published["status"]["bundleSize"], 2, "{published}");
    let roles = bundle_roles(&published["status"]);
    assert_eq!(
        roles.iter().map(|(_, r)| r.as_str()).collect::<Vec<_>>(),
        ["Next", "Signing"],
        "{published}"
    );
    assert_eq!(roles[1].0, first);
    let next_fp = roles[0].0.clone();
    // The switch comes propagationDelay (6s) after the publication the CA
    // Secret records.
    let secret = env
        .get_json(&["secret", "monitoring-ca", "-n", "default"])
        .await
        .unwrap();
    let published_at = secret["metadata"]["annotations"]["capstan.dev/next-published-at"]
        .as_str()
        .unwrap();
    let rotation = &published["status"]["rotation"];
    assert_eq!(
        unix(rotation["switchTime"].as_str().unwrap()),
        unix(published_at) + 6,
        "{rotation}"
    );
    assert_eq!(rotation.get("nextRotationTime"), None, "{rotation}");
    assert_next_rotation_metric(&env, None).await;
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
    // Retiring: the new CA signs, the old one stays in the bundle until the
    // retire time the CA Secret records (the longest leaf, 10m).
    let retiring = await_condition("the Retiring phase", WAIT, POLL, || async {
        let issuer = env.get_json(&["clustercaissuer", "monitoring-ca"]).await?;
        (issuer["status"]["rotation"]["phase"] == "Retiring").then_some(issuer)
    })
    .await
    .unwrap();
    let status = &retiring["status"];
    assert_eq!(status["ca"]["fingerprint"], next_fp.as_str(), "{status}");
    assert_eq!(
        bundle_roles(status),
        [
            (next_fp.clone(), "Signing".to_owned()),
            (first.clone(), "Retired".to_owned())
        ]
    );
    let secret = env
        .get_json(&["secret", "monitoring-ca", "-n", "default"])
        .await
        .unwrap();
    let retired: Value = serde_json::from_str(
        secret["metadata"]["annotations"]["capstan.dev/retired"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let retire_time = status["bundle"][1]["retireTime"].as_str().unwrap();
    assert_eq!(retired[0]["fingerprint"], first.as_str());
    assert_eq!(
        unix(retire_time),
        unix(retired[0]["dropAfter"].as_str().unwrap()),
        "{status}"
    );
    assert_eq!(status["bundle"][0].get("retireTime"), None, "{status}");
    let next_rotation = status["rotation"]["nextRotationTime"].as_str().unwrap();
    assert_eq!(
        unix(next_rotation),
        unix(status["ca"]["notAfter"].as_str().unwrap()) - 20 * 60
    );
    assert_columns(&env, &["Retiring", next_rotation]).await;
    assert_next_rotation_metric(&env, Some(unix(next_rotation))).await;
    assert_status_is_not_rewritten(&env).await;
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
    let bundle = env.write("bundle.pem", &decode_b64(&secret["data"]["ca-bundle.crt"]));
    for (name, cr) in [("during", &during), ("after", &after)] {
        let leaf = env.write(
            &format!("{name}.pem"),
            &decode_b64(&cr["status"]["certificate"]),
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
    // Every write of the issuer is recorded under its own field manager.
    for object in [
        ["secret", "monitoring-ca", "-n", "default"],
        ["clustercaissuer", "monitoring-ca", "", ""],
        ["certificaterequest", "after", "-n", "default"],
    ] {
        let mut args: Vec<&str> = object.into_iter().filter(|a| !a.is_empty()).collect();
        args.push("--show-managed-fields");
        let found = env.get_json(&args).await.unwrap();
        let managers: Vec<&str> = found["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f["manager"].as_str())
            .collect();
        assert!(
            managers.contains(&"capstan-issuer"),
            "{object:?} managed by {managers:?}"
        );
    }
    env.assert_no_key_leaks().await;
}

/// An RFC 3339 time as Unix seconds.
fn unix(time: &str) -> i64 {
    time.parse::<k8s_openapi::jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("{time:?}: {e}"))
        .as_second()
}

/// `status.bundle` as (fingerprint, role), in order.
fn bundle_roles(status: &Value) -> Vec<(String, String)> {
    status["bundle"]
        .as_array()
        .unwrap_or_else(|| panic!("no bundle: {status}"))
        .iter()
        .map(|ca| {
            (
                ca["fingerprint"].as_str().unwrap().to_owned(),
                ca["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// `kubectl get clustercaissuers` shows the Phase and Next Rotation columns
/// with `values` in the issuer's row.
async fn assert_columns(env: &Env, values: &[&str]) {
    let table = env
        .kubectl
        .run_ok(&["get", "clustercaissuers"])
        .await
        .unwrap();
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.contains("PHASE") && header.contains("NEXT ROTATION"),
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("monitoring-ca "))
        .unwrap_or_else(|| panic!("no row: {table}"));
    for value in values {
        assert!(row.contains(value), "{value} missing: {table}");
    }
}

/// The issuer serves `capstan_issuer_ca_next_rotation_timestamp_seconds`
/// for the issuer with `expected` (absent for `None`), once it has caught up.
async fn assert_next_rotation_metric(env: &Env, expected: Option<i64>) {
    let labels = [
        ("issuer_kind", "ClusterCAIssuer"),
        ("issuer_name", "monitoring-ca"),
    ];
    let want = expected.map(|t| t as f64);
    let served = await_condition("the next rotation metric", WAIT, POLL, || async {
        let body = scrape_metrics(&env.issuer, WAIT).await?;
        let value = metric_value(
            &body,
            "capstan_issuer_ca_next_rotation_timestamp_seconds",
            &labels,
        );
        (value == want).then_some(value)
    })
    .await;
    assert!(served.is_ok(), "expected {want:?}: {served:?}");
}

/// A reconcile that finds nothing new writes no status: two Secret changes
/// the issuer reacts to (each seen as its read of the Secret in the audit
/// log) leave the issuer's status patches where they were.
async fn assert_status_is_not_rewritten(env: &Env) {
    let count = |verb: &'static str, resource: &'static str, subresource: &'static str| {
        env._server
            .request_log()
            .iter()
            .filter(|r| {
                r.user == ISSUER_USER
                    && r.verb == verb
                    && r.resource == resource
                    && r.subresource == subresource
                    && r.name == "monitoring-ca"
            })
            .count()
    };
    let patches = count("patch", "clustercaissuers", "status");
    for poke in ["1", "2"] {
        let reads = count("get", "secrets", "");
        env.kubectl
            .run_ok(&[
                "annotate",
                "--overwrite",
                "secret",
                "monitoring-ca",
                "-n",
                "default",
                &format!("test.capstan.dev/poke={poke}"),
            ])
            .await
            .unwrap();
        await_condition("the issuer to re-read its Secret", WAIT, POLL, || async {
            (count("get", "secrets", "") > reads).then_some(())
        })
        .await
        .unwrap();
    }
    assert_eq!(
        count("patch", "clustercaissuers", "status"),
        patches,
        "an unchanged status was written again"
    );
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
    let leaf = env.write("app.pem", &decode_b64(&cr["status"]["certificate"]));
    let (ok, out) = env.openssl(&["verify", "-CAfile", &format!("{dir}/ca.crt"), &leaf]);
    assert!(ok, "{out}");
    env.assert_no_key_leaks().await;
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
    let leaf = env.write("ne.pem", &decode_b64(&signed["status"]["certificate"]));
    let secret = env
        .get_json(&["secret", "monitoring-ca", "-n", "default"])
        .await
        .unwrap();
    let ca = env.write("ca.pem", &decode_b64(&secret["data"]["ca.crt"]));
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
    env.assert_no_key_leaks().await;
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
        let leaf = env.write("twin.pem", &decode_b64(&cr["status"]["certificate"]));
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
    env.assert_no_key_leaks().await;
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
        .rotate("monitoring-ca", "drill-1")
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
    let next_file = env.write("next.pem", &decode_b64(&secret["data"]["next.crt"]));
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
    let bundle = env.write("bundle.pem", &decode_b64(&secret["data"]["ca-bundle.crt"]));
    assert_eq!(
        decode_b64(&secret["data"]["ca-bundle.crt"])
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
    let leaf = env.write("after.pem", &decode_b64(&cr["status"]["certificate"]));
    let (ok, out) = env.openssl(&["verify", "-CAfile", &bundle, &leaf]);
    assert!(ok, "{out}");
    env.assert_no_key_leaks().await;
}

/// One observed version of a self-managed CA Secret.
#[derive(Debug, Clone)]
struct CaSnapshot {
    /// When the test saw it (Unix seconds); the write happened earlier.
    seen: f64,
    /// Fingerprints in `ca-bundle.crt`.
    bundle: Vec<String>,
    /// Fingerprint of the signing CA (`tls.crt`).
    signing: String,
    /// SHA-256 of the signing key (`tls.key`), never the key itself.
    signing_key: String,
    /// The published CA waiting out the delay, with its key's digest and
    /// `capstan.dev/next-published-at` (Unix seconds).
    next: Option<(String, String, i64)>,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn pem_fingerprints(pem_text: &[u8]) -> Vec<String> {
    pem::parse_many(pem_text)
        .unwrap()
        .iter()
        .map(|p| capstan_pki::fingerprint(p.contents()))
        .collect()
}

fn key_digest(bytes: &[u8]) -> String {
    capstan_pki::fingerprint(bytes)
}

impl CaSnapshot {
    fn of(secret: &k8s_openapi::api::core::v1::Secret) -> Option<Self> {
        let data = secret.data.as_ref()?;
        let get = |k: &str| data.get(k).map(|b| b.0.clone());
        let next = match (get("next.crt"), get("next.key")) {
            (Some(crt), Some(key)) => {
                let at = secret
                    .metadata
                    .annotations
                    .as_ref()?
                    .get("capstan.dev/next-published-at")?
                    .parse::<k8s_openapi::jiff::Timestamp>()
                    .ok()?
                    .as_second();
                Some((pem_fingerprints(&crt)[0].clone(), key_digest(&key), at))
            }
            _ => None,
        };
        Some(Self {
            seen: unix_now(),
            bundle: pem_fingerprints(&get("ca-bundle.crt")?),
            signing: pem_fingerprints(&get("tls.crt")?)[0].clone(),
            signing_key: key_digest(&get("tls.key")?),
            next,
        })
    }
}

/// A CA that lives two minutes rotates on its own schedule, twice, with
/// `kill -9` of the issuer after a switch and after a retirement. Every
/// version of the CA Secret is watched. Then: every leaf was signed by a CA
/// published at least `propagationDelay` earlier (or the very first CA);
/// every leaf's CA stayed in the bundle for as long as the leaf was valid;
/// the signing key only ever changed to the key that had been published;
/// live leaves verify against the final bundle with openssl.
#[tokio::test]
async fn scheduled_rotation_on_compressed_time_keeps_every_leaf_trusted() {
    use futures::StreamExt as _;
    use kube::runtime::{WatchStreamExt as _, watcher};

    const DELAY: i64 = 10;
    let mut env = start().await;
    env.apply(
        "apiVersion: capstan.dev/v1alpha1
kind: ClusterCAIssuer
metadata:
  name: monitoring-ca
spec:
  maxDuration: 40s
  selfManaged:
    secretName: monitoring-ca
    duration: 2m
    rotateBefore: 80s
    propagationDelay: 10s
",
    )
    .await;
    env.wait_condition(&["clustercaissuer", "monitoring-ca"], "Ready", "True")
        .await;

    let client = env._server.client().await.unwrap();
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client, "default");
    let history = std::sync::Arc::new(std::sync::Mutex::new(Vec::<CaSnapshot>::new()));
    let recorder = {
        let history = history.clone();
        tokio::spawn(async move {
            let config = watcher::Config::default().fields("metadata.name=monitoring-ca");
            let mut versions = watcher(secrets, config).applied_objects().boxed();
            while let Some(Ok(secret)) = versions.next().await {
                if let Some(snapshot) = CaSnapshot::of(&secret) {
                    history.lock().unwrap().push(snapshot);
                }
            }
        })
    };

    let csr = env.csr(
        "scheduled",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "DNS:scheduled.example",
    );
    let kubeconfig = env.dir.path().join("issuer.kubeconfig");
    let started = std::time::Instant::now();
    let mut names = Vec::new();
    let (mut killed_after_switch, mut killed_after_retire) = (false, false);
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "two rotations and a retirement did not happen in 300s:\n{}",
            env.issuer.logs().join("\n")
        );
        let name = format!("scheduled-{}", names.len());
        env.request(&name, &csr, "", "ClusterCAIssuer").await;
        env.approve(&name, "Approved").await;
        names.push(name);
        let rotated = env.event_count("CARotated").await;
        let retired = env.event_count("CARetired").await;
        if rotated >= 1 && !killed_after_switch {
            env.issuer.sigkill().await.unwrap();
            env.issuer = start_issuer(&kubeconfig, "issuer-0");
            killed_after_switch = true;
        }
        if retired >= 1 && !killed_after_retire {
            env.issuer.sigkill().await.unwrap();
            env.issuer = start_issuer(&kubeconfig, "issuer-0");
            killed_after_retire = true;
        }
        if rotated >= 2 && retired >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // One more after the second switch: signed by the third CA.
    let name = format!("scheduled-{}", names.len());
    env.request(&name, &csr, "", "ClusterCAIssuer").await;
    env.approve(&name, "Approved").await;
    names.push(name);

    let mut leaves = Vec::new();
    for name in &names {
        let cr = env
            .wait_condition(
                &["certificaterequest", name, "-n", "default"],
                "Ready",
                "True",
            )
            .await;
        let leaf_pem = decode_b64(&cr["status"]["certificate"]);
        let der = pem::parse(&leaf_pem).unwrap();
        let summary = capstan_pki::summarize(der.contents()).unwrap();
        let ca = pem_fingerprints(decode_b64(&cr["status"]["ca"]).as_bytes())[0].clone();
        leaves.push((name.clone(), leaf_pem, summary, ca));
    }
    recorder.abort();
    let history = history.lock().unwrap().clone();
    let first_ca = history[0].signing.clone();
    let cas: std::collections::BTreeSet<&String> = leaves.iter().map(|l| &l.3).collect();
    assert!(cas.len() >= 3, "leaves from three CAs, got {}", cas.len());

    for (name, _, leaf, ca) in &leaves {
        let signed_at = leaf.not_before.unix_timestamp();
        if *ca != first_ca {
            let published = history
                .iter()
                .filter_map(|s| s.next.as_ref())
                .find(|(fp, _, _)| fp == ca)
                .map(|(_, _, at)| *at)
                .unwrap_or_else(|| panic!("{name}: CA {ca} signed without ever being published"));
            assert!(
                signed_at + 1 >= published + DELAY,
                "{name}: signed at {signed_at} by CA {ca} published at {published}, \
                 before the {DELAY}s propagation delay"
            );
        }
        for snapshot in &history {
            let live = snapshot.seen > (signed_at + 1) as f64
                && snapshot.seen < (leaf.not_after.unix_timestamp() - 2) as f64;
            assert!(
                !live || snapshot.bundle.contains(ca),
                "{name}: its CA {ca} left the bundle at {} while the leaf was valid until {}",
                snapshot.seen,
                leaf.not_after
            );
        }
    }
    for pair in history.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        if before.signing_key != after.signing_key {
            let published = history
                .iter()
                .take_while(|s| s.seen <= after.seen)
                .filter_map(|s| s.next.as_ref())
                .any(|(fp, key, _)| *fp == after.signing && *key == after.signing_key);
            assert!(
                published,
                "the signing key changed to one that was never published"
            );
        }
    }
    let last = history.last().unwrap();
    let bundle = env.write(
        "final-bundle.pem",
        &decode_b64(
            &env.get_json(&["secret", "monitoring-ca", "-n", "default"])
                .await
                .unwrap()["data"]["ca-bundle.crt"],
        ),
    );
    let now = unix_now();
    let mut verified = 0;
    for (name, pem_text, leaf, _) in &leaves {
        if (leaf.not_after.unix_timestamp() as f64) < now + 2.0 {
            continue;
        }
        let file = env.write(&format!("{name}.pem"), pem_text);
        let (ok, out) = env.openssl(&["verify", "-CAfile", &bundle, &file]);
        assert!(ok, "{name} does not verify against the bundle: {out}");
        verified += 1;
    }
    assert!(verified > 0, "no live leaf left to verify");
    println!(
        "{} leaves from {} CAs, {} Secret versions, {verified} verified against the final bundle of {}",
        leaves.len(),
        cas.len(),
        history.len(),
        last.bundle.len()
    );
    env.assert_no_key_leaks().await;
}
