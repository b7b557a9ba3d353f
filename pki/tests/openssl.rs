//! Leaves signed by every CA algorithm, checked with the real openssl:
//! `openssl verify`, `openssl x509 -text`, and a non-CA leaf that must not
//! verify as an issuer. Requests are made by `openssl req` with the
//! extensions Go's crypto/x509 requests carry (what cert-manager sends).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use capstan_pki::{
    CaSpec, Error, KeyAlgorithm, LeafPolicy, LeafRequest, SigningCa, generate_ca, parse_csr,
};
use time::OffsetDateTime;

fn openssl(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is required for these tests: run scripts/install-tools (or apt-get install openssl)")
}

fn openssl_ok(dir: &Path, args: &[&str]) -> String {
    let out = openssl(dir, args);
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// openssl key-generation arguments per leaf key type.
fn genkey(dir: &Path, kind: &str) -> PathBuf {
    let path = dir.join(format!("{kind}.key"));
    let p = path.to_str().unwrap();
    let args: Vec<&str> = match kind {
        "rsa2048" => vec![
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            p,
        ],
        "rsa3072" => vec![
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:3072",
            "-out",
            p,
        ],
        "rsa4096" => vec![
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:4096",
            "-out",
            p,
        ],
        "rsa1024" => vec![
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
            "-out",
            p,
        ],
        "p256" => vec![
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            p,
        ],
        "p384" => vec![
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-out",
            p,
        ],
        "p521" => vec![
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-521",
            "-out",
            p,
        ],
        "ed25519" => vec!["genpkey", "-algorithm", "ED25519", "-out", p],
        "rsapss" => vec![
            "genpkey",
            "-algorithm",
            "RSA-PSS",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            p,
        ],
        other => panic!("unknown key kind {other}"),
    };
    openssl_ok(dir, &args);
    path
}

/// A CSR like Go's: subject, SANs, KU, EKU and basicConstraints requested.
fn csr(dir: &Path, kind: &str, subject: &str) -> (Vec<u8>, PathBuf) {
    let key = genkey(dir, kind);
    let out = dir.join(format!("{kind}.csr"));
    let mut args = vec![
        "req",
        "-new",
        "-key",
        key.to_str().unwrap(),
        "-out",
        out.to_str().unwrap(),
        "-subj",
        subject,
    ];
    args.extend([
        "-addext",
        "subjectAltName=DNS:metrics.monitoring.svc,DNS:metrics.monitoring.svc.cluster.local,IP:10.0.0.7,URI:spiffe://cluster.local/ns/monitoring/sa/prometheus,email:ops@example.com",
        "-addext",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "-addext",
        "extendedKeyUsage=serverAuth,clientAuth",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
    ]);
    openssl_ok(dir, &args);
    (std::fs::read(&out).unwrap(), key)
}

fn policy() -> LeafPolicy {
    LeafPolicy {
        default_duration: Duration::from_secs(24 * 3600),
        max_duration: Duration::from_secs(90 * 24 * 3600),
        allowed_usages: vec![],
        permitted_dns_domains: vec![],
        permitted_ip_ranges: vec![],
    }
}

fn ca(alg: KeyAlgorithm, now: OffsetDateTime) -> (SigningCa, String) {
    let generated = generate_ca(
        &CaSpec {
            common_name: format!("capstan test {alg}"),
            organization: Some("capstan".into()),
            algorithm: alg,
            lifetime: Duration::from_secs(365 * 86_400),
        },
        now,
    )
    .unwrap();
    let signing = SigningCa::from_pem(
        generated.cert_pem.as_bytes(),
        generated.key.expose().as_bytes(),
        None,
        now,
    )
    .unwrap();
    (signing, generated.cert_pem)
}

#[test]
fn every_ca_algorithm_signs_every_leaf_key_type_and_openssl_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let now = OffsetDateTime::now_utc();
    let leaf_kinds = ["p256", "p384", "ed25519", "rsa2048"];
    let csrs: Vec<(String, Vec<u8>)> = leaf_kinds
        .iter()
        .map(|k| {
            (
                (*k).to_owned(),
                csr(d, k, &format!("/CN=metrics-{k}/O=monitoring")).0,
            )
        })
        .collect();
    for alg in [
        KeyAlgorithm::EcdsaP256,
        KeyAlgorithm::EcdsaP384,
        KeyAlgorithm::Ed25519,
        KeyAlgorithm::Rsa2048,
    ] {
        let (signing, ca_pem) = ca(alg, now);
        let ca_path = d.join(format!("ca-{alg}.pem"));
        std::fs::write(&ca_path, &ca_pem).unwrap();
        let ca_text = openssl_ok(
            d,
            &["x509", "-in", ca_path.to_str().unwrap(), "-noout", "-text"],
        );
        assert!(ca_text.contains("CA:TRUE"), "{ca_text}");
        assert!(ca_text.contains("Certificate Sign, CRL Sign"), "{ca_text}");
        assert!(ca_text.contains("Subject Key Identifier"), "{ca_text}");
        for (kind, pem) in &csrs {
            let parsed = parse_csr(pem).unwrap();
            let leaf = signing
                .sign(&parsed, &LeafRequest::default(), &policy(), now)
                .unwrap();
            assert_eq!(leaf.ca_pem, ca_pem.replace("\r\n", "\n"));
            let leaf_path = d.join(format!("leaf-{alg}-{kind}.pem"));
            std::fs::write(&leaf_path, &leaf.chain_pem).unwrap();
            let verified = openssl_ok(
                d,
                &[
                    "verify",
                    "-CAfile",
                    ca_path.to_str().unwrap(),
                    leaf_path.to_str().unwrap(),
                ],
            );
            assert!(verified.contains(": OK"), "{verified}");
            let text = openssl_ok(
                d,
                &[
                    "x509",
                    "-in",
                    leaf_path.to_str().unwrap(),
                    "-noout",
                    "-text",
                ],
            );
            for needle in [
                "DNS:metrics.monitoring.svc",
                "IP Address:10.0.0.7",
                "URI:spiffe://cluster.local/ns/monitoring/sa/prometheus",
                "email:ops@example.com",
                "Digital Signature, Key Encipherment",
                "TLS Web Server Authentication",
                "CA:FALSE",
                "Authority Key Identifier",
                "Subject Key Identifier",
            ] {
                assert!(
                    text.contains(needle),
                    "{alg}/{kind}: missing {needle}:\n{text}"
                );
            }
            assert!(
                !text.contains("TLS Web Client Authentication"),
                "usages come from the request, not the CSR"
            );
            assert!(
                text.contains(&format!("CN=metrics-{kind}"))
                    || text.contains(&format!("CN = metrics-{kind}")),
                "{text}"
            );
            let serial = leaf.summary.serial.clone();
            assert!(serial.len() >= 30, "128-bit serial expected, got {serial}");
        }
    }
}

