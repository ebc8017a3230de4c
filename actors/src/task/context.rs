//! What a run sees: [`TaskContext`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use tracing::Instrument;
use uuid::Uuid;

use courier_bus::Address;

use super::replay::{Event, Journal};
use super::signals::Suspend;
use super::RunEnv;
use crate::calls::retry;
use crate::creation::{prepare, Request};
use crate::error::TaskError;
use crate::protocol::{announce, envelope, Bus, Msg};
use courier_store::TaskOptions;
use courier_store::{now, Step, Task, TaskState};
use courier_store::{Fence, Wait};

/// How long a run's own writes are retried through a database outage before
/// the run is interrupted (and the task handed back).
const WRITE_RETRY: Duration = Duration::from_secs(60);

/// What the task actor has received for the run, shared with the run.
#[derive(Default)]
pub(crate) struct Mailbox {
    /// Every event of the task up to the last one's `seq`, in `seq` order.
    events: Vec<Event>,
    /// About the bytes of `events` (for the replay cache's bound).
    bytes: usize,
    /// The `seq`s this run has consumed.
    consumed: HashSet<i64>,
    /// Per event name, where this run's search for the next one starts:
    /// every event of that name before this index is consumed. So a run
    /// that takes k events of one name scans each once, not k times.
    next: HashMap<String, usize>,
    /// Final sub-tasks, by id.
    children: HashMap<Uuid, Task>,
    cancelled: bool,
}

impl Mailbox {
    /// Adds an event unless it is known; true when it was new.
    pub(crate) fn add_event(&mut self, seq: i64, name: String, payload: Value) -> bool {
        let size = name.len() + super::replay::json_size(&payload) + 64;
        match self.events.last() {
            Some(last) if last.0 >= seq => {
                match self.events.binary_search_by_key(&seq, |e| e.0) {
                    Ok(_) => return false,
                    Err(i) => {
                        self.events.insert(i, (seq, name, payload));
                        // The places found so far moved.
                        self.next.clear();
                    }
                }
            }
            _ => self.events.push((seq, name, payload)),
        }
        self.bytes += size;
        true
    }

    fn take_event(&mut self, name: &str) -> Option<Value> {
        let from = self.next.get(name).copied().unwrap_or(0);
        let found = self.events[from.min(self.events.len())..]
            .iter()
            .position(|(seq, n, _)| n == name && !self.consumed.contains(seq))
            .map(|i| from + i);
        let at = found.map_or(self.events.len(), |i| i + 1);
        match self.next.get_mut(name) {
            Some(n) => *n = at,
            None => {
                self.next.insert(name.to_string(), at);
            }
        }
        let (seq, _, payload) = &self.events[found?];
        self.consumed.insert(*seq);
        Some(payload.clone())
    }

    /// A new run starts: it has consumed nothing yet.
    pub(crate) fn new_run(&mut self) {
        self.consumed.clear();
        self.next.clear();
    }

    /// The highest `seq` here: every event up to it is here (loaded from
    /// the database, or read past the last one held).
    fn last_seq(&self) -> i64 {
        self.events.last().map_or(0, |e| e.0)
    }

    /// Hands the events over (to the replay cache), with their size.
    pub(crate) fn take_events(&mut self) -> (Vec<Event>, usize) {
        self.new_run();
        (
            std::mem::take(&mut self.events),
            std::mem::take(&mut self.bytes),
        )
    }

    /// Takes events kept from an earlier run (the replay cache's): every
    /// event up to the last one's `seq`, in order, on an empty mailbox.
    pub(crate) fn restore_events(&mut self, events: Vec<Event>, bytes: usize) {
        debug_assert!(self.events.is_empty());
        self.events = events;
        self.bytes = bytes;
        self.new_run();
    }

    pub(crate) fn add_child(&mut self, child: Task) {
        self.children.insert(child.id, child);
    }

    pub(crate) fn cancel(&mut self) {
        self.cancelled = true;
    }
}

/// Who follows the task's state changes, and the last state they were sent.
#[derive(Default)]
pub(crate) struct Followers {
    pub watchers: Vec<Address>,
    pub last: Option<Task>,
}

