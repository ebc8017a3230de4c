//! Shared set-up for the integration tests: a fresh database per test, on
//! SQLite (a temporary file) or on the real PostgreSQL named by
//! `DATABASE_URL` (default: the local `test` database), isolated in a schema
//! of its own that is dropped afterwards.

#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use courier::{ExecutorConfig, Runtime, RuntimeBuilder, Store, StoreOptions};
use sqlx::Connection;

pub const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn pg_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_PG.to_string())
}

/// One test's database. Dropping it removes the SQLite file or the schema.
pub struct TestDb {
    pub url: String,
    pub options: StoreOptions,
    schema: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("courier.db").display());
        TestDb {
            url,
            options: StoreOptions::default(),
            schema: None,
            _dir: Some(dir),
        }
    }

    pub async fn postgres() -> TestDb {
        let url = pg_url();
        let schema = format!("courier_t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {url} is not reachable: {e}"));
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut conn)
            .await
            .expect("create schema");
        TestDb {
            url,
            options: StoreOptions {
                pg_schema: Some(schema.clone()),
                max_connections: Some(6),
                ..StoreOptions::default()
            },
            schema: Some(schema),
            _dir: None,
        }
    }

    /// The URL to give a `courier` process: on PostgreSQL, the schema rides
    /// along as the connection's `search_path`.
    pub fn process_url(&self) -> String {
        match &self.schema {
            Some(schema) => format!(
                "{}{}options=-c%20search_path%3D{schema}",
                self.url,
                if self.url.contains('?') { "&" } else { "?" }
            ),
            None => self.url.clone(),
        }
    }

    pub async fn store(&self) -> Store {
        Store::connect_with(&self.url, self.options.clone())
            .await
            .expect("store")
    }

    /// Runs one SQL statement on this database outside courier: for a test
    /// that moves time (a `run_at`, a `finished_at`) instead of sleeping.
    pub async fn raw(&self, sql: &str) {
        match &self.schema {
            Some(schema) => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query(&format!("SET search_path TO {schema}"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                sqlx::query(sql).execute(&mut conn).await.unwrap();
            }
            None => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query(sql).execute(&mut conn).await.unwrap();
            }
        }
    }

    /// A runtime builder on this database with the demo kinds and a fast
    /// failure detector, so recovery tests do not wait long.
    pub fn builder(&self) -> RuntimeBuilder {
        Runtime::builder()
            .database(self.url.clone())
            .store_options(self.options.clone())
            .registry(courier::demo::registry())
            .executor(fast_executor())
    }

    /// Drops the PostgreSQL schema now (the SQLite file goes with the temp
    /// dir). A test that panics before this still has its schema dropped by
    /// `Drop`.
    pub async fn cleanup(mut self) {
        if let Some(schema) = self.schema.take() {
            drop_schema(&self.url, &schema).await;
        }
    }
}

async fn drop_schema(url: &str, schema: &str) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(url).await {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&mut conn)
            .await;
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(schema) = self.schema.take() {
            let url = self.url.clone();
            // Drop runs inside the test's runtime, which cannot be blocked
            // on: do it on a thread with a runtime of its own.
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(drop_schema(&url, &schema));
                }
            })
            .join();
        }
    }
}

pub fn fast_executor() -> ExecutorConfig {
    ExecutorConfig {
        capacity: 64,
        heartbeat_interval: Duration::from_millis(200),
        dead_after: Duration::from_millis(1500),
        sweep_interval: Duration::from_millis(300),
        redeliver_after: Duration::from_millis(500),
        max_takeovers: 5,
        ..ExecutorConfig::default()
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Defines `mod sqlite` and `mod postgres`, each with one `#[actix::test]`
/// per listed function `async fn name(db: &TestDb)`.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[actix::test]
                async fn $name() {
                    let db = $crate::common::TestDb::sqlite().await;
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            )*
        }
        mod postgres {
            $(
                #[actix::test]
                async fn $name() {
                    let db = $crate::common::TestDb::postgres().await;
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            )*
        }
    };
}

/// The most tasks that were `running` at once, read from their history
/// lines in the order the database wrote them (`task_history.id`, assigned
/// as each change is made): a start is a line into `running`, an end a line
/// out of it. Timestamps would not do: each writer stamps its own.
pub fn max_running(lines: &[courier::HistoryEntry]) -> usize {
    let mut lines: Vec<&courier::HistoryEntry> = lines.iter().collect();
    lines.sort_by_key(|l| l.id);
    let (mut now, mut max) = (0i64, 0i64);
    for l in lines {
        if l.from_state.as_deref() == Some("running") {
            now -= 1;
        }
        if l.to_state == "running" {
            now += 1;
        }
        max = max.max(now);
    }
    max as usize
}

