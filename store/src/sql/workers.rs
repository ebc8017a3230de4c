//! What the worker protocol needs of the `executors` table beyond an
//! executor's registration: a worker's language and name (a worker is an
//! executor row, see `crate::workers`).

use super::*;

impl Store {
    /// Records that the executor `id` is a worker in `language` named
    /// `name` (shown by the API and the dashboard).
    pub async fn label_worker(&self, id: &str, language: &str, name: &str) -> Result<()> {
        on_pool_write!(self, p => sqlx::query(statements::workers::LABEL)
            .bind(id).bind(language).bind(name)
            .execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }
}
