//! [`Error`], what the store and the model's checks can answer instead of a
//! result. The driver's own errors are carried inside [`DbError`], opaque:
//! no sqlx type crosses this crate's boundary.

use uuid::Uuid;

/// What can go wrong when using the store, or when a model's value is
/// checked.
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
    /// A field of a request has a value that is refused; `message` says
    /// what is accepted.
    #[error("{message}")]
    InvalidField { field: String, message: String },
    /// A row held a value this build does not understand.
    #[error("unexpected value in the database: {0}")]
    Corrupt(String),
    /// This executor no longer owns the task (its ownership epoch has passed).
    #[error("task {0} is no longer owned by this executor")]
    Fenced(Uuid),
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

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Database(DbError(Inner::Sqlx(e)))
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Error::Migrate(DbError(Inner::Migrate(e)))
    }
}

/// The database driver's error, opaque: its text (for logs) and whether
/// it may pass by itself.
#[derive(Debug)]
pub struct DbError(Inner);

#[derive(Debug)]
enum Inner {
    Sqlx(sqlx::Error),
    Migrate(sqlx::migrate::MigrateError),
}

impl DbError {
    /// True for failures that may pass by themselves: see
    /// [`Error::is_transient`].
    pub fn is_transient(&self) -> bool {
        match &self.0 {
            Inner::Sqlx(e) => is_transient_sqlx(e),
            Inner::Migrate(_) => false,
        }
    }
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Inner::Sqlx(e) => e.fmt(f),
            Inner::Migrate(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for DbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0 {
            Inner::Sqlx(e) => e.source(),
            Inner::Migrate(e) => e.source(),
        }
    }
}

fn is_transient_sqlx(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // SQLite: BUSY (5) and its extended codes, LOCKED (6).
            // PostgreSQL: connection exceptions (08…), serialization failure,
            // deadlock, and the server shutting down (57P01..57P03).
            code == "5"
                || code == "6"
                || code == "517"
                || code == "261"
                || code.starts_with("08")
                || code == "40001"
                || code == "40P01"
                || code.starts_with("57P0")
        }
        _ => false,
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
