//! In-process flow costs, each beside the raw cost of the same database
//! writes measured in the same run, on SQLite and on PostgreSQL.
//!
//! ```text
//! cargo bench --bench flow                      # both databases
//! BENCH_DB=sqlite cargo bench --bench flow      # one of them
//! BENCH_SAMPLES=1000 BENCH_TASKS=4000 cargo bench --bench flow
//! ```
//!
//! PostgreSQL comes from `DATABASE_URL` (default the local `test` database);
//! the benchmark works in a schema of its own and drops it afterwards.
//!
//! What is measured, per database:
//!
//! | row                  | what                                                                  |
//! |----------------------|-----------------------------------------------------------------------|
//! | create→start         | `Client::submit` called → the task's code starts on the executor     |
//! | submit→finished      | `Client::submit_and_wait` round trip of a no-op task                  |
//! | tasks/s              | no-op tasks created and finished per second, 32 concurrent submitters |
//!
//! and the baselines, on the same database in the same run:
//!
//! | baseline     | what                                                                             |
//! |--------------|----------------------------------------------------------------------------------|
//! | raw SQL      | the bare minimum a durable task needs: INSERT, UPDATE to running, UPDATE to done, |
//! |              | autocommit statements on a plain table with a primary key                          |
//! | store writes | the same three writes through courier's `Store` (courier's schema, its indexes    |
//! |              | and history triggers), with no actor, bus or waiter                                |
//!
//! The ratio courier / raw SQL is the figure to watch: what the runtime costs
//! on top of the writes that durability requires.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use courier::{ExecutorConfig, NewTask, Runtime, StoreOptions, TaskContext, TaskError};
use courier_store::{ExecutorRegistration, Fence, Outcome, TaskInsert};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use support::{calls_per_second, create_schema, drop_schemas, env_usize, hist, pg_url};
use tokio::sync::{mpsc, Mutex};

use uuid::Uuid;

struct Stats {
    p50_us: f64,
    p99_us: f64,
}

fn stats(h: &Histogram<u64>) -> Stats {
    Stats {
        p50_us: h.value_at_quantile(0.50) as f64,
        p99_us: h.value_at_quantile(0.99) as f64,
    }
}

struct Db {
    label: &'static str,
    url: String,
    options: StoreOptions,
    schema: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite() -> Db {
    let dir = tempfile::tempdir().unwrap();
    Db {
        label: "SQLite (file, WAL, synchronous=FULL)",
        url: format!("sqlite://{}", dir.path().join("bench.db").display()),
        options: StoreOptions::default(),
        schema: None,
        _dir: Some(dir),
    }
}

async fn postgres() -> Db {
    let url = pg_url();
    let schema = create_schema(&url).await;
    Db {
        label: "PostgreSQL (local, TCP)",
        url,
        options: StoreOptions {
            pg_schema: Some(schema.clone()),
            max_connections: Some(16),
            ..StoreOptions::default()
        },
        schema: Some(schema),
        _dir: None,
    }
}

/// The raw baseline: three autocommit statements per task on a plain table,
/// through a pool of its own with the same connection settings as courier's.
#[derive(Clone)]
enum Raw {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

macro_rules! on_raw {
    ($raw:expr, $p:ident => $body:expr) => {
        match $raw {
            Raw::Sqlite($p) => $body,
            Raw::Postgres($p) => $body,
        }
    };
}

impl Raw {
    async fn setup(db: &Db) -> Raw {
        use std::str::FromStr;
        if db.url.starts_with("sqlite:") {
            let o = sqlx::sqlite::SqliteConnectOptions::from_str(&db.url)
                .unwrap()
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(30));
            let p = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(o)
                .await
                .unwrap();
            sqlx::query("CREATE TABLE IF NOT EXISTS bench_raw (id BLOB PRIMARY KEY, state TEXT NOT NULL, input TEXT NOT NULL, output TEXT)")
                .execute(&p).await.unwrap();
            Raw::Sqlite(p)
        } else {
            let mut o = sqlx::postgres::PgConnectOptions::from_str(&db.url).unwrap();
            if let Some(s) = &db.schema {
                o = o.options([("search_path", s.as_str())]);
            }
            let p = sqlx::postgres::PgPoolOptions::new()
                .max_connections(16)
                .connect_with(o)
                .await
                .unwrap();
            sqlx::query("CREATE TABLE IF NOT EXISTS bench_raw (id UUID PRIMARY KEY, state TEXT NOT NULL, input JSONB NOT NULL, output JSONB)")
                .execute(&p).await.unwrap();
            Raw::Postgres(p)
        }
    }

