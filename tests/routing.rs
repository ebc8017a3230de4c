//! Route choice: a task created on a node whose executor has a free slot
//! starts there without a hop; when that executor is full, `start_task` goes
//! to another executor through a transport instead of waiting.

mod common;

use std::time::Duration;

use common::{eventually, TestDb};
use courier::bus::Route;
use courier::{Address, Envelope, ExecutorConfig, Msg, NewTask, TaskState};
use serde_json::json;

/// A queue only the big executor serves: what the small node can route to
/// once it knows the big one's pools.
const PROBE: &str = "probe";

/// How the two nodes are joined.
#[derive(Clone, Copy)]
enum Join {
    Socket,
    Amqp,
}

async fn a_full_executor_lets_work_go_to_another(db: &TestDb, join: Join) {
    let dir = tempfile::tempdir().unwrap();
    let sockets = dir.path().join("sockets");
    let prefix = format!("courier_t_{}", uuid::Uuid::new_v4().simple());
    let transport = |b: courier::RuntimeBuilder| match join {
        Join::Socket => b.socket_transport(&sockets),
        Join::Amqp => b.amqp_transport(courier::bus::transport::amqp::AmqpConfig {
            url: common::amqp_url(),
            prefix: prefix.clone(),
        }),
    };
    // Slow sweeps: only routing, not the recovery sweep, can move work fast.
    let config = |capacity| ExecutorConfig {
        capacity,
        sweep_interval: Duration::from_secs(60),
        ..common::fast_executor()
    };
    let small = transport(db.builder().node("small"))
        .executor(config(1))
        .start()
        .await
        .unwrap();
    // The big one also serves a queue of its own, the probe's (below).
    let big = transport(db.builder().node("big"))
        .executor(ExecutorConfig {
            queues: vec!["default".into(), PROBE.into()],
            ..config(8)
        })
        .start()
        .await
        .unwrap();
    eventually(
        "the two nodes to connect",
        Duration::from_secs(20),
        || async {
            let connected = |s: courier::bus::BusStats| s.peers.values().any(|p| !p.is_empty());
            (connected(small.bus().stats().await.unwrap())
                && connected(big.bus().stats().await.unwrap()))
            .then_some(())
        },
    )
    .await;
    // The advertisements have settled when the small node routes to a pool
    // of the big one: a `queue_changed` for the probe's queue, which only
    // the big executor serves (an empty queue: its pull finds nothing), goes
    // by a transport and arrives there. The big executor joins `default`
    // before the probe's pool and a socket peer's advertisement is whole, so
    // a small node that knows the one knows the other; over AMQP, the
    // arrival says that the big node consumes its pools.
    let arrived = big.bus().stats().await.unwrap().inbound;
    eventually(
        "the small node to route to the big one's pools",
        Duration::from_secs(20),
        || async {
            let probe = Envelope::new(
                Address::pool("routing-test").unwrap(),
                Address::pool(PROBE).unwrap(),
                Msg::QueueChanged {
                    queue: PROBE.into(),
                },
            );
            let routed = small.bus().send(probe).await;
            let inbound = big.bus().stats().await.unwrap().inbound;
            (matches!(routed, Ok(Route::Transport(_))) && inbound > arrived).then_some(())
        },
    )
    .await;

    let c = small.client();
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(
            c.submit(NewTask::new("demo.sleep", json!({"ms": 600})))
                .await
                .unwrap()
                .task
                .id,
        );
    }
    let mut on_big = 0;
    for id in &ids {
        let (t, fin) = c.wait(*id, Duration::from_secs(20)).await.unwrap();
        assert!(fin && t.state == TaskState::Succeeded, "{t:?}");
        if t.executor_id.as_deref() == big.executor_id() {
            on_big += 1;
        }
    }
    // Claims are pulls in priority order: which executor takes which task
    // is a race, but the small one has room for one at most, and none of
    // the others waited for it.
    assert!(
        on_big >= 3,
        "the small executor runs one at most; the others go to the big one ({on_big} did)"
    );
    small.shutdown().await;
    big.shutdown().await;
    if let Join::Amqp = join {
        common::amqp_cleanup(&prefix, &[PROBE.to_string()]).await;
    }
}

async fn over_sockets(db: &TestDb) {
    a_full_executor_lets_work_go_to_another(db, Join::Socket).await
}

async fn over_amqp(db: &TestDb) {
    a_full_executor_lets_work_go_to_another(db, Join::Amqp).await
}

on_both_databases!(over_sockets, over_amqp);

/// The hybrid `socket:DIR,postgres`: a web node and an executor on one host
/// (one socket directory) also share a PostgreSQL bus, yet a task created on
/// the web node reaches the executor, and its end comes back, over the
/// socket: the nearest route wins, and no message of theirs becomes a row.
#[actix::test]
async fn the_hybrid_keeps_a_hosts_traffic_on_its_socket() {
    let db = TestDb::postgres().await;
    let cluster = db
        .cluster(common::Via::SocketAndPostgres, |b| {
            b.registry(courier::demo::registry())
        })
        .await;
    let routed = |t: &'static str| {
        let bus = cluster.bus().clone();
        async move {
            bus.stats()
                .await
                .unwrap()
                .by_transport
                .get(t)
                .copied()
                .unwrap_or(0)
        }
    };
    let (socket0, pg0) = (routed("socket").await, routed("postgres").await);
    for i in 0..20 {
        let w = cluster
            .client()
            .submit_and_wait(NewTask::new("demo.echo", json!(i)), Duration::from_secs(10))
            .await
            .unwrap();
        assert!(w.finished && w.task.state == TaskState::Succeeded);
    }
    let (socket1, pg1) = (routed("socket").await, routed("postgres").await);
    assert!(
        socket1 - socket0 >= 20,
        "{socket0} → {socket1} over the socket"
    );
    assert_eq!(pg1, pg0, "messages routed through PostgreSQL");
    cluster.shutdown().await;
    db.cleanup().await;
}
