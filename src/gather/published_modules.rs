//! What `prune-modules` and `cleanup-ui-files` both gather (seed 000): the
//! `[published_modules]` settings and the rows of `authoring_publishedmodule`, read as a stream
//! with each payload's references parsed one row at a time.

use crate::config::{Key, ProcessEnv, Source, Sourced, TableSpec};
use crate::db::Db;
use crate::ident::Ident;
use crate::refs::{payload_refs, ModuleRow, PayloadRefs};
use crate::run::Ctx;
use anyhow::{anyhow, Result};

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
        let t = TableSpec::load_with_old(
            raw.authoring_publishedmodule.as_ref(),
            raw.table.as_ref(),
            &raw.columns,
            "published_modules.authoring_publishedmodule",
            "authoring_publishedmodule",
            &["id", "module_id", "version", "payload", "published_at"],
            f,
        )?;
        Ok(ModuleSettings {
            keep_latest,
            auto_prune,
            table: t.table.clone(),
            id: t.col("id"),
            module_id: t.col("module_id"),
            version: t.col("version"),
            payload: t.col("payload"),
            published_at: t.col("published_at"),
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
            d("published_modules.authoring_publishedmodule.table", &self.table),
            d("published_modules.authoring_publishedmodule.id", &self.id),
            d("published_modules.authoring_publishedmodule.module_id", &self.module_id),
            d("published_modules.authoring_publishedmodule.version", &self.version),
            d("published_modules.authoring_publishedmodule.payload", &self.payload),
            d("published_modules.authoring_publishedmodule.published_at", &self.published_at),
        ]
    }
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
    // Table-qualified: the bare names would be the select list's casts (an id sorted as text).
    q.push(format_args!(" ORDER BY {t}.{m}, {t}.{v} DESC, {t}.{pa} DESC, {t}.{id} DESC"));
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
