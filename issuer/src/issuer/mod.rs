//! The issuer kinds themselves: their health and CA lifecycle.
//!
//! * [`plan`] — what to do with one issuer, from its spec, its CA Secret
//!   and the clock (pure);
//! * [`status`] — the status an issuer should show (pure);
//! * [`ca_secret`] — the only code that reads and writes CA Secrets;
//! * [`controller`] — the watches, and carrying a plan out.

pub mod ca_secret;
pub mod controller;
pub mod plan;
pub mod status;
