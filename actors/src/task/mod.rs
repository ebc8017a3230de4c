//! The task actor: one per task running on this executor.
//!
//! It owns the bus address `task/<id>` while the task runs here, turns bus
//! messages (events, cancellation, sub-task reports) into mailbox changes the
//! run can wait on, runs the kind's code, and records how the run ended —
//! fenced, so that a task taken over by another executor is never written by
//! this one. When it stops, it tells the executor its slot is free.
//!
//! Facts come from the store: a bus message is only a hint that makes the
//! actor read what was committed (the inbox past what it holds, a sub-task's
//! row, the task's `cancel_requested`). Any participant of the bus can send
//! an envelope; none can hand a run an event, a sub-task's end or a cancel
//! the store does not hold.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::FutureExt;
use tracing::Instrument;

use courier_bus::{Address, Deliver};

pub mod context;
pub mod kind;
pub mod replay;
mod runs;
pub mod signals;

use self::context::{Shared, TaskContext};
use self::kind::TaskKind;
use self::replay::{Inbox, Replay, ReplayCache};
use self::signals::{Abort, Stage, Suspend, TaskDone};
use crate::calls::{detached, retry};
use crate::decide::{decide, Attempt, Decision, Failure, RunEnd};
use crate::error::{Error, TaskError};
use crate::protocol::{announce, envelope, start_task, Bus, Msg};
use courier_store::{now, AttemptError, Task, TaskState};
use courier_store::{Fence, Outcome, Store, Suspension, Wait};

/// How long the end of a run is retried through a database outage. Past it
/// the task stays owned by this executor until a restart or takeover.
const FINISH_RETRY: Duration = Duration::from_secs(300);

/// What an executor gives every run it starts: one per executor identity
/// (a new one when the executor registers again under a new id), shared
/// by each run's [`TaskActor`] and its [`TaskContext`].
pub(crate) struct RunEnv {
    pub store: Store,
    pub bus: Bus,
    /// The executor's id: the owner in every run's fence.
    pub executor_id: String,
    /// The executor's address, the `from` of messages a run sends.
    pub me: Address,
    /// Kinds this executor runs (spawning one of those needs no lookup).
    pub local_kinds: crate::creation::LocalKinds,
    /// The executor's replay cache: what a task's last run here read is
    /// taken from it at the start, and what a run read is left in it when
    /// its task suspends.
    pub cache: Arc<ReplayCache>,
}

impl RunEnv {
    /// The same environment for the executor registered anew as `id`.
    pub(crate) fn under(&self, id: String) -> RunEnv {
        RunEnv {
            store: self.store.clone(),
            bus: self.bus.clone(),
            me: Address::Executor(id.clone()),
            executor_id: id,
            local_kinds: self.local_kinds.clone(),
            cache: self.cache.clone(),
        }
    }
}

pub struct TaskActor {
    task: Task,
    fence: Fence,
    kind: Arc<dyn TaskKind>,
    /// What the executor gives its runs (store, bus, its address, its
    /// kinds, its replay cache), shared with the run's [`TaskContext`].
    env: Arc<RunEnv>,
    shared: Arc<Shared>,
    executor: Recipient<TaskDone>,
    /// The run in progress: the actor's wait for it, and the run itself
    /// on the runs' pool (aborted when dropped).
    run: Option<(SpawnHandle, runs::Aborts)>,
    /// The timer of the attempt's `timeout_ms`.
    timeout: Option<SpawnHandle>,
    /// When the attempt times out: from the database for a replayed
    /// attempt, else `timeout_ms` from the run's first start here.
    deadline: Option<chrono::DateTime<chrono::Utc>>,
    /// Every event of the task up to this `seq` is in the mailbox (each
    /// came from the store: the inbox loaded at the start, or read past it,
    /// or kept in the replay cache by an earlier run here).
    max_seq: i64,
    /// Every event up to this `seq` is marked delivered in the store.
    delivered: i64,
    /// Store reads asked for by hints on the bus.
    reads: Reads,
    /// Whether this actor holds the address `task/<id>`.
    registered: bool,
    /// When the run in progress started here (for its duration metric).
    run_started: Option<std::time::Instant>,
    ending: bool,
    /// This run's span: every line and span of the run is inside it, and
    /// an exporter puts it in the task's trace (`courier_bus::trace::adopt`).
    /// Closed when the actor stops.
    span: tracing::Span,
}

