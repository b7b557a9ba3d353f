//! The story the demo tells, step by step, against the embedded API server:
//! an issuer, a certificate for a metrics endpoint, a CA bundle for its
//! scraper, a CA rotation, and the rollouts and events that follow.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use capstan_testserver::TestApiServer;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::progress::{fact, heading, wait};

/// How long any one step may take before the demo gives up.
const STEP: Duration = Duration::from_secs(120);
/// The namespace of the workloads.
const NS: &str = "monitoring";
/// The namespace capstan runs in (leases, the ClusterCAIssuer's Secret).
const CAPSTAN_NS: &str = "capstan";
/// Field manager of the Secrets the demo writes, as cert-manager names its own.
const CERT_MANAGER: &str = "cert-manager-certificates-issuing";

/// The CRDs the demo installs: cert-manager's own, then capstan's.
const CRDS: [&str; 5] = [
    include_str!("../../tests/fixtures/cert-manager-crds/cert-manager.io_certificaterequests.yaml"),
    include_str!("../../tests/fixtures/cert-manager-crds/cert-manager.io_certificates.yaml"),
    include_str!("../../crds/capstan.dev_caissuers.yaml"),
    include_str!("../../crds/capstan.dev_clustercaissuers.yaml"),
    include_str!("../../crds/capstan.dev_cabundles.yaml"),
];

/// What the user chose on the command line.
#[derive(Debug)]
pub struct Options {
    /// Where the kubeconfig and the components' log go.
    pub dir: PathBuf,
    /// Exit after the story instead of running until Ctrl-C.
    pub exit: bool,
}

fn resource(group: &str, kind: &str, plural: &str) -> ApiResource {
    let version = if group == "cert-manager.io" {
        "v1"
    } else {
        "v1alpha1"
    };
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn object(value: Value) -> anyhow::Result<DynamicObject> {
    Ok(serde_json::from_value(value)?)
}

/// A free loopback port for a component's server.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The running components' addresses, for the user to curl.
struct Ports {
    issuer_metrics: u16,
    rotator_metrics: u16,
}

/// Runs the issuer and rotator in this process, with their real code, until
/// `shutdown`.
fn start_components(
    kubeconfig: &Path,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Ports, Vec<tokio::task::JoinHandle<anyhow::Result<()>>>)> {
    let kubeconfig = kubeconfig
        .to_str()
        .context("kubeconfig path is not UTF-8")?;
    let ports = Ports {
        issuer_metrics: free_port()?,
        rotator_metrics: free_port()?,
    };
    let common = |metrics: u16| -> anyhow::Result<Vec<String>> {
        Ok(vec![
            "--kubeconfig".into(),
            kubeconfig.into(),
            "--leader-election-namespace".into(),
            CAPSTAN_NS.into(),
            format!("--metrics-listen-address=127.0.0.1:{metrics}"),
            format!("--health-listen-address=127.0.0.1:{}", free_port()?),
        ])
    };
    let mut issuer = vec!["capstan-issuer".to_owned()];
    issuer.extend(common(ports.issuer_metrics)?);
    issuer.extend(["--cluster-resource-namespace".into(), CAPSTAN_NS.into()]);
    let mut rotator = vec!["capstan-rotator".to_owned()];
    rotator.extend(common(ports.rotator_metrics)?);
    rotator.extend([
        "--cluster-resource-namespace".into(),
        CAPSTAN_NS.into(),
        "--restart-debounce=2s".into(),
        "--rollout-timeout=60s".into(),
    ]);
    let issuer = <capstan_issuer::Args as clap::Parser>::try_parse_from(issuer)?;
    let rotator = <capstan_rotator::Args as clap::Parser>::try_parse_from(rotator)?;
    let handles = vec![
        tokio::spawn(issuer.serve_until(shutdown.clone())),
        tokio::spawn(rotator.serve_until(shutdown.clone())),
    ];
    Ok((ports, handles))
}

async fn install_crds(client: &kube::Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for yaml in CRDS {
        let crd: CustomResourceDefinition = serde_norway::from_str(yaml)?;
        api.create(&PostParams::default(), &crd).await?;
    }
    Ok(())
}

async fn namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": name}}))?,
    )
    .await?;
    Ok(())
}

