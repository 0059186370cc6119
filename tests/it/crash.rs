//! `kill -9` at moments spread over real runs, then one more run: the audit matches reality
//! (every deleted row has its audit row and snapshot; every deleted file is audited; no intent
//! is left; no run stays `running`), the job is finished exactly, and nothing that must stay
//! is touched.

use crate::attachments::{old_file_time, row, uuid, NOW};
use crate::support::*;
use chrono::Duration;
use std::process::Stdio;

/// A real run of cleanup-attachments, killed with SIGKILL after `ms` milliseconds (or done).
fn run_and_kill(ws: &Ws, ms: u64) -> bool {
    let mut child = crate::support::sweep_command()
        .current_dir(ws.dir.path())
        .args(["--now", NOW, "-q", "cleanup-attachments", "--batch-size", "10"])
        .env("DATABASE_URL", &ws.url)
        .env("MEDIA_ROOT", &ws.media)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(ms));
    let killed = matches!(child.try_wait(), Ok(None));
    let _ = child.kill(); // SIGKILL
    let out = child.wait_with_output().unwrap();
    // A run that ended by itself ended well (or found another run's lock): never an error.
    if !killed {
        let code = out.status.code();
        assert!(matches!(code, Some(0) | Some(75)), "exit {code:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    killed
}

pub async fn kill_9_at_any_instant_leaves_an_audit_that_matches_once_the_next_run_starts(b: Backend) {
    let ws = Ws::new(b, true).await;
    let (old, keep) = (600u32, 20u32);
    let deleted_at = ts(at(NOW) - Duration::days(40));
    let created = ts(at("2026-01-01T00:00:00Z"));
    let mut values = Vec::new();
    for i in 1..=old + keep {
        ws.file(&format!("att/{i}.bin"), 64, old_file_time());
        let (active, del) = if i > old { ("TRUE", "NULL".to_string()) } else { ("FALSE", deleted_at.clone()) };
        values.push(format!("('{}', 'att/{i}.bin', 'f', 64, {active}, {del}, {created})", uuid(i)));
    }
    for chunk in values.chunks(200) {
        ws.exec(&format!(
            "INSERT INTO forum_attachment (id, image, original_filename, file_size, is_active, deleted_at, created_at) VALUES {}",
            chunk.join(", ")
        ))
        .await;
    }
    let mut kills = 0;
    for ms in [40, 90, 140, 200, 260, 330, 420, 520] {
        kills += run_and_kill(&ws, ms) as u32;
        let left = ws.count("SELECT count(*) FROM forum_attachment WHERE is_active = FALSE").await;
        if left == 0 {
            break;
        }
    }
    assert!(kills > 0, "at least one run was killed mid-way");
    // The next run settles what the dead ones left, then finishes the job.
    ws.sweep(&["--now", NOW, "cleanup-attachments", "--batch-size", "10"]).expect(0);

    assert_eq!(ws.count("SELECT count(*) FROM forum_attachment WHERE is_active = FALSE").await, 0, "the job is done");
    for i in old + 1..=old + keep {
        assert!(ws.media.join(format!("att/{i}.bin")).exists(), "active attachment {i}'s file survives");
    }
    assert_eq!(ws.count("SELECT count(*) FROM forum_attachment WHERE is_active = TRUE").await, keep as i64);
    let rows = ws
        .count("SELECT count(*) FROM cleanup_audit WHERE kind = 'row' AND outcome = 'deleted' AND row_snapshot IS NOT NULL")
        .await;
    assert_eq!(rows, old as i64, "every deleted row has exactly one audit row with its snapshot");
    for i in 1..=old {
        assert!(!ws.media.join(format!("att/{i}.bin")).exists());
    }
    let files = ws
        .count("SELECT count(DISTINCT target) FROM cleanup_audit WHERE kind = 'file' AND outcome IN ('deleted', 'missing')")
        .await;
    assert_eq!(files, old as i64, "every deleted file is in the audit");
    assert_eq!(ws.count("SELECT count(*) FROM cleanup_audit WHERE outcome = 'intent'").await, 0, "no intent is left");
    assert_eq!(ws.count("SELECT count(*) FROM cleanup_runs WHERE status = 'running'").await, 0, "no run stays running");
    let interrupted = ws.count("SELECT count(*) FROM cleanup_runs WHERE status = 'interrupted'").await;
    assert!(interrupted >= 1 && interrupted <= kills as i64, "{interrupted} runs interrupted by {kills} kills");
    // An interrupted run can be undone like any other: its rows come back from its audit.
    let runs = ws
        .text_rows(
            "SELECT id, CAST(deleted AS TEXT) FROM cleanup_runs WHERE status = 'interrupted' ORDER BY deleted DESC",
        )
        .await;
    let (id, deleted) = (runs[0][0].clone().unwrap(), runs[0][1].clone().unwrap());
    if deleted != "0" {
        let rows = ws
            .count(&format!(
                "SELECT count(*) FROM cleanup_audit WHERE run_id = '{id}' AND kind = 'row' AND outcome = 'deleted'"
            ))
            .await;
        let r = ws.sweep(&["--dry-run", "restore", "--run", &id, "--json"]);
        r.expect(0);
        assert_eq!(r.stdout.matches("would_restore").count() as i64, rows, "{}", r.stdout);
    }
}

/// The audit and the tree after a crash and one more run of cleanup-attachments: the job is
/// done, every deleted row has one audit row with its snapshot, every deleted file is audited,
/// nothing is left as an intent or `running`, the active attachments survive.
async fn attachments_settled(ws: &Ws, old: u32, keep: u32, what: &str) {
    assert_eq!(
        ws.count("SELECT count(*) FROM forum_attachment WHERE is_active = FALSE").await,
        0,
        "{what}: the job is done"
    );
    assert_eq!(ws.count("SELECT count(*) FROM forum_attachment WHERE is_active = TRUE").await, keep as i64, "{what}");
    for i in 1..=old + keep {
        assert_eq!(ws.media.join(format!("att/{i}.jpg")).exists(), i > old, "{what}: file {i}");
    }
    let rows = ws
        .count("SELECT count(*) FROM cleanup_audit WHERE kind = 'row' AND outcome = 'deleted' AND row_snapshot IS NOT NULL")
        .await;
    assert_eq!(rows, old as i64, "{what}: every deleted row has exactly one audit row with its snapshot");
    let files = ws
        .count("SELECT count(DISTINCT target) FROM cleanup_audit WHERE kind = 'file' AND outcome IN ('deleted', 'missing')")
        .await;
    assert_eq!(files, old as i64, "{what}: every deleted file is in the audit");
    assert_eq!(
        ws.count("SELECT count(*) FROM cleanup_audit WHERE outcome = 'intent'").await,
        0,
        "{what}: no intent left"
    );
    assert_eq!(ws.count("SELECT count(*) FROM cleanup_runs WHERE status = 'running'").await, 0, "{what}: none running");
}

/// A crash at each of the executor's points (the second time a batch reaches it), then one
/// more run: nothing lost, nothing unaudited, the job finished exactly.
pub async fn a_crash_at_every_point_of_a_batch_is_settled_by_the_next_run(b: Backend) {
    for point in ["after-intents", "in-row-tx", "after-rows", "after-local", "before-settle"] {
        let ws = Ws::new(b, true).await;
        let (old, keep) = (30u32, 3u32);
        for i in 1..=old + keep {
            ws.file(&format!("att/{i}.jpg"), 10, old_file_time());
            let deleted = (i <= old).then(|| at(NOW) - Duration::days(60));
            row(&ws, i, Some(&format!("att/{i}.jpg")), i > old, deleted).await;
        }
        let args = ["--now", NOW, "cleanup-attachments", "--batch-size", "10"];
        let crashed = ws.sweep_env(&args, &[("SWEEP_FAILPOINT", &format!("{point}@2"))]);
        assert_eq!(crashed.code, -1, "{point}: the process died at the point\n{}", crashed.stderr);
        if point == "in-row-tx" {
            // The transaction that died deleted nothing: its rows are all still there.
            let deleted =
                ws.count("SELECT count(*) FROM cleanup_audit WHERE kind = 'row' AND outcome = 'deleted'").await;
            let left = ws.count("SELECT count(*) FROM forum_attachment WHERE is_active = FALSE").await;
            assert_eq!(deleted + left, old as i64, "{point}: rows and audit agree right after the crash");
        }
        ws.sweep(&args).expect(0);
        attachments_settled(&ws, old, keep, point).await;
        assert_eq!(ws.count("SELECT count(*) FROM cleanup_runs WHERE status = 'interrupted'").await, 1, "{point}");
    }
}

/// The same for objects: bulk-cloudcube killed around its DeleteObjects requests.
pub async fn a_crash_around_object_deletion_is_settled_by_the_next_run(b: Backend) {
    for point in ["after-intents", "after-objects", "before-settle"] {
        let ws = Ws::new(b, true).await;
        let s3 = S3Server::shared();
        let bucket = format!("crash-{}-{}", point.replace('-', ""), b.tag());
        let n = 25;
        let env = crate::cloudcube::old_cube(&ws, &bucket, n).await;
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut crash_env = env.to_vec();
        let fp = format!("{point}@1");
        crash_env.push(("SWEEP_FAILPOINT", &fp));
        let crashed = ws.sweep_env(&["--now", NOW, "bulk-cloudcube"], &crash_env);
        assert_eq!(crashed.code, -1, "{point}: the process died at the point\n{}", crashed.stderr);
        ws.sweep_env(&["--now", NOW, "bulk-cloudcube"], &env).expect(0);
        assert!(s3.exists(&bucket, "cube/uploads/keep.mp4"), "{point}: in-progress media survives");
        for i in 0..n {
            assert!(!s3.exists(&bucket, &format!("cube/tmp/{i}.bin")), "{point}: tmp/{i}.bin");
        }
        let audited = ws
            .count("SELECT count(DISTINCT target) FROM cleanup_audit WHERE kind = 'object' AND outcome IN ('deleted', 'missing')")
            .await;
        assert_eq!(audited, n as i64, "{point}: every deleted object is in the audit");
        assert_eq!(ws.count("SELECT count(*) FROM cleanup_audit WHERE outcome = 'intent'").await, 0, "{point}");
        assert_eq!(ws.count("SELECT count(*) FROM cleanup_runs WHERE status = 'running'").await, 0, "{point}");
        assert_eq!(ws.count("SELECT count(*) FROM cleanup_runs WHERE status = 'interrupted'").await, 1, "{point}");
    }
}

/// `sweep recover` settles a dead run without a new run of its command.
pub async fn recover_settles_a_dead_run_on_demand(b: Backend) {
    let ws = Ws::new(b, true).await;
    for i in 1..=20u32 {
        ws.file(&format!("att/{i}.jpg"), 10, old_file_time());
        row(&ws, i, Some(&format!("att/{i}.jpg")), false, Some(at(NOW) - Duration::days(60))).await;
    }
    let args = ["--now", NOW, "cleanup-attachments", "--batch-size", "10"];
    let crashed = ws.sweep_env(&args, &[("SWEEP_FAILPOINT", "after-local@1")]);
    assert_eq!(crashed.code, -1, "{}", crashed.stderr);
    assert_eq!(ws.count("SELECT count(*) FROM cleanup_runs WHERE status = 'running'").await, 1);
    assert!(ws.count("SELECT count(*) FROM cleanup_audit WHERE outcome = 'intent'").await > 0);
    let dry = ws.sweep(&["--dry-run", "recover", "--json"]);
    dry.expect(0);
    assert!(dry.stdout.contains("would_settle"), "{}", dry.stdout);
    assert_eq!(
        ws.count("SELECT count(*) FROM cleanup_runs WHERE status = 'running'").await,
        1,
        "a dry run changes nothing"
    );
    let r = ws.sweep(&["recover", "--command", "cleanup-attachments", "--json"]);
    r.expect(0);
    let v = r.json();
    assert_eq!(v.as_array().unwrap().len(), 1, "{}", r.stdout);
    // Two batches are in flight: at least the crashed one's ten files were gone, and every
    // intent is now either deleted or not done.
    let (gone, there) = (v[0]["deleted"].as_u64().unwrap(), v[0]["not_done"].as_u64().unwrap());
    assert!(gone >= 10 && gone + there <= 20 && v[0]["unknown"] == 0, "{}", r.stdout);
    let files_left = (1..=20).filter(|i| ws.media.join(format!("att/{i}.jpg")).exists()).count() as u64;
    assert_eq!(files_left, 20 - gone, "what recover says is gone is gone: {}", r.stdout);
    assert_eq!(ws.count("SELECT count(*) FROM cleanup_runs WHERE status = 'running'").await, 0);
    assert_eq!(ws.count("SELECT count(*) FROM cleanup_runs WHERE status = 'interrupted'").await, 1);
    assert_eq!(ws.count("SELECT count(*) FROM cleanup_audit WHERE outcome = 'intent'").await, 0);
    ws.sweep(&["recover", "--command", "nope"]).expect(2);
}

/// Intents of one item each (written by sweep before batch intents) are still settled: gone is
/// `deleted`, still there is `skipped`.
pub async fn one_item_intents_of_an_older_sweep_are_settled(b: Backend) {
    let ws = Ws::new(b, true).await;
    ws.file("att/there.jpg", 10, old_file_time());
    ws.exec(&format!(
        "INSERT INTO cleanup_runs (id, command, dry_run, started_at, status) VALUES ('old', 'cleanup-attachments', {f}, {t}, 'running');
         INSERT INTO cleanup_audit (run_id, policy, kind, target, reason, bytes, outcome, at) VALUES
           ('old', 'cleanup-attachments', 'file', 'media:att/there.jpg', 'x', 10, 'intent', {t}),
           ('old', 'cleanup-attachments', 'file', 'media:att/gone.jpg', 'x', 10, 'intent', {t});",
        f = if b == Backend::Postgres { "false" } else { "0" },
        t = ts(at(NOW)),
    ))
    .await;
    let r = ws.sweep(&["recover", "--command", "cleanup-attachments", "--json"]);
    r.expect(0);
    let v = r.json();
    assert_eq!((v[0]["deleted"].as_u64(), v[0]["not_done"].as_u64()), (Some(1), Some(1)), "{}", r.stdout);
    assert_eq!(ws.count("SELECT count(*) FROM cleanup_audit WHERE outcome = 'intent'").await, 0);
    assert_eq!(
        ws.count("SELECT count(*) FROM cleanup_audit WHERE outcome = 'deleted' AND target = 'media:att/gone.jpg'")
            .await,
        1
    );
    assert_eq!(
        ws.count("SELECT count(*) FROM cleanup_audit WHERE outcome = 'skipped' AND target = 'media:att/there.jpg'")
            .await,
        1
    );
    assert!(ws.media.join("att/there.jpg").exists(), "recover deletes nothing");
}
