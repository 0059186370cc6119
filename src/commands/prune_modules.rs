//! `prune-modules` (seed 000): per module, keep the N latest published versions and delete the
//! rest, then the UI files that only the deleted versions referenced. This module gathers (the
//! rows as a stream, the candidate files' state, the directories holding them);
//! `policy::prune_modules` decides.
//!
//! Rows go first (each statement committed) and their files after, in the same unit: a crash in
//! between leaves only unreferenced files, which `cleanup-ui-files` finds later. A file that any
//! kept row references (of any module) is never a candidate.

use crate::cli::PruneModulesArgs;
use crate::exit_codes::Exit;
use crate::gather::published_modules::{for_each_row, Filter, ModuleSettings};
use crate::plan::{Kept, Kind, Outcome, Plan};
use crate::policy::prune_modules::{candidates, plan, FileState, KeepLatest, Listing, ModuleTable, Rules, COMMAND};
use crate::refs::{module_prefix, ModuleRow, PayloadRefs, RefSet, MARKER};
use crate::report::Report;
use crate::run::{run_policy, Channel, Ctx, Finished, Ran};
use crate::store::local::{in_blocking_chunks, LocalRoot, ParentCache};
use crate::store::Resources;
use anyhow::{anyhow, Result};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet};

pub async fn run(ctx: &Ctx, args: &PruneModulesArgs, chan: &Channel) -> Result<Ran> {
    let s = ModuleSettings::load(ctx, args.keep_latest)?;
    let rows = s.rows();
    if ctx.global.show_config {
        ctx.print_config(rows);
        return Ok(Ran::Done(Exit::Success));
    }
    if args.auto && !s.auto_prune.value {
        let why = "auto-prune is disabled (set PUBLISHED_MODULE_AUTO_PRUNE=1 or [published_modules] auto_prune = true): nothing done";
        tracing::info!(target: "cleanup", "{why}");
        let report = Report::skipped("-", COMMAND, ctx.settings.dry_run.value, ctx.settings.now.value, why);
        let plan = Plan::new(COMMAND, ctx.settings.now.value);
        return Ok(Ran::Run(Box::new(Finished { exit: Exit::Success, report, plan })));
    }
    let media = ctx.settings.require_media_root()?.to_path_buf();
    let db = ctx.connect().await?;
    let root = LocalRoot::open("media", &media).map_err(|e| anyhow!("MEDIA_ROOT: {e}"))?;
    let mut res = Resources { db: Some(db.clone()), ..Default::default() };
    res.roots.insert("media".into(), root.clone());
    let keep = s.keep_latest.value;
    let rules = Rules {
        now: ctx.settings.now.value,
        keep,
        grace_minutes: ctx.settings.grace_minutes.value,
        protected: ctx.settings.protected_prefixes.value.clone(),
        table: ModuleTable {
            table: s.table.clone(),
            id: s.id.clone(),
            module_id: s.module_id.clone(),
            version: s.version.clone(),
            published_at: s.published_at.clone(),
        },
    };
    let spec = ctx.spec(COMMAND, &rows, Some(db.clone()), &res);
    let Finished { exit, mut report, plan } = run_policy(ctx, spec, chan, || async {
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
        let mut ranker = KeepLatest::new(keep);
        let filter = args.module.map(Filter::Module).unwrap_or(Filter::All);
        for_each_row(&db, &s, filter, |row| {
            if ranker.keeps(&row) {
                keep_refs(&row, &mut protect);
                kept.push(ranker.kept(&rules.table, &row));
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
        let candidates = candidates(&pruned, &protect, &protect_prefixes);
        let (files, dirs) = file_facts(&root, candidates).await;
        let mut plan = plan(pruned, kept, &files, &dirs, &rules);
        if let Some(m) = args.module {
            plan.fields.insert("module".into(), m.into());
        }
        Ok(plan)
    })
    .await?;
    report.fields.insert("empty_dirs_removed".into(), report.empty_dirs_removed.into());
    let mut rows_deleted = 0;
    plan.units.each_item(|i| {
        rows_deleted +=
            (i.kind == Kind::Row && matches!(i.outcome, Some(Outcome::Deleted) | Some(Outcome::WouldDelete))) as usize;
        true
    })?;
    report.fields.insert("rows_pruned".into(), (rows_deleted as u64).into());
    db.close().await;
    Ok(Ran::Run(Box::new(Finished { exit, report, plan })))
}

/// Each candidate file's state, and the entries of the directories that hold them (up to
/// `published_modules/`), read without following links.
async fn file_facts(root: &LocalRoot, candidates: Vec<String>) -> (BTreeMap<String, FileState>, Listing) {
    let mut parents: BTreeSet<String> = BTreeSet::new();
    for f in &candidates {
        let mut cur = f.as_str();
        while let Some((parent, _)) = cur.rsplit_once('/') {
            if !parent.starts_with(MARKER) || !parents.insert(parent.to_string()) {
                break;
            }
            cur = parent;
        }
    }
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
    let r3 = root.clone();
    let parents: Vec<String> = parents.into_iter().collect();
    let listed = in_blocking_chunks(parents.clone(), 2, move |chunk| {
        chunk.into_iter().map(|d| r3.list_dir(&d).ok()).collect::<Vec<_>>()
    })
    .await;
    let dirs: Listing = parents.into_iter().zip(listed).filter_map(|(d, l)| l.map(|l| (d, l))).collect();
    (candidates.into_iter().zip(facts).collect(), dirs)
}
