//! Test and benchmark support for sweep, not part of the shipped binary or library: throwaway
//! database servers started from the machine's own server packages, on 127.0.0.1 (and a
//! socket in their directory), each shared by one test process and stopped when it exits.
//!
//! A missing server package is a panic that names the package, never a skip.

mod mariadb;
mod pg;

pub use mariadb::{MariaDb, MISSING_MARIADB};
pub use pg::{PgCluster, MISSING_PG};

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

pub(crate) fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

/// A program on PATH, or in one of `extra` directories (newest-sorting last wins).
pub(crate) fn find_bin(name: &str, extra: &[PathBuf]) -> Option<PathBuf> {
    if let Some(paths) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&paths).chain(["/usr/sbin".into(), "/sbin".into()]) {
            let p = d.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    extra.iter().rev().map(|d| d.join(name)).find(|p| p.is_file())
}

/// A server's own directory under the temp dir, owned by `user` when we run as root (servers
/// refuse to run as root): `(dir, root)`.
pub(crate) fn server_dir(kind: &str, user: &str, package: &str) -> Result<(PathBuf, bool), String> {
    let root = is_root();
    let dir = std::env::temp_dir().join(format!("sweep-{kind}-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if root {
        let ok = Command::new("chown").arg(format!("{user}:")).arg(&dir).status().map(|s| s.success()).unwrap_or(false);
        if !ok {
            return Err(format!(
                "running as root, but cannot chown {} to the `{user}` user: install Debian's `{package}` package (it creates that user)",
                dir.display()
            ));
        }
    }
    Ok((dir, root))
}

/// A command that runs `bin` as `user` when we run as root (through `runuser`), else as us.
pub(crate) fn as_user(root: bool, user: &str, bin: &std::path::Path) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", user, "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

/// A shell that runs `bin` (as `user` when we run as root) with the arguments the caller adds,
/// and, when its stdin closes (our end of the pipe, however the test process exits), runs `stop`
/// (shell text that signals the server), waits for the server and removes `dir`.
pub(crate) fn supervised(root: bool, user: &str, bin: &std::path::Path, stop: &str, dir: &std::path::Path) -> Command {
    let script = format!("\"$@\" & pid=$!; cat >/dev/null; {stop}; wait $pid; rm -rf '{}'", dir.display());
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).arg("sh");
    if root {
        cmd.args(["runuser", "-u", user, "--"]);
    }
    cmd.arg(bin);
    cmd
}
