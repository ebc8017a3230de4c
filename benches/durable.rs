//! Durable execution costs, each beside its baseline in the same run, on
//! SQLite and on PostgreSQL.
//!
//! ```text
//! cargo bench --bench durable                          # both databases, every part
//! BENCH_DB=sqlite BENCH_SUSPENDED=100000 cargo bench --bench durable
//! BENCH_PARTS=steps,slots cargo bench --bench durable
//! ```
//!
//! | part        | measured                                                              | baseline                                   |
//! |-------------|-----------------------------------------------------------------------|--------------------------------------------|
//! | `scale`     | RSS per suspended task with N suspended (timers due in an hour); clean stop, restart, an event right after the restart; timer lag with N pending | the same executor with none suspended |
//! | `steps`     | one no-op `ctx.step` inside a run; one journal write (`record_step`)   | one raw autocommit `INSERT`                |
//! | `slots`     | a per-second schedule's slot → its task created, and → its code starts | a plain task's create → start              |
//!
//! PostgreSQL comes from `DATABASE_URL` (default the local `test` database);
//! each run works in schemas of its own and drops them.

mod support;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use courier::actors::now;
use courier::{
    ExecutorConfig, NewTask, Retention, Runtime, RuntimeBuilder, ScheduleSpec, Store, TaskContext,
    TaskError, TaskFilter, TaskState,
};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use sqlx::Connection;
use support::{
    dbs_from_env, drop_schemas, env_usize, hist, log_from_env, ms, pg_url, target, Target,
};
use tokio::sync::mpsc;

/// This process's resident set, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// A timer's wake: the task, when it was due, and when its code went on.
type Wake = (uuid::Uuid, DateTime<Utc>, DateTime<Utc>);

fn builder(t: &Target, tx: mpsc::UnboundedSender<Wake>) -> RuntimeBuilder {
    Runtime::builder()
        .database(t.url.clone())
        .store_options(t.options.clone())
        .register("demo.echo", |ctx: TaskContext| async move {
            Ok::<Value, TaskError>(ctx.input().clone())
        })
        .register("demo.await_event", |ctx: TaskContext| async move {
            ctx.wait_event("go").await
        })
        .register("bench.timer", move |ctx: TaskContext| {
            let tx = tx.clone();
            async move {
                let at: DateTime<Utc> = serde_json::from_value(ctx.input()["at"].clone())
                    .map_err(|e| TaskError::failed(e.to_string()))?;
                ctx.sleep_until(at).await?;
                let _ = tx.send((ctx.id(), at, Utc::now()));
                Ok::<Value, TaskError>(Value::Null)
            }
        })
        .register("bench.steps", |ctx: TaskContext| async move {
            let n = ctx.input()["n"].as_u64().unwrap_or(0);
            for i in 0..n {
                ctx.step(&format!("step {i}"), async { Ok(i) }).await?;
            }
            Ok::<Value, TaskError>(json!(n))
        })
        .executor(ExecutorConfig {
            retention: Retention::forever(),
            ..ExecutorConfig::default()
        })
}

/// `n` timers due `spacing` apart from `start`; the lag of each wake.
async fn timer_lag(
    c: &courier::Client,
    rx: &mut mpsc::UnboundedReceiver<Wake>,
    n: usize,
    start: Duration,
    spacing: Duration,
) -> Histogram<u64> {
    let first = now() + chrono::Duration::from_std(start).unwrap();
    let mut batch = Vec::new();
    for i in 0..n {
        let at = first + chrono::Duration::from_std(spacing * i as u32).unwrap();
        batch.push(NewTask::new("bench.timer", json!({ "at": at })));
    }
    for chunk in batch.chunks(1000) {
        c.submit_batch(chunk.to_vec()).await.unwrap();
    }
    let mut h = hist();
    for _ in 0..n {
        let (_, due, woke) = rx.recv().await.unwrap();
        h.record((woke - due).num_microseconds().unwrap_or(0).max(1) as u64)
            .unwrap();
    }
    h
}

async fn count(store: &Store, state: TaskState) -> u64 {
    store
        .count_by_state()
        .await
        .unwrap()
        .into_iter()
        .find(|(s, _)| *s == state)
        .map_or(0, |(_, n)| n as u64)
}

