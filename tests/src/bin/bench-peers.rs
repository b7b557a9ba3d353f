//! Peer benchmarks: capstan beside the tools it stands in for, measured in
//! one run on one machine, on the real control plane (etcd, kube-apiserver,
//! kube-controller-manager). On demand, not in CI:
//!
//! ```sh
//! cargo xtask bench-peers [N]
//! ```
//!
//! (which builds the peers and the release binaries, then runs
//! `cargo run --release -p capstan-tests --bin bench-peers [-- N]`; `N`, the
//! number of Certificates of each half, is also read from
//! `CAPSTAN_BENCH_PEERS_N`, default 1,000).
//!
//! 1. Issuing: `N` cert-manager `Certificate`s through capstan's
//!    self-managed ECDSA P-256 `ClusterCAIssuer`, and `N` through
//!    cert-manager's own CA `ClusterIssuer` (a P-256 CA Secret made here),
//!    cert-manager's controller running in both halves, each half in its
//!    own namespace, the CA issuer's first: wall time to all Ready, p50 and
//!    p99 of a Certificate's creation to the `Ready=True` the watch sees,
//!    and the CPU time of cert-manager's controller and capstan-issuer.
//! 2. capstan-issuer's CPU time per request beyond the pure signing cost of
//!    a P-256 CA, measured here in-process with capstan's pki crate.
//! 3. Bundles: capstan's `CABundle` (served by capstan-rotator) and
//!    trust-manager's `Bundle`, each into 100 namespaces: time from a change
//!    of the source Secret to every target ConfigMap holding the new
//!    bundle, the writes of the controller the change caused (from the audit
//!    log; no-op writes are ConfigMap writes that did not change the
//!    ConfigMap, so that its resourceVersion stayed), and peak RSS.
//! 4. Restarts against Reloader: not measured (Reloader is not served by the
//!    Go module proxy), and the output says so.
//!
//! Each figure is printed for both sides with the ratio capstan / peer, and
//! beside its goal where there is one.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use capstan_tests::cluster::create_crds;
use capstan_tests::controlplane::ControlPlane;
use capstan_tests::controlplane::cert_manager::{self, CertManager};
use capstan_tests::controlplane::trust_manager::{self, TrustManager};
use capstan_tests::harness::{RunningBinary, await_condition, workspace_binary};
use capstan_tests::procfs::{self, CpuTime};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

/// Certificates per half unless told otherwise.
const DEFAULT_COUNT: usize = 1000;
/// The environment variable that sets the number of Certificates.
const COUNT_ENV: &str = "CAPSTAN_BENCH_PEERS_N";
/// Where the ClusterIssuers' CA Secrets and the bundles' sources live (the
/// cluster resource namespace of both issuers, trust-manager's trust
/// namespace).
const SYSTEM_NS: &str = "bench-system";
/// Namespaces that get each bundle's target.
const BUNDLE_NAMESPACES: usize = 100;
/// The label that selects them.
const BUNDLE_LABEL: (&str, &str) = ("bench-peers/bundle", "yes");
/// The key of the sources and targets.
const BUNDLE_KEY: &str = "ca-bundle.crt";
/// Certificates created at once.
const CONCURRENCY: usize = 32;
/// How long after the last write a controller gets for trailing writes.
const SETTLE: Duration = Duration::from_secs(5);
/// capstan-issuer's user.
const ISSUER_USER: &str = "system:serviceaccount:default:capstan-issuer";
/// capstan-rotator's user.
const ROTATOR_USER: &str = "system:serviceaccount:default:capstan-rotator";
/// capstan-issuer's CPU goal, as a share of cert-manager's controller's.
const ISSUER_CPU_SHARE_GOAL: f64 = 0.25;
/// capstan-issuer's per-request overhead goal beyond pure signing.
const OVERHEAD_GOAL: Duration = Duration::from_micros(150);
/// How long capstan-issuer's idle CPU (watches, Lease renewals) is metered
/// before its half.
const IDLE_WINDOW: Duration = Duration::from_secs(10);

/// When each object was first seen Ready (or created), by name.
type Times = Arc<Mutex<HashMap<String, Instant>>>;
/// A watch running in the background.
type WatchTask = tokio::task::JoinHandle<Result<(), watcher::Error>>;

/// The versions being compared.
struct Versions {
    capstan: String,
    cert_manager: String,
    trust_manager: String,
    kubernetes: String,
}

