//! Overload: many more HTTP clients than the server serves at once. Does
//! an overload slow the clients down (backpressure) or grow the server's
//! memory?
//!
//! ```text
//! cargo bench --bench overload
//! BENCH_CLIENTS=4000 BENCH_TASKS=24000 BENCH_BODY_KB=16 cargo bench --bench overload
//! ```
//!
//! Each row is a fresh `courier serve --demo` (release binary, SQLite file,
//! 2 HTTP workers) and a fresh database. The clients, each on its own
//! keep-alive connection, create `BENCH_TASKS` `demo.echo` tasks in all
//! without waiting (201), every one with an input of `BENCH_BODY_KB` KiB,
//! while the server's executor runs them. Rows, run one after the other in
//! this one run:
//!
//! - 32 clients at the default `--max-connections` (1024): the baseline;
//! - a crowd of `BENCH_CLIENTS` at the default bound, and twice that crowd
//!   (memory must not grow with the crowd);
//! - the crowd at `--max-connections 256`;
//! - the crowd with the door open (`--max-connections 1000000`): only the
//!   bounds inside (group-commit lanes, the bus's mailbox) hold.
//!
//! For each: created/s until the last answer, finished/s until the last
//! task succeeded, the client's create latency (p50, p99, max: connecting
//! included, so a client kept waiting at the door counts), and the
//! server's peak resident memory (VmHWM).

mod support;

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;
use support::{env_usize, hist, serve, succeeded};

struct Row {
    label: String,
    clients: usize,
    created_per_s: f64,
    finished_per_s: f64,
    latency: Histogram<u64>,
    peak_rss_mib: f64,
}

async fn run(label: &str, clients: usize, tasks: usize, body_kb: usize, extra: &[&str]) -> Row {
    let per = tasks / clients;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("overload.db").display());
    let server = serve(&db, extra);
    let input = json!({"pad": "x".repeat(body_kb * 1024)});
    let t0 = Instant::now();
    let joins: Vec<_> = (0..clients)
        .map(|_| {
            let (base, input) = (server.base.clone(), input.clone());
            actix::spawn(async move {
                // Patient clients: a connection waiting in the kernel's
                // accept queue, or in TCP's SYN retries, is the bound at work.
                let client = awc::Client::builder()
                    .connector(awc::Connector::new().timeout(Duration::from_secs(120)))
                    .timeout(Duration::from_secs(120))
                    .finish();
                let mut h = hist();
                for _ in 0..per {
                    let t = Instant::now();
                    let mut r = client
                        .post(format!("{base}/api/v1/tasks"))
                        .send_json(&json!({"kind": "demo.echo", "input": input}))
                        .await
                        .expect("create");
                    let status = r.status().as_u16();
                    assert_eq!(status, 201, "{:?}", r.body().await);
                    let _ = r.body().await.unwrap();
                    h.record(t.elapsed().as_micros() as u64).unwrap();
                }
                h
            })
        })
        .collect();
    let mut latency = hist();
    for j in joins {
        latency.add(j.await.unwrap()).unwrap();
    }
    let created_per_s = (per * clients) as f64 / t0.elapsed().as_secs_f64();
    let store = courier::Store::connect_with(&db, courier::StoreOptions::default())
        .await
        .expect("the server's database");
    while succeeded(&store).await < per * clients {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let finished_per_s = (per * clients) as f64 / t0.elapsed().as_secs_f64();
    eprintln!(
        "{label}: {created_per_s:.0} created/s, {finished_per_s:.0} finished/s, p99 {} ms, peak RSS {} KiB",
        latency.value_at_quantile(0.99) / 1000,
        server.peak_rss_kib()
    );
    Row {
        label: label.to_string(),
        clients,
        created_per_s,
        finished_per_s,
        latency,
        peak_rss_mib: server.peak_rss_kib() as f64 / 1024.0,
    }
}

fn main() {
    let crowd = env_usize("BENCH_CLIENTS", 4000);
    let tasks = env_usize("BENCH_TASKS", 24000);
    let body_kb = env_usize("BENCH_BODY_KB", 16);
    let sys = actix::System::new();
    let rows = sys.block_on(async move {
        let default = "default bound (1024)";
        vec![
            run(&format!("32 clients, {default}"), 32, tasks, body_kb, &[]).await,
            run(&format!("crowd, {default}"), crowd, tasks, body_kb, &[]).await,
            run(
                &format!("twice the crowd, {default}"),
                2 * crowd,
                tasks,
                body_kb,
                &[],
            )
            .await,
            run(
                "crowd, --max-connections 256",
                crowd,
                tasks,
                body_kb,
                &["--max-connections", "256"],
            )
            .await,
            run(
                "crowd, door open (--max-connections 1000000)",
                crowd,
                tasks,
                body_kb,
                &["--max-connections", "1000000"],
            )
            .await,
        ]
    });
    let base = rows[0].peak_rss_mib;
    println!(
        "### Overload: {tasks} creates of {body_kb} KiB each, SQLite, `courier serve` with 2 HTTP workers\n\n\
         | | clients | created/s | finished/s | create p50 | p99 | max | server peak RSS | ÷ 32-client RSS |\n\
         |---|---|---|---|---|---|---|---|---|"
    );
    for r in rows {
        let ms = |q: f64| r.latency.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.1} ms | {:.1} ms | {:.0} ms | {:.0} MiB | {:.2}× |",
            r.label,
            r.clients,
            r.created_per_s,
            r.finished_per_s,
            ms(0.5),
            ms(0.99),
            r.latency.max() as f64 / 1000.0,
            r.peak_rss_mib,
            r.peak_rss_mib / base
        );
    }
}
