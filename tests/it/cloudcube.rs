//! `bulk-cloudcube` (seed 003) through the real binary against the S3-protocol server, on
//! PostgreSQL, SQLite and MariaDB. Each scenario checks what must go and what must stay.

use crate::support::*;
use chrono::{DateTime, Duration, Utc};

const NOW: &str = "2026-11-22T10:00:00Z";

fn now() -> DateTime<Utc> {
    at(NOW)
}

/// A cube in `bucket` of the shared S3 server, as of `NOW`: one processing job
/// whose upload (`cube/uploads/keep.mp4`) must survive, and `n` nine-day-old objects
/// `cube/tmp/{i}.bin` to delete. Returns the environment that points `bulk-cloudcube` at it.
pub async fn old_cube(ws: &Ws, bucket: &str, n: usize) -> Vec<(&'static str, String)> {
    let now = now();
    let s3 = S3Server::shared();
    s3.bucket(bucket);
    ws.exec(&format!(
        "INSERT INTO viral_clips_job (id, status, original_file_key, extracted_audio_key, created_at) VALUES (1, 'processing', 'uploads/keep.mp4', NULL, {})",
        ts(now - Duration::days(30))
    ))
    .await;
    s3.put(bucket, "cube/uploads/keep.mp4", 10, now - Duration::days(9));
    for i in 0..n {
        s3.put(bucket, &format!("cube/tmp/{i}.bin"), 10, now - Duration::days(9));
    }
    vec![
        ("CLOUDCUBE_URL", format!("{}/{bucket}/cube", s3.endpoint)),
        ("CLOUDCUBE_ACCESS_KEY_ID", S3_ACCESS.into()),
        ("CLOUDCUBE_SECRET_ACCESS_KEY", S3_SECRET.into()),
    ]
}

struct Cube {
    ws: Ws,
    bucket: String,
}

impl Cube {
    async fn new(b: Backend, tag: &str) -> Cube {
        let ws = Ws::new(b, true).await;
        let bucket = format!("cube-{tag}-{}", b.tag());
        S3Server::shared().bucket(&bucket);
        Cube { ws, bucket }
    }

    /// An object under the cube prefix `cube/`.
    fn put(&self, key: &str, age: Duration) {
        S3Server::shared().put(&self.bucket, &format!("cube/{key}"), 1000, now() - age);
    }

    fn has(&self, key: &str) -> bool {
        S3Server::shared().exists(&self.bucket, &format!("cube/{key}"))
    }

    fn run(&self, args: &[&str]) -> Run {
        let s3 = S3Server::shared();
        let url = format!("{}/{}/cube", s3.endpoint, self.bucket);
        let env = [
            ("CLOUDCUBE_URL", url.as_str()),
            ("CLOUDCUBE_ACCESS_KEY_ID", S3_ACCESS),
            ("CLOUDCUBE_SECRET_ACCESS_KEY", S3_SECRET),
        ];
        let mut all = vec!["--now", NOW, "bulk-cloudcube"];
        all.extend_from_slice(args);
        self.ws.sweep_env(&all, &env)
    }

    async fn job(&self, id: i64, status: &str, original: &str, audio: Option<&str>) {
        let audio = audio.map(|a| format!("'{a}'")).unwrap_or_else(|| "NULL".into());
        self.ws
            .exec(&format!(
                "INSERT INTO viral_clips_job (id, status, original_file_key, extracted_audio_key, created_at) VALUES ({id}, '{status}', '{original}', {audio}, {})",
                ts(now() - Duration::days(30))
            ))
            .await;
    }

    async fn clip(&self, id: i64, job: i64, key: &str, status: &str, created: DateTime<Utc>) {
        self.ws
            .exec(&format!(
                "INSERT INTO viral_clips_clippedvideo (id, job_id, s3_key, status, created_at) VALUES ({id}, {job}, '{key}', '{status}', {})",
                ts(created)
            ))
            .await;
    }
}

