//! Content hashes: what `capstan.dev/config-hash` is made of.
//!
//! Every field is length-prefixed (8-byte big-endian length, then the bytes),
//! so no two different contents share an input: `{"ab": "c"}` and
//! `{"a": "bc"}` hash differently, as they would not with plain
//! concatenation — nor with the Cluster Monitoring Operator's FNV over values
//! alone, which also ignores key names.
//!
//! * [`object_digest`] — SHA-256 over one object's kind, key names and values
//!   (ConfigMap `data` and `binaryData` are told apart);
//! * [`config_hash`] — SHA-256 over the kind, name and digest of every source
//!   a workload is restarted for, in a stable order; a missing source counts
//!   as such, so its creation rolls the workload too;
//! * [`counted`] — which of those sources go into the hash: only the ones
//!   that trigger the workload ([`Watched::triggers`]), so an ignored (or, in
//!   search mode, unmatched) source's content never rolls it.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use ring::digest::{Context, SHA256};

use kube::ResourceExt;

use super::sources::{Marks, SourceKind, SourceRef, Watched};

fn field(ctx: &mut Context, bytes: &[u8]) {
    let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    ctx.update(&len.to_be_bytes());
    ctx.update(bytes);
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The digest of one object's content. `sections` are named maps of key to
/// value: `data` for a Secret; `data` and `binaryData` for a ConfigMap.
#[must_use]
pub fn object_digest(kind: SourceKind, sections: &[(&str, &BTreeMap<String, Vec<u8>>)]) -> String {
    let mut ctx = Context::new(&SHA256);
    field(&mut ctx, kind.as_str().as_bytes());
    for (section, entries) in sections {
        field(&mut ctx, section.as_bytes());
        field(
            &mut ctx,
            &u64::try_from(entries.len())
                .unwrap_or(u64::MAX)
                .to_be_bytes(),
        );
        for (key, value) in *entries {
            field(&mut ctx, key.as_bytes());
            field(&mut ctx, value);
        }
    }
    hex(ctx.finish().as_ref())
}

fn bytes(map: Option<BTreeMap<String, ByteString>>) -> BTreeMap<String, Vec<u8>> {
    map.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

/// The digest of a Secret's `data`; the content itself is dropped.
#[must_use]
pub fn secret_digest(secret: Secret) -> String {
    object_digest(SourceKind::Secret, &[("data", &bytes(secret.data))])
}

/// The digest of a ConfigMap's `data` and `binaryData`, told apart; the
/// content itself is dropped.
#[must_use]
pub fn config_map_digest(config_map: ConfigMap) -> String {
    let data: BTreeMap<String, Vec<u8>> = config_map
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    let binary = bytes(config_map.binary_data);
    object_digest(
        SourceKind::ConfigMap,
        &[("data", &data), ("binaryData", &binary)],
    )
}

/// A Secret or ConfigMap as read: its content digest and its [`Marks`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// [`secret_digest`] or [`config_map_digest`] of it.
    pub digest: String,
    /// What its own annotations say about restarts.
    pub marks: Marks,
}

/// A Secret reduced to its [`Read`]: marks, then [`secret_digest`].
#[must_use]
pub fn secret_read(secret: Secret) -> Read {
    let marks = Marks::of(secret.annotations());
    Read {
        digest: secret_digest(secret),
        marks,
    }
}

/// A ConfigMap reduced to its [`Read`]: marks, then [`config_map_digest`].
#[must_use]
pub fn config_map_read(config_map: ConfigMap) -> Read {
    let marks = Marks::of(config_map.annotations());
    Read {
        digest: config_map_digest(config_map),
        marks,
    }
}

/// The sources that count in a workload's hash, with their digests: each
/// watched source that triggers it given its marks as `read` (`None`: the
/// source does not exist, which has no marks; a source not read at all is
/// taken as missing). Feed the result to [`config_hash`].
#[must_use]
pub fn counted<'a>(
    watched: &Watched,
    read: impl Fn(&SourceRef) -> Option<&'a Read>,
) -> BTreeMap<SourceRef, Option<String>> {
    watched
        .sources()
        .filter_map(|s| {
            let r = read(s);
            let marks = r.map_or_else(Marks::default, |r| r.marks);
            watched
                .triggers(s, marks)
                .then(|| (s.clone(), r.map(|r| r.digest.clone())))
        })
        .collect()
}

