//! Staged exports: the source writes the window's files into the staging bucket (BigQuery's
//! `EXPORT DATA`), then each object streams to the sink through the file protocol: a temporary
//! name, its size checked on the server and its bytes against the object's CRC32C as they pass,
//! every file of the run verified before any is published. `ferry transfer` and `POST /transfer`
//! copy the objects under a path someone else exported to, the same way.
//!
//! Before publishing, the objects are listed again: one that changed or vanished during the
//! copy (another generation) fails the run, and nothing is published.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use futures::stream::StreamExt;

use super::file::Parts;
use super::{ExportOutcome, ExportPlan, RunCtx, RunOptions, Runner, Stop};
use crate::config::{ExportSpec, FileSettings, OnExisting, StagingSpec};
use crate::roles::{FileRecord, ObjectRecord, RunStatus};
use crate::staging::{gs_uri, parse_gs_uri, StagedObject, Staging};
use crate::{failpoint, ErrorClass, Failure, PutMode, Sink, Upload};

/// Bytes gathered from the object before one write to the sink: the size of the SFTP sink's
/// write requests, so that the small chunks of an HTTP download do not become small writes.
const WRITE_BYTES: usize = 256 << 10;

/// Objects under one `gs://` path, copied by `ferry transfer` / `POST /transfer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// The path as given, ending with `/`.
    pub uri: String,
    /// The object name prefix in the staging bucket.
    pub prefix: String,
}

impl Transfer {
    /// Checks `uri` against the staging bucket: `gs://BUCKET/some/folder/` (a missing final `/`
    /// is added, so `…/2025010` never matches `…/20250108/`).
    pub fn parse(uri: &str, staging: &StagingSpec) -> Result<Self, String> {
        let Some((bucket, prefix)) = parse_gs_uri(uri) else {
            return Err(format!("gcs_path {uri:?} is not a gs://BUCKET/PATH/ URI"));
        };
        if bucket != staging.bucket {
            return Err(format!("gcs_path {uri:?} is outside the configured bucket {} (staging.bucket)", staging.bucket));
        }
        if prefix.trim_matches('/').is_empty() {
            return Err(format!("gcs_path {uri:?} names the whole bucket; name the folder of one export's files"));
        }
        if prefix.starts_with('/') || prefix.split('/').any(|s| s == "." || s == "..") || prefix.chars().any(char::is_control) {
            return Err(format!("gcs_path {uri:?} is not a plain folder path (no leading '/', '.' or '..')"));
        }
        let prefix = if prefix.ends_with('/') { prefix.to_owned() } else { format!("{prefix}/") };
        Ok(Self { uri: gs_uri(bucket, &prefix), prefix })
    }

    /// Refuses a path inside the run folders ferry's own staged exports write
    /// (`staging.prefix`) unless they are `export`'s: one export's transfer never sends
    /// another export's files to its partner.
    pub fn check_export(&self, export: &str, staging: &StagingSpec, exports: &[&str]) -> Result<(), String> {
        if staging.prefix.is_empty() {
            // Runs write to `<export>/…` at the bucket's root: a folder named after another
            // export is that export's.
            let first = self.prefix.split('/').next().unwrap_or_default();
            if first != export && exports.contains(&first) {
                return Err(format!(
                    "gcs_path {:?} is in the staged files of export {first}; export {export}'s are under {}",
                    self.uri,
                    gs_uri(&staging.bucket, &format!("{export}/"))
                ));
            }
            return Ok(());
        }
        if !self.prefix.starts_with(&staging.prefix) {
            return Ok(());
        }
        let own = format!("{}{export}/", staging.prefix);
        if self.prefix.starts_with(&own) {
            return Ok(());
        }
        Err(format!(
            "gcs_path {:?} is in the staged files of other exports (under {}); export {export}'s are under {}",
            self.uri,
            gs_uri(&staging.bucket, &staging.prefix),
            gs_uri(&staging.bucket, &own)
        ))
    }
}

