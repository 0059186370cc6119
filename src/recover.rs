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

use crate::db::{Db, INTENT};
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
    q.push("SELECT ").as_text("id").push(", kind, target FROM cleanup_audit WHERE run_id = ").bind(run_id);
    q.push(format_args!(" AND outcome = '{INTENT}'"));
    let intents = db.read(&q, |r| Ok((r.text_req(0)?, r.text_req(1)?, r.text_req(2)?))).await?;
    let mut s = Settled { run_id: run_id.to_string(), ..Default::default() };
    let (mut gone, mut there) = (Vec::new(), Vec::new());
    for (id, kind, target) in intents {
        match still_there(&kind, &target, res).await {
            Some(false) => gone.push(id),
            Some(true) => there.push(id),
            None => s.unknown += 1,
        }
    }
    s.done = gone.len() as u64;
    s.not_done = there.len() as u64;
    let mut statements = Vec::new();
    for (ids, outcome, error) in [
        (&gone, "deleted", "the run was interrupted; found gone when the next run started"),
        (&there, "skipped", "the run was interrupted before deleting it; found still there"),
    ] {
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
