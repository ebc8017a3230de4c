//! The store's guarantees, on SQLite and PostgreSQL: conditional claims,
//! fencing, trigger-written history, idempotent spawning, one winner when
//! declaring an executor dead; and the queue semantics enforced where tasks
//! are claimed: priorities, concurrency and rate limits, pauses, timers,
//! retries, batches and retention.

mod common;

use std::time::Duration;

use common::{max_running, TestDb};
use courier::actors::now;
use courier::{QueueUpdate, Retention, Store, Task, TaskOptions, TaskState};
use courier_store::{Error, ExecutorRegistration, Fence, Offer, Outcome, TaskInsert};
use serde_json::json;
use uuid::Uuid;

/// A task of `kind` in queue `q`, to start now.
fn insert(kind: &str) -> TaskInsert {
    insert_with(kind, TaskOptions::new().queue("q"))
}

fn insert_with(kind: &str, options: TaskOptions) -> TaskInsert {
    let at = now();
    TaskInsert {
        id: Uuid::now_v7(),
        kind: kind.into(),
        input: json!({"k": kind}),
        idempotency_key: None,
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        created_by: "test".into(),
        options: options.resolve(at),
        schedule: None,
        created_at: at,
    }
}

async fn executor(store: &Store, id: &str) {
    store
        .register_executor(&ExecutorRegistration {
            id: id.into(),
            node: "n".into(),
            host: "h".into(),
            pid: 1,
            process: None,
            offer: Offer {
                kinds: vec!["k".into()],
                queues: vec!["q".into()],
                kind_options: Default::default(),
            },
            capacity: 4,
        })
        .await
        .unwrap();
}

/// One claim of up to `n` tasks of kind `k` from queue `q`.
async fn claim(s: &Store, who: &str, n: u32) -> Vec<Task> {
    s.claim(who, &["q".into()], &["k".into()], n)
        .await
        .unwrap()
        .tasks
}

async fn claim_one(s: &Store, who: &str) -> Option<Task> {
    claim(s, who, 1).await.pop()
}

fn fence(t: &Task) -> Fence {
    Fence {
        task_id: t.id,
        executor_id: t.executor_id.clone().unwrap(),
        epoch: t.epoch,
    }
}

fn failed(msg: &str) -> Outcome {
    Outcome::Failed {
        error: msg.into(),
        errors: Vec::new(),
    }
}

async fn claims_are_conditional_and_fenced(db: &TestDb) {
    let s = db.store().await;
    // Migrations are idempotent: a second store on the same database is fine.
    let _again = db.store().await;
    executor(&s, "e1").await;
    executor(&s, "e2").await;
    let (t, _) = s.create_task(&insert("k")).await.unwrap();

    // Many concurrent claims: exactly one wins.
    let mut claims = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        let who = if i % 2 == 0 { "e1" } else { "e2" };
        claims.push(tokio::spawn(async move { claim_one(&s, who).await }));
    }
    let mut won = Vec::new();
    for c in claims {
        if let Some(t) = c.await.unwrap() {
            won.push(t);
        }
    }
    assert_eq!(won.len(), 1);
    let first = won.pop().unwrap();
    assert_eq!(
        (first.state, first.attempts, first.epoch),
        (TaskState::Running, 1, 1)
    );

    // The owner is declared dead; its tasks go back; another executor claims.
    let owner = first.executor_id.clone().unwrap();
    let other = if owner == "e1" { "e2" } else { "e1" };
    assert!(s.declare_dead(&owner, other).await.unwrap());
    assert!(
        !s.declare_dead(&owner, other).await.unwrap(),
        "only one declaration wins"
    );
    // The declaration is the fence: the dead owner's writes are refused even
    // before its tasks are released.
    assert!(matches!(
        s.finish(&fence(&first), &Outcome::Succeeded(json!(0)))
            .await,
        Err(Error::Fenced(_))
    ));
    assert!(matches!(
        s.set_progress(&fence(&first), &json!(0)).await,
        Err(Error::Fenced(_))
    ));
    let (released, _) = s.release_orphans(other, 5).await.unwrap();
    assert_eq!(released.len(), 1);
    // The interrupted run used no attempt.
    assert_eq!(released[0].attempts, 0);
    // A dead executor cannot claim.
    assert!(claim_one(&s, &owner).await.is_none());
    let second = claim_one(&s, other).await.unwrap();
    assert_eq!((second.attempts, second.epoch), (1, 2));

    // The zombie's writes are refused, whatever they try.
    let old = fence(&first);
    assert!(matches!(
        s.finish(&old, &Outcome::Succeeded(json!(1))).await,
        Err(Error::Fenced(_))
    ));
    assert!(matches!(
        s.set_owned_state(&old, TaskState::Suspended).await,
        Err(Error::Fenced(_))
    ));
    assert!(matches!(
        s.set_progress(&old, &json!(1)).await,
        Err(Error::Fenced(_))
    ));
    assert!(matches!(
        s.spawn_child(&old, 0, &insert("k")).await,
        Err(Error::Fenced(_))
    ));
    assert!(matches!(
        s.retry_later(&old, "x", &[], now()).await,
        Err(Error::Fenced(_))
    ));
    assert!(matches!(s.hand_back(&old).await, Err(Error::Fenced(_))));
    assert!(
        !s.heartbeat(&owner, 0).await.unwrap(),
        "a dead executor's heartbeat says so"
    );

    // A task left with an executor that stopped (a claim that committed as
    // it stopped) is an orphan: the next sweep puts it back.
    executor(&s, "e3").await;
    let (t3, _) = s.create_task(&insert("k")).await.unwrap();
    assert_eq!(claim_one(&s, "e3").await.unwrap().id, t3.id);
    s.stop_executor("e3").await.unwrap();
    let (orphans, _) = s.release_orphans(other, 5).await.unwrap();
    assert_eq!(orphans.iter().map(|t| t.id).collect::<Vec<_>>(), [t3.id]);
    // Only kinds the executor runs are claimed.
    let took = s
        .claim(other, &["q".into()], &["other-kind".into()], 4)
        .await
        .unwrap();
    assert!(took.tasks.is_empty(), "the kind must match");
    // Only from the queues asked.
    let took = s
        .claim(other, &["elsewhere".into()], &["k".into()], 4)
        .await
        .unwrap();
    assert!(took.tasks.is_empty(), "the queue must match");
    assert_eq!(claim_one(&s, other).await.unwrap().id, t3.id);

    // A task whose executor dies every time it runs is failed at the limit.
    let (p, _) = s.create_task(&insert("k")).await.unwrap();
    for (i, e) in ["p1", "p2"].into_iter().enumerate() {
        executor(&s, e).await;
        assert_eq!(claim_one(&s, e).await.unwrap().id, p.id);
        assert!(s.declare_dead(e, other).await.unwrap());
        let (back, _) = s.release_orphans(other, 2).await.unwrap();
        let t = back.iter().find(|t| t.id == p.id).unwrap();
        if i == 0 {
            assert_eq!(t.state, TaskState::Pending);
        } else {
            assert_eq!(t.state, TaskState::Failed);
            assert!(
                t.error.as_deref().unwrap().contains("died 2 times"),
                "{t:?}"
            );
        }
    }

    // The owner's writes work, and the end is final.
    let cur = fence(&second);
    s.set_owned_state(&cur, TaskState::Suspended).await.unwrap();
    s.add_watcher(t.id, "web/n/w1").await.unwrap();
    let (done, watchers) = s.finish(&cur, &failed("boom")).await.unwrap();
    // The watchers are taken with the final state, in one transaction.
    assert_eq!(watchers, ["web/n/w1"]);
    assert!(s.take_watchers(t.id).await.unwrap().is_empty());
    assert_eq!(
        (done.state, done.error.as_deref()),
        (TaskState::Failed, Some("boom"))
    );
    assert!(matches!(
        s.finish(&cur, &Outcome::Succeeded(json!(1))).await,
        Err(Error::Fenced(_))
    ));
    assert!(matches!(
        s.add_event(t.id, "late", &json!(1)).await,
        Err(Error::Conflict(_))
    ));

    // Every change is in the history, with who made it, who held the task
    // before, and the attempt it concerns: the takeover line names the dead
    // owner and the taker, and the run taken over was attempt 1, run again.
    let h = s.history(t.id).await.unwrap();
    let lines: Vec<_> = h
        .iter()
        .map(|e| {
            (
                e.from_state.as_deref(),
                e.to_state.as_str(),
                e.changed_by.as_deref(),
                e.owner.as_deref(),
                e.attempt,
            )
        })
        .collect();
    let o = Some(owner.as_str());
    assert_eq!(
        lines,
        [
            (None, "pending", Some("test"), None, 0),
            (Some("pending"), "running", o, None, 1),
            (Some("running"), "pending", Some(other), o, 1),
            (Some("pending"), "running", Some(other), None, 1),
            (Some("running"), "suspended", Some(other), Some(other), 1),
            (Some("suspended"), "failed", Some(other), Some(other), 1),
        ]
    );
}

