//! The database, PostgreSQL or SQLite, behind one type: connecting (with redacted errors),
//! sweep's migrations, the run and audit records, the run lock, and batched row deletion.
//!
//! SQL differs per backend (`= ANY($1)` vs `IN (?, …)`, timestamptz vs RFC 3339 text), so each
//! operation has one method with a `match` on the backend rather than a lowest common
//! denominator.

use crate::config::DatabaseUrl;
use crate::ident::Ident;
use crate::plan::RowRule;
use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{ConnectOptions, Connection, Row};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

pub mod lock;

/// Bind a rule's parameters to any sqlx query (`Query`, `QueryAs`, `QueryScalar` share no
/// trait for `bind`): instants natively on PostgreSQL, as RFC 3339 text on SQLite.
macro_rules! bind_rule {
    ($q:expr, $binds:expr, Postgres) => {{
        let mut q = $q;
        for b in $binds {
            q = match b {
                Bind::Time(t) => q.bind(t),
                Bind::Int(i) => q.bind(i),
            };
        }
        q
    }};
    ($q:expr, $binds:expr, Sqlite) => {{
        let mut q = $q;
        for b in $binds {
            q = match b {
                Bind::Time(t) => q.bind(rfc3339(t)),
                Bind::Int(i) => q.bind(i),
            };
        }
        q
    }};
}

/// Which database engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A connected database.
pub struct Db {
    pub pool: Pool,
    pub url: DatabaseUrl,
    key_types: Mutex<HashMap<(String, String), String>>,
}

pub enum Pool {
    Pg(PgPool),
    Sqlite(SqlitePool),
}

/// sweep's migrations, in order: (version, PostgreSQL SQL, SQLite SQL).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        include_str!("../migrations/postgres/0001_sweep_tables.sql"),
        include_str!("../migrations/sqlite/0001_sweep_tables.sql"),
    ),
    (
        2,
        include_str!("../migrations/postgres/0002_audit_without_foreign_key.sql"),
        include_str!("../migrations/sqlite/0002_audit_without_foreign_key.sql"),
    ),
];

/// One row of `cleanup_audit`, borrowed from the plan item it records.
#[derive(Debug, Clone)]
pub struct AuditRow<'a> {
    pub run_id: &'a str,
    pub policy: &'a str,
    pub kind: &'a str,
    pub target: &'a str,
    pub reason: &'a str,
    pub bytes: Option<i64>,
    pub outcome: &'a str,
    pub error: Option<&'a str>,
    pub backup_location: Option<&'a str>,
    pub row_snapshot: Option<&'a serde_json::value::RawValue>,
    pub at: DateTime<Utc>,
}

/// Which database a plan was made against: never credentials.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DbIdentity {
    /// `postgres` or `sqlite`.
    pub backend: String,
    /// PostgreSQL: the database name; SQLite: the file's canonical path.
    pub database: String,
    /// PostgreSQL: the cluster's system identifier, or `host:port` when it cannot be read.
    pub server: String,
    /// The URL as shown (password redacted), for messages only: not compared.
    pub shown: String,
}

impl DbIdentity {
    /// The same database (the shown URL may differ: another user, another host name).
    pub fn same(&self, other: &DbIdentity) -> bool {
        self.backend == other.backend && self.database == other.database && self.server == other.server
    }
}

/// The totals written to `cleanup_runs` at the end of a run.
#[derive(Debug, Clone, Default)]
pub struct RunTotals {
    pub status: String,
    pub candidates: i64,
    pub deleted: i64,
    pub failed: i64,
    pub retained: i64,
    pub bytes_reclaimed: i64,
    pub details: Option<serde_json::Value>,
}

