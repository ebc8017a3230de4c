//! Flow 2, told from wherever a task ends: its executor, the sweep that
//! fails a poison task, a client that cancels a task nobody had claimed.

use std::time::Duration;

use courier_bus::Address;

use crate::model::Task;
use crate::protocol::{envelope, Bus, Msg};
use crate::store::{retry, Store};

/// Flow 2: tells everyone waiting for `task` (registered watchers, and the
/// parent) that it is final. The final state is committed before this runs.
/// `watchers`: already taken from the store with the final state, or `None`
/// to take them now.
pub(crate) async fn notify_finished(
    store: &Store,
    bus: &Bus,
    from: Address,
    task: &Task,
    watchers: Option<Vec<String>>,
) {
    let watchers = match watchers {
        Some(w) => w,
        None => match retry("reading watchers", Duration::from_secs(30), || {
            store.take_watchers(task.id)
        })
        .await
        {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the task's watchers; they will time out");
                Vec::new()
            }
        },
    };
    tracing::debug!(task_id = %task.id, state = %task.state, ?watchers, "telling watchers and parent");
    let msg = Msg::TaskFinished {
        task: Box::new(task.clone()),
    };
    for w in watchers {
        match w.parse::<Address>() {
            Ok(to) => bus.tell(envelope(from.clone(), to, &task.trace_id, msg.clone())),
            Err(e) => tracing::warn!(watcher = %w, error = %e, "invalid watcher address"),
        }
    }
    if let Some(parent) = task.parent_id {
        bus.tell(envelope(from, Address::task(parent), &task.trace_id, msg));
    }
}
