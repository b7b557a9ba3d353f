//! The issuer kinds themselves: their health and CA lifecycle.
//!
//! * [`status`] — the status an issuer should show (pure).

pub mod ca_secret;
pub mod controller;
pub mod status;
