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

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use courier_bus::backoff::Backoff;
use serde_json::Value;
use sqlx::types::Json;
#[cfg(feature = "postgres")]
use sqlx::PgPool;
#[cfg(feature = "sqlite")]
use sqlx::SqlitePool;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::{
    now, AttemptError, ExecutorInfo, ExecutorState, HistoryEntry, IdPrefix, Task, TaskEvent,
    TaskFilter, TaskState,
};
use crate::options::Resolved;

pub use connect::StoreOptions;
#[cfg(feature = "postgres")]
pub use connect::MIGRATOR_POSTGRES;
#[cfg(feature = "sqlite")]
pub use connect::MIGRATOR_SQLITE;

#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
compile_error!(
    "courier-actors needs a store: enable the `sqlite` or the `postgres` feature (or both)"
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

/// A single create: the task and who waits for it.
type Create = (TaskInsert, Option<String>);

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
            Db::Sqlite($pool) => {
                $crate::store::within($store.deadline, async {
                    Ok::<_, $crate::error::Error>($body)
                })
                .await?
            }
            #[cfg(feature = "postgres")]
            Db::Postgres($pool) => {
                $crate::store::within($store.deadline, async {
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
            Db::Sqlite($pool) => {
                $crate::store::within($store.deadline, async {
                    let _turn = $store.writer.lock().await;
                    Ok::<_, $crate::error::Error>($body)
                })
                .await?
            }
            #[cfg(feature = "postgres")]
            Db::Postgres($pool) => {
                $crate::store::within($store.deadline, async {
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
            Db::Sqlite($pool) => {
                $crate::store::within($store.deadline, async {
                    let $begin = "BEGIN IMMEDIATE";
                    let _turn = $store.writer.lock().await;
                    Ok::<_, $crate::error::Error>($body)
                })
                .await?
            }
            #[cfg(feature = "postgres")]
            Db::Postgres($pool) => {
                $crate::store::within($store.deadline, async {
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
pub(crate) async fn within<T, E: From<sqlx::Error>>(
    deadline: std::time::Duration,
    call: impl std::future::Future<Output = std::result::Result<T, E>>,
) -> std::result::Result<T, E> {
    match tokio::time::timeout(deadline, call).await {
        Ok(r) => r,
        Err(_) => Err(E::from(sqlx::Error::Io(std::io::Error::new(
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
pub use retention::Retention;
pub use schedules::Fired;
pub use stats::{Minute, THROUGHPUT_KEPT};

/// Which database a store talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// The columns of a task, in [`Task`] order.
const TASK_COLS: &str = "id, kind, state, input, output, error, progress, parent_id, executor_id, \
     epoch, attempts, cancel_requested, watched, idempotency_key, trace_id, created_at, started_at, \
     finished_at, updated_at, queue, priority, run_at, max_attempts, backoff_ms, timeout_ms, errors, \
     parent_attempt, waiting, schedule, timeout_at";

/// [`TASK_COLS`] of the table aliased `alias`.
fn qualified(alias: &str) -> String {
    TASK_COLS
        .split(", ")
        .map(|c| format!("{alias}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A task state as an SQL literal (`'pending'`): statements name states
/// through [`TaskState`], never by spelling them out.
#[derive(Clone, Copy)]
struct St(TaskState);

impl std::fmt::Display for St {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "'{}'", self.0.as_str())
    }
}

/// The task states that pass a test, as an SQL list (`('a','b')`).
#[derive(Clone, Copy)]
struct States(fn(TaskState) -> bool);

impl std::fmt::Display for States {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = TaskState::ALL
            .into_iter()
            .filter(|s| (self.0)(*s))
            .map(|s| St(s).to_string())
            .collect();
        write!(f, "({})", names.join(","))
    }
}

const SCHEDULED: St = St(TaskState::Scheduled);
const PENDING: St = St(TaskState::Pending);
const RUNNING: St = St(TaskState::Running);
const SUSPENDED: St = St(TaskState::Suspended);
const FAILED: St = St(TaskState::Failed);
const CANCELLED: St = St(TaskState::Cancelled);
/// `succeeded`, `failed`, `cancelled`.
const FINAL: States = States(TaskState::is_final);
/// `running`, `suspended`: held by an executor.
const HELD: States = States(TaskState::is_owned);

/// The `WHERE` clause of a fenced write, with `$2` the executor and `$3` the
/// epoch of the [`Fence`].
struct Owned;

impl std::fmt::Display for Owned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "executor_id = $2 AND epoch = $3 AND state IN {HELD} \
             AND NOT EXISTS (SELECT 1 FROM executors e WHERE e.id = $2 AND e.state = 'dead')"
        )
    }
}
const OWNED: Owned = Owned;

/// The ownership a running task's writes must prove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub task_id: Uuid,
    pub executor_id: String,
    pub epoch: i64,
}

/// The ids for [`Store::id_set`]: a JSON array of their text forms.
fn ids_json<'a>(ids: impl IntoIterator<Item = &'a Uuid>) -> String {
    let ids: Vec<String> = ids.into_iter().map(|id| id.to_string()).collect();
    serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into())
}

/// `$start, $start+1, …` for an `IN (…)` list of `n` values.
fn placeholders(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
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

    /// Wraps an existing SQLite pool (migrations are not applied).
    #[cfg(feature = "sqlite")]
    pub fn from_sqlite(pool: SqlitePool) -> Store {
        Store::new(Db::Sqlite(pool), None)
    }

    /// Wraps an existing PostgreSQL pool (migrations are not applied).
    #[cfg(feature = "postgres")]
    pub fn from_postgres(pool: PgPool) -> Store {
        Store::new(Db::Postgres(pool), None)
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
                sqlx::query("SET statement_timeout = 0")
                    .execute(&mut *conn)
                    .await?;
                let res = MIGRATOR_POSTGRES.run(&mut *conn).await;
                if res.is_ok() {
                    sqlx::query("RESET statement_timeout")
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

    /// A subquery yielding the task ids of parameter `$n`, bound as
    /// [`ids_json`]: one SQL text whatever the number of ids (so one
    /// prepared statement), where an `IN ($1, $2, …)` list would make one
    /// per count.
    fn id_set(&self, n: usize) -> String {
        match self.dialect() {
            Dialect::Sqlite => {
                format!("(SELECT unhex(replace(value, '-', '')) FROM json_each(${n}))")
            }
            Dialect::Postgres => format!("(SELECT jsonb_array_elements_text(${n}::jsonb)::uuid)"),
        }
    }

    /// A table read from the JSON array of objects bound as `$n`, named
    /// `alias`, with `columns` (name, PostgreSQL type): `jsonb_to_recordset`
    /// on PostgreSQL, `json_each` on SQLite (where a `uuid` column is read
    /// from its text form into the blob the tables hold). One SQL text,
    /// one prepared statement, whatever the number of rows.
    fn recordset(&self, n: usize, alias: &str, columns: &[(&str, &str)]) -> String {
        let list = |f: &dyn Fn(&str, &str) -> String| {
            columns
                .iter()
                .map(|(c, t)| f(c, t))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self.dialect() {
            Dialect::Postgres => format!(
                "jsonb_to_recordset(${n}::jsonb) AS {alias}({})",
                list(&|c, t| format!("{c} {t}"))
            ),
            Dialect::Sqlite => format!(
                "(SELECT {} FROM json_each(${n})) AS {alias}",
                list(&|c, t| match t {
                    "uuid" =>
                        format!("unhex(replace(json_extract(value, '$.{c}'), '-', '')) AS {c}"),
                    _ => format!("json_extract(value, '$.{c}') AS {c}"),
                })
            ),
        }
    }

    /// `column`, spelled so that no planner picks an index on it (SQLite's
    /// unary `+`, PostgreSQL's `|| ''`, both on text columns): for the
    /// statements whose plans a planner got wrong when its statistics lag
    /// behind a table that grows and churns fast (see the callers).
    fn unindexed(&self, column: &str) -> String {
        match self.dialect() {
            Dialect::Postgres => format!("({column} || '')"),
            Dialect::Sqlite => format!("+{column}"),
        }
    }

    /// The cast that turns JSON text into the JSON column type.
    fn json_cast(&self) -> &'static str {
        match self.dialect() {
            Dialect::Postgres => "::jsonb",
            Dialect::Sqlite => "",
        }
    }

    /// The row lock a transaction takes on a task it reads before deciding
    /// something another transaction's finish could change. PostgreSQL
    /// (read committed) needs `FOR SHARE` so the two serialize on the row;
    /// SQLite write transactions (`BEGIN IMMEDIATE`) are serial already.
    fn share_lock(&self) -> &'static str {
        match self.dialect() {
            Dialect::Sqlite => "",
            Dialect::Postgres => "FOR SHARE",
        }
    }

    /// `col` is one of the ids the CTE `cte` picked, as a condition that
    /// reads `tasks` by key whatever the planner believes: on PostgreSQL
    /// `col = ANY(ARRAY(SELECT id FROM cte))`, an array built once (an
    /// InitPlan) and probed through the primary key, where `IN (SELECT …)`
    /// let a generic plan, whose statistics said "nothing pending", turn
    /// the update into a nested loop of every pending task against the
    /// picked ids (1.29 million comparisons, 290 ms a claim, after a quiet
    /// spell). SQLite plans `IN (SELECT …)` as a lookup by key already.
    fn in_set(&self, col: &str, cte: &str) -> String {
        match self.dialect() {
            Dialect::Sqlite => format!("{col} IN (SELECT id FROM {cte})"),
            Dialect::Postgres => format!("{col} = ANY(ARRAY(SELECT id FROM {cte}))"),
        }
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

    /// How this store reaches its PostgreSQL database (schema included):
    /// for the PostgreSQL transport. `None` on SQLite.
    #[cfg(feature = "postgres")]
    pub fn pg_connect_options(&self) -> Option<sqlx::postgres::PgConnectOptions> {
        match &self.db {
            Db::Postgres(p) => Some((*p.connect_options()).clone()),
            #[cfg(feature = "sqlite")]
            Db::Sqlite(_) => None,
        }
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
        on_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }
}

/// Runs `fut` as a task of its own, started at once, and returns a future
/// of its result.
///
/// Actors use it for every database call they make from their context. An
/// actor that waits on one future (`ctx.wait`) stops polling its others; one
/// of those that is queued for a pooled connection keeps its place in the
/// pool's fair queue without being polled, so the connection handed to it
/// sits unused and the pool stalls until the acquire timeout. (Seen after
/// SIGSTOP/SIGCONT: a burst of heartbeats queued ahead of a re-registration
/// that the executor waited on.) A task of its own is always polled.
pub fn detached<T: 'static>(
    fut: impl std::future::Future<Output = T> + 'static,
) -> impl std::future::Future<Output = T> {
    let handle = tokio::task::spawn_local(fut);
    async move {
        match handle.await {
            Ok(v) => v,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Cancelled: the runtime is shutting down and nobody waits.
            Err(_) => std::future::pending().await,
        }
    }
}

/// Retries `op` while it fails with a transient error, backing off in steps
/// doubling from 50 ms to 2 s (each wait up to twice its step: the jitter),
/// for at most `budget`. Used where giving up would strand a task.
pub async fn retry<T, F, Fut>(what: &str, budget: Duration, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let start = std::time::Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        match op().await {
            Err(e) if e.is_transient() => {
                let delay = backoff.next_delay();
                if start.elapsed() + delay >= budget {
                    return Err(e);
                }
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "{what} failed; retrying");
                tokio::time::sleep(delay).await;
            }
            other => return other,
        }
    }
}
