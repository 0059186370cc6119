//! `worker-once` (seed 004): one cycle of the cleanup worker over `DATA_DIR` and the previews
//! bucket, in the seed's order (§8.2): tmp, previews, objects, logs, repos.
//!
//! Every task only gathers and decides; the units of all tasks go into one plan (each unit
//! tagged with its task) that the executor carries out. Nothing is kept between runs outside the
//! database, so several workers and restarts are safe.

use super::{print_config, print_report, run_policy, Ctx, Finished};
use crate::cli::WorkerOnceArgs;
use crate::config::{Key, ProcessEnv, Source, Sourced, TableSpec};
use crate::db::Db;
use crate::executor::Resources;
use crate::exit_codes::{Exit, Fatal};
use crate::plan::{Item, Kept, Kind, Op, Plan, RowGuard, RowRule, Unit};
use crate::report::{Outcome, Report};
use crate::store::is_protected;
use crate::store::local::LocalRoot;
use crate::store::object::{parse_key, NamedStore};
use anyhow::{anyhow, bail, Result};
use chrono::{DateTime, Duration, Utc};
use futures::stream::TryStreamExt;
use std::collections::HashSet;
use std::path::Path;
use std::time::SystemTime;

pub const COMMAND: &str = "worker-once";
pub const TASKS: [&str; 5] = ["tmp", "previews", "objects", "logs", "repos"];

/// The validated settings of the worker (seed 004 §3).
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub tasks: Vec<&'static str>,
    pub previews_store: Option<Sourced<String>>,
    pub previews_prefix: String,
    pub preview_bundle_ttl_hours: Sourced<i64>,
    pub tmp_dir_ttl_minutes: Sourced<i64>,
    pub log_retention_days: Sourced<i64>,
    /// Seed 004's option B: gzip logs older than this, within retention. Off when unset.
    pub log_compress_after_days: Option<Sourced<i64>>,
    pub stale_repo_days: Sourced<i64>,
    pub stale_repos_enabled: Sourced<bool>,
    pub log_keep: Vec<String>,
    pub previews: TableSpec,
    pub jobs: TableSpec,
    pub repos: TableSpec,
}

