//! The worker protocol's operations: what a worker process in another
//! language (PROTOCOL.md section 7) does through a web node, on top of the
//! same store operations an executor uses.
//!
//! A worker *is* an executor row (`executors`, with `language` and `name`
//! set): it registers its kinds, queues and capacity, renews its lease as
//! an executor heartbeats, and every write it makes is fenced by its id and
//! the task's epoch exactly as an executor's. So the dead-executor
//! detection, the takeover of a dead one's tasks and the fencing of a
//! zombie's writes apply unchanged: a worker that misses its lease is
//! declared dead by any executor's sweep and its tasks go back to the pool
//! of their queue, for any executor or worker that serves it.
//!
//! The web node is the worker's executor actor: what a [`TaskActor`]
//! does around a run (record the end, a retry or a suspension as
//! `crate::decide` decides it, as the task actor does; tell watchers and
//! the parent; announce a spawned sub-task or a suspension on the bus) is
//! done here, per request. The run itself is in the worker: it replays from the
//! top with the journal and inbox its claim carried.
//!
//! A claim is a long poll: the web node joins the bus pools of the queues
//! its waiting workers serve (while one waits), and a `start_task` for one
//! of them ends the wait at once.
//!
//! [`TaskActor`]: crate::task::TaskActor

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use courier_bus::{Address, Deliver};

use crate::client::Client;
use crate::creation::{prepare, LocalKinds, Request};
use crate::decide::{decide, Attempt, Decision, Failure, RunEnd};
use crate::error::{Error, Result};
use crate::protocol::{announce, start_task, Bus, Msg};
use courier_store::TaskOptions;
use courier_store::{now, ExecutorState, Step, Task, TaskEvent, TaskState};
use courier_store::{ExecutorRegistration, Fence, Offer, Store, Suspension, Wait};

/// How often a waiting claim looks at the store even when no hint came: a
/// hint for its queue may have gone to another member of the pool (an
/// executor, which claims only its own kinds), as an executor's sweep pulls
/// every 2 s for the same reason.
const RECHECK: Duration = Duration::from_secs(2);

/// The longest long poll.
pub const MAX_POLL: Duration = Duration::from_secs(30);

/// The deployment's lease settings, as a worker is told them.
#[derive(Clone, Copy, Debug)]
pub struct WorkerConfig {
    /// How often a worker renews its lease (an executor's heartbeat).
    pub renew_every: Duration,
    /// A worker (an executor) silent this long is declared dead.
    pub dead_after: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            renew_every: Duration::from_secs(2),
            dead_after: Duration::from_secs(8),
        }
    }
}

impl WorkerConfig {
    /// How long after its last renewal a worker may still write: three
    /// quarters of `dead_after`, as an executor cuts itself off.
    pub fn lease(&self) -> Duration {
        self.dead_after * 3 / 4
    }
}

/// A worker's registration.
#[derive(Clone, Debug)]
pub struct Registration {
    pub name: String,
    pub language: String,
    pub kinds: Vec<String>,
    pub queues: Vec<String>,
    pub capacity: u32,
    pub host: String,
    pub pid: i32,
}

/// A task handed to a worker by a claim, with what its replay needs.
#[derive(Clone, Debug)]
pub struct ClaimedTask {
    pub task: Task,
    /// The journal: every step that ended, by name.
    pub journal: Vec<Step>,
    /// The whole inbox, in `seq` order (a replay sees every event again).
    pub events: Vec<TaskEvent>,
    /// Its sub-tasks that are final.
    pub children: Vec<Task>,
    /// When this attempt times out (`timeout_ms`), if it has a limit.
    pub deadline: Option<DateTime<Utc>>,
}

/// What a lease renewal tells the worker.
#[derive(Clone, Debug, Default)]
pub struct Renewed {
    /// Its tasks whose cancellation was requested.
    pub cancel: Vec<Uuid>,
    /// Tasks it named that it no longer holds (taken over, or ended): it
    /// must stop their runs, and nothing it writes for them lands.
    pub lost: Vec<Uuid>,
}

/// How a worker's run ended.
#[derive(Clone, Debug)]
pub enum End {
    Output(Value),
    /// A failed attempt; `code` is `error` or `timeout`.
    Failed {
        code: String,
        message: String,
    },
    Cancelled,
}

/// What a worker's run waits for.
#[derive(Clone, Debug, Default)]
pub struct SuspendRequest {
    pub event: Option<String>,
    pub seen_seq: i64,
    pub children: Vec<Uuid>,
    pub until: Option<DateTime<Utc>>,
    /// The attempt's deadline as the claim gave it.
    pub deadline: Option<DateTime<Utc>>,
}

