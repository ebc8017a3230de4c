//! The store: every piece of durable state, in SQL, through sqlx.
//!
//! One [`Store`] speaks to SQLite (the embedded default: one file, WAL) or to
//! PostgreSQL (several hosts). The two schemas (`migrations/sqlite`,
//! `migrations/postgres`) keep the same tables and columns, so almost every
//! statement below is one SQL text run on either pool; the few places where
//! the dialects differ (claim locking, connection set-up) say so. Writing
//! the SQL once is what keeps the two backends from drifting apart.
//!
//! Every write that a running task makes is *fenced*: it names the executor
//! and the ownership epoch it was claimed with, and changes nothing (returns
//! [`Error::Fenced`]) when the task has since been taken over, or when its
//! executor has been declared dead (the declaration is the fence: nothing a
//! zombie writes lands after it, even before its tasks are released).
//!
//! State history is written by database triggers, so no statement here can
//! change a task's state without leaving a line in `task_history`.
//!
//! Runs' ends and single creates are group-committed, and the inboxes of
//! tasks starting together read in one statement (`group.rs`): what
//! arrives while one write is running shares the next transaction, with no
//! timer.

mod connect;
mod group;
mod statements;

#[cfg(feature = "postgres")]
use sqlx::PgPool;
#[cfg(feature = "sqlite")]
use sqlx::SqlitePool;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::{Task, TaskEvent};

pub use connect::StoreOptions;
#[cfg(feature = "postgres")]
use connect::MIGRATOR_POSTGRES;
#[cfg(feature = "sqlite")]
use connect::MIGRATOR_SQLITE;
use statements::KEYED_BEGIN;

#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
compile_error!(
    "courier-store needs a database: enable the `sqlite` or the `postgres` feature (or both)"
);

/// Handle to the database; cheap to clone (it is a connection pool).
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    /// SQLite file stores: a lock file beside the database, held while
    /// migrating so that processes starting together migrate one at a time
    /// (sqlx's migrator locks only on PostgreSQL).
    migrate_lock: Option<std::path::PathBuf>,
    /// Group commit of runs' ends: one transaction for the ends of every
    /// run that finished while the previous one was written.
    finishes: std::sync::Arc<group::Group<(Fence, ends::Outcome), ends::Finished>>,
    /// Batched reads of tasks' inboxes: the tasks of one claim start
    /// together, and read theirs in one statement.
    /// Each request is a task and the `seq` past which its inbox is read.
    inboxes: std::sync::Arc<group::Group<(Uuid, i64), Vec<TaskEvent>>>,
    /// Rows read from journals and inboxes (see [`Store::replay_reads`]).
    reads: std::sync::Arc<ReadCounts>,
    /// Group commit of single creates (a batch is one transaction of its
    /// own, all or nothing).
    creates: std::sync::Arc<group::Group<Create, (Task, bool)>>,
    /// SQLite's one writer at a time, taken in turn by this process's
    /// writes before they touch the file. Without it the pool's
    /// connections race for SQLite's write lock, and the losers sleep in
    /// SQLite's busy handler (1, 2, 5, 10 … ms a try): measured under load,
    /// 3 s of such sleeps in 4 s across the pool. With it they queue here,
    /// first come first served, and the lock is free when their turn comes
    /// (other processes sharing the file still meet the busy timeout).
    /// Reads take no turn: in WAL mode they do not block writes.
    #[cfg(feature = "sqlite")]
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// How long one database call may take, waiting for a connection
    /// included (`StoreOptions::call_timeout`).
    deadline: std::time::Duration,
}

/// How many journal and inbox rows a [`Store`] (and every clone of it) has
/// read, by [`Store::steps`], [`Store::events`], [`Store::inbox_after`]
/// and [`Store::events_after`]: what the replays of runs cost, for tests
/// and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayReads {
    pub journal_rows: u64,
    pub inbox_rows: u64,
}

#[derive(Debug, Default)]
struct ReadCounts {
    journal: std::sync::atomic::AtomicU64,
    inbox: std::sync::atomic::AtomicU64,
}

impl ReadCounts {
    fn count_journal(&self, rows: usize) {
        self.journal
            .fetch_add(rows as u64, std::sync::atomic::Ordering::Relaxed);
    }

