//! The gates a `CertificateRequest` passes before it is signed, in
//! cert-manager issuer-lib's order (`controllers/request_controller.go`):
//! ours? → finished? → denied? → approved? ([`gate`], the request alone) →
//! issuer ready? → sign ([`decide`], given what the controller found out
//! about the issuer).

use std::collections::HashMap;

use capstan_pki::Truncation;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::api::ca_issuer::IssuerStatus;
use crate::api::cert_manager::{CertificateRequest, IssuerRef};
use crate::api::conditions::{self, request as reason};
use crate::api::identity::{IssuerKey, IssuerKind};
use crate::error::SignError;
use crate::signing::ReadyCa;

/// The API group of capstan's issuers.
pub const ISSUER_GROUP: &str = "capstan.dev";

/// The issuer a request names, if it is one of ours.
///
/// cert-manager defaults an empty `kind` to `Issuer` and an empty `group` to
/// `cert-manager.io`, so both must be given explicitly to reach capstan.
#[must_use]
pub fn our_issuer(issuer_ref: &IssuerRef) -> Option<IssuerKind> {
    if issuer_ref.group.as_deref() != Some(ISSUER_GROUP) {
        return None;
    }
    match issuer_ref.kind.as_deref() {
        Some("CAIssuer") => Some(IssuerKind::CaIssuer),
        Some("ClusterCAIssuer") => Some(IssuerKind::ClusterCaIssuer),
        _ => None,
    }
}

/// The issuer a request names, as a cache key.
#[must_use]
pub fn issuer_key(request: &CertificateRequest, kind: IssuerKind) -> IssuerKey {
    IssuerKey {
        kind,
        namespace: match kind {
            IssuerKind::CaIssuer => request.namespace(),
            IssuerKind::ClusterCaIssuer => None,
        },
        name: request.spec.issuer_ref.name.clone(),
    }
}

/// Requests waiting to be signed, by issuer: those [`gate`] passes to
/// signing. Every issuer in `issuers` gets an entry (zero when nothing
/// waits), so a gauge built from it drops back to zero.
#[must_use]
pub fn pending_by_issuer<'a>(
    requests: impl IntoIterator<Item = &'a CertificateRequest>,
    issuers: impl IntoIterator<Item = IssuerKey>,
) -> HashMap<IssuerKey, i64> {
    let mut counts: HashMap<IssuerKey, i64> = issuers.into_iter().map(|k| (k, 0)).collect();
    for request in requests {
        if let Gate::Sign(key) = gate(request) {
            *counts.entry(key).or_default() += 1;
        }
    }
    counts
}

/// Why a request is left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// It names another issuer.
    NotOurs,
    /// It is finished (`Ready` is `True`, or `False` with a final reason), or
    /// `InvalidRequest` is `True`: it is never touched again.
    Finished,
    /// No approver has approved it yet.
    NotApproved,
}

/// What the gates that read only the request decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Touch nothing.
    Ignore(Skip),
    /// It was denied: mark it `Ready=False`, reason `Denied`, and never sign.
    Deny(IssuerKey),
    /// It is approved: sign it with this issuer once the issuer is ready.
    Sign(IssuerKey),
}

/// The gates that read only the request, in issuer-lib's order: ours? →
/// finished? → denied? → approved?
#[must_use]
pub fn gate(request: &CertificateRequest) -> Gate {
    let Some(kind) = our_issuer(&request.spec.issuer_ref) else {
        return Gate::Ignore(Skip::NotOurs);
    };
    if is_finished(request) {
        return Gate::Ignore(Skip::Finished);
    }
    if request.has_true(conditions::DENIED) {
        return Gate::Deny(issuer_key(request, kind));
    }
    if !request.has_true(conditions::APPROVED) {
        return Gate::Ignore(Skip::NotApproved);
    }
    Gate::Sign(issuer_key(request, kind))
}

/// Whether [`gate`] lets `request` through: it is ours, not finished, and
/// denied or approved. A request for which this is false is ignored
/// whatever state its issuer is in, and need not wake the reconciler at
/// all (most watch events are of such requests: a new one before
/// approval, and each one's own final status write).
#[must_use]
pub fn may_need_work(request: &CertificateRequest) -> bool {
    !matches!(gate(request), Gate::Ignore(_))
}

/// What the controller found out about the issuer a request names.
pub enum IssuerState<'a> {
    /// No such issuer (yet).
    Missing,
    /// The issuer exists but cannot sign; the message says why.
    NotReady(String),
    /// The issuer's CA is loaded and signs.
    Ready(&'a ReadyCa),
}

impl IssuerState<'_> {
    /// The state of an issuer whose CA is not loaded, from its status
    /// (`None`: there is no such issuer).
    #[must_use]
    pub fn unloaded(status: Option<&IssuerStatus>) -> Self {
        let Some(status) = status else {
            return Self::Missing;
        };
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == conditions::READY);
        Self::NotReady(match ready {
            Some(c) if c.status == conditions::TRUE => "its CA is being loaded".to_owned(),
            Some(c) => format!("{}: {}", c.reason, c.message),
            None => "it has not been checked yet".to_owned(),
        })
    }
}

