//! The rules an issuer's spec must follow, written once for both places
//! that enforce them, so their words cannot drift apart:
//!
//! * the API server, at `kubectl apply`: each rule here is also a CEL rule
//!   (`x-kubernetes-validations`) in the CRD, whose message is built from
//!   the same constant;
//! * the issuer, for a spec that got past an older CRD: [`crate::policy`]
//!   checks the same rules and reports `InvalidSpec` with the same words.
//!
//! A rule on one field is reported by both as `<field>: <words>` (the API
//! server adds `Invalid value: "<type>"` between the two); a rule across
//! fields names them in its words.
//!
//! The CEL side is written so that a rule never fails by error: each
//! `duration()` is guarded by [`DURATION_PATTERN`], and a cross-field rule
//! holds while one of its fields is itself invalid (that field's own rule
//! reports it).

use std::sync::LazyLock;
use std::time::Duration;

use kube::core::{Message, Rule};
use regex::Regex;

/// Default `maxDuration`: 90 days, cert-manager's default certificate lifetime.
pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(90 * 24 * 3600);
/// Default lifetime of a self-managed root CA: 2 years.
pub const DEFAULT_CA_DURATION: Duration = Duration::from_secs(2 * 365 * 24 * 3600);
/// Default share of a CA's lifetime left when rotation starts.
pub const DEFAULT_ROTATION_FRACTION: f64 = 1.0 / 3.0;
/// Default time a new CA sits in the bundle before it signs.
pub const DEFAULT_PROPAGATION_DELAY: Duration = Duration::from_secs(5 * 60);

/// Go's duration syntax as cert-manager writes durations (`15s`, `1.5h`,
/// `2h45m`, `300ms`): one or more numbers, each with a unit. RE2 and Rust's
/// `regex` read it alike.
pub const DURATION_PATTERN: &str = r"^(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+$";
/// A duration that does not match [`DURATION_PATTERN`], is not positive,
/// or is past Go's range. (Past Go's range the API server's `duration()`
/// fails first and refuses it in its own words.)
pub const NOT_A_DURATION: &str =
    r#"is not a positive duration such as "15s", "5m", "1h30m" or "2160h" (at most 2562047h)"#;
/// Neither CA source is set.
pub const SET_ONE_SOURCE: &str = "set one of spec.ca or spec.selfManaged";
/// Both CA sources are set.
pub const SET_ONLY_ONE_SOURCE: &str = "set only one of spec.ca and spec.selfManaged";
/// A required name is empty.
pub const MUST_NOT_BE_EMPTY: &str = "must not be empty";
/// `defaultDuration` over `maxDuration` (or its default).
pub const DEFAULT_OVER_MAX: &str =
    "spec.defaultDuration must not exceed spec.maxDuration (default 2160h)";
/// `rotationFraction` outside (0, 1).
pub const ROTATION_FRACTION: &str = "must be between 0 and 1, exclusive";
/// `rotateBefore` not shorter than the CA's lifetime.
pub const ROTATE_BEFORE_TOO_LONG: &str =
    "spec.selfManaged.rotateBefore must be shorter than spec.selfManaged.duration (default 17520h)";
/// `propagationDelay` not shorter than the rotation window.
pub const PROPAGATION_TOO_LONG: &str = "spec.selfManaged.propagationDelay (default 5m) must be shorter than the rotation window (rotateBefore, or rotationFraction of duration)";
/// A usage cert-manager does not know.
pub const UNKNOWN_USAGE: &str = r#"is not a usage cert-manager knows, such as "server auth", "client auth" or "digital signature""#;
/// An entry of `permittedIpRanges` that is not CIDR.
pub const NOT_CIDR: &str = "is not an IP range in CIDR notation such as 10.0.0.0/8 or fd00::/8";
/// An entry of `permittedDnsDomains` that is not a domain.
pub const NOT_DNS_DOMAIN: &str = "is not a DNS domain such as example.com or .example.com";

