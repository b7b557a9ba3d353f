//! capstan's embedded Kubernetes API server: an in-memory REST endpoint over
//! HTTPS on 127.0.0.1 that kubectl, helm and kube-rs clients use as they
//! would a cluster. `capstan-demo` runs capstan on it with no cluster at
//! all; the suites in `capstan-tests` compare it with the real
//! kube-apiserver; the `capstan-test-apiserver` binary serves it as a
//! process.
//!
//! Pure building blocks (no IO) live in their own modules so they can be unit
//! tested: [`patch`] (JSON, merge, strategic-merge patches and server-side
//! apply), [`schema`] (openAPIV3Schema validation, pruning, defaulting),
//! [`table`] (server-side `meta.k8s.io/v1` Table printing) and [`openapi`]
//! (the `/openapi/v3` documents kubectl reads).
//!
//! The server itself: [`server`] (state, TLS accept loop, [`TestApiServer`]),
//! [`handlers`] (the verbs), [`watch`], [`discovery`], [`admission`] (what
//! happens to an object before it is stored), [`store`] and [`persist`],
//! [`resources`] (the registry of built-in and CRD kinds), [`selectors`],
//! [`request`] (routes, query, content negotiation), [`status`] (error
//! bodies), [`auth`], [`tls`], [`kubeconfig`], [`faults`], [`request_log`]
//! and [`rollout`] (the workload rollout simulator).

pub mod openapi;
pub mod patch;
pub mod schema;
pub mod table;

pub mod admission;
pub mod auth;
pub mod discovery;
pub mod faults;
pub mod handlers;
pub mod kubeconfig;
pub mod persist;
pub mod protobuf;
pub mod rbac;
pub mod request;
pub mod request_log;
pub mod resources;
pub mod response;
pub mod rollout;
pub mod selectors;
pub mod server;
pub mod status;
pub mod store;
pub mod tls;
pub mod watch;

pub use auth::{Rule, UserInfo};
pub use faults::{Faults, FaultsHandle};
pub use request_log::RequestRecord;
pub use server::{Builder, TestApiServer};
