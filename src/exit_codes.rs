//! Exit codes of SPEC §6, and the error type that carries one out of `run`.

use std::fmt;
use std::process::ExitCode;

/// The process exit status, as other programs (cron wrappers, CI) read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done (or dry run), nothing failed.
    Success = 0,
    /// Done, but some items failed.
    PartialFailure = 1,
    /// Usage, configuration or connection error: nothing deleted.
    Usage = 2,
    /// A safety cap or guard stopped the run: nothing deleted.
    Guard = 3,
    /// Another run holds the lock: nothing done.
    Locked = 75,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

/// An error that decides the exit code. Anything else that reaches `main` exits 2.
#[derive(Debug)]
pub struct Fatal {
    pub exit: Exit,
    pub message: String,
}

impl Fatal {
    pub fn guard(message: impl Into<String>) -> Self {
        Fatal { exit: Exit::Guard, message: message.into() }
    }
    pub fn locked(message: impl Into<String>) -> Self {
        Fatal { exit: Exit::Locked, message: message.into() }
    }
    pub fn usage(message: impl Into<String>) -> Self {
        Fatal { exit: Exit::Usage, message: message.into() }
    }
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Fatal {}

/// The exit code an error maps to: the `Fatal` in its chain, else 2.
pub fn exit_for(err: &anyhow::Error) -> Exit {
    err.chain().find_map(|e| e.downcast_ref::<Fatal>()).map(|f| f.exit).unwrap_or(Exit::Usage)
}
