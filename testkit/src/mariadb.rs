//! A throwaway MariaDB server started from the machine's `mariadb-install-db` and `mariadbd`
//! (Debian's `mariadb-server`) on 127.0.0.1 and a socket in its own directory, shared by one
//! test process and stopped when it exits.
//!
//! As root (CI), the server runs as the `mysql` user (the package creates it) through
//! `runuser`. Like the PostgreSQL cluster, it runs under a small shell that stops it and
//! removes its directory when our end of its stdin closes, however the test process exits.
//! sweep connects as a user with a password over TCP, as it would in production.

use crate::{as_user, find_bin, free_port, server_dir, supervised};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The message when MariaDB's server is missing.
pub const MISSING_MARIADB: &str = "MariaDB's server (mariadb-install-db, mariadbd) and client (mariadb) not found on PATH or in /usr/sbin: \
install Debian's `mariadb-server` package (apt-get install -y mariadb-server); the tests start their own throwaway server";

/// The user and password sweep's tests connect with.
pub const USER: &str = "sweep";
pub const PASSWORD: &str = "sweep-test-pw-do-not-print";

/// A running throwaway server.
pub struct MariaDb {
    pub port: u16,
    pub dir: PathBuf,
    child: Mutex<(Child, Option<ChildStdin>)>,
}

static SERVER: OnceLock<MariaDb> = OnceLock::new();
static DB_SEQ: AtomicUsize = AtomicUsize::new(0);

fn bin(names: &[&str]) -> Result<PathBuf, String> {
    names.iter().find_map(|n| find_bin(n, &[])).ok_or_else(|| MISSING_MARIADB.to_string())
}

impl MariaDb {
    /// The shared server, started on first use. Panics with a clear message if MariaDB is not
    /// installed: a missing prerequisite is a failure, never a skip.
    pub fn shared() -> &'static MariaDb {
        SERVER
            .get_or_init(|| MariaDb::start().unwrap_or_else(|e| panic!("cannot start a throwaway MariaDB server: {e}")))
    }

    fn start() -> Result<MariaDb, String> {
        let install = bin(&["mariadb-install-db", "mysql_install_db"])?;
        let server = bin(&["mariadbd", "mysqld"])?;
        bin(&["mariadb", "mysql"])?;
        let (dir, root) = server_dir("mariadb", "mysql", "mariadb-server")?;
        let as_user = |bin: &Path| as_user(root, "mysql", bin);
        let data = dir.join("data");
        let out = as_user(&install)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", install.display()))?;
        if !out.status.success() {
            return Err(format!(
                "mariadb-install-db failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let port = free_port();
        let pid_file = dir.join("mariadbd.pid");
        let stop = format!("kill -TERM $(cat '{}' 2>/dev/null || echo $pid) 2>/dev/null", pid_file.display());
        let mut cmd = supervised(root, "mysql", &server, &stop, &dir);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.join("sock").display()))
            .arg(format!("--pid-file={}", pid_file.display()))
            .arg(format!("--port={port}"))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                "--skip-log-bin",
                "--innodb-flush-log-at-trx-commit=0",
                "--innodb-buffer-pool-size=64M",
                "--innodb-log-file-size=16M",
                "--max-connections=400",
                "--performance-schema=OFF",
            ])
            .arg(format!("--log-error={}", dir.join("error.log").display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().map_err(|e| format!("cannot start mariadbd: {e}"))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let me = MariaDb { port, dir, child: Mutex::new((child, Some(stdin))) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while me.client("SELECT 1").is_err() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(me.dir.join("error.log")).unwrap_or_default();
                return Err(format!("mariadbd did not become ready within 60 s:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        me.client(&format!(
            "CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'; GRANT ALL ON *.* TO '{USER}'@'127.0.0.1'"
        ))?;
        Ok(me)
    }

    /// Run SQL as the server's root over its socket.
    fn client(&self, sql: &str) -> Result<String, String> {
        let client = bin(&["mariadb", "mysql"])?;
        let out = Command::new(client)
            .args(["--no-defaults", "-uroot", "-N", "-B"])
            .arg(format!("--socket={}", self.dir.join("sock").display()))
            .args(["-e", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Create a fresh, empty database and return its URL (user and password included).
    pub fn new_database(&self) -> String {
        let name = format!("t{}_{}", std::process::id(), DB_SEQ.fetch_add(1, Ordering::SeqCst));
        self.client(&format!("CREATE DATABASE {name} CHARACTER SET utf8mb4"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} failed: {e}"));
        format!("mysql://{USER}:{PASSWORD}@127.0.0.1:{}/{name}", self.port)
    }

    /// Stop the server now (the benchmarks call this; tests let process exit do it).
    pub fn stop(&self) {
        if let Ok(mut g) = self.child.lock() {
            drop(g.1.take());
            let _ = g.0.wait();
        }
    }
}
