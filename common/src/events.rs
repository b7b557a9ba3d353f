//! Kubernetes Events written the way OpenShift's library-go and the Cluster
//! Monitoring Operator write them, so `kubectl get events` tells the story:
//!
//! ```text
//! LAST SEEN   TYPE     REASON             OBJECT                  MESSAGE
//! 12s         Normal   ConfigMapUpdated   configmap/prometheus-ca Updated ConfigMap/prometheus-ca -n monitoring because it changed
//! 2s          Normal   RolloutTriggered   deployment/prometheus   Restarting Deployment/prometheus -n monitoring because ConfigMap/prometheus-ca changed
//! ```
//!
//! Events are core/v1 (`count`, `firstTimestamp`, `lastTimestamp`,
//! `source.component`), which every `kubectl` version prints. Repeats of the
//! same event — same object, type, reason *and message* — within
//! [`AGGREGATION_WINDOW`] bump `count` on one Event instead of creating
//! another, as client-go's event correlator does; a different message is a
//! different event (kube-runtime's `Recorder` would fold it into the first).

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Resource as _;
use kube::api::{Patch, PatchParams, PostParams};
use lru::LruCache;

/// Repeats inside this window are counted on one Event.
pub const AGGREGATION_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Longest message stored; longer ones are cut at a character boundary.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// Normal or Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Progress.
    Normal,
    /// Something a user should look at.
    Warning,
}

impl EventType {
    /// The API spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// One event to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Normal or Warning.
    pub type_: EventType,
    /// CamelCase reason, e.g. `ConfigMapUpdated`.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

impl Record {
    /// A Normal event.
    #[must_use]
    pub fn normal(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            type_: EventType::Normal,
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// A Warning event.
    #[must_use]
    pub fn warning(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            type_: EventType::Warning,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// library-go's message for an object created because it was missing:
/// `Created Secret/x -n ns because it was missing`.
#[must_use]
pub fn created_message(kind: &str, namespace: Option<&str>, name: &str) -> String {
    format!(
        "Created {} because it was missing",
        object_phrase(kind, namespace, name)
    )
}

/// library-go's message for an object updated because it changed:
/// `Updated ConfigMap/x -n ns because it changed`.
#[must_use]
pub fn updated_message(kind: &str, namespace: Option<&str>, name: &str) -> String {
    format!(
        "Updated {} because it changed",
        object_phrase(kind, namespace, name)
    )
}

/// `Kind/name -n namespace`, or `Kind/name` for cluster-scoped objects.
#[must_use]
pub fn object_phrase(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{kind}/{name} -n {ns}"),
        None => format!("{kind}/{name}"),
    }
}

fn truncate(message: &str) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message.to_owned();
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_owned()
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    uid: Option<String>,
    type_: EventType,
    reason: String,
    message: String,
}

#[derive(Debug, Clone)]
struct Seen {
    name: String,
    count: i32,
    first: Timestamp,
    last: Timestamp,
}

/// What to send for an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Create a new Event with this name.
    Create {
        /// Event name.
        name: String,
    },
    /// Bump an existing Event.
    Bump {
        /// Event name.
        name: String,
        /// The new count.
        count: i32,
        /// When it was first seen.
        first: Timestamp,
    },
}

/// At most this many distinct recent events are remembered for
/// aggregation, as in client-go's event cache; past it the least recently
/// seen is forgotten, so a flood of distinct events costs bounded memory
/// and constant time per event.
const MAX_REMEMBERED: NonZeroUsize = NonZeroUsize::new(4096).expect("4096 is not zero");

/// The aggregation state: which events were written recently.
#[derive(Debug)]
pub struct Correlator {
    seen: LruCache<Key, Seen>,
}

impl Default for Correlator {
    fn default() -> Self {
        Self {
            seen: LruCache::new(MAX_REMEMBERED),
        }
    }
}

impl Correlator {
    /// Decides how to write `record` about `regarding` at `now`, and
    /// remembers it.
    pub fn observe(
        &mut self,
        regarding: &ObjectReference,
        record: &Record,
        now: Timestamp,
    ) -> Write {
        let window =
            k8s_openapi::jiff::SignedDuration::try_from(AGGREGATION_WINDOW).unwrap_or_default();
        let key = Key {
            kind: regarding.kind.clone(),
            namespace: regarding.namespace.clone(),
            name: regarding.name.clone(),
            uid: regarding.uid.clone(),
            type_: record.type_,
            reason: record.reason.clone(),
            message: record.message.clone(),
        };
        // An entry last seen a whole window ago is stale: the repeat starts
        // a new Event (and replaces the entry below).
        if let Some(seen) = self.seen.get_mut(&key)
            && seen.last + window > now
        {
            seen.count = seen.count.saturating_add(1);
            seen.last = now;
            return Write::Bump {
                name: seen.name.clone(),
                count: seen.count,
                first: seen.first,
            };
        }
        let base = regarding.name.as_deref().unwrap_or("capstan");
        let name = format!("{base}.{:x}", now.as_nanosecond());
        self.seen.put(
            key,
            Seen {
                name: name.clone(),
                count: 1,
                first: now,
                last: now,
            },
        );
        Write::Create { name }
    }
}

/// Records Events for one component (`capstan-issuer`, `capstan-rotator`).
pub struct Recorder {
    client: kube::Client,
    component: String,
    instance: String,
    correlator: Mutex<Correlator>,
}

impl Recorder {
    /// A recorder writing as `component`; `instance` is the pod (host) name.
    #[must_use]
    pub fn new(
        client: kube::Client,
        component: impl Into<String>,
        instance: impl Into<String>,
    ) -> Self {
        Self {
            client,
            component: component.into(),
            instance: instance.into(),
            correlator: Mutex::new(Correlator::default()),
        }
    }

