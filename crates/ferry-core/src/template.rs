//! File name templates: `{date}` (YYYYMMDD), `{datetime}` (YYYYMMDD_HHMMSS, UTC), `{name}`,
//! `{part}` (the 1-based number of a file when an export is split, zero-padded to three digits
//! so that names sort in order: `001`, `002`, … `999`, `1000`). A template whose result could leave the target directory is rejected when the
//! configuration is loaded.

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Date,
    DateTime,
    Name,
    Part,
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
            let close = rest[open..].find('}').ok_or_else(|| format!("unclosed '{{' in {s:?}"))? + open;
            pieces.push(match &rest[open + 1..close] {
                "date" => Piece::Date,
                "datetime" => Piece::DateTime,
                "name" => Piece::Name,
                "part" => Piece::Part,
                other => return Err(format!("unknown placeholder {{{other}}}; expected {{date}}, {{datetime}}, {{name}} or {{part}}")),
            });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        for p in &pieces {
            if let Piece::Text(t) = p {
                if t.contains('}') {
                    return Err(format!("unmatched '}}' in {s:?}"));
                }
                if t.contains('/') || t.contains('\\') {
                    return Err(format!("{s:?} contains a path separator; the file must stay in sftp.path"));
                }
                if t.chars().any(|c| c.is_control()) {
                    return Err(format!("{s:?} contains a control character"));
                }
            }
        }
        if s.starts_with('.') {
            return Err(format!("{s:?} starts with '.': hidden names and '..' are not allowed"));
        }
        if s.contains("..") {
            return Err(format!("{s:?} contains '..'"));
        }
        Ok(Self { pieces, source: s.to_owned() })
    }

    /// Whether the template has a `{part}` placeholder, which split exports need.
    pub fn has_part(&self) -> bool {
        self.pieces.contains(&Piece::Part)
    }

    /// The name of file number `part` (from 1) of an export named `name` planned at `at`.
    pub fn render(&self, name: &str, at: DateTime<Utc>, part: u32) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Date => out.push_str(&at.format("%Y%m%d").to_string()),
                Piece::DateTime => out.push_str(&at.format("%Y%m%d_%H%M%S").to_string()),
                Piece::Name => out.push_str(name),
                Piece::Part => out.push_str(&format!("{part:03}")),
            }
        }
        out
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

    #[test]
    fn renders_and_rejects() {
        let at = Utc.with_ymd_and_hms(2026, 11, 22, 5, 4, 3).unwrap();
        assert_eq!(FileTemplate::parse("X_{datetime}.csv").unwrap().render("n", at, 1), "X_20261122_050403.csv");
        assert_eq!(FileTemplate::parse("{name}_{date}.csv.gz").unwrap().render("orders", at, 1), "orders_20261122.csv.gz");
        let split = FileTemplate::parse("{name}_{date}_{part}.csv").unwrap();
        assert!(split.has_part());
        assert_eq!(split.render("o", at, 2), "o_20261122_002.csv");
        assert_eq!(split.render("o", at, 1234), "o_20261122_1234.csv");
        assert!(FileTemplate::parse("../x.csv").is_err());
        assert!(FileTemplate::parse("a/b.csv").is_err());
        assert!(FileTemplate::parse("{year}.csv").is_err());
        assert!(FileTemplate::parse("a{date.csv").is_err());
        assert!(FileTemplate::parse("").is_err());
    }
}