async fn spawning_and_idempotency_keys_are_idempotent(db: &TestDb) {
    let s = db.store().await;
    executor(&s, "e1").await;
    let (_, _) = s.create_task(&insert("k")).await.unwrap();
    let p = claim_one(&s, "e1").await.unwrap();
    let f = fence(&p);
    let (c0, created) = s.spawn_child(&f, 0, &insert("k")).await.unwrap();
    assert!(created);
    assert_eq!((c0.parent_id, c0.parent_attempt), (Some(p.id), Some(1)));
    // The same spawn number again (a re-run) returns the first child.
    let (again, created) = s.spawn_child(&f, 0, &insert("k")).await.unwrap();
    assert!(!created);
    assert_eq!(again.id, c0.id);
    let (c1, _) = s.spawn_child(&f, 1, &insert("k")).await.unwrap();
    let kids: Vec<_> = s
        .children(p.id)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(kids, [c0.id, c1.id]);
    let open: Vec<_> = s
        .open_descendants(p.id)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(open.len(), 2);

    // A retried parent (its next attempt) spawns afresh.
    let retried = s.retry_later(&f, "again", &[], now()).await.unwrap();
    assert_eq!(retried.state, TaskState::Scheduled);
    let due = s.promote_due("test", 10).await.unwrap();
    assert_eq!(due.iter().map(|t| t.id).collect::<Vec<_>>(), [p.id]);
    // The children are pending too: take them out of the way first.
    let mut next = claim(&s, "e1", 3).await;
    next.retain(|t| t.id == p.id);
    let p2 = next.pop().unwrap();
    assert_eq!(p2.attempts, 2);
    let (fresh, created) = s.spawn_child(&fence(&p2), 0, &insert("k")).await.unwrap();
    assert!(created && fresh.id != c0.id);
    assert_eq!(fresh.parent_attempt, Some(2));
    assert_eq!(s.children(p.id).await.unwrap().len(), 3);

    let mut a = insert("k");
    a.idempotency_key = Some("key-1".into());
    let mut b = insert("k");
    b.idempotency_key = Some("key-1".into());
    b.input = json!("different");
    let (ta, ca) = s.create_task(&a).await.unwrap();
    let (tb, cb) = s.create_task(&b).await.unwrap();
    assert!(ca && !cb);
    assert_eq!(ta.id, tb.id);
    assert_eq!(tb.input, a.input);
}

async fn events_and_watchers(db: &TestDb) {
    let s = db.store().await;
    let (t, _) = s.create_task(&insert("k")).await.unwrap();
    let (e1, _) = s.add_event(t.id, "a", &json!({"x": 1})).await.unwrap();
    let (e2, woken) = s.add_event(t.id, "b", &json!([1, 2])).await.unwrap();
    // Only a suspended task is woken by an event.
    assert!(woken.is_none());
    assert!(e2.seq > e1.seq);
    assert!(matches!(
        s.add_event(Uuid::now_v7(), "a", &json!(1)).await,
        Err(Error::NotFound(_))
    ));
    // Marking one event marks that one only, not the ones before it (they
    // may still be on their way, or lost and due to be sent again).
    s.mark_delivered(t.id, e2.seq).await.unwrap();
    let evs = s.events(t.id).await.unwrap();
    assert!(evs[0].delivered_at.is_none() && evs[1].delivered_at.is_some());
    s.mark_delivered_up_to(t.id, e2.seq).await.unwrap();
    assert!(s
        .events(t.id)
        .await
        .unwrap()
        .iter()
        .all(|e| e.delivered_at.is_some()));
    assert_eq!(evs[1].payload.0, json!([1, 2]));

    s.add_watcher(t.id, "web/n/s1").await.unwrap();
    s.add_watcher(t.id, "web/n/s1").await.unwrap();
    s.add_watcher(t.id, "web/n/s2").await.unwrap();
    s.remove_watcher(t.id, "web/n/s2").await.unwrap();
    assert_eq!(s.take_watchers(t.id).await.unwrap(), ["web/n/s1"]);
    assert!(s.take_watchers(t.id).await.unwrap().is_empty());

    let (cancelled, parent) = s.cancel_unclaimed(t.id, "test").await.unwrap().unwrap();
    assert!(parent.is_none());
    assert_eq!(cancelled.state, TaskState::Cancelled);
    assert!(s.cancel_unclaimed(t.id, "test").await.unwrap().is_none());
    // A scheduled task is cancelled at once too.
    let (later, _) = s
        .create_task(&insert_with(
            "k",
            TaskOptions::new()
                .queue("q")
                .delay(Duration::from_secs(3600)),
        ))
        .await
        .unwrap();
    assert_eq!(later.state, TaskState::Scheduled);
    let (gone, _) = s.cancel_unclaimed(later.id, "test").await.unwrap().unwrap();
    assert_eq!((gone.state, gone.run_at), (TaskState::Cancelled, None));
    let counts = s.count_by_state().await.unwrap();
    assert_eq!(counts, [(TaskState::Cancelled, 2)]);
}

/// Executors pulling at once each get at most what they asked for (their
/// free slots), and together every task exactly once.
async fn pulls_never_claim_more_than_asked(db: &TestDb) {
    let s = db.store().await;
    for i in 0..300 {
        s.create_task(&insert(if i % 3 == 0 { "j" } else { "k" }))
            .await
            .unwrap();
    }
    let mut pullers = Vec::new();
    for e in ["p1", "p2", "p3", "p4"] {
        executor(&s, e).await;
        let s = s.clone();
        pullers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = s
                    .claim(e, &["q".into()], &["j".into(), "k".into()], 3)
                    .await
                    .unwrap()
                    .tasks;
                assert!(batch.len() <= 3, "{e} asked for 3 and got {}", batch.len());
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch.into_iter().map(|t| t.id));
            }
        }));
    }
    let mut all = Vec::new();
    for p in pullers {
        all.extend(p.await.unwrap());
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!((n, all.len()), (300, 300), "every task claimed once");
}

/// Within a queue the higher priority starts first, FIFO among equals;
/// one claim across two queues takes the highest priorities of both.
async fn priority_then_age_decides_who_starts(db: &TestDb) {
    let s = db.store().await;
    executor(&s, "e1").await;
    let mut ids = Vec::new();
    for p in [0, 5, -3, 5, 10, 0] {
        let (t, _) = s
            .create_task(&insert_with("k", TaskOptions::new().queue("q").priority(p)))
            .await
            .unwrap();
        ids.push(t.id);
    }
    let mut order = Vec::new();
    while let Some(t) = claim_one(&s, "e1").await {
        order.push(t.id);
    }
    assert_eq!(
        order,
        [ids[4], ids[1], ids[3], ids[0], ids[5], ids[2]],
        "priority 10, 5, 5, 0, 0, -3, the older first among equals"
    );
    let (a, _) = s
        .create_task(&insert_with("k", TaskOptions::new().queue("a").priority(1)))
        .await
        .unwrap();
    let (b, _) = s
        .create_task(&insert_with("k", TaskOptions::new().queue("b").priority(9)))
        .await
        .unwrap();
    let (_, _) = s
        .create_task(&insert_with(
            "k",
            TaskOptions::new().queue("a").priority(-1),
        ))
        .await
        .unwrap();
    let got = s
        .claim("e1", &["a".into(), "b".into()], &["k".into()], 2)
        .await
        .unwrap()
        .tasks;
    assert_eq!(got.iter().map(|t| t.id).collect::<Vec<_>>(), [b.id, a.id]);
}

