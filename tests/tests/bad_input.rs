//! End to end: the bad-input matrix against one real `capstan-issuer` on a
//! real control plane (etcd, kube-apiserver, kube-controller-manager) of
//! its own. Every bad request is created beside a good one, so the
//! run shows both that each bad input ends where the user looks (the
//! request's `Ready=False/Failed` with a `failureTime`, a message naming the
//! problem and a `Failed` Event; or the issuer's `Ready=False` with the right
//! reason) and that nothing blocks other work: every good request is
//! `Issued`, and the issuer process never exits.
//!
//! Requests are made by the real openssl; results are read with the real
//! kubectl.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use base64::Engine;
use capstan_tests::cluster::{MASTERS, openssl_ok, start_issuer, user_kubeconfig};
use capstan_tests::controlplane::ControlPlane;
use capstan_tests::harness::{Kubectl, RunningBinary, await_condition};
use capstan_tests::hygiene;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(200);
const NS: &str = "default";
const ISSUER_USER: &str = "system:serviceaccount:default:capstan-issuer";

struct Env {
    /// Kept alive for the test's duration; dropping it stops it.
    _server: ControlPlane,
    kubectl: Kubectl,
    issuer: RunningBinary,
    dir: tempfile::TempDir,
}

async fn start() -> Env {
    // No workloads: the issuer needs no scheduler or node.
    let server = ControlPlane::builder()
        .workloads(false)
        .start()
        .await
        .unwrap();
    let kubectl = Kubectl::for_server(&server).unwrap();
    kubectl.apply_crds(true).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = user_kubeconfig(&server, dir.path(), "issuer", ISSUER_USER, MASTERS).unwrap();
    let issuer = start_issuer(&config, NS, "issuer-0").unwrap();
    Env {
        _server: server,
        kubectl,
        issuer,
        dir,
    }
}

impl Env {
    /// Fails on any private key (the Secrets' and those this test made)
    /// outside Secrets: objects, the binaries' logs, their metrics.
    async fn assert_no_key_leaks(&self) {
        let keys = hygiene::keys_in_dir(self.dir.path());
        hygiene::assert_no_key_leaks(&self.kubectl, &[&self.issuer], &keys).await;
    }

    fn logs(&self) -> String {
        format!("issuer logs:\n{}", self.issuer.logs().join("\n"))
    }

    async fn kubectl_stdin(&self, verb: &str, yaml: &str) {
        let out = self.kubectl.stdin(verb, yaml).await;
        assert!(
            out.success(),
            "kubectl {verb} failed: {}{}",
            out.stderr,
            out.stdout
        );
    }

    async fn get_json(&self, args: &[&str]) -> Option<Value> {
        self.kubectl.get_json(args).await
    }

    /// Waits until the object's `Ready` condition has `status`; returns the
    /// object.
    async fn wait_ready(&self, args: &[&str], status: &str) -> Value {
        let what = format!("{args:?} Ready={status}");
        await_condition(&what, WAIT, POLL, || async {
            let obj = self.get_json(args).await?;
            (ready(&obj)?.0 == status).then_some(obj)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()))
    }

    /// Waits until the issuer `args` is `Ready=False` with `reason`.
    async fn wait_issuer_reason(&self, args: &[&str], reason: &str) -> Value {
        let what = format!("{args:?} Ready=False/{reason}");
        await_condition(&what, WAIT, POLL, || async {
            let obj = self.get_json(args).await?;
            let (status, r, _) = ready(&obj)?;
            (status == "False" && r == reason).then_some(obj)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()))
    }

