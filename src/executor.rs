//! The one executor: carries out any plan, dry or real, in batches with bounded concurrency,
//! writing every outcome to the audit as each batch finishes.
//!
//! A dry run and a real run go through the same loop, the same re-checks and the same
//! grouping; only the last step differs (`Deleter::dry_run` records `would_delete`).

use crate::db::{AuditRow, IntentItem, RowAudit, BATCH_INTENT, INTENT};
use crate::event::{Event, Events};
use crate::exit_codes::Fatal;
use crate::fingerprint;
use crate::ident::Ident;
use crate::plan::Outcome;
use crate::plan::{Fingerprint, Item, Kind, Op, Plan, RowRule, Unit};
use crate::report::Report;
use crate::store::local::{in_blocking_chunks, LocalRoot, ParentCache, Removed, SharedDirs};
use crate::store::object::{self, NamedStore};
use crate::store::Resources;
use anyhow::{anyhow, Result};
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// How to run.
pub struct ExecOptions {
    pub dry_run: bool,
    pub run_id: String,
    pub concurrency: usize,
    /// Show a progress bar (stderr is a terminal and output is not JSON/quiet).
    pub progress_bar: bool,
    /// Set by a cancel (Ctrl-C, the run API): the executor stops before the next batch.
    pub cancel: Arc<AtomicBool>,
    /// Where item outcomes and batch progress go.
    pub events: Events,
    /// Write the audit (real runs).
    pub audit: bool,
    /// Copy every file, tree and object here before deleting it; a failed copy means that
    /// item is not deleted.
    pub backup: Option<Backup>,
    /// Items with a fingerprint (a plan from `--plan-out`) modified after this instant (the
    /// real clock minus the grace period) are skipped.
    pub grace_cutoff: Option<DateTime<Utc>>,
    /// Re-check items against their fingerprints (a plan read from a file).
    pub check_fingerprints: bool,
}

/// Where backups go.
#[derive(Debug, Clone)]
pub enum Backup {
    /// A local directory: under `dir/<root or store name>/` when `per_root` (the global
    /// `--backup-dir`), straight under `dir` otherwise (cleanup-ops, as seed 002 lays it out).
    Dir { dir: std::path::PathBuf, per_root: bool },
    /// An object store (`--backup-to URL`): keys `<root or store name>/<relative path>`.
    Store(NamedStore),
}

/// Where a plan's backups went, as recorded in the plan and the run (no credentials).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BackupRecord {
    Dir { dir: std::path::PathBuf, per_root: bool },
    Store(object::StoreRecord),
}

impl Backup {
    pub fn record(&self) -> BackupRecord {
        match self {
            Backup::Dir { dir, per_root } => BackupRecord::Dir { dir: dir.clone(), per_root: *per_root },
            Backup::Store(s) => BackupRecord::Store(s.record()),
        }
    }
}

/// Refuse a plan that exceeds `--max-delete` / `--max-delete-percent` (exit 3), before
/// anything is deleted. Units count as deletions (an attachment's file and row are one).
pub fn check_caps(plan: &Plan, max_delete: Option<u64>, max_percent: Option<f64>) -> Result<(), Fatal> {
    let n = plan.units.len() as u64;
    if let Some(max) = max_delete {
        if n > max {
            return Err(Fatal::guard(format!(
                "the plan deletes {n} things, more than --max-delete {max}: nothing was deleted (review with --dry-run, then raise the cap if this is right)"
            )));
        }
    }
    if let Some(p) = max_percent {
        let scanned = plan.scanned.max(n);
        let pct = if scanned == 0 { 0.0 } else { n as f64 * 100.0 / scanned as f64 };
        if pct > p {
            return Err(Fatal::guard(format!(
                "the plan deletes {n} of {scanned} scanned ({pct:.1}%), more than --max-delete-percent {p}: nothing was deleted"
            )));
        }
    }
    Ok(())
}

/// The last step: deletes for real, or records what would be deleted.
struct Deleter<'a> {
    res: &'a Resources,
    dry_run: bool,
    concurrency: usize,
    backup: Option<Backup>,
    grace_cutoff: Option<DateTime<Utc>>,
    check_fingerprints: bool,
    /// Each root's open directories, kept for the whole run.
    dirs: Arc<HashMap<String, SharedDirs>>,
    /// The run whose audit a deleted row is recorded in, in the deletion's transaction
    /// (`None`: no audit, as in a dry run).
    audit_run: Option<&'a str>,
}

type Res = (Outcome, Option<String>);

/// What one item's step produced: its outcome, where it was backed up, and whether its audit
/// row is written already (with its row's deletion).
type Done = (Res, Option<String>, bool);

/// Rows carried out by one statement: table, key column, rule, and the columns set to NULL
/// (`None`: the rows are deleted).
type RowGroup<'a> = (&'a Ident, &'a Ident, Option<&'a RowRule>, Option<&'a [Ident]>);

