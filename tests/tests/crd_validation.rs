//! End to end: the issuer CRDs' validation on the real kube-apiserver.
//!
//! Every spec the issuer would mark `InvalidSpec` is refused by `kubectl
//! apply`, in the issuer's own words; every good spec is accepted. Then
//! the same bad specs are let past an older CRD (the same CRD without its
//! CEL rules, as a cluster upgraded in the wrong order would have) and
//! the real issuer reports each `InvalidSpec` with the message kubectl
//! printed. The same for `CABundle` and the real rotator
//! (`InvalidSource`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use capstan_tests::cluster::{self, MASTERS, user_kubeconfig};
use capstan_tests::controlplane::ControlPlane;
use capstan_tests::harness::{Kubectl, await_condition, condition, workspace_root};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

/// A spec the issuer refuses: a name, the spec's YAML (indented under
/// `spec:`), and words kubectl's refusal must hold, so each case proves it
/// hit the rule it is about.
struct Bad {
    name: &'static str,
    spec: &'static str,
    expect: &'static [&'static str],
}

const BAD: &[Bad] = &[
    Bad {
        name: "no-source",
        spec: "  maxDuration: 24h\n",
        expect: &[
            "spec: Invalid value",
            "set one of spec.ca or spec.selfManaged",
        ],
    },
    Bad {
        name: "both-sources",
        spec: "  ca:\n    secretName: a\n  selfManaged:\n    secretName: b\n",
        expect: &["set only one of spec.ca and spec.selfManaged"],
    },
    Bad {
        name: "empty-secret-name",
        spec: "  ca:\n    secretName: \"\"\n",
        expect: &["spec.ca.secretName", "must not be empty"],
    },
    Bad {
        name: "empty-managed-secret-name",
        spec: "  selfManaged:\n    secretName: \"\"\n",
        expect: &["spec.selfManaged.secretName", "must not be empty"],
    },
    Bad {
        name: "words-for-a-duration",
        spec: "  maxDuration: ninety days\n  ca:\n    secretName: a\n",
        expect: &[
            "spec.maxDuration",
            "\"ninety days\" is not a positive duration",
        ],
    },
    Bad {
        name: "zero-duration",
        spec: "  defaultDuration: 0s\n  ca:\n    secretName: a\n",
        expect: &["spec.defaultDuration", "\"0s\" is not a positive duration"],
    },
    Bad {
        name: "negative-duration",
        spec: "  selfManaged:\n    secretName: a\n    propagationDelay: -5m\n",
        expect: &[
            "spec.selfManaged.propagationDelay",
            "\"-5m\" is not a positive duration",
        ],
    },
    Bad {
        name: "days-are-not-go",
        spec: "  selfManaged:\n    secretName: a\n    overlap: 1d\n",
        expect: &[
            "spec.selfManaged.overlap",
            "\"1d\" is not a positive duration",
        ],
    },
    Bad {
        name: "default-over-max",
        spec: "  maxDuration: 24h\n  defaultDuration: 48h\n  ca:\n    secretName: a\n",
        expect: &["spec.defaultDuration must not exceed spec.maxDuration"],
    },
    Bad {
        name: "default-over-default-max",
        spec: "  defaultDuration: 2161h\n  ca:\n    secretName: a\n",
        expect: &["spec.defaultDuration must not exceed spec.maxDuration"],
    },
    Bad {
        name: "century-ca",
        spec: "  selfManaged:\n    secretName: a\n    duration: 900000h\n",
        expect: &["spec.selfManaged.duration", "must be at most 876600h"],
    },
    Bad {
        name: "fraction-over-one",
        spec: "  selfManaged:\n    secretName: a\n    rotationFraction: 1.5\n",
        expect: &[
            "spec.selfManaged.rotationFraction",
            "must be between 0 and 1",
        ],
    },
    Bad {
        name: "fraction-zero-beside-rotate-before",
        spec: "  selfManaged:\n    secretName: a\n    rotateBefore: 10m\n    rotationFraction: 0\n",
        expect: &[
            "spec.selfManaged.rotationFraction",
            "must be between 0 and 1",
        ],
    },
    Bad {
        name: "window-as-long-as-the-ca",
        spec: "  selfManaged:\n    secretName: a\n    duration: 10m\n    rotateBefore: 10m\n    propagationDelay: 1m\n",
        expect: &["spec.selfManaged.rotateBefore must be shorter than"],
    },
    Bad {
        name: "delay-over-window",
        spec: "  selfManaged:\n    secretName: a\n    duration: 10m\n    rotateBefore: 4m\n    propagationDelay: 5m\n",
        expect: &["spec.selfManaged.propagationDelay (default 5m) must be shorter"],
    },
    Bad {
        name: "default-delay-over-fraction-window",
        spec: "  selfManaged:\n    secretName: a\n    duration: 10m\n",
        expect: &["spec.selfManaged.propagationDelay (default 5m) must be shorter"],
    },
    Bad {
        name: "unknown-usage",
        spec: "  allowedUsages: [server auth, teleport]\n  ca:\n    secretName: a\n",
        expect: &["spec.allowedUsages", "\"teleport\" is not a usage"],
    },
    Bad {
        name: "prefix-too-long",
        spec: "  nameConstraints:\n    permittedIpRanges: [10.0.0.0/8, 10.0.0.0/33]\n  ca:\n    secretName: a\n",
        expect: &[
            "spec.nameConstraints.permittedIpRanges",
            "\"10.0.0.0/33\" is not an IP range",
        ],
    },
    Bad {
        name: "mapped-ipv6",
        spec: "  nameConstraints:\n    permittedIpRanges: [\"::ffff:10.0.0.0/104\"]\n  ca:\n    secretName: a\n",
        expect: &["\"::ffff:10.0.0.0/104\" is not an IP range"],
    },
    Bad {
        name: "wildcard-domain",
        spec: "  nameConstraints:\n    permittedDnsDomains: [svc.cluster.local, \"*.example.com\"]\n  ca:\n    secretName: a\n",
        expect: &[
            "spec.nameConstraints.permittedDnsDomains",
            "\"*.example.com\" is not a DNS domain",
        ],
    },
];

