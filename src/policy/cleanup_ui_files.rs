//! `cleanup-ui-files` (seed 000), the decision: files under `published_modules/` that no
//! payload references go (unless protected, fresh, or possibly referenced by a payload that
//! could not be read); then the directories that leaves empty.
//!
//! Lean at a million files: the walked files arrive in `refs::path_cmp` order and are merged
//! against the sorted references, so no set of every file is held; only unreferenced files are
//! asked for their size and age.

use super::is_protected;
use crate::plan::{Item, Kind, Op, Plan, Unit};
use crate::refs::{RefSet, MARKER};
use chrono::{DateTime, Duration, Utc};

pub const COMMAND: &str = "cleanup-ui-files";
/// The directory under MEDIA_ROOT that holds UI files.
pub const UI_DIR: &str = "published_modules";

/// The fixed inputs of the decision.
pub struct Rules {
    pub now: DateTime<Utc>,
    pub grace_minutes: i64,
    pub protected: Vec<String>,
    /// `published_modules/<id>/` of modules with an unreadable payload.
    pub unknown_prefixes: Vec<String>,
}

/// Decide, for each walked file (ascending `refs::path_cmp` order; `Err` for a name that is not
/// UTF-8), whether it is referenced; `modified` is asked only for unreferenced files.
pub fn plan(
    files: impl Iterator<Item = Result<String, String>>,
    refs: &RefSet,
    rules: &Rules,
    mut modified: impl FnMut(&str) -> Option<(u64, DateTime<Utc>)>,
) -> Plan {
    let mut p = Plan::new(COMMAND, rules.now);
    let grace_cutoff = rules.now - Duration::minutes(rules.grace_minutes);
    let mut cursor = refs.cursor();
    let mut referenced = 0u64;
    // The walk is depth-first: a directory is settled (does it hold something that stays?) when
    // the walk leaves it. Only the open directories are in memory, and the ones left empty.
    let mut open = OpenDirs::default();
    for f in files {
        p.scanned += 1;
        let rel = match f {
            Ok(rel) => rel,
            Err(shown) => {
                open.enter(&shown);
                open.holds();
                p.keep(
                    Kind::File,
                    format!("media:{shown}"),
                    "its name is not valid UTF-8, so no payload can reference it; left alone",
                );
                continue;
            }
        };
        open.enter(&rel);
        // An escaped name (not UTF-8 on disk) is never referenced by a payload, which is text;
        // it is not merged either (its text does not sort where its bytes do).
        if !crate::names::is_escaped(&rel) && cursor.seek(&rel) {
            referenced += 1;
            open.holds();
            continue;
        }
        let target = format!("media:{rel}");
        let (kept, units) = (p.kept.len(), p.units.len());
        decide(&mut p, rel, target, rules, grace_cutoff, &mut modified);
        if p.kept.len() > kept {
            open.holds();
        } else if p.units.len() > units {
            open.loses();
        }
    }
    p.units.extend(Unit::empty_dirs_deepest_first("media", open.finish(), "left empty: every file in it is deleted"));
    p.kept_unlisted.insert(Kind::File, referenced);
    p.fields.insert("referenced_files".into(), referenced.into());
    p.fields.insert("references".into(), (refs.len() as u64).into());
    p
}

/// The directories the walk is in, outermost first: whether each holds something that stays,
/// and whether a file (or a directory left empty) goes from it.
#[derive(Default)]
struct OpenDirs {
    stack: Vec<(String, bool, bool)>,
    /// Directories left empty (below `MARKER`), children before parents.
    emptied: Vec<String>,
}

impl OpenDirs {
    /// The walk is at file `rel`: leave the directories that are not its own or above it, and
    /// open those down to its own.
    fn enter(&mut self, rel: &str) {
        let dir = crate::plan::parent(rel).unwrap_or("");
        while let Some((top, _, _)) = self.stack.last() {
            if dir == top || dir.starts_with(top.as_str()) && dir.as_bytes().get(top.len()) == Some(&b'/') {
                break;
            }
            self.leave();
        }
        let mut start = self.stack.last().map(|(t, _, _)| t.len() + 1).unwrap_or(0);
        while start <= dir.len() && !dir.is_empty() {
            let end = dir[start..].find('/').map(|i| start + i).unwrap_or(dir.len());
            self.stack.push((dir[..end].to_string(), false, false));
            start = end + 1;
        }
    }

    /// The current file stays: so do its directory and every one above it.
    fn holds(&mut self) {
        if let Some(top) = self.stack.last_mut() {
            top.1 = true;
        }
    }

    /// The current file goes.
    fn loses(&mut self) {
        if let Some(top) = self.stack.last_mut() {
            top.2 = true;
        }
    }

    fn leave(&mut self) {
        let Some((dir, holds, loses)) = self.stack.pop() else { return };
        let below_marker = dir.len() > MARKER.trim_end_matches('/').len() && dir.starts_with(MARKER);
        match self.stack.last_mut() {
            Some(parent) if holds || !below_marker => parent.1 |= holds,
            Some(parent) if loses => {
                parent.2 = true;
                self.emptied.push(dir);
            }
            None if loses && !holds && below_marker => self.emptied.push(dir),
            _ => {}
        }
    }

    fn finish(mut self) -> Vec<String> {
        while !self.stack.is_empty() {
            self.leave();
        }
        self.emptied
    }
}

