//! Who may read `/metrics`, checked the way kube-rbac-proxy checks it.
//!
//! * A client certificate that verified against the configured client CA
//!   (mTLS) is enough on its own, when its common name is among the allowed
//!   names (any, when none are configured; as kube-apiserver's
//!   `--requestheader-allowed-names`). A verified certificate with another
//!   name is refused (403), unless token review is on: then the request
//!   needs a token like one without a certificate.
//! * Otherwise, with token review on, the request needs a bearer token that
//!   a TokenReview authenticates, for one of the configured audiences when
//!   any are (else 401), and a SubjectAccessReview allows
//!   for non-resource URL `/metrics`, verb `get` (else 403).
//! * With neither configured, anyone may scrape.
//!
//! Decisions on a token are cached for [`CACHE_TTL`] (keyed by the token's
//! SHA-256, never the token itself) so a scrape every few seconds costs the
//! API server one review pair per TTL, not one per scrape.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};
use ring::digest::{SHA256, digest};

use crate::error::Error;

/// How long a token's review is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(10);
/// Most tokens remembered at once.
const CACHE_CAPACITY: usize = 1024;

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// May scrape; `who` names the client for the debug log.
    Allowed {
        /// The authenticated user, or "anonymous" when auth is off.
        who: String,
    },
    /// 401: no credentials, or credentials that do not authenticate.
    Unauthenticated(String),
    /// 403: authenticated but not allowed to `get` `/metrics`.
    Forbidden {
        /// The authenticated user.
        who: String,
    },
}

/// The bearer token of an `Authorization` header value, if it has one.
#[must_use]
pub fn bearer_token(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A client certificate that verified against the client CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// Subject, RFC 4514.
    pub subject: String,
    /// The subject's common name.
    pub common_name: Option<String>,
}

/// Whether `cert`'s common name is among `allowed` (any name when empty).
#[must_use]
pub fn name_allowed(cert: &ClientCert, allowed: &[String]) -> bool {
    allowed.is_empty()
        || cert
            .common_name
            .as_ref()
            .is_some_and(|cn| allowed.iter().any(|a| a == cn))
}

/// Whether a TokenReview's answer is for one of the audiences asked for
/// (any answer when none were asked for, the API server's own audience).
#[must_use]
pub fn audience_ok(asked: &[String], answered: &[String]) -> bool {
    asked.is_empty() || answered.iter().any(|a| asked.contains(a))
}

/// Scrape authorization for `/metrics`.
pub struct ScrapeAuth {
    reviews: Option<Client>,
    audiences: Vec<String>,
    allowed_names: Vec<String>,
    cache: Mutex<HashMap<Vec<u8>, (Instant, Verdict)>>,
}

impl std::fmt::Debug for ScrapeAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrapeAuth")
            .field("token_review", &self.reviews.is_some())
            .finish_non_exhaustive()
    }
}

impl ScrapeAuth {
    /// Token review through `reviews` when given; otherwise tokens are not
    /// looked at.
    #[must_use]
    pub fn new(reviews: Option<Client>) -> Self {
        Self {
            reviews,
            audiences: Vec::new(),
            allowed_names: Vec::new(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Token reviews ask for `audiences` and accept only tokens for one of
    /// them (empty: the API server's own audience).
    #[must_use]
    pub fn with_audiences(mut self, audiences: Vec<String>) -> Self {
        self.audiences = audiences;
        self
    }

    /// Client certificates are enough only with one of these common names
    /// (empty: any name).
    #[must_use]
    pub fn with_allowed_names(mut self, names: Vec<String>) -> Self {
        self.allowed_names = names;
        self
    }

    /// Decides for a request with `client_cert` (a verified client
    /// certificate), `authorization` header and whether a client CA is
    /// configured.
    ///
    /// # Errors
    /// When the API server cannot be asked (the request gets a 500, not a
    /// 401: the client's credentials may be fine).
    pub async fn check(
        &self,
        client_cert: Option<&ClientCert>,
        authorization: Option<&str>,
        mtls: bool,
    ) -> Result<Verdict, Error> {
        if let Some(cert) = client_cert {
            if name_allowed(cert, &self.allowed_names) {
                return Ok(Verdict::Allowed {
                    who: cert.subject.clone(),
                });
            }
            if self.reviews.is_none() {
                return Ok(Verdict::Forbidden {
                    who: cert.subject.clone(),
                });
            }
        }
        let Some(client) = &self.reviews else {
            return Ok(if mtls {
                Verdict::Unauthenticated("a client certificate is required".into())
            } else {
                Verdict::Allowed {
                    who: "anonymous".into(),
                }
            });
        };
        let Some(token) = bearer_token(authorization) else {
            return Ok(Verdict::Unauthenticated(
                "a bearer token or client certificate is required".into(),
            ));
        };
        let key = digest(&SHA256, token.as_bytes()).as_ref().to_vec();
        if let Some(verdict) = self.cached(&key) {
            return Ok(verdict);
        }
        let verdict = review(client, token, &self.audiences).await?;
        self.remember(key, verdict.clone());
        Ok(verdict)
    }

    fn cached(&self, key: &[u8]) -> Option<Verdict> {
        let cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache
            .get(key)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, v)| v.clone())
    }

    fn remember(&self, key: Vec<u8>, verdict: Verdict) {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= CACHE_CAPACITY {
            cache.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), verdict));
    }
}