async fn until_count(store: &Store, state: TaskState, n: u64) {
    while count(store, state).await < n {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An event to a suspended `demo.await_event` task → it finishes.
async fn event_round_trip(c: &courier::Client) -> Duration {
    let t = c
        .submit(NewTask::new("demo.await_event", Value::Null))
        .await
        .unwrap()
        .task;
    while c.get(t.id).await.unwrap().state != TaskState::Suspended {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    event_to(c, t.id).await
}

async fn event_to(c: &courier::Client, id: uuid::Uuid) -> Duration {
    let t0 = Instant::now();
    c.send_event(id, "go", json!(1)).await.unwrap();
    let (t, fin) = c.wait(id, Duration::from_secs(30)).await.unwrap();
    assert!(fin && t.state == TaskState::Succeeded, "{t:?}");
    t0.elapsed()
}

/// From a start of the runtime to a plain task done on it.
async fn start_until_ready(t: &Target, tx: mpsc::UnboundedSender<Wake>) -> (Runtime, Duration) {
    let t0 = Instant::now();
    let rt = builder(t, tx).start().await.expect("runtime");
    let w = rt
        .client()
        .submit_and_wait(NewTask::new("demo.echo", json!(1)), Duration::from_secs(60))
        .await
        .unwrap();
    assert!(w.finished);
    (rt, t0.elapsed())
}

async fn scale(t: &Target, n: usize, samples: usize) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Wake>();
    let (rt, _) = start_until_ready(t, tx.clone()).await;
    let c = rt.client();
    let store = rt.store().clone();
    // Warm up pools and caches; then the baselines, with none suspended.
    for _ in 0..200 {
        c.submit_and_wait(NewTask::new("demo.echo", json!(1)), Duration::from_secs(10))
            .await
            .unwrap();
    }
    let lag0 = timer_lag(
        &c,
        &mut rx,
        samples,
        Duration::from_millis(500),
        Duration::from_millis(10),
    )
    .await;
    let ev0 = event_round_trip(&c).await;
    let waiting0 = c
        .submit(NewTask::new("demo.await_event", Value::Null))
        .await
        .unwrap()
        .task
        .id;
    until_count(&store, TaskState::Suspended, 1).await;
    let s0 = Instant::now();
    rt.shutdown().await;
    let stop0 = s0.elapsed();
    let (rt, start0) = start_until_ready(t, tx.clone()).await;
    let c = rt.client();
    let after0 = event_to(&c, waiting0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss0 = rss();

    // N timers due in an hour, and one task waiting for an event.
    let fill = Instant::now();
    let in_an_hour = now() + chrono::Duration::hours(1);
    let batch: Vec<NewTask> = (0..1000)
        .map(|_| NewTask::new("bench.timer", json!({ "at": in_an_hour })))
        .collect();
    for _ in 0..n / 1000 {
        c.submit_batch(batch.clone()).await.unwrap();
    }
    let waiting = c
        .submit(NewTask::new("demo.await_event", Value::Null))
        .await
        .unwrap()
        .task
        .id;
    until_count(&store, TaskState::Suspended, (n / 1000 * 1000) as u64 + 1).await;
    let filled = fill.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss1 = rss();
    let lag1 = timer_lag(
        &c,
        &mut rx,
        samples,
        Duration::from_millis(500),
        Duration::from_millis(10),
    )
    .await;
    let s1 = Instant::now();
    rt.shutdown().await;
    let stop1 = s1.elapsed();
    let (rt, start1) = start_until_ready(t, tx.clone()).await;
    let c = rt.client();
    let after1 = event_to(&c, waiting).await;
    let still = count(rt.store(), TaskState::Suspended).await;
    rt.shutdown().await;

    let n = n / 1000 * 1000;
    println!(
        "\n### scale: {} ({n} suspended tasks, timers due in an hour; suspended in {:.1} s, {:.0} tasks/s)\n",
        t.label,
        filled.as_secs_f64(),
        n as f64 / filled.as_secs_f64()
    );
    println!("| what | none suspended (baseline) | {n} suspended | ratio |");
    println!("|---|---|---|---|");
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "| executor RSS | {:.1} MiB | {:.1} MiB | {:.2} |",
        mib(rss0),
        mib(rss1),
        rss1 as f64 / rss0 as f64
    );
    println!(
        "| RSS per suspended task | | {:.0} bytes | |",
        (rss1 as f64 - rss0 as f64) / n as f64
    );
    let secs = |d: Duration| d.as_secs_f64();
    println!(
        "| clean stop | {:.3} s | {:.3} s | {:.2} |",
        secs(stop0),
        secs(stop1),
        secs(stop1) / secs(stop0)
    );
    println!(
        "| restart, until a new task has run | {:.3} s | {:.3} s | {:.2} |",
        secs(start0),
        secs(start1),
        secs(start1) / secs(start0)
    );
    println!(
        "| an event right after the restart → its task done | {:.1} ms | {:.1} ms | {:.2} |",
        after0.as_secs_f64() * 1e3,
        after1.as_secs_f64() * 1e3,
        after1.as_secs_f64() / after0.as_secs_f64()
    );
    println!(
        "| an event to a suspended task, warm (before any stop) | {:.1} ms | | |",
        ev0.as_secs_f64() * 1e3
    );
    println!(
        "| timer lag p50 ({samples} timers) | {:.2} ms | {:.2} ms | {:.2} |",
        ms(&lag0, 0.5),
        ms(&lag1, 0.5),
        ms(&lag1, 0.5) / ms(&lag0, 0.5)
    );
    println!(
        "| timer lag p99 | {:.2} ms | {:.2} ms | {:.2} |",
        ms(&lag0, 0.99),
        ms(&lag1, 0.99),
        ms(&lag1, 0.99) / ms(&lag0, 0.99)
    );
    println!(
        "\nAfter the restart {still} tasks were still suspended: the restart ran none of them."
    );
}

async fn steps(t: &Target, samples: usize) {
    let (tx, _rx) = mpsc::unbounded_channel::<Wake>();
    let (rt, _) = start_until_ready(t, tx).await;
    let c = rt.client();
    // Inside a run: a task of K no-op steps, less a task of none, per step.
    let k = 200u64;
    let run = |n: u64| {
        let c = c.clone();
        async move {
            let t0 = Instant::now();
            let w = c
                .submit_and_wait(
                    NewTask::new("bench.steps", json!({ "n": n })),
                    Duration::from_secs(60),
                )
                .await
                .unwrap();
            assert!(w.finished);
            t0.elapsed()
        }
    };
    run(k).await;
    let mut with = Vec::new();
    let mut without = Vec::new();
    for _ in 0..5 {
        with.push(run(k).await);
        without.push(run(0).await);
    }
    with.sort();
    without.sort();
    let per_step = (with[2].saturating_sub(without[2])).as_secs_f64() / k as f64;
    // One raw autocommit INSERT on a plain table, beside it.
    let mut raw = hist();
    // The same statements on either database's own connection.
    macro_rules! raw_inserts {
        ($conn:expr, $create:expr) => {{
            let mut conn = $conn;
            sqlx::query($create).execute(&mut conn).await.unwrap();
            for i in 0..samples {
                let t0 = Instant::now();
                sqlx::query("INSERT INTO raw_steps (name, output) VALUES ($1, '1')")
                    .bind(format!("step {i}"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                raw.record(t0.elapsed().as_micros().max(1) as u64).unwrap();
            }
        }};
    }
    match rt.store().dialect() {
        courier_store::Dialect::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&t.url).await.unwrap();
            sqlx::query("PRAGMA synchronous = FULL")
                .execute(&mut conn)
                .await
                .unwrap();
            raw_inserts!(
                conn,
                "CREATE TABLE raw_steps (id INTEGER PRIMARY KEY, name TEXT, output TEXT)"
            );
        }
        courier_store::Dialect::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&t.url).await.unwrap();
            let schema = t.options.pg_schema.clone().unwrap();
            sqlx::query(&format!("SET search_path TO {schema}"))
                .execute(&mut conn)
                .await
                .unwrap();
            raw_inserts!(
                conn,
                "CREATE TABLE raw_steps (id BIGSERIAL PRIMARY KEY, name TEXT, output JSONB)"
            );
        }
    }
    rt.shutdown().await;
    println!("\n### steps: {} (a task of {k} no-op steps less a task of none, median of 5; {samples} raw inserts)\n", t.label);
    println!("| what | µs | ÷ raw commit |");
    println!("|---|---|---|");
    let raw50 = raw.value_at_quantile(0.5) as f64;
    println!("| one raw autocommit `INSERT` (baseline), p50 | {raw50:.0} | 1.00 |");
    println!(
        "| one no-op `ctx.step` in a run (its journal commit included) | {:.0} | {:.2} |",
        per_step * 1e6,
        per_step * 1e6 / raw50
    );
}

