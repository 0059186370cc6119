//! Fingerprints: what each item looked like when its plan was written (`--plan-out`), and the
//! check, just before the item is deleted, that it still looks the same.
//!
//! A file is its size and modification time, a directory tree its file count, total size and
//! newest modification time, an object its size, ETag and last modification, a row the values
//! of the columns its rule reads. Anything that changed is skipped, never deleted: a reviewed
//! plan deletes what the reviewer saw, or less.

use crate::db::Db;
use crate::ident::Ident;
use crate::plan::{Fingerprint, Item, Op, Plan, RowRule, Unit};
use crate::store::local::{LocalRoot, ParentCache};
use crate::store::object::{self, NamedStore};
use crate::store::Resources;
use anyhow::Result;
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use std::collections::HashMap;
use std::time::SystemTime;

/// Requests in flight when objects are looked at one by one (HEAD).
const HEAD_CONCURRENCY: usize = 16;

/// The columns a rule reads: a row's fingerprint.
pub fn rule_columns(rule: &RowRule) -> Vec<Ident> {
    match rule {
        RowRule::SoftDeletedBefore { active_column, deleted_column, .. } => {
            vec![active_column.clone(), deleted_column.clone()]
        }
        RowRule::NotLatest { group_column, order_columns, .. } => {
            std::iter::once(group_column.clone()).chain(order_columns.iter().cloned()).collect()
        }
        RowRule::PreviewCleanable { status_column, expires_column, updated_column, .. } => {
            vec![status_column.clone(), expires_column.clone(), updated_column.clone()]
        }
        RowRule::InactiveSince { active_column, activity_column, .. } => {
            vec![active_column.clone(), activity_column.clone()]
        }
    }
}

/// Record every item's fingerprint in the plan, as things are now: a chunk of units at a time
/// (read back from the plan's temporary file and written to a new one for a large plan).
pub async fn capture(plan: &mut Plan, res: &Resources) -> Result<()> {
    const CHUNK: usize = 10_000;
    let mut source = plan.units.drain();
    let mut out = crate::plan::Units::default();
    loop {
        let chunk: Vec<Unit> = source.by_ref().take(CHUNK).collect::<Result<_>>()?;
        if chunk.is_empty() {
            break;
        }
        let mut chunk = chunk;
        capture_units(&mut chunk, res).await?;
        out.extend(chunk);
    }
    plan.units = out;
    Ok(())
}

async fn capture_units(units: &mut [Unit], res: &Resources) -> Result<()> {
    let items: Vec<&mut Item> = units.iter_mut().flat_map(|u| u.items.iter_mut()).collect();
    let mut rows: HashMap<RowGroup, Vec<&mut Item>> = HashMap::new();
    let mut local: Vec<&mut Item> = Vec::new();
    let mut objects: HashMap<String, Vec<&mut Item>> = HashMap::new();
    for item in items {
        // A refused item is never touched; one fingerprinted already (a plan being applied)
        // keeps the fingerprint it was reviewed with.
        if item.refused.is_some() || item.fingerprint.is_some() {
            continue;
        }
        match &item.op {
            Op::DeleteRow { .. } | Op::NullColumns { .. } => {
                if let Some(group) = row_group(item) {
                    rows.entry(group).or_default().push(item)
                }
            }
            Op::DeleteFile { .. } | Op::CompressFile { .. } | Op::DeleteDir { .. } => local.push(item),
            Op::DeleteObject { store, .. } => objects.entry(store.clone()).or_default().push(item),
            // Removed only if empty when its turn comes: nothing to compare.
            Op::DeleteEmptyDir { .. } => {}
        }
    }
    for (group, items) in rows {
        let db = res.db.as_deref().ok_or_else(|| anyhow::anyhow!("this plan has rows but no database"))?;
        let keys: Vec<&str> = items.iter().map(|i| row_key(i)).collect();
        let fps = rows_now(db, &group, &keys).await?;
        for (item, fp) in items.into_iter().zip(fps) {
            item.fingerprint = Some(fp);
        }
    }
    if !local.is_empty() {
        let jobs: Vec<(String, String, bool)> = local
            .iter()
            .map(|i| match &i.op {
                Op::DeleteFile { root, path } | Op::CompressFile { root, path } => (root.clone(), path.clone(), false),
                Op::DeleteDir { root, path } => (root.clone(), path.clone(), true),
                _ => unreachable!("only local items"),
            })
            .collect();
        let roots = res.roots.clone();
        let fps = crate::store::local::in_blocking_chunks(jobs, 4, move |chunk| {
            let mut cache = ParentCache::default();
            chunk
                .into_iter()
                .map(|(root, path, tree)| roots.get(&root).and_then(|r| local_now(r, &path, tree, &mut cache).ok()))
                .collect()
        })
        .await;
        for (item, fp) in local.into_iter().zip(fps) {
            item.fingerprint = fp;
        }
    }
    for (store, items) in objects {
        let Some(s) = res.stores.get(&store) else { continue };
        let keys: Vec<String> = items
            .iter()
            .map(|i| match &i.op {
                Op::DeleteObject { key, .. } => key.clone(),
                _ => unreachable!("only objects"),
            })
            .collect();
        let fps: Vec<Option<Fingerprint>> = stream::iter(keys)
            .map(|k| async move { object_now(s, &k).await.ok() })
            .buffered(HEAD_CONCURRENCY)
            .collect()
            .await;
        for (item, fp) in items.into_iter().zip(fps) {
            item.fingerprint = fp;
        }
    }
    Ok(())
}