impl Deleter<'_> {
    /// Delete rows (or, with `null`, set those columns to NULL), each only if it still matches.
    /// Each row carried out is audited (with its snapshot, in the audit only) in the same
    /// statement or transaction; the second value says so.
    async fn rows(
        &self,
        (table, key_column, rule, null): RowGroup<'_>,
        keys: &[String],
        meta: &[(&str, &Item)],
        pending: Option<&Pending<'_>>,
    ) -> Result<Vec<(Res, bool)>> {
        let db = self.res.db()?;
        if self.dry_run {
            return Ok(keys.iter().map(|_| ((Outcome::WouldDelete, None), false)).collect());
        }
        // Each key once (a plan naming a row twice deletes and audits it once), with what its
        // audit row says if it is carried out.
        let mut seen = std::collections::HashSet::with_capacity(keys.len());
        let firsts: Vec<(&String, &(&str, &Item))> = keys.iter().zip(meta).filter(|(k, _)| seen.insert(*k)).collect();
        let once: Vec<String> = firsts.iter().map(|(k, _)| (*k).clone()).collect();
        let at = Utc::now();
        let audit: Vec<AuditRow> = match self.audit_run {
            Some(run_id) => firsts
                .iter()
                .map(|(_, (policy, item))| AuditRow::of(run_id, policy, item, Outcome::Deleted.as_str(), at))
                .collect(),
            None => Vec::new(),
        };
        let audit = RowAudit {
            rows: &audit,
            also: pending.map(|p| p.also.as_slice()).unwrap_or_default(),
            settles: pending.and_then(|p| p.settles),
        };
        let mut done = match null {
            None => db.delete_rows(table, key_column, &once, rule, audit).await?,
            Some(cols) => db.null_columns(table, key_column, &once, cols, rule, audit).await?,
        };
        let not_done: Vec<String> = keys.iter().filter(|k| !done.contains(*k)).cloned().collect();
        let still_there = db.rows_matching(table, key_column, &not_done, None).await?;
        let audited = self.audit_run.is_some();
        Ok(keys
            .iter()
            .map(|k| {
                if done.remove(k) {
                    ((Outcome::Deleted, None), audited)
                } else if still_there.contains(k) {
                    ((Outcome::Skipped, Some("the row no longer matches its rule: kept".to_string())), false)
                } else {
                    ((Outcome::Missing, None), false)
                }
            })
            .collect())
    }

    /// Delete files and trees, each re-checked against its fingerprint first (dry runs too)
    /// and, with a backup, copied first. Returns each outcome and, when a backup was made, where.
    async fn local(&self, jobs: Vec<LocalJob>) -> Vec<(Res, Option<String>)> {
        let roots = self.res.roots.clone();
        let dirs = self.dirs.clone();
        let backup = self.backup.clone();
        let (dry_run, cutoff) = (self.dry_run, self.grace_cutoff);
        let handle = tokio::runtime::Handle::current();
        in_blocking_chunks(jobs, self.concurrency.min(4), move |chunk| {
            let mut caches: HashMap<String, ParentCache> = HashMap::new();
            chunk
                .into_iter()
                .map(|LocalJob { root, path, op, fingerprint }| {
                    let Some(r) = roots.get(&root) else {
                        return ((Outcome::Failed, Some(format!("no local root named {root:?} is configured"))), None);
                    };
                    let cache = caches.entry(root).or_insert_with_key(|k| ParentCache::sharing(&dirs[k]));
                    if let Some(planned) = &fingerprint {
                        let now = fingerprint::local_now(r, &path, op == LocalOp::Tree, cache);
                        match now.map(|now| fingerprint::changed(planned, &now, cutoff)) {
                            Ok(None) => {}
                            Ok(Some(why)) | Err(why) => {
                                return ((Outcome::Skipped, Some(format!("{why}: kept"))), None)
                            }
                        }
                    }
                    if dry_run {
                        return ((Outcome::WouldDelete, None), None);
                    }
                    let mut copy = None;
                    if let (Some(b), LocalOp::File | LocalOp::Tree) = (&backup, op) {
                        let made = match b {
                            Backup::Dir { dir, per_root } => {
                                let dir = if *per_root { dir.join(r.name()) } else { dir.clone() };
                                backup_file(r, &path, &dir, *per_root, cache)
                            }
                            Backup::Store(s) => handle.block_on(backup_file_to_store(r, &path, s, cache)),
                        };
                        match made {
                            Ok(b) => copy = b,
                            Err(e) => return ((Outcome::Failed, Some(format!("{e}: not deleted"))), None),
                        }
                    }
                    let result = match op {
                        LocalOp::File => r.delete_file_with(&path, cache),
                        LocalOp::Tree => r.delete_dir_with(&path, cache),
                        LocalOp::Gzip => r.gzip_file_with(&path, cache),
                        LocalOp::EmptyDir => r.remove_empty_dir_with(&path, cache),
                    };
                    let res = match result {
                        Ok(Removed::Deleted) => (Outcome::Deleted, None),
                        Ok(Removed::Missing) => (Outcome::Missing, None),
                        Ok(Removed::NotEmpty) => {
                            (Outcome::Skipped, Some("not empty (something in it stays): kept".into()))
                        }
                        Err(e) => (Outcome::Failed, Some(e.to_string())),
                    };
                    (res, copy)
                })
                .collect()
        })
        .await
    }

    /// Delete objects in bulk, each re-checked against its fingerprint first (dry runs too)
    /// and, with a backup, copied first (a failed copy means that object is not deleted).
    async fn objects(&self, store: &str, keys: &[(&str, Option<&Fingerprint>)]) -> Vec<(Res, Option<String>)> {
        let Some(s) = self.res.stores.get(store) else {
            return keys
                .iter()
                .map(|_| ((Outcome::Failed, Some(format!("no object store named {store:?} is configured"))), None))
                .collect();
        };
        let mut backups: Vec<Option<String>> = vec![None; keys.len()];
        let mut results: Vec<Option<Res>> = vec![None; keys.len()];
        // Fingerprints first: a changed object is not copied or deleted.
        let checks: Vec<Option<String>> = stream::iter(keys.iter())
            .map(|(k, fp)| async move {
                let planned = (*fp)?;
                match fingerprint::object_now(s, k).await {
                    Ok(now) => fingerprint::changed(planned, &now, self.grace_cutoff),
                    Err(e) => Some(e),
                }
            })
            .buffered(self.concurrency.clamp(1, 16))
            .collect()
            .await;
        let mut valid = Vec::new();
        let mut valid_idx = Vec::new();
        for (i, ((k, _), check)) in keys.iter().zip(checks).enumerate() {
            if let Some(why) = check {
                results[i] = Some((Outcome::Skipped, Some(format!("{why}: kept"))));
                continue;
            }
            match object::parse_key(k) {
                Ok(p) => {
                    valid.push(p);
                    valid_idx.push(i);
                }
                Err(e) => results[i] = Some((Outcome::Failed, Some(e.to_string()))),
            }
        }
        if self.dry_run {
            for i in valid_idx {
                results[i] = Some((Outcome::WouldDelete, None));
            }
        } else {
            if let Some(b) = &self.backup {
                let copies: Vec<Result<Option<String>, String>> = stream::iter(valid.iter().cloned())
                    .map(|p| backup_object(s, store, p, b))
                    .buffered(self.concurrency.clamp(1, 8))
                    .collect()
                    .await;
                let (mut kept_valid, mut kept_idx) = (Vec::new(), Vec::new());
                for ((p, i), c) in valid.into_iter().zip(valid_idx).zip(copies) {
                    match c {
                        Ok(b) => {
                            backups[i] = b;
                            kept_valid.push(p);
                            kept_idx.push(i);
                        }
                        Err(e) => results[i] = Some((Outcome::Failed, Some(format!("{e}: not deleted")))),
                    }
                }
                valid = kept_valid;
                valid_idx = kept_idx;
            }
            let out = s.delete_keys(valid, 1000, self.concurrency.min(8)).await;
            for (i, r) in valid_idx.into_iter().zip(out) {
                results[i] = Some(match r {
                    Ok(()) => (Outcome::Deleted, None),
                    Err(e) => (Outcome::Failed, Some(format!("unable to delete {}: {e}", s.target(keys[i].0)))),
                });
            }
        }
        results.into_iter().map(|r| r.expect("every key has a result")).zip(backups).collect()
    }
}

