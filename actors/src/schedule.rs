//! Recurring schedules: cron expressions (parsed by `croner`), which slots
//! are due and what each creates, and the firing of due schedules, which
//! any process may do at any time (see [`crate::store`]'s `schedules`: a
//! slot's task and the schedule's advance commit together, so each slot
//! makes exactly one task in the whole deployment).

use std::str::FromStr;

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds, Year};

use crate::creation::LocalKinds;
use crate::error::{Error, Result};
use courier_store::validate_queue_name;
use courier_store::{now, validate_kind_name, CatchUp, Schedule, ScheduleSpec, Task};
use courier_store::{Store, TaskInsert};

/// A slot due longer ago than this was missed (no process ran then): its
/// schedule's `catch_up` decides. A slot less late is on time and always
/// makes its task (a process busy or restarting for a few seconds loses
/// nothing).
pub const MISSED_AFTER: chrono::Duration = chrono::Duration::seconds(60);

/// At most this many missed slots make tasks under `catch_up: all` (the
/// latest ones).
pub const MAX_CATCH_UP: usize = 100;

/// How many due schedules one pass fires; the pass runs again at once when
/// there were more.
pub const FIRE_BATCH: u32 = 100;

/// How many upcoming slots a schedule shows.
pub const SHOWN_RUNS: usize = 5;

/// A parsed cron expression: 5 fields (minute hour day-of-month month
/// day-of-week) or 6 with seconds first, in UTC.
#[derive(Clone, Debug)]
pub struct Cron(croner::Cron);

impl Cron {
    /// Parses `expr`; a bad one is [`Error::InvalidField`] `cron`, saying why.
    pub fn parse(expr: &str) -> Result<Cron> {
        let fields = expr.split_whitespace().count();
        let bad = |why: String| {
            Error::invalid_field(
                "cron",
                format!("cron {expr:?}: {why} (5 fields: minute hour day-of-month month day-of-week, or 6 with seconds first; UTC)"),
            )
        };
        if !(fields == 5 || fields == 6 || (fields == 1 && expr.trim().starts_with('@'))) {
            return Err(bad(format!("{fields} fields")));
        }
        CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map(Cron)
            .map_err(|e| bad(e.to_string()))
    }

    /// Refuses an expression that has no slot in the next 100 years (`0 0
    /// 30 2 *`, the 30th of February): a schedule that never fires is a
    /// mistake, not a plan. `expr` is the text, for the message.
    pub fn fires(&self, expr: &str) -> Result<()> {
        let now = courier_store::now();
        let horizon = now + chrono::Duration::days(100 * 366);
        match self.after(now) {
            Some(t) if t < horizon => Ok(()),
            _ => Err(Error::invalid_field(
                "cron",
                format!("cron {expr:?} has no slot in the next 100 years: it would never fire"),
            )),
        }
    }

    /// The first slot strictly after `t`.
    pub fn after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.0.find_next_occurrence(&t, false).ok()
    }

    /// The latest slot at or before `t`.
    fn at_or_before(&self, t: DateTime<Utc>, inclusive: bool) -> Option<DateTime<Utc>> {
        self.0.find_previous_occurrence(&t, inclusive).ok()
    }

    /// Up to `n` slots from `from` on (`from` itself if it is one).
    pub fn upcoming(&self, from: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut next = self.0.find_next_occurrence(&from, true).ok();
        while let Some(t) = next.filter(|_| out.len() < n) {
            out.push(t);
            next = self.after(t);
        }
        out
    }
}

/// The slots of a due schedule, as of `at`.
#[derive(Clone, Debug, PartialEq)]
pub struct DueSlots {
    /// The slots that make a task, oldest first: every on-time slot, and
    /// the missed ones `catch_up` keeps.
    pub slots: Vec<DateTime<Utc>>,
    /// Missed slots that make no task.
    pub skipped: usize,
    /// The schedule's next slot after `at`.
    pub next: Option<DateTime<Utc>>,
}

