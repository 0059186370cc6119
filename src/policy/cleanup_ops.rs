//! `cleanup-ops` (seed 002), the decision: each file under OPS_DIR is classified by the
//! policies' patterns (an operation file by its JSON `status`) and deleted when older than its
//! policy's retention, unless the policy is disabled, the file is fresh or protected; backups
//! older than their retention are pruned.

use super::is_protected;
use crate::plan::{Item, Kept, Kind, Op, Plan, Unit};
use chrono::{DateTime, Duration, Utc};

pub const COMMAND: &str = "cleanup-ops";
/// Seed 002's data types, in the order files are matched (operations first, then by pattern).
pub const TYPES: [&str; 6] =
    ["pipeline_operations", "failed_operations", "completed_operations", "dbt_logs", "system_logs", "temp_files"];
pub const BACKUP_TASK: &str = "backups";

/// One row of `cleanup_policies`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Policy {
    pub data_type: String,
    pub retention_days: i64,
    pub enabled: bool,
    pub pattern: String,
    pub description: String,
}

/// How an operation file's JSON `status` classifies it.
pub fn classify_operation(text: Result<&str, String>) -> (&'static str, Option<String>) {
    let text = match text {
        Ok(t) => t,
        Err(e) => return ("pipeline_operations", Some(format!("unreadable ({e}): treated as a pipeline operation"))),
    };
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => match v.get("status").and_then(|s| s.as_str()).map(|s| s.to_ascii_lowercase()) {
            Some(s) if s == "failed" || s == "error" => ("failed_operations", None),
            Some(s) if s == "completed" || s == "succeeded" || s == "success" => ("completed_operations", None),
            _ => ("pipeline_operations", None),
        },
        Err(e) => ("pipeline_operations", Some(format!("not valid JSON ({e}): treated as a pipeline operation"))),
    }
}

/// Glob matchers for the policies' patterns (relative to OPS_DIR; `*` stops at `/`).
pub struct Classifier {
    operations: globset::GlobMatcher,
    others: Vec<(String, globset::GlobMatcher)>,
}

impl Classifier {
    pub fn new(policies: &[Policy]) -> Result<Classifier, String> {
        let glob = |p: &Policy| {
            globset::GlobBuilder::new(&p.pattern).literal_separator(true).build().map(|g| g.compile_matcher()).map_err(
                |e| format!("cleanup_policies.pattern {:?} of {} is not a valid glob: {e}", p.pattern, p.data_type),
            )
        };
        let find = |t: &str| policies.iter().find(|p| p.data_type == t);
        let ops = find("pipeline_operations")
            .ok_or_else(|| "cleanup_policies has no pipeline_operations row: run `sweep migrate`".to_string())?;
        let mut others = Vec::new();
        for t in ["dbt_logs", "system_logs", "temp_files"] {
            if let Some(p) = find(t) {
                others.push((t.to_string(), glob(p)?));
            }
        }
        Ok(Classifier { operations: glob(ops)?, others })
    }

    /// Whether deciding this file needs its text (an operation file: its JSON `status`).
    pub fn wants_text(&self, rel: &str) -> bool {
        self.operations.is_match(rel)
    }
}

/// The fixed inputs of the decision.
pub struct Rules {
    pub now: DateTime<Utc>,
    pub grace_minutes: i64,
    pub protected: Vec<String>,
    /// The backup directory relative to OPS_DIR, if it is inside it.
    pub backup_rel: Option<String>,
    pub backup_retention_days: i64,
}

/// One file under OPS_DIR, as the walk found it (never following links).
#[derive(Debug, Clone)]
pub struct OpsFile {
    /// Relative to OPS_DIR with `/` separators; `Err` holds the name shown lossily when it is
    /// not UTF-8.
    pub rel: Result<String, String>,
    pub bytes: u64,
    pub modified: DateTime<Utc>,
    /// The file's text, read only when [`Classifier::wants_text`] asked for it.
    pub text: Option<Result<String, String>>,
}

/// Decide each walked file by its policy (files in any order).
pub fn plan(files: impl Iterator<Item = OpsFile>, policies: &[Policy], m: &Classifier, rules: &Rules) -> Plan {
    let mut p = Plan::new(COMMAND, rules.now);
    p.batch_size = 200;
    let grace = rules.now - Duration::minutes(rules.grace_minutes);
    let policy = |t: &str| policies.iter().find(|p| p.data_type == t);
    let mut unmanaged = 0u64;
    for f in files {
        let OpsFile { rel, bytes, modified, text } = f;
        let rel = match rel {
            Ok(rel) => rel,
            Err(shown) => {
                p.scanned += 1;
                p.kept.push(Kept {
                    kind: Kind::File,
                    target: format!("ops:{shown}"),
                    reason: "its name is not valid UTF-8: no policy pattern can match it; left alone".into(),
                });
                continue;
            }
        };
        let target = format!("ops:{rel}");
        // Old backups are pruned; nothing else in the backup directory is a candidate.
        if let Some(b) = &rules.backup_rel {
            if rel.starts_with(&format!("{b}/")) {
                let cutoff = rules.now - Duration::days(rules.backup_retention_days);
                if modified <= cutoff {
                    let mut u = Unit::new(vec![Item::new(
                        Op::DeleteFile { root: "ops".into(), path: rel },
                        target,
                        format!("backup older than {} days", rules.backup_retention_days),
                        Some(bytes),
                    )]);
                    u.task = Some(BACKUP_TASK.into());
                    p.units.push(u);
                }
                continue;
            }
        }
        p.scanned += 1;
        let (data_type, note) = if m.operations.is_match(&rel) {
            let text = text.unwrap_or_else(|| Err("not read".into()));
            classify_operation(text.as_deref().map_err(|e| e.clone()))
        } else if let Some((t, _)) = m.others.iter().find(|(_, g)| g.is_match(&rel)) {
            (TYPES.iter().copied().find(|x| x == t).unwrap_or("temp_files"), None)
        } else {
            unmanaged += 1;
            continue;
        };
        let Some(pol) = policy(data_type) else {
            p.kept.push(Kept { kind: Kind::File, target, reason: format!("no {data_type} row in cleanup_policies") });
            continue;
        };
        let cutoff = rules.now - Duration::days(pol.retention_days);
        let why_kept = if !pol.enabled {
            Some(format!("{data_type} policy is disabled"))
        } else if modified > cutoff {
            Some(format!("{data_type}: modified {} (kept {} days)", modified.to_rfc3339(), pol.retention_days))
        } else if modified > grace {
            Some("modified within the grace period".into())
        } else if is_protected(&rel, &rules.protected) {
            Some("under a protected prefix".into())
        } else {
            None
        };
        match why_kept {
            Some(reason) => p.kept.push(Kept { kind: Kind::File, target, reason }),
            None => {
                let mut reason =
                    format!("{data_type}: modified {} (older than {} days)", modified.to_rfc3339(), pol.retention_days);
                if let Some(n) = note {
                    reason.push_str(&format!("; {n}"));
                }
                let mut u = Unit::new(vec![Item::new(
                    Op::DeleteFile { root: "ops".into(), path: rel },
                    target,
                    reason,
                    Some(bytes),
                )]);
                u.task = Some(data_type.to_string());
                p.units.push(u);
            }
        }
    }
    p.fields.insert("unmanaged_files".into(), unmanaged.into());
    p
}
