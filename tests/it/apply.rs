//! `--plan-out` → `sweep apply`, `--backup-to` and `restore` of objects, through the real
//! binary on PostgreSQL, SQLite and MariaDB, with real files and the S3-protocol server.

use crate::attachments::{old_file_time, row, row_exists, targets, uuid, NOW};
use crate::support::*;
use chrono::Duration;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn row_target(n: u32) -> String {
    format!("forum_attachment id={}", uuid(n))
}

/// Rewrite a file with other content, keeping it old (so only its fingerprint tells).
fn rewrite(p: &Path, body: &[u8]) {
    std::fs::write(p, body).unwrap();
    std::fs::File::options().write(true).open(p).unwrap().set_modified(old_file_time().into()).unwrap();
}

/// Three soft-deleted attachments past the cutoff (files att/1..3.jpg) and one active (4).
async fn attachments(ws: &Ws) -> Vec<PathBuf> {
    let old = Some(chrono::DateTime::parse_from_rfc3339(NOW).unwrap().to_utc() - Duration::days(60));
    let mut files = Vec::new();
    for n in 1..=4u32 {
        let rel = format!("att/{n}.jpg");
        files.push(ws.file(&rel, 100 * n as usize, old_file_time()));
        row(ws, n, Some(&rel), n == 4, if n == 4 { None } else { old }).await;
    }
    files
}

fn plan(ws: &Ws, env: &[(&str, &str)]) -> PathBuf {
    let p = ws.dir.path().join("plan.json");
    let r = ws.sweep_env(
        &["--now", NOW, "--dry-run", "--plan-out", p.to_str().unwrap(), "cleanup-attachments", "--json"],
        env,
    );
    r.expect(0);
    p
}

pub async fn apply_after_no_change_deletes_exactly_the_plan(b: Backend) {
    let ws = Ws::new(b, true).await;
    let files = attachments(&ws).await;
    let p = plan(&ws, &[]);
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    assert_eq!(doc["sweep_plan_version"], 2);
    let item = &doc["plan"]["units"][0]["items"][0];
    assert_eq!(item["fingerprint"]["type"], "file", "{item}");
    assert_eq!(doc["plan"]["units"][0]["items"][1]["fingerprint"]["type"], "row");
    assert!(!p.with_extension("json.tmp").exists(), "written atomically");
    let config = doc["config"].as_array().unwrap();
    let key = |k: &str| config.iter().find(|r| r["key"] == k).unwrap_or_else(|| panic!("{k} in {config:?}")).clone();
    assert_eq!(key("attachments.days")["value"], "30");
    assert_eq!(doc["database"]["backend"], b.name());
    assert!(doc["roots"]["media"].is_string());
    // A fifth eligible attachment appears after the review: not in the plan, not deleted.
    let late = ws.file("att/5.jpg", 500, old_file_time());
    row(&ws, 5, Some("att/5.jpg"), false, Some(old_file_time())).await;
    // A column the rule does not read changes after the review: the row still goes, and the
    // audit keeps it as it was when deleted (so restore puts back the latest version).
    ws.exec(&format!("UPDATE forum_attachment SET original_filename = 'renamed.jpg' WHERE id = '{}'", uuid(2))).await;

    let r = ws.sweep(&["apply", p.to_str().unwrap(), "--json"]);
    r.expect(0);
    let j = r.json();
    assert_eq!(j["command"], "cleanup-attachments");
    let deleted = targets(&j, &["deleted"]);
    let expected: BTreeSet<String> = (1..=3).flat_map(|n| [format!("media:att/{n}.jpg"), row_target(n)]).collect();
    assert_eq!(deleted, expected, "{}", r.stdout);
    assert!(targets(&j, &["skipped", "failed"]).is_empty());
    for n in 1..=3 {
        assert!(!row_exists(&ws, n).await && !files[n as usize - 1].exists());
    }
    assert!(row_exists(&ws, 4).await && files[3].exists(), "the active attachment survives");
    assert!(row_exists(&ws, 5).await && late.exists(), "what was not in the plan survives");
    // Audited like any run, under the plan's command.
    let run_id = j["run_id"].as_str().unwrap();
    let audited = ws
        .count(&format!(
            "SELECT count(*) FROM cleanup_audit WHERE run_id = '{run_id}' AND policy = 'cleanup-attachments' AND outcome = 'deleted'"
        ))
        .await;
    assert_eq!(audited, 6);
    let back = ws.sweep(&["restore", "--run", run_id, "--json"]);
    back.expect(0);
    let q =
        format!("SELECT count(*) FROM forum_attachment WHERE id = '{}' AND original_filename = 'renamed.jpg'", uuid(2));
    assert_eq!(ws.count(&q).await, 1, "restored as deleted, not as planned: {}", back.stdout);
    ws.exec("DELETE FROM forum_attachment WHERE is_active = FALSE AND original_filename <> 'photo-5.jpg'").await;
    // Applying the same plan again deletes nothing more: everything is already gone.
    let again = ws.sweep(&["apply", p.to_str().unwrap(), "--json"]);
    again.expect(0);
    assert!(targets(&again.json(), &["deleted"]).is_empty(), "{}", again.stdout);
    assert!(row_exists(&ws, 5).await && late.exists());
}

