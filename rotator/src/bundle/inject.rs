//! IO glue of annotation-driven injection: ConfigMaps annotated
//! `capstan.dev/inject-ca-from` or `capstan.dev/inject-ca-from-issuer` (see
//! [`crate::api::injection`]) get the source's bundle under their key.
//!
//! Watches ConfigMaps and Secrets by metadata only, and the issuers. A
//! reconcile reads the annotated ConfigMap and its source (resolving an
//! issuer to its CA Secret), builds the bundle ([`super::source`]), and
//! writes the one key with a JSON merge patch under
//! [`BUNDLE_MANAGER`], guarded by the resourceVersion it read — only when
//! the bytes differ, so a hand edit is put back and nothing else is ever
//! rewritten. A source that cannot be used is a Warning Event on the
//! ConfigMap and no write; [`super::deps`] re-runs the ConfigMap when the
//! source changes or appears.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use capstan_common::backoff::{Retries, WatchBackoff};
use capstan_common::events::{Record, object_phrase, updated_message};
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;

use super::deps::Dependencies;
use super::source::{self, DEFAULT_KEYS, ISSUER_KEYS, Problem};
use super::{Config, config_map_ref, publish};
use crate::api::injection::{self, InjectSource};
use crate::api::issuer_ref;
use crate::context::{BUNDLE_MANAGER, Context};
use crate::error::{Error, ObjectName, Result, verb};
use crate::reasons;
use crate::scope::watch::scoped;

/// The ConfigMap metadata the controller keeps.
type ConfigMapMeta = PartialObjectMeta<ConfigMap>;
/// A ConfigMap: namespace and name.
type Key = (String, String);

/// The merge patch that sets `key` to `desired`, or `None` when the
/// ConfigMap already holds exactly those bytes. The resourceVersion read
/// makes the write fail rather than overwrite a change made since.
#[must_use]
pub fn patch(
    current: Option<&str>,
    key: &str,
    desired: &str,
    resource_version: Option<&str>,
) -> Option<serde_json::Value> {
    (current != Some(desired)).then(|| key_patch(key, desired, resource_version))
}

/// The merge patch setting `key` to `value`, failing on a resourceVersion
/// other than `resource_version`.
#[must_use]
pub fn key_patch(key: &str, value: &str, resource_version: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "metadata": {"resourceVersion": resource_version},
        "data": {key: value},
    })
}

/// Keeps only what injection needs of a ConfigMap's metadata, so the cache
/// of every ConfigMap in the cluster stays small.
fn slim(cm: &mut ConfigMapMeta) {
    let m = &mut cm.metadata;
    m.managed_fields = None;
    m.labels = None;
    m.owner_references = None;
    m.finalizers = None;
    if let Some(annotations) = m.annotations.as_mut() {
        annotations.retain(|k, _| k.starts_with("capstan.dev/inject-ca"));
    }
}

struct Injector {
    ctx: Arc<Context>,
    config: Config,
    deps: Mutex<Dependencies<Key>>,
    retries: Retries<String>,
}

fn key_of(cm: &ConfigMapMeta) -> Key {
    (cm.namespace().unwrap_or_default(), cm.name_any())
}

fn object_ref((namespace, name): &Key) -> ObjectRef<ConfigMapMeta> {
    ObjectRef::new(name).within(namespace)
}

