//! The embedded test API server measured against the real kube-apiserver:
//! the same requests (kubectl commands as users type them, and raw API
//! calls as kube-rs makes them) go to both, and the answers are compared:
//! exit codes and what kubectl prints (ages and column padding masked),
//! status codes, `Status` reasons, kinds, list items, Table columns and
//! watch event order.
//!
//! The embedded server runs `capstan-demo`; the real control plane judges
//! capstan. This suite keeps the first honest: it prints every check and
//! how many agree, fails when a check differs that is not a known
//! difference, and fails when a known difference starts agreeing (so the
//! list below stays true).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::time::Duration;

use capstan_tests::controlplane::ControlPlane;
use capstan_tests::harness::{Cluster, Kubectl, await_condition, workspace_root};
use capstan_testserver::TestApiServer;
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use serde_json::{Value, json};

/// Checks where the embedded server is known to answer differently, and
/// why it is left so.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[];

const NS: &str = "agree";

/// One step: what it asks, and how the answer is reduced for comparison.
enum Step {
    /// kubectl with these arguments (`{ns}` replaced) and optional stdin.
    Kubectl(&'static str, &'static [&'static str], Option<&'static str>),
    /// kubectl, comparing only the first line of stdout (table headers).
    KubectlHeaders(&'static str, &'static [&'static str]),
    /// A raw API request: method, path, `Accept`, body.
    Http(&'static str, &'static str, &'static str, Option<Value>),
    /// A watch on the namespace's ConfigMaps while one is created,
    /// updated and deleted: the event types and names in order.
    WatchOrder(&'static str),
    /// kubectl with stdin whose `{csr}` is replaced by a fresh CSR.
    KubectlSub(&'static str, &'static [&'static str], &'static str),
    /// Waits (up to a minute) until kubectl with these arguments succeeds:
    /// a CRD's kinds being served, say. Compared: whether it did.
    Until(&'static str, &'static [&'static str]),
}

fn steps() -> Vec<Step> {
    use Step::*;
    const CM2: &str =
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c2, namespace: agree}\ndata: {a: '1'}\n";
    const CM3: &str =
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c3, namespace: agree}\ndata: {a: '1'}\n";
    const CM3_CHANGED: &str =
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c3, namespace: agree}\ndata: {a: '2'}\n";
    const CM_FINALIZED: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fin, namespace: agree, finalizers: [example.com/hold]}\n";
    const ISSUER: &str = "apiVersion: capstan.dev/v1alpha1\nkind: ClusterCAIssuer\nmetadata: {name: agree-ca}\nspec:\n  selfManaged: {secretName: agree-ca}\n";
    const BAD_ISSUER: &str = "apiVersion: capstan.dev/v1alpha1\nkind: ClusterCAIssuer\nmetadata: {name: agree-bad}\nspec:\n  selfManaged: {secretName: 7}\n  maxDuration: [1]\n";
    const CR: &str = "apiVersion: cert-manager.io/v1\nkind: CertificateRequest\nmetadata: {name: r1, namespace: agree}\nspec:\n  request: dGVzdA==\n  issuerRef: {group: capstan.dev, kind: ClusterCAIssuer, name: agree-ca}\n";
    const CSR: &str = "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata: {name: agree-csr}\nspec:\n  signerName: clustercaissuers.capstan.dev/agree-ca\n  usages: [digital signature, server auth]\n  request: {csr}\n";
    vec![
        Kubectl("create namespace", &["create", "namespace", "{ns}"], None),
        Kubectl(
            "create configmap",
            &[
                "create",
                "configmap",
                "c1",
                "--from-literal=a=1",
                "-n",
                "{ns}",
            ],
            None,
        ),
        Kubectl(
            "create secret",
            &[
                "create",
                "secret",
                "generic",
                "s1",
                "--from-literal=k=v",
                "-n",
                "{ns}",
            ],
            None,
        ),
        Kubectl(
            "create deployment",
            &["create", "deployment", "d1", "--image=nginx", "-n", "{ns}"],
            None,
        ),
        Kubectl(
            "get configmap",
            &["get", "configmap", "c1", "-n", "{ns}"],
            None,
        ),
        Kubectl("get secret", &["get", "secret", "s1", "-n", "{ns}"], None),
        Kubectl(
            "get missing",
            &["get", "configmap", "missing", "-n", "{ns}"],
            None,
        ),
        Kubectl(
            "create existing",
            &[
                "create",
                "configmap",
                "c1",
                "--from-literal=a=1",
                "-n",
                "{ns}",
            ],
            None,
        ),
        Kubectl(
            "deployment defaults",
            &[
                "get",
                "deployment",
                "d1",
                "-n",
                "{ns}",
                "-o",
                "jsonpath={.spec.replicas} {.spec.strategy.type} {.spec.template.spec.containers[0].imagePullPolicy} {.spec.revisionHistoryLimit}",
            ],
            None,
        ),
        Kubectl(
            "label",
            &["label", "configmap", "c1", "x=y", "-n", "{ns}"],
            None,
        ),
        Kubectl(
            "label selector",
            &["get", "configmaps", "-n", "{ns}", "-l", "x=y", "-o", "name"],
            None,
        ),
        Kubectl(
            "annotate",
            &["annotate", "configmap", "c1", "a=b", "-n", "{ns}"],
            None,
        ),
        Kubectl(
            "merge patch",
            &[
                "patch",
                "configmap",
                "c1",
                "-n",
                "{ns}",
                "--type=merge",
                "-p",
                r#"{"data":{"b":"2"}}"#,
            ],
            None,
        ),
        Kubectl(
            "json patch",
            &[
                "patch",
                "configmap",
                "c1",
                "-n",
                "{ns}",
                "--type=json",
                "-p",
                r#"[{"op":"add","path":"/data/c","value":"3"}]"#,
            ],
            None,
        ),
        Kubectl(
            "strategic patch",
            &[
                "patch",
                "deployment",
                "d1",
                "-n",
                "{ns}",
                "-p",
                r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:2"}]}}}}"#,
            ],
            None,
        ),
        Kubectl(
            "patched data",
            &[
                "get",
                "configmap",
                "c1",
                "-n",
                "{ns}",
                "-o",
                "jsonpath={.data}",
            ],
            None,
        ),
        Kubectl("apply create", &["apply", "-f", "-"], Some(CM2)),
        Kubectl("apply unchanged", &["apply", "-f", "-"], Some(CM2)),
        Kubectl(
            "server-side apply",
            &["apply", "--server-side", "-f", "-"],
            Some(CM3),
        ),
        Kubectl(
            "apply conflict",
            &["apply", "--server-side", "--field-manager=other", "-f", "-"],
            Some(CM3_CHANGED),
        ),
        Kubectl(
            "apply force",
            &[
                "apply",
                "--server-side",
                "--field-manager=other",
                "--force-conflicts",
                "-f",
                "-",
            ],
            Some(CM3_CHANGED),
        ),
        Kubectl(
            "apply result",
            &["get", "cm", "c3", "-n", "{ns}", "-o", "jsonpath={.data.a}"],
            None,
        ),
        Kubectl(
            "show labels",
            &["get", "cm", "c1", "-n", "{ns}", "--show-labels"],
            None,
        ),
        Kubectl(
            "finalizer create",
            &["apply", "-f", "-"],
            Some(CM_FINALIZED),
        ),
        Kubectl(
            "finalizer delete",
            &["delete", "cm", "fin", "-n", "{ns}", "--wait=false"],
            None,
        ),
        Kubectl(
            "finalizer holds",
            &[
                "get",
                "cm",
                "fin",
                "-n",
                "{ns}",
                "-o",
                "jsonpath={.metadata.finalizers}",
            ],
            None,
        ),
        Kubectl(
            "finalizer release",
            &[
                "patch",
                "cm",
                "fin",
                "-n",
                "{ns}",
                "--type=merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ],
            None,
        ),
        Until(
            "finalizer released",
            &[
                "wait",
                "--for=delete",
                "cm/fin",
                "-n",
                "{ns}",
                "--timeout=30s",
            ],
        ),
        Kubectl(
            "field selector",
            &[
                "get",
                "cm",
                "-n",
                "{ns}",
                "--field-selector",
                "metadata.name=c1",
                "-o",
                "name",
            ],
            None,
        ),
        Kubectl(
            "custom columns",
            &[
                "get",
                "cm",
                "c1",
                "-n",
                "{ns}",
                "-o",
                "custom-columns=N:.metadata.name,D:.data.a",
            ],
            None,
        ),
        Kubectl("delete", &["delete", "configmap", "c2", "-n", "{ns}"], None),
        Kubectl(
            "delete missing",
            &["delete", "configmap", "c2", "-n", "{ns}"],
            None,
        ),
        Kubectl(
            "can-i",
            &["auth", "can-i", "list", "secrets", "-n", "{ns}"],
            None,
        ),
        Kubectl(
            "get raw missing",
            &["get", "--raw", "/api/v1/namespaces/{ns}/configmaps/missing"],
            None,
        ),
        KubectlHeaders(
            "deployment wide",
            &["get", "deployment", "d1", "-n", "{ns}", "-o", "wide"],
        ),
        KubectlHeaders("events", &["get", "events", "-n", "{ns}"]),
        Kubectl("apply crds", &["apply", "-f", "{crds}"], None),
        Until("crds served", &["get", "clustercaissuers"]),
        Kubectl("no issuers", &["get", "clustercaissuers"], None),
        Kubectl("apply issuer", &["apply", "-f", "-"], Some(ISSUER)),
        KubectlHeaders("issuer columns", &["get", "clustercaissuers"]),
        Kubectl("invalid issuer", &["apply", "-f", "-"], Some(BAD_ISSUER)),
        Kubectl(
            "issuer generation",
            &[
                "get",
                "clustercaissuer",
                "agree-ca",
                "-o",
                "jsonpath={.metadata.generation}",
            ],
            None,
        ),
        Kubectl(
            "status subresource",
            &[
                "patch",
                "clustercaissuer",
                "agree-ca",
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"bundleSize":3},"spec":{"selfManaged":{"secretName":"other"}}}"#,
            ],
            None,
        ),
        Kubectl(
            "status only",
            &[
                "get",
                "clustercaissuer",
                "agree-ca",
                "-o",
                "jsonpath={.status.bundleSize} {.spec.selfManaged.secretName} {.metadata.generation}",
            ],
            None,
        ),
        Kubectl(
            "api-resources",
            &[
                "api-resources",
                "--api-group=capstan.dev",
                "--no-headers",
                "-o",
                "name",
            ],
            None,
        ),
        Kubectl(
            "explain",
            &["explain", "clustercaissuer.spec.selfManaged.secretName"],
            None,
        ),
        Kubectl(
            "apply cert-manager crds",
            &["apply", "-f", "{cm-crds}"],
            None,
        ),
        Until(
            "cert-manager crds served",
            &["get", "certificaterequests", "-n", "{ns}"],
        ),
        Kubectl("create request", &["create", "-f", "-"], Some(CR)),
        KubectlHeaders(
            "request columns",
            &["get", "certificaterequests", "-n", "{ns}"],
        ),
        KubectlSub("create csr", &["create", "-f", "-"], CSR),
        Kubectl(
            "approve csr",
            &["certificate", "approve", "agree-csr"],
            None,
        ),
        Kubectl(
            "csr condition",
            &[
                "get",
                "csr",
                "agree-csr",
                "-o",
                "jsonpath={.status.conditions[0].type} {.status.conditions[0].status}",
            ],
            None,
        ),
        Http(
            "list page",
            "/api/v1/namespaces/{ns}/configmaps?limit=1",
            "application/json",
            None,
        ),
        Http(
            "get missing",
            "/api/v1/namespaces/{ns}/configmaps/missing",
            "application/json",
            None,
        ),
        Http(
            "table",
            "/api/v1/namespaces/{ns}/configmaps/c1",
            "application/json;as=Table;v=v1;g=meta.k8s.io",
            None,
        ),
        Http(
            "metadata list",
            "/api/v1/namespaces/{ns}/secrets",
            "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io",
            None,
        ),
        Http(
            "wrong kind",
            "/api/v1/namespaces/{ns}/configmaps",
            "application/json",
            Some(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}})),
        ),
        Http(
            "no name",
            "/api/v1/namespaces/{ns}/configmaps",
            "application/json",
            Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}})),
        ),
        Http(
            "bad name",
            "/api/v1/namespaces/{ns}/configmaps",
            "application/json",
            Some(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Not_Valid"}}),
            ),
        ),
        Http(
            "unknown resource",
            "/api/v1/namespaces/{ns}/nothings",
            "application/json",
            None,
        ),
        Http(
            "unknown group",
            "/apis/nothing.example/v1/things",
            "application/json",
            None,
        ),
        WatchOrder("watch order"),
    ]
}

