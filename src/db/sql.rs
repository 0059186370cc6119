//! One SQL text for every database: a query is written once with [`Sql`], and the dialect
//! decides placeholders (`$1` or `?`), casts, time comparisons and key lists. Nothing outside
//! `db` needs to know which database it talks to.

use crate::ident::Ident;
use chrono::{DateTime, Utc};
use std::fmt::{Display, Write};

/// Which database engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
    /// MySQL 8 or MariaDB 10.11+.
    MySql,
}

impl Backend {
    /// The name a plan records (`postgres`, `sqlite`, `mysql`).
    pub fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
            Backend::MySql => "mysql",
        }
    }
}

/// A value bound to a placeholder.
#[derive(Debug, Clone)]
pub enum Arg {
    Text(Option<String>),
    Int(Option<i64>),
    Float(f64),
    Bool(bool),
    /// An instant: native on PostgreSQL and MySQL (in UTC), RFC 3339 text on SQLite.
    Time(DateTime<Utc>),
    /// A text array (PostgreSQL only: `= ANY($n::type[])`); the other dialects expand a list
    /// into one placeholder per value.
    TextArray(Vec<String>),
    /// Columns of values for PostgreSQL's `UNNEST` (one array per column).
    OptTextArray(Vec<Option<String>>),
    OptIntArray(Vec<Option<i64>>),
    TimeArray(Vec<DateTime<Utc>>),
}

impl From<&str> for Arg {
    fn from(s: &str) -> Arg {
        Arg::Text(Some(s.to_string()))
    }
}
impl From<String> for Arg {
    fn from(s: String) -> Arg {
        Arg::Text(Some(s))
    }
}
impl From<&String> for Arg {
    fn from(s: &String) -> Arg {
        Arg::Text(Some(s.clone()))
    }
}
impl From<Option<String>> for Arg {
    fn from(s: Option<String>) -> Arg {
        Arg::Text(s)
    }
}
impl From<Option<&str>> for Arg {
    fn from(s: Option<&str>) -> Arg {
        Arg::Text(s.map(String::from))
    }
}
impl From<i64> for Arg {
    fn from(i: i64) -> Arg {
        Arg::Int(Some(i))
    }
}
impl From<Option<i64>> for Arg {
    fn from(i: Option<i64>) -> Arg {
        Arg::Int(i)
    }
}
impl From<bool> for Arg {
    fn from(b: bool) -> Arg {
        Arg::Bool(b)
    }
}
impl From<DateTime<Utc>> for Arg {
    fn from(t: DateTime<Utc>) -> Arg {
        Arg::Time(t)
    }
}

/// A query being written: its text in one dialect and its arguments.
#[derive(Debug, Clone)]
pub struct Sql {
    pub(super) backend: Backend,
    pub(super) text: String,
    pub(super) args: Vec<Arg>,
}

