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

use k8s_openapi::api::coordination::v1::Lease;
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
        LeaseManagerError::KubeError(e) if crate::api::is_conflict(e) => true,
        LeaseManagerError::KubeError(kube::Error::Api(status)) => {
            status.code >= 500 || status.code == 429
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

/// Whether a Lease is free: its holder released it (or it never had one).
#[must_use]
pub fn is_free(lease: &Lease) -> bool {
    lease
        .spec
        .as_ref()
        .and_then(|spec| spec.holder_identity.as_deref())
        .is_none_or(str::is_empty)
}

/// A manager for `config`'s Lease; building it reads the Lease (creating it
/// when missing).
async fn manager(
    client: kube::Client,
    config: &LeaseConfig,
) -> Result<LeaseManager, LeaseManagerError> {
    let seconds = |d: Duration| d.as_secs().max(1);
    LeaseManagerBuilder::new(client, &config.name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_duration(seconds(config.duration))
        .with_grace(seconds(config.grace))
        .with_field_manager(format!("{}/{}", config.name, config.identity))
        .build()
        .await
}

/// A tick each time `config`'s Lease is seen free, from a watch on that one
/// Lease. Watch errors are retried with backoff (a follower then still
/// takes over when the lease expires, only later).
fn freed(
    client: kube::Client,
    config: &LeaseConfig,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let api: kube::Api<Lease> = kube::Api::namespaced(client, &config.namespace);
    let selector = watcher::Config::default().fields(&format!("metadata.name={}", config.name));
    watcher(api, selector)
        .backoff(crate::backoff::WatchBackoff::default())
        .applied_objects()
        .filter_map(|lease| {
            std::future::ready(match lease {
                Ok(lease) => is_free(&lease).then_some(()),
                Err(error) => {
                    tracing::debug!(%error, "watching the leader-election Lease");
                    None
                }
            })
        })
}

/// Starts campaigning for the lease. The task runs until every
/// [`Leadership`] clone is dropped, then releases the lease; the process
/// should exit if it ends while still wanted. Changes of leadership are
/// logged until `shutdown` fires (the log keeps no [`Leadership`] of its
/// own after that, so it cannot hold the lease past the drain).
///
/// kube-lease-manager's follower looks at the Lease again only when it
/// would expire; a follower here also watches the Lease and campaigns anew
/// the moment its holder releases it, so a replica that stops hands over at
/// once instead of a lease duration later.
///
/// # Errors
/// When the Lease cannot be read or created.
pub async fn campaign(
    client: kube::Client,
    config: &LeaseConfig,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<(Leadership, JoinHandle<Result<(), LeaseManagerError>>), LeaseManagerError> {
    let first = manager(client.clone(), config).await?;
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(hold(first, client, config.clone(), tx));
    let identity = config.identity.clone();
    let name = config.name.clone();
    let mut log_rx = rx.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                changed = log_rx.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let leader = *log_rx.borrow_and_update();
                    tracing::info!(lease = %name, identity = %identity, leader, "leadership changed");
                }
            }
        }
    });
    Ok((Leadership { rx, _fixed: None }, task))
}

/// Runs managers for the lease, one after the other, forwarding whether
/// this replica leads to `tx`: a new one each time the Lease is released
/// while this replica follows; until `tx` has no receivers left, when the
/// current manager releases the lease (if held) and this returns.
///
/// A follower's manager is aborted, not asked to release: it holds nothing,
/// and kube-lease-manager's release of a lease it believes expired can race
/// the new holder's lock and panic on the conflict.
async fn hold(
    first: LeaseManager,
    client: kube::Client,
    config: LeaseConfig,
    tx: watch::Sender<bool>,
) -> Result<(), LeaseManagerError> {
    use futures::StreamExt;
    let mut freed = std::pin::pin!(freed(client.clone(), &config));
    let mut next = Some(first);
    loop {
        let current = match next.take() {
            Some(m) => m,
            None => match rebuild(&client, &config, &tx).await? {
                Some(m) => m,
                None => return Ok(()),
            },
        };
        let (mut leading, task) = current.watch().await;
        let now = *leading.borrow();
        tx.send_if_modified(|leader| std::mem::replace(leader, now) != now);
        let (again, leader) = loop {
            let leader = *leading.borrow();
            tokio::select! {
                () = tx.closed() => break (false, leader),
                changed = leading.changed() => {
                    if changed.is_err() {
                        // The manager ended on its own: an error.
                        break (false, true);
                    }
                    let now = *leading.borrow_and_update();
                    tx.send_if_modified(|leader| std::mem::replace(leader, now) != now);
                }
                Some(()) = freed.next(), if !leader => break (true, false),
            }
        };
        drop(leading);
        if leader {
            match task.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(e) => return Err(LeaseManagerError::InconsistentState(e.to_string())),
            }
        } else {
            task.abort();
            let _ = task.await;
        }
        if !again {
            tx.send_if_modified(|leader| std::mem::replace(leader, false));
            return Ok(());
        }
        tracing::debug!(lease = %config.name, "the Lease was released; campaigning for it");
    }
}

/// A new manager for the lease, retried while the API server fails in a
/// way that may pass; `None` when nobody wants leadership any more.
async fn rebuild(
    client: &kube::Client,
    config: &LeaseConfig,
    tx: &watch::Sender<bool>,
) -> Result<Option<LeaseManager>, LeaseManagerError> {
    let mut retry = crate::backoff::WatchBackoff::default();
    loop {
        match manager(client.clone(), config).await {
            Ok(m) => return Ok(Some(m)),
            Err(e) if is_transient(&e) => {
                let wait = retry.next().unwrap_or(crate::backoff::Policy::WATCH.max);
                tracing::warn!(error = %e, retry_in = ?wait, "could not campaign for the released Lease; retrying");
                tokio::select! {
                    () = tx.closed() => return Ok(None),
                    () = tokio::time::sleep(wait) => {}
                }
            }
            Err(e) => return Err(e),
        }
    }
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

    #[test]
    fn a_lease_without_a_holder_is_free() {
        use k8s_openapi::api::coordination::v1::LeaseSpec;
        let lease = |holder: Option<&str>| Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        assert!(is_free(&lease(None)));
        assert!(is_free(&lease(Some(""))));
        assert!(is_free(&Lease::default()));
        assert!(!is_free(&lease(Some("issuer-0-7"))));
    }
}
