//! `cleanup-ops` (seed 002), the decision: each file under OPS_DIR is classified by the
//! policies' patterns (an operation file by its JSON `status`) and deleted when older than its
//! policy's retention, unless the policy is disabled, the file is fresh or protected; backups
//! older than their retention are pruned.

use super::is_protected;
use crate::plan::{Item, Kind, Op, Plan, Unit};
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
                p.keep(
                    Kind::File,
                    format!("ops:{shown}"),
                    "its name is not valid UTF-8: no policy pattern can match it; left alone",
                );
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
            p.keep(Kind::File, target, format!("no {data_type} row in cleanup_policies"));
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
            Some(reason) => p.keep(Kind::File, target, reason),
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

/// Backups in a directory of their own (BACKUP_DIR outside OPS_DIR, named `root`): those older
/// than their retention go, as inside OPS_DIR.
pub fn old_backups(p: &mut Plan, root: &str, files: impl Iterator<Item = OpsFile>, rules: &Rules) {
    let cutoff = rules.now - Duration::days(rules.backup_retention_days);
    for f in files {
        let Ok(rel) = f.rel else { continue };
        if f.modified <= cutoff {
            let mut u = Unit::new(vec![Item::new(
                Op::DeleteFile { root: root.into(), path: rel.clone() },
                format!("{root}:{rel}"),
                format!("backup older than {} days", rules.backup_retention_days),
                Some(f.bytes),
            )]);
            u.task = Some(BACKUP_TASK.into());
            p.units.push(u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::{decisions, render};

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// Seed 002's six defaults.
    fn policies() -> Vec<Policy> {
        let p = |t: &str, days: i64, pattern: &str| Policy {
            data_type: t.into(),
            retention_days: days,
            enabled: true,
            pattern: pattern.into(),
            description: String::new(),
        };
        vec![
            p("pipeline_operations", 30, "operation_*.json"),
            p("dbt_logs", 7, "dbt/logs/**/*.log"),
            p("failed_operations", 14, "operation_*.json"),
            p("completed_operations", 90, "operation_*.json"),
            p("system_logs", 30, "logs/**/*.log"),
            p("temp_files", 1, "tmp/**/*"),
        ]
    }

    fn rules(now: &str) -> Rules {
        Rules {
            now: at(now),
            grace_minutes: 30,
            protected: vec!["backups/".into()],
            backup_rel: Some("cleanup_backups".into()),
            backup_retention_days: 7,
        }
    }

    fn file(rel: &str, days_old: i64, text: Option<&str>, now: &str) -> OpsFile {
        OpsFile {
            rel: Ok(rel.into()),
            bytes: 10,
            modified: at(now) - Duration::days(days_old),
            text: text.map(|t| Ok(t.to_string())),
        }
    }

    #[test]
    fn operation_files_are_classified_by_their_status() {
        let cases = [
            (Ok(r#"{"status": "failed"}"#), "failed_operations"),
            (Ok(r#"{"status": "ERROR"}"#), "failed_operations"),
            (Ok(r#"{"status": "completed"}"#), "completed_operations"),
            (Ok(r#"{"status": "succeeded"}"#), "completed_operations"),
            (Ok(r#"{"status": "running"}"#), "pipeline_operations"),
            (Ok(r#"{"no": "status"}"#), "pipeline_operations"),
            (Ok("not json"), "pipeline_operations"),
            (Err("EACCES".to_string()), "pipeline_operations"),
        ];
        for (text, want) in cases {
            assert_eq!(classify_operation(text.clone()).0, want, "{text:?}");
        }
    }

    /// (file, days old, its text, deleted): each policy's retention boundary.
    #[test]
    fn each_policy_keeps_its_boundary() {
        let now = "2026-11-22T10:00:00Z";
        let done = Some(r#"{"status": "completed"}"#);
        let failed = Some(r#"{"status": "failed"}"#);
        let cases = [
            ("operation_a.json", 30, Some("{}"), true),
            ("operation_b.json", 29, Some("{}"), false),
            ("operation_c.json", 14, failed, true),
            ("operation_d.json", 13, failed, false),
            ("operation_e.json", 90, done, true),
            ("operation_f.json", 89, done, false),
            ("dbt/logs/run/x.log", 7, None, true),
            ("dbt/logs/run/y.log", 6, None, false),
            ("logs/app/a.log", 30, None, true),
            ("tmp/cache/x", 1, None, true),
            ("tmp/cache/y", 0, None, false),
            ("notes.txt", 400, None, false),
            ("cleanup_backups/2026/x.log", 7, None, true),
            ("cleanup_backups/2026/y.log", 6, None, false),
        ];
        let files = cases.iter().map(|(rel, days, text, _)| file(rel, *days, *text, now));
        let c = Classifier::new(&policies()).unwrap();
        let p = plan(files, &policies(), &c, &rules(now));
        for (rel, _, _, deleted) in cases {
            let goes = p.units.as_slice().iter().any(|u| u.items[0].target == format!("ops:{rel}"));
            assert_eq!(goes, deleted, "{rel}");
        }
        assert_eq!(p.fields["unmanaged_files"], 1, "notes.txt matches no policy");
        assert!(p.units.as_slice().iter().any(|u| u.task.as_deref() == Some(BACKUP_TASK)));
    }

    #[test]
    fn a_disabled_policy_fresh_protected_and_unreadable_names_are_kept() {
        let now = "2026-11-22T10:00:00Z";
        let mut pols = policies();
        pols.iter_mut().find(|p| p.data_type == "system_logs").unwrap().enabled = false;
        let mut fresh = file("tmp/x", 2, None, now);
        fresh.modified = at(now) - Duration::minutes(10);
        let files = vec![
            file("logs/a.log", 400, None, now),
            file("tmp/backups/x", 9, None, now),
            OpsFile { rel: Err("tmp/\u{fffd}.bin".into()), bytes: 1, modified: at("2020-01-01T00:00:00Z"), text: None },
            fresh,
        ];
        let mut r = rules(now);
        r.protected = vec!["tmp/backups/".into()];
        r.grace_minutes = 60 * 24 * 3;
        let c = Classifier::new(&pols).unwrap();
        let p = plan(files.into_iter(), &pols, &c, &r);
        insta::assert_snapshot!("ops_kept", render(&p));
        assert!(p.units.is_empty());
    }

    #[test]
    fn a_realistic_tree_and_what_moves_with_time() {
        let now = "2026-11-22T10:00:00Z";
        let tree = |now: &str| {
            vec![
                file("operation_1.json", 31, Some(r#"{"status": "running"}"#), now),
                file("operation_2.json", 20, Some(r#"{"status": "failed"}"#), now),
                file("operation_3.json", 60, Some(r#"{"status": "completed"}"#), now),
                file("dbt/logs/2026-11-15/run.log", 7, None, now),
                file("logs/worker/w.log", 29, None, now),
                file("tmp/spill/part-0", 1, None, now),
                file("cleanup_backups/2026-11-10/operation_0.json", 12, None, now),
            ]
        };
        let c = Classifier::new(&policies()).unwrap();
        let base = plan(tree(now).into_iter(), &policies(), &c, &rules(now));
        insta::assert_snapshot!("ops_plan", render(&base));
        // The same files a day later: the system log passes 30 days, the rest is as it was.
        let later = plan(tree(now).into_iter(), &policies(), &c, &rules("2026-11-23T10:00:00Z"));
        insta::assert_snapshot!("ops_plan_a_day_later", decisions(&later).join("\n"));
        // Everything a year later, shifted together: the same decisions.
        let shifted = plan(tree("2027-11-22T10:00:00Z").into_iter(), &policies(), &c, &rules("2027-11-22T10:00:00Z"));
        assert_eq!(decisions(&shifted), decisions(&base));
    }
}
