//! Claiming: how work reaches this executor and becomes task actors.
//!
//! Every claim is a pull from the store ([`Store::claim`](crate::Store::claim)):
//! a `start_task` only says that one of this executor's queues has work,
//! so priorities and queue limits hold whatever order messages arrive in,
//! and a lost or duplicated message changes nothing.
//!
//! A hint is answered by the next pull. Should that pull fill every slot
//! (there may be more work than this executor took), the hints it answered
//! are passed on to the pool: by then this executor has left it, so they
//! reach an executor with room instead of waiting for a slot here.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use actix::prelude::*;

use courier_bus::Envelope;

use super::{ExecutorActor, Job, Limits};
use crate::calls::detached;
use crate::protocol::Msg;
use uuid::Uuid;

/// The first and the last wait before a missed hint is pulled for again
/// (see [`ExecutorActor::look_again`]).
const LOOK_AGAIN_FIRST: Duration = Duration::from_millis(10);
const LOOK_AGAIN_LAST: Duration = Duration::from_millis(640);

/// A `start_task` or `queue_changed` waiting for the pull that answers it.
pub(super) type Hint = Envelope<Msg>;

/// The claims' part of an executor's state.
pub(super) struct Claims {
    /// Slots of claims in flight; they count against capacity.
    pub(super) claiming: u32,
    /// Whether this executor is a member of its queues' pools now: only
    /// while it has a free slot, so that a full executor lets `start_task`
    /// go to another one instead of taking it and declining.
    pub(super) in_pools: bool,
    /// `start_task` hints the next pull answers.
    pub(super) hints: Vec<Hint>,
    /// Whether its queues had limits at the last full claim.
    pub(super) limits: Limits,
    /// A pull asked for later (a rate limit's next token), and when.
    pub(super) pull_later: Option<(Instant, SpawnHandle)>,
    /// How long until a hinted task the last pull did not take is pulled
    /// for again (see [`ExecutorActor::look_again`]); zero while none is
    /// missed.
    pub(super) look_again: Duration,
}

impl Claims {
    /// A new executor's: in its pools, its queues' limits not looked at.
    pub(super) fn new() -> Self {
        Claims {
            claiming: 0,
            in_pools: true,
            hints: Vec::new(),
            limits: Limits::Unknown,
            pull_later: None,
            look_again: Duration::ZERO,
        }
    }
}

impl ExecutorActor {
    /// A hint arrived for one of this executor's queues: pull.
    pub(super) fn hinted(&mut self, hint: Hint, ctx: &mut Context<Self>) {
        self.claims.hints.push(hint);
        self.jobs.want(Job::Pull);
        self.pull(ctx);
    }

    /// Tells the transports that the hints are done with (a transport that
    /// holds a message until then, AMQP, acknowledges it now) and sends
    /// them on to their pools, for an executor with room: one of each kind
    /// a pool, since a hint only says that the pool has work (or that a
    /// queue's settings changed) and the executor it reaches claims up to
    /// all its free slots (under a crowd of creates this executor held
    /// thousands of hints between two pulls, and passing each on filled the
    /// bus's mailbox, BENCHMARKS.md "Overload"). A `queue_changed` is never
    /// folded into a `start_task`: the executor it reaches must learn of a
    /// new limit.
    pub(super) fn pass_on(&mut self, hints: Vec<Hint>) {
        let mut sent = std::collections::HashSet::new();
        for h in hints {
            self.bus.settle(h.id, true);
            if !sent.insert((h.to.clone(), std::mem::discriminant(&h.body))) {
                continue;
            }
            let again = Envelope::new(self.identity.address.clone(), h.to, h.body);
            let again = match h.traceparent {
                Some(tp) => again.traced(tp),
                None => again,
            };
            self.bus.tell(match h.correlation_id {
                Some(id) => again.correlate(id),
                None => again,
            });
        }
    }

