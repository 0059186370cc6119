//! `worker-once` (seed 004) through the real binary, on PostgreSQL, SQLite and MariaDB, with real files
//! and the S3-protocol server. Every rule of the seed's checklist (§12) has a scenario.

use crate::support::*;
use chrono::{DateTime, Duration, Utc};
use std::path::PathBuf;

const NOW: &str = "2026-11-22T10:00:00Z";

fn now() -> DateTime<Utc> {
    at(NOW)
}

struct W {
    ws: Ws,
    data: PathBuf,
    bucket: String,
}

impl W {
    async fn new(b: Backend, tag: &str) -> W {
        let ws = Ws::new(b, true).await;
        let data = ws.dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let bucket = format!("previews-{tag}-{}", b.tag());
        S3Server::shared().bucket(&bucket);
        W { ws, data, bucket }
    }

    fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> Run {
        let s3 = S3Server::shared().env();
        let mut env: Vec<(&str, &str)> = s3.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.push(("DATA_DIR", self.data.to_str().unwrap()));
        env.push(("OBJECT_STORAGE_BUCKET_PREVIEWS", &self.bucket));
        env.extend_from_slice(extra);
        let mut all = vec!["--now", NOW, "worker-once"];
        all.extend_from_slice(args);
        self.ws.sweep_env(&all, &env)
    }

    fn file(&self, rel: &str, mtime: DateTime<Utc>) -> PathBuf {
        let p = self.data.join(rel);
        write_aged(&p, 100, mtime);
        p
    }

    /// A directory whose every entry (and itself) was last modified at `mtime`.
    fn dir(&self, rel: &str, mtime: DateTime<Utc>) -> PathBuf {
        self.file(&format!("{rel}/a.bin"), mtime);
        self.file(&format!("{rel}/sub/b.bin"), mtime);
        for d in [self.data.join(rel).join("sub"), self.data.join(rel)] {
            let f = std::fs::File::open(&d).unwrap();
            f.set_modified(mtime.into()).unwrap();
        }
        self.data.join(rel)
    }

    fn object(&self, key: &str, mtime: DateTime<Utc>) {
        S3Server::shared().put(&self.bucket, key, 100, mtime);
    }

    fn has_object(&self, key: &str) -> bool {
        S3Server::shared().exists(&self.bucket, key)
    }
}

pub async fn a_running_jobs_tmp_dir_survives_and_abandoned_ones_go(b: Backend) {
    let w = W::new(b, "tmp").await;
    let old = now() - Duration::hours(3);
    let abandoned = w.dir("tmp/clone-abc123", old);
    let running = w.dir("tmp/preview-job-7", old);
    let pending = w.dir("tmp/zip-9", old);
    let finished = w.dir("tmp/preview-job-8", old);
    let young = w.dir("tmp/clone-new", now() - Duration::minutes(20));
    let ts_ = ts(now());
    w.ws.exec(&format!(
        "INSERT INTO background_jobs (id, job_type, status, created_at, updated_at, working_dir) VALUES \
         ('j7', 'preview_build', 'running', {ts_}, {ts_}, 'tmp/preview-job-7'), \
         ('j9', 'zip', 'pending', {ts_}, {ts_}, '{}'), \
         ('j8', 'preview_build', 'completed', {ts_}, {ts_}, 'tmp/preview-job-8')",
        w.data.join("tmp/zip-9/sub").display()
    ))
    .await;
    let r = w.run(&["--tasks", "tmp", "--json"], &[]);
    r.expect(0);
    assert!(!abandoned.exists() && !finished.exists(), "abandoned and completed-job dirs go");
    assert!(running.exists(), "a running job's dir survives");
    assert!(pending.exists(), "a pending job's dir survives (working_dir absolute, inside it)");
    assert!(young.exists(), "younger than TMP_DIR_TTL_MINUTES");
    assert_eq!(r.json()["tasks"]["tmp"]["deleted"], 2, "{}", r.stdout);
    assert!(r.stderr.contains("Cleanup cycle completed: previews_deleted=0 tmp_deleted=2"), "{}", r.stderr);
    // Idempotent: the next cycle finds nothing and fails on nothing.
    let again = w.run(&["--tasks", "tmp", "--json"], &[]);
    again.expect(0);
    assert_eq!(again.json()["candidates"], 0);
}

