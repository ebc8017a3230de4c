//! The executor actor: claims tasks, runs each as a [`TaskActor`], and keeps
//! the promise that nothing committed is forgotten.
//!
//! Work reaches an executor two ways:
//!
//! - **push**: a `start_task` on `pool/<kind>` for each kind it runs. With a
//!   free slot it claims that task (a conditional update; a duplicate or late
//!   message loses the claim and is dropped).
//! - **pull**: when a slot frees after it declined work, and on every sweep,
//!   it claims the oldest pending tasks of its kinds. This is what recovers
//!   tasks whose `start_task` was lost, and tasks left by a previous run of
//!   the process.
//!
//! The periodic sweep also: declares executors dead whose heartbeat is older
//! than `dead_after` (or, on this host, whose process is gone: see [`crate::process`]) and puts their
//! tasks back to `pending`; re-sends events that stayed undelivered; and
//! re-sends sub-task reports to suspended parents, in case one was lost.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use uuid::Uuid;

use courier_bus::{Address, Deliver};

use crate::error::Result;
use crate::kind::Registry;
use crate::model::{now, Task};
use crate::protocol::{envelope, pool_of, Bus, Msg};
use crate::store::{detached, Store};
use crate::task::{Abort, TaskActor, TaskDone};

/// Tuning of an executor.
#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    /// Tasks run at once (suspended tasks count: they hold memory, not threads).
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
        }
    }
}

pub struct ExecutorActor {
    id: String,
    /// The node this executor belongs to; a new id after being declared
    /// dead keeps it.
    node: String,
    /// When the store last confirmed that this executor is alive.
    last_heartbeat: std::time::Instant,
    /// Runs were dropped because the store has been unreachable for longer
    /// than `dead_after`: another executor may own them by now.
    cut_off: bool,
    address: Address,
    host: String,
    config: ExecutorConfig,
    registry: Registry,
    kinds: Vec<String>,
    store: Store,
    bus: Bus,
    running: HashMap<Uuid, Addr<TaskActor>>,
    /// Tasks of `running` that are suspended: they hold memory, not a slot,
    /// so parents waiting for their sub-tasks never starve those sub-tasks.
    parked: std::collections::HashSet<Uuid>,
    /// Claims in flight; they count against capacity.
    claiming: u32,
    /// Set when work may be waiting in the database (a `start_task` was
    /// declined, or the last pull filled every slot).
    maybe_pending: bool,
    pulling: bool,
    sweeping: bool,
    heartbeating: bool,
    /// Whether this executor is a member of its kinds' pools now: only while
    /// it has a free slot, so that a full executor lets `start_task` go to
    /// another one instead of taking it and declining.
    in_pools: bool,
    stopping: bool,
    /// Waiting for the last task actor to stop.
    /// Told this executor's id (which may have changed since it started)
    /// when the last task actor has stopped.
    drained: Vec<tokio::sync::oneshot::Sender<String>>,
}

impl ExecutorActor {
    pub(crate) fn new(
        id: String,
        node: String,
        host: String,
        config: ExecutorConfig,
        registry: Registry,
        store: Store,
        bus: Bus,
    ) -> Self {
        let kinds = registry.names();
        ExecutorActor {
            address: Address::Executor(id.clone()),
            id,
            node,
            last_heartbeat: std::time::Instant::now(),
            cut_off: false,
            host,
            config,
            registry,
            kinds,
            store,
            bus,
            running: HashMap::new(),
            parked: std::collections::HashSet::new(),
            claiming: 0,
            maybe_pending: true,
            pulling: false,
            sweeping: false,
            heartbeating: false,
            in_pools: true,
            stopping: false,
            drained: Vec::new(),
        }
    }

    fn free_slots(&self) -> u32 {
        if self.stopping {
            return 0;
        }
        let busy = self.running.len().saturating_sub(self.parked.len()) as u32;
        self.config.capacity.saturating_sub(busy + self.claiming)
    }

