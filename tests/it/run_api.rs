//! The run API as `serve` will use it: a typed request started through the library, its
//! events watched while it runs, a cancel that stops it between batches, and the final report.

use crate::attachments::{old_file_time, row, uuid, NOW};
use crate::support::*;
use chrono::Duration;
use std::sync::Arc;
use sweep::cli::{CleanupAttachmentsArgs, GlobalArgs};
use sweep::commands::{start, RunRequest};
use sweep::event::Event;
use sweep::run::{Ctx, Ran};

async fn attachments(ws: &Ws, n: u32) {
    for i in 1..=n {
        ws.file(&format!("att/{i}.jpg"), 100, old_file_time());
        row(ws, i, Some(&format!("att/{i}.jpg")), false, Some(at(NOW) - Duration::days(40))).await;
    }
    row(ws, 9999, Some("att/active.jpg"), true, None).await;
}

fn ctx(ws: &Ws) -> Arc<Ctx> {
    let g = GlobalArgs {
        database_url: Some(ws.url.clone()),
        media_root: Some(ws.media.clone()),
        now: Some(NOW.into()),
        quiet: 1,
        ..Default::default()
    };
    Arc::new(Ctx::new(g).unwrap())
}

fn request(batch: i64) -> RunRequest {
    RunRequest::CleanupAttachments(CleanupAttachmentsArgs { days: Some(30), batch_size: Some(batch) })
}

pub async fn a_started_run_reports_planned_items_batches_and_its_end(b: Backend) {
    let ws = Ws::new(b, true).await;
    attachments(&ws, 6).await;
    let mut h = start(ctx(&ws), request(2));
    let mut events = Vec::new();
    while let Some(e) = h.next_event().await {
        events.push(e);
    }
    let Ran::Run(f) = h.finish().await.unwrap() else { panic!("a run") };
    assert_eq!(f.report.totals.deleted, 12, "6 files and 6 rows");
    assert!(matches!(&events[0], Event::Started { dry_run: false, .. }), "{:?}", events[0]);
    assert!(matches!(&events[1], Event::Planned { units: 6, items: 12, .. }), "{:?}", events[1]);
    let items = events.iter().filter(|e| matches!(e, Event::Item { .. })).count();
    let batches: Vec<u64> = events
        .iter()
        .filter_map(|e| if let Event::Batch { done_units, .. } = e { Some(*done_units) } else { None })
        .collect();
    assert_eq!(items, 12);
    assert_eq!(batches, [2, 4, 6], "one event per batch of 2");
    assert!(
        matches!(events.last().unwrap(), Event::Finished { status, deleted: 12, failed: 0, .. } if status == "success"),
        "{:?}",
        events.last()
    );
    assert!(row_survives(&ws, 9999).await, "the active attachment stays");
}

async fn row_survives(ws: &Ws, n: u32) -> bool {
    ws.count(&format!("SELECT count(*) FROM forum_attachment WHERE CAST(id AS TEXT) = '{}'", uuid(n))).await == 1
}

pub async fn a_cancelled_run_stops_between_batches_and_its_audit_matches(b: Backend) {
    let ws = Ws::new(b, true).await;
    attachments(&ws, 60).await;
    let mut h = start(ctx(&ws), request(2));
    // Cancel once the first batch is done: what is in flight finishes, the rest is skipped.
    while let Some(e) = h.next_event().await {
        if matches!(e, Event::Batch { .. }) {
            h.cancel();
            break;
        }
    }
    let Ran::Run(f) = h.finish().await.unwrap() else { panic!("a run") };
    assert_eq!(f.report.status, "partial");
    let left = ws.count("SELECT count(*) FROM forum_attachment WHERE is_active = FALSE").await;
    assert!(left > 0 && left <= 58, "stopped part way, after at least one batch of 2: {left} of 60 left");
    let audited = ws.count("SELECT count(*) FROM cleanup_audit WHERE kind = 'row' AND outcome = 'deleted'").await;
    assert_eq!(audited, 60 - left, "every deleted row, and only those, is audited");
    let status = ws.count("SELECT count(*) FROM cleanup_runs WHERE status = 'partial'").await;
    assert_eq!(status, 1, "the run is recorded as partial");
    assert!(row_survives(&ws, 9999).await);
}

fn entry(name: &str, args: &[&str], dry_run: bool) -> sweep::schedule::Schedule {
    let raw = sweep::schedule::RawSchedule {
        name: Some(name.into()),
        command: "cleanup-attachments".into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        cron: "*/10 * * * *".into(),
        tz: None,
        dry_run,
        catch_up: false,
    };
    sweep::schedule::Schedule::load(
        &[raw],
        &["cleanup-attachments"],
        &sweep::cli::check_command_args,
        "test",
        chrono::Utc::now(),
    )
    .unwrap()
    .remove(0)
}

