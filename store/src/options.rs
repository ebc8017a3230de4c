//! The queue options of a task: queue, priority, a delayed start, retries
//! and a timeout. Given when a task is created (over HTTP, by a client, by a
//! parent for its sub-task, by a schedule) or as a kind's defaults; checked
//! here, resolved here into what the store keeps, and the retry backoff
//! computed here.
//!
//! Resolution: an option set on the task wins, then the kind's default, then
//! the global default (`default` queue, priority 0, start now, 1 attempt,
//! 1000 ms backoff, no timeout).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The queue a task goes to when nothing says otherwise.
pub const DEFAULT_QUEUE: &str = "default";
/// Priorities run from −100 to 100; higher starts first.
pub const PRIORITIES: std::ops::RangeInclusive<i32> = -100..=100;
/// Attempts allowed run from 1 to 100.
pub const MAX_ATTEMPTS: u32 = 100;
/// The default base of the retry backoff.
pub const DEFAULT_BACKOFF_MS: u64 = 1000;
/// No retry waits longer than this, whatever the base and the attempt.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// The longest delay, backoff base and timeout accepted: a year. Longer
/// ones are almost certainly a unit mistake (seconds given as ms × 1000).
pub const MAX_DURATION_MS: u64 = 366 * 24 * 3600 * 1000;