    /// Joins or leaves the pools as slots fill and free.
    fn update_membership(&mut self, ctx: &mut Context<Self>) {
        let want = !self.stopping && self.free_slots() > 0;
        if want == self.in_pools {
            return;
        }
        self.in_pools = want;
        let recipient = ctx.address().recipient::<Deliver<Msg>>();
        for k in &self.kinds {
            if want {
                self.bus
                    .join_pool_nowait(k.clone(), self.address.clone(), recipient.clone());
            } else {
                self.bus.leave_pool(k.clone(), self.address.clone());
            }
        }
        if !want {
            // Tasks created while we are out of the pools are found in the
            // store when a slot frees.
            self.maybe_pending = true;
        }
    }

    fn launch(&mut self, task: Task, ctx: &mut Context<Self>) {
        let Some(kind) = self.registry.get(&task.kind) else {
            // Claimed only for kinds we run, so this is a bug; hand it back.
            tracing::error!(task_id = %task.id, kind = %task.kind, "claimed a task of a kind not registered here");
            return;
        };
        if self.stopping {
            // Claimed just as the stop began: give it straight back.
            let store = self.store.clone();
            let fence = crate::store::Fence {
                task_id: task.id,
                executor_id: self.id.clone(),
                epoch: task.epoch,
            };
            actix::spawn(async move {
                let _ = store.hand_back(&fence).await;
            });
            return;
        }
        let id = task.id;
        if self.running.contains_key(&id) {
            // The previous run of this task here is still stopping (it was
            // handed back and claimed again at once): give this claim back
            // rather than run the task twice in one process.
            let store = self.store.clone();
            let fence = crate::store::Fence {
                task_id: id,
                executor_id: self.id.clone(),
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
        if task.attempts == 1 {
            if let Some(started) = task.started_at {
                m.dispatched(
                    (started - task.created_at).num_microseconds().unwrap_or(0) as f64 / 1e6,
                );
            }
        }
        m.running_add(1);
        let actor = TaskActor::new(
            task,
            self.id.clone(),
            kind,
            self.store.clone(),
            self.bus.clone(),
            self.kinds.clone(),
            ctx.address().recipient(),
            ctx.address().recipient(),
        )
        .start();
        self.running.insert(id, actor);
        self.update_membership(ctx);
    }

    /// Claims one task named by a `start_task`.
    /// Claims one task named by a `start_task`, then settles the message
    /// (`message`, its envelope id): a transport that holds it until then
    /// (AMQP) acknowledges it only once the claim is committed, or found
    /// needless, and offers it again if the claim failed.
    fn claim_one(&mut self, task_id: Uuid, kind: String, message: Uuid, ctx: &mut Context<Self>) {
        if self.running.contains_key(&task_id) {
            self.bus.settle(message, true);
            return;
        }
        if self.free_slots() == 0 {
            // Full: the task stays pending in the store and is pulled when a
            // slot frees; offering the message again would only spin.
            self.maybe_pending = true;
            self.bus.settle(message, true);
            return;
        }
        self.claiming += 1;
        self.update_membership(ctx);
        let store = self.store.clone();
        let me = self.id.clone();
        ctx.spawn(
            detached(async move { store.claim(task_id, &kind, &me).await })
                .into_actor(self)
                .map(move |res, act, ctx| {
                    act.claiming -= 1;
                    act.update_membership(ctx);
                    match res {
                        Ok(Some(task)) => {
                            act.bus.settle(message, true);
                            act.launch(task, ctx)
                        }
                        // Someone else has it, or it is no longer pending.
                        Ok(None) => act.bus.settle(message, true),
                        Err(e) => {
                            tracing::warn!(%task_id, error = %e, "claim failed; the message is offered again and the sweep retries");
                            act.bus.settle(message, false);
                            act.maybe_pending = true;
                        }
                    }
                }),
        );
    }

    /// Claims the oldest pending tasks, up to the free slots.
    fn pull(&mut self, ctx: &mut Context<Self>) {
        let free = self.free_slots();
        if self.pulling || free == 0 || !self.maybe_pending {
            return;
        }
        self.pulling = true;
        self.claiming += free;
        let store = self.store.clone();
        let me = self.id.clone();
        let kinds = self.kinds.clone();
        ctx.spawn(
            detached(async move { store.claim_pending(&me, &kinds, free).await })
                .into_actor(self)
                .map(move |res, act, ctx| {
                    act.pulling = false;
                    act.claiming -= free;
                    act.update_membership(ctx);
                    match res {
                        Ok(tasks) => {
                            let full = tasks.len() as u32 == free;
                            if !tasks.is_empty() {
                                tracing::debug!(n = tasks.len(), "claimed pending tasks");
                            }
                            for t in tasks {
                                act.launch(t, ctx);
                            }
                            act.maybe_pending = full;
                            if full {
                                act.pull(ctx);
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "claiming pending tasks failed; the sweep will retry"),
                    }
                }),
        );
    }

    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        // One at a time: after a stall (a frozen process, a slow database)
        // the interval's missed ticks must not pile up as queued writes.
        if self.heartbeating {
            return;
        }
        self.heartbeating = true;
        let store = self.store.clone();
        let me = self.id.clone();
        let sent_as = me.clone();
        let running = self.running.len() as i32;
        ctx.spawn(
            detached(async move { store.heartbeat(&me, running).await })
                .into_actor(self)
                .map(move |res, act, ctx| {
                    act.heartbeating = false;
                    if sent_as != act.id {
                        // Sent under an identity this executor has since
                        // left behind: says nothing about the current one.
                        return;
                    }
                    act.heartbeat_done(res, ctx)
                }),
        );
    }

    /// What a heartbeat's answer means for this executor.
    fn heartbeat_done(&mut self, res: Result<bool>, ctx: &mut Context<Self>) {
        match res {
            Ok(true) => {
                self.last_heartbeat = std::time::Instant::now();
                self.cut_off = false;
            }
            Ok(false) if !self.stopping => {
                // Declared dead by another executor: our tasks belong to
                // others now. Drop every run without writing anything,
                // then come back as a new executor.
                tracing::error!(executor = %self.id, "this executor was declared dead; dropping its runs and re-registering");
                self.drop_runs();
                self.reincarnate(ctx);
            }
            Ok(false) => {}
            Err(e) => {
                let (open, idle) = self.store.pool_status();
                tracing::warn!(error = %e, open, idle, "heartbeat failed");
                // Cut off from the store for longer than others wait
                // before taking over: stop the runs now, so that a
                // task never runs here and elsewhere at once. (Their
                // writes would be fenced anyway; their side effects
                // would not.)
                if !self.cut_off && self.last_heartbeat.elapsed() > self.config.dead_after {
                    tracing::error!(executor = %self.id, "cut off from the store past the takeover timeout; dropping runs");
                    self.cut_off = true;
                    self.drop_runs();
                }
            }
        }
    }

    /// Stops every run without a write: the tasks are someone else's now.
    fn drop_runs(&mut self) {
        for (_, a) in self.running.drain() {
            crate::metrics::metrics().running_add(-1);
            a.do_send(Abort { hand_back: false });
        }
        self.parked.clear();
    }

    /// Registers again under a new id, after this one was declared dead:
    /// the process is alive and can keep working, but nothing may be done
    /// under the old identity.
    fn reincarnate(&mut self, ctx: &mut Context<Self>) {
        let suffix = Uuid::now_v7().simple().to_string();
        let new_id = format!("{}-{}", self.node, &suffix[20..]);
        let reg = crate::store::ExecutorRegistration::this_process(
            new_id.clone(),
            self.node.clone(),
            self.host.clone(),
            self.kinds.clone(),
            self.config.capacity,
        );
        let store = self.store.clone();
        ctx.wait(
            detached(async move { store.register_executor(&reg).await })
                .into_actor(self)
                .map(move |res, act, ctx| match res {
                    Ok(()) => {
                        let old = act.address.clone();
                        act.bus.unregister(old.clone());
                        for k in &act.kinds {
                            act.bus.leave_pool(k.clone(), old.clone());
                        }
                        act.id = new_id.clone();
                        act.address = Address::Executor(new_id.clone());
                        act.last_heartbeat = std::time::Instant::now();
                        act.cut_off = false;
                        let recipient = ctx.address().recipient::<Deliver<Msg>>();
                        let bus = act.bus.clone();
                        let me = act.address.clone();
                        ctx.wait(
                            async move { bus.register(me, recipient).await }
                                .into_actor(act)
                                .map(|_, act, ctx| {
                                    act.in_pools = false;
                                    act.maybe_pending = true;
                                    act.update_membership(ctx);
                                    act.pull(ctx);
                                }),
                        );
                        tracing::warn!(executor = %new_id, "re-registered as a new executor");
                    }
                    Err(e) => {
                        // The next heartbeat (still the old id, dead) tries again.
                        tracing::warn!(error = %e, "could not re-register; retrying at the next heartbeat");
                    }
                }),
        );
    }

    fn sweep(&mut self, ctx: &mut Context<Self>) {
        if self.sweeping || self.stopping {
            return;
        }
        self.sweeping = true;
        let store = self.store.clone();
        let bus = self.bus.clone();
        let me = self.id.clone();
        let cfg = self.config.clone();
        let from = self.address.clone();
        ctx.spawn(
            detached(async move { sweep_once(&store, &bus, &me, &cfg, from).await })
                .into_actor(self)
                .map(|res, act, ctx| {
                    act.sweeping = false;
                    match res {
                        Ok(released) => {
                            if released > 0 {
                                act.maybe_pending = true;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "sweep failed"),
                    }
                    // Pending tasks may exist that no message announced.
                    act.maybe_pending = true;
                    act.pull(ctx);
                }),
        );
    }
}

/// One pass of the recovery sweep. Returns how many tasks were released from
/// dead executors.
async fn sweep_once(
    store: &Store,
    bus: &Bus,
    me: &str,
    cfg: &ExecutorConfig,
    from: Address,
) -> Result<usize> {
    // 1. Dead executors: silent too long, or (in this pid space) their
    //    process is gone.
    let mut dead: Vec<String> = store
        .stale_executors(me, cfg.dead_after)
        .await?
        .into_iter()
        .map(|e| e.id)
        .collect();
    if let Some(space) = crate::process::current_space() {
        for (id, process) in store.alive_executors_in_space(me, &space).await? {
            if process.alive() == Some(false) && !dead.contains(&id) {
                dead.push(id);
            }
        }
    }
    for id in dead {
        if store.declare_dead(&id, me).await? {
            tracing::warn!(dead = %id, by = %me, "executor declared dead; taking its tasks over");
        }
    }
    // Whatever is owned by an executor that is not alive goes back to the
    // pool: the tasks of the executors just declared dead, and any left by
    // a takeover or a stop that was cut short.
    let orphans = store
        .release_orphans(me, cfg.max_takeovers.min(i32::MAX as u32) as i32)
        .await?;
    let (poisoned, orphans): (Vec<_>, Vec<_>) =
        orphans.into_iter().partition(|t| t.state.is_final());
    for t in &poisoned {
        tracing::error!(task_id = %t.id, kind = %t.kind, takeovers = cfg.max_takeovers, "task failed: its executor died every time it ran");
        crate::task::notify_finished(store, bus, from.clone(), t, None).await;
    }
    let released = orphans.len();
    if released > 0 {
        tracing::warn!(by = %me, tasks = released, "tasks of executors that are gone are back in the pool");
    }
    for t in orphans {
        bus.tell(envelope(
            from.clone(),
            pool_of(&t.kind),
            &t.trace_id,
            Msg::StartTask {
                task_id: t.id,
                kind: t.kind.clone(),
            },
        ));
    }
    // 2. Events that were committed but whose message never arrived.
    let before = now() - chrono::Duration::from_std(cfg.redeliver_after).unwrap_or_default();
    for u in store.undelivered_events(me, before).await? {
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
    // 3. Sub-task reports a suspended parent may have missed.
    for c in store.finished_children_of_suspended(me, before).await? {
        if let Some(parent) = c.parent_id {
            let trace = c.trace_id.clone();
            bus.tell(envelope(
                from.clone(),
                Address::task(parent),
                &trace,
                Msg::TaskFinished { task: Box::new(c) },
            ));
        }
    }
    // 4. Cancellations whose message may have been lost.
    for (task, trace) in store.cancel_requested_owned(me).await? {
        bus.tell(envelope(
            from.clone(),
            Address::task(task),
            &trace,
            Msg::CancelTask { task_id: task },
        ));
    }
    Ok(released)
}

impl Actor for ExecutorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let bus = self.bus.clone();
        let me = self.address.clone();
        let recipient = ctx.address().recipient::<Deliver<crate::protocol::Msg>>();
        let kinds = self.kinds.clone();
        ctx.wait(
            async move {
                if let Err(e) = bus.register(me.clone(), recipient.clone()).await {
                    tracing::error!(error = %e, "executor address taken");
                }
                for k in kinds {
                    let _ = bus.join_pool(k, me.clone(), recipient.clone()).await;
                }
            }
            .into_actor(self),
        );
        ctx.run_interval(self.config.heartbeat_interval, |act, ctx| {
            act.heartbeat(ctx)
        });
        ctx.run_interval(self.config.sweep_interval, |act, ctx| act.sweep(ctx));
        // The recovery pass: whatever a previous run left behind.
        self.sweep(ctx);
        tracing::info!(executor = %self.id, kinds = ?self.kinds, capacity = self.config.capacity, "executor started");
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        for k in &self.kinds {
            self.bus.leave_pool(k.clone(), self.address.clone());
        }
        self.bus.unregister(self.address.clone());
        for tx in self.drained.drain(..) {
            let _ = tx.send(self.id.clone());
        }
    }
}

impl Handler<Deliver<Msg>> for ExecutorActor {
    type Result = ();

    fn handle(&mut self, Deliver(env): Deliver<Msg>, ctx: &mut Self::Context) {
        match env.body {
            Msg::StartTask { task_id, kind } if self.registry.contains(&kind) => {
                self.claim_one(task_id, kind, env.id, ctx)
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
        self.parked.remove(&msg.task_id);
        if self.running.remove(&msg.task_id).is_some() {
            crate::metrics::metrics().running_add(-1);
        }
        if self.stopping {
            if self.running.is_empty() {
                ctx.stop();
            }
            return;
        }
        self.update_membership(ctx);
        self.pull(ctx);
    }
}

/// A run parked (`true`: its task is suspended) or resumed.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Parked {
    pub task_id: Uuid,
    pub parked: bool,
}

impl Handler<Parked> for ExecutorActor {
    type Result = ();

    fn handle(&mut self, msg: Parked, ctx: &mut Self::Context) {
        if !self.running.contains_key(&msg.task_id) {
            return;
        }
        if msg.parked {
            self.parked.insert(msg.task_id);
            self.update_membership(ctx);
            // A slot is free again: there may be work waiting (perhaps the
            // very sub-tasks this run waits for).
            self.maybe_pending = true;
            self.pull(ctx);
        } else {
            self.parked.remove(&msg.task_id);
            self.update_membership(ctx);
        }
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
        self.stopping = true;
        self.in_pools = false;
        self.drained.push(msg.done);
        for k in &self.kinds {
            self.bus.leave_pool(k.clone(), self.address.clone());
        }
        if self.running.is_empty() {
            ctx.stop();
            return;
        }
        for a in self.running.values() {
            a.do_send(Abort {
                hand_back: msg.hand_back,
            });
        }
    }
}

/// The shared part of an executor that the runtime keeps.
pub(crate) struct ExecutorHandle {
    pub id: String,
    pub addr: Addr<ExecutorActor>,
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
