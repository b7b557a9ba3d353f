//! Load benchmark of the issuer: 1,000 approved CertificateRequests against
//! the test API server, signed by the real `capstan-issuer` binary.
//!
//! ```sh
//! cargo build --release -p capstan-issuer
//! cargo run --release -p capstan-tests --bin issuer-load [-- N [KEY_ALGORITHM]]
//! ```
//!
//! `KEY_ALGORITHM` is the self-managed CA's `keyAlgorithm` (`ECDSAP256`, the
//! default, `ECDSAP384`, `Ed25519`, `RSA2048`, `RSA3072` or `RSA4096`); the
//! pure signing cost is measured with a CA of the same algorithm.
//!
//! Prints `issued <N> in <S> s, p50 <X> ms, p99 <Y> ms` (latency from the
//! request's creation to the `Ready=True` the watch sees), then the issuer's
//! own CPU time per request beside the pure signing cost measured here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use capstan_tests::cluster::create_crds;
use capstan_tests::harness::{RunningBinary, await_condition, workspace_binary};
use capstan_tests::procfs;
use capstan_testserver::auth::UserInfo;
use capstan_testserver::{TestApiServer, kubeconfig};
use futures::{StreamExt, TryStreamExt, stream};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

fn cr_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "CertificateRequest"),
        "certificaterequests",
    )
}