/// What `ferry verify` / `POST /verify` found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    pub in_sync: bool,
    pub gcs_file_count: usize,
    pub sftp_file_count: usize,
    /// Files the destination does not have.
    pub missing_on_sftp: Vec<String>,
    pub size_mismatches: Vec<SizeMismatch>,
}

/// A file whose size on the destination is not its object's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SizeMismatch {
    pub file: String,
    pub gcs_size: u64,
    pub sftp_size: u64,
}

impl Runner<'_> {
    fn staging_spec(&self, export: &ExportSpec) -> Result<&StagingSpec, Failure> {
        self.config.staging.as_ref().ok_or_else(|| {
            Failure::with_class(ErrorClass::Permanent, format!("export {}: no staging bucket is configured (staging.bucket)", export.name))
        })
    }

    /// `ferry run` of a staged source: the source exports the window into this run's prefix,
    /// then its objects are copied.
    pub(super) async fn deliver_staged(
        &self,
        export: &ExportSpec,
        file: &FileSettings,
        opts: &RunOptions,
        ctx: &RunCtx<'_>,
        plan: &ExportPlan,
        o: &mut ExportOutcome,
    ) -> Result<(), Stop> {
        let spec = self.staging_spec(export).map_err(Stop::record)?;
        let (prefix, uri) = staged_target(spec, export, plan.run_date, ctx.run_id);
        let run_date = plan.run_date.format("%Y-%m-%d").to_string();
        let source = self.wiring.staged(export).map_err(Stop::record)?;
        if opts.dry_run {
            o.file = Some(uri);
            o.status = RunStatus::Success;
            return Ok(());
        }
        let t = Instant::now();
        // The rows the export writes: the same window, counted first (EXPORT DATA reports
        // files, not rows).
        let counter = self.wiring.source(export).map_err(Stop::record)?;
        let rows = counter.count(export, &plan.window, &run_date).await.map_err(Stop::record)?;
        source.export(export, &plan.window, &run_date, &uri).await.map_err(Stop::record)?;
        o.stages.query = t.elapsed();
        let staging = self.wiring.staging().await.map_err(Stop::record)?;
        let objects = staging.list(&prefix).await.map_err(Stop::record)?;
        if objects.is_empty() {
            return Err(Stop::record(Failure::with_class(
                ErrorClass::Permanent,
                format!("export {}: the export wrote no files under {}", export.name, gs_uri(&spec.bucket, &prefix)),
            )));
        }
        o.rows = rows;
        self.copy_objects(export, file, spec, staging, &prefix, objects, ctx, plan.planned_at, true, o).await
    }

    /// `ferry transfer`: copies the objects under `transfer`'s path, unless the latest
    /// delivery of that path holds them (the same generations) and its files are all still on
    /// the destination with their sizes: then it answers with that delivery's files and copies
    /// nothing.
    pub(super) async fn deliver_transfer(
        &self,
        export: &ExportSpec,
        transfer: &Transfer,
        ctx: &RunCtx<'_>,
        o: &mut ExportOutcome,
    ) -> Result<(), Stop> {
        let Some(file) = export.file() else {
            return Err(Stop::record(Failure::with_class(
                ErrorClass::Permanent,
                format!("export {}: its destination is not a file destination; transfer copies files", export.name),
            )));
        };
        let spec = self.staging_spec(export).map_err(Stop::record)?;
        o.source = transfer.uri.clone();
        let staging = self.wiring.staging().await.map_err(Stop::record)?;
        let names: Vec<&str> = self.config.exports.iter().map(|x| x.name.as_str()).collect();
        transfer.check_export(&export.name, spec, &names).map_err(|e| Stop::record(Failure::with_class(ErrorClass::Permanent, e)))?;
        let objects = staging.list(&transfer.prefix).await.map_err(Stop::record)?;
        if objects.is_empty() {
            return Err(Stop::record(Failure::with_class(
                ErrorClass::Permanent,
                format!(
                    "export {}: no files under {}; nothing was transferred (did the export to this path run?)",
                    export.name, transfer.uri
                ),
            )));
        }
        if let Some(done) = self.delivered(export, &transfer.uri, &objects).await.map_err(Stop::record)? {
            tracing::info!(run_id = ctx.run_id, export = %export.name, path = %transfer.uri, earlier = %done.run_id, "these objects were delivered already");
            o.files = done.files;
            o.bytes = done.bytes;
            o.file = done.file_name;
            o.status = RunStatus::Success;
            o.skipped = Some(super::Skip::AlreadyDelivered { run_id: done.run_id });
            return Ok(());
        }
        // The caller's objects stay: the caller verifies against them, and owns them.
        self.copy_objects(export, file, spec, staging, &transfer.prefix, objects, ctx, chrono::Utc::now(), false, o).await
    }

    /// The latest SUCCESS record of `export` for `uri` whose files came from exactly these
    /// objects (names and generations), while every one of its files is still on the
    /// destination with its size. A file gone (collected, removed, or a destination that
    /// changed since) makes the request a new delivery.
    async fn delivered(&self, export: &ExportSpec, uri: &str, objects: &[StagedObject]) -> Result<Option<crate::RunRecord>, Failure> {
        let bucket = self.config.staging.as_ref().map_or("", |s| s.bucket.as_str());
        let now: HashSet<(String, &str)> = objects.iter().map(|obj| (gs_uri(bucket, &obj.name), obj.generation.as_str())).collect();
        let Some(r) =
            self.state.history(Some(&export.name), 50).await?.into_iter().find(|r| r.status == RunStatus::Success && r.source_table == uri)
        else {
            return Ok(None);
        };
        let then: HashSet<(String, &str)> =
            r.files.iter().filter_map(|f| f.object.as_ref().map(|x| (x.uri.clone(), x.generation.as_str()))).collect();
        if then != now {
            return Ok(None);
        }
        let sink = self.wiring.sink(export).await?;
        for f in &r.files {
            if sink.stat(&f.name).await? != Some(f.bytes) {
                tracing::info!(export = %export.name, file = %f.name, earlier = %r.run_id, "delivered before but no longer on the destination: delivering again");
                return Ok(None);
            }
        }
        Ok(Some(r))
    }

    /// Copies `objects` to the export's sink (at most `parallel_objects` at once), checks that
    /// none changed meanwhile, records PENDING, publishes every file, records SUCCESS, and
    /// with `cleanup: after_delivery` deletes the objects when they are the run's own
    /// (`own_objects`: a staged run's, never a transfer caller's).
    #[allow(clippy::too_many_arguments)]
    async fn copy_objects(
        &self,
        export: &ExportSpec,
        file: &FileSettings,
        spec: &StagingSpec,
        staging: Arc<dyn Staging>,
        prefix: &str,
        objects: Vec<StagedObject>,
        ctx: &RunCtx<'_>,
        at: chrono::DateTime<chrono::Utc>,
        own_objects: bool,
        o: &mut ExportOutcome,
    ) -> Result<(), Stop> {
        let names = file_names(export, file, &objects, at, ctx.run_id).map_err(Stop::record)?;
        let sink = self.connected_sink(export).await?;
        let mode = match file.on_existing {
            OnExisting::Fail => PutMode::Create,
            OnExisting::Overwrite => PutMode::Overwrite,
        };
        if mode == PutMode::Create {
            taken(export, sink.as_ref(), &names).await.map_err(Stop::record)?;
        }
        let t = Instant::now();
        let copies: Vec<_> =
            objects.iter().zip(&names).map(|(obj, name)| copy_one(export, sink.as_ref(), staging.as_ref(), obj, name, mode, ctx)).collect();
        // Every copy runs to its end, so that when one fails the others' sealed uploads are
        // all in hand and removed below (a dropped sealed upload keeps its temporary file).
        let results: Vec<Result<Copied, Failure>> = futures::stream::iter(copies).buffered(spec.parallel_objects).collect().await;
        let mut done = Vec::new();
        let mut copied: Result<(), Failure> = Ok(());
        for r in results {
            match r {
                Ok(c) => done.push(c),
                Err(e) if copied.is_ok() => copied = Err(e),
                Err(_) => {}
            }
        }
        o.stages.upload = t.elapsed();
        let mut parts = Parts {
            sink: Some(sink.as_ref()),
            mode,
            export: &export.name,
            file,
            at,
            run_id: ctx.run_id,
            current: None,
            sealed: Vec::new(),
            files: Vec::new(),
            sent: 0,
        };
        for (upload, record) in done {
            parts.sealed.push(upload);
            parts.files.push(record);
        }
        let checked = async {
            copied?;
            unchanged(export, staging.as_ref(), prefix, &objects).await?;
            failpoint::hit("upload:after", &export.name).await?;
            match ctx.lease {
                Some(lease) => lease.confirm().await,
                None => Ok(()),
            }
        };
        if let Err(e) = checked.await {
            parts.abort().await;
            return Err(Stop::record(e));
        }
        o.files = parts.files.clone();
        o.bytes = o.files.iter().map(|f| f.bytes).sum();
        o.file = Some(names.join(", "));
        self.commit_parts(export, ctx, &mut parts, o).await?;
        if own_objects && spec.cleanup == crate::config::Cleanup::AfterDelivery {
            for obj in &objects {
                if let Err(e) = staging.delete(obj).await {
                    tracing::warn!(run_id = ctx.run_id, export = %export.name, object = %obj.name, error = %self.config.redact(&e.to_string()), "could not delete a delivered object; the bucket's lifecycle rule removes it");
                }
            }
        }
        Ok(())
    }

    /// Compares the objects under `transfer`'s path with the export's destination: every
    /// object must be there as a file of the same size. Names are those the latest delivery
    /// of the path recorded, else the object names.
    pub async fn verify(&self, export: &ExportSpec, transfer: &Transfer) -> Result<SyncReport, Failure> {
        if export.file().is_none() {
            return Err(Failure::with_class(
                ErrorClass::Permanent,
                format!("export {}: its destination is not a file destination", export.name),
            ));
        }
        let staging = self.wiring.staging().await?;
        let objects = staging.list(&transfer.prefix).await?;
        let mut recorded: HashMap<String, String> = HashMap::new();
        for r in self.state.history(Some(&export.name), 50).await? {
            if r.status == RunStatus::Success && r.source_table == transfer.uri {
                recorded = r.files.iter().filter_map(|f| f.object.as_ref().map(|x| (x.uri.clone(), f.name.clone()))).collect();
                break;
            }
        }
        let sink = self.wiring.sink(export).await?;
        let mut report = SyncReport {
            in_sync: false,
            gcs_file_count: objects.len(),
            sftp_file_count: 0,
            missing_on_sftp: Vec::new(),
            size_mismatches: Vec::new(),
        };
        for obj in &objects {
            let name = recorded.get(&gs_uri(staging.bucket(), &obj.name)).cloned().unwrap_or_else(|| obj.base_name().to_owned());
            match sink.stat(&name).await? {
                None => report.missing_on_sftp.push(name),
                Some(size) => {
                    report.sftp_file_count += 1;
                    if size != obj.bytes {
                        report.size_mismatches.push(SizeMismatch { file: name, gcs_size: obj.bytes, sftp_size: size });
                    }
                }
            }
        }
        report.in_sync = !objects.is_empty() && report.missing_on_sftp.is_empty() && report.size_mismatches.is_empty();
        Ok(report)
    }
}

