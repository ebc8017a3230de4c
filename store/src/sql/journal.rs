//! A run's durable side: the `task_steps` journal, and suspension, how a
//! run that waits leaves its executor with its task kept in the database,
//! and what wakes it.
//!
//! Every transaction that could wake a task (an event, a sub-task's end, a
//! cancel) and the suspension itself take the task's row lock before they
//! look at the other's work, so a wake is never lost between a run deciding
//! to wait and its suspension committing. Lock order is sub-task rows
//! first, in the order of their ids, then the parents', in the order of
//! theirs, in every transaction that takes both.

use super::{Dialect, Fence, Store, FINAL, OWNED, PENDING, SUSPENDED, TASK_COLS};
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
    /// The task is `suspended`, held by nobody. `pending_in`: the queues
    /// of awaited sub-tasks still `pending`, whose rows the suspension
    /// held locked: a claim meanwhile skipped them (`SKIP LOCKED`), so
    /// their executors are to be told to look again.
    Suspended {
        task: Box<Task>,
        pending_in: Vec<String>,
    },
    /// What it waits for came as it decided to wait: run it again now.
    Woken,
}

/// Wakes the suspended parents of `$children` (sub-tasks just made final in
/// this transaction, as a JSON array of ids) whose awaited sub-tasks are
/// now all final. Expands to the statements, for either dialect's
/// transaction; `$by` gives the name each parent is woken on behalf of,
/// from its id. Gives the parents woken.
///
/// O(1) a sub-task: the parent keeps `awaiting`, the awaited sub-tasks not
/// Wakes the suspended parents of `$children` (sub-tasks just made final in
/// this transaction, as a JSON array of ids) whose awaited sub-tasks are
/// now all final. Expands to the statements, for either dialect's
/// transaction; `$by` gives the name each parent is woken on behalf of,
/// from its id. Gives the parents woken.
///
/// O(1) a sub-task: the parent keeps `awaiting`, the awaited sub-tasks not
/// yet final when it suspended, and the awaited ends of one flush take
/// their number off it at once, in one statement for every parent. Only a
/// parent that reaches zero has its sub-tasks looked at, once, to be sure
/// (a sub-task awaited by an earlier suspension that ended only now counts
/// too, so the count may reach zero early; the look then finds the open
/// one and the parent sleeps on). One statement per flush, not per end:
/// 10,000 sub-tasks ending in flushes of a few hundred made as many
/// updates of their parent's row, each walking the versions the flush had
/// already made of it (fan-out of 10,000 on PostgreSQL: issue 24).
macro_rules! wake_parents {
    ($store:expr, $tx:expr, $children:expr, $by:expr) => {{
        let count = $crate::sql::journal::wake_count_sql($store);
        let counted: Vec<(uuid::Uuid, i32)> = sqlx::query_as(&count)
            .bind($children)
            .fetch_all(&mut *$tx)
            .await?;
        let mut woken: Vec<$crate::model::Task> = Vec::new();
        for (parent, left) in counted {
            if left > 0 {
                continue;
            }
            let sql = $crate::sql::journal::wake_parent_sql();
            let by: &str = ($by)(&parent);
            let task: Option<$crate::model::Task> = sqlx::query_as(&sql)
                .bind(parent)
                .bind($crate::model::now())
                .bind(by)
                .fetch_optional(&mut *$tx)
                .await?;
            woken.extend(task);
        }
        woken
    }};
}
pub(super) use wake_parents;

/// `wake_parents!`'s first statement: the awaited sub-tasks of `$1` (a
/// JSON array of ids) taken off their parents' counts, in the order of
/// the parents' ids (the lock order: see the module's head).
pub(super) fn wake_count_sql(store: &Store) -> String {
    format!(
        "UPDATE tasks SET awaiting = tasks.awaiting - c.n \
         FROM (SELECT t.parent_id AS pid, count(*) AS n FROM tasks t \
               WHERE {ids} AND t.awaited AND t.parent_id IS NOT NULL \
               GROUP BY t.parent_id ORDER BY t.parent_id) c \
         WHERE tasks.id = c.pid AND tasks.state = {SUSPENDED} AND tasks.executor_id IS NULL \
         RETURNING tasks.id, tasks.awaiting",
        ids = store.key_in("t.id", 1)
    )
}

/// `wake_parents!`'s second statement: the parent made `pending` when no
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
        // The sub-tasks as one JSON array parameter, not a placeholder
        // each: PostgreSQL took 480 ms to run the mark of 10,000 listed
        // one by one (issue 24), and SQLite allows at most 32,766.
        // Every statement below reads `tasks` by key, and the transaction
        // tells PostgreSQL so (`KEYED_BEGIN`, as a flush of ends does): a
        // suspension's sub-tasks are one JSON array probed through the
        // primary key (`key_in`). Without the hint a fresh table's plan
        // scanned the parent's sub-tasks comparing each with all 10,000
        // ids (4.2 s); with `IN (SELECT …)` a generic plan after a quiet
        // spell walked 180,000 rows (`tests/plans.rs`).
        let children = self.key_in("id", 2);
        // Locked in the order of their ids, as a flush of ends locks them
        // (`ends.rs`): in any other order the two deadlocked on PostgreSQL,
        // which broke the tie after its `deadlock_timeout`, a second lost
        // in every fan-out (issue 24).
        let locked = format!(
            "SELECT id FROM tasks WHERE {children} AND parent_id = $1 ORDER BY id {lock}",
            lock = self.row_lock()
        );
        let mark = match self.dialect() {
            Dialect::Postgres => {
                format!("UPDATE tasks SET awaited = TRUE WHERE id = ANY(ARRAY({locked}))")
            }
            Dialect::Sqlite => format!("UPDATE tasks SET awaited = TRUE WHERE id IN ({locked})"),
        };
        let open = format!(
            "SELECT queue, COUNT(*), SUM(CASE WHEN state = {PENDING} THEN 1 ELSE 0 END) FROM tasks \
             WHERE {children} AND parent_id = $1 AND {state} NOT IN {FINAL} GROUP BY queue",
            state = self.unindexed("state")
        );
        let children = super::ids_json(&wait.children);
        let ts = now();
        let out = on_pool_tx!(self, p, begin => {
            let begin = match self.dialect() {
                Dialect::Postgres => super::KEYED_BEGIN,
                Dialect::Sqlite => begin,
            };
            let mut tx = p.begin_with(begin).await?;
            // Sub-task rows first (the order their finishes lock in).
            if !wait.children.is_empty() {
                sqlx::query(&mark).bind(fence.task_id).bind(&children).execute(&mut *tx).await?;
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
            let (mut awaiting, mut pending_in) = (0, Vec::new());
            if !woken && !wait.children.is_empty() {
                let queues: Vec<(String, i64, i64)> = sqlx::query_as(&open)
                    .bind(fence.task_id).bind(&children).fetch_all(&mut *tx).await?;
                awaiting = queues.iter().map(|(_, n, _)| n).sum();
                woken = awaiting == 0;
                pending_in = queues.into_iter().filter(|(_, _, p)| *p > 0).map(|(q, _, _)| q).collect();
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
                Suspension::Suspended { task: Box::new(task), pending_in }
            }
        });
        Ok(out)
    }
}
