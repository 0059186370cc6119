//! `prune-modules` and `cleanup-ui-files` (seed 000) through the real binary, on PostgreSQL and
//! SQLite, with real files. Each scenario checks what must go and what must stay.

use crate::support::*;
use chrono::{DateTime, Duration, Utc};

const NOW: &str = "2026-11-22T10:00:00Z";

fn old() -> DateTime<Utc> {
    at("2026-10-01T00:00:00Z")
}

/// A payload shaped like the real ones: nested steps, URL forms, query strings, duplicates.
fn payload(files: &[&str]) -> String {
    let steps: Vec<serde_json::Value> = files
        .iter()
        .enumerate()
        .map(|(i, f)| match i % 3 {
            0 => serde_json::json!({"ui": format!("/media/{f}"), "order": i}),
            1 => serde_json::json!({"ui": format!("https://cdn.example/media/{f}?v={i}#step"), "extra": {"again": [format!("/media/{f}")]}}),
            _ => serde_json::json!({"assets": [[f]]}),
        })
        .collect();
    serde_json::json!({"title": "Pump maintenance", "steps": steps, "published": true}).to_string()
}

async fn module_row(ws: &Ws, id: i64, module: i64, version: i64, published: DateTime<Utc>, files: &[&str]) {
    ws.exec(&format!(
        "INSERT INTO authoring_publishedmodule (id, module_id, version, payload, published_at) VALUES ({id}, {module}, {version}, '{}', {})",
        payload(files).replace('\'', "''"),
        ts(published)
    ))
    .await;
}

async fn ids(ws: &Ws) -> Vec<i64> {
    let rows = ws.text_rows("SELECT CAST(id AS TEXT) FROM authoring_publishedmodule ORDER BY id").await;
    rows.into_iter().map(|r| r[0].as_deref().unwrap().parse().unwrap()).collect()
}

fn ui(ws: &Ws, rel: &str) -> std::path::PathBuf {
    ws.file(rel, 64, old())
}

/// Module 1 has five versions, module 2 two; files are shared in every way that matters.
async fn two_modules(ws: &Ws) {
    let t = |d: i64| old() + Duration::days(d);
    module_row(ws, 11, 1, 1, t(1), &["published_modules/1/v1/a.json", "published_modules/1/shared/logo.json"]).await;
    module_row(ws, 12, 1, 2, t(2), &["published_modules/1/v2/a.json", "published_modules/1/v1/a.json"]).await;
    module_row(ws, 13, 1, 3, t(3), &["published_modules/1/v3/a.json"]).await;
    module_row(ws, 14, 1, 4, t(4), &["published_modules/1/v4/a.json"]).await;
    module_row(ws, 15, 1, 5, t(5), &["published_modules/1/v5/a.json", "published_modules/1/shared/logo.json"]).await;
    module_row(ws, 21, 2, 1, t(1), &["published_modules/2/v1/a.json", "published_modules/1/v2/a.json"]).await;
    module_row(ws, 22, 2, 2, t(2), &["published_modules/2/v2/a.json"]).await;
    for f in [
        "1/v1/a.json",
        "1/v2/a.json",
        "1/v3/a.json",
        "1/v4/a.json",
        "1/v5/a.json",
        "1/shared/logo.json",
        "2/v1/a.json",
        "2/v2/a.json",
    ] {
        ui(ws, &format!("published_modules/{f}"));
    }
}

