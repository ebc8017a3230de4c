//! Hosts for real: a web node and three executors, each in a network
//! namespace of its own (`tests/hosts/net.sh`), reaching PostgreSQL and
//! RabbitMQ only over a bridge, on each multi-host transport: AMQP, the
//! PostgreSQL transport and the hybrid (a socket directory per host,
//! PostgreSQL between them). Then one host is partitioned (its link goes
//! down): its tasks are taken over, nothing is lost, and when the link comes
//! back the partitioned executor is fenced: none of its writes lands, and it
//! joins again under a new id.
//!
//! Needs root (namespaces, and `net.sh` makes PostgreSQL and RabbitMQ listen
//! on the bridge), so every case is `#[ignore]`d; `.ci/run` runs them one at
//! a time:
//!
//! ```text
//! cargo test --test hosts -- --ignored --test-threads=1
//! ```

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fleet::{
    alive_executor_of, assert_nothing_written_after_death, executors, held_by, net, node_of, ready,
    sleeps, Audit, Fleet, Wire,
};
use common::procs::{wait_for, Proc};

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
const T: Duration = Duration::from_secs(90);
const EXECUTOR_HOSTS: [&str; 3] = ["h1", "h2", "h3"];

/// A web node on host `web` and an executor on each of `h1`…`h3` (node
/// named after its host), over `wire`, answering.
fn on_hosts(wire: Wire) -> (Fleet, Vec<Proc>, Proc) {
    let fleet = Fleet::on_hosts(wire);
    let execs = EXECUTOR_HOSTS
        .iter()
        .map(|h| fleet.executor_on(h, h, &FAST))
        .collect();
    let web = fleet.web_on_host("web");
    ready(&web, T);
    (fleet, execs, web)
}

/// Which node finished each task (the `changed_by` of its final line).
fn finishers(web: &Proc, ids: &[String]) -> HashMap<String, usize> {
    let mut by = HashMap::new();
    for id in ids {
        let (_, h) = web.get(&format!("/api/v1/tasks/{id}/history"));
        let last = h["history"].as_array().unwrap().last().unwrap().clone();
        let node = node_of(last["changed_by"].as_str().unwrap_or_default()).to_string();
        *by.entry(node).or_default() += 1;
    }
    by
}

/// 120 tasks from the web host run on all three executor hosts, each
/// exactly once.
fn three_executor_hosts(wire: Wire) {
    let (_fleet, _execs, web) = on_hosts(wire);
    let ids = sleeps(&web, 120, |i| 20 + (i as u64 % 4) * 20);
    Audit::of(&web, &ids, "succeeded", T).assert_exactly_once();
    let by = finishers(&web, &ids);
    for h in EXECUTOR_HOSTS {
        assert!(
            by.get(h).copied().unwrap_or(0) > 0,
            "{h} ran nothing: {by:?}"
        );
    }
}

#[test]
#[ignore = "hosts: needs root; cargo test --test hosts -- --ignored --test-threads=1"]
fn three_executor_hosts_over_amqp() {
    three_executor_hosts(Wire::Amqp);
}

#[test]
#[ignore = "hosts: needs root; cargo test --test hosts -- --ignored --test-threads=1"]
fn three_executor_hosts_over_postgres() {
    three_executor_hosts(Wire::Postgres);
}

#[test]
#[ignore = "hosts: needs root; cargo test --test hosts -- --ignored --test-threads=1"]
fn three_executor_hosts_over_the_hybrid() {
    three_executor_hosts(Wire::SocketAndPostgres);
}

