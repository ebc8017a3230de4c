//! HTTP round trips against `courier serve`, beside the bare in-process flow
//! measured in the same run.
//!
//! ```text
//! cargo bench --bench http                      # SQLite and PostgreSQL
//! BENCH_DB=sqlite cargo bench --bench http
//! ```
//!
//! The server is the real `courier serve --demo` binary (release build, its
//! own process, 2 HTTP workers); the load generator is this process (awc,
//! keep-alive connections). Rows:
//!
//! - **HTTP submit→200**: `POST /api/v1/tasks` with `wait_ms` for `demo.echo`,
//!   answered 200 with the finished task; p50/p99 of sequential requests, and
//!   requests per second with 1 and 32 concurrent clients.
//! - **in-process**: `Client::submit_and_wait` of the same task kind in this
//!   process's own runtime (a fresh database of the same kind), sequential
//!   and with 32 concurrent callers: the flow without HTTP, JSON or a second
//!   process.
//! - **creates, no wait**: 32 clients `POST /api/v1/tasks` (answered 201)
//!   `BENCH_CREATES` times in all while the server's executor runs them:
//!   created/s until the last answer, finished/s until the last has
//!   succeeded; beside the same through `Client::submit` in-process.

mod support;

use std::time::{Duration, Instant};

use courier::{NewTask, Runtime, Store, StoreOptions};
use hdrhistogram::Histogram;
use serde_json::json;
use support::{
    calls_per_second, create_schema, drop_schemas, echo_round_trip, env_usize, hist, pg_url, serve,
    succeeded,
};

struct Db {
    label: &'static str,
    /// Two databases: one for the server, one for the in-process baseline.
    urls: [String; 2],
    options: [StoreOptions; 2],
    schemas: Vec<String>,
    pg: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let url = |n: &str| format!("sqlite://{}", dir.path().join(n).display());
    Db {
        label: "SQLite (file, WAL, synchronous=FULL)",
        urls: [url("server.db"), url("inproc.db")],
        options: [StoreOptions::default(), StoreOptions::default()],
        schemas: Vec::new(),
        pg: None,
        _dir: Some(dir),
    }
}

async fn postgres() -> Db {
    let base = pg_url();
    let schemas = vec![create_schema(&base).await, create_schema(&base).await];
    // The server process takes its schema through the URL's `options`.
    let server_url = format!(
        "{base}{}options=-c%20search_path%3D{}",
        if base.contains('?') { "&" } else { "?" },
        schemas[0]
    );
    Db {
        label: "PostgreSQL (local, TCP)",
        urls: [server_url, base.clone()],
        options: [
            StoreOptions::default(),
            StoreOptions {
                pg_schema: Some(schemas[1].clone()),
                max_connections: Some(16),
                ..StoreOptions::default()
            },
        ],
        schemas,
        pg: Some(base),
        _dir: None,
    }
}

async fn http_once(client: &awc::Client, base: &str) -> Duration {
    let t0 = Instant::now();
    post_echo(client, base, true).await;
    t0.elapsed()
}

/// `POST /api/v1/tasks` of a `demo.echo`: with a wait, answered 200 with
/// the finished task; without, 201 at once.
async fn post_echo(client: &awc::Client, base: &str, wait: bool) {
    let body = if wait {
        json!({"kind": "demo.echo", "input": {"x": 1}, "wait_ms": 10000})
    } else {
        json!({"kind": "demo.echo", "input": {"x": 1}})
    };
    let mut r = client
        .post(format!("{base}/api/v1/tasks"))
        .send_json(&body)
        .await
        .expect("request");
    let want = if wait { 200 } else { 201 };
    assert_eq!(r.status().as_u16(), want, "{body}");
    let _ = r.body().await.unwrap();
}

/// A request maker for `calls_per_second`: each client its own awc client
/// (keep-alive connection) to the server.
fn http_clients(base: &str, wait: bool) -> impl FnMut() -> Box<dyn FnMut() -> BoxedCall> + '_ {
    move || {
        let base = base.to_string();
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(60))
            .finish();
        Box::new(move || {
            let (client, base) = (client.clone(), base.clone());
            Box::pin(async move { post_echo(&client, &base, wait).await }) as BoxedCall
        })
    }
}

type BoxedCall = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

