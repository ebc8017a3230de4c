//! Route choice: a task created on a node whose executor has a free slot
//! starts there without a hop; when that executor is full, `start_task` goes
//! to another executor through a transport instead of waiting.

mod common;

use std::time::Duration;

use common::{eventually, TestDb};
use courier::{ExecutorConfig, NewTask, TaskState};
use serde_json::json;

async fn a_full_executor_lets_work_go_to_another(db: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let sockets = dir.path().join("sockets");
    // Slow sweeps: only routing, not the recovery sweep, can move work fast.
    let config = |capacity| ExecutorConfig {
        capacity,
        sweep_interval: Duration::from_secs(60),
        ..common::fast_executor()
    };
    let small = db
        .builder()
        .node("small")
        .socket_transport(&sockets)
        .executor(config(1))
        .start()
        .await
        .unwrap();
    let big = db
        .builder()
        .node("big")
        .socket_transport(&sockets)
        .executor(config(8))
        .start()
        .await
        .unwrap();
    eventually(
        "the two nodes to connect",
        Duration::from_secs(20),
        || async {
            let s = small.bus().stats().await.unwrap();
            let peers = s.peers.get("socket").cloned().unwrap_or_default();
            (peers == ["big"]).then_some(())
        },
    )
    .await;
    // Let the advertisements of both settle.
    tokio::time::sleep(Duration::from_millis(300)).await;

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
    assert_eq!(
        on_big, 3,
        "the small executor ran one; the others went to the big one"
    );
    small.shutdown().await;
    big.shutdown().await;
}

on_both_databases!(a_full_executor_lets_work_go_to_another);
