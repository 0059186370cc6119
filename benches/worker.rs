//! `cargo bench --bench worker`: PERFORMANCE.md's worker-once row.
//!
//! 100,000 log files and 10,000 tmp dirs (3 files each), 90% past their TTL, on identical fresh
//! trees: `sweep worker-once --tasks tmp,logs` (SQLite audit) against
//! `find logs -type f -mtime +7 -delete` + `find tmp -mindepth 1 -maxdepth 1 -type d -mmin +60 -exec rm -rf {} +`.
//! BENCH_LOGS (default 100,000) and BENCH_REPS (default 1) scale it.

mod common;

use common::{env_num, mb, measure, median};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

fn aged(p: &Path, t: SystemTime) {
    let f = std::fs::File::create(p).unwrap();
    (&f).write_all(b"2026-11-01 DEBUG something happened\n").unwrap();
    f.set_modified(t).unwrap();
}

fn prepare(base: &Path, tag: &str, logs: usize) -> PathBuf {
    let data = base.join(format!("data-{tag}-{}", std::process::id()));
    let old = SystemTime::now() - Duration::from_secs(86400 * 10);
    let young = SystemTime::now() - Duration::from_secs(60 * 5);
    for d in 0..100 {
        std::fs::create_dir_all(data.join(format!("logs/{d:02}"))).unwrap();
    }
    for i in 0..logs {
        aged(&data.join(format!("logs/{:02}/debug-{i}.log", i % 100)), if i % 10 == 0 { young } else { old });
    }
    for i in 0..logs / 10 {
        let dir = data.join(format!("tmp/clone-{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let t = if i % 10 == 0 { young } else { old };
        for k in 0..3 {
            aged(&dir.join(format!("part-{k}")), t);
        }
        std::fs::File::open(&dir).unwrap().set_modified(t).unwrap();
    }
    data
}

fn count(p: &Path) -> usize {
    walkdir::WalkDir::new(p).into_iter().filter_map(|e| e.ok()).filter(|e| e.file_type().is_file()).count()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let logs = env_num("BENCH_LOGS", 100_000);
    let reps = env_num("BENCH_REPS", 1);
    let base = tempfile::tempdir_in(std::env::current_dir().unwrap().join("target")).unwrap();
    let db = format!("sqlite://{}/worker.db", base.path().display());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let d = sweep::db::Db::connect(&sweep::config::DatabaseUrl::new(db.clone()), true).await.unwrap();
        sweep::reference::create(&d).await.unwrap();
        d.migrate().await.unwrap();
        if std::env::var("BENCH_SQLITE_WAL").is_ok() {
            // The application's choice of journal: WAL commits with one fsync, the default
            // rollback journal with several.
            d.execute(&d.raw("PRAGMA journal_mode=WAL")).await.unwrap();
        }
    });
    let mut t: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    let mut mem = Vec::new();
    for rep in 0..reps {
        for contender in ["sweep worker-once --tasks tmp,logs", "find -delete + find -exec rm -rf"] {
            let fs = common::FreshFs::new(base.path(), &format!("{rep}-{}", contender.len()));
            let data = prepare(&fs.dir, &format!("{rep}-{}", contender.len()), logs);
            let (d, peak) = if contender.starts_with("sweep") {
                measure(Command::new(env!("CARGO_BIN_EXE_sweep")).args(common::verbosity()).args([
                    "--database-url",
                    &db,
                    "--data-dir",
                    data.to_str().unwrap(),
                    "worker-once",
                    "--tasks",
                    "tmp,logs",
                ]))
            } else {
                let script = "cd \"$1\" && find logs -type f -mtime +7 -delete && find tmp -mindepth 1 -maxdepth 1 -type d -mmin +60 -exec rm -rf {} +";
                measure(Command::new("sh").args(["-c", script, "sh", data.to_str().unwrap()]))
            };
            let left = count(&data);
            assert_eq!(left, logs / 10 + logs / 100 * 3, "{contender}: exactly the young ones remain");
            if contender.starts_with("sweep") {
                mem.push(mb(peak));
            }
            println!("rep {rep}: {contender:<40} {:>7.2} s  peak {:>6.1} MiB", d.as_secs_f64(), mb(peak));
            t.entry(contender).or_default().push(d.as_secs_f64());
            let _ = std::fs::remove_dir_all(&data);
            drop(fs);
        }
    }
    println!("\nworker-once --tasks tmp,logs, {logs} logs + {} tmp dirs, 90% expired (medians of {reps}):", logs / 10);
    let anchor = median(t["find -delete + find -exec rm -rf"].clone());
    for (k, v) in &t {
        let m = median(v.clone());
        println!("  {k:<40} {m:>7.2} s   ratio to find {:.2}x", m / anchor);
    }
    println!("  sweep peak memory: {:.1} MiB", median(mem));
}
