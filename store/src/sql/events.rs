//! The `task_events` table: each task's durable inbox.

use super::statements::events as st;
use super::Store;
use crate::error::{Error, Result};
use crate::model::{now, Task, TaskEvent};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

/// An event still undelivered, with the trace of its task.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct UndeliveredEvent {
    #[sqlx(flatten)]
    pub event: TaskEvent,
    pub trace_id: String,
}

impl Store {
    /// Commits an event to the task's inbox and, if the task is suspended
    /// waiting for an event of this name, wakes it (returned: it is
    /// `pending` now, for an executor to claim).
    /// Refused with [`Error::NotFound`] or, for a finished task,
    /// [`Error::Conflict`].
    pub async fn add_event(
        &self,
        task: Uuid,
        name: &str,
        payload: &Value,
    ) -> Result<(TaskEvent, Option<Task>)> {
        let insert = st::add(self.dialect());
        let wake = st::wake();
        let ts = now();
        let out: Option<(TaskEvent, Option<Task>)> = on_pool_tx!(self, p, begin => {
            let mut tx = p.begin_with(begin).await?;
            let ev: Option<TaskEvent> = sqlx::query_as(&insert)
                .bind(task).bind(name).bind(Json(payload)).bind(ts)
                .fetch_optional(&mut *tx).await?;
            match ev {
                Some(ev) => {
                    let woken: Option<Task> = sqlx::query_as(&wake)
                        .bind(task).bind(ts).bind(name).fetch_optional(&mut *tx).await?;
                    tx.commit().await?;
                    Some((ev, woken))
                }
                None => {
                    tx.rollback().await?;
                    None
                }
            }
        });
        match out {
            Some(out) => Ok(out),
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
        // `seq` starts at 1 (a `BIGSERIAL`, an `AUTOINCREMENT` key).
        self.inbox_after(task, 0).await
    }

    /// The task's events with a `seq` above `seq`, in order: what a task's
    /// actor starting a run reads, past the events it holds already (all
    /// of them on a first run, none of the kept ones on a run that found
    /// the task in the executor's replay cache). See
    /// [`events_after`](Self::events_after) for why nothing is missed.
    ///
    /// Reads that arrive together (the tasks of one claim starting) are
    /// answered by one statement (see `group.rs`).
    pub async fn inbox_after(&self, task: Uuid, seq: i64) -> Result<Vec<TaskEvent>> {
        let store = self.clone();
        self.inboxes
            .submit((task, seq), move |reqs| {
                let store = store.clone();
                Box::pin(async move { store.inboxes_after(reqs).await })
            })
            .await
    }

    /// The events of each task of `reqs` past its `seq`, in order.
    async fn inboxes_after(&self, reqs: &[(Uuid, i64)]) -> Result<Vec<Result<Vec<TaskEvent>>>> {
        // One row per task, from the lowest `seq` any request asks past.
        let mut from: std::collections::HashMap<Uuid, i64> = Default::default();
        for (id, seq) in reqs {
            let f = from.entry(*id).or_insert(*seq);
            *f = (*f).min(*seq);
        }
        let rows: Vec<Value> = from
            .iter()
            .map(|(id, seq)| serde_json::json!({"r_id": id, "r_after": seq}))
            .collect();
        let sql = st::inboxes_after(self.dialect());
        let rows: Vec<TaskEvent> = on_pool!(self, p => sqlx::query_as(&sql)
            .bind(Value::Array(rows).to_string()).fetch_all(p).await)?;
        self.reads.count_inbox(rows.len());
        let mut by: std::collections::HashMap<Uuid, Vec<TaskEvent>> = Default::default();
        for e in rows {
            by.entry(e.task_id).or_default().push(e);
        }
        Ok(reqs
            .iter()
            .map(|(id, seq)| {
                Ok(by
                    .get(id)
                    .map(|es| es.iter().filter(|e| e.seq > *seq).cloned().collect())
                    .unwrap_or_default())
            })
            .collect())
    }

    /// Marks events as held by the task's actor.
    pub async fn mark_delivered(&self, task: Uuid, seq: i64) -> Result<()> {
        on_pool_write!(self, p => sqlx::query(st::MARK_DELIVERED)
            .bind(task).bind(seq).bind(now()).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Marks every event up to `seq` as held by the task's actor (after it
    /// loaded the whole inbox).
    pub async fn mark_delivered_up_to(&self, task: Uuid, seq: i64) -> Result<()> {
        self.mark_delivered_between(task, i64::MIN, seq).await
    }

    /// Marks the events past `after` and up to `seq` as held by the task's
    /// actor: those it read since it marked the ones up to `after`. (An
    /// index range of the new events, not the whole inbox again.)
    pub async fn mark_delivered_between(&self, task: Uuid, after: i64, seq: i64) -> Result<()> {
        on_pool_write!(self, p => sqlx::query(st::MARK_DELIVERED_BETWEEN)
            .bind(task).bind(after).bind(seq).bind(now()).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Events committed before `before` and still undelivered, for unfinished
    /// tasks that `executor` owns: the recovery sweep re-sends them.
    pub async fn undelivered_events(
        &self,
        executor: &str,
        before: DateTime<Utc>,
    ) -> Result<Vec<UndeliveredEvent>> {
        Ok(on_pool!(self, p => sqlx::query_as(&st::undelivered())
            .bind(executor).bind(before).fetch_all(p).await)?)
    }

    /// The task's events with a `seq` above `seq`, in order: what a task's
    /// actor that holds every event up to `seq` has not read yet. An event
    /// hint (`task_event`) makes the actor read them: what a run is handed
    /// is what the store committed, never an envelope's payload.
    ///
    /// Nothing is missed by reading past the highest `seq` held: an event's
    /// insert locks its task's row first (`add_event`), so one task's events
    /// are numbered in the order they commit (SQLite writes one at a time).
    pub async fn events_after(&self, task: Uuid, seq: i64) -> Result<Vec<TaskEvent>> {
        let rows: Vec<TaskEvent> = on_pool!(self, p => sqlx::query_as(st::AFTER)
            .bind(task).bind(seq).fetch_all(p).await)?;
        self.reads.count_inbox(rows.len());
        Ok(rows)
    }

    /// A page of `task`'s inbox, in order, after the event `after` (its
    /// `seq`), at most `limit`.
    pub async fn events_page(
        &self,
        task: Uuid,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<TaskEvent>> {
        Ok(on_pool!(self, p => sqlx::query_as(st::PAGE)
            .bind(task).bind(after.unwrap_or(i64::MIN)).bind(i64::from(limit.clamp(1, 1001)))
            .fetch_all(p).await)?)
    }
}
