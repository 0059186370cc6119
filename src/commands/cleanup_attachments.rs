//! `cleanup-attachments` (seed 001): hard-delete forum attachments soft-deleted at least
//! `--days` ago: the stored file first (local MEDIA_ROOT or an object store), then the row,
//! each attachment one unit, in batches of `--batch-size`.

use super::{print_config, print_report, run_policy, Ctx};
use crate::cli::CleanupAttachmentsArgs;
use crate::config::{ident_setting, Key, ProcessEnv, Source, Sourced};
use crate::db::Db;
use crate::executor::Resources;
use crate::exit_codes::Exit;
use crate::ident::Ident;
use crate::plan::{Item, Kept, Kind, Op, Plan, RowRule, Unit};
use crate::store::is_protected;
use crate::store::local::{in_blocking_chunks, LocalRoot, ParentCache};
use crate::store::object::{parse_key, NamedStore};
use anyhow::{anyhow, Result};
use chrono::{DateTime, Duration, Utc};
use futures::stream::{self, StreamExt};
use std::path::PathBuf;
use std::time::SystemTime;

pub const COMMAND: &str = "cleanup-attachments";
/// Rows read per keyset page.
const PAGE: i64 = 2000;

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
        let c = &raw.columns;
        Ok(AttachmentSettings {
            days,
            batch_size,
            store,
            table: ident_setting(f, "attachments.table", raw.table.as_ref(), "forum_attachment")?,
            id: ident_setting(f, "attachments.columns.id", c.id.as_ref(), "id")?,
            image: ident_setting(f, "attachments.columns.image", c.image.as_ref(), "image")?,
            file_size: ident_setting(f, "attachments.columns.file_size", c.file_size.as_ref(), "file_size")?,
            is_active: ident_setting(f, "attachments.columns.is_active", c.is_active.as_ref(), "is_active")?,
            deleted_at: ident_setting(f, "attachments.columns.deleted_at", c.deleted_at.as_ref(), "deleted_at")?,
        })
    }

    fn rows(&self) -> Vec<(String, String, String)> {
        let d = |k: &str, v: String| (k.to_string(), v, "config or default".to_string());
        vec![
            ("attachments.days".into(), self.days.value.to_string(), self.days.source.to_string()),
            ("attachments.batch_size".into(), self.batch_size.value.to_string(), self.batch_size.source.to_string()),
            ("attachments.store".into(), self.store.value.to_string(), self.store.source.to_string()),
            d("attachments.table", self.table.as_str().into()),
            d("attachments.columns.id", self.id.as_str().into()),
            d("attachments.columns.image", self.image.as_str().into()),
            d("attachments.columns.file_size", self.file_size.as_str().into()),
            d("attachments.columns.is_active", self.is_active.as_str().into()),
            d("attachments.columns.deleted_at", self.deleted_at.as_str().into()),
        ]
    }
}

/// What we know about an attachment's stored file when planning.
#[derive(Debug, Clone, PartialEq)]
pub enum FileFacts {
    /// The row has no image.
    NoImage,
    Present {
        bytes: u64,
        modified: DateTime<Utc>,
    },
    Missing,
    /// The image value leaves the store, or cannot name an object.
    Refused(String),
    /// The file could not be checked (permissions, network): not deleted.
    Unknown(String),
}

/// One soft-deleted attachment past the cutoff, as read from the database and the store.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub key: String,
    /// The image value, normalised relative to the store when it could be.
    pub image: Option<String>,
    pub deleted_at: DateTime<Utc>,
    pub file_size: Option<i64>,
    pub file: FileFacts,
}

/// The fixed inputs of the decision.
#[derive(Debug, Clone)]
pub struct Rules {
    pub now: DateTime<Utc>,
    pub days: i64,
    pub grace_minutes: i64,
    pub protected: Vec<String>,
    pub batch_size: usize,
    pub table: Ident,
    pub id: Ident,
    pub is_active: Ident,
    pub deleted_at: Ident,
    /// The store's name in the plan and how its targets are written.
    pub store: StoreRef,
}

#[derive(Debug, Clone)]
pub enum StoreRef {
    Local { name: String },
    Object { name: String, url: String },
}

