//! What the benchmarks share: histograms, settings from the environment,
//! and PostgreSQL schemas of their own.

#![allow(dead_code)]

use hdrhistogram::Histogram;
use sqlx::Connection;

use courier::StoreOptions;

/// A latency histogram in microseconds, 1 µs to 60 s.
pub fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

/// A whole number from the environment, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `DATABASE_URL`, or the local `test` database.
pub fn pg_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Creates a fresh schema named `courier_bench_…` and returns its name.
pub async fn create_schema(url: &str) -> String {
    let mut c = sqlx::PgConnection::connect(url).await.expect("PostgreSQL");
    let s = format!("courier_bench_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE SCHEMA {s}"))
        .execute(&mut c)
        .await
        .unwrap();
    s
}

/// Drops the schemas a benchmark created.
pub async fn drop_schemas(url: &str, schemas: &[String]) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(url).await {
        for s in schemas {
            let _ = sqlx::query(&format!("DROP SCHEMA {s} CASCADE"))
                .execute(&mut conn)
                .await;
        }
    }
}

/// One `demo.echo` round trip: `submit_and_wait` until the pushed
/// `task_finished`; panics when it does not finish within 10 s.
pub async fn echo_round_trip(c: &courier::Client) -> std::time::Duration {
    let t0 = std::time::Instant::now();
    let w = c
        .submit_and_wait(
            courier::NewTask::new("demo.echo", serde_json::json!({"x": 1})),
            std::time::Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert!(w.finished, "not finished within 10 s");
    t0.elapsed()
}

/// Runs `conc` concurrent actix tasks, each making `per` calls of the closure
/// `make` gives it; returns calls per second over the whole run.
pub async fn calls_per_second<F, Fut>(conc: usize, per: usize, mut make: impl FnMut() -> F) -> f64
where
    F: FnMut() -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let t0 = std::time::Instant::now();
    let joins: Vec<_> = (0..conc)
        .map(|_| {
            let mut call = make();
            actix::spawn(async move {
                for _ in 0..per {
                    call().await;
                }
            })
        })
        .collect();
    for j in joins {
        j.await.unwrap();
    }
    (per * conc) as f64 / t0.elapsed().as_secs_f64()
}

/// A database a benchmark part runs on: a SQLite file of its own, or a
/// PostgreSQL schema of its own (recorded in `schemas`, to drop at the end).
pub struct Target {
    pub label: &'static str,
    pub url: String,
    pub options: StoreOptions,
    pub _dir: Option<tempfile::TempDir>,
}

/// A fresh [`Target`]: `which` is `sqlite` or `postgres`.
pub async fn target(which: &str, schemas: &mut Vec<String>) -> Target {
    match which {
        "sqlite" => {
            let dir = tempfile::tempdir().unwrap();
            Target {
                label: "SQLite (file, WAL, synchronous=FULL)",
                url: format!("sqlite://{}", dir.path().join("bench.db").display()),
                options: StoreOptions::default(),
                _dir: Some(dir),
            }
        }
        _ => {
            let schema = create_schema(&pg_url()).await;
            schemas.push(schema.clone());
            Target {
                label: "PostgreSQL (local, TCP)",
                url: pg_url(),
                options: StoreOptions {
                    pg_schema: Some(schema),
                    max_connections: Some(16),
                    ..StoreOptions::default()
                },
                _dir: None,
            }
        }
    }
}

/// Milliseconds at quantile `q` of a microsecond histogram.
pub fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// The databases a benchmark runs on: `BENCH_DB` is `sqlite`, `postgres`,
/// or unset for both.
pub fn dbs_from_env() -> Vec<String> {
    match std::env::var("BENCH_DB").ok().as_deref() {
        Some("sqlite") => vec!["sqlite".into()],
        Some("postgres") => vec!["postgres".into()],
        _ => vec!["sqlite".into(), "postgres".into()],
    }
}

/// `BENCH_LOG=sqlx::query=debug` shows every statement with its time (on
/// stderr).
pub fn log_from_env() {
    if let Ok(filter) = std::env::var("BENCH_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// `courier` processes a benchmark started, stopped (SIGTERM) and reaped
/// when dropped.
pub struct Procs(pub Vec<std::process::Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

/// A PostgreSQL URL whose connections search `schema` first (how a
/// `courier` process is given a benchmark's schema).
pub fn schema_url(base: &str, schema: &str) -> String {
    format!(
        "{base}{}options=-c%20search_path%3D{schema}",
        if base.contains('?') { "&" } else { "?" }
    )
}

/// Waits until a `demo.echo` submitted with a wait comes back finished,
/// for at least half a second (executor processes register their kinds
/// as they start); panics after a minute.
pub async fn echo_ready(c: &courier::Client) {
    let start = std::time::Instant::now();
    loop {
        match c
            .submit_and_wait(
                courier::NewTask::new("demo.echo", serde_json::json!(0)),
                std::time::Duration::from_millis(500),
            )
            .await
        {
            Ok(w) if w.finished && start.elapsed() > std::time::Duration::from_millis(500) => {
                return
            }
            Ok(_) => {}
            // The executor process has not registered its kinds yet.
            Err(courier::Error::UnknownKind(_)) => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await
            }
            Err(e) => panic!("{e}"),
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the executors did not answer"
        );
    }
}

/// The arguments of a `courier executor --demo` running `demo.echo`, on
/// store `db` and transport `bus` (`prefix`: its AMQP names), as node
/// `node`.
pub fn executor_args<'a>(
    db: &'a str,
    bus: &'a str,
    prefix: &'a str,
    node: &'a str,
) -> [&'a str; 12] {
    [
        "executor",
        "--demo",
        "--kinds",
        "demo.echo",
        "--db",
        db,
        "--bus",
        bus,
        "--amqp-prefix",
        prefix,
        "--node",
        node,
    ]
}

/// A `courier executor` process with [`executor_args`], its log at `warn`.
pub fn executor(db: &str, bus: &str, prefix: &str, node: &str) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_courier"))
        .args(executor_args(db, bus, prefix, node))
        .env("COURIER_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// How many tasks of `store` are not finished (scheduled, pending, running
/// or suspended): an index count of the few left at the end of a run.
pub async fn unfinished(store: &courier::Store) -> i64 {
    store
        .count_by_state()
        .await
        .unwrap()
        .into_iter()
        .filter(|(s, _)| !s.is_final())
        .map(|(_, n)| n)
        .sum()
}

/// How many tasks of `store` have succeeded.
pub async fn succeeded(store: &courier::Store) -> usize {
    store
        .count_by_state()
        .await
        .unwrap()
        .into_iter()
        .find(|(s, _)| *s == courier::TaskState::Succeeded)
        .map_or(0, |(_, n)| n as usize)
}

/// The median of `v` (for an even count, the upper of the two middle
/// values).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A `courier serve --demo` process (the release binary), stopped with
/// SIGTERM when dropped.
pub struct Server {
    pub child: std::process::Child,
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Server {
    /// The process's peak resident memory (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

/// Starts `courier serve --demo --db DB_URL --workers 2` and the `extra`
/// arguments on a free port; returns once it accepts connections.
pub fn serve(db_url: &str, extra: &[&str]) -> Server {
    use std::time::{Duration, Instant};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_courier"))
        .args([
            "serve",
            "--demo",
            "--db",
            db_url,
            "--listen",
            &listen,
            "--workers",
            "2",
        ])
        .args(extra)
        .env("COURIER_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("courier serve");
    let start = Instant::now();
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Server {
        child,
        base: format!("http://{listen}"),
    }
}