/// A scheduled slot is a normal run through the run API; a slot that finds its command's lock
/// held (a run still going, another `serve` that took the slot) is skipped and recorded, not
/// queued; a dry-run entry deletes nothing and records nothing.
pub async fn a_scheduled_slot_runs_through_the_run_api_and_is_skipped_on_a_held_lock(b: Backend) {
    let ws = Ws::new(b, true).await;
    attachments(&ws, 3).await;
    // A healthchecks check hears every event of every run.
    let hc = crate::notify::Receiver::start(200, 0);
    let cfg = ws.dir.path().join("hc.toml");
    std::fs::write(&cfg, format!("[[notify]]\nkind = \"healthchecks\"\nurl = \"{}/check\"\n", hc.url)).unwrap();
    let global = GlobalArgs {
        database_url: Some(ws.url.clone()),
        media_root: Some(ws.media.clone()),
        config: Some(cfg),
        quiet: 1,
        ..Default::default()
    };
    let base = Ctx::new(global.clone()).unwrap();
    let paths = || hc.heard().into_iter().map(|h| h.path).collect::<Vec<_>>();
    let slot = chrono::Utc::now();
    let real = entry("nightly", &["--days", "30", "--batch-size", "2"], false);

    // Another run holds the lock: the slot is skipped, with a finished record saying why.
    let db = ws.db().await;
    let held = sweep::db::lock::acquire(&db, "cleanup-attachments").await.unwrap();
    let r = sweep::scheduler::run_slot(&base, &real, slot).await;
    assert_eq!(r.status, "skipped", "{r:?}");
    assert_eq!(r.exit_code, 75, "{r:?}");
    assert!(r.message.as_deref().unwrap_or("").contains("holds the lock"), "{r:?}");
    let details = match b {
        Backend::Postgres => "CAST(details AS TEXT)",
        Backend::MySql => "CAST(details AS CHAR)",
        Backend::Sqlite => "details",
    };
    let rows = ws.text_rows(&format!("SELECT status, {details} FROM cleanup_runs WHERE id = '{}'", r.run_id)).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][0].as_deref(), Some("skipped"));
    assert!(rows[0][1].as_deref().unwrap_or("").contains("nightly"), "{rows:?}");
    assert_eq!(ws.count("SELECT count(*) FROM forum_attachment").await, 4, "nothing ran");
    assert_eq!(paths(), Vec::<String>::new(), "a skipped slot opens no check and fails none");
    drop(held);
    db.close().await;

    // A dry-run entry decides and deletes nothing, and leaves no run record.
    let before = ws.count("SELECT count(*) FROM cleanup_runs").await;
    let r = sweep::scheduler::run_slot(&base, &entry("preview", &[], true), slot).await;
    assert_eq!((r.status.as_str(), r.exit_code), ("success", 0), "{r:?}");
    assert_eq!(ws.count("SELECT count(*) FROM forum_attachment").await, 4);
    assert_eq!(ws.count("SELECT count(*) FROM cleanup_runs").await, before);

    // The lock is free: the slot runs for real, with its arguments, audited.
    let r = sweep::scheduler::run_slot(&base, &real, slot).await;
    assert_eq!((r.status.as_str(), r.exit_code), ("success", 0), "{r:?}");
    assert_eq!(ws.count("SELECT count(*) FROM forum_attachment").await, 1, "three old rows gone");
    assert!(row_survives(&ws, 9999).await, "the active attachment stays");
    assert_eq!(
        ws.count(&format!("SELECT count(*) FROM cleanup_runs WHERE id = '{}' AND status = 'success'", r.run_id)).await,
        1
    );
    assert_eq!(ws.count(&format!("SELECT count(*) FROM cleanup_audit WHERE run_id = '{}'", r.run_id)).await, 6);

    // A database that cannot be reached: the slot fails, and the check hears it without a start.
    let before = paths().len();
    let down =
        Ctx::new(GlobalArgs { database_url: Some("postgres://sweep@127.0.0.1:1/none".into()), ..global }).unwrap();
    let r = sweep::scheduler::run_slot(&down, &real, slot).await;
    assert_eq!(r.status, "failure", "{r:?}");
    assert!(r.message.as_deref().unwrap_or("").contains("127.0.0.1:1"), "{r:?}");
    let after: Vec<String> = paths().split_off(before);
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(after[0].starts_with(&format!("/check/{}?rid=", r.exit_code)), "{after:?}");
}
