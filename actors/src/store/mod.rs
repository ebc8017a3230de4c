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

mod connect;

/// The `WHERE` clause of a fenced write, with `$2` the executor and `$3` the
/// epoch of the [`Fence`].
const OWNED: &str = "executor_id = $2 AND epoch = $3 AND state IN ('running','suspended') \
     AND NOT EXISTS (SELECT 1 FROM executors e WHERE e.id = $2 AND e.state = 'dead')";

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgPool, SqlitePool};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::{
    now, ExecutorInfo, ExecutorState, HistoryEntry, Task, TaskEvent, TaskFilter, TaskState,
};

pub use connect::{StoreOptions, MIGRATOR_POSTGRES, MIGRATOR_SQLITE};

/// Handle to the database; cheap to clone (it is a connection pool).
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    /// SQLite file stores: a lock file beside the database, held while
    /// migrating so that processes starting together migrate one at a time
    /// (sqlx's migrator locks only on PostgreSQL).
    migrate_lock: Option<std::path::PathBuf>,
}

#[derive(Clone, Debug)]
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to whichever pool this store has. The body
/// is compiled once per dialect, so the same SQL text serves both.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.db {
            Db::Sqlite($pool) => $body,
            Db::Postgres($pool) => $body,
        }
    };
}

/// Like `on_pool!`, and binds `$begin` to the statement that opens a write
/// transaction: `BEGIN IMMEDIATE` on SQLite, so the transaction takes the
/// write lock up front (waiting on the busy timeout) instead of failing when
/// it tries to upgrade a read lock; a plain `BEGIN` on PostgreSQL.
macro_rules! on_pool_tx {
    ($store:expr, $pool:ident, $begin:ident => $body:expr) => {
        match &$store.db {
            Db::Sqlite($pool) => {
                let $begin = "BEGIN IMMEDIATE";
                $body
            }
            Db::Postgres($pool) => {
                let $begin = "BEGIN";
                $body
            }
        }
    };
}

/// Which database a store talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// The columns of a task, in [`Task`] order.
const TASK_COLS: &str = "id, kind, state, input, output, error, progress, parent_id, executor_id, \
     epoch, attempts, cancel_requested, watched, idempotency_key, trace_id, created_at, started_at, \
     finished_at, updated_at";

const FINAL_STATES: &str = "('succeeded','failed','cancelled')";

/// The ownership a running task's writes must prove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub task_id: Uuid,
    pub executor_id: String,
    pub epoch: i64,
}

/// How a run ended, as the store records it.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Succeeded(Value),
    Failed(String),
    Cancelled(Option<String>),
}

impl Outcome {
    pub fn state(&self) -> TaskState {
        match self {
            Outcome::Succeeded(_) => TaskState::Succeeded,
            Outcome::Failed(_) => TaskState::Failed,
            Outcome::Cancelled(_) => TaskState::Cancelled,
        }
    }
}

/// A task to insert; built by the runtime from a [`NewTask`](crate::NewTask).
#[derive(Clone, Debug)]
pub struct TaskInsert {
    pub id: Uuid,
    pub kind: String,
    pub input: Value,
    pub idempotency_key: Option<String>,
    pub trace_id: String,
    pub created_by: String,
}

/// An event still undelivered, with the trace of its task.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct UndeliveredEvent {
    #[sqlx(flatten)]
    pub event: TaskEvent,
    pub trace_id: String,
}

/// An executor registration.
#[derive(Clone, Debug)]
pub struct ExecutorRegistration {
    pub id: String,
    pub node: String,
    pub host: String,
    pub pid: i32,
    /// Lets a sweeper on the same machine see that the process is gone
    /// (`None`: only heartbeats tell).
    pub process: Option<crate::process::ProcessIdentity>,
    pub kinds: Vec<String>,
    pub capacity: i32,
}

impl ExecutorRegistration {
    /// The registration of an executor run by this very process.
    pub fn this_process(
        id: String,
        node: String,
        host: String,
        kinds: Vec<String>,
        capacity: u32,
    ) -> Self {
        ExecutorRegistration {
            id,
            node,
            host,
            pid: std::process::id() as i32,
            process: crate::process::ProcessIdentity::current(),
            kinds,
            capacity: capacity.min(i32::MAX as u32) as i32,
        }
    }
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
    pub fn from_sqlite(pool: SqlitePool) -> Store {
        Store {
            db: Db::Sqlite(pool),
            migrate_lock: None,
        }
    }

    /// Wraps an existing PostgreSQL pool (migrations are not applied).
    pub fn from_postgres(pool: PgPool) -> Store {
        Store {
            db: Db::Postgres(pool),
            migrate_lock: None,
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
            Db::Sqlite(p) => MIGRATOR_SQLITE.run(p).await?,
            Db::Postgres(p) => MIGRATOR_POSTGRES.run(p).await?,
        }
        Ok(())
    }

