//! Process plumbing shared by `capstan-issuer` and `capstan-rotator`.
//!
//! Nothing here knows about certificates or bundles; it is what every
//! long-running capstan process needs around its controllers:
//!
//! * [`api`] — reading the API server's answers (409 Conflict) the same way
//!   everywhere;
//! * [`backoff`] — the one retry policy: watches, leader election and failed
//!   reconciles;
//! * [`cli`] — flags both binaries share: cluster access, leader election,
//!   replica identity;
//! * [`telemetry`] — structured logs (text or JSON) through `tracing-subscriber`;
//! * [`config`] — the YAML config file, applied under flags and environment;
//! * [`crd`] — rendering generated CRDs into the committed `crds/` YAML;
//! * [`events`] — Kubernetes Events with library-go's reasons and messages,
//!   published without ever failing the reconcile that tells them;
//! * [`lease`] — leader election on a Lease, as a watch channel;
//! * [`served`] — waiting for the CRDs a controller needs, named in the log
//!   and `/readyz` while they are missing;
//! * [`serve`] — `/metrics` (plain, TLS from files or a Secret-kept CA,
//!   scrape auth) and `/healthz` + `/readyz`;
//! * [`error`] — the crate's one error type;
//! * [`shutdown`] — one cancellation token, fired by SIGTERM or SIGINT, shared by
//!   controllers and servers so the process drains and exits cleanly.

pub mod api;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod crd;
pub mod error;
pub mod events;
pub mod lease;
pub mod serve;
pub mod served;
pub mod shutdown;
pub mod telemetry;
