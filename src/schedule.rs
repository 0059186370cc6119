//! `[[schedule]]`: when each command runs by itself. Pure: the clock is a parameter and nothing
//! here reads it, touches the database or starts a run, so every decision is tested with
//! made-up times and no test waits for a real minute.
//!
//! - [`Schedule::next_after`]: the next time an entry fires (cron expression, in its time zone).
//! - [`Ticker`]: which entries are due now; an entry that missed several slots (a slow run, a
//!   suspended machine) is due *once*, never in a burst.
//! - [`Schedule::catch_up_at_start`]: a slot missed while nothing was running runs once at
//!   start-up, when the entry asks for it (`catch_up = true`).
//! - [`Schedule::overdue`]: the last success is older than the schedule allows: a whole slot
//!   went by after the one that should have succeeded.
//!
//! `sweep status` shows each entry's next run and whether it is overdue; `sweep serve` drives
//! the ticker (issue 12).

use anyhow::{anyhow, bail, Result};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

/// One `[[schedule]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    /// A name for the dashboard and the logs (default: the command).
    pub name: Option<String>,
    /// The command to run, e.g. `worker-once`.
    pub command: String,
    /// Its arguments, as on the command line, e.g. `["--type", "automatic"]`.
    #[serde(default)]
    pub args: Vec<String>,
    /// A cron expression: five fields (minute hour day-of-month month day-of-week), or six with
    /// seconds first; `@daily`, `@hourly` and the like.
    pub cron: String,
    /// The time zone the expression is read in (IANA name, e.g. `Europe/Berlin`; default UTC).
    pub tz: Option<String>,
    /// Run it as a dry run (decide and report, delete nothing).
    #[serde(default)]
    pub dry_run: bool,
    /// A slot missed while no scheduler ran is run once at start-up.
    #[serde(default)]
    pub catch_up: bool,
}

/// A checked `[[schedule]]` entry.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    pub command: String,
    pub args: Vec<String>,
    pub expression: String,
    pub tz: Tz,
    pub dry_run: bool,
    pub catch_up: bool,
    cron: croner::Cron,
}

impl Schedule {
    /// Check every entry: a known command, arguments that command accepts, a cron expression
    /// that parses, a time zone that exists, and names that are unique. `check_args` parses a
    /// command's arguments the way its command line would (the caller owns the CLI); `now` is
    /// where "never fires" is judged from.
    pub fn load(
        raw: &[RawSchedule],
        commands: &[&str],
        check_args: &dyn Fn(&str, &[String]) -> Result<()>,
        file: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Schedule>> {
        let mut out: Vec<Schedule> = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            let at = format!("[[schedule]] #{} in {file}", i + 1);
            if !commands.contains(&r.command.as_str()) {
                bail!("{at}: unknown command {:?}: use one of {}", r.command, commands.join(", "));
            }
            check_args(&r.command, &r.args).map_err(|e| anyhow!("{at}: args for {}: {e}", r.command))?;
            let cron = croner::Cron::new(&r.cron).with_seconds_optional().parse().map_err(|e| {
                anyhow!("{at}: cron {:?} is not a cron expression ({e}): e.g. \"0 2 * * *\" for 02:00 daily", r.cron)
            })?;
            let tz = match &r.tz {
                None => Tz::UTC,
                Some(name) => name.parse::<Tz>().map_err(|_| {
                    anyhow!("{at}: unknown time zone {name:?}: use an IANA name such as \"Europe/Berlin\" or \"UTC\"")
                })?,
            };
            let name = r.name.clone().unwrap_or_else(|| r.command.clone());
            if out.iter().any(|s| s.name == name) {
                bail!("{at}: a second entry named {name:?}: give each entry of the same command its own `name`");
            }
            let s = Schedule {
                name,
                command: r.command.clone(),
                args: r.args.clone(),
                expression: r.cron.clone(),
                tz,
                dry_run: r.dry_run,
                catch_up: r.catch_up,
                cron,
            };
            // An expression that can never fire (`0 0 30 2 *`) is a mistake, not a schedule.
            if s.next_after(now).is_none() {
                bail!("{at}: cron {:?} never fires", r.cron);
            }
            out.push(s);
        }
        Ok(out)
    }

