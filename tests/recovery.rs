//! Restart recovery and lost messages: nothing committed is ever lost.
//!
//! "Killing" a runtime here stops all its actors without a single database
//! write, the state a crashed process leaves behind; the next runtime on the
//! same database must find every task and event and finish the work. The
//! tests with several runtimes give each its own bus, so no message crosses
//! between them: everything they achieve together goes through the database,
//! the path that remains when a transport loses messages.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{eventually, until_state, TestDb};
use courier::{ExecutorConfig, ExecutorState, NewTask, Registry, Runtime, TaskState};
use courier_store::TaskInsert;
use serde_json::json;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

/// Creates a `demo.await_event` task waiting for event `name`, and waits
/// until it is suspended.
async fn suspended_awaiting(c: &courier::Client, name: &str) -> courier::Task {
    let t = c
        .submit(NewTask::new("demo.await_event", json!({ "name": name })))
        .await
        .unwrap()
        .task;
    until_state(c, t.id, TaskState::Suspended).await;
    t
}

async fn all_final(c: &courier::Client, ids: &[Uuid]) -> Option<()> {
    for id in ids {
        if !c.get(*id).await.unwrap().state.is_final() {
            return None;
        }
    }
    Some(())
}

/// Stop the runtime mid-flight (running, suspended, waiting on sub-tasks,
/// with events arriving while it is down), start another on the same
/// database: every task finishes exactly once, with its events.
async fn a_restart_mid_flight_loses_nothing(db: &TestDb) {
    let rt1 = db.builder().start().await.unwrap();
    let c = rt1.client();
    let mut sleeping = Vec::new();
    for _ in 0..4 {
        sleeping.push(
            c.submit(NewTask::new("demo.sleep", json!({"ms": 800})))
                .await
                .unwrap()
                .task
                .id,
        );
    }
    let mut waiting = Vec::new();
    for i in 0..3 {
        waiting.push(
            c.submit(NewTask::new(
                "demo.await_event",
                json!({"name": format!("go-{i}")}),
            ))
            .await
            .unwrap()
            .task
            .id,
        );
    }
    let fanout = c
        .submit(NewTask::new(
            "demo.fanout",
            json!({"n": 3, "kind": "demo.sleep", "input": {"ms": 800}}),
        ))
        .await
        .unwrap()
        .task
        .id;
    eventually("every task running or suspended", WAIT, || async {
        for id in sleeping.iter().chain(&waiting) {
            if !c.get(*id).await.unwrap().state.is_owned() {
                return None;
            }
        }
        let ch = c.children(fanout).await.unwrap();
        (ch.len() == 3 && ch.iter().all(|t| t.state == TaskState::Running)).then_some(())
    })
    .await;
    let dead_executor = rt1.executor_id().unwrap().to_string();
    rt1.kill().await;

    // While no executor runs: events arrive (committed, their messages find
    // nobody) and new tasks are created.
    let outside = db.builder().without_executor().start().await.unwrap();
    let oc = outside.client();
    for (i, id) in waiting.iter().enumerate() {
        oc.send_event(*id, &format!("go-{i}"), json!({"n": i}))
            .await
            .unwrap();
    }
    let mut later = Vec::new();
    for i in 0..5 {
        later.push(
            oc.submit(NewTask::new("demo.echo", json!(i)))
                .await
                .unwrap()
                .task
                .id,
        );
    }
    // The event woke its task (in no executor's memory): it waits to be
    // claimed.
    assert_eq!(c.get(waiting[0]).await.unwrap().state, TaskState::Pending);

    let rt2 = db.builder().start().await.unwrap();
    let c2 = rt2.client();
    let mut every: Vec<Uuid> = sleeping
        .iter()
        .chain(&waiting)
        .chain(&later)
        .copied()
        .collect();
    every.push(fanout);
    eventually("every task to finish after the restart", WAIT, || {
        all_final(&c2, &every)
    })
    .await;

    for id in &sleeping {
        let t = c2.get(*id).await.unwrap();
        // Run twice (epoch 2), as one attempt: the crash used none.
        assert_eq!(
            (t.state, t.attempts, t.epoch),
            (TaskState::Succeeded, 1, 2),
            "{t:?}"
        );
        assert_eq!(t.executor_id.as_deref(), rt2.executor_id());
        let states: Vec<_> = c2
            .history(*id)
            .await
            .unwrap()
            .into_iter()
            .map(|h| h.to_state)
            .collect();
        assert_eq!(
            states,
            ["pending", "running", "pending", "running", "succeeded"]
        );
    }
    for (i, id) in waiting.iter().enumerate() {
        let t = c2.get(*id).await.unwrap();
        assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
        assert_eq!(t.output, Some(json!({"n": i})));
        assert_eq!((t.attempts, t.epoch), (1, 2));
    }
    for id in &later {
        assert_eq!(c2.get(*id).await.unwrap().attempts, 1);
    }
    let parent = c2.get(fanout).await.unwrap();
    assert_eq!(parent.state, TaskState::Succeeded, "{parent:?}");
    assert_eq!(parent.output.unwrap()["children"], 3);
    // The re-run parent found its sub-tasks again instead of spawning more.
    let children = c2.children(fanout).await.unwrap();
    assert_eq!(children.len(), 3);
    assert!(children
        .iter()
        .all(|t| t.state == TaskState::Succeeded && t.attempts == 1 && t.epoch == 2));

    let dead = rt2.store().executor(&dead_executor).await.unwrap().unwrap();
    assert_eq!(dead.state, ExecutorState::Dead);
    assert_eq!(dead.ended_by.as_deref(), rt2.executor_id());
    // The takeover counted: at least the 4 sleeping tasks and the running
    // fan-out (the counter is the process's, shared by the tests here).
    assert!(process_counter("courier_takeovers_total") >= 5.0);
    rt2.shutdown().await;
}

