//! PostgreSQL's binary values decoded into Arrow builders by ferry's own code: each value is
//! read as the bytes the server sent ([`Raw`]) and written straight into its column's builder,
//! with no value object in between (text goes from the row's buffer into the builder's).
//!
//! The mapping is in the crate docs; [`plan`] decides it per column from the type the server
//! describes, [`ColumnBuilder`] applies it.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Decimal256Builder, Float64Builder, Int64Builder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, ListArray};
use arrow_buffer::{i256, NullBufferBuilder, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, FieldRef, TimeUnit};
use chrono::{DateTime, NaiveDate};
use ferry_core::cursor::{CursorType, CursorValue};
use ferry_core::rows::{json_field, text_field};
use tokio_postgres::types::{FromSql, Kind, Type};

/// BigQuery NUMERIC: 38 digits, 9 after the point.
pub const NUMERIC: (u8, i8) = (38, 9);
/// BigQuery BIGNUMERIC: 76 digits, 38 after the point.
pub const BIGNUMERIC: (u8, i8) = (76, 38);

/// Days from PostgreSQL's epoch (2000-01-01) back to the Unix epoch.
const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from the Unix epoch to PostgreSQL's epoch.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A value as the server sent it in binary format, whatever its type; `None` for NULL.
pub struct Raw<'a>(pub Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw)))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A type ferry decodes from its binary form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    /// `numeric` whose precision and scale fit BigQuery NUMERIC.
    Numeric,
    /// Any other `numeric`.
    BigNumeric,
    /// text, varchar, bpchar, name, enums, and text-like types cast to text.
    Text,
    Bytea,
    Date,
    Timestamp,
    Timestamptz,
    Time,
    Uuid,
    Json,
    Jsonb,
}

impl Scalar {
    /// The Arrow field of a column of this type.
    fn field(self, name: &str) -> Field {
        let t = match self {
            Scalar::Json | Scalar::Jsonb => return json_field(name),
            Scalar::Bool => DataType::Boolean,
            Scalar::Int2 | Scalar::Int4 | Scalar::Int8 => DataType::Int64,
            Scalar::Float4 | Scalar::Float8 => DataType::Float64,
            Scalar::Numeric => DataType::Decimal128(NUMERIC.0, NUMERIC.1),
            Scalar::BigNumeric => DataType::Decimal256(BIGNUMERIC.0, BIGNUMERIC.1),
            Scalar::Text | Scalar::Uuid => DataType::Utf8,
            Scalar::Bytea => DataType::Binary,
            Scalar::Date => DataType::Date32,
            Scalar::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Scalar::Timestamptz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Scalar::Time => DataType::Time64(TimeUnit::Microsecond),
        };
        Field::new(name, t, true)
    }
}

/// How one column is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decode {
    Scalar(Scalar),
    /// A one-dimensional array of the scalar, without NULL elements.
    List(Scalar),
}

/// One result column: how it is selected, decoded and typed.
#[derive(Debug, Clone)]
pub struct ColumnPlan {
    pub name: String,
    /// The type the column is cast to in the SELECT (`text`, `text[]`), for types without a
    /// binary decoding of ferry's.
    pub cast: Option<&'static str>,
    pub decode: Decode,
    pub field: Field,
}

/// The scalar of a type ferry decodes (a domain as its base type), with the column's type
/// modifier for `numeric`.
fn scalar_of(ty: &Type, typmod: i32) -> Option<Scalar> {
    if let Kind::Domain(base) = ty.kind() {
        return scalar_of(base, typmod);
    }
    if let Kind::Enum(_) = ty.kind() {
        return Some(Scalar::Text);
    }
    Some(match *ty {
        Type::BOOL => Scalar::Bool,
        Type::INT2 => Scalar::Int2,
        Type::INT4 => Scalar::Int4,
        Type::INT8 => Scalar::Int8,
        Type::FLOAT4 => Scalar::Float4,
        Type::FLOAT8 => Scalar::Float8,
        Type::NUMERIC if numeric_fits(typmod) => Scalar::Numeric,
        Type::NUMERIC => Scalar::BigNumeric,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => Scalar::Text,
        Type::BYTEA => Scalar::Bytea,
        Type::DATE => Scalar::Date,
        Type::TIMESTAMP => Scalar::Timestamp,
        Type::TIMESTAMPTZ => Scalar::Timestamptz,
        Type::TIME => Scalar::Time,
        Type::UUID => Scalar::Uuid,
        Type::JSON => Scalar::Json,
        Type::JSONB => Scalar::Jsonb,
        _ => return None,
    })
}

/// Whether a `numeric` column's type modifier (`((precision << 16) | scale) + 4`, -1 when
/// unconstrained) fits BigQuery NUMERIC exactly: scale at most 9, at most 29 digits before the
/// point.
pub fn numeric_fits(typmod: i32) -> bool {
    if typmod < 4 {
        return false;
    }
    let m = typmod - 4;
    let precision = (m >> 16) & 0xffff;
    // The scale is 11 bits, signed (PostgreSQL 15 allows numeric(5, -2)).
    let scale = ((m & 0x7ff) ^ 1024) - 1024;
    scale <= NUMERIC.1 as i32 && precision - scale <= (NUMERIC.0 - NUMERIC.1 as u8) as i32
}

