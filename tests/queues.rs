//! Queue semantics as a conformance suite: every scenario on SQLite and on
//! PostgreSQL, in one runtime and across runtimes joined by each transport.
//! Retries counted exactly, backoff within its bounds, delayed tasks that
//! do not start early, priority order, timeouts, cancelling what waits,
//! options for sub-tasks and per-kind defaults. Times are read from the
//! tasks' own records, never measured by sleeping.

mod common;

use std::time::Duration;

use common::{eventually, until_state, TestDb, Via};
use courier::{NewTask, QueueUpdate, TaskContext, TaskError, TaskOptions, TaskState};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

fn ms(d: chrono::TimeDelta) -> i64 {
    d.num_milliseconds()
}

/// A failed attempt with attempts left is retried; `errors` keeps one entry
/// per failed attempt; the last failure fails the task for good.
async fn retries_are_counted_exactly(db: &TestDb, via: Via) {
    let rt = db.cluster(via, |b| b).await;
    let c = rt.client();
    let w = c
        .submit_and_wait(
            NewTask::new("demo.flaky", json!({"fail_times": 2}))
                .max_attempts(3)
                .backoff(Duration::from_millis(20)),
            WAIT,
        )
        .await
        .unwrap();
    assert!(w.finished, "{:?}", w.task);
    let t = w.task;
    assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
    assert_eq!(t.output, Some(json!({"attempt": 3})));
    assert_eq!((t.attempts, t.max_attempts), (3, 3));
    let errs: Vec<_> = t
        .errors
        .iter()
        .map(|e| (e.attempt, e.error.as_str(), e.code.as_str()))
        .collect();
    assert_eq!(
        errs,
        [
            (1, "flaky attempt 1", "error"),
            (2, "flaky attempt 2", "error")
        ]
    );
    let states: Vec<_> = c
        .history(t.id)
        .await
        .unwrap()
        .into_iter()
        .map(|h| (h.to_state, h.attempt))
        .collect();
    let s = |st: &str, a: i32| (st.to_string(), a);
    assert_eq!(
        states,
        [
            s("pending", 0),
            s("running", 1),
            s("scheduled", 1),
            s("pending", 1),
            s("running", 2),
            s("scheduled", 2),
            s("pending", 2),
            s("running", 3),
            s("succeeded", 3),
        ]
    );

    // Out of attempts: failed, with every attempt's error.
    let w = c
        .submit_and_wait(
            NewTask::new("demo.flaky", json!({"fail_times": 5}))
                .max_attempts(2)
                .backoff(Duration::from_millis(10)),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(w.task.state, TaskState::Failed, "{:?}", w.task);
    assert_eq!(w.task.error.as_deref(), Some("flaky attempt 2"));
    assert_eq!(w.task.errors.len(), 2);
    // No max_attempts: one attempt, as before.
    let w = c
        .submit_and_wait(NewTask::new("demo.flaky", json!({"fail_times": 1})), WAIT)
        .await
        .unwrap();
    assert_eq!((w.task.state, w.task.errors.len()), (TaskState::Failed, 1));
    rt.shutdown().await;
}

/// Retry n waits between 50 % and 100 % of backoff × 2^(n−1): read from the
/// `run_at` each retry was given and the time its attempt failed.
async fn backoff_stays_within_its_bounds(db: &TestDb, via: Via) {
    let rt = db.cluster(via, |b| b).await;
    let c = rt.client();
    let t = c
        .submit(
            NewTask::new("demo.flaky", json!({"fail_times": 2}))
                .max_attempts(3)
                .backoff(Duration::from_millis(1000)),
        )
        .await
        .unwrap()
        .task;
    // Each wait lasts at least half its backoff (500 ms, then 1 s): long
    // enough to read the run_at it was given.
    let mut waits = Vec::new();
    for n in 1..=2usize {
        let s = eventually(&format!("retry {n} to be scheduled"), WAIT, || async {
            let s = c.get(t.id).await.unwrap();
            (s.state == TaskState::Scheduled && s.errors.len() == n).then_some(s)
        })
        .await;
        let failed = s.errors.last().unwrap();
        waits.push((failed.attempt, ms(s.run_at.unwrap() - failed.at)));
    }
    let (done, _) = c.wait(t.id, WAIT).await.unwrap();
    assert_eq!(done.state, TaskState::Succeeded, "{done:?}");
    assert_eq!(waits.len(), 2, "{waits:?}");
    for (n, waited) in waits {
        let full = 1000 << (n - 1);
        assert!(
            (full / 2..=full + 5).contains(&waited),
            "retry {n} waited {waited} ms; the bounds are {} to {full}",
            full / 2
        );
    }
    // And the next attempt did not start before its run_at.
    let h = c.history(t.id).await.unwrap();
    let runs: Vec<_> = h.iter().filter(|l| l.to_state == "running").collect();
    assert_eq!(runs.len(), 3);
    rt.shutdown().await;
}

/// A delayed task is `scheduled` until its time and starts at it, not
/// before; `run_at` works as well as `delay_ms`.
async fn a_delayed_task_does_not_start_early(db: &TestDb, via: Via) {
    let rt = db.cluster(via, |b| b).await;
    let c = rt.client();
    let t = c
        .submit(NewTask::new("demo.echo", json!("later")).delay(Duration::from_millis(400)))
        .await
        .unwrap()
        .task;
    assert_eq!(t.state, TaskState::Scheduled);
    let due = t.run_at.unwrap();
    assert!(ms(due - t.created_at) >= 399, "{t:?}");
    let at = courier::actors::now() + chrono::Duration::milliseconds(300);
    let u = c
        .submit(NewTask::new("demo.echo", json!("at")).run_at(at))
        .await
        .unwrap()
        .task;
    assert_eq!(u.run_at, Some(at));
    for (task, due) in [(t, due), (u, at)] {
        let (done, fin) = c.wait(task.id, WAIT).await.unwrap();
        assert!(fin && done.state == TaskState::Succeeded, "{done:?}");
        let started = done.started_at.unwrap();
        assert!(started >= due, "started {started}, due {due}");
        assert_eq!(done.run_at, None);
        let states: Vec<_> = c
            .history(task.id)
            .await
            .unwrap()
            .into_iter()
            .map(|h| h.to_state)
            .collect();
        assert_eq!(states, ["scheduled", "pending", "running", "succeeded"]);
    }
    rt.shutdown().await;
}

/// Within a queue the higher priority starts first, FIFO among equals.
async fn higher_priority_starts_first(db: &TestDb, via: Via) {
    let rt = db.cluster(via, |b| b).await;
    let c = rt.client();
    // Hold the queue while the tasks arrive, then let one run at a time.
    c.update_queue(
        "default",
        &QueueUpdate::default().paused(true).concurrency(1),
    )
    .await
    .unwrap();
    let mut ids = Vec::new();
    for p in [0, 3, -1, 3, 7] {
        ids.push(
            c.submit(NewTask::new("demo.echo", json!(p)).priority(p))
                .await
                .unwrap()
                .task
                .id,
        );
    }
    assert_eq!(c.queue("default").await.unwrap().pending, 5);
    c.update_queue("default", &QueueUpdate::default().paused(false))
        .await
        .unwrap();
    let mut started = Vec::new();
    for id in &ids {
        let (t, fin) = c.wait(*id, WAIT).await.unwrap();
        assert!(fin, "{t:?}");
        started.push((t.started_at.unwrap(), t.input));
    }
    started.sort_by_key(|s| s.0);
    let order: Vec<Value> = started.into_iter().map(|s| s.1).collect();
    assert_eq!(order, [json!(7), json!(3), json!(3), json!(0), json!(-1)]);
    // FIFO among the two 3s: the first created started first.
    let (a, b) = (c.get(ids[1]).await.unwrap(), c.get(ids[3]).await.unwrap());
    assert!(a.started_at < b.started_at);
    rt.shutdown().await;
}

/// A timeout aborts the attempt, cancels what it spawned, and counts as a
/// failed attempt with code `timeout`.
async fn a_timeout_fails_the_attempt_and_cancels_its_sub_tasks(db: &TestDb, via: Via) {
    let rt = db.cluster(via, |b| b).await;
    let c = rt.client();
    let w = c
        .submit_and_wait(
            NewTask::new("demo.sleep", json!({"ms": 60_000}))
                .timeout(Duration::from_millis(200))
                .max_attempts(2)
                .backoff(Duration::from_millis(10)),
            WAIT,
        )
        .await
        .unwrap();
    let t = w.task;
    assert_eq!(t.state, TaskState::Failed, "{t:?}");
    assert_eq!(t.errors.len(), 2);
    assert!(t.errors.iter().all(|e| e.code == "timeout"), "{t:?}");
    assert!(t.error.unwrap().starts_with("timeout"));

    // A parent that times out while it waits for its children.
    let p = c
        .submit(
            NewTask::new(
                "demo.fanout",
                json!({"n": 2, "kind": "demo.sleep", "input": {"ms": 60_000}}),
            )
            .timeout(Duration::from_millis(500)),
        )
        .await
        .unwrap()
        .task;
    let (p, _) = c.wait(p.id, WAIT).await.unwrap();
    assert_eq!(p.state, TaskState::Failed, "{p:?}");
    assert_eq!(p.errors[0].code, "timeout");
    eventually("the children to be cancelled", WAIT, || async {
        let kids = c.children(p.id).await.unwrap();
        (kids.len() == 2 && kids.iter().all(|k| k.state == TaskState::Cancelled)).then_some(())
    })
    .await;
    rt.shutdown().await;
}

/// Cancelling a task that waits (delayed, or between retries) cancels it at
/// once; events sent to a waiting task are kept for when it runs.
async fn cancelling_a_waiting_task_is_immediate(db: &TestDb, via: Via) {
    let rt = db.cluster(via, |b| b).await;
    let c = rt.client();
    let t = c
        .submit(NewTask::new("demo.echo", json!(1)).delay(Duration::from_secs(3600)))
        .await
        .unwrap()
        .task;
    let done = c.cancel(t.id).await.unwrap();
    assert_eq!((done.state, done.run_at), (TaskState::Cancelled, None));

    let r = c
        .submit(
            NewTask::new("demo.flaky", json!({"fail_times": 3}))
                .max_attempts(5)
                .backoff(Duration::from_secs(3600)),
        )
        .await
        .unwrap()
        .task;
    until_state(&c, r.id, TaskState::Scheduled).await;
    let done = c.cancel(r.id).await.unwrap();
    assert_eq!(done.state, TaskState::Cancelled);
    assert_eq!(done.errors.len(), 1);

    // An event for a delayed task waits in its inbox.
    let e = c
        .submit(
            NewTask::new("demo.await_event", json!({"name": "go"}))
                .delay(Duration::from_millis(300)),
        )
        .await
        .unwrap()
        .task;
    c.send_event(e.id, "go", json!("kept")).await.unwrap();
    let (e, _) = c.wait(e.id, WAIT).await.unwrap();
    assert_eq!(e.output, Some(json!("kept")));
    rt.shutdown().await;
}

/// Sub-tasks take options (`spawn_with`); kinds registered with defaults
/// give them to every task of the kind, created here or on another node.
async fn sub_task_options_and_kind_defaults(db: &TestDb, via: Via) {
    let rt = db
        .cluster(via, |b| {
            b.register_with(
                "retried",
                |ctx: TaskContext| async move {
                    if ctx.attempt() < 2 {
                        return Err(TaskError::failed("first try"));
                    }
                    Ok::<Value, TaskError>(json!({"attempt": ctx.attempt()}))
                },
                TaskOptions::new()
                    .max_attempts(4)
                    .backoff(Duration::from_millis(10))
                    .priority(9),
            )
            .register("parent", |ctx: TaskContext| async move {
                let child = ctx
                    .spawn_with(
                        "demo.echo",
                        json!("child"),
                        TaskOptions::new()
                            .priority(-7)
                            .delay(Duration::from_millis(200)),
                    )
                    .await?;
                let out = child.join().await?;
                Ok::<Value, TaskError>(json!({"child": out}))
            })
        })
        .await;
    let c = rt.client();
    let w = c
        .submit_and_wait(NewTask::new("retried", json!(null)), WAIT)
        .await
        .unwrap();
    assert_eq!(w.task.state, TaskState::Succeeded, "{:?}", w.task);
    assert_eq!((w.task.max_attempts, w.task.priority), (4, 9));
    assert_eq!(w.task.output, Some(json!({"attempt": 2})));
    // What the task says wins over the kind's default.
    let t = c
        .submit(
            NewTask::new("retried", json!(null))
                .max_attempts(1)
                .priority(0),
        )
        .await
        .unwrap()
        .task;
    assert_eq!((t.max_attempts, t.priority), (1, 0));
    let (t, _) = c.wait(t.id, WAIT).await.unwrap();
    assert_eq!(t.state, TaskState::Failed);

    let w = c
        .submit_and_wait(NewTask::new("parent", json!(null)), WAIT)
        .await
        .unwrap();
    assert_eq!(w.task.state, TaskState::Succeeded, "{:?}", w.task);
    let kids = c.children(w.task.id).await.unwrap();
    assert_eq!(kids.len(), 1);
    let k = &kids[0];
    assert_eq!(k.priority, -7);
    assert!(k.started_at.unwrap() - k.created_at >= chrono::Duration::milliseconds(199));
    rt.shutdown().await;
}

/// A task for a queue no executor serves is accepted and waits there.
async fn an_unknown_queue_waits_for_an_executor(db: &TestDb, via: Via) {
    let rt = db.cluster(via, |b| b).await;
    let c = rt.client();
    let t = c
        .submit(NewTask::new("demo.echo", json!(1)).queue("nobody-serves-this"))
        .await
        .unwrap()
        .task;
    assert_eq!(
        (t.state, t.queue.as_str()),
        (TaskState::Pending, "nobody-serves-this")
    );
    let q = c.queue("nobody-serves-this").await.unwrap();
    assert_eq!(q.pending, 1);
    // The executor here serves `default`: the task is never claimed.
    let w = c
        .submit_and_wait(NewTask::new("demo.echo", json!(2)), WAIT)
        .await
        .unwrap();
    assert!(w.finished);
    assert_eq!(c.get(t.id).await.unwrap().state, TaskState::Pending);
    rt.shutdown().await;
}

on_every_transport!(
    retries_are_counted_exactly,
    backoff_stays_within_its_bounds,
    a_delayed_task_does_not_start_early,
    higher_priority_starts_first,
    a_timeout_fails_the_attempt_and_cancels_its_sub_tasks,
    cancelling_a_waiting_task_is_immediate,
    sub_task_options_and_kind_defaults,
    an_unknown_queue_waits_for_an_executor,
);
