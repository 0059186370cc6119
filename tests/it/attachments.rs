//! `cleanup-attachments` end to end through the real binary, on PostgreSQL, SQLite and MariaDB, with
//! real files and the S3-protocol server. Each scenario checks what must go and what must stay.

use crate::support::*;
use chrono::{DateTime, Duration, Utc};
use std::collections::BTreeSet;

pub const NOW: &str = "2026-11-22T10:00:00Z";
/// NOW - 30 days.
const CUTOFF: &str = "2026-10-23T10:00:00Z";

pub fn old_file_time() -> DateTime<Utc> {
    at("2026-09-01T00:00:00Z")
}

pub fn uuid(n: u32) -> String {
    format!("a77ac4e0-0000-4000-8000-{n:012}")
}

/// Insert an attachment row.
pub async fn row(ws: &Ws, n: u32, image: Option<&str>, active: bool, deleted_at: Option<DateTime<Utc>>) {
    let image = image.map(|i| format!("'{}'", i.replace('\'', "''"))).unwrap_or_else(|| "NULL".into());
    let deleted = deleted_at.map(ts).unwrap_or_else(|| "NULL".into());
    ws.exec(&format!(
        "INSERT INTO forum_attachment (id, image, original_filename, file_size, is_active, deleted_at, created_at) \
         VALUES ('{}', {image}, 'photo-{n}.jpg', 1024, {}, {deleted}, {})",
        uuid(n),
        if active { "TRUE" } else { "FALSE" },
        ts(at("2026-01-01T00:00:00Z"))
    ))
    .await;
}

/// `n` attachments soft-deleted `days` days before NOW, each with an 8-byte file at `path(i)`,
/// inserted in one script.
async fn old_attachments(ws: &Ws, n: u32, path: impl Fn(u32) -> String, days: i64) {
    let mut sql = String::new();
    for i in 1..=n {
        let rel = path(i);
        write_aged(&ws.media.join(&rel), 8, old_file_time());
        sql.push_str(&format!(
            "INSERT INTO forum_attachment (id, image, original_filename, file_size, is_active, deleted_at, created_at) \
             VALUES ('{}', '{rel}', 'x.jpg', 8, FALSE, {}, {});\n",
            uuid(i),
            ts(at(NOW) - Duration::days(days)),
            ts(at("2026-01-01T00:00:00Z"))
        ));
    }
    ws.exec(&sql).await;
}

pub async fn row_exists(ws: &Ws, n: u32) -> bool {
    ws.count(&format!("SELECT count(*) FROM forum_attachment WHERE CAST(id AS TEXT) = '{}'", uuid(n))).await == 1
}

/// Targets with one of `outcomes` in a JSON report.
pub fn targets(report: &serde_json::Value, outcomes: &[&str]) -> BTreeSet<String> {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| outcomes.contains(&i["outcome"].as_str().unwrap()))
        .map(|i| i["target"].as_str().unwrap().to_string())
        .collect()
}

pub async fn cutoff_is_inclusive_and_everything_else_survives(b: Backend) {
    let ws = Ws::new(b, true).await;
    let cutoff = at(CUTOFF);
    let f1 = ws.file("att/1.jpg", 1000, old_file_time());
    let f2 = ws.file("att/2.jpg", 2000, old_file_time());
    let f3 = ws.file("att/3.jpg", 3000, old_file_time());
    let f4 = ws.file("att/4.jpg", 4000, old_file_time());
    let f5 = ws.file("att/5.jpg", 5000, old_file_time());
    row(&ws, 1, Some("att/1.jpg"), false, Some(cutoff)).await; // exactly at the cutoff: deleted
    row(&ws, 2, Some("att/2.jpg"), false, Some(cutoff + Duration::seconds(1))).await; // one second later: kept
    row(&ws, 3, Some("att/3.jpg"), true, None).await; // active: kept
    row(&ws, 4, Some("att/4.jpg"), false, Some(at(NOW) - Duration::days(5))).await; // recent: kept
    row(&ws, 5, Some("att/5.jpg"), false, Some(at(NOW) - Duration::days(90))).await; // old: deleted
    row(&ws, 6, Some("att/4.jpg"), true, Some(at(NOW) - Duration::days(90))).await; // active despite old deleted_at: kept

    let r = ws.sweep(&["--now", NOW, "cleanup-attachments", "--json"]);
    r.expect(0);
    let j = r.json();
    assert_eq!(j["cutoff"], "2026-10-23T10:00:00+00:00");
    assert_eq!(j["deleted"], 4, "{}", r.stdout);
    assert_eq!(j["bytes_reclaimed"], 6000);
    assert!(!row_exists(&ws, 1).await && !row_exists(&ws, 5).await);
    assert!(!f1.exists() && !f5.exists());
    for n in [2, 3, 4, 6] {
        assert!(row_exists(&ws, n).await, "row {n} must survive");
    }
    assert!(f2.exists() && f3.exists() && f4.exists());
    // The audit has every item, and the run is recorded.
    assert_eq!(ws.count("SELECT count(*) FROM cleanup_audit WHERE outcome = 'deleted'").await, 4);
    assert_eq!(ws.count("SELECT count(*) FROM cleanup_runs WHERE status = 'success' AND deleted = 4").await, 1);
    assert_eq!(ws.count("SELECT count(*) FROM cleanup_audit WHERE kind = 'row' AND row_snapshot IS NOT NULL").await, 2);
}

