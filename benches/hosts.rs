//! Scale-out across simulated hosts: this process is the web node, in the
//! `courier-web` network namespace, and 1, 2 then 3 `courier executor`
//! processes run on hosts `courier-h1`…`h3` (tests/hosts/net.sh), each
//! reaching PostgreSQL and RabbitMQ over the bridge only. On `amqp`, on
//! `postgres` and on the hybrid `socket:DIR,postgres` (a socket directory
//! per host), side by side in one run. `benches/hosts.sh` brings the hosts
//! up and runs this inside the web namespace:
//!
//! ```text
//! sudo benches/hosts.sh
//! ```
//!
//! `BENCH_IDLE=1` measures instead what the hosts cost with nothing to do
//! (transactions a second, database CPU, connections).
//!
//! For each transport and executor count:
//! - **p50/p99**: sequential `submit_and_wait` of `demo.echo`;
//! - **tasks/s**: 32 submitters, each `submit_and_wait` in a loop;
//! - **where the time goes** during the tasks/s run, measured: CPU (cores)
//!   of the database's processes, the broker's, the executors' and this web
//!   process (from `/proc`, all on this one 2-core machine); commits and WAL
//!   fsyncs per second (`pg_stat_database`, `pg_stat_wal`); and what the
//!   database's busy backends were doing, sampled from `pg_stat_activity`
//!   every 20 ms (on CPU, waiting for the client, for WAL, for a lock).

mod support;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use courier::bus::transport::amqp::AmqpConfig;
use courier::{Client, Runtime, StoreOptions};
use sqlx::Connection;
use support::{
    calls_per_second, create_schema, drop_schemas, echo_ready, echo_round_trip, env_usize,
    executor_args, hist, schema_url, Procs,
};

const BRIDGE: &str = "10.77.0.1";

#[derive(Clone, Copy, PartialEq)]
enum Wire {
    Amqp,
    Postgres,
    Hybrid,
}

impl Wire {
    fn label(self) -> &'static str {
        match self {
            Wire::Amqp => "`amqp`",
            Wire::Postgres => "`postgres`",
            Wire::Hybrid => "`socket:DIR,postgres`",
        }
    }
}

struct Setup {
    db: String,
    amqp: String,
    prefix: String,
    dir: std::path::PathBuf,
}

impl Setup {
    fn bus(&self, wire: Wire, host: &str) -> String {
        match wire {
            Wire::Amqp => self.amqp.clone(),
            Wire::Postgres => "postgres".into(),
            Wire::Hybrid => format!("socket:{},postgres", self.dir.join(host).display()),
        }
    }

    fn executor(&self, wire: Wire, host: &str) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &format!("courier-{host}")])
            .arg(env!("CARGO_BIN_EXE_courier"))
            .args(executor_args(
                &self.db,
                &self.bus(wire, host),
                &self.prefix,
                host,
            ))
            .env("COURIER_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    }

    async fn web(&self, wire: Wire) -> Runtime {
        let b = Runtime::builder()
            .database(self.db.clone())
            .store_options(StoreOptions {
                max_connections: Some(16),
                ..StoreOptions::default()
            })
            .node("web")
            .without_executor();
        let b = match wire {
            Wire::Amqp => b.amqp_transport(AmqpConfig {
                url: self.amqp.clone(),
                prefix: self.prefix.clone(),
            }),
            Wire::Postgres => b.postgres_transport(),
            Wire::Hybrid => b
                .socket_transport(self.dir.join("web"))
                .postgres_transport(),
        };
        b.start().await.unwrap()
    }
}

async fn ready(c: &Client, executors: usize) {
    echo_ready(c).await;
    let start = Instant::now();
    // Every executor has registered (heartbeats are in the store).
    loop {
        let alive = c
            .executors()
            .await
            .unwrap()
            .iter()
            .filter(|e| e.state == courier::ExecutorState::Alive)
            .count();
        if alive >= executors {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{alive} executors of {executors}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// CPU ticks (user + system) of every process, by group.
fn cpu_ticks() -> HashMap<&'static str, u64> {
    let me = std::process::id().to_string();
    let mut by = HashMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        let f: Vec<&str> = rest.split_whitespace().collect();
        // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after comm.
        let ticks: u64 = f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
        let group = if name == me {
            "web"
        } else if comm == "postgres" {
            "database"
        } else if comm == "beam.smp" {
            "broker"
        } else if comm == "courier" {
            "executors"
        } else {
            "other"
        };
        *by.entry(group).or_default() += ticks;
    }
    by
}

/// The machine's (busy, all) CPU ticks, from the first line of `/proc/stat`.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let all: u64 = f.iter().take(8).sum();
    // idle and iowait
    (all - f[3] - f[4], all)
}