#[test]
fn larger_rsa_and_rsa_ca_keys_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let now = OffsetDateTime::now_utc();
    let (signing, ca_pem) = ca(KeyAlgorithm::Rsa3072, now);
    std::fs::write(d.join("ca.pem"), &ca_pem).unwrap();
    for kind in ["rsa3072", "rsa4096"] {
        let (pem, _) = csr(d, kind, "/CN=big");
        let leaf = signing
            .sign(
                &parse_csr(&pem).unwrap(),
                &LeafRequest::default(),
                &policy(),
                now,
            )
            .unwrap();
        std::fs::write(d.join("leaf.pem"), &leaf.chain_pem).unwrap();
        assert!(openssl_ok(d, &["verify", "-CAfile", "ca.pem", "leaf.pem"]).contains(": OK"));
    }
}

#[test]
fn empty_subject_makes_the_san_extension_critical() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let now = OffsetDateTime::now_utc();
    let (signing, _) = ca(KeyAlgorithm::EcdsaP256, now);
    let (pem, _) = csr(d, "p256", "/");
    let parsed = parse_csr(&pem).unwrap();
    assert!(parsed.subject_is_empty());
    let leaf = signing
        .sign(&parsed, &LeafRequest::default(), &policy(), now)
        .unwrap();
    std::fs::write(d.join("leaf.pem"), &leaf.certificate_pem).unwrap();
    let text = openssl_ok(d, &["x509", "-in", "leaf.pem", "-noout", "-text"]);
    assert!(
        text.contains("X509v3 Subject Alternative Name: critical"),
        "{text}"
    );
}