    /// The first time strictly after `t` at which the entry fires.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        self.cron.find_next_occurrence(&local, false).ok().map(|n| n.with_timezone(&Utc))
    }

    /// How many times the entry fired in `(after, upto]`, counting no further than `limit`.
    fn fired_between(&self, after: DateTime<Utc>, upto: DateTime<Utc>, limit: usize) -> usize {
        let mut n = 0;
        let mut t = after;
        while n < limit {
            match self.next_after(t) {
                Some(next) if next <= upto => {
                    n += 1;
                    t = next;
                }
                _ => break,
            }
        }
        n
    }

    /// Whether to run once at start-up: the entry asks for it and at least one slot went by
    /// since the last run started. With no run on record there is nothing to catch up on (a
    /// new entry waits for its first slot).
    pub fn catch_up_at_start(&self, last_started: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        self.catch_up && last_started.is_some_and(|t| self.fired_between(t, now, 1) == 1)
    }

    /// Overdue: two slots went by since `since` (the last success, or the first run when none
    /// succeeded): the slot after it should have produced a success, and a whole further
    /// interval passed without one. The latest slot's run may still be running, so it alone
    /// does not make the entry overdue. No run on record: not overdue (nothing to compare).
    pub fn overdue(&self, since: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        since.is_some_and(|t| self.fired_between(t, now, 2) == 2)
    }
}

/// Which entries are due: each keeps its next slot; a slot that passed makes the entry due once
/// and its next slot is the first one after *now*, so slots missed in between are dropped.
#[derive(Debug, Clone)]
pub struct Ticker {
    next: Vec<Option<DateTime<Utc>>>,
}

impl Ticker {
    pub fn new(schedules: &[Schedule], now: DateTime<Utc>) -> Ticker {
        Ticker { next: schedules.iter().map(|s| s.next_after(now)).collect() }
    }

    /// The entries (by index) due at `now`, each once; their next slots move past `now`.
    pub fn due(&mut self, schedules: &[Schedule], now: DateTime<Utc>) -> Vec<usize> {
        let mut due = Vec::new();
        for (i, s) in schedules.iter().enumerate() {
            if self.next[i].is_some_and(|t| t <= now) {
                due.push(i);
                self.next[i] = s.next_after(now);
            }
        }
        due
    }

    /// The next slot of entry `i`.
    pub fn next(&self, i: usize) -> Option<DateTime<Utc>> {
        self.next.get(i).copied().flatten()
    }

