//! End to end with cert-manager itself in the loop, on the real control
//! plane: cert-manager's own controller (built from its Go module, see
//! `capstan_tests::controlplane::cert_manager`) turns a `cert-manager.io/v1`
//! Certificate whose `issuerRef` names a capstan `ClusterCAIssuer` into a
//! CertificateRequest, its approver approves it, the real `capstan-issuer`
//! signs it, and cert-manager writes the Secret and marks the Certificate
//! Ready; the result is checked with the real openssl, kube-apiserver's
//! audit log and cert-manager's own Prometheus metrics. A third test
//! rotates capstan's CA and lets cert-manager renew on its own at
//! `renewBefore`; a fourth puts a Certificate of cert-manager's own CA
//! issuer beside one of capstan's and compares what a user sees of both.
//!
//! Each test starts its own control plane (no scheduler or kwok: no pods
//! are needed), capstan-issuer and cert-manager. cert-manager runs without
//! its webhook, so nothing checks an approver's `approve` permission on
//! `signers`; the second test asks kube-apiserver the SubjectAccessReview
//! that webhook would ask, and lets real RBAC judge the approval write.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use capstan_tests::cluster::{
    self, MASTERS, decode_b64, metric_value, openssl_in, p256_ca, request_condition_args,
    request_condition_patch, user_kubeconfig,
};
use capstan_tests::controlplane::ControlPlane;
use capstan_tests::controlplane::cert_manager::{self, APPROVER, CertManager};
use capstan_tests::harness::{Kubectl, RunningBinary, await_condition, condition, rendered_chart};
use capstan_tests::hygiene;
use capstan_testserver::RequestRecord;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(200);

/// The user capstan-issuer runs as (by impersonation, in `system:masters`).
const ISSUER_USER: &str = "system:serviceaccount:default:capstan-issuer";
/// The ClusterCAIssuer every test signs with.
const ISSUER_NAME: &str = "web-ca";
/// A self-managed ClusterCAIssuer whose CA capstan makes and keeps.
const CLUSTER_ISSUER: &str = "apiVersion: capstan.dev/v1alpha1
kind: ClusterCAIssuer
metadata:
  name: web-ca
spec:
  maxDuration: 720h
  selfManaged:
    secretName: web-ca
    keyAlgorithm: ECDSAP256
";
/// A Certificate for capstan's ClusterCAIssuer, as a user writes it.
const CERTIFICATE: &str = "apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: web
  namespace: default
spec:
  secretName: web-tls
  commonName: web.default.svc
  dnsNames: [web.default.svc, web.default.svc.cluster.local]
  duration: 24h
  privateKey:
    algorithm: ECDSA
    size: 256
  usages: [digital signature, key encipherment, server auth]
  issuerRef:
    group: capstan.dev
    kind: ClusterCAIssuer
    name: web-ca
";

struct Env {
    cp: ControlPlane,
    kubectl: Kubectl,
    issuer: RunningBinary,
    cm: CertManager,
    dir: tempfile::TempDir,
}

/// A control plane with capstan's and cert-manager's CRDs, capstan-issuer,
/// cert-manager's controller as `cert_manager` says, and a Ready
/// self-managed ClusterCAIssuer.
async fn start(cert_manager: cert_manager::Builder) -> Env {
    let cp = ControlPlane::builder()
        .workloads(false)
        .start()
        .await
        .unwrap();
    let kubectl = Kubectl::for_server(&cp).unwrap();
    kubectl.apply_crds(false).await.unwrap();
    // Applies cert-manager's CRDs, from the module it was built from.
    let cm = cert_manager.start(&cp).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = user_kubeconfig(&cp, dir.path(), "issuer", ISSUER_USER, MASTERS).unwrap();
    let issuer = cluster::start_issuer(&kubeconfig, "default", "issuer-0").unwrap();
    let env = Env {
        cp,
        kubectl,
        issuer,
        cm,
        dir,
    };
    env.kubectl.apply(CLUSTER_ISSUER).await;
    env.wait_condition(&["clustercaissuer", ISSUER_NAME], "Ready", "True")
        .await;
    env
}

impl Env {
    /// Everything a failure message needs: both controllers' logs.
    fn logs(&self) -> String {
        format!(
            "--- capstan-issuer ---\n{}\n--- cert-manager-controller ---\n{}",
            self.issuer.logs().join("\n"),
            self.cm.logs(60)
        )
    }

    async fn wait_condition(&self, args: &[&str], type_: &str, status: &str) -> Value {
        match self
            .kubectl
            .wait_condition(args, type_, status, WAIT, POLL)
            .await
        {
            Ok(obj) => obj,
            Err(e) => panic!("{e}\n{}", self.logs()),
        }
    }

