//! The runs this server starts: through the run API (`commands::start`), so a web run takes the
//! command's lock, caps, audit and backups like a CLI run; its events for live pages; cancel
//! between batches; and the reports of its dry runs (which leave no record in the database).
//! Also the `[[schedule]]` loop: catch-up at start-up, then each slot once (claimed in the
//! database, so several servers on one database run it once).

use super::{ApiError, State};
use crate::commands::{self, RunRequest};
use crate::event::{Event, WeakEvents};
use crate::run::Ran;
use crate::schedule::{Schedule, Ticker};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// How many finished runs' reports this process keeps (its dry runs are only here).
const KEEP_FINISHED: usize = 20;
/// How many items of a dry run's report are kept for its ledger (a real run's are in the
/// audit), so that the server's memory stays bounded whatever it runs.
pub const KEEP_ITEMS: usize = 5_000;

/// Where a live run stands.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    pub units: u64,
    pub items: u64,
    pub done_units: u64,
    pub deleted: u64,
    pub failed: u64,
}

/// A run going on in this process.
pub struct Live {
    pub run_id: String,
    pub command: String,
    pub dry_run: bool,
    pub by: String,
    pub started_at: DateTime<Utc>,
    pub events: WeakEvents,
    cancel: Arc<AtomicBool>,
    pub progress: Mutex<Progress>,
}

/// A run of this process that ended: its report (without items) and, for a dry run, its items.
#[derive(Debug, Clone, Serialize)]
pub struct FinishedRun {
    pub run_id: String,
    pub command: String,
    pub dry_run: bool,
    pub status: String,
    pub exit_code: i32,
    pub report: serde_json::Value,
    #[serde(skip)]
    pub items: Vec<serde_json::Value>,
}

