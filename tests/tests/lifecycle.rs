//! End to end on the real control plane: what a kubelet does to a pod, and
//! what a platform team's first week does to a controller.
//!
//! * **Shutdown in every state.** Each binary gets SIGTERM (as the kubelet
//!   sends it) in one state at a time and must exit 0 within 5 s: all well
//!   (and leading), following (waiting for a lease it does not hold), its
//!   CRDs not installed, the API server unreachable, the API server
//!   answering 503 to everything (leader election retrying), the issuer
//!   mid-rotation between publish and switch, the rotator mid-rollout, and
//!   either of them serving a scrape that never finishes its request.
//! * **The Lease is released**: the other replica takes over within 2 s of
//!   the leader's SIGTERM, and within the lease duration of its SIGKILL.
//! * **Missing CRDs named**: without capstan's or cert-manager's CRDs each
//!   binary logs an error naming the missing CRD and how to install it,
//!   `/readyz` fails with the same words, and once the CRDs are applied the
//!   controllers start (a request is signed, a bundle written) with no
//!   restart.
//!
//! Each test has its own control plane, so Leases and CRDs are its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use capstan_tests::cluster::{MASTERS, p256_csr, start_binary, user_kubeconfig_at};
use capstan_tests::controlplane::proxy::FaultProxy;
use capstan_tests::controlplane::{ControlPlane, free_port};
use capstan_tests::harness::{Kubectl, RunningBinary, await_condition, strip_ansi};
use capstan_testserver::faults::{Faults, FaultsHandle};
use serde_json::Value;

/// How long a binary may take to exit after SIGTERM.
const STOP: Duration = Duration::from_secs(5);
const WAIT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(50);
/// The lease duration the binaries are started with (their default).
const LEASE: Duration = Duration::from_secs(15);
const BINARIES: [&str; 2] = ["capstan-issuer", "capstan-rotator"];

/// A control plane of the test's own, kubectl, and a kubeconfig for the
/// binaries.
struct Cluster {
    cp: ControlPlane,
    kubectl: Kubectl,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

async fn cluster(workloads: bool, crds: bool) -> Cluster {
    let cp = ControlPlane::builder()
        .workloads(workloads)
        .start()
        .await
        .unwrap();
    let kubectl = Kubectl::for_server(&cp).unwrap();
    if crds {
        kubectl.apply_crds(true).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig_to(&cp, &cp.url(), dir.path(), "capstan");
    Cluster {
        cp,
        kubectl,
        kubeconfig,
        dir,
    }
}

fn kubeconfig_to(cp: &ControlPlane, url: &str, dir: &Path, name: &str) -> PathBuf {
    user_kubeconfig_at(
        cp,
        url,
        dir,
        name,
        "system:serviceaccount:capstan:capstan",
        MASTERS,
    )
    .unwrap()
}

/// Starts `binary` with `kubeconfig` as pod `capstan/<pod>`, its Lease in
/// `capstan`, cluster issuers' Secrets in `capstan`, then `extra`.
fn start(binary: &str, kubeconfig: &Path, pod: &str, extra: &[&str]) -> RunningBinary {
    let mut args = vec![
        "--leader-election-namespace",
        "capstan",
        "--cluster-resource-namespace",
        "capstan",
    ];
    args.extend_from_slice(extra);
    start_binary(
        binary,
        kubeconfig,
        &args,
        &[
            ("POD_NAMESPACE", "capstan"),
            ("POD_NAME", pod),
            ("RUST_LOG", "info"),
        ],
    )
    .unwrap()
}

impl Cluster {
    fn start(&self, binary: &str, pod: &str, extra: &[&str]) -> RunningBinary {
        start(binary, &self.kubeconfig, pod, extra)
    }

    async fn apply(&self, yaml: &str) {
        let out = self.kubectl.stdin("apply", yaml).await;
        assert!(out.success(), "kubectl apply: {}{}", out.stderr, out.stdout);
    }

    async fn namespace(&self, name: &str) {
        self.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"
        ))
        .await;
    }

    /// Waits until ClusterCAIssuer `monitoring-ca` is Ready; returns it.
    async fn issuer_ready(&self) -> Value {
        self.kubectl
            .wait_condition(
                &["clustercaissuer", "monitoring-ca"],
                "Ready",
                "True",
                WAIT,
                POLL,
            )
            .await
            .unwrap()
    }

