//! MySQL's binary-protocol values decoded into Arrow builders: each row's values are parsed by
//! mysql_async and written into their column's builder (text and bytes copied once, from the
//! row into the builder's buffer).
//!
//! The mapping is in the crate docs; [`plan`] decides it per column from the column's metadata
//! (type, flags, character set, length, decimals), [`ColumnBuilder`] applies it.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Decimal256Builder, Float64Builder, Int64Builder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::ArrayRef;
use arrow_buffer::i256;
use arrow_schema::{DataType, Field, TimeUnit};
use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use ferry_core::cursor::{CursorType, CursorValue};
use ferry_core::rows::{json_field, text_field};
use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::{Column, Value};

use crate::component::quote_identifier;

/// BigQuery NUMERIC: 38 digits, 9 after the point.
pub const NUMERIC: (u8, i8) = (38, 9);
/// BigQuery BIGNUMERIC: 76 digits, 38 after the point.
pub const BIGNUMERIC: (u8, i8) = (76, 38);

/// The character set number of binary strings (`BINARY`, `VARBINARY`, `BLOB`).
const BINARY_CHARSET: u16 = 63;

/// How one column is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decode {
    /// `TINYINT(1)` (`BOOL`): 0 or 1.
    Bool,
    /// `BIT(1)`.
    Bit,
    /// Integers that fit INT64: signed integers, unsigned ones up to `INT UNSIGNED`, `YEAR`.
    Int,
    /// `BIGINT UNSIGNED`, as NUMERIC.
    UInt64,
    /// `BIT(n)` for n > 1, as INT64.
    Bits,
    Float,
    /// `DECIMAL(p, s)` that fits NUMERIC.
    Numeric,
    /// Any other `DECIMAL`.
    BigNumeric,
    /// Character strings, `ENUM`, `SET`, and `GEOMETRY` as WKT text.
    Text,
    /// `JSON` (MySQL), and MariaDB's `JSON` of a table (a `LONGTEXT` checked by `json_valid`).
    Json,
    /// Binary strings.
    Binary,
    Date,
    /// `DATETIME`.
    Datetime,
    /// `TIMESTAMP`, in UTC (the session's time zone).
    Timestamp,
    Time,
    /// A column of type NULL (`SELECT NULL AS x`): always NULL.
    Null,
}

/// One result column: how it is selected, decoded and typed.
#[derive(Debug, Clone)]
pub struct ColumnPlan {
    pub name: String,
    /// The column's type as MySQL names it (`BIGINT UNSIGNED`, `DECIMAL(10,2)`), for messages.
    pub sql_type: String,
    /// The expression selected in place of the column (`ST_AsText(s.`g`)`), for types read as
    /// text.
    pub select: Option<String>,
    pub decode: Decode,
    pub field: Field,
}

impl ColumnPlan {
    /// A plan reading the column as JSON text (MariaDB's `JSON`, found in the catalog).
    pub fn as_json(&mut self) {
        self.decode = Decode::Json;
        self.sql_type = "JSON".into();
        self.field = json_field(&self.name);
    }
}

fn is_text_type(ty: ColumnType) -> bool {
    use ColumnType::*;
    matches!(ty, MYSQL_TYPE_STRING | MYSQL_TYPE_VAR_STRING | MYSQL_TYPE_VARCHAR | MYSQL_TYPE_TINY_BLOB | MYSQL_TYPE_MEDIUM_BLOB)
        || matches!(ty, MYSQL_TYPE_LONG_BLOB | MYSQL_TYPE_BLOB | MYSQL_TYPE_ENUM | MYSQL_TYPE_SET)
}

/// Whether a column may be MariaDB's `JSON`: a text column of a BLOB type (`LONGTEXT`).
pub fn maybe_json(column: &Column) -> bool {
    use ColumnType::*;
    matches!(column.column_type(), MYSQL_TYPE_LONG_BLOB | MYSQL_TYPE_BLOB) && column.character_set() != BINARY_CHARSET
}

/// The precision and scale of a `DECIMAL` column: MySQL sends the display length (digits, a
/// sign unless UNSIGNED, a point when there is a scale) and the scale.
pub fn decimal_precision(column: &Column) -> (u32, u32) {
    let (length, scale) = (column.column_length(), column.decimals() as u32);
    let unsigned = column.flags().contains(ColumnFlags::UNSIGNED_FLAG);
    let precision = length.saturating_sub(u32::from(scale > 0)).saturating_sub(u32::from(!unsigned && length > 0));
    (precision, scale)
}

