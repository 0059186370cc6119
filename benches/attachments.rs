//! `cargo bench --bench attachments`: PERFORMANCE.md's cleanup-attachments row.
//!
//! 100,000 soft-deleted rows past the cutoff, each with a 1 KiB file, and 20,000 rows kept, on
//! a temporary PostgreSQL cluster. Contenders, interleaved on identical fresh copies:
//! sweep (default batch size 100, and 1,000), and the one-liner
//! `psql -c "DELETE … RETURNING image" | xargs rm -f`. Prints medians and sweep's peak memory.
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
    let mut mem: Vec<f64> = Vec::new();
    for rep in 0..reps {
        // Past 500,000 rows only the default batch size is measured (each copy takes minutes).
        let contenders: &[&str] = if rows > 500_000 {
            &["sweep (batch 100)", "psql DELETE RETURNING | xargs rm -f"]
        } else {
            &["sweep (batch 100)", "sweep (batch 1000)", "psql DELETE RETURNING | xargs rm -f"]
        };
        for &contender in contenders {
            let fs = common::FreshFs::new(base.path(), &format!("{rep}-{}", contender.len()));
            let (url, media) = prepare(pg, &fs.dir, rep, rows);
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
            check(&url, &media, rows);
            if contender.contains("batch 100)") {
                mem.push(mb(peak));
            }
            println!("rep {rep}: {contender:<40} {:>7.2} s  peak {:>6.1} MiB", d.as_secs_f64(), mb(peak));
            t.entry(contender).or_default().push(d.as_secs_f64());
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
        println!("  {k:<40} {m:>7.2} s   ratio to the one-liner {:.2}x", m / anchor);
    }
    println!("  sweep peak memory (batch 100): {:.1} MiB", median(mem));
    pg.stop();
}
