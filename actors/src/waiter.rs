//! Web sessions: short-lived actors that own a `web/<node>/<session>`
//! address while something (an HTTP request, an embedding program) waits for
//! one task to finish ([`Waiter`]) or follows its every state change
//! ([`Follower`]). The executor's messages reach them by bus sends: pushed,
//! never polled.

use actix::prelude::*;
use tokio::sync::oneshot;
use uuid::Uuid;

use courier_bus::Deliver;

use crate::model::Task;
use crate::protocol::Msg;

pub(crate) struct Waiter {
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
pub(crate) struct WaitFor(pub Uuid);

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
pub(crate) struct Dismiss;

impl Handler<Dismiss> for Waiter {
    type Result = ();
    fn handle(&mut self, _: Dismiss, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// A follower: the actor behind [`TaskWatch`](crate::runtime::TaskWatch). It
/// forwards every `task_changed` and the final `task_finished` of one task
/// into a channel, and stops after the final one.
pub(crate) struct Follower {
    pub task_id: Uuid,
    pub tx: tokio::sync::mpsc::UnboundedSender<Task>,
}

impl Actor for Follower {
    type Context = Context<Self>;
}

impl Handler<Deliver<Msg>> for Follower {
    type Result = ();

    fn handle(&mut self, Deliver(env): Deliver<Msg>, ctx: &mut Self::Context) {
        match env.body {
            Msg::TaskChanged { task } | Msg::TaskFinished { task } if task.id == self.task_id => {
                let last = task.state.is_final();
                if self.tx.send(*task).is_err() || last {
                    ctx.stop();
                }
            }
            _ => {}
        }
    }
}

impl Handler<Dismiss> for Follower {
    type Result = ();
    fn handle(&mut self, _: Dismiss, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
