//! The store's guarantees, on SQLite and PostgreSQL: conditional claims,
//! fencing, trigger-written history, idempotent spawning, one winner when
//! declaring an executor dead.

mod common;

use common::TestDb;
use courier::actors::store::{ExecutorRegistration, Fence, Outcome, TaskInsert};
use courier::{Error, Store, TaskState};
use serde_json::json;
use uuid::Uuid;

fn insert(kind: &str) -> TaskInsert {
    TaskInsert {
        id: Uuid::now_v7(),
        kind: kind.into(),
        input: json!({"k": kind}),
        idempotency_key: None,
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        created_by: "test".into(),
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
            kinds: vec!["k".into()],
            capacity: 4,
        })
        .await
        .unwrap();
}

fn fence(t: &courier::Task) -> Fence {
    Fence {
        task_id: t.id,
        executor_id: t.executor_id.clone().unwrap(),
        epoch: t.epoch,
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
        claims.push(tokio::spawn(async move {
            s.claim(t.id, "k", who).await.unwrap()
        }));
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
    let released = s.release_orphans(other, 5).await.unwrap();
    assert_eq!(released.len(), 1);
    // A dead executor cannot claim.
    assert!(s.claim(t.id, "k", &owner).await.unwrap().is_none());
    let second = s.claim(t.id, "k", other).await.unwrap().unwrap();
    assert_eq!((second.attempts, second.epoch), (2, 2));

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
    assert!(matches!(s.hand_back(&old).await, Err(Error::Fenced(_))));
    assert!(
        !s.heartbeat(&owner, 0).await.unwrap(),
        "a dead executor's heartbeat says so"
    );

    // A task left with an executor that stopped (a claim that committed as
    // it stopped) is an orphan: the next sweep puts it back.
    executor(&s, "e3").await;
    let (t3, _) = s.create_task(&insert("k")).await.unwrap();
    s.claim(t3.id, "k", "e3").await.unwrap().unwrap();
    s.stop_executor("e3").await.unwrap();
    let orphans = s.release_orphans(other, 5).await.unwrap();
    assert_eq!(orphans.iter().map(|t| t.id).collect::<Vec<_>>(), [t3.id]);
    assert!(
        s.claim(t.id, "other-kind", other).await.unwrap().is_none(),
        "the kind must match"
    );

    // A task whose executor dies every time it runs is failed at the limit.
    let (p, _) = s.create_task(&insert("k")).await.unwrap();
    for (i, e) in ["p1", "p2"].into_iter().enumerate() {
        executor(&s, e).await;
        s.claim(p.id, "k", e).await.unwrap().unwrap();
        assert!(s.declare_dead(e, other).await.unwrap());
        let back = s.release_orphans(other, 2).await.unwrap();
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
    let (done, watchers) = s
        .finish(&cur, &Outcome::Failed("boom".into()))
        .await
        .unwrap();
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

    // Every change is in the history, with who made it and who held the
    // task before: the takeover line names the dead owner and the taker.
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
            (Some("pending"), "running", Some(other), None, 2),
            (Some("running"), "suspended", Some(other), Some(other), 2),
            (Some("suspended"), "failed", Some(other), Some(other), 2),
        ]
    );
}

async fn spawning_and_idempotency_keys_are_idempotent(db: &TestDb) {
    let s = db.store().await;
    executor(&s, "e1").await;
    let (p, _) = s.create_task(&insert("k")).await.unwrap();
    let p = s.claim(p.id, "k", "e1").await.unwrap().unwrap();
    let f = fence(&p);
    let (c0, created) = s.spawn_child(&f, 0, &insert("k")).await.unwrap();
    assert!(created);
    assert_eq!(c0.parent_id, Some(p.id));
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
    let e1 = s.add_event(t.id, "a", &json!({"x": 1})).await.unwrap();
    let e2 = s.add_event(t.id, "b", &json!([1, 2])).await.unwrap();
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

    let cancelled = s.cancel_pending(t.id, "test").await.unwrap().unwrap();
    assert_eq!(cancelled.state, TaskState::Cancelled);
    assert!(s.cancel_pending(t.id, "test").await.unwrap().is_none());
    let counts = s.count_by_state().await.unwrap();
    assert_eq!(counts, [(TaskState::Cancelled, 1)]);
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
                    .claim_pending(e, &["j".into(), "k".into()], 3)
                    .await
                    .unwrap();
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

on_both_databases!(
    pulls_never_claim_more_than_asked,
    claims_are_conditional_and_fenced,
    spawning_and_idempotency_keys_are_idempotent,
    events_and_watchers,
);
