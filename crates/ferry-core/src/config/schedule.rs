//! Cloud Scheduler jobs for a config (`schedules`), read by `deploy/scheduler.sh`.
//!
//! A `cron` is Cloud Scheduler's unix-cron: five fields (minute hour day-of-month month
//! day-of-week) of `*`, numbers, `JAN`-`DEC` / `SUN`-`SAT`, ranges `a-b`, steps `*/n` and
//! `a-b/n`, and lists `a,b`; day-of-week 0 and 7 are Sunday, and a restricted day-of-month and
//! day-of-week match either (OR). Each field is checked here, so a message can name the field
//! and the value; `croner` then parses the same text and computes the run times `ferry check`
//! prints. Croner's own extensions (`L`, `W`, `#`, `?`, `+`, `@daily`, a seconds field) are
//! rejected, as Cloud Scheduler rejects them.
//!
//! Daylight saving time: a time that does not exist in the zone (the hour skipped in spring)
//! runs at the first instant after the gap, and a time that repeats (the hour repeated in
//! autumn) runs once, at its first occurrence; a job that runs every minute or hour runs in
//! both copies of the repeated hour. That is croner's rule, as in Vixie cron. Cloud Scheduler's
//! documentation says only that the zone's rules for daylight saving time apply, so a schedule
//! that must run exactly once a day should avoid the hours around the change (01:00-03:00 in
//! Europe and the Americas) or use `Etc/UTC`.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
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
            err(at("name"), format!("expected 1 to 40 lowercase letters, digits or '-' (not first or last), found {}", short(&sc.name)));
        } else if !seen.insert(sc.name.as_str()) {
            err(at("name"), format!("duplicate schedule name {:?}", sc.name));
        }
        if let Err(message) = parse_cron(&sc.cron) {
            err(at("cron"), message);
        }
        if let Some(tz) = &sc.time_zone {
            if parse_zone(tz).is_err() {
                err(at("time_zone"), format!("expected an IANA time zone such as \"Europe/Berlin\" or \"Etc/UTC\", found {}", short(tz)));
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

impl RawSchedule {
    /// The zone the cron expression is read in: `time_zone`, or `Etc/UTC` without one.
    pub fn zone(&self) -> Result<Tz, String> {
        match self.time_zone.as_deref() {
            None => Ok(Tz::Etc__UTC),
            Some(z) => parse_zone(z).map_err(|()| format!("{} is not an IANA time zone", short(z))),
        }
    }

    /// The next `n` run times after `after` (not at it), in the schedule's zone: what
    /// `ferry check` prints. Errors are the messages validation reports for `cron` and
    /// `time_zone`, or that no run time follows within the years croner searches.
    pub fn next_runs(&self, after: DateTime<Utc>, n: usize) -> Result<Vec<DateTime<Tz>>, String> {
        let cron = parse_cron(&self.cron)?;
        let mut at = after.with_timezone(&self.zone()?);
        let mut runs = Vec::with_capacity(n);
        for _ in 0..n {
            at = cron.find_next_occurrence(&at, false).map_err(|e| format!("no run time after {at}: {e}"))?;
            runs.push(at);
        }
        Ok(runs)
    }
}

/// A zone of the IANA database compiled into the binary (chrono-tz); names are case-sensitive.
fn parse_zone(text: &str) -> Result<Tz, ()> {
    text.parse::<Tz>().map_err(|_| ())
}

/// The most of a user's value a message quotes.
const QUOTE_MAX: usize = 40;

/// `text` quoted for a message: whole when short, else its first `QUOTE_MAX` bytes and its length.
fn short(text: &str) -> String {
    if text.len() <= QUOTE_MAX {
        return format!("{text:?}");
    }
    let mut end = QUOTE_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}... ({} bytes)", &text[..end], text.len())
}

/// One field of a unix-cron expression.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names for `min`, `min + 1`, ... (months from 1, weekdays from 0).
    names: &'static [&'static str],
}

