//! The whole signing path on one core: parse the CSR PEM, verify its
//! signature, build the leaf, sign it and PEM-encode it.
//!
//! `cargo bench -p capstan-pki --bench signing` prints, per algorithm,
//! `signing <alg>: <N> leaves/s`. The CA is loaded once, as the issuer keeps
//! it loaded; every iteration parses and verifies a CSR afresh.

use std::time::{Duration, Instant};

use capstan_pki::{
    CaSpec, KeyAlgorithm, LeafPolicy, LeafRequest, SigningCa, generate_ca, parse_csr,
};
use rcgen::{CertificateParams, KeyPair};
use time::OffsetDateTime;

const RUN: Duration = Duration::from_secs(3);

fn csr_pem(alg: &'static rcgen::SignatureAlgorithm) -> String {
    let key = if alg == &rcgen::PKCS_RSA_SHA256 {
        // ring cannot generate RSA keys; reuse the pki crate's CA generator
        // key by round-tripping through a generated CA's key.
        let ca = generate_ca(
            &CaSpec {
                common_name: "k".into(),
                organization: None,
                algorithm: KeyAlgorithm::Rsa2048,
                lifetime: Duration::from_secs(60),
            },
            OffsetDateTime::now_utc(),
        )
        .expect("rsa key");
        KeyPair::from_pem(ca.key.expose()).expect("rsa key pair")
    } else {
        KeyPair::generate_for(alg).expect("key")
    };
    let params = CertificateParams::new(vec![
        "metrics.monitoring.svc".to_owned(),
        "metrics.monitoring.svc.cluster.local".to_owned(),
    ])
    .expect("params");
    params
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem")
}

fn bench(name: &str, ca_alg: KeyAlgorithm, leaf_alg: &'static rcgen::SignatureAlgorithm) {
    let now = OffsetDateTime::now_utc();
    let ca = generate_ca(
        &CaSpec {
            common_name: "bench CA".into(),
            organization: None,
            algorithm: ca_alg,
            lifetime: Duration::from_secs(86_400),
        },
        now,
    )
    .expect("CA");
    let signing = SigningCa::from_pem(
        ca.cert_pem.as_bytes(),
        ca.key.expose().as_bytes(),
        None,
        now,
    )
    .expect("load CA");
    let csr = csr_pem(leaf_alg);
    let policy = LeafPolicy {
        default_duration: Duration::from_secs(3600),
        max_duration: Duration::from_secs(90 * 86_400),
        allowed_usages: vec![],
        permitted_dns_domains: vec![],
        permitted_ip_ranges: vec![],
    };
    let request = LeafRequest::default();
    let once = || {
        let parsed = parse_csr(csr.as_bytes()).expect("parse");
        let leaf = signing.sign(&parsed, &request, &policy, now).expect("sign");
        std::hint::black_box(leaf.chain_pem.len())
    };
    let warm_until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < warm_until {
        once();
    }
    let start = Instant::now();
    let mut count = 0u64;
    while start.elapsed() < RUN {
        for _ in 0..50 {
            once();
        }
        count += 50;
    }
    let rate = count as f64 / start.elapsed().as_secs_f64();
    println!("signing {name}: {rate:.0} leaves/s");
}

fn main() {
    bench(
        "p256",
        KeyAlgorithm::EcdsaP256,
        &rcgen::PKCS_ECDSA_P256_SHA256,
    );
    bench("ed25519", KeyAlgorithm::Ed25519, &rcgen::PKCS_ED25519);
    bench("rsa2048", KeyAlgorithm::Rsa2048, &rcgen::PKCS_RSA_SHA256);
}