/// The plan of a result column, or why ferry cannot read it (naming the type).
pub fn plan(column: &Column) -> Result<ColumnPlan, String> {
    use ColumnType::*;
    let name = column.name_str().into_owned();
    let flags = column.flags();
    let unsigned = flags.contains(ColumnFlags::UNSIGNED_FLAG);
    let ty = column.column_type();
    let sign = if unsigned { " UNSIGNED" } else { "" };
    let field = |t: DataType| Field::new(&name, t, true);
    let (decode, sql_type, f) = match ty {
        MYSQL_TYPE_TINY if column.column_length() == 1 => (Decode::Bool, "TINYINT(1)".to_owned(), field(DataType::Boolean)),
        MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_INT24 | MYSQL_TYPE_LONG => {
            let n = match ty {
                MYSQL_TYPE_TINY => "TINYINT",
                MYSQL_TYPE_SHORT => "SMALLINT",
                MYSQL_TYPE_INT24 => "MEDIUMINT",
                _ => "INT",
            };
            (Decode::Int, format!("{n}{sign}"), field(DataType::Int64))
        }
        MYSQL_TYPE_LONGLONG if unsigned => {
            (Decode::UInt64, "BIGINT UNSIGNED".to_owned(), field(DataType::Decimal128(NUMERIC.0, NUMERIC.1)))
        }
        MYSQL_TYPE_LONGLONG => (Decode::Int, "BIGINT".to_owned(), field(DataType::Int64)),
        MYSQL_TYPE_YEAR => (Decode::Int, "YEAR".to_owned(), field(DataType::Int64)),
        MYSQL_TYPE_FLOAT => (Decode::Float, "FLOAT".to_owned(), field(DataType::Float64)),
        MYSQL_TYPE_DOUBLE => (Decode::Float, "DOUBLE".to_owned(), field(DataType::Float64)),
        MYSQL_TYPE_DECIMAL | MYSQL_TYPE_NEWDECIMAL => {
            let (p, s) = decimal_precision(column);
            let sql_type = format!("DECIMAL({p},{s}){sign}");
            if s <= NUMERIC.1 as u32 && p.saturating_sub(s) <= (NUMERIC.0 - NUMERIC.1 as u8) as u32 {
                (Decode::Numeric, sql_type, field(DataType::Decimal128(NUMERIC.0, NUMERIC.1)))
            } else {
                (Decode::BigNumeric, sql_type, field(DataType::Decimal256(BIGNUMERIC.0, BIGNUMERIC.1)))
            }
        }
        MYSQL_TYPE_JSON => (Decode::Json, "JSON".to_owned(), json_field(&name)),
        _ if is_text_type(ty) => {
            if flags.contains(ColumnFlags::ENUM_FLAG) || ty == MYSQL_TYPE_ENUM {
                (Decode::Text, "ENUM".to_owned(), field(DataType::Utf8))
            } else if flags.contains(ColumnFlags::SET_FLAG) || ty == MYSQL_TYPE_SET {
                (Decode::Text, "SET".to_owned(), field(DataType::Utf8))
            } else if column.character_set() == BINARY_CHARSET {
                (Decode::Binary, binary_type_name(ty).to_owned(), field(DataType::Binary))
            } else {
                (Decode::Text, text_type_name(ty).to_owned(), field(DataType::Utf8))
            }
        }
        MYSQL_TYPE_BIT if column.column_length() == 1 => (Decode::Bit, "BIT(1)".to_owned(), field(DataType::Boolean)),
        MYSQL_TYPE_BIT => (Decode::Bits, format!("BIT({})", column.column_length()), field(DataType::Int64)),
        MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => (Decode::Date, "DATE".to_owned(), field(DataType::Date32)),
        MYSQL_TYPE_DATETIME => (Decode::Datetime, "DATETIME".to_owned(), field(DataType::Timestamp(TimeUnit::Microsecond, None))),
        MYSQL_TYPE_TIMESTAMP => {
            (Decode::Timestamp, "TIMESTAMP".to_owned(), field(DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))))
        }
        MYSQL_TYPE_TIME => (Decode::Time, "TIME".to_owned(), field(DataType::Time64(TimeUnit::Microsecond))),
        MYSQL_TYPE_NULL => (Decode::Null, "NULL".to_owned(), field(DataType::Utf8)),
        MYSQL_TYPE_GEOMETRY => {
            let select = format!("ST_AsText(s.{})", quote_identifier(&name));
            return Ok(ColumnPlan {
                field: text_field(&name, "GEOMETRY"),
                name,
                sql_type: "GEOMETRY".into(),
                select: Some(select),
                decode: Decode::Text,
            });
        }
        other => return Err(format!("type {} cannot be delivered: ferry has no mapping for it", type_name(other))),
    };
    Ok(ColumnPlan { name, sql_type, select: None, decode, field: f })
}

fn text_type_name(ty: ColumnType) -> &'static str {
    use ColumnType::*;
    match ty {
        MYSQL_TYPE_STRING => "CHAR",
        MYSQL_TYPE_TINY_BLOB => "TINYTEXT",
        MYSQL_TYPE_MEDIUM_BLOB => "MEDIUMTEXT",
        MYSQL_TYPE_LONG_BLOB => "LONGTEXT",
        MYSQL_TYPE_BLOB => "TEXT",
        _ => "VARCHAR",
    }
}