/// The prefix of a staged run's objects, and the URI its source writes them to: the names
/// carry the date and the run, so that each run's files are new names on the server too
/// (`orders-20250108-1a2b3c4d5e6f-000000000000.csv.gz`).
pub(super) fn staged_target(spec: &StagingSpec, export: &ExportSpec, run_date: chrono::NaiveDate, run_id: &str) -> (String, String) {
    let prefix = spec.run_prefix(&export.name, run_date, run_id);
    let extension = export.source.staged.as_ref().map_or("", |s| s.extension.as_str());
    let name = format!("{prefix}{}-{}-{}-*.{extension}", export.name, run_date.format("%Y%m%d"), crate::template::short_run_id(run_id));
    let uri = gs_uri(&spec.bucket, &name);
    (prefix, uri)
}

/// The file name of each object: its own name, or the template with `{part}` in object order.
fn file_names(
    export: &ExportSpec,
    file: &FileSettings,
    objects: &[StagedObject],
    at: chrono::DateTime<chrono::Utc>,
    run_id: &str,
) -> Result<Vec<String>, Failure> {
    let bad = |m: String| Failure::with_class(ErrorClass::Permanent, format!("export {}: {m}", export.name));
    let mut seen = HashSet::new();
    let mut names = Vec::with_capacity(objects.len());
    for (i, obj) in objects.iter().enumerate() {
        let name = if file.object_names {
            obj.base_name().to_owned()
        } else {
            file.template.render(&crate::template::NameContext { export: &export.name, at, run_id }, i as u32 + 1)
        };
        if name.is_empty()
            || name.starts_with('.')
            || name.chars().any(char::is_control)
            || name.len() > crate::config::limits::MAX_NAME_BYTES
        {
            return Err(bad(format!(
                "the object {} cannot be delivered under the name {name:?}; set destination.file.name with {{part}}",
                obj.name
            )));
        }
        if !seen.insert(name.clone()) {
            return Err(bad(format!("two objects would both be delivered as {name}; set destination.file.name with {{part}}")));
        }
        names.push(name);
    }
    Ok(names)
}

