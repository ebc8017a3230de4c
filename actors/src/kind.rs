//! Task kinds: the code an embedding program registers under a name.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;

use crate::context::TaskContext;
use crate::error::Error;

/// What a run returns: its output, or why it did not produce one.
pub type TaskResult = Result<Value, TaskError>;

/// The future a run is.
pub type TaskFuture = Pin<Box<dyn Future<Output = TaskResult> + Send + 'static>>;

/// How a run can end without output.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The task failed; the message is recorded as its `error`.
    #[error("{0}")]
    Failed(String),
    /// The run stopped because cancellation was requested.
    #[error("cancelled")]
    Cancelled,
    /// The executor lost ownership of the task (it was taken over); nothing
    /// the run does from now on is recorded.
    #[error("this executor no longer owns the task")]
    Fenced,
    /// The store or the runtime failed underneath the run (after retries).
    /// The task is handed back and runs again, not failed.
    #[error("runtime failure: {0}")]
    Interrupted(String),
}

impl TaskError {
    /// A failure with this message.
    pub fn failed(msg: impl fmt::Display) -> Self {
        TaskError::Failed(msg.to_string())
    }
}

impl From<Error> for TaskError {
    /// A lost ownership stops the run; a failure that may pass (database
    /// away, runtime stopping) interrupts it so the task runs again later;
    /// anything else fails the task, rather than retrying it forever.
    fn from(e: Error) -> Self {
        match e {
            Error::Fenced(_) => TaskError::Fenced,
            Error::Stopped => TaskError::Interrupted("the runtime is stopping".into()),
            e if e.is_transient() => TaskError::Interrupted(e.to_string()),
            other => TaskError::Failed(other.to_string()),
        }
    }
}

/// Code that runs tasks of one kind.
///
/// A run may be executed more than once: after its executor dies, or after
/// the process restarts, the task runs again from the start with a higher
/// [`attempt`](TaskContext::attempt). Everything done through the context is
/// replayed rather than repeated (sub-task `n` is the same sub-task, events
/// already received are received again at once), so a run that does its side
/// effects through sub-tasks and events is safe to repeat.
///
/// Closures `Fn(TaskContext) -> impl Future<Output = TaskResult>` are task kinds.
pub trait TaskKind: Send + Sync + 'static {
    /// Runs one task.
    fn run(&self, ctx: TaskContext) -> TaskFuture;
}

impl<F, Fut> TaskKind for F
where
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = TaskResult> + Send + 'static,
{
    fn run(&self, ctx: TaskContext) -> TaskFuture {
        Box::pin(self(ctx))
    }
}

/// Task kinds by name.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<String, Arc<dyn TaskKind>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.kinds.keys()).finish()
    }
}

/// Checks that a kind name can be used in addresses (`pool/<kind>`): 1 to
/// 128 ASCII letters, digits, `-`, `_`, `.` or `:`.
pub fn validate_kind_name(name: &str) -> Result<(), Error> {
    courier_bus::Address::pool(name).map(|_| ()).map_err(|_| {
        Error::Invalid(format!(
            "kind {name:?} must be 1 to 128 ASCII letters, digits, '-', '_', '.' or ':'"
        ))
    })
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `kind` under `name`, replacing any earlier registration.
    ///
    /// # Panics
    /// When `name` is not a valid kind name (see [`validate_kind_name`]): a
    /// programming error, found on the first run.
    pub fn register(&mut self, name: impl Into<String>, kind: impl TaskKind) -> &mut Self {
        let name = name.into();
        if let Err(e) = validate_kind_name(&name) {
            panic!("{e}");
        }
        self.kinds.insert(name, Arc::new(kind));
        self
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn TaskKind>> {
        self.kinds.get(name).cloned()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.kinds.contains_key(name)
    }

    /// A registry with only the named kinds of this one.
    pub fn only(&self, names: &[&str]) -> Registry {
        Registry {
            kinds: self
                .kinds
                .iter()
                .filter(|(k, _)| names.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.kinds.keys().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }
}
