//! Serving `/metrics`, `/healthz` and `/readyz`, for both binaries.
//!
//! * [`ServeArgs`] — the flags (cert-manager's names) and [`ServeArgs::plan`],
//!   which checks them and decides how to serve ([`ServePlan`]);
//! * [`start`] — binds both listeners and serves until shutdown;
//! * [`profile`] — TLS security profiles; [`certs`] — the rotating serving
//!   certificate; [`files`] — static TLS files, reloaded on change;
//!   [`dynamic`] — serving certificates signed by a CA kept in a Secret;
//!   [`auth`] — TokenReview/SubjectAccessReview and mTLS scrape auth;
//!   [`client_ca`] — the mTLS client CA, reloaded on change;
//!   [`health`] — readiness checks; [`http`] — routers and the TLS listener.

pub mod auth;
pub mod certs;
pub mod client_ca;
pub mod dynamic;
pub mod files;
pub mod health;
pub mod http;
pub mod profile;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use self::auth::ScrapeAuth;
use self::certs::CertSlot;
use self::dynamic::DynamicConfig;
use self::files::FilePair;
pub use self::health::{CheckResult, Health};
use self::http::{MetricsState, Peer, TlsListener};
use self::profile::{ProfileType, TlsProfile};
use crate::error::Error;

/// Metrics and health serving flags, named as cert-manager names them.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address of the `/metrics` server (`:9402` means all interfaces).
    #[arg(
        long,
        env = "CAPSTAN_METRICS_LISTEN_ADDRESS",
        default_value = "0.0.0.0:9402"
    )]
    pub metrics_listen_address: String,

    /// Address of the `/healthz` and `/readyz` server.
    #[arg(
        long,
        visible_alias = "internal-healthz-listen-address",
        env = "CAPSTAN_HEALTH_LISTEN_ADDRESS",
        default_value = "0.0.0.0:9403"
    )]
    pub health_listen_address: String,

    /// Serve `/metrics` over TLS with this certificate file (PEM, leaf
    /// first); reloaded when it changes.
    #[arg(long, env = "CAPSTAN_METRICS_TLS_CERT_FILE")]
    pub metrics_tls_cert_file: Option<PathBuf>,

    /// Private key file (PEM) for `--metrics-tls-cert-file`.
    #[arg(long, env = "CAPSTAN_METRICS_TLS_PRIVATE_KEY_FILE")]
    pub metrics_tls_private_key_file: Option<PathBuf>,

    /// Namespace of the Secret holding the CA that signs the metrics
    /// serving certificate (dynamic TLS). Default: the pod's namespace.
    #[arg(long, env = "CAPSTAN_METRICS_DYNAMIC_SERVING_CA_SECRET_NAMESPACE")]
    pub metrics_dynamic_serving_ca_secret_namespace: Option<String>,

    /// Name of that Secret; created by the first replica when missing.
    #[arg(long, env = "CAPSTAN_METRICS_DYNAMIC_SERVING_CA_SECRET_NAME")]
    pub metrics_dynamic_serving_ca_secret_name: Option<String>,

    /// DNS names of the dynamic serving certificate (comma-separated).
    #[arg(
        long,
        env = "CAPSTAN_METRICS_DYNAMIC_SERVING_DNS_NAMES",
        value_delimiter = ','
    )]
    pub metrics_dynamic_serving_dns_names: Vec<String>,

    /// Lifetime of each dynamic serving certificate (e.g. `168h`); it is
    /// renewed after two thirds of it. At least 30s.
    #[arg(
        long,
        env = "CAPSTAN_METRICS_DYNAMIC_SERVING_LEAF_DURATION",
        default_value = "168h",
        value_parser = crate::cli::parse_duration
    )]
    pub metrics_dynamic_serving_leaf_duration: Duration,

    /// TLS security profile of the metrics server: Intermediate, Modern or
    /// Custom (Old is not supported).
    #[arg(
        long,
        env = "CAPSTAN_TLS_SECURITY_PROFILE",
        default_value = "Intermediate"
    )]
    pub tls_security_profile: String,

    /// Custom profile: lowest TLS version (VersionTLS12 or VersionTLS13).
    #[arg(
        long,
        visible_alias = "metrics-tls-min-version",
        env = "CAPSTAN_TLS_MIN_VERSION"
    )]
    pub tls_min_version: Option<String>,

    /// Custom profile: cipher suites, OpenSSL or IANA names (comma-separated).
    #[arg(
        long,
        visible_alias = "metrics-tls-cipher-suites",
        env = "CAPSTAN_TLS_CIPHER_SUITES",
        value_delimiter = ','
    )]
    pub tls_cipher_suites: Vec<String>,

    /// Require scrapers of `/metrics` to present a bearer token that a
    /// TokenReview authenticates and a SubjectAccessReview allows to `get`
    /// non-resource URL `/metrics` (needs TLS).
    #[arg(
        long,
        env = "CAPSTAN_METRICS_AUTH_TOKEN_REVIEW",
        default_value_t = false,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub metrics_auth_token_review: bool,

    /// Accept client certificates that chain to the CAs in this PEM file
    /// (mTLS); reloaded when it changes. Without token review a verified
    /// certificate is required.
    #[arg(long, env = "CAPSTAN_METRICS_CLIENT_CA_FILE")]
    pub metrics_client_ca_file: Option<PathBuf>,

    /// Client certificate common names accepted (comma-separated), as
    /// kube-apiserver's --requestheader-allowed-names; e.g. only
    /// Prometheus's `system:serviceaccount:monitoring:prometheus-k8s`.
    /// Empty: any certificate from the client CA.
    #[arg(
        long,
        env = "CAPSTAN_METRICS_CLIENT_ALLOWED_NAMES",
        value_delimiter = ','
    )]
    pub metrics_client_allowed_names: Vec<String>,

    /// Audiences token reviews ask for (comma-separated); a token must be
    /// for one of them. Empty: the API server's own audience.
    #[arg(
        long,
        env = "CAPSTAN_METRICS_AUTH_TOKEN_AUDIENCES",
        value_delimiter = ','
    )]
    pub metrics_auth_token_audiences: Vec<String>,
}

