//! `prune-modules` (seed 000), the decision: per module, the N latest versions stay (highest
//! version, then later published_at, then higher id), the others go, each with the UI files
//! that only pruned versions reference; then the directories that leaves empty.
//!
//! Rows arrive as a stream, newest first within each module: [`KeepLatest`] ranks them one at
//! a time, so no module's rows are held.

use super::is_protected;
use crate::ident::Ident;
use crate::plan::{Item, Kept, Kind, Op, Plan, RowRule, Unit};
use crate::refs::{ModuleRow, PayloadRefs, RefSet, MARKER};
use chrono::{DateTime, Duration, Utc};
use std::collections::{BTreeMap, BTreeSet};

pub const COMMAND: &str = "prune-modules";

/// The table and columns a plan names (validated identifiers).
#[derive(Debug, Clone)]
pub struct ModuleTable {
    pub table: Ident,
    pub id: Ident,
    pub module_id: Ident,
    pub version: Ident,
    pub published_at: Ident,
}

impl ModuleTable {
    fn target(&self, row: &ModuleRow) -> String {
        format!("{} {}={} (module {} v{})", self.table.as_str(), self.id.as_str(), row.key, row.module_id, row.version)
    }
}

/// Ranks a stream of rows ordered by module, newest first: the first `keep` of each module stay.
pub struct KeepLatest {
    keep: i64,
    current: Option<i64>,
    rank: i64,
}

impl KeepLatest {
    pub fn new(keep: i64) -> KeepLatest {
        KeepLatest { keep, current: None, rank: 0 }
    }

    /// Whether this row is among its module's latest `keep` (rows must come in order).
    pub fn keeps(&mut self, row: &ModuleRow) -> bool {
        if self.current != Some(row.module_id) {
            self.current = Some(row.module_id);
            self.rank = 0;
        }
        self.rank += 1;
        self.rank <= self.keep
    }

    /// The kept entry for a row this ranker keeps.
    pub fn kept(&self, t: &ModuleTable, row: &ModuleRow) -> Kept {
        Kept {
            kind: Kind::Row,
            target: t.target(row),
            reason: format!("among the latest {} versions of module {}", self.keep, row.module_id),
        }
    }
}

/// The files that only pruned rows reference: not referenced by any kept row (`protect`), not
/// under the prefix of a module whose payload could not be read. Sorted, without duplicates.
pub fn candidates(pruned: &[ModuleRow], protect: &RefSet, protect_prefixes: &[String]) -> Vec<String> {
    let set: BTreeSet<&String> = pruned
        .iter()
        .filter_map(|r| match &r.refs {
            PayloadRefs::Known(v) => Some(v.iter()),
            PayloadRefs::Unknown { .. } => None,
        })
        .flatten()
        .filter(|f| !protect.contains(f) && !protect_prefixes.iter().any(|p| f.starts_with(p.as_str())))
        .collect();
    set.into_iter().cloned().collect()
}

/// One directory's entries: (name, is a directory). A link counts as a file.
pub type Listing = BTreeMap<String, Vec<(String, bool)>>;

/// What is known of a candidate file when planning.
#[derive(Debug, Clone, PartialEq)]
pub enum FileState {
    Present { bytes: u64, modified: DateTime<Utc> },
    Missing,
    Refused(String),
}

/// The fixed inputs of the decision.
pub struct Rules {
    pub now: DateTime<Utc>,
    pub keep: i64,
    pub grace_minutes: i64,
    pub protected: Vec<String>,
    pub table: ModuleTable,
}