/// Heals the host's link when dropped, whatever the test did.
struct Cut(&'static str);
impl Cut {
    fn new(host: &'static str) -> Cut {
        net(&["cut", host]);
        Cut(host)
    }
}
impl Drop for Cut {
    fn drop(&mut self) {
        net(&["heal", self.0]);
    }
}

/// Host h1 loses its link while it runs tasks: the others declare its
/// executor dead and take its tasks over; when the link comes back, the
/// partitioned executor's runs end without a write landing, and it joins
/// again under a new id and runs tasks.
fn a_partitioned_host(wire: Wire) {
    let (_fleet, _execs, web) = on_hosts(wire);
    let ids = sleeps(&web, 36, |_| 2000);
    let cut_off = alive_executor_of(&web, "h1").unwrap();
    wait_for("h1 to run tasks", T, || {
        (held_by(&web, &cut_off, "running") > 0).then_some(())
    });
    let cut = Cut::new("h1");
    let dead = wait_for("the partitioned executor to be declared dead", T, || {
        let e = executors(&web).remove(&cut_off)?;
        (e["state"] == "dead").then_some(e)
    });
    let taker = dead["ended_by"].as_str().unwrap_or_default().to_string();
    assert!(
        taker.starts_with("h2-") || taker.starts_with("h3-"),
        "declared dead by {taker}"
    );
    wait_for(
        "the partitioned executor's tasks to be taken over",
        T,
        || (held_by(&web, &cut_off, "running") == 0).then_some(()),
    );
    drop(cut);
    wait_for("h1 to join again as a new executor", T, || {
        alive_executor_of(&web, "h1").filter(|id| id != &cut_off)
    });

    let audit = Audit::of(&web, &ids, "succeeded", T);
    audit.assert_exactly_once();
    audit.assert_taken_over_from(&cut_off);
    assert_nothing_written_after_death(&web, &ids, &cut_off, &dead);

    // The host works again: with the others busy, it takes its share.
    let more = sleeps(&web, 24, |_| 300);
    Audit::of(&web, &more, "succeeded", T).assert_exactly_once();
    let by = finishers(&web, &more);
    assert!(by.get("h1").copied().unwrap_or(0) > 0, "{by:?}");
}

#[test]
#[ignore = "hosts: needs root; cargo test --test hosts -- --ignored --test-threads=1"]
fn a_partitioned_host_over_amqp() {
    a_partitioned_host(Wire::Amqp);
}

#[test]
#[ignore = "hosts: needs root; cargo test --test hosts -- --ignored --test-threads=1"]
fn a_partitioned_host_over_postgres() {
    a_partitioned_host(Wire::Postgres);
}

#[test]
#[ignore = "hosts: needs root; cargo test --test hosts -- --ignored --test-threads=1"]
fn a_partitioned_host_over_the_hybrid() {
    a_partitioned_host(Wire::SocketAndPostgres);
}

/// Every line the `demo.steps` logs of each host hold, with when this
/// test first saw it (read every 20 ms): who wrote which side effect, and
/// when. Each host has a log directory of its own, so a line's file says
/// which host wrote it.
struct SideEffects {
    seen: Arc<Mutex<Vec<(String, String, Instant)>>>,
    stop: Arc<AtomicBool>,
    watcher: Option<std::thread::JoinHandle<()>>,
}

impl SideEffects {
    fn watch(logs: Vec<(String, std::path::PathBuf)>) -> SideEffects {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let watcher = std::thread::spawn(move || {
            let mut counted: HashMap<String, usize> = HashMap::new();
            while !st.load(Ordering::Relaxed) {
                for (host, path) in &logs {
                    let text = std::fs::read_to_string(path).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    let n = counted.entry(host.clone()).or_default();
                    for line in &lines[*n..] {
                        s.lock()
                            .unwrap()
                            .push((host.clone(), line.to_string(), Instant::now()));
                    }
                    *n = lines.len();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        SideEffects {
            seen,
            stop,
            watcher: Some(watcher),
        }
    }

    fn lines(&self) -> Vec<(String, String, Instant)> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for SideEffects {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
    }
}

/// The lease: a `demo.steps` task of three 6 s steps runs on h1; h1's link
/// is cut in the middle of step 1. h1 cannot reach the store, so its
/// heartbeat hangs; its lease (three quarters of `--dead-after-ms`) runs
/// out before anyone may take the task over, and it stops the run before
/// step 1's side effect. h2 takes the task over and runs steps 1 and 2.
/// Every step's side effect happens once, none on two hosts at once, and
/// the task succeeds on its first attempt; when the link comes back, the
/// old executor's writes are fenced (none after its death) and it joins
/// again under a new id.
fn a_step_cut_off_mid_way(wire: Wire) {
    let fleet = Fleet::on_hosts(wire);
    let root = tempfile::tempdir().unwrap();
    let logs: Vec<(String, std::path::PathBuf)> = ["h1", "h2"]
        .iter()
        .map(|h| {
            let dir = root.path().join(h);
            std::fs::create_dir(&dir).unwrap();
            (h.to_string(), dir)
        })
        .collect();
    let exec_on = |h: &str| {
        let dir = logs
            .iter()
            .find(|(n, _)| n == h)
            .unwrap()
            .1
            .display()
            .to_string();
        let mut args: Vec<&str> = FAST.to_vec();
        args.extend(["--demo-log-dir", dir.as_str()]);
        fleet.executor_on(h, h, &args)
    };
    // h1 alone at first, so the task starts there.
    let _h1 = exec_on("h1");
    let web = fleet.web_on_host("web");
    ready(&web, T);
    let effects = SideEffects::watch(
        logs.iter()
            .map(|(h, d)| (h.clone(), d.join("steps.log")))
            .collect(),
    );
    let (st, t) = web.post(
        "/api/v1/tasks",
        serde_json::json!({"kind": "demo.steps", "input": {"n": 3, "ms": 6000, "log": "steps.log"}}),
    );
    assert_eq!(st, 201, "{t}");
    let id = t["id"].as_str().unwrap().to_string();
    let cut_off = alive_executor_of(&web, "h1").unwrap();
    let _h2 = exec_on("h2");
    wait_for("h2 to be alive", T, || alive_executor_of(&web, "h2"));
    // Step 0 journaled on h1: step 1 has begun its 6 s there.
    wait_for("step 0 journaled", T, || {
        let (_, t) = web.get(&format!("/api/v1/tasks/{id}"));
        t["steps"]
            .as_array()
            .is_some_and(|s| {
                s.iter()
                    .any(|s| s["name"] == "step 0" && s["state"] == "succeeded")
            })
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(1000));
    let cut = Cut::new("h1");
    let cut_at = Instant::now();
    let dead = wait_for("h1's executor to be declared dead", T, || {
        let e = executors(&web).remove(&cut_off)?;
        (e["state"] == "dead").then_some(e)
    });
    let done = web.finished_once(&id, T);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["output"], serde_json::json!({"steps": 3}));
    assert_eq!(done["attempts"], 1, "the takeover used no attempt: {done}");
    // Past the moment h1 would have written step 1 without its lease.
    let past = Duration::from_millis(6500);
    std::thread::sleep(past.saturating_sub(cut_at.elapsed()));
    drop(cut);
    wait_for("h1 to join again under a new id", T, || {
        alive_executor_of(&web, "h1").filter(|e| e != &cut_off)
    });
    // A moment for anything h1 still held to land, if it could.
    std::thread::sleep(Duration::from_millis(1500));
    let lines = effects.lines();
    drop(effects);
    let mut per_step: HashMap<&str, Vec<&(String, String, Instant)>> = HashMap::new();
    for l in &lines {
        per_step.entry(l.1.as_str()).or_default().push(l);
    }
    for step in ["step 0", "step 1", "step 2"] {
        let by = per_step.get(step).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(
            by.len(),
            1,
            "{step} happened {} times (host, line, seen after the cut): {:?}",
            by.len(),
            by.iter()
                .map(|(h, l, at)| (h, l, at.checked_duration_since(cut_at)))
                .collect::<Vec<_>>()
        );
    }
    let on = |h: &str| -> Vec<&str> {
        lines
            .iter()
            .filter(|l| l.0 == h)
            .map(|l| l.1.as_str())
            .collect()
    };
    assert_eq!(on("h1"), ["step 0"], "h1 ran past its lease: {lines:?}");
    assert_eq!(on("h2"), ["step 1", "step 2"], "{lines:?}");
    let h1_last = lines
        .iter()
        .filter(|l| l.0 == "h1")
        .map(|l| l.2)
        .max()
        .unwrap();
    let h2_first = lines
        .iter()
        .filter(|l| l.0 == "h2")
        .map(|l| l.2)
        .min()
        .unwrap();
    assert!(
        h1_last < cut_at && cut_at < h2_first,
        "two hosts ran the task at once"
    );
    assert_nothing_written_after_death(&web, std::slice::from_ref(&id), &cut_off, &dead);
}

#[test]
#[ignore = "hosts: needs root; cargo test --test hosts -- --ignored --test-threads=1"]
fn a_step_cut_off_mid_way_over_amqp() {
    a_step_cut_off_mid_way(Wire::Amqp);
}

#[test]
#[ignore = "hosts: needs root; cargo test --test hosts -- --ignored --test-threads=1"]
fn a_step_cut_off_mid_way_over_postgres() {
    a_step_cut_off_mid_way(Wire::Postgres);
}

#[test]
#[ignore = "hosts: needs root; cargo test --test hosts -- --ignored --test-threads=1"]
fn a_step_cut_off_mid_way_over_the_hybrid() {
    a_step_cut_off_mid_way(Wire::SocketAndPostgres);
}
