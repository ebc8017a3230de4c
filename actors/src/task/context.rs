//! What a run sees: [`TaskContext`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::watch;
use tracing::Instrument;
use uuid::Uuid;

use courier_bus::Address;

use super::signals::Parked;
use crate::creation::{prepare, LocalKinds, Request};
use crate::error::TaskError;
use crate::model::{Task, TaskState};
use crate::options::TaskOptions;
use crate::protocol::{announce, envelope, Bus, Msg};
use crate::store::{retry, Fence, Store};

/// How long a run's own writes are retried through a database outage before
/// the run is interrupted (and the task handed back).
const WRITE_RETRY: Duration = Duration::from_secs(60);

/// What the task actor has received for the run, shared with the run.
#[derive(Default)]
pub(crate) struct Mailbox {
    /// Every event known for the task, by `seq`.
    events: Vec<(i64, String, Value)>,
    /// The `seq`s this run has consumed.
    consumed: Vec<i64>,
    /// Final sub-tasks, by id.
    children: HashMap<Uuid, Task>,
    cancelled: bool,
}

impl Mailbox {
    /// Adds an event unless it is known; true when it was new.
    pub(crate) fn add_event(&mut self, seq: i64, name: String, payload: Value) -> bool {
        match self.events.binary_search_by_key(&seq, |e| e.0) {
            Ok(_) => false,
            Err(i) => {
                self.events.insert(i, (seq, name, payload));
                true
            }
        }
    }

    fn take_event(&mut self, name: &str) -> Option<Value> {
        let (seq, _, payload) = self
            .events
            .iter()
            .find(|(seq, n, _)| n == name && !self.consumed.contains(seq))?;
        self.consumed.push(*seq);
        Some(payload.clone())
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
    /// Bumped after every change of the mailbox; a parked run wakes on it.
    changed: watch::Sender<u64>,
    followers: Mutex<Followers>,
}

impl Shared {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Shared {
            mailbox: Mutex::new(Mailbox::default()),
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