/// How a suspension went.
#[derive(Clone, Debug)]
pub enum Suspended {
    /// The task waits in the store, held by nobody.
    Suspended(Box<Task>),
    /// What it waits for came meanwhile: the worker still holds it and
    /// runs it again from the top, with this inbox and these sub-tasks.
    Woken {
        events: Vec<TaskEvent>,
        children: Vec<Task>,
    },
}

/// The worker protocol's operations of one web node. Cheap to clone.
#[derive(Clone)]
pub struct Workers {
    store: Store,
    bus: Bus,
    node: String,
    local_kinds: LocalKinds,
    config: WorkerConfig,
    waker: Arc<Waker>,
}

impl Client {
    /// The worker protocol's operations, through this client's store and bus.
    pub fn workers(&self, config: WorkerConfig) -> Workers {
        let (store, bus, node, local_kinds) = self.parts();
        Workers {
            waker: Arc::new(Waker {
                bus: bus.clone(),
                address: Address::Web {
                    node: node.clone(),
                    session: "workers".into(),
                },
                actor: OnceLock::new(),
                waiting: Arc::new(Mutex::new(Waiting::default())),
                hints: tokio::sync::watch::channel(0).0,
            }),
            store,
            bus,
            node,
            local_kinds,
            config,
        }
    }
}

/// Checks a worker's or language's name: 1 to 64 of ASCII letters,
/// digits, `_`, `.`, `-`.
fn validate_label(field: &str, s: &str) -> Result<()> {
    let ok = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_field(
            field,
            format!("{field} {s:?} must be 1 to 64 characters of A-Z, a-z, 0-9, '_', '.' and '-'"),
        ))
    }
}

impl Workers {
    pub fn config(&self) -> WorkerConfig {
        self.config
    }

    fn me(&self, worker: &str) -> Address {
        Address::Executor(worker.to_string())
    }

    fn fence(worker: &str, task: Uuid, epoch: i64) -> Fence {
        Fence {
            task_id: task,
            executor_id: worker.to_string(),
            epoch,
        }
    }

    /// Registers a worker: it is alive from now on, and its kinds are known
    /// (to creates and `GET /api/v1/kinds`) from now on, even after it is
    /// gone. Returns its id.
    pub async fn register(&self, r: &Registration) -> Result<String> {
        validate_label("name", &r.name)?;
        validate_label("language", &r.language)?;
        if r.kinds.is_empty() {
            return Err(Error::invalid_field(
                "kinds",
                "a worker runs at least one kind",
            ));
        }
        for k in &r.kinds {
            courier_store::validate_kind_name(k)
                .map_err(|e| Error::invalid_field("kinds", e.to_string()))?;
        }
        if r.queues.is_empty() {
            return Err(Error::invalid_field(
                "queues",
                "a worker serves at least one queue",
            ));
        }
        for q in &r.queues {
            courier_store::validate_queue_name(q)
                .map_err(|e| Error::invalid_field("queues", e.to_string()))?;
        }
        if !(1..=10_000).contains(&r.capacity) {
            return Err(Error::invalid_field(
                "capacity",
                "capacity must be 1 to 10000",
            ));
        }
        if r.host.is_empty() || r.host.len() > 255 || r.host.contains('\0') {
            return Err(Error::invalid_field(
                "host",
                "host must be 1 to 255 bytes, no U+0000",
            ));
        }
        let mut kinds = r.kinds.clone();
        kinds.sort();
        kinds.dedup();
        let mut queues = r.queues.clone();
        queues.sort();
        queues.dedup();
        let suffix = Uuid::now_v7().simple().to_string();
        let id = format!("worker-{}-{}", r.name, &suffix[suffix.len() - 12..]);
        let reg = ExecutorRegistration {
            id: id.clone(),
            node: self.node.clone(),
            host: r.host.clone(),
            pid: r.pid,
            process: None,
            offer: Offer {
                kinds,
                queues,
                kind_options: Default::default(),
            },
            capacity: r.capacity as i32,
        };
        self.store.register_executor(&reg).await?;
        self.store.label_worker(&id, &r.language, &r.name).await?;
        tracing::info!(worker = %id, language = %r.language, kinds = ?reg.offer.kinds, queues = ?reg.offer.queues, "worker registered");
        Ok(id)
    }

