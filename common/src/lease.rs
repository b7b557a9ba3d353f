//! Leader election on a `coordination.k8s.io` Lease, so two replicas are safe.
//!
//! Leadership is a watch channel: controllers keep watching and planning on
//! every replica (followers stay warm) and only the writes are gated on
//! [`Leadership::is_leader`]. The lease itself is kept by
//! `kube-lease-manager`, which writes it with server-side apply and so cannot
//! hand it to two holders at once. A replica that cannot renew in time stops
//! being leader before the lease expires for the others (`grace`).

use std::sync::Arc;
use std::time::Duration;

use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where and how to hold the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease, one per component (`capstan-issuer`, ...).
    pub name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a lease is valid after its last renewal.
    pub duration: Duration,
    /// How long before expiry the holder renews.
    pub grace: Duration,
}

/// Whether this replica may write.
#[derive(Debug, Clone)]
pub struct Leadership {
    rx: watch::Receiver<bool>,
    /// Keeps the channel of [`Leadership::always`] open.
    _fixed: Option<Arc<watch::Sender<bool>>>,
}

impl Leadership {
    /// Always leader: for `--leader-elect=false`, a single replica.
    #[must_use]
    pub fn always() -> Self {
        let (tx, rx) = watch::channel(true);
        Self {
            rx,
            _fixed: Some(Arc::new(tx)),
        }
    }

    /// Never leader: for a process told to stop before it could campaign,
    /// so it drains and exits like any other.
    #[must_use]
    pub fn never() -> Self {
        let (tx, rx) = watch::channel(false);
        Self {
            rx,
            _fixed: Some(Arc::new(tx)),
        }
    }

    /// Whether this replica is the leader now.
    #[must_use]
    pub fn is_leader(&self) -> bool {
        *self.rx.borrow()
    }

    /// Waits until this replica is the leader.
    ///
    /// # Errors
    /// When the election task has ended.
    pub async fn acquired(&mut self) -> Result<(), watch::error::RecvError> {
        self.rx.wait_for(|leader| *leader).await.map(|_| ())
    }

    /// A stream that yields each time this replica becomes the leader (and
    /// once at the start if it already is): the moment to resync everything.
    pub fn gained(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        use futures::StreamExt;
        tokio_stream::wrappers::WatchStream::new(self.rx.clone())
            .filter_map(|leader| std::future::ready(leader.then_some(())))
    }

    /// Waits for the next change of leadership.
    ///
    /// # Errors
    /// When the election task has ended.
    pub async fn changed(&mut self) -> Result<bool, watch::error::RecvError> {
        self.rx.changed().await?;
        Ok(*self.rx.borrow_and_update())
    }
}

/// Whether starting the campaign failed for a reason that may pass: the API
/// server answered 5xx, 429 or 409 (another replica created the Lease at the
/// same moment), could not be reached, or cut the response short. Anything
/// else (no permission, a malformed Lease) will not fix itself.
#[must_use]
pub fn is_transient(error: &LeaseManagerError) -> bool {
    match error {
        LeaseManagerError::KubeError(kube::Error::Api(status)) => {
            status.code >= 500 || status.code == 429 || status.code == 409
        }
        LeaseManagerError::KubeError(
            kube::Error::HyperError(_)
            | kube::Error::Service(_)
            | kube::Error::ReadEvents(_)
            | kube::Error::SerdeError(_),
        )
        | LeaseManagerError::LeaseAlreadyExists(_) => true,
        _ => false,
    }
}

/// Starts campaigning for the lease. The task runs until every
/// [`Leadership`] clone is dropped, then releases the lease; the process
/// should exit if it ends while still wanted.
///
/// # Errors
/// When the Lease cannot be read or created.
pub async fn campaign(
    client: kube::Client,
    config: &LeaseConfig,
) -> Result<
    (
        Leadership,
        JoinHandle<Result<LeaseManager, LeaseManagerError>>,
    ),
    LeaseManagerError,
> {
    let seconds = |d: Duration| d.as_secs().max(1);
    let manager = LeaseManagerBuilder::new(client, &config.name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_duration(seconds(config.duration))
        .with_grace(seconds(config.grace))
        .with_field_manager(format!("{}/{}", config.name, config.identity))
        .build()
        .await?;
    let (rx, task) = manager.watch().await;
    let identity = config.identity.clone();
    let name = config.name.clone();
    let mut log_rx = rx.clone();
    tokio::spawn(async move {
        while log_rx.changed().await.is_ok() {
            let leader = *log_rx.borrow_and_update();
            tracing::info!(lease = %name, identity = %identity, leader, "leadership changed");
        }
    });
    Ok((Leadership { rx, _fixed: None }, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> LeaseManagerError {
        LeaseManagerError::KubeError(kube::Error::Api(Box::new(
            kube::core::Status::failure("x", "y").with_code(code),
        )))
    }

    #[test]
    fn server_hiccups_are_retried_and_refusals_are_not() {
        for code in [500, 503, 429, 409] {
            assert!(is_transient(&api(code)), "{code}");
        }
        for code in [401, 403, 404, 422] {
            assert!(!is_transient(&api(code)), "{code}");
        }
        assert!(is_transient(&LeaseManagerError::LeaseAlreadyExists(
            "l".into()
        )));
        assert!(!is_transient(&LeaseManagerError::InconsistentState(
            "bug".into()
        )));
    }
}