fn binary_type_name(ty: ColumnType) -> &'static str {
    use ColumnType::*;
    match ty {
        MYSQL_TYPE_STRING => "BINARY",
        MYSQL_TYPE_TINY_BLOB => "TINYBLOB",
        MYSQL_TYPE_MEDIUM_BLOB => "MEDIUMBLOB",
        MYSQL_TYPE_LONG_BLOB => "LONGBLOB",
        MYSQL_TYPE_BLOB => "BLOB",
        _ => "VARBINARY",
    }
}

/// A protocol type's name without its `MYSQL_TYPE_` prefix (`VECTOR`).
fn type_name(ty: ColumnType) -> String {
    let debug = format!("{ty:?}");
    debug.strip_prefix("MYSQL_TYPE_").unwrap_or(&debug).to_owned()
}

/// The cursor type of a column; `None` for types that cannot be a cursor.
pub fn cursor_type(column: &Column) -> Option<CursorType> {
    use ColumnType::*;
    Some(match column.column_type() {
        MYSQL_TYPE_TIMESTAMP => CursorType::Timestamp,
        MYSQL_TYPE_DATETIME => CursorType::Datetime,
        MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => CursorType::Date,
        MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_INT24 | MYSQL_TYPE_LONG | MYSQL_TYPE_LONGLONG => CursorType::Int64,
        _ => return None,
    })
}

/// A cursor value of type `ty`; `None` for NULL and for a zero date.
pub fn cursor_value(ty: CursorType, value: &Value) -> Result<Option<CursorValue>, String> {
    if *value == Value::NULL {
        return Ok(None);
    }
    Ok(match ty {
        CursorType::Timestamp => datetime(value)?.map(|dt| CursorValue::Timestamp(dt.and_utc().timestamp_micros())),
        CursorType::Datetime => datetime(value)?.map(CursorValue::Datetime),
        CursorType::Date => date(value)?.map(CursorValue::Date),
        CursorType::Int64 => Some(CursorValue::Int64(integer(value)?)),
    })
}

/// A cursor value as a statement parameter: dates and times as MySQL's DATETIME, integers as
/// BIGINT.
pub fn cursor_param(value: &CursorValue) -> Result<Value, String> {
    Ok(match value {
        CursorValue::Timestamp(us) => {
            let dt = chrono::DateTime::from_timestamp_micros(*us).ok_or_else(|| format!("timestamp {us} µs is out of range"))?;
            datetime_param(dt.naive_utc())
        }
        CursorValue::Datetime(dt) => datetime_param(*dt),
        CursorValue::Date(d) => datetime_param(d.and_time(NaiveTime::MIN)),
        CursorValue::Int64(i) => Value::Int(*i),
    })
}

/// A DATETIME parameter.
pub fn datetime_param(dt: NaiveDateTime) -> Value {
    use chrono::{Datelike, Timelike};
    let year = u16::try_from(dt.year()).unwrap_or(0);
    Value::Date(year, dt.month() as u8, dt.day() as u8, dt.hour() as u8, dt.minute() as u8, dt.second() as u8, dt.nanosecond() / 1000)
}

/// A DATETIME or TIMESTAMP value; `None` for a zero date (a zero month or day).
pub fn datetime(value: &Value) -> Result<Option<NaiveDateTime>, String> {
    match *value {
        Value::Date(_, 0, _, _, _, _, _) | Value::Date(_, _, 0, _, _, _, _) => Ok(None),
        Value::Date(y, mo, d, h, mi, s, us) => {
            let date = NaiveDate::from_ymd_opt(y as i32, mo as u32, d as u32);
            let time = NaiveTime::from_hms_micro_opt(h as u32, mi as u32, s as u32, us);
            match (date, time) {
                (Some(date), Some(time)) => Ok(Some(date.and_time(time))),
                _ => Err(format!("datetime {y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06} is not a valid date and time")),
            }
        }
        ref other => Err(unexpected(other, "a date and time")),
    }
}

/// A DATE value; `None` for a zero date.
fn date(value: &Value) -> Result<Option<NaiveDate>, String> {
    Ok(datetime(value)?.map(|dt| dt.date()))
}

fn integer(value: &Value) -> Result<i64, String> {
    match *value {
        Value::Int(i) => Ok(i),
        Value::UInt(u) => i64::try_from(u).map_err(|_| format!("integer {u} does not fit INT64 (at most 9223372036854775807)")),
        ref other => Err(unexpected(other, "an integer")),
    }
}

/// A description of a value of the wrong kind, for messages.
fn unexpected(value: &Value, expected: &str) -> String {
    let kind = match value {
        Value::NULL => "NULL",
        Value::Bytes(_) => "bytes",
        Value::Int(_) | Value::UInt(_) => "an integer",
        Value::Float(_) | Value::Double(_) => "a float",
        Value::Date(..) => "a date",
        Value::Time(..) => "a time",
    };
    format!("the server sent {kind} where {expected} was expected")
}

/// The builder of one column of a batch.
pub struct ColumnBuilder {
    decode: Decode,
    values: Values,
}