/// The plan of a column of type `ty`. `text_like` tells whether a type that is not built in
/// (an extension's type) is in PostgreSQL's string category, like `citext`.
pub fn plan(name: &str, ty: &Type, typmod: i32, text_like: &dyn Fn(&Type) -> bool) -> ColumnPlan {
    let column = |cast, decode, field| ColumnPlan { name: name.to_owned(), cast, decode, field };
    if let Some(s) = scalar_of(ty, typmod) {
        return column(None, Decode::Scalar(s), s.field(name));
    }
    let ty = base(ty);
    if let Kind::Array(element) = ty.kind() {
        let element = base(element);
        let item = match scalar_of(element, typmod) {
            Some(s) => Some((None, s)),
            None if text_like(element) => Some((Some("text[]"), Scalar::Text)),
            None => None,
        };
        return match item {
            Some((cast, s)) => {
                column(cast, Decode::List(s), Field::new(name, DataType::List(Arc::new(s.field(name).with_name("item"))), true))
            }
            None => column(Some("text"), Decode::Scalar(Scalar::Text), text_field(name, &format!("{}[]", element.name()))),
        };
    }
    if text_like(ty) {
        return column(Some("text"), Decode::Scalar(Scalar::Text), Scalar::Text.field(name));
    }
    column(Some("text"), Decode::Scalar(Scalar::Text), text_field(name, ty.name()))
}

/// A domain's base type; any other type itself.
fn base(ty: &Type) -> &Type {
    match ty.kind() {
        Kind::Domain(b) => base(b),
        _ => ty,
    }
}

/// Types of `types` (and their array elements) that are not built in and not decoded by ferry:
/// whether they are text-like is a question for the catalog.
pub fn unknown_types<'a>(types: impl IntoIterator<Item = &'a Type>) -> Vec<u32> {
    let mut oids = Vec::new();
    for ty in types {
        let ty = base(ty);
        let ty = match ty.kind() {
            Kind::Array(e) => base(e),
            _ => ty,
        };
        if matches!(ty.kind(), Kind::Simple) && Type::from_oid(ty.oid()).is_none() && !oids.contains(&ty.oid()) {
            oids.push(ty.oid());
        }
    }
    oids
}

/// The cursor type of a column type; `None` for types that cannot be a cursor.
pub fn cursor_type(ty: &Type) -> Option<CursorType> {
    Some(match *base(ty) {
        Type::TIMESTAMPTZ => CursorType::Timestamp,
        Type::TIMESTAMP => CursorType::Datetime,
        Type::DATE => CursorType::Date,
        Type::INT2 | Type::INT4 | Type::INT8 => CursorType::Int64,
        _ => return None,
    })
}

/// A cursor value of type `ty` from its binary form.
pub fn cursor_value(ty: CursorType, raw: &[u8]) -> Result<CursorValue, String> {
    Ok(match ty {
        CursorType::Timestamp => CursorValue::Timestamp(timestamp(raw)?),
        CursorType::Datetime => {
            let us = timestamp(raw)?;
            CursorValue::Datetime(
                DateTime::from_timestamp_micros(us).ok_or_else(|| format!("timestamp {us} µs is out of range"))?.naive_utc(),
            )
        }
        CursorType::Date => {
            let days = date(raw)?;
            // 719 163: the days from 0001-01-01 to the Unix epoch.
            let from_ce = days.checked_add(719_163).and_then(NaiveDate::from_num_days_from_ce_opt);
            CursorValue::Date(from_ce.ok_or_else(|| format!("date {days} days after 1970-01-01 is out of range"))?)
        }
        CursorType::Int64 => CursorValue::Int64(integer(raw)?),
    })
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
    List(Box<ListValues>),
}

struct ListValues {
    item: FieldRef,
    offsets: Vec<i32>,
    nulls: NullBufferBuilder,
    values: Values,
}

