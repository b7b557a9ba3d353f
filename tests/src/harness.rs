//! Shared support for the end-to-end suites: locating the workspace, shared
//! fixtures and tools (kubectl, helm), running kubectl against a kubeconfig,
//! and polling with a deadline instead of sleeping.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// The workspace root (the parent of this crate).
///
/// `cargo test` says where this crate is at run time; that comes first,
/// because the compile-time path is that of whichever checkout compiled
/// this library, and checkouts sharing one build directory reuse it.
pub fn workspace_root() -> PathBuf {
    let runtime = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    let here = runtime
        .as_deref()
        .filter(|dir| dir.join("Cargo.toml").is_file())
        .unwrap_or(Path::new(env!("CARGO_MANIFEST_DIR")));
    here.parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| here.to_path_buf())
}

/// The shared fixtures directory: `$CAPSTAN_SHARED_DIR`, else `<root>/../shared`.
pub fn shared_dir() -> PathBuf {
    match std::env::var_os("CAPSTAN_SHARED_DIR") {
        Some(d) => PathBuf::from(d),
        None => workspace_root().join("..").join("shared"),
    }
}

fn tool(env: &str, name: &str) -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os(env) {
        Some(p) => PathBuf::from(p),
        None => workspace_root().join(".tools").join("bin").join(name),
    };
    if !path.is_file() {
        bail!(
            "{name} not found at {} (set {env} or run scripts/install-tools)",
            path.display()
        );
    }
    Ok(path)
}

/// promtool: `$CAPSTAN_PROMTOOL`, else `<root>/.tools/bin/promtool`.
pub fn promtool_path() -> anyhow::Result<PathBuf> {
    tool("CAPSTAN_PROMTOOL", "promtool")
}

/// kubectl: `$CAPSTAN_KUBECTL`, else `<root>/.tools/bin/kubectl`; an error
/// saying to run `scripts/install-tools` when missing.
pub fn kubectl_path() -> anyhow::Result<PathBuf> {
    tool("CAPSTAN_KUBECTL", "kubectl")
}

/// helm: `$CAPSTAN_HELM`, else `<root>/.tools/bin/helm`.
pub fn helm_path() -> anyhow::Result<PathBuf> {
    tool("CAPSTAN_HELM", "helm")
}

/// The chart (`charts/capstan`) as `helm template` renders it with its
/// defaults, release `capstan` in namespace `capstan`, CRDs left out (the
/// suites apply those themselves).
pub fn rendered_chart() -> anyhow::Result<String> {
    let out = std::process::Command::new(helm_path()?)
        .args(["template", "capstan"])
        .arg(workspace_root().join("charts/capstan"))
        .args(["--namespace", "capstan", "--set", "crds.enabled=false"])
        .output()?;
    if !out.status.success() {
        anyhow::bail!(
            "helm template failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The result of a finished command.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// Whether the command exited 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

/// kubectl bound to one kubeconfig.
#[derive(Debug, Clone)]
pub struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// kubectl (located as [`kubectl_path`]) for a kubeconfig.
    pub fn new(kubeconfig: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            bin: kubectl_path()?,
            kubeconfig: kubeconfig.to_path_buf(),
        })
    }

    /// kubectl as the admin of a running API server.
    pub fn for_server(server: &impl Cluster) -> anyhow::Result<Self> {
        Self::new(server.kubeconfig_path())
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        c.env("KUBECACHEDIR", self.kubeconfig.with_extension("kubecache"));
        c.kill_on_drop(true);
        c
    }

    /// Runs kubectl with optional stdin and a 60 s limit.
    pub async fn run_with_stdin(
        &self,
        args: &[&str],
        stdin: Option<&str>,
    ) -> anyhow::Result<Output> {
        let mut c = self.command(args);
        c.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            use tokio::io::AsyncWriteExt as _;
            pipe.write_all(input.as_bytes()).await?;
            drop(pipe);
        }
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .with_context(|| format!("kubectl {} did not finish in 60 s", args.join(" ")))??;
        Ok(Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs kubectl.
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.run_with_stdin(args, None).await
    }

    /// Runs kubectl and returns stdout, failing with stderr on a non-zero exit.
    pub async fn run_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.run(args).await?;
        if !out.success() {
            bail!(
                "kubectl {} failed ({}): {}{}",
                args.join(" "),
                out.code,
                out.stderr,
                out.stdout
            );
        }
        Ok(out.stdout)
    }

    /// Starts a long-running kubectl (e.g. `get -w`) with piped stdout.
    pub fn spawn(&self, args: &[&str]) -> anyhow::Result<LineReader> {
        let mut c = self.command(args);
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        Ok(LineReader {
            child,
            lines: BufReader::new(stdout).lines(),
            seen: Vec::new(),
        })
    }
}

