//! The gates a `CertificateRequest` passes before it is signed, in
//! cert-manager issuer-lib's order (`controllers/request_controller.go`):
//! ours? → finished? → denied? → approved? → issuer ready? → sign.

use std::collections::HashMap;

use kube::ResourceExt;

use crate::api::cert_manager::{CertificateRequest, IssuerRef};
use crate::api::conditions::{self, request as reason};
use crate::api::identity::{IssuerKey, IssuerKind};

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

/// Requests waiting to be signed, by issuer: ours, approved, neither denied
/// nor finished. Every issuer in `issuers` gets an entry (zero when nothing
/// waits), so a gauge built from it drops back to zero.
#[must_use]
pub fn pending_by_issuer<'a>(
    requests: impl IntoIterator<Item = &'a CertificateRequest>,
    issuers: impl IntoIterator<Item = IssuerKey>,
) -> HashMap<IssuerKey, i64> {
    let mut counts: HashMap<IssuerKey, i64> = issuers.into_iter().map(|k| (k, 0)).collect();
    for request in requests {
        let Some(kind) = our_issuer(&request.spec.issuer_ref) else {
            continue;
        };
        if is_finished(request)
            || request.has_true(conditions::DENIED)
            || !request.has_true(conditions::APPROVED)
        {
            continue;
        }
        *counts.entry(issuer_key(request, kind)).or_default() += 1;
    }
    counts
}

/// What the controller knows about the issuer a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuerState {
    /// No such issuer (yet).
    Missing,
    /// The issuer exists but is not `Ready`; the message says why.
    NotReady(String),
    /// The issuer is `Ready` to sign.
    Ready,
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

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestDecision {
    /// Touch nothing.
    Ignore(Skip),
    /// It was denied: mark it `Ready=False`, reason `Denied`, and never sign.
    Deny,
    /// The issuer cannot sign yet: `Ready=False`, reason `Pending`; retry.
    Wait(String),
    /// Sign it.
    Sign(IssuerKind),
}

/// Decides what to do with `request`, given the state of its issuer.
#[must_use]
pub fn plan(request: &CertificateRequest, issuer: &IssuerState) -> RequestDecision {
    let Some(kind) = our_issuer(&request.spec.issuer_ref) else {
        return RequestDecision::Ignore(Skip::NotOurs);
    };
    if is_finished(request) {
        return RequestDecision::Ignore(Skip::Finished);
    }
    if request.has_true(conditions::DENIED) {
        return RequestDecision::Deny;
    }
    if !request.has_true(conditions::APPROVED) {
        return RequestDecision::Ignore(Skip::NotApproved);
    }
    match issuer {
        IssuerState::Missing => RequestDecision::Wait(format!(
            "Referenced \"{}\" not found: {} {:?} does not exist",
            kind.kind(),
            kind.kind(),
            request.spec.issuer_ref.name
        )),
        IssuerState::NotReady(why) => RequestDecision::Wait(format!(
            "Referenced \"{}\" {:?} is not Ready: {why}",
            kind.kind(),
            request.spec.issuer_ref.name
        )),
        IssuerState::Ready => RequestDecision::Sign(kind),
    }
}