/// Specs the issuer accepts, every field and both rotation windows.
const GOOD: &[(&str, &str)] = &[
    ("user-ca", "  ca:\n    secretName: user-ca\n"),
    ("defaults", "  selfManaged:\n    secretName: defaults\n"),
    (
        "everything",
        "  maxDuration: 10m
  defaultDuration: 5m
  allowedUsages: [server auth, client auth, digital signature]
  nameConstraints:
    permittedDnsDomains: [svc.cluster.local, .example.com, Example.COM]
    permittedIpRanges: [10.0.0.0/8, 10.1.2.3/16, \"fd00::/8\", \"::1/128\"]
  selfManaged:
    secretName: everything
    commonName: Everything CA
    keyAlgorithm: ECDSAP384
    duration: 1h
    rotateBefore: 20m
    rotationFraction: 0.5
    propagationDelay: 1m30s
    overlap: 1.5h
",
    ),
    (
        "fraction-window",
        "  maxDuration: 300ms
  selfManaged:
    secretName: fraction-window
    duration: 1h
    rotationFraction: 0.25
    propagationDelay: 14m59s
",
    ),
];

fn issuer_yaml(kind: &str, name: &str, spec: &str) -> String {
    let namespace = if kind == "CAIssuer" {
        "  namespace: default\n"
    } else {
        ""
    };
    format!(
        "apiVersion: capstan.dev/v1alpha1\nkind: {kind}\nmetadata:\n  name: {name}\n{namespace}spec:\n{spec}"
    )
}

/// The CRDs `files` of `crds/` without their CEL rules: what a cluster
/// that still runs an older CRD validates with.
fn crds_without_cel(files: &[&str]) -> String {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.remove("x-kubernetes-validations");
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(workspace_root().join("crds").join(file)).unwrap();
            let mut crd: Value = serde_norway::from_str(&text).unwrap();
            strip(&mut crd);
            format!("---\n{}", serde_norway::to_string(&crd).unwrap())
        })
        .collect()
}

/// The message of an issuer's Ready condition once it is `InvalidSpec`.
async fn invalid_spec_message(kubectl: &Kubectl, args: &[&str]) -> Result<String, String> {
    let found = await_condition(&format!("{args:?} InvalidSpec"), WAIT, POLL, || async {
        let obj = kubectl.get_json(args).await?;
        let ready = condition(&obj, "Ready")?;
        (ready["reason"] == "InvalidSpec").then(|| ready["message"].as_str().unwrap().to_owned())
    })
    .await;
    found.map_err(|e| e.to_string())
}

/// The issuer's words without the field path it starts with, if any:
/// kubectl puts `Invalid value: "<type>"` between the two.
fn split_path(message: &str) -> (Option<&str>, &str) {
    match message.split_once(": ") {
        Some((path, words)) if path.starts_with("spec.") && !path.contains(' ') => {
            (Some(path), words)
        }
        _ => (None, message),
    }
}