fn row_key(item: &Item) -> &str {
    match &item.op {
        Op::DeleteRow { key, .. } | Op::NullColumns { key, .. } => key,
        _ => unreachable!("only rows"),
    }
}

fn time(t: SystemTime) -> DateTime<Utc> {
    DateTime::<Utc>::from(t)
}

/// A file's or a tree's fingerprint as it is now.
pub fn local_now(root: &LocalRoot, path: &str, tree: bool, cache: &mut ParentCache) -> Result<Fingerprint, String> {
    let Some(e) = root.stat_with(path, cache).map_err(|e| e.to_string())? else {
        return Ok(Fingerprint::Absent);
    };
    if !(tree && e.is_dir) {
        return Ok(Fingerprint::File { size: e.bytes, mtime: time(e.modified), symlink: e.is_symlink });
    }
    let full = root.resolve_with(path, cache).map_err(|e| e.to_string())?.ok_or("its directory vanished")?;
    let (mut files, mut bytes, mut newest) = (0u64, 0u64, e.modified);
    for entry in walkdir::WalkDir::new(&full).follow_links(false) {
        let entry = entry.map_err(|e| format!("cannot read {}: {e}", full.display()))?;
        let m = entry.metadata().map_err(|e| format!("cannot read {}: {e}", entry.path().display()))?;
        if !m.is_dir() {
            files += 1;
            bytes += m.len();
        }
        if let Ok(t) = m.modified() {
            newest = newest.max(t);
        }
    }
    Ok(Fingerprint::Tree { files, bytes, newest: time(newest) })
}

/// An object's fingerprint as it is now.
pub async fn object_now(s: &NamedStore, key: &str) -> Result<Fingerprint, String> {
    let path = object::parse_key(key).map_err(|e| e.to_string())?;
    match s.store.head(&path).await {
        Ok(m) => Ok(Fingerprint::Object { size: m.size, e_tag: m.e_tag, last_modified: m.last_modified }),
        Err(object_store::Error::NotFound { .. }) => Ok(Fingerprint::Absent),
        Err(e) => Err(format!("cannot look at {}: {e}", s.target(key))),
    }
}