fn ready(obj: &DynamicObject) -> bool {
    obj.data["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn decode(value: &Value) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(value.as_str()?)
        .ok()
}

/// Certificates in a PEM bundle, summarized.
fn summaries(pem: &[u8]) -> Vec<capstan_pki::Summary> {
    pem::parse_many(pem)
        .unwrap_or_default()
        .iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .filter_map(|p| capstan_pki::summarize(p.contents()).ok())
        .collect()
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

fn short(fingerprint: &str) -> &str {
    fingerprint.get(..16).unwrap_or(fingerprint)
}

/// Does what cert-manager does for a `Certificate`: a key and CSR, a
/// CertificateRequest naming our issuer, the approver's `Approved`
/// condition, then the `kubernetes.io/tls` Secret from the issued chain.
async fn issue(client: &kube::Client, name: &str, secret: &str) -> anyhow::Result<()> {
    let key = rcgen::KeyPair::generate()?;
    let dns = format!("metrics-app.{NS}.svc");
    let mut params = rcgen::CertificateParams::new(vec![dns.clone()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key)?.pem()?;
    let api = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        NS,
        &resource(
            "cert-manager.io",
            "CertificateRequest",
            "certificaterequests",
        ),
    );
    let request = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(csr)
    };
    api.create(
        &PostParams::default(),
        &object(json!({
            "apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
            "metadata": {"name": name, "namespace": NS,
                "annotations": {"cert-manager.io/certificate-name": "metrics-app"}},
            "spec": {
                "request": request, "duration": "10m",
                "usages": ["digital signature", "server auth"],
                "issuerRef": {"group": "capstan.dev", "kind": "ClusterCAIssuer", "name": "monitoring-ca"}
            }
        }))?,
    )
    .await?;
    let approved = json!({"status": {"conditions": [{
        "type": "Approved", "status": "True", "reason": "cert-manager.io",
        "message": "Certificate request has been approved by cert-manager.io",
        "lastTransitionTime": Timestamp::now().to_string()
    }]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&approved))
        .await?;
    let issued = wait(
        &format!("CertificateRequest {NS}/{name} to be issued"),
        STEP,
        || async { api.get(name).await.ok().filter(ready) },
    )
    .await?;
    let chain = decode(&issued.data["status"]["certificate"]).context("no certificate")?;
    let ca = decode(&issued.data["status"]["ca"]).context("no ca")?;
    let data = BTreeMap::from([
        ("tls.crt".to_owned(), ByteString(chain.clone())),
        (
            "tls.key".to_owned(),
            ByteString(key.serialize_pem().into_bytes()),
        ),
        ("ca.crt".to_owned(), ByteString(ca.clone())),
    ]);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let tls = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(secret.to_owned()),
            namespace: Some(NS.to_owned()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Secret::default()
    };
    secrets
        .patch(
            secret,
            &PatchParams::apply(CERT_MANAGER).force(),
            &Patch::Apply(&tls),
        )
        .await?;
    if let Some(leaf) = summaries(&chain).first() {
        fact(
            "subject",
            if leaf.subject.is_empty() {
                "(empty: the names are in the SANs)"
            } else {
                &leaf.subject
            },
        );
        fact("DNS names", leaf.dns_names.join(", "));
        fact("issuer", &leaf.issuer);
        fact("serial", &leaf.serial);
        fact(
            "valid",
            format!(
                "{} .. {}",
                rfc3339(leaf.not_before),
                rfc3339(leaf.not_after)
            ),
        );
    }
    if let Some(root) = summaries(&ca).first() {
        fact("signed by CA", short(&root.fingerprint));
    }
    fact(
        "written to",
        format!("Secret {NS}/{secret} (tls.crt, tls.key, ca.crt)"),
    );
    Ok(())
}

fn deployment(name: &str, image: &str, volume: Value) -> anyhow::Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS,
            "annotations": {"capstan.dev/restart-on-change": "true"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [{"name": name, "image": image,
                        "volumeMounts": [{"name": "tls", "mountPath": "/etc/tls", "readOnly": true}]}],
                    "volumes": [volume]
                }
            }
        }
    }))?)
}