/// The state a task actor and its run share.
pub(crate) struct Shared {
    mailbox: Mutex<Mailbox>,
    /// The journal as this actor knows it: read once (from the store, or
    /// from the replay cache), then kept with the actor's own writes for
    /// every run it makes.
    journal: Mutex<Journal>,
    /// Bumped after every change of the mailbox; a parked run wakes on it.
    changed: watch::Sender<u64>,
    followers: Mutex<Followers>,
}

impl Shared {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Shared {
            mailbox: Mutex::new(Mailbox::default()),
            journal: Mutex::new(Journal::default()),
            changed: watch::channel(0).0,
            followers: Mutex::new(Followers::default()),
        })
    }

    pub(crate) fn followers(&self) -> MutexGuard<'_, Followers> {
        self.followers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the task's new state and sends it to every follower.
    pub(crate) fn publish(&self, bus: &Bus, from: &Address, task: Task) {
        let mut f = self.followers();
        for w in &f.watchers {
            bus.tell(envelope(
                from.clone(),
                w.clone(),
                &task.trace_id,
                Msg::TaskChanged {
                    task: Box::new(task.clone()),
                },
            ));
        }
        f.last = Some(task);
    }

    /// True once cancellation was requested.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.lock().cancelled
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Mailbox> {
        // A poisoned lock means a run panicked while holding it; the data is
        // plain and still consistent, so carry on.
        self.mailbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn journal(&self) -> MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the mailbox and wakes the run.
    pub(crate) fn update(&self, f: impl FnOnce(&mut Mailbox)) {
        f(&mut self.lock());
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }
}

struct Inner {
    task: Task,
    fence: Fence,
    /// The executor's store, bus, address and kinds, as its task actor
    /// has them.
    env: Arc<RunEnv>,
    shared: Arc<Shared>,
    next_spawn: AtomicI32,
    /// Step names used by this run so far: each may be used once.
    step_names: Mutex<HashSet<String>>,
    /// Durable sleeps and deadlines of this run so far (they name their
    /// steps).
    next_timer: AtomicI32,
    /// The run's own task actor, told when the run must suspend.
    suspend: actix::Recipient<Suspend>,
}

/// A step write in flight: the journal counts it until it ends, and learns
/// the step once the store confirmed it. Dropped before that (the run was
/// dropped during the write, or the write failed), it leaves the journal
/// *torn*: the step may have landed without the journal knowing, so the
/// journal is read from the store again rather than trusted (see
/// [`super::replay`]).
struct JournalWrite<'a> {
    shared: &'a Shared,
    landed: bool,
}

impl<'a> JournalWrite<'a> {
    fn begin(shared: &'a Shared) -> Self {
        shared.journal().writing += 1;
        JournalWrite {
            shared,
            landed: false,
        }
    }

    fn landed(mut self, step: &Step) {
        let output = step
            .succeeded()
            .then(|| step.output.as_ref().unwrap_or(&Value::Null));
        let mut j = self.shared.journal();
        j.steps.record(&step.name, output);
        drop(j);
        self.landed = true;
    }
}

impl Drop for JournalWrite<'_> {
    fn drop(&mut self) {
        let mut j = self.shared.journal();
        j.writing = j.writing.saturating_sub(1);
        if !self.landed {
            j.torn = true;
        }
    }
}

/// The handle a run uses to read its input and talk to the world. Cheap to
/// clone; every clone refers to the same run.
#[derive(Clone)]
pub struct TaskContext {
    inner: Arc<Inner>,
}

/// A sub-task spawned by this run.
#[derive(Clone)]
pub struct Child {
    id: Uuid,
    kind: String,
    ctx: TaskContext,
}

impl TaskContext {
    pub(crate) fn new(
        task: Task,
        fence: Fence,
        env: Arc<RunEnv>,
        shared: Arc<Shared>,
        suspend: actix::Recipient<Suspend>,
    ) -> Self {
        TaskContext {
            inner: Arc::new(Inner {
                task,
                fence,
                env,
                shared,
                next_spawn: AtomicI32::new(0),
                step_names: Mutex::new(HashSet::new()),
                next_timer: AtomicI32::new(0),
                suspend,
            }),
        }
    }

    /// The task's id.
    pub fn id(&self) -> Uuid {
        self.inner.task.id
    }

