//! Schedules against the store, on SQLite and PostgreSQL: what each
//! `catch_up` policy creates after downtime, firing raced by several
//! processes at once (one task per slot, whoever wins), and the checks that
//! refuse a bad schedule.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DurationRound, TimeDelta};
use common::TestDb;
use courier::actors::now;
use courier::actors::schedule::fire_due;
use courier::{CatchUp, Error, ScheduleSpec, TaskOptions};
use serde_json::json;

fn kinds() -> courier::actors::creation::LocalKinds {
    Arc::new(BTreeMap::from([(
        "demo.echo".to_string(),
        TaskOptions::default(),
    )]))
}

/// Five processes firing what is due at once.
fn five_firers(store: &courier::Store) -> Vec<tokio::task::JoinHandle<Vec<courier::Task>>> {
    (0..5)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                fire_due(&store, &kinds(), &format!("racer-{i}"))
                    .await
                    .unwrap()
                    .0
            })
        })
        .collect()
}

/// How many slot tasks `tasks` holds, failing if a slot made two.
fn one_task_per_slot(tasks: &[courier::Task]) -> usize {
    let mut keys: Vec<_> = tasks
        .iter()
        .map(|t| t.idempotency_key.clone().unwrap())
        .collect();
    keys.sort();
    let n = keys.len();
    keys.dedup();
    assert_eq!(keys.len(), n, "a slot made two tasks: {keys:?}");
    n
}

/// A schedule every minute, whose processes were all down for ten minutes:
/// its `next_run_at` is ten minutes back. The slot of this minute is on
/// time and always makes its task; the ten missed ones make none (`skip`),
/// one (`one`) or one each (`all`).
async fn catch_up_after_downtime(db: &TestDb) {
    let store = db.store().await;
    let minute = now().duration_trunc(TimeDelta::minutes(1)).unwrap();
    let down_since = minute - TimeDelta::minutes(10);
    for policy in [CatchUp::Skip, CatchUp::One, CatchUp::All] {
        let name = format!("every-minute-{}", policy.as_str());
        let spec = ScheduleSpec::new("* * * * *", "demo.echo", json!(null)).catch_up(policy);
        store
            .put_schedule(&name, &spec, Some(down_since))
            .await
            .unwrap();
    }
    // Just past a minute's end, this minute's slot may not have been due
    // when `minute` was read; fire until nothing is due.
    let mut created = Vec::new();
    loop {
        let (tasks, _) = fire_due(&store, &kinds(), "test").await.unwrap();
        if tasks.is_empty() {
            break;
        }
        created.extend(tasks);
    }
    for (policy, expected) in [(CatchUp::Skip, 1), (CatchUp::One, 2), (CatchUp::All, 11)] {
        let name = format!("every-minute-{}", policy.as_str());
        let mine: Vec<_> = created
            .iter()
            .filter(|t| t.schedule.as_deref() == Some(name.as_str()))
            .collect();
        let late_minute = now().duration_trunc(TimeDelta::minutes(1)).unwrap() != minute;
        assert!(
            mine.len() == expected || (late_minute && mine.len() == expected + 1),
            "{name}: {} tasks",
            mine.len()
        );
        let s = store.schedule(&name).await.unwrap();
        assert!(s.next_run_at.unwrap() > now(), "advanced past now");
        assert_eq!(s.last_task_id, Some(mine.last().unwrap().id));
    }
}

/// Five processes fire the same due schedule at once: each slot makes
/// exactly one task.
async fn racing_processes_make_one_task_per_slot(db: &TestDb) {
    let store = db.store().await;
    let spec = ScheduleSpec::new("*/10 * * * * *", "demo.echo", json!(1)).catch_up(CatchUp::All);
    let from = now().duration_trunc(TimeDelta::seconds(10)).unwrap() - TimeDelta::minutes(2);
    store
        .put_schedule("raced", &spec, Some(from))
        .await
        .unwrap();
    let mut all = Vec::new();
    for r in five_firers(&store) {
        all.extend(r.await.unwrap());
    }
    let n = one_task_per_slot(&all);
    // Two minutes of slots every 10 s, plus this one: 13 (14 if the clock
    // crossed a slot meanwhile).
    assert!((13..=14).contains(&n), "{n} tasks");
}

