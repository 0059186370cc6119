//! `bulk-cloudcube` (seed 003): the Cloudcube bucket cleanup. Lists every object under the cube
//! prefix (streamed, paginated) and deletes what the database does not preserve; `--job ID` is
//! the after-stage-4 cleanup of one job's original media and extracted audio.

use crate::cli::BulkCloudcubeArgs;
use crate::config::{Key, ProcessEnv, Source, Sourced, TableSpec};
use crate::db::Db;
use crate::exit_codes::{Exit, Fatal};
use crate::plan::{Fingerprint, Op, Outcome, Plan};
use crate::policy::bulk_cloudcube::{self as policy, Job, JobObject, Listed, Preserved, Rules, COMMAND, FINISHED};
use crate::run::{run_policy, Channel, Ctx, Finished, Ran};
use crate::store::object::{parse_key, Credentials, NamedStore, S3Location};
use crate::store::Resources;
use anyhow::{anyhow, bail, Result};
use chrono::{DateTime, Duration, Utc};
use futures::TryStreamExt;

/// Parse `CLOUDCUBE_URL`: Heroku's virtual-hosted form `https://BUCKET.s3[.REGION|-REGION].amazonaws.com/CUBE`,
/// or the path-style `http(s)://HOST[:PORT]/BUCKET/CUBE` of any other S3-compatible endpoint.
pub fn parse_cloudcube_url(raw: &str) -> Result<S3Location> {
    let bad = |why: &str| {
        anyhow!(
            "CLOUDCUBE_URL {:?} is not valid: {why} (expected https://BUCKET.s3.amazonaws.com/CUBE or http(s)://HOST[:PORT]/BUCKET/CUBE)",
            crate::config::redact_url(raw)
        )
    };
    let url = url::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(bad("the scheme must be http or https"));
    }
    let host = url.host_str().ok_or_else(|| bad("no host"))?;
    let segments: Vec<&str> = url.path().split('/').filter(|s| !s.is_empty()).collect();
    if let Some(base) = host.strip_suffix(".amazonaws.com") {
        // BUCKET.s3 | BUCKET.s3.REGION | BUCKET.s3-REGION (bucket names may hold dots).
        let i =
            base.rfind(".s3").ok_or_else(|| bad("an amazonaws.com host must be BUCKET.s3[.REGION].amazonaws.com"))?;
        let (bucket, rest) = (&base[..i], &base[i + 3..]);
        let region = match rest {
            "" => None,
            r if r.starts_with('.') || r.starts_with('-') => Some(r[1..].to_string()),
            _ => return Err(bad("an amazonaws.com host must be BUCKET.s3[.REGION].amazonaws.com")),
        };
        if bucket.is_empty() || segments.is_empty() {
            return Err(bad("no bucket or no cube name"));
        }
        Ok(S3Location { bucket: bucket.to_string(), prefix: segments.join("/"), endpoint: None, region })
    } else {
        if segments.len() < 2 {
            return Err(bad("a path-style URL needs /BUCKET/CUBE"));
        }
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        Ok(S3Location {
            bucket: segments[0].to_string(),
            prefix: segments[1..].join("/"),
            endpoint: Some(format!("{}://{host}{port}", url.scheme())),
            region: None,
        })
    }
}

/// The validated settings.
pub struct CubeSettings {
    pub retention_days: Sourced<i64>,
    pub store_shown: Sourced<String>,
    pub jobs: TableSpec,
    pub clips: TableSpec,
}

/// Open the cube: `[cloudcube] store`, else `CLOUDCUBE_URL` with `CLOUDCUBE_ACCESS_KEY_ID` /
/// `CLOUDCUBE_SECRET_ACCESS_KEY`; `OBJECT_STORAGE_ENDPOINT` overrides the endpoint.
fn open_cube(ctx: &Ctx) -> Result<(NamedStore, Sourced<String>)> {
    let f = &ctx.settings.file_name;
    if let Some(store) = &ctx.settings.raw.cloudcube.store {
        let st = NamedStore::open(store, &ctx.settings.object_storage)?;
        return Ok((st, Sourced::new(store.clone(), Source::File(format!("cloudcube.store in {f}")))));
    }
    let Some(raw) = ctx.env("CLOUDCUBE_URL") else {
        bail!("the cube is not configured: set CLOUDCUBE_URL (with CLOUDCUBE_ACCESS_KEY_ID and CLOUDCUBE_SECRET_ACCESS_KEY) or [cloudcube] store = \"s3://bucket/cube\"")
    };
    let mut loc = parse_cloudcube_url(&raw)?;
    if let Some(ep) = &ctx.settings.object_storage.endpoint {
        loc.endpoint = Some(ep.value.clone());
    }
    if loc.region.is_none() {
        loc.region = ctx.settings.object_storage.region.as_ref().map(|r| r.value.clone());
    }
    let creds = Credentials::Cloudcube.read(&ctx.settings.object_storage, &ProcessEnv);
    let shown = format!("s3://{}/{}", loc.bucket, loc.prefix);
    let st = NamedStore::open_s3(&shown, &loc, creds, Credentials::Cloudcube)?;
    Ok((st, Sourced::new(shown, Source::Env("CLOUDCUBE_URL"))))
}

