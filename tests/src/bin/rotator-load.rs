//! Load benchmark of the rotator: 10,000 unrelated Secrets (10 KiB each) and
//! 10,000 unrelated ConfigMaps in the test API server, plus 1,000 target
//! ConfigMaps across 100 namespaces annotated `capstan.dev/inject-ca-from`
//! one source Secret, served to the real `capstan-rotator` binary.
//!
//! ```sh
//! cargo build --release -p capstan-rotator
//! cargo run --release -p capstan-tests --bin rotator-load
//! ```
//!
//! Prints the rotator's peak RSS (`VmHWM` of `/proc/<pid>/status`) and the
//! time from a change of the source's CA bundle to all 1,000 targets holding
//! the new bundle, each beside its target (RSS < 64 MiB, propagation < 5 s),
//! then what the rotator asked of the API server, and exits non-zero when a
//! target is missed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use capstan_tests::cluster::create_crds;
use capstan_tests::harness::{RunningBinary, await_condition, workspace_binary};
use capstan_tests::procfs;
use capstan_testserver::auth::UserInfo;
use capstan_testserver::{TestApiServer, kubeconfig};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

const NAMESPACES: usize = 100;
const UNRELATED_SECRETS: usize = 10_000;
const UNRELATED_CONFIG_MAPS: usize = 10_000;
const TARGETS: usize = 1_000;
const SECRET_BYTES: usize = 10 * 1024;
const CONFIG_MAP_BYTES: usize = 1024;
const RSS_TARGET_MIB: f64 = 64.0;
const PROPAGATION_TARGET: Duration = Duration::from_secs(5);
const ROTATOR_USER: &str = "system:serviceaccount:default:capstan-rotator";
const KEY: &str = "ca-bundle.crt";
/// Label of the targets, so the benchmark watches only them.
const TARGET_LABEL: &str = "bench/target";

/// A self-signed CA certificate, PEM.
fn ca_pem(name: &str) -> anyhow::Result<String> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    Ok(params.self_signed(&key)?.pem())
}

fn certificates(pem: &str) -> usize {
    pem.matches("-----BEGIN CERTIFICATE-----").count()
}

fn ns(i: usize) -> String {
    format!("load-{:03}", i % NAMESPACES)
}

