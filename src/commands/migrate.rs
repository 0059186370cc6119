//! `migrate`: create or upgrade sweep's own tables, nothing else.

use crate::db::Db;
use crate::exit_codes::Exit;
use crate::run::Ctx;
use anyhow::Result;

pub async fn run(ctx: &Ctx) -> Result<Exit> {
    if ctx.global.show_config {
        ctx.print_config(Vec::new());
        return Ok(Exit::Success);
    }
    let url = ctx.settings.require_database()?;
    let db = Db::connect(url, false).await?;
    if ctx.settings.dry_run.value {
        let ready = db.sweep_tables_ready().await?;
        println!(
            "{}",
            if ready {
                "sweep's tables are up to date (dry run: nothing changed)"
            } else {
                "sweep migrate would create or upgrade cleanup_runs, cleanup_audit and cleanup_policies (dry run: nothing changed)"
            }
        );
        return Ok(Exit::Success);
    }
    let applied = db.migrate().await?;
    if applied.is_empty() {
        println!("sweep's tables are up to date in {}", db.url);
    } else {
        println!(
            "applied migration(s) {applied:?} in {}: cleanup_runs, cleanup_audit, cleanup_policies are ready",
            db.url
        );
    }
    db.close().await;
    Ok(Exit::Success)
}