/// A counter of this process's metrics, as `/metrics` would encode it.
fn process_counter(name: &str) -> f64 {
    let mut registry = prometheus_client::registry::Registry::default();
    courier::actors::metrics::metrics().register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// A clean stop hands back at once what is running, and only that: the
/// next executor does not wait for any timeout. A suspended task is in no
/// executor's memory: the stop leaves it alone and the restart runs
/// nothing of it until its event comes.
async fn a_clean_stop_hands_work_back_at_once(db: &TestDb) {
    let rt1 = db.builder().start().await.unwrap();
    let c = rt1.client();
    let store = rt1.store().clone();
    let t = suspended_awaiting(&c, "go").await;
    let busy = c
        .submit(NewTask::new("demo.sleep", json!({"ms": 300})))
        .await
        .unwrap()
        .task;
    until_state(&c, busy.id, TaskState::Running).await;
    let first = rt1.executor_id().unwrap().to_string();
    rt1.shutdown().await;
    let back = c.get(busy.id).await.unwrap();
    assert_eq!((back.state, back.executor_id), (TaskState::Pending, None));
    let left = c.get(t.id).await.unwrap();
    assert_eq!((left.state, left.executor_id), (TaskState::Suspended, None));
    assert_eq!(
        store.executor(&first).await.unwrap().unwrap().state,
        ExecutorState::Stopped
    );

    // A detector this slow would take a minute to notice a dead executor.
    let slow = ExecutorConfig {
        dead_after: Duration::from_secs(60),
        ..ExecutorConfig::default()
    };
    let rt2 = db.builder().executor(slow).start().await.unwrap();
    let c2 = rt2.client();
    let (slept, _) = c2.wait(busy.id, WAIT).await.unwrap();
    assert_eq!((slept.state, slept.attempts), (TaskState::Succeeded, 1));
    // The restart ran nothing of the suspended task.
    let lines = c2.history(t.id).await.unwrap();
    assert_eq!(lines.last().unwrap().to_state, "suspended", "{lines:?}");
    c2.send_event(t.id, "go", json!("resumed")).await.unwrap();
    let (done, _) = c2.wait(t.id, WAIT).await.unwrap();
    assert_eq!(
        (done.state, done.attempts, done.epoch),
        (TaskState::Succeeded, 1, 2)
    );
    assert_eq!(done.output, Some(json!("resumed")));
    rt2.shutdown().await;
}

/// Tasks committed by a process that died before sending `start_task` are
/// claimed by the recovery pass of the next start.
async fn tasks_committed_before_start_are_recovered(db: &TestDb) {
    let store = db.store().await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let (t, created) = store
            .create_task(&TaskInsert {
                id: Uuid::now_v7(),
                kind: "demo.echo".into(),
                input: json!(i),
                idempotency_key: None,
                trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
                created_by: "a-process-that-died".into(),
                options: courier::TaskOptions::new().resolve(courier::actors::now()),
                schedule: None,
                created_at: chrono::Utc::now(),
            })
            .await
            .unwrap();
        assert!(created);
        ids.push(t.id);
    }
    let rt = db.builder().start().await.unwrap();
    let c = rt.client();
    eventually("recovered tasks to finish", WAIT, || all_final(&c, &ids)).await;
    for (i, id) in ids.iter().enumerate() {
        let t = c.get(*id).await.unwrap();
        assert_eq!(
            (t.state, t.output.clone()),
            (TaskState::Succeeded, Some(json!(i)))
        );
    }
    rt.shutdown().await;
}

