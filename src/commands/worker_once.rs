//! `worker-once` (seed 004): one cycle of the cleanup worker over `DATA_DIR` and the previews
//! bucket, in the seed's order (§8.2): tmp, previews, objects, logs, repos.
//!
//! Every task only gathers and decides; the units of all tasks go into one plan (each unit
//! tagged with its task) that the executor carries out. Nothing is kept between runs outside the
//! database, so several workers and restarts are safe.

use crate::cli::WorkerOnceArgs;
use crate::config::{Key, ProcessEnv, Source, Sourced, TableSpec};
use crate::db::Db;
use crate::exit_codes::{Exit, Fatal};
use crate::plan::Plan;
use crate::policy::worker_once::{
    self as policy, BundleDir, BundleObject, EntryKind, Listed, LogFile, PreviewTable, Repo, RepoTable, Rules, Session,
    TmpEntry, Tree, COMMAND, TASKS,
};
use crate::run::{run_policy, Channel, Ctx, Finished, Ran};
use crate::store::local::LocalRoot;
use crate::store::object::{parse_key, NamedStore};
use crate::store::Resources;
use anyhow::{anyhow, bail, Result};
use chrono::{DateTime, Duration, Utc};
use futures::stream::TryStreamExt;
use std::collections::HashSet;
use std::path::Path;
use std::time::SystemTime;

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

    /// The policy's inputs, as of the run's `now`.
    fn rules(&self, ctx: &Ctx) -> Result<Rules> {
        let mut keep = globset::GlobSetBuilder::new();
        for g in &self.log_keep {
            keep.add(globset::Glob::new(g).map_err(|e| anyhow!("worker.log_keep: {g:?} is not a valid glob: {e}"))?);
        }
        let (p, r) = (&self.previews, &self.repos);
        Ok(Rules {
            now: ctx.settings.now.value,
            grace: Duration::minutes(ctx.settings.grace_minutes.value),
            protected: ctx.settings.protected_prefixes.value.clone(),
            tmp_dir_ttl_minutes: self.tmp_dir_ttl_minutes.value,
            preview_bundle_ttl_hours: self.preview_bundle_ttl_hours.value,
            log_retention_days: self.log_retention_days.value,
            log_compress_after_days: self.log_compress_after_days.as_ref().map(|d| d.value),
            log_keep: keep.build()?,
            stale_repo_days: self.stale_repo_days.value,
            previews: PreviewTable {
                table: p.table.clone(),
                id: p.col("id").clone(),
                status: p.col("status").clone(),
                updated_at: p.col("updated_at").clone(),
                expires_at: p.col("expires_at").clone(),
                bundle_path: p.col("bundle_path").clone(),
                bundle_key: p.col("bundle_key").clone(),
            },
            repos: RepoTable {
                table: r.table.clone(),
                id: r.col("id").clone(),
                active: r.col("active").clone(),
                last_activity_at: r.col("last_activity_at").clone(),
            },
        })
    }

    pub fn rows(&self) -> Vec<(String, String, String)> {
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
    rules: &'a Rules,
    allow_empty_references: bool,
}

/// The newest modification time and the total size of a tree (not following links).
fn tree_facts(path: &Path) -> Tree {
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
    Tree { newest: DateTime::<Utc>::from(newest), bytes }
}

/// A name as text: escaped when it is not UTF-8 (`names`), so it can still be deleted, audited
/// and restored exactly.
fn name_of(p: &Path) -> Result<String, String> {
    Ok(crate::names::encode_rel(p))
}