enum Values {
    Bool(BooleanBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Numeric(Decimal128Builder),
    BigNumeric(Decimal256Builder),
    Utf8(StringBuilder),
    Binary(BinaryBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Time(Time64MicrosecondBuilder),
}

/// The bytes reserved up front for `rows` values of variable length: a guess of `per_row`
/// each, at most 1 MiB (the builder grows past it as needed).
fn data_capacity(rows: usize, per_row: usize) -> usize {
    rows.saturating_mul(per_row).min(1 << 20)
}

impl ColumnBuilder {
    /// A builder of `rows` values for `plan`.
    pub fn new(plan: &ColumnPlan, rows: usize) -> Self {
        let values = match plan.decode {
            Decode::Bool | Decode::Bit => Values::Bool(BooleanBuilder::with_capacity(rows)),
            Decode::Int | Decode::Bits => Values::Int(Int64Builder::with_capacity(rows)),
            Decode::Float => Values::Float(Float64Builder::with_capacity(rows)),
            Decode::UInt64 | Decode::Numeric => {
                Values::Numeric(Decimal128Builder::with_capacity(rows).with_data_type(DataType::Decimal128(NUMERIC.0, NUMERIC.1)))
            }
            Decode::BigNumeric => {
                Values::BigNumeric(Decimal256Builder::with_capacity(rows).with_data_type(DataType::Decimal256(BIGNUMERIC.0, BIGNUMERIC.1)))
            }
            Decode::Text | Decode::Json | Decode::Null => Values::Utf8(StringBuilder::with_capacity(rows, data_capacity(rows, 16))),
            Decode::Binary => Values::Binary(BinaryBuilder::with_capacity(rows, data_capacity(rows, 16))),
            Decode::Date => Values::Date(Date32Builder::with_capacity(rows)),
            Decode::Datetime => Values::Timestamp(TimestampMicrosecondBuilder::with_capacity(rows)),
            Decode::Timestamp => Values::Timestamp(TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC")),
            Decode::Time => Values::Time(Time64MicrosecondBuilder::with_capacity(rows)),
        };
        Self { decode: plan.decode, values }
    }

    /// Appends one value; the error describes it (the caller names the column).
    pub fn push(&mut self, value: &Value) -> Result<(), String> {
        if *value == Value::NULL {
            match &mut self.values {
                Values::Bool(b) => b.append_null(),
                Values::Int(b) => b.append_null(),
                Values::Float(b) => b.append_null(),
                Values::Numeric(b) => b.append_null(),
                Values::BigNumeric(b) => b.append_null(),
                Values::Utf8(b) => b.append_null(),
                Values::Binary(b) => b.append_null(),
                Values::Date(b) => b.append_null(),
                Values::Timestamp(b) => b.append_null(),
                Values::Time(b) => b.append_null(),
            }
            return Ok(());
        }
        match (&mut self.values, self.decode) {
            (Values::Bool(b), Decode::Bool) => b.append_value(match integer(value)? {
                0 => false,
                1 => true,
                n => {
                    return Err(format!(
                        "TINYINT(1) value {n} is neither 0 nor 1 (read as BOOL); to export the number, select CAST(column AS SIGNED) in a query"
                    ))
                }
            }),
            (Values::Bool(b), _) => b.append_value(bits(value)? != 0),
            (Values::Int(b), Decode::Bits) => {
                let n = bits(value)?;
                b.append_value(i64::try_from(n).map_err(|_| format!("BIT value {n} does not fit INT64 (at most 9223372036854775807)"))?)
            }
            (Values::Int(b), _) => b.append_value(integer(value)?),
            (Values::Float(b), _) => b.append_value(match *value {
                Value::Float(f) => f as f64,
                Value::Double(d) => d,
                ref other => return Err(unexpected(other, "a float")),
            }),
            (Values::Numeric(b), Decode::UInt64) => {
                let scaled = match *value {
                    Value::UInt(u) => u as i128,
                    Value::Int(i) => i as i128,
                    ref other => return Err(unexpected(other, "an integer")),
                };
                b.append_value(scaled * 10i128.pow(NUMERIC.1 as u32))
            }
            (Values::Numeric(b), _) => b.append_value(decimal::<i128>(text(value)?, NUMERIC)?),
            (Values::BigNumeric(b), _) => b.append_value(decimal::<i256>(text(value)?, BIGNUMERIC)?),
            (Values::Utf8(b), _) => {
                b.append_value(std::str::from_utf8(text(value)?).map_err(|e| format!("text that is not UTF-8 ({e})"))?)
            }
            (Values::Binary(b), _) => b.append_value(text(value)?),
            (Values::Date(b), _) => b.append_option(date(value)?.map(|d| (d - NaiveDate::default()).num_days() as i32)),
            (Values::Timestamp(b), _) => b.append_option(datetime(value)?.map(|dt| dt.and_utc().timestamp_micros())),
            (Values::Time(b), _) => b.append_value(time(value)?),
        }
        Ok(())
    }

    /// The column so far; the builder starts over.
    pub fn finish(&mut self) -> ArrayRef {
        match &mut self.values {
            Values::Bool(b) => Arc::new(b.finish()),
            Values::Int(b) => Arc::new(b.finish()),
            Values::Float(b) => Arc::new(b.finish()),
            Values::Numeric(b) => Arc::new(b.finish()),
            Values::BigNumeric(b) => Arc::new(b.finish()),
            Values::Utf8(b) => Arc::new(b.finish()),
            Values::Binary(b) => Arc::new(b.finish()),
            Values::Date(b) => Arc::new(b.finish()),
            Values::Timestamp(b) => Arc::new(b.finish()),
            Values::Time(b) => Arc::new(b.finish()),
        }
    }
}

/// The bytes of a string, binary string, DECIMAL, BIT or JSON value.
fn text(value: &Value) -> Result<&[u8], String> {
    match value {
        Value::Bytes(b) => Ok(b),
        other => Err(unexpected(other, "a string")),
    }
}

/// A BIT value: big-endian bytes, at most 8.
fn bits(value: &Value) -> Result<u64, String> {
    let b = text(value)?;
    if b.len() > 8 {
        return Err(format!("a BIT value of {} bytes", b.len()));
    }
    Ok(b.iter().fold(0u64, |acc, byte| (acc << 8) | *byte as u64))
}

/// A TIME value as microseconds after midnight; a negative TIME or one of 24 hours or more is
/// refused, quoting the value.
fn time(value: &Value) -> Result<i64, String> {
    let Value::Time(negative, days, h, m, s, us) = *value else { return Err(unexpected(value, "a time")) };
    let hours = days as u64 * 24 + h as u64;
    if negative || hours >= 24 {
        let sign = if negative { "-" } else { "" };
        return Err(format!(
            "TIME value {sign}{hours:02}:{m:02}:{s:02}.{us:06} cannot be delivered: BigQuery TIME is a time of day (00:00:00 to 23:59:59.999999)"
        ));
    }
    Ok(((hours as i64 * 60 + m as i64) * 60 + s as i64) * 1_000_000 + us as i64)
}

/// An integer type a decimal is scaled into.
pub(crate) trait Scaled: Copy + PartialOrd {
    fn from_u8(v: u8) -> Self;
    fn checked_mul(self, o: Self) -> Option<Self>;
    fn checked_add(self, o: Self) -> Option<Self>;
    fn neg(self) -> Self;
    /// 10^n for n up to the type's precision.
    fn pow10(n: u32) -> Self;
}

impl Scaled for i128 {
    fn from_u8(v: u8) -> Self {
        v as i128
    }
    fn checked_mul(self, o: Self) -> Option<Self> {
        i128::checked_mul(self, o)
    }
    fn checked_add(self, o: Self) -> Option<Self> {
        i128::checked_add(self, o)
    }
    fn neg(self) -> Self {
        -self
    }
    fn pow10(n: u32) -> Self {
        10i128.pow(n)
    }
}

impl Scaled for i256 {
    fn from_u8(v: u8) -> Self {
        i256::from_i128(v as i128)
    }
    fn checked_mul(self, o: Self) -> Option<Self> {
        i256::checked_mul(self, o)
    }
    fn checked_add(self, o: Self) -> Option<Self> {
        i256::checked_add(self, o)
    }
    fn neg(self) -> Self {
        self.wrapping_neg()
    }
    fn pow10(n: u32) -> Self {
        static POWERS: std::sync::OnceLock<Vec<i256>> = std::sync::OnceLock::new();
        let powers = POWERS.get_or_init(|| {
            let mut p = vec![i256::ONE];
            for _ in 0..76 {
                p.push(p[p.len() - 1].wrapping_mul(i256::from_i128(10)));
            }
            p
        });
        powers[n as usize]
    }
}

/// A DECIMAL as MySQL sends it (`-123.4500`), scaled to `scale` fractional digits exactly: a
/// value with more significant fractional digits, or more than `precision` digits in all, is
/// refused, the error quoting it.
pub(crate) fn decimal<T: Scaled>(raw: &[u8], (precision, scale): (u8, i8)) -> Result<T, String> {
    let shown = String::from_utf8_lossy(raw);
    let what = if scale == NUMERIC.1 { "NUMERIC (38 digits, 9 after the point)" } else { "BIGNUMERIC (76 digits, 38 after the point)" };
    let too_big = || format!("DECIMAL value {shown} does not fit BigQuery {what}");
    let malformed = || format!("a DECIMAL value {shown:?} that is not a number");
    let (negative, digits) = match raw.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, raw),
    };
    let (int, frac) = match digits.iter().position(|&c| c == b'.') {
        Some(at) => (&digits[..at], &digits[at + 1..]),
        None => (digits, &digits[..0]),
    };
    if int.is_empty() && frac.is_empty() {
        return Err(malformed());
    }
    let scale = scale as usize;
    let mut acc = T::from_u8(0);
    let ten = T::from_u8(10);
    for &c in int.iter().chain(frac.iter().take(scale)) {
        if !c.is_ascii_digit() {
            return Err(malformed());
        }
        acc = acc.checked_mul(ten).and_then(|a| a.checked_add(T::from_u8(c - b'0'))).ok_or_else(too_big)?;
    }
    // Fractional digits beyond the scale must be zeros; missing ones are.
    for &c in frac.iter().skip(scale) {
        match c {
            b'0' => {}
            b'1'..=b'9' => return Err(too_big()),
            _ => return Err(malformed()),
        }
    }
    if frac.len() < scale {
        acc = acc.checked_mul(T::pow10((scale - frac.len()) as u32)).ok_or_else(too_big)?;
    }
    if acc >= T::pow10(precision as u32) {
        return Err(too_big());
    }
    Ok(if negative { acc.neg() } else { acc })
}

#[cfg(test)]
mod tests {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Date32Type, Decimal128Type, Decimal256Type, Float64Type, Int64Type, Time64MicrosecondType};
    use arrow_array::Array;

