//! Text renderings of typed values, shared by the encoders and the cursor: fast, allocation-free
//! writers for the encoders' hot path.
//!
//! | value | text |
//! |---|---|
//! | timestamp (µs, UTC) | `2024-01-02T03:04:05.123456Z`: RFC 3339, six fractional digits |
//! | date (days since 1970-01-01) | `2024-01-02` |
//! | datetime (µs, no zone) | `2024-01-02T03:04:05`, with `.ffffff` when the fraction is not zero |
//! | time (µs since midnight) | `03:04:05`, with `.ffffff` when the fraction is not zero |
//! | decimal (integer, scale) | exact, no exponent, no trailing fractional zeros: `-0.000000001`, `12.5`, `0` |
//! | float | the shortest text that reads back as the same double (`0.1`, `3.0`, `1e300`); `NaN`, `Infinity`, `-Infinity` |

use chrono::{DateTime, Utc};

/// Civil `(year, month, day)` of `days` since 1970-01-01 (H. Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

fn put(b: &mut [u8], mut v: u32) {
    for d in b.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Appends `YYYY-MM-DD`; `false` (nothing written) outside years 0000 to 9999.
fn write_civil_date(out: &mut Vec<u8>, days: i64) -> bool {
    let (year, month, day) = civil(days);
    if !(0..=9999).contains(&year) {
        return false;
    }
    let mut b = *b"0000-00-00";
    put(&mut b[0..4], year as u32);
    put(&mut b[5..7], month);
    put(&mut b[8..10], day);
    out.extend_from_slice(&b);
    true
}

/// Appends `HH:MM:SS` and, with `always_fraction` or a non-zero fraction, `.ffffff`.
fn write_clock(out: &mut Vec<u8>, second_of_day: u32, micros: u32, always_fraction: bool) {
    let mut b = *b"00:00:00.000000";
    put(&mut b[0..2], second_of_day / 3600);
    put(&mut b[3..5], second_of_day / 60 % 60);
    put(&mut b[6..8], second_of_day % 60);
    put(&mut b[9..15], micros);
    let n = if always_fraction || micros != 0 { 15 } else { 8 };
    out.extend_from_slice(&b[..n]);
}

fn split_micros(us: i64) -> (i64, u32, u32) {
    let secs = us.div_euclid(1_000_000);
    (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32, us.rem_euclid(1_000_000) as u32)
}

/// Appends `us` (microseconds since the epoch) as RFC 3339 UTC with six fractional digits:
/// `2024-01-02T03:04:05.123456Z`.
pub fn write_timestamp(out: &mut Vec<u8>, us: i64) {
    let (days, sod, micros) = split_micros(us);
    if !write_civil_date(out, days) {
        out.extend_from_slice(chrono_text(us, "%Y-%m-%dT%H:%M:%S%.6fZ").as_bytes());
        return;
    }
    out.push(b'T');
    write_clock(out, sod, micros, true);
    out.push(b'Z');
}

/// RFC 3339, UTC, six fractional digits.
pub fn format_timestamp(us: i64) -> String {
    let mut out = Vec::with_capacity(27);
    write_timestamp(&mut out, us);
    String::from_utf8(out).expect("ASCII")
}

/// Appends a civil datetime (microseconds since 1970-01-01T00:00:00, no zone):
/// `2024-01-02T03:04:05` or `2024-01-02T03:04:05.250000`.
pub fn write_datetime(out: &mut Vec<u8>, us: i64) {
    let (days, sod, micros) = split_micros(us);
    if !write_civil_date(out, days) {
        let fmt = if micros == 0 { "%Y-%m-%dT%H:%M:%S" } else { "%Y-%m-%dT%H:%M:%S%.6f" };
        out.extend_from_slice(chrono_text(us, fmt).as_bytes());
        return;
    }
    out.push(b'T');
    write_clock(out, sod, micros, false);
}

/// Appends a date given as days since 1970-01-01: `2024-01-02`.
pub fn write_date(out: &mut Vec<u8>, days: i32) {
    if !write_civil_date(out, i64::from(days)) {
        out.extend_from_slice(chrono_text(i64::from(days) * 86_400_000_000, "%Y-%m-%d").as_bytes());
    }
}

/// Appends a time of day given as microseconds since midnight: `03:04:05` or `03:04:05.250000`.
pub fn write_time(out: &mut Vec<u8>, us: i64) {
    let (_, sod, micros) = split_micros(us);
    write_clock(out, sod, micros, false);
}

fn chrono_text(us: i64, fmt: &str) -> String {
    match DateTime::<Utc>::from_timestamp_micros(us) {
        Some(d) => d.format(fmt).to_string(),
        None => us.to_string(),
    }
}

/// Appends an integer.
pub fn write_int(out: &mut Vec<u8>, v: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Appends a double: the shortest text that reads back as the same value.
pub fn write_float(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
    } else if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v > 0.0 {
        out.extend_from_slice(b"Infinity");
    } else {
        out.extend_from_slice(b"-Infinity");
    }
}

/// Appends the decimal whose digits (with an optional leading `-`) are `digits` and whose
/// scale is `scale`, exactly: no exponent, no trailing fractional zeros.
pub fn write_decimal_digits(out: &mut Vec<u8>, digits: &str, scale: i8) {
    let (neg, digits) = match digits.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, digits),
    };
    if scale <= 0 {
        if neg && digits != "0" {
            out.push(b'-');
        }
        out.extend_from_slice(digits.as_bytes());
        if digits != "0" {
            out.extend(std::iter::repeat_n(b'0', scale.unsigned_abs() as usize));
        }
        return;
    }
    let scale = scale as usize;
    let (int, frac) = if digits.len() > scale { digits.split_at(digits.len() - scale) } else { ("", digits) };
    let frac_zeros = scale - frac.len();
    let frac = frac.trim_end_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    if neg && !(int == "0" && frac.is_empty()) {
        out.push(b'-');
    }
    out.extend_from_slice(int.as_bytes());
    if !frac.is_empty() {
        out.push(b'.');
        out.extend(std::iter::repeat_n(b'0', frac_zeros));
        out.extend_from_slice(frac.as_bytes());
    }
}

