//! Process-wide metrics for the Prometheus endpoint, kept with the
//! `prometheus-client` crate (the Prometheus project's Rust client).
//!
//! Each process counts what happens in it (the tasks its clients created,
//! the runs its executor finished, how long claimed tasks had waited);
//! Prometheus adds the processes up. Gauges that belong to the whole
//! deployment (tasks per state, queue depth) are read from the store when
//! scraped (`courier-web`'s `metrics.rs`), not counted here.
//!
//! A metric's name is its family's name as Prometheus sees it; counters
//! get `_total`, histograms `_bucket`, `_sum` and `_count`.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindState {
    kind: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindQueue {
    kind: String,
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScheduleLabel {
    schedule: String,
}

/// Buckets of a duration in seconds: 1 ms to ~9 h, doubling.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 25))
}

/// A family of [`seconds`] histograms.
type Durations<L> = Family<L, Histogram, fn() -> Histogram>;

/// The process's metrics. Use [`metrics()`].
pub struct Metrics {
    created: Family<KindLabel, Counter>,
    finished: Family<KindState, Counter>,
    retries: Family<QueueLabel, Counter>,
    timeouts: Family<QueueLabel, Counter>,
    retention_deleted: Family<StateLabel, Counter>,
    schedule_tasks: Family<ScheduleLabel, Counter>,
    suspended: Family<QueueLabel, Counter>,
    takeovers: Counter,
    fenced: Counter,
    leases_lost: Counter,
    dispatch: Histogram,
    queue_wait: Durations<QueueLabel>,
    run_duration: Durations<KindQueue>,
    claim_batch: Histogram,
    running: Gauge,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| Metrics {
        created: Family::default(),
        finished: Family::default(),
        retries: Family::default(),
        timeouts: Family::default(),
        retention_deleted: Family::default(),
        schedule_tasks: Family::default(),
        suspended: Family::default(),
        takeovers: Counter::default(),
        fenced: Counter::default(),
        leases_lost: Counter::default(),
        dispatch: seconds(),
        queue_wait: Family::new_with_constructor(seconds),
        run_duration: Family::new_with_constructor(seconds),
        // 1 to 4,096 tasks a claim, doubling.
        claim_batch: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
        running: Gauge::default(),
    })
}

impl Metrics {
    pub(crate) fn task_created(&self, kind: &str) {
        self.created
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }

    pub(crate) fn task_finished(&self, kind: &str, state: &'static str) {
        self.finished
            .get_or_create(&KindState {
                kind: kind.into(),
                state,
            })
            .inc();
    }

    pub(crate) fn retried(&self, queue: &str) {
        self.retries
            .get_or_create(&QueueLabel {
                queue: queue.into(),
            })
            .inc();
    }

    pub(crate) fn timed_out(&self, queue: &str) {
        self.timeouts
            .get_or_create(&QueueLabel {
                queue: queue.into(),
            })
            .inc();
    }

    pub(crate) fn schedule_fired(&self, schedule: &str, tasks: usize) {
        self.schedule_tasks
            .get_or_create(&ScheduleLabel {
                schedule: schedule.into(),
            })
            .inc_by(tasks as u64);
    }

    pub(crate) fn suspended(&self, queue: &str) {
        self.suspended
            .get_or_create(&QueueLabel {
                queue: queue.into(),
            })
            .inc();
    }

    pub(crate) fn retention_deleted(&self, state: &'static str, n: u64) {
        self.retention_deleted
            .get_or_create(&StateLabel { state })
            .inc_by(n);
    }

    /// Tasks of dead or gone executors put back in the pool by this
    /// process's sweep.
    pub(crate) fn taken_over(&self, tasks: usize) {
        self.takeovers.inc_by(tasks as u64);
    }

    /// A write of this process's executor refused by fencing: the task was
    /// no longer its own (taken over, or its executor declared dead).
    pub(crate) fn fenced(&self) {
        self.fenced.inc();
    }

    /// An executor's lease ran out: it stopped its runs by itself.
    pub(crate) fn lease_lost(&self) {
        self.leases_lost.inc();
    }

    /// Time from a task's creation to its first claim.
    pub(crate) fn dispatched(&self, seconds: f64) {
        self.dispatch.observe(seconds.max(0.0));
    }

    /// Time a task waited pending in `queue` (due, for a free slot of an
    /// executor within the queue's limits) until a claim took it.
    pub(crate) fn waited(&self, queue: &str, seconds: f64) {
        self.queue_wait
            .get_or_create(&QueueLabel {
                queue: queue.into(),
            })
            .observe(seconds.max(0.0));
    }

    /// How long a run's code took, from its start to its end.
    pub(crate) fn ran(&self, kind: &str, queue: &str, seconds: f64) {
        self.run_duration
            .get_or_create(&KindQueue {
                kind: kind.into(),
                queue: queue.into(),
            })
            .observe(seconds.max(0.0));
    }

    /// Tasks one claim took.
    pub(crate) fn claimed(&self, tasks: usize) {
        self.claim_batch.observe(tasks as f64);
    }

    pub(crate) fn running_add(&self, d: i64) {
        self.running.inc_by(d);
    }

    /// Registers every metric of this process in `registry` (they stay
    /// shared: the registry reads their current values when encoded).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "courier_tasks_created",
            "Tasks created by clients of this process, by kind",
            self.created.clone(),
        );
        registry.register(
            "courier_tasks_finished",
            "Runs finished by the executor of this process, by kind and final state",
            self.finished.clone(),
        );
        registry.register(
            "courier_task_retries",
            "Failed attempts this process's executor scheduled for a retry, by queue",
            self.retries.clone(),
        );
        registry.register(
            "courier_task_timeouts",
            "Attempts this process's executor aborted for running past their timeout, by queue",
            self.timeouts.clone(),
        );
        registry.register(
            "courier_retention_deleted",
            "Finished tasks deleted by this process's retention, by state",
            self.retention_deleted.clone(),
        );
        registry.register(
            "courier_schedule_tasks",
            "Tasks created by the schedule slots this process fired, by schedule",
            self.schedule_tasks.clone(),
        );
        registry.register(
            "courier_task_suspensions",
            "Runs this process's executor suspended (their tasks wait in the database, not in memory), by queue",
            self.suspended.clone(),
        );
        registry.register(
            "courier_takeovers",
            "Tasks of dead or gone executors this process's sweep put back in the pool",
            self.takeovers.clone(),
        );
        registry.register(
            "courier_fenced_writes",
            "Writes of this process's executor refused because the task was no longer its own",
            self.fenced.clone(),
        );
        registry.register(
            "courier_leases_lost",
            "Times this process's executor let its lease run out (no heartbeat renewed) and stopped its runs",
            self.leases_lost.clone(),
        );
        registry.register(
            "courier_dispatch_latency_seconds",
            "Time from a task's creation to its first claim",
            self.dispatch.clone(),
        );
        registry.register(
            "courier_queue_wait_seconds",
            "Time a task waited pending in its queue (due, for a free executor slot within the queue's limits) until this process's executor claimed it, by queue; every claim counts (first, retry, woken, taken over)",
            self.queue_wait.clone(),
        );
        registry.register(
            "courier_run_duration_seconds",
            "Time a run's code took on this process's executor, by kind and queue",
            self.run_duration.clone(),
        );
        registry.register(
            "courier_claim_batch_size",
            "Tasks one claim of this process's executor took",
            self.claim_batch.clone(),
        );
        registry.register(
            "courier_tasks_running",
            "Tasks running on the executor of this process",
            self.running.clone(),
        );
    }
}
