//! Claiming: how work reaches this executor (push and pull) and becomes
//! task actors.

use actix::prelude::*;
use uuid::Uuid;

use super::{ExecutorActor, Job};
use crate::store::detached;

impl ExecutorActor {
    /// Claims one task named by a `start_task`, then settles the message
    /// (`message`, its envelope id): a transport that holds it until then
    /// (AMQP) acknowledges it only once the claim is committed, or found
    /// needless, and offers it again if the claim failed.
    pub(super) fn claim_one(
        &mut self,
        task_id: Uuid,
        kind: String,
        message: Uuid,
        ctx: &mut Context<Self>,
    ) {
        if self.running.contains_key(&task_id) {
            self.bus.settle(message, true);
            return;
        }
        if self.free_slots() == 0 {
            // Full: the task stays pending in the store and is pulled when a
            // slot frees; offering the message again would only spin.
            self.jobs.want(Job::Pull);
            self.bus.settle(message, true);
            return;
        }
        self.claiming += 1;
        self.update_membership(ctx);
        let store = self.store.clone();
        let me = self.id.clone();
        ctx.spawn(
            detached(async move { store.claim(task_id, &kind, &me).await })
                .into_actor(self)
                .map(move |res, act, ctx| {
                    act.claiming -= 1;
                    act.update_membership(ctx);
                    match res {
                        Ok(Some(task)) => {
                            act.bus.settle(message, true);
                            act.launch(task, ctx)
                        }
                        // Someone else has it, or it is no longer pending.
                        Ok(None) => act.bus.settle(message, true),
                        Err(e) => {
                            tracing::warn!(%task_id, error = %e, "claim failed; the message is offered again and the sweep retries");
                            act.bus.settle(message, false);
                            act.jobs.want(Job::Pull);
                        }
                    }
                }),
        );
    }

    /// Claims the oldest pending tasks, up to the free slots.
    pub(super) fn pull(&mut self, ctx: &mut Context<Self>) {
        let free = self.free_slots();
        if free == 0 || !self.jobs.is_wanted(Job::Pull) || !self.jobs.start(Job::Pull) {
            return;
        }
        self.claiming += free;
        let store = self.store.clone();
        let me = self.id.clone();
        let kinds = self.kinds.clone();
        ctx.spawn(
            detached(async move { store.claim_pending(&me, &kinds, free).await })
                .into_actor(self)
                .map(move |res, act, ctx| {
                    act.jobs.end(Job::Pull);
                    act.claiming -= free;
                    act.update_membership(ctx);
                    match res {
                        Ok(tasks) => {
                            let full = tasks.len() as u32 == free;
                            if !tasks.is_empty() {
                                tracing::debug!(n = tasks.len(), "claimed pending tasks");
                            }
                            for t in tasks {
                                act.launch(t, ctx);
                            }
                            if full {
                                // Perhaps more where these came from.
                                act.jobs.want(Job::Pull);
                            }
                            act.pull(ctx);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "claiming pending tasks failed; the sweep will retry");
                            act.jobs.want(Job::Pull);
                        }
                    }
                }),
        );
    }
}
