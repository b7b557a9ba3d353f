//! Dynamic serving TLS, as cert-manager's `--metrics-dynamic-serving-*`
//! flags do it: a CA kept in a Secret shared by all replicas, and a serving
//! certificate each replica signs for itself.
//!
//! * The first replica to find the Secret missing creates it; a replica that
//!   loses the create race uses the winner's CA.
//! * A CA that is unreadable or in the last third of its life is replaced
//!   (a resourceVersion-guarded update: one replica wins, all follow).
//! * Each replica signs its serving certificate with the CA in the Secret,
//!   renews it after two thirds of its life, and signs a new one as soon as
//!   the CA in the Secret changes.
//!
//! Deciding what to do ([`decide`]) is pure; [`run`] does the API calls.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use rustls::crypto::CryptoProvider;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::certs::{CertSlot, certified_key};
use crate::error::Error;

/// Lifetime of a CA this process generates.
pub const CA_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Default lifetime of each replica's serving certificate, as cert-manager's
/// `--metrics-dynamic-serving-leaf-duration` defaults it.
pub const LEAF_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// Shortest serving certificate lifetime accepted: renewal happens after two
/// thirds of it, so shorter would mean re-signing every few seconds.
pub const MIN_LEAF_LIFETIME: Duration = Duration::from_secs(30);
/// How often the Secret is looked at even without a watch event.
const RECHECK: Duration = Duration::from_secs(60);

/// Where the CA lives and which names the serving certificate carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicConfig {
    /// Namespace of the CA Secret.
    pub namespace: String,
    /// Name of the CA Secret.
    pub name: String,
    /// DNS names of the serving certificate.
    pub dns_names: Vec<String>,
    /// Lifetime of each serving certificate; renewed after two thirds.
    pub leaf_lifetime: Duration,
}

/// What to do with the CA Secret as found.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// No Secret: create one with a new CA.
    Create,
    /// The Secret's CA cannot serve (unreadable, expired, or in the last
    /// third of its life): replace it, guarded by this resourceVersion.
    Replace {
        /// The Secret's resourceVersion.
        resource_version: String,
        /// Why, for the log.
        reason: String,
    },
    /// Sign with the Secret's CA.
    Use,
}

/// The CA key pair stored in the Secret (`tls.crt`, `tls.key`).
fn ca_material(secret: &Secret) -> Option<(Vec<u8>, Vec<u8>)> {
    let data = secret.data.as_ref()?;
    let get = |k: &str| data.get(k).map(|b| b.0.clone());
    Some((get("tls.crt")?, get("tls.key")?))
}

/// Decides what to do with the Secret as found at `now`.
#[must_use]
pub fn decide(secret: Option<&Secret>, now: OffsetDateTime) -> Decision {
    let Some(secret) = secret else {
        return Decision::Create;
    };
    let resource_version = secret.metadata.resource_version.clone().unwrap_or_default();
    let replace = |reason: String| Decision::Replace {
        resource_version: resource_version.clone(),
        reason,
    };
    let Some((crt, key)) = ca_material(secret) else {
        return replace("the Secret has no tls.crt and tls.key".into());
    };
    match capstan_pki::SigningCa::from_pem(&crt, &key, None, now) {
        Err(e) => replace(format!("its CA cannot sign: {e}")),
        Ok(ca) => {
            let s = ca.summary();
            let life = s.not_after - s.not_before;
            if s.not_after - now < life / 3 {
                replace(format!("its CA expires at {}", s.not_after))
            } else {
                Decision::Use
            }
        }
    }
}

/// A new CA Secret (the object to create or the content to replace with).
fn ca_secret(config: &DynamicConfig, now: OffsetDateTime) -> Result<Secret, Error> {
    let ca = capstan_pki::generate_ca(
        &capstan_pki::CaSpec {
            common_name: format!("{} metrics serving CA", config.name),
            organization: Some("capstan".into()),
            algorithm: capstan_pki::KeyAlgorithm::EcdsaP256,
            lifetime: CA_LIFETIME,
        },
        now,
    )?;
    let data = BTreeMap::from([
        (
            "tls.crt".to_owned(),
            ByteString(ca.cert_pem.clone().into_bytes()),
        ),
        (
            "tls.key".to_owned(),
            ByteString(ca.key.expose().as_bytes().to_vec()),
        ),
        ("ca.crt".to_owned(), ByteString(ca.cert_pem.into_bytes())),
    ]);
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(config.name.clone()),
            namespace: Some(config.namespace.clone()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "capstan".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Secret::default()
    })
}

/// Per-replica state: which CA the served certificate came from and when to
/// renew it.
struct Serving {
    config: DynamicConfig,
    slot: Arc<CertSlot>,
    provider: Arc<CryptoProvider>,
    ca_fingerprint: Option<String>,
    renew_at: Option<OffsetDateTime>,
}

