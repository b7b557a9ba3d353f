//! End to end: `/metrics`, `/healthz` and `/readyz` of the real binaries,
//! checked with curl and openssl as a scraper would see them: plain HTTP,
//! static TLS files swapped the way a mounted Secret is, dynamic TLS from a
//! CA Secret, TLS security profiles, TokenReview/SubjectAccessReview scrape
//! auth, mTLS, the config file, and `/metrics` while kube-apiserver is down
//! (killed, then started again).
//!
//! Each test runs its binaries against a real control plane of its own
//! (etcd, kube-apiserver with RBAC, kube-controller-manager; no workloads).
//! Scrape authentication is judged by kube-apiserver itself: scrapers'
//! bearer tokens are real ServiceAccount tokens from the TokenRequest API,
//! the binaries ask the real TokenReview and SubjectAccessReview APIs, and
//! the permission to scrape is real RBAC (a ClusterRole granting `get` on
//! non-resource URL `/metrics`, bound to the scraping ServiceAccount).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use capstan_tests::cluster::{MASTERS, start_binary, user_kubeconfig};
use capstan_tests::controlplane::ControlPlane;
use capstan_tests::harness::{Kubectl, RunningBinary, await_condition};
use capstan_tests::hygiene;
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

/// The user the binaries run as (a `system:masters` member, by
/// impersonation), so the audit log tells their calls from the test's.
const CAPSTAN_USER: &str = "system:serviceaccount:default:capstan";

