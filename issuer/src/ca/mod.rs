//! The issuer's certificate authorities: rotation of self-managed CAs.

pub mod rotation;
