//! `cargo bench --bench attachments`: PERFORMANCE.md's cleanup-attachments row.
//!
//! 100,000 soft-deleted rows past the cutoff, each with a 1 KiB file, and 20,000 rows kept, on
//! a temporary PostgreSQL cluster. Contenders, interleaved on identical fresh copies:
//! sweep (default batch size 100, and 1,000), sweep with the files already gone (its whole
//! run but the unlinks: what the rest costs), and the one-liner
//! `psql -c "DELETE … RETURNING image" | xargs rm -f`. Prints medians, sweep's peak memory,
//! and the CPU seconds of each contender and of PostgreSQL's backends.
//! BENCH_ROWS and BENCH_REPS change the size and the repetitions. Each contender's files are on
//! a fresh loop-mounted ext4 filesystem when run as root (see `common::FreshFs`).

mod common;

use common::{check_attachments as check, env_num, mb, measure, median, prepare_attachments as prepare};
use std::path::Path;
use std::process::Command;
use sweep_testkit::PgCluster;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rows = env_num("BENCH_ROWS", 100_000);
    let reps = env_num("BENCH_REPS", 3);
    let pg = PgCluster::shared();
    let base = tempfile::tempdir_in(std::env::current_dir().unwrap().join("target")).unwrap();
    let sweep = env!("CARGO_BIN_EXE_sweep");
    if std::env::var("BENCH_PREPARE_ONLY").is_ok() {
        // Leave one prepared copy for profiling by hand (the cluster stays up until Enter).
        let (url, media) = prepare(pg, Path::new("/tmp"), 0, rows);
        println!("DATABASE_URL={url} MEDIA_ROOT={}", media.display());
        let _ = std::io::stdin().read_line(&mut String::new());
        pg.stop();
        return;
    }
    let mut t: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    // CPU seconds of each contender's own processes and of PostgreSQL's backends.
    let mut cpu: std::collections::BTreeMap<&str, Vec<(f64, f64)>> = Default::default();
    let mut mem: Vec<f64> = Vec::new();
    let postmaster = common::postmaster(&pg.dir);
    for rep in 0..reps {
        // Past 500,000 rows only the default batch size is measured (each copy takes minutes).
        // "files already gone": sweep's whole run but the unlinks (each file is `missing`), what
        // the rest of its work costs on its own.
        let contenders: &[&str] = if rows > 500_000 {
            &["sweep (batch 100)", "psql DELETE RETURNING | xargs rm -f"]
        } else {
            &[
                "sweep (batch 100)",
                "sweep (batch 1000)",
                "sweep (batch 100, files already gone)",
                "psql DELETE RETURNING | xargs rm -f",
            ]
        };
        for &contender in contenders {
            let fs = common::FreshFs::new(base.path(), &format!("{rep}-{}", contender.len()));
            let (url, media) = prepare(pg, &fs.dir, rep, rows);
            if contender.contains("gone") {
                std::fs::remove_dir_all(&media).unwrap();
                std::fs::create_dir_all(&media).unwrap();
            }
            let before = (common::reaped_cpu("self"), common::reaped_cpu(&postmaster));
            let (d, peak) = if contender.starts_with("sweep") {
                let batch = if contender.contains("1000") { "1000" } else { "100" };
                measure(
                    Command::new(sweep)
                        .args(common::verbosity())
                        .args([
                            "--database-url",
                            &url,
                            "--media-root",
                            media.to_str().unwrap(),
                            "cleanup-attachments",
                            "--batch-size",
                            batch,
                        ])
                        .env_remove("DATABASE_URL"),
                )
            } else {
                let script = format!(
                    "psql -qAt '{url}' -c \"DELETE FROM forum_attachment WHERE is_active = false AND deleted_at <= now() - interval '30 days' RETURNING image\" | (cd '{}' && xargs rm -f)",
                    media.display()
                );
                measure(Command::new("sh").args(["-c", &script]))
            };
            if contender.contains("gone") {
                common::check_rows_left(&url, rows);
            } else {
                check(&url, &media, rows);
            }
            // The backends of the contender's sessions have ended (their CPU is the postmaster's).
            std::thread::sleep(std::time::Duration::from_millis(500));
            let used = (common::reaped_cpu("self") - before.0, common::reaped_cpu(&postmaster) - before.1);
            if contender.contains("batch 100)") {
                mem.push(mb(peak));
            }
            println!(
                "rep {rep}: {contender:<40} {:>7.2} s  peak {:>6.1} MiB  CPU {:.2} s + PostgreSQL {:.2} s",
                d.as_secs_f64(),
                mb(peak),
                used.0,
                used.1
            );
            t.entry(contender).or_default().push(d.as_secs_f64());
            cpu.entry(contender).or_default().push(used);
            let _ = std::fs::remove_dir_all(&media);
            drop(fs);
        }
    }
    println!(
        "\ncleanup-attachments, {rows} rows deleted + {} kept, 1 KiB files, PostgreSQL (medians of {reps}):",
        rows / 5
    );
    let anchor = median(t["psql DELETE RETURNING | xargs rm -f"].clone());
    for (k, v) in &t {
        let m = median(v.clone());
        let c = &cpu[k];
        let (own, pgc) = (median(c.iter().map(|x| x.0).collect()), median(c.iter().map(|x| x.1).collect()));
        println!(
            "  {k:<40} {m:>7.2} s   ratio to the one-liner {:.2}x   CPU {own:.2} s + PostgreSQL {pgc:.2} s",
            m / anchor
        );
    }
    println!("  sweep peak memory (batch 100): {:.1} MiB", median(mem));
    pg.stop();
}