impl Values {
    fn new(scalar: Scalar, rows: usize) -> Self {
        match scalar {
            Scalar::Bool => Values::Bool(BooleanBuilder::with_capacity(rows)),
            Scalar::Int2 | Scalar::Int4 | Scalar::Int8 => Values::Int(Int64Builder::with_capacity(rows)),
            Scalar::Float4 | Scalar::Float8 => Values::Float(Float64Builder::with_capacity(rows)),
            Scalar::Numeric => {
                Values::Numeric(Decimal128Builder::with_capacity(rows).with_data_type(DataType::Decimal128(NUMERIC.0, NUMERIC.1)))
            }
            Scalar::BigNumeric => {
                Values::BigNumeric(Decimal256Builder::with_capacity(rows).with_data_type(DataType::Decimal256(BIGNUMERIC.0, BIGNUMERIC.1)))
            }
            Scalar::Text | Scalar::Json | Scalar::Jsonb => Values::Utf8(StringBuilder::with_capacity(rows, data_capacity(rows, 16))),
            Scalar::Uuid => Values::Utf8(StringBuilder::with_capacity(rows, rows * 36)),
            Scalar::Bytea => Values::Binary(BinaryBuilder::with_capacity(rows, data_capacity(rows, 16))),
            Scalar::Date => Values::Date(Date32Builder::with_capacity(rows)),
            Scalar::Timestamp => Values::Timestamp(TimestampMicrosecondBuilder::with_capacity(rows)),
            Scalar::Timestamptz => Values::Timestamp(TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC")),
            Scalar::Time => Values::Time(Time64MicrosecondBuilder::with_capacity(rows)),
        }
    }

    /// Appends one value of `scalar`; the error describes the value (the caller names the
    /// column).
    fn push(&mut self, scalar: Scalar, raw: Option<&[u8]>) -> Result<(), String> {
        match self {
            Values::Bool(b) => b.append_option(raw.map(boolean).transpose()?),
            Values::Int(b) => b.append_option(raw.map(integer).transpose()?),
            Values::Float(b) => b.append_option(raw.map(|r| float(scalar, r)).transpose()?),
            Values::Numeric(b) => b.append_option(raw.map(|r| numeric::<i128>(r, NUMERIC)).transpose()?),
            Values::BigNumeric(b) => b.append_option(raw.map(|r| numeric::<i256>(r, BIGNUMERIC)).transpose()?),
            Values::Utf8(b) => match raw {
                None => b.append_null(),
                Some(r) => match scalar {
                    Scalar::Uuid => b.append_value(uuid(r, &mut [0; 36])?),
                    Scalar::Jsonb => b.append_value(jsonb(r)?),
                    _ => b.append_value(utf8(r)?),
                },
            },
            Values::Binary(b) => b.append_option(raw),
            Values::Date(b) => b.append_option(raw.map(date).transpose()?),
            Values::Timestamp(b) => b.append_option(raw.map(timestamp).transpose()?),
            Values::Time(b) => b.append_option(raw.map(time).transpose()?),
            Values::List(list) => list.push(scalar, raw)?,
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<ArrayRef, String> {
        Ok(match self {
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
            Values::List(list) => {
                let offsets = std::mem::replace(&mut list.offsets, vec![0]);
                let values = list.values.finish()?;
                Arc::new(
                    ListArray::try_new(list.item.clone(), OffsetBuffer::new(ScalarBuffer::from(offsets)), values, list.nulls.finish())
                        .map_err(|e| e.to_string())?,
                )
            }
        })
    }
}

impl ListValues {
    /// Appends one array: `ndim`, a has-NULL flag, the element type, per dimension its length
    /// and lower bound, then each element as a length (-1: NULL) and its bytes.
    fn push(&mut self, scalar: Scalar, raw: Option<&[u8]>) -> Result<(), String> {
        let last = *self.offsets.last().unwrap_or(&0);
        let Some(raw) = raw else {
            self.nulls.append_null();
            self.offsets.push(last);
            return Ok(());
        };
        let ndim = be_i32(raw, 0)?;
        let mut at = 12;
        let len = match ndim {
            0 => 0,
            1 => {
                let len = be_i32(raw, at)?;
                at += 8;
                usize::try_from(len).map_err(|_| format!("array of length {len}"))?
            }
            n => return Err(format!("a {n}-dimensional array cannot be delivered: BigQuery arrays have one dimension")),
        };
        for i in 0..len {
            let n = be_i32(raw, at)?;
            at += 4;
            if n < 0 {
                return Err(format!("element {} of an array is NULL: BigQuery arrays cannot hold NULL", i + 1));
            }
            let end = at + n as usize;
            let element = raw.get(at..end).ok_or("a truncated array")?;
            self.values.push(scalar, Some(element)).map_err(|e| format!("array element {}: {e}", i + 1))?;
            at = end;
        }
        let end = i32::try_from(len).ok().and_then(|n| last.checked_add(n)).ok_or("a batch's arrays hold more than 2^31 elements")?;
        self.offsets.push(end);
        self.nulls.append_non_null();
        Ok(())
    }
}

impl ColumnBuilder {
    /// A builder of `rows` values for `plan`.
    pub fn new(plan: &ColumnPlan, rows: usize) -> Self {
        let values = match plan.decode {
            Decode::Scalar(s) => Values::new(s, rows),
            Decode::List(s) => {
                let item = match plan.field.data_type() {
                    DataType::List(item) => item.clone(),
                    _ => Arc::new(s.field("item")),
                };
                let mut offsets = Vec::with_capacity(rows + 1);
                offsets.push(0);
                Values::List(Box::new(ListValues { item, offsets, nulls: NullBufferBuilder::new(rows), values: Values::new(s, rows) }))
            }
        };
        Self { decode: plan.decode, values }
    }

    /// Appends one value; the error describes it (the caller names the column).
    pub fn push(&mut self, raw: Option<&[u8]>) -> Result<(), String> {
        let scalar = match self.decode {
            Decode::Scalar(s) | Decode::List(s) => s,
        };
        self.values.push(scalar, raw)
    }

    /// The column so far; the builder starts over.
    pub fn finish(&mut self) -> Result<ArrayRef, String> {
        self.values.finish()
    }
}

/// The bytes reserved up front for `rows` values of variable length: a guess of `per_row`
/// each, at most 1 MiB (the builder grows past it as needed).
fn data_capacity(rows: usize, per_row: usize) -> usize {
    rows.saturating_mul(per_row).min(1 << 20)
}

fn be<const N: usize>(raw: &[u8], at: usize) -> Result<[u8; N], String> {
    raw.get(at..at + N).and_then(|b| b.try_into().ok()).ok_or_else(|| format!("a value of {} bytes is truncated", raw.len()))
}

fn be_i32(raw: &[u8], at: usize) -> Result<i32, String> {
    be::<4>(raw, at).map(i32::from_be_bytes)
}

fn exact<const N: usize>(raw: &[u8], what: &str) -> Result<[u8; N], String> {
    raw.try_into().map_err(|_| format!("a {what} value of {} bytes (expected {N})", raw.len()))
}

fn boolean(raw: &[u8]) -> Result<bool, String> {
    Ok(exact::<1>(raw, "bool")?[0] != 0)
}

/// int2, int4 or int8, by its length.
fn integer(raw: &[u8]) -> Result<i64, String> {
    Ok(match raw.len() {
        2 => i16::from_be_bytes(exact(raw, "int2")?) as i64,
        4 => i32::from_be_bytes(exact(raw, "int4")?) as i64,
        _ => i64::from_be_bytes(exact(raw, "int8")?),
    })
}

fn float(scalar: Scalar, raw: &[u8]) -> Result<f64, String> {
    Ok(match scalar {
        Scalar::Float4 => f32::from_be_bytes(exact(raw, "float4")?) as f64,
        _ => f64::from_be_bytes(exact(raw, "float8")?),
    })
}

fn utf8(raw: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(raw).map_err(|e| format!("text that is not UTF-8 ({e})"))
}

/// jsonb: a version byte (1), then the JSON text.
fn jsonb(raw: &[u8]) -> Result<&str, String> {
    match raw.split_first() {
        Some((1, text)) => utf8(text),
        Some((v, _)) => Err(format!("jsonb of format version {v} (expected 1)")),
        None => Err("an empty jsonb value".into()),
    }
}

/// The canonical hyphenated lowercase form, written into `buf`.
fn uuid<'b>(raw: &[u8], buf: &'b mut [u8; 36]) -> Result<&'b str, String> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = exact::<16>(raw, "uuid")?;
    let mut at = 0;
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            buf[at] = b'-';
            at += 1;
        }
        buf[at] = HEX[(b >> 4) as usize];
        buf[at + 1] = HEX[(b & 0xf) as usize];
        at += 2;
    }
    std::str::from_utf8(buf).map_err(|e| e.to_string())
}

