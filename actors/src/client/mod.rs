//! The client API: create, wait for, follow, signal and cancel tasks.
//!
//! - this file: [`Client`];
//! - [`wait`]: one wait for one task (a one-shot actor the finish is pushed to);
//! - [`watch`]: following a task's every state change.

pub mod wait;
pub mod watch;

use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use courier_bus::Address;

use self::wait::WaitSession;
use self::watch::TaskWatch;
use crate::error::{Error, Result};
use crate::model::{
    validate_kind_name, ExecutorInfo, HistoryEntry, NewTask, Task, TaskEvent, TaskFilter,
};
use crate::notify::notify_finished;
use crate::protocol::{envelope, new_trace_id, pool_of, Bus, Msg};
use crate::store::{retry, Store, TaskInsert};

/// The longest `idempotency_key` accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 256;

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
    local_kinds: Vec<String>,
}

impl Client {
    /// A client that sends through `bus` as node `node`. `local_kinds`: the
    /// kinds an executor of this process runs (no lookup needed for those).
    pub(crate) fn new(store: Store, bus: Bus, node: String, local_kinds: Vec<String>) -> Client {
        Client {
            store,
            bus,
            node,
            local_kinds,
        }
    }

    /// The store behind this client.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The bus this client sends through.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    fn me(&self) -> Address {
        Address::Web {
            node: self.node.clone(),
            session: "client".into(),
        }
    }

    /// Checks a new task before it is committed.
    pub async fn validate(&self, t: &NewTask) -> Result<()> {
        validate_kind_name(&t.kind)?;
        if let Some(k) = &t.idempotency_key {
            if k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY {
                return Err(Error::Invalid(format!(
                    "idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY} bytes"
                )));
            }
        }
        if !self.local_kinds.contains(&t.kind) && !self.store.known_kinds().await?.contains(&t.kind)
        {
            return Err(Error::UnknownKind(t.kind.clone()));
        }
        Ok(())
    }

    async fn insert(&self, t: NewTask, watcher: Option<&str>) -> Result<Submitted> {
        self.validate(&t).await?;
        let insert = TaskInsert {
            id: Uuid::now_v7(),
            kind: t.kind,
            input: t.input,
            idempotency_key: t.idempotency_key,
            trace_id: t
                .trace_id
                .filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
                .map(|t| t.to_ascii_lowercase())
                .unwrap_or_else(new_trace_id),
            created_by: self.node.clone(),
        };
        let (task, created) = self.store.create_task_watched(&insert, watcher).await?;
        if created {
            crate::metrics::metrics().task_created(&task.kind);
        }
        Ok(Submitted { task, created })
    }

    fn start(&self, task: &Task) {
        // Flow 1: the task is committed; tell the pool. If this message is
        // lost, an executor's sweep claims the task anyway.
        self.bus.tell(envelope(
            self.me(),
            pool_of(&task.kind),
            &task.trace_id,
            Msg::StartTask {
                task_id: task.id,
                kind: task.kind.clone(),
            },
        ));
    }

    /// Creates a task (flow 1) and returns at once.
    pub async fn submit(&self, t: NewTask) -> Result<Submitted> {
        let s = self.insert(t, None).await?;
        if s.created {
            self.start(&s.task);
        }
        tracing::info!(task_id = %s.task.id, kind = %s.task.kind, trace_id = %s.task.trace_id, created = s.created, "task submitted");
        Ok(s)
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
            let s = self.insert(t, Some(&session.watcher)).await?;
            if s.created {
                self.start(&s.task);
                tracing::info!(task_id = %s.task.id, kind = %s.task.kind, trace_id = %s.task.trace_id, "task submitted; waiting");
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
        self.store.task(id).await
    }

    /// Tasks matching the filter, newest first.
    pub async fn list(&self, f: &TaskFilter) -> Result<Vec<Task>> {
        self.store.list_tasks(f).await
    }

    /// The task's sub-tasks in spawn order.
    pub async fn children(&self, id: Uuid) -> Result<Vec<Task>> {
        self.store.task(id).await?;
        self.store.children(id).await
    }

    /// The task's event inbox.
    pub async fn events(&self, id: Uuid) -> Result<Vec<TaskEvent>> {
        self.store.task(id).await?;
        self.store.events(id).await
    }

    /// The task's state history.
    pub async fn history(&self, id: Uuid) -> Result<Vec<HistoryEntry>> {
        self.store.task(id).await?;
        self.store.history(id).await
    }

    /// Every executor the store knows.
    pub async fn executors(&self) -> Result<Vec<ExecutorInfo>> {
        self.store.executors().await
    }

    /// Flow 3: commits an event to the task's inbox, then sends it to the
    /// task wherever it runs. Refused for an unknown task ([`Error::NotFound`])
    /// and for a finished one ([`Error::Conflict`]).
    pub async fn send_event(&self, id: Uuid, name: &str, payload: Value) -> Result<TaskEvent> {
        if name.is_empty() || name.len() > 128 {
            return Err(Error::Invalid("event name must be 1 to 128 bytes".into()));
        }
        let ev = self.store.add_event(id, name, &payload).await?;
        let trace = self
            .store
            .task(id)
            .await
            .map(|t| t.trace_id)
            .unwrap_or_default();
        self.bus.tell(envelope(
            self.me(),
            Address::task(id),
            &trace,
            Msg::TaskEvent {
                task_id: id,
                seq: ev.seq,
                name: ev.name.clone(),
                payload: ev.payload.0.clone(),
            },
        ));
        tracing::info!(task_id = %id, event = name, seq = ev.seq, "event committed and sent");
        Ok(ev)
    }

    /// Flow 3: requests cancellation of the task and of all its unfinished
    /// sub-tasks. A pending task is cancelled at once; a running or suspended
    /// one is told and stops at its next wait. Returns the task as it stands.
    pub async fn cancel(&self, id: Uuid) -> Result<Task> {
        let root = self.store.task(id).await?;
        if root.state.is_final() {
            return Ok(root);
        }
        let mut all = vec![root];
        all.extend(self.store.open_descendants(id).await?);
        for t in &all {
            self.cancel_one(t).await?;
        }
        self.store.task(id).await
    }

    async fn cancel_one(&self, t: &Task) -> Result<()> {
        let by = self.node.clone();
        if let Some(done) = self.store.cancel_pending(t.id, &by).await? {
            notify_finished(&self.store, &self.bus, self.me(), &done, None).await;
            return Ok(());
        }
        let now = retry("requesting cancellation", Duration::from_secs(10), || {
            self.store.request_cancel(t.id)
        })
        .await?;
        if !now.state.is_final() {
            self.bus.tell(envelope(
                self.me(),
                Address::task(t.id),
                &t.trace_id,
                Msg::CancelTask { task_id: t.id },
            ));
        }
        Ok(())
    }
}
