//! The thin layer: build a client from the kubeconfig, read what a command
//! needs, hand it to the pure modules, print, and return the exit code.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use capstan_issuer::api::ca_issuer::{CAIssuer, ClusterCAIssuer, IssuerSpec, IssuerStatus};
use capstan_rotator::api::ca_bundle::{BundleSource, CABundle};
use capstan_rotator::api::injection::{self, InjectSource};
use capstan_rotator::api::issuer_ref;
use capstan_rotator::bundle::source::{DEFAULT_KEYS, ISSUER_KEYS, Problem};
use capstan_rotator::bundle::{select, source};
use capstan_rotator::restart::hash::{config_hash, config_map_digest, secret_digest};
use capstan_rotator::restart::sources::{self, SourceKind, SourceRef};
use capstan_rotator::restart::workload::Workload;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt};
use time::OffsetDateTime;

use crate::check::{self, Item, State};
use crate::cli::{Cli, Command, KubeFlags, ObjectKind};
use crate::error::{EXIT_OUT_OF_SYNC, Error, Result};
use crate::inspect;
use crate::output::{Format, encode};
use crate::rotate::{self, Outcome, Progress};
use crate::status;
use crate::target::{self, IssuerId, Kind, Wanted};

/// How often `rotate` reads the issuer while waiting.
const POLL: Duration = Duration::from_millis(500);

/// Runs the command; returns the exit code.
///
/// # Errors
/// Whatever stops the command: unreadable kubeconfig, API errors, objects
/// not found, a refused rotation, a timeout.
pub async fn run(cli: Cli) -> Result<i32> {
    let (client, namespace) = connect(&cli.kube).await?;
    let format = cli.output;
    match cli.command {
        Command::Status { issuer } => status_cmd(&client, &namespace, &issuer, format).await,
        Command::Rotate {
            issuer,
            no_wait,
            timeout,
        } => rotate_cmd(&client, &namespace, &issuer, no_wait, timeout, format).await,
        Command::Inspect { kind, name, bundle } => {
            inspect_cmd(&client, &namespace, kind, &name, bundle.as_deref(), format).await
        }
        Command::Check {
            all_namespaces,
            cluster_resource_namespace,
        } => {
            let scope = (!all_namespaces).then_some(namespace.as_str());
            check_cmd(
                &client,
                scope,
                cluster_resource_namespace.as_deref(),
                format,
            )
            .await
        }
    }
}

/// A client and the namespace to use, from kube-rs's kubeconfig loading
/// with kubectl's context selection; in a pod without a kubeconfig, the
/// service account.
async fn connect(flags: &KubeFlags) -> Result<(Client, String)> {
    let options = KubeConfigOptions {
        context: flags.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &flags.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| Error::Kubeconfig(format!("reading {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| Error::Kubeconfig(e.to_string()))?
        }
        None => match kube::Config::from_kubeconfig(&options).await {
            Ok(config) => config,
            Err(e) if flags.context.is_some() => return Err(Error::Kubeconfig(e.to_string())),
            Err(e) => kube::Config::incluster()
                .map_err(|_| Error::Kubeconfig(format!("{e} (and not running in a pod either)")))?,
        },
    };
    let namespace = flags
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    Ok((client, namespace))
}

fn print(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// An issuer as read.
struct Read {
    id: IssuerId,
    resolved: Option<String>,
    spec: IssuerSpec,
    status: Option<IssuerStatus>,
    generation: Option<i64>,
    annotations: BTreeMap<String, String>,
}

async fn get_issuer(
    client: &Client,
    kind: Kind,
    namespace: &str,
    name: &str,
) -> Result<Option<Read>> {
    let id = IssuerId::new(kind, namespace, name);
    let action = || format!("reading {id}");
    Ok(match kind {
        Kind::ClusterCAIssuer => Api::<ClusterCAIssuer>::all(client.clone())
            .get_opt(name)
            .await
            .map_err(|e| Error::api(action(), e))?
            .map(|i| Read {
                generation: i.metadata.generation,
                annotations: i.annotations().clone(),
                spec: i.spec.issuer,
                status: i.status,
                id: id.clone(),
                resolved: None,
            }),
        Kind::CAIssuer => Api::<CAIssuer>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| Error::api(action(), e))?
            .map(|i| Read {
                generation: i.metadata.generation,
                annotations: i.annotations().clone(),
                spec: i.spec.issuer,
                status: i.status,
                id: id.clone(),
                resolved: None,
            }),
    })
}

/// The issuer an `ISSUER` argument names: a bare name is the
/// `ClusterCAIssuer` if one exists, else the `CAIssuer` in `namespace`.
async fn resolve(client: &Client, namespace: &str, arg: &str) -> Result<Read> {
    match target::parse(arg)? {
        Wanted::Exactly(kind, name) => get_issuer(client, kind, namespace, &name)
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "{} not found",
                    IssuerId::new(kind, namespace, &name)
                ))
            }),
        Wanted::Either(name) => {
            let cluster = get_issuer(client, Kind::ClusterCAIssuer, namespace, &name).await?;
            let local = get_issuer(client, Kind::CAIssuer, namespace, &name).await?;
            match (cluster, local) {
                (Some(mut c), local) => {
                    let also = if local.is_some() {
                        format!(
                            "; a CAIssuer {name} exists in {namespace} too (caissuer/{name} for it)"
                        )
                    } else {
                        String::new()
                    };
                    c.resolved = Some(format!("{name:?} is the ClusterCAIssuer{also}"));
                    Ok(c)
                }
                (None, Some(mut l)) => {
                    l.resolved = Some(format!(
                        "no ClusterCAIssuer {name}; the CAIssuer in namespace {namespace}"
                    ));
                    Ok(l)
                }
                (None, None) => Err(Error::NotFound(format!(
                    "neither ClusterCAIssuer/{name} nor CAIssuer/{name} -n {namespace} exists"
                ))),
            }
        }
    }
}

