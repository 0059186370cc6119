//! The run report of SPEC §6: one JSON document with `--json`, a readable summary otherwise.

use crate::plan::{Item, Kind, Op, Outcome, Plan, Unit, Units};
use chrono::{DateTime, Utc};
use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Counts for one kind (and for the whole run).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counts {
    pub candidates: u64,
    pub deleted: u64,
    pub would_delete: u64,
    pub missing: u64,
    pub failed: u64,
    pub skipped: u64,
    pub retained: u64,
    pub bytes_reclaimed: u64,
    pub bytes_would_reclaim: u64,
}

impl Counts {
    fn plus(self, o: &Counts) -> Counts {
        Counts {
            candidates: self.candidates + o.candidates,
            deleted: self.deleted + o.deleted,
            would_delete: self.would_delete + o.would_delete,
            missing: self.missing + o.missing,
            failed: self.failed + o.failed,
            skipped: self.skipped + o.skipped,
            retained: self.retained + o.retained,
            bytes_reclaimed: self.bytes_reclaimed + o.bytes_reclaimed,
            bytes_would_reclaim: self.bytes_would_reclaim + o.bytes_would_reclaim,
        }
    }

    fn add(&mut self, i: &Item) {
        self.candidates += 1;
        let b = i.bytes.unwrap_or(0);
        match i.outcome.unwrap_or(Outcome::Skipped) {
            Outcome::Deleted => {
                self.deleted += 1;
                self.bytes_reclaimed += b;
            }
            Outcome::WouldDelete => {
                self.would_delete += 1;
                self.bytes_would_reclaim += b;
            }
            Outcome::Missing => self.missing += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Skipped => self.skipped += 1,
        }
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub run_id: String,
    pub command: String,
    pub dry_run: bool,
    /// `success|partial|aborted|skipped`.
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// The instant ages were evaluated at.
    pub now: DateTime<Utc>,
    pub scanned: u64,
    /// The sums of `by_kind` (`candidates`, `deleted`, `failed`, `retained`, …).
    #[serde(flatten)]
    pub totals: Counts,
    pub by_kind: BTreeMap<Kind, Counts>,
    /// What was kept, with why (at most `KEPT_SAMPLE` entries; `retained` has the count).
    pub kept_sample: Vec<crate::plan::Kept>,
    /// Command-specific fields (`cutoff`, …).
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
    #[serde(skip)]
    pub units_ok: u64,
    #[serde(skip)]
    pub units_failed: u64,
    #[serde(skip)]
    pub interrupted: bool,
    /// Directories removed as empty (or that would be, in a dry run).
    #[serde(skip)]
    pub empty_dirs_removed: u64,
    /// Counts per task (`Unit::task`), for the commands that report them.
    #[serde(skip)]
    pub by_task: BTreeMap<String, TaskCounts>,
}

/// One task's counts: units whole (deleted, would be, failed), and items and bytes done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskCounts {
    pub units: u64,
    /// Units whose every item is deleted or already gone.
    pub units_deleted: u64,
    /// Units whose every item would be deleted (dry run).
    pub units_would_delete: u64,
    /// Units with a failed item.
    pub units_failed: u64,
    /// Items deleted, already gone or that would be deleted.
    pub items_done: u64,
    pub objects_deleted: u64,
    pub objects_would_delete: u64,
    /// Bytes of items deleted or already gone.
    pub bytes_deleted: u64,
    pub bytes_would_delete: u64,
}

impl TaskCounts {
    /// Bytes of the items deleted, already gone or that would be deleted.
    pub fn bytes_done(&self) -> u64 {
        self.bytes_deleted + self.bytes_would_delete
    }
}

/// How many kept entries the report carries (the plan file has them all).
pub const KEPT_SAMPLE: usize = 50;

impl Report {
    pub fn new(run_id: &str, command: &str, dry_run: bool, started: DateTime<Utc>, plan: &Plan) -> Report {
        let mut by_kind: BTreeMap<Kind, Counts> = BTreeMap::new();
        for k in &plan.kept {
            by_kind.entry(k.kind).or_default().retained += 1;
        }
        for (k, n) in &plan.kept_unlisted {
            by_kind.entry(*k).or_default().retained += n;
        }
        Report {
            run_id: run_id.to_string(),
            command: command.to_string(),
            dry_run,
            status: "success".into(),
            started_at: started,
            finished_at: started,
            now: plan.now,
            scanned: plan.scanned,
            totals: Counts::default(),
            by_kind,
            kept_sample: plan.kept.iter().take(KEPT_SAMPLE).cloned().collect(),
            fields: plan.fields.clone(),
            units_ok: 0,
            units_failed: 0,
            interrupted: false,
            empty_dirs_removed: 0,
            by_task: BTreeMap::new(),
        }
    }

