//! What `prune-modules` and `cleanup-ui-files` share (seed 000): the `[published_modules]`
//! settings, the rows of `authoring_publishedmodule` read as a stream, and a compact sorted set
//! of UI-file references.

use super::Ctx;
use crate::config::{ident_setting, Key, ProcessEnv, Source, Sourced};
use crate::db::Db;
use crate::ident::Ident;
use crate::refs::{path_cmp, payload_refs, PayloadRefs};
use anyhow::{anyhow, Result};
use chrono::{DateTime, Utc};
use std::cmp::Ordering;

/// The validated `[published_modules]` settings.
#[derive(Debug, Clone)]
pub struct ModuleSettings {
    pub keep_latest: Sourced<i64>,
    pub auto_prune: Sourced<bool>,
    pub table: Ident,
    pub id: Ident,
    pub module_id: Ident,
    pub version: Ident,
    pub payload: Ident,
    pub published_at: Ident,
}

impl ModuleSettings {
    pub fn load(ctx: &Ctx, keep_latest_flag: Option<i64>) -> Result<ModuleSettings> {
        let env = ProcessEnv;
        let l = ctx.settings.layers(&env);
        let raw = &ctx.settings.raw.published_modules;
        let keep_latest = l
            .pick(
                &Key {
                    flag: Some("--keep-latest"),
                    env: Some("PUBLISHED_MODULE_RETENTION_KEEP_LATEST"),
                    file: "published_modules.keep_latest",
                },
                keep_latest_flag,
                raw.keep_latest,
                3,
                "a number of versions, 1 or more",
                |n| *n >= 1,
            )
            .map_err(|e| crate::exit_codes::Fatal::usage(format!("{e:#}")))?;
        let auto_prune = match l.env_bool("PUBLISHED_MODULE_AUTO_PRUNE")? {
            Some(v) => Sourced::new(v, Source::Env("PUBLISHED_MODULE_AUTO_PRUNE")),
            None => match raw.auto_prune {
                Some(v) => {
                    Sourced::new(v, Source::File(format!("published_modules.auto_prune in {}", ctx.settings.file_name)))
                }
                None => Sourced::new(false, Source::Default),
            },
        };
        let f = &ctx.settings.file_name;
        let c = &raw.columns;
        Ok(ModuleSettings {
            keep_latest,
            auto_prune,
            table: ident_setting(f, "published_modules.table", raw.table.as_ref(), "authoring_publishedmodule")?,
            id: ident_setting(f, "published_modules.columns.id", c.id.as_ref(), "id")?,
            module_id: ident_setting(f, "published_modules.columns.module_id", c.module_id.as_ref(), "module_id")?,
            version: ident_setting(f, "published_modules.columns.version", c.version.as_ref(), "version")?,
            payload: ident_setting(f, "published_modules.columns.payload", c.payload.as_ref(), "payload")?,
            published_at: ident_setting(
                f,
                "published_modules.columns.published_at",
                c.published_at.as_ref(),
                "published_at",
            )?,
        })
    }

    pub fn rows(&self) -> Vec<(String, String, String)> {
        let d = |k: &str, v: &Ident| (k.to_string(), v.as_str().to_string(), "config or default".to_string());
        vec![
            (
                "published_modules.keep_latest".into(),
                self.keep_latest.value.to_string(),
                self.keep_latest.source.to_string(),
            ),
            (
                "published_modules.auto_prune".into(),
                self.auto_prune.value.to_string(),
                self.auto_prune.source.to_string(),
            ),
            d("published_modules.table", &self.table),
            d("published_modules.columns.id", &self.id),
            d("published_modules.columns.module_id", &self.module_id),
            d("published_modules.columns.version", &self.version),
            d("published_modules.columns.payload", &self.payload),
            d("published_modules.columns.published_at", &self.published_at),
        ]
    }
}

/// One published module row.
#[derive(Debug)]
pub struct ModuleRow {
    pub key: String,
    pub module_id: i64,
    pub version: i64,
    pub published_at: Option<DateTime<Utc>>,
    pub refs: PayloadRefs,
}

/// Which rows to read.
#[derive(Debug, Clone, Copy)]
pub enum Filter {
    All,
    Module(i64),
    NotModule(i64),
}

