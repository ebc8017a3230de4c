//! Starting and stopping courier in a process, and the client API.
//!
//! ```no_run
//! # async fn demo() -> Result<(), courier_actors::Error> {
//! use courier_actors::{NewTask, Runtime, TaskContext, TaskError};
//! use serde_json::{json, Value};
//!
//! let rt = Runtime::builder()
//!     .database("sqlite://courier.db")
//!     .register("hello", |ctx: TaskContext| async move {
//!         Ok::<Value, TaskError>(json!({"hello": ctx.input()["name"]}))
//!     })
//!     .start()
//!     .await?;
//! let done = rt.client()
//!     .submit_and_wait(NewTask::new("hello", json!({"name": "world"})), std::time::Duration::from_secs(5))
//!     .await?;
//! assert_eq!(done.task.output, Some(json!({"hello": "world"})));
//! rt.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Everything here must run inside an actix `System` (`#[actix::main]`,
//! `#[actix::test]`, or `actix::System::new().block_on(…)`).

use std::time::Duration;

use actix::prelude::*;
use serde_json::Value;
use uuid::Uuid;

use courier_bus::{Address, Bus as BusActor};

use crate::error::{Error, Result};
use crate::executor::{ExecutorActor, ExecutorConfig, ExecutorHandle};
use crate::kind::{validate_kind_name, Registry, TaskKind};
use crate::model::{ExecutorInfo, HistoryEntry, NewTask, Task, TaskEvent, TaskFilter};
use crate::protocol::{envelope, new_trace_id, pool_of, Bus, Msg};
use crate::store::{retry, ExecutorRegistration, Store, StoreOptions, TaskInsert};
use crate::task::notify_finished;
use crate::waiter::{Dismiss, Follower, WaitFor, Waiter};

/// The longest `idempotency_key` accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 256;

/// Builds a [`Runtime`].
pub struct RuntimeBuilder {
    url: String,
    /// Where the Unix-socket transport keeps its sockets, if used.
    socket_dir: Option<std::path::PathBuf>,
    /// The broker of the AMQP transport, if used.
    amqp: Option<courier_bus::transport::amqp::AmqpConfig>,
    store_options: StoreOptions,
    store: Option<Store>,
    node: Option<String>,
    registry: Registry,
    executor: Option<ExecutorConfig>,
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder {
            url: "sqlite://courier.db".into(),
            socket_dir: None,
            amqp: None,
            store_options: StoreOptions::default(),
            store: None,
            node: None,
            registry: Registry::new(),
            executor: Some(ExecutorConfig::default()),
        }
    }
}

