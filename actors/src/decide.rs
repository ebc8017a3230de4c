//! One decision at a run's end: from how a run ended and what the task's
//! options allow, what happens to the task. Pure: no store, no bus, no
//! clock of its own (the caller passes the time and the backoff's draw),
//! so every case is a plain unit test.
//!
//! Both places a run ends decide here and then carry the decision out:
//! the task actor for a Rust run (`task/mod.rs`), and the worker
//! protocol's `finish`, `suspend` and `release` for a run in a worker
//! (`workers.rs`). Each [`Decision`] is one write of the store:
//! [`Decision::Finish`] is `Store::finish_run` (fenced, group-committed
//! with other ends), [`Decision::Retry`] `Store::retry_later`,
//! [`Decision::Suspend`] `Store::suspend`, [`Decision::HandBack`]
//! `Store::hand_back`; [`Decision::Drop`] writes nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::TaskError;
use courier_store::{AttemptError, Outcome, Task, Wait};

/// Why an attempt failed: its `code` and message, as `errors` records them.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// `error` (the run returned an error), `panic` or `timeout`.
    pub code: String,
    pub message: String,
}

impl Failure {
    /// The run returned an error with this message.
    pub fn error(message: impl Into<String>) -> Self {
        Failure {
            code: "error".into(),
            message: message.into(),
        }
    }

    /// The run's code panicked with this message.
    pub fn panicked(message: &str) -> Self {
        Failure {
            code: "panic".into(),
            message: format!("task panicked: {message}"),
        }
    }

    /// The run's future failed on the runs' pool without a panic message
    /// of its own (a join error that is not an abort).
    pub fn lost(why: impl std::fmt::Display) -> Self {
        Failure {
            code: "panic".into(),
            message: format!("task run failed: {why}"),
        }
    }

    /// Attempt `attempt` ran past its `timeout_ms` of `limit`.
    pub fn timeout(attempt: i32, limit: Duration) -> Self {
        Failure {
            code: "timeout".into(),
            message: format!(
                "timeout: attempt {attempt} ran longer than {} ms",
                limit.as_millis()
            ),
        }
    }
}

/// What of the task a failed attempt is judged by: the attempt it was,
/// the options that say whether another comes and when, the errors of
/// the attempts before it, and whether a cancel was requested.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    /// The attempt that failed (the task's `attempts`, from 1).
    pub number: i32,
    pub max_attempts: i32,
    /// The base of the retry's backoff (`backoff_ms`).
    pub backoff_ms: i64,
    /// Every earlier attempt's error, oldest first (the task's `errors`).
    pub errors: Vec<AttemptError>,
    /// A cancel of the task was requested: no further attempt.
    pub cancel_requested: bool,
}

impl Attempt {
    /// The task's current attempt, with whether its cancel is requested as
    /// the caller knows it (the task actor: its run's mailbox; a worker's
    /// finish: the row it read).
    pub fn of(task: &Task, cancel_requested: bool) -> Self {
        Attempt {
            number: task.attempts,
            max_attempts: task.max_attempts,
            backoff_ms: task.backoff_ms,
            errors: task.errors.clone(),
            cancel_requested,
        }
    }

    /// Every attempt's error, this one's (`failure`, at `now`) last.
    fn errors_with(self, failure: &Failure, now: DateTime<Utc>) -> Vec<AttemptError> {
        let mut errors = self.errors;
        errors.push(AttemptError {
            attempt: self.number,
            error: failure.message.clone(),
            at: now,
            code: failure.code.clone(),
        });
        errors
    }
}

/// How a run ended, with what deciding on that end needs to know.
#[derive(Clone, Debug, PartialEq)]
pub enum RunEnd {
    /// The run returned this output.
    Output(Value),
    /// The attempt failed (an error, a panic, a timeout).
    Failed(Failure, Attempt),
    /// The run stopped because its cancel was requested.
    Cancelled,
    /// The run's owner lost the task (taken over, declared dead).
    Fenced,
    /// The run did not end (a stop, a store outage, its address taken):
    /// why.
    Interrupted(String),
    /// The run waits for what has not come; `deadline` is when its
    /// attempt times out, if it has a `timeout_ms`.
    Waits {
        wait: Wait,
        deadline: Option<DateTime<Utc>>,
    },
}

