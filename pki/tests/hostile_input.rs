//! Hostile input: every parser is total (mutated, truncated or oversized
//! DER and PEM of valid CSRs, bundles and CA key pairs end in `Ok` or `Err`,
//! never a panic), huge RSA keys are refused before any arithmetic, and
//! absurd lifetimes are refused or capped with a message instead of
//! wrapping around.
//!
//! This is the always-run, stable counterpart of the cargo-fuzz targets in
//! `fuzz/`: the same entry points, fed by proptest.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use capstan_pki::ca::MAX_CA_LIFETIME;
use capstan_pki::{
    CaSpec, Error, KeyAlgorithm, LeafPolicy, LeafRequest, MAX_DURATION, SigningCa, Truncation,
    generate_ca, normalize_bundle, parse_csr, parse_duration,
};
use proptest::prelude::*;
use rcgen::{CertificateParams, KeyPair};
use time::OffsetDateTime;

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_790_000_000).unwrap()
}

fn spec(algorithm: KeyAlgorithm, lifetime: Duration) -> CaSpec {
    CaSpec {
        common_name: format!("hostile {algorithm}"),
        organization: None,
        algorithm,
        lifetime,
    }
}

fn policy() -> LeafPolicy {
    LeafPolicy {
        default_duration: Duration::from_secs(86_400),
        max_duration: Duration::from_secs(90 * 86_400),
        allowed_usages: vec![],
        permitted_dns_domains: vec![],
        permitted_ip_ranges: vec![],
    }
}

/// Valid inputs the mutations start from, made once.
struct Seeds {
    /// CSRs (DER) for P-256, P-384, Ed25519 and RSA 2048 keys.
    csrs: Vec<Vec<u8>>,
    /// CA certificates (PEM) and their keys (PEM: PKCS#8 and PKCS#1).
    cas: Vec<(String, String)>,
    /// A bundle of every CA (PEM).
    bundle: String,
}

fn seeds() -> &'static Seeds {
    static SEEDS: OnceLock<Seeds> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut csrs = Vec::new();
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            let key = KeyPair::generate_for(alg).unwrap();
            csrs.push(csr_der(&key));
        }
        let mut cas = Vec::new();
        for alg in [
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::Ed25519,
            KeyAlgorithm::Rsa2048,
        ] {
            let ca = generate_ca(&spec(alg, Duration::from_secs(365 * 86_400)), now()).unwrap();
            cas.push((ca.cert_pem.clone(), ca.key.expose().to_owned()));
        }
        // The RSA CA's key again as PKCS#1, and an RSA CSR with that key.
        let rsa_pem = cas[2].1.clone();
        let rsa_key = KeyPair::from_pem(&rsa_pem).unwrap();
        csrs.push(csr_der(&rsa_key));
        {
            use rsa::pkcs1::EncodeRsaPrivateKey as _;
            use rsa::pkcs8::DecodePrivateKey as _;
            let parsed = rsa::RsaPrivateKey::from_pkcs8_pem(&rsa_pem).unwrap();
            let pkcs1 = parsed.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap();
            cas.push((cas[2].0.clone(), pkcs1.to_string()));
        }
        let bundle = cas.iter().map(|(c, _)| c.as_str()).collect();
        Seeds { csrs, cas, bundle }
    })
}