/// A P-256 CSR made by openssl, PEM then base64, as a
/// CertificateSigningRequest's `spec.request` (made once).
fn csr_b64() -> &'static str {
    static CSR: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CSR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        capstan_tests::cluster::openssl_ok(
            dir.path(),
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "k.pem",
                "-subj",
                "/CN=agree",
                "-out",
                "r.pem",
            ],
        );
        let pem = std::fs::read(dir.path().join("r.pem")).unwrap();
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pem)
    })
}

/// What an answer is reduced to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer(String);

fn substitute(arg: &str) -> String {
    let root = workspace_root();
    arg.replace("{ns}", NS)
        .replace("{crds}", &root.join("crds").display().to_string())
        .replace(
            "{cm-crds}",
            &capstan_tests::harness::shared_dir()
                .join("cert-manager-crds")
                .display()
                .to_string(),
        )
}

/// kubectl's output with what legitimately differs between two servers
/// masked: ages, the padding that column widths add, and the order of a
/// list of validation errors (kube-apiserver's follows Go map iteration).
fn mask(text: &str) -> String {
    let age = regex::Regex::new(r"\b\d+(ms|s|m|h|d|y)(\d+(s|m|h|d))?\b").unwrap();
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| {
            let l = age.replace_all(l, "<age>");
            l.split_whitespace().collect::<Vec<_>>().join(" ")
        })
        .collect();
    let bullets: Vec<usize> = (0..lines.len())
        .filter(|i| lines[*i].starts_with("* "))
        .collect();
    if let (Some(first), Some(last)) = (bullets.first(), bullets.last()) {
        lines[*first..=*last].sort();
    }
    lines.join("\n")
}

