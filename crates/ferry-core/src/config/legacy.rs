//! The seed form (ferry's first files, and the deployment it replaced): a top-level `sftp`
//! section shared by every export, and per export `source_table`/`query`/`columns` and the file
//! settings (`destination_filename`, `format`, `compression`, …) beside the export's own.
//!
//! [`normalize`] rewrites such a file into components: `source: {"type": "bigquery", …}` and
//! `destination: {"type": "sftp", …sftp, "file": {…}}`, and returns, for every field it moved,
//! where the user wrote it, so that errors name the user's own field (`sftp.host`,
//! `exports[0].destination_filename`). Both forms may be mixed: an export with its own
//! `destination` ignores the top-level `sftp`.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// Export fields of the seed form that belong to the BigQuery source, and their new names.
const SOURCE_FIELDS: &[(&str, &str)] = &[("source_table", "table"), ("query", "query"), ("columns", "columns")];
/// Export fields of the seed form that belong to the destination's files, and their new names.
const FILE_FIELDS: &[(&str, &str)] = &[
    ("destination_filename", "name"),
    ("format", "format"),
    ("compression", "compression"),
    ("delimiter", "delimiter"),
    ("header", "header"),
    ("max_rows_per_file", "max_rows_per_file"),
    ("max_bytes_per_file", "max_bytes_per_file"),
    ("allow_repeating_names", "allow_repeating_names"),
];

/// The outcome of [`normalize`].
pub struct Normalized {
    /// The file in component form.
    pub value: Value,
    /// Normalised field path → the path the user wrote.
    pub aliases: HashMap<String, String>,
    /// Problems the rewrite itself found: `(path, message)`.
    pub errors: Vec<(String, String)>,
}

/// Top-level fields of the staged seed form (`exports` as a map) and their new places.
const STAGED_FIELDS: &[(&str, &str, &str)] =
    &[("gcs_bucket", "staging", "bucket"), ("gcs_expiration_days", "staging", "expiration_days"), ("cloud_run_url", "", "service_url")];
/// Export fields of the staged seed form, which all belong to its `bigquery_export` source.
const STAGED_SOURCE_FIELDS: &[(&str, &str)] = &[
    ("query", "query"),
    ("source_table", "table"),
    ("columns", "columns"),
    ("format", "format"),
    ("compression", "compression"),
    ("header", "header"),
    ("delimiter", "delimiter"),
];

/// Rewrites the seed form into component form; a file already in component form comes back
/// unchanged.
pub fn normalize(mut value: Value) -> Normalized {
    let mut aliases = HashMap::new();
    let mut errors = Vec::new();
    let Some(root) = value.as_object_mut() else { return Normalized { value, aliases, errors } };
    if root.get("exports").is_some_and(Value::is_object) {
        staged_form(root, &mut aliases);
    }
    let sftp = root.remove("sftp");
    if let Some(Value::Array(exports)) = root.get_mut("exports") {
        for (i, export) in exports.iter_mut().enumerate() {
            let Some(x) = export.as_object_mut() else { continue };
            let at = format!("exports[{i}]");
            if !x.contains_key("source") {
                let mut source = Map::new();
                source.insert("type".into(), Value::from("bigquery"));
                move_fields(x, &mut source, SOURCE_FIELDS, &at, &format!("{at}.source"), &mut aliases);
                aliases.insert(format!("{at}.source"), at.clone());
                x.insert("source".into(), Value::Object(source));
            }
            if x.contains_key("destination") {
                continue;
            }
            let mut file = Map::new();
            move_fields(x, &mut file, FILE_FIELDS, &at, &format!("{at}.destination.file"), &mut aliases);
            let Some(sftp) = &sftp else {
                if !file.contains_key("name") {
                    errors.push((at.clone(), "missing field `destination`: name a destination component (or, in the seed form, set destination_filename and a top-level sftp section)".into()));
                } else {
                    errors.push((
                        "sftp".into(),
                        "missing: the seed form's destination_filename needs a top-level sftp section (or give each export a destination)"
                            .into(),
                    ));
                }
                continue;
            };
            if !file.contains_key("name") {
                errors.push((at.clone(), "missing field `destination_filename`".into()));
                continue;
            }
            if file.get("name").is_some_and(Value::is_null) {
                // The staged seed form: files keep their object names.
                file.remove("name");
            }
            let mut destination = match sftp {
                Value::Object(m) => m.clone(),
                // Not an object: let the destination's own check report the shape.
                _ => {
                    aliases.insert(format!("{at}.destination"), "sftp".into());
                    x.insert("destination".into(), sftp.clone());
                    continue;
                }
            };
            if let Some(on_existing) = destination.remove("on_existing") {
                file.insert("on_existing".into(), on_existing);
                aliases.insert(format!("{at}.destination.file.on_existing"), "sftp.on_existing".into());
            }
            destination.insert("type".into(), Value::from("sftp"));
            destination.insert("file".into(), Value::Object(file));
            aliases.insert(format!("{at}.destination"), "sftp".into());
            aliases.insert(format!("{at}.destination.file"), at.clone());
            x.insert("destination".into(), Value::Object(destination));
        }
    }
    Normalized { value, aliases, errors }
}

