//! The network transports (AMQP, and PostgreSQL through the store's own
//! database) against the socket transport and the in-process flow, all in
//! one run, on PostgreSQL (the multi-host store). `benches/amqp.sh` runs
//! this beside the raw lapin and LISTEN/NOTIFY cases of
//! `../shared/bench/limits`.
//!
//! ```text
//! cargo bench --bench amqp
//! ```
//!
//! - **round trip**: `Client::submit_and_wait` of `demo.echo` from this
//!   process (a web-only runtime) to `courier executor` processes, p50/p99
//!   over sequential samples; in-process: an executor in this process.
//! - **durable tasks/s**: 32 concurrent submitters, each `submit_and_wait`
//!   in a loop; over AMQP and over PostgreSQL with 1, 2 and 3 executor
//!   processes.

mod support;

use std::time::Duration;

use courier::bus::transport::amqp::AmqpConfig;
use courier::{Client, Runtime, StoreOptions};
use support::{
    calls_per_second, create_schema, drop_schemas, echo_ready, echo_round_trip, env_usize,
    executor, hist, pg_url, schema_url, Procs,
};

async fn once(c: &Client) -> Duration {
    echo_round_trip(c).await
}

async fn rtt(c: &Client, samples: usize) -> (f64, f64) {
    for _ in 0..50 {
        once(c).await;
    }
    let mut h = hist();
    for _ in 0..samples {
        h.record(once(c).await.as_micros().max(1) as u64).unwrap();
    }
    (
        h.value_at_quantile(0.5) as f64,
        h.value_at_quantile(0.99) as f64,
    )
}

async fn throughput(c: &Client, tasks: usize) -> f64 {
    let conc = 32;
    calls_per_second(conc, tasks / conc, || {
        let c = c.clone();
        move || {
            let c = c.clone();
            async move {
                once(&c).await;
            }
        }
    })
    .await
}

async fn web(db: &str, node: &str) -> courier::RuntimeBuilder {
    Runtime::builder()
        .database(db.to_string())
        .store_options(StoreOptions {
            max_connections: Some(16),
            ..StoreOptions::default()
        })
        .node(node)
        .without_executor()
}

fn main() {
    let samples = env_usize("BENCH_SAMPLES", 500);
    let tasks = env_usize("BENCH_TASKS", 1600);
    let amqp = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let report = actix::System::new().block_on(async move {
        let base = pg_url();
        let mut schemas = Vec::new();
        for _ in 0..4 {
            schemas.push(create_schema(&base).await);
        }
        let dir = tempfile::tempdir().unwrap();
        let mut rows = Vec::new();

        // In-process.
        let local = Runtime::builder()
            .database(schema_url(&base, &schemas[0]))
            .registry(courier::demo::registry())
            .start()
            .await
            .unwrap();
        let (p50, p99) = rtt(&local.client(), samples).await;
        let tps = throughput(&local.client(), tasks).await;
        rows.push(("in-process", p50, p99, vec![tps]));
        local.shutdown().await;

        // Unix socket, one executor process.
        let db = schema_url(&base, &schemas[1]);
        let sock = format!("socket:{}", dir.path().join("s").display());
        let _e = Procs(vec![executor(&db, &sock, "unused", "bench-sock-exec")]);
        let w = web(&db, "bench-sock-web").await.socket_transport(dir.path().join("s")).start().await.unwrap();
        echo_ready(&w.client()).await;
        let (p50, p99) = rtt(&w.client(), samples).await;
        let tps = throughput(&w.client(), tasks).await;
        rows.push(("socket (1 executor process)", p50, p99, vec![tps]));
        w.shutdown().await;
        drop(_e);

        // AMQP, 1 then 2 then 3 executor processes.
        let db = schema_url(&base, &schemas[2]);
        let prefix = format!("courier_bench_{}", uuid::Uuid::new_v4().simple());
        let w = web(&db, "bench-amqp-web")
            .await
            .amqp_transport(AmqpConfig { url: amqp.clone(), prefix: prefix.clone() })
            .start()
            .await
            .unwrap();
        let mut procs = Procs(vec![executor(&db, &amqp, &prefix, "bench-amqp-exec-1")]);
        echo_ready(&w.client()).await;
        let (p50, p99) = rtt(&w.client(), samples).await;
        let mut tps = vec![throughput(&w.client(), tasks).await];
        for n in 2..=3 {
            procs.0.push(executor(&db, &amqp, &prefix, &format!("bench-amqp-exec-{n}")));
            tokio::time::sleep(Duration::from_secs(2)).await;
            echo_ready(&w.client()).await;
            tps.push(throughput(&w.client(), tasks).await);
        }
        rows.push(("AMQP", p50, p99, tps));
        w.shutdown().await;
        drop(procs);

        // PostgreSQL, through the store's database, 1 then 2 then 3 executor processes.
        let db = schema_url(&base, &schemas[3]);
        let w = web(&db, "bench-pg-web").await.postgres_transport().start().await.unwrap();
        let mut procs = Procs(vec![executor(&db, "postgres", "unused", "bench-pg-exec-1")]);
        echo_ready(&w.client()).await;
        let (p50, p99) = rtt(&w.client(), samples).await;
        let mut tps = vec![throughput(&w.client(), tasks).await];
        for n in 2..=3 {
            procs.0.push(executor(&db, "postgres", "unused", &format!("bench-pg-exec-{n}")));
            tokio::time::sleep(Duration::from_secs(2)).await;
            echo_ready(&w.client()).await;
            tps.push(throughput(&w.client(), tasks).await);
        }
        rows.push(("PostgreSQL (`--bus postgres`)", p50, p99, tps));
        w.shutdown().await;
        drop(procs);
        drop_schemas(&base, &schemas).await;

        let mut out = format!(
            "### PostgreSQL store; `demo.echo` submit with wait → finished\n\n{samples} sequential samples; throughput: 32 submitters, {tasks} tasks.\n\n\
             | route | p50 | p99 | ratio p50 to in-process | tasks/s (1 executor) | tasks/s (2) | tasks/s (3) |\n|---|---|---|---|---|---|---|\n"
        );
        let base_p50 = rows[0].1;
        for (name, p50, p99, tps) in &rows {
            let t = |i: usize| tps.get(i).map_or("—".to_string(), |v| format!("{v:.0}"));
            out += &format!(
                "| {name} | {p50:.0} µs | {p99:.0} µs | {:.2}× | {} | {} | {} |\n",
                p50 / base_p50,
                t(0),
                t(1),
                t(2)
            );
        }
        out
    });
    println!("{report}");
}
