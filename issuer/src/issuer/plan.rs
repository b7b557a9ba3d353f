//! What to do with one issuer, decided from what the reconcile read (pure).
//!
//! [`plan`] turns the issuer's spec, its CA Secret as read and the clock
//! into a [`Decision`]: report a health (with the CA to sign with, when
//! there is one), create the self-managed CA Secret, or write the next
//! rotation step into it. The controller reads, calls it and carries the
//! decision out; after a write it plans again from the Secret as written,
//! so every status the issuer shows is decided here.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;

use super::ca_secret::{self, StepWrite};
use super::status::{self, Health};
use crate::api::ca_issuer::{CaSummary, IssuerSpec, RotationStatus};
use crate::api::conditions::issuer as reason;
use crate::ca::rotation::{self, RotationState, Step};
use crate::policy::{self, CaSource, IssuerPolicy, SelfManagedPolicy};
use crate::signing::{CaMaterial, CaProblem, ReadyCa};

/// Recheck of an issuer that is not ready and may be fixed by the clock.
pub const NOT_READY_RECHECK: Duration = Duration::from_secs(60);
/// Recheck of a follower waiting for the leader to create the CA Secret.
const LEADER_WAIT_RECHECK: Duration = Duration::from_secs(5);

/// What the reconcile read about one issuer.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The issuer's name (a self-managed root's default common name).
    pub name: &'a str,
    /// Its spec.
    pub spec: &'a IssuerSpec,
    /// The namespace of its CA Secret.
    pub namespace: &'a str,
    /// The Secret [`secret_name`] names, as read; `None` when it does not
    /// exist (or the spec names none).
    pub secret: Option<&'a Secret>,
    /// The issuer's `capstan.dev/rotate` annotation.
    pub trigger: Option<&'a str>,
    /// Whether this replica may write (holds the Lease).
    pub leader: bool,
    /// Now.
    pub now: Timestamp,
}

/// What to report for an issuer.
#[derive(PartialEq)]
pub struct Report {
    /// Its health, for the status and metrics.
    pub health: Health,
    /// When to look again by the clock alone; `None`: on a change only.
    pub recheck: Option<Duration>,
    /// The CA to sign with, when ready.
    pub ca: Option<ReadyCa>,
}

/// Shows the CA by its summary: a [`ReadyCa`] holds the private key.
impl std::fmt::Debug for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Report")
            .field("health", &self.health)
            .field("recheck", &self.recheck)
            .field("ca", &self.ca.as_ref().map(ReadyCa::summary))
            .finish()
    }
}

impl Report {
    /// Not ready, for `reason` (from [`reason`]) and `message`.
    #[must_use]
    pub fn not_ready(reason: &'static str, message: String, recheck: Option<Duration>) -> Self {
        Self {
            health: Health::NotReady { reason, message },
            recheck,
            ca: None,
        }
    }

    /// Not ready because CA Secret `secret` (`namespace/name`) cannot be
    /// used, for `problem`.
    #[must_use]
    pub fn unusable_secret(secret: &str, problem: &str) -> Self {
        Self::not_ready(
            reason::INVALID_KEY_PAIR,
            format!("CA Secret {secret}: {problem}"),
            Some(NOT_READY_RECHECK),
        )
    }
}

/// What the controller should do.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Show this, change nothing (boxed: it carries the loaded CA).
    Report(Box<Report>),
    /// Create the self-managed CA Secret with a fresh root (leader only).
    Create(SelfManagedPolicy),
    /// Write the next rotation step into the CA Secret (leader only).
    Step(StepWrite),
}

fn report(report: Report) -> Decision {
    Decision::Report(Box::new(report))
}

/// The Secret an issuer's CA lives in, if its spec names one (an empty
/// name is none: [`plan`] reports it as an invalid spec).
#[must_use]
pub fn secret_name(spec: &IssuerSpec) -> Option<&str> {
    spec.ca
        .as_ref()
        .map(|c| c.secret_name.as_str())
        .or_else(|| spec.self_managed.as_ref().map(|m| m.secret_name.as_str()))
        .filter(|name| !name.is_empty())
}