impl Sql {
    pub fn new(backend: Backend) -> Sql {
        Sql { backend, text: String::with_capacity(128), args: Vec::new() }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The SQL text as it will be sent (for messages and tests).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Append SQL text as it is (identifiers must come from [`Ident`]).
    pub fn push(&mut self, s: impl Display) -> &mut Sql {
        let _ = write!(self.text, "{s}");
        self
    }

    fn placeholder(&mut self) {
        match self.backend {
            Backend::Postgres => {
                let _ = write!(self.text, "${}", self.args.len() + 1);
            }
            Backend::Sqlite | Backend::MySql => self.text.push('?'),
        }
    }

    /// Append a placeholder bound to `a`.
    pub fn bind(&mut self, a: impl Into<Arg>) -> &mut Sql {
        self.placeholder();
        self.args.push(a.into());
        self
    }

    /// Append a placeholder for JSON text (cast to `json` on PostgreSQL).
    pub fn bind_json(&mut self, json: Option<String>) -> &mut Sql {
        self.bind(Arg::Text(json));
        if self.backend == Backend::Postgres {
            self.text.push_str("::json");
        }
        self
    }

    /// `expr` as text.
    pub fn as_text(&mut self, expr: impl Display) -> &mut Sql {
        let ty = if self.backend == Backend::MySql { "CHAR" } else { "TEXT" };
        self.push(format_args!("CAST({expr} AS {ty})"))
    }

    /// `expr` as a 64-bit integer (MySQL's `SUM` is a decimal).
    /// `expr` (as text: a JSON column too) contains `needle`, taken literally (its `%` and
    /// `_` escaped), on every backend.
    pub fn contains(&mut self, expr: impl Display, needle: &str) -> &mut Sql {
        let escaped = needle.replace('!', "!!").replace('%', "!%").replace('_', "!_");
        self.as_text(expr).push(" LIKE ").bind(format!("%{escaped}%")).push(" ESCAPE '!'")
    }

    pub fn as_int(&mut self, expr: impl Display) -> &mut Sql {
        let ty = if self.backend == Backend::MySql { "SIGNED" } else { "BIGINT" };
        self.push(format_args!("CAST({expr} AS {ty})"))
    }

    /// `col = false` (booleans are 0/1 in SQLite and MySQL).
    pub fn is_false(&mut self, col: &Ident) -> &mut Sql {
        match self.backend {
            Backend::Postgres => self.push(format_args!("{col} = false")),
            Backend::Sqlite | Backend::MySql => self.push(format_args!("{col} = 0")),
        }
    }

    /// `lhs OP t`, comparing instants: SQLite's text timestamps compare as Julian days, so that
    /// any RFC 3339 form (offsets, fractions) compares by the instant it names.
    pub fn time_cmp(&mut self, lhs: impl Display, op: &str, t: DateTime<Utc>) -> &mut Sql {
        if self.backend == Backend::Sqlite {
            self.push(format_args!("julianday({lhs}) {op} julianday("));
            self.bind(t);
            self.push(")")
        } else {
            self.push(format_args!("{lhs} {op} "));
            self.bind(t)
        }
    }

    /// `col IN (keys)`: one array parameter cast to the key's type on PostgreSQL
    /// (`pg_type`, e.g. `uuid`, so the index is used), one placeholder per key elsewhere.
    pub fn in_keys(&mut self, col: impl Display, keys: &[String], pg_type: &str) -> &mut Sql {
        match self.backend {
            Backend::Postgres => {
                self.push(format_args!("{col} = ANY("));
                self.bind(Arg::TextArray(keys.to_vec()));
                self.push(format_args!("::{pg_type}[])"))
            }
            // One parameter for the whole list, expanded by SQLite itself: binding a thousand
            // parameters costs more than the statement.
            Backend::Sqlite => {
                if keys.is_empty() {
                    return self.push("1 = 0");
                }
                self.push(format_args!("{col} IN (SELECT value FROM json_each("));
                self.bind(serde_json::to_string(keys).expect("strings serialize"));
                self.push("))")
            }
            Backend::MySql => {
                if keys.is_empty() {
                    return self.push("1 = 0");
                }
                self.push(format_args!("{col} IN ("));
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        self.text.push_str(", ");
                    }
                    self.bind(k.as_str());
                }
                self.push(")")
            }
        }
    }

    /// `'a', 'b'` as SQL string literals (for fixed sets of status values written in code).
    pub fn literals(&mut self, values: &[&str]) -> &mut Sql {
        let quoted: Vec<String> = values.iter().map(|v| format!("'{}'", v.replace('\'', "''"))).collect();
        self.push(quoted.join(", "))
    }
}

/// The most keys a statement carries on SQLite and MySQL (one placeholder each; both cap the
/// number of placeholders, SQLite at 32,766 and MySQL at 65,535).
pub const KEYS_PER_STATEMENT: usize = 5000;

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> DateTime<Utc> {
        "2026-11-22T10:00:00Z".parse().unwrap()
    }

    #[test]
    fn one_query_three_dialects() {
        let col = Ident::new("deleted_at").unwrap();
        let act = Ident::new("is_active").unwrap();
        let render = |b: Backend| {
            let mut q = Sql::new(b);
            q.push("SELECT ").as_text("id").push(" FROM x WHERE ").is_false(&act).push(" AND ");
            q.time_cmp(&col, "<=", t()).push(" AND ").in_keys("id", &["a".into(), "b".into()], "uuid");
            (q.text().to_string(), q.args.len())
        };
        assert_eq!(
            render(Backend::Postgres),
            (
                "SELECT CAST(id AS TEXT) FROM x WHERE \"is_active\" = false AND \"deleted_at\" <= $1 AND id = ANY($2::uuid[])"
                    .into(),
                2
            )
        );
        assert_eq!(
            render(Backend::Sqlite),
            (
                "SELECT CAST(id AS TEXT) FROM x WHERE \"is_active\" = 0 AND julianday(\"deleted_at\") <= julianday(?) AND id IN (SELECT value FROM json_each(?))"
                    .into(),
                2
            )
        );
        assert_eq!(
            render(Backend::MySql),
            (
                "SELECT CAST(id AS CHAR) FROM x WHERE \"is_active\" = 0 AND \"deleted_at\" <= ? AND id IN (?, ?)"
                    .into(),
                3
            )
        );
    }

    #[test]
    fn an_empty_key_list_matches_nothing() {
        let mut q = Sql::new(Backend::MySql);
        q.in_keys("id", &[], "");
        assert_eq!(q.text(), "1 = 0");
    }

    #[test]
    fn literals_are_quoted() {
        let mut q = Sql::new(Backend::Sqlite);
        q.literals(&["a", "it's"]);
        assert_eq!(q.text(), "'a', 'it''s'");
    }
}