pub async fn apply_skips_a_modified_file_and_a_reactivated_or_changed_row(b: Backend) {
    let ws = Ws::new(b, true).await;
    let files = attachments(&ws).await;
    let p = plan(&ws, &[]);
    rewrite(&files[0], b"a different picture, same old mtime"); // 1: file modified
    ws.exec(&format!("UPDATE forum_attachment SET is_active = TRUE, deleted_at = NULL WHERE id = '{}'", uuid(2))).await; // 2: reactivated
    let before = std::fs::read(&files[0]).unwrap();

    // A dry apply re-checks too: it shows the skips and changes nothing.
    let dry = ws.sweep(&["--dry-run", "apply", p.to_str().unwrap(), "--json"]);
    dry.expect(0);
    let d = dry.json();
    assert_eq!(targets(&d, &["would_delete"]), set(&["media:att/3.jpg", &row_target(3)]), "{}", dry.stdout);
    assert!(files.iter().all(|f| f.exists()) && row_exists(&ws, 3).await);

    let r = ws.sweep(&["apply", p.to_str().unwrap(), "--json"]);
    r.expect(0);
    let j = r.json();
    assert_eq!(targets(&j, &["deleted"]), set(&["media:att/3.jpg", &row_target(3)]), "{}", r.stdout);
    let skipped = targets(&j, &["skipped"]);
    assert!(skipped.contains("media:att/1.jpg") && skipped.contains(&row_target(2)), "{}", r.stdout);
    let why = |t: &str| {
        j["items"].as_array().unwrap().iter().find(|i| i["target"] == t).unwrap()["error"].as_str().unwrap().to_string()
    };
    assert!(why("media:att/1.jpg").contains("changed since the plan"), "{}", why("media:att/1.jpg"));
    assert!(why(&row_target(2)).contains("changed"), "{}", why(&row_target(2)));
    // The batch's intent, written with the re-check, named the reactivated unit's file too: it
    // settled as skipped, and no intent is left.
    let audited = |target: &str, outcome: &str| {
        format!("SELECT count(*) FROM cleanup_audit WHERE target = '{target}' AND outcome = '{outcome}'")
    };
    assert_eq!(ws.count(&audited("media:att/2.jpg", "skipped")).await, 1);
    assert_eq!(ws.count(&audited("media:att/3.jpg", "deleted")).await, 1);
    assert_eq!(ws.count("SELECT count(*) FROM cleanup_audit WHERE outcome = 'intent'").await, 0);
    // What changed survives: the rewritten file with its new content, its row, the reactivated row.
    assert_eq!(std::fs::read(&files[0]).unwrap(), before);
    assert!(row_exists(&ws, 1).await && row_exists(&ws, 2).await && files[1].exists());
    assert!(!row_exists(&ws, 3).await && !files[2].exists());
    assert!(row_exists(&ws, 4).await && files[3].exists());

    // A row soft-deleted again later (still past the cutoff) is a changed row too.
    let ws2 = Ws::new(b, true).await;
    attachments(&ws2).await;
    let p2 = plan(&ws2, &[]);
    ws2.exec(&format!(
        "UPDATE forum_attachment SET deleted_at = {} WHERE id = '{}'",
        ts(old_file_time() + Duration::days(1)),
        uuid(1)
    ))
    .await;
    let r = ws2.sweep(&["apply", p2.to_str().unwrap(), "--json"]);
    r.expect(0);
    assert!(targets(&r.json(), &["skipped"]).contains(&row_target(1)), "{}", r.stdout);
    assert!(row_exists(&ws2, 1).await);
}

