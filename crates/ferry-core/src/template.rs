//! File name templates: `{date}` (YYYYMMDD), `{datetime}` (YYYYMMDD_HHMMSS, UTC),
//! `{datetime_ms}` (YYYYMMDD_HHMMSS_mmm, UTC), `{run_id}` (the first 12 hex digits of the run's
//! id, different for every run), `{name}`, `{part}` (the 1-based number of a file when an export
//! is split, zero-padded to three digits so that names sort in order: `001`, `002`, … `999`,
//! `1000`). A template whose result could leave the target directory is rejected when the
//! configuration is loaded.
//!
//! Whether names can repeat between runs ([`FileTemplate::repeats`]) matters when a file is
//! replaced (`on_existing: overwrite`): only `{run_id}` makes every run's names its own;
//! `{datetime}` and `{datetime_ms}` change with the clock; `{date}` stays the same all day.

use chrono::{DateTime, Utc};

use crate::config::limits::quote;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Date,
    DateTime,
    DateTimeMs,
    RunId,
    Name,
    Part,
}

/// How many hex digits of the run id `{run_id}` keeps: 48 random bits, so that two runs of one
/// export sharing them is not a practical concern, in a name that stays short.
pub const RUN_ID_DIGITS: usize = 12;

/// What a file name is rendered from, besides the file's number.
#[derive(Debug, Clone, Copy)]
pub struct NameContext<'a> {
    /// The export's name, for `{name}`.
    pub export: &'a str,
    /// When the run planned the export, for `{date}`, `{datetime}` and `{datetime_ms}`.
    pub at: DateTime<Utc>,
    /// The run's id (a UUID), for `{run_id}`.
    pub run_id: &'a str,
}

/// The short form of a run id that `{run_id}` stands for: its first [`RUN_ID_DIGITS`] hex
/// digits, lowercase (a UUID's dashes skipped). Characters that are not hex digits are
/// dropped, so a run id from elsewhere can never put a separator into a name.
pub fn short_run_id(run_id: &str) -> String {
    run_id.chars().filter(char::is_ascii_hexdigit).take(RUN_ID_DIGITS).map(|c| c.to_ascii_lowercase()).collect()
}

/// A parsed, validated file name template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTemplate {
    pieces: Vec<Piece>,
    source: String,
}

