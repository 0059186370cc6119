//! A flaky S3 endpoint (503 SlowDown before the server acts, 500 after it acted, late answers:
//! `support::FAULTY`) under every command that touches objects: the faults are absorbed
//! (retried), the job is finished exactly, and what must stay stays.

use crate::attachments::{old_file_time, row, row_exists, NOW};
use crate::support::*;
use chrono::Duration;

pub async fn bulk_cloudcube_with_backups_to_s3_absorbs_a_flaky_endpoint(b: Backend) {
    let ws = Ws::new(b, true).await;
    let s3 = S3Server::shared();
    let (cube, backup) = (format!("{FAULTY}cube-{}", b.tag()), format!("{FAULTY}backup-{}", b.tag()));
    s3.bucket(&backup);
    let n = 60;
    let mut env = s3.env();
    env.extend(crate::cloudcube::old_cube(&ws, &cube, n).await);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let to = format!("s3://{backup}/sweep");
    let r = ws.sweep_env(&["--now", NOW, "--backup-to", &to, "bulk-cloudcube", "--json"], &env);
    r.expect(0);
    assert_eq!(r.json()["deleted_count"], n, "{}", r.stderr);
    assert!(s3.exists(&cube, "cube/uploads/keep.mp4"), "in-progress media survives");
    for i in 0..n {
        assert!(!s3.exists(&cube, &format!("cube/tmp/{i}.bin")), "tmp/{i}.bin is gone");
        assert!(s3.exists(&backup, &format!("sweep/cube/tmp/{i}.bin")), "tmp/{i}.bin was backed up first");
    }
    assert_eq!(
        ws.count("SELECT count(*) FROM cleanup_audit WHERE kind = 'object' AND outcome = 'deleted'").await,
        n as i64
    );
    assert!(s3.faulty_requests(&cube) >= 8 && s3.faulty_requests(&backup) >= 8, "faults were injected on both");
}

pub async fn attachments_on_s3_absorb_a_flaky_endpoint(b: Backend) {
    let ws = Ws::new(b, true).await;
    let s3 = S3Server::shared();
    let bucket = format!("{FAULTY}att-{}", b.tag());
    s3.bucket(&bucket);
    let old = Some(at(NOW) - Duration::days(60));
    for n in 1..=30u32 {
        s3.put(&bucket, &format!("attachments/a/{n}.jpg"), 100, old_file_time());
        row(&ws, n, Some(&format!("a/{n}.jpg")), false, old).await;
    }
    s3.put(&bucket, "attachments/a/active.jpg", 100, old_file_time());
    row(&ws, 99, Some("a/active.jpg"), true, None).await;
    std::fs::write(ws.dir.path().join("sweep.toml"), format!("[attachments]\nstore = \"s3://{bucket}/attachments\"\n"))
        .unwrap();
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = ws.sweep_env(&["--now", NOW, "cleanup-attachments", "--batch-size", "7", "--json"], &env);
    r.expect(0);
    assert_eq!(r.json()["attachments_deleted"], 30, "{}", r.stderr);
    for n in 1..=30u32 {
        assert!(!s3.exists(&bucket, &format!("attachments/a/{n}.jpg")) && !row_exists(&ws, n).await);
    }
    assert!(s3.exists(&bucket, "attachments/a/active.jpg") && row_exists(&ws, 99).await, "the active one stays");
    assert!(s3.faulty_requests(&bucket) >= 8, "faults were injected: {}", s3.faulty_requests(&bucket));
}

pub async fn worker_objects_absorb_a_flaky_endpoint(b: Backend) {
    let ws = Ws::new(b, true).await;
    let s3 = S3Server::shared();
    let bucket = format!("{FAULTY}previews-{}", b.tag());
    s3.bucket(&bucket);
    let data = ws.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let old = at(NOW) - Duration::days(3);
    ws.exec(&format!(
        "INSERT INTO preview_sessions (id, status, created_at, updated_at, expires_at, bundle_path, bundle_key) VALUES \
         ('p1', 'ready', {o}, {o}, NULL, NULL, 'previews/p1/bundle.zip')",
        o = ts(old)
    ))
    .await;
    s3.put(&bucket, "previews/p1/bundle.zip", 10, old);
    for i in 0..40 {
        s3.put(&bucket, &format!("previews/orphan-{i}/bundle.zip"), 10, old);
    }
    let mut env = s3.env();
    env.push(("DATA_DIR", data.display().to_string()));
    env.push(("OBJECT_STORAGE_BUCKET_PREVIEWS", bucket.clone()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = ws.sweep_env(&["--now", NOW, "worker-once", "--tasks", "objects", "--json"], &env);
    r.expect(0);
    assert_eq!(r.json()["tasks"]["objects"]["deleted"], 40, "{}", r.stderr);
    for i in 0..40 {
        assert!(!s3.exists(&bucket, &format!("previews/orphan-{i}/bundle.zip")));
    }
    assert!(s3.exists(&bucket, "previews/p1/bundle.zip"), "a referenced bundle stays");
    // The first request to a faulty bucket always fails (503): a second means it was retried.
    assert!(s3.faulty_requests(&bucket) >= 2, "the failed first request was retried");
}
