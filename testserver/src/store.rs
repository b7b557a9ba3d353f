//! The in-memory object store: objects by (group, resource, namespace, name),
//! one global resourceVersion counter, a bounded history of changes (which
//! also lets a list be served at an older resourceVersion) and the fan-out of
//! changes to watchers.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::mpsc;

use super::persist::Persister;
use super::status::{self, ApiResult};

/// (storage group, storage resource).
pub type Gr = (String, String);
/// (namespace or `""`, name).
pub type ObjKey = (String, String);

/// Watch event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Object created.
    Added,
    /// Object changed.
    Modified,
    /// Object removed.
    Deleted,
}

impl EventType {
    /// `ADDED`, `MODIFIED`, `DELETED`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed change.
#[derive(Debug)]
pub struct StoreEvent {
    /// The resourceVersion the change was committed at.
    pub rv: u64,
    /// Which resource.
    pub gr: Gr,
    /// Which object.
    pub key: ObjKey,
    /// What happened.
    pub kind: EventType,
    /// The object after the change (for deletes: its last state).
    pub object: Arc<Value>,
    /// The object before the change.
    pub prev: Option<Arc<Value>>,
}

/// What a write decides to do with the object.
pub enum Write {
    /// Store this object.
    Put(Value),
    /// Remove the object; the value is its last state.
    Delete(Value),
}

/// A page of a list.
pub struct ListPage {
    /// The resourceVersion the list was served at.
    pub rv: u64,
    /// Matching objects in key order.
    pub items: Vec<Arc<Value>>,
    /// The last key returned when more items remain.
    pub next: Option<ObjKey>,
    /// How many matching items follow the page.
    pub remaining: usize,
}

/// The start of a watch.
pub struct WatchStart {
    /// Current objects for a watch without a resourceVersion (sent as ADDED).
    pub initial: Vec<Arc<Value>>,
    /// Events after the requested resourceVersion.
    pub replay: Vec<Arc<StoreEvent>>,
    /// Subsequent events.
    pub rx: mpsc::UnboundedReceiver<Arc<StoreEvent>>,
    /// The resourceVersion when the watch started.
    pub rv: u64,
}

struct WatchSub {
    gr: Gr,
    tx: mpsc::UnboundedSender<Arc<StoreEvent>>,
}

struct Inner {
    rv: u64,
    objects: HashMap<Gr, BTreeMap<ObjKey, Arc<Value>>>,
    history: VecDeque<Arc<StoreEvent>>,
    /// Every event at or below this resourceVersion has left the history.
    evicted_through: u64,
    limit: usize,
    watchers: Vec<WatchSub>,
    persist: Option<Persister>,
}

/// The store.
pub struct Store {
    inner: Mutex<Inner>,
}

fn without_volatile(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        if let Some(mf) = m.get_mut("managedFields").and_then(Value::as_array_mut) {
            for e in mf {
                if let Some(e) = e.as_object_mut() {
                    e.remove("time");
                }
            }
        }
    }
    v
}

/// Sets `metadata.resourceVersion`.
pub fn set_rv(obj: &mut Value, rv: u64) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

