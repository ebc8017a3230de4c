//! The chaos suite: real `courier` processes on the real PostgreSQL or a
//! shared SQLite file, talking over Unix sockets or the real RabbitMQ, while
//! executors are killed with SIGKILL, frozen past the failure timeout and
//! thawed, and the database and the broker are restarted under them. Each
//! case counts exactly, through the API: every task finished exactly once,
//! none lost, none finished twice, none finished by an executor after it
//! was declared dead (see `common::fleet::Audit`).
//!
//! Slow, and it restarts the shared PostgreSQL and RabbitMQ: every case is
//! `#[ignore]`d so that `cargo test --workspace` leaves it out, and `.ci/run`
//! runs the suite on its own, one case at a time:
//!
//! ```text
//! cargo test --test chaos -- --ignored --test-threads=1
//! ```

mod common;

use std::process::Command;
use std::time::Duration;

use common::fleet::{
    alive_executor_of, count, executors, held_by, node_of, ready, sleeps, Audit, Db, Fleet, Wire,
};
use common::procs::{wait_for, Proc};
use serde_json::{json, Value};

/// The fastest failure detection courier is tuned for: heartbeat every
/// 300 ms, dead after 3 s of silence.
const FAST: [&str; 6] = [
    "--heartbeat-ms",
    "300",
    "--dead-after-ms",
    "3000",
    "--capacity",
    "4",
];
const T: Duration = Duration::from_secs(60);

/// The node whose executor runs the most tasks in `state` now.
fn busiest(web: &Proc, state: &str) -> (String, usize) {
    let (_, l) = web.get(&format!("/api/v1/tasks?state={state}&limit=500"));
    let mut by: std::collections::HashMap<String, usize> = Default::default();
    for t in l["tasks"].as_array().unwrap() {
        if let Some(e) = t["executor_id"].as_str() {
            *by.entry(e.to_string()).or_default() += 1;
        }
    }
    by.into_iter().max_by_key(|(_, n)| *n).unwrap_or_default()
}

/// A fleet of executor processes `nodes`, with the fastest failure
/// detection, and a web node that answers.
fn fleet_of(db: Db, wire: Wire, nodes: &[&str]) -> (Fleet, Vec<Proc>, Proc) {
    let fleet = Fleet::new(db, wire);
    let execs = nodes.iter().map(|n| fleet.executor(n, &FAST)).collect();
    let web = fleet.web("web-1");
    ready(&web, T);
    (fleet, execs, web)
}

/// Sleeps of 100 to 300 ms.
fn mixed(i: usize) -> u64 {
    100 + (i as u64 % 5) * 50
}

fn take(procs: &mut Vec<Proc>, node: &str) -> Proc {
    let i = procs.iter().position(|p| p.name == node).unwrap();
    procs.remove(i)
}

/// Waits until `base + n` tasks have succeeded.
fn until_succeeded(web: &Proc, base: u64, n: u64) {
    wait_for(&format!("{n} tasks to succeed"), T, || {
        (count(web, "succeeded") >= base + n).then_some(())
    });
}

/// SIGKILL the executor that runs the most tasks, 40% into a run of 200.
/// Its running tasks are taken over (on the same host: as soon as a sweep
/// sees its process gone), and run again elsewhere; nothing is lost.
#[test]
#[ignore = "chaos suite: cargo test --test chaos -- --ignored --test-threads=1"]
fn sigkill_an_executor_mid_run_of_200_tasks() {
    sigkill_an_executor_mid_run_of_200_tasks_over(Wire::Amqp);
}

#[test]
#[ignore = "chaos suite: cargo test --test chaos -- --ignored --test-threads=1"]
fn sigkill_an_executor_mid_run_of_200_tasks_over_postgres() {
    sigkill_an_executor_mid_run_of_200_tasks_over(Wire::Postgres);
}

#[test]
#[ignore = "chaos suite: cargo test --test chaos -- --ignored --test-threads=1"]
fn sigkill_an_executor_mid_run_of_200_tasks_over_the_hybrid() {
    sigkill_an_executor_mid_run_of_200_tasks_over(Wire::SocketAndPostgres);
}

