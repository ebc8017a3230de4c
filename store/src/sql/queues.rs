//! The `queues` table, and the two statements that move tasks forward
//! through it: the **claim** (an executor takes pending tasks, highest
//! priority first, within every queue's deployment-wide limits) and
//! **promotion** (scheduled tasks whose `run_at` has come become pending).
//!
//! Limits hold across every executor on every host because they are
//! enforced where the claim happens, in one transaction, never by an
//! executor counting for itself. The transaction first reads the settings
//! of the limited queues among those claimed from, locking their rows
//! (`FOR UPDATE` on PostgreSQL; on SQLite the write transaction is serial
//! already), so two claims on one limited queue take turns, and each sees
//! what the other committed: its running count is read by a statement that
//! starts after the other's commit. Queues without limits take no lock at
//! all. Then one statement claims up to the executor's free slots across
//! all its queues, each queue's share capped by what its limits allow.

use super::statements::queues as st;
use super::{Dialect, Store};
use crate::error::Result;
use crate::model::{now, ExecutorState, Task, TaskState};
use chrono::{DateTime, Utc};
use std::time::Duration;

use crate::model::{QueueInfo, QueueUpdate};

/// What a claim took, and when it is worth trying again for work that a
/// rate limit held back.
#[derive(Debug, Default)]
pub struct Claimed {
    /// The claimed tasks, `running`, owned by the claiming executor with a
    /// new epoch.
    pub tasks: Vec<Task>,
    /// A queue's rate limit held tasks back: its next start is allowed in
    /// this long.
    pub retry_in: Option<Duration>,
    /// Some of the queues had limits (or were paused) when the claim
    /// looked. While none has, [`Store::claim_unlimited`] does the same in
    /// one statement.
    pub limited: bool,
}

/// A limited queue's settings as the claim reads them (locked).
#[derive(sqlx::FromRow)]
struct Limits {
    name: String,
    concurrency: Option<i32>,
    rate_per_s: Option<f64>,
    paused: bool,
    tokens: f64,
    tokens_at: Option<DateTime<Utc>>,
    /// The database server's clock (PostgreSQL); SQLite serves one host and
    /// the process's clock is used.
    clock: Option<DateTime<Utc>>,
}