impl CubeSettings {
    fn load(ctx: &Ctx, args: &BulkCloudcubeArgs, store_shown: Sourced<String>) -> Result<CubeSettings> {
        let env = ProcessEnv;
        let l = ctx.settings.layers(&env);
        let raw = &ctx.settings.raw.cloudcube;
        let f = &ctx.settings.file_name;
        Ok(CubeSettings {
            retention_days: l.pick(
                &Key { flag: Some("--retention-days"), env: None, file: "cloudcube.retention_days" },
                args.retention_days,
                raw.retention_days,
                5,
                "a whole number of days, 0 or more",
                |d| *d >= 0,
            )?,
            store_shown,
            jobs: TableSpec::load(
                raw.jobs.as_ref(),
                "cloudcube.jobs",
                "viral_clips_job",
                &["id", "status", "original_file_key", "extracted_audio_key"],
                f,
            )?,
            clips: TableSpec::load(
                raw.clips.as_ref(),
                "cloudcube.clips",
                "viral_clips_clippedvideo",
                &["job_id", "s3_key", "status", "created_at"],
                f,
            )?,
        })
    }
}

async fn preserved(db: &Db, s: &CubeSettings, cutoff: DateTime<Utc>) -> Result<Preserved> {
    let (c, j) = (&s.clips, &s.jobs);
    let (ck, cs, cc) = (c.col("s3_key"), c.col("status"), c.col("created_at"));
    let (jid, js, jo, ja) = (j.col("id"), j.col("status"), j.col("original_file_key"), j.col("extracted_audio_key"));
    let read = |t: &crate::ident::Ident, e: anyhow::Error| {
        anyhow!("cannot read {t}: {e:#}: check [cloudcube.jobs] / [cloudcube.clips] in the config")
    };
    let mut q = db.sql();
    q.push("SELECT ").as_text(&ck).push(format_args!(" FROM {} WHERE {cs} = 'completed' AND ", c.table));
    q.time_cmp(cc, ">=", cutoff).push(format_args!(" AND {ck} IS NOT NULL"));
    let clips = db.read(&q, |r| r.text_req(0)).await.map_err(|e| read(&c.table, e))?;
    let mut q = db.sql();
    q.push("SELECT ").as_text(&jid).push(", ").as_text(&js).push(", ").as_text(&jo).push(", ").as_text(&ja);
    q.push(format_args!(" FROM {} WHERE {js} NOT IN (", j.table)).literals(&FINISHED).push(")");
    let jobs = db
        .read(&q, |r| Ok((r.text_req(0)?, r.text_req(1)?, r.text(2)?, r.text(3)?)))
        .await
        .map_err(|e| read(&j.table, e))?;
    let mut out = Preserved { clips: clips.into_iter().collect(), ..Default::default() };
    for (id, status, orig, audio) in jobs {
        for k in [orig, audio].into_iter().flatten().filter(|k| !k.is_empty()) {
            out.in_progress.insert(k, (id.clone(), status.clone()));
        }
    }
    Ok(out)
}

/// The bulk plan: every object under the cube, streamed into the policy. With `fingerprints`
/// (a plan to be written), each object's listing is its fingerprint: what it was when it was
/// decided on, with no HEAD request per object.
async fn bulk_plan(
    db: &Db,
    s: &CubeSettings,
    store: &NamedStore,
    r: &Rules,
    allow_empty: bool,
    fingerprints: bool,
) -> Result<Plan> {
    let keep = preserved(db, s, r.now - Duration::days(r.retention_days)).await?;
    let mut p = Plan::new(COMMAND, r.now);
    // Several prefixes are listed at once; the plan is sorted by key afterwards, so that it
    // (and a dry run's report) reads the same whichever listing came back first.
    let cannot = |e: object_store::Error| anyhow!("cannot list {}: {e}", store.url);
    let mut listing = store.list_all(LIST_WIDTH).await.map_err(cannot)?;
    while let Some(m) = listing.try_next().await.map_err(cannot)? {
        let fp = fingerprints.then(|| Fingerprint::Object {
            size: m.size,
            e_tag: m.e_tag.clone(),
            last_modified: m.last_modified,
        });
        let o = Listed { key: m.location.to_string(), size: m.size, modified: m.last_modified };
        let target = store.target(&o.key);
        policy::object(&mut p, o, target, &keep, r, fp);
    }
    if let Some(why) = policy::refuse_empty(&keep, &p, r, allow_empty) {
        return Err(Fatal::guard(why).into());
    }
    p.units.sort_by(|a, b| a.items[0].target.cmp(&b.items[0].target));
    p.kept.sort_by(|a, b| a.target.cmp(&b.target));
    Ok(p)
}

