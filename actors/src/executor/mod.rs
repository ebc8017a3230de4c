//! The executor actor: claims tasks, runs each as a [`TaskActor`], and keeps
//! the promise that nothing committed is forgotten.
//!
//! An executor serves queues (`pool/<queue>` for each) and runs kinds. It
//! claims work in one way, a **pull**: one statement takes up to its free
//! slots from its queues, highest priority first, within each queue's
//! deployment-wide limits ([`Store::claim`]). What makes it pull:
//!
//! - a `start_task` on one of its pools (a task was committed, or became
//!   due): a hint, not an order; the pull may take other tasks that should
//!   start first;
//! - a slot freeing after it declined work, the sweep, a rate limit's next
//!   token (the claim says when).
//!
//! **Timers.** A task that waits for its `run_at` (a delay, a retry) is
//! `scheduled` in the store. The executor keeps one timer, for the earliest
//! due time it knows: told by `task_scheduled` messages on its pools, and
//! read from the store's due index at every sweep. When it fires, the
//! executor makes what is due `pending` and announces it on its queue's
//! pool ([`Store::promote_due`]).
//!
//! The periodic sweep also: declares executors dead whose heartbeat is older
//! than `dead_after` (or, on this host, whose process is gone: see [`crate::process`]) and puts their
//! tasks back to `pending`; re-sends events that stayed undelivered; and
//! re-sends sub-task reports to suspended parents, in case one was lost.
//! Retention deletes expired finished task trees now and then, in small
//! batches, off the path of any task.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use actix::prelude::*;
use uuid::Uuid;

use courier_bus::{Address, Deliver};

use crate::calls::detached;
use crate::protocol::{Bus, Msg};
use crate::task::kind::Registry;
use crate::task::replay::ReplayCache;
pub use crate::task::replay::ReplayCacheConfig;
use crate::task::signals::{Abort, Stage, TaskDone};
use crate::task::{RunEnv, TaskActor};
use courier_store::Task;
use courier_store::{Offer, Retention, Store};

mod claim;
pub(crate) use claim::CreateStarted;
mod identity;
mod retention;
mod sweep;
mod timers;

/// Tuning of an executor.
#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    /// Runs at once. A suspended task is in no executor's memory and takes
    /// no slot, so parents waiting for sub-tasks never starve them.
    pub capacity: u32,
    /// How often the executor records that it is alive.
    pub heartbeat_interval: Duration,
    /// An executor silent for this long is declared dead and its tasks taken over.
    pub dead_after: Duration,
    /// How often the recovery sweep runs.
    pub sweep_interval: Duration,
    /// An event still undelivered after this long is sent again.
    pub redeliver_after: Duration,
    /// A task whose executor died while running it this many times is
    /// failed instead of run again (a poison task).
    pub max_takeovers: u32,
    /// The queues this executor serves (default: `default`).
    pub queues: Vec<String>,
    /// How long finished tasks are kept (default
    /// `succeeded=7d,cancelled=7d,failed=30d,executors=7d`).
    pub retention: Retention,
    /// How often retention looks for expired tasks (with a random tenth
    /// added, so executors started together do not all go at once).
    pub retention_interval: Duration,
    /// The bounds of the replay cache: what runs of suspended tasks read,
    /// kept so that their next run here reads only what is new
    /// ([`crate::task::replay`]; default 10,000 tasks, 64 MiB).
    pub replay_cache: ReplayCacheConfig,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            capacity: 256,
            heartbeat_interval: Duration::from_secs(2),
            dead_after: Duration::from_secs(8),
            sweep_interval: Duration::from_secs(2),
            redeliver_after: Duration::from_secs(2),
            max_takeovers: 5,
            queues: vec![courier_store::DEFAULT_QUEUE.to_string()],
            retention: Retention::default(),
            retention_interval: Duration::from_secs(60),
            replay_cache: ReplayCacheConfig::default(),
        }
    }
}

/// What an executor with `registry` and `cfg` registers that it runs.
pub(crate) fn offer_of(registry: &Registry, cfg: &ExecutorConfig) -> Offer {
    Offer {
        kinds: registry.names(),
        queues: cfg.queues.clone(),
        kind_options: registry.all_defaults(),
    }
}

