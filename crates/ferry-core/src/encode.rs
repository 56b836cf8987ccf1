//! Rows and their CSV encoding.
//!
//! CSV is RFC 4180: fields separated by the delimiter, records ended by CRLF, a field quoted
//! with `"` when it contains the delimiter, a quote, CR or LF (quotes doubled inside), and a
//! header row of column names unless turned off. How each BigQuery type is written:
//!
//! | type | written as |
//! |---|---|
//! | NULL (any type) | an empty field |
//! | STRING | the text; the empty string is written `""` so that it differs from NULL |
//! | INT64, FLOAT64, NUMERIC, BIGNUMERIC | BigQuery's exact decimal text (never through a float) |
//! | BOOL | `true` / `false` |
//! | TIMESTAMP | RFC 3339 UTC with six fractional digits: `2024-01-02T03:04:05.123456Z` |
//! | DATE, DATETIME, TIME | ISO 8601 as BigQuery sends it: `2024-01-02`, `2024-01-02T03:04:05.5`, `03:04:05.250000` |
//! | BYTES | base64 |
//! | JSON, GEOGRAPHY | their text |
//! | ARRAY, STRUCT | one JSON value: `[1,2]`, `{"a":1,"b":"x"}`; inside it numbers are bare, TIMESTAMPs are strings as above |

use std::io::Write;

use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use crate::config::Compression;
use crate::cursor::{format_timestamp, parse_rest_timestamp, write_timestamp};

/// A cell as a warehouse returns it: scalars as text, arrays and records nested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Null,
    Text(String),
    List(Vec<Cell>),
    Record(Vec<Cell>),
}

/// Column types (BigQuery's, standard and legacy names folded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    String,
    Int64,
    Float64,
    Numeric,
    BigNumeric,
    Bool,
    Timestamp,
    Date,
    Datetime,
    Time,
    Bytes,
    Json,
    Geography,
    Record(Vec<Column>),
    /// Any other type name, written as its text.
    Other(String),
}

impl ColumnType {
    /// From a BigQuery type name; `fields` for RECORD/STRUCT.
    pub fn from_bigquery(name: &str, fields: Vec<Column>) -> Self {
        match name {
            "STRING" => Self::String,
            "INTEGER" | "INT64" => Self::Int64,
            "FLOAT" | "FLOAT64" => Self::Float64,
            "NUMERIC" => Self::Numeric,
            "BIGNUMERIC" => Self::BigNumeric,
            "BOOLEAN" | "BOOL" => Self::Bool,
            "TIMESTAMP" => Self::Timestamp,
            "DATE" => Self::Date,
            "DATETIME" => Self::Datetime,
            "TIME" => Self::Time,
            "BYTES" => Self::Bytes,
            "JSON" => Self::Json,
            "GEOGRAPHY" => Self::Geography,
            "RECORD" | "STRUCT" => Self::Record(fields),
            other => Self::Other(other.to_owned()),
        }
    }
}

/// A result column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    /// ARRAY of `ty`.
    pub repeated: bool,
}

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

