//! Durable execution as a conformance suite, on SQLite and PostgreSQL, in
//! one runtime and across runtimes joined by each transport: journaled
//! steps replayed (not re-run) after a suspension and a retry, a failed step
//! run again by the next attempt, duplicate step names refused, durable
//! timers that hold no executor and fire on time, event waits with a
//! deadline, and schedules that fire once per slot. Side effects are
//! counted, never guessed from timing.

mod common;

use std::time::Duration;

use common::{eventually, until_state, TestDb, Via};
use courier::{NewTask, ScheduleSpec, TaskContext, TaskError, TaskFilter, TaskOptions, TaskState};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

/// Side effects by test key: what the steps' bodies did, in order.
static EFFECTS: common::Effects<String> = common::Effects::new();

fn effect(key: &str, what: String) {
    EFFECTS.push(key, what);
}

fn effects(key: &str) -> Vec<String> {
    EFFECTS.of(key)
}

fn key() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Step `a`, a wait for event `go` (the task suspends and leaves memory),
/// step `b` that fails in attempt 1, step `c`.
async fn journaled(ctx: TaskContext) -> Result<Value, TaskError> {
    let key = ctx.input()["key"].as_str().unwrap_or_default().to_string();
    let attempt = ctx.attempt();
    let a: String = ctx
        .step("a", async {
            effect(&key, format!("a@{attempt}"));
            Ok(format!("a ran in attempt {attempt}"))
        })
        .await?;
    let go = ctx.wait_event("go").await?;
    ctx.step("b", async {
        effect(&key, format!("b@{attempt}"));
        if attempt == 1 {
            return Err(TaskError::failed("b fails in attempt 1"));
        }
        Ok(())
    })
    .await?;
    let c: i32 = ctx
        .step("c", async {
            effect(&key, format!("c@{attempt}"));
            Ok(attempt)
        })
        .await?;
    Ok(json!({"a": a, "go": go, "c": c}))
}

/// A completed step runs once: replayed from the journal after the task
/// suspended, and after a failed attempt. A failed step fails its attempt
/// and runs again in the next one.
async fn steps_are_replayed_not_run_again(db: &TestDb, via: Via) {
    let rt = db
        .cluster(via, |b| b.register("t.journaled", journaled))
        .await;
    let c = rt.client();
    let k = key();
    let t = c
        .submit(
            NewTask::new("t.journaled", json!({"key": k}))
                .max_attempts(2)
                .backoff(Duration::from_millis(10)),
        )
        .await
        .unwrap()
        .task;
    let waiting = until_state(&c, t.id, TaskState::Suspended).await;
    assert_eq!(waiting.executor_id, None, "suspended out of memory");
    assert_eq!(effects(&k), ["a@1"]);
    c.send_event(t.id, "go", json!("now")).await.unwrap();
    let (done, fin) = c.wait(t.id, WAIT).await.unwrap();
    assert!(fin);
    assert_eq!(done.state, TaskState::Succeeded, "{done:?}");
    // `a` ran once (in attempt 1), though the run was replayed after the
    // suspension and again in attempt 2; `b` failed attempt 1 and ran again.
    assert_eq!(effects(&k), ["a@1", "b@1", "b@2", "c@2"]);
    assert_eq!(
        done.output,
        Some(json!({"a": "a ran in attempt 1", "go": "now", "c": 2}))
    );
    assert_eq!(done.errors.len(), 1);
    assert!(done.errors[0].error.contains("b fails in attempt 1"));
    let steps: Vec<_> = c
        .steps(t.id)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.name, s.state, s.attempt))
        .collect();
    let s = |n: &str, st: &str, a: i32| (n.to_string(), st.to_string(), a);
    assert_eq!(
        steps,
        [
            s("a", "succeeded", 1),
            s("b", "succeeded", 2),
            s("c", "succeeded", 2)
        ]
    );
    rt.shutdown().await;
}

/// Two steps of one name in a run: the task fails, saying why.
async fn duplicate_step_names_are_refused(db: &TestDb, via: Via) {
    let rt = db
        .cluster(via, |b| {
            b.register("t.twice", |ctx: TaskContext| async move {
                for _ in 0..2 {
                    ctx.step("same", async { Ok(1) }).await?;
                }
                Ok::<Value, TaskError>(Value::Null)
            })
        })
        .await;
    let c = rt.client();
    let w = c
        .submit_and_wait(NewTask::new("t.twice", Value::Null), WAIT)
        .await
        .unwrap();
    assert_eq!(w.task.state, TaskState::Failed, "{:?}", w.task);
    let error = w.task.error.unwrap();
    assert!(
        error.contains("\"same\" is used twice") && error.contains("index"),
        "{error}"
    );
    rt.shutdown().await;
}

