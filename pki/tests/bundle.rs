//! Properties of trust bundles: idempotent, independent of input order and
//! duplication, never keeping an expired or duplicate certificate, and
//! refusing private keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;
use std::time::Duration;

use capstan_pki::{CaSpec, Error, KeyAlgorithm, generate_ca, normalize_bundle, summarize};
use proptest::prelude::*;
use time::OffsetDateTime;

/// A fixed instant all certificates are judged at.
fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_790_000_000).unwrap()
}

/// Eight CAs made once: four valid at `now()` (issued at different times),
/// four already expired.
fn pool() -> &'static Vec<String> {
    static POOL: OnceLock<Vec<String>> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut pems = Vec::new();
        for i in 0..8i64 {
            let expired = i >= 4;
            let issued = now() - time::Duration::days(if expired { 30 + i } else { i });
            let lifetime = if expired {
                Duration::from_secs(86_400)
            } else {
                Duration::from_secs(365 * 86_400)
            };
            let ca = generate_ca(
                &CaSpec {
                    common_name: format!("ca-{i}"),
                    organization: None,
                    algorithm: KeyAlgorithm::EcdsaP256,
                    lifetime,
                },
                issued,
            )
            .unwrap();
            pems.push(ca.cert_pem);
        }
        pems
    })
}

fn fingerprints_of(pem: &str) -> Vec<String> {
    pem::parse_many(pem)
        .unwrap()
        .iter()
        .map(|b| summarize(b.contents()).unwrap().fingerprint)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn normalizing_is_idempotent_and_order_independent(picks in prop::collection::vec(0usize..8, 0..16), seed in any::<u64>()) {
        let inputs: Vec<&[u8]> = picks.iter().map(|i| pool()[*i].as_bytes()).collect();
        let once = normalize_bundle(&inputs, now()).unwrap();
        let twice = normalize_bundle(&[once.pem.as_bytes()], now()).unwrap();
        prop_assert_eq!(&once, &twice);

        let mut shuffled = inputs.clone();
        // A deterministic shuffle from the seed.
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            let j = usize::try_from(state % (i as u64 + 1)).unwrap();
            shuffled.swap(i, j);
        }
        shuffled.extend(inputs.iter().take(3));
        let reordered = normalize_bundle(&shuffled, now()).unwrap();
        prop_assert_eq!(&once.pem, &reordered.pem);
    }

    #[test]
    fn never_keeps_expired_or_duplicate_certificates(picks in prop::collection::vec(0usize..8, 0..16)) {
        let inputs: Vec<&[u8]> = picks.iter().map(|i| pool()[*i].as_bytes()).collect();
        let bundle = normalize_bundle(&inputs, now()).unwrap();
        let fps = fingerprints_of(&bundle.pem);
        let mut unique = fps.clone();
        unique.sort();
        unique.dedup();
        prop_assert_eq!(unique.len(), fps.len());
        prop_assert_eq!(&fps, &bundle.fingerprints);
        for block in pem::parse_many(&bundle.pem).unwrap() {
            let s = summarize(block.contents()).unwrap();
            prop_assert!(s.not_after >= now(), "expired certificate kept");
        }
        let wanted: std::collections::BTreeSet<usize> = picks.iter().copied().filter(|i| *i < 4).collect();
        prop_assert_eq!(bundle.len(), wanted.len());
    }
}

#[test]
fn newest_first_with_canonical_pem() {
    let inputs: Vec<&[u8]> = pool().iter().map(String::as_bytes).collect();
    let bundle = normalize_bundle(&inputs, now()).unwrap();
    let names: Vec<String> = pem::parse_many(&bundle.pem)
        .unwrap()
        .iter()
        .map(|b| summarize(b.contents()).unwrap().subject)
        .collect();
    assert_eq!(names, ["CN=ca-0", "CN=ca-1", "CN=ca-2", "CN=ca-3"]);
    assert!(bundle.pem.ends_with("-----END CERTIFICATE-----\n"));
    assert!(!bundle.pem.contains('\r'));
}

#[test]
fn bundles_refuse_private_keys_and_garbage() {
    let ca = generate_ca(
        &CaSpec {
            common_name: "k".into(),
            organization: None,
            algorithm: KeyAlgorithm::EcdsaP256,
            lifetime: Duration::from_secs(3600),
        },
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    let with_key = format!("{}{}", ca.cert_pem, ca.key.expose());
    let err = normalize_bundle(&[with_key.as_bytes()], OffsetDateTime::now_utc()).unwrap_err();
    assert!(matches!(err, Error::PrivateKeyInBundle(_)), "{err}");
    assert!(
        !err.to_string().contains("BEGIN"),
        "the error must not echo the key"
    );
    let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert!(normalize_bundle(&[garbage.as_slice()], OffsetDateTime::now_utc()).is_err());
    assert!(
        normalize_bundle(&[b"".as_slice()], OffsetDateTime::now_utc())
            .unwrap()
            .is_empty()
    );
    let huge = vec![b'a'; capstan_pki::MAX_INPUT_BYTES + 1];
    assert!(matches!(
        normalize_bundle(&[huge.as_slice()], OffsetDateTime::now_utc()),
        Err(Error::TooLarge { .. })
    ));
}
