//! The database, PostgreSQL, SQLite or MySQL/MariaDB, behind one type: connecting (with
//! redacted errors), sweep's migrations, the run and audit records, the run lock, batched row
//! deletion, and running queries written once with [`Sql`].
//!
//! Nothing outside this module matches on the database: queries are written with [`Sql`]
//! (placeholders, casts, time comparisons and key lists come from the dialect) and read back
//! as [`Row`]s, which read a value by what it means (text, integer, flag, instant) whatever
//! its type in this database. The one place each backend needs its own code is here: binding,
//! transactions, and the few statements a dialect cannot express alike (`RETURNING` on MySQL).

use crate::config::DatabaseUrl;
use crate::ident::Ident;
use crate::plan::RowRule;
use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use serde_json::value::RawValue;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{ConnectOptions, Connection, Executor};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

pub mod lock;
mod row;
mod sql;

pub use row::{DecodeError, Row};
pub use sql::{Arg, Backend, Sql, KEYS_PER_STATEMENT};

/// Bind a query's arguments to any sqlx query of one backend.
macro_rules! bind_args {
    ($q:expr, $args:expr, Postgres) => {{
        let mut q = $q;
        for a in $args {
            q = match a {
                Arg::Text(s) => q.bind(s.clone()),
                Arg::Int(i) => q.bind(*i),
                Arg::Float(f) => q.bind(*f),
                Arg::Bool(b) => q.bind(*b),
                Arg::Time(t) => q.bind(*t),
                Arg::TextArray(v) => q.bind(v.clone()),
                Arg::OptTextArray(v) => q.bind(v.clone()),
                Arg::OptIntArray(v) => q.bind(v.clone()),
                Arg::TimeArray(v) => q.bind(v.clone()),
            };
        }
        q
    }};
    ($q:expr, $args:expr, Sqlite) => {{
        let mut q = $q;
        for a in $args {
            q = match a {
                Arg::Text(s) => q.bind(s.clone()),
                Arg::Int(i) => q.bind(*i),
                Arg::Float(f) => q.bind(*f),
                Arg::Bool(b) => q.bind(*b),
                Arg::Time(t) => q.bind(rfc3339(*t)),
                Arg::TextArray(_) | Arg::OptTextArray(_) | Arg::OptIntArray(_) | Arg::TimeArray(_) => {
                    unreachable!("arrays are bound on PostgreSQL only")
                }
            };
        }
        q
    }};
    ($q:expr, $args:expr, MySql) => {{
        let mut q = $q;
        for a in $args {
            q = match a {
                Arg::Text(s) => q.bind(s.clone()),
                Arg::Int(i) => q.bind(*i),
                Arg::Float(f) => q.bind(*f),
                Arg::Bool(b) => q.bind(*b),
                Arg::Time(t) => q.bind(*t),
                Arg::TextArray(_) | Arg::OptTextArray(_) | Arg::OptIntArray(_) | Arg::TimeArray(_) => {
                    unreachable!("arrays are bound on PostgreSQL only")
                }
            };
        }
        q
    }};
}

/// Run a transaction (`$in_tx!`, defined per operation for the three backends) and, when the
/// database aborted it to break a deadlock (it changed nothing), run it again from scratch;
/// evaluates to `Result<$out>`.
macro_rules! tx_with_retries {
    ($self:expr, $out:ident, $in_tx:ident) => {{
        let mut attempt = 0;
        loop {
            $out.clear();
            let r: Result<()> = async {
                let _turn = $self.write_turn().await;
                match &$self.pool {
                    Pool::Pg(p) => $in_tx!(p, Postgres, Pg),
                    Pool::Sqlite(p) => $in_tx!(p, Sqlite, Sqlite),
                    Pool::My(p) => $in_tx!(p, MySql, My),
                }
                Ok(())
            }
            .await;
            match r {
                Err(e) if e.downcast_ref::<sqlx::Error>().is_some_and(retryable) && attempt < RETRIES => {
                    attempt += 1;
                    backoff(attempt).await;
                }
                r => break r.map(|_| $out),
            }
        }
    }};
}

/// A connected database.
pub struct Db {
    pool: Pool,
    pub url: DatabaseUrl,
    key_types: Mutex<HashMap<(String, String), String>>,
    /// SQLite has one writer at a time: writes of this process take turns here instead of
    /// meeting SQLite's busy handler, which sleeps for milliseconds at each collision.
    writes: tokio::sync::Mutex<()>,
}

/// The rows of `q` through a cursor in a read-only transaction, `page` rows a `FETCH` (see
/// `Db::pages`).
fn pg_cursor<'a>(pool: &'a PgPool, q: &'a Sql, page: usize) -> BoxStream<'a, Result<Vec<Row>>> {
    stream::try_unfold(Cursor::Unopened, move |cursor| async move {
        let mut tx = match cursor {
            Cursor::Done => return Ok(None),
            Cursor::Open(tx) => tx,
            Cursor::Unopened => {
                let mut tx = pool.begin().await?;
                sqlx::query("SET TRANSACTION READ ONLY").execute(&mut *tx).await?;
                // Planned for all its rows, as the query alone would be: for the first tenth
                // (the default for cursors) PostgreSQL may pick an index that returns them out
                // of physical order.
                sqlx::query("SET LOCAL cursor_tuple_fraction = 1").execute(&mut *tx).await?;
                let declare = format!("DECLARE sweep_rows NO SCROLL CURSOR FOR {}", q.text);
                bind_args!(sqlx::query(&declare), &q.args, Postgres).execute(&mut *tx).await?;
                tx
            }
        };
        let rows: Vec<Row> = sqlx::query(&format!("FETCH {page} FROM sweep_rows"))
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|r| Row(row::Inner::Pg(r)))
            .collect();
        let next = if rows.len() < page {
            tx.commit().await?;
            Cursor::Done
        } else {
            Cursor::Open(tx)
        };
        Ok((!rows.is_empty()).then_some((rows, next)))
    })
    .boxed()
}

/// `pg_cursor`'s state.
enum Cursor {
    Unopened,
    Open(sqlx::Transaction<'static, sqlx::Postgres>),
    Done,
}

enum Pool {
    Pg(PgPool),
    Sqlite(SqlitePool),
    My(MySqlPool),
}

/// One of sweep's migrations, in each dialect.
struct Migration {
    version: i64,
    postgres: &'static str,
    sqlite: &'static str,
    mysql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        postgres: include_str!("../migrations/postgres/0001_sweep_tables.sql"),
        sqlite: include_str!("../migrations/sqlite/0001_sweep_tables.sql"),
        mysql: include_str!("../migrations/mysql/0001_sweep_tables.sql"),
    },
    Migration {
        version: 2,
        postgres: include_str!("../migrations/postgres/0002_audit_without_foreign_key.sql"),
        sqlite: include_str!("../migrations/sqlite/0002_audit_without_foreign_key.sql"),
        mysql: include_str!("../migrations/mysql/0002_audit_without_foreign_key.sql"),
    },
    Migration {
        version: 3,
        postgres: include_str!("../migrations/postgres/0003_audit_intents_index.sql"),
        sqlite: include_str!("../migrations/sqlite/0003_audit_intents_index.sql"),
        mysql: include_str!("../migrations/mysql/0003_audit_intents_index.sql"),
    },
    Migration {
        version: 4,
        postgres: include_str!("../migrations/postgres/0004_serve.sql"),
        sqlite: include_str!("../migrations/sqlite/0004_serve.sql"),
        mysql: include_str!("../migrations/mysql/0004_serve.sql"),
    },
];

