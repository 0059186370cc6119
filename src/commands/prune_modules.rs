//! `prune-modules` (seed 000): per module, keep the N latest published versions and delete the
//! rest, then the UI files that only the deleted versions referenced.
//!
//! Rows go first (each statement committed) and their files after, in the same unit: a crash in
//! between leaves only unreferenced files, which `cleanup-ui-files` finds later. A file that any
//! kept row references (of any module) is never a candidate.

use super::cleanup_ui_files::remove_empty_dirs;
use super::published_modules::{for_each_row, module_prefix, Filter, ModuleRow, ModuleSettings, RefSet};
use super::{print_config, print_report, run_policy, Ctx, Finished};
use crate::cli::PruneModulesArgs;
use crate::executor::Resources;
use crate::exit_codes::Exit;
use crate::plan::{Item, Kept, Kind, Op, Plan, RowRule, Unit};
use crate::refs::PayloadRefs;
use crate::report::{Outcome, Report};
use crate::store::is_protected;
use crate::store::local::{in_blocking_chunks, LocalRoot, ParentCache};
use anyhow::{anyhow, Result};
use chrono::{DateTime, Duration, Utc};
use std::collections::BTreeMap;

pub const COMMAND: &str = "prune-modules";

/// What is known of a candidate file when planning.
#[derive(Debug, Clone, PartialEq)]
pub enum FileState {
    Present { bytes: u64, modified: DateTime<Utc> },
    Missing,
    Refused(String),
}

/// The fixed inputs of the decision.
pub struct Rules {
    pub now: DateTime<Utc>,
    pub keep: i64,
    pub grace_minutes: i64,
    pub protected: Vec<String>,
    pub settings: ModuleSettings,
}

