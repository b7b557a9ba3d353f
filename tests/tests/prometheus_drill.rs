//! A monitoring drill end to end: a real Prometheus (Debian's 2.42) scrapes,
//! over TLS, targets whose serving certificates come from capstan, through a
//! manual rotation of the root CA, and is judged from its own HTTP API.
//!
//! Everything is real: the control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, kwok), cert-manager's own
//! controller, the `capstan-issuer` and `capstan-rotator` binaries,
//! `prometheus-node-exporter`, Prometheus, and openssl. The setup follows
//! docs/scraping-tls.md as a user writes it:
//!
//! * a self-managed `ClusterCAIssuer/monitoring-ca`;
//! * cert-manager `Certificate`s from it for node-exporter (served from its
//!   `web-config.yml`) and for the rotator's own `/metrics` (served from
//!   files, with TokenReview bearer auth);
//! * a ConfigMap annotated `capstan.dev/inject-ca-from-issuer` whose
//!   `ca-bundle.crt` the rotator keeps, which Prometheus trusts;
//! * the Secrets and the ConfigMap projected into directories as the kubelet
//!   mounts them (a timestamped directory, `..data` swapped atomically with
//!   a rename, the files as links through it), kept current by polling.
//!
//! The drill: every target up; rotate the CA (`capstan.dev/rotate`); once
//! the issuer signs with the new CA, renew both leaves; ten more scrapes.
//! Then Prometheus must have scraped every target successfully once a
//! second throughout, with no failure counter moved, and the targets must
//! serve the new leaves, which chain to the new root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use capstan_tests::cluster::{MASTERS, openssl_in, start_binary, start_issuer, user_kubeconfig};
use capstan_tests::controlplane::cert_manager::{self, CertManager};
use capstan_tests::controlplane::{ControlPlane, free_port};
use capstan_tests::harness::{Kubectl, RunningBinary, await_condition, workspace_root};
use capstan_tests::hygiene;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::GroupVersionKind;
use serde_json::Value;

/// Generous: the machine is shared with long builds.
const WAIT: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_millis(200);
/// How often the projected directories look at their source objects.
const MIRROR_POLL: Duration = Duration::from_millis(250);
/// The scrape interval, in seconds, of every job.
const INTERVAL: f64 = 1.0;
/// Scrapes of every target to wait for after the renewed leaves are served.
const SCRAPES_AFTER: usize = 10;
const NS: &str = "monitoring";
const BUNDLE_CM: &str = "prometheus-scrape-ca";
const NODE_EXPORTER_NAME: &str = "node-exporter.monitoring.svc";
const ROTATOR_NAME: &str = "capstan-rotator.capstan.svc";

/// The CA, the bundle, the two leaves and what lets Prometheus scrape the
/// rotator (the chart's metrics-reader ClusterRole, bound to its
/// ServiceAccount), as docs/scraping-tls.md has them.
const OBJECTS: &str = "apiVersion: v1
kind: Namespace
metadata: {name: monitoring}
---
apiVersion: capstan.dev/v1alpha1
kind: ClusterCAIssuer
metadata: {name: monitoring-ca}
spec:
  maxDuration: 10m
  selfManaged:
    secretName: monitoring-ca
    duration: 1h
    rotateBefore: 20m
    propagationDelay: 10s
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: prometheus-scrape-ca
  namespace: monitoring
  annotations:
    capstan.dev/inject-ca-from-issuer: monitoring-ca
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: node-exporter-tls, namespace: monitoring}
spec:
  secretName: node-exporter-tls
  dnsNames: [node-exporter.monitoring.svc]
  duration: 10m
  usages: [server auth, digital signature, key encipherment]
  issuerRef: {group: capstan.dev, kind: ClusterCAIssuer, name: monitoring-ca}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: capstan-rotator-metrics, namespace: monitoring}
spec:
  secretName: capstan-rotator-metrics-tls
  dnsNames: [capstan-rotator.capstan.svc, capstan-rotator.capstan.svc.cluster.local]
  duration: 10m
  usages: [server auth, digital signature, key encipherment]
  issuerRef: {group: capstan.dev, kind: ClusterCAIssuer, name: monitoring-ca}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: capstan-metrics-reader}
