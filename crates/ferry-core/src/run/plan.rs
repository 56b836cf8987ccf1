//! Planning: the window `(lo, hi]` of each export from its watermark and the source's bounds,
//! and the first file name.
//!
//! The rules (the README's "Windows" section explains them to users):
//! - `hi` for a TIMESTAMP or DATETIME cursor is `min(MAX(cursor), source clock − settle)`: a
//!   row whose cursor is older than `settle` when it becomes visible is never behind a
//!   watermark. DATETIME values are read in the export's `cursor_time_zone`.
//! - A DATE cursor delivers complete days only: `hi` is the day before the one the source
//!   clock minus `settle` falls on (with `partial_days`, that day itself).
//! - An INT64 cursor's `hi` is `MAX(cursor)`: its values must be assigned in commit order.
//! - `lookback` moves `lo` back in the cursor's unit, and a run delivers whenever
//!   `(lo, hi]` holds rows, even when nothing newer than the watermark arrived.
//! - Rows with a NULL cursor: full and non-incremental exports read them; incremental runs
//!   count them (and with `null_cursor: fail`, stop).
//! - A non-incremental export reads everything up to `MAX(cursor)`: it sends the whole table
//!   every time, so there is no later run to wait for.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};

use super::{RunOptions, Runner};
use crate::config::{ExportSpec, NullCursor};
use crate::cursor::{CursorType, CursorValue};
use crate::roles::{Bounds, NullRows, Window};
use crate::template::NameContext;
use crate::{ErrorClass, Failure};

/// The largest `lookback` for a DATE cursor, in days.
pub const MAX_LOOKBACK_DAYS: u64 = 366;

/// The plan for one export.
#[derive(Debug, Clone)]
pub struct ExportPlan {
    pub export: String,
    pub window: Window,
    /// The (first) file's name; `None` when there is nothing new to deliver.
    pub file_name: Option<String>,
    /// When the plan was made; file names are rendered for this time.
    pub planned_at: DateTime<Utc>,
    /// The date `{date}` stands for.
    pub run_date: NaiveDate,
    pub sql: String,
    pub full: bool,
    /// Nothing new to deliver.
    pub nothing_new: bool,
    /// What the source said at plan time; `None` for an export without a cursor.
    pub bounds: Option<Bounds>,
    /// How `hi` was chosen, in words: `MAX(updated_at)`, `source clock − settle 300 s`, ...
    pub hi_rule: Option<String>,
    /// Rows whose cursor is NULL (from `bounds`).
    pub null_cursor_rows: Option<u64>,
}

