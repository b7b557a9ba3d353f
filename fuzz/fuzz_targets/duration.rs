//! `capstan_pki::parse_duration` on arbitrary text: it must return, never
//! panic, and what it accepts is positive, within Go's range, and parses
//! back to the same value when written in whole nanoseconds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = capstan_pki::parse_duration(text) {
        assert!(!d.is_zero());
        assert!(d <= capstan_pki::MAX_DURATION);
        let nanos = format!("{}ns", d.as_nanos());
        assert_eq!(capstan_pki::parse_duration(&nanos), Ok(d), "{text:?}");
    }
});