/// Where an executor is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Registered and working.
    Serving,
    /// The lease ran out (no heartbeat renewed for three quarters of
    /// `dead_after`: a cut link, a database that does not answer): every
    /// run was dropped and nothing is claimed. When the store answers
    /// again the executor retires this identity and registers anew.
    CutOff,
    /// A stop was asked for: nothing new is claimed, runs are ending.
    Stopping,
}

/// What the last full claim saw of the limits of this executor's queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Limits {
    /// Not looked at since the last sweep or queue change: the next claim
    /// is the full one.
    Unknown,
    /// None of the queues had a limit or a pause: claims are one statement.
    None,
    /// Some had: every claim is the full one.
    Some,
}

/// The executor's background jobs. Each runs one at a time; asking for one
/// while it runs makes it run again when it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Job {
    /// Claim pending tasks up to the free slots.
    Pull,
    /// The recovery sweep.
    Sweep,
    /// Record that this executor is alive.
    Heartbeat,
    /// Make due `scheduled` tasks `pending`.
    Promote,
    /// Delete expired finished tasks.
    Retention,
    /// Give up an identity whose lease ran out (see `identity`).
    Retire,
}

/// Which [`Job`]s run now and which are wanted (again).
#[derive(Clone, Copy, Debug, Default)]
struct Jobs {
    running: u8,
    wanted: u8,
}

impl Jobs {
    fn bit(j: Job) -> u8 {
        1 << (j as u8)
    }
    fn wanting(mut self, j: Job) -> Self {
        self.want(j);
        self
    }
    /// Asks for `j` (again).
    fn want(&mut self, j: Job) {
        self.wanted |= Self::bit(j);
    }
    fn is_wanted(&self, j: Job) -> bool {
        self.wanted & Self::bit(j) != 0
    }
    fn is_running(&self, j: Job) -> bool {
        self.running & Self::bit(j) != 0
    }
    /// Marks `j` running and no longer wanted; false if it runs already.
    fn start(&mut self, j: Job) -> bool {
        if self.is_running(j) {
            return false;
        }
        self.running |= Self::bit(j);
        self.wanted &= !Self::bit(j);
        true
    }
    /// Marks `j` ended.
    fn end(&mut self, j: Job) {
        self.running &= !Self::bit(j);
    }
}

pub struct ExecutorActor {
    /// Who this executor is in the store, and its lease.
    identity: identity::Identity,
    /// Where the executor is in its life.
    phase: Phase,
    config: ExecutorConfig,
    registry: Registry,
    kinds: Vec<String>,
    store: Store,
    bus: Bus,
    running: HashMap<Uuid, Addr<TaskActor>>,
    /// What every run started here is given (see [`RunEnv`]: the replay
    /// cache and the kinds run here among it); made anew with the
    /// executor's id.
    run_env: std::sync::Arc<RunEnv>,
    /// Of `running`, the actors whose run has returned and whose end is
    /// being written.
    ending: HashSet<Uuid>,
    /// The background jobs running now, and those asked for again.
    jobs: Jobs,
    /// The claims' own state: slots being claimed, pool membership, hints
    /// to answer, what the queues' limits were, pulls asked for later.
    claims: claim::Claims,
    /// The one timer, for the earliest due time known.
    timer: timers::Timer,
    /// Retention's pass now running.
    retention: retention::Pass,
    /// Set once a stop was asked for.
    stop: Option<StopMode>,
    /// Told this executor's id (which may have changed since it started)
    /// when the last task actor has stopped.
    drained: Vec<tokio::sync::oneshot::Sender<String>>,
}

