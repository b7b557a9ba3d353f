//! CertificateRequests: which to sign, and what their status says afterwards.
//!
//! One pass per request, each step in one place:
//!
//! ```text
//!  CertificateRequest ──► plan::gate ─── not ours / finished / not approved ──► Ignore
//!                           │ Deny(issuer)          │ Sign(issuer)
//!                           │                       ▼
//!                           │        controller: the issuer's loaded CA, or why none
//!                           │                       ▼
//!                           │        plan::decide ──► Pending (retry) | pki signs
//!                           ▼                       ▼
//!                        Outcome: Denied | Pending | Issued | Failed
//!                           ▼
//!        status::outcome_patch + status::outcome_record ──► controller writes both
//! ```
//!
//! [`plan`] and [`status`] are pure; the controller does the reading and
//! writing around them.

pub mod controller;
pub mod plan;
pub mod status;
