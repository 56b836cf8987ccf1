//! Limits on what a configuration file may hold, checked on the JSON text before anything
//! else reads it, so that a pasted megabyte in the wrong field is one short error, not a slow
//! check or an error message that echoes it.
//!
//! | what                         | limit                                   |
//! |------------------------------|-----------------------------------------|
//! | the file                     | [`MAX_CONFIG_BYTES`] (4 MiB)            |
//! | a `query`                    | [`MAX_QUERY_BYTES`] (1 MiB, BigQuery's own limit is 1,024k characters) |
//! | any other string             | [`MAX_STRING_BYTES`] (16 KiB)           |
//! | a list (`exports`, `columns`, …) | [`MAX_ITEMS`] (10,000)              |
//! | nesting                      | [`MAX_DEPTH`] (32 levels)               |
//!
//! Fields with a tighter meaning have their own limits where they are checked: a file name is
//! at most [`MAX_NAME_BYTES`] once rendered, a server path at most [`MAX_PATH_BYTES`], a host
//! name at most [`MAX_HOST_BYTES`]. Messages quote at most [`QUOTED_CHARS`] characters of a
//! value ([`quote`]), and no message is longer than [`MAX_MESSAGE_CHARS`].

use serde_json::Value;

/// The largest configuration file.
pub const MAX_CONFIG_BYTES: usize = 4 << 20;
/// The largest `query` string.
pub const MAX_QUERY_BYTES: usize = 1 << 20;
/// The largest string of any other field.
pub const MAX_STRING_BYTES: usize = 16 << 10;
/// The most items of one list.
pub const MAX_ITEMS: usize = 10_000;
/// The deepest nesting of objects and lists.
pub const MAX_DEPTH: usize = 32;
/// The longest file name, in bytes, as SFTP servers' file systems allow (ext4, XFS, ZFS).
pub const MAX_NAME_BYTES: usize = 255;
/// The longest directory path on a server, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// The longest host name (RFC 1035).
pub const MAX_HOST_BYTES: usize = 253;
/// How many characters of a value a message quotes.
pub const QUOTED_CHARS: usize = 64;
/// The longest message about one problem.
pub const MAX_MESSAGE_CHARS: usize = 1000;

/// `value`, debug-quoted, cut to its first [`QUOTED_CHARS`] characters with its size when it
/// is longer: `"ORDERS_aaaa…" (10485760 bytes)`.
pub fn quote(value: &str) -> String {
    let mut chars = value.chars();
    let head: String = chars.by_ref().take(QUOTED_CHARS).collect();
    if chars.next().is_none() {
        return format!("{value:?}");
    }
    format!("{head:?}… ({} bytes)", value.len())
}

/// `message` cut to [`MAX_MESSAGE_CHARS`] characters.
pub fn bound_message(message: String) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        None => message,
        Some((cut, _)) => format!("{}… (message cut, {} bytes)", &message[..cut], message.len()),
    }
}

/// The size problems of a configuration document, as `(field path, message)`; paths are as
/// the user wrote them (`exports[3].query`).
pub(crate) fn check_document(value: &Value) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    walk(value, &mut String::new(), None, 0, &mut problems);
    problems
}

fn walk(value: &Value, path: &mut String, key: Option<&str>, depth: usize, problems: &mut Vec<(String, String)>) {
    // Twenty problems are enough to act on; a hostile file gets no long list.
    if problems.len() >= 20 {
        return;
    }
    if depth > MAX_DEPTH {
        problems.push((path.clone(), format!("nested more than {MAX_DEPTH} levels deep")));
        return;
    }
    match value {
        Value::String(s) => {
            let max = if key == Some("query") { MAX_QUERY_BYTES } else { MAX_STRING_BYTES };
            if s.len() > max {
                problems.push((path.clone(), format!("{} is longer than {max} bytes", quote(s))));
            }
        }
        Value::Array(items) => {
            if items.len() > MAX_ITEMS {
                problems.push((path.clone(), format!("expected at most {MAX_ITEMS} items, found {}", items.len())));
                return;
            }
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(item, path, key, depth + 1, problems);
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            if map.len() > MAX_ITEMS {
                problems.push((path.clone(), format!("expected at most {MAX_ITEMS} fields, found {}", map.len())));
                return;
            }
            for (k, item) in map {
                let len = path.len();
                if k.len() > MAX_STRING_BYTES {
                    problems.push((path.clone(), format!("a field name {} is longer than {MAX_STRING_BYTES} bytes", quote(k))));
                    continue;
                }
                if !path.is_empty() {
                    path.push('.');
                }
                // A long field name is no field ferry knows: its path shows a short prefix.
                if k.chars().count() > QUOTED_CHARS {
                    path.push_str(&quote(k));
                } else {
                    path.push_str(k);
                }
                walk(item, path, Some(k), depth + 1, problems);
                path.truncate(len);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn quotes_are_short() {
        assert_eq!(quote("abc"), "\"abc\"");
        let long = "x".repeat(10 << 20);
        let q = quote(&long);
        assert!(q.starts_with(&format!("\"{}\"…", "x".repeat(QUOTED_CHARS))), "{q}");
        assert!(q.ends_with("(10485760 bytes)"), "{q}");
        assert!(q.len() < 100);
        assert_eq!(quote("é\u{0}"), "\"é\\0\"");
    }

    #[test]
    fn messages_are_bounded() {
        assert_eq!(bound_message("short".into()), "short");
        let cut = bound_message("é".repeat(5000));
        assert!(cut.chars().count() < MAX_MESSAGE_CHARS + 40 && cut.ends_with("(message cut, 10000 bytes)"), "{cut}");
    }

    #[test]
    fn sizes_are_checked_with_paths() {
        let doc = json!({
            "exports": [
                {"name": "a", "source": {"query": "q".repeat(MAX_STRING_BYTES + 1)}},
                {"name": "b".repeat(MAX_STRING_BYTES + 1), "source": {"query": "q".repeat(MAX_QUERY_BYTES + 1)}}
            ],
            "metadata_table": "d.t",
            "columns": vec![1; MAX_ITEMS + 1],
        });
        let problems = check_document(&doc);
        let paths: Vec<&str> = problems.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["columns", "exports[1].name", "exports[1].source.query"], "{problems:?}");
        assert!(problems[1].1.ends_with(&format!("is longer than {MAX_STRING_BYTES} bytes")));
        assert!(problems[2].1.ends_with(&format!("is longer than {MAX_QUERY_BYTES} bytes")));
        assert!(problems.iter().all(|(_, m)| m.len() < 200));
    }

    #[test]
    fn paths_stay_short_under_long_field_names() {
        let long = |c: char| c.to_string().repeat(16_000);
        let mut doc = json!({"a": "x".repeat(MAX_STRING_BYTES + 1), "b": "y".repeat(MAX_STRING_BYTES + 1)});
        for c in ['k', 'l', 'm', 'n'] {
            doc = json!({ long(c): doc });
        }
        let problems = check_document(&doc);
        assert_eq!(problems.len(), 2);
        for (path, message) in &problems {
            assert!(path.len() < 500 && message.len() < 200, "{} and {} bytes", path.len(), message.len());
        }
    }

    #[test]
    fn depth_is_bounded() {
        let mut doc = json!(1);
        for _ in 0..40 {
            doc = json!([doc]);
        }
        let problems = check_document(&doc);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].1.contains("nested more than 32 levels"), "{problems:?}");
    }
}