fn csr_der(key: &KeyPair) -> Vec<u8> {
    let mut params =
        CertificateParams::new(vec!["app.example".to_owned(), "10.0.0.1".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "app");
    params.serialize_request(key).unwrap().der().to_vec()
}

fn to_pem(tag: &str, der: &[u8]) -> Vec<u8> {
    pem::encode(&pem::Pem::new(tag, der.to_vec())).into_bytes()
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Set { at: usize, value: u8 },
    Truncate { at: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
    Duplicate { at: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::Set { at, value }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Remove { at, len }),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
    ]
}

fn apply(input: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut out = input.to_vec();
    for m in mutations {
        let n = out.len().max(1);
        match m {
            Mutation::Flip { at, bit } => {
                if !out.is_empty() {
                    let i = at % out.len();
                    out[i] ^= 1 << bit;
                }
            }
            Mutation::Set { at, value } => {
                if !out.is_empty() {
                    let i = at % out.len();
                    out[i] = *value;
                }
            }
            Mutation::Truncate { at } => out.truncate(at % n),
            Mutation::Insert { at, bytes } => {
                let i = at % (out.len() + 1);
                out.splice(i..i, bytes.iter().copied());
            }
            Mutation::Remove { at, len } => {
                let i = at % n;
                let end = (i + len).min(out.len());
                if i < end {
                    out.drain(i..end);
                }
            }
            Mutation::Duplicate { at, len } => {
                let i = at % n;
                let end = (i + len).min(out.len());
                if i < end {
                    let copy: Vec<u8> = out[i..end].to_vec();
                    out.splice(end..end, copy);
                }
            }
        }
    }
    out
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    /// Mutated CSRs, as DER, as PEM of the mutated DER and as mutated PEM.
    #[test]
    fn mutated_csrs_never_panic(pick in 0usize..4, edits in mutations()) {
        let der = &seeds().csrs[pick];
        let mutated = apply(der, &edits);
        let _ = parse_csr(&mutated);
        let _ = parse_csr(&to_pem("CERTIFICATE REQUEST", &mutated));
        let _ = parse_csr(&apply(&to_pem("CERTIFICATE REQUEST", der), &edits));
    }

    /// Mutated bundles and single certificates.
    #[test]
    fn mutated_bundles_never_panic(pick in 0usize..4, edits in mutations()) {
        let s = seeds();
        let _ = normalize_bundle(&[&apply(s.bundle.as_bytes(), &edits)], now());
        let cert_der = pem::parse(&s.cas[pick].0).unwrap().into_contents();
        let mutated = apply(&cert_der, &edits);
        let _ = capstan_pki::summarize(&mutated);
        let pem = to_pem("CERTIFICATE", &mutated);
        let _ = normalize_bundle(&[&pem, s.bundle.as_bytes()], now());
    }

    /// Mutated CA key pairs: the key, the certificate, or the chain.
    #[test]
    fn mutated_ca_key_pairs_never_panic(pick in 0usize..4, edits in mutations(), which in 0u8..4) {
        let (cert, key) = &seeds().cas[pick];
        let (cert, key) = (cert.as_bytes(), key.as_bytes());
        let key_block = pem::parse(key).unwrap();
        let result = match which {
            0 => SigningCa::from_pem(cert, &apply(key, &edits), None, now()),
            1 => SigningCa::from_pem(
                cert,
                &to_pem(key_block.tag(), &apply(key_block.contents(), &edits)),
                None,
                now(),
            ),
            2 => {
                let der = pem::parse(cert).unwrap().into_contents();
                SigningCa::from_pem(&to_pem("CERTIFICATE", &apply(&der, &edits)), key, None, now())
            }
            _ => SigningCa::from_pem(cert, key, Some(&apply(cert, &edits)), now()),
        };
        // A mutated key that still loads must be the certificate's own key.
        if let Ok(ca) = result {
            let csr = parse_csr(&seeds().csrs[0]).unwrap();
            let _ = ca.sign(&csr, &LeafRequest::default(), &policy(), now());
        }
    }

    /// Any text at all: the duration parser answers, and what it accepts
    /// is positive and within Go's range.
    #[test]
    fn durations_never_panic(text in "\\PC{0,40}", go in "[+-]?([0-9]{0,25}(\\.[0-9]{0,12})?(h|m|s|ms|us|ns|µs|d|x)){1,4}") {
        for t in [text.as_str(), go.as_str()] {
            if let Ok(d) = parse_duration(t) {
                prop_assert!(!d.is_zero() && d <= MAX_DURATION, "{t:?} -> {d:?}");
            }
        }
    }

    /// Any requested lifetime, however long: the leaf ends with the policy's
    /// cap or the CA, and the shortening is reported.
    #[test]
    fn any_requested_lifetime_is_capped(secs in any::<u64>(), max in any::<u64>()) {
        let s = seeds();
        let ca = SigningCa::from_pem(s.cas[0].0.as_bytes(), s.cas[0].1.as_bytes(), None, now()).unwrap();
        let csr = parse_csr(&s.csrs[0]).unwrap();
        let mut p = policy();
        p.max_duration = Duration::from_secs(max.max(1));
        let leaf = ca.sign(
            &csr,
            &LeafRequest { duration: Some(Duration::from_secs(secs.max(1))), ..Default::default() },
            &p,
            now(),
        ).unwrap();
        prop_assert!(leaf.summary.not_after <= ca.summary().not_after);
        prop_assert!(leaf.summary.not_after > now());
        if secs.max(1) > 365 * 86_400 {
            prop_assert!(leaf.truncated.is_some(), "{secs}s not reported as shortened");
        }
    }
}

/// Minimal DER writer for hand-made hostile structures.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(u8::try_from(len).unwrap());
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | u8::try_from(bytes.len()).unwrap());
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// A CSR whose RSA key has a `bits`-bit modulus, with a junk signature: the
/// size check must refuse it before the signature is ever verified.
fn rsa_csr_with_modulus_bits(bits: usize) -> Vec<u8> {
    const RSA_ENCRYPTION: [u8; 9] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    const SHA256_WITH_RSA: [u8; 9] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
    let mut modulus = vec![0u8];
    modulus.extend(vec![0xffu8; bits / 8]);
    let rsa_key = tlv(
        0x30,
        &[tlv(0x02, &modulus), tlv(0x02, &[0x01, 0x00, 0x01])].concat(),
    );
    let alg = |oid: &[u8]| tlv(0x30, &[tlv(0x06, oid), vec![0x05, 0x00]].concat());
    let spki = tlv(
        0x30,
        &[
            alg(&RSA_ENCRYPTION),
            tlv(0x03, &[&[0u8][..], &rsa_key].concat()),
        ]
        .concat(),
    );
    let name = tlv(
        0x30,
        &tlv(
            0x31,
            &tlv(
                0x30,
                &[tlv(0x06, &[0x55, 0x04, 0x03]), tlv(0x0c, b"huge")].concat(),
            ),
        ),
    );
    let info = tlv(
        0x30,
        &[tlv(0x02, &[0]), name, spki, vec![0xa0, 0x00]].concat(),
    );
    let signature = tlv(0x03, &[&[0u8][..], &vec![0x42u8; bits / 8]].concat());
    tlv(0x30, &[info, alg(&SHA256_WITH_RSA), signature].concat())
}

