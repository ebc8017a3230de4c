//! The messages between an executor and the task actors it runs: the task
//! side defines them, the executor handles them, so neither module needs the
//! other's insides.

use actix::prelude::*;
use uuid::Uuid;

/// Sent to the executor when a task actor stops.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct TaskDone {
    pub task_id: Uuid,
}

/// Stops the run without finishing the task: handed back to `pending` for
/// another executor (`hand_back: true`, a clean stop), or just dropped
/// (`false`: the executor lost the task, or a crash is being simulated).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Abort {
    pub hand_back: bool,
}

/// A run parked (`true`: its task is suspended) or resumed.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Parked {
    pub task_id: Uuid,
    pub parked: bool,
}