impl Rules {
    pub fn cutoff(&self) -> DateTime<Utc> {
        self.now - Duration::days(self.days)
    }
    fn grace_cutoff(&self) -> DateTime<Utc> {
        self.now - Duration::minutes(self.grace_minutes)
    }
}

/// The pure decision: each candidate becomes a unit (file, then row) or a kept entry.
pub fn plan(candidates: Vec<Candidate>, rules: &Rules) -> Plan {
    let mut p = Plan::new(COMMAND, rules.now);
    p.batch_size = rules.batch_size;
    let cutoff = rules.cutoff();
    p.fields.insert("cutoff".into(), cutoff.to_rfc3339().into());
    p.fields.insert("days".into(), rules.days.into());
    p.fields.insert("batch_size".into(), (rules.batch_size as u64).into());
    let row_target = |k: &str| format!("{} {}={}", rules.table.as_str(), rules.id.as_str(), k);
    for c in candidates {
        p.scanned += 1;
        // The row's snapshot is taken by the DELETE itself (RETURNING): exactly what was deleted.
        let row = Item::new(
            Op::DeleteRow {
                table: rules.table.clone(),
                key_column: rules.id.clone(),
                key: c.key.clone(),
                rule: Some(RowRule::SoftDeletedBefore {
                    active_column: rules.is_active.clone(),
                    deleted_column: rules.deleted_at.clone(),
                    cutoff,
                }),
            },
            row_target(&c.key),
            format!(
                "soft-deleted at {}, on or before the cutoff {} ({} days)",
                c.deleted_at.to_rfc3339(),
                cutoff.to_rfc3339(),
                rules.days
            ),
            None,
        );
        let image = c.image.clone().unwrap_or_default();
        let file_item = |bytes: Option<u64>, reason: String| {
            let (op, target) = match &rules.store {
                StoreRef::Local { name } => {
                    (Op::DeleteFile { root: name.clone(), path: image.clone() }, format!("{name}:{image}"))
                }
                StoreRef::Object { name, url } => (
                    Op::DeleteObject { store: name.clone(), key: image.clone() },
                    format!("{}/{image}", url.trim_end_matches('/')),
                ),
            };
            Item::new(op, target, reason, bytes)
        };
        let kind = match rules.store {
            StoreRef::Local { .. } => Kind::File,
            StoreRef::Object { .. } => Kind::Object,
        };
        match &c.file {
            FileFacts::NoImage => p.units.push(Unit::new(vec![row])),
            FileFacts::Refused(why) | FileFacts::Unknown(why) => {
                let raw = c.image.clone().unwrap_or_default();
                let mut f = file_item(c.file_size.map(|b| b as u64), format!("file of attachment {}", c.key));
                f.target = format!("{} image={raw:?}", row_target(&c.key));
                f.refused = Some(why.clone());
                p.units.push(Unit::new(vec![f, row]));
            }
            _ if is_protected(&image, &rules.protected) => {
                p.kept.push(Kept {
                    kind,
                    target: file_item(None, String::new()).target,
                    reason: format!("under a protected prefix ({})", rules.protected.join(", ")),
                });
                p.kept.push(Kept {
                    kind: Kind::Row,
                    target: row_target(&c.key),
                    reason: "its file is protected".into(),
                });
            }
            FileFacts::Present { modified, .. } if *modified > rules.grace_cutoff() => {
                p.kept.push(Kept {
                    kind,
                    target: file_item(None, String::new()).target,
                    reason: format!(
                        "modified {} , within the grace period of {} minutes",
                        modified.to_rfc3339(),
                        rules.grace_minutes
                    ),
                });
                p.kept.push(Kept {
                    kind: Kind::Row,
                    target: row_target(&c.key),
                    reason: "its file is within the grace period".into(),
                });
            }
            FileFacts::Present { bytes, .. } => {
                let f = file_item(
                    Some(*bytes),
                    format!("file of attachment {} soft-deleted at {}", c.key, c.deleted_at.to_rfc3339()),
                );
                p.units.push(Unit::new(vec![f, row]));
            }
            FileFacts::Missing => {
                let f = file_item(None, format!("file of attachment {} (not found in the store)", c.key));
                p.units.push(Unit::new(vec![f, row]));
            }
        }
    }
    p
}