/// Asks the API server who `token` is and whether they may get `/metrics`.
async fn review(client: &Client, token: &str, audiences: &[String]) -> Result<Verdict, Error> {
    let params = PostParams::default();
    let asked = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            audiences: (!audiences.is_empty()).then(|| audiences.to_vec()),
        },
        ..TokenReview::default()
    };
    let reviewed = Api::<TokenReview>::all(client.clone())
        .create(&params, &asked)
        .await
        .map_err(|e| Error::kube("creating a TokenReview for a /metrics scrape", e))?;
    let status = reviewed.status.unwrap_or_default();
    if status.authenticated == Some(true)
        && !audience_ok(audiences, status.audiences.as_deref().unwrap_or_default())
    {
        return Ok(Verdict::Unauthenticated(format!(
            "the token is not meant for audience {}",
            audiences.join(" or ")
        )));
    }
    let user = match (status.authenticated, status.user) {
        (Some(true), Some(user)) => user,
        _ => {
            return Ok(Verdict::Unauthenticated(
                status
                    .error
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| "the token did not authenticate".into()),
            ));
        }
    };
    let who = user.username.clone().unwrap_or_default();
    let access = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username,
            groups: user.groups,
            uid: user.uid,
            extra: user.extra,
            non_resource_attributes: Some(NonResourceAttributes {
                path: Some("/metrics".into()),
                verb: Some("get".into()),
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let decided = Api::<SubjectAccessReview>::all(client.clone())
        .create(&params, &access)
        .await
        .map_err(|e| Error::kube("creating a SubjectAccessReview for a /metrics scrape", e))?;
    Ok(if decided.status.is_some_and(|s| s.allowed) {
        Verdict::Allowed { who }
    } else {
        Verdict::Forbidden { who }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_case_insensitively() {
        assert_eq!(bearer_token(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(Some("Basic abc")), None);
        assert_eq!(bearer_token(Some("Bearer ")), None);
        assert_eq!(bearer_token(None), None);
    }

    #[tokio::test]
    async fn without_token_review_only_mtls_decides() {
        let open = ScrapeAuth::new(None);
        assert!(matches!(
            open.check(None, None, false).await,
            Ok(Verdict::Allowed { .. })
        ));
        assert!(matches!(
            open.check(None, Some("Bearer x"), true).await,
            Ok(Verdict::Unauthenticated(_))
        ));
        let prometheus = cert("prometheus");
        assert_eq!(
            open.check(Some(&prometheus), None, true).await.ok(),
            Some(Verdict::Allowed {
                who: "CN=prometheus".into()
            })
        );
    }

    fn cert(cn: &str) -> ClientCert {
        ClientCert {
            subject: format!("CN={cn}"),
            common_name: Some(cn.into()),
        }
    }

    #[tokio::test]
    async fn only_allowed_names_pass_on_a_certificate_alone() {
        let allowed = "system:serviceaccount:monitoring:prometheus-k8s";
        let auth = ScrapeAuth::new(None).with_allowed_names(vec![allowed.into()]);
        assert!(matches!(
            auth.check(Some(&cert(allowed)), None, true).await,
            Ok(Verdict::Allowed { .. })
        ));
        assert_eq!(
            auth.check(Some(&cert("grafana")), None, true).await.ok(),
            Some(Verdict::Forbidden {
                who: "CN=grafana".into()
            })
        );
        let nameless = ClientCert {
            subject: "O=monitoring".into(),
            common_name: None,
        };
        assert!(!name_allowed(&nameless, &[allowed.into()]));
        assert!(
            name_allowed(&nameless, &[]),
            "no list: any verified certificate"
        );
    }

    #[test]
    fn a_token_must_be_for_an_asked_audience() {
        let asked = vec!["capstan-metrics".to_owned()];
        assert!(audience_ok(
            &asked,
            &["capstan-metrics".into(), "other".into()]
        ));
        assert!(!audience_ok(
            &asked,
            &["https://kubernetes.default.svc".into()]
        ));
        assert!(!audience_ok(&asked, &[]));
        assert!(audience_ok(&[], &[]), "none asked: the API server's own");
    }
}