/// Days since the Unix epoch; ±infinity is refused.
fn date(raw: &[u8]) -> Result<i32, String> {
    match i32::from_be_bytes(exact(raw, "date")?) {
        i32::MAX => Err("date infinity cannot be delivered: BigQuery has no infinite dates".into()),
        i32::MIN => Err("date -infinity cannot be delivered: BigQuery has no infinite dates".into()),
        d => d.checked_add(PG_EPOCH_DAYS).ok_or_else(|| format!("date {d} days after 2000-01-01 is out of range")),
    }
}

/// Microseconds since the Unix epoch; ±infinity is refused.
fn timestamp(raw: &[u8]) -> Result<i64, String> {
    match i64::from_be_bytes(exact(raw, "timestamp")?) {
        i64::MAX => Err("timestamp infinity cannot be delivered: BigQuery has no infinite timestamps".into()),
        i64::MIN => Err("timestamp -infinity cannot be delivered: BigQuery has no infinite timestamps".into()),
        us => us.checked_add(PG_EPOCH_MICROS).ok_or_else(|| "timestamp out of range".into()),
    }
}

fn time(raw: &[u8]) -> Result<i64, String> {
    Ok(i64::from_be_bytes(exact(raw, "time")?))
}

/// An integer type a decimal is scaled into.
trait Scaled: Copy + PartialOrd {
    fn from_i64(v: i64) -> Self;
    fn checked_mul(self, o: Self) -> Option<Self>;
    fn checked_add(self, o: Self) -> Option<Self>;
    fn neg(self) -> Self;
    /// 10^n for n up to the type's precision.
    fn pow10(n: u32) -> Self;
}