/// A DNS domain for a name constraint: labels of letters, digits and
/// hyphens (not at either end), at most 63 characters each, and a leading
/// dot for "subdomains only" (RFC 5280 §4.2.1.10).
pub const DNS_DOMAIN_PATTERN: &str = r"^\.?[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$";
/// Longest DNS domain, leading dot included.
pub const DNS_DOMAIN_MAX: usize = 254;

/// Longest duration string the CRD accepts (keeps CEL's cost bounded).
pub const DURATION_MAX_LENGTH: u32 = 64;
/// Most entries in a list the CRD accepts (keeps CEL's cost bounded).
pub const LIST_MAX_ITEMS: u32 = 256;

/// Every usage cert-manager names, the ones a spec's `allowedUsages` may
/// list: the PKI's own list, which it maps to certificate extensions.
pub use capstan_pki::sign::USAGES;

/// The longest CA lifetime, in whole hours (100 years).
#[must_use]
pub fn max_ca_hours() -> u64 {
    capstan_pki::ca::MAX_CA_LIFETIME.as_secs() / 3600
}

/// A self-managed CA's `duration` over [`max_ca_hours`].
#[must_use]
pub fn ca_too_long() -> String {
    format!("must be at most {}h (100 years)", max_ca_hours())
}

fn regex(pattern: &str) -> Regex {
    // The patterns are constants, checked by the unit tests.
    Regex::new(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"))
}

static DURATION: LazyLock<Regex> = LazyLock::new(|| regex(DURATION_PATTERN));
static DNS_DOMAIN: LazyLock<Regex> = LazyLock::new(|| regex(DNS_DOMAIN_PATTERN));

/// `<path>: "<value>" <words>`, how a rule on one value reads.
#[must_use]
pub fn value_message(path: &str, value: &str, words: &str) -> String {
    format!("{path}: \"{value}\" {words}")
}

/// `<path>: <words>`, how a rule on one field reads.
#[must_use]
pub fn field_message(path: &str, words: &str) -> String {
    format!("{path}: {words}")
}

/// Parses a spec duration: [`DURATION_PATTERN`], positive, and within
/// Go's range.
///
/// # Errors
/// The message of the rule, for the field at `path`.
pub fn duration(path: &str, text: &str) -> Result<Duration, String> {
    if !DURATION.is_match(text) {
        return Err(value_message(path, text, NOT_A_DURATION));
    }
    capstan_pki::parse_duration(text).map_err(|_| value_message(path, text, NOT_A_DURATION))
}

/// Whether `text` is an IP range as the API server's `isCIDR()` reads
/// it (Go's `netip.ParsePrefix`): an address, a slash and a prefix length
/// in plain decimal, no spaces, no IPv4-mapped IPv6 address.
#[must_use]
pub fn is_cidr(text: &str) -> bool {
    let Some((addr, bits)) = text.split_once('/') else {
        return false;
    };
    let plain_decimal = !bits.is_empty()
        && bits.bytes().all(|b| b.is_ascii_digit())
        && (bits == "0" || !bits.starts_with('0'));
    let addr_ok = match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => v6.to_ipv4_mapped().is_none(),
        Ok(std::net::IpAddr::V4(_)) => true,
        Err(_) => false,
    };
    plain_decimal && addr_ok && capstan_pki::parse_cidr(text).is_some()
}

/// Whether `text` is a DNS domain for a name constraint
/// ([`DNS_DOMAIN_PATTERN`], at most [`DNS_DOMAIN_MAX`] characters).
#[must_use]
pub fn is_dns_domain(text: &str) -> bool {
    text.len() <= DNS_DOMAIN_MAX && DNS_DOMAIN.is_match(text)
}