/// A durable sleep: the task is `suspended`, held by no executor, with its
/// due time in `run_at`; it wakes no earlier, and finishes. A cancel ends a
/// sleeping task at once.
async fn durable_timers_fire_on_time_and_cancel(db: &TestDb, via: Via) {
    let rt = db.cluster(via, |b| b).await;
    let c = rt.client();
    let t = c
        .submit(NewTask::new("demo.timer", json!({"ms": 400})))
        .await
        .unwrap()
        .task;
    let asleep = until_state(&c, t.id, TaskState::Suspended).await;
    assert_eq!(asleep.executor_id, None);
    assert_eq!(asleep.waiting.as_deref(), Some("timer"));
    let due = asleep.run_at.expect("a suspended timer has its due time");
    let (done, fin) = c.wait(t.id, WAIT).await.unwrap();
    assert!(fin);
    assert_eq!(done.output, Some(json!({"slept_ms": 400})));
    let history = c.history(t.id).await.unwrap();
    let woke = history
        .iter()
        .find(|h| h.from_state.as_deref() == Some("suspended"))
        .expect("woken");
    assert!(woke.at >= due, "woke at {} before its time {due}", woke.at);
    // The journal holds the due time, so a replay sleeps until the same time.
    let steps = c.steps(t.id).await.unwrap();
    assert_eq!(steps[0].name, "courier.sleep.0");

    let long = c
        .submit(NewTask::new("demo.timer", json!({"ms": 3_600_000})))
        .await
        .unwrap()
        .task;
    until_state(&c, long.id, TaskState::Suspended).await;
    c.cancel(long.id).await.unwrap();
    let (gone, fin) = c.wait(long.id, WAIT).await.unwrap();
    assert!(fin);
    assert_eq!(gone.state, TaskState::Cancelled, "{gone:?}");
    rt.shutdown().await;
}

/// `wait_event_for`: the payload when the event comes first, `None` when the
/// deadline does (the task sleeps on a durable timer meanwhile).
async fn event_waits_take_a_deadline(db: &TestDb, via: Via) {
    let rt = db
        .cluster(via, |b| {
            b.register("t.deadline", |ctx: TaskContext| async move {
                let got = ctx.wait_event_for("go", Duration::from_millis(300)).await?;
                Ok::<Value, TaskError>(json!({ "got": got }))
            })
        })
        .await;
    let c = rt.client();
    let early = c
        .submit(NewTask::new("t.deadline", Value::Null))
        .await
        .unwrap()
        .task;
    let late = c
        .submit(NewTask::new("t.deadline", Value::Null))
        .await
        .unwrap()
        .task;
    until_state(&c, early.id, TaskState::Suspended).await;
    c.send_event(early.id, "go", json!(7)).await.unwrap();
    let (e, _) = c.wait(early.id, WAIT).await.unwrap();
    assert_eq!(e.output, Some(json!({"got": 7})), "{e:?}");
    let (l, _) = c.wait(late.id, WAIT).await.unwrap();
    assert_eq!(l.output, Some(json!({"got": null})), "{l:?}");
    let ran = l.finished_at.unwrap() - l.created_at;
    assert!(ran.num_milliseconds() >= 300, "{ran}");
    rt.shutdown().await;
}

/// A schedule every second makes one task per slot, each carrying the
/// schedule's name, on whichever node fires it; disabled, it has no next
/// slot; deleted, it is gone and its tasks stay.
async fn schedules_make_one_task_per_slot(db: &TestDb, via: Via) {
    let rt = db.cluster(via, |b| b).await;
    let c = rt.client();
    let name = format!("every-second-{}", &key()[..8]);
    let (s, created) = c
        .put_schedule(
            &name,
            &ScheduleSpec::new("* * * * * *", "demo.echo", json!({"tick": true}))
                .options(TaskOptions::new().priority(3)),
        )
        .await
        .unwrap();
    assert!(created);
    assert_eq!(s.next_runs.len(), 5);
    let filter = TaskFilter {
        schedule: Some(name.clone()),
        limit: 100,
        ..TaskFilter::default()
    };
    let tasks = eventually("three slots to fire", WAIT, || async {
        let ts = c.list(&filter).await.unwrap();
        (ts.len() >= 3).then_some(ts)
    })
    .await;
    for t in &tasks {
        assert_eq!(t.schedule.as_deref(), Some(name.as_str()));
        assert_eq!((t.priority, &t.input), (3, &json!({"tick": true})));
    }
    let mut keys: Vec<_> = tasks.iter().map(|t| t.idempotency_key.clone()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), tasks.len(), "one task per slot");
    let (off, created) = c
        .put_schedule(
            &name,
            &ScheduleSpec::new("* * * * * *", "demo.echo", json!({"tick": true})).enabled(false),
        )
        .await
        .unwrap();
    assert!(!created);
    assert_eq!((off.next_run_at, off.next_runs.len()), (None, 0));
    assert!(off.last_task_id.is_some() && off.last_run_at.is_some());
    c.delete_schedule(&name).await.unwrap();
    assert!(matches!(
        c.schedule(&name).await,
        Err(courier::Error::NoSchedule(_))
    ));
    assert!(c.list(&filter).await.unwrap().len() >= 3, "its tasks stay");
    rt.shutdown().await;
}

on_every_transport!(
    steps_are_replayed_not_run_again,
    duplicate_step_names_are_refused,
    durable_timers_fire_on_time_and_cancel,
    event_waits_take_a_deadline,
    schedules_make_one_task_per_slot,
);