/// The ServiceAccount Prometheus scrapes with, and what lets it: `get` on
/// non-resource URL `/metrics`, as the chart's metrics-reader ClusterRole
/// grants.
const SCRAPER_RBAC: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: monitoring\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: capstan-metrics-reader\nrules:\n- nonResourceURLs: [\"/metrics\"]\n  verbs: [\"get\"]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: prometheus-capstan-metrics-reader\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: capstan-metrics-reader\nsubjects:\n- kind: ServiceAccount\n  name: prometheus\n  namespace: monitoring\n";

/// A real control plane of the test's own and a kubeconfig for the
/// binaries.
struct Cluster {
    cp: ControlPlane,
    kubectl: Kubectl,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

async fn cluster() -> Cluster {
    let cp = ControlPlane::builder()
        .workloads(false)
        .start()
        .await
        .unwrap();
    let kubectl = Kubectl::for_server(&cp).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = user_kubeconfig(&cp, dir.path(), "capstan", CAPSTAN_USER, MASTERS).unwrap();
    Cluster {
        cp,
        kubectl,
        kubeconfig: path,
        dir,
    }
}

impl Cluster {
    /// Starts `binary` (capstan-rotator unless said otherwise) as pod `pod`.
    fn start(&self, binary: &str, pod: &str, extra: &[&str]) -> RunningBinary {
        let mut args = vec!["--leader-election-namespace", "default"];
        args.extend_from_slice(extra);
        start_binary(
            binary,
            &self.kubeconfig,
            &args,
            &[
                ("POD_NAMESPACE", "default"),
                ("POD_NAME", pod),
                ("RUST_LOG", "info"),
            ],
        )
        .unwrap()
    }

    /// Makes CA `ca` (once per test) and a serving leaf from it with
    /// `serial`, and starts the rotator serving `/metrics` with them, then
    /// `extra`.
    async fn rotator_with_tls(&self, serial: &str, extra: &[&str]) -> RunningBinary {
        let dir = self.dir.path();
        if !dir.join("ca.crt").exists() {
            make_ca(dir, "ca").await;
        }
        let leaf = make_leaf(dir, "ca", "leaf", serial, "serverAuth").await;
        let key = dir.join("leaf.key");
        let mut args = vec![
            "--metrics-tls-cert-file",
            leaf.to_str().unwrap(),
            "--metrics-tls-private-key-file",
            key.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.start("capstan-rotator", "rotator-0", &args)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A token of ServiceAccount `monitoring/prometheus`, which may scrape
    /// `/metrics` ([`SCRAPER_RBAC`]), from the TokenRequest API.
    async fn scraper_token(&self) -> String {
        let out = self
            .kubectl
            .run_with_stdin(&["apply", "-f", "-"], Some(SCRAPER_RBAC))
            .await
            .unwrap();
        assert!(out.success(), "{}", out.stderr);
        self.cp
            .service_account_token("monitoring", "prometheus", &[])
            .await
            .unwrap()
    }

    /// How many `resource` objects (`tokenreviews`, ...) the binaries have
    /// created, once every request that finished before this call is in
    /// kube-apiserver's audit log: a GET of a missing ConfigMap with a
    /// fresh name is made and awaited in the log first.
    async fn created_by_capstan(&self, resource: &str) -> usize {
        static BARRIERS: AtomicUsize = AtomicUsize::new(0);
        let name = format!("audit-barrier-{}", BARRIERS.fetch_add(1, Ordering::SeqCst));
        let configmaps: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(self.cp.client().await.unwrap(), "default");
        assert!(configmaps.get_opt(&name).await.unwrap().is_none());
        await_condition("the audit log to catch up", WAIT, POLL, || async {
            let log = self.cp.request_log();
            log.iter().any(|r| r.name == name).then(|| {
                log.iter()
                    .filter(|r| {
                        r.user == CAPSTAN_USER && r.resource == resource && r.verb == "create"
                    })
                    .count()
            })
        })
        .await
        .unwrap()
    }

    /// Fails on any private key (the serving keys this test made, the
    /// Secrets' keys) in objects, the binaries' logs or their metrics.
    async fn assert_no_key_leaks(&self, binaries: &[&RunningBinary]) {
        let keys = hygiene::keys_in_dir(self.dir.path());
        hygiene::assert_no_key_leaks(&self.kubectl, binaries, &keys).await;
    }
}

/// Runs a command and returns (success, stdout, stderr).
async fn run(program: &str, args: &[&str], stdin: Option<&[u8]>) -> (bool, String, String) {
    use tokio::io::AsyncWriteExt as _;
    let mut child = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn openssl_ok(args: &[&str]) {
    let (ok, _, err) = run("openssl", args, None).await;
    assert!(ok, "openssl {args:?}: {err}");
}

/// A CA made by openssl in `dir` as `<name>.crt` / `<name>.key`.
async fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let crt = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    openssl_ok(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        crt.to_str().unwrap(),
        "-days",
        "2",
        "-subj",
        &format!("/CN={name}"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ])
    .await;
    crt
}

/// A leaf signed by CA `ca` (made by [`make_ca`]) with `serial`, as
/// `<name>.crt` / `<name>.key`; `usage` is serverAuth or clientAuth.
async fn make_leaf(dir: &Path, ca: &str, name: &str, serial: &str, usage: &str) -> PathBuf {
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    let crt = dir.join(format!("{name}.crt"));
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        format!(
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage={usage}\n\
             keyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n"
        ),
    )
    .unwrap();
    openssl_ok(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        csr.to_str().unwrap(),
        "-subj",
        &format!("/CN={name}"),
    ])
    .await;
    openssl_ok(&[
        "x509",
        "-req",
        "-in",
        csr.to_str().unwrap(),
        "-CA",
        dir.join(format!("{ca}.crt")).to_str().unwrap(),
        "-CAkey",
        dir.join(format!("{ca}.key")).to_str().unwrap(),
        "-set_serial",
        serial,
        "-days",
        "1",
        "-extfile",
        ext.to_str().unwrap(),
        "-out",
        crt.to_str().unwrap(),
    ])
    .await;
    crt
}

/// `curl` of `url`; returns (exit success, HTTP status, body).
async fn curl(url: &str, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec!["-sS", "--max-time", "10", "-w", "\n%{http_code}"];
    args.extend_from_slice(extra);
    args.push(url);
    let (ok, out, err) = run("curl", &args, None).await;
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (ok, code.to_owned(), format!("{body}{err}"))
}

/// The serial of the certificate served at `addr`, as openssl sees it.
async fn served_serial(addr: SocketAddr, extra: &[&str]) -> Option<String> {
    let connect = addr.to_string();
    let mut args = vec!["s_client", "-connect", connect.as_str()];
    args.extend_from_slice(extra);
    let (_, out, _) = run("openssl", &args, Some(b"")).await;
    let (ok, serial, _) = run(
        "openssl",
        &["x509", "-noout", "-serial"],
        Some(out.as_bytes()),
    )
    .await;
    ok.then(|| serial.trim().trim_start_matches("serial=").to_owned())
}

/// Whether a TLS handshake with `openssl s_client <extra>` succeeds.
async fn handshake(addr: SocketAddr, extra: &[&str]) -> bool {
    let connect = addr.to_string();
    let mut args = vec!["s_client", "-connect", connect.as_str()];
    args.extend_from_slice(extra);
    let (ok, out, _) = run("openssl", &args, Some(b"")).await;
    ok && out.contains("BEGIN CERTIFICATE")
}

#[tokio::test]
async fn both_binaries_serve_plain_metrics_and_health_by_default() {
    let c = cluster().await;
    c.kubectl.apply_crds(true).await.unwrap();
    c.kubectl
        .run_with_stdin(
            &["apply", "-f", "-"],
            Some("apiVersion: capstan.dev/v1alpha1\nkind: ClusterCAIssuer\nmetadata:\n  name: monitoring-ca\nspec:\n  selfManaged:\n    secretName: monitoring-ca\n"),
        )
        .await
        .unwrap();
    let issuer = c.start(
        "capstan-issuer",
        "issuer-0",
        &["--cluster-resource-namespace", "default"],
    );
    let rotator = c.start("capstan-rotator", "rotator-0", &[]);
    for (binary, family) in [
        (&issuer, "capstan_issuer_ready{"),
        (&rotator, "capstan_rotator_rollouts_waiting"),
    ] {
        let (metrics, health) = binary.serving_addresses(WAIT).await.unwrap();
        let url = format!("http://{metrics}/metrics");
        let body = await_condition("the family in /metrics", WAIT, POLL, || async {
            let (ok, code, body) = curl(&url, &[]).await;
            (ok && code == "200" && body.contains(family)).then_some(body)
        })
        .await
        .unwrap();
        assert!(body.contains("process_resident_memory_bytes"), "{body}");
        let (ok, code, body) = curl(&format!("http://{health}/healthz"), &[]).await;
        assert!(ok && code == "200", "{code} {body}");
        await_condition("/readyz 200", WAIT, POLL, || async {
            let (ok, code, body) = curl(&format!("http://{health}/readyz"), &[]).await;
            (ok && code == "200" && body.contains("[+]controllers ok")).then_some(())
        })
        .await
        .unwrap();
    }
    c.assert_no_key_leaks(&[&issuer, &rotator]).await;
}

/// With kube-apiserver down at start, the rotator retries leader election;
/// meanwhile its `/metrics` already has the rotator's own families (a
/// scrape must never see a process without them), and once kube-apiserver
/// is back the rotator comes up.
#[tokio::test]
async fn metrics_have_their_families_while_the_api_server_is_down() {
    let mut c = cluster().await;
    c.kubectl.apply_crds(true).await.unwrap();
    c.cp.kill_apiserver();
    let rotator = c.start("capstan-rotator", "rotator-0", &[]);
    let (metrics, health) = rotator.serving_addresses(WAIT).await.unwrap();
    rotator
        .wait_for_log(WAIT, |l| {
            l.contains("could not start leader election; retrying")
        })
        .await
        .unwrap();
    let (ok, code, body) = curl(&format!("http://{metrics}/metrics"), &[]).await;
    assert!(ok && code == "200", "{code} {body}");
    assert!(
        body.contains("capstan_rotator_rollouts_waiting"),
        "the rotator's families are missing while it waits: {body}"
    );
    c.cp.start_apiserver().await.unwrap();
    await_condition(
        "/readyz 200 once kube-apiserver is back",
        WAIT,
        POLL,
        || async {
            let (ok, code, body) = curl(&format!("http://{health}/readyz"), &[]).await;
            (ok && code == "200" && body.contains("[+]controllers ok")).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", rotator.logs().join("\n")));
    c.assert_no_key_leaks(&[&rotator]).await;
}

/// A directory laid out like a mounted Secret: `tls.crt` and `tls.key` are
/// links through `..data`, which is swapped atomically to a new directory.
struct MountedSecret {
    root: PathBuf,
    generation: usize,
}

impl MountedSecret {
    fn new(root: PathBuf, crt: &Path, key: &Path) -> Self {
        std::fs::create_dir_all(&root).unwrap();
        let mut mounted = Self {
            root,
            generation: 0,
        };
        mounted.swap(crt, key);
        for name in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), mounted.root.join(name)).unwrap();
        }
        mounted
    }

    /// Writes a new timestamped directory and renames a fresh `..data` link
    /// over the old one, as the kubelet's atomic writer does.
    fn swap(&mut self, crt: &Path, key: &Path) {
        self.generation += 1;
        let dir = format!("..gen_{}", self.generation);
        std::fs::create_dir(self.root.join(&dir)).unwrap();
        std::fs::copy(crt, self.root.join(&dir).join("tls.crt")).unwrap();
        std::fs::copy(key, self.root.join(&dir).join("tls.key")).unwrap();
        let tmp = self.root.join("..data_tmp");
        std::os::unix::fs::symlink(&dir, &tmp).unwrap();
        std::fs::rename(&tmp, self.root.join("..data")).unwrap();
    }

    fn cert(&self) -> String {
        self.root.join("tls.crt").to_str().unwrap().to_owned()
    }

    fn key(&self) -> String {
        self.root.join("tls.key").to_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn static_tls_files_rotate_without_a_failed_scrape() {
    let c = cluster().await;
    let dir = c.dir.path();
    make_ca(dir, "ca").await;
    let first = make_leaf(dir, "ca", "first", "0x1001", "serverAuth").await;
    let second = make_leaf(dir, "ca", "second", "0x2002", "serverAuth").await;
    let mut mounted = MountedSecret::new(c.path("mount"), &first, &dir.join("first.key"));
    let rotator = c.start(
        "capstan-rotator",
        "rotator-0",
        &[
            "--metrics-tls-cert-file",
            &mounted.cert(),
            "--metrics-tls-private-key-file",
            &mounted.key(),
        ],
    );
    let (metrics, _) = rotator.serving_addresses(WAIT).await.unwrap();
    let url = format!("https://localhost:{}/metrics", metrics.port());
    let resolve = format!("localhost:{}:127.0.0.1", metrics.port());
    let ca = dir.join("ca.crt");
    let ca = ca.to_str().unwrap().to_owned();
    let (ok, code, body) = curl(&url, &["--cacert", &ca, "--resolve", &resolve]).await;
    assert!(ok && code == "200", "{code} {body}");
    assert_eq!(served_serial(metrics, &[]).await.as_deref(), Some("1001"));

    // Scrape in a loop while the mounted files are swapped.
    let stop = Arc::new(AtomicBool::new(false));
    let (scrapes, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let scraper = {
        let (stop, scrapes, failures) = (stop.clone(), scrapes.clone(), failures.clone());
        let (url, ca, resolve) = (url.clone(), ca.clone(), resolve.clone());
        tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let (ok, code, body) = curl(&url, &["--cacert", &ca, "--resolve", &resolve]).await;
                scrapes.fetch_add(1, Ordering::SeqCst);
                if !(ok && code == "200") {
                    failures.fetch_add(1, Ordering::SeqCst);
                    errors.push(format!("{code}: {body}"));
                }
            }
            errors
        })
    };
    await_condition("a few scrapes before the swap", WAIT, POLL, || async {
        (scrapes.load(Ordering::SeqCst) >= 3).then_some(())
    })
    .await
    .unwrap();
    mounted.swap(&second, &dir.join("second.key"));
    await_condition("the new serial served", WAIT, POLL, || async {
        (served_serial(metrics, &[]).await.as_deref() == Some("2002")).then_some(())
    })
    .await
    .unwrap();
    let after = scrapes.load(Ordering::SeqCst);
    await_condition("a few scrapes after the swap", WAIT, POLL, || async {
        (scrapes.load(Ordering::SeqCst) >= after + 3).then_some(())
    })
    .await
    .unwrap();
    stop.store(true, Ordering::SeqCst);
    let errors = scraper.await.unwrap();
    println!(
        "static rotation: {} scrapes, {} failed",
        scrapes.load(Ordering::SeqCst),
        failures.load(Ordering::SeqCst)
    );
    assert!(errors.is_empty(), "failed scrapes: {errors:?}");
    rotator
        .wait_for_log(WAIT, |l| {
            l.contains("Updated serving TLS certificate") && l.contains("2002")
        })
        .await
        .unwrap();

    // A broken pair (key from another certificate) is never served.
    mounted.swap(&first, &dir.join("second.key"));
    rotator
        .wait_for_log(WAIT, |l| l.contains("does not match the certificate"))
        .await
        .unwrap();
    assert_eq!(served_serial(metrics, &[]).await.as_deref(), Some("2002"));
    c.assert_no_key_leaks(&[&rotator]).await;
}

/// The `ca.crt` of Secret `name` in `default`, written to `path`.
async fn secret_ca(kubectl: &Kubectl, name: &str, path: &Path) -> Option<String> {
    let out = kubectl
        .run(&[
            "get",
            "secret",
            name,
            "-n",
            "default",
            "-o",
            "jsonpath={.data.ca\\.crt}",
        ])
        .await
        .ok()?;
    if !out.success() {
        return None;
    }
    let pem = base64::engine::general_purpose::STANDARD
        .decode(out.stdout.trim())
        .ok()?;
    let pem = String::from_utf8(pem).ok()?;
    std::fs::write(path, &pem).ok()?;
    pem.contains("BEGIN CERTIFICATE").then_some(pem)
}

#[tokio::test]
async fn dynamic_tls_shares_one_ca_secret_and_follows_its_rotation() {
    let c = cluster().await;
    let flags = [
        "--metrics-dynamic-serving-ca-secret-namespace",
        "default",
        "--metrics-dynamic-serving-ca-secret-name",
        "capstan-metrics-ca",
        "--metrics-dynamic-serving-dns-names",
        "capstan-rotator.default.svc,localhost",
    ];
    // Two replicas race to create the CA Secret; both must serve from it.
    let replicas = [
        c.start("capstan-rotator", "rotator-0", &flags),
        c.start("capstan-rotator", "rotator-1", &flags),
    ];
    let ca = c.path("served-ca.crt");
    await_condition("the CA Secret", WAIT, POLL, || {
        secret_ca(&c.kubectl, "capstan-metrics-ca", &ca)
    })
    .await
    .unwrap();
    let scrape = |metrics: SocketAddr, ca: PathBuf| async move {
        let resolve = format!("capstan-rotator.default.svc:{}:127.0.0.1", metrics.port());
        curl(
            &format!(
                "https://capstan-rotator.default.svc:{}/metrics",
                metrics.port()
            ),
            &["--cacert", ca.to_str().unwrap(), "--resolve", &resolve],
        )
        .await
    };
    let mut addresses = Vec::new();
    for replica in &replicas {
        let (metrics, _) = replica.serving_addresses(WAIT).await.unwrap();
        replica
            .wait_for_log(WAIT, |l| {
                l.contains("Updated serving TLS certificate")
                    && l.contains("capstan-rotator.default.svc")
            })
            .await
            .unwrap();
        let (ok, code, body) = scrape(metrics, ca.clone()).await;
        assert!(ok && code == "200", "{code} {body}");
        addresses.push(metrics);
    }

    // Rotate the CA in the Secret by hand: every replica re-signs.
    let dir = c.dir.path();
    let new_ca = make_ca(dir, "rotated").await;
    let b64 =
        |p: &Path| base64::engine::general_purpose::STANDARD.encode(std::fs::read(p).unwrap());
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: capstan-metrics-ca\n  namespace: default\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {crt}\n  tls.key: {key}\n  ca.crt: {crt}\n",
        crt = b64(&new_ca),
        key = b64(&dir.join("rotated.key")),
    );
    let out = c
        .kubectl
        .run_with_stdin(&["apply", "-f", "-"], Some(&secret))
        .await
        .unwrap();
    assert!(out.success(), "{}", out.stderr);
    for (replica, metrics) in replicas.iter().zip(&addresses) {
        replica
            .wait_for_log(WAIT, |l| {
                l.contains("Detected root CA rotation - regenerating serving certificates")
            })
            .await
            .unwrap();
        await_condition("scrapes verify against the new CA", WAIT, POLL, || async {
            let (ok, code, _) = scrape(*metrics, new_ca.clone()).await;
            (ok && code == "200").then_some(())
        })
        .await
        .unwrap();
        let (ok, _, _) = scrape(*metrics, ca.clone()).await;
        assert!(!ok, "the old CA no longer verifies the served certificate");
    }
    c.assert_no_key_leaks(&[&replicas[0], &replicas[1]]).await;
}

