//! Cursor values: the watermark of an incremental export, typed like its column.
//!
//! Canonical text forms (stored as `last_exported_value` in the metadata table):
//! - TIMESTAMP: RFC 3339 in UTC with exactly six fractional digits, `2024-01-02T03:04:05.123456Z`
//! - DATETIME: `2024-01-02T03:04:05.123456` (six fractional digits)
//! - DATE: `2024-01-02`
//! - INT64: the decimal integer

use std::cmp::Ordering;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use crate::text::format_timestamp;

/// Column types a cursor may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorType {
    Timestamp,
    Datetime,
    Date,
    Int64,
}

impl CursorType {
    /// From a BigQuery type name (standard or legacy).
    pub fn from_bigquery(type_name: &str) -> Option<Self> {
        match type_name {
            "TIMESTAMP" => Some(Self::Timestamp),
            "DATETIME" => Some(Self::Datetime),
            "DATE" => Some(Self::Date),
            "INT64" | "INTEGER" => Some(Self::Int64),
            _ => None,
        }
    }

    /// The standard SQL type name, used for query parameters.
    pub fn sql_name(self) -> &'static str {
        match self {
            Self::Timestamp => "TIMESTAMP",
            Self::Datetime => "DATETIME",
            Self::Date => "DATE",
            Self::Int64 => "INT64",
        }
    }
}

/// A typed cursor value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorValue {
    /// Microseconds since the Unix epoch, UTC.
    Timestamp(i64),
    Datetime(NaiveDateTime),
    Date(NaiveDate),
    Int64(i64),
}

impl CursorValue {
    /// Its type.
    pub fn ty(&self) -> CursorType {
        match self {
            Self::Timestamp(_) => CursorType::Timestamp,
            Self::Datetime(_) => CursorType::Datetime,
            Self::Date(_) => CursorType::Date,
            Self::Int64(_) => CursorType::Int64,
        }
    }

