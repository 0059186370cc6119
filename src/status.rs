//! `sweep status`: one screen (or `--json`) per command: its last run and status, its last
//! success, what it reclaimed in the last 24 hours and 30 days, and with `--preview` what a dry
//! run would delete now (through the run API, as any run); and each `[[schedule]]` entry of the
//! command: its next run, and whether it is overdue.

use crate::cli::{
    BulkCloudcubeArgs, CleanupAttachmentsArgs, CleanupOpsArgs, CleanupUiFilesArgs, PruneModulesArgs, StatusArgs,
    WorkerOnceArgs,
};
use crate::commands::{start, RunRequest};
use crate::exit_codes::Exit;
use crate::history::{self, History};
use crate::report::human_bytes;
use crate::run::{Ctx, Ran};
use anyhow::Result;
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// A `[[schedule]]` entry as `status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
struct ScheduleStatus {
    name: String,
    cron: String,
    tz: String,
    args: Vec<String>,
    dry_run: bool,
    next_run: Option<DateTime<Utc>>,
    /// No success within what the schedule allows (dry-run entries leave no record: never).
    overdue: bool,
}

fn schedules_of(ctx: &Ctx, h: &History, now: DateTime<Utc>) -> Vec<ScheduleStatus> {
    ctx.schedules
        .iter()
        .filter(|s| s.command == h.command)
        .map(|s| ScheduleStatus {
            name: s.name.clone(),
            cron: s.expression.clone(),
            tz: s.tz.to_string(),
            args: s.args.clone(),
            dry_run: s.dry_run,
            next_run: s.next_after(now),
            overdue: !s.dry_run && s.overdue(h.last_success.or(h.first_run), now),
        })
        .collect()
}

/// What a dry run would do now.
#[derive(Debug, Clone, serde::Serialize)]
struct Preview {
    would_delete: u64,
    bytes_would_reclaim: u64,
    error: Option<String>,
}

pub async fn run(ctx: Ctx, a: &StatusArgs) -> Result<Exit> {
    if ctx.global.show_config {
        ctx.print_config(Vec::new());
        return Ok(Exit::Success);
    }
    let db = ctx.connect().await?;
    crate::run::require_audit_tables(&db).await?;
    // As of `--now` when given: how a schedule will look later (or looked before).
    let now = ctx.settings.now.value;
    let rows = history::read(&db, now).await?;
    db.close().await;
    let mut previews = Vec::new();
    if a.preview {
        let mut g = ctx.global.clone();
        g.dry_run = true;
        g.json = true;
        g.plan_out = None;
        let dry = Arc::new(Ctx::new(g)?);
        for h in &rows {
            previews.push(preview(dry.clone(), &h.command).await);
        }
    }
    if ctx.global.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let mut v = serde_json::to_value(h).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    if let Some(p) = previews.get(i) {
                        o.insert("preview".into(), serde_json::to_value(p).unwrap_or_default());
                    }
                    o.insert("schedules".into(), serde_json::to_value(schedules_of(&ctx, h, now)).unwrap_or_default());
                }
                v
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(Exit::Success);
    }
    for (i, h) in rows.iter().enumerate() {
        print_one(h, previews.get(i), &schedules_of(&ctx, h, now), now);
    }
    Ok(Exit::Success)
}

/// A span of time as a person reads it: `42 min`, `5 h`, `3 days`.
fn span(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    match (to - from).num_minutes() {
        m if m < 120 => format!("{m} min"),
        m if m < 48 * 60 => format!("{} h", m / 60),
        m => format!("{} days", m / (24 * 60)),
    }
}

fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!("{} ago", span(t, now))
}

fn print_one(h: &History, p: Option<&Preview>, schedules: &[ScheduleStatus], now: DateTime<Utc>) {
    println!("{}", h.command);
    match &h.last_run {
        None => println!("  last run      never"),
        Some(r) => println!(
            "  last run      {} ({})  {}  deleted {}  failed {}  reclaimed {}",
            r.started_at.to_rfc3339(),
            ago(r.started_at, now),
            r.status,
            r.deleted,
            r.failed,
            human_bytes(r.bytes_reclaimed.max(0) as u64)
        ),
    }
    match h.last_success {
        None => println!("  last success  never"),
        Some(t) => println!("  last success  {} ({})", t.to_rfc3339(), ago(t, now)),
    }
    println!(
        "  reclaimed     {} in 24 h ({} items), {} in 30 d",
        human_bytes(h.reclaimed_24h.max(0) as u64),
        h.deleted_24h,
        human_bytes(h.reclaimed_30d.max(0) as u64)
    );
    if let Some(p) = p {
        match &p.error {
            Some(e) => println!("  preview       cannot dry-run now: {e}"),
            None => println!(
                "  preview       a run now would delete {} items ({})",
                p.would_delete,
                human_bytes(p.bytes_would_reclaim)
            ),
        }
    }
    if schedules.is_empty() {
        println!("  schedule      none configured ([[schedule]] in the config)");
    }
    for s in schedules {
        let next = match s.next_run {
            Some(t) => format!("next {} (in {})", t.to_rfc3339(), span(now, t)),
            None => "no next run".into(),
        };
        println!(
            "  schedule      {}: \"{}\" {}{}  {next}{}",
            s.name,
            s.cron,
            s.tz,
            if s.dry_run { " dry run" } else { "" },
            if s.overdue { "  OVERDUE: no success within the schedule" } else { "" }
        );
    }
}

/// A dry run of `command` with its default arguments.
async fn preview(ctx: Arc<Ctx>, command: &str) -> Preview {
    let request = match command {
        "cleanup-attachments" => RunRequest::CleanupAttachments(CleanupAttachmentsArgs::default()),
        "prune-modules" => RunRequest::PruneModules(PruneModulesArgs::default()),
        "cleanup-ui-files" => RunRequest::CleanupUiFiles(CleanupUiFilesArgs::default()),
        "cleanup-ops" => RunRequest::CleanupOps(CleanupOpsArgs::default()),
        "bulk-cloudcube" => RunRequest::BulkCloudcube(BulkCloudcubeArgs::default()),
        _ => RunRequest::WorkerOnce(WorkerOnceArgs::default()),
    };
    match start(ctx, request).without_events().finish().await {
        Ok(Ran::Run(f)) => Preview {
            would_delete: f.report.totals.would_delete,
            bytes_would_reclaim: f.report.totals.bytes_would_reclaim,
            error: (f.report.status == "aborted")
                .then(|| f.report.fields.get("message").and_then(|m| m.as_str()).unwrap_or("aborted").to_string()),
        },
        Ok(Ran::Done(_)) => Preview { would_delete: 0, bytes_would_reclaim: 0, error: None },
        Err(e) => Preview { would_delete: 0, bytes_would_reclaim: 0, error: Some(format!("{e:#}")) },
    }
}
