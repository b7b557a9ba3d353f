//! Watches: newline-delimited JSON events streamed with chunked encoding,
//! one flush per event; resourceVersion semantics, `sendInitialEvents`,
//! BOOKMARK events, `timeoutSeconds`, 410 Expired as an ERROR event (as the
//! watch cache answers), selectors applied to both sides of a change.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use futures::SinkExt as _;
use http::Response;
use hyper::body::Bytes;
use serde_json::{Value, json};

use super::faults::WatchCut;
use super::handlers::{Filter, render_one};
use super::request::{Output, Query, ResourcePath};
use super::resources::ResourceType;
use super::response;
use super::server::ServerState;
use super::status::{self, ApiResult};
use super::store::{EventType, StoreEvent};

/// The annotation on the BOOKMARK that ends the initial events of a
/// streaming list.
pub const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// Default watch length when the client gives no `timeoutSeconds`
/// (kube-apiserver's `--min-request-timeout`).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// One watch event line, `{"type":...,"object":...}`, with `type` first as
/// kube-apiserver writes it (clients that read the tag first can decode the
/// object without buffering it).
fn frame(kind: &str, object: &Value) -> Bytes {
    let mut b = Vec::with_capacity(256);
    b.extend_from_slice(b"{\"type\":");
    // Neither write can fail: both are plain JSON values into a Vec.
    let _ = serde_json::to_writer(&mut b, kind);
    b.extend_from_slice(b",\"object\":");
    let _ = serde_json::to_writer(&mut b, object);
    b.extend_from_slice(b"}\n");
    Bytes::from(b)
}

fn bookmark(rt: &ResourceType, output: Output, rv: u64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_end {
        meta["annotations"] = json!({INITIAL_EVENTS_END: "true"});
    }
    match output {
        Output::Metadata => {
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta})
        }
        _ => json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": meta}),
    }
}

/// How a stored change looks through the watch's selectors.
fn visible(
    ev: &StoreEvent,
    filter: &Filter,
    ns: Option<&str>,
) -> Option<(&'static str, Arc<Value>)> {
    if ns.is_some_and(|n| ev.key.0 != n) {
        return None;
    }
    let now = filter.matches(&ev.object);
    let before = ev.prev.as_ref().is_some_and(|p| filter.matches(p));
    match ev.kind {
        EventType::Added if now => Some(("ADDED", ev.object.clone())),
        EventType::Modified => match (before, now) {
            (true, true) => Some(("MODIFIED", ev.object.clone())),
            (false, true) => Some(("ADDED", ev.object.clone())),
            (true, false) => Some(("DELETED", ev.object.clone())),
            (false, false) => None,
        },
        EventType::Deleted if before || now => Some(("DELETED", ev.object.clone())),
        _ => None,
    }
}

