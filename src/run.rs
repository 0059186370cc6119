//! The run API: what every run of a policy command goes through, whoever starts it (the CLI,
//! `demo`, and the coming `serve`).
//!
//! A caller builds a [`Ctx`] once (global options, validated settings, backups) and starts a
//! typed request with `commands::start`, which returns a [`RunHandle`]: a stream of
//! [`Event`]s, a cancel that stops the run between batches, and the final report and plan.
//! Inside, each command gathers its facts, asks its pure policy for a plan, and hands that
//! plan to [`run_policy`]: the run lock, `--plan-out`, caps, the run record, the one
//! executor, the audit.

use crate::cli::GlobalArgs;
use crate::config::{ProcessEnv, Settings};
use crate::db::{lock, Db, RunTotals};
use crate::event::{Event, Events};
use crate::executor::{self, Backup, ExecOptions};
use crate::exit_codes::{Exit, Fatal};
use crate::notify::{Notifier, Summary};
use crate::plan::Plan;
use crate::planfile;
use crate::report::Report;
use crate::schedule::Schedule;
use crate::store::object::NamedStore;
use crate::store::Resources;
use anyhow::{Context, Result};
use chrono::Utc;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What every run needs from the command line and the environment: built once per run.
pub struct Ctx {
    pub global: GlobalArgs,
    pub settings: Settings,
    /// Where to copy files, trees and objects before deleting them (`--backup-dir`,
    /// `--backup-to`).
    pub backup: Option<Backup>,
    /// Who to tell about runs (`[[notify]]`, `SWEEP_NOTIFY_URL`, `SWEEP_HEALTHCHECKS_URL`).
    pub notifier: Notifier,
    /// `[[schedule]]` entries, checked (command, arguments, cron, time zone).
    pub schedules: Vec<Schedule>,
    /// Who or what started the run (`serve`: the token's name; a schedule: its entry and
    /// slot), recorded in the run's `details.origin`.
    pub origin: Option<serde_json::Value>,
}

impl Ctx {
    /// Layer and validate the settings (flag > env > file > default) and open the backup
    /// target.
    pub fn new(global: GlobalArgs) -> Result<Ctx> {
        let settings = Settings::load(&global, &ProcessEnv, Utc::now())?;
        let backup = match (&global.backup_dir, &global.backup_to) {
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
        let notifier = Notifier::load(&settings.raw.notify, &ProcessEnv, &settings.file_name)?;
        let schedules = Schedule::load(
            &settings.raw.schedule,
            &crate::history::COMMANDS,
            &crate::cli::check_command_args,
            &settings.file_name,
            settings.now.value,
        )
        .map_err(|e| Fatal::usage(format!("{e:#}")))?;
        Ok(Ctx { global, settings, backup, notifier, schedules, origin: None })
    }

    /// The settings for a run that a server starts on its own or for a caller (`serve`, a
    /// schedule): the server's options, a dry run if asked (or if the server runs dry), the
    /// real clock, no terminal output, no prompt (the caller confirmed), no plan file unless
    /// `plan_out`; `origin` says who asked.
    pub fn for_server(
        &self,
        dry_run: bool,
        plan_out: Option<std::path::PathBuf>,
        origin: serde_json::Value,
    ) -> Result<Ctx> {
        let mut global = self.global.clone();
        global.dry_run |= dry_run;
        global.now = None;
        global.json = true;
        global.yes = true;
        global.show_config = false;
        global.plan_out = plan_out;
        let mut ctx = Ctx::new(global)?;
        ctx.origin = Some(origin);
        Ok(ctx)
    }

    /// A plain environment variable (an empty value counts as unset), for the few settings that
    /// have no flag and no file key.
    pub fn env(&self, name: &str) -> Option<String> {
        crate::config::EnvSource::get(&ProcessEnv, name)
    }

    /// Print `--show-config` rows: the global settings, then the command's own.
    pub fn print_config(&self, command_rows: Vec<(String, String, String)>) {
        let mut rows = self.settings.show();
        for (i, n) in self.notifier.describe().into_iter().enumerate() {
            rows.push((format!("notify[{i}]"), n, "[[notify]] / SWEEP_NOTIFY_URL / SWEEP_HEALTHCHECKS_URL".into()));
        }
        for s in &self.schedules {
            let what = format!(
                "{} {}{} at \"{}\" ({}){}",
                s.command,
                s.args.join(" "),
                if s.dry_run { " (dry run)" } else { "" },
                s.expression,
                s.tz,
                if s.catch_up { ", catch-up" } else { "" }
            );
            rows.push((format!("schedule[{}]", s.name), what, "[[schedule]]".into()));
        }
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
    pub async fn connect(&self) -> Result<Arc<Db>> {
        let url = self.settings.require_database()?;
        Ok(Arc::new(Db::connect(url, false).await?))
    }

    /// This run's settings for [`run_policy`], from the global ones; a command changes what
    /// differs (cleanup-ops' backups, worker-once's CLEANUP_ENABLED, apply's re-checks).
    pub fn spec<'a>(
        &self,
        command: &'a str,
        config_rows: &'a [(String, String, String)],
        db: Option<Arc<Db>>,
        res: &'a Resources,
    ) -> RunSpec<'a> {
        RunSpec {
            command,
            config_rows,
            db,
            res,
            dry_run: self.settings.dry_run.value,
            backup: self.backup.clone(),
            confirm: false,
            reviewed_plan: false,
        }
    }
}

