//! Durations as Compose and the command line write them (`1h2m3s`, `500ms`,
//! `1.5s`, a bare number of seconds), parsed with checked integer arithmetic
//! and held to a range: the one parser behind every duration a user hands in.
//!
//! No float ever becomes a `Duration`, so no input can overflow one, and a
//! bounded duration can be added to an `Instant` without overflowing it.

use std::ops::RangeInclusive;
use std::time::Duration;

/// The longest duration cryptus accepts anywhere, unless a narrower range
/// applies: 24 hours.
pub const MAX: Duration = Duration::from_secs(24 * 3600);

/// Timeouts and deadlines: something must be given time to happen.
pub const DEADLINE: RangeInclusive<Duration> = Duration::from_millis(100)..=MAX;
/// Waits that may be zero: drain, watch, lock wait, stop grace.
pub const WAIT: RangeInclusive<Duration> = Duration::ZERO..=MAX;
/// Polling intervals: often, but not a busy loop.
pub const POLL: RangeInclusive<Duration> = Duration::from_millis(10)..=Duration::from_secs(60);
/// A healthcheck's interval and timeout: the engine refuses less than 1ms.
pub const HEALTHCHECK: RangeInclusive<Duration> = Duration::from_millis(1)..=MAX;
/// How far back `logs --since` may reach: ten years.
pub const LOOKBACK: RangeInclusive<Duration> =
    Duration::ZERO..=Duration::from_secs(10 * 365 * 24 * 3600);

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Parses `text` and checks it against `range`; the error is one sentence
/// that names the value and the range.
pub fn parse_in(text: &str, range: &RangeInclusive<Duration>) -> Result<Duration, String> {
    let duration = parse(text)?;
    if range.contains(&duration) {
        return Ok(duration);
    }
    let (min, max) = (format(*range.start()), format(*range.end()));
    if duration > *range.end() {
        Err(format!(
            "{text:?} is longer than the maximum {max} (range {min} to {max})"
        ))
    } else {
        Err(format!(
            "{text:?} is shorter than the minimum {min} (range {min} to {max})"
        ))
    }
}

/// Parses a duration of any length up to [`MAX`]-free syntax limits; the
/// caller checks the range (see [`parse_in`]). A value too long to hold is
/// reported as beyond the maximum, never wrapped or rounded.
pub fn parse(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let nanos = nanos(trimmed).map_err(|problem| match problem {
        Problem::Syntax if trimmed.starts_with('-') => {
            format!("{text:?} is not a duration: it cannot be negative")
        }
        Problem::Syntax => {
            format!("{text:?} is not a duration; write it as 30s, 1m30s, 500ms or 2h")
        }
        Problem::Overflow => format!("{text:?} is longer than the maximum {}", format(MAX)),
    })?;
    // The range check happens on the Duration; anything past u64 seconds is
    // already reported as too long.
    let secs = u64::try_from(nanos / NANOS_PER_SEC)
        .map_err(|_| format!("{text:?} is longer than the maximum {}", format(MAX)))?;
    let sub = u32::try_from(nanos % NANOS_PER_SEC).unwrap_or(0);
    Ok(Duration::new(secs, sub))
}

enum Problem {
    Syntax,
    Overflow,
}

/// The total in nanoseconds, every step checked.
fn nanos(text: &str) -> Result<u128, Problem> {
    if text.is_empty() {
        return Err(Problem::Syntax);
    }
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return number(text, NANOS_PER_SEC);
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (value, tail) = rest.split_at(digits);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale: u128 = match unit {
            "h" => 3600 * NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "s" => NANOS_PER_SEC,
            "ms" => 1_000_000,
            "us" | "µs" => 1_000,
            "ns" => 1,
            _ => return Err(Problem::Syntax),
        };
        total = total
            .checked_add(number(value, scale)?)
            .ok_or(Problem::Overflow)?;
        rest = tail;
    }
    Ok(total)
}

/// `12` or `1.25` (at least one digit, at most one point) times `scale`
/// nanoseconds; fractions finer than a nanosecond are dropped.
fn number(text: &str, scale: u128) -> Result<u128, Problem> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if (whole.is_empty() && fraction.is_empty())
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(Problem::Syntax);
    }
    let mut total: u128 = 0;
    for digit in whole.bytes() {
        total = total
            .checked_mul(10)
            .and_then(|t| t.checked_add(u128::from(digit - b'0')))
            .ok_or(Problem::Overflow)?;
    }
    total = total.checked_mul(scale).ok_or(Problem::Overflow)?;
    // Nine fraction digits of the largest scale (hours) stay far below u128.
    let mut numerator: u128 = 0;
    let mut denominator: u128 = 1;
    for digit in fraction.bytes().take(12) {
        numerator = numerator * 10 + u128::from(digit - b'0');
        denominator *= 10;
    }
    total
        .checked_add(numerator * scale / denominator)
        .ok_or(Problem::Overflow)
}

/// A duration as the user would write it: `24h`, `1m30s`, `100ms`, `0s`.
pub fn format(duration: Duration) -> String {
    let (secs, millis) = (duration.as_secs(), duration.subsec_millis());
    if secs == 0 && millis == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    if millis > 0 {
        out.push_str(&format!("{millis}ms"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_style_durations() {
        let ok = |text: &str| parse(text).unwrap();
        assert_eq!(ok("10s"), Duration::from_secs(10));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("2h"), Duration::from_secs(7200));
        assert_eq!(ok("3"), Duration::from_secs(3));
        assert_eq!(ok("0.25"), Duration::from_millis(250));
        assert_eq!(ok("1h0m0.001s"), Duration::from_millis(3_600_001));
        assert_eq!(ok("7us"), Duration::from_micros(7));
        assert_eq!(ok("9ns"), Duration::from_nanos(9));
        for bad in [
            "", "s", "10 s", "-1s", "-1", "10x", "1e30", "NaN", "inf", "1..2s", ".", "1s-", "+1s",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn huge_values_are_too_long_not_wrapped() {
        for huge in [
            "18446744073709551616",
            "99999999999h",
            "999999999999999999999999999999999999999999h",
            "18446744073709551615s",
            "1000000000000000000000000000000",
        ] {
            let err = parse_in(huge, &WAIT).unwrap_err();
            assert!(err.contains("longer than the maximum 24h"), "{huge}: {err}");
        }
        assert!(parse_in("24h", &WAIT).is_ok());
        assert!(parse_in("24h0m0.001s", &WAIT).is_err());
    }

    #[test]
    fn ranges_name_their_bounds() {
        let err = parse_in("0s", &DEADLINE).unwrap_err();
        assert!(err.contains("shorter than the minimum 100ms"), "{err}");
        let err = parse_in("2m", &POLL).unwrap_err();
        assert!(err.contains("maximum 1m"), "{err}");
        assert_eq!(parse_in("87600h", &LOOKBACK), Ok(*LOOKBACK.end()));
    }
}