#[cfg(unix)]
pub async fn a_symlink_in_tmp_is_removed_as_a_link_and_its_target_survives(b: Backend) {
    let w = W::new(b, "link").await;
    let outside = w.ws.dir.path().join("precious");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("keep.txt"), "x").unwrap();
    std::fs::create_dir_all(w.data.join("tmp")).unwrap();
    let link = w.data.join("tmp/evil-link");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    // Age the link itself (not its target).
    std::process::Command::new("touch").args(["-h", "-d", "2026-01-01T00:00:00Z"]).arg(&link).status().unwrap();
    w.run(&["--tasks", "tmp"], &[]).expect(0);
    assert!(std::fs::symlink_metadata(&link).is_err(), "the link is gone");
    assert!(outside.join("keep.txt").exists(), "its target is untouched");
}

pub async fn an_expired_preview_loses_dir_object_and_references_while_a_ready_one_survives(b: Backend) {
    let w = W::new(b, "prev").await;
    let old = now() - Duration::days(2);
    let t = |d: DateTime<Utc>| ts(d);
    let expired_dir = w.dir("previews/p1", old);
    w.object("previews/p1/bundle.zip", old);
    let failed_dir = w.dir("previews/p2", old);
    let ready_dir = w.dir("previews/p3", old);
    w.object("previews/p3/bundle.zip", old);
    let recent_failed = w.dir("previews/p4", old);
    let past_expiry = w.dir("previews/p5", old);
    w.ws.exec(&format!(
        "INSERT INTO preview_sessions (id, status, created_at, updated_at, expires_at, bundle_path, bundle_key) VALUES \
         ('p1', 'expired', {o}, {o}, NULL, 'previews/p1', 'previews/p1/bundle.zip'), \
         ('p2', 'failed', {o}, {o}, NULL, '{abs}', NULL), \
         ('p3', 'ready', {o}, {o}, {future}, 'previews/p3', 'previews/p3/bundle.zip'), \
         ('p4', 'cancelled', {o}, {recent}, NULL, 'previews/p4', NULL), \
         ('p5', 'ready', {o}, {o}, {past}, 'previews/p5', NULL)",
        o = t(old),
        abs = w.data.join("previews/p2").display(),
        future = t(now() + Duration::hours(5)),
        recent = t(now() - Duration::minutes(10)),
        past = t(now() - Duration::hours(1)),
    ))
    .await;
    // The dry run first: its closing line counts what it would delete, every count alike, and
    // clearing references is not called a deletion.
    let dry = w.run(&["--dry-run", "--tasks", "previews,objects", "--json"], &[]);
    dry.expect(0);
    assert!(
        dry.stderr.contains("Cleanup cycle completed (dry run: nothing deleted): previews_would_delete=3 tmp_would_delete=0 objects_would_delete=1"),
        "{}",
        dry.stderr
    );
    assert!(dry.stderr.contains("Would clear references of row preview_sessions"), "{}", dry.stderr);
    assert!(!dry.stderr.contains("Would delete row"), "{}", dry.stderr);
    assert_eq!(dry.json()["tasks"]["previews"]["would_delete"], 3);
    assert_eq!(dry.json()["tasks"]["previews"]["deleted"], 0);
    let r = w.run(&["--tasks", "previews", "--json"], &[]);
    r.expect(0);
    assert!(!expired_dir.exists() && !w.has_object("previews/p1/bundle.zip"), "expired: dir and object gone");
    assert!(!failed_dir.exists(), "failed and not updated for the grace period");
    assert!(!past_expiry.exists(), "past expires_at + grace");
    assert!(ready_dir.exists() && w.has_object("previews/p3/bundle.zip"), "a ready session survives");
    assert!(recent_failed.exists(), "cancelled 10 minutes ago: within the grace period");
    let nulled =
        w.ws.count("SELECT count(*) FROM preview_sessions WHERE bundle_path IS NULL AND bundle_key IS NULL").await;
    assert_eq!(nulled, 3);
    assert_eq!(w.ws.count("SELECT count(*) FROM preview_sessions WHERE id = 'p3' AND bundle_key IS NOT NULL").await, 1);
    assert_eq!(r.json()["tasks"]["previews"]["deleted"], 3);
}

