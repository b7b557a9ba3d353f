//! `kubectl capstan`: a kubectl plugin for capstan's users, as `cmctl` is
//! for cert-manager's.
//!
//! * `status ISSUER` — [`status`]: Ready, rotation phase, the bundle's CAs
//!   and their roles, the issuer's last Events;
//! * `rotate ISSUER` — [`rotate`]: set `capstan.dev/rotate`, follow the
//!   rotation until the new CA signs;
//! * `inspect secret|configmap NAME` — [`inspect`]: the certificates inside
//!   and which CA verifies which;
//! * `check` — [`check`]: injection targets and restart-annotated workloads,
//!   in sync or why not.
//!
//! The decisions are pure and reuse the controllers' own code (the issuer's
//! API types, the rotator's annotation parsing, bundle building and content
//! hashes, capstan-pki); [`run`] is the thin layer that reads the cluster and
//! prints.

pub mod check;
pub mod cli;
pub mod error;
pub mod events;
pub mod inspect;
pub mod output;
pub mod rotate;
pub mod run;
pub mod status;
pub mod target;

pub use cli::Cli;
pub use error::{Error, Result};
