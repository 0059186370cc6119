//! What a dead run left behind, settled by the next run of its command (SPEC §4.2: after a
//! crash at any instant, the audit matches reality once the next run has started).
//!
//! A run records every file, directory and object it is about to delete as an `intent` audit
//! row before deleting it, and replaces those rows with the outcomes once its batch is done;
//! rows are audited in their deletion's own transaction. A run killed in between (an OOM kill,
//! a node restart, a `kill -9`) leaves intents and a `running` run record. The next real run of
//! the same command holds the run lock, so any other `running` run of that command is dead: its
//! intents are checked against what is there (gone: `deleted`; still there: `skipped`, not
//! done) and it is marked `interrupted` with the counts its audit now holds.

use crate::db::{AuditRow, Db, IntentItem, BATCH_INTENT, INTENT};
use crate::plan::Outcome;
use crate::store::object::parse_key;
use crate::store::Resources;
use anyhow::{Context, Result};
use chrono::Utc;

/// What settling one dead run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    pub run_id: String,
    /// Intents found gone (now `deleted`).
    pub done: u64,
    /// Intents found still there (now `skipped`).
    pub not_done: u64,
    /// Intents that could not be checked (left as `intent`).
    pub unknown: u64,
}

/// Settle every dead run of `command` (call only while holding its run lock).
pub async fn settle_dead_runs(db: &Db, command: &str, res: &Resources) -> Result<Vec<Settled>> {
    let dead = dead_runs(db, command).await?;
    let mut out = Vec::new();
    for run_id in dead {
        let s = settle(db, &run_id, res).await.with_context(|| format!("cannot settle interrupted run {run_id}"))?;
        tracing::warn!(
            target: "cleanup",
            "run {run_id} of {command} was interrupted: {} of its intended deletions had happened, {} had not{}; it is now marked interrupted",
            s.done,
            s.not_done,
            if s.unknown > 0 { format!(", {} could not be checked (left as intents)", s.unknown) } else { String::new() }
        );
        out.push(s);
    }
    Ok(out)
}

/// The runs of `command` still marked `running` (dead ones, when its run lock is held).
pub async fn dead_runs(db: &Db, command: &str) -> Result<Vec<String>> {
    let mut q = db.sql();
    q.push("SELECT id FROM cleanup_runs WHERE command = ").bind(command).push(" AND status = 'running'");
    db.read(&q, |r| r.text_req(0)).await.context("cannot look for interrupted runs")
}

