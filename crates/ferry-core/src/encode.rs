//! CSV encoding of typed rows ([`RecordBatch`]es, see [`crate::rows`]).
//!
//! CSV is RFC 4180: fields separated by the delimiter, records ended by CRLF, a field quoted
//! with `"` when it contains the delimiter, a quote, CR or LF (quotes doubled inside), and a
//! header row of column names unless turned off. How each type is written (BigQuery's names;
//! the Arrow type each is read as is in [`crate::rows`]):
//!
//! | type | written as |
//! |---|---|
//! | NULL (any type but ARRAY) | an empty field |
//! | a value whose text is empty: the empty STRING, empty BYTES (and JSON or GEOGRAPHY text, were it ever empty) | `""`, so that it differs from NULL |
//! | STRING | the text |
//! | INT64, NUMERIC, BIGNUMERIC | exact decimal text: no exponent, no trailing fractional zeros (`12.5`, `-0.000000001`) |
//! | FLOAT64 | the shortest text that reads back as the same double (`3.25`, `0.1`, `1e300`); `NaN`, `Infinity`, `-Infinity` |
//! | BOOL | `true` / `false` |
//! | TIMESTAMP | RFC 3339 UTC with six fractional digits: `2024-01-02T03:04:05.123456Z` |
//! | DATE, DATETIME, TIME | ISO 8601: `2024-01-02`, `2024-01-02T03:04:05.250000`, `03:04:05.250000` (the fraction only when not zero) |
//! | BYTES | base64 (empty BYTES: `""`) |
//! | JSON, GEOGRAPHY | their text |
//! | ARRAY, STRUCT | one JSON value: `[1,2]`, `{"a":1,"b":"x"}`; inside it numbers are bare, TIMESTAMPs are strings as above, empty BYTES and STRING are `""` and NULL is `null` |
//!
//! So an empty field is always NULL, and NULL is always an empty field, with one exception:
//! BigQuery has no NULL ARRAY (it stores and answers an empty one), so an ARRAY column is `[]`
//! for both. A NULL STRUCT is an empty field; a STRUCT value is never empty (`{…}`).

use std::io::Write;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Decimal256Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, Time64MicrosecondType,
    TimestampMicrosecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, BinaryArray, BooleanArray, PrimitiveArray, RecordBatch, StringArray};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use base64::Engine;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use crate::config::Compression;
use crate::rows::is_json;
use crate::text;

/// CSV writer settings.
#[derive(Debug, Clone, Copy)]
pub struct CsvOptions {
    pub delimiter: u8,
    pub header: bool,
    pub compression: Compression,
}

enum Out {
    Plain(Vec<u8>),
    Gzip(GzEncoder<Vec<u8>>),
}

/// Streams typed rows into CSV bytes. Feed batches with [`CsvEncoder::write_batch`], take
/// encoded bytes with [`CsvEncoder::take`] whenever convenient, and finish with
/// [`CsvEncoder::finish`]. Counts rows and hashes (SHA-256) the bytes it hands out, after
/// compression.
///
/// For split exports the encoder writes a sequence of parts: [`CsvEncoder::stage_row`] encodes
/// a row and tells its size, so the caller can end the part with [`CsvEncoder::next_part`]
/// before adding it with [`CsvEncoder::push_staged`]. Every part has its own header row and,
/// with gzip, is a complete gzip file; counts and hashes are per part.
pub struct CsvEncoder {
    names: Vec<String>,
    opts: CsvOptions,
    line: Vec<u8>,
    out: Out,
    rows: u64,
    bytes: u64,
    raw: u64,
    sha: Sha256,
    special: Special,
}

/// The bytes that put a CSV field in quotes: the delimiter, `"`, CR and LF.
#[derive(Clone, Copy)]
struct Special([bool; 256]);

impl Special {
    fn new(delimiter: u8) -> Self {
        let mut t = [false; 256];
        for b in [delimiter, b'"', b'\n', b'\r'] {
            t[b as usize] = true;
        }
        Special(t)
    }
}