/// Where the metrics serving certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// Static files, reloaded on change.
    Files(FilePair),
    /// Signed by this process with a CA kept in a Secret.
    Dynamic(DynamicConfig),
}

/// How `/metrics` is served over TLS.
#[derive(Debug, Clone)]
pub struct TlsPlan {
    /// The serving certificate's source.
    pub source: CertSource,
    /// Versions and suites.
    pub profile: TlsProfile,
    /// CA file for client certificates (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// The checked serving configuration.
#[derive(Debug, Clone)]
pub struct ServePlan {
    /// `/metrics` address.
    pub metrics_address: SocketAddr,
    /// `/healthz` and `/readyz` address.
    pub health_address: SocketAddr,
    /// TLS for `/metrics`; plain HTTP when `None`.
    pub tls: Option<TlsPlan>,
    /// Whether bearer tokens are reviewed.
    pub token_review: bool,
    /// Client certificate common names accepted (empty: any).
    pub allowed_names: Vec<String>,
    /// Audiences token reviews ask for (empty: the API server's).
    pub audiences: Vec<String>,
}

/// Parses a listen address: `host:port`, `[v6]:port`, or `:port` for all
/// interfaces (Go's spelling).
///
/// # Errors
/// When it is none of these.
pub fn parse_listen_address(flag: &str, text: &str) -> Result<SocketAddr, Error> {
    let text = text.trim();
    let full = if text.starts_with(':') {
        format!("0.0.0.0{text}")
    } else if let Some(port) = text.strip_prefix("localhost:") {
        format!("127.0.0.1:{port}")
    } else {
        text.to_owned()
    };
    full.parse().map_err(|_| {
        Error::Config(format!(
            "--{flag} {text:?} is not a listen address (write it like \"0.0.0.0:9402\" or \":9402\")"
        ))
    })
}

impl ServeArgs {
    /// Checks the flags and decides how to serve. `own_namespace` is the
    /// default namespace of the dynamic CA Secret.
    ///
    /// # Errors
    /// Conflicting or incomplete TLS flags, an unsupported profile or
    /// cipher, auth without TLS: each named in the message.
    pub fn plan(&self, own_namespace: &str) -> Result<ServePlan, Error> {
        let metrics_address =
            parse_listen_address("metrics-listen-address", &self.metrics_listen_address)?;
        let health_address =
            parse_listen_address("health-listen-address", &self.health_listen_address)?;
        let profile = TlsProfile::resolve(
            self.tls_security_profile.parse::<ProfileType>()?,
            self.tls_min_version.as_deref(),
            &self.tls_cipher_suites,
        )?;
        let files = match (
            &self.metrics_tls_cert_file,
            &self.metrics_tls_private_key_file,
        ) {
            (Some(cert), Some(key)) => Some(FilePair {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => None,
            _ => {
                return Err(Error::Config(
                    "--metrics-tls-cert-file and --metrics-tls-private-key-file go together: \
                     give both or neither"
                        .into(),
                ));
            }
        };
        let dynamic = match (
            &self.metrics_dynamic_serving_ca_secret_name,
            self.metrics_dynamic_serving_dns_names.is_empty(),
        ) {
            (Some(name), false) => Some(DynamicConfig {
                namespace: self
                    .metrics_dynamic_serving_ca_secret_namespace
                    .clone()
                    .unwrap_or_else(|| own_namespace.to_owned()),
                name: name.clone(),
                dns_names: self.metrics_dynamic_serving_dns_names.clone(),
                leaf_lifetime: self.metrics_dynamic_serving_leaf_duration,
            }),
            (None, true) if self.metrics_dynamic_serving_ca_secret_namespace.is_none() => None,
            _ => {
                return Err(Error::Config(
                    "dynamic serving TLS needs both --metrics-dynamic-serving-ca-secret-name and \
                     --metrics-dynamic-serving-dns-names"
                        .into(),
                ));
            }
        };
        if let Some(d) = &dynamic
            && d.leaf_lifetime < dynamic::MIN_LEAF_LIFETIME
        {
            return Err(Error::Config(format!(
                "--metrics-dynamic-serving-leaf-duration must be at least {}s, got {}s",
                dynamic::MIN_LEAF_LIFETIME.as_secs(),
                d.leaf_lifetime.as_secs()
            )));
        }
        let source = match (files, dynamic) {
            (Some(_), Some(_)) => {
                return Err(Error::Config(
                    "choose one metrics TLS source: static files (--metrics-tls-cert-file) or \
                     dynamic (--metrics-dynamic-serving-ca-secret-name), not both"
                        .into(),
                ));
            }
            (Some(f), None) => Some(CertSource::Files(f)),
            (None, Some(d)) => Some(CertSource::Dynamic(d)),
            (None, None) => None,
        };
        let tls = match source {
            Some(source) => Some(TlsPlan {
                source,
                profile,
                client_ca: self.metrics_client_ca_file.clone(),
            }),
            None if self.metrics_auth_token_review || self.metrics_client_ca_file.is_some() => {
                return Err(Error::Config(
                    "scrape authentication (--metrics-auth-token-review, \
                     --metrics-client-ca-file) needs TLS on /metrics: bearer tokens must not \
                     cross the network in clear; configure static or dynamic metrics TLS"
                        .into(),
                ));
            }
            None => None,
        };
        if !self.metrics_client_allowed_names.is_empty() && self.metrics_client_ca_file.is_none() {
            return Err(Error::Config(
                "--metrics-client-allowed-names needs --metrics-client-ca-file: the names are \
                 those of client certificates from that CA"
                    .into(),
            ));
        }
        if !self.metrics_auth_token_audiences.is_empty() && !self.metrics_auth_token_review {
            return Err(Error::Config(
                "--metrics-auth-token-audiences needs --metrics-auth-token-review".into(),
            ));
        }
        Ok(ServePlan {
            metrics_address,
            health_address,
            tls,
            token_review: self.metrics_auth_token_review,
            allowed_names: self.metrics_client_allowed_names.clone(),
            audiences: self.metrics_auth_token_audiences.clone(),
        })
    }
}

/// A registry with the process collector (CPU, memory, file descriptors)
/// already registered, for a binary's own metrics to join.
#[must_use]
pub fn registry() -> prometheus::Registry {
    let registry = prometheus::Registry::new();
    let process = prometheus::process_collector::ProcessCollector::for_self();
    if let Err(e) = registry.register(Box::new(process)) {
        tracing::warn!(error = %e, "process metrics unavailable");
    }
    registry
}

/// The running servers.
#[derive(Debug)]
pub struct Serving {
    /// Where `/metrics` listens.
    pub metrics_address: SocketAddr,
    /// Where `/healthz` and `/readyz` listen.
    pub health_address: SocketAddr,
    tasks: JoinSet<()>,
}

impl Serving {
    /// Waits for the servers to finish draining after shutdown, at most
    /// [`crate::shutdown::DRAIN`]: a scraper that never finishes its request must not keep
    /// the process from exiting.
    pub async fn stopped(mut self) {
        let drained = async { while self.tasks.join_next().await.is_some() {} };
        let drain = crate::shutdown::DRAIN;
        if tokio::time::timeout(drain, drained).await.is_err() {
            tracing::warn!(timeout = ?drain, "closing connections still open after shutdown");
            self.tasks.abort_all();
        }
    }
}

async fn bind(address: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(address)
        .await
        .map_err(|source| Error::Bind {
            address: address.to_string(),
            source,
        })
}

/// Binds both listeners (failing at once if either cannot be bound or the
/// TLS material cannot be loaded) and serves until `shutdown`.
///
/// # Errors
/// A listener cannot be bound, static TLS files or the client CA cannot
/// be loaded.
pub async fn start(
    plan: ServePlan,
    registry: prometheus::Registry,
    client: kube::Client,
    health: Health,
    shutdown: CancellationToken,
) -> Result<Serving, Error> {
    let mut tasks = JoinSet::new();
    let health_listener = bind(plan.health_address).await?;
    let metrics_listener = bind(plan.metrics_address).await?;
    let health_address = health_listener.local_addr().unwrap_or(plan.health_address);
    let metrics_address = metrics_listener
        .local_addr()
        .unwrap_or(plan.metrics_address);

    let state = Arc::new(MetricsState {
        registry,
        auth: ScrapeAuth::new(plan.token_review.then(|| client.clone()))
            .with_audiences(plan.audiences.clone())
            .with_allowed_names(plan.allowed_names.clone()),
        mtls: plan.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
    });
    let router = http::metrics_router(state).into_make_service_with_connect_info::<Peer>();
    let stop = shutdown.clone();
    let mode = match &plan.tls {
        None => {
            tasks.spawn(async move {
                let served = axum::serve(metrics_listener, router)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "metrics server failed");
                }
            });
            "http"
        }
        Some(tls) => {
            let provider = Arc::new(tls.profile.provider());
            let slot = Arc::new(CertSlot::default());
            match &tls.source {
                CertSource::Files(pair) => {
                    let loaded = pair.load(&provider).await?;
                    files::log_served(&loaded, "static files");
                    slot.set(loaded);
                    tasks.spawn(files::watch(
                        pair.clone(),
                        slot.clone(),
                        provider.clone(),
                        shutdown.clone(),
                    ));
                }
                CertSource::Dynamic(config) => {
                    tasks.spawn(dynamic::run(
                        client.clone(),
                        config.clone(),
                        slot.clone(),
                        provider.clone(),
                        shutdown.clone(),
                    ));
                }
            }
            let watched = slot.clone();
            health.add_check("metrics-tls", move || watched.current().is_some());
            let verifier: Arc<dyn rustls::server::danger::ClientCertVerifier> = match &tls.client_ca
            {
                None => WebPkiClientVerifier::no_client_auth(),
                Some(path) => {
                    let (first, hash) = client_ca::load(path, plan.token_review, &provider)?;
                    let reloading = Arc::new(client_ca::ReloadingVerifier::new(first));
                    tasks.spawn(client_ca::watch(
                        path.clone(),
                        plan.token_review,
                        reloading.clone(),
                        provider.clone(),
                        hash,
                        shutdown.clone(),
                    ));
                    reloading
                }
            };
            let mut config = rustls::ServerConfig::builder_with_provider(provider)
                .with_protocol_versions(tls.profile.versions())
                .map_err(|e| Error::Tls {
                    what: "the TLS security profile".into(),
                    problem: e.to_string(),
                })?
                .with_client_cert_verifier(verifier)
                .with_cert_resolver(slot);
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            let listener = TlsListener::new(
                metrics_listener,
                TlsAcceptor::from(Arc::new(config)),
                shutdown.clone(),
            );
            tasks.spawn(async move {
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "metrics server failed");
                }
            });
            "https"
        }
    };

    let stop = shutdown.clone();
    tasks.spawn(async move {
        let served = axum::serve(health_listener, http::health_router(health))
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "health server failed");
        }
    });
    tracing::info!(
        metrics = %metrics_address,
        health = %health_address,
        scheme = mode,
        token_review = plan.token_review,
        mtls = plan.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
        "serving metrics and health"
    );
    Ok(Serving {
        metrics_address,
        health_address,
        tasks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn plan(args: &[&str]) -> Result<ServePlan, Error> {
        let mut argv = vec!["x"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .map_err(|e| Error::Config(e.to_string()))?
            .serve
            .plan("capstan")
    }

    fn args(args: &[&str]) -> String {
        let cli =
            Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).expect("parse");
        format!("{:?}", cli.serve)
    }

    #[test]
    fn cert_managers_spellings_set_the_same_fields() {
        for (theirs, ours) in [
            (
                ["--internal-healthz-listen-address", "127.0.0.1:9999"],
                ["--health-listen-address", "127.0.0.1:9999"],
            ),
            (
                ["--metrics-tls-min-version", "VersionTLS13"],
                ["--tls-min-version", "VersionTLS13"],
            ),
            (
                [
                    "--metrics-tls-cipher-suites",
                    "TLS_AES_128_GCM_SHA256,TLS_AES_256_GCM_SHA384",
                ],
                [
                    "--tls-cipher-suites",
                    "TLS_AES_128_GCM_SHA256,TLS_AES_256_GCM_SHA384",
                ],
            ),
        ] {
            assert_eq!(args(&theirs), args(&ours), "{theirs:?}");
            assert_ne!(args(&theirs), args(&[]), "{theirs:?} changes something");
        }
    }

    #[test]
    fn defaults_are_plain_http_on_9402_and_9403() {
        let p = plan(&[]).expect("plan");
        assert_eq!(p.metrics_address.to_string(), "0.0.0.0:9402");
        assert_eq!(p.health_address.to_string(), "0.0.0.0:9403");
        assert!(p.tls.is_none());
    }

    #[test]
    fn go_style_addresses_are_read() {
        assert_eq!(
            parse_listen_address("x", ":9402")
                .expect("addr")
                .to_string(),
            "0.0.0.0:9402"
        );
        assert_eq!(
            parse_listen_address("x", "[::]:1")
                .expect("addr")
                .to_string(),
            "[::]:1"
        );
        assert!(parse_listen_address("x", "nine").is_err());
    }

    #[test]
    fn dynamic_tls_defaults_to_the_own_namespace() {
        let p = plan(&[
            "--metrics-dynamic-serving-ca-secret-name=metrics-ca",
            "--metrics-dynamic-serving-dns-names=a.svc,b.svc",
        ])
        .expect("plan");
        match p.tls.expect("tls").source {
            CertSource::Dynamic(d) => {
                assert_eq!(d.namespace, "capstan");
                assert_eq!(d.dns_names, vec!["a.svc", "b.svc"]);
                assert_eq!(d.leaf_lifetime, dynamic::LEAF_LIFETIME);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn dynamic_leaf_duration_is_set_and_bounded() {
        let dynamic = [
            "--metrics-dynamic-serving-ca-secret-name=metrics-ca",
            "--metrics-dynamic-serving-dns-names=a.svc",
        ];
        let mut args = dynamic.to_vec();
        args.push("--metrics-dynamic-serving-leaf-duration=1h");
        match plan(&args).expect("plan").tls.expect("tls").source {
            CertSource::Dynamic(d) => assert_eq!(d.leaf_lifetime, Duration::from_secs(3600)),
            other => panic!("{other:?}"),
        }
        let mut args = dynamic.to_vec();
        args.push("--metrics-dynamic-serving-leaf-duration=5s");
        let e = plan(&args).expect_err("too short").to_string();
        assert!(e.contains("at least 30s"), "{e}");
    }

    #[test]
    fn conflicting_or_incomplete_tls_flags_are_named() {
        let e = plan(&["--metrics-tls-cert-file=a"])
            .expect_err("half")
            .to_string();
        assert!(e.contains("go together"), "{e}");
        let e = plan(&[
            "--metrics-tls-cert-file=a",
            "--metrics-tls-private-key-file=b",
            "--metrics-dynamic-serving-ca-secret-name=c",
            "--metrics-dynamic-serving-dns-names=d",
        ])
        .expect_err("both")
        .to_string();
        assert!(e.contains("not both"), "{e}");
        let e = plan(&["--metrics-dynamic-serving-ca-secret-name=c"])
            .expect_err("no names")
            .to_string();
        assert!(e.contains("dns-names"), "{e}");
        let e = plan(&["--metrics-auth-token-review"])
            .expect_err("clear")
            .to_string();
        assert!(e.contains("needs TLS"), "{e}");
        let e = plan(&["--tls-security-profile=Old"])
            .expect_err("old")
            .to_string();
        assert!(e.contains("\"Old\""), "{e}");
    }
}
