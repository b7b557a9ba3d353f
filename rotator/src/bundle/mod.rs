//! CA bundles in ConfigMaps: from `CABundle` resources and annotated
//! ConfigMaps.
//!
//! * [`targets`] — for a `CABundle`, which namespaces get its ConfigMap and
//!   what to create, update or delete there.

pub mod targets;
