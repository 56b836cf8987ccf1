//! Hourly loads (`mode: hourly`): each complete hour of a TIMESTAMP or DATETIME cursor is
//! loaded on its own, replacing that hour in the table, with records of its own.
//!
//! - Hour `h` is the rows with `h ≤ cursor < h + 1 h`, read as the window
//!   `(h − 1 µs, h + 1 h − 1 µs]` (cursor values have microsecond precision), so the watermark
//!   an hour leaves is `h + 1 h − 1 µs` and the next hour starts right after it.
//! - An hour is complete once the source clock minus `settle` has passed its end.
//! - With `recover_missed`, a run loads every complete hour after the watermark, oldest first;
//!   without, only the last complete hour (hours in between are skipped, and logged). A first
//!   run loads the last complete hour.
//! - Each hour is a load of its own, named `<run id>-<YYYYMMDDHH>`, recorded PENDING, committed
//!   and recorded SUCCESS before the next hour starts, so a run that stops keeps every hour it
//!   finished, and the next run goes on from there.

use chrono::{NaiveDateTime, TimeDelta, Timelike, Utc};

use super::table::Hour;
use super::{ExportOutcome, RunCtx, RunOptions, Runner, Stop};
use crate::config::{ExportSpec, HourlyLoad};
use crate::cursor::CursorValue;
use crate::roles::{RunStatus, Window};
use crate::{ErrorClass, Failure};

const HOUR_US: i64 = 3_600_000_000;

/// The first instant of the hour `v` falls in.
fn hour_of(v: &CursorValue) -> Option<CursorValue> {
    match v {
        CursorValue::Timestamp(us) => Some(CursorValue::Timestamp(us.div_euclid(HOUR_US) * HOUR_US)),
        CursorValue::Datetime(dt) => Some(CursorValue::Datetime(dt.date().and_hms_opt(dt.hour(), 0, 0)?)),
        _ => None,
    }
}

/// `v` moved by `us` microseconds.
fn shift(v: &CursorValue, us: i64) -> Option<CursorValue> {
    match v {
        CursorValue::Timestamp(t) => t.checked_add(us).map(CursorValue::Timestamp),
        CursorValue::Datetime(dt) => dt.checked_add_signed(TimeDelta::microseconds(us)).map(CursorValue::Datetime),
        _ => None,
    }
}

/// The hour's label in load names: `YYYYMMDDHH`.
fn label(v: &CursorValue) -> String {
    let dt: NaiveDateTime = match v {
        CursorValue::Timestamp(us) => chrono::DateTime::from_timestamp_micros(*us).map(|d| d.naive_utc()).unwrap_or_default(),
        CursorValue::Datetime(dt) => *dt,
        _ => NaiveDateTime::default(),
    };
    dt.format("%Y%m%d%H").to_string()
}