    /// Parses the canonical text form (and, for TIMESTAMP, int64 microseconds or float
    /// seconds as BigQuery's REST API sends them).
    pub fn parse(ty: CursorType, s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a valid {} value", ty.sql_name());
        match ty {
            CursorType::Int64 => s.parse().map(Self::Int64).map_err(|_| bad()),
            CursorType::Date => NaiveDate::parse_from_str(s, "%Y-%m-%d").map(Self::Date).map_err(|_| bad()),
            CursorType::Datetime => NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
                .map(Self::Datetime)
                .map_err(|_| bad()),
            CursorType::Timestamp => {
                if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
                    return Ok(Self::Timestamp(dt.with_timezone(&Utc).timestamp_micros()));
                }
                parse_rest_timestamp(s).map(Self::Timestamp).ok_or_else(bad)
            }
        }
    }

    /// Parses `s` into `ty` leniently, for values written by other tools: what
    /// [`CursorValue::parse`] takes, and besides a TIMESTAMP without a zone (UTC), a date for a
    /// TIMESTAMP or DATETIME (its midnight), and a timestamp for a DATE (its day).
    pub fn parse_loose(ty: CursorType, s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(v) = Self::parse(ty, s) {
            return Ok(v);
        }
        let bad = || format!("{s:?} is not a valid {} value", ty.sql_name());
        let naive = Self::parse(CursorType::Datetime, s)
            .ok()
            .and_then(|v| match v {
                Self::Datetime(dt) => Some(dt),
                _ => None,
            })
            .or_else(|| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)))
            .or_else(|| DateTime::parse_from_rfc3339(s).ok().map(|d| d.with_timezone(&Utc).naive_utc()));
        let naive = naive.ok_or_else(bad)?;
        match ty {
            CursorType::Timestamp => Ok(Self::Timestamp(naive.and_utc().timestamp_micros())),
            CursorType::Datetime => Ok(Self::Datetime(naive)),
            CursorType::Date => Ok(Self::Date(naive.date())),
            CursorType::Int64 => Err(bad()),
        }
    }

    /// The value one unit (microsecond, day, integer) below this one.
    pub fn minus_one_unit(&self) -> Self {
        match self {
            Self::Timestamp(us) => Self::Timestamp(us.saturating_sub(1)),
            Self::Datetime(dt) => Self::Datetime(dt.checked_sub_signed(chrono::TimeDelta::microseconds(1)).unwrap_or(*dt)),
            Self::Date(d) => Self::Date(d.pred_opt().unwrap_or(*d)),
            Self::Int64(i) => Self::Int64(i.saturating_sub(1)),
        }
    }

    /// The canonical text form.
    pub fn canonical(&self) -> String {
        match self {
            Self::Timestamp(us) => format_timestamp(*us),
            Self::Datetime(dt) => dt.format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
            Self::Date(d) => d.format("%Y-%m-%d").to_string(),
            Self::Int64(i) => i.to_string(),
        }
    }

    /// The value as a query parameter literal of its type.
    pub fn param_literal(&self) -> String {
        match self {
            Self::Timestamp(us) => {
                DateTime::<Utc>::from_timestamp_micros(*us).map(|d| d.format("%Y-%m-%d %H:%M:%S%.6f+00:00").to_string()).unwrap_or_default()
            }
            other => other.canonical(),
        }
    }

    /// The value as a typed SQL literal (`TIMESTAMP '…+00:00'`, `DATETIME '…'`, `DATE '…'`, or
    /// the integer), for a predicate that takes no parameters (the Storage Read API's row
    /// restriction). Built from the typed value only: no text of the config's.
    pub fn sql_literal(&self) -> String {
        match self {
            Self::Timestamp(_) => format!("TIMESTAMP '{}'", self.param_literal()),
            Self::Datetime(dt) => format!("DATETIME '{}'", dt.format("%Y-%m-%d %H:%M:%S%.6f")),
            Self::Date(d) => format!("DATE '{}'", d.format("%Y-%m-%d")),
            Self::Int64(i) => i.to_string(),
        }
    }

    /// The value `amount` earlier, in the cursor's own unit: seconds for TIMESTAMP and
    /// DATETIME, days for DATE, units for INT64. Saturates at the type's smallest value.
    pub fn minus(&self, amount: u64) -> Self {
        let n = i64::try_from(amount).unwrap_or(i64::MAX);
        match self {
            Self::Timestamp(us) => Self::Timestamp(us.saturating_sub(n.saturating_mul(1_000_000))),
            Self::Datetime(dt) => {
                Self::Datetime(chrono::TimeDelta::try_seconds(n).and_then(|d| dt.checked_sub_signed(d)).unwrap_or(NaiveDateTime::MIN))
            }
            Self::Date(d) => Self::Date(chrono::TimeDelta::try_days(n).and_then(|x| d.checked_sub_signed(x)).unwrap_or(NaiveDate::MIN)),
            Self::Int64(i) => Self::Int64(i.saturating_sub(n)),
        }
    }

    /// The smaller of two values of the same type (`self` across types).
    pub fn min(self, other: Self) -> Self {
        match self.compare(&other) {
            Some(Ordering::Greater) => other,
            _ => self,
        }
    }

    /// Compares two values of the same type; `None` across types.
    pub fn compare(&self, other: &Self) -> Option<Ordering> {
        match (self, other) {
            (Self::Timestamp(a), Self::Timestamp(b)) | (Self::Int64(a), Self::Int64(b)) => Some(a.cmp(b)),
            (Self::Datetime(a), Self::Datetime(b)) => Some(a.cmp(b)),
            (Self::Date(a), Self::Date(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

/// A BigQuery REST TIMESTAMP: int64 microseconds, or float seconds (`1704164645.123456`,
/// `1.704164645123456E9`). Float seconds are parsed as decimal text, not through f64, so
/// microseconds survive.
pub fn parse_rest_timestamp(s: &str) -> Option<i64> {
    if !s.contains(['.', 'e', 'E']) {
        return s.parse().ok();
    }
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], s[i + 1..].parse::<i32>().ok()?),
        None => (s, 0),
    };
    let neg = mantissa.starts_with('-');
    let m = mantissa.trim_start_matches(['-', '+']);
    let (int, frac) = m.split_once('.').unwrap_or((m, ""));
    let mut digits: String = format!("{int}{frac}");
    let point = int.len() as i32 + exp + 6; // digits before the point of the microsecond value
    if point < 0 {
        return Some(0);
    }
    let point = point as usize;
    while digits.len() < point {
        digits.push('0');
    }
    let whole = &digits[..point];
    let v: i64 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {

    #[test]
    fn loose_values_of_other_tools_parse_into_the_cursor_type() {
        let ts = |s| CursorValue::parse_loose(CursorType::Timestamp, s).map(|v| v.canonical());
        assert_eq!(ts("2024-01-01T00:00:05").as_deref(), Ok("2024-01-01T00:00:05.000000Z"));
        assert_eq!(ts("2024-01-01 00:00:05.5").as_deref(), Ok("2024-01-01T00:00:05.500000Z"));
        assert_eq!(ts("2024-01-01").as_deref(), Ok("2024-01-01T00:00:00.000000Z"));
        assert_eq!(ts("2024-01-01T02:00:00+02:00").as_deref(), Ok("2024-01-01T00:00:00.000000Z"));
        let day = CursorValue::parse_loose(CursorType::Date, "2024-03-01T10:00:00").unwrap();
        assert_eq!(day.canonical(), "2024-03-01");
        assert_eq!(day.minus_one_unit().canonical(), "2024-02-29");
        assert!(CursorValue::parse_loose(CursorType::Int64, "2024-01-01").is_err());
        assert!(ts("yesterday").unwrap_err().contains("\"yesterday\""));
    }

    use super::*;

    #[test]
    fn timestamps_keep_microseconds() {
        assert_eq!(parse_rest_timestamp("1704164645123456"), Some(1704164645123456));
        assert_eq!(parse_rest_timestamp("1704164645.123456"), Some(1704164645123456));
        assert_eq!(parse_rest_timestamp("1.704164645123456E9"), Some(1704164645123456));
        assert_eq!(parse_rest_timestamp("1704067200.0"), Some(1704067200000000));
        assert_eq!(parse_rest_timestamp("0.0"), Some(0));
        let v = CursorValue::parse(CursorType::Timestamp, "1704164645123456").unwrap();
        assert_eq!(v.canonical(), "2024-01-02T03:04:05.123456Z");
        assert_eq!(CursorValue::parse(CursorType::Timestamp, &v.canonical()).unwrap(), v);
        assert_eq!(v.param_literal(), "2024-01-02 03:04:05.123456+00:00");
    }

    #[test]
    fn other_types_round_trip_and_compare() {
        for (ty, s) in [(CursorType::Datetime, "2024-01-02T03:04:05.000001"), (CursorType::Date, "2024-01-02"), (CursorType::Int64, "-42")]
        {
            let v = CursorValue::parse(ty, s).unwrap();
            assert_eq!(v.canonical(), s);
        }
        let a = CursorValue::parse(CursorType::Datetime, "2024-01-02T03:04:05").unwrap();
        let b = CursorValue::parse(CursorType::Datetime, "2024-01-02T03:04:05.5").unwrap();
        assert_eq!(a.compare(&b), Some(Ordering::Less));
        assert_eq!(a.compare(&CursorValue::Int64(1)), None);
        assert!(CursorValue::parse(CursorType::Int64, "1; DROP").is_err());
    }

    #[test]
    fn minus_is_in_the_cursors_own_unit() {
        let ts = CursorValue::parse(CursorType::Timestamp, "2024-01-02T03:04:05.000001Z").unwrap();
        assert_eq!(ts.minus(3600).canonical(), "2024-01-02T02:04:05.000001Z");
        let dt = CursorValue::parse(CursorType::Datetime, "2024-01-02T03:04:05").unwrap();
        assert_eq!(dt.minus(86_400).canonical(), "2024-01-01T03:04:05.000000");
        // DATE: days, not seconds rounded up to days.
        let d = CursorValue::parse(CursorType::Date, "2024-01-05").unwrap();
        assert_eq!(d.minus(3).canonical(), "2024-01-02");
        assert_eq!(CursorValue::Int64(10).minus(3), CursorValue::Int64(7));
        // Far too much saturates instead of panicking.
        assert_eq!(CursorValue::Int64(i64::MIN + 1).minus(5), CursorValue::Int64(i64::MIN));
        assert_eq!(d.minus(u64::MAX).canonical(), NaiveDate::MIN.format("%Y-%m-%d").to_string());
        assert_eq!(dt.minus(u64::MAX), CursorValue::Datetime(NaiveDateTime::MIN));
        assert_eq!(CursorValue::Int64(3).min(CursorValue::Int64(2)), CursorValue::Int64(2));
    }
}