/// The latest `run_at` accepted, exclusive: 2100-01-01T00:00:00Z. A fixed
/// bound, not "a year from now", so the OpenAPI document can say it (a
/// pattern on the year) and a request valid by the document is one the
/// server takes; later than that is a mistake (a year 9999), not a plan.
pub fn run_at_limit() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2100-01-01T00:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Options of one task; `None` means "not set here" (the kind's default or
/// the global one applies). The JSON field names are those of the HTTP API.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskOptions {
    /// `[a-z0-9_.-]`, 1 to 64 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// −100 to 100; within a queue a higher priority starts first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Not before this time (not with `delay_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<DateTime<Utc>>,
    /// Not before this many milliseconds from now (not with `run_at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// 1 to 100 attempts; a failed attempt with attempts left is retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Retry n waits a random time between 50 % and 100 % of
    /// min(`backoff_ms` × 2^(n−1), 1 h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
    /// An attempt running longer is aborted and fails with code `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// What the store keeps of a task's options once they are resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub queue: String,
    pub priority: i32,
    /// `None`: it may start now (`pending`); else `scheduled` until then.
    pub run_at: Option<DateTime<Utc>>,
    pub max_attempts: i32,
    pub backoff_ms: i64,
    pub timeout_ms: Option<i64>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl TaskOptions {
    pub fn new() -> Self {
        Self::default()
    }

    /// The queue to run from.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Priority within the queue, −100 to 100.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Not before this time.
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self.delay_ms = None;
        self
    }

    /// Not before this long from now.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay_ms = Some(millis(delay));
        self.run_at = None;
        self
    }

    /// Attempts allowed, 1 to 100.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// The base of the retry backoff.
    pub fn backoff(mut self, base: Duration) -> Self {
        self.backoff_ms = Some(millis(base));
        self
    }

    /// The longest an attempt may run.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout_ms = Some(millis(limit));
        self
    }

    /// These options, with each one not set here taken from `defaults`.
    pub fn or(self, defaults: &TaskOptions) -> TaskOptions {
        let timing = self.run_at.is_some() || self.delay_ms.is_some();
        TaskOptions {
            queue: self.queue.or_else(|| defaults.queue.clone()),
            priority: self.priority.or(defaults.priority),
            run_at: if timing { self.run_at } else { defaults.run_at },
            delay_ms: if timing {
                self.delay_ms
            } else {
                defaults.delay_ms
            },
            max_attempts: self.max_attempts.or(defaults.max_attempts),
            backoff_ms: self.backoff_ms.or(defaults.backoff_ms),
            timeout_ms: self.timeout_ms.or(defaults.timeout_ms),
        }
    }

    /// Checks every value; the first bad one is an
    /// [`Error::InvalidField`] naming it.
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(q) = &self.queue {
            validate_queue_name(q)?;
        }
        if let Some(p) = self.priority {
            if !PRIORITIES.contains(&p) {
                return Err(Error::invalid_field(
                    "priority",
                    format!(
                        "priority must be a whole number from {} to {}",
                        PRIORITIES.start(),
                        PRIORITIES.end()
                    ),
                ));
            }
        }
        if let Some(at) = self.run_at {
            if at >= run_at_limit() {
                return Err(Error::invalid_field(
                    "run_at",
                    format!(
                        "run_at must be before {} (a time in the past starts now)",
                        run_at_limit().to_rfc3339()
                    ),
                ));
            }
        }
        if self.run_at.is_some() && self.delay_ms.is_some() {
            return Err(Error::invalid_field(
                "delay_ms",
                "give run_at or delay_ms, not both",
            ));
        }
        let durations = [
            ("delay_ms", self.delay_ms, 0),
            ("backoff_ms", self.backoff_ms, 0),
            ("timeout_ms", self.timeout_ms, 1),
        ];
        for (field, value, min) in durations {
            if let Some(ms) = value {
                if !(min..=MAX_DURATION_MS).contains(&ms) {
                    return Err(Error::invalid_field(
                        field,
                        format!("{field} must be from {min} to {MAX_DURATION_MS} (a year)"),
                    ));
                }
            }
        }
        if let Some(n) = self.max_attempts {
            if !(1..=MAX_ATTEMPTS).contains(&n) {
                return Err(Error::invalid_field(
                    "max_attempts",
                    format!("max_attempts must be a whole number from 1 to {MAX_ATTEMPTS}"),
                ));
            }
        }
        Ok(())
    }

    /// Checks options given as a kind's defaults: the timing of one task
    /// (`run_at`, `delay_ms`) has no place there.
    pub fn validate_as_defaults(&self) -> Result<(), Error> {
        if self.run_at.is_some() || self.delay_ms.is_some() {
            return Err(Error::invalid_field(
                "delay_ms",
                "a kind's defaults cannot delay its tasks (give run_at or delay_ms per task)",
            ));
        }
        self.validate()
    }

    /// The values to store, the global defaults filling what is unset;
    /// `now` turns a delay into a time. Call [`validate`](Self::validate)
    /// first.
    pub fn resolve(&self, now: DateTime<Utc>) -> Resolved {
        let run_at = match (self.run_at, self.delay_ms) {
            (Some(at), _) => Some(at),
            (None, Some(ms)) if ms > 0 => {
                Some(now + chrono::Duration::milliseconds(ms.min(MAX_DURATION_MS) as i64))
            }
            _ => None,
        }
        // A time already past is "now": the task may start at once.
        .filter(|at| *at > now)
        .map(|at| chrono::SubsecRound::trunc_subsecs(at, 6));
        Resolved {
            queue: self
                .queue
                .clone()
                .unwrap_or_else(|| DEFAULT_QUEUE.to_string()),
            priority: self.priority.unwrap_or(0),
            run_at,
            max_attempts: self.max_attempts.unwrap_or(1).clamp(1, MAX_ATTEMPTS) as i32,
            backoff_ms: self.backoff_ms.unwrap_or(DEFAULT_BACKOFF_MS) as i64,
            timeout_ms: self.timeout_ms.map(|t| t as i64),
        }
    }
}

/// Checks a queue name: 1 to 64 of `a-z`, `0-9`, `_`, `.`, `-`.
pub fn validate_queue_name(name: &str) -> Result<(), Error> {
    let ok = (1..=64).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_field(
            "queue",
            format!("queue {name:?} must be 1 to 64 characters of a-z, 0-9, '_', '.' and '-'"),
        ))
    }
}

