//! Plans that cannot degrade (issue 24, point 1).
//!
//! A deployment that sat idle has statistics that say "no task is
//! pending": autovacuum analysed a table of finished tasks. Then a burst
//! comes. A statement whose plan was chosen from those statistics (and, on
//! PostgreSQL, cached as a generic plan) can cost in proportion to the
//! whole backlog for every call: the claim once became a nested-loop
//! semi-join of every pending task against the picked ids, 290 ms a claim.
//!
//! Each test builds that state for real: 100,000 finished tasks,
//! `ANALYZE`, then a backlog of 100,000 pending ones the statistics know
//! nothing of. It then runs courier's whole hot path against it through a
//! real runtime (sync waits, batches, keyed creates, a fan-out, events,
//! durable timers, delayed tasks, journaled steps, retries, a cancel, the
//! list pages and counters, and the retention sweep deleting the old
//! tasks), captures every statement the store sends, and judges each one's
//! plan:
//!
//! - PostgreSQL: every session runs with `plan_cache_mode =
//!   force_generic_plan`, and `auto_explain` (with `ANALYZE`, nested
//!   statements included, so trigger bodies are judged too) hands each
//!   executed plan back to the client as a notice. No plan may scan a big
//!   table sequentially, and the rows that pass through all of a plan's
//!   nodes (actual rows × loops, summed) must stay under [`ROW_BOUND`], a
//!   tenth of the rows in the table: a plan that walks the backlog, or
//!   rescans it once per picked row, passes 100,000 rows and more.
//! - SQLite: every statement's `EXPLAIN QUERY PLAN`, under the statistics
//!   of that quiet `ANALYZE`: no full scan of a big table.
//!
//! The bound on rows is the deterministic form of "its time on a backlog
//! of 100,000": a plan's time follows the rows it touches, and a count of
//! rows does not depend on how busy the machine is. The slowest
//! statements' times are printed for a reader.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use common::{fast_executor, until_state, TestDb};
use courier::{NewTask, Retention, Runtime, TaskFilter, TaskOptions, TaskState};
use serde_json::{json, Value};
use sqlx::Connection;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Finished tasks (each with an event and a journaled step) analysed while
/// nothing was pending, and the backlog that came after.
const FINISHED: i64 = 100_000;
const BACKLOG: i64 = 100_000;
/// The most rows one statement's plan may pass through: the largest batch
/// the workload sends is 1,000 tasks, and a statement touches a handful of
/// rows for each of its own (the task, its history line, its counter).
const ROW_BOUND: f64 = 20_000.0;
/// The tables that grow with the number of tasks.
const BIG: &[&str] = &["tasks", "task_events", "task_history", "task_steps"];
const WAIT: Duration = Duration::from_secs(60);

/// What the store sent, as sqlx reports it through `tracing`.
#[derive(Default)]
struct Captured {
    /// PostgreSQL notices: `auto_explain`'s plans.
    notices: Vec<String>,
    /// Every statement's text.
    statements: BTreeSet<String>,
}

fn captured() -> &'static Mutex<Captured> {
    static C: OnceLock<Mutex<Captured>> = OnceLock::new();
    C.get_or_init(Default::default)
}

/// One test at a time: the capture is global.
fn serial() -> &'static tokio::sync::Mutex<()> {
    static S: OnceLock<tokio::sync::Mutex<()>> = OnceLock::new();
    S.get_or_init(Default::default)
}

struct Capture;

#[derive(Default)]
struct Fields {
    message: Option<String>,
    statement: Option<String>,
    summary: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = Some(value.to_string()),
            "db.statement" => self.statement = Some(value.to_string()),
            "summary" => self.summary = Some(value.to_string()),
            _ => {}
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = Some(format!("{value:?}")),
            "summary" => self.summary = Some(format!("{value:?}")),
            _ => {}
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let mut c = captured().lock().unwrap();
        match event.metadata().target() {
            "sqlx::postgres::notice" => c.notices.extend(f.message),
            "sqlx::query" => {
                // sqlx gives the whole text as `db.statement` when it is
                // longer than its summary, else as the summary.
                let text = f.statement.filter(|s| !s.trim().is_empty()).or(f.summary);
                if let Some(t) = text {
                    c.statements
                        .insert(t.trim().trim_end_matches(" …").to_string());
                }
            }
            _ => {}
        }
    }
}

