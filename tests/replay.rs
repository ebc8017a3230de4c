//! Replays in linear time, on SQLite and PostgreSQL: a task woken k times
//! by the executor that suspended it reads each event and journal row
//! about once (the replay cache), not O(k²) rows; with the cache off the
//! same task reads exactly the quadratic count (so the counter measures
//! what it says); and when two executors take turns, each reads the
//! journal again when the other ran the task in between, so no step runs
//! twice. Rows are counted by the store (`Store::replay_reads`), side
//! effects by the steps themselves.

mod common;

use std::time::Duration;

use common::{eventually, fast_executor, TestDb};
use courier::actors::ReplayCacheConfig;
use courier::{Client, NewTask, TaskContext, TaskError, TaskState};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);
const K: u64 = 25;

/// Side effects by test key: the steps that ran, in order.
static EFFECTS: common::Effects<u64> = common::Effects::new();

fn effect(key: &str, i: u64) {
    EFFECTS.push(key, i);
}

fn effects(key: &str) -> Vec<u64> {
    EFFECTS.of(key)
}

/// `k` rounds of a journaled step `s{i}` and a wait for event `go`: the
/// task suspends k times and each run replays every round before it.
async fn rounds(ctx: TaskContext) -> Result<Value, TaskError> {
    let key = ctx.input()["key"].as_str().unwrap_or_default().to_string();
    let k = ctx.input()["k"].as_u64().unwrap_or(0);
    let mut seen = Vec::new();
    for i in 0..k {
        let out: u64 = ctx
            .step(&format!("s{i}"), async {
                effect(&key, i);
                Ok(i * 10)
            })
            .await?;
        let go = ctx.wait_event("go").await?;
        seen.push(json!([out, go]));
    }
    Ok(Value::Array(seen))
}

fn runtime(db: &TestDb, cache: ReplayCacheConfig) -> courier::RuntimeBuilder {
    db.builder()
        .executor(courier::ExecutorConfig {
            replay_cache: cache,
            ..fast_executor()
        })
        .register("t.rounds", rounds)
}

/// Runs a `t.rounds` task of `K` rounds to its end: after each round's
/// step it waits until the task is suspended again, then sends the next
/// event through `sender(i)`. Checks the task's output and that each step
/// ran once.
async fn run_rounds<'a>(submit: &Client, sender: impl Fn(u64) -> &'a Client) {
    let key = uuid::Uuid::new_v4().simple().to_string();
    let t = submit
        .submit(NewTask::new("t.rounds", json!({"key": key, "k": K})))
        .await
        .unwrap()
        .task;
    for i in 0..K {
        eventually(&format!("round {i} to suspend"), WAIT, || async {
            let now = submit.get(t.id).await.unwrap();
            let ran = effects(&key);
            assert!(ran.len() as u64 <= i + 1, "a step ran twice: {ran:?}");
            (now.state == TaskState::Suspended && ran.len() as u64 == i + 1).then_some(())
        })
        .await;
        sender(i).send_event(t.id, "go", json!(i)).await.unwrap();
    }
    let (done, finished) = submit.wait(t.id, WAIT).await.unwrap();
    assert!(finished && done.state == TaskState::Succeeded, "{done:?}");
    let want: Vec<Value> = (0..K).map(|i| json!([i * 10, i])).collect();
    assert_eq!(done.output, Some(Value::Array(want)));
    assert_eq!(
        effects(&key),
        (0..K).collect::<Vec<_>>(),
        "every step ran once, in order"
    );
}

/// One executor: with the cache each event and step row is read about once
/// (a claim that finds nothing kept reads all, so allow a few); without
/// it, run j reads j events and j steps: (K + 1) K / 2 of each.
async fn a_woken_task_reads_only_what_it_has_not_seen(db: &TestDb) {
    let quadratic = K * (K + 1) / 2;

    let rt = runtime(db, ReplayCacheConfig::OFF).start().await.unwrap();
    let c = rt.client();
    let before = rt.store().replay_reads();
    run_rounds(&c, |_| &c).await;
    let off = rt.store().replay_reads();
    rt.shutdown().await;
    assert_eq!(off.journal_rows - before.journal_rows, quadratic);
    // At least: an event hint that finds the actor still stopping makes it
    // read the new event once more.
    assert!(off.inbox_rows - before.inbox_rows >= quadratic, "{off:?}");

    let rt = runtime(db, ReplayCacheConfig::default())
        .start()
        .await
        .unwrap();
    let c = rt.client();
    let before = rt.store().replay_reads();
    run_rounds(&c, |_| &c).await;
    let on = rt.store().replay_reads();
    let stats = rt.replay_cache_stats().unwrap();
    rt.shutdown().await;
    eprintln!("cache off: {off:?} since {before:?}; on: {on:?}, {stats:?}");
    let (journal, inbox) = (
        on.journal_rows - before.journal_rows,
        on.inbox_rows - before.inbox_rows,
    );
    assert!(
        journal <= 2 * K && inbox <= 2 * K,
        "linear, not {quadratic}: read {journal} journal and {inbox} inbox rows ({stats:?})"
    );
    assert!(stats.journal_hits >= K - 3, "{stats:?}");
    assert_eq!(stats.entries, 0, "a finished task leaves nothing behind");
}

/// Two executors on one database take turns (each event is sent through
/// the other runtime's client, whose executor claims the woken task): the
/// journal kept by one is stale once the other has run the task, so it is
/// read again (by epoch), and no step ever runs twice.
async fn an_executor_that_did_not_run_the_task_last_reads_its_journal(db: &TestDb) {
    let a = runtime(db, ReplayCacheConfig::default())
        .node("a")
        .start()
        .await
        .unwrap();
    let b = runtime(db, ReplayCacheConfig::default())
        .node("b")
        .start()
        .await
        .unwrap();
    let (ca, cb) = (a.client(), b.client());
    run_rounds(&ca, |i| if i % 2 == 0 { &cb } else { &ca }).await;
    let (sa, sb) = (
        a.replay_cache_stats().unwrap(),
        b.replay_cache_stats().unwrap(),
    );
    // Each ran some of the rounds, and found its inbox kept for most.
    assert!(sa.hits + sa.misses > 0 && sb.hits + sb.misses > 0);
    assert!(
        sa.hits + sb.hits >= K - 3,
        "events are kept whoever ran the task in between: {sa:?} {sb:?}"
    );
    assert!(
        a.store().replay_reads().journal_rows + b.store().replay_reads().journal_rows > 0,
        "the journal was read again"
    );
    eprintln!("a: {sa:?}; b: {sb:?}");
    b.shutdown().await;
    a.shutdown().await;
}

on_both_databases!(
    a_woken_task_reads_only_what_it_has_not_seen,
    an_executor_that_did_not_run_the_task_last_reads_its_journal,
);