impl RunEnd {
    /// The end of a run whose code returned `result`; `attempt` is read
    /// only if it failed.
    pub fn of(result: Result<Value, TaskError>, attempt: impl FnOnce() -> Attempt) -> Self {
        match result {
            Ok(v) => RunEnd::Output(v),
            Err(TaskError::Failed(message)) => RunEnd::Failed(Failure::error(message), attempt()),
            Err(TaskError::Cancelled) => RunEnd::Cancelled,
            Err(TaskError::Fenced) => RunEnd::Fenced,
            Err(TaskError::Interrupted(why)) => RunEnd::Interrupted(why),
        }
    }
}

/// What happens to the task, each one write of the store.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// The task is final: succeeded, failed for good, or cancelled.
    Finish(Outcome),
    /// The attempt failed and another is allowed: the task is `scheduled`
    /// until `at` (`after` from now), `error` its message, `errors` every
    /// failed attempt's so far.
    Retry {
        at: DateTime<Utc>,
        after: Duration,
        error: String,
        errors: Vec<AttemptError>,
    },
    /// The task waits in the store, held by nobody, on this.
    Suspend(Wait),
    /// The task goes back to `pending`, the same attempt to run again:
    /// why.
    HandBack(String),
    /// Nothing is written: the run's owner lost the task.
    Drop,
}

/// Decides what happens to a task whose run ended as `end`, at `now`.
/// `backoff(backoff_ms, attempt)` draws the wait before a retry (in
/// production [`courier_store::retry_delay`], with its jitter).
///
/// A failed attempt is retried while attempts are left and no cancel is
/// requested; otherwise it fails the task for good. Every failure appends
/// its error to those of the attempts before it.
pub fn decide(
    end: RunEnd,
    now: DateTime<Utc>,
    backoff: impl FnOnce(i64, i32) -> Duration,
) -> Decision {
    match end {
        RunEnd::Output(v) => Decision::Finish(Outcome::Succeeded(v)),
        RunEnd::Cancelled => Decision::Finish(Outcome::Cancelled(Some("cancelled".into()))),
        RunEnd::Failed(failure, attempt) => {
            let retry = attempt.number < attempt.max_attempts && !attempt.cancel_requested;
            let after = retry.then(|| backoff(attempt.backoff_ms, attempt.number));
            let errors = attempt.errors_with(&failure, now);
            match after {
                Some(after) => Decision::Retry {
                    at: now + chrono::Duration::from_std(after).unwrap_or_default(),
                    after,
                    error: failure.message,
                    errors,
                },
                None => Decision::Finish(Outcome::Failed {
                    error: failure.message,
                    errors,
                }),
            }
        }
        RunEnd::Fenced => Decision::Drop,
        RunEnd::Interrupted(why) => Decision::HandBack(why),
        RunEnd::Waits { mut wait, deadline } => {
            // Woken at the attempt's deadline too, whatever else it waits for.
            wait.timeout_at = deadline;
            Decision::Suspend(wait)
        }
    }
}

