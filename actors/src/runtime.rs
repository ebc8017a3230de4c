//! Starting and stopping courier in a process.
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

use actix::prelude::*;
use uuid::Uuid;

use courier_bus::{Address, Bus as BusActor};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::executor::{offer_of, ExecutorActor, ExecutorConfig, ExecutorHandle};
use crate::protocol::Bus;
use crate::task::kind::{Registry, TaskKind};
use courier_store::{ExecutorRegistration, Store, StoreOptions};

/// Builds a [`Runtime`].
pub struct RuntimeBuilder {
    url: String,
    /// Where the Unix-socket transport keeps its sockets, if used.
    socket_dir: Option<std::path::PathBuf>,
    /// The broker of the AMQP transport, if used.
    #[cfg(feature = "amqp")]
    amqp: Option<courier_bus::transport::amqp::AmqpConfig>,
    /// The PostgreSQL transport, through the store's database.
    postgres: bool,
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
            #[cfg(feature = "amqp")]
            amqp: None,
            postgres: false,
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

    /// Adds the PostgreSQL transport: envelopes are rows in the store's
    /// own database and `LISTEN`/`NOTIFY` wakes their readers, so processes
    /// on any host that share a PostgreSQL database reach each other with no
    /// broker. Needs a `postgres://` database.
    pub fn postgres_transport(mut self) -> Self {
        self.postgres = true;
        self
    }

    /// Adds the AMQP transport: nodes on any host that use the same broker
    /// and prefix reach each other through it.
    #[cfg(feature = "amqp")]
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

    /// Registers a task kind with default options for its tasks (queue,
    /// priority, `max_attempts`, backoff, timeout); see
    /// [`Registry::register_with`].
    pub fn register_with(
        mut self,
        name: impl Into<String>,
        kind: impl TaskKind,
        defaults: courier_store::TaskOptions,
    ) -> Self {
        self.registry.register_with(name, kind, defaults);
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

    /// The queues this process's executor serves (default `default`).
    pub fn queues<I: IntoIterator<Item = S>, S: Into<String>>(mut self, queues: I) -> Self {
        let cfg = self.executor.get_or_insert_with(ExecutorConfig::default);
        cfg.queues = queues.into_iter().map(Into::into).collect();
        self
    }

    /// How long this process's executor keeps finished tasks before
    /// deleting them (default `succeeded=7d,cancelled=7d,failed=30d,executors=7d`).
    pub fn retention(mut self, r: courier_store::Retention) -> Self {
        let cfg = self.executor.get_or_insert_with(ExecutorConfig::default);
        cfg.retention = r;
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
        #[cfg(feature = "amqp")]
        if let Some(cfg) = self.amqp.clone() {
            let t = courier_bus::transport::amqp::AmqpTransport::start(cfg, &node, bus.clone());
            bus.add_transport(Box::new(t)).await?;
        }
        #[cfg(not(feature = "postgres"))]
        if self.postgres {
            return Err(Error::Transport {
                transport: "postgres",
                message: "this build has no PostgreSQL: build with the `postgres` feature".into(),
            });
        }
        #[cfg(feature = "postgres")]
        if self.postgres {
            let config = store.postgres_bus().ok_or_else(|| Error::Transport {
                transport: "postgres",
                message: "the postgres transport goes through the database: give --db postgres://…"
                    .into(),
            })?;
            let t = courier_bus::transport::postgres::PostgresTransport::start(
                config,
                &node,
                bus.clone(),
            );
            bus.add_transport(Box::new(t)).await?;
        }
        let executor = match self.executor {
            Some(cfg) if !self.registry.is_empty() => {
                if cfg.queues.is_empty() {
                    return Err(Error::Invalid(
                        "an executor must serve at least one queue".into(),
                    ));
                }
                for q in &cfg.queues {
                    courier_store::validate_queue_name(q)
                        .map_err(|e| Error::Invalid(format!("executor queues: {e}")))?;
                }
                let suffix = Uuid::now_v7().simple().to_string();
                let id = format!("{node}-{}", &suffix[20..]);
                store
                    .register_executor(&ExecutorRegistration::this_process(
                        id.clone(),
                        node.clone(),
                        host.clone(),
                        offer_of(&self.registry, &cfg),
                        cfg.capacity,
                    ))
                    .await?;
                let replay =
                    std::sync::Arc::new(crate::task::replay::ReplayCache::new(cfg.replay_cache));
                let addr = ExecutorActor::new(
                    id.clone(),
                    node.clone(),
                    host,
                    cfg,
                    self.registry.clone(),
                    store.clone(),
                    bus.clone(),
                    replay.clone(),
                )
                .start();
                Some(ExecutorHandle { id, addr, replay })
            }
            _ => None,
        };
        // Kinds run here need no lookup to validate; without an executor the
        // client asks the store which kinds some executor runs.
        let local_kinds = std::sync::Arc::new(if executor.is_some() {
            self.registry.all_defaults()
        } else {
            Default::default()
        });
        Ok(Runtime {
            client: Client::new(
                store,
                bus,
                node,
                local_kinds,
                executor.as_ref().map(|e| e.addr.clone().recipient()),
            ),
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

    /// How this process's executor's replay cache has fared, if it runs
    /// an executor.
    pub fn replay_cache_stats(&self) -> Option<crate::task::replay::ReplayCacheStats> {
        self.executor.as_ref().map(|e| e.replay.stats())
    }

    /// The store.
    pub fn store(&self) -> &Store {
        self.client.store()
    }

    /// The bus.
    pub fn bus(&self) -> &Bus {
        self.client.bus()
    }

    /// Stops cleanly: the executor stops claiming, every running or suspended
    /// task is handed back to `pending` at once (another executor, or the next
    /// start of this one, picks it up), and the executor is recorded as stopped.
    pub async fn shutdown(self) {
        if let Some(e) = &self.executor {
            let id = e.stop(true).await.unwrap_or_else(|| e.id.clone());
            if let Err(err) = self.client.store().stop_executor(&id).await {
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