    /// Writes `record` about `regarding` as [`Recorder::publish`] does; a
    /// refused write is said in the log (as a warning naming the object and
    /// the reason) and goes no further: an Event lost must never fail the
    /// reconcile whose change it tells.
    pub async fn publish_or_warn(&self, regarding: &ObjectReference, record: &Record) {
        if let Err(error) = self.publish(regarding, record).await {
            tracing::warn!(
                kind = regarding.kind.as_deref().unwrap_or_default(),
                namespace = regarding.namespace.as_deref().unwrap_or_default(),
                name = regarding.name.as_deref().unwrap_or_default(),
                reason = %record.reason,
                %error,
                "could not record event"
            );
        }
    }

    /// Writes `record` about `regarding`, in the object's namespace
    /// (`default` for cluster-scoped objects, as kubectl expects).
    ///
    /// # Errors
    /// When the API server refuses the write.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        record: &Record,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let write = match self.correlator.lock() {
            Ok(mut c) => c.observe(regarding, record, now),
            Err(poisoned) => poisoned.into_inner().observe(regarding, record, now),
        };
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        // The written Event comes back in the response; nothing reads it, so
        // it is taken as text and not decoded (Events are written per
        // request: decoding each reply costs more CPU than building it).
        let url = Event::url_path(&(), Some(&namespace));
        let request = kube::core::Request::new(url);
        match write {
            Write::Create { name } => {
                let event = Event {
                    metadata: ObjectMeta {
                        name: Some(name),
                        namespace: Some(namespace),
                        ..ObjectMeta::default()
                    },
                    involved_object: regarding.clone(),
                    reason: Some(record.reason.clone()),
                    message: Some(truncate(&record.message)),
                    type_: Some(record.type_.as_str().to_owned()),
                    count: Some(1),
                    first_timestamp: Some(Time(now)),
                    last_timestamp: Some(Time(now)),
                    source: Some(EventSource {
                        component: Some(self.component.clone()),
                        host: None,
                    }),
                    reporting_component: Some(self.component.clone()),
                    reporting_instance: Some(self.instance.clone()),
                    ..Event::default()
                };
                let body = serde_json::to_vec(&event).map_err(kube::Error::SerdeError)?;
                let http = request
                    .create(&PostParams::default(), body)
                    .map_err(kube::Error::BuildRequest)?;
                self.client.request_text(http).await?;
            }
            Write::Bump { name, count, first } => {
                let patch = serde_json::json!({
                    "count": count,
                    "firstTimestamp": Time(first),
                    "lastTimestamp": Time(now),
                });
                let http = request
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .map_err(kube::Error::BuildRequest)?;
                self.client.request_text(http).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_767_225_600 + secs).expect("valid")
    }

