//! For every command: review a plan (a dry run with --plan-out), apply it with backups, check
//! that exactly the reviewed items went, then restore the run and check that every file,
//! object and row is back as it was. On PostgreSQL, SQLite and MariaDB, through the real binary.

use crate::attachments::targets;
use crate::support::*;
use chrono::{DateTime, Duration, Utc};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const NOW: &str = "2026-11-22T10:00:00Z";

fn now() -> DateTime<Utc> {
    at(NOW)
}

/// One command's round trip: its arguments, its environment, the directories (roots and
/// bucket directories) and tables whose content must come back.
struct Trip<'a> {
    ws: &'a Ws,
    command: Vec<&'a str>,
    env: Vec<(&'a str, String)>,
    trees: Vec<PathBuf>,
    tables: Vec<&'a str>,
    /// Where apply backs up: `--backup-dir <dir>` unless set (e.g. `--backup-to s3://…`).
    backup: Option<[String; 2]>,
}

/// Every file under `trees`: path → content.
fn files(trees: &[PathBuf]) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for t in trees {
        for e in walkdir::WalkDir::new(t).into_iter().flatten() {
            if e.file_type().is_file() {
                out.insert(e.path().to_path_buf(), std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

/// Every row of `table`, each column as text, in key order.
async fn rows(ws: &Ws, table: &str) -> Vec<Vec<Option<String>>> {
    let columns = match ws.backend {
        Backend::Postgres => format!(
            "SELECT CAST(column_name AS TEXT) FROM information_schema.columns WHERE table_name = '{table}' ORDER BY ordinal_position"
        ),
        Backend::MySql => format!(
            "SELECT CAST(column_name AS TEXT) FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = '{table}' ORDER BY ordinal_position"
        ),
        Backend::Sqlite => format!("SELECT name FROM pragma_table_info('{table}')"),
    };
    let cols: Vec<String> = ws.text_rows(&columns).await.into_iter().map(|r| r[0].clone().unwrap()).collect();
    let sql = format!(
        "SELECT {} FROM {table} ORDER BY 1",
        cols.iter().map(|c| format!("CAST({c} AS TEXT)")).collect::<Vec<_>>().join(", ")
    );
    ws.text_rows(&sql).await
}

impl Trip<'_> {
    fn run(&self, args: &[&str]) -> Run {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.ws.sweep_env(args, &env)
    }

    async fn tables(&self) -> Vec<Vec<Vec<Option<String>>>> {
        let mut v = Vec::new();
        for t in &self.tables {
            v.push(rows(self.ws, t).await);
        }
        v
    }

    async fn check(self) {
        let files_before = files(&self.trees);
        let rows_before = self.tables().await;
        let dir = self.ws.dir.path();
        let plan = dir.join("reviewed.json");
        let bk = dir.join("round-trip-backups");

        let mut review = vec!["--now", NOW, "--dry-run", "--plan-out", plan.to_str().unwrap()];
        review.extend_from_slice(&self.command);
        review.push("--json");
        let r = self.run(&review);
        r.expect(0);
        let reviewed = targets(&r.json(), &["would_delete"]);
        assert!(!reviewed.is_empty(), "the scenario must delete something: {}", r.stdout);

        let backup = self.backup.clone().unwrap_or_else(|| ["--backup-dir".into(), bk.display().to_string()]);
        let a = self.run(&[&backup[0], &backup[1], "apply", plan.to_str().unwrap(), "--json"]);
        a.expect(0);
        let j = a.json();
        assert_eq!(targets(&j, &["deleted"]), reviewed, "apply deletes exactly what was reviewed\n{}", a.stdout);
        assert!(targets(&j, &["skipped", "failed"]).is_empty(), "{}", a.stdout);
        assert_ne!(files(&self.trees), files_before, "the apply deleted files or objects");

        let run_id = j["run_id"].as_str().unwrap().to_string();
        let back = self.run(&["restore", "--run", &run_id, "--json"]);
        back.expect(0);
        let outcomes: BTreeSet<String> = back.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["outcome"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(outcomes, BTreeSet::from(["restored".to_string()]), "{}", back.stdout);
        let after = files(&self.trees);
        assert_eq!(after.keys().collect::<Vec<_>>(), files_before.keys().collect::<Vec<_>>());
        assert!(after == files_before, "every file and object is back byte for byte");
        assert_eq!(self.tables().await, rows_before, "every row is back as it was");
    }
}

fn s3_env() -> Vec<(&'static str, String)> {
    S3Server::shared().env()
}

fn tag(b: Backend, what: &str) -> String {
    format!("trip-{what}-{}", b.tag())
}

fn old_file(root: &Path, rel: &str, age: Duration) {
    write_aged(&root.join(rel), 200 + rel.len(), now() - age);
}

pub async fn cleanup_attachments_round_trip(b: Backend) {
    let ws = Ws::new(b, true).await;
    for n in 1..=3u32 {
        old_file(&ws.media, &format!("att/{n}.jpg"), Duration::days(90));
        crate::attachments::row(
            &ws,
            n,
            Some(&format!("att/{n}.jpg")),
            n == 3,
            (n != 3).then(|| now() - Duration::days(60)),
        )
        .await;
    }
    let media = ws.media.clone();
    // Backups into a file:// store (created on first use).
    let store = format!("file://{}", ws.dir.path().join("backup-store").display());
    Trip {
        ws: &ws,
        command: vec!["cleanup-attachments"],
        env: vec![],
        trees: vec![media],
        tables: vec!["forum_attachment"],
        backup: Some(["--backup-to".into(), store]),
    }
    .check()
    .await;
}

pub async fn prune_modules_and_cleanup_ui_files_round_trip(b: Backend) {
    let ws = Ws::new(b, true).await;
    for v in 1..=4i64 {
        let f = format!("published_modules/1/v{v}/step.json");
        old_file(&ws.media, &f, Duration::days(60));
        ws.exec(&format!(
            "INSERT INTO authoring_publishedmodule (id, module_id, version, payload, published_at) VALUES ({v}, 1, {v}, '{{\"ui\": \"/media/{f}\"}}', {})",
            ts(now() - Duration::days(60 - v))
        ))
        .await;
    }
    let media = ws.media.clone();
    Trip {
        ws: &ws,
        command: vec!["prune-modules", "--keep-latest", "2"],
        env: vec![],
        trees: vec![media.clone()],
        tables: vec!["authoring_publishedmodule"],
        backup: None,
    }
    .check()
    .await;
    // Orphans only: files no row references.
    old_file(&ws.media, "published_modules/9/old/a.json", Duration::days(60));
    old_file(&ws.media, "published_modules/9/old/b.json", Duration::days(60));
    std::fs::remove_file(ws.dir.path().join("reviewed.json")).unwrap();
    let ws2 = &ws;
    let _ = std::fs::remove_dir_all(ws2.dir.path().join("round-trip-backups"));
    Trip { ws: ws2, command: vec!["cleanup-ui-files"], env: vec![], trees: vec![media], tables: vec![], backup: None }
        .check()
        .await;
}

pub async fn cleanup_ops_round_trip(b: Backend) {
    let ws = Ws::new(b, true).await;
    let ops = ws.dir.path().join("ops");
    let op = |s: &str| format!("{{\"operation_id\": \"x\", \"status\": \"{s}\"}}");
    for (rel, body, days) in [
        ("operation_f1.json", op("failed"), 20),
        ("operation_c1.json", op("completed"), 100),
        ("operation_r1.json", op("running"), 2),
        ("logs/old.log", "log".to_string(), 60),
    ] {
        let p = ops.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified((now() - Duration::days(days)).into())
            .unwrap();
    }
    Trip {
        ws: &ws,
        command: vec!["cleanup-ops", "--type", "automatic"],
        env: vec![("OPS_DIR", ops.display().to_string())],
        trees: vec![ops],
        tables: vec![],
        backup: None,
    }
    .check()
    .await;
}

pub async fn bulk_cloudcube_round_trip(b: Backend) {
    let ws = Ws::new(b, true).await;
    let s3 = S3Server::shared();
    let bucket = tag(b, "cube");
    let root = s3.bucket(&bucket);
    ws.exec(&format!(
        "INSERT INTO viral_clips_job (id, status, original_file_key, extracted_audio_key, created_at) VALUES (1, 'processing', 'uploads/1.mp4', NULL, {})",
        ts(now() - Duration::days(30))
    ))
    .await;
    for k in ["uploads/1.mp4", "uploads/old.mp4", "audio/old.mp3", "tmp/x y.bin"] {
        s3.put(&bucket, &format!("cube/{k}"), 300, now() - Duration::days(20));
    }
    Trip {
        ws: &ws,
        command: vec!["bulk-cloudcube"],
        env: vec![
            ("CLOUDCUBE_URL", format!("{}/{bucket}/cube", s3.endpoint)),
            ("CLOUDCUBE_ACCESS_KEY_ID", S3_ACCESS.into()),
            ("CLOUDCUBE_SECRET_ACCESS_KEY", S3_SECRET.into()),
        ],
        trees: vec![root],
        tables: vec![],
        backup: None,
    }
    .check()
    .await;
}

pub async fn worker_once_round_trip(b: Backend) {
    let ws = Ws::new(b, true).await;
    let s3 = S3Server::shared();
    let bucket = tag(b, "prev");
    let broot = s3.bucket(&bucket);
    let data = ws.dir.path().join("data");
    let old = Duration::days(3);
    old_file(&data, "tmp/clone-1/a.bin", old);
    old_file(&data, "previews/p1/index.html", old);
    old_file(&data, "logs/worker-old.log", Duration::days(30));
    old_file(&data, "logs/worker-new.log", Duration::hours(1));
    s3.put(&bucket, "previews/p1/bundle.zip", 400, now() - old);
    s3.put(&bucket, "previews/orphan/old.zip", 400, now() - old);
    for d in ["tmp/clone-1", "tmp", "previews/p1", "previews"] {
        std::fs::File::open(data.join(d)).unwrap().set_modified((now() - old).into()).unwrap();
    }
    let o = ts(now() - old);
    ws.exec(&format!(
        "INSERT INTO preview_sessions (id, status, created_at, updated_at, expires_at, bundle_path, bundle_key) VALUES \
         ('p1', 'expired', {o}, {o}, NULL, 'previews/p1', 'previews/p1/bundle.zip'), \
         ('p2', 'ready', {o}, {o}, NULL, NULL, NULL)"
    ))
    .await;
    let mut env = s3_env();
    env.push(("DATA_DIR", data.display().to_string()));
    env.push(("OBJECT_STORAGE_BUCKET_PREVIEWS", bucket.clone()));
    // Backups into another bucket: trees, files and objects come back from there.
    let backups = tag(b, "bk");
    s3.bucket(&backups);
    Trip {
        ws: &ws,
        command: vec!["worker-once", "--tasks", "tmp,previews,objects,logs"],
        env,
        trees: vec![data, broot],
        tables: vec!["preview_sessions"],
        backup: Some(["--backup-to".into(), format!("s3://{backups}/sweep")]),
    }
    .check()
    .await;
}