#[derive(Default)]
pub struct Registry {
    live: Mutex<HashMap<String, Arc<Live>>>,
    finished: Mutex<VecDeque<Arc<FinishedRun>>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Registry {
    pub fn live(&self, id: &str) -> Option<Arc<Live>> {
        self.live.lock().expect("live").get(id).cloned()
    }

    pub fn live_runs(&self) -> Vec<Arc<Live>> {
        let mut v: Vec<_> = self.live.lock().expect("live").values().cloned().collect();
        v.sort_by_key(|l| l.started_at);
        v
    }

    pub fn finished(&self, id: &str) -> Option<Arc<FinishedRun>> {
        self.finished.lock().expect("finished").iter().find(|f| f.run_id == id).cloned()
    }

    /// Stop every live run between batches (shutdown).
    pub fn cancel_all(&self) {
        for l in self.live.lock().expect("live").values() {
            l.cancel.store(true, Ordering::SeqCst);
        }
    }

    /// Ask one live run to stop between batches; false when it is not running here.
    pub fn cancel(&self, id: &str) -> bool {
        self.live(id).map(|l| l.cancel.store(true, Ordering::SeqCst)).is_some()
    }

    /// Wait (up to `limit`) for every run this process started to end and be recorded.
    pub async fn wait_all(&self, limit: std::time::Duration) {
        let tasks: Vec<_> = self.tasks.lock().expect("tasks").drain(..).collect();
        let _ = tokio::time::timeout(limit, futures::future::join_all(tasks)).await;
    }

    fn keep(&self, f: FinishedRun) {
        let mut all = self.finished.lock().expect("finished");
        if all.len() >= KEEP_FINISHED {
            all.pop_front();
        }
        all.push_back(Arc::new(f));
    }
}

/// A run that got going: its id, and its end to wait for if the caller wants the report.
pub struct Started {
    pub run_id: String,
    pub done: tokio::sync::oneshot::Receiver<Arc<FinishedRun>>,
}

impl Started {
    /// Wait for the run's end (the seeds' synchronous endpoints answer with its report).
    pub async fn finished(self) -> Result<Arc<FinishedRun>, ApiError> {
        self.done.await.map_err(|_| ApiError::internal(anyhow::anyhow!("run {} ended without a result", self.run_id)))
    }
}

/// What a web caller asks for: a command and its arguments, as on the command line.
pub struct WebRun {
    pub request: RunRequest,
    pub dry_run: bool,
    pub plan_out: Option<std::path::PathBuf>,
    /// What the audit's `sweep_actions` says was done (`run`, `plan`, `apply`, …).
    pub action: &'static str,
}

/// Start `run` for `actor`; returns once it holds its lock (or ended first: then a 409 when
/// the lock was held, a 422 when it cannot run as configured). It goes on in the background;
/// its end goes to [`Started::done`] and to the registry.
pub async fn start(app: &State, actor: &str, run: WebRun) -> Result<Started, ApiError> {
    let command = run.request.name();
    let origin = serde_json::json!({ "via": "web", "by": actor });
    let ctx = match app.base.for_server(run.dry_run, run.plan_out, origin) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            // The settings themselves are wrong (the config changed under the server): the
            // environment's targets are still told, as the CLI tells them.
            crate::notify::Notifier::from_env(&crate::config::ProcessEnv)
                .failure(command, &crate::run::new_run_id(), &e)
                .await;
            return Err(ApiError::of_run(e));
        }
    };
    let dry_run = ctx.settings.dry_run.value;
    let mut handle = commands::start(ctx.clone(), run.request);
    let run_id = handle.run_id().to_string();
    let started = loop {
        match handle.next_event().await {
            Some(Event::Started { .. }) => break true,
            Some(_) => continue,
            None => break false,
        }
    };
    if !started {
        // It ended before it began: a mode that answers at once, or an error.
        return match handle.finish().await {
            Ok(_) => Err(ApiError::unprocessable(format!("{command}: these arguments do not start a run"))),
            Err(e) => {
                // A run that could not start (unreachable database, missing tables, …) is the
                // alert operators need most; a held lock is not a failure.
                if crate::exit_codes::exit_for(&e) != crate::exit_codes::Exit::Locked {
                    ctx.notifier.failure(command, &run_id, &e).await;
                }
                Err(ApiError::of_run(e))
            }
        };
    }
    record_action(
        app,
        actor,
        run.action,
        &format!("{command} run {run_id}"),
        serde_json::json!({ "dry_run": dry_run }),
    )
    .await;
    let live = Arc::new(Live {
        run_id: run_id.clone(),
        command: command.to_string(),
        dry_run,
        by: actor.to_string(),
        started_at: Utc::now(),
        events: handle.events(),
        cancel: handle.canceller(),
        progress: Mutex::default(),
    });
    app.runs.live.lock().expect("live").insert(run_id.clone(), live.clone());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let app2 = app.clone();
    let task = tokio::spawn(async move {
        while let Some(e) = handle.next_event().await {
            let mut p = live.progress.lock().expect("progress");
            match e {
                Event::Planned { units, items, .. } => (p.units, p.items) = (units, items),
                Event::Batch { done_units, .. } => p.done_units = done_units,
                Event::Finished { deleted, failed, .. } => (p.deleted, p.failed) = (deleted, failed),
                Event::Item { outcome, .. } => {
                    use crate::plan::Outcome;
                    match outcome {
                        Outcome::Failed => p.failed += 1,
                        Outcome::Deleted | Outcome::WouldDelete | Outcome::Missing => p.deleted += 1,
                        Outcome::Skipped => {}
                    }
                }
                Event::Started { .. } => {}
            }
        }
        let ran = handle.finish().await;
        if let Err(e) = &ran {
            ctx.notifier.failure(&live.command, &live.run_id, e).await;
        }
        let f = finished(&live, ran);
        app2.runs.live.lock().expect("live").remove(&live.run_id);
        let f2 = f.clone();
        app2.runs.keep(f);
        let _ = tx.send(Arc::new(f2));
    });
    let mut tasks = app.runs.tasks.lock().expect("tasks");
    tasks.retain(|t| !t.is_finished());
    tasks.push(task);
    drop(tasks);
    Ok(Started { run_id, done: rx })
}

fn finished(live: &Live, ran: anyhow::Result<Ran>) -> FinishedRun {
    let mut f = FinishedRun {
        run_id: live.run_id.clone(),
        command: live.command.clone(),
        dry_run: live.dry_run,
        status: "failure".into(),
        exit_code: crate::exit_codes::Exit::Usage as i32,
        report: serde_json::Value::Null,
        items: Vec::new(),
    };
    match ran {
        Ok(Ran::Run(r)) => {
            f.status = r.report.status.clone();
            f.exit_code = r.exit as i32;
            f.report = serde_json::to_value(&r.report).unwrap_or_default();
            // A real run's items are in the audit; only a dry run's are kept here.
            let keep = if live.dry_run { KEEP_ITEMS } else { 0 };
            let mut items = Vec::new();
            if keep > 0 {
                let _ = r.plan.units.each_item(|i| {
                    items.extend(serde_json::to_value(crate::report::ItemView(i)).ok());
                    items.len() < keep
                });
            }
            f.items = items;
        }
        Ok(Ran::Done(exit)) => f.exit_code = exit as i32,
        Err(e) => {
            f.exit_code = crate::exit_codes::exit_for(&e) as i32;
            f.report = serde_json::json!({ "run_id": live.run_id, "command": live.command, "status": "failure", "message": format!("{e:#}") });
        }
    }
    f
}

