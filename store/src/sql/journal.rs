//! A run's durable side: the `task_steps` journal, and suspension, how a
//! run that waits leaves its executor with its task kept in the database,
//! and what wakes it.
//!
//! Every transaction that could wake a task (an event, a sub-task's end, a
//! cancel) and the suspension itself take the task's row lock before they
//! look at the other's work, so a wake is never lost between a run deciding
//! to wait and its suspension committing. Lock order is sub-task rows
//! first, then the parent's, in every transaction that takes both.

use super::{placeholders, Dialect, Fence, Store, FINAL, OWNED, PENDING, SUSPENDED, TASK_COLS};
use crate::error::{Error, Result};
use crate::model::{now, Task};
use chrono::SubsecRound;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use crate::model::Step;

/// What a run waits for when it suspends.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Wait {
    /// The event the run waits for: one of this name it has not seen
    /// (one past `seen_seq` in the inbox) wakes it.
    pub event: Option<String>,
    /// The run has seen every event of the task up to this `seq` (its
    /// mailbox holds them all), and none past it.
    pub seen_seq: i64,
    /// Sub-tasks it waits for, all of them (none final when it decided).
    pub children: Vec<Uuid>,
    /// A durable timer: woken at this time.
    pub until: Option<DateTime<Utc>>,
    /// When the attempt times out (its `timeout_ms`): woken then too.
    pub timeout_at: Option<DateTime<Utc>>,
    /// What it waits for, for people.
    pub label: String,
}

/// How a suspension went.
#[derive(Clone, Debug, PartialEq)]
pub enum Suspension {
    /// The task is `suspended`, held by nobody.
    Suspended(Box<Task>),
    /// What it waits for came as it decided to wait: run it again now.
    Woken,
}

/// Wakes the suspended parent `$parent` of `$child` (just made final in
/// this transaction) when `$child` was awaited and no awaited sibling is
/// still open. Expands to the statements, for either dialect's transaction.
///
/// O(1) a sub-task: the parent keeps `awaiting`, the awaited sub-tasks not
/// yet final when it suspended, and each awaited end takes one off under
/// the parent's row lock. Only when that reaches zero are the siblings
/// looked at, once, to be sure (a sub-task awaited by an earlier
/// suspension that ended only now counts too, so the count may reach zero
/// early; the look then finds the open one and the parent sleeps on).
macro_rules! wake_parent {
    ($store:expr, $tx:expr, $child:expr, $parent:expr, $by:expr) => {{
        let count = $crate::sql::journal::wake_count_sql();
        let left: Option<(i32,)> = sqlx::query_as(&count)
            .bind($parent)
            .bind($child)
            .fetch_optional(&mut *$tx)
            .await?;
        if left.is_some_and(|(n,)| n <= 0) {
            let sql = $crate::sql::journal::wake_parent_sql();
            let woken: Option<$crate::model::Task> = sqlx::query_as(&sql)
                .bind($parent)
                .bind($crate::model::now())
                .bind($by)
                .fetch_optional(&mut *$tx)
                .await?;
            woken
        } else {
            None
        }
    }};
}
pub(super) use wake_parent;

/// `wake_parent!`'s first statement: one awaited sub-task fewer.
pub(super) fn wake_count_sql() -> String {
    format!(
        "UPDATE tasks SET awaiting = awaiting - 1 \
         WHERE id = $1 AND state = {SUSPENDED} AND executor_id IS NULL \
           AND EXISTS (SELECT 1 FROM tasks c WHERE c.id = $2 AND c.awaited) \
         RETURNING awaiting"
    )
}

/// `wake_parent!`'s second statement: the parent made `pending` when no
/// awaited sub-task is open.
pub(super) fn wake_parent_sql() -> String {
    format!(
        "UPDATE tasks SET state = {PENDING}, run_at = NULL, waiting = NULL, updated_at = $2, changed_by = $3 \
         WHERE id = $1 AND state = {SUSPENDED} AND executor_id IS NULL \
           AND NOT EXISTS (SELECT 1 FROM tasks c WHERE c.parent_id = $1 AND c.awaited AND c.state NOT IN {FINAL}) \
         RETURNING {TASK_COLS}"
    )
}