    /// The worker's row, when it is alive; [`Error::WorkerGone`] when it is
    /// dead or stopped, [`Error::NoWorker`] when no worker has this id.
    async fn alive(&self, worker: &str) -> Result<courier_store::ExecutorInfo> {
        match self.store.executor(worker).await? {
            Some(e) if e.language.is_some() && e.state == ExecutorState::Alive => Ok(e),
            Some(e) if e.language.is_some() => Err(Error::WorkerGone(format!(
                "worker {worker} is {}: register again",
                e.state.as_str()
            ))),
            _ => Err(Error::NoWorker(worker.to_string())),
        }
    }

    /// Renews the lease; `running` are the tasks (id, epoch) the worker is
    /// running. [`Error::WorkerGone`] when it was declared dead or stopped,
    /// [`Error::NoWorker`] when no worker has this id.
    pub async fn renew(&self, worker: &str, running: &[(Uuid, i64)]) -> Result<Renewed> {
        let n = i32::try_from(running.len()).unwrap_or(i32::MAX);
        if !self.store.heartbeat(worker, n).await? {
            // Not alive (or not a worker at all): say which.
            self.alive(worker).await?;
            return Err(Error::WorkerGone(format!(
                "worker {worker} is not alive: register again"
            )));
        }
        let mut out = Renewed::default();
        let cancels = self.store.cancel_requested_owned(worker).await?;
        out.cancel = cancels.into_iter().map(|(id, _)| id).collect();
        if !running.is_empty() {
            let ids: Vec<Uuid> = running.iter().map(|(id, _)| *id).collect();
            let rows = self.store.tasks_by_id(&ids).await?;
            for (id, epoch) in running {
                let held = rows.iter().any(|t| {
                    t.id == *id
                        && t.epoch == *epoch
                        && t.executor_id.as_deref() == Some(worker)
                        && t.state == TaskState::Running
                });
                if !held {
                    out.lost.push(*id);
                }
            }
        }
        Ok(out)
    }

    /// Claims up to `max` tasks of the worker's kinds from its queues
    /// (within their limits, and its capacity), waiting up to `wait` for
    /// one: a `start_task` of one of its queues ends the wait at once.
    /// Empty when none came in time or `stop` resolved first.
    pub async fn claim(
        &self,
        worker: &str,
        max: u32,
        wait: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<Vec<ClaimedTask>> {
        let w = self.alive(worker).await?;
        let free = max.min(w.capacity.max(1) as u32);
        if free == 0 {
            return Ok(Vec::new());
        }
        let until = Instant::now() + wait.min(MAX_POLL);
        let mut hints = self.waker.wait_on(&w.queues, &w.kinds);
        tokio::pin!(stop);
        loop {
            hints.seen();
            let claimed = self.store.claim(worker, &w.queues, &w.kinds, free).await?;
            if !claimed.tasks.is_empty() {
                crate::metrics::metrics().claimed(claimed.tasks.len());
                let mut out = Vec::with_capacity(claimed.tasks.len());
                for t in claimed.tasks {
                    out.push(self.hand_over(t).await?);
                }
                return Ok(out);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Vec::new());
            }
            let nap = left.min(RECHECK).min(claimed.retry_in.unwrap_or(RECHECK));
            tokio::select! {
                _ = hints.changed() => {}
                _ = tokio::time::sleep(nap) => {
                    // Declared dead while waiting: say so.
                    self.alive(worker).await?;
                }
                _ = &mut stop => return Ok(Vec::new()),
            }
        }
    }

    /// What a claimed task's replay needs: its journal, its inbox (marked
    /// delivered: the worker holds it), its final sub-tasks.
    async fn hand_over(&self, task: Task) -> Result<ClaimedTask> {
        // A task claimed for the first time (`epoch` 1: every claim, and
        // only a claim, adds one) has never run: no step was journaled and
        // no sub-task spawned, so only its inbox is read (an event may come
        // before the first run). Two queries a task fewer on the path of
        // every new task (issue 26's figures).
        let (journal, (events, children)) = if task.epoch <= 1 {
            (Vec::new(), (self.inbox(task.id).await?, Vec::new()))
        } else {
            (
                self.store.steps(task.id).await?,
                self.replay_state(task.id).await?,
            )
        };
        let deadline = task.timeout_ms.filter(|ms| *ms > 0).map(|ms| {
            task.timeout_at
                .unwrap_or_else(|| now() + chrono::Duration::milliseconds(ms))
        });
        Ok(ClaimedTask {
            task,
            journal,
            events,
            children,
            deadline,
        })
    }

