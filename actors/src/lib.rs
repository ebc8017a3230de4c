//! courier-actors: the task runtime proper.
//!
//! # Layout
//!
//! - [`protocol`]: [`Msg`], the one message enum of the task protocol that
//!   travels on the bus (`start_task`, `task_finished`, `task_event`,
//!   `cancel_task`).
//! - [`model`]: tasks, events, history and executors as stored and shown.
//! - [`store`]: durable state in SQL (SQLite or PostgreSQL) through sqlx,
//!   with fenced writes and the migrators.
//! - [`kind`]: the [`TaskKind`] trait that embedding programs implement, and
//!   the [`Registry`] of kinds by name.
//! - [`context`]: [`TaskContext`], what a run sees: input, attempt, events,
//!   sub-tasks, cancellation, progress.
//! - [`task`]: the task actor, one per running task, owner of its bus address.
//! - [`executor`]: the executor actor: claims tasks, runs them, heartbeats,
//!   sweeps for anything a lost message left behind, takes over dead executors.
//! - [`waiter`]: a short-lived actor that waits on the bus for a task to finish.
//! - [`process`]: a process's identity on its machine (pid namespace, start
//!   time), so a dead executor on the same host is seen without a timeout.
//! - [`metrics`]: process-wide counters for the Prometheus endpoint.
//! - [`runtime`]: [`Runtime`] (start and stop it all) and [`Client`] (create,
//!   wait for, signal and cancel tasks).
//! - [`error`]: the typed [`Error`].

pub mod context;
pub mod error;
pub mod executor;
pub mod kind;
pub mod metrics;
pub mod model;
pub mod process;
pub mod protocol;
pub mod runtime;
pub mod store;
pub mod task;
pub mod waiter;

pub use context::{Child, TaskContext};
pub use error::{Error, Result};
pub use executor::ExecutorConfig;
pub use kind::{Registry, TaskError, TaskKind};
pub use model::{
    ExecutorInfo, ExecutorState, HistoryEntry, NewTask, Task, TaskEvent, TaskFilter, TaskState,
};
pub use protocol::Msg;
pub use runtime::{Client, Runtime, RuntimeBuilder, Submitted, TaskWatch, Waited};
pub use store::{Store, StoreOptions};