/// Fails before anything is written when a final name is already on the server.
async fn taken(export: &ExportSpec, sink: &dyn Sink, names: &[String]) -> Result<(), Failure> {
    let mut on_server = Vec::new();
    for name in names {
        match sink.stat(name).await {
            Ok(Some(_)) => on_server.push(name.as_str()),
            Ok(None) => {}
            // A server that does not answer stat: publishing still refuses a taken name.
            Err(e) => tracing::warn!(export = %export.name, file = %name, error = %e, "could not check whether the file name is taken"),
        }
    }
    if on_server.is_empty() {
        return Ok(());
    }
    Err(Failure::with_class(
        ErrorClass::Transient,
        format!(
            "export {}: {} already on {} and on_existing is fail, so nothing was sent; the next run tries again (after the partner collects them)",
            export.name,
            on_server.join(", "),
            sink.describe()
        ),
    ))
}

/// A sealed upload and the record of its file.
type Copied = (Box<dyn Upload>, FileRecord);

/// Streams one object into a sealed upload under a temporary name.
async fn copy_one(
    export: &ExportSpec,
    sink: &dyn Sink,
    staging: &dyn Staging,
    obj: &StagedObject,
    name: &str,
    mode: PutMode,
    ctx: &RunCtx<'_>,
) -> Result<Copied, Failure> {
    let temp = crate::sink::temp_name(&export.name, name);
    let mut upload = sink.begin(name, &temp, mode).await?;
    let copied: Result<u64, Failure> = async {
        let mut reader = staging.open(obj).await?;
        let mut buf: Vec<u8> = Vec::with_capacity(WRITE_BYTES);
        let mut first = true;
        while let Some(chunk) = reader.next_chunk().await? {
            buf.extend_from_slice(&chunk);
            if buf.len() >= WRITE_BYTES {
                if let Some(lease) = ctx.lease {
                    lease.held()?;
                }
                upload.write(&buf).await?;
                buf.clear();
                if std::mem::take(&mut first) {
                    failpoint::hit("upload:during", &export.name).await?;
                }
            }
        }
        if !buf.is_empty() {
            upload.write(&buf).await?;
        }
        let size = upload.seal().await?;
        if size != obj.bytes {
            return Err(Failure::with_class(
                ErrorClass::Transient,
                format!(
                    "export {}: {name} holds {size} bytes on {}, the object {} has {}",
                    export.name,
                    sink.describe(),
                    obj.name,
                    obj.bytes
                ),
            ));
        }
        Ok(size)
    }
    .await;
    match copied {
        Ok(bytes) => {
            let record = FileRecord {
                name: name.to_owned(),
                bytes,
                rows: 0,
                sha256: String::new(),
                temp: Some(temp),
                object: Some(ObjectRecord {
                    uri: gs_uri(staging.bucket(), &obj.name),
                    generation: obj.generation.clone(),
                    crc32c: obj.crc32c.map(|c| {
                        use base64::Engine;
                        base64::engine::general_purpose::STANDARD.encode(c.to_be_bytes())
                    }),
                    md5: obj.md5.clone(),
                }),
            };
            Ok((upload, record))
        }
        Err(e) => {
            upload.abort().await;
            Err(Failure::with_class(e.class(), format!("copying {} to {name}: {e}", gs_uri(staging.bucket(), &obj.name))))
        }
    }
}

