//! The fault soak with crash safety (issue 8), on the real control plane:
//! the real `capstan-issuer` and `capstan-rotator` against etcd and
//! kube-apiserver 1.35 (with kube-controller-manager, kube-scheduler and
//! kwok, so Deployments really roll out), through a fault proxy in front of
//! kube-apiserver that answers 5% of their requests with 500/429/409 (409 to
//! writes only), adds 5-25 ms of latency and cuts their watches 3 s after
//! each opens, while both are SIGKILLed at random points and restarted, 50
//! times in all. Midway the kube-apiserver process and later the etcd
//! process are SIGKILLed and started again (same ports, same data). A binary
//! that exits on its own is restarted as a kubelet would, and reported.
//!
//! Meanwhile 2,000 approved CertificateRequests are spread over 10 issuers
//! (self-managed ClusterCAIssuers and CAIssuers with user CA Secrets), and
//! one ClusterCAIssuer is rotated with `capstan.dev/rotate` while 20
//! ConfigMaps in 5 namespaces inject its bundle into 10 opted-in Deployments.
//! Its `overlap` outlasts the soak, so its bundle changes once (the new CA
//! published) and each Deployment must roll exactly once.
//!
//! The test's own client (user `admin`) talks to kube-apiserver directly,
//! without faults. It records every change of the objects involved with one
//! uncut watch per kind (resumed from its last resourceVersion across the
//! restarts, so only a `410 Gone` could leave a hole), and checks the
//! invariants over that history (ordered by resourceVersion: etcd's
//! revision, global across kinds), the final state, the requests the proxy
//! saw (with the answers the binaries got) and kube-apiserver's audit log.
//! It prints one line per invariant, problems marked `BUG?` under it, and
//! `soak: N passed, M failed`.
//!
//! A second soak runs two replicas of each binary (as the chart's
//! `replicas: 2` does) with 1,000 requests: each kill is then the Lease
//! holder's, three per component, and the other replica takes over; the
//! invariants are the same.
//!
//! `CAPSTAN_SOAK_SEED` replays the run's random choices (kill delays, which
//! restarts are killed again before converging, the openssl sample); the
//! interleaving with the binaries still depends on timing.
//! `CAPSTAN_SOAK_REQUESTS` and `CAPSTAN_SOAK_KILLS` change the first soak's size for local
//! runs (defaults: the issue's 2,000 and 50). The logs of every binary
//! instance go to a directory printed at the start, removed when the soak
//! passes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use capstan_tests::cluster::{MASTERS, create_crds};
use capstan_tests::controlplane::ControlPlane;
use capstan_tests::controlplane::proxy::{FaultProxy, Seen, is_watch};
use capstan_tests::harness::{Kubectl, RunningBinary, await_condition, workspace_binary};
use capstan_tests::hygiene;
use capstan_testserver::{Faults, FaultsHandle, RequestRecord};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const ISSUER_USER: &str = "system:serviceaccount:capstan:issuer";
const ROTATOR_USER: &str = "system:serviceaccount:capstan:rotator";
/// Where ClusterCAIssuer Secrets live (`--cluster-resource-namespace`).
const CLUSTER_NS: &str = "certs";
/// Namespaces of the CAIssuers, requests, ConfigMaps and Deployments.
const TEAMS: usize = 5;
/// Self-managed ClusterCAIssuers; the first is the one rotated.
const CLUSTER_ISSUERS: usize = 5;
/// The rotated issuer.
const ROTATED: &str = "cluster-0";
/// The rotation trigger value.
const ROTATE_VALUE: &str = "soak-1";
const CONFIG_MAPS_PER_TEAM: usize = 4;
const DEPLOYMENTS_PER_TEAM: usize = 2;
const HASH: &str = "capstan.dev/config-hash";
const BUNDLE_KEY: &str = "ca-bundle.crt";
/// Requests signed with `openssl verify` as well.
const OPENSSL_SAMPLE: usize = 20;
const WAIT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------
// Random choices: a seeded SplitMix64, so a failing run can be replayed.

/// SplitMix64: small, seedable, good enough for test choices.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 1_000_000.0 < p
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------
// Certificates: PEM, fingerprints, and signature checks with ring.

fn certificates(pem_text: &[u8]) -> Vec<Vec<u8>> {
    pem::parse_many(pem_text)
        .unwrap_or_default()
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .collect()
}

fn fingerprints(pem_text: &[u8]) -> BTreeSet<String> {
    certificates(pem_text)
        .iter()
        .map(|d| capstan_pki::fingerprint(d))
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    capstan_pki::fingerprint(bytes)
}

/// A DER element: tag, content, the whole element, what follows it.
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
    whole: &'a [u8],
    rest: &'a [u8],
}

fn tlv(input: &[u8]) -> Option<Tlv<'_>> {
    let tag = *input.first()?;
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for b in input.get(2..2 + n)? {
            len = (len << 8) | *b as usize;
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some(Tlv {
        tag,
        content: input.get(header..end)?,
        whole: input.get(..end)?,
        rest: input.get(end..)?,
    })
}

/// The parts of a certificate a signature check needs.
struct CertParts<'a> {
    tbs: &'a [u8],
    signature_oid: &'a [u8],
    signature: &'a [u8],
    issuer: &'a [u8],
    subject: &'a [u8],
    key_oid: &'a [u8],
    key_params: &'a [u8],
    key: &'a [u8],
}

fn cert_parts(der: &[u8]) -> Option<CertParts<'_>> {
    let cert = tlv(der)?;
    let tbs = tlv(cert.content)?;
    let alg = tlv(tbs.rest)?;
    let sig = tlv(alg.rest)?;
    let signature_oid = tlv(alg.content)?.content;
    // BIT STRING: the first byte counts unused bits (0 here).
    let signature = sig.content.get(1..)?;
    let mut fields = tlv(tbs.content)?;
    if fields.tag == 0xa0 {
        fields = tlv(fields.rest)?; // serial after the explicit version
    }
    let sig_alg = tlv(fields.rest)?;
    let issuer = tlv(sig_alg.rest)?;
    let validity = tlv(issuer.rest)?;
    let subject = tlv(validity.rest)?;
    let spki = tlv(subject.rest)?;
    let key_alg = tlv(spki.content)?;
    let key_bits = tlv(key_alg.rest)?;
    let key_oid = tlv(key_alg.content)?;
    let key_params = tlv(key_oid.rest).map_or(&[][..], |p| p.content);
    Some(CertParts {
        tbs: tbs.whole,
        signature_oid,
        signature,
        issuer: issuer.whole,
        subject: subject.whole,
        key_oid: key_oid.content,
        key_params,
        key: key_bits.content.get(1..)?,
    })
}

const ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
const ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const RSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];

/// Whether `leaf` names `ca` as its issuer and carries a valid signature by
/// `ca`'s key. Errors name what could not be checked.
fn signed_by(leaf: &[u8], ca: &[u8]) -> Result<bool, String> {
    use ring::signature as sig;
    let l = cert_parts(leaf).ok_or("the leaf is not a DER certificate")?;
    let c = cert_parts(ca).ok_or("the CA is not a DER certificate")?;
    if l.issuer != c.subject {
        return Ok(false);
    }
    let alg: &dyn sig::VerificationAlgorithm = match (l.signature_oid, c.key_params) {
        (ECDSA_SHA256, P256) => &sig::ECDSA_P256_SHA256_ASN1,
        (ECDSA_SHA256, P384) => &sig::ECDSA_P384_SHA256_ASN1,
        (ECDSA_SHA384, P256) => &sig::ECDSA_P256_SHA384_ASN1,
        (ECDSA_SHA384, P384) => &sig::ECDSA_P384_SHA384_ASN1,
        (ED25519, _) if c.key_oid == ED25519 => &sig::ED25519,
        (RSA_SHA256, _) => &sig::RSA_PKCS1_2048_8192_SHA256,
        (other, _) => return Err(format!("unsupported signature algorithm {other:02x?}")),
    };
    Ok(sig::UnparsedPublicKey::new(alg, c.key)
        .verify(l.tbs, l.signature)
        .is_ok())
}

fn serial(der: &[u8]) -> Option<String> {
    capstan_pki::summarize(der).ok().map(|s| s.serial)
}

// ---------------------------------------------------------------------------
// The recorder: one uncut admin watch per kind, every change kept.

/// What the checks need of an object at one resourceVersion.
#[derive(Debug, Clone, PartialEq)]
enum Snap {
    Request {
        issuer: String,
        approved: bool,
        ready: Option<String>,
        certificate: Option<String>,
        ca: Option<String>,
        status: Value,
    },
    CaSecret {
        /// SHA-256 of `tls.key` (never the key itself).
        key: Option<String>,
        next_key: Option<String>,
        signing: Option<Vec<u8>>,
        next: Option<Vec<u8>>,
        bundle: BTreeSet<String>,
        /// Every CA certificate in the Secret, by fingerprint.
        certs: BTreeMap<String, Vec<u8>>,
    },
    Target {
        bundle: Option<BTreeSet<String>>,
    },
    Workload {
        template_hash: Option<String>,
        baseline: Option<String>,
        volume_config_map: Option<String>,
    },
    Issuer {
        ready: bool,
        fingerprint: Option<String>,
        bundle_size: Option<i64>,
    },
    Lease {
        holder: Option<String>,
    },
}

#[derive(Debug, Clone)]
struct Ev {
    rv: u64,
    kind: &'static str,
    key: String,
    deleted: bool,
    snap: Snap,
}

/// Everything recorded, and the latest state of each object.
#[derive(Default)]
struct Record {
    events: Vec<Ev>,
    latest: HashMap<(&'static str, String), Snap>,
    /// Watches that could not resume where they stopped (410 Gone): the
    /// history has a hole.
    problems: Vec<String>,
    /// Watches that ended or failed to open (kube-apiserver or etcd
    /// restarting, a watch cache initializing) and were resumed from their
    /// last resourceVersion, so lost nothing.
    interruptions: usize,
}

type Shared = Arc<Mutex<Record>>;

fn data_bytes(obj: &DynamicObject, key: &str) -> Option<Vec<u8>> {
    let b64 = obj.data["data"][key].as_str()?;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .ok()
        .filter(|b| !b.is_empty())
}

fn condition(obj: &Value, type_: &str) -> Option<String> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["status"].as_str().map(str::to_owned))
}

fn annotation(obj: &DynamicObject, key: &str) -> Option<String> {
    obj.metadata.annotations.as_ref()?.get(key).cloned()
}

