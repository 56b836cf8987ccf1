//! BigQuery identifiers: validated against a strict grammar, then always quoted with
//! backticks. Values never go through here: they are bound as query parameters.

/// Whether `s` is a column name BigQuery accepts and ferry can quote safely.
pub fn is_column(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && s.len() <= 300
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `s` is a Google Cloud project id: lowercase letters, digits and `-`, starting with a
/// letter and not ending with `-`, at most 63 characters (Google issues 6 to 30; emulators
/// accept shorter ones). Only such ids are put into SQL and request paths.
pub fn is_project(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
}

fn is_dataset(s: &str) -> bool {
    (1..=1024).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_table(s: &str) -> bool {
    (1..=1024).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A table name, `dataset.table` or `project.dataset.table`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    /// `None` when the config named only `dataset.table`.
    pub project: Option<String>,
    pub dataset: String,
    pub table: String,
}

impl TableName {
    /// Parses and validates; the error says what was expected.
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('.').collect();
        let (project, dataset, table) = match parts.as_slice() {
            [d, t] => (None, *d, *t),
            [p, d, t] => (Some(*p), *d, *t),
            _ => return Err(format!("expected `dataset.table` or `project.dataset.table`, found {s:?}")),
        };
        if let Some(p) = project {
            if !is_project(p) {
                return Err(format!("{p:?} is not a valid project id (lowercase letters, digits and '-', starting with a letter)"));
            }
        }
        if !is_dataset(dataset) {
            return Err(format!("{dataset:?} is not a valid dataset name (letters, digits and '_')"));
        }
        if !is_table(table) {
            return Err(format!("{table:?} is not a valid table name (letters, digits, '_' and '-')"));
        }
        Ok(Self { project: project.map(str::to_owned), dataset: dataset.to_owned(), table: table.to_owned() })
    }

    /// The fully qualified, quoted form: `` `project.dataset.table` ``.
    pub fn quoted(&self, default_project: &str) -> String {
        format!("`{}.{}.{}`", self.project.as_deref().unwrap_or(default_project), self.dataset, self.table)
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.project {
            Some(p) => write!(f, "{p}.{}.{}", self.dataset, self.table),
            None => write!(f, "{}.{}", self.dataset, self.table),
        }
    }
}

/// A quoted column: `` `name` ``. Only call with names that passed [`is_column`].
pub fn quote_column(name: &str) -> String {
    debug_assert!(is_column(name));
    format!("`{name}`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(is_column("last_updated_at"));
        assert!(is_column("_run_id"));
        assert!(!is_column("a; DROP TABLE x"));
        assert!(!is_column("a`b"));
        assert!(!is_column("1abc"));
        assert!(!is_column(""));
        assert_eq!(TableName::parse("prod_staging.shopify").unwrap().quoted("p"), "`p.prod_staging.shopify`");
        assert_eq!(TableName::parse("my-proj.ds.t").unwrap().quoted("p"), "`my-proj.ds.t`");
        assert!(TableName::parse("ds.t; DROP TABLE x").is_err());
        assert!(TableName::parse("a.b.c.d").is_err());
        assert!(TableName::parse("ds.`t`").is_err());
    }
}