/// What a backup copies: the checked path of a file or a directory (and whether it is one), or
/// `None` when nothing is there or it is a symlink (deleting a link loses nothing).
fn backup_source(
    root: &LocalRoot,
    path: &str,
    cache: &mut ParentCache,
) -> Result<Option<(std::path::PathBuf, bool)>, String> {
    let src = match root.resolve_with(path, cache) {
        Ok(Some(p)) => p,
        Ok(None) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    Ok(match std::fs::symlink_metadata(&src) {
        Ok(m) if m.is_file() => Some((src, false)),
        Ok(m) if m.is_dir() => Some((src, true)),
        _ => None,
    })
}

/// Copy a file or tree under `root` to `dir/<path>` (a symlink is not copied: deleting a link
/// loses nothing), with its modification times when `keep_mtime`. Returns where the copy is.
fn backup_file(
    root: &LocalRoot,
    path: &str,
    dir: &std::path::Path,
    keep_mtime: bool,
    cache: &mut ParentCache,
) -> Result<Option<String>, String> {
    let Some((src, _)) = backup_source(root, path, cache)? else {
        return Ok(None);
    };
    if src.starts_with(dir) {
        return Ok(None); // pruning an old backup: it is the backup
    }
    let rel = root.relativize(path).map_err(|e| e.to_string())?;
    let dst = dir.join(&rel);
    crate::store::local::copy_tree(&src, &dst, keep_mtime)
        .map_err(|e| format!("backup of {path} to {} failed ({e})", dst.display()))?;
    Ok(Some(dst.display().to_string()))
}

/// Copy an object to the backup (`dir/<store>/<key>`, or `<store>/<key>` in a backup store);
/// `None` when it is already gone.
async fn backup_object(
    s: &NamedStore,
    store_name: &str,
    key: object_store::path::Path,
    backup: &Backup,
) -> Result<Option<String>, String> {
    let fail = |to: &str, e: String| format!("backup of {} to {to} failed ({e})", s.target(key.as_ref()));
    let got = match s.store.get(&key).await {
        Ok(r) => r,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(fail("the backup", e.to_string())),
    };
    match backup {
        Backup::Dir { dir, .. } => {
            let dst = dir.join(store_name).join(key.as_ref());
            let to = dst.display().to_string();
            let bytes = got.bytes().await.map_err(|e| fail(&to, e.to_string()))?;
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent).map_err(|e| fail(&to, e.to_string()))?;
            }
            std::fs::write(&dst, &bytes).map_err(|e| fail(&to, e.to_string()))?;
            Ok(Some(to))
        }
        Backup::Store(b) => {
            let bkey = format!("{store_name}/{key}");
            let to = b.target(&bkey);
            let dst = object::parse_key(&bkey).map_err(|e| fail(&to, e.to_string()))?;
            let mut w = object_store::buffered::BufWriter::new(b.store.clone(), dst);
            let mut body = got.into_stream();
            use tokio::io::AsyncWriteExt;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| fail(&to, e.to_string()))?;
                w.write_all(&chunk).await.map_err(|e| fail(&to, e.to_string()))?;
            }
            w.shutdown().await.map_err(|e| fail(&to, e.to_string()))?;
            Ok(Some(to))
        }
    }
}

/// Copy a file or a tree under `root` to a backup store, as `<root name>/<path>` (a symlink is
/// not copied). Returns where the copy is.
async fn backup_file_to_store(
    root: &LocalRoot,
    path: &str,
    b: &NamedStore,
    cache: &mut ParentCache,
) -> Result<Option<String>, String> {
    let Some((src, is_dir)) = backup_source(root, path, cache)? else {
        return Ok(None);
    };
    let rel = root.relativize(path).map_err(|e| e.to_string())?;
    let base = format!("{}/{rel}", root.name());
    // A tree is recorded with a trailing '/': `restore` lists it as a prefix.
    let to = if is_dir { format!("{}/", b.target(&base)) } else { b.target(&base) };
    let fail = |e: String| format!("backup of {path} to {to} failed ({e})");
    let files: Vec<(std::path::PathBuf, String)> = if is_dir {
        let mut v = Vec::new();
        for e in walkdir::WalkDir::new(&src).follow_links(false) {
            let e = e.map_err(|e| fail(e.to_string()))?;
            if e.file_type().is_file() {
                let sub = e.path().strip_prefix(&src).expect("walked under src").to_string_lossy().replace('\\', "/");
                v.push((e.path().to_path_buf(), format!("{base}/{sub}")));
            }
        }
        v
    } else {
        vec![(src.clone(), base.clone())]
    };
    for (from, key) in files {
        let dst = object::parse_key(&key).map_err(|e| fail(e.to_string()))?;
        let mut f = tokio::fs::File::open(&from).await.map_err(|e| fail(e.to_string()))?;
        let mut w = object_store::buffered::BufWriter::new(b.store.clone(), dst);
        tokio::io::copy(&mut f, &mut w).await.map_err(|e| fail(e.to_string()))?;
        use tokio::io::AsyncWriteExt;
        w.shutdown().await.map_err(|e| fail(e.to_string()))?;
    }
    Ok(Some(to))
}

