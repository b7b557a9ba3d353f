//! Fault injection: a share of requests answered with errors, added latency,
//! watches cut after some events. Set at start and changed at run time.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::status::{self, ApiError};
use super::store::random_u64;

/// The faults to inject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Faults {
    /// Share of requests (0.0–1.0) answered with an error instead of served.
    pub error_rate: f64,
    /// Codes picked from at random for injected errors (500, 429, 409).
    pub error_codes: Vec<u16>,
    /// `Retry-After` seconds sent with 429s.
    pub retry_after_seconds: u64,
    /// Latency added to every request, in milliseconds.
    pub latency_ms: u64,
    /// Cut every watch after this many events.
    pub watch_cut_after_events: Option<u64>,
    /// Also inject into discovery and OpenAPI requests.
    pub include_discovery: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            error_rate: 0.0,
            error_codes: vec![500, 429, 409],
            retry_after_seconds: 1,
            latency_ms: 0,
            watch_cut_after_events: None,
            include_discovery: false,
        }
    }
}

/// A shared, changeable fault configuration.
#[derive(Debug, Clone, Default)]
pub struct FaultsHandle(Arc<RwLock<Faults>>);

impl FaultsHandle {
    /// A handle starting with `f`.
    pub fn new(f: Faults) -> Self {
        Self(Arc::new(RwLock::new(f)))
    }

    /// The current configuration.
    pub fn get(&self) -> Faults {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the configuration.
    pub fn set(&self, f: Faults) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = f;
    }

    /// Changes the configuration in place.
    pub fn update(&self, change: impl FnOnce(&mut Faults)) {
        change(&mut self.0.write().unwrap_or_else(|e| e.into_inner()));
    }

    /// Clears every fault.
    pub fn clear(&self) {
        self.set(Faults::default());
    }

    /// The latency to add before serving.
    pub fn latency(&self, discovery: bool) -> Option<Duration> {
        let f = self.get();
        (f.latency_ms > 0 && (!discovery || f.include_discovery))
            .then(|| Duration::from_millis(f.latency_ms))
    }

    /// An injected error for this request, if the dice say so.
    pub fn roll(
        &self,
        discovery: bool,
        group: &str,
        resource: &str,
        name: &str,
    ) -> Option<ApiError> {
        let f = self.get();
        if f.error_rate <= 0.0 || (discovery && !f.include_discovery) || f.error_codes.is_empty() {
            return None;
        }
        let dice = (random_u64() % 1_000_000) as f64 / 1_000_000.0;
        if dice >= f.error_rate {
            return None;
        }
        let code = f.error_codes[(random_u64() % f.error_codes.len() as u64) as usize];
        Some(match code {
            429 => {
                let mut e = ApiError::with_details(
                    429,
                    "TooManyRequests",
                    "Too many requests, please try again later.",
                    Some(serde_json::json!({"retryAfterSeconds": f.retry_after_seconds})),
                );
                e.headers
                    .push(("Retry-After".into(), f.retry_after_seconds.to_string()));
                e
            }
            409 => status::conflict_modified(
                group,
                resource,
                if name.is_empty() { "(injected)" } else { name },
            ),
            500 => status::internal("injected fault"),
            other => ApiError::new(other, "", format!("injected fault {other}")),
        })
    }
}