/// Waits until task `id` is in state `state`.
pub async fn until_state(
    c: &courier::Client,
    id: uuid::Uuid,
    state: courier::TaskState,
) -> courier::Task {
    eventually(
        &format!("task {id} to be {state}"),
        Duration::from_secs(20),
        || async {
            let t = c.get(id).await.unwrap();
            (t.state == state).then_some(t)
        },
    )
    .await
}

pub mod fleet;
pub mod procs;

/// How the client reaches the executor in a conformance test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// One runtime: client and executor share a bus.
    Local,
    /// Two runtimes in this process, each with its own bus, joined only by
    /// the Unix-socket transport: every message crosses a real socket.
    Socket,
    /// The same, joined only by the real RabbitMQ (`AMQP_URL`), under a
    /// prefix of the test's own.
    Amqp,
    /// Both transports at once: the nearest route (the socket) wins.
    SocketAndAmqp,
    /// Joined only by the PostgreSQL transport, through the test's database.
    Postgres,
    /// The socket and the PostgreSQL transport: the hybrid route, the
    /// socket within the host winning.
    SocketAndPostgres,
}

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Deletes what an AMQP test declared under `prefix`.
pub async fn amqp_cleanup(prefix: &str, pools: &[String]) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let Ok(conn) =
        lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await
    else {
        return;
    };
    let Ok(ch) = conn.create_channel().await else {
        return;
    };
    for k in pools.iter().map(String::as_str).chain(["default"]) {
        let _ = ch
            .queue_delete(
                format!("{prefix}.pool.{k}").as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await;
    }
    let _ = ch
        .queue_delete(
            format!("{prefix}.dead").as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await;
    for x in [
        prefix.to_string(),
        format!("{prefix}.broadcast"),
        format!("{prefix}.dead"),
    ] {
        let _ = ch
            .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = conn.close(200, "done".into()).await;
}

/// A client and an executor, connected as `via` says.
pub struct Cluster {
    pub exec: courier::Runtime,
    pub web: Option<courier::Runtime>,
    _dir: Option<tempfile::TempDir>,
    /// The AMQP prefix to clean up.
    amqp: Option<String>,
}

impl Cluster {
    /// The client the test drives (the web runtime's, over a socket).
    pub fn client(&self) -> courier::Client {
        self.web.as_ref().unwrap_or(&self.exec).client()
    }

    /// The bus the client sends through.
    pub fn bus(&self) -> &courier::actors::protocol::Bus {
        self.web.as_ref().unwrap_or(&self.exec).bus()
    }

    pub fn executor_id(&self) -> Option<&str> {
        self.exec.executor_id()
    }

    /// The store, for what a test checks below the client.
    pub fn store(&self) -> &courier::Store {
        self.exec.store()
    }

    pub async fn shutdown(self) {
        // The pools declared: one per queue the test used.
        let queues: Vec<String> = match &self.amqp {
            Some(_) => self
                .exec
                .store()
                .queues()
                .await
                .map(|qs| qs.into_iter().map(|q| q.name).collect())
                .unwrap_or_default(),
            None => Vec::new(),
        };
        if let Some(w) = self.web {
            w.shutdown().await;
        }
        self.exec.shutdown().await;
        if let Some(prefix) = &self.amqp {
            amqp_cleanup(prefix, &queues).await;
        }
    }
}

async fn socket_peers(bus: &courier::actors::protocol::Bus) -> Vec<String> {
    transport_peers(bus, "socket").await
}

async fn transport_peers(bus: &courier::actors::protocol::Bus, t: &str) -> Vec<String> {
    bus.stats()
        .await
        .map(|s| s.peers.get(t).cloned().unwrap_or_default())
        .unwrap_or_default()
}

impl TestDb {
    /// Starts a cluster on this database; `customize` adds kinds or settings
    /// to the executor's builder.
    pub async fn cluster(
        &self,
        via: Via,
        customize: impl FnOnce(RuntimeBuilder) -> RuntimeBuilder,
    ) -> Cluster {
        if via == Via::Local {
            return Cluster {
                exec: customize(self.builder()).start().await.unwrap(),
                web: None,
                _dir: None,
                amqp: None,
            };
        }
        // Two runtimes, each with its own bus, joined by the transports of `via`.
        let socket = matches!(
            via,
            Via::Socket | Via::SocketAndAmqp | Via::SocketAndPostgres
        );
        let amqp = matches!(via, Via::Amqp | Via::SocketAndAmqp);
        let pg = matches!(via, Via::Postgres | Via::SocketAndPostgres);
        let dir = tempfile::tempdir().unwrap();
        let sockets = dir.path().join("sockets");
        let prefix = format!("courier_t_{}", uuid::Uuid::new_v4().simple());
        let join = |mut b: RuntimeBuilder| {
            if socket {
                b = b.socket_transport(&sockets);
            }
            if pg {
                b = b.postgres_transport();
            }
            if amqp {
                b = b.amqp_transport(courier::bus::transport::amqp::AmqpConfig {
                    url: amqp_url(),
                    prefix: prefix.clone(),
                });
            }
            b
        };
        let exec = join(customize(self.builder()).node("exec"))
            .start()
            .await
            .unwrap();
        let web = join(
            Runtime::builder()
                .database(self.url.clone())
                .store_options(self.options.clone())
                .node("web"),
        )
        .without_executor()
        .start()
        .await
        .unwrap();
        eventually(
            "the two runtimes to connect",
            Duration::from_secs(20),
            || async {
                let by_socket = !socket
                    || (socket_peers(web.bus()).await == ["exec"]
                        && socket_peers(exec.bus()).await == ["web"]);
                let by_amqp = !amqp
                    || (!transport_peers(web.bus(), "amqp").await.is_empty()
                        && !transport_peers(exec.bus(), "amqp").await.is_empty());
                let by_pg = !pg
                    || (transport_peers(web.bus(), "postgres").await == ["exec"]
                        && transport_peers(exec.bus(), "postgres").await == ["web"]);
                (by_socket && by_amqp && by_pg).then_some(())
            },
        )
        .await;
        let amqp = amqp.then_some(prefix);
        Cluster {
            exec,
            web: Some(web),
            _dir: Some(dir),
            amqp,
        }
    }
}

/// Defines one `#[actix::test]` per database and transport for each listed
/// function `async fn name(db: &TestDb, via: Via)`: the conformance suite.
#[macro_export]
macro_rules! on_every_transport {
    ($($name:ident),* $(,)?) => {
        $crate::transport_cases!(sqlite_local, sqlite, Local; $($name),*);
        $crate::transport_cases!(sqlite_socket, sqlite, Socket; $($name),*);
        $crate::transport_cases!(postgres_local, postgres, Local; $($name),*);
        $crate::transport_cases!(postgres_socket, postgres, Socket; $($name),*);
        $crate::transport_cases!(postgres_amqp, postgres, Amqp; $($name),*);
        $crate::transport_cases!(postgres_socket_and_amqp, postgres, SocketAndAmqp; $($name),*);
        $crate::transport_cases!(postgres_pg, postgres, Postgres; $($name),*);
        $crate::transport_cases!(postgres_socket_and_pg, postgres, SocketAndPostgres; $($name),*);
    };
}

/// One module of the conformance suite: every listed scenario on database
/// `$db` (a `TestDb` constructor) over transport `$via`.
#[macro_export]
macro_rules! transport_cases {
    ($module:ident, $db:ident, $via:ident; $($name:ident),*) => {
        mod $module {
            $(
                #[actix::test]
                async fn $name() {
                    let db = $crate::common::TestDb::$db().await;
                    super::$name(&db, $crate::common::Via::$via).await;
                    db.cleanup().await;
                }
            )*
        }
    };
}

/// What task bodies did, by test key, in order: a task kind registered in a
/// test records its side effects here and the test reads them back (the
/// kinds run in this process, so a static is the channel).
pub struct Effects<T>(std::sync::Mutex<Option<std::collections::HashMap<String, Vec<T>>>>);

impl<T: Clone> Effects<T> {
    pub const fn new() -> Self {
        Effects(std::sync::Mutex::new(None))
    }

    /// Records `what` for `key`.
    pub fn push(&self, key: &str, what: T) {
        self.0
            .lock()
            .unwrap()
            .get_or_insert_with(Default::default)
            .entry(key.to_string())
            .or_default()
            .push(what);
    }

    /// What was recorded for `key`, in order.
    pub fn of(&self, key: &str) -> Vec<T> {
        self.0
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|m| m.get(key).cloned())
            .unwrap_or_default()
    }
}
