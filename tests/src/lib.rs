//! capstan's test Kubernetes API server and end-to-end test harness.

pub mod apiserver;
pub mod chart;
pub mod cluster;
pub mod controlplane;
pub mod harness;
pub mod hygiene;
pub mod markdown;
pub mod procfs;
pub mod signing;
