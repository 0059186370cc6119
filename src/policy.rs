//! The pure policies: one module per command, each a function from plain facts (rows, file
//! and object facts, `now`, rules) to a [`Plan`](crate::plan::Plan) with every item to delete
//! and every thing kept, each with why.
//!
//! Nothing here does I/O: no database, no file system, no object store, no clock, no async.
//! Gathering the facts is the commands' work (`crate::commands::*`), carrying out the plan is
//! the executor's. `tests/policy_purity.rs` fails the build's tests if a policy module imports
//! an I/O crate. Because `now` is an argument, a plan can be made as of any instant, and the
//! tests re-run each policy at a shifted `now` to show that only time-dependent decisions move.

pub mod cleanup_attachments;
pub mod cleanup_ops;
pub mod cleanup_ui_files;
pub mod prune_modules;
pub mod worker_once;

/// True when `rel` lies under one of the protected prefixes (SPEC §5 rule 3: `backups/`).
pub fn is_protected(rel: &str, prefixes: &[String]) -> bool {
    let rel = rel.trim_start_matches("./");
    prefixes.iter().any(|p| {
        let p = p.trim_end_matches('/');
        rel == p || rel.starts_with(&format!("{p}/"))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn protected_prefixes_match_whole_segments() {
        let p = vec!["backups/".to_string()];
        assert!(super::is_protected("backups/a.png", &p));
        assert!(super::is_protected("backups", &p));
        assert!(!super::is_protected("backups2/a.png", &p));
        assert!(!super::is_protected("a/backups/x", &p));
    }
}
