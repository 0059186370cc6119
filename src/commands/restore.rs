//! `restore --run RUN_ID`: undo a real run from its audit: rows re-inserted from their JSON
//! snapshots, files, directories and objects copied back from their backups (a local
//! directory or an object store). Nothing is overwritten.

use crate::cli::RestoreArgs;
use crate::db::{AuditRow, Db, InsertError, RunTotals};
use crate::executor::BackupRecord;
use crate::exit_codes::{Exit, Fatal};
use crate::ident::Ident;
use crate::run::{require_audit_tables, Ctx};
use crate::store::local::LocalRoot;
use crate::store::object::{self, NamedStore, StoreRecord};
use anyhow::{anyhow, Result};
use chrono::Utc;
use object_store::PutPayload;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One audited deletion, as read back.
struct Deleted {
    kind: String,
    target: String,
    backup: Option<String>,
    snapshot: Option<String>,
}

/// What restoring one item did.
struct Restored {
    target: String,
    outcome: &'static str,
    detail: String,
}

pub async fn run(ctx: &Ctx, a: &RestoreArgs) -> Result<Exit> {
    let db = ctx.connect().await?;
    require_audit_tables(&db).await?;
    if a.list {
        return list(ctx, &db).await;
    }
    let run_id = a.run_id.clone().expect("clap requires --run without --list");
    // Rows in the reverse of their deletion order: a parent deleted after its children comes
    // back before them.
    let mut q = db.sql();
    q.push("SELECT kind, target, backup_location, ").as_text("row_snapshot");
    q.push(" FROM cleanup_audit WHERE run_id = ").bind(&run_id).push(" AND outcome = 'deleted' ORDER BY id DESC");
    let rows = db.read(&q, |r| Ok((r.text_req(0)?, r.text_req(1)?, r.text(2)?, r.text(3)?))).await?;
    if rows.is_empty() {
        return Err(Fatal::usage(format!(
            "run {run_id} deleted nothing that the audit recorded (see `sweep restore --list`)"
        ))
        .into());
    }
    let items: Vec<Deleted> =
        rows.into_iter().map(|(kind, target, backup, snapshot)| Deleted { kind, target, backup, snapshot }).collect();
    let dry = ctx.settings.dry_run.value;
    let ops = ctx.settings.ops_dir(a.ops_dir.clone())?.map(|s| s.value);
    let backups = ops.as_deref().map(|o| ctx.settings.ops_backup_dir(o)).transpose()?.map(|s| s.value);
    let roots: Vec<(&str, Option<PathBuf>)> = vec![
        ("media", ctx.settings.media_root.as_ref().map(|s| s.value.clone())),
        ("data", ctx.settings.data_dir.as_ref().map(|s| s.value.clone())),
        ("ops", ops),
        ("backups", backups),
    ];
    let places = Places::of_run(ctx, &db, &run_id).await?;
    let mut done = Vec::new();
    // Rows first (files may belong to them), then files, directories and objects, each in the
    // reverse of the order they were deleted in (a directory removed as empty after its files
    // comes back before them).
    for it in items.iter().filter(|i| i.kind == "row") {
        done.push(restore_row(&db, it, dry).await);
    }
    for it in items.iter().filter(|i| i.kind != "row") {
        done.push(match it.kind.as_str() {
            "object" => restore_object(&places, it, dry).await,
            _ => restore_path(&roots, &places, it, dry).await,
        });
    }
    if !dry {
        let new_run = uuid::Uuid::new_v4().to_string();
        let now = Utc::now();
        db.insert_run(&new_run, "restore", false, now).await?;
        let reason = format!("restore of run {run_id}");
        let audit: Vec<AuditRow> = done
            .iter()
            .map(|r| AuditRow {
                run_id: &new_run,
                policy: "restore",
                kind: "restore",
                target: &r.target,
                reason: &reason,
                bytes: None,
                outcome: r.outcome,
                error: (r.outcome != "restored").then_some(r.detail.as_str()),
                backup_location: None,
                row_snapshot: None,
                at: now,
            })
            .collect();
        db.insert_audit(&audit).await?;
        let restored = done.iter().filter(|r| r.outcome == "restored").count() as i64;
        let failed = done.iter().filter(|r| r.outcome == "failed").count() as i64;
        let status = if failed > 0 { "partial" } else { "success" };
        db.finish_run(
            &new_run,
            Utc::now(),
            &RunTotals {
                status: status.into(),
                candidates: done.len() as i64,
                deleted: restored,
                failed,
                ..Default::default()
            },
        )
        .await?;
    }
    if ctx.global.json {
        let v: Vec<serde_json::Value> = done
            .iter()
            .map(|r| serde_json::json!({"target": r.target, "outcome": r.outcome, "detail": r.detail}))
            .collect();
        println!("{}", serde_json::json!({"run_id": run_id, "dry_run": dry, "items": v}));
    } else {
        println!("restore of run {run_id}{}", if dry { " (DRY RUN: nothing was changed)" } else { "" });
        for r in &done {
            println!("  {:<16} {}  {}", r.outcome, r.target, r.detail);
        }
    }
    db.close().await;
    Ok(if done.iter().any(|r| r.outcome == "failed") { Exit::PartialFailure } else { Exit::Success })
}