/// The pure decision. `pruned` are the rows past the latest `keep` of their module;
/// `files` says what is on disk for each file that only pruned rows reference, and `dirs` what
/// the directories holding them contain (for the directories left empty).
pub fn plan(
    pruned: Vec<ModuleRow>,
    kept: Vec<Kept>,
    files: &BTreeMap<String, FileState>,
    dirs: &Listing,
    rules: &Rules,
) -> Plan {
    let s = &rules.table;
    let mut p = Plan::new(COMMAND, rules.now);
    p.batch_size = 100;
    p.kept = kept;
    p.scanned = (pruned.len() + p.kept.len()) as u64;
    let grace_cutoff = rules.now - Duration::minutes(rules.grace_minutes);

    // Which files each pruned row would take with it.
    let deletable = |f: &str, p: &mut Plan| -> bool {
        let target = format!("media:{f}");
        match files.get(f) {
            None | Some(FileState::Missing) => false,
            Some(FileState::Refused(why)) => {
                // A refusal is a reported item (failed), not a silent keep; its rows still go.
                let mut it = Item::new(
                    Op::DeleteFile { root: "media".into(), path: f.to_string() },
                    target,
                    "referenced only by pruned versions",
                    None,
                );
                it.refused = Some(why.clone());
                p.units.push(Unit::new(vec![it]));
                false
            }
            Some(_) if is_protected(f, &rules.protected) => {
                p.keep(Kind::File, target, "under a protected prefix");
                false
            }
            Some(FileState::Present { modified, .. }) if *modified > grace_cutoff => {
                p.keep(Kind::File, target, format!("modified within the {}-minute grace period", rules.grace_minutes));
                false
            }
            Some(FileState::Present { .. }) => true,
        }
    };
    let mut ok_files: BTreeMap<&str, bool> = BTreeMap::new();
    for f in files.keys() {
        let ok = deletable(f, &mut p);
        ok_files.insert(f.as_str(), ok);
    }

    // Rows that share a file go in one unit, so the file goes only after all of them.
    let mut parent: Vec<usize> = (0..pruned.len()).collect();
    fn find(parent: &mut [usize], i: usize) -> usize {
        let mut r = i;
        while parent[r] != r {
            r = parent[r];
        }
        parent[i] = r;
        r
    }
    let mut owner: BTreeMap<String, usize> = BTreeMap::new();
    for (i, row) in pruned.iter().enumerate() {
        if let PayloadRefs::Known(refs) = &row.refs {
            for f in refs.iter().filter(|f| ok_files.get(f.as_str()) == Some(&true)) {
                match owner.get(f.as_str()) {
                    None => {
                        owner.insert(f.clone(), i);
                    }
                    Some(&j) => {
                        let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                        parent[a] = b;
                    }
                }
            }
        }
    }
    let mut groups: BTreeMap<usize, (Vec<usize>, Vec<String>)> = BTreeMap::new();
    for i in 0..pruned.len() {
        let r = find(&mut parent, i);
        groups.entry(r).or_default().0.push(i);
    }
    for (f, i) in owner {
        let r = find(&mut parent, i);
        groups.entry(r).or_default().1.push(f);
    }

    let rule = RowRule::NotLatest {
        group_column: s.module_id.clone(),
        order_columns: vec![s.version.clone(), s.published_at.clone(), s.id.clone()],
        keep: rules.keep,
    };
    let mut pruned: Vec<Option<ModuleRow>> = pruned.into_iter().map(Some).collect();
    for (_, (rows, group_files)) in groups {
        let mut items = Vec::new();
        let mut versions = Vec::new();
        for i in rows {
            let row = pruned[i].take().expect("each row is in one group");
            versions.push(format!("module {} v{}", row.module_id, row.version));
            let it = Item::new(
                Op::DeleteRow {
                    table: s.table.clone(),
                    key_column: s.id.clone(),
                    key: row.key.clone(),
                    rule: Some(rule.clone()),
                },
                s.target(&row),
                format!("not among the latest {} versions of module {}", rules.keep, row.module_id),
                None,
            );
            items.push(it);
        }
        for f in group_files {
            let bytes = match files.get(&f) {
                Some(FileState::Present { bytes, .. }) => Some(*bytes),
                _ => None,
            };
            items.push(Item::new(
                Op::DeleteFile { root: "media".into(), path: f.clone() },
                format!("media:{f}"),
                format!("referenced only by pruned versions ({})", versions.join(", ")),
                bytes,
            ));
        }
        p.units.push(Unit::new(items));
    }
    // A module's versions are few: the plan is small enough to read back here.
    let mut deleted: BTreeSet<String> = BTreeSet::new();
    if let Err(e) = p.units.each_item(|i| {
        if let Op::DeleteFile { path, .. } = &i.op {
            deleted.insert(path.clone());
        }
        true
    }) {
        tracing::error!(target: "cleanup", "{e:#}");
    }
    let deleted: BTreeSet<&str> = deleted.iter().map(String::as_str).collect();
    let empty = Unit::empty_dirs(
        "media",
        deleted.iter().filter_map(|d| crate::plan::parent(d)),
        MARKER,
        |d| holds(d, dirs, &deleted),
        "left empty: its files went with pruned versions",
    );
    p.units.extend(empty);
    p.fields.insert("keep_latest".into(), rules.keep.into());
    p
}