/// kubectl's exit code and masked output.
fn kubectl_answer(out: &capstan_tests::harness::Output) -> Answer {
    Answer(format!(
        "exit {}\n{}\n{}",
        out.code,
        mask(&out.stdout),
        mask(&out.stderr)
    ))
}

async fn run(step: &Step, kubectl: &Kubectl, client: &kube::Client) -> Answer {
    let substituted =
        |args: &[&str]| -> Vec<String> { args.iter().map(|a| substitute(a)).collect() };
    match step {
        Step::Kubectl(_, args, stdin) => {
            let args = substituted(args);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            kubectl_answer(&kubectl.run_with_stdin(&args, *stdin).await.unwrap())
        }
        Step::KubectlSub(_, args, stdin) => {
            let stdin = stdin.replace("{csr}", csr_b64());
            kubectl_answer(&kubectl.run_with_stdin(args, Some(&stdin)).await.unwrap())
        }
        Step::KubectlHeaders(_, args) => {
            let args = substituted(args);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = kubectl.run(&args).await.unwrap();
            let first = out.stdout.lines().next().unwrap_or_default();
            Answer(format!("exit {}\n{}", out.code, mask(first)))
        }
        Step::Until(_, args) => {
            let args = substituted(args);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let served = await_condition(
                "kubectl to succeed",
                Duration::from_secs(60),
                Duration::from_millis(200),
                || async { kubectl.run(&args).await.ok()?.success().then_some(()) },
            )
            .await;
            Answer(format!("served {}", served.is_ok()))
        }
        Step::Http(_, path, accept, body) => {
            let path = substitute(path);
            let builder = http::Request::builder()
                .uri(path.as_str())
                .header(http::header::ACCEPT, *accept);
            let req = match body {
                Some(b) => builder
                    .method("POST")
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(kube::client::Body::from(serde_json::to_vec(b).unwrap())),
                None => builder.method("GET").body(kube::client::Body::empty()),
            }
            .unwrap();
            let resp = client.send(req).await.unwrap();
            let code = resp.status().as_u16();
            let bytes = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Answer(summarize(
                code,
                &serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            ))
        }
        Step::WatchOrder(_) => watch_order(client).await,
    }
}

