//! Process-wide counters for the Prometheus endpoint.
//!
//! Each process counts what happens in it (the tasks its clients created,
//! the runs its executor finished, how long claimed tasks had waited);
//! Prometheus adds the processes up. Gauges that belong to the whole
//! deployment (tasks per state, queue depth) are read from the store when
//! scraped, not counted here.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Upper bounds (seconds) of the dispatch latency histogram buckets.
pub const DISPATCH_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The counters. Use [`metrics()`].
pub struct Metrics {
    created: Mutex<BTreeMap<String, u64>>,
    finished: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Failed attempts retried, by queue.
    retries: Mutex<BTreeMap<String, u64>>,
    /// Attempts that ran out of time, by queue.
    timeouts: Mutex<BTreeMap<String, u64>>,
    /// Finished tasks retention deleted, by state.
    retention_deleted: Mutex<BTreeMap<&'static str, u64>>,
    /// Tasks created by schedules' slots fired in this process, by schedule.
    schedule_tasks: Mutex<BTreeMap<String, u64>>,
    /// Runs suspended (their tasks left memory), by queue.
    suspended: Mutex<BTreeMap<String, u64>>,
    dispatch_buckets: [AtomicU64; DISPATCH_BUCKETS.len()],
    dispatch_count: AtomicU64,
    /// Sum of dispatch latencies in microseconds.
    dispatch_sum_us: AtomicU64,
    running: AtomicI64,
}

/// The process's counters.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| Metrics {
        created: Mutex::new(BTreeMap::new()),
        finished: Mutex::new(BTreeMap::new()),
        retries: Mutex::new(BTreeMap::new()),
        timeouts: Mutex::new(BTreeMap::new()),
        retention_deleted: Mutex::new(BTreeMap::new()),
        schedule_tasks: Mutex::new(BTreeMap::new()),
        suspended: Mutex::new(BTreeMap::new()),
        dispatch_buckets: Default::default(),
        dispatch_count: AtomicU64::new(0),
        dispatch_sum_us: AtomicU64::new(0),
        running: AtomicI64::new(0),
    })
}

impl Metrics {
    pub(crate) fn task_created(&self, kind: &str) {
        *self
            .created
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind.to_string())
            .or_default() += 1;
    }

    pub(crate) fn task_finished(&self, kind: &str, state: &'static str) {
        *self
            .finished
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((kind.to_string(), state))
            .or_default() += 1;
    }

    pub(crate) fn retried(&self, queue: &str) {
        bump(&self.retries, queue.to_string(), 1);
    }

    pub(crate) fn timed_out(&self, queue: &str) {
        bump(&self.timeouts, queue.to_string(), 1);
    }

    pub(crate) fn schedule_fired(&self, schedule: &str, tasks: usize) {
        bump(&self.schedule_tasks, schedule.to_string(), tasks as u64);
    }

    pub(crate) fn suspended(&self, queue: &str) {
        bump(&self.suspended, queue.to_string(), 1);
    }

    pub(crate) fn retention_deleted(&self, state: &'static str, n: u64) {
        bump(&self.retention_deleted, state, n);
    }

    /// Time from a task's creation to its first claim.
    pub(crate) fn dispatched(&self, seconds: f64) {
        for (i, b) in DISPATCH_BUCKETS.iter().enumerate() {
            if seconds <= *b {
                self.dispatch_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.dispatch_count.fetch_add(1, Ordering::Relaxed);
        self.dispatch_sum_us
            .fetch_add((seconds.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    pub(crate) fn running_add(&self, d: i64) {
        self.running.fetch_add(d, Ordering::Relaxed);
    }

    /// Writes the counters in the Prometheus text format (0.0.4).
    pub fn render(&self, out: &mut String) {
        let esc = |s: &str| {
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        };
        out.push_str("# HELP courier_tasks_created_total Tasks created by clients of this process.\n# TYPE courier_tasks_created_total counter\n");
        for (kind, n) in self
            .created
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "courier_tasks_created_total{{kind=\"{}\"}} {n}",
                esc(kind)
            );
        }
        out.push_str("# HELP courier_tasks_finished_total Runs finished by the executor of this process.\n# TYPE courier_tasks_finished_total counter\n");
        for ((kind, state), n) in self
            .finished
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "courier_tasks_finished_total{{kind=\"{}\",state=\"{state}\"}} {n}",
                esc(kind)
            );
        }
        family(
            out,
            "courier_task_retries_total",
            "Failed attempts this process's executor scheduled for a retry, by queue.",
            "queue",
            &self.retries,
        );
        family(
            out,
            "courier_task_timeouts_total",
            "Attempts this process's executor aborted for running past their timeout, by queue.",
            "queue",
            &self.timeouts,
        );
        family(
            out,
            "courier_retention_deleted_total",
            "Finished tasks deleted by this process's retention, by state.",
            "state",
            &self.retention_deleted,
        );
        family(
            out,
            "courier_schedule_tasks_total",
            "Tasks created by the schedule slots this process fired, by schedule.",
            "schedule",
            &self.schedule_tasks,
        );
        family(
            out,
            "courier_task_suspensions_total",
            "Runs this process's executor suspended (their tasks wait in the database, not in memory), by queue.",
            "queue",
            &self.suspended,
        );
        out.push_str("# HELP courier_dispatch_latency_seconds Time from a task's creation to its first claim.\n# TYPE courier_dispatch_latency_seconds histogram\n");
        for (i, b) in DISPATCH_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "courier_dispatch_latency_seconds_bucket{{le=\"{b}\"}} {}",
                self.dispatch_buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.dispatch_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "courier_dispatch_latency_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "courier_dispatch_latency_seconds_sum {}",
            self.dispatch_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "courier_dispatch_latency_seconds_count {count}");
        out.push_str("# HELP courier_tasks_running Tasks running on the executor of this process.\n# TYPE courier_tasks_running gauge\n");
        let _ = writeln!(
            out,
            "courier_tasks_running {}",
            self.running.load(Ordering::Relaxed)
        );
    }
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K, n: u64) {
    *map.lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_default() += n;
}

/// Writes one counter family with a single label.
fn family<K: AsRef<str>>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    map: &Mutex<BTreeMap<K, u64>>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (k, n) in map.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let v = k
            .as_ref()
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = writeln!(out, "{name}{{{label}=\"{v}\"}} {n}");
    }
}
