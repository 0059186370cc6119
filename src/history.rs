//! What the run records say about each command: its last run, its last success, what it
//! reclaimed lately; and the Prometheus text (`--metrics-file`) built from them, so that any
//! command's run writes a complete file and "no success in N hours" can be alerted on.

use crate::db::Db;
use anyhow::{anyhow, Result};
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

/// The commands that run policies, in the order status lists them.
pub const COMMANDS: [&str; 6] =
    ["cleanup-attachments", "prune-modules", "cleanup-ui-files", "cleanup-ops", "bulk-cloudcube", "worker-once"];

/// A command's last real run.
#[derive(Debug, Clone, Serialize)]
pub struct LastRun {
    pub run_id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub status: String,
    pub deleted: i64,
    pub failed: i64,
    pub bytes_reclaimed: i64,
}

/// One command's history.
#[derive(Debug, Clone, Serialize)]
pub struct History {
    pub command: String,
    pub last_run: Option<LastRun>,
    pub last_success: Option<DateTime<Utc>>,
    /// The first real run on record: what a schedule is measured from before any success.
    pub first_run: Option<DateTime<Utc>>,
    pub deleted_24h: i64,
    pub reclaimed_24h: i64,
    pub reclaimed_30d: i64,
    pub runs_total: i64,
    pub deleted_total: i64,
    pub reclaimed_total: i64,
}

/// Each command's history as of `now` (real runs only: dry runs write no records).
pub async fn read(db: &Db, now: DateTime<Utc>) -> Result<Vec<History>> {
    let mut out = Vec::new();
    for command in COMMANDS {
        let mut q = db.sql();
        q.push("SELECT id, started_at, finished_at, status, deleted, failed, bytes_reclaimed FROM cleanup_runs WHERE command = ");
        q.bind(command).push(" AND dry_run = ").bind(false).push(" ORDER BY started_at DESC LIMIT 1");
        let last_run = db
            .read(&q, |r| {
                Ok(LastRun {
                    run_id: r.text_req(0)?,
                    started_at: r.time_req(1)?,
                    finished_at: r.time(2)?,
                    status: r.text_req(3)?,
                    deleted: r.int_req(4)?,
                    failed: r.int_req(5)?,
                    bytes_reclaimed: r.int_req(6)?,
                })
            })
            .await?
            .into_iter()
            .next();
        let mut q = db.sql();
        q.push("SELECT max(finished_at) FROM cleanup_runs WHERE command = ").bind(command);
        q.push(" AND status = 'success' AND dry_run = ").bind(false);
        let last_success = db.read(&q, |r| r.time(0)).await?.into_iter().next().flatten();
        let mut q = db.sql();
        q.push("SELECT min(started_at) FROM cleanup_runs WHERE command = ").bind(command);
        q.push(" AND dry_run = ").bind(false);
        let first_run = db.read(&q, |r| r.time(0)).await?.into_iter().next().flatten();
        let sums = |since: Option<DateTime<Utc>>| {
            let mut q = db.sql();
            q.push("SELECT ")
                .as_int("COALESCE(SUM(deleted), 0)")
                .push(", ")
                .as_int("COALESCE(SUM(bytes_reclaimed), 0)");
            q.push(", count(*) FROM cleanup_runs WHERE command = ").bind(command).push(" AND dry_run = ").bind(false);
            if let Some(t) = since {
                q.push(" AND ").time_cmp("finished_at", ">=", t);
            }
            q
        };
        let read3 = |q| async move {
            db.read(&q, |r| Ok((r.int_req(0)?, r.int_req(1)?, r.int_req(2)?)))
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| anyhow!("no totals"))
        };
        let (deleted_24h, reclaimed_24h, _) = read3(sums(Some(now - Duration::hours(24)))).await?;
        let (_, reclaimed_30d, _) = read3(sums(Some(now - Duration::days(30)))).await?;
        let (deleted_total, reclaimed_total, runs_total) = read3(sums(None)).await?;
        out.push(History {
            command: command.to_string(),
            last_run,
            last_success,
            first_run,
            deleted_24h,
            reclaimed_24h,
            reclaimed_30d,
            runs_total,
            deleted_total,
            reclaimed_total,
        });
    }
    Ok(out)
}