/// Starts a watch and streams it; `cut` (fault injection) may end it
/// early, after some events or some time.
pub fn serve(
    state: &Arc<ServerState>,
    rp: &ResourcePath,
    query: &Query,
    output: Output,
    cut: WatchCut,
) -> ApiResult<Response<Body>> {
    let rt = rp.rt.clone();
    let filter = Filter::new(&rt, query, rp.name.as_deref())?;
    let send_initial = match query.get("sendInitialEvents") {
        Some("true") => {
            if query.get("resourceVersionMatch") != Some("NotOlderThan") {
                return Err(status::invalid(
                    "ListOptions",
                    "meta.k8s.io",
                    "",
                    &[("resourceVersionMatch", "FieldValueForbidden", "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan".into())],
                ));
            }
            if !query.flag("allowWatchBookmarks") {
                return Err(status::invalid(
                    "ListOptions",
                    "meta.k8s.io",
                    "",
                    &[(
                        "allowWatchBookmarks",
                        "FieldValueForbidden",
                        "Forbidden: allowWatchBookmarks must be true when sendInitialEvents is set"
                            .into(),
                    )],
                ));
            }
            true
        }
        _ => false,
    };
    let rv = query.get("resourceVersion");
    let from = match rv {
        None | Some("0") => None,
        Some(s) => Some(s.parse::<u64>().map_err(|_| {
            status::bad_request(format!("resourceVersion: Invalid value: \"{s}\""))
        })?),
    };
    let timeout = query
        .get("timeoutSeconds")
        .map(|t| {
            t.parse::<u64>()
                .map(Duration::from_secs)
                .map_err(|_| status::bad_request(format!("timeoutSeconds: Invalid value: \"{t}\"")))
        })
        .transpose()?
        .filter(|t| !t.is_zero())
        .unwrap_or(DEFAULT_TIMEOUT);
    let bookmarks = query.flag("allowWatchBookmarks");
    let gr = (rt.storage_group.clone(), rt.storage_resource.clone());
    let ns = rp.namespace.clone();
    let store_from = if send_initial { None } else { from };
    let start = state.store.watch(&gr, store_from, ns.as_deref());
    let cut_after = cut.after_events;
    let (mut tx, rx) =
        futures::channel::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(64);
    let st = state.clone();
    let query = query.clone();
    state.tasks.spawn(async move {
        let mut sent: u64 = 0;
        let mut start = match start {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(Ok(frame("ERROR", &e.body))).await;
                return;
            }
        };
        let deadline = tokio::time::Instant::now() + cut.after.map_or(timeout, |c| c.min(timeout));
        let mut last_rv = start.rv;
        let render = |o: &Value| render_one(&rt, o, output, &query);
        macro_rules! emit {
            ($kind:expr, $obj:expr) => {{
                if tx.send(Ok(frame($kind, $obj))).await.is_err() {
                    return;
                }
                sent += 1;
                if cut_after.is_some_and(|n| sent >= n) {
                    return;
                }
            }};
        }
        for o in std::mem::take(&mut start.initial) {
            if filter.matches(&o) && ns.as_deref().is_none_or(|n| o.pointer("/metadata/namespace").and_then(Value::as_str) == Some(n)) {
                emit!("ADDED", &render(&o));
            }
        }
        if send_initial {
            emit!("BOOKMARK", &bookmark(&rt, output, start.rv, true));
        }
        for ev in std::mem::take(&mut start.replay) {
            last_rv = last_rv.max(ev.rv);
            if let Some((k, o)) = visible(&ev, &filter, ns.as_deref()) {
                emit!(k, &render(&o));
            }
        }
        let skip_through = from.unwrap_or(0);
        let mut ticker = tokio::time::interval(st.bookmark_interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = st.shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => return,
                ev = start.rx.recv() => {
                    let Some(ev) = ev else { return };
                    if ev.rv <= skip_through && !send_initial {
                        continue;
                    }
                    last_rv = last_rv.max(ev.rv);
                    if let Some((k, o)) = visible(&ev, &filter, ns.as_deref()) {
                        emit!(k, &render(&o));
                    }
                }
                _ = ticker.tick(), if bookmarks => {
                    let current = st.store.current_rv();
                    while let Ok(ev) = start.rx.try_recv() {
                        last_rv = last_rv.max(ev.rv);
                        if let Some((k, o)) = visible(&ev, &filter, ns.as_deref()) {
                            emit!(k, &render(&o));
                        }
                    }
                    let rv = current.max(last_rv).max(skip_through);
                    if tx.send(Ok(frame("BOOKMARK", &bookmark(&rt, output, rv, false)))).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut resp = response::bytes(200, Vec::new(), &[]);
    *resp.body_mut() = Body::from_stream(rx);
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_one_json_line_with_the_type_first() {
        let line = frame("ADDED", &json!({"metadata": {"name": "a\"b"}}));
        let text = std::str::from_utf8(&line).expect("utf-8");
        assert!(
            text.starts_with("{\"type\":\"ADDED\",\"object\":"),
            "{text}"
        );
        assert!(text.ends_with("}\n") && !text[..text.len() - 1].contains('\n'));
        let parsed: Value = serde_json::from_str(text).expect("valid JSON");
        assert_eq!(parsed["object"]["metadata"]["name"], "a\"b");
    }
}