/// What to do to a local path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LocalOp {
    File,
    Tree,
    Gzip,
    /// `rmdir`: only an empty directory.
    EmptyDir,
}

/// One local item for the executor's blocking tasks.
struct LocalJob {
    root: String,
    path: String,
    op: LocalOp,
    fingerprint: Option<Fingerprint>,
}

/// A unit's progress through a batch.
struct UnitState {
    results: Vec<Option<Res>>,
    backups: Vec<Option<String>>,
    /// Audited already, with its row's deletion.
    audited: Vec<bool>,
    alive: bool,
}

/// A batch's intent row: every file, directory and object of its units not refused, listed in
/// `row_snapshot` (docs/audit.md).
struct BatchIntent {
    target: String,
    reason: String,
    list: Box<RawValue>,
    bytes: i64,
}

impl BatchIntent {
    /// `None` when the batch deletes no file, directory or object (rows are audited with their
    /// deletion).
    fn of(batch: &[Unit], states: &[UnitState], policies: &[String], seq: u64, run_id: &str) -> Option<BatchIntent> {
        let items: Vec<IntentItem> = batch
            .iter()
            .zip(states)
            .zip(policies)
            .filter(|((_, st), _)| st.alive)
            .flat_map(|((u, _), policy)| u.items.iter().map(move |item| (item, policy.as_str())))
            .filter(|(item, _)| item.kind != Kind::Row)
            .map(|(item, policy)| IntentItem {
                policy: policy.into(),
                kind: item.kind.as_str().into(),
                target: item.target.as_str().into(),
                reason: item.reason.as_str().into(),
                bytes: item.bytes.map(|b| b as i64),
            })
            .collect();
        if items.is_empty() {
            return None;
        }
        let list = serde_json::to_string(&items).expect("intent items serialize");
        Some(BatchIntent {
            target: format!("batch {seq} of run {run_id}"),
            reason: format!("about to delete the {} items listed in row_snapshot", items.len()),
            list: RawValue::from_string(list).expect("serde_json writes JSON"),
            bytes: items.iter().filter_map(|i| i.bytes).sum(),
        })
    }

    fn row<'a>(&'a self, run_id: &'a str, policy: &'a str) -> AuditRow<'a> {
        AuditRow {
            run_id,
            policy,
            kind: BATCH_INTENT,
            target: &self.target,
            reason: &self.reason,
            bytes: Some(self.bytes),
            outcome: INTENT,
            error: None,
            backup_location: None,
            row_snapshot: Some(&self.list),
            at: Utc::now(),
        }
    }
}

/// Batches in flight at once: while one batch's rows are deleted and audited, the next ones'
/// files are already being deleted. Batches are independent units of work. Small batches spend
/// most of their time waiting on round trips, so more of them run at once: about 1,000 units
/// in flight, 2 to 4 batches (measured: attachments in batches of 100 take about 5% less time
/// with 4 in flight than with 2, and more with 8; worker-once's batches of 2,000 gain nothing
/// from 4 and hold 15% more memory).
fn pipeline_depth(batch_size: usize) -> usize {
    (1000 / batch_size.max(1)).clamp(2, 4)
}

/// What one batch did, for the report.
struct BatchDone {
    units: Vec<Unit>,
    ok: u64,
    failed: u64,
    interrupted: bool,
    timings: Timings,
}

/// Which phase a unit belongs to: every unit but the empty-directory ones, then those by
/// depth, deepest first (a parent is removed only after its children). A batch never spans
/// two phases, and a phase starts only when the one before it is done.
fn phase_of(u: &Unit) -> Option<usize> {
    match u.items.as_slice() {
        [Item { op: Op::DeleteEmptyDir { path, .. }, .. }] => Some(path.matches('/').count()),
        _ => None,
    }
}

/// The plan's units in batches, read in order (from the plan's temporary file when it has
/// one): at most one batch is read ahead of the batches in flight.
struct Batches {
    source: crate::plan::Drain,
    next: Option<Unit>,
    size: usize,
}

impl Batches {
    /// The next batch of the phase `phase` (`None`: whatever comes next), or `None` at the end
    /// or at a phase boundary (`at_boundary` then says so).
    fn take(&mut self, phase: Option<Option<usize>>) -> Result<Option<(Option<usize>, Vec<Unit>)>> {
        let first = match self.next.take() {
            Some(u) => u,
            None => match self.source.next() {
                Some(u) => u?,
                None => return Ok(None),
            },
        };
        let ph = phase_of(&first);
        if phase.is_some_and(|p| p != ph) {
            self.next = Some(first);
            return Ok(None);
        }
        let mut batch = Vec::with_capacity(self.size.min(4096));
        batch.push(first);
        while batch.len() < self.size {
            match self.source.next() {
                Some(u) => {
                    let u = u?;
                    if phase_of(&u) != ph {
                        self.next = Some(u);
                        break;
                    }
                    batch.push(u);
                }
                None => break,
            }
        }
        Ok(Some((ph, batch)))
    }

    fn at_boundary(&self) -> bool {
        self.next.is_some()
    }
}