const FIELDS: [Field; 5] = [
    Field { name: "minute", min: 0, max: 59, names: &[] },
    Field { name: "hour", min: 0, max: 23, names: &[] },
    Field { name: "day-of-month", min: 1, max: 31, names: &[] },
    Field { name: "month", min: 1, max: 12, names: &["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"] },
    Field { name: "day-of-week", min: 0, max: 7, names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"] },
];

/// Checks `text` as Cloud Scheduler's unix-cron and parses it with croner. The error names
/// the field and the value, quoting at most a short prefix of the input.
pub fn parse_cron(text: &str) -> Result<croner::Cron, String> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    if parts.len() != 5 {
        return Err(format!(
            "expected five cron fields (minute hour day-of-month month day-of-week), e.g. \"0 2 * * *\", found {}",
            short(text)
        ));
    }
    let mut sets = [0u64; 5];
    for ((field, part), set) in FIELDS.iter().zip(&parts).zip(&mut sets) {
        *set = field.parse(part)?;
    }
    // A day of the month that no month given has never runs (`0 0 30 2 *`), unless a
    // restricted day-of-week adds days (the two match either).
    if !parts[2].starts_with('*') && parts[4].starts_with('*') {
        let first_day = sets[2].trailing_zeros();
        let longest = (1..=12u32).filter(|m| sets[3] & (1 << m) != 0).map(days_in_month).max().unwrap_or(31);
        if first_day > longest {
            return Err(format!("never runs: no month in {} has a day {first_day} (the longest has {longest} days)", short(parts[3])));
        }
    }
    text.parse::<croner::Cron>().map_err(|e| format!("{} is not a cron expression croner accepts: {e}", short(text)))
}

