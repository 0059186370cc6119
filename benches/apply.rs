//! `cargo bench --bench apply`: what review-then-apply costs against a direct run.
//!
//! Two workloads on identical fresh copies: cleanup-attachments (BENCH_ROWS soft-deleted rows
//! with 1 KiB files, default 20,000, on a temporary PostgreSQL cluster) and bulk-cloudcube
//! (BENCH_OBJECTS objects, default 5,000, on the loopback S3 server). For each: the direct real
//! run; then a dry run with --plan-out (the fingerprints: one lstat per file, one HEAD per object,
//! one SELECT per batch of rows) followed by `sweep apply` (the same checks again, just before
//! each deletion). Prints times, the plan file's size and peak memory.

mod common;
#[allow(dead_code)]
#[path = "../tests/it/support.rs"]
mod support;

use common::{check_attachments, env_num, files_under, fill_cube, mb, measure, prepare_attachments};
use std::path::Path;
use std::process::Command;
use support::{S3Server, S3_ACCESS, S3_SECRET};
use sweep_testkit::PgCluster;

fn sweep() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sweep"));
    c.env_remove("DATABASE_URL").arg("-q");
    c
}

/// Direct run, plan, apply: (seconds, peak MiB) each, and the plan's size in MiB.
fn three(mut run: impl FnMut(&[&str]) -> Command, reset: &mut dyn FnMut(), plan: &Path) -> [(f64, f64); 3] {
    let p = plan.to_str().unwrap();
    let direct = measure(&mut run(&[]));
    reset();
    let planned = measure(&mut run(&["--dry-run", "--plan-out", p]));
    let applied = measure(sweep().args(["apply", p]).envs(run(&[]).get_envs().filter_map(|(k, v)| Some((k, v?)))));
    [direct, planned, applied].map(|(d, m)| (d.as_secs_f64(), mb(m)))
}

fn print(what: &str, r: [(f64, f64); 3], plan: &Path) {
    let size = std::fs::metadata(plan).map(|m| mb(m.len())).unwrap_or(0.0);
    println!("\n{what}");
    println!("  direct real run            {:>7.2} s  peak {:>6.1} MiB", r[0].0, r[0].1);
    println!("  dry run + --plan-out       {:>7.2} s  peak {:>6.1} MiB  (plan file {size:.1} MiB)", r[1].0, r[1].1);
    println!("  apply                      {:>7.2} s  peak {:>6.1} MiB", r[2].0, r[2].1);
    println!("  plan + apply / direct      {:>7.2}x", (r[1].0 + r[2].0) / r[0].0);
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rows = env_num("BENCH_ROWS", 20_000);
    let objects = env_num("BENCH_OBJECTS", 5_000);
    let base = tempfile::tempdir_in(std::env::current_dir().unwrap().join("target")).unwrap();
    let plan = base.path().join("plan.json");

    let pg = PgCluster::shared();
    let copy = std::cell::RefCell::new(prepare_attachments(pg, base.path(), 0, rows));
    let mut rep = 0;
    let r = three(
        |extra| {
            let (url, media) = copy.borrow().clone();
            let mut c = sweep();
            c.args(extra).args(["cleanup-attachments", "--batch-size", "1000"]);
            c.env("DATABASE_URL", url).env("MEDIA_ROOT", media);
            c
        },
        &mut || {
            let (url, media) = copy.borrow().clone();
            check_attachments(&url, &media, rows);
            rep += 1;
            *copy.borrow_mut() = prepare_attachments(pg, base.path(), rep, rows);
        },
        &plan,
    );
    let (url, media) = copy.borrow().clone();
    check_attachments(&url, &media, rows);
    print(&format!("cleanup-attachments, {rows} rows + files deleted, PostgreSQL, batch 1000:"), r, &plan);
    pg.stop();

    let s3 = S3Server::shared();
    let bucket = std::cell::RefCell::new(String::from("apply-0"));
    fill_cube(&s3.bucket("apply-0"), objects);
    let db = format!("sqlite://{}/app.db", base.path().display());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let d = sweep::db::Db::connect(&sweep::config::DatabaseUrl::new(db.clone()), true).await.unwrap();
        sweep::reference::create(&d).await.unwrap();
        d.migrate().await.unwrap();
    });
    let r = three(
        |extra| {
            let mut c = sweep();
            c.args(extra).args(["bulk-cloudcube", "--allow-empty-references"]);
            c.env("DATABASE_URL", &db)
                .env("CLOUDCUBE_URL", format!("{}/{}/cube", s3.endpoint, bucket.borrow()))
                .env("CLOUDCUBE_ACCESS_KEY_ID", S3_ACCESS)
                .env("CLOUDCUBE_SECRET_ACCESS_KEY", S3_SECRET);
            c
        },
        &mut || {
            assert_eq!(files_under(&s3.root.join(bucket.borrow().as_str())), 0);
            *bucket.borrow_mut() = "apply-1".into();
            fill_cube(&s3.bucket("apply-1"), objects);
        },
        &plan,
    );
    assert_eq!(files_under(&s3.root.join("apply-1")), 0, "apply deleted every object");
    print(&format!("bulk-cloudcube, {objects} objects, loopback S3:"), r, &plan);
}
