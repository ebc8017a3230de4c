//! How long a loop that reconnects or retries waits between tries:
//! exponential from a minimum to a maximum, each wait stretched by a random
//! part of itself, so that processes that lost a broker or a database
//! together do not all come back in the same instant. The sequence is
//! `backon`'s; the loops sleep on their own runtime.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// The waits of one loop: [`Backoff::next_delay`] after each failure,
/// [`Backoff::reset`] once it works again.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    /// Waits that start at `min` and double up to `max`; each is between
    /// the step and twice the step (the jitter).
    pub fn new(min: Duration, max: Duration) -> Backoff {
        let builder = ExponentialBuilder::new()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_jitter()
            .without_max_times();
        Backoff {
            delays: builder.build(),
            builder,
            max,
        }
    }

    /// The wait before the next try.
    pub fn next_delay(&mut self) -> Duration {
        // Without a maximum number of tries the sequence does not end.
        self.delays.next().unwrap_or(self.max)
    }

    /// Starts again from the shortest wait.
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }

    /// The wait after a session ended: from the shortest again when that
    /// session had got connected, else the next of this run of failures.
    pub fn after_session(&mut self, was_connected: bool) -> Duration {
        if was_connected {
            self.reset();
        }
        self.next_delay()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_maximum_with_jitter_and_resets() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        let mut b = Backoff::new(min, max);
        let first: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        let steps = [100, 200, 400, 800, 1000, 1000, 1000, 1000];
        for (d, step) in first.iter().zip(steps) {
            let step = Duration::from_millis(step);
            assert!(*d >= step && *d <= step * 2, "{d:?} for a step of {step:?}");
        }
        b.reset();
        let again = b.next_delay();
        assert!(again >= min && again <= min * 2, "{again:?} after a reset");
        let failed_again = b.after_session(false);
        assert!(
            failed_again >= min * 2,
            "{failed_again:?}: the run of failures goes on"
        );
        let connected = b.after_session(true);
        assert!(
            connected <= min * 2,
            "{connected:?} after a connected session"
        );
    }
}