/// A child process whose stdout is read line by line with deadlines.
pub struct LineReader {
    child: Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    seen: Vec<String>,
}

impl LineReader {
    /// Reads lines until one satisfies `pred`, failing after `timeout` with
    /// every line seen.
    pub async fn until(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.next_line()).await {
                Ok(Ok(Some(line))) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return Ok(line);
                    }
                }
                Ok(Ok(None)) => bail!("the process ended; lines seen: {:#?}", self.seen),
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => bail!(
                    "no matching line within {timeout:?}; lines seen: {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// Every line read so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// Kills the process and waits for it.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await?;
        Ok(())
    }
}

/// Polls `check` every `interval` until it returns `Some`, failing after
/// `timeout` with `what` in the message.
pub async fn await_condition<T, F, Fut>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(interval).await;
    }
}

/// [`await_condition`] with a 10 s limit polled every 50 ms.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    await_condition(
        what,
        Duration::from_secs(10),
        Duration::from_millis(50),
        check,
    )
    .await
}

/// A namespace with a unique name, created through `client` (for suites that
/// share a server or run against a real cluster).
pub async fn temp_namespace(client: &kube::Client, prefix: &str) -> anyhow::Result<String> {
    use k8s_openapi::api::core::v1::Namespace;
    let api: kube::Api<Namespace> = kube::Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(
        serde_json::json!({"metadata": {"generateName": format!("{prefix}-")}}),
    )?;
    let created = api.create(&kube::api::PostParams::default(), &ns).await?;
    created
        .metadata
        .name
        .context("created namespace has no name")
}

/// A workspace binary built by cargo (`target/<profile>/<name>`, honouring
/// `CARGO_TARGET_DIR`); an error saying how to build it when missing.
pub fn workspace_binary(name: &str) -> anyhow::Result<PathBuf> {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => workspace_root().join("target"),
    };
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let path = target.join(profile).join(name);
    if !path.is_file() {
        bail!(
            "{} not found; build it first (cargo build --bin {name})",
            path.display()
        );
    }
    Ok(path)
}

/// A running child process (e.g. the issuer or rotator binary) whose
/// stdout and stderr lines are collected for assertions and failure
/// messages. Killed when dropped.
pub struct RunningBinary {
    child: Child,
    logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl RunningBinary {
    /// Starts `program` with arguments and extra environment variables.
    /// capstan's metrics and health servers listen on free loopback ports
    /// (so tests run in parallel) unless `envs` or `args` say otherwise;
    /// [`RunningBinary::serving_addresses`] tells where.
    pub fn start(program: &Path, args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut c = Command::new(program);
        c.args(args)
            .env("CAPSTAN_METRICS_LISTEN_ADDRESS", "127.0.0.1:0")
            .env("CAPSTAN_HEALTH_LISTEN_ADDRESS", "127.0.0.1:0")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = c
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            tokio::spawn(collect(BufReader::new(out).lines(), logs.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(collect(BufReader::new(err).lines(), logs.clone()));
        }
        Ok(Self { child, logs })
    }

    /// Kills the process with SIGKILL (no chance to clean up, as a node
    /// crash or OOM kill would) and waits for it; the logs stay readable.
    pub async fn sigkill(&mut self) -> anyhow::Result<()> {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await?;
        Ok(())
    }

    /// Sends SIGTERM, as the kubelet does to stop a pod, and waits up to
    /// `within` for the process to exit; its exit status, or an error (with
    /// the logs) when it is still running then.
    pub async fn sigterm(&mut self, within: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.pid();
        anyhow::ensure!(pid != 0, "the process has already exited");
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        anyhow::ensure!(sent.success(), "kill -TERM {pid} failed");
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => bail!(
                "still running {within:?} after SIGTERM; logs:\n{}",
                self.logs().join("\n")
            ),
        }
    }

    /// The process id (0 once it has been reaped).
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or_default()
    }