/// A concurrency limit holds while four executors claim and finish as fast
/// as they can, checked from the tasks' own history.
async fn a_concurrency_limit_holds_across_executors(db: &TestDb) {
    let s = db.store().await;
    let q = s
        .update_queue("q", &QueueUpdate::default().concurrency(3))
        .await
        .unwrap();
    assert_eq!(q.concurrency, Some(3));
    let mut ids = Vec::new();
    for _ in 0..60 {
        ids.push(s.create_task(&insert("k")).await.unwrap().0.id);
    }
    let mut workers = Vec::new();
    for e in ["c1", "c2", "c3", "c4"] {
        executor(&s, e).await;
        let s = s.clone();
        workers.push(tokio::spawn(async move {
            let mut done = 0;
            let mut idle = 0;
            while idle < 50 {
                let got = claim(&s, e, 2).await;
                if got.is_empty() {
                    idle += 1;
                    tokio::task::yield_now().await;
                    continue;
                }
                idle = 0;
                for t in got {
                    s.finish(&fence(&t), &Outcome::Succeeded(json!(null)))
                        .await
                        .unwrap();
                    done += 1;
                }
            }
            done
        }));
    }
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    assert_eq!(total, 60);
    let mut lines = Vec::new();
    for id in &ids {
        lines.extend(s.history(*id).await.unwrap());
    }
    let most = max_running(&lines);
    assert!(
        most <= 3,
        "{most} tasks ran at once in a queue limited to 3"
    );
    // Lifting the limit takes effect at the next claim.
    s.update_queue("q", &QueueUpdate::default().concurrency(None))
        .await
        .unwrap();
    for _ in 0..5 {
        s.create_task(&insert("k")).await.unwrap();
    }
    assert_eq!(claim(&s, "c1", 10).await.len(), 5);
}

/// A paused queue starts nothing, anywhere; a rate limit lets a burst
/// through, then one start per token, and says when the next one is due.
async fn pauses_and_rate_limits_hold_at_the_claim(db: &TestDb) {
    let s = db.store().await;
    executor(&s, "e1").await;
    for _ in 0..30 {
        s.create_task(&insert("k")).await.unwrap();
    }
    let paused = s
        .update_queue("q", &QueueUpdate::default().paused(true))
        .await
        .unwrap();
    assert!(paused.paused);
    assert_eq!(paused.pending, 30);
    assert!(claim(&s, "e1", 10).await.is_empty(), "paused");
    // An executor that last saw the queue without limits claims in one
    // statement: its guard sees the pause all the same.
    let quick = s
        .claim_unlimited("e1", &["q".into()], &["k".into()], 10)
        .await
        .unwrap();
    assert!(quick.is_empty(), "the guard sees the pause");
    // Resume with 5 starts a second: a burst of 5, then none until a token.
    let q = s
        .update_queue("q", &QueueUpdate::default().paused(false).rate_per_s(5.0))
        .await
        .unwrap();
    assert_eq!((q.paused, q.rate_per_s), (false, Some(5.0)));
    let first = s
        .claim("e1", &["q".into()], &["k".into()], 20)
        .await
        .unwrap();
    assert_eq!(first.tasks.len(), 5);
    let wait = first
        .retry_in
        .expect("the rate limit says when to come back");
    assert!(wait <= Duration::from_millis(201), "{wait:?}");
    let second = s
        .claim("e1", &["q".into()], &["k".into()], 20)
        .await
        .unwrap();
    assert!(second.tasks.len() <= 1, "{}", second.tasks.len());
    // A second later (moved back in the bucket) there are 5 more tokens.
    db.raw("UPDATE queues SET tokens = 0, tokens_at = NULL WHERE name = 'q'")
        .await;
    assert_eq!(claim(&s, "e1", 20).await.len(), 5);
    // A rate limit is seen by the guard too, and a full claim says so.
    assert!(s
        .claim_unlimited("e1", &["q".into()], &["k".into()], 10)
        .await
        .unwrap()
        .is_empty());
    assert!(
        s.claim("e1", &["q".into()], &["k".into()], 1)
            .await
            .unwrap()
            .limited
    );
    // Other queues are untouched by q's limits.
    s.create_task(&insert_with("k", TaskOptions::new().queue("free")))
        .await
        .unwrap();
    let got = s
        .claim("e1", &["q".into(), "free".into()], &["k".into()], 20)
        .await
        .unwrap();
    assert!(got.tasks.iter().any(|t| t.queue == "free"));
    let all = s.queues().await.unwrap();
    let names: Vec<_> = all.iter().map(|q| q.name.as_str()).collect();
    assert!(names.contains(&"q") && names.contains(&"free"), "{names:?}");
    assert!(matches!(
        s.update_queue(
            "q",
            &QueueUpdate::default().concurrency(0)
        )
        .await,
        Err(Error::InvalidField { field, .. }) if field == "concurrency"
    ));
}

/// A delayed task is `scheduled` until due, then promoted once; a failed
/// attempt with attempts left waits out its backoff the same way.
async fn timers_and_retries_live_in_the_database(db: &TestDb) {
    let s = db.store().await;
    executor(&s, "e1").await;
    let (t, _) = s
        .create_task(&insert_with(
            "k",
            TaskOptions::new()
                .queue("q")
                .delay(Duration::from_secs(3600))
                .max_attempts(3),
        ))
        .await
        .unwrap();
    assert_eq!(t.state, TaskState::Scheduled);
    assert_eq!(t.max_attempts, 3);
    assert_eq!(s.next_due().await.unwrap(), t.run_at);
    assert!(s.promote_due("test", 10).await.unwrap().is_empty());
    assert!(claim(&s, "e1", 4).await.is_empty(), "not before its time");
    // Its time comes.
    db.raw("UPDATE tasks SET run_at = created_at WHERE state = 'scheduled'")
        .await;
    let due = s.promote_due("test", 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].state, due[0].run_at), (TaskState::Pending, None));
    assert!(s.promote_due("test", 10).await.unwrap().is_empty(), "once");
    assert_eq!(s.next_due().await.unwrap(), None);

    let run = claim_one(&s, "e1").await.unwrap();
    assert_eq!(run.attempts, 1);
    let err = courier::AttemptError {
        attempt: 1,
        error: "flaky".into(),
        at: now(),
        code: "error".into(),
    };
    let at = now() + chrono::Duration::seconds(60);
    let r = s
        .retry_later(&fence(&run), "flaky", std::slice::from_ref(&err), at)
        .await
        .unwrap();
    assert_eq!(r.state, TaskState::Scheduled);
    assert_eq!(
        r.run_at.map(|t| t.timestamp_micros()),
        Some(at.timestamp_micros())
    );
    assert_eq!((r.errors.len(), r.executor_id.as_deref()), (1, None));
    db.raw("UPDATE tasks SET run_at = created_at WHERE state = 'scheduled'")
        .await;
    s.promote_due("test", 10).await.unwrap();
    let again = claim_one(&s, "e1").await.unwrap();
    assert_eq!((again.attempts, again.errors.len()), (2, 1));
    let mut errors = again.errors.clone();
    errors.push(courier::AttemptError {
        attempt: 2,
        error: "down".into(),
        ..err
    });
    let (done, _) = s
        .finish(
            &fence(&again),
            &Outcome::Failed {
                error: "down".into(),
                errors,
            },
        )
        .await
        .unwrap();
    assert_eq!(done.state, TaskState::Failed);
    assert_eq!(
        done.errors
            .iter()
            .map(|e| (e.attempt, e.error.as_str()))
            .collect::<Vec<_>>(),
        [(1, "flaky"), (2, "down")]
    );
    let h: Vec<_> = s
        .history(t.id)
        .await
        .unwrap()
        .into_iter()
        .map(|h| (h.to_state, h.attempt))
        .collect();
    assert_eq!(
        h,
        [
            ("scheduled".to_string(), 0),
            ("pending".into(), 0),
            ("running".into(), 1),
            ("scheduled".into(), 1),
            ("pending".into(), 1),
            ("running".into(), 2),
            ("failed".into(), 2),
        ]
    );
}