impl WorkerSettings {
    pub fn load(ctx: &Ctx, args: &WorkerOnceArgs) -> Result<WorkerSettings> {
        let env = ProcessEnv;
        let l = ctx.settings.layers(&env);
        let raw = &ctx.settings.raw.worker;
        let f = &ctx.settings.file_name;
        let requested = args.tasks.clone().or_else(|| raw.tasks.clone());
        let tasks: Vec<&'static str> = match requested {
            None => TASKS.to_vec(),
            Some(list) => {
                let mut out = Vec::new();
                for t in &list {
                    let t = t.trim();
                    match TASKS.iter().find(|k| **k == t) {
                        Some(k) => out.push(*k),
                        None => {
                            return Err(Fatal::usage(format!(
                                "--tasks: unknown task {t:?}: choose from {}",
                                TASKS.join(",")
                            ))
                            .into())
                        }
                    }
                }
                // Always the seed's order, whatever order they were named in.
                TASKS.iter().copied().filter(|k| out.contains(k)).collect()
            }
        };
        let num = |flag_env: &'static str, file_key: &'static str, file: Option<i64>, default: i64, what: &str| {
            l.pick(&Key { flag: None, env: Some(flag_env), file: file_key }, None, file, default, what, |v| *v >= 0)
        };
        let previews_store = match (&raw.previews_store, ctx.env("OBJECT_STORAGE_BUCKET_PREVIEWS")) {
            (_, Some(bucket)) => {
                Some(Sourced::new(format!("s3://{bucket}"), Source::Env("OBJECT_STORAGE_BUCKET_PREVIEWS")))
            }
            (Some(url), None) => Some(Sourced::new(url.clone(), Source::File(format!("worker.previews_store in {f}")))),
            (None, None) => None,
        };
        let stale_repos_enabled = match l.env_bool("CLEANUP_STALE_REPOS_ENABLED")? {
            Some(v) => Sourced::new(v, Source::Env("CLEANUP_STALE_REPOS_ENABLED")),
            None => match raw.stale_repos_enabled {
                Some(v) => Sourced::new(v, Source::File(format!("worker.stale_repos_enabled in {f}"))),
                None => Sourced::new(false, Source::Default),
            },
        };
        let mut prefix = raw.previews_prefix.clone().unwrap_or_else(|| "previews/".into());
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(WorkerSettings {
            tasks,
            previews_store,
            previews_prefix: prefix,
            preview_bundle_ttl_hours: num(
                "PREVIEW_BUNDLE_TTL_HOURS",
                "worker.preview_bundle_ttl_hours",
                raw.preview_bundle_ttl_hours,
                24,
                "hours, 0 or more",
            )?,
            tmp_dir_ttl_minutes: num(
                "TMP_DIR_TTL_MINUTES",
                "worker.tmp_dir_ttl_minutes",
                raw.tmp_dir_ttl_minutes,
                60,
                "minutes, 0 or more",
            )?,
            log_retention_days: num(
                "LOG_RETENTION_DAYS",
                "worker.log_retention_days",
                raw.log_retention_days,
                7,
                "days, 0 or more",
            )?,
            log_compress_after_days: l.pick_opt(
                &Key { flag: None, env: Some("LOG_COMPRESS_AFTER_DAYS"), file: "worker.log_compress_after_days" },
                None,
                raw.log_compress_after_days,
                "days, 0 or more",
                &|d: &i64| *d >= 0,
            )?,
            stale_repo_days: num(
                "STALE_REPO_DAYS",
                "worker.stale_repo_days",
                raw.stale_repo_days,
                180,
                "days, 0 or more",
            )?,
            stale_repos_enabled,
            log_keep: raw.log_keep.clone().unwrap_or_else(|| vec!["**/access*".into(), "**/*audit*".into()]),
            previews: TableSpec::load(
                raw.preview_sessions.as_ref(),
                "worker.preview_sessions",
                "preview_sessions",
                &["id", "status", "updated_at", "expires_at", "bundle_path", "bundle_key"],
                f,
            )?,
            jobs: TableSpec::load(
                raw.background_jobs.as_ref(),
                "worker.background_jobs",
                "background_jobs",
                &["status", "working_dir"],
                f,
            )?,
            repos: TableSpec::load(
                raw.repos.as_ref(),
                "worker.repos",
                "repos",
                &["id", "active", "last_activity_at", "filesystem_path"],
                f,
            )?,
        })
    }

    fn rows(&self) -> Vec<(String, String, String)> {
        let r = |k: &str, v: String, s: &Source| (k.to_string(), v, s.to_string());
        let mut v = vec![
            ("worker.tasks".into(), self.tasks.join(","), "--tasks / [worker] tasks / default".into()),
            r(
                "worker.preview_bundle_ttl_hours",
                self.preview_bundle_ttl_hours.value.to_string(),
                &self.preview_bundle_ttl_hours.source,
            ),
            r(
                "worker.tmp_dir_ttl_minutes",
                self.tmp_dir_ttl_minutes.value.to_string(),
                &self.tmp_dir_ttl_minutes.source,
            ),
            r("worker.log_retention_days", self.log_retention_days.value.to_string(), &self.log_retention_days.source),
            match &self.log_compress_after_days {
                Some(d) => r("worker.log_compress_after_days", d.value.to_string(), &d.source),
                None => ("worker.log_compress_after_days".into(), "(off)".into(), "-".into()),
            },
            r("worker.stale_repo_days", self.stale_repo_days.value.to_string(), &self.stale_repo_days.source),
            r(
                "worker.stale_repos_enabled",
                self.stale_repos_enabled.value.to_string(),
                &self.stale_repos_enabled.source,
            ),
            ("worker.previews_prefix".into(), self.previews_prefix.clone(), "config or default".into()),
            ("worker.log_keep".into(), format!("{:?}", self.log_keep), "config or default".into()),
        ];
        match &self.previews_store {
            Some(s) => v.push(r("worker.previews_store", s.value.clone(), &s.source)),
            None => v.push(("worker.previews_store".into(), "(unset)".into(), "-".into())),
        }
        v
    }
}

/// Everything the tasks need while gathering.
struct Gather<'a> {
    db: &'a Db,
    s: &'a WorkerSettings,
    root: &'a LocalRoot,
    previews: Option<&'a NamedStore>,
    now: DateTime<Utc>,
    grace: Duration,
    protected: &'a [String],
    allow_empty_references: bool,
}

