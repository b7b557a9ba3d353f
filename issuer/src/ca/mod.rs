//! The issuer's certificate authorities: how a self-managed CA is kept in its
//! Secret ([`layout`]) and when it rotates ([`rotation`]).

pub mod layout;
pub mod rotation;