impl RuntimeBuilder {
    /// The database: `sqlite://PATH` (default `sqlite://courier.db`) or `postgres://…`.
    pub fn database(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// Adds the Unix-socket transport: this process binds
    /// `DIR/<node>.sock` and talks to every other courier process whose
    /// socket is in `DIR` (processes on one host).
    pub fn socket_transport(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.socket_dir = Some(dir.into());
        self
    }

    /// Adds the AMQP transport: nodes on any host that use the same broker
    /// and prefix reach each other through it.
    pub fn amqp_transport(mut self, config: courier_bus::transport::amqp::AmqpConfig) -> Self {
        self.amqp = Some(config);
        self
    }

    /// Connection settings beyond the URL.
    pub fn store_options(mut self, o: StoreOptions) -> Self {
        self.store_options = o;
        self
    }

    /// Uses an already opened store instead of a URL.
    pub fn store(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    /// The node name, used in bus addresses and executor ids (default:
    /// `<hostname>-<pid>`).
    pub fn node(mut self, node: impl Into<String>) -> Self {
        self.node = Some(node.into());
        self
    }

    /// Registers a task kind that this process's executor runs.
    pub fn register(mut self, name: impl Into<String>, kind: impl TaskKind) -> Self {
        self.registry.register(name, kind);
        self
    }

    /// Registers every kind of `registry`.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Executor tuning.
    pub fn executor(mut self, cfg: ExecutorConfig) -> Self {
        self.executor = Some(cfg);
        self
    }

    /// Runs no executor here: this process only creates and watches tasks.
    pub fn without_executor(mut self) -> Self {
        self.executor = None;
        self
    }

    /// Connects to the database, applies migrations, starts the bus and (with
    /// kinds registered) an executor, which first runs a recovery pass.
    pub async fn start(self) -> Result<Runtime> {
        let store = match self.store {
            Some(s) => {
                s.migrate().await?;
                s
            }
            None => Store::connect_with(&self.url, self.store_options).await?,
        };
        let host = hostname();
        let node = match self.node {
            Some(n) => {
                Address::executor(n.clone()).map_err(|e| Error::Invalid(e.to_string()))?;
                n
            }
            None => sanitize(&format!("{host}-{}", std::process::id())),
        };
        let bus: Bus = BusActor::start_bus(node.clone());
        if let Some(dir) = &self.socket_dir {
            let t = courier_bus::transport::socket::SocketTransport::start(dir, &node, bus.clone())
                .await
                .map_err(|e| Error::Transport {
                    transport: "socket",
                    message: e.to_string(),
                })?;
            bus.add_transport(Box::new(t)).await?;
        }
        if let Some(cfg) = self.amqp.clone() {
            let t = courier_bus::transport::amqp::AmqpTransport::start(cfg, &node, bus.clone());
            bus.add_transport(Box::new(t)).await?;
        }
        let executor = match self.executor {
            Some(cfg) if !self.registry.is_empty() => {
                let suffix = Uuid::now_v7().simple().to_string();
                let id = format!("{node}-{}", &suffix[20..]);
                store
                    .register_executor(&ExecutorRegistration::this_process(
                        id.clone(),
                        node.clone(),
                        host.clone(),
                        self.registry.names(),
                        cfg.capacity,
                    ))
                    .await?;
                let addr = ExecutorActor::new(
                    id.clone(),
                    node.clone(),
                    host,
                    cfg,
                    self.registry.clone(),
                    store.clone(),
                    bus.clone(),
                )
                .start();
                Some(ExecutorHandle { id, addr })
            }
            _ => None,
        };
        // Kinds run here need no lookup to validate; without an executor the
        // client asks the store which kinds some executor runs.
        let local_kinds = if executor.is_some() {
            self.registry.names()
        } else {
            Vec::new()
        };
        Ok(Runtime {
            client: Client {
                store,
                bus,
                node,
                local_kinds,
            },
            executor,
        })
    }
}

/// courier running in this process: a bus, a store, and an executor for the
/// registered kinds.
pub struct Runtime {
    client: Client,
    executor: Option<ExecutorHandle>,
}

impl Runtime {
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// The API for creating and following tasks.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The id of this process's executor, if it runs one.
    pub fn executor_id(&self) -> Option<&str> {
        self.executor.as_ref().map(|e| e.id.as_str())
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.client.store
    }

    /// The bus.
    pub fn bus(&self) -> &Bus {
        &self.client.bus
    }

    /// Stops cleanly: the executor stops claiming, every running or suspended
    /// task is handed back to `pending` at once (another executor, or the next
    /// start of this one, picks it up), and the executor is recorded as stopped.
    pub async fn shutdown(self) {
        if let Some(e) = &self.executor {
            let id = e.stop(true).await.unwrap_or_else(|| e.id.clone());
            if let Err(err) = self.client.store.stop_executor(&id).await {
                tracing::warn!(error = %err, "could not record the executor as stopped");
            }
        }
    }

    /// Stops every actor of this runtime without a single database write, as
    /// if the process had been killed. The executor stays `alive` in the store
    /// until another executor notices its silence. For tests of recovery.
    pub async fn kill(self) {
        if let Some(e) = &self.executor {
            e.stop(false).await;
        }
    }
}

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
        let session = WaitSession::open(self).await?;
        let result = async {
            // The task and its watcher are committed together, and the waiter
            // is on the bus before the task can start: nothing can finish
            // unseen.
            let s = self.insert(t, Some(&session.watcher)).await?;
            if s.created {
                self.start(&s.task);
                tracing::info!(task_id = %s.task.id, kind = %s.task.kind, trace_id = %s.task.trace_id, "task submitted; waiting");
            }
            let (task, finished) = session.wait(self, &s.task, timeout, until).await?;
            Ok(Waited {
                task,
                created: s.created,
                finished,
            })
        }
        .await;
        session
            .close(self, result.as_ref().ok().map(|w: &Waited| w.task.id))
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
        let session = WaitSession::open(self).await?;
        let result = async {
            let now = self.store.watch(id, &session.watcher, false).await?;
            session.wait(self, &now, timeout, until).await
        }
        .await;
        session.close(self, Some(id)).await;
        result
    }