/// One column of a batch, downcast once per batch for the row loop.
enum ColumnView<'a> {
    Text(&'a StringArray),
    Int8(&'a PrimitiveArray<Int8Type>),
    Int16(&'a PrimitiveArray<Int16Type>),
    Int32(&'a PrimitiveArray<Int32Type>),
    Int64(&'a PrimitiveArray<Int64Type>),
    UInt8(&'a PrimitiveArray<UInt8Type>),
    UInt16(&'a PrimitiveArray<UInt16Type>),
    UInt32(&'a PrimitiveArray<UInt32Type>),
    UInt64(&'a PrimitiveArray<UInt64Type>),
    Float32(&'a PrimitiveArray<Float32Type>),
    Float64(&'a PrimitiveArray<Float64Type>),
    Bool(&'a BooleanArray),
    Timestamp(&'a PrimitiveArray<TimestampMicrosecondType>),
    Datetime(&'a PrimitiveArray<TimestampMicrosecondType>),
    Date(&'a PrimitiveArray<Date32Type>),
    Time(&'a PrimitiveArray<Time64MicrosecondType>),
    Binary(&'a BinaryArray),
    Decimal128(&'a PrimitiveArray<Decimal128Type>, i8),
    Decimal256(&'a PrimitiveArray<Decimal256Type>, i8),
    /// ARRAY or STRUCT: one JSON value.
    Nested(&'a dyn Array, &'a Field),
    /// A column of the NULL type.
    Null,
}

/// A column of a batch ready for the row loop: its typed view and where its NULLs are.
struct Column<'a> {
    view: ColumnView<'a>,
    nulls: Option<&'a NullBuffer>,
    /// A NULL is written `[]` (an ARRAY: BigQuery has no NULL ARRAY), not as an empty field.
    null_is_empty_list: bool,
    /// A value whose text is empty is written `""`, so that only NULL is an empty field (every
    /// column but one of the NULL type, whose values are all NULL).
    quote_empty: bool,
}

/// A batch ready to be encoded row by row: see [`CsvEncoder::view`].
pub struct BatchView<'a> {
    columns: Vec<Column<'a>>,
    rows: usize,
}

impl BatchView<'_> {
    /// Rows in the batch.
    pub fn num_rows(&self) -> usize {
        self.rows
    }
}

/// Checks that every column of `schema` has a CSV rendering; the error names the column.
pub fn check_schema(schema: &Schema) -> Result<(), String> {
    for f in schema.fields() {
        check_type(f.data_type()).map_err(|t| format!("column {}: no CSV rendering for type {t}", f.name()))?;
    }
    Ok(())
}

fn check_type(t: &DataType) -> Result<(), String> {
    match t {
        t if t.is_integer() => Ok(()),
        DataType::Null
        | DataType::Utf8
        | DataType::Float32
        | DataType::Float64
        | DataType::Boolean
        | DataType::Timestamp(TimeUnit::Microsecond, _)
        | DataType::Date32
        | DataType::Time64(TimeUnit::Microsecond)
        | DataType::Binary
        | DataType::Decimal128(_, _)
        | DataType::Decimal256(_, _) => Ok(()),
        DataType::List(f) => check_type(f.data_type()),
        DataType::Struct(fields) => fields.iter().try_for_each(|f| check_type(f.data_type())),
        other => Err(other.to_string()),
    }
}

fn view<'a>(array: &'a dyn Array, field: &'a Field) -> ColumnView<'a> {
    match field.data_type() {
        DataType::Utf8 => ColumnView::Text(array.as_string::<i32>()),
        DataType::Int8 => ColumnView::Int8(array.as_primitive()),
        DataType::Int16 => ColumnView::Int16(array.as_primitive()),
        DataType::Int32 => ColumnView::Int32(array.as_primitive()),
        DataType::Int64 => ColumnView::Int64(array.as_primitive()),
        DataType::UInt8 => ColumnView::UInt8(array.as_primitive()),
        DataType::UInt16 => ColumnView::UInt16(array.as_primitive()),
        DataType::UInt32 => ColumnView::UInt32(array.as_primitive()),
        DataType::UInt64 => ColumnView::UInt64(array.as_primitive()),
        DataType::Float32 => ColumnView::Float32(array.as_primitive()),
        DataType::Float64 => ColumnView::Float64(array.as_primitive()),
        DataType::Boolean => ColumnView::Bool(array.as_boolean()),
        DataType::Timestamp(_, Some(_)) => ColumnView::Timestamp(array.as_primitive()),
        DataType::Timestamp(_, None) => ColumnView::Datetime(array.as_primitive()),
        DataType::Date32 => ColumnView::Date(array.as_primitive()),
        DataType::Time64(_) => ColumnView::Time(array.as_primitive()),
        DataType::Binary => ColumnView::Binary(array.as_binary::<i32>()),
        DataType::Decimal128(_, s) => ColumnView::Decimal128(array.as_primitive(), *s),
        DataType::Decimal256(_, s) => ColumnView::Decimal256(array.as_primitive(), *s),
        DataType::Null => ColumnView::Null,
        _ => ColumnView::Nested(array, field),
    }
}

impl CsvEncoder {
    /// A new encoder for rows of `schema`; writes the header row now when enabled. Fails,
    /// naming the column, when a column's type has no CSV rendering.
    pub fn new(schema: &Schema, opts: CsvOptions) -> Result<Self, String> {
        check_schema(schema)?;
        let mut enc = Self {
            names: schema.fields().iter().map(|f| f.name().clone()).collect(),
            opts,
            line: Vec::with_capacity(1024),
            out: Self::new_out(opts.compression),
            rows: 0,
            bytes: 0,
            raw: 0,
            sha: Sha256::new(),
            special: Special::new(opts.delimiter),
        };
        enc.write_header();
        Ok(enc)
    }

    fn new_out(compression: Compression) -> Out {
        match compression {
            Compression::None => Out::Plain(Vec::with_capacity(1 << 18)),
            Compression::Gzip => Out::Gzip(GzEncoder::new(Vec::with_capacity(1 << 18), flate2::Compression::fast())),
        }
    }

    fn write_header(&mut self) {
        if !self.opts.header {
            return;
        }
        let staged = std::mem::take(&mut self.line);
        for (i, name) in self.names.iter().enumerate() {
            if i > 0 {
                self.line.push(self.opts.delimiter);
            }
            push_field(&mut self.line, name.as_bytes(), &self.special);
        }
        self.line.extend_from_slice(b"\r\n");
        self.flush_line();
        self.line = staged;
    }

    fn flush_line(&mut self) {
        self.raw += self.line.len() as u64;
        match &mut self.out {
            Out::Plain(v) => v.extend_from_slice(&self.line),
            Out::Gzip(g) => g.write_all(&self.line).expect("writing to memory"),
        }
        self.line.clear();
    }

    /// Prepares `batch` for [`CsvEncoder::stage_row`]. Fails when its columns differ from the
    /// encoder's (count or names).
    pub fn view<'a>(&self, batch: &'a RecordBatch) -> Result<BatchView<'a>, String> {
        let schema = batch.schema_ref();
        let names: Vec<&String> = schema.fields().iter().map(|f| f.name()).collect();
        if names.len() != self.names.len() || names.iter().zip(&self.names).any(|(a, b)| *a != b) {
            return Err(format!("a batch has columns {names:?}, the file has {:?}", self.names));
        }
        check_schema(schema)?;
        let columns = batch
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(a, f)| Column {
                view: view(a.as_ref(), f),
                nulls: a.nulls(),
                null_is_empty_list: matches!(f.data_type(), DataType::List(_)),
                quote_empty: !matches!(f.data_type(), DataType::Null),
            })
            .collect();
        Ok(BatchView { columns, rows: batch.num_rows() })
    }

    /// Encodes every row of `batch`.
    pub fn write_batch(&mut self, batch: &RecordBatch) -> Result<(), String> {
        let view = self.view(batch)?;
        for row in 0..view.rows {
            self.stage_row(&view, row);
            self.push_staged();
        }
        Ok(())
    }

    /// Encodes row `row` of `batch` without adding it yet; returns its size in bytes (before
    /// compression). Add it with [`CsvEncoder::push_staged`], possibly after
    /// [`CsvEncoder::next_part`].
    pub fn stage_row(&mut self, batch: &BatchView<'_>, row: usize) -> usize {
        self.line.clear();
        let line = &mut self.line;
        let special = &self.special;
        for (i, col) in batch.columns.iter().enumerate() {
            if i > 0 {
                line.push(self.opts.delimiter);
            }
            if col.nulls.is_some_and(|n| n.is_null(row)) && !col.null_is_empty_list {
                continue;
            }
            let start = line.len();
            write_cell(line, &col.view, row, special);
            if col.quote_empty && line.len() == start {
                line.extend_from_slice(b"\"\"");
            }
        }
        line.extend_from_slice(b"\r\n");
        line.len()
    }

    /// Adds the row staged by [`CsvEncoder::stage_row`] to the current part.
    pub fn push_staged(&mut self) {
        self.flush_line();
        self.rows += 1;
    }

    /// Size of the current part before compression, header included.
    pub fn part_bytes(&self) -> u64 {
        self.raw
    }

    /// Ends the current part and starts the next one with its own header (and gzip stream).
    /// A staged row stays staged, for the new part. Returns the last bytes of the finished part
    /// and its totals.
    pub fn next_part(&mut self) -> (Vec<u8>, Encoded) {
        let out = std::mem::replace(&mut self.out, Self::new_out(self.opts.compression));
        let done = self.finish_out(out);
        self.write_header();
        done
    }

    /// Bytes buffered so far (before compression for gzip).
    pub fn buffered(&self) -> usize {
        match &self.out {
            Out::Plain(v) => v.len(),
            Out::Gzip(g) => g.get_ref().len(),
        }
    }

    /// Takes the encoded bytes produced so far.
    pub fn take(&mut self) -> Vec<u8> {
        let v = match &mut self.out {
            Out::Plain(v) => std::mem::replace(v, Vec::with_capacity(1 << 18)),
            Out::Gzip(g) => std::mem::take(g.get_mut()),
        };
        self.bytes += v.len() as u64;
        self.sha.update(&v);
        v
    }

    /// Ends the stream: returns the last bytes and the totals.
    pub fn finish(mut self) -> (Vec<u8>, Encoded) {
        let out = std::mem::replace(&mut self.out, Out::Plain(Vec::new()));
        self.finish_out(out)
    }

    fn finish_out(&mut self, out: Out) -> (Vec<u8>, Encoded) {
        let tail = match out {
            Out::Plain(v) => v,
            Out::Gzip(g) => g.finish().expect("finishing gzip in memory"),
        };
        self.sha.update(&tail);
        let sha = std::mem::take(&mut self.sha);
        let sha256 = sha.finalize().iter().map(|b| format!("{b:02x}")).collect();
        let encoded = Encoded { rows: self.rows, bytes: self.bytes + tail.len() as u64, sha256 };
        (self.rows, self.bytes, self.raw) = (0, 0, 0);
        (tail, encoded)
    }

    /// Rows encoded so far in the current part.
    pub fn rows(&self) -> u64 {
        self.rows
    }
}

/// Writes value `row` of a column; the caller has handled NULL.
fn write_cell(line: &mut Vec<u8>, col: &ColumnView<'_>, row: usize, special: &Special) {
    macro_rules! int {
        ($a:expr) => {
            text::write_int(line, $a.value(row))
        };
    }
    match col {
        ColumnView::Text(a) => push_field(line, a.value(row).as_bytes(), special),
        ColumnView::Int64(a) => int!(a),
        ColumnView::Int32(a) => int!(a),
        ColumnView::Int16(a) => int!(a),
        ColumnView::Int8(a) => int!(a),
        ColumnView::UInt64(a) => int!(a),
        ColumnView::UInt32(a) => int!(a),
        ColumnView::UInt16(a) => int!(a),
        ColumnView::UInt8(a) => int!(a),
        ColumnView::Float64(a) => text::write_float(line, a.value(row)),
        ColumnView::Float32(a) => {
            // Through its shortest decimal text, so 0.1f32 stays 0.1.
            text::write_float(line, a.value(row).to_string().parse().unwrap_or(f64::NAN))
        }
        ColumnView::Bool(a) => line.extend_from_slice(if a.value(row) { b"true" } else { b"false" }),
        ColumnView::Timestamp(a) => text::write_timestamp(line, a.value(row)),
        ColumnView::Datetime(a) => text::write_datetime(line, a.value(row)),
        ColumnView::Date(a) => text::write_date(line, a.value(row)),
        ColumnView::Time(a) => text::write_time(line, a.value(row)),
        ColumnView::Binary(a) => {
            let start = line.len();
            line.resize(start + base64::encoded_len(a.value(row).len(), true).unwrap_or(0), 0);
            let n = base64::engine::general_purpose::STANDARD.encode_slice(a.value(row), &mut line[start..]).unwrap_or(0);
            line.truncate(start + n);
        }
        ColumnView::Decimal128(a, scale) => text::write_decimal128(line, a.value(row), *scale),
        ColumnView::Decimal256(a, scale) => text::write_decimal_digits(line, &a.value(row).to_string(), *scale),
        ColumnView::Nested(a, field) => {
            let mut json = String::new();
            json_value(&mut json, *a, field, row);
            push_field(line, json.as_bytes(), special);
        }
        ColumnView::Null => {}
    }
}

/// Totals of a finished encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub rows: u64,
    pub bytes: u64,
    /// Hex SHA-256 of the delivered bytes.
    pub sha256: String,
}

fn push_field(out: &mut Vec<u8>, v: &[u8], special: &Special) {
    let needs = v.iter().any(|&b| special.0[b as usize]);
    if !needs {
        out.extend_from_slice(v);
        return;
    }
    out.push(b'"');
    let mut rest = v;
    while let Some(i) = rest.iter().position(|&b| b == b'"') {
        out.extend_from_slice(&rest[..=i]);
        out.push(b'"');
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

fn json_string(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).expect("string to JSON"));
}

/// Appends value `row` of `array` (typed by `field`) as one JSON value. A NULL list is `[]`
/// (BigQuery has no NULL ARRAY).
fn json_value(out: &mut String, array: &dyn Array, field: &Field, row: usize) {
    let is_list = matches!(field.data_type(), DataType::List(_));
    if array.is_null(row) && !is_list {
        out.push_str("null");
        return;
    }
    let mut scalar = |quoted: bool| {
        let mut bytes = Vec::new();
        write_cell(&mut bytes, &view(array, field), row, &Special([false; 256]));
        let text = String::from_utf8(bytes).expect("renderings are UTF-8");
        if quoted {
            json_string(out, &text)
        } else {
            out.push_str(&text)
        }
    };
    match field.data_type() {
        t if t.is_integer() || matches!(t, DataType::Boolean | DataType::Decimal128(..) | DataType::Decimal256(..)) => scalar(false),
        DataType::Float64 => {
            let finite = array.as_primitive::<Float64Type>().value(row).is_finite();
            scalar(!finite)
        }
        DataType::Float32 => {
            let finite = array.as_primitive::<Float32Type>().value(row).is_finite();
            scalar(!finite)
        }
        DataType::Utf8 if is_json(field) => out.push_str(array.as_string::<i32>().value(row)),
        DataType::Utf8 => json_string(out, array.as_string::<i32>().value(row)),
        DataType::List(item) => {
            let list = array.as_list::<i32>();
            out.push('[');
            if list.is_valid(row) {
                let values = list.value(row);
                for i in 0..values.len() {
                    if i > 0 {
                        out.push(',');
                    }
                    json_value(out, values.as_ref(), item, i);
                }
            }
            out.push(']');
        }
        DataType::Struct(fields) => {
            let s = array.as_struct();
            out.push('{');
            for (i, (f, child)) in fields.iter().zip(s.columns()).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(out, f.name());
                out.push(':');
                json_value(out, child.as_ref(), f, row);
            }
            out.push('}');
        }
        DataType::Null => out.push_str("null"),
        _ => scalar(true),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::builder::{Int64Builder, ListBuilder};
    use arrow_array::{ArrayRef, Decimal128Array, Int64Array, StructArray, TimestampMicrosecondArray};
    use arrow_schema::Fields;

    use super::*;
    use crate::rows::json_field;

    fn encode(batch: &RecordBatch, header: bool) -> String {
        let mut e = CsvEncoder::new(&batch.schema(), CsvOptions { delimiter: b',', header, compression: Compression::None }).unwrap();
        e.write_batch(batch).unwrap();
        let mut out = e.take();
        out.extend(e.finish().0);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn quoting_nulls_and_nesting() {
        let mut list = ListBuilder::new(Int64Builder::new());
        list.append_value([Some(1), Some(2)]);
        list.append_null();
        let list = list.finish();
        let st_fields = Fields::from(vec![Field::new("x", DataType::Int64, true), Field::new("y", DataType::Utf8, true)]);
        let st = StructArray::new(
            st_fields.clone(),
            vec![Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef, Arc::new(StringArray::from(vec!["z\"", "w"]))],
            Some(vec![true, false].into()),
        );
        let schema = Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("n", DataType::Decimal128(38, 9), true),
            Field::new("t", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
            Field::new("a", list.data_type().clone(), true),
            Field::new("r", DataType::Struct(st_fields), true),
            json_field("j"),
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from(vec![Some("a,\"b\"\nc"), Some("")])),
                Arc::new(
                    Decimal128Array::from(vec![Some(12_345_678_901_234_567_890_123_456_789), None])
                        .with_precision_and_scale(38, 9)
                        .unwrap(),
                ),
                Arc::new(TimestampMicrosecondArray::from(vec![Some(1_704_164_645_123_456), None]).with_timezone("UTC")),
                Arc::new(list),
                Arc::new(st),
                Arc::new(StringArray::from(vec![Some(r#"{"k":[1]}"#), None])),
            ],
        )
        .unwrap();
        assert_eq!(
            encode(&batch, true),
            "s,n,t,a,r,j\r\n\"a,\"\"b\"\"\nc\",12345678901234567890.123456789,2024-01-02T03:04:05.123456Z,\"[1,2]\",\"{\"\"x\"\":1,\"\"y\"\":\"\"z\\\"\"\"\"}\",\"{\"\"k\"\":[1]}\"\r\n\"\",,,[],,\r\n"
        );
    }

    #[test]
    fn an_empty_value_differs_from_null_for_every_type_that_has_one() {
        use arrow_array::{BinaryArray, NullArray};
        let schema = Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("b", DataType::Binary, true),
            json_field("j"),
            Field::new("z", DataType::Null, true),
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from(vec![Some(""), None, Some("x")])),
                Arc::new(BinaryArray::from(vec![Some(&b""[..]), None, Some(&b"ab"[..])])),
                Arc::new(StringArray::from(vec![Some(""), None, Some("1")])),
                Arc::new(NullArray::new(3)),
            ],
        )
        .unwrap();
        assert_eq!(encode(&batch, false), "\"\",\"\",\"\",\r\n,,,\r\nx,YWI=,1,\r\n");
    }

    #[test]
    fn parts_have_their_own_header_and_totals() {
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true)])),
            vec![Arc::new(StringArray::from(vec!["a", "bb"]))],
        )
        .unwrap();
        let mut e = CsvEncoder::new(&batch.schema(), CsvOptions { delimiter: b',', header: true, compression: Compression::None }).unwrap();
        let view = e.view(&batch).unwrap();
        assert_eq!(e.part_bytes(), 3);
        e.stage_row(&view, 0);
        e.push_staged();
        assert_eq!(e.stage_row(&view, 1), 4);
        assert_eq!(e.part_bytes(), 6);
        let mut first = e.take();
        let (tail, one) = e.next_part();
        first.extend(tail);
        assert_eq!(first, b"s\r\na\r\n");
        assert_eq!((one.rows, one.bytes), (1, 6));
        assert_eq!(one.sha256, Sha256::digest(b"s\r\na\r\n").iter().map(|b| format!("{b:02x}")).collect::<String>());
        e.push_staged();
        let (second, two) = e.finish();
        assert_eq!(second, b"s\r\nbb\r\n");
        assert_eq!((two.rows, two.bytes), (1, 7));
    }

    #[test]
    fn a_type_without_a_rendering_is_refused_by_name() {
        let schema = Schema::new(vec![Field::new("d", DataType::Duration(TimeUnit::Second), true)]);
        let err = CsvEncoder::new(&schema, CsvOptions { delimiter: b',', header: true, compression: Compression::None }).err().unwrap();
        assert!(err.contains("column d"), "{err}");
    }
}