    /// The task's inbox, every event in it marked delivered.
    async fn inbox(&self, id: Uuid) -> Result<Vec<TaskEvent>> {
        let events = self.store.events(id).await?;
        if let Some(last) = events.last() {
            self.store.mark_delivered_up_to(id, last.seq).await?;
        }
        Ok(events)
    }

    async fn replay_state(&self, id: Uuid) -> Result<(Vec<TaskEvent>, Vec<Task>)> {
        let events = self.inbox(id).await?;
        let children = self
            .store
            .children(id)
            .await?
            .into_iter()
            .filter(|t| t.state.is_final())
            .collect();
        Ok((events, children))
    }

    /// Journals a step of a task the worker holds.
    #[allow(clippy::too_many_arguments)]
    pub async fn step(
        &self,
        worker: &str,
        task: Uuid,
        epoch: i64,
        name: &str,
        output: Result<Value, String>,
        started_at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        if name.is_empty() || name.chars().count() > 200 || name.contains('\0') {
            return Err(Error::invalid_field(
                "name",
                "a step name is 1 to 200 characters, no U+0000",
            ));
        }
        let (state, output, error) = match output {
            Ok(v) => {
                courier_store::refuse_nul("output", &v)?;
                (Step::SUCCEEDED, Some(v), None)
            }
            Err(e) => {
                courier_store::refuse_nul_text("error", &e)?;
                (Step::FAILED, None, Some(e))
            }
        };
        let at = now();
        let step = Step {
            name: name.to_string(),
            attempt: 0,
            state: state.to_string(),
            output,
            error,
            started_at: started_at.unwrap_or(at).min(at),
            finished_at: at,
        };
        Ok(self
            .store
            .record_step(&Self::fence(worker, task, epoch), &step)
            .await?)
    }

    /// Records a progress value of a task the worker holds.
    pub async fn progress(
        &self,
        worker: &str,
        task: Uuid,
        epoch: i64,
        value: &Value,
    ) -> Result<()> {
        courier_store::refuse_nul("value", value)?;
        Ok(self
            .store
            .set_progress(&Self::fence(worker, task, epoch), value)
            .await?)
    }

    /// Spawns the `seq`-th sub-task of this attempt of `task` (the same
    /// sub-task every time the same `seq` is asked for, so a replay gets
    /// it back), announced to its queue. Returns it as it stands.
    #[allow(clippy::too_many_arguments)]
    pub async fn spawn(
        &self,
        worker: &str,
        task: Uuid,
        epoch: i64,
        seq: i32,
        kind: &str,
        input: Value,
        options: &TaskOptions,
    ) -> Result<Task> {
        let fence = Self::fence(worker, task, epoch);
        let parent = self.store.task(task).await?;
        if parent.executor_id.as_deref() != Some(worker) || parent.epoch != epoch {
            return Err(Error::Fenced(task));
        }
        let insert = prepare(
            &self.store,
            &self.local_kinds,
            Request {
                kind,
                input,
                idempotency_key: None,
                trace_id: parent.trace_id.clone(),
                options,
                created_by: worker.to_string(),
            },
        )
        .await?;
        let (child, _created) = self.store.spawn_child(&fence, seq, &insert).await?;
        if !child.state.is_final() {
            if let Some(env) = announce(self.me(worker), &child) {
                self.bus.post(env).await;
            }
        }
        Ok(child)
    }

    /// Suspends a task the worker holds on what its run waits for, as a
    /// Rust run parks: it leaves the worker and waits in the store.
    pub async fn suspend(
        &self,
        worker: &str,
        task: Uuid,
        epoch: i64,
        req: SuspendRequest,
    ) -> Result<Suspended> {
        if let Some(e) = &req.event {
            courier_store::refuse_nul_text("event", e)?;
            if e.is_empty() || e.chars().count() > 200 {
                return Err(Error::invalid_field(
                    "event",
                    "an event name is 1 to 200 characters",
                ));
            }
        }
        if req.event.is_none() && req.children.is_empty() && req.until.is_none() {
            return Err(Error::invalid_field(
                "event",
                "a suspension waits for an event, sub-tasks or a time",
            ));
        }
        let mut children = req.children.clone();
        children.sort();
        children.dedup();
        let label = match (&req.event, children.len(), req.until) {
            (Some(e), _, Some(u)) => format!(
                "event {e} until {}",
                u.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ),
            (Some(e), _, None) => format!("event {e}"),
            (None, 0, _) => "timer".to_string(),
            (None, 1, _) => "1 sub-task".to_string(),
            (None, n, _) => format!("{n} sub-tasks"),
        };
        let wait = Wait {
            event: req.event.clone(),
            seen_seq: req.seen_seq,
            children,
            until: req.until,
            timeout_at: None,
            label,
        };
        let end = RunEnd::Waits {
            wait,
            deadline: req.deadline,
        };
        let wait = match decide(end, now(), courier_store::retry_delay) {
            Decision::Suspend(wait) => wait,
            other => unreachable!("a run that waits is suspended, not {other:?}"),
        };
        let fence = Self::fence(worker, task, epoch);
        match self.store.suspend(&fence, &wait).await? {
            Suspension::Suspended { task: t } => {
                crate::metrics::metrics().suspended(&t.queue);
                crate::notify::tell_followers(&self.store, &self.bus, &self.me(worker), &t).await;
                if let Some(env) = announce(self.me(worker), &t) {
                    self.bus.post(env).await;
                }
                Ok(Suspended::Suspended(t))
            }
            Suspension::Woken => {
                let (events, children) = self.replay_state(task).await?;
                Ok(Suspended::Woken { events, children })
            }
        }
    }