    /// Every line written so far (stdout and stderr interleaved).
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until a log line satisfies `pred`.
    pub async fn wait_for_log(
        &self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        await_condition(
            "a matching log line",
            timeout,
            Duration::from_millis(50),
            || {
                let found = self.logs().into_iter().find(|l| pred(l));
                async move { found }
            },
        )
        .await
        .with_context(|| format!("logs so far:\n{}", self.logs().join("\n")))
    }

    /// Where a capstan binary serves `/metrics` and `/healthz`, read from its
    /// "serving metrics and health" log line (waits up to `timeout` for it).
    pub async fn serving_addresses(
        &self,
        timeout: Duration,
    ) -> anyhow::Result<(std::net::SocketAddr, std::net::SocketAddr)> {
        let line = self
            .wait_for_log(timeout, |l| l.contains("serving metrics and health"))
            .await?;
        let line = strip_ansi(&line);
        let field = |name: &str| -> anyhow::Result<std::net::SocketAddr> {
            let start = line
                .find(&format!("{name}="))
                .with_context(|| format!("no {name}= in {line:?}"))?
                + name.len()
                + 1;
            let value: String = line[start..]
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '"' && *c != ',')
                .collect();
            value
                .parse()
                .with_context(|| format!("{name}={value:?} is not an address"))
        };
        Ok((field("metrics")?, field("health")?))
    }

    /// The `/metrics` text of a running capstan binary, fetched with curl
    /// over plain HTTP or (unverified) TLS; `None` when it serves none or
    /// demands credentials.
    pub async fn metrics_text(&self) -> Option<String> {
        let (metrics, _) = self.serving_addresses(Duration::from_secs(1)).await.ok()?;
        for url in [
            format!("http://{metrics}/metrics"),
            format!("https://{metrics}/metrics"),
        ] {
            let out = Command::new("curl")
                .args(["-sk", "--max-time", "10", &url])
                .output()
                .await
                .ok()?;
            let body = String::from_utf8_lossy(&out.stdout).into_owned();
            if body.contains("# HELP") {
                return Some(body);
            }
        }
        None
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGKILL and waits.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        let _ = self.child.start_kill();
        self.child.wait().await?;
        Ok(())
    }
}

/// `line` without ANSI colour escapes.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

async fn collect<R: tokio::io::AsyncBufRead + Unpin>(
    mut lines: tokio::io::Lines<R>,
    logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    while let Ok(Some(l)) = lines.next_line().await {
        logs.lock().unwrap_or_else(|e| e.into_inner()).push(l);
    }
}

/// What the suites need of an API server, whether the real control plane
/// or the embedded test API server (the `cluster` module implements it for both):
/// where it is, the admin's kubeconfig and client, and kubeconfigs for
/// other users.
pub trait Cluster: Sync {
    /// The API server's URL.
    fn url(&self) -> String;
    /// The admin kubeconfig.
    fn kubeconfig_path(&self) -> &Path;
    /// The CA that signed the API server's serving certificate.
    fn ca_pem(&self) -> &str;
    /// Writes `<dir>/<name>.kubeconfig` for `user` in `groups`, pointing at
    /// `url` (the server's own, or a proxy in front of it).
    fn user_kubeconfig_at(
        &self,
        url: &str,
        dir: &Path,
        name: &str,
        user: &str,
        groups: &[&str],
    ) -> anyhow::Result<PathBuf>;
    /// An admin kube client.
    fn client(&self) -> impl std::future::Future<Output = anyhow::Result<kube::Client>> + Send;
}

/// The condition `type_` in `obj.status.conditions`, if any.
pub fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn running_binary_collects_stdout_and_stderr_and_is_killed() {
        let mut bin = RunningBinary::start(
            Path::new("/bin/sh"),
            &["-c", "echo out $CAPSTAN_X; echo err >&2; exec sleep 600"],
            &[("CAPSTAN_X", "given")],
        )
        .unwrap();
        let line = bin
            .wait_for_log(Duration::from_secs(20), |l| l.starts_with("out"))
            .await
            .unwrap();
        assert_eq!(line, "out given");
        bin.wait_for_log(Duration::from_secs(20), |l| l == "err")
            .await
            .unwrap();
        assert!(bin.is_running());
        let missing = bin
            .wait_for_log(Duration::from_millis(200), |l| l == "never")
            .await
            .unwrap_err();
        assert!(format!("{missing:#}").contains("out given"), "{missing:#}");
        bin.kill().await.unwrap();
    }
}