/// Re-insert a row from its snapshot, unless its key exists again.
async fn restore_row(db: &Db, it: &Deleted, dry: bool) -> Restored {
    let r = |outcome, detail: String| Restored { target: it.target.clone(), outcome, detail };
    let Some(snapshot) = &it.snapshot else {
        return r("not_restorable", "no row snapshot in the audit (the row was updated, not deleted)".into());
    };
    let Some(table) = it.target.split(' ').next().and_then(|t| Ident::new(t).ok()) else {
        return r("failed", "the audit target does not name a table".into());
    };
    let obj: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(snapshot) {
        Ok(o) => o,
        Err(e) => return r("failed", format!("the snapshot is not a JSON object: {e}")),
    };
    if let Some(serde_json::Value::Object(cols)) = obj.get("columns_set_to_null") {
        return restore_nulled(db, &table, &obj, cols, dry)
            .await
            .map_or_else(|e| r("failed", e.to_string()), |(outcome, detail)| r(outcome, detail));
    }
    if dry {
        return r("would_restore", format!("row re-inserted into {}", table.as_str()));
    }
    match db.insert_snapshot(&table, snapshot, &obj).await {
        Ok(()) => r("restored", format!("row re-inserted into {}", table.as_str())),
        Err(e @ InsertError::Exists) => r("skipped", e.to_string()),
        Err(e) => r("failed", e.to_string()),
    }
}

/// Set back columns a run set to NULL (a preview's bundle references), only where they are
/// still NULL: nothing is overwritten.
async fn restore_nulled(
    db: &Db,
    table: &Ident,
    obj: &serde_json::Map<String, serde_json::Value>,
    cols: &serde_json::Map<String, serde_json::Value>,
    dry: bool,
) -> Result<(&'static str, String)> {
    let key_column = Ident::new(obj.get("key_column").and_then(|v| v.as_str()).unwrap_or_default())?;
    let key = obj.get("key").and_then(|v| v.as_str()).ok_or_else(|| anyhow!("the snapshot has no key"))?;
    let cols: Vec<(Ident, Option<String>)> =
        cols.iter().map(|(c, v)| Ok((Ident::new(c)?, v.as_str().map(str::to_string)))).collect::<Result<_>>()?;
    let names: Vec<&str> = cols.iter().map(|c| c.0.as_str()).collect();
    let what = format!("{} set back in {}", names.join(", "), table.as_str());
    if dry {
        return Ok(("would_restore", what));
    }
    let mut q = db.sql();
    q.push(format_args!("UPDATE {table} SET "));
    for (i, (c, v)) in cols.iter().enumerate() {
        q.push(if i == 0 { "" } else { ", " }).push(format_args!("{c} = ")).bind(v.clone());
    }
    q.push(" WHERE ").as_text(&key_column).push(" = ").bind(key);
    for (c, _) in &cols {
        q.push(format_args!(" AND {c} IS NULL"));
    }
    let n = db.execute(&q).await?;
    Ok(if n == 1 {
        ("restored", what)
    } else {
        ("skipped", "the row is gone or its columns are set again: not overwritten".into())
    })
}

/// Where a run's objects and backups were, from `cleanup_runs.details`.
struct Places {
    /// The run's stores, opened again with today's credentials.
    stores: Vec<NamedStore>,
    /// The backup store (`--backup-to`), if the run used one.
    backup: Option<NamedStore>,
}