impl Scaled for i128 {
    fn from_i64(v: i64) -> Self {
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
    fn from_i64(v: i64) -> Self {
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

/// A `numeric` in binary form: `ndigits` (i16), `weight` (i16, of the first base-10000 digit),
/// `sign` (0x0000 +, 0x4000 −, 0xC000 NaN, 0xD000 +Infinity, 0xF000 −Infinity), `dscale`
/// (u16), then `ndigits` base-10000 digits (i16). The value is scaled to `scale` fractional
/// digits exactly: one with more significant fractional digits, more than `precision` digits
/// in all, NaN or an infinity is refused, the error quoting the value.
fn numeric<T: Scaled>(raw: &[u8], (precision, scale): (u8, i8)) -> Result<T, String> {
    let header = be::<8>(raw, 0)?;
    let ndigits = i16::from_be_bytes([header[0], header[1]]);
    let weight = i16::from_be_bytes([header[2], header[3]]) as i32;
    let sign = u16::from_be_bytes([header[4], header[5]]);
    let what = if scale == NUMERIC.1 { "NUMERIC (38 digits, 9 after the point)" } else { "BIGNUMERIC (76 digits, 38 after the point)" };
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Err(format!("numeric value NaN cannot be delivered: BigQuery {what} has no NaN")),
        0xD000 => return Err(format!("numeric value Infinity cannot be delivered: BigQuery {what} has no infinity")),
        0xF000 => return Err(format!("numeric value -Infinity cannot be delivered: BigQuery {what} has no infinity")),
        s => return Err(format!("a numeric value with sign {s:#06x}")),
    }
    let ndigits = usize::try_from(ndigits).map_err(|_| format!("a numeric value with {ndigits} digits"))?;
    if raw.len() != 8 + 2 * ndigits {
        return Err(format!("a numeric value of {} bytes with {ndigits} digits", raw.len()));
    }
    let too_big = || format!("numeric value {} does not fit BigQuery {what}", numeric_text(raw));
    let scale = scale as i32;
    let mut acc = T::from_i64(0);
    // The exponent of 10 of acc's last unit: the value is acc × 10^unit (before scaling back).
    let mut unit = 0;
    for i in 0..ndigits {
        let d = i16::from_be_bytes(be::<2>(raw, 8 + 2 * i)?) as i64;
        if !(0..10_000).contains(&d) {
            return Err(format!("a numeric digit {d} out of range"));
        }
        // The exponent of this digit in the scaled value.
        let e = 4 * (weight - i as i32) + scale;
        if e >= 0 {
            acc = acc.checked_mul(T::from_i64(10_000)).and_then(|a| a.checked_add(T::from_i64(d))).ok_or_else(too_big)?;
            unit = e;
        } else if e > -4 {
            let div = 10i64.pow((-e) as u32);
            if d % div != 0 {
                return Err(too_big());
            }
            acc = acc.checked_mul(T::pow10((4 + e) as u32)).and_then(|a| a.checked_add(T::from_i64(d / div))).ok_or_else(too_big)?;
            unit = 0;
        } else if d != 0 {
            return Err(too_big());
        }
    }
    if unit > precision as i32 {
        return Err(too_big());
    }
    let value = acc.checked_mul(T::pow10(unit as u32)).ok_or_else(too_big)?;
    if value >= T::pow10(precision as u32) {
        return Err(too_big());
    }
    Ok(if sign == 0x4000 { value.neg() } else { value })
}

/// A numeric's text (as PostgreSQL prints it), for messages.
fn numeric_text(raw: &[u8]) -> String {
    let word = |i: usize| raw.get(i..i + 2).map(|b| i16::from_be_bytes([b[0], b[1]]) as i32).unwrap_or(0);
    let (ndigits, weight, sign, dscale) = (word(0).max(0) as usize, word(2), word(4) as u16, word(6) as u16 as usize);
    let digit = |i: i32| if i >= 0 && (i as usize) < ndigits { word(8 + 2 * i as usize) } else { 0 };
    let mut s = String::new();
    if sign == 0x4000 {
        s.push('-');
    }
    if weight < 0 {
        s.push('0');
    }
    for i in 0..=weight {
        if i == 0 {
            s.push_str(&digit(0).to_string());
        } else {
            s.push_str(&format!("{:04}", digit(i)));
        }
    }
    if dscale > 0 {
        s.push('.');
        let mut frac = String::new();
        let mut i = weight + 1;
        while frac.len() < dscale {
            frac.push_str(&format!("{:04}", digit(i)));
            i += 1;
        }
        frac.truncate(dscale);
        s.push_str(&frac);
    }
    s
}

#[cfg(test)]
mod tests {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Decimal128Type, Decimal256Type, Int64Type};
    use arrow_array::Array;

    use super::*;

    /// The binary form of a numeric given as text (`-12.5`, `NaN`): what the server sends.
    fn numeric_bytes(text: &str) -> Vec<u8> {
        let special = match text {
            "NaN" => Some(0xC000u16),
            "Infinity" => Some(0xD000),
            "-Infinity" => Some(0xF000),
            _ => None,
        };
        if let Some(sign) = special {
            return [0i16.to_be_bytes(), 0i16.to_be_bytes(), sign.to_be_bytes(), 0u16.to_be_bytes()].concat();
        }
        let (neg, t) = text.strip_prefix('-').map_or((false, text), |t| (true, t));
        let (int, frac) = t.split_once('.').unwrap_or((t, ""));
        let dscale = frac.len();
        // Pad the integer part on the left and the fraction on the right to groups of four.
        let int = format!("{}{int}", "0".repeat((4 - int.len() % 4) % 4));
        let frac = format!("{frac}{}", "0".repeat((4 - frac.len() % 4) % 4));
        let mut digits: Vec<i16> =
            int.as_bytes().chunks(4).chain(frac.as_bytes().chunks(4)).map(|c| std::str::from_utf8(c).unwrap().parse().unwrap()).collect();
        let mut weight = (int.len() / 4) as i16 - 1;
        while digits.first() == Some(&0) {
            digits.remove(0);
            weight -= 1;
        }
        while digits.last() == Some(&0) {
            digits.pop();
        }
        if digits.is_empty() {
            weight = 0;
        }
        let mut out = Vec::new();
        out.extend((digits.len() as i16).to_be_bytes());
        out.extend(weight.to_be_bytes());
        out.extend(if neg { 0x4000u16 } else { 0 }.to_be_bytes());
        out.extend((dscale as u16).to_be_bytes());
        for d in digits {
            out.extend(d.to_be_bytes());
        }
        out
    }

    fn n128(text: &str) -> Result<i128, String> {
        numeric::<i128>(&numeric_bytes(text), NUMERIC)
    }

    fn n256(text: &str) -> Result<i256, String> {
        numeric::<i256>(&numeric_bytes(text), BIGNUMERIC)
    }

    #[test]
    fn numeric_scales_exactly() {
        assert_eq!(n128("0"), Ok(0));
        assert_eq!(n128("1"), Ok(1_000_000_000));
        assert_eq!(n128("-12.5"), Ok(-12_500_000_000));
        assert_eq!(n128("0.000000001"), Ok(1));
        assert_eq!(n128("-0.000000001"), Ok(-1));
        assert_eq!(n128("12345.6789"), Ok(12_345_678_900_000));
        assert_eq!(n128("10000"), Ok(10_000_000_000_000));
        assert_eq!(n128("0.10"), Ok(100_000_000));
        let max = "99999999999999999999999999999.999999999";
        assert_eq!(n128(max), Ok(10i128.pow(38) - 1));
        assert_eq!(n128(&format!("-{max}")), Ok(1 - 10i128.pow(38)));
        assert_eq!(numeric_text(&numeric_bytes("-12.5")), "-12.5");
        assert_eq!(numeric_text(&numeric_bytes("12345.6789")), "12345.6789");
        assert_eq!(numeric_text(&numeric_bytes("0.000000001")), "0.000000001");
    }

    #[test]
    fn numeric_that_does_not_fit_is_refused_with_its_value() {
        let e = n128("100000000000000000000000000000").unwrap_err();
        assert_eq!(e, "numeric value 100000000000000000000000000000 does not fit BigQuery NUMERIC (38 digits, 9 after the point)");
        assert!(n128("0.0000000001").unwrap_err().contains("0.0000000001"));
        assert!(n128("1.12345678912").unwrap_err().contains("does not fit"));
        for special in ["NaN", "Infinity", "-Infinity"] {
            let e = n128(special).unwrap_err();
            assert!(e.starts_with(&format!("numeric value {special} cannot be delivered")), "{e}");
        }
    }

    #[test]
    fn bignumeric_holds_76_digits() {
        assert_eq!(n256("1"), Ok(i256::from_i128(10i128.pow(38))));
        assert_eq!(n256("-0.5"), Ok(i256::from_i128(-5 * 10i128.pow(37))));
        let big = format!("{}.{}", "9".repeat(38), "9".repeat(38));
        assert_eq!(n256(&big), Ok(i256::pow10(76).wrapping_sub(i256::ONE)));
        let e = n256(&format!("1{}", "0".repeat(38))).unwrap_err();
        assert!(e.contains("does not fit BigQuery BIGNUMERIC"), "{e}");
        assert!(n256(&format!("0.{}1", "0".repeat(38))).is_err());
        assert!(n256("NaN").unwrap_err().contains("NaN"));
        // Trailing zeros beyond the scale are no loss.
        assert_eq!(n256("0.5000"), Ok(i256::from_i128(5 * 10i128.pow(37))));
    }

    #[test]
    fn numeric_type_modifiers() {
        let typmod = |p: i32, s: i32| ((p << 16) | (s & 0x7ff)) + 4;
        assert!(numeric_fits(typmod(38, 9)));
        assert!(numeric_fits(typmod(10, 2)));
        assert!(numeric_fits(typmod(29, 0)));
        assert!(numeric_fits(typmod(5, -2)));
        assert!(!numeric_fits(typmod(30, 0)));
        assert!(!numeric_fits(typmod(20, 10)));
        assert!(!numeric_fits(-1), "unconstrained");
    }

    fn column(plan: &ColumnPlan, values: &[Option<&[u8]>]) -> Result<ArrayRef, String> {
        let mut b = ColumnBuilder::new(plan, values.len());
        for v in values {
            b.push(*v)?;
        }
        b.finish()
    }

    fn no_text(_: &Type) -> bool {
        false
    }

    #[test]
    fn scalars() {
        let p = |ty: &Type| plan("c", ty, -1, &no_text);
        let ints = column(&p(&Type::INT2), &[Some(&(-2i16).to_be_bytes()), None]).unwrap();
        assert_eq!(ints.as_primitive::<Int64Type>().value(0), -2);
        assert!(ints.is_null(1));
        let i4 = column(&p(&Type::INT4), &[Some(&i32::MIN.to_be_bytes())]).unwrap();
        assert_eq!(i4.as_primitive::<Int64Type>().value(0), i32::MIN as i64);
        let i8 = column(&p(&Type::INT8), &[Some(&i64::MAX.to_be_bytes())]).unwrap();
        assert_eq!(i8.as_primitive::<Int64Type>().value(0), i64::MAX);
        let b = column(&p(&Type::BOOL), &[Some(&[1]), Some(&[0])]).unwrap();
        assert!(b.as_boolean().value(0) && !b.as_boolean().value(1));
        let f4 = column(&p(&Type::FLOAT4), &[Some(&1.5f32.to_be_bytes())]).unwrap();
        assert_eq!(f4.as_primitive::<arrow_array::types::Float64Type>().value(0), 1.5);
        let f8 = column(&p(&Type::FLOAT8), &[Some(&(-0.1f64).to_be_bytes())]).unwrap();
        assert_eq!(f8.as_primitive::<arrow_array::types::Float64Type>().value(0), -0.1);
        let text = column(&p(&Type::VARCHAR), &[Some("héllo".as_bytes())]).unwrap();
        assert_eq!(text.as_string::<i32>().value(0), "héllo");
        let bytes = column(&p(&Type::BYTEA), &[Some(&[0, 255, 7])]).unwrap();
        assert_eq!(bytes.as_binary::<i32>().value(0), [0, 255, 7]);
        let u = [0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66, 0x14, 0x17, 0x40, 0x00];
        let uuids = column(&p(&Type::UUID), &[Some(&u)]).unwrap();
        assert_eq!(uuids.as_string::<i32>().value(0), "123e4567-e89b-12d3-a456-426614174000");
        let dates = column(&p(&Type::DATE), &[Some(&0i32.to_be_bytes()), Some(&(-10_958i32).to_be_bytes())]).unwrap();
        assert_eq!(dates.as_primitive::<arrow_array::types::Date32Type>().values(), &[10_957, -1]);
        let ts = column(&p(&Type::TIMESTAMPTZ), &[Some(&1i64.to_be_bytes())]).unwrap();
        assert_eq!(ts.data_type(), &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())));
        assert_eq!(ts.as_primitive::<arrow_array::types::TimestampMicrosecondType>().value(0), PG_EPOCH_MICROS + 1);
        let dt = column(&p(&Type::TIMESTAMP), &[Some(&(-1i64).to_be_bytes())]).unwrap();
        assert_eq!(dt.data_type(), &DataType::Timestamp(TimeUnit::Microsecond, None));
        assert_eq!(dt.as_primitive::<arrow_array::types::TimestampMicrosecondType>().value(0), PG_EPOCH_MICROS - 1);
        let t = column(&p(&Type::TIME), &[Some(&86_399_999_999i64.to_be_bytes())]).unwrap();
        assert_eq!(t.as_primitive::<arrow_array::types::Time64MicrosecondType>().value(0), 86_399_999_999);
        let n = column(&plan("c", &Type::NUMERIC, ((10 << 16) | 2) + 4, &no_text), &[Some(&numeric_bytes("-1.25"))]).unwrap();
        assert_eq!(n.as_primitive::<Decimal128Type>().value(0), -1_250_000_000);
        assert_eq!(n.data_type(), &DataType::Decimal128(38, 9));
        let n = column(&p(&Type::NUMERIC), &[Some(&numeric_bytes("2.5"))]).unwrap();
        assert_eq!(n.as_primitive::<Decimal256Type>().value(0), i256::from_i128(25).wrapping_mul(<i256 as Scaled>::pow10(37)));
        assert_eq!(n.data_type(), &DataType::Decimal256(76, 38));
    }

    #[test]
    fn json_and_jsonb() {
        let json = plan("j", &Type::JSON, -1, &no_text);
        assert!(ferry_core::rows::is_json(&json.field));
        let a = column(&json, &[Some(br#"{"a": 1}"#)]).unwrap();
        assert_eq!(a.as_string::<i32>().value(0), r#"{"a": 1}"#);
        let jsonb = plan("j", &Type::JSONB, -1, &no_text);
        assert!(ferry_core::rows::is_json(&jsonb.field));
        let a = column(&jsonb, &[Some(b"\x01{\"a\": [1, 2]}"), None]).unwrap();
        assert_eq!(a.as_string::<i32>().value(0), r#"{"a": [1, 2]}"#);
        assert!(a.is_null(1));
        assert_eq!(column(&jsonb, &[Some(b"\x02{}")]).unwrap_err(), "jsonb of format version 2 (expected 1)");
    }

    #[test]
    fn infinite_dates_and_timestamps_are_refused() {
        let p = |ty: &Type| plan("c", ty, -1, &no_text);
        assert!(column(&p(&Type::DATE), &[Some(&i32::MAX.to_be_bytes())]).unwrap_err().starts_with("date infinity"));
        assert!(column(&p(&Type::DATE), &[Some(&i32::MIN.to_be_bytes())]).unwrap_err().starts_with("date -infinity"));
        assert!(column(&p(&Type::TIMESTAMPTZ), &[Some(&i64::MAX.to_be_bytes())]).unwrap_err().starts_with("timestamp infinity"));
        assert!(column(&p(&Type::TIMESTAMP), &[Some(&i64::MIN.to_be_bytes())]).unwrap_err().starts_with("timestamp -infinity"));
    }

    /// A one-dimensional int4 array in binary form; `None` elements are NULL.
    fn int4_array(elements: &[Option<i32>]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(1i32.to_be_bytes());
        out.extend((elements.iter().any(Option::is_none) as i32).to_be_bytes());
        out.extend(23u32.to_be_bytes());
        out.extend((elements.len() as i32).to_be_bytes());
        out.extend(1i32.to_be_bytes());
        for e in elements {
            match e {
                Some(v) => {
                    out.extend(4i32.to_be_bytes());
                    out.extend(v.to_be_bytes());
                }
                None => out.extend((-1i32).to_be_bytes()),
            }
        }
        out
    }

    #[test]
    fn arrays() {
        let p = plan("a", &Type::INT4_ARRAY, -1, &no_text);
        assert_eq!(p.decode, Decode::List(Scalar::Int4));
        let empty = [0i32.to_be_bytes(), 0i32.to_be_bytes(), 23u32.to_be_bytes()].concat();
        let a = column(&p, &[Some(&int4_array(&[Some(1), Some(-2)])), None, Some(&empty), Some(&int4_array(&[Some(3)]))]).unwrap();
        let list = a.as_list::<i32>();
        assert_eq!(list.len(), 4);
        assert!(list.is_null(1) && !list.is_null(2));
        assert_eq!(list.value(0).as_primitive::<Int64Type>().values(), &[1, -2]);
        assert_eq!(list.value(2).len(), 0);
        assert_eq!(list.value(3).as_primitive::<Int64Type>().values(), &[3]);
        let e = column(&p, &[Some(&int4_array(&[Some(1), None]))]).unwrap_err();
        assert_eq!(e, "element 2 of an array is NULL: BigQuery arrays cannot hold NULL");
        let two_dims = [2i32.to_be_bytes(), 0i32.to_be_bytes(), 23u32.to_be_bytes()].concat();
        assert!(column(&p, &[Some(&two_dims)]).unwrap_err().contains("2-dimensional"));
        // A builder starts over after finish.
        let mut b = ColumnBuilder::new(&p, 2);
        b.push(Some(&int4_array(&[Some(7)]))).unwrap();
        assert_eq!(b.finish().unwrap().len(), 1);
        b.push(Some(&int4_array(&[Some(8), Some(9)]))).unwrap();
        assert_eq!(b.finish().unwrap().as_list::<i32>().value(0).as_primitive::<Int64Type>().values(), &[8, 9]);
    }

    #[test]
    fn other_types_are_read_as_text_named_by_their_type() {
        let p = plan("i", &Type::INTERVAL, -1, &no_text);
        assert_eq!(p.cast, Some("text"));
        assert_eq!(p.field.metadata().get(ferry_core::rows::SQL_TYPE).map(String::as_str), Some("interval"));
        let p = plan("i", &Type::INTERVAL_ARRAY, -1, &no_text);
        assert_eq!(p.field.metadata().get(ferry_core::rows::SQL_TYPE).map(String::as_str), Some("interval[]"));
        let citext = Type::new("citext".into(), 90_001, Kind::Simple, "public".into());
        let p = plan("c", &citext, -1, &|t: &Type| t.name() == "citext");
        assert_eq!((p.cast, p.field.data_type(), p.field.metadata().is_empty()), (Some("text"), &DataType::Utf8, true));
        assert_eq!(unknown_types([&citext, &Type::INT4, &Type::INTERVAL]), [90_001]);
        let mood = Type::new("mood".into(), 90_002, Kind::Enum(vec!["happy".into()]), "public".into());
        assert_eq!(plan("m", &mood, -1, &no_text).decode, Decode::Scalar(Scalar::Text));
        let cursor = cursor_type(&Type::INT2);
        assert_eq!(cursor, Some(CursorType::Int64));
        assert_eq!(cursor_type(&Type::TEXT), None);
        assert_eq!(cursor_value(CursorType::Date, &0i32.to_be_bytes()).unwrap().canonical(), "2000-01-01");
        assert_eq!(cursor_value(CursorType::Timestamp, &0i64.to_be_bytes()).unwrap().canonical(), "2000-01-01T00:00:00.000000Z");
        assert_eq!(cursor_value(CursorType::Datetime, &1i64.to_be_bytes()).unwrap().canonical(), "2000-01-01T00:00:00.000001");
        assert_eq!(cursor_value(CursorType::Int64, &7i16.to_be_bytes()).unwrap(), CursorValue::Int64(7));
        assert!(cursor_value(CursorType::Timestamp, &i64::MAX.to_be_bytes()).is_err());
    }
}
