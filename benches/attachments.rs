//! `cargo bench --bench attachments`: PERFORMANCE.md's cleanup-attachments row.
//!
//! 100,000 soft-deleted rows past the cutoff, each with a 1 KiB file, and 20,000 rows kept, on
//! a temporary PostgreSQL cluster. Contenders, interleaved on identical fresh copies:
//! sweep (default batch size 100, and 1,000), and the one-liner
//! `psql -c "DELETE … RETURNING image" | xargs rm -f`. Prints medians and sweep's peak memory.
//! BENCH_ROWS and BENCH_REPS change the size and the repetitions.

mod common;

use common::{mb, measure, median};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;
use sweep::testkit::PgCluster;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn psql(url: &str, sql: &str) {
    let st = Command::new("psql").args(["-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql]).status().unwrap();
    assert!(st.success(), "{sql}");
}

/// A fresh database and media tree: `rows` old soft-deleted attachments with files, `rows / 5` kept.
fn prepare(pg: &PgCluster, base: &Path, rep: usize, rows: usize) -> (String, PathBuf) {
    let url = pg.new_database();
    psql(&url, sweep::reference::POSTGRES);
    psql(&url, include_str!("../migrations/postgres/0001_sweep_tables.sql"));
    psql(&url, "CREATE TABLE sweep_migrations (version bigint PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now()); INSERT INTO sweep_migrations VALUES (1);");
    let keep = rows / 5;
    psql(
        &url,
        &format!(
            "INSERT INTO forum_attachment (id, image, original_filename, file_size, is_active, deleted_at, created_at) \
             SELECT gen_random_uuid(), 'att/' || (i % 100) || '/' || i || '.bin', 'f.bin', 1024, i > {rows}, \
             CASE WHEN i > {rows} THEN NULL ELSE now() - interval '40 days' END, now() - interval '90 days' \
             FROM generate_series(1, {}) AS i; ANALYZE forum_attachment;",
            rows + keep
        ),
    );
    let media = base.join(format!("media-{rep}-{}", std::process::id()));
    let old = SystemTime::now() - std::time::Duration::from_secs(86400 * 60);
    let body = vec![7u8; 1024];
    for d in 0..100 {
        std::fs::create_dir_all(media.join(format!("att/{d}"))).unwrap();
    }
    for i in 1..=rows + keep {
        let f = std::fs::File::create(media.join(format!("att/{}/{i}.bin", i % 100))).unwrap();
        use std::io::Write;
        (&f).write_all(&body).unwrap();
        f.set_modified(old).unwrap();
    }
    (url, media)
}

fn check(url: &str, media: &Path, rows: usize) {
    let out = Command::new("psql").args(["-qAt", url, "-c", "SELECT count(*) FROM forum_attachment"]).output().unwrap();
    let left: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(left, rows / 5, "only the kept rows remain");
    let files = walk_count(media);
    assert_eq!(files, rows / 5, "only the kept files remain");
}

fn walk_count(p: &Path) -> usize {
    walkdir::WalkDir::new(p).into_iter().filter_map(|e| e.ok()).filter(|e| e.file_type().is_file()).count()
}

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
        for contender in ["sweep (batch 100)", "sweep (batch 1000)", "psql DELETE RETURNING | xargs rm -f"] {
            let (url, media) = prepare(pg, base.path(), rep, rows);
            let (d, peak) = if contender.starts_with("sweep") {
                let batch = if contender.contains("1000") { "1000" } else { "100" };
                measure(
                    Command::new(sweep)
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
