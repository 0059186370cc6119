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

    /// The empty-directory units of a plan that removes files from the directories `emptied`
    /// under `root`: every directory that would be left empty, `emptied` ones and their
    /// parents, below `stop` (never `stop` itself), deepest first. `keeps` says whether a
    /// directory holds anything that stays.
    pub fn empty_dirs<'a>(
        root: &str,
        emptied: impl Iterator<Item = &'a str>,
        stop: &str,
        keeps: impl Fn(&str) -> bool,
        reason: &str,
    ) -> Vec<Unit> {
        let mut dirs: std::collections::BTreeSet<String> = Default::default();
        for dir in emptied {
            let mut cur = Some(dir);
            while let Some(d) = cur {
                if !d.starts_with(stop) || d.len() <= stop.trim_end_matches('/').len() {
                    break;
                }
                if keeps(d) || !dirs.insert(d.to_string()) {
                    break;
                }
                cur = parent(d);
            }
        }
        Unit::empty_dirs_deepest_first(root, dirs.into_iter().collect(), reason)
    }

    /// Units that remove the directories `dirs` under `root` if they are empty, deepest first
    /// (the executor runs them in that order, by depth: a parent after its children).
    pub fn empty_dirs_deepest_first(root: &str, mut dirs: Vec<String>, reason: &str) -> Vec<Unit> {
        dirs.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
        dirs.into_iter()
            .map(|path| {
                let target = format!("{root}:{path}/");
                Unit::new(vec![Item::new(Op::DeleteEmptyDir { root: root.to_string(), path }, target, reason, None)])
            })
            .collect()
    }
}

/// The directory a relative path is in (`None` at the top).
pub fn parent(path: &str) -> Option<&str> {
    path.rsplit_once('/').map(|(p, _)| p)
}

/// Something looked at and kept, with why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Kept {
    pub kind: Kind,
    pub target: String,
    pub reason: String,
}

/// A policy's whole decision.
#[derive(Debug, Serialize, Deserialize)]
pub struct Plan {
    pub command: String,
    pub now: DateTime<Utc>,
    /// How many things the policy looked at.
    pub scanned: u64,
    /// What to delete: in memory while small, in a temporary file past `spill_at()` items.
    pub units: Units,
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
            units: Units::default(),
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

    /// Number of items the plan would delete.
    pub fn item_count(&self) -> usize {
        self.units.item_count()
    }
}

/// The units of a plan, in order. Small plans live in memory; past `spill_at()` items the
/// units go to an unnamed temporary file (in `$TMPDIR`, gone when the process ends, even by
/// `kill -9`) as JSON values, and are streamed back: a plan of ten million items costs disk,
/// not memory. Policies push; the executor drains (`drain`) and pushes what it did into a new
/// `Units`; reports and summaries read with `iter`, `each` and `each_item`.
#[derive(Default)]
pub struct Units {
    mem: Vec<Unit>,
    disk: Option<Disk>,
    len: usize,
    items: usize,
    empty_dir_units: usize,
    /// The first write to the temporary file that failed: reading says so.
    error: Option<String>,
    /// Items held in memory before spilling (0: `spill_at()`).
    limit: usize,
}

struct Disk {
    w: std::cell::RefCell<std::io::BufWriter<std::fs::File>>,
    /// A reader moved the file's offset: the next write seeks back to the end first.
    moved: std::cell::Cell<bool>,
}

/// How many items a plan holds in memory before it goes to a temporary file.
/// `SWEEP_SPILL_AT` overrides it in debug builds (the tests run whole suites with 1).
pub fn spill_at() -> usize {
    #[cfg(debug_assertions)]
    if let Some(n) = std::env::var("SWEEP_SPILL_AT").ok().and_then(|v| v.parse().ok()) {
        return n;
    }
    SPILL_AT
}

/// About 20 MiB of units in memory (an attachment's unit is about 1 KiB).
const SPILL_AT: usize = 20_000;

impl std::fmt::Debug for Units {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Units").field("len", &self.len).field("on_disk", &self.disk.is_some()).finish()
    }
}

impl Units {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn item_count(&self) -> usize {
        self.items
    }

