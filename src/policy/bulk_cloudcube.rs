//! `bulk-cloudcube` (seed 003), the decision: each object under the cube goes unless the
//! database preserves it (a completed clip within the window, media of a job in progress), it
//! is a recent clip, fresh, or protected; `--job ID` takes one finished job's original media
//! and extracted audio once all its clips are completed.

use super::is_protected;
use crate::plan::{Fingerprint, Item, Kind, Op, Plan, Unit};
use chrono::{DateTime, Duration, Utc};
use std::collections::HashMap;

pub const COMMAND: &str = "bulk-cloudcube";
/// A clip job is finished in one of these states (SPEC §4.1); any other is in progress.
pub const FINISHED: [&str; 3] = ["completed", "failed", "cancelled"];

/// What the database preserves, and why.
#[derive(Debug, Default)]
pub struct Preserved {
    /// Keys of completed clips created within the window.
    pub clips: std::collections::HashSet<String>,
    /// Original and audio keys of jobs still in progress → the job and its status.
    pub in_progress: HashMap<String, (String, String)>,
}

/// The fixed inputs of the bulk decision.
pub struct Rules {
    pub now: DateTime<Utc>,
    pub retention_days: i64,
    pub grace_minutes: i64,
    pub protected: Vec<String>,
}

/// One listed object.
pub struct Listed {
    pub key: String,
    pub size: u64,
    pub modified: DateTime<Utc>,
}

/// Whether an object goes, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Delete(String),
    Keep(String),
}

/// The bulk decision for one object (seed 003's "Logic", plus SPEC's job and grace rules).
pub fn decide(o: &Listed, keep: &Preserved, r: &Rules) -> Decision {
    let cutoff = r.now - Duration::days(r.retention_days);
    if keep.clips.contains(&o.key) {
        return Decision::Keep(format!("completed clip created within {} days", r.retention_days));
    }
    if o.key.starts_with("clips/") && o.modified >= cutoff {
        return Decision::Keep(format!("under clips/, modified within {} days", r.retention_days));
    }
    if let Some((job, status)) = keep.in_progress.get(&o.key) {
        return Decision::Keep(format!("media of job {job}, still in progress ({status})"));
    }
    if o.modified > r.now - Duration::minutes(r.grace_minutes) {
        return Decision::Keep(format!("modified within the {}-minute grace period", r.grace_minutes));
    }
    if is_protected(&o.key, &r.protected) {
        return Decision::Keep("under a protected prefix".into());
    }
    Decision::Delete(if o.key.starts_with("clips/") {
        format!("clip older than {} days (last modified {})", r.retention_days, o.modified.to_rfc3339())
    } else {
        format!("temporary media (upload, audio or artifact), last modified {}", o.modified.to_rfc3339())
    })
}

/// Add one listed object to the plan: a unit or a kept entry. `target` is how it is shown;
/// `fingerprint` (a plan to be written) is what its listing said.
pub fn object(p: &mut Plan, o: Listed, target: String, keep: &Preserved, r: &Rules, fingerprint: Option<Fingerprint>) {
    p.scanned += 1;
    match decide(&o, keep, r) {
        Decision::Keep(why) => p.keep(Kind::Object, target, why),
        Decision::Delete(reason) => {
            let mut it = Item::new(Op::DeleteObject { store: "cube".into(), key: o.key }, target, reason, Some(o.size));
            it.fingerprint = fingerprint;
            p.units.push(Unit::new(vec![it]));
        }
    }
}

/// SPEC safety rule 2: a database that preserves nothing while the cube holds things to delete
/// is more likely a wrong table or database than an empty one. The refusal, if it applies.
pub fn refuse_empty(keep: &Preserved, p: &Plan, r: &Rules, allow_empty: bool) -> Option<String> {
    (keep.clips.is_empty() && keep.in_progress.is_empty() && !p.units.is_empty() && !allow_empty).then(|| {
        format!(
            "the database preserves nothing (no completed clip within {} days, no job in progress), yet {} objects would be deleted: \
             refusing (SPEC safety rule 2); pass --allow-empty-references if that is right",
            r.retention_days,
            p.units.len()
        )
    })
}