    /// When the earliest entry is due next: how long a driver may sleep.
    pub fn sleep_until(&self) -> Option<DateTime<Utc>> {
        self.next.iter().flatten().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn raw(command: &str, cron: &str) -> RawSchedule {
        RawSchedule {
            name: None,
            command: command.into(),
            args: vec![],
            cron: cron.into(),
            tz: None,
            dry_run: false,
            catch_up: false,
        }
    }

    fn any_args(_: &str, _: &[String]) -> Result<()> {
        Ok(())
    }

    fn one(r: RawSchedule) -> Schedule {
        Schedule::load(&[r], &["worker-once", "cleanup-attachments"], &any_args, "t.toml", at("2026-11-29T00:00:00Z"))
            .unwrap()
            .remove(0)
    }

    #[test]
    fn next_slots_follow_the_expression_and_its_time_zone() {
        let daily = one(raw("worker-once", "0 2 * * *"));
        assert_eq!(daily.next_after(at("2026-11-29T01:59:00Z")), Some(at("2026-11-29T02:00:00Z")));
        // Strictly after: a slot that is now is not the next one.
        assert_eq!(daily.next_after(at("2026-11-29T02:00:00Z")), Some(at("2026-11-30T02:00:00Z")));
        let light = one(raw("worker-once", "*/10 * * * *"));
        assert_eq!(light.next_after(at("2026-11-29T10:03:12Z")), Some(at("2026-11-29T10:10:00Z")));
        // 02:00 in Berlin is 01:00 UTC in winter and 00:00 UTC in summer.
        let mut r = raw("worker-once", "0 2 * * *");
        r.tz = Some("Europe/Berlin".into());
        let berlin = one(r);
        assert_eq!(berlin.next_after(at("2026-11-29T00:00:00Z")), Some(at("2026-11-29T01:00:00Z")));
        assert_eq!(berlin.next_after(at("2026-07-01T00:30:00Z")), Some(at("2026-07-02T00:00:00Z")));
    }

    #[test]
    fn bad_entries_are_refused_with_the_entry_and_the_fix() {
        let load = |r: RawSchedule| {
            Schedule::load(&[r], &["worker-once"], &any_args, "sweep.toml", at("2026-11-29T00:00:00Z"))
                .unwrap_err()
                .to_string()
        };
        let e = load(raw("clean-everything", "0 2 * * *"));
        assert!(e.contains("#1 in sweep.toml") && e.contains("unknown command") && e.contains("worker-once"), "{e}");
        let e = load(raw("worker-once", "every day at 2"));
        assert!(e.contains("not a cron expression") && e.contains("0 2 * * *"), "{e}");
        let e = load(raw("worker-once", "0 0 30 2 *"));
        assert!(e.contains("never fires"), "{e}");
        let mut r = raw("worker-once", "0 2 * * *");
        r.tz = Some("Mars/Olympus".into());
        let e = load(r);
        assert!(e.contains("unknown time zone") && e.contains("Europe/Berlin"), "{e}");
        let e = Schedule::load(
            &[raw("worker-once", "0 2 * * *"), raw("worker-once", "0 3 * * *")],
            &["worker-once"],
            &any_args,
            "sweep.toml",
            at("2026-11-29T00:00:00Z"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("#2") && e.contains("own `name`"), "{e}");
        let refuse =
            |_: &str, a: &[String]| if a.is_empty() { Ok(()) } else { Err(anyhow!("unexpected argument {}", a[0])) };
        let mut r = raw("worker-once", "0 2 * * *");
        r.args = vec!["--typo".into()];
        let e = Schedule::load(&[r], &["worker-once"], &refuse, "sweep.toml", at("2026-11-29T00:00:00Z"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("args for worker-once") && e.contains("--typo"), "{e}");
    }

    #[test]
    fn a_due_entry_runs_once_however_many_slots_it_missed() {
        let s = vec![one(raw("worker-once", "*/10 * * * *")), {
            let mut r = raw("cleanup-attachments", "0 */6 * * *");
            r.name = Some("deep".into());
            one(r)
        }];
        let mut t = Ticker::new(&s, at("2026-11-29T10:01:00Z"));
        assert_eq!(t.sleep_until(), Some(at("2026-11-29T10:10:00Z")));
        assert!(t.due(&s, at("2026-11-29T10:09:59Z")).is_empty());
        assert_eq!(t.due(&s, at("2026-11-29T10:10:00Z")), vec![0]);
        // Called again at the same instant: nothing more.
        assert!(t.due(&s, at("2026-11-29T10:10:00Z")).is_empty());
        // The machine slept through 10:20 … 11:50 and 12:00: each entry is due once.
        assert_eq!(t.due(&s, at("2026-11-29T12:07:00Z")), vec![0, 1]);
        assert_eq!(t.next(0), Some(at("2026-11-29T12:10:00Z")));
        assert_eq!(t.next(1), Some(at("2026-11-29T18:00:00Z")));
    }

    #[test]
    fn catch_up_runs_once_at_start_only_when_asked_and_a_slot_was_missed() {
        let mut r = raw("worker-once", "0 2 * * *");
        r.catch_up = true;
        let s = one(r);
        let now = at("2026-11-29T09:00:00Z");
        // Last run yesterday 02:00, today's 02:00 was missed (server down): run once.
        assert!(s.catch_up_at_start(Some(at("2026-11-28T02:00:00Z")), now));
        // Three days down: still once (a boolean, not a count).
        assert!(s.catch_up_at_start(Some(at("2026-11-26T02:00:00Z")), now));
        // Today's slot ran: nothing to catch up.
        assert!(!s.catch_up_at_start(Some(at("2026-11-29T02:00:01Z")), now));
        // Never ran: a new entry waits for its first slot.
        assert!(!s.catch_up_at_start(None, now));
        // Not asked for.
        let s = one(raw("worker-once", "0 2 * * *"));
        assert!(!s.catch_up_at_start(Some(at("2026-11-26T02:00:00Z")), now));
    }

    #[test]
    fn overdue_when_a_whole_slot_passed_after_the_one_that_should_have_succeeded() {
        let s = one(raw("worker-once", "0 2 * * *"));
        let success = Some(at("2026-11-28T02:03:00Z"));
        // Today's 02:00 run may still be going or may have failed once: not yet overdue.
        assert!(!s.overdue(success, at("2026-11-29T09:00:00Z")));
        // Tomorrow's 02:00 passed too, with no success since the 28th: overdue.
        assert!(s.overdue(success, at("2026-11-30T02:00:00Z")));
        assert!(!s.overdue(None, at("2026-11-30T02:00:00Z")));
        let light = one(raw("worker-once", "*/10 * * * *"));
        assert!(!light.overdue(Some(at("2026-11-29T10:00:30Z")), at("2026-11-29T10:19:00Z")));
        assert!(light.overdue(Some(at("2026-11-29T10:00:30Z")), at("2026-11-29T10:20:00Z")));
    }
}