impl ExportPlan {
    /// The error of an incremental run that must not go on while rows have a NULL cursor
    /// (`null_cursor: fail`); `None` when it may.
    pub fn null_cursor_failure(&self, export: &ExportSpec) -> Option<Failure> {
        let n = self.null_cursor_rows.filter(|n| *n > 0)?;
        if export.null_cursor != NullCursor::Fail || self.window.nulls == NullRows::Included {
            return None;
        }
        Some(Failure::with_class(
            ErrorClass::Permanent,
            format!(
                "export {}: {n} row{} of the source have a NULL timestamp_column {}, which no incremental run delivers; \
                 nothing was written (null_cursor: fail). Fill the column, or deliver them once with a full export",
                export.name,
                if n == 1 { "" } else { "s" },
                export.cursor.as_deref().unwrap_or_default()
            ),
        ))
    }
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
        let planned_at = Utc::now();
        let run_date = opts.date_for(export, planned_at);
        let run_date_text = run_date.format("%Y-%m-%d").to_string();
        let source = self.wiring.source(export)?;
        let full = opts.full || !export.incremental;
        let bounds = match &export.cursor {
            Some(_) => Some(source.bounds(export, &run_date_text).await?),
            None => None,
        };
        let nulls = match (&export.null_cursor, &bounds) {
            (NullCursor::ArrivalColumn(column), Some(b)) if export.incremental => self.arrival_window(export, column, b, full).await?,
            _ if full => NullRows::Included,
            _ => NullRows::Excluded,
        };
        let (hi, hi_rule) = match &bounds {
            Some(b) if export.incremental => {
                let (hi, rule) = settled_hi(export, b);
                (hi, Some(rule))
            }
            Some(b) => (b.max.clone(), Some(format!("MAX({}): a non-incremental export sends everything", cursor_name(export)))),
            None => (None, None),
        };
        let watermark =
            if full { None } else { self.watermark(export, bounds.as_ref().and_then(|b| b.max.as_ref()).map(CursorValue::ty)).await? };
        if let (Some(CursorValue::Date(_)), lookback) = (&hi, export.lookback) {
            if lookback > MAX_LOOKBACK_DAYS {
                return Err(Failure::with_class(
                    ErrorClass::Permanent,
                    format!(
                        "export {}: lookback is {lookback} but {} is a DATE column, where lookback counts days: expected at most {MAX_LOOKBACK_DAYS}",
                        export.name,
                        cursor_name(export)
                    ),
                ));
            }
        }
        let first_lo = match (&opts.first_start, &watermark, &hi) {
            (Some(start), None, Some(h)) if !full => Some(first_lo(export, start, h.ty())?),
            _ => None,
        };
        let watermark = watermark.or(first_lo);
        let lo = match (&watermark, &hi) {
            // The watermark is ahead of `hi` (recorded before `settle`, or a day not yet
            // complete): nothing to deliver, and `lo` stays, so the watermark never moves back.
            (Some(w), Some(h)) if w.compare(h) == Some(std::cmp::Ordering::Greater) => Some(w.clone()),
            (Some(w), _) if export.lookback > 0 => Some(w.minus(export.lookback)),
            (w, _) => w.clone(),
        };
        let window = Window { lo, hi, nulls };
        let nothing_new = match &bounds {
            None => false,
            Some(b) => !self.holds_rows(export, &*source, &window, b, &run_date_text).await?,
        };
        // `ferry plan` has no run: its names show a fresh id where a run shows its own.
        let run_id = opts.run_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut sql = source.read_sql(export, &window);
        let mut file_name = match export.file() {
            Some(file) => {
                (!nothing_new).then(|| file.template.render(&NameContext { export: &export.name, at: planned_at, run_id: &run_id }, 1))
            }
            None => None,
        };
        // A staged export: the statement that writes its files, and where they go.
        if let (Some(_), Some(spec)) = (&export.source.staged, &self.config.staging) {
            let (_, uri) = super::staged::staged_target(spec, export, run_date, &run_id);
            sql = self.wiring.staged(export)?.export_sql(export, &window, &uri);
            file_name = (!nothing_new).then_some(uri);
        }
        Ok(ExportPlan {
            export: export.name.clone(),
            sql,
            window,
            file_name,
            planned_at,
            run_date,
            full,
            nothing_new,
            null_cursor_rows: bounds.as_ref().map(|b| b.null_rows),
            bounds,
            hi_rule,
        })
    }

    /// Whether `window` holds any row, asking the source only when the bounds do not tell.
    async fn holds_rows(
        &self,
        export: &ExportSpec,
        source: &dyn crate::Source,
        window: &Window,
        bounds: &Bounds,
        run_date: &str,
    ) -> Result<bool, Failure> {
        match &window.nulls {
            NullRows::Included if bounds.null_rows > 0 => return Ok(true),
            // Whether any of them arrived in the window only a count can tell.
            NullRows::Arrived { .. } if bounds.null_rows > 0 => return Ok(source.count(export, window, run_date).await? > 0),
            _ => {}
        }
        let Some(hi) = &window.hi else { return Ok(false) };
        if let Some(lo) = &window.lo {
            if lo.compare(hi) != Some(std::cmp::Ordering::Less) {
                return Ok(false);
            }
        }
        // `MAX(cursor)` itself is in the window: the window holds at least that row.
        if bounds.max.as_ref() == Some(hi) {
            return Ok(true);
        }
        Ok(source.count(export, window, run_date).await? > 0)
    }

    /// The window of NULL-cursor rows by their arrival column: from the last SUCCESS's bound
    /// (the beginning for a full export) to the source clock − `settle`, never back.
    async fn arrival_window(&self, export: &ExportSpec, column: &str, b: &Bounds, full: bool) -> Result<NullRows, Failure> {
        let settle = TimeDelta::try_seconds(i64::try_from(export.settle).unwrap_or(i64::MAX)).unwrap_or(TimeDelta::MAX);
        let hi = b.now.checked_sub_signed(settle).unwrap_or(DateTime::<Utc>::MIN_UTC).timestamp_micros();
        let lo = match full {
            true => None,
            false => match self.state.null_arrival_mark(&export.name).await? {
                None => None,
                Some(text) => match CursorValue::parse(CursorType::Timestamp, &text) {
                    Ok(CursorValue::Timestamp(us)) => Some(us),
                    _ => {
                        return Err(Failure::with_class(
                            ErrorClass::Permanent,
                            format!("metadata table: null_arrival_hi {text:?} of export {} is not a TIMESTAMP", export.name),
                        ))
                    }
                },
            },
        };
        Ok(NullRows::Arrived { column: column.to_owned(), lo, hi: lo.map_or(hi, |lo| lo.max(hi)) })
    }

    pub(super) async fn watermark(&self, export: &ExportSpec, column_type: Option<CursorType>) -> Result<Option<CursorValue>, Failure> {
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

fn cursor_name(export: &ExportSpec) -> &str {
    export.cursor.as_deref().unwrap_or_default()
}

/// `hi` of an incremental export from the source's bounds, and how it was chosen.
pub fn settled_hi(export: &ExportSpec, b: &Bounds) -> (Option<CursorValue>, String) {
    let Some(max) = &b.max else { return (None, format!("no row has a {} value", cursor_name(export))) };
    let settle = TimeDelta::try_seconds(i64::try_from(export.settle).unwrap_or(i64::MAX)).unwrap_or(TimeDelta::MAX);
    let settled = b.now.checked_sub_signed(settle).unwrap_or(DateTime::<Utc>::MIN_UTC);
    let clock = format!("source clock {} − settle {} s", b.now.format("%Y-%m-%dT%H:%M:%SZ"), export.settle);
    let zone = export.cursor_zone;
    let cap = match max {
        CursorValue::Int64(_) => None,
        CursorValue::Timestamp(_) => Some((CursorValue::Timestamp(settled.timestamp_micros()), clock)),
        CursorValue::Datetime(_) => {
            Some((CursorValue::Datetime(settled.with_timezone(&zone).naive_local()), format!("{clock}, read in {}", zone.name())))
        }
        CursorValue::Date(_) => {
            let day = settled.with_timezone(&zone).date_naive();
            if export.partial_days {
                Some((CursorValue::Date(day), format!("{clock}: the day it falls on in {} (partial_days)", zone.name())))
            } else {
                let last = day.pred_opt().unwrap_or(NaiveDate::MIN);
                Some((CursorValue::Date(last), format!("{clock}: the last complete day in {}", zone.name())))
            }
        }
    };
    let max_rule = format!("MAX({})", cursor_name(export));
    match cap {
        Some((cap, rule)) if cap.compare(max) == Some(std::cmp::Ordering::Less) => (Some(cap), rule),
        _ => (Some(max.clone()), max_rule),
    }
}

/// The exclusive lower bound of a first window starting at `start`, in the cursor's type.
fn first_lo(export: &ExportSpec, start: &super::FirstStart, ty: CursorType) -> Result<CursorValue, Failure> {
    let (text, inclusive) = match start {
        super::FirstStart::After(t) => (t.as_str(), false),
        super::FirstStart::From(t) => (t.as_str(), true),
    };
    let value = CursorValue::parse_loose(ty, text)
        .map_err(|m| Failure::with_class(ErrorClass::Permanent, format!("export {}: the first window's start: {m}", export.name)))?;
    // `(lo, …]` holds `start` itself when lo is one unit below it.
    Ok(if inclusive { value.minus_one_unit() } else { value })
}