/// Read the candidates page by page (keyset on the key column) and check each file.
async fn gather(db: &Db, s: &AttachmentSettings, rules: &Rules, res: &Resources) -> Result<Vec<Candidate>> {
    let cutoff = rules.cutoff();
    let mut out = Vec::new();
    let mut last: Option<String> = None;
    loop {
        let page = read_page(db, s, cutoff, last.as_deref()).await?;
        let n = page.len();
        last = page.last().map(|c| c.0.clone());
        out.extend(check_files(page, rules, res).await);
        if (n as i64) < PAGE {
            break;
        }
    }
    Ok(out)
}

type RawCandidate = (String, Option<String>, Option<i64>, DateTime<Utc>);

async fn read_page(
    db: &Db,
    s: &AttachmentSettings,
    cutoff: DateTime<Utc>,
    after: Option<&str>,
) -> Result<Vec<RawCandidate>> {
    let (t, id, img, size, act, del) = (&s.table, &s.id, &s.image, &s.file_size, &s.is_active, &s.deleted_at);
    let read_err = |e: &dyn std::fmt::Display| {
        anyhow!("cannot read {t}: {e}: check [attachments] table and columns in the config (they must name existing columns)")
    };
    let mut q = db.sql();
    q.push("SELECT ").as_text(id).push(", ").as_text(img).push(", ").as_int(size);
    q.push(format_args!(", {del} FROM {t} WHERE ")).is_false(act).push(" AND ").time_cmp(del, "<=", cutoff);
    if let Some(a) = after {
        q.push(" AND ");
        db.push_key_after(&mut q, id, t, a).await?;
    }
    q.push(format_args!(" ORDER BY {id} LIMIT {PAGE}"));
    let rows = db.fetch_all(&q).await.map_err(|e| read_err(&e))?;
    rows.into_iter()
        .map(|r| Ok((r.text_req(0)?, r.text(1)?, r.int(2)?, r.time_req(3)?)))
        .collect::<Result<_, crate::db::DecodeError>>()
        .map_err(|e| read_err(&e))
}