/// Decides what to do with the issuer `observed` describes.
#[must_use]
pub fn plan(observed: &Observed<'_>) -> Decision {
    let policy = match policy::resolve(observed.name, observed.spec) {
        Ok(policy) => policy,
        Err(e) => {
            return report(Report::not_ready(reason::INVALID_SPEC, e.to_string(), None));
        }
    };
    match &policy.source {
        CaSource::Secret { secret_name } => {
            let secret = format!("{}/{secret_name}", observed.namespace);
            let Some(found) = observed.secret else {
                return report(Report::not_ready(
                    reason::SECRET_NOT_FOUND,
                    format!("CA Secret {secret} does not exist"),
                    None,
                ));
            };
            let Some(material) = ca_secret::material(found) else {
                return report(Report::not_ready(
                    reason::INVALID_KEY_PAIR,
                    format!("CA Secret {secret} must hold tls.crt and tls.key"),
                    None,
                ));
            };
            let published = Published {
                cas: ca_secret::published_cas(found, observed.now),
                ..Published::default()
            };
            report(load(&material, &policy, &published, observed.now))
        }
        CaSource::SelfManaged(managed) => self_managed(observed, &policy, managed),
    }
}

/// [`plan`] for a self-managed CA.
fn self_managed(
    observed: &Observed<'_>,
    policy: &IssuerPolicy,
    managed: &SelfManagedPolicy,
) -> Decision {
    let secret = format!("{}/{}", observed.namespace, managed.secret_name);
    let Some(found) = observed.secret else {
        if observed.leader {
            return Decision::Create(managed.clone());
        }
        return report(Report::not_ready(
            reason::SECRET_NOT_FOUND,
            format!("waiting for the leader to create CA Secret {secret}"),
            Some(LEADER_WAIT_RECHECK),
        ));
    };
    let state = match ca_secret::state(found, observed.now) {
        Ok(state) => state,
        Err(problem) => return report(Report::unusable_secret(&secret, &problem)),
    };
    let timing = ca_secret::timing(policy, managed);
    let next = rotation::plan(&state.rotation, &timing, observed.trigger, observed.now);
    if next.step != Step::Idle && observed.leader {
        return Decision::Step(StepWrite {
            managed: managed.clone(),
            step: next.step,
            record: state.record,
            trigger: observed.trigger.map(str::to_owned),
        });
    }
    let Some(material) = ca_secret::material(found) else {
        return report(Report::unusable_secret(
            &secret,
            "tls.crt or tls.key is missing",
        ));
    };
    let published = Published {
        cas: state.bundle,
        rotation: Some(status::rotation_status(&state.rotation, &timing)),
        last_rotation: state.record.last_rotation_time,
        step_at: next.recheck_at.map(|at| until(observed.now, at)),
        state: Some(state.rotation),
    };
    report(load(&material, policy, &published, observed.now))
}

/// What an issuer publishes besides its signing CA, for the status.
#[derive(Debug, Default)]
struct Published {
    /// The CAs of the published bundle, newest first.
    cas: Vec<CaSummary>,
    /// The rotation state (self-managed only).
    state: Option<RotationState>,
    /// Where the rotation stands (self-managed only).
    rotation: Option<RotationStatus>,
    /// When signing last switched CAs (self-managed only).
    last_rotation: Option<Timestamp>,
    /// When the next rotation step is due by the clock.
    step_at: Option<Duration>,
}

/// Loads the CA from `material`: Ready, looking again when it expires or
/// at the next rotation step, whichever is first.
fn load(
    material: &CaMaterial,
    policy: &IssuerPolicy,
    published: &Published,
    now: Timestamp,
) -> Report {
    let ca = match ReadyCa::load(material, policy, now) {
        Ok(ca) => ca,
        Err(CaProblem { reason, message }) => {
            return Report::not_ready(reason, message, Some(NOT_READY_RECHECK));
        }
    };
    let expires_in = until(now, ca.not_after());
    let summary = ca.summary();
    Report {
        health: Health::Ready {
            bundle: status::bundle(
                &published.cas,
                &summary.fingerprint,
                published.state.as_ref(),
            ),
            ca: summary,
            last_rotation_time: published.last_rotation.map(status::seconds),
            rotation: published.rotation.clone(),
        },
        recheck: [Some(expires_in), published.step_at]
            .into_iter()
            .flatten()
            .min(),
        ca: Some(ca),
    }
}