rules:
- nonResourceURLs: [\"/metrics\"]
  verbs: [\"get\"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: prometheus-k8s:capstan-metrics-reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: capstan-metrics-reader}
subjects: [{kind: ServiceAccount, name: prometheus-k8s, namespace: monitoring}]
";

/// Prometheus's counters of scrapes that went wrong; none may move.
const FAILURE_COUNTERS: [&str; 7] = [
    "prometheus_target_scrapes_exceeded_sample_limit_total",
    "prometheus_target_scrapes_exceeded_body_size_limit_total",
    "prometheus_target_scrapes_sample_out_of_order_total",
    "prometheus_target_scrapes_sample_duplicate_timestamp_total",
    "prometheus_target_scrapes_sample_out_of_bounds_total",
    "prometheus_target_scrape_pool_exceeded_target_limit_total",
    "net_conntrack_dialer_conn_failed_total",
];

/// Prometheus's count of TCP connections opened to each job's targets.
const ESTABLISHED: &str = "net_conntrack_dialer_conn_established_total";

/// A directory laid out as the kubelet mounts a Secret or ConfigMap: each
/// file a link `<name> -> ..data/<name>`, `..data` a link to a timestamped
/// directory, replaced atomically by renaming a fresh link over it.
struct Projected {
    root: PathBuf,
    generation: usize,
}

impl Projected {
    fn new(root: PathBuf) -> Self {
        std::fs::create_dir_all(&root).unwrap();
        Self {
            root,
            generation: 0,
        }
    }

    /// Writes `files` into a new timestamped directory, swaps `..data` to
    /// it, links any new file name, and removes the previous directory.
    fn write(&mut self, files: &BTreeMap<String, Vec<u8>>) {
        self.generation += 1;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = format!("..{nanos}_{}", self.generation);
        std::fs::create_dir(self.root.join(&dir)).unwrap();
        for (name, content) in files {
            std::fs::write(self.root.join(&dir).join(name), content).unwrap();
        }
        let data = self.root.join("..data");
        let previous = std::fs::read_link(&data).ok();
        let tmp = self.root.join("..data_tmp");
        std::os::unix::fs::symlink(&dir, &tmp).unwrap();
        std::fs::rename(&tmp, &data).unwrap();
        for name in files.keys() {
            let link = self.root.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(format!("..data/{name}"), link).unwrap();
            }
        }
        if let Some(old) = previous {
            std::fs::remove_dir_all(self.root.join(old)).unwrap();
        }
    }
}

/// The object a [`Projected`] directory mirrors.
#[derive(Clone)]
enum Source {
    Secret(Api<Secret>, String),
    ConfigMap(Api<ConfigMap>, String),
}

impl Source {
    /// The object's data, once it has any.
    async fn data(&self) -> Option<BTreeMap<String, Vec<u8>>> {
        let data: BTreeMap<String, Vec<u8>> = match self {
            Self::Secret(api, name) => api
                .get_opt(name)
                .await
                .ok()??
                .data?
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect(),
            Self::ConfigMap(api, name) => api
                .get_opt(name)
                .await
                .ok()??
                .data?
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect(),
        };
        (!data.is_empty()).then_some(data)
    }
}

/// A [`Projected`] directory kept current from its source by a background
/// task, as the kubelet keeps a mounted volume.
struct Mirror {
    root: PathBuf,
    swaps: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Mirror {
    fn start(root: PathBuf, source: Source) -> Self {
        let swaps = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut projected = Projected::new(root.clone());
        let (count, done) = (swaps.clone(), stop.clone());
        tokio::spawn(async move {
            let mut last = None;
            while !done.load(Ordering::SeqCst) {
                if let Some(data) = source.data().await
                    && last.as_ref() != Some(&data)
                {
                    projected.write(&data);
                    count.fetch_add(1, Ordering::SeqCst);
                    last = Some(data);
                }
                tokio::time::sleep(MIRROR_POLL).await;
            }
        });
        Self { root, swaps, stop }
    }

    fn file(&self, name: &str) -> String {
        self.root.join(name).to_str().unwrap().to_owned()
    }

    /// The current content of file `name`, if written yet.
    fn read(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.file(name)).ok()
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn tool(name: &str) -> PathBuf {
    let path = workspace_root().join(".tools").join("bin").join(name);
    assert!(
        path.is_file(),
        "{} missing: run scripts/install-tools",
        path.display()
    );
    path
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Prometheus's HTTP API at `base`.
struct PromApi {
    base: String,
}

impl PromApi {
    /// `GET /api/v1/<path>` with `params`; the `data` of a success.
    async fn get(&self, path: &str, params: &[(&str, String)]) -> Option<Value> {
        let mut args = vec![
            "-sS".to_owned(),
            "--max-time".to_owned(),
            "10".to_owned(),
            "-G".to_owned(),
            format!("{}/api/v1/{path}", self.base),
        ];
        for (k, v) in params {
            args.push("--data-urlencode".to_owned());
            args.push(format!("{k}={v}"));
        }
        let out = tokio::process::Command::new("curl")
            .args(&args)
            .output()
            .await
            .ok()?;
        let body: Value = serde_json::from_slice(&out.stdout).ok()?;
        (body["status"] == "success").then(|| body["data"].clone())
    }

    /// An instant query at `time`: the result vector (or matrix, for a
    /// range selector).
    async fn query(&self, expr: &str, time: f64) -> Vec<Value> {
        self.get(
            "query",
            &[("query", expr.to_owned()), ("time", format!("{time:.3}"))],
        )
        .await
        .and_then(|d| d["result"].as_array().cloned())
        .unwrap_or_default()
    }

    /// The raw samples of `selector` per job between `from` and `to`.
    async fn raw(&self, selector: &str, from: f64, to: f64) -> BTreeMap<String, Vec<(f64, f64)>> {
        let window = (to - from).ceil() as u64 + 1;
        self.query(&format!("{selector}[{window}s]"), to)
            .await
            .iter()
            .map(|series| {
                let samples = series["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| (v[0].as_f64().unwrap(), value(&v[1])))
                    .filter(|(t, _)| *t >= from)
                    .collect();
                (job(series), samples)
            })
            .collect()
    }

    /// Counter `name` at `time` per `dialer_name` (Prometheus's dialer per
    /// scrape pool, named after the job).
    async fn per_dialer(&self, name: &str, time: f64) -> BTreeMap<String, f64> {
        self.query(&format!("sum by (dialer_name) ({name})"), time)
            .await
            .iter()
            .map(|s| {
                let dialer = s["metric"]["dialer_name"].as_str().unwrap_or("").to_owned();
                (dialer, value(&s["value"][1]))
            })
            .collect()
    }

    /// Every active target's job, health and last error.
    async fn targets(&self) -> Vec<(String, String, String)> {
        let data = self.get("targets", &[("state", "active".to_owned())]).await;
        data.and_then(|d| d["activeTargets"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|t| {
                let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
                (s(&t["labels"]["job"]), s(&t["health"]), s(&t["lastError"]))
            })
            .collect()
    }

    /// The sum of every series of counter `name` at `time`.
    async fn counter_sum(&self, name: &str, time: f64) -> f64 {
        self.query(&format!("sum({name}) or vector(0)"), time)
            .await
            .first()
            .map(|s| value(&s["value"][1]))
            .unwrap_or_default()
    }
}

fn value(v: &Value) -> f64 {
    v.as_str().unwrap().parse().unwrap()
}

fn job(series: &Value) -> String {
    series["metric"]["job"].as_str().unwrap_or("").to_owned()
}

/// The Prometheus configuration: node-exporter and the rotator over HTTPS,
/// trusting the projected bundle (the rotator with a bearer token), and
/// Prometheus itself, once a second.
fn prometheus_config(
    bundle: &str,
    token: &str,
    node_exporter: u16,
    rotator: u16,
    prometheus: u16,
) -> String {
    format!(
        "global:
  scrape_interval: {INTERVAL}s
  scrape_timeout: {INTERVAL}s
scrape_configs:
  - job_name: node-exporter
    scheme: https
    tls_config:
      ca_file: {bundle}
      server_name: {NODE_EXPORTER_NAME}
    static_configs: [{{targets: ['127.0.0.1:{node_exporter}']}}]
  - job_name: capstan-rotator
    scheme: https
    tls_config:
      ca_file: {bundle}
      server_name: {ROTATOR_NAME}
    authorization:
      credentials_file: {token}
    static_configs: [{{targets: ['127.0.0.1:{rotator}']}}]
  - job_name: prometheus
    static_configs: [{{targets: ['127.0.0.1:{prometheus}']}}]
"
    )
}

fn issuers(client: &kube::Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("capstan.dev", "v1alpha1", "ClusterCAIssuer");
    Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(&gvk, "clustercaissuers"),
    )
}

/// The signing CA's fingerprint, once the issuer reports one.
async fn signing_fingerprint(client: &kube::Client) -> Option<String> {
    let issuer = issuers(client).get_opt("monitoring-ca").await.ok()??;
    issuer.data["status"]["ca"]["fingerprint"]
        .as_str()
        .map(str::to_owned)
}

fn certificates(pem: &str) -> usize {
    pem.matches("-----BEGIN CERTIFICATE-----").count()
}

/// What a TLS target serves, as seen by `openssl s_client` trusting `ca`.
struct Served {
    /// Whether the handshake verified against `ca`.
    verified: bool,
    /// The leaf, PEM.
    leaf: String,
}

/// Handshakes with `127.0.0.1:port` as `name`, verifying against file `ca`.
fn served(dir: &Path, port: u16, name: &str, ca: &str) -> Served {
    let connect = format!("127.0.0.1:{port}");
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &connect,
            "-servername",
            name,
            "-verify_hostname",
            name,
            "-CAfile",
            ca,
            "-verify_return_error",
        ])
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is required");
    let text = String::from_utf8_lossy(&out.stdout);
    let leaf = text
        .find("-----BEGIN CERTIFICATE-----")
        .and_then(|start| {
            let end = text[start..].find("-----END CERTIFICATE-----")? + start + 25;
            Some(format!("{}\n", &text[start..end]))
        })
        .unwrap_or_default();
    Served {
        verified: out.status.success() && text.contains("Verify return code: 0 (ok)"),
        leaf,
    }
}

/// openssl's SHA-256 fingerprint of the certificate in file `pem`.
fn fingerprint(dir: &Path, pem: &str) -> String {
    let (ok, out) = openssl_in(
        dir,
        &["x509", "-noout", "-fingerprint", "-sha256", "-in", pem],
    );
    assert!(ok, "{out}");
    out.trim().rsplit('=').next().unwrap().to_owned()
}

/// Everything the drill runs, dropped in reverse order of start.
struct Drill {
    prometheus: RunningBinary,
    node_exporter: RunningBinary,
    rotator: RunningBinary,
    issuer: RunningBinary,
    mirrors: BTreeMap<&'static str, Mirror>,
    client: kube::Client,
    kubectl: Kubectl,
    api: PromApi,
    ports: BTreeMap<&'static str, u16>,
    cert_manager: CertManager,
    dir: tempfile::TempDir,
    /// Declared last so it is dropped last, after the binaries.
    _cp: ControlPlane,
}

impl Drill {
    fn logs(&self) -> String {
        let tail = |b: &RunningBinary| {
            let logs = b.logs();
            logs[logs.len().saturating_sub(40)..].join("\n")
        };
        format!(
            "prometheus:\n{}\nnode-exporter:\n{}\nrotator:\n{}\nissuer:\n{}\ncert-manager:\n{}",
            tail(&self.prometheus),
            tail(&self.node_exporter),
            tail(&self.rotator),
            tail(&self.issuer),
            self.cert_manager.logs(40)
        )
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

    fn write(&self, name: &str, content: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path.to_str().unwrap().to_owned()
    }

    /// The CA the issuer signs with now (its Secret's `tls.crt`), written
    /// to file `name`.
    async fn signing_ca(&self, name: &str) -> String {
        let secret = Api::<Secret>::namespaced(self.client.clone(), "certs")
            .get("monitoring-ca")
            .await
            .unwrap();
        let pem = String::from_utf8(secret.data.unwrap()["tls.crt"].0.clone()).unwrap();
        self.write(name, &pem)
    }

    /// The leaf in Secret `secret`'s `tls.crt`.
    async fn secret_leaf(&self, secret: &str) -> String {
        let s = Api::<Secret>::namespaced(self.client.clone(), NS)
            .get(secret)
            .await
            .unwrap();
        String::from_utf8(s.data.unwrap()["tls.crt"].0.clone()).unwrap()
    }

    /// The targets' jobs, ports, TLS names and Secrets.
    fn tls_targets(&self) -> [(&'static str, u16, &'static str, &'static str); 2] {
        [
            (
                "node-exporter",
                self.ports["node-exporter"],
                NODE_EXPORTER_NAME,
                "node-exporter-tls",
            ),
            (
                "capstan-rotator",
                self.ports["capstan-rotator"],
                ROTATOR_NAME,
                "capstan-rotator-metrics-tls",
            ),
        ]
    }

    /// Makes Prometheus open a new connection, and so a new TLS handshake,
    /// to `job`'s target: kills its connections to `port` (`ss -K`, as a
    /// network blip or a load balancer would), midway between two scrapes
    /// so that none is cut off. Without it Prometheus keeps the connection
    /// it opened before the renewal alive and never sees the new leaf.
    async fn reconnect(&self, job: &str, port: u16) {
        let selector = format!("up{{job=\"{job}\"}}");
        self.wait(
            &format!("a moment between two scrapes of {job}"),
            || async {
                let t = now();
                let last = self.api.raw(&selector, t - 3.0 * INTERVAL, t).await;
                let (at, _) = *last.get(job)?.last()?;
                let phase = (now() - at) % INTERVAL;
                (0.4 * INTERVAL..0.7 * INTERVAL)
                    .contains(&phase)
                    .then_some(())
            },
        )
        .await;
        let dport = format!(":{port}");
        let out = std::process::Command::new("ss")
            .args(["-K", "dst", "127.0.0.1", "dport", "=", &dport])
            .output()
            .expect("ss (iproute2) is required: run scripts/install-tools");
        assert!(out.status.success(), "ss -K: {out:?}");
    }

    /// Waits until `up` has been 1 for every job in each of the last three
    /// scrapes (so Prometheus's own counters have caught up too).
    async fn wait_all_up(&self) {
        self.wait("three scrapes of every target with up == 1", || async {
            let t = now();
            let raw = self.api.raw("up", t - 3.5 * INTERVAL, t).await;
            (raw.len() == 3
                && raw
                    .values()
                    .all(|s| s.len() >= 3 && s.iter().all(|(_, v)| *v == 1.0)))
            .then_some(())
        })
        .await;
    }

    /// Waits until each TLS target serves the leaf its Secret holds now,
    /// verified against `ca` (a file).
    async fn wait_served_from_secrets(&self, ca: &str) {
        for (job, port, name, secret) in self.tls_targets() {
            let want = self.secret_leaf(secret).await;
            self.wait(&format!("{job} to serve {secret}'s leaf"), || async {
                let got = served(self.dir.path(), port, name, ca);
                (got.verified && got.leaf.trim() == want.trim()).then_some(())
            })
            .await;
        }
    }
}

async fn start() -> Drill {
    let cp = ControlPlane::start().await.unwrap();
    let client = cp.client().await.unwrap();
    let kubectl = Kubectl::for_server(&cp).unwrap();
    kubectl.apply_crds(false).await.unwrap();
    let cert_manager = CertManager::start(&cp).await.unwrap();
    kubectl
        .run_ok(&["create", "namespace", "certs"])
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = |name: &str| {
        let user = format!("system:serviceaccount:default:{name}");
        user_kubeconfig(&cp, dir.path(), name, &user, MASTERS).unwrap()
    };
    let issuer = start_issuer(&config("capstan-issuer"), "certs", "issuer-0").unwrap();
    kubectl.apply(OBJECTS).await;
    for cert in ["node-exporter-tls", "capstan-rotator-metrics"] {
        cert_manager::wait_issued(&kubectl, NS, cert, 1, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", cert_manager.logs(40)));
    }
    let secrets = Api::<Secret>::namespaced(client.clone(), NS);
    let mut mirrors = BTreeMap::new();
    for (key, secret) in [
        ("node-exporter", "node-exporter-tls"),
        ("capstan-rotator", "capstan-rotator-metrics-tls"),
    ] {
        mirrors.insert(
            key,
            Mirror::start(
                dir.path().join(key),
                Source::Secret(secrets.clone(), secret.to_owned()),
            ),
        );
    }
    mirrors.insert(
        "bundle",
        Mirror::start(
            dir.path().join("bundle"),
            Source::ConfigMap(Api::namespaced(client.clone(), NS), BUNDLE_CM.to_owned()),
        ),
    );
    await_condition("the projected leaves", WAIT, POLL, || async {
        (mirrors["node-exporter"].read("tls.key").is_some()
            && mirrors["capstan-rotator"].read("tls.key").is_some())
        .then_some(())
    })
    .await
    .unwrap();

    let rotator_tls = &mirrors["capstan-rotator"];
    let rotator = start_binary(
        "capstan-rotator",
        &config("capstan-rotator"),
        &[
            "--leader-election-namespace",
            "default",
            "--cluster-resource-namespace",
            "certs",
            "--metrics-tls-cert-file",
            &rotator_tls.file("tls.crt"),
            "--metrics-tls-private-key-file",
            &rotator_tls.file("tls.key"),
            "--metrics-auth-token-review",
        ],
        &[
            ("POD_NAMESPACE", "default"),
            ("POD_NAME", "rotator-0"),
            ("RUST_LOG", "info"),
        ],
    )
    .unwrap();
    let (rotator_metrics, _) = rotator.serving_addresses(WAIT).await.unwrap();

    let node_exporter_port = free_port().unwrap();
    let web_config = dir.path().join("web-config.yml");
    std::fs::write(
        &web_config,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
            mirrors["node-exporter"].file("tls.crt"),
            mirrors["node-exporter"].file("tls.key")
        ),
    )
    .unwrap();
    let node_exporter = RunningBinary::start(
        &tool("prometheus-node-exporter"),
        &[
            &format!("--web.listen-address=127.0.0.1:{node_exporter_port}"),
            &format!("--web.config.file={}", web_config.display()),
            "--collector.disable-defaults",
            "--collector.cpu",
            "--collector.loadavg",
        ],
        &[],
    )
    .unwrap();

    await_condition("the bundle projected with one CA", WAIT, POLL, || async {
        mirrors["bundle"]
            .read("ca-bundle.crt")
            .filter(|b| certificates(b) == 1)
    })
    .await
    .unwrap();
    let token = cp
        .service_account_token(NS, "prometheus-k8s", &[])
        .await
        .unwrap();
    let token_file = dir.path().join("prometheus.token");
    std::fs::write(&token_file, token).unwrap();
    let prometheus_port = free_port().unwrap();
    let config_file = dir.path().join("prometheus.yml");
    std::fs::write(
        &config_file,
        prometheus_config(
            &mirrors["bundle"].file("ca-bundle.crt"),
            token_file.to_str().unwrap(),
            node_exporter_port,
            rotator_metrics.port(),
            prometheus_port,
        ),
    )
    .unwrap();
    let tsdb = dir.path().join("tsdb");
    let prometheus = RunningBinary::start(
        &tool("prometheus"),
        &[
            &format!("--config.file={}", config_file.display()),
            &format!("--storage.tsdb.path={}", tsdb.display()),
            &format!("--web.listen-address=127.0.0.1:{prometheus_port}"),
        ],
        &[],
    )
    .unwrap();
    let ports = BTreeMap::from([
        ("node-exporter", node_exporter_port),
        ("capstan-rotator", rotator_metrics.port()),
        ("prometheus", prometheus_port),
    ]);
    Drill {
        prometheus,
        node_exporter,
        rotator,
        issuer,
        mirrors,
        client,
        kubectl,
        api: PromApi {
            base: format!("http://127.0.0.1:{prometheus_port}"),
        },
        ports,
        cert_manager,
        dir,
        _cp: cp,
    }
}

/// One target's record over the drill.
#[derive(Debug)]
struct Record {
    attempted: usize,
    failed: usize,
    /// The longest time between two successive scrapes, in seconds.
    max_gap: f64,
}

fn record(samples: &[(f64, f64)]) -> Record {
    Record {
        attempted: samples.len(),
        failed: samples.iter().filter(|(_, v)| *v != 1.0).count(),
        max_gap: samples
            .windows(2)
            .map(|w| w[1].0 - w[0].0)
            .fold(0.0, f64::max),
    }
}

#[tokio::test]
async fn prometheus_scrapes_every_target_through_a_root_ca_rotation() {
    let drill = start().await;
    drill.wait_all_up().await;
    let first_ca = drill.signing_ca("ca-before.pem").await;
    drill.wait_served_from_secrets(&first_ca).await;
    let leaves_before: BTreeMap<_, _> = {
        let mut m = BTreeMap::new();
        for (job, _, _, secret) in drill.tls_targets() {
            m.insert(
                job,
                drill.write(
                    &format!("{job}-before.pem"),
                    &drill.secret_leaf(secret).await,
                ),
            );
        }
        m
    };
    let first = signing_fingerprint(&drill.client).await.unwrap();
    let start_time = now();
    let counters_before = {
        let mut m = BTreeMap::new();
        for c in FAILURE_COUNTERS {
            m.insert(c, drill.api.counter_sum(c, start_time).await);
        }
        m
    };

    // Rotate; the bundle takes both CAs before the issuer switches.
    drill
        .kubectl
        .rotate("monitoring-ca", "drill-1")
        .await
        .unwrap();
    drill
        .wait("both CAs in the projected bundle", || async {
            drill.mirrors["bundle"]
                .read("ca-bundle.crt")
                .filter(|b| certificates(b) == 2)
        })
        .await;
    let second = drill
        .wait("the issuer to sign with the new CA", || async {
            signing_fingerprint(&drill.client)
                .await
                .filter(|f| *f != first)
        })
        .await;
    let second_ca = drill.signing_ca("ca-after.pem").await;

    // The leaves renewed from the new CA, projected, and served.
    for cert in ["node-exporter-tls", "capstan-rotator-metrics"] {
        cert_manager::renew(&drill.kubectl, NS, cert).await.unwrap();
    }
    for cert in ["node-exporter-tls", "capstan-rotator-metrics"] {
        cert_manager::wait_issued(&drill.kubectl, NS, cert, 2, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", drill.logs()));
    }
    drill.wait_served_from_secrets(&second_ca).await;
    let renewed_at = now();
    let conns_renewed = drill.api.per_dialer(ESTABLISHED, renewed_at).await;
    for (job, port, _, _) in drill.tls_targets() {
        drill.reconnect(job, port).await;
        drill
            .wait(&format!("Prometheus's new connection to {job}"), || async {
                let conns = drill.api.per_dialer(ESTABLISHED, now()).await;
                (conns.get(job) > conns_renewed.get(job)).then_some(())
            })
            .await;
    }
    let reconnected_at = now();
    drill
        .wait(
            &format!("{SCRAPES_AFTER} scrapes of each target after the renewal"),
            || async {
                let raw = drill.api.raw("up", reconnected_at, now()).await;
                (raw.len() == 3 && raw.values().all(|s| s.len() >= SCRAPES_AFTER)).then_some(())
            },
        )
        .await;
    let end_time = now();
    let conns_start = drill.api.per_dialer(ESTABLISHED, start_time).await;
    let conns_end = drill.api.per_dialer(ESTABLISHED, end_time).await;

    // The verdict, from Prometheus's HTTP API.
    let raw_up = drill.api.raw("up", start_time, end_time).await;
    let scraped = drill
        .api
        .raw("scrape_samples_scraped", start_time, end_time)
        .await;
    let duration = end_time - start_time;
    let ranged = drill
        .api
        .get(
            "query_range",
            &[
                ("query", "up".to_owned()),
                ("start", format!("{start_time:.3}")),
                ("end", format!("{end_time:.3}")),
                ("step", format!("{INTERVAL}s")),
            ],
        )
        .await
        .unwrap();
    let steps = (duration / INTERVAL).floor() as usize + 1;
    println!("query_range up: {steps} steps of {INTERVAL}s per target");
    println!(
        "drill: {duration:.1}s, CA {first} -> {second}, renewal served {:.1}s and reconnected {:.1}s after the start",
        renewed_at - start_time,
        reconnected_at - start_time
    );
    let mut failures = Vec::new();
    for series in ranged["result"].as_array().unwrap() {
        let j = job(series);
        let values = series["values"].as_array().unwrap();
        if values.len() != steps || values.iter().any(|v| value(&v[1]) != 1.0) {
            failures.push(format!(
                "query_range up{{job={j}}}: {} of {steps} steps, values {:?}",
                values.len(),
                values.iter().map(|v| value(&v[1])).collect::<Vec<_>>()
            ));
        }
    }
    for (j, samples) in &raw_up {
        let r = record(samples);
        let rows = scraped.get(j).cloned().unwrap_or_default();
        let min_samples = rows.iter().map(|s| s.1).fold(f64::INFINITY, f64::min);
        println!(
            "target {j}: scrapes attempted {}, failed {}, longest gap {:.2}s, fewest samples scraped {min_samples}",
            r.attempted, r.failed, r.max_gap
        );
        let conns = |m: &BTreeMap<String, f64>| m.get(j).copied().unwrap_or_default();
        println!(
            "target {j}: TCP connections opened by Prometheus: {} before the drill, {} during it, {} after the renewal was served",
            conns(&conns_start),
            conns(&conns_end) - conns(&conns_start),
            conns(&conns_end) - conns(&conns_renewed),
        );
        let expected = (duration / INTERVAL) as usize;
        if drill.ports.contains_key(j.as_str())
            && j != "prometheus"
            && conns(&conns_end) <= conns(&conns_renewed)
        {
            failures.push(format!("{j}: no new connection after the renewal"));
        }
        if r.failed > 0 || r.max_gap > 2.0 * INTERVAL || r.attempted + 2 < expected {
            failures.push(format!(
                "{j}: {r:?} over {duration:.1}s (expected ~{expected})"
            ));
        }
        if rows.len() != samples.len() || min_samples <= 0.0 {
            failures.push(format!(
                "{j}: scrape_samples_scraped {} samples, min {min_samples}",
                rows.len()
            ));
        }
    }
    for (j, health, error) in drill.api.targets().await {
        if health != "up" || !error.is_empty() {
            failures.push(format!("target {j}: {health} {error}"));
        }
    }
    for c in FAILURE_COUNTERS {
        let after = drill.api.counter_sum(c, end_time).await;
        if after != counters_before[c] {
            failures.push(format!("{c}: {} -> {after}", counters_before[c]));
        }
    }

    // The targets serve the new leaves, chaining to the new root only.
    for (job, port, name, _) in drill.tls_targets() {
        let now_served = served(drill.dir.path(), port, name, &second_ca);
        let leaf = drill.write(&format!("{job}-after.pem"), &now_served.leaf);
        let (ok_new, out_new) =
            openssl_in(drill.dir.path(), &["verify", "-CAfile", &second_ca, &leaf]);
        let (ok_old, _) = openssl_in(drill.dir.path(), &["verify", "-CAfile", &first_ca, &leaf]);
        let (before_old, _) = openssl_in(
            drill.dir.path(),
            &["verify", "-CAfile", &first_ca, &leaves_before[job]],
        );
        println!(
            "target {job}: CA before {} (leaf verifies: {before_old}), CA after {} (leaf verifies: {ok_new}, against the old CA: {ok_old})",
            fingerprint(drill.dir.path(), &first_ca),
            fingerprint(drill.dir.path(), &second_ca),
        );
        if !(now_served.verified && ok_new && !ok_old && before_old) {
            failures.push(format!(
                "{job}: served leaf does not chain to the new root only: {out_new}"
            ));
        }
    }
    for (name, m) in &drill.mirrors {
        println!("projected {name}: {} swaps", m.swaps.load(Ordering::SeqCst));
    }
    assert!(failures.is_empty(), "{failures:#?}\n{}", drill.logs());
    // capstan reloaded its own serving files without a restart.
    drill
        .rotator
        .wait_for_log(WAIT, |l| l.contains("Updated serving TLS certificate"))
        .await
        .unwrap();
    hygiene::assert_no_key_leaks(&drill.kubectl, &[&drill.rotator, &drill.issuer], &[]).await;
}
