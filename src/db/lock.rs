//! One run per command per database (SPEC §5 rule 4): a PostgreSQL session advisory lock, a
//! MySQL named lock (`GET_LOCK`), or an OS file lock on a file beside a SQLite database. All
//! vanish with the process (the server releases a session's locks when its connection
//! drops), so a crashed run never leaves a stale lock.

use super::{mysql_options, redact_err, Db, Pool};
use crate::exit_codes::Fatal;
use anyhow::{anyhow, Context, Result};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use std::str::FromStr;

/// Held for the whole run; dropping it releases the lock.
pub enum RunLock {
    Pg(Option<sqlx::PgConnection>),
    My(Option<sqlx::MySqlConnection>),
    File(#[allow(dead_code)] std::fs::File),
    /// In-memory SQLite: nothing else can see the database.
    Unshared,
}

impl RunLock {
    pub async fn release(self) {
        match self {
            RunLock::Pg(Some(c)) => {
                let _ = c.close().await;
            }
            RunLock::My(Some(c)) => {
                let _ = c.close().await;
            }
            _ => {}
        }
    }
}

/// A stable 64-bit key for the advisory lock (FNV-1a of `sweep:<command>`).
pub fn lock_key(command: &str) -> i64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in format!("sweep:{command}").bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h as i64
}

/// MySQL's named locks are per server, not per database, and at most 64 characters: the name
/// carries the database, hashed when it would be too long.
fn mysql_lock_name(database: &str, command: &str) -> String {
    let name = format!("sweep:{database}:{command}");
    if name.len() <= 64 {
        name
    } else {
        format!("sweep:{:016x}", lock_key(&format!("{database}:{command}")))
    }
}

fn held_elsewhere(command: &str, how: String) -> anyhow::Error {
    Fatal::locked(format!("another `sweep {command}` run holds the lock on this database ({how}): nothing done")).into()
}

/// Take the run lock for `command`, or fail with exit 75 if another run holds it.
pub async fn acquire(db: &Db, command: &str) -> Result<RunLock> {
    match &db.pool {
        Pool::Pg(_) => {
            let opts = PgConnectOptions::from_str(db.url.expose())?.disable_statement_logging();
            let mut conn = sqlx::PgConnection::connect_with(&opts)
                .await
                .map_err(|e| anyhow!("cannot connect to PostgreSQL at {}: {}", db.url, redact_err(&e, &db.url)))?;
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(lock_key(command))
                .fetch_one(&mut conn)
                .await
                .context("cannot take the run lock")?;
            if !got {
                return Err(held_elsewhere(command, format!("PostgreSQL advisory lock {}", lock_key(command))));
            }
            Ok(RunLock::Pg(Some(conn)))
        }
        Pool::My(_) => {
            let mut conn = sqlx::MySqlConnection::connect_with(&mysql_options(&db.url)?)
                .await
                .map_err(|e| anyhow!("cannot connect to MySQL/MariaDB at {}: {}", db.url, redact_err(&e, &db.url)))?;
            let database: Option<String> = sqlx::query_scalar("SELECT DATABASE()")
                .fetch_one(&mut conn)
                .await
                .context("cannot take the run lock")?;
            let name = mysql_lock_name(&database.unwrap_or_default(), command);
            let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, 0)")
                .bind(&name)
                .fetch_one(&mut conn)
                .await
                .context("cannot take the run lock")?;
            if got != Some(1) {
                return Err(held_elsewhere(command, format!("MySQL named lock {name:?}")));
            }
            Ok(RunLock::My(Some(conn)))
        }
        Pool::Sqlite(_) => {
            let Some(db_path) = db.sqlite_path() else {
                return Ok(RunLock::Unshared);
            };
            let mut name = db_path.file_name().unwrap_or_default().to_os_string();
            name.push(format!(".sweep-{command}.lock"));
            let path = db_path.with_file_name(name);
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .with_context(|| format!("cannot open lock file {}", path.display()))?;
            match file.try_lock() {
                Ok(()) => Ok(RunLock::File(file)),
                Err(std::fs::TryLockError::WouldBlock) => Err(Fatal::locked(format!(
                    "another `sweep {command}` run holds the lock file {}: nothing done",
                    path.display()
                ))
                .into()),
                Err(std::fs::TryLockError::Error(e)) => {
                    Err(e).with_context(|| format!("cannot lock {}", path.display()))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_lock_names_fit_in_64_characters_and_name_the_database() {
        assert_eq!(mysql_lock_name("app", "cleanup-attachments"), "sweep:app:cleanup-attachments");
        let long = mysql_lock_name(&"d".repeat(64), "cleanup-attachments");
        assert!(long.len() <= 64, "{long}");
        assert_ne!(long, mysql_lock_name(&"e".repeat(64), "cleanup-attachments"));
    }
}