/// Fails when an object changed (another generation) or vanished since it was listed.
async fn unchanged(export: &ExportSpec, staging: &dyn Staging, prefix: &str, objects: &[StagedObject]) -> Result<(), Failure> {
    let now: HashMap<String, String> = staging.list(prefix).await?.into_iter().map(|o| (o.name, o.generation)).collect();
    for obj in objects {
        let what = match now.get(&obj.name) {
            Some(g) if *g == obj.generation => continue,
            Some(g) => format!("was replaced during the copy (generation {} → {g})", obj.generation),
            None => "was deleted during the copy".to_owned(),
        };
        return Err(Failure::with_class(
            ErrorClass::Transient,
            format!("export {}: {} {what}; nothing was published", export.name, gs_uri(staging.bucket(), &obj.name)),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BigQueryAuth, Cleanup};

    fn staging(prefix: &str) -> StagingSpec {
        StagingSpec {
            bucket: "acme".into(),
            prefix: prefix.into(),
            expiration_days: None,
            cleanup: Cleanup::Keep,
            parallel_objects: 4,
            endpoint: String::new(),
            auth: BigQueryAuth::None,
        }
    }

    #[test]
    fn transfer_paths_stay_in_the_bucket_and_out_of_other_exports_runs() {
        let st = staging("ferry/");
        let t = Transfer::parse("gs://acme/product_data/20250108", &st).unwrap();
        assert_eq!((t.uri.as_str(), t.prefix.as_str()), ("gs://acme/product_data/20250108/", "product_data/20250108/"));
        assert!(Transfer::parse("gs://other/x/", &st).unwrap_err().contains("outside the configured bucket acme"));
        assert!(Transfer::parse("gs://acme/", &st).unwrap_err().contains("whole bucket"));
        assert!(Transfer::parse("gs://acme/a/../b/", &st).is_err());
        let exports = ["orders", "customers"];
        let own = Transfer::parse("gs://acme/ferry/orders/20250108/", &st).unwrap();
        assert!(own.check_export("orders", &st, &exports).is_ok());
        let other = Transfer::parse("gs://acme/ferry/customers/20250108/", &st).unwrap();
        assert!(other.check_export("orders", &st, &exports).unwrap_err().contains("staged files of other exports"));
        let all = Transfer::parse("gs://acme/ferry/", &st).unwrap();
        assert!(all.check_export("orders", &st, &exports).is_err(), "ferry's whole run tree is no export's");
        // At the bucket's root, runs write to `<export>/`.
        let root = staging("");
        let other = Transfer::parse("gs://acme/customers/20250108/", &root).unwrap();
        assert!(other.check_export("orders", &root, &exports).unwrap_err().contains("export customers"));
        let mine = Transfer::parse("gs://acme/orders/20250108/", &root).unwrap();
        assert!(mine.check_export("orders", &root, &exports).is_ok());
        let elsewhere = Transfer::parse("gs://acme/airflow/orders/", &root).unwrap();
        assert!(elsewhere.check_export("orders", &root, &exports).is_ok());
    }
}
