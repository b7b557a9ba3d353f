//! A fault-injecting proxy between the binaries under test and the real
//! kube-apiserver: what the embedded test API server injected by itself
//! (5xx, 429 with Retry-After, 409 on writes, latency, cut watch streams),
//! in front of the real thing. It speaks HTTPS with a certificate from the
//! control plane's CA, so a kubeconfig only changes its URL, and forwards
//! each request unchanged (bearer tokens and impersonation headers
//! included), so kube-apiserver authenticates and authorizes as usual.
//!
//! The fault decisions are [`Faults`]' pure functions, shared with the test
//! API server; this module only parses paths ([`target`]) and moves bytes.
//! Every request is also recorded ([`Seen`]) with the user it acts as.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use capstan_testserver::faults::{FaultsHandle, Target, WatchCut};
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};

use super::ControlPlane;

/// What the proxy saw of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The user it acted as: `Impersonate-User`, else the name registered
    /// for its bearer token, else `unknown`.
    pub user: String,
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// The `Accept` header.
    pub accept: String,
    /// The status code answered (injected or kube-apiserver's).
    pub code: u16,
    /// Whether the answer was an injected fault.
    pub injected: bool,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    url: String,
    faults: FaultsHandle,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    upstream: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    tokens: Mutex<HashMap<String, String>>,
    seen: Mutex<Vec<Seen>>,
    faults: FaultsHandle,
}

type Body = BoxBody<Bytes, std::io::Error>;