/// Which slots from `from` (the schedule's `next_run_at`) to `at` make a
/// task: walking back from `at`, on-time slots all do; of the missed ones,
/// `skip` keeps none, `one` the latest, `all` the latest
/// [`MAX_CATCH_UP`].
pub fn due_slots(
    cron: &Cron,
    catch_up: CatchUp,
    from: DateTime<Utc>,
    at: DateTime<Utc>,
) -> DueSlots {
    let mut slots = Vec::new();
    let mut missed_kept = 0usize;
    let mut skipped = 0usize;
    let mut cursor = cron.at_or_before(at, true);
    while let Some(slot) = cursor.filter(|s| *s >= from) {
        if at - slot <= MISSED_AFTER {
            slots.push(slot);
        } else {
            let keep = match catch_up {
                CatchUp::Skip => 0,
                CatchUp::One => 1,
                CatchUp::All => MAX_CATCH_UP,
            };
            if missed_kept < keep {
                slots.push(slot);
                missed_kept += 1;
            } else {
                // Count the rest only as far as the next one: walking a
                // second-by-second schedule back over a week of downtime
                // is work for nothing.
                skipped += 1;
                break;
            }
        }
        cursor = cron.at_or_before(slot, false);
    }
    slots.reverse();
    DueSlots {
        slots,
        skipped,
        next: cron.after(at),
    }
}

/// The idempotency key of the task of `schedule`'s slot `slot`: a slot can
/// make one task, whatever happens.
pub fn slot_key(schedule: &str, slot: DateTime<Utc>) -> String {
    format!(
        "schedule:{schedule}:{}",
        slot.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

/// Checks a schedule before it is stored: its name (the rules of a queue
/// name), its cron expression, its kind's name and its options. Whether
/// the kind is run by some executor is the caller's check.
pub fn validate(name: &str, spec: &ScheduleSpec) -> Result<Cron> {
    validate_queue_name(name).map_err(|_| {
        Error::invalid_field(
            "name",
            format!(
                "schedule name {name:?} must be 1 to 64 characters of a-z, 0-9, '_', '.' and '-'"
            ),
        )
    })?;
    let cron = Cron::parse(&spec.cron)?;
    cron.fires(&spec.cron)?;
    validate_kind_name(&spec.kind)?;
    courier_store::refuse_nul("input", &spec.input)?;
    if spec.options.run_at.is_some() {
        return Err(Error::invalid_field(
            "run_at",
            "a schedule's tasks start at their slot: run_at has no place here (delay_ms delays each from its slot)",
        ));
    }
    spec.options.validate()?;
    Ok(cron)
}

/// Fills in what a schedule shows but does not store: its upcoming slots.
pub fn with_upcoming(mut s: Schedule) -> Schedule {
    if let (Some(next), Ok(cron)) = (s.next_run_at, Cron::parse(&s.cron)) {
        s.next_runs = cron.upcoming(next, SHOWN_RUNS);
    }
    s
}

/// Fires every due schedule (up to [`FIRE_BATCH`]) on behalf of `by`, and
/// returns the tasks created. Any number of processes may run this at
/// once: each slot makes one task.
pub async fn fire_due(store: &Store, local: &LocalKinds, by: &str) -> Result<(Vec<Task>, bool)> {
    let at = now();
    let due = store.due_schedules(at, FIRE_BATCH).await?;
    let more = due.len() as u32 == FIRE_BATCH;
    let mut created = Vec::new();
    for s in due {
        let Some(expected) = s.next_run_at else {
            continue;
        };
        let cron = match Cron::parse(&s.cron) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(schedule = %s.name, error = %e, "schedule has a cron expression this build cannot read; it does not fire");
                continue;
            }
        };
        let plan = due_slots(&cron, s.catch_up, expected, at);
        // The kind's defaults as they are now; a kind no executor runs at
        // this moment still gets its task (it waits for one that does).
        let defaults = match local.get(&s.kind) {
            Some(d) => d.clone(),
            None => store.kind_defaults(&s.kind).await?.unwrap_or_default(),
        };
        let options = s.options().or(&defaults);
        let at = now();
        let inserts: Vec<TaskInsert> = plan
            .slots
            .iter()
            .map(|slot| TaskInsert {
                id: uuid::Uuid::now_v7(),
                kind: s.kind.clone(),
                input: s.input.clone(),
                idempotency_key: Some(slot_key(&s.name, *slot)),
                trace_id: crate::protocol::new_trace_id(),
                created_by: by.to_string(),
                options: options.resolve(at),
                schedule: Some(s.name.clone()),
                created_at: at,
            })
            .collect();
        match store
            .fire_schedule(
                &s.name,
                expected,
                plan.next,
                plan.slots.last().copied(),
                &inserts,
            )
            .await?
        {
            Some(fired) => {
                if plan.skipped > 0 {
                    tracing::info!(schedule = %s.name, catch_up = s.catch_up.as_str(), "slots missed while no process ran were skipped");
                }
                tracing::info!(schedule = %s.name, tasks = fired.tasks.len(), next = ?plan.next, "schedule fired");
                crate::metrics::metrics().schedule_fired(&s.name, fired.tasks.len());
                created.extend(fired.tasks);
            }
            None => tracing::debug!(schedule = %s.name, "another process fired this slot"),
        }
    }
    Ok((created, more))
}

