//! A run's durable side: the `task_steps` journal, and suspension, how a
//! run that waits leaves its executor with its task kept in the database,
//! and what wakes it.
//!
//! Every transaction that could wake a task (an event, a sub-task's end, a
//! cancel) and the suspension itself take the task's row lock before they
//! look at the other's work, so a wake is never lost between a run deciding
//! to wait and its suspension committing. Lock order is sub-task rows
//! first, in the order of their ids, then the parents', in the order of
//! theirs, in every transaction that takes both. The suspension locks its
//! own row only: the sub-tasks it awaits are rows of `task_awaits`, not
//! marks on the sub-tasks' rows, which their executors are claiming and
//! ending meanwhile.

use super::statements::journal as st;
use super::{Dialect, Fence, Store};
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
    Suspended { task: Box<Task> },
    /// What it waits for came as it decided to wait: run it again now.
    Woken,
}

/// Wakes the suspended parents of `$children` (sub-tasks just made final in
/// this transaction, as a JSON array of ids) whose awaited sub-tasks are
/// now all final. `$parents` are those sub-tasks' parents (a JSON array of
/// ids). Expands to the statements, for either dialect's transaction; `$by`
/// gives the name each parent is woken on behalf of, from its id. Gives
/// the parents woken.
///
/// O(1) a sub-task, one statement per flush: the parent keeps `awaiting`,
/// the number of its rows in `task_awaits` (the awaited sub-tasks not yet
/// final), and the ends of one flush take their rows away and their
/// number off it at once, for every parent (10,000 sub-tasks ending in
/// flushes of a few hundred made as many updates of their parent's row:
/// issue 24). On PostgreSQL the parents' rows are locked first, in the
/// order of their ids: a suspension writes its `task_awaits` rows under
/// its own row's lock, so an end either comes before it (and the
/// suspension finds the sub-task final) or sees its rows.
macro_rules! wake_parents {
    ($store:expr, $tx:expr, $children:expr, $parents:expr, $by:expr) => {{
        use $crate::sql::{journal, statements::journal as st, Dialect};
        if $store.dialect() == Dialect::Postgres {
            sqlx::query(&st::lock_parents())
                .bind($parents)
                .execute(&mut *$tx)
                .await?;
        }
        let taken: Vec<(uuid::Uuid,)> = sqlx::query_as(&st::take_awaits($store.dialect()))
            .bind($children)
            .fetch_all(&mut *$tx)
            .await?;
        let mut woken: Vec<$crate::model::Task> = Vec::new();
        if !taken.is_empty() {
            let counts = journal::count_by_parent(taken);
            let counted: Vec<(uuid::Uuid, i32)> = sqlx::query_as(&st::wake_count($store.dialect()))
                .bind(counts)
                .fetch_all(&mut *$tx)
                .await?;
            for (parent, left) in counted {
                if left > 0 {
                    continue;
                }
                let sql = st::wake_parent();
                let by: &str = ($by)(&parent);
                let task: Option<$crate::model::Task> = sqlx::query_as(&sql)
                    .bind(parent)
                    .bind($crate::model::now())
                    .bind(by)
                    .fetch_optional(&mut *$tx)
                    .await?;
                woken.extend(task);
            }
        }
        woken
    }};
}
pub(super) use wake_parents;

/// The rows `take_awaits` took, as a JSON array of `{"p": parent,
/// "n": rows}` in the order of the parents' ids (the lock order).
pub(super) fn count_by_parent(taken: Vec<(Uuid,)>) -> String {
    let mut counts: std::collections::BTreeMap<Uuid, i64> = std::collections::BTreeMap::new();
    for (parent,) in taken {
        *counts.entry(parent).or_default() += 1;
    }
    let rows: Vec<serde_json::Value> = counts
        .into_iter()
        .map(|(p, n)| serde_json::json!({ "p": p.to_string(), "n": n }))
        .collect();
    serde_json::Value::Array(rows).to_string()
}

impl Store {
    /// The task's journal, in the order its steps ended.
    pub async fn steps(&self, task: Uuid) -> Result<Vec<Step>> {
        let steps: Vec<Step> = on_pool!(self, p => sqlx::query_as(st::STEPS)
            .bind(task).fetch_all(p).await)?;
        self.reads.count_journal(steps.len());
        Ok(steps)
    }

    /// Journals a step of the run `fence` owns (a later run of the same
    /// step name replaces it). [`Error::Fenced`] when the run lost the task.
    pub async fn record_step(&self, fence: &Fence, step: &Step) -> Result<()> {
        let sql = st::record_step(self.dialect());
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
        let touch = st::touch();
        let park = st::park();
        // The sub-tasks as one JSON array parameter, not a placeholder
        // each: PostgreSQL took 480 ms to bind 10,000 listed one by one
        // (issue 24), and SQLite allows at most 32,766. Every statement
        // below reads `tasks` by key, and the transaction tells PostgreSQL
        // so (`KEYED_BEGIN`, as a flush of ends does): without the hint a
        // fresh table's plan scanned the parent's sub-tasks comparing each
        // with all 10,000 ids (4.2 s); with `IN (SELECT …)` a generic plan
        // after a quiet spell walked 180,000 rows (`tests/plans.rs`).
        //
        // The sub-tasks' rows are only read, never locked: the awaited set
        // is the parent's rows of `task_awaits`, written under the
        // parent's lock (taken by `touch`), which every end of a sub-task
        // takes before it looks at them (`wake_parents!`). Marking the
        // sub-tasks' rows instead waited 3.8 s in a fan-out of 10,000 on
        // PostgreSQL for the claims and ends of those very sub-tasks.
        let forget = st::FORGET_AWAITS;
        let awaits = st::awaits(self.dialect());
        let children = super::ids_json(&wait.children);
        let ts = now();
        let out = on_pool_tx!(self, p, begin => {
            let begin = match self.dialect() {
                Dialect::Postgres => super::KEYED_BEGIN,
                Dialect::Sqlite => begin,
            };
            let mut tx = p.begin_with(begin).await?;
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
                let (n,): (i64,) = sqlx::query_as(st::EVENTS_PAST)
                    .bind(fence.task_id).bind(wait.seen_seq).bind(event).fetch_one(&mut *tx).await?;
                woken = n > 0;
            }
            // The awaited sub-tasks still open, in place of those of an
            // earlier suspension: each one's end takes its row and one off
            // the count (see `wake_parents!`).
            let mut awaiting = 0;
            if !woken && !wait.children.is_empty() {
                sqlx::query(forget).bind(fence.task_id).execute(&mut *tx).await?;
                awaiting = sqlx::query(&awaits)
                    .bind(fence.task_id).bind(&children).execute(&mut *tx).await?.rows_affected();
                woken = awaiting == 0;
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
                Suspension::Suspended { task: Box::new(task) }
            }
        });
        Ok(out)
    }
}
