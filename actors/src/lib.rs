//! courier-actors: the task runtime proper, over courier-store (the model
//! and the SQL store) and courier-bus (addresses and transports).
//!
//! # Layout
//!
//! Modules are listed from the bottom up: each uses only those above it in
//! this list, and courier-store. Public are only those used from outside
//! ([`protocol`], [`metrics`], [`creation`], [`schedule`]); the rest is
//! private, and what callers need is re-exported here, the store's types
//! included.
//!
//! - `error`: the typed [`Error`] of the runtime and the store (a
//!   [`StoreError`] converts into the same variant), and [`TaskError`], how
//!   a run ends without output.
//! - `decide`: the one decision at a run's end, a pure function: from how
//!   a run ended and the task's options, whether the task succeeds, is
//!   retried at a time, fails, suspends, is handed back, or nothing is
//!   written; used by the task actor and the worker protocol alike.
//! - [`protocol`]: [`Msg`], the one message enum of the task protocol that
//!   travels on the bus (`start_task`, `task_finished`, `task_event`,
//!   `cancel_task`, …).
//! - [`metrics`]: process-wide counters for the Prometheus endpoint.
//! - `calls`: how actors call the store: each call a task of its own
//!   (`detached`), retried while its failure may pass (`retry`).
//! - [`creation`]: what every way of creating a task shares: checks, the
//!   kind's defaults, the row to insert.
//! - [`schedule`]: recurring schedules: cron expressions, which slots are
//!   due, and firing them (leaderless: a slot's task and the schedule's
//!   advance commit together).
//! - `notify`: flow 2 (`task_finished` to watchers and parent), from
//!   wherever a task ends.
//! - `task`: the task actor, one per running task, owner of its bus
//!   address; beside it `task::context` ([`TaskContext`], what a run
//!   sees), `task::kind` ([`TaskKind`] and the [`Registry`]) and
//!   `task::signals` (what a task actor and its executor tell each other),
//!   and `task::runs`, the thread pool (one per core) the kinds' code runs on.
//! - `executor`: the executor actor: claims tasks and runs them, and keeps
//!   its identity, its heartbeat and the recovery sweep.
//! - `client`: [`Client`] (create, wait for, follow, signal and cancel
//!   tasks) with its waiters and watches.
//! - `runtime`: [`Runtime`]: start and stop it all in a process.

mod calls;
mod client;
pub mod creation;
mod decide;
mod error;
mod executor;
pub mod metrics;
mod notify;
pub mod protocol;
mod runtime;
pub mod schedule;
mod task;
pub mod workers;

pub use client::watch::TaskWatch;
pub use client::{Client, Submitted, Waited, MAX_BATCH};
/// The store's own error (a model's check, a store call), which converts
/// into [`Error`] variant for variant.
pub use courier_store::Error as StoreError;
pub use courier_store::{
    now, validate_queue_name, AttemptError, CatchUp, DbError, ExecutorInfo, ExecutorState,
    HistoryEntry, IdPrefix, NewTask, QueueInfo, QueueUpdate, Retention, Schedule, ScheduleSpec,
    Step, Store, StoreOptions, Task, TaskEvent, TaskFilter, TaskOptions, TaskState,
};
pub use error::{Error, Result, TaskError};
pub use executor::{ExecutorConfig, ReplayCacheConfig};
pub use protocol::Msg;
pub use runtime::{Runtime, RuntimeBuilder};
pub use task::context::{Child, TaskContext};
pub use task::kind::{Registry, TaskKind};
