//! capstan's rotator: pushes CA bundles into ConfigMaps and rolls the
//! workloads that use rotated Secrets and ConfigMaps.
//!
//! The binary (`src/main.rs`) only parses [`Args`] and calls [`Args::run`];
//! everything else lives in this library.

pub mod api;
mod args;
pub mod bundle;
pub mod context;
pub mod error;
pub mod metrics;
pub mod reasons;
pub mod restart;
pub mod scope;

pub use args::{Args, CONFIG_KEYS};
