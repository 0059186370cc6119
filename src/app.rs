//! The command line as a caller of the run API: one `match` over the parsed command. Runs go
//! through `commands::start` (the same path `serve` will take); Ctrl-C cancels between
//! batches; the report is printed at the end.

use crate::cli::{Cli, Command};
use crate::commands::{self, RunRequest};
use crate::exit_codes::Exit;
use crate::notify::Notifier;
use crate::run::{Ctx, Ran};
use anyhow::Result;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Run the parsed command line.
pub async fn run(cli: Cli) -> Result<Exit> {
    let command = cli.command.name();
    let ctx = match Ctx::new(cli.global) {
        Ok(c) => c,
        Err(e) => {
            // The config may be what is wrong: the environment's targets are still told.
            let n = Notifier::from_env(&crate::config::ProcessEnv);
            n.failure(command, &crate::run::new_run_id(), &e).await;
            return Err(e);
        }
    };
    let request = match cli.command {
        Command::Migrate => return commands::migrate::run(&ctx).await,
        Command::Restore(a) => return commands::restore::run(&ctx, &a).await,
        Command::Demo(a) => return crate::demo::run(&ctx, &a).await,
        Command::Status(a) => return crate::status::run(ctx, &a).await,
        Command::Recover(a) => return commands::recover::run(&ctx, &a).await,
        Command::Serve(a) => return crate::serve::run(ctx, a).await,
        Command::Token(a) => return commands::token::run(&ctx, &a).await,
        run => RunRequest::of(run).expect("every other command is a run"),
    };
    let ctx = Arc::new(ctx);
    let handle = commands::start(ctx.clone(), request).without_events();
    let cancel = handle.canceller();
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::warn!(target: "cleanup", "Ctrl-C: stopping after the current batch (press again to kill)");
            cancel.store(true, Ordering::SeqCst);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    let run_id = handle.run_id().to_string();
    let ran = handle.finish().await;
    ctrl_c.abort();
    let ran = match ran {
        Ok(r) => r,
        Err(e) => {
            ctx.notifier.failure(command, &run_id, &e).await;
            return Err(e);
        }
    };
    match ran {
        Ran::Done(exit) => Ok(exit),
        Ran::Run(f) => {
            crate::report::print(ctx.global.json, &f.report, &f.plan)?;
            if f.report.status == "aborted" {
                // Why, on stderr too, where scripts without --json look (the report has it).
                let why = f.report.fields.get("message").and_then(|m| m.as_str()).unwrap_or("a safety guard");
                eprintln!("error: {why}");
            }
            Ok(f.exit)
        }
    }
}
