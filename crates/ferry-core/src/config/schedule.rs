//! Cloud Scheduler jobs for a config (`schedules`), read by `deploy/scheduler.sh`.

use std::collections::HashSet;

use serde::Deserialize;

use super::Check;

/// One Cloud Scheduler job for this config.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    /// Job name suffix: lowercase letters, digits and `-` (the job is `<service>-<config>-<name>`).
    pub name: String,
    /// Five-field cron expression, e.g. `0 2 * * *`.
    pub cron: String,
    /// IANA time zone the cron expression is read in; `Etc/UTC` by default. A run's default
    /// date (`{date}` in a query) is today in this zone.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// Run only these exports; all enabled exports when absent.
    #[serde(default)]
    pub exports: Option<Vec<String>>,
    /// Ignore the watermark and deliver everything.
    #[serde(default)]
    pub full: bool,
}

/// The time zone a run of `export` reads today's date in (`{date}`): that of the schedules
/// that run it. `None` when none does (UTC then) or their zones disagree, which is reported.
pub(super) fn date_zone(schedules: &[RawSchedule], export: &str, cx: &Check<'_>) -> Option<chrono_tz::Tz> {
    let mut found: Option<(usize, chrono_tz::Tz)> = None;
    for (i, sc) in schedules.iter().enumerate() {
        if sc.exports.as_ref().is_some_and(|names| !names.iter().any(|n| n == export)) {
            continue;
        }
        let zone = match sc.time_zone.as_deref() {
            None => chrono_tz::Tz::Etc__UTC,
            Some(z) => z.parse().ok()?,
        };
        match found {
            None => found = Some((i, zone)),
            Some((first, z)) if !same_zone(z, zone) => {
                cx.err(
                    &format!("schedules[{i}].time_zone"),
                    format!(
                        "export {export:?} is also run by schedules[{first}] in {}: the schedules that run one export need one time zone, which decides the date of a run ({{date}})",
                        z.name()
                    ),
                );
                return None;
            }
            Some(_) => {}
        }
    }
    found.map(|(_, z)| z)
}

fn same_zone(a: chrono_tz::Tz, b: chrono_tz::Tz) -> bool {
    let utc =
        |z: chrono_tz::Tz| matches!(z.name(), "UTC" | "Etc/UTC" | "Etc/GMT" | "GMT" | "Etc/Universal" | "Universal" | "Etc/Zulu" | "Zulu");
    a == b || (utc(a) && utc(b))
}

/// Checks the schedules; `cx` stands at the document.
pub(super) fn validate_schedules(schedules: &[RawSchedule], exports: &HashSet<String>, cx: &Check<'_>) {
    let mut seen = HashSet::new();
    for (i, sc) in schedules.iter().enumerate() {
        let at = |f: &str| format!("schedules[{i}].{f}");
        let err = |path: String, message: String| cx.err(&path, message);
        let name_ok = (1..=40).contains(&sc.name.len())
            && sc.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !sc.name.starts_with('-')
            && !sc.name.ends_with('-');
        if !name_ok {
            err(at("name"), format!("expected 1 to 40 lowercase letters, digits or '-' (not first or last), found {:?}", sc.name));
        } else if !seen.insert(sc.name.as_str()) {
            err(at("name"), format!("duplicate schedule name {:?}", sc.name));
        }
        let fields: Vec<&str> = sc.cron.split_whitespace().collect();
        if fields.len() != 5 || !fields.iter().all(|f| f.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | '/' | ',' | '-'))) {
            err(
                at("cron"),
                format!("expected five cron fields (minute hour day-of-month month day-of-week), e.g. \"0 2 * * *\", found {:?}", sc.cron),
            );
        }
        if let Some(tz) = &sc.time_zone {
            if tz.parse::<chrono_tz::Tz>().is_err() {
                err(at("time_zone"), format!("expected an IANA time zone such as \"Europe/Berlin\" or \"Etc/UTC\", found {tz:?}"));
            }
        }
        if let Some(names) = &sc.exports {
            if names.is_empty() {
                err(at("exports"), "expected at least one export name, or leave exports out to run all".into());
            }
            for (j, n) in names.iter().enumerate() {
                if !exports.contains(n) {
                    err(format!("schedules[{i}].exports[{j}]"), format!("no export is named {n:?}"));
                }
            }
        }
    }
}