/// How long retry `n` (1 for the retry after the first attempt) waits: a
/// random time between 50 % and 100 % of min(`base` × 2^(n−1), 1 h). The
/// random half spreads the retries of tasks that failed together (a
/// database or an API that went away), so they do not come back as one.
///
/// Written here rather than taken from a backoff crate: the formula is part
/// of courier's contract, and it is this one line of arithmetic; the crates
/// (`backoff`, unmaintained; `backon`, a retry loop) bring their own loops
/// and sequences to get it.
pub fn retry_delay(base_ms: i64, n: i32) -> Duration {
    let exp = n.clamp(1, 64) as u32 - 1;
    let cap = millis(MAX_BACKOFF);
    let full = (base_ms.max(0) as u64)
        .saturating_mul(1u64.checked_shl(exp).unwrap_or(u64::MAX))
        .min(cap);
    let half = full / 2;
    let jitter = if full > half {
        rand::random_range(0..=full - half)
    } else {
        0
    };
    Duration::from_millis(half + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bad_value_names_its_field() {
        let cases = [
            (TaskOptions::new().queue("Mail"), "queue"),
            (TaskOptions::new().queue(""), "queue"),
            (TaskOptions::new().queue("x".repeat(65)), "queue"),
            (TaskOptions::new().priority(101), "priority"),
            (TaskOptions::new().priority(-101), "priority"),
            (TaskOptions::new().max_attempts(0), "max_attempts"),
            (TaskOptions::new().max_attempts(101), "max_attempts"),
            (
                TaskOptions {
                    timeout_ms: Some(0),
                    ..Default::default()
                },
                "timeout_ms",
            ),
            (
                TaskOptions {
                    backoff_ms: Some(MAX_DURATION_MS + 1),
                    ..Default::default()
                },
                "backoff_ms",
            ),
            (
                TaskOptions {
                    run_at: Some(Utc::now()),
                    delay_ms: Some(5),
                    ..Default::default()
                },
                "delay_ms",
            ),
        ];
        for (opts, field) in cases {
            match opts.validate() {
                Err(Error::InvalidField { field: f, message }) => {
                    assert_eq!(f, field, "{message}");
                    assert!(message.contains(field), "{message}");
                }
                other => panic!("{opts:?}: expected {field} refused, got {other:?}"),
            }
        }
        let fine = TaskOptions::new()
            .queue("mail.out-1_a")
            .priority(-100)
            .delay(Duration::from_secs(1))
            .max_attempts(100)
            .backoff(Duration::ZERO)
            .timeout(Duration::from_millis(1));
        fine.validate().unwrap();
    }

    #[test]
    fn resolution_prefers_the_task_then_the_kind_then_the_globals() {
        let now = crate::model::now();
        let kind = TaskOptions::new()
            .queue("mail")
            .max_attempts(3)
            .timeout(Duration::from_secs(9));
        let r = TaskOptions::new().priority(5).or(&kind).resolve(now);
        assert_eq!(r.queue, "mail");
        assert_eq!((r.priority, r.max_attempts), (5, 3));
        assert_eq!((r.backoff_ms, r.timeout_ms), (1000, Some(9000)));
        assert_eq!(r.run_at, None);
        let r = TaskOptions::new()
            .queue("other")
            .delay(Duration::from_millis(1500))
            .or(&kind)
            .resolve(now);
        assert_eq!(r.queue, "other");
        assert_eq!(
            r.run_at.unwrap() - now,
            chrono::Duration::milliseconds(1500)
        );
        // A time already past may start at once.
        let r = TaskOptions::new()
            .run_at(now - chrono::Duration::seconds(5))
            .resolve(now);
        assert_eq!(r.run_at, None);
        assert!(TaskOptions::new()
            .delay(Duration::from_secs(1))
            .validate_as_defaults()
            .is_err());
    }

    #[test]
    fn backoff_doubles_within_its_jitter_and_stops_at_an_hour() {
        for n in 1..=6 {
            let full = 200u64 << (n - 1);
            for _ in 0..200 {
                let d = retry_delay(200, n).as_millis() as u64;
                assert!(d >= full / 2 && d <= full, "retry {n}: {d} ms");
            }
        }
        for _ in 0..100 {
            let d = retry_delay(1000, 40);
            assert!(d >= MAX_BACKOFF / 2 && d <= MAX_BACKOFF, "{d:?}");
        }
        assert_eq!(retry_delay(0, 3), Duration::ZERO);
        // The jitter is real: not every draw is the same.
        let draws: std::collections::HashSet<u128> = (0..50)
            .map(|_| retry_delay(10_000, 1).as_millis())
            .collect();
        assert!(draws.len() > 10, "{draws:?}");
    }
}
