//! BigQuery for ferry: a thin REST client (jobs.query, getQueryResults paging, insertAll,
//! dataset and table administration) that works against BigQuery and the local emulator, the
//! query [`Source`](ferry_core::Source) and the metadata-table
//! [`StateStore`](ferry_core::StateStore).
//!
//! TIMESTAMP values are requested as int64 microseconds (`formatOptions.useInt64Timestamp`);
//! the float-seconds form that some servers send anyway is accepted too.

mod arrow;
mod client;
pub mod component;
mod error;
mod jobs;
mod source;
mod state;
pub mod storage;
mod table;

pub use arrow::{rest_to_batch, schema_of};
pub use client::{BigQuery, Cell, Field, Page, QueryJob, QueryParam, TableInfo, TableRef};
pub use error::BigQueryError;
/// How requests are authorised; shared with the other Google clients.
pub use ferry_google::Auth;
pub use jobs::{JobDone, JobState, LoadUpload, WriteDisposition, UPLOAD_QUANTUM};
pub use source::{BigQueryExport, BigQuerySource, Storage, StorageUse};
pub use state::MetadataStore;
pub use table::{schema_fields, BigQueryTable};