#[test]
fn a_non_ca_leaf_cannot_issue_and_a_ca_leaf_can() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let now = OffsetDateTime::now_utc();
    let (signing, ca_pem) = ca(KeyAlgorithm::EcdsaP256, now);
    std::fs::write(d.join("ca.pem"), &ca_pem).unwrap();
    for (is_ca, expect_ok) in [(false, false), (true, true)] {
        let (pem, key) = csr(d, "p256", "/CN=intermediate");
        let request = LeafRequest {
            is_ca,
            ..LeafRequest::default()
        };
        let leaf = signing
            .sign(&parse_csr(&pem).unwrap(), &request, &policy(), now)
            .unwrap();
        std::fs::write(d.join("mid.pem"), &leaf.certificate_pem).unwrap();
        // A grandchild signed by the leaf's key with openssl.
        let (_, gkey) = csr(d, "p384", "/CN=grandchild");
        openssl_ok(
            d,
            &[
                "req",
                "-new",
                "-key",
                gkey.to_str().unwrap(),
                "-subj",
                "/CN=grandchild",
                "-out",
                "g.csr",
            ],
        );
        openssl_ok(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "g.csr",
                "-CA",
                "mid.pem",
                "-CAkey",
                key.to_str().unwrap(),
                "-CAcreateserial",
                "-out",
                "g.pem",
                "-days",
                "1",
            ],
        );
        let out = openssl(
            d,
            &[
                "verify",
                "-CAfile",
                "ca.pem",
                "-untrusted",
                "mid.pem",
                "g.pem",
            ],
        );
        assert_eq!(
            out.status.success(),
            expect_ok,
            "isCA={is_ca}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if is_ca {
            let text = openssl_ok(d, &["x509", "-in", "mid.pem", "-noout", "-text"]);
            assert!(
                text.contains("CA:TRUE") && text.contains("Certificate Sign"),
                "{text}"
            );
        }
    }
}

