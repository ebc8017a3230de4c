//! Typed errors: [`Error`] of the runtime and the store, and [`TaskError`],
//! how a run ends without output.

use uuid::Uuid;

use courier_bus::BusError;
use courier_store::DbError;

/// What can go wrong when using the runtime, its client or its store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database refused or failed a statement, or could not be reached.
    #[error("database error: {0}")]
    Database(DbError),
    /// Applying the migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(DbError),
    /// The database URL names no supported database.
    #[error(
        "unsupported database URL {0:?}: expected sqlite://PATH or postgres://USER@HOST:PORT/DB"
    )]
    UnsupportedUrl(String),
    /// No task has this id.
    #[error("task {0} not found")]
    NotFound(Uuid),
    /// No schedule has this name.
    #[error("no schedule named {0:?}")]
    NoSchedule(String),
    /// The request conflicts with the task's state (e.g. an event for a finished task).
    #[error("{0}")]
    Conflict(String),
    /// A setting is invalid (e.g. a node name that cannot be an address).
    #[error("invalid setting: {0}")]
    Invalid(String),
    /// A field of a request has a value that is refused; `message` says
    /// what is accepted.
    #[error("{message}")]
    InvalidField { field: String, message: String },
    /// Entry `index` of a batch was refused; nothing of the batch was kept.
    #[error("entry {index} of the batch: {error}")]
    InBatch { index: usize, error: Box<Error> },
    /// No executor runs this kind of task.
    #[error("unknown task kind {0:?}")]
    UnknownKind(String),
    /// A row held a value this build does not understand.
    #[error("unexpected value in the database: {0}")]
    Corrupt(String),
    /// This executor no longer owns the task (its ownership epoch has passed).
    #[error("task {0} is no longer owned by this executor")]
    Fenced(Uuid),
    /// The bus refused the message.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// A transport could not start (e.g. its socket could not be bound).
    #[error("transport {transport}: {message}")]
    Transport {
        transport: &'static str,
        message: String,
    },
    /// The runtime is shutting down.
    #[error("the runtime has stopped")]
    Stopped,
    /// A worker (protocol) that is known but not alive: declared dead or
    /// stopped. It must stop its runs and register again.
    #[error("{0}")]
    WorkerGone(String),
    /// No worker (protocol) has this id: never registered, its row deleted
    /// by retention, or the id of a Rust executor. It must register.
    #[error("no worker {0}: register")]
    NoWorker(String),
}

impl Error {
    /// An [`Error::InvalidField`].
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }

    /// True for failures that may pass by themselves (a dropped connection, a
    /// busy database, a server restarting): worth retrying with backoff.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Database(e) => e.is_transient(),
            _ => false,
        }
    }
}

impl From<courier_store::Error> for Error {
    /// The store's error as the same variant of this one.
    fn from(e: courier_store::Error) -> Self {
        use courier_store::Error as S;
        match e {
            S::Database(e) => Error::Database(e),
            S::Migrate(e) => Error::Migrate(e),
            S::UnsupportedUrl(url) => Error::UnsupportedUrl(url),
            S::NotFound(id) => Error::NotFound(id),
            S::NoSchedule(name) => Error::NoSchedule(name),
            S::Conflict(m) => Error::Conflict(m),
            S::InvalidField { field, message } => Error::InvalidField { field, message },
            S::Corrupt(m) => Error::Corrupt(m),
            S::Fenced(id) => Error::Fenced(id),
            // The store's error is non-exhaustive: a variant added there
            // and not yet here is shown as it is.
            other => Error::Corrupt(other.to_string()),
        }
    }
}

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
    pub fn failed(msg: impl std::fmt::Display) -> Self {
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

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