impl TaskActor {
    pub(crate) fn new(
        task: Task,
        kind: Arc<dyn TaskKind>,
        env: Arc<RunEnv>,
        executor: Recipient<TaskDone>,
    ) -> Self {
        let fence = Fence {
            task_id: task.id,
            executor_id: env.executor_id.clone(),
            epoch: task.epoch,
        };
        let span = tracing::info_span!("task", task_id = %task.id, kind = %task.kind,
            attempt = task.attempts, trace_id = %task.trace_id);
        courier_bus::trace::adopt_trace(&span, &task.trace_id);
        TaskActor {
            task,
            fence,
            kind,
            env,
            shared: Shared::new(),
            executor,
            run: None,
            timeout: None,
            deadline: None,
            max_seq: 0,
            delivered: 0,
            reads: Reads::default(),
            registered: false,
            run_started: None,
            ending: false,
            span,
        }
    }

    /// Registers `task/<id>`, to be reachable before the run starts (so
    /// nothing sent from now on is missed; whatever came before is in the
    /// database and loaded next), then begins. The address may still be
    /// held by an actor of an earlier run of this task in this process
    /// that is stopping (an executor declared dead drops its runs and, as a
    /// new executor, may claim the same tasks at once): it is asked again
    /// for a while, then the task is handed back rather than kept owned
    /// and never run.
    fn register(&mut self, tries: u32, ctx: &mut Context<Self>) {
        const EVERY: Duration = Duration::from_millis(50);
        const TRIES: u32 = 40;
        let bus = self.env.bus.clone();
        let addr = Address::task(self.task.id);
        let me = ctx.address().recipient();
        ctx.wait(
            async move { bus.register(addr, me).await }
                .into_actor(self)
                .map(move |res, act, ctx| match res {
                    Ok(()) => {
                        act.registered = true;
                        act.restore();
                        act.begin(ctx);
                    }
                    Err(e) if tries < TRIES => {
                        tracing::debug!(parent: &act.span(), error = %e, "task address still held by a stopping run; asking again");
                        ctx.run_later(EVERY, move |act, ctx| act.register(tries + 1, ctx));
                    }
                    Err(e) => {
                        tracing::error!(parent: &act.span(), error = %e, "task address taken; handing the task back instead of running it twice");
                        act.end(RunEnd::Interrupted("its address is taken".into()), ctx);
                    }
                }),
        );
    }

    fn span(&self) -> tracing::Span {
        self.span.clone()
    }

    /// Takes what the last run of this task here read, if the executor's
    /// replay cache kept it: its inbox, and its journal if nobody else
    /// owned the task since (see [`replay`]).
    fn restore(&mut self) {
        let Some(Replay { inbox, journal }) = self.env.cache.take(self.task.id, self.task.epoch)
        else {
            return;
        };
        tracing::debug!(parent: &self.span(), events = inbox.events.len(), max_seq = inbox.max_seq,
            journal = journal.is_some(), "replaying from the replay cache");
        self.max_seq = inbox.max_seq;
        self.delivered = inbox.delivered;
        self.shared
            .update(|mb| mb.restore_events(inbox.events, inbox.bytes));
        if let Some((_, steps)) = journal {
            let mut j = self.shared.journal();
            j.steps = steps;
            j.loaded = true;
        }
    }

    /// Leaves what this task's runs read in the executor's replay cache,
    /// for its next run here. Only as the actor stops with the task still
    /// to run (suspended, or retried later).
    fn keep_for_replay(&mut self) {
        let (events, bytes) = self.shared.lock().take_events();
        let journal = self
            .shared
            .journal()
            .take_whole()
            .map(|steps| (self.fence.epoch, steps));
        self.env.cache.put(
            self.task.id,
            Replay {
                inbox: Inbox {
                    events,
                    bytes,
                    max_seq: self.max_seq,
                    delivered: self.delivered,
                },
                journal,
            },
        );
    }

