//! CertificateRequests: which to sign, and what their status says afterwards.
//!
//! ```text
//!  CertificateRequest ──► plan::plan(request, issuer state) ──► RequestDecision
//!                                                                 │
//!       Ignore ◄── not ours / finished / not approved             │
//!       Deny   ──► status::outcome_patch(Denied)                  │
//!       Wait   ──► status::outcome_patch(Pending)   (retry)       │
//!       Sign   ──► pki signs ──► status::outcome_patch(Issued | Failed)
//! ```
//!
//! [`plan`] and [`status`] are pure; the controller does the reading and
//! writing around them.

pub mod controller;
pub mod plan;
pub mod status;
