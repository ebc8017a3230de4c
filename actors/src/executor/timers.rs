//! Timers in the database: `scheduled` tasks (a delayed start, a retry
//! waiting out its backoff) become `pending` when their `run_at` comes.
//!
//! The store holds the timers: a task's `run_at`, under an index on what
//! is due. An executor holds one timer in memory, for the earliest due time
//! it knows. It learns due times from `task_scheduled` on its pools (sent by
//! whoever scheduled a task) and from the store at every sweep, so a timer
//! lost with a message or a dead executor is found again within a sweep.
//! When the timer fires, [`Store::promote_due`](crate::Store::promote_due)
//! makes what is due `pending` (any number of executors may do it at once:
//! each task is promoted once) and each promoted task is announced on its
//! queue's pool like a new one, then the timer is set for the next due time.
//!
//! Schedules ride on the same timer: their `next_run_at` is a due time like
//! a task's `run_at`, and each pass fires the due ones
//! ([`crate::schedule::fire_due`]) beside promoting due tasks.

use actix::prelude::*;
use chrono::{DateTime, Utc};

use super::{ExecutorActor, Job};
use crate::calls::detached;
use crate::error::Result;
use crate::protocol::{announce, start_task};
use courier_store::now;
use courier_store::Store;

/// How many tasks one promotion makes pending; more are promoted at once
/// after.
const PROMOTE_BATCH: u32 = 500;

/// An executor's one timer: set for the earliest due time it knows.
#[derive(Default)]
pub(super) struct Timer {
    /// That time, and the timer's handle; `None` while none is known.
    due: Option<(DateTime<Utc>, SpawnHandle)>,
}

impl ExecutorActor {
    /// Makes sure the timer fires no later than `at`.
    pub(super) fn arm_due(&mut self, at: DateTime<Utc>, ctx: &mut Context<Self>) {
        if let Some((when, handle)) = self.timer.due {
            if when <= at {
                return;
            }
            ctx.cancel_future(handle);
        }
        let wait = (at - now()).to_std().unwrap_or_default();
        let handle = ctx.run_later(wait, |act, ctx| {
            act.timer.due = None;
            act.jobs.want(Job::Promote);
            act.promote(ctx);
        });
        self.timer.due = Some((at, handle));
    }

    /// Promotes what is due, announces it, and sets the timer for what is
    /// due next.
    pub(super) fn promote(&mut self, ctx: &mut Context<Self>) {
        if self.is_stopping()
            || !self.jobs.is_wanted(Job::Promote)
            || !self.jobs.start(Job::Promote)
        {
            return;
        }
        let store = self.store.clone();
        let executor_id = self.identity.id.clone();
        let local = self.run_env.local_kinds.clone();
        let bus = self.bus.clone();
        let from = self.identity.address.clone();
        ctx.spawn(
            detached(async move {
                let promoted = store.promote_due(&executor_id, PROMOTE_BATCH).await?;
                // Their followers hear of `pending` before the claims.
                for t in &promoted {
                    crate::notify::tell_followers(&store, &bus, &from, t).await;
                }
                let (fired, more) = crate::schedule::fire_due(&store, &local, &executor_id).await?;
                let next = next_timer(&store).await?;
                Ok::<_, crate::error::Error>((promoted, fired, more, next))
            })
            .into_actor(self)
            .map(|res, act, ctx| {
                act.jobs.end(Job::Promote);
                match res {
                    Ok((promoted, fired, more_fired, next)) => {
                        if !promoted.is_empty() {
                            tracing::debug!(n = promoted.len(), "scheduled tasks are due");
                        }
                        let more = promoted.len() as u32 == PROMOTE_BATCH || more_fired;
                        for t in &promoted {
                            act.bus.tell(start_task(act.identity.address.clone(), t));
                        }
                        for t in &fired {
                            if let Some(env) = announce(act.identity.address.clone(), t) {
                                act.bus.tell(env);
                            }
                        }
                        if more {
                            act.jobs.want(Job::Promote);
                        } else if let Some(at) = next {
                            act.arm_due(at, ctx);
                        }
                    }
                    Err(e) => {
                        // The sweep reads the next due time again.
                        tracing::warn!(error = %e, "promoting due tasks failed; the sweep will retry");
                    }
                }
                act.promote(ctx);
            }),
        );
    }
}

/// The earliest due time in the store: a `scheduled` task, a durable
/// timer, or a schedule's next slot (two index lookups).
pub(super) async fn next_timer(store: &Store) -> Result<Option<DateTime<Utc>>> {
    let tasks = store.next_due().await?;
    let slots = store.next_schedule_due().await?;
    Ok(match (tasks, slots) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}
