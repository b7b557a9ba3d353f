//! `check`: read every injection target, `CABundle` target and
//! restart-annotated workload with what they are built from.

use std::collections::BTreeMap;

use capstan_rotator::api::ca_bundle::{BundleSource, CABundle};
use capstan_rotator::api::injection::{self, InjectSource};
use capstan_rotator::api::issuer_ref;
use capstan_rotator::bundle::source::{DEFAULT_KEYS, ISSUER_KEYS, Problem};
use capstan_rotator::bundle::{conflict, select, source};
use capstan_rotator::restart::hash::{Read, config_hash, config_map_read, counted, secret_read};
use capstan_rotator::restart::sources::{self, SourceKind, SourceRef};
use capstan_rotator::restart::workload::Workload;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DynamicObject, ListParams};
use kube::{Client, ResourceExt};
use time::OffsetDateTime;

use crate::check::{self, Item, State};
use crate::cli::ObjectKind;
use crate::error::{EXIT_OUT_OF_SYNC, Error, Result};
use crate::output::{Format, encode};

use super::objects::object_data;
use capstan_rotator::bundle::source::{config_map_bytes, secret_bytes};

use super::print;

/// What `check -o json|yaml` prints.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct CheckReport {
    in_sync: bool,
    items: Vec<Item>,
}

pub(super) async fn check_cmd(
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
    let data = secret_bytes(secret);
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

/// What a `CABundle` source is read against: every `CABundle` and
/// Namespace, to refuse a source that is some bundle's output as the
/// rotator does.
struct Context<'a> {
    bundles: &'a [CABundle],
    namespaces: Vec<&'a ObjectMeta>,
}

/// The certificates of one `CABundle` source, as the rotator reads them.
async fn bundle_source(
    client: &Client,
    cx: &Context<'_>,
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
        (Some(r), None, None) => {
            let what = format!("Secret/{} -n {}", r.name, r.namespace);
            let data = match object_data(client, &r.namespace, ObjectKind::Secret, &r.name).await {
                Ok((_, d)) => d,
                Err(Error::NotFound(m)) => return Ok(Err(Problem::Missing(m))),
                Err(e) => return Err(e),
            };
            Ok(source::read_key(&what, &data, r.key.as_deref(), DEFAULT_KEYS).map(<[u8]>::to_vec))
        }
        (None, Some(r), None) => {
            let what = format!("ConfigMap/{} -n {}", r.name, r.namespace);
            let cm = Api::<ConfigMap>::namespaced(client.clone(), &r.namespace)
                .get_opt(&r.name)
                .await
                .map_err(|e| Error::api(format!("reading {what}"), e))?;
            let Some(cm) = cm else {
                return Ok(Err(Problem::Missing(format!("{what} not found"))));
            };
            if let Some(why) = conflict::source_is_target(cx.bundles, &cx.namespaces, &cm.metadata)
            {
                return Ok(Err(Problem::SourceIsTarget(format!(
                    "spec.sources[{i}]: {why}; a bundle cannot read its own output"
                ))));
            }
            let data = config_map_bytes(cm);
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
    let cx = Context {
        bundles: &bundles,
        namespaces: namespaces.items.iter().map(|n| &n.metadata).collect(),
    };
    for bundle in &bundles {
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
                match bundle_source(client, &cx, i, s).await? {
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
                None if desired.is_ok() => (
                    State::OutOfSync,
                    format!("ConfigMap {target} does not exist yet"),
                ),
                cm => {
                    let current = cm
                        .as_ref()
                        .and_then(|c| c.data.as_ref())
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

/// The annotations by which a workload opted in to restarts, on it or (as
/// Reloader reads them too) on its pod template.
fn opted_in_by(
    annotations: &BTreeMap<String, String>,
    template: &BTreeMap<String, String>,
) -> String {
    [
        sources::RESTART_ON_CHANGE,
        sources::RELOADER_AUTO,
        sources::RELOADER_SECRET_AUTO,
        sources::RELOADER_CONFIGMAP_AUTO,
        sources::RELOADER_SECRET_RELOAD,
        sources::RELOADER_CONFIGMAP_RELOAD,
        sources::RELOADER_SEARCH,
    ]
    .into_iter()
    .filter(|k| annotations.contains_key(*k) || template.contains_key(*k))
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
        let template = w.template();
        let Some(watched) = sources::watched(&annotations, &template) else {
            continue;
        };
        let key = w.key();
        let mut read: BTreeMap<SourceRef, Option<Read>> = BTreeMap::new();
        for s in watched.sources() {
            let what = format!("reading {s} -n {}", key.namespace);
            let content = match s.kind {
                SourceKind::Secret => Api::<Secret>::namespaced(client.clone(), &key.namespace)
                    .get_opt(&s.name)
                    .await
                    .map_err(|e| Error::api(what, e))?
                    .map(secret_read),
                SourceKind::ConfigMap => {
                    Api::<ConfigMap>::namespaced(client.clone(), &key.namespace)
                        .get_opt(&s.name)
                        .await
                        .map_err(|e| Error::api(what, e))?
                        .map(config_map_read)
                }
            };
            read.insert(s.clone(), content);
        }
        // The rotator's rule: only the sources that trigger the workload
        // (not ignored; matched, in search mode) are in its hash.
        let digests = counted(&watched, |s| read.get(s).and_then(Option::as_ref));
        let current = config_hash(&digests);
        let (state, reason) = check::workload(w.applied_hash().as_deref(), &current, &digests);
        items.push(Item {
            kind: key.kind.to_owned(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            via: opted_in_by(
                &annotations,
                &template
                    .metadata
                    .and_then(|m| m.annotations)
                    .unwrap_or_default(),
            ),
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
        assert_eq!(
            opted_in_by(&a, &BTreeMap::new()),
            "reloader.stakater.com/auto"
        );
        let template = BTreeMap::from([(sources::RELOADER_SEARCH.to_owned(), "true".to_owned())]);
        assert_eq!(
            opted_in_by(&BTreeMap::new(), &template),
            "reloader.stakater.com/search"
        );
    }
}