/// Settle one run: its intents against what is there, then mark it `interrupted` with the counts
/// its audit holds. Also for a run that stopped on an error it could not write down.
pub async fn settle(db: &Db, run_id: &str, res: &Resources) -> Result<Settled> {
    let mut q = db.sql();
    q.push("SELECT ").as_text("id").push(", kind, target, ").as_text("row_snapshot");
    q.push(" FROM cleanup_audit WHERE run_id = ").bind(run_id);
    q.push(format_args!(" AND outcome = '{INTENT}'"));
    let intents = db.read(&q, |r| Ok((r.text_req(0)?, r.text_req(1)?, r.text_req(2)?, r.text(3)?))).await?;
    let mut s = Settled { run_id: run_id.to_string(), ..Default::default() };
    let (mut gone, mut there) = (Vec::new(), Vec::new());
    const GONE: &str = "the run was interrupted; found gone when the next run started";
    const THERE: &str = "the run was interrupted before deleting it; found still there";
    let mut statements = Vec::new();
    let at = Utc::now();
    for (id, kind, target, list) in intents {
        if kind != BATCH_INTENT {
            // One item's intent (written by sweep before batch intents): settled in place.
            match still_there(&kind, &target, res).await {
                Some(false) => gone.push(id),
                Some(true) => there.push(id),
                None => s.unknown += 1,
            }
            continue;
        }
        // A batch's intent: each item it lists gets its own row with what became of it (one
        // that cannot be checked keeps an intent of its own), and the batch's row goes, in one
        // transaction.
        let list = list.unwrap_or_default();
        let items: Vec<IntentItem> = serde_json::from_str(&list)
            .with_context(|| format!("the intent row {id} of run {run_id} does not list its items"))?;
        let mut outcomes = Vec::with_capacity(items.len());
        for item in &items {
            let (outcome, error) = match still_there(&item.kind, &item.target, res).await {
                Some(false) => (Outcome::Deleted, Some(GONE)),
                Some(true) => (Outcome::Skipped, Some(THERE)),
                None => {
                    s.unknown += 1;
                    outcomes.push((item, INTENT, None));
                    continue;
                }
            };
            if outcome == Outcome::Deleted {
                s.done += 1;
            } else {
                s.not_done += 1;
            }
            outcomes.push((item, outcome.as_str(), error));
        }
        let rows: Vec<AuditRow> = outcomes
            .iter()
            .map(|(i, outcome, error)| AuditRow {
                run_id,
                policy: &i.policy,
                kind: &i.kind,
                target: &i.target,
                reason: &i.reason,
                bytes: i.bytes,
                outcome,
                error: *error,
                backup_location: None,
                row_snapshot: None,
                at,
            })
            .collect();
        let mut batch = db.audit_statements(&rows);
        let mut d = db.sql();
        d.push("DELETE FROM cleanup_audit WHERE ").in_keys("id", std::slice::from_ref(&id), "bigint");
        batch.push(d);
        db.execute_all(&batch).await?;
    }
    s.done += gone.len() as u64;
    s.not_done += there.len() as u64;
    for (ids, outcome, error) in [(&gone, "deleted", GONE), (&there, "skipped", THERE)] {
        for chunk in ids.chunks(crate::db::KEYS_PER_STATEMENT) {
            let mut u = db.sql();
            u.push("UPDATE cleanup_audit SET outcome = ").bind(outcome).push(", error = ").bind(error);
            u.push(" WHERE ").in_keys("id", chunk, "bigint");
            statements.push(u);
        }
    }
    // The run's totals, from what its audit now says.
    let mut t = db.sql();
    t.push("SELECT ").as_int("COALESCE(SUM(CASE WHEN outcome IN ('deleted', 'missing') THEN 1 ELSE 0 END), 0)");
    t.push(", ").as_int("COALESCE(SUM(CASE WHEN outcome = 'failed' THEN 1 ELSE 0 END), 0)");
    t.push(", ").as_int("COALESCE(SUM(CASE WHEN outcome = 'deleted' THEN bytes ELSE 0 END), 0)");
    t.push(" FROM cleanup_audit WHERE run_id = ").bind(run_id);
    db.execute_all(&statements).await?;
    let (deleted, failed, bytes) = db
        .read(&t, |r| Ok((r.int_req(0)?, r.int_req(1)?, r.int_req(2)?)))
        .await?
        .into_iter()
        .next()
        .unwrap_or_default();
    let mut m = db.sql();
    m.push("UPDATE cleanup_runs SET status = 'interrupted', finished_at = ").bind(Utc::now());
    m.push(", deleted = ").bind(deleted).push(", failed = ").bind(failed).push(", bytes_reclaimed = ").bind(bytes);
    m.push(" WHERE id = ").bind(run_id);
    db.execute(&m).await?;
    Ok(s)
}

/// Whether an intent's target is still there: `None` when it cannot be told (its root or
/// store is not part of this run, or the check failed).
async fn still_there(kind: &str, target: &str, res: &Resources) -> Option<bool> {
    if kind == "object" {
        let (store, key) = res.stores.values().find_map(|s| Some((s, s.key_of(target)?)))?;
        return match store.store.head(&parse_key(key).ok()?).await {
            Ok(_) => Some(true),
            Err(object_store::Error::NotFound { .. }) => Some(false),
            Err(_) => None,
        };
    }
    let (root, path) = target.split_once(':')?;
    let root = res.roots.get(root)?;
    root.stat(path.trim_end_matches('/')).ok().map(|e| e.is_some())
}
