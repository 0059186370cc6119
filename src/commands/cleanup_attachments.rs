//! `cleanup-attachments` (seed 001): hard-delete forum attachments soft-deleted at least
//! `--days` ago: the stored file first (local MEDIA_ROOT or an object store), then the row,
//! each attachment one unit, in batches of `--batch-size`.

use crate::cli::CleanupAttachmentsArgs;
use crate::config::{Key, ProcessEnv, Source, Sourced, TableSpec};
use crate::db::{Db, Row, Sql};
use crate::exit_codes::Exit;
use crate::ident::Ident;
use crate::plan::Plan;
use crate::policy::cleanup_attachments::{self as policy, Candidate, FileFacts, Rules, StoreRef, COMMAND};
use crate::run::{run_policy, Channel, Ctx, Finished, Ran};
use crate::store::local::{in_blocking_chunks, LocalRoot, ParentCache};
use crate::store::object::{parse_key, NamedStore};
use crate::store::Resources;
use anyhow::{anyhow, Result};
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt, TryStreamExt};
use std::path::PathBuf;
use std::time::SystemTime;

/// Candidates read (and their files checked) at a time.
const PAGE: usize = 2000;

/// The validated settings of this command.
#[derive(Debug, Clone)]
pub struct AttachmentSettings {
    pub days: Sourced<i64>,
    pub batch_size: Sourced<i64>,
    pub store: Sourced<StoreSpec>,
    pub table: Ident,
    pub id: Ident,
    pub image: Ident,
    pub file_size: Ident,
    pub is_active: Ident,
    pub deleted_at: Ident,
}

/// Where the files live.
#[derive(Debug, Clone)]
pub enum StoreSpec {
    Local(PathBuf),
    Object(String),
}

impl std::fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSpec::Local(p) => write!(f, "{}", p.display()),
            StoreSpec::Object(u) => f.write_str(u),
        }
    }
}

impl AttachmentSettings {
    pub fn load(ctx: &Ctx, args: &CleanupAttachmentsArgs) -> Result<AttachmentSettings> {
        let env = ProcessEnv;
        let l = ctx.settings.layers(&env);
        let raw = &ctx.settings.raw.attachments;
        let days = l.pick(
            &Key { flag: Some("--days"), env: Some("ATTACHMENT_CLEANUP_DAYS"), file: "attachments.days" },
            args.days,
            raw.days,
            30,
            "a whole number of days, 0 or more",
            |d| *d >= 0 && *d <= 36500,
        )?;
        let batch_size = l.pick(
            &Key {
                flag: Some("--batch-size"),
                env: Some("ATTACHMENT_CLEANUP_BATCH_SIZE"),
                file: "attachments.batch_size",
            },
            args.batch_size,
            raw.batch_size,
            100,
            "a number of attachments from 1 to 10000",
            |b| (1..=10_000).contains(b),
        )?;
        let store = match &raw.store {
            Some(s) if s.starts_with("s3://") || s.starts_with("file://") => {
                Sourced::new(StoreSpec::Object(s.clone()), Source::File(format!("attachments.store in {}", ctx.settings.file_name)))
            }
            Some(s) => Sourced::new(StoreSpec::Local(PathBuf::from(s)), Source::File(format!("attachments.store in {}", ctx.settings.file_name))),
            None => match &ctx.settings.media_root {
                Some(m) => Sourced::new(StoreSpec::Local(m.value.clone()), m.source.clone()),
                None => {
                    return Err(anyhow!(
                        "the attachment store is not set: set MEDIA_ROOT (or --media-root) for local files, or [attachments] store = \"s3://bucket/prefix\" in the config file"
                    ))
                }
            },
        };
        let f = &ctx.settings.file_name;
        let t = TableSpec::load_with_old(
            raw.forum_attachment.as_ref(),
            raw.table.as_ref(),
            &raw.columns,
            "attachments.forum_attachment",
            "forum_attachment",
            &["id", "image", "file_size", "is_active", "deleted_at"],
            f,
        )?;
        Ok(AttachmentSettings {
            days,
            batch_size,
            store,
            table: t.table.clone(),
            id: t.col("id"),
            image: t.col("image"),
            file_size: t.col("file_size"),
            is_active: t.col("is_active"),
            deleted_at: t.col("deleted_at"),
        })
    }

    fn rows(&self) -> Vec<(String, String, String)> {
        let d = |k: &str, v: String| (k.to_string(), v, "config or default".to_string());
        vec![
            ("attachments.days".into(), self.days.value.to_string(), self.days.source.to_string()),
            ("attachments.batch_size".into(), self.batch_size.value.to_string(), self.batch_size.source.to_string()),
            ("attachments.store".into(), self.store.value.to_string(), self.store.source.to_string()),
            d("attachments.forum_attachment.table", self.table.as_str().into()),
            d("attachments.forum_attachment.id", self.id.as_str().into()),
            d("attachments.forum_attachment.image", self.image.as_str().into()),
            d("attachments.forum_attachment.file_size", self.file_size.as_str().into()),
            d("attachments.forum_attachment.is_active", self.is_active.as_str().into()),
            d("attachments.forum_attachment.deleted_at", self.deleted_at.as_str().into()),
        ]
    }
}

