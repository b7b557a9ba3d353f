//! Private keys: read every encoding a Kubernetes TLS Secret may hold, and
//! generate new ones. Everything ends as a PKCS#8 key that ring signs with.
//!
//! cert-manager writes RSA keys as PKCS#1 (`RSA PRIVATE KEY`) and ECDSA keys
//! as SEC1 (`EC PRIVATE KEY`) by default; ring reads only PKCS#8, so those
//! are re-wrapped here.

use pkcs8::der::asn1::AnyRef;
use pkcs8::der::{Decode, Encode};
use pkcs8::{AlgorithmIdentifierRef, ObjectIdentifier, PrivateKeyInfo};
use rcgen::{KeyPair, SignatureAlgorithm};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::EncodePrivateKey;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Key algorithm of a generated CA (spelled as in the issuer's API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyAlgorithm {
    /// ECDSA P-256 with SHA-256 (default).
    #[default]
    EcdsaP256,
    /// ECDSA P-384 with SHA-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA 2048 with SHA-256.
    Rsa2048,
    /// RSA 3072 with SHA-256.
    Rsa3072,
    /// RSA 4096 with SHA-256.
    Rsa4096,
}

impl KeyAlgorithm {
    /// Every algorithm.
    pub const ALL: [Self; 6] = [
        Self::EcdsaP256,
        Self::EcdsaP384,
        Self::Ed25519,
        Self::Rsa2048,
        Self::Rsa3072,
        Self::Rsa4096,
    ];

    /// The API spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ECDSAP256",
            Self::EcdsaP384 => "ECDSAP384",
            Self::Ed25519 => "Ed25519",
            Self::Rsa2048 => "RSA2048",
            Self::Rsa3072 => "RSA3072",
            Self::Rsa4096 => "RSA4096",
        }
    }
}

/// Smallest RSA modulus accepted for a CA key.
pub const MIN_CA_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted for a CA key: ring signs with at most 4096.
pub const MAX_CA_RSA_BITS: usize = 4096;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// Checks the modulus size of a PKCS#1 `RSAPrivateKey` before anything
/// expensive (validating the key, precomputing CRT values) touches it: a
/// huge modulus would cost seconds of CPU per load.
fn check_rsa_bits(pkcs1_der: &[u8], what: &'static str) -> Result<()> {
    let key = rsa::pkcs1::RsaPrivateKey::from_der(pkcs1_der).map_err(|e| Error::PrivateKey {
        what,
        problem: format!("not a PKCS#1 RSA key: {e}"),
    })?;
    let bits = modulus_bits(key.modulus.as_bytes());
    if bits > MAX_CA_RSA_BITS {
        return Err(Error::KeyTooLarge {
            algorithm: "RSA",
            bits,
            maximum: MAX_CA_RSA_BITS,
        });
    }
    if bits < MIN_CA_RSA_BITS {
        return Err(Error::WeakKey {
            algorithm: "RSA",
            bits,
            minimum: MIN_CA_RSA_BITS,
        });
    }
    Ok(())
}

/// Bit length of a big-endian unsigned integer.
pub(crate) fn modulus_bits(be: &[u8]) -> usize {
    let Some(pos) = be.iter().position(|b| *b != 0) else {
        return 0;
    };
    (be.len() - pos) * 8 - be[pos].leading_zeros() as usize
}

