//! `cleanup-ops` (seed 002) through the real binary, on PostgreSQL, SQLite and MariaDB, with real files.

use crate::support::*;
use chrono::{DateTime, Duration, Utc};
use std::path::PathBuf;

const NOW: &str = "2026-11-22T10:00:00Z";

fn now() -> DateTime<Utc> {
    at(NOW)
}

struct Ops {
    ws: Ws,
    dir: PathBuf,
}

impl Ops {
    async fn new(b: Backend) -> Ops {
        let ws = Ws::new(b, true).await;
        let dir = ws.dir.path().join("ops");
        std::fs::create_dir_all(&dir).unwrap();
        Ops { ws, dir }
    }

    fn file(&self, rel: &str, body: &str, age: Duration) -> PathBuf {
        let p = self.dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
        std::fs::File::options().write(true).open(&p).unwrap().set_modified((now() - age).into()).unwrap();
        p
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut all = vec!["--now", NOW, "cleanup-ops"];
        all.extend_from_slice(args);
        self.ws.sweep_env(&all, &[("OPS_DIR", self.dir.to_str().unwrap()), ("USER", "ops-admin")])
    }

    fn exists(&self, rel: &str) -> bool {
        self.dir.join(rel).exists()
    }
}

fn op(status: &str) -> String {
    format!("{{\"operation_id\": \"x\", \"status\": \"{status}\", \"progress\": 100}}")
}

/// Files on both sides of every policy's boundary; (path, deleted?).
fn boundaries(o: &Ops) -> Vec<(&'static str, bool)> {
    let d = Duration::days;
    o.file("operation_f1.json", &op("failed"), d(14));
    o.file("operation_f2.json", &op("failed"), d(14) - Duration::minutes(60));
    o.file("operation_c1.json", &op("completed"), d(90));
    o.file("operation_c2.json", &op("succeeded"), d(89));
    o.file("operation_p1.json", &op("running"), d(30));
    o.file("operation_p2.json", &op("running"), d(29));
    o.file("operation_bad1.json", "{\"status\": \"failed\", ", d(30));
    o.file("operation_bad2.json", "{\"status\": \"failed\", ", d(20));
    o.file("dbt/logs/2026/run.log", "dbt", d(7));
    o.file("dbt/logs/2026/new.log", "dbt", d(6));
    o.file("logs/app.log", "log", d(30));
    o.file("logs/app2.log", "log", d(29));
    o.file("tmp/cache/a.bin", "tmp", d(1));
    o.file("tmp/cache/b.bin", "tmp", d(1) - Duration::minutes(60));
    o.file("notes.txt", "not managed", d(400));
    o.file("cleanup_backups/logs/ancient.log", "old backup", d(8));
    o.file("cleanup_backups/logs/recent.log", "new backup", d(6));
    vec![
        ("operation_f1.json", true),
        ("operation_f2.json", false),
        ("operation_c1.json", true),
        ("operation_c2.json", false),
        ("operation_p1.json", true),
        ("operation_p2.json", false),
        ("operation_bad1.json", true),
        ("operation_bad2.json", false),
        ("dbt/logs/2026/run.log", true),
        ("dbt/logs/2026/new.log", false),
        ("logs/app.log", true),
        ("logs/app2.log", false),
        ("tmp/cache/a.bin", true),
        ("tmp/cache/b.bin", false),
        ("notes.txt", false),
        ("cleanup_backups/logs/ancient.log", true),
        ("cleanup_backups/logs/recent.log", false),
    ]
}

