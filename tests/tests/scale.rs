//! 20,000 Secrets of 10 KiB each in one namespace of the real control plane
//! (etcd and kube-apiserver 1.35, the test binary's shared control plane):
//! created, listed (paginated and not), listed metadata-only and watched
//! from kube-apiserver's watch cache, with the figures printed
//! (`cargo test -p capstan-tests --test scale -- --nocapture`), including
//! the memory of kube-apiserver and etcd and of this client.
//! `CAPSTAN_SCALE_SECRETS` changes the count; unoptimized builds default to
//! 5,000 to keep `cargo test` short (run with `--release` for the full 20,000).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use capstan_tests::controlplane::ControlPlane;
use capstan_tests::procfs;
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::core::PartialObjectMeta;
use serde_json::json;

fn peak_rss_mib() -> u64 {
    proc_status_mib("VmHWM:")
}

fn rss_mib() -> u64 {
    proc_status_mib("VmRSS:")
}

fn proc_status_mib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_secrets() {
    let n: usize = std::env::var("CAPSTAN_SCALE_SECRETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) {
            5_000
        } else {
            20_000
        });
    let cp = ControlPlane::shared().await.unwrap();
    let ns = cp.namespace("scale").await.unwrap();
    let client = cp.client().await.unwrap();
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let payload = "x".repeat(10 * 1024);
    let t = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let secret: Secret = serde_json::from_value(json!({
                "metadata": {"name": format!("s-{i:05}"), "labels": {"bucket": (i % 10).to_string()}},
                "stringData": {"payload": payload},
            }))
            .unwrap();
            async move { api.create(&PostParams::default(), &secret).await.map(|_| ()) }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();
    let create = t.elapsed();
    let stored_rss = rss_mib();

    let t = Instant::now();
    let mut pages = 0;
    let mut seen = 0;
    let mut lp = ListParams::default().limit(500);
    loop {
        let page = api.list(&lp).await.unwrap();
        pages += 1;
        seen += page.items.len();
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(seen, n);
    let paginated = t.elapsed();

    let t = Instant::now();
    let all = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(all.items.len(), n);
    let rv = all.metadata.resource_version.clone().unwrap();
    drop(all);
    let unpaginated = t.elapsed();

    let t = Instant::now();
    let meta: Api<PartialObjectMeta<Secret>> = Api::namespaced(client.clone(), &ns);
    let m = meta
        .list(&ListParams::default().labels("bucket=3"))
        .await
        .unwrap();
    assert_eq!(m.items.len(), n / 10);
    let metadata = t.elapsed();

    let t = Instant::now();
    let mut stream = api
        .watch(&WatchParams::default().timeout(120), "0")
        .await
        .unwrap()
        .boxed();
    let mut added = 0;
    while added < n {
        match tokio::time::timeout(Duration::from_secs(60), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Added(_) => added += 1,
            WatchEvent::Bookmark(_) => {}
            other => panic!("{other:?}"),
        }
    }
    drop(stream);
    let watch = t.elapsed();
    let server_mib = |name: &str, field: &str| {
        cp.process(name)
            .and_then(|p| procfs::status_kib(p.pid(), field).ok())
            .map_or(0, |kib| kib / 1024)
    };
    println!(
        "{n} Secrets of 10 KiB: create {create:.1?} ({:.0}/s), paginated list ({pages} pages of 500) {paginated:.1?}, \
         unpaginated list {unpaginated:.1?}, metadata list with selector {metadata:.1?}, watch of all {watch:.1?}; \
         resourceVersion {rv}; RSS of kube-apiserver {} MiB (peak {} MiB), of etcd {} MiB (peak {} MiB); \
         RSS of this client once stored {stored_rss} MiB, peak {} MiB",
        n as f64 / create.as_secs_f64(),
        server_mib("kube-apiserver", "VmRSS:"),
        server_mib("kube-apiserver", "VmHWM:"),
        server_mib("etcd", "VmRSS:"),
        server_mib("etcd", "VmHWM:"),
        peak_rss_mib()
    );
    cp.delete_namespace(&ns).await.unwrap();
}