/// The signature algorithm a PKCS#8 key signs with.
fn algorithm_of(pkcs8_der: &[u8], what: &'static str) -> Result<&'static SignatureAlgorithm> {
    let info = PrivateKeyInfo::from_der(pkcs8_der).map_err(|e| Error::PrivateKey {
        what,
        problem: format!("not PKCS#8: {e}"),
    })?;
    let oid = info.algorithm.oid;
    if oid == RSA_ENCRYPTION {
        check_rsa_bits(info.private_key, what)?;
        Ok(&rcgen::PKCS_RSA_SHA256)
    } else if oid == ED25519 {
        Ok(&rcgen::PKCS_ED25519)
    } else if oid == EC_PUBLIC_KEY {
        let curve = info
            .algorithm
            .parameters_oid()
            .map_err(|_| Error::PrivateKey {
                what,
                problem: "ECDSA key without a named curve".into(),
            })?;
        match curve {
            c if c == P256 => Ok(&rcgen::PKCS_ECDSA_P256_SHA256),
            c if c == P384 => Ok(&rcgen::PKCS_ECDSA_P384_SHA384),
            c if c == P521 => Err(Error::UnsupportedAlgorithm("ECDSA P-521".into())),
            other => Err(Error::UnsupportedAlgorithm(format!(
                "ECDSA on curve {other}"
            ))),
        }
    } else {
        Err(Error::UnsupportedAlgorithm(format!(
            "private key algorithm {oid}"
        )))
    }
}

/// SEC1 `EC PRIVATE KEY` → PKCS#8, keeping the curve from its parameters.
fn sec1_to_pkcs8(sec1_der: &[u8], what: &'static str) -> Result<Zeroizing<Vec<u8>>> {
    let key = sec1::EcPrivateKey::from_der(sec1_der).map_err(|e| Error::PrivateKey {
        what,
        problem: format!("not a SEC1 EC key: {e}"),
    })?;
    let curve = key
        .parameters
        .and_then(|p| p.named_curve())
        .ok_or_else(|| Error::PrivateKey {
            what,
            problem: "EC key without a named curve".into(),
        })?;
    let curve_der = curve.to_der().map_err(|e| Error::PrivateKey {
        what,
        problem: e.to_string(),
    })?;
    let parameters = AnyRef::from_der(&curve_der).map_err(|e| Error::PrivateKey {
        what,
        problem: e.to_string(),
    })?;
    let info = PrivateKeyInfo::new(
        AlgorithmIdentifierRef {
            oid: EC_PUBLIC_KEY,
            parameters: Some(parameters),
        },
        sec1_der,
    );
    info.to_der()
        .map(Zeroizing::new)
        .map_err(|e| Error::PrivateKey {
            what,
            problem: e.to_string(),
        })
}

/// Reads a private key from PEM (PKCS#8, PKCS#1 RSA or SEC1 EC), at most
/// [`crate::MAX_INPUT_BYTES`] long; RSA keys must have between
/// [`MIN_CA_RSA_BITS`] and [`MAX_CA_RSA_BITS`] bits.
pub(crate) fn key_pair_from_pem(pem_bytes: &[u8], what: &'static str) -> Result<KeyPair> {
    if pem_bytes.len() > crate::MAX_INPUT_BYTES {
        return Err(Error::TooLarge {
            what,
            size: pem_bytes.len(),
            limit: crate::MAX_INPUT_BYTES,
        });
    }
    let blocks = pem::parse_many(pem_bytes).map_err(|e| Error::Pem {
        what,
        problem: e.to_string(),
    })?;
    let block = blocks
        .iter()
        .find(|b| b.tag().ends_with("PRIVATE KEY"))
        .ok_or_else(|| Error::Pem {
            what,
            problem: "no PRIVATE KEY block".into(),
        })?;
    let pkcs8: Zeroizing<Vec<u8>> = match block.tag() {
        "PRIVATE KEY" => Zeroizing::new(block.contents().to_vec()),
        "RSA PRIVATE KEY" => {
            check_rsa_bits(block.contents(), what)?;
            let key = rsa::RsaPrivateKey::from_pkcs1_der(block.contents()).map_err(|e| {
                Error::PrivateKey {
                    what,
                    problem: format!("not a PKCS#1 RSA key: {e}"),
                }
            })?;
            let doc = key.to_pkcs8_der().map_err(|e| Error::PrivateKey {
                what,
                problem: e.to_string(),
            })?;
            Zeroizing::new(doc.as_bytes().to_vec())
        }
        "EC PRIVATE KEY" => sec1_to_pkcs8(block.contents(), what)?,
        other => {
            return Err(Error::Pem {
                what,
                problem: format!("unsupported key block {other:?}"),
            });
        }
    };
    let alg = algorithm_of(&pkcs8, what)?;
    KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8.as_slice().into(), alg).map_err(|e| {
        Error::PrivateKey {
            what,
            problem: e.to_string(),
        }
    })
}