impl Store {
    /// An empty store (or the one persisted in `persist`) keeping `limit` events.
    pub fn new(limit: usize, persist: Option<Persister>) -> anyhow::Result<Self> {
        let mut inner = Inner {
            rv: 1,
            objects: HashMap::new(),
            history: VecDeque::new(),
            evicted_through: 1,
            limit: limit.max(1),
            watchers: Vec::new(),
            persist: None,
        };
        if let Some(p) = &persist {
            let (rv, objects) = p.load()?;
            for (gr, key, obj) in objects {
                inner
                    .objects
                    .entry(gr)
                    .or_default()
                    .insert(key, Arc::new(obj));
            }
            inner.rv = rv.max(1);
            inner.evicted_through = inner.rv;
        }
        inner.persist = persist;
        Ok(Self {
            inner: Mutex::new(inner),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    /// The oldest resourceVersion a watch or list can still start from.
    pub fn oldest_rv(&self) -> u64 {
        self.lock().evicted_through
    }

    /// One object.
    pub fn get(&self, gr: &Gr, key: &ObjKey) -> Option<Arc<Value>> {
        self.lock()
            .objects
            .get(gr)
            .and_then(|m| m.get(key))
            .cloned()
    }

    /// Every object of a resource (optionally in one namespace), unfiltered.
    pub fn all(&self, gr: &Gr, ns: Option<&str>) -> Vec<Arc<Value>> {
        let g = self.lock();
        let Some(m) = g.objects.get(gr) else {
            return Vec::new();
        };
        match ns {
            Some(ns) => m
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, v)| v.clone())
                .collect(),
            None => m.values().cloned().collect(),
        }
    }

    /// Whether any object of any resource lives in the namespace.
    pub fn namespace_has_objects(&self, ns: &str) -> bool {
        let g = self.lock();
        g.objects.iter().any(|(_, m)| {
            m.range((ns.to_string(), String::new())..)
                .next()
                .is_some_and(|((n, _), _)| n == ns)
        })
    }

    /// The resources with objects in a namespace.
    pub fn resources_in_namespace(&self, ns: &str) -> Vec<Gr> {
        let g = self.lock();
        g.objects
            .iter()
            .filter(|(_, m)| {
                m.range((ns.to_string(), String::new())..)
                    .next()
                    .is_some_and(|((n, _), _)| n == ns)
            })
            .map(|(gr, _)| gr.clone())
            .collect()
    }

    /// Objects naming `uid` in their ownerReferences, with whether any of
    /// their other owners still exist.
    pub fn dependents_of(&self, uid: &str) -> Vec<(Gr, Arc<Value>, bool)> {
        let g = self.lock();
        let owner_uids = |o: &Value| -> Vec<String> {
            o.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|r| r["uid"].as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut found: Vec<(Gr, Arc<Value>, Vec<String>)> = Vec::new();
        for (gr, m) in &g.objects {
            for o in m.values() {
                let owners = owner_uids(o);
                if owners.iter().any(|u| u == uid) {
                    found.push((gr.clone(), o.clone(), owners));
                }
            }
        }
        if found.is_empty() {
            return Vec::new();
        }
        let others: std::collections::HashSet<&String> = found
            .iter()
            .flat_map(|(_, _, owners)| owners.iter())
            .filter(|u| *u != uid)
            .collect();
        let mut alive = std::collections::HashSet::new();
        if !others.is_empty() {
            for m in g.objects.values() {
                for o in m.values() {
                    if let Some(u) = o.pointer("/metadata/uid").and_then(Value::as_str)
                        && others.contains(&u.to_string())
                    {
                        alive.insert(u.to_string());
                    }
                }
            }
        }
        found
            .into_iter()
            .map(|(gr, o, owners)| {
                let other_alive = owners.iter().any(|u| u != uid && alive.contains(u));
                (gr, o, other_alive)
            })
            .collect()
    }

    /// Reads the current object and writes what `f` decides, atomically.
    /// An unchanged object (ignoring managedFields times) is not written and
    /// keeps its resourceVersion, as in Kubernetes. Returns the stored object
    /// and the event type (`None` when nothing changed).
    pub fn write(
        &self,
        gr: &Gr,
        key: &ObjKey,
        dry_run: bool,
        f: impl FnOnce(Option<&Arc<Value>>) -> ApiResult<Write>,
    ) -> ApiResult<(Arc<Value>, Option<EventType>)> {
        let mut g = self.lock();
        let cur = g.objects.get(gr).and_then(|m| m.get(key)).cloned();
        let decision = f(cur.as_ref())?;
        match decision {
            Write::Put(mut v) => {
                if let Some(c) = &cur
                    && without_volatile(c) == without_volatile(&v)
                {
                    return Ok((c.clone(), None));
                }
                if dry_run {
                    match &cur {
                        Some(c) => {
                            let rv = c
                                .pointer("/metadata/resourceVersion")
                                .cloned()
                                .unwrap_or(Value::Null);
                            v["metadata"]["resourceVersion"] = rv;
                        }
                        None => {
                            if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                                m.remove("resourceVersion");
                            }
                        }
                    }
                    let kind = if cur.is_some() {
                        EventType::Modified
                    } else {
                        EventType::Added
                    };
                    return Ok((Arc::new(v), Some(kind)));
                }
                let rv = g.rv + 1;
                set_rv(&mut v, rv);
                let obj = Arc::new(v);
                let kind = if cur.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                g.commit(gr, key, kind, obj.clone(), cur)?;
                Ok((obj, Some(kind)))
            }
            Write::Delete(mut v) => {
                if dry_run {
                    return Ok((Arc::new(v), Some(EventType::Deleted)));
                }
                let rv = g.rv + 1;
                set_rv(&mut v, rv);
                let obj = Arc::new(v);
                g.commit(gr, key, EventType::Deleted, obj.clone(), cur)?;
                Ok((obj, Some(EventType::Deleted)))
            }
        }
    }

    /// A page of objects at resourceVersion `at` (current when `None`),
    /// after `start_after`, filtered, at most `limit` (0: no limit).
    pub fn list(
        &self,
        gr: &Gr,
        ns: Option<&str>,
        at: Option<u64>,
        start_after: Option<&ObjKey>,
        limit: usize,
        filter: &dyn Fn(&Value) -> bool,
    ) -> ApiResult<ListPage> {
        let g = self.lock();
        let rv = at.unwrap_or(g.rv);
        if rv > g.rv {
            return Err(status::ApiError::with_details(
                504,
                "Timeout",
                format!("Too large resource version: {rv}, current: {}", g.rv),
                Some(
                    serde_json::json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}),
                ),
            ));
        }
        let empty = BTreeMap::new();
        let live = g.objects.get(gr).unwrap_or(&empty);
        let in_range =
            |k: &ObjKey| ns.is_none_or(|n| k.0 == n) && start_after.is_none_or(|s| k > s);
        let mut page = ListPage {
            rv,
            items: Vec::new(),
            next: None,
            remaining: 0,
        };
        let push = |k: &ObjKey, v: &Arc<Value>, page: &mut ListPage| {
            if !filter(v) {
                return;
            }
            if limit > 0 && page.items.len() >= limit {
                page.remaining += 1;
            } else {
                page.items.push(v.clone());
                page.next = Some(k.clone());
            }
        };
        if rv == g.rv {
            let start = match (start_after, ns) {
                (Some(s), _) => std::ops::Bound::Excluded(s.clone()),
                (None, Some(n)) => std::ops::Bound::Included((n.to_string(), String::new())),
                (None, None) => std::ops::Bound::Unbounded,
            };
            for (k, v) in live.range((start, std::ops::Bound::Unbounded)) {
                if ns.is_some_and(|n| k.0 != n) {
                    break;
                }
                push(k, v, &mut page);
            }
        } else {
            if rv < g.evicted_through {
                return Err(status::too_old(rv, g.evicted_through));
            }
            let mut snap: BTreeMap<ObjKey, Arc<Value>> = live
                .iter()
                .filter(|(k, _)| in_range(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for ev in g.history.iter().rev().take_while(|e| e.rv > rv) {
                if ev.gr != *gr || !in_range(&ev.key) {
                    continue;
                }
                match &ev.prev {
                    Some(p) => {
                        snap.insert(ev.key.clone(), p.clone());
                    }
                    None => {
                        snap.remove(&ev.key);
                    }
                }
            }
            for (k, v) in &snap {
                push(k, v, &mut page);
            }
        }
        if page.remaining == 0 {
            page.next = None;
        }
        Ok(page)
    }

    /// Starts a watch: from `from` (replaying later events; 410 when they
    /// left the history) or, with `None`, from the current objects.
    pub fn watch(&self, gr: &Gr, from: Option<u64>, ns: Option<&str>) -> ApiResult<WatchStart> {
        let mut g = self.lock();
        let (tx, rx) = mpsc::unbounded_channel();
        let mut start = WatchStart {
            initial: Vec::new(),
            replay: Vec::new(),
            rx,
            rv: g.rv,
        };
        match from {
            None => {
                if let Some(m) = g.objects.get(gr) {
                    start.initial = m
                        .iter()
                        .filter(|(k, _)| ns.is_none_or(|n| k.0 == n))
                        .map(|(_, v)| v.clone())
                        .collect();
                }
            }
            Some(from) if from < g.rv => {
                if from < g.evicted_through {
                    return Err(status::too_old(from, g.evicted_through));
                }
                let mut replay: Vec<Arc<StoreEvent>> = g
                    .history
                    .iter()
                    .rev()
                    .take_while(|e| e.rv > from)
                    .filter(|e| e.gr == *gr)
                    .cloned()
                    .collect();
                replay.reverse();
                start.replay = replay;
            }
            Some(_) => {}
        }
        g.watchers.push(WatchSub { gr: gr.clone(), tx });
        Ok(start)
    }

    /// Number of events kept.
    pub fn set_history_limit(&self, limit: usize) {
        self.lock().limit = limit.max(1);
    }
}

impl Inner {
    fn commit(
        &mut self,
        gr: &Gr,
        key: &ObjKey,
        kind: EventType,
        obj: Arc<Value>,
        prev: Option<Arc<Value>>,
    ) -> ApiResult<()> {
        let rv = self.rv + 1;
        if let Some(p) = &self.persist {
            let stored = if kind == EventType::Deleted {
                None
            } else {
                Some(obj.as_ref())
            };
            p.save(gr, key, stored, rv)
                .map_err(|e| status::internal(format!("persisting: {e:#}")))?;
        }
        self.rv = rv;
        match kind {
            EventType::Deleted => {
                if let Some(m) = self.objects.get_mut(gr) {
                    m.remove(key);
                }
            }
            _ => {
                self.objects
                    .entry(gr.clone())
                    .or_default()
                    .insert(key.clone(), obj.clone());
            }
        }
        let ev = Arc::new(StoreEvent {
            rv,
            gr: gr.clone(),
            key: key.clone(),
            kind,
            object: obj,
            prev,
        });
        self.history.push_back(ev.clone());
        while self.history.len() > self.limit {
            if let Some(old) = self.history.pop_front() {
                self.evicted_through = old.rv;
            }
        }
        self.watchers.retain(|w| {
            if w.tx.is_closed() {
                return false;
            }
            if w.gr == *gr {
                w.tx.send(ev.clone()).is_ok()
            } else {
                true
            }
        });
        Ok(())
    }
}

static RNG: AtomicU64 = AtomicU64::new(0);

/// A pseudo-random number (splitmix64 over a time-seeded counter); not for
/// cryptography, only uids, names and fault dice.
pub fn random_u64() -> u64 {
    if RNG.load(Ordering::Relaxed) == 0 {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let _ = RNG.compare_exchange(0, t | 1, Ordering::Relaxed, Ordering::Relaxed);
    }
    let mut z = RNG
        .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A random RFC 4122 version-4 UUID string.
pub fn new_uid() -> String {
    let a = random_u64();
    let b = random_u64();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        ((b >> 48) & 0x3fff) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// Five random characters from the alphabet kube uses for generateName.
pub fn name_suffix() -> String {
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHA[(random_u64() % ALPHA.len() as u64) as usize] as char)
        .collect()
}

/// Now as an RFC 3339 timestamp with second precision (`metav1.Time`).
pub fn now_rfc3339() -> String {
    format_time(SystemTime::now(), false)
}

/// Now with microseconds (`metav1.MicroTime`).
pub fn now_micro() -> String {
    format_time(SystemTime::now(), true)
}

/// Formats a time as kube does.
pub fn format_time(t: SystemTime, micro: bool) -> String {
    let ts = k8s_openapi::jiff::Timestamp::try_from(t)
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    if micro {
        ts.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
    } else {
        ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gr() -> Gr {
        (String::new(), "configmaps".into())
    }

    fn put(s: &Store, name: &str, v: i64) -> u64 {
        let (o, _) = s
            .write(&gr(), &("ns".into(), name.into()), false, |_| {
                Ok(Write::Put(json!({"metadata": {"name": name, "namespace": "ns"}, "data": {"v": v.to_string()}})))
            })
            .unwrap();
        o["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn lists_at_an_older_resource_version_by_undoing_history() {
        let s = Store::new(100, None).unwrap();
        let rv1 = put(&s, "a", 1);
        put(&s, "b", 1);
        put(&s, "a", 2);
        let page = s.list(&gr(), None, Some(rv1), None, 0, &|_| true).unwrap();
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.items[0]["data"]["v"], "1");
        let now = s.list(&gr(), Some("ns"), None, None, 1, &|_| true).unwrap();
        assert_eq!(now.items.len(), 1);
        assert_eq!(now.remaining, 1);
    }

    #[test]
    fn unchanged_writes_keep_the_resource_version() {
        let s = Store::new(100, None).unwrap();
        let a = put(&s, "a", 1);
        assert_eq!(put(&s, "a", 1), a);
    }

    #[test]
    fn watch_from_evicted_version_is_gone() {
        let s = Store::new(2, None).unwrap();
        let first = put(&s, "a", 1);
        put(&s, "a", 2);
        put(&s, "a", 3);
        put(&s, "a", 4);
        let err = s.watch(&gr(), Some(first), None).err().unwrap();
        assert_eq!(err.code, 410);
        assert!(err.message().starts_with("too old resource version"));
    }

    #[test]
    fn uids_look_like_uuids() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_ne!(u, new_uid());
    }
}
