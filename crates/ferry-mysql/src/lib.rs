//! MySQL and MariaDB for ferry: the `mysql` [`Source`](ferry_core::Source), rows read as
//! typed Arrow batches (see [`ferry_core::rows`]).
//!
//! A read is one connection and one transaction: `START TRANSACTION WITH CONSISTENT SNAPSHOT,
//! READ ONLY` (REPEATABLE READ), then the window's SELECT, prepared with its window bounds as
//! typed parameters (`?`, the binary protocol), runs once and its rows are read as the server
//! sends them: every `batch_rows` rows become one batch, handed over through a one-slot
//! channel, so memory stays bounded whatever the table's size. The session's
//! `net_write_timeout` is 600 s, so that a slow consumer does not trip the server's 60 s
//! default. A read that is dropped before its last batch ends its connection with `KILL` from
//! a second connection, so that the server stops sending.
//!
//! Connections use mysql_async with TLS on rustls and the *ring* provider (`tls: verify-full`
//! by default; `require`; `disable` only to this machine, with
//! `FERRY_ALLOW_PLAINTEXT_LOOPBACK=1`), never the server's Unix socket, a 10 s connect
//! timeout, `+00:00` as the session's time zone and UTF-8 (`utf8mb4`) as the character set of
//! results.
//!
//! The source does not delete rows: an `hourly` load with `delete_from_source` is refused
//! (the [`Source::delete`](ferry_core::Source::delete) default).
//!
//! # Types
//!
//! Each column's type is the type the server describes for the source's SELECT (a statement
//! prepared, not run): its protocol type, its flags (`UNSIGNED`), its character set (63 is
//! binary) and its length (the display width `1` of `TINYINT(1)`, the precision of
//! `DECIMAL`).
//!
//! | MySQL / MariaDB | Arrow | BigQuery |
//! |---|---|---|
//! | `TINYINT(1)`, `BOOL` | `Boolean` (values other than 0 and 1 are refused) | BOOL |
//! | `BIT(1)` | `Boolean` | BOOL |
//! | `TINYINT`, `SMALLINT`, `MEDIUMINT`, `INT`, `BIGINT`, signed or `UNSIGNED` up to `INT UNSIGNED` | `Int64` | INT64 |
//! | `BIGINT UNSIGNED` (INT64 cannot hold values above 2^63 − 1) | `Decimal128(38, 9)` | NUMERIC |
//! | `BIT(n)`, n > 1 | `Int64` (values above 2^63 − 1 are refused) | INT64 |
//! | `YEAR` | `Int64` | INT64 |
//! | `DECIMAL(p, s)` with s ≤ 9 and p − s ≤ 29 | `Decimal128(38, 9)` | NUMERIC |
//! | any other `DECIMAL` | `Decimal256(76, 38)` | BIGNUMERIC |
//! | `FLOAT`, `DOUBLE` | `Float64` | FLOAT64 |
//! | `CHAR`, `VARCHAR`, `TINYTEXT` … `LONGTEXT` (any character set, sent as utf8mb4), `ENUM`, `SET` | `Utf8` | STRING |
//! | `BINARY`, `VARBINARY`, `TINYBLOB` … `LONGBLOB` | `Binary` | BYTES |
//! | `DATE` | `Date32` | DATE |
//! | `DATETIME(n)` | `Timestamp(Microsecond, None)` | DATETIME |
//! | `TIMESTAMP(n)` | `Timestamp(Microsecond, "UTC")` | TIMESTAMP |
//! | `TIME(n)` from 00:00:00 to 23:59:59.999999 | `Time64(Microsecond)` | TIME |
//! | `JSON` (MySQL); MariaDB's `JSON` of a `table` source | `Utf8` marked `arrow.json` ([`json_field`](ferry_core::rows::json_field)) | JSON |
//! | `GEOMETRY` and its subtypes | `Utf8`, WKT from `ST_AsText`, [`text_field`](ferry_core::rows::text_field) naming `GEOMETRY` | STRING |
//! | a column of type NULL (`SELECT NULL AS x`) | `Utf8`, always NULL | STRING |
//! | any other type (MySQL 9's `VECTOR`, …) | a permanent error naming the column and the type | |
//!
//! Zero dates are NULL: `'0000-00-00'`, `'0000-00-00 00:00:00'` and any date or datetime
//! with a zero month or day (what MySQL's connectors do with `zeroDateTimeBehavior=convertToNull`;
//! BigQuery has no such date). In SQL they are not NULL: they sort before every other date,
//! so a window from the beginning holds them, and they are not counted as NULL cursors.
//!
//! MariaDB stores `JSON` as `LONGTEXT` with a `CHECK (json_valid(column))` constraint and
//! describes it as `LONGTEXT`; for a `table` source ferry finds those constraints in
//! `information_schema.CHECK_CONSTRAINTS` and reads the columns as JSON. A `query` source's
//! MariaDB JSON arrives as STRING (`LONGTEXT`).
//!
//! Values ferry cannot deliver exactly are permanent errors naming the column and the value:
//! a `TIME` that is negative or of 24 hours or more, a `DECIMAL` that does not fit its Arrow
//! type, a `TINYINT(1)` other than 0 or 1, text that is not UTF-8.
//!
//! A `DECIMAL` column's precision and scale come from its description (its display length
//! and decimals): a table's columns carry the declared ones, and so do a query's expressions
//! as the server types them (MariaDB's `SUM(amount)` of a `DECIMAL(10,2)` is `DECIMAL(32,2)`,
//! read as BIGNUMERIC).
//!
//! # Cursors
//!
//! A `timestamp_column` of type `TIMESTAMP` is a TIMESTAMP cursor (UTC), `DATETIME` DATETIME,
//! `DATE` DATE, the integer types (`TINYINT` … `BIGINT`) INT64; any other type is a permanent
//! error. Window bounds are bound as typed parameters: DATETIME values (compared in the
//! session's `+00:00`, so that a TIMESTAMP bound is UTC), `CAST(? AS DATE)` for dates, BIGINT
//! for integers.

pub mod component;
mod decode;
mod error;
mod source;
mod tls;

pub use component::{validate_source, MySqlSettings, RawMySqlSource, SourceSpec, TableName, Tls};
pub use decode::{BIGNUMERIC, NUMERIC};
pub use error::MySqlError;
pub use source::{MySqlSource, CONNECT_TIMEOUT};