    /// Claims from this executor's queues, up to its free slots, if a pull
    /// is wanted and none is running.
    pub(super) fn pull(&mut self, ctx: &mut Context<Self>) {
        let free = self.free_slots();
        if free == 0 {
            if self.room() == 0 {
                // Full (or stopping): what was hinted goes to others.
                let hints = std::mem::take(&mut self.claims.hints);
                self.pass_on(hints);
            }
            // Otherwise a pull is in flight; the hints wait for the next.
            return;
        }
        if !self.jobs.is_wanted(Job::Pull) || !self.jobs.start(Job::Pull) {
            return;
        }
        self.claims.claiming += free;
        let hints = std::mem::take(&mut self.claims.hints);
        let store = self.store.clone();
        let executor_id = self.identity.id.clone();
        let claimed_as = executor_id.clone();
        let queues = self.config.queues.clone();
        let kinds = self.kinds.clone();
        // While its queues had no limits at the last look, a claim is one
        // statement; the full claim looks again (and enforces what it finds)
        // once a sweep, or when a queue's settings changed.
        let unlimited = self.claims.limits == Limits::None;
        ctx.spawn(
            detached(async move {
                if unlimited {
                    let tasks = store
                        .claim_unlimited(&executor_id, &queues, &kinds, free)
                        .await?;
                    Ok(courier_store::Claimed {
                        tasks,
                        retry_in: None,
                        limited: false,
                    })
                } else {
                    store.claim(&executor_id, &queues, &kinds, free).await
                }
            })
            .into_actor(self)
            .map(move |res, act, ctx| {
                act.jobs.end(Job::Pull);
                if act.phase == super::Phase::CutOff || act.identity.id != claimed_as {
                    // Claimed under an identity whose lease ran out (or
                    // that was left since): run none of it; the tasks go
                    // back when that identity is declared dead.
                    act.claims.claiming -= free;
                    for h in hints {
                        act.bus.settle(h.id, false);
                    }
                    act.jobs.want(Job::Pull);
                    return;
                }
                if act.is_stopping() {
                    act.pass_on(hints);
                    act.give_back(res.map(|c| c.tasks).unwrap_or_default(), free, ctx);
                    return;
                }
                act.claims.claiming -= free;
                match res {
                    Ok(claimed) => {
                        if act.claims.limits == Limits::Unknown || claimed.limited {
                            act.claims.limits = if claimed.limited {
                                Limits::Some
                            } else {
                                Limits::None
                            };
                        }
                        let full = claimed.tasks.len() as u32 == free;
                        let taken: HashSet<Uuid> = claimed.tasks.iter().map(|t| t.id).collect();
                        if !claimed.tasks.is_empty() {
                            tracing::debug!(n = claimed.tasks.len(), "claimed tasks");
                            crate::metrics::metrics().claimed(claimed.tasks.len());
                        }
                        for t in claimed.tasks {
                            act.launch(t, ctx);
                        }
                        // Out of the pools first if now full, so hints
                        // passed on below do not come straight back.
                        act.update_membership(ctx);
                        if let Some(wait) = claimed.retry_in {
                            act.pull_after(wait, ctx);
                        }
                        if full {
                            // Perhaps more where these came from: pull
                            // again, or, with no room left, let the
                            // hints find an executor that has some.
                            act.jobs.want(Job::Pull);
                            if act.room() == 0 {
                                act.pass_on(hints);
                            } else {
                                act.claims.hints.extend(hints);
                            }
                        } else {
                            let (missed, answered): (Vec<Hint>, Vec<Hint>) =
                                hints.into_iter().partition(|h| act.missed(h, &taken));
                            for h in answered {
                                act.bus.settle(h.id, true);
                            }
                            if !missed.is_empty() {
                                act.look_again(missed, ctx);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "claiming tasks failed; the sweep will retry");
                        act.jobs.want(Job::Pull);
                        // Offered again (AMQP), to this executor or another.
                        for h in hints {
                            act.bus.settle(h.id, false);
                        }
                    }
                }
                act.update_membership(ctx);
                act.pull(ctx);
            }),
        );
    }

    /// Hands back what a claim took as a stop began, then goes on with the
    /// stop: the claim's slots count as taken until then.
    fn give_back(&mut self, tasks: Vec<courier_store::Task>, slots: u32, ctx: &mut Context<Self>) {
        let store = self.store.clone();
        let executor_id = self.identity.id.clone();
        ctx.spawn(
            detached(async move {
                for t in tasks {
                    let fence = courier_store::Fence {
                        task_id: t.id,
                        executor_id: executor_id.clone(),
                        epoch: t.epoch,
                    };
                    if let Err(e) = store.hand_back(&fence).await {
                        tracing::warn!(task_id = %t.id, error = %e, "handing back a task claimed as the executor stopped failed; it is released when this executor is found stopped");
                    }
                }
            })
            .into_actor(self)
            .map(move |(), act, ctx| {
                act.claims.claiming -= slots;
                act.wind_down(ctx);
            }),
        );
    }

    /// Pulls again in `wait` (a rate limit's next token), unless a pull is
    /// set for sooner already.
    /// Whether `hint` named a task of a kind run here that the pull did
    /// not take.
    fn missed(&self, hint: &Hint, taken: &HashSet<Uuid>) -> bool {
        matches!(&hint.body, Msg::StartTask { task_id, kind, .. }
            if !taken.contains(task_id) && self.kinds.contains(kind))
    }

    /// Hinted tasks that a pull which had room for them did not take. Some
    /// other executor took them, or the claim skipped them because another
    /// transaction held their rows (`SKIP LOCKED` on PostgreSQL), such as
    /// a watch being registered. Those still `pending` are pulled for
    /// again a little later, at 10, 20, 40 … 640 ms, rather than left for
    /// the sweep: fan-outs and sync waits waited 1 to 2 s for it (issue
    /// 24). Past that the sweep has them, as before.
    fn look_again(&mut self, missed: Vec<Hint>, ctx: &mut Context<Self>) {
        let ids: Vec<Uuid> = missed
            .iter()
            .filter_map(|h| match &h.body {
                Msg::StartTask { task_id, .. } => Some(*task_id),
                _ => None,
            })
            .collect();
        let store = self.store.clone();
        ctx.spawn(
            detached(async move { store.pending_of(&ids).await })
                .into_actor(self)
                .map(move |res, act, ctx| {
                    let pending: HashSet<Uuid> =
                        res.unwrap_or_default().into_iter().collect();
                    let wait = (act.claims.look_again * 2).max(LOOK_AGAIN_FIRST);
                    let again = !pending.is_empty() && wait <= LOOK_AGAIN_LAST;
                    act.claims.look_again = if again { wait } else { Duration::ZERO };
                    for h in missed {
                        let named = matches!(&h.body, Msg::StartTask { task_id, .. } if pending.contains(task_id));
                        if again && named {
                            act.claims.hints.push(h);
                        } else {
                            act.bus.settle(h.id, true);
                        }
                    }
                    if again {
                        act.pull_after(wait, ctx);
                    }
                }),
        );
    }

    fn pull_after(&mut self, wait: Duration, ctx: &mut Context<Self>) {
        let at = Instant::now() + wait;
        if let Some((when, handle)) = self.claims.pull_later {
            if when <= at {
                return;
            }
            ctx.cancel_future(handle);
        }
        let handle = ctx.run_later(wait, |act, ctx| {
            act.claims.pull_later = None;
            act.jobs.want(Job::Pull);
            act.pull(ctx);
        });
        self.claims.pull_later = Some((at, handle));
    }
}

/// Creates a task and, when this executor has a slot for it now, starts it
/// here at once: the task is inserted already claimed (an *eager start*,
/// [`Store::create_task_started`](courier_store::Store::create_task_started),
/// after Temporal's eager workflow start), which saves a sync-wait request
/// the claim's statement and commit and the hop of a `start_task` (issue
/// 24, point 6).
///
/// The executor takes it when it serves now (not cut off, not stopping),
/// runs the kind, serves the queue, did not find limits on its queues at
/// its last look, has a free slot and no hint waiting for a pull; and the task is due now
/// with no idempotency key. Otherwise the answer is `None`
/// and the caller creates the task as usual. The store declines too (the
/// task comes back `pending`) when the queue has work pending ahead of it
/// or a limit was set since the last look.
///
/// The create runs in this actor's context, not the caller's: a caller
/// that goes away (an HTTP request dropped) cannot leave a task inserted
/// `running` here that no actor runs.
#[derive(Message)]
#[rtype(result = "Started")]
pub(crate) struct CreateStarted {
    pub insert: std::sync::Arc<courier_store::TaskInsert>,
    pub watcher: Option<String>,
}

/// The answer to [`CreateStarted`]: `None` when not taken here (the task
/// is not created); else the create's result, the task `running` here if
/// the store allowed it, else as `create_task_watched` writes it, to be
/// announced by the caller.
pub(crate) type Started = Option<crate::error::Result<(courier_store::Task, bool)>>;

impl Handler<CreateStarted> for ExecutorActor {
    type Result = ResponseActFuture<Self, Started>;

