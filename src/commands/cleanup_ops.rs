//! `cleanup-ops` (seed 002): retention policies from the `cleanup_policies` table over the
//! pipeline's operation files, dbt logs, system logs and temp files under `OPS_DIR`, with
//! backups before deletion, run types, `--stats`, `--show-policies` and `--set-policy`.

use crate::cli::{CleanupOpsArgs, OpsRunType};
use crate::config::{DatabaseUrl, Key, ProcessEnv};
use crate::db::Db;
use crate::executor::Backup;
use crate::exit_codes::{Exit, Fatal};
use crate::ops_policies;
use crate::plan::Plan;
use crate::policy::cleanup_ops::{plan, Classifier, OpsFile, Policy, Rules, BACKUP_TASK, COMMAND, TYPES};
use crate::run::{require_terminal_or_yes, run_policy, Channel, Ctx, Finished, Ran};
use crate::store::local::LocalRoot;
use crate::store::Resources;
use anyhow::{anyhow, bail, Result};
use chrono::{DateTime, Utc};
use std::path::Path;
use std::time::SystemTime;

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

pub async fn run(ctx: &Ctx, a: &CleanupOpsArgs, chan: &Channel) -> Result<Ran> {
    let env = ProcessEnv;
    let l = ctx.settings.layers(&env);
    let raw = &ctx.settings.raw;
    let ops_dir = ctx.settings.ops_dir(a.ops_dir.clone())?.ok_or_else(|| {
        anyhow!("OPS_DIR is not set: pass --ops-dir, set OPS_DIR, or set [paths] ops_dir in the config file")
    })?;
    let backup_dir = ctx.settings.ops_backup_dir(&ops_dir.value)?;
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
        ctx.print_config(rows);
        return Ok(Ran::Done(Exit::Success));
    }
    let url = database(ctx, a)?;
    let db = std::sync::Arc::new(Db::connect(&url, false).await?);

    if a.show_policies {
        let policies = ops_policies::load(&db).await?;
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
        return Ok(Ran::Done(Exit::Success));
    }
    if let Some(t) = &a.set_policy {
        return set_policy(ctx, &db, a, t).await.map(Ran::Done);
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
        return stats(ctx, &db, &root, rules).await.map(Ran::Done);
    }

    let emergency = a.run_type == OpsRunType::Emergency;
    // A dry run creates nothing but still records where a real run would copy to (a plan
    // applied later makes the same backups).
    let backups =
        if emergency { None } else { Some(crate::run::backup_dir(&backup_dir.value, ctx.settings.dry_run.value)?) };
    if emergency {
        tracing::warn!(target: "cleanup", "EMERGENCY cleanup: NO BACKUPS will be made; deleted files cannot be restored");
        eprintln!("WARNING: emergency cleanup: no backups will be made; deleted files cannot be restored");
    }
    let mut rows = rows;
    if ctx.settings.database_url.is_none() {
        rows.push(("database.url".into(), url.to_string(), "--db-*".into()));
    }
    let mut res = Resources { db: Some(db.clone()), ..Default::default() };
    res.roots.insert("ops".into(), root.clone());
    // A BACKUP_DIR outside OPS_DIR is pruned too (seed 002 keeps backups 7 days wherever they are).
    let outside = match (&rules.backup_rel, LocalRoot::open(BACKUPS_ROOT, &backup_dir.value)) {
        (None, Ok(b)) => Some(b),
        _ => None,
    };
    if let Some(b) = &outside {
        res.roots.insert(BACKUPS_ROOT.into(), b.clone());
    }
    let mut spec = ctx.spec(COMMAND, &rows, Some(db.clone()), &res);
    // The global --backup-dir or --backup-to, if given, wins over BACKUP_DIR's seed layout.
    spec.backup = ctx.backup.clone().or(backups.clone().map(|dir| Backup::Dir { dir, per_root: false }));
    spec.confirm = a.run_type == OpsRunType::Manual;
    require_terminal_or_yes(ctx, &spec, "cleanup-ops --type manual")?;
    let policies = ops_policies::load(&db).await?;
    let Finished { exit, mut report, plan } = run_policy(ctx, spec, chan, || async {
        let mut p = plan_now(&root, outside.as_ref(), policies, rules).await?;
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
        let c = report.by_task.get(*t).cloned().unwrap_or_default();
        per.insert((*t).into(), serde_json::json!({"files": c.items_done, "bytes": c.bytes_done()}));
    }
    report.fields.insert("policies".into(), per.into());
    db.close().await;
    Ok(Ran::Run(Box::new(Finished { exit, report, plan })))
}

