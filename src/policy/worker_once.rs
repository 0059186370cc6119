//! `worker-once` (seed 004), the decisions of one cleanup cycle, task by task in the seed's
//! order (§8.2): abandoned tmp directories, expired previews (bundle directory and object,
//! then their references set to NULL), orphaned preview objects, old logs (optionally gzipped
//! first), stale repos. Each unit is tagged with its task; the audit's policy becomes
//! `worker-once/<task>`.

use super::is_protected;
use crate::ident::Ident;
use crate::plan::{Item, Kind, Op, Plan, RowGuard, RowRule, Unit};
use chrono::{DateTime, Duration, Utc};
use std::collections::HashSet;

pub const COMMAND: &str = "worker-once";
pub const TASKS: [&str; 5] = ["tmp", "previews", "objects", "logs", "repos"];

/// The fixed inputs of a cycle.
pub struct Rules {
    pub now: DateTime<Utc>,
    pub grace: Duration,
    pub protected: Vec<String>,
    pub tmp_dir_ttl_minutes: i64,
    pub preview_bundle_ttl_hours: i64,
    pub log_retention_days: i64,
    /// Seed 004's option B: gzip logs older than this many days, within retention.
    pub log_compress_after_days: Option<i64>,
    /// Logs that are never debug logs (access, audit): kept.
    pub log_keep: globset::GlobSet,
    pub stale_repo_days: i64,
    pub previews: PreviewTable,
    pub repos: RepoTable,
}

/// The preview sessions' table and the columns a plan names.
#[derive(Debug, Clone)]
pub struct PreviewTable {
    pub table: Ident,
    pub id: Ident,
    pub status: Ident,
    pub updated_at: Ident,
    pub expires_at: Ident,
    pub bundle_path: Ident,
    pub bundle_key: Ident,
}

/// The repos' table and the columns a plan names.
#[derive(Debug, Clone)]
pub struct RepoTable {
    pub table: Ident,
    pub id: Ident,
    pub active: Ident,
    pub last_activity_at: Ident,
}

impl Rules {
    fn quiet_cutoff(&self, minutes: i64) -> DateTime<Utc> {
        self.now - Duration::minutes(minutes).max(self.grace)
    }

    /// The rule a preview session must still match when its references are cleared.
    pub fn preview_rule(&self) -> RowRule {
        let t = &self.previews;
        RowRule::PreviewCleanable {
            status_column: t.status.clone(),
            expires_column: t.expires_at.clone(),
            updated_column: t.updated_at.clone(),
            cutoff: self.now - self.grace,
        }
    }

    /// The rule a repo must still match when its directory is deleted.
    pub fn repo_rule(&self) -> RowRule {
        RowRule::InactiveSince {
            active_column: self.repos.active.clone(),
            activity_column: self.repos.last_activity_at.clone(),
            cutoff: self.now - Duration::days(self.stale_repo_days),
        }
    }
}

fn tagged(task: &str, items: Vec<Item>) -> Unit {
    let mut u = Unit::new(items);
    u.task = Some(task.to_string());
    u
}

/// What is in a directory tree: its newest modification time and total size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tree {
    pub newest: DateTime<Utc>,
    pub bytes: u64,
}

/// An entry of DATA_DIR/tmp/.
#[derive(Debug, Clone)]
pub struct TmpEntry {
    /// Its name; `Err` holds the name shown lossily when it is not UTF-8.
    pub name: Result<String, String>,
    pub kind: EntryKind,
    /// For a directory its tree; for a symlink the link's own time and no bytes.
    pub tree: Tree,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    Symlink,
    Other,
}

