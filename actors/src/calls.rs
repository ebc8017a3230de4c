//! How actors call the store: each database call a task of its own
//! ([`detached`]), and retried while its failure may pass ([`retry`]).

use std::time::Duration;

use courier_bus::backoff::Backoff;

use crate::error::{Error, Result};

/// Runs `fut` as a task of its own, started at once, and returns a future
/// of its result.
///
/// Actors use it for every database call they make from their context. An
/// actor that waits on one future (`ctx.wait`) stops polling its others; one
/// of those that is queued for a pooled connection keeps its place in the
/// pool's fair queue without being polled, so the connection handed to it
/// sits unused and the pool stalls until the acquire timeout. (Seen after
/// SIGSTOP/SIGCONT: a burst of heartbeats queued ahead of a re-registration
/// that the executor waited on.) A task of its own is always polled.
pub fn detached<T: 'static>(
    fut: impl std::future::Future<Output = T> + 'static,
) -> impl std::future::Future<Output = T> {
    let handle = tokio::task::spawn_local(fut);
    async move {
        match handle.await {
            Ok(v) => v,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Cancelled: the runtime is shutting down and nobody waits.
            Err(_) => std::future::pending().await,
        }
    }
}

/// Retries `op` while it fails with a transient error, backing off in steps
/// doubling from 50 ms to 2 s (each wait up to twice its step: the jitter),
/// for at most `budget`. Used where giving up would strand a task.
pub async fn retry<T, E, F, Fut>(what: &str, budget: Duration, mut op: F) -> Result<T>
where
    E: Into<Error>,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let start = std::time::Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        match op().await.map_err(Into::into) {
            Err(e) if e.is_transient() => {
                let delay = backoff.next_delay();
                if start.elapsed() + delay >= budget {
                    return Err(e);
                }
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "{what} failed; retrying");
                tokio::time::sleep(delay).await;
            }
            other => return other,
        }
    }
}