/// A batch is one transaction: all of it, or nothing.
async fn a_batch_is_all_or_nothing(db: &TestDb) {
    let s = db.store().await;
    let a = insert("k");
    let mut b = insert("k");
    b.id = a.id;
    assert!(matches!(
        s.create_tasks(&[insert("k"), a.clone(), b], None).await,
        Err(Error::Conflict(_))
    ));
    assert!(s.count_by_state().await.unwrap().is_empty(), "nothing kept");
    let rows = s
        .create_tasks(
            &[
                insert("k"),
                a,
                insert_with(
                    "k",
                    TaskOptions::new().queue("q").delay(Duration::from_secs(60)),
                ),
            ],
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        rows.iter().map(|r| (r.0.state, r.1)).collect::<Vec<_>>(),
        [
            (TaskState::Pending, true),
            (TaskState::Pending, true),
            (TaskState::Scheduled, true)
        ]
    );
}

/// Retention deletes whole finished trees once their root has been final
/// long enough, with their history and events, and leaves a tree alone
/// while any task in it is not final.
async fn retention_deletes_whole_finished_trees(db: &TestDb) {
    let s = db.store().await;
    executor(&s, "e1").await;
    // A tree of three that finishes, and one whose child still runs.
    let (done_root, _) = s.create_task(&insert("k")).await.unwrap();
    let root = claim_one(&s, "e1").await.unwrap();
    assert_eq!(root.id, done_root.id);
    let (c1, _) = s.spawn_child(&fence(&root), 0, &insert("k")).await.unwrap();
    let (c2, _) = s.spawn_child(&fence(&root), 1, &insert("k")).await.unwrap();
    s.add_event(c1.id, "e", &json!(1)).await.unwrap();
    for c in claim(&s, "e1", 2).await {
        s.finish(&fence(&c), &Outcome::Succeeded(json!(1)))
            .await
            .unwrap();
    }
    s.finish(&fence(&root), &Outcome::Succeeded(json!(1)))
        .await
        .unwrap();

    let (open_root, _) = s.create_task(&insert("k")).await.unwrap();
    let open = claim_one(&s, "e1").await.unwrap();
    assert_eq!(open.id, open_root.id);
    let (child, _) = s.spawn_child(&fence(&open), 0, &insert("k")).await.unwrap();
    s.finish(&fence(&open), &failed("parent gave up"))
        .await
        .unwrap();
    assert_eq!(claim_one(&s, "e1").await.unwrap().id, child.id);

    let keep_a_day: Retention = "succeeded=1d,failed=1d".parse().unwrap();
    assert!(s.delete_expired(&keep_a_day, 100).await.unwrap().is_empty());
    // Two days pass.
    db.raw("UPDATE tasks SET finished_at = '2000-01-01T00:00:00Z' WHERE finished_at IS NOT NULL")
        .await;
    let deleted = s.delete_expired(&keep_a_day, 100).await.unwrap();
    assert_eq!(deleted, [(TaskState::Succeeded, 3)]);
    for id in [done_root.id, c1.id, c2.id] {
        assert!(s.get_task(id).await.unwrap().is_none());
        assert!(s.history(id).await.unwrap().is_empty());
    }
    assert!(s.events(c1.id).await.unwrap().is_empty());
    // The failed root whose child runs stays, with its child.
    assert!(s.get_task(open_root.id).await.unwrap().is_some());
    assert!(s.delete_expired(&keep_a_day, 100).await.unwrap().is_empty());
    // Kept forever means kept.
    assert!(s
        .delete_expired(&Retention::forever(), 100)
        .await
        .unwrap()
        .is_empty());
}

/// Runs' ends written together (group commit) each get their own outcome:
/// a fenced end among them changes nothing and hears `Fenced`, its
/// neighbours land, each with its own watchers, and an event left in an
/// inbox counts as delivered.
async fn ends_written_together_keep_their_own_fences(db: &TestDb) {
    let s = db.store().await;
    executor(&s, "ex-a").await;
    executor(&s, "ex-b").await;
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(s.create_task(&insert("k")).await.unwrap().0.id);
    }
    let tasks = claim(&s, "ex-a", 12).await;
    assert_eq!(tasks.len(), 12);
    for t in &tasks {
        s.add_watcher(t.id, &format!("web/n/{}", t.id))
            .await
            .unwrap();
    }
    // An event in every inbox: the ends share transactions whichever
    // end writes alone.
    for t in &tasks {
        s.add_event(t.id, "late", &json!(1)).await.unwrap();
    }
    // Task 5 is taken over: ex-a's end for it must not land.
    s.hand_back(&fence(&tasks[5])).await.unwrap();
    let again = claim_one(&s, "ex-b").await.unwrap();
    assert_eq!(again.id, tasks[5].id);
    let ends = futures_ends(&s, &tasks).await;
    for (t, end) in tasks.iter().zip(&ends) {
        if t.id == tasks[5].id {
            assert!(matches!(end, Err(Error::Fenced(_))), "{end:?}");
            continue;
        }
        let f = end.as_ref().unwrap();
        assert_eq!((f.id, f.state), (t.id, TaskState::Succeeded));
        // Read with the end: it had a watcher to tell.
        let task = f.task.as_ref().expect("the task of an end with watchers");
        assert_eq!(task.state, TaskState::Succeeded);
        assert_eq!(task.output, Some(json!(t.id.to_string())));
        assert_eq!(f.watchers, [format!("web/n/{}", t.id)]);
    }
    assert_eq!(s.task(tasks[5].id).await.unwrap().state, TaskState::Running);
    for t in &tasks {
        let events = s.events(t.id).await.unwrap();
        let open = t.id == tasks[5].id;
        assert!(
            events.iter().all(|e| e.delivered_at.is_none() == open),
            "inbox of {} {events:?}",
            t.id
        );
    }
}

/// A create, a claim and a flush of ends of 400 tasks each (one statement
/// each) write each task's three history lines, no more and no fewer: on
/// PostgreSQL the lines come from statement triggers that join the rows
/// before and after, and a batch this size is where that join's plan
/// matters.
async fn large_batches_keep_one_history_line_a_change(db: &TestDb) {
    let s = db.store().await;
    executor(&s, "ex-a").await;
    let batch: Vec<TaskInsert> = (0..400).map(|_| insert("k")).collect();
    s.create_tasks(&batch, None).await.unwrap();
    let tasks = claim(&s, "ex-a", 400).await;
    assert_eq!(tasks.len(), 400);
    let ends = futures_ends(&s, &tasks).await;
    for (t, end) in tasks.iter().zip(&ends) {
        let f = end.as_ref().unwrap();
        assert_eq!((f.id, f.state), (t.id, TaskState::Succeeded));
    }
    for t in &tasks {
        let lines: Vec<_> = s
            .history(t.id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.from_state, e.to_state, e.owner, e.attempt))
            .collect();
        let owner = Some("ex-a".to_string());
        assert_eq!(
            lines,
            [
                (None, "pending".into(), None, 0),
                (Some("pending".into()), "running".into(), None, 1),
                (Some("running".into()), "succeeded".into(), owner, 1),
            ],
            "history of {}",
            t.id
        );
    }
}

/// Every task's end at once, from concurrent callers (so that they share
/// transactions), in the order of `tasks`.
async fn futures_ends(
    s: &Store,
    tasks: &[Task],
) -> Vec<courier_store::Result<courier_store::Finished>> {
    let local = tokio::task::LocalSet::new();
    let handles: Vec<_> = tasks
        .iter()
        .map(|t| {
            let (s, f) = (s.clone(), fence(t));
            let out = Outcome::Succeeded(json!(t.id.to_string()));
            local.spawn_local(async move { s.finish_run(&f, &out).await })
        })
        .collect();
    local
        .run_until(async move {
            let mut out = Vec::new();
            for h in handles {
                out.push(h.await.unwrap());
            }
            out
        })
        .await
}

