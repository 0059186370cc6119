//! `sweep recover [--command NAME]`: settle now what dead runs left, without starting a new run
//! of their command (which would do it too). For each command, under its run lock: every run
//! still marked `running` has its intents checked against what is there and is marked
//! `interrupted` (`crate::recover`). Roots come from today's settings, stores from what each
//! run recorded when it started.

use crate::cli::RecoverArgs;
use crate::db::lock;
use crate::exit_codes::{Exit, Fatal};
use crate::history::COMMANDS;
use crate::run::{require_audit_tables, Ctx};
use crate::store::local::LocalRoot;
use crate::store::object::StoreRecord;
use crate::store::Resources;
use anyhow::Result;
use std::collections::BTreeMap;

pub async fn run(ctx: &Ctx, a: &RecoverArgs) -> Result<Exit> {
    if ctx.global.show_config {
        ctx.print_config(Vec::new());
        return Ok(Exit::Success);
    }
    let commands: Vec<&str> = match &a.command {
        Some(c) => match COMMANDS.iter().find(|k| **k == c.as_str()) {
            Some(k) => vec![*k],
            None => return Err(Fatal::usage(format!("--command {c:?}: choose from {}", COMMANDS.join(", "))).into()),
        },
        None => COMMANDS.to_vec(),
    };
    let db = ctx.connect().await?;
    require_audit_tables(&db).await?;
    let mut report = Vec::new();
    for command in commands {
        let dead = crate::recover::dead_runs(&db, command).await?;
        if dead.is_empty() {
            continue;
        }
        if ctx.settings.dry_run.value {
            for id in dead {
                report.push(serde_json::json!({"command": command, "run_id": id, "would_settle": true}));
            }
            continue;
        }
        // Holding the lock: a `running` run of this command is dead, not in progress.
        let held = lock::acquire(&db, command).await?;
        for id in crate::recover::dead_runs(&db, command).await? {
            let res = resources(ctx, &db, &id).await?;
            let s = crate::recover::settle(&db, &id, &res).await?;
            report.push(serde_json::json!({
                "command": command, "run_id": id, "deleted": s.done, "not_done": s.not_done, "unknown": s.unknown,
            }));
        }
        held.release().await;
    }
    if ctx.global.json {
        println!("{}", serde_json::Value::Array(report));
    } else if report.is_empty() {
        println!("no interrupted run to settle");
    } else {
        for r in &report {
            println!("{r}");
        }
    }
    db.close().await;
    Ok(Exit::Success)
}

/// The roots configured now and the stores the run recorded.
async fn resources(ctx: &Ctx, db: &std::sync::Arc<crate::db::Db>, run_id: &str) -> Result<Resources> {
    let st = &ctx.settings;
    let mut res = Resources { db: Some(db.clone()), ..Default::default() };
    let ops = st.ops_dir(None)?.map(|s| s.value);
    let backups = ops.as_deref().map(|o| st.ops_backup_dir(o)).transpose()?.map(|s| s.value);
    let roots = [
        ("media", st.media_root.as_ref().map(|s| s.value.clone())),
        ("data", st.data_dir.as_ref().map(|s| s.value.clone())),
        ("ops", ops),
        ("backups", backups),
    ];
    for (name, dir) in roots {
        if let Some(Ok(root)) = dir.map(|d| LocalRoot::open(name, &d)) {
            res.roots.insert(name.to_string(), root);
        }
    }
    let mut q = db.sql();
    q.push("SELECT ").as_text("details").push(" FROM cleanup_runs WHERE id = ").bind(run_id);
    let details: Option<String> = db.read(&q, |r| r.text(0)).await?.into_iter().next().flatten();
    let details: serde_json::Value = details.and_then(|d| serde_json::from_str(&d).ok()).unwrap_or_default();
    let stores: BTreeMap<String, StoreRecord> = serde_json::from_value(details["stores"].clone()).unwrap_or_default();
    for (name, rec) in stores {
        match rec.open(&st.object_storage) {
            Ok(s) => {
                res.stores.insert(name, s);
            }
            Err(e) => tracing::warn!(target: "cleanup", "the run's {name} store cannot be opened now: {e}"),
        }
    }
    Ok(res)
}