impl Gather<'_> {
    /// tmp: the entries of DATA_DIR/tmp/ and the working directories of active jobs.
    async fn tmp(&self, p: &mut Plan) -> Result<()> {
        let jobs = &self.s.jobs;
        let (st, wd) = (jobs.col("status"), jobs.col("working_dir"));
        let mut q = self.db.sql();
        q.push("SELECT ").as_text(&wd);
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
        let tmp = self.root.path().join("tmp");
        let entries = match std::fs::read_dir(&tmp) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => bail!("cannot list {}: {e}", tmp.display()),
        };
        let mut names: Vec<_> = entries.filter_map(|e| e.ok()).collect();
        names.sort_by_key(|e| e.file_name());
        let mut facts = Vec::with_capacity(names.len());
        for e in names {
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else { continue };
            let kind = if meta.file_type().is_symlink() {
                EntryKind::Symlink
            } else if meta.is_dir() {
                EntryKind::Dir
            } else {
                EntryKind::Other
            };
            let tree = match kind {
                EntryKind::Dir => tree_facts(&e.path()),
                _ => {
                    Tree { newest: DateTime::<Utc>::from(meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)), bytes: 0 }
                }
            };
            facts.push(TmpEntry { name: name_of(Path::new(&e.file_name())), kind, tree });
        }
        policy::tmp(p, facts, &active, self.rules);
        Ok(())
    }

    /// previews: finished sessions with bundles, each bundle's directory and object checked.
    async fn previews(&self, p: &mut Plan) -> Result<()> {
        let t = &self.rules.previews;
        let (id, st, bp, bk) = (&t.id, &t.status, &t.bundle_path, &t.bundle_key);
        let mut q = self.db.sql();
        q.push("SELECT ").as_text(id).push(", ").as_text(st).push(", ").as_text(bp).push(", ").as_text(bk);
        q.push(format_args!(" FROM {} WHERE ", t.table));
        crate::db::push_rule(&mut q, &self.rules.preview_rule(), &t.table);
        q.push(format_args!(" AND ({bp} IS NOT NULL OR {bk} IS NOT NULL) ORDER BY {}.{id}", t.table));
        // The key must read; any other column that does not is that session's failure alone.
        let rows = self
            .db
            .read(&q, |r| {
                let rest = (|| Ok::<_, crate::db::DecodeError>((r.text_req(1)?, r.text(2)?, r.text(3)?)))();
                Ok((r.text_req(0)?, rest))
            })
            .await
            .map_err(|e| anyhow!("cannot read {}: {e:#}", t.table))?;
        let mut sessions = Vec::with_capacity(rows.len());
        for (key, rest) in rows {
            let (status, path, bkey) = match rest {
                Ok(r) => r,
                Err(e) => {
                    let unreadable = Some(format!("{} {}={key}: cannot read {e}", t.table.as_str(), id.as_str()));
                    sessions.push(Session {
                        key,
                        status: String::new(),
                        bundle_path: None,
                        bundle_key: None,
                        unreadable,
                    });
                    continue;
                }
            };
            let bundle_path = match path.filter(|s| !s.is_empty()) {
                None => None,
                Some(raw) => {
                    let dir = match self.root.relativize(&raw) {
                        Err(e) => BundleDir::Refused { path: raw.clone(), why: e.to_string() },
                        Ok(rel) => match self.root.stat(&rel) {
                            Err(e) => BundleDir::Refused { path: rel, why: e.to_string() },
                            Ok(None) => BundleDir::Missing { rel },
                            Ok(Some(_)) => {
                                let tree = tree_facts(&self.root.path_of(&rel));
                                BundleDir::Present { rel, tree }
                            }
                        },
                    };
                    Some((raw, dir))
                }
            };
            let bundle_key = match bkey.filter(|s| !s.is_empty()) {
                None => None,
                Some(k) => {
                    let obj = match (self.previews, parse_key(&k)) {
                        (None, _) => BundleObject::Refused {
                            target: format!("previews:{k}"),
                            why:
                                "bundle_key is set but no previews store is configured (OBJECT_STORAGE_BUCKET_PREVIEWS)"
                                    .into(),
                        },
                        (_, Err(e)) => BundleObject::Refused { target: format!("previews:{k}"), why: e.to_string() },
                        (Some(store), Ok(path)) => {
                            let target = store.target(&k);
                            match store.store.head(&path).await {
                                Ok(m) => BundleObject::Present { target, size: m.size, modified: m.last_modified },
                                Err(object_store::Error::NotFound { .. }) => BundleObject::Missing { target },
                                Err(e) => {
                                    let why = format!("cannot check {target}: {e}");
                                    BundleObject::Refused { target, why }
                                }
                            }
                        }
                    };
                    Some((k, obj))
                }
            };
            sessions.push(Session { key, status, bundle_path, bundle_key, unreadable: None });
        }
        policy::previews(p, sessions, self.rules);
        Ok(())
    }

    /// objects: the previews prefix listed as a stream, against the keys sessions reference.
    async fn objects(&self, p: &mut Plan) -> Result<()> {
        let Some(store) = self.previews else {
            tracing::info!(target: "cleanup", "objects: no previews store configured (OBJECT_STORAGE_BUCKET_PREVIEWS): skipped");
            return Ok(());
        };
        let t = &self.rules.previews;
        let bk = &t.bundle_key;
        let mut q = self.db.sql();
        q.push("SELECT ").as_text(bk).push(format_args!(" FROM {} WHERE {bk} IS NOT NULL", t.table));
        let refs: HashSet<String> = self
            .db
            .read(&q, |r| r.text_req(0))
            .await
            .map_err(|e| anyhow!("cannot read {}: {e:#}", t.table))?
            .into_iter()
            .collect();
        let prefix = object_store::path::Path::from(self.s.previews_prefix.trim_end_matches('/'));
        let mut listing = store.store.list(Some(&prefix));
        let mut deletions = 0u64;
        while let Some(meta) =
            listing.try_next().await.map_err(|e| anyhow!("cannot list {}: {e}", store.target(prefix.as_ref())))?
        {
            let key = meta.location.to_string();
            let o = Listed { target: store.target(&key), key, size: meta.size, modified: meta.last_modified };
            deletions += policy::object(p, o, &refs, self.rules) as u64;
        }
        if refs.is_empty() && deletions > 0 && !self.allow_empty_references {
            return Err(Fatal::guard(format!(
                "no preview session references any object, yet {deletions} objects under {} would be deleted: refusing (SPEC safety rule 2); pass --allow-empty-references if that is right",
                store.target(prefix.as_ref())
            ))
            .into());
        }
        Ok(())
    }

    /// logs: the files under DATA_DIR/logs/, walked in order without following links, on a
    /// thread of its own a few thousand files ahead of the policy (`gather::ahead`).
    fn logs(&self, p: &mut Plan) {
        let logs = self.root.path().join("logs");
        let files = walkdir::WalkDir::new(logs.clone())
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| !e.file_type().is_dir())
            .filter_map(move |e| {
                let inside = name_of(e.path().strip_prefix(&logs).ok()?);
                let m = e.metadata().ok()?;
                Some(LogFile {
                    inside,
                    modified: DateTime::<Utc>::from(m.modified().unwrap_or(SystemTime::UNIX_EPOCH)),
                    is_file: m.is_file(),
                    bytes: m.len(),
                })
            });
        policy::logs(p, crate::gather::ahead(files), self.rules);
    }

    /// repos: inactive repos from the database, each directory checked.
    async fn repos(&self, p: &mut Plan) -> Result<()> {
        if !self.s.stale_repos_enabled.value {
            tracing::info!(target: "cleanup", "repos: stale repo deletion is off (CLEANUP_STALE_REPOS_ENABLED is not true): skipped");
            return Ok(());
        }
        let t = &self.s.repos;
        let (id, last, path) = (t.col("id"), t.col("last_activity_at"), t.col("filesystem_path"));
        let mut q = self.db.sql();
        q.push("SELECT ").as_text(&id).push(", ").as_text(&path).push(format_args!(", {last} FROM {} WHERE ", t.table));
        crate::db::push_rule(&mut q, &self.rules.repo_rule(), &t.table);
        q.push(format_args!(" AND {path} IS NOT NULL ORDER BY {}.{id}", t.table));
        let rows = self
            .db
            .read(&q, |r| {
                let rest = (|| Ok::<_, crate::db::DecodeError>((r.text_req(1)?, r.time_req(2)?)))();
                Ok((r.text_req(0)?, rest))
            })
            .await
            .map_err(|e| anyhow!("cannot read {}: {e:#}", t.table))?;
        let table = t.table.as_str().to_string();
        let repos = rows
            .into_iter()
            .map(|(key, rest)| {
                // A row whose path or time does not read is that repo's failure alone.
                let (path, last_activity, rel) = match rest {
                    Ok((path, at)) => {
                        let rel = self.root.relativize(&path).map_err(|e| e.to_string());
                        (path, at, rel)
                    }
                    Err(e) => (String::new(), self.rules.now, Err(format!("{table} id={key}: cannot read {e}"))),
                };
                let tree = match &rel {
                    Ok(rel) if matches!(self.root.stat(rel), Ok(Some(_))) => Some(tree_facts(&self.root.path_of(rel))),
                    _ => None,
                };
                Repo { key, path, last_activity, rel, tree }
            })
            .collect();
        policy::repos(p, repos, self.rules);
        Ok(())
    }
}