/// Carry out `plan`, writing each item's outcome into it. The audit is written batch by batch
/// (each batch's audit is durable before the batch counts as done) when `opts.audit` is set.
/// At most `pipeline_depth + 1` batches are in memory at once, whatever the plan's size: the
/// units are read from the plan and what was done goes to a new `Units`.
pub async fn execute(plan: &mut Plan, res: &Resources, opts: &ExecOptions) -> Result<Report> {
    let started = Utc::now();
    let mut report = Report::new(&opts.run_id, &plan.command, opts.dry_run, started, plan);
    let deleter = Deleter {
        res,
        dry_run: opts.dry_run,
        concurrency: opts.concurrency.max(1),
        backup: opts.backup.clone(),
        grace_cutoff: opts.grace_cutoff,
        check_fingerprints: opts.check_fingerprints,
        dirs: Arc::new(res.roots.keys().map(|k| (k.clone(), SharedDirs::default())).collect()),
        audit_run: opts.audit.then_some(opts.run_id.as_str()),
    };
    let total_units = plan.units.len();
    let bar = crate::progress::Progress::new(total_units as u64, opts.progress_bar);
    let verb = if opts.dry_run { "Would delete" } else { "Deleted" };
    let policy = plan.command.clone();
    // Set on the first fatal error: batches not yet started are skipped, those in flight finish
    // (and are audited) so that nothing is left deleted but unrecorded.
    let stop = AtomicBool::new(false);
    let mut timings = Timings::default();
    let mut done_units = 0usize;
    let mut first_error: Option<anyhow::Error> = None;
    let mut batches = Batches { source: plan.units.drain(), next: None, size: plan.batch_size.max(1) };
    let depth = pipeline_depth(batches.size);
    let mut executed = crate::plan::Units::default();

    // Up to `depth` batches in flight, results in order; a new phase starts when the
    // batches of the one before are all done.
    let mut inflight = futures::stream::FuturesOrdered::new();
    let mut phase: Option<Option<usize>> = None;
    let mut exhausted = false;
    // Numbers the batches (their intent rows).
    let mut seq = 0u64;
    loop {
        while inflight.len() < depth && !exhausted {
            let want = if inflight.is_empty() { None } else { phase };
            match batches.take(want) {
                Ok(Some((ph, units))) => {
                    phase = Some(ph);
                    seq += 1;
                    inflight.push_back(run_batch(units, seq, &deleter, res, opts, &policy, &stop));
                }
                Ok(None) if batches.at_boundary() => break,
                Ok(None) => exhausted = true,
                Err(e) => {
                    // The plan cannot be read back: what is in flight finishes, nothing more starts.
                    stop.store(true, Ordering::SeqCst);
                    first_error.get_or_insert(e);
                    exhausted = true;
                }
            }
        }
        let Some(done) = inflight.next().await else {
            if exhausted {
                break;
            }
            continue;
        };
        let done = match done {
            Ok(d) => d,
            Err((units, e)) => {
                stop.store(true, Ordering::SeqCst);
                for u in &units {
                    report.count_unit(u);
                }
                executed.extend(units);
                first_error.get_or_insert(e);
                continue;
            }
        };
        if done.interrupted && !report.interrupted {
            tracing::warn!(target: "cleanup", "interrupted: stopped after {done_units} of {total_units}");
        }
        report.interrupted |= done.interrupted;
        for u in &done.units {
            report.count_unit(u);
        }
        for item in done.units.iter().flat_map(|u| u.items.iter()) {
            if opts.events.wanted() {
                opts.events.send(Event::Item {
                    run_id: opts.run_id.clone(),
                    kind: item.kind,
                    target: item.target.clone(),
                    outcome: item.outcome.unwrap_or(Outcome::Skipped),
                    error: item.error.clone(),
                });
            }
        }
        report.units_ok += done.ok;
        report.units_failed += done.failed;
        timings.add(&done.timings);
        if !done.interrupted {
            done_units += done.units.len();
            bar.set(done_units as u64);
            tracing::info!(target: "cleanup", "{verb} {done_units}/{total_units}...");
            opts.events.send(Event::Batch {
                run_id: opts.run_id.clone(),
                done_units: done_units as u64,
                total_units: total_units as u64,
            });
        }
        executed.extend(done.units);
    }
    plan.units = executed;
    bar.finish();
    tracing::debug!(
        target: "cleanup",
        "Timings (summed over batches in flight): intent and re-check {:.2} s, deletions {:.2} s, audit {:.2} s",
        timings.precheck.as_secs_f64(),
        timings.stages.as_secs_f64(),
        timings.audit.as_secs_f64()
    );
    if let Some(e) = first_error {
        return Err(
            e.context(Fatal { exit: crate::exit_codes::Exit::PartialFailure, message: "the run stopped".into() })
        );
    }
    report.finish(Utc::now());
    Ok(report)
}

