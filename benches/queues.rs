//! Queue semantics costs, each beside its baseline in the same run, on
//! SQLite and on PostgreSQL.
//!
//! ```text
//! cargo bench --bench queues                     # both databases, every part
//! BENCH_DB=postgres BENCH_PARTS=claim cargo bench --bench queues
//! BENCH_SAMPLES=300 BENCH_RETENTION_ROWS=1000000 cargo bench --bench queues
//! BENCH_LOG=sqlx::query=debug BENCH_PARTS=retention cargo bench --bench queues   # every statement, timed
//! ```
//!
//! | part        | measured                                                        | baseline                                      |
//! |-------------|-----------------------------------------------------------------|-----------------------------------------------|
//! | `timers`    | a delayed task's due time → its code starts; a retry's the same | a plain task's create → its code starts       |
//! | `claim`     | one claim with a concurrency limit, and with a rate limit       | one claim from a queue without limits         |
//! | `retention` | retention deleting N finished task trees in its batches         | one bulk `DELETE` of the same rows            |
//!
//! PostgreSQL comes from `DATABASE_URL` (default the local `test` database);
//! each run works in schemas of its own and drops them.

mod support;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use courier::actors::now;
use courier::{
    ExecutorConfig, NewTask, QueueUpdate, Retention, Runtime, Store, StoreOptions, TaskContext,
    TaskError, TaskOptions, TaskState,
};
use courier_store::{ExecutorRegistration, Fence, Offer, Outcome, TaskInsert};
use serde_json::{json, Value};
use support::{
    dbs_from_env, drop_schemas, env_usize, hist, log_from_env, ms, pg_url, target, Target,
};
use tokio::sync::mpsc;
use uuid::Uuid;

/// A start of a run: the task, its attempt, the wall clock and the instant.
type Start = (Uuid, i32, DateTime<Utc>, Instant);

