//! The AMQP transport with real processes and the real RabbitMQ: a web node
//! and three executors sharing the work as competing consumers, and a
//! poison message. (The broker restarted mid-run is in the chaos suite,
//! `tests/chaos.rs`.)

mod common;

use std::time::Duration;

use common::fleet::{node_of, ready, sleeps, Db, Fleet, Wire};
use common::procs::Proc;
use serde_json::json;

#[test]
fn executors_on_amqp_share_the_work_and_survive_a_poison_message() {
    let fleet = Fleet::new(Db::Sqlite, Wire::Amqp);
    let prefix = fleet.amqp_prefix().unwrap().to_string();
    let url = common::amqp_url();
    let execs: Vec<Proc> = ["exec-1", "exec-2", "exec-3"]
        .iter()
        .map(|n| fleet.executor(n, &[]))
        .collect();
    let web = fleet.web("web-1");
    ready(&web, Duration::from_secs(30));
    let ids = sleeps(&web, 30, |i| 100 + (i as u64 % 5) * 50);

    // Every task finishes, exactly once, spread over the executors.
    let mut ran_on = std::collections::HashSet::new();
    for id in &ids {
        let t = web.finished_once(id, Duration::from_secs(60));
        ran_on.insert(node_of(t["executor_id"].as_str().unwrap()).to_string());
    }
    assert!(
        ran_on.len() >= 2,
        "competing consumers spread the work: {ran_on:?}"
    );

    // A poison message on a pool queue goes to the dead letters; the
    // executors go on.
    actix::System::new().block_on(async {
        use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
        let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.basic_publish(
            prefix.as_str().into(),
            "pool.default".into(),
            BasicPublishOptions::default(),
            b"\x00 this is not an envelope",
            lapin::BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        let dead = format!("{prefix}.dead");
        let mut n = 0;
        for _ in 0..100 {
            let q = ch
                .queue_declare(
                    dead.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    Default::default(),
                )
                .await
                .unwrap();
            n = q.message_count();
            if n > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(n, 1, "the poison message is dead-lettered");
        let _ = conn.close(200, "done".into()).await;
    });
    let (st, t) = web.post(
        "/api/v1/tasks",
        json!({"kind": "demo.echo", "input": "after poison", "wait_ms": 5000}),
    );
    assert_eq!((st, &t["output"]), (200, &json!("after poison")));

    drop((execs, web));
}
