//! capstan's test Kubernetes API server and end-to-end test harness.

pub mod apiserver;
pub mod harness;
pub mod hygiene;