/// Due → start for delayed tasks and retries, beside create → start.
async fn timers(t: &Target, samples: usize) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Start>();
    let rt = Runtime::builder()
        .database(t.url.clone())
        .store_options(t.options.clone())
        .register("bench.report", move |ctx: TaskContext| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((ctx.id(), ctx.attempt(), Utc::now(), Instant::now()));
                if ctx.input()["fail_first"] == true && ctx.attempt() == 1 {
                    return Err(TaskError::failed("first attempt fails"));
                }
                Ok::<Value, TaskError>(Value::Null)
            }
        })
        .executor(ExecutorConfig {
            retention: Retention::forever(),
            ..ExecutorConfig::default()
        })
        .start()
        .await
        .expect("runtime");
    let c = rt.client();
    let (mut plain, mut delayed, mut retry) = (hist(), hist(), hist());
    let late_us = |due: DateTime<Utc>, at: DateTime<Utc>| {
        (at - due).num_microseconds().unwrap_or(0).max(1) as u64
    };
    for i in 0..samples + 10 {
        let warm = i < 10;
        // A plain task: create → start.
        let t0 = Instant::now();
        let task = c
            .submit(NewTask::new("bench.report", json!({})))
            .await
            .unwrap()
            .task;
        let (id, _, _, at) = rx.recv().await.unwrap();
        assert_eq!(id, task.id);
        if !warm {
            plain.record((at - t0).as_micros().max(1) as u64).unwrap();
        }
        // Each task is over before the next begins: no sample pays for the
        // writes of the one before.
        c.wait(task.id, Duration::from_secs(10)).await.unwrap();
        // A delayed task: its run_at → start.
        let task = c
            .submit(NewTask::new("bench.report", json!({})).delay(Duration::from_millis(20)))
            .await
            .unwrap()
            .task;
        let due = task.run_at.expect("scheduled");
        let (id, _, wall, _) = rx.recv().await.unwrap();
        assert_eq!(id, task.id);
        if !warm {
            delayed.record(late_us(due, wall)).unwrap();
        }
        c.wait(task.id, Duration::from_secs(10)).await.unwrap();
        // A retry: the run_at its backoff gave → the second attempt starts.
        let task = c
            .submit(
                NewTask::new("bench.report", json!({"fail_first": true}))
                    .max_attempts(2)
                    .backoff(Duration::from_millis(60)),
            )
            .await
            .unwrap()
            .task;
        let (id, attempt, _, _) = rx.recv().await.unwrap();
        assert_eq!((id, attempt), (task.id, 1));
        let due = loop {
            let t = c.get(task.id).await.unwrap();
            if t.state == TaskState::Scheduled {
                break t.run_at.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let (id, attempt, wall, _) = rx.recv().await.unwrap();
        assert_eq!((id, attempt), (task.id, 2));
        if !warm {
            retry.record(late_us(due, wall)).unwrap();
        }
        c.wait(task.id, Duration::from_secs(10)).await.unwrap();
    }
    rt.shutdown().await;
    println!("\n### timers: {} ({samples} samples each)\n", t.label);
    println!("| what | p50 ms | p99 ms | p50 ÷ create→start |");
    println!("|---|---|---|---|");
    let base = ms(&plain, 0.5);
    for (what, h) in [
        ("create → start, a plain task (baseline)", &plain),
        ("due → start, a delayed task", &delayed),
        ("due → start, a retry", &retry),
    ] {
        println!(
            "| {what} | {:.2} | {:.2} | {:.2} |",
            ms(h, 0.5),
            ms(h, 0.99),
            ms(h, 0.5) / base
        );
    }
}

fn insert(queue: &str) -> TaskInsert {
    TaskInsert {
        id: Uuid::now_v7(),
        kind: "bench.k".into(),
        input: json!({}),
        idempotency_key: None,
        trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
        created_by: "bench".into(),
        options: TaskOptions::new().queue(queue).resolve(now()),
        schedule: None,
        created_at: now(),
    }
}

/// One claim with each kind of queue limit, beside one without limits.
async fn claim(t: &Target, samples: usize) {
    let store = Store::connect_with(&t.url, t.options.clone())
        .await
        .unwrap();
    let queues = ["free", "limited", "rated"];
    store
        .register_executor(&ExecutorRegistration {
            id: "bench-claimer".into(),
            node: "bench".into(),
            host: "bench".into(),
            pid: 0,
            process: None,
            offer: Offer {
                kinds: vec!["bench.k".into()],
                queues: queues.iter().map(|q| q.to_string()).collect(),
                kind_options: Default::default(),
            },
            capacity: 1,
        })
        .await
        .unwrap();
    // Limits that never bind: what they cost, not what they hold back.
    store
        .update_queue("limited", &QueueUpdate::default().concurrency(1_000_000))
        .await
        .unwrap();
    store
        .update_queue("rated", &QueueUpdate::default().rate_per_s(1_000_000.0))
        .await
        .unwrap();
    for q in queues {
        let batch: Vec<TaskInsert> = (0..samples + 20).map(|_| insert(q)).collect();
        for chunk in batch.chunks(500) {
            store.create_tasks(chunk, None).await.unwrap();
        }
    }
    let mut h = [hist(), hist(), hist()];
    for i in 0..samples + 20 {
        for (qi, q) in queues.iter().enumerate() {
            let t0 = Instant::now();
            let got = store
                .claim("bench-claimer", &[q.to_string()], &["bench.k".into()], 1)
                .await
                .unwrap();
            let took = t0.elapsed();
            let task = &got.tasks[0];
            if i >= 20 {
                h[qi].record(took.as_micros().max(1) as u64).unwrap();
            }
            let fence = Fence {
                task_id: task.id,
                executor_id: "bench-claimer".into(),
                epoch: task.epoch,
            };
            store
                .finish(&fence, &Outcome::Succeeded(Value::Null))
                .await
                .unwrap();
        }
    }
    store.close().await;
    println!("\n### claim: {} ({samples} claims each)\n", t.label);
    println!("| queue | p50 ms | p99 ms | p50 ÷ no limit |");
    println!("|---|---|---|---|");
    let base = ms(&h[0], 0.5);
    for (what, h) in [
        ("no limit (baseline)", &h[0]),
        (
            "concurrency limit (locks the queue row, counts its running tasks)",
            &h[1],
        ),
        ("rate limit (locks the queue row, takes a token)", &h[2]),
    ] {
        println!(
            "| {what} | {:.3} | {:.3} | {:.2} |",
            ms(h, 0.5),
            ms(h, 0.99),
            ms(h, 0.5) / base
        );
    }
}

/// Fills the store with `n` finished task trees, old enough for any
/// retention: roots with one sub-task each every tenth, three history lines
/// a task, as a real run leaves them. Written by SQL, not by running tasks,
/// with ids that sort by time as UUID v7 ids do (a sub-task's beside its
/// parent's) and a second between roots, so the oldest are deleted first
/// and lie together, as they would.
async fn fill_finished(store: &Store, url: &str, options: &StoreOptions, n: usize) {
    let _ = store;
    let finished = "'2000-01-01T00:00:00Z'";
    let sqls: Vec<String> = if url.starts_with("sqlite:") {
        vec![
            format!(
                "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) \
                 INSERT INTO tasks (id, kind, state, input, trace_id, created_at, updated_at, finished_at, \
                     parent_id, spawn_seq, parent_attempt, attempts, epoch) \
                 SELECT unhex(printf('%012x7%03x%016x', 1500000000000 + i * 1000, abs(random()) % 4096, abs(random()))), \
                     'bench.k', 'succeeded', '{{}}', 'x', {at}, {at}, {at}, NULL, NULL, NULL, 1, 1 FROM s",
                at = "strftime('%Y-%m-%dT%H:%M:%SZ', '2000-01-01', '+' || i || ' seconds')"
            ),
            format!(
                "INSERT INTO tasks (id, kind, state, input, trace_id, created_at, updated_at, finished_at, \
                     parent_id, spawn_seq, parent_attempt, attempts, epoch) \
                 SELECT unhex(substr(hex(id), 1, 12) || printf('7%03x%016x', abs(random()) % 4096, abs(random()))), \
                     'bench.k', 'succeeded', '{{}}', 'x', finished_at, finished_at, finished_at, \
                     id, 0, 1, 1, 1 FROM tasks WHERE parent_id IS NULL AND (abs(random()) % 10) = 0"
            ),
            format!(
                "INSERT INTO task_history (task_id, from_state, to_state, changed_by, owner, attempt, at) \
                 SELECT id, 'pending', 'running', 'e', NULL, 1, {finished} FROM tasks"
            ),
            format!(
                "INSERT INTO task_history (task_id, from_state, to_state, changed_by, owner, attempt, at) \
                 SELECT id, 'running', 'succeeded', 'e', 'e', 1, {finished} FROM tasks"
            ),
        ]
    } else {
        vec![
            format!(
                "INSERT INTO tasks (id, kind, state, input, trace_id, created_at, updated_at, finished_at, \
                     parent_id, spawn_seq, parent_attempt, attempts, epoch) \
                 SELECT (lpad(to_hex(1500000000000 + i * 1000), 12, '0') || '7' || substr(md5(random()::text), 1, 19))::uuid, \
                     'bench.k', 'succeeded', '{{}}', 'x', {at}, {at}, {at}, NULL, NULL, NULL, 1, 1 \
                 FROM generate_series(1, {n}) AS i",
                at = "timestamptz '2000-01-01T00:00:00Z' + i * interval '1 second'"
            ),
            format!(
                "INSERT INTO tasks (id, kind, state, input, trace_id, created_at, updated_at, finished_at, \
                     parent_id, spawn_seq, parent_attempt, attempts, epoch) \
                 SELECT (substr(replace(id::text, '-', ''), 1, 12) || '7' || substr(md5(random()::text), 1, 19))::uuid, \
                     'bench.k', 'succeeded', '{{}}', 'x', finished_at, finished_at, finished_at, \
                     id, 0, 1, 1, 1 FROM tasks WHERE parent_id IS NULL AND random() < 0.1"
            ),
            format!(
                "INSERT INTO task_history (task_id, from_state, to_state, changed_by, owner, attempt, at) \
                 SELECT id, 'pending', 'running', 'e', NULL, 1, {finished} FROM tasks"
            ),
            format!(
                "INSERT INTO task_history (task_id, from_state, to_state, changed_by, owner, attempt, at) \
                 SELECT id, 'running', 'succeeded', 'e', 'e', 1, {finished} FROM tasks"
            ),
            "ANALYZE".into(),
        ]
    };
    raw(url, options, &sqls).await;
}

/// Runs statements on the target's database outside courier.
async fn raw(url: &str, options: &StoreOptions, sqls: &[String]) {
    use sqlx::Connection;
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        for s in sqls {
            sqlx::query(s).execute(&mut c).await.unwrap();
        }
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        let schema = options.pg_schema.as_deref().unwrap();
        sqlx::query(&format!("SET search_path TO {schema}"))
            .execute(&mut c)
            .await
            .unwrap();
        for s in sqls {
            sqlx::query(s).execute(&mut c).await.unwrap();
        }
    }
}