/// The pure decision. `pruned` are the rows past the latest `keep` of their module;
/// `files` says what is on disk for each file that only pruned rows reference.
pub fn plan(pruned: Vec<ModuleRow>, kept: Vec<Kept>, files: &BTreeMap<String, FileState>, rules: &Rules) -> Plan {
    let s = &rules.settings;
    let mut p = Plan::new(COMMAND, rules.now);
    p.batch_size = 100;
    p.kept = kept;
    p.scanned = (pruned.len() + p.kept.len()) as u64;
    let grace_cutoff = rules.now - Duration::minutes(rules.grace_minutes);

    // Which files each pruned row would take with it.
    let deletable = |f: &str, p: &mut Plan| -> bool {
        let target = format!("media:{f}");
        match files.get(f) {
            None | Some(FileState::Missing) => false,
            Some(FileState::Refused(why)) => {
                p.kept.push(Kept { kind: Kind::File, target, reason: why.clone() });
                false
            }
            Some(_) if is_protected(f, &rules.protected) => {
                p.kept.push(Kept { kind: Kind::File, target, reason: "under a protected prefix".into() });
                false
            }
            Some(FileState::Present { modified, .. }) if *modified > grace_cutoff => {
                p.kept.push(Kept {
                    kind: Kind::File,
                    target,
                    reason: format!("modified within the {}-minute grace period", rules.grace_minutes),
                });
                false
            }
            Some(FileState::Present { .. }) => true,
        }
    };
    let mut ok_files: BTreeMap<&str, bool> = BTreeMap::new();
    for f in files.keys() {
        let ok = deletable(f, &mut p);
        ok_files.insert(f.as_str(), ok);
    }

    // Rows that share a file go in one unit, so the file goes only after all of them.
    let mut parent: Vec<usize> = (0..pruned.len()).collect();
    fn find(parent: &mut [usize], i: usize) -> usize {
        let mut r = i;
        while parent[r] != r {
            r = parent[r];
        }
        parent[i] = r;
        r
    }
    let mut owner: BTreeMap<String, usize> = BTreeMap::new();
    for (i, row) in pruned.iter().enumerate() {
        if let PayloadRefs::Known(refs) = &row.refs {
            for f in refs.iter().filter(|f| ok_files.get(f.as_str()) == Some(&true)) {
                match owner.get(f.as_str()) {
                    None => {
                        owner.insert(f.clone(), i);
                    }
                    Some(&j) => {
                        let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                        parent[a] = b;
                    }
                }
            }
        }
    }
    let mut groups: BTreeMap<usize, (Vec<usize>, Vec<String>)> = BTreeMap::new();
    for i in 0..pruned.len() {
        let r = find(&mut parent, i);
        groups.entry(r).or_default().0.push(i);
    }
    for (f, i) in owner {
        let r = find(&mut parent, i);
        groups.entry(r).or_default().1.push(f);
    }

    let rule = RowRule::NotLatest {
        group_column: s.module_id.clone(),
        order_columns: vec![s.version.clone(), s.published_at.clone(), s.id.clone()],
        keep: rules.keep,
    };
    let mut pruned: Vec<Option<ModuleRow>> = pruned.into_iter().map(Some).collect();
    for (_, (rows, group_files)) in groups {
        let mut items = Vec::new();
        let mut versions = Vec::new();
        for i in rows {
            let row = pruned[i].take().expect("each row is in one group");
            versions.push(format!("module {} v{}", row.module_id, row.version));
            let it = Item::new(
                Op::DeleteRow {
                    table: s.table.clone(),
                    key_column: s.id.clone(),
                    key: row.key.clone(),
                    rule: Some(rule.clone()),
                },
                format!(
                    "{} {}={} (module {} v{})",
                    s.table.as_str(),
                    s.id.as_str(),
                    row.key,
                    row.module_id,
                    row.version
                ),
                format!("not among the latest {} versions of module {}", rules.keep, row.module_id),
                None,
            );
            items.push(it);
        }
        for f in group_files {
            let bytes = match files.get(&f) {
                Some(FileState::Present { bytes, .. }) => Some(*bytes),
                _ => None,
            };
            items.push(Item::new(
                Op::DeleteFile { root: "media".into(), path: f.clone() },
                format!("media:{f}"),
                format!("referenced only by pruned versions ({})", versions.join(", ")),
                bytes,
            ));
        }
        p.units.push(Unit::new(items));
    }
    p.fields.insert("keep_latest".into(), rules.keep.into());
    p
}

