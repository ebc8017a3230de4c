//! The `tasks` table: creating, reading, claiming and finishing tasks.

use std::collections::{HashMap, HashSet};

use super::journal::wake_parent;
use super::*;

/// A run's end as recorded, with what it set off.
#[derive(Clone, Debug)]
pub struct Finished {
    pub id: Uuid,
    /// The final state it was given.
    pub state: TaskState,
    /// The task as it ended, read in the same transaction when someone is
    /// to be told (it had watchers or a parent) and for a lone end. Ends
    /// written together that nobody waits for are not read back: on SQLite
    /// sqlx copies every value of every row returned, and returning the
    /// ids alone made a flush of ~140 ends 4.4 → 3.0 ms (issue 14).
    pub task: Option<Task>,
    /// The addresses that waited for it, taken with the end.
    pub watchers: Vec<String>,
    /// Its parent, woken: it was suspended waiting for this task.
    pub woken: Option<Task>,
}

/// How a run ended, as the store records it.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Succeeded(Value),
    /// The last attempt failed: `error` is its message, `errors` every
    /// attempt's (this one last).
    Failed {
        error: String,
        errors: Vec<AttemptError>,
    },
    Cancelled(Option<String>),
}

impl Outcome {
    pub fn state(&self) -> TaskState {
        match self {
            Outcome::Succeeded(_) => TaskState::Succeeded,
            Outcome::Failed { .. } => TaskState::Failed,
            Outcome::Cancelled(_) => TaskState::Cancelled,
        }
    }

    /// What it writes: `output`, `error`, and every attempt's `errors`.
    fn columns(&self) -> (Option<&Value>, Option<&str>, Option<&[AttemptError]>) {
        match self {
            Outcome::Succeeded(v) => (Some(v), None, None),
            Outcome::Failed { error, errors } => (None, Some(error), Some(errors)),
            Outcome::Cancelled(e) => (None, e.as_deref(), None),
        }
    }
}

/// A task to insert; built by the client (or a parent's run) from a
/// [`NewTask`](crate::NewTask) whose options are resolved.
#[derive(Clone, Debug)]
pub struct TaskInsert {
    pub id: Uuid,
    pub kind: String,
    pub input: Value,
    pub idempotency_key: Option<String>,
    pub trace_id: String,
    pub created_by: String,
    pub options: Resolved,
    /// The schedule whose slot created it.
    pub schedule: Option<String>,
    /// When it was asked for: its `created_at`, and the time its options'
    /// delay counted from. A create waits for its group's commit, so the
    /// time of that commit would make `created_at + delay` later than the
    /// `run_at` it was given.
    pub created_at: DateTime<Utc>,
}

impl TaskInsert {
    /// `scheduled` until its `run_at`, else `pending`.
    pub(super) fn state(&self) -> TaskState {
        if self.options.run_at.is_some() {
            TaskState::Scheduled
        } else {
            TaskState::Pending
        }
    }

    /// The row its insert writes: these values and the columns' defaults.
    ///
    /// A batch's `INSERT` returns only the ids it wrote and the tasks are
    /// built here, not read back: on SQLite sqlx copies every value of
    /// every returned row (30 columns), and returning the ids alone made a
    /// batch of 1,000 creates 32 → 22 ms, a flush of ends likewise (see
    /// BENCHMARKS.md, issue 14). `a_batch_keeps_every_field` (tests/store.rs)
    /// holds this equal to the row read back, on both databases.
    pub(super) fn created(&self) -> Task {
        Task {
            id: self.id,
            kind: self.kind.clone(),
            state: self.state(),
            input: self.input.clone(),
            output: None,
            error: None,
            progress: None,
            parent_id: None,
            executor_id: None,
            epoch: 0,
            attempts: 0,
            cancel_requested: false,
            watched: false,
            idempotency_key: self.idempotency_key.clone(),
            trace_id: self.trace_id.clone(),
            created_at: self.created_at,
            started_at: None,
            finished_at: None,
            updated_at: self.created_at,
            queue: self.options.queue.clone(),
            priority: self.options.priority,
            run_at: self.options.run_at,
            max_attempts: self.options.max_attempts,
            backoff_ms: self.options.backoff_ms,
            timeout_ms: self.options.timeout_ms,
            errors: Vec::new(),
            parent_attempt: None,
            waiting: None,
            schedule: self.schedule.clone(),
            timeout_at: None,
        }
    }
}

/// How a flush of runs' ends begins on PostgreSQL: every statement in it
/// reads tasks, inboxes and watchers by key, and the planner is told so.
/// Its statistics lag behind a young task table that grows by thousands a
/// second: under `cargo bench --bench http` it joined a flush of 80 ends
/// to a sequential scan of 13,500 tasks (9.5 of 13.5 ms), and under the
/// throughput bench it walked an owner's held tasks for every end. One
/// simple-protocol round trip, as the plain `BEGIN` was; the settings end
/// with the transaction, and the history trigger keeps its own (migration
/// 0010).
const KEYED_BEGIN: &str = "BEGIN; SET LOCAL enable_seqscan = off; \
     SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off";

/// The columns a new task sets, in the order [`bind_insert`] binds them
/// from `$1`.
pub(super) const INSERT_COLS: &str = "id, kind, state, input, idempotency_key, trace_id, changed_by, \
     created_at, updated_at, queue, priority, run_at, max_attempts, backoff_ms, timeout_ms, schedule";
pub(super) const INSERT_VALUES: &str =
    "$1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10, $11, $12, $13, $14, $15";