#[tokio::test]
async fn tls_profiles_limit_versions_and_refuse_old_at_start() {
    let c = cluster().await;
    let dir = c.dir.path();
    make_ca(dir, "ca").await;
    let leaf = make_leaf(dir, "ca", "leaf", "0x10", "serverAuth").await;
    let key = dir.join("leaf.key");
    let tls = [
        "--metrics-tls-cert-file",
        leaf.to_str().unwrap(),
        "--metrics-tls-private-key-file",
        key.to_str().unwrap(),
    ];
    let mut modern = tls.to_vec();
    modern.push("--tls-security-profile=Modern");
    let modern = c.start("capstan-rotator", "modern", &modern);
    let (metrics, _) = modern.serving_addresses(WAIT).await.unwrap();
    assert!(handshake(metrics, &["-tls1_3"]).await, "TLS 1.3 accepted");
    assert!(
        !handshake(metrics, &["-tls1_2"]).await,
        "TLS 1.2 refused under Modern"
    );

    let intermediate = c.start("capstan-rotator", "intermediate", &tls);
    let (metrics, _) = intermediate.serving_addresses(WAIT).await.unwrap();
    assert!(handshake(metrics, &["-tls1_2"]).await, "TLS 1.2 accepted");
    assert!(
        !handshake(metrics, &["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA"]).await,
        "CBC suites are never offered"
    );

    for (flags, expected) in [
        (
            vec!["--tls-security-profile=Old"],
            "\"Old\" is not supported",
        ),
        (
            vec![
                "--tls-security-profile=Custom",
                "--tls-min-version=VersionTLS12",
                "--tls-cipher-suites=ECDHE-RSA-AES128-GCM-SHA256,RC4-MD5",
            ],
            "cipher \"RC4-MD5\" is not supported",
        ),
    ] {
        let mut args = tls.to_vec();
        args.extend(flags);
        let mut refused = c.start("capstan-rotator", "refused", &args);
        await_condition("the refused start to exit", WAIT, POLL, || {
            let running = refused.is_running();
            async move { (!running).then_some(()) }
        })
        .await
        .unwrap();
        let logs = refused.logs().join("\n");
        assert!(logs.contains(expected), "{logs}");
    }
    c.assert_no_key_leaks(&[&modern, &intermediate]).await;
}