/// One half of the issuing benchmark.
struct Issued {
    /// First creation to the last Certificate Ready.
    wall: Duration,
    /// Creation to Ready of each Certificate, sorted.
    latencies: Vec<Duration>,
    /// cert-manager's controller's CPU time over the half.
    cert_manager_cpu: CpuTime,
    /// capstan-issuer's CPU time over the half (capstan's half only).
    issuer_cpu: Option<CpuTime>,
    /// capstan-issuer's CPU seconds per second when idle, metered over
    /// [`IDLE_WINDOW`] before the half (capstan's half only).
    issuer_idle_rate: Option<f64>,
    /// CertificateRequests made in the half.
    requests: usize,
}

impl Issued {
    /// The `p` quantile (0..=1) of the latencies.
    fn percentile(&self, p: f64) -> Duration {
        let n = self.latencies.len();
        let i = ((n as f64 * p).ceil() as usize)
            .saturating_sub(1)
            .min(n - 1);
        self.latencies[i]
    }

    /// Certificates Ready per second.
    fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }
}

/// One side of the bundle benchmark.
struct Bundled {
    /// Controller start to every target holding the first bundle.
    initial: Duration,
    /// Source change to every target holding the new bundle (`None` when
    /// some target never did).
    propagation: Option<Duration>,
    /// The controller's writes the change caused.
    writes: Writes,
    /// The controller's peak RSS, KiB.
    peak_rss_kib: u64,
}

/// A controller's writes in a window, from the audit log.
#[derive(Default)]
struct Writes {
    /// Every write, by `verb resource[/subresource]`.
    by_kind: BTreeMap<String, usize>,
    /// Writes of the target ConfigMaps.
    targets: usize,
    /// Changes of the target ConfigMaps (new resourceVersions) the watch saw.
    target_changes: usize,
}

impl Writes {
    fn total(&self) -> usize {
        self.by_kind.values().sum()
    }

    /// Target writes that changed nothing.
    fn no_op(&self) -> usize {
        self.targets.saturating_sub(self.target_changes)
    }

    fn summary(&self) -> String {
        let kinds: Vec<String> = self
            .by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        kinds.join(", ")
    }
}

/// What the target watch knows: per `namespace/name`, the bundle held and
/// since when, and the resourceVersion last seen; and how many new
/// resourceVersions it has seen in all (a relist repeats none).
#[derive(Default)]
struct Targets {
    held: HashMap<String, (String, Instant)>,
    versions: HashMap<String, String>,
    changes: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let count = certificate_count()?;
    let cp = ControlPlane::builder().workloads(false).start().await?;
    let client = cp.client().await?;
    create_crds(&client, false).await?;
    create_namespace(&client, SYSTEM_NS, false).await?;
    let cm = CertManager::builder()
        .cluster_resource_namespace(SYSTEM_NS)
        .start(&cp)
        .await?;
    let versions = versions(&client).await?;
    println!(
        "peer benchmarks on one machine ({} CPUs), one control plane (Kubernetes {}): capstan {}, cert-manager {}, trust-manager {}",
        std::thread::available_parallelism().map_or(0, usize::from),
        versions.kubernetes,
        versions.capstan,
        versions.cert_manager,
        versions.trust_manager
    );

    let ca_half = issue_with_cert_manager_ca(&client, &cm, count)
        .await
        .with_context(|| format!("cert-manager's log ends:\n{}", cm.logs(40)))?;
    let capstan_half = issue_with_capstan(&cp, &client, &cm, count).await?;
    print_issuing(&versions, count, &capstan_half, &ca_half);
    print_overhead(&capstan_half)?;

    for i in 0..BUNDLE_NAMESPACES {
        create_namespace(&client, &format!("bundle-{i:03}"), true).await?;
    }
    let capstan_bundle = bundle_with_capstan(&cp, &client).await?;
    let trust_bundle = bundle_with_trust_manager(&cp, &client).await?;
    print_bundles(&versions, &capstan_bundle, &trust_bundle);

    println!(
        "4. restarts on a CA change against Reloader: not measured: github.com/stakater/Reloader is not served by the Go module proxy (403 for every version), so it cannot be built here"
    );
    cp.stop();
    Ok(())
}

/// `N` from the first argument, else [`COUNT_ENV`], else [`DEFAULT_COUNT`].
fn certificate_count() -> anyhow::Result<usize> {
    let given = std::env::args()
        .nth(1)
        .or_else(|| std::env::var(COUNT_ENV).ok());
    let count = match given {
        Some(n) => n
            .parse()
            .with_context(|| format!("N must be a number, not {n:?}"))?,
        None => DEFAULT_COUNT,
    };
    if count == 0 {
        bail!("N must be at least 1");
    }
    Ok(count)
}

