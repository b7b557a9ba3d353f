//! Liveness and readiness, as `/healthz` and `/readyz` report them.
//!
//! `/healthz` answers 200 while the process serves at all. `/readyz` runs
//! named checks and answers 503 listing the failing ones, in the
//! `[+]name ok` / `[-]name failed: why` shape Kubernetes components use.

use std::sync::{Arc, RwLock};

/// A check's result: `Err` carries why it fails, for the `/readyz` body.
pub type CheckResult = Result<(), String>;

type Check = Arc<dyn Fn() -> CheckResult + Send + Sync>;

/// The readiness checks of a process; cheap to clone.
#[derive(Clone, Default)]
pub struct Health {
    checks: Arc<RwLock<Vec<(String, Check)>>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.report().into_iter().map(|(n, _)| n).collect();
        f.debug_struct("Health").field("checks", &names).finish()
    }
}

impl Health {
    /// Adds a readiness check named `name` that passes or fails without
    /// saying why.
    pub fn add_check(&self, name: &str, check: impl Fn() -> bool + Send + Sync + 'static) {
        self.add_check_with_reason(
            name,
            move || if check() { Ok(()) } else { Err(String::new()) },
        );
    }

    /// Adds a readiness check named `name` whose failure says why.
    pub fn add_check_with_reason(
        &self,
        name: &str,
        check: impl Fn() -> CheckResult + Send + Sync + 'static,
    ) {
        self.checks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((name.to_owned(), Arc::new(check)));
    }

    /// Each check's name and result, in the order added.
    #[must_use]
    pub fn report(&self) -> Vec<(String, CheckResult)> {
        self.checks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(name, check)| (name.clone(), check()))
            .collect()
    }
}

/// The `/readyz` body and whether every check passed.
#[must_use]
pub fn readiness_body(report: &[(String, CheckResult)]) -> (bool, String) {
    let ready = report.iter().all(|(_, result)| result.is_ok());
    let mut body: String = report
        .iter()
        .map(|(name, result)| match result {
            Ok(()) => format!("[+]{name} ok\n"),
            Err(why) if why.is_empty() => format!("[-]{name} failed\n"),
            Err(why) => format!("[-]{name} failed: {why}\n"),
        })
        .collect();
    body.push_str(if ready {
        "readyz check passed\n"
    } else {
        "readyz check failed\n"
    });
    (ready, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn readiness_lists_failing_checks() {
        let health = Health::default();
        let flag = Arc::new(AtomicBool::new(false));
        let seen = flag.clone();
        health.add_check("controllers", move || seen.load(Ordering::SeqCst));
        health.add_check("metrics-tls", || true);
        let (ready, body) = readiness_body(&health.report());
        assert!(!ready);
        assert!(body.contains("[-]controllers failed"), "{body}");
        assert!(body.contains("[+]metrics-tls ok"), "{body}");
        flag.store(true, Ordering::SeqCst);
        let (ready, body) = readiness_body(&health.report());
        assert!(ready, "{body}");
    }

    #[test]
    fn a_failing_check_says_why() {
        let health = Health::default();
        health.add_check_with_reason("crds", || Err("cabundles.capstan.dev is missing".into()));
        let (ready, body) = readiness_body(&health.report());
        assert!(!ready);
        assert!(
            body.contains("[-]crds failed: cabundles.capstan.dev is missing\n"),
            "{body}"
        );
    }
}