/// Stream the rows, newest first within each module (version, then published_at, then id,
/// all descending), calling `each` for every row. Payloads are parsed one row at a time.
pub async fn for_each_row(db: &Db, s: &ModuleSettings, filter: Filter, mut each: impl FnMut(ModuleRow)) -> Result<u64> {
    let (t, id, m, v, pl, pa) = (&s.table, &s.id, &s.module_id, &s.version, &s.payload, &s.published_at);
    let read_err = |e: &dyn std::fmt::Display| {
        anyhow!("cannot read {t}: {e}: check [published_modules] table and columns in the config (they must name existing columns)")
    };
    let mut q = db.sql();
    q.push("SELECT ").as_text(id).push(", ").as_int(m).push(", ").as_int(v).push(format_args!(", {pa}, "));
    q.as_text(pl).push(format_args!(" FROM {t}"));
    match filter {
        Filter::All => {}
        Filter::Module(x) => {
            q.push(format_args!(" WHERE {m} = ")).bind(x);
        }
        Filter::NotModule(x) => {
            q.push(format_args!(" WHERE {m} <> ")).bind(x);
        }
    }
    q.push(format_args!(" ORDER BY {m}, {v} DESC, {pa} DESC, {id} DESC"));
    db.for_each_row(&q, |r| {
        // A payload that cannot be read as text protects its module, like one that is not JSON.
        let refs = match r.text(4) {
            Ok(payload) => payload_refs(payload.as_deref()),
            Err(e) => PayloadRefs::Unknown { error: e.to_string(), salvaged: Vec::new() },
        };
        each(ModuleRow {
            key: r.text_req(0)?,
            module_id: r.int_req(1)?,
            version: r.int_req(2)?,
            published_at: r.time(3)?,
            refs,
        });
        Ok(())
    })
    .await
    .map_err(|e| read_err(&format!("{e:#}")))
}

/// A set of paths in one buffer, sorted component-wise (`refs::path_cmp`) once built: about
/// the size of the text itself, where a `BTreeSet<String>` would take three times as much.
#[derive(Debug, Default)]
pub struct RefSet {
    buf: String,
    spans: Vec<(u32, u32)>,
    sorted: bool,
}

impl RefSet {
    pub fn push(&mut self, path: &str) {
        let start = self.buf.len() as u32;
        self.buf.push_str(path);
        self.spans.push((start, path.len() as u32));
        self.sorted = false;
    }

    fn get(&self, i: usize) -> &str {
        let (s, l) = self.spans[i];
        &self.buf[s as usize..(s + l) as usize]
    }

    /// Sort and remove duplicates.
    pub fn finish(&mut self) {
        let buf = &self.buf;
        let at = |(s, l): (u32, u32)| &buf[s as usize..(s + l) as usize];
        self.spans.sort_unstable_by(|a, b| path_cmp(at(*a), at(*b)));
        self.spans.dedup_by(|a, b| at(*a) == at(*b));
        self.spans.shrink_to_fit();
        self.sorted = true;
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn contains(&self, path: &str) -> bool {
        debug_assert!(self.sorted);
        self.spans.binary_search_by(|s| path_cmp(self.get_span(*s), path)).is_ok()
    }

    fn get_span(&self, (s, l): (u32, u32)) -> &str {
        &self.buf[s as usize..(s + l) as usize]
    }

    /// A cursor for merging with paths that arrive in the same order.
    pub fn cursor(&self) -> RefCursor<'_> {
        debug_assert!(self.sorted);
        RefCursor { set: self, i: 0 }
    }
}

/// Walks a sorted `RefSet` alongside an ascending stream of paths.
pub struct RefCursor<'a> {
    set: &'a RefSet,
    i: usize,
}

impl RefCursor<'_> {
    /// Whether `path` is in the set; `path`s must come in ascending `path_cmp` order.
    pub fn seek(&mut self, path: &str) -> bool {
        while self.i < self.set.len() {
            match path_cmp(self.set.get(self.i), path) {
                Ordering::Less => self.i += 1,
                Ordering::Equal => return true,
                Ordering::Greater => return false,
            }
        }
        false
    }
}

/// `published_modules/<module_id>/`: where a row with an unreadable payload might reference
/// files; such prefixes are protected.
pub fn module_prefix(module_id: i64) -> String {
    format!("{}{module_id}/", crate::refs::MARKER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refset_sorts_dedups_and_merges() {
        let mut r = RefSet::default();
        for p in [
            "published_modules/2/b.json",
            "published_modules/1/a.json",
            "published_modules/2/b.json",
            "published_modules/10/x.json",
        ] {
            r.push(p);
        }
        r.finish();
        assert_eq!(r.len(), 3);
        assert!(r.contains("published_modules/10/x.json") && !r.contains("published_modules/3/x.json"));
        let mut c = r.cursor();
        let walk = [
            "published_modules/1/a.json",
            "published_modules/1/z.json",
            "published_modules/10/x.json",
            "published_modules/2/b.json",
        ];
        let seen: Vec<bool> = walk.iter().map(|p| c.seek(p)).collect();
        assert_eq!(seen, [true, false, true, true]);
    }
}
