//! `cargo bench --bench serve`: `sweep serve`'s item ledger on a large run, and its memory.
//!
//! A temporary PostgreSQL cluster holds one real run with BENCH_ITEMS audit rows (default
//! 100,000: files and rows, a few failed). The release binary serves it on 127.0.0.1; the bench
//! sends BENCH_REQUESTS (default 1,000) sequential `GET /api/runs/{id}/items` requests of 100
//! items: random pages, a quarter filtered by outcome, a quarter searching the target. Prints
//! p50/p99/max latency per kind, the full CSV export's time, and the server's resident memory
//! idle (after start-up) and after the requests.

mod common;

use common::{env_num, psql, sweep_tables};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use sweep_testkit::PgCluster;

fn rss_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().unwrap_or(0.0) / 1024.0)
        .unwrap_or(0.0)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let items = env_num("BENCH_ITEMS", 100_000);
    let requests = env_num("BENCH_REQUESTS", 1_000);
    let pg = PgCluster::shared();
    let url = pg.new_database();
    psql(&url, sweep::reference::POSTGRES);
    psql(&url, &sweep_tables());
    let run = "bench-run-0000";
    psql(
        &url,
        &format!(
            "INSERT INTO cleanup_runs (id, command, dry_run, started_at, finished_at, status, candidates, deleted, failed) \
             VALUES ('{run}', 'cleanup-attachments', false, now() - interval '1 hour', now(), 'partial', {items}, {items}, {f});
             INSERT INTO cleanup_audit (run_id, policy, kind, target, reason, bytes, outcome, error, at)
             SELECT '{run}', 'cleanup-attachments', CASE WHEN i % 2 = 0 THEN 'row' ELSE 'file' END,
                    CASE WHEN i % 2 = 0 THEN 'forum_attachment id=' || i ELSE 'media:att/' || (i % 100) || '/' || i || '.bin' END,
                    'soft-deleted 40 days ago', 1024, CASE WHEN i % 1000 = 1 THEN 'failed' ELSE 'deleted' END,
                    CASE WHEN i % 1000 = 1 THEN 'Permission denied' END, now()
             FROM generate_series(1, {items}) AS i; ANALYZE cleanup_audit;",
            f = items / 1000
        ),
    );
    let dir = tempfile::tempdir_in(std::env::current_dir().unwrap().join("target")).unwrap();
    let sweep = env!("CARGO_BIN_EXE_sweep");
    let tok = Command::new(sweep)
        .args(["token", "create", "--name", "bench", "--role", "viewer"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(tok.status.success(), "{}", String::from_utf8_lossy(&tok.stderr));
    let token = String::from_utf8_lossy(&tok.stdout).trim().to_string();
    let mut child = Command::new(sweep)
        .args(["-q", "serve", "--listen", "127.0.0.1:0", "--no-schedules"])
        .current_dir(dir.path())
        .env("DATABASE_URL", &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.trim().trim_start_matches("listening on ").to_string();
    std::thread::sleep(Duration::from_secs(1));
    let idle = rss_mib(child.id(), "VmRSS:");

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = reqwest::Client::new();
    let pages = (items / 100).max(1);
    let mut lat: [(&str, Vec<f64>); 3] = [("page", vec![]), ("outcome=failed", vec![]), ("q=target", vec![])];
    let mut seed = 12345u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    rt.block_on(async {
        for i in 0..requests {
            let kind = match i % 4 {
                0 => 1,
                1 => 2,
                _ => 0,
            };
            let path = match kind {
                0 => format!("/api/runs/{run}/items?page={}&per_page=100", next() % pages as u64 + 1),
                // The 100 failed items fit on one page.
                1 => format!("/api/runs/{run}/items?outcome=failed&page=1&per_page=100"),
                _ => format!("/api/runs/{run}/items?q=att/{}/&page=1&per_page=100", next() % 100),
            };
            let t = Instant::now();
            let r = client.get(format!("{base}{path}")).bearer_auth(&token).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            let _ = r.bytes().await.unwrap();
            lat[kind].1.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let t = Instant::now();
        let csv =
            client.get(format!("{base}/api/runs/{run}/items?format=csv")).bearer_auth(&token).send().await.unwrap();
        let body = csv.bytes().await.unwrap();
        println!(
            "\nCSV export of all {items} items: {:.2} s, {:.1} MiB",
            t.elapsed().as_secs_f64(),
            body.len() as f64 / 1048576.0
        );
    });
    println!("GET /api/runs/{{id}}/items on a run of {items} audited items, {requests} requests of 100 items:");
    let mut all = Vec::new();
    for (name, v) in lat.iter_mut() {
        all.extend_from_slice(v);
        println!(
            "  {name:<16} n={:<5} p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
            v.len(),
            pct(v, 0.5),
            pct(v, 0.99),
            pct(v, 1.0)
        );
    }
    println!(
        "  {:<16} n={:<5} p50 {:>7.2} ms  p99 {:>7.2} ms",
        "all",
        all.len(),
        pct(&mut all, 0.5),
        pct(&mut all, 0.99)
    );
    println!(
        "server memory: idle {idle:.1} MiB; after the requests {:.1} MiB (peak {:.1} MiB)",
        rss_mib(child.id(), "VmRSS:"),
        rss_mib(child.id(), "VmHWM:")
    );
    let _ = child.kill();
    let _ = child.wait();
}
