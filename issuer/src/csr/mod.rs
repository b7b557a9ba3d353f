//! Kubernetes `CertificateSigningRequest`s (`certificates.k8s.io/v1`)
//! addressed to capstan's signer names, signed the way cert-manager's
//! external issuers sign them.
//!
//! [`plan`] (which to sign, and signing) and [`status`] (the patch and the
//! Event) are pure; the controller reads and writes around them.

pub mod controller;
pub mod plan;
pub mod status;