async fn versions(client: &kube::Client) -> anyhow::Result<Versions> {
    let cert_manager_crds = std::fs::read_link(cert_manager::crd_dir()?)?;
    let cert_manager = cert_manager_crds
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("cert-manager-crds-"))
        .with_context(|| format!("{} names no version", cert_manager_crds.display()))?
        .to_owned();
    Ok(Versions {
        capstan: env!("CARGO_PKG_VERSION").to_owned(),
        cert_manager,
        trust_manager: trust_manager::version()?,
        kubernetes: client.apiserver_version().await?.git_version,
    })
}

async fn create_namespace(client: &kube::Client, name: &str, labelled: bool) -> anyhow::Result<()> {
    let labels = if labelled {
        json!({BUNDLE_LABEL.0: BUNDLE_LABEL.1})
    } else {
        json!({})
    };
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(())
}

/// A self-signed P-256 CA: its certificate and PKCS#8 key, PEM.
fn p256_ca(name: &str) -> anyhow::Result<(String, String)> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    Ok((params.self_signed(&key)?.pem(), key.serialize_pem()))
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn is_ready(obj: &Value) -> bool {
    obj["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Creates `obj` (cluster-scoped, of `resource`) and waits until it is Ready.
async fn create_ready_issuer(
    client: &kube::Client,
    resource: &ApiResource,
    obj: Value,
) -> anyhow::Result<()> {
    let api = Api::<DynamicObject>::all_with(client.clone(), resource);
    let obj: DynamicObject = serde_json::from_value(obj)?;
    let name = obj.metadata.name.clone().unwrap_or_default();
    api.create(&PostParams::default(), &obj).await?;
    await_condition(
        &format!("{} {name} to be Ready", resource.kind),
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async { is_ready(&api.get(&name).await.ok()?.data).then_some(()) },
    )
    .await
}

/// The first half, through cert-manager's own CA issuer: a P-256 CA
/// Secret in the cluster resource namespace and a `ClusterIssuer` over it.
async fn issue_with_cert_manager_ca(
    client: &kube::Client,
    cm: &CertManager,
    count: usize,
) -> anyhow::Result<Issued> {
    let (cert, key) = p256_ca("bench cert-manager CA")?;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "bench-cert-manager-ca", "namespace": SYSTEM_NS},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": cert, "tls.key": key}
    }))?;
    Api::<Secret>::namespaced(client.clone(), SYSTEM_NS)
        .create(&PostParams::default(), &secret)
        .await?;
    create_ready_issuer(
        client,
        &resource("cert-manager.io", "v1", "ClusterIssuer", "clusterissuers"),
        json!({
            "apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer",
            "metadata": {"name": "bench-ca"},
            "spec": {"ca": {"secretName": "bench-cert-manager-ca"}}
        }),
    )
    .await?;
    let namespace = "issue-cert-manager-ca";
    create_namespace(client, namespace, false).await?;
    let issuer_ref =
        json!({"group": "cert-manager.io", "kind": "ClusterIssuer", "name": "bench-ca"});
    issue(
        client,
        namespace,
        &issuer_ref,
        count,
        cm.process().pid(),
        None,
    )
    .await
}

/// The capstan half: capstan-issuer and its self-managed P-256
/// `ClusterCAIssuer`, cert-manager's controller driving the Certificates.
async fn issue_with_capstan(
    cp: &ControlPlane,
    client: &kube::Client,
    cm: &CertManager,
    count: usize,
) -> anyhow::Result<Issued> {
    let kubeconfig = cp.user_kubeconfig_at(
        &cp.url(),
        cp.dir(),
        "capstan-issuer",
        ISSUER_USER,
        &["system:masters"],
    )?;
    let issuer = start_capstan("capstan-issuer", &kubeconfig, "issuer-bench")?;
    create_ready_issuer(
        client,
        &resource(
            "capstan.dev",
            "v1alpha1",
            "ClusterCAIssuer",
            "clustercaissuers",
        ),
        json!({
            "apiVersion": "capstan.dev/v1alpha1", "kind": "ClusterCAIssuer",
            "metadata": {"name": "bench-capstan"},
            "spec": {"selfManaged": {"secretName": "bench-capstan-ca", "keyAlgorithm": "ECDSAP256"}}
        }),
    )
    .await
    .with_context(|| format!("capstan-issuer's logs:\n{}", issuer.logs().join("\n")))?;
    let namespace = "issue-capstan";
    create_namespace(client, namespace, false).await?;
    let issuer_ref =
        json!({"group": "capstan.dev", "kind": "ClusterCAIssuer", "name": "bench-capstan"});
    let idle_before = procfs::cpu_time(issuer.pid())?;
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle = procfs::cpu_time(issuer.pid())?.since(&idle_before);
    let mut issued = issue(
        client,
        namespace,
        &issuer_ref,
        count,
        cm.process().pid(),
        Some(issuer.pid()),
    )
    .await
    .with_context(|| {
        format!(
            "cert-manager's log ends:\n{}\ncapstan-issuer's log ends:\n{}",
            cm.logs(40),
            tail(&issuer.logs(), 40)
        )
    })?;
    issued.issuer_idle_rate = Some(idle.total() / IDLE_WINDOW.as_secs_f64());
    Ok(issued)
}

