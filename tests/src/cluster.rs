//! The plumbing the end-to-end suites share for driving a cluster: kubectl
//! with YAML on stdin and JSON out, waiting for a status condition,
//! approving a CertificateRequest as cert-manager's approver does, starting
//! a capstan binary with its own token and kubeconfig, and reading base64
//! status fields and metric samples.
//!
//! Helpers that wait return the error (with what was awaited) rather than
//! panic, so each suite can add the logs it wants to the failure message.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use capstan_testserver::auth::UserInfo;
use capstan_testserver::{TestApiServer, kubeconfig};
use serde_json::Value;

use crate::controlplane::ControlPlane;
use crate::harness::{
    Cluster, Kubectl, Output, RunningBinary, await_condition, shared_dir, workspace_binary,
    workspace_root,
};

/// The groups of a component that may do anything (`system:masters`).
pub const MASTERS: &[&str] = &["system:masters"];

impl Cluster for TestApiServer {
    fn url(&self) -> String {
        TestApiServer::url(self).to_owned()
    }
    fn kubeconfig_path(&self) -> &Path {
        TestApiServer::kubeconfig_path(self)
    }
    fn ca_pem(&self) -> &str {
        TestApiServer::ca_pem(self)
    }
    /// Gives `user` its own bearer token `<name>-token`, so the request log
    /// tells a component's calls from the test's.
    fn user_kubeconfig_at(
        &self,
        url: &str,
        dir: &Path,
        name: &str,
        user: &str,
        groups: &[&str],
    ) -> anyhow::Result<PathBuf> {
        let token = format!("{name}-token");
        self.add_token(&token, UserInfo::new(user, groups))?;
        let path = dir.join(format!("{name}.kubeconfig"));
        kubeconfig::write(&path, url, self.ca_pem(), &token)?;
        Ok(path)
    }
    async fn client(&self) -> anyhow::Result<kube::Client> {
        TestApiServer::client(self).await
    }
}

impl Cluster for ControlPlane {
    fn url(&self) -> String {
        ControlPlane::url(self)
    }
    fn kubeconfig_path(&self) -> &Path {
        ControlPlane::kubeconfig_path(self)
    }
    fn ca_pem(&self) -> &str {
        ControlPlane::ca_pem(self)
    }
    fn user_kubeconfig_at(
        &self,
        url: &str,
        dir: &Path,
        name: &str,
        user: &str,
        groups: &[&str],
    ) -> anyhow::Result<PathBuf> {
        ControlPlane::user_kubeconfig_at(self, url, dir, name, user, groups)
    }
    async fn client(&self) -> anyhow::Result<kube::Client> {
        ControlPlane::client(self).await
    }
}

impl Kubectl {
    /// Applies cert-manager's CRDs (the shared fixtures' copy) when
    /// `cert_manager`, then capstan's (`<root>/crds`), and waits until they
    /// are Established.
    pub async fn apply_crds(&self, cert_manager: bool) -> anyhow::Result<()> {
        let mut dirs = Vec::new();
        if cert_manager {
            dirs.push(shared_dir().join("cert-manager-crds"));
        }
        dirs.push(workspace_root().join("crds"));
        for dir in dirs {
            let dir = dir
                .to_str()
                .with_context(|| format!("{} is not UTF-8", dir.display()))?
                .to_owned();
            self.run_ok(&["apply", "-f", &dir]).await?;
        }
        self.wait_crds_established().await
    }

    /// Waits (up to a minute) until every CRD is Established: kube-apiserver
    /// serves a CRD's kinds only from then on.
    pub async fn wait_crds_established(&self) -> anyhow::Result<()> {
        self.run_ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd",
            "--all",
        ])
        .await
        .map(|_| ())
    }

    /// `kubectl <verb> -f -` with `yaml` on stdin; panics only when kubectl
    /// cannot be run, so the caller decides what a failure says.
    pub async fn stdin(&self, verb: &str, yaml: &str) -> Output {
        self.run_with_stdin(&[verb, "-f", "-"], Some(yaml))
            .await
            .expect("running kubectl")
    }

    /// Starts a rotation of ClusterCAIssuer `name` now, as a user does:
    /// `kubectl annotate clustercaissuer <name> capstan.dev/rotate=<value>`
    /// (each new value starts one).
    pub async fn rotate(&self, name: &str, value: &str) -> anyhow::Result<()> {
        self.run_ok(&[
            "annotate",
            "--overwrite",
            "clustercaissuer",
            name,
            &format!("capstan.dev/rotate={value}"),
        ])
        .await
        .map(drop)
    }

    /// `kubectl apply -f -` with `yaml`; panics with kubectl's output and
    /// the YAML when it fails.
    pub async fn apply(&self, yaml: &str) {
        let out = self.stdin("apply", yaml).await;
        assert!(out.success(), "kubectl apply failed: {out:?}\n{yaml}");
    }

    /// `kubectl get <args> -o json`, parsed; `None` when kubectl fails (the
    /// object does not exist yet, say) or prints no JSON.
    pub async fn get_json(&self, args: &[&str]) -> Option<Value> {
        let mut full = vec!["get"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["-o", "json"]);
        let out = self.run(&full).await.ok()?;
        if !out.success() {
            return None;
        }
        serde_json::from_str(&out.stdout).ok()
    }

    /// Polls `kubectl get <args>` every `poll` until the object has a
    /// condition `type_` with `status`, for at most `timeout`; returns the
    /// object. The error names `args`, `type_` and `status`.
    pub async fn wait_condition(
        &self,
        args: &[&str],
        type_: &str,
        status: &str,
        timeout: Duration,
        poll: Duration,
    ) -> anyhow::Result<Value> {
        let what = format!("{args:?} {type_}={status}");
        await_condition(&what, timeout, poll, || async {
            let obj = self.get_json(args).await?;
            obj["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == type_ && c["status"] == status)
                .then_some(obj)
        })
        .await
    }

    /// Sets condition `type_` (`Approved` or `Denied`) to `True` on
    /// CertificateRequest `ns/name` through the status subresource, as
    /// cert-manager's approver does, with `message`.
    pub async fn set_request_condition(
        &self,
        ns: &str,
        name: &str,
        type_: &str,
        message: &str,
    ) -> anyhow::Result<String> {
        let patch = request_condition_patch(type_, message);
        self.run_ok(&request_condition_args(ns, name, &patch)).await
    }

    /// Approves CertificateRequest `ns/name` as cert-manager's approver
    /// does (message "set by test").
    pub async fn approve_request(&self, ns: &str, name: &str) -> anyhow::Result<String> {
        self.set_request_condition(ns, name, "Approved", "set by test")
            .await
    }
}