/// Binds a [`TaskInsert`] as `$1 … $15` of [`INSERT_COLS`].
macro_rules! bind_insert {
    ($q:expr, $t:expr) => {
        $q.bind($t.id)
            .bind(&$t.kind)
            .bind($t.state().as_str())
            .bind(Json(&$t.input))
            .bind(&$t.idempotency_key)
            .bind(&$t.trace_id)
            .bind(&$t.created_by)
            .bind($t.created_at)
            .bind(&$t.options.queue)
            .bind($t.options.priority)
            .bind($t.options.run_at)
            .bind($t.options.max_attempts)
            .bind($t.options.backoff_ms)
            .bind($t.options.timeout_ms)
            .bind(&$t.schedule)
    };
}
pub(super) use bind_insert;

impl Store {
    /// Inserts a top-level task. With an idempotency key that exists already,
    /// returns the first task and `false`.
    pub async fn create_task(&self, t: &TaskInsert) -> Result<(Task, bool)> {
        self.create_task_watched(t, None).await
    }

    /// Inserts a top-level task and, in the same transaction, registers
    /// `watcher` (a bus address) to be told when it finishes: no finish can
    /// slip between the two. With an idempotency key that exists already,
    /// returns the first task and `false` (the watcher is registered on it).
    ///
    /// Creates are group-committed (see `group.rs`): the creates that
    /// arrive while the previous one is being written share the next
    /// transaction, each with its own outcome. A lone create is written at
    /// once.
    pub async fn create_task_watched(
        &self,
        t: &TaskInsert,
        watcher: Option<&str>,
    ) -> Result<(Task, bool)> {
        let store = self.clone();
        self.creates
            .submit((t.clone(), watcher.map(str::to_string)), move |creates| {
                let store = store.clone();
                Box::pin(async move { store.create_each(creates).await })
            })
            .await
    }

    /// Several callers' creates in one transaction, each with its own
    /// watcher. Any error fails the whole transaction (the group then
    /// writes them again one by one, so only the one at fault fails).
    async fn create_each(
        &self,
        creates: &[(TaskInsert, Option<String>)],
    ) -> Result<Vec<Result<(Task, bool)>>> {
        let items: Vec<(&TaskInsert, Option<&str>)> =
            creates.iter().map(|(t, w)| (t, w.as_deref())).collect();
        Ok(self
            .insert_tasks(&items)
            .await?
            .into_iter()
            .map(Ok)
            .collect())
    }

    /// Inserts top-level tasks in one transaction: all of them or, on any
    /// error, none. Each comes back in order with whether this call created
    /// it (`false`: its idempotency key named a task that exists, which is
    /// returned instead). `watcher`, if given, is registered on each.
    pub async fn create_tasks(
        &self,
        ts: &[TaskInsert],
        watcher: Option<&str>,
    ) -> Result<Vec<(Task, bool)>> {
        let items: Vec<(&TaskInsert, Option<&str>)> = ts.iter().map(|t| (t, watcher)).collect();
        self.insert_tasks(&items).await
    }

