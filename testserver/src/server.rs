//! The running server: shared state, the TLS accept loop, and
//! [`TestApiServer`] with its builder for tests and the binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use anyhow::Context as _;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::admission::{self, FieldValidation, Op};
use super::auth::{Attributes, Auth, Rule, UserInfo};
use super::faults::{Faults, FaultsHandle};
use super::persist::Persister;
use super::request_log::{RequestLog, RequestRecord};
use super::resources::{Builtin, Registry, ResourceType};
use super::status::{self, ApiResult};
use super::store::{EventType, Gr, ObjKey, Store, Write, now_rfc3339, random_u64};
use super::tls::{ServingCert, install_crypto_provider};
use super::{handlers, kubeconfig, rbac, rollout};

const CRD_GR: (&str, &str) = ("apiextensions.k8s.io", "customresourcedefinitions");
const NS_GR: (&str, &str) = ("", "namespaces");

fn gr_of(g: (&str, &str)) -> Gr {
    (g.0.to_string(), g.1.to_string())
}

/// State shared by every request.
pub struct ServerState {
    /// The objects.
    pub store: Store,
    registry: RwLock<Arc<Registry>>,
    auth: RwLock<Auth>,
    /// Fault injection.
    pub faults: FaultsHandle,
    /// The request log.
    pub log: RequestLog,
    /// How long the rollout simulator waits before reporting a rollout done.
    pub rollout_delay: Duration,
    /// How often watches asking for bookmarks get one.
    pub bookmark_interval: Duration,
    /// `127.0.0.1:port`.
    pub address: String,
    /// Cancelled when the server stops.
    pub shutdown: CancellationToken,
    /// Background tasks (connections, watches, rollouts).
    pub tasks: TaskTracker,
    persist: Option<Persister>,
}

impl ServerState {
    /// The served types.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Tokens and rules.
    pub fn auth(&self) -> RwLockReadGuard<'_, Auth> {
        self.auth.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a user may do something: the static rules of the tokens
    /// table, or the stored RBAC objects.
    pub fn authorize(&self, user: &str, groups: &[String], attrs: &Attributes) -> bool {
        self.auth().authorize(user, groups, attrs) || rbac::allows(&self.store, user, groups, attrs)
    }

    /// Adds or replaces a token, persisting the table with `--data-dir`.
    pub fn add_token(&self, token: &str, user: UserInfo) -> anyhow::Result<()> {
        let mut a = self.auth.write().unwrap_or_else(|e| e.into_inner());
        a.tokens.insert(token.to_string(), user);
        if let Some(p) = &self.persist {
            p.write_json("auth.json", &a.to_json())?;
        }
        Ok(())
    }

    /// Adds an allow rule.
    pub fn add_rule(&self, rule: Rule) -> anyhow::Result<()> {
        let mut a = self.auth.write().unwrap_or_else(|e| e.into_inner());
        a.rules.push(rule);
        if let Some(p) = &self.persist {
            p.write_json("auth.json", &a.to_json())?;
        }
        Ok(())
    }