/// `--job ID`: what is known of one job.
pub struct Job {
    pub id: i64,
    pub status: String,
    /// Its clips, and how many are completed.
    pub clips: i64,
    pub completed: i64,
    /// ("original media" or "extracted audio", key, how it is shown, its state).
    pub media: Vec<(&'static str, String, String, JobObject)>,
}

/// The state of a job's object.
#[derive(Debug, Clone, PartialEq)]
pub enum JobObject {
    /// The key cannot name an object.
    Refused(String),
    Missing,
    Present {
        size: u64,
        modified: DateTime<Utc>,
    },
}

/// `--job ID` (the after-stage-4 cleanup): the job's original media and extracted audio, once
/// every clip is completed. `Err` is why nothing of the job may go yet.
pub fn job(j: Job, r: &Rules) -> Result<Plan, String> {
    if j.clips == 0 || j.completed < j.clips {
        return Err(format!(
            "job {} ({}) has {} of {} clips completed: its original media and audio are kept until all its clips are completed",
            j.id, j.status, j.completed, j.clips
        ));
    }
    let mut p = Plan::new(COMMAND, r.now);
    p.fields.insert("job".into(), j.id.into());
    for (what, key, target, state) in j.media {
        p.scanned += 1;
        let op = Op::DeleteObject { store: "cube".into(), key };
        match state {
            JobObject::Refused(why) => {
                let mut it = Item::new(op, target, what, None);
                it.refused = Some(why);
                p.units.push(Unit::new(vec![it]));
            }
            JobObject::Present { modified, .. } if modified > r.now - Duration::minutes(r.grace_minutes) => {
                p.keep(Kind::Object, target, "modified within the grace period");
            }
            state => {
                let size = match state {
                    JobObject::Present { size, .. } => Some(size),
                    _ => None,
                };
                let reason = format!("{what} of job {}: all {} clips are completed", j.id, j.clips);
                p.units.push(Unit::new(vec![Item::new(op, target, reason, size)]));
            }
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_of_the_seed_keeps_or_deletes() {
        let now: DateTime<Utc> = "2026-11-22T10:00:00Z".parse().unwrap();
        let r = Rules { now, retention_days: 5, grace_minutes: 30, protected: vec!["backups/".into()] };
        let mut keep = Preserved::default();
        keep.clips.insert("clips/recent.mp4".into());
        keep.in_progress.insert("uploads/running.mp4".into(), ("7".into(), "processing".into()));
        let o = |key: &str, days: i64| Listed { key: key.into(), size: 1, modified: now - Duration::days(days) };
        let cases = [
            (o("clips/recent.mp4", 20), false), // a preserved completed clip, whatever its mtime
            (o("clips/other.mp4", 5), false),   // under clips/, exactly at the window's edge
            (o("clips/old.mp4", 6), true),      // older clip
            (o("uploads/running.mp4", 30), false), // job in progress
            (o("uploads/done.mp4", 30), true),  // temporary media
            (o("audio/x.mp3", 0), false),       // within the grace period
            (o("backups/x.mp4", 30), false),    // protected
        ];
        for (obj, deleted) in cases {
            assert_eq!(matches!(decide(&obj, &keep, &r), Decision::Delete(_)), deleted, "{}", obj.key);
        }
    }

    fn rules(now: DateTime<Utc>) -> Rules {
        Rules { now, retention_days: 5, grace_minutes: 30, protected: vec!["backups/".into()] }
    }

    #[test]
    fn a_realistic_listing_and_what_moves_with_time() {
        let now: DateTime<Utc> = "2026-11-22T10:00:00Z".parse().unwrap();
        let mut keep = Preserved::default();
        keep.clips.insert("clips/7/final.mp4".into());
        keep.in_progress.insert("uploads/9/source.mp4".into(), ("9".into(), "processing".into()));
        let listing = |now: DateTime<Utc>| {
            [
                ("clips/7/final.mp4", 30.0),
                ("clips/8/final.mp4", 4.9),
                ("clips/6/final.mp4", 5.5),
                ("uploads/9/source.mp4", 2.0),
                ("uploads/3/source.mp4", 12.0),
                ("audio/3/track.mp3", 12.0),
                ("artifacts/4/frames.zip", 0.01),
                ("backups/2026/db.tar", 90.0),
            ]
            .map(|(k, days)| Listed {
                key: k.into(),
                size: 1000,
                modified: now - Duration::seconds((days * 86400.0) as i64),
            })
        };
        let run = |listed: [Listed; 8], now| {
            let mut p = Plan::new(COMMAND, now);
            for o in listed {
                let target = format!("s3://cube/{}", o.key);
                object(&mut p, o, target, &keep, &rules(now), None);
            }
            p
        };
        let base = run(listing(now), now);
        insta::assert_snapshot!("cloudcube_plan", crate::policy::testing::render(&base));
        // The same objects a day later: clips/8 leaves the window, the artifact the grace period.
        let later = run(listing(now), now + Duration::days(1));
        insta::assert_snapshot!("cloudcube_plan_a_day_later", crate::policy::testing::decisions(&later).join("\n"));
        assert!(refuse_empty(&keep, &base, &rules(now), false).is_none());
        assert!(refuse_empty(&Preserved::default(), &base, &rules(now), false).is_some(), "SPEC rule 2");
        assert!(refuse_empty(&Preserved::default(), &base, &rules(now), true).is_none());
    }

    /// (case, clips, completed, the job's media go)
    #[test]
    fn a_jobs_media_goes_only_when_every_clip_is_completed() {
        let now: DateTime<Utc> = "2026-11-22T10:00:00Z".parse().unwrap();
        let old = JobObject::Present { size: 10, modified: now - Duration::days(1) };
        let cases = [("no clips", 0, 0, false), ("some pending", 3, 2, false), ("all completed", 3, 3, true)];
        for (name, clips, completed, goes) in cases {
            let j = Job {
                id: 4,
                status: "completed".into(),
                clips,
                completed,
                media: vec![("original media", "uploads/4.mp4".into(), "s3://cube/uploads/4.mp4".into(), old.clone())],
            };
            assert_eq!(job(j, &rules(now)).is_ok(), goes, "{name}");
        }
        let fresh = JobObject::Present { size: 10, modified: now - Duration::minutes(5) };
        let j = Job {
            id: 4,
            status: "completed".into(),
            clips: 1,
            completed: 1,
            media: vec![
                ("original media", "uploads/4.mp4".into(), "s3://cube/uploads/4.mp4".into(), fresh),
                ("extracted audio", "audio/4.mp3".into(), "s3://cube/audio/4.mp3".into(), JobObject::Missing),
                (
                    "extracted audio",
                    "bad//key".into(),
                    "s3://cube/bad//key".into(),
                    JobObject::Refused("empty segment".into()),
                ),
            ],
        };
        let p = job(j, &rules(now)).unwrap();
        assert_eq!(p.kept.len(), 1, "within the grace period");
        assert_eq!(p.units.len(), 2, "a missing object is a no-op deletion, a bad key a refused item");
        assert!(p.units[1].items[0].refused.is_some());
    }
}
