//! Waiting for one task to finish: a `WaitSession` registers a one-shot
//! `Waiter` actor on the bus, which the executor's `task_finished` reaches.
//!
//! Web sessions: short-lived actors that own a `web/<node>/<session>`
//! address while something (an HTTP request, an embedding program) waits for
//! one task to finish (`Waiter`) or follows its every state change
//! (`Follower`, in `watch`). The executor's messages reach them by bus sends: pushed,
//! never polled.

use actix::prelude::*;
use tokio::sync::oneshot;
use uuid::Uuid;

use std::time::Duration;

use courier_bus::{Address, Deliver};

use crate::error::{Error, Result};
use crate::protocol::{Bus, Msg};
use courier_store::Store;
use courier_store::Task;

pub(super) struct Waiter {
    /// The task waited for; `None` until [`WaitFor`] names it (a waiter is
    /// registered before the task it waits for exists).
    pub task_id: Option<Uuid>,
    pub reply: Option<oneshot::Sender<Task>>,
    /// Reports that came before [`WaitFor`].
    pub early: Vec<Task>,
}

impl Actor for Waiter {
    type Context = Context<Self>;
}

impl Handler<Deliver<Msg>> for Waiter {
    type Result = ();

    fn handle(&mut self, Deliver(env): Deliver<Msg>, ctx: &mut Self::Context) {
        if let Msg::TaskFinished { task } = env.body {
            match self.task_id {
                Some(id) if task.id == id => self.answer(*task, ctx),
                Some(_) => {}
                None => self.early.push(*task),
            }
        }
    }
}

impl Waiter {
    fn answer(&mut self, task: Task, ctx: &mut Context<Self>) {
        if let Some(tx) = self.reply.take() {
            let _ = tx.send(task);
        }
        ctx.stop();
    }
}

/// Names the task the waiter waits for.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct WaitFor(pub Uuid);

impl Handler<WaitFor> for Waiter {
    type Result = ();
    fn handle(&mut self, WaitFor(id): WaitFor, ctx: &mut Self::Context) {
        self.task_id = Some(id);
        if let Some(i) = self.early.iter().position(|t| t.id == id) {
            let t = self.early.swap_remove(i);
            self.answer(t, ctx);
        }
    }
}

/// Stops a waiter whose wait is over.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Dismiss;

impl Handler<Dismiss> for Waiter {
    type Result = ();
    fn handle(&mut self, _: Dismiss, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// One wait for one task: a [`Waiter`] registered on the bus at
/// `web/<node>/<session>`, whose address is recorded as the task's watcher.
pub(super) struct WaitSession {
    address: Address,
    /// The address as recorded in the store.
    pub(super) watcher: String,
    waiter: Addr<Waiter>,
    rx: std::sync::Mutex<Option<tokio::sync::oneshot::Receiver<Task>>>,
    /// The answer was pushed by the executor, which removed the watcher row
    /// when it read it; otherwise `close` removes it.
    pushed: std::sync::atomic::AtomicBool,
}

impl WaitSession {
    pub(super) async fn open(bus: &Bus, node: &str) -> Result<WaitSession> {
        let address = Address::Web {
            node: node.to_string(),
            session: Uuid::now_v7().simple().to_string(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let waiter = Waiter {
            task_id: None,
            reply: Some(tx),
            early: Vec::new(),
        }
        .start();
        bus.register(address.clone(), waiter.clone().recipient())
            .await?;
        Ok(WaitSession {
            watcher: address.to_string(),
            address,
            waiter,
            rx: std::sync::Mutex::new(Some(rx)),
            pushed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Waits for `task` to finish. `task` was read in the transaction that
    /// recorded the watcher, so if it was not final then, the executor will
    /// push the finished task here.
    pub(super) async fn wait(
        &self,
        store: &Store,
        task: &Task,
        timeout: Duration,
        until: impl std::future::Future<Output = ()>,
    ) -> Result<(Task, bool)> {
        tracing::debug!(task_id = %task.id, state = %task.state, watcher = %self.watcher, "waiting");
        if task.state.is_final() {
            return Ok((task.clone(), true));
        }
        let rx = self
            .rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or(Error::Stopped)?;
        self.waiter.do_send(WaitFor(task.id));
        // The finish is pushed here; should the push be lost (no route to
        // this node at that moment: a transport reconnecting), the store is
        // asked now and then, so a wait never outlasts the task by more than
        // a few seconds.
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = rx;
        let mut recheck = WAIT_RECHECK_FIRST;
        tokio::pin!(until);
        let answer = loop {
            let next = (tokio::time::Instant::now() + recheck).min(deadline);
            tokio::select! {
                r = &mut rx => break r.ok(),
                _ = &mut until => break None,
                _ = tokio::time::sleep_until(next) => {
                    if next >= deadline {
                        break None;
                    }
                    if let Ok(t) = store.task(task.id).await {
                        if t.state.is_final() {
                            tracing::warn!(task_id = %t.id, "the finish was not pushed to this waiter; read from the store");
                            return Ok((t, true));
                        }
                    }
                    recheck = (recheck * 2).min(WAIT_RECHECK_MAX);
                }
            }
        };
        match answer {
            Some(t) if t.id == task.id => {
                self.pushed.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok((t, true))
            }
            _ => {
                let t = store.task(task.id).await?;
                let fin = t.state.is_final();
                Ok((t, fin))
            }
        }
    }

    pub(super) async fn close(self, store: &Store, bus: &Bus, task: Option<Uuid>) {
        bus.unregister(self.address);
        self.waiter.do_send(Dismiss);
        if let Some(id) = task {
            if !self.pushed.load(std::sync::atomic::Ordering::SeqCst) {
                if let Err(e) = store.remove_watcher(id, &self.watcher).await {
                    tracing::debug!(error = %e, "could not remove a watcher; it goes when the task finishes");
                }
            }
        }
    }
}

/// When a waiting caller first asks the store, in case the push of the
/// finish was lost; then twice as long each time, up to `WAIT_RECHECK_MAX`.
const WAIT_RECHECK_FIRST: Duration = Duration::from_secs(1);
const WAIT_RECHECK_MAX: Duration = Duration::from_secs(5);
