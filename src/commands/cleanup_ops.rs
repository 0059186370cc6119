//! `cleanup-ops` (seed 002): retention policies from the `cleanup_policies` table over the
//! pipeline's operation files, dbt logs, system logs and temp files under `OPS_DIR`, with
//! backups before deletion, run types, `--stats`, `--show-policies` and `--set-policy`.

use super::{print_config, print_report, require_terminal_or_yes, run_policy, Ctx, Finished};
use crate::cli::{CleanupOpsArgs, OpsRunType};
use crate::config::{DatabaseUrl, Key, ProcessEnv, Source, Sourced};
use crate::db::{AuditRow, Db, RunTotals};
use crate::executor::{Backup, Resources};
use crate::exit_codes::{Exit, Fatal};
use crate::plan::{Item, Kept, Kind, Op, Plan, Unit};
use crate::report::Outcome;
use crate::store::is_protected;
use crate::store::local::LocalRoot;
use anyhow::{anyhow, bail, Result};
use chrono::{DateTime, Duration, Utc};
use std::path::PathBuf;
use std::time::SystemTime;

pub const COMMAND: &str = "cleanup-ops";
/// Seed 002's data types, in the order files are matched (operations first, then by pattern).
pub const TYPES: [&str; 6] =
    ["pipeline_operations", "failed_operations", "completed_operations", "dbt_logs", "system_logs", "temp_files"];
const BACKUP_TASK: &str = "backups";

/// One row of `cleanup_policies`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Policy {
    pub data_type: String,
    pub retention_days: i64,
    pub enabled: bool,
    pub pattern: String,
    pub description: String,
}

async fn load_policies(db: &Db) -> Result<Vec<Policy>> {
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

/// How an operation file's JSON `status` classifies it.
pub fn classify_operation(text: Result<&str, String>) -> (&'static str, Option<String>) {
    let text = match text {
        Ok(t) => t,
        Err(e) => return ("pipeline_operations", Some(format!("unreadable ({e}): treated as a pipeline operation"))),
    };
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => match v.get("status").and_then(|s| s.as_str()).map(|s| s.to_ascii_lowercase()) {
            Some(s) if s == "failed" || s == "error" => ("failed_operations", None),
            Some(s) if s == "completed" || s == "succeeded" || s == "success" => ("completed_operations", None),
            _ => ("pipeline_operations", None),
        },
        Err(e) => ("pipeline_operations", Some(format!("not valid JSON ({e}): treated as a pipeline operation"))),
    }
}

/// Glob matchers for the policies' patterns (relative to OPS_DIR; `*` stops at `/`).
struct Matchers {
    operations: globset::GlobMatcher,
    others: Vec<(String, globset::GlobMatcher)>,
}

impl Matchers {
    fn new(policies: &[Policy]) -> Result<Matchers> {
        let glob = |p: &Policy| {
            globset::GlobBuilder::new(&p.pattern).literal_separator(true).build().map(|g| g.compile_matcher()).map_err(
                |e| anyhow!("cleanup_policies.pattern {:?} of {} is not a valid glob: {e}", p.pattern, p.data_type),
            )
        };
        let find = |t: &str| policies.iter().find(|p| p.data_type == t);
        let ops = find("pipeline_operations")
            .ok_or_else(|| anyhow!("cleanup_policies has no pipeline_operations row: run `sweep migrate`"))?;
        let mut others = Vec::new();
        for t in ["dbt_logs", "system_logs", "temp_files"] {
            if let Some(p) = find(t) {
                others.push((t.to_string(), glob(p)?));
            }
        }
        Ok(Matchers { operations: glob(ops)?, others })
    }
}

/// The fixed inputs of the decision.
pub struct Rules {
    pub now: DateTime<Utc>,
    pub grace_minutes: i64,
    pub protected: Vec<String>,
    /// The backup directory relative to OPS_DIR, if it is inside it.
    pub backup_rel: Option<String>,
    pub backup_retention_days: i64,
}

