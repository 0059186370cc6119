//! `cleanup-ui-files` (seed 000): delete files under `MEDIA_ROOT/published_modules/` that no
//! published module's payload references.
//!
//! Lean at a million files: the references (from a stream of rows) go into one sorted buffer,
//! and the tree is walked in the same order and merged against it, so no set of every file is
//! ever held. Only unreferenced files are stat'ed (for the grace period).

use super::published_modules::{for_each_row, module_prefix, Filter, ModuleSettings, RefSet};
use super::{print_config, print_report, run_policy, Ctx, Finished};
use crate::cli::CleanupUiFilesArgs;
use crate::executor::Resources;
use crate::exit_codes::{Exit, Fatal};
use crate::plan::{Item, Kept, Kind, Op, Plan, Unit};
use crate::refs::{PayloadRefs, MARKER};
use crate::store::is_protected;
use crate::store::local::LocalRoot;
use anyhow::{anyhow, Result};
use chrono::{DateTime, Duration, Utc};
use std::path::Path;

pub const COMMAND: &str = "cleanup-ui-files";
/// The directory under MEDIA_ROOT that holds UI files.
pub const UI_DIR: &str = "published_modules";

/// The fixed inputs of the decision.
pub struct Rules {
    pub now: DateTime<Utc>,
    pub grace_minutes: i64,
    pub protected: Vec<String>,
    /// `published_modules/<id>/` of modules with an unreadable payload.
    pub unknown_prefixes: Vec<String>,
}

/// Decide, for each walked file (ascending `refs::path_cmp` order; `Err` for a name that is not
/// UTF-8), whether it is referenced; `modified` is asked only for unreferenced files.
pub fn plan(
    files: impl Iterator<Item = Result<String, String>>,
    refs: &RefSet,
    rules: &Rules,
    mut modified: impl FnMut(&str) -> Option<(u64, DateTime<Utc>)>,
) -> Plan {
    let mut p = Plan::new(COMMAND, rules.now);
    let grace_cutoff = rules.now - Duration::minutes(rules.grace_minutes);
    let mut cursor = refs.cursor();
    let mut referenced = 0u64;
    for f in files {
        p.scanned += 1;
        let rel = match f {
            Ok(rel) => rel,
            Err(shown) => {
                p.kept.push(Kept {
                    kind: Kind::File,
                    target: format!("media:{shown}"),
                    reason: "its name is not valid UTF-8, so no payload can reference it; left alone".into(),
                });
                continue;
            }
        };
        if cursor.seek(&rel) {
            referenced += 1;
            continue;
        }
        let target = format!("media:{rel}");
        if is_protected(&rel, &rules.protected) {
            p.kept.push(Kept {
                kind: Kind::File,
                target,
                reason: format!("under a protected prefix ({})", rules.protected.join(", ")),
            });
            continue;
        }
        if let Some(prefix) = rules.unknown_prefixes.iter().find(|pre| rel.starts_with(pre.as_str())) {
            p.kept.push(Kept {
                kind: Kind::File,
                target,
                reason: format!("a row with an unreadable payload might reference files under {prefix}"),
            });
            continue;
        }
        match modified(&rel) {
            None => {} // gone since the walk
            Some((_, m)) if m > grace_cutoff => p.kept.push(Kept {
                kind: Kind::File,
                target,
                reason: format!(
                    "unreferenced, but modified {} (within the {}-minute grace period)",
                    m.to_rfc3339(),
                    rules.grace_minutes
                ),
            }),
            Some((bytes, _)) => p.units.push(Unit::new(vec![Item::new(
                Op::DeleteFile { root: "media".into(), path: rel },
                target,
                "no published module's payload references it",
                Some(bytes),
            )])),
        }
    }
    p.kept_unlisted.insert(Kind::File, referenced);
    p.fields.insert("referenced_files".into(), referenced.into());
    p.fields.insert("references".into(), (refs.len() as u64).into());
    p
}

/// Walk `MEDIA_ROOT/published_modules` in sorted order, not following links; yields paths
/// relative to MEDIA_ROOT.
fn walk(media: &Path) -> impl Iterator<Item = Result<String, String>> + '_ {
    walkdir::WalkDir::new(media.join(UI_DIR)).follow_links(false).sort_by_file_name().into_iter().filter_map(move |e| {
        let e = match e {
            Ok(e) => e,
            Err(err) => {
                tracing::warn!(target: "cleanup", "cannot read part of {}: {err}", media.join(UI_DIR).display());
                return None;
            }
        };
        if e.file_type().is_dir() {
            return None;
        }
        let rel = e.path().strip_prefix(media).ok()?;
        Some(match rel.to_str() {
            Some(s) if !cfg!(windows) => Ok(s.to_string()),
            Some(s) => Ok(s.replace('\\', "/")),
            None => Err(rel.to_string_lossy().into_owned()),
        })
    })
}