fn sigkill_an_executor_mid_run_of_200_tasks_over(wire: Wire) {
    let (_fleet, mut execs, web) = fleet_of(Db::Postgres, wire, &["exec-a", "exec-b", "exec-c"]);
    let base = count(&web, "succeeded");
    let ids = sleeps(&web, 200, mixed);
    until_succeeded(&web, base, 80);
    let (victim, running) = busiest(&web, "running");
    assert!(running > 0, "some executor runs tasks");
    take(&mut execs, node_of(&victim)).kill9();

    let audit = Audit::of(&web, &ids, "succeeded", T);
    audit.assert_exactly_once();
    let ex = executors(&web);
    assert_eq!(ex[&victim]["state"], "dead", "{}", ex[&victim]);
    let taker = ex[&victim]["ended_by"].as_str().unwrap();
    assert!(
        ex.get(taker).is_some_and(|e| e["state"] == "alive"),
        "taken over by a live executor: {taker}"
    );
    audit.assert_taken_over_from(&victim);
    drop(execs);
}

/// SIGSTOP an executor holding running tasks until it is declared dead and
/// its tasks run elsewhere, then SIGCONT it: the zombie's runs end but none
/// of their writes land, and it comes back as a new executor.
#[test]
#[ignore = "chaos suite: cargo test --test chaos -- --ignored --test-threads=1"]
fn sigstop_past_the_timeout_then_sigcont_the_zombie() {
    sigstop_past_the_timeout_then_sigcont_the_zombie_over(Wire::Socket);
}

#[test]
#[ignore = "chaos suite: cargo test --test chaos -- --ignored --test-threads=1"]
fn sigstop_past_the_timeout_then_sigcont_the_zombie_over_postgres() {
    sigstop_past_the_timeout_then_sigcont_the_zombie_over(Wire::Postgres);
}

fn sigstop_past_the_timeout_then_sigcont_the_zombie_over(wire: Wire) {
    let fleet = Fleet::new(Db::Postgres, wire);
    let a = fleet.executor("exec-a", &FAST);
    let _b = fleet.executor("exec-b", &FAST);
    let web = fleet.web("web-1");
    ready(&web, T);
    let ids = sleeps(&web, 40, |_| 1500);
    let frozen = alive_executor_of(&web, "exec-a").unwrap();
    wait_for("exec-a to run tasks", T, || {
        (held_by(&web, &frozen, "running") > 0).then_some(())
    });
    a.signal("-STOP");
    let dead = wait_for("the frozen executor to be declared dead", T, || {
        let e = executors(&web).remove(&frozen)?;
        (e["state"] == "dead").then_some(e)
    });
    assert!(
        dead["ended_by"]
            .as_str()
            .is_some_and(|b| b.starts_with("exec-b-")),
        "{dead}"
    );
    // Its tasks run on exec-b now; then the zombie wakes up.
    wait_for("the frozen executor's tasks to be taken over", T, || {
        (held_by(&web, &frozen, "running") == 0).then_some(())
    });
    a.signal("-CONT");
    wait_for("the zombie to come back as a new executor", T, || {
        alive_executor_of(&web, "exec-a").filter(|id| id != &frozen)
    });

    let audit = Audit::of(&web, &ids, "succeeded", T);
    audit.assert_exactly_once();
    audit.assert_taken_over_from(&frozen);
    assert!(
        audit
            .takeovers
            .iter()
            .all(|(_, _, taker, _)| taker.starts_with("exec-b-")),
        "{:?}",
        audit.takeovers
    );
    // Nothing in the store was changed by the zombie after it was declared
    // dead.
    common::fleet::assert_nothing_written_after_death(&web, &ids, &frozen, &dead);
    // The new incarnation works.
    let more = sleeps(&web, 8, |_| 50);
    Audit::of(&web, &more, "succeeded", T).assert_exactly_once();
    drop(a);
}

/// SIGKILL the executor that ran tasks now suspended, then send their
/// events at once, before anyone has noticed it died: a suspended task is
/// in no executor's memory (held by nobody, in the database), so the death
/// takes nothing from it; each event wakes its task on the survivor, which
/// replays it, and each task gets its own event.
#[test]
#[ignore = "chaos suite: cargo test --test chaos -- --ignored --test-threads=1"]
fn kill_the_executor_of_suspended_tasks_then_send_their_events() {
    kill_the_executor_of_suspended_tasks_then_send_their_events_over(Wire::Amqp);
}

