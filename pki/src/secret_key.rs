//! A private key in PEM that cannot be printed by accident.

use zeroize::Zeroizing;

/// A PKCS#8 private key in PEM. It has no `Debug` or `Display`, and its
/// buffer is zeroed when dropped; [`SecretKeyPem::expose`] is the one way
/// to read it, for writing it into a Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKeyPem(Zeroizing<String>);

impl SecretKeyPem {
    /// Wraps a PEM string.
    #[must_use]
    pub fn new(pem: String) -> Self {
        Self(Zeroizing::new(pem))
    }

    /// The PEM text.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretKeyPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKeyPem(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let key = SecretKeyPem::new("-----BEGIN PRIVATE KEY-----\nsecret\n".into());
        assert_eq!(format!("{key:?}"), "SecretKeyPem(<redacted>)");
        assert!(key.expose().contains("secret"));
    }
}
