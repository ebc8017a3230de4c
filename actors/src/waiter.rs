//! The waiter: a short-lived actor that owns a `web/<node>/<session>`
//! address while something (an HTTP request, an embedding program) waits for
//! one task to finish. The executor's `task_finished` reaches it by a bus
//! send: pushed, never polled.

use actix::prelude::*;
use tokio::sync::oneshot;
use uuid::Uuid;

use courier_bus::Deliver;

use crate::model::Task;
use crate::protocol::Msg;

pub(crate) struct Waiter {
    pub task_id: Uuid,
    pub reply: Option<oneshot::Sender<Task>>,
}

impl Actor for Waiter {
    type Context = Context<Self>;
}

impl Handler<Deliver<Msg>> for Waiter {
    type Result = ();

    fn handle(&mut self, Deliver(env): Deliver<Msg>, ctx: &mut Self::Context) {
        if let Msg::TaskFinished { task } = env.body {
            if task.id == self.task_id {
                if let Some(tx) = self.reply.take() {
                    let _ = tx.send(*task);
                }
                ctx.stop();
            }
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