impl FromStr for Cron {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Cron::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 6, h, m, s).unwrap()
    }

    #[test]
    fn parses_five_or_six_fields_and_names_the_field_when_bad() {
        assert_eq!(
            Cron::parse("*/5 * * * *").unwrap().after(t(10, 0, 1)),
            Some(t(10, 5, 0))
        );
        assert_eq!(
            Cron::parse("*/10 * * * * *").unwrap().after(t(10, 0, 1)),
            Some(t(10, 0, 10))
        );
        for bad in [
            "",
            "* * * *",
            "* * * * * * *",
            "61 * * * *",
            "nonsense here * * *",
        ] {
            match Cron::parse(bad) {
                Err(Error::InvalidField { field, message }) => {
                    assert_eq!(field, "cron");
                    assert!(message.contains("5 fields"), "{message}");
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn on_time_slots_all_fire_and_catch_up_decides_the_missed_ones() {
        let every_10s = Cron::parse("*/10 * * * * *").unwrap();
        // Due for 25 s: every slot is on time.
        let d = due_slots(&every_10s, CatchUp::Skip, t(10, 0, 0), t(10, 0, 25));
        assert_eq!(d.slots, [t(10, 0, 0), t(10, 0, 10), t(10, 0, 20)]);
        assert_eq!(d.next, Some(t(10, 0, 30)));
        // Down from 10:00 to 10:05: slots older than a minute were missed.
        let (from, at) = (t(10, 0, 0), t(10, 5, 0));
        let skip = due_slots(&every_10s, CatchUp::Skip, from, at);
        assert_eq!(skip.slots.first(), Some(&t(10, 4, 0)));
        assert_eq!(skip.slots.len(), 7);
        assert_eq!(skip.skipped, 1);
        let one = due_slots(&every_10s, CatchUp::One, from, at);
        assert_eq!(one.slots.len(), 8);
        assert_eq!(one.slots[0], t(10, 3, 50));
        let all = due_slots(&every_10s, CatchUp::All, from, at);
        assert_eq!(all.slots.len(), 31);
        assert_eq!(all.slots[0], from);
        // Never more than MAX_CATCH_UP missed ones.
        let week = due_slots(&every_10s, CatchUp::All, from, t(23, 0, 0));
        assert_eq!(week.slots.len(), MAX_CATCH_UP + 7);
    }

    #[test]
    fn upcoming_lists_slots_from_the_next_one() {
        let hourly = Cron::parse("0 * * * *").unwrap();
        assert_eq!(
            hourly.upcoming(t(10, 0, 0), 3),
            [t(10, 0, 0), t(11, 0, 0), t(12, 0, 0)]
        );
    }

    #[test]
    fn a_slot_key_names_the_schedule_and_the_second() {
        assert_eq!(
            slot_key("nightly", t(3, 0, 0)),
            "schedule:nightly:2026-12-06T03:00:00Z"
        );
    }
}