fn install() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        use tracing_subscriber::filter::{LevelFilter, Targets};
        use tracing_subscriber::Layer;
        let only = Targets::new()
            .with_target("sqlx::postgres::notice", LevelFilter::INFO)
            .with_target("sqlx::query", LevelFilter::DEBUG);
        tracing_subscriber::registry()
            .with(Capture.with_filter(only))
            .init();
    });
}

/// Adds `n` tasks of `demo.echo` in state `state` to queue `backlog`,
/// created (and, if finished, finished) at `at`, outside courier.
async fn fill(db: &TestDb, pg: bool, state: &str, n: i64, at: chrono::DateTime<chrono::Utc>) {
    let (id, rows) = if pg {
        ("gen_random_uuid()", format!("generate_series(1, {n})"))
    } else {
        (
            "randomblob(16)",
            format!(
                "(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) SELECT i FROM s)"
            ),
        )
    };
    let (finished, pending) = if state == "pending" {
        ("NULL", "$1")
    } else {
        ("$1", "NULL")
    };
    let sql = format!(
        "INSERT INTO tasks (id, kind, state, input, trace_id, created_at, updated_at, \
         started_at, finished_at, pending_since, queue) \
         SELECT {id}, 'demo.echo', '{state}', '{{}}', 't', $1, $1, {finished}, {finished}, {pending}, 'backlog' \
         FROM {rows}"
    );
    exec_at(db, &sql, at).await;
}

/// Runs `sql` with `at` as `$1`, outside courier.
async fn exec_at(db: &TestDb, sql: &str, at: chrono::DateTime<chrono::Utc>) {
    if let Some(schema) = &db.options.pg_schema {
        let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query(&format!("SET search_path TO {schema}"))
            .execute(&mut c)
            .await
            .unwrap();
        sqlx::query(sql).bind(at).execute(&mut c).await.unwrap();
    } else {
        let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        sqlx::query(sql).bind(at).execute(&mut c).await.unwrap();
    }
}

/// The table as a deployment that sat idle has it (many finished tasks,
/// analysed while none was pending), then a burst the statistics do not
/// know of.
async fn quiet_then_burst(db: &TestDb, pg: bool) {
    db.store().await; // migrates
    let long_ago = chrono::Utc::now() - chrono::Duration::hours(2);
    fill(db, pg, "succeeded", FINISHED, long_ago).await;
    // Their inboxes and journals: an event and a step each.
    exec_at(
        db,
        "INSERT INTO task_events (task_id, name, payload, created_at, delivered_at) \
         SELECT id, 'go', '{}', $1, $1 FROM tasks",
        long_ago,
    )
    .await;
    exec_at(
        db,
        "INSERT INTO task_steps (task_id, name, attempt, state, output, started_at, finished_at) \
         SELECT id, 'step 0', 1, 'succeeded', '{}', $1, $1 FROM tasks",
        long_ago,
    )
    .await;
    db.raw("ANALYZE").await;
    fill(db, pg, "pending", BACKLOG, chrono::Utc::now()).await;
}

/// The database URL for the runtime under test: on PostgreSQL, every
/// session plans generically and hands each executed plan back.
fn explaining_url(db: &TestDb) -> String {
    if db.options.pg_schema.is_none() {
        return db.url.clone();
    }
    let settings = [
        "plan_cache_mode=force_generic_plan",
        "session_preload_libraries=auto_explain",
        "auto_explain.log_min_duration=0",
        "auto_explain.log_analyze=on",
        "auto_explain.log_timing=off",
        "auto_explain.log_nested_statements=on",
        "auto_explain.log_format=json",
        "auto_explain.log_level=notice",
    ];
    let options: Vec<String> = settings
        .iter()
        .map(|s| format!("-c%20{}", s.replace('=', "%3D")))
        .collect();
    format!(
        "{}{}options={}",
        db.url,
        if db.url.contains('?') { "&" } else { "?" },
        options.join("%20")
    )
}