fn tagged(task: &str, items: Vec<Item>) -> Unit {
    let mut u = Unit::new(items);
    u.task = Some(task.to_string());
    u
}

/// The newest modification time and the total size of a tree (not following links).
fn tree_facts(path: &Path) -> (DateTime<Utc>, u64) {
    let mut newest = SystemTime::UNIX_EPOCH;
    let mut bytes = 0;
    for e in walkdir::WalkDir::new(path).follow_links(false).into_iter().filter_map(|e| e.ok()) {
        if let Ok(m) = e.metadata() {
            newest = newest.max(m.modified().unwrap_or(SystemTime::UNIX_EPOCH));
            if m.is_file() {
                bytes += m.len();
            }
        }
    }
    (DateTime::<Utc>::from(newest), bytes)
}

impl Gather<'_> {
    fn quiet_cutoff(&self, minutes: i64) -> DateTime<Utc> {
        self.now - Duration::minutes(minutes).max(self.grace)
    }

    /// tmp: abandoned directories under DATA_DIR/tmp/.
    async fn tmp(&self, p: &mut Plan) -> Result<()> {
        let jobs = &self.s.jobs;
        let (st, wd) = (jobs.col("status"), jobs.col("working_dir"));
        let mut q = self.db.sql();
        q.push("SELECT ").as_text(wd);
        q.push(format_args!(" FROM {} WHERE {st} IN ('pending', 'running') AND {wd} IS NOT NULL", jobs.table));
        let dirs = self
            .db
            .read(&q, |r| r.text_req(0))
            .await
            .map_err(|e| anyhow!("cannot read active jobs from {}: {e:#}", jobs.table))?;
        let mut active: Vec<String> = Vec::new();
        for d in dirs {
            match self.root.relativize(&d) {
                Ok(rel) => active.push(rel),
                Err(e) => tracing::warn!(target: "cleanup", "an active job's working_dir is not usable: {e}"),
            }
        }
        let cutoff = self.quiet_cutoff(self.s.tmp_dir_ttl_minutes.value);
        let tmp = self.root.path().join("tmp");
        let entries = match std::fs::read_dir(&tmp) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => bail!("cannot list {}: {e}", tmp.display()),
        };
        let mut names: Vec<_> = entries.filter_map(|e| e.ok()).collect();
        names.sort_by_key(|e| e.file_name());
        for e in names {
            p.scanned += 1;
            let Some(name) = e.file_name().to_str().map(String::from) else { continue };
            let rel = format!("tmp/{name}");
            let target = format!("data:{rel}");
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else { continue };
            if !meta.is_dir() && !meta.file_type().is_symlink() {
                p.kept.push(Kept {
                    kind: Kind::File,
                    target,
                    reason: "not a directory (the tmp task removes directories)".into(),
                });
                continue;
            }
            if let Some(job) = active.iter().find(|a| **a == rel || a.starts_with(&format!("{rel}/"))) {
                p.kept.push(Kept {
                    kind: Kind::Dir,
                    target,
                    reason: format!("working directory of a pending/running job ({job})"),
                });
                continue;
            }
            let (newest, bytes) = if meta.file_type().is_symlink() {
                (DateTime::<Utc>::from(meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)), 0)
            } else {
                tree_facts(&e.path())
            };
            if newest > cutoff {
                p.kept.push(Kept {
                    kind: Kind::Dir,
                    target,
                    reason: format!(
                        "modified {} (within {} minutes)",
                        newest.to_rfc3339(),
                        self.s.tmp_dir_ttl_minutes.value
                    ),
                });
                continue;
            }
            let what = if meta.file_type().is_symlink() { "symlink (removed as a link)" } else { "directory" };
            p.units.push(tagged(
                "tmp",
                vec![Item::new(
                    Op::DeleteDir { root: "data".into(), path: rel },
                    target,
                    format!(
                        "abandoned tmp {what}, last modified {} (TTL {} minutes), no pending/running job uses it",
                        newest.to_rfc3339(),
                        self.s.tmp_dir_ttl_minutes.value
                    ),
                    Some(bytes),
                )],
            ));
        }
        Ok(())
    }

    /// previews: bundles of finished sessions, then their references set to NULL.
    async fn previews(&self, p: &mut Plan) -> Result<()> {
        let t = &self.s.previews;
        let (id, st, up, ex, bp, bk) = (
            t.col("id"),
            t.col("status"),
            t.col("updated_at"),
            t.col("expires_at"),
            t.col("bundle_path"),
            t.col("bundle_key"),
        );
        let cutoff = self.now - self.grace;
        let rule = RowRule::PreviewCleanable {
            status_column: st.clone(),
            expires_column: ex.clone(),
            updated_column: up.clone(),
            cutoff,
        };
        let mut q = self.db.sql();
        q.push("SELECT ").as_text(id).push(", ").as_text(st).push(", ").as_text(bp).push(", ").as_text(bk);
        q.push(format_args!(" FROM {} WHERE ", t.table));
        crate::db::push_rule(&mut q, &rule, &t.table);
        q.push(format_args!(" AND ({bp} IS NOT NULL OR {bk} IS NOT NULL) ORDER BY {id}"));
        let sessions = self
            .db
            .read(&q, |r| Ok((r.text_req(0)?, r.text_req(1)?, r.text(2)?, r.text(3)?)))
            .await
            .map_err(|e| anyhow!("cannot read {}: {e:#}", t.table))?;
        for (key, status, path, bkey) in sessions {
            p.scanned += 1;
            let row_target = format!("{} {}={key}", t.table.as_str(), id.as_str());
            let reason = format!("preview {key} is {status} (or past expires_at + grace)");
            let mut items = Vec::new();
            let mut fresh = None;
            if let Some(path) = path.clone().filter(|s| !s.is_empty()) {
                let mut it = Item::new(
                    Op::DeleteDir { root: "data".into(), path: path.clone() },
                    format!("data:{path}"),
                    reason.clone(),
                    None,
                );
                match self.root.relativize(&path) {
                    Err(e) => it.refused = Some(e.to_string()),
                    Ok(rel) => {
                        it.op = Op::DeleteDir { root: "data".into(), path: rel.clone() };
                        it.target = format!("data:{rel}");
                        match self.root.stat(&rel) {
                            Err(e) => it.refused = Some(e.to_string()),
                            Ok(None) => {}
                            Ok(Some(_)) => {
                                let (newest, bytes) = tree_facts(&self.root.path().join(&rel));
                                it.bytes = Some(bytes);
                                if newest > cutoff {
                                    fresh = Some(format!(
                                        "its bundle was modified {} (within the grace period)",
                                        newest.to_rfc3339()
                                    ));
                                }
                                if is_protected(&rel, self.protected) {
                                    fresh = Some("its bundle is under a protected prefix".into());
                                }
                            }
                        }
                    }
                }
                items.push(it);
            }
            if let Some(k) = bkey.clone().filter(|s| !s.is_empty()) {
                let mut it = Item::new(
                    Op::DeleteObject { store: "previews".into(), key: k.clone() },
                    format!("previews:{k}"),
                    reason.clone(),
                    None,
                );
                match (self.previews, parse_key(&k)) {
                    (None, _) => {
                        it.refused = Some(
                            "bundle_key is set but no previews store is configured (OBJECT_STORAGE_BUCKET_PREVIEWS)"
                                .into(),
                        )
                    }
                    (_, Err(e)) => it.refused = Some(e.to_string()),
                    (Some(store), Ok(path)) => {
                        it.target = store.target(&k);
                        match store.store.head(&path).await {
                            Ok(m) => {
                                it.bytes = Some(m.size);
                                if m.last_modified > cutoff {
                                    fresh = Some(format!(
                                        "its object was modified {} (within the grace period)",
                                        m.last_modified.to_rfc3339()
                                    ));
                                }
                            }
                            Err(object_store::Error::NotFound { .. }) => {}
                            Err(e) => it.refused = Some(format!("cannot check {}: {e}", store.target(&k))),
                        }
                        if is_protected(&k, self.protected) {
                            fresh = Some("its object is under a protected prefix".into());
                        }
                    }
                }
                items.push(it);
            }
            if let Some(why) = fresh {
                p.kept.push(Kept { kind: Kind::Row, target: row_target, reason: why });
                continue;
            }
            let mut refs = Item::new(
                Op::NullColumns {
                    table: t.table.clone(),
                    key_column: id.clone(),
                    key: key.clone(),
                    columns: vec![bp.clone(), bk.clone()],
                    rule: Some(rule.clone()),
                },
                row_target,
                format!("{reason}: bundle_path and bundle_key set to NULL once the bundle is gone"),
                None,
            );
            // What `restore` needs to set the references back.
            refs.snapshot = Some(nulled_snapshot(id, &key, &[(bp, &path), (bk, &bkey)])?);
            items.push(refs);
            p.units.push(tagged("previews", items));
        }
        Ok(())
    }

    /// objects: orphaned preview objects older than the TTL.
    async fn objects(&self, p: &mut Plan) -> Result<()> {
        let Some(store) = self.previews else {
            tracing::info!(target: "cleanup", "objects: no previews store configured (OBJECT_STORAGE_BUCKET_PREVIEWS): skipped");
            return Ok(());
        };
        let t = &self.s.previews;
        let bk = t.col("bundle_key");
        let mut q = self.db.sql();
        q.push("SELECT ").as_text(bk).push(format_args!(" FROM {} WHERE {bk} IS NOT NULL", t.table));
        let refs: HashSet<String> = self
            .db
            .read(&q, |r| r.text_req(0))
            .await
            .map_err(|e| anyhow!("cannot read {}: {e:#}", t.table))?
            .into_iter()
            .collect();
        let cutoff = self.now - Duration::hours(self.s.preview_bundle_ttl_hours.value).max(self.grace);
        let prefix = object_store::path::Path::from(self.s.previews_prefix.trim_end_matches('/'));
        let mut listing = store.store.list(Some(&prefix));
        let mut referenced = 0u64;
        let start_units = p.units.len();
        while let Some(meta) =
            listing.try_next().await.map_err(|e| anyhow!("cannot list {}: {e}", store.target(prefix.as_ref())))?
        {
            p.scanned += 1;
            let key = meta.location.to_string();
            if refs.contains(&key) {
                referenced += 1;
                continue;
            }
            let target = store.target(&key);
            if is_protected(&key, self.protected) {
                p.kept.push(Kept { kind: Kind::Object, target, reason: "under a protected prefix".into() });
            } else if meta.last_modified > cutoff {
                p.kept.push(Kept {
                    kind: Kind::Object,
                    target,
                    reason: format!(
                        "unreferenced but younger than PREVIEW_BUNDLE_TTL_HOURS ({}h)",
                        self.s.preview_bundle_ttl_hours.value
                    ),
                });
            } else {
                p.units.push(tagged(
                    "objects",
                    vec![Item::new(
                        Op::DeleteObject { store: "previews".into(), key },
                        target,
                        format!("no preview session references it; last modified {}", meta.last_modified.to_rfc3339()),
                        Some(meta.size),
                    )],
                ));
            }
        }
        *p.kept_unlisted.entry(Kind::Object).or_default() += referenced;
        if refs.is_empty() && p.units.len() > start_units && !self.allow_empty_references {
            return Err(Fatal::guard(format!(
                "no preview session references any object, yet {} objects under {} would be deleted: refusing (SPEC safety rule 2); pass --allow-empty-references if that is right",
                p.units.len() - start_units,
                store.target(prefix.as_ref())
            ))
            .into());
        }
        Ok(())
    }

    /// logs: old files under DATA_DIR/logs/.
    fn logs(&self, p: &mut Plan) -> Result<()> {
        let keep = {
            let mut b = globset::GlobSetBuilder::new();
            for g in &self.s.log_keep {
                b.add(globset::Glob::new(g).map_err(|e| anyhow!("worker.log_keep: {g:?} is not a valid glob: {e}"))?);
            }
            b.build()?
        };
        let cutoff = self.now - Duration::days(self.s.log_retention_days.value).max(self.grace);
        let logs = self.root.path().join("logs");
        for e in walkdir::WalkDir::new(&logs).follow_links(false).sort_by_file_name().into_iter().filter_map(|e| e.ok())
        {
            if e.file_type().is_dir() {
                continue;
            }
            p.scanned += 1;
            let Ok(inside) = e.path().strip_prefix(&logs) else { continue };
            let Some(inside) = inside.to_str() else { continue };
            let rel = format!("logs/{inside}");
            if keep.is_match(inside) {
                p.kept.push(Kept {
                    kind: Kind::File,
                    target: format!("data:{rel}"),
                    reason: "matches worker.log_keep (not a debug log)".into(),
                });
                continue;
            }
            let Ok(m) = e.metadata() else { continue };
            let modified = DateTime::<Utc>::from(m.modified().unwrap_or(SystemTime::UNIX_EPOCH));
            if modified > cutoff {
                let compress =
                    self.s.log_compress_after_days.as_ref().map(|d| self.now - Duration::days(d.value).max(self.grace));
                match compress {
                    Some(c) if modified <= c && m.is_file() && !rel.ends_with(".gz") => p.units.push(tagged(
                        "logs",
                        vec![Item::new(
                            Op::CompressFile { root: "data".into(), path: rel.clone() },
                            format!("data:{rel}"),
                            format!(
                                "log last modified {}: compressed to {rel}.gz (deleted after {} days)",
                                modified.to_rfc3339(),
                                self.s.log_retention_days.value
                            ),
                            // Compression is not deletion: nothing is counted as reclaimed.
                            Some(0),
                        )],
                    )),
                    _ => *p.kept_unlisted.entry(Kind::File).or_default() += 1,
                }
                continue;
            }
            p.units.push(tagged(
                "logs",
                vec![Item::new(
                    Op::DeleteFile { root: "data".into(), path: rel.clone() },
                    format!("data:{rel}"),
                    format!(
                        "log last modified {} (older than {} days)",
                        modified.to_rfc3339(),
                        self.s.log_retention_days.value
                    ),
                    Some(if m.is_file() { m.len() } else { 0 }),
                )],
            ));
        }
        Ok(())
    }

    /// repos: directories of inactive repos, only when enabled.
    async fn repos(&self, p: &mut Plan) -> Result<()> {
        if !self.s.stale_repos_enabled.value {
            tracing::info!(target: "cleanup", "repos: stale repo deletion is off (CLEANUP_STALE_REPOS_ENABLED is not true): skipped");
            return Ok(());
        }
        let t = &self.s.repos;
        let (id, active, last, path) =
            (t.col("id"), t.col("active"), t.col("last_activity_at"), t.col("filesystem_path"));
        let cutoff = self.now - Duration::days(self.s.stale_repo_days.value);
        let rule = RowRule::InactiveSince { active_column: active.clone(), activity_column: last.clone(), cutoff };
        let mut q = self.db.sql();
        q.push("SELECT ").as_text(id).push(", ").as_text(path).push(format_args!(", {last} FROM {} WHERE ", t.table));
        crate::db::push_rule(&mut q, &rule, &t.table);
        q.push(format_args!(" AND {path} IS NOT NULL ORDER BY {id}"));
        let rows = self
            .db
            .read(&q, |r| Ok((r.text_req(0)?, r.text_req(1)?, r.time_req(2)?.to_rfc3339())))
            .await
            .map_err(|e| anyhow!("cannot read {}: {e:#}", t.table))?;
        for (key, fs_path, last_seen) in rows {
            p.scanned += 1;
            let mut it = Item::new(
                Op::DeleteDir { root: "data".into(), path: fs_path.clone() },
                format!("data:{fs_path}"),
                format!(
                    "repo {key} is inactive, last activity {last_seen} (more than {} days ago)",
                    self.s.stale_repo_days.value
                ),
                None,
            );
            match self.root.relativize(&fs_path) {
                Err(e) => it.refused = Some(e.to_string()),
                Ok(rel) if !rel.starts_with("repos/") => {
                    it.refused = Some(format!("{rel:?} is not under DATA_DIR/repos/: refused"))
                }
                Ok(rel) => {
                    it.op = Op::DeleteDir { root: "data".into(), path: rel.clone() };
                    it.target = format!("data:{rel}");
                    if let Ok(Some(_)) = self.root.stat(&rel) {
                        let (newest, bytes) = tree_facts(&self.root.path().join(&rel));
                        it.bytes = Some(bytes);
                        if newest > self.now - self.grace {
                            p.kept.push(Kept {
                                kind: Kind::Dir,
                                target: it.target,
                                reason: "modified within the grace period".into(),
                            });
                            continue;
                        }
                    }
                }
            }
            let mut u = tagged("repos", vec![it]);
            u.guard = Some(RowGuard { table: t.table.clone(), key_column: id.clone(), key, rule: rule.clone() });
            p.units.push(u);
        }
        Ok(())
    }
}