    /// Reads the inbox past the events held (all of it on a first run; the
    /// new ones after the replay cache, or a suspension that found what it
    /// waited for already there) and, for a watched task, who follows it;
    /// then starts the run.
    fn begin(&mut self, ctx: &mut Context<Self>) {
        let store = self.env.store.clone();
        let id = self.task.id;
        let watched = self.task.watched;
        let after = self.max_seq;
        let load = detached(async move {
            let events = retry("loading events", Duration::from_secs(30), || {
                store.inbox_after(id, after)
            })
            .await?;
            let watchers = if watched {
                retry("loading watchers", Duration::from_secs(30), || {
                    store.stream_watchers(id)
                })
                .await?
            } else {
                Vec::new()
            };
            Ok::<_, Error>((events, watchers))
        });
        ctx.wait(load.into_actor(self).map(|res, act, ctx| match res {
            Ok((events, watchers)) => {
                act.shared.followers().watchers =
                    watchers.iter().filter_map(|w| w.parse().ok()).collect();
                act.shared.publish(&act.env.bus, &act.env.me, act.task.clone());
                if act.task.cancel_requested {
                    act.shared.update(|mb| mb.cancel());
                }
                act.add_events(events, ctx);
                act.start_run(ctx);
            }
            Err(e) => {
                tracing::warn!(parent: &act.span(), error = %e, "could not load the task's events; handing it back");
                act.end(act.ran(Err(TaskError::from(e))), ctx);
            }
        }));
    }

    fn start_run(&mut self, ctx: &mut Context<Self>) {
        if let Some(ms) = self.task.timeout_ms.filter(|ms| *ms > 0) {
            let limit = Duration::from_millis(ms as u64);
            let deadline = *self.deadline.get_or_insert_with(|| {
                self.task
                    .timeout_at
                    .unwrap_or_else(|| now() + chrono::Duration::milliseconds(ms))
            });
            match (deadline - now()).to_std() {
                Ok(left) if !left.is_zero() => {
                    self.timeout =
                        Some(ctx.run_later(left, move |act, ctx| act.time_out(limit, ctx)));
                }
                // Woken at its deadline (or past it): no run at all.
                _ => return self.time_out(limit, ctx),
            }
        }
        let run_ctx = TaskContext::new(
            self.task.clone(),
            self.fence.clone(),
            self.env.clone(),
            self.shared.clone(),
            ctx.address().recipient(),
        );
        self.shared.update(|mb| mb.new_run());
        self.shared.journal().new_run();
        self.run_started = Some(std::time::Instant::now());
        let span = self.span();
        tracing::debug!(parent: &span, "run started");
        let fut = AssertUnwindSafe(self.kind.run(run_ctx))
            .catch_unwind()
            .instrument(span);
        // The code runs on the runs' pool (see `runs`); this actor waits.
        let (join, aborts) = runs::spawn(fut);
        let handle = ctx.spawn(join.into_actor(self).map(|res, act, ctx| {
            act.run = None;
            let end = match res {
                Ok(Ok(r)) => act.ran(r),
                // Aborted: only ever by this actor, which no longer waits.
                Err(e) if e.is_cancelled() => return,
                Err(e) => RunEnd::Failed(Failure::lost(e), act.attempt()),
                Ok(Err(panic)) => {
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    RunEnd::Failed(Failure::panicked(&msg), act.attempt())
                }
            };
            act.end(end, ctx);
        }));
        self.run = Some((handle, aborts));
    }

    /// Drops the run in progress, if any: this actor stops waiting for it
    /// and the run is aborted on the runs' pool.
    fn drop_run(&mut self, ctx: &mut Context<Self>) {
        if let Some((wait, _aborts)) = self.run.take() {
            ctx.cancel_future(wait);
        }
    }

    /// Marks every event up to `seq` as held here (they are all in the
    /// mailbox: loaded, or read from the store past the last held); those
    /// up to `delivered` are marked already.
    fn mark_delivered(&self, seq: i64, ctx: &mut Context<Self>) {
        let after = self.delivered;
        if seq <= after {
            return;
        }
        let store = self.env.store.clone();
        let id = self.task.id;
        // Tied to the actor: if the run ends first, the finish marks the
        // whole inbox delivered in its transaction.
        ctx.spawn(
            detached(async move { store.mark_delivered_between(id, after, seq).await })
                .into_actor(self)
                .map(move |res, act, _| match res {
                    Ok(()) => act.delivered = act.delivered.max(seq),
                    // Harmless: the sweep will send the event's hint again,
                    // a `seq` already held needs no read, and the next
                    // mark covers these events too.
                    Err(e) => tracing::debug!(error = %e, "could not mark events delivered"),
                }),
        );
    }