fn kinds(names: &[&str]) -> Registry {
    let all = courier::demo::registry();
    let mut r = Registry::new();
    for n in names {
        // Re-register the demo implementation under the same name.
        let k = all.get(n).unwrap();
        r.register(*n, move |ctx| k.run(ctx));
    }
    r
}

/// Three runtimes with three separate buses share one database: every
/// message between them is lost. Sub-tasks, their reports, events and plain
/// tasks still all complete, through the database alone, and no task runs
/// twice though two executors compete for it.
async fn with_every_message_lost_the_database_still_completes_the_work(db: &TestDb) {
    let parents = db
        .builder()
        .registry(kinds(&["demo.fanout", "demo.await_event"]))
        .start()
        .await
        .unwrap();
    let workers_a = db
        .builder()
        .registry(kinds(&["demo.echo"]))
        .start()
        .await
        .unwrap();
    let workers_b = db
        .builder()
        .registry(kinds(&["demo.echo"]))
        .start()
        .await
        .unwrap();
    let client_rt = Runtime::builder()
        .database(db.url.clone())
        .store_options(db.options.clone())
        .without_executor()
        .start()
        .await
        .unwrap();
    let c = client_rt.client();

    let fan = c
        .submit(NewTask::new(
            "demo.fanout",
            json!({"n": 4, "kind": "demo.echo", "input": "hi"}),
        ))
        .await
        .unwrap()
        .task;
    let waiter = c
        .submit(NewTask::new("demo.await_event", json!({"name": "ping"})))
        .await
        .unwrap()
        .task;
    let mut plain = Vec::new();
    for i in 0..40 {
        plain.push(
            c.submit(NewTask::new("demo.echo", json!(i)))
                .await
                .unwrap()
                .task
                .id,
        );
    }
    until_state(&c, waiter.id, TaskState::Suspended).await;
    // Sent on the client's bus, where task/<id> is unknown: the message is
    // dropped, the committed event is re-sent by the owner's sweep.
    c.send_event(waiter.id, "ping", json!("pong"))
        .await
        .unwrap();
    // Likewise a cancel: the flag is committed, the owner's sweep tells the
    // task again.
    let doomed = suspended_awaiting(&c, "never").await;
    c.cancel(doomed.id).await.unwrap();

    // A caller waiting for a task whose finish can never be pushed to it
    // (no route from the executors to the client's bus) is answered from
    // the store, long before its deadline.
    let started = std::time::Instant::now();
    let w = c
        .submit_and_wait(
            NewTask::new("demo.echo", json!("waited")),
            Duration::from_secs(300),
        )
        .await
        .unwrap();
    assert_eq!(w.task.output, Some(json!("waited")));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "answered from the store, not at the deadline"
    );

    let mut every = plain.clone();
    every.extend([fan.id, waiter.id, doomed.id]);
    eventually("all the work to finish", WAIT, || all_final(&c, &every)).await;
    let f = c.get(fan.id).await.unwrap();
    assert_eq!(
        f.output,
        Some(json!({"children": 4, "outputs": ["hi", "hi", "hi", "hi"]}))
    );
    assert_eq!(c.get(waiter.id).await.unwrap().output, Some(json!("pong")));
    assert_eq!(c.get(doomed.id).await.unwrap().state, TaskState::Cancelled);
    let mut ran_on = HashSet::new();
    for id in &plain {
        let t = c.get(*id).await.unwrap();
        assert_eq!((t.state, t.attempts), (TaskState::Succeeded, 1), "{t:?}");
        ran_on.insert(t.executor_id.unwrap());
    }
    assert!(ran_on.len() <= 2);
    assert!(ran_on
        .iter()
        .all(|e| Some(e.as_str()) == workers_a.executor_id()
            || Some(e.as_str()) == workers_b.executor_id()));
    for rt in [parents, workers_a, workers_b] {
        rt.shutdown().await;
    }
}

