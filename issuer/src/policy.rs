//! From an issuer's `spec` to the values the issuer works with: parsed
//! durations with their defaults, and the spec errors a user must fix.

use std::time::Duration;

use crate::api::ca_issuer::{IssuerSpec, KeyAlgorithm, SelfManagedCa};
use crate::api::rules::{self, field_message, value_message};
pub use crate::api::rules::{
    DEFAULT_CA_DURATION, DEFAULT_MAX_DURATION, DEFAULT_PROPAGATION_DELAY, DEFAULT_ROTATION_FRACTION,
};

/// A spec the issuer cannot work with; the message names the field, in the
/// words the CRD's validation uses ([`crate::api::rules`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

/// Where the CA comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum CaSource {
    /// A user-provided CA Secret.
    Secret {
        /// Secret name.
        secret_name: String,
    },
    /// A CA the issuer generates and rotates.
    SelfManaged(SelfManagedPolicy),
}

/// Resolved `spec.selfManaged`.
#[derive(Debug, Clone, PartialEq)]
pub struct SelfManagedPolicy {
    /// Secret the CA is kept in.
    pub secret_name: String,
    /// Subject common name of each generated CA.
    pub common_name: String,
    /// Key algorithm of each generated CA.
    pub key_algorithm: KeyAlgorithm,
    /// Lifetime of each CA.
    pub ca_duration: Duration,
    /// Rotation starts when this much lifetime is left.
    pub rotate_before: Duration,
    /// A new CA is in the bundle this long before it signs.
    pub propagation_delay: Duration,
    /// A retired CA stays in the bundle this long; `None`: until the last leaf
    /// it signed has expired.
    pub overlap: Option<Duration>,
}

/// Everything an issuer's spec decides, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct IssuerPolicy {
    /// The CA source.
    pub source: CaSource,
    /// Longest leaf lifetime.
    pub max_duration: Duration,
    /// Leaf lifetime when a request asks for none.
    pub default_duration: Duration,
    /// Usages a request may ask for; empty means any.
    pub allowed_usages: Vec<String>,
    /// Permitted DNS domains; empty means any.
    pub permitted_dns_domains: Vec<String>,
    /// Permitted IP ranges (CIDR); empty means any.
    pub permitted_ip_ranges: Vec<String>,
}

/// Parses a duration written as cert-manager writes them (Go's
/// `time.ParseDuration` syntax: `15s`, `5m`, `2160h`, `1h30m`), for a
/// request's `spec.duration`.
///
/// # Errors
/// When the text is not a duration, or is zero or negative.
pub fn parse_duration(field: &str, text: &str) -> Result<Duration, SpecError> {
    capstan_common::cli::parse_duration(text).map_err(|e| SpecError(format!("{field}: {e}")))
}

/// A duration field of the spec, as the CRD's rule reads it.
fn spec_duration(field: &str, text: Option<&str>) -> Result<Option<Duration>, SpecError> {
    text.map(|t| rules::duration(field, t).map_err(SpecError))
        .transpose()
}