pub async fn each_policy_keeps_its_boundary_and_backs_up_what_it_deletes(b: Backend) {
    let o = Ops::new(b).await;
    let expect = boundaries(&o);
    let bodies: Vec<(String, Vec<u8>)> =
        expect.iter().filter(|e| e.1).map(|(p, _)| (p.to_string(), std::fs::read(o.dir.join(p)).unwrap())).collect();
    let r = o.run(&["--type", "automatic", "--json"]);
    r.expect(0);
    for (path, deleted) in &expect {
        assert_eq!(!o.exists(path), *deleted, "{path}: deleted should be {deleted}\n{}", r.stderr);
    }
    assert!(r.stderr.contains("operation_bad1.json") && r.stderr.contains("not valid JSON"), "{}", r.stderr);
    // Every deleted file (but pruned backups) has a byte-identical backup under the same path.
    for (path, body) in &bodies {
        let backup = o.dir.join("cleanup_backups").join(path);
        if path.starts_with("cleanup_backups/") {
            assert!(!backup.exists());
        } else {
            assert_eq!(&std::fs::read(&backup).unwrap_or_else(|_| panic!("no backup of {path}")), body, "{path}");
        }
    }
    assert_eq!(o.ws.count("SELECT count(*) FROM cleanup_audit WHERE backup_location IS NOT NULL").await, 7);
    assert_eq!(
        o.ws.count("SELECT count(*) FROM cleanup_audit WHERE policy = 'cleanup-ops/failed_operations'").await,
        1
    );
    let j = r.json();
    assert_eq!(j["policies"]["pipeline_operations"]["files"], 2);
    assert_eq!(j["type"], "automatic");
}

pub async fn emergency_skips_backups_and_manual_needs_a_terminal_or_yes(b: Backend) {
    let o = Ops::new(b).await;
    o.file("logs/old.log", "x", Duration::days(40));
    let r = o.run(&[]);
    r.expect(2);
    assert!(r.stderr.contains("--yes"), "{}", r.stderr);
    assert!(o.exists("logs/old.log"), "a refused manual run deletes nothing");
    o.run(&["--run", "--yes"]).expect(0);
    assert!(!o.exists("logs/old.log") && o.exists("cleanup_backups/logs/old.log"));
    o.file("logs/old2.log", "x", Duration::days(40));
    let r = o.run(&["--type", "emergency", "--yes"]);
    r.expect(0);
    assert!(r.stderr.contains("no backups"), "{}", r.stderr);
    assert!(!o.exists("logs/old2.log") && !o.exists("cleanup_backups/logs/old2.log"));
}

pub async fn set_policy_round_trip_disables_and_is_audited(b: Backend) {
    let o = Ops::new(b).await;
    o.file("logs/old.log", "x", Duration::days(40));
    o.run(&["--set-policy", "system_logs", "--retention-days", "60", "--disable"]).expect(0);
    let r = o.run(&["--show-policies", "--json"]);
    r.expect(0);
    let p: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap();
    let sys = p.iter().find(|x| x["data_type"] == "system_logs").unwrap();
    assert_eq!((sys["retention_days"].as_i64(), sys["enabled"].as_bool()), (Some(60), Some(false)));
    assert_eq!(p.len(), 6);
    assert_eq!(
        o.ws.count("SELECT count(*) FROM cleanup_audit WHERE outcome = 'updated' AND reason LIKE '%by ops-admin%'")
            .await,
        1
    );
    o.run(&["--type", "automatic"]).expect(0);
    assert!(o.exists("logs/old.log"), "a disabled policy deletes nothing");
    o.run(&["--set-policy", "system_logs", "--enable"]).expect(0);
    o.run(&["--type", "automatic"]).expect(0);
    assert!(o.exists("logs/old.log"), "now enabled, but 40 days < 60");
    o.run(&["--set-policy", "system_logs", "--retention-days", "30"]).expect(0);
    o.run(&["--type", "automatic"]).expect(0);
    assert!(!o.exists("logs/old.log"));
    let r = o.run(&["--set-policy", "nonsense", "--enable"]);
    r.expect(2);
    assert!(r.stderr.contains("system_logs"), "the error lists the policies: {}", r.stderr);
    o.run(&["--set-policy", "temp_files", "--retention-days", "-3"]).expect(2);
}

