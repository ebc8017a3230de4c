//! How a run ends in the store: its end (fenced, group-committed, with
//! its inbox closed, its watchers taken and a waiting parent woken), a
//! retry later, or the task handed back.

use chrono::SubsecRound;

use super::statements::ends as st;
use super::{Dialect, Fence, Store};
use crate::error::{Error, Result};
use crate::model::{now, AttemptError, Task, TaskState};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use std::collections::{HashMap, HashSet};

use super::journal::wake_parents;

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

/// A lone end as PostgreSQL's one statement returns it: the task as it
/// ended, and its watchers taken (a JSON array of addresses, text on
/// either driver).
#[derive(sqlx::FromRow)]
struct LoneEnd {
    #[sqlx(flatten)]
    task: Task,
    watchers: String,
}

impl Store {
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
        let sql = st::ends(self.dialect());
        let one = st::one();
        let lone_in_one = st::lone_in_one();
        // Built only for a flush of several ends. In the order of their
        // tasks' ids, which is the order the update locks them in (a
        // nested loop over the recordset, `KEYED_BEGIN`), as a suspension
        // locks the sub-tasks it awaits: see `journal.rs`.
        let rows = || -> String {
            let mut sorted: Vec<&(Fence, Outcome)> = ends.iter().collect();
            sorted.sort_by_key(|(fence, _)| fence.task_id);
            let rows: Vec<Value> = sorted
                .into_iter()
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
        let close_inboxes = st::close_inboxes(self.dialect());
        let take_watchers = st::take_watchers(self.dialect());
        let read = st::read(self.dialect());
        let all_in_one = st::all_in_one();
        let out: Vec<Option<Finished>> = on_pool_tx!(self, p, begin => {
            let begin = match self.dialect() {
                Dialect::Postgres => super::KEYED_BEGIN,
                Dialect::Sqlite => begin,
            };
            let mut tx = p.begin_with(begin).await?;
            let at = now();
            // Each ended task's id and parent, and the task itself if read;
            // and the watchers taken, if the same statement took them.
            type Done = Vec<(Uuid, Option<Uuid>, Option<Task>)>;
            let (done, taken): (Done, Option<Vec<(Uuid, String)>>) = match ends {
                // A lone end (no load): the plain statement by key, which
                // PostgreSQL plans and runs faster than a join with a
                // recordset of one, and returns the task at no cost worth
                // sparing.
                // PostgreSQL: with its inbox closed and its watchers taken
                // in the same statement (one round trip where three took
                // three, on the path of every sync wait: issue 24).
                [(fence, outcome)] if matches!(self.dialect(), Dialect::Postgres) => {
                    let (output, error, errors) = outcome.columns();
                    let row: Option<LoneEnd> = sqlx::query_as(&lone_in_one)
                        .bind(fence.task_id).bind(&fence.executor_id).bind(fence.epoch)
                        .bind(outcome.state().as_str()).bind(output.map(Json)).bind(error).bind(at)
                        .bind(errors.map(Json))
                        .fetch_optional(&mut *tx).await?;
                    match row {
                        Some(LoneEnd { task, watchers }) => {
                            let watchers: Vec<String> = serde_json::from_str(&watchers)
                                .map_err(|e| Error::Corrupt(format!("watchers of {}: {e}", task.id)))?;
                            let watched = watchers.into_iter().map(|a| (task.id, a)).collect();
                            (vec![(task.id, task.parent_id, Some(task))], Some(watched))
                        }
                        None => (Vec::new(), Some(Vec::new())),
                    }
                }
                [(fence, outcome)] => {
                    let (output, error, errors) = outcome.columns();
                    let task: Option<Task> = sqlx::query_as(&one)
                        .bind(fence.task_id).bind(&fence.executor_id).bind(fence.epoch)
                        .bind(outcome.state().as_str()).bind(output.map(Json)).bind(error).bind(at)
                        .bind(errors.map(Json))
                        .fetch_optional(&mut *tx).await?;
                    (task.into_iter().map(|t| (t.id, t.parent_id, Some(t))).collect(), None)
                }
                // PostgreSQL: the ends, their inboxes closed and their
                // watchers taken in one statement (one round trip, where
                // three statements took three); a row with an address is a
                // watcher, one without is an end.
                _ if matches!(self.dialect(), Dialect::Postgres) => {
                    let rows: Vec<(Uuid, Option<Uuid>, Option<String>)> =
                        sqlx::query_as(&all_in_one).bind(rows()).bind(at).fetch_all(&mut *tx).await?;
                    let (mut done, mut watched) = (Vec::with_capacity(rows.len()), Vec::new());
                    for (id, parent, address) in rows {
                        match address {
                            Some(a) => watched.push((id, a)),
                            None => done.push((id, parent, None)),
                        }
                    }
                    (done, Some(watched))
                }
                _ => {
                    let rows: Vec<(Uuid, Option<Uuid>)> =
                        sqlx::query_as(&sql).bind(rows()).bind(at).fetch_all(&mut *tx).await?;
                    (rows.into_iter().map(|(id, parent)| (id, parent, None)).collect(), None)
                }
            };
            let mut out: Vec<Option<Finished>> = vec![None; ends.len()];
            if done.is_empty() {
                tx.rollback().await?;
                // Every end fenced: each `None` below becomes its `Fenced`.
                return Ok(vec![None; ends.len()]);
            }
            // Each row to the first end that names its task (a second end
            // for the same task in one flush is refused, as it would be
            // one flush later).
            let mut at_index: HashMap<Uuid, usize> = HashMap::new();
            for (i, (fence, _)) in ends.iter().enumerate() {
                at_index.entry(fence.task_id).or_insert(i);
            }
            let mut with_parent: HashSet<Uuid> = HashSet::new();
            // Each parent to the first end of one of its sub-tasks: the
            // one that tells it it woke.
            let mut by_parent: HashMap<Uuid, usize> = HashMap::new();
            for (id, parent, task) in done {
                let i = at_index[&id];
                if let Some(parent) = parent {
                    with_parent.insert(id);
                    by_parent.entry(parent).or_insert(i);
                }
                let state = ends[i].1.state();
                out[i] = Some(Finished { id, state, task, watchers: Vec::new(), woken: None });
            }
            if !with_parent.is_empty() {
                let ids = super::ids_json(&with_parent);
                let parents = super::ids_json(by_parent.keys());
                // On behalf of the executor of the end that tells it.
                let by = |parent: &Uuid| ends[by_parent[parent]].0.executor_id.as_str();
                for parent in wake_parents!(self, tx, &ids, &parents, by) {
                    if let Some(Some(f)) = by_parent.get(&parent.id).map(|&i| out[i].as_mut()) {
                        f.woken = Some(parent);
                    }
                }
            }
            // The inboxes are closed with the tasks: whatever is in them
            // counts as delivered, so no sweep sends it again. Then the
            // watchers are taken. One statement each for all.
            let watched: Vec<(Uuid, String)> = match taken {
                Some(watched) => watched,
                None => {
                    let ids = super::ids_json(out.iter().flatten().map(|f| &f.id));
                    sqlx::query(&close_inboxes).bind(&ids).bind(at).execute(&mut *tx).await?;
                    sqlx::query_as(&take_watchers).bind(&ids).fetch_all(&mut *tx).await?
                }
            };
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
        let sql = st::retry_later();
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
        let sql = st::hand_back();
        let res = on_pool_write!(self, p => sqlx::query(&sql)
            .bind(fence.task_id).bind(&fence.executor_id).bind(fence.epoch).bind(now())
            .execute(p).await.map(|r| r.rows_affected()))?;
        if res == 0 {
            return Err(Error::Fenced(fence.task_id));
        }
        Ok(())
    }
}
