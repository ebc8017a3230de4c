//! The `task_watchers` table: who waits for a task to finish, or follows
//! its every change.

use super::statements::watchers as st;
use super::Store;
use crate::error::{Error, Result};
use crate::model::{now, Task};
use uuid::Uuid;

impl Store {
    /// Records that `address` waits for `task` to finish and returns the task
    /// as it stands, in one transaction that serializes with the task's
    /// finish: either the finish sees this watcher (and tells it), or this
    /// returns the final task. Reading the state apart from the insert would
    /// leave a window where neither happens.
    /// `stream`: the watcher follows every state change, not only the end.
    pub async fn watch(&self, task: Uuid, address: &str, stream: bool) -> Result<Task> {
        let select = st::watch_task(self.dialect(), stream);
        let row: Option<Task> = on_pool_tx!(self, p, begin => {
            let mut tx = p.begin_with(begin).await?;
            let row: Option<Task> = sqlx::query_as(&select).bind(task).fetch_optional(&mut *tx).await?;
            if row.as_ref().is_some_and(|t| !t.state.is_final()) {
                sqlx::query(st::WATCH)
                    .bind(task).bind(address).bind(now()).bind(stream).execute(&mut *tx).await?;
                if stream {
                    sqlx::query(st::MARK_WATCHED)
                        .bind(task).execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
            row
        });
        row.ok_or(Error::NotFound(task))
    }

    /// The watchers of a task that follow every state change.
    pub async fn stream_watchers(&self, task: Uuid) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = on_pool!(self, p => sqlx::query_as(st::STREAM_WATCHERS)
            .bind(task).fetch_all(p).await)?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// Records that `address` waits for `task` to finish.
    pub async fn add_watcher(&self, task: Uuid, address: &str) -> Result<()> {
        on_pool_write!(self, p => sqlx::query(st::ADD)
            .bind(task).bind(address).bind(now()).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Forgets a watcher (its wait ended).
    pub async fn remove_watcher(&self, task: Uuid, address: &str) -> Result<()> {
        on_pool_write!(self, p => sqlx::query(st::REMOVE)
            .bind(task).bind(address).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Removes and returns the watchers of a finished task.
    pub async fn take_watchers(&self, task: Uuid) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = on_pool_write!(self, p => sqlx::query_as(st::TAKE)
            .bind(task).fetch_all(p).await)?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }
}