pub async fn keeps_the_latest_n_per_module_and_files_still_referenced(b: Backend) {
    let ws = Ws::new(b, true).await;
    two_modules(&ws).await;
    let r = ws.sweep(&["--now", NOW, "prune-modules", "--json"]);
    r.expect(0);
    assert_eq!(ids(&ws).await, [13, 14, 15, 21, 22], "module 1 keeps v3..v5, module 2 both");
    let m = &ws.media;
    assert!(!m.join("published_modules/1/v1/a.json").exists(), "only pruned rows referenced it");
    assert!(!m.join("published_modules/1/v1").exists(), "the empty directory is removed");
    assert!(m.join("published_modules/1/v2/a.json").exists(), "module 2's kept row references it");
    assert!(m.join("published_modules/1/shared/logo.json").exists(), "the kept v5 references it");
    for f in ["1/v3/a.json", "1/v4/a.json", "1/v5/a.json", "2/v1/a.json", "2/v2/a.json"] {
        assert!(m.join("published_modules").join(f).exists(), "{f}");
    }
    let j = r.json();
    assert_eq!(j["keep_latest"], 3);
    assert_eq!(j["rows_pruned"], 2);
    assert_eq!(ws.count("SELECT count(*) FROM cleanup_audit WHERE kind = 'row' AND row_snapshot IS NOT NULL").await, 2);
    // Idempotent: a second run finds nothing and errors on nothing.
    let again = ws.sweep(&["--now", NOW, "prune-modules", "--json"]);
    again.expect(0);
    assert_eq!(again.json()["candidates"], 0);
}

pub async fn ties_break_on_published_at_then_id(b: Backend) {
    let ws = Ws::new(b, true).await;
    let t = old();
    module_row(&ws, 31, 3, 2, t, &["published_modules/3/a.json"]).await;
    module_row(&ws, 32, 3, 2, t + Duration::hours(1), &["published_modules/3/b.json"]).await; // latest
    module_row(&ws, 33, 3, 1, t + Duration::days(9), &[]).await; // newest publish, lower version
    module_row(&ws, 41, 4, 7, t, &[]).await;
    module_row(&ws, 42, 4, 7, t, &[]).await; // same version and time: higher id wins
    ui(&ws, "published_modules/3/a.json");
    ui(&ws, "published_modules/3/b.json");
    ws.sweep(&["--now", NOW, "prune-modules", "--keep-latest", "1"]).expect(0);
    assert_eq!(ids(&ws).await, [32, 42]);
    assert!(!ws.media.join("published_modules/3/a.json").exists());
    assert!(ws.media.join("published_modules/3/b.json").exists());
}

pub async fn module_flag_prunes_one_module_only(b: Backend) {
    let ws = Ws::new(b, true).await;
    two_modules(&ws).await;
    for v in 1..=5 {
        module_row(&ws, 50 + v, 5, v, old() + Duration::days(v), &[]).await;
    }
    ws.sweep(&["--now", NOW, "prune-modules", "--module", "1", "--keep-latest", "2"]).expect(0);
    assert_eq!(ids(&ws).await, [14, 15, 21, 22, 51, 52, 53, 54, 55], "module 5 untouched");
    // Module 2 (not pruned) still references 1/v2/a.json: protected even though it was not scanned for pruning.
    assert!(ws.media.join("published_modules/1/v2/a.json").exists());
    assert!(!ws.media.join("published_modules/1/v3/a.json").exists());
}

pub async fn auto_acts_only_when_enabled(b: Backend) {
    let ws = Ws::new(b, true).await;
    two_modules(&ws).await;
    let r = ws.sweep(&["--now", NOW, "prune-modules", "--auto", "--module", "1"]);
    r.expect(0);
    assert!(r.stderr.contains("auto-prune is disabled"), "{}", r.stderr);
    assert_eq!(ids(&ws).await.len(), 7);
    let cfg = ws.dir.path().join("sweep.toml");
    std::fs::write(&cfg, "[published_modules]\nauto_prune = true\nkeep_latest = 4\n").unwrap();
    ws.sweep(&["--now", NOW, "prune-modules", "--auto", "--module", "1"]).expect(0);
    assert_eq!(ids(&ws).await, [12, 13, 14, 15, 21, 22]);
    std::fs::remove_file(&cfg).unwrap();
    ws.sweep_env(
        &["--now", NOW, "prune-modules", "--auto"],
        &[("PUBLISHED_MODULE_AUTO_PRUNE", "1"), ("PUBLISHED_MODULE_RETENTION_KEEP_LATEST", "1")],
    )
    .expect(0);
    assert_eq!(ids(&ws).await, [15, 22]);
    let r = ws.sweep(&["--now", NOW, "prune-modules", "--keep-latest", "0"]);
    r.expect(2);
    assert!(r.stderr.contains("1 or more"), "{}", r.stderr);
}