/// What the database's busy client backends were doing, one sample.
async fn waits(c: &mut sqlx::PgConnection, into: &mut HashMap<String, u64>) {
    let rows: Vec<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT state, wait_event_type, wait_event FROM pg_stat_activity \
         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() \
           AND state IS DISTINCT FROM 'idle'",
    )
    .fetch_all(c)
    .await
    .unwrap();
    for (state, kind, event) in rows {
        let what = match (state.as_deref(), kind.as_deref(), event.as_deref()) {
            (_, None, _) => "on CPU".to_string(),
            (Some("idle in transaction"), Some("Client"), _) => {
                "in a transaction, waiting for the client".into()
            }
            (_, Some("Client"), Some("ClientRead")) => "waiting for the client".into(),
            (_, Some(k), Some(e)) => format!("{k}:{e}"),
            (_, Some(k), None) => k.to_string(),
        };
        *into.entry(what).or_default() += 1;
    }
}

async fn db_counters(c: &mut sqlx::PgConnection) -> (i64, i64) {
    let commits: i64 = sqlx::query_scalar(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&mut *c)
    .await
    .unwrap();
    let syncs: i64 = sqlx::query_scalar("SELECT wal_sync FROM pg_stat_wal")
        .fetch_one(&mut *c)
        .await
        .unwrap();
    (commits, syncs)
}

/// The fixed cost of the deployment with nothing to do: transactions a
/// second, the database's CPU, its connections, over `secs`.
struct Idle {
    xacts: f64,
    db_ms_per_s: f64,
    connections: i64,
}

async fn idle(base: &str, secs: u64) -> Idle {
    let mut c = sqlx::PgConnection::connect(base).await.unwrap();
    let q = "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()";
    let x0: i64 = sqlx::query_scalar(q).fetch_one(&mut c).await.unwrap();
    let cpu0 = cpu_ticks();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let x1: i64 = sqlx::query_scalar(q).fetch_one(&mut c).await.unwrap();
    let cpu1 = cpu_ticks();
    let el = t0.elapsed().as_secs_f64();
    let connections: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    let db =
        cpu1.get("database").copied().unwrap_or(0) - cpu0.get("database").copied().unwrap_or(0);
    Idle {
        // Less this connection's own two.
        xacts: (x1 - x0 - 1) as f64 / el,
        db_ms_per_s: db as f64 / clk_tck() * 1000.0 / el,
        connections,
    }
}