/// Creates written together (group commit) each get their own outcome: a
/// create whose id exists fails alone, two with one idempotency key give
/// one task, and every other create lands with its watcher.
async fn creates_written_together_keep_their_own_outcomes(db: &TestDb) {
    let s = db.store().await;
    let (existing, _) = s.create_task(&insert("k")).await.unwrap();
    let mut inserts: Vec<TaskInsert> = (0..10).map(|_| insert("k")).collect();
    inserts[3].id = existing.id;
    inserts[6].idempotency_key = Some("same".into());
    inserts[7].idempotency_key = Some("same".into());
    let local = tokio::task::LocalSet::new();
    let handles: Vec<_> = inserts
        .iter()
        .cloned()
        .map(|t| {
            let s = s.clone();
            local.spawn_local(async move {
                s.create_task_watched(&t, Some(&format!("web/n/{}", t.id)))
                    .await
            })
        })
        .collect();
    let outcomes = local
        .run_until(async move {
            let mut out = Vec::new();
            for h in handles {
                out.push(h.await.unwrap());
            }
            out
        })
        .await;
    for (i, (t, out)) in inserts.iter().zip(&outcomes).enumerate() {
        match i {
            3 => assert!(matches!(out, Err(Error::Conflict(_))), "{out:?}"),
            7 => {
                let (task, created) = out.as_ref().unwrap();
                assert!(!created);
                assert_eq!(task.id, inserts[6].id);
            }
            _ => {
                let (task, created) = out.as_ref().unwrap();
                assert!(created);
                assert_eq!(task.id, t.id);
                let mut want = vec![format!("web/n/{}", t.id)];
                if i == 6 {
                    // The second create with its key watches the first's task.
                    want.push(format!("web/n/{}", inserts[7].id));
                }
                let mut got = s.take_watchers(t.id).await.unwrap();
                got.sort();
                want.sort();
                assert_eq!(got, want);
            }
        }
    }
}

/// A batch (one statement for all its tasks) keeps every field as a task
/// created alone does, times included: a delayed task of a batch is due
/// when the same task created alone is.
async fn a_fan_out_is_spawned_in_one_go_and_again_the_same(db: &TestDb) {
    let s = db.store().await;
    executor(&s, "e1").await;
    s.create_task(&insert("k")).await.unwrap();
    let p = claim_one(&s, "e1").await.unwrap();
    let f = fence(&p);
    // Numbers 0 and 1 one at a time, then 2 … 101 in one go.
    let (c0, _) = s.spawn_child(&f, 0, &insert("k")).await.unwrap();
    let (c1, _) = s.spawn_child(&f, 1, &insert("k")).await.unwrap();
    let mut many: Vec<TaskInsert> = (0..100).map(|_| insert("k")).collect();
    many[7].input = json!({"seventh": [1, null]});
    let made = s.spawn_children(&f, 2, &many).await.unwrap();
    assert_eq!(made.len(), 100);
    for ((t, created), want) in made.iter().zip(&many) {
        assert!(created);
        assert_eq!(t.id, want.id);
        assert_eq!(t.input, want.input);
        assert_eq!((t.parent_id, t.parent_attempt), (Some(p.id), Some(1)));
        assert_eq!(t.state, TaskState::Pending);
        assert_eq!(t.created_at, want.created_at);
        // Returned as it was written, not read back: the same as stored.
        assert_eq!(t, &s.task(t.id).await.unwrap());
    }
    // The run again (after a crash): numbers 100 … 103, with fresh ids,
    // give back the two sub-tasks made the first time under 100 and 101,
    // in order, and make 102 and 103.
    let again: Vec<TaskInsert> = (0..4).map(|_| insert("k")).collect();
    let back = s.spawn_children(&f, 100, &again).await.unwrap();
    let ids: Vec<(Uuid, bool)> = back.iter().map(|(t, c)| (t.id, *c)).collect();
    assert_eq!(
        ids,
        [
            (made[98].0.id, false),
            (made[99].0.id, false),
            (again[2].id, true),
            (again[3].id, true)
        ]
    );
    let kids = s.children(p.id).await.unwrap();
    assert_eq!(kids.len(), 2 + 100 + 2);
    assert_eq!((kids[0].id, kids[1].id), (c0.id, c1.id));
    // Once another executor holds the parent (handed back, claimed again),
    // the old run spawns nothing, and the new holder does.
    s.hand_back(&f).await.unwrap();
    executor(&s, "e2").await;
    let mut again = claim(&s, "e2", 200).await;
    again.retain(|t| t.id == p.id);
    let p2 = again.pop().expect("the parent claimed again");
    let late: Vec<TaskInsert> = (0..3).map(|_| insert("k")).collect();
    assert!(matches!(
        s.spawn_children(&f, 200, &late).await,
        Err(Error::Fenced(id)) if id == p.id
    ));
    assert_eq!(s.children(p.id).await.unwrap().len(), 104);
    let made = s.spawn_children(&fence(&p2), 200, &late).await.unwrap();
    assert!(made.iter().all(|(_, created)| *created));
    assert_eq!(s.children(p.id).await.unwrap().len(), 107);
}

async fn a_batch_keeps_every_field(db: &TestDb) {
    let s = db.store().await;
    let options = TaskOptions::new()
        .queue("q")
        .priority(7)
        .delay(Duration::from_millis(300))
        .max_attempts(3)
        .backoff(Duration::from_millis(1500))
        .timeout(Duration::from_secs(9));
    let mut alone = insert_with("k", options.clone());
    alone.idempotency_key = Some("alone".into());
    alone.input = json!({"null": null, "n": [1, 2.5, "x"]});
    let mut batch: Vec<TaskInsert> = (0..3).map(|_| insert_with("k", options.clone())).collect();
    batch[0].idempotency_key = Some("batched".into());
    batch[1].input = alone.input.clone();
    batch[2].options = alone.options.clone();
    let (a, _) = s.create_task(&alone).await.unwrap();
    let made = s.create_tasks(&batch, Some("web/n/w")).await.unwrap();
    for ((t, created), want) in made.iter().zip(&batch) {
        assert!(created);
        // Returned as it was written, not read back: the same as stored.
        assert_eq!(t, &s.task(t.id).await.unwrap());
        assert_eq!(t.id, want.id);
        assert_eq!(t.idempotency_key, want.idempotency_key);
        assert_eq!(t.input, want.input);
        assert_eq!(
            (
                t.state,
                &t.queue,
                t.priority,
                t.max_attempts,
                t.backoff_ms,
                t.timeout_ms
            ),
            (
                a.state,
                &a.queue,
                a.priority,
                a.max_attempts,
                a.backoff_ms,
                a.timeout_ms
            )
        );
        assert_eq!(t.trace_id, want.trace_id);
        assert_eq!(s.take_watchers(t.id).await.unwrap(), ["web/n/w"]);
    }
    assert_eq!(made[2].0.run_at, a.run_at);
    // Due together: the batched task with the lone one's due time is
    // promoted with it, by the same text (SQLite) or time comparison.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let promoted: Vec<Uuid> = s
        .promote_due("test", 100)
        .await
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    for id in [a.id, made[0].0.id, made[1].0.id, made[2].0.id] {
        assert!(promoted.contains(&id), "{id} not promoted: {promoted:?}");
    }
    // A task's creation time is when it was asked for, the time its delay
    // counts from, however long its write waited (lone and batched).
    assert_eq!(a.created_at, alone.created_at);
    assert_eq!(
        a.run_at,
        Some(alone.created_at + chrono::Duration::milliseconds(300))
    );
    for ((t, _), want) in made.iter().zip(&batch).take(2) {
        assert_eq!(t.created_at, want.created_at);
        assert_eq!(
            t.run_at,
            Some(want.created_at + chrono::Duration::milliseconds(300))
        );
    }
    // A batch naming an idempotency key that exists gives the first task.
    let mut again: Vec<TaskInsert> = (0..2).map(|_| insert("k")).collect();
    again[1].idempotency_key = Some("batched".into());
    let made2 = s.create_tasks(&again, None).await.unwrap();
    assert!(made2[0].1 && !made2[1].1);
    assert_eq!(made2[1].0.id, made[0].0.id);
}

