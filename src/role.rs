//! The roles of `sweep serve`'s API tokens, alone in a module so that the command line (which
//! names them) and the token store (which keeps them) share them without importing each other.

use serde::Serialize;

/// What a token may do. Each role may do everything the one before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads: dashboards, runs, items, plans, metrics, schedules.
    Viewer,
    /// Also previews: dry runs and plans.
    Operator,
    /// Also changes things: runs, applies plans, edits policies, toggles dry-run.
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [Role::Viewer, Role::Operator, Role::Admin].into_iter().find(|r| r.name() == s)
    }
}
