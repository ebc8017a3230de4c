//! The task protocol: the one message enum that travels on the bus.
//!
//! On a wire a message is the `body` of an [`Envelope`],
//! as JSON tagged by `type`:
//!
//! | `type`          | to                          | means                                            |
//! |-----------------|-----------------------------|--------------------------------------------------|
//! | `start_task`    | `pool/<queue>`              | a task of this queue is pending; claim from the queue |
//! | `task_scheduled`| `pool/<queue>`              | a task of this queue waits until `run_at`          |
//! | `queue_changed` | `pool/<queue>`              | the queue may start more now (resumed, a limit raised, sub-tasks a suspension held locked) |
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

use courier_store::Task;

/// A message of the task protocol.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Msg {
    /// Flow 1 and 4: this task is pending in `queue` (sent to
    /// `pool/<queue>`). The executor that gets it claims from the queue,
    /// highest priority first and within the queue's limits: the named
    /// task, or others that should start before it.
    StartTask {
        task_id: Uuid,
        kind: String,
        /// Absent in messages of builds before queues: the default queue.
        #[serde(default = "default_queue")]
        queue: String,
        /// How many members of the pool passed it on because they run no
        /// task of its kind (see [`pass_on_foreign`]).
        #[serde(default, skip_serializing_if = "is_zero")]
        passed: u8,
    },
    /// More of a queue's tasks may start: its settings changed (resumed,
    /// a limit raised). The executor that gets it pulls, and looks at the
    /// queue's limits again.
    QueueChanged { queue: String },
    /// This task waits in `queue` until `run_at` (a delayed start, or a
    /// retry's backoff): the executor that gets it keeps a timer for it.
    TaskScheduled {
        task_id: Uuid,
        queue: String,
        run_at: chrono::DateTime<chrono::Utc>,
    },
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
    /// The task the message concerns (the nil id for `queue_changed`).
    pub fn task_id(&self) -> Uuid {
        match self {
            Msg::QueueChanged { .. } => Uuid::nil(),
            Msg::StartTask { task_id, .. }
            | Msg::TaskScheduled { task_id, .. }
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

fn default_queue() -> String {
    courier_store::DEFAULT_QUEUE.to_string()
}

/// The pool address of a queue: where `start_task` for its tasks goes, and
/// what the executors that serve it join.
pub fn pool_of(queue: &str) -> Address {
    // Queue names are validated (a subset of address segments) when given.
    Address::Pool(queue.to_string())
}

/// `start_task` for `task`, to its queue's pool.
pub fn start_task(from: Address, task: &Task) -> Envelope<Msg> {
    envelope(
        from,
        pool_of(&task.queue),
        &task.trace_id,
        Msg::StartTask {
            task_id: task.id,
            kind: task.kind.clone(),
            queue: task.queue.clone(),
            passed: 0,
        },
    )
}

/// How many times a `start_task` goes round its pool looking for a member
/// that runs its kind.
pub const MAX_PASSES: u8 = 4;

/// A `start_task` that reached a member of its queue's pool which runs no
/// task of its kind (a Rust executor and a Python worker's web node serve
/// one queue; two executors with different kinds do): the same hint to the
/// pool once more, from `from`, so that the next member (the round robin
/// of the pool, or another process) gets it, at most [`MAX_PASSES`] times.
/// `None` when it went round enough (no member that got it runs the kind:
/// the task waits for a claim, which every member makes when it has room,
/// at least every few seconds). Without this the hint was settled where it
/// landed and the task waited for that look at the store: a p90 of 2 s for
/// every task of a queue that Rust and Python served together (issue 26).
pub fn pass_on_foreign(from: Address, env: &Envelope<Msg>) -> Option<Envelope<Msg>> {
    let Msg::StartTask {
        task_id,
        kind,
        queue,
        passed,
    } = &env.body
    else {
        return None;
    };
    if *passed >= MAX_PASSES {
        return None;
    }
    let body = Msg::StartTask {
        task_id: *task_id,
        kind: kind.clone(),
        queue: queue.clone(),
        passed: passed + 1,
    };
    let again = Envelope::new(from, env.to.clone(), body).correlate(*task_id);
    Some(match env.traceparent {
        Some(tp) => again.traced(tp),
        None => again,
    })
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

/// What tells the executors of `task`'s queue that it was committed: a
/// `start_task` when it may start now, a `task_scheduled` when it waits for
/// its `run_at` (a delay, a retry's backoff, a durable timer); `None` for a
/// task in any other state.
pub fn announce(from: Address, task: &Task) -> Option<Envelope<Msg>> {
    match (task.state, task.run_at) {
        (courier_store::TaskState::Pending, _) => Some(start_task(from, task)),
        (
            courier_store::TaskState::Scheduled | courier_store::TaskState::Suspended,
            Some(run_at),
        ) => Some(envelope(
            from,
            pool_of(&task.queue),
            &task.trace_id,
            Msg::TaskScheduled {
                task_id: task.id,
                queue: task.queue.clone(),
                run_at,
            },
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_for_a_kind_run_elsewhere_goes_round_its_pool_a_few_times() {
        let id = Uuid::now_v7();
        let me = Address::pool("me").unwrap();
        let first = Envelope::new(
            Address::pool("web").unwrap(),
            pool_of("shared"),
            Msg::StartTask {
                task_id: id,
                kind: "py.provision".into(),
                queue: "shared".into(),
                passed: 0,
            },
        );
        // The wire form of a hint never passed on is as before.
        assert!(serde_json::to_value(&first.body)
            .unwrap()
            .get("passed")
            .is_none());
        let mut hint = first;
        for n in 1..=MAX_PASSES {
            let again = pass_on_foreign(me.clone(), &hint).expect("passed on");
            assert_eq!(again.to, pool_of("shared"), "to the same pool");
            assert_eq!(again.from, me);
            assert_eq!(again.correlation_id, Some(id));
            assert_ne!(again.id, hint.id, "a new message, not a duplicate to drop");
            match &again.body {
                Msg::StartTask { passed, kind, .. } => {
                    assert_eq!(*passed, n);
                    assert_eq!(kind, "py.provision");
                }
                other => panic!("{other:?}"),
            }
            hint = again;
        }
        assert!(
            pass_on_foreign(me.clone(), &hint).is_none(),
            "it stops going round"
        );
        let changed = Envelope::new(
            me.clone(),
            pool_of("shared"),
            Msg::QueueChanged {
                queue: "shared".into(),
            },
        );
        assert!(
            pass_on_foreign(me, &changed).is_none(),
            "only a start is passed on"
        );
    }

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
        // A start_task of a build before queues goes to the default queue.
        let old = serde_json::json!({"type": "start_task", "task_id": id, "kind": "k"});
        match serde_json::from_value::<Msg>(old).unwrap() {
            Msg::StartTask { queue, .. } => assert_eq!(queue, "default"),
            other => panic!("{other:?}"),
        }
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
