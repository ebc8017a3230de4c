//! Retention, off the path of every task: now and then, the executor
//! deletes expired finished task trees in small batches (one transaction
//! each, a pause between them), and counts what it deleted. Each pass ends
//! by tidying the counter tables (`Store::tidy_counts`), which runs even
//! when every task is kept.

use std::time::Duration;

use actix::prelude::*;

use super::{ExecutorActor, Job};
use crate::calls::detached;

/// Root tasks (with their trees) one batch deletes.
const BATCH_ROOTS: u32 = 200;
/// The pause between batches, so a backlog of a million rows never holds
/// the database for long.
const PAUSE: Duration = Duration::from_millis(50);

/// Retention's pass now running.
#[derive(Default)]
pub(super) struct Pass {
    /// Tasks deleted so far (logged once, when the pass ends).
    deleted: u64,
}

impl ExecutorActor {
    /// Runs retention after `retention_interval` and a random tenth more.
    pub(super) fn schedule_retention(&mut self, ctx: &mut Context<Self>) {
        let base = self.config.retention_interval;
        let jitter = base.mul_f64(rand::random::<f64>() / 10.0);
        ctx.run_later(base + jitter, |act, ctx| {
            act.jobs.want(Job::Retention);
            act.retain(ctx);
        });
    }

    /// One batch; the next follows after a pause while batches come back
    /// full, then the job sleeps until the next interval.
    fn retain(&mut self, ctx: &mut Context<Self>) {
        if self.is_stopping() || !self.jobs.start(Job::Retention) {
            return;
        }
        let store = self.store.clone();
        let policy = self.config.retention.clone();
        ctx.spawn(
            detached(async move {
                if policy.keeps_all() {
                    return Ok(Vec::new());
                }
                store.delete_expired(&policy, BATCH_ROOTS).await
            })
            .into_actor(self)
            .map(|res, act, ctx| {
                act.jobs.end(Job::Retention);
                match res {
                    Ok(counts) if !counts.is_empty() => {
                        let n: u64 = counts.iter().map(|c| c.1).sum();
                        tracing::debug!(tasks = n, ?counts, "retention deleted a batch");
                        act.retention.deleted += n;
                        for (state, n) in counts {
                            crate::metrics::metrics().retention_deleted(state.as_str(), n);
                        }
                        ctx.run_later(PAUSE, |act, ctx| act.retain(ctx));
                    }
                    Ok(_) => {
                        // One line a pass, not one a batch.
                        if act.retention.deleted > 0 {
                            tracing::info!(
                                tasks = act.retention.deleted,
                                "retention deleted expired tasks"
                            );
                            act.retention.deleted = 0;
                        }
                        act.tidy_counts(ctx);
                        act.prune_executors(ctx);
                        act.schedule_retention(ctx)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "retention failed; trying again later");
                        act.schedule_retention(ctx);
                    }
                }
            }),
        );
    }

    /// Deletes the rows of executors dead or stopped past their retention
    /// (`--retain executors=…`), a batch a pass.
    fn prune_executors(&mut self, ctx: &mut Context<Self>) {
        let Some(keep) = self.config.retention.executors else {
            return;
        };
        let store = self.store.clone();
        ctx.spawn(
            detached(async move { store.delete_expired_executors(keep, 1000).await })
                .into_actor(self)
                .map(|res, _, _| match res {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(executors = n, "retention deleted the rows of long-gone executors"),
                    Err(e) => tracing::warn!(error = %e, "deleting long-gone executors failed; trying again later"),
                }),
        );
    }

    /// Folds and trims the counter tables, off every task's path.
    fn tidy_counts(&mut self, ctx: &mut Context<Self>) {
        let store = self.store.clone();
        ctx.spawn(
            detached(async move { store.tidy_counts().await }).into_actor(self).map(
                |res, _, _| {
                    if let Err(e) = res {
                        tracing::warn!(error = %e, "tidying the task counters failed; trying again later");
                    }
                },
            ),
        );
    }
}
