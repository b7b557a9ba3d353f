//! `capstan_pki::normalize_bundle` on arbitrary inputs: it must return, never
//! panic, and a bundle it produces must normalize to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;

fuzz_target!(|data: &[u8]| {
    // A fixed instant (in 2096, inside the seed CAs' 100 years), so a
    // crash reproduces from its artifact.
    let Ok(now) = OffsetDateTime::from_unix_timestamp(4_000_000_000) else {
        return;
    };
    // Up to three inputs, split at NUL bytes.
    let inputs: Vec<&[u8]> = data.splitn(3, |b| *b == 0).collect();
    if let Ok(bundle) = capstan_pki::normalize_bundle(&inputs, now) {
        let again = capstan_pki::normalize_bundle(&[bundle.pem.as_bytes()], now)
            .expect("a normalized bundle normalizes again");
        assert_eq!(again, bundle, "normalizing is idempotent");
    }
    for input in inputs {
        let _ = capstan_pki::summarize(input);
    }
});
