//! The client API: create, wait for, follow, signal and cancel tasks.
//!
//! - this file: [`Client`];
//! - [`wait`]: one wait for one task (a one-shot actor the finish is pushed to);
//! - [`watch`]: following a task's every state change.

pub mod wait;
pub mod watch;

use std::time::Duration;

use actix::Recipient;

use serde_json::Value;
use tracing::Instrument;
use uuid::Uuid;

use courier_bus::Address;

use self::wait::WaitSession;
use self::watch::TaskWatch;
use crate::creation::{prepare, LocalKinds, Request};
use crate::error::{Error, Result};
use crate::executor::CreateStarted;
use crate::notify::cancel_tree;
use crate::protocol::{announce, envelope, new_trace_id, pool_of, Bus, Msg};
use courier_store::{
    ExecutorInfo, HistoryEntry, Minute, NewTask, QueueInfo, QueueUpdate, Schedule, ScheduleSpec,
    Step, Task, TaskEvent, TaskFilter, TaskState,
};
use courier_store::{Store, TaskInsert};

/// The most tasks one batch creates.
pub const MAX_BATCH: usize = 1000;

/// A created task and whether this call created it (`false`: an earlier
/// request with the same idempotency key did).
#[derive(Clone, Debug, PartialEq)]
pub struct Submitted {
    pub task: Task,
    pub created: bool,
}

/// The outcome of a wait: the task, and whether it is final.
#[derive(Clone, Debug, PartialEq)]
pub struct Waited {
    pub task: Task,
    pub created: bool,
    pub finished: bool,
}

/// Creates, follows, signals and cancels tasks. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    store: Store,
    bus: Bus,
    node: String,
    local_kinds: LocalKinds,
    /// This process's executor, if it runs one: a sync wait for one of its
    /// kinds is created already started there when it has a free slot.
    executor: Option<Recipient<CreateStarted>>,
}

impl Client {
    /// A client that sends through `bus` as node `node`. `local_kinds`: the
    /// kinds an executor of this process runs (no lookup needed for those);
    /// `executor`: that executor.
    pub(crate) fn new(
        store: Store,
        bus: Bus,
        node: String,
        local_kinds: LocalKinds,
        executor: Option<Recipient<CreateStarted>>,
    ) -> Client {
        Client {
            store,
            bus,
            node,
            local_kinds,
            executor,
        }
    }

    /// The store behind this client: for the runtime (and, through
    /// [`Runtime::store`](crate::Runtime::store), tests). Callers above the
    /// actors use the narrow methods below.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The task kinds the deployment's executors run (live or not).
    pub async fn known_kinds(&self) -> Result<Vec<String>> {
        Ok(self.store.known_kinds().await?)
    }

    /// A trivial query: whether the database answers (health checks).
    pub async fn ping(&self) -> Result<()> {
        Ok(self.store.ping().await?)
    }

    /// The number of tasks in each state, deployment-wide.
    pub async fn count_by_state(&self) -> Result<Vec<(TaskState, i64)>> {
        Ok(self.store.count_by_state().await?)
    }

    /// The number of tasks in each state of each queue, by queue then
    /// state, deployment-wide.
    pub async fn count_by_queue(&self) -> Result<Vec<(String, TaskState, i64)>> {
        Ok(self.store.count_by_queue().await?)
    }

    /// Tasks finished in each of the last `minutes` minutes, by outcome.
    pub async fn throughput(&self, minutes: u32) -> Result<Vec<Minute>> {
        Ok(self.store.throughput(minutes).await?)
    }

