//! Runs that compute: tasks whose code keeps its thread busy for
//! `BENCH_SPIN_MS` (default 2 ms) without awaiting, beside the same work
//! done back to back on one thread in the same run.
//!
//! ```text
//! cargo bench --bench cpu                # SQLite and PostgreSQL
//! BENCH_DB=postgres BENCH_TASKS=2000 cargo bench --bench cpu
//! ```
//!
//! - **one thread, the baseline**: `BENCH_TASKS` spins of `BENCH_SPIN_MS`
//!   each, one after the other: what one core does.
//! - **courier**: the same spins as tasks, submitted in batches of 1,000 and run by
//!   one executor (capacity 16), timed from the submit until the last has
//!   succeeded. The kinds' code runs on the runs' pool (a thread per core),
//!   so on a machine of n cores the ratio can approach n, less what the
//!   database and the actors take.

mod support;

use std::time::{Duration, Instant};

use courier::{ExecutorConfig, NewTask, Retention, Runtime, TaskContext, TaskError};
use serde_json::{json, Value};
use support::{dbs_from_env, drop_schemas, env_usize, pg_url, succeeded, target};

fn spin(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

fn main() {
    let tasks = env_usize("BENCH_TASKS", 2000);
    let spin_ms = env_usize("BENCH_SPIN_MS", 2) as u64;
    let d = Duration::from_millis(spin_ms);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut out = format!(
        "### Runs that compute: {tasks} tasks of {spin_ms} ms of CPU each, {cores} cores\n\n\
         | database | one thread, back to back (tasks/s) | courier (tasks/s) | courier ÷ one thread |\n\
         |---|---|---|---|\n"
    );
    actix::System::new().block_on(async {
        let mut schemas = Vec::new();
        for db in dbs_from_env() {
            let t0 = Instant::now();
            for _ in 0..tasks {
                spin(d);
            }
            let one = tasks as f64 / t0.elapsed().as_secs_f64();
            let t = target(&db, &mut schemas).await;
            let rt = Runtime::builder()
                .database(t.url.clone())
                .store_options(t.options.clone())
                .register("bench.spin", move |_ctx: TaskContext| async move {
                    spin(d);
                    Ok::<Value, TaskError>(Value::Null)
                })
                .executor(ExecutorConfig {
                    retention: Retention::forever(),
                    capacity: 16,
                    ..ExecutorConfig::default()
                })
                .start()
                .await
                .unwrap();
            let store = rt.store().clone();
            let t0 = Instant::now();
            for from in (0..tasks).step_by(1000) {
                let batch = (from..tasks.min(from + 1000))
                    .map(|i| NewTask::new("bench.spin", json!({"i": i})))
                    .collect();
                rt.client().submit_batch(batch).await.unwrap();
            }
            while succeeded(&store).await < tasks {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let rate = tasks as f64 / t0.elapsed().as_secs_f64();
            rt.shutdown().await;
            eprintln!("{db}: one thread {one:.0}/s, courier {rate:.0}/s");
            out += &format!(
                "| {} | {one:.0} | {rate:.0} | {:.2}× |\n",
                t.label,
                rate / one
            );
        }
        drop_schemas(&pg_url(), &schemas).await;
    });
    println!("{out}");
}
