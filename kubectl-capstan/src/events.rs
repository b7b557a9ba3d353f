//! The Events about an issuer, as the plugin shows them. Pure.
//!
//! capstan writes core/v1 Events (see `capstan_common::events`): on a
//! `ClusterCAIssuer` in namespace `default`, on a `CAIssuer` in its own.

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

/// One Event, reduced to what a user reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    /// Its object name (identifies it across reads, with `count`).
    #[serde(skip)]
    pub name: String,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Reason (`CARotated`...).
    pub reason: String,
    /// Message.
    pub message: String,
    /// How many times it was recorded.
    pub count: i32,
    /// When it was last recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_timestamp: Option<Timestamp>,
}

impl EventView {
    /// The view of `event`.
    #[must_use]
    pub fn of(event: &Event) -> Self {
        let last = event
            .last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or_else(|| event.event_time.as_ref().map(|t| t.0))
            .or_else(|| event.first_timestamp.as_ref().map(|t| t.0))
            .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| t.0));
        Self {
            name: event.metadata.name.clone().unwrap_or_default(),
            type_: event.type_.clone().unwrap_or_default(),
            reason: event.reason.clone().unwrap_or_default(),
            message: event.message.clone().unwrap_or_default(),
            count: event.count.unwrap_or(1),
            last_timestamp: last,
        }
    }
}

/// The last `n` events, oldest first (as `kubectl get events
/// --sort-by=.lastTimestamp` prints them).
#[must_use]
pub fn last(events: &[Event], n: usize) -> Vec<EventView> {
    let mut views: Vec<EventView> = events.iter().map(EventView::of).collect();
    views.sort_by(|a, b| {
        a.last_timestamp
            .cmp(&b.last_timestamp)
            .then_with(|| a.name.cmp(&b.name))
    });
    let skip = views.len().saturating_sub(n);
    views.split_off(skip)
}

/// Event builders for the unit tests of the modules that read Events.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A Normal Event `name` on `ClusterCAIssuer/ca` with `reason`, last
    /// recorded at second `at`.
    pub(crate) fn event(name: &str, reason: &str, at: i64, count: i32) -> Event {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default"},
            "involvedObject": {"kind": "ClusterCAIssuer", "name": "ca"},
            "type": "Normal", "reason": reason, "message": format!("{reason} happened"),
            "count": count,
            "lastTimestamp": Timestamp::from_second(at).expect("time").to_string(),
        }))
        .expect("event")
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::event;
    use super::*;

    #[test]
    fn the_last_events_oldest_first() {
        let events = [
            event("b", "CARotated", 200, 1),
            event("a", "CAGenerated", 100, 1),
            event("c", "CARetired", 300, 2),
        ];
        let got = last(&events, 2);
        assert_eq!(
            got.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(),
            ["CARotated", "CARetired"]
        );
        assert_eq!(got[1].count, 2);
        assert_eq!(last(&events, 10).len(), 3);
    }
}