    /// A report for a run that decided not to do anything (`CLEANUP_ENABLED=false`, `--auto` off).
    pub fn skipped(run_id: &str, command: &str, dry_run: bool, now: DateTime<Utc>, why: &str) -> Report {
        let mut r = Report::new(run_id, command, dry_run, Utc::now(), &Plan::new(command, now));
        r.fields.insert("message".into(), why.into());
        r.finish(Utc::now());
        r.status = "skipped".into();
        r
    }

    /// A report for a run a safety cap or guard stopped before anything was deleted (SPEC §6:
    /// `status: "aborted"`): every planned item is `skipped` with `why`.
    pub fn aborted(run_id: &str, command: &str, dry_run: bool, plan: &mut Plan, why: &str) -> Report {
        let mut r = Report::new(run_id, command, dry_run, Utc::now(), plan);
        let error = format!("not deleted: {why}");
        let marked = plan.units.try_map(|u| {
            for item in u.items.iter_mut() {
                item.outcome = Some(Outcome::Skipped);
                item.error = Some(error.clone());
            }
            r.count_unit(u);
        });
        if let Err(e) = marked {
            tracing::error!(target: "cleanup", "{e:#}");
        }
        r.fields.insert("message".into(), why.into());
        r.finish(Utc::now());
        r.status = "aborted".into();
        r
    }

    /// Count a unit the executor has settled: its items, and its task's counts.
    pub fn count_unit(&mut self, u: &Unit) {
        for i in &u.items {
            self.count(i);
        }
        let Some(task) = &u.task else { return };
        let t = match self.by_task.get_mut(task) {
            Some(t) => t,
            None => self.by_task.entry(task.clone()).or_default(),
        };
        let deleted = |i: &Item| matches!(i.outcome, Some(Outcome::Deleted) | Some(Outcome::Missing));
        let would = |i: &Item| i.outcome == Some(Outcome::WouldDelete);
        t.units += 1;
        t.units_deleted += u.items.iter().all(deleted) as u64;
        t.units_would_delete += u.items.iter().all(would) as u64;
        t.units_failed += u.items.iter().any(|i| i.outcome == Some(Outcome::Failed)) as u64;
        for i in &u.items {
            let (b, object) = (i.bytes.unwrap_or(0), (i.kind == Kind::Object) as u64);
            if deleted(i) {
                t.objects_deleted += object;
                t.bytes_deleted += b;
            } else if would(i) {
                t.objects_would_delete += object;
                t.bytes_would_delete += b;
            } else {
                continue;
            }
            t.items_done += 1;
        }
    }

    /// Count an item the executor has settled.
    fn count(&mut self, i: &Item) {
        self.by_kind.entry(i.kind).or_default().add(i);
        if matches!(i.op, Op::DeleteEmptyDir { .. })
            && matches!(i.outcome, Some(Outcome::Deleted) | Some(Outcome::WouldDelete))
        {
            self.empty_dirs_removed += 1;
        }
    }

    /// Sum the per-kind counts and settle the status.
    pub fn finish(&mut self, at: DateTime<Utc>) {
        self.finished_at = at;
        self.totals = self.by_kind.values().fold(Counts::default(), |t, c| t.plus(c));
        self.status = if self.interrupted || self.totals.failed > 0 { "partial" } else { "success" }.into();
    }

