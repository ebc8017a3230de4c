//! courier measured the way Celery's peer benchmark measures throughput
//! (`../shared/bench/peers/celery`, `bench.py`: N no-op tasks published,
//! then every result awaited; one worker process with two pool processes,
//! RabbitMQ, persistent messages, acks late). `benches/celery.sh` runs
//! Celery's suite and then this, so both figures come from one run.
//!
//! ```text
//! benches/celery.sh                      # Celery, then this
//! BENCH_TASKS=10000 cargo bench --bench peers
//! ```
//!
//! courier: a PostgreSQL store, the AMQP transport on the same RabbitMQ,
//! two `courier executor` processes running `demo.echo`, and a web-only
//! runtime in this process submitting. Timed from the first submit until
//! the store counts every task succeeded (a result is durable there, and
//! a waiting client is told from there), two ways:
//!
//! - **32 submitters**: 32 concurrent callers of `Client::submit` (single
//!   creates, group-committed);
//! - **batches**: `Client::submit_batch` of 1,000 tasks at a time.

mod support;

use std::time::{Duration, Instant};

use courier::bus::transport::amqp::AmqpConfig;
use courier::{NewTask, Runtime, Store, StoreOptions};
use serde_json::json;
use support::{
    calls_per_second, create_schema, drop_schemas, echo_ready, env_usize, executor, pg_url,
    schema_url, succeeded, Procs,
};

/// Tasks a second from `t0` until `n` more than `before` have succeeded.
async fn until_done(store: &Store, before: usize, n: usize, t0: Instant) -> f64 {
    while succeeded(store).await < before + n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

fn main() {
    let tasks = env_usize("BENCH_TASKS", 10_000);
    let amqp = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let report = actix::System::new().block_on(async move {
        let base = pg_url();
        let schema = create_schema(&base).await;
        let db = schema_url(&base, &schema);
        let prefix = format!("courier_bench_{}", uuid::Uuid::new_v4().simple());
        let w = Runtime::builder()
            .database(db.clone())
            .store_options(StoreOptions {
                max_connections: Some(16),
                ..StoreOptions::default()
            })
            .node("bench-peers-web")
            .without_executor()
            .amqp_transport(AmqpConfig {
                url: amqp.clone(),
                prefix: prefix.clone(),
            })
            .start()
            .await
            .unwrap();
        let procs = Procs(
            (1..=2)
                .map(|n| executor(&db, &amqp, &prefix, &format!("bench-peers-exec-{n}")))
                .collect(),
        );
        echo_ready(&w.client()).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        echo_ready(&w.client()).await;
        let store = Store::connect(&db).await.unwrap();
        let c = w.client();

        let conc = 32;
        let per = tasks / conc;
        let before = succeeded(&store).await;
        let t0 = Instant::now();
        let created = calls_per_second(conc, per, || {
            let c = c.clone();
            move || {
                let c = c.clone();
                async move {
                    c.submit(NewTask::new("demo.echo", json!(1))).await.unwrap();
                }
            }
        })
        .await;
        let single = until_done(&store, before, conc * per, t0).await;

        let before = succeeded(&store).await;
        let t0 = Instant::now();
        let mut left = tasks;
        while left > 0 {
            let n = left.min(1000);
            let batch = (0..n).map(|_| NewTask::new("demo.echo", json!(1))).collect();
            c.submit_batch(batch).await.unwrap();
            left -= n;
        }
        let submitted = tasks as f64 / t0.elapsed().as_secs_f64();
        let batched = until_done(&store, before, tasks, t0).await;

        store.close().await;
        w.shutdown().await;
        drop(procs);
        drop_schemas(&base, &[schema]).await;
        format!(
            "### courier, 2 executor processes, AMQP, PostgreSQL store: {tasks} `demo.echo` tasks\n\n\
             | how they are submitted | end-to-end tasks/s (first submit → last success) | submit rate |\n\
             |---|---|---|\n\
             | 32 submitters, `Client::submit` | {single:.0} | {created:.0}/s |\n\
             | `Client::submit_batch` of 1,000 | {batched:.0} | {submitted:.0}/s |\n"
        )
    });
    println!("{report}");
}
