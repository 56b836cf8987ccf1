//! BigQuery's REST rows decoded into ferry's row model (Arrow batches, see
//! [`ferry_core::rows`]): types map as the Storage Read API maps them, values are parsed from
//! the REST text exactly (NUMERIC and BIGNUMERIC as scaled integers, never through a float;
//! TIMESTAMP from int64 microseconds).

use std::sync::Arc;

use arrow_array::types::{Decimal128Type, Decimal256Type};
use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Float64Array, Int64Array, ListArray, PrimitiveArray, RecordBatch, RecordBatchOptions,
    StringArray, StructArray, Time64MicrosecondArray, TimestampMicrosecondArray,
};
use arrow_buffer::{i256, NullBuffer, OffsetBuffer};
use arrow_schema::{DataType, Field as ArrowField, Fields, Schema, SchemaRef, TimeUnit};
use base64::Engine;
use chrono::{NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use ferry_core::rows::{json_field, text_field};

use crate::client::{Cell, Field, Page};

/// NUMERIC: 38 digits, 9 after the point.
const NUMERIC: (u8, i8) = (38, 9);
/// BIGNUMERIC: 76 digits, 38 after the point.
const BIGNUMERIC: (u8, i8) = (76, 38);

/// The Arrow schema of a BigQuery result schema.
pub fn schema_of(fields: &[Field]) -> Schema {
    Schema::new(fields.iter().map(arrow_field).collect::<Vec<_>>())
}

fn arrow_field(f: &Field) -> ArrowField {
    let scalar = match f.type_name.as_str() {
        "JSON" => json_field(&f.name),
        "GEOGRAPHY" => text_field(&f.name, "GEOGRAPHY"),
        other => match data_type(other, &f.fields) {
            Some(t) => ArrowField::new(&f.name, t, true),
            None => text_field(&f.name, other),
        },
    };
    if !f.is_repeated() {
        return scalar;
    }
    ArrowField::new(&f.name, DataType::List(Arc::new(scalar.with_name("item"))), true)
}

fn data_type(name: &str, fields: &[Field]) -> Option<DataType> {
    Some(match name {
        "STRING" => DataType::Utf8,
        "INTEGER" | "INT64" => DataType::Int64,
        "FLOAT" | "FLOAT64" => DataType::Float64,
        "NUMERIC" => DataType::Decimal128(NUMERIC.0, NUMERIC.1),
        "BIGNUMERIC" => DataType::Decimal256(BIGNUMERIC.0, BIGNUMERIC.1),
        "BOOLEAN" | "BOOL" => DataType::Boolean,
        "TIMESTAMP" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        "DATE" => DataType::Date32,
        "DATETIME" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "TIME" => DataType::Time64(TimeUnit::Microsecond),
        "BYTES" => DataType::Binary,
        "RECORD" | "STRUCT" => DataType::Struct(fields.iter().map(arrow_field).collect::<Fields>()),
        _ => return None,
    })
}

/// Decodes REST rows (cells in schema order) into one batch of `schema` (from [`schema_of`]).
/// The error names the column and the value that could not be read.
pub fn rest_to_batch(schema: &SchemaRef, rows: Page) -> Result<RecordBatch, String> {
    let n = rows.len();
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (j, field) in schema.fields().iter().enumerate() {
        let cells: Vec<&Cell> = rows.iter().map(|r| r.get(j).unwrap_or(&Cell::Null)).collect();
        columns.push(build(field, &cells).map_err(|e| format!("column {}: {e}", field.name()))?);
    }
    RecordBatch::try_new_with_options(schema.clone(), columns, &RecordBatchOptions::new().with_row_count(Some(n)))
        .map_err(|e| e.to_string())
}

fn text(c: &Cell) -> Result<Option<&str>, String> {
    match c {
        Cell::Null => Ok(None),
        Cell::Text(t) => Ok(Some(t)),
        other => Err(format!("expected a scalar, found {other:?}")),
    }
}

/// Parses each non-null text with `parse`; the error quotes the value.
fn parsed<T>(cells: &[&Cell], what: &str, parse: impl Fn(&str) -> Option<T>) -> Result<Vec<Option<T>>, String> {
    cells
        .iter()
        .map(|c| match text(c)? {
            None => Ok(None),
            Some(t) => parse(t).map(Some).ok_or_else(|| format!("{t:?} is not a valid {what}")),
        })
        .collect()
}

fn build(field: &ArrowField, cells: &[&Cell]) -> Result<ArrayRef, String> {
    Ok(match field.data_type() {
        DataType::Utf8 => Arc::new(cells.iter().map(|c| text(c)).collect::<Result<StringArray, _>>()?),
        DataType::Int64 => Arc::new(Int64Array::from(parsed(cells, "INT64", |t| t.parse().ok())?)),
        DataType::Float64 => Arc::new(Float64Array::from(parsed(cells, "FLOAT64", |t| t.parse().ok())?)),
        DataType::Boolean => Arc::new(BooleanArray::from(parsed(cells, "BOOL", |t| match t {
            "true" | "TRUE" | "True" => Some(true),
            "false" | "FALSE" | "False" => Some(false),
            _ => None,
        })?)),
        DataType::Decimal128(p, s) => Arc::new(
            PrimitiveArray::<Decimal128Type>::from(parsed(cells, "NUMERIC", |t| parse_decimal(t, *s as u32))?)
                .with_precision_and_scale(*p, *s)
                .map_err(|e| e.to_string())?,
        ),
        DataType::Decimal256(p, s) => Arc::new(
            PrimitiveArray::<Decimal256Type>::from(parsed(cells, "BIGNUMERIC", |t| parse_decimal256(t, *s as u32))?)
                .with_precision_and_scale(*p, *s)
                .map_err(|e| e.to_string())?,
        ),
        DataType::Timestamp(_, Some(_)) => Arc::new(
            TimestampMicrosecondArray::from(parsed(cells, "TIMESTAMP", ferry_core::cursor::parse_rest_timestamp)?).with_timezone("UTC"),
        ),
        DataType::Timestamp(_, None) => Arc::new(TimestampMicrosecondArray::from(parsed(cells, "DATETIME", |t| {
            NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f")
                .or_else(|_| NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f"))
                .ok()
                .map(|d| d.and_utc().timestamp_micros())
        })?)),
        DataType::Date32 => Arc::new(Date32Array::from(parsed(cells, "DATE", |t| {
            let d = NaiveDate::parse_from_str(t, "%Y-%m-%d").ok()?;
            i32::try_from(d.signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1)?).num_days()).ok()
        })?)),
        DataType::Time64(_) => Arc::new(Time64MicrosecondArray::from(parsed(cells, "TIME", |t| {
            let tm = NaiveTime::parse_from_str(t, "%H:%M:%S%.f").ok()?;
            Some(i64::from(tm.num_seconds_from_midnight()) * 1_000_000 + i64::from(tm.nanosecond() / 1000))
        })?)),
        DataType::Binary => {
            let values = parsed(cells, "BYTES (base64)", |t| base64::engine::general_purpose::STANDARD.decode(t).ok())?;
            Arc::new(BinaryArray::from_iter(values))
        }
        DataType::List(item) => {
            // BigQuery has no NULL ARRAY: a NULL reads as an empty one.
            let mut lengths = Vec::with_capacity(cells.len());
            let mut children: Vec<&Cell> = Vec::new();
            for c in cells {
                match c {
                    Cell::Null => lengths.push(0),
                    Cell::List(items) => {
                        lengths.push(items.len());
                        children.extend(items.iter());
                    }
                    other => return Err(format!("expected an array, found {other:?}")),
                }
            }
            let values = build(item, &children)?;
            Arc::new(ListArray::try_new(item.clone(), OffsetBuffer::from_lengths(lengths), values, None).map_err(|e| e.to_string())?)
        }
        DataType::Struct(fields) => {
            let mut valid = Vec::with_capacity(cells.len());
            for c in cells {
                match c {
                    Cell::Null => valid.push(false),
                    Cell::Record(values) if values.len() == fields.len() => valid.push(true),
                    other => return Err(format!("expected a record of {} fields, found {other:?}", fields.len())),
                }
            }
            let mut arrays = Vec::with_capacity(fields.len());
            for (i, f) in fields.iter().enumerate() {
                let children: Vec<&Cell> = cells
                    .iter()
                    .map(|c| match c {
                        Cell::Record(values) => &values[i],
                        _ => &Cell::Null,
                    })
                    .collect();
                arrays.push(build(f, &children).map_err(|e| format!("field {}: {e}", f.name()))?);
            }
            let nulls = valid.contains(&false).then(|| NullBuffer::from(valid));
            Arc::new(StructArray::try_new(fields.clone(), arrays, nulls).map_err(|e| e.to_string())?)
        }
        other => return Err(format!("no decoding for {other}")),
    })
}

