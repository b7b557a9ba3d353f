//! Graceful shutdown: SIGTERM (what the kubelet sends) or SIGINT (Ctrl-C)
//! cancels one token that every controller and server of the process holds.

use tokio_util::sync::CancellationToken;

/// Returns a token cancelled by the first SIGTERM or SIGINT.
///
/// Must be called inside a Tokio runtime. A second signal is not handled
/// specially: the first one has already started the drain.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub fn on_signal() -> std::io::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};

    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let fired = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutting down");
        fired.cancel();
    });
    Ok(token)
}

/// How long a controller (or a server with connections open) may take to
/// finish its work in flight after the shutdown signal before that work is
/// abandoned.
pub const DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs `work` (a controller, told to stop by `shutdown` itself) and, once
/// `shutdown` fires, gives it [`DRAIN`] to finish before dropping it.
///
/// kube-runtime's controllers drain gracefully only once their caches have
/// synced: told to stop during the first list (an API server that is slow,
/// failing or unreachable) they would wait for a sync that never comes.
/// Abandoned work is safe to drop: every write capstan makes is guarded
/// by a resourceVersion or is idempotent, and is redone by the next leader.
pub async fn drained<F>(what: &str, work: F, shutdown: &CancellationToken)
where
    F: std::future::Future<Output = ()>,
{
    let mut work = std::pin::pin!(work);
    tokio::select! {
        () = &mut work => return,
        () = shutdown.cancelled() => {}
    }
    if tokio::time::timeout(DRAIN, work).await.is_err() {
        tracing::warn!(
            controller = what,
            grace = ?DRAIN,
            "did not stop in time; abandoning its work in flight"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn work_that_ignores_the_signal_is_dropped_after_the_grace() {
        let token = CancellationToken::new();
        token.cancel();
        let started = tokio::time::Instant::now();
        drained("stuck", std::future::pending(), &token).await;
        assert_eq!(started.elapsed(), DRAIN);
    }

    #[tokio::test(start_paused = true)]
    async fn work_that_stops_is_awaited_to_its_end() {
        let token = CancellationToken::new();
        let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen, stop) = (finished.clone(), token.clone());
        let work = async move {
            stop.cancelled().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            seen.store(true, std::sync::atomic::Ordering::SeqCst);
        };
        token.cancel();
        drained("draining", work, &token).await;
        assert!(finished.load(std::sync::atomic::Ordering::SeqCst));
    }
}
