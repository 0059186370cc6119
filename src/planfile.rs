//! Plans on disk: `--plan-out` writes one (versioned, with where it was made and each item's
//! fingerprint), and `sweep apply` reads it back after checking its version, its age and that
//! it is not a forecast. The format sits next to the plan it carries.

use crate::db::{Db, DbIdentity};
use crate::executor::BackupRecord;
use crate::exit_codes::Fatal;
use crate::plan::Plan;
use crate::store::object::StoreRecord;
use crate::store::Resources;
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How a plan was made, as its file records it.
pub struct Made {
    pub dry_run: bool,
    /// Where a real run copies to before deleting.
    pub backup: Option<BackupRecord>,
    /// The effective configuration, global then the command's own: (key, value, source),
    /// secrets already redacted.
    pub config: Vec<(String, String, String)>,
}

/// The plan file format. Version 1 (session 1) had no fingerprints or identities and cannot be
/// applied.
pub const PLAN_VERSION: u32 = 2;

/// One line of the effective configuration (secrets already redacted).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigRow {
    pub key: String,
    pub value: String,
    pub source: String,
}

/// A plan file: `P` is `&Plan` when writing, `Plan` when reading.
#[derive(Debug, Serialize, Deserialize)]
pub struct PlanDoc<P> {
    pub sweep_plan_version: u32,
    pub sweep_version: String,
    /// When the plan was written (the real clock), for `--max-plan-age`.
    pub created_at: DateTime<Utc>,
    pub dry_run: bool,
    /// The database the plan was made against.
    pub database: Option<DbIdentity>,
    /// Local roots by name (canonical paths).
    pub roots: BTreeMap<String, PathBuf>,
    /// Object stores by name.
    pub stores: BTreeMap<String, StoreRecord>,
    /// Where a real run copies to before deleting (none: no backups).
    pub backup: Option<BackupRecord>,
    /// The effective global configuration, with where each value came from.
    pub config: Vec<ConfigRow>,
    pub plan: P,
}

/// The stores of a run, as recorded in plans and in `cleanup_runs.details`.
pub fn store_records(res: &Resources) -> BTreeMap<String, StoreRecord> {
    res.stores.iter().map(|(name, s)| (name.clone(), s.record())).collect()
}

/// Fingerprint every item, then write the plan (atomically: a temporary file, then rename).
pub async fn write_plan(path: &Path, plan: &mut Plan, made: &Made, db: Option<&Db>, res: &Resources) -> Result<()> {
    let t = std::time::Instant::now();
    crate::fingerprint::capture(plan, res).await.context("cannot fingerprint the plan's items")?;
    tracing::debug!(target: "cleanup", "Fingerprinted {} items in {:.2} s", plan.item_count(), t.elapsed().as_secs_f64());
    let database = match db {
        Some(db) => Some(db.identity().await.context("cannot identify the database for the plan")?),
        None => None,
    };
    let doc = PlanDoc {
        sweep_plan_version: PLAN_VERSION,
        sweep_version: env!("CARGO_PKG_VERSION").to_string(),
        created_at: Utc::now(),
        dry_run: made.dry_run,
        database,
        roots: res.roots.iter().map(|(n, r)| (n.clone(), r.path().to_path_buf())).collect(),
        stores: store_records(res),
        backup: made.backup.clone(),
        config: made
            .config
            .iter()
            .map(|(key, value, source)| ConfigRow { key: key.clone(), value: value.clone(), source: source.clone() })
            .collect(),
        plan: &*plan,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        // Compact: a plan of 100,000 items is read by programs (`apply`, `jq`), not scrolled.
        serde_json::to_writer(&mut f, &doc)?;
        use std::io::Write;
        f.flush()?;
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("cannot write the plan file {}", path.display()))?;
    tracing::info!(target: "cleanup", "Plan written to {} ({} items)", path.display(), plan.item_count());
    Ok(())
}