    /// Rebuilds the registry from the stored CRDs.
    pub fn refresh_registry(&self) {
        let crds = self.store.all(&gr_of(CRD_GR), None);
        *self.registry.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Registry::new(&crds));
    }

    fn type_for(&self, gr: &Gr) -> Option<Arc<ResourceType>> {
        let reg = self.registry();
        reg.all()
            .iter()
            .filter(|t| {
                t.storage_group == gr.0
                    && t.storage_resource == gr.1
                    && t.builtin != Some(Builtin::EventV1)
            })
            .min_by_key(|t| super::resources::version_priority(&t.version))
            .cloned()
    }

    /// Side effects of a committed write: CRDs change the registry,
    /// workloads start a simulated rollout.
    pub fn after_write(self: &Arc<Self>, rt: &ResourceType, stored: &Value) {
        match rt.builtin {
            Some(Builtin::Crd) => self.refresh_registry(),
            Some(Builtin::Deployment | Builtin::StatefulSet | Builtin::DaemonSet) => {
                rollout::schedule(self, rt, stored)
            }
            _ => {}
        }
    }

    /// Side effects of a removal: a namespace or CRD waiting for its content
    /// to go may now go too.
    pub fn after_delete(self: &Arc<Self>, rt: &ResourceType, stored: &Value) {
        self.collect_garbage(stored);
        if rt.builtin == Some(Builtin::Crd) {
            self.refresh_registry();
            return;
        }
        if let Some(ns) = stored
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            self.finalize_namespace(ns);
        }
        if rt.builtin.is_none() {
            let crd_name = format!("{}.{}", rt.plural, rt.group);
            self.finalize_crd(&crd_name);
        }
    }

    /// The garbage collector's background propagation: objects whose
    /// owners are all gone are deleted (respecting their finalizers).
    fn collect_garbage(self: &Arc<Self>, deleted: &Value) {
        let Some(uid) = deleted.pointer("/metadata/uid").and_then(Value::as_str) else {
            return;
        };
        for (gr, dependent, other_owner_alive) in self.store.dependents_of(uid) {
            if other_owner_alive {
                // The collector drops the dangling reference and keeps the object.
                self.remove_owner_ref(&gr, &dependent, uid);
                continue;
            }
            if let Some(t) = self.type_for(&gr) {
                let _ = self.delete_object(&t, &obj_key(&dependent), None, false);
            }
        }
    }

    /// `propagationPolicy: Orphan`: dependents lose the owner reference
    /// instead of being deleted.
    fn orphan_dependents(self: &Arc<Self>, uid: &str) {
        for (gr, dependent, _) in self.store.dependents_of(uid) {
            self.remove_owner_ref(&gr, &dependent, uid);
        }
    }

    fn remove_owner_ref(&self, gr: &Gr, dependent: &Value, uid: &str) {
        let key = obj_key(dependent);
        let _ = self.store.write(gr, &key, false, |cur| {
            let cur = cur.ok_or_else(|| status::not_found(&gr.0, &gr.1, &key.1))?;
            let mut o = (**cur).clone();
            if let Some(refs) = o
                .pointer_mut("/metadata/ownerReferences")
                .and_then(Value::as_array_mut)
            {
                refs.retain(|r| r["uid"].as_str() != Some(uid));
                if refs.is_empty()
                    && let Some(m) = o["metadata"].as_object_mut()
                {
                    m.remove("ownerReferences");
                }
            }
            Ok(Write::Put(o))
        });
    }

    fn finalize_namespace(self: &Arc<Self>, ns: &str) {
        let key = (String::new(), ns.to_string());
        let terminating = self
            .store
            .get(&gr_of(NS_GR), &key)
            .is_some_and(|o| o.pointer("/metadata/deletionTimestamp").is_some());
        if terminating && !self.store.namespace_has_objects(ns) {
            let _ = self
                .store
                .write(&gr_of(NS_GR), &key, false, |cur| match cur {
                    Some(c) => Ok(Write::Delete((**c).clone())),
                    None => Err(status::not_found("", "namespaces", ns)),
                });
        }
    }

    fn finalize_crd(self: &Arc<Self>, name: &str) {
        let key = (String::new(), name.to_string());
        let Some(crd) = self.store.get(&gr_of(CRD_GR), &key) else {
            return;
        };
        if crd.pointer("/metadata/deletionTimestamp").is_none() {
            return;
        }
        let group = crd
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let plural = crd
            .pointer("/spec/names/plural")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if self.store.all(&(group, plural), None).is_empty() {
            let _ = self
                .store
                .write(&gr_of(CRD_GR), &key, false, |cur| match cur {
                    Some(c) => Ok(Write::Delete((**c).clone())),
                    None => Err(status::not_found(CRD_GR.0, CRD_GR.1, name)),
                });
            self.refresh_registry();
        }
    }

    /// Deletes an object as the DELETE verb does: preconditions, finalizers
    /// (only deletionTimestamp is set while any remain), namespaces and CRDs
    /// removing their content first. Returns the object and the HTTP code.
    pub fn delete_object(
        self: &Arc<Self>,
        rt: &ResourceType,
        key: &ObjKey,
        opts: Option<&Value>,
        dry: bool,
    ) -> ApiResult<(Arc<Value>, u16)> {
        if rt.builtin == Some(Builtin::Namespace)
            && ["default", "kube-system", "kube-public"].contains(&key.1.as_str())
        {
            return Err(status::ApiError::with_details(
                403,
                "Forbidden",
                format!(
                    "namespaces \"{}\" is forbidden: this namespace may not be deleted",
                    key.1
                ),
                Some(json!({"name": key.1, "kind": "namespaces"})),
            ));
        }
        let gr = (rt.storage_group.clone(), rt.storage_resource.clone());
        let contentful = matches!(rt.builtin, Some(Builtin::Namespace) | Some(Builtin::Crd));
        let orphan = opts.is_some_and(|o| {
            o.get("propagationPolicy").and_then(Value::as_str) == Some("Orphan")
                || o.get("orphanDependents").and_then(Value::as_bool) == Some(true)
        });
        let uid = self.store.get(&gr, key).and_then(|o| {
            o.pointer("/metadata/uid")
                .and_then(Value::as_str)
                .map(String::from)
        });
        if orphan
            && !dry
            && let Some(uid) = uid
        {
            self.orphan_dependents(&uid);
        }
        let (stored, kind) = self.store.write(&gr, key, dry, |cur| {
            let cur = cur.ok_or_else(|| status::not_found(&rt.group, &rt.plural, &key.1))?;
            if let Some(pre) = opts.and_then(|o| o.get("preconditions")) {
                if let Some(uid) = pre.get("uid").and_then(Value::as_str) {
                    let have = cur.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
                    if uid != have {
                        return Err(status::conflict(
                            &rt.group,
                            &rt.plural,
                            &key.1,
                            &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"),
                        ));
                    }
                }
                if let Some(rv) = pre.get("resourceVersion").and_then(Value::as_str) {
                    let have = cur.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or_default();
                    if rv != have {
                        return Err(status::conflict(
                            &rt.group,
                            &rt.plural,
                            &key.1,
                            &format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {have}"),
                        ));
                    }
                }
            }
            let mut obj = (**cur).clone();
            let has_finalizers = obj.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
            if has_finalizers || contentful {
                if obj.pointer("/metadata/deletionTimestamp").is_none() {
                    obj["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
                    obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                    if rt.builtin == Some(Builtin::Namespace) {
                        obj["status"]["phase"] = json!("Terminating");
                    }
                }
                return Ok(Write::Put(obj));
            }
            Ok(Write::Delete(obj))
        })?;
        if !dry {
            if kind == Some(EventType::Deleted) {
                self.after_delete(rt, &stored);
            } else if rt.builtin == Some(Builtin::Namespace) {
                self.delete_namespace_content(&key.1);
                self.finalize_namespace(&key.1);
            } else if rt.builtin == Some(Builtin::Crd) {
                self.refresh_registry();
                let group = stored
                    .pointer("/spec/group")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let plural = stored
                    .pointer("/spec/names/plural")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                if let Some(t) = self.type_for(&(group.clone(), plural.clone())) {
                    for o in self.store.all(&(group, plural), None) {
                        let k = obj_key(&o);
                        let _ = self.delete_object(&t, &k, None, false);
                    }
                }
                self.finalize_crd(&key.1);
            }
        }
        Ok((stored, 200))
    }

    fn delete_namespace_content(self: &Arc<Self>, ns: &str) {
        for gr in self.store.resources_in_namespace(ns) {
            let Some(t) = self.type_for(&gr) else {
                continue;
            };
            for o in self.store.all(&gr, Some(ns)) {
                let _ = self.delete_object(&t, &obj_key(&o), None, false);
            }
        }
    }

    /// Creates a namespace unless it exists (server bootstrap).
    pub fn ensure_namespace(self: &Arc<Self>, name: &str) -> ApiResult<()> {
        let reg = self.registry();
        let rt = reg
            .find("", "v1", "namespaces")
            .ok_or_else(|| status::internal("namespaces are not registered"))?;
        let (obj, _) = admission::prepare(
            &rt,
            Op::Create,
            None,
            None,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
            FieldValidation::Ignore,
            None,
        )?;
        self.store.write(
            &gr_of(NS_GR),
            &(String::new(), name.to_string()),
            false,
            |cur| match cur {
                Some(c) => Ok(Write::Put((**c).clone())),
                None => Ok(Write::Put(obj)),
            },
        )?;
        Ok(())
    }
}

