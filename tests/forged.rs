//! Facts come from the store (issue 23 point 5): an envelope on the bus is
//! a hint that makes a task's actor read what was committed, never a fact a
//! run believes. Any participant of the bus can post an envelope; these
//! tests post forged ones to a run alive in memory (an event that was never
//! committed, the end of a sub-task that has not ended, a cancel nobody
//! requested) and show that none reaches the run, while the real event,
//! sub-task end and cancel, sent the ordinary way, still do. On SQLite and
//! PostgreSQL.

mod common;

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use common::{eventually, TestDb};
use courier::actors::protocol::{envelope, Msg};
use courier::{Address, Client, NewTask, Runtime, Task, TaskContext, TaskError, TaskState};
use serde_json::{json, Value};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

/// How long a run stays in its first step: long enough to post forged
/// envelopes (and send a real event or cancel) while it is in memory.
const NAP: Duration = Duration::from_millis(1000);

/// Tasks whose run is in its nap (entered once: the step is journaled, so
/// a replay does not run it again).
static NAPPING: Mutex<Option<HashSet<Uuid>>> = Mutex::new(None);

fn napping(id: Uuid) {
    NAPPING
        .lock()
        .unwrap()
        .get_or_insert_with(HashSet::new)
        .insert(id);
}

async fn until_napping(id: Uuid) {
    eventually(&format!("task {id} to nap"), WAIT, || async {
        let n = NAPPING.lock().unwrap();
        n.as_ref().is_some_and(|s| s.contains(&id)).then_some(())
    })
    .await
}

/// A journaled nap: the run is alive in memory for `d`.
async fn nap(ctx: &TaskContext, d: Duration) -> Result<(), TaskError> {
    let id = ctx.id();
    ctx.step("nap", async move {
        napping(id);
        tokio::time::sleep(d).await;
        Ok(())
    })
    .await
}

/// Naps, then waits for event `go` and returns its payload.
async fn nap_then_go(ctx: TaskContext) -> Result<Value, TaskError> {
    nap(&ctx, NAP).await?;
    ctx.wait_event("go").await
}

/// Spawns a sub-task that works longer than this run naps, naps, then
/// joins the sub-task: its output is this task's.
async fn parent(ctx: TaskContext) -> Result<Value, TaskError> {
    let child = ctx.spawn("t.slow_child", json!({})).await?;
    nap(&ctx, NAP).await?;
    child.join().await
}

async fn slow_child(ctx: TaskContext) -> Result<Value, TaskError> {
    ctx.step("work", async {
        tokio::time::sleep(NAP * 2).await;
        Ok(())
    })
    .await?;
    Ok(json!("the real child's output"))
}

async fn start(db: &TestDb) -> Runtime {
    db.builder()
        .register("t.nap_then_go", nap_then_go)
        .register("t.parent", parent)
        .register("t.slow_child", slow_child)
        .start()
        .await
        .unwrap()
}

/// Posts `msg` to `task/<id>` on the runtime's bus, as any participant of
/// the bus could.
async fn forge(rt: &Runtime, task: &Task, msg: Msg) {
    let from = Address::Executor("forger".into());
    rt.bus()
        .post(envelope(from, Address::task(task.id), &task.trace_id, msg))
        .await;
}

/// Waits until task `id` is suspended or final, and says which.
async fn until_suspended(c: &Client, id: Uuid) -> Task {
    let t = eventually(&format!("task {id} to suspend or end"), WAIT, || async {
        let t = c.get(id).await.unwrap();
        (t.state == TaskState::Suspended || t.state.is_final()).then_some(t)
    })
    .await;
    assert_eq!(t.state, TaskState::Suspended, "{t:?}");
    t
}

async fn states(c: &Client, id: Uuid) -> Vec<String> {
    c.history(id)
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.to_state)
        .collect()
}