/// One batch: re-check rows, run each stage, write outcomes into the items, write the audit.
#[allow(clippy::too_many_arguments)]
async fn run_batch(
    mut batch: Vec<Unit>,
    seq: u64,
    deleter: &Deleter<'_>,
    res: &Resources,
    opts: &ExecOptions,
    policy: &str,
    stop: &AtomicBool,
) -> Result<BatchDone, (Vec<Unit>, anyhow::Error)> {
    let mut timings = Timings::default();
    crate::failpoint::batch_delay().await;
    let interrupted = opts.cancel.load(Ordering::SeqCst);
    if interrupted || stop.load(Ordering::SeqCst) {
        let why =
            if interrupted { "interrupted before this item" } else { "not attempted: the run stopped on an error" };
        for item in batch.iter_mut().flat_map(|u| u.items.iter_mut()) {
            item.outcome = Some(Outcome::Skipped);
            item.error = Some(why.into());
        }
        return Ok(BatchDone { units: batch, ok: 0, failed: 0, interrupted: true, timings });
    }
    let mut states: Vec<UnitState> = batch
        .iter()
        .map(|u| UnitState {
            results: vec![None; u.items.len()],
            backups: vec![None; u.items.len()],
            audited: vec![false; u.items.len()],
            alive: true,
        })
        .collect();

    // Refused items fail their unit before anything is touched.
    for (u, unit) in batch.iter().enumerate() {
        if let Some((i, why)) = unit.items.iter().enumerate().find_map(|(i, it)| it.refused.clone().map(|w| (i, w))) {
            states[u].results[i] = Some((Outcome::Failed, Some(why)));
            states[u].alive = false;
        }
    }

    // The audit's policy for each unit: `command/task`, or the command.
    let policies: Vec<String> = batch
        .iter()
        .map(|u| u.task.as_ref().map(|t| format!("{policy}/{t}")).unwrap_or_else(|| policy.to_string()))
        .collect();

    // Intent before effect: every file, directory and object this batch may delete is recorded
    // (durably) before anything is deleted; rows are audited with their deletion. One row for
    // the batch, listing its items: one write, whatever the batch's size. It names the items of
    // every unit not refused: a unit that the re-check below takes out is settled as skipped,
    // like any other.
    let intent = opts.audit.then(|| BatchIntent::of(&batch, &states, &policies, seq, &opts.run_id)).flatten();
    let mut intent_row = intent.as_ref().map(|i| i.row(&opts.run_id, policy));

    // Re-check rows before touching anything else of their unit; the intent is written with the
    // first re-check (in the same statement on PostgreSQL), or else with the first step of the
    // first stage (`run_stage`).
    let t = std::time::Instant::now();
    let checked = precheck_rows(res, &batch, &mut states, deleter, &mut intent_row).await;
    timings.precheck += t.elapsed();
    if let Err(e) = checked {
        return Err((
            batch,
            e.context("cannot re-check rows and record what this batch is about to delete: nothing of it was deleted"),
        ));
    }
    if opts.audit && intent_row.is_none() {
        crate::failpoint::hit("after-intents");
    }

    let stages = batch.iter().map(|u| u.items.len()).max().unwrap_or(0);
    // Items whose outcome is in the item (and the log) already.
    let mut finalized: Vec<Vec<bool>> = batch.iter().map(|u| vec![false; u.items.len()]).collect();
    // Whether the intent is gone, with the outcomes of every item not in the last stage.
    let mut settled = false;
    let intent_target: Vec<String> = intent.iter().map(|i| i.target.clone()).collect();
    for stage in 0..stages {
        // The last stage deletes rows and nothing else: every other outcome of the batch is known
        // by now, and goes with their statement (or transaction), the intent's removal with it:
        // no statement of its own. (A file or object in it would still need the intent.)
        let mut kinds =
            batch.iter().enumerate().filter(|(u, _)| states[*u].alive).filter_map(|(_, unit)| unit.items.get(stage));
        let ride = stage + 1 == stages
            && intent.is_some()
            && intent_row.is_none()
            && kinds.next().is_some_and(|i| i.kind == Kind::Row)
            && kinds.all(|i| i.kind == Kind::Row);
        if ride {
            finalize(&mut batch, &mut states, &mut finalized, Some(stage));
        }
        let work: Vec<(usize, &Item)> = batch
            .iter()
            .enumerate()
            .filter(|(u, unit)| states[*u].alive && unit.items.len() > stage)
            .map(|(u, unit)| (u, &unit.items[stage]))
            .collect();
        if work.is_empty() {
            continue;
        }
        let mut riding: Vec<(usize, usize)> = Vec::new();
        let mut pending = if ride {
            let (at, also) = outcomes_to_audit(&batch, &policies, &states, &finalized, &opts.run_id);
            riding = at;
            Some(Pending { also, settles: Some((opts.run_id.as_str(), intent_target.as_slice())) })
        } else {
            intent_row.clone().map(|r| Pending { also: vec![r], settles: None })
        };
        let t = std::time::Instant::now();
        let results = run_stage(deleter, &work, &policies, &mut pending).await;
        timings.stages += t.elapsed();
        if pending.is_none() {
            // Written: the intent, or the outcomes with the intent's removal.
            intent_row = None;
            settled |= ride;
            for (u, i) in riding.drain(..) {
                states[u].audited[i] = true;
            }
        }
        let results = match results {
            Ok(r) => r,
            Err(e) => {
                // A database error mid-batch: what ran is recorded, the rest is skipped.
                let msg = format!("{e:#}");
                for (u, _) in &work {
                    states[*u].results[stage] = Some((Outcome::Failed, Some(msg.clone())));
                    states[*u].alive = false;
                }
                stop.store(true, Ordering::SeqCst);
                continue;
            }
        };
        for ((u, _), (r, backup, audited)) in work.iter().zip(results) {
            if r.0 == Outcome::Failed || r.0 == Outcome::Skipped {
                states[*u].alive = false;
            }
            states[*u].results[stage] = Some(r);
            states[*u].backups[stage] = backup;
            states[*u].audited[stage] = audited;
        }
    }

    // Outcomes into the plan and the log.
    finalize(&mut batch, &mut states, &mut finalized, None);
    let failed = batch.iter().filter(|u| u.items.iter().any(|i| i.outcome == Some(Outcome::Failed))).count() as u64;
    let ok = batch.len() as u64 - failed;
    if opts.audit {
        // The outcomes, in place of this batch's intents (one transaction): every item not
        // audited already (with its row's deletion, or with the last stage's rows).
        let (_, also) = outcomes_to_audit(&batch, &policies, &states, &finalized, &opts.run_id);
        let rest = Pending { also, settles: (!settled).then_some((opts.run_id.as_str(), intent_target.as_slice())) };
        crate::failpoint::hit("before-settle");
        let t = std::time::Instant::now();
        let written = match res.db() {
            Ok(db) => rest.write(db).await,
            Err(e) => Err(e),
        };
        timings.audit += t.elapsed();
        drop(rest);
        if let Err(e) = written {
            // The intents stay: the next run resolves them against what is there.
            let e = anyhow!(
                "cannot write the audit ({e:#}): this batch of {} was carried out; its deletions are recorded as intents that the next run resolves",
                batch.len()
            );
            return Err((batch, e));
        }
        // The rows' snapshots are in the audit now (where `restore` reads them): the plan
        // need not carry them to the end of the run.
        for item in batch.iter_mut().flat_map(|u| u.items.iter_mut()) {
            item.snapshot = None;
        }
    }
    Ok(BatchDone { units: batch, ok, failed, interrupted: false, timings })
}

/// Audit rows written with another step of their batch's work, on its success, or alone
/// (`write`); `settles`: the intents they replace (run id, targets).
struct Pending<'a> {
    also: Vec<AuditRow<'a>>,
    settles: Option<(&'a str, &'a [String])>,
}

impl Pending<'_> {
    /// Write them in a statement (or transaction) of their own.
    async fn write(&self, db: &crate::db::Db) -> Result<()> {
        match self.settles {
            Some((run_id, targets)) => db.settle_intents(run_id, targets, &self.also).await,
            None => db.insert_audit(&self.also).await,
        }
    }
}

