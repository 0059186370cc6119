//! sweep decides what is safe to delete from a web backend's database, disk and object
//! storage, shows that decision, and carries it out.
//!
//! Layers, each using only those below it (docs/design.md has the map): `app` (the command
//! line) → `commands` (each command's settings and gathering, started through the run API in
//! `run`) → `policy` (pure decisions) → `executor` (carries out any plan) → `store`, `db` →
//! `plan`, `report`, `event`.

pub mod app;
pub mod cli;
pub mod commands;
pub mod config;
pub mod db;
pub mod demo;
pub mod event;
pub mod executor;
pub mod exit_codes;
pub mod failpoint;
pub mod fingerprint;
pub mod gather;
pub mod history;
pub mod ident;
pub mod logging;
pub mod names;
pub mod notify;
pub mod ops_policies;
pub mod plan;
pub mod planfile;
pub mod policy;
pub mod progress;
pub mod recover;
pub mod reference;
pub mod refs;
pub mod report;
pub mod role;
pub mod run;
pub mod schedule;
pub mod scheduler;
pub mod serve;
pub mod status;
pub mod store;
pub mod switches;
pub mod token;

use clap::Parser;
use std::process::ExitCode;

/// The binary's `main`: parse, run, print any error with its causes, map it to an exit code.
pub fn main_entry() -> ExitCode {
    let cli = cli::Cli::parse();
    let _log_guard = logging::init(&cli.global);
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit_codes::Exit::Usage.into();
        }
    };
    let result = rt.block_on(app::run(cli));
    drop(rt);
    drop(_log_guard); // flush the logs before the error line
    match result {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("error: {e:#}");
            exit_codes::exit_for(&e).into()
        }
    }
}