/// The end to record instead when the store refused `refused` for good
/// (e.g. text PostgreSQL cannot store): the task fails, with no further
/// attempt, and its error says why, rather than it staying `running`
/// forever.
pub fn refused(attempt: Attempt, why: &impl std::fmt::Display, now: DateTime<Utc>) -> Outcome {
    let failure = Failure::error(format!(
        "courier could not record this task's result: {why}"
    ));
    let errors = attempt.errors_with(&failure, now);
    Outcome::Failed {
        error: failure.message,
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
    }

    fn attempt(number: i32, max_attempts: i32) -> Attempt {
        Attempt {
            number,
            max_attempts,
            backoff_ms: 1000,
            errors: Vec::new(),
            cancel_requested: false,
        }
    }

    /// A backoff that must not be drawn.
    fn no_backoff(_: i64, _: i32) -> Duration {
        panic!("no retry was expected")
    }

    fn err(attempt: i32, code: &str, error: &str) -> AttemptError {
        AttemptError {
            attempt,
            error: error.into(),
            at: now(),
            code: code.into(),
        }
    }

    #[test]
    fn an_output_succeeds() {
        let v = serde_json::json!({"ok": [1, 2]});
        assert_eq!(
            decide(RunEnd::Output(v.clone()), now(), no_backoff),
            Decision::Finish(Outcome::Succeeded(v))
        );
    }

    #[test]
    fn an_error_with_attempts_left_is_retried_after_its_backoff() {
        let mut a = attempt(2, 5);
        a.backoff_ms = 250;
        a.errors = vec![err(1, "error", "first")];
        let mut asked = None;
        let d = decide(
            RunEnd::Failed(Failure::error("second"), a),
            now(),
            |b, n| {
                asked = Some((b, n));
                Duration::from_millis(375)
            },
        );
        // The backoff is drawn for the task's own base and this attempt.
        assert_eq!(asked, Some((250, 2)));
        assert_eq!(
            d,
            Decision::Retry {
                at: now() + chrono::Duration::milliseconds(375),
                after: Duration::from_millis(375),
                error: "second".into(),
                errors: vec![err(1, "error", "first"), err(2, "error", "second")],
            }
        );
    }

    #[test]
    fn a_retry_waits_what_the_documented_backoff_draws() {
        // Retry n waits 50 % to 100 % of min(backoff_ms × 2^(n−1), 1 h).
        for (n, full_ms) in [(1, 1000), (2, 2000), (3, 4000)] {
            let d = decide(
                RunEnd::Failed(Failure::error("x"), attempt(n, 10)),
                now(),
                courier_store::retry_delay,
            );
            let Decision::Retry { at, after, .. } = d else {
                panic!("attempt {n}: {d:?}");
            };
            let ms = (at - now()).num_milliseconds();
            assert_eq!(ms as u128, after.as_millis());
            assert!(ms >= full_ms / 2 && ms <= full_ms, "attempt {n}: {ms} ms");
        }
        let d = decide(
            RunEnd::Failed(Failure::error("x"), attempt(30, 40)),
            now(),
            courier_store::retry_delay,
        );
        let Decision::Retry { after, .. } = d else {
            panic!("{d:?}")
        };
        assert!(after >= courier_store::MAX_BACKOFF / 2 && after <= courier_store::MAX_BACKOFF);
    }

    #[test]
    fn an_error_at_the_last_attempt_fails_the_task() {
        let mut a = attempt(3, 3);
        a.errors = vec![err(1, "error", "a"), err(2, "panic", "b")];
        assert_eq!(
            decide(RunEnd::Failed(Failure::error("c"), a), now(), no_backoff),
            Decision::Finish(Outcome::Failed {
                error: "c".into(),
                errors: vec![
                    err(1, "error", "a"),
                    err(2, "panic", "b"),
                    err(3, "error", "c")
                ],
            })
        );
        // The default of one attempt: never retried.
        let d = decide(
            RunEnd::Failed(Failure::error("x"), attempt(1, 1)),
            now(),
            no_backoff,
        );
        assert!(
            matches!(d, Decision::Finish(Outcome::Failed { .. })),
            "{d:?}"
        );
        // Past the last (a task run again by hand keeps its count): failed.
        let d = decide(
            RunEnd::Failed(Failure::error("x"), attempt(4, 3)),
            now(),
            no_backoff,
        );
        assert!(
            matches!(d, Decision::Finish(Outcome::Failed { .. })),
            "{d:?}"
        );
    }

    #[test]
    fn a_timeout_is_a_failed_attempt_with_its_code() {
        let f = Failure::timeout(1, Duration::from_millis(1500));
        assert_eq!(f.code, "timeout");
        assert_eq!(f.message, "timeout: attempt 1 ran longer than 1500 ms");
        let d = decide(RunEnd::Failed(f.clone(), attempt(1, 2)), now(), |_, _| {
            Duration::from_secs(1)
        });
        let Decision::Retry { errors, error, .. } = d else {
            panic!("{d:?}")
        };
        assert_eq!(error, f.message);
        assert_eq!(errors, vec![err(1, "timeout", &f.message)]);
        let d = decide(RunEnd::Failed(f.clone(), attempt(2, 2)), now(), no_backoff);
        assert_eq!(
            d,
            Decision::Finish(Outcome::Failed {
                error: f.message.clone(),
                errors: vec![err(2, "timeout", &f.message)],
            })
        );
    }

    #[test]
    fn a_panic_is_a_failed_attempt_with_its_code() {
        let f = Failure::panicked("boom");
        assert_eq!(
            (f.code.as_str(), f.message.as_str()),
            ("panic", "task panicked: boom")
        );
        let f = Failure::lost("join error");
        assert_eq!(
            (f.code.as_str(), f.message.as_str()),
            ("panic", "task run failed: join error")
        );
        let d = decide(RunEnd::Failed(f, attempt(1, 1)), now(), no_backoff);
        assert_eq!(
            d,
            Decision::Finish(Outcome::Failed {
                error: "task run failed: join error".into(),
                errors: vec![err(1, "panic", "task run failed: join error")],
            })
        );
    }

    #[test]
    fn a_cancel_ends_the_task_cancelled() {
        assert_eq!(
            decide(RunEnd::Cancelled, now(), no_backoff),
            Decision::Finish(Outcome::Cancelled(Some("cancelled".into())))
        );
    }

    #[test]
    fn a_failure_after_a_cancel_request_is_not_retried() {
        let mut a = attempt(1, 5);
        a.cancel_requested = true;
        assert_eq!(
            decide(
                RunEnd::Failed(Failure::error("gave up"), a),
                now(),
                no_backoff
            ),
            Decision::Finish(Outcome::Failed {
                error: "gave up".into(),
                errors: vec![err(1, "error", "gave up")],
            })
        );
    }

    #[test]
    fn a_suspension_waits_until_the_attempts_deadline_too() {
        let wait = Wait {
            event: Some("booted".into()),
            seen_seq: 3,
            label: "event booted".into(),
            ..Wait::default()
        };
        let deadline = now() + chrono::Duration::seconds(30);
        let d = decide(
            RunEnd::Waits {
                wait: wait.clone(),
                deadline: Some(deadline),
            },
            now(),
            no_backoff,
        );
        assert_eq!(
            d,
            Decision::Suspend(Wait {
                timeout_at: Some(deadline),
                ..wait.clone()
            })
        );
        // No `timeout_ms`: no deadline, whatever the wait said.
        let stale = Wait {
            timeout_at: Some(deadline),
            ..wait.clone()
        };
        assert_eq!(
            decide(
                RunEnd::Waits {
                    wait: stale,
                    deadline: None
                },
                now(),
                no_backoff
            ),
            Decision::Suspend(wait)
        );
    }

    #[test]
    fn an_interrupted_run_hands_the_task_back() {
        assert_eq!(
            decide(
                RunEnd::Interrupted("the executor is stopping".into()),
                now(),
                no_backoff
            ),
            Decision::HandBack("the executor is stopping".into())
        );
    }

    #[test]
    fn a_fenced_run_writes_nothing() {
        assert_eq!(decide(RunEnd::Fenced, now(), no_backoff), Decision::Drop);
    }

    #[test]
    fn a_runs_result_maps_to_its_end() {
        let never = || -> Attempt { panic!("only a failure reads the attempt") };
        assert_eq!(
            RunEnd::of(Ok(Value::Null), never),
            RunEnd::Output(Value::Null)
        );
        assert_eq!(
            RunEnd::of(Err(TaskError::Cancelled), never),
            RunEnd::Cancelled
        );
        assert_eq!(RunEnd::of(Err(TaskError::Fenced), never), RunEnd::Fenced);
        assert_eq!(
            RunEnd::of(Err(TaskError::Interrupted("db away".into())), never),
            RunEnd::Interrupted("db away".into())
        );
        assert_eq!(
            RunEnd::of(Err(TaskError::failed("bad input")), || attempt(1, 2)),
            RunEnd::Failed(Failure::error("bad input"), attempt(1, 2))
        );
    }

    #[test]
    fn a_result_the_store_refuses_fails_the_task_for_good() {
        let mut a = attempt(1, 5);
        a.errors = vec![err(0, "error", "older")];
        let why = "invalid byte sequence";
        let text = "courier could not record this task's result: invalid byte sequence";
        assert_eq!(
            refused(a, &why, now()),
            Outcome::Failed {
                error: text.into(),
                errors: vec![err(0, "error", "older"), err(1, "error", text)],
            }
        );
    }
}