/// Generates a key for `alg`. RSA keys come from the `rsa` crate (ring
/// cannot generate them) and are then used through ring like any other.
pub(crate) fn generate(alg: KeyAlgorithm) -> Result<KeyPair> {
    use KeyAlgorithm as A;
    let crypto = |e: rcgen::Error| Error::Crypto {
        what: "key generation",
        problem: e.to_string(),
    };
    match alg {
        A::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(crypto),
        A::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).map_err(crypto),
        A::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(crypto),
        A::Rsa2048 | A::Rsa3072 | A::Rsa4096 => {
            let bits = match alg {
                A::Rsa2048 => 2048,
                A::Rsa3072 => 3072,
                _ => 4096,
            };
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits).map_err(|e| {
                Error::Crypto {
                    what: "RSA key generation",
                    problem: e.to_string(),
                }
            })?;
            let doc = key.to_pkcs8_der().map_err(|e| Error::Crypto {
                what: "RSA key encoding",
                problem: e.to_string(),
            })?;
            KeyPair::from_pkcs8_der_and_sign_algo(&doc.as_bytes().into(), &rcgen::PKCS_RSA_SHA256)
                .map_err(crypto)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs1::UintRef;

    /// A structurally valid PKCS#1 key whose modulus has `bits` bits (the
    /// numbers are not a real key: the size check must come first).
    fn pkcs1_with_modulus_bits(bits: usize) -> Vec<u8> {
        let mut modulus = vec![0xffu8; bits.div_ceil(8)];
        modulus[0] = 0xff >> (bits.div_ceil(8) * 8 - bits);
        let one = [1u8];
        let three = [3u8];
        let key = rsa::pkcs1::RsaPrivateKey {
            modulus: UintRef::new(&modulus).expect("modulus"),
            public_exponent: UintRef::new(&three).expect("e"),
            private_exponent: UintRef::new(&one).expect("d"),
            prime1: UintRef::new(&three).expect("p"),
            prime2: UintRef::new(&three).expect("q"),
            exponent1: UintRef::new(&one).expect("dp"),
            exponent2: UintRef::new(&one).expect("dq"),
            coefficient: UintRef::new(&one).expect("qinv"),
            other_prime_infos: None,
        };
        key.to_der().expect("der")
    }

    fn pem(tag: &str, der: Vec<u8>) -> Vec<u8> {
        pem::encode(&pem::Pem::new(tag, der)).into_bytes()
    }

    #[test]
    fn modulus_bits_counts_bits_not_bytes() {
        assert_eq!(modulus_bits(&[]), 0);
        assert_eq!(modulus_bits(&[0, 0]), 0);
        assert_eq!(modulus_bits(&[1]), 1);
        assert_eq!(modulus_bits(&[0, 0x80, 0]), 16);
        assert_eq!(modulus_bits(&[0x7f, 0xff]), 15);
    }

    #[test]
    fn huge_rsa_ca_keys_are_refused_before_any_arithmetic() {
        for bits in [4097, 8192, 16_384, 65_536] {
            let der = pkcs1_with_modulus_bits(bits);
            let started = std::time::Instant::now();
            let Err(err) = key_pair_from_pem(&pem("RSA PRIVATE KEY", der), "tls.key") else {
                panic!("an RSA {bits} key loaded");
            };
            assert_eq!(
                err,
                Error::KeyTooLarge {
                    algorithm: "RSA",
                    bits,
                    maximum: MAX_CA_RSA_BITS
                }
            );
            assert!(
                err.to_string()
                    .contains(&format!("has {bits} bits; at most 4096")),
                "{err}"
            );
            assert!(started.elapsed() < std::time::Duration::from_secs(1));
        }
    }

    #[test]
    fn huge_and_weak_rsa_keys_in_pkcs8_are_refused() {
        let wrap = |bits: usize| {
            let pkcs1 = pkcs1_with_modulus_bits(bits);
            let info = PrivateKeyInfo::new(
                AlgorithmIdentifierRef {
                    oid: RSA_ENCRYPTION,
                    parameters: Some(AnyRef::NULL),
                },
                &pkcs1,
            );
            pem("PRIVATE KEY", info.to_der().expect("der"))
        };
        assert!(matches!(
            key_pair_from_pem(&wrap(16_384), "tls.key"),
            Err(Error::KeyTooLarge { bits: 16_384, .. })
        ));
        assert!(matches!(
            key_pair_from_pem(&wrap(1024), "tls.key"),
            Err(Error::WeakKey { bits: 1024, .. })
        ));
        assert!(matches!(
            key_pair_from_pem(
                &pem("RSA PRIVATE KEY", pkcs1_with_modulus_bits(1024)),
                "tls.key"
            ),
            Err(Error::WeakKey {
                bits: 1024,
                minimum: 2048,
                ..
            })
        ));
    }

    #[test]
    fn key_pem_over_the_size_limit_is_refused_unparsed() {
        let mut big = b"-----BEGIN PRIVATE KEY-----\n".to_vec();
        big.resize(crate::MAX_INPUT_BYTES + 1, b'A');
        assert!(matches!(
            key_pair_from_pem(&big, "tls.key"),
            Err(Error::TooLarge {
                what: "tls.key",
                ..
            })
        ));
    }
}