/// A rate limit's token bucket: `rate` starts per second, bursts up to
/// max(1, `rate`).
fn refill(rate: f64, tokens: f64, at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> f64 {
    let burst = rate.max(1.0);
    match at {
        None => burst,
        Some(at) => {
            let elapsed = (now - at).num_microseconds().unwrap_or(i64::MAX).max(0) as f64 / 1e6;
            (tokens + elapsed * rate).min(burst)
        }
    }
}

impl Store {
    /// Claims up to `limit` pending tasks for `executor` from `queues`, of
    /// the `kinds` it runs: within each queue the highest priority first,
    /// the oldest among equals; no queue beyond what its limits allow
    /// (paused: none; `concurrency`: its running tasks stay within it;
    /// `rate_per_s`: a token bucket). Each claim counts an attempt, starts a
    /// new ownership epoch and needs the executor to be alive.
    pub async fn claim(
        &self,
        executor: &str,
        queues: &[String],
        kinds: &[String],
        limit: u32,
    ) -> Result<Claimed> {
        if queues.is_empty() || kinds.is_empty() || limit == 0 {
            return Ok(Claimed::default());
        }
        // The common case first: none of the queues has a limit. Then the
        // claim is one statement on its own, no transaction, no lock; a
        // limit set between the look and the claim is seen by the claim's
        // own guard (see `Plan::statement`).
        let look = st::limits(self.dialect(), queues.len(), false);
        let found: Vec<Limits> = on_pool!(self, p => {
            let mut q = sqlx::query_as::<_, Limits>(&look);
            for name in queues {
                q = q.bind(name);
            }
            q.fetch_all(p).await
        })?;
        if found.is_empty() {
            let tasks = self.claim_unlimited(executor, queues, kinds, limit).await?;
            return Ok(Claimed {
                tasks,
                retry_in: None,
                limited: false,
            });
        }
        let limits_sql = st::limits(self.dialect(), queues.len(), true);
        let with_concurrency = |ls: &[Limits]| -> Vec<String> {
            ls.iter()
                .filter(|l| l.concurrency.is_some() && !l.paused)
                .map(|l| l.name.clone())
                .collect()
        };
        let claimed = on_pool_tx!(self, p, begin => {
            let mut tx = p.begin_with(begin).await?;
            let mut q = sqlx::query_as::<_, Limits>(&limits_sql);
            for name in queues {
                q = q.bind(name);
            }
            let limits: Vec<Limits> = q.fetch_all(&mut *tx).await?;
            let counted = with_concurrency(&limits);
            let running: Vec<(String, i64)> = if counted.is_empty() {
                Vec::new()
            } else {
                let sql = st::running(counted.len());
                let mut q = sqlx::query_as(&sql);
                for name in &counted {
                    q = q.bind(name);
                }
                q.fetch_all(&mut *tx).await?
            };
            let now_at = limits.iter().find_map(|l| l.clock).unwrap_or_else(now);
            let plan = Plan::new(queues, &limits, &running, limit, now_at);
            let tasks: Vec<Task> = if plan.shares.is_empty() {
                Vec::new()
            } else {
                let sql = plan.statement(self.dialect(), kinds.len());
                let mut q = sqlx::query_as(&sql)
                    .bind(executor)
                    .bind(now())
                    .bind(i64::from(limit));
                for k in kinds {
                    q = q.bind(k);
                }
                for (name, share) in &plan.shares {
                    q = q.bind(name).bind(i64::from(*share));
                }
                q.fetch_all(&mut *tx).await?
            };
            let mut retry_in: Option<Duration> = None;
            for b in &plan.buckets {
                let took = tasks.iter().filter(|t| t.queue == b.name).count() as f64;
                let left = (b.tokens - took).max(0.0);
                sqlx::query(st::TOKENS)
                    .bind(&b.name)
                    .bind(left)
                    .bind(plan.now)
                    .execute(&mut *tx)
                    .await?;
                // The bucket, not the work, ran out: come back when the next
                // token is there.
                if b.limiting && took >= b.allowed as f64 {
                    let wait = Duration::from_secs_f64(((1.0 - left).max(0.0) / b.rate).min(3600.0));
                    retry_in = Some(retry_in.map_or(wait, |r| r.min(wait)));
                }
            }
            tx.commit().await?;
            Claimed {
                tasks,
                retry_in,
                limited: true,
            }
        });
        let mut claimed = claimed;
        claimed
            .tasks
            .sort_by(|a, b| b.priority.cmp(&a.priority).then(a.id.cmp(&b.id)));
        Ok(claimed)
    }

    /// [`claim`](Self::claim) for queues that had no limits when last
    /// looked at: one statement, no transaction. Should one of them have a
    /// limit or a pause now, the statement takes nothing from it (the guard
    /// of `Plan::statement`); the next [`claim`](Self::claim) sees the
    /// limit and keeps it.
    pub async fn claim_unlimited(
        &self,
        executor: &str,
        queues: &[String],
        kinds: &[String],
        limit: u32,
    ) -> Result<Vec<Task>> {
        if queues.is_empty() || kinds.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let plan = Plan::new(queues, &[], &[], limit, now());
        let sql = plan.statement(self.dialect(), kinds.len());
        let mut tasks: Vec<Task> = on_pool_write!(self, p => {
            let mut q = sqlx::query_as(&sql)
                .bind(executor)
                .bind(now())
                .bind(i64::from(limit));
            for k in kinds {
                q = q.bind(k);
            }
            for (name, share) in &plan.shares {
                q = q.bind(name).bind(i64::from(*share));
            }
            q.fetch_all(p).await
        })?;
        tasks.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.id.cmp(&b.id)));
        Ok(tasks)
    }

    /// Makes `scheduled` tasks, and `suspended` ones on a durable timer, whose `run_at` has come `pending` (at most
    /// `limit`, the longest due first), on behalf of `by`, and returns them.
    /// Any process may run it at any time: a task is promoted once.
    pub async fn promote_due(&self, by: &str, limit: u32) -> Result<Vec<Task>> {
        let sql = st::promote_due(self.dialect());
        let rows: Vec<Task> = on_pool_write!(self, p => sqlx::query_as(&sql)
            .bind(now()).bind(by).bind(i64::from(limit)).fetch_all(p).await)?;
        Ok(rows)
    }

    /// When the next `scheduled` task or durable timer is due (an index lookup).
    pub async fn next_due(&self) -> Result<Option<DateTime<Utc>>> {
        let sql = st::next_due(self.dialect());
        let row: Option<(Option<DateTime<Utc>>,)> =
            on_pool!(self, p => sqlx::query_as(&sql).fetch_optional(p).await)?;
        Ok(row.and_then(|r| r.0))
    }

    /// Every queue that has a setting, a task waiting or running, or an
    /// executor serving it, by name.
    pub async fn queues(&self) -> Result<Vec<QueueInfo>> {
        self.queue_infos(None).await
    }

    /// One queue as [`queues`](Self::queues) shows it (a queue nobody
    /// mentioned has no limits and nothing in it).
    pub async fn queue(&self, name: &str) -> Result<QueueInfo> {
        let mut all = self.queue_infos(Some(name)).await?;
        Ok(all.pop().unwrap_or_else(|| QueueInfo {
            name: name.to_string(),
            ..QueueInfo::default()
        }))
    }

    /// The counts are those of `stats.rs` (counters the triggers keep, on
    /// PostgreSQL).
    async fn queue_infos(&self, only: Option<&str>) -> Result<Vec<QueueInfo>> {
        let settings: Vec<(String, Option<i32>, Option<f64>, bool)> = on_pool!(self, p => sqlx::query_as(st::SETTINGS)
            .bind(only).fetch_all(p).await)?;
        let counts: Vec<(String, String, i64)> = on_pool!(self, p => sqlx::query_as(&super::statements::stats::counts(self.dialect(), true))
            .bind(only).fetch_all(p).await)?;
        let served: Vec<String> = self
            .executors()
            .await?
            .into_iter()
            .filter(|e| e.state == ExecutorState::Alive)
            .flat_map(|e| e.queues)
            .collect();
        let mut out: std::collections::BTreeMap<String, QueueInfo> = Default::default();
        let entry = |out: &mut std::collections::BTreeMap<String, QueueInfo>, name: &str| {
            out.entry(name.to_string())
                .or_insert_with(|| QueueInfo {
                    name: name.to_string(),
                    ..QueueInfo::default()
                })
                .name
                .clone()
        };
        for (name, concurrency, rate_per_s, paused) in settings {
            entry(&mut out, &name);
            let q = out.get_mut(&name).expect("just added");
            q.concurrency = concurrency;
            q.rate_per_s = rate_per_s;
            q.paused = paused;
        }
        for (name, state, n) in counts {
            entry(&mut out, &name);
            let q = out.get_mut(&name).expect("just added");
            match state.parse::<TaskState>() {
                Ok(TaskState::Scheduled) => q.scheduled = n,
                Ok(TaskState::Pending) => q.pending = n,
                Ok(TaskState::Running) => q.running = n,
                Ok(TaskState::Suspended) => q.suspended = n,
                _ => {}
            }
        }
        for name in served.iter().filter(|n| only.is_none_or(|o| o == *n)) {
            entry(&mut out, name);
            out.get_mut(name).expect("just added").executors += 1;
        }
        Ok(out.into_values().collect())
    }

    /// Changes a queue's settings (fields left `None` keep their value) and
    /// returns the queue. A new or changed rate limit starts with a full
    /// bucket.
    pub async fn update_queue(&self, name: &str, u: &QueueUpdate) -> Result<QueueInfo> {
        crate::options::validate_queue_name(name)?;
        u.validate()?;
        let select = st::settings_of(self.dialect());
        let upsert = st::UPSERT;
        on_pool_tx!(self, p, begin => {
            let mut tx = p.begin_with(begin).await?;
            let old: Option<(Option<i32>, Option<f64>, bool)> =
                sqlx::query_as(&select).bind(name).fetch_optional(&mut *tx).await?;
            let (c0, r0, p0) = old.unwrap_or((None, None, false));
            let concurrency = match u.concurrency {
                Some(c) => c.map(|c| c as i32),
                None => c0,
            };
            let rate = match u.rate_per_s {
                Some(r) => r,
                None => r0,
            };
            let paused = u.paused.unwrap_or(p0);
            sqlx::query(upsert)
                .bind(name)
                .bind(concurrency)
                .bind(rate)
                .bind(paused)
                .bind(rate.map_or(0.0, |r| r.max(1.0)))
                .bind(now())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        self.queue(name).await
    }
}

/// What one claim may take from each queue.
struct Plan {
    /// Queues with room, in the order given, and how many each may give.
    shares: Vec<(String, u32)>,
    /// Those of `shares` that had no limits when the claim looked.
    unlimited: Vec<String>,
    /// The rate-limited queues' buckets, to write back.
    buckets: Vec<Bucket>,
    now: DateTime<Utc>,
}

struct Bucket {
    name: String,
    rate: f64,
    /// Tokens after refilling, before this claim takes any.
    tokens: f64,
    /// What the bucket allows now (whole tokens).
    allowed: u32,
    /// The bucket, not the free slots or the concurrency, set the share.
    limiting: bool,
}

impl Plan {
    fn new(
        queues: &[String],
        limits: &[Limits],
        running: &[(String, i64)],
        free: u32,
        now: DateTime<Utc>,
    ) -> Plan {
        let mut shares = Vec::with_capacity(queues.len());
        let mut unlimited = Vec::new();
        let mut buckets = Vec::new();
        for name in queues {
            let Some(l) = limits.iter().find(|l| &l.name == name) else {
                shares.push((name.clone(), free));
                unlimited.push(name.clone());
                continue;
            };
            if l.paused {
                continue;
            }
            let mut share = free;
            if let Some(c) = l.concurrency {
                let busy = running
                    .iter()
                    .find(|(q, _)| q == name)
                    .map_or(0, |(_, n)| *n);
                share = share.min((i64::from(c) - busy).clamp(0, i64::from(u32::MAX)) as u32);
            }
            if let Some(rate) = l.rate_per_s.filter(|r| *r > 0.0) {
                let tokens = refill(rate, l.tokens, l.tokens_at, now);
                let allowed = tokens.floor().clamp(0.0, f64::from(u32::MAX)) as u32;
                buckets.push(Bucket {
                    name: name.clone(),
                    rate,
                    tokens,
                    allowed: allowed.min(share),
                    limiting: allowed < share,
                });
                share = share.min(allowed);
            }
            if share > 0 {
                shares.push((name.clone(), share));
            }
        }
        Plan {
            shares,
            unlimited,
            buckets,
            now,
        }
    }

    /// The claim for this plan's queues (see `statements::queues::claim`).
    fn statement(&self, d: Dialect, kinds: usize) -> String {
        let unlimited: Vec<bool> = self
            .shares
            .iter()
            .map(|(name, _)| self.unlimited.contains(name))
            .collect();
        st::claim(d, kinds, &unlimited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(name: &str, concurrency: Option<i32>, rate: Option<f64>, paused: bool) -> Limits {
        Limits {
            name: name.into(),
            concurrency,
            rate_per_s: rate,
            paused,
            tokens: 0.0,
            tokens_at: None,
            clock: None,
        }
    }

    #[test]
    fn a_bucket_refills_at_its_rate_up_to_its_burst() {
        let t0 = Utc::now();
        let later = |ms| t0 + chrono::Duration::milliseconds(ms);
        assert_eq!(refill(5.0, 0.0, None, t0), 5.0, "a new bucket is full");
        assert!((refill(5.0, 0.0, Some(t0), later(200)) - 1.0).abs() < 1e-9);
        assert_eq!(refill(5.0, 2.0, Some(t0), later(10_000)), 5.0);
        assert_eq!(
            refill(0.5, 0.0, Some(t0), later(10_000)),
            1.0,
            "bursts of at least 1"
        );
        // A clock that went backwards refills nothing.
        assert_eq!(refill(5.0, 1.5, Some(later(1000)), t0), 1.5);
    }

    #[test]
    fn shares_respect_pause_concurrency_and_rate() {
        let qs: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let ls = [
            limits("b", Some(3), None, false),
            limits("c", None, Some(2.0), false),
            limits("d", Some(10), None, true),
        ];
        let plan = Plan::new(&qs, &ls, &[("b".into(), 2)], 8, Utc::now());
        assert_eq!(
            plan.shares,
            vec![("a".into(), 8), ("b".into(), 1), ("c".into(), 2)]
        );
        assert_eq!(plan.buckets.len(), 1);
        assert!(plan.buckets[0].limiting);
        // A full concurrency limit leaves the queue out.
        let plan = Plan::new(&qs[1..2], &ls, &[("b".into(), 3)], 8, Utc::now());
        assert!(plan.shares.is_empty());
        let sql = Plan::new(&qs, &ls, &[], 8, Utc::now()).statement(Dialect::Sqlite, 2);
        assert!(
            sql.contains("queue = $6") && sql.contains("LIMIT $11"),
            "{sql}"
        );
    }
}