    /// The CertificateRequests cert-manager made for Certificate `web`.
    async fn requests_of_web(&self) -> Vec<Value> {
        let list = self
            .kubectl
            .get_json(&["certificaterequests", "-n", "default"])
            .await
            .unwrap();
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| {
                r["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|o| {
                        o.iter()
                            .any(|o| o["kind"] == "Certificate" && o["name"] == "web")
                    })
            })
            .cloned()
            .collect()
    }

    /// Waits until Certificate `web` has finished issuing `revision`.
    async fn wait_issued(&self, revision: u64) -> Value {
        cert_manager::wait_issued(&self.kubectl, "default", "web", revision, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()))
    }

    /// Waits for cert-manager to create Certificate `web`'s one request.
    async fn request_of_web(&self) -> Value {
        let found = await_condition(
            "cert-manager's CertificateRequest for web",
            WAIT,
            POLL,
            || async {
                let requests = self.requests_of_web().await;
                (requests.len() == 1).then(|| requests[0].clone())
            },
        )
        .await;
        match found {
            Ok(r) => r,
            Err(e) => panic!("{e}\n{}", self.logs()),
        }
    }

    fn openssl(&self, args: &[&str]) -> String {
        let (ok, out) = openssl_in(self.dir.path(), args);
        assert!(ok, "openssl {args:?}: {out}");
        out
    }

    fn write(&self, file: &str, content: &str) -> String {
        let path = self.dir.path().join(file);
        std::fs::write(&path, content).unwrap();
        path.to_str().unwrap().to_owned()
    }

    /// Checks Secret `web-tls` as cert-manager wrote it from capstan's
    /// answer: the leaf verifies against `ca.crt` (the ClusterCAIssuer's
    /// published CA) with openssl, `tls.key` is the leaf's key, and the leaf
    /// is what the Certificate asked for. Returns the leaf's fingerprint and
    /// public key.
    async fn check_issued_secret(&self) -> (String, String) {
        let secret = self
            .kubectl
            .get_json(&["secret", "web-tls", "-n", "default"])
            .await
            .unwrap();
        assert_eq!(secret["type"], "kubernetes.io/tls", "{secret}");
        let crt = self.write("tls.crt", &decode_b64(&secret["data"]["tls.crt"]));
        let key = self.write("tls.key", &decode_b64(&secret["data"]["tls.key"]));
        let ca = self.write("ca.crt", &decode_b64(&secret["data"]["ca.crt"]));

        let out = self.openssl(&["verify", "-CAfile", &ca, &crt]);
        assert!(out.contains(": OK"), "{out}");
        // ca.crt is the CA the ClusterCAIssuer publishes.
        let issuer = self
            .kubectl
            .get_json(&["clustercaissuer", ISSUER_NAME])
            .await
            .unwrap();
        assert_eq!(
            fingerprint(self, &ca),
            issuer["status"]["ca"]["fingerprint"].as_str().unwrap(),
            "{issuer}"
        );
        // The key cert-manager generated is the leaf's.
        let from_key = self.openssl(&["pkey", "-in", &key, "-pubout"]);
        let from_crt = self.openssl(&["x509", "-in", &crt, "-noout", "-pubkey"]);
        assert!(from_key.contains("BEGIN PUBLIC KEY"), "{from_key}");
        assert_eq!(
            from_key.trim(),
            from_crt.trim(),
            "tls.key is not tls.crt's key"
        );
        let text = self.openssl(&["x509", "-in", &crt, "-noout", "-text"]);
        for needle in [
            "Subject: CN = web.default.svc",
            "DNS:web.default.svc",
            "DNS:web.default.svc.cluster.local",
            "Digital Signature, Key Encipherment",
            "TLS Web Server Authentication",
            "CA:FALSE",
            "NIST CURVE: P-256",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        // The 24h asked: valid in 23h, expired in 25h.
        for (seconds, expected) in [(23 * 3600, "will not expire"), (25 * 3600, "will expire")] {
            let (_, end) = openssl_in(
                self.dir.path(),
                &[
                    "x509",
                    "-in",
                    &crt,
                    "-noout",
                    "-checkend",
                    &seconds.to_string(),
                ],
            );
            assert!(end.contains(expected), "-checkend {seconds}: {end}");
        }
        (fingerprint(self, &crt), from_crt)
    }

    /// kube-apiserver's audit records of writes to CertificateRequest
    /// `name`'s status (successful ones), oldest first, once each of
    /// `expected_users` has written; fails if anyone else wrote.
    async fn status_writes(&self, name: &str, expected_users: &[&str]) -> Vec<RequestRecord> {
        // The audit log is written as requests complete: poll for the
        // writes that must be there.
        let found = await_condition("audited status writes", WAIT, POLL, || async {
            let writes: Vec<RequestRecord> = self
                .cp
                .request_log()
                .into_iter()
                .filter(|r| {
                    r.resource == "certificaterequests"
                        && r.subresource == "status"
                        && r.name == name
                        && matches!(r.verb.as_str(), "patch" | "update")
                        && (200..300).contains(&r.code)
                })
                .collect();
            expected_users
                .iter()
                .all(|u| writes.iter().any(|w| w.user == *u))
                .then_some(writes)
        })
        .await;
        let mut writes =
            found.unwrap_or_else(|e| panic!("{e} by {expected_users:?}\n{}", self.logs()));
        writes.sort_by(|a, b| a.time.cmp(&b.time));
        assert!(
            writes
                .iter()
                .all(|w| expected_users.contains(&w.user.as_str())),
            "status writes by others than {expected_users:?}: {writes:#?}"
        );
        writes
    }

    /// Scans objects, both controllers' logs and metrics for private keys.
    async fn assert_no_key_leaks(&self) {
        let mut output = self.issuer.logs().join("\n");
        output.push_str(&self.issuer.metrics_text().await.unwrap_or_default());
        output.push_str(&std::fs::read_to_string(self.cm.process().log_path()).unwrap());
        output.push_str(&self.cm.metrics().await.unwrap_or_default());
        let keys = hygiene::keys_in_dir(self.dir.path());
        assert!(!keys.is_empty(), "tls.key is scanned for");
        let scanned = hygiene::assert_no_key_leaks_in(&self.kubectl, output, &keys).await;
        println!("key scan: {scanned:?}");
    }
}

