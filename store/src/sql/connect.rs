//! Opening a store: the only dialect-specific set-up.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
#[cfg(feature = "postgres")]
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
#[cfg(feature = "sqlite")]
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::{Db, Store};
use crate::error::{Error, Result};

// The two sequences are numbered independently: a file goes into one
// dialect's folder when only that dialect needs it (PostgreSQL has 15,
// SQLite 13), so equal version numbers do not mean equal schemas, and
// `sqlite/0007_bus.sql`'s comment that it "keeps the two migration
// sequences in step" is no longer true. The comment stays: sqlx checks
// each applied migration's checksum, and editing a file that databases
// have applied would make them refuse to migrate. What is kept in step is
// the tables and columns (the store's tests run on both databases).

/// The SQLite migrations (`migrations/sqlite`), embedded in the binary.
#[cfg(feature = "sqlite")]
pub(super) static MIGRATOR_SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
/// The PostgreSQL migrations (`migrations/postgres`), embedded in the binary.
#[cfg(feature = "postgres")]
pub(super) static MIGRATOR_POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

/// Connection settings beyond the URL.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Pool size; default 10 for PostgreSQL, 8 for a SQLite file.
    pub max_connections: Option<u32>,
    /// PostgreSQL only: the schema to create tables in and search first
    /// (tests give each run its own schema in one database).
    pub pg_schema: Option<String>,
    /// How long to wait for a free connection before failing.
    pub acquire_timeout: Duration,
    /// PostgreSQL only: the server ends a session that stays this long
    /// inside a transaction without sending its next statement
    /// (`idle_in_transaction_session_timeout`). courier's transactions take
    /// milliseconds; a session idle in one belongs to a process that froze
    /// (SIGSTOP, a paused VM) or lost its network mid-transaction, and its
    /// row locks would hold up the takeover of its tasks until it came
    /// back. Default 2 s: less than the fastest `dead_after` (3 s), so the
    /// locks are gone before anyone declares the process dead. `None`
    /// leaves the server's setting.
    pub pg_idle_in_transaction_timeout: Option<Duration>,
    /// The deadline of every database call, waiting for a connection
    /// included: a call that has not answered by then fails (a transient
    /// error, retried where giving up would strand a task) instead of
    /// hanging for as long as TCP retries on a dead link. On PostgreSQL it
    /// is also the server's `statement_timeout` (migrations excepted), and
    /// the server drops a session whose client stopped answering within
    /// about 10 s (`tcp_user_timeout`, TCP keepalives), releasing its
    /// locks. Default 30 s.
    pub call_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: None,
            pg_schema: None,
            acquire_timeout: Duration::from_secs(10),
            pg_idle_in_transaction_timeout: Some(Duration::from_secs(2)),
            call_timeout: Duration::from_secs(30),
        }
    }
}

/// See `row_buffer_size` in [`connect`].
#[cfg(feature = "sqlite")]
const ROW_BUFFER: usize = 1024;

pub(super) async fn connect(url: &str, opts: &StoreOptions) -> Result<Store> {
    if url.starts_with("sqlite:") {
        return connect_sqlite(url, opts).await;
    }
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        return connect_postgres(url, opts).await;
    }
    Err(Error::UnsupportedUrl(url.to_string()))
}

#[cfg(feature = "sqlite")]
async fn connect_sqlite(url: &str, opts: &StoreOptions) -> Result<Store> {
    let memory = url.contains(":memory:") || url.contains("mode=memory");
    let mut co = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .foreign_keys(true)
        // Wait for the writer lock rather than failing: several pool
        // connections (and, with the socket transport, several processes)
        // share one file.
        .busy_timeout(Duration::from_secs(30))
        // FULL: a committed task survives a power cut, not just a crash.
        .synchronous(SqliteSynchronous::Full)
        // Rows a statement's worker thread may hand over before the
        // caller takes them (sqlx's default is 50). A claim or a batch
        // returns hundreds; with 50 the worker stopped at every 50th
        // row until the busy actor thread drained them, holding the
        // write turn meanwhile (BENCHMARKS.md, throughput part five).
        .row_buffer_size(ROW_BUFFER);
    if !memory {
        co = co.journal_mode(SqliteJournalMode::Wal);
    }
    // An in-memory database lives as long as its one connection.
    let max = if memory {
        1
    } else {
        opts.max_connections.unwrap_or(8)
    };
    let pool = SqlitePoolOptions::new()
        .max_connections(max)
        .min_connections(if memory { 1 } else { 0 })
        .idle_timeout(if memory {
            None
        } else {
            Some(Duration::from_secs(600))
        })
        .max_lifetime(if memory {
            None
        } else {
            Some(Duration::from_secs(3600))
        })
        .acquire_timeout(opts.acquire_timeout)
        .connect_with(co)
        .await?;
    let migrate_lock = sqlite_lock_path(url);
    let mut store = Store::new(Db::Sqlite(pool), migrate_lock);
    store.deadline = opts.call_timeout;
    Ok(store)
}