    /// An event hint: reads the inbox past `max_seq` and adds what the store
    /// holds to the mailbox. One read at a time: hints that come during a
    /// read make one more read when it ends.
    fn read_events(&mut self, ctx: &mut Context<Self>) {
        if self.reads.events {
            self.reads.events_again = true;
            return;
        }
        self.reads.events = true;
        let store = self.env.store.clone();
        let id = self.task.id;
        let after = self.max_seq;
        ctx.spawn(
            detached(async move { store.events_after(id, after).await })
                .into_actor(self)
                .map(|res, act, ctx| {
                    act.reads.events = false;
                    match res {
                        Ok(events) => act.add_events(events, ctx),
                        // The event stays undelivered: the sweep sends its
                        // hint again.
                        Err(e) => {
                            tracing::debug!(parent: &act.span(), error = %e, "could not read the task's new events")
                        }
                    }
                    if std::mem::take(&mut act.reads.events_again) {
                        act.read_events(ctx);
                    }
                }),
        );
    }

    /// Adds events read from the store, in `seq` order, and marks them held.
    fn add_events(&mut self, events: Vec<courier_store::TaskEvent>, ctx: &mut Context<Self>) {
        let Some(last) = events.last().map(|e| e.seq) else {
            return;
        };
        self.shared.update(|mb| {
            for e in events {
                mb.add_event(e.seq, e.name, e.payload.0);
            }
        });
        if last > self.max_seq {
            self.max_seq = last;
            // Every event up to `last` is in the mailbox now.
            self.mark_delivered(last, ctx);
        }
    }

    /// A sub-task's end hint: reads the sub-tasks said to have ended (those
    /// hinted during a read in flight, in the next read) and gives the run
    /// the ones the store holds as this task's sub-tasks in a final state.
    fn read_children(&mut self, ctx: &mut Context<Self>) {
        if self.reads.children || self.reads.children_hinted.is_empty() {
            return;
        }
        self.reads.children = true;
        let ids: Vec<uuid::Uuid> = self.reads.children_hinted.drain().collect();
        let store = self.env.store.clone();
        ctx.spawn(
            detached(async move { store.tasks_by_id(&ids).await })
                .into_actor(self)
                .map(|res, act, ctx| {
                    act.reads.children = false;
                    match res {
                        Ok(tasks) => {
                            let parent = act.task.id;
                            let ended: Vec<Task> = tasks
                                .into_iter()
                                .filter(|t| t.parent_id == Some(parent) && t.state.is_final())
                                .collect();
                            if !ended.is_empty() {
                                act.shared.update(|mb| {
                                    for t in ended {
                                        mb.add_child(t);
                                    }
                                });
                            }
                        }
                        // The run reads its sub-tasks itself before it
                        // waits, and a suspension checks them in the store.
                        Err(e) => {
                            tracing::debug!(parent: &act.span(), error = %e, "could not read the sub-tasks said to have ended")
                        }
                    }
                    act.read_children(ctx);
                }),
        );
    }

    /// A cancel hint: cancels the run only if the store holds the request.
    fn read_cancel(&mut self, ctx: &mut Context<Self>) {
        if self.shared.is_cancelled() {
            return;
        }
        if self.reads.cancel {
            self.reads.cancel_again = true;
            return;
        }
        self.reads.cancel = true;
        let store = self.env.store.clone();
        let id = self.task.id;
        ctx.spawn(
            detached(async move { store.get_task(id).await })
                .into_actor(self)
                .map(|res, act, ctx| {
                    act.reads.cancel = false;
                    match res {
                        Ok(Some(t)) if t.cancel_requested => {
                            tracing::info!(parent: &act.span(), "cancellation requested");
                            act.shared.update(|mb| mb.cancel());
                        }
                        Ok(_) => {
                            tracing::debug!(parent: &act.span(), "a cancel the store does not hold; ignored")
                        }
                        // The owner's sweep sends the cancel again.
                        Err(e) => {
                            tracing::debug!(parent: &act.span(), error = %e, "could not read the task's cancel request")
                        }
                    }
                    if std::mem::take(&mut act.reads.cancel_again) {
                        act.read_cancel(ctx);
                    }
                }),
        );
    }

    /// What of the task a failed attempt is judged by, now.
    fn attempt(&self) -> Attempt {
        Attempt::of(&self.task, self.shared.is_cancelled())
    }