    use super::*;

    fn column(ty: ColumnType) -> Column {
        Column::new(ty).with_name(b"c").with_character_set(45)
    }

    fn build(plan: &ColumnPlan, values: &[Value]) -> Result<ArrayRef, String> {
        let mut b = ColumnBuilder::new(plan, values.len());
        for v in values {
            b.push(v)?;
        }
        Ok(b.finish())
    }

    #[test]
    fn types_are_planned_from_the_metadata() {
        use ColumnType::*;
        let p = |c: Column| plan(&c).unwrap();
        let tiny1 = p(column(MYSQL_TYPE_TINY).with_column_length(1));
        assert_eq!((tiny1.decode, tiny1.sql_type.as_str(), tiny1.field.data_type()), (Decode::Bool, "TINYINT(1)", &DataType::Boolean));
        assert_eq!(p(column(MYSQL_TYPE_TINY).with_column_length(4)).decode, Decode::Int);
        let int_u = p(column(MYSQL_TYPE_LONG).with_flags(ColumnFlags::UNSIGNED_FLAG).with_column_length(10));
        assert_eq!((int_u.decode, int_u.sql_type.as_str()), (Decode::Int, "INT UNSIGNED"));
        let big_u = p(column(MYSQL_TYPE_LONGLONG).with_flags(ColumnFlags::UNSIGNED_FLAG));
        assert_eq!((big_u.decode, big_u.field.data_type()), (Decode::UInt64, &DataType::Decimal128(38, 9)));
        assert_eq!(p(column(MYSQL_TYPE_LONGLONG)).field.data_type(), &DataType::Int64);
        // DECIMAL(10,2): 10 digits, a sign and a point.
        let d = p(column(MYSQL_TYPE_NEWDECIMAL).with_column_length(12).with_decimals(2));
        assert_eq!((d.decode, d.sql_type.as_str()), (Decode::Numeric, "DECIMAL(10,2)"));
        let d = p(column(MYSQL_TYPE_NEWDECIMAL).with_column_length(38).with_decimals(9).with_flags(ColumnFlags::UNSIGNED_FLAG));
        assert_eq!((d.decode, d.sql_type.as_str()), (Decode::Numeric, "DECIMAL(37,9) UNSIGNED"));
        let d = p(column(MYSQL_TYPE_NEWDECIMAL).with_column_length(31).with_decimals(0));
        assert_eq!((d.decode, d.sql_type.as_str()), (Decode::BigNumeric, "DECIMAL(30,0)"));
        let d = p(column(MYSQL_TYPE_NEWDECIMAL).with_column_length(67).with_decimals(30));
        assert_eq!(
            (d.decode, d.sql_type.as_str(), d.field.data_type()),
            (Decode::BigNumeric, "DECIMAL(65,30)", &DataType::Decimal256(76, 38))
        );
        assert_eq!(p(column(MYSQL_TYPE_NEWDECIMAL).with_column_length(13).with_decimals(10)).decode, Decode::BigNumeric);
        assert_eq!(p(column(MYSQL_TYPE_VAR_STRING)).decode, Decode::Text);
        assert_eq!(p(column(MYSQL_TYPE_BLOB).with_character_set(63)).sql_type, "BLOB");
        assert_eq!(p(column(MYSQL_TYPE_STRING).with_character_set(63)).decode, Decode::Binary);
        assert_eq!(p(column(MYSQL_TYPE_STRING).with_flags(ColumnFlags::ENUM_FLAG)).sql_type, "ENUM");
        assert_eq!(p(column(MYSQL_TYPE_STRING).with_flags(ColumnFlags::SET_FLAG).with_character_set(63)).decode, Decode::Text);
        assert!(ferry_core::rows::is_json(&p(column(MYSQL_TYPE_JSON).with_character_set(63)).field));
        assert_eq!(p(column(MYSQL_TYPE_BIT).with_column_length(1)).decode, Decode::Bit);
        assert_eq!(p(column(MYSQL_TYPE_BIT).with_column_length(12)).sql_type, "BIT(12)");
        assert_eq!(p(column(MYSQL_TYPE_YEAR)).decode, Decode::Int);
        let g = p(column(MYSQL_TYPE_GEOMETRY));
        assert_eq!((g.select.as_deref(), g.field.data_type()), (Some("ST_AsText(s.`c`)"), &DataType::Utf8));
        assert_eq!(g.field.metadata().get(ferry_core::rows::SQL_TYPE).map(String::as_str), Some("GEOMETRY"));
        assert_eq!(plan(&column(MYSQL_TYPE_VECTOR)).unwrap_err(), "type VECTOR cannot be delivered: ferry has no mapping for it");
        assert!(maybe_json(&column(MYSQL_TYPE_LONG_BLOB)) && !maybe_json(&column(MYSQL_TYPE_LONG_BLOB).with_character_set(63)));
    }

