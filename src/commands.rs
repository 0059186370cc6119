//! Dispatch, and the steps every policy command shares: preflight (migrations, lock), plan,
//! `--plan-out`, caps, execute, record the run, print the report, choose the exit code.

pub mod apply;
pub mod bulk_cloudcube;
pub mod cleanup_attachments;
pub mod cleanup_ops;
pub mod cleanup_ui_files;
pub mod demo;
pub mod migrate;
pub mod prune_modules;
pub mod published_modules;
pub mod restore;
pub mod worker_once;

use crate::cli::{Cli, Command, GlobalArgs};
use crate::config::{ProcessEnv, Settings};
use crate::db::{lock, Db, RunTotals};
use crate::executor::{self, Backup, ExecOptions, Resources};
use crate::exit_codes::{Exit, Fatal};
use crate::plan::Plan;
use crate::report::Report;
use crate::store::object::NamedStore;
use anyhow::{Context, Result};
use chrono::Utc;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What a command needs from the command line and the environment.
pub struct Ctx {
    pub global: GlobalArgs,
    pub settings: Settings,
    /// Where to copy files, trees and objects before deleting them (`--backup-dir`,
    /// `--backup-to`, or cleanup-ops' BACKUP_DIR).
    pub backup: Option<Backup>,
    /// Ask before a real run (unless `--yes`); refuse without a terminal.
    pub confirm: bool,
    /// The plan comes from a file (`apply`): re-check each item's fingerprint before deleting
    /// it. (A plan made by this run has nothing to re-check against.)
    pub reviewed_plan: bool,
}

impl Ctx {
    /// A plain environment variable (an empty value counts as unset), for the few settings that
    /// have no flag and no file key.
    pub fn env(&self, name: &str) -> Option<String> {
        crate::config::EnvSource::get(&ProcessEnv, name)
    }
}

/// Run the parsed command line.
pub async fn run(cli: Cli) -> Result<Exit> {
    let settings = Settings::load(&cli.global, &ProcessEnv, Utc::now())?;
    let backup = match (&cli.global.backup_dir, &cli.global.backup_to) {
        (Some(d), _) => Some(Backup::Dir { dir: backup_dir(d, settings.dry_run.value)?, per_root: true }),
        (None, Some(url)) => {
            // A local backup store is created like a backup directory (not by a dry run).
            if let (Some(dir), false) = (url.strip_prefix("file://"), settings.dry_run.value) {
                std::fs::create_dir_all(dir).with_context(|| format!("cannot create --backup-to {url}"))?;
            }
            let store = NamedStore::open(url, &settings.object_storage)
                .map_err(|e| Fatal::usage(format!("--backup-to: {e}")))?;
            Some(Backup::Store(store))
        }
        (None, None) => None,
    };
    let ctx = Ctx { global: cli.global, settings, backup, confirm: false, reviewed_plan: false };
    match cli.command {
        Command::Migrate => migrate::run(&ctx).await,
        Command::CleanupAttachments(a) => cleanup_attachments::run(&ctx, &a).await,
        Command::PruneModules(a) => prune_modules::run(&ctx, &a).await,
        Command::CleanupUiFiles(a) => cleanup_ui_files::run(&ctx, &a).await,
        Command::WorkerOnce(a) => worker_once::run(&ctx, &a).await,
        Command::BulkCloudcube(a) => bulk_cloudcube::run(&ctx, &a).await,
        Command::CleanupOps(a) => cleanup_ops::run(&ctx, &a).await,
        Command::Restore(a) => restore::run(&ctx, &a).await,
        Command::Apply(a) => apply::run(&ctx, &a).await,
        Command::Demo(a) => demo::run(&ctx, &a).await,
    }
}

/// A backup directory as an absolute path; created now unless this is a dry run (which
/// writes nothing, but records where a real run would copy to).
pub fn backup_dir(d: &std::path::Path, dry_run: bool) -> Result<std::path::PathBuf> {
    if dry_run {
        return Ok(std::path::absolute(d)?);
    }
    std::fs::create_dir_all(d).with_context(|| format!("cannot create the backup directory {}", d.display()))?;
    Ok(std::fs::canonicalize(d)?)
}