/// Stat (local, in a few blocking chunks) or HEAD (object, several at once) each candidate's file.
async fn check_files(page: Vec<RawCandidate>, rules: &Rules, res: &Resources) -> Vec<Candidate> {
    // The raw image value is replaced by its form relative to the store.
    let build = |(key, _raw_image, size, deleted_at): RawCandidate, (image, file): (Option<String>, FileFacts)| {
        Candidate { key, image, deleted_at, file_size: size, file }
    };
    let images: Vec<Option<String>> =
        page.iter().map(|c| c.1.as_deref().map(str::trim).filter(|i| !i.is_empty()).map(String::from)).collect();
    let facts: Vec<(Option<String>, FileFacts)> = match &rules.store {
        StoreRef::Local { name } => {
            let root = res.roots.get(name).expect("the attachment root is opened before planning").clone();
            in_blocking_chunks(images, 4, move |chunk| {
                let mut cache = ParentCache::default();
                chunk
                    .into_iter()
                    .map(|img| match img {
                        None => (None, FileFacts::NoImage),
                        Some(img) => local_facts(&root, &img, &mut cache),
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
                        None => (None, FileFacts::NoImage),
                        Some(img) => object_facts(store, &img).await,
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
pub async fn run(ctx: &Ctx, args: &CleanupAttachmentsArgs) -> Result<Exit> {
    let s = AttachmentSettings::load(ctx, args)?;
    let rows = s.rows();
    if ctx.global.show_config {
        print_config(ctx, rows);
        return Ok(Exit::Success);
    }
    let db = super::connect(ctx).await?;
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
    let super::Finished { exit, mut report, plan } = run_policy(ctx, COMMAND, &rows, Some(db.clone()), &res, || async {
        let cands = gather(&db, &s, &rules, &res).await?;
        tracing::info!(target: "cleanup", "Permanently deleting {} attachments in batches of {}...", cands.len(), rules.batch_size);
        Ok(plan(cands, &rules))
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
    print_report(ctx, &report, &plan)?;
    db.close().await;
    Ok(exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            now: "2026-11-22T10:00:00Z".parse().unwrap(),
            days: 30,
            grace_minutes: 30,
            protected: vec!["backups/".into()],
            batch_size: 100,
            table: Ident::new("forum_attachment").unwrap(),
            id: Ident::new("id").unwrap(),
            is_active: Ident::new("is_active").unwrap(),
            deleted_at: Ident::new("deleted_at").unwrap(),
            store: StoreRef::Local { name: "media".into() },
        }
    }

    fn cand(image: Option<&str>, file: FileFacts) -> Candidate {
        Candidate {
            key: "k".into(),
            image: image.map(String::from),
            deleted_at: "2026-09-01T00:00:00Z".parse().unwrap(),
            file_size: Some(10),
            file,
        }
    }

    /// (case, candidate, kinds of the unit's items in order or None when kept, first item refused)
    #[test]
    fn each_candidate_becomes_a_unit_or_a_kept_entry() {
        let old: DateTime<Utc> = "2026-11-01T00:00:00Z".parse().unwrap();
        let fresh: DateTime<Utc> = "2026-11-22T09:45:00Z".parse().unwrap();
        let edge: DateTime<Utc> = "2026-11-22T09:30:00Z".parse().unwrap();
        let cases: Vec<(&str, Candidate, Option<Vec<Kind>>, bool)> = vec![
            (
                "present",
                cand(Some("a.jpg"), FileFacts::Present { bytes: 5, modified: old }),
                Some(vec![Kind::File, Kind::Row]),
                false,
            ),
            ("missing file", cand(Some("a.jpg"), FileFacts::Missing), Some(vec![Kind::File, Kind::Row]), false),
            ("no image", cand(None, FileFacts::NoImage), Some(vec![Kind::Row]), false),
            (
                "refused",
                cand(Some("../x"), FileFacts::Refused("leaves".into())),
                Some(vec![Kind::File, Kind::Row]),
                true,
            ),
            (
                "unknown",
                cand(Some("a.jpg"), FileFacts::Unknown("EACCES".into())),
                Some(vec![Kind::File, Kind::Row]),
                true,
            ),
            ("within grace", cand(Some("a.jpg"), FileFacts::Present { bytes: 5, modified: fresh }), None, false),
            (
                "grace edge",
                cand(Some("a.jpg"), FileFacts::Present { bytes: 5, modified: edge }),
                Some(vec![Kind::File, Kind::Row]),
                false,
            ),
            ("protected", cand(Some("backups/a.jpg"), FileFacts::Present { bytes: 5, modified: old }), None, false),
        ];
        for (name, c, want, refused) in cases {
            let p = plan(vec![c], &rules());
            assert_eq!(p.scanned, 1, "{name}");
            match want {
                None => {
                    assert!(p.units.is_empty(), "{name}: kept");
                    assert_eq!(p.kept.len(), 2, "{name}: file and row kept");
                }
                Some(kinds) => {
                    assert_eq!(p.units.len(), 1, "{name}");
                    let got: Vec<Kind> = p.units[0].items.iter().map(|i| i.kind).collect();
                    assert_eq!(got, kinds, "{name}");
                    assert_eq!(p.units[0].items[0].refused.is_some(), refused, "{name}");
                    let row = p.units[0].items.last().unwrap();
                    assert!(matches!(&row.op, Op::DeleteRow { rule: Some(_), .. }), "{name}: the rule is re-checked");
                }
            }
        }
    }

    #[test]
    fn the_plan_is_the_same_at_any_instant_with_the_same_distance() {
        // Shifting `now` and every timestamp by the same amount gives the same decisions.
        let shift = Duration::days(400);
        let mut r2 = rules();
        r2.now += shift;
        let mk = |s: Duration| {
            vec![
                cand(
                    Some("a.jpg"),
                    FileFacts::Present {
                        bytes: 5,
                        modified: "2026-11-22T09:45:00Z".parse::<DateTime<Utc>>().unwrap() + s,
                    },
                ),
                cand(
                    Some("b.jpg"),
                    FileFacts::Present {
                        bytes: 5,
                        modified: "2026-10-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + s,
                    },
                ),
            ]
        };
        let a = plan(mk(Duration::zero()), &rules());
        let b = plan(mk(shift), &r2);
        assert_eq!(a.units.len(), b.units.len());
        assert_eq!(a.kept.len(), b.kept.len());
    }
}