impl ExecutorActor {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: String,
        node: String,
        host: String,
        config: ExecutorConfig,
        registry: Registry,
        store: Store,
        bus: Bus,
        replay: std::sync::Arc<ReplayCache>,
    ) -> Self {
        let kinds = registry.names();
        let local_kinds = std::sync::Arc::new(registry.all_defaults());
        let run_env = std::sync::Arc::new(RunEnv {
            store: store.clone(),
            bus: bus.clone(),
            executor_id: id.clone(),
            me: Address::Executor(id.clone()),
            local_kinds,
            cache: replay,
        });
        ExecutorActor {
            run_env,
            identity: identity::Identity {
                address: Address::Executor(id.clone()),
                id,
                node,
                host,
                last_heartbeat: std::time::Instant::now(),
            },
            phase: Phase::Serving,
            config,
            registry,
            kinds,
            store,
            bus,
            running: HashMap::new(),
            ending: HashSet::new(),
            // Work may be waiting from before this executor started.
            jobs: Jobs::default().wanting(Job::Pull),
            claims: claim::Claims::new(),
            timer: timers::Timer::default(),
            retention: retention::Pass::default(),
            stop: None,
            drained: Vec::new(),
        }
    }

    /// Whether `msg` (a `start_task` or `queue_changed`) names a queue
    /// this executor serves.
    fn serves(&self, msg: &Msg) -> bool {
        match msg {
            Msg::StartTask { queue, .. } | Msg::QueueChanged { queue } => {
                self.config.queues.contains(queue)
            }
            _ => false,
        }
    }

    fn is_stopping(&self) -> bool {
        self.phase == Phase::Stopping
    }

    /// Slots not taken by a run (a suspended task is in no executor's
    /// memory): what decides whether this executor is a member of its pools.
    ///
    /// A run whose code has returned frees its slot while its end is
    /// written, so the next run need not wait for that commit (River's and
    /// Oban's async completion do the same). The ends being written are a
    /// bounded backlog: at most `capacity` of them, beyond which no slot
    /// frees until the writes catch up, so a slow database slows the
    /// claims rather than growing memory.
    fn room(&self) -> u32 {
        if self.phase != Phase::Serving {
            return 0;
        }
        room(
            self.config.capacity,
            self.running.len() as u32,
            self.ending.len() as u32,
        )
    }

    /// Slots a new claim may fill: the room less the claims in flight.
    fn free_slots(&self) -> u32 {
        self.room().saturating_sub(self.claims.claiming)
    }

    /// Joins or leaves the pools as slots fill and free.
    fn update_membership(&mut self, ctx: &mut Context<Self>) {
        // Claims in flight do not count: an executor that left its pools at
        // every pull would churn its broker consumers; hints that come
        // during a pull wait for the next one (or go on, see `claim`).
        let want = self.room() > 0;
        if want == self.claims.in_pools {
            return;
        }
        self.claims.in_pools = want;
        let recipient = ctx.address().recipient::<Deliver<Msg>>();
        for q in &self.config.queues {
            if want {
                self.bus.join_pool_nowait(
                    q.clone(),
                    self.identity.address.clone(),
                    recipient.clone(),
                );
            } else {
                self.bus
                    .leave_pool(q.clone(), self.identity.address.clone());
            }
        }
        if !want {
            // Tasks created while we are out of the pools are found in the
            // store when a slot frees.
            self.jobs.want(Job::Pull);
        }
    }

    fn launch(&mut self, task: Task, ctx: &mut Context<Self>) {
        let Some(kind) = self.registry.get(&task.kind) else {
            // Claimed only for kinds we run, so this is a bug; hand it back.
            tracing::error!(task_id = %task.id, kind = %task.kind, "claimed a task of a kind not registered here");
            return;
        };
        let id = task.id;
        if self.running.contains_key(&id) {
            // The previous run of this task here is still stopping (it was
            // handed back and claimed again at once): give this claim back
            // rather than run the task twice in one process.
            let store = self.store.clone();
            let fence = courier_store::Fence {
                task_id: id,
                executor_id: self.identity.id.clone(),
                epoch: task.epoch,
            };
            ctx.spawn(
                detached(async move {
                    let _ = store.hand_back(&fence).await;
                })
                .into_actor(self),
            );
            return;
        }
        let m = crate::metrics::metrics();
        if let Some(since) = task.pending_since {
            // The claim set `updated_at` to its own time.
            let waited = task.updated_at - since;
            m.waited(
                &task.queue,
                waited.num_microseconds().unwrap_or(0) as f64 / 1e6,
            );
        }
        if task.epoch == 1 {
            if let Some(started) = task.started_at {
                m.dispatched(
                    (started - task.created_at).num_microseconds().unwrap_or(0) as f64 / 1e6,
                );
            }
        }
        m.running_add(1);
        let actor =
            TaskActor::new(task, kind, self.run_env.clone(), ctx.address().recipient()).start();
        self.running.insert(id, actor);
        self.update_membership(ctx);
    }
}

