//! The recovery sweep: every `sweep_interval`, and once at start, find what
//! a lost message or a dead executor left behind and put it right.

use actix::prelude::*;

use courier_bus::Address;

use super::{ExecutorActor, ExecutorConfig, Job};
use crate::calls::detached;
use crate::error::Result;
use crate::protocol::{envelope, start_task, Bus, Msg};
use courier_store::now;
use courier_store::Store;

impl ExecutorActor {
    pub(super) fn sweep(&mut self, ctx: &mut Context<Self>) {
        if self.is_stopping() || !self.jobs.start(Job::Sweep) {
            return;
        }
        let store = self.store.clone();
        let bus = self.bus.clone();
        let executor_id = self.identity.id.clone();
        let cfg = self.config.clone();
        let from = self.identity.address.clone();
        ctx.spawn(
            detached(async move { sweep_once(&store, &bus, &executor_id, &cfg, from).await })
                .into_actor(self)
                .map(|res, act, ctx| {
                    act.jobs.end(Job::Sweep);
                    // The next claim looks at the queues' limits again.
                    act.claims.limits = super::Limits::Unknown;
                    match res {
                        Ok(next_due) => {
                            if let Some(at) = next_due {
                                act.arm_due(at, ctx);
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "sweep failed"),
                    }
                    // Pending tasks may exist that no message announced.
                    act.jobs.want(Job::Pull);
                    act.pull(ctx);
                }),
        );
    }
}

/// One pass of the recovery sweep. Returns when the next scheduled task is
/// due, so the executor's timer is right even if every `task_scheduled`
/// message was lost.
async fn sweep_once(
    store: &Store,
    bus: &Bus,
    executor_id: &str,
    cfg: &ExecutorConfig,
    from: Address,
) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    // 1. Dead executors: silent too long, or (in this pid space) their
    //    process is gone.
    let mut dead: Vec<String> = store
        .stale_executors(executor_id, cfg.dead_after)
        .await?
        .into_iter()
        .map(|e| e.id)
        .collect();
    if let Some(space) = courier_store::current_space() {
        for (id, process) in store.alive_executors_in_space(executor_id, &space).await? {
            if process.alive() == Some(false) && !dead.contains(&id) {
                dead.push(id);
            }
        }
    }
    for id in dead {
        if store.declare_dead(&id, executor_id).await? {
            tracing::warn!(dead = %id, by = %executor_id, "executor declared dead; taking its tasks over");
        }
    }
    // Whatever is owned by an executor that is not alive goes back to the
    // pool: the tasks of the executors just declared dead, and any left by
    // a takeover or a stop that was cut short.
    let (orphans, woken) = store
        .release_orphans(executor_id, cfg.max_takeovers.min(i32::MAX as u32) as i32)
        .await?;
    let (poisoned, orphans): (Vec<_>, Vec<_>) =
        orphans.into_iter().partition(|t| t.state.is_final());
    for t in &poisoned {
        tracing::error!(task_id = %t.id, kind = %t.kind, takeovers = cfg.max_takeovers, "task failed: its executor died every time it ran");
        crate::notify::notify_finished(store, bus, from.clone(), t, None).await;
    }
    // Parents that waited for a poisoned sub-task, woken with its end.
    for parent in &woken {
        bus.tell(start_task(from.clone(), parent));
    }
    let released = orphans.len();
    crate::metrics::metrics().taken_over(released + poisoned.len());
    if released > 0 {
        tracing::warn!(by = %executor_id, tasks = released, "tasks of executors that are gone are back in the pool");
    }
    for t in &orphans {
        bus.tell(start_task(from.clone(), t));
    }
    // 2. Events that were committed but whose message never arrived.
    let before = now() - chrono::Duration::from_std(cfg.redeliver_after).unwrap_or_default();
    for u in store.undelivered_events(executor_id, before).await? {
        let e = u.event;
        let task = e.task_id;
        bus.tell(envelope(
            from.clone(),
            Address::task(task),
            &u.trace_id,
            Msg::TaskEvent {
                task_id: task,
                seq: e.seq,
                name: e.name,
                payload: e.payload.0,
            },
        ));
    }
    // 3. Cancellations whose message may have been lost.
    for (task, trace) in store.cancel_requested_owned(executor_id).await? {
        bus.tell(envelope(
            from.clone(),
            Address::task(task),
            &trace,
            Msg::CancelTask { task_id: task },
        ));
    }
    // 4. Timers: the next due time, whoever scheduled it (tasks, durable
    //    timers and schedules' slots).
    super::timers::next_timer(store).await
}