/// The hash a workload's pod template carries: over each source's kind,
/// name and content digest (`None` for a source that does not exist).
#[must_use]
pub fn config_hash(sources: &BTreeMap<SourceRef, Option<String>>) -> String {
    let mut ctx = Context::new(&SHA256);
    for (source, digest) in sources {
        field(&mut ctx, source.kind.as_str().as_bytes());
        field(&mut ctx, source.name.as_bytes());
        match digest {
            Some(d) => field(&mut ctx, d.as_bytes()),
            None => field(&mut ctx, b"<absent>"),
        }
    }
    hex(ctx.finish().as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn key_boundaries_matter() {
        let a = object_digest(SourceKind::Secret, &[("data", &map(&[("ab", "c")]))]);
        let b = object_digest(SourceKind::Secret, &[("data", &map(&[("a", "bc")]))]);
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn kind_and_section_matter_but_order_of_insertion_does_not() {
        let data = map(&[("k", "v")]);
        let empty = BTreeMap::new();
        let secret = object_digest(SourceKind::Secret, &[("data", &data)]);
        let cm = object_digest(
            SourceKind::ConfigMap,
            &[("data", &data), ("binaryData", &empty)],
        );
        let cm_binary = object_digest(
            SourceKind::ConfigMap,
            &[("data", &empty), ("binaryData", &data)],
        );
        assert_ne!(secret, cm);
        assert_ne!(cm, cm_binary);
        let mut reordered = BTreeMap::new();
        reordered.insert("k".to_owned(), b"v".to_vec());
        assert_eq!(
            secret,
            object_digest(SourceKind::Secret, &[("data", &reordered)])
        );
    }

    #[test]
    fn objects_digest_their_data_only() {
        let secret = |value: &str| Secret {
            data: Some(BTreeMap::from([(
                "tls.crt".to_owned(),
                ByteString(value.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        };
        let mut labelled = secret("a");
        labelled.metadata.labels = Some(BTreeMap::from([("x".to_owned(), "y".to_owned())]));
        assert_eq!(secret_digest(secret("a")), secret_digest(labelled));
        assert_ne!(secret_digest(secret("a")), secret_digest(secret("b")));
        let text = ConfigMap {
            data: Some(BTreeMap::from([("k".to_owned(), "v".to_owned())])),
            ..ConfigMap::default()
        };
        let binary = ConfigMap {
            binary_data: Some(BTreeMap::from([(
                "k".to_owned(),
                ByteString(b"v".to_vec()),
            )])),
            ..ConfigMap::default()
        };
        assert_ne!(config_map_digest(text), config_map_digest(binary));
    }

    #[test]
    fn config_hash_tracks_names_contents_and_absence() {
        let one = BTreeMap::from([(SourceRef::secret("tls"), Some("d1".to_owned()))]);
        let changed = BTreeMap::from([(SourceRef::secret("tls"), Some("d2".to_owned()))]);
        let renamed = BTreeMap::from([(SourceRef::secret("tls2"), Some("d1".to_owned()))]);
        let absent = BTreeMap::from([(SourceRef::secret("tls"), None)]);
        let kinds = BTreeMap::from([(SourceRef::config_map("tls"), Some("d1".to_owned()))]);
        let all = [
            config_hash(&one),
            config_hash(&changed),
            config_hash(&renamed),
            config_hash(&absent),
            config_hash(&kinds),
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(config_hash(&one), config_hash(&one.clone()));
    }
}
