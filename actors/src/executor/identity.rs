//! Who this executor is in the store: its heartbeat, and what it does when
//! the store says it is dead (it comes back under a new id) or cannot be
//! reached for too long (it drops its runs).

use actix::prelude::*;
use uuid::Uuid;

use courier_bus::{Address, Deliver};

use super::{ExecutorActor, Job, Phase};
use crate::calls::detached;
use crate::error::{Error, Result};
use crate::protocol::Msg;
use crate::task::signals::Abort;

/// Who an executor is in the store: the id it registered under (a new
/// one each time it registers again), its node and host, its bus address,
/// and its lease.
pub(super) struct Identity {
    pub(super) id: String,
    /// The node this executor belongs to; a new id after being declared
    /// dead keeps it.
    pub(super) node: String,
    pub(super) host: String,
    /// `executor/<id>`.
    pub(super) address: Address,
    /// When the last heartbeat the store confirmed was sent: the lease
    /// runs from here (see [`ExecutorActor::lease`]).
    pub(super) last_heartbeat: std::time::Instant,
}

impl ExecutorActor {
    /// How long the store's last word that this executor is alive holds:
    /// three quarters of `dead_after`, measured from when the heartbeat
    /// that got that word was *sent* (the store wrote it later, so others
    /// count their `dead_after` from a later time). Past it this executor
    /// runs nothing: see [`ExecutorActor::check_lease`].
    pub(super) fn lease(&self) -> std::time::Duration {
        self.config.dead_after * 3 / 4
    }

    pub(super) fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        // One at a time: after a stall (a frozen process, a slow database)
        // the interval's missed ticks must not pile up as queued writes.
        if !self.jobs.start(Job::Heartbeat) {
            return;
        }
        let store = self.store.clone();
        let executor_id = self.identity.id.clone();
        let sent_as = executor_id.clone();
        let sent_at = std::time::Instant::now();
        // A heartbeat that has not answered within the lease is no use:
        // give up on it, so the next one goes out on a fresh connection.
        let deadline = self.lease();
        let running = (self.running.len() - self.ending.len()) as i32;
        ctx.spawn(
            detached(async move {
                courier_store::within(deadline, store.heartbeat(&executor_id, running))
                    .await
                    .map_err(Error::from)
            })
            .into_actor(self)
            .map(move |res, act, ctx| {
                act.jobs.end(Job::Heartbeat);
                if sent_as != act.identity.id {
                    // Sent under an identity this executor has since
                    // left behind: says nothing about the current one.
                    return;
                }
                act.heartbeat_done(res, sent_at, ctx)
            }),
        );
    }

    /// What a heartbeat's answer means for this executor.
    fn heartbeat_done(
        &mut self,
        res: Result<bool>,
        sent_at: std::time::Instant,
        ctx: &mut Context<Self>,
    ) {
        match res {
            Ok(true) if self.phase == Phase::CutOff => {
                // The store hears us again, but our runs were dropped and
                // their tasks still name us: give this identity up (so the
                // sweep puts them back) and register anew.
                tracing::warn!(executor = %self.identity.id, "the store answers again after this executor cut itself off; retiring its identity and re-registering");
                self.retire(ctx);
            }
            Ok(true) => {
                self.identity.last_heartbeat = self.identity.last_heartbeat.max(sent_at);
            }
            Ok(false) if !self.is_stopping() => {
                // Declared dead by another executor: our tasks belong to
                // others now. Drop every run without writing anything,
                // then come back as a new executor.
                tracing::error!(executor = %self.identity.id, "this executor was declared dead; dropping its runs and re-registering");
                self.drop_runs();
                self.reincarnate(ctx);
            }
            Ok(false) => {}
            Err(e) => {
                let (open, idle) = self.store.pool_status();
                tracing::warn!(error = %e, open, idle, "heartbeat failed");
                self.check_lease(ctx);
            }
        }
    }

    /// The lease: an executor whose last renewed heartbeat is older than
    /// [`lease`](Self::lease) stops every run it holds and claims nothing
    /// until it has registered again. Others take its tasks over only once
    /// its heartbeat is `dead_after` old, so with clocks that run at the
    /// same rate no task runs here and elsewhere at once, whether or not
    /// the calls to the store return (on a cut link they hang). Checked on
    /// a timer of its own, several times per `dead_after`.
    pub(super) fn check_lease(&mut self, ctx: &mut Context<Self>) {
        if self.phase != Phase::Serving || self.identity.last_heartbeat.elapsed() < self.lease() {
            return;
        }
        tracing::error!(
            executor = %self.identity.id,
            silent_ms = self.identity.last_heartbeat.elapsed().as_millis() as u64,
            lease_ms = self.lease().as_millis() as u64,
            "this executor's lease ran out (no heartbeat renewed): stopping every run and claiming nothing until it registers again"
        );
        self.phase = Phase::CutOff;
        crate::metrics::metrics().lease_lost();
        self.drop_runs();
        self.update_membership(ctx);
    }

    /// Gives up this executor's identity after its lease ran out: declares
    /// it dead itself (the fence: nothing written under it lands from now
    /// on, and the sweep puts its tasks back), then registers anew.
    fn retire(&mut self, ctx: &mut Context<Self>) {
        if !self.jobs.start(Job::Retire) {
            return;
        }
        let store = self.store.clone();
        let executor_id = self.identity.id.clone();
        ctx.spawn(
            detached(async move { store.declare_dead(&executor_id, &executor_id).await })
                .into_actor(self)
                .map(|res, act, ctx| {
                    act.jobs.end(Job::Retire);
                    match res {
                        Ok(_) => act.reincarnate(ctx),
                        Err(e) => {
                            tracing::warn!(error = %e, "could not retire this executor's identity; retrying at the next heartbeat")
                        }
                    }
                }),
        );
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
        let new_id = format!("{}-{}", self.identity.node, &suffix[20..]);
        let reg = courier_store::ExecutorRegistration::this_process(
            new_id.clone(),
            self.identity.node.clone(),
            self.identity.host.clone(),
            super::offer_of(&self.registry, &self.config),
            self.config.capacity,
        );
        let store = self.store.clone();
        let sent_at = std::time::Instant::now();
        ctx.wait(
            detached(async move { store.register_executor(&reg).await })
                .into_actor(self)
                .map(move |res, act, ctx| match res {
                    Ok(()) => {
                        let old = act.identity.address.clone();
                        act.bus.unregister(old.clone());
                        for k in &act.kinds {
                            act.bus.leave_pool(k.clone(), old.clone());
                        }
                        act.identity.id = new_id.clone();
                        act.identity.address = Address::Executor(new_id.clone());
                        act.run_env = std::sync::Arc::new(act.run_env.under(new_id.clone()));
                        act.identity.last_heartbeat = sent_at;
                        if act.phase == Phase::CutOff {
                            act.phase = Phase::Serving;
                        }
                        let recipient = ctx.address().recipient::<Deliver<Msg>>();
                        let bus = act.bus.clone();
                        let me = act.identity.address.clone();
                        ctx.wait(
                            async move { bus.register(me, recipient).await }
                                .into_actor(act)
                                .map(|_, act, ctx| {
                                    act.claims.in_pools = false;
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