/// Walk OPS_DIR (never following links) and ask the policy: the facts stream from the walk,
/// and an operation file's text is read only when the policy needs it.
/// A backup directory outside OPS_DIR is walked too, as the root `backups`.
async fn plan_now(root: &LocalRoot, backups: Option<&LocalRoot>, policies: Vec<Policy>, rules: Rules) -> Result<Plan> {
    let c = Classifier::new(&policies).map_err(|e| anyhow!(e))?;
    let dir = root.path().to_path_buf();
    let backups = backups.map(|b| b.path().to_path_buf());
    Ok(tokio::task::spawn_blocking(move || {
        let mut p = plan(walk(&dir, Some(&c)), &policies, &c, &rules);
        if let Some(b) = &backups {
            crate::policy::cleanup_ops::old_backups(&mut p, BACKUPS_ROOT, walk(b, None), &rules);
        }
        p
    })
    .await?)
}

/// The root name of a BACKUP_DIR outside OPS_DIR.
const BACKUPS_ROOT: &str = "backups";

fn walk<'a>(root: &'a Path, c: Option<&'a Classifier>) -> impl Iterator<Item = OpsFile> + 'a {
    walkdir::WalkDir::new(root).follow_links(false).sort_by_file_name().into_iter().filter_map(move |e| {
        let e = match e {
            Ok(e) => e,
            Err(err) => {
                tracing::warn!(target: "cleanup", "cannot read part of {}: {err}", root.display());
                return None;
            }
        };
        if e.file_type().is_dir() {
            return None;
        }
        let rel = e.path().strip_prefix(root).ok()?;
        let rel: Result<String, String> = Ok(crate::names::encode_rel(rel));
        let meta = e.metadata().ok()?;
        let modified = DateTime::<Utc>::from(meta.modified().unwrap_or(SystemTime::UNIX_EPOCH));
        let bytes = if meta.is_file() { meta.len() } else { 0 };
        let text = match &rel {
            Ok(r) if c.is_some_and(|c| c.wants_text(r)) => {
                Some(std::fs::read_to_string(e.path()).map_err(|e| e.to_string()))
            }
            _ => None,
        };
        Some(OpsFile { rel, bytes, modified, text })
    })
}

async fn set_policy(ctx: &Ctx, db: &Db, a: &CleanupOpsArgs, data_type: &str) -> Result<Exit> {
    if a.retention_days.is_none() && !a.enable && !a.disable {
        return Err(Fatal::usage("--set-policy needs --retention-days N, --enable or --disable").into());
    }
    let enabled = if a.enable {
        Some(true)
    } else if a.disable {
        Some(false)
    } else {
        None
    };
    let change = ops_policies::Change { data_type: data_type.to_string(), retention_days: a.retention_days, enabled };
    let who = ctx.env("USER").or_else(|| ctx.env("USERNAME")).unwrap_or_else(|| "unknown".into());
    let dry_run = ctx.settings.dry_run.value;
    let done = ops_policies::update(db, &change, &who, dry_run).await.map_err(|e| {
        if crate::exit_codes::exit_for(&e) == Exit::Usage {
            Fatal::usage(format!("--set-policy {e:#}")).into()
        } else {
            e
        }
    })?;
    if dry_run {
        println!("would set {data_type}: {} (dry run: nothing changed)", done.change);
    } else {
        println!("{data_type}: {}", done.change);
    }
    Ok(Exit::Success)
}

/// History from the audit, and what is eligible now.
async fn stats(ctx: &Ctx, db: &Db, root: &LocalRoot, rules: Rules) -> Result<Exit> {
    if !db.sweep_tables_ready().await? {
        bail!("sweep's tables are missing: run `sweep migrate` first");
    }
    let mut q = db.sql();
    q.push("SELECT ")
        .as_text("started_at")
        .push(", status, dry_run, deleted, failed, bytes_reclaimed FROM cleanup_runs ");
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
    let policies = ops_policies::load(db).await?;
    let eligible = plan_now(root, None, policies, rules).await?;
    let mut now_by: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    eligible.units.each(|u| {
        let e = now_by.entry(u.task.clone().unwrap_or_default()).or_default();
        e.0 += 1;
        e.1 += u.items.iter().filter_map(|i| i.bytes).sum::<u64>();
    })?;
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