/// Code, kind, Status reason, list item names and whether a continue token
/// came, Table column names.
fn summarize(code: u16, body: &Value) -> String {
    let mut s = format!("code {code} kind {}", body["kind"].as_str().unwrap_or("-"));
    if let Some(reason) = body["reason"].as_str() {
        write!(s, " reason {reason}").unwrap();
    }
    if let Some(items) = body["items"].as_array() {
        let names: Vec<&str> = items
            .iter()
            .filter_map(|i| i["metadata"]["name"].as_str())
            .collect();
        write!(
            s,
            " items {names:?} continue {}",
            body["metadata"]["continue"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
        )
        .unwrap();
    }
    if let Some(cols) = body["columnDefinitions"].as_array() {
        let names: Vec<&str> = cols.iter().filter_map(|c| c["name"].as_str()).collect();
        write!(
            s,
            " columns {names:?} rows {}",
            body["rows"].as_array().map_or(0, Vec::len)
        )
        .unwrap();
    }
    s
}

async fn watch_order(client: &kube::Client) -> Answer {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let list = api.list(&Default::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let stream = api
        .watch(&WatchParams::default().timeout(20), &rv)
        .await
        .unwrap();
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "w1"}, "data": {"a": "1"}})).unwrap();
    api.create(&PostParams::default(), &cm).await.unwrap();
    api.patch(
        "w1",
        &Default::default(),
        &kube::api::Patch::Merge(json!({"data": {"a": "2"}})),
    )
    .await
    .unwrap();
    api.delete("w1", &Default::default()).await.unwrap();
    let events: Vec<String> = stream
        .try_filter_map(|e| async move {
            Ok(match e {
                WatchEvent::Added(o) => Some(format!("ADDED {}", o.metadata.name.unwrap())),
                WatchEvent::Modified(o) => Some(format!("MODIFIED {}", o.metadata.name.unwrap())),
                WatchEvent::Deleted(o) => Some(format!("DELETED {}", o.metadata.name.unwrap())),
                _ => None,
            })
        })
        .take(3)
        .try_collect()
        .await
        .unwrap();
    Answer(events.join(", "))
}