impl FaultProxy {
    /// Starts a proxy on a free 127.0.0.1 port in front of `cp`'s
    /// kube-apiserver, injecting `faults` (changeable through
    /// [`FaultProxy::faults`]). The admin's token is known as `admin`.
    pub async fn start(cp: &ControlPlane, faults: FaultsHandle) -> anyhow::Result<Self> {
        capstan_testserver::tls::install_crypto_provider();
        let upstream: SocketAddr = cp
            .url()
            .trim_start_matches("https://")
            .parse()
            .context("kube-apiserver's URL is not an address")?;
        let mut roots = rustls::RootCertStore::empty();
        for block in pem::parse_many(cp.ca_pem())? {
            roots.add(rustls::pki_types::CertificateDer::from(
                block.contents().to_vec(),
            ))?;
        }
        let tls = Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        let serving = cp
            .serving_ca()
            .serving("capstan fault proxy", &["127.0.0.1", "localhost"])?;
        let server_config = capstan_testserver::tls::ServingCert {
            ca_pem: cp.ca_pem().to_owned(),
            cert_pem: serving.cert_pem,
            key_pem: serving.key_pem,
        }
        .server_config()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("https://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            upstream,
            tls,
            tokens: Mutex::new(HashMap::from([(
                cp.admin_token().to_owned(),
                "admin".to_owned(),
            )])),
            seen: Mutex::new(Vec::new()),
            faults: faults.clone(),
        });
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
        let serving_shared = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, shared) = (acceptor.clone(), serving_shared.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        // Each request is handled in a task of its own: a
                        // client that goes away mid-request (a SIGKILLed
                        // binary) does not cancel a write kube-apiserver may
                        // already be applying, and the request stays in the
                        // record with kube-apiserver's answer.
                        let handled = tokio::spawn(async move { shared.handle(req).await });
                        async move {
                            Ok::<_, Infallible>(handled.await.unwrap_or_else(|e| {
                                proxy_error(&format!("fault proxy: handler failed: {e}"))
                            }))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            url,
            faults,
            shared,
            task,
        })
    }

    /// The proxy's URL, for kubeconfigs.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The faults it injects, changeable at run time.
    pub fn faults(&self) -> &FaultsHandle {
        &self.faults
    }

    /// Names the user behind bearer `token` (a ServiceAccount's, say), for
    /// the record and for `Faults::exempt_users`.
    pub fn register_token(&self, token: &str, user: &str) {
        lock(&self.shared.tokens).insert(token.to_owned(), user.to_owned());
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.shared.seen).clone()
    }

    /// Forgets the requests seen so far.
    pub fn clear_seen(&self) {
        lock(&self.shared.seen).clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn user_of(&self, req: &http::Request<Incoming>) -> String {
        if let Some(user) = req
            .headers()
            .get("impersonate-user")
            .and_then(|v| v.to_str().ok())
        {
            return user.to_owned();
        }
        req.headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|t| lock(&self.tokens).get(t.trim()).cloned())
            .unwrap_or_else(|| "unknown".to_owned())
    }

    async fn handle(&self, req: http::Request<Incoming>) -> http::Response<Body> {
        let user = self.user_of(&req);
        let method = req.method().to_string();
        let uri = req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_owned(), |pq| pq.as_str().to_owned());
        let accept = req
            .headers()
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let parsed = target(req.uri().path());
        let discovery = parsed.is_none();
        let write = !matches!(*req.method(), http::Method::GET | http::Method::HEAD);
        let watch = is_watch(req.uri().path(), req.uri().query());
        let faults = self.faults.clone();

        if let Some(delay) = faults.latency(&user, discovery) {
            tokio::time::sleep(delay).await;
        }
        let injected = parsed.as_ref().and_then(|t| {
            faults.roll(
                &user,
                false,
                Target {
                    group: &t.group,
                    resource: &t.resource,
                    name: &t.name,
                    write,
                },
            )
        });
        let discovery_fault = if discovery {
            faults.roll(&user, true, Target::default())
        } else {
            None
        };
        let (response, injected) = match injected.or(discovery_fault) {
            Some(e) => {
                let mut resp = http::Response::builder()
                    .status(e.code)
                    .header(http::header::CONTENT_TYPE, "application/json");
                for (k, v) in &e.headers {
                    resp = resp.header(k.as_str(), v.as_str());
                }
                let body = Full::new(Bytes::from(e.body.to_string()))
                    .map_err(|never| match never {})
                    .boxed();
                (resp.body(body).unwrap_or_default(), true)
            }
            None => {
                let cut = if watch {
                    faults.watch_cut(&user)
                } else {
                    WatchCut::default()
                };
                (self.forward(req, cut).await, false)
            }
        };
        lock(&self.seen).push(Seen {
            user,
            method,
            uri,
            accept,
            code: response.status().as_u16(),
            injected,
        });
        response
    }

    async fn forward(&self, req: http::Request<Incoming>, cut: WatchCut) -> http::Response<Body> {
        match self.send(req).await {
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                let body = if cut.after_events.is_some() || cut.after.is_some() {
                    cut_watch(body, cut)
                } else {
                    body.map_err(std::io::Error::other).boxed()
                };
                http::Response::from_parts(parts, body)
            }
            // As a load balancer in front of a dead kube-apiserver.
            Err(e) => proxy_error(&format!("fault proxy: upstream: {e:#}")),
        }
    }

    async fn send(&self, req: http::Request<Incoming>) -> anyhow::Result<http::Response<Incoming>> {
        let tcp = tokio::net::TcpStream::connect(self.upstream).await?;
        let name = rustls::pki_types::ServerName::IpAddress(self.upstream.ip().into());
        let stream = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(sender.send_request(req).await?)
    }
}

/// A `502 Bad Gateway` saying `message`.
fn proxy_error(message: &str) -> http::Response<Body> {
    let body = Full::new(Bytes::from(message.to_owned()))
        .map_err(|never| match never {})
        .boxed();
    http::Response::builder()
        .status(502)
        .body(body)
        .unwrap_or_default()
}

/// A watch response body that ends cleanly after `cut.after_events` events
/// (one JSON document a line) or `cut.after`, as when kube-apiserver or a
/// load balancer drops the stream.
fn cut_watch(body: Incoming, cut: WatchCut) -> Body {
    struct State {
        body: Incoming,
        events: u64,
        deadline: Option<tokio::time::Instant>,
        done: bool,
    }
    let state = State {
        body,
        events: 0,
        deadline: cut.after.map(|d| tokio::time::Instant::now() + d),
        done: false,
    };
    let limit = cut.after_events;
    let stream = futures::stream::unfold(state, move |mut s| async move {
        if s.done || limit.is_some_and(|n| s.events >= n) {
            return None;
        }
        let next = match s.deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, s.body.frame()).await {
                Ok(f) => f,
                Err(_) => return None,
            },
            None => s.body.frame().await,
        };
        match next {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    s.events += data.iter().filter(|b| **b == b'\n').count() as u64;
                }
                Some((Ok::<_, std::io::Error>(frame), s))
            }
            Some(Err(e)) => {
                s.done = true;
                Some((Err(std::io::Error::other(e)), s))
            }
            None => None,
        }
    });
    StreamBody::new(stream).boxed()
}

