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
                p.kept.push(Kept { kind: Kind::File, target, reason: why.clone() });
                false
            }
            Some(_) if is_protected(f, &rules.protected) => {
                p.kept.push(Kept { kind: Kind::File, target, reason: "under a protected prefix".into() });
                false
            }
            Some(FileState::Present { modified, .. }) if *modified > grace_cutoff => {
                p.kept.push(Kept {
                    kind: Kind::File,
                    target,
                    reason: format!("modified within the {}-minute grace period", rules.grace_minutes),
                });
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
    let deleted: BTreeSet<&str> = p
        .units
        .iter()
        .flat_map(|u| &u.items)
        .filter_map(|i| match &i.op {
            Op::DeleteFile { path, .. } => Some(path.as_str()),
            _ => None,
        })
        .collect();
    let empty = Unit::empty_dirs(
        "media",
        deleted.iter().copied(),
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