/// One run's settings beyond the global ones.
pub struct RunSpec<'a> {
    pub command: &'a str,
    /// The command's own settings (as `--show-config` prints them), recorded in a plan file.
    pub config_rows: &'a [(String, String, String)],
    pub db: Option<Arc<Db>>,
    /// The roots and stores the plan's items may name.
    pub res: &'a Resources,
    pub dry_run: bool,
    pub backup: Option<Backup>,
    /// Ask before a real run (unless `--yes`); refuse without a terminal.
    pub confirm: bool,
    /// The plan comes from a file (`apply`): re-check each item's fingerprint before deleting
    /// it. (A plan made by this run has nothing to re-check against.)
    pub reviewed_plan: bool,
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

/// What a started command ended with: a run (with its report), or a command mode that prints
/// its own answer (`--show-config`, `cleanup-ops --stats`, …).
pub enum Ran {
    Run(Box<Finished>),
    Done(Exit),
}

/// The run's side of a [`RunHandle`]: where it sends events, and whether it was cancelled.
#[derive(Clone)]
pub struct Channel {
    pub events: Events,
    pub cancel: Arc<AtomicBool>,
    /// The run's id, known before it starts (for a caller that must name a run that never got
    /// going: a failure notification).
    pub run_id: String,
}

impl Channel {
    /// A channel nobody watches (a run inside another command, tests).
    pub fn unwatched() -> Channel {
        Channel { events: Events::none(), cancel: Arc::new(AtomicBool::new(false)), run_id: new_run_id() }
    }
}

/// A new run id (a UUID).
pub fn new_run_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A started run: watch its events, cancel it, wait for its end.
pub struct RunHandle {
    events: Option<tokio::sync::broadcast::Receiver<Event>>,
    sender: crate::event::WeakEvents,
    cancel: Arc<AtomicBool>,
    run_id: String,
    task: tokio::task::JoinHandle<Result<Ran>>,
}

impl RunHandle {
    /// Start `run` with a channel of `capacity` events. The run gets a thread of its own
    /// (from the runtime's blocking pool) that drives it on the runtime: its future need not
    /// be `Send`, and a long plan never starves the caller's tasks.
    pub fn spawn<F, Fut>(capacity: usize, run: F) -> RunHandle
    where
        F: FnOnce(Channel) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<Ran>>,
    {
        let (events, rx) = Events::channel(capacity);
        let cancel = Arc::new(AtomicBool::new(false));
        let run_id = new_run_id();
        let chan = Channel { events: events.clone(), cancel: cancel.clone(), run_id: run_id.clone() };
        let rt = tokio::runtime::Handle::current();
        let task = tokio::task::spawn_blocking(move || rt.block_on(run(chan)));
        RunHandle { events: Some(rx), sender: events.downgrade(), cancel, run_id, task }
    }

    /// Stop listening to the run's events (a caller that only wants its end): with nobody
    /// listening, the run builds no per-item events at all.
    pub fn without_events(mut self) -> RunHandle {
        self.events = None;
        self
    }

    /// The run's id (the report's `run_id`, the audit's).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Stop the run between batches: what is in flight finishes and is audited, the rest is
    /// skipped, and the run ends `partial`.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// The run's events for other listeners (a server's live pages), from when they subscribe.
    pub fn events(&self) -> crate::event::WeakEvents {
        self.sender.clone()
    }

