//! A monitoring drill end to end: a real Prometheus (Debian's 2.42) scrapes,
//! over TLS, targets whose certificates come from capstan, through three
//! rotations of the root CA, and is judged from its own HTTP API.
//!
//! Everything is real: the control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, kwok), cert-manager's own
//! controller, the `capstan-issuer` and `capstan-rotator` binaries,
//! `prometheus-node-exporter`, Prometheus, and openssl. The setup is
//! docs/scraping-tls.md's: its `prometheus.yml` jobs and node-exporter's
//! `web-config.yml` are read from that page and run with the drill's
//! addresses and paths, so what the docs say is what this runs.
//!
//! * a self-managed `ClusterCAIssuer/monitoring-ca` on compressed lifetimes
//!   (a 15 minute root, a 20 second propagation delay);
//! * node-exporter serving a cert-manager `Certificate` from it, once with
//!   TLS only and once requiring a client certificate (mTLS), for which
//!   Prometheus presents a `Certificate` of its own from the same CA;
//! * the rotator's own `/metrics` on dynamic serving TLS (its CA in a Secret
//!   the rotator injects into a ConfigMap) with TokenReview bearer auth,
//!   scraped with a ServiceAccount token in `authorization.credentials_file`;
//! * `ca-bundle.crt` ConfigMaps the rotator keeps, which Prometheus and the
//!   mTLS node-exporter trust;
//! * the Secrets and ConfigMaps projected into directories as the kubelet
//!   mounts them (a timestamped directory, `..data` swapped atomically with
//!   a rename, the files as links through it), kept current by polling.
//!
//! The drill rotates the root three ways: on schedule (the issuer's own
//! clock reaches `rotateBefore`), by hand (`capstan.dev/rotate`), and by hand
//! with capstan-issuer SIGKILLed between publishing the new CA and signing
//! with it (a new replica finishes the rotation). After each, the leaves are
//! renewed from the new CA and served on Prometheus's next connection. Then
//! Prometheus must have scraped every target successfully once a second
//! throughout, with no failure counter moved, and each served leaf must
//! chain to the root of its rotation and not to the one before.
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
use capstan_tests::{hygiene, markdown};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};

/// Generous: the machine is shared with long builds.
const WAIT: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_millis(200);
/// How often the projected directories look at their source objects.
const MIRROR_POLL: Duration = Duration::from_millis(250);
/// The scrape interval, in seconds, of every job.
const INTERVAL: f64 = 1.0;
/// Scrapes of every target to wait for after each rotation's renewed
/// leaves are served.
const SCRAPES_AFTER: usize = 10;
/// How far ahead of now the scheduled rotation is put, in seconds.
const SCHEDULE_AHEAD: i64 = 20;
/// The issuer's `rotateBefore` outside the scheduled rotation: nothing is
/// due by the clock for 14 minutes of a 15 minute root.
const ROTATE_BEFORE: &str = "1m";
const NS: &str = "monitoring";
const ISSUER: &str = "monitoring-ca";
const NODE_EXPORTER_NAME: &str = "node-exporter.monitoring.svc";
/// The Certificates renewed after each rotation.
const LEAVES: [&str; 2] = ["node-exporter-tls", "prometheus-client"];
/// Every scrape job: the docs' three and Prometheus itself.
const JOBS: [&str; 4] = [
    "node-exporter",
    "node-exporter-mtls",
    "capstan-rotator",
    "prometheus",
];

/// The CA, the bundles, the leaves and what lets Prometheus scrape the
/// rotator (the chart's metrics-reader ClusterRole, bound to its
/// ServiceAccount), as docs/scraping-tls.md has them.
const OBJECTS: &str = "apiVersion: v1
kind: Namespace
metadata: {name: monitoring}
---
apiVersion: v1
kind: Namespace
metadata: {name: capstan}
---
apiVersion: capstan.dev/v1alpha1
kind: ClusterCAIssuer
metadata: {name: monitoring-ca}
spec:
  maxDuration: 10m
  selfManaged:
    secretName: monitoring-ca
    duration: 15m
    rotateBefore: 1m
    propagationDelay: 20s
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: prometheus-scrape-ca
  namespace: monitoring
  annotations:
    capstan.dev/inject-ca-from-issuer: monitoring-ca
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: capstan-rotator-metrics-ca
  namespace: monitoring
  annotations:
    capstan.dev/inject-ca-from: capstan/capstan-metrics-ca
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
metadata: {name: prometheus-client, namespace: monitoring}
spec:
  secretName: prometheus-client-tls
  commonName: prometheus-k8s
  duration: 10m
  usages: [client auth, digital signature]
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