/// Free slots of an executor of `capacity` holding `actors` task actors, of
/// which `ending` have run and are writing their end: a slot for every run
/// fewer than `capacity`, and no more than keeps the actors (runs and ends
/// being written) within twice the capacity.
fn room(capacity: u32, actors: u32, ending: u32) -> u32 {
    let runs = actors.saturating_sub(ending);
    capacity
        .saturating_sub(runs)
        .min((2 * capacity).saturating_sub(actors))
}

impl Actor for ExecutorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let bus = self.bus.clone();
        let me = self.identity.address.clone();
        let recipient = ctx.address().recipient::<Deliver<crate::protocol::Msg>>();
        let queues = self.config.queues.clone();
        ctx.wait(
            async move {
                if let Err(e) = bus.register(me.clone(), recipient.clone()).await {
                    tracing::error!(error = %e, "executor address taken");
                }
                for q in queues {
                    let _ = bus.join_pool(q, me.clone(), recipient.clone()).await;
                }
            }
            .into_actor(self),
        );
        ctx.run_interval(self.config.heartbeat_interval, |act, ctx| {
            act.heartbeat(ctx)
        });
        // The lease is checked on its own timer, so a heartbeat that hangs
        // (a cut link) cannot keep runs going past it: at least eight
        // times per `dead_after`, the margin between the lease and the
        // takeover being a quarter of it.
        let every = self
            .config
            .heartbeat_interval
            .min(self.config.dead_after / 8)
            .max(std::time::Duration::from_millis(10));
        ctx.run_interval(every, |act, ctx| act.check_lease(ctx));
        ctx.run_interval(self.config.sweep_interval, |act, ctx| act.sweep(ctx));
        self.schedule_retention(ctx);
        // The recovery pass: whatever a previous run left behind.
        self.sweep(ctx);
        for (kind, defaults) in self.registry.all_defaults() {
            let queue = defaults
                .queue
                .unwrap_or_else(|| courier_store::DEFAULT_QUEUE.to_string());
            if !self.config.queues.contains(&queue) {
                tracing::warn!(%kind, %queue, queues = ?self.config.queues, "this executor runs a kind whose default queue it does not serve: its tasks wait for an executor that serves it");
            }
        }
        tracing::info!(executor = %self.identity.id, kinds = ?self.kinds, queues = ?self.config.queues, capacity = self.config.capacity, "executor started");
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        for q in &self.config.queues {
            self.bus
                .leave_pool(q.clone(), self.identity.address.clone());
        }
        self.bus.unregister(self.identity.address.clone());
        for tx in self.drained.drain(..) {
            let _ = tx.send(self.identity.id.clone());
        }
    }
}

impl Handler<Deliver<Msg>> for ExecutorActor {
    type Result = ();

    fn handle(&mut self, Deliver(env): Deliver<Msg>, ctx: &mut Self::Context) {
        match env.body {
            Msg::StartTask { ref kind, .. }
                if self.serves(&env.body) && !self.kinds.contains(kind) =>
            {
                // A kind run elsewhere in this queue: on to the next member.
                self.bus.settle(env.id, true);
                if let Some(again) =
                    crate::protocol::pass_on_foreign(self.identity.address.clone(), &env)
                {
                    self.bus.tell(again);
                }
            }
            Msg::StartTask { .. } | Msg::QueueChanged { .. } if self.serves(&env.body) => {
                if matches!(env.body, Msg::QueueChanged { .. }) {
                    self.claims.limits = Limits::Unknown;
                }
                self.hinted(env, ctx)
            }
            Msg::TaskScheduled { queue, run_at, .. } if self.config.queues.contains(&queue) => {
                self.bus.settle(env.id, true);
                self.arm_due(run_at, ctx);
            }
            other => {
                tracing::debug!(msg = ?other, "executor ignores this message");
                self.bus.settle(env.id, true);
            }
        }
    }
}

