//! The `schedules` table: recurring tasks, and how a slot's tasks and the
//! schedule's advance are committed together.
//!
//! No process leads. Whoever finds a schedule due computes its slots and
//! commits, in one transaction, the advance of `next_run_at` (conditional
//! on the value it read) and one task per slot, each under the unique
//! idempotency key `schedule:<name>:<slot>`. A second process that read the
//! same `next_run_at` changes no row and rolls back; a slot can never make
//! two tasks.

use chrono::SubsecRound;

use super::statements::schedules as st;
use super::{Store, TaskInsert};
use crate::error::{Error, Result};
use crate::model::{now, Task};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use super::creates::bind_insert;

use crate::model::{Schedule, ScheduleSpec};
use crate::options::TaskOptions;

/// A row of `schedules`.
#[derive(sqlx::FromRow)]
struct Row {
    name: String,
    cron: String,
    kind: String,
    input: Json<Value>,
    options: Json<TaskOptions>,
    catch_up: String,
    enabled: bool,
    next_run_at: Option<DateTime<Utc>>,
    last_run_at: Option<DateTime<Utc>>,
    last_task_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<Row> for Schedule {
    fn from(r: Row) -> Schedule {
        let o = r.options.0;
        Schedule {
            name: r.name,
            cron: r.cron,
            kind: r.kind,
            input: r.input.0,
            queue: o.queue,
            priority: o.priority,
            max_attempts: o.max_attempts,
            backoff_ms: o.backoff_ms,
            timeout_ms: o.timeout_ms,
            delay_ms: o.delay_ms,
            catch_up: r.catch_up.parse().unwrap_or_default(),
            enabled: r.enabled,
            next_run_at: r.next_run_at,
            next_runs: Vec::new(),
            last_run_at: r.last_run_at,
            last_task_id: r.last_task_id,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A slot's firing as committed: the tasks created, and the schedule after.
#[derive(Clone, Debug)]
pub struct Fired {
    pub schedule: Schedule,
    pub tasks: Vec<Task>,
}

impl Store {
    /// Creates (`true`) or replaces (`false`) schedule `name`. `next_run_at`
    /// is its first slot from now (`None` when disabled); a replacement that
    /// keeps the cron expression and stays enabled keeps the slot it was
    /// waiting for, so editing a schedule's input neither skips nor repeats
    /// a slot.
    pub async fn put_schedule(
        &self,
        name: &str,
        spec: &ScheduleSpec,
        next_run_at: Option<DateTime<Utc>>,
    ) -> Result<(Schedule, bool)> {
        let ts = now();
        let next = next_run_at.map(|t| t.trunc_subsecs(6));
        let existing_sql = st::existing(self.dialect());
        let insert = st::insert();
        let update = st::update();
        let (row, created): (Row, bool) = on_pool_tx!(self, p, begin => {
            let mut tx = p.begin_with(begin).await?;
            let existing: Option<(String, bool, Option<DateTime<Utc>>)> =
                sqlx::query_as(&existing_sql).bind(name).fetch_optional(&mut *tx).await?;
            let (sql, next, created) = match existing {
                None => (&insert, next, true),
                Some((cron, was_on, was_next)) => {
                    let keep = cron == spec.cron && was_on && spec.enabled && was_next.is_some();
                    (&update, if keep { was_next } else { next }, false)
                }
            };
            let row: Row = sqlx::query_as(sql)
                .bind(name).bind(&spec.cron).bind(&spec.kind).bind(Json(&spec.input))
                .bind(Json(&spec.options)).bind(spec.catch_up.as_str()).bind(spec.enabled)
                .bind(next).bind(ts)
                .fetch_one(&mut *tx).await?;
            tx.commit().await?;
            (row, created)
        });
        Ok((row.into(), created))
    }

    /// Schedule `name`.
    pub async fn schedule(&self, name: &str) -> Result<Schedule> {
        let sql = st::get();
        let row: Option<Row> =
            on_pool!(self, p => sqlx::query_as(&sql).bind(name).fetch_optional(p).await)?;
        row.map(Into::into)
            .ok_or_else(|| Error::NoSchedule(name.to_string()))
    }

    /// Every schedule, by name.
    pub async fn schedules(&self) -> Result<Vec<Schedule>> {
        let sql = st::all();
        let rows: Vec<Row> = on_pool!(self, p => sqlx::query_as(&sql).fetch_all(p).await)?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Deletes schedule `name` (its tasks stay); `false` if there was none.
    pub async fn delete_schedule(&self, name: &str) -> Result<bool> {
        let n = on_pool_write!(self, p => sqlx::query(st::REMOVE)
            .bind(name).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    /// Enabled schedules whose next slot has come, the longest due first.
    pub async fn due_schedules(&self, at: DateTime<Utc>, limit: u32) -> Result<Vec<Schedule>> {
        let sql = st::due();
        let rows: Vec<Row> = on_pool!(self, p => sqlx::query_as(&sql)
            .bind(at).bind(limit as i64).fetch_all(p).await)?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// When the next slot of an enabled schedule comes (an index lookup).
    pub async fn next_schedule_due(&self) -> Result<Option<DateTime<Utc>>> {
        let row: Option<(Option<DateTime<Utc>>,)> = on_pool!(self, p => sqlx::query_as(st::NEXT_DUE)
            .fetch_optional(p).await)?;
        Ok(row.and_then(|r| r.0))
    }

    /// Fires schedule `name` whose `next_run_at` was read as `expected`:
    /// advances it to `next`, and creates `tasks` (one per slot, each
    /// keyed `schedule:<name>:<slot>`), all in one transaction. `None` when
    /// another process fired it first (or it was changed meanwhile):
    /// nothing is written.
    pub async fn fire_schedule(
        &self,
        name: &str,
        expected: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
        last_slot: Option<DateTime<Utc>>,
        tasks: &[TaskInsert],
    ) -> Result<Option<Fired>> {
        let ts = now();
        let advance = st::advance();
        let last = st::last();
        let insert = super::statements::creates::insert_keyed();
        let out: Option<Fired> = on_pool_tx!(self, p, begin => {
            let mut tx = p.begin_with(begin).await?;
            let row: Option<Row> = sqlx::query_as(&advance)
                .bind(name).bind(next.map(|t| t.trunc_subsecs(6))).bind(ts).bind(expected)
                .fetch_optional(&mut *tx).await?;
            match row {
                None => {
                    tx.rollback().await?;
                    None
                }
                Some(mut row) => {
                    let mut created = Vec::with_capacity(tasks.len());
                    for t in tasks {
                        // A slot's key exists already only if that very
                        // slot made its task: nothing to add.
                        let task: Option<Task> = bind_insert!(sqlx::query_as(&insert), t)
                            .fetch_optional(&mut *tx).await?;
                        created.extend(task);
                    }
                    if let (Some(t), Some(slot)) = (created.last(), last_slot) {
                        row = sqlx::query_as(&last).bind(name).bind(slot).bind(t.id)
                            .fetch_one(&mut *tx).await?;
                    }
                    tx.commit().await?;
                    Some(Fired { schedule: row.into(), tasks: created })
                }
            }
        });
        Ok(out)
    }
}