/// Per-task counts from the carried-out plan, for the report and the summary line.
fn task_counts(plan: &Plan) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for task in TASKS {
        let units: Vec<&Unit> = plan.units.iter().filter(|u| u.task.as_deref() == Some(task)).collect();
        let items = || units.iter().flat_map(|u| u.items.iter());
        let done = |i: &&Item| {
            matches!(i.outcome, Some(Outcome::Deleted) | Some(Outcome::Missing) | Some(Outcome::WouldDelete))
        };
        m.insert(
            task.into(),
            serde_json::json!({
                "candidates": units.len(),
                "deleted": units.iter().filter(|u| u.items.iter().all(|i| matches!(i.outcome, Some(Outcome::Deleted) | Some(Outcome::Missing)))).count(),
                "failed": units.iter().filter(|u| u.items.iter().any(|i| i.outcome == Some(Outcome::Failed))).count(),
                "objects_deleted": items().filter(|i| i.kind == Kind::Object).filter(done).count(),
                "bytes": items().filter(done).filter_map(|i| i.bytes).sum::<u64>(),
            }),
        );
    }
    serde_json::Value::Object(m)
}

pub async fn run(ctx: &Ctx, args: &WorkerOnceArgs) -> Result<Exit> {
    let s = WorkerSettings::load(ctx, args)?;
    let rows = s.rows();
    if ctx.global.show_config {
        print_config(ctx, rows);
        return Ok(Exit::Success);
    }
    let mut ctx_settings = ctx.settings.clone();
    if !ctx.settings.cleanup_enabled.value && !ctx_settings.dry_run.value {
        tracing::warn!(target: "cleanup", "CLEANUP_ENABLED=false: this cycle is a dry run; nothing will be deleted");
        ctx_settings.dry_run = Sourced::new(true, Source::Env("CLEANUP_ENABLED"));
    }
    let ctx = &Ctx {
        global: ctx.global.clone(),
        settings: ctx_settings,
        backup: ctx.backup.clone(),
        confirm: false,
        reviewed_plan: false,
    };
    let data = ctx.settings.require_data_dir()?.to_path_buf();
    let root = LocalRoot::open("data", &data).map_err(|e| anyhow!("DATA_DIR: {e}"))?;
    let db = super::connect(ctx).await?;
    let mut res = Resources { db: Some(db.clone()), ..Default::default() };
    res.roots.insert("data".into(), root.clone());
    let previews = match &s.previews_store {
        Some(url) => {
            let st = NamedStore::open(&url.value, &ctx.settings.object_storage)?;
            res.stores.insert("previews".into(), st.clone());
            Some(st)
        }
        None => None,
    };
    tracing::info!(target: "cleanup", "Starting cleanup cycle (dry_run={}, tasks={})", ctx.settings.dry_run.value, s.tasks.join(","));
    let started = std::time::Instant::now();
    let g = Gather {
        db: &db,
        s: &s,
        root: &root,
        previews: previews.as_ref(),
        now: ctx.settings.now.value,
        grace: Duration::minutes(ctx.settings.grace_minutes.value),
        protected: &ctx.settings.protected_prefixes.value,
        allow_empty_references: args.allow_empty_references,
    };
    let Finished { exit, mut report, plan } = run_policy(ctx, COMMAND, &rows, Some(db.clone()), &res, || async {
        let mut p = Plan::new(COMMAND, g.now);
        p.batch_size = 500;
        for task in &s.tasks {
            match *task {
                "tmp" => g.tmp(&mut p).await?,
                "previews" => g.previews(&mut p).await?,
                "objects" => g.objects(&mut p).await?,
                "logs" => g.logs(&mut p)?,
                "repos" => g.repos(&mut p).await?,
                _ => unreachable!("tasks are validated"),
            }
        }
        p.fields.insert("tasks_run".into(), s.tasks.join(",").into());
        Ok(p)
    })
    .await?;
    let counts = task_counts(&plan);
    let n = |t: &str, k: &str| counts[t][k].as_u64().unwrap_or(0);
    let objects_deleted = n("previews", "objects_deleted") + n("objects", "objects_deleted");
    let reclaimed = TASKS.iter().map(|t| n(t, "bytes")).sum::<u64>() as f64 / (1024.0 * 1024.0);
    tracing::info!(
        target: "cleanup",
        "Cleanup cycle completed: previews_deleted={} tmp_deleted={} objects_deleted={objects_deleted} logs_deleted={} repos_deleted={} reclaimed_mb={reclaimed:.1}",
        n("previews", "deleted"),
        n("tmp", "deleted"),
        n("logs", "deleted"),
        n("repos", "deleted"),
    );
    report.fields.insert("tasks".into(), counts);
    if let Some(path) = &ctx.global.metrics_file {
        if !report.dry_run {
            write_metrics(&db, path, &report, started.elapsed().as_secs_f64()).await?;
        }
    }
    print_report(ctx, &report, &plan)?;
    db.close().await;
    Ok(exit)
}