/// Walk OPS_DIR and decide each file by its policy.
fn plan(root: &LocalRoot, policies: &[Policy], rules: &Rules) -> Result<Plan> {
    let m = Matchers::new(policies)?;
    let mut p = Plan::new(COMMAND, rules.now);
    p.batch_size = 200;
    let grace = rules.now - Duration::minutes(rules.grace_minutes);
    let policy = |t: &str| policies.iter().find(|p| p.data_type == t);
    let mut unmanaged = 0u64;
    for e in
        walkdir::WalkDir::new(root.path()).follow_links(false).sort_by_file_name().into_iter().filter_map(|e| e.ok())
    {
        if e.file_type().is_dir() {
            continue;
        }
        let Ok(rel) = e.path().strip_prefix(root.path()) else { continue };
        let Some(rel) = rel.to_str().map(|s| s.replace('\\', "/")) else { continue };
        let Ok(meta) = e.metadata() else { continue };
        let modified = DateTime::<Utc>::from(meta.modified().unwrap_or(SystemTime::UNIX_EPOCH));
        let bytes = if meta.is_file() { meta.len() } else { 0 };
        let target = format!("ops:{rel}");
        // Old backups are pruned; nothing else in the backup directory is a candidate.
        if let Some(b) = &rules.backup_rel {
            if rel.starts_with(&format!("{b}/")) {
                let cutoff = rules.now - Duration::days(rules.backup_retention_days);
                if modified <= cutoff {
                    let mut u = Unit::new(vec![Item::new(
                        Op::DeleteFile { root: "ops".into(), path: rel },
                        target,
                        format!("backup older than {} days", rules.backup_retention_days),
                        Some(bytes),
                    )]);
                    u.task = Some(BACKUP_TASK.into());
                    p.units.push(u);
                }
                continue;
            }
        }
        p.scanned += 1;
        let (data_type, note) = if m.operations.is_match(&rel) {
            let text = std::fs::read_to_string(e.path()).map_err(|e| e.to_string());
            classify_operation(text.as_deref().map_err(|e| e.clone()))
        } else if let Some((t, _)) = m.others.iter().find(|(_, g)| g.is_match(&rel)) {
            (TYPES.iter().copied().find(|x| x == t).unwrap_or("temp_files"), None)
        } else {
            unmanaged += 1;
            continue;
        };
        if let Some(n) = &note {
            tracing::warn!(target: "cleanup", "{rel}: {n}");
        }
        let Some(pol) = policy(data_type) else {
            p.kept.push(Kept { kind: Kind::File, target, reason: format!("no {data_type} row in cleanup_policies") });
            continue;
        };
        let cutoff = rules.now - Duration::days(pol.retention_days);
        let why_kept = if !pol.enabled {
            Some(format!("{data_type} policy is disabled"))
        } else if modified > cutoff {
            Some(format!("{data_type}: modified {} (kept {} days)", modified.to_rfc3339(), pol.retention_days))
        } else if modified > grace {
            Some("modified within the grace period".into())
        } else if is_protected(&rel, &rules.protected) {
            Some("under a protected prefix".into())
        } else {
            None
        };
        match why_kept {
            Some(reason) => p.kept.push(Kept { kind: Kind::File, target, reason }),
            None => {
                let mut reason =
                    format!("{data_type}: modified {} (older than {} days)", modified.to_rfc3339(), pol.retention_days);
                if let Some(n) = note {
                    reason.push_str(&format!("; {n}"));
                }
                let mut u = Unit::new(vec![Item::new(
                    Op::DeleteFile { root: "ops".into(), path: rel },
                    target,
                    reason,
                    Some(bytes),
                )]);
                u.task = Some(data_type.to_string());
                p.units.push(u);
            }
        }
    }
    p.fields.insert("unmanaged_files".into(), unmanaged.into());
    Ok(p)
}

/// `OPS_DIR`: `--ops-dir` > `OPS_DIR` > `[paths] ops_dir`.
pub fn ops_dir(ctx: &Ctx, flag: Option<PathBuf>) -> Result<Option<Sourced<PathBuf>>> {
    let env = ProcessEnv;
    ctx.settings.layers(&env).pick_opt(
        &Key { flag: Some("--ops-dir"), env: Some("OPS_DIR"), file: "paths.ops_dir" },
        flag,
        ctx.settings.raw.paths.ops_dir.clone(),
        "a directory",
        &|_: &PathBuf| true,
    )
}