impl Runner<'_> {
    /// Loads the complete hours due (see the module's rules), each under its own records.
    pub(super) async fn deliver_hours(
        &self,
        export: &ExportSpec,
        hourly: &HourlyLoad,
        opts: &RunOptions,
        ctx: &RunCtx<'_>,
        o: &mut ExportOutcome,
    ) -> Result<(), Stop> {
        let planned_at = Utc::now();
        let run_date = opts.date_for(export, planned_at).format("%Y-%m-%d").to_string();
        let source = self.wiring.source(export).map_err(Stop::record)?;
        let bounds = source.bounds(export, &run_date).await.map_err(Stop::record)?;
        o.stages.plan = ctx.started.elapsed();
        let cursor = export.cursor.as_deref().unwrap_or_default();
        let permanent = |m: String| Stop::record(Failure::with_class(ErrorClass::Permanent, format!("export {}: {m}", export.name)));
        let Some(max) = bounds.max.clone() else {
            return self.nothing_due(export, opts, ctx, o).await;
        };
        // The source clock minus `settle`, on the cursor's clock: hours end by the clock.
        let settled_at = bounds.now - TimeDelta::seconds(i64::try_from(export.settle).unwrap_or(i64::MAX / 1_000_000));
        let settled = match &max {
            CursorValue::Timestamp(_) => CursorValue::Timestamp(settled_at.timestamp_micros()),
            CursorValue::Datetime(_) => CursorValue::Datetime(settled_at.with_timezone(&export.cursor_zone).naive_local()),
            other => {
                return Err(permanent(format!(
                    "hourly loads need a TIMESTAMP or DATETIME timestamp_column; {cursor} is {}",
                    other.ty().sql_name()
                )))
            }
        };
        let end = hour_of(&settled).ok_or_else(|| permanent("the source clock is out of range".into()))?;
        let last = shift(&end, -HOUR_US).ok_or_else(|| permanent("the source clock is out of range".into()))?;
        let watermark = if opts.full { None } else { self.watermark(export, Some(max.ty())).await.map_err(Stop::record)? };
        let next = match &watermark {
            None => last.clone(),
            Some(w) => {
                let next = shift(w, 1).ok_or_else(|| permanent("the watermark is out of range".into()))?;
                if hour_of(&next).as_ref() != Some(&next) {
                    return Err(permanent(format!(
                        "the watermark {} is not the end of an hour, so it was not left by an hourly load; \
                         load the export once with --full, or give the hourly load a new export name",
                        w.canonical()
                    )));
                }
                next
            }
        };
        let mut hours = Vec::new();
        let mut h = if hourly.recover_missed { next.clone() } else { last.clone() };
        while h.compare(&last) != Some(std::cmp::Ordering::Greater) {
            if h.compare(&next) != Some(std::cmp::Ordering::Less) {
                hours.push(h.clone());
            }
            h = shift(&h, HOUR_US).ok_or_else(|| permanent("an hour is out of range".into()))?;
        }
        if !hourly.recover_missed && next.compare(&last) == Some(std::cmp::Ordering::Less) {
            tracing::warn!(export = %export.name, from = %next.canonical(), to = %last.canonical(), "hours before the last complete one are skipped (recover_missed is off)");
        }
        if hours.is_empty() {
            return self.nothing_due(export, opts, ctx, o).await;
        }
        let first_lo = shift(&hours[0], -1);
        for start in hours {
            let window = Window::between(shift(&start, -1), shift(&start, HOUR_US - 1));
            let run_id = format!("{}-{}", ctx.run_id, label(&start));
            let hour_ctx = RunCtx {
                run_id: &run_id,
                started_at: ctx.started_at,
                started: ctx.started,
                message_id: ctx.message_id,
                execution: ctx.execution,
                lease: ctx.lease,
            };
            let mut ho = ExportOutcome::new(export.name.clone(), o.source.clone());
            ho.window = window.clone();
            let result = async {
                let reader = source.read(export, &window, &run_date).await.map_err(Stop::record)?;
                let delete_from = (hourly.delete_from_source && !opts.dry_run).then_some(&*source);
                self.deliver_table(export, opts, &hour_ctx, reader, &mut ho, Some(Hour { start: start.clone(), delete_from })).await
            }
            .await;
            o.rows += ho.rows;
            o.window = Window::between(first_lo.clone(), window.hi.clone());
            o.stages.read += ho.stages.read;
            o.stages.upload += ho.stages.upload;
            o.stages.publish += ho.stages.publish;
            o.stages.record += ho.stages.record;
            if let Err(stop) = result {
                // The hour's own FAILED record supersedes its PENDING one, so that the next run
                // loads the hour again instead of settling it as loaded.
                if stop.record && !opts.dry_run {
                    let msg = self.config.redact(&stop.failure.to_string());
                    let rec = self.record(export, &hour_ctx, RunStatus::Failed, &ho, Some(msg));
                    if let Err(e) = self.state.append(&rec).await {
                        tracing::error!(run_id, export = %export.name, error = %self.config.redact(&e.to_string()), "could not record the failure in the metadata table");
                    }
                }
                return Err(Stop::quiet(stop.failure));
            }
            tracing::info!(export = %export.name, hour = %start.canonical(), rows = ho.rows, "hour loaded");
        }
        o.status = RunStatus::Success;
        Ok(())
    }

    /// No complete hour is due: an EMPTY record, as for any run with nothing new.
    async fn nothing_due(&self, export: &ExportSpec, opts: &RunOptions, ctx: &RunCtx<'_>, o: &mut ExportOutcome) -> Result<(), Stop> {
        o.status = RunStatus::Empty;
        if !opts.dry_run {
            let rec = self.record(export, ctx, RunStatus::Empty, o, None);
            self.state.append(&rec).await.map_err(Stop::quiet)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_are_cut_at_the_hour_in_microseconds() {
        let t = CursorValue::Timestamp(1_714_566_896_123_456); // 2024-05-01T12:34:56.123456Z
        let h = hour_of(&t).unwrap();
        assert_eq!(h.canonical(), "2024-05-01T12:00:00.000000Z");
        assert_eq!(shift(&h, HOUR_US - 1).unwrap().canonical(), "2024-05-01T12:59:59.999999Z");
        assert_eq!(label(&h), "2024050112");
        let before_epoch = CursorValue::Timestamp(-1);
        assert_eq!(hour_of(&before_epoch).unwrap(), CursorValue::Timestamp(-HOUR_US));
        let dt = CursorValue::Datetime(NaiveDateTime::parse_from_str("2024-05-01 23:59:59.999999", "%Y-%m-%d %H:%M:%S%.f").unwrap());
        assert_eq!(hour_of(&dt).unwrap().canonical(), "2024-05-01T23:00:00.000000");
        assert_eq!(shift(&hour_of(&dt).unwrap(), HOUR_US).unwrap().canonical(), "2024-05-02T00:00:00.000000");
    }
}
