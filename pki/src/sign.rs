//! Signing a leaf from a request, under the issuer's leaf policy.
//!
//! Usages are cert-manager's strings, mapped to KeyUsage and
//! ExtendedKeyUsage exactly as cert-manager maps them
//! (`pkg/apis/certmanager/v1` `KeyUsage*`, `pkg/util/pki` `BuildKeyUsages`).

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, ExtendedKeyUsagePurpose as Eku, IsCa, KeyIdMethod, KeyUsagePurpose as Ku,
};
use time::OffsetDateTime;

use crate::ca::{SigningCa, random_serial};
use crate::cert::{self, Summary};
use crate::csr::ParsedCsr;
use crate::error::{Error, Result};

/// Usages when a request asks for none.
pub const DEFAULT_USAGES: [&str; 3] = ["digital signature", "key encipherment", "server auth"];

/// Every usage string cert-manager names (its `KeyUsage` API type), each of
/// which [`is_known_usage`] maps to a KeyUsage or ExtendedKeyUsage.
pub const USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

/// One cert-manager usage string.
enum Usage {
    Key(Ku),
    Extended(Eku),
}

fn usage(name: &str) -> Option<Usage> {
    Some(match name {
        "signing" | "digital signature" => Usage::Key(Ku::DigitalSignature),
        "content commitment" => Usage::Key(Ku::ContentCommitment),
        "key encipherment" => Usage::Key(Ku::KeyEncipherment),
        "key agreement" => Usage::Key(Ku::KeyAgreement),
        "data encipherment" => Usage::Key(Ku::DataEncipherment),
        "cert sign" => Usage::Key(Ku::KeyCertSign),
        "crl sign" => Usage::Key(Ku::CrlSign),
        "encipher only" => Usage::Key(Ku::EncipherOnly),
        "decipher only" => Usage::Key(Ku::DecipherOnly),
        "any" => Usage::Extended(Eku::Any),
        "server auth" => Usage::Extended(Eku::ServerAuth),
        "client auth" => Usage::Extended(Eku::ClientAuth),
        "code signing" => Usage::Extended(Eku::CodeSigning),
        "email protection" | "s/mime" => Usage::Extended(Eku::EmailProtection),
        "ipsec end system" => Usage::Extended(Eku::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 5])),
        "ipsec tunnel" => Usage::Extended(Eku::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 6])),
        "ipsec user" => Usage::Extended(Eku::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 7])),
        "timestamping" => Usage::Extended(Eku::TimeStamping),
        "ocsp signing" => Usage::Extended(Eku::OcspSigning),
        "microsoft sgc" => Usage::Extended(Eku::Other(vec![1, 3, 6, 1, 4, 1, 311, 10, 3, 3])),
        "netscape sgc" => Usage::Extended(Eku::Other(vec![2, 16, 840, 1, 113_730, 4, 1])),
        _ => return None,
    })
}

/// Whether `name` is one of cert-manager's usage strings.
#[must_use]
pub fn is_known_usage(name: &str) -> bool {
    usage(name).is_some()
}

/// What a request asks for besides its CSR.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeafRequest {
    /// Requested lifetime; the policy default when `None`.
    pub duration: Option<Duration>,
    /// Requested `isCA`.
    pub is_ca: bool,
    /// cert-manager usage strings; [`DEFAULT_USAGES`] when empty.
    pub usages: Vec<String>,
}

/// What an issuer allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafPolicy {
    /// Lifetime when the request names none.
    pub default_duration: Duration,
    /// Longest lifetime; longer requests are shortened.
    pub max_duration: Duration,
    /// Usages a request may ask for; empty: any.
    pub allowed_usages: Vec<String>,
    /// DNS domains every DNS SAN must equal or fall under; empty: any.
    /// A leading dot (`.example.com`) permits subdomains only.
    pub permitted_dns_domains: Vec<String>,
    /// CIDR ranges every IP SAN must fall within; empty: any.
    pub permitted_ip_ranges: Vec<String>,
}