/// Appends an `i128` decimal of `scale`.
pub fn write_decimal128(out: &mut Vec<u8>, v: i128, scale: i8) {
    // The common case (NUMERIC values below 10^9 in magnitude at scale 9) in u64 arithmetic.
    if let (1..=18, Ok(abs)) = (scale, u64::try_from(v.unsigned_abs())) {
        let scale = scale as usize;
        let p = 10u64.pow(scale as u32);
        if v < 0 {
            out.push(b'-');
        }
        write_int(out, abs / p);
        let mut frac = abs % p;
        if frac != 0 {
            let mut digits = [b'0'; 18];
            for d in digits[..scale].iter_mut().rev() {
                *d = b'0' + (frac % 10) as u8;
                frac /= 10;
            }
            let end = scale - digits[..scale].iter().rev().take_while(|&&d| d == b'0').count();
            out.push(b'.');
            out.extend_from_slice(&digits[..end]);
        }
        return;
    }
    let mut buf = itoa::Buffer::new();
    write_decimal_digits(out, buf.format(v), scale);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut v = Vec::new();
        f(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn the_fast_timestamp_writer_agrees_with_chrono() {
        let chrono = |us: i64| DateTime::<Utc>::from_timestamp_micros(us).unwrap().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
        // 0001-01-01, before and after the epoch, leap days, 9999-12-31T23:59:59.999999.
        let samples = [-62_135_596_800_000_000, -1, 0, 1, 951_782_400_000_000, 1_709_164_800_123_456, 253_402_300_799_999_999];
        for us in samples.into_iter().chain((0..20_000).map(|i| -62_135_596_800_000_000 + i * 15_778_463_123_457)) {
            assert_eq!(format_timestamp(us), chrono(us), "{us}");
        }
    }

    #[test]
    fn dates_datetimes_and_times() {
        assert_eq!(text(|o| write_date(o, 0)), "1970-01-01");
        assert_eq!(text(|o| write_date(o, 19_724)), "2024-01-02");
        assert_eq!(text(|o| write_date(o, -1)), "1969-12-31");
        assert_eq!(text(|o| write_datetime(o, 1_704_164_645_250_000)), "2024-01-02T03:04:05.250000");
        assert_eq!(text(|o| write_datetime(o, 946_684_799_000_000)), "1999-12-31T23:59:59");
        assert_eq!(text(|o| write_time(o, 11_045_250_000)), "03:04:05.250000");
        assert_eq!(text(|o| write_time(o, 0)), "00:00:00");
    }

    #[test]
    fn decimals_are_exact() {
        let d = |v: i128, s: i8| text(|o| write_decimal128(o, v, s));
        assert_eq!(d(12_345_678_901_234_567_890_123_456_789, 9), "12345678901234567890.123456789");
        assert_eq!(d(-1, 9), "-0.000000001");
        assert_eq!(d(0, 9), "0");
        assert_eq!(d(12_500_000_000, 9), "12.5");
        assert_eq!(d(-3_000_000_000, 9), "-3");
        assert_eq!(d(42, 0), "42");
        assert_eq!(d(42, -2), "4200");
        assert_eq!(d(-1_500_000_000, 9), "-1.5");
        assert_eq!(d(999_999_999_999_999_999, 9), "999999999.999999999");
        assert_eq!(d(1_000_000_000_000_000_000, 9), "1000000000");
        for v in [-123_456_789_012_345_678_i128, -7, 0, 5, 10_i128.pow(17) + 3] {
            let mut slow = Vec::new();
            write_decimal_digits(&mut slow, &v.to_string(), 9);
            assert_eq!(d(v, 9).into_bytes(), slow, "{v}");
        }
        assert_eq!(
            text(|o| write_decimal_digits(o, "12345678901234567890123456789012345678901234567890123456", 38)),
            "123456789012345678.90123456789012345678901234567890123456"
        );
    }

    #[test]
    fn floats_round_trip() {
        let f = |v: f64| text(|o| write_float(o, v));
        assert_eq!(f(3.25), "3.25");
        assert_eq!(f(-0.5), "-0.5");
        assert_eq!(f(0.1), "0.1");
        assert_eq!(f(1e300), "1e300");
        assert_eq!(f(f64::NAN), "NaN");
        assert_eq!(f(f64::NEG_INFINITY), "-Infinity");
        for v in [0.1 + 0.2, 1.0 / 3.0, 6.02214076e23, -2.2250738585072014e-308] {
            assert_eq!(f(v).parse::<f64>().unwrap(), v);
        }
    }
}
