//! The serving certificate: a throwaway CA and a leaf for 127.0.0.1 and
//! localhost, made with rcgen, served with rustls on ring.

use std::sync::Arc;

use anyhow::Context as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};

/// PEM material for the server and its clients.
#[derive(Debug, Clone)]
pub struct ServingCert {
    /// The CA certificate clients trust (kubeconfig certificate-authority-data).
    pub ca_pem: String,
    /// The leaf certificate.
    pub cert_pem: String,
    /// The leaf's PKCS#8 private key.
    pub key_pem: String,
}

/// Installs the ring crypto provider as rustls' process default, once.
pub fn install_crypto_provider() {
    // Fails only when a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl ServingCert {
    /// A new CA and a leaf for `127.0.0.1`, `::1` and `localhost`.
    pub fn generate() -> anyhow::Result<Self> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "capstan test apiserver CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate()?;
        let mut leaf = CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "::1".to_string(),
            "localhost".to_string(),
        ])?;
        leaf.distinguished_name
            .push(DnType::CommonName, "capstan test apiserver");
        leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            cert_pem: leaf_cert.pem(),
            key_pem: leaf_key.serialize_pem(),
        })
    }

    /// As persisted in a data dir.
    pub fn to_json(&self) -> Value {
        json!({"ca": self.ca_pem, "cert": self.cert_pem, "key": self.key_pem})
    }

    /// Restores persisted material.
    pub fn from_json(v: &Value) -> Option<Self> {
        Some(Self {
            ca_pem: v["ca"].as_str()?.to_string(),
            cert_pem: v["cert"].as_str()?.to_string(),
            key_pem: v["key"].as_str()?.to_string(),
        })
    }

    /// A rustls server config offering HTTP/1.1.
    pub fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        install_crypto_provider();
        let certs: Vec<CertificateDer<'static>> = pem::parse_many(&self.cert_pem)?
            .into_iter()
            .map(|p| CertificateDer::from(p.contents().to_vec()))
            .collect();
        let key = pem::parse(&self.key_pem)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.contents().to_vec()));
        let mut cfg = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .context("building the TLS server config")?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}