async fn standard(c: &Cube) {
    let old = Duration::days(20);
    c.job(1, "processing", "uploads/1.mp4", Some("audio/1.mp3")).await;
    c.job(2, "completed", "uploads/2.mp4", Some("audio/2.mp3")).await;
    c.clip(10, 2, "clips/recent.mp4", "completed", now() - Duration::days(2)).await;
    c.clip(11, 2, "clips/edge.mp4", "completed", now() - Duration::days(5)).await; // exactly at the cutoff: kept
    c.clip(12, 2, "clips/old.mp4", "completed", now() - Duration::days(5) - Duration::seconds(1)).await;
    c.clip(13, 2, "clips/failed.mp4", "failed", now() - Duration::days(1)).await;
    for k in [
        "clips/recent.mp4",
        "clips/edge.mp4",
        "clips/old.mp4",
        "clips/failed.mp4",
        "uploads/1.mp4",
        "audio/1.mp3",
        "uploads/2.mp4",
        "audio/2.mp3",
        "uploads/my clip+1 ünï.mp4",
    ] {
        c.put(k, old);
    }
    c.put("clips/unlisted-new.mp4", Duration::days(2)); // under clips/, within the window
    c.put("uploads/just-now.mp4", Duration::minutes(5)); // within the grace period
    S3Server::shared().put(&c.bucket, "other-cube/x.mp4", 10, now() - old); // outside the prefix
}

pub async fn keeps_recent_completed_clips_and_in_progress_media_and_deletes_the_rest(b: Backend) {
    let c = Cube::new(b, "std").await;
    standard(&c).await;
    let r = c.run(&["--json"]);
    r.expect(0);
    for k in [
        "clips/recent.mp4",
        "clips/edge.mp4",
        "uploads/1.mp4",
        "audio/1.mp3",
        "clips/unlisted-new.mp4",
        "uploads/just-now.mp4",
    ] {
        assert!(c.has(k), "{k} must survive");
    }
    for k in ["clips/old.mp4", "clips/failed.mp4", "uploads/2.mp4", "audio/2.mp3", "uploads/my clip+1 ünï.mp4"] {
        assert!(!c.has(k), "{k} must be deleted");
    }
    assert!(S3Server::shared().exists(&c.bucket, "other-cube/x.mp4"), "nothing outside the cube prefix is touched");
    let j = r.json();
    assert_eq!(j["success"], true);
    assert_eq!(j["deleted_count"], 5);
    assert_eq!(j["retained_count"], 6);
    assert_eq!(j["total_files_scanned"], 11);
    assert_eq!(j["retention_days"], 5);
    assert_eq!(j["deleted_size_mb"], 0.0);
    assert_eq!(j["message"], "Deleted 5 files (0.00 MB), retained 6 recent clips");
    assert_eq!(j["deleted_files_sample"].as_array().unwrap().len(), 5);
}

pub async fn the_dry_run_lists_exactly_what_the_real_run_deletes(b: Backend) {
    let c = Cube::new(b, "dry").await;
    standard(&c).await;
    let dry = c.run(&["--dry-run", "--json"]);
    dry.expect(0);
    let d = dry.json();
    assert_eq!(d["dry_run"], true);
    assert!(d["message"].as_str().unwrap().starts_with("Would delete 5 files"));
    assert!(c.has("uploads/2.mp4"), "a dry run deletes nothing");
    let real = c.run(&["--json"]);
    real.expect(0);
    let mut a: Vec<String> = d["deleted_files_sample"].as_array().unwrap().iter().map(|v| v.to_string()).collect();
    let mut b2: Vec<String> =
        real.json()["deleted_files_sample"].as_array().unwrap().iter().map(|v| v.to_string()).collect();
    a.sort();
    b2.sort();
    assert_eq!(a, b2);
}

pub async fn job_cleanup_waits_for_every_clip(b: Backend) {
    let c = Cube::new(b, "job").await;
    c.job(5, "rendering", "uploads/5.mp4", Some("audio/5.mp3")).await;
    c.clip(50, 5, "clips/5a.mp4", "completed", now() - Duration::hours(2)).await;
    c.clip(51, 5, "clips/5b.mp4", "rendering", now() - Duration::hours(2)).await;
    for k in ["uploads/5.mp4", "audio/5.mp3", "clips/5a.mp4", "clips/5b.mp4", "uploads/other.mp4"] {
        c.put(k, Duration::hours(3));
    }
    let r = c.run(&["--job", "5"]);
    r.expect(3);
    assert!(r.stderr.contains("1 of 2 clips completed"), "{}", r.stderr);
    assert!(c.has("uploads/5.mp4") && c.has("audio/5.mp3"));
    c.ws.exec("UPDATE viral_clips_clippedvideo SET status = 'completed' WHERE id = 51").await;
    let r = c.run(&["--job", "5", "--json"]);
    r.expect(0);
    assert!(!c.has("uploads/5.mp4") && !c.has("audio/5.mp3"));
    assert!(
        c.has("clips/5a.mp4") && c.has("clips/5b.mp4") && c.has("uploads/other.mp4"),
        "only the job's original and audio"
    );
    assert_eq!(r.json()["deleted_count"], 2);
    c.run(&["--job", "404"]).expect(2);
}

