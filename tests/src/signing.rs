//! The pure cost of signing, measured in process, that the benchmark
//! binaries set against the issuer's CPU per request.

use std::time::{Duration, Instant};

/// The whole signing path per leaf (parse, verify, sign, PEM) on one core,
/// with a CA whose key is `algorithm`: the average of 2,000 rounds over
/// `csr` (PEM).
pub fn pure_cost(csr: &str, algorithm: capstan_pki::KeyAlgorithm) -> anyhow::Result<Duration> {
    use capstan_pki::{CaSpec, LeafPolicy, LeafRequest, SigningCa, generate_ca, parse_csr};
    let now = time::OffsetDateTime::now_utc();
    let ca = generate_ca(
        &CaSpec {
            common_name: "bench".into(),
            organization: None,
            algorithm,
            lifetime: Duration::from_secs(86_400),
        },
        now,
    )?;
    let signing = SigningCa::from_pem(
        ca.cert_pem.as_bytes(),
        ca.key.expose().as_bytes(),
        None,
        now,
    )?;
    let policy = LeafPolicy {
        default_duration: Duration::from_secs(3600),
        max_duration: Duration::from_secs(86_400),
        allowed_usages: vec![],
        permitted_dns_domains: vec![],
        permitted_ip_ranges: vec![],
    };
    let rounds = 2000u32;
    let start = Instant::now();
    for _ in 0..rounds {
        let parsed = parse_csr(csr.as_bytes())?;
        std::hint::black_box(signing.sign(&parsed, &LeafRequest::default(), &policy, now)?);
    }
    Ok(start.elapsed() / rounds)
}
