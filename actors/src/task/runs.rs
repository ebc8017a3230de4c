//! Where the kinds' code runs: a pool of threads, one per core, shared by
//! every executor of the process.
//!
//! The actors (executors, task actors, the bus) live on one actix arbiter;
//! a kind's code running there would take that thread from all of them, so
//! one task busy computing would delay every other run, the executor's
//! claims and its heartbeats (and an executor whose heartbeats stop is
//! declared dead and its tasks taken over). Each run is therefore spawned
//! on this pool: the kinds' code uses every core, and the actor that owns
//! the run only waits for its end. A kind's future is `Send` for this
//! reason (see [`TaskKind`](super::kind::TaskKind)).
//!
//! The pool lives as long as the process, so the database connections its
//! runs open (sqlx opens them on the runtime that asks) outlive any one
//! executor.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Runtime};
use tokio::task::{AbortHandle, JoinHandle};

fn pool() -> &'static Runtime {
    static POOL: OnceLock<Runtime> = OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Builder::new_multi_thread()
            .worker_threads(cores)
            .thread_name("courier-run")
            .enable_all()
            .build()
            .expect("the runs' thread pool starts")
    })
}

/// Runs `fut` on the pool.
pub(crate) fn spawn<F>(fut: F) -> (JoinHandle<F::Output>, Aborts)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let join = pool().spawn(fut);
    let abort = Aborts(join.abort_handle());
    (join, abort)
}

/// Aborts the run when dropped: a run is dropped with the actor that owns
/// it, however that actor stops.
#[derive(Debug)]
pub(crate) struct Aborts(AbortHandle);

impl Drop for Aborts {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_dropped_run_is_aborted() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let (join, aborts) = spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            let _ = tx.send(()).await;
        });
        drop(aborts);
        assert!(join.await.unwrap_err().is_cancelled());
        // The run's end (and its sender) went with it.
        assert!(rx.recv().await.is_none());
    }

    /// Two runs that each hold their thread until the other has started
    /// finish only if they run at once, on two threads.
    #[tokio::test]
    async fn runs_that_block_their_thread_run_at_once() {
        if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            return;
        }
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let mut joins = Vec::new();
        for _ in 0..2 {
            let b = barrier.clone();
            let (join, aborts) = spawn(async move {
                b.wait();
            });
            joins.push((join, aborts));
        }
        for (join, _aborts) in joins {
            tokio::time::timeout(Duration::from_secs(10), join)
                .await
                .expect("both runs started at once")
                .unwrap();
        }
    }
}
