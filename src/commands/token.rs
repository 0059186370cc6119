//! `token create|list|revoke`: the API tokens `sweep serve` accepts.

use crate::cli::{TokenAction, TokenArgs};
use crate::exit_codes::{Exit, Fatal};
use crate::run::Ctx;
use crate::token;
use anyhow::Result;
use chrono::Utc;

pub async fn run(ctx: &Ctx, a: &TokenArgs) -> Result<Exit> {
    let db = ctx.connect().await?;
    if !db.sweep_tables_ready().await? {
        return Err(Fatal::usage(format!(
            "sweep's tables are missing or out of date in {}: run `sweep migrate` first",
            db.url
        ))
        .into());
    }
    let exit = match &a.action {
        TokenAction::Create { name, role } => {
            token::check_name(name).map_err(|e| Fatal::usage(format!("{e:#}")))?;
            let t = token::create(&db, name, *role, Utc::now()).await.map_err(|e| Fatal::usage(format!("{e:#}")))?;
            // Alone on stdout, for `TOKEN=$(sweep token create …)`; the rest on stderr.
            println!("{t}");
            eprintln!("created token {name:?} ({}); it is shown this once, only its hash is kept", role.name());
            Exit::Success
        }
        TokenAction::List => {
            let tokens = token::list(&db).await?;
            if ctx.global.json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            } else if tokens.is_empty() {
                println!("no tokens: create one with `sweep token create --name NAME --role viewer|operator|admin`");
            } else {
                let t = |v: Option<chrono::DateTime<Utc>>| {
                    v.map_or("-".to_string(), |t| t.format("%Y-%m-%d %H:%M").to_string())
                };
                println!("{:<24} {:<9} {:<17} {:<17} revoked", "name", "role", "created", "last used");
                for k in tokens {
                    println!(
                        "{:<24} {:<9} {:<17} {:<17} {}",
                        k.name,
                        k.role.name(),
                        t(Some(k.created_at)),
                        t(k.last_used_at),
                        t(k.revoked_at)
                    );
                }
            }
            Exit::Success
        }
        TokenAction::Revoke { name } => {
            if token::revoke(&db, name, Utc::now()).await? {
                println!("revoked token {name:?}");
                Exit::Success
            } else {
                return Err(Fatal::usage(format!("no live token named {name:?} (see `sweep token list`)")).into());
            }
        }
    };
    db.close().await;
    Ok(exit)
}
