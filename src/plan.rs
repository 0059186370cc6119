//! What a policy decides: a `Plan` of units to delete (each item with its reason) and the
//! things it kept (with why). Policies build plans; only the executor acts on them. The plan is
//! `Serialize`: `--plan-out`, `--json` and the audit all come from it.

use crate::ident::Ident;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What happened to one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Deleted,
    WouldDelete,
    Failed,
    /// Already gone: a success.
    Missing,
    /// Not attempted (changed since the plan, an earlier step failed, interrupted).
    Skipped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Deleted => "deleted",
            Outcome::WouldDelete => "would_delete",
            Outcome::Failed => "failed",
            Outcome::Missing => "missing",
            Outcome::Skipped => "skipped",
        }
    }
}

/// What kind of thing an item is (the report's `by_kind` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Row,
    File,
    Dir,
    Object,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Row => "row",
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Object => "object",
        }
    }
}

/// A condition a row must still meet when it is deleted, re-checked by the database in the
/// same statement (so a row reactivated since the plan was made is left alone). Typed, not SQL
/// text: the database module renders it from validated identifiers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum RowRule {
    /// `active_column = false AND deleted_column <= cutoff`.
    SoftDeletedBefore { active_column: Ident, deleted_column: Ident, cutoff: DateTime<Utc> },
    /// At least `keep` rows of the same `group_column` value sort after this one by
    /// `order_columns` (compared as a tuple): the row is not among the latest `keep`.
    NotLatest { group_column: Ident, order_columns: Vec<Ident>, keep: i64 },
    /// A preview session past its life: `status = 'expired'`, or `expires_at < cutoff`, or
    /// `status IN ('failed', 'cancelled') AND updated_at < cutoff`.
    PreviewCleanable { status_column: Ident, expires_column: Ident, updated_column: Ident, cutoff: DateTime<Utc> },
    /// `active_column = false AND activity_column < cutoff`.
    InactiveSince { active_column: Ident, activity_column: Ident, cutoff: DateTime<Utc> },
}

/// A row that must still match `rule` for its unit to go ahead (checked just before the unit's
/// first item, like a row deletion's rule, but the row itself is not changed).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RowGuard {
    pub table: Ident,
    pub key_column: Ident,
    pub key: String,
    pub rule: RowRule,
}

/// How to carry out one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Delete one row by primary key, only if it still matches `rule`.
    DeleteRow { table: Ident, key_column: Ident, key: String, rule: Option<RowRule> },
    /// Set `columns` to NULL in one row (a reference whose target was just deleted), only if it
    /// still matches `rule`.
    NullColumns { table: Ident, key_column: Ident, key: String, columns: Vec<Ident>, rule: Option<RowRule> },
    /// Delete a file (or a symlink, as a link) under a named local root.
    DeleteFile { root: String, path: String },
    /// Replace a file with a gzip copy (`path.gz`, same modification time), then remove the
    /// original: seed 004's option B for logs.
    CompressFile { root: String, path: String },
    /// Delete a directory tree (never following links) under a named local root.
    DeleteDir { root: String, path: String },
    /// Remove a directory under a named local root if it is empty (deleting files left it
    /// empty). Never removes anything else: a directory that is not empty is kept. The executor
    /// runs these after every other unit of the plan, deepest first.
    DeleteEmptyDir { root: String, path: String },
    /// Delete an object from a named store; `key` is relative to the store's prefix.
    DeleteObject { store: String, key: String },
}

impl Op {
    pub fn kind(&self) -> Kind {
        match self {
            Op::DeleteRow { .. } | Op::NullColumns { .. } => Kind::Row,
            Op::DeleteFile { .. } | Op::CompressFile { .. } => Kind::File,
            Op::DeleteDir { .. } | Op::DeleteEmptyDir { .. } => Kind::Dir,
            Op::DeleteObject { .. } => Kind::Object,
        }
    }
}

/// One thing to delete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    pub kind: Kind,
    /// Human-readable and unique within the plan: `forum_attachment id=…`, `media:path`, `s3://…`.
    pub target: String,
    pub reason: String,
    pub bytes: Option<u64>,
    #[serde(flatten)]
    pub op: Op,
    /// Set when the policy refuses this item (e.g. a path that leaves its root): it is
    /// reported as failed with this error, and its unit goes no further.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub refused: Option<String>,
    /// The row as it was (JSON text), for the audit and `restore`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub snapshot: Option<Box<serde_json::value::RawValue>>,
    /// What the executor did; unset in a plan not yet carried out.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub outcome: Option<Outcome>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// Where the executor copied it before deleting it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub backup: Option<String>,
    /// What it looked like when the plan was written (`--plan-out`): `apply` deletes it only if
    /// it still looks the same.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fingerprint: Option<Fingerprint>,
}