pub async fn run(ctx: &Ctx, args: &PruneModulesArgs) -> Result<Exit> {
    let s = ModuleSettings::load(ctx, args.keep_latest)?;
    let rows = s.rows();
    if ctx.global.show_config {
        print_config(ctx, rows);
        return Ok(Exit::Success);
    }
    if args.auto && !s.auto_prune.value {
        let why = "auto-prune is disabled (set PUBLISHED_MODULE_AUTO_PRUNE=1 or [published_modules] auto_prune = true): nothing done";
        tracing::info!(target: "cleanup", "{why}");
        let report = Report::skipped("-", COMMAND, ctx.settings.dry_run.value, ctx.settings.now.value, why);
        print_report(ctx, &report, &Plan::new(COMMAND, ctx.settings.now.value))?;
        return Ok(Exit::Success);
    }
    let media = ctx.settings.require_media_root()?.to_path_buf();
    let db = super::connect(ctx).await?;
    let root = LocalRoot::open("media", &media).map_err(|e| anyhow!("MEDIA_ROOT: {e}"))?;
    let mut res = Resources { db: Some(db.clone()), ..Default::default() };
    res.roots.insert("media".into(), root.clone());
    let keep = s.keep_latest.value;
    let rules = Rules {
        now: ctx.settings.now.value,
        keep,
        grace_minutes: ctx.settings.grace_minutes.value,
        protected: ctx.settings.protected_prefixes.value.clone(),
        settings: s.clone(),
    };
    let Finished { exit, mut report, plan } = run_policy(ctx, COMMAND, &rows, Some(db.clone()), &res, || async {
        let mut pruned: Vec<ModuleRow> = Vec::new();
        let mut kept: Vec<Kept> = Vec::new();
        let mut protect = RefSet::default();
        let mut protect_prefixes: Vec<String> = Vec::new();
        let mut keep_refs = |row: &ModuleRow, protect: &mut RefSet| match &row.refs {
            PayloadRefs::Known(v) => v.iter().for_each(|p| protect.push(p)),
            PayloadRefs::Unknown { error, salvaged } => {
                tracing::warn!(target: "cleanup", "payload of {} {} (module {}) is not valid JSON ({error}): files under {} are kept", s.table.as_str(), row.key, row.module_id, module_prefix(row.module_id));
                salvaged.iter().for_each(|p| protect.push(p));
                protect_prefixes.push(module_prefix(row.module_id));
            }
        };
        let (mut current, mut rank) = (None, 0i64);
        let filter = args.module.map(Filter::Module).unwrap_or(Filter::All);
        for_each_row(&db, &s, filter, |row| {
            if current != Some(row.module_id) {
                current = Some(row.module_id);
                rank = 0;
            }
            rank += 1;
            if rank <= keep {
                keep_refs(&row, &mut protect);
                kept.push(Kept {
                    kind: Kind::Row,
                    target: format!("{} {}={} (module {} v{})", s.table.as_str(), s.id.as_str(), row.key, row.module_id, row.version),
                    reason: format!("among the latest {keep} versions of module {}", row.module_id),
                });
            } else {
                if let PayloadRefs::Unknown { error, .. } = &row.refs {
                    tracing::warn!(target: "cleanup", "payload of {} {} is not valid JSON ({error}): the row is pruned but no file is deleted on its account", s.table.as_str(), row.key);
                }
                pruned.push(row);
            }
        })
        .await?;
        if let Some(m) = args.module {
            // Files of other modules' rows are protected too.
            for_each_row(&db, &s, Filter::NotModule(m), |row| keep_refs(&row, &mut protect)).await?;
        }
        protect.finish();

        // Files only pruned rows reference.
        let mut candidates: Vec<String> = pruned
            .iter()
            .filter_map(|r| match &r.refs {
                PayloadRefs::Known(v) => Some(v.iter()),
                PayloadRefs::Unknown { .. } => None,
            })
            .flatten()
            .filter(|f| !protect.contains(f) && !protect_prefixes.iter().any(|p| f.starts_with(p.as_str())))
            .cloned()
            .collect();
        candidates.sort();
        candidates.dedup();
        let r2 = root.clone();
        let facts = in_blocking_chunks(candidates.clone(), 4, move |chunk| {
            let mut cache = ParentCache::default();
            chunk
                .into_iter()
                .map(|f| match r2.stat_with(&f, &mut cache) {
                    Ok(Some(e)) if e.is_dir => FileState::Refused("a directory, not a file".into()),
                    Ok(Some(e)) => FileState::Present { bytes: e.bytes, modified: DateTime::<Utc>::from(e.modified) },
                    Ok(None) => FileState::Missing,
                    Err(e) => FileState::Refused(e.to_string()),
                })
                .collect()
        })
        .await;
        let files: BTreeMap<String, FileState> = candidates.into_iter().zip(facts).collect();
        let mut plan = plan(pruned, kept, &files, &rules);
        if let Some(m) = args.module {
            plan.fields.insert("module".into(), m.into());
        }
        Ok(plan)
    })
    .await?;
    if !report.dry_run {
        let removed = remove_empty_dirs(&root, &plan);
        report.fields.insert("empty_dirs_removed".into(), removed.into());
    }
    let rows_deleted = plan
        .units
        .iter()
        .flat_map(|u| &u.items)
        .filter(|i| i.kind == Kind::Row && matches!(i.outcome, Some(Outcome::Deleted) | Some(Outcome::WouldDelete)))
        .count();
    report.fields.insert("rows_pruned".into(), (rows_deleted as u64).into());
    print_report(ctx, &report, &plan)?;
    db.close().await;
    Ok(exit)
}