/// Per-task counts from the carried-out plan, for the report and the summary line.
fn task_counts(report: &crate::report::Report) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for task in TASKS {
        // Really deleted (or already gone), and what a dry run would delete: counted apart, so
        // that no count mixes the two.
        let c = report.by_task.get(task).cloned().unwrap_or_default();
        m.insert(
            task.into(),
            serde_json::json!({
                "candidates": c.units,
                "deleted": c.units_deleted,
                "would_delete": c.units_would_delete,
                "failed": c.units_failed,
                "objects_deleted": c.objects_deleted,
                "objects_would_delete": c.objects_would_delete,
                "bytes": c.bytes_deleted,
                "bytes_would_reclaim": c.bytes_would_delete,
            }),
        );
    }
    serde_json::Value::Object(m)
}

pub async fn run(ctx: &Ctx, args: &WorkerOnceArgs, chan: &Channel) -> Result<Ran> {
    let s = WorkerSettings::load(ctx, args)?;
    let rows = s.rows();
    if ctx.global.show_config {
        ctx.print_config(rows);
        return Ok(Ran::Done(Exit::Success));
    }
    let mut dry_run = ctx.settings.dry_run.value;
    if !ctx.settings.cleanup_enabled.value && !dry_run {
        tracing::warn!(target: "cleanup", "CLEANUP_ENABLED=false: this cycle is a dry run; nothing will be deleted");
        dry_run = true;
    }
    let data = ctx.settings.require_data_dir()?.to_path_buf();
    let root = LocalRoot::open("data", &data).map_err(|e| anyhow!("DATA_DIR: {e}"))?;
    let db = ctx.connect().await?;
    if !dry_run && crate::switches::is_on(&db, crate::switches::WORKER_DRY_RUN).await? {
        tracing::warn!(target: "cleanup", "the dashboard's dry-run toggle is on (sweep_settings worker.dry_run): this cycle is a dry run; nothing will be deleted");
        dry_run = true;
    }
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
    tracing::info!(target: "cleanup", "Starting cleanup cycle (dry_run={dry_run}, tasks={})", s.tasks.join(","));
    let rules = s.rules(ctx)?;
    let g = Gather {
        db: &db,
        s: &s,
        root: &root,
        previews: previews.as_ref(),
        rules: &rules,
        allow_empty_references: args.allow_empty_references,
    };
    let mut spec = ctx.spec(COMMAND, &rows, Some(db.clone()), &res);
    spec.dry_run = dry_run;
    let Finished { exit, mut report, plan } = run_policy(ctx, spec, chan, || async {
        let mut p = Plan::new(COMMAND, rules.now);
        // Two audit commits a batch (its intent, then its outcomes), one SQLite writer at a
        // time: at 500 items a batch those commits were the run's critical path (measured:
        // 2,000 takes 15-20% off the run, 5,000 gains nothing more and holds more memory).
        p.batch_size = 2000;
        for task in &s.tasks {
            match *task {
                "tmp" => g.tmp(&mut p).await?,
                "previews" => g.previews(&mut p).await?,
                "objects" => g.objects(&mut p).await?,
                "logs" => g.logs(&mut p),
                "repos" => g.repos(&mut p).await?,
                _ => unreachable!("tasks are validated"),
            }
        }
        p.fields.insert("tasks_run".into(), s.tasks.join(",").into());
        Ok(p)
    })
    .await?;
    let counts = task_counts(&report);
    let n = |t: &str, k: &str| counts[t][k].as_u64().unwrap_or(0);
    // The seed's closing line; a dry run says what it would delete, in the same words for
    // every count.
    let (del, obj, b, verb) = if report.dry_run {
        ("would_delete", "objects_would_delete", "bytes_would_reclaim", "would_delete")
    } else {
        ("deleted", "objects_deleted", "bytes", "deleted")
    };
    let objects = n("previews", obj) + n("objects", obj);
    let mb = TASKS.iter().map(|t| n(t, b)).sum::<u64>() as f64 / (1024.0 * 1024.0);
    let reclaimed = if report.dry_run { "would_reclaim_mb" } else { "reclaimed_mb" };
    tracing::info!(
        target: "cleanup",
        "Cleanup cycle completed{}: previews_{verb}={} tmp_{verb}={} objects_{verb}={objects} logs_{verb}={} repos_{verb}={} {reclaimed}={mb:.1}",
        if report.dry_run { " (dry run: nothing deleted)" } else { "" },
        n("previews", del),
        n("tmp", del),
        n("logs", del),
        n("repos", del),
    );
    report.fields.insert("tasks".into(), counts);
    db.close().await;
    Ok(Ran::Run(Box::new(Finished { exit, report, plan })))
}
