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

use super::{Db, Dialect, Store, PENDING, RUNNING, SCHEDULED, SUSPENDED};
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

/// The database's current minute (Unix time / 60, rounded down), as SQL.
/// PostgreSQL's `EXTRACT(EPOCH …)` is a fraction: cast to an integer it
/// would round to the nearest second, and put the last half-second of a
/// minute in the next.
fn minute_now(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => "(unixepoch() / 60)",
        Dialect::Postgres => "(floor(EXTRACT(EPOCH FROM now()) / 60)::bigint)",
    }
}

/// `SELECT queue, state, n` over `task_throughput`'s rows that `filter`
/// keeps: each minute's finishes as one row per final state (SQLite).
fn finished_in_minutes(filter: &str) -> String {
    format!(
        "SELECT queue, 'succeeded' AS state, succeeded AS n FROM task_throughput {filter} \
         UNION ALL SELECT queue, 'failed', failed FROM task_throughput {filter} \
         UNION ALL SELECT queue, 'cancelled', cancelled FROM task_throughput {filter}"
    )
}

fn state(s: String) -> Result<TaskState> {
    s.parse()
        .map_err(|e: crate::model::UnknownState| Error::Corrupt(e.to_string()))
}

impl Store {
    /// `SELECT queue, state, n`: the tasks of each queue in each state,
    /// pairs with none left out; `active` keeps the unfinished states only,
    /// and `$1` (NULL for all) one queue.
    pub(super) fn counts_sql(&self, active: bool) -> String {
        let from_counters = |states: &str| {
            format!(
                "SELECT queue, state, CAST(SUM(n) AS BIGINT) AS n FROM task_counts \
                 WHERE {states} ($1 IS NULL OR queue = $1) \
                 GROUP BY queue, state HAVING SUM(n) <> 0"
            )
        };
        let unfinished = format!("state IN ({SCHEDULED}, {PENDING}, {RUNNING}, {SUSPENDED})");
        match (self.dialect(), active) {
            (_, true) => from_counters(&format!("{unfinished} AND")),
            (Dialect::Postgres, false) => from_counters(""),
            (Dialect::Sqlite, false) => format!(
                "SELECT queue, state, SUM(n) AS n FROM ( \
                     SELECT queue, state, n FROM task_counts UNION ALL {}) f \
                 WHERE $1 IS NULL OR queue = $1 \
                 GROUP BY queue, state HAVING SUM(n) <> 0",
                finished_in_minutes("")
            ),
        }
    }

    /// Number of tasks in each state (states with none left out): the
    /// queues' counts ([`Store::count_by_queue`]) added up.
    pub async fn count_by_state(&self) -> Result<Vec<(TaskState, i64)>> {
        Ok(by_state(&self.count_by_queue().await?))
    }

    /// Number of tasks of each queue in each state, by queue then state
    /// (pairs with none left out).
    pub async fn count_by_queue(&self) -> Result<Vec<(String, TaskState, i64)>> {
        let sql = format!(
            "SELECT queue, state, n FROM ({}) c ORDER BY queue, state",
            self.counts_sql(false)
        );
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
        let sql = format!("SELECT {}", minute_now(self.dialect()));
        let now: i64 = on_pool!(self, p => sqlx::query_scalar(&sql).fetch_one(p).await)?;
        let from = now - minutes + 1;
        let rows: Vec<(i64, i64, i64, i64)> = on_pool!(self, p => sqlx::query_as(
            "SELECT minute, CAST(SUM(succeeded) AS BIGINT), CAST(SUM(failed) AS BIGINT), \
                    CAST(SUM(cancelled) AS BIGINT) \
             FROM task_throughput WHERE minute >= $1 GROUP BY minute")
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
                let cutoff: i64 =
                    sqlx::query_scalar(&format!("SELECT {} - $1", minute_now(Dialect::Sqlite)))
                        .bind(kept)
                        .fetch_one(&mut *tx)
                        .await?;
                sqlx::query(&format!(
                    "INSERT INTO task_counts (queue, state, shard, n) \
                     SELECT queue, state, 0, SUM(n) FROM ({}) f \
                     GROUP BY queue, state \
                     ON CONFLICT (queue, state, shard) DO UPDATE SET n = n + excluded.n",
                    finished_in_minutes("WHERE minute < $1")
                ))
                .bind(cutoff)
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM task_throughput WHERE minute < $1")
                    .bind(cutoff)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            #[cfg(feature = "postgres")]
            Db::Postgres(p) => {
                sqlx::query(&format!(
                    "DELETE FROM task_throughput WHERE minute < {} - $1",
                    minute_now(Dialect::Postgres)
                ))
                .bind(kept)
                .execute(p)
                .await?;
                sqlx::query(
                    "WITH gone AS ( \
                         DELETE FROM task_counts WHERE shard <> 0 \
                         AND shard NOT IN (SELECT pid FROM pg_stat_activity) \
                         RETURNING queue, state, n) \
                     INSERT INTO task_counts AS c (queue, state, shard, n) \
                     SELECT queue, state, 0, SUM(n) FROM gone \
                     GROUP BY queue, state ORDER BY queue, state \
                     ON CONFLICT (queue, state, shard) DO UPDATE SET n = c.n + excluded.n",
                )
                .execute(p)
                .await?;
                sqlx::query(
                    "WITH gone AS ( \
                         DELETE FROM task_throughput WHERE shard <> 0 \
                         AND shard NOT IN (SELECT pid FROM pg_stat_activity) \
                         RETURNING minute, queue, succeeded, failed, cancelled) \
                     INSERT INTO task_throughput AS t \
                         (minute, queue, shard, succeeded, failed, cancelled) \
                     SELECT minute, queue, 0, SUM(succeeded), SUM(failed), SUM(cancelled) \
                     FROM gone GROUP BY minute, queue ORDER BY minute, queue \
                     ON CONFLICT (minute, queue, shard) DO UPDATE SET \
                         succeeded = t.succeeded + excluded.succeeded, \
                         failed = t.failed + excluded.failed, \
                         cancelled = t.cancelled + excluded.cancelled",
                )
                .execute(p)
                .await?;
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