/// Why `now` does not match the planned fingerprint (`None`: unchanged). Anything modified
/// after `cutoff` (the real clock minus the grace period) is also refused.
pub fn changed(planned: &Fingerprint, now: &Fingerprint, cutoff: Option<DateTime<Utc>>) -> Option<String> {
    let recent = |t: &DateTime<Utc>| cutoff.is_some_and(|c| *t > c);
    match (planned, now) {
        (Fingerprint::Absent, Fingerprint::Absent) => None,
        (Fingerprint::Absent, _) => Some("it appeared after the plan was made".into()),
        (_, Fingerprint::Absent) => None, // gone already: deleting it is a no-op, reported missing
        (Fingerprint::Row { values: a }, Fingerprint::Row { values: b }) => {
            let diff: Vec<&str> = a
                .iter()
                .filter(|(k, v)| !b.get(*k).is_some_and(|w| same_value(v, w)))
                .map(|(k, _)| k.as_str())
                .collect();
            (!diff.is_empty()).then(|| format!("the row changed since the plan ({})", diff.join(", ")))
        }
        (
            Fingerprint::Object { size: s1, e_tag: e1, last_modified: t1 },
            Fingerprint::Object { size: s2, e_tag: e2, last_modified: t2 },
        ) if s1 != s2 || matches!((e1, e2), (Some(a), Some(b)) if a != b) || t1.timestamp() != t2.timestamp() => {
            // A listing and a HEAD report the same object with different precision (ms vs s)
            // and a listing may lack the ETag: compare what both sides know.
            Some(format!("it changed since the plan ({})", describe_change(planned, now)))
        }
        (Fingerprint::Object { .. }, Fingerprint::Object { .. }) => {
            (recent(planned_time(planned))).then(|| grace_note(planned_time(planned)))
        }
        _ if planned != now => Some(format!("it changed since the plan ({})", describe_change(planned, now))),
        _ => recent(planned_time(planned)).then(|| grace_note(planned_time(planned))),
    }
}

/// When a file, tree or object was last modified, as its fingerprint says.
fn planned_time(fp: &Fingerprint) -> &DateTime<Utc> {
    match fp {
        Fingerprint::File { mtime: t, .. }
        | Fingerprint::Tree { newest: t, .. }
        | Fingerprint::Object { last_modified: t, .. } => t,
        Fingerprint::Absent | Fingerprint::Row { .. } => &DateTime::<Utc>::MIN_UTC,
    }
}

fn grace_note(t: &DateTime<Utc>) -> String {
    format!("modified at {} (within the grace period)", t.to_rfc3339())
}

fn describe_change(a: &Fingerprint, b: &Fingerprint) -> String {
    match (a, b) {
        (Fingerprint::File { size: s1, mtime: t1, .. }, Fingerprint::File { size: s2, mtime: t2, .. }) => {
            format!("size {s1} -> {s2}, modified {} -> {}", t1.to_rfc3339(), t2.to_rfc3339())
        }
        (Fingerprint::Tree { files: f1, bytes: b1, .. }, Fingerprint::Tree { files: f2, bytes: b2, newest }) => {
            format!("{f1} files / {b1} bytes -> {f2} files / {b2} bytes, newest {}", newest.to_rfc3339())
        }
        (Fingerprint::Object { size: s1, e_tag: e1, .. }, Fingerprint::Object { size: s2, e_tag: e2, .. }) => {
            format!("size {s1} -> {s2}, etag {} -> {}", e1.as_deref().unwrap_or("-"), e2.as_deref().unwrap_or("-"))
        }
        _ => "it is another kind of thing now".into(),
    }
}

/// JSON values equal, timestamps compared as instants whatever their text form (a database
/// may print the same instant in another time zone).
fn same_value(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::String(x), Value::String(y)) if x != y => {
            match (crate::db::parse_sqlite_time(x), crate::db::parse_sqlite_time(y)) {
                (Some(t), Some(u)) => t == u,
                _ => false,
            }
        }
        (Value::Bool(x), Value::Number(n)) | (Value::Number(n), Value::Bool(x)) => n.as_i64() == Some(*x as i64),
        _ => a == b,
    }
}

/// Check rows against their fingerprints: `(unit, item, why)` for each that changed.
pub async fn changed_rows(db: &Db, rows: Vec<(usize, usize, &Item)>) -> Result<Vec<(usize, usize, String)>> {
    let mut groups: HashMap<RowGroup, Vec<(usize, usize, &Item)>> = HashMap::new();
    for (u, i, item) in rows {
        if let Some(group) = row_group(item) {
            groups.entry(group).or_default().push((u, i, item));
        }
    }
    let mut out = Vec::new();
    for (group, members) in groups {
        let keys: Vec<&str> = members.iter().map(|m| row_key(m.2)).collect();
        for ((u, i, item), now) in members.into_iter().zip(rows_now(db, &group, &keys).await?) {
            if let Some(why) = item.fingerprint.as_ref().and_then(|fp| changed(fp, &now, None)) {
                out.push((u, i, format!("{why}: kept")));
            }
        }
    }
    Ok(out)
}