/// Runs the injection controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, config: Config, shutdown: CancellationToken) {
    let client = ctx.client.clone();
    let wc = watcher::Config::default().any_semantic();
    let injector = Arc::new(Injector {
        ctx: ctx.clone(),
        config,
        deps: Mutex::new(Dependencies::default()),
        retries: Retries::default(),
    });

    let (reader, writer) = reflector::store();
    let forget = injector.clone();
    // Annotated ConfigMaps in the scope's namespaces (namespace by namespace
    // for a fixed list); a selector or an ignore list is decided per
    // reconcile.
    let scope = ctx.scope.scope().clone();
    let config_maps = scoped::<PartialObjectMeta<ConfigMap>>(&client, &scope, &wc)
        .map(Ok::<_, watcher::Error>)
        .modify(slim)
        .inspect(move |event| {
            if let Ok(watcher::Event::Delete(cm)) = event {
                forget.deps().forget(&key_of(cm));
                forget.sources_gauge();
            }
        })
        .reflect(writer)
        .applied_objects();

    let index = injector.clone();
    let sources = scope.sources(&injector.config.cluster_resource_namespace);
    let secrets = scoped::<PartialObjectMeta<Secret>>(&client, &sources, &wc)
        .map(Ok::<_, watcher::Error>)
        .touched_objects()
        .filter_map(|s| std::future::ready(s.ok()))
        .flat_map(move |s| {
            let source = InjectSource::Secret {
                namespace: s.namespace().unwrap_or_default(),
                name: s.name_any(),
            };
            stream::iter(index.dependents(&source))
        });

    let controller = Controller::for_stream(config_maps, reader)
        .trigger_backoff(WatchBackoff::default())
        .with_config(ControllerConfig::default().concurrency(4))
        .reconcile_on(secrets)
        .reconcile_on(issuers(
            &injector,
            issuer_ref::ca_issuer_resource(),
            &wc,
            |namespace, name| InjectSource::Issuer { namespace, name },
        ))
        .reconcile_on(issuers(
            &injector,
            issuer_ref::cluster_ca_issuer_resource(),
            &wc,
            |_, name| InjectSource::ClusterIssuer { name },
        ))
        .reconcile_all_on(ctx.leadership.gained())
        .reconcile_all_on(ctx.scope.moves_stream().map(|_| ()))
        .graceful_shutdown_on(async move { shutdown.cancelled().await });
    controller
        .run(reconcile, error_policy, injector)
        .for_each(|result| {
            if let Err(error) = result {
                tracing::debug!(%error, "injection controller");
            }
            std::future::ready(())
        })
        .await;
}

/// The ConfigMaps to re-run when an issuer of kind `resource` changes. An
/// issuer kind that is not installed only makes this watch retry.
fn issuers(
    injector: &Arc<Injector>,
    resource: ApiResource,
    wc: &watcher::Config,
    source: fn(String, String) -> InjectSource,
) -> impl futures::Stream<Item = ObjectRef<ConfigMapMeta>> + Send + 'static {
    let index = injector.clone();
    let api = Api::<DynamicObject>::all_with(injector.ctx.client.clone(), &resource);
    watcher(api, wc.clone())
        .backoff(WatchBackoff::default())
        .touched_objects()
        .filter_map(|o| std::future::ready(o.ok()))
        .flat_map(move |issuer| {
            let s = source(issuer.namespace().unwrap_or_default(), issuer.name_any());
            stream::iter(index.dependents(&s))
        })
}

async fn reconcile(cm: Arc<ConfigMapMeta>, injector: Arc<Injector>) -> Result<Action> {
    let key = key_of(&cm);
    let action = injector.reconcile(&cm, &key).await;
    injector.sources_gauge();
    let action = action?;
    injector.retries.succeeded(&format!("{}/{}", key.0, key.1));
    Ok(action)
}

fn error_policy(cm: Arc<ConfigMapMeta>, error: &Error, injector: Arc<Injector>) -> Action {
    let (namespace, name) = key_of(&cm);
    injector
        .ctx
        .metrics
        .reconcile_errors
        .with_label_values(&["inject", error.category()])
        .inc();
    let delay = injector.retries.failed(format!("{namespace}/{name}"));
    tracing::warn!(%error, %namespace, configmap = %name, retry_in = ?delay, "injection failed");
    Action::requeue(delay)
}