/// courier's hot path, once each way, against the backlog.
async fn workload(rt: &Runtime) {
    let c = rt.client();
    let first = TaskOptions::new().priority(10);
    let echo = |i: usize| NewTask {
        options: first.clone(),
        ..NewTask::new("demo.echo", json!({ "i": i }))
    };

    // Sync waits, one at a time.
    for i in 0..20 {
        let w = c.submit_and_wait(echo(i), WAIT).await.unwrap();
        assert_eq!(w.task.state, TaskState::Succeeded);
    }
    // A batch of 1,000.
    let batch = c.submit_batch((0..1000).map(echo).collect()).await.unwrap();
    for s in batch.iter().step_by(100).chain(batch.last()) {
        let (t, done) = c.wait(s.task.id, WAIT).await.unwrap();
        assert!(done, "{t:?}");
    }
    // Keyed creates, each sent twice.
    for i in 0..10 {
        for _ in 0..2 {
            c.submit(echo(i).idempotency_key(format!("plans-{i}")))
                .await
                .unwrap();
        }
    }
    // A fan-out, its parent woken as its children end.
    let fan = NewTask {
        options: first.clone(),
        ..NewTask::new(
            "demo.fanout",
            json!({"n": 300, "kind": "demo.echo", "input": {"x": 1}}),
        )
    };
    let w = c.submit_and_wait(fan, WAIT).await.unwrap();
    assert_eq!(w.task.state, TaskState::Succeeded, "{:?}", w.task);
    let fan_id = w.task.id;
    // Tasks suspended for an event, then sent it.
    let mut waiting = Vec::new();
    for _ in 0..10 {
        let t = NewTask {
            options: first.clone(),
            ..NewTask::new("demo.await_event", json!({"name": "go"}))
        };
        waiting.push(c.submit(t).await.unwrap().task.id);
    }
    for id in &waiting {
        until_state(&c, *id, TaskState::Suspended).await;
        c.send_event(*id, "go", json!({"ok": true})).await.unwrap();
    }
    for id in &waiting {
        assert!(c.wait(*id, WAIT).await.unwrap().1);
    }
    // Durable timers, delayed tasks, journaled steps, a retried failure.
    let mut others = Vec::new();
    for i in 0..10 {
        let timer = NewTask {
            options: first.clone(),
            ..NewTask::new("demo.timer", json!({"ms": 200}))
        };
        let delayed = NewTask {
            options: first.clone().delay(Duration::from_millis(300)),
            ..NewTask::new("demo.echo", json!({ "delayed": i }))
        };
        let steps = NewTask {
            options: first.clone(),
            ..NewTask::new("demo.steps", json!({"n": 5, "ms": 0}))
        };
        let flaky = NewTask {
            options: first
                .clone()
                .max_attempts(2)
                .backoff(Duration::from_millis(50)),
            ..NewTask::new("demo.flaky", json!({"fail_times": 1}))
        };
        for t in [timer, delayed, steps, flaky] {
            others.push(c.submit(t).await.unwrap().task.id);
        }
    }
    for id in &others {
        let (t, done) = c.wait(*id, WAIT).await.unwrap();
        assert!(done && t.state == TaskState::Succeeded, "{t:?}");
    }
    // A failure retried by hand, and a cancel.
    let failed = NewTask {
        options: first.clone(),
        ..NewTask::new("demo.fail", json!({"message": "no"}))
    };
    let f = c.submit_and_wait(failed, WAIT).await.unwrap().task;
    c.retry(f.id).await.unwrap();
    assert!(c.wait(f.id, WAIT).await.unwrap().1);
    let sleeper = NewTask {
        options: first.clone(),
        ..NewTask::new("demo.sleep", json!({"ms": 60_000}))
    };
    let s = c.submit(sleeper).await.unwrap().task;
    until_state(&c, s.id, TaskState::Running).await;
    c.cancel(s.id).await.unwrap();
    let (t, _) = c.wait(s.id, WAIT).await.unwrap();
    assert_eq!(t.state, TaskState::Cancelled);

    // What the API and the dashboard read.
    for filter in [
        TaskFilter {
            state: Some(TaskState::Pending),
            limit: 100,
            without_bodies: true,
            ..Default::default()
        },
        TaskFilter {
            kind: Some("demo.echo".into()),
            limit: 100,
            ..Default::default()
        },
        TaskFilter {
            queue: Some("default".into()),
            state: Some(TaskState::Succeeded),
            limit: 100,
            ..Default::default()
        },
        TaskFilter {
            parent_id: Some(fan_id),
            limit: 100,
            ..Default::default()
        },
    ] {
        let page = c.list(&filter).await.unwrap();
        assert!(!page.is_empty(), "{filter:?}");
        let next = TaskFilter {
            after: page.last().map(|t| t.id),
            ..filter
        };
        c.list(&next).await.unwrap();
    }
    let kids = c.children_page(fan_id, None, 100, false).await.unwrap();
    c.children_page(fan_id, kids.last().map(|t| t.id), 100, false)
        .await
        .unwrap();
    c.events_page(waiting[0], None, 100).await.unwrap();
    c.history_page(fan_id, None, 100).await.unwrap();
    c.executors_page(None, 100).await.unwrap();
    c.queues().await.unwrap();
    c.queue("backlog").await.unwrap();
    c.steps(others[2]).await.unwrap();
    c.count_by_state().await.unwrap();
    c.count_by_queue().await.unwrap();
    c.throughput(60).await.unwrap();
}