/// Record a web action (who did what) in `sweep_actions`; a failure is logged, not fatal (the
/// run itself carries its origin in its own record).
pub async fn record_action(app: &State, actor: &str, action: &str, target: &str, detail: serde_json::Value) {
    tracing::info!(target: "cleanup", "web: {actor} {action} {target}");
    let db = &app.db;
    let mut q = db.sql();
    q.push("INSERT INTO sweep_actions (at, actor, action, target, detail) VALUES (")
        .bind(Utc::now())
        .push(", ")
        .bind(actor)
        .push(", ")
        .bind(action)
        .push(", ")
        .bind(target)
        .push(", ")
        .bind_json(Some(detail.to_string()))
        .push(")");
    if let Err(e) = db.execute(&q).await {
        tracing::warn!(target: "cleanup", "cannot record the web action {action} by {actor}: {e}");
    }
}

/// The entry's latest real runs, newest first (their records' origin names it): started_at,
/// status, run id.
pub async fn schedule_runs(
    app: &State,
    s: &Schedule,
    limit: i64,
) -> anyhow::Result<Vec<(DateTime<Utc>, String, String)>> {
    let db = &app.db;
    let origin = format!("\"schedule\":{}", serde_json::to_string(&s.name)?);
    let mut q = db.sql();
    q.push("SELECT started_at, status, id FROM cleanup_runs WHERE command = ").bind(s.command.as_str());
    q.push(" AND ").contains("details", &origin);
    q.push(" ORDER BY started_at DESC LIMIT ").bind(limit);
    db.read(&q, |r| Ok((r.time_req(0)?, r.text_req(1)?, r.text_req(2)?))).await
}

/// Take a slot of `s` for this process (`claim` names the slot the same way in every
/// server: its time, or for a catch-up the last run it catches up after): true for exactly one of the servers that try.
/// (A dry-run entry leaves no record, so every server runs it.)
pub async fn claim_slot(app: &State, s: &Schedule, claim: &str) -> bool {
    if s.dry_run {
        return true;
    }
    let db = &app.db;
    let name = format!("slot:{}:{claim}", s.name);
    let mut q = db.sql();
    q.push("INSERT INTO sweep_settings (name, value, updated_at, updated_by) VALUES (")
        .bind(name.as_str())
        .push(", 'claimed', ")
        .bind(Utc::now())
        .push(", ")
        .bind(crate::notify::host())
        .push(")");
    let won = db.execute(&q).await.is_ok();
    let mut old = db.sql();
    old.push("DELETE FROM sweep_settings WHERE name LIKE 'slot:%' AND ").time_cmp(
        "updated_at",
        "<",
        Utc::now() - chrono::Duration::days(7),
    );
    let _ = db.execute(&old).await;
    won
}

async fn run_one(app: State, s: Schedule, slot: DateTime<Utc>, claim: String) {
    if !claim_slot(&app, &s, &claim).await {
        tracing::info!(target: "cleanup", "schedule {}: slot {slot} taken by another server", s.name);
        return;
    }
    let r = crate::scheduler::run_slot(&app.base, &s, slot).await;
    tracing::info!(target: "cleanup", "schedule {}: slot {slot}: {} (exit {}) run {}", s.name, r.status, r.exit_code, r.run_id);
}

/// Drive `[[schedule]]` until `stop`: catch-up once at start-up, then each entry at its slots.
pub async fn schedule_loop(app: State, mut stop: tokio::sync::watch::Receiver<bool>) {
    let schedules = app.base.schedules.clone();
    let mut running = tokio::task::JoinSet::new();
    let now = Utc::now();
    for s in schedules.iter().filter(|s| s.catch_up && !s.dry_run) {
        match schedule_runs(&app, s, 1).await.map(|r| r.first().map(|r| r.0)) {
            Ok(last) if s.catch_up_at_start(last, now) => {
                tracing::info!(target: "cleanup", "schedule {}: a slot was missed while no server ran; catching up once", s.name);
                let claim = format!("catch-up-after:{}", last.map(|t| t.to_rfc3339()).unwrap_or_default());
                running.spawn(run_one(app.clone(), s.clone(), now, claim));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(target: "cleanup", "schedule {}: cannot read its last run: {e:#}", s.name),
        }
    }
    let mut ticker = Ticker::new(&schedules, now);
    loop {
        let wait = ticker
            .sleep_until()
            .map(|t| (t - Utc::now()).to_std().unwrap_or_default())
            .unwrap_or(std::time::Duration::from_secs(3600))
            .min(std::time::Duration::from_secs(60));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => break,
        }
        let now = Utc::now();
        let slots: Vec<_> = (0..schedules.len()).map(|i| ticker.next(i)).collect();
        for i in ticker.due(&schedules, now) {
            let slot = slots[i].unwrap_or(now);
            running.spawn(run_one(app.clone(), schedules[i].clone(), slot, slot.to_rfc3339()));
        }
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
}