/// The audit outcome of an item about to be deleted: written (durably) before the deletion,
/// replaced by the real outcome after it. One left behind by a dead run is resolved against
/// what is there by the next run of its command (`run::recover`).
pub const INTENT: &str = "intent";

/// The `kind` of a batch's intent row: one row naming every file, directory and object the
/// batch is about to delete (`row_snapshot`: a list of `IntentItem`), written before any of
/// them is touched and replaced by their outcomes once the batch is done.
pub const BATCH_INTENT: &str = "batch";

/// One item of a batch intent, as its row lists it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct IntentItem<'a> {
    #[serde(borrow)]
    pub policy: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub kind: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub target: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub reason: std::borrow::Cow<'a, str>,
    pub bytes: Option<i64>,
}

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

/// The audit written with a row deletion, atomically: `rows`, one per key (or none), each
/// carrying the deleted row's snapshot; `also`, rows appended whatever is deleted (a batch's
/// intent riding on the step that starts its work, or its other outcomes riding on the step
/// that ends it); and `settles`, a run's intents removed (run id, targets), as
/// `settle_intents` does.
#[derive(Clone, Copy, Default)]
pub struct RowAudit<'r, 'a> {
    pub rows: &'r [AuditRow<'a>],
    pub also: &'r [AuditRow<'a>],
    pub settles: Option<(&'r str, &'r [String])>,
}

impl<'a> AuditRow<'a> {
    /// The audit row of `item` in `policy` with `outcome` (its error, backup and snapshot as the
    /// item has them).
    pub fn of(
        run_id: &'a str,
        policy: &'a str,
        item: &'a crate::plan::Item,
        outcome: &'a str,
        at: DateTime<Utc>,
    ) -> Self {
        AuditRow {
            run_id,
            policy,
            kind: item.kind.as_str(),
            target: &item.target,
            reason: &item.reason,
            bytes: item.bytes.map(|b| b as i64),
            outcome,
            error: item.error.as_deref(),
            backup_location: item.backup.as_deref(),
            row_snapshot: item.snapshot.as_deref(),
            at,
        }
    }
}

/// Which database a plan was made against: never credentials.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DbIdentity {
    /// `postgres`, `sqlite` or `mysql`.
    pub backend: String,
    /// PostgreSQL and MySQL: the database name; SQLite: the file's canonical path.
    pub database: String,
    /// PostgreSQL: the cluster's system identifier, or `host:port` when it cannot be read;
    /// MySQL: the server's UUID (MySQL) or its host name and port as the server reports them.
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

fn backend_of(url: &DatabaseUrl) -> Backend {
    let u = url.expose();
    if u.starts_with("sqlite:") {
        Backend::Sqlite
    } else if u.starts_with("mysql://") || u.starts_with("mariadb://") {
        Backend::MySql
    } else {
        Backend::Postgres
    }
}

/// The URL as sqlx's MySQL driver takes it (`mariadb://` is an alias sweep accepts).
fn mysql_url(url: &DatabaseUrl) -> String {
    match url.expose().strip_prefix("mariadb://") {
        Some(rest) => format!("mysql://{rest}"),
        None => url.expose().to_string(),
    }
}