/// The Events about an issuer (capstan records a ClusterCAIssuer's in
/// `default`).
async fn issuer_events(client: &Client, id: &IssuerId) -> Result<Vec<Event>> {
    let ns = id.namespace.as_deref().unwrap_or("default");
    let fields = format!(
        "involvedObject.kind={},involvedObject.name={}",
        id.kind.as_str(),
        id.name
    );
    let list = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default().fields(&fields))
        .await
        .map_err(|e| Error::api(format!("listing the Events of {id}"), e))?;
    Ok(list.items)
}

async fn status_cmd(client: &Client, namespace: &str, arg: &str, format: Format) -> Result<i32> {
    let read = resolve(client, namespace, arg).await?;
    let events = issuer_events(client, &read.id).await?;
    let report = status::report(
        read.id,
        read.resolved,
        &read.spec,
        read.status.as_ref(),
        read.generation,
        &events,
    );
    print(&match format {
        Format::Table => status::render(&report, Timestamp::now()),
        _ => encode(&report, format)?,
    });
    Ok(0)
}

async fn rotate_cmd(
    client: &Client,
    namespace: &str,
    arg: &str,
    no_wait: bool,
    timeout: Duration,
    format: Format,
) -> Result<i32> {
    let read = resolve(client, namespace, arg).await?;
    let before = rotate::can_start(&read.id, &read.spec, read.status.as_ref())?;
    let events = issuer_events(client, &read.id).await?;
    let mut progress = Progress::new(before.clone(), read.status.as_ref(), &events);
    let current = read
        .annotations
        .get(capstan_issuer::ca::layout::ROTATE_TRIGGER)
        .map(String::as_str);
    let value = rotate::trigger_value(Timestamp::now(), current);
    let patch = rotate::trigger_patch(&value);
    let params = PatchParams::default();
    let id = read.id.clone();
    let result = match id.kind {
        Kind::ClusterCAIssuer => Api::<ClusterCAIssuer>::all(client.clone())
            .patch(&id.name, &params, &Patch::Merge(&patch))
            .await
            .map(|_| ()),
        Kind::CAIssuer => Api::<CAIssuer>::namespaced(client.clone(), namespace)
            .patch(&id.name, &params, &Patch::Merge(&patch))
            .await
            .map(|_| ()),
    };
    result.map_err(|e| Error::api(format!("annotating {id}"), e))?;
    let table = format == Format::Table;
    if table {
        print(&format!(
            "{id}: set capstan.dev/rotate={value} (signing CA {})\n",
            status::short(&before)
        ));
    }
    let mut outcome = Outcome {
        issuer: id.clone(),
        trigger: value,
        previous_ca: before.clone(),
        signing_ca: None,
        completed: false,
        steps: Vec::new(),
    };
    if no_wait {
        if !table {
            print(&encode(&outcome, format)?);
        }
        return Ok(0);
    }
    let started = Instant::now();
    loop {
        let read = get_issuer(client, id.kind, namespace, &id.name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("{id} was deleted while rotating")))?;
        let events = issuer_events(client, &id).await?;
        for step in progress.observe(read.status.as_ref(), &events) {
            if table {
                print(&format!(
                    "[{:>4}s] {}\n",
                    started.elapsed().as_secs(),
                    step.line()
                ));
            }
            outcome.steps.push(step);
        }
        outcome.signing_ca = read
            .status
            .as_ref()
            .and_then(|s| s.ca.as_ref())
            .map(|c| c.fingerprint.clone());
        if progress.done() {
            outcome.completed = true;
            print(&if table {
                format!(
                    "{id} rotated in {}s: the new CA signs; the old one stays trusted until it retires (kubectl capstan status {})\n",
                    started.elapsed().as_secs(),
                    rotate::arg(&id)
                )
            } else {
                encode(&outcome, format)?
            });
            return Ok(0);
        }
        if started.elapsed() >= timeout {
            if !table {
                print(&encode(&outcome, format)?);
            }
            let phase = read
                .status
                .as_ref()
                .and_then(|s| s.rotation.as_ref())
                .map_or("-", |r| status::phase_name(r.phase));
            return Err(Error::Timeout(format!(
                "{id}: the new CA did not sign within {}s (phase {phase}); the rotation goes on: follow it with kubectl capstan status {}",
                timeout.as_secs(),
                rotate::arg(&id)
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn secret_data(secret: Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

fn config_map_data(cm: ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = cm
        .binary_data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    data.extend(
        cm.data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes())),
    );
    data
}

/// The data of a Secret or ConfigMap, by its kind name, or not found.
async fn object_data(
    client: &Client,
    namespace: &str,
    kind: ObjectKind,
    name: &str,
) -> Result<(String, BTreeMap<String, Vec<u8>>)> {
    let (kind_name, data) = match kind {
        ObjectKind::Secret => (
            "Secret",
            Api::<Secret>::namespaced(client.clone(), namespace)
                .get_opt(name)
                .await
                .map_err(|e| Error::api(format!("reading Secret/{name} -n {namespace}"), e))?
                .map(secret_data),
        ),
        ObjectKind::Configmap => (
            "ConfigMap",
            Api::<ConfigMap>::namespaced(client.clone(), namespace)
                .get_opt(name)
                .await
                .map_err(|e| Error::api(format!("reading ConfigMap/{name} -n {namespace}"), e))?
                .map(config_map_data),
        ),
    };
    let object = format!("{kind_name}/{name} -n {namespace}");
    let data = data.ok_or_else(|| Error::NotFound(format!("{object} not found")))?;
    Ok((object, data))
}

async fn inspect_cmd(
    client: &Client,
    namespace: &str,
    kind: ObjectKind,
    name: &str,
    bundle: Option<&str>,
    format: Format,
) -> Result<i32> {
    let (object, data) = object_data(client, namespace, kind, name).await?;
    let extra = match bundle {
        None => None,
        Some(arg) => {
            let (k, n) = arg.split_once('/').ok_or_else(|| {
                Error::Usage(format!(
                    "--bundle {arg:?}: use configmap/NAME or secret/NAME"
                ))
            })?;
            let k = <ObjectKind as clap::ValueEnum>::from_str(k, true).map_err(|_| {
                Error::Usage(format!(
                    "--bundle {arg:?}: {k:?} is not secret or configmap"
                ))
            })?;
            let (what, d) = object_data(client, namespace, k, n).await?;
            let prefix = what.split(' ').next().unwrap_or_default().to_owned() + ":";
            Some((prefix, d))
        }
    };
    let now = OffsetDateTime::now_utc();
    let report = inspect::report(
        object,
        &data,
        extra.as_ref().map(|(p, d)| (p.as_str(), d)),
        now,
    );
    print(&match format {
        Format::Table => inspect::render(&report, now),
        _ => encode(&report, format)?,
    });
    Ok(0)
}

/// What `check -o json|yaml` prints.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct CheckReport {
    in_sync: bool,
    items: Vec<Item>,
}

async fn check_cmd(
    client: &Client,
    scope: Option<&str>,
    crn: Option<&str>,
    format: Format,
) -> Result<i32> {
    let now = OffsetDateTime::now_utc();
    let mut items = Vec::new();
    injection_targets(client, scope, crn, now, &mut items).await?;
    bundle_targets(client, scope, now, &mut items).await?;
    workloads(client, scope, &mut items).await?;
    items.sort_by(|a, b| {
        (&a.namespace, &a.kind, &a.name, &a.via).cmp(&(&b.namespace, &b.kind, &b.name, &b.via))
    });
    let in_sync = check::all_in_sync(&items);
    print(&match format {
        Format::Table => check::render(&items),
        _ => encode(&CheckReport { in_sync, items }, format)?,
    });
    Ok(if in_sync { 0 } else { EXIT_OUT_OF_SYNC })
}

fn api_in<K>(client: &Client, scope: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The bundle the rotator would build for an injection source now.
async fn injection_bundle(
    client: &Client,
    src: &InjectSource,
    crn: Option<&str>,
    now: OffsetDateTime,
) -> Result<Result<capstan_pki::Bundle, Problem>> {
    let (namespace, name, keys, what) = match src {
        InjectSource::Secret { namespace, name } => (
            namespace.clone(),
            name.clone(),
            DEFAULT_KEYS,
            issuer_ref::describe(src),
        ),
        InjectSource::Issuer { .. } | InjectSource::ClusterIssuer { .. } => {
            let (api, name) = match src {
                InjectSource::Issuer { namespace, name } => (
                    Api::<DynamicObject>::namespaced_with(
                        client.clone(),
                        namespace,
                        &issuer_ref::ca_issuer_resource(),
                    ),
                    name,
                ),
                InjectSource::ClusterIssuer { name } | InjectSource::Secret { name, .. } => (
                    Api::<DynamicObject>::all_with(
                        client.clone(),
                        &issuer_ref::cluster_ca_issuer_resource(),
                    ),
                    name,
                ),
            };
            let described = issuer_ref::describe(src);
            let issuer = match api.get_opt(name).await {
                Ok(i) => i,
                Err(kube::Error::Api(s)) if s.code == 404 => None,
                Err(e) => return Err(Error::api(format!("reading {described}"), e)),
            };
            let Some(issuer) = issuer else {
                return Ok(Err(Problem::Missing(format!("{described} not found"))));
            };
            let secret = match issuer_ref::ca_secret_name(&issuer.data["spec"]) {
                Ok(s) => s,
                Err(e) => return Ok(Err(Problem::Invalid(format!("{described}: {e}")))),
            };
            let Some(ns) = issuer_ref::secret_namespace(src, crn.unwrap_or_default())
                .filter(|n| !n.is_empty())
            else {
                return Ok(Err(Problem::Invalid(format!(
                    "{described} keeps its CA Secret {secret} in the cluster resource namespace: pass --cluster-resource-namespace"
                ))));
            };
            let what = format!("Secret/{secret} -n {ns} (the CA Secret of {described})");
            (ns.to_owned(), secret, ISSUER_KEYS, what)
        }
    };
    let secret = Api::<Secret>::namespaced(client.clone(), &namespace)
        .get_opt(&name)
        .await
        .map_err(|e| Error::api(format!("reading Secret/{name} -n {namespace}"), e))?;
    let Some(secret) = secret else {
        return Ok(Err(Problem::Missing(format!("{what} not found"))));
    };
    let data = secret_data(secret);
    Ok(source::read_key(&what, &data, None, keys).and_then(|bytes| source::build(&[bytes], now)))
}

async fn injection_targets(
    client: &Client,
    scope: Option<&str>,
    crn: Option<&str>,
    now: OffsetDateTime,
    items: &mut Vec<Item>,
) -> Result<()> {
    let cms = api_in::<ConfigMap>(client, scope)
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::api("listing ConfigMaps", e))?;
    for cm in cms.items {
        let via = [injection::INJECT_CA_FROM, injection::INJECT_CA_FROM_ISSUER]
            .into_iter()
            .filter_map(|k| cm.annotations().get(k).map(|v| format!("{k}={v}")))
            .collect::<Vec<_>>()
            .join(",");
        let (state, reason) = match injection::parse(cm.annotations()) {
            Ok(None) => continue,
            Err(e) => (State::Error, format!("InvalidSource: {}", e.0)),
            Ok(Some(inj)) => {
                let desired = injection_bundle(client, &inj.source, crn, now).await?;
                let current = cm
                    .data
                    .as_ref()
                    .and_then(|d| d.get(&inj.key))
                    .map(String::as_str);
                check::bundle(current, &inj.key, &desired, now)
            }
        };
        items.push(Item {
            kind: "ConfigMap".into(),
            namespace: cm.namespace().unwrap_or_default(),
            name: cm.name_any(),
            via,
            state,
            reason,
        });
    }
    Ok(())
}

/// The certificates of one `CABundle` source, as the rotator reads them.
async fn bundle_source(
    client: &Client,
    i: usize,
    s: &BundleSource,
) -> Result<Result<Vec<u8>, Problem>> {
    match (&s.secret, &s.config_map, &s.inline) {
        (None, None, Some(pem)) => {
            let data = BTreeMap::from([("inline".to_owned(), pem.as_bytes().to_vec())]);
            Ok(
                source::read_key(&format!("spec.sources[{i}]"), &data, Some("inline"), &[])
                    .map(<[u8]>::to_vec),
            )
        }
        (Some(r), None, None) | (None, Some(r), None) => {
            let kind = if s.secret.is_some() {
                ObjectKind::Secret
            } else {
                ObjectKind::Configmap
            };
            let data = match object_data(client, &r.namespace, kind, &r.name).await {
                Ok((_, d)) => d,
                Err(Error::NotFound(m)) => return Ok(Err(Problem::Missing(m))),
                Err(e) => return Err(e),
            };
            let what = format!(
                "{}/{} -n {}",
                if kind == ObjectKind::Secret {
                    "Secret"
                } else {
                    "ConfigMap"
                },
                r.name,
                r.namespace
            );
            Ok(source::read_key(&what, &data, r.key.as_deref(), DEFAULT_KEYS).map(<[u8]>::to_vec))
        }
        _ => Ok(Err(Problem::Invalid(format!(
            "spec.sources[{i}]: set exactly one of secret, configMap and inline"
        )))),
    }
}

async fn bundle_targets(
    client: &Client,
    scope: Option<&str>,
    now: OffsetDateTime,
    items: &mut Vec<Item>,
) -> Result<()> {
    let bundles = match Api::<CABundle>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list.items,
        // The CABundle CRD is not installed: no CABundle targets.
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => return Err(Error::api("listing CABundles", e)),
    };
    if bundles.is_empty() {
        return Ok(());
    }
    let namespaces = Api::<Namespace>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await
        .map_err(|e| Error::api("listing Namespaces", e))?;
    for bundle in bundles {
        let via = format!("CABundle/{}", bundle.name_any());
        let (target, key) = match select::target(&bundle.spec) {
            Ok(t) => t,
            Err(p) => {
                items.push(Item {
                    kind: "CABundle".into(),
                    namespace: String::new(),
                    name: bundle.name_any(),
                    via,
                    state: State::Error,
                    reason: format!("{}: {}", p.reason(), p.message()),
                });
                continue;
            }
        };
        let selected = match select::selector(bundle.spec.namespace_selector.as_ref()) {
            Ok(sel) => select::namespaces(namespaces.items.iter().map(|n| &n.metadata), &sel),
            Err(p) => {
                items.push(Item {
                    kind: "CABundle".into(),
                    namespace: String::new(),
                    name: bundle.name_any(),
                    via,
                    state: State::Error,
                    reason: format!("{}: {}", p.reason(), p.message()),
                });
                continue;
            }
        };
        let desired = if bundle.spec.sources.is_empty() {
            Err(Problem::Invalid("spec.sources is empty".to_owned()))
        } else {
            let mut inputs = Vec::new();
            let mut problem = None;
            for (i, s) in bundle.spec.sources.iter().enumerate() {
                match bundle_source(client, i, s).await? {
                    Ok(b) => inputs.push(b),
                    Err(p) => {
                        problem = Some(p);
                        break;
                    }
                }
            }
            match problem {
                Some(p) => Err(p),
                None => {
                    let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
                    source::build(&refs, now)
                }
            }
        };
        for ns in selected
            .iter()
            .filter(|ns| scope.is_none_or(|s| s == ns.as_str()))
        {
            let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
                .get_opt(&target)
                .await
                .map_err(|e| Error::api(format!("reading ConfigMap/{target} -n {ns}"), e))?;
            let (state, reason) = match cm {
                None => (
                    State::OutOfSync,
                    format!("ConfigMap {target} does not exist yet"),
                ),
                Some(cm) => {
                    let current = cm
                        .data
                        .as_ref()
                        .and_then(|d| d.get(&key))
                        .map(String::as_str);
                    check::bundle(current, &key, &desired, now)
                }
            };
            items.push(Item {
                kind: "ConfigMap".into(),
                namespace: ns.clone(),
                name: target.clone(),
                via: via.clone(),
                state,
                reason,
            });
        }
    }
    Ok(())
}

/// The annotations by which a workload opted in to restarts.
fn opted_in_by(annotations: &BTreeMap<String, String>) -> String {
    [
        sources::RESTART_ON_CHANGE,
        sources::RELOADER_AUTO,
        sources::RELOADER_SECRET_AUTO,
        sources::RELOADER_CONFIGMAP_AUTO,
        sources::RELOADER_SECRET_RELOAD,
        sources::RELOADER_CONFIGMAP_RELOAD,
    ]
    .into_iter()
    .filter(|k| annotations.contains_key(*k))
    .collect::<Vec<_>>()
    .join(",")
}

async fn workloads(client: &Client, scope: Option<&str>, items: &mut Vec<Item>) -> Result<()> {
    let lp = ListParams::default();
    let mut all: Vec<Workload> = Vec::new();
    all.extend(
        api_in::<Deployment>(client, scope)
            .list(&lp)
            .await
            .map_err(|e| Error::api("listing Deployments", e))?
            .items
            .into_iter()
            .map(Workload::Deployment),
    );
    all.extend(
        api_in::<StatefulSet>(client, scope)
            .list(&lp)
            .await
            .map_err(|e| Error::api("listing StatefulSets", e))?
            .items
            .into_iter()
            .map(Workload::StatefulSet),
    );
    all.extend(
        api_in::<DaemonSet>(client, scope)
            .list(&lp)
            .await
            .map_err(|e| Error::api("listing DaemonSets", e))?
            .items
            .into_iter()
            .map(Workload::DaemonSet),
    );
    for w in all {
        let annotations = w.annotations();
        let Some(watched) = sources::watched(&annotations, &w.template()) else {
            continue;
        };
        let key = w.key();
        let mut digests: BTreeMap<SourceRef, Option<String>> = BTreeMap::new();
        for s in watched {
            let what = format!("reading {s} -n {}", key.namespace);
            let digest = match s.kind {
                SourceKind::Secret => Api::<Secret>::namespaced(client.clone(), &key.namespace)
                    .get_opt(&s.name)
                    .await
                    .map_err(|e| Error::api(what, e))?
                    .map(|x| secret_digest(&x)),
                SourceKind::ConfigMap => {
                    Api::<ConfigMap>::namespaced(client.clone(), &key.namespace)
                        .get_opt(&s.name)
                        .await
                        .map_err(|e| Error::api(what, e))?
                        .map(|x| config_map_digest(&x))
                }
            };
            digests.insert(s, digest);
        }
        let current = config_hash(&digests);
        let (state, reason) = check::workload(w.applied_hash().as_deref(), &current, &digests);
        items.push(Item {
            kind: key.kind.to_owned(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            via: opted_in_by(&annotations),
            state,
            reason,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_name_the_annotations_they_opted_in_by() {
        let a = BTreeMap::from([
            (sources::RELOADER_AUTO.to_owned(), "true".to_owned()),
            ("other".to_owned(), "x".to_owned()),
        ]);
        assert_eq!(opted_in_by(&a), "reloader.stakater.com/auto");
    }
}