/// Whether `dir` holds anything that stays: a file not deleted, a directory that holds
/// something, or anything not listed (unknown is kept).
fn holds(dir: &str, dirs: &Listing, deleted: &BTreeSet<&str>) -> bool {
    match dirs.get(dir) {
        None => true,
        Some(entries) => entries.iter().any(|(name, is_dir)| {
            let child = format!("{dir}/{name}");
            if *is_dir {
                holds(&child, dirs, deleted)
            } else {
                !deleted.contains(child.as_str())
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::{decisions, render};

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn table() -> ModuleTable {
        let i = |s: &str| Ident::new(s).unwrap();
        ModuleTable {
            table: i("authoring_publishedmodule"),
            id: i("id"),
            module_id: i("module_id"),
            version: i("version"),
            published_at: i("published_at"),
        }
    }

    fn rules(now: &str) -> Rules {
        Rules { now: at(now), keep: 2, grace_minutes: 30, protected: vec!["backups/".into()], table: table() }
    }

    fn row(key: &str, module: i64, version: i64, files: &[&str]) -> ModuleRow {
        ModuleRow {
            key: key.into(),
            module_id: module,
            version,
            published_at: None,
            refs: PayloadRefs::Known(files.iter().map(|f| f.to_string()).collect()),
        }
    }

    /// Rows in the order the query gives them: module, then newest first.
    #[test]
    fn keep_latest_ranks_each_module_from_its_newest_row() {
        let mut k = KeepLatest::new(2);
        let stream = [
            (1, 5, true),
            (1, 4, true),
            (1, 3, false),
            (1, 1, false),
            (2, 9, true),
            (3, 1, true),
            (3, 1, true),
            (3, 0, false),
        ];
        for (module, version, kept) in stream {
            assert_eq!(k.keeps(&row("k", module, version, &[])), kept, "module {module} v{version}");
        }
        // keep = 1 keeps exactly one per module, ties included (the query breaks ties).
        let mut one = KeepLatest::new(1);
        assert!(one.keeps(&row("a", 7, 2, &[])) && !one.keeps(&row("b", 7, 2, &[])));
    }

    #[test]
    fn only_files_no_kept_row_references_are_candidates() {
        let pruned = vec![
            row("1", 1, 1, &["published_modules/1/v1/a.json", "published_modules/1/shared/logo.json"]),
            row("2", 1, 2, &["published_modules/1/v2/a.json", "published_modules/1/v1/a.json"]),
            ModuleRow {
                refs: PayloadRefs::Unknown {
                    error: "bad".into(),
                    salvaged: vec!["published_modules/1/v0/x.json".into()],
                },
                ..row("0", 1, 0, &[])
            },
        ];
        let mut protect = RefSet::default();
        protect.push("published_modules/1/shared/logo.json");
        protect.finish();
        let c = candidates(&pruned, &protect, &["published_modules/9/".into()]);
        assert_eq!(c, ["published_modules/1/v1/a.json", "published_modules/1/v2/a.json"]);
        let c = candidates(&pruned, &protect, &["published_modules/1/".into()]);
        assert!(c.is_empty(), "a module with an unreadable payload keeps all its files");
    }

    /// (case, file state, the file goes)
    #[test]
    fn each_file_state_decides_the_file() {
        let now = "2026-11-22T10:00:00Z";
        let f = "published_modules/1/v1/a.json";
        let cases = [
            ("old", FileState::Present { bytes: 3, modified: at("2026-11-01T00:00:00Z") }, true),
            ("grace edge", FileState::Present { bytes: 3, modified: at("2026-11-22T09:30:00Z") }, true),
            ("fresh", FileState::Present { bytes: 3, modified: at("2026-11-22T09:30:01Z") }, false),
            ("missing", FileState::Missing, false),
            ("refused", FileState::Refused("a directory".into()), false),
        ];
        for (name, state, goes) in cases {
            let refused = matches!(state, FileState::Refused(_));
            let files = BTreeMap::from([(f.to_string(), state)]);
            let p = plan(vec![row("1", 1, 1, &[f])], vec![], &files, &Listing::new(), &rules(now));
            let deletes_file = p
                .units
                .as_slice()
                .iter()
                .flat_map(|u| &u.items)
                .any(|i| i.refused.is_none() && matches!(&i.op, Op::DeleteFile { path, .. } if path == f));
            assert_eq!(deletes_file, goes, "{name}");
            let rows = p.units.as_slice().iter().flat_map(|u| &u.items).filter(|i| i.kind == Kind::Row).count();
            assert_eq!(rows, 1, "{name}: the row goes either way");
            // A refused file is a reported (failed) item of its own, not a silent keep.
            assert_eq!(
                p.units.as_slice().iter().flat_map(|u| &u.items).any(|i| i.refused.is_some()),
                refused,
                "{name}"
            );
        }
        let protected = "backups/published_modules/x.json";
        let files = BTreeMap::from([(
            protected.to_string(),
            FileState::Present { bytes: 1, modified: at("2026-01-01T00:00:00Z") },
        )]);
        let p = plan(vec![row("1", 1, 1, &[protected])], vec![], &files, &Listing::new(), &rules(now));
        assert_eq!(p.kept.len(), 1, "a protected file is kept");
    }

    #[test]
    fn rows_sharing_a_file_are_one_unit_and_directories_left_empty_go_last() {
        let now = "2026-11-22T10:00:00Z";
        let old = FileState::Present { bytes: 3, modified: at("2026-11-01T00:00:00Z") };
        let pruned = vec![
            row("1", 1, 1, &["published_modules/1/v1/a.json", "published_modules/1/common.json"]),
            row("2", 1, 2, &["published_modules/1/v2/a.json", "published_modules/1/common.json"]),
            row("3", 2, 1, &["published_modules/2/v1/a.json"]),
        ];
        let files: BTreeMap<String, FileState> = [
            "published_modules/1/v1/a.json",
            "published_modules/1/v2/a.json",
            "published_modules/1/common.json",
            "published_modules/2/v1/a.json",
        ]
        .iter()
        .map(|f| (f.to_string(), old.clone()))
        .collect();
        let dirs: Listing = [
            ("published_modules/1", vec![("v1", true), ("v2", true), ("v3", true), ("common.json", false)]),
            ("published_modules/1/v1", vec![("a.json", false)]),
            ("published_modules/1/v2", vec![("a.json", false), ("keep.txt", false)]),
            ("published_modules/2", vec![("v1", true)]),
            ("published_modules/2/v1", vec![("a.json", false)]),
        ]
        .into_iter()
        .map(|(d, e)| (d.to_string(), e.into_iter().map(|(n, is_dir)| (n.to_string(), is_dir)).collect()))
        .collect();
        let p = plan(pruned, vec![], &files, &dirs, &rules(now));
        insta::assert_snapshot!("prune_modules_plan", render(&p));
        // Shared file: rows 1 and 2 in one unit.
        assert_eq!(p.units[0].items.iter().filter(|i| i.kind == Kind::Row).count(), 2);
        let dirs: Vec<&str> = p.units.as_slice()[(p.units.len() - p.units.trailing_empty_dirs())..]
            .iter()
            .map(|u| u.items[0].target.as_str())
            .collect();
        // v2 keeps keep.txt, module 1 keeps v3/: only v1, and module 2 entirely.
        assert_eq!(
            dirs,
            ["media:published_modules/1/v1/", "media:published_modules/2/v1/", "media:published_modules/2/"]
        );
        // A day later the same facts decide the same (only the grace period is time-dependent).
        let later = plan(
            vec![row("1", 1, 1, &["published_modules/1/v1/a.json"])],
            vec![],
            &files,
            &dirs_of(&["published_modules/1/v1"]),
            &rules("2026-11-23T10:00:00Z"),
        );
        let again = plan(
            vec![row("1", 1, 1, &["published_modules/1/v1/a.json"])],
            vec![],
            &files,
            &dirs_of(&["published_modules/1/v1"]),
            &rules(now),
        );
        assert_eq!(decisions(&later), decisions(&again));
    }

    fn dirs_of(d: &[&str]) -> Listing {
        d.iter().map(|d| (d.to_string(), vec![("a.json".to_string(), false)])).collect()
    }
}
