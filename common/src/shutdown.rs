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