/// Seed 004 §7.2's metrics, counters as totals from the audit (so they survive restarts and
/// add up across workers), written atomically for node_exporter's textfile collector.
async fn write_metrics(db: &Db, path: &Path, report: &Report, duration: f64) -> Result<()> {
    use prometheus_client::encoding::text::encode;
    use prometheus_client::metrics::counter::ConstCounter;
    use prometheus_client::metrics::gauge::ConstGauge;
    use prometheus_client::registry::Registry;
    let total = |policy: &'static str, kind: &'static str| async move {
        let mut q = db.sql();
        q.push("SELECT count(*) FROM cleanup_audit WHERE policy LIKE ").bind(policy).push(" AND kind = ").bind(kind);
        q.push(" AND outcome IN ('deleted', 'missing')");
        let r = db.fetch_one_int(&q).await;
        r.map(|n| n.max(0) as u64).map_err(|e| anyhow!("cannot read totals for the metrics file: {e:#}"))
    };
    let previews = total("worker-once/previews", "row").await?;
    let tmp = total("worker-once/tmp", "dir").await?;
    let objects = total("worker-once/%", "object").await?;
    let mut reg = Registry::default();
    reg.register(
        "cleanup_previews_deleted",
        "Preview sessions whose bundles were deleted (all runs)",
        ConstCounter::new(previews),
    );
    reg.register("cleanup_tmp_dirs_deleted", "Abandoned tmp directories deleted (all runs)", ConstCounter::new(tmp));
    reg.register("cleanup_objects_deleted", "Preview objects deleted (all runs)", ConstCounter::new(objects));
    reg.register(
        "cleanup_last_run_timestamp",
        "Unix time the last cleanup cycle finished",
        ConstGauge::new(report.finished_at.timestamp()),
    );
    reg.register("cleanup_last_run_duration_seconds", "Duration of the last cleanup cycle", ConstGauge::new(duration));
    reg.register(
        "cleanup_last_run_failed_items",
        "Items that failed in the last cleanup cycle",
        ConstGauge::new(report.totals.failed as i64),
    );
    let mut text = String::new();
    encode(&mut text, &reg)?;
    let tmp_path = path.with_extension("prom.tmp");
    std::fs::write(&tmp_path, text).map_err(|e| anyhow!("cannot write {}: {e}", tmp_path.display()))?;
    std::fs::rename(&tmp_path, path).map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

/// The snapshot of a row whose columns are set to NULL: its key and the values it loses, in
/// the form `restore` sets back (`{"key_column", "key", "columns_set_to_null": {…}}`).
fn nulled_snapshot(
    key_column: &crate::ident::Ident,
    key: &str,
    columns: &[(&crate::ident::Ident, &Option<String>)],
) -> Result<Box<serde_json::value::RawValue>> {
    let values: serde_json::Map<String, serde_json::Value> =
        columns.iter().map(|(c, v)| (c.as_str().to_string(), serde_json::json!(v))).collect();
    let v = serde_json::json!({"key_column": key_column.as_str(), "key": key, "columns_set_to_null": values});
    Ok(serde_json::value::to_raw_value(&v)?)
}
