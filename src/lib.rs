//! sweep decides what is safe to delete from a web backend's database, disk and object
//! storage, shows that decision, and carries it out.
//!
//! Shape: `cli` parses, `config` layers and validates, a command in `commands` gathers
//! candidates and builds a `plan::Plan` with a pure function, and `executor` carries out any
//! plan (dry or real) with batching, concurrency, audit and caps.

pub mod cli;
pub mod commands;
pub mod config;
pub mod db;
pub mod executor;
pub mod exit_codes;
pub mod fingerprint;
pub mod ident;
pub mod logging;
pub mod plan;
pub mod progress;
pub mod reference;
pub mod refs;
pub mod report;
pub mod store;

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
    let result = rt.block_on(commands::run(cli));
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