    /// The end of a run whose code (or the store underneath it) returned
    /// `result`.
    fn ran(&self, result: Result<serde_json::Value, TaskError>) -> RunEnd {
        RunEnd::of(result, || self.attempt())
    }

    /// Decides what the end of the run means for the task (see
    /// [`crate::decide`]) and carries it out: one write, then the actor
    /// stops (or, for a suspension that finds what it waited for, runs
    /// again).
    fn end(&mut self, end: RunEnd, ctx: &mut Context<Self>) {
        if self.ending {
            return;
        }
        let decision = decide(end, now(), courier_store::retry_delay);
        if !matches!(decision, Decision::Suspend(_)) {
            self.ending = true;
            // The run's code is done: its slot may take the next run while
            // the end is written (group-committed with others').
            self.executor.do_send(TaskDone {
                task_id: self.task.id,
                stage: Stage::Ran,
            });
            if let Some(h) = self.timeout.take() {
                ctx.cancel_future(h);
            }
            if let Some(started) = self.run_started.take() {
                crate::metrics::metrics().ran(
                    &self.task.kind,
                    &self.task.queue,
                    started.elapsed().as_secs_f64(),
                );
            }
        }
        match decision {
            Decision::Finish(outcome) => self.finish(outcome, ctx),
            Decision::Retry {
                at,
                after,
                error,
                errors,
            } => self.retry_later(at, after, error, errors, ctx),
            Decision::Suspend(wait) => self.suspend(wait, ctx),
            Decision::HandBack(why) => self.hand_back(why, ctx),
            Decision::Drop => {
                crate::metrics::metrics().fenced();
                tracing::warn!(parent: &self.span(), "this executor lost the task; its result is dropped");
                ctx.stop();
            }
        }
    }

    /// The run did not end: the task goes back to `pending` for the same
    /// attempt, and its queue is told.
    fn hand_back(&mut self, why: String, ctx: &mut Context<Self>) {
        tracing::warn!(parent: &self.span(), %why, "run interrupted; handing the task back");
        let store = self.env.store.clone();
        let fence = self.fence.clone();
        let bus = self.env.bus.clone();
        let me = self.env.me.clone();
        let mut task = self.task.clone();
        ctx.wait(
            detached(async move {
                match retry("handing a task back", FINISH_RETRY, || {
                    store.hand_back(&fence)
                })
                .await
                {
                    Ok(()) => {
                        task.state = TaskState::Pending;
                        bus.tell(start_task(me, &task));
                    }
                    Err(e) => tracing::warn!(error = %e, "could not hand the task back"),
                }
            })
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        );
    }