    #[test]
    fn values() {
        use ColumnType::*;
        let p = |c: Column| plan(&c).unwrap();
        let b = build(&p(column(MYSQL_TYPE_TINY).with_column_length(1)), &[Value::Int(1), Value::Int(0), Value::NULL]).unwrap();
        assert!(b.as_boolean().value(0) && !b.as_boolean().value(1) && b.is_null(2));
        let e = build(&p(column(MYSQL_TYPE_TINY).with_column_length(1)), &[Value::Int(2)]).unwrap_err();
        assert!(e.starts_with("TINYINT(1) value 2 is neither 0 nor 1"), "{e}");
        let ints = build(&p(column(MYSQL_TYPE_LONG)), &[Value::Int(-5), Value::UInt(4_294_967_295)]).unwrap();
        assert_eq!(ints.as_primitive::<Int64Type>().values(), &[-5, 4_294_967_295]);
        let big_u = p(column(MYSQL_TYPE_LONGLONG).with_flags(ColumnFlags::UNSIGNED_FLAG));
        let u = build(&big_u, &[Value::UInt(u64::MAX)]).unwrap();
        assert_eq!(u.as_primitive::<Decimal128Type>().value_as_string(0), "18446744073709551615.000000000");
        let f = build(&p(column(MYSQL_TYPE_FLOAT)), &[Value::Float(1.5), Value::Double(-0.1)]).unwrap();
        assert_eq!(f.as_primitive::<Float64Type>().values(), &[1.5, -0.1]);
        let bits12 = build(&p(column(MYSQL_TYPE_BIT).with_column_length(12)), &[Value::Bytes(vec![0x0a, 0xbc])]).unwrap();
        assert_eq!(bits12.as_primitive::<Int64Type>().value(0), 0xabc);
        let bit1 = build(&p(column(MYSQL_TYPE_BIT).with_column_length(1)), &[Value::Bytes(vec![1]), Value::Bytes(vec![0])]).unwrap();
        assert!(bit1.as_boolean().value(0) && !bit1.as_boolean().value(1));
        let e = build(&p(column(MYSQL_TYPE_BIT).with_column_length(64)), &[Value::Bytes(vec![0xff; 8])]).unwrap_err();
        assert!(e.starts_with("BIT value 18446744073709551615 does not fit INT64"), "{e}");
        let d = build(
            &p(column(MYSQL_TYPE_DATE)),
            &[Value::Date(2024, 2, 29, 0, 0, 0, 0), Value::Date(0, 0, 0, 0, 0, 0, 0), Value::Date(2024, 0, 1, 0, 0, 0, 0)],
        )
        .unwrap();
        assert_eq!(d.as_primitive::<Date32Type>().value(0), 19_782);
        assert!(d.is_null(1) && d.is_null(2), "zero dates are NULL");
        let dt = build(&p(column(MYSQL_TYPE_DATETIME)), &[Value::Date(1970, 1, 1, 0, 0, 1, 5), Value::Date(0, 0, 0, 0, 0, 0, 0)]).unwrap();
        assert_eq!(dt.as_primitive::<arrow_array::types::TimestampMicrosecondType>().value(0), 1_000_005);
        assert!(dt.is_null(1));
        let e = build(&p(column(MYSQL_TYPE_DATETIME)), &[Value::Date(2023, 2, 30, 0, 0, 0, 0)]).unwrap_err();
        assert!(e.contains("2023-02-30 00:00:00.000000 is not a valid date"), "{e}");
        let t = p(column(MYSQL_TYPE_TIME));
        let times = build(&t, &[Value::Time(false, 0, 23, 59, 59, 999_999)]).unwrap();
        assert_eq!(times.as_primitive::<Time64MicrosecondType>().value(0), 86_399_999_999);
        let e = build(&t, &[Value::Time(true, 0, 1, 2, 3, 0)]).unwrap_err();
        assert!(e.starts_with("TIME value -01:02:03.000000 cannot be delivered"), "{e}");
        let e = build(&t, &[Value::Time(false, 1, 1, 0, 0, 0)]).unwrap_err();
        assert!(e.starts_with("TIME value 25:00:00.000000 cannot be delivered"), "{e}");
        let text = build(&p(column(MYSQL_TYPE_VAR_STRING)), &[Value::Bytes("zürich".into())]).unwrap();
        assert_eq!(text.as_string::<i32>().value(0), "zürich");
        assert!(build(&p(column(MYSQL_TYPE_VAR_STRING)), &[Value::Bytes(vec![0xff])]).unwrap_err().contains("not UTF-8"));
        let bin = build(&p(column(MYSQL_TYPE_BLOB).with_character_set(63)), &[Value::Bytes(vec![0, 0xff])]).unwrap();
        assert_eq!(bin.as_binary::<i32>().value(0), [0, 0xff]);
        let e = build(&p(column(MYSQL_TYPE_LONG)), &[Value::Bytes(b"1".to_vec())]).unwrap_err();
        assert_eq!(e, "the server sent bytes where an integer was expected");
        let n = build(&p(column(MYSQL_TYPE_NULL)), &[Value::NULL]).unwrap();
        assert!(n.is_null(0));
    }

