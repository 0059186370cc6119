//! Carries out `[[schedule]]` slots through the run API: what `sweep serve` drives, one slot
//! at a time per entry. A scheduled run is a normal run (its command's lock, caps, audit,
//! notifications). A slot that finds the lock held (a run still going, or another `serve` on
//! the same database that took this slot) is *skipped*, not queued: it is recorded in
//! `cleanup_runs` with status `skipped` and tells no notification target, since nothing failed.

use crate::cli::parse_command;
use crate::commands::{start, RunRequest};
use crate::exit_codes::{exit_for, Exit};
use crate::run::{new_run_id, Ctx, Ran};
use crate::schedule::Schedule;
use anyhow::{bail, Result};
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// What became of one slot.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SlotRun {
    pub schedule: String,
    pub command: String,
    pub slot: DateTime<Utc>,
    /// The run's id (a skipped slot's record has one too).
    pub run_id: String,
    /// The run's status (`success`, `partial`, `aborted`), `skipped`, or `failure` when it
    /// could not run (a bad setting, an unreachable database).
    pub status: String,
    pub exit_code: i32,
    pub message: Option<String>,
}

/// The run request an entry stands for: its command and arguments, parsed as the command line
/// would (they were checked when the config loaded).
pub fn request_for(s: &Schedule) -> Result<RunRequest> {
    match RunRequest::of(parse_command(&s.command, &s.args)?) {
        Some(RunRequest::Apply(_)) | None => bail!("`{}` cannot be scheduled", s.command),
        Some(r) => Ok(r),
    }
}

/// Run one slot of `s` with the server's settings (`base`), as a dry run when the entry (or
/// the server) says so. Never fails: what went wrong is the slot's status and message.
pub async fn run_slot(base: &Ctx, s: &Schedule, slot: DateTime<Utc>) -> SlotRun {
    let mut out = SlotRun {
        schedule: s.name.clone(),
        command: s.command.clone(),
        slot,
        run_id: new_run_id(),
        status: "failure".into(),
        exit_code: Exit::Usage as i32,
        message: None,
    };
    // A scheduled run uses the real clock, prints nothing and writes no plan file; its record
    // names its entry and slot (what catch-up at start-up reads).
    let origin = serde_json::json!({ "via": "schedule", "schedule": s.name, "slot": slot });
    let (ctx, request) = match base.for_server(s.dry_run, None, origin).and_then(|c| Ok((Arc::new(c), request_for(s)?)))
    {
        Ok(p) => p,
        Err(e) => {
            // The settings themselves are wrong: the environment's targets are still told.
            out.exit_code = exit_for(&e) as i32;
            out.message = Some(format!("{e:#}"));
            crate::notify::Notifier::from_env(&crate::config::ProcessEnv).failure(&s.command, &out.run_id, &e).await;
            return out;
        }
    };
    let handle = start(ctx.clone(), request).without_events();
    out.run_id = handle.run_id().to_string();
    match handle.finish().await {
        Ok(Ran::Run(f)) => {
            out.status = f.report.status.clone();
            out.exit_code = f.exit as i32;
            out.message = f.report.fields.get("message").and_then(|m| m.as_str()).map(String::from);
        }
        Ok(Ran::Done(exit)) => {
            out.status = if exit == Exit::Success { "success" } else { "failure" }.into();
            out.exit_code = exit as i32;
        }
        Err(e) => {
            out.exit_code = exit_for(&e) as i32;
            out.message = Some(format!("{e:#}"));
            if exit_for(&e) == Exit::Locked {
                out.status = "skipped".into();
                record_skipped(&ctx, &out).await;
            } else {
                ctx.notifier.failure(&s.command, &out.run_id, &e).await;
            }
        }
    }
    out
}

/// A skipped real slot leaves a finished `cleanup_runs` record (dry runs leave none), so the
/// dashboard and `sweep status` show that the slot came and why nothing ran.
async fn record_skipped(ctx: &Ctx, out: &SlotRun) {
    if ctx.settings.dry_run.value {
        return;
    }
    let write = async {
        let db = ctx.connect().await?;
        let now = Utc::now();
        db.insert_run(&out.run_id, &out.command, false, now).await?;
        let totals = crate::db::RunTotals {
            status: "skipped".into(),
            details: Some(serde_json::json!({ "message": out.message, "origin": ctx.origin })),
            ..Default::default()
        };
        db.finish_run(&out.run_id, now, &totals).await?;
        db.close().await;
        anyhow::Ok(())
    };
    if let Err(e) = write.await {
        tracing::warn!(target: "cleanup", "cannot record the skipped slot of {}: {e:#}", out.schedule);
    }
}