    /// Whether the units are in a temporary file rather than in memory.
    pub fn on_disk(&self) -> bool {
        self.disk.is_some()
    }

    /// The trailing empty-directory units (`Unit::is_empty_dir`) pushed since the last other
    /// unit.
    pub fn trailing_empty_dirs(&self) -> usize {
        self.empty_dir_units
    }

    pub fn push(&mut self, u: Unit) {
        self.len += 1;
        self.items += u.items.len();
        if u.is_empty_dir() {
            self.empty_dir_units += 1;
        } else {
            self.empty_dir_units = 0;
        }
        match &self.disk {
            None => {
                self.mem.push(u);
                let limit = if self.limit == 0 { spill_at() } else { self.limit };
                // After a failure to make the file, no second try per push: reading says why.
                if self.items > limit && self.error.is_none() {
                    self.spill();
                }
            }
            Some(_) => self.write(&u),
        }
    }

    /// Move what is in memory to a temporary file; from now on every unit goes there.
    fn spill(&mut self) {
        let file = match tempfile::tempfile() {
            Ok(f) => f,
            Err(e) => {
                self.error.get_or_insert(format!(
                    "cannot create a temporary file for a plan of {} items in {} ({e}): set TMPDIR to a directory with room",
                    self.items,
                    std::env::temp_dir().display()
                ));
                return;
            }
        };
        tracing::debug!(target: "cleanup", "The plan passed {} items: its units go to a temporary file", self.items - 1);
        self.disk = Some(Disk {
            w: std::cell::RefCell::new(std::io::BufWriter::with_capacity(1 << 16, file)),
            moved: std::cell::Cell::new(false),
        });
        for u in std::mem::take(&mut self.mem) {
            self.write(&u);
        }
    }

    fn write(&mut self, u: &Unit) {
        use std::io::{Seek, Write};
        let Some(d) = &self.disk else { return };
        if self.error.is_some() {
            return;
        }
        let mut w = d.w.borrow_mut();
        let mut written = Ok(());
        if d.moved.replace(false) {
            written = w.seek(std::io::SeekFrom::End(0)).map(|_| ());
        }
        let written = written
            .and_then(|_| serde_json::to_writer(&mut *w, u).map_err(std::io::Error::from))
            .and_then(|_| w.write_all(b"\n"));
        if let Err(e) = written {
            self.error.get_or_insert(format!(
                "cannot write the plan's temporary file ({e}): set TMPDIR to a directory with room"
            ));
        }
    }

    fn failed(&self) -> Option<anyhow::Error> {
        self.error.as_ref().map(|e| anyhow::anyhow!("{e}"))
    }