/// Whether [`plan`] could do anything with `request`: it is ours, not
/// finished, and denied or approved. Every `Ignore` is decided before the
/// issuer's state is looked at, so a request for which this is false is
/// ignored whatever state its issuer is in, and need not wake the
/// reconciler at all (most watch events are of such requests: a new one
/// before approval, and each one's own final status write).
#[must_use]
pub fn may_need_work(request: &CertificateRequest) -> bool {
    !matches!(
        plan(request, &IssuerState::Ready),
        RequestDecision::Ignore(_)
    )
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
    use crate::fixtures::RequestFixture;

    #[test]
    fn only_requests_the_plan_could_act_on_need_work_whatever_the_issuer_state() {
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
                    .ready("True", "Issued"),
                false,
            ),
            (
                CertificateRequest::test()
                    .approved()
                    .ready("False", "Failed"),
                false,
            ),
            (
                CertificateRequest::test()
                    .approved()
                    .ready("False", "Pending"),
                true,
            ),
            (
                CertificateRequest::test().approved().invalid_request(),
                false,
            ),
        ];
        let states = [
            IssuerState::Missing,
            IssuerState::NotReady("SecretNotFound".into()),
            IssuerState::Ready,
        ];
        for (request, needs_work) in requests {
            assert_eq!(may_need_work(&request), needs_work, "{request:?}");
            for state in &states {
                let ignored = matches!(plan(&request, state), RequestDecision::Ignore(_));
                assert_eq!(ignored, !needs_work, "{request:?} with {state:?}");
            }
        }
    }

    #[test]
    fn other_issuers_are_never_touched() {
        let cr = CertificateRequest::test()
            .approved()
            .issuer("cert-manager.io", "Issuer", "ca");
        assert_eq!(
            plan(&cr, &IssuerState::Ready),
            RequestDecision::Ignore(Skip::NotOurs)
        );
        let no_group = CertificateRequest::test()
            .approved()
            .issuer_kind_only("ClusterCAIssuer", "ca");
        assert_eq!(
            plan(&no_group, &IssuerState::Ready),
            RequestDecision::Ignore(Skip::NotOurs)
        );
        let wrong_kind = CertificateRequest::test()
            .approved()
            .issuer(ISSUER_GROUP, "Issuer", "ca");
        assert_eq!(
            plan(&wrong_kind, &IssuerState::Ready),
            RequestDecision::Ignore(Skip::NotOurs)
        );
    }

    #[test]
    fn unapproved_requests_wait_untouched() {
        let cr = CertificateRequest::test();
        assert_eq!(
            plan(&cr, &IssuerState::Ready),
            RequestDecision::Ignore(Skip::NotApproved)
        );
    }

    #[test]
    fn denied_beats_approval_and_issuer_state() {
        let cr = CertificateRequest::test().denied();
        assert_eq!(plan(&cr, &IssuerState::Missing), RequestDecision::Deny);
        assert_eq!(plan(&cr, &IssuerState::Ready), RequestDecision::Deny);
    }

    #[test]
    fn approved_request_waits_for_its_issuer() {
        let cr = CertificateRequest::test().approved();
        let RequestDecision::Wait(missing) = plan(&cr, &IssuerState::Missing) else {
            panic!("a missing issuer must make the request wait");
        };
        assert!(missing.contains("not found"), "{missing}");
        let RequestDecision::Wait(not_ready) =
            plan(&cr, &IssuerState::NotReady("SecretNotFound".into()))
        else {
            panic!("an unready issuer must make the request wait");
        };
        assert!(not_ready.contains("SecretNotFound"), "{not_ready}");
    }

    #[test]
    fn approved_request_with_ready_issuer_is_signed() {
        let cr = CertificateRequest::test().approved();
        assert_eq!(
            plan(&cr, &IssuerState::Ready),
            RequestDecision::Sign(IssuerKind::ClusterCaIssuer)
        );
        let ns = CertificateRequest::test()
            .approved()
            .issuer(ISSUER_GROUP, "CAIssuer", "local");
        assert_eq!(
            plan(&ns, &IssuerState::Ready),
            RequestDecision::Sign(IssuerKind::CaIssuer)
        );
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
            assert_eq!(
                plan(&cr, &IssuerState::Ready),
                RequestDecision::Ignore(Skip::Finished)
            );
        }
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
        let cluster_key = issuer_key(&waiting, IssuerKind::ClusterCaIssuer);
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
        assert_eq!(counts.get(&cluster_key), Some(&2), "{counts:?}");
        assert_eq!(
            counts.get(&issuer_key(&namespaced, IssuerKind::CaIssuer)),
            Some(&1)
        );
        assert_eq!(counts.get(&idle), Some(&0));
        assert_eq!(counts.len(), 3, "{counts:?}");
    }

    #[test]
    fn pending_requests_are_retried() {
        let cr = CertificateRequest::test()
            .approved()
            .ready("False", reason::PENDING);
        assert_eq!(
            plan(&cr, &IssuerState::Ready),
            RequestDecision::Sign(IssuerKind::ClusterCaIssuer)
        );
    }
}