pub async fn stats_show_history_and_what_is_eligible(b: Backend) {
    let o = Ops::new(b).await;
    o.file("logs/a.log", "aaaa", Duration::days(40));
    o.run(&["--type", "automatic"]).expect(0);
    o.file("logs/b.log", "bb", Duration::days(40));
    o.run(&["--type", "automatic"]).expect(0);
    o.file("tmp/c.bin", "c", Duration::days(3));
    let r = o.run(&["--stats", "--json"]);
    r.expect(0);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["last_runs"].as_array().unwrap().len(), 2);
    let sys = j["deleted_by_policy"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["policy"] == "cleanup-ops/system_logs")
        .unwrap()
        .clone();
    assert_eq!((sys["files"].as_i64(), sys["bytes"].as_i64()), (Some(2), Some(6)));
    assert_eq!(j["eligible_now"][0]["policy"], "temp_files");
    assert!(o.exists("tmp/c.bin"), "--stats deletes nothing");
}

pub async fn db_flags_stand_in_for_database_url_and_hide_the_password(b: Backend) {
    if b != Backend::Postgres {
        return; // the --db-* flags build a PostgreSQL URL
    }
    let o = Ops::new(b).await;
    o.file("logs/a.log", "x", Duration::days(40));
    let u = url::Url::parse(&o.ws.url).unwrap();
    let port = u.port().unwrap().to_string();
    let name = u.path().trim_start_matches('/').to_string();
    let plan = o.ws.dir.path().join("plan.json");
    let r = sweep_in(
        o.ws.dir.path(),
        &[
            "--now",
            NOW,
            "--plan-out",
            plan.to_str().unwrap(),
            "cleanup-ops",
            "--type",
            "automatic",
            "--db-host",
            "127.0.0.1",
            "--db-port",
            &port,
            "--db-name",
            &name,
            "--db-user",
            "postgres",
            "--db-password",
            "pw-not-for-logs",
            "-v",
        ],
        &[("OPS_DIR", o.dir.to_str().unwrap())],
    );
    r.expect(0);
    assert!(!o.exists("logs/a.log"));
    assert!(!r.stdout.contains("pw-not-for-logs") && !r.stderr.contains("pw-not-for-logs"));
    let plan = std::fs::read_to_string(&plan).unwrap();
    assert!(plan.contains("\"database\"") && !plan.contains("pw-not-for-logs"), "no password in the plan file");
    let r = sweep_in(
        o.ws.dir.path(),
        &["cleanup-ops", "--db-port", "1", "--db-password", "pw-not-for-logs"],
        &[("OPS_DIR", o.dir.to_str().unwrap())],
    );
    r.expect(2);
    assert!(!r.stderr.contains("pw-not-for-logs"), "{}", r.stderr);
}

pub async fn a_backup_dir_outside_ops_dir_is_pruned_too(b: Backend) {
    let o = Ops::new(b).await;
    let backups = o.ws.dir.path().join("elsewhere-backups");
    let old_backup = backups.join("2026-11-01/operation_x.json");
    let new_backup = backups.join("2026-11-20/operation_y.json");
    for (p, days) in [(&old_backup, 8), (&new_backup, 6)] {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "{}").unwrap();
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified((now() - Duration::days(days)).into())
            .unwrap();
    }
    o.file("logs/a.log", "x", Duration::days(40));
    let r = o.ws.sweep_env(
        &["--now", NOW, "cleanup-ops", "--type", "automatic", "--json"],
        &[("OPS_DIR", o.dir.to_str().unwrap()), ("BACKUP_DIR", backups.to_str().unwrap())],
    );
    r.expect(0);
    assert!(!old_backup.exists(), "a backup older than 7 days is pruned, wherever BACKUP_DIR is");
    assert!(new_backup.exists(), "a younger backup stays");
    assert!(!o.exists("logs/a.log"), "the old log goes");
    assert!(backups.join("logs/a.log").exists(), "after its backup was made");
    assert_eq!(r.json()["policies"]["backups"]["files"], 1, "{}", r.stdout);
}
