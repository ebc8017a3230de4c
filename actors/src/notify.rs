//! What a task's end or cancellation tells others, from wherever it
//! happens: flow 2 (`task_finished` to watchers and parent) from its
//! executor, the sweep that fails a poison task, or a client that cancels a
//! task nobody had claimed; and flow 3's cancellation of a whole task tree,
//! from a client or from an attempt that timed out.

use std::time::Duration;

use courier_bus::Address;

use uuid::Uuid;

use crate::calls::retry;
use crate::error::Result;
use crate::protocol::{envelope, start_task, Bus, Msg};
use courier_store::Store;
use courier_store::{Task, TaskState};

/// Tells `task`'s stream watchers (an SSE `watch`, a
/// [`TaskWatch`](crate::runtime::TaskWatch)) its new state, for a change
/// made where no task actor holds it (a running task's actor tells them
/// itself). Nothing for a task nobody follows (`watched` is false).
pub(crate) async fn tell_followers(store: &Store, bus: &Bus, from: &Address, task: &Task) {
    if !task.watched {
        return;
    }
    let watchers = match store.stream_watchers(task.id).await {
        Ok(w) => w,
        Err(e) => {
            // Its next change (the claim) reaches them from its actor.
            tracing::debug!(task_id = %task.id, error = %e, "could not read the task's followers");
            return;
        }
    };
    let msg = Msg::TaskChanged {
        task: Box::new(task.clone()),
    };
    tell_watchers(bus, from, &watchers, &task.trace_id, msg).await;
}

/// Sends `msg` about a task (of trace `trace_id`) to each of `watchers`,
/// addresses as the store keeps them.
async fn tell_watchers(bus: &Bus, from: &Address, watchers: &[String], trace_id: &str, msg: Msg) {
    for w in watchers {
        match w.parse::<Address>() {
            Ok(to) => {
                bus.post(envelope(from.clone(), to, trace_id, msg.clone()))
                    .await
            }
            Err(e) => tracing::warn!(watcher = %w, error = %e, "invalid watcher address"),
        }
    }
}

/// A task woken to `pending` (committed): its followers hear that it is
/// pending, then its queue's executors that it may start (so the state
/// reaches them before its claim's).
pub(crate) async fn notify_woken(store: &Store, bus: &Bus, from: Address, task: &Task) {
    tell_followers(store, bus, &from, task).await;
    bus.post(start_task(from, task)).await;
}

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
    tell_watchers(bus, &from, &watchers, &task.trace_id, msg.clone()).await;
    if let Some(parent) = task.parent_id {
        bus.post(envelope(from, Address::task(parent), &task.trace_id, msg))
            .await;
    }
}

/// Cancels the unfinished descendants of `root` (and `root` itself, with
/// `include_root`), on behalf of `by`: a task no executor holds is cancelled
/// at once and its watchers told (and its parent woken if that waited for
/// it); a suspended one is woken to see the cancel in its replay; a running
/// one gets `cancel_requested` committed and a `cancel_task` sent to wherever
/// it runs.
pub(crate) async fn cancel_tree(
    store: &Store,
    bus: &Bus,
    from: Address,
    by: &str,
    root: Uuid,
    include_root: bool,
) -> Result<()> {
    let mut all = Vec::new();
    if include_root {
        all.push(store.task(root).await?);
    }
    all.extend(store.open_descendants(root).await?);
    for t in all.iter().filter(|t| !t.state.is_final()) {
        if let Some((done, woken)) = store.cancel_unclaimed(t.id, by).await? {
            notify_finished(store, bus, from.clone(), &done, None).await;
            if let Some(parent) = woken {
                notify_woken(store, bus, from.clone(), &parent).await;
            }
            continue;
        }
        let now = retry("requesting cancellation", Duration::from_secs(10), || {
            store.request_cancel(t.id)
        })
        .await?;
        if now.state == TaskState::Pending {
            // It was suspended: woken, its replay sees the cancel.
            notify_woken(store, bus, from.clone(), &now).await;
        } else if !now.state.is_final() {
            bus.post(envelope(
                from.clone(),
                Address::task(t.id),
                &t.trace_id,
                Msg::CancelTask { task_id: t.id },
            ))
            .await;
        }
    }
    Ok(())
}