/// The staged seed form (a GCS bucket, and `exports` as a map of name → `query`, `format`,
/// `compression`): each export becomes a `bigquery_export` source into `staging`, delivered to
/// the top-level `sftp` (its `directory` is the destination's `path`), keeping object names.
fn staged_form(root: &mut Map<String, Value>, aliases: &mut HashMap<String, String>) {
    for (old, section, new) in STAGED_FIELDS {
        let Some(v) = root.remove(*old) else { continue };
        if section.is_empty() {
            root.insert((*new).into(), v);
            aliases.insert((*new).into(), (*old).into());
        } else {
            let entry = root.entry(*section).or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = entry {
                m.insert((*new).into(), v);
            }
            aliases.insert(format!("{section}.{new}"), (*old).into());
        }
    }
    if let Some(Value::Object(sftp)) = root.get_mut("sftp") {
        if let Some(dir) = sftp.remove("directory") {
            sftp.insert("path".into(), dir);
        }
    }
    let Some(Value::Object(map)) = root.remove("exports") else { return };
    let mut exports = Vec::new();
    for (i, (name, settings)) in map.into_iter().enumerate() {
        let at = format!("exports[{i}]");
        let old = format!("exports.{name}");
        aliases.insert(at.clone(), old.clone());
        aliases.insert(format!("{at}.name"), old.clone());
        let mut x = match settings {
            Value::Object(m) => m,
            // Not an object: the export's own parse reports it, at its name.
            other => {
                exports.push(other);
                continue;
            }
        };
        if !x.contains_key("source") {
            let mut source = Map::new();
            source.insert("type".into(), Value::from("bigquery_export"));
            move_fields(&mut x, &mut source, STAGED_SOURCE_FIELDS, &old, &format!("{at}.source"), aliases);
            aliases.insert(format!("{at}.source"), old.clone());
            x.insert("source".into(), Value::Object(source));
        }
        for key in x.keys() {
            if !["source", "destination"].contains(&key.as_str()) {
                aliases.insert(format!("{at}.{key}"), format!("{old}.{key}"));
            }
        }
        x.insert("name".into(), Value::from(name));
        if !x.contains_key("destination") {
            // The top-level sftp section becomes the destination below, with these files.
            x.insert("destination_filename".into(), Value::Null);
        }
        exports.push(Value::Object(x));
    }
    root.insert("exports".into(), Value::Array(exports));
}

fn move_fields(
    from: &mut Map<String, Value>,
    to: &mut Map<String, Value>,
    fields: &[(&str, &str)],
    old_at: &str,
    new_at: &str,
    aliases: &mut HashMap<String, String>,
) {
    for (old, new) in fields {
        aliases.insert(format!("{new_at}.{new}"), format!("{old_at}.{old}"));
        if let Some(v) = from.remove(*old) {
            to.insert((*new).into(), v);
        }
    }
}
