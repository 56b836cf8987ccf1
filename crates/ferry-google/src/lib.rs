//! Google Cloud plumbing shared by ferry's Google clients (BigQuery, Pub/Sub, and GCS to come):
//!
//! - [`Auth`] and [`TokenSource`]: the bearer token of a request: Application Default
//!   Credentials (a service-account key or authorized-user file, else the metadata server), the
//!   metadata server alone, or a fixed token; cached until shortly before it expires;
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
pub use auth::{
    Auth, Origin, TokenSource, CLOUDSDK_CONFIG_ENV, CREDENTIALS_ENV, DEFAULT_METADATA_HOST, DEFAULT_TOKEN_URI, METADATA_HOST_ENV,
};
pub use encode::{percent_decode, percent_encode};
pub use error::GoogleError;
