//! The events table, laid out as `kubectl get events -A` lays it out.

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;

/// When an event last happened, as Kubernetes records it in one of three
/// places depending on the writer.
fn last_seen(e: &Event) -> Option<Timestamp> {
    e.series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
        .or_else(|| e.last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// A short age like kubectl's (`12s`, `3m`, `2h`).
fn age(then: Option<Timestamp>, now: Timestamp) -> String {
    let Some(then) = then else {
        return "<unknown>".into();
    };
    let secs = now.duration_since(then).as_secs().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s => format!("{}h", s / 3600),
    }
}

/// Renders `events`, oldest first, with kubectl's columns.
#[must_use]
pub fn render(mut events: Vec<Event>, now: Timestamp) -> String {
    events.sort_by_key(last_seen);
    let rows: Vec<[String; 6]> = events
        .iter()
        .map(|e| {
            let object = format!(
                "{}/{}",
                e.involved_object
                    .kind
                    .clone()
                    .unwrap_or_default()
                    .to_lowercase(),
                e.involved_object.name.clone().unwrap_or_default()
            );
            [
                e.metadata.namespace.clone().unwrap_or_default(),
                age(last_seen(e), now),
                e.type_.clone().unwrap_or_default(),
                e.reason.clone().unwrap_or_default(),
                object,
                e.message.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let header = [
        "NAMESPACE",
        "LAST SEEN",
        "TYPE",
        "REASON",
        "OBJECT",
        "MESSAGE",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    #[test]
    fn columns_line_up_like_kubectl() {
        let now = Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                namespace: Some("monitoring".into()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                kind: Some("Deployment".into()),
                name: Some("prometheus".into()),
                ..ObjectReference::default()
            },
            type_: Some("Normal".into()),
            reason: Some("RolloutTriggered".into()),
            message: Some("Restarting Deployment/prometheus -n monitoring".into()),
            last_timestamp: Some(Time(now)),
            ..Event::default()
        };
        let text = render(vec![event], now);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAMESPACE    LAST SEEN   TYPE     REASON"));
        assert!(lines[1].contains("deployment/prometheus"), "{text}");
        assert_eq!(lines[0].find("REASON"), lines[1].find("RolloutTriggered"));
    }
}