fn tail(lines: &[String], n: usize) -> String {
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Starts capstan binary `name` (release build) with `kubeconfig` as pod
/// `default/<pod>`, its cluster resources in [`SYSTEM_NS`], logging warnings.
fn start_capstan(
    name: &str,
    kubeconfig: &std::path::Path,
    pod: &str,
) -> anyhow::Result<RunningBinary> {
    RunningBinary::start(
        &workspace_binary(name)?,
        &[
            "--kubeconfig",
            kubeconfig
                .to_str()
                .context("kubeconfig path is not UTF-8")?,
            "--cluster-resource-namespace",
            SYSTEM_NS,
            "--leader-election-namespace",
            "default",
            "--log-level",
            "warn",
        ],
        &[("POD_NAMESPACE", "default"), ("POD_NAME", pod)],
    )
}

/// Creates `count` Certificates in `namespace` for `issuer_ref`, at most
/// [`CONCURRENCY`] at once, and waits until all are Ready, timing each and
/// metering the CPU of `cert_manager_pid` and `issuer_pid`.
async fn issue(
    client: &kube::Client,
    namespace: &str,
    issuer_ref: &Value,
    count: usize,
    cert_manager_pid: u32,
    issuer_pid: Option<u32>,
) -> anyhow::Result<Issued> {
    let certificates = resource("cert-manager.io", "v1", "Certificate", "certificates");
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &certificates);
    let created: Times = Arc::default();
    let ready = watch_ready(api.clone());

    let cm_before = procfs::cpu_time(cert_manager_pid)?;
    let issuer_before = issuer_pid.map(procfs::cpu_time).transpose()?;
    let started = Instant::now();
    stream::iter(0..count)
        .map(|i| {
            let (api, created) = (api.clone(), created.clone());
            let obj = certificate(namespace, i, issuer_ref);
            async move {
                let obj: DynamicObject = serde_json::from_value(obj)?;
                let name = obj.metadata.name.clone().unwrap_or_default();
                if let Ok(mut c) = created.lock() {
                    c.insert(name, Instant::now());
                }
                api.create(&PostParams::default(), &obj).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    let ready_count = || ready.0.lock().map(|r| r.len()).unwrap_or(0);
    await_condition(
        &format!("{count} Certificates in {namespace} to be Ready"),
        Duration::from_secs(120) + Duration::from_millis(1500) * count as u32,
        Duration::from_millis(50),
        || async { (ready_count() >= count).then_some(()) },
    )
    .await
    .with_context(|| format!("{} of {count} are Ready", ready_count()))?;
    let wall = started.elapsed();
    let cert_manager_cpu = procfs::cpu_time(cert_manager_pid)?.since(&cm_before);
    let issuer_cpu = match (issuer_pid, issuer_before) {
        (Some(pid), Some(before)) => Some(procfs::cpu_time(pid)?.since(&before)),
        _ => None,
    };
    ready.1.abort();

    let created = created.lock().map(|c| c.clone()).unwrap_or_default();
    let ready = ready.0.lock().map(|r| r.clone()).unwrap_or_default();
    let mut latencies: Vec<Duration> = created
        .iter()
        .filter_map(|(n, t0)| ready.get(n).map(|t1| t1.saturating_duration_since(*t0)))
        .collect();
    latencies.sort();
    let requests = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        namespace,
        &resource(
            "cert-manager.io",
            "v1",
            "CertificateRequest",
            "certificaterequests",
        ),
    )
    .list_metadata(&ListParams::default())
    .await?
    .items
    .len();
    Ok(Issued {
        wall,
        latencies,
        cert_manager_cpu,
        issuer_cpu,
        issuer_idle_rate: None,
        requests,
    })
}

/// A watch of `api`'s objects that records when each first is Ready; the
/// map and the task.
fn watch_ready(api: Api<DynamicObject>) -> (Times, WatchTask) {
    let ready: Times = Arc::default();
    let seen = ready.clone();
    let task = tokio::spawn(
        watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .try_for_each(move |obj| {
                if is_ready(&obj.data)
                    && let Some(name) = obj.metadata.name.clone()
                    && let Ok(mut r) = seen.lock()
                {
                    r.entry(name).or_insert_with(Instant::now);
                }
                std::future::ready(Ok(()))
            }),
    );
    (ready, task)
}

/// Certificate `cert-<i>` for `issuer_ref`: a P-256 key, a day.
fn certificate(namespace: &str, i: usize, issuer_ref: &Value) -> Value {
    let dns = format!("svc-{i}.{namespace}.svc");
    json!({
        "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
        "metadata": {"name": format!("cert-{i}"), "namespace": namespace},
        "spec": {
            "secretName": format!("cert-{i}-tls"),
            "commonName": dns,
            "dnsNames": [dns],
            "duration": "24h",
            "privateKey": {"algorithm": "ECDSA", "size": 256},
            "usages": ["digital signature", "server auth"],
            "issuerRef": issuer_ref
        }
    })
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "MISSED" }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn print_issuing(versions: &Versions, count: usize, capstan: &Issued, ca: &Issued) {
    let peer = format!("cert-manager {} CA issuer", versions.cert_manager);
    println!(
        "1. issuing {count} Certificates (ECDSA P-256 CA, P-256 keys): capstan {} ClusterCAIssuer vs {peer}; cert-manager's controller in both",
        versions.capstan
    );
    let row = |what: &str, c: f64, p: f64, unit: &str, goal: &str| {
        println!(
            "   {what}: capstan {c:.2} {unit}, {peer} {p:.2} {unit}, ratio {:.2}{goal}",
            c / p
        );
    };
    row(
        "wall time to all Ready",
        capstan.wall.as_secs_f64(),
        ca.wall.as_secs_f64(),
        "s",
        "",
    );
    let (ct, pt) = (capstan.throughput(), ca.throughput());
    row(
        "throughput",
        ct,
        pt,
        "Certificates/s",
        &format!("; goal capstan >= peer: {}", verdict(ct >= pt)),
    );
    row(
        "p50 creation -> Ready",
        ms(capstan.percentile(0.50)),
        ms(ca.percentile(0.50)),
        "ms",
        "",
    );
    let (c99, p99) = (capstan.percentile(0.99), ca.percentile(0.99));
    row(
        "p99 creation -> Ready",
        ms(c99),
        ms(p99),
        "ms",
        &format!("; goal capstan <= peer: {}", verdict(c99 <= p99)),
    );
    row(
        "cert-manager-controller CPU",
        capstan.cert_manager_cpu.total(),
        ca.cert_manager_cpu.total(),
        "s",
        "",
    );
    let issuer = capstan.issuer_cpu.map_or(0.0, |c| c.total());
    let (own, peer_cpu) = (
        capstan.cert_manager_cpu.total(),
        ca.cert_manager_cpu.total(),
    );
    println!(
        "   capstan-issuer CPU: {issuer:.2} s = {:.1}% of cert-manager-controller's in the same half ({own:.2} s), {:.1}% of its CPU with its own CA issuer ({peer_cpu:.2} s); goal < {:.0}%: {}",
        100.0 * issuer / own,
        100.0 * issuer / peer_cpu,
        ISSUER_CPU_SHARE_GOAL * 100.0,
        verdict(issuer < ISSUER_CPU_SHARE_GOAL * own)
    );
    println!(
        "   whole side CPU (cert-manager-controller + issuer): capstan {:.2} s, {peer} {peer_cpu:.2} s, ratio {:.2}",
        own + issuer,
        (own + issuer) / peer_cpu
    );
    println!(
        "   CertificateRequests: capstan {}, {peer} {}",
        capstan.requests, ca.requests
    );
}

fn print_overhead(capstan: &Issued) -> anyhow::Result<()> {
    let key = rcgen::KeyPair::generate()?;
    let csr = rcgen::CertificateParams::new(vec!["svc-0.issue-capstan.svc".to_owned()])?
        .serialize_request(&key)?
        .pem()?;
    let pure = capstan_tests::signing::pure_cost(&csr, capstan_pki::KeyAlgorithm::EcdsaP256)?;
    let cpu = capstan.issuer_cpu.map_or(0.0, |c| c.total());
    let per_request = Duration::from_secs_f64(cpu / capstan.requests.max(1) as f64);
    let overhead = per_request.saturating_sub(pure);
    println!(
        "2. capstan-issuer overhead: {} µs CPU per request ({} requests) - {} µs pure signing with a P-256 CA (in-process, capstan-pki) = {} µs; goal <= {} µs: {}",
        per_request.as_micros(),
        capstan.requests,
        pure.as_micros(),
        overhead.as_micros(),
        OVERHEAD_GOAL.as_micros(),
        verdict(overhead <= OVERHEAD_GOAL)
    );
    // cert-manager hands out requests at its own pace, so the half also
    // bills the issuer's idle work (watches, Lease renewals) to them.
    if let Some(rate) = capstan.issuer_idle_rate {
        let idle = rate * capstan.wall.as_secs_f64();
        let busy = Duration::from_secs_f64((cpu - idle).max(0.0) / capstan.requests.max(1) as f64);
        let net = busy.saturating_sub(pure);
        println!(
            "   without its idle CPU ({:.1} ms/s metered over {} s before the half, {idle:.2} s of the half): {} µs per request - {} µs = {} µs; goal <= {} µs: {}",
            rate * 1e3,
            IDLE_WINDOW.as_secs(),
            busy.as_micros(),
            pure.as_micros(),
            net.as_micros(),
            OVERHEAD_GOAL.as_micros(),
            verdict(net <= OVERHEAD_GOAL)
        );
    }
    Ok(())
}

/// Creates source Secret `name` in [`SYSTEM_NS`] holding `pem`.
async fn create_source(client: &kube::Client, name: &str, pem: &str) -> anyhow::Result<()> {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": SYSTEM_NS},
        "stringData": {BUNDLE_KEY: pem}
    }))?;
    Api::<Secret>::namespaced(client.clone(), SYSTEM_NS)
        .create(&PostParams::default(), &secret)
        .await?;
    Ok(())
}