pub async fn orphaned_objects_older_than_the_ttl_go_and_young_or_referenced_ones_stay(b: Backend) {
    let w = W::new(b, "obj").await;
    let ts_ = ts(now() - Duration::days(3));
    w.ws.exec(&format!(
        "INSERT INTO preview_sessions (id, status, created_at, updated_at, expires_at, bundle_path, bundle_key) VALUES \
         ('p1', 'ready', {ts_}, {ts_}, NULL, NULL, 'previews/p1/bundle.zip')"
    ))
    .await;
    w.object("previews/p1/bundle.zip", now() - Duration::days(3));
    w.object("previews/orphan/old.zip", now() - Duration::hours(30));
    w.object("previews/orphan/young.zip", now() - Duration::hours(2));
    w.object("other/not-a-preview.zip", now() - Duration::days(30));
    w.object("previews/backups/x.zip", now() - Duration::days(30));
    let r = w.run(&["--tasks", "objects", "--json"], &[]);
    r.expect(0);
    assert!(!w.has_object("previews/orphan/old.zip"));
    assert!(w.has_object("previews/orphan/young.zip"), "younger than PREVIEW_BUNDLE_TTL_HOURS");
    assert!(w.has_object("previews/p1/bundle.zip"), "referenced");
    assert!(w.has_object("other/not-a-preview.zip"), "outside the previews prefix");
    // Protected prefixes are relative to the store: previews/backups is not backups/.
    assert!(!w.has_object("previews/backups/x.zip"));
    // With no references at all, orphan deletion refuses (exit 3) unless allowed.
    w.ws.exec("DELETE FROM preview_sessions").await;
    let r = w.run(&["--tasks", "objects"], &[]);
    r.expect(3);
    assert!(w.has_object("previews/p1/bundle.zip"));
    w.run(&["--tasks", "objects", "--allow-empty-references"], &[]).expect(0);
    assert!(!w.has_object("previews/p1/bundle.zip"));
}

pub async fn old_logs_go_and_kept_patterns_stay(b: Backend) {
    let w = W::new(b, "logs").await;
    let old = w.file("logs/debug-2026-11-01.log", now() - Duration::days(21));
    let nested = w.file("logs/worker/trace.log.3", now() - Duration::days(8));
    let fresh = w.file("logs/debug-2026-11-21.log", now() - Duration::days(1));
    let access = w.file("logs/access-2026-10-01.log", now() - Duration::days(50));
    let r = w.run(&["--tasks", "logs", "--json"], &[]);
    r.expect(0);
    assert!(!old.exists() && !nested.exists());
    assert!(fresh.exists(), "younger than LOG_RETENTION_DAYS");
    assert!(access.exists(), "access logs are not debug logs");
    w.run(&["--tasks", "logs"], &[("LOG_RETENTION_DAYS", "0")]).expect(0);
    assert!(!fresh.exists(), "LOG_RETENTION_DAYS=0 (but the grace period still holds)");
}

pub async fn stale_repos_go_only_with_the_flag_and_never_active_ones(b: Backend) {
    let w = W::new(b, "repos").await;
    let old = now() - Duration::days(400);
    let stale = w.dir("repos/r1", old);
    let active = w.dir("repos/r2", old);
    let recent = w.dir("repos/r3", old);
    let outside = w.dir("elsewhere/r4", old);
    w.ws.exec(&format!(
        "INSERT INTO repos (id, active, last_activity_at, filesystem_path) VALUES \
         ('r1', FALSE, {o}, 'repos/r1'), ('r2', TRUE, {o}, 'repos/r2'), ('r3', FALSE, {recent}, 'repos/r3'), ('r4', FALSE, {o}, 'elsewhere/r4')",
        o = ts(old),
        recent = ts(now() - Duration::days(20))
    ))
    .await;
    w.run(&["--tasks", "repos"], &[]).expect(0);
    assert!(stale.exists(), "off unless CLEANUP_STALE_REPOS_ENABLED=true");
    let r = w.run(&["--tasks", "repos", "--json"], &[("CLEANUP_STALE_REPOS_ENABLED", "true")]);
    r.expect(1); // r4 is outside repos/: refused and reported
    assert!(!stale.exists());
    assert!(active.exists() && recent.exists() && outside.exists());
}

