//! Settings every *file* destination shares (SFTP today, GCS later): the name template, the
//! format and its options, splitting, and what publishing does when the name is taken.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Check;
use crate::template::FileTemplate;

/// The files a destination writes, as configured (`destination.file`).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    /// File name template: `{date}`, `{datetime}`, `{datetime_ms}`, `{run_id}`, `{name}`, and
    /// `{part}` for split exports. Required, except for a staged source (`bigquery_export`),
    /// whose files keep their object names unless a template with `{part}` names them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Output format; only `CSV` for now (a staged source sets its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// `NONE` or `GZIP` (a staged source sets its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// Field delimiter, one ASCII character; `,` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
    /// Write a header row; true by default (a staged source sets its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<bool>,
    /// Start a new file after this many rows. Needs `{part}` in the file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows_per_file: Option<u64>,
    /// Start a new file before one would grow past this many bytes (of CSV before compression,
    /// so a GZIP file stays well below it). Needs `{part}` in the file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes_per_file: Option<u64>,
    /// `fail` (default) or `overwrite` when the final name exists.
    #[serde(default)]
    pub on_existing: OnExisting,
    /// Allow an incremental export with `on_existing: overwrite` a name that can repeat between
    /// runs (no `{run_id}`, `{datetime}` or `{datetime_ms}`): `ferry check` then warns instead
    /// of refusing. Only safe when the partner collects every file before the next run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_repeating_names: bool,
}

/// File format.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum Format {
    /// RFC 4180 CSV.
    #[default]
    Csv,
}

/// Compression of the delivered file.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum Compression {
    /// Plain bytes.
    #[default]
    None,
    /// gzip; `.gz` is not appended automatically, write it in the template.
    Gzip,
}

/// What to do when the final file name already exists on the server.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnExisting {
    /// Fail the export and leave the existing file alone.
    #[default]
    Fail,
    /// Replace it atomically.
    Overwrite,
}

/// The smallest `max_bytes_per_file` accepted.
pub const MIN_FILE_BYTES: u64 = 1024;

/// Validated file settings.
#[derive(Debug, Clone)]
pub struct FileSettings {
    pub template: FileTemplate,
    pub compression: Compression,
    pub delimiter: u8,
    pub header: bool,
    /// When to start a new file.
    pub split: Split,
    pub on_existing: OnExisting,
    /// See [`RawFile::allow_repeating_names`].
    pub allow_repeating_names: bool,
    /// No `name` was given: a staged source's files keep their object names (a source that
    /// rows come from needs a name; the export's check says so).
    pub object_names: bool,
    /// The encoding fields the file set (`format`, `compression`, `delimiter`, `header`,
    /// `max_rows_per_file`, `max_bytes_per_file`), which a staged source's files cannot follow.
    pub encoding_fields: Vec<&'static str>,
}

impl RawFile {
    /// Checks the settings; problems go to `cx` (which stands at `destination.file`).
    pub fn validate(&self, cx: &Check<'_>) -> Option<FileSettings> {
        let template = match FileTemplate::parse(self.name.as_deref().unwrap_or("{name}")) {
            Ok(t) => Some(t),
            Err(m) => {
                cx.err("name", m);
                None
            }
        };
        let encoding_fields = [
            ("format", self.format.is_some()),
            ("compression", self.compression.is_some()),
            ("delimiter", self.delimiter.is_some()),
            ("header", self.header.is_some()),
            ("max_rows_per_file", self.max_rows_per_file.is_some()),
            ("max_bytes_per_file", self.max_bytes_per_file.is_some()),
        ]
        .into_iter()
        .filter_map(|(f, set)| set.then_some(f))
        .collect();
        let delimiter = match self.delimiter.as_deref() {
            None => b',',
            Some(d) if d.len() == 1 && d.is_ascii() && !matches!(d, "\"" | "\r" | "\n") => d.as_bytes()[0],
            Some("\\t") => b'\t',
            Some(d) => {
                cx.err("delimiter", format!("expected one ASCII character other than a quote or line break, found {d:?}"));
                b','
            }
        };
        if self.max_rows_per_file == Some(0) {
            cx.err("max_rows_per_file", "expected a number of rows of at least 1, found 0");
        }
        if let Some(b) = self.max_bytes_per_file.filter(|b| *b < MIN_FILE_BYTES) {
            cx.err("max_bytes_per_file", format!("expected at least {MIN_FILE_BYTES} bytes, found {b}"));
        }
        let split = Split { max_rows: self.max_rows_per_file, max_bytes: self.max_bytes_per_file };
        if let Some(t) = template.as_ref().filter(|t| split.is_split() && !t.has_part()) {
            let field = if self.max_rows_per_file.is_some() { "max_rows_per_file" } else { "max_bytes_per_file" };
            cx.err(
                "name",
                format!(
                    "{:?} has no {{part}} placeholder, which {} needs to name each file, e.g. \"{}\"",
                    t.as_str(),
                    cx.name(field),
                    with_part(t.as_str())
                ),
            );
        }
        Some(FileSettings {
            template: template?,
            compression: self.compression.unwrap_or_default(),
            delimiter,
            header: self.header.unwrap_or(true),
            split,
            on_existing: self.on_existing,
            allow_repeating_names: self.allow_repeating_names,
            object_names: self.name.is_none(),
            encoding_fields,
        })
    }
}

