//! `cleanup-attachments` (seed 001), the decision: each soft-deleted attachment past the
//! cutoff becomes a unit (its file, then its row, the row re-checked by its rule when it is
//! deleted) or is kept with why (protected prefix, grace period).

use super::is_protected;
use crate::ident::Ident;
use crate::plan::{Item, Kind, Op, Plan, RowRule, Unit};
use chrono::{DateTime, Duration, Utc};

pub const COMMAND: &str = "cleanup-attachments";

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
    let mut p = start(rules);
    for c in candidates {
        decide(&mut p, c, rules);
    }
    p
}

/// An empty plan with the run's fields, for `decide` to fill page by page.
pub fn start(rules: &Rules) -> Plan {
    let mut p = Plan::new(COMMAND, rules.now);
    p.batch_size = rules.batch_size;
    p.fields.insert("cutoff".into(), rules.cutoff().to_rfc3339().into());
    p.fields.insert("days".into(), rules.days.into());
    p.fields.insert("batch_size".into(), (rules.batch_size as u64).into());
    p
}

/// One candidate: a unit (file, then row) or a kept entry.
pub fn decide(p: &mut Plan, c: Candidate, rules: &Rules) {
    let cutoff = rules.cutoff();
    let row_target = |k: &str| format!("{} {}={}", rules.table.as_str(), rules.id.as_str(), k);
    {
        p.scanned += 1;
        if c.deleted_at > cutoff {
            // The query selects only rows past the cutoff; a row read otherwise stays.
            p.keep(
                Kind::Row,
                row_target(&c.key),
                format!("soft-deleted at {}, after the cutoff {}", c.deleted_at.to_rfc3339(), cutoff.to_rfc3339()),
            );
            return;
        }
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
                p.keep(
                    kind,
                    file_item(None, String::new()).target,
                    format!("under a protected prefix ({})", rules.protected.join(", ")),
                );
                p.keep(Kind::Row, row_target(&c.key), "its file is protected");
            }
            FileFacts::Present { modified, .. } if *modified > rules.grace_cutoff() => {
                p.keep(
                    kind,
                    file_item(None, String::new()).target,
                    format!(
                        "modified {}, within the grace period of {} minutes",
                        modified.to_rfc3339(),
                        rules.grace_minutes
                    ),
                );
                p.keep(Kind::Row, row_target(&c.key), "its file is within the grace period");
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

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn the_cutoff_is_inclusive() {
        // now 2026-11-22T10:00Z, 30 days: the cutoff is 2026-10-23T10:00Z.
        let old = FileFacts::Present { bytes: 5, modified: at("2026-10-01T00:00:00Z") };
        let cases = [
            ("2026-10-23T10:00:00Z", true),  // exactly at the cutoff: deleted
            ("2026-10-23T09:59:59Z", true),  // before it
            ("2026-10-23T10:00:01Z", false), // one second after: kept
        ];
        for (deleted_at, goes) in cases {
            let mut c = cand(Some("a.jpg"), old.clone());
            c.deleted_at = at(deleted_at);
            let p = plan(vec![c], &rules());
            assert_eq!(p.units.len() == 1, goes, "{deleted_at}");
            assert_eq!(p.kept.len(), if goes { 0 } else { 1 }, "{deleted_at}");
        }
    }

    /// A realistic page of candidates.
    fn realistic(shift: Duration) -> Vec<Candidate> {
        let t = |s: &str| at(s) + shift;
        let mk = |key: &str, image: Option<&str>, deleted: &str, file: FileFacts| Candidate {
            key: key.into(),
            image: image.map(String::from),
            deleted_at: t(deleted),
            file_size: Some(2048),
            file,
        };
        let present = |m: &str| FileFacts::Present { bytes: 2048, modified: t(m) };
        vec![
            mk("a1", Some("att/2026/09/a1.jpg"), "2026-09-01T08:00:00Z", present("2026-08-30T12:00:00Z")),
            mk("a2", Some("att/2026/10/a2.png"), "2026-10-23T10:00:00Z", present("2026-10-20T12:00:00Z")),
            mk("a3", Some("att/2026/10/a3.png"), "2026-10-23T10:00:00Z", present("2026-11-22T09:50:00Z")),
            mk("a4", None, "2026-09-15T00:00:00Z", FileFacts::NoImage),
            mk("a5", Some("att/gone.jpg"), "2026-09-15T00:00:00Z", FileFacts::Missing),
            mk("a6", Some("../../etc/passwd"), "2026-09-15T00:00:00Z", FileFacts::Refused("leaves the store".into())),
            mk("a7", Some("backups/att/a7.jpg"), "2026-09-15T00:00:00Z", present("2026-09-01T00:00:00Z")),
            mk("a8", Some("att/a8.jpg"), "2026-10-24T00:00:00Z", present("2026-09-01T00:00:00Z")),
        ]
    }

    #[test]
    fn a_realistic_plan_and_what_moves_with_time() {
        let base = plan(realistic(Duration::zero()), &rules());
        insta::assert_snapshot!("attachments_plan", crate::policy::testing::render(&base));
        // The same facts a day later: a8 passes the cutoff and a3 leaves the grace period.
        let mut later = rules();
        later.now += Duration::days(1);
        let moved = plan(realistic(Duration::zero()), &later);
        insta::assert_snapshot!("attachments_plan_a_day_later", crate::policy::testing::decisions(&moved).join("\n"));
        // Everything shifted together decides the same.
        let mut shifted = rules();
        shifted.now += Duration::days(400);
        let again = plan(realistic(Duration::days(400)), &shifted);
        assert_eq!(crate::policy::testing::decisions(&again), crate::policy::testing::decisions(&base));
    }
}