    /// The readable summary printed without `--json`.
    pub fn to_text(&self, plan: &Plan, max_items: usize) -> String {
        let mut s = String::new();
        let mode = if self.dry_run { "DRY RUN: nothing was changed" } else { "real run" };
        let _ = writeln!(s, "sweep {} ({mode})", self.command);
        let _ = writeln!(s, "  run {}  status {}  as of {}", self.run_id, self.status, self.now.to_rfc3339());
        for (k, v) in &self.fields {
            if let Some(t) = v.as_str() {
                let _ = writeln!(s, "  {k}: {t}");
            } else if v.is_number() || v.is_boolean() {
                let _ = writeln!(s, "  {k}: {v}");
            }
        }
        let _ = writeln!(
            s,
            "  scanned {}  candidates {}  retained {}",
            self.scanned, self.totals.candidates, self.totals.retained
        );
        let _ = writeln!(
            s,
            "  {:<8}{:>12}{:>10}{:>14}{:>9}{:>9}{:>10}{:>12}",
            "kind", "candidates", "deleted", "would_delete", "missing", "failed", "retained", "bytes"
        );
        for (k, c) in &self.by_kind {
            let bytes = if self.dry_run { c.bytes_would_reclaim } else { c.bytes_reclaimed };
            let _ = writeln!(
                s,
                "  {:<8}{:>12}{:>10}{:>14}{:>9}{:>9}{:>10}{:>12}",
                k.as_str(),
                c.candidates,
                c.deleted,
                c.would_delete,
                c.missing,
                c.failed,
                c.retained,
                human_bytes(bytes)
            );
        }
        if self.dry_run {
            let _ = writeln!(s, "  would reclaim {}", human_bytes(self.totals.bytes_would_reclaim));
        } else {
            let _ = writeln!(s, "  reclaimed {}", human_bytes(self.totals.bytes_reclaimed));
        }
        // Two passes over the items (read back from disk for a large plan): the failures,
        // all of them, then the first `max_items` others.
        let failed = self.totals.failed;
        if failed > 0 {
            let _ = writeln!(s, "\nFailed ({failed}):");
            let _ = plan.units.each_item(|i| {
                if i.outcome == Some(Outcome::Failed) {
                    let _ = writeln!(s, "  {:<7}{}: {}", i.kind.as_str(), i.target, i.error.as_deref().unwrap_or(""));
                }
                true
            });
        }
        let others = self.totals.candidates - failed;
        if others > 0 {
            let shown = others.min(max_items as u64);
            let _ = writeln!(
                s,
                "\nItems ({shown} of {others}{}):",
                if shown < others { "; --json or --plan-out for all" } else { "" }
            );
            let mut left = shown;
            let _ = plan.units.each_item(|i| {
                if i.outcome != Some(Outcome::Failed) {
                    let _ = writeln!(
                        s,
                        "  {:<13}{:<7}{}  {}  ({}){}",
                        i.outcome.map(Outcome::as_str).unwrap_or("planned"),
                        i.kind.as_str(),
                        i.target,
                        i.bytes.map(human_bytes).unwrap_or_else(|| "-".into()),
                        i.reason,
                        i.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
                    );
                    left -= 1;
                }
                left > 0
            });
        }
        if !self.kept_sample.is_empty() {
            let shown = self.kept_sample.len().min(max_items);
            let _ = writeln!(s, "\nKept ({shown} of {}):", self.totals.retained);
            for k in self.kept_sample.iter().take(shown) {
                let _ = writeln!(s, "  {:<7}{}  ({})", k.kind.as_str(), k.target, k.reason);
            }
        }
        s
    }
}

/// The report with its items, as `--json` prints it: the items are the plan's, serialized in
/// place rather than copied (a large run holds one copy of each target and reason).
pub struct ReportDoc<'a> {
    pub report: &'a Report,
    pub plan: &'a Plan,
}

impl Serialize for ReportDoc<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Doc<'a> {
            #[serde(flatten)]
            report: &'a Report,
            items: Items<'a>,
        }
        Doc { report: self.report, items: Items(&self.plan.units) }.serialize(s)
    }
}

struct Items<'a>(&'a Units);

impl Serialize for Items<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        let mut seq = s.serialize_seq(Some(self.0.item_count()))?;
        for u in self.0.iter() {
            let u = u.map_err(|e| S::Error::custom(format!("{e:#}")))?;
            for i in &u.items {
                seq.serialize_element(&ItemView(i))?;
            }
        }
        seq.end()
    }
}

/// One item as the report shows it: `kind, target, reason, bytes, outcome, error`.
pub struct ItemView<'a>(pub &'a Item);

impl Serialize for ItemView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let i = self.0;
        let mut st = s.serialize_struct("Item", 6)?;
        st.serialize_field("kind", &i.kind)?;
        st.serialize_field("target", &i.target)?;
        st.serialize_field("reason", &i.reason)?;
        st.serialize_field("bytes", &i.bytes)?;
        st.serialize_field("outcome", &i.outcome)?;
        st.serialize_field("error", &i.error)?;
        st.end()
    }
}

/// `1.2 MB`-style sizes (powers of 1024, as `du -h`).
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Print a run's report: one JSON document on stdout with `json`, else the readable summary.
/// A reader that stops early (`| head`) is not an error: the run is done and audited.
pub fn print(json: bool, report: &Report, plan: &Plan) -> std::io::Result<()> {
    use std::io::Write;
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    let written = if json {
        serde_json::to_writer(&mut out, &ReportDoc { report, plan })
            .map_err(std::io::Error::from)
            .and_then(|_| writeln!(out))
    } else {
        write!(out, "{}", report.to_text(plan, 20))
    };
    match written.and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_du() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024), "5.0 MiB");
    }
}
