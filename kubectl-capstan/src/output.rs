//! Output: kubectl-style tables (upper-case headers, columns three spaces
//! apart), JSON and YAML, and times as kubectl prints them. Pure.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::error::{Error, Result};

/// `-o`: how a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Human-readable tables (the default).
    #[default]
    Table,
    /// One JSON document.
    Json,
    /// One YAML document.
    Yaml,
}

/// Encodes `value` as JSON or YAML (with a trailing newline).
///
/// # Errors
/// When the value cannot be encoded.
pub fn encode<T: Serialize>(value: &T, format: Format) -> Result<String> {
    match format {
        Format::Json => serde_json::to_string_pretty(value)
            .map(|s| s + "\n")
            .map_err(|e| Error::Output(e.to_string())),
        Format::Yaml | Format::Table => {
            serde_norway::to_string(value).map_err(|e| Error::Output(e.to_string()))
        }
    }
}

/// A table as `kubectl get` prints one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers (printed upper-case).
    #[must_use]
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| h.to_uppercase()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells print as empty, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// Whether no row was added.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The text: each column as wide as its widest cell, three spaces
    /// between columns, no trailing spaces.
    #[must_use]
    pub fn render(&self) -> String {
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|i| {
                std::iter::once(&self.headers[i])
                    .chain(self.rows.iter().map(|r| &r[i]))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let mut out = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    out.push_str(cell);
                } else {
                    out.push_str(cell);
                    let pad = widths[i] - cell.chars().count() + 3;
                    out.push_str(&" ".repeat(pad));
                }
            }
            out.trim_end().to_owned() + "\n"
        };
        std::iter::once(line(&self.headers))
            .chain(self.rows.iter().map(|r| line(r)))
            .collect()
    }
}

/// A duration as kubectl's `HumanDuration` prints ages: `45s`, `3m20s`,
/// `25m`, `5h10m`, `30h`, `3d4h`, `12d`, `2y`.
#[must_use]
pub fn human(d: SignedDuration) -> String {
    let secs = d.as_secs().unsigned_abs();
    let (m, h, day) = (60, 3600, 86_400);
    if secs < 2 * m {
        format!("{secs}s")
    } else if secs < 10 * m {
        let s = secs % m;
        if s == 0 {
            format!("{}m", secs / m)
        } else {
            format!("{}m{s}s", secs / m)
        }
    } else if secs < 3 * h {
        format!("{}m", secs / m)
    } else if secs < 8 * h {
        let mins = (secs % h) / m;
        if mins == 0 {
            format!("{}h", secs / h)
        } else {
            format!("{}h{mins}m", secs / h)
        }
    } else if secs < 48 * h {
        format!("{}h", secs / h)
    } else if secs < 8 * day {
        let hours = (secs % day) / h;
        if hours == 0 {
            format!("{}d", secs / day)
        } else {
            format!("{}d{hours}h", secs / day)
        }
    } else if secs < 2 * 365 * day {
        format!("{}d", secs / day)
    } else {
        format!("{}y", secs / (365 * day))
    }
}

/// `when` relative to `now`: `in 5m` or `5m ago`.
#[must_use]
pub fn relative(when: Timestamp, now: Timestamp) -> String {
    let d = when.duration_since(now);
    if d.is_negative() {
        format!("{} ago", human(d))
    } else {
        format!("in {}", human(d))
    }
}

/// `when` as RFC 3339 (seconds), followed by `(in 5m)` / `(5m ago)`.
#[must_use]
pub fn at(when: Timestamp, now: Timestamp) -> String {
    format!("{} ({})", seconds(when), relative(when, now))
}

/// RFC 3339 to the second, as Kubernetes writes times.
#[must_use]
pub fn seconds(when: Timestamp) -> String {
    Timestamp::from_second(when.as_second()).map_or_else(|_| when.to_string(), |t| t.to_string())
}

/// A time from the `time` crate (capstan-pki's clock) as a [`Timestamp`].
#[must_use]
pub fn from_offset(t: time::OffsetDateTime) -> Timestamp {
    Timestamp::from_second(t.unix_timestamp()).unwrap_or(Timestamp::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_like_kubectl() {
        let mut t = Table::new(&["name", "ready"]);
        t.row(vec!["monitoring-ca".into(), "True".into()]);
        t.row(vec!["a".into()]);
        assert_eq!(
            t.render(),
            "NAME            READY\nmonitoring-ca   True\na\n"
        );
        assert!(!t.is_empty());
    }

    #[test]
    fn durations_read_as_kubectl_ages() {
        let s = SignedDuration::from_secs;
        assert_eq!(human(s(45)), "45s");
        assert_eq!(human(s(200)), "3m20s");
        assert_eq!(human(s(300)), "5m");
        assert_eq!(human(s(25 * 60)), "25m");
        assert_eq!(human(s(5 * 3600 + 600)), "5h10m");
        assert_eq!(human(s(30 * 3600)), "30h");
        assert_eq!(human(s(3 * 86_400 + 4 * 3600)), "3d4h");
        assert_eq!(human(s(400 * 86_400)), "400d");
        assert_eq!(human(s(3 * 365 * 86_400)), "3y");
        assert_eq!(human(s(-45)), "45s");
    }

    #[test]
    fn times_say_past_or_future() {
        let now = Timestamp::from_second(1_800_000_000).expect("time");
        let later = Timestamp::from_second(1_800_000_300).expect("time");
        assert_eq!(relative(later, now), "in 5m");
        assert_eq!(relative(now, later), "5m ago");
        assert_eq!(at(later, now), "2027-01-15T08:05:00Z (in 5m)");
        let nanos = Timestamp::new(1_800_000_000, 5).expect("time");
        assert_eq!(seconds(nanos), "2027-01-15T08:00:00Z");
    }

    #[test]
    fn json_and_yaml_encode() {
        let v = serde_json::json!({"a": 1});
        assert_eq!(
            encode(&v, Format::Json).expect("json"),
            "{\n  \"a\": 1\n}\n"
        );
        assert_eq!(encode(&v, Format::Yaml).expect("yaml"), "a: 1\n");
    }
}
