//! The lease (issue 23): an executor whose heartbeat is not renewed for
//! three quarters of `--dead-after-ms` stops its runs by itself, however
//! long its calls to the store hang, and claims nothing until it has
//! registered again. Here the store does not answer because another session
//! holds the `executors` table locked (as a DDL statement would); the
//! namespaced-hosts suite (`tests/hosts.rs`) does the same with a cut link.

mod common;

use std::time::{Duration, Instant};

use serde_json::json;

use common::fleet::{executors, ready, Db, Fleet, Wire};
use common::procs::wait_for;

const T: Duration = Duration::from_secs(60);

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Step 1 of a `demo.steps` task (5 s a step) is running when another
/// session locks `executors` for 7 s: the executor's heartbeat hangs, its
/// lease runs out and it aborts the run before step 1's side effect (which
/// would have come 5 s into the step, inside the lock). When the lock goes,
/// the executor retires its identity (declares it dead itself), registers
/// under a new id, and the task, put back by the sweep, runs on: every
/// step's line once, and the same attempt.
#[test]
fn a_store_that_does_not_answer_stops_the_runs() {
    let fleet = Fleet::new(Db::Postgres, Wire::Socket);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("steps.log");
    let _exec = fleet.executor(
        "exec-a",
        &[
            "--heartbeat-ms",
            "300",
            "--dead-after-ms",
            "3000",
            "--demo-log-dir",
            dir.path().to_str().unwrap(),
        ],
    );
    let web = fleet.web("web-1");
    ready(&web, T);
    let first = wait_for("the executor to register", T, || {
        executors(&web)
            .into_values()
            .find(|e| e["state"] == "alive")
            .map(|e| e["id"].as_str().unwrap().to_string())
    });
    let (st, t) = web.post(
        "/api/v1/tasks",
        json!({"kind": "demo.steps", "input": {"n": 3, "ms": 5000, "log": "steps.log"}}),
    );
    assert_eq!(st, 201, "{t}");
    let id = t["id"].as_str().unwrap().to_string();
    wait_for("step 0 done", T, || {
        (lines(&log) == ["step 0"]).then_some(())
    });

    // Hold the table the heartbeat writes for 7 s, from a session of our own.
    let started = Instant::now();
    let status = std::process::Command::new("psql")
        .arg(&fleet.db)
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
        .arg("BEGIN; LOCK TABLE executors IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(7); COMMIT;")
        .status()
        .unwrap();
    assert!(status.success());
    assert!(started.elapsed() >= Duration::from_secs(7));
    // Without the lease, step 1 would have written its line 5 s into the
    // step, inside the lock.
    assert_eq!(lines(&log), ["step 0"], "the run went on past its lease");

    let done = web.finished_once(&id, T);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 1, "{done}");
    assert_eq!(lines(&log), ["step 0", "step 1", "step 2"]);
    let all = executors(&web);
    let old = &all[&first];
    assert_eq!(old["state"], "dead", "{old}");
    assert!(
        all.values()
            .any(|e| e["state"] == "alive" && e["node"] == "exec-a" && e["id"] != first.as_str()),
        "the executor came back under a new id: {all:?}"
    );
}
