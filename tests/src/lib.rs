//! capstan's end-to-end test harness: the real control plane the suites run
//! against, and the helpers they share. The embedded API server they compare
//! with it is the `capstan_testserver` crate.

pub mod chart;
pub mod cluster;
pub mod controlplane;
pub mod harness;
pub mod hygiene;
pub mod markdown;
pub mod procfs;
pub mod signing;
