//! Seed 002's retention policies as stored in `cleanup_policies`: read them, and change one
//! (retention days, enabled) with an audit record saying who changed what. `cleanup-ops
//! --show-policies/--set-policy` and `serve`'s policy editor both come here.

use crate::db::{AuditRow, Db, RunTotals};
use crate::exit_codes::Fatal;
use crate::policy::cleanup_ops::Policy;
use anyhow::{anyhow, Result};
use chrono::Utc;

/// Every policy, by data type.
pub async fn load(db: &Db) -> Result<Vec<Policy>> {
    let q = db.raw(
        "SELECT data_type, retention_days, enabled, pattern, description FROM cleanup_policies ORDER BY data_type",
    );
    let rows = db
        .read(&q, |r| Ok((r.text_req(0)?, r.int_req(1)?, r.flag(2)?.unwrap_or(false), r.text_req(3)?, r.text_req(4)?)))
        .await
        .map_err(|e| {
            anyhow!("cannot read cleanup_policies ({e:#}): run `sweep migrate` to create it with seed 002's defaults")
        })?;
    Ok(rows
        .into_iter()
        .map(|(data_type, retention_days, enabled, pattern, description)| Policy {
            data_type,
            retention_days,
            enabled,
            pattern,
            description,
        })
        .collect())
}

/// A change to one policy: what is not given stays as it is.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    pub data_type: String,
    pub retention_days: Option<i64>,
    pub enabled: Option<bool>,
}

/// What a change did: the policy after it, and the change in words (`retention_days 30 -> 10,
/// enabled true -> true, by NAME`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Changed {
    pub policy: Policy,
    pub change: String,
}

/// Apply `c` (unless `dry_run`), recorded in `cleanup_runs` and `cleanup_audit` with `who`.
/// An unknown data type, a negative retention, or a change that changes nothing is a usage
/// error naming the fix.
pub async fn update(db: &Db, c: &Change, who: &str, dry_run: bool) -> Result<Changed> {
    let policies = load(db).await?;
    let Some(old) = policies.iter().find(|p| p.data_type == c.data_type) else {
        return Err(Fatal::usage(format!(
            "no policy {:?}; choose from {}",
            c.data_type,
            policies.iter().map(|p| p.data_type.as_str()).collect::<Vec<_>>().join(", ")
        ))
        .into());
    };
    if c.retention_days.is_none() && c.enabled.is_none() {
        return Err(Fatal::usage("nothing to change: give a retention in days, enable or disable").into());
    }
    let days = c.retention_days.unwrap_or(old.retention_days);
    if !(0..=36_500).contains(&days) {
        return Err(Fatal::usage(format!("retention_days {days}: expected 0 to 36500 days")).into());
    }
    let enabled = c.enabled.unwrap_or(old.enabled);
    let change =
        format!("retention_days {} -> {days}, enabled {} -> {enabled}, by {who}", old.retention_days, old.enabled);
    let policy = Policy { retention_days: days, enabled, ..old.clone() };
    if dry_run {
        return Ok(Changed { policy, change });
    }
    crate::run::require_audit_tables(db).await?;
    let now = Utc::now();
    let mut q = db.sql();
    q.push("UPDATE cleanup_policies SET retention_days = ").bind(days).push(", enabled = ").bind(enabled);
    q.push(", updated_at = ").bind(now).push(" WHERE data_type = ").bind(c.data_type.as_str());
    db.execute(&q).await?;
    let run_id = crate::run::new_run_id();
    db.insert_run(&run_id, "cleanup-ops --set-policy", false, now).await?;
    let target = format!("cleanup_policies data_type={}", c.data_type);
    db.insert_audit(&[AuditRow {
        run_id: &run_id,
        policy: "cleanup-ops/set-policy",
        kind: "row",
        target: &target,
        reason: &change,
        bytes: None,
        outcome: "updated",
        error: None,
        backup_location: None,
        row_snapshot: None,
        at: now,
    }])
    .await?;
    db.finish_run(&run_id, Utc::now(), &RunTotals { status: "success".into(), ..Default::default() }).await?;
    Ok(Changed { policy, change })
}
