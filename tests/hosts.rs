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
use std::time::Duration;

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