/// tmp: abandoned directories (and links) under DATA_DIR/tmp/. `active` are the working
/// directories of pending/running jobs, relative to DATA_DIR.
pub fn tmp(p: &mut Plan, entries: Vec<TmpEntry>, active: &[String], r: &Rules) {
    let cutoff = r.quiet_cutoff(r.tmp_dir_ttl_minutes);
    for e in entries {
        p.scanned += 1;
        let name = match e.name {
            Ok(n) => n,
            Err(shown) => {
                p.keep(Kind::Dir, format!("data:tmp/{shown}"), "its name is not valid UTF-8: left alone");
                continue;
            }
        };
        let rel = format!("tmp/{name}");
        let target = format!("data:{rel}");
        if e.kind == EntryKind::Other {
            p.keep(Kind::File, target, "not a directory (the tmp task removes directories)");
            continue;
        }
        if let Some(job) = active.iter().find(|a| **a == rel || a.starts_with(&format!("{rel}/"))) {
            p.keep(Kind::Dir, target, format!("working directory of a pending/running job ({job})"));
            continue;
        }
        if e.tree.newest > cutoff {
            p.keep(
                Kind::Dir,
                target,
                format!("modified {} (within {} minutes)", e.tree.newest.to_rfc3339(), r.tmp_dir_ttl_minutes),
            );
            continue;
        }
        let what = if e.kind == EntryKind::Symlink { "symlink (removed as a link)" } else { "directory" };
        p.units.push(tagged(
            "tmp",
            vec![Item::new(
                Op::DeleteDir { root: "data".into(), path: rel },
                target,
                format!(
                    "abandoned tmp {what}, last modified {} (TTL {} minutes), no pending/running job uses it",
                    e.tree.newest.to_rfc3339(),
                    r.tmp_dir_ttl_minutes
                ),
                Some(e.tree.bytes),
            )],
        ));
    }
}

/// A preview session the database says is finished, with what is known of its bundle.
#[derive(Debug, Clone)]
pub struct Session {
    pub key: String,
    pub status: String,
    /// `bundle_path` as stored, and its facts.
    pub bundle_path: Option<(String, BundleDir)>,
    /// `bundle_key` as stored, and its facts.
    pub bundle_key: Option<(String, BundleObject)>,
    /// Why the row could not be read (a column that does not decode): one failed item.
    pub unreadable: Option<String>,
}

/// A bundle directory under DATA_DIR.
#[derive(Debug, Clone, PartialEq)]
pub enum BundleDir {
    /// The path leaves DATA_DIR or cannot be checked (`path` relative to DATA_DIR when known).
    Refused {
        path: String,
        why: String,
    },
    Missing {
        rel: String,
    },
    Present {
        rel: String,
        tree: Tree,
    },
}

/// A bundle object in the previews store.
#[derive(Debug, Clone, PartialEq)]
pub enum BundleObject {
    /// No store, a bad key, or it cannot be checked.
    Refused {
        target: String,
        why: String,
    },
    Missing {
        target: String,
    },
    Present {
        target: String,
        size: u64,
        modified: DateTime<Utc>,
    },
}