impl FileSettings {
    /// Refuses names that can repeat between runs of an incremental export that overwrites
    /// (or, with `allow_repeating_names`, warns): after the watermark moved, a run would replace
    /// a file the partner may not have collected yet, and its rows would be lost. `cx` stands at
    /// the file settings (`destination.file`).
    pub fn check_repeating_names(&self, incremental: bool, cx: &Check<'_>) {
        if !incremental || self.on_existing != OnExisting::Overwrite || !self.template.repeats() {
            return;
        }
        let day = if self.template.as_str().contains("{date}") { "; {date} stays the same all day" } else { "" };
        let why = format!(
            "{:?} can repeat between runs (it has no {{run_id}}, {{datetime}} or {{datetime_ms}}{day}), and with {} = overwrite \
             an incremental run replaces a file the partner may not have collected yet: its rows are lost",
            self.template.as_str(),
            cx.path("on_existing"),
        );
        if self.allow_repeating_names {
            cx.warn("name", format!("{why}; allowed by {}", cx.path("allow_repeating_names")));
        } else {
            cx.err(
                "name",
                format!(
                    "{why}. Add {{run_id}} to the name (e.g. {:?}), or set {} to fail, or, if the partner collects every file \
                     before the next run, set {} to true",
                    with_placeholder(self.template.as_str(), "run_id"),
                    cx.path("on_existing"),
                    cx.path("allow_repeating_names"),
                ),
            );
        }
    }
}

/// When a split export starts a new file. A file always holds at least one row, and every file
/// has its own header row (and is a gzip file of its own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Split {
    /// At most this many rows per file.
    pub max_rows: Option<u64>,
    /// At most this many bytes of CSV (before compression) per file, header included.
    pub max_bytes: Option<u64>,
}

impl Split {
    /// True when either limit is set.
    pub fn is_split(&self) -> bool {
        self.max_rows.is_some() || self.max_bytes.is_some()
    }

    /// Whether a file holding `rows` rows and `bytes` bytes may not take a row of `row_bytes`
    /// more.
    pub fn is_full(&self, rows: u64, bytes: u64, row_bytes: u64) -> bool {
        self.max_rows.is_some_and(|m| rows >= m) || self.max_bytes.is_some_and(|m| bytes + row_bytes > m)
    }
}

impl fmt::Display for Split {
    /// `a new file every 1000 rows or 1048576 bytes`; empty when not split.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let limits: Vec<String> =
            [self.max_rows.map(|r| format!("{r} rows")), self.max_bytes.map(|b| format!("{b} bytes"))].into_iter().flatten().collect();
        if limits.is_empty() {
            return Ok(());
        }
        write!(f, "a new file every {}", limits.join(" or "))
    }
}

/// `template` with `_{part}` before its extensions, for error messages.
fn with_part(template: &str) -> String {
    with_placeholder(template, "part")
}

/// `template` with `_{placeholder}` before its extensions, for error messages.
fn with_placeholder(template: &str, placeholder: &str) -> String {
    match template.find('.') {
        Some(dot) => format!("{}_{{{placeholder}}}{}", &template[..dot], &template[dot..]),
        None => format!("{template}_{{{placeholder}}}"),
    }
}