    /// Writes held by each group-commit lane of this process's store now,
    /// and the most a lane holds (see `Store::write_queues`).
    pub fn write_queues(&self) -> ([(&'static str, usize); 3], usize) {
        self.store.write_queues()
    }

    /// The bus this client sends through.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// What the worker protocol's operations share with this client.
    pub(crate) fn parts(&self) -> (Store, Bus, String, LocalKinds) {
        (
            self.store.clone(),
            self.bus.clone(),
            self.node.clone(),
            self.local_kinds.clone(),
        )
    }

    fn me(&self) -> Address {
        Address::Web {
            node: self.node.clone(),
            session: "client".into(),
        }
    }

    /// Checks a new task and resolves its options, without creating it.
    pub async fn validate(&self, t: &NewTask) -> Result<()> {
        self.prepare(t.clone()).await.map(|_| ())
    }

    async fn prepare(&self, t: NewTask) -> Result<TaskInsert> {
        self.prepare_with(&self.local_kinds, t).await
    }

    /// [`prepare`](Self::prepare) with `known` kinds' defaults at hand.
    async fn prepare_with(&self, known: &LocalKinds, t: NewTask) -> Result<TaskInsert> {
        let trace_id = t
            .trace_id
            .filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(|t| t.to_ascii_lowercase())
            .unwrap_or_else(new_trace_id);
        prepare(
            &self.store,
            known,
            Request {
                kind: &t.kind,
                input: t.input,
                idempotency_key: t.idempotency_key,
                trace_id,
                options: &t.options,
                created_by: self.node.clone(),
            },
        )
        .await
    }

    /// Creates a task. With `start_here`, a task of a kind this process's
    /// executor runs is offered to it first, to be created already started
    /// there ([`CreateStarted`]): a caller that waits for the end is
    /// spared the claim's commit and the `start_task` hop. A create that
    /// does not wait is written as usual, group-committed with others and
    /// claimed in batches.
    async fn insert(
        &self,
        t: NewTask,
        watcher: Option<&str>,
        start_here: bool,
    ) -> Result<Submitted> {
        let insert = self.prepare(t).await?;
        // The creation's span, in the task's trace (an exporter joins it to
        // the runs' spans of every executor that runs the task).
        let span = tracing::info_span!("submit", task_id = %insert.id, kind = %insert.kind,
            trace_id = %insert.trace_id);
        courier_bus::trace::adopt_trace(&span, &insert.trace_id);
        let (task, created) = async {
            let executor = self
                .executor
                .as_ref()
                .filter(|_| start_here && self.local_kinds.contains_key(&insert.kind));
            let insert = std::sync::Arc::new(insert);
            if let Some(ex) = executor {
                let offer = CreateStarted {
                    insert: insert.clone(),
                    watcher: watcher.map(str::to_string),
                };
                // Declined, or the executor has stopped: created as usual.
                if let Ok(Some(r)) = ex.send(offer).await {
                    return r;
                }
            }
            Ok(self.store.create_task_watched(&insert, watcher).await?)
        }
        .instrument(span)
        .await?;
        if created {
            crate::metrics::metrics().task_created(&task.kind);
        }
        Ok(Submitted { task, created })
    }

    /// Flow 1: the task is committed; tell its queue's pool (`start_task`,
    /// or `task_scheduled` for one that waits for its `run_at`). If this
    /// message is lost, an executor's sweep finds the task anyway.
    /// Waits only when the bus's mailbox is full (backpressure).
    async fn start(&self, task: &Task) {
        if let Some(env) = announce(self.me(), task) {
            self.bus.post(env).await;
        }
    }

    /// Creates a task (flow 1) and returns at once.
    pub async fn submit(&self, t: NewTask) -> Result<Submitted> {
        let s = self.insert(t, None, false).await?;
        if s.created {
            self.start(&s.task).await;
        }
        tracing::debug!(task_id = %s.task.id, kind = %s.task.kind, trace_id = %s.task.trace_id, created = s.created, "task submitted");
        Ok(s)
    }

    /// Creates up to [`MAX_BATCH`] tasks in one transaction: all of them, or
    /// none. The first bad entry is refused as [`Error::InBatch`] with its
    /// index. Returned in order; an entry whose idempotency key names an
    /// existing task returns that task (`created: false`).
    pub async fn submit_batch(&self, ts: Vec<NewTask>) -> Result<Vec<Submitted>> {
        if ts.len() > MAX_BATCH {
            return Err(Error::invalid_field(
                "tasks",
                format!("a batch holds at most {MAX_BATCH} tasks, not {}", ts.len()),
            ));
        }
        // Each kind's defaults are looked up once for the whole batch.
        let mut known: std::collections::BTreeMap<_, _> = (*self.local_kinds).clone();
        for t in &ts {
            if !known.contains_key(&t.kind) {
                if let Some(d) = self.store.kind_defaults(&t.kind).await? {
                    known.insert(t.kind.clone(), d);
                }
            }
        }
        let known: LocalKinds = std::sync::Arc::new(known);
        let mut inserts = Vec::with_capacity(ts.len());
        for (index, t) in ts.into_iter().enumerate() {
            let insert = self
                .prepare_with(&known, t)
                .await
                .map_err(|e| Error::InBatch {
                    index,
                    error: Box::new(e),
                })?;
            inserts.push(insert);
        }
        let rows = self.store.create_tasks(&inserts, None).await?;
        let out: Vec<Submitted> = rows
            .into_iter()
            .map(|(task, created)| Submitted { task, created })
            .collect();
        for s in out.iter().filter(|s| s.created) {
            crate::metrics::metrics().task_created(&s.task.kind);
            self.start(&s.task).await;
        }
        tracing::info!(n = out.len(), "batch submitted");
        Ok(out)
    }

    /// Creates a task and waits up to `timeout` for it to finish (flows 1 and
    /// 2): the executor's `task_finished` is pushed to a waiter on the bus.
    pub async fn submit_and_wait(&self, t: NewTask, timeout: Duration) -> Result<Waited> {
        self.submit_and_wait_until(t, timeout, std::future::pending())
            .await
    }

    /// [`submit_and_wait`](Self::submit_and_wait) that also stops waiting
    /// when `until` resolves (a server shutting down answers its waiting
    /// requests at once).
    pub async fn submit_and_wait_until(
        &self,
        t: NewTask,
        timeout: Duration,
        until: impl std::future::Future<Output = ()>,
    ) -> Result<Waited> {
        let session = WaitSession::open(&self.bus, &self.node).await?;
        let result = async {
            // The task and its watcher are committed together, and the waiter
            // is on the bus before the task can start: nothing can finish
            // unseen.
            let s = self.insert(t, Some(&session.watcher), true).await?;
            // A task started here at once needs no announcing.
            if s.created && s.task.state != TaskState::Running {
                self.start(&s.task).await;
                tracing::debug!(task_id = %s.task.id, kind = %s.task.kind, trace_id = %s.task.trace_id, "task submitted; waiting");
            }
            let (task, finished) = session.wait(&self.store, &s.task, timeout, until).await?;
            Ok(Waited {
                task,
                created: s.created,
                finished,
            })
        }
        .await;
        session
            .close(
                &self.store,
                &self.bus,
                result.as_ref().ok().map(|w: &Waited| w.task.id),
            )
            .await;
        result
    }

    /// Waits up to `timeout` for a task to finish. Returns the task as it
    /// stands and whether it is final.
    pub async fn wait(&self, id: Uuid, timeout: Duration) -> Result<(Task, bool)> {
        self.wait_until(id, timeout, std::future::pending()).await
    }

    /// [`wait`](Self::wait) that also stops waiting when `until` resolves.
    pub async fn wait_until(
        &self,
        id: Uuid,
        timeout: Duration,
        until: impl std::future::Future<Output = ()>,
    ) -> Result<(Task, bool)> {
        let task = self.store.task(id).await?;
        if task.state.is_final() {
            return Ok((task, true));
        }
        let session = WaitSession::open(&self.bus, &self.node).await?;
        let result = async {
            let now = self.store.watch(id, &session.watcher, false).await?;
            session.wait(&self.store, &now, timeout, until).await
        }
        .await;
        session.close(&self.store, &self.bus, Some(id)).await;
        result
    }

    /// Follows a task: the returned [`TaskWatch`] yields the task as it
    /// stands, then each state change pushed by its executor, and ends after
    /// the final state.
    pub async fn watch(&self, id: Uuid) -> Result<TaskWatch> {
        TaskWatch::open(&self.store, &self.bus, &self.node, self.me(), id).await
    }

    /// The task.
    pub async fn get(&self, id: Uuid) -> Result<Task> {
        Ok(self.store.task(id).await?)
    }

    /// Tasks matching the filter, newest first.
    pub async fn list(&self, f: &TaskFilter) -> Result<Vec<Task>> {
        Ok(self.store.list_tasks(f).await?)
    }

    /// The task's sub-tasks in spawn order.
    pub async fn children(&self, id: Uuid) -> Result<Vec<Task>> {
        self.store.task(id).await?;
        Ok(self.store.children(id).await?)
    }

    /// The task's event inbox.
    pub async fn events(&self, id: Uuid) -> Result<Vec<TaskEvent>> {
        self.store.task(id).await?;
        Ok(self.store.events(id).await?)
    }

    /// The task's state history.
    pub async fn history(&self, id: Uuid) -> Result<Vec<HistoryEntry>> {
        self.store.task(id).await?;
        Ok(self.store.history(id).await?)
    }

    /// Every executor the store knows.
    pub async fn executors(&self) -> Result<Vec<ExecutorInfo>> {
        Ok(self.store.executors().await?)
    }

    /// A page of the task's sub-tasks in spawn order, after the sub-task
    /// `after`; `bodies: false` leaves their `input` and `output` out.
    pub async fn children_page(
        &self,
        id: Uuid,
        after: Option<Uuid>,
        limit: u32,
        bodies: bool,
    ) -> Result<Vec<Task>> {
        self.store.task(id).await?;
        Ok(self.store.children_page(id, after, limit, bodies).await?)
    }

    /// A page of the task's inbox, after the event numbered `after`.
    pub async fn events_page(
        &self,
        id: Uuid,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<TaskEvent>> {
        self.store.task(id).await?;
        Ok(self.store.events_page(id, after, limit).await?)
    }

    /// A page of the task's state history, after the line `after`.
    pub async fn history_page(
        &self,
        id: Uuid,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<HistoryEntry>> {
        self.store.task(id).await?;
        Ok(self.store.history_page(id, after, limit).await?)
    }

    /// A page of the executors, newest first, after the executor `after`.
    pub async fn executors_page(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ExecutorInfo>> {
        Ok(self.store.executors_page(after, limit).await?)
    }

    /// Flow 3: commits an event to the task's inbox, then sends it to the
    /// task wherever it runs. Refused for an unknown task ([`Error::NotFound`])
    /// and for a finished one ([`Error::Conflict`]).
    pub async fn send_event(&self, id: Uuid, name: &str, payload: Value) -> Result<TaskEvent> {
        if name.is_empty() || name.len() > 128 {
            return Err(Error::invalid_field(
                "name",
                "event name must be 1 to 128 bytes",
            ));
        }
        courier_store::refuse_nul_text("name", name)?;
        courier_store::refuse_nul("payload", &payload)?;
        let (ev, woken) = self.store.add_event(id, name, &payload).await?;
        if let Some(task) = woken {
            // It was suspended, in no executor's memory: an executor of its
            // queue claims it and replays its run, which finds the event.
            tracing::debug!(task_id = %id, event = name, seq = ev.seq, "event committed; task woken");
            crate::notify::notify_woken(&self.store, &self.bus, self.me(), &task).await;
            return Ok(ev);
        }
        let trace = self
            .store
            .task(id)
            .await
            .map(|t| t.trace_id)
            .unwrap_or_default();
        self.bus
            .post(envelope(
                self.me(),
                Address::task(id),
                &trace,
                Msg::TaskEvent {
                    task_id: id,
                    seq: ev.seq,
                    name: ev.name.clone(),
                    payload: ev.payload.0.clone(),
                },
            ))
            .await;
        tracing::debug!(task_id = %id, event = name, seq = ev.seq, "event committed and sent");
        Ok(ev)
    }

    /// Flow 3: requests cancellation of the task and of all its unfinished
    /// sub-tasks. A scheduled or pending task is cancelled at once; a
    /// running or suspended one is told and stops at its next wait. Returns
    /// the task as it stands.
    pub async fn cancel(&self, id: Uuid) -> Result<Task> {
        let root = self.store.task(id).await?;
        if root.state.is_final() {
            return Ok(root);
        }
        cancel_tree(&self.store, &self.bus, self.me(), &self.node, id, true).await?;
        Ok(self.store.task(id).await?)
    }

    /// Retry now: a task waiting for its start time or a retry's backoff
    /// starts at once; a failed or cancelled root task gets a new attempt
    /// now (see [`crate::Store::retry_now`]). Its queue's executors are told as for
    /// a new task. [`Error::Conflict`] for a task in any other state, or a
    /// finished sub-task.
    pub async fn retry(&self, id: Uuid) -> Result<Task> {
        match self.store.retry_now(id, "retry").await? {
            Some(task) => {
                tracing::info!(task_id = %id, kind = %task.kind, attempts = task.attempts, "task retried now");
                self.start(&task).await;
                Ok(task)
            }
            None => {
                let t = self.store.task(id).await?;
                Err(Error::Conflict(
                    if t.parent_id.is_some() && t.state.is_final() {
                        format!("task {id} is a finished sub-task: its end was reported to its parent; retry the parent")
                    } else {
                        format!("task {id} is {}: only a scheduled, failed or cancelled task can be retried", t.state)
                    },
                ))
            }
        }
    }

    /// Every queue that has a setting, a task waiting or running, or an
    /// executor serving it.
    pub async fn queues(&self) -> Result<Vec<QueueInfo>> {
        Ok(self.store.queues().await?)
    }

    /// One queue.
    pub async fn queue(&self, name: &str) -> Result<QueueInfo> {
        courier_store::validate_queue_name(name)?;
        Ok(self.store.queue(name).await?)
    }

    /// Changes a queue's deployment-wide settings and returns the queue. A
    /// queue that may start more now (resumed, a limit raised or lifted) is
    /// told to its executors at once.
    pub async fn update_queue(&self, name: &str, u: &QueueUpdate) -> Result<QueueInfo> {
        let q = self.store.update_queue(name, u).await?;
        if !q.paused {
            self.bus
                .post(envelope(
                    self.me(),
                    pool_of(name),
                    &new_trace_id(),
                    Msg::QueueChanged {
                        queue: name.to_string(),
                    },
                ))
                .await;
        }
        tracing::info!(queue = name, concurrency = ?q.concurrency, rate_per_s = ?q.rate_per_s, paused = q.paused, "queue settings changed");
        Ok(q)
    }

    /// The journal of task `id`: its steps, in the order they ended.
    pub async fn steps(&self, id: Uuid) -> Result<Vec<Step>> {
        Ok(self.store.steps(id).await?)
    }

    /// Creates (`true`) or replaces (`false`) schedule `name`. Refused with
    /// [`Error::InvalidField`] naming the field (`name`, `cron`, an option)
    /// or [`Error::UnknownKind`] when no executor runs its kind. Its queue's
    /// executors are told its next slot at once.
    pub async fn put_schedule(&self, name: &str, spec: &ScheduleSpec) -> Result<(Schedule, bool)> {
        let cron = crate::schedule::validate(name, spec)?;
        if !self.local_kinds.contains_key(&spec.kind)
            && self.store.kind_defaults(&spec.kind).await?.is_none()
        {
            return Err(Error::UnknownKind(spec.kind.clone()));
        }
        let next = if spec.enabled {
            cron.after(courier_store::now())
        } else {
            None
        };
        let (s, created) = self.store.put_schedule(name, spec, next).await?;
        if let Some(at) = s.next_run_at {
            // A due time like a task's `run_at`: whoever serves the queue
            // sets its timer for it (no task yet, hence the nil id).
            self.bus
                .post(envelope(
                    self.me(),
                    pool_of(s.queue()),
                    &new_trace_id(),
                    Msg::TaskScheduled {
                        task_id: Uuid::nil(),
                        queue: s.queue().to_string(),
                        run_at: at,
                    },
                ))
                .await;
        }
        tracing::info!(schedule = name, cron = %s.cron, kind = %s.kind, enabled = s.enabled, next = ?s.next_run_at, created, "schedule saved");
        Ok((crate::schedule::with_upcoming(s), created))
    }

    /// Schedule `name`; [`Error::NoSchedule`] if there is none.
    pub async fn schedule(&self, name: &str) -> Result<Schedule> {
        Ok(crate::schedule::with_upcoming(
            self.store.schedule(name).await?,
        ))
    }

    /// Every schedule, by name.
    pub async fn schedules(&self) -> Result<Vec<Schedule>> {
        Ok(self
            .store
            .schedules()
            .await?
            .into_iter()
            .map(crate::schedule::with_upcoming)
            .collect())
    }

    /// Deletes schedule `name` (the tasks it created stay);
    /// [`Error::NoSchedule`] if there is none.
    pub async fn delete_schedule(&self, name: &str) -> Result<()> {
        if self.store.delete_schedule(name).await? {
            tracing::info!(schedule = name, "schedule deleted");
            Ok(())
        } else {
            Err(Error::NoSchedule(name.to_string()))
        }
    }
}
