//! The four event flows: the conformance suite. Every scenario runs on
//! SQLite and on PostgreSQL, and on every transport: in one runtime
//! (in-process bus) and across two runtimes joined only by the Unix-socket
//! transport, only by RabbitMQ, or by both at once (PostgreSQL), so no
//! transport can drift from the others.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, until_state, TestDb, Via};
use courier::bus::Address;
use courier::{Error, NewTask, TaskContext, TaskError, TaskFilter, TaskState};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

/// Flow 1 and 2: create → start_task → an executor runs it → task_finished
/// reaches the waiter; the history records each state with who changed it.
async fn submit_and_wait_returns_the_finished_task(db: &TestDb, via: Via) {
    let rt = db.cluster(via, |b| b).await;
    let c = rt.client();
    let input = json!({"hello": ["world", 1, null]});
    let w = c
        .submit_and_wait(NewTask::new("demo.echo", input.clone()), WAIT)
        .await
        .unwrap();
    assert!(w.created && w.finished);
    assert_eq!(w.task.state, TaskState::Succeeded);
    assert_eq!(w.task.output, Some(input));
    assert_eq!(w.task.attempts, 1);
    assert_eq!(w.task.executor_id.as_deref(), rt.executor_id());
    assert!(w.task.started_at.is_some() && w.task.finished_at.is_some());

    let h = c.history(w.task.id).await.unwrap();
    let states: Vec<_> = h.iter().map(|e| e.to_state.as_str()).collect();
    assert_eq!(states, ["pending", "running", "succeeded"]);
    assert_eq!(h[1].changed_by.as_deref(), rt.executor_id());
    // The waiter's registration was consumed.
    assert!(rt
        .store()
        .take_watchers(w.task.id)
        .await
        .unwrap()
        .is_empty());

    // Failures come back the same way.
    let w = c
        .submit_and_wait(
            NewTask::new("demo.fail", json!({"message": "disk full"})),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(w.task.state, TaskState::Failed);
    assert_eq!(w.task.error.as_deref(), Some("disk full"));
    rt.shutdown().await;
}

/// A wait that runs out returns the task as it stands; waiting again later
/// sees it finish.
async fn a_wait_that_runs_out_returns_the_task_as_it_stands(db: &TestDb, via: Via) {
    let rt = db.cluster(via, |b| b).await;
    let c = rt.client();
    let w = c
        .submit_and_wait(
            NewTask::new("demo.sleep", json!({"ms": 400})),
            Duration::from_millis(50),
        )
        .await
        .unwrap();
    assert!(!w.finished);
    // As it stands after 50 ms: running, or (on a loaded machine) not yet
    // claimed; never final.
    assert!(
        matches!(w.task.state, TaskState::Running | TaskState::Pending),
        "{:?}",
        w.task
    );
    let (t, fin) = c.wait(w.task.id, WAIT).await.unwrap();
    assert!(fin);
    assert_eq!(t.output, Some(json!({"slept_ms": 400})));
    rt.shutdown().await;
}

/// Flow 3, events: a task suspends waiting for an event and resumes with its
/// payload; an event that comes before the wait is kept; finished and
/// unknown tasks refuse events.
async fn events_reach_the_task_wherever_it_waits(db: &TestDb, via: Via) {
    let rt = db.cluster(via, |b| b).await;
    let c = rt.client();
    let t = c
        .submit(NewTask::new("demo.await_event", json!({"name": "booted"})))
        .await
        .unwrap()
        .task;
    let waiting = until_state(&c, t.id, TaskState::Suspended).await;
    // Suspended, it is in no executor's memory: held by nobody, in the
    // database with what it waits for.
    assert_eq!(waiting.executor_id, None);
    assert_eq!(waiting.waiting.as_deref(), Some("event booted"));
    // An event of another name does not wake it.
    c.send_event(t.id, "noise", json!(1)).await.unwrap();
    let ev = c
        .send_event(t.id, "booted", json!({"ip": "10.1.2.3"}))
        .await
        .unwrap();
    assert_eq!(ev.name, "booted");
    let (done, fin) = c.wait(t.id, WAIT).await.unwrap();
    assert!(fin);
    assert_eq!(done.state, TaskState::Succeeded);
    assert_eq!(done.output, Some(json!({"ip": "10.1.2.3"})));
    let states: Vec<_> = c
        .history(t.id)
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.to_state)
        .collect();
    // Woken by the event (pending), claimed and replayed (running) once:
    // the noise woke nothing.
    assert_eq!(
        states,
        [
            "pending",
            "running",
            "suspended",
            "pending",
            "running",
            "succeeded"
        ]
    );
    // Both events are in the inbox, marked delivered once the actor had them
    // (the mark is written after the hand-over, so it may trail the finish).
    eventually("both events marked delivered", WAIT, || async {
        let events = c.events(t.id).await.unwrap();
        (events.len() == 2 && events.iter().all(|e| e.delivered_at.is_some())).then_some(())
    })
    .await;

    match c.send_event(t.id, "booted", json!(2)).await {
        Err(Error::Conflict(m)) => assert!(m.contains("succeeded"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let nobody = uuid::Uuid::now_v7();
    assert!(
        matches!(c.send_event(nobody, "x", json!(1)).await, Err(Error::NotFound(id)) if id == nobody)
    );

    // An event sent before the task waits for it (even before it starts) is kept.
    let early = c
        .submit(NewTask::new("demo.await_event", json!({"name": "go"})))
        .await
        .unwrap()
        .task;
    c.send_event(early.id, "go", json!("early")).await.unwrap();
    let (done, _) = c.wait(early.id, WAIT).await.unwrap();
    assert_eq!(done.output, Some(json!("early")));
    rt.shutdown().await;
}

/// Flow 3, cancel: running, suspended and pending tasks are cancelled, and
/// cancellation cascades to sub-tasks.
async fn cancel_reaches_running_suspended_and_pending_tasks(db: &TestDb, via: Via) {
    let rt = db.cluster(via, |b| b).await;
    let c = rt.client();
    let sleeping = c
        .submit(NewTask::new("demo.sleep", json!({"ms": 60_000})))
        .await
        .unwrap()
        .task;
    let waiting = c
        .submit(NewTask::new("demo.await_event", json!({"name": "never"})))
        .await
        .unwrap()
        .task;
    for id in [sleeping.id, waiting.id] {
        eventually("the task to start", WAIT, || async {
            c.get(id).await.unwrap().state.is_owned().then_some(())
        })
        .await;
        c.cancel(id).await.unwrap();
        let (t, fin) = c.wait(id, WAIT).await.unwrap();
        assert!(fin);
        assert_eq!(t.state, TaskState::Cancelled, "{t:?}");
        assert!(t.cancel_requested);
    }

    // Cascade: a parent waiting on sleeping children.
    let parent = c
        .submit(NewTask::new(
            "demo.fanout",
            json!({"n": 3, "kind": "demo.sleep", "input": {"ms": 60_000}}),
        ))
        .await
        .unwrap()
        .task;
    eventually("three running children", WAIT, || async {
        let ch = c.children(parent.id).await.unwrap();
        (ch.len() == 3 && ch.iter().all(|t| t.state == TaskState::Running)).then_some(())
    })
    .await;
    c.cancel(parent.id).await.unwrap();
    let (p, _) = c.wait(parent.id, WAIT).await.unwrap();
    assert_eq!(p.state, TaskState::Cancelled);
    for ch in c.children(parent.id).await.unwrap() {
        let (t, _) = c.wait(ch.id, WAIT).await.unwrap();
        assert_eq!(t.state, TaskState::Cancelled);
    }
    rt.shutdown().await;

    // Pending: nobody runs it here, so it is cancelled before it starts.
    let only_client = db.builder().without_executor().start().await.unwrap();
    let c = only_client.client();
    let t = c.submit(NewTask::new("demo.echo", json!(1))).await;
    // With no executor alive, demo.echo is an unknown kind.
    assert!(matches!(t, Err(Error::UnknownKind(_))), "{t:?}");
    let holder = db.builder().start().await.unwrap();
    holder.shutdown().await; // registers the kinds, then stops: nobody runs them now
    let rt = db.builder().start().await.unwrap();
    let t = rt
        .client()
        .submit(NewTask::new("demo.sleep", json!({"ms": 1})))
        .await
        .unwrap()
        .task;
    // Race the executor deliberately: either it was still pending (cancelled
    // at once) or it already ran; both are final and consistent.
    let after = rt.client().cancel(t.id).await.unwrap();
    let (fin, _) = rt.client().wait(after.id, WAIT).await.unwrap();
    assert!(fin.state.is_final());
    rt.shutdown().await;
}

/// Flow 4: sub-tasks run on the pool and report back; outputs come in spawn
/// order; a failed child fails the parent.
async fn sub_tasks_report_back_to_their_parent(db: &TestDb, via: Via) {
    let rt = db.cluster(via, |b| b).await;
    let c = rt.client();
    let w = c
        .submit_and_wait(
            NewTask::new(
                "demo.fanout",
                json!({"n": 5, "kind": "demo.echo", "input": {"x": 1}}),
            ),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(w.task.state, TaskState::Succeeded, "{:?}", w.task);
    assert_eq!(
        w.task.output,
        Some(json!({"children": 5, "outputs": [{"x": 1}, {"x": 1}, {"x": 1}, {"x": 1}, {"x": 1}]}))
    );
    let children = c.children(w.task.id).await.unwrap();
    assert_eq!(children.len(), 5);
    assert!(children.iter().all(|ch| ch.parent_id == Some(w.task.id)
        && ch.state == TaskState::Succeeded
        && ch.trace_id == w.task.trace_id));
    let listed = c
        .list(&TaskFilter {
            parent_id: Some(w.task.id),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 5);

    let w = c
        .submit_and_wait(
            NewTask::new(
                "demo.fanout",
                json!({"n": 2, "kind": "demo.fail", "input": {"message": "no lease"}}),
            ),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(w.task.state, TaskState::Failed);
    let err = w.task.error.unwrap();
    assert!(
        err.contains("demo.fail") && err.contains("no lease"),
        "{err}"
    );

    // Spawning a kind nobody runs fails the parent with a clear message.
    let w = c
        .submit_and_wait(
            NewTask::new("demo.fanout", json!({"n": 1, "kind": "no.such.kind"})),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(w.task.state, TaskState::Failed);
    assert!(w.task.error.unwrap().contains("no executor runs kind"));

    // The provisioning orchestration: three parallel steps, then an event.
    let p = c
        .submit(NewTask::new(
            "demo.provision",
            json!({"host": "web01.example.com"}),
        ))
        .await
        .unwrap()
        .task;
    eventually("provisioning to wait for booted", WAIT, || async {
        let t = c.get(p.id).await.unwrap();
        (t.state == TaskState::Suspended
            && t.progress == Some(json!({"step": "waiting for booted"})))
        .then_some(())
    })
    .await;
    c.send_event(p.id, "booted", json!({"uptime_s": 3}))
        .await
        .unwrap();
    let (done, _) = c.wait(p.id, WAIT).await.unwrap();
    assert_eq!(done.state, TaskState::Succeeded, "{done:?}");
    let out = done.output.unwrap();
    assert_eq!(out["host"], "web01.example.com");
    assert_eq!(out["booted"], json!({"uptime_s": 3}));
    assert!(out["dns"]["record"]
        .as_str()
        .unwrap()
        .starts_with("web01.example.com. A 10."));
    assert_eq!(c.children(p.id).await.unwrap().len(), 3);
    rt.shutdown().await;
}

/// Requests are validated; an idempotency key returns the first task.
async fn idempotency_and_validation(db: &TestDb, via: Via) {
    let rt = db.cluster(via, |b| b).await;
    let c = rt.client();
    let a = c
        .submit(NewTask::new("demo.echo", json!(1)).idempotency_key("order-42"))
        .await
        .unwrap();
    let b = c
        .submit(NewTask::new("demo.echo", json!(2)).idempotency_key("order-42"))
        .await
        .unwrap();
    assert!(a.created && !b.created);
    assert_eq!(a.task.id, b.task.id);
    assert_eq!(b.task.input, json!(1));

    assert!(
        matches!(c.submit(NewTask::new("nope", json!(1))).await, Err(Error::UnknownKind(k)) if k == "nope")
    );
    assert!(matches!(
        c.submit(NewTask::new("bad kind/x", json!(1))).await,
        Err(Error::InvalidField { field, .. }) if field == "kind"
    ));
    assert!(matches!(
        c.submit(NewTask::new("demo.echo", json!(1)).idempotency_key("k".repeat(300)))
            .await,
        Err(Error::InvalidField { field, .. }) if field == "idempotency_key"
    ));
    // Bad input fails the task with a message naming the problem.
    let w = c
        .submit_and_wait(NewTask::new("demo.sleep", json!({"seconds": 1})), WAIT)
        .await
        .unwrap();
    assert_eq!(w.task.state, TaskState::Failed);
    assert!(w
        .task
        .error
        .unwrap()
        .contains("invalid input for demo.sleep"));
    assert!(matches!(
        c.get(uuid::Uuid::now_v7()).await,
        Err(Error::NotFound(_))
    ));
    rt.shutdown().await;
}

/// Duplicate start_task messages are harmless: each task runs once.
async fn duplicate_starts_run_a_task_once(db: &TestDb, via: Via) {
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let rt = db
        .cluster(via, |b| {
            b.register("count", move |ctx: TaskContext| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    ctx.pause(Duration::from_millis(20)).await?;
                    Ok::<Value, TaskError>(json!(null))
                }
            })
        })
        .await;
    let c = rt.client();
    let mut ids = Vec::new();
    for i in 0..20 {
        let t = c
            .submit(NewTask::new("count", json!(i)))
            .await
            .unwrap()
            .task;
        // Ten more copies of the start message for each task.
        for _ in 0..10 {
            rt.bus().tell(courier::bus::Envelope::new(
                Address::pool("tester").unwrap(),
                Address::pool("default").unwrap(),
                courier::Msg::StartTask {
                    task_id: t.id,
                    kind: "count".into(),
                    queue: "default".into(),
                    passed: 0,
                },
            ));
        }
        ids.push(t.id);
    }
    for id in &ids {
        let (t, fin) = c.wait(*id, WAIT).await.unwrap();
        assert!(fin);
        assert_eq!(t.attempts, 1);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 20);
    rt.shutdown().await;
}

/// A panicking task fails with the panic message and frees its slot.
async fn a_panicking_task_fails_cleanly(db: &TestDb, via: Via) {
    let rt = db
        .cluster(via, |b| {
            b.register("explode", |_ctx: TaskContext| async move {
                if true {
                    panic!("wires crossed");
                }
                Ok::<Value, TaskError>(json!(null))
            })
        })
        .await;
    let c = rt.client();
    let w = c
        .submit_and_wait(NewTask::new("explode", json!({})), WAIT)
        .await
        .unwrap();
    assert_eq!(w.task.state, TaskState::Failed);
    assert!(w.task.error.unwrap().contains("wires crossed"));
    // The executor still works.
    let w = c
        .submit_and_wait(NewTask::new("demo.echo", json!(7)), WAIT)
        .await
        .unwrap();
    assert_eq!(w.task.output, Some(json!(7)));
    rt.shutdown().await;
}

/// A kind's code runs on the runs' pool, off the actors' thread: a run
/// that keeps its thread busy (never awaiting) does not hold up the
/// executor, nor another task's start, run and end.
async fn a_busy_run_does_not_hold_up_others(db: &TestDb, via: Via) {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return;
    }
    // The pool is the process's: one spinning run at a time in this test
    // binary, so that a thread stays free for the other task.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = ONE_AT_A_TIME.lock().await;
    let rt = db
        .cluster(via, |b| {
            b.register("spin", |_ctx: TaskContext| async move {
                let until = std::time::Instant::now() + Duration::from_millis(1200);
                while std::time::Instant::now() < until {
                    std::hint::spin_loop();
                }
                Ok::<Value, TaskError>(json!("spun"))
            })
        })
        .await;
    let c = rt.client();
    let spin = c
        .submit(NewTask::new("spin", json!({})))
        .await
        .unwrap()
        .task;
    until_state(&c, spin.id, TaskState::Running).await;
    let w = c
        .submit_and_wait(NewTask::new("demo.echo", json!(1)), WAIT)
        .await
        .unwrap();
    assert_eq!(w.task.output, Some(json!(1)));
    // It started, ran and ended while the other run still spun.
    assert_eq!(c.get(spin.id).await.unwrap().state, TaskState::Running);
    let (t, finished) = c.wait(spin.id, WAIT).await.unwrap();
    assert!(finished);
    assert_eq!(t.output, Some(json!("spun")));
    rt.shutdown().await;
}

/// Listing is newest first and pages by id.
async fn listing_filters_and_pages(db: &TestDb, via: Via) {
    let rt = db.cluster(via, |b| b).await;
    let c = rt.client();
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            c.submit_and_wait(NewTask::new("demo.echo", json!(i)), WAIT)
                .await
                .unwrap()
                .task
                .id,
        );
    }
    c.submit_and_wait(NewTask::new("demo.fail", json!({"message": "x"})), WAIT)
        .await
        .unwrap();
    let page1 = c
        .list(&TaskFilter {
            kind: Some("demo.echo".into()),
            limit: 4,
            ..Default::default()
        })
        .await
        .unwrap();
    let page2 = c
        .list(&TaskFilter {
            kind: Some("demo.echo".into()),
            limit: 4,
            after: Some(page1.last().unwrap().id),
            ..Default::default()
        })
        .await
        .unwrap();
    let got: Vec<_> = page1.iter().chain(&page2).map(|t| t.id).collect();
    ids.reverse();
    assert_eq!(got, ids);
    let failed = c
        .list(&TaskFilter {
            state: Some(TaskState::Failed),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    rt.shutdown().await;
}

/// Suspended tasks hold no slot: parents waiting for their sub-tasks can
/// fill the executor's capacity without starving those sub-tasks.
async fn parents_waiting_on_children_do_not_starve_them(db: &TestDb, via: Via) {
    let rt = db
        .cluster(via, |b| {
            b.executor(courier::ExecutorConfig {
                capacity: 2,
                ..common::fast_executor()
            })
        })
        .await;
    let c = rt.client();
    let mut parents = Vec::new();
    for _ in 0..4 {
        parents.push(
            c.submit(NewTask::new(
                "demo.fanout",
                json!({"n": 3, "kind": "demo.echo", "input": 1}),
            ))
            .await
            .unwrap()
            .task
            .id,
        );
    }
    for p in parents {
        let (t, fin) = c.wait(p, WAIT).await.unwrap();
        assert!(fin, "a parent starved its children: {t:?}");
        assert_eq!(t.output.unwrap()["children"], 3);
    }
    rt.shutdown().await;
}

/// Sync waits made where an executor runs their kind are created already
/// started there while it has a free slot (issue 24, point 6), and wait
/// for the usual claim while it has none: the executor's capacity holds
/// either way (counted in the runs themselves), every wait is answered,
/// and no slot is lost (the executor runs a batch two at a time after).
async fn sync_waits_start_at_once_within_capacity(db: &TestDb, via: Via) {
    #[derive(Default)]
    struct Runs {
        now: AtomicUsize,
        most: AtomicUsize,
    }
    let runs = Arc::new(Runs::default());
    let probe = runs.clone();
    let rt = db
        .cluster(via, move |b| {
            b.executor(courier::ExecutorConfig {
                capacity: 2,
                ..common::fast_executor()
            })
            .register("probe", move |ctx: TaskContext| {
                let runs = probe.clone();
                async move {
                    let n = runs.now.fetch_add(1, Ordering::SeqCst) + 1;
                    runs.most.fetch_max(n, Ordering::SeqCst);
                    let ms = ctx.input()["ms"].as_u64().unwrap_or(0);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    runs.now.fetch_sub(1, Ordering::SeqCst);
                    Ok::<Value, TaskError>(json!(n))
                }
            })
        })
        .await;
    let c = rt.client();
    let wait = |ms: u64| {
        let c = c.clone();
        async move {
            c.submit_and_wait(NewTask::new("probe", json!({ "ms": ms })), WAIT)
                .await
                .unwrap()
        }
    };
    // One at a time: each finds a free slot.
    let mut at_once = 0;
    for _ in 0..6 {
        let w = wait(0).await;
        assert_eq!(w.task.state, TaskState::Succeeded, "{:?}", w.task);
        let h = c.history(w.task.id).await.unwrap();
        let states: Vec<_> = h.iter().map(|e| e.to_state.as_str()).collect();
        assert_eq!(states, ["pending", "running", "succeeded"]);
        assert_eq!(h[1].changed_by.as_deref(), rt.executor_id());
        // Started in the create's own statement: one time for both lines.
        if h[0].at == h[1].at {
            at_once += 1;
        }
    }
    if via == Via::Local {
        assert!(at_once > 0, "no sync wait started at once");
    } else {
        assert_eq!(at_once, 0, "the client has no executor of its own");
    }
    // Both slots taken: sync waits wait for a slot, as claims do.
    let long: Vec<_> = futures_util::future::join_all(
        (0..2).map(|_| c.submit(NewTask::new("probe", json!({"ms": 400})))),
    )
    .await
    .into_iter()
    .map(|s| s.unwrap().task.id)
    .collect();
    for id in &long {
        until_state(&c, *id, TaskState::Running).await;
    }
    let done = futures_util::future::join_all((0..4).map(|_| wait(0))).await;
    for w in &done {
        assert_eq!(w.task.state, TaskState::Succeeded, "{:?}", w.task);
    }
    assert!(
        runs.most.load(Ordering::SeqCst) <= 2,
        "the capacity of 2 was exceeded"
    );
    // Every slot came back: a batch runs two at a time again.
    runs.most.store(0, Ordering::SeqCst);
    let batch = c
        .submit_batch(
            (0..4)
                .map(|_| NewTask::new("probe", json!({"ms": 100})))
                .collect(),
        )
        .await
        .unwrap();
    for s in &batch {
        let (t, fin) = c.wait(s.task.id, WAIT).await.unwrap();
        assert!(fin, "{t:?}");
    }
    assert_eq!(runs.most.load(Ordering::SeqCst), 2);
    rt.shutdown().await;
}

on_every_transport!(
    sync_waits_start_at_once_within_capacity,
    parents_waiting_on_children_do_not_starve_them,
    submit_and_wait_returns_the_finished_task,
    a_wait_that_runs_out_returns_the_task_as_it_stands,
    events_reach_the_task_wherever_it_waits,
    cancel_reaches_running_suspended_and_pending_tasks,
    sub_tasks_report_back_to_their_parent,
    idempotency_and_validation,
    duplicate_starts_run_a_task_once,
    a_panicking_task_fails_cleanly,
    a_busy_run_does_not_hold_up_others,
    listing_filters_and_pages,
);
