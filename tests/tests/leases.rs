//! Leader election with kube-lease-manager (what capstan's replicas use)
//! against a real control plane's kube-apiserver: its mutual exclusion rests
//! on server-side apply conflicts and strategic merge patches of
//! `coordination.k8s.io/v1` Leases.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use capstan_tests::controlplane::ControlPlane;
use capstan_tests::harness::await_condition;
use kube_lease_manager::LeaseManagerBuilder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_handover_on_release() {
    let s = ControlPlane::builder()
        .workloads(false)
        .start()
        .await
        .unwrap();
    let manager = |identity: &'static str| {
        let client = s.client();
        async move {
            LeaseManagerBuilder::new(client.await.unwrap(), "capstan-test")
                .with_namespace("default")
                .with_identity(identity)
                .with_duration(3)
                .with_grace(1)
                .with_field_manager(format!("capstan-test/{identity}"))
                .build()
                .await
                .unwrap()
        }
    };
    let (a, a_task) = manager("a").await.watch().await;
    let (b, b_task) = manager("b").await.watch().await;
    let leader = await_condition(
        "a leader",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || {
            let (a, b) = (*a.borrow(), *b.borrow());
            assert!(!(a && b), "two leaders at once");
            async move {
                match (a, b) {
                    (true, false) => Some("a"),
                    (false, true) => Some("b"),
                    _ => None,
                }
            }
        },
    )
    .await
    .unwrap();
    // Both keep running for a while: still exactly one leader.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < deadline {
        assert!(*a.borrow() ^ *b.borrow(), "exactly one leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The leader steps down (dropping its receiver releases the Lease); the other takes over.
    let (follower, leader_task) = if leader == "a" {
        drop(a);
        (b, a_task)
    } else {
        drop(b);
        (a, b_task)
    };
    leader_task.await.unwrap().unwrap();
    await_condition(
        "handover",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || {
            let now = *follower.borrow();
            async move { now.then_some(()) }
        },
    )
    .await
    .unwrap();
}
