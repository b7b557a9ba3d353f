//! Object metadata decoded without `managedFields`.
//!
//! kube-apiserver puts every object's `managedFields` (server-side apply's
//! record of who owns which field: often the largest part of a
//! `CertificateRequest`'s metadata) into every list and watch event. The
//! issuer never reads them, so it decodes requests without them: less CPU
//! per watch event and a smaller cache. Nothing is lost on the server: the
//! issuer writes with merge patches, which leave `managedFields` alone.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde::de::{
    self, DeserializeSeed, Deserializer, IgnoredAny, IntoDeserializer, MapAccess, Visitor,
};

/// The metadata key that is skipped.
const MANAGED_FIELDS: &str = "managedFields";

/// Decodes an [`ObjectMeta`] whose `managedFields` are skipped unread (for
/// `#[serde(deserialize_with)]`); every other field decodes as usual.
///
/// # Errors
/// When the metadata is not valid `ObjectMeta`.
pub fn without_managed_fields<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<ObjectMeta, D::Error> {
    ObjectMeta::deserialize(SkipManagedFields(deserializer))
}

/// A deserializer that hands the visitor a map without `managedFields`.
struct SkipManagedFields<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for SkipManagedFields<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(Filtered(visitor))
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(Filtered(visitor))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_struct(name, fields, Filtered(visitor))
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct enum identifier ignored_any
    }
}

/// Wraps the metadata's own visitor so that it sees a filtered map.
struct Filtered<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for Filtered<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(FilteredMap(map))
    }
}

/// A map that steps over the `managedFields` entry.
struct FilteredMap<A>(A);

impl<'de, A: MapAccess<'de>> MapAccess<'de> for FilteredMap<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let mut seed = seed;
        loop {
            match self.0.next_key_seed(Key(seed))? {
                None => return Ok(None),
                Some(Ok(key)) => return Ok(Some(key)),
                Some(Err(unused)) => {
                    self.0.next_value::<IgnoredAny>()?;
                    seed = unused;
                }
            }
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.0.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

/// Reads one key: `Err(seed)` gives the seed back when the key is
/// `managedFields`, so the next key can use it; any other key is handed to
/// the seed without being copied.
struct Key<K>(K);

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for Key<K> {
    type Value = Result<K::Value, K>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de, K: DeserializeSeed<'de>> Visitor<'de> for Key<K> {
    type Value = Result<K::Value, K>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a metadata field name")
    }

    fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Self::Value, E> {
        if key == MANAGED_FIELDS {
            return Ok(Err(self.0));
        }
        self.0
            .deserialize(de::value::BorrowedStrDeserializer::new(key))
            .map(Ok)
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        if key == MANAGED_FIELDS {
            return Ok(Err(self.0));
        }
        self.0.deserialize(key.into_deserializer()).map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Deserialize)]
    struct Object {
        #[serde(deserialize_with = "without_managed_fields")]
        metadata: ObjectMeta,
    }

    fn decode(metadata: serde_json::Value) -> ObjectMeta {
        let text = serde_json::to_string(&json!({ "metadata": metadata })).expect("JSON");
        serde_json::from_str::<Object>(&text)
            .expect("decodes")
            .metadata
    }

    #[test]
    fn managed_fields_are_skipped_and_everything_else_is_kept() {
        let meta = decode(json!({
            "name": "metrics",
            "namespace": "monitoring",
            "uid": "u-1",
            "resourceVersion": "42",
            "generation": 3,
            "managedFields": [{
                "manager": "kubectl", "operation": "Apply", "apiVersion": "cert-manager.io/v1",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:request": {}}}
            }],
            "labels": {"app": "prometheus"},
            "annotations": {"capstan.dev/rotate": "1"},
            "ownerReferences": [{"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "name": "metrics", "uid": "u-0"}],
            "deletionTimestamp": "2026-12-01T00:00:00Z",
        }));
        assert_eq!(meta.managed_fields, None);
        assert_eq!(meta.name.as_deref(), Some("metrics"));
        assert_eq!(meta.namespace.as_deref(), Some("monitoring"));
        assert_eq!(meta.uid.as_deref(), Some("u-1"));
        assert_eq!(meta.resource_version.as_deref(), Some("42"));
        assert_eq!(meta.generation, Some(3));
        assert_eq!(meta.labels.unwrap_or_default()["app"], "prometheus");
        assert_eq!(
            meta.annotations.unwrap_or_default()["capstan.dev/rotate"],
            "1"
        );
        assert_eq!(
            meta.owner_references.unwrap_or_default()[0].kind,
            "Certificate"
        );
        assert!(meta.deletion_timestamp.is_some());
    }

    #[test]
    fn escaped_keys_and_managed_fields_first_or_last_decode() {
        let meta = decode(json!({"managedFields": [], "name": "a"}));
        assert_eq!(meta.name.as_deref(), Some("a"));
        // An escaped key comes to the visitor as an owned string.
        let text = r#"{"metadata":{"n\u0061me":"b","managedFields":[{"manager":"x"}]}}"#;
        let meta = serde_json::from_str::<Object>(text)
            .expect("decodes")
            .metadata;
        assert_eq!(meta.name.as_deref(), Some("b"));
        assert_eq!(meta.managed_fields, None);
    }

    #[test]
    fn bad_metadata_is_still_an_error() {
        let text = r#"{"metadata":{"name":7,"managedFields":[]}}"#;
        assert!(serde_json::from_str::<Object>(text).is_err());
        let text = r#"{"metadata":"not a map"}"#;
        assert!(serde_json::from_str::<Object>(text).is_err());
    }
}