/// Resolves `spec` for the issuer called `issuer_name`.
///
/// # Errors
/// The first rule of [`crate::api::rules`] `spec` breaks.
pub fn resolve(issuer_name: &str, spec: &IssuerSpec) -> Result<IssuerPolicy, SpecError> {
    let source = match (&spec.ca, &spec.self_managed) {
        (Some(ca), None) => {
            if ca.secret_name.is_empty() {
                return Err(SpecError(field_message(
                    "spec.ca.secretName",
                    rules::MUST_NOT_BE_EMPTY,
                )));
            }
            CaSource::Secret {
                secret_name: ca.secret_name.clone(),
            }
        }
        (None, Some(managed)) => CaSource::SelfManaged(resolve_self_managed(issuer_name, managed)?),
        (Some(_), Some(_)) => return Err(SpecError(rules::SET_ONLY_ONE_SOURCE.into())),
        (None, None) => return Err(SpecError(rules::SET_ONE_SOURCE.into())),
    };
    let max_duration = spec_duration("spec.maxDuration", spec.max_duration.as_deref())?
        .unwrap_or(DEFAULT_MAX_DURATION);
    let default_duration = spec_duration("spec.defaultDuration", spec.default_duration.as_deref())?
        .unwrap_or(max_duration);
    if default_duration > max_duration {
        return Err(SpecError(rules::DEFAULT_OVER_MAX.into()));
    }
    if let Some(usage) = spec
        .allowed_usages
        .iter()
        .find(|u| !rules::USAGES.contains(&u.as_str()))
    {
        return Err(SpecError(value_message(
            "spec.allowedUsages",
            usage,
            rules::UNKNOWN_USAGE,
        )));
    }
    let constraints = spec.name_constraints.clone().unwrap_or_default();
    if let Some(bad) = constraints
        .permitted_dns_domains
        .iter()
        .find(|d| !rules::is_dns_domain(d))
    {
        return Err(SpecError(value_message(
            "spec.nameConstraints.permittedDnsDomains",
            bad,
            rules::NOT_DNS_DOMAIN,
        )));
    }
    if let Some(bad) = constraints
        .permitted_ip_ranges
        .iter()
        .find(|r| !rules::is_cidr(r))
    {
        return Err(SpecError(value_message(
            "spec.nameConstraints.permittedIpRanges",
            bad,
            rules::NOT_CIDR,
        )));
    }
    Ok(IssuerPolicy {
        source,
        max_duration,
        default_duration,
        allowed_usages: spec.allowed_usages.clone(),
        permitted_dns_domains: constraints.permitted_dns_domains,
        permitted_ip_ranges: constraints.permitted_ip_ranges,
    })
}