/// The CAs in the scraper's bundle ConfigMap, once it has any.
async fn bundle(configmaps: &Api<ConfigMap>) -> Option<Vec<capstan_pki::Summary>> {
    let cm = configmaps.get("prometheus-ca").await.ok()?;
    let pem = cm.data?.get("ca-bundle.crt")?.clone();
    let cas = summaries(pem.as_bytes());
    (!cas.is_empty()).then_some(cas)
}

/// The issuer's current signing CA fingerprint.
async fn signing_ca(issuers: &Api<DynamicObject>) -> Option<String> {
    let issuer = issuers.get("monitoring-ca").await.ok()?;
    ready(&issuer).then_some(())?;
    issuer.data["status"]["ca"]["fingerprint"]
        .as_str()
        .map(str::to_owned)
}

/// Whether an event with `reason` exists on Deployment `name`.
async fn has_event(events: &Api<Event>, name: &str, reason: &str) -> bool {
    events.list(&Default::default()).await.is_ok_and(|list| {
        list.items.iter().any(|e| {
            e.reason.as_deref() == Some(reason)
                && e.involved_object.name.as_deref() == Some(name)
                && e.involved_object.kind.as_deref() == Some("Deployment")
        })
    })
}

/// Tells the whole story; returns once it is told (and, without
/// `--exit`, once the user presses Ctrl-C).
///
/// # Errors
/// When a step fails or times out.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    heading("capstan demo: an in-cluster CA on an embedded Kubernetes API server");
    let kubeconfig = options.dir.join("kubeconfig");
    let server = TestApiServer::builder()
        .rollout_delay(Duration::from_secs(2))
        .kubeconfig_path(&kubeconfig)
        .start()
        .await?;
    fact("API server", server.url());
    fact("kubeconfig", kubeconfig.display());
    fact("components' log", options.dir.join("capstan.log").display());
    println!(
        "   try: kubectl --kubeconfig {} get clustercaissuers,certificaterequests,events -A",
        kubeconfig.display()
    );
    let client = server.client().await?;
    install_crds(&client).await?;
    namespace(&client, CAPSTAN_NS).await?;
    namespace(&client, NS).await?;

    heading("1. Start capstan-issuer and capstan-rotator");
    let (ports, components) = start_components(&kubeconfig, &shutdown)?;
    let told = tokio::select! {
        told = tell(&client, &ports) => told.map(|()| true),
        _ = tokio::signal::ctrl_c() => Ok(false),
    };
    match told {
        Ok(true) if options.exit => println!("\nThe story is told; stopping (--exit)."),
        Ok(true) => {
            println!(
                "\ncapstan keeps running. Poke around with\n   kubectl --kubeconfig {} get events -A\nPress Ctrl-C to stop.",
                kubeconfig.display()
            );
            tokio::signal::ctrl_c().await?;
            println!("\nStopping...");
        }
        Ok(false) => println!("\nInterrupted; stopping..."),
        Err(ref e) => eprintln!(
            "\nThe demo failed: {e:#}\nSee {} for the components' log.",
            options.dir.join("capstan.log").display()
        ),
    }
    shutdown.cancel();
    for component in components {
        match tokio::time::timeout(Duration::from_secs(15), component).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("a component stopped with an error: {e:#}"),
            Ok(Err(e)) => eprintln!("a component failed: {e}"),
            Err(_) => eprintln!("a component did not stop within 15s"),
        }
    }
    drop(server);
    told?;
    println!("Stopped cleanly.");
    Ok(())
}

