//! The two HTTP servers: `/metrics` (plain or TLS, optionally
//! authenticated) and `/healthz` + `/readyz` (always plain and open).
//!
//! TLS handshakes run in their own tasks, bounded by a timeout, so a slow
//! or stalled client never holds up the accept loop; the serving
//! certificate is looked up per handshake from a [`CertSlot`], which is
//! what makes rotation seamless.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::{IncomingStream, Listener};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::auth::{ClientCert, ScrapeAuth, Verdict};
use super::health::{Health, readiness_body};

/// How long a client gets to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address.
    pub remote: SocketAddr,
    /// The client certificate, when one was presented and verified against
    /// the client CA.
    pub client_cert: Option<ClientCert>,
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Self {
            remote: *stream.remote_addr(),
            client_cert: None,
        }
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A listener that hands out connections whose TLS handshake completed.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
}

impl TlsListener {
    /// Accepts on `tcp` and runs each handshake with `acceptor` in its own
    /// task until `shutdown`.
    #[must_use]
    pub fn new(tcp: TcpListener, acceptor: TlsAcceptor, shutdown: CancellationToken) -> Self {
        let local = tcp
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = shutdown.cancelled() => return,
                    accepted = tcp.accept() => accepted,
                };
                let (stream, remote) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a metrics connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let client_cert = tls
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|certs| certs.first())
                                .and_then(|der| capstan_pki::summarize(der).ok())
                                .map(|s| ClientCert {
                                    subject: s.subject,
                                    common_name: s.common_name,
                                });
                            let _ = tx
                                .send((
                                    tls,
                                    Peer {
                                        remote,
                                        client_cert,
                                    },
                                ))
                                .await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%remote, error = %e, "TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                    }
                });
            }
        });
        Self { local, ready }
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop ended (shutdown): never hand out another.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer {
            remote: self.local,
            client_cert: None,
        })
    }
}

/// What the `/metrics` handler needs.
pub struct MetricsState {
    /// The registry to expose.
    pub registry: prometheus::Registry,
    /// Who may scrape.
    pub auth: ScrapeAuth,
    /// Whether a client CA is configured (then a certificate is required
    /// unless token review is on).
    pub mtls: bool,
}

async fn metrics(
    State(state): State<Arc<MetricsState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let verdict = state
        .auth
        .check(peer.client_cert.as_ref(), authorization, state.mtls)
        .await;
    match verdict {
        Ok(Verdict::Allowed { who }) => {
            tracing::trace!(%who, remote = %peer.remote, "scrape");
        }
        Ok(Verdict::Unauthenticated(why)) => {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                format!("Unauthorized: {why}\n"),
            )
                .into_response();
        }
        Ok(Verdict::Forbidden { who }) => {
            return (
                StatusCode::FORBIDDEN,
                format!("Forbidden (user={who}, verb=get, resource=, subresource=): /metrics\n"),
            )
                .into_response();
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not check a scrape's credentials");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not check credentials\n",
            )
                .into_response();
        }
    }
    match prometheus::TextEncoder::new().encode_to_string(&state.registry.gather()) {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}\n"),
        )
            .into_response(),
    }
}

/// The `/metrics` router.
pub fn metrics_router(state: Arc<MetricsState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(health): State<Health>) -> Response {
    let (ready, body) = readiness_body(&health.report());
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body).into_response()
}

/// The `/healthz`, `/livez` and `/readyz` router.
pub fn health_router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health)
}
