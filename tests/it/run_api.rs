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
    assert!(matches!(&events[0], Event::Planned { units: 6, items: 12, .. }), "{:?}", events[0]);
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