pub async fn dry_run_changes_nothing_and_lists_what_the_real_run_deletes(b: Backend) {
    let ws = Ws::new(b, true).await;
    for n in 1..=6 {
        ws.file(&format!("att/{n}.png"), 100 * n as usize, old_file_time());
        row(&ws, n, Some(&format!("att/{n}.png")), n % 3 == 0, Some(at(NOW) - Duration::days(40 + n as i64))).await;
    }
    row(&ws, 7, Some("att/gone.png"), false, Some(at(NOW) - Duration::days(50))).await; // file missing
    row(&ws, 8, None, false, Some(at(NOW) - Duration::days(50))).await; // no file at all

    let dry = ws.sweep(&["--now", NOW, "--dry-run", "cleanup-attachments", "--json"]);
    dry.expect(0);
    let d = dry.json();
    assert_eq!(d["dry_run"], true);
    assert_eq!(d["deleted"], 0);
    let would = targets(&d, &["would_delete"]);
    assert_eq!(would.len(), 4 * 2 + 2 + 1, "{would:?}");
    // Nothing changed, not even sweep's own tables.
    assert_eq!(ws.count("SELECT count(*) FROM forum_attachment").await, 8);
    assert_eq!(ws.count("SELECT count(*) FROM cleanup_runs").await, 0);
    for n in 1..=6 {
        assert!(ws.media.join(format!("att/{n}.png")).exists());
    }
    // The environment form of dry run too.
    ws.sweep_env(&["--now", NOW, "cleanup-attachments"], &[("CLEANUP_DRY_RUN", "true")]).expect(0);
    assert_eq!(ws.count("SELECT count(*) FROM forum_attachment").await, 8);

    let real = ws.sweep(&["--now", NOW, "cleanup-attachments", "--json"]);
    real.expect(0);
    let done = targets(&real.json(), &["deleted", "missing"]);
    assert_eq!(would, done, "the real run deleted exactly what the dry run listed");
    assert_eq!(ws.count("SELECT count(*) FROM forum_attachment").await, 2, "the two active rows survive");
    assert!(ws.media.join("att/3.png").exists() && ws.media.join("att/6.png").exists());
}