/// A claim returns when its task had become pending (the queue-wait
/// histogram's start): its creation for a new task, the hand-back for one
/// handed back, the promotion for one that waited for its `run_at`.
async fn a_claim_knows_how_long_its_task_waited(db: &TestDb) {
    let s = db.store().await;
    executor(&s, "e1").await;
    let (t, _) = s.create_task(&insert("k")).await.unwrap();
    assert_eq!(t.pending_since, None, "only a claim says it");
    tokio::time::sleep(Duration::from_millis(60)).await;
    let c = claim_one(&s, "e1").await.unwrap();
    assert_eq!(c.pending_since, Some(t.created_at));
    assert!(
        c.updated_at - t.created_at >= chrono::Duration::milliseconds(60),
        "{c:?}"
    );
    // Reads do not carry it: it belongs to the claim.
    assert_eq!(s.task(t.id).await.unwrap().pending_since, None);

    s.hand_back(&fence(&c)).await.unwrap();
    let back = s.task(t.id).await.unwrap();
    assert_eq!(back.state, TaskState::Pending);
    let again = claim_one(&s, "e1").await.unwrap();
    assert_eq!(again.pending_since, Some(back.updated_at));

    let later = insert_with(
        "k",
        TaskOptions::new()
            .queue("q")
            .run_at(now() + chrono::Duration::milliseconds(50)),
    );
    let (l, _) = s.create_task(&later).await.unwrap();
    assert_eq!(l.state, TaskState::Scheduled);
    tokio::time::sleep(Duration::from_millis(80)).await;
    s.promote_due("test", 1000).await.unwrap();
    let promoted = s.task(l.id).await.unwrap();
    assert_eq!(promoted.state, TaskState::Pending);
    let c = claim_one(&s, "e1").await.unwrap();
    assert_eq!(c.id, l.id);
    assert_eq!(c.pending_since, Some(promoted.updated_at));
}

