//! courier: a durable task runtime built as an actor system with
//! location-transparent executors.
//!
//! This facade re-exports the three layers:
//!
//! - [`bus`] (`courier-bus`): addresses, envelopes, the bus actor and its
//!   transports. Knows nothing of tasks.
//! - [`actors`] (`courier-actors`): the task, executor and waiter actors, the
//!   SQL store, the task-kind API and the [`Runtime`] that starts them.
//! - [`web`] (`courier-web`): the HTTP front end.
//!
//! The names an embedding program needs are also at the top level:
//!
//! ```no_run
//! use courier::{NewTask, Runtime, TaskContext, TaskError};
//! use serde_json::{json, Value};
//!
//! #[actix::main]
//! async fn main() -> Result<(), courier::Error> {
//!     let rt = Runtime::builder()
//!         .database("sqlite://courier.db")
//!         .register("greet", |ctx: TaskContext| async move {
//!             Ok::<Value, TaskError>(json!(format!("hello, {}", ctx.input())))
//!         })
//!         .start()
//!         .await?;
//!     let done = rt
//!         .client()
//!         .submit_and_wait(NewTask::new("greet", json!("world")), std::time::Duration::from_secs(5))
//!         .await?;
//!     println!("{:?}", done.task.output);
//!     rt.shutdown().await;
//!     Ok(())
//! }
//! ```

pub mod demo;

pub use courier_actors as actors;
pub use courier_bus as bus;
pub use courier_web as web;

pub use courier_actors::Retention;
pub use courier_actors::{
    AttemptError, CatchUp, Child, Client, Error, ExecutorConfig, ExecutorInfo, ExecutorState,
    HistoryEntry, IdPrefix, Msg, NewTask, QueueInfo, QueueUpdate, Registry, Result, Runtime,
    RuntimeBuilder, Schedule, ScheduleSpec, Step, Store, StoreOptions, Submitted, Task,
    TaskContext, TaskError, TaskEvent, TaskFilter, TaskKind, TaskOptions, TaskState, Waited,
};
pub use courier_bus::{Address, Envelope};

/// The README's code compiles (it is checked as a doctest).
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
