//! Settings an operator changes at run time from the dashboard, kept in `sweep_settings` so
//! that every process (the CLI from cron, each `serve`) sees them: seed 004's dry-run toggle,
//! "a DB flag that the worker respects".

use crate::db::Db;
use anyhow::Result;
use chrono::{DateTime, Utc};

/// `worker-once` runs dry while this is `true`.
pub const WORKER_DRY_RUN: &str = "worker.dry_run";

/// A setting's value, who set it and when.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Switch {
    pub value: String,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
}

/// The setting `name`, if set (and if sweep's tables exist: before `sweep migrate` nothing
/// is set).
pub async fn get(db: &Db, name: &str) -> Result<Option<Switch>> {
    if !db.sweep_tables_ready().await? {
        return Ok(None);
    }
    let mut q = db.sql();
    q.push("SELECT value, updated_at, updated_by FROM sweep_settings WHERE name = ").bind(name);
    let rows = db
        .read(&q, |r| Ok(Switch { value: r.text_req(0)?, updated_at: r.time_req(1)?, updated_by: r.text_req(2)? }))
        .await?;
    Ok(rows.into_iter().next())
}

/// True when the setting `name` is `true`.
pub async fn is_on(db: &Db, name: &str) -> Result<bool> {
    Ok(get(db, name).await?.is_some_and(|s| s.value == "true"))
}

/// Set `name` to `value`, by `who`.
pub async fn set(db: &Db, name: &str, value: &str, who: &str, now: DateTime<Utc>) -> Result<()> {
    let mut del = db.sql();
    del.push("DELETE FROM sweep_settings WHERE name = ").bind(name);
    let mut ins = db.sql();
    ins.push("INSERT INTO sweep_settings (name, value, updated_at, updated_by) VALUES (")
        .bind(name)
        .push(", ")
        .bind(value)
        .push(", ")
        .bind(now)
        .push(", ")
        .bind(who)
        .push(")");
    db.execute_all(&[del, ins]).await?;
    Ok(())
}
