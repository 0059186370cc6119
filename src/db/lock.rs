//! One run per command per database (SPEC §5 rule 4): a PostgreSQL session advisory lock, or
//! an OS file lock on a file beside a SQLite database. Both vanish with the process, so a
//! crashed run never leaves a stale lock.

use super::{Db, Pool};
use crate::exit_codes::Fatal;
use anyhow::{Context, Result};
use sqlx::Connection;

/// Held for the whole run; dropping it releases the lock.
pub enum RunLock {
    Pg(Option<sqlx::PgConnection>),
    File(#[allow(dead_code)] std::fs::File),
    /// In-memory SQLite: nothing else can see the database.
    Unshared,
}

impl RunLock {
    pub async fn release(self) {
        if let RunLock::Pg(Some(c)) = self {
            let _ = c.close().await;
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

/// Take the run lock for `command`, or fail with exit 75 if another run holds it.
pub async fn acquire(db: &Db, command: &str) -> Result<RunLock> {
    match &db.pool {
        Pool::Pg(_) => {
            let mut conn = db.pg_connection().await?;
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(lock_key(command))
                .fetch_one(&mut conn)
                .await
                .context("cannot take the run lock")?;
            if !got {
                return Err(Fatal::locked(format!(
                    "another `sweep {command}` run holds the lock on this database (PostgreSQL advisory lock {}): nothing done",
                    lock_key(command)
                ))
                .into());
            }
            Ok(RunLock::Pg(Some(conn)))
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
