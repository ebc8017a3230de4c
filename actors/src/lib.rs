//! courier-actors: the task runtime proper.
//!
//! # Layout
//!
//! Modules are listed from the bottom up: each uses only those above it in
//! this list.
//!
//! - [`error`]: the typed [`Error`] of the runtime and the store, and
//!   [`TaskError`], how a run ends without output.
//! - [`options`]: [`TaskOptions`], the queue options of a task (queue,
//!   priority, delay, retries, timeout): checked, resolved, and the retry
//!   backoff.
//! - [`model`]: tasks, events, history and executors as stored and shown.
//! - [`protocol`]: [`Msg`], the one message enum of the task protocol that
//!   travels on the bus (`start_task`, `task_finished`, `task_event`,
//!   `cancel_task`, …).
//! - [`process`]: a process's identity on its machine (pid namespace, start
//!   time), so a dead executor on the same host is seen without a timeout.
//! - [`metrics`]: process-wide counters for the Prometheus endpoint.
//! - [`store`]: durable state in SQL (SQLite or PostgreSQL) through sqlx, a
//!   file per table, with fenced writes and the migrators.
//! - [`creation`]: what every way of creating a task shares: checks, the
//!   kind's defaults, the row to insert.
//! - [`schedule`]: recurring schedules: cron expressions, which slots are
//!   due, and firing them (leaderless: a slot's task and the schedule's
//!   advance commit together).
//! - [`notify`]: flow 2 (`task_finished` to watchers and parent), from
//!   wherever a task ends.
//! - [`task`]: the task actor, one per running task, owner of its bus
//!   address; beside it [`task::context`] ([`TaskContext`], what a run
//!   sees), [`task::kind`] ([`TaskKind`] and the [`Registry`]) and
//!   [`task::signals`] (what a task actor and its executor tell each other),
//!   and `task::runs`, the thread pool (one per core) the kinds' code runs on.
//! - [`executor`]: the executor actor: claims tasks and runs them, and keeps
//!   its identity, its heartbeat and the recovery sweep.
//! - [`client`]: [`Client`] (create, wait for, follow, signal and cancel
//!   tasks) with its waiters and watches.
//! - [`runtime`]: [`Runtime`]: start and stop it all in a process.

pub mod client;
pub mod creation;
pub mod error;
pub mod executor;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod options;
pub mod process;
pub mod protocol;
pub mod runtime;
pub mod schedule;
pub mod store;
pub mod task;
pub mod workers;

pub use client::watch::TaskWatch;
pub use client::{Client, Submitted, Waited};
pub use error::{Error, Result, TaskError};
pub use executor::ExecutorConfig;
pub use model::{
    AttemptError, CatchUp, ExecutorInfo, ExecutorState, HistoryEntry, IdPrefix, NewTask, QueueInfo,
    QueueUpdate, Schedule, ScheduleSpec, Step, Task, TaskEvent, TaskFilter, TaskState,
};
pub use options::TaskOptions;
pub use protocol::Msg;
pub use runtime::{Runtime, RuntimeBuilder};
pub use store::{Store, StoreOptions};
pub use task::context::{Child, TaskContext};
pub use task::kind::{Registry, TaskKind};