    /// The task's kind.
    pub fn kind(&self) -> &str {
        &self.inner.task.kind
    }

    /// The input the task was created with.
    pub fn input(&self) -> &Value {
        &self.inner.task.input
    }

    /// The input, deserialized; a mismatch fails the task with a clear message.
    pub fn input_as<T: DeserializeOwned>(&self) -> Result<T, TaskError> {
        // From the text, not the value: with serde_json's
        // `arbitrary_precision` (courier-web turns it on) a float inside a
        // `Value` reads as a double only if written as the double prints.
        serde_json::from_str(&self.inner.task.input.to_string()).map_err(|e| {
            TaskError::failed(format!("invalid input for {}: {e}", self.inner.task.kind))
        })
    }

    /// Which attempt this is: 1 on the first run, more after a takeover or restart.
    pub fn attempt(&self) -> i32 {
        self.inner.task.attempts
    }

    /// The parent task, for a sub-task.
    pub fn parent_id(&self) -> Option<Uuid> {
        self.inner.task.parent_id
    }

    /// The trace id shared by this task, its messages and its sub-tasks.
    pub fn trace_id(&self) -> &str {
        &self.inner.task.trace_id
    }

    /// True once cancellation was requested.
    pub fn is_cancelled(&self) -> bool {
        self.inner.shared.lock().cancelled
    }