impl Serving {
    /// Signs and serves a new certificate when the CA changed or renewal is due.
    fn refresh(&mut self, secret: &Secret, now: OffsetDateTime) -> Result<(), Error> {
        let Some((crt, key)) = ca_material(secret) else {
            return Ok(());
        };
        let ca = capstan_pki::SigningCa::from_pem(&crt, &key, None, now)?;
        let fingerprint = ca.summary().fingerprint.clone();
        let rotated = self
            .ca_fingerprint
            .as_ref()
            .is_some_and(|f| *f != fingerprint);
        let due = self.renew_at.is_none_or(|at| now >= at);
        if !rotated && !due && self.ca_fingerprint.is_some() {
            return Ok(());
        }
        if rotated {
            tracing::info!(
                secret = %format!("{}/{}", self.config.namespace, self.config.name),
                "Detected root CA rotation - regenerating serving certificates"
            );
        }
        let leaf = ca.issue_serving(&self.config.dns_names, self.config.leaf_lifetime, now)?;
        let served = certified_key(
            leaf.chain_pem.as_bytes(),
            leaf.key.expose().as_bytes(),
            &self.provider,
            "the dynamic serving certificate",
        )?;
        self.slot.set(served);
        let life = leaf.summary.not_after - leaf.summary.not_before;
        self.renew_at = Some(leaf.summary.not_before + life * 2 / 3);
        self.ca_fingerprint = Some(fingerprint);
        tracing::info!(
            dns_names = ?self.config.dns_names,
            serial = %leaf.summary.serial,
            not_after = %leaf.summary.not_after,
            "Updated serving TLS certificate"
        );
        Ok(())
    }
}

/// Makes the Secret hold a usable CA, creating or replacing it as
/// [`decide`] says; returns the Secret to sign with.
async fn ensure_ca(
    api: &Api<Secret>,
    config: &DynamicConfig,
    found: Option<Secret>,
) -> Result<Secret, Error> {
    let now = OffsetDateTime::now_utc();
    let action = format!("Secret {}/{}", config.namespace, config.name);
    match decide(found.as_ref(), now) {
        Decision::Use => found.ok_or_else(|| Error::Config("no Secret to use".into())),
        Decision::Create => match api
            .create(&PostParams::default(), &ca_secret(config, now)?)
            .await
        {
            Ok(created) => {
                tracing::info!(secret = %action, "created the metrics serving CA");
                Ok(created)
            }
            Err(e) if crate::api::is_conflict(&e) => {
                tracing::info!(secret = %action, "another replica created the metrics serving CA; using it");
                api.get(&config.name)
                    .await
                    .map_err(|e| Error::kube(format!("reading {action}"), e))
            }
            Err(e) => Err(Error::kube(format!("creating {action}"), e)),
        },
        Decision::Replace {
            resource_version,
            reason,
        } => {
            let mut fresh = ca_secret(config, now)?;
            fresh.metadata.resource_version = Some(resource_version);
            if let Some(existing) = found {
                fresh.metadata.labels = existing.metadata.labels.or(fresh.metadata.labels);
                fresh.metadata.annotations = existing.metadata.annotations;
            }
            match api
                .replace(&config.name, &PostParams::default(), &fresh)
                .await
            {
                Ok(replaced) => {
                    tracing::info!(secret = %action, %reason, "replaced the metrics serving CA");
                    Ok(replaced)
                }
                Err(e) if crate::api::is_conflict(&e) => api
                    .get(&config.name)
                    .await
                    .map_err(|e| Error::kube(format!("reading {action}"), e)),
                Err(e) => Err(Error::kube(format!("replacing {action}"), e)),
            }
        }
    }
}

/// How long to sleep before looking again: until renewal is due (at least
/// a second, so a renewal that failed is retried soon, not after the time
/// it is overdue by), and never longer than [`RECHECK`].
fn next_check(renew_at: Option<OffsetDateTime>, now: OffsetDateTime) -> Duration {
    let Some(at) = renew_at else {
        return RECHECK;
    };
    let until = at - now;
    if until.is_negative() {
        return Duration::from_secs(1);
    }
    until.unsigned_abs().clamp(Duration::from_secs(1), RECHECK)
}