impl Store {
    /// The lock a transaction takes on a task row it may change after it
    /// looked: `FOR UPDATE` on PostgreSQL; nothing on SQLite, whose write
    /// transactions are serial.
    pub(super) fn row_lock(&self) -> &'static str {
        match self.dialect() {
            Dialect::Sqlite => "",
            Dialect::Postgres => "FOR UPDATE",
        }
    }

    /// The task's journal, in the order its steps ended.
    pub async fn steps(&self, task: Uuid) -> Result<Vec<Step>> {
        let steps: Vec<Step> = on_pool!(self, p => sqlx::query_as(
            "SELECT name, attempt, state, output, error, started_at, finished_at FROM task_steps \
             WHERE task_id = $1 ORDER BY finished_at, name")
            .bind(task).fetch_all(p).await)?;
        self.reads.count_journal(steps.len());
        Ok(steps)
    }

    /// Journals a step of the run `fence` owns (a later run of the same
    /// step name replaces it). [`Error::Fenced`] when the run lost the task.
    pub async fn record_step(&self, fence: &Fence, step: &Step) -> Result<()> {
        // One statement: the task's row is its source, so only the owner
        // writes, and on PostgreSQL the row's lock orders it against a
        // takeover. (SQLite needs the `WHERE` to tell ON CONFLICT apart.)
        let sql = format!(
            "INSERT INTO task_steps (task_id, name, attempt, state, output, error, started_at, finished_at) \
             SELECT id, $4, attempts, $5, $6, $7, $8, $9 FROM tasks WHERE id = $1 AND {OWNED} {lock} \
             ON CONFLICT (task_id, name) DO UPDATE SET attempt = excluded.attempt, state = excluded.state, \
                 output = excluded.output, error = excluded.error, started_at = excluded.started_at, \
                 finished_at = excluded.finished_at",
            lock = self.share_lock()
        );
        let n = on_pool_write!(self, p => sqlx::query(&sql)
            .bind(fence.task_id).bind(&fence.executor_id).bind(fence.epoch)
            .bind(&step.name).bind(&step.state).bind(step.output.as_ref().map(Json))
            .bind(&step.error).bind(step.started_at).bind(step.finished_at)
            .execute(p).await.map(|r| r.rows_affected()))?;
        if n == 0 {
            return Err(Error::Fenced(fence.task_id));
        }
        Ok(())
    }

    /// Suspends the task `fence` owns on `wait`: it leaves the executor
    /// (`executor_id` NULL) and waits in the database, unless what it waits
    /// for came meanwhile ([`Suspension::Woken`]).
    pub async fn suspend(&self, fence: &Fence, wait: &Wait) -> Result<Suspension> {
        let touch = format!(
            "UPDATE tasks SET updated_at = $4 WHERE id = $1 AND {OWNED} RETURNING cancel_requested"
        );
        let park = format!(
            "UPDATE tasks SET state = {SUSPENDED}, executor_id = NULL, resume = TRUE, run_at = $2, \
                 waiting = $3, updated_at = $4, changed_by = $5, wake_event = $6, timeout_at = $7, \
                 awaiting = $8 \
             WHERE id = $1 RETURNING {TASK_COLS}"
        );
        let children = placeholders(2, wait.children.len());
        let mark =
            format!("UPDATE tasks SET awaited = TRUE WHERE parent_id = $1 AND id IN ({children})");
        let open = format!(
            "SELECT COUNT(*) FROM tasks WHERE parent_id = $1 AND id IN ({children}) AND state NOT IN {FINAL}"
        );
        let ts = now();
        let out = on_pool_tx!(self, p, begin => {
            let mut tx = p.begin_with(begin).await?;
            // Sub-task rows first (the order their finishes lock in).
            if !wait.children.is_empty() {
                let mut q = sqlx::query(&mark).bind(fence.task_id);
                for c in &wait.children {
                    q = q.bind(c);
                }
                q.execute(&mut *tx).await?;
            }
            let row: Option<(bool,)> = sqlx::query_as(&touch)
                .bind(fence.task_id).bind(&fence.executor_id).bind(fence.epoch).bind(ts)
                .fetch_optional(&mut *tx).await?;
            let Some((cancelled,)) = row else {
                tx.rollback().await?;
                return Err(Error::Fenced(fence.task_id));
            };
            // Now that the row is ours, look at what may have come.
            let due = match (wait.until, wait.timeout_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let mut woken = cancelled || due.is_some_and(|t| t <= ts);
            // Only the events past what the run has seen are looked at (an
            // index range, usually empty), not the whole inbox: a task that
            // waits k times would otherwise count O(k²) rows.
            if let (false, Some(event)) = (woken, &wait.event) {
                let (n,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM task_events WHERE task_id = $1 AND seq > $2 AND name = $3")
                    .bind(fence.task_id).bind(wait.seen_seq).bind(event).fetch_one(&mut *tx).await?;
                woken = n > 0;
            }
            // The awaited sub-tasks still open: each one's end takes one
            // off (see `wake_parent!`).
            let mut awaiting = 0;
            if !woken && !wait.children.is_empty() {
                let mut q = sqlx::query_as(&open).bind(fence.task_id);
                for c in &wait.children {
                    q = q.bind(c);
                }
                let (n,): (i64,) = q.fetch_one(&mut *tx).await?;
                woken = n == 0;
                awaiting = n;
            }
            if woken {
                tx.commit().await?;
                Suspension::Woken
            } else {
                let task: Task = sqlx::query_as(&park)
                    .bind(fence.task_id).bind(due.map(|t| t.trunc_subsecs(6)))
                    .bind(&wait.label).bind(ts).bind(&fence.executor_id).bind(&wait.event)
                    .bind(wait.timeout_at.map(|t| t.trunc_subsecs(6)))
                    .bind(i32::try_from(awaiting).unwrap_or(i32::MAX))
                    .fetch_one(&mut *tx).await?;
                tx.commit().await?;
                Suspension::Suspended(Box::new(task))
            }
        });
        Ok(out)
    }
}