/// `DATABASE_URL`, or one built from `--db-*` (seed 002's defaults for the parts not given).
fn database(ctx: &Ctx, a: &CleanupOpsArgs) -> Result<DatabaseUrl> {
    if let Some(u) = &ctx.settings.database_url {
        return Ok(u.value.clone());
    }
    let given = a.db_host.is_some()
        || a.db_port.is_some()
        || a.db_name.is_some()
        || a.db_user.is_some()
        || a.db_password.is_some();
    if !given {
        bail!("DATABASE_URL is not set: pass --database-url, set DATABASE_URL, or give --db-host/--db-port/--db-name/--db-user/--db-password")
    }
    let mut u = url::Url::parse("postgres://localhost").expect("a valid base URL");
    u.set_host(Some(a.db_host.as_deref().unwrap_or("localhost")))
        .map_err(|e| anyhow!("--db-host is not valid: {e}"))?;
    let _ = u.set_port(Some(a.db_port.unwrap_or(5433)));
    let _ = u.set_username(a.db_user.as_deref().unwrap_or("dagster"));
    let password = a.db_password.clone().or_else(|| ctx.env("PGPASSWORD"));
    let _ = u.set_password(password.as_deref());
    u.set_path(a.db_name.as_deref().unwrap_or("dagster"));
    Ok(DatabaseUrl::new(u.to_string()))
}

pub async fn run(ctx: &Ctx, a: &CleanupOpsArgs) -> Result<Exit> {
    let env = ProcessEnv;
    let l = ctx.settings.layers(&env);
    let raw = &ctx.settings.raw;
    let ops_dir = ops_dir(ctx, a.ops_dir.clone())?.ok_or_else(|| {
        anyhow!("OPS_DIR is not set: pass --ops-dir, set OPS_DIR, or set [paths] ops_dir in the config file")
    })?;
    let backup_dir = l
        .pick_opt(
            &Key { flag: None, env: Some("BACKUP_DIR"), file: "ops.backup_dir" },
            None,
            raw.ops.backup_dir.clone(),
            "a directory",
            &|_: &PathBuf| true,
        )?
        .unwrap_or_else(|| Sourced::new(ops_dir.value.join("cleanup_backups"), Source::Default));
    let backup_days = l.pick(
        &Key { flag: None, env: None, file: "ops.backup_retention_days" },
        None,
        raw.ops.backup_retention_days,
        7,
        "days, 0 or more",
        |d| *d >= 0,
    )?;
    let rows: Vec<(String, String, String)> = vec![
        ("ops.ops_dir".into(), ops_dir.value.display().to_string(), ops_dir.source.to_string()),
        ("ops.backup_dir".into(), backup_dir.value.display().to_string(), backup_dir.source.to_string()),
        ("ops.backup_retention_days".into(), backup_days.value.to_string(), backup_days.source.to_string()),
        ("ops.type".into(), format!("{:?}", a.run_type).to_lowercase(), "--type".into()),
    ];
    if ctx.global.show_config {
        print_config(ctx, rows);
        return Ok(Exit::Success);
    }
    let url = database(ctx, a)?;
    let db = std::sync::Arc::new(Db::connect(&url, false).await?);

    if a.show_policies {
        let policies = load_policies(&db).await?;
        if ctx.global.json {
            println!("{}", serde_json::to_string(&policies)?);
        } else {
            println!("{:<22} {:>9}  {:<8} {:<20} description", "data_type", "retention", "enabled", "pattern");
            for p in &policies {
                println!(
                    "{:<22} {:>7} d  {:<8} {:<20} {}",
                    p.data_type, p.retention_days, p.enabled, p.pattern, p.description
                );
            }
        }
        return Ok(Exit::Success);
    }
    if let Some(t) = &a.set_policy {
        return set_policy(ctx, &db, a, t).await;
    }

    let root = LocalRoot::open("ops", &ops_dir.value).map_err(|e| anyhow!("OPS_DIR: {e}"))?;
    let backup_rel = root.relativize(&backup_dir.value.to_string_lossy()).ok().or_else(|| {
        // A relative BACKUP_DIR is relative to the working directory, as the shell would read it.
        std::fs::canonicalize(&backup_dir.value).ok().and_then(|c| root.relativize(&c.to_string_lossy()).ok())
    });
    let rules = Rules {
        now: ctx.settings.now.value,
        grace_minutes: ctx.settings.grace_minutes.value,
        protected: ctx.settings.protected_prefixes.value.clone(),
        backup_rel,
        backup_retention_days: backup_days.value,
    };
    if a.stats {
        return stats(ctx, &db, &root, &rules).await;
    }

    let emergency = a.run_type == OpsRunType::Emergency;
    // A dry run creates nothing but still records where a real run would copy to (a plan
    // applied later makes the same backups).
    let backups =
        if emergency { None } else { Some(super::backup_dir(&backup_dir.value, ctx.settings.dry_run.value)?) };
    if emergency {
        tracing::warn!(target: "cleanup", "EMERGENCY cleanup: NO BACKUPS will be made; deleted files cannot be restored");
        eprintln!("WARNING: emergency cleanup: no backups will be made; deleted files cannot be restored");
    }
    let ctx2 = Ctx {
        global: ctx.global.clone(),
        settings: settings_with_db(ctx, &url),
        // The global --backup-dir or --backup-to, if given, wins over BACKUP_DIR's seed layout.
        backup: ctx.backup.clone().or(backups.clone().map(|dir| Backup::Dir { dir, per_root: false })),
        confirm: a.run_type == OpsRunType::Manual,
        reviewed_plan: false,
    };
    require_terminal_or_yes(&ctx2, "cleanup-ops --type manual")?;
    let mut res = Resources { db: Some(db.clone()), ..Default::default() };
    res.roots.insert("ops".into(), root.clone());
    let policies = load_policies(&db).await?;
    let Finished { exit, mut report, plan } = run_policy(&ctx2, COMMAND, &rows, Some(db.clone()), &res, || async {
        let root = root.clone();
        let mut p = tokio::task::spawn_blocking(move || plan(&root, &policies, &rules)).await??;
        p.fields.insert("type".into(), format!("{:?}", a.run_type).to_lowercase().into());
        p.fields.insert(
            "backup_dir".into(),
            backups.as_ref().map(|b| b.display().to_string()).unwrap_or_else(|| "(none)".into()).into(),
        );
        Ok(p)
    })
    .await?;
    let mut per = serde_json::Map::new();
    for t in TYPES.iter().chain([BACKUP_TASK].iter()) {
        let done: Vec<&Item> = plan
            .units
            .iter()
            .filter(|u| u.task.as_deref() == Some(t))
            .flat_map(|u| &u.items)
            .filter(|i| {
                matches!(i.outcome, Some(Outcome::Deleted) | Some(Outcome::WouldDelete) | Some(Outcome::Missing))
            })
            .collect();
        per.insert(
            (*t).into(),
            serde_json::json!({"files": done.len(), "bytes": done.iter().filter_map(|i| i.bytes).sum::<u64>()}),
        );
    }
    report.fields.insert("policies".into(), per.into());
    print_report(&ctx2, &report, &plan)?;
    db.close().await;
    Ok(exit)
}

