//! The `tasks` table: reading tasks, their history and counts, and the
//! state changes that are not a create or a run's end (progress, cancel,
//! orphans released). Creates are in `creates.rs`, ends in `ends.rs`.

use super::statements::tasks as st;
use super::{Fence, Store};
use crate::error::{Error, Result};
use crate::model::{now, HistoryEntry, IdPrefix, Task, TaskFilter, TaskState};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use super::journal::wake_parents;

impl Store {
    /// The task, if it exists.
    pub async fn get_task(&self, id: Uuid) -> Result<Option<Task>> {
        let row: Option<Task> =
            on_pool!(self, p => sqlx::query_as(&st::get()).bind(id).fetch_optional(p).await)?;
        Ok(row)
    }

    /// The task, or [`Error::NotFound`].
    pub async fn task(&self, id: Uuid) -> Result<Task> {
        self.get_task(id).await?.ok_or(Error::NotFound(id))
    }

    /// Tasks matching `f`, newest first, at most `f.limit` (1 to 1001: a
    /// page of 1000 and one more, which tells whether another follows).
    pub async fn list_tasks(&self, f: &TaskFilter) -> Result<Vec<Task>> {
        let sql = st::list(self.dialect(), f);
        let lim = i64::from(f.limit.clamp(1, 1001));
        let rows: Vec<Task> = on_pool!(self, p => {
            let mut q = sqlx::query_as(&sql);
            if let Some(s) = f.state { q = q.bind(s.as_str()); }
            if let Some(k) = &f.kind { q = q.bind(k); }
            if let Some(k) = &f.queue { q = q.bind(k); }
            if let Some(pid) = f.parent_id { q = q.bind(pid); }
            if let Some(s) = &f.schedule { q = q.bind(s); }
            if let Some((lo, hi)) = f.id_prefix.as_ref().map(IdPrefix::range) { q = q.bind(lo).bind(hi); }
            if let Some(a) = f.after { q = q.bind(a); }
            q.bind(lim).fetch_all(p).await
        })?;
        Ok(rows)
    }

    /// A page of the direct sub-tasks of `parent` in spawn order (by the
    /// parent's attempt that spawned them, then their spawn number), after
    /// the sub-task `after`, at most `limit`; `bodies: false` leaves
    /// `input` and `output` unread. One index range (the spawn key), so a
    /// page of a fan-out of 10,000 costs what a page of ten does.
    pub async fn children_page(
        &self,
        parent: Uuid,
        after: Option<Uuid>,
        limit: u32,
        bodies: bool,
    ) -> Result<Vec<Task>> {
        let sql = st::children_page(self.dialect(), bodies);
        let rows: Vec<Task> = on_pool!(self, p => sqlx::query_as(&sql)
            .bind(parent).bind(after).bind(i64::from(limit.clamp(1, 1001))).fetch_all(p).await)?;
        Ok(rows)
    }