impl Db {
    /// Connect. For SQLite, `create` makes a missing file (only `demo` and tests ask for that).
    pub async fn connect(url: &DatabaseUrl, create: bool) -> Result<Db> {
        let shown = url.to_string();
        let pool = if url.is_sqlite() {
            let opts = SqliteConnectOptions::from_str(url.expose())
                .map_err(|e| anyhow!("database URL {shown} is not valid: {e}"))?
                .create_if_missing(create)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(false)
                .disable_statement_logging();
            let pool = SqlitePoolOptions::new().max_connections(4).connect_with(opts).await.map_err(|e| {
                anyhow!(
                    "cannot open SQLite database {shown}: {}: check the path (sweep does not create it)",
                    redact_err(&e, url)
                )
            })?;
            Pool::Sqlite(pool)
        } else {
            let opts = PgConnectOptions::from_str(url.expose())
                .map_err(|e| anyhow!("database URL {shown} is not valid: {}", redact_err(&e, url)))?
                .application_name("sweep")
                .disable_statement_logging();
            let unreachable = |e: &dyn std::fmt::Display| {
                anyhow!(
                    "cannot connect to PostgreSQL at {shown}: {}: check that the server is running and DATABASE_URL is right",
                    redact_err(e, url)
                )
            };
            // One direct attempt first: a refused or misconfigured connection fails at once with
            // its real cause, instead of as a pool timeout 15 seconds later.
            sqlx::PgConnection::connect_with(&opts).await.map_err(|e| unreachable(&e))?.close().await.ok();
            let pool = PgPoolOptions::new()
                .max_connections(6)
                .acquire_timeout(Duration::from_secs(15))
                .connect_with(opts)
                .await
                .map_err(|e| unreachable(&e))?;
            Pool::Pg(pool)
        };
        Ok(Db { pool, url: url.clone(), key_types: Mutex::new(HashMap::new()) })
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Pg(_) => Backend::Postgres,
            Pool::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// The SQLite file, if this is a file-backed SQLite database.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        if !self.url.is_sqlite() {
            return None;
        }
        let rest = self.url.expose().trim_start_matches("sqlite:").trim_start_matches("//");
        let path = rest.split('?').next().unwrap_or("");
        (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
    }