/// previews: the bundles of finished sessions (directory and object), then the session's
/// references set to NULL, in one unit re-checked by the session's rule.
pub fn previews(p: &mut Plan, sessions: Vec<Session>, r: &Rules) {
    let t = &r.previews;
    let cutoff = r.now - r.grace;
    let rule = r.preview_rule();
    for s in sessions {
        p.scanned += 1;
        let row_target = format!("{} {}={}", t.table.as_str(), t.id.as_str(), s.key);
        if let Some(why) = &s.unreadable {
            let op = Op::NullColumns {
                table: t.table.clone(),
                key_column: t.id.clone(),
                key: s.key.clone(),
                columns: vec![t.bundle_path.clone(), t.bundle_key.clone()],
                rule: Some(rule.clone()),
            };
            let mut it = Item::new(op, row_target, "a finished preview session", None);
            it.refused = Some(why.clone());
            p.units.push(tagged("previews", vec![it]));
            continue;
        }
        let reason = format!("preview {} is {} (or past expires_at + grace)", s.key, s.status);
        let mut items = Vec::new();
        let mut fresh = None;
        if let Some((_, dir)) = &s.bundle_path {
            let (path, refused, bytes) = match dir {
                BundleDir::Refused { path, why } => (path.clone(), Some(why.clone()), None),
                BundleDir::Missing { rel } => (rel.clone(), None, None),
                BundleDir::Present { rel, tree } => {
                    if tree.newest > cutoff {
                        fresh = Some(format!(
                            "its bundle was modified {} (within the grace period)",
                            tree.newest.to_rfc3339()
                        ));
                    }
                    if is_protected(rel, &r.protected) {
                        fresh = Some("its bundle is under a protected prefix".into());
                    }
                    (rel.clone(), None, Some(tree.bytes))
                }
            };
            let mut it = Item::new(
                Op::DeleteDir { root: "data".into(), path: path.clone() },
                format!("data:{path}"),
                reason.clone(),
                bytes,
            );
            it.refused = refused;
            items.push(it);
        }
        if let Some((key, obj)) = &s.bundle_key {
            let (target, refused, bytes) = match obj {
                BundleObject::Refused { target, why } => (target.clone(), Some(why.clone()), None),
                BundleObject::Missing { target } => (target.clone(), None, None),
                BundleObject::Present { target, size, modified } => {
                    if *modified > cutoff {
                        fresh = Some(format!(
                            "its object was modified {} (within the grace period)",
                            modified.to_rfc3339()
                        ));
                    }
                    (target.clone(), None, Some(*size))
                }
            };
            if !matches!(obj, BundleObject::Refused { .. }) && is_protected(key, &r.protected) {
                fresh = Some("its object is under a protected prefix".into());
            }
            let mut it = Item::new(
                Op::DeleteObject { store: "previews".into(), key: key.clone() },
                target,
                reason.clone(),
                bytes,
            );
            it.refused = refused;
            items.push(it);
        }
        if let Some(why) = fresh {
            p.keep(Kind::Row, row_target, why);
            continue;
        }
        let mut refs = Item::new(
            Op::NullColumns {
                table: t.table.clone(),
                key_column: t.id.clone(),
                key: s.key.clone(),
                columns: vec![t.bundle_path.clone(), t.bundle_key.clone()],
                rule: Some(rule.clone()),
            },
            row_target,
            format!("{reason}: bundle_path and bundle_key set to NULL once the bundle is gone"),
            None,
        );
        // What `restore` needs to set the references back.
        let stored_path = s.bundle_path.as_ref().map(|(raw, _)| raw.clone());
        let stored_key = s.bundle_key.as_ref().map(|(raw, _)| raw.clone());
        refs.snapshot =
            Some(nulled_snapshot(&t.id, &s.key, &[(&t.bundle_path, stored_path), (&t.bundle_key, stored_key)]));
        items.push(refs);
        p.units.push(tagged("previews", items));
    }
}

/// The snapshot of a row whose columns are set to NULL: what `restore` sets back.
fn nulled_snapshot(
    key_column: &Ident,
    key: &str,
    columns: &[(&Ident, Option<String>)],
) -> Box<serde_json::value::RawValue> {
    let values: serde_json::Map<String, serde_json::Value> =
        columns.iter().map(|(c, v)| (c.as_str().to_string(), serde_json::json!(v))).collect();
    let v = serde_json::json!({"key_column": key_column.as_str(), "key": key, "columns_set_to_null": values});
    serde_json::value::to_raw_value(&v).expect("a JSON value serialises")
}

/// An object listed under the previews prefix.
#[derive(Debug, Clone)]
pub struct Listed {
    pub key: String,
    /// How the object is shown (`s3://bucket/key`).
    pub target: String,
    pub size: u64,
    pub modified: DateTime<Utc>,
}

/// objects: one listed preview object. Referenced ones are counted, not listed; unreferenced
/// ones older than the TTL go. Returns whether it is a deletion.
pub fn object(p: &mut Plan, o: Listed, refs: &HashSet<String>, r: &Rules) -> bool {
    p.scanned += 1;
    if refs.contains(&o.key) {
        *p.kept_unlisted.entry(Kind::Object).or_default() += 1;
        return false;
    }
    let cutoff = r.now - Duration::hours(r.preview_bundle_ttl_hours).max(r.grace);
    if is_protected(&o.key, &r.protected) {
        p.keep(Kind::Object, o.target, "under a protected prefix");
        false
    } else if o.modified > cutoff {
        p.keep(
            Kind::Object,
            o.target,
            format!("unreferenced but younger than PREVIEW_BUNDLE_TTL_HOURS ({}h)", r.preview_bundle_ttl_hours),
        );
        false
    } else {
        p.units.push(tagged(
            "objects",
            vec![Item::new(
                Op::DeleteObject { store: "previews".into(), key: o.key },
                o.target,
                format!("no preview session references it; last modified {}", o.modified.to_rfc3339()),
                Some(o.size),
            )],
        ));
        true
    }
}