impl Injector {
    fn deps(&self) -> MutexGuard<'_, Dependencies<Key>> {
        self.deps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publishes how many sources annotated ConfigMaps read.
    fn sources_gauge(&self) {
        let n = self.deps().sources();
        self.ctx
            .metrics
            .sources_watched
            .with_label_values(&["inject"])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    fn dependents(&self, source: &InjectSource) -> Vec<ObjectRef<ConfigMapMeta>> {
        self.deps()
            .dependents(source)
            .iter()
            .map(object_ref)
            .collect()
    }

    async fn reconcile(&self, cm: &ConfigMapMeta, key: &Key) -> Result<Action> {
        let (namespace, name) = key;
        if !self.ctx.scope.admits(namespace) {
            self.deps().forget(key);
            return Ok(Action::await_change());
        }
        let injection = match injection::parse(cm.annotations()) {
            Ok(Some(injection)) => injection,
            Ok(None) => {
                self.deps().forget(key);
                return Ok(Action::await_change());
            }
            Err(e) => {
                self.deps().forget(key);
                let problem = Problem::Invalid(e.0);
                self.refuse(cm, key, &problem).await;
                return Ok(Action::await_change());
            }
        };
        let bundle = match self.bundle_for(key, &injection.source).await? {
            Ok(bundle) => bundle,
            Err(problem) => {
                self.refuse(cm, key, &problem).await;
                return Ok(Action::await_change());
            }
        };
        let api = Api::<ConfigMap>::namespaced(self.ctx.client.clone(), namespace);
        let Some(current) = api.get_opt(name).await.map_err(|e| {
            Error::kube(
                verb::READ,
                ObjectName::namespaced("ConfigMap", namespace, name),
                e,
            )
        })?
        else {
            return Ok(Action::await_change());
        };
        let value = current
            .data
            .as_ref()
            .and_then(|d| d.get(&injection.key))
            .map(String::as_str);
        let Some(body) = patch(
            value,
            &injection.key,
            &bundle.pem,
            current.metadata.resource_version.as_deref(),
        ) else {
            tracing::debug!(%namespace, configmap = %name, "bundle in sync");
            return Ok(Action::requeue(self.config.resync));
        };
        if !self.ctx.leadership.is_leader() {
            return Ok(Action::await_change());
        }
        let reference = config_map_ref(namespace, name, current.metadata.uid.clone());
        let message = updated_message("ConfigMap", Some(namespace), name);
        if self.ctx.dry_run {
            let message = format!(
                "Dry run: would update {} because it changed",
                object_phrase("ConfigMap", Some(namespace), name)
            );
            let record = Record::normal(reasons::CONFIG_MAP_UPDATE_SKIPPED_DRY_RUN, message);
            publish(&self.ctx, &reference, &record).await;
            return Ok(Action::requeue(self.config.resync));
        }
        let params = PatchParams {
            field_manager: Some(BUNDLE_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        api.patch(name, &params, &Patch::Merge(&body))
            .await
            .map_err(|e| {
                Error::kube(
                    verb::UPDATE,
                    ObjectName::namespaced("ConfigMap", namespace, name),
                    e,
                )
            })?;
        self.ctx
            .metrics
            .bundle_updates
            .with_label_values(&[namespace.as_str(), name.as_str()])
            .inc();
        publish(
            &self.ctx,
            &reference,
            &Record::normal(reasons::CONFIG_MAP_UPDATED, message),
        )
        .await;
        Ok(Action::requeue(self.config.resync))
    }

    /// A Warning on the ConfigMap saying why nothing was injected.
    async fn refuse(&self, cm: &ConfigMapMeta, key: &Key, problem: &Problem) {
        let (namespace, name) = key;
        tracing::debug!(%namespace, configmap = %name, reason = problem.reason(), "{}", problem.message());
        if !self.ctx.leadership.is_leader() {
            return;
        }
        let reference = config_map_ref(namespace, name, cm.uid());
        let message = format!(
            "Not injecting CAs into ConfigMap/{name} -n {namespace}: {}",
            problem.message()
        );
        publish(
            &self.ctx,
            &reference,
            &Record::warning(problem.reason(), message),
        )
        .await;
    }

    /// The bundle of `source`, recording what `key` reads before reading it
    /// so that a source appearing later re-runs it.
    async fn bundle_for(
        &self,
        key: &Key,
        source: &InjectSource,
    ) -> Result<Result<capstan_pki::Bundle, Problem>> {
        let mut read = BTreeSet::from([source.clone()]);
        let (namespace, name, keys, what) = match source {
            InjectSource::Secret { namespace, name } => (
                namespace.clone(),
                name.clone(),
                DEFAULT_KEYS,
                issuer_ref::describe(source),
            ),
            InjectSource::Issuer { .. } | InjectSource::ClusterIssuer { .. } => {
                self.deps().set(key, read.clone());
                let name = match self.issuer_secret(source).await? {
                    Ok(name) => name,
                    Err(problem) => return Ok(Err(problem)),
                };
                let namespace =
                    issuer_ref::secret_namespace(source, &self.config.cluster_resource_namespace)
                        .unwrap_or_default()
                        .to_owned();
                let what = format!(
                    "Secret/{name} -n {namespace} (the CA Secret of {})",
                    issuer_ref::describe(source)
                );
                (namespace, name, ISSUER_KEYS, what)
            }
        };
        read.insert(InjectSource::Secret {
            namespace: namespace.clone(),
            name: name.clone(),
        });
        self.deps().set(key, read);
        let secret = Api::<Secret>::namespaced(self.ctx.client.clone(), &namespace)
            .get_opt(&name)
            .await
            .map_err(|e| {
                Error::kube(
                    verb::READ,
                    ObjectName::namespaced("Secret", &namespace, &name),
                    e,
                )
            })?;
        let Some(secret) = secret else {
            return Ok(Err(Problem::Missing(format!("{what} not found"))));
        };
        let data = source::secret_bytes(secret);
        Ok(source::read_key(&what, &data, None, keys)
            .and_then(|bytes| source::build(&[bytes], time::OffsetDateTime::now_utc())))
    }

    /// The name of an issuer's CA Secret.
    async fn issuer_secret(&self, source: &InjectSource) -> Result<Result<String, Problem>> {
        let client = self.ctx.client.clone();
        let (api, name, object) = match source {
            InjectSource::Issuer { namespace, name } => (
                Api::<DynamicObject>::namespaced_with(
                    client,
                    namespace,
                    &issuer_ref::ca_issuer_resource(),
                ),
                name,
                ObjectName::namespaced(issuer_ref::CA_ISSUER, namespace, name),
            ),
            InjectSource::ClusterIssuer { name } => (
                Api::<DynamicObject>::all_with(client, &issuer_ref::cluster_ca_issuer_resource()),
                name,
                ObjectName::cluster(issuer_ref::CLUSTER_CA_ISSUER, name),
            ),
            InjectSource::Secret { .. } => {
                return Ok(Err(Problem::Invalid("not an issuer".to_owned())));
            }
        };
        let what = issuer_ref::describe(source);
        let issuer = match api.get_opt(name).await {
            Ok(issuer) => issuer,
            // An issuer kind that is not installed is a missing source.
            Err(kube::Error::Api(status)) if status.code == 404 => None,
            Err(e) => return Err(Error::kube(verb::READ, object, e)),
        };
        let Some(issuer) = issuer else {
            return Ok(Err(Problem::Missing(format!("{what} not found"))));
        };
        Ok(issuer_ref::ca_secret_name(&issuer.data["spec"])
            .map_err(|e| Problem::Invalid(format!("{what}: {e}"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_the_key_and_only_when_the_bytes_differ() {
        assert_eq!(patch(Some("PEM"), "ca-bundle.crt", "PEM", Some("7")), None);
        assert_eq!(
            patch(Some("edited"), "ca.crt", "PEM", Some("7")),
            Some(serde_json::json!({
                "metadata": {"resourceVersion": "7"},
                "data": {"ca.crt": "PEM"}
            }))
        );
        assert!(patch(None, "ca-bundle.crt", "PEM", Some("7")).is_some());
    }

    #[test]
    fn the_cache_keeps_only_injection_annotations() {
        let mut cm: ConfigMapMeta = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "x", "namespace": "ns", "labels": {"a": "b"},
                "annotations": {"capstan.dev/inject-ca-from": "a/b", "kubectl.kubernetes.io/last-applied-configuration": "{...}"},
                "managedFields": [{"manager": "kubectl"}]}
        }))
        .expect("meta");
        slim(&mut cm);
        assert_eq!(
            cm.annotations().keys().collect::<Vec<_>>(),
            vec!["capstan.dev/inject-ca-from"]
        );
        assert!(cm.metadata.managed_fields.is_none() && cm.metadata.labels.is_none());
    }
}