/// docs/scraping-tls.md, the recipe the drill runs.
fn scraping_doc() -> String {
    std::fs::read_to_string(workspace_root().join("docs/scraping-tls.md")).unwrap()
}

/// `text` with each `(from, to)` replaced; fails when the docs' `what` no
/// longer holds `from`, so that a changed recipe changes the drill with it.
fn substitute(text: &str, what: &str, table: &[(&str, String)]) -> String {
    let mut out = text.to_owned();
    for (from, to) in table {
        assert!(
            out.contains(from),
            "docs/scraping-tls.md's {what} no longer has {from:?}:\n{text}"
        );
        out = out.replace(from, to);
    }
    out
}

/// The docs' `prometheus.yml` with the drill's mount paths, addresses and
/// token file for the docs' (`table`), scraping once a second, and a job for
/// Prometheus itself.
fn prometheus_config(table: &[(&str, String)], prometheus: u16) -> String {
    let doc = markdown::yaml_block(&scraping_doc(), "# prometheus.yml").unwrap();
    let mut table = table.to_vec();
    table.push((
        "scrape_interval: 30s",
        format!("scrape_interval: {INTERVAL}s\n  scrape_timeout: {INTERVAL}s"),
    ));
    let config = substitute(&doc, "prometheus.yml", &table);
    format!(
        "{config}  - job_name: prometheus\n    static_configs: [{{targets: ['127.0.0.1:{prometheus}']}}]\n"
    )
}