    /// The row lock a transaction takes on a task it reads before deciding
    /// something another transaction's finish could change. PostgreSQL
    /// (read committed) needs `FOR SHARE` so the two serialize on the row;
    /// SQLite write transactions (`BEGIN IMMEDIATE`) are serial already.
    fn share_lock(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "",
            Db::Postgres(_) => "FOR SHARE",
        }
    }

    /// Which database this is.
    /// Connections open and, of those, idle in the pool: for diagnostics.
    pub fn pool_status(&self) -> (u32, usize) {
        on_pool!(self, p => (p.size(), p.num_idle()))
    }

    pub fn dialect(&self) -> Dialect {
        match self.db {
            Db::Sqlite(_) => Dialect::Sqlite,
            Db::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        on_pool!(self, p => p.close().await)
    }

    /// A trivial query, for health checks.
    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    // ----- tasks -----------------------------------------------------------

    /// Inserts a top-level task. With an idempotency key that exists already,
    /// returns the first task and `false`.
    pub async fn create_task(&self, t: &TaskInsert) -> Result<(Task, bool)> {
        self.create_task_watched(t, None).await
    }

    /// Inserts a top-level task and, in the same transaction, registers
    /// `watcher` (a bus address) to be told when it finishes: no finish can
    /// slip between the two. With an idempotency key that exists already,
    /// returns the first task and `false` (the watcher is registered on it).
    pub async fn create_task_watched(
        &self,
        t: &TaskInsert,
        watcher: Option<&str>,
    ) -> Result<(Task, bool)> {
        let insert = format!(
            "INSERT INTO tasks (id, kind, state, input, idempotency_key, trace_id, changed_by, created_at, updated_at) \
             VALUES ($1, $2, 'pending', $3, $4, $5, $6, $7, $7) \
             ON CONFLICT DO NOTHING RETURNING {TASK_COLS}"
        );
        let by_key = format!(
            "SELECT {TASK_COLS} FROM tasks WHERE idempotency_key = $1 {}",
            self.share_lock()
        );
        let ts = now();
        let (row, created): (Option<Task>, bool) = on_pool_tx!(self, p, begin => {
            let mut tx = p.begin_with(begin).await?;
            let row: Option<Task> = sqlx::query_as(&insert)
                .bind(t.id)
                .bind(&t.kind)
                .bind(Json(&t.input))
                .bind(&t.idempotency_key)
                .bind(&t.trace_id)
                .bind(&t.created_by)
                .bind(ts)
                .fetch_optional(&mut *tx)
                .await?;
            let (row, created) = match (row, &t.idempotency_key) {
                (Some(r), _) => (Some(r), true),
                (None, Some(key)) => (sqlx::query_as(&by_key).bind(key).fetch_optional(&mut *tx).await?, false),
                (None, None) => (None, false),
            };
            if let (Some(r), Some(w)) = (&row, watcher) {
                sqlx::query("INSERT INTO task_watchers (task_id, address, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                    .bind(r.id).bind(w).bind(ts).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            (row, created)
        });
        match row {
            Some(task) => Ok((task, created)),
            None => Err(Error::Conflict(format!("task id {} exists already", t.id))),
        }
    }

    /// Inserts sub-task number `spawn_seq` of the parent that `fence` owns.
    /// Spawning the same number again (a parent run again after a crash)
    /// returns the sub-task created the first time and `false`.
    pub async fn spawn_child(
        &self,
        fence: &Fence,
        spawn_seq: i32,
        t: &TaskInsert,
    ) -> Result<(Task, bool)> {
        // SQLite needs the `WHERE` in INSERT … SELECT to tell ON CONFLICT apart
        // from a join constraint; PostgreSQL accepts the same text.
        let sql = format!(
            "INSERT INTO tasks (id, kind, state, input, parent_id, spawn_seq, trace_id, changed_by, created_at, updated_at) \
             SELECT $1, $2, 'pending', $3, $4, $5, $6, $7, $8, $8 \
             WHERE EXISTS (SELECT 1 FROM tasks p WHERE p.id = $4 AND p.executor_id = $7 AND p.epoch = $9 \
                           AND p.state IN ('running','suspended')) \
               AND NOT EXISTS (SELECT 1 FROM executors e WHERE e.id = $7 AND e.state = 'dead') \
             ON CONFLICT DO NOTHING RETURNING {TASK_COLS}"
        );
        let ts = now();
        let row: Option<Task> = on_pool!(self, p => sqlx::query_as(&sql)
            .bind(t.id)
            .bind(&t.kind)
            .bind(Json(&t.input))
            .bind(fence.task_id)
            .bind(spawn_seq)
            .bind(&t.trace_id)
            .bind(&fence.executor_id)
            .bind(ts)
            .bind(fence.epoch)
            .fetch_optional(p)
            .await)?;
        if let Some(task) = row {
            return Ok((task, true));
        }
        match self.child(fence.task_id, spawn_seq).await? {
            Some(existing) => Ok((existing, false)),
            None => Err(Error::Fenced(fence.task_id)),
        }
    }

    /// Sub-task number `spawn_seq` of `parent`.
    pub async fn child(&self, parent: Uuid, spawn_seq: i32) -> Result<Option<Task>> {
        let sql = format!("SELECT {TASK_COLS} FROM tasks WHERE parent_id = $1 AND spawn_seq = $2");
        let row: Option<Task> = on_pool!(self, p => sqlx::query_as(&sql)
            .bind(parent).bind(spawn_seq).fetch_optional(p).await)?;
        Ok(row)
    }

    /// The task, if it exists.
    pub async fn get_task(&self, id: Uuid) -> Result<Option<Task>> {
        let sql = format!("SELECT {TASK_COLS} FROM tasks WHERE id = $1");
        let row: Option<Task> =
            on_pool!(self, p => sqlx::query_as(&sql).bind(id).fetch_optional(p).await)?;
        Ok(row)
    }

    /// The task, or [`Error::NotFound`].
    pub async fn task(&self, id: Uuid) -> Result<Task> {
        self.get_task(id).await?.ok_or(Error::NotFound(id))
    }

    /// Tasks matching `f`, newest first, at most `f.limit` (1 to 1000).
    pub async fn list_tasks(&self, f: &TaskFilter) -> Result<Vec<Task>> {
        let mut conds: Vec<String> = Vec::new();
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if f.state.is_some() {
            conds.push(format!("state = {}", next()));
        }
        if f.kind.is_some() {
            conds.push(format!("kind = {}", next()));
        }
        if f.parent_id.is_some() {
            conds.push(format!("parent_id = {}", next()));
        }
        if f.after.is_some() {
            conds.push(format!("id < {}", next()));
        }
        let limit = next();
        let filter = if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conds.join(" AND "))
        };
        let sql = format!("SELECT {TASK_COLS} FROM tasks {filter} ORDER BY id DESC LIMIT {limit}");
        let lim = i64::from(f.limit.clamp(1, 1000));
        let rows: Vec<Task> = on_pool!(self, p => {
            let mut q = sqlx::query_as(&sql);
            if let Some(s) = f.state { q = q.bind(s.as_str()); }
            if let Some(k) = &f.kind { q = q.bind(k); }
            if let Some(pid) = f.parent_id { q = q.bind(pid); }
            if let Some(a) = f.after { q = q.bind(a); }
            q.bind(lim).fetch_all(p).await
        })?;
        Ok(rows)
    }

    /// The direct sub-tasks of `parent`, in the order they were spawned.
    pub async fn children(&self, parent: Uuid) -> Result<Vec<Task>> {
        let sql = format!("SELECT {TASK_COLS} FROM tasks WHERE parent_id = $1 ORDER BY spawn_seq");
        let rows: Vec<Task> =
            on_pool!(self, p => sqlx::query_as(&sql).bind(parent).fetch_all(p).await)?;
        Ok(rows)
    }

    /// Every unfinished descendant of `root` (children, their children, …).
    pub async fn open_descendants(&self, root: Uuid) -> Result<Vec<Task>> {
        let sql = format!(
            "WITH RECURSIVE d(id) AS ( \
                 SELECT id FROM tasks WHERE parent_id = $1 \
                 UNION ALL SELECT t.id FROM tasks t JOIN d ON t.parent_id = d.id) \
             SELECT {TASK_COLS} FROM tasks WHERE id IN (SELECT id FROM d) AND state NOT IN {FINAL_STATES}"
        );
        let rows: Vec<Task> =
            on_pool!(self, p => sqlx::query_as(&sql).bind(root).fetch_all(p).await)?;
        Ok(rows)
    }

    /// Claims a pending task for `executor` (a conditional update: of two
    /// claims of one task, one wins and the other gets `None`). The claim
    /// counts an attempt and starts a new ownership epoch. An executor that is
    /// not registered as alive cannot claim.
    /// Only a task of `kind` is claimed: a message naming the wrong kind
    /// (a confused peer) cannot make an executor take work it cannot run.
    pub async fn claim(&self, id: Uuid, kind: &str, executor: &str) -> Result<Option<Task>> {
        let sql = format!(
            "UPDATE tasks SET state = 'running', executor_id = $2, epoch = epoch + 1, \
                 attempts = attempts + 1, started_at = COALESCE(started_at, $3), updated_at = $3, changed_by = $2 \
             WHERE id = $1 AND state = 'pending' AND kind = $4 \
               AND EXISTS (SELECT 1 FROM executors e WHERE e.id = $2 AND e.state = 'alive') \
             RETURNING {TASK_COLS}"
        );
        let row: Option<Task> = on_pool!(self, p => sqlx::query_as(&sql)
            .bind(id).bind(executor).bind(now()).bind(kind).fetch_optional(p).await)?;
        Ok(row)
    }

    /// Claims up to `limit` of the oldest pending tasks of `kinds`.
    pub async fn claim_pending(
        &self,
        executor: &str,
        kinds: &[String],
        limit: u32,
    ) -> Result<Vec<Task>> {
        if kinds.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        // PostgreSQL: skip rows another executor is claiming right now instead
        // of queueing behind its lock. SQLite has one writer at a time anyway.
        let lock = match self.dialect() {
            Dialect::Postgres => "FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        // The pick is a MATERIALIZED CTE, evaluated once: as a plain `IN
        // (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)` PostgreSQL may run the
        // subquery again (a recheck after a concurrent update), and claim
        // more than `limit` tasks: more than the executor's capacity.
        let sql = format!(
            "WITH picked AS MATERIALIZED (SELECT id FROM tasks WHERE state = 'pending' AND kind IN ({kinds}) \
                                          ORDER BY id LIMIT $3 {lock}) \
             UPDATE tasks SET state = 'running', executor_id = $1, epoch = epoch + 1, \
                 attempts = attempts + 1, started_at = COALESCE(started_at, $2), updated_at = $2, changed_by = $1 \
             WHERE id IN (SELECT id FROM picked) \
               AND state = 'pending' \
               AND EXISTS (SELECT 1 FROM executors e WHERE e.id = $1 AND e.state = 'alive') \
             RETURNING {TASK_COLS}",
            kinds = placeholders(4, kinds.len()),
        );
        let rows: Vec<Task> = on_pool!(self, p => {
            let mut q = sqlx::query_as(&sql).bind(executor).bind(now()).bind(i64::from(limit));
            for k in kinds { q = q.bind(k); }
            q.fetch_all(p).await
        })?;
        let mut tasks = rows;
        tasks.sort_by_key(|t| t.id);
        Ok(tasks)
    }

    /// Moves an owned task between `running` and `suspended`; returns it.
    pub async fn set_owned_state(&self, fence: &Fence, to: TaskState) -> Result<Task> {
        debug_assert!(to.is_owned());
        let sql = format!(
            "UPDATE tasks SET state = $4, updated_at = $5, changed_by = $2 \
             WHERE id = $1 AND {OWNED} \
             RETURNING {TASK_COLS}"
        );
        let row: Option<Task> = on_pool!(self, p => sqlx::query_as(&sql)
            .bind(fence.task_id).bind(&fence.executor_id).bind(fence.epoch)
            .bind(to.as_str()).bind(now())
            .fetch_optional(p).await)?;
        row.ok_or(Error::Fenced(fence.task_id))
    }

    /// Records a progress value of an owned task.
    pub async fn set_progress(&self, fence: &Fence, progress: &Value) -> Result<()> {
        let sql =
            format!("UPDATE tasks SET progress = $4, updated_at = $5 WHERE id = $1 AND {OWNED}");
        let res = on_pool!(self, p => sqlx::query(&sql)
            .bind(fence.task_id).bind(&fence.executor_id).bind(fence.epoch)
            .bind(Json(progress)).bind(now())
            .execute(p).await.map(|r| r.rows_affected()))?;
        if res == 0 {
            return Err(Error::Fenced(fence.task_id));
        }
        Ok(())
    }

    /// Records how an owned task ended. Returns the final task and, taken
    /// in the same transaction, the addresses that were waiting for it.
    pub async fn finish(&self, fence: &Fence, outcome: &Outcome) -> Result<(Task, Vec<String>)> {
        let (output, error) = match outcome {
            Outcome::Succeeded(v) => (Some(Json(v)), None),
            Outcome::Failed(e) => (None, Some(e.as_str())),
            Outcome::Cancelled(e) => (None, e.as_deref()),
        };
        let sql = format!(
            "UPDATE tasks SET state = $4, output = $5, error = $6, finished_at = $7, updated_at = $7, changed_by = $2 \
             WHERE id = $1 AND {OWNED} \
             RETURNING {TASK_COLS}"
        );
        let (row, watchers): (Option<Task>, Vec<(String,)>) = on_pool_tx!(self, p, begin => {
            let mut tx = p.begin_with(begin).await?;
            let row: Option<Task> = sqlx::query_as(&sql)
                .bind(fence.task_id).bind(&fence.executor_id).bind(fence.epoch)
                .bind(outcome.state().as_str()).bind(output).bind(error).bind(now())
                .fetch_optional(&mut *tx).await?;
            let watchers = if row.is_some() {
                // The inbox is closed with the task: whatever is in it counts
                // as delivered, so no sweep sends it again.
                sqlx::query("UPDATE task_events SET delivered_at = $2 WHERE task_id = $1 AND delivered_at IS NULL")
                    .bind(fence.task_id).bind(now()).execute(&mut *tx).await?;
                let w = sqlx::query_as("DELETE FROM task_watchers WHERE task_id = $1 RETURNING address")
                    .bind(fence.task_id).fetch_all(&mut *tx).await?;
                tx.commit().await?;
                w
            } else {
                tx.rollback().await?;
                Vec::new()
            };
            (row, watchers)
        });
        let task = row.ok_or(Error::Fenced(fence.task_id))?;
        Ok((task, watchers.into_iter().map(|w| w.0).collect()))
    }

    /// Puts an owned task back to `pending` (a clean stop hands its tasks back).
    pub async fn hand_back(&self, fence: &Fence) -> Result<()> {
        let sql = format!(
            "UPDATE tasks SET state = 'pending', executor_id = NULL, updated_at = $4, changed_by = $2 \
             WHERE id = $1 AND {OWNED}"
        );
        let res = on_pool!(self, p => sqlx::query(&sql)
            .bind(fence.task_id).bind(&fence.executor_id).bind(fence.epoch).bind(now())
            .execute(p).await.map(|r| r.rows_affected()))?;
        if res == 0 {
            return Err(Error::Fenced(fence.task_id));
        }
        Ok(())
    }

    /// Marks a task for cancellation. Returns the task as it stands; final
    /// tasks are returned unchanged.
    pub async fn request_cancel(&self, id: Uuid) -> Result<Task> {
        on_pool!(self, p => sqlx::query(&format!(
            "UPDATE tasks SET cancel_requested = TRUE WHERE id = $1 AND state NOT IN {FINAL_STATES}"))
            .bind(id).execute(p).await.map(|r| r.rows_affected()))?;
        self.task(id).await
    }

    /// Cancels a task that no executor has claimed yet. `None` when it was not pending.
    pub async fn cancel_pending(&self, id: Uuid, by: &str) -> Result<Option<Task>> {
        let sql = format!(
            "UPDATE tasks SET state = 'cancelled', cancel_requested = TRUE, error = 'cancelled before it started', \
                 finished_at = $3, updated_at = $3, changed_by = $2 \
             WHERE id = $1 AND state = 'pending' RETURNING {TASK_COLS}"
        );
        let row: Option<Task> = on_pool!(self, p => sqlx::query_as(&sql)
            .bind(id).bind(by).bind(now()).fetch_optional(p).await)?;
        Ok(row)
    }

    /// State history of a task, oldest first.
    pub async fn history(&self, id: Uuid) -> Result<Vec<HistoryEntry>> {
        Ok(on_pool!(self, p => sqlx::query_as(
            "SELECT id, task_id, from_state, to_state, changed_by, owner, attempt, at \
             FROM task_history WHERE task_id = $1 ORDER BY id")
            .bind(id).fetch_all(p).await)?)
    }

    /// Number of tasks in each state.
    pub async fn count_by_state(&self) -> Result<Vec<(TaskState, i64)>> {
        let rows: Vec<(String, i64)> = on_pool!(self, p => sqlx::query_as(
            "SELECT state, COUNT(*) FROM tasks GROUP BY state").fetch_all(p).await)?;
        rows.into_iter()
            .map(|(s, n)| {
                s.parse()
                    .map(|s| (s, n))
                    .map_err(|e: crate::model::UnknownState| Error::Corrupt(e.to_string()))
            })
            .collect()
    }

    // ----- events ----------------------------------------------------------

    /// Commits an event to the task's inbox. Refused with [`Error::NotFound`]
    /// or, for a finished task, [`Error::Conflict`].
    pub async fn add_event(&self, task: Uuid, name: &str, payload: &Value) -> Result<TaskEvent> {
        let sql = format!(
            "INSERT INTO task_events (task_id, name, payload, created_at) \
             SELECT $1, $2, $3, $4 FROM tasks WHERE id = $1 AND state NOT IN {FINAL_STATES} {lock} \
             RETURNING seq, task_id, name, payload, created_at, delivered_at",
            lock = self.share_lock()
        );
        let ev: Option<TaskEvent> = on_pool!(self, p => sqlx::query_as(&sql)
            .bind(task).bind(name).bind(Json(payload)).bind(now())
            .fetch_optional(p).await)?;
        match ev {
            Some(ev) => Ok(ev),
            None => {
                let t = self.task(task).await?;
                Err(Error::Conflict(format!(
                    "task {task} is {} and takes no more events",
                    t.state
                )))
            }
        }
    }

    /// The task's inbox, in order.
    pub async fn events(&self, task: Uuid) -> Result<Vec<TaskEvent>> {
        Ok(on_pool!(self, p => sqlx::query_as(
            "SELECT seq, task_id, name, payload, created_at, delivered_at FROM task_events \
             WHERE task_id = $1 ORDER BY seq")
            .bind(task).fetch_all(p).await)?)
    }

    /// Marks events as held by the task's actor.
    pub async fn mark_delivered(&self, task: Uuid, seq: i64) -> Result<()> {
        on_pool!(self, p => sqlx::query(
            "UPDATE task_events SET delivered_at = $3 WHERE task_id = $1 AND seq = $2 AND delivered_at IS NULL")
            .bind(task).bind(seq).bind(now()).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Marks every event up to `seq` as held by the task's actor (after it
    /// loaded the whole inbox).
    pub async fn mark_delivered_up_to(&self, task: Uuid, seq: i64) -> Result<()> {
        on_pool!(self, p => sqlx::query(
            "UPDATE task_events SET delivered_at = $3 WHERE task_id = $1 AND seq <= $2 AND delivered_at IS NULL")
            .bind(task).bind(seq).bind(now()).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Running or suspended tasks of `executor` whose cancellation was
    /// requested: the sweep tells their actors again, in case the first
    /// message was lost.
    pub async fn cancel_requested_owned(&self, executor: &str) -> Result<Vec<(Uuid, String)>> {
        Ok(on_pool!(self, p => sqlx::query_as(
            "SELECT id, trace_id FROM tasks WHERE executor_id = $1 AND state IN ('running','suspended') \
               AND cancel_requested = TRUE LIMIT 1000")
            .bind(executor).fetch_all(p).await)?)
    }

    /// Events committed before `before` and still undelivered, for unfinished
    /// tasks that `executor` owns: the recovery sweep re-sends them.
    pub async fn undelivered_events(
        &self,
        executor: &str,
        before: DateTime<Utc>,
    ) -> Result<Vec<UndeliveredEvent>> {
        Ok(on_pool!(self, p => sqlx::query_as(
            "SELECT e.seq, e.task_id, e.name, e.payload, e.created_at, e.delivered_at, t.trace_id \
             FROM task_events e JOIN tasks t ON t.id = e.task_id \
             WHERE e.delivered_at IS NULL AND e.created_at < $2 AND t.executor_id = $1 \
               AND t.state IN ('running','suspended') ORDER BY e.seq LIMIT 1000")
            .bind(executor).bind(before).fetch_all(p).await)?)
    }

    /// Sub-tasks that finished before `before` and whose parent `executor`
    /// holds suspended: the sweep re-sends their `task_finished` in case the
    /// first one was lost.
    pub async fn finished_children_of_suspended(
        &self,
        executor: &str,
        before: DateTime<Utc>,
    ) -> Result<Vec<Task>> {
        let cols = TASK_COLS
            .split(", ")
            .map(|c| format!("c.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {cols} FROM tasks c JOIN tasks p ON c.parent_id = p.id \
             WHERE p.executor_id = $1 AND p.state = 'suspended' AND c.state IN {FINAL_STATES} \
               AND c.finished_at < $2 \
             ORDER BY c.finished_at DESC LIMIT 1000"
        );
        let rows: Vec<Task> = on_pool!(self, p => sqlx::query_as(&sql)
            .bind(executor).bind(before).fetch_all(p).await)?;
        Ok(rows)
    }

    // ----- watchers --------------------------------------------------------

    /// Records that `address` waits for `task` to finish and returns the task
    /// as it stands, in one transaction that serializes with the task's
    /// finish: either the finish sees this watcher (and tells it), or this
    /// returns the final task. Reading the state apart from the insert would
    /// leave a window where neither happens.
    /// `stream`: the watcher follows every state change, not only the end.
    pub async fn watch(&self, task: Uuid, address: &str, stream: bool) -> Result<Task> {
        // A stream watcher also updates the task row below: lock it for
        // update from the start, or two watchers holding share locks would
        // deadlock on PostgreSQL.
        let lock = match (self.dialect(), stream) {
            (Dialect::Postgres, true) => "FOR UPDATE",
            _ => self.share_lock(),
        };
        let select = format!("SELECT {TASK_COLS} FROM tasks WHERE id = $1 {lock}");
        let row: Option<Task> = on_pool_tx!(self, p, begin => {
            let mut tx = p.begin_with(begin).await?;
            let row: Option<Task> = sqlx::query_as(&select).bind(task).fetch_optional(&mut *tx).await?;
            if row.as_ref().is_some_and(|t| !t.state.is_final()) {
                sqlx::query("INSERT INTO task_watchers (task_id, address, created_at, stream) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
                    .bind(task).bind(address).bind(now()).bind(stream).execute(&mut *tx).await?;
                if stream {
                    sqlx::query("UPDATE tasks SET watched = TRUE WHERE id = $1 AND watched = FALSE")
                        .bind(task).execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
            row
        });
        row.ok_or(Error::NotFound(task))
    }

    /// The watchers of a task that follow every state change.
    pub async fn stream_watchers(&self, task: Uuid) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT address FROM task_watchers WHERE task_id = $1 AND stream = TRUE")
            .bind(task).fetch_all(p).await)?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// Records that `address` waits for `task` to finish.
    pub async fn add_watcher(&self, task: Uuid, address: &str) -> Result<()> {
        on_pool!(self, p => sqlx::query(
            "INSERT INTO task_watchers (task_id, address, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(task).bind(address).bind(now()).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Forgets a watcher (its wait ended).
    pub async fn remove_watcher(&self, task: Uuid, address: &str) -> Result<()> {
        on_pool!(self, p => sqlx::query("DELETE FROM task_watchers WHERE task_id = $1 AND address = $2")
            .bind(task).bind(address).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Removes and returns the watchers of a finished task.
    pub async fn take_watchers(&self, task: Uuid) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = on_pool!(self, p => sqlx::query_as(
            "DELETE FROM task_watchers WHERE task_id = $1 RETURNING address")
            .bind(task).fetch_all(p).await)?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    // ----- executors -------------------------------------------------------

    /// Registers an executor as alive.
    pub async fn register_executor(&self, r: &ExecutorRegistration) -> Result<()> {
        on_pool!(self, p => sqlx::query(
            "INSERT INTO executors (id, node, host, pid, pid_space, pid_start, state, kinds, capacity, running, started_at, last_seen_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'alive', $7, $8, 0, $9, COALESCE($10, CURRENT_TIMESTAMP))")
            .bind(&r.id).bind(&r.node).bind(&r.host).bind(r.pid)
            .bind(r.process.as_ref().map(|p| p.space.clone()))
            .bind(r.process.as_ref().map(|p| p.start))
            .bind(Json(&r.kinds)).bind(r.capacity).bind(now()).bind(self.seen_now())
            .execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// The time a heartbeat records, `None` meaning the database's own
    /// clock. On PostgreSQL, whose executors may sit on many hosts, every
    /// heartbeat and every staleness check reads the one server clock, so a
    /// host whose clock runs behind is not taken for dead (nor one running
    /// ahead for alive). SQLite serves one host: its clock is the process's.
    fn seen_now(&self) -> Option<DateTime<Utc>> {
        match self.dialect() {
            Dialect::Postgres => None,
            Dialect::Sqlite => Some(now()),
        }
    }

    /// Records a heartbeat. `false` when the executor is no longer alive in
    /// the store (declared dead or stopped): it must stop touching its tasks.
    pub async fn heartbeat(&self, id: &str, running: i32) -> Result<bool> {
        let res = on_pool!(self, p => sqlx::query(
            "UPDATE executors SET last_seen_at = COALESCE($2, CURRENT_TIMESTAMP), running = $3 WHERE id = $1 AND state = 'alive'")
            .bind(id).bind(self.seen_now()).bind(running).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(res == 1)
    }

    /// Marks an executor cleanly stopped.
    pub async fn stop_executor(&self, id: &str) -> Result<()> {
        on_pool!(self, p => sqlx::query(
            "UPDATE executors SET state = 'stopped', running = 0, ended_at = $2 WHERE id = $1 AND state = 'alive'")
            .bind(id).bind(now()).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Alive executors other than `me` silent for longer than `dead_after`.
    pub async fn stale_executors(
        &self,
        me: &str,
        dead_after: Duration,
    ) -> Result<Vec<ExecutorInfo>> {
        let cols = "id, node, host, pid, state, kinds, capacity, running, started_at, last_seen_at, ended_at, ended_by";
        // Staleness is read on the clock the heartbeats were written with
        // (see `seen_now`).
        let rows: Vec<ExecutorInfo> = match &self.db {
            Db::Postgres(p) => sqlx::query_as(&format!(
                "SELECT {cols} FROM executors WHERE state = 'alive' AND id <> $1 \
                   AND last_seen_at < CURRENT_TIMESTAMP - make_interval(secs => $2)"))
                .bind(me).bind(dead_after.as_secs_f64()).fetch_all(p).await?,
            Db::Sqlite(p) => sqlx::query_as(&format!(
                "SELECT {cols} FROM executors WHERE state = 'alive' AND id <> $1 AND last_seen_at < $2"))
                .bind(me)
                .bind(now() - chrono::Duration::from_std(dead_after).unwrap_or_default())
                .fetch_all(p).await?,
        };
        Ok(rows)
    }

    /// Alive executors other than `me` whose process lives in pid space
    /// `space` (see [`crate::process`]), with their process identity.
    pub async fn alive_executors_in_space(
        &self,
        me: &str,
        space: &str,
    ) -> Result<Vec<(String, crate::process::ProcessIdentity)>> {
        let rows: Vec<(String, i32, Option<i64>)> = on_pool!(self, p => sqlx::query_as(
            "SELECT id, pid, pid_start FROM executors \
             WHERE state = 'alive' AND id <> $1 AND pid_space = $2")
            .bind(me).bind(space).fetch_all(p).await)?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, pid, start)| {
                let process = crate::process::ProcessIdentity {
                    space: space.to_string(),
                    pid,
                    start: start?,
                };
                Some((id, process))
            })
            .collect())
    }

    /// Declares `dead` dead on behalf of `by`. A conditional update: when
    /// several executors try at once, exactly one gets `true`.
    pub async fn declare_dead(&self, dead: &str, by: &str) -> Result<bool> {
        let res = on_pool!(self, p => sqlx::query(
            "UPDATE executors SET state = 'dead', ended_at = $3, ended_by = $2, running = 0 \
             WHERE id = $1 AND state = 'alive'")
            .bind(dead).bind(by).bind(now()).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(res == 1)
    }

    /// Puts back to `pending` every running or suspended task whose owner is
    /// not an alive executor (dead, stopped, or unknown), on behalf of `by`.
    /// This catches every way a task can be left behind: a takeover cut
    /// short, a claim that committed as its executor stopped or was declared
    /// dead, a hand-back that never ran.
    ///
    /// A task taken from a *dead* executor counts a takeover; at
    /// `max_takeovers` it is failed instead (a poison task that kills every
    /// executor that runs it must not go round forever).
    pub async fn release_orphans(&self, by: &str, max_takeovers: i32) -> Result<Vec<Task>> {
        let died = "(CASE WHEN EXISTS (SELECT 1 FROM executors d WHERE d.id = tasks.executor_id AND d.state = 'dead') THEN 1 ELSE 0 END)";
        let poison = format!("(takeovers + {died} >= $3)");
        let sql = format!(
            "UPDATE tasks SET \
                 takeovers = takeovers + {died}, \
                 state = CASE WHEN {poison} THEN 'failed' ELSE 'pending' END, \
                 error = CASE WHEN {poison} THEN $4 ELSE error END, \
                 finished_at = CASE WHEN {poison} THEN $2 ELSE finished_at END, \
                 executor_id = CASE WHEN {poison} THEN executor_id ELSE NULL END, \
                 updated_at = $2, changed_by = $1 \
             WHERE state IN ('running','suspended') \
               AND NOT EXISTS (SELECT 1 FROM executors e WHERE e.id = tasks.executor_id AND e.state = 'alive') \
             RETURNING {TASK_COLS}"
        );
        let msg = format!(
            "given up: the executor running this task died {max_takeovers} times (a poison task?)"
        );
        let rows: Vec<Task> = on_pool!(self, p => sqlx::query_as(&sql)
            .bind(by).bind(now()).bind(max_takeovers).bind(&msg).fetch_all(p).await)?;
        Ok(rows)
    }

    /// Every executor, newest first.
    pub async fn executors(&self) -> Result<Vec<ExecutorInfo>> {
        let rows: Vec<ExecutorInfo> = on_pool!(self, p => sqlx::query_as(
            "SELECT id, node, host, pid, state, kinds, capacity, running, started_at, last_seen_at, ended_at, ended_by \
             FROM executors ORDER BY started_at DESC").fetch_all(p).await)?;
        Ok(rows)
    }

    /// One executor.
    pub async fn executor(&self, id: &str) -> Result<Option<ExecutorInfo>> {
        let row: Option<ExecutorInfo> = on_pool!(self, p => sqlx::query_as(
            "SELECT id, node, host, pid, state, kinds, capacity, running, started_at, last_seen_at, ended_at, ended_by \
             FROM executors WHERE id = $1").bind(id).fetch_optional(p).await)?;
        Ok(row)
    }

    /// The kinds some alive executor has registered.
    pub async fn known_kinds(&self) -> Result<Vec<String>> {
        let all = self.executors().await?;
        let mut kinds: Vec<String> = all
            .into_iter()
            .filter(|e| e.state == ExecutorState::Alive)
            .flat_map(|e| e.kinds)
            .collect();
        kinds.sort();
        kinds.dedup();
        Ok(kinds)
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

/// Retries `op` while it fails with a transient error, backing off from 50 ms
/// to 2 s, for at most `budget`. Used where giving up would strand a task.
pub async fn retry<T, F, Fut>(what: &str, budget: Duration, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let start = std::time::Instant::now();
    let mut delay = Duration::from_millis(50);
    loop {
        match op().await {
            Err(e) if e.is_transient() && start.elapsed() + delay < budget => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "{what} failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}