    /// Apply sweep's migrations that are not yet applied; returns the versions applied now.
    pub async fn migrate(&self) -> Result<Vec<i64>> {
        let mut applied = Vec::new();
        match &self.pool {
            Pool::Pg(p) => {
                sqlx::raw_sql("CREATE TABLE IF NOT EXISTS sweep_migrations (version bigint PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
                    .execute(p)
                    .await?;
                for (v, pg, _) in MIGRATIONS {
                    let mut tx = p.begin().await?;
                    // Serialise concurrent `sweep migrate` runs.
                    sqlx::query("LOCK TABLE sweep_migrations IN EXCLUSIVE MODE").execute(&mut *tx).await?;
                    let done: Option<i64> =
                        sqlx::query_scalar("SELECT version FROM sweep_migrations WHERE version = $1")
                            .bind(v)
                            .fetch_optional(&mut *tx)
                            .await?;
                    if done.is_none() {
                        sqlx::raw_sql(pg).execute(&mut *tx).await.with_context(|| format!("migration {v} failed"))?;
                        sqlx::query("INSERT INTO sweep_migrations (version) VALUES ($1)")
                            .bind(v)
                            .execute(&mut *tx)
                            .await?;
                        applied.push(*v);
                    }
                    tx.commit().await?;
                }
            }
            Pool::Sqlite(p) => {
                sqlx::raw_sql("CREATE TABLE IF NOT EXISTS sweep_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%S+00:00', 'now')))")
                    .execute(p)
                    .await?;
                for (v, _, lite) in MIGRATIONS {
                    let mut tx = p.begin().await?;
                    let done: Option<i64> =
                        sqlx::query_scalar("SELECT version FROM sweep_migrations WHERE version = ?")
                            .bind(v)
                            .fetch_optional(&mut *tx)
                            .await?;
                    if done.is_none() {
                        sqlx::raw_sql(lite).execute(&mut *tx).await.with_context(|| format!("migration {v} failed"))?;
                        sqlx::query("INSERT INTO sweep_migrations (version) VALUES (?)")
                            .bind(v)
                            .execute(&mut *tx)
                            .await?;
                        applied.push(*v);
                    }
                    tx.commit().await?;
                }
            }
        }
        Ok(applied)
    }

    /// True when every migration has been applied.
    pub async fn sweep_tables_ready(&self) -> Result<bool> {
        let latest = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
        let v: Option<i64> = match &self.pool {
            Pool::Pg(p) => {
                let exists: Option<String> =
                    sqlx::query_scalar("SELECT to_regclass('sweep_migrations')::text").fetch_one(p).await?;
                if exists.is_none() {
                    return Ok(false);
                }
                sqlx::query_scalar("SELECT max(version) FROM sweep_migrations").fetch_one(p).await?
            }
            Pool::Sqlite(p) => {
                let exists: Option<String> = sqlx::query_scalar(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'sweep_migrations'",
                )
                .fetch_optional(p)
                .await?;
                if exists.is_none() {
                    return Ok(false);
                }
                sqlx::query_scalar("SELECT max(version) FROM sweep_migrations").fetch_one(p).await?
            }
        };
        Ok(v.unwrap_or(0) >= latest)
    }

    /// Record the start of a run.
    pub async fn insert_run(&self, id: &str, command: &str, dry_run: bool, started: DateTime<Utc>) -> Result<()> {
        match &self.pool {
            Pool::Pg(p) => {
                sqlx::query("INSERT INTO cleanup_runs (id, command, dry_run, started_at, status) VALUES ($1, $2, $3, $4, 'running')")
                    .bind(id)
                    .bind(command)
                    .bind(dry_run)
                    .bind(started)
                    .execute(p)
                    .await?;
            }
            Pool::Sqlite(p) => {
                sqlx::query("INSERT INTO cleanup_runs (id, command, dry_run, started_at, status) VALUES (?, ?, ?, ?, 'running')")
                    .bind(id)
                    .bind(command)
                    .bind(dry_run)
                    .bind(rfc3339(started))
                    .execute(p)
                    .await?;
            }
        }
        Ok(())
    }

    /// Record the end of a run.
    pub async fn finish_run(&self, id: &str, finished: DateTime<Utc>, t: &RunTotals) -> Result<()> {
        let details = t.details.as_ref().map(|d| d.to_string());
        match &self.pool {
            Pool::Pg(p) => {
                sqlx::query(
                    "UPDATE cleanup_runs SET finished_at = $2, status = $3, candidates = $4, deleted = $5, failed = $6, \
                     retained = $7, bytes_reclaimed = $8, details = $9::json WHERE id = $1",
                )
                .bind(id)
                .bind(finished)
                .bind(&t.status)
                .bind(t.candidates)
                .bind(t.deleted)
                .bind(t.failed)
                .bind(t.retained)
                .bind(t.bytes_reclaimed)
                .bind(details)
                .execute(p)
                .await?;
            }
            Pool::Sqlite(p) => {
                sqlx::query(
                    "UPDATE cleanup_runs SET finished_at = ?2, status = ?3, candidates = ?4, deleted = ?5, failed = ?6, \
                     retained = ?7, bytes_reclaimed = ?8, details = ?9 WHERE id = ?1",
                )
                .bind(id)
                .bind(rfc3339(finished))
                .bind(&t.status)
                .bind(t.candidates)
                .bind(t.deleted)
                .bind(t.failed)
                .bind(t.retained)
                .bind(t.bytes_reclaimed)
                .bind(details)
                .execute(p)
                .await?;
            }
        }
        Ok(())
    }

    /// Append audit rows (one statement per chunk).
    pub async fn insert_audit(&self, rows: &[AuditRow<'_>]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        match &self.pool {
            Pool::Pg(p) => {
                // One INSERT … UNNEST per batch (COPY's per-statement overhead loses at batch sizes
                // in the hundreds).
                let col =
                    |f: &dyn Fn(&AuditRow<'_>) -> Option<String>| rows.iter().map(f).collect::<Vec<Option<String>>>();
                sqlx::query(
                    "INSERT INTO cleanup_audit (run_id, policy, kind, target, reason, bytes, outcome, error, backup_location, row_snapshot, at) \
                     SELECT r, p, k, t, re, b, o, e, bl, s::json, a FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                     $6::int8[], $7::text[], $8::text[], $9::text[], $10::text[], $11::timestamptz[]) AS u(r, p, k, t, re, b, o, e, bl, s, a)",
                )
                .bind(col(&|r| Some(r.run_id.to_string())))
                .bind(col(&|r| Some(r.policy.to_string())))
                .bind(col(&|r| Some(r.kind.to_string())))
                .bind(col(&|r| Some(r.target.to_string())))
                .bind(col(&|r| Some(r.reason.to_string())))
                .bind(rows.iter().map(|r| r.bytes).collect::<Vec<Option<i64>>>())
                .bind(col(&|r| Some(r.outcome.to_string())))
                .bind(col(&|r| r.error.map(String::from)))
                .bind(col(&|r| r.backup_location.map(String::from)))
                .bind(col(&|r| r.row_snapshot.map(|v| v.get().to_string())))
                .bind(rows.iter().map(|r| r.at).collect::<Vec<DateTime<Utc>>>())
                .execute(p)
                .await?;
            }
            Pool::Sqlite(p) => {
                let mut tx = p.begin().await?;
                for chunk in rows.chunks(500) {
                    let mut q = String::from(
                        "INSERT INTO cleanup_audit (run_id, policy, kind, target, reason, bytes, outcome, error, backup_location, row_snapshot, at) VALUES ",
                    );
                    q.push_str(&vec!["(?,?,?,?,?,?,?,?,?,?,?)"; chunk.len()].join(","));
                    let mut query = sqlx::query(&q);
                    for r in chunk {
                        query = query
                            .bind(r.run_id)
                            .bind(r.policy)
                            .bind(r.kind)
                            .bind(r.target)
                            .bind(r.reason)
                            .bind(r.bytes)
                            .bind(r.outcome)
                            .bind(r.error)
                            .bind(r.backup_location)
                            .bind(r.row_snapshot.map(|v| v.get()))
                            .bind(rfc3339(r.at));
                    }
                    query.execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// The SQL type of a key column on PostgreSQL (`uuid`, `bigint`, …), to cast text keys.
    async fn pg_key_type(&self, p: &PgPool, table: &Ident, column: &Ident) -> Result<String> {
        let cache_key = (table.as_str().to_string(), column.as_str().to_string());
        if let Some(t) = self.key_types.lock().unwrap().get(&cache_key) {
            return Ok(t.clone());
        }
        let t: Option<String> = sqlx::query_scalar(
            "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
             WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND NOT a.attisdropped",
        )
        .bind(table.to_string())
        .bind(column.as_str())
        .fetch_optional(p)
        .await?
        .flatten();
        let t = t.ok_or_else(|| {
            anyhow!("column {column} of table {table} not found: check the table and column names in the config")
        })?;
        if !t.chars().all(|c| c.is_ascii_alphanumeric() || " _(),".contains(c)) {
            bail!("column {column} of table {table} has an unsupported key type {t:?}");
        }
        self.key_types.lock().unwrap().insert(cache_key, t.clone());
        Ok(t)
    }

    /// The cast that turns a text parameter into the key column's type (`::uuid`, or empty).
    pub async fn key_cast(&self, table: &Ident, column: &Ident) -> Result<String> {
        match &self.pool {
            Pool::Pg(p) => Ok(format!("::{}", self.pg_key_type(p, table, column).await?)),
            Pool::Sqlite(_) => Ok(String::new()),
        }
    }

    /// Of `keys`, those whose rows still exist and still match `rule`.
    pub async fn rows_matching(
        &self,
        table: &Ident,
        key_column: &Ident,
        keys: &[String],
        rule: Option<&RowRule>,
    ) -> Result<HashSet<String>> {
        self.keyed(RowAction::Select, table, key_column, keys, rule).await
    }

    /// Delete the rows with these keys that still match `rule`, in one transaction; returns
    /// each deleted row as JSON, as it was when it was deleted (for the audit and `restore`).
    pub async fn delete_rows_returning(
        &self,
        table: &Ident,
        key_column: &Ident,
        keys: &[String],
        rule: Option<&RowRule>,
    ) -> Result<HashMap<String, Box<RawValue>>> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let mut out = HashMap::with_capacity(keys.len());
        match &self.pool {
            Pool::Pg(p) => {
                let ty = self.pg_key_type(p, table, key_column).await?;
                let (cond, binds) = render_rule(rule, table, Backend::Postgres, 2);
                let sql = format!(
                    "DELETE FROM {table} WHERE {key_column} = ANY($1::{ty}[]){cond} \
                     RETURNING {key_column}::text, row_to_json({table}.*)::text"
                );
                let q = bind_rule!(sqlx::query_as::<_, (String, String)>(&sql).bind(keys), binds, Postgres);
                for (k, snap) in q.fetch_all(p).await? {
                    out.insert(k, RawValue::from_string(snap)?);
                }
            }
            Pool::Sqlite(p) => {
                let mut tx = p.begin().await?;
                for chunk in keys.chunks(5000) {
                    let (cond, binds) = render_rule(rule, table, Backend::Sqlite, 0);
                    let sql = format!(
                        "DELETE FROM {table} WHERE {key_column} IN ({}){cond} RETURNING CAST({key_column} AS TEXT) AS __k, *",
                        vec!["?"; chunk.len()].join(",")
                    );
                    let mut q = sqlx::query(&sql);
                    for k in chunk {
                        q = q.bind(k);
                    }
                    q = bind_rule!(q, binds, Sqlite);
                    for r in q.fetch_all(&mut *tx).await? {
                        let k: String = r.try_get("__k")?;
                        out.insert(k, RawValue::from_string(sqlite_row_json(&r, 1).to_string())?);
                    }
                }
                tx.commit().await?;
            }
        }
        Ok(out)
    }

    /// Set `columns` to NULL in the rows with these keys that still match `rule`; returns the
    /// keys actually updated.
    pub async fn null_columns(
        &self,
        table: &Ident,
        key_column: &Ident,
        keys: &[String],
        columns: &[Ident],
        rule: Option<&RowRule>,
    ) -> Result<HashSet<String>> {
        self.keyed(RowAction::Null(columns), table, key_column, keys, rule).await
    }

    /// `SELECT` (or `UPDATE … SET … = NULL … RETURNING`) the keys among `keys` whose rows match `rule`.
    async fn keyed(
        &self,
        action: RowAction<'_>,
        table: &Ident,
        key_column: &Ident,
        keys: &[String],
        rule: Option<&RowRule>,
    ) -> Result<HashSet<String>> {
        if keys.is_empty() {
            return Ok(HashSet::new());
        }
        let found: Vec<String> = match &self.pool {
            Pool::Pg(p) => {
                let ty = self.pg_key_type(p, table, key_column).await?;
                let (cond, binds) = render_rule(rule, table, Backend::Postgres, 2);
                let filter = format!("{key_column} = ANY($1::{ty}[]){cond}");
                let sql = action.sql(table, &filter, &format!("{key_column}::text"));
                bind_rule!(sqlx::query_scalar(&sql).bind(keys), binds, Postgres).fetch_all(p).await?
            }
            Pool::Sqlite(p) => {
                let mut tx = p.begin().await?;
                let mut out = Vec::new();
                for chunk in keys.chunks(5000) {
                    let (cond, binds) = render_rule(rule, table, Backend::Sqlite, 0);
                    let filter = format!("{key_column} IN ({}){cond}", vec!["?"; chunk.len()].join(","));
                    let sql = action.sql(table, &filter, &format!("CAST({key_column} AS TEXT)"));
                    let mut q = sqlx::query_scalar(&sql);
                    for k in chunk {
                        q = q.bind(k);
                    }
                    q = bind_rule!(q, binds, Sqlite);
                    out.extend(q.fetch_all(&mut *tx).await?);
                }
                tx.commit().await?;
                out
            }
        };
        Ok(found.into_iter().collect())
    }

    /// Which database this is, without credentials: what a plan records and `apply` checks.
    pub async fn identity(&self) -> Result<DbIdentity> {
        match &self.pool {
            Pool::Pg(p) => {
                let name: String = sqlx::query_scalar("SELECT current_database()").fetch_one(p).await?;
                // The cluster's system identifier names the server whatever host name reaches
                // it; reading it may need rights this role lacks, then host:port stands in.
                let system: Option<String> =
                    sqlx::query_scalar("SELECT system_identifier::text FROM pg_control_system()")
                        .fetch_optional(p)
                        .await
                        .ok()
                        .flatten();
                let opts = PgConnectOptions::from_str(self.url.expose())?;
                let server = match system {
                    Some(id) => format!("system_identifier={id}"),
                    None => format!("{}:{}", opts.get_host(), opts.get_port()),
                };
                Ok(DbIdentity { backend: "postgres".into(), database: name, server, shown: self.url.to_string() })
            }
            Pool::Sqlite(_) => {
                let path = self.sqlite_path().ok_or_else(|| anyhow!("an in-memory SQLite database has no identity"))?;
                let path = std::fs::canonicalize(&path).unwrap_or(path);
                Ok(DbIdentity {
                    backend: "sqlite".into(),
                    database: path.display().to_string(),
                    server: String::new(),
                    shown: self.url.to_string(),
                })
            }
        }
    }

    /// For each of `keys` whose row exists: the values of `columns`, as a JSON object (the
    /// fingerprint of a row).
    pub async fn row_values(
        &self,
        table: &Ident,
        key_column: &Ident,
        keys: &[String],
        columns: &[Ident],
    ) -> Result<HashMap<String, serde_json::Map<String, serde_json::Value>>> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let pairs = |f: &str| {
            let inner: Vec<String> = columns.iter().map(|c| format!("'{}', {c}", c.as_str())).collect();
            format!("{f}({})", inner.join(", "))
        };
        let rows: Vec<(String, String)> = match &self.pool {
            Pool::Pg(p) => {
                let ty = self.pg_key_type(p, table, key_column).await?;
                let sql = format!(
                    "SELECT {key_column}::text, CAST({} AS TEXT) FROM {table} WHERE {key_column} = ANY($1::{ty}[])",
                    pairs("json_build_object")
                );
                sqlx::query_as(&sql).bind(keys).fetch_all(p).await?
            }
            Pool::Sqlite(p) => {
                let mut out = Vec::new();
                for chunk in keys.chunks(5000) {
                    let sql = format!(
                        "SELECT CAST({key_column} AS TEXT), {} FROM {table} WHERE {key_column} IN ({})",
                        pairs("json_object"),
                        vec!["?"; chunk.len()].join(",")
                    );
                    let mut q = sqlx::query_as(&sql);
                    for k in chunk {
                        q = q.bind(k);
                    }
                    out.extend(q.fetch_all(p).await?);
                }
                out
            }
        };
        rows.into_iter()
            .map(|(k, v)| Ok((k, serde_json::from_str(&v).context("a row's values did not read back as JSON")?)))
            .collect()
    }

    /// Run arbitrary reference-schema SQL (tests and `demo` only).
    pub async fn execute_script(&self, sql: &str) -> Result<()> {
        match &self.pool {
            Pool::Pg(p) => {
                sqlx::raw_sql(sql).execute(p).await?;
            }
            Pool::Sqlite(p) => {
                sqlx::raw_sql(sql).execute(p).await?;
            }
        }
        Ok(())
    }

    /// A dedicated PostgreSQL connection (for the advisory lock).
    pub(crate) async fn pg_connection(&self) -> Result<sqlx::PgConnection> {
        let opts = PgConnectOptions::from_str(self.url.expose())?.disable_statement_logging();
        sqlx::PgConnection::connect_with(&opts)
            .await
            .map_err(|e| anyhow!("cannot connect to PostgreSQL at {}: {}", self.url, redact_err(&e, &self.url)))
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::Pg(p) => p.close().await,
            Pool::Sqlite(p) => p.close().await,
        }
    }
}

/// What `keyed` does to the matching rows.
#[derive(Clone, Copy)]
enum RowAction<'a> {
    Select,
    Null(&'a [Ident]),
}

impl RowAction<'_> {
    fn sql(&self, table: &Ident, filter: &str, key: &str) -> String {
        match self {
            RowAction::Select => format!("SELECT {key} FROM {table} WHERE {filter}"),
            RowAction::Null(cols) => {
                let set: Vec<String> = cols.iter().map(|c| format!("{c} = NULL")).collect();
                format!("UPDATE {table} SET {} WHERE {filter} RETURNING {key}", set.join(", "))
            }
        }
    }
}

/// A value a rule binds.
enum Bind {
    Time(DateTime<Utc>),
    Int(i64),
}

/// `AND …` for a rule, with its parameters (`$n`, `$n+1`… on PostgreSQL; `?` on SQLite, where
/// timestamps are compared as instants whatever their text form).
fn render_rule(rule: Option<&RowRule>, table: &Ident, backend: Backend, n: usize) -> (String, Vec<Bind>) {
    let pg = backend == Backend::Postgres;
    let param = |i: usize| if pg { format!("${}", n + i) } else { "?".to_string() };
    match rule {
        None => (String::new(), Vec::new()),
        Some(RowRule::SoftDeletedBefore { active_column, deleted_column, cutoff }) => {
            let sql = if pg {
                format!(" AND {active_column} = false AND {deleted_column} <= {}", param(0))
            } else {
                format!(" AND {active_column} = 0 AND julianday({deleted_column}) <= julianday({})", param(0))
            };
            (sql, vec![Bind::Time(*cutoff)])
        }
        Some(RowRule::NotLatest { group_column, order_columns, keep }) => {
            let cols =
                |prefix: &str| order_columns.iter().map(|c| format!("{prefix}.{c}")).collect::<Vec<_>>().join(", ");
            let sql = format!(
                " AND (SELECT count(*) FROM {table} AS newer WHERE newer.{group_column} = {table}.{group_column} \
                 AND ({}) > ({})) >= {}",
                cols("newer"),
                cols(&table.to_string()),
                param(0)
            );
            (sql, vec![Bind::Int(*keep)])
        }
        Some(RowRule::PreviewCleanable { status_column: st, expires_column: ex, updated_column: up, cutoff }) => {
            let (e, u) = if pg {
                (ex.to_string(), up.to_string())
            } else {
                (format!("julianday({ex})"), format!("julianday({up})"))
            };
            let p = |i| if pg { param(i) } else { format!("julianday({})", param(i)) };
            let sql = format!(
                " AND ({st} = 'expired' OR ({ex} IS NOT NULL AND {e} < {}) OR ({st} IN ('failed', 'cancelled') AND {u} < {}))",
                p(0),
                p(1)
            );
            (sql, vec![Bind::Time(*cutoff), Bind::Time(*cutoff)])
        }
        Some(RowRule::InactiveSince { active_column, activity_column, cutoff }) => {
            let sql = if pg {
                format!(" AND {active_column} = false AND {activity_column} < {}", param(0))
            } else {
                format!(" AND {active_column} = 0 AND julianday({activity_column}) < julianday({})", param(0))
            };
            (sql, vec![Bind::Time(*cutoff)])
        }
    }
}

/// The SQLite text form of an instant (SPEC §4.1): `2026-11-22T10:00:00+00:00`.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
}

/// Parse a SQLite timestamp (RFC 3339, or `YYYY-MM-DD HH:MM:SS[.fff]` taken as UTC).
pub fn parse_sqlite_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").ok().map(|n| n.and_utc())
}