pub async fn grace_keeps_a_fresh_file_and_the_dry_run_matches(b: Backend) {
    let ws = Ws::new(b, true).await;
    two_modules(&ws).await;
    ws.file("published_modules/1/v1/a.json", 64, at(NOW) - Duration::minutes(3));
    let dry = ws.sweep(&["--now", NOW, "--dry-run", "prune-modules", "--json"]);
    dry.expect(0);
    assert_eq!(ids(&ws).await.len(), 7, "a dry run deletes nothing");
    let would: Vec<String> = targets(&dry.json(), "would_delete");
    let real = ws.sweep(&["--now", NOW, "prune-modules", "--json"]);
    real.expect(0);
    assert_eq!(would, targets(&real.json(), "deleted"), "the real run deleted exactly what the dry run listed");
    assert!(ws.media.join("published_modules/1/v1/a.json").exists(), "modified 3 minutes ago");
    assert_eq!(ids(&ws).await, [13, 14, 15, 21, 22]);
}

fn targets(j: &serde_json::Value, outcome: &str) -> Vec<String> {
    let mut v: Vec<String> = j["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["outcome"] == outcome)
        .map(|i| i["target"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

pub async fn a_crash_between_rows_and_files_leaves_orphans_that_cleanup_ui_files_removes(b: Backend) {
    let ws = Ws::new(b, true).await;
    two_modules(&ws).await;
    // What a crash right after the row commit leaves: rows gone, files still there.
    ws.exec("DELETE FROM authoring_publishedmodule WHERE id IN (11, 12)").await;
    assert!(ws.media.join("published_modules/1/v1/a.json").exists());
    let r = ws.sweep(&["--now", NOW, "cleanup-ui-files", "--json"]);
    r.expect(0);
    assert!(!ws.media.join("published_modules/1/v1/a.json").exists());
    assert!(!ws.media.join("published_modules/1/v1").exists());
    for f in ["1/v2/a.json", "1/shared/logo.json", "1/v3/a.json", "2/v2/a.json"] {
        assert!(ws.media.join("published_modules").join(f).exists(), "{f} is referenced");
    }
    let j = r.json();
    // The orphan file, then the directory it left empty: both carried out and audited.
    assert_eq!(j["by_kind"]["file"]["deleted"], 1);
    assert_eq!(j["by_kind"]["dir"]["deleted"], 1);
    assert_eq!(j["deleted"], 2);
    assert_eq!(j["referenced_files"], 7);
    assert_eq!(j["empty_dirs_removed"], 1);
    let dirs = ws.count("SELECT count(*) FROM cleanup_audit WHERE kind = 'dir' AND outcome = 'deleted' AND target = 'media:published_modules/1/v1/'");
    assert_eq!(dirs.await, 1, "the removed directory is in the audit");
}

pub async fn cleanup_ui_files_keeps_fresh_and_protected_files_and_guards_empty_references(b: Backend) {
    let ws = Ws::new(b, true).await;
    ui(&ws, "published_modules/9/orphan.json");
    ws.file("published_modules/9/fresh.json", 8, at(NOW) - Duration::minutes(1));
    ui(&ws, "published_modules/backups/keep.json");
    ws.file("published_modules/../outside.json", 8, old());
    // No rows at all while files exist: refuse.
    let r = ws.sweep(&["--now", NOW, "cleanup-ui-files"]);
    r.expect(3);
    assert!(r.stderr.contains("--allow-empty-references"), "{}", r.stderr);
    assert!(ws.media.join("published_modules/9/orphan.json").exists());
    // The protected prefix is relative to MEDIA_ROOT: published_modules/backups is not backups/.
    std::fs::write(
        ws.dir.path().join("sweep.toml"),
        "[safety]\nprotected_prefixes = [\"backups/\", \"published_modules/backups/\"]\n",
    )
    .unwrap();
    let r = ws.sweep(&["--now", NOW, "cleanup-ui-files", "--allow-empty-references", "--json"]);
    r.expect(0);
    assert!(!ws.media.join("published_modules/9/orphan.json").exists());
    assert!(ws.media.join("published_modules/9/fresh.json").exists(), "within the grace period");
    assert!(ws.media.join("published_modules/backups/keep.json").exists(), "protected");
    assert!(ws.media.join("outside.json").exists(), "outside published_modules/");
    assert_eq!(r.json()["retained"], 2);
}

pub async fn an_unreadable_payload_protects_its_module(b: Backend) {
    if b != Backend::Sqlite {
        return; // a jsonb or MySQL JSON column cannot hold invalid JSON; SQLite's text column can
    }
    let ws = Ws::new(b, true).await;
    two_modules(&ws).await;
    ws.exec(&format!(
        "INSERT INTO authoring_publishedmodule (id, module_id, version, payload, published_at) VALUES (61, 6, 1, '{{\"steps\": [\"/media/published_modules/6/v1/a.json\", ', {})",
        ts(old())
    ))
    .await;
    ui(&ws, "published_modules/6/v1/a.json");
    ui(&ws, "published_modules/6/v0/old.json");
    ui(&ws, "published_modules/7/orphan.json");
    let r = ws.sweep(&["--now", NOW, "cleanup-ui-files", "--json"]);
    r.expect(0);
    assert!(ws.media.join("published_modules/6/v1/a.json").exists());
    assert!(ws.media.join("published_modules/6/v0/old.json").exists(), "its module's files might be referenced");
    assert!(!ws.media.join("published_modules/7/orphan.json").exists());
    assert!(r.stderr.contains("not valid JSON"), "{}", r.stderr);
    assert_eq!(r.json()["unparseable_payloads"][0], "61");
}

pub async fn a_refused_file_is_a_reported_failure_and_its_rows_still_go(b: Backend) {
    let ws = Ws::new(b, true).await;
    let t = old();
    let outside = ws.dir.path().join("outside.json");
    std::fs::write(&outside, "{}").unwrap();
    module_row(&ws, 71, 7, 1, t, &["published_modules/../../outside.json", "published_modules/7/v1/a.json"]).await;
    module_row(&ws, 72, 7, 2, t + Duration::days(1), &[]).await;
    ui(&ws, "published_modules/7/v1/a.json");
    let r = ws.sweep(&["--now", NOW, "prune-modules", "--keep-latest", "1", "--json"]);
    r.expect(1);
    let j = r.json();
    let failed: Vec<&serde_json::Value> =
        j["items"].as_array().unwrap().iter().filter(|i| i["outcome"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{}", r.stdout);
    assert!(failed[0]["target"].as_str().unwrap().contains("outside.json"), "{}", r.stdout);
    assert!(outside.exists(), "nothing outside the media root is touched");
    assert_eq!(ids(&ws).await, [72], "the pruned row still goes");
    assert!(!ws.media.join("published_modules/7/v1/a.json").exists());
}

pub async fn a_ui_file_whose_name_is_not_utf8_is_an_orphan_like_any_other(b: Backend) {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        let ws = Ws::new(b, true).await;
        two_modules(&ws).await;
        let name = std::ffi::OsString::from_vec(b"orphan-\xff.json".to_vec());
        let p = ws.media.join("published_modules/1/v5").join(name);
        write_aged(&p, 10, old());
        let r = ws.sweep(&["--now", NOW, "cleanup-ui-files", "--json"]);
        r.expect(0);
        assert!(!p.exists(), "{}", r.stdout);
        assert!(r.stdout.contains("media:published_modules/1/v5/?b:orphan-%FF.json"), "{}", r.stdout);
        assert!(ws.media.join("published_modules/1/v5/a.json").exists(), "its referenced neighbour stays");
    }
    #[cfg(not(unix))]
    let _ = b;
}