#[tokio::test]
async fn bad_specs_are_refused_at_apply_in_the_issuers_words() {
    let cp = ControlPlane::builder()
        .workloads(false)
        .start()
        .await
        .unwrap();
    let kubectl = Kubectl::for_server(&cp).unwrap();
    kubectl.apply_crds(true).await.unwrap();

    // The CRDs as shipped: every bad spec refused, saying why.
    let mut refusals = BTreeMap::new();
    for case in BAD {
        let yaml = issuer_yaml("ClusterCAIssuer", case.name, case.spec);
        let out = kubectl.stdin("apply", &yaml).await;
        assert!(
            !out.success(),
            "{} was accepted: {out:?}\n{yaml}",
            case.name
        );
        for words in case.expect {
            assert!(
                out.stderr.contains(words),
                "{}: {words:?} missing from {}",
                case.name,
                out.stderr
            );
        }
        refusals.insert(case.name, out.stderr);
    }
    // The namespaced kind has the same rules.
    let out = kubectl
        .stdin(
            "apply",
            &issuer_yaml(
                "CAIssuer",
                "team",
                "  maxDuration: 1d\n  ca:\n    secretName: a\n",
            ),
        )
        .await;
    assert!(
        !out.success() && out.stderr.contains("\"1d\" is not a positive duration"),
        "{out:?}"
    );
    // An enum is the schema's own rule.
    let out = kubectl
        .stdin(
            "apply",
            &issuer_yaml(
                "ClusterCAIssuer",
                "weak-key",
                "  selfManaged:\n    secretName: a\n    keyAlgorithm: RSA1024\n",
            ),
        )
        .await;
    assert!(
        !out.success() && out.stderr.contains("Unsupported value: \"RSA1024\""),
        "{out:?}"
    );
    for (name, spec) in GOOD {
        for kind in ["ClusterCAIssuer", "CAIssuer"] {
            let yaml = issuer_yaml(kind, name, spec);
            let out = kubectl.stdin("apply", &yaml).await;
            assert!(out.success(), "{kind} {name} was refused: {out:?}\n{yaml}");
        }
    }
    kubectl
        .run_ok(&["delete", "clustercaissuers,caissuers", "--all", "-A"])
        .await
        .unwrap();

    // An older CRD lets them in; the issuer refuses each in the same words.
    let out = kubectl
        .stdin(
            "replace",
            &crds_without_cel(&[
                "capstan.dev_caissuers.yaml",
                "capstan.dev_clustercaissuers.yaml",
            ]),
        )
        .await;
    assert!(out.success(), "{out:?}");
    let first = issuer_yaml("ClusterCAIssuer", BAD[0].name, BAD[0].spec);
    await_condition("the CRD without CEL to be served", WAIT, POLL, || async {
        kubectl.stdin("apply", &first).await.success().then_some(())
    })
    .await
    .unwrap();
    for case in BAD {
        kubectl
            .apply(&issuer_yaml("ClusterCAIssuer", case.name, case.spec))
            .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = user_kubeconfig(
        &cp,
        dir.path(),
        "issuer",
        "system:serviceaccount:default:capstan-issuer",
        MASTERS,
    )
    .unwrap();
    let issuer = cluster::start_issuer(&config, "default", "issuer-0").unwrap();
    for case in BAD {
        let message = invalid_spec_message(&kubectl, &["clustercaissuer", case.name])
            .await
            .unwrap_or_else(|e| panic!("{e}\nissuer logs:\n{}", issuer.logs().join("\n")));
        let refusal = &refusals[case.name];
        let (path, words) = split_path(&message);
        assert!(
            refusal.contains(words),
            "{}: the issuer says {message:?}, kubectl said {refusal}",
            case.name
        );
        if let Some(path) = path {
            assert!(
                refusal.contains(&format!("{path}: Invalid value")),
                "{}: kubectl named another field than {path}: {refusal}",
                case.name
            );
        }
    }
}

/// `CABundle`s the rotator refuses, as [`BAD`]: name, spec, expected words.
const BAD_BUNDLES: &[(&str, &str, &[&str])] = &[
    (
        "no-sources",
        "  sources: []\n  target:\n    configMap: trust\n",
        &["spec.sources", "must list at least one source"],
    ),
    (
        "two-kinds",
        "  sources:\n  - secret: {namespace: default, name: ca}\n    inline: x\n  target:\n    configMap: trust\n",
        &[
            "spec.sources[0]",
            "set exactly one of secret, configMap and inline",
        ],
    ),
    (
        "no-kind",
        "  sources:\n  - {}\n  target:\n    configMap: trust\n",
        &[
            "spec.sources[0]",
            "set exactly one of secret, configMap and inline",
        ],
    ),
    (
        "bad-target-name",
        "  sources:\n  - secret: {namespace: default, name: ca}\n  target:\n    configMap: Trust_Bundle\n",
        &[
            "spec.target.configMap",
            "\"Trust_Bundle\" is not a valid ConfigMap name",
        ],
    ),
    (
        "bad-target-key",
        "  sources:\n  - secret: {namespace: default, name: ca}\n  target:\n    configMap: trust\n    key: a/b\n",
        &["spec.target.key", "\"a/b\" is not a valid ConfigMap key"],
    ),
    (
        "a-bundle-name-far-too-long-to-be-the-value-of-the-label-it-sets-x",
        "  sources:\n  - secret: {namespace: default, name: ca}\n  target:\n    configMap: trust\n",
        &["is longer than 63 characters and cannot label"],
    ),
];

fn bundle_yaml(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: capstan.dev/v1alpha1\nkind: CABundle\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

#[tokio::test]
async fn bad_cabundles_are_refused_at_apply_in_the_rotators_words() {
    let cp = ControlPlane::builder()
        .workloads(false)
        .start()
        .await
        .unwrap();
    let kubectl = Kubectl::for_server(&cp).unwrap();
    kubectl.apply_crds(false).await.unwrap();
    let mut refusals = BTreeMap::new();
    for (name, spec, expect) in BAD_BUNDLES {
        let out = kubectl.stdin("apply", &bundle_yaml(name, spec)).await;
        assert!(!out.success(), "{name} was accepted: {out:?}");
        for words in *expect {
            assert!(
                out.stderr.contains(words),
                "{name}: {words:?} missing from {}",
                out.stderr
            );
        }
        refusals.insert(*name, out.stderr);
    }
    let good = bundle_yaml(
        "good",
        "  sources:\n  - secret: {namespace: default, name: ca, key: tls.crt}\n  - configMap: {namespace: default, name: other}\n  - inline: x\n  target:\n    configMap: \" trust.bundle-1 \"\n    key: ca_bundle.crt\n",
    );
    let out = kubectl.stdin("apply", &good).await;
    assert!(out.success(), "{out:?}\n{good}");
    kubectl
        .run_ok(&["delete", "cabundle", "good"])
        .await
        .unwrap();

    // An older CRD lets them in; the rotator refuses each in the same words.
    let out = kubectl
        .stdin(
            "replace",
            &crds_without_cel(&["capstan.dev_cabundles.yaml"]),
        )
        .await;
    assert!(out.success(), "{out:?}");
    let (first, spec, _) = BAD_BUNDLES[0];
    let last = std::sync::Mutex::new(String::new());
    let served = await_condition("the CRD without CEL to be served", WAIT, POLL, || async {
        let out = kubectl.stdin("apply", &bundle_yaml(first, spec)).await;
        let served = out.success().then_some(());
        *last.lock().unwrap() = out.stderr;
        served
    })
    .await;
    assert!(served.is_ok(), "{served:?}: {}", last.lock().unwrap());
    for (name, spec, _) in BAD_BUNDLES {
        kubectl.apply(&bundle_yaml(name, spec)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = user_kubeconfig(
        &cp,
        dir.path(),
        "rotator",
        "system:serviceaccount:default:capstan-rotator",
        MASTERS,
    )
    .unwrap();
    let rotator = cluster::start_binary(
        "capstan-rotator",
        &config,
        &["--leader-election-namespace", "default"],
        &[
            ("POD_NAMESPACE", "default"),
            ("POD_NAME", "rotator-0"),
            ("RUST_LOG", "info"),
        ],
    )
    .unwrap();
    for (name, _, _) in BAD_BUNDLES {
        let found = await_condition(&format!("{name} InvalidSource"), WAIT, POLL, || async {
            let obj = kubectl.get_json(&["cabundle", name]).await?;
            let ready = condition(&obj, "Ready")?;
            (ready["reason"] == "InvalidSource")
                .then(|| ready["message"].as_str().unwrap().to_owned())
        })
        .await;
        let message =
            found.unwrap_or_else(|e| panic!("{e}\nrotator logs:\n{}", rotator.logs().join("\n")));
        let refusal = &refusals[name];
        let (path, words) = split_path(&message);
        assert!(
            refusal.contains(words),
            "{name}: the rotator says {message:?}, kubectl said {refusal}"
        );
        if let Some(path) = path {
            assert!(
                refusal.contains(&format!("{path}: Invalid value")),
                "{name}: kubectl named another field than {path}: {refusal}"
            );
        }
    }
}
