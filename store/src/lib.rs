//! courier-store: the durable state of courier, and nothing else.
//!
//! What a task is ([`Task`], [`TaskState`], [`NewTask`], …), the options a
//! task is queued with ([`TaskOptions`]), and the one [`Store`] that keeps
//! them in SQLite or PostgreSQL through sqlx, with the migrations it owns
//! (`migrations/sqlite`, `migrations/postgres`, embedded in the binary).
//! It knows nothing of actors, messages or the bus.
//!
//! # Layout
//!
//! Every module is private; what callers need is re-exported here. From
//! the bottom up:
//!
//! - `error`: [`Error`], the store's typed error; the driver's own errors
//!   travel inside it opaque ([`DbError`]), so no sqlx type crosses this
//!   crate's boundary.
//! - `options`: [`TaskOptions`], the queue options of a task: checked,
//!   resolved ([`Resolved`]), and the retry backoff.
//! - `model`: tasks, events, history, executors, queues and schedules as
//!   stored and shown.
//! - `process`: a process's identity on its machine ([`ProcessIdentity`]).
//! - `sql`: [`Store`], a file per table it owns, and the catalogue of
//!   every SQL statement it sends (`sql/statements.rs`).

mod error;
mod model;
mod options;
mod process;
mod sql;

pub use error::{DbError, Error, Result};
pub use model::{
    now, refuse_nul, refuse_nul_text, validate_kind_name, AttemptError, CatchUp, ExecutorInfo,
    ExecutorState, HistoryEntry, IdPrefix, NewTask, QueueInfo, QueueUpdate, Schedule, ScheduleSpec,
    Step, Task, TaskEvent, TaskFilter, TaskState, UnknownExecutorState, UnknownState,
};
pub use options::{
    retry_delay, run_at_limit, validate_queue_name, Resolved, TaskOptions, DEFAULT_BACKOFF_MS,
    DEFAULT_QUEUE, MAX_ATTEMPTS, MAX_BACKOFF, MAX_DURATION_MS, PRIORITIES,
};
pub use process::{current_space, ProcessIdentity};
pub use sql::{
    within, BadRetention, Claimed, Dialect, ExecutorRegistration, Fence, Finished, Fired, Minute,
    Offer, Outcome, ReplayReads, Retention, Store, StoreOptions, Suspension, TaskInsert,
    UndeliveredEvent, Wait, THROUGHPUT_KEPT,
};