    fn n128(text: &str) -> Result<i128, String> {
        decimal::<i128>(text.as_bytes(), NUMERIC)
    }

    fn n256(text: &str) -> Result<i256, String> {
        decimal::<i256>(text.as_bytes(), BIGNUMERIC)
    }

    #[test]
    fn decimals_scale_exactly() {
        assert_eq!(n128("0"), Ok(0));
        assert_eq!(n128("1"), Ok(1_000_000_000));
        assert_eq!(n128("-12.5"), Ok(-12_500_000_000));
        assert_eq!(n128("0.000000001"), Ok(1));
        assert_eq!(n128("-0.000000001"), Ok(-1));
        assert_eq!(n128(".5"), Ok(500_000_000));
        assert_eq!(n128("12345.678900000000"), Ok(12_345_678_900_000));
        let max = "99999999999999999999999999999.999999999";
        assert_eq!(n128(max), Ok(10i128.pow(38) - 1));
        assert_eq!(n128(&format!("-{max}")), Ok(1 - 10i128.pow(38)));
        let e = n128("100000000000000000000000000000").unwrap_err();
        assert_eq!(e, "DECIMAL value 100000000000000000000000000000 does not fit BigQuery NUMERIC (38 digits, 9 after the point)");
        assert!(n128("0.0000000001").unwrap_err().contains("0.0000000001"));
        assert!(n128("1.2.3").unwrap_err().contains("not a number"));
        assert!(n128("-").unwrap_err().contains("not a number"));
        assert_eq!(n256("1"), Ok(i256::from_i128(10i128.pow(38))));
        assert_eq!(n256("-0.5"), Ok(i256::from_i128(-5 * 10i128.pow(37))));
        let big = format!("{}.{}", "9".repeat(38), "9".repeat(38));
        assert_eq!(n256(&big), Ok(i256::pow10(76).wrapping_sub(i256::ONE)));
        assert!(n256(&format!("1{}", "0".repeat(38))).unwrap_err().contains("does not fit BigQuery BIGNUMERIC"));
        let d = plan(&column(ColumnType::MYSQL_TYPE_NEWDECIMAL).with_column_length(67).with_decimals(30)).unwrap();
        let v = format!("-{}.{}", "1".repeat(35), "2".repeat(30));
        let a = build(&d, &[Value::Bytes(v.clone().into_bytes())]).unwrap();
        assert_eq!(a.as_primitive::<Decimal256Type>().value_as_string(0), format!("{v}{}", "0".repeat(8)));
    }

