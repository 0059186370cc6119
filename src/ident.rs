//! SQL identifiers from configuration: validated once, always quoted, never spliced raw.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// A validated table or column name (optionally `schema.table`), rendered double-quoted.
/// Cheap to clone: plans hold one per row item.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ident(Arc<str>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a valid SQL identifier: use letters, digits and _ (not starting with a digit), at most 63 characters, optionally schema.name")]
pub struct BadIdent(pub String);

impl Ident {
    pub fn new(s: &str) -> Result<Self, BadIdent> {
        let parts: Vec<&str> = s.split('.').collect();
        let ok = !s.is_empty()
            && parts.len() <= 2
            && parts.iter().all(|p| {
                !p.is_empty()
                    && p.len() <= 63
                    && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !p.starts_with(|c: char| c.is_ascii_digit())
            });
        if ok {
            Ok(Ident(Arc::from(s)))
        } else {
            Err(BadIdent(s.to_string()))
        }
    }

    /// The bare name, as configured.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Ident {
    /// The quoted form, safe to put in SQL on PostgreSQL, SQLite, and MySQL (whose sessions sweep
    /// opens with ANSI_QUOTES).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quoted: Vec<String> = self.0.split('.').map(|p| format!("\"{p}\"")).collect();
        f.write_str(&quoted.join("."))
    }
}

impl TryFrom<String> for Ident {
    type Error = BadIdent;
    fn try_from(s: String) -> Result<Self, BadIdent> {
        Ident::new(&s)
    }
}

impl From<Ident> for String {
    fn from(i: Ident) -> String {
        i.0.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_and_schema_qualified_names() {
        assert_eq!(Ident::new("forum_attachment").unwrap().to_string(), "\"forum_attachment\"");
        assert_eq!(Ident::new("app.Files_2").unwrap().to_string(), "\"app\".\"Files_2\"");
    }

    #[test]
    fn refuses_anything_that_could_inject() {
        for bad in ["", "a;drop table x", "a\"b", "1abc", "a.b.c", "a b", "a--", ".a", &"x".repeat(64)] {
            assert!(Ident::new(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