    /// Events whose involved object is `name`: (type, reason, message).
    async fn events_for(&self, name: &str) -> Vec<(String, String, String)> {
        let selector = format!("involvedObject.name={name}");
        let Some(list) = self
            .get_json(&["events", "-n", NS, "--field-selector", &selector])
            .await
        else {
            return Vec::new();
        };
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
                (s("type"), s("reason"), s("message"))
            })
            .collect()
    }

    fn openssl(&self, args: &[&str]) -> String {
        openssl_ok(self.dir.path(), args)
    }

    fn read(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(file)).unwrap()
    }

    /// `openssl req -new -newkey <newkey>` with `sans`; returns the PEM.
    fn csr(&self, name: &str, newkey: &[&str], sans: &str) -> Vec<u8> {
        let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
        let mut args = vec!["req", "-new", "-newkey"];
        args.extend_from_slice(newkey);
        let subj = format!("/CN={name}");
        let san = format!("subjectAltName={sans}");
        args.extend_from_slice(&[
            "-nodes", "-keyout", &key, "-subj", &subj, "-addext", &san, "-out", &csr,
        ]);
        self.openssl(&args);
        self.read(&csr)
    }

    /// A self-signed certificate for `key` with extensions `ext` (one per
    /// line), valid for `days` (negative: already expired).
    fn self_signed(&self, name: &str, key: &str, ext: &str, days: &str) -> Vec<u8> {
        let ext_file = format!("{name}.ext");
        std::fs::write(self.dir.path().join(&ext_file), ext).unwrap();
        let csr = format!("{name}.ca.csr");
        let subj = format!("/CN={name}");
        self.openssl(&["req", "-new", "-key", key, "-subj", &subj, "-out", &csr]);
        let crt = format!("{name}.crt");
        self.openssl(&[
            "x509", "-req", "-in", &csr, "-signkey", key, "-days", days, "-extfile", &ext_file,
            "-out", &crt,
        ]);
        self.read(&crt)
    }

    /// A CertificateRequest for `issuer` (`kind/name`), created (not applied:
    /// a huge request would not fit kubectl's last-applied annotation).
    async fn request(&self, name: &str, csr: &[u8], extra_spec: &str, issuer: (&str, &str)) {
        let b64 = base64::engine::general_purpose::STANDARD.encode(csr);
        let (kind, issuer_name) = issuer;
        self.kubectl_stdin(
            "create",
            &format!(
                "apiVersion: cert-manager.io/v1\nkind: CertificateRequest\nmetadata:\n  name: {name}\n  namespace: {NS}\nspec:\n  request: {b64}\n  issuerRef:\n    group: capstan.dev\n    kind: {kind}\n    name: {issuer_name}\n{extra_spec}"
            ),
        )
        .await;
    }

    /// Approves a request as cert-manager's approver does.
    async fn approve(&self, name: &str) {
        self.kubectl.approve_request(NS, name).await.unwrap();
    }

    /// A `kubernetes.io/tls` Secret with raw `tls.crt` and `tls.key` bytes.
    async fn tls_secret(&self, name: &str, crt: &[u8], key: &[u8]) {
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        self.kubectl_stdin(
            "apply",
            &format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {NS}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
                b64(crt),
                b64(key)
            ),
        )
        .await;
    }
}

/// The `Ready` condition: (status, reason, message).
fn ready(obj: &Value) -> Option<(String, String, String)> {
    let c = obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?;
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
    Some((s("status"), s("reason"), s("message")))
}

/// What a bad request must end as.
enum Expect {
    /// `Ready=False/Failed`, the message containing every needle.
    Failed(&'static [&'static str]),
    /// Issued, shortened to the issuer's maxDuration (720h), and the
    /// Event says so.
    IssuedCapped,
}

struct Case {
    name: &'static str,
    csr: Vec<u8>,
    extra_spec: &'static str,
    expect: Expect,
}