/// Read the candidates a page at a time (in the order `Db::pages` finds cheapest to delete
/// them in), check each page's files while the next page is read, and decide: one page in
/// memory, whatever the number of candidates.
async fn gather(db: &Db, s: &AttachmentSettings, rules: &Rules, res: &Resources) -> Result<Plan> {
    let cutoff = rules.cutoff();
    let mut out = policy::start(rules);
    let select = select(db, s, cutoff);
    let mut pages = db.pages(&select, &s.table, &s.id, PAGE).map(|rows| {
        rows.map_err(|e| read_err(s, &format!("{e:#}")))?.iter().map(|r| raw_candidate(r, s, cutoff)).collect()
    });
    let mut page: Vec<RawCandidate> = pages.try_next().await?.unwrap_or_default();
    while !page.is_empty() {
        let (checked, next) = futures::join!(check_files(page, rules, res), pages.try_next());
        for c in checked {
            policy::decide(&mut out, c, rules);
        }
        crate::failpoint::page_delay().await;
        page = next?.unwrap_or_default();
    }
    Ok(out)
}

/// A row as read: its key, its image value (or why it could not be read: that attachment
/// alone fails, naming the table, key and column), its size and when it was soft-deleted.
type RawCandidate = (String, Result<Option<String>, String>, Option<i64>, DateTime<Utc>);

fn read_err(s: &AttachmentSettings, e: &dyn std::fmt::Display) -> anyhow::Error {
    anyhow!(
        "cannot read {}: {e}: check [attachments] table and columns in the config (they must name existing columns)",
        s.table
    )
}

/// The candidates' query, in no order, ending with its `WHERE` clause.
fn select(db: &Db, s: &AttachmentSettings, cutoff: DateTime<Utc>) -> Sql {
    let (t, id, img, size, act, del) = (&s.table, &s.id, &s.image, &s.file_size, &s.is_active, &s.deleted_at);
    let mut q = db.sql();
    q.push("SELECT ").as_text(id).push(", ").as_text(img).push(", ").as_int(size);
    q.push(format_args!(", {del} FROM {t} WHERE ")).is_false(act).push(" AND ").time_cmp(del, "<=", cutoff);
    q
}

fn raw_candidate(r: &Row, s: &AttachmentSettings, cutoff: DateTime<Utc>) -> Result<RawCandidate> {
    let key = r.text_req(0).map_err(|e| read_err(s, &e))?;
    let bad = |e: crate::db::DecodeError| format!("{} {}={key}: cannot read {e}", s.table.as_str(), s.id.as_str());
    let (image, deleted_at) = match (r.text(1), r.time_req(3)) {
        (Ok(image), Ok(at)) => (Ok(image), at),
        (Err(e), _) | (_, Err(e)) => (Err(bad(e)), cutoff),
    };
    Ok((key, image, r.int(2).ok().flatten(), deleted_at))
}

/// Stat (local, in a few blocking chunks) or HEAD (object, several at once) each candidate's file.
async fn check_files(page: Vec<RawCandidate>, rules: &Rules, res: &Resources) -> Vec<Candidate> {
    // The raw image value is replaced by its form relative to the store.
    let build = |(key, _raw_image, size, deleted_at): RawCandidate, (image, file): (Option<String>, FileFacts)| {
        Candidate { key, image, deleted_at, file_size: size, file }
    };
    let images: Vec<Result<Option<String>, String>> = page
        .iter()
        .map(|c| c.1.clone().map(|i| i.as_deref().map(str::trim).filter(|i| !i.is_empty()).map(String::from)))
        .collect();
    let facts: Vec<(Option<String>, FileFacts)> = match &rules.store {
        StoreRef::Local { name } => {
            let root = res.roots.get(name).expect("the attachment root is opened before planning").clone();
            in_blocking_chunks(images, 4, move |chunk| {
                let mut cache = ParentCache::default();
                chunk
                    .into_iter()
                    .map(|img| match img {
                        Err(why) => (None, FileFacts::Refused(why)),
                        Ok(None) => (None, FileFacts::NoImage),
                        Ok(Some(img)) => local_facts(&root, &img, &mut cache),
                    })
                    .collect()
            })
            .await
        }
        StoreRef::Object { name, .. } => {
            let store = res.stores.get(name).expect("the attachment store is opened before planning");
            stream::iter(images)
                .map(|img| async move {
                    match img {
                        Err(why) => (None, FileFacts::Refused(why)),
                        Ok(None) => (None, FileFacts::NoImage),
                        Ok(Some(img)) => object_facts(store, &img).await,
                    }
                })
                .buffered(32)
                .collect()
                .await
        }
    };
    page.into_iter().zip(facts).map(|(c, f)| build(c, f)).collect()
}