    /// The task is final: its end is recorded (group-committed), then its
    /// watchers and a parent it woke are told.
    fn finish(&mut self, outcome: Outcome, ctx: &mut Context<Self>) {
        let span = self.span();
        let store = self.env.store.clone();
        let fence = self.fence.clone();
        let bus = self.env.bus.clone();
        let me = self.env.me.clone();
        let attempt = self.attempt();
        let kind = self.task.kind.clone();
        ctx.wait(
            detached(
                async move {
                let mut result =
                    retry("recording the end of a run", FINISH_RETRY, || store.finish_run(&fence, &outcome)).await;
                if let Err(e) = &result {
                    // The database refused this result for good (e.g. text
                    // PostgreSQL cannot store): record a failure that says
                    // why, rather than leave the task running forever.
                    if !e.is_transient() && !matches!(e, Error::Fenced(_)) {
                        tracing::error!(error = %e, "the database refused the run's result; failing the task");
                        let failed = crate::decide::refused(attempt, e, now());
                        result = retry("recording a failure", FINISH_RETRY, || store.finish_run(&fence, &failed)).await;
                    }
                }
                match result {
                    Ok(f) => {
                        // One line a task only when it failed for good (and
                        // a flood of those is folded by the binary's logger).
                        if f.state == TaskState::Failed {
                            tracing::warn!(state = %f.state, "run finished: the task failed");
                        } else {
                            tracing::debug!(state = %f.state, "run finished");
                        }
                        crate::metrics::metrics().task_finished(&kind, f.state.as_str());
                        if let Some(parent) = &f.woken {
                            // It waited for this task: it is pending again.
                            crate::notify::notify_woken(&store, &bus, me.clone(), parent).await;
                        }
                        // Read with the end whenever someone is to be told.
                        if let Some(task) = &f.task {
                            crate::notify::notify_finished(&store, &bus, me, task, Some(f.watchers)).await;
                        }
                    }
                    Err(Error::Fenced(_)) => {
                        {
                            crate::metrics::metrics().fenced();
                            tracing::warn!("this executor lost the task before its end was recorded; result dropped");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "could not record the end of the run"),
                }
                }
                .instrument(span),
            )
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        );
    }

    /// A failed attempt with attempts left: `scheduled` for the next one
    /// until `at` (`after` from now), and its queue's executors told when.
    fn retry_later(
        &mut self,
        at: chrono::DateTime<chrono::Utc>,
        after: Duration,
        error: String,
        errors: Vec<AttemptError>,
        ctx: &mut Context<Self>,
    ) {
        let span = self.span();
        tracing::info!(parent: &span, attempt = self.task.attempts, max_attempts = self.task.max_attempts,
            retry_in_ms = after.as_millis() as u64, %error, "attempt failed; retrying later");
        let store = self.env.store.clone();
        let fence = self.fence.clone();
        ctx.wait(
            detached(async move {
                retry("scheduling a retry", FINISH_RETRY, || {
                    store.retry_later(&fence, &error, &errors, at)
                })
                .await
            })
            .into_actor(self)
            .map(|res, act, ctx| {
                match res {
                    Ok(task) => {
                        act.keep_for_replay();
                        crate::metrics::metrics().retried(&task.queue);
                        act.shared.publish(&act.env.bus, &act.env.me, task.clone());
                        if let Some(env) = announce(act.env.me.clone(), &task) {
                            act.env.bus.tell(env);
                        }
                    }
                    Err(Error::Fenced(_)) => {
                        {
                            crate::metrics::metrics().fenced();
                            tracing::warn!(parent: &act.span(), "this executor lost the task before its retry was recorded");
                        }
                    }
                    Err(e) => {
                        tracing::error!(parent: &act.span(), error = %e, "could not schedule the retry; the task stays with this executor until a restart or takeover")
                    }
                }
                ctx.stop();
            }),
        );
    }

    /// The run waits for what has not come: the task waits in the store,
    /// held by nobody, until an event, its sub-tasks' ends, a cancel or its
    /// timer wakes it; then an executor of its queue claims it and replays
    /// the run from its journal. If what it waits for came meanwhile, the
    /// run starts again here at once.
    fn suspend(&mut self, wait: Wait, ctx: &mut Context<Self>) {
        let store = self.env.store.clone();
        let fence = self.fence.clone();
        ctx.wait(
            detached(async move {
                let s = retry("suspending a task", FINISH_RETRY, || store.suspend(&fence, &wait)).await?;
                // A watch opened while the run went on may have missed
                // this actor (it stops now): the store knows every watcher.
                let watchers = match &s {
                    Suspension::Suspended { task: t, .. } if t.watched => {
                        store.stream_watchers(t.id).await.unwrap_or_default()
                    }
                    _ => Vec::new(),
                };
                Ok::<_, Error>((s, watchers))
            })
            .into_actor(self)
            .map(|res, act, ctx| match res {
                Ok((Suspension::Suspended { task }, watchers)) => {
                    tracing::debug!(parent: &act.span(), waiting = task.waiting.as_deref().unwrap_or(""), "suspended");
                    act.ending = true;
                    crate::metrics::metrics().suspended(&task.queue);
                    {
                        let mut f = act.shared.followers();
                        for w in watchers.iter().filter_map(|w| w.parse().ok()) {
                            if !f.watchers.contains(&w) {
                                f.watchers.push(w);
                            }
                        }
                    }
                    act.shared.publish(&act.env.bus, &act.env.me, (*task).clone());
                    act.keep_for_replay();
                    if let Some(env) = announce(act.env.me.clone(), &task) {
                        act.env.bus.tell(env);
                    }
                    ctx.stop();
                }
                Ok((Suspension::Woken, _)) => {
                    tracing::debug!(parent: &act.span(), "what the run waits for came as it suspended; running it again");
                    act.begin(ctx);
                }
                Err(e) => act.end(act.ran(Err(TaskError::from(e))), ctx),
            }),
        );
    }

    /// The attempt ran past its `timeout_ms`: abort the run, cancel what it
    /// spawned, and fail the attempt with code `timeout`.
    fn time_out(&mut self, limit: Duration, ctx: &mut Context<Self>) {
        self.timeout = None;
        if self.ending {
            return;
        }
        self.drop_run(ctx);
        crate::metrics::metrics().timed_out(&self.task.queue);
        let store = self.env.store.clone();
        let bus = self.env.bus.clone();
        let me = self.env.me.clone();
        let id = self.task.id;
        let by = self.fence.executor_id.clone();
        // Its sub-tasks are cancelled before the attempt is recorded as
        // failed: a retry must not find the old attempt's work running.
        ctx.wait(
            detached(async move {
                if let Err(e) = crate::notify::cancel_tree(&store, &bus, me, &by, id, false).await {
                    tracing::warn!(error = %e, "could not cancel the sub-tasks of a timed-out attempt; the sweep of their executors will not");
                }
            })
            .into_actor(self)
            .map(move |_, act, ctx| {
                let failure = Failure::timeout(act.task.attempts, limit);
                act.end(RunEnd::Failed(failure, act.attempt()), ctx)
            }),
        );
    }
}

/// The store reads that hints on the bus asked for: at most one of each
/// kind in flight, and what came during it read next.
#[derive(Default)]
struct Reads {
    /// The inbox is being read past `max_seq`.
    events: bool,
    /// An event hint came during that read.
    events_again: bool,
    /// Sub-tasks are being read.
    children: bool,
    /// Sub-tasks said to have ended, to read next.
    children_hinted: HashSet<uuid::Uuid>,
    /// The task's cancel request is being read.
    cancel: bool,
    /// A cancel hint came during that read.
    cancel_again: bool,
}

impl Actor for TaskActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.register(0, ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if self.registered {
            self.env.bus.unregister(Address::task(self.task.id));
        }
        self.executor.do_send(TaskDone {
            task_id: self.task.id,
            stage: Stage::Stopped,
        });
    }
}

