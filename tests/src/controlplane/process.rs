//! One control-plane process (etcd, kube-apiserver, ...) under a small bash
//! supervisor that stops it when the test process goes away.
//!
//! A test binary's shared control plane lives in a `static`, which Rust
//! never drops, and a killed test binary drops nothing at all. So every
//! component is started by `bash`, which starts it in the background, prints
//! its pid and then blocks reading its own stdin: a pipe whose only writer is
//! this process. When this process exits, however it exits, the pipe closes,
//! the read returns and bash stops the component (SIGTERM, then SIGKILL after
//! 5 s). [`Process`]'s `Drop` closes the pipe early for the same effect.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

/// The supervisor: runs `"$@"` with output appended to `$CAPSTAN_LOG`,
/// prints its pid, waits for stdin to close, then stops it.
const SUPERVISOR: &str = r#"
"$@" </dev/null >>"$CAPSTAN_LOG" 2>&1 &
c=$!
echo "$c"
read -r _ || true
kill -TERM "$c" 2>/dev/null || exit 0
( sleep "${CAPSTAN_STOP_GRACE:-5}"; kill -KILL "$c" 2>/dev/null ) &
wait "$c"
"#;

/// A running component.
#[derive(Debug)]
pub struct Process {
    name: String,
    supervisor: Child,
    /// Closing it tells the supervisor to stop the component.
    stdin: Option<ChildStdin>,
    pid: u32,
    log: PathBuf,
}

impl Process {
    /// Starts `program args` as component `name`, its output appended to
    /// `log`. `grace` is how long a stop waits after SIGTERM before SIGKILL.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
        grace: Duration,
    ) -> anyhow::Result<Self> {
        let mut supervisor = Command::new("bash")
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("capstan-supervisor")
            .arg(program)
            .args(args)
            .env("CAPSTAN_LOG", log)
            .env("CAPSTAN_STOP_GRACE", grace.as_secs().max(1).to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // bash reports a killed job ("Killed") on its stderr.
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting bash to supervise {name}"))?;
        let stdout = supervisor
            .stdout
            .take()
            .context("supervisor has no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .with_context(|| format!("reading {name}'s pid"))?;
        let pid = line
            .trim()
            .parse()
            .with_context(|| format!("supervisor of {name} printed {line:?}, not a pid"))?;
        let stdin = supervisor.stdin.take();
        Ok(Self {
            name: name.to_owned(),
            supervisor,
            stdin,
            pid,
            log: log.to_path_buf(),
        })
    }

    /// The component's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The component's own pid (not the supervisor's).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the component is still running.
    pub fn is_running(&self) -> bool {
        // A zombie still has a /proc entry; its state letter is Z.
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X"),
            Err(_) => false,
        }
    }

    /// Sends `signal` (`KILL`, `TERM`, `STOP`, `CONT`, ...) to the component.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-s", signal, &self.pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .context("running kill")?;
        if !status.success() && self.is_running() {
            bail!("kill -s {signal} {} ({}) failed", self.pid, self.name);
        }
        Ok(())
    }

    /// The last `lines` lines of the component's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The component's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Stops the component (SIGTERM, SIGKILL after the grace period) and
    /// waits for it.
    pub fn stop(mut self) {
        self.stdin.take();
        let _ = self.supervisor.wait();
    }

    /// Kills the component with SIGKILL at once and waits for it.
    pub fn kill(mut self) {
        let _ = self.signal("KILL");
        self.stdin.take();
        let _ = self.supervisor.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            // Tests tear down with SIGKILL: nothing of a throwaway control
            // plane needs a clean shutdown.
            let _ = self.signal("KILL");
            self.stdin.take();
            let _ = self.supervisor.wait();
        }
    }
}

/// Removes `dir` once this process has exited (however it exits), for a
/// control plane that is never dropped: the shared one lives in a `static`.
/// Keep the returned guard for as long as the directory is in use.
pub fn remove_on_exit(dir: &Path) -> anyhow::Result<Child> {
    Command::new("bash")
        .arg("-c")
        // After the components' own supervisors have stopped them (5 s).
        .arg(r#"read -r _ || true; sleep 7; rm -rf "$1""#)
        .arg("capstan-reaper")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting the reaper of {}", dir.display()))
}