/// A file under DATA_DIR/logs/.
#[derive(Debug, Clone)]
pub struct LogFile {
    /// Relative to `logs/`; `Err` holds the name shown lossily when it is not UTF-8.
    pub inside: Result<String, String>,
    pub modified: DateTime<Utc>,
    /// A regular file (not a link): its size counts, and it can be compressed.
    pub is_file: bool,
    pub bytes: u64,
}

/// logs: old files under DATA_DIR/logs/ (gzipped first when seed 004's option B is on).
pub fn logs(p: &mut Plan, files: impl Iterator<Item = LogFile>, r: &Rules) {
    let cutoff = r.now - Duration::days(r.log_retention_days).max(r.grace);
    let compress = r.log_compress_after_days.map(|d| r.now - Duration::days(d).max(r.grace));
    for f in files {
        p.scanned += 1;
        let inside = match f.inside {
            Ok(i) => i,
            Err(shown) => {
                p.keep(Kind::File, format!("data:logs/{shown}"), "its name is not valid UTF-8: left alone");
                continue;
            }
        };
        let rel = format!("logs/{inside}");
        if r.log_keep.is_match(&inside) {
            p.keep(Kind::File, format!("data:{rel}"), "matches worker.log_keep (not a debug log)");
            continue;
        }
        if f.modified > cutoff {
            match compress {
                Some(c) if f.modified <= c && f.is_file && !rel.ends_with(".gz") => p.units.push(tagged(
                    "logs",
                    vec![Item::new(
                        Op::CompressFile { root: "data".into(), path: rel.clone() },
                        format!("data:{rel}"),
                        format!(
                            "log last modified {}: compressed to {rel}.gz (deleted after {} days)",
                            f.modified.to_rfc3339(),
                            r.log_retention_days
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
                format!("log last modified {} (older than {} days)", f.modified.to_rfc3339(), r.log_retention_days),
                Some(if f.is_file { f.bytes } else { 0 }),
            )],
        ));
    }
}

/// An inactive repo the database names, with what is known of its directory.
#[derive(Debug, Clone)]
pub struct Repo {
    pub key: String,
    /// `filesystem_path` as stored.
    pub path: String,
    pub last_activity: DateTime<Utc>,
    /// The path relative to DATA_DIR, or why it is refused.
    pub rel: Result<String, String>,
    /// Its tree, when it exists.
    pub tree: Option<Tree>,
}

/// repos: directories of inactive repos (only when enabled: the caller asks only then), each
/// guarded by the repo's row still matching its rule.
pub fn repos(p: &mut Plan, rows: Vec<Repo>, r: &Rules) {
    let t = &r.repos;
    let rule = r.repo_rule();
    for repo in rows {
        p.scanned += 1;
        let mut it = Item::new(
            Op::DeleteDir { root: "data".into(), path: repo.path.clone() },
            format!("data:{}", repo.path),
            format!(
                "repo {} is inactive, last activity {} (more than {} days ago)",
                repo.key,
                repo.last_activity.to_rfc3339(),
                r.stale_repo_days
            ),
            None,
        );
        match &repo.rel {
            Err(e) => it.refused = Some(e.clone()),
            Ok(rel) if !rel.starts_with("repos/") => {
                it.refused = Some(format!("{rel:?} is not under DATA_DIR/repos/: refused"))
            }
            Ok(rel) => {
                it.op = Op::DeleteDir { root: "data".into(), path: rel.clone() };
                it.target = format!("data:{rel}");
                if let Some(tree) = repo.tree {
                    it.bytes = Some(tree.bytes);
                    if tree.newest > r.now - r.grace {
                        p.keep(Kind::Dir, it.target, "modified within the grace period");
                        continue;
                    }
                }
            }
        }
        let mut u = tagged("repos", vec![it]);
        u.guard =
            Some(RowGuard { table: t.table.clone(), key_column: t.id.clone(), key: repo.key, rule: rule.clone() });
        p.units.push(u);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::{decisions, render};

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn rules(now: &str) -> Rules {
        let i = |s: &str| Ident::new(s).unwrap();
        let mut keep = globset::GlobSetBuilder::new();
        keep.add(globset::Glob::new("**/access*").unwrap());
        Rules {
            now: at(now),
            grace: Duration::minutes(30),
            protected: vec!["backups/".into()],
            tmp_dir_ttl_minutes: 60,
            preview_bundle_ttl_hours: 24,
            log_retention_days: 7,
            log_compress_after_days: Some(1),
            log_keep: keep.build().unwrap(),
            stale_repo_days: 180,
            previews: PreviewTable {
                table: i("preview_sessions"),
                id: i("id"),
                status: i("status"),
                updated_at: i("updated_at"),
                expires_at: i("expires_at"),
                bundle_path: i("bundle_path"),
                bundle_key: i("bundle_key"),
            },
            repos: RepoTable {
                table: i("repos"),
                id: i("id"),
                active: i("active"),
                last_activity_at: i("last_activity_at"),
            },
        }
    }

    const NOW: &str = "2026-11-22T10:00:00Z";

    fn tree(minutes_old: i64) -> Tree {
        Tree { newest: at(NOW) - Duration::minutes(minutes_old), bytes: 100 }
    }

    /// (name, kind, minutes since last change, an active job's dir, deleted)
    #[test]
    fn tmp_entries_go_past_the_ttl_unless_a_job_uses_them() {
        let cases = [
            ("old", EntryKind::Dir, 61, false, true),
            ("edge", EntryKind::Dir, 60, false, true),
            ("young", EntryKind::Dir, 59, false, false),
            ("busy", EntryKind::Dir, 600, true, false),
            ("link", EntryKind::Symlink, 600, false, true),
            ("file", EntryKind::Other, 600, false, false),
        ];
        for (name, kind, minutes, busy, deleted) in cases {
            let mut p = Plan::new(COMMAND, at(NOW));
            let active = if busy { vec![format!("tmp/{name}/work")] } else { vec![] };
            tmp(&mut p, vec![TmpEntry { name: Ok(name.into()), kind, tree: tree(minutes) }], &active, &rules(NOW));
            assert_eq!(p.units.len() == 1, deleted, "{name}");
        }
    }

    fn session(key: &str, dir: Option<BundleDir>, obj: Option<BundleObject>) -> Session {
        Session {
            key: key.into(),
            status: "expired".into(),
            bundle_path: dir.map(|d| (format!("previews/{key}"), d)),
            bundle_key: obj.map(|o| (format!("previews/{key}.zip"), o)),
            unreadable: None,
        }
    }

    #[test]
    fn a_preview_goes_with_its_bundle_unless_the_bundle_is_fresh_or_protected() {
        let dir = |rel: &str, minutes| BundleDir::Present { rel: rel.into(), tree: tree(minutes) };
        let obj = |minutes| BundleObject::Present {
            target: "s3://previews/x.zip".into(),
            size: 5,
            modified: at(NOW) - Duration::minutes(minutes),
        };
        let sessions = vec![
            session("s1", Some(dir("previews/s1", 600)), Some(obj(600))),
            session("s2", Some(dir("previews/s2", 10)), Some(obj(600))),
            session("s3", Some(dir("previews/s3", 600)), Some(obj(10))),
            session("s4", Some(dir("backups/s4", 600)), None),
            session(
                "s5",
                Some(BundleDir::Missing { rel: "previews/s5".into() }),
                Some(BundleObject::Missing { target: "s3://previews/s5.zip".into() }),
            ),
            session("s6", Some(BundleDir::Refused { path: "../etc".into(), why: "leaves DATA_DIR".into() }), None),
            session(
                "s7",
                None,
                Some(BundleObject::Refused { target: "previews:s7.zip".into(), why: "no previews store".into() }),
            ),
        ];
        let mut p = Plan::new(COMMAND, at(NOW));
        previews(&mut p, sessions, &rules(NOW));
        insta::assert_snapshot!("worker_previews", render(&p));
        let units: Vec<&str> = p.units.as_slice().iter().map(|u| u.items.last().unwrap().target.as_str()).collect();
        assert_eq!(
            units,
            ["preview_sessions id=s1", "preview_sessions id=s5", "preview_sessions id=s6", "preview_sessions id=s7"]
        );
        // The references are cleared last, re-checked by the session's rule, with what restore needs.
        let refs = p.units[0].items.last().unwrap();
        assert!(matches!(&refs.op, Op::NullColumns { rule: Some(RowRule::PreviewCleanable { .. }), .. }));
        assert!(refs.snapshot.as_ref().unwrap().get().contains("previews/s1.zip"));
    }

    #[test]
    fn orphaned_objects_go_past_the_ttl() {
        let refs: HashSet<String> = ["previews/used.zip".to_string()].into();
        let o = |key: &str, hours: i64| Listed {
            key: key.into(),
            target: format!("s3://b/{key}"),
            size: 1,
            modified: at(NOW) - Duration::hours(hours),
        };
        let cases = [
            (o("previews/used.zip", 100), false),
            (o("previews/old.zip", 24), true),
            (o("previews/young.zip", 23), false),
            (o("backups/previews/x.zip", 100), false),
        ];
        for (obj, deleted) in cases {
            let key = obj.key.clone();
            let mut p = Plan::new(COMMAND, at(NOW));
            assert_eq!(object(&mut p, obj, &refs, &rules(NOW)), deleted, "{key}");
            assert_eq!(p.units.len() == 1, deleted, "{key}");
        }
    }

    #[test]
    fn logs_and_repos_and_what_moves_with_time() {
        let logs_at = |now: &str| {
            let f = |inside: &str, days: i64| LogFile {
                inside: Ok(inside.into()),
                modified: at(now) - Duration::days(days),
                is_file: true,
                bytes: 10,
            };
            vec![
                f("app/debug.log", 8),
                f("app/debug.1.log", 6),
                f("app/debug.2.log", 1),
                f("app/debug.3.log.gz", 3),
                f("nginx/access.log", 30),
                f("today.log", 0),
            ]
        };
        let repos_at = |now: &str| {
            vec![
                Repo {
                    key: "r1".into(),
                    path: "repos/r1".into(),
                    last_activity: at(now) - Duration::days(200),
                    rel: Ok("repos/r1".into()),
                    tree: Some(Tree { newest: at(now) - Duration::days(200), bytes: 1000 }),
                },
                Repo {
                    key: "r2".into(),
                    path: "/etc".into(),
                    last_activity: at(now) - Duration::days(200),
                    rel: Err("leaves DATA_DIR".into()),
                    tree: None,
                },
                Repo {
                    key: "r3".into(),
                    path: "tmp/r3".into(),
                    last_activity: at(now) - Duration::days(200),
                    rel: Ok("tmp/r3".into()),
                    tree: None,
                },
            ]
        };
        let cycle = |facts_at: &str, now: &str| {
            let mut p = Plan::new(COMMAND, at(now));
            logs(&mut p, logs_at(facts_at).into_iter(), &rules(now));
            repos(&mut p, repos_at(facts_at), &rules(now));
            p
        };
        let base = cycle(NOW, NOW);
        insta::assert_snapshot!("worker_logs_and_repos", render(&base));
        assert!(base.units.as_slice().iter().filter(|u| u.task.as_deref() == Some("repos")).all(|u| u.guard.is_some()));
        let later = cycle(NOW, "2026-11-24T10:00:00Z");
        insta::assert_snapshot!("worker_logs_and_repos_two_days_later", decisions(&later).join("\n"));
        let shifted = cycle("2027-05-01T10:00:00Z", "2027-05-01T10:00:00Z");
        assert_eq!(decisions(&shifted), decisions(&base));
    }
}
