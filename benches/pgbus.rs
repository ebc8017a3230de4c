//! The PostgreSQL transport's table under load: `BENCH_MESSAGES` (default
//! 1,000,000) envelopes from one node to another through `--bus postgres`,
//! in one process, with `bus_messages`' size sampled on the way and after.
//! The question is bloat: rows are inserted and deleted all the time, so
//! the table's size must follow what is in flight, not what went through.
//!
//! First the round trip of one envelope node → node → node, sequential
//! (beside `pg/listen-notify-rtt` of `../shared/bench/limits`: `benches/amqp.sh`
//! prints both).
//!
//! ```text
//! cargo bench --bench pgbus
//! BENCH_MESSAGES=100000 cargo bench --bench pgbus
//! ```

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use courier::bus::transport::postgres::{PostgresConfig, PostgresTransport};
use courier::bus::{Address, Bus as BusActor, Deliver, Envelope};
use courier::{Msg, Store, StoreOptions};
use sqlx::Connection;
use support::{create_schema, drop_schemas, env_usize, pg_url};

struct Counter(Arc<AtomicU64>);

/// Sends every envelope it gets back to where it came from.
struct Echo(courier::bus::BusHandle<Msg>, Address);

impl Actor for Echo {
    type Context = Context<Self>;
}

impl Handler<Deliver<Msg>> for Echo {
    type Result = ();
    fn handle(&mut self, Deliver(env): Deliver<Msg>, _: &mut Self::Context) {
        self.0
            .tell(Envelope::new(self.1.clone(), env.from, env.body));
    }
}

/// Hands what it gets to the waiting sampler.
struct Back(tokio::sync::mpsc::UnboundedSender<()>);

impl Actor for Back {
    type Context = Context<Self>;
}

impl Handler<Deliver<Msg>> for Back {
    type Result = ();
    fn handle(&mut self, _: Deliver<Msg>, _: &mut Self::Context) {
        let _ = self.0.send(());
    }
}

impl Actor for Counter {
    type Context = Context<Self>;
}

impl Handler<Deliver<Msg>> for Counter {
    type Result = ();
    fn handle(&mut self, _: Deliver<Msg>, _: &mut Self::Context) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

async fn size(conn: &mut sqlx::PgConnection) -> (i64, i64) {
    let (bytes, rows): (i64, i64) = sqlx::query_as(
        "SELECT pg_total_relation_size('bus_messages'), (SELECT COUNT(*) FROM bus_messages)",
    )
    .fetch_one(conn)
    .await
    .unwrap();
    (bytes, rows)
}

fn main() {
    let n = env_usize("BENCH_MESSAGES", 1_000_000) as u64;
    actix::System::new().block_on(async move {
        let base = pg_url();
        let schema = create_schema(&base).await;
        let store = Store::connect_with(
            &base,
            StoreOptions {
                pg_schema: Some(schema.clone()),
                ..StoreOptions::default()
            },
        )
        .await
        .unwrap();
        let connect = store.postgres_bus().unwrap().connect;
        let mut conn = sqlx::PgConnection::connect_with(&connect).await.unwrap();
        let a = BusActor::<Msg>::start_bus("bench-a");
        let b = BusActor::<Msg>::start_bus("bench-b");
        for (bus, node) in [(&a, "bench-a"), (&b, "bench-b")] {
            let t = PostgresTransport::start(
                PostgresConfig {
                    connect: connect.clone(),
                },
                node,
                bus.clone(),
            );
            bus.add_transport(Box::new(t)).await.unwrap();
        }
        let got = Arc::new(AtomicU64::new(0));
        let to = Address::Web {
            node: "bench-b".into(),
            session: "counter".into(),
        };
        b.register(to.clone(), Counter(got.clone()).start().recipient())
            .await
            .unwrap();
        // Round trips first: node A → node B → node A, one at a time.
        let echo_at = Address::Web {
            node: "bench-b".into(),
            session: "echo".into(),
        };
        let back_at = Address::Web {
            node: "bench-a".into(),
            session: "back".into(),
        };
        b.register(echo_at.clone(), Echo(b.clone(), echo_at.clone()).start().recipient())
            .await
            .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        a.register(back_at.clone(), Back(tx).start().recipient())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut rtt = support::hist();
        let samples = env_usize("BENCH_SAMPLES", 1000);
        for i in 0..samples + 50 {
            let t = Instant::now();
            a.tell(Envelope::new(
                back_at.clone(),
                echo_at.clone(),
                Msg::QueueChanged {
                    queue: "default".into(),
                },
            ));
            rx.recv().await.unwrap();
            if i >= 50 {
                rtt.record(t.elapsed().as_micros().max(1) as u64).unwrap();
            }
        }
        println!(
            "\n### PostgreSQL transport: round trip node → node → node ({samples} sequential samples)\n\n| p50 | p99 |\n|---|---|\n| {} µs | {} µs |",
            rtt.value_at_quantile(0.5),
            rtt.value_at_quantile(0.99)
        );
        let (empty, _) = size(&mut conn).await;
        let from = Address::Executor("bench-a".into());
        let t0 = Instant::now();
        let mut sent = 0u64;
        let (mut max_bytes, mut max_rows) = (0i64, 0i64);
        let mut samples = Vec::new();
        while sent < n {
            // Keep at most 4,000 in flight: the transport's outbox holds 8,192.
            while sent - got.load(Ordering::Relaxed) > 4_000 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            for _ in 0..1_000.min(n - sent) {
                a.tell(Envelope::new(
                    from.clone(),
                    to.clone(),
                    Msg::QueueChanged {
                        queue: "default".into(),
                    },
                ));
                sent += 1;
            }
            if sent.is_multiple_of(100_000) {
                let (bytes, rows) = size(&mut conn).await;
                max_bytes = max_bytes.max(bytes);
                max_rows = max_rows.max(rows);
                samples.push((sent, bytes, rows));
            }
        }
        while got.load(Ordering::Relaxed) < n && t0.elapsed() < Duration::from_secs(3600) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = t0.elapsed();
        let (end_bytes, end_rows) = size(&mut conn).await;
        sqlx::query("VACUUM bus_messages")
            .execute(&mut conn)
            .await
            .unwrap();
        let (vacuumed, _) = size(&mut conn).await;
        drop_schemas(&base, &[schema]).await;
        let mib = |b: i64| b as f64 / (1024.0 * 1024.0);
        println!(
            "\n### PostgreSQL transport: {n} envelopes node → node ({:.1} s, {:.0} msgs/s; received {})\n",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64(),
            got.load(Ordering::Relaxed)
        );
        println!("| when | `bus_messages` size | rows |");
        println!("|---|---|---|");
        println!("| empty, before | {:.2} MiB | 0 |", mib(empty));
        for (s, bytes, rows) in samples {
            println!("| after {s} sent | {:.2} MiB | {rows} |", mib(bytes));
        }
        println!("| largest seen | {:.2} MiB | {max_rows} |", mib(max_bytes));
        println!("| all received | {:.2} MiB | {end_rows} |", mib(end_bytes));
        println!("| after `VACUUM` | {:.2} MiB | |", mib(vacuumed));
    });
}