#[test]
fn weak_unsupported_and_tampered_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (rsa1024, _) = csr(d, "rsa1024", "/CN=weak");
    assert!(matches!(
        parse_csr(&rsa1024),
        Err(Error::WeakKey { bits: 1024, .. })
    ));
    let (p521, _) = csr(d, "p521", "/CN=p521");
    let err = parse_csr(&p521).unwrap_err();
    assert!(err.to_string().contains("P-521"), "{err}");
    let (pss, _) = csr(d, "rsapss", "/CN=pss");
    let err = parse_csr(&pss).unwrap_err();
    assert!(err.to_string().contains("RSA-PSS"), "{err}");

    // Flip one bit of the signature (the last bytes of the DER).
    let (good, _) = csr(d, "p256", "/CN=tamper");
    let block = pem::parse(&good).unwrap();
    let mut der = block.contents().to_vec();
    let last = der.len() - 3;
    der[last] ^= 0x01;
    assert_eq!(parse_csr(&der).unwrap_err(), Error::CsrSignature);
    // Tamper with the subject instead: still caught.
    let mut der = block.contents().to_vec();
    let pos = der.windows(6).position(|w| w == b"tamper").unwrap();
    der[pos] = b'T';
    assert_eq!(parse_csr(&der).unwrap_err(), Error::CsrSignature);
    // Not a CSR at all.
    assert!(matches!(
        parse_csr(b"-----BEGIN CERTIFICATE REQUEST-----\n!!!\n-----END CERTIFICATE REQUEST-----\n"),
        Err(Error::Csr(_))
    ));
    assert!(matches!(parse_csr(b"hello"), Err(Error::Csr(_))));
    assert!(matches!(
        parse_csr(&vec![b'a'; capstan_pki::MAX_INPUT_BYTES + 1]),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn ca_keys_load_from_pkcs1_and_sec1_and_bad_pairs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let now = OffsetDateTime::now_utc();
    for (genargs, header) in [
        (
            vec!["genrsa", "-traditional", "-out", "k.pem", "2048"],
            "BEGIN RSA PRIVATE KEY",
        ),
        (
            vec![
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "k.pem",
            ],
            "BEGIN EC PRIVATE KEY",
        ),
        (
            vec![
                "ecparam",
                "-name",
                "secp384r1",
                "-genkey",
                "-noout",
                "-out",
                "k.pem",
            ],
            "BEGIN EC PRIVATE KEY",
        ),
    ] {
        openssl_ok(d, &genargs);
        let key = std::fs::read_to_string(d.join("k.pem")).unwrap();
        assert!(key.contains(header), "{key}");
        openssl_ok(
            d,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "k.pem",
                "-subj",
                "/CN=user CA",
                "-days",
                "30",
                "-out",
                "ca.pem",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        let cert = std::fs::read(d.join("ca.pem")).unwrap();
        // openssl stamps notBefore with its own clock: check validity after it.
        let now = OffsetDateTime::now_utc();
        let signing = SigningCa::from_pem(&cert, key.as_bytes(), None, now).unwrap();
        let (pem, _) = csr(d, "p256", "/CN=leaf");
        let leaf = signing
            .sign(
                &parse_csr(&pem).unwrap(),
                &LeafRequest::default(),
                &policy(),
                now,
            )
            .unwrap();
        std::fs::write(d.join("leaf.pem"), &leaf.chain_pem).unwrap();
        assert!(openssl_ok(d, &["verify", "-CAfile", "ca.pem", "leaf.pem"]).contains(": OK"));
    }

    // Key mismatch.
    let (_, other) = ca(KeyAlgorithm::EcdsaP256, now);
    let generated = generate_ca(
        &CaSpec {
            common_name: "x".into(),
            organization: None,
            algorithm: KeyAlgorithm::EcdsaP256,
            lifetime: Duration::from_secs(3600),
        },
        now,
    )
    .unwrap();
    let err = SigningCa::from_pem(
        other.as_bytes(),
        generated.key.expose().as_bytes(),
        None,
        now,
    )
    .unwrap_err();
    assert_eq!(err, Error::KeyMismatch);
    assert_eq!(
        err.to_string(),
        "tls.key does not match the certificate in tls.crt"
    );

    // Expired CA.
    let past = now - time::Duration::hours(3);
    let old = generate_ca(
        &CaSpec {
            common_name: "old".into(),
            organization: None,
            algorithm: KeyAlgorithm::EcdsaP256,
            lifetime: Duration::from_secs(3600),
        },
        past,
    )
    .unwrap();
    let err = SigningCa::from_pem(
        old.cert_pem.as_bytes(),
        old.key.expose().as_bytes(),
        None,
        now,
    )
    .unwrap_err();
    assert!(matches!(err, Error::CaExpired { .. }), "{err}");
    assert!(err.to_string().contains("expired at"), "{err}");

    // A certificate that is not a CA.
    openssl_ok(
        d,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "leaf.key",
        ],
    );
    openssl_ok(
        d,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "leaf.key",
            "-subj",
            "/CN=not a ca",
            "-days",
            "30",
            "-out",
            "leaf.crt",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ],
    );
    let err = SigningCa::from_pem(
        &std::fs::read(d.join("leaf.crt")).unwrap(),
        &std::fs::read(d.join("leaf.key")).unwrap(),
        None,
        now,
    )
    .unwrap_err();
    assert!(matches!(err, Error::NotCa { .. }), "{err}");
    assert!(err.to_string().contains("not a CA"), "{err}");

    // Malformed PEM.
    let err = SigningCa::from_pem(
        b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        b"",
        None,
        now,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Pem {
                what: "tls.crt",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn durations_are_capped_by_policy_and_by_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let now = OffsetDateTime::now_utc();
    let short = generate_ca(
        &CaSpec {
            common_name: "short".into(),
            organization: None,
            algorithm: KeyAlgorithm::EcdsaP256,
            lifetime: Duration::from_secs(2 * 3600),
        },
        now,
    )
    .unwrap();
    let signing = SigningCa::from_pem(
        short.cert_pem.as_bytes(),
        short.key.expose().as_bytes(),
        None,
        now,
    )
    .unwrap();
    let (pem, _) = csr(d, "p256", "/CN=leaf");
    let parsed = parse_csr(&pem).unwrap();
    let mut p = policy();
    p.max_duration = Duration::from_secs(3600);
    let leaf = signing
        .sign(
            &parsed,
            &LeafRequest {
                duration: Some(Duration::from_secs(7200)),
                ..Default::default()
            },
            &p,
            now,
        )
        .unwrap();
    assert!(matches!(
        leaf.truncated,
        Some(capstan_pki::Truncation::MaxDuration { .. })
    ));
    assert!(leaf.summary.not_after <= now + time::Duration::seconds(3600));
    p.max_duration = Duration::from_secs(10 * 86_400);
    let leaf = signing
        .sign(
            &parsed,
            &LeafRequest {
                duration: Some(Duration::from_secs(86_400)),
                ..Default::default()
            },
            &p,
            now,
        )
        .unwrap();
    assert!(matches!(
        leaf.truncated,
        Some(capstan_pki::Truncation::CaExpiry { .. })
    ));
    assert_eq!(leaf.summary.not_after, signing.summary().not_after);
}

#[test]
fn names_and_usages_are_policed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let now = OffsetDateTime::now_utc();
    let (signing, _) = ca(KeyAlgorithm::EcdsaP256, now);
    let (pem, _) = csr(d, "p256", "/CN=leaf");
    let parsed = parse_csr(&pem).unwrap();
    let mut p = policy();
    p.permitted_dns_domains = vec!["example.com".into()];
    let err = signing
        .sign(&parsed, &LeafRequest::default(), &p, now)
        .unwrap_err();
    assert!(err.to_string().contains("metrics.monitoring.svc"), "{err}");
    p.permitted_dns_domains = vec!["svc".into(), "svc.cluster.local".into()];
    p.permitted_ip_ranges = vec!["192.168.0.0/16".into()];
    let err = signing
        .sign(&parsed, &LeafRequest::default(), &p, now)
        .unwrap_err();
    assert!(err.to_string().contains("10.0.0.7"), "{err}");
    p.permitted_ip_ranges = vec!["10.0.0.0/8".into()];
    signing
        .sign(&parsed, &LeafRequest::default(), &p, now)
        .unwrap();
    p.allowed_usages = vec!["server auth".into(), "digital signature".into()];
    let err = signing
        .sign(&parsed, &LeafRequest::default(), &p, now)
        .unwrap_err();
    assert!(err.to_string().contains("key encipherment"), "{err}");
    let request = LeafRequest {
        usages: vec!["teleport".into()],
        ..Default::default()
    };
    assert!(
        signing
            .sign(&parsed, &request, &policy(), now)
            .unwrap_err()
            .to_string()
            .contains("teleport")
    );
    let client = LeafRequest {
        usages: vec!["client auth".into(), "signing".into()],
        ..Default::default()
    };
    let leaf = signing.sign(&parsed, &client, &policy(), now).unwrap();
    std::fs::write(d.join("c.pem"), leaf.certificate_pem).unwrap();
    let text = openssl_ok(d, &["x509", "-in", "c.pem", "-noout", "-text"]);
    assert!(
        text.contains("TLS Web Client Authentication") && text.contains("Digital Signature"),
        "{text}"
    );
    assert!(!text.contains("Server Authentication"), "{text}");
}