/// Time from `now` until `at`, zero if past.
fn until(now: Timestamp, at: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use kube::api::ObjectMeta;

    use super::*;
    use crate::api::ca_issuer::{CaSecretSource, SelfManagedCa};
    use crate::ca::layout;
    use k8s_openapi::jiff::SignedDuration;

    use crate::api::ca_issuer::{BundleCa, BundleRole, RotationPhase};
    use crate::ca::rotation::{PublishReason, Retired};
    use crate::signing;

    const NS: &str = "certs";

    fn now() -> Timestamp {
        Timestamp::now()
    }

    fn self_managed_spec() -> IssuerSpec {
        IssuerSpec {
            self_managed: Some(SelfManagedCa {
                secret_name: "root".into(),
                duration: Some("1h".into()),
                rotate_before: Some("20m".into()),
                propagation_delay: Some("1m".into()),
                ..SelfManagedCa::default()
            }),
            ..IssuerSpec::default()
        }
    }

    fn secret_spec() -> IssuerSpec {
        IssuerSpec {
            ca: Some(CaSecretSource {
                secret_name: "user-ca".into(),
            }),
            ..IssuerSpec::default()
        }
    }

    /// A self-managed CA Secret as `create` writes it, for `spec`.
    fn managed_secret(spec: &IssuerSpec, at: Timestamp) -> Secret {
        let policy = policy::resolve("monitoring-ca", spec).unwrap();
        let CaSource::SelfManaged(managed) = policy.source else {
            panic!("not self-managed")
        };
        let generated = signing::generate(&managed, at).unwrap();
        let pem = ByteString(generated.cert_pem.clone().into_bytes());
        let key = ByteString(generated.key.expose().as_bytes().to_vec());
        Secret {
            metadata: ObjectMeta {
                name: Some("root".into()),
                namespace: Some(NS.into()),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([
                (layout::TLS_CRT.to_owned(), pem.clone()),
                (layout::TLS_KEY.to_owned(), key),
                (layout::CA_CRT.to_owned(), pem.clone()),
                (layout::CA_BUNDLE.to_owned(), pem),
            ])),
            ..Secret::default()
        }
    }

    /// The status parts of a ready report.
    fn ready(report: &Report) -> (CaSummary, Vec<BundleCa>, Option<RotationStatus>) {
        match &report.health {
            Health::Ready {
                ca,
                bundle,
                rotation,
                ..
            } => (ca.clone(), bundle.clone(), rotation.clone()),
            other => panic!("expected ready, got {other:?}"),
        }
    }

    fn roles(bundle: &[BundleCa]) -> Vec<(String, BundleRole)> {
        bundle
            .iter()
            .map(|b| (b.fingerprint.clone(), b.role))
            .collect()
    }

    fn pem_of(secret: &Secret, key: &str) -> ByteString {
        secret.data.as_ref().unwrap()[key].clone()
    }

    fn fingerprint_of(secret: &Secret) -> String {
        signing::record(&pem_of(secret, layout::TLS_CRT).0)
            .unwrap()
            .fingerprint
    }

    fn observed<'a>(spec: &'a IssuerSpec, secret: Option<&'a Secret>) -> Observed<'a> {
        Observed {
            name: "monitoring-ca",
            spec,
            namespace: NS,
            secret,
            trigger: None,
            leader: true,
            now: now(),
        }
    }

    fn not_ready(decision: Decision) -> (&'static str, String, Option<Duration>) {
        match decision {
            Decision::Report(r) => match r.health {
                Health::NotReady { reason, message } => (reason, message, r.recheck),
                ready => panic!("expected not ready, got {ready:?}"),
            },
            other => panic!("expected a report, got {other:?}"),
        }
    }

    #[test]
    fn an_invalid_spec_is_reported_and_waits_for_a_change() {
        let spec = IssuerSpec::default();
        let (reason, message, recheck) = not_ready(plan(&observed(&spec, None)));
        assert_eq!(reason, reason::INVALID_SPEC);
        assert!(message.contains("selfManaged"), "{message}");
        assert_eq!(recheck, None);
    }

    #[test]
    fn an_empty_secret_name_names_no_secret_to_read() {
        let mut spec = secret_spec();
        assert_eq!(secret_name(&spec), Some("user-ca"));
        spec.ca = Some(CaSecretSource {
            secret_name: String::new(),
        });
        assert_eq!(secret_name(&spec), None);
        let (reason, message, _) = not_ready(plan(&observed(&spec, None)));
        assert_eq!(reason, reason::INVALID_SPEC);
        assert_eq!(message, "spec.ca.secretName: must not be empty");
    }

    #[test]
    fn a_user_secret_that_is_missing_or_incomplete_is_named() {
        let spec = secret_spec();
        let (reason, message, _) = not_ready(plan(&observed(&spec, None)));
        assert_eq!(reason, reason::SECRET_NOT_FOUND);
        assert_eq!(message, "CA Secret certs/user-ca does not exist");
        let empty = Secret::default();
        let (reason, message, _) = not_ready(plan(&observed(&spec, Some(&empty))));
        assert_eq!(reason, reason::INVALID_KEY_PAIR);
        assert_eq!(
            message,
            "CA Secret certs/user-ca must hold tls.crt and tls.key"
        );
    }

    #[test]
    fn a_user_secret_with_a_ca_loads_ready() {
        let spec = secret_spec();
        let mut secret = managed_secret(&self_managed_spec(), now());
        secret.metadata.name = Some("user-ca".into());
        let Decision::Report(report) = plan(&observed(&spec, Some(&secret))) else {
            panic!("expected a report")
        };
        let (ca, bundle, rotation) = ready(&report);
        assert_eq!(rotation, None, "a user's CA has no rotation");
        assert_eq!(bundle.len(), 1);
        assert_eq!(bundle[0].role, BundleRole::Signing);
        assert_eq!(bundle[0].fingerprint, ca.fingerprint);
        assert!(report.ca.is_some());
        // Looked at again no later than the CA's expiry (1h).
        assert!(
            report
                .recheck
                .is_some_and(|r| r <= Duration::from_secs(3600))
        );
    }

    #[test]
    fn only_the_leader_creates_a_missing_self_managed_secret() {
        let spec = self_managed_spec();
        assert!(matches!(
            plan(&observed(&spec, None)),
            Decision::Create(m) if m.secret_name == "root"
        ));
        let follower = Observed {
            leader: false,
            ..observed(&spec, None)
        };
        let (reason, message, recheck) = not_ready(plan(&follower));
        assert_eq!(reason, reason::SECRET_NOT_FOUND);
        assert_eq!(
            message,
            "waiting for the leader to create CA Secret certs/root"
        );
        assert_eq!(recheck, Some(LEADER_WAIT_RECHECK));
    }

    #[test]
    fn a_fresh_root_is_ready_until_its_rotation_point() {
        let spec = self_managed_spec();
        let secret = managed_secret(&spec, now());
        let Decision::Report(report) = plan(&observed(&spec, Some(&secret))) else {
            panic!("expected a report")
        };
        let (ca, bundle, rotation) = ready(&report);
        let rotation = rotation.expect("self-managed");
        assert_eq!(rotation.phase, RotationPhase::Stable);
        assert_eq!(
            rotation.next_rotation_time,
            Some(status::seconds(
                ca.not_after.0 - SignedDuration::from_mins(20)
            ))
        );
        assert_eq!(roles(&bundle), vec![(ca.fingerprint, BundleRole::Signing)]);
        // The rotation point: 40 minutes into a 1h root.
        let recheck = report.recheck.unwrap();
        assert!(
            recheck <= Duration::from_secs(40 * 60) && recheck > Duration::from_secs(39 * 60),
            "{recheck:?}"
        );
    }

    #[test]
    fn a_trigger_makes_the_leader_publish_and_the_follower_only_report() {
        let spec = self_managed_spec();
        let secret = managed_secret(&spec, now());
        let leader = Observed {
            trigger: Some("drill-1"),
            ..observed(&spec, Some(&secret))
        };
        match plan(&leader) {
            Decision::Step(write) => {
                assert_eq!(
                    write.step,
                    Step::Publish(PublishReason::Triggered("drill-1".into()))
                );
                assert_eq!(write.trigger.as_deref(), Some("drill-1"));
            }
            other => panic!("expected a publish, got {other:?}"),
        }
        let follower = Observed {
            leader: false,
            ..leader
        };
        assert!(matches!(plan(&follower), Decision::Report(r) if r.ca.is_some()));
    }

    #[test]
    fn a_damaged_self_managed_secret_is_reported_not_overwritten() {
        let spec = self_managed_spec();
        let mut secret = managed_secret(&spec, now());
        secret.data.as_mut().unwrap().insert(
            layout::TLS_CRT.into(),
            ByteString(b"not a certificate".to_vec()),
        );
        let (reason, message, recheck) = not_ready(plan(&observed(&spec, Some(&secret))));
        assert_eq!(reason, reason::INVALID_KEY_PAIR);
        assert!(message.starts_with("CA Secret certs/root: "), "{message}");
        assert_eq!(recheck, Some(NOT_READY_RECHECK));
    }

    #[test]
    fn mid_rotation_the_status_shows_the_phase_and_each_cas_role() {
        let spec = self_managed_spec();
        let start = now();
        let old = managed_secret(&spec, start);
        let new = managed_secret(&spec, start + SignedDuration::from_secs(1));
        let (old_fp, new_fp) = (fingerprint_of(&old), fingerprint_of(&new));
        let both = ByteString(
            [
                pem_of(&new, layout::TLS_CRT).0,
                pem_of(&old, layout::TLS_CRT).0,
            ]
            .concat(),
        );
        let published_at = start + SignedDuration::new(10, 500_000_000);

        // Publishing: the new CA waits in the bundle; the old one signs.
        let mut publishing = old.clone();
        let data = publishing.data.as_mut().unwrap();
        data.insert(layout::NEXT_CRT.into(), pem_of(&new, layout::TLS_CRT));
        data.insert(layout::NEXT_KEY.into(), pem_of(&new, layout::TLS_KEY));
        data.insert(layout::CA_BUNDLE.into(), both.clone());
        publishing.metadata.annotations = Some(BTreeMap::from([(
            layout::NEXT_PUBLISHED_AT.to_owned(),
            published_at.to_string(),
        )]));
        let seen = Observed {
            now: start + SignedDuration::from_secs(20),
            ..observed(&spec, Some(&publishing))
        };
        let Decision::Report(report) = plan(&seen) else {
            panic!("nothing is due within the propagation delay")
        };
        let (ca, bundle, rotation) = ready(&report);
        assert_eq!(ca.fingerprint, old_fp);
        assert_eq!(
            rotation,
            Some(RotationStatus {
                phase: RotationPhase::Publishing,
                next_rotation_time: None,
                switch_time: Some(status::seconds(published_at + SignedDuration::from_mins(1))),
            })
        );
        assert_eq!(
            roles(&bundle),
            vec![
                (new_fp.clone(), BundleRole::Next),
                (old_fp.clone(), BundleRole::Signing)
            ]
        );

        // Retiring: the new CA signs, the old one stays until its retire time.
        let drop_after = start + SignedDuration::from_mins(12);
        let mut retiring = new.clone();
        retiring
            .data
            .as_mut()
            .unwrap()
            .insert(layout::CA_BUNDLE.into(), both);
        retiring.metadata.annotations = Some(
            layout::write(&layout::Record {
                retired: vec![Retired {
                    fingerprint: old_fp.clone(),
                    drop_after,
                }],
                ..layout::Record::default()
            })
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
            .collect(),
        );
        let Decision::Report(report) = plan(&observed(&spec, Some(&retiring))) else {
            panic!("nothing is due before the retire time")
        };
        let (ca, bundle, rotation) = ready(&report);
        let rotation = rotation.unwrap();
        assert_eq!(rotation.phase, RotationPhase::Retiring);
        assert_eq!(
            rotation.next_rotation_time,
            Some(status::seconds(
                ca.not_after.0 - SignedDuration::from_mins(20)
            ))
        );
        assert_eq!(
            roles(&bundle),
            vec![(new_fp, BundleRole::Signing), (old_fp, BundleRole::Retired)]
        );
        assert_eq!(bundle[1].retire_time, Some(status::seconds(drop_after)));
        assert_eq!(bundle[0].retire_time, None);
    }

    #[test]
    fn a_user_secret_publishes_its_bundle_key_first() {
        let spec = secret_spec();
        let mut secret = managed_secret(&self_managed_spec(), now());
        let other = managed_secret(&self_managed_spec(), now() + SignedDuration::from_secs(1));
        let signing_fp = fingerprint_of(&secret);
        // ca.crt names only another CA: that is what the rotator publishes.
        secret.data.as_mut().unwrap().remove(layout::CA_BUNDLE);
        secret
            .data
            .as_mut()
            .unwrap()
            .insert(layout::CA_CRT.into(), pem_of(&other, layout::TLS_CRT));
        let Decision::Report(report) = plan(&observed(&spec, Some(&secret))) else {
            panic!("expected a report")
        };
        let (ca, bundle, _) = ready(&report);
        assert_eq!(ca.fingerprint, signing_fp);
        assert_eq!(
            roles(&bundle),
            vec![(fingerprint_of(&other), BundleRole::Trusted)]
        );
    }

    #[test]
    fn a_report_never_shows_the_key() {
        let spec = self_managed_spec();
        let secret = managed_secret(&spec, now());
        let shown = format!("{:?}", plan(&observed(&spec, Some(&secret))));
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        assert!(shown.contains("fingerprint"), "{shown}");
    }
}
