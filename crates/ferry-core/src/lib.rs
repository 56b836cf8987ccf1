//! ferry's core: the roles an export run is made of and the pieces that do not talk to any
//! external system.
//!
//! Data flows one way: trigger → plan → read ([`Source`]) → encode → deliver ([`Sink`]) →
//! verify → record ([`StateStore`]) → notify ([`Notifier`]).

pub mod error;
pub mod secret;
pub mod sink;

pub use error::{BoxError, Classify, ErrorClass, Failure};
pub use secret::Secret;
pub use sink::{Published, PutMode, Sink, Upload};