fn snap(kind: &'static str, obj: &DynamicObject, ca_secrets: &BTreeSet<String>) -> Option<Snap> {
    let key = key_of(obj);
    Some(match kind {
        "certificaterequest" => Snap::Request {
            issuer: issuer_id(
                obj.data["spec"]["issuerRef"]["kind"].as_str().unwrap_or(""),
                obj.metadata.namespace.as_deref().unwrap_or(""),
                obj.data["spec"]["issuerRef"]["name"].as_str().unwrap_or(""),
            ),
            approved: condition(&obj.data, "Approved").as_deref() == Some("True"),
            ready: condition(&obj.data, "Ready"),
            certificate: obj.data["status"]["certificate"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            ca: obj.data["status"]["ca"].as_str().map(str::to_owned),
            status: obj.data["status"].clone(),
        },
        "secret" => {
            if !ca_secrets.contains(&key) {
                return None;
            }
            let mut certs = BTreeMap::new();
            for k in ["tls.crt", "next.crt", "ca.crt", BUNDLE_KEY] {
                for der in certificates(&data_bytes(obj, k).unwrap_or_default()) {
                    certs.insert(capstan_pki::fingerprint(&der), der);
                }
            }
            let first = |k: &str| certificates(&data_bytes(obj, k)?).into_iter().next();
            let bundle = published_bundle(obj);
            Snap::CaSecret {
                key: data_bytes(obj, "tls.key").map(|k| sha256_hex(&k)),
                next_key: data_bytes(obj, "next.key").map(|k| sha256_hex(&k)),
                signing: first("tls.crt"),
                next: first("next.crt"),
                bundle,
                certs,
            }
        }
        "configmap" => {
            annotation(obj, "capstan.dev/inject-ca-from-issuer")?;
            Snap::Target {
                bundle: obj.data["data"][BUNDLE_KEY]
                    .as_str()
                    .map(|b| fingerprints(b.as_bytes())),
            }
        }
        "deployment" => Snap::Workload {
            template_hash: obj.data["spec"]["template"]["metadata"]["annotations"][HASH]
                .as_str()
                .map(str::to_owned),
            baseline: annotation(obj, HASH),
            volume_config_map:
                obj.data["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"]
                    .as_str()
                    .map(str::to_owned),
        },
        "clustercaissuer" | "caissuer" => Snap::Issuer {
            ready: condition(&obj.data, "Ready").as_deref() == Some("True"),
            fingerprint: obj.data["status"]["ca"]["fingerprint"]
                .as_str()
                .map(str::to_owned),
            bundle_size: obj.data["status"]["bundleSize"].as_i64(),
        },
        "lease" => Snap::Lease {
            holder: obj.data["spec"]["holderIdentity"]
                .as_str()
                .map(str::to_owned),
        },
        _ => return None,
    })
}

/// The CAs a CA Secret publishes: `ca-bundle.crt`, else `ca.crt`, else
/// `tls.crt` (the rotator's rule for a source Secret).
fn published_bundle(obj: &DynamicObject) -> BTreeSet<String> {
    for k in [BUNDLE_KEY, "ca.crt", "tls.crt"] {
        if let Some(b) = data_bytes(obj, k) {
            return fingerprints(&b);
        }
    }
    BTreeSet::new()
}

fn key_of(obj: &DynamicObject) -> String {
    format!(
        "{}/{}",
        obj.metadata.namespace.as_deref().unwrap_or(""),
        obj.metadata.name.as_deref().unwrap_or("")
    )
}

/// `ClusterCAIssuer/name` or `CAIssuer/ns/name`.
fn issuer_id(kind: &str, namespace: &str, name: &str) -> String {
    match kind {
        "ClusterCAIssuer" => format!("ClusterCAIssuer/{name}"),
        _ => format!("CAIssuer/{namespace}/{name}"),
    }
}

fn rv_of(obj: &DynamicObject) -> u64 {
    obj.metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Watches `api` from the start, resuming from the last resourceVersion
/// whenever the watch ends or fails, until `stop`. Resuming from the last
/// resourceVersion seen is Kubernetes' contract for not missing a change:
/// kube-apiserver either sends every change after it or answers 410 Gone,
/// the one failure that leaves a hole (recorded; the recorder then starts
/// over from the current state).
async fn record(
    api: Api<DynamicObject>,
    kind: &'static str,
    ca_secrets: BTreeSet<String>,
    shared: Shared,
    stop: CancellationToken,
) {
    let hole = |rv: &str, what: String| {
        shared
            .lock()
            .unwrap()
            .problems
            .push(format!("{kind}: cannot resume from {rv}: {what}"));
    };
    let interrupted = || shared.lock().unwrap().interruptions += 1;
    let mut rv = "0".to_owned();
    while !stop.is_cancelled() {
        let stream = match api.watch(&WatchParams::default().timeout(240), &rv).await {
            Ok(s) => s,
            Err(kube::Error::Api(e)) if e.code == 410 => {
                hole(&rv, e.message);
                rv = "0".to_owned();
                continue;
            }
            Err(_) => {
                interrupted();
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(POLL) => continue,
                }
            }
        };
        futures::pin_mut!(stream);
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                n = stream.next() => n,
            };
            let (obj, deleted) = match next {
                None => break,
                Some(Err(_)) => {
                    interrupted();
                    break;
                }
                Some(Ok(WatchEvent::Bookmark(b))) => {
                    rv = b.metadata.resource_version;
                    continue;
                }
                Some(Ok(WatchEvent::Error(e))) if e.code == 410 => {
                    hole(&rv, e.message);
                    rv = "0".to_owned();
                    break;
                }
                Some(Ok(WatchEvent::Error(_))) => {
                    interrupted();
                    break;
                }
                Some(Ok(WatchEvent::Added(o) | WatchEvent::Modified(o))) => (o, false),
                Some(Ok(WatchEvent::Deleted(o))) => (o, true),
            };
            let r = rv_of(&obj);
            rv = r.to_string();
            if let Some(s) = snap(kind, &obj, &ca_secrets) {
                let key = key_of(&obj);
                let mut g = shared.lock().unwrap();
                if deleted {
                    g.latest.remove(&(kind, key.clone()));
                } else {
                    g.latest.insert((kind, key.clone()), s.clone());
                }
                g.events.push(Ev {
                    rv: r,
                    kind,
                    key,
                    deleted,
                    snap: s,
                });
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The environment.

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn cr_resource() -> ApiResource {
    resource(
        "cert-manager.io",
        "v1",
        "CertificateRequest",
        "certificaterequests",
    )
}

/// Which binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Component {
    Issuer,
    Rotator,
}

impl Component {
    fn name(self) -> &'static str {
        match self {
            Component::Issuer => "issuer",
            Component::Rotator => "rotator",
        }
    }

    fn lease(self) -> &'static str {
        match self {
            Component::Issuer => "capstan-issuer",
            Component::Rotator => "capstan-rotator",
        }
    }
}

/// Starts the binaries with their own tokens and keeps their logs.
struct Launcher {
    kubeconfigs: HashMap<&'static str, PathBuf>,
    logs: PathBuf,
}

impl Launcher {
    fn start(&self, c: Component, instance: usize) -> RunningBinary {
        let config = self.kubeconfigs[c.name()].to_str().unwrap().to_owned();
        let common = [
            "--kubeconfig",
            config.as_str(),
            "--leader-election-namespace",
            "capstan",
            "--leader-election-lease-duration",
            "4s",
            "--leader-election-renew-grace",
            "2s",
        ];
        let mut args: Vec<&str> = common.to_vec();
        match c {
            Component::Issuer => args.extend(["--cluster-resource-namespace", CLUSTER_NS]),
            Component::Rotator => args.extend([
                "--cluster-resource-namespace",
                CLUSTER_NS,
                "--restart-debounce",
                "2s",
                "--max-concurrent-rollouts",
                "4",
            ]),
        }
        let pod = format!("{}-{instance}", c.name());
        RunningBinary::start(
            &workspace_binary(&format!("capstan-{}", c.name())).unwrap(),
            &args,
            &[
                ("POD_NAMESPACE", "capstan"),
                ("POD_NAME", pod.as_str()),
                ("RUST_LOG", "info"),
            ],
        )
        .unwrap()
    }

    /// Saves an instance's logs; returns the file.
    fn save(&self, c: Component, instance: usize, bin: &RunningBinary) -> PathBuf {
        let path = self.logs.join(format!("{}-{instance:03}.log", c.name()));
        std::fs::write(&path, bin.logs().join("\n")).unwrap();
        path
    }
}

/// What happened to one component during the soak.
#[derive(Default, Debug)]
struct CrashLog {
    kills: usize,
    /// Restarts checked for convergence, and how long each took.
    converged: Vec<Duration>,
    /// Restarts killed again before converging, on purpose.
    killed_early: usize,
    /// Restarts that did not converge, with why.
    not_converged: Vec<String>,
    /// Instances that exited without being killed, with their log file.
    exited: Vec<String>,
}

/// The live state as the recorder sees it.
fn latest(shared: &Shared) -> HashMap<(&'static str, String), Snap> {
    shared.lock().unwrap().latest.clone()
}

fn holder_pid(snap: Option<&Snap>) -> Option<u32> {
    match snap {
        Some(Snap::Lease { holder: Some(h) }) => h.rsplit('-').next()?.parse().ok(),
        _ => None,
    }
}