/// Creates `count` objects made by `make(i)` through `create`, 32 at a time.
async fn create_all<K, F, Fut>(count: usize, create: F) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<K>>,
{
    stream::iter(0..count)
        .map(create)
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = TestApiServer::start().await?;
    let client = server.client().await?;
    create_crds(&client, false).await?;

    let setup = Instant::now();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for name in (0..NAMESPACES).map(ns).chain(["certs".to_owned()]) {
        let n: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        namespaces.create(&PostParams::default(), &n).await?;
    }
    let first_ca = ca_pem("bench CA 1")?;
    let source: Secret = serde_json::from_value(json!({
        "metadata": {"name": "bench-ca", "namespace": "certs"},
        "stringData": {KEY: first_ca}
    }))?;
    Api::<Secret>::namespaced(client.clone(), "certs")
        .create(&PostParams::default(), &source)
        .await?;
    let filler = "x".repeat(SECRET_BYTES);
    create_all(UNRELATED_SECRETS, |i| {
        let (client, filler) = (client.clone(), filler.clone());
        async move {
            let s: Secret = serde_json::from_value(json!({
                "metadata": {"name": format!("unrelated-{i}"), "namespace": ns(i)},
                "stringData": {"payload": filler}
            }))?;
            Ok(Api::<Secret>::namespaced(client, &ns(i))
                .create(&PostParams::default(), &s)
                .await?)
        }
    })
    .await?;
    let small = "y".repeat(CONFIG_MAP_BYTES);
    create_all(UNRELATED_CONFIG_MAPS, |i| {
        let (client, small) = (client.clone(), small.clone());
        async move {
            let cm: ConfigMap = serde_json::from_value(json!({
                "metadata": {"name": format!("unrelated-{i}"), "namespace": ns(i)},
                "data": {"payload": small}
            }))?;
            Ok(Api::<ConfigMap>::namespaced(client, &ns(i))
                .create(&PostParams::default(), &cm)
                .await?)
        }
    })
    .await?;
    create_all(TARGETS, |i| {
        let client = client.clone();
        async move {
            let cm: ConfigMap = serde_json::from_value(json!({
                "metadata": {"name": format!("target-{i}"), "namespace": ns(i),
                    "labels": {TARGET_LABEL: "yes"},
                    "annotations": {"capstan.dev/inject-ca-from": "certs/bench-ca"}},
                "data": {"other": "kept"}
            }))?;
            Ok(Api::<ConfigMap>::namespaced(client, &ns(i))
                .create(&PostParams::default(), &cm)
                .await?)
        }
    })
    .await?;
    println!(
        "created {UNRELATED_SECRETS} unrelated Secrets ({} KiB each), {UNRELATED_CONFIG_MAPS} unrelated ConfigMaps and {TARGETS} targets in {NAMESPACES} namespaces in {:.1} s",
        SECRET_BYTES / 1024,
        setup.elapsed().as_secs_f64()
    );

    // Which target holds which bundle, and since when.
    let holds: Arc<Mutex<HashMap<String, (String, Instant)>>> = Arc::default();
    let watch_holds = holds.clone();
    let targets: Api<ConfigMap> = Api::all(client.clone());
    let watch = tokio::spawn(
        watcher(
            targets,
            watcher::Config::default().labels(&format!("{TARGET_LABEL}=yes")),
        )
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
                .and_then(|d| d.get(KEY))
                .cloned()
                .unwrap_or_default();
            if let Ok(mut h) = watch_holds.lock() {
                match h.get(&key) {
                    Some((v, _)) if *v == value => {}
                    _ => {
                        h.insert(key, (value, Instant::now()));
                    }
                }
            }
            std::future::ready(Ok(()))
        }),
    );
    // Targets holding exactly `n` certificates.
    let holding = |n: usize| {
        holds
            .lock()
            .map(|h| h.values().filter(|(v, _)| certificates(v) == n).count())
            .unwrap_or(0)
    };

    let dir = tempfile::tempdir()?;
    server.add_token("rotator", UserInfo::new(ROTATOR_USER, &["system:masters"]))?;
    let config = dir.path().join("rotator.kubeconfig");
    kubeconfig::write(&config, server.url(), server.ca_pem(), "rotator")?;
    let rotator = RunningBinary::start(
        &workspace_binary("capstan-rotator")?,
        &[
            "--kubeconfig",
            config.to_str().unwrap_or_default(),
            "--leader-election-namespace",
            "default",
            "--cluster-resource-namespace",
            "certs",
            "--metrics-listen-address",
            "127.0.0.1:0",
            "--health-listen-address",
            "127.0.0.1:0",
            "--log-level",
            "warn",
        ],
        &[("POD_NAMESPACE", "default"), ("POD_NAME", "rotator-bench")],
    )?;
    let pid = rotator.pid();
    let started = Instant::now();
    await_condition(
        "every target to hold the first CA",
        Duration::from_secs(300),
        Duration::from_millis(20),
        || async { (holding(1) >= TARGETS).then_some(()) },
    )
    .await
    .with_context(|| format!("rotator logs:\n{}", rotator.logs().join("\n")))?;
    let initial = started.elapsed();

    // The change: a second CA joins the source's bundle.
    let second_ca = ca_pem("bench CA 2")?;
    let bundle = format!("{second_ca}{first_ca}");
    let changed = Instant::now();
    Api::<Secret>::namespaced(client.clone(), "certs")
        .patch(
            "bench-ca",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {KEY: bundle}})),
        )
        .await?;
    let all = await_condition(
        "every target to hold the new CA",
        Duration::from_secs(120),
        Duration::from_millis(10),
        || async { (holding(2) >= TARGETS).then_some(()) },
    )
    .await;
    let last = holds
        .lock()
        .map(|h| {
            h.values()
                .filter(|(v, _)| certificates(v) == 2)
                .map(|(_, at)| *at)
                .max()
        })
        .unwrap_or_default();
    let propagation = last.map(|t| t.saturating_duration_since(changed));
    let peak = procfs::status_kib(pid, "VmHWM:")? as f64 / 1024.0;
    let now_rss = procfs::status_kib(pid, "VmRSS:")? as f64 / 1024.0;
    watch.abort();

    println!(
        "initial injection of {TARGETS} targets (rotator start to last write): {:.2} s",
        initial.as_secs_f64()
    );
    let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
    println!(
        "rotator peak RSS (VmHWM): {peak:.1} MiB (now {now_rss:.1} MiB); target < {RSS_TARGET_MIB} MiB: {}",
        verdict(peak < RSS_TARGET_MIB)
    );
    match propagation {
        Some(p) if all.is_ok() => println!(
            "propagation of a CA change to all {TARGETS} targets: {:.2} s; target < {} s: {}",
            p.as_secs_f64(),
            PROPAGATION_TARGET.as_secs(),
            verdict(p < PROPAGATION_TARGET)
        ),
        _ => println!(
            "propagation: only {} of {TARGETS} targets hold the new CA after 120 s: MISSED",
            holding(2)
        ),
    }

    // What the rotator asked for, by verb and resource; reads of Secrets
    // other than the source, named.
    let mut calls: BTreeMap<String, usize> = BTreeMap::new();
    let mut secret_reads = Vec::new();
    for r in server.request_log() {
        if r.user != ROTATOR_USER {
            continue;
        }
        *calls
            .entry(format!("{} {}", r.verb, r.resource))
            .or_default() += 1;
        if r.resource == "secrets" && r.verb == "get" && r.name != "bench-ca" {
            secret_reads.push(format!("{}/{}", r.namespace, r.name));
        }
    }
    let summary: Vec<String> = calls.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!("rotator API calls: {}", summary.join(", "));
    if !secret_reads.is_empty() {
        println!("reads of unrelated Secrets: {}", secret_reads.join(", "));
    }
    drop(rotator);
    let missed = peak >= RSS_TARGET_MIB || propagation.is_none_or(|p| p >= PROPAGATION_TARGET);
    if all.is_err() || missed || !secret_reads.is_empty() {
        bail!("a target was missed");
    }
    Ok(())
}