fn name(step: &Step) -> &'static str {
    match step {
        Step::Kubectl(n, ..)
        | Step::KubectlSub(n, ..)
        | Step::KubectlHeaders(n, _)
        | Step::Http(n, ..)
        | Step::WatchOrder(n)
        | Step::Until(n, _) => n,
    }
}

async fn answers(server: &impl Cluster) -> Vec<Answer> {
    let kubectl = Kubectl::for_server(server).unwrap();
    let client = server.client().await.unwrap();
    let mut out = Vec::new();
    for step in steps() {
        out.push(run(&step, &kubectl, &client).await);
    }
    out
}

#[tokio::test]
async fn the_embedded_server_answers_as_kube_apiserver_does() {
    let real = ControlPlane::start().await.unwrap();
    let embedded = TestApiServer::start().await.unwrap();
    let (real_answers, embedded_answers) = tokio::join!(answers(&real), answers(&embedded));

    let mut report = String::new();
    let mut agree = 0;
    let mut unexpected = Vec::new();
    for (step, (r, e)) in steps()
        .iter()
        .zip(real_answers.iter().zip(&embedded_answers))
    {
        let check = name(step);
        let known = KNOWN_DIFFERENCES.iter().find(|(n, _)| *n == check);
        if r == e {
            agree += 1;
            writeln!(report, "agree   {check}: {:?}", r.0).unwrap();
            if known.is_some() {
                unexpected.push(format!("{check}: listed as a known difference but agrees"));
            }
        } else {
            writeln!(
                report,
                "DIFFER  {check}{}\n  kube-apiserver: {:?}\n  embedded:       {:?}",
                known
                    .map(|(_, why)| format!(" (known: {why})"))
                    .unwrap_or_default(),
                r.0,
                e.0
            )
            .unwrap();
            if known.is_none() {
                unexpected.push(format!("{check} differs"));
            }
        }
    }
    let total = steps().len();
    println!("{report}agreement: {agree} of {total} checks agree");
    assert!(unexpected.is_empty(), "{report}\n{unexpected:#?}");
}

#[test]
fn masking_hides_ages_and_padding_only() {
    assert_eq!(mask("c1   1      5s"), "c1 1 <age>");
    assert_eq!(mask("d1   0/1    2m30s"), "d1 0/1 <age>");
    assert_eq!(mask("x 15 nginx"), "x 15 nginx");
    assert_eq!(mask("invalid:\n* b: x\n* a: y"), "invalid:\n* a: y\n* b: x");
}