    /// The ClusterCAIssuer `monitoring-ca`'s CA Secret.
    async fn ca_secret(&self) -> Value {
        self.kubectl
            .get_json(&["secret", "monitoring-ca", "-n", "capstan"])
            .await
            .unwrap()
    }

    /// The holder of Lease `capstan/<binary>`, `None` when free or absent.
    async fn holder(&self, binary: &str) -> Option<String> {
        let lease = self
            .kubectl
            .get_json(&["lease", binary, "-n", "capstan"])
            .await?;
        lease["spec"]["holderIdentity"]
            .as_str()
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
    }

    /// Waits until pod `pod` (its identity is `<pod>-<pid>`) holds the Lease
    /// of `binary`; returns how long that took.
    async fn wait_holder(&self, binary: &str, pod: &str, timeout: Duration) -> Duration {
        let started = Instant::now();
        let prefix = format!("{pod}-");
        await_condition(
            &format!("{pod} to hold the {binary} Lease"),
            timeout,
            POLL,
            || async {
                self.holder(binary)
                    .await
                    .filter(|h| h.starts_with(&prefix))
                    .map(|_| ())
            },
        )
        .await
        .unwrap();
        started.elapsed()
    }
}

/// Sends SIGTERM and asserts that the process exits 0 within [`STOP`];
/// `state` names what it was doing, for the failure message.
async fn assert_stops(bin: &mut RunningBinary, state: &str) {
    let status = bin
        .sigterm(STOP)
        .await
        .unwrap_or_else(|e| panic!("{state}: {e:#}"));
    assert!(
        status.success(),
        "{state}: exited with {status}; logs:\n{}",
        bin.logs().join("\n")
    );
}

/// `/readyz` of a running binary: HTTP status and body.
async fn readyz(bin: &RunningBinary) -> (u16, String) {
    let (_, health) = bin.serving_addresses(WAIT).await.unwrap();
    let out = tokio::process::Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            &format!("http://{health}/readyz"),
        ])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// Waits for a log line of `bin` containing `text`.
