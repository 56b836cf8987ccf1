//! Planning: the window `(lo, hi]` of each export from its watermark and the source's upper
//! bound, and the first file name.

use chrono::{DateTime, Utc};

use super::{RunOptions, Runner};
use crate::config::ExportSpec;
use crate::cursor::{CursorType, CursorValue};
use crate::roles::Window;
use crate::template::NameContext;
use crate::{ErrorClass, Failure};

/// The plan for one export.
#[derive(Debug, Clone)]
pub struct ExportPlan {
    pub export: String,
    pub window: Window,
    /// The (first) file's name; `None` when there is nothing new to deliver.
    pub file_name: Option<String>,
    /// When the plan was made; file names are rendered for this time.
    pub planned_at: DateTime<Utc>,
    pub sql: String,
    pub full: bool,
    /// Nothing new to deliver.
    pub nothing_new: bool,
}

impl Runner<'_> {
    /// Plans every selected export without changing anything.
    pub async fn plan(&self, opts: &RunOptions) -> Result<Vec<ExportPlan>, String> {
        let mut plans = Vec::new();
        for export in self.selected(opts)? {
            let plan =
                self.plan_export(export, opts).await.map_err(|e| format!("{}: {}", export.name, self.config.redact(&e.to_string())))?;
            plans.push(plan);
        }
        Ok(plans)
    }

    pub(super) async fn plan_export(&self, export: &ExportSpec, opts: &RunOptions) -> Result<ExportPlan, Failure> {
        let run_date = opts.run_date.format("%Y-%m-%d").to_string();
        let source = self.wiring.source(export)?;
        let hi = match &export.cursor {
            Some(_) => source.upper_bound(export, &run_date).await?,
            None => None,
        };
        let full = opts.full || !export.incremental;
        let watermark = if full { None } else { self.watermark(export, hi.as_ref().map(CursorValue::ty)).await? };
        let nothing_new = match (&watermark, &hi) {
            (_, None) if export.cursor.is_some() => true,
            (Some(lo), Some(hi)) => lo.compare(hi) != Some(std::cmp::Ordering::Less),
            _ => false,
        };
        // Lookback widens the window downwards only; whether there is anything new is decided
        // by the watermark itself, so a quiet table does not re-send its last rows every run.
        let lo = watermark.map(|w| if export.lookback > 0 { w.minus(export.lookback) } else { w });
        let window = Window { lo, hi };
        let planned_at = Utc::now();
        let file_name = match export.file() {
            Some(file) => (!nothing_new).then(|| {
                // `ferry plan` has no run: its names show a fresh id where a run shows its own.
                let run_id = opts.run_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                file.template.render(&NameContext { export: &export.name, at: planned_at, run_id: &run_id }, 1)
            }),
            None => None,
        };
        Ok(ExportPlan {
            export: export.name.clone(),
            sql: source.read_sql(export, &window),
            window,
            file_name,
            planned_at,
            full,
            nothing_new,
        })
    }

    async fn watermark(&self, export: &ExportSpec, column_type: Option<CursorType>) -> Result<Option<CursorValue>, Failure> {
        let Some((ty, value)) = self.state.watermark(&export.name).await? else { return Ok(None) };
        // Rows written by the seed deployment carry no cursor type: take the column's.
        let stored = (if ty.is_empty() { column_type } else { CursorType::from_bigquery(&ty) }).ok_or_else(|| {
            Failure::with_class(ErrorClass::Permanent, format!("metadata table: unknown cursor type {ty:?} for export {}", export.name))
        })?;
        if let Some(col) = column_type {
            if col != stored {
                return Err(Failure::with_class(
                    ErrorClass::Permanent,
                    format!(
                        "export {}: the watermark was recorded as {} but column {} is now {}; deliver once with a full export",
                        export.name,
                        stored.sql_name(),
                        export.cursor.as_deref().unwrap_or_default(),
                        col.sql_name()
                    ),
                ));
            }
        }
        CursorValue::parse(stored, &value)
            .map(Some)
            .map_err(|e| Failure::with_class(ErrorClass::Permanent, format!("metadata table: watermark of export {}: {e}", export.name)))
    }
}
