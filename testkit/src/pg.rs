//! A temporary PostgreSQL cluster started from the machine's `initdb`/`postgres` on
//! 127.0.0.1, shared by one test process and stopped when it exits.
//!
//! As root (CI), the cluster runs as the `postgres` user via
//! `runuser`, since PostgreSQL refuses to run as root. The server runs under a small shell
//! that stops it (and removes its directory) when our end of its stdin closes, which happens
//! whenever the test process exits, however it exits.

use crate::{as_user, free_port, server_dir, supervised};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A running temporary cluster.
pub struct PgCluster {
    pub port: u16,
    pub dir: PathBuf,
    child: Mutex<(Child, Option<ChildStdin>)>,
}

static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
static DB_SEQ: AtomicUsize = AtomicUsize::new(0);

/// The message when PostgreSQL's server binaries are missing.
pub const MISSING_PG: &str =
    "PostgreSQL server binaries (initdb, postgres) not found on PATH or under /usr/lib/postgresql/*/bin: \
install Debian's `postgresql` package (apt-get install -y postgresql); the tests start their own temporary cluster";

fn find_bin(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    dirs.sort();
    crate::find_bin(name, &dirs)
}

impl PgCluster {
    /// The shared cluster, started on first use. Panics with a clear message if PostgreSQL is
    /// not installed: a missing prerequisite is a failure, never a skip.
    pub fn shared() -> &'static PgCluster {
        CLUSTER.get_or_init(|| {
            PgCluster::start().unwrap_or_else(|e| panic!("cannot start a temporary PostgreSQL cluster: {e}"))
        })
    }

    fn start() -> Result<PgCluster, String> {
        let initdb = find_bin("initdb").ok_or(MISSING_PG)?;
        let postgres = find_bin("postgres").ok_or(MISSING_PG)?;
        let (dir, root) = server_dir("pg", "postgres", "postgresql")?;
        let as_user = |bin: &Path| as_user(root, "postgres", bin);
        let data = dir.join("data");
        let out = as_user(&initdb)
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", initdb.display()))?;
        if !out.status.success() {
            return Err(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let port = free_port();
        // SIGINT goes to the postmaster itself (runuser does not pass it on): a fast shutdown.
        let stop = format!(
            "pm=$(head -n1 '{}/postmaster.pid' 2>/dev/null); kill -INT ${{pm:-$pid}} 2>/dev/null",
            dir.join("data").display()
        );
        let mut cmd = supervised(root, "postgres", &postgres, &stop, &dir);
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(&dir)
            .args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ])
            .args(["-c", "shared_buffers=128MB"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().map_err(|e| format!("cannot start postgres: {e}"))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new(find_bin("pg_isready").unwrap_or_else(|| "pg_isready".into()))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or_else(|_| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
            if ready {
                break;
            }
            if Instant::now() > deadline {
                return Err("postgres did not become ready within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(PgCluster { port, dir, child: Mutex::new((child, Some(stdin))) })
    }

    /// The URL of the maintenance database.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Create a fresh, empty database and return its URL.
    pub fn new_database(&self) -> String {
        let name = format!("t{}_{}", std::process::id(), DB_SEQ.fetch_add(1, Ordering::SeqCst));
        let psql = find_bin("psql").unwrap_or_else(|| "psql".into());
        let out = Command::new(psql)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", "postgres", "-qAt", "-c"])
            .arg(format!("CREATE DATABASE {name}"))
            .output()
            .expect("psql runs (Debian package postgresql-client)");
        assert!(out.status.success(), "CREATE DATABASE failed: {}", String::from_utf8_lossy(&out.stderr));
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Stop the cluster now (the benchmarks call this; tests let process exit do it).
    pub fn stop(&self) {
        if let Ok(mut g) = self.child.lock() {
            // Closing the shell's stdin makes it stop postgres and remove the directory.
            drop(g.1.take());
            let _ = g.0.wait();
        }
    }
}