/// Read and check a plan file: its version and its age.
pub fn read_plan(path: &Path, max_age: chrono::Duration, now: DateTime<Utc>) -> Result<PlanDoc<Plan>> {
    // Read as a stream, twice: a plan of a million items is never held as text.
    let open = || {
        std::fs::File::open(path)
            .map(|f| std::io::BufReader::with_capacity(1 << 16, f))
            .map_err(|e| Fatal::usage(format!("cannot read the plan file {}: {e}", path.display())))
    };
    let not_a_plan = |why: String| {
        Fatal::usage(format!("{} is not a sweep plan (one written by --plan-out): {why}", path.display()))
    };
    // The version first (a cheap pass that keeps nothing), then the whole plan straight into
    // its types: no intermediate JSON tree, whose size would be several times the file's.
    #[derive(Deserialize)]
    struct Version {
        sweep_plan_version: Option<u64>,
    }
    let v: Version = serde_json::from_reader(open()?).map_err(|e| not_a_plan(e.to_string()))?;
    match v.sweep_plan_version {
        Some(n) if n == PLAN_VERSION as u64 => {}
        Some(n) => {
            return Err(Fatal::usage(format!(
                "{} is a version {n} plan; this sweep applies version {PLAN_VERSION} plans: make the plan again with this sweep",
                path.display()
            ))
            .into())
        }
        None => return Err(not_a_plan("it has no sweep_plan_version".into()).into()),
    }
    let mut doc: PlanDoc<Plan> = serde_json::from_reader(open()?).map_err(|e| not_a_plan(e.to_string()))?;
    let age = now - doc.created_at;
    if age > max_age {
        return Err(Fatal::usage(format!(
            "the plan {} was written at {} ({} ago), more than --max-plan-age {}: nothing was deleted; make a new plan (a plan describes things as they were)",
            path.display(),
            doc.created_at.to_rfc3339(),
            human(age),
            human(max_age)
        ))
        .into());
    }
    if doc.plan.now > doc.created_at + chrono::Duration::minutes(1) {
        return Err(Fatal::usage(format!(
            "the plan {} is a forecast (made with --now {}, later than when it was written): it shows what would be deleted then, and cannot be applied now",
            path.display(),
            doc.plan.now.to_rfc3339()
        ))
        .into());
    }
    // Outcomes of a run that wrote the plan are not carried into this one.
    doc.plan.units.try_map(|u| {
        for item in u.items.iter_mut() {
            item.outcome = None;
            item.error = None;
            item.backup = None;
        }
    })?;
    Ok(doc)
}

fn human(d: chrono::Duration) -> String {
    let m = d.num_minutes();
    if m >= 48 * 60 {
        format!("{}d", m / (24 * 60))
    } else if m >= 120 {
        format!("{}h", m / 60)
    } else {
        format!("{m}m")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(created: &str, now: &str) -> String {
        serde_json::json!({
            "sweep_plan_version": PLAN_VERSION, "sweep_version": "0", "created_at": created, "dry_run": true,
            "database": null, "roots": {}, "stores": {}, "backup": null, "config": [],
            "plan": {"command": "x", "now": now, "scanned": 0, "units": [], "kept": [], "batch_size": 10, "fields": {}}
        })
        .to_string()
    }

    #[test]
    fn old_plans_forecasts_and_other_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("plan.json");
        let now: DateTime<Utc> = "2026-11-22T12:00:00Z".parse().unwrap();
        let day = chrono::Duration::hours(24);
        std::fs::write(&p, doc("2026-11-22T11:00:00Z", "2026-11-22T11:00:00Z")).unwrap();
        assert!(read_plan(&p, day, now).is_ok());
        let e = read_plan(&p, chrono::Duration::minutes(30), now).unwrap_err().to_string();
        assert!(e.contains("--max-plan-age 30m") && e.contains("60m ago"), "{e}");
        std::fs::write(&p, doc("2026-11-22T11:00:00Z", "2026-12-22T11:00:00Z")).unwrap();
        assert!(read_plan(&p, day, now).unwrap_err().to_string().contains("forecast"));
        std::fs::write(&p, "{\"sweep_plan_version\": 1}").unwrap();
        assert!(read_plan(&p, day, now).unwrap_err().to_string().contains("version 1 plan"));
        std::fs::write(&p, "[1, 2").unwrap();
        assert!(read_plan(&p, day, now).unwrap_err().to_string().contains("is not a sweep plan"));
        assert!(read_plan(&dir.path().join("none.json"), day, now).unwrap_err().to_string().contains("cannot read"));
    }
}