/// Runs the workload against a quiet-then-burst table with every
/// statement captured, and returns what was captured.
async fn run(db: &TestDb) -> Captured {
    install();
    let pg = db.options.pg_schema.is_some();
    if pg {
        // Autovacuum would analyse the backlog meanwhile: the statistics
        // must stay those of the quiet spell.
        db.store().await;
        db.raw("ALTER TABLE tasks SET (autovacuum_enabled = false)")
            .await;
    }
    quiet_then_burst(db, pg).await;
    *captured().lock().unwrap() = Captured::default();
    let rt = Runtime::builder()
        .database(explaining_url(db))
        .store_options(db.options.clone())
        .registry(courier::demo::registry())
        .executor(courier::ExecutorConfig {
            queues: vec!["default".into(), "backlog".into()],
            retention: Retention {
                succeeded: Some(Duration::from_secs(3600)),
                ..Retention::default()
            },
            retention_interval: Duration::from_millis(300),
            ..fast_executor()
        })
        .start()
        .await
        .unwrap();
    workload(&rt).await;
    // The retention sweep has been deleting the quiet spell's tasks.
    let gone = rt.client().count_by_state().await.unwrap();
    rt.shutdown().await;
    let c = std::mem::take(&mut *captured().lock().unwrap());
    // The sync waits were created already started (the eager start's
    // insert, with the claim's guards in it, is judged as well).
    assert!(
        c.statements.iter().any(|s| s.contains("CASE WHEN ok THEN")),
        "no sync wait was created started"
    );
    eprintln!(
        "{} statements, {} plans; counts at the end: {gone:?}",
        c.statements.len(),
        c.notices.len()
    );
    c
}

/// What one PostgreSQL plan did: the rows it walked through all its
/// nodes, and what in it scans a big table whole.
struct Judged {
    query: String,
    rows: f64,
    whole: Vec<String>,
    ms: f64,
}

/// The indexes of the test's schema: name → (table, leading column).
type Indexes = HashMap<String, (String, String)>;

async fn indexes(db: &TestDb) -> Indexes {
    let schema = db.options.pg_schema.clone().unwrap();
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT ic.relname::text, t.relname::text, a.attname::text FROM pg_index i \
         JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[0] \
         WHERE n.nspname = $1",
    )
    .bind(schema)
    .fetch_all(&mut c)
    .await
    .unwrap();
    rows.into_iter().map(|(i, t, a)| (i, (t, a))).collect()
}

fn judge(notice: &str, indexes: &Indexes) -> Option<Judged> {
    let start = notice.find('{')?;
    let v: Value = serde_json::from_str(&notice[start..]).ok()?;
    let ms = notice
        .strip_prefix("duration: ")
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    let mut j = Judged {
        query: v["Query Text"].as_str().unwrap_or("").trim().to_string(),
        rows: 0.0,
        whole: Vec::new(),
        ms,
    };
    fn walk(n: &Value, indexes: &Indexes, j: &mut Judged) {
        // Every row a node read, kept or thrown away by its filters.
        let walked = [
            "Actual Rows",
            "Rows Removed by Filter",
            "Rows Removed by Index Recheck",
            "Rows Removed by Join Filter",
        ]
        .iter()
        .map(|k| n[*k].as_f64().unwrap_or(0.0))
        .sum::<f64>();
        let loops = n["Actual Loops"].as_f64().unwrap_or(1.0);
        j.rows += walked * loops;
        let relation = n["Relation Name"].as_str().unwrap_or("");
        let node = n["Node Type"].as_str().unwrap_or("");
        if node == "Seq Scan" && BIG.contains(&relation) {
            j.whole.push(format!("a sequential scan of {relation}"));
        }
        // An index condition that does not constrain the index's leading
        // column is checked against every entry: a scan of the whole index
        // (once, the claim's update looked its picked ids up through the
        // pending tasks' index, all 100,000 of its entries, 21 ms a claim;
        // its rows counted only the 156 it found).
        if let Some(index) = n["Index Name"].as_str() {
            if let (Some((table, lead)), Some(cond)) =
                (indexes.get(index), n["Index Cond"].as_str())
            {
                let leads = cond
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .any(|word| word == lead);
                if BIG.contains(&table.as_str()) && !leads {
                    j.whole.push(format!(
                        "{index} on {table} searched by {cond}, not by its leading column {lead}"
                    ));
                }
            }
        }
        for child in n["Plans"].as_array().into_iter().flatten() {
            walk(child, indexes, j);
        }
    }
    walk(&v["Plan"], indexes, &mut j);
    Some(j)
}

