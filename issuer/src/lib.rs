//! capstan's issuer: the cert-manager external issuer: signs CertificateRequests and CertificateSigningRequests with an in-cluster root CA.
//!
//! The binary (`src/main.rs`) only parses [`Args`] and calls [`Args::run`];
//! everything else lives in this library.

pub mod api;
mod args;
pub mod ca;
pub mod context;
pub mod csr;
pub mod error;
#[cfg(test)]
mod fixtures;
pub mod issuer;
pub mod metrics;
pub mod policy;
pub mod request;
pub mod signing;

pub use args::{Args, CONFIG_KEYS};