/// The audit rows of the items whose outcome is in them (`finalized`) and not audited yet, and
/// where those items are (unit, item).
fn outcomes_to_audit<'a>(
    batch: &'a [Unit],
    policies: &'a [String],
    states: &[UnitState],
    finalized: &[Vec<bool>],
    run_id: &'a str,
) -> (Vec<(usize, usize)>, Vec<AuditRow<'a>>) {
    let now = Utc::now();
    let mut at = Vec::new();
    let mut rows = Vec::new();
    for (u, (unit, policy)) in batch.iter().zip(policies).enumerate() {
        for (i, item) in unit.items.iter().enumerate() {
            if finalized[u][i] && !states[u].audited[i] {
                at.push((u, i));
                rows.push(AuditRow::of(run_id, policy, item, outcome_of(item).as_str(), now));
            }
        }
    }
    (at, rows)
}

/// The outcome of an item carried out (or not attempted).
fn outcome_of(item: &Item) -> Outcome {
    item.outcome.unwrap_or(Outcome::Skipped)
}

/// Move each item's result into it (outcome, error, backup) and log it, once; with
/// `except`, not the items of that stage still to run.
fn finalize(batch: &mut [Unit], states: &mut [UnitState], finalized: &mut [Vec<bool>], except: Option<usize>) {
    for (u, unit) in batch.iter_mut().enumerate() {
        let st = &mut states[u];
        for (i, item) in unit.items.iter_mut().enumerate() {
            if finalized[u][i] || (st.alive && except == Some(i)) {
                continue;
            }
            let (outcome, error) = st.results[i].take().unwrap_or((
                Outcome::Skipped,
                Some("not attempted: an earlier step of this unit did not complete".into()),
            ));
            log_item(item, outcome, error.as_deref());
            item.outcome = Some(outcome);
            item.error = error;
            item.backup = st.backups[i].take();
            finalized[u][i] = true;
        }
    }
}

fn log_item(item: &Item, outcome: Outcome, error: Option<&str>) {
    // Arguments of a disabled tracing macro are not evaluated: the size is formatted lazily.
    let size = Size(item.bytes);
    // Setting references to NULL is not a deletion, and says so.
    let (done, would) = match &item.op {
        Op::NullColumns { .. } => ("Cleared references of", "Would clear references of"),
        Op::CompressFile { .. } => ("Compressed", "Would compress"),
        _ => ("Deleted", "Would delete"),
    };
    match outcome {
        Outcome::Deleted => {
            tracing::info!(target: "cleanup", "{done} {} {} size={} reason={}", item.kind.as_str(), item.target, size, item.reason)
        }
        Outcome::WouldDelete => {
            tracing::info!(target: "cleanup", "{would} {} {} size={} reason={}", item.kind.as_str(), item.target, size, item.reason)
        }
        Outcome::Missing => {
            tracing::debug!(target: "cleanup", "Already gone {} {}", item.kind.as_str(), item.target)
        }
        Outcome::Failed => {
            tracing::error!(target: "cleanup", "Failed to delete {} {}: {}", item.kind.as_str(), item.target, error.unwrap_or("unknown error"))
        }
        Outcome::Skipped => {
            tracing::warn!(target: "cleanup", "Skipped {} {}: {}", item.kind.as_str(), item.target, error.unwrap_or(""))
        }
    }
}

/// Rows whose rule no longer holds take their whole unit out of the batch, untouched. The
/// batch's `intent`, if any, is taken and written with the first re-check.
///
/// A unit whose only rows with a rule are its first step needs no re-check in a real run: that
/// step (the guarded `DELETE` or `UPDATE`) re-checks them itself, and what comes after it runs
/// only for the rows it carried out. A dry run re-checks them here, since its steps do not.
async fn precheck_rows(
    res: &Resources,
    batch: &[crate::plan::Unit],
    states: &mut [UnitState],
    d: &Deleter<'_>,
    intent: &mut Option<AuditRow<'_>>,
) -> Result<()> {
    // Per (table, key column, rule): the (unit, item, key) to re-check.
    type Groups = HashMap<(Ident, Ident, Option<RowRule>), Vec<(usize, usize, String)>>;
    let mut groups: Groups = HashMap::new();
    for (u, unit) in batch.iter().enumerate() {
        if !states[u].alive {
            continue;
        }
        if !d.dry_run && rechecked_by_first_step(unit) {
            continue;
        }
        for (i, item) in unit.items.iter().enumerate() {
            match &item.op {
                Op::DeleteRow { table, key_column, key, rule: Some(rule) }
                | Op::NullColumns { table, key_column, key, rule: Some(rule), .. } => groups
                    .entry((table.clone(), key_column.clone(), Some(rule.clone())))
                    .or_default()
                    .push((u, i, key.clone())),
                _ => {}
            }
        }
        if let Some(g) = &unit.guard {
            // A guard failing marks the unit's first item skipped.
            groups.entry((g.table.clone(), g.key_column.clone(), Some(g.rule.clone()))).or_default().push((
                u,
                0,
                g.key.clone(),
            ));
        }
    }
    // Rows with a fingerprint (a plan from --plan-out): the columns their rule read must not
    // have changed either.
    let with_fp: Vec<(usize, usize, &Item)> = batch
        .iter()
        .enumerate()
        .filter(|(u, _)| states[*u].alive)
        .flat_map(|(u, unit)| unit.items.iter().enumerate().map(move |(i, item)| (u, i, item)))
        .filter(|(_, _, item)| d.check_fingerprints && item.kind == Kind::Row && item.fingerprint.is_some())
        .collect();
    if !with_fp.is_empty() {
        for (u, i, why) in fingerprint::changed_rows(res.db()?, with_fp).await? {
            states[u].alive = false;
            states[u].results[i] = Some((Outcome::Skipped, Some(why)));
        }
    }
    for ((table, key_column, rule), members) in groups {
        let keys: Vec<String> = members.iter().map(|m| m.2.clone()).collect();
        let first = intent.take();
        let ok = res.db()?.rows_matching_after(first.as_slice(), &table, &key_column, &keys, rule.as_ref()).await?;
        for (u, i, key) in members {
            if !ok.contains(&key) && states[u].alive {
                states[u].alive = false;
                states[u].results[i] = Some((
                    Outcome::Skipped,
                    Some("the row changed since the plan and no longer matches its rule: kept".into()),
                ));
            }
        }
    }
    Ok(())
}