#[tokio::test]
async fn token_review_answers_401_403_and_200_and_health_stays_open() {
    let c = cluster().await;
    // The rotator is ready only with its CABundle CRD served.
    c.kubectl.apply_crds(false).await.unwrap();
    // Real ServiceAccount tokens: one whose account may get /metrics, one
    // whose account may not.
    let prometheus = c.scraper_token().await;
    let stranger =
        c.cp.service_account_token("default", "stranger", &[])
            .await
            .unwrap();
    let dir = c.dir.path();
    let rotator = c
        .rotator_with_tls("0x20", &["--metrics-auth-token-review"])
        .await;
    let (metrics, health) = rotator.serving_addresses(WAIT).await.unwrap();
    let url = format!("https://127.0.0.1:{}/metrics", metrics.port());
    let ca = dir.join("ca.crt");
    let ca = ca.to_str().unwrap();
    let bearer = |token: &str| format!("Authorization: Bearer {token}");
    for (who, header, expected) in [
        ("no token", None, "401"),
        ("a junk token", Some(bearer("not-a-token")), "401"),
        ("stranger", Some(bearer(&stranger)), "403"),
        ("prometheus", Some(bearer(&prometheus)), "200"),
    ] {
        let mut args = vec!["--cacert", ca];
        if let Some(h) = &header {
            args.extend(["-H", h]);
        }
        let (ok, code, body) = curl(&url, &args).await;
        assert!(ok, "{body}");
        assert_eq!(code, expected, "{who}: {body}");
        if expected == "200" {
            assert!(body.contains("capstan_rotator_"), "{body}");
        } else {
            assert!(
                !body.contains("capstan_rotator_"),
                "no metrics without permission"
            );
        }
    }
    for path in ["healthz", "readyz"] {
        await_condition("open health endpoints", WAIT, POLL, || async {
            let (ok, code, _) = curl(&format!("http://{health}/{path}"), &[]).await;
            (ok && code == "200").then_some(())
        })
        .await
        .unwrap();
    }
    // The reviews went to kube-apiserver: one TokenReview per token, and a
    // SubjectAccessReview per token that authenticated.
    let reviews = c.created_by_capstan("tokenreviews").await;
    let access = c.created_by_capstan("subjectaccessreviews").await;
    assert_eq!(reviews, 3, "TokenReviews for 3 tokens");
    assert_eq!(access, 2, "SubjectAccessReviews for 2 authenticated tokens");
    // Cached: not one pair per scrape (at most one more pair, should the
    // cache's lifetime end in between).
    let header = bearer(&prometheus);
    for _ in 0..3 {
        let (_, code, _) = curl(&url, &["--cacert", ca, "-H", &header]).await;
        assert_eq!(code, "200");
    }
    let again = c.created_by_capstan("tokenreviews").await;
    let access_again = c.created_by_capstan("subjectaccessreviews").await;
    assert!(again <= reviews + 1, "cached: {reviews} then {again}");
    assert!(
        access_again <= access + 1,
        "cached: {access} then {access_again}"
    );
    c.assert_no_key_leaks(&[&rotator]).await;
}