#[test]
fn huge_rsa_csrs_are_refused_with_the_limit_before_verification() {
    for bits in [8200, 16_384, 65_536, 1_000_000] {
        let der = rsa_csr_with_modulus_bits(bits);
        let started = Instant::now();
        let err = parse_csr(&der).unwrap_err();
        assert_eq!(
            err,
            Error::KeyTooLarge {
                algorithm: "RSA",
                bits,
                maximum: 8192
            }
        );
        assert!(
            err.to_string()
                .contains(&format!("the RSA key has {bits} bits; at most 8192")),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(1), "{bits}");
    }
    // 8192 itself passes the size check and fails on the junk signature.
    assert_eq!(
        parse_csr(&rsa_csr_with_modulus_bits(8192)).unwrap_err(),
        Error::CsrSignature
    );
}

#[test]
fn huge_pem_inputs_are_refused_by_size_before_parsing() {
    let mut huge = b"-----BEGIN CERTIFICATE-----\n".to_vec();
    huge.resize(capstan_pki::MAX_INPUT_BYTES + 1, b'A');
    let (cert, key) = &seeds().cas[0];
    for result in [
        SigningCa::from_pem(&huge, key.as_bytes(), None, now()).map(|_| ()),
        SigningCa::from_pem(cert.as_bytes(), &huge, None, now()).map(|_| ()),
        SigningCa::from_pem(cert.as_bytes(), key.as_bytes(), Some(&huge), now()).map(|_| ()),
        normalize_bundle(&[&huge], now()).map(|_| ()),
        parse_csr(&huge).map(|_| ()),
    ] {
        let err = result.unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("1048576-byte limit"), "{err}");
    }
}

#[test]
fn absurd_ca_lifetimes_are_refused_with_a_message() {
    let absurd = parse_duration("100000000h");
    assert!(
        absurd
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("longer than the maximum"),
        "{absurd:?}"
    );
    for lifetime in [
        MAX_DURATION,
        MAX_CA_LIFETIME + Duration::from_secs(1),
        Duration::from_secs(u64::MAX),
        Duration::ZERO,
    ] {
        let err = generate_ca(&spec(KeyAlgorithm::EcdsaP256, lifetime), now()).unwrap_err();
        assert!(matches!(err, Error::Duration(_)), "{err}");
        assert!(err.to_string().starts_with("the CA lifetime"), "{err}");
    }
    // The limit itself still works (a CA valid for 100 years).
    let ca = generate_ca(&spec(KeyAlgorithm::EcdsaP256, MAX_CA_LIFETIME), now()).unwrap();
    assert_eq!(
        ca.summary.not_after,
        now() + time::Duration::try_from(MAX_CA_LIFETIME).unwrap()
    );
}

#[test]
fn a_lifetime_past_the_end_of_time_ends_with_the_ca_and_says_so() {
    let s = seeds();
    let ca =
        SigningCa::from_pem(s.cas[0].0.as_bytes(), s.cas[0].1.as_bytes(), None, now()).unwrap();
    let csr = parse_csr(&s.csrs[0]).unwrap();
    let mut p = policy();
    p.max_duration = Duration::from_secs(u64::MAX);
    let leaf = ca
        .sign(
            &csr,
            &LeafRequest {
                duration: Some(Duration::from_secs(u64::MAX)),
                ..Default::default()
            },
            &p,
            now(),
        )
        .unwrap();
    assert_eq!(leaf.summary.not_after, ca.summary().not_after);
    assert!(
        matches!(leaf.truncated, Some(Truncation::CaExpiry { .. })),
        "{:?}",
        leaf.truncated
    );
}

#[test]
fn unparsable_requests_say_what_they_are_not() {
    let message = |input: &[u8]| parse_csr(input).unwrap_err().to_string();
    assert_eq!(
        message(b"hello, I am not a certificate request"),
        "the CSR could not be parsed: it is neither a PEM CERTIFICATE REQUEST block nor DER-encoded PKCS#10"
    );
    assert_eq!(
        message(&to_pem("CERTIFICATE REQUEST", b"hello")),
        "the CSR could not be parsed: its CERTIFICATE REQUEST block does not hold a PKCS#10 request"
    );
    assert!(
        message(&[0x30, 0x03, 0x02, 0x01])
            .starts_with("the CSR could not be parsed: malformed PKCS#10 DER ("),
        "{}",
        message(&[0x30, 0x03, 0x02, 0x01])
    );
    assert_eq!(
        message(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
        "the CSR could not be parsed: no CERTIFICATE REQUEST PEM block"
    );
}