/// (namespace, name) of a stored object.
pub fn obj_key(o: &Value) -> ObjKey {
    (
        o.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        o.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    )
}

/// Starts a [`TestApiServer`] with non-default settings.
#[derive(Debug, Clone)]
pub struct Builder {
    listen: SocketAddr,
    data_dir: Option<PathBuf>,
    kubeconfig: Option<PathBuf>,
    tokens: Vec<(String, UserInfo)>,
    rules: Vec<Rule>,
    admin_token: Option<String>,
    faults: Faults,
    rollout_delay: Duration,
    bookmark_interval: Duration,
    history_limit: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: None,
            kubeconfig: None,
            tokens: Vec::new(),
            rules: Vec::new(),
            admin_token: None,
            faults: Faults::default(),
            rollout_delay: Duration::from_secs(1),
            bookmark_interval: Duration::from_secs(5),
            history_limit: 10_000,
        }
    }
}

impl Builder {
    /// Listen on this port of 127.0.0.1 (0: any free port).
    pub fn port(mut self, port: u16) -> Self {
        self.listen.set_port(port);
        self
    }

    /// Listen on this address.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Persist objects, tokens and the serving certificate in `dir`.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Write the kubeconfig here instead of a temporary directory.
    pub fn kubeconfig_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.kubeconfig = Some(path.into());
        self
    }

    /// Extra bearer tokens and their users.
    pub fn tokens(mut self, tokens: impl IntoIterator<Item = (String, UserInfo)>) -> Self {
        self.tokens.extend(tokens);
        self
    }

    /// Extra allow rules (users in `system:masters` may do everything).
    pub fn rules(mut self, rules: impl IntoIterator<Item = Rule>) -> Self {
        self.rules.extend(rules);
        self
    }

    /// The admin token written to the kubeconfig (random by default).
    pub fn admin_token(mut self, token: impl Into<String>) -> Self {
        self.admin_token = Some(token.into());
        self
    }

    /// Faults to inject from the start.
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// How long a simulated rollout takes.
    pub fn rollout_delay(mut self, d: Duration) -> Self {
        self.rollout_delay = d;
        self
    }

    /// How often watches get BOOKMARK events.
    pub fn bookmark_interval(mut self, d: Duration) -> Self {
        self.bookmark_interval = d;
        self
    }

    /// How many events the watch history keeps.
    pub fn history_limit(mut self, n: usize) -> Self {
        self.history_limit = n;
        self
    }

    /// Starts the server; returns once it accepts connections and the
    /// kubeconfig is written.
    pub async fn start(self) -> anyhow::Result<TestApiServer> {
        install_crypto_provider();
        let persist = self.data_dir.as_deref().map(Persister::new).transpose()?;
        let cert = match persist
            .as_ref()
            .map(|p| p.read_json("tls.json"))
            .transpose()?
            .flatten()
            .and_then(|v| ServingCert::from_json(&v))
        {
            Some(c) => c,
            None => {
                let c = ServingCert::generate()?;
                if let Some(p) = &persist {
                    p.write_json("tls.json", &c.to_json())?;
                }
                c
            }
        };
        let mut auth = match persist
            .as_ref()
            .map(|p| p.read_json("auth.json"))
            .transpose()?
            .flatten()
        {
            Some(v) => Auth::from_json(&v)?,
            None => Auth::default(),
        };
        let admin_token = match &self.admin_token {
            Some(t) => t.clone(),
            None => auth
                .tokens
                .iter()
                .find(|(_, u)| u.username == "admin")
                .map(|(t, _)| t.clone())
                .unwrap_or_else(|| format!("{:016x}{:016x}", random_u64(), random_u64())),
        };
        auth.tokens.insert(
            admin_token.clone(),
            UserInfo::new("admin", &["system:masters"]),
        );
        for (t, u) in self.tokens {
            auth.tokens.insert(t, u);
        }
        let masters = Rule::allow_all_for_group("system:masters");
        if !auth.rules.contains(&masters) {
            auth.rules.push(masters);
        }
        for r in self.rules {
            if !auth.rules.contains(&r) {
                auth.rules.push(r);
            }
        }
        if let Some(p) = &persist {
            p.write_json("auth.json", &auth.to_json())?;
        }
        let store = Store::new(self.history_limit, persist.clone())?;
        let listener = TcpListener::bind(self.listen)
            .await
            .with_context(|| format!("binding {}", self.listen))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ServerState {
            store,
            registry: RwLock::new(Arc::new(Registry::new(&[]))),
            auth: RwLock::new(auth),
            faults: FaultsHandle::new(self.faults),
            log: RequestLog::default(),
            rollout_delay: self.rollout_delay,
            bookmark_interval: self.bookmark_interval,
            address: addr.to_string(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            persist,
        });
        state.refresh_registry();
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            state
                .ensure_namespace(ns)
                .map_err(|e| anyhow::anyhow!("creating namespace {ns}: {}", e.message()))?;
        }
        rollout::resume(&state);
        let acceptor = tokio_rustls::TlsAcceptor::from(cert.server_config()?);
        let accept_state = state.clone();
        let accept = tokio::spawn(accept_loop(listener, acceptor, accept_state));
        let (kubeconfig, tmp) = match self.kubeconfig {
            Some(p) => (p, None),
            None => {
                let dir = tempfile::tempdir()?;
                (dir.path().join("kubeconfig"), Some(dir))
            }
        };
        let url = format!("https://{addr}");
        kubeconfig::write(&kubeconfig, &url, &cert.ca_pem, &admin_token)?;
        Ok(TestApiServer {
            state,
            addr,
            url,
            kubeconfig,
            admin_token,
            ca_pem: cert.ca_pem,
            accept: Some(accept),
            _tmp: tmp,
        })
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<ServerState>,
) {
    loop {
        let conn = tokio::select! {
            _ = state.shutdown.cancelled() => break,
            c = listener.accept() => c,
        };
        let Ok((tcp, _)) = conn else { continue };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let st = state.clone();
        state.tasks.spawn(async move {
            let tls = tokio::select! {
                _ = st.shutdown.cancelled() => return,
                t = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)) => match t {
                    Ok(Ok(t)) => t,
                    _ => return,
                },
            };
            let shutdown = st.shutdown.clone();
            let svc = hyper::service::service_fn(move |req| {
                let st = st.clone();
                async move { Ok::<_, std::convert::Infallible>(handlers::handle(st, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tls), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                }
            }
        });
    }
}

