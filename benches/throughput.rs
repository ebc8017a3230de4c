//! Throughput: durable no-op tasks a second (created in batches of 1,000,
//! claimed, run, finished) beside the database's own limit for a task's
//! life measured in the same run, and what one task costs: statements,
//! commits and rows written.
//!
//! ```text
//! cargo bench --bench throughput                  # SQLite and PostgreSQL
//! BENCH_DB=postgres BENCH_TASKS=50000 cargo bench --bench throughput
//! ```
//!
//! - **the database's limit**: a table with the columns a queue needs (id,
//!   kind, state, input, owner, epoch, times), and for every 1,000 tasks
//!   one `INSERT` of 1,000 rows, one claim `UPDATE … RETURNING` of 1,000
//!   (`FOR UPDATE SKIP LOCKED` on PostgreSQL), one finishing `UPDATE` of
//!   1,000, each its own commit: what a task's life costs the database
//!   when nothing else is in the way.
//! - **courier**: a runtime with one executor (capacity 256) running the
//!   no-op kind; the tasks are submitted with `Client::submit_batch` in
//!   batches of 1,000 while the executor runs them; measured from the first
//!   submit until the last task has succeeded.
//! - **per task**: statements sent (every `sqlx::query` event, counted by a
//!   tracing layer in a second, smaller run), and on PostgreSQL commits and
//!   rows inserted, updated and deleted (`pg_stat_database`).
//!
//! This machine's speed drifts by ±20 % within minutes, so the limit and
//! courier take turns, `BENCH_ROUNDS` times (default 3), each on a fresh
//! database; the table gives every round and the medians, and the ratio is
//! the median of the rounds' own ratios.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use courier::{ExecutorConfig, NewTask, Retention, Runtime, Store, TaskContext, TaskError};
use serde_json::{json, Value};
use sqlx::Connection;
use support::{dbs_from_env, drop_schemas, env_usize, median, pg_url, target, unfinished, Target};
use tracing::subscriber::Interest;
use tracing::Metadata;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

const BATCH: usize = 1000;

/// Counts sqlx's statement events while `COUNTING` is on.
static COUNTING: AtomicBool = AtomicBool::new(false);
static STATEMENTS: AtomicU64 = AtomicU64::new(0);

struct StatementCounter;