    /// Records how a run of a task the worker holds ended: its output, its
    /// cancellation, or a failed attempt, retried after its backoff while
    /// attempts are left (a `timeout` first cancels what it spawned).
    /// Returns the task as it now stands.
    pub async fn finish(&self, worker: &str, task: Uuid, epoch: i64, end: End) -> Result<Task> {
        let fence = Self::fence(worker, task, epoch);
        let me = self.me(worker);
        let end = match end {
            End::Output(v) => {
                courier_store::refuse_nul("output", &v)?;
                RunEnd::Output(v)
            }
            End::Cancelled => RunEnd::Cancelled,
            End::Failed { code, message } => {
                courier_store::refuse_nul_text("message", &message)?;
                // A failure is judged by the attempt as the store holds it.
                let t = self.store.task(task).await?;
                if t.executor_id.as_deref() != Some(worker)
                    || t.epoch != epoch
                    || t.state != TaskState::Running
                {
                    crate::metrics::metrics().fenced();
                    return Err(Error::Fenced(task));
                }
                if code == "timeout" {
                    crate::metrics::metrics().timed_out(&t.queue);
                    crate::notify::cancel_tree(
                        &self.store,
                        &self.bus,
                        me.clone(),
                        worker,
                        task,
                        false,
                    )
                    .await?;
                }
                let attempt = Attempt::of(&t, t.cancel_requested);
                RunEnd::Failed(Failure { code, message }, attempt)
            }
        };
        let outcome = match decide(end, now(), courier_store::retry_delay) {
            Decision::Finish(outcome) => outcome,
            Decision::Retry {
                at, error, errors, ..
            } => {
                let retried = self.store.retry_later(&fence, &error, &errors, at).await?;
                crate::metrics::metrics().retried(&retried.queue);
                crate::notify::tell_followers(&self.store, &self.bus, &me, &retried).await;
                if let Some(env) = announce(me, &retried) {
                    self.bus.post(env).await;
                }
                return Ok(retried);
            }
            other => {
                unreachable!("a worker's run that ended is finished or retried, not {other:?}")
            }
        };
        let f = match self.store.finish_run(&fence, &outcome).await {
            Err(courier_store::Error::Fenced(id)) => {
                crate::metrics::metrics().fenced();
                return Err(Error::Fenced(id));
            }
            other => other?,
        };
        let task_row = match f.task {
            Some(t) => t,
            None => self.store.task(f.id).await?,
        };
        crate::metrics::metrics().task_finished(&task_row.kind, f.state.as_str());
        if let Some(parent) = &f.woken {
            crate::notify::notify_woken(&self.store, &self.bus, me.clone(), parent).await;
        }
        crate::notify::notify_finished(&self.store, &self.bus, me, &task_row, Some(f.watchers))
            .await;
        Ok(task_row)
    }

    /// Hands a task the worker holds back to its queue, unfinished (a
    /// worker that stops): the same attempt runs again, on any executor
    /// or worker of its queue.
    pub async fn release(&self, worker: &str, task: Uuid, epoch: i64) -> Result<()> {
        self.store
            .hand_back(&Self::fence(worker, task, epoch))
            .await?;
        if let Some(t) = self.store.get_task(task).await? {
            self.bus.post(start_task(self.me(worker), &t)).await;
        }
        Ok(())
    }

