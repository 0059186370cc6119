//! `cleanup-ui-files` (seed 000): delete files under `MEDIA_ROOT/published_modules/` that no
//! published module's payload references. This module gathers: the references (from a stream
//! of rows, into one sorted buffer) and a sorted walk of the tree; `policy::cleanup_ui_files`
//! decides.

use crate::cli::CleanupUiFilesArgs;
use crate::exit_codes::{Exit, Fatal};
use crate::gather::published_modules::{for_each_row, Filter, ModuleSettings};
use crate::policy::cleanup_ui_files::{plan, Rules, COMMAND, UI_DIR};
use crate::refs::{module_prefix, PayloadRefs, RefSet};
use crate::run::{run_policy, Channel, Ctx, Finished, Ran};
use crate::store::local::LocalRoot;
use crate::store::Resources;
use anyhow::{anyhow, Result};
use chrono::{DateTime, Utc};
use std::path::PathBuf;

/// Walk `MEDIA_ROOT/published_modules` in sorted order, not following links; yields paths
/// relative to MEDIA_ROOT. The plan reads it `gather::ahead`: on a thread of its own, a few
/// thousand files ahead of the decisions.
fn walk(media: PathBuf) -> impl Iterator<Item = Result<String, String>> {
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
        let rel = e.path().strip_prefix(&media).ok()?;
        // A name that is not UTF-8 is escaped (`names`): it can be deleted and restored exactly.
        Some(Ok(crate::names::encode_rel(rel)))
    })
}

/// Bytes of reference text held in memory; past it the references are sorted in runs on disk
/// and merged (`RefSet::spilling`). `SWEEP_REFS_SPILL_AT` overrides it in debug builds.
fn refs_in_memory() -> usize {
    #[cfg(debug_assertions)]
    if let Some(n) = std::env::var("SWEEP_REFS_SPILL_AT").ok().and_then(|v| v.parse().ok()) {
        return n;
    }
    16 << 20
}

pub async fn run(ctx: &Ctx, args: &CleanupUiFilesArgs, chan: &Channel) -> Result<Ran> {
    let s = ModuleSettings::load(ctx, None)?;
    let rows = s.rows();
    if ctx.global.show_config {
        ctx.print_config(rows);
        return Ok(Ran::Done(Exit::Success));
    }
    let media = ctx.settings.require_media_root()?.to_path_buf();
    let db = ctx.connect().await?;
    let root = LocalRoot::open("media", &media).map_err(|e| anyhow!("MEDIA_ROOT: {e}"))?;
    let media = root.path().to_path_buf();
    let mut res = Resources { db: Some(db.clone()), ..Default::default() };
    res.roots.insert("media".into(), root.clone());
    let Finished { exit, mut report, plan } = run_policy(ctx, ctx.spec(COMMAND, &rows, Some(db.clone()), &res), chan, || async {
        let t = std::time::Instant::now();
        let mut refs = RefSet::spilling(refs_in_memory());
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
        tracing::debug!(target: "cleanup", "References: {} distinct, from {rows} rows, in {:.2} s", refs.len(), t.elapsed().as_secs_f64());
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
            let t = std::time::Instant::now();
            let plan = plan(crate::gather::ahead(walk(media)), &refs, &rules, stat);
            tracing::debug!(target: "cleanup", "Walked {} files in {:.2} s", plan.scanned, t.elapsed().as_secs_f64());
            if let Some(e) = refs.error() {
                return Err(anyhow!("{e}: nothing was deleted"));
            }
            if refs.is_empty() && !plan.units.is_empty() && !allow_empty {
                return Err(anyhow::Error::new(Fatal::guard(format!(
                    "no row of {} references any file, yet {} files under {UI_DIR}/ would be deleted: refusing (SPEC safety rule 2). \
                     If the table is really empty, pass --allow-empty-references",
                    rows, plan.units.len() - plan.units.trailing_empty_dirs()
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
    report.fields.insert("empty_dirs_removed".into(), report.empty_dirs_removed.into());
    db.close().await;
    Ok(Ran::Run(Box::new(Finished { exit, report, plan })))
}