    #[test]
    fn cursors() {
        use ColumnType::*;
        assert_eq!(cursor_type(&column(MYSQL_TYPE_TIMESTAMP)), Some(CursorType::Timestamp));
        assert_eq!(cursor_type(&column(MYSQL_TYPE_DATETIME)), Some(CursorType::Datetime));
        assert_eq!(cursor_type(&column(MYSQL_TYPE_DATE)), Some(CursorType::Date));
        assert_eq!(cursor_type(&column(MYSQL_TYPE_INT24)), Some(CursorType::Int64));
        assert_eq!(cursor_type(&column(MYSQL_TYPE_VAR_STRING)), None);
        let ts = cursor_value(CursorType::Timestamp, &Value::Date(2024, 1, 2, 3, 4, 5, 6)).unwrap().unwrap();
        assert_eq!(ts.canonical(), "2024-01-02T03:04:05.000006Z");
        assert_eq!(cursor_param(&ts).unwrap(), Value::Date(2024, 1, 2, 3, 4, 5, 6));
        let d = cursor_value(CursorType::Date, &Value::Date(2024, 1, 2, 0, 0, 0, 0)).unwrap().unwrap();
        assert_eq!((d.canonical(), cursor_param(&d).unwrap()), ("2024-01-02".to_owned(), Value::Date(2024, 1, 2, 0, 0, 0, 0)));
        assert_eq!(cursor_value(CursorType::Date, &Value::Date(0, 0, 0, 0, 0, 0, 0)).unwrap(), None);
        assert_eq!(cursor_value(CursorType::Int64, &Value::UInt(7)).unwrap(), Some(CursorValue::Int64(7)));
        assert!(cursor_value(CursorType::Int64, &Value::UInt(u64::MAX)).unwrap_err().contains("does not fit INT64"));
        assert_eq!(cursor_value(CursorType::Int64, &Value::NULL).unwrap(), None);
        assert_eq!(cursor_param(&CursorValue::Int64(-3)).unwrap(), Value::Int(-3));
    }
}