impl Handler<TaskDone> for ExecutorActor {
    type Result = ();

    fn handle(&mut self, msg: TaskDone, ctx: &mut Self::Context) {
        let id = msg.task_id;
        match msg.stage {
            Stage::Ran => {
                if !self.running.contains_key(&id) || !self.ending.insert(id) {
                    return;
                }
                crate::metrics::metrics().running_add(-1);
            }
            Stage::Stopped => {
                let ran = self.ending.remove(&id);
                if self.running.remove(&id).is_some() && !ran {
                    crate::metrics::metrics().running_add(-1);
                }
            }
        }
        if self.is_stopping() {
            self.wind_down(ctx);
            return;
        }
        self.update_membership(ctx);
        self.pull(ctx);
    }
}

/// Stops the executor. `hand_back: true` is the clean stop: every run is
/// stopped and its task put back to `pending` at once, then the executor is
/// recorded as stopped. `false` drops everything without a write, as a crash
/// would (for tests of recovery).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Stop {
    pub hand_back: bool,
    pub done: tokio::sync::oneshot::Sender<String>,
}

impl Handler<Stop> for ExecutorActor {
    type Result = ();

    fn handle(&mut self, msg: Stop, ctx: &mut Self::Context) {
        self.phase = Phase::Stopping;
        self.stop = Some(StopMode {
            hand_back: msg.hand_back,
            aborted: false,
        });
        self.claims.in_pools = false;
        self.drained.push(msg.done);
        for q in &self.config.queues {
            self.bus
                .leave_pool(q.clone(), self.identity.address.clone());
        }
        // Nothing more is claimed here: what waits goes to other executors.
        let hints = std::mem::take(&mut self.claims.hints);
        self.pass_on(hints);
        self.wind_down(ctx);
    }
}

/// How a stop asked for goes on.
#[derive(Clone, Copy, Debug)]
struct StopMode {
    hand_back: bool,
    /// Whether the runs have been told to stop.
    aborted: bool,
}

impl ExecutorActor {
    /// The next step of a stop: wait for a claim in flight (it could
    /// otherwise take a task a run of ours just handed back, and claim it
    /// once more for nothing), then stop the runs, then the actor once the
    /// last has ended.
    fn wind_down(&mut self, ctx: &mut Context<Self>) {
        let Some(mode) = self.stop.as_mut() else {
            return;
        };
        if self.claims.claiming > 0 {
            return;
        }
        if !mode.aborted {
            mode.aborted = true;
            let hand_back = mode.hand_back;
            for a in self.running.values() {
                a.do_send(Abort { hand_back });
            }
        }
        if self.running.is_empty() {
            ctx.stop();
        }
    }
}

/// The shared part of an executor that the runtime keeps.
pub(crate) struct ExecutorHandle {
    pub id: String,
    pub addr: Addr<ExecutorActor>,
    pub replay: std::sync::Arc<ReplayCache>,
}

impl ExecutorHandle {
    /// Stops the executor; returns its id at the end (a new one if it was
    /// declared dead and registered again), or `None` if it had stopped.
    pub async fn stop(&self, hand_back: bool) -> Option<String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self
            .addr
            .send(Stop {
                hand_back,
                done: tx,
            })
            .await
            .is_ok()
        {
            return rx.await.ok();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::room;

    #[test]
    fn a_run_that_has_returned_frees_its_slot_while_its_end_is_written() {
        // 4 slots, 4 runs: full.
        assert_eq!(room(4, 4, 0), 0);
        // Two of them have returned and write their ends: two slots free.
        assert_eq!(room(4, 4, 2), 2);
        // Nothing held: every slot.
        assert_eq!(room(4, 0, 0), 4);
    }

    #[test]
    fn ends_being_written_are_a_bounded_backlog() {
        // 4 runs and 4 ends being written: the backlog is full, no slot
        // frees until a write lands, however many runs have returned.
        assert_eq!(room(4, 8, 4), 0);
        assert_eq!(room(4, 7, 4), 1);
        // 6 ends being written, 0 runs: only 2 more actors fit.
        assert_eq!(room(4, 6, 6), 2);
    }
}
