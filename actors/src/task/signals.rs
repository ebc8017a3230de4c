//! The messages between an executor and the task actors it runs (the task
//! side defines them, the executor handles them, so neither module needs the
//! other's insides), and between a run and its task actor.

use actix::prelude::*;
use uuid::Uuid;

/// Sent to the executor as a task actor's run ends, and again when the
/// actor stops.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct TaskDone {
    pub task_id: Uuid,
    pub stage: Stage,
}

/// How far a task actor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The run's code has returned and its end is being written: the slot
    /// it ran in may take another run (the write still counts against the
    /// executor's backlog of ends, see the executor's `room`).
    Ran,
    /// The actor has stopped.
    Stopped,
}

/// Stops the run without finishing the task: handed back to `pending` for
/// another executor (`hand_back: true`, a clean stop), or just dropped
/// (`false`: the executor lost the task, or a crash is being simulated).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Abort {
    pub hand_back: bool,
}

/// From a run to its own task actor: the run waits for something that has
/// not come, so suspend the task (the run is dropped: the task waits in the
/// database, not in memory) or, if it came meanwhile, run it again.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Suspend(pub courier_store::Wait);
