//! ferry's core: the roles an export run is made of and the pieces that talk to no external
//! system.
//!
//! Data flows one way: trigger → plan → read ([`Source`]) → encode → deliver ([`Sink`]) →
//! verify → record ([`StateStore`]) → notify ([`Notifier`]).

pub mod config;
pub mod cursor;
pub mod encode;
pub mod error;
pub mod failpoint;
pub mod ident;
pub mod retry;
pub mod roles;
pub mod rows;
pub mod run;
pub mod secret;
pub mod sink;
pub mod staging;
pub mod table;
pub mod template;
pub mod text;

pub use error::{BoxError, Classify, ErrorClass, Failure};
pub use retry::{GaveUp, RetryPolicy, Verdict};
pub use roles::{
    BatchReader, Bounds, Claim, DeleteFailure, Dispatcher, FileRecord, HolderProcess, Lease, Notifier, NullRows, RunRecord, RunStatus,
    Source, StateStore, Window,
};
pub use secret::Secret;
pub use sink::{is_temp_of, temp_name, Leftover, PublishError, Published, PutMode, Sink, Upload, TEMP_SUFFIX};
pub use staging::{ObjectReader, StagedObject, StagedSource, Staging};
pub use table::{TableLoad, TableSink};
