//! Durations as cert-manager writes them: Go's `time.ParseDuration` syntax
//! (`15s`, `1.5h`, `2h45m`, `300ms`), positive and within Go's range.
//!
//! Total on any input: every malformed, zero, negative or absurd duration is
//! an [`Error::Duration`] saying what to write instead, never a panic or a
//! silent wrap-around.

use std::time::Duration;

use crate::error::{Error, Result};

/// Longest duration accepted: Go's `time.Duration` maximum (`i64::MAX`
/// nanoseconds, `2562047h47m16.854775807s`, about 292 years). cert-manager
/// cannot express anything longer, so nothing longer is meaningful.
pub const MAX_DURATION: Duration = Duration::from_nanos(i64::MAX as u64);

const NANOS_PER_UNIT: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("\u{b5}s", 1_000),  // µs, MICRO SIGN
    ("\u{3bc}s", 1_000), // μs, GREEK SMALL LETTER MU
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Fraction digits beyond this many are ignored (they are below a
/// nanosecond even for hours), which keeps the arithmetic in `u128`.
const MAX_FRACTION_DIGITS: u32 = 24;

fn invalid(text: &str) -> Error {
    Error::Duration(format!(
        "{text:?} is not a duration (write it like \"15s\", \"5m\", \"1h30m\" or \"2160h\")"
    ))
}

/// Parses a positive duration in Go's syntax: an optional `+`, then one or
/// more decimal numbers (with an optional fraction), each followed by a unit
/// (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`).
///
/// # Errors
/// [`Error::Duration`] when the text is not a duration, is zero or
/// negative, or is longer than [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration> {
    let trimmed = text.trim();
    let (negative, mut rest) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    if rest.is_empty() {
        return Err(invalid(text));
    }
    let too_long = || {
        Error::Duration(format!(
            "{text:?} is longer than the maximum duration of 2562047h (about 292 years)"
        ))
    };
    // Nanoseconds, saturating just above the limit: enough to say "too long".
    let limit = u128::from(MAX_DURATION.as_secs()) * 1_000_000_000
        + u128::from(MAX_DURATION.subsec_nanos());
    let mut total: u128 = 0;
    if rest != "0" {
        while !rest.is_empty() {
            let (nanos, after) = component(rest).ok_or_else(|| invalid(text))?;
            total = total.saturating_add(nanos).min(limit + 1);
            rest = after;
        }
    }
    if negative || total == 0 {
        return Err(Error::Duration(format!(
            "{text:?} must be longer than zero"
        )));
    }
    if total > limit {
        return Err(too_long());
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| too_long())?;
    let nanos = u32::try_from(total % 1_000_000_000).map_err(|_| too_long())?;
    Ok(Duration::new(secs, nanos))
}

/// One `<number>[.<fraction>]<unit>` at the start of `s`: its nanoseconds
/// (saturating) and what follows.
fn component(s: &str) -> Option<(u128, &str)> {
    let digits = |t: &str| t.bytes().take_while(u8::is_ascii_digit).count();
    let int_len = digits(s);
    let (int_part, mut rest) = s.split_at(int_len);
    let mut fraction = "";
    if let Some(after_dot) = rest.strip_prefix('.') {
        let frac_len = digits(after_dot);
        fraction = &after_dot[..frac_len];
        rest = &after_dot[frac_len..];
    }
    if int_part.is_empty() && fraction.is_empty() {
        return None;
    }
    let unit_len = rest
        .find(|c: char| c == '.' || c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (unit, after) = rest.split_at(unit_len);
    let per_unit = NANOS_PER_UNIT
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, n)| *n)?;
    // The integer part saturates: anything that long is over the limit.
    let whole = int_part.bytes().fold(0u128, |acc, d| {
        acc.saturating_mul(10)
            .saturating_add(u128::from(d - b'0'))
            .min(u128::from(u64::MAX))
    });
    let mut frac_value: u128 = 0;
    let mut scale: u128 = 1;
    for d in fraction.bytes().take(MAX_FRACTION_DIGITS as usize) {
        frac_value = frac_value * 10 + u128::from(d - b'0');
        scale *= 10;
    }
    let nanos = whole
        .saturating_mul(per_unit)
        .saturating_add(frac_value.saturating_mul(per_unit) / scale);
    Some((nanos, after))
}