impl Places {
    async fn of_run(ctx: &Ctx, db: &Db, run_id: &str) -> Result<Places> {
        let mut q = db.sql();
        q.push("SELECT ").as_text("details").push(" FROM cleanup_runs WHERE id = ").bind(run_id);
        let details: Option<Option<String>> = db.read(&q, |r| r.text(0)).await?.into_iter().next();
        let details: serde_json::Value =
            details.flatten().and_then(|d| serde_json::from_str(&d).ok()).unwrap_or_default();
        let os = &ctx.settings.object_storage;
        let stores: BTreeMap<String, StoreRecord> =
            serde_json::from_value(details["stores"].clone()).unwrap_or_default();
        let mut opened = Vec::new();
        for (name, rec) in stores {
            match rec.open(os) {
                Ok(s) => opened.push(s),
                Err(e) => tracing::warn!(target: "cleanup", "the run's {name} store cannot be opened: {e}"),
            }
        }
        let backup = match serde_json::from_value::<Option<BackupRecord>>(details["backup"].clone()) {
            Ok(Some(BackupRecord::Store(rec))) => {
                Some(rec.open(os).map_err(|e| anyhow!("the run's backup store {} cannot be opened: {e}", rec.url))?)
            }
            _ => None,
        };
        Ok(Places { stores: opened, backup })
    }

    /// The backup store and the key in it, when `location` is in the backup store.
    fn in_backup_store<'a>(&'a self, location: &'a str) -> Option<(&'a NamedStore, &'a str)> {
        let b = self.backup.as_ref()?;
        Some((b, b.key_of(location)?))
    }
}

/// Copy a file or tree back from its backup into its root (`roots`: name → directory, as
/// configured now), unless something is there again.
async fn restore_path(roots: &[(&str, Option<PathBuf>)], places: &Places, it: &Deleted, dry: bool) -> Restored {
    let r = |outcome, detail: String| Restored { target: it.target.clone(), outcome, detail };
    // A directory removed because it was left empty (its target ends in '/'): recreated.
    let empty_dir = it.kind == "dir" && it.target.ends_with('/');
    if it.backup.is_none() && !empty_dir {
        return r("not_restorable", "no backup was made (run with --backup-dir or --backup-to to make one)".into());
    }
    let Some((root_name, rel)) = it.target.split_once(':').filter(|(n, _)| !n.contains('/')) else {
        return r("failed", format!("the audit target {:?} names no root", it.target));
    };
    let dir = roots.iter().find(|(n, _)| *n == root_name).and_then(|(_, d)| d.clone());
    let Some(dir) = dir else {
        return r(
            "not_restorable",
            format!("the {root_name} root is not configured (MEDIA_ROOT, DATA_DIR or OPS_DIR)"),
        );
    };
    let root = match LocalRoot::open(root_name, &dir) {
        Ok(x) => x,
        Err(e) => return r("failed", e.to_string()),
    };
    let dst = match root.relativize(rel.trim_end_matches('/')).map(|rel| root.path_of(&rel)) {
        Ok(p) => p,
        Err(e) => return r("failed", e.to_string()),
    };
    if std::fs::symlink_metadata(&dst).is_ok() {
        return r("skipped", format!("{} exists again: not overwritten", dst.display()));
    }
    let Some(backup) = &it.backup else {
        // The empty directory: nothing to copy.
        if dry {
            return r("would_restore", "an empty directory, created again".into());
        }
        return match std::fs::create_dir_all(&dst) {
            Ok(()) => r("restored", "an empty directory, created again".into()),
            Err(e) => r("failed", format!("cannot create {}: {e}", dst.display())),
        };
    };
    if dry {
        return r("would_restore", format!("from {backup}"));
    }
    let copied = match places.in_backup_store(backup) {
        Some((store, key)) => download_tree(store, key, &dst).await,
        None => crate::store::local::copy_tree(Path::new(backup), &dst, true).map_err(|e| e.to_string()),
    };
    match copied {
        Ok(()) => r("restored", format!("from {backup}")),
        Err(e) => r("failed", format!("cannot copy {backup} back: {e}")),
    }
}