fn certificates(pem: &str) -> usize {
    pem.matches("-----BEGIN CERTIFICATE-----").count()
}

/// A watch of the ConfigMaps named `target` in every namespace: which
/// bundle each holds since when, and how many changes were seen.
fn watch_targets(client: &kube::Client, target: &str) -> (Arc<Mutex<Targets>>, WatchTask) {
    let targets: Arc<Mutex<Targets>> = Arc::default();
    let seen = targets.clone();
    let api: Api<ConfigMap> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!("metadata.name={target}"));
    let task = tokio::spawn(
        watcher(api, config)
            .default_backoff()
            .applied_objects()
            .try_for_each(move |cm| {
                let key = format!(
                    "{}/{}",
                    cm.metadata.namespace.clone().unwrap_or_default(),
                    cm.metadata.name.clone().unwrap_or_default()
                );
                let value = cm
                    .data
                    .as_ref()
                    .and_then(|d| d.get(BUNDLE_KEY))
                    .cloned()
                    .unwrap_or_default();
                let version = cm.metadata.resource_version.clone().unwrap_or_default();
                if let Ok(mut t) = seen.lock() {
                    if t.versions.insert(key.clone(), version.clone()) != Some(version) {
                        t.changes += 1;
                    }
                    if t.held.get(&key).is_none_or(|(v, _)| *v != value) {
                        t.held.insert(key, (value, Instant::now()));
                    }
                }
                std::future::ready(Ok(()))
            }),
    );
    (targets, task)
}