fn clk_tck() -> f64 {
    String::from_utf8(
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap_or(100.0)
}

struct Row {
    wire: Wire,
    hosts: usize,
    p50: f64,
    p99: f64,
    tps: f64,
    /// Share of the machine's CPU time that was busy.
    busy: f64,
    cores: HashMap<&'static str, f64>,
    commits: f64,
    fsyncs: f64,
    waits: Vec<(String, f64)>,
}

async fn measure(
    c: &Client,
    base: &str,
    wire: Wire,
    hosts: usize,
    samples: usize,
    tasks: usize,
) -> Row {
    for _ in 0..50 {
        echo_round_trip(c).await;
    }
    let mut h = hist();
    for _ in 0..samples {
        h.record(echo_round_trip(c).await.as_micros().max(1) as u64)
            .unwrap();
    }

    let mut stats = sqlx::PgConnection::connect(base).await.unwrap();
    let (commits0, syncs0) = db_counters(&mut stats).await;
    let cpu0 = cpu_ticks();
    let machine0 = machine_ticks();
    let t0 = Instant::now();
    let done = std::rc::Rc::new(std::cell::Cell::new(false));
    let sampler = {
        let done = done.clone();
        let base = base.to_string();
        actix::spawn(async move {
            let mut c = sqlx::PgConnection::connect(&base).await.unwrap();
            let mut seen = HashMap::new();
            let mut n = 0u64;
            while !done.get() {
                waits(&mut c, &mut seen).await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (seen, n)
        })
    };
    let conc = 32;
    let tps = calls_per_second(conc, tasks / conc, || {
        let c = c.clone();
        move || {
            let c = c.clone();
            async move {
                echo_round_trip(&c).await;
            }
        }
    })
    .await;
    done.set(true);
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_ticks();
    let machine1 = machine_ticks();
    let (commits1, syncs1) = db_counters(&mut stats).await;
    let (seen, n) = sampler.await.unwrap();
    let hz = clk_tck();
    let cores = cpu1
        .iter()
        .map(|(g, t1)| {
            let t0 = cpu0.get(g).copied().unwrap_or(0);
            (*g, t1.saturating_sub(t0) as f64 / hz / secs)
        })
        .collect();
    let busy = (machine1.0 - machine0.0) as f64 / (machine1.1 - machine0.1).max(1) as f64;
    let mut waits: Vec<(String, f64)> = seen
        .into_iter()
        .map(|(w, k)| (w, k as f64 / n.max(1) as f64))
        .collect();
    waits.sort_by(|a, b| b.1.total_cmp(&a.1));
    Row {
        wire,
        hosts,
        p50: h.value_at_quantile(0.5) as f64 / 1000.0,
        p99: h.value_at_quantile(0.99) as f64 / 1000.0,
        tps,
        busy,
        cores,
        commits: (commits1 - commits0) as f64 / secs,
        fsyncs: (syncs1 - syncs0) as f64 / secs,
        waits,
    }
}

fn main() {
    let samples = env_usize("BENCH_SAMPLES", 300);
    let tasks = env_usize("BENCH_TASKS", 3200);
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| format!("postgres://postgres@{BRIDGE}:5432/test"));
    let amqp = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| format!("amqp://courier:courier@{BRIDGE}:5672/%2f"));
    let idle_only = std::env::var("BENCH_IDLE").is_ok();
    let (rows, idles) = actix::System::new().block_on(async move {
        let mut rows = Vec::new();
        let mut idles = Vec::new();
        let mut schemas = Vec::new();
        // BENCH_WIRE=amqp|postgres|hybrid runs one transport only (to
        // profile it).
        let only = std::env::var("BENCH_WIRE").ok();
        let wires = [Wire::Amqp, Wire::Postgres, Wire::Hybrid]
            .into_iter()
            .filter(|w| {
                only.as_deref().is_none_or(|o| {
                    o == match w {
                        Wire::Amqp => "amqp",
                        Wire::Postgres => "postgres",
                        Wire::Hybrid => "hybrid",
                    }
                })
            });
        for wire in wires {
            let schema = create_schema(&base).await;
            schemas.push(schema.clone());
            let dir = tempfile::tempdir().unwrap();
            let setup = Setup {
                db: schema_url(&base, &schema),
                amqp: amqp.clone(),
                prefix: format!("courier_bench_{}", uuid::Uuid::new_v4().simple()),
                dir: dir.path().to_path_buf(),
            };
            let web = setup.web(wire).await;
            let mut procs = Procs(Vec::new());
            for n in 1..=3 {
                procs.0.push(setup.executor(wire, &format!("h{n}")));
                ready(&web.client(), n).await;
                if idle_only {
                    // Past the start-up and the ready check's tasks.
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    idles.push((wire, n, idle(&base, 10).await));
                    continue;
                }
                let row = measure(&web.client(), &base, wire, n, samples, tasks).await;
                eprintln!("{} with {n}: {:.0} tasks/s", wire.label(), row.tps);
                rows.push(row);
            }
            web.shutdown().await;
            drop(procs);
        }
        drop_schemas(&base, &schemas).await;
        (rows, idles)
    });
    if idle_only {
        println!(
            "### The fixed cost of executor hosts with nothing to do\n\n\
             Each deployment 10 s after it answered, over 10 s: transactions a second in the \
             database (every process of the deployment), the database's CPU, and connections \
             to the database.\n"
        );
        println!(
            "| transport | executor hosts | transactions/s | database CPU | connections |\n\
             |---|---|---|---|---|"
        );
        for (wire, n, i) in idles {
            println!(
                "| {} | {n} | {:.1} | {:.1} ms/s | {} |",
                wire.label(),
                i.xacts,
                i.db_ms_per_s,
                i.connections
            );
        }
        return;
    }

    println!(
        "### Executor hosts in network namespaces; `demo.echo` submit with wait → finished\n\n\
         The web node is this process (host `courier-web`); each executor is a process on a host \
         of its own; PostgreSQL and RabbitMQ are reached over the bridge. {samples} sequential \
         samples; tasks/s: 32 submitters, {tasks} tasks. CPU in cores, of this machine's 2, during \
         the tasks/s run.\n"
    );
    println!(
        "| transport | executor hosts | tasks/s | ×1 host | p50 | p99 | machine CPU busy | CPU database | database CPU per task | CPU broker | CPU executors | CPU web | commits/s | WAL fsyncs/s |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let mut first = HashMap::new();
    for r in &rows {
        let one = *first.entry(r.wire.label()).or_insert(r.tps);
        let c = |g: &str| r.cores.get(g).copied().unwrap_or(0.0);
        println!(
            "| {} | {} | {:.0} | {:.2}× | {:.2} ms | {:.2} ms | {:.0} % | {:.2} | {:.2} ms | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} |",
            r.wire.label(),
            r.hosts,
            r.tps,
            r.tps / one,
            r.p50,
            r.p99,
            r.busy * 100.0,
            c("database"),
            c("database") * 1000.0 / r.tps,
            c("broker"),
            c("executors"),
            c("web"),
            r.commits,
            r.fsyncs
        );
    }
    println!(
        "\nThe database's busy client backends during the tasks/s run (sampled every 20 ms; \
         mean backends per sample in each state, largest first):\n"
    );
    println!("| transport | executor hosts | what the busy backends were doing |\n|---|---|---|");
    for r in &rows {
        let w: Vec<String> = r
            .waits
            .iter()
            .take(5)
            .map(|(w, k)| format!("{w} {k:.2}"))
            .collect();
        println!("| {} | {} | {} |", r.wire.label(), r.hosts, w.join("; "));
    }
}