/// A running test API server. Dropping it stops it.
pub struct TestApiServer {
    state: Arc<ServerState>,
    addr: SocketAddr,
    url: String,
    kubeconfig: PathBuf,
    admin_token: String,
    ca_pem: String,
    accept: Option<tokio::task::JoinHandle<()>>,
    _tmp: Option<tempfile::TempDir>,
}

impl TestApiServer {
    /// A server on a free port of 127.0.0.1 with a kubeconfig in a temporary directory.
    pub async fn start() -> anyhow::Result<Self> {
        Builder::default().start().await
    }

    /// A builder for other settings.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The kubeconfig file for clients.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The admin bearer token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The CA certificate (PEM) of the serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A kube-rs client for the admin user, built from the kubeconfig.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let cfg =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await?;
        Ok(kube::Client::try_from(cfg)?)
    }

    /// The fault-injection handle.
    pub fn faults(&self) -> &FaultsHandle {
        &self.state.faults
    }

    /// Requests served so far.
    pub fn request_log(&self) -> Vec<RequestRecord> {
        self.state.log.entries()
    }

    /// Forgets the requests logged so far.
    pub fn clear_request_log(&self) {
        self.state.log.clear()
    }

    /// Adds a bearer token at run time.
    pub fn add_token(&self, token: &str, user: UserInfo) -> anyhow::Result<()> {
        self.state.add_token(token, user)
    }

    /// Adds an allow rule at run time.
    pub fn add_rule(&self, rule: Rule) -> anyhow::Result<()> {
        self.state.add_rule(rule)
    }

    /// A new bearer token for a ServiceAccount (user
    /// `system:serviceaccount:<ns>:<name>` in the ServiceAccount groups), as
    /// a TokenRequest would give; what it may do comes from the stored RBAC.
    pub fn service_account_token(&self, namespace: &str, name: &str) -> anyhow::Result<String> {
        let token = format!("sa-{:016x}{:016x}", random_u64(), random_u64());
        let groups = [
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{namespace}"),
        ];
        let user = UserInfo {
            username: format!("system:serviceaccount:{namespace}:{name}"),
            uid: String::new(),
            groups: groups.to_vec(),
        };
        self.state.add_token(&token, user)?;
        Ok(token)
    }

    /// Writes a kubeconfig for this server using another bearer token (e.g.
    /// from [`Self::service_account_token`]).
    pub fn write_kubeconfig(&self, path: &Path, token: &str) -> anyhow::Result<()> {
        kubeconfig::write(path, &self.url, &self.ca_pem, token)
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.state.store.current_rv()
    }

    /// Shared state, for in-process inspection.
    pub fn state(&self) -> &Arc<ServerState> {
        &self.state
    }

    /// Stops accepting, ends watches and waits (briefly) for connections.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        self.state.shutdown.cancel();
        if let Some(a) = self.accept.take() {
            let _ = a.await;
        }
        self.state.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.state.tasks.wait()).await;
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        self.state.shutdown.cancel();
    }
}