async fn slots(t: &Target, n: usize) {
    let (tx, _rx) = mpsc::unbounded_channel::<Wake>();
    let (rt, _) = start_until_ready(t, tx).await;
    let c = rt.client();
    let mut plain = hist();
    for _ in 0..50 {
        let t0 = now();
        let w = c
            .submit_and_wait(NewTask::new("demo.echo", json!(1)), Duration::from_secs(10))
            .await
            .unwrap();
        let started = w.task.started_at.unwrap();
        plain
            .record((started - t0).num_microseconds().unwrap_or(0).max(1) as u64)
            .unwrap();
    }
    c.put_schedule(
        "bench-tick",
        &ScheduleSpec::new("* * * * * *", "demo.echo", json!(1)),
    )
    .await
    .unwrap();
    let filter = TaskFilter {
        schedule: Some("bench-tick".into()),
        limit: 1000,
        ..TaskFilter::default()
    };
    let tasks = loop {
        let ts = c.list(&filter).await.unwrap();
        if ts.len() >= n && ts.iter().all(|t| t.state == TaskState::Succeeded) {
            break ts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    c.delete_schedule("bench-tick").await.unwrap();
    let (mut created, mut started) = (hist(), hist());
    for task in &tasks {
        let slot: DateTime<Utc> = task
            .idempotency_key
            .as_deref()
            .and_then(|k| k.strip_prefix("schedule:bench-tick:"))
            .and_then(|s| s.parse().ok())
            .unwrap();
        let us = |at: DateTime<Utc>| (at - slot).num_microseconds().unwrap_or(0).max(1) as u64;
        created.record(us(task.created_at)).unwrap();
        started.record(us(task.started_at.unwrap())).unwrap();
    }
    rt.shutdown().await;
    println!(
        "\n### schedule slots: {} ({} slots of a per-second schedule; 50 plain tasks)\n",
        t.label,
        tasks.len()
    );
    println!("| what | p50 ms | p99 ms | p50 ÷ create→start |");
    println!("|---|---|---|---|");
    let base = ms(&plain, 0.5);
    for (what, h) in [
        ("create → start, a plain task (baseline)", &plain),
        ("slot → its task committed", &created),
        ("slot → its task started", &started),
    ] {
        println!(
            "| {what} | {:.2} | {:.2} | {:.2} |",
            ms(h, 0.5),
            ms(h, 0.99),
            ms(h, 0.5) / base
        );
    }
}

fn main() {
    let samples = env_usize("BENCH_SAMPLES", 200);
    let suspended = env_usize("BENCH_SUSPENDED", 100_000);
    let slot_count = env_usize("BENCH_SLOTS", 30);
    let dbs = dbs_from_env();
    let parts = std::env::var("BENCH_PARTS").unwrap_or_else(|_| "scale,steps,slots".into());
    log_from_env();
    actix::System::new().block_on(async move {
        let mut schemas = Vec::new();
        for which in &dbs {
            if parts.contains("steps") {
                let t = target(which, &mut schemas).await;
                steps(&t, samples).await;
            }
            if parts.contains("slots") {
                let t = target(which, &mut schemas).await;
                slots(&t, slot_count).await;
            }
            if parts.contains("scale") {
                let t = target(which, &mut schemas).await;
                scale(&t, suspended, samples).await;
            }
        }
        drop_schemas(&pg_url(), &schemas).await;
    });
}