fn resolve_self_managed(
    issuer_name: &str,
    spec: &SelfManagedCa,
) -> Result<SelfManagedPolicy, SpecError> {
    if spec.secret_name.is_empty() {
        return Err(SpecError(field_message(
            "spec.selfManaged.secretName",
            rules::MUST_NOT_BE_EMPTY,
        )));
    }
    let ca_duration = spec_duration("spec.selfManaged.duration", spec.duration.as_deref())?
        .unwrap_or(DEFAULT_CA_DURATION);
    if ca_duration > capstan_pki::ca::MAX_CA_LIFETIME {
        return Err(SpecError(field_message(
            "spec.selfManaged.duration",
            &rules::ca_too_long(),
        )));
    }
    if let Some(fraction) = spec.rotation_fraction
        && !(fraction > 0.0 && fraction < 1.0)
    {
        return Err(SpecError(field_message(
            "spec.selfManaged.rotationFraction",
            rules::ROTATION_FRACTION,
        )));
    }
    let rotate_before = match &spec.rotate_before {
        Some(text) => rules::duration("spec.selfManaged.rotateBefore", text).map_err(SpecError)?,
        None => ca_duration.mul_f64(spec.rotation_fraction.unwrap_or(DEFAULT_ROTATION_FRACTION)),
    };
    if rotate_before >= ca_duration {
        return Err(SpecError(rules::ROTATE_BEFORE_TOO_LONG.into()));
    }
    let propagation_delay = spec_duration(
        "spec.selfManaged.propagationDelay",
        spec.propagation_delay.as_deref(),
    )?
    .unwrap_or(DEFAULT_PROPAGATION_DELAY);
    let overlap = spec_duration("spec.selfManaged.overlap", spec.overlap.as_deref())?;
    if propagation_delay >= rotate_before {
        return Err(SpecError(rules::PROPAGATION_TOO_LONG.into()));
    }
    Ok(SelfManagedPolicy {
        secret_name: spec.secret_name.clone(),
        common_name: spec
            .common_name
            .clone()
            .unwrap_or_else(|| issuer_name.to_owned()),
        key_algorithm: spec.key_algorithm.unwrap_or_default(),
        ca_duration,
        rotate_before,
        propagation_delay,
        overlap,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ca_issuer::CaSecretSource;

    fn managed(f: impl FnOnce(&mut SelfManagedCa)) -> IssuerSpec {
        let mut m = SelfManagedCa {
            secret_name: "ca".into(),
            ..SelfManagedCa::default()
        };
        f(&mut m);
        IssuerSpec {
            self_managed: Some(m),
            ..IssuerSpec::default()
        }
    }

    #[test]
    fn parses_go_style_durations() {
        assert_eq!(parse_duration("f", "15s"), Ok(Duration::from_secs(15)));
        assert_eq!(
            parse_duration("f", "2160h"),
            Ok(Duration::from_secs(2160 * 3600))
        );
        assert_eq!(parse_duration("f", "1h30m"), Ok(Duration::from_secs(5400)));
        let err = parse_duration("spec.maxDuration", "ninety days").expect_err("not a duration");
        assert!(err.0.starts_with("spec.maxDuration:"), "{err}");
        assert!(parse_duration("f", "-5m").is_err());
        assert!(parse_duration("f", "0s").is_err());
    }

    #[test]
    fn defaults_follow_the_design() {
        let policy = resolve("monitoring-ca", &managed(|_| {})).expect("valid");
        assert_eq!(policy.max_duration, DEFAULT_MAX_DURATION);
        assert_eq!(policy.default_duration, DEFAULT_MAX_DURATION);
        let CaSource::SelfManaged(m) = policy.source else {
            panic!("self-managed")
        };
        assert_eq!(m.common_name, "monitoring-ca");
        assert_eq!(m.key_algorithm, KeyAlgorithm::EcdsaP256);
        assert_eq!(m.ca_duration, DEFAULT_CA_DURATION);
        assert_eq!(m.rotate_before, DEFAULT_CA_DURATION.mul_f64(1.0 / 3.0));
        assert_eq!(m.propagation_delay, DEFAULT_PROPAGATION_DELAY);
        assert_eq!(m.overlap, None);
    }

    #[test]
    fn exactly_one_source() {
        let both = IssuerSpec {
            ca: Some(CaSecretSource {
                secret_name: "x".into(),
            }),
            ..managed(|_| {})
        };
        assert!(
            resolve("i", &both)
                .expect_err("both")
                .0
                .contains("only one")
        );
        assert!(
            resolve("i", &IssuerSpec::default())
                .expect_err("none")
                .0
                .contains("one of")
        );
    }

    #[test]
    fn rotation_window_must_fit() {
        let spec = managed(|m| {
            m.duration = Some("10m".into());
            m.rotate_before = Some("10m".into());
        });
        assert!(resolve("i", &spec).is_err());
        let spec = managed(|m| {
            m.duration = Some("10m".into());
            m.rotate_before = Some("4m".into());
            m.propagation_delay = Some("5m".into());
        });
        assert!(
            resolve("i", &spec)
                .expect_err("delay too long")
                .0
                .contains("propagationDelay")
        );
        let spec = managed(|m| m.rotation_fraction = Some(1.5));
        assert!(resolve("i", &spec).is_err());
    }

    #[test]
    fn default_duration_cannot_exceed_max() {
        let spec = IssuerSpec {
            max_duration: Some("24h".into()),
            default_duration: Some("48h".into()),
            ..managed(|_| {})
        };
        assert!(resolve("i", &spec).is_err());
    }

    #[test]
    fn a_ca_lifetime_past_a_century_is_an_invalid_spec() {
        let spec = managed(|m| m.duration = Some("900000h".into()));
        let e = resolve("i", &spec).expect_err("too long").0;
        assert!(
            e.contains("spec.selfManaged.duration") && e.contains("100 years"),
            "{e}"
        );
    }

    #[test]
    fn a_malformed_ip_range_is_an_invalid_spec() {
        let spec = IssuerSpec {
            name_constraints: Some(crate::api::ca_issuer::NameConstraints {
                permitted_ip_ranges: vec!["10.0.0.0/8".into(), "10.0.0.0/33".into()],
                ..Default::default()
            }),
            ..managed(|_| {})
        };
        let e = resolve("i", &spec).expect_err("bad range").0;
        assert!(e.contains("10.0.0.0/33") && e.contains("CIDR"), "{e}");
    }

    #[test]
    fn unknown_allowed_usage_is_refused() {
        let spec = IssuerSpec {
            allowed_usages: vec!["server auth".into(), "teleport".into()],
            ..managed(|_| {})
        };
        assert!(
            resolve("i", &spec)
                .expect_err("unknown")
                .0
                .contains("teleport")
        );
    }
}
