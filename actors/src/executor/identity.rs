//! Who this executor is in the store: its heartbeat, and what it does when
//! the store says it is dead (it comes back under a new id) or cannot be
//! reached for too long (it drops its runs).

use actix::prelude::*;
use uuid::Uuid;

use courier_bus::{Address, Deliver};

use super::{ExecutorActor, Job, Phase};
use crate::error::Result;
use crate::protocol::Msg;
use crate::store::detached;
use crate::task::signals::Abort;

impl ExecutorActor {
    pub(super) fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        // One at a time: after a stall (a frozen process, a slow database)
        // the interval's missed ticks must not pile up as queued writes.
        if !self.jobs.start(Job::Heartbeat) {
            return;
        }
        let store = self.store.clone();
        let me = self.id.clone();
        let sent_as = me.clone();
        let running = (self.running.len() - self.ending.len()) as i32;
        ctx.spawn(
            detached(async move { store.heartbeat(&me, running).await })
                .into_actor(self)
                .map(move |res, act, ctx| {
                    act.jobs.end(Job::Heartbeat);
                    if sent_as != act.id {
                        // Sent under an identity this executor has since
                        // left behind: says nothing about the current one.
                        return;
                    }
                    act.heartbeat_done(res, ctx)
                }),
        );
    }

    /// What a heartbeat's answer means for this executor.
    fn heartbeat_done(&mut self, res: Result<bool>, ctx: &mut Context<Self>) {
        match res {
            Ok(true) => {
                self.last_heartbeat = std::time::Instant::now();
                if self.phase == Phase::CutOff {
                    self.phase = Phase::Serving;
                }
            }
            Ok(false) if !self.is_stopping() => {
                // Declared dead by another executor: our tasks belong to
                // others now. Drop every run without writing anything,
                // then come back as a new executor.
                tracing::error!(executor = %self.id, "this executor was declared dead; dropping its runs and re-registering");
                self.drop_runs();
                self.reincarnate(ctx);
            }
            Ok(false) => {}
            Err(e) => {
                let (open, idle) = self.store.pool_status();
                tracing::warn!(error = %e, open, idle, "heartbeat failed");
                // Cut off from the store for longer than others wait
                // before taking over: stop the runs now, so that a
                // task never runs here and elsewhere at once. (Their
                // writes would be fenced anyway; their side effects
                // would not.)
                if self.phase == Phase::Serving
                    && self.last_heartbeat.elapsed() > self.config.dead_after
                {
                    tracing::error!(executor = %self.id, "cut off from the store past the takeover timeout; dropping runs");
                    self.phase = Phase::CutOff;
                    self.drop_runs();
                }
            }
        }
    }

    /// Stops every run without a write: the tasks are someone else's now.
    pub(super) fn drop_runs(&mut self) {
        for (id, a) in self.running.drain() {
            if !self.ending.remove(&id) {
                crate::metrics::metrics().running_add(-1);
            }
            a.do_send(Abort { hand_back: false });
        }
    }

    /// Registers again under a new id, after this one was declared dead:
    /// the process is alive and can keep working, but nothing may be done
    /// under the old identity.
    fn reincarnate(&mut self, ctx: &mut Context<Self>) {
        let suffix = Uuid::now_v7().simple().to_string();
        let new_id = format!("{}-{}", self.node, &suffix[20..]);
        let reg = crate::store::ExecutorRegistration::this_process(
            new_id.clone(),
            self.node.clone(),
            self.host.clone(),
            super::offer_of(&self.registry, &self.config),
            self.config.capacity,
        );
        let store = self.store.clone();
        ctx.wait(
            detached(async move { store.register_executor(&reg).await })
                .into_actor(self)
                .map(move |res, act, ctx| match res {
                    Ok(()) => {
                        let old = act.address.clone();
                        act.bus.unregister(old.clone());
                        for k in &act.kinds {
                            act.bus.leave_pool(k.clone(), old.clone());
                        }
                        act.id = new_id.clone();
                        act.address = Address::Executor(new_id.clone());
                        act.last_heartbeat = std::time::Instant::now();
                        if act.phase == Phase::CutOff {
                            act.phase = Phase::Serving;
                        }
                        let recipient = ctx.address().recipient::<Deliver<Msg>>();
                        let bus = act.bus.clone();
                        let me = act.address.clone();
                        ctx.wait(
                            async move { bus.register(me, recipient).await }
                                .into_actor(act)
                                .map(|_, act, ctx| {
                                    act.in_pools = false;
                                    act.jobs.want(Job::Pull);
                                    act.update_membership(ctx);
                                    act.pull(ctx);
                                }),
                        );
                        tracing::warn!(executor = %new_id, "re-registered as a new executor");
                    }
                    Err(e) => {
                        // The next heartbeat (still the old id, dead) tries again.
                        tracing::warn!(error = %e, "could not re-register; retrying at the next heartbeat");
                    }
                }),
        );
    }
}
