//! How a self-managed CA is kept in its Secret, and how rotation progress is
//! recorded there so that a restart resumes exactly where it stopped.
//!
//! ```text
//! type: kubernetes.io/tls
//! data:
//!   tls.crt, tls.key   the CA that signs now (cert-manager's CA issuer layout)
//!   ca.crt             the signing CA's certificate
//!   ca-bundle.crt      every CA clients must trust, newest first
//!   next.crt, next.key a published CA waiting out propagationDelay
//! annotations:
//!   capstan.dev/next-published-at   when next.crt entered the bundle
//!   capstan.dev/retired             JSON [{fingerprint, dropAfter}]
//!   capstan.dev/rotate-handled      last `capstan.dev/rotate` value acted on
//!   capstan.dev/last-rotation-time  when signing last switched CAs
//! ```
//!
//! The Secret has no owner reference on purpose: deleting and re-creating an
//! issuer (a Helm reinstall) must not destroy the root every client trusts.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;

use super::rotation::Retired;

/// The signing CA certificate.
pub const TLS_CRT: &str = "tls.crt";
/// The signing CA private key.
pub const TLS_KEY: &str = "tls.key";
/// The signing CA certificate again, where cert-manager users look for it.
pub const CA_CRT: &str = "ca.crt";
/// Every trusted CA, newest first.
pub const CA_BUNDLE: &str = "ca-bundle.crt";
/// A published CA that does not sign yet.
pub const NEXT_CRT: &str = "next.crt";
/// The private key of [`NEXT_CRT`].
pub const NEXT_KEY: &str = "next.key";

/// When the next CA entered the bundle.
pub const NEXT_PUBLISHED_AT: &str = "capstan.dev/next-published-at";
/// Retired CAs and when each may leave the bundle.
pub const RETIRED: &str = "capstan.dev/retired";
/// The last manual trigger value acted on.
pub const ROTATE_HANDLED: &str = "capstan.dev/rotate-handled";
/// When signing last switched CAs.
pub const LAST_ROTATION_TIME: &str = "capstan.dev/last-rotation-time";
/// The annotation on an issuer that starts a rotation when its value changes.
pub const ROTATE_TRIGGER: &str = "capstan.dev/rotate";
/// Label marking Secrets capstan manages.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "capstan";

/// Rotation progress as recorded in the Secret's annotations.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// When `next.crt` was published; `None` when no rotation is under way.
    pub next_published_at: Option<Timestamp>,
    /// Retired CAs still in the bundle.
    pub retired: Vec<Retired>,
    /// The last manual trigger acted on.
    pub rotate_handled: Option<String>,
    /// When signing last switched CAs.
    pub last_rotation_time: Option<Timestamp>,
}

/// An annotation that cannot be read; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CA Secret annotation {annotation}: {problem}")]
pub struct RecordError {
    /// The annotation key.
    pub annotation: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

fn timestamp(
    annotations: &BTreeMap<String, String>,
    key: &'static str,
) -> Result<Option<Timestamp>, RecordError> {
    annotations
        .get(key)
        .map(|v| {
            v.parse::<Timestamp>().map_err(|e| RecordError {
                annotation: key,
                problem: format!("{v:?} is not an RFC 3339 time: {e}"),
            })
        })
        .transpose()
}

/// Reads the record from a Secret's annotations.
///
/// # Errors
/// When an annotation capstan wrote has been corrupted.
pub fn read(annotations: &BTreeMap<String, String>) -> Result<Record, RecordError> {
    let retired = match annotations.get(RETIRED) {
        None => Vec::new(),
        Some(text) => serde_json::from_str(text).map_err(|e| RecordError {
            annotation: RETIRED,
            problem: format!("not a list of retired CAs: {e}"),
        })?,
    };
    Ok(Record {
        next_published_at: timestamp(annotations, NEXT_PUBLISHED_AT)?,
        retired,
        rotate_handled: annotations.get(ROTATE_HANDLED).cloned(),
        last_rotation_time: timestamp(annotations, LAST_ROTATION_TIME)?,
    })
}

/// The annotations that record `record`: every key of this module, with
/// `None` for the ones to remove (a merge patch deletes them).
#[must_use]
pub fn write(record: &Record) -> BTreeMap<&'static str, Option<String>> {
    let retired = (!record.retired.is_empty())
        .then(|| serde_json::to_string(&record.retired).unwrap_or_else(|_| "[]".to_owned()));
    BTreeMap::from([
        (
            NEXT_PUBLISHED_AT,
            record.next_published_at.map(|t| t.to_string()),
        ),
        (RETIRED, retired),
        (ROTATE_HANDLED, record.rotate_handled.clone()),
        (
            LAST_ROTATION_TIME,
            record.last_rotation_time.map(|t| t.to_string()),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_767_225_600 + secs).expect("valid")
    }

    #[test]
    fn round_trips_through_annotations() {
        let record = Record {
            next_published_at: Some(t(60)),
            retired: vec![Retired {
                fingerprint: "ab".into(),
                drop_after: t(600),
            }],
            rotate_handled: Some("drill-1".into()),
            last_rotation_time: Some(t(30)),
        };
        let annotations: BTreeMap<String, String> = write(&record)
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
            .collect();
        assert_eq!(
            annotations[RETIRED],
            r#"[{"fingerprint":"ab","dropAfter":"2026-01-01T00:10:00Z"}]"#
        );
        assert_eq!(read(&annotations), Ok(record));
    }

    #[test]
    fn empty_record_removes_every_annotation() {
        assert!(write(&Record::default()).values().all(Option::is_none));
        assert_eq!(read(&BTreeMap::new()), Ok(Record::default()));
    }

    #[test]
    fn corrupted_annotations_are_named() {
        let bad = BTreeMap::from([(NEXT_PUBLISHED_AT.to_owned(), "yesterday".to_owned())]);
        let err = read(&bad).expect_err("not a time");
        assert_eq!(err.annotation, NEXT_PUBLISHED_AT);
        let bad = BTreeMap::from([(RETIRED.to_owned(), "{".to_owned())]);
        assert_eq!(read(&bad).expect_err("not json").annotation, RETIRED);
    }
}