const P256: [&str; 3] = ["ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
const GOOD_SANS: &str = "DNS:app.example.com,IP:10.1.2.3";

const MAIN_ISSUER: &str = "apiVersion: capstan.dev/v1alpha1
kind: ClusterCAIssuer
metadata:
  name: monitoring-ca
spec:
  maxDuration: 720h
  nameConstraints:
    permittedDnsDomains: [example.com]
    permittedIpRanges: [10.0.0.0/8]
  selfManaged:
    secretName: monitoring-ca
";

#[tokio::test]
async fn every_bad_input_is_reported_and_blocks_nothing() {
    let env = start().await;
    env.kubectl_stdin("apply", MAIN_ISSUER).await;
    env.wait_ready(&["clustercaissuer", "monitoring-ca"], "True")
        .await;
    let pid = env.issuer.pid();

    // A request whose signature was altered after signing: flip one bit in
    // the signature (the last bytes of the DER).
    let pem_csr = env.csr("tampered", &P256, GOOD_SANS);
    let mut der = pem::parse(&pem_csr).unwrap().into_contents();
    let at = der.len() - 3;
    der[at] ^= 0x01;
    let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der)).into_bytes();
    // A PEM over the 1 MiB input limit (valid base64 lines, so only the size
    // is wrong).
    let mut huge = b"-----BEGIN CERTIFICATE REQUEST-----\n".to_vec();
    while huge.len() <= capstan_pki::MAX_INPUT_BYTES {
        huge.extend_from_slice(&[b'A'; 64]);
        huge.push(b'\n');
    }
    huge.extend_from_slice(b"-----END CERTIFICATE REQUEST-----\n");

    let cases = vec![
        Case {
            name: "bad-signature",
            csr: tampered,
            extra_spec: "",
            expect: Expect::Failed(&["signature does not verify"]),
        },
        Case {
            name: "rsa-1024",
            csr: env.csr("rsa-1024", &["rsa:1024"], GOOD_SANS),
            extra_spec: "",
            expect: Expect::Failed(&["RSA key has 1024 bits", "at least 2048"]),
        },
        Case {
            name: "p-521",
            csr: env.csr(
                "p-521",
                &["ec", "-pkeyopt", "ec_paramgen_curve:P-521"],
                GOOD_SANS,
            ),
            extra_spec: "",
            expect: Expect::Failed(&["ECDSA P-521", "not supported"]),
        },
        Case {
            name: "rsa-pss",
            csr: env.csr(
                "rsa-pss",
                &["rsa-pss", "-pkeyopt", "rsa_keygen_bits:2048"],
                GOOD_SANS,
            ),
            extra_spec: "",
            expect: Expect::Failed(&["RSA-PSS", "not supported"]),
        },
        Case {
            name: "rsa-16384",
            csr: pem::encode(&pem::Pem::new(
                "CERTIFICATE REQUEST",
                rsa_csr_with_modulus_bits(16_384),
            ))
            .into_bytes(),
            extra_spec: "",
            expect: Expect::Failed(&["RSA key has 16384 bits", "at most 8192"]),
        },
        Case {
            name: "huge-pem",
            csr: huge,
            extra_spec: "",
            expect: Expect::Failed(&["the CSR is", "1048576-byte limit"]),
        },
        Case {
            name: "not-pem",
            csr: b"hello, I am not a certificate request".to_vec(),
            extra_spec: "",
            expect: Expect::Failed(&[
                "the CSR could not be parsed",
                "neither a PEM CERTIFICATE REQUEST block nor DER",
            ]),
        },
        Case {
            name: "truncated-pem",
            csr: pem_csr[..pem_csr.len() / 2].to_vec(),
            extra_spec: "",
            expect: Expect::Failed(&["CSR"]),
        },
        Case {
            name: "negative-duration",
            csr: env.csr("negative-duration", &P256, GOOD_SANS),
            extra_spec: "  duration: -1h\n",
            expect: Expect::Failed(&["spec.duration", "longer than zero"]),
        },
        Case {
            name: "overflowing-duration",
            csr: env.csr("overflowing-duration", &P256, GOOD_SANS),
            extra_spec: "  duration: 99999999999999999999999h\n",
            expect: Expect::Failed(&["spec.duration"]),
        },
        Case {
            name: "long-duration",
            csr: env.csr("long-duration", &P256, GOOD_SANS),
            extra_spec: "  duration: 2000h\n",
            expect: Expect::IssuedCapped,
        },
        Case {
            name: "absurd-duration",
            csr: env.csr("absurd-duration", &P256, GOOD_SANS),
            // Past what Go's time.Duration (and so cert-manager) can hold.
            extra_spec: "  duration: 100000000h\n",
            expect: Expect::Failed(&["spec.duration", "longer than the maximum"]),
        },
        Case {
            name: "dns-outside",
            csr: env.csr(
                "dns-outside",
                &P256,
                "DNS:app.example.com,DNS:evil.example.org",
            ),
            extra_spec: "",
            expect: Expect::Failed(&["evil.example.org", "outside", "example.com"]),
        },
        Case {
            name: "ip-outside",
            csr: env.csr("ip-outside", &P256, "DNS:app.example.com,IP:192.168.1.1"),
            extra_spec: "",
            expect: Expect::Failed(&["192.168.1.1", "outside", "10.0.0.0/8"]),
        },
    ];

    // Each bad request beside a good one, all in flight at once.
    let issuer = ("ClusterCAIssuer", "monitoring-ca");
    for case in &cases {
        let good = env.csr(&format!("good-{}", case.name), &P256, GOOD_SANS);
        env.request(case.name, &case.csr, case.extra_spec, issuer)
            .await;
        env.request(&format!("good-{}", case.name), &good, "", issuer)
            .await;
    }
    for case in &cases {
        env.approve(case.name).await;
        env.approve(&format!("good-{}", case.name)).await;
    }

    let mut checked = 0;
    for case in &cases {
        let args = ["certificaterequest", case.name, "-n", NS];
        match case.expect {
            Expect::Failed(needles) => {
                let cr = env.wait_ready(&args, "False").await;
                let (_, reason, message) = ready(&cr).unwrap();
                assert_eq!(reason, "Failed", "{}: {cr}", case.name);
                for needle in needles {
                    assert!(
                        message.contains(needle),
                        "{}: {needle:?} not in {message:?}",
                        case.name
                    );
                }
                assert!(!message.contains("PRIVATE KEY"), "{message}");
                assert!(
                    cr["status"]["failureTime"].is_string(),
                    "{}: no failureTime: {cr}",
                    case.name
                );
                assert!(cr["status"].get("certificate").is_none(), "{cr}");
                let events = env.events_for(case.name).await;
                assert!(
                    events
                        .iter()
                        .any(|(t, r, m)| t == "Warning" && r == "Failed" && m.contains(needles[0])),
                    "{}: no Warning Failed Event naming {:?}: {events:?}",
                    case.name,
                    needles[0]
                );
                println!("{}: Failed: {message}", case.name);
            }
            Expect::IssuedCapped => {
                let cr = env.wait_ready(&args, "True").await;
                let leaf = String::from_utf8(
                    base64::engine::general_purpose::STANDARD
                        .decode(cr["status"]["certificate"].as_str().unwrap())
                        .unwrap(),
                )
                .unwrap();
                let der = pem::parse(leaf.as_bytes()).unwrap().into_contents();
                let summary = capstan_pki::summarize(&der).unwrap();
                let lifetime = summary.not_after - summary.not_before;
                assert!(
                    lifetime <= time::Duration::hours(720),
                    "{}: lifetime {lifetime}",
                    case.name
                );
                let events = env.events_for(case.name).await;
                assert!(
                    events.iter().any(|(_, _, m)| m.contains("maxDuration")),
                    "{}: the shortening is not in an Event: {events:?}",
                    case.name
                );
                println!("{}: Issued, lifetime {lifetime}", case.name);
            }
        }
        let good = format!("good-{}", case.name);
        let cr = env
            .wait_ready(&["certificaterequest", &good, "-n", NS], "True")
            .await;
        assert_eq!(ready(&cr).unwrap().1, "Issued", "{cr}");
        checked += 1;
    }

    // CA Secrets a user got wrong: each issuer says why it is not Ready,
    // without a trace of the key; its requests wait (Pending).
    env.openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        "ca.key",
    ]);
    env.openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        "other.key",
    ]);
    let ca_ext = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n";
    let ca_key = env.read("ca.key");
    let valid_ca = env.self_signed("valid", "ca.key", ca_ext, "30");
    let expired_ca = env.self_signed("expired", "ca.key", ca_ext, "-1");
    let leaf_cert = env.self_signed(
        "leaf",
        "ca.key",
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n",
        "30",
    );
    env.tls_secret("mismatch", &valid_ca, &env.read("other.key"))
        .await;
    env.tls_secret("expired", &expired_ca, &ca_key).await;
    env.tls_secret("not-ca", &leaf_cert, &ca_key).await;
    env.tls_secret("garbage", b"garbage, not PEM", b"\x00\x01binary junk")
        .await;
    env.tls_secret("key-as-cert", &ca_key, &ca_key).await;
    env.tls_secret(
        "garbage-key",
        &valid_ca,
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .await;
    let secret_cases: [(&str, &str, &[&str]); 6] = [
        (
            "garbage-key",
            "InvalidKeyPair",
            &["tls.key", "not a usable private key"],
        ),
        ("mismatch", "InvalidKeyPair", &["does not match"]),
        ("expired", "CAExpired", &["expired"]),
        ("not-ca", "InvalidKeyPair", &["is not a CA", "CA:FALSE"]),
        ("garbage", "InvalidKeyPair", &["tls.crt"]),
        (
            "key-as-cert",
            "InvalidKeyPair",
            &["tls.crt contains a private key", "certificates only"],
        ),
    ];
    for (name, _, _) in secret_cases {
        env.kubectl_stdin(
            "apply",
            &format!(
                "apiVersion: capstan.dev/v1alpha1\nkind: CAIssuer\nmetadata:\n  name: {name}\n  namespace: {NS}\nspec:\n  ca:\n    secretName: {name}\n"
            ),
        )
        .await;
        let csr = env.csr(&format!("for-{name}"), &P256, GOOD_SANS);
        env.request(&format!("for-{name}"), &csr, "", ("CAIssuer", name))
            .await;
        env.approve(&format!("for-{name}")).await;
    }
    // And one more good request to the healthy issuer while they fail.
    let csr = env.csr("good-after", &P256, GOOD_SANS);
    env.request("good-after", &csr, "", issuer).await;
    env.approve("good-after").await;
    for (name, reason, needles) in secret_cases {
        let obj = env
            .wait_issuer_reason(&["caissuer", name, "-n", NS], reason)
            .await;
        let (_, _, message) = ready(&obj).unwrap();
        for needle in needles {
            assert!(
                message.contains(needle),
                "{name}: {needle:?} not in {message:?}"
            );
        }
        assert!(!message.contains("PRIVATE KEY"), "{name}: {message}");
        let cr = env
            .wait_ready(
                &["certificaterequest", &format!("for-{name}"), "-n", NS],
                "False",
            )
            .await;
        let (_, cr_reason, cr_message) = ready(&cr).unwrap();
        assert_eq!(cr_reason, "Pending", "for-{name}: {cr}");
        assert!(cr["status"].get("failureTime").is_none(), "{cr}");
        // The issuer's own Warning Event says why, where kubectl shows it.
        let events = await_condition(
            &format!("a {reason} Event on {name}"),
            WAIT,
            POLL,
            || async {
                let events = env.events_for(name).await;
                events
                    .iter()
                    .any(|(t, r, m)| t == "Warning" && r == reason && m == &message)
                    .then_some(events)
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", env.logs()));
        println!("issuer {name}: {reason}: {message}; request: {cr_message}; events: {events:?}");
        checked += 1;
    }
    env.wait_ready(&["certificaterequest", "good-after", "-n", NS], "True")
        .await;

    // A self-managed CA asked to live 11,000 years (past Go's duration
    // range): refused by the CRD's validation at apply, naming the field;
    // never generated with a lifetime that wrapped around.
    let refused = env
        .kubectl
        .stdin(
            "apply",
            &format!("apiVersion: capstan.dev/v1alpha1\nkind: CAIssuer\nmetadata:\n  name: absurd-lifetime\n  namespace: {NS}\nspec:\n  selfManaged:\n    secretName: absurd-lifetime\n    duration: 100000000h\n"),
        )
        .await;
    assert!(
        !refused.success() && refused.stderr.contains("spec.selfManaged.duration"),
        "absurd-lifetime: {refused:?}"
    );
    assert!(
        env.get_json(&["secret", "absurd-lifetime", "-n", NS])
            .await
            .is_none(),
        "no CA was generated"
    );
    println!("kubectl apply absurd-lifetime: {}", refused.stderr.trim());
    checked += 1;

    // No key material anywhere but Secrets, and the issuer never exited:
    // it is the same process.
    env.assert_no_key_leaks().await;
    let mut issuer_process = env.issuer;
    assert!(issuer_process.is_running(), "the issuer exited");
    assert_eq!(issuer_process.pid(), pid);
    let logs = issuer_process.logs().join("\n");
    assert!(!logs.contains("panicked"), "{logs}");
    println!("{checked} bad inputs checked, each beside a good request that was Issued");
}

/// Minimal DER writer for the hand-made request below.
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

/// A PKCS#10 request with a `bits`-bit RSA modulus and a junk signature
/// (openssl would take minutes to make a real 16384-bit key; the size is
/// refused before the signature is looked at, so the junk never matters).
fn rsa_csr_with_modulus_bits(bits: usize) -> Vec<u8> {
    const RSA_ENCRYPTION: [u8; 9] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    const SHA256_WITH_RSA: [u8; 9] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
    let mut modulus = vec![0u8];
    modulus.extend(vec![0xffu8; bits / 8]);
    let key = tlv(
        0x30,
        &[tlv(0x02, &modulus), tlv(0x02, &[0x01, 0x00, 0x01])].concat(),
    );
    let alg = |oid: &[u8]| tlv(0x30, &[tlv(0x06, oid), vec![0x05, 0x00]].concat());
    let spki = tlv(
        0x30,
        &[
            alg(&RSA_ENCRYPTION),
            tlv(0x03, &[&[0u8][..], &key].concat()),
        ]
        .concat(),
    );
    let cn = tlv(
        0x30,
        &[tlv(0x06, &[0x55, 0x04, 0x03]), tlv(0x0c, b"huge")].concat(),
    );
    let info = tlv(
        0x30,
        &[
            tlv(0x02, &[0]),
            tlv(0x30, &tlv(0x31, &cn)),
            spki,
            vec![0xa0, 0x00],
        ]
        .concat(),
    );
    let signature = tlv(0x03, &[&[0u8][..], &vec![0x42u8; bits / 8]].concat());
    tlv(0x30, &[info, alg(&SHA256_WITH_RSA), signature].concat())
}