/// Targets holding a bundle of `n` certificates, and the latest time one
/// started holding it.
fn holding(targets: &Mutex<Targets>, n: usize) -> (usize, Option<Instant>) {
    let Ok(t) = targets.lock() else {
        return (0, None);
    };
    let at: Vec<Instant> = t
        .held
        .values()
        .filter(|(v, _)| certificates(v) == n)
        .map(|(_, at)| *at)
        .collect();
    (at.len(), at.iter().max().copied())
}

/// The writes of `user` in the audit log so far, by kind, and those of
/// ConfigMaps named `target`. Lease renewals (leader election, on a clock
/// of its own) are left out.
fn writes_of(cp: &ControlPlane, user: &str, target: &str) -> (BTreeMap<String, usize>, usize) {
    let mut by_kind = BTreeMap::new();
    let mut targets = 0;
    for r in cp.request_log() {
        let write = matches!(r.verb.as_str(), "create" | "update" | "patch" | "delete");
        if r.user != user || !write || r.resource == "leases" {
            continue;
        }
        let sub = if r.subresource.is_empty() {
            String::new()
        } else {
            format!("/{}", r.subresource)
        };
        *by_kind
            .entry(format!("{} {}{sub}", r.verb, r.resource))
            .or_default() += 1;
        if r.resource == "configmaps" && r.name == target && r.subresource.is_empty() {
            targets += 1;
        }
    }
    (by_kind, targets)
}