    async fn create(&self, id: Uuid) {
        on_raw!(self, p => sqlx::query("INSERT INTO bench_raw (id, state, input) VALUES ($1, 'pending', $2)")
            .bind(id).bind(sqlx::types::Json(json!({}))).execute(p).await.map(|_| ())).unwrap();
    }

    async fn start(&self, id: Uuid) {
        on_raw!(self, p => sqlx::query("UPDATE bench_raw SET state = 'running' WHERE id = $1 AND state = 'pending'")
            .bind(id).execute(p).await.map(|_| ())).unwrap();
    }

    async fn finish(&self, id: Uuid) {
        on_raw!(self, p => sqlx::query("UPDATE bench_raw SET state = 'succeeded', output = $2 WHERE id = $1 AND state = 'running'")
            .bind(id).bind(sqlx::types::Json(json!({}))).execute(p).await.map(|_| ())).unwrap();
    }

    async fn close(&self) {
        on_raw!(self, p => p.close().await)
    }
}

struct Row {
    what: &'static str,
    courier: Stats,
    raw: Stats,
    store: Stats,
}

async fn bench_db(db: Db, samples: usize, tasks: usize) -> String {
    let (tx, rx) = mpsc::unbounded_channel::<Instant>();
    let rx = Arc::new(Mutex::new(rx));
    let rt = Runtime::builder()
        .database(db.url.clone())
        .store_options(db.options.clone())
        .executor(ExecutorConfig {
            capacity: 256,
            ..ExecutorConfig::default()
        })
        .register("bench.noop", move |ctx: TaskContext| {
            let tx = tx.clone();
            async move {
                if ctx.input()["report"] == json!(true) {
                    let _ = tx.send(Instant::now());
                }
                Ok::<Value, TaskError>(Value::Null)
            }
        })
        .start()
        .await
        .expect("runtime");
    let c = rt.client();
    let store = rt.store().clone();
    let raw = Raw::setup(&db).await;
    store
        .register_executor(&ExecutorRegistration {
            id: "bench-baseline".into(),
            node: "bench".into(),
            host: "bench".into(),
            pid: 0,
            process: None,
            offer: courier_store::Offer {
                kinds: vec!["bench.baseline".into()],
                queues: vec!["bench-baseline".into()],
                kind_options: Default::default(),
            },
            capacity: 1,
        })
        .await
        .unwrap();

    // Warm-up: connections, statement caches, the executor.
    for _ in 0..50 {
        c.submit_and_wait(
            NewTask::new("bench.noop", json!({})),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        let id = Uuid::now_v7();
        raw.create(id).await;
        raw.start(id).await;
        raw.finish(id).await;
    }

    // Interleave the three so that a noisy spell hits all of them alike.
    let (mut c_start, mut c_rt, mut r_start, mut r_rt, mut s_start, mut s_rt) =
        (hist(), hist(), hist(), hist(), hist(), hist());
    for _ in 0..samples {
        // courier: create → start
        let t0 = Instant::now();
        let t = c
            .submit(NewTask::new("bench.noop", json!({"report": true})))
            .await
            .unwrap()
            .task;
        let started = rx.lock().await.recv().await.unwrap();
        c_start
            .record((started - t0).as_micros().max(1) as u64)
            .unwrap();
        let (_, fin) = c.wait(t.id, Duration::from_secs(10)).await.unwrap();
        assert!(fin, "a no-op task did not finish within 10 s");

        // courier: submit → finished
        let t0 = Instant::now();
        let w = c
            .submit_and_wait(
                NewTask::new("bench.noop", json!({})),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        assert!(w.finished);
        c_rt.record(t0.elapsed().as_micros().max(1) as u64).unwrap();

        // raw SQL
        let id = Uuid::now_v7();
        let t0 = Instant::now();
        raw.create(id).await;
        raw.start(id).await;
        r_start
            .record(t0.elapsed().as_micros().max(1) as u64)
            .unwrap();
        raw.finish(id).await;
        r_rt.record(t0.elapsed().as_micros().max(1) as u64).unwrap();

        // store writes (the baseline's executor row must look alive, or the
        // real executor's failure detector declares it dead)
        assert!(store.heartbeat("bench-baseline", 0).await.unwrap());
        let t0 = Instant::now();
        let ins = TaskInsert {
            id: Uuid::now_v7(),
            kind: "bench.baseline".into(),
            input: json!({}),
            idempotency_key: None,
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            created_by: "bench".into(),
            // A queue of its own: the real executor never claims these.
            options: courier::TaskOptions::new()
                .queue("bench-baseline")
                .resolve(courier::actors::now()),
            schedule: None,
            created_at: chrono::Utc::now(),
        };
        let (task, _) = store.create_task(&ins).await.unwrap();
        let claimed = store
            .claim(
                "bench-baseline",
                &["bench-baseline".into()],
                &["bench.baseline".into()],
                1,
            )
            .await
            .unwrap()
            .tasks
            .remove(0);
        assert_eq!(claimed.id, task.id);
        s_start
            .record(t0.elapsed().as_micros().max(1) as u64)
            .unwrap();
        let fence = Fence {
            task_id: claimed.id,
            executor_id: "bench-baseline".into(),
            epoch: claimed.epoch,
        };
        store
            .finish(&fence, &Outcome::Succeeded(Value::Null))
            .await
            .unwrap();
        s_rt.record(t0.elapsed().as_micros().max(1) as u64).unwrap();
    }
    let rows = [
        Row {
            what: "create→start",
            courier: stats(&c_start),
            raw: stats(&r_start),
            store: stats(&s_start),
        },
        Row {
            what: "submit→finished",
            courier: stats(&c_rt),
            raw: stats(&r_rt),
            store: stats(&s_rt),
        },
    ];

    // Throughput: 32 concurrent submitters, each submit_and_wait in a loop.
    let conc = 32;
    let per = tasks / conc;
    let courier_tps = calls_per_second(conc, per, || {
        let c = c.clone();
        move || {
            let c = c.clone();
            async move {
                let w = c
                    .submit_and_wait(
                        NewTask::new("bench.noop", json!({})),
                        Duration::from_secs(60),
                    )
                    .await
                    .unwrap();
                assert!(w.finished);
            }
        }
    })
    .await;
    let raw_tps = calls_per_second(conc, per, || {
        let raw = raw.clone();
        move || {
            let raw = raw.clone();
            async move {
                let id = Uuid::now_v7();
                raw.create(id).await;
                raw.start(id).await;
                raw.finish(id).await;
            }
        }
    })
    .await;

    rt.shutdown().await;
    store.close().await;
    raw.close().await;
    if let Some(schema) = &db.schema {
        drop_schemas(&db.url, std::slice::from_ref(schema)).await;
    }

    let mut out = format!(
        "### {}\n\n{samples} sequential samples per row; throughput over {} tasks, {conc} concurrent submitters.\n\n\
         | flow | courier p50 | courier p99 | raw SQL p50 | raw SQL p99 | store writes p50 | ratio courier/raw (p50) | ratio courier/store (p50) |\n\
         |---|---|---|---|---|---|---|---|\n",
        db.label,
        per * conc
    );
    for r in rows {
        out += &format!(
            "| {} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | {:.2}× | {:.2}× |\n",
            r.what,
            r.courier.p50_us,
            r.courier.p99_us,
            r.raw.p50_us,
            r.raw.p99_us,
            r.store.p50_us,
            r.courier.p50_us / r.raw.p50_us,
            r.courier.p50_us / r.store.p50_us,
        );
    }
    out += &format!(
        "\n| throughput | courier | raw SQL (3 statements per task) | ratio courier/raw |\n|---|---|---|---|\n\
         | durable no-op tasks/s | {courier_tps:.0} | {raw_tps:.0} | {:.2}× |\n",
        courier_tps / raw_tps
    );
    out
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    if std::env::var("RUST_LOG").is_ok() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let which = std::env::var("BENCH_DB").unwrap_or_else(|_| "all".into());
    let samples = env_usize("BENCH_SAMPLES", 500);
    let tasks = env_usize("BENCH_TASKS", 3200);
    let sys = actix::System::new();
    let report = sys.block_on(async move {
        let mut report = String::new();
        if which == "all" || which == "sqlite" {
            report += &bench_db(sqlite().await, samples, tasks).await;
            report += "\n";
        }
        if which == "all" || which == "postgres" {
            report += &bench_db(postgres().await, samples, tasks).await;
        }
        report
    });
    println!("{report}");
}