impl Db {
    /// Connect. For SQLite, `create` makes a missing file (only `demo` and tests ask for that).
    pub async fn connect(url: &DatabaseUrl, create: bool) -> Result<Db> {
        let shown = url.to_string();
        let unreachable = |what: &str, e: &dyn std::fmt::Display| {
            anyhow!(
                "cannot connect to {what} at {shown}: {}: check that the server is running and DATABASE_URL is right",
                redact_err(e, url)
            )
        };
        let pool = match backend_of(url) {
            Backend::Sqlite => {
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
            }
            Backend::Postgres => {
                let opts = PgConnectOptions::from_str(url.expose())
                    .map_err(|e| anyhow!("database URL {shown} is not valid: {}", redact_err(&e, url)))?
                    .application_name("sweep")
                    .disable_statement_logging();
                // One direct attempt first: a refused or misconfigured connection fails at once
                // with its real cause, instead of as a pool timeout 15 seconds later.
                sqlx::PgConnection::connect_with(&opts)
                    .await
                    .map_err(|e| unreachable("PostgreSQL", &e))?
                    .close()
                    .await
                    .ok();
                let pool = PgPoolOptions::new()
                    .max_connections(6)
                    .acquire_timeout(Duration::from_secs(15))
                    .connect_with(opts)
                    .await
                    .map_err(|e| unreachable("PostgreSQL", &e))?;
                Pool::Pg(pool)
            }
            Backend::MySql => {
                let opts = mysql_options(url)?;
                sqlx::MySqlConnection::connect_with(&opts)
                    .await
                    .map_err(|e| unreachable("MySQL/MariaDB", &e))?
                    .close()
                    .await
                    .ok();
                let pool = MySqlPoolOptions::new()
                    .max_connections(6)
                    .acquire_timeout(Duration::from_secs(15))
                    .after_connect(|c, _| Box::pin(async move { mysql_session(c).await }))
                    .connect_with(opts)
                    .await
                    .map_err(|e| unreachable("MySQL/MariaDB", &e))?;
                Pool::My(pool)
            }
        };
        Ok(Db { pool, url: url.clone(), key_types: Mutex::new(HashMap::new()), writes: Default::default() })
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Pg(_) => Backend::Postgres,
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::My(_) => Backend::MySql,
        }
    }

    /// The one of three texts written for this database (scripts that differ as a whole, like
    /// the reference schema).
    pub fn by_backend<'a>(&self, postgres: &'a str, sqlite: &'a str, mysql: &'a str) -> &'a str {
        match self.backend() {
            Backend::Postgres => postgres,
            Backend::Sqlite => sqlite,
            Backend::MySql => mysql,
        }
    }

    /// A new query in this database's dialect.
    pub fn sql(&self) -> Sql {
        Sql::new(self.backend())
    }

    /// A query whose text is the same in every dialect (no placeholders).
    pub fn raw(&self, text: &str) -> Sql {
        let mut q = self.sql();
        q.push(text);
        q
    }

    /// Run a query and read every row.
    pub async fn fetch_all(&self, q: &Sql) -> Result<Vec<Row>, sqlx::Error> {
        use row::Inner;
        macro_rules! all {
            ($p:expr, $b:ident, $inner:ident) => {
                bind_args!(sqlx::query(&q.text), &q.args, $b)
                    .fetch_all($p)
                    .await?
                    .into_iter()
                    .map(|r| Row(Inner::$inner(r)))
                    .collect()
            };
        }
        Ok(match &self.pool {
            Pool::Pg(p) => all!(p, Postgres, Pg),
            Pool::Sqlite(p) => all!(p, Sqlite, Sqlite),
            Pool::My(p) => all!(p, MySql, My),
        })
    }

    /// Run a query and read each row into a value with `f`.
    pub async fn read<T>(&self, q: &Sql, f: impl Fn(&Row) -> Result<T, DecodeError>) -> Result<Vec<T>> {
        let rows = self.fetch_all(q).await?;
        rows.iter().map(|r| f(r).map_err(anyhow::Error::from)).collect()
    }

    /// Run a query and yield its rows as they arrive (no result set in memory). The stream
    /// holds a connection until it ends or is dropped, and the query lasts as long.
    fn fetch_stream<'a>(&'a self, q: &'a Sql) -> BoxStream<'a, Result<Row, sqlx::Error>> {
        use row::Inner;
        macro_rules! stream {
            ($p:expr, $b:ident, $inner:ident) => {
                bind_args!(sqlx::query(&q.text), &q.args, $b).fetch($p).map_ok(|r| Row(Inner::$inner(r))).boxed()
            };
        }
        match &self.pool {
            Pool::Pg(p) => stream!(p, Postgres, Pg),
            Pool::Sqlite(p) => stream!(p, Sqlite, Sqlite),
            Pool::My(p) => stream!(p, MySql, My),
        }
    }

    /// The rows of `select` in pages of up to `page` rows, one page read at a time, in the
    /// order that deleting them later costs least. `select` reads `table` and ends with its
    /// `WHERE` clause; its first column is `key` as text.
    ///
    /// On PostgreSQL a cursor reads them in the table's physical order (a sequential scan), a
    /// `FETCH` of `page` rows at a time in one read-only transaction: each statement is short
    /// (an application's `statement_timeout` does not cut a long planning short) and the whole
    /// read sees one snapshot. Deletions that follow that order find a batch's rows on a few
    /// heap pages, and files written with their rows go in about the order they were written
    /// (in key order, random for a `uuid`, the same unlinks took 30% longer). Elsewhere pages
    /// in key order (keyset, each query short: on SQLite a read lasting the whole planning
    /// would hold off the application's writers; on MySQL the key order is the physical order).
    pub fn pages<'a>(
        &'a self,
        select: &'a Sql,
        table: &'a Ident,
        key: &'a Ident,
        page: usize,
    ) -> BoxStream<'a, Result<Vec<Row>>> {
        if let Pool::Pg(pool) = &self.pool {
            return pg_cursor(pool, select, page);
        }
        stream::try_unfold(Some(None), move |after: Option<Option<String>>| async move {
            let Some(after) = after else { return Ok(None) };
            let mut q = select.clone();
            if let Some(a) = &after {
                q.push(" AND ");
                self.push_key_after(&mut q, key, table, a).await?;
            }
            // The table-qualified column: a bare name could be the text cast in the select list.
            q.push(format_args!(" ORDER BY {table}.{key} LIMIT {page}"));
            let rows = self.fetch_all(&q).await?;
            let next = match rows.last() {
                Some(r) if rows.len() == page => Some(Some(r.text_req(0)?)),
                _ => None,
            };
            Ok((!rows.is_empty()).then_some((rows, next)))
        })
        .boxed()
    }

    /// Run a query and hand each row to `each` as it arrives (no result set in memory);
    /// returns the number of rows. `each` may stop the query with an error.
    ///
    /// On PostgreSQL through a cursor, a `FETCH` of 1,000 rows at a time (`Db::pages`: each
    /// statement short, whatever the application's `statement_timeout`).
    pub async fn for_each_row(&self, q: &Sql, mut each: impl FnMut(Row) -> Result<()>) -> Result<u64> {
        let mut rows: BoxStream<Result<Row>> = match &self.pool {
            Pool::Pg(pool) => {
                pg_cursor(pool, q, 1000).map_ok(|page| stream::iter(page.into_iter().map(Ok))).try_flatten().boxed()
            }
            _ => self.fetch_stream(q).map_err(anyhow::Error::from).boxed(),
        };
        let mut n = 0u64;
        while let Some(r) = rows.try_next().await? {
            each(r)?;
            n += 1;
        }
        Ok(n)
    }

    /// Run a query and read its first row, if any.
    pub async fn fetch_optional(&self, q: &Sql) -> Result<Option<Row>, sqlx::Error> {
        Ok(self.fetch_all(q).await?.into_iter().next())
    }

    /// This process's turn to write, on SQLite (`None` elsewhere: servers take concurrent
    /// writers).
    async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.pool {
            Pool::Sqlite(_) => Some(self.writes.lock().await),
            _ => None,
        }
    }

    /// Run a statement; returns the number of rows it changed.
    pub async fn execute(&self, q: &Sql) -> Result<u64, sqlx::Error> {
        let _turn = self.write_turn().await;
        Ok(match &self.pool {
            Pool::Pg(p) => bind_args!(sqlx::query(&q.text), &q.args, Postgres).execute(p).await?.rows_affected(),
            Pool::Sqlite(p) => bind_args!(sqlx::query(&q.text), &q.args, Sqlite).execute(p).await?.rows_affected(),
            Pool::My(p) => bind_args!(sqlx::query(&q.text), &q.args, MySql).execute(p).await?.rows_affected(),
        })
    }

    /// Run statements in one transaction (one statement alone needs none: it is atomic, and
    /// saves the `BEGIN` and `COMMIT` round trips a batch would pay for it).
    pub async fn execute_all(&self, qs: &[Sql]) -> Result<(), sqlx::Error> {
        if qs.is_empty() {
            // Nothing to write: no empty transaction (a round trip, and SQLite's write turn).
            return Ok(());
        }
        macro_rules! in_tx {
            ($p:expr, $b:ident) => {{
                if let [q] = qs {
                    bind_args!(sqlx::query(&q.text), &q.args, $b).execute($p).await?;
                    return Ok(());
                }
                let mut tx = $p.begin().await?;
                for q in qs {
                    bind_args!(sqlx::query(&q.text), &q.args, $b).execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }};
        }
        retrying(|| async {
            let _turn = self.write_turn().await;
            match &self.pool {
                Pool::Pg(p) => in_tx!(p, Postgres),
                Pool::Sqlite(p) => in_tx!(p, Sqlite),
                Pool::My(p) => in_tx!(p, MySql),
            }
            Ok(())
        })
        .await
    }

    /// The SQLite file, if this is a file-backed SQLite database.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        if self.backend() != Backend::Sqlite {
            return None;
        }
        let rest = self.url.expose().trim_start_matches("sqlite:").trim_start_matches("//");
        let path = rest.split('?').next().unwrap_or("");
        (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
    }

    /// Apply sweep's migrations that are not yet applied; returns the versions applied now.
    pub async fn migrate(&self) -> Result<Vec<i64>> {
        let mut applied = Vec::new();
        // One migration on a connection or transaction, if it is not applied yet.
        macro_rules! apply_if_new {
            ($conn:expr, $m:expr, $text:expr, $ph:literal) => {{
                let done: Option<i64> =
                    sqlx::query_scalar(concat!("SELECT version FROM sweep_migrations WHERE version = ", $ph))
                        .bind($m.version)
                        .fetch_optional(&mut *$conn)
                        .await?;
                if done.is_none() {
                    sqlx::raw_sql($text)
                        .execute(&mut *$conn)
                        .await
                        .with_context(|| format!("migration {} failed", $m.version))?;
                    sqlx::query(concat!("INSERT INTO sweep_migrations (version) VALUES (", $ph, ")"))
                        .bind($m.version)
                        .execute(&mut *$conn)
                        .await?;
                    applied.push($m.version);
                }
            }};
        }
        match &self.pool {
            Pool::Pg(p) => {
                sqlx::raw_sql("CREATE TABLE IF NOT EXISTS sweep_migrations (version bigint PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
                    .execute(p)
                    .await?;
                for m in MIGRATIONS {
                    let mut tx = p.begin().await?;
                    // Serialise concurrent `sweep migrate` runs.
                    sqlx::query("LOCK TABLE sweep_migrations IN EXCLUSIVE MODE").execute(&mut *tx).await?;
                    apply_if_new!(tx, m, m.postgres, "$1");
                    tx.commit().await?;
                }
            }
            Pool::Sqlite(p) => {
                sqlx::raw_sql("CREATE TABLE IF NOT EXISTS sweep_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%S+00:00', 'now')))")
                    .execute(p)
                    .await?;
                for m in MIGRATIONS {
                    let mut tx = p.begin().await?;
                    apply_if_new!(tx, m, m.sqlite, "?");
                    tx.commit().await?;
                }
            }
            Pool::My(p) => {
                // MySQL commits DDL at once: concurrent `sweep migrate` runs are serialised by a
                // named lock, held by one connection for the whole upgrade.
                let mut c = p.acquire().await?;
                c.execute("CREATE TABLE IF NOT EXISTS sweep_migrations (version BIGINT PRIMARY KEY, applied_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))")
                    .await?;
                let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(CONCAT('sweep-migrate:', DATABASE()), 60)")
                    .fetch_one(&mut *c)
                    .await?;
                if got != Some(1) {
                    bail!("another `sweep migrate` holds the migration lock on this server for over 60 s");
                }
                let result: Result<()> = async {
                    for m in MIGRATIONS {
                        apply_if_new!(c, m, m.mysql, "?");
                    }
                    Ok(())
                }
                .await;
                let _ = sqlx::query("SELECT RELEASE_LOCK(CONCAT('sweep-migrate:', DATABASE()))").execute(&mut *c).await;
                result?;
            }
        }
        Ok(applied)
    }

    /// True when every migration has been applied.
    pub async fn sweep_tables_ready(&self) -> Result<bool> {
        let latest = MIGRATIONS.last().map(|m| m.version).unwrap_or(0);
        let exists = match self.backend() {
            Backend::Postgres => "SELECT count(*) FROM pg_catalog.pg_tables WHERE tablename = 'sweep_migrations' AND schemaname = ANY(current_schemas(false))",
            Backend::Sqlite => "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'sweep_migrations'",
            Backend::MySql => "SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'sweep_migrations'",
        };
        let n = self.fetch_one_int(&self.raw(exists)).await?;
        if n == 0 {
            return Ok(false);
        }
        let v = self.fetch_all(&self.raw("SELECT max(version) FROM sweep_migrations")).await?;
        Ok(v.first().map(|r| r.int(0)).transpose()?.flatten().unwrap_or(0) >= latest)
    }

    /// The first column of the first row, as an integer (counts).
    pub async fn fetch_one_int(&self, q: &Sql) -> Result<i64> {
        let row = self.fetch_optional(q).await?.ok_or_else(|| anyhow!("the query returned no row"))?;
        Ok(row.int_req(0)?)
    }

    /// Record the start of a run.
    pub async fn insert_run(&self, id: &str, command: &str, dry_run: bool, started: DateTime<Utc>) -> Result<()> {
        self.insert_run_with(id, command, dry_run, started, None).await
    }

    /// Record the start of a run with its details so far (its stores and where its backups go:
    /// what `restore` needs even if the run never finishes).
    pub async fn insert_run_with(
        &self,
        id: &str,
        command: &str,
        dry_run: bool,
        started: DateTime<Utc>,
        details: Option<&serde_json::Value>,
    ) -> Result<()> {
        let mut q = self.sql();
        q.push("INSERT INTO cleanup_runs (id, command, dry_run, started_at, status, details) VALUES (")
            .bind(id)
            .push(", ")
            .bind(command)
            .push(", ")
            .bind(dry_run)
            .push(", ")
            .bind(started)
            .push(", 'running', ")
            .bind_json(details.map(|d| d.to_string()))
            .push(")");
        self.execute(&q).await?;
        Ok(())
    }

    /// Record the end of a run.
    pub async fn finish_run(&self, id: &str, finished: DateTime<Utc>, t: &RunTotals) -> Result<()> {
        let mut q = self.sql();
        q.push("UPDATE cleanup_runs SET finished_at = ")
            .bind(finished)
            .push(", status = ")
            .bind(t.status.as_str())
            .push(", candidates = ")
            .bind(t.candidates)
            .push(", deleted = ")
            .bind(t.deleted)
            .push(", failed = ")
            .bind(t.failed)
            .push(", retained = ")
            .bind(t.retained)
            .push(", bytes_reclaimed = ")
            .bind(t.bytes_reclaimed)
            .push(", details = ")
            .bind_json(t.details.as_ref().map(|d| d.to_string()))
            .push(" WHERE id = ")
            .bind(id);
        self.execute(&q).await?;
        Ok(())
    }

    /// Append audit rows (one statement per chunk, in one transaction).
    pub async fn insert_audit(&self, rows: &[AuditRow<'_>]) -> Result<()> {
        self.execute_all(&self.audit_statements(rows)).await?;
        Ok(())
    }

    /// The statements that append `rows` to the audit: one `INSERT … UNNEST` on PostgreSQL
    /// (COPY's per-statement overhead loses at batch sizes in the hundreds), multi-row `VALUES`
    /// of 500 rows elsewhere (on SQLite, binding 5,500 values costs less than one JSON parameter
    /// unpacked with `json_each` and `json_extract`: 0.25 s of 3 in the worker bench). Run them
    /// alone or in another statement's transaction.
    pub fn audit_statements(&self, rows: &[AuditRow<'_>]) -> Vec<Sql> {
        if rows.is_empty() {
            return Vec::new();
        }
        if self.backend() == Backend::Postgres {
            let mut q = self.sql();
            push_pg_audit_insert(&mut q, rows, None);
            return vec![q];
        }
        rows.chunks(500)
            .map(|chunk| {
                let mut q = self.sql();
                q.push(AUDIT_COLUMNS).push("VALUES ");
                for (i, r) in chunk.iter().enumerate() {
                    q.push(if i == 0 { "(" } else { ", (" });
                    q.bind(r.run_id).push(", ").bind(r.policy).push(", ").bind(r.kind).push(", ");
                    q.bind(r.target).push(", ").bind(r.reason).push(", ").bind(r.bytes).push(", ");
                    q.bind(r.outcome).push(", ").bind(r.error).push(", ").bind(r.backup_location).push(", ");
                    q.bind(r.row_snapshot.map(|v| v.get())).push(", ").bind(r.at).push(")");
                }
                q
            })
            .collect()
    }

    /// Replace a run's intent records for `targets` with their outcomes `rows`, in one
    /// transaction: the audit never holds both, nor neither.
    pub async fn settle_intents(&self, run_id: &str, targets: &[String], rows: &[AuditRow<'_>]) -> Result<()> {
        if self.backend() == Backend::Postgres && !targets.is_empty() && !rows.is_empty() {
            // One statement (atomic, no transaction to open and close): the intents' deletion
            // as a data-modifying CTE, then the outcomes.
            let mut q = self.sql();
            q.push("WITH settled AS (");
            push_intents_delete(&mut q, run_id, targets);
            q.push(") ");
            push_pg_audit_insert(&mut q, rows, None);
            self.execute_all(std::slice::from_ref(&q)).await?;
            return Ok(());
        }
        let statements = self.settle_statements(RowAudit { rows: &[], also: rows, settles: Some((run_id, targets)) });
        self.execute_all(&statements).await?;
        Ok(())
    }

    /// The statements that write `audit.also` and remove `audit.settles`' intents (not
    /// `audit.rows`, which need their rows' deletion), for a transaction.
    fn settle_statements(&self, audit: RowAudit<'_, '_>) -> Vec<Sql> {
        let mut statements = Vec::new();
        if let Some((run_id, targets)) = audit.settles {
            for chunk in targets.chunks(KEYS_PER_STATEMENT) {
                let mut q = self.sql();
                push_intents_delete(&mut q, run_id, chunk);
                statements.push(q);
            }
        }
        statements.extend(self.audit_statements(audit.also));
        statements
    }

    /// The SQL type of a key column on PostgreSQL (`uuid`, `bigint`, …), to cast text keys;
    /// empty elsewhere (SQLite and MySQL compare a text key with any column type).
    async fn key_type(&self, table: &Ident, column: &Ident) -> Result<String> {
        let Pool::Pg(p) = &self.pool else {
            return Ok(String::new());
        };
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

    /// `> key` for keyset paging on a key column: the text parameter cast to the column's
    /// type on PostgreSQL (so `uuid` and `bigint` keys sort as themselves).
    pub async fn push_key_after(&self, q: &mut Sql, column: &Ident, table: &Ident, key: &str) -> Result<()> {
        let ty = self.key_type(table, column).await?;
        q.push(format_args!("{column} > ")).bind(key);
        if !ty.is_empty() {
            q.push(format_args!("::{ty}"));
        }
        Ok(())
    }

    /// Of `keys`, those whose rows still exist and still match `rule`.
    pub async fn rows_matching(
        &self,
        table: &Ident,
        key_column: &Ident,
        keys: &[String],
        rule: Option<&RowRule>,
    ) -> Result<HashSet<String>> {
        self.rows_matching_after(&[], table, key_column, keys, rule).await
    }

    /// `rows_matching`, after appending `audit` to the audit: in the same statement on
    /// PostgreSQL (a data-modifying CTE: one round trip, both or neither), just before it
    /// elsewhere.
    pub async fn rows_matching_after(
        &self,
        audit: &[AuditRow<'_>],
        table: &Ident,
        key_column: &Ident,
        keys: &[String],
        rule: Option<&RowRule>,
    ) -> Result<HashSet<String>> {
        let mut out = HashSet::new();
        // On PostgreSQL the audit rides on the first (there, the only) chunk's statement.
        let together = self.backend() == Backend::Postgres && !keys.is_empty();
        if !together && !audit.is_empty() {
            self.insert_audit(audit).await?;
        }
        let mut riding = Some(audit).filter(|a| together && !a.is_empty());
        for chunk in self.key_chunks(keys) {
            let mut q = self.sql();
            if let Some(audit) = riding.take() {
                q.push("WITH written AS (");
                push_pg_audit_insert(&mut q, audit, None);
                q.push(") ");
            }
            q.push("SELECT ").as_text(key_column).push(format_args!(" FROM {table} WHERE "));
            self.where_keys_and_rule(&mut q, table, key_column, chunk, rule).await?;
            for r in self.fetch_all(&q).await? {
                out.insert(r.text_req(0)?);
            }
        }
        Ok(out)
    }

    /// Keys in statement-sized chunks: one array on PostgreSQL, [`KEYS_PER_STATEMENT`] else.
    fn key_chunks<'k>(&self, keys: &'k [String]) -> Vec<&'k [String]> {
        if keys.is_empty() {
            return Vec::new();
        }
        match self.backend() {
            Backend::Postgres => vec![keys],
            Backend::Sqlite | Backend::MySql => keys.chunks(KEYS_PER_STATEMENT).collect(),
        }
    }

    /// `key IN (…) AND <rule>`.
    async fn where_keys_and_rule(
        &self,
        q: &mut Sql,
        table: &Ident,
        key_column: &Ident,
        keys: &[String],
        rule: Option<&RowRule>,
    ) -> Result<()> {
        let ty = self.key_type(table, key_column).await?;
        q.in_keys(key_column, keys, &ty);
        if let Some(rule) = rule {
            q.push(" AND ");
            push_rule(q, rule, table);
        }
        Ok(())
    }

    /// Delete the rows with these keys that still match `rule`; returns the keys deleted.
    ///
    /// `audit.rows` (empty, or one row per key in `keys` order) records each deleted row with
    /// its snapshot, the row as the deletion saw it, in the deletion's own statement or
    /// transaction: a row is never gone without its audit row, whatever instant the process
    /// dies at. The snapshot is what `restore` re-inserts. `audit.also` is appended, and
    /// `audit.settles`' intents removed, in the same statement or transaction, whatever is
    /// deleted.
    ///
    /// PostgreSQL does it in one statement: the `DELETE … RETURNING` and the audit's `INSERT`
    /// joined to it, as data-modifying CTEs (atomic, no transaction to open, the snapshots
    /// never leave the server). SQLite returns the rows from the `DELETE` itself. MySQL has no
    /// `DELETE … RETURNING` (MariaDB's is not in MySQL 8), and MySQL cannot read the table a
    /// `DELETE` deletes from in a subquery (a keep-N rule does): there the rows are read with
    /// `SELECT … FOR UPDATE` (rule applied, rows locked) and deleted by key in the same
    /// transaction, so nothing can change between the snapshot and the deletion.
    pub async fn delete_rows(
        &self,
        table: &Ident,
        key_column: &Ident,
        keys: &[String],
        rule: Option<&RowRule>,
        audit: RowAudit<'_, '_>,
    ) -> Result<HashSet<String>> {
        let row_audit = audit;
        let RowAudit { rows: audit, also, settles } = audit;
        debug_assert!(audit.is_empty() || audit.len() == keys.len(), "one audit row per key");
        if keys.is_empty() {
            self.execute_all(&self.settle_statements(row_audit)).await?;
            return Ok(HashSet::new());
        }
        if self.backend() == Backend::Postgres {
            let mut q = self.sql();
            q.push("WITH ");
            if let Some((run_id, targets)) = settles {
                q.push("s AS (");
                push_intents_delete(&mut q, run_id, targets);
                q.push("), ");
            }
            if !also.is_empty() {
                q.push("i AS (");
                push_pg_audit_insert(&mut q, also, None);
                q.push("), ");
            }
            q.push(format_args!("d AS (DELETE FROM {table} WHERE "));
            self.where_keys_and_rule(&mut q, table, key_column, keys, rule).await?;
            q.push(format_args!(" RETURNING {key_column}::text AS k, row_to_json({table}.*) AS s)"));
            if !audit.is_empty() {
                q.push(", a AS (");
                push_pg_audit_insert(&mut q, audit, Some(keys));
                q.push(")");
            }
            q.push(" SELECT k FROM d");
            // One statement: dying before it completes is dying inside the transaction.
            crate::failpoint::hit("in-row-tx");
            let rows = retrying(|| self.fetch_all(&q)).await?;
            return rows.iter().map(|r| r.text_req(0).map_err(Into::into)).collect();
        }
        // Written first in the transaction (PostgreSQL's statement above has them as CTEs).
        let settle = self.settle_statements(row_audit);
        let by_key: HashMap<&str, &AuditRow> = keys.iter().map(String::as_str).zip(audit).collect();
        let mut out = HashSet::with_capacity(keys.len());
        let mut statements = Vec::new();
        for chunk in self.key_chunks(keys) {
            let mut q = self.sql();
            if self.backend() == Backend::Sqlite {
                q.push(format_args!("DELETE FROM {table} WHERE "));
                self.where_keys_and_rule(&mut q, table, key_column, chunk, rule).await?;
                q.push(format_args!(" RETURNING CAST({key_column} AS TEXT) AS __k, *"));
            } else {
                q.push("SELECT ").as_text(key_column).push(format_args!(" AS __k, {table}.* FROM {table} WHERE "));
                self.where_keys_and_rule(&mut q, table, key_column, chunk, rule).await?;
                q.push(" FOR UPDATE");
            }
            statements.push(q);
        }
        macro_rules! in_tx {
            ($p:expr, $b:ident, $inner:ident) => {{
                let mut tx = $p.begin().await?;
                for a in &settle {
                    bind_args!(sqlx::query(&a.text), &a.args, $b).execute(&mut *tx).await?;
                }
                for q in &statements {
                    let rows = bind_args!(sqlx::query(&q.text), &q.args, $b).fetch_all(&mut *tx).await?;
                    let mut found = Vec::with_capacity(rows.len());
                    for r in rows {
                        let r = Row(row::Inner::$inner(r));
                        found.push((r.text_req(0)?, RawValue::from_string(r.to_json(1).to_string())?));
                    }
                    if self.backend() == Backend::MySql && !found.is_empty() {
                        let keys: Vec<String> = found.iter().map(|f| f.0.clone()).collect();
                        let mut d = self.sql();
                        d.push(format_args!("DELETE FROM {table} WHERE ")).in_keys(key_column, &keys, "");
                        bind_args!(sqlx::query(&d.text), &d.args, $b).execute(&mut *tx).await?;
                    }
                    let rows: Vec<AuditRow> = found
                        .iter()
                        .filter_map(|(k, snapshot)| {
                            let mut row = (*by_key.get(k.as_str())?).clone();
                            row.row_snapshot = Some(snapshot);
                            Some(row)
                        })
                        .collect();
                    for a in self.audit_statements(&rows) {
                        bind_args!(sqlx::query(&a.text), &a.args, $b).execute(&mut *tx).await?;
                    }
                    crate::failpoint::hit("in-row-tx");
                    out.extend(found.into_iter().map(|f| f.0));
                }
                tx.commit().await?;
            }};
        }
        tx_with_retries!(self, out, in_tx)
    }

    /// Set `columns` to NULL in the rows with these keys that still match `rule`; returns the
    /// keys actually updated (read with `FOR UPDATE`, then updated by key, in one transaction,
    /// so that this works alike where `UPDATE … RETURNING` does not exist). `audit` (empty, or
    /// one row per key in `keys` order) records each updated row in the same transaction, as for
    /// a deletion.
    pub async fn null_columns(
        &self,
        table: &Ident,
        key_column: &Ident,
        keys: &[String],
        columns: &[Ident],
        rule: Option<&RowRule>,
        audit: RowAudit<'_, '_>,
    ) -> Result<HashSet<String>> {
        let settle = self.settle_statements(audit);
        let by_key: HashMap<&str, &AuditRow> = keys.iter().map(String::as_str).zip(audit.rows).collect();
        let mut out = HashSet::new();
        let ty = self.key_type(table, key_column).await?;
        let lock = if self.backend() == Backend::Sqlite { "" } else { " FOR UPDATE" };
        let set: Vec<String> = columns.iter().map(|c| format!("{c} = NULL")).collect();
        let mut selects = Vec::new();
        for chunk in self.key_chunks(keys) {
            let mut q = self.sql();
            q.push("SELECT ").as_text(key_column).push(format_args!(" FROM {table} WHERE "));
            self.where_keys_and_rule(&mut q, table, key_column, chunk, rule).await?;
            q.push(lock);
            selects.push(q);
        }
        macro_rules! in_tx {
            ($p:expr, $b:ident, $inner:ident) => {{
                let mut tx = $p.begin().await?;
                for a in &settle {
                    bind_args!(sqlx::query(&a.text), &a.args, $b).execute(&mut *tx).await?;
                }
                for q in &selects {
                    let rows = bind_args!(sqlx::query(&q.text), &q.args, $b).fetch_all(&mut *tx).await?;
                    let mut found = Vec::with_capacity(rows.len());
                    for r in rows {
                        found.push(Row(row::Inner::$inner(r)).text_req(0)?);
                    }
                    if !found.is_empty() {
                        let mut u = self.sql();
                        u.push(format_args!("UPDATE {table} SET {} WHERE ", set.join(", ")));
                        u.in_keys(key_column, &found, &ty);
                        bind_args!(sqlx::query(&u.text), &u.args, $b).execute(&mut *tx).await?;
                        let rows: Vec<AuditRow> =
                            found.iter().filter_map(|k| by_key.get(k.as_str()).map(|r| (*r).clone())).collect();
                        for a in self.audit_statements(&rows) {
                            bind_args!(sqlx::query(&a.text), &a.args, $b).execute(&mut *tx).await?;
                        }
                    }
                    out.extend(found);
                }
                tx.commit().await?;
            }};
        }
        tx_with_retries!(self, out, in_tx)
    }

    /// Which database this is, without credentials: what a plan records and `apply` checks.
    pub async fn identity(&self) -> Result<DbIdentity> {
        let shown = self.url.to_string();
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
                Ok(DbIdentity { backend: "postgres".into(), database: name, server, shown })
            }
            Pool::My(p) => {
                let name: Option<String> = sqlx::query_scalar("SELECT DATABASE()").fetch_one(p).await?;
                // MySQL names each server by a UUID; MariaDB has none, and the host name and
                // port the server reports stand in (whatever name reached it).
                let uuid: Option<String> =
                    sqlx::query_scalar("SELECT @@server_uuid").fetch_optional(p).await.ok().flatten().flatten();
                let server = match uuid {
                    Some(u) => format!("server_uuid={u}"),
                    None => {
                        let (host, port): (String, i64) =
                            sqlx::query_as("SELECT CAST(@@hostname AS CHAR), CAST(@@port AS SIGNED)")
                                .fetch_one(p)
                                .await?;
                        format!("{host}:{port}")
                    }
                };
                Ok(DbIdentity { backend: "mysql".into(), database: name.unwrap_or_default(), server, shown })
            }
            Pool::Sqlite(_) => {
                let path = self.sqlite_path().ok_or_else(|| anyhow!("an in-memory SQLite database has no identity"))?;
                let path = std::fs::canonicalize(&path).unwrap_or(path);
                Ok(DbIdentity {
                    backend: "sqlite".into(),
                    database: path.display().to_string(),
                    server: String::new(),
                    shown,
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
        let object = if self.backend() == Backend::Postgres { "json_build_object" } else { "JSON_OBJECT" };
        let pairs: Vec<String> = columns.iter().map(|c| format!("'{}', {c}", c.as_str())).collect();
        let mut out = HashMap::new();
        for chunk in self.key_chunks(keys) {
            let mut q = self.sql();
            q.push("SELECT ").as_text(key_column).push(", ");
            q.as_text(format_args!("{object}({})", pairs.join(", "))).push(format_args!(" FROM {table} WHERE "));
            self.where_keys_and_rule(&mut q, table, key_column, chunk, None).await?;
            for r in self.fetch_all(&q).await? {
                let values =
                    serde_json::from_str(&r.text_req(1)?).context("a row's values did not read back as JSON")?;
                out.insert(r.text_req(0)?, values);
            }
        }
        Ok(out)
    }

    /// Put a deleted row back from its snapshot (a JSON object of column → value). PostgreSQL
    /// converts each value to its column's type (`json_populate_record`); SQLite and MySQL take
    /// the values as they were read.
    pub async fn insert_snapshot(
        &self,
        table: &Ident,
        snapshot: &str,
        obj: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), InsertError> {
        let mut q = self.sql();
        if self.backend() == Backend::Postgres {
            q.push(format_args!("INSERT INTO {table} SELECT * FROM json_populate_record(NULL::{table}, "))
                .bind_json(Some(snapshot.to_string()))
                .push(")");
        } else {
            let mut cols = Vec::new();
            for k in obj.keys() {
                cols.push(Ident::new(k).map_err(|e| InsertError::Other(e.to_string()))?.to_string());
            }
            q.push(format_args!("INSERT INTO {table} ({}) VALUES (", cols.join(", ")));
            for (i, v) in obj.values().enumerate() {
                if i > 0 {
                    q.push(", ");
                }
                match v {
                    serde_json::Value::Null => q.bind(Arg::Text(None)),
                    serde_json::Value::Bool(b) => q.bind(*b as i64),
                    serde_json::Value::Number(n) if n.is_i64() => q.bind(n.as_i64()),
                    serde_json::Value::Number(n) => q.bind(Arg::Float(n.as_f64().unwrap_or_default())),
                    serde_json::Value::String(s) => q.bind(s.as_str()),
                    other => q.bind(other.to_string()),
                };
            }
            q.push(")");
        }
        match self.execute(&q).await {
            Ok(_) => Ok(()),
            Err(e) if e.as_database_error().is_some_and(|d| d.is_unique_violation()) => Err(InsertError::Exists),
            Err(e) => Err(InsertError::Other(e.to_string())),
        }
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
            Pool::My(p) => {
                sqlx::raw_sql(sql).execute(p).await?;
            }
        }
        Ok(())
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::Pg(p) => p.close().await,
            Pool::Sqlite(p) => p.close().await,
            Pool::My(p) => p.close().await,
        }
    }
}

/// Why a row could not be put back.
#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    #[error("a row with this key exists again: not overwritten")]
    Exists,
    #[error("{0}")]
    Other(String),
}

/// How many times a transaction the database aborted to break a deadlock is tried again.
const RETRIES: u32 = 5;

/// A transaction the database aborted and that can simply be tried again: a deadlock or a
/// serialization failure (SQLSTATE 40001, 40P01), or SQLite's busy database.
fn retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            matches!(d.code().as_deref(), Some("40001") | Some("40P01") | Some("5") | Some("6"))
                || d.message().contains("Deadlock found")
        }
        _ => false,
    }
}