/// Whether a unit's rows with a rule are all in its first step (and nothing guards it): a
/// unit the guarded deletion of its first step re-checks.
fn rechecked_by_first_step(unit: &Unit) -> bool {
    let ruled =
        |item: &Item| matches!(&item.op, Op::DeleteRow { rule: Some(_), .. } | Op::NullColumns { rule: Some(_), .. });
    unit.guard.is_none() && unit.items.first().is_some_and(ruled) && !unit.items[1..].iter().any(ruled)
}

/// One stage of a batch: rows grouped per table and rule (one statement each), files and
/// directories concurrently, objects per store in bulk requests. Results in `work` order.
/// `pending` audit rows (a batch's intent not written yet, or its outcomes so far) are
/// written first: with the first rows' statement or transaction, else alone; `None` once
/// written.
async fn run_stage(
    d: &Deleter<'_>,
    work: &[(usize, &Item)],
    policies: &[String],
    pending: &mut Option<Pending<'_>>,
) -> Result<Vec<Done>> {
    let mut results: Vec<Option<Done>> = vec![None; work.len()];
    let mut rows: HashMap<RowGroup, Vec<usize>> = HashMap::new();
    let mut local: Vec<usize> = Vec::new();
    let mut objects: HashMap<&str, Vec<usize>> = HashMap::new();
    for (w, (_, item)) in work.iter().enumerate() {
        match &item.op {
            Op::DeleteRow { table, key_column, rule, .. } => {
                rows.entry((table, key_column, rule.as_ref(), None)).or_default().push(w)
            }
            Op::NullColumns { table, key_column, rule, columns, .. } => {
                rows.entry((table, key_column, rule.as_ref(), Some(columns.as_slice()))).or_default().push(w)
            }
            Op::DeleteFile { .. } | Op::DeleteDir { .. } | Op::CompressFile { .. } | Op::DeleteEmptyDir { .. } => {
                local.push(w)
            }
            Op::DeleteObject { store, .. } => objects.entry(store.as_str()).or_default().push(w),
        }
    }
    for (group, idx) in rows {
        let keys: Vec<String> = idx
            .iter()
            .map(|&w| match &work[w].1.op {
                Op::DeleteRow { key, .. } | Op::NullColumns { key, .. } => key.clone(),
                _ => unreachable!(),
            })
            .collect();
        let meta: Vec<(&str, &Item)> = idx.iter().map(|&w| (policies[work[w].0].as_str(), work[w].1)).collect();
        let t = std::time::Instant::now();
        let out = d.rows(group, &keys, &meta, pending.as_ref()).await?;
        tracing::trace!(target: "cleanup", "rows: {} in {:?}", keys.len(), t.elapsed());
        if pending.take().is_some_and(|p| p.settles.is_none()) {
            crate::failpoint::hit("after-intents");
        }
        for (w, r) in idx.iter().zip(out) {
            results[*w] = Some((r.0, None, r.1));
        }
        if d.audit_run.is_some() {
            crate::failpoint::hit("after-rows");
        }
    }
    if let Some(p) = pending {
        debug_assert!(
            p.settles.is_none() || (local.is_empty() && objects.is_empty()),
            "an intent goes after its items"
        );
        p.write(d.res.db()?).await?;
        if pending.take().is_some_and(|p| p.settles.is_none()) {
            crate::failpoint::hit("after-intents");
        }
    }
    if !local.is_empty() {
        let jobs = local
            .iter()
            .map(|&w| {
                let item = work[w].1;
                let (root, path, op) = match &item.op {
                    Op::DeleteFile { root, path } => (root, path, LocalOp::File),
                    Op::DeleteDir { root, path } => (root, path, LocalOp::Tree),
                    Op::CompressFile { root, path } => (root, path, LocalOp::Gzip),
                    Op::DeleteEmptyDir { root, path } => (root, path, LocalOp::EmptyDir),
                    _ => unreachable!(),
                };
                let fingerprint = if d.check_fingerprints { item.fingerprint.clone() } else { None };
                LocalJob { root: root.clone(), path: path.clone(), op, fingerprint }
            })
            .collect();
        let t = std::time::Instant::now();
        let out = d.local(jobs).await;
        tracing::trace!(target: "cleanup", "local: {} in {:?}", out.len(), t.elapsed());
        for (w, (r, backup)) in local.into_iter().zip(out) {
            results[w] = Some((r, backup, false));
        }
        if d.audit_run.is_some() {
            crate::failpoint::hit("after-local");
        }
    }
    for (store, idx) in objects {
        let keys: Vec<(&str, Option<&Fingerprint>)> = idx
            .iter()
            .map(|&w| match &work[w].1.op {
                Op::DeleteObject { key, .. } => {
                    (key.as_str(), work[w].1.fingerprint.as_ref().filter(|_| d.check_fingerprints))
                }
                _ => unreachable!(),
            })
            .collect();
        for (w, (r, backup)) in idx.into_iter().zip(d.objects(store, &keys).await) {
            results[w] = Some((r, backup, false));
        }
        if d.audit_run.is_some() {
            crate::failpoint::hit("after-objects");
        }
    }
    Ok(results.into_iter().map(|r| r.expect("every item has a result")).collect())
}

/// A size that is formatted only when a log line is written.
struct Size(Option<u64>);

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(b) => f.write_str(&crate::report::human_bytes(b)),
            None => f.write_str("-"),
        }
    }
}

/// Time spent per step, reported at debug level (`-v`) at the end of a run.
#[derive(Default)]
struct Timings {
    precheck: std::time::Duration,
    stages: std::time::Duration,
    audit: std::time::Duration,
}

impl Timings {
    fn add(&mut self, o: &Timings) {
        self.precheck += o.precheck;
        self.stages += o.stages;
        self.audit += o.audit;
    }
}

/// Kinds in report order.
pub const KINDS: [Kind; 4] = [Kind::Row, Kind::File, Kind::Dir, Kind::Object];
