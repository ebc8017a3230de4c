//! The task protocol: the one message enum that travels on the bus.
//!
//! On a wire a message is the `body` of an [`Envelope`](courier_bus::Envelope),
//! as JSON tagged by `type`:
//!
//! | `type`          | to                          | means                                            |
//! |-----------------|-----------------------------|--------------------------------------------------|
//! | `start_task`    | `pool/<kind>`               | a pending task of this kind is committed; claim it |
//! | `task_finished` | a waiter, `task/<parent>`   | the task reached a final state (the whole task)    |
//! | `task_event`    | `task/<id>`                 | an event was committed to the task's inbox        |
//! | `cancel_task`   | `task/<id>`                 | cancellation was requested and committed          |
//! | `task_changed`  | stream watchers             | the task changed state (not final)                |
//! | `watch_task`    | `task/<id>`                 | send your state changes to this watcher too       |
//!
//! Every message announces something already committed to the database, so
//! any of them may be lost or duplicated without changing a task's fate:
//! receivers treat them as idempotent hints and the recovery sweep re-sends
//! what matters.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use courier_bus::{Address, BusHandle, Envelope, TraceParent};

use crate::model::Task;

/// A message of the task protocol.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Msg {
    /// Flow 1 and 4: start this pending task (sent to `pool/<kind>`).
    StartTask { task_id: Uuid, kind: String },
    /// Flow 2: the task is final (sent to its waiters and to its parent).
    TaskFinished { task: Box<Task> },
    /// Flow 3: an event for the task, already in its durable inbox.
    TaskEvent {
        task_id: Uuid,
        seq: i64,
        name: String,
        payload: Value,
    },
    /// Flow 3: cancellation of the task was requested (already committed).
    CancelTask { task_id: Uuid },
    /// A state change of a task that is not final (sent to watchers that
    /// follow every change; the end comes as `task_finished`).
    TaskChanged { task: Box<Task> },
    /// Asks the actor running a task to send its state changes to `watcher`
    /// (already recorded as a stream watcher in the store).
    WatchTask { task_id: Uuid, watcher: Address },
}

impl Msg {
    /// The task the message concerns.
    pub fn task_id(&self) -> Uuid {
        match self {
            Msg::StartTask { task_id, .. }
            | Msg::TaskEvent { task_id, .. }
            | Msg::CancelTask { task_id }
            | Msg::WatchTask { task_id, .. } => *task_id,
            Msg::TaskFinished { task } | Msg::TaskChanged { task } => task.id,
        }
    }
}

/// The bus as courier's actors use it.
pub type Bus = BusHandle<Msg>;

/// An envelope about a task, carrying the task's trace id and its id as the
/// correlation id.
pub fn envelope(from: Address, to: Address, trace_id: &str, body: Msg) -> Envelope<Msg> {
    let task = body.task_id();
    let tp = u128::from_str_radix(trace_id, 16)
        .map(TraceParent::in_trace)
        .unwrap_or_else(|_| TraceParent::new_root());
    Envelope::new(from, to, body).correlate(task).traced(tp)
}

/// A fresh trace id for a new top-level task (32 hex digits).
pub fn new_trace_id() -> String {
    TraceParent::new_root().trace_id_hex()
}

/// The pool address of a kind: where `start_task` for it goes.
pub fn pool_of(kind: &str) -> Address {
    // Kinds are validated as address segments when registered or submitted.
    Address::Pool(kind.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_is_tagged_snake_case() {
        let id = Uuid::now_v7();
        let m = Msg::TaskEvent {
            task_id: id,
            seq: 3,
            name: "booted".into(),
            payload: serde_json::json!({"ip": "10.0.0.5"}),
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["type"], "task_event");
        assert_eq!(v["seq"], 3);
        assert_eq!(serde_json::from_value::<Msg>(v).unwrap(), m);
        let c = serde_json::to_value(Msg::CancelTask { task_id: id }).unwrap();
        assert_eq!(c, serde_json::json!({"type": "cancel_task", "task_id": id}));
        assert!(serde_json::from_str::<Msg>(r#"{"type":"launch_missiles"}"#).is_err());
    }

    #[test]
    fn envelopes_carry_the_task_trace() {
        let trace = new_trace_id();
        let id = Uuid::now_v7();
        let env = envelope(
            Address::executor("e").unwrap(),
            Address::task(id),
            &trace,
            Msg::CancelTask { task_id: id },
        );
        assert_eq!(env.correlation_id, Some(id));
        assert_eq!(env.traceparent.unwrap().trace_id_hex(), trace);
    }
}
