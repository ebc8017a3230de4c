//! Creating tasks: single creates (group-committed), batches, and a
//! parent's sub-tasks; the columns a new task sets.

use super::statements::creates as st;
use super::{Dialect, Fence, Store};
use crate::error::{Error, Result};
use crate::model::{now, Task, TaskState};
use crate::options::Resolved;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use std::collections::{HashMap, HashSet};

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
            pending_since: None,
        }
    }
}

/// Binds a [`TaskInsert`] as `$1 … $15` of `statements::INSERT_COLS`.
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
        self.create_grouped(t, watcher, None).await
    }

    /// [`create_task_watched`](Self::create_task_watched) that, when the
    /// create is written alone (no other create joins its transaction), has
    /// no idempotency key and is due now, also claims the task for
    /// `executor` in the same statement: it comes back `running`, epoch 1,
    /// attempt 1, held by `executor`, with no claim and no commit of its
    /// own (an *eager start*, as Temporal's eager workflow start). The
    /// claim's rules hold: `executor` alive, the task's queue without a
    /// limit or a pause, and no task pending in that queue at a priority
    /// as high or higher (which a claim would take first). Otherwise it is
    /// created `pending` (or `scheduled`) as by `create_task_watched`, and
    /// the caller announces it as usual. The history shows the two steps
    /// (created `pending`, then `running`), as a claim writes them.
    ///
    /// The caller is `executor`'s own process, with a slot held for the
    /// task: a `running` task it does not run stays held until that
    /// executor is declared dead.
    pub async fn create_task_started(
        &self,
        t: &TaskInsert,
        watcher: Option<&str>,
        executor: &str,
    ) -> Result<(Task, bool)> {
        self.create_grouped(t, watcher, Some(executor)).await
    }

    async fn create_grouped(
        &self,
        t: &TaskInsert,
        watcher: Option<&str>,
        executor: Option<&str>,
    ) -> Result<(Task, bool)> {
        let store = self.clone();
        self.creates
            .submit(
                (
                    t.clone(),
                    watcher.map(str::to_string),
                    executor.map(str::to_string),
                ),
                move |creates| {
                    let store = store.clone();
                    Box::pin(async move { store.create_each(creates).await })
                },
            )
            .await
    }

    /// Several callers' creates in one transaction, each with its own
    /// watcher. Any error fails the whole transaction (the group then
    /// writes them again one by one, so only the one at fault fails).
    async fn create_each(&self, creates: &[super::Create]) -> Result<Vec<Result<(Task, bool)>>> {
        if let [(t, w, Some(executor))] = creates {
            if t.idempotency_key.is_none() && t.state() == TaskState::Pending {
                return Ok(vec![Ok((
                    self.insert_started(t, w.as_deref(), executor).await?,
                    true,
                ))]);
            }
        }
        let items: Vec<(&TaskInsert, Option<&str>)> =
            creates.iter().map(|(t, w, _)| (t, w.as_deref())).collect();
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
        if items
            .iter()
            .all(|(t, w)| w.is_none() && t.idempotency_key.is_none())
        {
            return self.insert_plain(items).await;
        }
        if let [(t, Some(watcher))] = items {
            if t.idempotency_key.is_none() && matches!(self.dialect(), Dialect::Postgres) {
                return Ok(vec![(self.insert_watched(t, watcher).await?, true)]);
            }
        }
        if items.len() < 2 {
            return self.insert_tasks_one_by_one(items).await;
        }
        let insert = st::batch_keyed(self.dialect());
        let watch = st::watch_batch(self.dialect());
        let by_key = st::by_key(self.dialect());
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

    /// Tasks with no watcher and no idempotency key in one
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
                let one = st::insert_plain();
                bind_insert!(sqlx::query_scalar(&one), t).fetch_all(p).await
            }
            _ => {
                let rows: Vec<Value> = items.iter().map(|(t, _)| self.insert_row(t)).collect();
                let sql = st::batch_plain(self.dialect());
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

    /// A task as a row of the recordsets of `statements::creates`.
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

    /// A lone task, claimed for `executor` in its own insert when the
    /// claim's rules allow (see [`create_task_started`](Self::create_task_started)),
    /// with its watcher: one statement on PostgreSQL (a data-modifying
    /// CTE), one transaction on SQLite. An id that exists already is
    /// [`Error::Conflict`].
    async fn insert_started(
        &self,
        t: &TaskInsert,
        watcher: Option<&str>,
        executor: &str,
    ) -> Result<Task> {
        let sql = st::insert_started(self.dialect());
        let conflict = || Error::Conflict(format!("task id {} exists already", t.id));
        let row: Option<Task> = match self.dialect() {
            Dialect::Postgres => on_pool_write!(self, p => bind_insert!(sqlx::query_as(&sql), t)
                    .bind(executor)
                    .bind(watcher)
                    .fetch_optional(p).await)?,
            Dialect::Sqlite => {
                on_pool_tx!(self, p, begin => {
                    let mut tx = p.begin_with(begin).await?;
                    let row: Option<Task> = bind_insert!(sqlx::query_as(&sql), t)
                        .bind(executor)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if let (Some(row), Some(w)) = (&row, watcher) {
                        sqlx::query(st::WATCH_STARTED)
                            .bind(row.id).bind(w).bind(t.created_at).execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                    row
                })
            }
        };
        row.ok_or_else(conflict)
    }

    /// PostgreSQL: a lone task with its watcher and no idempotency key in
    /// one statement, its own transaction (a data-modifying CTE): one
    /// round trip where `BEGIN`, two inserts and `COMMIT` took four, on the
    /// path of every sync wait (issue 24). An id that exists already is
    /// [`Error::Conflict`], as in [`insert_tasks_one_by_one`](Self::insert_tasks_one_by_one).
    async fn insert_watched(&self, t: &TaskInsert, watcher: &str) -> Result<Task> {
        let sql = st::insert_watched();
        let row: Option<Task> = on_pool_write!(self, p => bind_insert!(sqlx::query_as(&sql), t)
            .bind(watcher)
            .fetch_optional(p).await)?;
        row.ok_or_else(|| Error::Conflict(format!("task id {} exists already", t.id)))
    }

    /// Inserts tasks, each with its watcher, in one transaction, a
    /// statement each.
    async fn insert_tasks_one_by_one(
        &self,
        items: &[(&TaskInsert, Option<&str>)],
    ) -> Result<Vec<(Task, bool)>> {
        let insert = st::insert_keyed();
        let by_key = st::by_key(self.dialect());
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
                    sqlx::query(super::statements::watchers::ADD)
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
        let sql = st::spawn_child();
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
        let sql = st::spawn_children(self.dialect());
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
        let sql = st::children_numbered();
        Ok(on_pool!(self, p => sqlx::query_as(&sql)
            .bind(fence.task_id).bind(from).bind(to).fetch_all(p).await)?)
    }
}

/// A sub-task with the number its parent spawned it under.
#[derive(sqlx::FromRow)]
struct SpawnedChild {
    #[sqlx(flatten)]
    task: Task,
    spawn_seq: i32,
}