/// Steps 1 to 7, with the components running.
async fn tell(client: &kube::Client, ports: &Ports) -> anyhow::Result<()> {
    fact(
        "issuer metrics",
        format!("http://127.0.0.1:{}/metrics", ports.issuer_metrics),
    );
    fact(
        "rotator metrics",
        format!("http://127.0.0.1:{}/metrics", ports.rotator_metrics),
    );

    heading(
        "2. A self-managed ClusterCAIssuer (CA lifetime: 15m; rotated on demand now, on its own after 10m)",
    );
    let issuers = Api::<DynamicObject>::all_with(
        client.clone(),
        &resource("capstan.dev", "ClusterCAIssuer", "clustercaissuers"),
    );
    issuers
        .create(
            &PostParams::default(),
            &object(json!({
                "apiVersion": "capstan.dev/v1alpha1", "kind": "ClusterCAIssuer",
                "metadata": {"name": "monitoring-ca"},
                "spec": {"maxDuration": "10m", "selfManaged": {
                    "secretName": "monitoring-ca", "duration": "15m",
                    "rotateBefore": "5m", "propagationDelay": "5s"}}
            }))?,
        )
        .await?;
    let first_ca = wait("the issuer to be Ready", STEP, || signing_ca(&issuers)).await?;
    fact("CA fingerprint", short(&first_ca));

    heading("3. A certificate for a metrics endpoint (as cert-manager requests it)");
    issue(client, "metrics-app-1", "metrics-app-tls").await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    deployments
        .create(
            &PostParams::default(),
            &deployment(
                "metrics-app",
                "quay.io/prometheus/node-exporter:v1.9.1",
                json!({"name": "tls", "secret": {"secretName": "metrics-app-tls"}}),
            )?,
        )
        .await?;

    heading("4. A scraper that trusts the issuer's CA bundle");
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    configmaps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "prometheus-ca", "namespace": NS,
                    "annotations": {"capstan.dev/inject-ca-from-issuer": "monitoring-ca"}}
            }))?,
        )
        .await?;
    deployments
        .create(
            &PostParams::default(),
            &deployment(
                "prometheus",
                "quay.io/prometheus/prometheus:v3.5.0",
                json!({"name": "tls", "configMap": {"name": "prometheus-ca"}}),
            )?,
        )
        .await?;
    let cas = wait("the CA bundle in ConfigMap prometheus-ca", STEP, || {
        bundle(&configmaps)
    })
    .await?;
    for ca in &cas {
        fact(
            "bundle trusts",
            format!("{} ({})", short(&ca.fingerprint), ca.subject),
        );
    }

    heading("5. Rotate the CA (annotation capstan.dev/rotate)");
    issuers
        .patch(
            "monitoring-ca",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "capstan.dev/rotate": Timestamp::now().to_string()}}})),
        )
        .await?;
    let both = wait(
        "the new CA to be published beside the old one",
        STEP,
        || async { bundle(&configmaps).await.filter(|cas| cas.len() >= 2) },
    )
    .await?;
    for ca in &both {
        fact("bundle trusts", short(&ca.fingerprint));
    }
    let second_ca = wait("the issuer to sign with the new CA", STEP, || async {
        signing_ca(&issuers).await.filter(|f| *f != first_ca)
    })
    .await?;
    fact("signing CA now", short(&second_ca));

    heading("6. Renew the certificate from the new CA; the rotator rolls its users");
    issue(client, "metrics-app-2", "metrics-app-tls").await?;
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    for workload in ["metrics-app", "prometheus"] {
        wait(
            &format!("Deployment {NS}/{workload} to finish its rollout"),
            STEP,
            || async {
                has_event(&events, workload, "RolloutCompleted")
                    .await
                    .then_some(())
            },
        )
        .await?;
    }

    heading("7. What `kubectl get events -A` shows");
    let all: Api<Event> = Api::all(client.clone());
    let listed = all.list(&Default::default()).await?.items;
    print!("{}", crate::table::render(listed, Timestamp::now()));

    Ok(())
}
