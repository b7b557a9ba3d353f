//! The test Kubernetes API server.
//!
//! Pure building blocks (no IO) live in their own modules so they can be unit
//! tested: [`patch`] (JSON, merge, strategic-merge patches and server-side
//! apply), [`schema`] (openAPIV3Schema validation, pruning, defaulting),
//! [`table`] (server-side `meta.k8s.io/v1` Table printing) and [`openapi`]
//! (the `/openapi/v3` documents kubectl reads).

pub mod openapi;
pub mod patch;
pub mod schema;
pub mod table;