/// The state of an item when its plan was written, re-checked before it is deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Fingerprint {
    /// Nothing was there (deleting it is a no-op, reported `missing`).
    Absent,
    /// A file or a symlink: its size and modification time (nanoseconds).
    File { size: u64, mtime: DateTime<Utc>, symlink: bool },
    /// A directory tree: how many files, their total size, the newest modification time
    /// of anything in it.
    Tree { files: u64, bytes: u64, newest: DateTime<Utc> },
    /// An object: size, ETag and last modification.
    Object { size: u64, e_tag: Option<String>, last_modified: DateTime<Utc> },
    /// A row: the values of the columns its rule reads (keyed by column name), as JSON.
    Row { values: serde_json::Map<String, serde_json::Value> },
}

impl Item {
    pub fn new(op: Op, target: impl Into<String>, reason: impl Into<String>, bytes: Option<u64>) -> Item {
        Item {
            kind: op.kind(),
            target: target.into(),
            reason: reason.into(),
            bytes,
            op,
            refused: None,
            snapshot: None,
            outcome: None,
            error: None,
            backup: None,
            fingerprint: None,
        }
    }
}

/// Items carried out in order; when one fails, the rest of the unit is not attempted
/// (an attachment: its file, then its row; a failed file deletion keeps the row).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unit {
    pub items: Vec<Item>,
    /// The part of a command this unit belongs to (`worker-once`'s tasks); the audit's policy
    /// becomes `command/task`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// A row that must still match its rule, re-checked before the unit starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<RowGuard>,
}

impl Unit {
    pub fn new(items: Vec<Item>) -> Unit {
        Unit { items, task: None, guard: None }
    }

    /// A unit that removes one directory if it is empty.
    pub fn is_empty_dir(&self) -> bool {
        matches!(self.items.as_slice(), [Item { op: Op::DeleteEmptyDir { .. }, .. }])
    }

    /// The empty-directory units of a plan that removes `deleted` files under `root`: every
    /// directory that would be left empty, below `stop` (never `stop` itself), deepest first.
    /// `keeps` says whether a directory holds anything that stays.
    pub fn empty_dirs<'a>(
        root: &str,
        deleted: impl Iterator<Item = &'a str>,
        stop: &str,
        keeps: impl Fn(&str) -> bool,
        reason: &str,
    ) -> Vec<Unit> {
        let mut dirs: std::collections::BTreeSet<String> = Default::default();
        for path in deleted {
            let mut cur = path;
            while let Some((parent, _)) = cur.rsplit_once('/') {
                if !parent.starts_with(stop) || parent.len() <= stop.trim_end_matches('/').len() {
                    break;
                }
                if keeps(parent) || !dirs.insert(parent.to_string()) {
                    break;
                }
                cur = parent;
            }
        }
        let mut dirs: Vec<String> = dirs.into_iter().collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
        dirs.into_iter()
            .map(|d| {
                let target = format!("{root}:{d}/");
                Unit::new(vec![Item::new(Op::DeleteEmptyDir { root: root.to_string(), path: d }, target, reason, None)])
            })
            .collect()
    }
}

/// Something looked at and kept, with why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Kept {
    pub kind: Kind,
    pub target: String,
    pub reason: String,
}

/// A policy's whole decision.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub command: String,
    pub now: DateTime<Utc>,
    /// How many things the policy looked at.
    pub scanned: u64,
    pub units: Vec<Unit>,
    pub kept: Vec<Kept>,
    /// Things kept for the ordinary reason (a referenced file, a latest version), counted per
    /// kind but not listed: a million referenced files need no million-line report.
    #[serde(default)]
    pub kept_unlisted: std::collections::BTreeMap<Kind, u64>,
    /// Units carried out per batch (one transaction and one audit write each).
    pub batch_size: usize,
    /// Command-specific report fields (`cutoff`, …).
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl Plan {
    pub fn new(command: &str, now: DateTime<Utc>) -> Plan {
        Plan {
            command: command.to_string(),
            now,
            scanned: 0,
            units: Vec::new(),
            kept: Vec::new(),
            kept_unlisted: Default::default(),
            batch_size: 1000,
            fields: serde_json::Map::new(),
        }
    }

    /// Keep `target` (of `kind`) and say why: it is listed in the report, never deleted.
    pub fn keep(&mut self, kind: Kind, target: impl Into<String>, reason: impl Into<String>) {
        self.kept.push(Kept { kind, target: target.into(), reason: reason.into() });
    }

    /// Where the trailing empty-directory units start: those run after every other unit.
    pub fn empty_dirs_start(&self) -> usize {
        let tail = self.units.iter().rev().take_while(|u| u.is_empty_dir()).count();
        self.units.len() - tail
    }

    /// Directories removed as empty (or that would be, in a dry run).
    pub fn empty_dirs_removed(&self) -> u64 {
        self.units[self.empty_dirs_start()..]
            .iter()
            .filter(|u| matches!(u.items[0].outcome, Some(Outcome::Deleted) | Some(Outcome::WouldDelete)))
            .count() as u64
    }

    /// Number of items the plan would delete.
    pub fn item_count(&self) -> usize {
        self.units.iter().map(|u| u.items.len()).sum()
    }
}
