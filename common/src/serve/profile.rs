//! TLS security profiles, as OpenShift's `tlsSecurityProfile` names them,
//! turned into rustls protocol versions and cipher suites.
//!
//! * `Intermediate` (default): TLS 1.2 and 1.3, AEAD ECDHE suites only;
//! * `Modern`: TLS 1.3 only;
//! * `Custom`: `minTLSVersion` and a cipher list, in OpenSSL or IANA names;
//! * `Old` is refused: it needs TLS 1.0/1.1 and CBC suites, which rustls does
//!   not implement (and no scraper needs).
//!
//! As in Go's crypto/tls, TLS 1.3 suites are always on when TLS 1.3 is,
//! unless the custom list names some of them.

use rustls::SupportedCipherSuite;
use rustls::crypto::ring::cipher_suite as suite;

use crate::error::Error;

/// A TLS protocol version a profile can require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

/// The profile type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProfileType {
    /// Mozilla's intermediate compatibility.
    #[default]
    Intermediate,
    /// Mozilla's modern compatibility: TLS 1.3 only.
    Modern,
    /// `minTLSVersion` and ciphers given by the user.
    Custom,
}

impl std::str::FromStr for ProfileType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "Intermediate" => Ok(Self::Intermediate),
            "Modern" => Ok(Self::Modern),
            "Custom" => Ok(Self::Custom),
            "Old" => Err(Error::Config(
                "TLS security profile \"Old\" is not supported: it needs TLS 1.0/1.1 and CBC \
                 ciphers, which capstan (rustls) does not implement; use \"Intermediate\""
                    .into(),
            )),
            other => Err(Error::Config(format!(
                "unknown TLS security profile {other:?}: expected \"Intermediate\", \"Modern\" \
                 or \"Custom\""
            ))),
        }
    }
}

/// A resolved profile: versions and suites to offer.
#[derive(Debug, Clone)]
pub struct TlsProfile {
    /// Lowest version accepted.
    pub min_version: TlsVersion,
    /// Cipher suites, TLS 1.3 ones first.
    pub cipher_suites: Vec<SupportedCipherSuite>,
}