    /// Every unit in order, read back from the temporary file when there is one.
    pub fn iter(&self) -> UnitsIter<'_> {
        if let Some(e) = self.failed() {
            return UnitsIter(Reading::Failed(Some(e)));
        }
        match &self.disk {
            None => UnitsIter(Reading::Mem(self.mem.iter())),
            Some(d) => {
                use std::io::Write;
                if let Err(e) = d.w.borrow_mut().flush() {
                    return UnitsIter(Reading::Failed(Some(anyhow::anyhow!(
                        "cannot write the plan's temporary file ({e})"
                    ))));
                }
                d.moved.set(true);
                let file = std::cell::Ref::map(d.w.borrow(), |w| w.get_ref());
                let reader = std::io::BufReader::with_capacity(1 << 16, PosReader { file, pos: 0 });
                UnitsIter(Reading::Disk(Lines::new(reader)))
            }
        }
    }

    /// Call `f` on every unit in order.
    pub fn each(&self, mut f: impl FnMut(&Unit)) -> anyhow::Result<()> {
        for u in self.iter() {
            let u = u?;
            f(&u);
        }
        Ok(())
    }

    /// Call `f` on every item in order until it returns false.
    pub fn each_item(&self, mut f: impl FnMut(&Item) -> bool) -> anyhow::Result<()> {
        for u in self.iter() {
            for i in &u?.items {
                if !f(i) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Every unit in order, taken out (`Units` is left empty).
    pub fn drain(&mut self) -> Drain {
        let mut all = std::mem::take(self);
        if let Some(e) = all.failed() {
            return Drain::Failed(Some(e));
        }
        match all.disk.take() {
            None => Drain::Mem(std::mem::take(&mut all.mem).into_iter()),
            Some(d) => {
                use std::io::{Seek, Write};
                let mut w = d.w.into_inner();
                let file = w.flush().and_then(|_| w.into_inner().map_err(|e| e.into_error())).and_then(|mut f| {
                    f.seek(std::io::SeekFrom::Start(0))?;
                    Ok(f)
                });
                match file {
                    Ok(f) => Drain::Disk(Lines::new(std::io::BufReader::with_capacity(1 << 16, f))),
                    Err(e) => Drain::Failed(Some(anyhow::anyhow!("cannot read the plan's temporary file back ({e})"))),
                }
            }
        }
    }

    /// Rewrite every unit in place (through the temporary file when there is one).
    pub fn try_map(&mut self, mut f: impl FnMut(&mut Unit)) -> anyhow::Result<()> {
        if self.disk.is_none() && self.error.is_none() {
            self.mem.iter_mut().for_each(f);
            return Ok(());
        }
        let mut out = Units { limit: self.limit, ..Units::default() };
        for u in self.drain() {
            let mut u = u?;
            f(&mut u);
            out.push(u);
        }
        *self = out;
        Ok(())
    }

    /// Sort in memory; a plan in a temporary file keeps the order it was made in (returns false).
    pub fn sort_by(&mut self, cmp: impl FnMut(&Unit, &Unit) -> std::cmp::Ordering) -> bool {
        if self.disk.is_some() {
            return false;
        }
        self.mem.sort_by(cmp);
        true
    }

    /// The units, when in memory (tests, and plans small by construction).
    #[cfg(test)]
    pub fn as_slice(&self) -> &[Unit] {
        assert!(self.disk.is_none(), "a plan in a temporary file has no slice");
        &self.mem
    }
}

impl Extend<Unit> for Units {
    fn extend<T: IntoIterator<Item = Unit>>(&mut self, iter: T) {
        for u in iter {
            self.push(u);
        }
    }
}

impl FromIterator<Unit> for Units {
    fn from_iter<T: IntoIterator<Item = Unit>>(iter: T) -> Units {
        let mut u = Units::default();
        u.extend(iter);
        u
    }
}

#[cfg(test)]
impl std::ops::Index<usize> for Units {
    type Output = Unit;
    fn index(&self, i: usize) -> &Unit {
        &self.as_slice()[i]
    }
}

/// Reads the temporary file from its own position (a writer shares the file's offset).
struct PosReader<'a> {
    file: std::cell::Ref<'a, std::fs::File>,
    pos: u64,
}

impl std::io::Read for PosReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::Seek;
        let mut f: &std::fs::File = &self.file;
        f.seek(std::io::SeekFrom::Start(self.pos))?;
        let n = f.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Units read back one line at a time (a unit is one line of JSON: serde_json escapes every
/// newline inside a string), each parsed from the line in memory, which is several times
/// faster than parsing from the reader byte by byte.
pub struct Lines<R> {
    reader: R,
    line: String,
}

impl<R: std::io::BufRead> Lines<R> {
    fn new(reader: R) -> Lines<R> {
        Lines { reader, line: String::new() }
    }
}

impl<R: std::io::BufRead> Iterator for Lines<R> {
    type Item = anyhow::Result<Unit>;
    fn next(&mut self) -> Option<Self::Item> {
        self.line.clear();
        match self.reader.read_line(&mut self.line) {
            Ok(0) => None,
            Ok(_) => Some(
                serde_json::from_str(&self.line)
                    .map_err(|e| anyhow::anyhow!("cannot read the plan's temporary file back ({e})")),
            ),
            Err(e) => Some(Err(anyhow::anyhow!("cannot read the plan's temporary file back ({e})"))),
        }
    }
}

/// `Units::iter`.
pub struct UnitsIter<'a>(Reading<'a>);

enum Reading<'a> {
    Mem(std::slice::Iter<'a, Unit>),
    Disk(Lines<std::io::BufReader<PosReader<'a>>>),
    Failed(Option<anyhow::Error>),
}

impl<'a> Iterator for UnitsIter<'a> {
    type Item = anyhow::Result<std::borrow::Cow<'a, Unit>>;
    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            Reading::Mem(i) => i.next().map(|u| Ok(std::borrow::Cow::Borrowed(u))),
            Reading::Disk(d) => d.next().map(|r| r.map(std::borrow::Cow::Owned)),
            Reading::Failed(e) => e.take().map(Err),
        }
    }
}