    /// A handle on the cancel flag (for a Ctrl-C handler).
    pub fn canceller(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// The next event; `None` once the run has ended and every event was read. A listener
    /// that fell behind skips what it missed.
    pub async fn next_event(&mut self) -> Option<Event> {
        use tokio::sync::broadcast::error::RecvError;
        let events = self.events.as_mut()?;
        loop {
            match events.recv().await {
                Ok(e) => return Some(e),
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// Wait for the end: the report and the plan with outcomes, or why it could not run.
    pub async fn finish(self) -> Result<Ran> {
        self.task.await.context("the run's task failed")?
    }
}

/// The steps after a policy's plan: `--plan-out`, caps, run record, execute, report.
/// `gather` builds the plan; it runs under the run lock.
pub async fn run_policy<F, Fut>(ctx: &Ctx, spec: RunSpec<'_>, chan: &Channel, gather: F) -> Result<Finished>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Plan>>,
{
    let RunSpec { command, config_rows, db, res, dry_run, backup, confirm, reviewed_plan } = spec;
    let run_id = chan.run_id.clone();
    let clock = std::time::Instant::now();
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
    // Started once the lock is ours: a run that finds it held (a scheduled slot that is
    // skipped) never opens a `/start` it would not close.
    let mut notified = ctx.notifier.start(command, &run_id).await;
    tracing::info!(target: "cleanup", "Starting {command} (dry_run={dry_run}, now={})", ctx.settings.now.value.to_rfc3339());
    chan.events.send(Event::Started { run_id: run_id.clone(), command: command.to_string(), dry_run });
    // Holding the lock, settle what a dead run of this command left (intents, `running`).
    if let (Some(db), Some(_)) = (&db, &held) {
        crate::recover::settle_dead_runs(db, command, res).await?;
    }

    let t0 = std::time::Instant::now();
    let mut plan = match gather().await {
        Ok(p) => p,
        // A guard that refuses the plan (SPEC safety rule 2) stops the run like a cap: with a
        // report that says so, nothing deleted.
        Err(e) if crate::exit_codes::exit_for(&e) == Exit::Guard => {
            let mut plan = Plan::new(command, ctx.settings.now.value);
            let report = Report::aborted(&run_id, command, dry_run, &mut plan, &format!("{e:#}"));
            aborted(ctx, chan, &report, &plan, clock).await;
            return Ok(Finished { exit: Exit::Guard, report, plan });
        }
        Err(e) => return Err(e),
    };
    tracing::info!(
        target: "cleanup",
        "Plan: {} to delete ({} items), {} kept, {} scanned, built in {:.2} s",
        plan.units.len(),
        plan.item_count(),
        plan.kept.len(),
        plan.scanned,
        t0.elapsed().as_secs_f64()
    );
    chan.events.send(Event::Planned {
        run_id: run_id.clone(),
        command: command.to_string(),
        dry_run,
        units: plan.units.len() as u64,
        items: plan.item_count() as u64,
        kept: plan.kept.len() as u64 + plan.kept_unlisted.values().sum::<u64>(),
        scanned: plan.scanned,
    });
    if let Some(path) = &ctx.global.plan_out {
        let made = planfile::Made {
            dry_run,
            backup: backup.as_ref().map(Backup::record),
            config: ctx.settings.show().into_iter().chain(config_rows.iter().cloned()).collect(),
        };
        planfile::write_plan(path, &mut plan, &made, db.as_deref(), res).await?;
    }

    if confirm && !dry_run && !ctx.global.yes && !plan.units.is_empty() {
        ask(&plan)?;
    }

    let audit = !dry_run && db.is_some();
    let started = Utc::now();
    if let Err(f) = executor::check_caps(
        &plan,
        ctx.settings.max_delete.as_ref().map(|s| s.value),
        ctx.settings.max_delete_percent.as_ref().map(|s| s.value),
    ) {
        let report = Report::aborted(&run_id, command, dry_run, &mut plan, &f.message);
        notified.extend(aborted(ctx, chan, &report, &plan, clock).await);
        if let (true, Some(db)) = (audit, &db) {
            db.insert_run(&run_id, command, dry_run, started).await?;
            let totals = RunTotals {
                status: "aborted".into(),
                candidates: plan.units.len() as i64,
                details: Some(
                    serde_json::json!({ "message": f.message, "notifications": notified, "origin": ctx.origin }),
                ),
                ..Default::default()
            };
            db.finish_run(&run_id, Utc::now(), &totals).await?;
        }
        return Ok(Finished { exit: Exit::Guard, report, plan });
    }

    if audit {
        // What `restore` needs, recorded now: the run may never get to its end.
        let details = serde_json::json!({
            "stores": planfile::store_records(res),
            "backup": backup.as_ref().map(Backup::record),
            "origin": ctx.origin,
        });
        let db = db.as_ref().expect("audit implies a database");
        db.insert_run_with(&run_id, command, dry_run, started, Some(&details)).await?;
    }
    let opts = ExecOptions {
        dry_run,
        run_id: run_id.clone(),
        concurrency: ctx.settings.concurrency.value,
        progress_bar: std::io::stderr().is_terminal() && !ctx.global.json && ctx.global.quiet == 0,
        cancel: chan.cancel.clone(),
        events: chan.events.clone(),
        audit,
        backup: backup.clone(),
        grace_cutoff: Some(Utc::now() - chrono::Duration::minutes(ctx.settings.grace_minutes.value)),
        check_fingerprints: reviewed_plan,
    };
    let t1 = std::time::Instant::now();
    let result = executor::execute(&mut plan, res, &opts).await;
    tracing::info!(target: "cleanup", "Executed in {:.2} s", t1.elapsed().as_secs_f64());
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            // The run stopped on an error (the audit could not be written, the database went
            // away): what it did is settled now, if the database lets us, else by the next run.
            if let (true, Some(db)) = (audit, &db) {
                if let Err(s) = crate::recover::settle(db, &run_id, res).await {
                    tracing::warn!(target: "cleanup", "run {run_id} stays `running` until the next run settles it: {s:#}");
                }
            }
            return Err(e);
        }
    };
    let exit = if report.totals.failed > 0 || report.interrupted { Exit::PartialFailure } else { Exit::Success };
    notified.extend(ctx.notifier.finish(&summary(&report, &plan, exit, clock.elapsed().as_secs_f64())).await);
    if audit {
        let db = db.as_ref().expect("audit implies a database");
        let mut t = totals(&report);
        if let Some(serde_json::Value::Object(d)) = &mut t.details {
            // What `restore` needs to put objects back: the stores and where backups went.
            d.insert("stores".into(), serde_json::to_value(planfile::store_records(res))?);
            d.insert("backup".into(), serde_json::to_value(backup.as_ref().map(Backup::record))?);
            d.insert("notifications".into(), serde_json::to_value(&notified)?);
            d.insert("origin".into(), serde_json::to_value(&ctx.origin)?);
        }
        db.finish_run(&run_id, report.finished_at, &t).await?;
        if let Some(path) = &ctx.global.metrics_file {
            crate::history::write_metrics(db, path, Utc::now()).await?;
        }
    }
    if let Some(l) = held {
        l.release().await;
    }
    chan.events.send(Event::Finished {
        run_id,
        status: report.status.clone(),
        deleted: report.totals.deleted + report.totals.missing,
        failed: report.totals.failed,
        bytes_reclaimed: report.totals.bytes_reclaimed,
    });
    Ok(Finished { exit, report, plan })
}

/// A run a cap or guard stopped before anything was deleted: tell the notification targets
/// and end the event stream; returns what the notifications did.
async fn aborted(
    ctx: &Ctx,
    chan: &Channel,
    report: &Report,
    plan: &Plan,
    clock: std::time::Instant,
) -> Vec<crate::notify::Delivery> {
    let done = ctx.notifier.finish(&summary(report, plan, Exit::Guard, clock.elapsed().as_secs_f64())).await;
    chan.events.send(Event::Finished {
        run_id: report.run_id.clone(),
        status: "aborted".into(),
        deleted: 0,
        failed: 0,
        bytes_reclaimed: 0,
    });
    done
}

/// Without a terminal a confirmation cannot be asked: refuse (exit 2) and say what to do.
pub fn require_terminal_or_yes(ctx: &Ctx, spec: &RunSpec<'_>, command: &str) -> Result<()> {
    if spec.confirm && !spec.dry_run && !ctx.global.yes && !std::io::stdin().is_terminal() {
        return Err(Fatal::usage(format!(
            "{command} asks for confirmation before deleting, and there is no terminal to ask on: pass --yes, or use --type automatic (cron)"
        ))
        .into());
    }
    Ok(())
}

/// Show what the plan deletes and ask on the terminal.
fn ask(plan: &Plan) -> Result<()> {
    use std::io::Write;
    let mut bytes = 0;
    plan.units.each_item(|i| {
        bytes += i.bytes.unwrap_or(0);
        true
    })?;
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

/// A run's summary for its notifications.
pub fn summary(report: &Report, plan: &Plan, exit: Exit, seconds: f64) -> Summary {
    // The first five failures (none to look for when nothing failed).
    let mut errors = Vec::new();
    if report.totals.failed > 0 {
        let _ = plan.units.each_item(|i| {
            if i.outcome == Some(crate::plan::Outcome::Failed) {
                errors.push((i.target.clone(), i.error.clone().unwrap_or_default()));
            }
            errors.len() < 5
        });
    }
    Summary {
        command: report.command.clone(),
        run_id: report.run_id.clone(),
        status: report.status.clone(),
        exit_code: exit as i32,
        dry_run: report.dry_run,
        candidates: report.totals.candidates,
        deleted: report.totals.deleted + report.totals.missing,
        failed: report.totals.failed,
        retained: report.totals.retained,
        bytes_reclaimed: report.totals.bytes_reclaimed,
        duration_seconds: seconds,
        host: crate::notify::host(),
        message: report.fields.get("message").and_then(|m| m.as_str()).unwrap_or_default().to_string(),
        errors,
    }
}