/// The pki algorithm for a `keyAlgorithm` spelling of the CRD.
fn key_algorithm(name: &str) -> anyhow::Result<capstan_pki::KeyAlgorithm> {
    use capstan_pki::KeyAlgorithm;
    Ok(match name {
        "ECDSAP256" => KeyAlgorithm::EcdsaP256,
        "ECDSAP384" => KeyAlgorithm::EcdsaP384,
        "Ed25519" => KeyAlgorithm::Ed25519,
        "RSA2048" => KeyAlgorithm::Rsa2048,
        "RSA3072" => KeyAlgorithm::Rsa3072,
        "RSA4096" => KeyAlgorithm::Rsa4096,
        other => bail!(
            "unknown key algorithm {other:?} (ECDSAP256, ECDSAP384, Ed25519, RSA2048, RSA3072, RSA4096)"
        ),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(1000);
    let algorithm_name = args.next().unwrap_or_else(|| "ECDSAP256".to_owned());
    let algorithm = key_algorithm(&algorithm_name)?;
    let server = TestApiServer::start().await?;
    let client = server.client().await?;
    create_crds(&client, true).await?;

    let dir = tempfile::tempdir()?;
    server.add_token(
        "issuer",
        UserInfo::new(
            "system:serviceaccount:default:capstan-issuer",
            &["system:masters"],
        ),
    )?;
    let issuer_kubeconfig = dir.path().join("issuer.kubeconfig");
    kubeconfig::write(&issuer_kubeconfig, server.url(), server.ca_pem(), "issuer")?;
    let issuer = RunningBinary::start(
        &workspace_binary("capstan-issuer")?,
        &[
            "--kubeconfig",
            issuer_kubeconfig.to_str().unwrap_or_default(),
            "--cluster-resource-namespace",
            "default",
            "--leader-election-namespace",
            "default",
            "--log-level",
            "warn",
        ],
        &[("POD_NAMESPACE", "default"), ("POD_NAME", "issuer-bench")],
    )?;
    let issuer_pid = issuer.pid();

    let issuers = Api::<DynamicObject>::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("capstan.dev", "v1alpha1", "ClusterCAIssuer"),
            "clustercaissuers",
        ),
    );
    let issuer_obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "capstan.dev/v1alpha1", "kind": "ClusterCAIssuer", "metadata": {"name": "bench"},
        "spec": {"selfManaged": {"secretName": "bench-ca", "keyAlgorithm": algorithm_name}}
    }))?;
    issuers.create(&PostParams::default(), &issuer_obj).await?;
    await_condition(
        "the issuer to be Ready",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            let obj = issuers.get("bench").await.ok()?;
            obj.data["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                .then_some(())
        },
    )
    .await?;

    // One CSR reused by every request: the issuer parses and verifies each anyway.
    let key = rcgen::KeyPair::generate()?;
    let csr = rcgen::CertificateParams::new(vec!["metrics.monitoring.svc".to_owned()])?
        .serialize_request(&key)?
        .pem()?;
    let pure = capstan_tests::signing::pure_cost(&csr, algorithm)?;

    let api = Api::<DynamicObject>::namespaced_with(client.clone(), "default", &cr_resource());
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let ready: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let watch_ready = ready.clone();
    let watch = tokio::spawn(
        watcher(api.clone(), watcher::Config::default())
            .applied_objects()
            .try_for_each(move |obj| {
                let done = obj.data["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    });
                if done
                    && let Some(name) = obj.metadata.name.clone()
                    && let Ok(mut r) = watch_ready.lock()
                {
                    r.entry(name).or_insert_with(Instant::now);
                }
                std::future::ready(Ok(()))
            }),
    );

    let cpu_before = procfs::cpu_time(issuer_pid)?;
    let started = Instant::now();
    let request_b64 =
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, csr.as_bytes());
    stream::iter(0..count)
        .map(|i| {
            let (api, created, request) = (api.clone(), created.clone(), request_b64.clone());
            async move {
                let name = format!("load-{i}");
                let obj: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
                    "metadata": {"name": name, "namespace": "default"},
                    "spec": {"request": request, "issuerRef": {"group": "capstan.dev", "kind": "ClusterCAIssuer", "name": "bench"}}
                }))?;
                if let Ok(mut c) = created.lock() {
                    c.insert(name.clone(), Instant::now());
                }
                api.create(&PostParams::default(), &obj).await?;
                let approve = json!({"status": {"conditions": [{"type": "Approved", "status": "True", "reason": "bench", "message": "approved", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&approve)).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    await_condition(
        "every request to be issued",
        Duration::from_secs(300),
        Duration::from_millis(50),
        || async { (ready.lock().map(|r| r.len()).unwrap_or(0) >= count).then_some(()) },
    )
    .await?;
    let elapsed = started.elapsed();
    let cpu = procfs::cpu_time(issuer_pid)?.since(&cpu_before);
    watch.abort();

    let created = created.lock().map(|c| c.clone()).unwrap_or_default();
    let ready = ready.lock().map(|r| r.clone()).unwrap_or_default();
    let mut latencies: Vec<Duration> = created
        .iter()
        .filter_map(|(n, t0)| ready.get(n).map(|t1| t1.saturating_duration_since(*t0)))
        .collect();
    if latencies.len() < count {
        bail!("only {} of {count} requests were issued", latencies.len());
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize)
            .saturating_sub(1)
            .min(latencies.len() - 1)]
    };
    println!(
        "issued {} in {:.2} s, p50 {} ms, p99 {} ms",
        latencies.len(),
        elapsed.as_secs_f64(),
        pct(0.50).as_millis(),
        pct(0.99).as_millis()
    );
    let per_request = Duration::from_secs_f64(cpu.total() / count as f64);
    let micros = |seconds: f64| seconds * 1e6 / count as f64;
    println!(
        "issuer CPU {:.2} s total, {} µs per request (user {:.0}, system {:.0}); pure signing with a {algorithm_name} CA {} µs per leaf; ratio {:.1}x",
        cpu.total(),
        per_request.as_micros(),
        micros(cpu.user),
        micros(cpu.system),
        pure.as_micros(),
        per_request.as_secs_f64() / pure.as_secs_f64()
    );
    println!(
        "issuer peak RSS (VmHWM) {:.1} MiB",
        procfs::status_kib(issuer_pid, "VmHWM:")? as f64 / 1024.0
    );
    let mut calls: std::collections::BTreeMap<String, usize> = Default::default();
    for r in server.request_log() {
        if r.user.contains("capstan-issuer") {
            let what = format!(
                "{} {}{}",
                r.verb,
                r.resource,
                if r.subresource.is_empty() {
                    String::new()
                } else {
                    format!("/{}", r.subresource)
                }
            );
            *calls.entry(what).or_default() += 1;
        }
    }
    let summary: Vec<String> = calls
        .iter()
        .filter(|(_, n)| **n >= count / 10)
        .map(|(what, n)| format!("{what} {:.2}", *n as f64 / count as f64))
        .collect();
    println!("issuer API calls per request: {}", summary.join(", "));
    drop(issuer);
    Ok(())
}