/// The Prometheus text for `--metrics-file` (node_exporter's textfile collector): for every
/// command, `sweep_last_run_timestamp_seconds`, `sweep_last_success_timestamp_seconds`,
/// `sweep_last_run_failed_items`, `sweep_deleted_total`, `sweep_bytes_reclaimed_total`; and
/// seed 004's worker metrics (`cleanup_*`).
pub async fn metrics(db: &Db, now: DateTime<Utc>) -> Result<String> {
    use prometheus_client::encoding::text::encode;
    use prometheus_client::metrics::counter::ConstCounter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
    use prometheus_client::registry::Registry;
    use std::sync::atomic::AtomicU64;
    type Labels = Vec<(String, String)>;
    let history = read(db, now).await?;
    let mut reg = Registry::default();
    let gauge = || Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let (last_run, last_success, failed, deleted, bytes) = (gauge(), gauge(), gauge(), gauge(), gauge());
    for h in &history {
        let l = vec![("command".to_string(), h.command.clone())];
        if let Some(r) = &h.last_run {
            last_run.get_or_create(&l).set(r.finished_at.unwrap_or(r.started_at).timestamp() as f64);
            failed.get_or_create(&l).set(r.failed as f64);
        }
        if let Some(t) = h.last_success {
            last_success.get_or_create(&l).set(t.timestamp() as f64);
        }
        deleted.get_or_create(&l).set(h.deleted_total as f64);
        bytes.get_or_create(&l).set(h.reclaimed_total as f64);
    }
    reg.register("sweep_last_run_timestamp_seconds", "Unix time the command's last real run finished", last_run);
    reg.register(
        "sweep_last_success_timestamp_seconds",
        "Unix time of the command's last successful run",
        last_success,
    );
    reg.register("sweep_last_run_failed_items", "Items that failed in the command's last run", failed);
    reg.register("sweep_deleted_items", "Items the command deleted, all runs", deleted);
    reg.register("sweep_reclaimed_bytes", "Bytes the command reclaimed, all runs", bytes);

    // Seed 004 §7.2: counters as totals from the audit (they survive restarts and add up across
    // workers), and the last worker cycle.
    let total = |policy: &'static str, kind: &'static str| async move {
        let mut q = db.sql();
        q.push("SELECT count(*) FROM cleanup_audit WHERE policy LIKE ").bind(policy).push(" AND kind = ").bind(kind);
        q.push(" AND outcome IN ('deleted', 'missing')");
        db.fetch_one_int(&q).await.map(|n| n.max(0) as u64)
    };
    reg.register(
        "cleanup_previews_deleted",
        "Preview sessions whose bundles were deleted (all runs)",
        ConstCounter::new(total("worker-once/previews", "row").await?),
    );
    reg.register(
        "cleanup_tmp_dirs_deleted",
        "Abandoned tmp directories deleted (all runs)",
        ConstCounter::new(total("worker-once/tmp", "dir").await?),
    );
    reg.register(
        "cleanup_objects_deleted",
        "Preview objects deleted (all runs)",
        ConstCounter::new(total("worker-once/%", "object").await?),
    );
    if let Some(r) = history.iter().find(|h| h.command == "worker-once").and_then(|h| h.last_run.as_ref()) {
        let end = r.finished_at.unwrap_or(r.started_at);
        reg.register(
            "cleanup_last_run_timestamp",
            "Unix time the last cleanup cycle finished",
            ConstGauge::new(end.timestamp()),
        );
        reg.register(
            "cleanup_last_run_duration_seconds",
            "Duration of the last cleanup cycle",
            ConstGauge::new((end - r.started_at).num_milliseconds() as f64 / 1000.0),
        );
        reg.register(
            "cleanup_last_run_failed_items",
            "Items that failed in the last cleanup cycle",
            ConstGauge::new(r.failed),
        );
    }
    let mut text = String::new();
    encode(&mut text, &reg)?;
    Ok(text)
}

/// Write the metrics file atomically (a temporary file, then a rename).
pub async fn write_metrics(db: &Db, path: &std::path::Path, now: DateTime<Utc>) -> Result<()> {
    let text = metrics(db, now).await?;
    let tmp = path.with_extension("prom.tmp");
    std::fs::write(&tmp, text).map_err(|e| anyhow!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}