/// Print `--show-config` rows: the global settings, then the command's own.
pub fn print_config(ctx: &Ctx, command_rows: Vec<(String, String, String)>) {
    let mut rows = ctx.settings.show();
    rows.extend(command_rows);
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(10);
    let wv = rows.iter().map(|r| r.1.len()).max().unwrap_or(10).min(60);
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for (k, v, s) in rows {
        // A reader that stops early (`| head`) is not an error.
        if writeln!(out, "{k:<w$}  {v:<wv$}  ({s})").is_err() {
            return;
        }
    }
}

/// Connect to the configured database.
pub async fn connect(ctx: &Ctx) -> Result<Arc<Db>> {
    let url = ctx.settings.require_database()?;
    Ok(Arc::new(Db::connect(url, false).await?))
}

/// A real run needs sweep's tables: no deletion without a durable audit.
pub async fn require_audit_tables(db: &Db) -> Result<()> {
    if !db.sweep_tables_ready().await.context("cannot check for sweep's tables")? {
        return Err(Fatal::usage(format!(
            "sweep's tables (cleanup_runs, cleanup_audit) are missing or out of date in {}: run `sweep migrate` first; a real run needs its audit (a --dry-run works without them)",
            db.url
        ))
        .into());
    }
    Ok(())
}

/// A policy run that went to the end: its exit code, report, and the plan with outcomes.
pub struct Finished {
    pub exit: Exit,
    pub report: Report,
    pub plan: Plan,
}

/// The steps after a policy's plan: `--plan-out`, caps, run record, execute, report.
/// `gather` builds the plan; it runs under the run lock. `config_rows` are the command's own
/// settings (as `--show-config` prints them), recorded in a plan file.
pub async fn run_policy<F, Fut>(
    ctx: &Ctx,
    command: &str,
    config_rows: &[(String, String, String)],
    db: Option<Arc<Db>>,
    res: &Resources,
    gather: F,
) -> Result<Finished>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Plan>>,
{
    let dry_run = ctx.settings.dry_run.value;
    let run_id = uuid::Uuid::new_v4().to_string();
    if !dry_run {
        if let Some(db) = &db {
            require_audit_tables(db).await?;
        }
    }
    // Dry runs change nothing, not even a lock file.
    let held = match (&db, dry_run) {
        (Some(db), false) => Some(lock::acquire(db, command).await?),
        _ => None,
    };
    tracing::info!(target: "cleanup", "Starting {command} (dry_run={dry_run}, now={})", ctx.settings.now.value.to_rfc3339());

    let t0 = std::time::Instant::now();
    let mut plan = gather().await?;
    tracing::info!(
        target: "cleanup",
        "Plan: {} to delete ({} items), {} kept, {} scanned, built in {:.2} s",
        plan.units.len(),
        plan.item_count(),
        plan.kept.len(),
        plan.scanned,
        t0.elapsed().as_secs_f64()
    );
    if let Some(path) = &ctx.global.plan_out {
        apply::write_plan(path, &mut plan, ctx, config_rows, db.as_deref(), res).await?;
    }

    if ctx.confirm && !dry_run && !ctx.global.yes && !plan.units.is_empty() {
        confirm(&plan)?;
    }

    let audit = !dry_run && db.is_some();
    let started = Utc::now();
    if let Err(f) = executor::check_caps(
        &plan,
        ctx.settings.max_delete.as_ref().map(|s| s.value),
        ctx.settings.max_delete_percent.as_ref().map(|s| s.value),
    ) {
        if let (true, Some(db)) = (audit, &db) {
            db.insert_run(&run_id, command, dry_run, started).await?;
            let totals = RunTotals {
                status: "aborted".into(),
                candidates: plan.units.len() as i64,
                details: Some(serde_json::json!({ "message": f.message })),
                ..Default::default()
            };
            db.finish_run(&run_id, Utc::now(), &totals).await?;
        }
        return Err(f.into());
    }

    if audit {
        db.as_ref().expect("audit implies a database").insert_run(&run_id, command, dry_run, started).await?;
    }
    let cancel = Arc::new(AtomicBool::new(false));
    let c2 = cancel.clone();
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::warn!(target: "cleanup", "Ctrl-C: stopping after the current batch (press again to kill)");
            c2.store(true, Ordering::SeqCst);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    let opts = ExecOptions {
        dry_run,
        run_id: run_id.clone(),
        concurrency: ctx.settings.concurrency.value,
        progress_bar: std::io::stderr().is_terminal() && !ctx.global.json && ctx.global.quiet == 0,
        cancel,
        audit,
        backup: ctx.backup.clone(),
        grace_cutoff: Some(Utc::now() - chrono::Duration::minutes(ctx.settings.grace_minutes.value)),
        check_fingerprints: ctx.reviewed_plan,
    };
    let t1 = std::time::Instant::now();
    let result = executor::execute(&mut plan, res, &opts).await;
    ctrl_c.abort();
    tracing::info!(target: "cleanup", "Executed in {:.2} s", t1.elapsed().as_secs_f64());
    let report = result?;
    if audit {
        let db = db.as_ref().expect("audit implies a database");
        let mut t = totals(&report);
        if let Some(serde_json::Value::Object(d)) = &mut t.details {
            // What `restore` needs to put objects back: the stores and where backups went.
            d.insert("stores".into(), serde_json::to_value(apply::store_records(res))?);
            d.insert("backup".into(), serde_json::to_value(ctx.backup.as_ref().map(Backup::record))?);
        }
        db.finish_run(&run_id, report.finished_at, &t).await?;
    }
    if let Some(l) = held {
        l.release().await;
    }
    let exit = if report.totals.failed > 0 || report.interrupted { Exit::PartialFailure } else { Exit::Success };
    Ok(Finished { exit, report, plan })
}