pub async fn thousands_of_objects_are_paged_batched_and_one_failure_is_reported(b: Backend) {
    let c = Cube::new(b, "bulk").await;
    c.job(1, "processing", "uploads/keep.mp4", None).await;
    c.put("uploads/keep.mp4", Duration::days(9));
    let n = 2_300;
    for i in 0..n {
        c.put(&format!("tmp/{:02}/{i}.bin", i % 37), Duration::days(9));
    }
    c.put("tmp/x-undeletable.bin", Duration::days(9));
    let r = c.run(&["--json"]);
    r.expect(1);
    let j = r.json();
    assert_eq!(j["failed"], 1, "{}", r.stderr);
    assert_eq!(j["success"], false);
    assert_eq!(j["deleted_count"], n);
    assert_eq!(j["deleted_files_sample"].as_array().unwrap().len(), 10);
    assert!(c.has("tmp/x-undeletable.bin") && c.has("uploads/keep.mp4"));
    assert!(!c.has("tmp/00/0.bin") && !c.has(&format!("tmp/{:02}/{}.bin", (n - 1) % 37, n - 1)));
    assert!(!r.stderr.contains(S3_SECRET) && !r.stdout.contains(S3_SECRET));
    // Through the cube's prefix, deletions still go in bulk: DeleteObjects requests of up to
    // 1,000 keys (counted on the server), never one DELETE per object.
    let req = S3Server::shared().requests(&c.bucket);
    assert_eq!(req.delete_object, 0, "{req:?}");
    assert_eq!(req.delete_objects.iter().sum::<usize>(), n + 1, "{req:?}");
    assert!(req.delete_objects.iter().all(|k| *k <= 1000), "{req:?}");
    assert_eq!(req.delete_objects.len(), 3, "2,301 keys in three requests: {req:?}");
    assert!(req.delete_objects[..2].iter().all(|k| *k >= 900), "{req:?}");
}

pub async fn nothing_preserved_is_refused_unless_allowed_and_bad_urls_are_clear(b: Backend) {
    let c = Cube::new(b, "guard").await;
    c.put("uploads/a.mp4", Duration::days(9));
    let r = c.run(&[]);
    r.expect(3);
    assert!(r.stderr.contains("--allow-empty-references"), "{}", r.stderr);
    assert!(c.has("uploads/a.mp4"));
    c.run(&["--allow-empty-references"]).expect(0);
    assert!(!c.has("uploads/a.mp4"));

    let r = c.ws.sweep_env(&["bulk-cloudcube"], &[("CLOUDCUBE_URL", "https://cloud-cube.s3.amazonaws.com/")]);
    r.expect(2);
    assert!(r.stderr.contains("CLOUDCUBE_URL") && r.stderr.contains("expected"), "{}", r.stderr);
    // Heroku's virtual-hosted form, pointed at the test server by OBJECT_STORAGE_ENDPOINT.
    c.put("uploads/b.mp4", Duration::days(9));
    let url = format!("https://{}.s3.amazonaws.com/cube", c.bucket);
    let r = c.ws.sweep_env(
        &["--now", NOW, "bulk-cloudcube", "--allow-empty-references"],
        &[
            ("CLOUDCUBE_URL", &url),
            ("CLOUDCUBE_ACCESS_KEY_ID", S3_ACCESS),
            ("CLOUDCUBE_SECRET_ACCESS_KEY", S3_SECRET),
            ("OBJECT_STORAGE_ENDPOINT", &S3Server::shared().endpoint),
        ],
    );
    r.expect(0);
    assert!(!c.has("uploads/b.mp4"));
}
