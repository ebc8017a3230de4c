//! Deployment-wide counts for the dashboard and `/metrics`: tasks in each
//! state by queue, and tasks finished each minute, from counter tables the
//! database's triggers keep (migration `task_counts`) rather than by
//! counting `tasks` (a scan of every task retention keeps).
//!
//! On PostgreSQL the counters hold every state. On SQLite they hold the
//! unfinished states, and a finished task adds one to its minute only: the
//! final states' counts are the minutes added to what older minutes left
//! in `task_counts` (see [`Store::tidy_counts`]). SQLite's one writer pays
//! every trigger statement for every row, so each state change there is
//! one upsert (migrations `sqlite/0010_task_counts.sql`,
//! `sqlite/0013_unfinished_counts.sql`; the write cost measured in
//! BENCHMARKS.md, "Counters"). Until 0013 SQLite counted the unfinished
//! states from `tasks` when read: a second of CPU a read with a million
//! tasks waiting.

use super::statements::stats as st;
use super::{Db, Store};
use crate::error::{Error, Result};
use crate::model::TaskState;
use std::time::Duration;

/// How many tasks finished in one minute, by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Minute {
    /// The minute, as Unix time / 60.
    pub minute: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
}

/// How long per-minute counts are kept.
pub const THROUGHPUT_KEPT: Duration = Duration::from_secs(3 * 3600);

fn state(s: String) -> Result<TaskState> {
    s.parse()
        .map_err(|e: crate::model::UnknownState| Error::Corrupt(e.to_string()))
}

impl Store {
    /// Number of tasks in each state (states with none left out): the
    /// queues' counts ([`Store::count_by_queue`]) added up.
    pub async fn count_by_state(&self) -> Result<Vec<(TaskState, i64)>> {
        Ok(by_state(&self.count_by_queue().await?))
    }

    /// Number of tasks of each queue in each state, by queue then state
    /// (pairs with none left out).
    pub async fn count_by_queue(&self) -> Result<Vec<(String, TaskState, i64)>> {
        let sql = st::by_queue(self.dialect());
        let rows: Vec<(String, String, i64)> = on_pool!(self, p => sqlx::query_as(&sql)
            .bind(None::<String>).fetch_all(p).await)?;
        rows.into_iter()
            .map(|(q, s, n)| Ok((q, state(s)?, n)))
            .collect()
    }

    /// Tasks finished in each of the last `minutes` minutes, oldest first,
    /// the database's current minute last; minutes with none are zeros.
    pub async fn throughput(&self, minutes: u32) -> Result<Vec<Minute>> {
        let minutes = i64::from(minutes.max(1));
        let sql = st::minute(self.dialect());
        let now: i64 = on_pool!(self, p => sqlx::query_scalar(&sql).fetch_one(p).await)?;
        let from = now - minutes + 1;
        let rows: Vec<(i64, i64, i64, i64)> = on_pool!(self, p => sqlx::query_as(st::THROUGHPUT)
            .bind(from).fetch_all(p).await)?;
        let mut out: Vec<Minute> = (from..=now)
            .map(|minute| Minute {
                minute,
                ..Minute::default()
            })
            .collect();
        for (minute, succeeded, failed, cancelled) in rows {
            if let Some(m) = usize::try_from(minute - from)
                .ok()
                .and_then(|i| out.get_mut(i))
            {
                *m = Minute {
                    minute,
                    succeeded,
                    failed,
                    cancelled,
                };
            }
        }
        Ok(out)
    }

    /// Keeps the counter tables small: drops minutes older than
    /// [`THROUGHPUT_KEPT`] (on SQLite, their finishes go to `task_counts`
    /// first) and, on PostgreSQL, folds the rows of database sessions that
    /// have ended into shard 0 (a live session's rows are its own, so
    /// folding never waits on one).
    pub async fn tidy_counts(&self) -> Result<()> {
        let kept = (THROUGHPUT_KEPT.as_secs() / 60) as i64;
        match &self.db {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(p) => {
                // The minutes dropped leave their finishes in `task_counts`.
                // The cut-off is read once: each statement has its own
                // `unixepoch()`, and a minute that began between the two
                // would be deleted without being counted.
                let _turn = self.writer.lock().await;
                let mut tx = p.begin_with("BEGIN IMMEDIATE").await?;
                let cutoff: i64 = sqlx::query_scalar(&st::cutoff())
                    .bind(kept)
                    .fetch_one(&mut *tx)
                    .await?;
                sqlx::query(&st::fold_minutes())
                    .bind(cutoff)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(st::DROP_MINUTES)
                    .bind(cutoff)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            #[cfg(feature = "postgres")]
            Db::Postgres(p) => {
                sqlx::query(&st::drop_old_minutes())
                    .bind(kept)
                    .execute(p)
                    .await?;
                sqlx::query(st::FOLD_COUNTS).execute(p).await?;
                sqlx::query(st::FOLD_THROUGHPUT).execute(p).await?;
            }
        }
        Ok(())
    }
}

/// Counts by queue and state, added up by state.
fn by_state(by_queue: &[(String, TaskState, i64)]) -> Vec<(TaskState, i64)> {
    let mut out: Vec<(TaskState, i64)> = Vec::new();
    for (_, state, n) in by_queue {
        match out.iter_mut().find(|(s, _)| s == state) {
            Some((_, total)) => *total += n,
            None => out.push((*state, *n)),
        }
    }
    out.retain(|(_, n)| *n != 0);
    out
}
