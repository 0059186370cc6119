//! `cargo bench --bench cloudcube`: PERFORMANCE.md's bulk-cloudcube row.
//!
//! 100,000 objects to delete on a loopback S3 server (s3s-fs, in this process), side by side on
//! identical fresh copies: sweep bulk-cloudcube, `rclone delete` (Debian's rclone: one DELETE per
//! object) and object_store's `delete_stream` alone (1,000 keys a request: the anchor).
//! BENCH_OBJECTS and BENCH_REPS scale it. BENCH_SERVE=1 only serves a small bucket, to try a
//! client by hand.

mod common;
#[allow(dead_code)]
#[path = "../tests/it/support.rs"]
mod support;

use common::{env_num, fill_cube, measure, median};
use futures::{StreamExt, TryStreamExt};
use std::process::Command;
use std::sync::Arc;
use support::{S3Server, S3_ACCESS, S3_SECRET};

/// rclone against the loopback server, configured through the environment only. The root HEAD
/// is skipped (s3s-fs answers it with a 500); the sandbox's AWS_CA_BUNDLE breaks rclone's SDK.
fn rclone(s3: &S3Server, args: &[&str]) -> Command {
    assert!(s3.endpoint.starts_with("http://127.0.0.1:"), "rclone only ever talks to the loopback server");
    let mut c = Command::new("rclone");
    c.args(args)
        .arg("--s3-no-head-object")
        .env_remove("AWS_CA_BUNDLE")
        .env("RCLONE_CONFIG_BENCH_TYPE", "s3")
        .env("RCLONE_CONFIG_BENCH_PROVIDER", "Other")
        .env("RCLONE_CONFIG_BENCH_ENDPOINT", &s3.endpoint)
        .env("RCLONE_CONFIG_BENCH_REGION", "us-east-1")
        .env("RCLONE_CONFIG_BENCH_ACCESS_KEY_ID", S3_ACCESS)
        .env("RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY", S3_SECRET)
        .env("RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE", "true");
    c
}

fn left(s3: &S3Server, bucket: &str) -> usize {
    walkdir::WalkDir::new(s3.root.join(bucket))
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .count()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env_num("BENCH_OBJECTS", 100_000);
    let reps = env_num("BENCH_REPS", 1);
    let s3 = S3Server::shared();
    if std::env::var("BENCH_SERVE").is_ok() {
        // Serve a small bucket for trying other clients by hand; stops when stdin closes.
        fill_cube(&s3.bucket("probe"), 5);
        println!("{} bucket=probe prefix=cube access={S3_ACCESS}", s3.endpoint);
        let _ = std::io::stdin().read_line(&mut String::new());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/app.db", dir.path().display());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let d = sweep::db::Db::connect(&sweep::config::DatabaseUrl::new(db.clone()), true).await.unwrap();
        sweep::reference::create(&d).await.unwrap();
        d.migrate().await.unwrap();
    });
    let mut t: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    let have_rclone = Command::new("rclone").arg("version").output().is_ok();
    if !have_rclone {
        eprintln!("rclone is not installed (apt-get install -y rclone): its column is left out");
    }
    // rclone sends one DELETE per object: past 200,000 objects it would take most of an hour.
    let with_rclone = have_rclone && n <= 200_000;
    if have_rclone && !with_rclone {
        eprintln!("{n} objects: rclone (one request per object) is left out");
    }
    // BENCH_SWEEP_ONLY=1: sweep alone (on this file-backed server a plain paged listing of a
    // million keys is quadratic: the anchor would take hours).
    let sweep_only = std::env::var("BENCH_SWEEP_ONLY").is_ok();
    let contenders: Vec<&str> = ["object_store delete_stream", "sweep bulk-cloudcube", "rclone delete"]
        .into_iter()
        .filter(|c| with_rclone || *c != "rclone delete")
        .filter(|c| !sweep_only || c.starts_with("sweep"))
        .collect();
    for rep in 0..reps {
        for &contender in &contenders {
            let bucket = format!("bench-{rep}-{}", contender.len());
            fill_cube(&s3.bucket(&bucket), n);
            let url = format!("{}/{bucket}/cube", s3.endpoint);
            let d = match contender {
                "rclone delete" => measure(&mut rclone(s3, &["delete", &format!("bench:{bucket}/cube")])).0,
                "sweep bulk-cloudcube" => {
                    let (d, peak) = measure(
                        Command::new(env!("CARGO_BIN_EXE_sweep"))
                            .args(["--database-url", &db, "bulk-cloudcube", "--allow-empty-references"])
                            .args(common::verbosity())
                            .env("CLOUDCUBE_URL", &url)
                            .env("CLOUDCUBE_ACCESS_KEY_ID", S3_ACCESS)
                            .env("CLOUDCUBE_SECRET_ACCESS_KEY", S3_SECRET),
                    );
                    println!("rep {rep}: sweep peak memory {:.1} MiB", common::mb(peak));
                    d
                }
                _ => rt.block_on(async {
                    let store: Arc<dyn object_store::ObjectStore> = Arc::new(
                        object_store::aws::AmazonS3Builder::new()
                            .with_bucket_name(&bucket)
                            .with_region("us-east-1")
                            .with_endpoint(&s3.endpoint)
                            .with_allow_http(true)
                            .with_access_key_id(S3_ACCESS)
                            .with_secret_access_key(S3_SECRET)
                            .build()
                            .unwrap(),
                    );
                    let start = std::time::Instant::now();
                    let prefix = object_store::path::Path::from("cube");
                    let locations = store.list(Some(&prefix)).map_ok(|m| m.location).boxed();
                    let deleted: Vec<_> = store.delete_stream(locations).collect().await;
                    let failed: Vec<_> = deleted.iter().filter_map(|r| r.as_ref().err()).collect();
                    if let Some(e) = failed.first() {
                        // The anchor against this test server at a million keys: said, not fatal.
                        println!(
                            "rep {rep}: object_store delete_stream: {} deletions failed, first: {e}",
                            failed.len()
                        );
                    }
                    start.elapsed()
                }),
            };
            let remaining = left(s3, &bucket);
            if contender.starts_with("sweep") {
                assert_eq!(remaining, 0, "{contender} deleted everything");
            } else if remaining > 0 {
                println!("rep {rep}: {contender} left {remaining} objects");
            }
            // Counted on the server: keys per DeleteObjects request, and single DELETEs.
            let req = s3.requests(&bucket);
            let (lo, hi) = (req.delete_objects.iter().min().copied(), req.delete_objects.iter().max().copied());
            println!(
                "rep {rep}: {contender:<30} {:>7.2} s   {} DeleteObjects (keys {lo:?}..{hi:?}), {} DeleteObject",
                d.as_secs_f64(),
                req.delete_objects.len(),
                req.delete_object
            );
            t.entry(contender).or_default().push(d.as_secs_f64());
        }
    }
    println!("\nbulk-cloudcube, {n} objects on a loopback S3 server (medians of {reps}):");
    let anchor = t.get("object_store delete_stream").map(|v| median(v.clone())).unwrap_or(f64::NAN);
    for (k, v) in &t {
        let m = median(v.clone());
        println!("  {k:<30} {m:>7.2} s   ratio to delete_stream {:.2}x", m / anchor);
    }
}