    /// Resolves when cancellation is requested.
    pub async fn cancelled(&self) {
        let mut rx = self.inner.shared.changed.subscribe();
        loop {
            if self.is_cancelled() {
                return;
            }
            if rx.changed().await.is_err() {
                // The actor is gone: the run is being dropped anyway.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Waits for `d` in memory, or returns [`TaskError::Cancelled`] if
    /// cancellation comes first. The task stays `running` and keeps its slot
    /// (work that takes time); a restart runs it again. For a wait that
    /// should survive restarts and cost no memory, use [`sleep`](Self::sleep).
    pub async fn pause(&self, d: Duration) -> Result<(), TaskError> {
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = self.cancelled() => Err(TaskError::Cancelled),
        }
    }

    /// A durable sleep: the task is `suspended` until `d` from now, on a
    /// timer kept in the database. It holds no memory and no slot meanwhile,
    /// survives restarts and takeovers, and a cancel ends it
    /// ([`TaskError::Cancelled`]). The due time is journaled the first time
    /// (as step `courier.sleep.N`, N counting this run's sleeps and
    /// deadlines), so a replay waits for the same time.
    pub async fn sleep(&self, d: Duration) -> Result<(), TaskError> {
        let n = self.inner.next_timer.fetch_add(1, Ordering::SeqCst);
        let due = self.due_in(&format!("courier.sleep.{n}"), d).await?;
        self.sleep_until(due).await
    }

    /// A durable sleep until `at` (see [`sleep`](Self::sleep)); returns at
    /// once if `at` has passed.
    pub async fn sleep_until(&self, at: DateTime<Utc>) -> Result<(), TaskError> {
        let wait = Wait {
            until: Some(at),
            label: "timer".into(),
            ..Wait::default()
        };
        self.park(wait, |_| (now() >= at).then_some(())).await
    }

    /// The time `d` from now, journaled as step `name`.
    async fn due_in(&self, name: &str, d: Duration) -> Result<DateTime<Utc>, TaskError> {
        let d = chrono::Duration::from_std(d)
            .map_err(|_| TaskError::failed(format!("{name}: duration out of range")))?;
        self.step(name, async move { Ok(now() + d) }).await
    }

    /// A journaled step: runs `work` once and commits its result (JSON) when
    /// it ends. A later run of this task (after a crash, a takeover, a retry
    /// or a suspension) returns the journaled result instead of running
    /// `work` again; only a step in flight when its executor died runs
    /// twice. A step that fails fails the attempt and is journaled as failed;
    /// the next attempt runs it again. Steps that succeeded stay journaled
    /// for every later attempt.
    ///
    /// Rules for task code (see the README): step names are unique within a
    /// run (a loop puts its index in the name); code outside steps must be
    /// deterministic, since it runs again at every replay.
    pub async fn step<T, F>(&self, name: &str, work: F) -> Result<T, TaskError>
    where
        T: Serialize + DeserializeOwned,
        F: std::future::Future<Output = Result<T, TaskError>>,
    {
        let i = &self.inner;
        if name.is_empty() || name.len() > 200 {
            return Err(TaskError::failed(format!(
                "step name {name:?}: must be 1 to 200 bytes"
            )));
        }
        if !i
            .step_names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string())
        {
            return Err(TaskError::failed(format!(
                "step name {name:?} is used twice in this run: each step needs a name of its own (a loop puts its index in the name)"
            )));
        }
        // The journal is read at the first step that needs it (a run that
        // uses none costs no query), and only when this actor does not hold
        // it already (from an earlier run here, or the replay cache).
        if !i.shared.journal().loaded {
            let steps = retry("loading the journal", WRITE_RETRY, || {
                i.env.store.steps(i.task.id)
            })
            .await?;
            let mut j = i.shared.journal();
            if !j.loaded {
                j.steps.fill(steps);
                j.loaded = true;
            }
        }
        // The text, from under the lock: no copy of the value.
        let done = i
            .shared
            .journal()
            .steps
            .done
            .get(name)
            .map(Value::to_string);
        if let Some(out) = done {
            // From the text, as `input_as` (PostgreSQL writes `1e-7` back
            // as `0.0000001`).
            return serde_json::from_str(&out).map_err(|e| {
                TaskError::failed(format!(
                    "step {name:?}: the journaled result does not fit the step's type ({e}); was the task's code changed?"
                ))
            });
        }
        let started_at = now();
        let result = work
            .instrument(tracing::info_span!("step", step = name))
            .await;
        let (state, output, error) = match &result {
            Ok(v) => {
                let out = serde_json::to_value(v).map_err(|e| {
                    TaskError::failed(format!("step {name:?}: its result is not JSON: {e}"))
                })?;
                (Step::SUCCEEDED, Some(out), None)
            }
            Err(TaskError::Failed(msg)) => (Step::FAILED, None, Some(msg.clone())),
            // Cancelled, interrupted or fenced: nothing to journal.
            Err(_) => return result,
        };
        let step = Step {
            name: name.to_string(),
            attempt: i.task.attempts,
            state: state.to_string(),
            output,
            error,
            started_at,
            finished_at: now(),
        };
        let write = JournalWrite::begin(&i.shared);
        retry("journaling a step", WRITE_RETRY, || {
            i.env.store.record_step(&i.fence, &step)
        })
        .await?;
        write.landed(&step);
        result
    }

    /// Records a progress value (shown with the task).
    pub async fn progress(&self, value: Value) -> Result<(), TaskError> {
        let i = &self.inner;
        retry("recording progress", WRITE_RETRY, || {
            i.env.store.set_progress(&i.fence, &value)
        })
        .await?;
        Ok(())
    }

    /// Returns what `ready` finds in the mailbox or, when it finds nothing
    /// yet, suspends the task on `wait`: the task actor drops this run (this
    /// future never resolves) and the task waits in the database, holding
    /// no memory, until what it waits for wakes it; then a replay of the run
    /// comes back here and finds it.
    async fn park<T>(
        &self,
        mut wait: Wait,
        mut ready: impl FnMut(&mut Mailbox) -> Option<T>,
    ) -> Result<T, TaskError> {
        let seen = {
            let mut mb = self.inner.shared.lock();
            if let Some(v) = ready(&mut mb) {
                return Ok(v);
            }
            if mb.cancelled {
                return Err(TaskError::Cancelled);
            }
            mb.last_seq()
        };
        wait.seen_seq = seen;
        wait.children.sort();
        wait.children.dedup();
        self.inner.suspend.do_send(Suspend(wait));
        std::future::pending().await
    }

    /// Waits for the next event named `name` and returns its payload. Events
    /// that arrived earlier are kept in the task's inbox and returned at once,
    /// oldest first; each is returned once per run.
    pub async fn wait_event(&self, name: &str) -> Result<Value, TaskError> {
        let wait = Wait {
            event: Some(name.to_string()),
            label: format!("event {name}"),
            ..Wait::default()
        };
        self.park(wait, |mb| mb.take_event(name))
            .instrument(tracing::info_span!("wait_event", event = name))
            .await
    }

    /// [`wait_event`](Self::wait_event) with a deadline: `None` when
    /// `deadline` passes first. The task is suspended meanwhile, on a durable
    /// timer.
    pub async fn wait_event_until(
        &self,
        name: &str,
        deadline: DateTime<Utc>,
    ) -> Result<Option<Value>, TaskError> {
        let wait = Wait {
            event: Some(name.to_string()),
            until: Some(deadline),
            label: format!(
                "event {name} until {}",
                deadline.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ),
            ..Wait::default()
        };
        self.park(wait, |mb| match mb.take_event(name) {
            Some(v) => Some(Some(v)),
            None => (now() >= deadline).then_some(None),
        })
        .instrument(tracing::info_span!("wait_event", event = name))
        .await
    }

    /// [`wait_event_until`](Self::wait_event_until) `timeout` after the
    /// first run that came here (the deadline is journaled as step
    /// `courier.deadline.N`, N counting this run's sleeps and deadlines).
    pub async fn wait_event_for(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<Option<Value>, TaskError> {
        let n = self.inner.next_timer.fetch_add(1, Ordering::SeqCst);
        let deadline = self
            .due_in(&format!("courier.deadline.{n}"), timeout)
            .await?;
        self.wait_event_until(name, deadline).await
    }

    /// Spawns a sub-task of `kind` with `input`. It runs on any executor that
    /// serves its queue and runs `kind`; its end is reported back to this
    /// task. Spawning is idempotent across re-runs of one attempt: the n-th
    /// spawn of a run is the same sub-task every time (a retry, which is a
    /// new attempt, spawns afresh).
    pub async fn spawn(&self, kind: &str, input: Value) -> Result<Child, TaskError> {
        self.spawn_with(kind, input, TaskOptions::default()).await
    }

    /// [`spawn`](Self::spawn) with queue options for the sub-task (queue,
    /// priority, delay, retries, timeout); unset ones come from the kind's
    /// defaults. A bad option fails this run.
    pub async fn spawn_with(
        &self,
        kind: &str,
        input: Value,
        options: TaskOptions,
    ) -> Result<Child, TaskError> {
        let i = &self.inner;
        if self.is_cancelled() {
            return Err(TaskError::Cancelled);
        }
        let insert = self.prepare_child(kind, input, &options).await?;
        let seq = i.next_spawn.fetch_add(1, Ordering::SeqCst);
        let (child, created) = retry("spawning a sub-task", WRITE_RETRY, || {
            i.env.store.spawn_child(&i.fence, seq, &insert)
        })
        .await?;
        tracing::debug!(child = %child.id, kind, seq, created, "spawned sub-task");
        if child.state.is_final() {
            let c = child.clone();
            i.shared.update(|mb| mb.add_child(c));
        } else if let Some(env) = announce(i.env.me.clone(), &child) {
            i.env.bus.tell(env);
        }
        Ok(Child {
            id: child.id,
            kind: kind.to_string(),
            ctx: self.clone(),
        })
    }

    /// Spawns one sub-task of `kind` for each of `inputs`, all in one
    /// statement (a fan-out of a hundred is one write, not a hundred), and
    /// returns them in order. Each is what [`spawn`](Self::spawn) would
    /// have made, numbered in turn, so a re-run of the same attempt gets
    /// the same sub-tasks back.
    pub async fn spawn_all(
        &self,
        kind: &str,
        inputs: impl IntoIterator<Item = Value>,
    ) -> Result<Vec<Child>, TaskError> {
        self.spawn_all_with(kind, inputs, TaskOptions::default())
            .await
    }

    /// [`spawn_all`](Self::spawn_all) with the same queue options for every
    /// sub-task.
    pub async fn spawn_all_with(
        &self,
        kind: &str,
        inputs: impl IntoIterator<Item = Value>,
        options: TaskOptions,
    ) -> Result<Vec<Child>, TaskError> {
        let i = &self.inner;
        if self.is_cancelled() {
            return Err(TaskError::Cancelled);
        }
        let mut inserts = Vec::new();
        for input in inputs {
            inserts.push(self.prepare_child(kind, input, &options).await?);
        }
        if inserts.is_empty() {
            return Ok(Vec::new());
        }
        let n = i32::try_from(inserts.len())
            .map_err(|_| TaskError::failed("too many sub-tasks in one spawn"))?;
        let first = i.next_spawn.fetch_add(n, Ordering::SeqCst);
        let spawned = retry("spawning sub-tasks", WRITE_RETRY, || {
            i.env.store.spawn_children(&i.fence, first, &inserts)
        })
        .await?;
        tracing::debug!(kind, first, n, "spawned sub-tasks");
        let mut children = Vec::with_capacity(spawned.len());
        for (child, _created) in spawned {
            if child.state.is_final() {
                let c = child.clone();
                i.shared.update(|mb| mb.add_child(c));
            } else if let Some(env) = announce(i.env.me.clone(), &child) {
                i.env.bus.tell(env);
            }
            children.push(Child {
                id: child.id,
                kind: kind.to_string(),
                ctx: self.clone(),
            });
        }
        Ok(children)
    }

    /// The row of a sub-task of this run: the checks and the kind's
    /// defaults, as for any create. An unknown kind or a bad option fails
    /// the run with what was wrong.
    async fn prepare_child(
        &self,
        kind: &str,
        input: Value,
        options: &TaskOptions,
    ) -> Result<courier_store::TaskInsert, TaskError> {
        let i = &self.inner;
        let request = || Request {
            kind,
            input: input.clone(),
            idempotency_key: None,
            trace_id: i.task.trace_id.clone(),
            options,
            created_by: i.fence.executor_id.clone(),
        };
        retry("preparing a sub-task", WRITE_RETRY, || {
            prepare(&i.env.store, &i.env.local_kinds, request())
        })
        .await
        .map_err(spawn_refused)
    }

    /// Waits for every child and returns their outputs in the order given.
    /// The first failed child (in that order) fails the wait. The task is
    /// suspended once for the whole wait, not once per child.
    pub async fn join_all(&self, children: &[Child]) -> Result<Vec<Value>, TaskError> {
        let ids: Vec<Uuid> = children.iter().map(|c| c.id).collect();
        let missing = {
            let mb = self.inner.shared.lock();
            ids.iter().any(|id| !mb.children.contains_key(id))
        };
        if missing {
            // Reports that came before this run listened are in the database.
            let i = &self.inner;
            let known = retry("reading sub-tasks", WRITE_RETRY, || {
                i.env.store.children(i.task.id)
            })
            .await?;
            i.shared.update(|mb| {
                for t in known.into_iter().filter(|t| t.state.is_final()) {
                    mb.add_child(t);
                }
            });
            let open: Vec<Uuid> = {
                let mb = self.inner.shared.lock();
                ids.iter()
                    .filter(|id| !mb.children.contains_key(id))
                    .copied()
                    .collect()
            };
            let wait = Wait {
                label: format!(
                    "{} sub-task{}",
                    open.len(),
                    if open.len() == 1 { "" } else { "s" }
                ),
                children: open,
                ..Wait::default()
            };
            self.park(wait, |mb| {
                ids.iter()
                    .all(|id| mb.children.contains_key(id))
                    .then_some(())
            })
            .await?;
        }
        let mut out = Vec::with_capacity(children.len());
        for c in children {
            out.push(c.join().await?);
        }
        Ok(out)
    }

    async fn wait_child(&self, id: Uuid) -> Result<Task, TaskError> {
        if let Some(t) = self.inner.shared.lock().children.get(&id) {
            return Ok(t.clone());
        }
        let i = &self.inner;
        // The report may have come before this run was listening (a re-run):
        // the database knows.
        let now = retry("reading a sub-task", WRITE_RETRY, || i.env.store.task(id)).await?;
        if now.state.is_final() {
            i.shared.update(|mb| mb.add_child(now.clone()));
            return Ok(now);
        }
        let wait = Wait {
            label: "1 sub-task".into(),
            children: vec![id],
            ..Wait::default()
        };
        self.park(wait, |mb| mb.children.get(&id).cloned()).await
    }
}

impl Child {
    /// The sub-task's id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The sub-task's kind.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// Waits for the sub-task to end and returns it (in any final state).
    pub async fn outcome(&self) -> Result<Task, TaskError> {
        self.ctx.wait_child(self.id).await
    }

    /// Waits for the sub-task and returns its output; a failed or cancelled
    /// sub-task is an error of this run.
    pub async fn join(&self) -> Result<Value, TaskError> {
        let t = self.outcome().await?;
        match t.state {
            TaskState::Succeeded => Ok(t.output.unwrap_or(Value::Null)),
            TaskState::Failed => Err(TaskError::failed(format!(
                "sub-task {} ({}) failed: {}",
                t.id,
                t.kind,
                t.error.unwrap_or_default()
            ))),
            _ => Err(TaskError::failed(format!(
                "sub-task {} ({}) was cancelled",
                t.id, t.kind
            ))),
        }
    }
}

/// A sub-task that could not be prepared: an unknown kind or a bad option
/// fails the run with what was wrong; anything else is the store's error.
fn spawn_refused(e: crate::error::Error) -> TaskError {
    match e {
        crate::error::Error::UnknownKind(k) => TaskError::failed(format!(
            "cannot spawn sub-task: no executor runs kind {k:?}"
        )),
        e @ crate::error::Error::InvalidField { .. } => {
            TaskError::failed(format!("cannot spawn sub-task: {e}"))
        }
        e => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_taken_once_in_seq_order_per_name() {
        let mut mb = Mailbox::default();
        assert!(mb.add_event(5, "b".into(), Value::from(5)));
        assert!(mb.add_event(2, "a".into(), Value::from(2)));
        assert!(mb.add_event(9, "a".into(), Value::from(9)));
        assert!(!mb.add_event(2, "a".into(), Value::from(2)), "duplicate");
        assert_eq!(mb.take_event("a"), Some(Value::from(2)));
        assert_eq!(mb.take_event("a"), Some(Value::from(9)));
        assert_eq!(mb.take_event("a"), None);
        assert_eq!(mb.take_event("b"), Some(Value::from(5)));
        assert_eq!(mb.take_event("c"), None);
    }

    #[test]
    fn a_new_run_takes_every_event_again_and_a_late_one_in_its_place() {
        let mut mb = Mailbox::default();
        for (seq, name) in [(1, "a"), (2, "b"), (4, "a"), (6, "a")] {
            assert!(mb.add_event(seq, name.into(), Value::from(seq)));
        }
        assert_eq!(mb.take_event("a"), Some(Value::from(1)));
        assert_eq!(mb.take_event("a"), Some(Value::from(4)));
        // One that sorts before a consumed one (never from the actor, which
        // reads in `seq` order, but the mailbox stays right).
        assert!(mb.add_event(3, "a".into(), Value::from(3)));
        assert_eq!(mb.take_event("a"), Some(Value::from(3)));
        assert_eq!(mb.take_event("a"), Some(Value::from(6)));
        assert_eq!(mb.take_event("a"), None);
        // Found nothing, then one comes: found.
        assert!(mb.add_event(9, "a".into(), Value::from(9)));
        assert_eq!(mb.take_event("a"), Some(Value::from(9)));
        assert_eq!(mb.last_seq(), 9);
        mb.new_run();
        let all: Vec<_> = std::iter::from_fn(|| mb.take_event("a")).collect();
        assert_eq!(all, [1, 3, 4, 6, 9].map(Value::from));
        assert_eq!(mb.take_event("b"), Some(Value::from(2)));
    }

    #[test]
    fn events_handed_to_the_replay_cache_come_back_whole() {
        let mut mb = Mailbox::default();
        for seq in 1..=3 {
            mb.add_event(seq, "go".into(), Value::from(seq));
        }
        mb.take_event("go");
        let (events, bytes) = mb.take_events();
        assert!(bytes > 0);
        assert_eq!(mb.last_seq(), 0, "handed over");
        let mut next = Mailbox::default();
        next.restore_events(events, bytes);
        assert_eq!(next.last_seq(), 3);
        assert!(!next.add_event(2, "go".into(), Value::from(2)), "known");
        assert!(next.add_event(4, "go".into(), Value::from(4)));
        let all: Vec<_> = std::iter::from_fn(|| next.take_event("go")).collect();
        assert_eq!(
            all,
            [1, 2, 3, 4].map(Value::from),
            "a new run sees them all"
        );
    }
}