/// The most days `month` has (February: 29).
fn days_in_month(month: u32) -> u32 {
    match month {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl Field {
    /// The values `text` selects, as bits.
    fn parse(&self, text: &str) -> Result<u64, String> {
        let name = self.name;
        let mut set = 0u64;
        for item in text.split(',') {
            if item.is_empty() {
                return Err(format!("{name} {} has an empty list item", short(text)));
            }
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (item, None),
            };
            let (lo, hi) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (lo, hi) = (self.value(a)?, self.value(b)?);
                if lo > hi {
                    return Err(format!("{name} range {} runs backwards", short(range)));
                }
                (lo, hi)
            } else {
                let v = self.value(range)?;
                if step.is_some() {
                    return Err(format!("{name} {}: a step follows * or a range (*/10, 0-30/10), not a single value", short(item)));
                }
                (v, v)
            };
            let step = match step {
                None => 1,
                Some(s) => match s.parse::<u32>() {
                    Ok(n) if (1..=self.max).contains(&n) => n,
                    _ => return Err(format!("{name} step {} is not a number 1-{}", short(s), self.max)),
                },
            };
            for v in (lo..=hi).step_by(step as usize) {
                set |= 1 << v;
            }
        }
        Ok(set)
    }

    /// One number or name of this field.
    fn value(&self, text: &str) -> Result<u32, String> {
        let name = self.name;
        let (min, max) = (self.min, self.max);
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return match text.parse::<u32>() {
                Ok(v) if (min..=max).contains(&v) => Ok(v),
                _ => Err(format!("{name} {} is out of range {min}-{max}", text.get(..QUOTE_MAX).unwrap_or(text))),
            };
        }
        let base = if name == "month" { 1 } else { 0 };
        if let Some(i) = self.names.iter().position(|n| *n == text) {
            return Ok(base + i as u32);
        }
        let names = match self.names {
            [] => String::new(),
            all => format!(" or a name {}-{}", all[0], all[all.len() - 1]),
        };
        let hint = if self.names.iter().any(|n| n.eq_ignore_ascii_case(text)) {
            " (names are written in capitals, as Cloud Scheduler expects)"
        } else if text.contains(['L', 'W', '#', '?', '+']) {
            " (Cloud Scheduler's cron has no L, W, #, ? or +)"
        } else {
            ""
        };
        Err(format!("{name} {} is not a number {min}-{max}{names}{hint}", short(text)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cron_err(text: &str) -> String {
        parse_cron(text).map(|_| ()).expect_err(text)
    }

    #[test]
    fn unix_cron_with_names_ranges_steps_and_lists_is_accepted() {
        for ok in [
            "0 2 * * *",
            "*/15 9-17 * * MON-FRI",
            "0 0 1,15 * *",
            "30 4 * JAN,JUL SUN",
            "0 3 * * 0",
            "0 3 * * 7",
            "0-30/10 */2 1-31/2 1-12/3 0-6/2",
            "59 23 31 12 6",
            "0 0 29 2 *",
            "0 0 31 4 MON",
            "  5   *  * * *  ",
        ] {
            assert!(parse_cron(ok).is_ok(), "{ok}: {:?}", parse_cron(ok).err());
        }
    }

    #[test]
    fn a_bad_cron_is_refused_naming_the_field_and_the_value() {
        for (text, want) in [
            ("99 99 * * *", "minute 99 is out of range 0-59"),
            ("0 24 * * *", "hour 24 is out of range 0-23"),
            ("0 0 0 * *", "day-of-month 0 is out of range 1-31"),
            ("0 0 * 13 *", "month 13 is out of range 1-12"),
            ("0 0 * * 8", "day-of-week 8 is out of range 0-7"),
            ("0 0 * * 99999999999999999999", "day-of-week 99999999999999999999 is out of range 0-7"),
            ("0 2 * *", "expected five cron fields (minute hour day-of-month month day-of-week), e.g. \"0 2 * * *\", found \"0 2 * *\""),
            ("0 0 2 * * *", "expected five cron fields"),
            ("@daily", "expected five cron fields"),
            ("", "expected five cron fields"),
            ("0 0 L * *", "day-of-month \"L\" is not a number 1-31 (Cloud Scheduler's cron has no L, W, #, ? or +)"),
            ("0 0 15W * *", "day-of-month \"15W\" is not a number 1-31"),
            ("0 0 ? * *", "day-of-month \"?\" is not a number 1-31"),
            ("0 0 * * 5#2", "day-of-week \"5#2\" is not a number 0-7 or a name SUN-SAT"),
            ("0 0 1 * +MON", "day-of-week \"+MON\" is not a number 0-7 or a name SUN-SAT"),
            ("0 0 * jan *", "month \"jan\" is not a number 1-12 or a name JAN-DEC (names are written in capitals"),
            ("0 0 * JANUARY *", "month \"JANUARY\" is not a number 1-12 or a name JAN-DEC"),
            ("0 0 * * FOO", "day-of-week \"FOO\" is not a number 0-7 or a name SUN-SAT"),
            ("0 MON * * *", "hour \"MON\" is not a number 0-23"),
            ("5/10 * * * *", "minute \"5/10\": a step follows * or a range"),
            ("*/0 * * * *", "minute step \"0\" is not a number 1-59"),
            ("*/ * * * *", "minute step \"\" is not a number 1-59"),
            ("10-5 * * * *", "minute range \"10-5\" runs backwards"),
            ("1,,2 * * * *", "minute \"1,,2\" has an empty list item"),
            ("0 0 30 2 *", "never runs: no month in \"2\" has a day 30 (the longest has 29 days)"),
            ("0 0 31 4,6,9,11 *", "never runs: no month in \"4,6,9,11\" has a day 31"),
            ("0 0 1 2 * \0", "expected five cron fields"),
        ] {
            let got = cron_err(text);
            assert!(got.starts_with(want), "{text:?}: {got}");
        }
    }

    #[test]
    fn a_cron_error_quotes_at_most_a_short_prefix() {
        let huge = format!("{} * * * *", "9".repeat(1 << 20));
        let got = cron_err(&huge);
        assert!(
            got.starts_with("minute 9999") && got.ends_with("is out of range 0-59") && got.len() < 100,
            "{}",
            &got[..200.min(got.len())]
        );
        let words = "every night ".repeat(100_000);
        let got = cron_err(&words);
        assert!(got.contains("found \"every night every night every night ever\"... (1200000 bytes)") && got.len() < 200, "{got}");
        let got = cron_err(&format!("{} * * * *", "é".repeat(100)));
        assert!(got.starts_with("minute \"éééé") && got.len() < 200, "{got}");
    }

    #[test]
    fn zones_come_from_the_iana_database() {
        let sc = |tz: Option<&str>| RawSchedule {
            name: "a".into(),
            cron: "0 2 * * *".into(),
            time_zone: tz.map(Into::into),
            exports: None,
            full: false,
        };
        assert_eq!(sc(None).zone(), Ok(Tz::Etc__UTC));
        assert_eq!(sc(Some("Europe/Berlin")).zone(), Ok(Tz::Europe__Berlin));
        assert_eq!(sc(Some("America/Argentina/Buenos_Aires")).zone(), Ok(Tz::America__Argentina__Buenos_Aires));
        assert_eq!(sc(Some("Mars/Olympus")).zone(), Err("\"Mars/Olympus\" is not an IANA time zone".into()));
        assert!(sc(Some("europe/berlin")).zone().is_err(), "names are case-sensitive");
        assert!(sc(Some("")).zone().is_err());
        assert!(sc(Some("+02:00")).zone().is_err());
        let long = sc(Some(&"Europe/".repeat(100_000))).zone().unwrap_err();
        assert!(long.len() < 100, "{long}");
    }

    fn runs(cron: &str, zone: &str, after: &str) -> Vec<String> {
        let sc = RawSchedule { name: "a".into(), cron: cron.into(), time_zone: Some(zone.into()), exports: None, full: false };
        let after: DateTime<Utc> = after.parse().unwrap();
        sc.next_runs(after, 3)
            .unwrap()
            .iter()
            .map(|t| format!("{} = {}", t.format("%F %R %Z"), t.with_timezone(&Utc).format("%F %R")))
            .collect()
    }

    #[test]
    fn next_runs_are_computed_in_the_schedules_zone() {
        assert_eq!(
            runs("0 2 * * *", "Europe/Berlin", "2026-07-01T00:30:00Z"),
            [
                "2026-07-02 02:00 CEST = 2026-07-02 00:00",
                "2026-07-03 02:00 CEST = 2026-07-03 00:00",
                "2026-07-04 02:00 CEST = 2026-07-04 00:00"
            ]
        );
        // Strictly after: a run at `after` itself is not listed.
        assert_eq!(runs("0 * * * *", "Etc/UTC", "2026-07-01T10:00:00Z")[0], "2026-07-01 11:00 UTC = 2026-07-01 11:00");
        // Day-of-month OR day-of-week, as Cloud Scheduler documents: the 1st, and Saturdays.
        assert_eq!(
            runs("0 12 1 * SAT", "Etc/UTC", "2026-07-31T13:00:00Z"),
            [
                "2026-08-01 12:00 UTC = 2026-08-01 12:00",
                "2026-08-08 12:00 UTC = 2026-08-08 12:00",
                "2026-08-15 12:00 UTC = 2026-08-15 12:00"
            ]
        );
        assert_eq!(runs("0 0 29 2 *", "Etc/UTC", "2026-01-01T00:00:00Z")[0], "2028-02-29 00:00 UTC = 2028-02-29 00:00");
        assert_eq!(runs("0 0 * * 7", "Etc/UTC", "2026-07-01T00:00:00Z")[0], "2026-07-05 00:00 UTC = 2026-07-05 00:00", "7 is Sunday");
    }

    /// Europe/London skips 01:00-02:00 on 2026-03-29 and repeats 01:00-02:00 on 2026-10-25.
    #[test]
    fn daylight_saving_time_a_skipped_time_runs_after_the_gap_and_a_repeated_time_runs_once() {
        assert_eq!(
            runs("30 1 * * *", "Europe/London", "2026-03-28T12:00:00Z"),
            [
                "2026-03-29 02:00 BST = 2026-03-29 01:00",
                "2026-03-30 01:30 BST = 2026-03-30 00:30",
                "2026-03-31 01:30 BST = 2026-03-31 00:30"
            ]
        );
        assert_eq!(
            runs("30 1 * * *", "Europe/London", "2026-10-24T12:00:00Z"),
            [
                "2026-10-25 01:30 BST = 2026-10-25 00:30",
                "2026-10-26 01:30 GMT = 2026-10-26 01:30",
                "2026-10-27 01:30 GMT = 2026-10-27 01:30"
            ]
        );
        // An hourly job runs in both copies of the repeated hour.
        assert_eq!(
            runs("30 * * * *", "Europe/London", "2026-10-25T00:00:00Z"),
            [
                "2026-10-25 01:30 BST = 2026-10-25 00:30",
                "2026-10-25 01:30 GMT = 2026-10-25 01:30",
                "2026-10-25 02:30 GMT = 2026-10-25 02:30"
            ]
        );
    }
}