/// Put an object back into its store from its backup, unless the key exists again.
async fn restore_object(places: &Places, it: &Deleted, dry: bool) -> Restored {
    let r = |outcome, detail: String| Restored { target: it.target.clone(), outcome, detail };
    let Some(backup) = &it.backup else {
        return r("not_restorable", "no backup was made (run with --backup-dir or --backup-to to make one)".into());
    };
    let found = places.stores.iter().find_map(|s| Some((s, s.key_of(&it.target)?)));
    let Some((store, key)) = found else {
        return r(
            "not_restorable",
            format!("the store of {} is not recorded for this run: copy it back by hand from {backup}", it.target),
        );
    };
    let dst = match object::parse_key(key) {
        Ok(k) => k,
        Err(e) => return r("failed", e.to_string()),
    };
    match store.store.head(&dst).await {
        Ok(_) => return r("skipped", "the object exists again: not overwritten".into()),
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return r("failed", format!("cannot look at {}: {e}", it.target)),
    }
    if dry {
        return r("would_restore", format!("from {backup}"));
    }
    let body: Result<PutPayload, String> = match places.in_backup_store(backup) {
        Some((b, bkey)) => fetch(b, bkey).await.map(Into::into),
        None => std::fs::read(backup).map(PutPayload::from).map_err(|e| e.to_string()),
    };
    let put = match body {
        Ok(payload) => store.store.put(&dst, payload).await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    match put {
        Ok(()) => r("restored", format!("from {backup}")),
        Err(e) => r("failed", format!("cannot copy {backup} back: {e}")),
    }
}

/// One object's content, or why it could not be read.
async fn fetch(store: &NamedStore, key: &str) -> Result<impl AsRef<[u8]> + Into<PutPayload>, String> {
    let path = object::parse_key(key).map_err(|e| e.to_string())?;
    let got = store.store.get(&path).await.map_err(|e| e.to_string())?;
    got.bytes().await.map_err(|e| e.to_string())
}

/// Download a backup to `dst`: one object, or (a key ending in `/`) every object of a tree.
async fn download_tree(store: &NamedStore, key: &str, dst: &Path) -> Result<(), String> {
    use futures::TryStreamExt;
    let write = |to: &Path, bytes: &[u8]| -> Result<(), String> {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::write(to, bytes).map_err(|e| e.to_string())
    };
    let Some(prefix) = key.strip_suffix('/') else {
        return write(dst, fetch(store, key).await?.as_ref());
    };
    let p = object::parse_key(prefix).map_err(|e| e.to_string())?;
    let metas: Vec<object_store::ObjectMeta> =
        store.store.list(Some(&p)).try_collect().await.map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dst).map_err(|e| e.to_string())?;
    for m in metas {
        let sub = m.location.as_ref().strip_prefix(prefix).unwrap_or_default().trim_start_matches('/');
        write(&dst.join(sub), fetch(store, m.location.as_ref()).await?.as_ref())?;
    }
    Ok(())
}

/// Recent real runs and what each can restore.
async fn list(ctx: &Ctx, db: &Db) -> Result<Exit> {
    let mut q = db.sql();
    q.push("SELECT r.id, r.command, ").as_text("r.started_at").push(", r.status, ");
    q.as_int("SUM(CASE WHEN a.outcome = 'deleted' THEN 1 ELSE 0 END)").push(", ");
    q.as_int("SUM(CASE WHEN a.outcome = 'deleted' AND (a.backup_location IS NOT NULL OR a.row_snapshot IS NOT NULL) THEN 1 ELSE 0 END)");
    q.push(" FROM cleanup_runs r LEFT JOIN cleanup_audit a ON a.run_id = r.id WHERE r.dry_run = ").bind(false);
    q.push(" GROUP BY r.id, r.command, r.started_at, r.status ORDER BY r.started_at DESC LIMIT 20");
    let rows = db
        .read(&q, |r| Ok((r.text_req(0)?, r.text_req(1)?, r.text_req(2)?, r.text_req(3)?, r.int(4)?, r.int(5)?)))
        .await
        .map_err(|e| anyhow!("cannot read cleanup_runs: {e:#}"))?;
    if ctx.global.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| serde_json::json!({"run_id": r.0, "command": r.1, "started_at": r.2, "status": r.3, "deleted": r.4.unwrap_or(0), "restorable": r.5.unwrap_or(0)}))
            .collect();
        println!("{}", serde_json::Value::Array(v));
    } else {
        println!(
            "{:<36}  {:<20} {:<27} {:<8} {:>8} {:>10}",
            "run_id", "command", "started_at", "status", "deleted", "restorable"
        );
        for r in rows {
            println!(
                "{:<36}  {:<20} {:<27} {:<8} {:>8} {:>10}",
                r.0,
                r.1,
                r.2,
                r.3,
                r.4.unwrap_or(0),
                r.5.unwrap_or(0)
            );
        }
    }
    Ok(Exit::Success)
}