/// `text` as a CEL string literal.
fn lit(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// CEL: whether duration string `expr` is valid (guards `duration()`).
fn valid_duration(expr: &str) -> String {
    format!(
        "({expr}.matches({}) && duration({expr}) > duration('0s'))",
        lit(DURATION_PATTERN)
    )
}

/// CEL: `expr` (an optional duration field of `object`) as a duration, or
/// `default`.
fn duration_or(object: &str, field: &str, default: &str) -> String {
    format!("duration(has({object}.{field}) ? {object}.{field} : '{default}')")
}

/// CEL: whether optional duration field `field` of `object` is unset or
/// valid.
fn unset_or_valid(object: &str, field: &str) -> String {
    format!(
        "(!has({object}.{field}) || {})",
        valid_duration(&format!("{object}.{field}"))
    )
}

/// Go-style hours of a whole-hour default, for CEL literals.
fn hours(d: Duration) -> String {
    format!("{}h", d.as_secs() / 3600)
}

/// The CEL rule of every duration field.
#[must_use]
pub fn duration_rule() -> Rule {
    Rule::new(valid_duration("self")).message(Message::Expression(format!(
        "'\"' + self + '\" ' + {}",
        lit(NOT_A_DURATION)
    )))
}

/// The CEL rule of a self-managed CA's `duration`: [`duration_rule`] and at
/// most [`max_ca_hours`].
#[must_use]
pub fn ca_duration_rule() -> Rule {
    Rule::new(format!(
        "!{} || duration(self) <= duration('{}h')",
        valid_duration("self"),
        max_ca_hours()
    ))
    .message(Message::Message(ca_too_long()))
}

/// The CEL rule of a required name.
#[must_use]
pub fn not_empty_rule() -> Rule {
    Rule::new("self != ''").message(MUST_NOT_BE_EMPTY)
}

/// The CEL rule of `rotationFraction`.
#[must_use]
pub fn rotation_fraction_rule() -> Rule {
    Rule::new("self > 0.0 && self < 1.0").message(ROTATION_FRACTION)
}

/// The CEL rules on the spec: exactly one CA source, and `defaultDuration`
/// within `maxDuration`.
#[must_use]
pub fn spec_rules() -> [Rule; 3] {
    [
        Rule::new("has(self.ca) || has(self.selfManaged)").message(SET_ONE_SOURCE),
        Rule::new("!(has(self.ca) && has(self.selfManaged))").message(SET_ONLY_ONE_SOURCE),
        Rule::new(format!(
            "!has(self.defaultDuration) || !{} || !{} || duration(self.defaultDuration) <= {}",
            valid_duration("self.defaultDuration"),
            unset_or_valid("self", "maxDuration"),
            duration_or("self", "maxDuration", &hours(DEFAULT_MAX_DURATION)),
        ))
        .message(DEFAULT_OVER_MAX)
        .field_path(".defaultDuration"),
    ]
}

/// The CEL rules across `spec.selfManaged`'s fields: the rotation window
/// fits in the CA's lifetime, and the propagation delay in the window.
#[must_use]
pub fn self_managed_rules() -> [Rule; 2] {
    let lifetime = duration_or("self", "duration", &hours(DEFAULT_CA_DURATION));
    let fraction = format!(
        "(has(self.rotationFraction) ? self.rotationFraction : {DEFAULT_ROTATION_FRACTION:?})"
    );
    let fraction_ok = "(!has(self.rotationFraction) || (self.rotationFraction > 0.0 && self.rotationFraction < 1.0))";
    let millis = |d: &str| format!("double({d}.getMilliseconds())");
    let window = format!(
        "(has(self.rotateBefore) ? {} : {} * {fraction})",
        millis("duration(self.rotateBefore)"),
        millis(&lifetime),
    );
    let delay = duration_or(
        "self",
        "propagationDelay",
        &format!("{}m", DEFAULT_PROPAGATION_DELAY.as_secs() / 60),
    );
    let all_valid = ["rotateBefore", "duration", "propagationDelay"]
        .map(|f| unset_or_valid("self", f))
        .join(" && ");
    [
        Rule::new(format!(
            "!has(self.rotateBefore) || !({all_valid}) || duration(self.rotateBefore) < {lifetime}"
        ))
        .message(ROTATE_BEFORE_TOO_LONG)
        .field_path(".rotateBefore"),
        Rule::new(format!(
            "!({all_valid} && {fraction_ok}) || {} < {window}",
            millis(&delay)
        ))
        .message(PROPAGATION_TOO_LONG)
        .field_path(".propagationDelay"),
    ]
}

/// The CEL rule of `allowedUsages`.
#[must_use]
pub fn usages_rule() -> Rule {
    let known = format!(
        "[{}]",
        USAGES.iter().map(|u| lit(u)).collect::<Vec<_>>().join(", ")
    );
    Rule::new(format!("self.all(u, u in {known})")).message(Message::Expression(format!(
        "'\"' + self.filter(u, !(u in {known}))[0] + '\" ' + {}",
        lit(UNKNOWN_USAGE)
    )))
}

/// The CEL rule of `permittedIpRanges`.
#[must_use]
pub fn ip_ranges_rule() -> Rule {
    Rule::new("self.all(r, isCIDR(r))").message(Message::Expression(format!(
        "'\"' + self.filter(r, !isCIDR(r))[0] + '\" ' + {}",
        lit(NOT_CIDR)
    )))
}

/// The CEL rule of `permittedDnsDomains`.
#[must_use]
pub fn dns_domains_rule() -> Rule {
    let ok = format!(
        "d.size() <= {DNS_DOMAIN_MAX} && d.matches({})",
        lit(DNS_DOMAIN_PATTERN)
    );
    Rule::new(format!("self.all(d, {ok})")).message(Message::Expression(format!(
        "'\"' + self.filter(d, !({ok}))[0] + '\" ' + {}",
        lit(NOT_DNS_DOMAIN)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_go_and_are_positive() {
        for good in ["15s", "5m", "2160h", "1h30m", "1.5h", ".5s", "300ms", "1µs"] {
            assert!(duration("f", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "0",
            "0s",
            "-5m",
            "+5m",
            " 5m",
            "5m ",
            "5",
            "ninety days",
            "1d",
            "1h 30m",
        ] {
            assert_eq!(
                duration("spec.maxDuration", bad),
                Err(format!("spec.maxDuration: \"{bad}\" {NOT_A_DURATION}")),
                "{bad}"
            );
        }
        assert!(duration("f", "3000000h").is_err(), "over Go's range");
    }

    #[test]
    fn cidrs_are_read_as_the_api_server_reads_them() {
        for good in [
            "10.0.0.0/8",
            "10.0.0.1/8",
            "0.0.0.0/0",
            "fd00::/8",
            "::1/128",
        ] {
            assert!(is_cidr(good), "{good}");
        }
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "10.0.0.0/08",
            "10.0.0.0/+8",
            " 10.0.0.0/8",
            "10.0.0.0/ 8",
            "010.0.0.0/8",
            "::ffff:10.0.0.0/104",
            "fe80::1%eth0/64",
            "10.0.0.0/",
        ] {
            assert!(!is_cidr(bad), "{bad}");
        }
    }

    #[test]
    fn dns_domains() {
        for good in [
            "example.com",
            ".example.com",
            "svc.cluster.local",
            "a",
            "x-1.Example.COM",
        ] {
            assert!(is_dns_domain(good), "{good}");
        }
        let long_label = "a".repeat(64);
        let long_name = ["a"; 128].join(".");
        for bad in [
            "",
            ".",
            "..example.com",
            "-a.com",
            "a-.com",
            "*.example.com",
            "a b",
            "a_b.com",
            "example.com.",
            &long_label,
            &long_name,
        ] {
            assert!(!is_dns_domain(bad), "{bad}");
        }
    }

    #[test]
    fn every_usage_listed_is_one_signing_understands() {
        for usage in USAGES {
            assert!(capstan_pki::is_known_usage(usage), "{usage}");
        }
    }

    #[test]
    fn cel_literals_are_escaped() {
        assert_eq!(lit(r"it's a \d"), r"'it\'s a \\d'");
        let rule = duration_rule();
        assert!(
            rule.rule.contains(r"'^(([0-9]+(\\.[0-9]*)?|\\.[0-9]+)"),
            "{}",
            rule.rule
        );
        assert_eq!(max_ca_hours(), 876_600);
    }
}
