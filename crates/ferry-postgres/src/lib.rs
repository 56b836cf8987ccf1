//! PostgreSQL for ferry: the `postgres` [`Source`](ferry_core::Source), rows read as typed
//! Arrow batches (see [`ferry_core::rows`]).
//!
//! A read is one connection and one `REPEATABLE READ READ ONLY` transaction: the window's
//! SELECT is declared as a server-side cursor (`DECLARE ferry_read NO SCROLL CURSOR FOR …`,
//! its window bounds bound as typed parameters), then `FETCH FORWARD batch_rows` gives one
//! batch at a time until the cursor is exhausted, so memory stays bounded whatever the table's
//! size. Values arrive in PostgreSQL's binary format and are decoded by this crate straight
//! into Arrow builders.
//!
//! Connections use tokio-postgres with TLS on rustls and the *ring* provider (`tls:
//! verify-full` by default; `require`; `disable` only to this machine, with
//! `FERRY_ALLOW_PLAINTEXT_LOOPBACK=1`), `application_name` `ferry`, a 10 s connect timeout,
//! and UTC as the session's time zone. Over TLS, SCRAM logins are bound to the server's
//! certificate (`tls-server-end-point` channel binding).
//!
//! # Types
//!
//! Each column's type is the type the server describes for the source's SELECT (a statement
//! prepared, not run). Domains are read as their base type.
//!
//! | PostgreSQL | Arrow | BigQuery |
//! |---|---|---|
//! | `boolean` | `Boolean` | BOOL |
//! | `smallint`, `integer`, `bigint` | `Int64` | INT64 |
//! | `real`, `double precision` | `Float64` | FLOAT64 |
//! | `numeric(p, s)` with s ≤ 9 and p − s ≤ 29 | `Decimal128(38, 9)` | NUMERIC |
//! | any other `numeric` (unconstrained, or larger) | `Decimal256(76, 38)` | BIGNUMERIC |
//! | `text`, `varchar`, `char(n)`, `name`, enum types | `Utf8` | STRING |
//! | `citext` and other extension types in the string category | `Utf8` (cast to `text`) | STRING |
//! | `bytea` | `Binary` | BYTES |
//! | `date` | `Date32` | DATE |
//! | `timestamp` | `Timestamp(Microsecond, None)` | DATETIME |
//! | `timestamptz` | `Timestamp(Microsecond, "UTC")` | TIMESTAMP |
//! | `time` | `Time64(Microsecond)` | TIME |
//! | `uuid` | `Utf8`, canonical hyphenated lowercase | STRING |
//! | `json`, `jsonb` | `Utf8` marked `arrow.json` ([`json_field`](ferry_core::rows::json_field)) | JSON |
//! | one-dimensional arrays of the types above | `List` of the element's type | ARRAY |
//! | every other type (`interval`, `inet`, `money`, `timetz`, `xml`, arrays of those, …) | `Utf8` cast to text in SQL, [`text_field`](ferry_core::rows::text_field) naming the type (`interval`, `inet[]`) | STRING |
//!
//! Values ferry cannot deliver exactly are permanent errors naming the column and the value:
//! a numeric that does not fit its Arrow type (more digits, or more fractional digits, than
//! it holds), `NaN` and `±Infinity` numerics, `±infinity` dates and timestamps, a NULL element
//! in an array (BigQuery arrays cannot hold NULL) and multi-dimensional arrays.
//!
//! A `numeric` column's precision and scale come from the type modifier the server sends with
//! the column's description (RowDescription). A table's columns, and a query's columns that
//! are a table's column or a cast to `numeric(p, s)`, carry theirs; a computed numeric (`a *
//! b`, `sum(a)`) and a domain over `numeric(p, s)` carry none and are read as BIGNUMERIC.
//!
//! # Cursors
//!
//! A `timestamp_column` of type `timestamptz` is a TIMESTAMP cursor, `timestamp` DATETIME,
//! `date` DATE, `smallint`/`integer`/`bigint` INT64; any other type is a permanent error. The
//! window compares with explicitly typed parameters (`s."updated_at" > $1::timestamptz`).

pub mod component;
mod decode;
mod error;
mod source;
mod tls;

pub use component::{validate_source, PostgresSettings, RawPostgresSource, SourceSpec, TableName, Tls};
pub use decode::{BIGNUMERIC, NUMERIC};
pub use error::PostgresError;
pub use source::{PostgresSource, CONNECT_TIMEOUT};
pub use tls::CertificateRefused;