/// What one bundle controller is asked to do and how it is watched.
struct BundleCase<'a> {
    /// The controller's user in the audit log.
    user: &'a str,
    /// Source Secret in [`SYSTEM_NS`].
    source: &'a str,
    /// Target ConfigMap name.
    target: &'a str,
    /// The controller's pid.
    pid: u32,
}

/// Waits until every target holds the first CA, then changes the source
/// and measures the propagation, the writes and the peak RSS.
async fn measure_bundle(
    cp: &ControlPlane,
    client: &kube::Client,
    case: &BundleCase<'_>,
    targets: &Mutex<Targets>,
    started: Instant,
    first_ca: &str,
) -> anyhow::Result<Bundled> {
    await_condition(
        &format!("every {} to hold the first CA", case.target),
        Duration::from_secs(300),
        Duration::from_millis(20),
        || async { (holding(targets, 1).0 >= BUNDLE_NAMESPACES).then_some(()) },
    )
    .await?;
    let initial = holding(targets, 1)
        .1
        .map_or(started.elapsed(), |t| t.saturating_duration_since(started));
    tokio::time::sleep(SETTLE).await;
    let (before, targets_before) = writes_of(cp, case.user, case.target);
    let changes_before = targets.lock().map(|t| t.changes).unwrap_or(0);

    let (second_ca, _) = p256_ca("bench bundle CA 2")?;
    let changed = Instant::now();
    Api::<Secret>::namespaced(client.clone(), SYSTEM_NS)
        .patch(
            case.source,
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {BUNDLE_KEY: format!("{second_ca}{first_ca}")}})),
        )
        .await?;
    let all = await_condition(
        &format!("every {} to hold the new CA", case.target),
        Duration::from_secs(120),
        Duration::from_millis(10),
        || async { (holding(targets, 2).0 >= BUNDLE_NAMESPACES).then_some(()) },
    )
    .await;
    let propagation = all
        .ok()
        .and_then(|()| holding(targets, 2).1)
        .map(|t| t.saturating_duration_since(changed));
    tokio::time::sleep(SETTLE).await;
    let (after, targets_after) = writes_of(cp, case.user, case.target);
    let mut by_kind = after;
    for (k, n) in &before {
        if let Some(m) = by_kind.get_mut(k) {
            *m -= n;
        }
    }
    by_kind.retain(|_, n| *n > 0);
    Ok(Bundled {
        initial,
        propagation,
        writes: Writes {
            by_kind,
            targets: targets_after - targets_before,
            target_changes: targets.lock().map(|t| t.changes).unwrap_or(0) - changes_before,
        },
        peak_rss_kib: procfs::status_kib(case.pid, "VmHWM:")?,
    })
}

/// capstan's side: capstan-rotator serving a `CABundle` over one source
/// Secret into the labelled namespaces.
async fn bundle_with_capstan(cp: &ControlPlane, client: &kube::Client) -> anyhow::Result<Bundled> {
    let (source, target) = ("capstan-source", "capstan-bundle");
    let (first_ca, _) = p256_ca("bench bundle CA 1")?;
    create_source(client, source, &first_ca).await?;
    let (targets, watch) = watch_targets(client, target);
    let kubeconfig = cp.user_kubeconfig_at(
        &cp.url(),
        cp.dir(),
        "capstan-rotator",
        ROTATOR_USER,
        &["system:masters"],
    )?;
    let rotator = start_capstan("capstan-rotator", &kubeconfig, "rotator-bench")?;
    let started = Instant::now();
    let bundle: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "capstan.dev/v1alpha1", "kind": "CABundle",
        "metadata": {"name": target},
        "spec": {
            "namespaceSelector": {"matchLabels": {BUNDLE_LABEL.0: BUNDLE_LABEL.1}},
            "sources": [{"secret": {"name": source, "namespace": SYSTEM_NS, "key": BUNDLE_KEY}}],
            "target": {"configMap": target, "key": BUNDLE_KEY}
        }
    }))?;
    Api::<DynamicObject>::all_with(
        client.clone(),
        &resource("capstan.dev", "v1alpha1", "CABundle", "cabundles"),
    )
    .create(&PostParams::default(), &bundle)
    .await?;
    let case = BundleCase {
        user: ROTATOR_USER,
        source,
        target,
        pid: rotator.pid(),
    };
    let measured = measure_bundle(cp, client, &case, &targets, started, &first_ca)
        .await
        .with_context(|| format!("capstan-rotator's log ends:\n{}", tail(&rotator.logs(), 40)));
    watch.abort();
    measured
}