impl FileTemplate {
    /// Parses and validates; the error says what is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("expected a file name template such as \"EXPORT_{datetime}.csv\"".into());
        }
        let mut pieces = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let close = rest[open..].find('}').ok_or_else(|| format!("unclosed '{{' in {}", quote(s)))? + open;
            pieces.push(match &rest[open + 1..close] {
                "date" => Piece::Date,
                "datetime" => Piece::DateTime,
                "datetime_ms" => Piece::DateTimeMs,
                "run_id" => Piece::RunId,
                "name" => Piece::Name,
                "part" => Piece::Part,
                other => {
                    return Err(format!(
                    "unknown placeholder {{{other}}}; expected {{date}}, {{datetime}}, {{datetime_ms}}, {{run_id}}, {{name}} or {{part}}"
                ))
                }
            });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        for p in &pieces {
            if let Piece::Text(t) = p {
                if t.contains('}') {
                    return Err(format!("unmatched '}}' in {}", quote(s)));
                }
                if t.contains('/') || t.contains('\\') {
                    return Err(format!("{} contains a path separator; the file must stay in sftp.path", quote(s)));
                }
                if t.chars().any(|c| c.is_control()) {
                    return Err(format!("{} contains a control character", quote(s)));
                }
            }
        }
        if s.starts_with('.') {
            return Err(format!("{} starts with '.': hidden names and '..' are not allowed", quote(s)));
        }
        if s.contains("..") {
            return Err(format!("{} contains '..'", quote(s)));
        }
        Ok(Self { pieces, source: s.to_owned() })
    }

    /// Whether the template has a `{part}` placeholder, which split exports need.
    pub fn has_part(&self) -> bool {
        self.pieces.contains(&Piece::Part)
    }

    /// Whether two runs can render the same name: true unless the template has `{run_id}`,
    /// `{datetime}` or `{datetime_ms}`. (`{datetime}` changes every second, so it still repeats
    /// for two runs in one second; only `{run_id}` never does.)
    pub fn repeats(&self) -> bool {
        !self.pieces.iter().any(|p| matches!(p, Piece::RunId | Piece::DateTime | Piece::DateTimeMs))
    }

    /// The name of file number `part` (from 1).
    pub fn render(&self, cx: &NameContext<'_>, part: u32) -> String {
        let at = cx.at;
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Date => out.push_str(&at.format("%Y%m%d").to_string()),
                Piece::DateTime => out.push_str(&at.format("%Y%m%d_%H%M%S").to_string()),
                Piece::DateTimeMs => out.push_str(&at.format("%Y%m%d_%H%M%S_%3f").to_string()),
                Piece::RunId => out.push_str(&short_run_id(cx.run_id)),
                Piece::Name => out.push_str(cx.export),
                Piece::Part => out.push_str(&format!("{part:03}")),
            }
        }
        out
    }

    /// The longest name this template can render for export `export`, in bytes: `{part}` is
    /// counted with ten digits (the most a file number can have).
    pub fn longest(&self, export: &str) -> usize {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.len(),
                Piece::Date => 8,
                Piece::DateTime => 15,
                Piece::DateTimeMs => 19,
                Piece::RunId => RUN_ID_DIGITS,
                Piece::Name => export.len(),
                Piece::Part => 10,
            })
            .sum()
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const RUN: &str = "3f2a9c1e-07bd-4c55-9e1a-2b3c4d5e6f70";

    fn cx(export: &str, at: DateTime<Utc>) -> NameContext<'_> {
        NameContext { export, at, run_id: RUN }
    }

    #[test]
    fn renders_and_rejects() {
        let at = Utc.with_ymd_and_hms(2026, 11, 22, 5, 4, 3).unwrap();
        assert_eq!(FileTemplate::parse("X_{datetime}.csv").unwrap().render(&cx("n", at), 1), "X_20261122_050403.csv");
        assert_eq!(FileTemplate::parse("{name}_{date}.csv.gz").unwrap().render(&cx("orders", at), 1), "orders_20261122.csv.gz");
        let split = FileTemplate::parse("{name}_{date}_{part}.csv").unwrap();
        assert!(split.has_part());
        assert_eq!(split.render(&cx("o", at), 2), "o_20261122_002.csv");
        assert_eq!(split.render(&cx("o", at), 1234), "o_20261122_1234.csv");
        assert!(FileTemplate::parse("../x.csv").is_err());
        assert!(FileTemplate::parse("a/b.csv").is_err());
        assert!(FileTemplate::parse("{year}.csv").is_err());
        assert!(FileTemplate::parse("a{date.csv").is_err());
        assert!(FileTemplate::parse("").is_err());
    }

    #[test]
    fn run_id_and_milliseconds_tell_runs_in_one_second_apart() {
        let at = Utc.with_ymd_and_hms(2026, 11, 22, 5, 4, 3).unwrap() + chrono::TimeDelta::milliseconds(7);
        let t = FileTemplate::parse("X_{datetime_ms}_{run_id}.csv").unwrap();
        assert_eq!(t.render(&cx("n", at), 1), "X_20261122_050403_007_3f2a9c1e07bd.csv");
        let other = NameContext { run_id: "3f2a9c1e-07bd-4c55-0000-000000000000", ..cx("n", at) };
        assert_eq!(t.render(&other, 1), t.render(&cx("n", at), 1), "12 digits: the rest of the id is not in the name");
        let other = NameContext { run_id: "0f2a9c1e-07bd-4c55-9e1a-2b3c4d5e6f70", ..cx("n", at) };
        assert_ne!(t.render(&other, 1), t.render(&cx("n", at), 1));
        assert_eq!(short_run_id("../BAD-1/x"), "bad1", "only hex digits, lowercase: never a separator");
        let second = FileTemplate::parse("X_{datetime_ms}.csv").unwrap();
        let later = at + chrono::TimeDelta::milliseconds(1);
        assert_ne!(second.render(&cx("n", at), 1), second.render(&cx("n", later), 1), "one millisecond apart");
    }

    #[test]
    fn the_longest_name_counts_every_placeholder_at_its_widest() {
        let at = Utc.with_ymd_and_hms(2026, 11, 22, 5, 4, 3).unwrap();
        let t = FileTemplate::parse("{name}_{date}_{datetime}_{datetime_ms}_{run_id}_{part}.csv").unwrap();
        let widest = t.render(&cx("orders", at), u32::MAX);
        assert_eq!(t.longest("orders"), widest.len(), "{widest}");
        assert_eq!(FileTemplate::parse("X.csv").unwrap().longest("whatever"), 5);
    }

    #[test]
    fn errors_quote_a_short_prefix() {
        let e = FileTemplate::parse(&format!("{}/x", "a".repeat(1 << 20))).unwrap_err();
        assert!(e.len() < 200 && e.contains("contains a path separator"), "{e}");
    }

    #[test]
    fn only_run_id_and_the_clock_forms_keep_names_from_repeating() {
        for t in ["X.csv", "{name}.csv", "{name}_{date}.csv", "{date}_{part}.csv"] {
            assert!(FileTemplate::parse(t).unwrap().repeats(), "{t}");
        }
        for t in ["{datetime}.csv", "{datetime_ms}.csv", "{date}_{run_id}_{part}.csv"] {
            assert!(!FileTemplate::parse(t).unwrap().repeats(), "{t}");
        }
    }
}