/// Counts of requests: approved, issued.
fn request_counts(live: &HashMap<(&'static str, String), Snap>) -> (usize, usize) {
    let mut approved = 0;
    let mut issued = 0;
    for ((kind, _), s) in live {
        if let (
            "certificaterequest",
            Snap::Request {
                approved: a,
                certificate,
                ready,
                ..
            },
        ) = (*kind, s)
        {
            approved += usize::from(*a);
            issued += usize::from(certificate.is_some() && ready.as_deref() == Some("True"));
        }
    }
    (approved, issued)
}

/// Whether every issuer is Ready and reports the CA its Secret signs with.
fn issuers_converged(
    live: &HashMap<(&'static str, String), Snap>,
    issuers: &[IssuerDef],
) -> Result<(), String> {
    for i in issuers {
        let Some(Snap::Issuer {
            ready, fingerprint, ..
        }) = live.get(&(i.kind_lower(), i.object_key()))
        else {
            return Err(format!("{} not seen", i.id()));
        };
        let Some(Snap::CaSecret {
            signing: Some(signing),
            ..
        }) = live.get(&("secret", i.secret_key()))
        else {
            return Err(format!("{}: no CA Secret with tls.crt", i.id()));
        };
        if !*ready {
            return Err(format!("{} not Ready", i.id()));
        }
        if fingerprint.as_deref() != Some(capstan_pki::fingerprint(signing).as_str()) {
            return Err(format!(
                "{} reports CA {fingerprint:?}, its Secret signs with another",
                i.id()
            ));
        }
    }
    Ok(())
}

/// Whether every target ConfigMap holds exactly its source's published bundle.
fn targets_converged(
    live: &HashMap<(&'static str, String), Snap>,
    targets: &[String],
) -> Result<(), String> {
    let Some(Snap::CaSecret { bundle, .. }) =
        live.get(&("secret", format!("{CLUSTER_NS}/{ROTATED}-ca")))
    else {
        return Err("the rotated issuer's Secret is not seen".into());
    };
    for t in targets {
        match live.get(&("configmap", t.clone())) {
            Some(Snap::Target { bundle: Some(b) }) if b == bundle => {}
            other => return Err(format!("ConfigMap {t} is {other:?}, not the bundle")),
        }
    }
    Ok(())
}

/// How a wait for convergence ended.
enum Converged {
    /// In this long.
    Yes(Duration),
    /// The process exited on its own first.
    Exited,
    /// Not within the deadline, with the last reason.
    No(String),
}

/// Whether a binary's logs show a fatal error (anyhow's `Error:` from
/// main, or a panic).
fn fatal(logs: &[String]) -> bool {
    logs.iter().any(|l| {
        let l = capstan_tests::harness::strip_ansi(l);
        l.starts_with("Error:") || l.contains("panicked at")
    })
}

/// Why a binary exited, from its last log lines: the `Error:` line and its
/// first cause, or a panic message.
fn exit_reason(logs: &[String]) -> String {
    let lines: Vec<String> = logs
        .iter()
        .map(|l| capstan_tests::harness::strip_ansi(l))
        .collect();
    let mut reason = Vec::new();
    if let Some(i) = lines.iter().position(|l| l.starts_with("Error:")) {
        reason.push(lines[i].clone());
        if let Some(cause) = lines[i..]
            .iter()
            .skip_while(|l| !l.starts_with("Caused by"))
            .skip(1)
            .find(|l| !l.trim().is_empty())
        {
            reason.push(cause.trim().chars().take(240).collect());
        }
    }
    if let Some(p) = lines.iter().find(|l| l.contains("panicked at")) {
        reason.push(p.clone());
    }
    if reason.is_empty() {
        reason.push(lines.last().cloned().unwrap_or_default());
    }
    reason.join(" / ")
}

/// Waits until the restarted `c` (or, with two replicas, its `peer`) holds
/// its lease and the state it owns has converged, or until it exits on its
/// own.
async fn converge(
    c: Component,
    bin: &mut RunningBinary,
    peer: Option<u32>,
    shared: &Shared,
    issuers: &[IssuerDef],
    targets: &[String],
) -> Converged {
    let started = Instant::now();
    let pid = bin.pid();
    let (_, issued_at_start) = request_counts(&latest(shared));
    let last = Arc::new(Mutex::new(String::new()));
    let result = await_condition("convergence after a restart", WAIT, POLL, || {
        let live = latest(shared);
        let last = last.clone();
        let running = bin.is_running();
        async move {
            if !running {
                return Some(false);
            }
            let check = || -> Result<(), String> {
                let holder = holder_pid(live.get(&("lease", format!("capstan/{}", c.lease()))));
                // With two replicas the other one takes over.
                if holder != Some(pid) && (peer.is_none() || holder != peer) {
                    return Err(format!(
                        "lease held by pid {holder:?}, not {pid} or {peer:?}"
                    ));
                }
                match c {
                    Component::Issuer => {
                        issuers_converged(&live, issuers)?;
                        let (approved, issued) = request_counts(&live);
                        if issued <= issued_at_start && issued < approved {
                            return Err(format!(
                                "no progress: {issued} of {approved} approved requests issued"
                            ));
                        }
                        Ok(())
                    }
                    Component::Rotator => targets_converged(&live, targets),
                }
            };
            match check() {
                Ok(()) => Some(true),
                Err(why) => {
                    *last.lock().unwrap() = why;
                    None
                }
            }
        }
    })
    .await;
    match result {
        Ok(true) => Converged::Yes(started.elapsed()),
        Ok(false) => Converged::Exited,
        Err(e) => Converged::No(format!("{e}: {}", last.lock().unwrap())),
    }
}

/// One component's running instances, and what happened to them so far:
/// `bin`, the one killed next, and with two replicas its `peer`.
struct Supervised {
    c: Component,
    bin: RunningBinary,
    instance: usize,
    /// The second replica and its instance number.
    peer: Option<(usize, RunningBinary)>,
    /// Instances started so far.
    started: usize,
    log: CrashLog,
    launcher: Arc<Launcher>,
}

impl Supervised {
    fn start(c: Component, launcher: Arc<Launcher>, replicas: usize) -> Self {
        let peer = (replicas > 1).then(|| (1, launcher.start(c, 1)));
        Self {
            c,
            bin: launcher.start(c, 0),
            instance: 0,
            started: if peer.is_some() { 2 } else { 1 },
            peer,
            log: CrashLog::default(),
            launcher,
        }
    }

    fn restart(&mut self) {
        self.instance = self.started;
        self.started += 1;
        self.bin = self.launcher.start(self.c, self.instance);
    }

    /// With two replicas, makes `bin` the one holding the Lease
    /// (`leader`), so that the leader is the one killed.
    fn target_leader(&mut self, leader: Option<u32>) {
        if let Some((instance, peer)) = &mut self.peer
            && leader.is_some_and(|pid| pid == peer.pid())
        {
            std::mem::swap(&mut self.bin, peer);
            std::mem::swap(&mut self.instance, instance);
        }
    }

    /// The other replica's pid, if there is one.
    fn peer_pid(&self) -> Option<u32> {
        self.peer.as_ref().map(|(_, p)| p.pid())
    }

    /// If the binary exited on its own, records why and starts it again (as
    /// a kubelet would). Returns whether it had exited.
    fn revive(&mut self) -> bool {
        if let Some((instance, peer)) = &mut self.peer
            && !peer.is_running()
        {
            let file = self.launcher.save(self.c, *instance, peer);
            self.log.exited.push(format!(
                "{}-{instance} exited without being killed: {} (log {})",
                self.c.name(),
                exit_reason(&peer.logs()),
                file.display()
            ));
            *instance = self.started;
            self.started += 1;
            *peer = self.launcher.start(self.c, *instance);
        }
        if self.bin.is_running() {
            return false;
        }
        let file = self.launcher.save(self.c, self.instance, &self.bin);
        self.log.exited.push(format!(
            "{}-{} exited without being killed: {} (log {})",
            self.c.name(),
            self.instance,
            exit_reason(&self.bin.logs()),
            file.display()
        ));
        self.restart();
        true
    }

    /// SIGKILL, then a new instance. An instance that had already logged a
    /// fatal error (it was exiting when killed) is recorded as an exit too.
    async fn kill_and_restart(&mut self) {
        self.revive();
        self.bin.sigkill().await.unwrap();
        self.log.kills += 1;
        let file = self.launcher.save(self.c, self.instance, &self.bin);
        if fatal(&self.bin.logs()) {
            self.log.exited.push(format!(
                "{}-{} was exiting on its own when killed: {} (log {})",
                self.c.name(),
                self.instance,
                exit_reason(&self.bin.logs()),
                file.display()
            ));
        }
        self.restart();
    }

    /// Kills the last instances and keeps their logs.
    async fn stop(&mut self) {
        let _ = self.bin.sigkill().await;
        self.launcher.save(self.c, self.instance, &self.bin);
        if let Some((instance, peer)) = &mut self.peer {
            let _ = peer.sigkill().await;
            self.launcher.save(self.c, *instance, peer);
        }
    }
}

/// Waits for `check`, reviving binaries that exit meanwhile.
async fn wait_supervised(
    what: &str,
    sups: &mut [&mut Supervised],
    mut check: impl FnMut() -> Result<(), String>,
) -> Result<(), String> {
    let deadline = Instant::now() + WAIT;
    loop {
        for s in sups.iter_mut() {
            s.revive();
        }
        let why = match check() {
            Ok(()) => return Ok(()),
            Err(why) => why,
        };
        if Instant::now() >= deadline {
            let logs: Vec<String> = sups
                .iter()
                .map(|s| format!("{} logs:\n{}", s.c.name(), s.bin.logs().join("\n")))
                .collect();
            return Err(format!(
                "timed out after {WAIT:?} waiting for {what}: {why}\n{}",
                logs.join("\n")
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Kills and restarts the binary `kills` times at random points; an
/// instance that exits on its own is recorded and restarted.
async fn chaos(
    mut sup: Supervised,
    kills: usize,
    mut rng: Rng,
    shared: Shared,
    issuers: Arc<Vec<IssuerDef>>,
    targets: Arc<Vec<String>>,
) -> Supervised {
    let mut converged_last = true;
    for _ in 0..kills {
        // A random point: early in a restart when the last one was not
        // waited for, else anywhere in the next few seconds of work.
        let delay = if converged_last {
            rng.between(200, 3_000)
        } else {
            rng.between(0, 1_500)
        };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let lease = (("lease"), format!("capstan/{}", sup.c.lease()));
        sup.target_leader(holder_pid(latest(&shared).get(&lease)));
        sup.kill_and_restart().await;
        converged_last = !rng.chance(0.25);
        if !converged_last {
            sup.log.killed_early += 1;
            continue;
        }
        loop {
            let peer = sup.peer_pid();
            match converge(sup.c, &mut sup.bin, peer, &shared, &issuers, &targets).await {
                Converged::Yes(d) => sup.log.converged.push(d),
                Converged::No(why) => {
                    sup.log
                        .not_converged
                        .push(format!("{}-{}: {why}", sup.c.name(), sup.instance))
                }
                Converged::Exited => {
                    sup.revive();
                    continue;
                }
            }
            break;
        }
    }
    sup
}

/// One of the 10 issuers.
#[derive(Debug, Clone)]
struct IssuerDef {
    /// `None`: a ClusterCAIssuer.
    namespace: Option<String>,
    name: String,
}

impl IssuerDef {
    fn id(&self) -> String {
        match &self.namespace {
            None => issuer_id("ClusterCAIssuer", "", &self.name),
            Some(ns) => issuer_id("CAIssuer", ns, &self.name),
        }
    }
    fn kind_lower(&self) -> &'static str {
        match self.namespace {
            None => "clustercaissuer",
            Some(_) => "caissuer",
        }
    }
    fn object_key(&self) -> String {
        format!("{}/{}", self.namespace.as_deref().unwrap_or(""), self.name)
    }
    fn secret_key(&self) -> String {
        format!(
            "{}/{}-ca",
            self.namespace.as_deref().unwrap_or(CLUSTER_NS),
            self.name
        )
    }
}

fn team(i: usize) -> String {
    format!("team-{i}")
}

/// The outcome of one invariant.
struct Verdict {
    name: String,
    failures: Vec<String>,
    detail: String,
}

fn verdict(name: &str, detail: String, failures: Vec<String>) -> Verdict {
    Verdict {
        name: name.to_owned(),
        failures,
        detail,
    }
}

fn openssl_verify(dir: &Path, name: &str, ca_pem: &str, leaf_pem: &str) -> Result<(), String> {
    let ca = dir.join(format!("{name}-ca.pem"));
    let leaf = dir.join(format!("{name}.pem"));
    std::fs::write(&ca, ca_pem).unwrap();
    std::fs::write(&leaf, leaf_pem).unwrap();
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&ca)
        .arg(&leaf)
        .output()
        .map_err(|e| format!("openssl is required: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && text.contains(": OK") {
        Ok(())
    } else {
        Err(text.trim().to_owned())
    }
}

fn decode_b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_default()
}

fn cluster_issuer_resource() -> ApiResource {
    resource(
        "capstan.dev",
        "v1alpha1",
        "ClusterCAIssuer",
        "clustercaissuers",
    )
}

/// One recorder per kind (Leases only in the binaries' namespace).
fn start_recorders(
    client: &kube::Client,
    ca_secrets: &BTreeSet<String>,
    shared: &Shared,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let kinds: [(&'static str, ApiResource); 6] = [
        ("certificaterequest", cr_resource()),
        ("secret", ApiResource::erase::<Secret>(&())),
        ("configmap", ApiResource::erase::<ConfigMap>(&())),
        ("deployment", ApiResource::erase::<Deployment>(&())),
        ("clustercaissuer", cluster_issuer_resource()),
        (
            "caissuer",
            resource("capstan.dev", "v1alpha1", "CAIssuer", "caissuers"),
        ),
    ];
    let mut recorders = Vec::new();
    for (kind, ar) in kinds {
        recorders.push(tokio::spawn(record(
            Api::all_with(client.clone(), &ar),
            kind,
            ca_secrets.clone(),
            shared.clone(),
            stop.clone(),
        )));
    }
    recorders.push(tokio::spawn(record(
        Api::namespaced_with(client.clone(), "capstan", &ApiResource::erase::<Lease>(&())),
        "lease",
        ca_secrets.clone(),
        shared.clone(),
        stop.clone(),
    )));
    recorders
}

/// The 10 issuers: 5 self-managed ClusterCAIssuers (the rotated one with a
/// short propagationDelay and an overlap that outlasts the soak, so its
/// bundle changes once), 5 CAIssuers with user CA Secrets.
async fn create_issuers(client: &kube::Client) {
    let cluster_api = Api::<DynamicObject>::all_with(client.clone(), &cluster_issuer_resource());
    for i in 0..CLUSTER_ISSUERS {
        let mut self_managed = json!({"secretName": format!("cluster-{i}-ca")});
        if i == 0 {
            self_managed["propagationDelay"] = json!("5s");
            self_managed["overlap"] = json!("1h");
            self_managed["duration"] = json!("24h");
            self_managed["rotateBefore"] = json!("1h");
        }
        let obj = json!({"apiVersion": "capstan.dev/v1alpha1", "kind": "ClusterCAIssuer",
            "metadata": {"name": format!("cluster-{i}")},
            "spec": {"maxDuration": "720h", "selfManaged": self_managed}});
        cluster_api
            .create(
                &PostParams::default(),
                &serde_json::from_value(obj).unwrap(),
            )
            .await
            .unwrap();
    }
    for t in 0..TEAMS {
        let ca = capstan_pki::generate_ca(
            &capstan_pki::CaSpec {
                common_name: format!("user CA {t}"),
                organization: None,
                algorithm: capstan_pki::KeyAlgorithm::EcdsaP256,
                lifetime: Duration::from_secs(86_400 * 30),
            },
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
        let secret = json!({"metadata": {"name": format!("user-{t}-ca")}, "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": ca.cert_pem, "tls.key": ca.key.expose(), "ca.crt": ca.cert_pem}});
        Api::<Secret>::namespaced(client.clone(), &team(t))
            .create(
                &PostParams::default(),
                &serde_json::from_value(secret).unwrap(),
            )
            .await
            .unwrap();
        let obj = json!({"apiVersion": "capstan.dev/v1alpha1", "kind": "CAIssuer",
            "metadata": {"name": format!("user-{t}"), "namespace": team(t)},
            "spec": {"maxDuration": "720h", "ca": {"secretName": format!("user-{t}-ca")}}});
        Api::<DynamicObject>::namespaced_with(
            client.clone(),
            &team(t),
            &resource("capstan.dev", "v1alpha1", "CAIssuer", "caissuers"),
        )
        .create(
            &PostParams::default(),
            &serde_json::from_value(obj).unwrap(),
        )
        .await
        .unwrap();
    }
}

/// 20 ConfigMaps in 5 namespaces injecting the rotated issuer's bundle.
async fn create_targets(client: &kube::Client) -> Vec<String> {
    let mut targets = Vec::new();
    for t in 0..TEAMS {
        let cms = Api::<ConfigMap>::namespaced(client.clone(), &team(t));
        for c in 0..CONFIG_MAPS_PER_TEAM {
            let name = format!("trust-{c}");
            let cm = json!({"metadata": {"name": name, "annotations": {"capstan.dev/inject-ca-from-issuer": ROTATED}}});
            cms.create(&PostParams::default(), &serde_json::from_value(cm).unwrap())
                .await
                .unwrap();
            targets.push(format!("{}/{name}", team(t)));
        }
    }
    targets
}

/// 10 opted-in Deployments, each mounting one injected ConfigMap.
async fn create_workloads(client: &kube::Client) -> Vec<String> {
    let mut workloads = Vec::new();
    for t in 0..TEAMS {
        let deployments = Api::<Deployment>::namespaced(client.clone(), &team(t));
        for d in 0..DEPLOYMENTS_PER_TEAM {
            let name = format!("app-{d}");
            let deploy = json!({"metadata": {"name": name, "annotations": {"capstan.dev/restart-on-change": "true"}},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}}, "spec": {
                        "containers": [{"name": "app", "image": "app"}],
                        "volumes": [{"name": "trust", "configMap": {"name": format!("trust-{d}")}}]}}}});
            deployments
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(deploy).unwrap(),
                )
                .await
                .unwrap();
            workloads.push(format!("{}/{name}", team(t)));
        }
    }
    workloads
}

/// Runs `call` until it succeeds (or answers `ok_code`, say 409 for a create
/// whose first answer was lost), for at most [`WAIT`]: the test's own writes
/// ride out the control plane's restarts.
async fn persist<T, F, Fut>(what: &str, ok_code: Option<u16>, mut call: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let last = Mutex::new(String::new());
    await_condition(what, WAIT, POLL, || {
        let attempt = call();
        let last = &last;
        async move {
            match attempt.await {
                Ok(_) => Some(()),
                Err(kube::Error::Api(e)) if Some(e.code) == ok_code => Some(()),
                Err(e) => {
                    *last.lock().unwrap() = e.to_string();
                    None
                }
            }
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}: {}", last.lock().unwrap()))
}

/// Creates requests `range` (spread over the issuers and namespaces) and
/// approves each as cert-manager's approver does: an `Approved` condition
/// through the status subresource.
async fn create_requests(
    client: &kube::Client,
    issuers: &[IssuerDef],
    range: std::ops::Range<usize>,
    csr_b64: &str,
) {
    futures::stream::iter(range)
        .map(|i| {
            let issuer = &issuers[i % issuers.len()];
            let ns = issuer
                .namespace
                .clone()
                .unwrap_or_else(|| team(i / issuers.len() % TEAMS));
            let api = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &cr_resource());
            let kind = if issuer.namespace.is_some() {
                "CAIssuer"
            } else {
                "ClusterCAIssuer"
            };
            let obj = json!({"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
                "metadata": {"name": format!("req-{i:05}")},
                "spec": {"request": csr_b64, "duration": "24h",
                    "issuerRef": {"group": "capstan.dev", "kind": kind, "name": issuer.name}}});
            async move {
                let name = format!("req-{i:05}");
                let request: DynamicObject = serde_json::from_value(obj)?;
                let (post, patch) = (PostParams::default(), PatchParams::default());
                persist(&format!("creating {name}"), Some(409), || {
                    api.create(&post, &request)
                })
                .await?;
                let approve = json!({"status": {"conditions": [{"type": "Approved", "status": "True",
                    "reason": "cert-manager.io", "message": "Certificate request has been approved by cert-manager.io",
                    "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
                let approve = Patch::Merge(&approve);
                persist(&format!("approving {name}"), None, || {
                    api.patch_status(&name, &patch, &approve)
                })
                .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();
}

/// Which control-plane process a restart killed.
#[derive(Debug, Clone, Copy)]
enum Restarted {
    /// kube-apiserver: connections are refused (the proxy answers 502).
    ApiServer,
    /// etcd: kube-apiserver stays up and fails requests that need storage.
    Etcd,
}

/// How long each control-plane process stays down.
const OUTAGE: Duration = Duration::from_secs(3);

/// SIGKILLs `which`, keeps it down for [`OUTAGE`], starts it again on the
/// same ports and data and waits until kube-apiserver is ready; returns a
/// line for the report.
async fn restart(cp: &mut ControlPlane, which: Restarted, soak_started: Instant) -> String {
    let at = soak_started.elapsed();
    let started = Instant::now();
    match which {
        Restarted::ApiServer => cp.kill_apiserver(),
        Restarted::Etcd => cp.kill_etcd(),
    }
    // The outage itself, not a wait for anything.
    tokio::time::sleep(OUTAGE).await;
    // Each returns once kube-apiserver is ready again.
    let started_again = match which {
        Restarted::ApiServer => cp.start_apiserver().await,
        Restarted::Etcd => cp.start_etcd().await,
    };
    started_again.unwrap_or_else(|e| panic!("{e:#}\n{}", cp.logs(20)));
    let line = format!(
        "{which:?} killed at {:.1} s, down {:.0} s, ready again after {:.1} s",
        at.as_secs_f64(),
        OUTAGE.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    println!("soak: {line}");
    line
}

/// The two soaks run one after the other: each alone already keeps both
/// cores busy.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_soak_with_crashes_issues_everything_exactly_once() {
    let requests = env_number("CAPSTAN_SOAK_REQUESTS", 2_000) as usize;
    let kills = env_number("CAPSTAN_SOAK_KILLS", 50) as usize;
    soak(requests, kills, 1).await;
}

/// Two replicas of each binary: each kill is the Lease holder's, and the
/// other replica takes over; three kills of each component's leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_with_the_leader_killed_issue_everything_exactly_once() {
    soak(1_000, 6, 2).await;
}

/// The soak with `requests`, `kills` (split between the components) and
/// `replicas` of each binary.
async fn soak(requests: usize, kills: usize, replicas: usize) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let seed = env_number(
        "CAPSTAN_SOAK_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    let soak_started = Instant::now();
    println!(
        "soak: seed {seed} (replay with CAPSTAN_SOAK_SEED={seed}), {requests} requests, {kills} kills, {replicas} replica(s) each"
    );
    let mut rng = Rng(seed);

    let faults = Faults {
        error_rate: 0.05,
        error_codes: vec![500, 429, 409],
        retry_after_seconds: 1,
        latency_ms: 5,
        latency_jitter_ms: 20,
        watch_cut_after_ms: Some(3_000),
        exempt_users: vec!["admin".into()],
        ..Faults::default()
    };
    // With the scheduler and kwok: the rotator's rollouts really complete.
    // Without kube-apiserver's watch cache, and without its compaction of
    // etcd: the recorder's watches are served by etcd and resume from their
    // last resourceVersion across the restarts (a restarted watch cache
    // starts at etcd's current revision and answers `410 Gone` to anything
    // older, which would leave holes in the history). How the binaries cope
    // with the watch cache's 410s is apiserver_restart.rs's part.
    let mut cp = ControlPlane::builder()
        .apiserver_arg("--watch-cache=false")
        .apiserver_arg("--etcd-compaction-interval=0")
        .start()
        .await
        .unwrap();
    let proxy = FaultProxy::start(&cp, FaultsHandle::new(faults))
        .await
        .unwrap();
    let client = cp.client().await.unwrap();
    create_crds(&client, true).await.unwrap();
    let dir = tempfile::Builder::new()
        .prefix(&format!("capstan-soak-{seed}-"))
        .tempdir()
        .unwrap()
        .keep();
    println!("soak: logs of every binary instance in {}", dir.display());

    // Namespaces.
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    let mut all_ns: Vec<String> = vec![CLUSTER_NS.into(), "capstan".into()];
    all_ns.extend((0..TEAMS).map(team));
    for ns in &all_ns {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await
            .unwrap();
    }

    // The issuers: 5 self-managed ClusterCAIssuers, 5 CAIssuers with user CAs.
    let mut issuers: Vec<IssuerDef> = (0..CLUSTER_ISSUERS)
        .map(|i| IssuerDef {
            namespace: None,
            name: format!("cluster-{i}"),
        })
        .collect();
    issuers.extend((0..TEAMS).map(|t| IssuerDef {
        namespace: Some(team(t)),
        name: format!("user-{t}"),
    }));
    let ca_secrets: BTreeSet<String> = issuers.iter().map(IssuerDef::secret_key).collect();

    // The recorder, started before anything it records exists.
    let shared: Shared = Arc::default();
    let stop = CancellationToken::new();
    let recorders = start_recorders(&client, &ca_secrets, &shared, &stop);

    // The binaries, each as its own user (and so with its own faults),
    // through the fault proxy.
    let mut kubeconfigs = HashMap::new();
    for (c, user) in [("issuer", ISSUER_USER), ("rotator", ROTATOR_USER)] {
        let path = cp
            .user_kubeconfig_at(proxy.url(), &dir, c, user, MASTERS)
            .unwrap();
        kubeconfigs.insert(c, path);
    }
    let launcher = Arc::new(Launcher {
        kubeconfigs,
        logs: dir.clone(),
    });
    let mut issuer = Supervised::start(Component::Issuer, launcher.clone(), replicas);
    let mut rotator = Supervised::start(Component::Rotator, launcher.clone(), replicas);

    create_issuers(&client).await;
    wait_supervised(
        "every issuer Ready",
        &mut [&mut issuer, &mut rotator],
        || issuers_converged(&latest(&shared), &issuers),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let original_ca = match latest(&shared).get(&("secret", format!("{CLUSTER_NS}/{ROTATED}-ca"))) {
        Some(Snap::CaSecret {
            signing: Some(s), ..
        }) => capstan_pki::fingerprint(s),
        other => panic!("the rotated issuer's Secret: {other:?}"),
    };

    // Bundle targets and the workloads that mount them.
    let targets = create_targets(&client).await;
    wait_supervised(
        "every ConfigMap injected",
        &mut [&mut issuer, &mut rotator],
        || targets_converged(&latest(&shared), &targets),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let workloads = create_workloads(&client).await;
    wait_supervised(
        "a baseline hash on every Deployment",
        &mut [&mut issuer, &mut rotator],
        || {
            let live = latest(&shared);
            match workloads.iter().find(|w| {
                !matches!(
                    live.get(&("deployment", (*w).clone())),
                    Some(Snap::Workload {
                        baseline: Some(_),
                        ..
                    })
                )
            }) {
                None => Ok(()),
                Some(w) => Err(format!("Deployment {w} has no baseline")),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let setup = soak_started.elapsed();
    println!("soak: setup done in {:.1} s", setup.as_secs_f64());

    // The soak: requests paced over about a minute, a rotation a third of
    // the way in, a kube-apiserver restart halfway and an etcd restart three
    // quarters of the way, and both binaries killed at random points
    // meanwhile.
    let issuers = Arc::new(issuers);
    let targets = Arc::new(targets);
    let issuer_kills = kills.div_ceil(2);
    let rotator_kills = kills / 2;
    let issuer_chaos = tokio::spawn(chaos(
        issuer,
        issuer_kills,
        Rng(rng.next()),
        shared.clone(),
        issuers.clone(),
        targets.clone(),
    ));
    let rotator_chaos = tokio::spawn(chaos(
        rotator,
        rotator_kills,
        Rng(rng.next()),
        shared.clone(),
        issuers.clone(),
        targets.clone(),
    ));
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(vec!["app.team.svc".to_owned()])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let csr_b64 = base64::engine::general_purpose::STANDARD.encode(csr.as_bytes());
    let batches = requests.div_ceil(50).max(1);
    let pace = Duration::from_millis(60_000 / batches as u64);
    let mut rotated_at = None;
    let mut restarts = Vec::new();
    for b in 0..batches {
        let batch_started = Instant::now();
        if b == batches / 2 {
            restarts.push(restart(&mut cp, Restarted::ApiServer, soak_started).await);
        }
        if b == batches * 3 / 4 {
            restarts.push(restart(&mut cp, Restarted::Etcd, soak_started).await);
        }
        create_requests(
            &client,
            &issuers,
            b * 50..((b + 1) * 50).min(requests),
            &csr_b64,
        )
        .await;
        if rotated_at.is_none() && b >= batches / 3 {
            let patch = json!({"metadata": {"annotations": {"capstan.dev/rotate": ROTATE_VALUE}}});
            let issuers =
                Api::<DynamicObject>::all_with(client.clone(), &cluster_issuer_resource());
            let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
            persist("the rotation trigger", None, || {
                issuers.patch(ROTATED, &params, &patch)
            })
            .await
            .unwrap();
            rotated_at = Some(soak_started.elapsed());
            println!(
                "soak: rotation of {ROTATED} triggered at {:.1} s",
                soak_started.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(pace.saturating_sub(batch_started.elapsed())).await;
    }
    println!(
        "soak: {requests} requests created and approved by {:.1} s",
        soak_started.elapsed().as_secs_f64()
    );
    let mut issuer = issuer_chaos.await.unwrap();
    let mut rotator = rotator_chaos.await.unwrap();
    let chaos_done = soak_started.elapsed();
    println!(
        "soak: {} kills done by {:.1} s",
        issuer.log.kills + rotator.log.kills,
        chaos_done.as_secs_f64()
    );

    // The end state: everything issued, the rotation switched, every target
    // holding the bundle, every workload rolled.
    let converged_finally =
        wait_supervised("the final state", &mut [&mut issuer, &mut rotator], || {
            let live = latest(&shared);
            let (approved, issued) = request_counts(&live);
            if approved != requests || issued != requests {
                return Err(format!(
                    "{issued} issued, {approved} approved of {requests}"
                ));
            }
            let switched = matches!(live.get(&("secret", format!("{CLUSTER_NS}/{ROTATED}-ca"))),
                Some(Snap::CaSecret { signing: Some(s), bundle, .. })
                    if capstan_pki::fingerprint(s) != original_ca && bundle.len() == 2);
            if !switched {
                return Err(format!("{ROTATED} has not switched to its new CA"));
            }
            if let Some(w) = workloads.iter().find(|w| {
                !matches!(
                    live.get(&("deployment", (*w).clone())),
                    Some(Snap::Workload {
                        template_hash: Some(_),
                        ..
                    })
                )
            }) {
                return Err(format!("Deployment {w} has not rolled"));
            }
            issuers_converged(&live, &issuers)?;
            targets_converged(&live, &targets)
        })
        .await;
    let final_state = latest(&shared);
    let end = soak_started.elapsed();
    println!(
        "soak: final state {} at {:.1} s",
        if converged_finally.is_ok() {
            "reached"
        } else {
            "NOT reached"
        },
        end.as_secs_f64()
    );
    // A quiet moment for late, spurious writes (a double rollout, a re-sign)
    // to show up in the history before it is read.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // An exit on its own by now is recorded like the others.
    issuer.revive();
    rotator.revive();
    // Their metrics, for the key scan.
    let mut metrics = String::new();
    for s in [&issuer, &rotator] {
        metrics.push_str(&s.bin.metrics_text().await.unwrap_or_default());
    }
    issuer.stop().await;
    rotator.stop().await;
    stop.cancel();
    for r in recorders {
        let _ = r.await;
    }
    let record = std::mem::take(&mut *shared.lock().unwrap());
    let seen = proxy.seen();
    let audit = cp.request_log();

    let verdicts = analyse(&Analysis {
        requests,
        seed,
        record: &record,
        final_state: &final_state,
        seen: &seen,
        audit: &audit,
        restarts: &restarts,
        issuers: &issuers,
        targets: &targets,
        workloads: &workloads,
        original_ca: &original_ca,
        crash_logs: [("issuer", &issuer.log), ("rotator", &rotator.log)],
        final_converged: converged_finally
            .as_ref()
            .err()
            .map(|e| e.lines().next().unwrap_or_default().to_owned()),
        dir: &dir,
        min_kills: kills,
    });

    let (out, failed) = render(
        &verdicts,
        &format!(
            "soak: wall time {:.1} s (setup {:.1} s, kills done {:.1} s), {} requests through the proxy, {} audited by kube-apiserver, seed {seed}",
            soak_started.elapsed().as_secs_f64(),
            setup.as_secs_f64(),
            chaos_done.as_secs_f64(),
            seen.len(),
            audit.len()
        ),
    );
    print!("{out}");
    assert_eq!(
        failed,
        0,
        "the soak found problems (seed {seed}; logs in {})",
        dir.display()
    );
    // Every log line of every instance, the last instances' metrics, and
    // every object (statuses, ConfigMaps, Events), free of keys.
    let mut logs: String = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect();
    logs.push_str(&metrics);
    let kubectl = Kubectl::for_server(&cp).unwrap();
    let scanned = hygiene::assert_no_key_leaks_in(&kubectl, logs, &[]).await;
    println!("soak: no private key outside Secrets ({scanned:?})");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The report: one line per invariant (failures marked `BUG?` under it),
/// `footer`, and the summary `soak: N passed, M failed`; and M.
fn render(verdicts: &[Verdict], footer: &str) -> (String, usize) {
    let mut out = String::new();
    let failed = verdicts.iter().filter(|v| !v.failures.is_empty()).count();
    for v in verdicts {
        if v.failures.is_empty() {
            let _ = writeln!(out, "soak: ok   {}: {}", v.name, v.detail);
        } else {
            let _ = writeln!(
                out,
                "soak: FAIL {}: {} ({} problems)",
                v.name,
                v.detail,
                v.failures.len()
            );
            for f in v.failures.iter().take(10) {
                let _ = writeln!(out, "soak:        BUG? {f}");
            }
        }
    }
    let _ = writeln!(out, "{footer}");
    let _ = writeln!(
        out,
        "soak: {} passed, {failed} failed",
        verdicts.len() - failed
    );
    (out, failed)
}

/// Everything the invariants are checked against.
struct Analysis<'a> {
    requests: usize,
    seed: u64,
    record: &'a Record,
    final_state: &'a HashMap<(&'static str, String), Snap>,
    /// Every request the fault proxy saw: all of the binaries'.
    seen: &'a [Seen],
    /// kube-apiserver's audit log: every request that reached it.
    audit: &'a [RequestRecord],
    /// The control-plane restarts done during the soak.
    restarts: &'a [String],
    issuers: &'a [IssuerDef],
    targets: &'a [String],
    workloads: &'a [String],
    original_ca: &'a str,
    crash_logs: [(&'static str, &'a CrashLog); 2],
    final_converged: Option<String>,
    dir: &'a Path,
    min_kills: usize,
}

/// The history of one object, in resourceVersion order.
fn histories(record: &Record) -> HashMap<(&'static str, String), Vec<&Ev>> {
    let mut sorted: Vec<&Ev> = record.events.iter().collect();
    sorted.sort_by_key(|e| e.rv);
    let mut by: HashMap<(&'static str, String), Vec<&Ev>> = HashMap::new();
    for e in sorted {
        by.entry((e.kind, e.key.clone())).or_default().push(e);
    }
    by
}

/// What is wrong with the status writes of request `key`: its history (in
/// resourceVersion order) must show exactly one change that sets the
/// certificate and none after it, and every successful status write of the
/// issuer (`logged`) must be one change in the history (a write that changed
/// nothing, such as a repeated certificate, is not). Of the writes whose
/// answer was lost (`lost`), each may or may not be a change too.
fn status_write_problems(key: &str, history: &[&Ev], logged: usize, lost: usize) -> Vec<String> {
    let mut failures = Vec::new();
    let mut prev: Option<&Snap> = None;
    let (mut issuer_changes, mut issued, mut after_issue) = (0, 0, 0);
    for e in history {
        if let (
            Some(Snap::Request {
                approved: was_approved,
                certificate: was,
                status: old,
                ..
            }),
            Snap::Request {
                approved,
                certificate: now,
                status,
                ..
            },
        ) = (prev, &e.snap)
            && old != status
        {
            if *approved && !was_approved {
                // The test's approval, through the status subresource.
            } else {
                issuer_changes += 1;
                match (was, now) {
                    (None, Some(_)) => issued += 1,
                    (Some(a), Some(b)) if a != b => {
                        failures.push(format!("{key}: status.certificate replaced (signed twice)"))
                    }
                    (Some(_), None) => failures.push(format!("{key}: status.certificate removed")),
                    (Some(_), Some(_)) => after_issue += 1,
                    (None, None) => {}
                }
            }
        }
        prev = Some(&e.snap);
    }
    if issued != 1 {
        failures.push(format!("{key}: {issued} status writes set a certificate"));
    }
    if after_issue > 0 {
        failures.push(format!(
            "{key}: {after_issue} status writes after the certificate was set"
        ));
    }
    if logged > issuer_changes {
        failures.push(format!(
            "{key}: the issuer made {logged} successful status writes, the history has {issuer_changes} status changes (a write that changed nothing, e.g. a repeated certificate)"
        ));
    } else if issuer_changes > logged + lost {
        failures.push(format!(
            "{key}: the history has {issuer_changes} status changes, the issuer made {logged} successful status writes and {lost} whose answer was lost"
        ));
    }
    failures
}

/// `namespace/name` of the CertificateRequest whose status `uri` addresses
/// (`/apis/cert-manager.io/v1/namespaces/<ns>/certificaterequests/<name>/status`).
fn request_status_key(uri: &str) -> Option<String> {
    let path = uri.split('?').next()?;
    match path
        .trim_matches('/')
        .split('/')
        .collect::<Vec<_>>()
        .as_slice()
    {
        [
            "apis",
            "cert-manager.io",
            _,
            "namespaces",
            ns,
            "certificaterequests",
            name,
            "status",
        ] => Some(format!("{ns}/{name}")),
        _ => None,
    }
}

/// What is wrong in the history of one issuer's CA Secret (resourceVersion
/// order), and the rotation steps seen (publish, switch). `tls.key` may only
/// change to the `next.key` published before it (and only for a
/// self-managed CA); a published `next.key` may only leave by becoming
/// `tls.key`; the signing and next CAs are always in the published bundle;
/// no CA leaves the bundle (the soak's overlap outlasts it).
fn ca_secret_problems(
    id: &str,
    self_managed: bool,
    history: &[&Ev],
) -> (Vec<String>, usize, usize) {
    let mut failures = Vec::new();
    let (mut publish, mut switch) = (0, 0);
    let mut prev: Option<(&Option<String>, &Option<String>, &BTreeSet<String>)> = None;
    for e in history {
        if e.deleted {
            failures.push(format!("{}: the CA Secret was deleted (rv {})", id, e.rv));
            prev = None;
            continue;
        }
        let Snap::CaSecret {
            key,
            next_key,
            bundle,
            signing,
            next,
            ..
        } = &e.snap
        else {
            continue;
        };
        let signing_fp = signing.as_deref().map(capstan_pki::fingerprint);
        if key.is_none() {
            failures.push(format!("{}: tls.key missing at rv {}", id, e.rv));
        }
        if let Some(fp) = &signing_fp
            && !bundle.contains(fp)
        {
            failures.push(format!(
                "{}: the signing CA is not in the published bundle at rv {}",
                id, e.rv
            ));
        }
        if let Some(n) = next.as_deref().map(capstan_pki::fingerprint)
            && !bundle.contains(&n)
        {
            failures.push(format!(
                "{}: next.crt is not in the published bundle at rv {}",
                id, e.rv
            ));
        }
        if let Some((old_key, old_next, old_bundle)) = prev {
            if key != old_key {
                if self_managed && old_next.is_some() && key == old_next {
                    switch += 1;
                } else {
                    failures.push(format!(
                        "{}: tls.key replaced at rv {} without a rotation step (it is not the published next.key)",
                        id,
                        e.rv
                    ));
                }
            }
            match (old_next, next_key) {
                (None, Some(_)) => publish += 1,
                (Some(n), None) if key.as_ref() != Some(n) => failures.push(format!(
                    "{}: the published next.key vanished at rv {} without becoming tls.key",
                    id, e.rv
                )),
                (Some(n), Some(m)) if n != m => failures.push(format!(
                    "{}: the published next.key was replaced at rv {}",
                    id, e.rv
                )),
                _ => {}
            }
            let dropped: Vec<&String> = old_bundle.difference(bundle).collect();
            if !dropped.is_empty() {
                failures.push(format!(
                    "{}: {} CA(s) left the bundle at rv {} although overlap outlasts the soak",
                    id,
                    dropped.len(),
                    e.rv
                ));
            }
        }
        prev = Some((key, next_key, bundle));
    }
    (failures, publish, switch)
}

/// The first resourceVersion at which the CA Secret signed with `fingerprint`
/// (held it in `tls.crt`).
fn first_signing_rv(history: &[&Ev], fingerprint: &str) -> Option<u64> {
    history.iter().find_map(|e| match &e.snap {
        Snap::CaSecret {
            signing: Some(s), ..
        } if !e.deleted && capstan_pki::fingerprint(s) == fingerprint => Some(e.rv),
        _ => None,
    })
}

/// The published bundle of `secret` just before resourceVersion `rv`.
fn bundle_before<'a>(history: &[&'a Ev], rv: u64) -> Option<&'a BTreeSet<String>> {
    history
        .iter()
        .rev()
        .find(|e| e.rv < rv)
        .and_then(|e| match &e.snap {
            Snap::CaSecret { bundle, .. } if !e.deleted => Some(bundle),
            _ => None,
        })
}

#[allow(clippy::too_many_lines)]
fn analyse(a: &Analysis<'_>) -> Vec<Verdict> {
    let by = histories(a.record);
    let mut verdicts = Vec::new();
    let requests: Vec<(&String, &Snap)> = a
        .final_state
        .iter()
        .filter(|((k, _), _)| *k == "certificaterequest")
        .map(|((_, key), s)| (key, s))
        .collect();

    // 0. The recorder saw everything (no hole in the history).
    verdicts.push(verdict(
        "the recorded history is complete",
        format!(
            "{} changes recorded over {} objects, watches resumed {} times",
            a.record.events.len(),
            by.len(),
            a.record.interruptions
        ),
        a.record.problems.clone(),
    ));

    // The faults reached the binaries, and only them (the test's own
    // client talks to kube-apiserver directly, never through the proxy).
    let mut failures = Vec::new();
    let mut detail = Vec::new();
    for user in [ISSUER_USER, ROTATOR_USER, "admin"] {
        let count = |pred: &dyn Fn(&Seen) -> bool| {
            a.seen.iter().filter(|r| r.user == user && pred(r)).count()
        };
        let total = count(&|_| true);
        let injected = |code: u16| count(&|r| r.injected && r.code == code);
        let (e500, e429, e409) = (injected(500), injected(429), injected(409));
        let watches = count(&|r| {
            let (path, query) = r.uri.split_once('?').unwrap_or((&r.uri, ""));
            is_watch(path, Some(query))
        });
        let name = user.rsplit(':').next().unwrap_or(user);
        detail.push(format!(
            "{name}: {total} requests through the proxy, {e500}x500 {e429}x429 {e409}x409 injected, {watches} watches"
        ));
        if user == "admin" {
            if e500 + e429 + e409 > 0 {
                failures.push(format!(
                    "the test's own client was given {e500} 500s, {e429} 429s and {e409} 409s"
                ));
            }
        } else if e500 == 0 || e429 == 0 || watches < 20 {
            failures.push(format!(
                "{name} was hardly disturbed: {e500} 500s, {e429} 429s, {watches} watches"
            ));
        }
    }
    let admin_direct = a.audit.iter().filter(|r| r.user == "admin").count();
    detail.push(format!(
        "admin: {admin_direct} requests straight to kube-apiserver"
    ));
    verdicts.push(verdict(
        "the faults reach the binaries and spare the test's own client",
        detail.join("; "),
        failures,
    ));

    // The control plane's own processes went away and came back.
    let mut failures = Vec::new();
    for which in ["ApiServer", "Etcd"] {
        if !a.restarts.iter().any(|r| r.starts_with(which)) {
            failures.push(format!("no {which} restart during the soak"));
        }
    }
    verdicts.push(verdict(
        "kube-apiserver and etcd restart during the soak",
        a.restarts.join("; "),
        failures,
    ));

    // 1. Every request Ready=True.
    let mut failures = Vec::new();
    if requests.len() != a.requests {
        failures.push(format!(
            "{} requests exist, {} were created",
            requests.len(),
            a.requests
        ));
    }
    for (key, s) in &requests {
        if let Snap::Request {
            ready, certificate, ..
        } = s
            && (ready.as_deref() != Some("True") || certificate.is_none())
        {
            failures.push(format!(
                "request {key} is stuck: Ready={ready:?}, certificate set: {}",
                certificate.is_some()
            ));
        }
    }
    if let Some(e) = &a.final_converged {
        failures.push(format!("the final state was not reached: {e}"));
    }
    verdicts.push(verdict(
        "every request reaches Ready=True",
        format!("{} requests", a.requests),
        failures,
    ));

    // CA certificates ever held by each issuer's Secret, by fingerprint.
    let mut issuer_cas: HashMap<String, BTreeMap<String, Vec<u8>>> = HashMap::new();
    for i in a.issuers {
        let cas = issuer_cas.entry(i.id()).or_default();
        for e in by.get(&("secret", i.secret_key())).into_iter().flatten() {
            if let Snap::CaSecret { certs, .. } = &e.snap {
                cas.extend(certs.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
    }
    let secret_of: HashMap<String, String> =
        a.issuers.iter().map(|i| (i.id(), i.secret_key())).collect();

    // 2. Every serial once; 3. every leaf verifies against its issuer's CA.
    let mut serials: HashMap<String, Vec<String>> = HashMap::new();
    let mut verify_failures = Vec::new();
    let mut signer_of: HashMap<String, String> = HashMap::new();
    let mut by_signer: BTreeMap<String, usize> = BTreeMap::new();
    for (key, s) in &requests {
        let Snap::Request {
            issuer,
            certificate: Some(cert),
            ca,
            ..
        } = s
        else {
            continue;
        };
        let chain = certificates(&decode_b64(cert));
        let Some(leaf) = chain.first() else {
            verify_failures.push(format!("{key}: status.certificate holds no certificate"));
            continue;
        };
        serials
            .entry(serial(leaf).unwrap_or_default())
            .or_default()
            .push((*key).clone());
        let cas = issuer_cas.get(issuer).cloned().unwrap_or_default();
        let mut signer = None;
        for (fp, der) in &cas {
            match signed_by(leaf, der) {
                Ok(true) => signer = Some(fp.clone()),
                Ok(false) => {}
                Err(e) => verify_failures.push(format!("{key}: {e}")),
            }
        }
        let Some(signer) = signer else {
            verify_failures.push(format!(
                "{key}: the leaf is signed by none of the {} CAs {issuer} ever had",
                cas.len()
            ));
            continue;
        };
        let status_ca = ca
            .as_deref()
            .map(|c| fingerprints(&decode_b64(c)))
            .unwrap_or_default();
        if !status_ca.contains(&signer) {
            verify_failures.push(format!(
                "{key}: status.ca does not hold the CA that signed the leaf ({signer})"
            ));
        }
        *by_signer.entry(issuer.clone()).or_default() += 1;
        signer_of.insert((*key).clone(), signer);
    }
    let duplicates: Vec<String> = serials
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(s, v)| format!("serial {s} appears in {} requests: {v:?}", v.len()))
        .collect();
    verdicts.push(verdict(
        "every leaf serial appears exactly once",
        format!("{} distinct serials", serials.len()),
        duplicates,
    ));
    // The openssl spot-check.
    let mut rng = Rng(a.seed ^ 0x5eed);
    let mut sample: Vec<&(&String, &Snap)> = Vec::new();
    for _ in 0..OPENSSL_SAMPLE.min(requests.len()) {
        sample.push(&requests[(rng.next() % requests.len() as u64) as usize]);
    }
    let mut checked = 0;
    for (key, s) in sample {
        if let Snap::Request {
            certificate: Some(cert),
            ca: Some(ca),
            ..
        } = s
        {
            let name = key.replace('/', "_");
            let ca_pem = String::from_utf8_lossy(&decode_b64(ca)).into_owned();
            let leaf_pem = String::from_utf8_lossy(&decode_b64(cert)).into_owned();
            match openssl_verify(a.dir, &name, &ca_pem, &leaf_pem) {
                Ok(()) => checked += 1,
                Err(e) => verify_failures.push(format!("{key}: openssl verify: {e}")),
            }
        }
    }
    verdicts.push(verdict(
        "every leaf verifies against its issuer's CA",
        format!(
            "{} leaves checked with ring, {checked} with openssl verify; by issuer {by_signer:?}",
            signer_of.len()
        ),
        verify_failures,
    ));

    // 4. Exactly one successful status write carrying a certificate. The
    // binaries' writes and the answers they got are the proxy's record. A
    // write whose answer was lost (kube-apiserver killed under it: 502 from
    // the proxy; or a 5xx from kube-apiserver while etcd was away) may or
    // may not have been applied: it may account for a change the
    // successful writes do not.
    let mut writes: HashMap<String, usize> = HashMap::new();
    let mut unknown: HashMap<String, usize> = HashMap::new();
    for r in a.seen {
        let Some(key) = request_status_key(&r.uri) else {
            continue;
        };
        if r.user != ISSUER_USER || !matches!(r.method.as_str(), "PATCH" | "PUT") {
            continue;
        }
        if (200..300).contains(&r.code) {
            *writes.entry(key).or_default() += 1;
        } else if !r.injected && r.code >= 500 {
            *unknown.entry(key).or_default() += 1;
        }
    }
    let mut failures = Vec::new();
    let mut total_writes = 0;
    let mut extra_writes = 0;
    let mut lost_answers = 0;
    for (key, _) in &requests {
        let history = by
            .get(&("certificaterequest", (*key).clone()))
            .cloned()
            .unwrap_or_default();
        let logged = writes.get(*key).copied().unwrap_or(0);
        let lost = unknown.get(*key).copied().unwrap_or(0);
        total_writes += logged;
        extra_writes += logged.saturating_sub(1);
        lost_answers += lost;
        failures.extend(status_write_problems(key, &history, logged, lost));
    }
    verdicts.push(verdict(
        "exactly one successful status write carrying a certificate per request",
        format!(
            "{total_writes} successful issuer status writes seen by the proxy ({extra_writes} besides the issuing ones, e.g. Pending), {lost_answers} with the answer lost to a restart, each matched to the history"
        ),
        failures,
    ));

    // 5. No CA key lost or replaced without a rotation step.
    let mut failures = Vec::new();
    let mut steps: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for i in a.issuers {
        let history = by
            .get(&("secret", i.secret_key()))
            .cloned()
            .unwrap_or_default();
        let (problems, publish, switch) =
            ca_secret_problems(&i.id(), i.namespace.is_none(), &history);
        failures.extend(problems);
        if publish + switch > 0 {
            steps.insert(i.id(), (publish, switch));
        }
    }
    let rotated = issuer_id("ClusterCAIssuer", "", ROTATED);
    let rotated_steps = steps.get(&rotated).copied().unwrap_or_default();
    if rotated_steps != (1, 1) {
        failures.push(format!(
            "{rotated}: {} publish and {} switch steps recorded, expected 1 and 1",
            rotated_steps.0, rotated_steps.1
        ));
    }
    for (id, s) in &steps {
        if *id != rotated {
            failures.push(format!("{id}: rotated ({s:?}) without being asked"));
        }
    }
    let final_signing = match a
        .final_state
        .get(&("secret", format!("{CLUSTER_NS}/{ROTATED}-ca")))
    {
        Some(Snap::CaSecret {
            signing: Some(s), ..
        }) => capstan_pki::fingerprint(s),
        _ => String::new(),
    };
    if final_signing == a.original_ca {
        failures.push(format!("{rotated}: still signs with its original CA"));
    }
    verdicts.push(verdict(
        "no CA key lost or replaced without a rotation step",
        format!(
            "{} CA Secrets followed; {rotated}: {} publish, {} switch",
            a.issuers.len(),
            rotated_steps.0,
            rotated_steps.1
        ),
        failures,
    ));

    // 6. No leaf signed by a CA missing from the published bundle then.
    let mut failures = Vec::new();
    let mut early = Vec::new();
    let mut checked = 0;
    let mut by_new_ca = 0;
    for (key, s) in &requests {
        let Snap::Request { issuer, .. } = s else {
            continue;
        };
        let Some(signer) = signer_of.get(*key) else {
            continue;
        };
        let history = by
            .get(&("certificaterequest", (*key).clone()))
            .cloned()
            .unwrap_or_default();
        let Some(issued_rv) = history.iter().find_map(|e| match &e.snap {
            Snap::Request {
                certificate: Some(_),
                ..
            } => Some(e.rv),
            _ => None,
        }) else {
            continue;
        };
        let secret = by
            .get(&("secret", secret_of[issuer].clone()))
            .cloned()
            .unwrap_or_default();
        checked += 1;
        match bundle_before(&secret, issued_rv) {
            Some(b) if b.contains(signer) => {}
            Some(_) => failures.push(format!(
                "{key}: signed by {signer}, which was not in {issuer}'s published bundle when the certificate was written (rv {issued_rv})"
            )),
            None => failures.push(format!(
                "{key}: no CA Secret of {issuer} existed when the certificate was written (rv {issued_rv})"
            )),
        }
        match first_signing_rv(&secret, signer) {
            Some(rv) if rv < issued_rv => {}
            _ => early.push(format!(
                "{key}: signed by {signer} before {issuer}'s Secret made it the signing CA (the propagationDelay was not waited out)"
            )),
        }
        if signer != a.original_ca && *issuer == issuer_id("ClusterCAIssuer", "", ROTATED) {
            by_new_ca += 1;
        }
    }
    verdicts.push(verdict(
        "no leaf signed by a CA missing from the published bundle",
        format!("{checked} leaves checked against the bundle at their signing"),
        failures,
    ));
    verdicts.push(verdict(
        "no leaf signed by a new CA before it became the signing CA",
        format!("{by_new_ca} leaves of {ROTATED} signed by its new CA, all after the switch"),
        early,
    ));

    // 7. The rotation reached every target ConfigMap.
    let mut failures = Vec::new();
    let new_ca = final_signing;
    for t in a.targets {
        let history = by
            .get(&("configmap", t.clone()))
            .cloned()
            .unwrap_or_default();
        let had_new = history.iter().any(|e| {
            matches!(&e.snap, Snap::Target { bundle: Some(b) } if b.contains(&new_ca) && b.contains(a.original_ca))
        });
        if !had_new {
            failures.push(format!("ConfigMap {t} never held both the old and new CA"));
        }
    }
    verdicts.push(verdict(
        "the rotation reaches every target ConfigMap",
        format!("{} ConfigMaps in {TEAMS} namespaces", a.targets.len()),
        failures,
    ));

    // 8. Every opted-in workload rolled exactly once per content change.
    let mut failures = Vec::new();
    let mut total_rolls = 0;
    for w in a.workloads {
        let history = by
            .get(&("deployment", w.clone()))
            .cloned()
            .unwrap_or_default();
        let baseline_rv = history.iter().find_map(|e| match &e.snap {
            Snap::Workload {
                baseline: Some(_), ..
            } => Some(e.rv),
            _ => None,
        });
        let cm = history.iter().find_map(|e| match &e.snap {
            Snap::Workload {
                volume_config_map: Some(c),
                ..
            } => Some(c.clone()),
            _ => None,
        });
        let (Some(baseline_rv), Some(cm)) = (baseline_rv, cm) else {
            failures.push(format!(
                "Deployment {w}: no baseline or no ConfigMap volume"
            ));
            continue;
        };
        let ns = w.split('/').next().unwrap_or_default();
        let mut last: Option<&Option<BTreeSet<String>>> = None;
        let mut changes = 0;
        for e in by
            .get(&("configmap", format!("{ns}/{cm}")))
            .cloned()
            .unwrap_or_default()
        {
            if let Snap::Target { bundle } = &e.snap {
                if e.rv > baseline_rv && last.is_some_and(|l| l != bundle) {
                    changes += 1;
                }
                last = Some(bundle);
            }
        }
        let mut rolls = 0;
        let mut hash: Option<&Option<String>> = None;
        for e in &history {
            if let Snap::Workload { template_hash, .. } = &e.snap {
                if hash.is_some_and(|h| h != template_hash) {
                    rolls += 1;
                }
                hash = Some(template_hash);
            }
        }
        total_rolls += rolls;
        if rolls != changes {
            failures.push(format!(
                "Deployment {w}: rolled {rolls} times for {changes} content changes of ConfigMap {ns}/{cm}"
            ));
        }
    }
    verdicts.push(verdict(
        "every opted-in workload rolls exactly once per content change",
        format!("{} Deployments, {total_rolls} rollouts", a.workloads.len()),
        failures,
    ));

    // 9. Kills happened and every checked restart converged; 10. nothing
    // exited on its own.
    let mut failures = Vec::new();
    let mut exits = Vec::new();
    let mut detail = Vec::new();
    let mut kills = 0;
    for (name, log) in a.crash_logs {
        kills += log.kills;
        let slowest = log.converged.iter().max().copied().unwrap_or_default();
        detail.push(format!(
            "{name}: {} kills, {} restarts converged (slowest {:.1} s), {} killed again early",
            log.kills,
            log.converged.len(),
            slowest.as_secs_f64(),
            log.killed_early
        ));
        failures.extend(log.not_converged.iter().cloned());
        exits.extend(log.exited.iter().cloned());
    }
    if kills < a.min_kills {
        failures.push(format!("only {kills} kills, {} wanted", a.min_kills));
    }
    verdicts.push(verdict(
        "after each SIGKILL and restart the state converges",
        detail.join("; "),
        failures,
    ));
    verdicts.push(verdict(
        "no binary exits on its own (every exit is a SIGKILL)",
        format!(
            "{} unexpected exits, each restarted as a kubelet would",
            exits.len()
        ),
        exits,
    ));
    verdicts
}

// ---------------------------------------------------------------------------
// The checks themselves, on made-up histories: each invariant can fail.

/// A CA of `algorithm` named `name`, and a leaf it signed.
fn ca_and_leaf(name: &str, algorithm: capstan_pki::KeyAlgorithm) -> (Vec<u8>, Vec<u8>) {
    let now = time::OffsetDateTime::now_utc();
    let ca = capstan_pki::generate_ca(
        &capstan_pki::CaSpec {
            common_name: name.into(),
            organization: None,
            algorithm,
            lifetime: Duration::from_secs(86_400),
        },
        now,
    )
    .unwrap();
    let signing = capstan_pki::SigningCa::from_pem(
        ca.cert_pem.as_bytes(),
        ca.key.expose().as_bytes(),
        None,
        now,
    )
    .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(vec!["leaf.svc".to_owned()])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let policy = capstan_pki::LeafPolicy {
        default_duration: Duration::from_secs(3600),
        max_duration: Duration::from_secs(86_400),
        allowed_usages: vec![],
        permitted_dns_domains: vec![],
        permitted_ip_ranges: vec![],
    };
    let leaf = signing
        .sign(
            &capstan_pki::parse_csr(csr.as_bytes()).unwrap(),
            &capstan_pki::LeafRequest::default(),
            &policy,
            now,
        )
        .unwrap();
    (
        certificates(ca.cert_pem.as_bytes()).remove(0),
        certificates(leaf.certificate_pem.as_bytes()).remove(0),
    )
}

#[test]
fn a_leaf_verifies_only_against_the_ca_whose_key_signed_it() {
    use capstan_pki::KeyAlgorithm::{EcdsaP256, EcdsaP384, Ed25519, Rsa2048};
    for alg in [EcdsaP256, EcdsaP384, Ed25519, Rsa2048] {
        let (ca, leaf) = ca_and_leaf("same name", alg);
        // Same subject, other key: only the signature tells them apart.
        let (impostor, _) = ca_and_leaf("same name", alg);
        let (other_name, _) = ca_and_leaf("other name", alg);
        assert_eq!(signed_by(&leaf, &ca), Ok(true), "{alg:?}");
        assert_eq!(signed_by(&leaf, &impostor), Ok(false), "{alg:?}");
        assert_eq!(signed_by(&leaf, &other_name), Ok(false), "{alg:?}");
        assert!(signed_by(&leaf[..leaf.len() / 2], &ca).is_err());
    }
}

fn ev(rv: u64, snap: Snap) -> Ev {
    Ev {
        rv,
        kind: "test",
        key: "ns/x".into(),
        deleted: false,
        snap,
    }
}

fn request(approved: bool, ready: Option<&str>, certificate: Option<&str>) -> Snap {
    Snap::Request {
        issuer: "ClusterCAIssuer/a".into(),
        approved,
        ready: ready.map(str::to_owned),
        certificate: certificate.map(str::to_owned),
        ca: None,
        status: json!({"approved": approved, "ready": ready, "certificate": certificate}),
    }
}

#[test]
fn status_writes_are_matched_to_the_history() {
    let created = ev(1, request(false, None, None));
    let approved = ev(2, request(true, None, None));
    let pending = ev(3, request(true, Some("False"), None));
    let issued = ev(4, request(true, Some("True"), Some("leaf-1")));
    let good = [&created, &approved, &pending, &issued];
    assert_eq!(
        status_write_problems("ns/x", &good, 2, 0),
        Vec::<String>::new()
    );
    // A write the history does not show (it changed nothing).
    assert_eq!(status_write_problems("ns/x", &good, 3, 0).len(), 1);
    // A write whose answer was lost is not counted against a no-op: a
    // successful write too many is still one.
    assert_eq!(status_write_problems("ns/x", &good, 3, 1).len(), 1);
    // A change the successful writes do not account for: only a write whose
    // answer was lost may explain it.
    assert_eq!(status_write_problems("ns/x", &good, 1, 0).len(), 1);
    assert_eq!(
        status_write_problems("ns/x", &good, 1, 1),
        Vec::<String>::new()
    );
    assert_eq!(status_write_problems("ns/x", &good, 0, 1).len(), 1);
    // Signed twice.
    let again = ev(5, request(true, Some("True"), Some("leaf-2")));
    let twice = [&created, &approved, &issued, &again];
    let problems = status_write_problems("ns/x", &twice, 2, 0);
    assert!(
        problems.iter().any(|p| p.contains("signed twice")),
        "{problems:?}"
    );
    // Never issued.
    let stuck = [&created, &approved, &pending];
    assert!(
        status_write_problems("ns/x", &stuck, 1, 0)[0]
            .contains("0 status writes set a certificate")
    );
    // Touched after issuance.
    let flipped = ev(5, request(true, Some("False"), Some("leaf-1")));
    let after = [&created, &approved, &issued, &flipped];
    assert!(
        status_write_problems("ns/x", &after, 2, 0)
            .iter()
            .any(|p| p.contains("after the certificate was set"))
    );
}

fn ca_secret(key: &str, next_key: Option<&str>, bundle: &[&str]) -> Snap {
    Snap::CaSecret {
        key: Some(key.into()),
        next_key: next_key.map(str::to_owned),
        signing: None,
        next: None,
        bundle: bundle.iter().map(|b| (*b).to_owned()).collect(),
        certs: BTreeMap::new(),
    }
}

#[test]
fn a_ca_key_may_change_only_through_a_published_next_key() {
    let created = ev(1, ca_secret("k1", None, &["c1"]));
    let published = ev(2, ca_secret("k1", Some("k2"), &["c1", "c2"]));
    let switched = ev(3, ca_secret("k2", None, &["c1", "c2"]));
    let rotation = [&created, &published, &switched];
    assert_eq!(ca_secret_problems("a", true, &rotation), (Vec::new(), 1, 1));
    // The same steps on a user's CA Secret: a replaced key.
    assert_eq!(ca_secret_problems("a", false, &rotation).0.len(), 1);
    // A key replaced out of the blue.
    let replaced = ev(2, ca_secret("k9", None, &["c1"]));
    let (problems, _, _) = ca_secret_problems("a", true, &[&created, &replaced]);
    assert!(
        problems[0].contains("without a rotation step"),
        "{problems:?}"
    );
    // A published next key lost before it signs.
    let lost = ev(3, ca_secret("k1", None, &["c1", "c2"]));
    let (problems, _, _) = ca_secret_problems("a", true, &[&created, &published, &lost]);
    assert!(problems[0].contains("vanished"), "{problems:?}");
    // A CA dropped from the bundle too early.
    let dropped = ev(4, ca_secret("k2", None, &["c2"]));
    let (problems, _, _) =
        ca_secret_problems("a", true, &[&created, &published, &switched, &dropped]);
    assert!(problems[0].contains("left the bundle"), "{problems:?}");
    // Deleted.
    let mut gone = ev(2, ca_secret("k1", None, &["c1"]));
    gone.deleted = true;
    let (problems, _, _) = ca_secret_problems("a", true, &[&created, &gone]);
    assert!(problems[0].contains("deleted"), "{problems:?}");
}

#[test]
fn the_bundle_at_signing_is_the_one_just_before() {
    let one = ev(10, ca_secret("k1", None, &["c1"]));
    let two = ev(20, ca_secret("k1", Some("k2"), &["c1", "c2"]));
    let history = [&one, &two];
    assert_eq!(bundle_before(&history, 15).map(BTreeSet::len), Some(1));
    assert_eq!(bundle_before(&history, 21).map(BTreeSet::len), Some(2));
    assert_eq!(bundle_before(&history, 5), None);
}

#[test]
fn a_ca_signs_only_from_when_its_secret_switched_to_it() {
    let with_signing = |rv, der: &[u8]| {
        let mut e = ev(rv, ca_secret("k", None, &[]));
        if let Snap::CaSecret { signing, .. } = &mut e.snap {
            *signing = Some(der.to_vec());
        }
        e
    };
    let (old, new) = (b"old CA".as_slice(), b"new CA".as_slice());
    let history = [&with_signing(10, old), &with_signing(30, new)];
    let new_fp = capstan_pki::fingerprint(new);
    assert_eq!(first_signing_rv(&history, &new_fp), Some(30));
    assert_eq!(
        first_signing_rv(&history, &capstan_pki::fingerprint(old)),
        Some(10)
    );
    assert_eq!(first_signing_rv(&history, "unknown"), None);
}

#[test]
fn the_report_ends_with_the_counts_of_invariants() {
    let verdicts = [
        verdict("a", "fine".into(), vec![]),
        verdict("b", "not fine".into(), vec!["x broke".into()]),
        verdict("c", "fine".into(), vec![]),
    ];
    let (out, failed) = render(&verdicts, "soak: footer");
    assert_eq!(failed, 1);
    assert!(out.contains("soak: FAIL b: not fine (1 problems)\nsoak:        BUG? x broke\n"));
    assert!(
        out.ends_with("soak: footer\nsoak: 2 passed, 1 failed\n"),
        "{out}"
    );
}

#[test]
fn an_exit_reason_names_the_error_and_its_cause() {
    let logs: Vec<String> = [
        "2026-12-01T07:30:13Z  INFO serving",
        "Error: starting leader election",
        "",
        "Caused by:",
        "    0: Kube error: ApiError: Conflict",
        "    1: more",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(
        exit_reason(&logs),
        "Error: starting leader election / 0: Kube error: ApiError: Conflict"
    );
    assert!(fatal(&logs));
    assert!(!fatal(&logs[..1]));
}

/// A kube client for the kubeconfig at `path`.
async fn client_from(path: &Path) -> kube::Client {
    capstan_tests::controlplane::client_for(path).await.unwrap()
}

/// How long a watch of ConfigMaps in `namespace` stays open, at most `limit`.
async fn watch_lifetime(client: kube::Client, namespace: &str, limit: Duration) -> Duration {
    let api = Api::<ConfigMap>::namespaced(client, namespace);
    let started = Instant::now();
    let stream = api
        .watch(&WatchParams::default().timeout(30), "0")
        .await
        .unwrap();
    futures::pin_mut!(stream);
    let _ = tokio::time::timeout(limit, async { while stream.next().await.is_some() {} }).await;
    started.elapsed()
}

/// The fault proxy's watch cuts, on the shared control plane: a
/// controller's watch through the proxy ends on time, the exempt admin's
/// (its token, through the same proxy) does not, and a change at run time
/// applies to the next watch.
#[tokio::test]
async fn time_cut_watches_end_for_everyone_but_exempt_users() {
    let cp = ControlPlane::shared().await.unwrap();
    let ns = cp.namespace("watch-cuts").await.unwrap();
    let proxy = FaultProxy::start(
        cp,
        FaultsHandle::new(Faults {
            watch_cut_after_ms: Some(400),
            exempt_users: vec!["admin".into()],
            ..Faults::default()
        }),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let as_user = |user: &str| {
        cp.user_kubeconfig_at(proxy.url(), dir.path(), user, user, MASTERS)
            .unwrap()
    };
    let controller = client_from(&as_user("controller")).await;
    let cut = watch_lifetime(controller, &ns, Duration::from_secs(20)).await;
    assert!(
        cut >= Duration::from_millis(400) && cut < Duration::from_secs(10),
        "a controller's watch should end about 400 ms after it opens, took {cut:?}"
    );
    let admin_config = cp
        .token_kubeconfig_at(proxy.url(), dir.path(), "admin", cp.admin_token())
        .unwrap();
    let admin = watch_lifetime(
        client_from(&admin_config).await,
        &ns,
        Duration::from_secs(2),
    )
    .await;
    assert!(
        admin >= Duration::from_secs(2),
        "the exempt admin's watch ended after {admin:?}"
    );
    // Changed at run time: the controller's watches are no longer cut.
    proxy.faults().update(|f| f.watch_cut_after_ms = None);
    let controller = client_from(&as_user("controller-2")).await;
    let uncut = watch_lifetime(controller, &ns, Duration::from_secs(2)).await;
    assert!(uncut >= Duration::from_secs(2), "ended after {uncut:?}");
    // Each watch reached the proxy as the user it acted as.
    let watched: Vec<String> = proxy
        .seen()
        .into_iter()
        .filter(|r| r.uri.contains("watch=") && r.uri.contains(&ns))
        .map(|r| r.user)
        .collect();
    assert_eq!(
        watched,
        ["controller", "admin", "controller-2"],
        "{:?}",
        proxy.seen()
    );
    cp.delete_namespace(&ns).await.unwrap();
}
