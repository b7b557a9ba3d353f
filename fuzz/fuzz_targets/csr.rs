//! `capstan_pki::parse_csr` on arbitrary bytes (PEM or DER): it must return,
//! never panic, and what it accepts must be a request it can describe.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(csr) = capstan_pki::parse_csr(data) {
        assert!(!csr.key_algorithm.is_empty());
        let _ = csr.subject_is_empty();
    }
});