/// A forged `task_event` is not an event: the run waits on, and takes the
/// real one, committed through the client, whether that comes after the run
/// suspended or while it is still in memory.
async fn a_forged_event_reaches_no_run(db: &TestDb) {
    let rt = start(db).await;
    let c = rt.client();
    let forged = |task_id| Msg::TaskEvent {
        task_id,
        seq: 1,
        name: "go".into(),
        payload: json!("forged"),
    };

    // The real event after the run suspended.
    let t = c
        .submit(NewTask::new("t.nap_then_go", json!({})))
        .await
        .unwrap()
        .task;
    until_napping(t.id).await;
    forge(&rt, &t, forged(t.id)).await;
    let waiting = until_suspended(&c, t.id).await;
    assert_eq!(waiting.waiting.as_deref(), Some("event go"));
    c.send_event(t.id, "go", json!("real")).await.unwrap();
    let (done, fin) = c.wait(t.id, WAIT).await.unwrap();
    assert!(fin);
    assert_eq!(done.state, TaskState::Succeeded, "{done:?}");
    assert_eq!(done.output, Some(json!("real")));

    // The real event while the run is in memory: its hint makes the actor
    // read it from the store, and the run takes it without suspending.
    let t = c
        .submit(NewTask::new("t.nap_then_go", json!({})))
        .await
        .unwrap()
        .task;
    until_napping(t.id).await;
    forge(&rt, &t, forged(t.id)).await;
    c.send_event(t.id, "go", json!("real")).await.unwrap();
    let (done, fin) = c.wait(t.id, WAIT).await.unwrap();
    assert!(fin);
    assert_eq!(done.output, Some(json!("real")), "{done:?}");
    assert_eq!(
        states(&c, t.id).await,
        ["pending", "running", "succeeded"],
        "the real event reached the run in memory"
    );
    let inbox = rt.store().events(t.id).await.unwrap();
    assert_eq!(inbox.len(), 1, "only the real event is in the inbox");
    assert!(inbox[0].delivered_at.is_some(), "{inbox:?}");
    rt.shutdown().await;
}

/// A forged `task_finished` is not a sub-task's end: neither one that
/// names the real sub-task (still running) with an output of its own, nor
/// one of a sub-task that does not exist. The parent's output is the real
/// sub-task's.
async fn a_forged_child_end_reaches_no_parent(db: &TestDb) {
    let rt = start(db).await;
    let c = rt.client();
    let p = c
        .submit(NewTask::new("t.parent", json!({})))
        .await
        .unwrap()
        .task;
    until_napping(p.id).await;
    let children = rt.store().children(p.id).await.unwrap();
    assert_eq!(children.len(), 1);
    let real = &children[0];
    assert!(!real.state.is_final(), "{real:?}");

    let mut claimed = real.clone();
    claimed.state = TaskState::Succeeded;
    claimed.output = Some(json!("forged"));
    claimed.finished_at = Some(chrono::Utc::now());
    let mut made_up = claimed.clone();
    made_up.id = Uuid::now_v7();
    for t in [claimed, made_up] {
        forge(&rt, &p, Msg::TaskFinished { task: Box::new(t) }).await;
    }

    let (done, fin) = c.wait(p.id, WAIT).await.unwrap();
    assert!(fin);
    assert_eq!(done.state, TaskState::Succeeded, "{done:?}");
    assert_eq!(done.output, Some(json!("the real child's output")));
    let child = c.get(real.id).await.unwrap();
    assert_eq!(child.output, Some(json!("the real child's output")));
    assert_eq!(rt.store().children(p.id).await.unwrap().len(), 1);
    rt.shutdown().await;
}

/// A forged `cancel_task` cancels nothing; a cancel requested through the
/// client reaches the run in memory.
async fn a_forged_cancel_cancels_nothing(db: &TestDb) {
    let rt = start(db).await;
    let c = rt.client();
    let t = c
        .submit(NewTask::new("t.nap_then_go", json!({})))
        .await
        .unwrap()
        .task;
    until_napping(t.id).await;
    forge(&rt, &t, Msg::CancelTask { task_id: t.id }).await;
    let waiting = until_suspended(&c, t.id).await;
    assert!(!waiting.cancel_requested);
    c.send_event(t.id, "go", json!("real")).await.unwrap();
    let (done, fin) = c.wait(t.id, WAIT).await.unwrap();
    assert!(fin);
    assert_eq!(done.state, TaskState::Succeeded, "{done:?}");
    assert_eq!(done.output, Some(json!("real")));

    // A real cancel: committed, then its hint makes the actor read it.
    let t = c
        .submit(NewTask::new("t.nap_then_go", json!({})))
        .await
        .unwrap()
        .task;
    until_napping(t.id).await;
    c.cancel(t.id).await.unwrap();
    let (done, fin) = c.wait(t.id, WAIT).await.unwrap();
    assert!(fin);
    assert_eq!(done.state, TaskState::Cancelled, "{done:?}");
    assert_eq!(
        states(&c, t.id).await,
        ["pending", "running", "cancelled"],
        "the cancel reached the run in memory"
    );
    rt.shutdown().await;
}

on_both_databases!(
    a_forged_event_reaches_no_run,
    a_forged_child_end_reaches_no_parent,
    a_forged_cancel_cancels_nothing,
);
