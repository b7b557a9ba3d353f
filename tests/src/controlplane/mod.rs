//! A real Kubernetes control plane for the end-to-end suites: etcd,
//! kube-apiserver, kube-controller-manager, and (with workloads) the
//! kube-scheduler and kwok with one fake node, so that Deployments,
//! StatefulSets and DaemonSets get Ready pods and rollouts complete.
//!
//! The binaries come from `tests/controlplane/build` (run by
//! `cargo xtask control-plane build`), which builds them from their Go
//! modules into a cache; [`bin_dir`] finds them. Each control plane gets
//! free ports on 127.0.0.1, a temporary directory with fresh keys, an admin
//! kubeconfig (a static token in `system:masters`), kubeconfigs for any
//! other user by impersonation, ServiceAccount tokens from the TokenRequest
//! API,, and an audit log that
//! records every request.
//!
//! Suites share one control plane per test binary ([`ControlPlane::shared`])
//! and a namespace per test, or start their own
//! ([`ControlPlane::start`]) where a test restarts or kills its processes or
//! runs binaries that act on the whole cluster.

pub mod audit;
pub mod cert_manager;
pub mod flags;
pub mod pki;
pub mod process;
pub mod proxy;
pub mod trust_manager;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use capstan_testserver::kubeconfig;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Node, ServiceAccount};
use kube::api::{Api, PostParams};

use flags::Layout;
use process::Process;

/// Where the control plane's binaries are: `$CAPSTAN_CONTROLPLANE_BIN`, else
/// the build script's cache (`~/.cache/capstan/controlplane/bin`).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CAPSTAN_CONTROLPLANE_BIN") {
        return PathBuf::from(d);
    }
    let cache = std::env::var_os("CAPSTAN_CONTROLPLANE_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(|d| PathBuf::from(d).join("capstan/controlplane"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/capstan/controlplane"))
        })
        .unwrap_or_else(|| PathBuf::from("/tmp/capstan-controlplane"));
    cache.join("bin")
}

fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir().join(name);
    if !path.exists() {
        bail!(
            "{} not found: build the control plane first (cargo xtask control-plane build)",
            path.display()
        );
    }
    Ok(path)
}

/// How long each component gets to answer before the start is given up.
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// What to start.
#[derive(Debug, Clone)]
pub struct Builder {
    workloads: bool,
    apiserver_args: Vec<String>,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            workloads: true,
            apiserver_args: Vec::new(),
        }
    }
}

impl Builder {
    /// Whether to run the scheduler and kwok (default on). Without them
    /// Deployments get ReplicaSets and Pods but no pod is ever Ready.
    pub fn workloads(mut self, on: bool) -> Self {
        self.workloads = on;
        self
    }

    /// More kube-apiserver flags (say, tiny API priority and fairness
    /// limits); later flags win.
    pub fn apiserver_arg(mut self, arg: impl Into<String>) -> Self {
        self.apiserver_args.push(arg.into());
        self
    }

    /// Starts the control plane and waits until it is ready.
    pub async fn start(self) -> anyhow::Result<ControlPlane> {
        let mut failures = Vec::new();
        // A free port can be taken by another test between picking it and
        // binding it, and a starved machine can miss a deadline: a start
        // that fails is tried again, from scratch, twice; each failure is
        // said on stderr and in the final error.
        for attempt in 1..=3 {
            let dir = tempfile::Builder::new()
                .prefix("capstan-cp-")
                .tempdir()
                .context("creating the control plane's directory")?;
            match ControlPlane::launch(&self, dir.path()).await {
                Ok(mut cp) => {
                    cp.dir_guard = Some(dir);
                    return Ok(cp);
                }
                Err(e) => {
                    eprintln!("control plane: start attempt {attempt} of 3 failed: {e:#}");
                    failures.push(format!("attempt {attempt}: {e:#}"));
                }
            }
        }
        bail!("the control plane did not start:\n{}", failures.join("\n"))
    }
}