/// Run `f` again, after a backoff, while it fails on a lock, a deadlock or a serialization
/// failure (`retryable`), up to `RETRIES` times. `f` must be safe to repeat: one statement, or
/// one transaction (a failed one changed nothing).
async fn retrying<T, F: std::future::Future<Output = Result<T, sqlx::Error>>>(
    mut f: impl FnMut() -> F,
) -> Result<T, sqlx::Error> {
    let mut attempt = 0;
    loop {
        match f().await {
            Err(e) if retryable(&e) && attempt < RETRIES => {
                attempt += 1;
                backoff(attempt).await;
            }
            r => return r,
        }
    }
}

async fn backoff(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(20 * 2u64.pow(attempt))).await;
}

/// MySQL connection options: sqlx sets the session's time zone to UTC; sweep's identifiers
/// are double-quoted, so the session also gets `ANSI_QUOTES` (in `mysql_session`).
fn mysql_options(url: &DatabaseUrl) -> Result<MySqlConnectOptions> {
    Ok(MySqlConnectOptions::from_str(&mysql_url(url))
        .map_err(|e| anyhow!("database URL {url} is not valid: {}", redact_err(&e, url)))?
        .disable_statement_logging())
}

/// What every MySQL session of sweep's needs: double quotes around identifiers (as on
/// PostgreSQL and SQLite), backslashes that are not escapes, UTC, READ COMMITTED.
async fn mysql_session(c: &mut sqlx::MySqlConnection) -> Result<(), sqlx::Error> {
    c.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES,NO_BACKSLASH_ESCAPES'), time_zone = '+00:00'")
        .await?;
    // Two batches in flight write the same audit index; READ COMMITTED takes no gap locks,
    // so they do not deadlock on it (rows to delete are still locked by FOR UPDATE). A server
    // that logs statements (binlog_format = STATEMENT) refuses writes under READ COMMITTED:
    // there the default stays, and deadlocks are retried.
    let format: Option<String> =
        sqlx::query_scalar("SELECT CAST(@@binlog_format AS CHAR)").fetch_optional(&mut *c).await.ok().flatten();
    if !format.is_some_and(|f| f.eq_ignore_ascii_case("STATEMENT")) {
        c.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED").await?;
    }
    Ok(())
}