pub async fn apply_skips_a_replaced_object_and_restore_brings_objects_back_from_backup_to(b: Backend) {
    let ws = Ws::new(b, true).await;
    let s3 = S3Server::shared();
    let tag = b.tag();
    let bucket = format!("apply-{tag}");
    let backup_bucket = format!("apply-bk-{tag}");
    s3.bucket(&bucket);
    s3.bucket(&backup_bucket);
    let old = Some(old_file_time());
    for n in 1..=3u32 {
        let key = format!("2026/{n} photo.jpg");
        s3.put(&bucket, &format!("attachments/{key}"), 100 + n as usize, old_file_time());
        row(&ws, n, Some(&key), false, old).await;
    }
    let obj = |n: u32| s3.root.join(&bucket).join(format!("attachments/2026/{n} photo.jpg"));
    std::fs::write(ws.dir.path().join("sweep.toml"), format!("[attachments]\nstore = \"s3://{bucket}/attachments\"\n"))
        .unwrap();
    let env: Vec<(&str, String)> = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let bodies: Vec<Vec<u8>> = (1..=3).map(|n| std::fs::read(obj(n)).unwrap()).collect();
    let p = plan(&ws, &env);
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    assert_eq!(doc["plan"]["units"][0]["items"][0]["fingerprint"]["type"], "object");
    assert!(!std::fs::read_to_string(&p).unwrap().contains(S3_SECRET), "no secret in the plan");

    // Object 2 is replaced by a new upload (same age, other bytes) after the review.
    rewrite(&obj(2), b"replaced by the application after the plan was reviewed");
    let backup_to = format!("s3://{backup_bucket}/sweep");
    let r = ws.sweep_env(&["apply", p.to_str().unwrap(), "--backup-to", &backup_to, "--json"], &env);
    r.expect(0);
    let j = r.json();
    let t = |n: u32| format!("s3://{bucket}/attachments/2026/{n} photo.jpg");
    assert_eq!(
        targets(&j, &["deleted"]),
        set(&[&t(1), &t(3), &row_target(1), &row_target(3)]),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    assert!(targets(&j, &["skipped"]).contains(&t(2)), "{}", r.stdout);
    assert!(obj(2).exists() && row_exists(&ws, 2).await, "the replaced object and its row are kept");
    assert!(!obj(1).exists() && !obj(3).exists());
    // Backed up to the backup store, under the store's name and the key.
    let bk = s3.root.join(&backup_bucket).join("sweep/attachments/2026/1 photo.jpg");
    assert_eq!(std::fs::read(&bk).unwrap(), bodies[0]);
    assert!(!r.stderr.contains(S3_SECRET) && !r.stdout.contains(S3_SECRET));

    // Undo: rows from their snapshots, objects from the backup store, byte for byte.
    let run_id = j["run_id"].as_str().unwrap().to_string();
    let dry = ws.sweep_env(&["--dry-run", "restore", "--run", &run_id, "--json"], &env);
    dry.expect(0);
    assert_eq!(dry.stdout.matches("would_restore").count(), 4, "{}", dry.stdout);
    assert!(!obj(1).exists());
    let back = ws.sweep_env(&["restore", "--run", &run_id, "--json"], &env);
    back.expect(0);
    assert_eq!(back.stdout.matches("\"restored\"").count(), 4, "{}\n{}", back.stdout, back.stderr);
    assert_eq!(std::fs::read(obj(1)).unwrap(), bodies[0]);
    assert_eq!(std::fs::read(obj(3)).unwrap(), bodies[2]);
    let q = "SELECT count(*) FROM forum_attachment WHERE is_active = FALSE AND deleted_at IS NOT NULL";
    assert_eq!(ws.count(q).await, 3, "the application's query sees the rows again");
    // And once more: nothing is overwritten.
    let again = ws.sweep_env(&["restore", "--run", &run_id, "--json"], &env);
    again.expect(0);
    assert_eq!(again.stdout.matches("\"skipped\"").count(), 4, "{}", again.stdout);
}

pub async fn restore_brings_objects_back_from_a_backup_dir(b: Backend) {
    let ws = Ws::new(b, true).await;
    let s3 = S3Server::shared();
    let bucket = format!("restore-dir-{}", b.tag());
    s3.bucket(&bucket);
    s3.put(&bucket, "attachments/k/one.png", 321, old_file_time());
    row(&ws, 1, Some("k/one.png"), false, Some(old_file_time())).await;
    let body = std::fs::read(s3.root.join(&bucket).join("attachments/k/one.png")).unwrap();
    std::fs::write(ws.dir.path().join("sweep.toml"), format!("[attachments]\nstore = \"s3://{bucket}/attachments\"\n"))
        .unwrap();
    let env: Vec<(&str, String)> = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let bk = ws.dir.path().join("bk");
    let r = ws.sweep_env(&["--now", NOW, "--backup-dir", bk.to_str().unwrap(), "cleanup-attachments", "--json"], &env);
    r.expect(0);
    assert!(!s3.exists(&bucket, "attachments/k/one.png"));
    let run_id = r.json()["run_id"].as_str().unwrap().to_string();
    let back = ws.sweep_env(&["restore", "--run", &run_id, "--json"], &env);
    back.expect(0);
    assert_eq!(back.stdout.matches("\"restored\"").count(), 2, "{}", back.stdout);
    assert_eq!(std::fs::read(s3.root.join(&bucket).join("attachments/k/one.png")).unwrap(), body);
    assert!(row_exists(&ws, 1).await);
}

pub async fn apply_refuses_another_database_an_old_plan_and_a_forecast(b: Backend) {
    let ws = Ws::new(b, true).await;
    let files = attachments(&ws).await;
    let p = plan(&ws, &[]);
    // A staging copy: the same schema and rows, another database.
    let other = Ws::new(b, true).await;
    attachments(&other).await;
    let r = sweep_in(
        ws.dir.path(),
        &["apply", p.to_str().unwrap()],
        &[("DATABASE_URL", &other.url), ("MEDIA_ROOT", ws.media.to_str().unwrap())],
    );
    r.expect(2);
    assert!(r.stderr.contains("another database"), "{}", r.stderr);
    assert_eq!(other.count("SELECT count(*) FROM forum_attachment").await, 4);
    assert_eq!(ws.count("SELECT count(*) FROM forum_attachment").await, 4);
    assert!(files.iter().all(|f| f.exists()));

    // A plan whose root is not a directory configured now (edited, or MEDIA_ROOT moved).
    let elsewhere = ws.dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let r = sweep_in(
        ws.dir.path(),
        &["apply", p.to_str().unwrap()],
        &[("DATABASE_URL", &ws.url), ("MEDIA_ROOT", elsewhere.to_str().unwrap())],
    );
    r.expect(2);
    assert!(r.stderr.contains("not a directory configured now"), "{}", r.stderr);
    let edited = ws.dir.path().join("edited.json");
    let text = std::fs::read_to_string(&p).unwrap();
    let media = serde_json::to_string(&std::fs::canonicalize(&ws.media).unwrap()).unwrap();
    let moved = serde_json::to_string(&std::fs::canonicalize(&elsewhere).unwrap()).unwrap();
    assert!(text.contains(&media));
    std::fs::write(&edited, text.replace(&media, &moved)).unwrap();
    let r = ws.sweep(&["apply", edited.to_str().unwrap()]);
    r.expect(2);
    assert!(r.stderr.contains("not a directory configured now"), "{}", r.stderr);
    assert!(files.iter().all(|f| f.exists()));

    let r = ws.sweep(&["apply", p.to_str().unwrap(), "--max-plan-age", "0s"]);
    r.expect(2);
    assert!(r.stderr.contains("--max-plan-age"), "{}", r.stderr);
    let r = ws.sweep(&["apply", p.to_str().unwrap(), "--max-plan-age", "a while"]);
    r.expect(2);

    // A forecast shows more than today, and cannot be applied.
    let later = ws.dir.path().join("forecast.json");
    let today = ws.sweep(&["--dry-run", "cleanup-attachments", "--json"]).json();
    let f = ws.sweep(&[
        "--dry-run",
        "--now",
        "2027-06-01T00:00:00Z",
        "--plan-out",
        later.to_str().unwrap(),
        "cleanup-attachments",
        "--json",
    ]);
    f.expect(0);
    ws.exec(&format!(
        "UPDATE forum_attachment SET deleted_at = {} WHERE id = '{}'",
        ts(at("2026-12-01T00:00:00Z")),
        uuid(3)
    ))
    .await;
    let future = ws.sweep(&["--dry-run", "--now", "2027-06-01T00:00:00Z", "cleanup-attachments", "--json"]).json();
    let now_only = ws.sweep(&["--dry-run", "cleanup-attachments", "--json"]).json();
    assert!(
        targets(&future, &["would_delete"]).len() > targets(&now_only, &["would_delete"]).len(),
        "{future}\n{now_only}"
    );
    assert!(today["candidates"].as_u64().is_some());
    let r = ws.sweep(&["apply", later.to_str().unwrap()]);
    r.expect(2);
    assert!(r.stderr.contains("forecast"), "{}", r.stderr);
    assert_eq!(ws.count("SELECT count(*) FROM forum_attachment").await, 4, "nothing deleted by refused applies");

    // Not a plan at all.
    let junk = ws.dir.path().join("junk.json");
    std::fs::write(&junk, "{\"hello\": 1}").unwrap();
    let r = ws.sweep(&["apply", junk.to_str().unwrap()]);
    r.expect(2);
    assert!(r.stderr.contains("is not a sweep plan"), "{}", r.stderr);

    // The root is gone (or replaced by a link elsewhere): refused, and said so.
    let media = ws.media.clone();
    std::fs::rename(&media, ws.dir.path().join("media-moved")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &media).unwrap();
    let r = ws.sweep(&["apply", p.to_str().unwrap()]);
    r.expect(2);
    assert!(r.stderr.contains("now resolves to"), "{}", r.stderr);
    std::fs::remove_file(&media).unwrap();
    let r = ws.sweep(&["apply", p.to_str().unwrap()]);
    r.expect(2);
    assert!(r.stderr.contains("root is not usable now"), "{}", r.stderr);
}

pub async fn apply_keeps_a_tmp_dir_that_gained_a_file_and_caps_still_hold(b: Backend) {
    let ws = Ws::new(b, true).await;
    let data = ws.dir.path().join("data");
    let old = at(NOW) - Duration::hours(3);
    for d in ["a", "b", "c"] {
        write_aged(&data.join(format!("tmp/{d}/x.bin")), 10, old);
        std::fs::File::open(data.join(format!("tmp/{d}"))).unwrap().set_modified(old.into()).unwrap();
    }
    let env = [("DATA_DIR", data.to_str().unwrap())];
    let p = ws.dir.path().join("w.json");
    ws.sweep_env(
        &["--now", NOW, "--dry-run", "--plan-out", p.to_str().unwrap(), "worker-once", "--tasks", "tmp"],
        &env,
    )
    .expect(0);
    // A job writes into b/ after the review (the file is old, the tree is not the same).
    write_aged(&data.join("tmp/b/late.bin"), 10, old);
    let capped = ws.sweep_env(&["--max-delete", "1", "apply", p.to_str().unwrap()], &env);
    capped.expect(3);
    assert!(data.join("tmp/a").exists(), "a cap stops apply before anything is deleted");
    {
        // The plan's command's lock: apply waits for no one and changes nothing while it is held.
        let _held = crate::attachments::hold_lock(&ws, "worker-once").await;
        ws.sweep_env(&["apply", p.to_str().unwrap()], &env).expect(75);
        assert!(data.join("tmp/a").exists());
    }
    let r = ws.sweep_env(&["apply", p.to_str().unwrap(), "--json"], &env);
    r.expect(0);
    let j = r.json();
    assert_eq!(targets(&j, &["deleted"]), set(&["data:tmp/a", "data:tmp/c"]), "{}", r.stdout);
    assert!(targets(&j, &["skipped"]).contains("data:tmp/b"));
    assert!(data.join("tmp/b/late.bin").exists() && data.join("tmp/b/x.bin").exists());
    assert!(!data.join("tmp/a").exists() && !data.join("tmp/c").exists());
}

pub async fn a_failed_backup_to_a_store_keeps_the_item(b: Backend) {
    let ws = Ws::new(b, true).await;
    let files = attachments(&ws).await;
    let env: Vec<(&str, String)> = S3Server::shared().env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = ws.sweep_env(
        &["--now", NOW, "--backup-to", "s3://no-such-bucket-for-sweep/x", "cleanup-attachments", "--json"],
        &env,
    );
    r.expect(1);
    let j = r.json();
    assert_eq!(
        targets(&j, &["failed"]),
        set(&["media:att/1.jpg", "media:att/2.jpg", "media:att/3.jpg"]),
        "{}",
        r.stdout
    );
    assert!(targets(&j, &["deleted"]).is_empty());
    let why = j["items"][0]["error"].as_str().unwrap();
    assert!(why.contains("backup") && why.contains("not deleted"), "{why}");
    assert!(files.iter().all(|f| f.exists()), "no backup, no deletion");
    for n in 1..=4 {
        assert!(row_exists(&ws, n).await);
    }
    assert!(!r.stderr.contains(S3_SECRET) && !r.stdout.contains(S3_SECRET));
}