/// The merge patch that sets condition `type_` to `True` with `message`
/// (reason `cert-manager.io`, as cert-manager's approver writes it).
pub fn request_condition_patch(type_: &str, message: &str) -> String {
    format!(
        r#"{{"status":{{"conditions":[{{"type":"{type_}","status":"True","reason":"cert-manager.io","message":"{message}","lastTransitionTime":"2026-01-01T00:00:00Z"}}]}}}}"#
    )
}

/// The kubectl arguments that apply `patch` to the status of
/// CertificateRequest `ns/name`.
pub fn request_condition_args<'a>(ns: &'a str, name: &'a str, patch: &'a str) -> [&'a str; 9] {
    [
        "patch",
        "certificaterequest",
        name,
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        patch,
    ]
}

/// [`Cluster::user_kubeconfig_at`]: a kubeconfig for `user` in `groups`
/// at `url`; returns its path.
pub fn user_kubeconfig_at(
    server: &impl Cluster,
    url: &str,
    dir: &Path,
    name: &str,
    user: &str,
    groups: &[&str],
) -> anyhow::Result<PathBuf> {
    server.user_kubeconfig_at(url, dir, name, user, groups)
}

/// [`user_kubeconfig_at`] the server's own URL.
pub fn user_kubeconfig(
    server: &impl Cluster,
    dir: &Path,
    name: &str,
    user: &str,
    groups: &[&str],
) -> anyhow::Result<PathBuf> {
    server.user_kubeconfig_at(&server.url(), dir, name, user, groups)
}