/// Bad schedules are refused with the field at fault.
async fn bad_schedules_are_refused(db: &TestDb) {
    let rt = db.cluster(common::Via::Local, |b| b).await;
    let c = rt.client();
    let field = |r: courier::Result<(courier::Schedule, bool)>| match r {
        Err(Error::InvalidField { field, message }) => (field, message),
        Err(Error::UnknownKind(k)) => ("kind".to_string(), k),
        other => panic!("expected a refusal, got {other:?}"),
    };
    let ok = ScheduleSpec::new("0 3 * * *", "demo.echo", json!(null));
    let cases = [
        (
            "nightly",
            ScheduleSpec {
                cron: "0 25 * * *".into(),
                ..ok.clone()
            },
            "cron",
        ),
        (
            "nightly",
            ScheduleSpec {
                cron: "* * * *".into(),
                ..ok.clone()
            },
            "cron",
        ),
        (
            "nightly",
            ScheduleSpec {
                kind: "no.such.kind".into(),
                ..ok.clone()
            },
            "kind",
        ),
        (
            "nightly",
            ScheduleSpec {
                options: TaskOptions::new().run_at(now()),
                ..ok.clone()
            },
            "run_at",
        ),
        (
            "nightly",
            ScheduleSpec {
                options: TaskOptions::new().priority(1000),
                ..ok.clone()
            },
            "priority",
        ),
        ("Not A Name", ok.clone(), "name"),
        (
            "nightly",
            ScheduleSpec {
                // The 30th of February: no slot, ever.
                cron: "0 0 30 2 *".into(),
                ..ok.clone()
            },
            "cron",
        ),
        (
            "nightly",
            ScheduleSpec {
                input: json!({"a": "x\u{0}y"}),
                ..ok.clone()
            },
            "input",
        ),
    ];
    for (name, spec, expected) in cases {
        let (f, message) = field(c.put_schedule(name, &spec).await);
        assert_eq!(f, expected, "{message}");
    }
    assert!(c.schedules().await.unwrap().is_empty(), "nothing was saved");
    rt.shutdown().await;
}

/// Clients that send the keys a schedule's slots used to be kept unique by
/// (`schedule:<name>:<slot>`), before and while processes fire it: every
/// slot still makes its task, and every client gets its own.
async fn clients_cannot_take_a_slot(db: &TestDb) {
    let rt = db.cluster(common::Via::Local, |b| b).await;
    let c = rt.client();
    let store = db.store().await;
    let spec = ScheduleSpec::new("*/10 * * * * *", "demo.echo", json!(1)).catch_up(CatchUp::All);
    let from = now().duration_trunc(TimeDelta::seconds(10)).unwrap() - TimeDelta::minutes(2);
    let slots: Vec<_> = (0..16).map(|i| from + TimeDelta::seconds(10 * i)).collect();
    let key = |slot| courier::actors::schedule::slot_key("taken", slot);
    // Half the slots' keys taken before the schedule exists…
    for slot in slots.iter().step_by(2) {
        let s = c
            .submit(courier::NewTask::new("demo.echo", json!("client")).idempotency_key(key(*slot)))
            .await
            .unwrap();
        assert!(s.created);
    }
    store
        .put_schedule("taken", &spec, Some(from))
        .await
        .unwrap();
    // …and the other half raced against five firing processes.
    let mut racers = Vec::new();
    for slot in slots.iter().skip(1).step_by(2) {
        let c = c.clone();
        let k = key(*slot);
        racers.push(tokio::spawn(async move {
            let s = c
                .submit(courier::NewTask::new("demo.echo", json!("client")).idempotency_key(k))
                .await
                .unwrap();
            assert!(s.created, "a client key was answered with another task");
            Vec::new()
        }));
    }
    racers.extend(five_firers(&store));
    let mut fired = Vec::new();
    for r in racers {
        fired.extend(r.await.unwrap());
    }
    let n = one_task_per_slot(&fired);
    // Two minutes of slots every 10 s, plus this one: 13 (14 if the clock
    // crossed a slot meanwhile), however many keys clients took.
    assert!((13..=14).contains(&n), "{n} slot tasks");
    let mine = store
        .list_tasks(&courier::TaskFilter {
            schedule: Some("taken".into()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(mine.len(), n);
    rt.shutdown().await;
}

on_both_databases!(
    clients_cannot_take_a_slot,
    catch_up_after_downtime,
    racing_processes_make_one_task_per_slot,
    bad_schedules_are_refused,
);