/// Checks a lifetime against a limit, for values that did not come through
/// [`parse_duration`] (or whose limit is tighter).
///
/// # Errors
/// [`Error::Duration`] naming `what` when `value` is zero or over `limit`.
pub fn check_lifetime(what: &str, value: Duration, limit: Duration) -> Result<Duration> {
    if value.is_zero() {
        return Err(Error::Duration(format!("{what} must be longer than zero")));
    }
    if value > limit {
        return Err(Error::Duration(format!(
            "{what} of {}h is longer than the limit of {}h",
            value.as_secs() / 3600,
            limit.as_secs() / 3600
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Duration {
        parse_duration(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn err(text: &str) -> String {
        match parse_duration(text) {
            Ok(d) => panic!("{text} parsed as {d:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn go_syntax_parses_as_go_does() {
        assert_eq!(ok("15s"), Duration::from_secs(15));
        assert_eq!(ok("5m"), Duration::from_secs(300));
        assert_eq!(ok("2160h"), Duration::from_secs(2160 * 3600));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("2h45m10s"), Duration::from_secs(9910));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("1.s"), Duration::from_secs(1));
        assert_eq!(ok("+10s"), Duration::from_secs(10));
        assert_eq!(ok("300ms"), Duration::from_millis(300));
        assert_eq!(ok("10us"), Duration::from_micros(10));
        assert_eq!(ok("10\u{b5}s"), Duration::from_micros(10));
        assert_eq!(ok("10\u{3bc}s"), Duration::from_micros(10));
        assert_eq!(ok("7ns"), Duration::from_nanos(7));
        assert_eq!(ok("1h1h"), Duration::from_secs(7200));
        assert_eq!(ok(" 5m "), Duration::from_secs(300));
        // Fraction digits far below a nanosecond are dropped, as in Go.
        assert_eq!(
            ok("1.0000000000000000000000000001s"),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn go_maximum_is_accepted_and_one_more_nanosecond_is_not() {
        assert_eq!(ok("2562047h47m16.854775807s"), MAX_DURATION);
        assert!(err("2562047h47m16.854775808s").contains("longer than the maximum"));
    }

    #[test]
    fn absurd_durations_are_refused_not_wrapped() {
        for text in [
            "100000000h",
            "2562048h",
            "99999999999999999999999999999999999999999999h",
            "18446744073709551616ns",
            "9223372036854775807s",
        ] {
            let e = err(text);
            assert!(e.contains("longer than the maximum"), "{text}: {e}");
        }
    }

    #[test]
    fn zero_and_negative_are_refused() {
        for text in ["0", "0s", "0h0m", "-5m", "-0", "-1ns", "0.0000000001s"] {
            let e = err(text);
            assert!(e.contains("longer than zero"), "{text}: {e}");
        }
    }

    #[test]
    fn malformed_durations_say_how_to_write_one() {
        for text in [
            "",
            " ",
            "+",
            "-",
            "h",
            "5",
            "5 m",
            "ninety days",
            "1d",
            "5M",
            ".s",
            "1..5s",
            "1h-5m",
            "P1D",
            "1e3s",
            "--5s",
            "5s5",
        ] {
            let e = err(text);
            assert!(e.contains("is not a duration"), "{text:?}: {e}");
            assert!(e.contains("15s"), "{text:?}: {e}");
        }
    }

    #[test]
    fn lifetimes_are_checked_against_their_limit() {
        let year = Duration::from_secs(365 * 86_400);
        assert_eq!(check_lifetime("the CA lifetime", year, 2 * year), Ok(year));
        let e = check_lifetime("the CA lifetime", 3 * year, 2 * year).expect_err("too long");
        assert_eq!(
            e.to_string(),
            "the CA lifetime of 26280h is longer than the limit of 17520h"
        );
        assert!(check_lifetime("x", Duration::ZERO, year).is_err());
    }
}
