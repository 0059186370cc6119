//! `cargo bench --bench ui_files`: PERFORMANCE.md's cleanup-ui-files row.
//!
//! 1,000,000 files under `published_modules/`, 100,000 rows whose payloads reference 90% of
//! them, on a temporary PostgreSQL cluster. Contenders on identical fresh trees: sweep, and the
//! pipeline `find … | sort` vs the references `| sort`, `comm -23`, `xargs rm`. Prints times
//! and sweep's peak memory. BENCH_FILES (default 1,000,000) and BENCH_REPS (default 1) scale it.

mod common;

use common::{env_num, files_under as count_files, mb, measure, median};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;
use sweep_testkit::PgCluster;

/// Rows: module m (1..=rows/10), version v (1..=10); each row has files/rows files; rows
/// reference the first 90% of their files.
fn prepare_db(pg: &PgCluster, files: usize) -> String {
    let url = pg.new_database();
    let rows = files / 10;
    let per_row = 10;
    let refd = 9;
    let sql = format!(
        "{schema}
        {tables}
        INSERT INTO authoring_publishedmodule (id, module_id, version, payload, published_at)
        SELECT i, (i - 1) / 10 + 1, (i - 1) % 10 + 1,
               jsonb_build_object('title', 'Module ' || i, 'steps',
                 (SELECT jsonb_agg(jsonb_build_object('ui', '/media/published_modules/' || ((i - 1) / 10 + 1) || '/v' || ((i - 1) % 10 + 1) || '/step-' || k || '.json?rev=2'))
                  FROM generate_series(1, {refd}) AS k)),
               now() - interval '30 days'
        FROM generate_series(1, {rows}) AS i; ANALYZE authoring_publishedmodule;",
        schema = sweep::reference::POSTGRES,
        tables = common::sweep_tables(),
    );
    let _ = per_row;
    let mut child = Command::new("psql")
        .args(["-q", "-v", "ON_ERROR_STOP=1", &url])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(sql.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    url
}

/// A fresh tree: for each row, 10 step files (the 10th unreferenced).
fn prepare_tree(base: &Path, tag: &str, files: usize) -> PathBuf {
    let media = base.join(format!("ui-{tag}-{}", std::process::id()));
    let old = SystemTime::now() - std::time::Duration::from_secs(86400 * 10);
    let body = b"{\"widget\":\"step\"}";
    for i in 1..=files / 10 {
        let dir = media.join(format!("published_modules/{}/v{}", (i - 1) / 10 + 1, (i - 1) % 10 + 1));
        std::fs::create_dir_all(&dir).unwrap();
        for k in 1..=10 {
            let f = std::fs::File::create(dir.join(format!("step-{k}.json"))).unwrap();
            (&f).write_all(body).unwrap();
            f.set_modified(old).unwrap();
        }
    }
    media
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let files = env_num("BENCH_FILES", 1_000_000);
    let reps = env_num("BENCH_REPS", 1);
    let pg = PgCluster::shared();
    let base = tempfile::tempdir_in(std::env::current_dir().unwrap().join("target")).unwrap();
    let url = prepare_db(pg, files);
    let sweep = env!("CARGO_BIN_EXE_sweep");
    let mut t: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    let mut mem = Vec::new();
    for rep in 0..reps {
        // BENCH_SWEEP_ONLY=1: sweep's figures alone (the pipeline's tree takes minutes to make).
        let contenders: &[&str] = if std::env::var("BENCH_SWEEP_ONLY").is_ok() {
            &["sweep cleanup-ui-files"]
        } else {
            &["sweep cleanup-ui-files", "find|sort, refs|sort, comm -23, xargs rm"]
        };
        for &contender in contenders {
            let media = prepare_tree(base.path(), &format!("{rep}-{}", contender.len()), files);
            let (d, peak) = if contender.starts_with("sweep") {
                measure(Command::new(sweep).args(common::verbosity()).args([
                    "--database-url",
                    &url,
                    "--media-root",
                    media.to_str().unwrap(),
                    "cleanup-ui-files",
                ]))
            } else {
                let script = format!(
                    "cd '{m}' && find published_modules -type f | sort > ../files-{r}.txt && \
                     psql -qAt '{url}' -c 'SELECT payload::text FROM authoring_publishedmodule' | grep -o 'published_modules/[^\"?#]*' | sort -u > ../refs-{r}.txt && \
                     comm -23 ../files-{r}.txt ../refs-{r}.txt | xargs rm -f",
                    m = media.display(),
                    r = rep
                );
                measure(Command::new("sh").args(["-c", &script]))
            };
            let left = count_files(&media);
            assert_eq!(left, files / 10 * 9, "{contender}: exactly the referenced files remain");
            if contender.starts_with("sweep") {
                mem.push(mb(peak));
            }
            println!("rep {rep}: {contender:<45} {:>7.2} s  peak {:>6.1} MiB", d.as_secs_f64(), mb(peak));
            t.entry(contender).or_default().push(d.as_secs_f64());
            let _ = std::fs::remove_dir_all(&media);
        }
    }
    println!("\ncleanup-ui-files, {files} files, {} rows referencing 90% (medians of {reps}):", files / 10);
    let anchor = t.get("find|sort, refs|sort, comm -23, xargs rm").map(|v| median(v.clone())).unwrap_or(f64::NAN);
    for (k, v) in &t {
        let m = median(v.clone());
        println!("  {k:<45} {m:>7.2} s   ratio to the pipeline {:.2}x", m / anchor);
    }
    println!("  sweep peak memory: {:.1} MiB", median(mem));
    pg.stop();
}