pub async fn cleanup_disabled_changes_nothing_and_metrics_parse(b: Backend) {
    let w = W::new(b, "off").await;
    let old = now() - Duration::days(30);
    let t1 = w.dir("tmp/old", old);
    let l1 = w.file("logs/old.log", old);
    let r = w.run(&["--json"], &[("CLEANUP_ENABLED", "false")]);
    r.expect(0);
    assert_eq!(r.json()["dry_run"], true);
    assert!(t1.exists() && l1.exists());
    assert_eq!(w.ws.count("SELECT count(*) FROM cleanup_runs").await, 0);

    let metrics = w.ws.dir.path().join("sweep.prom");
    let r = w.run(&["--metrics-file", metrics.to_str().unwrap()], &[]);
    r.expect(0);
    assert!(!t1.exists() && !l1.exists());
    let text = std::fs::read_to_string(&metrics).unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text");
    let value = |name: &str| {
        scrape.samples.iter().find(|s| s.metric == name).map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
    };
    assert_eq!(value("cleanup_tmp_dirs_deleted_total"), Some(1.0), "{text}");
    assert_eq!(value("cleanup_previews_deleted_total"), Some(0.0), "{text}");
    assert!(value("cleanup_last_run_timestamp").unwrap() > 1.7e9, "{text}");
    assert!(value("cleanup_last_run_duration_seconds").is_some(), "{text}");
    // Counters are totals from the audit: another run with new work adds to them.
    w.dir("tmp/old2", old);
    w.run(&["--metrics-file", metrics.to_str().unwrap()], &[]).expect(0);
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(text.contains("cleanup_tmp_dirs_deleted_total 2"), "{text}");
    assert!(!metrics.with_extension("prom.tmp").exists(), "written atomically");
}

pub async fn older_logs_are_gzipped_in_place_before_they_are_deleted(b: Backend) {
    let w = W::new(b, "gzip").await;
    let body = "2026-11-10 DEBUG step 1\n".repeat(500);
    let mid = w.data.join("logs/debug-mid.log");
    write_aged(&mid, 1, now() - Duration::days(4));
    std::fs::write(&mid, &body).unwrap();
    std::fs::File::options().write(true).open(&mid).unwrap().set_modified((now() - Duration::days(4)).into()).unwrap();
    let fresh = w.file("logs/debug-fresh.log", now() - Duration::days(1));
    let already = w.file("logs/debug-old.log.gz", now() - Duration::days(5));
    let expired = w.file("logs/debug-ancient.log", now() - Duration::days(30));
    let env = [("LOG_COMPRESS_AFTER_DAYS", "3"), ("LOG_RETENTION_DAYS", "14")];
    let dry = w.run(&["--tasks", "logs", "--dry-run"], &env);
    dry.expect(0);
    assert!(mid.exists() && expired.exists(), "a dry run compresses nothing");
    let r = w.run(&["--tasks", "logs", "--json"], &env);
    r.expect(0);
    let gz = w.data.join("logs/debug-mid.log.gz");
    assert!(!mid.exists() && gz.exists(), "{}", r.stderr);
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(std::fs::File::open(&gz).unwrap()), &mut text)
        .unwrap();
    assert_eq!(text, body, "the compressed log holds exactly the original");
    let mtime: DateTime<Utc> = std::fs::metadata(&gz).unwrap().modified().unwrap().into();
    assert!((mtime - (now() - Duration::days(4))).num_seconds().abs() < 2, "it keeps the log's age");
    assert!(fresh.exists() && already.exists(), "younger than 3 days, or already compressed");
    assert!(!expired.exists(), "past retention: deleted");
    // Without the setting nothing is compressed.
    let plain = w.file("logs/other.log", now() - Duration::days(4));
    w.run(&["--tasks", "logs"], &[]).expect(0);
    assert!(plain.exists());
}