    fn count_inbox(&self, rows: usize) {
        self.inbox
            .fetch_add(rows as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A single create: the task, who waits for it, and the executor that
/// starts it at once if it can (see [`Store::create_task_started`]).
type Create = (TaskInsert, Option<String>, Option<String>);

/// The most requests one group-committed transaction (or batched read)
/// carries.
const GROUP_MAX: usize = 512;

/// The most requests one group holds at once (queued or being written):
/// four flushes' worth. Callers past it wait before their request is taken
/// (see [`group`]), so an overload slows them instead of growing memory.
const GROUP_BOUND: usize = 4 * GROUP_MAX;

#[derive(Clone, Debug)]
enum Db {
    #[cfg(feature = "sqlite")]
    Sqlite(SqlitePool),
    #[cfg(feature = "postgres")]
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to whichever pool this store has. The body
/// is compiled once per dialect, so the same SQL text serves both. It runs
/// within the store's deadline ([`within`]); inside it, `?` and `return`
/// leave the body with a [`crate::Error`], which the caller's function
/// returns.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.db {
            #[cfg(feature = "sqlite")]
            $crate::sql::Db::Sqlite($pool) => {
                $crate::sql::within($store.deadline, async {
                    Ok::<_, $crate::error::Error>($body)
                })
                .await?
            }
            #[cfg(feature = "postgres")]
            $crate::sql::Db::Postgres($pool) => {
                $crate::sql::within($store.deadline, async {
                    Ok::<_, $crate::error::Error>($body)
                })
                .await?
            }
        }
    };
}

/// Like `on_pool!`, for a statement that writes: on SQLite it first takes
/// this process's write turn (see `Store::writer`).
macro_rules! on_pool_write {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.db {
            #[cfg(feature = "sqlite")]
            $crate::sql::Db::Sqlite($pool) => {
                $crate::sql::within($store.deadline, async {
                    let _turn = $store.writer.lock().await;
                    Ok::<_, $crate::error::Error>($body)
                })
                .await?
            }
            #[cfg(feature = "postgres")]
            $crate::sql::Db::Postgres($pool) => {
                $crate::sql::within($store.deadline, async {
                    Ok::<_, $crate::error::Error>($body)
                })
                .await?
            }
        }
    };
}

/// Like `on_pool_write!`, and binds `$begin` to the statement that opens a write
/// transaction: `BEGIN IMMEDIATE` on SQLite, so the transaction takes the
/// write lock up front (waiting on the busy timeout) instead of failing when
/// it tries to upgrade a read lock; a plain `BEGIN` on PostgreSQL.
macro_rules! on_pool_tx {
    ($store:expr, $pool:ident, $begin:ident => $body:expr) => {
        match &$store.db {
            #[cfg(feature = "sqlite")]
            $crate::sql::Db::Sqlite($pool) => {
                $crate::sql::within($store.deadline, async {
                    let $begin = "BEGIN IMMEDIATE";
                    let _turn = $store.writer.lock().await;
                    Ok::<_, $crate::error::Error>($body)
                })
                .await?
            }
            #[cfg(feature = "postgres")]
            $crate::sql::Db::Postgres($pool) => {
                $crate::sql::within($store.deadline, async {
                    let $begin = "BEGIN";
                    Ok::<_, $crate::error::Error>($body)
                })
                .await?
            }
        }
    };
}

/// Runs one database call (`on_pool!` and its kin) within `deadline`: a call
/// on a dead link, or one stuck behind a lock, fails with a transient
/// error when it passes instead of hanging for as long as TCP keeps
/// retrying (minutes). The future is dropped, and with it the connection
/// (sqlx tests it before it goes back to the pool).
pub async fn within<T>(
    deadline: std::time::Duration,
    call: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(deadline, call).await {
        Ok(r) => r,
        Err(_) => Err(Error::from(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the database did not answer within {} ms (the call's deadline)",
                deadline.as_millis()
            ),
        )))),
    }
}

// The tables, one file each; declared after the macros so they can use them.
mod creates;
mod ends;
mod events;
mod executors;
mod journal;
mod queues;
mod retention;
mod schedules;
mod stats;
mod tasks;
mod watchers;
mod workers;

pub use creates::TaskInsert;
pub use ends::{Finished, Outcome};
pub use events::UndeliveredEvent;
pub use executors::{ExecutorRegistration, Offer};
pub use journal::{Suspension, Wait};
pub use queues::Claimed;
pub use retention::{BadRetention, Retention};
pub use schedules::Fired;
pub use stats::{Minute, THROUGHPUT_KEPT};

/// Which database a store talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// The ownership a running task's writes must prove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub task_id: Uuid,
    pub executor_id: String,
    pub epoch: i64,
}

/// The ids for `statements::id_set`: a JSON array of their text forms.
fn ids_json<'a>(ids: impl IntoIterator<Item = &'a Uuid>) -> String {
    let ids: Vec<String> = ids.into_iter().map(|id| id.to_string()).collect();
    serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into())
}