/// A sqlx error as text, with the URL's password (if it appears) removed.
fn redact_err(e: &dyn std::fmt::Display, url: &DatabaseUrl) -> String {
    let mut s = e.to_string();
    if let Ok(u) = url::Url::parse(url.expose()) {
        if let Some(pw) = u.password() {
            if !pw.is_empty() {
                s = s.replace(pw, "***");
            }
        }
    }
    s
}

/// Read a column that may be text or a native timestamp, as an instant.
pub fn row_time(row: &sqlx::sqlite::SqliteRow, idx: usize) -> Option<DateTime<Utc>> {
    row.try_get::<Option<String>, _>(idx).ok().flatten().and_then(|s| parse_sqlite_time(&s))
}

/// A SQLite row (from column `skip` on) as a JSON object, each value by its stored type.
pub fn sqlite_row_json(r: &sqlx::sqlite::SqliteRow, skip: usize) -> serde_json::Value {
    use sqlx::{Column, TypeInfo, ValueRef};
    let mut m = serde_json::Map::new();
    for (i, col) in r.columns().iter().enumerate().skip(skip) {
        let raw = r.try_get_raw(i).ok();
        let v = match raw {
            None => serde_json::Value::Null,
            Some(v) if v.is_null() => serde_json::Value::Null,
            Some(v) => match v.type_info().name() {
                "INTEGER" | "BOOLEAN" => r.try_get::<i64, _>(i).map(Into::into).unwrap_or_default(),
                "REAL" => r.try_get::<f64, _>(i).map(Into::into).unwrap_or_default(),
                _ => r.try_get::<String, _>(i).map(Into::into).unwrap_or_default(),
            },
        };
        m.insert(col.name().to_string(), v);
    }
    serde_json::Value::Object(m)
}