/// Append a row rule's condition, with its parameters: the same SQL that re-checks a row at
/// deletion time selects it when planning.
pub fn push_rule(q: &mut Sql, rule: &RowRule, table: &Ident) {
    match rule {
        RowRule::SoftDeletedBefore { active_column, deleted_column, cutoff } => {
            q.is_false(active_column).push(" AND ").time_cmp(deleted_column, "<=", *cutoff);
        }
        RowRule::NotLatest { group_column, order_columns, keep } => {
            let cols =
                |prefix: &str| order_columns.iter().map(|c| format!("{prefix}.{c}")).collect::<Vec<_>>().join(", ");
            q.push(format_args!(
                "(SELECT count(*) FROM {table} AS newer WHERE newer.{group_column} = {table}.{group_column} \
                 AND ({}) > ({})) >= ",
                cols("newer"),
                cols(&table.to_string()),
            ))
            .bind(*keep);
        }
        RowRule::PreviewCleanable { status_column: st, expires_column: ex, updated_column: up, cutoff } => {
            q.push(format_args!("({st} = 'expired' OR ({ex} IS NOT NULL AND "));
            q.time_cmp(ex, "<", *cutoff).push(format_args!(") OR ({st} IN ('failed', 'cancelled') AND "));
            q.time_cmp(up, "<", *cutoff).push("))");
        }
        RowRule::InactiveSince { active_column, activity_column, cutoff } => {
            q.is_false(active_column).push(" AND ").time_cmp(activity_column, "<", *cutoff);
        }
    }
}

