//! The Unix-socket transport between two processes, beside the in-process
//! flow measured in the same run. `benches/socket.sh` runs this and the raw
//! Unix-socket cases of `../shared/bench/limits` together.
//!
//! ```text
//! cargo bench --bench socket
//! ```
//!
//! - **round trip**: `Client::submit_and_wait` of `demo.echo` from this
//!   process (a web-only runtime) to a `courier executor` process over the
//!   socket: `start_task` out, `task_finished` back, both committed to a
//!   shared SQLite file (WAL, synchronous=FULL) first. Beside it, the same
//!   call to an executor in this process on a database of its own.
//! - **one-way envelopes**: task-protocol envelopes (`task_event`, ~300 bytes
//!   of JSON) sent through the bus to an actor in a child process, with
//!   backpressure (a full peer queue makes the sender wait): envelopes per
//!   second until the child has counted them all.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use actix::prelude::*;
use courier::actors::protocol::Msg;
use courier::bus::transport::socket::SocketTransport;
use courier::bus::{Address, Bus, BusHandle, Deliver, Envelope};
use courier::Runtime;
use serde_json::json;
use support::{echo_round_trip, env_usize, executor, hist};

const ROLE: &str = "COURIER_BENCH_SOCKET_ROLE";

/// Counts envelopes; after `expect` of them, tells `executor/source`.
struct Counter {
    seen: usize,
    expect: usize,
    bus: BusHandle<Msg>,
}
impl Actor for Counter {
    type Context = Context<Self>;
}
impl Handler<Deliver<Msg>> for Counter {
    type Result = ();
    fn handle(&mut self, _: Deliver<Msg>, _: &mut Self::Context) {
        self.seen += 1;
        if self.seen == self.expect {
            self.bus.tell(Envelope::new(
                Address::Executor("sink".into()),
                Address::Executor("source".into()),
                Msg::CancelTask {
                    task_id: uuid::Uuid::nil(),
                },
            ));
        }
    }
}

/// Receives the child's "all counted".
struct Done(Option<tokio::sync::oneshot::Sender<()>>);
impl Actor for Done {
    type Context = Context<Self>;
}
impl Handler<Deliver<Msg>> for Done {
    type Result = ();
    fn handle(&mut self, _: Deliver<Msg>, _: &mut Self::Context) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

async fn sink(dir: String, expect: usize) {
    let bus = Bus::<Msg>::start_bus("sink");
    let t = SocketTransport::start(&dir, "sink", bus.clone())
        .await
        .unwrap();
    bus.add_transport(Box::new(t)).await.unwrap();
    let counter = Counter {
        seen: 0,
        expect,
        bus: bus.clone(),
    }
    .start();
    bus.register(Address::Executor("sink".into()), counter.recipient())
        .await
        .unwrap();
    std::future::pending::<()>().await;
}

async fn peers(bus: &BusHandle<Msg>) -> Vec<String> {
    bus.stats()
        .await
        .unwrap()
        .peers
        .get("socket")
        .cloned()
        .unwrap_or_default()
}

async fn one_way(n: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s").display().to_string();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(ROLE, format!("sink {sock} {n}"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let bus = Bus::<Msg>::start_bus("source");
    let t = SocketTransport::start(&sock, "source", bus.clone())
        .await
        .unwrap();
    bus.add_transport(Box::new(t)).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let done = Done(Some(tx)).start();
    bus.register(Address::Executor("source".into()), done.recipient())
        .await
        .unwrap();
    let to = Address::Executor("sink".into());
    // Connected, and the sink's executor address advertised.
    let start = Instant::now();
    loop {
        if peers(&bus).await.contains(&"sink".to_string()) {
            tokio::time::sleep(Duration::from_millis(300)).await;
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "sink did not connect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = |i: usize| Msg::TaskEvent {
        task_id: uuid::Uuid::now_v7(),
        seq: i as i64,
        name: "booted".into(),
        payload: json!({"host": "web01.example.com", "ip": "192.0.2.10", "n": i}),
    };
    let t0 = Instant::now();
    let mut i = 0;
    while i < n {
        let env = Envelope::new(Address::Executor("source".into()), to.clone(), body(i));
        match bus.send(env).await {
            Ok(_) => i += 1,
            // The peer's queue is full: wait for the writer to drain it.
            Err(_) => tokio::time::sleep(Duration::from_micros(200)).await,
        }
    }
    tokio::time::timeout(Duration::from_secs(120), rx)
        .await
        .expect("sink never finished")
        .unwrap();
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    rate
}

async fn round_trips(samples: usize) -> String {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("shared.db").display());
    let sock = dir.path().join("s").display().to_string();
    let bus = format!("socket:{sock}");
    let mut exec = executor(&db, &bus, "unused", "bench-exec");
    let web = Runtime::builder()
        .database(db.clone())
        .socket_transport(&sock)
        .node("bench-web")
        .without_executor()
        .start()
        .await
        .unwrap();
    let local = Runtime::builder()
        .database(format!(
            "sqlite://{}",
            dir.path().join("local.db").display()
        ))
        .registry(courier::demo::registry())
        .start()
        .await
        .unwrap();
    let (wc, lc) = (web.client(), local.client());
    let start = Instant::now();
    while !peers(web.bus()).await.contains(&"bench-exec".to_string()) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "executor did not connect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let once = |c: courier::Client| async move { echo_round_trip(&c).await };
    for _ in 0..100 {
        once(wc.clone()).await;
        once(lc.clone()).await;
    }
    let (mut hs, mut hl) = (hist(), hist());
    for _ in 0..samples {
        hs.record(once(wc.clone()).await.as_micros().max(1) as u64)
            .unwrap();
        hl.record(once(lc.clone()).await.as_micros().max(1) as u64)
            .unwrap();
    }
    local.shutdown().await;
    let _ = Command::new("kill")
        .args(["-TERM", &exec.id().to_string()])
        .status();
    let _ = exec.wait();
    let p = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64;
    format!(
        "| submit with wait → finished, `demo.echo` | socket (2 processes) | in-process | ratio |\n|---|---|---|---|\n\
         | p50 | {:.0} µs | {:.0} µs | {:.2}× |\n| p99 | {:.0} µs | {:.0} µs | {:.2}× |\n",
        p(&hs, 0.5), p(&hl, 0.5), p(&hs, 0.5) / p(&hl, 0.5),
        p(&hs, 0.99), p(&hl, 0.99), p(&hs, 0.99) / p(&hl, 0.99),
    )
}

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        let parts: Vec<&str> = role.split(' ').collect();
        let (dir, n) = (parts[1].to_string(), parts[2].parse().unwrap());
        actix::System::new().block_on(sink(dir, n));
        return;
    }
    let samples = env_usize("BENCH_SAMPLES", 1000);
    let n = env_usize("BENCH_ENVELOPES", 200_000);
    let report = actix::System::new().block_on(async move {
        let rt = round_trips(samples).await;
        let rate = one_way(n).await;
        format!(
            "### Unix-socket transport (SQLite shared file)\n\n{samples} sequential samples each, interleaved.\n\n{rt}\n\
             | one-way envelopes to another process | rate |\n|---|---|\n| {n} `task_event` envelopes through the bus and the socket | {rate:.0} /s |\n"
        )
    });
    println!("{report}");
}