/// One unreferenced file: deleted, or kept with why.
fn decide(
    p: &mut Plan,
    rel: String,
    target: String,
    rules: &Rules,
    grace_cutoff: DateTime<Utc>,
    modified: &mut impl FnMut(&str) -> Option<(u64, DateTime<Utc>)>,
) {
    {
        if is_protected(&rel, &rules.protected) {
            p.keep(Kind::File, target, format!("under a protected prefix ({})", rules.protected.join(", ")));
            return;
        }
        if let Some(prefix) = rules.unknown_prefixes.iter().find(|pre| rel.starts_with(pre.as_str())) {
            p.keep(
                Kind::File,
                target,
                format!("a row with an unreadable payload might reference files under {prefix}"),
            );
            return;
        }
        match modified(&rel) {
            None => {} // gone since the walk
            Some((_, m)) if m > grace_cutoff => p.keep(
                Kind::File,
                target,
                format!(
                    "unreferenced, but modified {} (within the {}-minute grace period)",
                    m.to_rfc3339(),
                    rules.grace_minutes
                ),
            ),
            Some((bytes, _)) => p.units.push(Unit::new(vec![Item::new(
                Op::DeleteFile { root: "media".into(), path: rel },
                target,
                "no published module's payload references it",
                Some(bytes),
            )])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_left_empty_only_when_nothing_under_it_stays() {
        let mut open = OpenDirs::default();
        for (f, stays) in [
            ("published_modules/1/a/x.json", false),
            ("published_modules/1/a/y.json", false),
            ("published_modules/1/b/c/z.json", false),
            ("published_modules/1/d/k.json", true),
            ("published_modules/2/w.json", false),
            ("published_modules/3/q/r.json", true),
            ("published_modules/3/s.json", false),
        ] {
            open.enter(f);
            if stays {
                open.holds();
            } else {
                open.loses();
            }
        }
        assert_eq!(
            open.finish(),
            ["published_modules/1/a", "published_modules/1/b/c", "published_modules/1/b", "published_modules/2"],
            "children before parents; never a directory that keeps something, nor published_modules itself"
        );
    }
    use std::collections::HashMap;

    #[test]
    fn unreferenced_old_files_go_and_everything_else_stays() {
        let now: DateTime<Utc> = "2026-11-22T10:00:00Z".parse().unwrap();
        let old = now - Duration::days(3);
        let mut refs = RefSet::default();
        refs.push("published_modules/1/v2/a.json");
        refs.push("published_modules/1/v2/b.json");
        refs.finish();
        let files: Vec<Result<String, String>> = vec![
            Ok("published_modules/1/v1/a.json".into()),     // orphan: deleted
            Ok("published_modules/1/v2/a.json".into()),     // referenced
            Ok("published_modules/1/v2/b.json".into()),     // referenced
            Ok("published_modules/1/v2/fresh.json".into()), // orphan within grace
            Ok("published_modules/3/x.json".into()),        // module with an unreadable payload
            Err("published_modules/\u{fffd}.json".into()),  // not UTF-8
        ];
        let times: HashMap<&str, DateTime<Utc>> = [
            ("published_modules/1/v1/a.json", old),
            ("published_modules/1/v2/fresh.json", now - Duration::minutes(5)),
            ("published_modules/3/x.json", old),
        ]
        .into();
        let rules = Rules {
            now,
            grace_minutes: 30,
            protected: vec!["backups/".into()],
            unknown_prefixes: vec!["published_modules/3/".into()],
        };
        let p = plan(files.into_iter(), &refs, &rules, |rel| times.get(rel).map(|t| (10, *t)));
        let deleted: Vec<&str> = p.units.as_slice().iter().map(|u| u.items[0].target.as_str()).collect();
        // The file, then the directory it leaves empty (published_modules/1 still holds v2/).
        assert_eq!(deleted, ["media:published_modules/1/v1/a.json", "media:published_modules/1/v1/"]);
        assert!(p.units[1].is_empty_dir() && (p.units.len() - p.units.trailing_empty_dirs()) == 1);
        assert_eq!(p.kept.len(), 3);
        assert_eq!(p.kept_unlisted[&Kind::File], 2);
        assert_eq!(p.scanned, 6);
    }

    #[test]
    fn the_grace_period_is_a_strict_bound_and_moves_with_now() {
        let now: DateTime<Utc> = "2026-11-22T10:00:00Z".parse().unwrap();
        let rules = |now| Rules { now, grace_minutes: 30, protected: vec![], unknown_prefixes: vec![] };
        let refs = {
            let mut r = RefSet::default();
            r.push("published_modules/1/kept.json");
            r.finish();
            r
        };
        let files = || {
            ["published_modules/1/edge.json", "published_modules/1/fresh.json", "published_modules/1/kept.json"]
                .into_iter()
                .map(|f| Ok(f.to_string()))
        };
        let times = |rel: &str| match rel {
            "published_modules/1/edge.json" => Some((1, now - Duration::minutes(30))),
            _ => Some((1, now - Duration::minutes(29))),
        };
        let p = plan(files(), &refs, &rules(now), times);
        insta::assert_snapshot!("ui_files_plan", crate::policy::testing::render(&p));
        // A minute later the fresh file is past the grace period too; the referenced one stays.
        let later = plan(files(), &refs, &rules(now + Duration::minutes(1)), times);
        insta::assert_snapshot!("ui_files_plan_a_minute_later", crate::policy::testing::decisions(&later).join("\n"));
        // No directory is left empty while a referenced file is in it.
        assert_eq!((later.units.len() - later.units.trailing_empty_dirs()), later.units.len());
    }
}
