//! The `tasks` table: creating, reading, claiming and finishing tasks.

use super::*;

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
    pub async fn create_task_watched(
        &self,
        t: &TaskInsert,
        watcher: Option<&str>,
    ) -> Result<(Task, bool)> {
        let insert = format!(
            "INSERT INTO tasks (id, kind, state, input, idempotency_key, trace_id, changed_by, created_at, updated_at) \
             VALUES ($1, $2, {PENDING}, $3, $4, $5, $6, $7, $7) \
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
             SELECT $1, $2, {PENDING}, $3, $4, $5, $6, $7, $8, $8 \
             WHERE EXISTS (SELECT 1 FROM tasks p WHERE p.id = $4 AND p.executor_id = $7 AND p.epoch = $9 \
                           AND p.state IN {HELD}) \
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
             SELECT {TASK_COLS} FROM tasks WHERE id IN (SELECT id FROM d) AND state NOT IN {FINAL}"
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
            "UPDATE tasks SET state = {RUNNING}, executor_id = $2, epoch = epoch + 1, \
                 attempts = attempts + 1, started_at = COALESCE(started_at, $3), updated_at = $3, changed_by = $2 \
             WHERE id = $1 AND state = {PENDING} AND kind = $4 \
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
            "WITH picked AS MATERIALIZED (SELECT id FROM tasks WHERE state = {PENDING} AND kind IN ({kinds}) \
                                          ORDER BY id LIMIT $3 {lock}) \
             UPDATE tasks SET state = {RUNNING}, executor_id = $1, epoch = epoch + 1, \
                 attempts = attempts + 1, started_at = COALESCE(started_at, $2), updated_at = $2, changed_by = $1 \
             WHERE id IN (SELECT id FROM picked) \
               AND state = {PENDING} \
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
            "UPDATE tasks SET state = {PENDING}, executor_id = NULL, updated_at = $4, changed_by = $2 \
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
            "UPDATE tasks SET cancel_requested = TRUE WHERE id = $1 AND state NOT IN {FINAL}"))
            .bind(id).execute(p).await.map(|r| r.rows_affected()))?;
        self.task(id).await
    }

    /// Cancels a task that no executor has claimed yet. `None` when it was not pending.
    pub async fn cancel_pending(&self, id: Uuid, by: &str) -> Result<Option<Task>> {
        let sql = format!(
            "UPDATE tasks SET state = {CANCELLED}, cancel_requested = TRUE, error = 'cancelled before it started', \
                 finished_at = $3, updated_at = $3, changed_by = $2 \
             WHERE id = $1 AND state = {PENDING} RETURNING {TASK_COLS}"
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

    /// Running or suspended tasks of `executor` whose cancellation was
    /// requested: the sweep tells their actors again, in case the first
    /// message was lost.
    pub async fn cancel_requested_owned(&self, executor: &str) -> Result<Vec<(Uuid, String)>> {
        Ok(on_pool!(self, p => sqlx::query_as(
            &format!("SELECT id, trace_id FROM tasks WHERE executor_id = $1 AND state IN {HELD} \
               AND cancel_requested = TRUE LIMIT 1000"))
            .bind(executor).fetch_all(p).await)?)
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
             WHERE p.executor_id = $1 AND p.state = {SUSPENDED} AND c.state IN {FINAL} \
               AND c.finished_at < $2 \
             ORDER BY c.finished_at DESC LIMIT 1000"
        );
        let rows: Vec<Task> = on_pool!(self, p => sqlx::query_as(&sql)
            .bind(executor).bind(before).fetch_all(p).await)?;
        Ok(rows)
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
                 state = CASE WHEN {poison} THEN {FAILED} ELSE {PENDING} END, \
                 error = CASE WHEN {poison} THEN $4 ELSE error END, \
                 finished_at = CASE WHEN {poison} THEN $2 ELSE finished_at END, \
                 executor_id = CASE WHEN {poison} THEN executor_id ELSE NULL END, \
                 updated_at = $2, changed_by = $1 \
             WHERE state IN {HELD} \
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
}