impl Handler<Deliver<Msg>> for TaskActor {
    type Result = ();

    fn handle(&mut self, Deliver(env): Deliver<Msg>, ctx: &mut Self::Context) {
        // An envelope is a hint, never a fact: each kind makes the actor
        // read the store, and only what the store holds reaches the run.
        match env.body {
            // Its name and payload are not used. A `seq` this actor holds
            // already needs no read (every event up to `max_seq` is here).
            Msg::TaskEvent { task_id, seq, .. } if task_id == self.task.id => {
                if seq > self.max_seq {
                    self.read_events(ctx);
                }
            }
            Msg::CancelTask { task_id } if task_id == self.task.id => {
                self.read_cancel(ctx);
            }
            // Only the sub-task's id is used: its row says whether it is
            // this task's and final.
            Msg::TaskFinished { task } if task.parent_id == Some(self.task.id) => {
                self.reads.children_hinted.insert(task.id);
                self.read_children(ctx);
            }
            Msg::WatchTask { task_id, watcher } if task_id == self.task.id => {
                let mut f = self.shared.followers();
                if !f.watchers.contains(&watcher) {
                    if let Some(last) = &f.last {
                        self.env.bus.tell(envelope(
                            self.env.me.clone(),
                            watcher.clone(),
                            &last.trace_id,
                            Msg::TaskChanged {
                                task: Box::new(last.clone()),
                            },
                        ));
                    }
                    f.watchers.push(watcher);
                }
            }
            other => {
                tracing::debug!(parent: &self.span(), msg = ?other, "message not for this task; ignored");
            }
        }
    }
}

impl Handler<Suspend> for TaskActor {
    type Result = ();

    /// The run waits for what has not come: it is dropped here, and its
    /// end decided like any other (a suspension, see `suspend`).
    fn handle(&mut self, msg: Suspend, ctx: &mut Self::Context) {
        if self.ending || self.run.is_none() {
            return;
        }
        self.drop_run(ctx);
        if let Some(h) = self.timeout.take() {
            ctx.cancel_future(h);
        }
        let deadline = self.deadline;
        self.end(
            RunEnd::Waits {
                wait: msg.0,
                deadline,
            },
            ctx,
        );
    }
}

impl Handler<Abort> for TaskActor {
    type Result = ();

    fn handle(&mut self, msg: Abort, ctx: &mut Self::Context) {
        self.drop_run(ctx);
        if msg.hand_back && !self.ending {
            self.end(RunEnd::Interrupted("the executor is stopping".into()), ctx);
        } else {
            self.ending = true;
            ctx.stop();
        }
    }
}