/// The object a resource request concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceTarget {
    /// API group (empty for the core group).
    pub group: String,
    /// Resource (plural).
    pub resource: String,
    /// Object name (empty for collections).
    pub name: String,
}

/// The resource `path` addresses, or `None` for discovery, OpenAPI,
/// health and version paths.
pub fn target(path: &str) -> Option<ResourceTarget> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let rest = match rest {
        ["watch", rest @ ..] => rest,
        rest => rest,
    };
    let (resource, name) = match rest {
        [] => return None,
        ["namespaces", _ns, resource, name, ..] => (*resource, *name),
        ["namespaces", _ns, resource] => (*resource, ""),
        [resource, name, ..] => (*resource, *name),
        [resource] => (*resource, ""),
    };
    Some(ResourceTarget {
        group: group.to_owned(),
        resource: resource.to_owned(),
        name: name.to_owned(),
    })
}

/// Whether a request is a watch (`?watch=true|1` or a `/watch/` path).
pub fn is_watch(path: &str, query: Option<&str>) -> bool {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let watch_path = match segments.first() {
        Some(&"api") => segments.get(2) == Some(&"watch"),
        Some(&"apis") => segments.get(3) == Some(&"watch"),
        _ => false,
    };
    watch_path
        || query.is_some_and(|q| {
            q.split('&')
                .any(|kv| kv == "watch=true" || kv == "watch=1" || kv == "watch")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(group: &str, resource: &str, name: &str) -> Option<ResourceTarget> {
        Some(ResourceTarget {
            group: group.into(),
            resource: resource.into(),
            name: name.into(),
        })
    }

    #[test]
    fn resource_paths_name_their_target() {
        assert_eq!(
            target("/api/v1/namespaces/ns/secrets/x"),
            t("", "secrets", "x")
        );
        assert_eq!(
            target("/api/v1/namespaces/ns/secrets"),
            t("", "secrets", "")
        );
        assert_eq!(target("/api/v1/namespaces/ns"), t("", "namespaces", "ns"));
        assert_eq!(target("/api/v1/namespaces"), t("", "namespaces", ""));
        assert_eq!(
            target("/apis/cert-manager.io/v1/namespaces/ns/certificaterequests/r/status"),
            t("cert-manager.io", "certificaterequests", "r")
        );
        assert_eq!(
            target("/apis/capstan.dev/v1alpha1/clustercaissuers/ca"),
            t("capstan.dev", "clustercaissuers", "ca")
        );
        assert_eq!(
            target("/api/v1/watch/namespaces/ns/secrets"),
            t("", "secrets", "")
        );
    }

    #[test]
    fn discovery_and_health_are_not_resources() {
        for p in [
            "/api",
            "/api/v1",
            "/apis",
            "/apis/apps",
            "/apis/apps/v1",
            "/openapi/v3",
            "/version",
            "/readyz",
        ] {
            assert_eq!(target(p), None, "{p}");
        }
    }

    #[test]
    fn watches_are_told_by_query_or_path() {
        assert!(is_watch(
            "/api/v1/secrets",
            Some("watch=true&resourceVersion=1")
        ));
        assert!(is_watch(
            "/api/v1/secrets",
            Some("allowWatchBookmarks=true&watch=1")
        ));
        assert!(is_watch("/apis/apps/v1/watch/deployments", None));
        assert!(!is_watch("/api/v1/secrets", Some("limit=500")));
        assert!(!is_watch("/api/v1/secrets", None));
    }
}