/// Why a lifetime was shortened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Truncation {
    /// To the issuer's `maxDuration`.
    MaxDuration {
        /// What was asked.
        requested: Duration,
        /// What was granted.
        granted: Duration,
    },
    /// To the CA's own expiry.
    CaExpiry {
        /// The CA's notAfter, which is the leaf's.
        not_after: OffsetDateTime,
    },
}

impl std::fmt::Display for Truncation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MaxDuration { requested, granted } => write!(
                f,
                "the requested duration of {}s was shortened to the issuer's maxDuration of {}s",
                requested.as_secs(),
                granted.as_secs()
            ),
            Self::CaExpiry { not_after } => {
                write!(
                    f,
                    "the certificate's lifetime was shortened to end with the CA's at {not_after}"
                )
            }
        }
    }
}

/// A signed leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedLeaf {
    /// The leaf, PEM.
    pub certificate_pem: String,
    /// The leaf followed by the CA chain up to (not including) the root, PEM:
    /// `status.certificate`.
    pub chain_pem: String,
    /// The root CA, PEM: `status.ca`.
    pub ca_pem: String,
    /// The leaf's summary.
    pub summary: Summary,
    /// Whether and why the lifetime was shortened.
    pub truncated: Option<Truncation>,
}

/// Parses an IP range in CIDR notation (`10.0.0.0/8`, `fd00::/8`) into its
/// address and prefix length; `None` when it is not one.
#[must_use]
pub fn parse_cidr(cidr: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = cidr.split_once('/')?;
    let addr: IpAddr = addr.trim().parse().ok()?;
    let len: u8 = len.trim().parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}

fn in_net(ip: IpAddr, (net, len): (IpAddr, u8)) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// RFC 5280 §4.2.1.10 DNS matching: `example.com` permits itself and its
/// subdomains, `.example.com` only subdomains.
fn dns_permitted(name: &str, domain: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if let Some(sub) = domain.strip_prefix('.') {
        name.ends_with(&format!(".{sub}"))
    } else {
        name == domain || name.ends_with(&format!(".{domain}"))
    }
}