/// Streams rows into CSV bytes. Feed rows with [`CsvEncoder::write_row`], take encoded bytes
/// with [`CsvEncoder::take`] whenever convenient, and finish with [`CsvEncoder::finish`].
/// Counts rows and hashes (SHA-256) the bytes it hands out, after compression.
///
/// For split exports the encoder writes a sequence of parts: [`CsvEncoder::stage_row`] encodes
/// a row and tells its size, so the caller can end the part with [`CsvEncoder::next_part`]
/// before adding it with [`CsvEncoder::push_staged`]. Every part has its own header row and,
/// with gzip, is a complete gzip file; counts and hashes are per part.
pub struct CsvEncoder {
    columns: Vec<Column>,
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

impl CsvEncoder {
    /// A new encoder; writes the header row now when enabled.
    pub fn new(columns: Vec<Column>, opts: CsvOptions) -> Self {
        let mut enc = Self {
            columns,
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
        enc
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
        for (i, c) in self.columns.iter().enumerate() {
            if i > 0 {
                self.line.push(self.opts.delimiter);
            }
            push_field(&mut self.line, c.name.as_bytes(), &self.special, false);
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

    /// Encodes one row; `cells` are in column order.
    pub fn write_row(&mut self, cells: &[Cell]) -> Result<(), String> {
        self.stage_row(cells)?;
        self.push_staged();
        Ok(())
    }

    /// Encodes one row without adding it yet; returns its size in bytes (before compression).
    /// Add it with [`CsvEncoder::push_staged`], possibly after [`CsvEncoder::next_part`].
    pub fn stage_row(&mut self, cells: &[Cell]) -> Result<usize, String> {
        self.line.clear();
        if cells.len() != self.columns.len() {
            return Err(format!("row has {} cells, the schema has {} columns", cells.len(), self.columns.len()));
        }
        let d = self.opts.delimiter;
        let mut scratch = String::new();
        for (i, (cell, col)) in cells.iter().zip(&self.columns).enumerate() {
            if i > 0 {
                self.line.push(d);
            }
            match cell {
                Cell::Null => {}
                Cell::Text(t) if !col.repeated => match &col.ty {
                    ColumnType::String => push_field(&mut self.line, t.as_bytes(), &self.special, true),
                    ColumnType::Timestamp => {
                        let us = parse_rest_timestamp(t).ok_or_else(|| format!("column {}: bad TIMESTAMP {t:?}", col.name))?;
                        write_timestamp(&mut self.line, us);
                    }
                    _ => push_field(&mut self.line, t.as_bytes(), &self.special, false),
                },
                other => {
                    scratch.clear();
                    json_value(&mut scratch, other, &col.ty, col.repeated)?;
                    push_field(&mut self.line, scratch.as_bytes(), &self.special, false);
                }
            }
        }
        self.line.extend_from_slice(b"\r\n");
        Ok(self.line.len())
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

/// Totals of a finished encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub rows: u64,
    pub bytes: u64,
    /// Hex SHA-256 of the delivered bytes.
    pub sha256: String,
}

fn push_field(out: &mut Vec<u8>, v: &[u8], special: &Special, empty_is_quoted: bool) {
    let needs = v.iter().any(|&b| special.0[b as usize]) || (empty_is_quoted && v.is_empty());
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

fn json_value(out: &mut String, cell: &Cell, ty: &ColumnType, repeated: bool) -> Result<(), String> {
    if repeated {
        let Cell::List(items) = cell else {
            if *cell == Cell::Null {
                out.push_str("[]");
                return Ok(());
            }
            return Err("ARRAY value is not a list".into());
        };
        out.push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json_value(out, item, ty, false)?;
        }
        out.push(']');
        return Ok(());
    }
    match (cell, ty) {
        (Cell::Null, _) => out.push_str("null"),
        (Cell::Record(values), ColumnType::Record(fields)) => {
            out.push('{');
            for (i, (v, f)) in values.iter().zip(fields).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(out, &f.name);
                out.push(':');
                json_value(out, v, &f.ty, f.repeated)?;
            }
            out.push('}');
        }
        (Cell::Text(t), ColumnType::Int64 | ColumnType::Numeric | ColumnType::BigNumeric | ColumnType::Bool) => out.push_str(t),
        (Cell::Text(t), ColumnType::Float64) => {
            if t.parse::<f64>().is_ok_and(f64::is_finite) {
                out.push_str(t)
            } else {
                json_string(out, t)
            }
        }
        (Cell::Text(t), ColumnType::Json) => out.push_str(t),
        (Cell::Text(t), ColumnType::Timestamp) => {
            let us = parse_rest_timestamp(t).ok_or_else(|| format!("bad TIMESTAMP {t:?}"))?;
            json_string(out, &format_timestamp(us));
        }
        (Cell::Text(t), _) => json_string(out, t),
        (other, _) => return Err(format!("unexpected nested value {other:?}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: ColumnType) -> Column {
        Column { name: name.into(), ty, repeated: false }
    }

    #[test]
    fn quoting_nulls_and_nesting() {
        let cols = vec![
            col("s", ColumnType::String),
            col("n", ColumnType::Numeric),
            col("t", ColumnType::Timestamp),
            Column { name: "a".into(), ty: ColumnType::Int64, repeated: true },
            col("r", ColumnType::Record(vec![col("x", ColumnType::Int64), col("y", ColumnType::String)])),
        ];
        let mut e = CsvEncoder::new(cols, CsvOptions { delimiter: b',', header: true, compression: Compression::None });
        let t = |s: &str| Cell::Text(s.into());
        e.write_row(&[
            t("a,\"b\"\nc"),
            t("12345678901234567890.123456789"),
            t("1704164645123456"),
            Cell::List(vec![t("1"), t("2")]),
            Cell::Record(vec![t("1"), t("z\"")]),
        ])
        .unwrap();
        e.write_row(&[t(""), Cell::Null, Cell::Null, Cell::List(vec![]), Cell::Null]).unwrap();
        let mut out = e.take();
        let (tail, totals) = e.finish();
        out.extend(tail);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "s,n,t,a,r\r\n\"a,\"\"b\"\"\nc\",12345678901234567890.123456789,2024-01-02T03:04:05.123456Z,\"[1,2]\",\"{\"\"x\"\":1,\"\"y\"\":\"\"z\\\"\"\"\"}\"\r\n\"\",,,[],\r\n"
        );
        assert_eq!(totals.rows, 2);
    }

    #[test]
    fn parts_have_their_own_header_and_totals() {
        let mut e = CsvEncoder::new(
            vec![col("s", ColumnType::String)],
            CsvOptions { delimiter: b',', header: true, compression: Compression::None },
        );
        let t = |s: &str| Cell::Text(s.into());
        assert_eq!(e.part_bytes(), 3);
        e.write_row(&[t("a")]).unwrap();
        assert_eq!(e.stage_row(&[t("bb")]).unwrap(), 4);
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
}