    /// A worker's clean stop: it is `stopped`; whatever it still holds goes
    /// back to the pool at the next sweep of any executor.
    pub async fn stop(&self, worker: &str) -> Result<()> {
        self.alive(worker).await?;
        Ok(self.store.stop_executor(worker).await?)
    }
}

/// The web node's ear on the bus: a member of the pools of the queues its
/// workers wait on, while one waits, so that a `start_task` ends their
/// long polls at once.
struct Waker {
    bus: Bus,
    address: Address,
    actor: OnceLock<Addr<WakerActor>>,
    /// How many claims wait on each queue, and of each kind in it.
    waiting: Arc<Mutex<Waiting>>,
    /// Bumped by every hint for a queue with waiting claims.
    hints: tokio::sync::watch::Sender<u64>,
}

impl Waker {
    fn recipient(&self) -> Recipient<Deliver<Msg>> {
        self.actor
            .get_or_init(|| {
                let hints = self.hints.clone();
                let bus = self.bus.clone();
                let (address, waiting) = (self.address.clone(), self.waiting.clone());
                // On an arbiter of its own: it outlives the HTTP worker
                // thread of the request that first waited.
                let arbiter = Arbiter::new();
                WakerActor::start_in_arbiter(&arbiter.handle(), move |_| WakerActor {
                    hints,
                    bus,
                    address,
                    waiting,
                })
            })
            .clone()
            .recipient()
    }

    /// Counts a claim waiting on `queues` for `kinds` (the pools joined
    /// for the first) until the returned guard drops.
    fn wait_on(self: &Arc<Self>, queues: &[String], kinds: &[String]) -> HintWait {
        let rx = self.hints.subscribe();
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        for q in queues {
            let n = waiting.queues.entry(q.clone()).or_insert(0);
            *n += 1;
            if *n == 1 {
                self.bus
                    .join_pool_nowait(q.clone(), self.address.clone(), self.recipient());
            }
            for k in kinds {
                *waiting.kinds.entry((q.clone(), k.clone())).or_insert(0) += 1;
            }
        }
        HintWait {
            waker: self.clone(),
            queues: queues.to_vec(),
            kinds: kinds.to_vec(),
            rx,
        }
    }
}

/// The claims waiting on one web node.
#[derive(Default)]
struct Waiting {
    /// How many wait on each queue.
    queues: HashMap<String, usize>,
    /// How many wait for each kind in each queue.
    kinds: HashMap<(String, String), usize>,
}

/// A waiting claim's subscription to hints.
struct HintWait {
    waker: Arc<Waker>,
    queues: Vec<String>,
    kinds: Vec<String>,
    rx: tokio::sync::watch::Receiver<u64>,
}

impl HintWait {
    /// Everything hinted so far is looked at by the claim that follows.
    fn seen(&mut self) {
        self.rx.borrow_and_update();
    }

    async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for HintWait {
    fn drop(&mut self) {
        let w = &self.waker;
        let mut waiting = w.waiting.lock().unwrap_or_else(|p| p.into_inner());
        for q in &self.queues {
            if let Some(n) = waiting.queues.get_mut(q) {
                *n -= 1;
                if *n == 0 {
                    waiting.queues.remove(q);
                    w.bus.leave_pool(q.clone(), w.address.clone());
                }
            }
            for k in &self.kinds {
                let key = (q.clone(), k.clone());
                if let Some(n) = waiting.kinds.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        waiting.kinds.remove(&key);
                    }
                }
            }
        }
    }
}

struct WakerActor {
    hints: tokio::sync::watch::Sender<u64>,
    bus: Bus,
    address: Address,
    waiting: Arc<Mutex<Waiting>>,
}

impl Actor for WakerActor {
    type Context = Context<Self>;
}

impl Handler<Deliver<Msg>> for WakerActor {
    type Result = ();

    fn handle(&mut self, Deliver(env): Deliver<Msg>, _: &mut Self::Context) {
        self.bus.settle(env.id, true);
        let wanted = match &env.body {
            Msg::StartTask { kind, queue, .. } => {
                let waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
                waiting.kinds.contains_key(&(queue.clone(), kind.clone()))
            }
            Msg::QueueChanged { .. } => true,
            _ => false,
        };
        if wanted {
            self.hints.send_modify(|n| *n = n.wrapping_add(1));
        } else if let Some(again) = crate::protocol::pass_on_foreign(self.address.clone(), &env) {
            // No claim here waits for its kind (a Rust kind in a queue a
            // worker shares with executors): on to the next member.
            self.bus.tell(again);
        }
    }
}
