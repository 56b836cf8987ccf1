//! The export pipeline against the real local stack: BigQuery emulator → CSV → OpenSSH sshd,
//! with the metadata table in the emulator.

mod common;

mod config;
mod credentials;
mod etl_api;
mod failures;
mod incremental;
mod jobs;
mod kills;
mod leases;
mod mysql_source;
mod mysql_table;
mod notify;
mod postgres_source;
mod postgres_table;
mod schedules;
mod secrets;
mod serve;
mod split;
mod staged;
mod storage;
mod table;
mod types;
mod windows;