/// Prefixes of the cube listed side by side.
const LIST_WIDTH: usize = 8;

/// `--job ID`: the job's row, its clips' counts, and the state of its two objects.
async fn job_plan(db: &Db, s: &CubeSettings, store: &NamedStore, job: i64, r: &Rules) -> Result<Plan> {
    let (j, c) = (&s.jobs, &s.clips);
    let (jid, js, jo, ja) = (j.col("id"), j.col("status"), j.col("original_file_key"), j.col("extracted_audio_key"));
    let (cj, cs) = (c.col("job_id"), c.col("status"));
    let mut q = db.sql();
    q.push("SELECT ").as_text(&js).push(", ").as_text(&jo).push(", ").as_text(&ja);
    q.push(format_args!(" FROM {} WHERE {jid} = ", j.table)).bind(job);
    let row = db.read(&q, |r| Ok((r.text_req(0)?, r.text(1)?, r.text(2)?))).await?.into_iter().next();
    let mut q = db.sql();
    q.push("SELECT count(*), count(CASE WHEN ").push(cs);
    q.push(format_args!(" = 'completed' THEN 1 END) FROM {} WHERE {cj} = ", c.table)).bind(job);
    let counts = db.read(&q, |r| Ok((r.int_req(0)?, r.int_req(1)?))).await?.into_iter().next().unwrap_or((0, 0));
    let Some((status, orig, audio)) = row else {
        return Err(Fatal::usage(format!("no job {job} in {}", j.table)).into());
    };
    let mut media = Vec::new();
    for (what, key) in [("original media", orig), ("extracted audio", audio)] {
        let Some(key) = key.filter(|k| !k.is_empty()) else { continue };
        let target = store.target(&key);
        let state = match parse_key(&key) {
            Err(e) => JobObject::Refused(e.to_string()),
            Ok(path) => match store.store.head(&path).await {
                Ok(m) => JobObject::Present { size: m.size, modified: m.last_modified },
                Err(object_store::Error::NotFound { .. }) => JobObject::Missing,
                Err(e) => bail!("cannot check {target}: {e}"),
            },
        };
        media.push((what, key, target, state));
    }
    let facts = Job { id: job, status, clips: counts.0, completed: counts.1, media };
    policy::job(facts, r).map_err(|why| Fatal::guard(why).into())
}