/// `Units::drain`.
pub enum Drain {
    Mem(std::vec::IntoIter<Unit>),
    Disk(Lines<std::io::BufReader<std::fs::File>>),
    Failed(Option<anyhow::Error>),
}

impl Iterator for Drain {
    type Item = anyhow::Result<Unit>;
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Drain::Mem(i) => i.next().map(Ok),
            Drain::Disk(d) => d.next(),
            Drain::Failed(e) => e.take().map(Err),
        }
    }
}

impl Serialize for Units {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        let mut seq = s.serialize_seq(Some(self.len))?;
        for u in self.iter() {
            seq.serialize_element(&*u.map_err(|e| S::Error::custom(format!("{e:#}")))?)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Units {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Units, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Units;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of units")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Units, A::Error> {
                let mut units = Units::default();
                while let Some(u) = seq.next_element::<Unit>()? {
                    units.push(u);
                }
                Ok(units)
            }
        }
        d.deserialize_seq(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(i: usize) -> Unit {
        let mut it = Item::new(
            Op::DeleteFile { root: "r".into(), path: format!("f{i}") },
            format!("r:f{i}"),
            "old",
            Some(i as u64),
        );
        it.snapshot = Some(serde_json::value::RawValue::from_string(format!("{{\"id\":{i}}}")).unwrap());
        Unit::new(vec![it])
    }

    fn targets(u: &Units) -> Vec<String> {
        u.iter().map(|u| u.unwrap().items[0].target.clone()).collect()
    }

    #[test]
    fn a_large_plan_goes_to_disk_and_reads_back_in_order_between_pushes() {
        let mut u = Units { limit: 3, ..Units::default() };
        u.extend((0..3).map(unit));
        assert!(!u.on_disk());
        u.push(unit(3));
        assert!(u.on_disk(), "past the limit the units are in a file");
        assert_eq!(targets(&u), (0..4).map(|i| format!("r:f{i}")).collect::<Vec<_>>());
        // Reading moved the file's offset: pushing after it appends, it does not overwrite.
        u.push(unit(4));
        let mut n = 0;
        u.each_item(|_| {
            n += 1;
            n < 2
        })
        .unwrap();
        assert_eq!(n, 2, "each_item stops when asked");
        u.push(unit(5));
        assert_eq!((u.len(), u.item_count()), (6, 6));
        assert_eq!(targets(&u), (0..6).map(|i| format!("r:f{i}")).collect::<Vec<_>>());
        // A snapshot survives the round trip as the same JSON text.
        let first = u.iter().next().unwrap().unwrap();
        assert_eq!(first.items[0].snapshot.as_ref().unwrap().get(), "{\"id\":0}");
        drop(first);

        u.try_map(|x| x.items[0].outcome = Some(Outcome::Deleted)).unwrap();
        assert!(u.on_disk() && u.len() == 6);
        let json = serde_json::to_string(&u).unwrap();
        let back: Units = serde_json::from_str(&json).unwrap();
        assert_eq!(targets(&back), targets(&u));
        let drained: Vec<Unit> = u.drain().collect::<anyhow::Result<_>>().unwrap();
        assert!(drained.iter().all(|x| x.items[0].outcome == Some(Outcome::Deleted)));
        assert_eq!(drained.len(), 6);
        assert!(u.is_empty() && !u.on_disk(), "drained");
    }

    #[test]
    fn empty_directories_are_found_from_the_directories_files_leave() {
        let units = Unit::empty_dirs("m", ["a/b/c", "a/b", "a/x"].into_iter(), "a", |d| d == "a/x", "empty");
        let got: Vec<&str> = units.iter().map(|u| u.items[0].target.as_str()).collect();
        assert_eq!(got, ["m:a/b/c/", "m:a/b/"], "deepest first; a kept directory and the stop stay");
    }
}