/// A running control plane. Dropping it kills every process and removes its
/// directory.
#[derive(Debug)]
pub struct ControlPlane {
    layout: Layout,
    options: Builder,
    serving_ca: pki::Ca,
    admin_token: String,
    kubeconfig: PathBuf,
    etcd: Option<Process>,
    apiserver: Option<Process>,
    /// controller-manager, scheduler, kwok.
    controllers: Vec<Process>,
    dir_guard: Option<tempfile::TempDir>,
    /// For the shared control plane: removes the directory at exit.
    reaper: Option<std::process::Child>,
}

impl ControlPlane {
    /// A control plane with everything ([`Builder::default`]).
    pub async fn start() -> anyhow::Result<Self> {
        Builder::default().start().await
    }

    /// What to start.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The test binary's shared control plane (with workloads), started by
    /// the first test that asks. Give each test its own namespace
    /// ([`ControlPlane::namespace`]).
    pub async fn shared() -> anyhow::Result<&'static Self> {
        static SHARED: tokio::sync::OnceCell<ControlPlane> = tokio::sync::OnceCell::const_new();
        SHARED
            .get_or_try_init(|| async {
                let mut cp = Self::start().await?;
                let dir = cp.keep_dir();
                cp.reaper = Some(process::remove_on_exit(&dir)?);
                Ok(cp)
            })
            .await
    }

    async fn launch(options: &Builder, dir: &Path) -> anyhow::Result<Self> {
        let layout = Layout {
            dir: dir.to_path_buf(),
            etcd_client_port: free_port()?,
            etcd_peer_port: free_port()?,
            apiserver_port: free_port()?,
        };
        let serving_ca = pki::Ca::generate("capstan test control plane CA")?;
        let serving = serving_ca.serving(
            "kube-apiserver",
            &[
                "127.0.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "10.0.0.1",
            ],
        )?;
        let admin_token = pki::random_token()?;
        pki::write_private(dir, "serving-ca.crt", &serving_ca.cert_pem)?;
        pki::write_private(dir, "apiserver.crt", &serving.cert_pem)?;
        pki::write_private(dir, "apiserver.key", &serving.key_pem)?;
        let sa = pki::signing_key()?;
        pki::write_private(dir, "sa.key", &sa.key_pem)?;
        pki::write_private(dir, "sa.pub", &sa.cert_pem)?;
        pki::write_private(dir, "tokens.csv", &flags::tokens_csv(&admin_token))?;
        pki::write_private(dir, "audit-policy.yaml", flags::AUDIT_POLICY)?;
        let kubeconfig = dir.join("admin.kubeconfig");
        kubeconfig::write(
            &kubeconfig,
            &layout.apiserver_url(),
            &serving_ca.cert_pem,
            &admin_token,
        )?;

        let mut cp = Self {
            layout,
            options: options.clone(),
            serving_ca,
            admin_token,
            kubeconfig,
            etcd: None,
            apiserver: None,
            controllers: Vec::new(),
            dir_guard: None,
            reaper: None,
        };
        cp.start_etcd().await?;
        cp.start_apiserver().await?;
        cp.start_controllers().await?;
        Ok(cp)
    }

    fn spawn(&self, name: &str, args: &[String]) -> anyhow::Result<Process> {
        let log = self.layout.file(&format!("{name}.log"));
        Process::spawn(name, &binary(name)?, args, &log, Duration::from_secs(5))
    }

    /// Starts etcd (again) on its ports and data and waits for its health
    /// and, when kube-apiserver runs, until kube-apiserver is ready again.
    pub async fn start_etcd(&mut self) -> anyhow::Result<()> {
        let etcd = self.spawn("etcd", &flags::etcd(&self.layout))?;
        let url = format!("{}/health", self.layout.etcd_url());
        wait_ready(&etcd, START_TIMEOUT, || async {
            let out = tokio::process::Command::new("curl")
                .args(["-sf", "--max-time", "2", &url])
                .output()
                .await
                .ok()?;
            String::from_utf8_lossy(&out.stdout)
                .contains("\"health\":\"true\"")
                .then_some(())
        })
        .await?;
        self.etcd = Some(etcd);
        if let Some(apiserver) = &self.apiserver {
            let client = self.client().await?;
            wait_ready(apiserver, START_TIMEOUT, || readyz(&client)).await?;
        }
        Ok(())
    }

    /// Starts kube-apiserver (again) on its port and waits for `/readyz`.
    pub async fn start_apiserver(&mut self) -> anyhow::Result<()> {
        let apiserver = self.spawn(
            "kube-apiserver",
            &flags::apiserver(&self.layout, &self.options.apiserver_args),
        )?;
        let client = self.client().await?;
        wait_ready(&apiserver, START_TIMEOUT, || readyz(&client)).await?;
        self.apiserver = Some(apiserver);
        Ok(())
    }

    async fn start_controllers(&mut self) -> anyhow::Result<()> {
        let kcm = self.spawn(
            "kube-controller-manager",
            &flags::controller_manager(&self.layout, &self.kubeconfig),
        )?;
        self.controllers.push(kcm);
        if self.options.workloads {
            let scheduler = self.spawn("kube-scheduler", &flags::scheduler(&self.kubeconfig))?;
            self.controllers.push(scheduler);
            let stages = binary("kwok-stages.yaml")?;
            let kwok = self.spawn("kwok", &flags::kwok(&self.kubeconfig, &stages))?;
            self.controllers.push(kwok);
            self.create_fake_node().await?;
        }
        // Pods need the namespace's `default` ServiceAccount, which the
        // controller-manager creates: wait for it so that the first
        // Deployment does not race it.
        let client = self.client().await?;
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        let procs: Vec<&Process> = self.controllers.iter().collect();
        wait_all_ready(&procs, START_TIMEOUT, || async {
            sas.get_opt("default").await.ok().flatten().map(|_| ())
        })
        .await?;
        if self.options.workloads {
            let nodes: Api<Node> = Api::all(client);
            wait_all_ready(&procs, START_TIMEOUT, || async {
                let node = nodes.get_opt("kwok-node-0").await.ok().flatten()?;
                node.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
                    .then_some(())
            })
            .await
            .context("waiting for kwok to make the fake node Ready")?;
        }
        Ok(())
    }

    async fn create_fake_node(&self) -> anyhow::Result<()> {
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": "kwok-node-0",
                "annotations": {
                    flags::KWOK_NODE_ANNOTATION: "fake",
                    "node.alpha.kubernetes.io/ttl": "0"
                },
                "labels": {
                    "kubernetes.io/hostname": "kwok-node-0",
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok"
                }
            },
            "status": {
                "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
                "capacity": {"cpu": "64", "memory": "256Gi", "pods": "1000"}
            }
        }))?;
        let nodes: Api<Node> = Api::all(self.client().await?);
        nodes
            .create(&PostParams::default(), &node)
            .await
            .context("creating the fake node")?;
        Ok(())
    }

    /// kube-apiserver's URL.
    pub fn url(&self) -> String {
        self.layout.apiserver_url()
    }

    /// The admin kubeconfig (token in `system:masters`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The admin's bearer token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The CA that signed kube-apiserver's serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.serving_ca.cert_pem
    }

    /// The control plane's serving CA, to sign certificates for servers that
    /// stand in front of it (the fault proxy).
    pub fn serving_ca(&self) -> &pki::Ca {
        &self.serving_ca
    }

    /// The control plane's directory (logs, audit log, keys).
    pub fn dir(&self) -> &Path {
        &self.layout.dir
    }

    /// An admin kube client.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        client_for(&self.kubeconfig).await
    }

    /// Applies every CRD in `dir` (its `*.yaml` files; server-side apply,
    /// so applying twice is harmless) and waits until each is Established.
    pub async fn apply_crd_dir(&self, dir: &Path) -> anyhow::Result<()> {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        let api: Api<CustomResourceDefinition> = Api::all(self.client().await?);
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let crd: CustomResourceDefinition =
                serde_norway::from_str(&std::fs::read_to_string(&path)?)
                    .with_context(|| format!("parsing {}", path.display()))?;
            let name = crd.metadata.name.clone().context("a CRD without a name")?;
            api.patch(
                &name,
                &kube::api::PatchParams::apply("capstan-tests").force(),
                &kube::api::Patch::Apply(&crd),
            )
            .await
            .with_context(|| format!("applying {}", path.display()))?;
            names.push(name);
        }
        if names.is_empty() {
            bail!("no CRDs in {}", dir.display());
        }
        for name in &names {
            crate::harness::await_condition(
                &format!("CRD {name} to be Established"),
                START_TIMEOUT,
                Duration::from_millis(100),
                || async {
                    let crd = api.get(name).await.ok()?;
                    crd.status?
                        .conditions?
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                        .then_some(())
                },
            )
            .await?;
        }
        Ok(())
    }

    /// A new namespace `<prefix>-<random>`, for one test.
    pub async fn namespace(&self, prefix: &str) -> anyhow::Result<String> {
        crate::harness::temp_namespace(&self.client().await?, prefix).await
    }

    /// Deletes namespace `name` (without waiting for it to go).
    pub async fn delete_namespace(&self, name: &str) -> anyhow::Result<()> {
        let api: Api<Namespace> = Api::all(self.client().await?);
        api.delete(name, &Default::default()).await?;
        Ok(())
    }

    /// Writes `<dir>/<name>.kubeconfig` for `user` in `groups`, pointing at
    /// `url`, and returns its path. The kubeconfig carries the admin's token
    /// and impersonates the user (`as`, `as-groups`), so kube-apiserver's
    /// RBAC judges every request as that user and group, and its audit log
    /// names them; kubectl and kube-rs both honour impersonation.
    pub fn user_kubeconfig_at(
        &self,
        url: &str,
        dir: &Path,
        name: &str,
        user: &str,
        groups: &[&str],
    ) -> anyhow::Result<PathBuf> {
        let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
        let groups: Vec<String> = groups.iter().map(|g| format!("    - {g:?}\n")).collect();
        let yaml = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: capstan-test
  cluster:
    server: {url}
    certificate-authority-data: {ca}
users:
- name: {name}
  user:
    token: {token}
    as: {user:?}
    as-groups:
{groups}contexts:
- name: capstan-test
  context:
    cluster: capstan-test
    user: {name}
    namespace: default
current-context: capstan-test
",
            ca = b64(&self.serving_ca.cert_pem),
            token = self.admin_token,
            groups = groups.concat(),
        );
        pki::write_private(dir, &format!("{name}.kubeconfig"), &yaml)
    }

    /// A token of ServiceAccount `namespace/name` (created when missing)
    /// from the TokenRequest API, as `kubectl create token` gets one, valid
    /// for a day, for `audiences` (the issuer's when empty).
    pub async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        audiences: &[&str],
    ) -> anyhow::Result<String> {
        let client = self.client().await?;
        let sas: Api<ServiceAccount> = Api::namespaced(client, namespace);
        if sas.get_opt(name).await?.is_none() {
            let sa: ServiceAccount =
                serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
            match sas.create(&PostParams::default(), &sa).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e).context("creating the ServiceAccount"),
            }
        }
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
                expiration_seconds: Some(86_400),
                ..Default::default()
            },
            ..Default::default()
        };
        let made = sas
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("requesting a token for {namespace}/{name}"))?;
        made.status
            .map(|s| s.token)
            .context("the TokenRequest came back without a token")
    }

    /// Writes `<dir>/<name>.kubeconfig` with `token`, pointing at `url`.
    pub fn token_kubeconfig_at(
        &self,
        url: &str,
        dir: &Path,
        name: &str,
        token: &str,
    ) -> anyhow::Result<PathBuf> {
        let path = dir.join(format!("{name}.kubeconfig"));
        kubeconfig::write(&path, url, &self.serving_ca.cert_pem, token)?;
        Ok(path)
    }

    /// Every request kube-apiserver has audited so far.
    pub fn audit_events(&self) -> anyhow::Result<Vec<audit::Event>> {
        audit::read(&self.layout.file("audit.log"))
    }

    /// Every request kube-apiserver has audited so far, in the shape of the
    /// test API server's request log (the impersonated user as the user).
    /// The audit log is written as each request completes, so a suite that
    /// counts requests it just made polls for them.
    pub fn request_log(&self) -> Vec<capstan_testserver::RequestRecord> {
        self.audit_events()
            .unwrap_or_default()
            .iter()
            .map(Into::into)
            .collect()
    }

    /// The process of component `name` (`etcd`, `kube-apiserver`,
    /// `kube-controller-manager`, `kube-scheduler`, `kwok`).
    pub fn process(&self, name: &str) -> Option<&Process> {
        self.etcd
            .iter()
            .chain(self.apiserver.iter())
            .chain(self.controllers.iter())
            .find(|p| p.name() == name)
    }

    /// Kills kube-apiserver with SIGKILL (clients see connections refused)
    /// until [`ControlPlane::start_apiserver`].
    pub fn kill_apiserver(&mut self) {
        if let Some(p) = self.apiserver.take() {
            p.kill();
        }
    }

    /// Kills etcd with SIGKILL (kube-apiserver answers 5xx and fails
    /// `/readyz`) until [`ControlPlane::start_etcd`].
    pub fn kill_etcd(&mut self) {
        if let Some(p) = self.etcd.take() {
            p.kill();
        }
    }

    /// The last lines of every component's log, for failure messages.
    pub fn logs(&self, lines: usize) -> String {
        self.etcd
            .iter()
            .chain(self.apiserver.iter())
            .chain(self.controllers.iter())
            .map(|p| format!("--- {} ---\n{}", p.name(), p.log_tail(lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops every component gracefully (SIGTERM, then SIGKILL after 5 s),
    /// the controllers first and etcd last.
    pub fn stop(mut self) {
        for p in self.controllers.drain(..).rev() {
            p.stop();
        }
        if let Some(p) = self.apiserver.take() {
            p.stop();
        }
        if let Some(p) = self.etcd.take() {
            p.stop();
        }
    }

    /// Keeps the control plane's directory after the control plane stops
    /// (for `cargo xtask control-plane up`, whose user reads the logs).
    pub fn keep_dir(&mut self) -> PathBuf {
        match self.dir_guard.take() {
            Some(d) => d.keep(),
            None => self.layout.dir.clone(),
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Controllers first, so none of them logs errors about a vanished
        // API server on the way down.
        self.controllers.clear();
        self.apiserver.take();
        self.etcd.take();
    }
}

/// A kube client for a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    capstan_testserver::tls::install_crypto_provider();
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    Ok(kube::Client::try_from(config)?)
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Polls `check` every 200 ms until it answers, failing with the
/// component's log when the component exits or `timeout` passes.
/// `Some` once kube-apiserver answers `/readyz` with `ok`.
async fn readyz(client: &kube::Client) -> Option<()> {
    let req = http::Request::get("/readyz").body(Vec::new()).ok()?;
    let body = client.request_text(req).await.ok()?;
    (body.trim() == "ok").then_some(())
}

/// Polls `check` until it answers, for at most `timeout`; fails at once,
/// with the end of its log, when `process` exits meanwhile.
pub(crate) async fn wait_ready<F, Fut>(
    process: &Process,
    timeout: Duration,
    check: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<()>>,
{
    wait_all_ready(&[process], timeout, check).await
}

async fn wait_all_ready<F, Fut>(
    processes: &[&Process],
    timeout: Duration,
    mut check: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<()>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await.is_some() {
            return Ok(());
        }
        if let Some(dead) = processes.iter().find(|p| !p.is_running()) {
            bail!(
                "{} exited while starting; its log ends:\n{}",
                dead.name(),
                dead.log_tail(40)
            );
        }
        if tokio::time::Instant::now() >= deadline {
            let names: Vec<&str> = processes.iter().map(|p| p.name()).collect();
            let logs: Vec<String> = processes
                .iter()
                .map(|p| format!("--- {} ---\n{}", p.name(), p.log_tail(20)))
                .collect();
            bail!(
                "{} not ready after {timeout:?}; logs end:\n{}",
                names.join(", "),
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The body of a successful plain-HTTP GET of `url` (by curl, 5 s at most).
pub(crate) async fn http_get(url: &str) -> Option<String> {
    let out = tokio::process::Command::new("curl")
        .args(["-sf", "--max-time", "5", url])
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
