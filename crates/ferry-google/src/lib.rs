//! Google Cloud plumbing shared by ferry's Google clients (BigQuery, Pub/Sub, and GCS to come):
//!
//! - [`Auth`] and [`TokenSource`]: the bearer token of a request, from the metadata server
//!   (cached until shortly before it expires) or a fixed token;
//! - [`percent_encode`]: one encoder for URL path segments and query values;
//! - [`ApiError`]: a Google JSON error body (`{"error": {"code", "message", "status",
//!   "errors": [{"reason", "message"}]}}`) read into status, reason and message.
//!
//! Each client keeps its own error type and wraps these.

mod api;
mod auth;
mod encode;
mod error;

pub use api::ApiError;
pub use auth::{Auth, TokenSource, DEFAULT_METADATA_HOST, METADATA_HOST_ENV};
pub use encode::percent_encode;
pub use error::GoogleError;