/// An executor declared dead while it is in fact alive (paused, cut off)
/// drops its runs, writes nothing under its old identity, and comes back
/// as a new executor that takes the work again.
async fn an_executor_declared_dead_comes_back_as_a_new_one(db: &TestDb) {
    let rt = db.builder().start().await.unwrap();
    let c = rt.client();
    let store = rt.store().clone();
    let old = rt.executor_id().unwrap().to_string();
    let t = suspended_awaiting(&c, "go").await;
    assert!(store.declare_dead(&old, "an-operator").await.unwrap());

    let new = eventually("a new executor of the same node", WAIT, || async {
        let all = c.executors().await.unwrap();
        let node = all.iter().find(|e| e.id == old).unwrap().node.clone();
        all.into_iter()
            .find(|e| e.node == node && e.id != old && e.state == ExecutorState::Alive)
            .map(|e| e.id)
    })
    .await;
    // The suspended task was held by nobody: nothing to take over. Its
    // event wakes it onto the new identity.
    let asleep = c.get(t.id).await.unwrap();
    assert_eq!(
        (asleep.state, asleep.executor_id, asleep.epoch),
        (TaskState::Suspended, None, 1)
    );
    c.send_event(t.id, "go", json!("again")).await.unwrap();
    let (done, _) = c.wait(t.id, WAIT).await.unwrap();
    assert_eq!(done.state, TaskState::Succeeded);
    assert_eq!(done.executor_id.as_deref(), Some(new.as_str()));
    let w = c
        .submit_and_wait(NewTask::new("demo.echo", json!(1)), WAIT)
        .await
        .unwrap();
    assert_eq!(w.task.executor_id.as_deref(), Some(new.as_str()));
    rt.shutdown().await;
    // The clean stop records the identity the executor had at the end.
    assert_eq!(
        store.executor(&new).await.unwrap().unwrap().state,
        ExecutorState::Stopped
    );
    assert_eq!(
        store.executor(&old).await.unwrap().unwrap().state,
        ExecutorState::Dead
    );
}

on_both_databases!(
    an_executor_declared_dead_comes_back_as_a_new_one,
    a_restart_mid_flight_loses_nothing,
    a_clean_stop_hands_work_back_at_once,
    tasks_committed_before_start_are_recovered,
    with_every_message_lost_the_database_still_completes_the_work,
);
