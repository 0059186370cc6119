//! Plans on disk: `--plan-out` writes one (versioned, with where it was made and each item's
//! fingerprint), `sweep apply PLAN.json` carries it out after checking that it is recent, that
//! it is not a forecast, and that the database, roots and stores are the ones it was made
//! against. Each item is then re-checked by the executor just before it is deleted.

use crate::cli::ApplyArgs;
use crate::executor::{Backup, BackupRecord};
use crate::exit_codes::{Exit, Fatal};
use crate::plan::Kind;
use crate::planfile::read_plan;
use crate::run::{backup_dir, run_policy, Channel, Ctx, Ran};
use crate::store::local::LocalRoot;
use crate::store::Resources;
use anyhow::{Context, Result};
use chrono::Utc;
use std::path::PathBuf;

/// The local roots configured now, canonical: a plan's roots must be among them.
fn configured_dirs(ctx: &Ctx) -> Result<Vec<PathBuf>> {
    let st = &ctx.settings;
    let mut dirs: Vec<PathBuf> =
        [st.media_root.as_ref(), st.data_dir.as_ref()].into_iter().flatten().map(|s| s.value.clone()).collect();
    if let Some(ops) = st.ops_dir(None)? {
        dirs.push(st.ops_backup_dir(&ops.value)?.value);
        dirs.push(ops.value);
    }
    if let Some(store) = &st.raw.attachments.store {
        if !store.contains("://") {
            dirs.push(PathBuf::from(store));
        }
    }
    Ok(dirs.into_iter().filter_map(|d| std::fs::canonicalize(d).ok()).collect())
}

/// `sweep apply PLAN.json`.
pub async fn run(ctx: &Ctx, a: &ApplyArgs, chan: &Channel) -> Result<Ran> {
    let doc = read_plan(&a.plan, a.max_plan_age, Utc::now())?;
    if ctx.global.show_config {
        // Today's settings, then those the plan was made with.
        let rows = doc.config.iter().map(|r| (format!("plan: {}", r.key), r.value.clone(), r.source.clone())).collect();
        ctx.print_config(rows);
        return Ok(Ran::Done(Exit::Success));
    }
    let mut plan = doc.plan;
    let mut has_rows = false;
    plan.units.each(|u| has_rows |= u.guard.is_some() || u.items.iter().any(|i| i.kind == Kind::Row))?;

    // The database is given again (its credentials are not in the plan): it must be the same.
    let db = match (&doc.database, ctx.settings.database_url.is_some()) {
        (Some(planned), true) => {
            let db = ctx.connect().await?;
            let now = db.identity().await.context("cannot identify the database")?;
            if !planned.same(&now) {
                return Err(Fatal::usage(format!(
                    "the plan was made against {} (database {}, {}), but the database now is {} (database {}, {}): refusing to apply it to another database; nothing was deleted",
                    planned.shown, planned.database, planned.server, now.shown, now.database, now.server
                ))
                .into());
            }
            Some(db)
        }
        (Some(planned), false) => {
            return Err(Fatal::usage(format!(
                "the plan was made against {}: pass --database-url or set DATABASE_URL to that database",
                planned.shown
            ))
            .into())
        }
        (None, _) if has_rows => {
            return Err(Fatal::usage("the plan deletes rows but records no database: it cannot be applied").into())
        }
        (None, _) => None,
    };

    // Roots and stores are where the plan says: they must still be there and be the same, and
    // a root must be a directory configured now (an edited or misplaced plan cannot point sweep
    // at another tree).
    let configured = configured_dirs(ctx)?;
    let mut res = Resources { db: db.clone(), ..Default::default() };
    for (name, path) in &doc.roots {
        let root = LocalRoot::open(name, path)
            .map_err(|e| Fatal::usage(format!("the plan's {name} root is not usable now: {e}; nothing was deleted")))?;
        if root.path() != path {
            return Err(Fatal::usage(format!(
                "the plan's {name} root {} now resolves to {}: refusing (a moved or re-pointed directory); nothing was deleted",
                path.display(),
                root.path().display()
            ))
            .into());
        }
        if !configured.contains(path) {
            return Err(Fatal::usage(format!(
                "the plan's {name} root {} is not a directory configured now (MEDIA_ROOT, DATA_DIR, OPS_DIR or [attachments] store): refusing; nothing was deleted",
                path.display()
            ))
            .into());
        }
        res.roots.insert(name.clone(), root);
    }
    for (name, rec) in &doc.stores {
        let st = rec
            .open(&ctx.settings.object_storage)
            .map_err(|e| Fatal::usage(format!("the plan's {name} store cannot be opened now: {e}")))?;
        res.stores.insert(name.clone(), st);
    }

    // Backups: those asked for now, else those the plan's command would make (cleanup-ops').
    let backup = match (&ctx.backup, &doc.backup) {
        (Some(b), _) => Some(b.clone()),
        (None, Some(BackupRecord::Dir { dir, per_root })) => {
            Some(Backup::Dir { dir: backup_dir(dir, ctx.settings.dry_run.value)?, per_root: *per_root })
        }
        (None, Some(BackupRecord::Store(rec))) => Some(Backup::Store(
            rec.open(&ctx.settings.object_storage)
                .map_err(|e| Fatal::usage(format!("the plan's backup store cannot be opened now: {e}")))?,
        )),
        (None, None) => None,
    };

    plan.fields.insert("applied_plan".into(), a.plan.display().to_string().into());
    plan.fields.insert("plan_created_at".into(), doc.created_at.to_rfc3339().into());
    plan.fields.insert("plan_now".into(), plan.now.to_rfc3339().into());
    let command = plan.command.clone();
    tracing::info!(
        target: "cleanup",
        "Applying {} ({command}, written {}): {} items",
        a.plan.display(),
        doc.created_at.to_rfc3339(),
        plan.item_count()
    );
    let mut spec = ctx.spec(&command, &[], db.clone(), &res);
    spec.backup = backup;
    spec.reviewed_plan = true;
    let finished = run_policy(ctx, spec, chan, || async { Ok(plan) }).await;
    if let Some(db) = db {
        db.close().await;
    }
    Ok(Ran::Run(Box::new(finished?)))
}