async fn wait_log(bin: &RunningBinary, text: &str) -> String {
    strip_ansi(
        &bin.wait_for_log(WAIT, |l| strip_ansi(l).contains(text))
            .await
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_leading_or_following_exits_and_hands_the_lease_over_at_once() {
    let c = cluster(false, true).await;
    c.namespace("capstan").await;
    for binary in BINARIES {
        let mut a = c.start(binary, "a", &[]);
        c.wait_holder(binary, "a", WAIT).await;
        // A follower, waiting for a lease it does not hold.
        let mut b = c.start(binary, "b", &[]);
        wait_log(&b, "starting").await;
        assert_stops(&mut b, &format!("{binary} following")).await;
        assert!(c.holder(binary).await.unwrap().starts_with("a-"));

        // The leader stops: the follower takes over at once.
        let _follower = c.start(binary, "c", &[]);
        wait_log(&_follower, "starting").await;
        let stopped = Instant::now();
        assert_stops(&mut a, &format!("{binary} leading, all well")).await;
        assert!(
            a.logs()
                .iter()
                .any(|l| strip_ansi(l).contains("left leader election")),
            "{binary} did not say it released its Lease:\n{}",
            a.logs().join("\n")
        );
        let handover = stopped.elapsed() + c.wait_holder(binary, "c", WAIT).await;
        println!("{binary}: handover {handover:?} after SIGTERM");
        assert!(
            handover < Duration::from_secs(2),
            "{binary}: handover took {handover:?} after the leader's SIGTERM"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_leader_hands_over_within_the_lease_duration() {
    let c = cluster(false, true).await;
    c.namespace("capstan").await;
    for binary in BINARIES {
        let mut a = c.start(binary, "a", &[]);
        c.wait_holder(binary, "a", WAIT).await;
        let follower = c.start(binary, "b", &[]);
        wait_log(&follower, "starting").await;
        let killed = Instant::now();
        a.sigkill().await.unwrap();
        c.wait_holder(binary, "b", WAIT).await;
        let handover = killed.elapsed();
        println!("{binary}: handover {handover:?} after SIGKILL");
        // kube-lease-manager's follower takes an expired lease by releasing
        // it first and waiting up to a second: at most the lease duration
        // after the last renewal, plus that second and the API calls.
        assert!(
            handover < LEASE + Duration::from_secs(2),
            "{binary}: handover took {handover:?} after the leader's SIGKILL"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_crds_are_named_in_the_log_and_readyz_and_controllers_start_when_they_appear() {
    let c = cluster(false, false).await;
    c.namespace("capstan").await;
    let issuer = c.start("capstan-issuer", "issuer", &[]);
    let rotator = c.start("capstan-rotator", "rotator", &[]);
    for (bin, crd, how) in [
        (
            &issuer,
            "CustomResourceDefinition certificaterequests.cert-manager.io (cert-manager.io/v1) is not installed",
            "install cert-manager first",
        ),
        (
            &issuer,
            "CustomResourceDefinition clustercaissuers.capstan.dev (capstan.dev/v1alpha1) is not installed",
            "install capstan's CRDs",
        ),
        (
            &rotator,
            "CustomResourceDefinition cabundles.capstan.dev (capstan.dev/v1alpha1) is not installed",
            "install capstan's CRDs",
        ),
    ] {
        let line = wait_log(bin, crd).await;
        assert!(line.contains("ERROR") && line.contains(how), "{line}");
        let (code, body) = readyz(bin).await;
        assert_eq!(code, 503, "{body}");
        assert!(
            body.contains("[-]crds failed: ") && body.contains(crd) && body.contains(how),
            "{body}"
        );
    }
    // A second pair, stopped while waiting for the CRDs.
    for binary in BINARIES {
        let mut waiting = start(binary, &c.kubeconfig, "waiting", &["--leader-elect=false"]);
        wait_log(&waiting, "is not installed").await;
        assert_stops(&mut waiting, &format!("{binary} without its CRDs")).await;
    }

    // The CRDs appear: both start their controllers, no restart.
    c.kubectl.apply_crds(true).await.unwrap();
    c.namespace("apps").await;
    c.apply(
        "apiVersion: capstan.dev/v1alpha1
kind: ClusterCAIssuer
metadata:
  name: monitoring-ca
spec:
  selfManaged:
    secretName: monitoring-ca
---
apiVersion: capstan.dev/v1alpha1
kind: CABundle
metadata:
  name: monitoring-ca
spec:
  sources:
  - secret:
      namespace: capstan
      name: monitoring-ca
  target:
    configMap: monitoring-ca
    key: ca.crt
",
    )
    .await;
    let csr = p256_csr(c.dir.path(), "leaf", "/CN=leaf", Some("DNS:leaf.example"));
    c.apply(&format!(
        "apiVersion: cert-manager.io/v1
kind: CertificateRequest
metadata:
  name: leaf
  namespace: apps
spec:
  request: {csr}
  issuerRef:
    group: capstan.dev
    kind: ClusterCAIssuer
    name: monitoring-ca
"
    ))
    .await;
    c.kubectl.approve_request("apps", "leaf").await.unwrap();
    c.kubectl
        .wait_condition(
            &["certificaterequest", "leaf", "-n", "apps"],
            "Ready",
            "True",
            WAIT,
            POLL,
        )
        .await
        .unwrap();
    await_condition("the bundle in apps", WAIT, POLL, || async {
        let cm = c
            .kubectl
            .get_json(&["configmap", "monitoring-ca", "-n", "apps"])
            .await?;
        cm["data"]["ca.crt"]
            .as_str()
            .filter(|b| b.contains("BEGIN CERTIFICATE"))
            .map(|_| ())
    })
    .await
    .unwrap();
    for bin in [&issuer, &rotator] {
        let (code, body) = readyz(bin).await;
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("[+]crds ok"), "{body}");
        wait_log(bin, "CustomResourceDefinition is served now").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_the_api_server_is_unreachable_or_failing() {
    let c = cluster(false, true).await;
    // Nothing listens on this port: every request is refused.
    let closed = format!("https://127.0.0.1:{}", free_port().unwrap());
    let unreachable = kubeconfig_to(&c.cp, &closed, c.dir.path(), "unreachable");
    let proxy = FaultProxy::start(
        &c.cp,
        FaultsHandle::new(Faults {
            error_rate: 1.0,
            error_codes: vec![503],
            include_discovery: true,
            ..Faults::default()
        }),
    )
    .await
    .unwrap();
    let failing = kubeconfig_to(&c.cp, proxy.url(), c.dir.path(), "failing");
    for binary in BINARIES {
        for (kubeconfig, api) in [(&unreachable, "unreachable"), (&failing, "answering 503")] {
            // With leader election: it cannot start, and retries.
            let mut electing = start(binary, kubeconfig, "electing", &[]);
            wait_log(&electing, "could not start leader election; retrying").await;
            assert_stops(
                &mut electing,
                &format!("{binary}: API server {api}, leader election retrying"),
            )
            .await;
            // Without: its controllers retry their watches.
            let mut watching = start(binary, kubeconfig, "watching", &["--leader-elect=false"]);
            wait_log(&watching, "starting").await;
            wait_log(&watching, "could not ask the API server").await;
            assert_stops(
                &mut watching,
                &format!("{binary}: API server {api}, controllers retrying"),
            )
            .await;
        }
    }
}

/// Opens a connection to `bin`'s `/metrics` and sends half a request, as a
/// stuck scraper would; the connection stays open.
async fn half_a_scrape(bin: &RunningBinary) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let (metrics, _) = bin.serving_addresses(WAIT).await.unwrap();
    let mut conn = tokio::net::TcpStream::connect(metrics).await.unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: capstan\r\n")
        .await
        .unwrap();
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_serving_a_scrape_that_never_finishes() {
    let c = cluster(false, true).await;
    c.namespace("capstan").await;
    for binary in BINARIES {
        let mut bin = c.start(binary, "scraped", &[]);
        c.wait_holder(binary, "scraped", WAIT).await;
        let _stuck = half_a_scrape(&bin).await;
        // A whole scrape works meanwhile.
        assert!(bin.metrics_text().await.is_some());
        assert_stops(&mut bin, &format!("{binary} serving a stuck scrape")).await;
        assert_eq!(c.holder(binary).await, None, "{binary} left its Lease held");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_rotation_exits_and_the_rotation_resumes_where_it_stopped() {
    let c = cluster(false, true).await;
    c.namespace("capstan").await;
    let mut issuer = c.start("capstan-issuer", "issuer", &[]);
    c.apply(
        "apiVersion: capstan.dev/v1alpha1
kind: ClusterCAIssuer
metadata:
  name: monitoring-ca
spec:
  selfManaged:
    secretName: monitoring-ca
    propagationDelay: 1h
",
    )
    .await;
    let ready = c.issuer_ready().await;
    let signing = ready["status"]["ca"]["fingerprint"].clone();
    c.kubectl.rotate("monitoring-ca", "drill-1").await.unwrap();
    // Published, not switched: the state between the two steps.
    let published = |issuer: Value| (issuer["status"]["bundleSize"] == 2).then_some(issuer);
    await_condition("the new CA published", WAIT, POLL, || async {
        published(
            c.kubectl
                .get_json(&["clustercaissuer", "monitoring-ca"])
                .await?,
        )
    })
    .await
    .unwrap();
    let before = c.ca_secret().await;
    assert_stops(&mut issuer, "issuer between publish and switch").await;

    // The next replica resumes: the same published CA waits out its delay,
    // the same one signs; no third CA is made.
    let _next = c.start("capstan-issuer", "next", &[]);
    c.wait_holder("capstan-issuer", "next", WAIT).await;
    wait_log(&_next, "starting").await;
    let after = c.issuer_ready().await;
    assert_eq!(after["status"]["ca"]["fingerprint"], signing);
    assert_eq!(after["status"]["bundleSize"], 2);
    let now = c.ca_secret().await;
    for key in ["tls.crt", "next.crt", "ca-bundle.crt"] {
        assert_eq!(
            now["data"][key], before["data"][key],
            "{key} changed across the restart"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_rollout_exits() {
    let c = cluster(true, false).await;
    c.namespace("capstan").await;
    c.namespace("apps").await;
    c.apply(
        r#"apiVersion: v1
kind: Secret
metadata:
  name: tls
  namespace: apps
stringData:
  value: v1
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: apps
  annotations:
    capstan.dev/restart-on-change: "true"
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      # No node has this label: no pod ever runs, so a rollout never ends.
      nodeSelector: {capstan.dev/no-such-node: "true"}
      containers:
      - name: web
        image: web
        volumeMounts: [{name: tls, mountPath: /tls}]
      volumes:
      - name: tls
        secret: {secretName: tls}
"#,
    )
    .await;
    let mut rotator = c.start(
        "capstan-rotator",
        "rotator",
        &["--restart-debounce", "1s", "--rollout-timeout", "10m"],
    );
    wait_log(&rotator, "watching the sources of").await;
    c.apply("apiVersion: v1\nkind: Secret\nmetadata:\n  name: tls\n  namespace: apps\nstringData:\n  value: v2\n")
        .await;
    wait_log(&rotator, "RolloutTriggered").await;
    assert_stops(&mut rotator, "rotator mid-rollout").await;
    assert_eq!(
        c.holder("capstan-rotator").await,
        None,
        "the rotator left its Lease held"
    );
}
