//! Rolling restarts of workloads whose Secrets or ConfigMaps changed.
//!
//! * [`sources`] — which Secrets and ConfigMaps a pod template uses, and which
//!   of them a workload asked to be restarted for (capstan's and Reloader's
//!   annotations);
//! * [`compat`] — Reloader annotations capstan does not honour, reported once;
//! * [`schedule`] — debounce windows and the per-namespace rollout limit;
//! * [`workload`] — Deployments, StatefulSets and DaemonSets behind one type;
//! * [`index`] — every restart decision, pure: sources → workloads → hashes,
//!   inputs in, effects out;
//! * [`controller`] — the executor: watch events into the index, its effects
//!   through the API;
//! * [`hash`] — the content hash a restart sets on the pod template;
//! * [`rollout`] — whether a rollout has finished, as `kubectl rollout status` judges it.

pub mod compat;
pub mod controller;
pub mod hash;
pub mod index;
pub mod rollout;
pub mod schedule;
pub mod sources;
pub mod workload;
