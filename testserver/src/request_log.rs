//! The log of requests served, for tests comparing what controllers call
//! with the RBAC a chart grants.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// One served request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// When it arrived (RFC 3339 with microseconds).
    pub time: String,
    /// The authenticated user (`system:anonymous` when unauthenticated).
    pub user: String,
    /// The Kubernetes verb (get, list, watch, create, update, patch, delete,
    /// deletecollection) or the lower-case HTTP method for non-resource paths.
    pub verb: String,
    /// API group.
    pub group: String,
    /// Resource (empty for non-resource paths).
    pub resource: String,
    /// Subresource.
    pub subresource: String,
    /// Namespace.
    pub namespace: String,
    /// Object name.
    pub name: String,
    /// URL path.
    pub path: String,
    /// Response code.
    pub code: u16,
}

/// A bounded, shared request log.
#[derive(Debug, Clone)]
pub struct RequestLog {
    entries: Arc<Mutex<VecDeque<RequestRecord>>>,
    capacity: usize,
}

impl Default for RequestLog {
    fn default() -> Self {
        Self::new(200_000)
    }
}

impl RequestLog {
    /// A log keeping the last `capacity` requests.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Arc::default(),
            capacity: capacity.max(1),
        }
    }

    /// Appends a record.
    pub fn push(&self, r: RequestRecord) {
        let mut e = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if e.len() >= self.capacity {
            e.pop_front();
        }
        e.push_back(r);
    }

    /// Every record kept, oldest first.
    pub fn entries(&self) -> Vec<RequestRecord> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Forgets every record.
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}