fn local_facts(root: &LocalRoot, img: &str, cache: &mut ParentCache) -> (Option<String>, FileFacts) {
    let rel = match root.relativize(img) {
        Ok(r) => r,
        Err(e) => return (Some(img.to_string()), FileFacts::Refused(e.to_string())),
    };
    match root.stat_with(&rel, cache) {
        Ok(Some(e)) if e.is_dir => (Some(rel), FileFacts::Refused(format!("{img:?} names a directory, not a file"))),
        Ok(Some(e)) => (Some(rel), FileFacts::Present { bytes: e.bytes, modified: to_utc(e.modified) }),
        Ok(None) => (Some(rel), FileFacts::Missing),
        Err(e @ crate::store::local::LocalError::Outside { .. }) => (Some(rel), FileFacts::Refused(e.to_string())),
        Err(e) => (Some(rel), FileFacts::Unknown(format!("cannot check the file: {e}"))),
    }
}

async fn object_facts(store: &NamedStore, img: &str) -> (Option<String>, FileFacts) {
    let key = img.trim_start_matches('/');
    let path = match parse_key(key) {
        Ok(p) => p,
        Err(e) => return (Some(img.to_string()), FileFacts::Refused(e.to_string())),
    };
    match store.store.head(&path).await {
        Ok(m) => (Some(key.to_string()), FileFacts::Present { bytes: m.size, modified: m.last_modified }),
        Err(object_store::Error::NotFound { .. }) => (Some(key.to_string()), FileFacts::Missing),
        Err(e) => (Some(key.to_string()), FileFacts::Unknown(format!("cannot check {}: {e}", store.target(key)))),
    }
}

fn to_utc(t: SystemTime) -> DateTime<Utc> {
    DateTime::<Utc>::from(t)
}

/// The command.
pub async fn run(ctx: &Ctx, args: &CleanupAttachmentsArgs, chan: &Channel) -> Result<Ran> {
    let s = AttachmentSettings::load(ctx, args)?;
    let rows = s.rows();
    if ctx.global.show_config {
        ctx.print_config(rows);
        return Ok(Ran::Done(Exit::Success));
    }
    let db = ctx.connect().await?;
    let mut res = Resources { db: Some(db.clone()), ..Default::default() };
    let store = match &s.store.value {
        StoreSpec::Local(dir) => {
            let root =
                LocalRoot::open("media", dir).map_err(|e| anyhow!("attachment store ({}): {e}", s.store.source))?;
            res.roots.insert("media".into(), root);
            StoreRef::Local { name: "media".into() }
        }
        StoreSpec::Object(url) => {
            let st = NamedStore::open(url, &ctx.settings.object_storage)?;
            res.stores.insert("attachments".into(), st);
            StoreRef::Object { name: "attachments".into(), url: url.clone() }
        }
    };
    let rules = Rules {
        now: ctx.settings.now.value,
        days: s.days.value,
        grace_minutes: ctx.settings.grace_minutes.value,
        protected: ctx.settings.protected_prefixes.value.clone(),
        batch_size: s.batch_size.value as usize,
        table: s.table.clone(),
        id: s.id.clone(),
        is_active: s.is_active.clone(),
        deleted_at: s.deleted_at.clone(),
        store,
    };
    tracing::info!(
        target: "cleanup",
        "Selecting attachments with {} = false and {} <= {} ({} days)",
        s.is_active.as_str(),
        s.deleted_at.as_str(),
        rules.cutoff().to_rfc3339(),
        rules.days
    );
    let Finished { exit, mut report, plan } = run_policy(ctx, ctx.spec(COMMAND, &rows, Some(db.clone()), &res), chan, || async {
        let plan = gather(&db, &s, &rules, &res).await?;
        tracing::info!(target: "cleanup", "Permanently deleting {} attachments in batches of {}...", plan.units.len(), rules.batch_size);
        Ok(plan)
    })
    .await?;
    report.fields.insert("attachments_deleted".into(), report.units_ok.into());
    report.fields.insert("attachments_failed".into(), report.units_failed.into());
    let verb = if report.dry_run { "Would delete" } else { "Successfully deleted" };
    tracing::info!(
        target: "cleanup",
        "Cleanup complete: {verb}: {} attachments; Failed: {} attachments; Cutoff date: {}",
        report.units_ok,
        report.units_failed,
        rules.cutoff().to_rfc3339()
    );
    db.close().await;
    Ok(Ran::Run(Box::new(Finished { exit, report, plan })))
}