/// Search by id or its start: a prefix is a range of the primary key
/// (UUIDv7 ids compare by their bytes on both databases).
async fn a_prefix_of_an_id_finds_its_tasks(db: &TestDb) {
    let s = db.store().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(s.create_task(&insert("k")).await.unwrap().0.id);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let find = |p: &str| {
        let s = s.clone();
        let p = p.to_string();
        async move {
            let mut found: Vec<Uuid> = s
                .list_tasks(&courier::TaskFilter {
                    id_prefix: Some(p.parse().unwrap()),
                    limit: 100,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_iter()
                .map(|t| t.id)
                .collect();
            found.sort();
            found
        }
    };
    // A whole id, with or without dashes, in either case.
    let a = ids[0].to_string();
    assert_eq!(find(&a).await, vec![ids[0]]);
    assert_eq!(find(&a.replace('-', "").to_uppercase()).await, vec![ids[0]]);
    // The first 8 hex digits (the creation's time, coarse): all three.
    assert_eq!(find(&a[..8]).await, ids);
    // 30 digits: one task.
    assert_eq!(find(&ids[2].simple().to_string()[..30]).await, vec![ids[2]]);
    assert!(find("ffff").await.is_empty());
    assert!("xyz".parse::<courier::IdPrefix>().is_err());
    assert!("".parse::<courier::IdPrefix>().is_err());
    assert!("0".repeat(33).parse::<courier::IdPrefix>().is_err());
}

/// The counters the triggers keep (tasks by queue and state, and tasks
/// finished a minute) agree with the tasks themselves after every kind of
/// change: creates alone and in a batch, claims, ends alone and written
/// together, a retry, cancels, retention's deletes, and a tidy.
async fn counters_agree_with_the_tasks(db: &TestDb) {
    let s = db.store().await;
    executor(&s, "e1").await;
    let agree = || {
        let s = s.clone();
        async move {
            let tasks = s
                .list_tasks(&courier::TaskFilter {
                    limit: 10_000,
                    ..Default::default()
                })
                .await
                .unwrap();
            let mut truth = std::collections::BTreeMap::new();
            for t in &tasks {
                *truth
                    .entry((t.queue.clone(), t.state.as_str()))
                    .or_insert(0i64) += 1;
            }
            let counted: std::collections::BTreeMap<_, _> = s
                .count_by_queue()
                .await
                .unwrap()
                .into_iter()
                .map(|(q, st, n)| ((q, st.as_str()), n))
                .collect();
            assert_eq!(counted, truth);
            let mut by_state = std::collections::BTreeMap::new();
            for ((_, st), n) in &truth {
                *by_state.entry(*st).or_insert(0i64) += n;
            }
            let states: std::collections::BTreeMap<_, _> = s
                .count_by_state()
                .await
                .unwrap()
                .into_iter()
                .map(|(st, n)| (st.as_str(), n))
                .collect();
            assert_eq!(states, by_state);
        }
    };
    let finished = |s: Store| async move {
        let m = s.throughput(60).await.unwrap();
        assert_eq!(m.len(), 60);
        assert!(m.windows(2).all(|w| w[1].minute == w[0].minute + 1));
        m.iter().fold((0, 0, 0), |a, m| {
            (a.0 + m.succeeded, a.1 + m.failed, a.2 + m.cancelled)
        })
    };
    agree().await;
    assert_eq!(finished(s.clone()).await, (0, 0, 0));

    let batch: Vec<TaskInsert> = (0..40).map(|_| insert("k")).collect();
    s.create_tasks(&batch, None).await.unwrap();
    for _ in 0..3 {
        let later = insert_with(
            "k",
            TaskOptions::new()
                .queue("later")
                .delay(Duration::from_secs(3600)),
        );
        s.create_task(&later).await.unwrap();
    }
    agree().await;

    let running = claim(&s, "e1", 30).await;
    agree().await;
    for t in &running[..5] {
        s.finish(&fence(t), &failed("no")).await.unwrap();
    }
    // Written together: one statement for many ends.
    for r in futures_ends(&s, &running[5..25]).await {
        r.unwrap();
    }
    // A retry waits in `scheduled`, then comes back.
    let retried = &running[25];
    s.retry_later(
        &fence(retried),
        "again",
        &[],
        now() + chrono::Duration::hours(1),
    )
    .await
    .unwrap();
    agree().await;
    let mut cancelled = 0;
    for t in s
        .list_tasks(&courier::TaskFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|t| matches!(t.state, TaskState::Pending | TaskState::Scheduled))
        .take(4)
    {
        s.cancel_unclaimed(t.id, "test").await.unwrap().unwrap();
        cancelled += 1;
    }
    agree().await;
    assert_eq!(finished(s.clone()).await, (20, 5, cancelled));
    // A failed task retried now leaves its final state's count, not its
    // minute; when it fails again, it counts in its minute again.
    let again = s.retry_now(running[0].id, "test").await.unwrap().unwrap();
    assert_eq!(again.state, TaskState::Pending);
    agree().await;
    let rerun = claim(&s, "e1", 10).await;
    let rerun = rerun.iter().find(|t| t.id == again.id).unwrap();
    s.finish(&fence(rerun), &failed("no again")).await.unwrap();
    agree().await;
    assert_eq!(finished(s.clone()).await, (20, 6, cancelled));

    // Retention's deletes take tasks out of the counts, not out of the
    // minutes they finished in.
    db.raw("UPDATE tasks SET finished_at = '2000-01-01T00:00:00Z' WHERE finished_at IS NOT NULL")
        .await;
    let keep_a_day: Retention = "succeeded=1d,failed=1d,cancelled=1d".parse().unwrap();
    let deleted = s.delete_expired(&keep_a_day, 100).await.unwrap();
    assert_eq!(deleted.iter().map(|d| d.1).sum::<u64>(), 29);
    agree().await;
    s.tidy_counts().await.unwrap();
    agree().await;
    assert_eq!(finished(s.clone()).await, (20, 6, cancelled));
    // Four hours on, the minutes leave the chart, and their tasks stay
    // counted.
    db.raw("UPDATE task_throughput SET minute = minute - 240")
        .await;
    s.tidy_counts().await.unwrap();
    agree().await;
    assert_eq!(finished(s.clone()).await, (0, 0, 0));
}

/// Inbox reads past a `seq`, several at once (one statement for all, the
/// same task asked past two places included), each answered with its own
/// task's events past its own `seq`; ranged delivery marks touch only
/// their range; the rows read are counted. A suspension looks only past
/// the `seq` its run has seen.
async fn inboxes_are_read_past_what_is_held(db: &TestDb) {
    let s = db.store().await;
    let (a, _) = s.create_task(&insert("k")).await.unwrap();
    // In a queue the claim below does not take from: it claims `a`.
    let (b, _) = s
        .create_task(&insert_with("k", TaskOptions::new().queue("other")))
        .await
        .unwrap();
    let mut seqs = Vec::new();
    for i in 0..4 {
        let (e, _) = s.add_event(a.id, "go", &json!(i)).await.unwrap();
        seqs.push(e.seq);
        s.add_event(b.id, "other", &json!(i)).await.unwrap();
    }
    let before = s.replay_reads();
    let asks = [(a.id, seqs[1]), (b.id, 0), (a.id, seqs[3]), (a.id, 0)];
    let got =
        futures_util::future::join_all(asks.iter().map(|(id, after)| s.inbox_after(*id, *after)))
            .await;
    let payloads = |r: &courier_store::Result<Vec<courier::TaskEvent>>| -> Vec<serde_json::Value> {
        r.as_ref()
            .unwrap()
            .iter()
            .map(|e| e.payload.0.clone())
            .collect()
    };
    assert_eq!(payloads(&got[0]), [json!(2), json!(3)]);
    assert_eq!(payloads(&got[1]), [0, 1, 2, 3].map(|i| json!(i)));
    assert!(got[1].as_ref().unwrap().iter().all(|e| e.task_id == b.id));
    assert!(payloads(&got[2]).is_empty());
    assert_eq!(payloads(&got[3]), [0, 1, 2, 3].map(|i| json!(i)));
    let read = s.replay_reads().inbox_rows - before.inbox_rows;
    assert!((8..=14).contains(&read), "{read} rows");

    s.mark_delivered_between(a.id, seqs[0], seqs[2])
        .await
        .unwrap();
    let marked: Vec<bool> = s
        .events(a.id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.delivered_at.is_some())
        .collect();
    assert_eq!(marked, [false, true, true, false]);

    // A run that has seen up to the second event and waits for `go` is
    // woken by the two after it; one that has seen them all suspends.
    executor(&s, "e1").await;
    let t = claim_one(&s, "e1").await.unwrap();
    let wait = |seen_seq| courier_store::Wait {
        event: Some("go".into()),
        seen_seq,
        label: "event go".into(),
        ..Default::default()
    };
    assert_eq!(t.id, a.id);
    assert_eq!(
        s.suspend(&fence(&t), &wait(seqs[1])).await.unwrap(),
        courier_store::Suspension::Woken
    );
    assert!(matches!(
        s.suspend(&fence(&t), &wait(seqs[3])).await.unwrap(),
        courier_store::Suspension::Suspended { .. }
    ));
}

/// A parent that suspends on its 400 sub-tasks while they end (their ends
/// group-committed in flushes, submitted highest id first) is woken once
/// the last of them has ended, and no write fails: the suspension's count
/// and the flushes' batched decrements (`wake_parents!`) agree whatever
/// the interleaving. (The deadlock the shared lock order prevents needs
/// the mark and a flush to overlap for milliseconds, which this does not
/// force; the fan-out figures in BENCHMARKS.md show it gone.)
async fn a_parent_suspending_as_its_sub_tasks_end_wakes_once_they_all_have(db: &TestDb) {
    let s = db.store().await;
    executor(&s, "e1").await;
    s.create_task(&insert("k")).await.unwrap();
    let p = claim_one(&s, "e1").await.unwrap();
    let many: Vec<TaskInsert> = (0..400).map(|_| insert("k")).collect();
    s.spawn_children(&fence(&p), 0, &many).await.unwrap();
    let mut children = claim(&s, "e1", 400).await;
    assert_eq!(children.len(), 400);
    let wait = courier_store::Wait {
        children: children.iter().map(|c| c.id).collect(),
        label: "400 sub-tasks".into(),
        ..Default::default()
    };
    children.sort_by_key(|t| std::cmp::Reverse(t.id));
    let local = tokio::task::LocalSet::new();
    let parked = {
        let (s, f) = (s.clone(), fence(&p));
        local.spawn_local(async move { s.suspend(&f, &wait).await })
    };
    let ends: Vec<_> = children
        .iter()
        .map(|c| {
            let (s, f) = (s.clone(), fence(c));
            local.spawn_local(async move { s.finish_run(&f, &Outcome::Succeeded(json!(1))).await })
        })
        .collect();
    let (parked, ends) = local
        .run_until(async move {
            let parked = parked.await.unwrap();
            let mut out = Vec::new();
            for e in ends {
                out.push(e.await.unwrap());
            }
            (parked, out)
        })
        .await;
    for e in &ends {
        assert!(e.is_ok(), "{e:?}");
    }
    match parked.unwrap() {
        courier_store::Suspension::Suspended { .. } => {
            assert_eq!(s.task(p.id).await.unwrap().state, TaskState::Pending);
        }
        courier_store::Suspension::Woken => {}
    }
}

/// A parent suspending while its sub-tasks end, again and again: however
/// the two interleave, the parent wakes (or finds them ended as it
/// suspends). The suspension writes its awaited set under the parent's
/// row lock, and an end takes the parent's lock before it looks at that
/// set; without that lock an end could miss an awaited set still being
/// written while the suspension counted the sub-task as open, and the
/// parent would sleep forever (on PostgreSQL; SQLite's writes are serial).
async fn no_wake_is_lost_between_a_suspension_and_its_sub_tasks_ends(db: &TestDb) {
    let s = db.store().await;
    executor(&s, "e1").await;
    for round in 0..60 {
        s.create_task(&insert("k")).await.unwrap();
        let p = claim_one(&s, "e1").await.unwrap();
        let many: Vec<TaskInsert> = (0..3).map(|_| insert("k")).collect();
        s.spawn_children(&fence(&p), 0, &many).await.unwrap();
        let children = claim(&s, "e1", 3).await;
        assert_eq!(children.len(), 3);
        let wait = courier_store::Wait {
            children: children.iter().map(|c| c.id).collect(),
            label: "3 sub-tasks".into(),
            ..Default::default()
        };
        let ends = children.iter().map(|c| {
            let (s, f) = (s.clone(), fence(c));
            async move { s.finish_run(&f, &Outcome::Succeeded(json!(1))).await }
        });
        let pf = fence(&p);
        let (parked, ends) =
            tokio::join!(s.suspend(&pf, &wait), futures_util::future::join_all(ends));
        for e in &ends {
            assert!(e.is_ok(), "{e:?}");
        }
        // The parent done with, for the next round's claims: it runs on
        // (woken as it suspended), or it waits to be claimed again.
        let held = match parked.unwrap() {
            courier_store::Suspension::Suspended { .. } => {
                assert_eq!(
                    s.task(p.id).await.unwrap().state,
                    TaskState::Pending,
                    "round {round}: the parent slept on after its sub-tasks ended"
                );
                claim_one(&s, "e1").await.unwrap()
            }
            courier_store::Suspension::Woken => p,
        };
        s.finish_run(&fence(&held), &Outcome::Succeeded(json!(0)))
            .await
            .unwrap();
    }
}

/// A parent that waited for one sub-task and gave up (its timer came) and
/// then waits for another wakes when that one ends: a new suspension's
/// awaited set replaces the earlier one's.
async fn a_new_wait_replaces_the_sub_tasks_an_earlier_one_awaited(db: &TestDb) {
    let s = db.store().await;
    executor(&s, "e1").await;
    s.create_task(&insert("k")).await.unwrap();
    let p = claim_one(&s, "e1").await.unwrap();
    let two: Vec<TaskInsert> = (0..2).map(|_| insert("k")).collect();
    s.spawn_children(&fence(&p), 0, &two).await.unwrap();
    let (slow, quick) = (two[0].id, two[1].id);
    let first = courier_store::Wait {
        children: vec![slow],
        until: Some(now() + chrono::Duration::milliseconds(20)),
        ..Default::default()
    };
    let parked = s.suspend(&fence(&p), &first).await.unwrap();
    assert!(
        matches!(parked, courier_store::Suspension::Suspended { .. }),
        "{parked:?}"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(s.promote_due("test", 10).await.unwrap().len(), 1);
    // The parent again, and both sub-tasks.
    let held = claim(&s, "e1", 3).await;
    let p = held.iter().find(|t| t.id == p.id).unwrap();
    let second = courier_store::Wait {
        children: vec![quick],
        ..Default::default()
    };
    let parked = s.suspend(&fence(p), &second).await.unwrap();
    assert!(
        matches!(parked, courier_store::Suspension::Suspended { .. }),
        "{parked:?}"
    );
    let q = held
        .iter()
        .find(|t| t.id == quick)
        .expect("the quick sub-task claimed");
    let ended = s
        .finish_run(&fence(q), &Outcome::Succeeded(json!(1)))
        .await
        .unwrap();
    assert_eq!(
        ended.woken.map(|t| t.id),
        Some(p.id),
        "woken by the sub-task it waits for now"
    );
    assert!(
        !s.task(slow).await.unwrap().state.is_final(),
        "the sub-task no longer awaited is still open"
    );
}

/// A task woken from a suspension is still marked to resume; cancelled
/// before its claim and retried now, its next claim is a new attempt (one
/// more, no old deadline), not a replay of the suspended one.
async fn a_retry_now_is_a_new_attempt_even_after_a_suspension(db: &TestDb) {
    let s = db.store().await;
    executor(&s, "e1").await;
    s.create_task(&insert("k")).await.unwrap();
    let t = claim_one(&s, "e1").await.unwrap();
    assert_eq!(t.attempts, 1);
    let wait = courier_store::Wait {
        until: Some(now() + chrono::Duration::milliseconds(50)),
        timeout_at: Some(now() + chrono::Duration::milliseconds(60)),
        ..Default::default()
    };
    let parked = s.suspend(&fence(&t), &wait).await.unwrap();
    assert!(
        matches!(parked, courier_store::Suspension::Suspended { .. }),
        "{parked:?}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let woken = s.promote_due("test", 10).await.unwrap();
    assert_eq!(woken.len(), 1);
    s.cancel_unclaimed(t.id, "test").await.unwrap().unwrap();
    let again = s.retry_now(t.id, "test").await.unwrap().unwrap();
    assert_eq!(again.state, TaskState::Pending);
    let rerun = claim_one(&s, "e1").await.unwrap();
    assert_eq!(rerun.id, t.id);
    assert_eq!(rerun.attempts, 2, "a new attempt, not a replay");
    assert_eq!(
        rerun.timeout_at, None,
        "the suspended run's deadline is gone"
    );
}

/// A create that its executor starts at once (issue 24, point 6) is
/// claimed in its own insert, and only where a claim could take it.
async fn a_create_can_start_at_once_where_a_claim_would(db: &TestDb) {
    let s = db.store().await;
    executor(&s, "e1").await;
    let lines = |s: Store, id: Uuid| async move {
        s.history(id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.from_state, e.to_state, e.changed_by, e.owner, e.attempt))
            .collect::<Vec<_>>()
    };
    let started = |t: &Task| (t.state, t.executor_id.clone(), t.epoch, t.attempts);

    // Started: held by e1 as a claim would hold it, its watcher registered,
    // its history the two steps a create and a claim write.
    let (t, created) = s
        .create_task_started(&insert("k"), Some("web/n/s1"), "e1")
        .await
        .unwrap();
    assert!(created);
    assert_eq!(started(&t), (TaskState::Running, Some("e1".into()), 1, 1));
    assert_eq!(t.started_at, Some(t.created_at));
    assert_eq!(t.pending_since, Some(t.created_at), "it waited for nothing");
    assert_eq!(s.task(t.id).await.unwrap().state, TaskState::Running);
    assert_eq!(
        lines(s.clone(), t.id).await,
        [
            (None, "pending".into(), Some("test".into()), None, 0),
            (
                Some("pending".into()),
                "running".into(),
                Some("e1".into()),
                None,
                1
            ),
        ]
    );
    let counted: Vec<_> = s.count_by_state().await.unwrap();
    assert_eq!(counted, [(TaskState::Running, 1)]);
    assert!(claim_one(&s, "e1").await.is_none(), "nothing left to claim");
    let (done, watchers) = s
        .finish(&fence(&t), &Outcome::Succeeded(json!(1)))
        .await
        .unwrap();
    assert_eq!(done.state, TaskState::Succeeded);
    assert_eq!(watchers, ["web/n/s1"]);

    // Work pending ahead in the queue (as high a priority): created
    // pending, as a claim would take the older task first.
    let (older, _) = s.create_task(&insert("k")).await.unwrap();
    let (t, _) = s
        .create_task_started(&insert("k"), Some("web/n/s2"), "e1")
        .await
        .unwrap();
    assert_eq!(started(&t), (TaskState::Pending, None, 0, 0));
    assert_eq!(
        lines(s.clone(), t.id).await,
        [(None, "pending".into(), Some("test".into()), None, 0)]
    );
    // ... but a higher priority goes first.
    let (urgent, _) = s
        .create_task_started(
            &insert_with("k", TaskOptions::new().queue("q").priority(5)),
            None,
            "e1",
        )
        .await
        .unwrap();
    assert_eq!(urgent.state, TaskState::Running);
    let claimed: Vec<Uuid> = claim(&s, "e1", 10).await.iter().map(|t| t.id).collect();
    assert_eq!(claimed, [older.id, t.id]);

    // A queue with a limit, or paused: pending, for the claim to judge.
    for update in [
        QueueUpdate {
            concurrency: Some(Some(8)),
            ..Default::default()
        },
        QueueUpdate {
            concurrency: Some(None),
            paused: Some(true),
            ..Default::default()
        },
    ] {
        s.update_queue("q", &update).await.unwrap();
        let (t, _) = s
            .create_task_started(&insert("k"), None, "e1")
            .await
            .unwrap();
        assert_eq!(t.state, TaskState::Pending, "{update:?}");
        s.cancel_unclaimed(t.id, "test").await.unwrap().unwrap();
    }
    s.update_queue(
        "q",
        &QueueUpdate {
            paused: Some(false),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    // An executor that is not alive starts nothing.
    s.stop_executor("e1").await.unwrap();
    let (t, _) = s
        .create_task_started(&insert("k"), None, "e1")
        .await
        .unwrap();
    assert_eq!(t.state, TaskState::Pending);
    let (t, _) = s
        .create_task_started(&insert("k"), None, "nobody")
        .await
        .unwrap();
    assert_eq!(t.state, TaskState::Pending);

    // Delayed tasks and keyed ones are created as usual.
    executor(&s, "e2").await;
    let delayed = insert_with(
        "k",
        TaskOptions::new()
            .queue("q2")
            .delay(Duration::from_secs(60)),
    );
    let (t, _) = s.create_task_started(&delayed, None, "e2").await.unwrap();
    assert_eq!(t.state, TaskState::Scheduled);
    let mut keyed = insert_with("k", TaskOptions::new().queue("q2"));
    keyed.idempotency_key = Some("once".into());
    let (t, created) = s.create_task_started(&keyed, None, "e2").await.unwrap();
    assert_eq!((t.state, created), (TaskState::Pending, true));
}

on_both_databases!(
    a_create_can_start_at_once_where_a_claim_would,
    a_parent_suspending_as_its_sub_tasks_end_wakes_once_they_all_have,
    no_wake_is_lost_between_a_suspension_and_its_sub_tasks_ends,
    a_new_wait_replaces_the_sub_tasks_an_earlier_one_awaited,
    inboxes_are_read_past_what_is_held,
    a_retry_now_is_a_new_attempt_even_after_a_suspension,
    counters_agree_with_the_tasks,
    a_prefix_of_an_id_finds_its_tasks,
    a_claim_knows_how_long_its_task_waited,
    a_fan_out_is_spawned_in_one_go_and_again_the_same,
    a_batch_keeps_every_field,
    large_batches_keep_one_history_line_a_change,
    creates_written_together_keep_their_own_outcomes,
    ends_written_together_keep_their_own_fences,
    pulls_never_claim_more_than_asked,
    claims_are_conditional_and_fenced,
    spawning_and_idempotency_keys_are_idempotent,
    events_and_watchers,
    priority_then_age_decides_who_starts,
    a_concurrency_limit_holds_across_executors,
    pauses_and_rate_limits_hold_at_the_claim,
    timers_and_retries_live_in_the_database,
    a_batch_is_all_or_nothing,
    retention_deletes_whole_finished_trees,
);