#[test]
#[ignore = "chaos suite: cargo test --test chaos -- --ignored --test-threads=1"]
fn kill_the_executor_of_suspended_tasks_then_send_their_events_over_postgres() {
    kill_the_executor_of_suspended_tasks_then_send_their_events_over(Wire::Postgres);
}

fn kill_the_executor_of_suspended_tasks_then_send_their_events_over(wire: Wire) {
    let (_fleet, mut execs, web) = fleet_of(Db::Postgres, wire, &["exec-a", "exec-b"]);
    let ids: Vec<String> = (0..20)
        .map(|_| {
            let (st, t) = web.post(
                "/api/v1/tasks",
                json!({"kind": "demo.await_event", "input": {"name": "go"}}),
            );
            assert_eq!(st, 201, "{t}");
            t["id"].as_str().unwrap().to_string()
        })
        .collect();
    wait_for("every task to be suspended", T, || {
        ids.iter()
            .all(|id| web.get(&format!("/api/v1/tasks/{id}")).1["state"] == "suspended")
            .then_some(())
    });
    for id in &ids {
        let t = web.get(&format!("/api/v1/tasks/{id}")).1;
        assert_eq!(t["executor_id"], Value::Null, "held by nobody: {t}");
        assert_eq!(t["waiting"], "event go", "{t}");
    }
    take(&mut execs, "exec-a").kill9();
    for (i, id) in ids.iter().enumerate() {
        let (st, r) = web.post(
            &format!("/api/v1/tasks/{id}/events"),
            json!({"name": "go", "payload": {"n": i}}),
        );
        assert_eq!(st, 202, "{r}");
    }

    let audit = Audit::of(&web, &ids, "succeeded", T);
    audit.assert_exactly_once();
    for (i, id) in ids.iter().enumerate() {
        let t = web.get(&format!("/api/v1/tasks/{id}")).1;
        assert_eq!(t["output"], json!({"n": i}), "each task got its own event");
    }
    assert!(
        audit.takeovers.is_empty(),
        "nothing suspended was held, so nothing was taken over: {:?}",
        audit.takeovers
    );
    for id in &ids {
        let t = web.get(&format!("/api/v1/tasks/{id}")).1;
        assert_eq!(
            t["executor_id"].as_str().map(node_of),
            Some("exec-b"),
            "{t}"
        );
    }
    drop(execs);
}