/// How handling a request ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An approver denied it.
    Denied,
    /// It cannot be signed yet; the message says why.
    Pending(String),
    /// It was signed.
    Issued {
        /// The leaf followed by any intermediates, PEM.
        certificate: String,
        /// The issuing root CA, PEM.
        ca: String,
        /// Whether and why the lifetime was shortened, for the Event.
        truncated: Option<Truncation>,
    },
    /// It can never be signed.
    Failed(SignError),
}

impl Outcome {
    /// The reason of the `Ready` condition, the Event and the
    /// `capstan_issuer_requests_failed_total` label.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Denied => reason::DENIED,
            Self::Pending(_) => reason::PENDING,
            Self::Issued { .. } => reason::ISSUED,
            Self::Failed(_) => reason::FAILED,
        }
    }
}

/// The last gate and the signature: a request [`gate`] passed to signing
/// with `key`, and the state of that issuer. Signing is pure CPU work.
#[must_use]
pub fn decide(
    request: &CertificateRequest,
    key: &IssuerKey,
    issuer: &IssuerState<'_>,
    now: Timestamp,
) -> Outcome {
    let kind = key.kind.kind();
    match issuer {
        IssuerState::Missing => Outcome::Pending(format!(
            "Referenced \"{kind}\" not found: {kind} {:?} does not exist",
            key.name
        )),
        IssuerState::NotReady(why) => Outcome::Pending(format!(
            "Referenced \"{kind}\" {:?} is not Ready: {why}",
            key.name
        )),
        IssuerState::Ready(ca) => match ca.sign_request(&request.spec, now) {
            Ok(leaf) => Outcome::Issued {
                certificate: leaf.chain_pem,
                ca: leaf.ca_pem,
                truncated: leaf.truncated,
            },
            Err(refused) => Outcome::Failed(refused),
        },
    }
}

