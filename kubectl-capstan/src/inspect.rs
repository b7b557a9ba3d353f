//! `kubectl capstan inspect secret|configmap NAME`: every certificate in
//! every key (chains included), and which CA's signature verifies which
//! certificate. Pure: built from the object's data with capstan-pki.
//!
//! Private keys are never shown: a key holding one is listed as such, its
//! content unread.

use std::collections::BTreeMap;

use capstan_pki::inspect::{pem_contents, signed_by, subject_alt_names};
use serde::Serialize;
use time::OffsetDateTime;

use crate::output::{Table, from_offset, human, seconds};

/// Where a certificate is: the object's key and its position in that key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Position {
    /// The data key (`tls.crt`), prefixed with the object for a certificate
    /// from `--bundle` (`ConfigMap/x:ca-bundle.crt`).
    pub key: String,
    /// 0-based index in that key.
    pub index: usize,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]", self.key, self.index)
    }
}

/// Validity at the time of inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Validity {
    /// Between notBefore and notAfter.
    Valid,
    /// Past notAfter.
    Expired,
    /// Before notBefore.
    NotYetValid,
}

/// One certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Certificate {
    /// Where it is.
    pub position: Position,
    /// Subject, RFC 4514.
    pub subject: String,
    /// Issuer, RFC 4514.
    pub issuer: String,
    /// Subject alternative names, as openssl prints them.
    pub sans: Vec<String>,
    /// Serial, hex.
    pub serial: String,
    /// Start of validity, RFC 3339.
    pub not_before: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// Valid, expired or not yet valid.
    pub validity: Validity,
    /// CA:TRUE.
    pub is_ca: bool,
    /// SHA-256 of the DER, lowercase hex.
    pub sha256: String,
    /// The CA certificates (of the inspected object and `--bundle`) whose
    /// public key verifies this certificate's signature.
    pub verified_by: Vec<Position>,
}

/// What a data key holds besides certificates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyNote {
    /// The data key.
    pub key: String,
    /// What it holds (`private key (not shown)`, `no PEM`...).
    pub note: String,
}

/// What `inspect` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// `Secret/x -n ns`.
    pub object: String,
    /// The certificates of the object, key by key.
    pub certificates: Vec<Certificate>,
    /// Keys holding something else.
    pub other_keys: Vec<KeyNote>,
}

struct Found {
    position: Position,
    der: Vec<u8>,
    summary: capstan_pki::Summary,
}

fn read(prefix: &str, data: &BTreeMap<String, Vec<u8>>, notes: &mut Vec<KeyNote>) -> Vec<Found> {
    let mut found = Vec::new();
    for (key, bytes) in data {
        let name = format!("{prefix}{key}");
        let contents = match pem_contents(bytes) {
            Ok(c) => c,
            Err(e) => {
                notes.push(KeyNote {
                    key: name,
                    note: format!("unreadable PEM: {e}"),
                });
                continue;
            }
        };
        let mut what = Vec::new();
        if contents.private_keys > 0 {
            what.push(format!(
                "{} private key(s) (not shown)",
                contents.private_keys
            ));
        }
        if !contents.other.is_empty() {
            what.push(format!("other PEM: {}", contents.other.join(", ")));
        }
        if contents.certificates.is_empty() && what.is_empty() {
            what.push(format!("no PEM ({} bytes)", bytes.len()));
        }
        if !what.is_empty() {
            notes.push(KeyNote {
                key: name.clone(),
                note: what.join("; "),
            });
        }
        for (index, der) in contents.certificates.into_iter().enumerate() {
            match capstan_pki::summarize(&der) {
                Ok(summary) => found.push(Found {
                    position: Position {
                        key: name.clone(),
                        index,
                    },
                    der,
                    summary,
                }),
                Err(e) => notes.push(KeyNote {
                    key: format!("{name}[{index}]"),
                    note: format!("not a certificate: {e}"),
                }),
            }
        }
    }
    found
}

/// The report on `object`'s `data`, with the CA certificates of `extra`
/// (named `prefix`, e.g. `ConfigMap/ca:`) as more candidate issuers.
#[must_use]
pub fn report(
    object: String,
    data: &BTreeMap<String, Vec<u8>>,
    extra: Option<(&str, &BTreeMap<String, Vec<u8>>)>,
    now: OffsetDateTime,
) -> Report {
    let mut other_keys = Vec::new();
    let own = read("", data, &mut other_keys);
    let mut ignored = Vec::new();
    let more = extra.map_or_else(Vec::new, |(prefix, d)| read(prefix, d, &mut ignored));
    let cas: Vec<&Found> = own
        .iter()
        .chain(&more)
        .filter(|f| f.summary.is_ca)
        .collect();
    let certificates = own
        .iter()
        .map(|f| {
            let mut verified_by: Vec<Position> = Vec::new();
            for ca in &cas {
                if signed_by(&f.der, &ca.der) && !verified_by.iter().any(|p| p == &ca.position) {
                    verified_by.push(ca.position.clone());
                }
            }
            let s = &f.summary;
            let validity = if now < s.not_before {
                Validity::NotYetValid
            } else if now > s.not_after {
                Validity::Expired
            } else {
                Validity::Valid
            };
            Certificate {
                position: f.position.clone(),
                subject: s.subject.clone(),
                issuer: s.issuer.clone(),
                sans: subject_alt_names(&f.der).unwrap_or_default(),
                serial: s.serial.clone(),
                not_before: seconds(from_offset(s.not_before)),
                not_after: seconds(from_offset(s.not_after)),
                validity,
                is_ca: s.is_ca,
                sha256: s.fingerprint.clone(),
                verified_by,
            }
        })
        .collect();
    Report {
        object,
        certificates,
        other_keys,
    }
}

