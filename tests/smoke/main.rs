//! Smoke tests: each service of the local stack is real, reachable, and behaves the way ferry
//! relies on. Each test fails when its service is down.

mod bigquery;
mod gcs;
mod mail;
mod pubsub;
mod sftp;