/// node-exporter's `web-config.yml` from the docs' ConfigMap, reading the
/// leaf from `tls_dir` and the client CA bundle from `ca_dir`; for TLS only
/// (`mtls` false), without its two client lines, as the docs say.
fn web_config(tls_dir: &Path, ca_dir: &Path, mtls: bool) -> String {
    let manifest = markdown::fenced_blocks(&scraping_doc(), "yaml")
        .into_iter()
        .find(|b| b.contains("name: node-exporter-web-config"))
        .expect("docs/scraping-tls.md shows the node-exporter-web-config ConfigMap");
    let config_map: serde_norway::Value = serde_norway::from_str(&manifest).unwrap();
    let text = config_map["data"]["web-config.yml"].as_str().unwrap();
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let text = substitute(
        text,
        "web-config.yml",
        &[
            ("/etc/node-exporter/tls", path(tls_dir)),
            ("/etc/node-exporter/ca", path(ca_dir)),
        ],
    );
    let client_lines = text.lines().filter(|l| l.contains("client_")).count();
    assert_eq!(client_lines, 2, "the docs' web-config.yml:\n{text}");
    if mtls {
        text
    } else {
        text.lines()
            .filter(|l| !l.contains("client_"))
            .map(|l| format!("{l}\n"))
            .collect()
    }
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

/// Handshakes with `127.0.0.1:port` as `name`, verifying against file `ca`,
/// presenting the client certificate and key files in `client` if any.
fn served(dir: &Path, port: u16, name: &str, ca: &str, client: Option<(&str, &str)>) -> Served {
    let connect = format!("127.0.0.1:{port}");
    let mut args = vec![
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
    ];
    if let Some((cert, key)) = client {
        args.extend(["-cert", cert, "-key", key]);
    }
    let out = std::process::Command::new("openssl")
        .args(&args)
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

/// How a rotation of the drill is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    /// The issuer's own clock reaches the signing CA's rotation point.
    Schedule,
    /// `capstan.dev/rotate` set by hand.
    Annotation,
    /// `capstan.dev/rotate`, with capstan-issuer SIGKILLed after it
    /// publishes the new CA and before that CA signs; a new replica
    /// finishes the rotation.
    AnnotationIssuerKilled,
}

/// What one rotation did, as the drill saw it.
struct Rotation {
    trigger: Trigger,
    /// openssl's fingerprints of the signing CA before and after.
    before: String,
    after: String,
    /// Seconds from the trigger to the renewed leaves' tenth scrape.
    seconds: f64,
    /// Per monitoring-ca target: whether the leaf served before verified
    /// against the old root, and whether the leaf served after verifies
    /// against the new root and against the old one.
    chains: Vec<(&'static str, bool, bool, bool)>,
}

/// A target serving a leaf from `monitoring-ca`: its job, and whether it
/// requires Prometheus's client certificate.
const CA_TARGETS: [(&str, bool); 2] = [("node-exporter", false), ("node-exporter-mtls", true)];

/// Everything the drill runs, dropped in reverse order of start.
struct Drill {
    prometheus: RunningBinary,
    node_exporters: Vec<RunningBinary>,
    rotator: RunningBinary,
    issuer: RunningBinary,
    /// Issuers SIGKILLed so far, kept for their logs.
    killed: Vec<RunningBinary>,
    issuer_kubeconfig: PathBuf,
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
        let mut out = format!(
            "prometheus:\n{}\nrotator:\n{}\nissuer:\n{}\n",
            tail(&self.prometheus),
            tail(&self.rotator),
            tail(&self.issuer),
        );
        for (i, b) in self.node_exporters.iter().enumerate() {
            out.push_str(&format!("node-exporter {i}:\n{}\n", tail(b)));
        }
        for (i, b) in self.killed.iter().enumerate() {
            out.push_str(&format!("killed issuer {i}:\n{}\n", tail(b)));
        }
        out + &format!("cert-manager:\n{}", self.cert_manager.logs(40))
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

    /// Key `key` of the issuer's CA Secret, once it exists and has it.
    async fn ca_secret(&self, key: &str) -> Option<String> {
        let secret = Api::<Secret>::namespaced(self.client.clone(), "certs")
            .get_opt(ISSUER)
            .await
            .ok()??;
        let bytes = secret.data?.remove(key)?.0;
        String::from_utf8(bytes).ok()
    }

    /// The leaf in Secret `secret`'s `tls.crt`.
    async fn secret_leaf(&self, secret: &str) -> String {
        let s = Api::<Secret>::namespaced(self.client.clone(), NS)
            .get(secret)
            .await
            .unwrap();
        String::from_utf8(s.data.unwrap()["tls.crt"].0.clone()).unwrap()
    }

    /// The client certificate and key Prometheus presents, as files.
    fn client_files(&self) -> (String, String) {
        let m = &self.mirrors["client-tls"];
        (m.file("tls.crt"), m.file("tls.key"))
    }

    /// What monitoring-ca target `job` serves, verified against file `ca`.
    fn served_by(&self, job: &str, mtls: bool, ca: &str) -> Served {
        let (cert, key) = self.client_files();
        let client = mtls.then_some((cert.as_str(), key.as_str()));
        served(
            self.dir.path(),
            self.ports[job],
            NODE_EXPORTER_NAME,
            ca,
            client,
        )
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
        let up = await_condition(
            "three scrapes of every target with up == 1",
            WAIT,
            POLL,
            || async {
                let t = now();
                let raw = self.api.raw("up", t - 3.5 * INTERVAL, t).await;
                (raw.len() == JOBS.len()
                    && raw
                        .values()
                        .all(|s| s.len() >= 3 && s.iter().all(|(_, v)| *v == 1.0)))
                .then_some(())
            },
        )
        .await;
        if let Err(e) = up {
            let targets = self.api.targets().await;
            panic!(
                "{e}
targets (job, health, last error): {targets:#?}
{}",
                self.logs()
            );
        }
    }

    /// Waits until each monitoring-ca target serves the leaf its Secret
    /// holds now, verified against `ca` (a file).
    async fn wait_served_from_secrets(&self, ca: &str) {
        let want = self.secret_leaf("node-exporter-tls").await;
        for (job, mtls) in CA_TARGETS {
            self.wait(
                &format!("{job} to serve node-exporter-tls's leaf"),
                || async {
                    let got = self.served_by(job, mtls, ca);
                    (got.verified && got.leaf.trim() == want.trim()).then_some(())
                },
            )
            .await;
        }
    }

    /// Sets the issuer's `spec.selfManaged.rotateBefore`.
    async fn set_rotate_before(&self, value: &str) {
        let patch = json!({"spec": {"selfManaged": {"rotateBefore": value}}});
        issuers(&self.client)
            .patch(ISSUER, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// Moves `rotateBefore` so that the signing CA reaches its rotation
    /// point [`SCHEDULE_AHEAD`] seconds from now: the issuer's own timer,
    /// not a trigger, must start the rotation.
    async fn schedule_rotation(&self) {
        let issuer = issuers(&self.client).get(ISSUER).await.unwrap();
        let not_after: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time =
            serde_json::from_value(issuer.data["status"]["ca"]["notAfter"].clone()).unwrap();
        let left = not_after.0.as_second() - now() as i64;
        self.set_rotate_before(&format!("{}s", left - SCHEDULE_AHEAD))
            .await;
    }

    /// Waits for the issuer to publish the next CA, SIGKILLs it before that
    /// CA signs, and starts a replacement under a new pod name (which waits
    /// out the dead one's Lease, as a rescheduled pod does). Returns the
    /// published CA and the bundle's size at the kill.
    async fn kill_issuer_between_steps(&mut self) -> (String, usize) {
        let next = self
            .wait("the issuer to publish the next CA", || {
                self.ca_secret("next.crt")
            })
            .await;
        self.issuer.sigkill().await.unwrap();
        assert_eq!(
            self.ca_secret("next.crt").await.as_deref(),
            Some(next.as_str()),
            "the issuer switched CAs before it was killed: the propagation delay is too short for this machine\n{}",
            self.logs()
        );
        let bundle = certificates(&self.ca_secret("ca-bundle.crt").await.unwrap());
        let pod = format!("issuer-{}", self.killed.len() + 1);
        let replacement = start_issuer(&self.issuer_kubeconfig, "certs", &pod).unwrap();
        self.killed
            .push(std::mem::replace(&mut self.issuer, replacement));
        (next, bundle)
    }

    /// The Certificates' current revisions.
    async fn revisions(&self) -> BTreeMap<&'static str, u64> {
        let mut out = BTreeMap::new();
        for cert in LEAVES {
            let c = self
                .kubectl
                .get_json(&["certificate", cert, "-n", NS])
                .await
                .unwrap();
            out.insert(cert, c["status"]["revision"].as_u64().unwrap());
        }
        out
    }

    /// One rotation, started by `trigger`: the new CA signs, the leaves are
    /// renewed from it, served, and scraped [`SCRAPES_AFTER`] times on new
    /// connections.
    async fn rotate(&mut self, trigger: Trigger, index: usize) -> Rotation {
        let started = now();
        let before = signing_fingerprint(&self.client).await.unwrap();
        let before_pem = self.ca_secret("tls.crt").await.unwrap();
        let before_ca = self.write(&format!("ca-{index}-before.pem"), &before_pem);
        let mut chains = Vec::new();
        for (job, mtls) in CA_TARGETS {
            chains.push((job, self.served_by(job, mtls, &before_ca).verified));
        }
        let revisions = self.revisions().await;
        let mut published = None;
        match trigger {
            Trigger::Schedule => self.schedule_rotation().await,
            Trigger::Annotation => self
                .kubectl
                .rotate(ISSUER, &format!("drill-{index}"))
                .await
                .unwrap(),
            Trigger::AnnotationIssuerKilled => {
                self.kubectl
                    .rotate(ISSUER, &format!("drill-{index}"))
                    .await
                    .unwrap();
                published = Some(self.kill_issuer_between_steps().await);
            }
        }
        self.wait(
            &format!("the issuer to sign with a new CA ({trigger:?})"),
            || async {
                signing_fingerprint(&self.client)
                    .await
                    .filter(|f| *f != before)
            },
        )
        .await;
        let after_pem = self.ca_secret("tls.crt").await.unwrap();
        match trigger {
            Trigger::Schedule => {
                self.set_rotate_before(ROTATE_BEFORE).await;
                let events = self
                    .kubectl
                    .get_json(&[
                        "events",
                        "-A",
                        "--field-selector",
                        "involvedObject.name=monitoring-ca,reason=CARotationStarted",
                    ])
                    .await
                    .unwrap();
                let scheduled = events["items"].as_array().unwrap().iter().any(|e| {
                    e["message"].as_str().is_some_and(|m| {
                        m.starts_with("Published a new CA in the bundle; it signs")
                    })
                });
                assert!(
                    scheduled,
                    "no scheduled CARotationStarted Event: {events:#}"
                );
            }
            Trigger::Annotation => {}
            Trigger::AnnotationIssuerKilled => {
                let (next, bundle) = published.take().unwrap();
                assert_eq!(
                    after_pem.trim(),
                    next.trim(),
                    "the replacement issuer signs with a CA other than the one published before the kill"
                );
                let now_bundle = certificates(&self.ca_secret("ca-bundle.crt").await.unwrap());
                assert_eq!(now_bundle, bundle, "the replacement generated another CA");
            }
        }
        let after_ca = self.write(&format!("ca-{index}-after.pem"), &after_pem);
        self.wait("the new CA in the projected bundle", || async {
            self.mirrors["scrape-ca"]
                .read("ca-bundle.crt")
                .filter(|b| b.contains(after_pem.trim()))
        })
        .await;

        // The leaves renewed from the new CA, projected, and served.
        for cert in LEAVES {
            cert_manager::renew(&self.kubectl, NS, cert).await.unwrap();
        }
        for cert in LEAVES {
            cert_manager::wait_issued(&self.kubectl, NS, cert, revisions[cert] + 1, WAIT)
                .await
                .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
        }
        let client_leaf = self.secret_leaf("prometheus-client-tls").await;
        self.wait(
            "Prometheus's renewed client certificate projected",
            || async {
                self.mirrors["client-tls"]
                    .read("tls.crt")
                    .filter(|c| c.trim() == client_leaf.trim())
            },
        )
        .await;
        self.wait_served_from_secrets(&after_ca).await;
        let renewed_at = now();
        let conns_renewed = self.api.per_dialer(ESTABLISHED, renewed_at).await;
        for (job, _) in CA_TARGETS {
            self.reconnect(job, self.ports[job]).await;
            self.wait(&format!("Prometheus's new connection to {job}"), || async {
                let conns = self.api.per_dialer(ESTABLISHED, now()).await;
                (conns.get(job) > conns_renewed.get(job)).then_some(())
            })
            .await;
        }
        let reconnected_at = now();
        self.wait(
            &format!("{SCRAPES_AFTER} scrapes of each target after the renewal"),
            || async {
                let raw = self.api.raw("up", reconnected_at, now()).await;
                (raw.len() == JOBS.len() && raw.values().all(|s| s.len() >= SCRAPES_AFTER))
                    .then_some(())
            },
        )
        .await;

        let dir = self.dir.path();
        let chains = chains
            .into_iter()
            .map(|(job, before_ok)| {
                let mtls = CA_TARGETS.iter().any(|(j, m)| *j == job && *m);
                let leaf = self.served_by(job, mtls, &after_ca).leaf;
                let leaf = self.write(&format!("{job}-{index}-after.pem"), &leaf);
                let (new_ok, _) = openssl_in(dir, &["verify", "-CAfile", &after_ca, &leaf]);
                let (old_ok, _) = openssl_in(dir, &["verify", "-CAfile", &before_ca, &leaf]);
                (job, before_ok, new_ok, old_ok)
            })
            .collect();
        Rotation {
            trigger,
            before: fingerprint(dir, &before_ca),
            after: fingerprint(dir, &after_ca),
            seconds: now() - started,
            chains,
        }
    }
}

/// The issuer's kubeconfig for `name`, a ServiceAccount in `default`.
fn kubeconfig(cp: &ControlPlane, dir: &Path, name: &str) -> PathBuf {
    let user = format!("system:serviceaccount:default:{name}");
    user_kubeconfig(cp, dir, name, &user, MASTERS).unwrap()
}

/// Starts node-exporter on a free port with `web_config`, written to `file`.
fn node_exporter(file: PathBuf, web_config: &str) -> (RunningBinary, u16) {
    std::fs::write(&file, web_config).unwrap();
    let port = free_port().unwrap();
    let process = RunningBinary::start(
        &tool("prometheus-node-exporter"),
        &[
            &format!("--web.listen-address=127.0.0.1:{port}"),
            &format!("--web.config.file={}", file.display()),
            "--collector.disable-defaults",
            "--collector.cpu",
            "--collector.loadavg",
        ],
        &[],
    )
    .unwrap();
    (process, port)
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
    let issuer_kubeconfig = kubeconfig(&cp, dir.path(), "capstan-issuer");
    let issuer = start_issuer(&issuer_kubeconfig, "certs", "issuer-0").unwrap();
    kubectl.apply(OBJECTS).await;
    for cert in LEAVES {
        cert_manager::wait_issued(&kubectl, NS, cert, 1, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", cert_manager.logs(40)));
    }
    let secrets = Api::<Secret>::namespaced(client.clone(), NS);
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), NS);
    let mut mirrors = BTreeMap::new();
    for (key, source) in [
        (
            "node-exporter-tls",
            Source::Secret(secrets.clone(), "node-exporter-tls".to_owned()),
        ),
        (
            "client-tls",
            Source::Secret(secrets.clone(), "prometheus-client-tls".to_owned()),
        ),
        (
            "scrape-ca",
            Source::ConfigMap(config_maps.clone(), "prometheus-scrape-ca".to_owned()),
        ),
        (
            "capstan-ca",
            Source::ConfigMap(config_maps.clone(), "capstan-rotator-metrics-ca".to_owned()),
        ),
    ] {
        mirrors.insert(key, Mirror::start(dir.path().join(key), source));
    }
    await_condition("the projected leaves", WAIT, POLL, || async {
        (mirrors["node-exporter-tls"].read("tls.key").is_some()
            && mirrors["client-tls"].read("tls.key").is_some())
        .then_some(())
    })
    .await
    .unwrap();

    let rotator = start_binary(
        "capstan-rotator",
        &kubeconfig(&cp, dir.path(), "capstan-rotator"),
        &[
            "--leader-election-namespace",
            "default",
            "--cluster-resource-namespace",
            "certs",
            "--metrics-dynamic-serving-ca-secret-namespace",
            "capstan",
            "--metrics-dynamic-serving-ca-secret-name",
            "capstan-metrics-ca",
            "--metrics-dynamic-serving-dns-names",
            "capstan-rotator.capstan.svc,capstan-rotator.capstan.svc.cluster.local",
            "--metrics-auth-token-review",
        ],
        &[
            ("POD_NAMESPACE", "capstan"),
            ("POD_NAME", "rotator-0"),
            ("RUST_LOG", "info"),
        ],
    )
    .unwrap();
    let (rotator_metrics, _) = rotator.serving_addresses(WAIT).await.unwrap();

    for (bundle, what) in [
        ("scrape-ca", "monitoring-ca"),
        ("capstan-ca", "the rotator's serving CA"),
    ] {
        await_condition(&format!("{what} projected"), WAIT, POLL, || async {
            mirrors[bundle]
                .read("ca-bundle.crt")
                .filter(|b| certificates(b) == 1)
        })
        .await
        .unwrap();
    }
    // Started once their volumes are there, as the kubelet starts a container.
    let tls = mirrors["node-exporter-tls"].root.clone();
    let ca = mirrors["scrape-ca"].root.clone();
    let (plain, plain_port) = node_exporter(
        dir.path().join("web-config.yml"),
        &web_config(&tls, &ca, false),
    );
    let (mtls, mtls_port) = node_exporter(
        dir.path().join("web-config-mtls.yml"),
        &web_config(&tls, &ca, true),
    );

    let token = cp
        .service_account_token(NS, "prometheus-k8s", &[])
        .await
        .unwrap();
    let token_file = dir.path().join("prometheus.token");
    std::fs::write(&token_file, token).unwrap();
    let prometheus_port = free_port().unwrap();
    let root = |key: &str| mirrors[key].root.to_str().unwrap().to_owned();
    let config = prometheus_config(
        &[
            ("/etc/prometheus/scrape-ca", root("scrape-ca")),
            ("/etc/prometheus/capstan-ca", root("capstan-ca")),
            ("/etc/prometheus/client-tls", root("client-tls")),
            (
                "/var/run/secrets/kubernetes.io/serviceaccount/token",
                token_file.to_str().unwrap().to_owned(),
            ),
            ("10.0.0.11:9100", format!("127.0.0.1:{plain_port}")),
            ("10.0.0.12:9100", format!("127.0.0.1:{mtls_port}")),
            ("10.0.0.21:9402", rotator_metrics.to_string()),
        ],
        prometheus_port,
    );
    let config_file = dir.path().join("prometheus.yml");
    std::fs::write(&config_file, &config).unwrap();
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
        ("node-exporter", plain_port),
        ("node-exporter-mtls", mtls_port),
        ("capstan-rotator", rotator_metrics.port()),
        ("prometheus", prometheus_port),
    ]);
    Drill {
        prometheus,
        node_exporters: vec![plain, mtls],
        rotator,
        issuer,
        killed: Vec::new(),
        issuer_kubeconfig,
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
async fn prometheus_scrapes_every_target_through_three_root_ca_rotations() {
    let mut drill = start().await;
    drill.wait_all_up().await;
    let initial_ca = drill.write("ca-initial.pem", &drill.ca_secret("tls.crt").await.unwrap());
    drill.wait_served_from_secrets(&initial_ca).await;
    let start_time = now();
    let counters_before = {
        let mut m = BTreeMap::new();
        for c in FAILURE_COUNTERS {
            m.insert(c, drill.api.counter_sum(c, start_time).await);
        }
        m
    };
    let conns_start = drill.api.per_dialer(ESTABLISHED, start_time).await;

    let mut rotations = Vec::new();
    for (index, trigger) in [
        Trigger::Schedule,
        Trigger::Annotation,
        Trigger::AnnotationIssuerKilled,
    ]
    .into_iter()
    .enumerate()
    {
        rotations.push(drill.rotate(trigger, index + 1).await);
    }
    let end_time = now();
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
    println!("drill: {duration:.1}s, query_range up: {steps} steps of {INTERVAL}s per target");
    let mut failures = Vec::new();
    for (i, r) in rotations.iter().enumerate() {
        println!(
            "rotation {} ({:?}): CA {} -> {} in {:.1}s",
            i + 1,
            r.trigger,
            r.before,
            r.after,
            r.seconds
        );
        for (job, before_ok, new_ok, old_ok) in &r.chains {
            println!(
                "rotation {} target {job}: leaf before verifies against the old CA: {before_ok}; leaf after against the new CA: {new_ok}, against the old CA: {old_ok}",
                i + 1
            );
            if !(*before_ok && *new_ok && !*old_ok) {
                failures.push(format!(
                    "rotation {} ({:?}) {job}: the served leaf does not chain to the new root only",
                    i + 1,
                    r.trigger
                ));
            }
        }
    }
    let ranged = ranged["result"].as_array().unwrap();
    if ranged.len() != JOBS.len() {
        failures.push(format!("query_range up: {} series", ranged.len()));
    }
    for series in ranged {
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
        let conns = |m: &BTreeMap<String, f64>| m.get(j).copied().unwrap_or_default();
        println!(
            "target {j}: scrapes attempted {}, failed {}, longest gap {:.2}s, fewest samples scraped {min_samples}, TCP connections opened {}",
            r.attempted,
            r.failed,
            r.max_gap,
            conns(&conns_end) - conns(&conns_start),
        );
        let expected = (duration / INTERVAL) as usize;
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
    for (name, m) in &drill.mirrors {
        println!("projected {name}: {} swaps", m.swaps.load(Ordering::SeqCst));
    }
    assert!(failures.is_empty(), "{failures:#?}\n{}", drill.logs());
    let mut processes: Vec<&RunningBinary> = vec![&drill.rotator, &drill.issuer];
    processes.extend(&drill.killed);
    hygiene::assert_no_key_leaks(&drill.kubectl, &processes, &[]).await;
}
