//! The pure policies: one module per command, each a function from plain facts (rows, file
//! and object facts, `now`, rules) to a [`Plan`](crate::plan::Plan) with every item to delete
//! and every thing kept, each with why.
//!
//! Nothing here does I/O: no database, no file system, no object store, no clock, no async.
//! Gathering the facts is the commands' work (`crate::commands::*`), carrying out the plan is
//! the executor's. `tests/policy_purity.rs` fails the build's tests if a policy module imports
//! an I/O crate. Because `now` is an argument, a plan can be made as of any instant, and the
//! tests re-run each policy at a shifted `now` to show that only time-dependent decisions move.

pub mod bulk_cloudcube;
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

/// Reading plans in tests: the whole plan as a reviewer sees it (for snapshots), and only its
/// decisions (what goes, what stays) to compare plans made at different instants.
#[cfg(test)]
pub(crate) mod testing {
    use crate::plan::Plan;
    use std::fmt::Write;

    pub fn render(p: &Plan) -> String {
        let mut s = String::new();
        for u in p.units.as_slice() {
            for (i, it) in u.items.iter().enumerate() {
                let head = if i == 0 { "DELETE" } else { "  then" };
                let task = u.task.as_deref().map(|t| format!("[{t}] ")).unwrap_or_default();
                let _ = write!(s, "{head} {task}{} {} ({})", it.kind.as_str(), it.target, it.reason);
                if let Some(why) = &it.refused {
                    let _ = write!(s, " REFUSED: {why}");
                }
                s.push('\n');
            }
            if let Some(g) = &u.guard {
                let _ = writeln!(s, "  guard {} {}={}", g.table.as_str(), g.key_column.as_str(), g.key);
            }
        }
        for k in &p.kept {
            let _ = writeln!(s, "KEEP {} {} ({})", k.kind.as_str(), k.target, k.reason);
        }
        for (kind, n) in &p.kept_unlisted {
            let _ = writeln!(s, "KEEP {n} more {}", kind.as_str());
        }
        let _ = writeln!(s, "scanned {}", p.scanned);
        s
    }

    /// What goes and what stays, without reasons (which name instants).
    pub fn decisions(p: &Plan) -> Vec<String> {
        let mut v: Vec<String> = p
            .units
            .as_slice()
            .iter()
            .flat_map(|u| &u.items)
            .map(|i| {
                format!(
                    "DELETE {} {}{}",
                    i.kind.as_str(),
                    i.target,
                    if i.refused.is_some() { " (refused)" } else { "" }
                )
            })
            .collect();
        v.extend(p.kept.iter().map(|k| format!("KEEP {} {}", k.kind.as_str(), k.target)));
        v
    }
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