fn short(sql: &str) -> String {
    let one: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    one.chars().take(300).collect()
}

#[actix_rt::test]
async fn postgres_plans_touch_only_their_rows() {
    let _one = serial().lock().await;
    let db = TestDb::postgres().await;
    let c = run(&db).await;
    let indexes = indexes(&db).await;
    let judged: Vec<Judged> = c
        .notices
        .iter()
        .filter_map(|n| judge(n, &indexes))
        .collect();
    assert!(
        judged.len() > 1000,
        "auto_explain handed back {} plans: is it installed?",
        judged.len()
    );
    // Every statement that touches a big table was seen and judged.
    let mut worst: BTreeMap<String, (f64, f64, usize)> = BTreeMap::new();
    let mut failures = BTreeMap::new();
    for j in &judged {
        let e = worst.entry(short(&j.query)).or_default();
        e.0 = e.0.max(j.rows);
        e.1 = e.1.max(j.ms);
        e.2 += 1;
        if !j.whole.is_empty() {
            failures.insert(short(&j.query), j.whole.join("; "));
        }
        if j.rows > ROW_BOUND {
            let most = failures
                .entry(short(&j.query))
                .or_insert_with(|| format!("{} rows", j.rows));
            *most = format!(
                "{} rows",
                j.rows
                    .max(most.trim_end_matches(" rows").parse().unwrap_or(0.0))
            );
        }
    }
    let mut by_time: Vec<_> = worst.iter().collect();
    by_time.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
    for (q, (rows, ms, n)) in by_time.iter().take(15) {
        eprintln!("{ms:>9.2} ms max {rows:>8} rows max {n:>6} runs  {q}");
    }
    let statements = c.statements.len();
    db.cleanup().await;
    assert!(statements > 20, "only {statements} statements captured");
    assert!(
        failures.is_empty(),
        "plans that grow with the table (at most, the statement):\n{}",
        failures
            .iter()
            .map(|(q, what)| format!("{what}: {q}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[actix_rt::test]
async fn sqlite_plans_search_by_key() {
    let _one = serial().lock().await;
    let db = TestDb::sqlite().await;
    let c = run(&db).await;
    let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    let mut failures = BTreeSet::new();
    let mut judged = 0;
    for sql in &c.statements {
        let head = sql.trim_start().to_ascii_uppercase();
        if !["SELECT", "INSERT", "UPDATE", "DELETE", "WITH"]
            .iter()
            .any(|k| head.starts_with(k))
        {
            continue;
        }
        let rows: Vec<(i64, i64, i64, String)> =
            match sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                .fetch_all(&mut conn)
                .await
            {
                Ok(r) => r,
                Err(e) => panic!("EXPLAIN QUERY PLAN failed ({e}): {sql}"),
            };
        judged += 1;
        for (_, _, _, detail) in rows {
            // `SCAN t` reads every row of t; `SCAN t USING INDEX i` every
            // entry of i. Only a search (by a key or a range of one) is
            // bounded by the rows it finds.
            for table in BIG {
                let scan = format!("SCAN {table}");
                if detail == scan || detail.starts_with(&format!("{scan} ")) {
                    failures.insert(format!("{detail}: {}", short(sql)));
                }
            }
        }
    }
    db.cleanup().await;
    assert!(judged > 20, "only {judged} statements judged");
    assert!(
        failures.is_empty(),
        "plans that grow with the table:\n{}",
        failures.into_iter().collect::<Vec<_>>().join("\n")
    );
}
