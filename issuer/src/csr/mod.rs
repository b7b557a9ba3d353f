//! Kubernetes `CertificateSigningRequest`s (`certificates.k8s.io/v1`)
//! addressed to capstan's signer names, signed the way cert-manager's
//! external issuers sign them.
//!
//! [`plan`] is pure; the controller reads and writes around it.

pub mod controller;
pub mod plan;