    /// A page of `task`'s history, oldest first, after the line `after`.
    pub async fn history_page(
        &self,
        task: Uuid,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<HistoryEntry>> {
        Ok(on_pool!(self, p => sqlx::query_as(st::HISTORY_PAGE)
            .bind(task).bind(after.unwrap_or(i64::MIN)).bind(i64::from(limit.clamp(1, 1001)))
            .fetch_all(p).await)?)
    }

    /// The direct sub-tasks of `parent`, by the parent's attempt that
    /// spawned them, then in the order they were spawned.
    pub async fn children(&self, parent: Uuid) -> Result<Vec<Task>> {
        let sql = st::children();
        let rows: Vec<Task> =
            on_pool!(self, p => sqlx::query_as(&sql).bind(parent).fetch_all(p).await)?;
        Ok(rows)
    }

    /// Every unfinished descendant of `root` (children, their children, …).
    pub async fn open_descendants(&self, root: Uuid) -> Result<Vec<Task>> {
        let sql = st::open_descendants();
        let rows: Vec<Task> =
            on_pool!(self, p => sqlx::query_as(&sql).bind(root).fetch_all(p).await)?;
        Ok(rows)
    }

    /// Moves an owned task between `running` and `suspended`; returns it.
    pub async fn set_owned_state(&self, fence: &Fence, to: TaskState) -> Result<Task> {
        debug_assert!(to.is_owned());
        let sql = st::set_owned_state();
        let row: Option<Task> = on_pool_write!(self, p => sqlx::query_as(&sql)
            .bind(fence.task_id).bind(&fence.executor_id).bind(fence.epoch)
            .bind(to.as_str()).bind(now())
            .fetch_optional(p).await)?;
        row.ok_or(Error::Fenced(fence.task_id))
    }

    /// Records a progress value of an owned task.
    pub async fn set_progress(&self, fence: &Fence, progress: &Value) -> Result<()> {
        let sql = st::set_progress();
        let res = on_pool_write!(self, p => sqlx::query(&sql)
            .bind(fence.task_id).bind(&fence.executor_id).bind(fence.epoch)
            .bind(Json(progress)).bind(now())
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
        on_pool_write!(self, p => sqlx::query(&st::request_cancel())
            .bind(id).execute(p).await.map(|r| r.rows_affected()))?;
        self.task(id).await
    }

    /// Retry now: a `scheduled` task (waiting for its start time or a
    /// retry's backoff) becomes `pending` at once; a `failed` or
    /// `cancelled` root task gets a new attempt now (`pending`, no longer
    /// finished, its cancel request cleared, and one attempt more allowed if
    /// it had used them all). As for any retry, its errors and its journal
    /// stay (succeeded steps are not run again) and the new attempt spawns
    /// its sub-tasks anew. `None` when the task is in another state, or is a
    /// finished sub-task (its end was reported to its parent: retry the
    /// parent).
    pub async fn retry_now(&self, id: Uuid, by: &str) -> Result<Option<Task>> {
        let sql = st::retry_now();
        Ok(on_pool_write!(self, p => sqlx::query_as(&sql)
            .bind(id).bind(now()).bind(by).fetch_optional(p).await)?)
    }

    /// Cancels a task that no executor holds (`scheduled` or `pending`),
    /// and wakes its parent if that waited for it. `None` when it was in
    /// another state; else the task and the parent woken, if any.
    pub async fn cancel_unclaimed(
        &self,
        id: Uuid,
        by: &str,
    ) -> Result<Option<(Task, Option<Task>)>> {
        let sql = st::cancel_unclaimed();
        Ok(on_pool_tx!(self, p, begin => {
            let mut tx = p.begin_with(begin).await?;
            let row: Option<Task> = sqlx::query_as(&sql)
                .bind(id).bind(by).bind(now()).fetch_optional(&mut *tx).await?;
            let out = match row {
                Some(task) => {
                    let woken = match task.parent_id {
                        Some(parent) => {
                            let ids = super::ids_json([&task.id]);
                            let parents = super::ids_json([&parent]);
                            wake_parents!(self, tx, &ids, &parents, |_: &Uuid| by).into_iter().next()
                        }
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
        Ok(on_pool!(self, p => sqlx::query_as(st::HISTORY)
            .bind(id).fetch_all(p).await)?)
    }

    /// Running or suspended tasks of `executor` whose cancellation was
    /// requested: the sweep tells their actors again, in case the first
    /// message was lost.
    pub async fn cancel_requested_owned(&self, executor: &str) -> Result<Vec<(Uuid, String)>> {
        Ok(
            on_pool!(self, p => sqlx::query_as(&st::cancel_requested_owned())
            .bind(executor).fetch_all(p).await)?,
        )
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
        let sql = st::release_orphans();
        let msg = format!(
            "given up: the executor running this task died {max_takeovers} times (a poison task?)"
        );
        let out = on_pool_tx!(self, p, begin => {
            let mut tx = p.begin_with(begin).await?;
            let rows: Vec<Task> = sqlx::query_as(&sql)
                .bind(by).bind(now()).bind(max_takeovers).bind(&msg).fetch_all(&mut *tx).await?;
            // A poisoned sub-task is final: its suspended parent wakes in
            // the same transaction, as for every other end.
            let ended = rows.iter().filter(|t| t.state.is_final() && t.parent_id.is_some());
            let woken = if ended.clone().next().is_some() {
                let ids = super::ids_json(ended.clone().map(|t| &t.id));
                let parents = super::ids_json(ended.filter_map(|t| t.parent_id.as_ref()));
                wake_parents!(self, tx, &ids, &parents, |_: &Uuid| by)
            } else {
                Vec::new()
            };
            tx.commit().await?;
            (rows, woken)
        });
        Ok(out)
    }

    /// The tasks of `ids` that exist, in no particular order: one statement
    /// for many (a task's actor reads the sub-tasks said to have ended).
    pub async fn tasks_by_id(&self, ids: &[Uuid]) -> Result<Vec<Task>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = st::by_id(self.dialect());
        let rows: Vec<Task> = on_pool!(self, p => sqlx::query_as(&sql)
            .bind(super::ids_json(ids)).fetch_all(p).await)?;
        Ok(rows)
    }

    /// The ids of `ids` still `pending`: what a claim that named them did
    /// not take (see the executor's `claim`). Ids only: nothing else of the
    /// rows is read.
    pub async fn pending_of(&self, ids: &[Uuid]) -> Result<Vec<Uuid>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = st::pending_of(self.dialect());
        Ok(on_pool!(self, p => sqlx::query_scalar(&sql)
            .bind(super::ids_json(ids)).fetch_all(p).await)?)
    }
}