pub async fn run(ctx: &Ctx, args: &CleanupUiFilesArgs) -> Result<Exit> {
    let s = ModuleSettings::load(ctx, None)?;
    let rows = s.rows();
    if ctx.global.show_config {
        print_config(ctx, rows);
        return Ok(Exit::Success);
    }
    let media = ctx.settings.require_media_root()?.to_path_buf();
    let db = super::connect(ctx).await?;
    let root = LocalRoot::open("media", &media).map_err(|e| anyhow!("MEDIA_ROOT: {e}"))?;
    let media = root.path().to_path_buf();
    let mut res = Resources { db: Some(db.clone()), ..Default::default() };
    res.roots.insert("media".into(), root.clone());
    let Finished { exit, mut report, plan } = run_policy(ctx, COMMAND, &rows, Some(db.clone()), &res, || async {
        let mut refs = RefSet::default();
        let mut unknown: Vec<(String, i64, String)> = Vec::new();
        let rows = for_each_row(&db, &s, Filter::All, |row| match row.refs {
            PayloadRefs::Known(v) => v.iter().for_each(|p| refs.push(p)),
            PayloadRefs::Unknown { error, salvaged } => {
                salvaged.iter().for_each(|p| refs.push(p));
                unknown.push((row.key, row.module_id, error));
            }
        })
        .await?;
        refs.finish();
        for (key, module, error) in &unknown {
            tracing::warn!(target: "cleanup", "payload of {} {key} (module {module}) is not valid JSON ({error}): files under {} are kept", s.table.as_str(), module_prefix(*module));
        }
        let rules = Rules {
            now: ctx.settings.now.value,
            grace_minutes: ctx.settings.grace_minutes.value,
            protected: ctx.settings.protected_prefixes.value.clone(),
            unknown_prefixes: unknown.iter().map(|u| module_prefix(u.1)).collect(),
        };
        let unknown_keys: Vec<String> = unknown.iter().map(|u| u.0.clone()).collect();
        let allow_empty = args.allow_empty_references;
        let root = root.clone();
        let mut plan = tokio::task::spawn_blocking(move || {
            let stat = |rel: &str| root.stat(rel).ok().flatten().map(|e| (e.bytes, DateTime::<Utc>::from(e.modified)));
            let plan = plan(walk(&media), &refs, &rules, stat);
            if refs.is_empty() && !plan.units.is_empty() && !allow_empty {
                return Err(anyhow::Error::new(Fatal::guard(format!(
                    "no row of {} references any file, yet {} files under {UI_DIR}/ would be deleted: refusing (SPEC safety rule 2). \
                     If the table is really empty, pass --allow-empty-references",
                    rows, plan.units.len()
                ))));
            }
            Ok(plan)
        })
        .await??;
        plan.fields.insert("rows".into(), rows.into());
        plan.fields.insert("unparseable_payloads".into(), unknown_keys.into());
        Ok(plan)
    })
    .await?;
    if !report.dry_run {
        let removed = remove_empty_dirs(&root, &plan);
        report.fields.insert("empty_dirs_removed".into(), removed.into());
    }
    print_report(ctx, &report, &plan)?;
    db.close().await;
    Ok(exit)
}

/// Remove the directories under `published_modules/` that deleting files left empty.
pub fn remove_empty_dirs(root: &LocalRoot, plan: &Plan) -> u64 {
    let mut dirs: Vec<String> = plan
        .units
        .iter()
        .flat_map(|u| u.items.iter())
        .filter(|i| i.outcome == Some(crate::report::Outcome::Deleted))
        .filter_map(|i| match &i.op {
            Op::DeleteFile { path, .. } => path.rsplit_once('/').map(|(d, _)| d.to_string()),
            _ => None,
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    let mut removed = 0;
    // Deepest first; walk up while directories come out empty, never past published_modules/.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    for d in dirs {
        let mut cur = d.as_str();
        while cur.starts_with(MARKER) {
            match root.resolve(cur).ok().flatten() {
                Some(_) => {}
                None => break,
            }
            if std::fs::remove_dir(root.path().join(cur)).is_err() {
                break;
            }
            removed += 1;
            match cur.rsplit_once('/') {
                Some((parent, _)) => cur = parent,
                None => break,
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn unreferenced_old_files_go_and_everything_else_stays() {
        let now: DateTime<Utc> = "2026-11-22T10:00:00Z".parse().unwrap();
        let old = now - Duration::days(3);
        let mut refs = RefSet::default();
        refs.push("published_modules/1/v2/a.json");
        refs.push("published_modules/1/v2/b.json");
        refs.finish();
        let files: Vec<Result<String, String>> = vec![
            Ok("published_modules/1/v1/a.json".into()),     // orphan: deleted
            Ok("published_modules/1/v2/a.json".into()),     // referenced
            Ok("published_modules/1/v2/b.json".into()),     // referenced
            Ok("published_modules/1/v2/fresh.json".into()), // orphan within grace
            Ok("published_modules/3/x.json".into()),        // module with an unreadable payload
            Err("published_modules/\u{fffd}.json".into()),  // not UTF-8
        ];
        let times: HashMap<&str, DateTime<Utc>> = [
            ("published_modules/1/v1/a.json", old),
            ("published_modules/1/v2/fresh.json", now - Duration::minutes(5)),
            ("published_modules/3/x.json", old),
        ]
        .into();
        let rules = Rules {
            now,
            grace_minutes: 30,
            protected: vec!["backups/".into()],
            unknown_prefixes: vec!["published_modules/3/".into()],
        };
        let p = plan(files.into_iter(), &refs, &rules, |rel| times.get(rel).map(|t| (10, *t)));
        let deleted: Vec<&str> = p.units.iter().map(|u| u.items[0].target.as_str()).collect();
        assert_eq!(deleted, ["media:published_modules/1/v1/a.json"]);
        assert_eq!(p.kept.len(), 3);
        assert_eq!(p.kept_unlisted[&Kind::File], 2);
        assert_eq!(p.scanned, 6);
    }
}
