//! The export pipeline against the real local stack: BigQuery emulator → CSV → OpenSSH sshd,
//! with the metadata table in the emulator.

mod common;

mod config;
mod credentials;
mod failures;
mod incremental;
mod jobs;
mod kills;
mod leases;
mod notify;
mod schedules;
mod secrets;
mod serve;
mod split;
mod staged;
mod storage;
mod types;
mod windows;
