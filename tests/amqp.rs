//! The AMQP transport with real processes and the real RabbitMQ: a web node
//! and three executors, the broker stopped and started again in the middle
//! of a run, and a poison message. One test on purpose: it restarts the
//! shared broker, which no other test may see.

mod common;

use std::process::Command;
use std::time::Duration;

use common::procs::{wait_for, Proc};
use serde_json::json;

fn rabbitmqctl(args: &[&str]) {
    let st = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl");
    assert!(
        st.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&st.stderr)
    );
}

/// Starts the broker again when dropped, so a failing test cannot leave it
/// stopped for the tests after it.
struct BrokerBack;
impl Drop for BrokerBack {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").arg("start_app").output();
    }
}

#[test]
fn executors_on_amqp_survive_a_broker_restart_and_a_poison_message() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let prefix = format!("courier_t_{}", uuid::Uuid::new_v4().simple());
    let url = common::amqp_url();
    let node = |name: &str, role: &str| {
        let mut args = vec![
            role,
            "--db",
            &db,
            "--bus",
            &url,
            "--amqp-prefix",
            &prefix,
            "--node",
            name,
        ];
        if role == "executor" {
            args.extend(["--demo", "--heartbeat-ms", "300", "--dead-after-ms", "3000"]);
        }
        Proc::start(name, &args)
    };
    let execs: Vec<Proc> = ["exec-1", "exec-2", "exec-3"]
        .iter()
        .map(|n| node(n, "executor"))
        .collect();
    let web = node("web-1", "web");
    wait_for(
        "a synchronous answer through the broker",
        Duration::from_secs(30),
        || {
            let (st, _) = web.post(
                "/api/v1/tasks",
                json!({"kind": "demo.echo", "input": 0, "wait_ms": 2000}),
            );
            (st == 200).then_some(())
        },
    );

    // A run of tasks, and the broker goes away in the middle of it.
    let _broker_back = BrokerBack;
    let mut ids = Vec::new();
    for i in 0..60 {
        let (st, t) = web.post(
            "/api/v1/tasks",
            json!({"kind": "demo.sleep", "input": {"ms": 100 + (i % 5) * 50}}),
        );
        assert_eq!(st, 201, "{t}");
        ids.push(t["id"].as_str().unwrap().to_string());
        if i == 20 {
            rabbitmqctl(&["stop_app"]);
        }
    }
    let (_, h) = web.get("/healthz");
    assert_eq!(
        h["status"], "ok",
        "reads go on while the broker is away: {h}"
    );
    assert_eq!(
        h["bus"]["transports"]["amqp"]["peers"],
        json!([]),
        "and /healthz says the broker is away"
    );
    std::thread::sleep(Duration::from_secs(2));
    rabbitmqctl(&["start_app"]);

    // Every task finishes, exactly once, whatever the broker dropped.
    let mut ran_on = std::collections::HashSet::new();
    for id in &ids {
        let t = web.finished_once(id, Duration::from_secs(60));
        ran_on.insert(
            t["executor_id"]
                .as_str()
                .unwrap()
                .split('-')
                .take(2)
                .collect::<Vec<_>>()
                .join("-"),
        );
    }
    assert!(
        ran_on.len() >= 2,
        "competing consumers spread the work: {ran_on:?}"
    );
    wait_for(
        "synchronous answers after the broker is back",
        Duration::from_secs(30),
        || {
            let (st, _) = web.post(
                "/api/v1/tasks",
                json!({"kind": "demo.echo", "input": 1, "wait_ms": 2000}),
            );
            (st == 200).then_some(())
        },
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
            "pool.demo.echo".into(),
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
    let kinds: Vec<String> = courier::demo::registry().names();
    actix::System::new().block_on(common::amqp_cleanup(&prefix, &kinds));
}