    /// Follows a task: the returned [`TaskWatch`] yields the task as it
    /// stands, then each state change pushed by its executor, and ends after
    /// the final state.
    pub async fn watch(&self, id: Uuid) -> Result<TaskWatch> {
        let address = Address::Web {
            node: self.node.clone(),
            session: Uuid::now_v7().simple().to_string(),
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let follower = Follower { task_id: id, tx }.start();
        self.bus
            .register(address.clone(), follower.clone().recipient())
            .await?;
        let mut watch = TaskWatch {
            task_id: id,
            client: self.clone(),
            address: address.clone(),
            follower,
            rx,
            first: None,
            last: None,
            done: false,
        };
        let now = self.store.watch(id, &address.to_string(), true).await?;
        if !now.state.is_final() {
            // If the task runs now, its actor adds us; if it starts later, it
            // finds us in the store.
            self.bus.tell(envelope(
                self.me(),
                Address::task(id),
                &now.trace_id,
                Msg::WatchTask {
                    task_id: id,
                    watcher: address,
                },
            ));
        }
        watch.first = Some(now);
        Ok(watch)
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

/// A stream of one task's states; see [`Client::watch`]. Dropping it ends
/// the watch.
pub struct TaskWatch {
    task_id: Uuid,
    client: Client,
    address: Address,
    follower: Addr<Follower>,
    rx: tokio::sync::mpsc::UnboundedReceiver<Task>,
    first: Option<Task>,
    /// What was yielded last, to drop repeats.
    last: Option<(crate::model::TaskState, chrono::DateTime<chrono::Utc>)>,
    done: bool,
}

impl TaskWatch {
    /// The next state of the task, or `None` after the final one.
    pub async fn next(&mut self) -> Option<Task> {
        loop {
            if self.done {
                return None;
            }
            let t = match self.first.take() {
                Some(t) => t,
                None => self.rx.recv().await?,
            };
            let key = (t.state, t.updated_at);
            if self
                .last
                .is_some_and(|(s, at)| s == t.state && at >= t.updated_at)
            {
                continue;
            }
            self.last = Some(key);
            self.done = t.state.is_final();
            return Some(t);
        }
    }
}

impl Drop for TaskWatch {
    fn drop(&mut self) {
        self.client.bus.unregister(self.address.clone());
        self.follower.do_send(Dismiss);
        if !self.done {
            let store = self.client.store.clone();
            let watcher = self.address.to_string();
            let id = self.task_id;
            actix::spawn(async move {
                let _ = store.remove_watcher(id, &watcher).await;
            });
        }
    }
}

/// One wait for one task: a [`Waiter`] registered on the bus at
/// `web/<node>/<session>`, whose address is recorded as the task's watcher.
struct WaitSession {
    address: Address,
    watcher: String,
    waiter: Addr<Waiter>,
    rx: std::sync::Mutex<Option<tokio::sync::oneshot::Receiver<Task>>>,
    /// The answer was pushed by the executor, which removed the watcher row
    /// when it read it; otherwise `close` removes it.
    pushed: std::sync::atomic::AtomicBool,
}

impl WaitSession {
    async fn open(c: &Client) -> Result<WaitSession> {
        let address = Address::Web {
            node: c.node.clone(),
            session: Uuid::now_v7().simple().to_string(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let waiter = Waiter {
            task_id: None,
            reply: Some(tx),
            early: Vec::new(),
        }
        .start();
        c.bus
            .register(address.clone(), waiter.clone().recipient())
            .await?;
        Ok(WaitSession {
            watcher: address.to_string(),
            address,
            waiter,
            rx: std::sync::Mutex::new(Some(rx)),
            pushed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Waits for `task` to finish. `task` was read in the transaction that
    /// recorded the watcher, so if it was not final then, the executor will
    /// push the finished task here.
    async fn wait(
        &self,
        c: &Client,
        task: &Task,
        timeout: Duration,
        until: impl std::future::Future<Output = ()>,
    ) -> Result<(Task, bool)> {
        tracing::debug!(task_id = %task.id, state = %task.state, watcher = %self.watcher, "waiting");
        if task.state.is_final() {
            return Ok((task.clone(), true));
        }
        let rx = self
            .rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or(Error::Stopped)?;
        self.waiter.do_send(WaitFor(task.id));
        // The finish is pushed here; should the push be lost (no route to
        // this node at that moment: a transport reconnecting), the store is
        // asked now and then, so a wait never outlasts the task by more than
        // a few seconds.
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = rx;
        let mut recheck = WAIT_RECHECK_FIRST;
        tokio::pin!(until);
        let answer = loop {
            let next = (tokio::time::Instant::now() + recheck).min(deadline);
            tokio::select! {
                r = &mut rx => break r.ok(),
                _ = &mut until => break None,
                _ = tokio::time::sleep_until(next) => {
                    if next >= deadline {
                        break None;
                    }
                    if let Ok(t) = c.store.task(task.id).await {
                        if t.state.is_final() {
                            tracing::warn!(task_id = %t.id, "the finish was not pushed to this waiter; read from the store");
                            return Ok((t, true));
                        }
                    }
                    recheck = (recheck * 2).min(WAIT_RECHECK_MAX);
                }
            }
        };
        match answer {
            Some(t) if t.id == task.id => {
                self.pushed.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok((t, true))
            }
            _ => {
                let t = c.store.task(task.id).await?;
                let fin = t.state.is_final();
                Ok((t, fin))
            }
        }
    }

    async fn close(self, c: &Client, task: Option<Uuid>) {
        c.bus.unregister(self.address);
        self.waiter.do_send(Dismiss);
        if let Some(id) = task {
            if !self.pushed.load(std::sync::atomic::Ordering::SeqCst) {
                if let Err(e) = c.store.remove_watcher(id, &self.watcher).await {
                    tracing::debug!(error = %e, "could not remove a watcher; it goes when the task finishes");
                }
            }
        }
    }
}

/// When a waiting caller first asks the store, in case the push of the
/// finish was lost; then twice as long each time, up to `WAIT_RECHECK_MAX`.
const WAIT_RECHECK_FIRST: Duration = Duration::from_secs(1);
const WAIT_RECHECK_MAX: Duration = Duration::from_secs(5);

/// This host's name (Linux: the kernel's; elsewhere `$HOSTNAME` or `localhost`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| sanitize(s.trim()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Keeps only the characters allowed in address segments.
fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':') {
                c
            } else {
                '-'
            }
        })
        .collect();
    out.truncate(100);
    out
}