#[cfg(not(feature = "sqlite"))]
async fn connect_sqlite(url: &str, _: &StoreOptions) -> Result<Store> {
    Err(Error::UnsupportedUrl(format!(
        "{url} (this build has no SQLite: build with the `sqlite` feature)"
    )))
}

#[cfg(feature = "postgres")]
async fn connect_postgres(url: &str, opts: &StoreOptions) -> Result<Store> {
    let mut co = PgConnectOptions::from_str(url)?.application_name("courier");
    if let Some(schema) = &opts.pg_schema {
        co = co.options([("search_path", schema.as_str())]);
    }
    if let Some(t) = opts.pg_idle_in_transaction_timeout {
        co = co.options([(
            "idle_in_transaction_session_timeout",
            format!("{}ms", t.as_millis().max(1)),
        )]);
    }
    // Server side of the deadlines: no statement runs longer than a call
    // may wait for it, and a client that stops answering (a cut link, a
    // host gone) loses its session within about 10 s, so its locks do not
    // hold up the takeover of its tasks.
    co = co.options([
        (
            "statement_timeout",
            format!("{}ms", opts.call_timeout.as_millis().max(1)),
        ),
        ("tcp_keepalives_idle", "5".to_string()),
        ("tcp_keepalives_interval", "2".to_string()),
        ("tcp_keepalives_count", "3".to_string()),
        ("tcp_user_timeout", "10000".to_string()),
    ]);
    let pool = PgPoolOptions::new()
        .max_connections(opts.max_connections.unwrap_or(10))
        .acquire_timeout(opts.acquire_timeout)
        .connect_with(co)
        .await?;
    let mut store = Store::new(Db::Postgres(pool), None);
    store.deadline = opts.call_timeout;
    Ok(store)
}

#[cfg(not(feature = "postgres"))]
async fn connect_postgres(url: &str, _: &StoreOptions) -> Result<Store> {
    Err(Error::UnsupportedUrl(format!(
        "{url} (this build has no PostgreSQL: build with the `postgres` feature)"
    )))
}

/// Holds an exclusive lock on a file until dropped (released with the file).
pub(super) struct FileLock(#[allow(dead_code)] std::fs::File);

/// Takes an exclusive lock on `path` (created if missing), waiting for other
/// processes that hold it.
pub(super) async fn lock_file(path: std::path::PathBuf) -> Result<FileLock> {
    let file = tokio::task::spawn_blocking(move || {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        f.lock()?;
        Ok::<_, std::io::Error>(f)
    })
    .await
    .map_err(|e| Error::Corrupt(format!("migration lock task failed: {e}")))?
    .map_err(|e| Error::from(sqlx::Error::Io(e)))?;
    Ok(FileLock(file))
}

/// For a SQLite file URL, the lock file beside the database
/// (`<file>.setup-lock`) that serializes opening and migrating it.
#[cfg(feature = "sqlite")]
pub(super) fn sqlite_lock_path(url: &str) -> Option<std::path::PathBuf> {
    if !url.starts_with("sqlite:") || url.contains(":memory:") || url.contains("mode=memory") {
        return None;
    }
    let co = SqliteConnectOptions::from_str(url).ok()?;
    let mut p = co.get_filename().as_os_str().to_owned();
    p.push(".setup-lock");
    let path = std::path::PathBuf::from(p);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    Some(path)
}

/// Without SQLite there is no file to lock.
#[cfg(not(feature = "sqlite"))]
pub(super) fn sqlite_lock_path(_: &str) -> Option<std::path::PathBuf> {
    None
}