pub async fn run(ctx: &Ctx, args: &BulkCloudcubeArgs, chan: &Channel) -> Result<Ran> {
    let (store, shown) = open_cube(ctx)?;
    let s = CubeSettings::load(ctx, args, shown)?;
    let rows: Vec<(String, String, String)> = vec![
        ("cloudcube.store".into(), s.store_shown.value.clone(), s.store_shown.source.to_string()),
        ("cloudcube.retention_days".into(), s.retention_days.value.to_string(), s.retention_days.source.to_string()),
        ("cloudcube.jobs.table".into(), s.jobs.table.as_str().to_string(), "config or default".into()),
        ("cloudcube.clips.table".into(), s.clips.table.as_str().to_string(), "config or default".into()),
    ];
    if ctx.global.show_config {
        ctx.print_config(rows);
        return Ok(Ran::Done(Exit::Success));
    }
    let db = ctx.connect().await?;
    let mut res = Resources { db: Some(db.clone()), ..Default::default() };
    res.stores.insert("cube".into(), store.clone());
    let rules = Rules {
        now: ctx.settings.now.value,
        retention_days: s.retention_days.value,
        grace_minutes: ctx.settings.grace_minutes.value,
        protected: ctx.settings.protected_prefixes.value.clone(),
    };
    let Finished { exit, mut report, plan } =
        run_policy(ctx, ctx.spec(COMMAND, &rows, Some(db.clone()), &res), chan, || async {
            let mut p = match args.job {
                Some(job) => job_plan(&db, &s, &store, job, &rules).await?,
                None => {
                    let fingerprints = ctx.global.plan_out.is_some();
                    bulk_plan(&db, &s, &store, &rules, args.allow_empty_references, fingerprints).await?
                }
            };
            p.fields.insert("retention_days".into(), rules.retention_days.into());
            p.fields.insert("store".into(), store.url.clone().into());
            Ok(p)
        })
        .await?;
    // Seed 003's response fields.
    let (mut done, mut bytes, mut sample) = (0u64, 0u64, Vec::new());
    plan.units.each_item(|i| {
        if matches!(i.outcome, Some(Outcome::Deleted) | Some(Outcome::Missing) | Some(Outcome::WouldDelete)) {
            done += 1;
            bytes += i.bytes.unwrap_or(0);
            if let (true, Op::DeleteObject { key, .. }) = (sample.len() < 10, &i.op) {
                sample.push(key.clone());
            }
        }
        true
    })?;
    let mb = (bytes as f64 / (1024.0 * 1024.0) * 100.0).round() / 100.0;
    let retained = report.totals.retained;
    let aborted = report.status == "aborted";
    let message = if aborted {
        // Why a guard stopped the run, as the report already says.
        report.fields.get("message").and_then(|m| m.as_str()).unwrap_or_default().to_string()
    } else if report.dry_run {
        format!("Would delete {done} files ({mb:.2} MB), retain {retained} recent clips")
    } else {
        format!("Deleted {done} files ({mb:.2} MB), retained {retained} recent clips")
    };
    let f = &mut report.fields;
    f.insert("success".into(), (report.totals.failed == 0 && !aborted).into());
    f.insert("message".into(), message.clone().into());
    f.insert("deleted_count".into(), done.into());
    f.insert("deleted_size_mb".into(), serde_json::json!(mb));
    f.insert("retained_count".into(), retained.into());
    f.insert("total_files_scanned".into(), plan.scanned.into());
    f.insert("deleted_files_sample".into(), sample.into());
    tracing::info!(target: "cleanup", "{message}");
    db.close().await;
    Ok(Ran::Run(Box::new(Finished { exit, report, plan })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_cloudcube_url_forms_parse() {
        #[allow(clippy::type_complexity)]
        let cases: [(&str, &str, &str, Option<&str>, Option<&str>); 5] = [
            ("https://cloud-cube-us2.s3.amazonaws.com/abc123", "cloud-cube-us2", "abc123", None, None),
            (
                "https://cloud-cube-eu.s3.eu-west-1.amazonaws.com/cube9/",
                "cloud-cube-eu",
                "cube9",
                Some("eu-west-1"),
                None,
            ),
            (
                "https://my.dotted.bucket.s3-ap-southeast-2.amazonaws.com/c",
                "my.dotted.bucket",
                "c",
                Some("ap-southeast-2"),
                None,
            ),
            ("http://127.0.0.1:9000/bucket/cube", "bucket", "cube", None, Some("http://127.0.0.1:9000")),
            ("https://minio.internal/b/cube/nested", "b", "cube/nested", None, Some("https://minio.internal")),
        ];
        for (url, bucket, prefix, region, endpoint) in cases {
            let l = parse_cloudcube_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!((l.bucket.as_str(), l.prefix.as_str()), (bucket, prefix), "{url}");
            assert_eq!(l.region.as_deref(), region, "{url}");
            assert_eq!(l.endpoint.as_deref(), endpoint, "{url}");
        }
        for bad in [
            "not a url",
            "ftp://h/b/c",
            "https://cloud-cube.s3.amazonaws.com/",
            "http://127.0.0.1:9000/bucket",
            "https://x.amazonaws.com/c",
        ] {
            assert!(parse_cloudcube_url(bad).is_err(), "{bad:?} must be refused");
        }
        let e = parse_cloudcube_url("https://user:pw@h/").unwrap_err().to_string();
        assert!(!e.contains("pw@"), "{e}");
    }
}

/// Property tests: any CLOUDCUBE_URL is parsed or refused with a message, never a panic; a
/// parsed one names a bucket and a cube, and its message never shows a password.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]
        #[test]
        fn any_cloudcube_url_parses_or_is_refused(
            scheme in "(https?|s3|ftp|)",
            user in "(u:secretpw@)?",
            host in "[a-z0-9.-]{0,20}(\\\\.s3(\\\\.|-)?[a-z0-9-]{0,12}\\\\.amazonaws\\\\.com)?(:[0-9]{1,5})?",
            path in "(/[a-zA-Z0-9._ -]{0,8}){0,4}/?",
        ) {
            let raw = format!("{scheme}://{user}{host}{path}");
            match parse_cloudcube_url(&raw) {
                Ok(loc) => prop_assert!(!loc.bucket.is_empty() && !loc.prefix.is_empty(), "{raw:?} -> {loc:?}"),
                Err(e) => prop_assert!(!e.to_string().contains("secretpw"), "{e}"),
            }
        }
    }
}