/// trust-manager's side: a `Bundle` over one source Secret in its trust
/// namespace into the labelled namespaces.
async fn bundle_with_trust_manager(
    cp: &ControlPlane,
    client: &kube::Client,
) -> anyhow::Result<Bundled> {
    let (source, target) = ("trust-source", "trust-bundle");
    let (first_ca, _) = p256_ca("bench bundle CA 1")?;
    create_source(client, source, &first_ca).await?;
    let (targets, watch) = watch_targets(client, target);
    let tm = TrustManager::start(cp, SYSTEM_NS).await?;
    let started = Instant::now();
    let bundle: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "trust.cert-manager.io/v1alpha1", "kind": "Bundle",
        "metadata": {"name": target},
        "spec": {
            "sources": [{"secret": {"name": source, "key": BUNDLE_KEY}}],
            "target": {
                "configMap": {"key": BUNDLE_KEY},
                "namespaceSelector": {"matchLabels": {BUNDLE_LABEL.0: BUNDLE_LABEL.1}}
            }
        }
    }))?;
    Api::<DynamicObject>::all_with(
        client.clone(),
        &resource("trust.cert-manager.io", "v1alpha1", "Bundle", "bundles"),
    )
    .create(&PostParams::default(), &bundle)
    .await?;
    let case = BundleCase {
        user: trust_manager::USER,
        source,
        target,
        pid: tm.process().pid(),
    };
    let measured = measure_bundle(cp, client, &case, &targets, started, &first_ca)
        .await
        .with_context(|| format!("trust-manager's log ends:\n{}", tm.logs(40)));
    watch.abort();
    measured
}

fn print_bundles(versions: &Versions, capstan: &Bundled, trust: &Bundled) {
    let peer = format!("trust-manager {}", versions.trust_manager);
    println!(
        "3. bundles into {BUNDLE_NAMESPACES} namespaces: capstan {} CABundle (capstan-rotator) vs {peer} Bundle",
        versions.capstan
    );
    let row = |what: &str, c: f64, p: f64, unit: &str| {
        println!(
            "   {what}: capstan {c:.2} {unit}, {peer} {p:.2} {unit}, ratio {:.2}",
            c / p
        );
    };
    row(
        "first sync (controller start to every target)",
        capstan.initial.as_secs_f64(),
        trust.initial.as_secs_f64(),
        "s",
    );
    match (capstan.propagation, trust.propagation) {
        (Some(c), Some(p)) => row(
            "CA change -> every target updated",
            c.as_secs_f64(),
            p.as_secs_f64(),
            "s",
        ),
        (c, p) => println!(
            "   CA change -> every target updated: capstan {}, {peer} {} (a side missed a target within 120 s)",
            c.map_or("MISSED".to_owned(), |d| format!("{:.2} s", d.as_secs_f64())),
            p.map_or("MISSED".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()))
        ),
    }
    let counts = |what: &str, c: usize, p: usize| {
        println!(
            "   {what}: capstan {c}, {peer} {p}, ratio {:.2}",
            c as f64 / p as f64
        );
    };
    counts(
        "writes per change (all but Lease renewals)",
        capstan.writes.total(),
        trust.writes.total(),
    );
    counts(
        "target ConfigMap writes per change",
        capstan.writes.targets,
        trust.writes.targets,
    );
    println!(
        "   no-op target writes (the ConfigMap did not change): capstan {}, {peer} {}",
        capstan.writes.no_op(),
        trust.writes.no_op()
    );
    println!("   capstan writes: {}", capstan.writes.summary());
    println!("   {peer} writes: {}", trust.writes.summary());
    row(
        "peak RSS (VmHWM)",
        capstan.peak_rss_kib as f64 / 1024.0,
        trust.peak_rss_kib as f64 / 1024.0,
        "MiB",
    );
}