    /// Changes the mailbox and wakes the run.
    pub(crate) fn update(&self, f: impl FnOnce(&mut Mailbox)) {
        f(&mut self.lock());
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }
}

struct Inner {
    task: Task,
    fence: Fence,
    store: Store,
    bus: Bus,
    me: Address,
    /// Kinds this executor runs (spawning one of those needs no lookup).
    local_kinds: LocalKinds,
    shared: Arc<Shared>,
    next_spawn: AtomicI32,
    /// The executor, told when this run parks and resumes.
    parked: actix::Recipient<Parked>,
}

/// While alive, the run counts as parked (suspended) with its executor.
struct ParkGuard<'a>(&'a Inner);

impl<'a> ParkGuard<'a> {
    fn new(inner: &'a Inner) -> Self {
        inner.parked.do_send(Parked {
            task_id: inner.task.id,
            parked: true,
        });
        ParkGuard(inner)
    }
}

impl Drop for ParkGuard<'_> {
    fn drop(&mut self) {
        self.0.parked.do_send(Parked {
            task_id: self.0.task.id,
            parked: false,
        });
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
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        task: Task,
        fence: Fence,
        store: Store,
        bus: Bus,
        me: Address,
        local_kinds: LocalKinds,
        shared: Arc<Shared>,
        parked: actix::Recipient<Parked>,
    ) -> Self {
        TaskContext {
            inner: Arc::new(Inner {
                task,
                fence,
                store,
                bus,
                me,
                local_kinds,
                shared,
                next_spawn: AtomicI32::new(0),
                parked,
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
        serde_json::from_value(self.inner.task.input.clone()).map_err(|e| {
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

    /// Sleeps for `d`, or returns [`TaskError::Cancelled`] if cancellation
    /// comes first.
    pub async fn sleep(&self, d: Duration) -> Result<(), TaskError> {
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = self.cancelled() => Err(TaskError::Cancelled),
        }
    }

    /// Records a progress value (shown with the task).
    pub async fn progress(&self, value: Value) -> Result<(), TaskError> {
        let i = &self.inner;
        retry("recording progress", WRITE_RETRY, || {
            i.store.set_progress(&i.fence, &value)
        })
        .await?;
        Ok(())
    }

    async fn set_state(&self, to: TaskState) -> Result<(), TaskError> {
        let i = &self.inner;
        let task = retry("changing task state", WRITE_RETRY, || {
            i.store.set_owned_state(&i.fence, to)
        })
        .await?;
        i.shared.publish(&i.bus, &i.me, task);
        Ok(())
    }

    /// Waits until `ready` finds what the run waits for in the mailbox. While
    /// it waits the task is `suspended`: the run holds no thread, only memory.
    async fn park<T>(
        &self,
        mut ready: impl FnMut(&mut Mailbox) -> Option<T>,
    ) -> Result<T, TaskError> {
        let mut rx = self.inner.shared.changed.subscribe();
        {
            let mut mb = self.inner.shared.lock();
            if let Some(v) = ready(&mut mb) {
                return Ok(v);
            }
            if mb.cancelled {
                return Err(TaskError::Cancelled);
            }
        }
        self.set_state(TaskState::Suspended).await?;
        let _parked = ParkGuard::new(&self.inner);
        loop {
            if rx.changed().await.is_err() {
                return Err(TaskError::Interrupted("the task actor stopped".into()));
            }
            let found = {
                let mut mb = self.inner.shared.lock();
                match ready(&mut mb) {
                    Some(v) => Some(Ok(v)),
                    None if mb.cancelled => Some(Err(TaskError::Cancelled)),
                    None => None,
                }
            };
            match found {
                Some(Ok(v)) => {
                    self.set_state(TaskState::Running).await?;
                    return Ok(v);
                }
                Some(Err(e)) => return Err(e),
                None => continue,
            }
        }
    }

    /// Waits for the next event named `name` and returns its payload. Events
    /// that arrived earlier are kept in the task's inbox and returned at once,
    /// oldest first; each is returned once per run.
    pub async fn wait_event(&self, name: &str) -> Result<Value, TaskError> {
        self.park(|mb| mb.take_event(name))
            .instrument(tracing::info_span!("wait_event", event = name))
            .await
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
        let request = || Request {
            kind,
            input: input.clone(),
            idempotency_key: None,
            trace_id: i.task.trace_id.clone(),
            options: &options,
            created_by: i.fence.executor_id.clone(),
        };
        let insert = match retry("preparing a sub-task", WRITE_RETRY, || {
            prepare(&i.store, &i.local_kinds, request())
        })
        .await
        {
            Ok(insert) => insert,
            Err(crate::Error::UnknownKind(k)) => {
                return Err(TaskError::failed(format!(
                    "cannot spawn sub-task: no executor runs kind {k:?}"
                )))
            }
            Err(e @ crate::Error::InvalidField { .. }) => {
                return Err(TaskError::failed(format!("cannot spawn sub-task: {e}")))
            }
            Err(e) => return Err(e.into()),
        };
        let seq = i.next_spawn.fetch_add(1, Ordering::SeqCst);
        let (child, created) = retry("spawning a sub-task", WRITE_RETRY, || {
            i.store.spawn_child(&i.fence, seq, &insert)
        })
        .await?;
        tracing::debug!(child = %child.id, kind, seq, created, "spawned sub-task");
        if child.state.is_final() {
            let c = child.clone();
            i.shared.update(|mb| mb.add_child(c));
        } else if let Some(env) = announce(i.me.clone(), &child) {
            i.bus.tell(env);
        }
        Ok(Child {
            id: child.id,
            kind: kind.to_string(),
            ctx: self.clone(),
        })
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
                i.store.children(i.task.id)
            })
            .await?;
            i.shared.update(|mb| {
                for t in known.into_iter().filter(|t| t.state.is_final()) {
                    mb.add_child(t);
                }
            });
            self.park(|mb| {
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
        let now = retry("reading a sub-task", WRITE_RETRY, || i.store.task(id)).await?;
        if now.state.is_final() {
            i.shared.update(|mb| mb.add_child(now.clone()));
            return Ok(now);
        }
        self.park(|mb| mb.children.get(&id).cloned()).await
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
}