/// Settings with the database this command resolved (from `--db-*`) filled in.
fn settings_with_db(ctx: &Ctx, url: &DatabaseUrl) -> crate::config::Settings {
    let mut s = ctx.settings.clone();
    if s.database_url.is_none() {
        s.database_url = Some(Sourced::new(url.clone(), Source::Flag("--db-*")));
    }
    s
}

async fn set_policy(ctx: &Ctx, db: &Db, a: &CleanupOpsArgs, data_type: &str) -> Result<Exit> {
    let policies = load_policies(db).await?;
    let Some(old) = policies.iter().find(|p| p.data_type == data_type) else {
        return Err(Fatal::usage(format!(
            "--set-policy {data_type:?}: no such policy; choose from {}",
            policies.iter().map(|p| p.data_type.as_str()).collect::<Vec<_>>().join(", ")
        ))
        .into());
    };
    if a.retention_days.is_none() && !a.enable && !a.disable {
        return Err(Fatal::usage("--set-policy needs --retention-days N, --enable or --disable").into());
    }
    let days = a.retention_days.unwrap_or(old.retention_days);
    if days < 0 {
        return Err(Fatal::usage(format!("--retention-days {days}: expected 0 or more days")).into());
    }
    let enabled = if a.enable {
        true
    } else if a.disable {
        false
    } else {
        old.enabled
    };
    let who = ctx.env("USER").or_else(|| ctx.env("USERNAME")).unwrap_or_else(|| "unknown".into());
    let change =
        format!("retention_days {} -> {days}, enabled {} -> {enabled}, by {who}", old.retention_days, old.enabled);
    if ctx.settings.dry_run.value {
        println!("would set {data_type}: {change} (dry run: nothing changed)");
        return Ok(Exit::Success);
    }
    super::require_audit_tables(db).await?;
    let now = Utc::now();
    let mut q = db.sql();
    q.push("UPDATE cleanup_policies SET retention_days = ").bind(days).push(", enabled = ").bind(enabled);
    q.push(", updated_at = ").bind(now).push(" WHERE data_type = ").bind(data_type);
    db.execute(&q).await?;
    let run_id = uuid::Uuid::new_v4().to_string();
    db.insert_run(&run_id, "cleanup-ops --set-policy", false, now).await?;
    let target = format!("cleanup_policies data_type={data_type}");
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
    println!("{data_type}: {change}");
    Ok(Exit::Success)
}