impl<S: tracing::Subscriber> Layer<S> for StatementCounter {
    fn register_callsite(&self, m: &'static Metadata<'static>) -> Interest {
        if m.target() == "sqlx::query" {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }
    fn enabled(&self, m: &Metadata<'_>, _: Context<'_, S>) -> bool {
        m.target() == "sqlx::query" && COUNTING.load(Ordering::Relaxed)
    }
    fn on_event(&self, _: &tracing::Event<'_>, _: Context<'_, S>) {
        STATEMENTS.fetch_add(1, Ordering::Relaxed);
    }
}

const RAW_DDL: &str =
    "CREATE TABLE bench_raw (id TEXT PRIMARY KEY, kind TEXT NOT NULL, state TEXT NOT NULL, \
     input TEXT NOT NULL, executor_id TEXT, epoch INTEGER NOT NULL DEFAULT 0, \
     created_at TEXT NOT NULL, updated_at TEXT NOT NULL)";
const RAW_INDEX: &str = "CREATE INDEX bench_raw_pending ON bench_raw (id) WHERE state = 'pending'";

fn raw_claim(skip: &str) -> String {
    format!(
        "UPDATE bench_raw SET state = 'running', executor_id = 'raw', epoch = epoch + 1, updated_at = $1 \
         WHERE id IN (SELECT id FROM bench_raw WHERE state = 'pending' ORDER BY id LIMIT {BATCH} {skip}) \
         RETURNING id"
    )
}

fn new_ids() -> (Vec<String>, String) {
    let ids = (0..BATCH)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    (ids, chrono::Utc::now().to_rfc3339())
}

/// The database's limit: tasks a second through insert, claim and finish,
/// 1,000 rows a statement, each statement its own commit. The connection
/// settings are the store's: on SQLite a WAL file with `synchronous=FULL`.
async fn raw_limit(t: &Target, tasks: usize) -> f64 {
    let input = json!({"x": 1}).to_string();
    let mut n = 0usize;
    if let Some(schema) = &t.options.pg_schema {
        let co: sqlx::postgres::PgConnectOptions = t.url.parse().unwrap();
        let co = co.options([("search_path", schema.as_str())]);
        let p = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_with(co)
            .await
            .unwrap();
        sqlx::query(RAW_DDL).execute(&p).await.unwrap();
        sqlx::query(RAW_INDEX).execute(&p).await.unwrap();
        let claim = raw_claim("FOR UPDATE SKIP LOCKED");
        let insert = "INSERT INTO bench_raw (id, kind, state, input, created_at, updated_at) \
                      SELECT id, 'bench.noop', 'pending', $1, $2, $2 FROM UNNEST($3::text[]) AS u(id)";
        let finish = "UPDATE bench_raw SET state = 'succeeded', updated_at = $1 \
                      WHERE id = ANY($2) AND executor_id = 'raw'";
        let t0 = Instant::now();
        while n < tasks {
            let (ids, at) = new_ids();
            sqlx::query(insert)
                .bind(&input)
                .bind(&at)
                .bind(&ids)
                .execute(&p)
                .await
                .unwrap();
            let claimed: Vec<String> = sqlx::query_scalar(&claim)
                .bind(&at)
                .fetch_all(&p)
                .await
                .unwrap();
            assert_eq!(claimed.len(), BATCH);
            let done = sqlx::query(finish)
                .bind(&at)
                .bind(&claimed)
                .execute(&p)
                .await
                .unwrap();
            assert_eq!(done.rows_affected(), BATCH as u64);
            n += BATCH;
        }
        let rate = n as f64 / t0.elapsed().as_secs_f64();
        p.close().await;
        rate
    } else {
        let co: sqlx::sqlite::SqliteConnectOptions = t.url.parse().unwrap();
        let co = co
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
        let p = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(co)
            .await
            .unwrap();
        sqlx::query(RAW_DDL).execute(&p).await.unwrap();
        sqlx::query(RAW_INDEX).execute(&p).await.unwrap();
        let claim = raw_claim("");
        let list = |from: usize| {
            (0..BATCH)
                .map(|i| format!("${}", i + from))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let values = (0..BATCH)
            .map(|i| format!("(${}, 'bench.noop', 'pending', $1, $2, $2)", i + 3))
            .collect::<Vec<_>>()
            .join(", ");
        let insert = format!(
            "INSERT INTO bench_raw (id, kind, state, input, created_at, updated_at) VALUES {values}"
        );
        let finish = format!(
            "UPDATE bench_raw SET state = 'succeeded', updated_at = $1 WHERE id IN ({}) AND executor_id = 'raw'",
            list(2)
        );
        let t0 = Instant::now();
        while n < tasks {
            let (ids, at) = new_ids();
            let mut q = sqlx::query(&insert).bind(&input).bind(&at);
            for id in &ids {
                q = q.bind(id);
            }
            q.execute(&p).await.unwrap();
            let claimed: Vec<String> = sqlx::query_scalar(&claim)
                .bind(&at)
                .fetch_all(&p)
                .await
                .unwrap();
            assert_eq!(claimed.len(), BATCH);
            let mut q = sqlx::query(&finish).bind(&at);
            for id in &claimed {
                q = q.bind(id);
            }
            assert_eq!(q.execute(&p).await.unwrap().rows_affected(), BATCH as u64);
            n += BATCH;
        }
        let rate = n as f64 / t0.elapsed().as_secs_f64();
        p.close().await;
        rate
    }
}

/// The PostgreSQL counters of the database: commits, and rows inserted,
/// updated and deleted.
async fn pg_counters() -> [i64; 4] {
    let mut c = sqlx::PgConnection::connect(&pg_url()).await.unwrap();
    // Counters reach the shared statistics when a backend goes idle; give
    // them a moment.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r: (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted FROM pg_stat_database \
         WHERE datname = current_database()",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    [r.0, r.1, r.2, r.3]
}

struct Courier {
    tasks_per_s: f64,
}

/// courier: `tasks` no-op tasks submitted in batches while one executor
/// runs them.
async fn courier_run(t: &Target, tasks: usize) -> Courier {
    // Runs are counted as they happen, so that the wait below reads the
    // database only at the end (a count of 20,000 rows every few
    // milliseconds would take a share of the machine being measured).
    let ran = std::sync::Arc::new(AtomicU64::new(0));
    let counter = ran.clone();
    let mut options = t.options.clone();
    if let Ok(n) = std::env::var("BENCH_CONNS") {
        options.max_connections = n.parse().ok();
    }
    let rt = Runtime::builder()
        .database(t.url.clone())
        .store_options(options)
        .register("bench.noop", move |_ctx: TaskContext| {
            counter.fetch_add(1, Ordering::Relaxed);
            async move { Ok::<Value, TaskError>(Value::Null) }
        })
        .executor(ExecutorConfig {
            retention: Retention::forever(),
            capacity: env_usize("BENCH_CAPACITY", 256) as u32,
            ..ExecutorConfig::default()
        })
        .start()
        .await
        .unwrap();
    let client = rt.client();
    let store = rt.store().clone();
    let t0 = Instant::now();
    let submitter = {
        let client = client.clone();
        actix::spawn(async move {
            let mut left = tasks;
            while left > 0 {
                let n = left.min(BATCH);
                let batch = (0..n)
                    .map(|i| NewTask::new("bench.noop", json!({"i": i})))
                    .collect();
                client.submit_batch(batch).await.unwrap();
                left -= n;
            }
        })
    };
    while (ran.load(Ordering::Relaxed) as usize) < tasks {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Every task has run; once none is left unfinished, every end is
    // committed (a task here can only succeed).
    while unfinished(&store).await > 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    submitter.await.unwrap();
    rt.shutdown().await;
    Courier {
        tasks_per_s: tasks as f64 / secs,
    }
}

fn main() {
    let tasks = env_usize("BENCH_TASKS", 20_000);
    let rounds = env_usize("BENCH_ROUNDS", 3).max(1);
    let counted = env_usize("BENCH_COUNTED_TASKS", 2_000);
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(StatementCounter))
        .unwrap();
    let mut out = format!(
        "### Durable no-op tasks a second: created in batches of {BATCH}, claimed, run, finished\n\n\
         {tasks} tasks; the limit: the same life in bare statements of {BATCH} rows, each its own commit, \
         in the same run, the two taking turns {rounds} times (medians; each round's figures in brackets). \
         Per task: statements counted over {counted} more tasks; commits and rows from \
         `pg_stat_database` (PostgreSQL).\n\n\
         | database | the database's limit (tasks/s) | courier (tasks/s) | courier ÷ limit | statements per task | commits per task | rows inserted / updated / deleted per task |\n\
         |---|---|---|---|---|---|---|\n"
    );
    actix::System::new().block_on(async {
        let mut schemas = Vec::new();
        for db in dbs_from_env() {
            let (mut limits, mut rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            let mut label = "";
            for _ in 0..rounds {
                let raw_t = target(&db, &mut schemas).await;
                let limit = raw_limit(&raw_t, tasks).await;
                let t = target(&db, &mut schemas).await;
                label = t.label;
                let c = courier_run(&t, tasks).await;
                eprintln!("{db}: limit {limit:.0}/s, courier {:.0}/s", c.tasks_per_s);
                limits.push(limit);
                rates.push(c.tasks_per_s);
                ratios.push(c.tasks_per_s / limit * 100.0);
            }
            // Every round's figure, to show beside the median.
            let each = |v: &[f64], decimals: usize, unit: &str| {
                v.iter()
                    .map(|x| format!("{x:.decimals$}{unit}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            // A second, smaller run on a fresh database, counted. Its
            // schema is made first, so that the catalog rows of the
            // migrations are not counted as the tasks' rows.
            let t2 = target(&db, &mut schemas).await;
            Store::connect_with(&t2.url, t2.options.clone())
                .await
                .unwrap()
                .close()
                .await;
            let before = if db == "postgres" {
                Some(pg_counters().await)
            } else {
                None
            };
            STATEMENTS.store(0, Ordering::Relaxed);
            COUNTING.store(true, Ordering::Relaxed);
            courier_run(&t2, counted).await;
            COUNTING.store(false, Ordering::Relaxed);
            let statements = STATEMENTS.load(Ordering::Relaxed) as f64 / counted as f64;
            let (commits, rows) = match before {
                Some(b) => {
                    let a = pg_counters().await;
                    let per = |i: usize| (a[i] - b[i]) as f64 / counted as f64;
                    (
                        format!("{:.2}", per(0)),
                        format!("{:.2} / {:.2} / {:.2}", per(1), per(2), per(3)),
                    )
                }
                None => ("—".into(), "—".into()),
            };
            out += &format!(
                "| {label} | {:.0} [{}] | {:.0} [{}] | {:.1} % [{}] | {statements:.1} | {commits} | {rows} |\n",
                median(&limits),
                each(&limits, 0, ""),
                median(&rates),
                each(&rates, 0, ""),
                median(&ratios),
                each(&ratios, 1, " %"),
            );
        }
        drop_schemas(&pg_url(), &schemas).await;
    });
    println!("{out}");
}