impl Store {
    /// Connects to `url` (`sqlite://PATH`, `sqlite::memory:` or
    /// `postgres://…`) and applies the migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        Self::connect_with(url, StoreOptions::default()).await
    }

    /// Connects with explicit options and applies the migrations.
    pub async fn connect_with(url: &str, opts: StoreOptions) -> Result<Store> {
        // SQLite: processes starting together open and migrate the file one
        // at a time (switching a new file to WAL needs it to themselves).
        let _guard = match connect::sqlite_lock_path(url) {
            Some(path) => Some(connect::lock_file(path).await?),
            None => None,
        };
        let store = connect::connect(url, &opts).await?;
        store.migrate_unlocked().await?;
        Ok(store)
    }

    fn new(db: Db, migrate_lock: Option<std::path::PathBuf>) -> Store {
        Store {
            deadline: StoreOptions::default().call_timeout,
            db,
            migrate_lock,
            finishes: std::sync::Arc::new(group::Group::new(GROUP_MAX, GROUP_BOUND)),
            inboxes: std::sync::Arc::new(group::Group::new(GROUP_MAX, GROUP_BOUND)),
            reads: std::sync::Arc::default(),
            creates: std::sync::Arc::new(group::Group::new(GROUP_MAX, GROUP_BOUND)),
            #[cfg(feature = "sqlite")]
            writer: std::sync::Arc::default(),
        }
    }

    /// Applies the pending migrations of this store's dialect.
    pub async fn migrate(&self) -> Result<()> {
        let _guard = match &self.migrate_lock {
            Some(path) => Some(connect::lock_file(path.clone()).await?),
            None => None,
        };
        self.migrate_unlocked().await
    }

    async fn migrate_unlocked(&self) -> Result<()> {
        match &self.db {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(p) => MIGRATOR_SQLITE.run(p).await?,
            #[cfg(feature = "postgres")]
            Db::Postgres(p) => {
                // A migration may rewrite a large table: no statement
                // timeout on the connection that applies them.
                let mut conn = p.acquire().await?;
                sqlx::query(statements::store::NO_STATEMENT_TIMEOUT)
                    .execute(&mut *conn)
                    .await?;
                let res = MIGRATOR_POSTGRES.run(&mut *conn).await;
                if res.is_ok() {
                    sqlx::query(statements::store::RESET_STATEMENT_TIMEOUT)
                        .execute(&mut *conn)
                        .await?;
                } else {
                    conn.close_on_drop();
                }
                res?
            }
        }
        Ok(())
    }

    /// Connections open and, of those, idle in the pool: for diagnostics.
    pub fn pool_status(&self) -> (u32, usize) {
        match &self.db {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(p) => (p.size(), p.num_idle()),
            #[cfg(feature = "postgres")]
            Db::Postgres(p) => (p.size(), p.num_idle()),
        }
    }

    /// Journal and inbox rows read through this store so far.
    pub fn replay_reads(&self) -> ReplayReads {
        use std::sync::atomic::Ordering::Relaxed;
        ReplayReads {
            journal_rows: self.reads.journal.load(Relaxed),
            inbox_rows: self.reads.inbox.load(Relaxed),
        }
    }

    /// Writes held by each group-commit lane now (queued or being written),
    /// and the most a lane holds: callers past it wait (backpressure).
    pub fn write_queues(&self) -> ([(&'static str, usize); 3], usize) {
        (
            [
                ("creates", self.creates.held()),
                ("finishes", self.finishes.held()),
                ("inboxes", self.inboxes.held()),
            ],
            GROUP_BOUND,
        )
    }

    /// The settings of the PostgreSQL transport of the bus, which goes
    /// through this store's database (schema included). `None` on SQLite.
    #[cfg(feature = "postgres")]
    pub fn postgres_bus(&self) -> Option<courier_bus::transport::postgres::PostgresConfig> {
        match &self.db {
            Db::Postgres(p) => Some(courier_bus::transport::postgres::PostgresConfig {
                connect: (*p.connect_options()).clone(),
            }),
            #[cfg(feature = "sqlite")]
            Db::Sqlite(_) => None,
        }
    }

    /// Every SQL statement the store sends on `dialect`, by name, each
    /// variable one in representative shapes (see `sql/statements.rs`):
    /// for `tests/statements.rs`, which prepares them all on both
    /// databases. Not part of the store's interface.
    #[doc(hidden)]
    pub fn statements(dialect: Dialect) -> Vec<(&'static str, String)> {
        statements::catalogue(dialect)
    }

    /// Which database this is.
    pub fn dialect(&self) -> Dialect {
        match self.db {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(_) => Dialect::Sqlite,
            #[cfg(feature = "postgres")]
            Db::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        match &self.db {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(p) => p.close().await,
            #[cfg(feature = "postgres")]
            Db::Postgres(p) => p.close().await,
        }
    }

    /// A trivial query, for health checks.
    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, p => sqlx::query(statements::store::PING).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }
}