/// A name that is not UTF-8: `log-<0xFF>.log` and the like.
#[cfg(unix)]
fn raw_name(prefix: &str, suffix: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    let mut b = prefix.as_bytes().to_vec();
    b.extend_from_slice(&[0xFF, 0xFE]);
    b.extend_from_slice(suffix.as_bytes());
    std::ffi::OsString::from_vec(b)
}

pub async fn names_that_are_not_utf8_are_deleted_audited_and_restored_exactly(b: Backend) {
    #[cfg(unix)]
    {
        let w = W::new(b, "bytes").await;
        let old = now() - Duration::days(30);
        let log = w.data.join("logs").join(raw_name("app-", ".log"));
        write_aged(&log, 100, old);
        let young = w.data.join("logs").join(raw_name("new-", ".log"));
        write_aged(&young, 100, now() - Duration::hours(1));
        let tmp = w.data.join("tmp").join(raw_name("job-", ""));
        write_aged(&tmp.join("a.bin"), 100, old);
        std::fs::File::open(&tmp).unwrap().set_modified(old.into()).unwrap();
        let backups = w.ws.dir.path().join("bk");
        let r = w.run(&["--backup-dir", backups.to_str().unwrap(), "--tasks", "tmp,logs", "--json"], &[]);
        r.expect(0);
        assert!(!log.exists() && !tmp.exists(), "old ones go, whatever their names' bytes");
        assert!(young.exists(), "a young one stays");
        let j = r.json();
        let targets: Vec<String> =
            j["items"].as_array().unwrap().iter().map(|i| i["target"].as_str().unwrap().to_string()).collect();
        assert!(targets.contains(&"data:logs/?b:app-%FF%FE.log".to_string()), "{targets:?}");
        assert!(targets.contains(&"data:tmp/?b:job-%FF%FE".to_string()), "{targets:?}");
        let audited =
            w.ws.count("SELECT count(*) FROM cleanup_audit WHERE target LIKE '%?b:%' AND outcome = 'deleted'").await;
        assert_eq!(audited, 2);
        // Undo: the exact bytes come back.
        let run_id = j["run_id"].as_str().unwrap().to_string();
        let back = w.ws.sweep_env(&["restore", "--run", &run_id, "--json"], &[("DATA_DIR", w.data.to_str().unwrap())]);
        back.expect(0);
        assert!(log.exists() && tmp.join("a.bin").exists(), "{}", back.stdout);
    }
    #[cfg(not(unix))]
    let _ = b;
}

pub async fn an_unreadable_row_fails_alone_and_the_cycle_goes_on(b: Backend) {
    if b != Backend::Sqlite {
        return; // only SQLite's text columns take bytes that are not UTF-8
    }
    let w = W::new(b, "unreadable").await;
    let old = now() - Duration::days(3);
    let good = w.dir("previews/good", old);
    w.dir("previews/bad", old);
    let o = ts(old);
    w.ws.exec(&format!(
        "INSERT INTO preview_sessions (id, status, created_at, updated_at, expires_at, bundle_path, bundle_key) VALUES \
         ('good', 'expired', {o}, {o}, NULL, 'previews/good', NULL), \
         ('bad', 'expired', {o}, {o}, NULL, 'previews/bad', NULL)"
    ))
    .await;
    // The bad session's bundle_path holds bytes that are not UTF-8: it cannot be read as text.
    w.ws.exec("UPDATE preview_sessions SET bundle_path = X'70FF' WHERE id = 'bad'").await;
    let r = w.run(&["--tasks", "previews", "--json"], &[]);
    r.expect(1);
    assert!(!good.exists(), "the readable session is cleaned");
    assert!(w.data.join("previews/bad").exists(), "the unreadable one is left");
    let j = r.json();
    let failed: Vec<&serde_json::Value> =
        j["items"].as_array().unwrap().iter().filter(|i| i["outcome"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{}", r.stdout);
    let err = failed[0]["error"].as_str().unwrap();
    assert!(err.contains("preview_sessions id=bad") && err.contains("bundle_path") && err.contains("UTF-8"), "{err}");
}