/// Rows read together: table, key column, and the columns their rule reads.
type RowGroup = (Ident, Ident, Vec<Ident>);

/// The group of a row item with a rule (rows without one have no fingerprint).
fn row_group(item: &Item) -> Option<RowGroup> {
    match &item.op {
        Op::DeleteRow { table, key_column, rule: Some(rule), .. }
        | Op::NullColumns { table, key_column, rule: Some(rule), .. } => {
            Some((table.clone(), key_column.clone(), rule_columns(rule)))
        }
        _ => None,
    }
}

/// The fingerprints of these rows as they are now, in `keys` order (`Absent` for a row gone).
async fn rows_now(db: &Db, (table, key_column, columns): &RowGroup, keys: &[&str]) -> Result<Vec<Fingerprint>> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(5000) {
        let owned: Vec<String> = chunk.iter().map(|k| k.to_string()).collect();
        let found = db.row_values(table, key_column, &owned, columns).await?;
        out.extend(chunk.iter().map(|k| match found.get(*k) {
            Some(values) => Fingerprint::Row { values: values.clone() },
            None => Fingerprint::Absent,
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_changed_file_or_object_is_named_and_an_old_unchanged_one_passes() {
        let f = Fingerprint::File { size: 3, mtime: at("2026-01-01T00:00:00Z"), symlink: false };
        let cutoff = Some(at("2026-11-01T00:00:00Z"));
        assert_eq!(changed(&f, &f.clone(), cutoff), None);
        let g = Fingerprint::File { size: 4, mtime: at("2026-11-20T00:00:00Z"), symlink: false };
        assert!(changed(&f, &g, cutoff).unwrap().contains("size 3 -> 4"));
        assert_eq!(changed(&f, &Fingerprint::Absent, cutoff), None, "gone is a no-op");
        assert!(changed(&Fingerprint::Absent, &f, cutoff).unwrap().contains("appeared"));
        // Unchanged but recent (the plan was captured within the grace period): refused.
        assert!(changed(&g, &g.clone(), cutoff).unwrap().contains("grace"));
        let o1 = Fingerprint::Object { size: 1, e_tag: Some("a".into()), last_modified: at("2026-01-01T00:00:00Z") };
        let o2 = Fingerprint::Object { size: 1, e_tag: Some("b".into()), last_modified: at("2026-01-01T00:00:00Z") };
        assert!(changed(&o1, &o2, cutoff).unwrap().contains("etag a -> b"));
        // A listing (ms, maybe no ETag) and a HEAD (s, ETag) of the same object agree.
        let listed = Fingerprint::Object { size: 1, e_tag: None, last_modified: at("2026-01-01T00:00:00.250Z") };
        assert_eq!(changed(&listed, &o1, cutoff), None);
        let later = Fingerprint::Object { size: 1, e_tag: None, last_modified: at("2026-01-01T00:00:05Z") };
        assert!(changed(&later, &o1, cutoff).is_some());
    }

    #[test]
    fn row_values_compare_instants_not_their_spelling() {
        let a = Fingerprint::Row {
            values: json!({"is_active": false, "deleted_at": "2026-01-01T10:00:00+00:00"}).as_object().unwrap().clone(),
        };
        let b = Fingerprint::Row {
            values: json!({"is_active": 0, "deleted_at": "2026-01-01T11:00:00+01:00"}).as_object().unwrap().clone(),
        };
        assert_eq!(changed(&a, &b, None), None);
        let c = Fingerprint::Row {
            values: json!({"is_active": true, "deleted_at": "2026-01-01T10:00:00Z"}).as_object().unwrap().clone(),
        };
        assert!(changed(&a, &c, None).unwrap().contains("is_active"));
    }
}
