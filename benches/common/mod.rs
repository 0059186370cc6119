//! Shared by the benchmarks: timing a child process with its peak memory, and medians.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};
use sweep_testkit::PgCluster;

/// A number from the environment, or `default`.
pub fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

pub fn psql(url: &str, sql: &str) {
    let st = Command::new("psql").args(["-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql]).status().unwrap();
    assert!(st.success(), "{sql}");
}

/// sweep's tables as `sweep migrate` makes them on PostgreSQL (every migration, recorded).
pub fn sweep_tables() -> String {
    [
        include_str!("../../migrations/postgres/0001_sweep_tables.sql"),
        include_str!("../../migrations/postgres/0002_audit_without_foreign_key.sql"),
        include_str!("../../migrations/postgres/0003_audit_intents_index.sql"),
        include_str!("../../migrations/postgres/0004_serve.sql"),
        "CREATE TABLE sweep_migrations (version bigint PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO sweep_migrations VALUES (1), (2), (3), (4);",
    ]
    .join("\n")
}

/// A fresh database and media tree: `rows` old soft-deleted attachments with 1 KiB files, and
/// `rows / 5` active ones (kept).
pub fn prepare_attachments(pg: &PgCluster, base: &Path, rep: usize, rows: usize) -> (String, PathBuf) {
    let url = pg.new_database();
    psql(&url, sweep::reference::POSTGRES);
    psql(&url, &sweep_tables());
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
    let old = SystemTime::now() - Duration::from_secs(86400 * 60);
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

/// Only the kept rows and files of `prepare_attachments` remain.
pub fn check_attachments(url: &str, media: &Path, rows: usize) {
    check_rows_left(url, rows);
    assert_eq!(files_under(media), rows / 5, "only the kept files remain");
}

/// CPU seconds (user + system) of the processes that `pid` has waited for, from
/// `/proc/PID/stat` (`cutime`, `cstime`; 100 ticks a second on Linux). For this process: the
/// contenders it ran; for a PostgreSQL postmaster: its backends that ended.
pub fn reaped_cpu(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces), counted from `state` (field 3).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0.0)).collect();
    (f.get(13).unwrap_or(&0.0) + f.get(14).unwrap_or(&0.0)) / 100.0
}

/// The postmaster's pid of the cluster in `dir`.
pub fn postmaster(dir: &Path) -> String {
    let pid = std::fs::read_to_string(dir.join("data/postmaster.pid")).unwrap_or_default();
    pid.lines().next().unwrap_or("").to_string()
}

/// Only the kept rows of `prepare_attachments` remain.
pub fn check_rows_left(url: &str, rows: usize) {
    let out = Command::new("psql").args(["-qAt", url, "-c", "SELECT count(*) FROM forum_attachment"]).output().unwrap();
    let left: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(left, rows / 5, "only the kept rows remain");
}

/// Regular files under `p`.
pub fn files_under(p: &Path) -> usize {
    walkdir::WalkDir::new(p).into_iter().filter_map(|e| e.ok()).filter(|e| e.file_type().is_file()).count()
}

/// `n` 30-day-old objects under `bucket_dir/cube/uploads/NN/`, written as s3s-fs's backing files.
pub fn fill_cube(bucket_dir: &Path, n: usize) {
    let root = bucket_dir.join("cube");
    let old = SystemTime::now() - Duration::from_secs(86400 * 30);
    // A thousand objects a directory (at least 100 directories): the file-backed test server
    // slows down with the size of a directory, which is not what is measured.
    let dirs = (n / 1000).max(100);
    for d in 0..dirs {
        std::fs::create_dir_all(root.join(format!("uploads/{d:02}"))).unwrap();
    }
    for i in 0..n {
        let f = std::fs::File::create(root.join(format!("uploads/{:02}/{i}.mp4", i % dirs))).unwrap();
        use std::io::Write;
        (&f).write_all(b"0123456789abcdef").unwrap();
        f.set_modified(old).unwrap();
    }
}

/// `-v` with BENCH_VERBOSE (sweep's timing lines are at debug level), else nothing: sweep is
/// measured at its default verbosity, a log line per item, as cron runs it.
pub fn verbosity() -> &'static [&'static str] {
    if std::env::var("BENCH_VERBOSE").is_ok() {
        &["-v"]
    } else {
        &[]
    }
}

/// Wall time and peak resident memory (VmHWM, polled) of a command; panics if it fails.
pub fn measure(cmd: &mut Command) -> (Duration, u64) {
    // The data just prepared is flushed first: what a cleanup deletes is old and long on disk,
    // and deleting files whose blocks were never written is cheaper (and the writeback running
    // meanwhile competes for the cores), differently for each contender.
    let synced = Command::new("sync").status().is_ok_and(|s| s.success());
    assert!(synced, "sync failed: the data must be on disk before a contender runs");
    let start = Instant::now();
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn");
    let pid = child.id();
    let mut peak_kb = 0u64;
    let stderr = child.stderr.take().unwrap();
    let drain = std::thread::spawn(move || {
        use std::io::Read;
        let mut s = String::new();
        let mut r = std::io::BufReader::new(stderr);
        let _ = r.read_to_string(&mut s);
        s
    });
    loop {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            for l in status.lines() {
                if let Some(v) = l.strip_prefix("VmHWM:") {
                    let kb: u64 = v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0);
                    peak_kb = peak_kb.max(kb);
                }
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            let err = drain.join().unwrap();
            if std::env::var("BENCH_VERBOSE").is_ok() {
                // sweep's own split of its time (its -v log lines).
                for l in err.lines().filter(|l| {
                    l.contains(" in ")
                        && (l.contains("Plan:")
                            || l.contains("Executed")
                            || l.contains("Timings")
                            || l.contains("listed")
                            || l.contains("References:")
                            || l.contains("Walked"))
                }) {
                    eprintln!("    {l}");
                }
            }
            assert!(st.success() || st.code() == Some(1), "{cmd:?} failed: {st}\n{}", tail(&err));
            return (start.elapsed(), peak_kb * 1024);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn tail(s: &str) -> String {
    s.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

pub fn mb(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// A fresh filesystem for one contender's data: a loop-mounted ext4 image when running as root
/// with `mkfs.ext4` (PERFORMANCE.md: this machine's root filesystem creates and deletes files
/// slowly right after a mass deletion), else a fresh directory. Unmounted and removed on drop.
pub struct FreshFs {
    pub dir: PathBuf,
    image: Option<PathBuf>,
}

impl FreshFs {
    pub fn new(base: &Path, tag: &str) -> FreshFs {
        let dir = base.join(format!("fs-{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        let image = base.join(format!("fs-{tag}.img"));
        let root = std::process::Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
        let ok = root
            // Sparse, with inodes for a few million small files (1,000,000 runs).
            && std::fs::File::create(&image).and_then(|f| f.set_len(24 << 30)).is_ok()
            && Command::new("mkfs.ext4").args(["-q", "-F", "-N", "4000000"]).arg(&image).status().is_ok_and(|s| s.success())
            && Command::new("mount").args(["-o", "loop"]).arg(&image).arg(&dir).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = std::fs::remove_file(&image);
            println!("(no loop-mounted filesystem: measuring on {})", dir.display());
        }
        FreshFs { dir, image: ok.then_some(image) }
    }
}

impl Drop for FreshFs {
    fn drop(&mut self) {
        if let Some(image) = &self.image {
            let _ = Command::new("umount").arg(&self.dir).status();
            let _ = std::fs::remove_file(image);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
