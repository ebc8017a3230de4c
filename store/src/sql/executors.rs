//! The `executors` table: registration, heartbeats, death.

use super::statements::executors as st;
use super::{Db, Dialect, Store};
use crate::error::Result;
use crate::model::{now, ExecutorInfo, ExecutorState};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use std::time::Duration;

/// An executor registration.
#[derive(Clone, Debug)]
pub struct ExecutorRegistration {
    pub id: String,
    pub node: String,
    pub host: String,
    pub pid: i32,
    /// Lets a sweeper on the same machine see that the process is gone
    /// (`None`: only heartbeats tell).
    pub process: Option<crate::process::ProcessIdentity>,
    pub offer: Offer,
    pub capacity: i32,
}

/// What an executor runs: its kinds (with each kind's default options, so
/// that any node creating a task of the kind applies them) and the queues
/// it serves.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Offer {
    pub kinds: Vec<String>,
    pub queues: Vec<String>,
    pub kind_options: std::collections::BTreeMap<String, crate::options::TaskOptions>,
}

impl ExecutorRegistration {
    /// The registration of an executor run by this very process.
    pub fn this_process(
        id: String,
        node: String,
        host: String,
        offer: Offer,
        capacity: u32,
    ) -> Self {
        ExecutorRegistration {
            id,
            node,
            host,
            pid: std::process::id() as i32,
            process: crate::process::ProcessIdentity::current(),
            offer,
            capacity: capacity.min(i32::MAX as u32) as i32,
        }
    }
}

impl Store {
    /// Registers an executor as alive.
    pub async fn register_executor(&self, r: &ExecutorRegistration) -> Result<()> {
        on_pool_write!(self, p => sqlx::query(&st::register())
            .bind(&r.id).bind(&r.node).bind(&r.host).bind(r.pid)
            .bind(r.process.as_ref().map(|p| p.space.clone()))
            .bind(r.process.as_ref().map(|p| p.start))
            .bind(Json(&r.offer.kinds)).bind(r.capacity).bind(now()).bind(self.seen_now())
            .bind(Json(&r.offer.queues)).bind(Json(&r.offer.kind_options))
            .execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// The time a heartbeat records, `None` meaning the database's own
    /// clock. On PostgreSQL, whose executors may sit on many hosts, every
    /// heartbeat and every staleness check reads the one server clock, so a
    /// host whose clock runs behind is not taken for dead (nor one running
    /// ahead for alive). SQLite serves one host: its clock is the process's.
    fn seen_now(&self) -> Option<DateTime<Utc>> {
        match self.dialect() {
            Dialect::Postgres => None,
            Dialect::Sqlite => Some(now()),
        }
    }

    /// Records a heartbeat. `false` when the executor is no longer alive in
    /// the store (declared dead or stopped): it must stop touching its tasks.
    pub async fn heartbeat(&self, id: &str, running: i32) -> Result<bool> {
        let res = on_pool_write!(self, p => sqlx::query(&st::heartbeat())
            .bind(id).bind(self.seen_now()).bind(running).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(res == 1)
    }

    /// Marks an executor cleanly stopped.
    pub async fn stop_executor(&self, id: &str) -> Result<()> {
        on_pool_write!(self, p => sqlx::query(&st::stop())
            .bind(id).bind(now()).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Alive executors other than `me` silent for longer than `dead_after`.
    pub async fn stale_executors(
        &self,
        me: &str,
        dead_after: Duration,
    ) -> Result<Vec<ExecutorInfo>> {
        // Staleness is read on the clock the heartbeats were written with
        // (see `seen_now`).
        let rows: Vec<ExecutorInfo> = match &self.db {
            #[cfg(feature = "postgres")]
            Db::Postgres(p) => {
                sqlx::query_as(&st::stale(Dialect::Postgres))
                    .bind(me)
                    .bind(dead_after.as_secs_f64())
                    .fetch_all(p)
                    .await?
            }
            #[cfg(feature = "sqlite")]
            Db::Sqlite(p) => {
                sqlx::query_as(&st::stale(Dialect::Sqlite))
                    .bind(me)
                    .bind(now() - chrono::Duration::from_std(dead_after).unwrap_or_default())
                    .fetch_all(p)
                    .await?
            }
        };
        Ok(rows)
    }

    /// Alive executors other than `me` whose process lives in pid space
    /// `space` (see [`crate::process`]), with their process identity.
    pub async fn alive_executors_in_space(
        &self,
        me: &str,
        space: &str,
    ) -> Result<Vec<(String, crate::process::ProcessIdentity)>> {
        let rows: Vec<(String, i32, Option<i64>)> = on_pool!(self, p => sqlx::query_as(&st::alive_in_space())
            .bind(me).bind(space).fetch_all(p).await)?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, pid, start)| {
                let process = crate::process::ProcessIdentity {
                    space: space.to_string(),
                    pid,
                    start: start?,
                };
                Some((id, process))
            })
            .collect())
    }

    /// Declares `dead` dead on behalf of `by`. A conditional update: when
    /// several executors try at once, exactly one gets `true`.
    pub async fn declare_dead(&self, dead: &str, by: &str) -> Result<bool> {
        let res = on_pool_write!(self, p => sqlx::query(&st::declare_dead())
            .bind(dead).bind(by).bind(now()).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(res == 1)
    }

    /// Every executor, newest first.
    pub async fn executors(&self) -> Result<Vec<ExecutorInfo>> {
        let rows: Vec<ExecutorInfo> =
            on_pool!(self, p => sqlx::query_as(&st::all()).fetch_all(p).await)?;
        Ok(rows)
    }

    /// A page of the executors, newest first, after the executor `after`,
    /// at most `limit`.
    pub async fn executors_page(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ExecutorInfo>> {
        let sql = st::page();
        let rows: Vec<ExecutorInfo> = on_pool!(self, p => sqlx::query_as(&sql)
            .bind(after).bind(i64::from(limit.clamp(1, 1001))).fetch_all(p).await)?;
        Ok(rows)
    }

    /// One executor.
    pub async fn executor(&self, id: &str) -> Result<Option<ExecutorInfo>> {
        let row: Option<ExecutorInfo> =
            on_pool!(self, p => sqlx::query_as(&st::get()).bind(id).fetch_optional(p).await)?;
        Ok(row)
    }

    /// The kinds some alive executor has registered.
    pub async fn known_kinds(&self) -> Result<Vec<String>> {
        let all = self.executors().await?;
        let mut kinds: Vec<String> = all
            .into_iter()
            .filter(|e| e.state == ExecutorState::Alive || e.language.is_some())
            .flat_map(|e| e.kinds)
            .collect();
        kinds.sort();
        kinds.dedup();
        Ok(kinds)
    }

    /// The default options of `kind` as an alive executor that runs it
    /// registered them, or `None` if none runs it.
    pub async fn kind_defaults(&self, kind: &str) -> Result<Option<crate::options::TaskOptions>> {
        type KindDefaults = std::collections::BTreeMap<String, crate::options::TaskOptions>;
        let rows: Vec<(Json<Vec<String>>, Json<KindDefaults>)> = on_pool!(self, p => sqlx::query_as(&st::kind_defaults())
                .fetch_all(p).await)?;
        Ok(rows.into_iter().find_map(|(kinds, options)| {
            kinds
                .0
                .iter()
                .any(|k| k == kind)
                .then(|| options.0.get(kind).cloned().unwrap_or_default())
        }))
    }
}
