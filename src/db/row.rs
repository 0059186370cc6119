//! A row from any database, read by what the caller wants (text, integer, flag, instant)
//! whatever the column's type is in this database: a timestamp is `timestamptz` on
//! PostgreSQL, RFC 3339 text on SQLite and `DATETIME` on MySQL, and all three read as an
//! instant here. A value that cannot be read is an error naming its column, never a panic.

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::mysql::MySqlRow;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Column, Row as _, TypeInfo, ValueRef};

/// One row of a result.
pub struct Row(pub(super) Inner);

pub(super) enum Inner {
    Pg(PgRow),
    Sqlite(SqliteRow),
    My(MySqlRow),
}

/// A value that could not be read as the type asked for.
#[derive(Debug, thiserror::Error)]
#[error("column {column:?}: {message}")]
pub struct DecodeError {
    pub column: String,
    pub message: String,
}

impl Row {
    fn column_name(&self, i: usize) -> String {
        let name = match &self.0 {
            Inner::Pg(r) => r.columns().get(i).map(|c| c.name().to_string()),
            Inner::Sqlite(r) => r.columns().get(i).map(|c| c.name().to_string()),
            Inner::My(r) => r.columns().get(i).map(|c| c.name().to_string()),
        };
        name.unwrap_or_else(|| format!("#{i}"))
    }

    fn err(&self, i: usize, message: impl std::fmt::Display) -> DecodeError {
        DecodeError { column: self.column_name(i), message: message.to_string() }
    }