    /// Inserts tasks, each with its watcher, in one transaction. Several
    /// go in one `INSERT … SELECT` from a recordset of them (a lone one in
    /// the plain statement); a task whose idempotency key names a task
    /// that exists comes back as that task, not created.
    async fn insert_tasks(
        &self,
        items: &[(&TaskInsert, Option<&str>)],
    ) -> Result<Vec<(Task, bool)>> {
        if matches!(self.dialect(), Dialect::Postgres)
            && items
                .iter()
                .all(|(t, w)| w.is_none() && t.idempotency_key.is_none())
        {
            return self.insert_plain(items).await;
        }
        if items.len() < 2 {
            return self.insert_tasks_one_by_one(items).await;
        }
        let recordset = self.insert_recordset(&[]);
        let json = self.json_cast();
        let insert = format!(
            "INSERT INTO tasks ({INSERT_COLS}) \
             SELECT u_id, u_kind, u_state, u_input{json}, u_key, u_trace, u_by, u_created, u_created, u_queue, \
                    u_priority, u_run_at, u_max_attempts, u_backoff_ms, u_timeout_ms, u_schedule FROM {recordset} \
             WHERE true ON CONFLICT DO NOTHING RETURNING id"
        );
        let watch = format!(
            "INSERT INTO task_watchers (task_id, address, created_at) SELECT w_id, w_address, $2 FROM {} \
             WHERE true ON CONFLICT DO NOTHING",
            self.recordset(1, "w", &[("w_id", "uuid"), ("w_address", "text")])
        );
        let by_key = format!(
            "SELECT {TASK_COLS} FROM tasks WHERE idempotency_key = $1 {}",
            self.share_lock()
        );
        let rows: Vec<Value> = items.iter().map(|(t, _)| self.insert_row(t)).collect();
        let rows = Value::Array(rows).to_string();
        let ts_now = now();
        on_pool_tx!(self, p, begin => {
            let mut tx = p.begin_with(begin).await?;
            let inserted: Vec<Uuid> = sqlx::query_scalar(&insert).bind(&rows).fetch_all(&mut *tx).await?;
            let mut inserted: HashSet<Uuid> = inserted.into_iter().collect();
            let mut out = Vec::with_capacity(items.len());
            for (t, _) in items {
                let found = if inserted.remove(&t.id) {
                    (t.created(), true)
                } else {
                    match &t.idempotency_key {
                        Some(key) => match sqlx::query_as(&by_key).bind(key).fetch_optional(&mut *tx).await? {
                            Some(r) => (r, false),
                            None => return Err(Error::Conflict(format!("task id {} exists already", t.id))),
                        },
                        None => return Err(Error::Conflict(format!("task id {} exists already", t.id))),
                    }
                };
                out.push(found);
            }
            let watchers: Vec<Value> = items
                .iter()
                .zip(&out)
                .filter_map(|((_, w), (row, _))| w.map(|w| serde_json::json!({"w_id": row.id, "w_address": w})))
                .collect();
            if !watchers.is_empty() {
                sqlx::query(&watch).bind(Value::Array(watchers).to_string()).bind(ts_now).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(out)
        })
    }

    /// PostgreSQL: tasks with no watcher and no idempotency key in one
    /// statement, which is its own transaction: one round trip where
    /// `BEGIN`, the insert and `COMMIT` took three (group-committed HTTP
    /// creates, no wait: see BENCHMARKS.md). A statement is atomic, so the
    /// batch is still all or nothing; ids are new v7 UUIDs, so a clash is
    /// an error (no `ON CONFLICT` to hide one).
    async fn insert_plain(
        &self,
        items: &[(&TaskInsert, Option<&str>)],
    ) -> Result<Vec<(Task, bool)>> {
        let inserted: Vec<Uuid> = on_pool_write!(self, p => match items {
            [(t, _)] => {
                let one = format!("INSERT INTO tasks ({INSERT_COLS}) VALUES ({INSERT_VALUES}) RETURNING id");
                bind_insert!(sqlx::query_scalar(&one), t).fetch_all(p).await
            }
            _ => {
                let rows: Vec<Value> = items.iter().map(|(t, _)| self.insert_row(t)).collect();
                let sql = format!(
                    "INSERT INTO tasks ({INSERT_COLS}) \
                     SELECT u_id, u_kind, u_state, u_input{json}, u_key, u_trace, u_by, u_created, u_created, u_queue, \
                            u_priority, u_run_at, u_max_attempts, u_backoff_ms, u_timeout_ms, u_schedule FROM {recordset} \
                     RETURNING id",
                    json = self.json_cast(),
                    recordset = self.insert_recordset(&[]),
                );
                sqlx::query_scalar(&sql).bind(Value::Array(rows).to_string()).fetch_all(p).await
            }
        })
        .map_err(|e| match e.as_database_error() {
            Some(d) if d.is_unique_violation() => {
                Error::Conflict("a task id of the batch exists already".into())
            }
            _ => Error::from(e),
        })?;
        if inserted.len() != items.len() {
            return Err(Error::Corrupt(format!(
                "{} tasks inserted of {}",
                inserted.len(),
                items.len()
            )));
        }
        Ok(items.iter().map(|(t, _)| (t.created(), true)).collect())
    }

    /// The tasks to insert as a recordset (`$1`, rows made by
    /// `insert_row`) with the columns of [`INSERT_COLS`] as `u_…`, and
    /// `extra` columns after them.
    fn insert_recordset(&self, extra: &[(&str, &str)]) -> String {
        let mut columns = vec![
            ("u_id", "uuid"),
            ("u_kind", "text"),
            ("u_state", "text"),
            ("u_input", "text"),
            ("u_key", "text"),
            ("u_trace", "text"),
            ("u_by", "text"),
            ("u_queue", "text"),
            ("u_priority", "int"),
            ("u_run_at", "timestamptz"),
            ("u_max_attempts", "int"),
            ("u_backoff_ms", "bigint"),
            ("u_timeout_ms", "bigint"),
            ("u_schedule", "text"),
            ("u_created", "timestamptz"),
        ];
        columns.extend_from_slice(extra);
        self.recordset(1, "u", &columns)
    }

    /// A task as a row of `insert_recordset`.
    fn insert_row(&self, t: &TaskInsert) -> Value {
        let sqlite = matches!(self.dialect(), Dialect::Sqlite);
        let time = |t: &DateTime<Utc>| -> Value {
            if sqlite {
                // As sqlx writes a time on SQLite, so that times compare as text.
                Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false))
            } else {
                Value::String(t.to_rfc3339())
            }
        };
        serde_json::json!({
            "u_id": t.id, "u_kind": t.kind, "u_state": t.state().as_str(),
            "u_input": t.input.to_string(), "u_key": t.idempotency_key, "u_trace": t.trace_id,
            "u_by": t.created_by, "u_queue": t.options.queue, "u_priority": t.options.priority,
            "u_run_at": t.options.run_at.as_ref().map(time), "u_max_attempts": t.options.max_attempts,
            "u_backoff_ms": t.options.backoff_ms, "u_timeout_ms": t.options.timeout_ms,
            "u_schedule": t.schedule, "u_created": time(&t.created_at),
        })
    }

    /// Inserts tasks, each with its watcher, in one transaction, a
    /// statement each.
    async fn insert_tasks_one_by_one(
        &self,
        items: &[(&TaskInsert, Option<&str>)],
    ) -> Result<Vec<(Task, bool)>> {
        let insert = format!(
            "INSERT INTO tasks ({INSERT_COLS}) VALUES ({INSERT_VALUES}) \
             ON CONFLICT DO NOTHING RETURNING {TASK_COLS}"
        );
        let by_key = format!(
            "SELECT {TASK_COLS} FROM tasks WHERE idempotency_key = $1 {}",
            self.share_lock()
        );
        let ts_now = now();
        let out: Vec<(Task, bool)> = on_pool_tx!(self, p, begin => {
            let mut tx = p.begin_with(begin).await?;
            let mut out = Vec::with_capacity(items.len());
            for &(t, watcher) in items {
                let row: Option<Task> = bind_insert!(sqlx::query_as(&insert), t)
                    .fetch_optional(&mut *tx)
                    .await?;
                let (row, created) = match (row, &t.idempotency_key) {
                    (Some(r), _) => (r, true),
                    (None, Some(key)) => match sqlx::query_as(&by_key).bind(key).fetch_optional(&mut *tx).await? {
                        Some(r) => (r, false),
                        None => return Err(Error::Conflict(format!("task id {} exists already", t.id))),
                    },
                    (None, None) => return Err(Error::Conflict(format!("task id {} exists already", t.id))),
                };
                if let Some(w) = watcher {
                    sqlx::query("INSERT INTO task_watchers (task_id, address, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                        .bind(row.id).bind(w).bind(ts_now).execute(&mut *tx).await?;
                }
                out.push((row, created));
            }
            tx.commit().await?;
            out
        });
        Ok(out)
    }

    /// Inserts sub-task number `spawn_seq` of the parent that `fence` owns,
    /// in the parent's current attempt. Spawning the same number again in
    /// the same attempt (a parent run again after a crash or a takeover)
    /// returns the sub-task created the first time and `false`; a retried
    /// parent (a new attempt) spawns afresh.
    pub async fn spawn_child(
        &self,
        fence: &Fence,
        spawn_seq: i32,
        t: &TaskInsert,
    ) -> Result<(Task, bool)> {
        // The parent's row is the source of the insert: it must be held by
        // this fence, and it gives the attempt. (SQLite needs the `WHERE` of
        // INSERT … SELECT to tell ON CONFLICT apart from a join constraint.)
        let sql = format!(
            "INSERT INTO tasks ({INSERT_COLS}, parent_id, spawn_seq, parent_attempt) \
             SELECT {INSERT_VALUES}, p.id, $16, p.attempts FROM tasks p \
             WHERE p.id = $17 AND p.executor_id = $19 AND p.epoch = $18 AND p.state IN {HELD} \
               AND NOT EXISTS (SELECT 1 FROM executors e WHERE e.id = $19 AND e.state = 'dead') \
             ON CONFLICT DO NOTHING RETURNING {TASK_COLS}"
        );
        let row: Option<Task> = on_pool_write!(self, p => bind_insert!(sqlx::query_as(&sql), t)
            .bind(spawn_seq)
            .bind(fence.task_id)
            .bind(fence.epoch)
            .bind(&fence.executor_id)
            .fetch_optional(p)
            .await)?;
        if let Some(task) = row {
            return Ok((task, true));
        }
        match self.child(fence, spawn_seq).await? {
            Some(existing) => Ok((existing, false)),
            None => Err(Error::Fenced(fence.task_id)),
        }
    }

    /// [`spawn_child`](Self::spawn_child) for several sub-tasks at once,
    /// numbered `first_seq`, `first_seq + 1`, … in order, in one
    /// `INSERT … SELECT` from a recordset of them (the parent's row is
    /// still the source, so only its owner inserts). Sub-tasks this attempt
    /// spawned before under those numbers come back as they are, not
    /// created. [`Error::Fenced`] if the parent is no longer held and none
    /// of them exists.
    pub async fn spawn_children(
        &self,
        fence: &Fence,
        first_seq: i32,
        ts: &[TaskInsert],
    ) -> Result<Vec<(Task, bool)>> {
        if ts.is_empty() {
            return Ok(Vec::new());
        }
        let recordset = self.insert_recordset(&[("u_seq", "int")]);
        let json = self.json_cast();
        let sql = format!(
            "INSERT INTO tasks ({INSERT_COLS}, parent_id, spawn_seq, parent_attempt) \
             SELECT u_id, u_kind, u_state, u_input{json}, u_key, u_trace, u_by, u_created, u_created, u_queue, \
                    u_priority, u_run_at, u_max_attempts, u_backoff_ms, u_timeout_ms, u_schedule, p.id, u_seq, p.attempts \
             FROM {recordset} JOIN tasks p ON p.id = $2 \
             WHERE p.executor_id = $4 AND p.epoch = $3 AND p.state IN {HELD} \
               AND NOT EXISTS (SELECT 1 FROM executors e WHERE e.id = $4 AND e.state = 'dead') \
             ON CONFLICT DO NOTHING RETURNING id, parent_attempt"
        );
        let rows: Vec<Value> = ts
            .iter()
            .zip(first_seq..)
            .map(|(t, seq)| {
                let mut row = self.insert_row(t);
                row["u_seq"] = Value::from(seq);
                row
            })
            .collect();
        let inserted: Vec<(Uuid, Option<i32>)> = on_pool_write!(self, p => sqlx::query_as(&sql)
            .bind(Value::Array(rows).to_string())
            .bind(fence.task_id)
            .bind(fence.epoch)
            .bind(&fence.executor_id)
            .fetch_all(p)
            .await)?;
        // Built as written (see `TaskInsert::created`), not read back.
        let mut by_id: HashMap<Uuid, Option<i32>> = inserted.into_iter().collect();
        let mut earlier: HashMap<i32, Task> = HashMap::new();
        if by_id.len() < ts.len() {
            // Spawned before in this attempt (a run again after a crash or
            // a takeover): the ones that exist under those numbers.
            earlier = self
                .children_numbered(fence, first_seq, first_seq + ts.len() as i32)
                .await?
                .into_iter()
                .map(|c| (c.spawn_seq, c.task))
                .collect();
        }
        ts.iter()
            .zip(first_seq..)
            .map(|(t, seq)| match by_id.remove(&t.id) {
                Some(parent_attempt) => Ok((
                    Task {
                        parent_id: Some(fence.task_id),
                        parent_attempt,
                        ..t.created()
                    },
                    true,
                )),
                None => earlier
                    .remove(&seq)
                    .map(|task| (task, false))
                    .ok_or(Error::Fenced(fence.task_id)),
            })
            .collect()
    }

    /// Sub-task number `spawn_seq` that the current attempt of the parent
    /// held by `fence` spawned.
    pub async fn child(&self, fence: &Fence, spawn_seq: i32) -> Result<Option<Task>> {
        let found = self
            .children_numbered(fence, spawn_seq, spawn_seq + 1)
            .await?;
        Ok(found.into_iter().next().map(|c| c.task))
    }

    /// The sub-tasks numbered `from` up to (not including) `to` that the
    /// current attempt of the parent held by `fence` spawned.
    async fn children_numbered(
        &self,
        fence: &Fence,
        from: i32,
        to: i32,
    ) -> Result<Vec<SpawnedChild>> {
        let cols = qualified("c");
        let sql = format!(
            "SELECT {cols}, c.spawn_seq FROM tasks c JOIN tasks p ON p.id = c.parent_id \
             WHERE c.parent_id = $1 AND c.parent_attempt = p.attempts \
               AND c.spawn_seq >= $2 AND c.spawn_seq < $3"
        );
        Ok(on_pool!(self, p => sqlx::query_as(&sql)
            .bind(fence.task_id).bind(from).bind(to).fetch_all(p).await)?)
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
        if f.queue.is_some() {
            conds.push(format!("queue = {}", next()));
        }
        if f.parent_id.is_some() {
            conds.push(format!("parent_id = {}", next()));
        }
        if f.schedule.is_some() {
            conds.push(format!("schedule = {}", next()));
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
            if let Some(k) = &f.queue { q = q.bind(k); }
            if let Some(pid) = f.parent_id { q = q.bind(pid); }
            if let Some(s) = &f.schedule { q = q.bind(s); }
            if let Some(a) = f.after { q = q.bind(a); }
            q.bind(lim).fetch_all(p).await
        })?;
        Ok(rows)
    }

    /// The direct sub-tasks of `parent`, by the parent's attempt that
    /// spawned them, then in the order they were spawned.
    pub async fn children(&self, parent: Uuid) -> Result<Vec<Task>> {
        let sql = format!(
            "SELECT {TASK_COLS} FROM tasks WHERE parent_id = $1 ORDER BY parent_attempt, spawn_seq"
        );
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
             SELECT {TASK_COLS} FROM tasks WHERE id IN (SELECT id FROM d) AND state NOT IN {FINAL}"
        );
        let rows: Vec<Task> =
            on_pool!(self, p => sqlx::query_as(&sql).bind(root).fetch_all(p).await)?;
        Ok(rows)
    }

    /// Moves an owned task between `running` and `suspended`; returns it.
    pub async fn set_owned_state(&self, fence: &Fence, to: TaskState) -> Result<Task> {
        debug_assert!(to.is_owned());
        let sql = format!(
            "UPDATE tasks SET state = $4, updated_at = $5, changed_by = $2 \
             WHERE id = $1 AND {OWNED} \
             RETURNING {TASK_COLS}"
        );
        let row: Option<Task> = on_pool_write!(self, p => sqlx::query_as(&sql)
            .bind(fence.task_id).bind(&fence.executor_id).bind(fence.epoch)
            .bind(to.as_str()).bind(now())
            .fetch_optional(p).await)?;
        row.ok_or(Error::Fenced(fence.task_id))
    }

    /// Records a progress value of an owned task.
    pub async fn set_progress(&self, fence: &Fence, progress: &Value) -> Result<()> {
        let sql =
            format!("UPDATE tasks SET progress = $4, updated_at = $5 WHERE id = $1 AND {OWNED}");
        let res = on_pool_write!(self, p => sqlx::query(&sql)
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
        let f = self.finish_run(fence, outcome).await?;
        let task = match f.task {
            Some(t) => t,
            None => self.task(f.id).await?,
        };
        Ok((task, f.watchers))
    }

    /// [`finish`](Self::finish), and in the same transaction wakes the
    /// parent if it was suspended waiting for this task and no other.
    ///
    /// Ends are group-committed (see `group.rs`): the ends of every run
    /// that finished while the previous transaction was being written go in
    /// the next one together, each still fenced on its own and told its own
    /// outcome. A lone end is written at once.
    pub async fn finish_run(&self, fence: &Fence, outcome: &Outcome) -> Result<Finished> {
        let store = self.clone();
        self.finishes
            .submit((fence.clone(), outcome.clone()), move |ends| {
                let store = store.clone();
                Box::pin(async move { store.finish_runs(ends).await })
            })
            .await
    }

    /// Records several runs' ends in one transaction: for each, the fenced
    /// final update, its inbox closed, its watchers taken, its suspended
    /// parent woken. One outcome per end, in order; an end whose run is
    /// no longer owned is [`Error::Fenced`] and changes nothing.
    async fn finish_runs(&self, ends: &[(Fence, Outcome)]) -> Result<Vec<Result<Finished>>> {
        // One fenced UPDATE for every end: the ends travel as one JSON
        // array parameter (`u_output` and `u_errors` as JSON text, so that
        // a `null` output stays JSON `null`), and each row changes only if
        // its own executor still holds it at its own epoch and has not
        // been declared dead.
        let ends_sql = self.recordset(
            1,
            "u",
            &[
                ("u_id", "uuid"),
                ("u_exec", "text"),
                ("u_epoch", "bigint"),
                ("u_state", "text"),
                ("u_output", "text"),
                ("u_error", "text"),
                ("u_errors", "text"),
            ],
        );
        let json = self.json_cast();
        // The owner and state are kept out of index selection, so that the
        // plan walks the ends and finds each task by its key. With them, on
        // SQLite the plan walked every running task for every end through
        // the state index (5,908 → 2,896 tasks/s); PostgreSQL, its
        // statistics taken when few tasks were held, walked the owner's
        // held tasks for every end through `tasks_executor` (auto_explain:
        // a flush of 264 ends read 132 tasks an end, 22 of its 28 ms).
        let owner = self.unindexed("tasks.executor_id");
        let state = self.unindexed("tasks.state");
        let sql = format!(
            "UPDATE tasks SET state = u.u_state, output = u.u_output{json}, error = u.u_error, \
                 finished_at = $2, updated_at = $2, changed_by = u.u_exec, \
                 errors = COALESCE(u.u_errors{json}, errors), waiting = NULL \
             FROM {ends_sql} \
             WHERE tasks.id = u.u_id AND {owner} = u.u_exec AND tasks.epoch = u.u_epoch \
               AND {state} IN {HELD} \
               AND NOT EXISTS (SELECT 1 FROM executors e WHERE e.id = u.u_exec AND e.state = 'dead') \
             RETURNING id, parent_id"
        );
        let one = format!(
            "UPDATE tasks SET state = $4, output = $5, error = $6, finished_at = $7, updated_at = $7, changed_by = $2, \
                 errors = COALESCE($8, errors), waiting = NULL \
             WHERE id = $1 AND {OWNED} \
             RETURNING {TASK_COLS}"
        );
        // Built only for a flush of several ends.
        let rows = || -> String {
            let rows: Vec<Value> = ends
                .iter()
                .map(|(fence, outcome)| {
                    let (output, error, errors) = outcome.columns();
                    serde_json::json!({
                        "u_id": fence.task_id, "u_exec": fence.executor_id, "u_epoch": fence.epoch,
                        "u_state": outcome.state().as_str(), "u_output": output.map(Value::to_string),
                        "u_error": error,
                        "u_errors": errors.map(|e| serde_json::to_string(e).unwrap_or_else(|_| "[]".into())),
                    })
                })
                .collect();
            Value::Array(rows).to_string()
        };
        let close_inboxes = format!(
            "UPDATE task_events SET delivered_at = $2 WHERE task_id IN {} AND delivered_at IS NULL",
            self.id_set(1)
        );
        let take_watchers = format!(
            "DELETE FROM task_watchers WHERE task_id IN {} RETURNING task_id, address",
            self.id_set(1)
        );
        let read = format!(
            "SELECT {TASK_COLS} FROM tasks WHERE id IN {}",
            self.id_set(1)
        );
        // PostgreSQL's data-modifying CTEs: the three in one statement.
        let all_in_one = format!(
            "WITH u AS ({sql}), \
                  c AS (UPDATE task_events SET delivered_at = $2 \
                        WHERE task_id IN (SELECT id FROM u) AND delivered_at IS NULL), \
                  w AS (DELETE FROM task_watchers WHERE task_id IN (SELECT id FROM u) \
                        RETURNING task_id, address) \
             SELECT id, parent_id, NULL::text FROM u \
             UNION ALL SELECT task_id, NULL::uuid, address FROM w"
        );
        let out: Vec<Option<Finished>> = on_pool_tx!(self, p, begin => {
            let begin = match self.dialect() {
                Dialect::Postgres => KEYED_BEGIN,
                Dialect::Sqlite => begin,
            };
            let mut tx = p.begin_with(begin).await?;
            let at = now();
            // Whether the inboxes are closed and the watchers taken already.
            let mut closed = false;
            let mut watched: Vec<(Uuid, String)> = Vec::new();
            // Each ended task's id and parent, and the task itself if read.
            let done: Vec<(Uuid, Option<Uuid>, Option<Task>)> = match ends {
                // A lone end (no load): the plain statement by key, which
                // PostgreSQL plans and runs faster than a join with a
                // recordset of one, and returns the task at no cost worth
                // sparing.
                [(fence, outcome)] => {
                    let (output, error, errors) = outcome.columns();
                    let task: Option<Task> = sqlx::query_as(&one)
                        .bind(fence.task_id).bind(&fence.executor_id).bind(fence.epoch)
                        .bind(outcome.state().as_str()).bind(output.map(Json)).bind(error).bind(at)
                        .bind(errors.map(Json))
                        .fetch_optional(&mut *tx).await?;
                    task.into_iter().map(|t| (t.id, t.parent_id, Some(t))).collect()
                }
                // PostgreSQL: the ends, their inboxes closed and their
                // watchers taken in one statement (one round trip, where
                // three statements took three); a row with an address is a
                // watcher, one without is an end.
                _ if matches!(self.dialect(), Dialect::Postgres) => {
                    let rows: Vec<(Uuid, Option<Uuid>, Option<String>)> =
                        sqlx::query_as(&all_in_one).bind(rows()).bind(at).fetch_all(&mut *tx).await?;
                    let mut done = Vec::with_capacity(rows.len());
                    for (id, parent, address) in rows {
                        match address {
                            Some(a) => watched.push((id, a)),
                            None => done.push((id, parent, None)),
                        }
                    }
                    closed = true;
                    done
                }
                _ => {
                    let rows: Vec<(Uuid, Option<Uuid>)> =
                        sqlx::query_as(&sql).bind(rows()).bind(at).fetch_all(&mut *tx).await?;
                    rows.into_iter().map(|(id, parent)| (id, parent, None)).collect()
                }
            };
            let mut out: Vec<Option<Finished>> = vec![None; ends.len()];
            if done.is_empty() {
                tx.rollback().await?;
                return Ok(ends.iter().map(|(f, _)| Err(Error::Fenced(f.task_id))).collect());
            }
            // Each row to the first end that names its task (a second end
            // for the same task in one flush is refused, as it would be
            // one flush later).
            let mut at_index: HashMap<Uuid, usize> = HashMap::new();
            for (i, (fence, _)) in ends.iter().enumerate() {
                at_index.entry(fence.task_id).or_insert(i);
            }
            let mut with_parent: HashSet<Uuid> = HashSet::new();
            for (id, parent, task) in done {
                let i = at_index[&id];
                let woken = match parent {
                    Some(parent) => {
                        with_parent.insert(id);
                        wake_parent!(self, tx, id, parent, &ends[i].0.executor_id)
                    }
                    None => None,
                };
                let state = ends[i].1.state();
                out[i] = Some(Finished { id, state, task, watchers: Vec::new(), woken });
            }
            // The inboxes are closed with the tasks: whatever is in them
            // counts as delivered, so no sweep sends it again. Then the
            // watchers are taken. One statement each for all.
            if !closed {
                let ids = super::ids_json(out.iter().flatten().map(|f| &f.id));
                sqlx::query(&close_inboxes).bind(&ids).bind(at).execute(&mut *tx).await?;
                watched = sqlx::query_as(&take_watchers).bind(&ids).fetch_all(&mut *tx).await?;
            }
            for (task, address) in watched {
                if let Some(Some(f)) = at_index.get(&task).map(|&i| out[i].as_mut()) {
                    f.watchers.push(address);
                }
            }
            // The tasks someone is told of, read as they ended.
            let told: Vec<&Uuid> = out
                .iter()
                .flatten()
                .filter(|f| f.task.is_none() && (!f.watchers.is_empty() || with_parent.contains(&f.id)))
                .map(|f| &f.id)
                .collect();
            if !told.is_empty() {
                let tasks: Vec<Task> =
                    sqlx::query_as(&read).bind(super::ids_json(told)).fetch_all(&mut *tx).await?;
                for task in tasks {
                    if let Some(Some(f)) = at_index.get(&task.id).map(|&i| out[i].as_mut()) {
                        f.task = Some(task);
                    }
                }
            }
            tx.commit().await?;
            out
        });
        Ok(out
            .into_iter()
            .zip(ends)
            .map(|(f, (fence, _))| f.ok_or(Error::Fenced(fence.task_id)))
            .collect())
    }

    /// Records a failed attempt of an owned task that has attempts left:
    /// `scheduled` until `run_at`, no longer owned, `errors` every failed
    /// attempt's so far. The next claim is the next attempt.
    pub async fn retry_later(
        &self,
        fence: &Fence,
        error: &str,
        errors: &[AttemptError],
        run_at: DateTime<Utc>,
    ) -> Result<Task> {
        let sql = format!(
            "UPDATE tasks SET state = {SCHEDULED}, run_at = $4, error = $5, errors = $6, executor_id = NULL, \
                 updated_at = $7, changed_by = $2 \
             WHERE id = $1 AND {OWNED} \
             RETURNING {TASK_COLS}"
        );
        let row: Option<Task> = on_pool_write!(self, p => sqlx::query_as(&sql)
            .bind(fence.task_id).bind(&fence.executor_id).bind(fence.epoch)
            .bind(run_at.trunc_subsecs(6)).bind(error).bind(Json(errors)).bind(now())
            .fetch_optional(p).await)?;
        row.ok_or(Error::Fenced(fence.task_id))
    }

    /// Puts an owned task back to `pending` (a clean stop hands its tasks
    /// back). The run did not end, so it uses no attempt: the next claim
    /// runs the same attempt again.
    pub async fn hand_back(&self, fence: &Fence) -> Result<()> {
        let sql = format!(
            "UPDATE tasks SET state = {PENDING}, executor_id = NULL, attempts = attempts - 1, \
                 updated_at = $4, changed_by = $2 \
             WHERE id = $1 AND {OWNED}"
        );
        let res = on_pool_write!(self, p => sqlx::query(&sql)
            .bind(fence.task_id).bind(&fence.executor_id).bind(fence.epoch).bind(now())
            .execute(p).await.map(|r| r.rows_affected()))?;
        if res == 0 {
            return Err(Error::Fenced(fence.task_id));
        }
        Ok(())
    }

    /// Marks a task for cancellation; a suspended one is woken (`pending`,
    /// for its replay to see the cancel). Returns the task as it stands;
    /// final tasks are returned unchanged.
    pub async fn request_cancel(&self, id: Uuid) -> Result<Task> {
        let woken = format!("state = {SUSPENDED} AND executor_id IS NULL");
        on_pool_write!(self, p => sqlx::query(&format!(
            "UPDATE tasks SET cancel_requested = TRUE, \
                 run_at = CASE WHEN {woken} THEN NULL ELSE run_at END, \
                 waiting = CASE WHEN {woken} THEN NULL ELSE waiting END, \
                 changed_by = CASE WHEN {woken} THEN 'cancel' ELSE changed_by END, \
                 state = CASE WHEN {woken} THEN {PENDING} ELSE state END \
             WHERE id = $1 AND state NOT IN {FINAL}"))
            .bind(id).execute(p).await.map(|r| r.rows_affected()))?;
        self.task(id).await
    }

    /// Cancels a task that no executor holds (`scheduled` or `pending`),
    /// and wakes its parent if that waited for it. `None` when it was in
    /// another state; else the task and the parent woken, if any.
    pub async fn cancel_unclaimed(
        &self,
        id: Uuid,
        by: &str,
    ) -> Result<Option<(Task, Option<Task>)>> {
        let sql = format!(
            "UPDATE tasks SET state = {CANCELLED}, cancel_requested = TRUE, run_at = NULL, \
                 error = CASE WHEN attempts > 0 THEN 'cancelled while waiting to be retried' \
                              ELSE 'cancelled before it started' END, \
                 finished_at = $3, updated_at = $3, changed_by = $2 \
             WHERE id = $1 AND state IN ({SCHEDULED}, {PENDING}) RETURNING {TASK_COLS}"
        );
        Ok(on_pool_tx!(self, p, begin => {
            let mut tx = p.begin_with(begin).await?;
            let row: Option<Task> = sqlx::query_as(&sql)
                .bind(id).bind(by).bind(now()).fetch_optional(&mut *tx).await?;
            let out = match row {
                Some(task) => {
                    let woken = match task.parent_id {
                        Some(parent) => wake_parent!(self, tx, task.id, parent, by),
                        None => None,
                    };
                    Some((task, woken))
                }
                None => None,
            };
            tx.commit().await?;
            out
        }))
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

    /// Running or suspended tasks of `executor` whose cancellation was
    /// requested: the sweep tells their actors again, in case the first
    /// message was lost.
    pub async fn cancel_requested_owned(&self, executor: &str) -> Result<Vec<(Uuid, String)>> {
        Ok(on_pool!(self, p => sqlx::query_as(
            &format!("SELECT id, trace_id FROM tasks WHERE executor_id = $1 AND state IN {HELD} \
               AND cancel_requested = TRUE LIMIT 1000"))
            .bind(executor).fetch_all(p).await)?)
    }

    /// Puts back to `pending` every running task whose owner is not an alive
    /// executor (dead, stopped, or unknown), on behalf of `by`; returns them,
    /// and the suspended parents that a poisoned one (below) woke.
    /// This catches every way a task can be left behind: a takeover cut
    /// short, a claim that committed as its executor stopped or was declared
    /// dead, a hand-back that never ran.
    ///
    /// The interrupted run uses no attempt: the next claim runs the same
    /// attempt again. A task taken from a *dead* executor counts a takeover; at
    /// `max_takeovers` it is failed instead (a poison task that kills every
    /// executor that runs it must not go round forever), and a parent that
    /// waited for it wakes in the same transaction.
    pub async fn release_orphans(
        &self,
        by: &str,
        max_takeovers: i32,
    ) -> Result<(Vec<Task>, Vec<Task>)> {
        let died = "(CASE WHEN EXISTS (SELECT 1 FROM executors d WHERE d.id = tasks.executor_id AND d.state = 'dead') THEN 1 ELSE 0 END)";
        let poison = format!("(takeovers + {died} >= $3)");
        let sql = format!(
            "UPDATE tasks SET \
                 takeovers = takeovers + {died}, \
                 state = CASE WHEN {poison} THEN {FAILED} ELSE {PENDING} END, \
                 error = CASE WHEN {poison} THEN $4 ELSE error END, \
                 finished_at = CASE WHEN {poison} THEN $2 ELSE finished_at END, \
                 executor_id = CASE WHEN {poison} THEN executor_id ELSE NULL END, \
                 attempts = CASE WHEN {poison} THEN attempts ELSE attempts - 1 END, \
                 updated_at = $2, changed_by = $1 \
             WHERE state IN {HELD} AND executor_id IS NOT NULL \
               AND NOT EXISTS (SELECT 1 FROM executors e WHERE e.id = tasks.executor_id AND e.state = 'alive') \
             RETURNING {TASK_COLS}"
        );
        let msg = format!(
            "given up: the executor running this task died {max_takeovers} times (a poison task?)"
        );
        let out = on_pool_tx!(self, p, begin => {
            let mut tx = p.begin_with(begin).await?;
            let rows: Vec<Task> = sqlx::query_as(&sql)
                .bind(by).bind(now()).bind(max_takeovers).bind(&msg).fetch_all(&mut *tx).await?;
            // A poisoned sub-task is final: its suspended parent wakes in
            // the same transaction, as for every other end.
            let mut woken = Vec::new();
            for t in rows.iter().filter(|t| t.state.is_final()) {
                if let Some(parent) = t.parent_id {
                    woken.extend(wake_parent!(self, tx, t.id, parent, by));
                }
            }
            tx.commit().await?;
            (rows, woken)
        });
        Ok(out)
    }
}

/// A sub-task with the number its parent spawned it under.
#[derive(sqlx::FromRow)]
struct SpawnedChild {
    #[sqlx(flatten)]
    task: Task,
    spawn_seq: i32,
}