/// Whether a request has reached a final state.
///
/// Final: `Ready=True` (issued), `Ready=False` with reason `Failed` or
/// `Denied`, or `InvalidRequest=True`, as cert-manager's
/// `CertificateRequestIsFinished`-style checks treat them.
#[must_use]
pub fn is_finished(request: &CertificateRequest) -> bool {
    if request.has_true(conditions::INVALID_REQUEST) {
        return true;
    }
    request.condition(conditions::READY).is_some_and(|ready| {
        ready.status == conditions::TRUE
            || matches!(
                ready.reason.as_deref(),
                Some(reason::FAILED | reason::DENIED)
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{RequestFixture, at, ready_ca};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    fn cluster_key() -> IssuerKey {
        IssuerKey {
            kind: IssuerKind::ClusterCaIssuer,
            namespace: None,
            name: "monitoring-ca".into(),
        }
    }

    #[test]
    fn only_requests_the_gates_pass_need_work() {
        let requests = [
            (CertificateRequest::test(), false),
            (CertificateRequest::test().approved(), true),
            (CertificateRequest::test().denied(), true),
            (
                CertificateRequest::test()
                    .approved()
                    .issuer("cert-manager.io", "Issuer", "ca"),
                false,
            ),
            (
                CertificateRequest::test()
                    .approved()
                    .ready("True", reason::ISSUED),
                false,
            ),
            (
                CertificateRequest::test()
                    .approved()
                    .ready("False", reason::FAILED),
                false,
            ),
            (
                CertificateRequest::test()
                    .approved()
                    .ready("False", reason::PENDING),
                true,
            ),
            (
                CertificateRequest::test().approved().invalid_request(),
                false,
            ),
        ];
        for (request, needs_work) in requests {
            assert_eq!(may_need_work(&request), needs_work, "{request:?}");
        }
    }

    #[test]
    fn other_issuers_are_never_touched() {
        let cr = CertificateRequest::test()
            .approved()
            .issuer("cert-manager.io", "Issuer", "ca");
        assert_eq!(gate(&cr), Gate::Ignore(Skip::NotOurs));
        let no_group = CertificateRequest::test()
            .approved()
            .issuer_kind_only("ClusterCAIssuer", "ca");
        assert_eq!(gate(&no_group), Gate::Ignore(Skip::NotOurs));
        let wrong_kind = CertificateRequest::test()
            .approved()
            .issuer(ISSUER_GROUP, "Issuer", "ca");
        assert_eq!(gate(&wrong_kind), Gate::Ignore(Skip::NotOurs));
    }

    #[test]
    fn unapproved_requests_wait_untouched() {
        assert_eq!(
            gate(&CertificateRequest::test()),
            Gate::Ignore(Skip::NotApproved)
        );
    }

    #[test]
    fn denied_beats_approval() {
        let cr = CertificateRequest::test().approved().denied();
        assert_eq!(gate(&cr), Gate::Deny(cluster_key()));
    }

    #[test]
    fn approved_requests_go_to_the_issuer_they_name() {
        let cr = CertificateRequest::test().approved();
        assert_eq!(gate(&cr), Gate::Sign(cluster_key()));
        let ns = CertificateRequest::test()
            .approved()
            .issuer(ISSUER_GROUP, "CAIssuer", "local");
        assert_eq!(
            gate(&ns),
            Gate::Sign(IssuerKey {
                kind: IssuerKind::CaIssuer,
                namespace: Some("apps".into()),
                name: "local".into(),
            })
        );
        // A Pending request is retried.
        let pending = CertificateRequest::test()
            .approved()
            .ready("False", reason::PENDING);
        assert_eq!(gate(&pending), Gate::Sign(cluster_key()));
    }

    #[test]
    fn finished_requests_are_never_touched_again() {
        for cr in [
            CertificateRequest::test()
                .approved()
                .ready("True", reason::ISSUED),
            CertificateRequest::test()
                .approved()
                .ready("False", reason::FAILED),
            CertificateRequest::test()
                .denied()
                .ready("False", reason::DENIED),
            CertificateRequest::test().approved().invalid_request(),
        ] {
            assert_eq!(gate(&cr), Gate::Ignore(Skip::Finished));
        }
    }

    #[test]
    fn an_issuer_that_cannot_sign_makes_the_request_wait_and_says_why() {
        let cr = CertificateRequest::test().approved();
        let now = at(0).0;
        assert_eq!(
            decide(&cr, &cluster_key(), &IssuerState::Missing, now),
            Outcome::Pending(
                "Referenced \"ClusterCAIssuer\" not found: ClusterCAIssuer \"monitoring-ca\" does not exist"
                    .into()
            )
        );
        let status = |status: &str, reason: &str, message: &str| IssuerStatus {
            conditions: vec![Condition {
                type_: conditions::READY.into(),
                status: status.into(),
                reason: reason.into(),
                message: message.into(),
                last_transition_time: at(0),
                observed_generation: None,
            }],
            ..IssuerStatus::default()
        };
        for (found, why) in [
            (
                status("False", "SecretNotFound", "Secret certs/ca not found"),
                "SecretNotFound: Secret certs/ca not found",
            ),
            (status("True", "Ready", "ok"), "its CA is being loaded"),
            (IssuerStatus::default(), "it has not been checked yet"),
        ] {
            let state = IssuerState::unloaded(Some(&found));
            assert_eq!(
                decide(&cr, &cluster_key(), &state, now),
                Outcome::Pending(format!(
                    "Referenced \"ClusterCAIssuer\" \"monitoring-ca\" is not Ready: {why}"
                ))
            );
        }
        assert!(matches!(IssuerState::unloaded(None), IssuerState::Missing));
    }

    #[test]
    fn a_request_the_pki_refuses_fails_with_the_pki_error() {
        let ca = ready_ca();
        let now = k8s_openapi::jiff::Timestamp::now();
        let garbage = CertificateRequest::test().approved();
        let Outcome::Failed(SignError::Pki(refused)) =
            decide(&garbage, &cluster_key(), &IssuerState::Ready(&ca), now)
        else {
            panic!("a request that holds no CSR must fail with the PKI's error");
        };
        assert!(
            matches!(
                refused,
                capstan_pki::Error::Pem { .. } | capstan_pki::Error::Csr(_)
            ),
            "{refused:?}"
        );
        let mut bad_duration = CertificateRequest::test().approved();
        bad_duration.spec.duration = Some("soon".into());
        let outcome = decide(&bad_duration, &cluster_key(), &IssuerState::Ready(&ca), now);
        let Outcome::Failed(refused @ SignError::Duration(_)) = &outcome else {
            panic!("an unreadable duration fails: {outcome:?}");
        };
        assert!(
            refused
                .to_string()
                .starts_with("Failed to sign: spec.duration: "),
            "{refused}"
        );
        assert_eq!(outcome.reason(), reason::FAILED);
    }

    #[test]
    fn pending_counts_only_approved_unfinished_requests_of_ours() {
        let waiting = CertificateRequest::test().approved();
        let also_waiting = CertificateRequest::test()
            .approved()
            .ready("False", reason::PENDING);
        let namespaced =
            CertificateRequest::test()
                .approved()
                .issuer(ISSUER_GROUP, "CAIssuer", "local");
        let not_counted = [
            CertificateRequest::test(),
            CertificateRequest::test().denied(),
            CertificateRequest::test()
                .approved()
                .ready("True", reason::ISSUED),
            CertificateRequest::test()
                .approved()
                .issuer("cert-manager.io", "Issuer", "ca"),
        ];
        let idle = IssuerKey {
            kind: IssuerKind::ClusterCaIssuer,
            namespace: None,
            name: "idle".into(),
        };
        let counts = pending_by_issuer(
            [&waiting, &also_waiting, &namespaced]
                .into_iter()
                .chain(not_counted.iter()),
            [idle.clone()],
        );
        assert_eq!(counts.get(&cluster_key()), Some(&2), "{counts:?}");
        assert_eq!(
            counts.get(&issuer_key(&namespaced, IssuerKind::CaIssuer)),
            Some(&1)
        );
        assert_eq!(counts.get(&idle), Some(&0));
        assert_eq!(counts.len(), 3, "{counts:?}");
    }
}