/// `INSERT INTO cleanup_audit … SELECT … FROM UNNEST(…)` of `rows` (PostgreSQL): one statement
/// and one array parameter per column, whatever the number of rows. With `deleted` (one key per
/// row), only the rows whose key the CTE `d` (`k`, `s`: key and snapshot) returned are
/// inserted, with `d`'s snapshot.
fn push_pg_audit_insert(q: &mut Sql, rows: &[AuditRow<'_>], deleted: Option<&[String]>) {
    let col = |f: &dyn Fn(&AuditRow<'_>) -> Option<String>| Arg::OptTextArray(rows.iter().map(f).collect());
    let snapshot = if deleted.is_some() { "COALESCE(d.s, u.s::json)" } else { "u.s::json" };
    q.push(AUDIT_COLUMNS);
    q.push(format_args!("SELECT u.r, u.p, u.k, u.t, u.re, u.b, u.o, u.e, u.bl, {snapshot}, u.a FROM UNNEST("));
    q.bind(col(&|r| Some(r.run_id.to_string()))).push("::text[], ");
    q.bind(col(&|r| Some(r.policy.to_string()))).push("::text[], ");
    q.bind(col(&|r| Some(r.kind.to_string()))).push("::text[], ");
    q.bind(col(&|r| Some(r.target.to_string()))).push("::text[], ");
    q.bind(col(&|r| Some(r.reason.to_string()))).push("::text[], ");
    q.bind(Arg::OptIntArray(rows.iter().map(|r| r.bytes).collect())).push("::int8[], ");
    q.bind(col(&|r| Some(r.outcome.to_string()))).push("::text[], ");
    q.bind(col(&|r| r.error.map(String::from))).push("::text[], ");
    q.bind(col(&|r| r.backup_location.map(String::from))).push("::text[], ");
    q.bind(col(&|r| r.row_snapshot.map(|v| v.get().to_string()))).push("::text[], ");
    q.bind(Arg::TimeArray(rows.iter().map(|r| r.at).collect())).push("::timestamptz[]");
    match deleted {
        None => q.push(") AS u(r, p, k, t, re, b, o, e, bl, s, a)"),
        Some(keys) => q
            .push(", ")
            .bind(Arg::TextArray(keys.to_vec()))
            .push("::text[]) AS u(r, p, k, t, re, b, o, e, bl, s, a, key) JOIN d ON d.k = u.key"),
    };
}

/// `DELETE` of a run's intent rows for `targets` (the partial index `cleanup_audit_intents`
/// finds them).
fn push_intents_delete(q: &mut Sql, run_id: &str, targets: &[String]) {
    q.push("DELETE FROM cleanup_audit WHERE run_id = ").bind(run_id);
    q.push(format_args!(" AND outcome = '{INTENT}' AND ")).in_keys("target", targets, "text");
}

/// The columns an audit row fills, in `AuditRow` order.
const AUDIT_COLUMNS: &str =
    "INSERT INTO cleanup_audit (run_id, policy, kind, target, reason, bytes, outcome, error, backup_location, row_snapshot, at) ";

/// The SQLite text form of an instant (SPEC §4.1): `2026-11-22T10:00:00+00:00`.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
}

/// Parse a stored timestamp (RFC 3339, or `YYYY-MM-DD HH:MM:SS[.fff]` taken as UTC).
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