    fn deployment() -> ObjectReference {
        ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some("Deployment".into()),
            namespace: Some("monitoring".into()),
            name: Some("prometheus".into()),
            uid: Some("u1".into()),
            ..ObjectReference::default()
        }
    }

    #[test]
    fn messages_have_library_go_shapes() {
        assert_eq!(
            created_message("Secret", Some("ns"), "x"),
            "Created Secret/x -n ns because it was missing"
        );
        assert_eq!(
            updated_message("ConfigMap", Some("ns"), "y"),
            "Updated ConfigMap/y -n ns because it changed"
        );
        assert_eq!(
            updated_message("ClusterCAIssuer", None, "ca"),
            "Updated ClusterCAIssuer/ca because it changed"
        );
    }

    #[test]
    fn repeats_are_counted_and_new_messages_are_new_events() {
        let mut c = Correlator::default();
        let first = Record::normal(
            "RolloutTriggered",
            "Restarting Deployment/prometheus -n monitoring because Secret/a changed",
        );
        let Write::Create { name } = c.observe(&deployment(), &first, t(0)) else {
            panic!("first is created")
        };
        assert_eq!(
            c.observe(&deployment(), &first, t(5)),
            Write::Bump {
                name: name.clone(),
                count: 2,
                first: t(0)
            }
        );
        let other = Record::normal(
            "RolloutTriggered",
            "Restarting Deployment/prometheus -n monitoring because Secret/b changed",
        );
        assert!(matches!(
            c.observe(&deployment(), &other, t(6)),
            Write::Create { .. }
        ));
        // After the window a repeat starts a new Event.
        assert!(matches!(
            c.observe(&deployment(), &first, t(5 + 601)),
            Write::Create { .. }
        ));
    }

    #[test]
    fn a_repeat_a_whole_window_later_is_a_new_event() {
        let mut c = Correlator::default();
        let record = Record::normal("Issued", "Certificate fetched from issuer successfully");
        assert!(matches!(
            c.observe(&deployment(), &record, t(0)),
            Write::Create { .. }
        ));
        let just_inside = t(600) - k8s_openapi::jiff::SignedDuration::from_millis(1);
        assert!(matches!(
            c.observe(&deployment(), &record, just_inside),
            Write::Bump { count: 2, .. }
        ));
        // The window counts from the last time it was seen.
        let Write::Create { .. } = c.observe(&deployment(), &record, just_inside + window()) else {
            panic!("a repeat a whole window after the last one is a new Event")
        };
    }

    fn window() -> k8s_openapi::jiff::SignedDuration {
        k8s_openapi::jiff::SignedDuration::try_from(AGGREGATION_WINDOW).expect("fits")
    }

    #[test]
    fn the_least_recently_seen_event_is_forgotten_past_the_limit() {
        let mut c = Correlator::default();
        let record = |i: usize| Record::normal("Issued", format!("request {i}"));
        let at = |ms: usize| {
            t(0) + k8s_openapi::jiff::SignedDuration::from_millis(i64::try_from(ms).unwrap_or(0))
        };
        for i in 0..MAX_REMEMBERED.get() {
            c.observe(&deployment(), &record(i), at(i));
        }
        // Event 0 was first in but is now the most recently seen, so event 1
        // is the one forgotten when one more arrives.
        let last = MAX_REMEMBERED.get();
        assert!(matches!(
            c.observe(&deployment(), &record(0), at(last)),
            Write::Bump { .. }
        ));
        c.observe(&deployment(), &record(last), at(last + 1));
        assert_eq!(c.seen.len(), MAX_REMEMBERED.get());
        assert!(matches!(
            c.observe(&deployment(), &record(0), at(last + 2)),
            Write::Bump { .. }
        ));
        assert!(matches!(
            c.observe(&deployment(), &record(1), at(last + 3)),
            Write::Create { .. }
        ));
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let cut = truncate(&long);
        assert!(cut.len() <= MAX_MESSAGE_BYTES);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
