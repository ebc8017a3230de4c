//! Following a task: [`TaskWatch`] yields its every state change, pushed
//! by its executor to a `Follower` actor at `web/<node>/<session>`.

use actix::prelude::*;
use uuid::Uuid;

use courier_bus::{Address, Deliver};

use super::wait::Dismiss;
use crate::error::Result;
use crate::protocol::{envelope, Bus, Msg};
use courier_store::Store;
use courier_store::Task;

/// A stream of one task's states; see [`Client::watch`](super::Client::watch). Dropping it ends
/// the watch.
pub struct TaskWatch {
    task_id: Uuid,
    store: Store,
    bus: Bus,
    address: Address,
    follower: Addr<Follower>,
    rx: tokio::sync::mpsc::UnboundedReceiver<Task>,
    first: Option<Task>,
    /// What was yielded last, to drop repeats.
    last: Option<(courier_store::TaskState, chrono::DateTime<chrono::Utc>)>,
    done: bool,
}

impl TaskWatch {
    /// Registers a follower for task `id` at a fresh `web/<node>/<session>`
    /// and records it as a stream watcher; `me` is the sender of the
    /// `watch_task` that tells a task running now.
    pub(super) async fn open(
        store: &Store,
        bus: &Bus,
        node: &str,
        me: Address,
        id: Uuid,
    ) -> Result<TaskWatch> {
        let address = Address::Web {
            node: node.to_string(),
            session: Uuid::now_v7().simple().to_string(),
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let follower = Follower { task_id: id, tx }.start();
        bus.register(address.clone(), follower.clone().recipient())
            .await?;
        let mut watch = TaskWatch {
            task_id: id,
            store: store.clone(),
            bus: bus.clone(),
            address: address.clone(),
            follower,
            rx,
            first: None,
            last: None,
            done: false,
        };
        let now = store.watch(id, &address.to_string(), true).await?;
        if !now.state.is_final() {
            // If the task runs now, its actor adds us; if it starts later, it
            // finds us in the store.
            bus.tell(envelope(
                me,
                Address::task(id),
                &now.trace_id,
                Msg::WatchTask {
                    task_id: id,
                    watcher: address,
                },
            ));
        }
        watch.first = Some(now);
        Ok(watch)
    }

    /// The next state of the task, or `None` after the final one.
    pub async fn next(&mut self) -> Option<Task> {
        loop {
            if self.done {
                return None;
            }
            let t = match self.first.take() {
                Some(t) => t,
                None => self.rx.recv().await?,
            };
            let key = (t.state, t.updated_at);
            // A repeat, or a snapshot older than the last one yielded (two
            // senders' messages may cross: the waker's `pending` and the
            // claiming executor's `running`).
            if self
                .last
                .is_some_and(|(s, at)| at > t.updated_at || (s == t.state && at >= t.updated_at))
            {
                continue;
            }
            self.last = Some(key);
            self.done = t.state.is_final();
            return Some(t);
        }
    }
}

impl Drop for TaskWatch {
    fn drop(&mut self) {
        self.bus.unregister(self.address.clone());
        self.follower.do_send(Dismiss);
        if !self.done {
            let store = self.store.clone();
            let watcher = self.address.to_string();
            let id = self.task_id;
            actix::spawn(async move {
                let _ = store.remove_watcher(id, &watcher).await;
            });
        }
    }
}

/// A follower: the actor behind [`TaskWatch`](crate::runtime::TaskWatch). It
/// forwards every `task_changed` and the final `task_finished` of one task
/// into a channel, and stops after the final one.
pub(super) struct Follower {
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