/// Without a terminal a confirmation cannot be asked: refuse (exit 2) and say what to do.
pub fn require_terminal_or_yes(ctx: &Ctx, command: &str) -> Result<()> {
    if ctx.confirm && !ctx.settings.dry_run.value && !ctx.global.yes && !std::io::stdin().is_terminal() {
        return Err(Fatal::usage(format!(
            "{command} asks for confirmation before deleting, and there is no terminal to ask on: pass --yes, or use --type automatic (cron)"
        ))
        .into());
    }
    Ok(())
}

/// Show what the plan deletes and ask on the terminal.
fn confirm(plan: &Plan) -> Result<()> {
    use std::io::Write;
    let bytes: u64 = plan.units.iter().flat_map(|u| &u.items).filter_map(|i| i.bytes).sum();
    eprint!(
        "{}: delete {} items ({}), keep {}? [y/N] ",
        plan.command,
        plan.item_count(),
        crate::report::human_bytes(bytes),
        plan.kept.len() as u64 + plan.kept_unlisted.values().sum::<u64>()
    );
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES") {
        Ok(())
    } else {
        Err(Fatal::usage("not confirmed: nothing deleted").into())
    }
}

fn totals(r: &Report) -> RunTotals {
    RunTotals {
        status: r.status.clone(),
        candidates: r.totals.candidates as i64,
        deleted: (r.totals.deleted + r.totals.missing) as i64,
        failed: r.totals.failed as i64,
        retained: r.totals.retained as i64,
        bytes_reclaimed: r.totals.bytes_reclaimed as i64,
        details: Some(serde_json::Value::Object(r.fields.clone())),
    }
}

/// Print the report: JSON on stdout with `--json`, else the readable summary.
pub fn print_report(ctx: &Ctx, report: &Report, plan: &Plan) -> Result<()> {
    use std::io::Write;
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    let written = if ctx.global.json {
        serde_json::to_writer(&mut out, &crate::report::ReportDoc { report, plan })
            .map_err(std::io::Error::from)
            .and_then(|_| writeln!(out))
    } else {
        write!(out, "{}", report.to_text(plan, 20))
    };
    match written.and_then(|_| out.flush()) {
        // The run is done and audited; a reader that stopped early (`| head`) changes nothing.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}