/// SIGKILL an executor while tasks wait out their retry backoff and while
/// delayed tasks come due. The waits are timers in the database, not in the
/// dead process: every retry and every delayed task still runs, each once,
/// and none before its time.
#[test]
#[ignore = "chaos suite: cargo test --test chaos -- --ignored --test-threads=1"]
fn sigkill_an_executor_while_retries_and_delayed_tasks_wait() {
    let (_fleet, mut execs, web) = fleet_of(Db::Postgres, Wire::Socket, &["exec-a", "exec-b"]);
    let flaky: Vec<String> = (0..40)
        .map(|_| {
            let (st, t) = web.post(
                "/api/v1/tasks",
                json!({"kind": "demo.flaky", "input": {"fail_times": 1},
                       "max_attempts": 2, "backoff_ms": 2000}),
            );
            assert_eq!(st, 201, "{t}");
            t["id"].as_str().unwrap().to_string()
        })
        .collect();
    let delayed: Vec<String> = (0..40)
        .map(|i| {
            let (st, t) = web.post(
                "/api/v1/tasks",
                json!({"kind": "demo.echo", "input": i, "delay_ms": 1000 + i * 40}),
            );
            assert_eq!(st, 201, "{t}");
            t["id"].as_str().unwrap().to_string()
        })
        .collect();
    // Every flaky task has failed once and waits for its retry.
    wait_for("the retries to be scheduled", T, || {
        let waiting = flaky.iter().all(|id| {
            let (_, t) = web.get(&format!("/api/v1/tasks/{id}"));
            t["state"] == "scheduled" && t["errors"].as_array().unwrap().len() == 1
        });
        waiting.then_some(())
    });
    take(&mut execs, "exec-a").kill9();

    let mut all = flaky.clone();
    all.extend(delayed.iter().cloned());
    Audit::of(&web, &all, "succeeded", T).assert_exactly_once();
    for id in &flaky {
        let (_, t) = web.get(&format!("/api/v1/tasks/{id}"));
        assert_eq!(t["output"], json!({"attempt": 2}), "{t}");
        assert_eq!(
            t["errors"].as_array().unwrap().len(),
            1,
            "one failed attempt: {t}"
        );
        let (_, h) = web.get(&format!("/api/v1/tasks/{id}/history"));
        let promoted = h["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["from_state"] == "scheduled")
            .count();
        assert_eq!(promoted, 1, "its retry came due once: {h}");
    }
    for (i, id) in delayed.iter().enumerate() {
        let (_, t) = web.get(&format!("/api/v1/tasks/{id}"));
        let (_, h) = web.get(&format!("/api/v1/tasks/{id}/history"));
        let lines = h["history"].as_array().unwrap();
        assert_eq!(lines[0]["to_state"], "scheduled", "{h}");
        let created = common::fleet::time(&t["created_at"]).unwrap();
        let due = created + chrono::Duration::milliseconds(1000 + i as i64 * 40);
        let started = common::fleet::time(&t["started_at"]).unwrap();
        assert!(started >= due, "started before its time: {t}");
    }
    drop(execs);
}

/// SIGKILL the executor that ran parents now waiting for their sub-tasks,
/// which run on another executor: the suspended parents are held by nobody,
/// so nothing is taken over; the sub-tasks' ends wake them on a new
/// executor, their runs replay (the same sub-tasks, not new ones) and each
/// gets every child's result.
#[test]
#[ignore = "chaos suite: cargo test --test chaos -- --ignored --test-threads=1"]
fn kill_the_executor_of_parents_waiting_for_sub_tasks() {
    let fleet = Fleet::new(Db::Postgres, Wire::Socket);
    let kinds = |k: &'static str| [&FAST[..], &["--kinds", k]].concat();
    let a = fleet.executor("exec-a", &kinds("demo.fanout"));
    let _b = fleet.executor("exec-b", &kinds("demo.sleep"));
    let web = fleet.web("web-1");
    wait_for("both executors", T, || {
        (executors(&web)
            .values()
            .filter(|e| e["state"] == "alive")
            .count()
            == 2)
            .then_some(())
    });
    let parents: Vec<String> = (0..10)
        .map(|_| {
            let (st, t) = web.post(
                "/api/v1/tasks",
                json!({"kind": "demo.fanout", "input": {"n": 5, "kind": "demo.sleep", "input": {"ms": 1500}}}),
            );
            assert_eq!(st, 201, "{t}");
            t["id"].as_str().unwrap().to_string()
        })
        .collect();
    wait_for("every parent to wait for its sub-tasks", T, || {
        parents
            .iter()
            .all(|id| web.get(&format!("/api/v1/tasks/{id}")).1["state"] == "suspended")
            .then_some(())
    });
    a.kill9();
    let _c = fleet.executor("exec-c", &kinds("demo.fanout"));

    let audit = Audit::of(&web, &parents, "succeeded", T);
    audit.assert_exactly_once();
    assert!(
        audit.takeovers.is_empty(),
        "a suspended parent is held by nobody: nothing to take over {:?}",
        audit.takeovers
    );
    let mut children = Vec::new();
    for id in &parents {
        let t = web.get(&format!("/api/v1/tasks/{id}")).1;
        assert_eq!(t["output"]["children"], 5, "{t}");
        assert_eq!(
            t["executor_id"].as_str().map(node_of),
            Some("exec-c"),
            "{t}"
        );
        let (_, c) = web.get(&format!("/api/v1/tasks/{id}/children"));
        let c = c["tasks"].as_array().unwrap().clone();
        assert_eq!(c.len(), 5, "the replay spawned no new sub-tasks");
        children.extend(c.iter().map(|t| t["id"].as_str().unwrap().to_string()));
    }
    Audit::of(&web, &children, "succeeded", T).assert_exactly_once();
}

fn restart_postgres() {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("a Debian PostgreSQL cluster")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .unwrap();
    let out = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", "restart"])
        .output()
        .expect("pg_ctlcluster");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// PostgreSQL restarted while a web node and two executor processes work
/// through 200 tasks: they retry with backoff and resume.
#[test]
#[ignore = "chaos suite: cargo test --test chaos -- --ignored --test-threads=1"]
fn restart_postgres_mid_run() {
    restart_postgres_mid_run_over(Wire::Socket);
}

#[test]
#[ignore = "chaos suite: cargo test --test chaos -- --ignored --test-threads=1"]
fn restart_postgres_mid_run_over_postgres() {
    restart_postgres_mid_run_over(Wire::Postgres);
}

fn restart_postgres_mid_run_over(wire: Wire) {
    let (_fleet, execs, web) = fleet_of(Db::Postgres, wire, &["exec-a", "exec-b"]);
    let base = count(&web, "succeeded");
    let ids = sleeps(&web, 200, mixed);
    until_succeeded(&web, base, 40);
    restart_postgres();

    Audit::of(&web, &ids, "succeeded", Duration::from_secs(120)).assert_exactly_once();
    let (st, t) = web.post(
        "/api/v1/tasks",
        json!({"kind": "demo.echo", "input": "after", "wait_ms": 10000}),
    );
    assert_eq!((st, &t["output"]), (200, &json!("after")), "{t}");
    drop(execs);
}

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

/// RabbitMQ stopped and started again while 200 tasks are submitted and
/// run by three executor processes that only meet through the broker.
#[test]
#[ignore = "chaos suite: cargo test --test chaos -- --ignored --test-threads=1"]
fn restart_rabbitmq_mid_run() {
    let (_fleet, execs, web) = fleet_of(Db::Postgres, Wire::Amqp, &["exec-a", "exec-b", "exec-c"]);
    let _back = BrokerBack;
    let mut ids = sleeps(&web, 60, mixed);
    rabbitmqctl(&["stop_app"]);
    let (_, h) = web.get("/healthz");
    assert_eq!(h["status"], "ok", "reads go on while the broker is away");
    ids.extend(sleeps(&web, 80, mixed));
    std::thread::sleep(Duration::from_secs(2));
    rabbitmqctl(&["start_app"]);
    ids.extend(sleeps(&web, 60, mixed));

    Audit::of(&web, &ids, "succeeded", Duration::from_secs(120)).assert_exactly_once();
    ready(&web, T);
    drop(execs);
}

/// Lines of the side-effect log of `demo.steps`, counted by step.
fn step_lines(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// SIGKILL the executor in the middle of a 10-step task. Every step that
/// completed ran exactly once (its line is in the log once); only the step
/// in flight at the kill may have run twice. The takeover uses no attempt.
#[test]
#[ignore = "chaos suite: cargo test --test chaos -- --ignored --test-threads=1"]
fn sigkill_in_the_middle_of_a_ten_step_task() {
    let (_fleet, mut execs, web) = fleet_of(Db::Postgres, Wire::Socket, &["exec-a", "exec-b"]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("steps.log");
    let (st, t) = web.post(
        "/api/v1/tasks",
        json!({"kind": "demo.steps", "input": {"n": 10, "ms": 300, "log": log}}),
    );
    assert_eq!(st, 201, "{t}");
    let id = t["id"].as_str().unwrap().to_string();
    let owner = wait_for("four steps done", T, || {
        let (_, t) = web.get(&format!("/api/v1/tasks/{id}"));
        (step_lines(&log).len() >= 4)
            .then(|| t["executor_id"].as_str().map(str::to_string))
            .flatten()
    });
    take(&mut execs, node_of(&owner)).kill9();
    let written = step_lines(&log).len();
    let done = web.finished_once(&id, T);
    assert_eq!(done["output"], json!({"steps": 10}));
    assert_eq!(done["attempts"], 1, "the death used no attempt: {done}");
    let lines = step_lines(&log);
    let mut twice = Vec::new();
    for i in 0..10 {
        let n = lines.iter().filter(|l| **l == format!("step {i}")).count();
        assert!(n >= 1, "step {i} never ran: {lines:?}");
        if n > 1 {
            twice.push(i);
        }
    }
    // Only the step in flight may run twice: the last one to write its
    // line before the kill (killed before its journal entry committed).
    assert!(
        twice.is_empty() || twice == [written - 1],
        "completed steps ran again: {twice:?} (killed after {written} lines): {lines:?}"
    );
    let steps = done["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 10, "{done}");
    assert!(steps
        .iter()
        .all(|s| s["state"] == "succeeded" && s["attempt"] == 1));
    drop(execs);
}

/// Durable timers and retries waiting out their backoff, then SIGKILL the
/// only executor and start it again: every timer and every retry runs, each
/// once, and none before its time.
#[test]
#[ignore = "chaos suite: cargo test --test chaos -- --ignored --test-threads=1"]
fn timers_and_retries_survive_sigkill_and_a_restart() {
    let (fleet, mut execs, web) = fleet_of(Db::Postgres, Wire::Socket, &["exec-a"]);
    let timers: Vec<String> = (0..20)
        .map(|i| {
            let (st, t) = web.post(
                "/api/v1/tasks",
                json!({"kind": "demo.timer", "input": {"ms": 3000 + i * 50}}),
            );
            assert_eq!(st, 201, "{t}");
            t["id"].as_str().unwrap().to_string()
        })
        .collect();
    let flaky: Vec<String> = (0..10)
        .map(|_| {
            let (st, t) = web.post(
                "/api/v1/tasks",
                json!({"kind": "demo.flaky", "input": {"fail_times": 1},
                       "max_attempts": 2, "backoff_ms": 4000}),
            );
            assert_eq!(st, 201, "{t}");
            t["id"].as_str().unwrap().to_string()
        })
        .collect();
    wait_for("every timer asleep and every retry waiting", T, || {
        let asleep = timers
            .iter()
            .all(|id| web.get(&format!("/api/v1/tasks/{id}")).1["state"] == "suspended");
        let waiting = flaky
            .iter()
            .all(|id| web.get(&format!("/api/v1/tasks/{id}")).1["state"] == "scheduled");
        (asleep && waiting).then_some(())
    });
    take(&mut execs, "exec-a").kill9();
    let _again = fleet.executor("exec-a", &FAST);
    Audit::of(&web, &timers, "succeeded", T).assert_exactly_once();
    Audit::of(&web, &flaky, "succeeded", T).assert_exactly_once();
    for id in &timers {
        let (_, h) = web.get(&format!("/api/v1/tasks/{id}/history"));
        let (_, t) = web.get(&format!("/api/v1/tasks/{id}"));
        let due = t["steps"][0]["output"]
            .as_str()
            .and_then(|s| s.parse::<chrono::DateTime<chrono::Utc>>().ok())
            .expect("the journaled due time");
        let woke = h["history"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["from_state"] == "suspended")
            .and_then(|l| common::fleet::time(&l["at"]))
            .expect("woken");
        assert!(woke >= due, "woke at {woke}, due {due}");
    }
    for id in &flaky {
        let (_, t) = web.get(&format!("/api/v1/tasks/{id}"));
        assert_eq!(
            (t["attempts"].as_i64(), t["output"]["attempt"].as_i64()),
            (Some(2), Some(2)),
            "{t}"
        );
    }
}

/// The task ids of schedule `name`, by the second of their slot.
fn slots_of(web: &Proc, name: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    let (_, l) = web.get(&format!("/api/v1/tasks?schedule={name}&limit=1000"));
    let mut by = std::collections::BTreeMap::<String, Vec<String>>::new();
    for t in l["tasks"].as_array().unwrap() {
        let key = t["idempotency_key"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        by.entry(key)
            .or_default()
            .push(t["id"].as_str().unwrap().to_string());
    }
    by
}

/// A schedule every second, three executor processes, one of them SIGKILLed
/// and started again on the way: at least 60 slots, each made exactly one
/// task, with no slot missing, whichever process fired it.
#[test]
#[ignore = "chaos suite: cargo test --test chaos -- --ignored --test-threads=1"]
fn a_schedule_fires_each_slot_once_across_three_processes() {
    let (fleet, mut execs, web) =
        fleet_of(Db::Postgres, Wire::Socket, &["exec-a", "exec-b", "exec-c"]);
    let (st, s) = web.put(
        "/api/v1/schedules/tick",
        json!({"cron": "* * * * * *", "kind": "demo.echo", "input": {"tick": 1}}),
    );
    assert_eq!(st, 201, "{s}");
    wait_for("20 slots", T, || {
        (slots_of(&web, "tick").len() >= 20).then_some(())
    });
    take(&mut execs, "exec-b").kill9();
    wait_for("40 slots", T, || {
        (slots_of(&web, "tick").len() >= 40).then_some(())
    });
    execs.push(fleet.executor("exec-b", &FAST));
    wait_for("65 slots", Duration::from_secs(90), || {
        (slots_of(&web, "tick").len() >= 65).then_some(())
    });
    let (st, s) = web.put(
        "/api/v1/schedules/tick",
        json!({"cron": "* * * * * *", "kind": "demo.echo", "enabled": false}),
    );
    assert_eq!((st, &s["next_run_at"]), (200, &Value::Null), "{s}");
    let slots = slots_of(&web, "tick");
    for (slot, ids) in &slots {
        assert_eq!(ids.len(), 1, "slot {slot} made {} tasks", ids.len());
    }
    let seconds: Vec<chrono::DateTime<chrono::Utc>> = slots
        .keys()
        .map(|k| k.trim_start_matches("schedule:tick:").parse().unwrap())
        .collect();
    for w in seconds.windows(2) {
        assert_eq!(
            (w[1] - w[0]).num_seconds(),
            1,
            "a slot is missing between {} and {}",
            w[0],
            w[1]
        );
    }
    let ids: Vec<String> = slots.into_values().flatten().collect();
    Audit::of(&web, &ids, "succeeded", T).assert_exactly_once();
    let firers: std::collections::BTreeSet<String> = ids
        .iter()
        .filter_map(|id| {
            let (_, h) = web.get(&format!("/api/v1/tasks/{id}/history"));
            h["history"][0]["changed_by"]
                .as_str()
                .map(|e| node_of(e).to_string())
        })
        .collect();
    assert!(firers.len() >= 2, "leaderless: slots fired by {firers:?}");
    drop(execs);
}

/// Three schedules every minute, `catch_up` skip, one and all; every
/// process is SIGKILLed and the schedules' clocks moved ten minutes back
/// (ten minutes of downtime, without waiting them out); started again, the
/// slot of this minute makes its task under every policy, and the ten
/// missed ones make none, one, or one each.
#[test]
#[ignore = "chaos suite: cargo test --test chaos -- --ignored --test-threads=1"]
fn catch_up_after_every_process_was_down() {
    let (fleet, mut execs, web) = fleet_of(Db::Postgres, Wire::Socket, &["exec-a"]);
    for policy in ["skip", "one", "all"] {
        let (st, s) = web.put(
            &format!("/api/v1/schedules/minutely-{policy}"),
            json!({"cron": "* * * * *", "kind": "demo.echo", "catch_up": policy}),
        );
        assert_eq!(st, 201, "{s}");
    }
    take(&mut execs, "exec-a").kill9();
    fleet.raw(
        "UPDATE schedules SET next_run_at = date_trunc('minute', now()) - interval '10 minutes'",
    );
    let _again = fleet.executor("exec-a", &FAST);
    for (policy, expected) in [("skip", 1), ("one", 2), ("all", 11)] {
        let name = format!("minutely-{policy}");
        let n = wait_for(&format!("{name} to fire"), T, || {
            let (_, s) = web.get(&format!("/api/v1/schedules/{name}"));
            let next = common::fleet::time(&s["next_run_at"])?;
            (next > chrono::Utc::now()).then(|| slots_of(&web, &name).len())
        });
        // A minute may have turned while the process started: one more
        // on-time slot then.
        assert!(
            n == expected || n == expected + 1,
            "{name}: {n} tasks, expected {expected}"
        );
    }
    drop(execs);
}
