//! The run skeleton on in-memory backends: a [`Wiring`] and a [`Config`] for one export.

use std::sync::Arc;

use async_trait::async_trait;
use ferry_core::config::{BigQueryAuth, BigQuerySpec, Component, Config, Destination, ExportSpec, Notifications, Shape};
use ferry_core::ident::TableName;
use ferry_core::run::Wiring;
use ferry_core::{Failure, Sink, Source, TableSink};

use super::{MemoryExporter, MemorySink, MemorySource, MemoryStaging, MemoryTable};

/// Every export reads `source` and writes to `sink` (file destinations) or `table`.
#[derive(Debug, Clone)]
pub struct MemoryWiring {
    pub source: MemorySource,
    pub sink: MemorySink,
    pub table: MemoryTable,
}

#[async_trait]
impl Wiring for MemoryWiring {
    fn source(&self, _export: &ExportSpec) -> Result<Box<dyn Source>, Failure> {
        Ok(Box::new(self.source.clone()))
    }

    async fn sink(&self, _export: &ExportSpec) -> Result<Arc<dyn Sink>, Failure> {
        Ok(Arc::new(self.sink.clone()))
    }

    async fn table(&self, _export: &ExportSpec) -> Result<Arc<dyn TableSink>, Failure> {
        Ok(Arc::new(self.table.clone()))
    }

    async fn close(&self) {}
}

/// [`MemoryWiring`] with a staging bucket: every export is staged by a [`MemoryExporter`] of
/// its source into `staging`, files of `rows_per_file` rows.
#[derive(Debug, Clone)]
pub struct StagedWiring {
    pub inner: MemoryWiring,
    pub staging: MemoryStaging,
    pub rows_per_file: usize,
}

#[async_trait]
impl Wiring for StagedWiring {
    fn source(&self, export: &ExportSpec) -> Result<Box<dyn Source>, Failure> {
        self.inner.source(export)
    }

    fn staged(&self, _export: &ExportSpec) -> Result<Box<dyn ferry_core::StagedSource>, Failure> {
        Ok(Box::new(MemoryExporter { source: self.inner.source.clone(), staging: self.staging.clone(), rows_per_file: self.rows_per_file }))
    }

    async fn staging(&self) -> Result<Arc<dyn ferry_core::Staging>, Failure> {
        Ok(Arc::new(self.staging.clone()))
    }

    async fn sink(&self, export: &ExportSpec) -> Result<Arc<dyn Sink>, Failure> {
        self.inner.sink(export).await
    }

    async fn close(&self) {}
}

/// [`memory_config`] for a staged export: its source writes CSV files into the bucket
/// `memory`, delivered under their object names (`file` stands for the destination's other
/// settings).
pub fn staged_config(name: &str, file: ferry_core::config::FileSettings) -> Config {
    let mut config = memory_config(name, Shape::File(ferry_core::config::FileSettings { object_names: true, ..file }));
    config.exports[0].source.staged = Some(ferry_core::config::StagedFiles { extension: "csv".into(), describe: "CSV, NONE".into() });
    config.staging = Some(ferry_core::config::StagingSpec {
        bucket: "memory".into(),
        prefix: "ferry/".into(),
        expiration_days: None,
        cleanup: ferry_core::config::Cleanup::AfterDelivery,
        parallel_objects: 2,
        endpoint: String::new(),
        auth: BigQueryAuth::None,
    });
    config
}

fn component(type_name: &str) -> Component {
    Component {
        type_name: type_name.into(),
        describe: format!("memory {type_name}"),
        settings: Arc::new(()),
        secrets: Vec::new(),
        staged: None,
    }
}

/// A config with one incremental export `name` on the INT64 cursor `seq` of a
/// [`MemorySource`], delivering to a destination of `shape`.
pub fn memory_config(name: &str, shape: Shape) -> Config {
    Config {
        exports: vec![ExportSpec {
            name: name.into(),
            source: component("memory"),
            destination: Destination { component: component("memory"), shape },
            cursor: Some("seq".into()),
            incremental: true,
            enabled: true,
            lookback: 0,
            settle: 0,
            cursor_zone: ferry_core::config::Tz::UTC,
            partial_days: false,
            null_cursor: ferry_core::config::NullCursor::Report,
            date_zone: ferry_core::config::Tz::UTC,
            execution: ferry_core::config::Execution::Inline,
        }],
        metadata_table: TableName::parse("memory.export_metadata").expect("a table name"),
        bigquery: BigQuerySpec {
            project: "memory".into(),
            endpoint: "http://127.0.0.1:9".into(),
            auth: BigQueryAuth::None,
            page_size: 1,
            read_api: ferry_core::config::ReadApi::Rest,
            storage_endpoint: "http://127.0.0.1:9".into(),
            storage_streams: 1,
            timeout: std::time::Duration::from_secs(1),
            query_deadline: std::time::Duration::from_secs(10),
        },
        notifications: Notifications::default(),
        cloud_run_job: None,
        staging: None,
        metadata_table_default: false,
        parallel_exports: 1,
        service_url: None,
        warnings: Vec::new(),
    }
}