/// Starts workspace binary `binary` with `--kubeconfig <kubeconfig>`, then
/// `args`, and the environment `envs` (`POD_NAMESPACE`, `POD_NAME`,
/// `RUST_LOG`, ...).
pub fn start_binary(
    binary: &str,
    kubeconfig: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> anyhow::Result<RunningBinary> {
    let path = kubeconfig
        .to_str()
        .with_context(|| format!("{} is not UTF-8", kubeconfig.display()))?;
    let mut all = vec!["--kubeconfig", path];
    all.extend_from_slice(args);
    RunningBinary::start(&workspace_binary(binary)?, &all, envs)
}

/// Starts `capstan-issuer` with `kubeconfig` as pod `default/<pod>`, its
/// cluster-scoped issuers' Secrets in `cluster_resource_namespace`, its
/// leader-election Lease in `default`, logging at `info`.
pub fn start_issuer(
    kubeconfig: &Path,
    cluster_resource_namespace: &str,
    pod: &str,
) -> anyhow::Result<RunningBinary> {
    start_binary(
        "capstan-issuer",
        kubeconfig,
        &[
            "--cluster-resource-namespace",
            cluster_resource_namespace,
            "--leader-election-namespace",
            "default",
        ],
        &[
            ("POD_NAMESPACE", "default"),
            ("POD_NAME", pod),
            ("RUST_LOG", "info"),
        ],
    )
}

/// Starts workspace binary `binary` as `user` (a `system:masters` member)
/// with its own token and kubeconfig `<dir>/<name>.kubeconfig` (see
/// [`user_kubeconfig`]), then `args` and `envs` as [`start_binary`].
pub fn start_component(
    server: &impl Cluster,
    binary: &str,
    name: &str,
    user: &str,
    dir: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> anyhow::Result<RunningBinary> {
    let config = user_kubeconfig(server, dir, name, user, MASTERS)?;
    start_binary(binary, &config, args, envs)
}

/// A base64 string field (`status.certificate`, `status.ca`, ...) decoded
/// to UTF-8 text; panics when it is not a string, not base64 or not UTF-8.
pub fn decode_b64(b64: &Value) -> String {
    let text = b64
        .as_str()
        .unwrap_or_else(|| panic!("not a base64 string: {b64}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_else(|e| panic!("not base64 ({e}): {text}"));
    String::from_utf8(bytes).unwrap_or_else(|e| panic!("not UTF-8: {e}"))
}

/// The value of the sample of `name` whose labels include `labels`, from a
/// Prometheus text exposition.
pub fn metric_value(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// `binary`'s plain-HTTP `/metrics` exposition, waiting up to `timeout` for
/// it to say where it serves; `None` when it does not say.
pub async fn scrape_metrics(binary: &RunningBinary, timeout: Duration) -> Option<String> {
    let (metrics, _) = binary.serving_addresses(timeout).await.ok()?;
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            &format!("http://{metrics}/metrics"),
        ])
        .output()
        .await
        .expect("curl is required");
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The value of the sample `series` (name and labels, exactly as exposed)
/// in [`scrape_metrics`]; `None` when the binary does not say where it
/// serves or has no such sample.
pub async fn scraped_series(
    binary: &RunningBinary,
    series: &str,
    timeout: Duration,
) -> Option<f64> {
    scrape_metrics(binary, timeout)
        .await?
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Runs openssl with `args` in `dir`; returns whether it succeeded and its
/// stdout followed by its stderr.
pub fn openssl_in(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is required: run scripts/install-tools");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// [`openssl_in`], panicking with the arguments and output when openssl
/// fails; returns the output.
pub fn openssl_ok(dir: &Path, args: &[&str]) -> String {
    let (ok, text) = openssl_in(dir, args);
    assert!(ok, "openssl {args:?}: {text}");
    text
}

/// A self-signed P-256 CA `<name>.crt` (valid 30 days) and its key
/// `<name>.key`, made by openssl in `dir`; returns the certificate's PEM.
pub fn p256_ca(dir: &Path, name: &str) -> String {
    openssl_ok(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-subj",
            &format!("/CN={name}"),
            "-days",
            "30",
        ],
    );
    std::fs::read_to_string(dir.join(format!("{name}.crt")))
        .unwrap_or_else(|e| panic!("reading {name}.crt: {e}"))
}

/// A P-256 key `<name>.key` and a CSR `<name>.csr` for `subject` (with
/// subjectAltName `san` when given), made by openssl in `dir`; returns the
/// CSR base64-encoded, for a CertificateRequest's `spec.request`.
pub fn p256_csr(dir: &Path, name: &str, subject: &str, san: Option<&str>) -> String {
    let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
    let mut args = vec![
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &key,
        "-subj",
        subject,
    ];
    let san = san.map(|s| format!("subjectAltName={s}"));
    if let Some(san) = &san {
        args.extend(["-addext", san]);
    }
    args.extend(["-out", &csr]);
    openssl_ok(dir, &args);
    let der = std::fs::read(dir.join(&csr)).unwrap_or_else(|e| panic!("reading {csr}: {e}"));
    base64::engine::general_purpose::STANDARD.encode(der)
}

/// Creates capstan's CRDs (and cert-manager's when `cert_manager`) through a
/// kube client: the benchmarks' and the soak's counterpart of
/// [`Kubectl::apply_crds`], without a kubectl per file.
///
/// # Errors
/// When a file cannot be read or parsed, or the API server refuses a CRD.
pub async fn create_crds(client: &kube::Client, cert_manager: bool) -> anyhow::Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    let mut dirs = Vec::new();
    if cert_manager {
        dirs.push(shared_dir().join("cert-manager-crds"));
    }
    dirs.push(workspace_root().join("crds"));
    for dir in dirs {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let crd: CustomResourceDefinition =
                    serde_norway::from_str(&std::fs::read_to_string(&path)?)
                        .with_context(|| format!("parsing {}", path.display()))?;
                api.create(&kube::api::PostParams::default(), &crd).await?;
            }
        }
    }
    Ok(())
}

/// Whether kube-apiserver's authorizer lets `user` (in `groups`) `verb` the
/// `group/signers` named `name` (`<resource>.<group>/<name>` or `.../*`),
/// asked as a SubjectAccessReview, as cert-manager's approval webhook and
/// kube-apiserver's certificate admission ask it.
pub async fn may_on_signer(
    client: kube::Client,
    user: &str,
    groups: &[&str],
    verb: &str,
    group: &str,
    name: &str,
) -> anyhow::Result<bool> {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_owned()),
            groups: Some(groups.iter().map(|g| (*g).to_owned()).collect()),
            resource_attributes: Some(ResourceAttributes {
                group: Some(group.to_owned()),
                resource: Some("signers".to_owned()),
                verb: Some(verb.to_owned()),
                name: Some(name.to_owned()),
                version: Some("*".to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = kube::Api::<SubjectAccessReview>::all(client)
        .create(&kube::api::PostParams::default(), &review)
        .await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}