async fn count_tasks(url: &str, options: &StoreOptions) -> i64 {
    let store = Store::connect_with(url, options.clone()).await.unwrap();
    let n = store
        .count_by_state()
        .await
        .unwrap()
        .into_iter()
        .map(|(_, n)| n)
        .sum();
    store.close().await;
    n
}

/// Retention deleting `rows` finished roots (and their sub-tasks) in its
/// batches, beside the database deleting the same rows in bulk.
async fn retention(which: &str, rows: usize, schemas: &mut Vec<String>) {
    // Retention's own run, on a store of its own.
    let t = target(which, schemas).await;
    let store = Store::connect_with(&t.url, t.options.clone())
        .await
        .unwrap();
    let t0 = Instant::now();
    fill_finished(&store, &t.url, &t.options, rows).await;
    let fill = t0.elapsed();
    let total = count_tasks(&t.url, &t.options).await;
    let policy: Retention = "succeeded=1d".parse().unwrap();
    let mut batch = hist();
    let t0 = Instant::now();
    let mut deleted = 0u64;
    loop {
        let b0 = Instant::now();
        let counts = store.delete_expired(&policy, 200).await.unwrap();
        if counts.is_empty() {
            break;
        }
        batch
            .record(b0.elapsed().as_micros().max(1) as u64)
            .unwrap();
        deleted += counts.iter().map(|c| c.1).sum::<u64>();
    }
    let courier = t0.elapsed();
    store.close().await;
    assert_eq!(deleted as i64, total, "retention deleted every task");

    // The baseline: the same rows, deleted by three bulk statements.
    let b = target(which, schemas).await;
    let bstore = Store::connect_with(&b.url, b.options.clone())
        .await
        .unwrap();
    fill_finished(&bstore, &b.url, &b.options, rows).await;
    bstore.close().await;
    let t0 = Instant::now();
    raw(
        &b.url,
        &b.options,
        &[
            "DELETE FROM task_history".to_string(),
            "DELETE FROM tasks WHERE parent_id IS NOT NULL".to_string(),
            "DELETE FROM tasks".to_string(),
        ],
    )
    .await;
    let bulk = t0.elapsed();
    println!(
        "\n### retention: {} ({rows} finished roots, {total} tasks with sub-tasks, {} history lines; filled in {:.1} s)\n",
        t.label,
        total * 3,
        fill.as_secs_f64()
    );
    println!("| what | seconds | tasks/s | ÷ bulk DELETE |");
    println!("|---|---|---|---|");
    println!(
        "| bulk `DELETE` of the same rows (baseline) | {:.2} | {:.0} | 1.00 |",
        bulk.as_secs_f64(),
        total as f64 / bulk.as_secs_f64()
    );
    println!(
        "| retention, batches of 200 roots | {:.2} | {:.0} | {:.2} |",
        courier.as_secs_f64(),
        total as f64 / courier.as_secs_f64(),
        courier.as_secs_f64() / bulk.as_secs_f64()
    );
    println!(
        "\nOne retention batch holds the database for p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms.",
        ms(&batch, 0.5),
        ms(&batch, 0.99),
        batch.max() as f64 / 1000.0
    );
}

fn main() {
    let samples = env_usize("BENCH_SAMPLES", 200);
    let rows = env_usize("BENCH_RETENTION_ROWS", 1_000_000);
    let dbs = dbs_from_env();
    let parts = std::env::var("BENCH_PARTS").unwrap_or_else(|_| "timers,claim,retention".into());
    log_from_env();
    actix::System::new().block_on(async move {
        let mut schemas = Vec::new();
        for which in &dbs {
            if parts.contains("timers") {
                let t = target(which, &mut schemas).await;
                timers(&t, samples).await;
            }
            if parts.contains("claim") {
                let t = target(which, &mut schemas).await;
                claim(&t, samples).await;
            }
            if parts.contains("retention") {
                retention(which, rows, &mut schemas).await;
            }
        }
        drop_schemas(&pg_url(), &schemas).await;
    });
}