async fn bench(db: Db, samples: usize, tasks: usize) -> String {
    let server = serve(&db.urls[0], &[]);
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let rt = Runtime::builder()
        .database(db.urls[1].clone())
        .store_options(db.options[1].clone())
        .registry(courier::demo::registry())
        .start()
        .await
        .unwrap();
    let c = rt.client();
    let inproc_once = |c: courier::Client| async move { echo_round_trip(&c).await };
    for _ in 0..100 {
        http_once(&client, &server.base).await;
        inproc_once(c.clone()).await;
    }

    // Sequential, interleaved so a noisy spell hits both alike.
    let (mut h_http, mut h_in) = (hist(), hist());
    let (mut t_http, mut t_in) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..samples {
        let d = http_once(&client, &server.base).await;
        t_http += d;
        h_http.record(d.as_micros().max(1) as u64).unwrap();
        let d = inproc_once(c.clone()).await;
        t_in += d;
        h_in.record(d.as_micros().max(1) as u64).unwrap();
    }
    let rps1_http = samples as f64 / t_http.as_secs_f64();
    let rps1_in = samples as f64 / t_in.as_secs_f64();

    // 32 concurrent clients.
    let conc = 32;
    let per = tasks / conc;
    let rps32_http = calls_per_second(conc, per, http_clients(&server.base, true)).await;
    let rps32_in = calls_per_second(conc, per, || {
        let c = c.clone();
        move || {
            let c = c.clone();
            async move {
                inproc_once(c).await;
            }
        }
    })
    .await;

    // Creates without a wait, while the executors run them.
    let creates = env_usize("BENCH_CREATES", 20_000);
    let per_create = creates / conc;
    let server_store = Store::connect_with(&db.urls[0], db.options[0].clone())
        .await
        .unwrap();
    let (created_http, finished_http) = create_rate(&server_store, conc * per_create, || {
        calls_per_second(conc, per_create, http_clients(&server.base, false))
    })
    .await;
    let (created_in, finished_in) = create_rate(rt.store(), conc * per_create, || {
        calls_per_second(conc, per_create, || {
            let c = c.clone();
            move || {
                let c = c.clone();
                async move {
                    c.submit(NewTask::new("demo.echo", json!({"x": 1})))
                        .await
                        .unwrap();
                }
            }
        })
    })
    .await;
    server_store.close().await;

    rt.shutdown().await;
    drop(server);
    if let Some(pg) = &db.pg {
        drop_schemas(pg, &db.schemas).await;
    }
    let p = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64;
    format!(
        "### {}\n\n{samples} sequential samples each; 32 clients × {per} requests.\n\n\
         | `demo.echo`, submit with wait → finished | HTTP (`courier serve`) | in-process (`Client`) | ratio HTTP / in-process |\n\
         |---|---|---|---|\n\
         | p50 | {:.0} µs | {:.0} µs | {:.2}× |\n\
         | p99 | {:.0} µs | {:.0} µs | {:.2}× |\n\
         | requests/s, 1 client | {rps1_http:.0} | {rps1_in:.0} | {:.2}× |\n\
         | requests/s, 32 clients | {rps32_http:.0} | {rps32_in:.0} | {:.2}× |\n\n\
         | `demo.echo`, {creates_n} creates without a wait, 32 clients | HTTP (`courier serve`) | in-process (`Client::submit`) | ratio HTTP / in-process |\n\
         |---|---|---|---|\n\
         | created/s | {created_http:.0} | {created_in:.0} | {:.2}× |\n\
         | finished/s (from the first create to the last success) | {finished_http:.0} | {finished_in:.0} | {:.2}× |\n",
        db.label,
        p(&h_http, 0.5),
        p(&h_in, 0.5),
        p(&h_http, 0.5) / p(&h_in, 0.5),
        p(&h_http, 0.99),
        p(&h_in, 0.99),
        p(&h_http, 0.99) / p(&h_in, 0.99),
        rps1_http / rps1_in,
        rps32_http / rps32_in,
        created_http / created_in,
        finished_http / finished_in,
        creates_n = conc * per_create,
    )
}

/// Runs `create` (which makes `n` tasks) and returns tasks created a
/// second, and finished a second (from the start until `store` counts all
/// `n` more succeeded than before).
async fn create_rate<F, Fut>(store: &Store, n: usize, create: F) -> (f64, f64)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = f64>,
{
    let before = succeeded(store).await;
    let t0 = Instant::now();
    let created = create().await;
    while succeeded(store).await < before + n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (created, n as f64 / t0.elapsed().as_secs_f64())
}

fn main() {
    let which = std::env::var("BENCH_DB").unwrap_or_else(|_| "all".into());
    let samples = env_usize("BENCH_SAMPLES", 1000);
    let tasks = env_usize("BENCH_TASKS", 3200);
    let sys = actix::System::new();
    let report = sys.block_on(async move {
        let mut report = String::new();
        if which == "all" || which == "sqlite" {
            report += &bench(sqlite().await, samples, tasks).await;
            report += "\n";
        }
        if which == "all" || which == "postgres" {
            report += &bench(postgres().await, samples, tasks).await;
        }
        report
    });
    println!("{report}");
}
