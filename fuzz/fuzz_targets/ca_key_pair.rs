//! `capstan_pki::SigningCa::from_pem` (a CA Secret's `tls.crt`, `tls.key`
//! and `ca.crt`) on arbitrary bytes: it must return, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;

fuzz_target!(|data: &[u8]| {
    // A fixed instant (in 2096, inside the seed CAs' 100 years), so a
    // crash reproduces from its artifact.
    let Ok(now) = OffsetDateTime::from_unix_timestamp(4_000_000_000) else {
        return;
    };
    // tls.crt, tls.key and an optional ca.crt, split at NUL bytes.
    let mut parts = data.splitn(3, |b| *b == 0);
    let (Some(crt), Some(key)) = (parts.next(), parts.next()) else {
        return;
    };
    let ca_crt = parts.next();
    if let Ok(ca) = capstan_pki::SigningCa::from_pem(crt, key, ca_crt, now) {
        assert!(!ca.cert_pem().is_empty());
        assert!(ca.summary().not_after >= now);
    }
});