#[tokio::test]
async fn mtls_accepts_client_certificates_from_the_ca_only() {
    let c = cluster().await;
    let dir = c.dir.path();
    make_ca(dir, "ca").await;
    make_ca(dir, "other").await;
    let leaf = make_leaf(dir, "ca", "leaf", "0x30", "serverAuth").await;
    let client = make_leaf(dir, "ca", "prometheus", "0x31", "clientAuth").await;
    let stranger = make_leaf(dir, "other", "stranger", "0x32", "clientAuth").await;
    let ca = dir.join("ca.crt");
    let rotator = c.start(
        "capstan-rotator",
        "rotator-0",
        &[
            "--metrics-tls-cert-file",
            leaf.to_str().unwrap(),
            "--metrics-tls-private-key-file",
            dir.join("leaf.key").to_str().unwrap(),
            "--metrics-client-ca-file",
            ca.to_str().unwrap(),
        ],
    );
    let (metrics, _) = rotator.serving_addresses(WAIT).await.unwrap();
    let url = format!("https://127.0.0.1:{}/metrics", metrics.port());
    let ca = ca.to_str().unwrap();
    let (ok, code, body) = curl(
        &url,
        &[
            "--cacert",
            ca,
            "--cert",
            client.to_str().unwrap(),
            "--key",
            dir.join("prometheus.key").to_str().unwrap(),
        ],
    )
    .await;
    assert!(ok && code == "200", "{code} {body}");
    assert!(body.contains("capstan_rotator_"), "{body}");
    let (ok, code, body) = curl(&url, &["--cacert", ca]).await;
    assert!(
        !ok && code != "200",
        "refused without a client certificate: {code} {body}"
    );
    let (ok, code, body) = curl(
        &url,
        &[
            "--cacert",
            ca,
            "--cert",
            stranger.to_str().unwrap(),
            "--key",
            dir.join("stranger.key").to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        !ok && code != "200",
        "refused with a foreign certificate: {code} {body}"
    );
    c.assert_no_key_leaks(&[&rotator]).await;
}

#[tokio::test]
async fn the_config_file_sets_tls_and_yields_to_environment_and_flags() {
    let c = cluster().await;
    let dir = c.dir.path();
    make_ca(dir, "ca").await;
    let leaf = make_leaf(dir, "ca", "leaf", "0x40", "serverAuth").await;
    let config = c.path("rotator.yaml");
    std::fs::write(
        &config,
        format!(
            "# The harness sets CAPSTAN_METRICS_LISTEN_ADDRESS, which wins over this.\n\
             metricsListenAddress: 127.0.0.1:1\n\
             restartDebounce: 3s\n\
             maxConcurrentRollouts: 2\n\
             metricsTLSConfig:\n  filesystem:\n    certFile: {}\n    keyFile: {}\n\
             tlsSecurityProfile:\n  type: Custom\n  custom:\n    minTLSVersion: VersionTLS13\n",
            leaf.display(),
            dir.join("leaf.key").display()
        ),
    )
    .unwrap();
    let rotator = c.start(
        "capstan-rotator",
        "rotator-0",
        &[
            "--config",
            config.to_str().unwrap(),
            "--restart-debounce=4s",
        ],
    );
    let (metrics, _) = rotator.serving_addresses(WAIT).await.unwrap();
    assert_ne!(metrics.port(), 1, "the environment wins over the file");
    assert!(handshake(metrics, &["-tls1_3"]).await);
    assert!(
        !handshake(metrics, &["-tls1_2"]).await,
        "minTLSVersion from the file"
    );
    let (ok, code, body) = curl(
        &format!("https://127.0.0.1:{}/metrics", metrics.port()),
        &["--cacert", dir.join("ca.crt").to_str().unwrap()],
    )
    .await;
    assert!(ok && code == "200", "{code} {body}");
    let logs = rotator.logs().join("\n");
    assert!(
        logs.contains("max_concurrent: 2"),
        "maxConcurrentRollouts from the file: {logs}"
    );
    assert!(
        logs.contains("debounce: 4s"),
        "the flag wins over the file: {logs}"
    );

    // An unknown key stops the start with the key and the file named.
    let bad = c.path("bad.yaml");
    std::fs::write(
        &bad,
        "metricsTLSConfig:\n  filesytem: {}\nrestartDebouncer: 1s\n",
    )
    .unwrap();
    let mut refused = c.start(
        "capstan-rotator",
        "bad",
        &["--config", bad.to_str().unwrap()],
    );
    await_condition("the refused start to exit", WAIT, POLL, || {
        let running = refused.is_running();
        async move { (!running).then_some(()) }
    })
    .await
    .unwrap();
    let logs = refused.logs().join("\n");
    assert!(
        logs.contains("restartDebouncer") && logs.contains("bad.yaml"),
        "{logs}"
    );
    c.assert_no_key_leaks(&[&rotator]).await;
}

/// `GET /metrics` through `openssl s_client <extra>` (a real TLS client
/// that verifies the server as told); returns the raw HTTP response.
async fn openssl_get(addr: SocketAddr, extra: &[&str]) -> String {
    let connect = addr.to_string();
    let mut args = vec![
        "s_client",
        "-connect",
        connect.as_str(),
        "-quiet",
        "-ign_eof",
        "-verify_return_error",
    ];
    args.extend_from_slice(extra);
    let (_, out, err) = run(
        "openssl",
        &args,
        Some(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n"),
    )
    .await;
    format!("{out}{err}")
}

#[tokio::test]
async fn dynamic_tls_on_the_issuer_from_the_config_file_renews_before_expiry() {
    let c = cluster().await;
    c.kubectl.apply_crds(true).await.unwrap();
    let config = c.path("issuer.yaml");
    std::fs::write(
        &config,
        "metricsTLSConfig:\n  dynamic:\n    secretNamespace: default\n    secretName: issuer-metrics-ca\n    dnsNames: [capstan-issuer.default.svc, capstan-issuer.default.svc.cluster.local]\n    leafDuration: 30s\n",
    )
    .unwrap();
    let issuer = c.start(
        "capstan-issuer",
        "issuer-0",
        &["--config", config.to_str().unwrap()],
    );
    let ca = c.path("issuer-ca.crt");
    await_condition("the CA Secret", WAIT, POLL, || {
        secret_ca(&c.kubectl, "issuer-metrics-ca", &ca)
    })
    .await
    .unwrap();
    let (metrics, _) = issuer.serving_addresses(WAIT).await.unwrap();
    let verify = [
        "-CAfile",
        ca.to_str().unwrap(),
        "-servername",
        "capstan-issuer.default.svc",
        "-verify_hostname",
        "capstan-issuer.default.svc",
    ];
    let response = await_condition("a verified scrape with openssl", WAIT, POLL, || async {
        let r = openssl_get(metrics, &verify).await;
        r.contains("HTTP/1.1 200").then_some(r)
    })
    .await
    .unwrap();
    assert!(
        response.contains("process_resident_memory_bytes"),
        "{response}"
    );
    let mut wrong_name = verify.to_vec();
    wrong_name[5] = "elsewhere.default.svc";
    let refused = openssl_get(metrics, &wrong_name).await;
    assert!(
        !refused.contains("HTTP/1.1 200"),
        "a name outside dnsNames must not verify: {refused}"
    );

    // The 30s certificate is renewed after two thirds of its life, with the
    // same CA: a new serial, still verifying, logged with the DNS names.
    let first = served_serial(metrics, &[]).await.unwrap();
    let renewed = await_condition("the serving certificate's renewal", WAIT, POLL, || async {
        served_serial(metrics, &[])
            .await
            .filter(|serial| *serial != first)
    })
    .await
    .unwrap();
    assert_ne!(renewed, first);
    let updates = issuer
        .logs()
        .iter()
        .filter(|l| {
            l.contains("Updated serving TLS certificate")
                && l.contains("capstan-issuer.default.svc.cluster.local")
        })
        .count();
    assert!(updates >= 2, "{updates} updates logged");
    assert!(
        !issuer
            .logs()
            .iter()
            .any(|l| l.contains("Detected root CA rotation")),
        "a renewal is not a CA rotation"
    );
    let again = openssl_get(metrics, &verify).await;
    assert!(again.contains("HTTP/1.1 200"), "{again}");
    c.assert_no_key_leaks(&[&issuer]).await;
}

#[tokio::test]
async fn token_review_and_mtls_together_accept_either_credential() {
    let c = cluster().await;
    let prometheus = c.scraper_token().await;
    let dir = c.dir.path();
    make_ca(dir, "ca").await;
    make_ca(dir, "other").await;
    let leaf = make_leaf(dir, "ca", "leaf", "0x50", "serverAuth").await;
    let client = make_leaf(dir, "ca", "prometheus", "0x51", "clientAuth").await;
    let stranger = make_leaf(dir, "other", "stranger", "0x52", "clientAuth").await;
    let ca = dir.join("ca.crt");
    let rotator = c.start(
        "capstan-rotator",
        "rotator-0",
        &[
            "--metrics-tls-cert-file",
            leaf.to_str().unwrap(),
            "--metrics-tls-private-key-file",
            dir.join("leaf.key").to_str().unwrap(),
            "--metrics-client-ca-file",
            ca.to_str().unwrap(),
            "--metrics-auth-token-review",
        ],
    );
    let (metrics, _) = rotator.serving_addresses(WAIT).await.unwrap();
    let ca = ca.to_str().unwrap();
    let client_key = dir.join("prometheus.key");
    let stranger_key = dir.join("stranger.key");

    // A client certificate from the CA is enough, through openssl itself.
    let with_cert = openssl_get(
        metrics,
        &[
            "-CAfile",
            ca,
            "-cert",
            client.to_str().unwrap(),
            "-key",
            client_key.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        with_cert.contains("HTTP/1.1 200") && with_cert.contains("capstan_rotator_"),
        "{with_cert}"
    );
    // So is an allowed token, without a certificate.
    let url = format!("https://127.0.0.1:{}/metrics", metrics.port());
    let header = format!("Authorization: Bearer {prometheus}");
    let (ok, code, body) = curl(&url, &["--cacert", ca, "-H", &header]).await;
    assert!(ok && code == "200", "{code} {body}");
    // Neither: 401, as kube-rbac-proxy answers.
    let (ok, code, body) = curl(&url, &["--cacert", ca]).await;
    assert!(ok && code == "401", "{code} {body}");
    // A certificate from another CA fails the handshake.
    let (ok, code, body) = curl(
        &url,
        &[
            "--cacert",
            ca,
            "--cert",
            stranger.to_str().unwrap(),
            "--key",
            stranger_key.to_str().unwrap(),
        ],
    )
    .await;
    assert!(!ok && code != "200", "{code} {body}");
    c.assert_no_key_leaks(&[&rotator]).await;
}

/// `curl` of `url` with CA `ca` and, when given, client certificate
/// `<dir>/<client>.crt` and its key; the HTTP status ("000" when the
/// handshake is refused) and body.
async fn scrape_as(url: &str, ca: &Path, client: Option<(&Path, &str)>) -> (String, String) {
    let ca = ca.to_str().unwrap();
    let mut args = vec!["--cacert", ca];
    let files;
    if let Some((dir, name)) = client {
        files = [
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        ];
        args.extend([
            "--cert",
            files[0].to_str().unwrap(),
            "--key",
            files[1].to_str().unwrap(),
        ]);
    }
    let (_, code, body) = curl(url, &args).await;
    (code, body)
}

/// Replaces `path` by `content` at once (write aside, rename), as the
/// kubelet swaps a mounted ConfigMap.
fn swap_file(path: &Path, content: &[u8]) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, content).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

#[tokio::test]
async fn the_client_ca_reloads_on_change_and_only_allowed_names_pass() {
    let c = cluster().await;
    let dir = c.dir.path();
    make_ca(dir, "ca").await;
    make_ca(dir, "next").await;
    // OpenShift's Prometheus presents this name; only it may scrape.
    let allowed = "prometheus-k8s";
    make_leaf(dir, "ca", allowed, "0x61", "clientAuth").await;
    make_leaf(dir, "ca", "grafana", "0x62", "clientAuth").await;
    let renewed = dir.join("renewed");
    std::fs::create_dir(&renewed).unwrap();
    std::fs::copy(dir.join("next.crt"), renewed.join("next.crt")).unwrap();
    std::fs::copy(dir.join("next.key"), renewed.join("next.key")).unwrap();
    make_leaf(&renewed, "next", allowed, "0x63", "clientAuth").await;
    let client_ca = dir.join("client-ca.crt");
    std::fs::copy(dir.join("ca.crt"), &client_ca).unwrap();
    let rotator = c
        .rotator_with_tls(
            "0x60",
            &[
                "--metrics-client-ca-file",
                client_ca.to_str().unwrap(),
                "--metrics-client-allowed-names",
                allowed,
            ],
        )
        .await;
    let (metrics, _) = rotator.serving_addresses(WAIT).await.unwrap();
    let url = format!("https://127.0.0.1:{}/metrics", metrics.port());
    let ca = dir.join("ca.crt");
    let (code, body) = scrape_as(&url, &ca, Some((dir, allowed))).await;
    assert_eq!(code, "200", "{body}");
    let (code, body) = scrape_as(&url, &ca, Some((dir, "grafana"))).await;
    assert_eq!(code, "403", "a name not allowed: {body}");
    assert!(body.contains("CN=grafana"), "{body}");
    let (code, _) = scrape_as(&url, &ca, Some((&renewed, allowed))).await;
    assert_ne!(code, "200", "the next CA is not trusted yet");

    // The client CA changes: the next CA's client is let in, the old one's
    // no longer, without a restart.
    swap_file(&client_ca, &std::fs::read(dir.join("next.crt")).unwrap());
    await_condition("the new client CA trusted", WAIT, POLL, || async {
        let (code, _) = scrape_as(&url, &ca, Some((&renewed, allowed))).await;
        (code == "200").then_some(())
    })
    .await
    .unwrap();
    let (code, _) = scrape_as(&url, &ca, Some((dir, allowed))).await;
    assert_ne!(code, "200", "the old client CA is no longer trusted");
    rotator
        .wait_for_log(WAIT, |l| l.contains("Updated metrics client CA"))
        .await
        .unwrap();

    // A broken file is not used: the CA before it stays trusted.
    swap_file(&client_ca, b"-----BEGIN CERTIFICATE-----\nnot base64\n");
    rotator
        .wait_for_log(WAIT, |l| l.contains("new client CA file not used"))
        .await
        .unwrap();
    let (code, body) = scrape_as(&url, &ca, Some((&renewed, allowed))).await;
    assert_eq!(code, "200", "{body}");
    c.assert_no_key_leaks(&[&rotator]).await;
}

#[tokio::test]
async fn token_review_takes_only_tokens_for_the_configured_audience() {
    let c = cluster().await;
    let default_audience = c.scraper_token().await;
    let for_capstan =
        c.cp.service_account_token("monitoring", "prometheus", &["capstan-metrics"])
            .await
            .unwrap();
    let dir = c.dir.path();
    let rotator = c
        .rotator_with_tls(
            "0x70",
            &[
                "--metrics-auth-token-review",
                "--metrics-auth-token-audiences",
                "capstan-metrics",
            ],
        )
        .await;
    let (metrics, _) = rotator.serving_addresses(WAIT).await.unwrap();
    let url = format!("https://127.0.0.1:{}/metrics", metrics.port());
    let ca = dir.join("ca.crt");
    let ca = ca.to_str().unwrap();
    for (who, token, expected) in [
        ("a token for capstan-metrics", &for_capstan, "200"),
        ("a token for the API server", &default_audience, "401"),
    ] {
        let header = format!("Authorization: Bearer {token}");
        let (ok, code, body) = curl(&url, &["--cacert", ca, "-H", &header]).await;
        assert!(ok, "{body}");
        assert_eq!(code, expected, "{who}: {body}");
        if expected == "401" {
            // kube-apiserver's words (capstan also refuses an answer for
            // another audience, should an authenticator give one).
            assert!(
                body.contains("audiences") && body.contains("capstan-metrics"),
                "{body}"
            );
        }
    }
}