/// The report as text: one table of certificates, then the other keys.
#[must_use]
pub fn render(r: &Report, now: OffsetDateTime) -> String {
    let mut out = format!("{}\n\n", r.object);
    if r.certificates.is_empty() {
        out.push_str("No certificates.\n");
    } else {
        let mut t = Table::new(&[
            "cert",
            "subject",
            "sans",
            "issuer",
            "not after",
            "state",
            "ca",
            "sha-256",
            "verified by",
        ]);
        for c in &r.certificates {
            let not_after = time::OffsetDateTime::parse(
                &c.not_after,
                &time::format_description::well_known::Rfc3339,
            )
            .map(|t| human(from_offset(t).duration_since(from_offset(now))))
            .unwrap_or_default();
            let state = match c.validity {
                Validity::Valid => format!("valid, expires in {not_after}"),
                Validity::Expired => format!("EXPIRED {not_after} ago"),
                Validity::NotYetValid => format!("NOT YET VALID (from {})", c.not_before),
            };
            t.row(vec![
                c.position.to_string(),
                if c.subject.is_empty() {
                    "-".into()
                } else {
                    c.subject.clone()
                },
                if c.sans.is_empty() {
                    "-".into()
                } else {
                    c.sans.join(",")
                },
                c.issuer.clone(),
                c.not_after.clone(),
                state,
                if c.is_ca { "yes".into() } else { "no".into() },
                c.sha256.clone(),
                if c.verified_by.is_empty() {
                    "- (no CA here verifies it)".into()
                } else {
                    c.verified_by
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                },
            ]);
        }
        out.push_str(&t.render());
    }
    if !r.other_keys.is_empty() {
        out.push('\n');
        let mut t = Table::new(&["key", "holds"]);
        for n in &r.other_keys {
            t.row(vec![n.key.clone(), n.note.clone()]);
        }
        out.push_str(&t.render());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ca(cn: &str, now: OffsetDateTime) -> capstan_pki::GeneratedCa {
        capstan_pki::generate_ca(
            &capstan_pki::CaSpec {
                common_name: cn.to_owned(),
                organization: None,
                algorithm: capstan_pki::KeyAlgorithm::EcdsaP256,
                lifetime: Duration::from_secs(86_400),
            },
            now,
        )
        .expect("CA")
    }

    fn data(pairs: &[(&str, String)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone().into_bytes()))
            .collect()
    }

    #[test]
    fn keys_are_hidden_and_signatures_decide_who_verifies() {
        let now = OffsetDateTime::now_utc();
        let root = ca("root", now);
        let other = ca("root", now);
        let d = data(&[
            ("ca.crt", root.cert_pem.clone()),
            ("tls.key", root.key.expose().to_owned()),
            ("notes", "hello".to_owned()),
        ]);
        let bundle = data(&[(
            "ca-bundle.crt",
            format!("{}{}", other.cert_pem, root.cert_pem),
        )]);
        let r = report(
            "Secret/x -n ns".into(),
            &d,
            Some(("ConfigMap/b:", &bundle)),
            now,
        );
        assert_eq!(r.certificates.len(), 1);
        let c = &r.certificates[0];
        assert_eq!(c.subject, "CN=root");
        assert_eq!(c.validity, Validity::Valid);
        assert_eq!(
            c.verified_by
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["ca.crt[0]", "ConfigMap/b:ca-bundle.crt[1]"],
            "same name, other key: not a verifier"
        );
        let text = render(&r, now);
        assert!(!text.contains("PRIVATE"), "{text}");
        assert!(
            text.contains("tls.key   1 private key(s) (not shown)"),
            "{text}"
        );
        assert!(text.contains("notes     no PEM (5 bytes)"), "{text}");
        let json = serde_json::to_string(&r).expect("json");
        assert!(!json.contains("PRIVATE KEY"), "{json}");
    }

    #[test]
    fn expired_and_future_certificates_are_flagged() {
        let now = OffsetDateTime::now_utc();
        let root = ca("root", now);
        let d = data(&[("ca.crt", root.cert_pem)]);
        let later = report("x".into(), &d, None, now + time::Duration::days(2));
        assert_eq!(later.certificates[0].validity, Validity::Expired);
        assert!(render(&later, now + time::Duration::days(2)).contains("EXPIRED"));
        let earlier = report("x".into(), &d, None, now - time::Duration::days(1));
        assert_eq!(earlier.certificates[0].validity, Validity::NotYetValid);
        let bad = data(&[(
            "tls.crt",
            "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n".into(),
        )]);
        let r = report("x".into(), &bad, None, now);
        assert!(r.other_keys[0].note.starts_with("unreadable PEM"), "{r:?}");
    }
}
