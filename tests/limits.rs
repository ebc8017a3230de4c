//! Queue limits across real processes: three executor processes and a web
//! node on one PostgreSQL, each process counting nothing for itself. A
//! concurrency limit and a rate limit hold for the whole deployment, read
//! from the tasks' own history (in the order the database wrote it, and by
//! the times the claims recorded), never by sleeping and watching.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::fleet::{ready, Db, Fleet, Wire};
use common::procs::{wait_for, Proc};
use serde_json::{json, Value};

/// Every history line of the tasks, as the API gives them.
fn histories(web: &Proc, ids: &[String]) -> Vec<courier::HistoryEntry> {
    let mut lines = Vec::new();
    for id in ids {
        let (st, h) = web.get(&format!("/api/v1/tasks/{id}/history"));
        assert_eq!(st, 200, "{h}");
        for l in h["history"].as_array().unwrap() {
            lines.push(courier::HistoryEntry {
                id: l["id"].as_i64().unwrap(),
                task_id: id.parse().unwrap(),
                from_state: l["from_state"].as_str().map(String::from),
                to_state: l["to_state"].as_str().unwrap().to_string(),
                changed_by: l["changed_by"].as_str().map(String::from),
                owner: l["owner"].as_str().map(String::from),
                attempt: l["attempt"].as_i64().unwrap() as i32,
                at: l["at"].as_str().unwrap().parse().unwrap(),
            });
        }
    }
    lines
}

fn submit(web: &Proc, n: usize, body: Value) -> Vec<String> {
    (0..n)
        .map(|_| {
            let (st, t) = web.post("/api/v1/tasks", body.clone());
            assert_eq!(st, 201, "{t}");
            t["id"].as_str().unwrap().to_string()
        })
        .collect()
}

fn all_succeed(web: &Proc, ids: &[String]) {
    for id in ids {
        wait_for(
            &format!("task {id} to succeed"),
            Duration::from_secs(90),
            || {
                let (_, t) = web.get(&format!("/api/v1/tasks/{id}"));
                (t["state"] == "succeeded").then_some(())
            },
        );
    }
}

#[test]
fn queue_limits_hold_across_three_executor_processes() {
    let fleet = Fleet::new(Db::Postgres, Wire::Socket);
    let execs: Vec<Proc> = ["exec-1", "exec-2", "exec-3"]
        .iter()
        .map(|n| fleet.executor(n, &["--capacity", "8", "--queues", "default,limited,rated"]))
        .collect();
    let web = fleet.web("web-1");
    wait_for("three executors", Duration::from_secs(30), || {
        let (_, ex) = web.get("/api/v1/executors");
        (ex["executors"].as_array().unwrap().len() == 3).then_some(())
    });

    // Concurrency 3 across 24 slots: never more than 3 at once, and 3 reached.
    let (st, q) = web.put("/api/v1/queues/limited", json!({"concurrency": 3}));
    assert_eq!((st, &q["concurrency"]), (200, &json!(3)), "{q}");
    let ids = submit(
        &web,
        45,
        json!({"kind": "demo.sleep", "input": {"ms": 100}, "queue": "limited"}),
    );
    all_succeed(&web, &ids);
    let lines = histories(&web, &ids);
    let most = common::max_running(&lines);
    assert_eq!(
        most, 3,
        "at most 3 at once in the whole deployment, and the limit was used"
    );

    // 4 starts a second, bursts of 4: in any span of t seconds, at most
    // 4 + 4t starts (one more for the microseconds between a claim's clock
    // and its commit).
    let (st, _) = web.put("/api/v1/queues/rated", json!({"rate_per_s": 4.0}));
    assert_eq!(st, 200);
    let ids = submit(
        &web,
        16,
        json!({"kind": "demo.echo", "input": 1, "queue": "rated"}),
    );
    all_succeed(&web, &ids);
    let mut starts: Vec<DateTime<Utc>> = histories(&web, &ids)
        .into_iter()
        .filter(|l| l.to_state == "running")
        .map(|l| l.at)
        .collect();
    starts.sort();
    assert_eq!(starts.len(), 16);
    for i in 0..starts.len() {
        for j in i..starts.len() {
            let span = (starts[j] - starts[i]).num_microseconds().unwrap() as f64 / 1e6;
            let n = (j - i + 1) as f64;
            assert!(
                n <= 4.0 + 4.0 * span + 1.0,
                "{n} starts within {span:.3} s under a limit of 4/s"
            );
        }
    }
    let whole = (*starts.last().unwrap() - starts[0]).num_milliseconds();
    assert!(
        whole >= 2500,
        "16 starts at 4/s after a burst of 4 take 3 s, not {whole} ms"
    );

    // Paused: nothing starts anywhere; resumed: everything does.
    web.put(
        "/api/v1/queues/limited",
        json!({"paused": true, "concurrency": null}),
    );
    let held = submit(&web, 6, json!({"kind": "demo.echo", "queue": "limited"}));
    // A round trip through the default queue: the executors are at work.
    ready(&web, Duration::from_secs(10));
    let (_, q) = web.get("/api/v1/queues/limited");
    assert_eq!(q["pending"], 6, "{q}");
    web.put("/api/v1/queues/limited", json!({"paused": false}));
    all_succeed(&web, &held);
    drop((execs, web));
}