    fn handle(&mut self, msg: CreateStarted, _: &mut Context<Self>) -> Self::Result {
        let t = &msg.insert;
        let takes = self.phase == super::Phase::Serving
            // Unknown (none looked at since the last sweep) is worth a
            // try: the insert's own guard sees a limit or a pause.
            && self.claims.limits != Limits::Some
            && self.claims.hints.is_empty()
            && self.free_slots() > 0
            && self.kinds.contains(&t.kind)
            && self.config.queues.contains(&t.options.queue)
            && t.idempotency_key.is_none()
            && t.options.run_at.is_none();
        if !takes {
            return Box::pin(actix::fut::ready(None));
        }
        self.claims.claiming += 1;
        let store = self.store.clone();
        let claimed_as = self.identity.id.clone();
        let executor_id = claimed_as.clone();
        Box::pin(
            detached(async move {
                store
                    .create_task_started(&msg.insert, msg.watcher.as_deref(), &executor_id)
                    .await
            })
            .into_actor(self)
            .map(move |res, act, ctx| {
                let started = match &res {
                    Ok((task, true)) if task.state == courier_store::TaskState::Running => {
                        Some(task.clone())
                    }
                    _ => None,
                };
                match started {
                    // Claimed under an identity given up since: the task
                    // goes back when that identity is declared dead, as a
                    // pull's would.
                    Some(_)
                        if act.phase == super::Phase::CutOff || act.identity.id != claimed_as =>
                    {
                        act.claims.claiming -= 1;
                    }
                    Some(task) if act.is_stopping() => act.give_back(vec![task], 1, ctx),
                    Some(task) => {
                        act.claims.claiming -= 1;
                        tracing::debug!(task_id = %task.id, "created and started here");
                        crate::metrics::metrics().claimed(1);
                        act.launch(task, ctx);
                    }
                    None => {
                        act.claims.claiming -= 1;
                        if act.is_stopping() {
                            act.wind_down(ctx);
                        }
                    }
                }
                if !act.is_stopping() {
                    act.update_membership(ctx);
                    act.pull(ctx);
                }
                Some(res.map_err(Into::into))
            }),
        )
    }
}