/// Exact decimal text (`-12.5`, `1E+3` is not BigQuery's form and is refused) as an integer
/// scaled by `10^scale`; `None` when it is not a decimal or has more fractional digits.
fn decimal_digits(t: &str, scale: u32) -> Option<(bool, String)> {
    let (neg, body) = match t.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty() && frac.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > scale as usize {
        return None;
    }
    let mut digits = String::with_capacity(int.len() + scale as usize);
    digits.push_str(int);
    digits.push_str(frac);
    digits.extend(std::iter::repeat_n('0', scale as usize - frac.len()));
    Some((neg, digits))
}

fn parse_decimal(t: &str, scale: u32) -> Option<i128> {
    let (neg, digits) = decimal_digits(t, scale)?;
    let v: i128 = digits.parse().ok()?;
    Some(if neg { -v } else { v })
}

fn parse_decimal256(t: &str, scale: u32) -> Option<i256> {
    let (neg, digits) = decimal_digits(t, scale)?;
    let ten = i256::from_i128(10);
    let mut v = i256::ZERO;
    for b in digits.bytes() {
        v = v.checked_mul(ten)?.checked_add(i256::from_i128(i128::from(b - b'0')))?;
    }
    Some(if neg { v.checked_neg()? } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_parse_exactly() {
        assert_eq!(parse_decimal("12345678901234567890.123456789", 9), Some(12_345_678_901_234_567_890_123_456_789));
        assert_eq!(parse_decimal("-0.000000001", 9), Some(-1));
        assert_eq!(parse_decimal("0", 9), Some(0));
        assert_eq!(parse_decimal("1.5000000000", 9), Some(1_500_000_000));
        assert_eq!(parse_decimal("1.0000000001", 9), None);
        assert_eq!(parse_decimal("1e5", 9), None);
        let big = parse_decimal256("-12345678901234567890.123456789012345678", 38).unwrap();
        assert_eq!(big.to_string(), "-1234567890123456789012345678901234567800000000000000000000");
    }
}
