//! The row model every source and destination shares: typed columnar batches, Arrow
//! [`RecordBatch`]es (arrow-rs). A source decodes its wire format into batches inside its own
//! crate; encoders and table loaders read them.
//!
//! Types are Arrow's, and BigQuery's types map to them as its Storage Read API does:
//!
//! | BigQuery | Arrow |
//! |---|---|
//! | STRING | `Utf8` |
//! | INT64 | `Int64` |
//! | FLOAT64 | `Float64` |
//! | NUMERIC | `Decimal128(38, 9)` |
//! | BIGNUMERIC | `Decimal256(76, 38)` |
//! | BOOL | `Boolean` |
//! | TIMESTAMP | `Timestamp(Microsecond, "UTC")` |
//! | DATE | `Date32` |
//! | DATETIME | `Timestamp(Microsecond, None)` |
//! | TIME | `Time64(Microsecond)` |
//! | BYTES | `Binary` |
//! | JSON | `Utf8` with the canonical extension `arrow.json` |
//! | GEOGRAPHY, and types without an Arrow match | `Utf8` with `ferry.sql_type` naming the type |
//! | ARRAY&lt;T&gt; | `List(T)` |
//! | STRUCT | `Struct` |

use std::collections::HashMap;

pub use arrow_array::RecordBatch;
pub use arrow_schema::{DataType, Field, Schema, SchemaRef};

/// Field metadata key of Arrow's extension types.
pub const EXTENSION_NAME: &str = "ARROW:extension:name";
/// Field metadata key naming the source's own type where Arrow has none (`GEOGRAPHY`).
pub const SQL_TYPE: &str = "ferry.sql_type";

/// A nullable JSON column: `Utf8` marked with the `arrow.json` extension.
pub fn json_field(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true).with_metadata(HashMap::from([(EXTENSION_NAME.to_owned(), "arrow.json".to_owned())]))
}

/// True for a column marked as JSON text.
pub fn is_json(field: &Field) -> bool {
    field.metadata().get(EXTENSION_NAME).is_some_and(|v| v == "arrow.json")
}

/// A nullable text column holding values of the source's type `sql_type`.
pub fn text_field(name: &str, sql_type: &str) -> Field {
    Field::new(name, DataType::Utf8, true).with_metadata(HashMap::from([(SQL_TYPE.to_owned(), sql_type.to_owned())]))
}