/// History from the audit, and what is eligible now.
async fn stats(ctx: &Ctx, db: &Db, root: &LocalRoot, rules: &Rules) -> Result<Exit> {
    if !db.sweep_tables_ready().await? {
        bail!("sweep's tables are missing: run `sweep migrate` first");
    }
    let mut q = db.sql();
    q.push("SELECT ").as_text("started_at").push(", status, dry_run, deleted, failed, bytes_reclaimed FROM cleanup_runs ");
    q.push("WHERE command = 'cleanup-ops' ORDER BY started_at DESC LIMIT 10");
    let runs = db
        .read(&q, |r| {
            let dry = if r.flag(2)?.unwrap_or(false) { "true" } else { "false" };
            Ok((r.text_req(0)?, r.text_req(1)?, dry.to_string(), r.int_req(3)?, r.int_req(4)?, r.int_req(5)?))
        })
        .await?;
    let mut q = db.sql();
    q.push("SELECT policy, count(*), ").as_int("COALESCE(sum(bytes), 0)");
    q.push(" FROM cleanup_audit WHERE policy LIKE 'cleanup-ops/%' AND outcome IN ('deleted', 'missing') GROUP BY policy ORDER BY policy");
    let per = db.read(&q, |r| Ok((r.text_req(0)?, r.int_req(1)?, r.int_req(2)?))).await?;
    let policies = load_policies(db).await?;
    let root2 = root.clone();
    let r2 = Rules {
        now: rules.now,
        grace_minutes: rules.grace_minutes,
        protected: rules.protected.clone(),
        backup_rel: rules.backup_rel.clone(),
        backup_retention_days: rules.backup_retention_days,
    };
    let eligible = tokio::task::spawn_blocking(move || plan(&root2, &policies, &r2)).await??;
    let mut now_by: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for u in &eligible.units {
        let e = now_by.entry(u.task.clone().unwrap_or_default()).or_default();
        e.0 += 1;
        e.1 += u.items.iter().filter_map(|i| i.bytes).sum::<u64>();
    }
    if ctx.global.json {
        let doc = serde_json::json!({
            "last_runs": runs.iter().map(|r| serde_json::json!({"started_at": r.0, "status": r.1, "dry_run": r.2, "deleted": r.3, "failed": r.4, "bytes_reclaimed": r.5})).collect::<Vec<_>>(),
            "deleted_by_policy": per.iter().map(|(p, n, b)| serde_json::json!({"policy": p, "files": n, "bytes": b})).collect::<Vec<_>>(),
            "eligible_now": now_by.iter().map(|(t, (n, b))| serde_json::json!({"policy": t, "files": n, "bytes": b})).collect::<Vec<_>>(),
        });
        println!("{doc}");
        return Ok(Exit::Success);
    }
    println!("Last cleanup-ops runs:");
    for r in &runs {
        println!(
            "  {}  {:<8} deleted {:>6}  failed {:>4}  freed {}",
            r.0,
            r.1,
            r.3,
            r.4,
            crate::report::human_bytes(r.5 as u64)
        );
    }
    println!("\nDeleted so far, by policy:");
    for (p, n, b) in &per {
        println!("  {p:<40} {n:>8} files  {}", crate::report::human_bytes(*b as u64));
    }
    println!("\nEligible now:");
    for (t, (n, b)) in &now_by {
        println!("  {t:<40} {n:>8} files  {}", crate::report::human_bytes(*b));
    }
    Ok(Exit::Success)
}