/// SHA-256 fingerprint of a PEM certificate file, as capstan writes it
/// (lowercase hex, no separators).
fn fingerprint(env: &Env, file: &str) -> String {
    let out = env.openssl(&["x509", "-in", file, "-noout", "-fingerprint", "-sha256"]);
    out.trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_lowercase()
}

/// The series labels cert-manager's certificate collector gives `web`.
fn web_labels(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut labels = vec![
        ("name", "web"),
        ("namespace", "default"),
        ("issuer_name", ISSUER_NAME),
        ("issuer_kind", "ClusterCAIssuer"),
        ("issuer_group", "capstan.dev"),
    ];
    labels.extend_from_slice(extra);
    labels
}

/// A Certificate for capstan's ClusterCAIssuer goes all the way through
/// cert-manager: request, approval, capstan's signature, Secret, Ready, and
/// cert-manager's metrics say so; a renewal goes the same way.
#[tokio::test]
async fn cert_manager_issues_a_certificate_through_capstan() {
    let env = start(CertManager::builder()).await;
    env.kubectl.apply(CERTIFICATE).await;
    let cert = env.wait_issued(1).await;
    let ready = condition(&cert, "Ready").unwrap();
    assert_eq!(ready["reason"], "Ready", "{cert}");

    // One request, made by cert-manager for the Certificate, approved by
    // its approver and signed by capstan.
    let requests = env.requests_of_web().await;
    assert_eq!(requests.len(), 1, "{requests:#?}");
    let request = &requests[0];
    let name = request["metadata"]["name"].as_str().unwrap();
    let approved = condition(request, "Approved").unwrap_or_else(|| panic!("{request}"));
    assert_eq!(approved["status"], "True", "{request}");
    assert_eq!(approved["reason"], "cert-manager.io", "{request}");
    let signed = condition(request, "Ready").unwrap_or_else(|| panic!("{request}"));
    assert_eq!(signed["status"], "True", "{request}");
    assert_eq!(signed["reason"], "Issued", "{request}");
    assert_eq!(request["spec"]["issuerRef"]["group"], "capstan.dev");
    assert_eq!(request["spec"]["duration"], "24h0m0s", "{request}");

    // Who wrote what, from the audit log: cert-manager created the request
    // and approved it, capstan wrote the signed status, nobody else wrote
    // its status, and the signature came after the approval.
    let log = env.cp.request_log();
    assert!(
        log.iter().any(|r| r.user == cert_manager::USER
            && r.verb == "create"
            && r.resource == "certificaterequests"
            && (200..300).contains(&r.code)),
        "cert-manager created no CertificateRequest"
    );
    let writes = env
        .status_writes(name, &[cert_manager::USER, ISSUER_USER])
        .await;
    let first_approval = writes
        .iter()
        .position(|w| w.user == cert_manager::USER)
        .unwrap();
    let first_signature = writes.iter().position(|w| w.user == ISSUER_USER).unwrap();
    assert!(first_approval < first_signature, "{writes:#?}");

    let (first_leaf, first_key) = env.check_issued_secret().await;

    // cert-manager's own metrics: the Certificate is Ready (and not not
    // Ready), and expires when its status says.
    let body = await_condition("cert-manager's metrics of web", WAIT, POLL, || async {
        let body = env.cm.metrics().await?;
        (metric_value(
            &body,
            "certmanager_certificate_ready_status",
            &web_labels(&[("condition", "True")]),
        ) == Some(1.0))
        .then_some(body)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs()));
    for other in ["False", "Unknown"] {
        assert_eq!(
            metric_value(
                &body,
                "certmanager_certificate_ready_status",
                &web_labels(&[("condition", other)])
            ),
            Some(0.0),
            "{body}"
        );
    }
    let not_after = time::OffsetDateTime::parse(
        cert["status"]["notAfter"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let exposed = metric_value(
        &body,
        "certmanager_certificate_expiration_timestamp_seconds",
        &web_labels(&[]),
    )
    .unwrap_or_else(|| panic!("{body}"));
    #[allow(clippy::cast_precision_loss)]
    let expected = not_after.unix_timestamp() as f64;
    assert!((exposed - expected).abs() < 1.0, "{exposed} vs {not_after}");

    // A renewal, triggered as `cmctl renew` does it (an Issuing condition
    // on the status): cert-manager makes revision 2's request with a new
    // key, capstan signs it, and the Secret holds the new pair.
    cert_manager::renew(&env.kubectl, "default", "web")
        .await
        .unwrap();
    let renewed = env.wait_issued(2).await;
    let second = env
        .requests_of_web()
        .await
        .into_iter()
        .find(|r| r["metadata"]["annotations"]["cert-manager.io/certificate-revision"] == "2")
        .unwrap_or_else(|| panic!("no request of revision 2: {renewed}"));
    let signed = condition(&second, "Ready").unwrap_or_else(|| panic!("{second}"));
    assert_eq!(signed["reason"], "Issued", "{second}");
    let second_name = second["metadata"]["name"].as_str().unwrap();
    // Fails unless both wrote its status, and only they.
    env.status_writes(second_name, &[cert_manager::USER, ISSUER_USER])
        .await;
    let (second_leaf, second_key) = env.check_issued_secret().await;
    assert_ne!(
        second_leaf, first_leaf,
        "the Secret still holds the first leaf"
    );
    assert_ne!(second_key, first_key, "the renewal kept the key");

    env.assert_no_key_leaks().await;
}

/// The user who approves by hand in the second test: it holds the chart's
/// `approve` grant on capstan's signers.
const APPROVER_USER: &str = "approver@example.com";

/// With cert-manager's approver off the request waits unapproved and
/// capstan leaves it alone; a user holding the chart's `approve` grant on
/// capstan's signers (and the status write real RBAC needs besides)
/// approves it through the status subresource, and capstan signs it.
#[tokio::test]
async fn without_the_approver_capstan_waits_for_an_approval_by_hand() {
    let env = start(CertManager::builder().without(APPROVER)).await;
    assert!(
        !env.cm.controllers().iter().any(|c| c == APPROVER),
        "{:?}",
        env.cm.controllers()
    );
    env.kubectl.apply(CERTIFICATE).await;
    let request = env.request_of_web().await;
    let name = request["metadata"]["name"].as_str().unwrap().to_owned();

    // capstan is alive and caught up: a request made after cert-manager's,
    // approved by the admin, gets signed...
    let csr = sentinel_csr(env.dir.path());
    env.kubectl
        .apply(&format!(
            "apiVersion: cert-manager.io/v1\nkind: CertificateRequest\nmetadata:\n  name: sentinel\n  namespace: default\nspec:\n  request: {csr}\n  issuerRef:\n    group: capstan.dev\n    kind: ClusterCAIssuer\n    name: {ISSUER_NAME}\n"
        ))
        .await;
    env.kubectl
        .approve_request("default", "sentinel")
        .await
        .unwrap();
    env.wait_condition(
        &["certificaterequest", "sentinel", "-n", "default"],
        "Ready",
        "True",
    )
    .await;
    // ...while cert-manager's waits, unapproved and unsigned, and so does
    // the Certificate.
    let waiting = env
        .kubectl
        .get_json(&["certificaterequest", &name, "-n", "default"])
        .await
        .unwrap();
    assert!(condition(&waiting, "Approved").is_none(), "{waiting}");
    assert!(condition(&waiting, "Ready").is_none(), "{waiting}");
    assert!(waiting["status"]["certificate"].is_null(), "{waiting}");
    let cert = env
        .kubectl
        .get_json(&["certificate", "web", "-n", "default"])
        .await
        .unwrap();
    assert_ne!(
        condition(&cert, "Ready").map(|c| c["status"].clone()),
        Some(Value::from("True")),
        "{cert}"
    );
    assert!(
        env.kubectl
            .get_json(&["secret", "web-tls", "-n", "default"])
            .await
            .is_none(),
        "no Secret before approval"
    );

    // The approver holds the chart's ClusterRole granting `approve` on
    // capstan's signers, and only that.
    let chart_role = chart_approve_role();
    let role_name = chart_role["metadata"]["name"].as_str().unwrap().to_owned();
    env.kubectl
        .apply(&serde_norway::to_string(&chart_role).unwrap())
        .await;
    env.kubectl
        .apply(&format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: test-approver\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: {role_name}\nsubjects:\n  - apiGroup: rbac.authorization.k8s.io\n    kind: User\n    name: {APPROVER_USER}\n"
        ))
        .await;
    // That is what cert-manager's webhook asks before it lets an approval
    // through (`approve` on signer `<resource>.<group>/*` or
    // `.../<name>`): allowed for capstan's issuer, not for others.
    assert!(
        may_approve(&env, &format!("clustercaissuers.capstan.dev/{ISSUER_NAME}")).await
            || may_approve(&env, "clustercaissuers.capstan.dev/*").await
    );
    for foreign in [
        "issuers.cert-manager.io/*",
        "clusterissuers.cert-manager.io/*",
    ] {
        assert!(!may_approve(&env, foreign).await, "{foreign}");
    }
    let approver = Kubectl::new(
        &env.cp
            .user_kubeconfig_at(
                &env.cp.url(),
                env.dir.path(),
                "approver",
                APPROVER_USER,
                &["capstan-approvers"],
            )
            .unwrap(),
    )
    .unwrap();
    let patch = request_condition_patch("Approved", "approved by hand");
    let args = request_condition_args("default", &name, &patch);
    // The signers grant is no API permission by itself: writing the status
    // subresource needs one of its own (cert-manager's chart gives its
    // controller patch and update on certificaterequests/status), and
    // kube-apiserver's RBAC refuses the approval without it.
    let refused = approver.run(&args).await.unwrap();
    assert!(!refused.success(), "{}", refused.stdout);
    assert!(
        refused.stderr.contains("forbidden")
            && refused.stderr.contains("certificaterequests/status"),
        "{}",
        refused.stderr
    );
    let still = env
        .kubectl
        .get_json(&["certificaterequest", &name, "-n", "default"])
        .await
        .unwrap();
    assert!(condition(&still, "Approved").is_none(), "{still}");

    // With it (get too: kubectl patch reads the subresource first), the
    // approval goes through.
    env.kubectl
        .apply(&format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: approve-status\n  namespace: default\nrules:\n  - apiGroups: [cert-manager.io]\n    resources: [certificaterequests/status]\n    verbs: [get, patch]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: approve-status\n  namespace: default\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: approve-status\nsubjects:\n  - apiGroup: rbac.authorization.k8s.io\n    kind: User\n    name: {APPROVER_USER}\n"
        ))
        .await;
    // RBAC changes reach the authorizer through its informer: retry the
    // write until it is allowed.
    let last = std::sync::Mutex::new(String::new());
    await_condition("the approver's status write", WAIT, POLL, || async {
        let out = approver.run(&args).await.ok()?;
        *last.lock().unwrap() = out.stderr.clone();
        out.success().then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", last.lock().unwrap()));

    let cert = env.wait_issued(1).await;
    assert_eq!(condition(&cert, "Ready").unwrap()["reason"], "Ready");
    let signed = env
        .wait_condition(
            &["certificaterequest", &name, "-n", "default"],
            "Ready",
            "True",
        )
        .await;
    assert_eq!(condition(&signed, "Ready").unwrap()["reason"], "Issued");
    assert_eq!(
        condition(&signed, "Approved").unwrap()["message"],
        "approved by hand"
    );

    // From the audit log: the approver wrote the approval, capstan the
    // signature after it, and capstan wrote nothing to the request before.
    let writes = env
        .status_writes(&name, &[APPROVER_USER, ISSUER_USER])
        .await;
    assert_eq!(writes[0].user, APPROVER_USER, "{writes:#?}");

    env.check_issued_secret().await;
    env.assert_no_key_leaks().await;
}

/// Whether [`APPROVER_USER`] may `approve` cert-manager.io signer `name`,
/// asked as cert-manager's approval webhook asks.
async fn may_approve(env: &Env, name: &str) -> bool {
    cluster::may_on_signer(
        env.cp.client().await.unwrap(),
        APPROVER_USER,
        &["capstan-approvers", "system:authenticated"],
        "approve",
        "cert-manager.io",
        name,
    )
    .await
    .unwrap()
}

/// The chart's ClusterRole that grants `approve` on capstan's signers, from
/// `helm template` with the chart's defaults.
fn chart_approve_role() -> serde_norway::Value {
    use serde::Deserialize as _;
    let text = rendered_chart().unwrap();
    let roles: Vec<serde_norway::Value> = serde_norway::Deserializer::from_str(&text)
        .map(|d| serde_norway::Value::deserialize(d).unwrap())
        .filter(|d| {
            d["kind"] == "ClusterRole"
                && d["rules"].as_sequence().is_some_and(|rules| {
                    rules.iter().any(|r| {
                        r["resources"]
                            .as_sequence()
                            .is_some_and(|s| s.iter().any(|s| s == "signers"))
                            && r["verbs"]
                                .as_sequence()
                                .is_some_and(|v| v.iter().any(|v| v == "approve"))
                    })
                })
        })
        .collect();
    assert_eq!(roles.len(), 1, "{roles:#?}");
    let role = roles.into_iter().next().unwrap();
    // Only the signers grant: nothing else rides along.
    for rule in role["rules"].as_sequence().unwrap() {
        assert_eq!(rule["apiGroups"][0], "cert-manager.io", "{rule:?}");
        assert_eq!(
            rule["resources"].as_sequence().unwrap().len(),
            1,
            "{rule:?}"
        );
        assert_eq!(rule["resources"][0], "signers", "{rule:?}");
        assert_eq!(rule["verbs"].as_sequence().unwrap().len(), 1, "{rule:?}");
    }
    role
}

/// An openssl-made P-256 CSR for the sentinel request (base64 PEM, for
/// `spec.request`); its key stays in `dir`.
fn sentinel_csr(dir: &Path) -> String {
    cluster::p256_csr(
        dir,
        "sentinel",
        "/CN=sentinel",
        Some("DNS:sentinel.default.svc"),
    )
}

/// A self-managed ClusterCAIssuer that switches signing 3 s after a
/// rotation starts.
const ROTATING_ISSUER: &str = "apiVersion: capstan.dev/v1alpha1
kind: ClusterCAIssuer
metadata:
  name: rotating-ca
spec:
  selfManaged:
    secretName: rotating-ca
    propagationDelay: 3s
";

/// A Certificate cert-manager renews 30 s after each issuance
/// (`renewBefore` of a 1 h leaf).
const SHORT_LIVED: &str = "apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: short
  namespace: default
spec:
  secretName: short-tls
  commonName: short.default.svc
  dnsNames: [short.default.svc]
  duration: 1h
  renewBefore: 59m30s
  privateKey:
    algorithm: ECDSA
    size: 256
  issuerRef:
    group: capstan.dev
    kind: ClusterCAIssuer
    name: rotating-ca
";

/// The `status.ca.fingerprint` of ClusterCAIssuer `name`.
async fn signing_fingerprint(env: &Env, name: &str) -> Option<String> {
    let issuer = env.kubectl.get_json(&["clustercaissuer", name]).await?;
    issuer["status"]["ca"]["fingerprint"]
        .as_str()
        .map(str::to_owned)
}

/// Writes `key` of Secret `default/secret` to `file` in the test's
/// directory; returns its path.
async fn secret_file(env: &Env, secret: &str, key: &str, file: &str) -> String {
    let s = env
        .kubectl
        .get_json(&["secret", secret, "-n", "default"])
        .await
        .unwrap_or_else(|| panic!("no Secret {secret}\n{}", env.logs()));
    env.write(file, &decode_b64(&s["data"][key]))
}

/// After a CA rotation, cert-manager's own renewal (at `renewBefore`, with
/// nobody asking) gets a leaf from the new CA: the Secret's `ca.crt` moves
/// to it, and the leaves before and after both verify against the bundle
/// capstan publishes meanwhile.
#[tokio::test]
async fn after_a_ca_rotation_cert_manager_renews_from_the_new_ca_on_its_own() {
    let env = start(CertManager::builder()).await;
    env.kubectl.apply(ROTATING_ISSUER).await;
    env.wait_condition(&["clustercaissuer", "rotating-ca"], "Ready", "True")
        .await;
    env.kubectl.apply(SHORT_LIVED).await;
    let first = cert_manager::wait_issued(&env.kubectl, "default", "short", 1, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", env.logs()));
    // cert-manager schedules the renewal at notAfter - renewBefore.
    let at = |field: &str| {
        time::OffsetDateTime::parse(
            first["status"][field].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap_or_else(|e| panic!("{field}: {e}: {first}"))
    };
    assert_eq!(
        at("notAfter") - at("renewalTime"),
        time::Duration::seconds(59 * 60 + 30),
        "{first}"
    );
    let old_ca = signing_fingerprint(&env, "rotating-ca").await.unwrap();
    let first_leaf = secret_file(&env, "short-tls", "tls.crt", "first.crt").await;
    let first_ca = secret_file(&env, "short-tls", "ca.crt", "first-ca.crt").await;
    // Its key, so that the leak scan looks for it.
    secret_file(&env, "short-tls", "tls.key", "first.key").await;
    assert_eq!(fingerprint(&env, &first_ca), old_ca);

    env.kubectl.rotate("rotating-ca", "drill-1").await.unwrap();
    let new_ca = await_condition("the new CA signing", WAIT, POLL, || async {
        signing_fingerprint(&env, "rotating-ca")
            .await
            .filter(|f| *f != old_ca)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs()));

    // The renewals come every 30 s; one after the switch is from the new CA.
    let renewed = await_condition(
        "a renewal by cert-manager from the new CA",
        2 * WAIT,
        POLL,
        || async {
            let cert = env
                .kubectl
                .get_json(&["certificate", "short", "-n", "default"])
                .await?;
            let ready = condition(&cert, "Ready").is_some_and(|c| c["status"] == "True");
            let ca = secret_file(&env, "short-tls", "ca.crt", "renewed-ca.crt").await;
            (ready && cert["status"]["revision"].as_u64()? >= 2 && fingerprint(&env, &ca) == new_ca)
                .then_some(cert)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs()));
    let leaf = secret_file(&env, "short-tls", "tls.crt", "renewed.crt").await;
    let ca = secret_file(&env, "short-tls", "ca.crt", "renewed-ca.crt").await;
    secret_file(&env, "short-tls", "tls.key", "renewed.key").await;
    let out = env.openssl(&["verify", "-CAfile", &ca, &leaf]);
    assert!(out.contains(": OK"), "{out}");
    let (old_verifies, _) = openssl_in(env.dir.path(), &["verify", "-CAfile", &first_ca, &leaf]);
    assert!(!old_verifies, "the renewed leaf is not from the old CA");
    // The bundle capstan publishes trusts the leaves of both CAs.
    let bundle = secret_file(&env, "rotating-ca", "ca-bundle.crt", "bundle.crt").await;
    for l in [&first_leaf, &leaf] {
        let out = env.openssl(&["verify", "-CAfile", &bundle, l]);
        assert!(out.contains(": OK"), "{l}: {out}");
    }

    // Nobody but cert-manager asked for the renewals: no status write on
    // the Certificate by anyone else.
    let others: Vec<RequestRecord> = env
        .cp
        .request_log()
        .into_iter()
        .filter(|r| {
            r.resource == "certificates"
                && r.subresource == "status"
                && matches!(r.verb.as_str(), "patch" | "update")
                && r.user != cert_manager::USER
        })
        .collect();
    assert!(others.is_empty(), "{others:#?}");
    let revision = renewed["status"]["revision"].as_u64().unwrap();
    println!("renewed from the new CA at revision {revision}");
    env.assert_no_key_leaks().await;
}

/// cert-manager's CA ClusterIssuer with an openssl-made P-256 CA.
const CM_ISSUER: &str = "apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata:
  name: cm-ca
spec:
  ca:
    secretName: cm-ca
";

/// `(type, reason, from)` of the Events `kubectl describe` prints under
/// `Events:`, sorted.
///
/// Left out: cert-manager's request-manager retrying a create its informer
/// had not seen yet (`RequestFailed ... already exists`). That race is in
/// cert-manager's own controller, before any issuer is involved, and on a
/// busy machine it can hit either Certificate.
fn described_events(describe: &str) -> Vec<(String, String, String)> {
    let mut rows: Vec<(String, String, String)> = describe
        .lines()
        .skip_while(|l| !l.starts_with("Events:"))
        .skip(3)
        .filter(|l| !(l.contains("RequestFailed") && l.contains("already exists")))
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            let (type_, reason, _age) = (cols.next()?, cols.next()?, cols.next()?);
            Some((type_.to_owned(), reason.to_owned(), cols.next()?.to_owned()))
        })
        .collect();
    rows.sort();
    rows
}

/// A Certificate through capstan looks to its user exactly as one through
/// cert-manager's own CA issuer: the same conditions on the Certificate and
/// its request, the same Secret keys, the same `kubectl get` and `kubectl
/// describe`, and the same series in cert-manager's metrics.
#[tokio::test]
async fn a_capstan_certificate_looks_like_one_from_cert_managers_ca_issuer() {
    let env = start(CertManager::builder()).await;
    p256_ca(env.dir.path(), "cm-ca");
    env.kubectl
        .run_ok(&[
            "create",
            "secret",
            "tls",
            "cm-ca",
            "-n",
            "kube-system",
            &format!("--cert={}", env.dir.path().join("cm-ca.crt").display()),
            &format!("--key={}", env.dir.path().join("cm-ca.key").display()),
        ])
        .await
        .unwrap();
    env.kubectl.apply(CM_ISSUER).await;
    env.wait_condition(&["clusterissuer", "cm-ca"], "Ready", "True")
        .await;
    let peer = CERTIFICATE
        .replace("name: web\n", "name: web-cm\n")
        .replace("secretName: web-tls", "secretName: web-cm-tls")
        .replace("group: capstan.dev", "group: cert-manager.io")
        .replace("kind: ClusterCAIssuer", "kind: ClusterIssuer")
        .replace("name: web-ca", "name: cm-ca");
    env.kubectl.apply(CERTIFICATE).await;
    env.kubectl.apply(&peer).await;
    let mut certs = Vec::new();
    for name in ["web", "web-cm"] {
        certs.push(
            cert_manager::wait_issued(&env.kubectl, "default", name, 1, WAIT)
                .await
                .unwrap_or_else(|e| panic!("{e}\n{}", env.logs())),
        );
    }

    // The Certificates' conditions.
    let conditions = |obj: &Value| -> Vec<(String, String, String, String)> {
        let mut c: Vec<_> = obj["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
                (s("type"), s("status"), s("reason"), s("message"))
            })
            .collect();
        c.sort();
        c
    };
    assert_eq!(conditions(&certs[0]), conditions(&certs[1]));

    // Their requests' conditions (the messages name the issuer).
    let requests = env
        .kubectl
        .get_json(&["certificaterequests", "-n", "default"])
        .await
        .unwrap();
    let of = |cert: &str| -> Vec<(String, String, String)> {
        let request = requests["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["metadata"]["annotations"]["cert-manager.io/certificate-name"] == cert)
            .unwrap_or_else(|| panic!("no request of {cert}: {requests}"));
        conditions(request)
            .into_iter()
            .map(|(t, s, r, _)| (t, s, r))
            .collect()
    };
    assert_eq!(of("web"), of("web-cm"));

    // The Secrets.
    let keys = |secret: Value| -> (Value, Vec<String>) {
        let mut k: Vec<String> = secret["data"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        k.sort();
        (secret["type"].clone(), k)
    };
    let ours = keys(
        env.kubectl
            .get_json(&["secret", "web-tls", "-n", "default"])
            .await
            .unwrap(),
    );
    let theirs = keys(
        env.kubectl
            .get_json(&["secret", "web-cm-tls", "-n", "default"])
            .await
            .unwrap(),
    );
    assert_eq!(ours, theirs);
    assert_eq!(ours.1, ["ca.crt", "tls.crt", "tls.key"]);

    // What kubectl prints.
    let table = env
        .kubectl
        .run_ok(&["get", "certificates", "-n", "default"])
        .await
        .unwrap();
    let columns = |name: &str| -> Vec<String> {
        let row = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row {name}:\n{table}"));
        // NAME READY SECRET AGE: READY, and the SECRET with its prefix.
        let cols: Vec<&str> = row.split_whitespace().collect();
        vec![cols[1].to_owned(), cols[2].replace(name, "")]
    };
    assert_eq!(columns("web"), columns("web-cm"), "{table}");
    assert_eq!(columns("web")[0], "True", "{table}");
    let mut described = Vec::new();
    for name in ["web", "web-cm"] {
        described.push(
            env.kubectl
                .run_ok(&["describe", "certificate", name, "-n", "default"])
                .await
                .unwrap(),
        );
    }
    let (ours, theirs) = (&described[0], &described[1]);
    for text in [ours, theirs] {
        assert!(
            text.contains("Certificate is up to date and has not expired"),
            "{text}"
        );
    }
    let events = described_events(ours);
    assert!(!events.is_empty(), "{ours}");
    assert_eq!(events, described_events(theirs), "{ours}\n{theirs}");

    // cert-manager's metrics: the same series, Ready, for both.
    let body = await_condition("cert-manager's metrics of both", WAIT, POLL, || async {
        let body = env.cm.metrics().await?;
        ["web", "web-cm"]
            .iter()
            .all(|name| {
                metric_value(
                    &body,
                    "certmanager_certificate_ready_status",
                    &[("name", name), ("condition", "True")],
                ) == Some(1.0)
            })
            .then_some(body)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs()));
    let series = |name: &str| -> Vec<String> {
        let mut s: Vec<String> = body
            .lines()
            .filter(|l| l.contains(&format!("name=\"{name}\"")))
            .filter_map(|l| l.split('{').next().map(str::to_owned))
            .collect();
        s.sort();
        s
    };
    assert_eq!(series("web"), series("web-cm"), "{body}");
    env.assert_no_key_leaks().await;
}