pub async fn a_file_already_gone_is_a_success(b: Backend) {
    let ws = Ws::new(b, true).await;
    row(&ws, 1, Some("att/never-written.jpg"), false, Some(at(NOW) - Duration::days(60))).await;
    let r = ws.sweep(&["--now", NOW, "cleanup-attachments", "--json"]);
    r.expect(0);
    let j = r.json();
    let outcomes: Vec<&str> = j["items"].as_array().unwrap().iter().map(|i| i["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["missing", "deleted"]);
    assert!(!row_exists(&ws, 1).await);
}

pub async fn traversal_values_are_refused_and_their_rows_kept(b: Backend) {
    let ws = Ws::new(b, true).await;
    let outside = ws.dir.path().join("outside.txt");
    write_aged(&outside, 10, old_file_time());
    #[cfg(unix)]
    std::os::unix::fs::symlink(ws.dir.path(), ws.media.join("escape")).unwrap();
    let old = Some(at(NOW) - Duration::days(60));
    row(&ws, 1, Some("../outside.txt"), false, old).await;
    row(&ws, 2, Some(outside.to_str().unwrap()), false, old).await;
    row(&ws, 3, Some("escape/outside.txt"), false, old).await;
    row(&ws, 4, Some("att/../../outside.txt"), false, old).await;
    ws.file("att/ok.jpg", 10, old_file_time());
    row(&ws, 5, Some("att/ok.jpg"), false, old).await;
    // An absolute path inside the root is accepted.
    let inside = ws.file("att/abs.jpg", 10, old_file_time());
    row(&ws, 6, Some(inside.to_str().unwrap()), false, old).await;

    let r = ws.sweep(&["--now", NOW, "cleanup-attachments", "--json"]);
    r.expect(1);
    let j = r.json();
    assert_eq!(j["failed"], 4, "{}", r.stdout);
    assert_eq!(j["status"], "partial");
    assert!(outside.exists(), "the file outside the root survives");
    for n in 1..=4 {
        assert!(row_exists(&ws, n).await, "row {n} with a refused image is kept");
    }
    assert!(!row_exists(&ws, 5).await && !row_exists(&ws, 6).await);
    assert!(!inside.exists());
    assert!(r.stderr.contains("refused"), "{}", r.stderr);
}

pub async fn a_real_run_without_migrations_is_refused(b: Backend) {
    let ws = Ws::new(b, false).await;
    let f = ws.file("att/1.jpg", 10, old_file_time());
    row(&ws, 1, Some("att/1.jpg"), false, Some(at(NOW) - Duration::days(60))).await;
    let r = ws.sweep(&["--now", NOW, "cleanup-attachments"]);
    r.expect(2);
    assert!(r.stderr.contains("sweep migrate"), "{}", r.stderr);
    assert!(row_exists(&ws, 1).await && f.exists());
    // A dry run needs no tables of sweep's.
    ws.sweep(&["--now", NOW, "--dry-run", "cleanup-attachments"]).expect(0);
    // After `sweep migrate` (twice: idempotent) the real run goes ahead.
    ws.sweep(&["migrate"]).expect(0);
    ws.sweep(&["migrate"]).expect(0);
    assert_eq!(ws.count("SELECT count(*) FROM cleanup_policies").await, 6);
    ws.sweep(&["--now", NOW, "cleanup-attachments"]).expect(0);
    assert!(!row_exists(&ws, 1).await && !f.exists());
}

pub async fn a_second_concurrent_run_exits_75(b: Backend) {
    let ws = Ws::new(b, true).await;
    let f = ws.file("att/1.jpg", 10, old_file_time());
    row(&ws, 1, Some("att/1.jpg"), false, Some(at(NOW) - Duration::days(60))).await;
    {
        // Another run holds the lock, exactly as sweep takes it.
        let _held = hold_lock(&ws, "cleanup-attachments").await;
        let r = ws.sweep(&["--now", NOW, "cleanup-attachments"]);
        r.expect(75);
        assert!(r.stderr.contains("another"), "{}", r.stderr);
        assert!(row_exists(&ws, 1).await && f.exists(), "the locked-out run changed nothing");
        // Another command is not blocked by this lock... but there is no other yet; a dry run is not blocked.
        ws.sweep(&["--now", NOW, "--dry-run", "cleanup-attachments"]).expect(0);
    }
    // The holder went away (as a crashed run would): no stale lock remains.
    ws.sweep(&["--now", NOW, "cleanup-attachments"]).expect(0);
    assert!(!row_exists(&ws, 1).await);
}

/// Take sweep's run lock for `command` the way the binary does.
pub async fn hold_lock(ws: &Ws, command: &str) -> Box<dyn std::any::Any> {
    match ws.backend {
        Backend::Postgres => {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&ws.url).await.unwrap();
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(sweep::db::lock::lock_key(command))
                .fetch_one(&mut c)
                .await
                .unwrap();
            assert!(got);
            Box::new(c)
        }
        Backend::MySql => {
            use sqlx::Connection;
            let mut c = sqlx::MySqlConnection::connect(&ws.url).await.unwrap();
            let name = format!("sweep:{}:{command}", ws.url.rsplit('/').next().unwrap());
            let got: i64 = sqlx::query_scalar("SELECT GET_LOCK(?, 0)").bind(name).fetch_one(&mut c).await.unwrap();
            assert_eq!(got, 1);
            Box::new(c)
        }
        Backend::Sqlite => {
            let p = ws.dir.path().join(format!("app.db.sweep-{command}.lock"));
            let f = std::fs::File::create(p).unwrap();
            f.try_lock().unwrap();
            Box::new(f)
        }
    }
}

pub async fn grace_period_and_protected_prefix_keep_files_and_rows(b: Backend) {
    let ws = Ws::new(b, true).await;
    let old = Some(at(NOW) - Duration::days(60));
    let fresh = ws.file("att/fresh.jpg", 10, at(NOW) - Duration::minutes(10));
    let edge = ws.file("att/edge.jpg", 10, at(NOW) - Duration::minutes(30));
    let backup = ws.file("backups/att/b.jpg", 10, old_file_time());
    row(&ws, 1, Some("att/fresh.jpg"), false, old).await;
    row(&ws, 2, Some("att/edge.jpg"), false, old).await;
    row(&ws, 3, Some("backups/att/b.jpg"), false, old).await;
    let r = ws.sweep(&["--now", NOW, "cleanup-attachments", "--json"]);
    r.expect(0);
    assert!(fresh.exists() && row_exists(&ws, 1).await, "modified 10 minutes ago: within the 30-minute grace");
    assert!(backup.exists() && row_exists(&ws, 3).await, "backups/ is protected");
    assert!(!edge.exists() && !row_exists(&ws, 2).await, "modified exactly 30 minutes ago: past the grace");
    assert_eq!(r.json()["retained"], 4);
    // A shorter grace from the environment lets the fresh one go.
    ws.sweep_env(&["--now", NOW, "cleanup-attachments"], &[("CLEANUP_GRACE_MINUTES", "5")]).expect(0);
    assert!(!fresh.exists() && !row_exists(&ws, 1).await);
    assert!(backup.exists());
}

pub async fn caps_stop_the_run_before_anything_is_deleted(b: Backend) {
    let ws = Ws::new(b, true).await;
    for n in 1..=3 {
        ws.file(&format!("att/{n}.jpg"), 10, old_file_time());
        row(&ws, n, Some(&format!("att/{n}.jpg")), false, Some(at(NOW) - Duration::days(60))).await;
    }
    row(&ws, 4, None, true, None).await;
    let r = ws.sweep(&["--now", NOW, "--max-delete", "2", "cleanup-attachments"]);
    r.expect(3);
    assert!(r.stderr.contains("--max-delete 2"), "{}", r.stderr);
    let r = ws.sweep(&["--now", NOW, "--max-delete-percent", "50", "cleanup-attachments", "--json"]);
    r.expect(3);
    // SPEC §6: with --json, a run a cap stopped still prints its report, status "aborted".
    let j = r.json();
    assert_eq!(j["status"], "aborted", "{}", r.stdout);
    assert_eq!(j["deleted"], 0);
    assert!(j["message"].as_str().unwrap().contains("--max-delete-percent 50"), "{}", r.stdout);
    assert!(r.stderr.contains("--max-delete-percent 50"), "{}", r.stderr);
    assert_eq!(ws.count("SELECT count(*) FROM forum_attachment").await, 4);
    assert!(ws.media.join("att/1.jpg").exists());
    assert_eq!(ws.count("SELECT count(*) FROM cleanup_runs WHERE status = 'aborted'").await, 2);
    ws.sweep(&["--now", NOW, "--max-delete", "3", "cleanup-attachments"]).expect(0);
    assert_eq!(ws.count("SELECT count(*) FROM forum_attachment").await, 1);
}

pub async fn s3_store_one_failed_delete_keeps_its_row(b: Backend) {
    let ws = Ws::new(b, true).await;
    let s3 = S3Server::shared();
    let bucket = format!("att-{}", b.tag());
    s3.bucket(&bucket);
    let old = Some(at(NOW) - Duration::days(60));
    let keys = ["2026/a b+c.jpg", "2026/ünï.png", "2026/x-undeletable.png", "2026/plain.jpg"];
    for (i, k) in keys.iter().enumerate() {
        s3.put(&bucket, &format!("attachments/{k}"), 100, old_file_time());
        row(&ws, i as u32 + 1, Some(k), false, old).await;
    }
    s3.put(&bucket, "attachments/2026/active.jpg", 100, old_file_time());
    row(&ws, 9, Some("2026/active.jpg"), true, None).await;
    let cfg = ws.dir.path().join("sweep.toml");
    std::fs::write(&cfg, format!("[attachments]\nstore = \"s3://{bucket}/attachments\"\n")).unwrap();
    let env: Vec<(&str, String)> = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let backups = ws.dir.path().join("bk");
    let r = ws.sweep_env(
        &[
            "--now",
            NOW,
            "--backup-dir",
            backups.to_str().unwrap(),
            "cleanup-attachments",
            "--json",
            "--batch-size",
            "2",
        ],
        &env,
    );
    r.expect(1);
    // Every deleted object was downloaded first, under the store's name and its key.
    assert_eq!(std::fs::read(backups.join("attachments/2026/a b+c.jpg")).unwrap().len(), 100);
    assert!(backups.join("attachments/2026/ünï.png").exists());
    let j = r.json();
    assert_eq!(j["failed"], 1, "{}", r.stdout);
    assert_eq!(j["attachments_failed"], 1);
    assert_eq!(j["attachments_deleted"], 3);
    assert!(row_exists(&ws, 3).await, "the row whose object could not be deleted is kept");
    assert!(s3.exists(&bucket, "attachments/2026/x-undeletable.png"));
    for n in [1, 2, 4] {
        assert!(!row_exists(&ws, n).await);
    }
    assert!(!s3.exists(&bucket, "attachments/2026/a b+c.jpg") && !s3.exists(&bucket, "attachments/2026/ünï.png"));
    assert!(s3.exists(&bucket, "attachments/2026/active.jpg") && row_exists(&ws, 9).await);
    // The audit says the same, once per item: the failed object and its row, not attempted,
    // go with the other rows' deletion (the batch's last step).
    let audited = |kind: &str, outcome: &str| {
        format!("SELECT count(*) FROM cleanup_audit WHERE kind = '{kind}' AND outcome = '{outcome}'")
    };
    assert_eq!(ws.count(&audited("object", "failed")).await, 1);
    assert_eq!(ws.count(&audited("row", "skipped")).await, 1, "the kept row is audited as not attempted");
    assert_eq!(ws.count(&audited("object", "deleted")).await, 3);
    assert_eq!(ws.count(&audited("row", "deleted")).await, 3);
    assert_eq!(ws.count(&audited("batch", "intent")).await, 0, "no intent left");
    assert!(!r.stderr.contains(S3_SECRET) && !r.stdout.contains(S3_SECRET), "the secret key never appears");
    assert!(r.stderr.contains("AccessDenied") || r.stderr.contains("Access Denied"), "{}", r.stderr);
}

pub async fn many_rows_are_paged_and_batched(b: Backend) {
    let ws = Ws::new(b, true).await;
    let mut sql = String::new();
    let n_old = 2_345u32;
    for n in 1..=n_old + 100 {
        let active = n > n_old;
        let rel = format!("bulk/{:02}/{n}.jpg", n % 50);
        write_aged(&ws.media.join(&rel), 16, old_file_time());
        sql.push_str(&format!(
            "INSERT INTO forum_attachment (id, image, original_filename, file_size, is_active, deleted_at, created_at) \
             VALUES ('{}', '{rel}', 'x.jpg', 16, {}, {}, {});\n",
            uuid(n),
            if active { "TRUE" } else { "FALSE" },
            ts(at(NOW) - Duration::days(31)),
            ts(at("2026-01-01T00:00:00Z"))
        ));
    }
    ws.exec(&sql).await;
    let r = ws.sweep(&["--now", NOW, "cleanup-attachments", "--batch-size", "250"]);
    r.expect(0);
    assert_eq!(ws.count("SELECT count(*) FROM forum_attachment").await, 100);
    assert_eq!(ws.count("SELECT count(*) FROM cleanup_audit").await, 2 * n_old as i64);
    assert!(r.stderr.contains(&format!("Deleted 250/{n_old}")), "progress every batch");
    assert!(r.stderr.contains(&format!("Deleted {n_old}/{n_old}")));
    assert!(ws.media.join(format!("bulk/{:02}/{}.jpg", (n_old + 1) % 50, n_old + 1)).exists());
    assert!(r.stdout.contains("Successfully deleted") || r.stderr.contains("Successfully deleted"));
}

pub async fn the_json_report_carries_the_spec_fields(b: Backend) {
    let ws = Ws::new(b, true).await;
    ws.file("att/1.jpg", 10, old_file_time());
    row(&ws, 1, Some("att/1.jpg"), false, Some(at(NOW) - Duration::days(60))).await;
    let r = ws.sweep(&["--now", NOW, "cleanup-attachments", "--json"]);
    r.expect(0);
    let j = r.json();
    for k in [
        "run_id",
        "command",
        "dry_run",
        "status",
        "started_at",
        "finished_at",
        "scanned",
        "candidates",
        "deleted",
        "failed",
        "retained",
        "bytes_reclaimed",
        "by_kind",
        "items",
        "cutoff",
    ] {
        assert!(j.get(k).is_some(), "missing {k} in {j}");
    }
    assert_eq!(j["command"], "cleanup-attachments");
    assert_eq!(j["status"], "success");
    assert_eq!(j["by_kind"]["row"]["deleted"], 1);
    assert_eq!(j["by_kind"]["file"]["deleted"], 1);
    let item = &j["items"][0];
    for k in ["kind", "target", "reason", "bytes", "outcome", "error"] {
        assert!(item.get(k).is_some(), "item lacks {k}: {item}");
    }
    let run_id = j["run_id"].as_str().unwrap();
    assert_eq!(ws.count(&format!("SELECT count(*) FROM cleanup_audit WHERE run_id = '{run_id}'")).await, 2);
    // Logs went to stderr, and they carry the [cleanup] target.
    assert!(r.stderr.contains("[cleanup]"));
}

/// Ctrl-C stops between batches; whatever was deleted is audited, and no row outlives its file.
#[cfg(unix)]
pub async fn ctrl_c_stops_between_batches_and_the_audit_stays_consistent(b: Backend) {
    let ws = Ws::new(b, true).await;
    let n = 3000u32;
    old_attachments(&ws, n, |i| format!("int/{:02}/{i}.jpg", i % 20), 31).await;
    let child = crate::support::sweep_command()
        .args(["--now", NOW, "cleanup-attachments", "--batch-size", "1", "--json"])
        .env("DATABASE_URL", &ws.url)
        .env("MEDIA_ROOT", &ws.media)
        .current_dir(ws.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it is deleting, then interrupt it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while ws.count("SELECT count(*) FROM forum_attachment").await == n as i64 {
        assert!(std::time::Instant::now() < deadline, "the run never started deleting");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "an interrupted run exits 1\n{}", String::from_utf8_lossy(&out.stderr));
    let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(j["status"], "partial");
    let left = ws.count("SELECT count(*) FROM forum_attachment").await;
    assert!(left > 0, "interrupted before the end");
    let audited_rows = ws.count("SELECT count(*) FROM cleanup_audit WHERE kind = 'row' AND outcome = 'deleted'").await;
    assert_eq!(audited_rows, n as i64 - left, "every deleted row is in the audit");
    let audited_files =
        ws.count("SELECT count(*) FROM cleanup_audit WHERE kind = 'file' AND outcome = 'deleted'").await;
    let files_left = walkdir::WalkDir::new(ws.media.join("int"))
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .count();
    assert_eq!(audited_files, n as i64 - files_left as i64, "every deleted file is in the audit");
    assert_eq!(files_left as i64, left, "no row outlives its file, no file its row");
    assert_eq!(ws.count("SELECT count(*) FROM cleanup_runs WHERE status = 'partial'").await, 1);
}

/// A real run with --backup-dir can be undone: rows and files come back exactly.
pub async fn restore_brings_back_rows_and_files_byte_for_byte(b: Backend) {
    let ws = Ws::new(b, true).await;
    let old = Some(at(NOW) - Duration::days(60));
    let mut bodies = Vec::new();
    for n in 1..=3u32 {
        let rel = format!("att/{n}.jpg");
        let p = ws.file(&rel, 100 + n as usize, old_file_time());
        std::fs::write(&p, format!("image bytes {n} ").repeat(n as usize * 10)).unwrap();
        std::fs::File::options().write(true).open(&p).unwrap().set_modified(old_file_time().into()).unwrap();
        bodies.push((p.clone(), std::fs::read(&p).unwrap()));
        row(&ws, n, Some(&rel), false, old).await;
    }
    let backups = ws.dir.path().join("backups-here");
    let r = ws.sweep(&["--now", NOW, "--backup-dir", backups.to_str().unwrap(), "cleanup-attachments", "--json"]);
    r.expect(0);
    let run_id = r.json()["run_id"].as_str().unwrap().to_string();
    assert_eq!(ws.count("SELECT count(*) FROM forum_attachment").await, 0);
    assert!(bodies.iter().all(|(p, _)| !p.exists()));
    assert!(backups.join("media/att/2.jpg").exists(), "backed up under the root's name");

    let list = ws.sweep(&["restore", "--list", "--json"]);
    list.expect(0);
    let l: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(l[0]["run_id"], run_id.as_str());
    assert_eq!(l[0]["restorable"], 6);

    ws.sweep(&["--dry-run", "restore", "--run", &run_id]).expect(0);
    assert_eq!(ws.count("SELECT count(*) FROM forum_attachment").await, 0, "a dry run restores nothing");

    let r = ws.sweep(&["restore", "--run", &run_id, "--json"]);
    r.expect(0);
    // The application's own query sees them again, exactly as they were.
    let q =
        "SELECT count(*) FROM forum_attachment WHERE is_active = FALSE AND deleted_at IS NOT NULL AND file_size = 1024";
    assert_eq!(ws.count(q).await, 3, "{}", r.stdout);
    for (p, body) in &bodies {
        assert_eq!(&std::fs::read(p).unwrap(), body, "{}", p.display());
    }
    assert_eq!(
        ws.count("SELECT count(*) FROM cleanup_audit WHERE policy = 'restore' AND outcome = 'restored'").await,
        6
    );
    // Nothing is overwritten by a second restore.
    let again = ws.sweep(&["restore", "--run", &run_id, "--json"]);
    again.expect(0);
    assert!(again.stdout.matches("\"skipped\"").count() == 6, "{}", again.stdout);
}

pub async fn an_undecodable_value_fails_only_its_own_attachment(b: Backend) {
    if b != Backend::Sqlite {
        return; // PostgreSQL and MySQL text columns refuse invalid UTF-8; SQLite's take any bytes
    }
    let ws = Ws::new(b, true).await;
    let old = Some(at(NOW) - Duration::days(60));
    for n in 1..=5 {
        ws.file(&format!("att/{n}.jpg"), 10, old_file_time());
        row(&ws, n, Some(&format!("att/{n}.jpg")), false, old).await;
    }
    row(&ws, 6, Some("placeholder"), false, old).await;
    ws.exec(&format!("UPDATE forum_attachment SET image = X'FFFE41' WHERE id = '{}'", uuid(6))).await;
    let r = ws.sweep(&["--now", NOW, "cleanup-attachments", "--json"]);
    r.expect(1);
    let j = r.json();
    assert_eq!(j["attachments_deleted"], 5, "{}", r.stdout);
    assert_eq!(j["attachments_failed"], 1, "{}", r.stdout);
    let failed: Vec<&serde_json::Value> =
        j["items"].as_array().unwrap().iter().filter(|i| i["outcome"] == "failed").collect();
    let err = failed[0]["error"].as_str().unwrap();
    assert!(err.contains(&format!("forum_attachment id={}", uuid(6))) && err.contains("image"), "{err}");
    assert!(err.contains("UTF-8"), "{err}");
    assert!(row_exists(&ws, 6).await, "the undecodable row is kept");
    for n in 1..=5 {
        assert!(!row_exists(&ws, n).await && !ws.media.join(format!("att/{n}.jpg")).exists());
    }
}

/// Keys that are numbers page in numeric order: a keyset page ordered by the key's text form
/// (`ORDER BY id` naming the select list's cast) skipped rows past the first page.
pub async fn integer_keys_are_paged_in_key_order_and_none_is_skipped(b: Backend) {
    let ws = Ws::new(b, true).await;
    let time = if b == Backend::MySql { "DATETIME(6)" } else { "TIMESTAMPTZ" };
    ws.exec(&format!(
        "CREATE TABLE att_int (num BIGINT PRIMARY KEY, image VARCHAR(255), file_size BIGINT, is_active BOOLEAN NOT NULL, deleted_at {time})"
    ))
    .await;
    let n = 2600u32; // more than one page of 2,000
    let mut sql = String::new();
    for i in 1..=n {
        let rel = format!("int/{:02}/{i}.jpg", i % 20);
        write_aged(&ws.media.join(&rel), 4, old_file_time());
        sql.push_str(&format!(
            "INSERT INTO att_int (num, image, file_size, is_active, deleted_at) VALUES ({i}, '{rel}', 4, FALSE, {});\n",
            ts(at(NOW) - Duration::days(31))
        ));
    }
    ws.exec(&sql).await;
    std::fs::write(
        ws.dir.path().join("sweep.toml"),
        "[attachments.forum_attachment]\ntable = \"att_int\"\nid = \"num\"\n",
    )
    .unwrap();
    let r = ws.sweep(&["--now", NOW, "cleanup-attachments", "--json"]);
    r.expect(0);
    assert_eq!(r.json()["scanned"], n as u64, "every row was read");
    assert_eq!(ws.count("SELECT count(*) FROM att_int").await, 0, "no row skipped");
}

/// PostgreSQL plans the candidates in the table's physical order (as the rows were written: a
/// batch's rows then share heap pages, its files go in about the order they were written),
/// the others in key order; every candidate once either way.
pub async fn candidates_are_planned_in_physical_order_on_postgres_in_key_order_elsewhere(b: Backend) {
    let ws = Ws::new(b, true).await;
    for n in (1..=5).rev() {
        let rel = format!("att/{n}.jpg");
        ws.file(&rel, 10, old_file_time());
        row(&ws, n, Some(&rel), false, Some(at(NOW) - Duration::days(60))).await;
    }
    row(&ws, 6, Some("att/6.jpg"), true, None).await;
    let r = ws.sweep(&["--now", NOW, "cleanup-attachments", "--dry-run", "--json"]);
    r.expect(0);
    let files: Vec<String> = r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "file")
        .map(|i| i["target"].as_str().unwrap().to_string())
        .collect();
    let mut written: Vec<String> = (1..=5).rev().map(|n| format!("media:att/{n}.jpg")).collect();
    if b != Backend::Postgres {
        written.reverse();
    }
    assert_eq!(files, written);
}

/// On PostgreSQL planning reads its candidates in short statements (a cursor, a `FETCH` a
/// page): an application's `statement_timeout` (300 ms here) does not cut short a planning
/// that lasts longer (four pages of 2,000 rows, each held 500 ms by `SWEEP_PAGE_DELAY_MS`).
/// One query streamed through the whole planning was cancelled by it, once its 16 MB result
/// outgrew what the socket buffers.
pub async fn a_planning_longer_than_the_statement_timeout_completes(b: Backend) {
    assert_eq!(b, Backend::Postgres, "a PostgreSQL scenario");
    let ws = Ws::new(b, true).await;
    let n = 8_000;
    // Image values of 2 KB (ten directories of 200 characters), none of them there.
    ws.exec(&format!(
        "CREATE TABLE att_big (id uuid PRIMARY KEY, image text, file_size bigint, is_active boolean NOT NULL, deleted_at timestamptz);
         INSERT INTO att_big SELECT gen_random_uuid(), repeat(repeat('d', 199) || '/', 10) || i || '.jpg', 0, false, {}
         FROM generate_series(1, {n}) AS i;
         DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET statement_timeout = %L', current_database(), '300ms'); END $$;",
        ts(at(NOW) - Duration::days(31))
    ))
    .await;
    std::fs::write(ws.dir.path().join("sweep.toml"), "[attachments.forum_attachment]\ntable = \"att_big\"\n").unwrap();
    let r =
        ws.sweep_env(&["--now", NOW, "cleanup-attachments", "--dry-run", "--json"], &[("SWEEP_PAGE_DELAY_MS", "500")]);
    r.expect(0);
    assert_eq!(r.json()["scanned"], n, "every candidate was read");
}

/// Rows reactivated after the plan was made and before their batch runs are kept with their
/// files, whether their unit starts with the file (re-checked before it is touched) or is the
/// row alone (re-checked by its guarded `DELETE`); the rest goes, and the audit says which.
pub async fn rows_reactivated_during_the_run_are_kept(b: Backend) {
    let ws = Ws::new(b, true).await;
    let old = Some(at(NOW) - Duration::days(60));
    for i in 1..=3u32 {
        ws.file(&format!("att/{i}.jpg"), 10, old_file_time());
        row(&ws, i, Some(&format!("att/{i}.jpg")), false, old).await;
    }
    for i in 4..=6u32 {
        row(&ws, i, None, false, old).await;
    }
    let mut child = crate::support::sweep_command()
        .args(["--now", NOW, "cleanup-attachments", "--batch-size", "1", "--json"])
        .env("DATABASE_URL", &ws.url)
        .env("MEDIA_ROOT", &ws.media)
        .env("SWEEP_BATCH_DELAY_MS", "1500")
        .current_dir(ws.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the plan is made (every batch then waits 1.5 s before it starts), reactivate two of
    // each kind.
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("Plan: ") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(std::time::Duration::from_secs(30)).expect("the plan is made");
    ws.exec(&format!(
        "UPDATE forum_attachment SET is_active = TRUE, deleted_at = NULL WHERE id IN ('{}', '{}', '{}', '{}')",
        uuid(2),
        uuid(3),
        uuid(5),
        uuid(6)
    ))
    .await;
    let out = child.wait_with_output().unwrap();
    let stderr = reader.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "skips alone exit 0\n{stderr}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for i in 1..=6u32 {
        let kept = ![1, 4].contains(&i);
        assert_eq!(row_exists(&ws, i).await, kept, "row {i}");
        if i <= 3 {
            assert_eq!(ws.media.join(format!("att/{i}.jpg")).exists(), kept, "file {i}");
        }
        let target = format!("forum_attachment id={}", uuid(i));
        let want = if kept { "skipped" } else { "deleted" };
        assert!(targets(&j, &[want]).contains(&target), "{target} is {want} in the report");
        let audited = ws
            .count(&format!(
                "SELECT count(*) FROM cleanup_audit WHERE kind = 'row' AND target = '{target}' AND outcome = '{want}'"
            ))
            .await;
        assert_eq!(audited, 1, "{target} is audited once as {want}");
    }
    assert_eq!(ws.count("SELECT count(*) FROM cleanup_audit WHERE kind = 'file' AND outcome = 'deleted'").await, 1);
    assert_eq!(ws.count("SELECT count(*) FROM cleanup_audit WHERE outcome = 'intent'").await, 0, "no intent left");
}

/// On PostgreSQL a batch of attachments is two statements: its intent with the re-check of
/// its rows, then the rows' deletion with their audit, the files' outcomes and the intent's
/// removal. Counted by the server: its committed transactions in the database (one per
/// statement, and one per statement prepared on a connection), read once the sessions ended.
pub async fn a_batch_of_attachments_is_two_statements_on_postgres(b: Backend) {
    assert_eq!(b, Backend::Postgres, "a PostgreSQL scenario");
    let ws = Ws::new(b, true).await;
    let (n, batch) = (300u32, 2u32);
    old_attachments(&ws, n, |i| format!("att/{i}.jpg"), 60).await;
    // Read from another database of the cluster, so that reading adds nothing; sessions that
    // ended have their counts in the view (a moment after they end).
    let dbname = ws.url.rsplit('/').next().unwrap().to_string();
    let other = Ws {
        backend: b,
        dir: tempfile::tempdir().unwrap(),
        url: ws.url.replace(&dbname, "postgres"),
        media: ws.media.clone(),
    };
    let commits = format!("SELECT xact_commit FROM pg_stat_database WHERE datname = '{dbname}'");
    let settled = || async {
        let mut last = other.count(&commits).await;
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let now = other.count(&commits).await;
            if now == last {
                return now;
            }
            last = now;
        }
    };
    let before = settled().await;
    ws.sweep(&["--now", NOW, "cleanup-attachments", "--batch-size", &batch.to_string()]).expect(0);
    let after = settled().await;
    assert_eq!(ws.count("SELECT count(*) FROM forum_attachment").await, 0);
    assert_eq!(ws.count("SELECT count(*) FROM cleanup_audit WHERE outcome = 'deleted'").await, 2 * n as i64);
    let batches = (n / batch) as i64;
    // Two a batch, and at most 50 for the rest: the lock, the run's record, the planning, each
    // statement prepared once per connection (335 in all when written; three statements a
    // batch made 497).
    assert!(after - before <= 2 * batches + 50, "{} transactions for {batches} batches", after - before);
}