/// One cipher: its OpenSSL name, its IANA name, and the rustls suite.
const CIPHERS: [(&str, &str, SupportedCipherSuite); 9] = [
    (
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_128_GCM_SHA256",
        suite::TLS13_AES_128_GCM_SHA256,
    ),
    (
        "TLS_AES_256_GCM_SHA384",
        "TLS_AES_256_GCM_SHA384",
        suite::TLS13_AES_256_GCM_SHA384,
    ),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_CHACHA20_POLY1305_SHA256",
        suite::TLS13_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

fn is_tls13(s: SupportedCipherSuite) -> bool {
    matches!(s, SupportedCipherSuite::Tls13(_))
}

fn cipher(name: &str) -> Result<SupportedCipherSuite, Error> {
    let wanted = name.trim();
    if let Some((_, _, s)) = CIPHERS
        .iter()
        .find(|(openssl, iana, _)| *openssl == wanted || *iana == wanted)
    {
        return Ok(*s);
    }
    let known: Vec<&str> = CIPHERS.iter().map(|(openssl, _, _)| *openssl).collect();
    Err(Error::Config(format!(
        "cipher {wanted:?} is not supported: capstan offers only AEAD suites with forward \
         secrecy, one of {}",
        known.join(", ")
    )))
}

fn version(name: &str) -> Result<TlsVersion, Error> {
    match name {
        "VersionTLS12" => Ok(TlsVersion::Tls12),
        "VersionTLS13" => Ok(TlsVersion::Tls13),
        "VersionTLS10" | "VersionTLS11" => Err(Error::Config(format!(
            "minTLSVersion {name:?} is not supported: rustls implements only TLS 1.2 and 1.3; \
             use \"VersionTLS12\""
        ))),
        other => Err(Error::Config(format!(
            "unknown minTLSVersion {other:?}: expected \"VersionTLS12\" or \"VersionTLS13\""
        ))),
    }
}

impl TlsProfile {
    /// Resolves a profile. `min_version` and `ciphers` are the `custom`
    /// fields and may only be given with [`ProfileType::Custom`].
    ///
    /// # Errors
    /// An unsupported version or cipher, custom fields on a predefined
    /// profile, or a custom profile that would leave no usable suite.
    pub fn resolve(
        kind: ProfileType,
        min_version: Option<&str>,
        ciphers: &[String],
    ) -> Result<Self, Error> {
        let all = CIPHERS.iter().map(|(_, _, s)| *s);
        match kind {
            ProfileType::Intermediate | ProfileType::Modern
                if min_version.is_some() || !ciphers.is_empty() =>
            {
                Err(Error::Config(
                    "minTLSVersion and ciphers apply only to the \"Custom\" TLS security profile"
                        .into(),
                ))
            }
            ProfileType::Intermediate => Ok(Self {
                min_version: TlsVersion::Tls12,
                cipher_suites: all.collect(),
            }),
            ProfileType::Modern => Ok(Self {
                min_version: TlsVersion::Tls13,
                cipher_suites: all.filter(|s| is_tls13(*s)).collect(),
            }),
            ProfileType::Custom => {
                let min_version = version(min_version.ok_or_else(|| {
                    Error::Config("the \"Custom\" TLS security profile needs minTLSVersion".into())
                })?)?;
                let listed = ciphers
                    .iter()
                    .map(|c| cipher(c))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut suites: Vec<_> = listed.iter().copied().filter(|s| is_tls13(*s)).collect();
                if suites.is_empty() {
                    suites = all.filter(|s| is_tls13(*s)).collect();
                }
                if min_version == TlsVersion::Tls12 {
                    let tls12: Vec<_> = listed.iter().copied().filter(|s| !is_tls13(*s)).collect();
                    if tls12.is_empty() {
                        return Err(Error::Config(
                            "minTLSVersion VersionTLS12 needs at least one TLS 1.2 cipher \
                             (for example ECDHE-ECDSA-AES128-GCM-SHA256)"
                                .into(),
                        ));
                    }
                    suites.extend(tls12);
                }
                Ok(Self {
                    min_version,
                    cipher_suites: suites,
                })
            }
        }
    }

    /// The rustls protocol versions to enable.
    #[must_use]
    pub fn versions(&self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static BOTH: [&rustls::SupportedProtocolVersion; 2] =
            [&rustls::version::TLS13, &rustls::version::TLS12];
        static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self.min_version {
            TlsVersion::Tls12 => &BOTH,
            TlsVersion::Tls13 => &TLS13_ONLY,
        }
    }

    /// A ring crypto provider offering exactly this profile's suites.
    #[must_use]
    pub fn provider(&self) -> rustls::crypto::CryptoProvider {
        rustls::crypto::CryptoProvider {
            cipher_suites: self.cipher_suites.clone(),
            ..rustls::crypto::ring::default_provider()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &TlsProfile) -> Vec<String> {
        p.cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect()
    }

    #[test]
    fn intermediate_offers_tls12_and_tls13() {
        let p = TlsProfile::resolve(ProfileType::Intermediate, None, &[]).expect("profile");
        assert_eq!(p.min_version, TlsVersion::Tls12);
        assert_eq!(p.cipher_suites.len(), 9);
        assert_eq!(p.versions().len(), 2);
    }

    #[test]
    fn modern_is_tls13_only() {
        let p = TlsProfile::resolve(ProfileType::Modern, None, &[]).expect("profile");
        assert_eq!(p.versions().len(), 1);
        assert!(p.cipher_suites.iter().all(|s| is_tls13(*s)));
    }

    #[test]
    fn old_and_unknown_profiles_are_refused_by_name() {
        let old = "Old".parse::<ProfileType>().expect_err("old").to_string();
        assert!(old.contains("\"Old\" is not supported"), "{old}");
        let odd = "Paranoid"
            .parse::<ProfileType>()
            .expect_err("odd")
            .to_string();
        assert!(odd.contains("Paranoid"), "{odd}");
    }

    #[test]
    fn custom_takes_openssl_and_iana_names() {
        let p = TlsProfile::resolve(
            ProfileType::Custom,
            Some("VersionTLS12"),
            &[
                "ECDHE-ECDSA-AES128-GCM-SHA256".into(),
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384".into(),
            ],
        )
        .expect("profile");
        let n = names(&p);
        assert_eq!(n.len(), 5, "{n:?}");
        assert!(n.iter().any(|s| s.contains("ECDHE_ECDSA_WITH_AES_128_GCM")));
        assert!(n.iter().any(|s| s.contains("ECDHE_RSA_WITH_AES_256_GCM")));
    }

    #[test]
    fn custom_refuses_unknown_ciphers_and_old_versions_by_name() {
        let e = TlsProfile::resolve(
            ProfileType::Custom,
            Some("VersionTLS12"),
            &["ECDHE-RSA-AES128-SHA".into()],
        )
        .expect_err("cbc")
        .to_string();
        assert!(e.contains("\"ECDHE-RSA-AES128-SHA\""), "{e}");
        let e = TlsProfile::resolve(ProfileType::Custom, Some("VersionTLS10"), &[])
            .expect_err("tls1.0")
            .to_string();
        assert!(e.contains("VersionTLS10"), "{e}");
        assert!(TlsProfile::resolve(ProfileType::Custom, None, &[]).is_err());
        assert!(TlsProfile::resolve(ProfileType::Custom, Some("VersionTLS12"), &[]).is_err());
        assert!(
            TlsProfile::resolve(ProfileType::Modern, Some("VersionTLS13"), &[]).is_err(),
            "custom fields on a predefined profile"
        );
    }

    #[test]
    fn custom_tls13_only_needs_no_cipher_list() {
        let p = TlsProfile::resolve(ProfileType::Custom, Some("VersionTLS13"), &[]).expect("p");
        assert_eq!(p.cipher_suites.len(), 3);
    }
}