impl LeafPolicy {
    /// Checks the request's names against the constraints.
    ///
    /// # Errors
    /// [`Error::NameNotPermitted`] naming the first offending SAN.
    pub fn check_names(&self, csr: &ParsedCsr) -> Result<()> {
        let outside_dns = |n: &&String| {
            !self
                .permitted_dns_domains
                .iter()
                .any(|d| dns_permitted(n, d))
        };
        if !self.permitted_dns_domains.is_empty()
            && let Some(bad) = csr.dns_names.iter().find(outside_dns)
        {
            return Err(Error::NameNotPermitted(format!(
                "DNS name {bad:?} is outside the issuer's permitted domains ({})",
                self.permitted_dns_domains.join(", ")
            )));
        }
        if !self.permitted_ip_ranges.is_empty() {
            let nets: Vec<(IpAddr, u8)> = self
                .permitted_ip_ranges
                .iter()
                .filter_map(|c| parse_cidr(c))
                .collect();
            if let Some(bad) = csr
                .ip_addresses
                .iter()
                .find(|ip| !nets.iter().any(|n| in_net(**ip, *n)))
            {
                return Err(Error::NameNotPermitted(format!(
                    "IP address {bad} is outside the issuer's permitted ranges ({})",
                    self.permitted_ip_ranges.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// The usages to put in the leaf: requested (or the defaults), plus
    /// `cert sign` for a CA, each checked against the allowed list.
    fn usages(&self, request: &LeafRequest) -> Result<(Vec<Ku>, Vec<Eku>)> {
        let mut names: Vec<&str> = if request.usages.is_empty() {
            DEFAULT_USAGES.to_vec()
        } else {
            request.usages.iter().map(String::as_str).collect()
        };
        if request.is_ca && !names.contains(&"cert sign") {
            names.push("cert sign");
        }
        let (mut ku, mut eku) = (Vec::new(), Vec::new());
        for name in names {
            let Some(parsed) = usage(name) else {
                return Err(Error::Usage(format!("unknown usage {name:?}")));
            };
            if !self.allowed_usages.is_empty() && !self.allowed_usages.iter().any(|a| a == name) {
                return Err(Error::Usage(format!(
                    "usage {name:?} is not allowed by the issuer (allowed: {})",
                    self.allowed_usages.join(", ")
                )));
            }
            match parsed {
                Usage::Key(k) if !ku.contains(&k) => ku.push(k),
                Usage::Extended(e) if !eku.contains(&e) => eku.push(e),
                _ => {}
            }
        }
        Ok((ku, eku))
    }
}

impl SigningCa {
    /// Signs a leaf for `csr`.
    ///
    /// # Errors
    /// A request without names, outside the name constraints, with an
    /// unknown or disallowed usage; or a signing failure.
    pub fn sign(
        &self,
        csr: &ParsedCsr,
        request: &LeafRequest,
        policy: &LeafPolicy,
        now: OffsetDateTime,
    ) -> Result<SignedLeaf> {
        let no_sans = csr.dns_names.is_empty()
            && csr.ip_addresses.is_empty()
            && csr.uris.is_empty()
            && csr.emails.is_empty();
        if csr.subject_is_empty() && no_sans {
            return Err(Error::NoNames);
        }
        policy.check_names(csr)?;
        let (key_usages, extended) = policy.usages(request)?;

        let asked = request.duration.unwrap_or(policy.default_duration);
        let mut truncated = None;
        let mut granted = asked;
        if asked > policy.max_duration {
            granted = policy.max_duration;
            truncated = Some(Truncation::MaxDuration {
                requested: asked,
                granted,
            });
        }
        // A lifetime past the end of time ends with the CA, and says so.
        let mut not_after = time::Duration::try_from(granted)
            .ok()
            .and_then(|d| now.checked_add(d))
            .unwrap_or(time::PrimitiveDateTime::MAX.assume_utc());
        if not_after > self.summary.not_after {
            not_after = self.summary.not_after;
            truncated = Some(Truncation::CaExpiry { not_after });
        }

        let mut params = csr.params.clone();
        let leaf = &mut params.params;
        leaf.not_before = now;
        leaf.not_after = not_after;
        leaf.serial_number = Some(random_serial()?);
        leaf.is_ca = if request.is_ca {
            IsCa::Ca(BasicConstraints::Unconstrained)
        } else {
            IsCa::ExplicitNoCa
        };
        leaf.key_usages = key_usages;
        leaf.extended_key_usages = extended;
        leaf.use_authority_key_identifier_extension = true;
        leaf.key_identifier_method = KeyIdMethod::Sha256;
        leaf.name_constraints = None;
        leaf.custom_extensions.clear();
        leaf.crl_distribution_points.clear();

        let cert = params
            .params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|e| Error::Crypto {
                what: "signing",
                problem: e.to_string(),
            })?;
        let certificate_pem = cert::to_pem(cert.der());
        let summary = cert::summarize(cert.der())?;
        Ok(SignedLeaf {
            chain_pem: format!("{certificate_pem}{}", self.chain_pem),
            certificate_pem,
            ca_pem: self.root_pem.clone(),
            summary,
            truncated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_constraints_follow_rfc_5280() {
        assert!(dns_permitted("a.svc.cluster.local", "svc.cluster.local"));
        assert!(dns_permitted("svc.cluster.local", "svc.cluster.local"));
        assert!(!dns_permitted("svc.cluster.local", ".svc.cluster.local"));
        assert!(!dns_permitted("evilsvc.cluster.local", "svc.cluster.local"));
        assert!(dns_permitted("A.Example.COM.", "example.com"));
    }

    #[test]
    fn ip_ranges() {
        let net = parse_cidr("10.0.0.0/8").expect("cidr");
        assert!(in_net("10.1.2.3".parse().expect("ip"), net));
        assert!(!in_net("11.0.0.1".parse().expect("ip"), net));
        assert!(!in_net("::1".parse().expect("ip"), net));
        assert!(in_net(
            "fd00::1".parse().expect("ip"),
            parse_cidr("fd00::/8").expect("cidr")
        ));
        assert_eq!(parse_cidr("10.0.0.0/33"), None);
    }

    #[test]
    fn every_cert_manager_usage_is_known() {
        for u in USAGES {
            assert!(is_known_usage(u), "{u}");
        }
        assert!(!is_known_usage("teleport"));
    }
}