/// Keeps `slot` serving a certificate signed by the CA in the configured
/// Secret until `shutdown`. Errors are logged and retried; they never end
/// the loop.
pub async fn run(
    client: Client,
    config: DynamicConfig,
    slot: Arc<CertSlot>,
    provider: Arc<CryptoProvider>,
    shutdown: CancellationToken,
) {
    let api: Api<Secret> = Api::namespaced(client, &config.namespace);
    let selector = format!("metadata.name={}", config.name);
    let mut events = watcher(api.clone(), watcher::Config::default().fields(&selector)).boxed();
    let mut serving = Serving {
        config: config.clone(),
        slot,
        provider,
        ca_fingerprint: None,
        renew_at: None,
    };
    let mut latest: Option<Secret> = None;
    let mut synced = false;
    loop {
        let wake = next_check(serving.renew_at, OffsetDateTime::now_utc());
        let mut check = false;
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wake) => check = synced,
            event = events.next() => match event {
                Some(Ok(watcher::Event::Init)) => latest = None,
                Some(Ok(watcher::Event::InitApply(s))) => latest = Some(s),
                Some(Ok(watcher::Event::InitDone)) => { synced = true; check = true; }
                Some(Ok(watcher::Event::Apply(s))) => { latest = Some(s); check = true; }
                Some(Ok(watcher::Event::Delete(_))) => { latest = None; check = true; }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "watching the metrics serving CA Secret");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                None => return,
            },
        }
        if !check {
            continue;
        }
        match ensure_ca(&api, &config, latest.clone()).await {
            Ok(secret) => {
                if let Err(e) = serving.refresh(&secret, OffsetDateTime::now_utc()) {
                    tracing::error!(error = %e, "could not sign the metrics serving certificate");
                }
                latest = Some(secret);
            }
            Err(e) => {
                tracing::error!(error = %e, "could not prepare the metrics serving CA; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn config() -> DynamicConfig {
        DynamicConfig {
            namespace: "capstan".into(),
            name: "metrics-ca".into(),
            dns_names: vec!["capstan-issuer.capstan.svc".into()],
            leaf_lifetime: LEAF_LIFETIME,
        }
    }

    fn with_rv(mut s: Secret) -> Secret {
        s.metadata.resource_version = Some("7".into());
        s
    }

    #[test]
    fn an_overdue_renewal_is_retried_within_a_second() {
        let now = OffsetDateTime::now_utc();
        assert_eq!(next_check(None, now), RECHECK);
        let overdue = now - time::Duration::seconds(50);
        assert_eq!(next_check(Some(overdue), now), Duration::from_secs(1));
        let soon = now + time::Duration::seconds(7);
        assert_eq!(next_check(Some(soon), now), Duration::from_secs(7));
        let later = now + time::Duration::hours(5);
        assert_eq!(next_check(Some(later), now), RECHECK);
    }

    #[test]
    fn missing_secret_is_created() {
        assert_eq!(decide(None, OffsetDateTime::now_utc()), Decision::Create);
    }

    #[test]
    fn a_fresh_ca_is_used() {
        let now = OffsetDateTime::now_utc();
        let s = with_rv(ca_secret(&config(), now).expect("secret"));
        assert_eq!(decide(Some(&s), now), Decision::Use);
    }

    #[test]
    fn an_ageing_ca_is_replaced_with_a_guard() {
        let then = OffsetDateTime::now_utc();
        let s = with_rv(ca_secret(&config(), then).expect("secret"));
        let late = then + time::Duration::days(300);
        match decide(Some(&s), late) {
            Decision::Replace {
                resource_version,
                reason,
            } => {
                assert_eq!(resource_version, "7");
                assert!(reason.contains("expires"), "{reason}");
            }
            other => panic!("expected Replace, got {other:?}"),
        }
    }

    #[test]
    fn a_secret_without_a_key_is_replaced() {
        let now = OffsetDateTime::now_utc();
        let mut s = with_rv(ca_secret(&config(), now).expect("secret"));
        s.data.as_mut().expect("data").remove("tls.key");
        assert!(matches!(decide(Some(&s), now), Decision::Replace { .. }));
    }

    #[test]
    fn a_ca_change_regenerates_the_serving_certificate() {
        let now = OffsetDateTime::now_utc();
        let slot = Arc::new(CertSlot::default());
        let mut serving = Serving {
            config: config(),
            slot: slot.clone(),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            ca_fingerprint: None,
            renew_at: None,
        };
        let first = ca_secret(&config(), now).expect("secret");
        serving.refresh(&first, now).expect("first");
        let served = slot.current().expect("served");
        serving.refresh(&first, now).expect("unchanged");
        assert_eq!(
            slot.current().expect("served").cert,
            served.cert,
            "no change, no new cert"
        );
        let second = ca_secret(&config(), now).expect("secret");
        serving.refresh(&second, now).expect("rotated");
        assert_ne!(slot.current().expect("served").cert, served.cert);
        let later = now + time::Duration::days(6);
        let before = slot.current().expect("served");
        serving.refresh(&second, later).expect("renewed");
        assert_ne!(
            slot.current().expect("served").cert,
            before.cert,
            "renewed when due"
        );
    }
}