    pub fn len(&self) -> usize {
        match &self.0 {
            Inner::Pg(r) => r.len(),
            Inner::Sqlite(r) => r.len(),
            Inner::My(r) => r.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A text value (NULL is `None`). Bytes that are not UTF-8 are an error.
    pub fn text(&self, i: usize) -> Result<Option<String>, DecodeError> {
        let bytes = |b: Option<Vec<u8>>| -> Result<Option<String>, DecodeError> {
            b.map(|b| String::from_utf8(b).map_err(|e| self.err(i, format!("not valid UTF-8 text ({e})")))).transpose()
        };
        match &self.0 {
            Inner::Pg(r) => r.try_get::<Option<String>, _>(i).map_err(|e| self.err(i, e)),
            Inner::Sqlite(r) => match r.try_get::<Option<String>, _>(i) {
                Ok(v) => Ok(v),
                Err(_) => bytes(r.try_get_unchecked::<Option<Vec<u8>>, _>(i).map_err(|e| self.err(i, e))?),
            },
            Inner::My(r) => match r.try_get::<Option<String>, _>(i) {
                Ok(v) => Ok(v),
                Err(_) => bytes(r.try_get_unchecked::<Option<Vec<u8>>, _>(i).map_err(|e| self.err(i, e))?),
            },
        }
    }

    /// A text value that must be there.
    pub fn text_req(&self, i: usize) -> Result<String, DecodeError> {
        self.text(i)?.ok_or_else(|| self.err(i, "unexpected NULL"))
    }

    /// An integer of any width.
    pub fn int(&self, i: usize) -> Result<Option<i64>, DecodeError> {
        macro_rules! widths {
            ($r:expr) => {
                $r.try_get::<Option<i64>, _>(i)
                    .or_else(|_| $r.try_get::<Option<i32>, _>(i).map(|v| v.map(i64::from)))
                    .or_else(|_| $r.try_get::<Option<i16>, _>(i).map(|v| v.map(i64::from)))
                    .map_err(|e| self.err(i, e))
            };
        }
        match &self.0 {
            Inner::Pg(r) => widths!(r),
            Inner::Sqlite(r) => widths!(r),
            Inner::My(r) => widths!(r).or_else(|e| {
                r.try_get::<Option<u64>, _>(i)
                    .map_err(|_| e)?
                    .map(|u| i64::try_from(u).map_err(|_| self.err(i, "out of range")))
                    .transpose()
            }),
        }
    }

    /// An integer that must be there (counts, sums).
    pub fn int_req(&self, i: usize) -> Result<i64, DecodeError> {
        self.int(i)?.ok_or_else(|| self.err(i, "unexpected NULL"))
    }

    /// A boolean: `boolean` on PostgreSQL, 0/1 on SQLite and MySQL.
    pub fn flag(&self, i: usize) -> Result<Option<bool>, DecodeError> {
        match &self.0 {
            Inner::Pg(r) => r.try_get::<Option<bool>, _>(i).map_err(|e| self.err(i, e)),
            Inner::Sqlite(_) | Inner::My(_) => Ok(self.int(i)?.map(|v| v != 0)),
        }
    }

    /// An instant: `timestamptz` (or `timestamp`, taken as UTC), SQLite's text, MySQL's
    /// `DATETIME`/`TIMESTAMP` (sweep's sessions use UTC).
    pub fn time(&self, i: usize) -> Result<Option<DateTime<Utc>>, DecodeError> {
        let parse = |s: Option<String>| {
            s.map(|s| {
                super::parse_sqlite_time(&s).ok_or_else(|| self.err(i, format!("{s:?} is not an RFC 3339 timestamp")))
            })
            .transpose()
        };
        match &self.0 {
            Inner::Pg(r) => r
                .try_get::<Option<DateTime<Utc>>, _>(i)
                .or_else(|_| r.try_get::<Option<NaiveDateTime>, _>(i).map(|v| v.map(|n| n.and_utc())))
                .map_err(|e| self.err(i, e)),
            Inner::Sqlite(_) => parse(self.text(i)?),
            Inner::My(r) => match r.try_get::<Option<DateTime<Utc>>, _>(i) {
                Ok(v) => Ok(v),
                Err(_) => parse(self.text(i)?),
            },
        }
    }

    /// An instant that must be there.
    pub fn time_req(&self, i: usize) -> Result<DateTime<Utc>, DecodeError> {
        self.time(i)?.ok_or_else(|| self.err(i, "unexpected NULL"))
    }

    /// The row from column `skip` on as a JSON object, each value by its stored type (a row
    /// snapshot on SQLite and MySQL; PostgreSQL's come from `row_to_json`). Instants from MySQL
    /// are written as `YYYY-MM-DD HH:MM:SS.ffffff`, the form a `DATETIME` column takes back.
    pub fn to_json(&self, skip: usize) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for i in skip..self.len() {
            m.insert(self.column_name(i), self.json_value(i));
        }
        serde_json::Value::Object(m)
    }

    fn json_value(&self, i: usize) -> serde_json::Value {
        use serde_json::Value;
        let text = |s: Result<Option<String>, DecodeError>| s.ok().flatten().map(Value::from).unwrap_or(Value::Null);
        match &self.0 {
            Inner::Sqlite(r) => {
                let Ok(raw) = r.try_get_raw(i) else { return Value::Null };
                if raw.is_null() {
                    return Value::Null;
                }
                match raw.type_info().name() {
                    "INTEGER" | "BOOLEAN" => r.try_get::<i64, _>(i).map(Into::into).unwrap_or_default(),
                    "REAL" => r.try_get::<f64, _>(i).map(Into::into).unwrap_or_default(),
                    _ => text(self.text(i)),
                }
            }
            Inner::My(r) => {
                let Ok(raw) = r.try_get_raw(i) else { return Value::Null };
                if raw.is_null() {
                    return Value::Null;
                }
                let ty = raw.type_info().name().to_string();
                if let Ok(v) = r.try_get::<i64, _>(i) {
                    return v.into();
                }
                if ty == "DATETIME" || ty == "TIMESTAMP" {
                    if let Ok(t) = r.try_get::<NaiveDateTime, _>(i) {
                        return t.format("%Y-%m-%d %H:%M:%S%.6f").to_string().into();
                    }
                }
                if let Ok(v) = r.try_get::<f64, _>(i) {
                    return v.into();
                }
                text(self.text(i))
            }
            Inner::Pg(r) => r
                .try_get::<Option<serde_json::Value>, _>(i)
                .ok()
                .flatten()
                .or_else(|| self.int(i).ok().flatten().map(Into::into))
                .or_else(|| self.flag(i).ok().flatten().map(Into::into))
                .unwrap_or_else(|| text(self.text(i))),
        }
    }
}
