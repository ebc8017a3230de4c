//! Replays in linear time: a task of k rounds, each a journaled step and a
//! wait for an event, woken by k events — with the executor's replay cache
//! off (every replay reads the whole journal and inbox: the code before
//! it) and on, interleaved in the same run, on SQLite and PostgreSQL.
//!
//! ```text
//! cargo bench --bench replay                        # both databases, k = 10, 100, 1000
//! BENCH_DB=sqlite BENCH_KS=10,100 BENCH_REPS=5 cargo bench --bench replay
//! BENCH_CACHE=on cargo bench --bench replay         # one mode only (off, on)
//! ```
//!
//! `bench.rounds` with `{"k": k}` loops k times: `ctx.step("s{i}")` (a
//! journal write the first time, a replay after), then
//! `ctx.wait_event("go")`, which suspends the task (it leaves memory) until
//! the next event. The bench sends the events **one after another**: each
//! only once the task is suspended again (seen through a `TaskWatch`), so
//! the task is woken k times and replayed k times, run j replaying j steps
//! and j events. Timed from the submit to the finish; a wake is timed from
//! its event's send to the next suspension (the last to the finish).
//!
//! Reported per database, k and mode, over `BENCH_REPS` rounds (default
//! 3): total seconds and ms per wake (median, min–max); journal and inbox
//! rows read per wake (`Store::replay_reads`); and the median wake of the
//! last tenth of the wakes ÷ that of the second tenth, which stays near 1
//! when a wake costs the same however many came before it and grows with
//! k when it does not; and, for the rounds of the second and the last
//! tenth, how long a run took from its start to its round's new step (its
//! replay of the rounds before, in memory, plus the journal's read when
//! it reads one): the O(k) that stays. One runtime per mode and round
//! (default executor, the replay cache's default bounds when on), warmed
//! up by a task of 3 rounds, on a fresh database per database kind; the
//! modes alternate within each round, in turn first.

mod support;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use courier::actors::ReplayCacheConfig;
use courier::actors::TaskWatch;
use courier::{Client, ExecutorConfig, NewTask, Runtime, Task, TaskContext, TaskError, TaskState};
use serde_json::{json, Value};
use support::{dbs_from_env, drop_schemas, env_usize, log_from_env, median, pg_url, target};

/// For each round's new step, how long its run took to get there: the
/// replay of the rounds before it (the journal's read included, when the
/// run reads it). One task runs at a time.
static REPLAYS: Mutex<Vec<Duration>> = Mutex::new(Vec::new());

/// k rounds of a journaled step and a wait for `go`; returns the sums of
/// the steps' outputs and the events' payloads.
async fn rounds(ctx: TaskContext) -> Result<Value, TaskError> {
    let started = Instant::now();
    let k = ctx.input()["k"].as_u64().unwrap_or(0);
    let (mut steps, mut events) = (0, 0);
    for i in 0..k {
        steps += ctx
            .step(&format!("s{i}"), async {
                // Runs once, in the run that replayed rounds 0..i first.
                REPLAYS.lock().unwrap().push(started.elapsed());
                Ok(i)
            })
            .await?;
        events += ctx.wait_event("go").await?.as_u64().unwrap_or(0);
    }
    Ok(json!({"steps": steps, "events": events}))
}

/// One task of `k` rounds, to its end.
struct Sample {
    total: Duration,
    wakes: Vec<Duration>,
    /// Per round, its run's time from its start to the round's new step.
    replays: Vec<Duration>,
    journal_rows: u64,
    inbox_rows: u64,
}

async fn one_task(rt: &Runtime, k: u64) -> Sample {
    let c = &rt.client();
    let before = rt.store().replay_reads();
    REPLAYS.lock().unwrap().clear();
    let t0 = Instant::now();
    let t = c
        .submit(NewTask::new("bench.rounds", json!({"k": k})))
        .await
        .unwrap()
        .task;
    // The watch is opened once the task has suspended the first time: on
    // PostgreSQL a watcher's transaction locks the task's row, and a claim
    // that meets it skips the task (`SKIP LOCKED`) until the next sweep.
    let first = loop {
        let now = c.get(t.id).await.unwrap();
        if now.state == TaskState::Suspended {
            break now;
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    };
    let mut watch = c.watch(t.id).await.unwrap();
    let mut last_suspension = None;
    let mut first = Some(first);
    let mut wakes = Vec::with_capacity(k as usize);
    let mut sent = Instant::now();
    for i in 0..k {
        // Until the task is suspended once more.
        loop {
            let now = next_state(c, t.id, &mut watch, &mut first).await;
            assert!(!now.state.is_final(), "ended early: {now:?}");
            if now.state == TaskState::Suspended && last_suspension != Some(now.updated_at) {
                last_suspension = Some(now.updated_at);
                break;
            }
        }
        if i > 0 {
            wakes.push(sent.elapsed());
        }
        sent = Instant::now();
        c.send_event(t.id, "go", json!(i)).await.unwrap();
    }
    // The end, from the same watch (a wait would add a watcher's
    // transaction, racing the last claim as above).
    let done = loop {
        let now = next_state(c, t.id, &mut watch, &mut first).await;
        if now.state.is_final() {
            break now;
        }
    };
    wakes.push(sent.elapsed());
    let total = t0.elapsed();
    assert!(done.state == TaskState::Succeeded, "{done:?}");
    let sum = k * k.saturating_sub(1) / 2;
    assert_eq!(done.output, Some(json!({"steps": sum, "events": sum})));
    let after = rt.store().replay_reads();
    Sample {
        total,
        wakes,
        replays: std::mem::take(&mut *REPLAYS.lock().unwrap()),
        journal_rows: after.journal_rows - before.journal_rows,
        inbox_rows: after.inbox_rows - before.inbox_rows,
    }
}

/// The task's next state: `first` if not taken yet, else the next change
/// the watch reports (or, should a change be missed, the store's).
async fn next_state(
    c: &Client,
    id: uuid::Uuid,
    watch: &mut TaskWatch,
    first: &mut Option<Task>,
) -> Task {
    if let Some(t) = first.take() {
        return t;
    }
    match tokio::time::timeout(Duration::from_secs(1), watch.next()).await {
        Ok(Some(now)) => now,
        Ok(None) => panic!("the watch ended"),
        Err(_) => c.get(id).await.unwrap(),
    }
}

/// The median wake of the last tenth ÷ that of the second tenth (the
/// first is left out: its wakes pay for the new runtime's connections).
fn drift(wakes: &[Duration]) -> f64 {
    let n = (wakes.len() / 10).max(1);
    let med = |w: &[Duration]| median(&w.iter().map(Duration::as_secs_f64).collect::<Vec<_>>());
    med(&wakes[wakes.len() - n..]) / med(&wakes[n.min(wakes.len() - 1)..(2 * n).min(wakes.len())])
}

/// The median of the second tenth of `v` and of its last tenth, in µs.
fn tenths_us(v: &[Duration]) -> (f64, f64) {
    let n = (v.len() / 10).max(1);
    let med = |w: &[Duration]| median(&w.iter().map(|d| d.as_secs_f64() * 1e6).collect::<Vec<_>>());
    (
        med(&v[n.min(v.len() - 1)..(2 * n).min(v.len())]),
        med(&v[v.len() - n..]),
    )
}

fn spread(v: &[f64], fmt: impl Fn(f64) -> String) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{} ({}–{})", fmt(median(v)), fmt(min), fmt(max))
}

fn main() {
    log_from_env();
    let reps = env_usize("BENCH_REPS", 3);
    let ks: Vec<u64> = std::env::var("BENCH_KS")
        .unwrap_or_else(|_| "10,100,1000".into())
        .split(',')
        .filter_map(|k| k.trim().parse().ok())
        .collect();
    let modes: Vec<(&str, ReplayCacheConfig)> = match std::env::var("BENCH_CACHE").as_deref() {
        Ok("on") => vec![("on", ReplayCacheConfig::default())],
        Ok("off") => vec![("off", ReplayCacheConfig::OFF)],
        _ => vec![
            ("off", ReplayCacheConfig::OFF),
            ("on", ReplayCacheConfig::default()),
        ],
    };
    let mut out = format!(
        "### A task of k rounds (step, then wait for an event) woken by k events, one after another \
         ({reps} rounds each; median (min–max))\n\n\
         | database | k | replay cache | total, s | per wake, ms | journal rows read / wake | inbox rows read / wake | last tenth's wake ÷ second tenth's | run's start → its new step, µs: second tenth → last tenth |\n\
         |---|---|---|---|---|---|---|---|---|\n"
    );
    let mut ratios = String::new();
    actix::System::new().block_on(async {
        let mut schemas = Vec::new();
        for db in dbs_from_env() {
            let t = target(&db, &mut schemas).await;
            for &k in &ks {
                let mut samples: Vec<Vec<Sample>> = modes.iter().map(|_| Vec::new()).collect();
                // Rounds interleave the modes, each round in the other
                // order, so drift (the tables growing, the machine warming,
                // other work on it) falls on both alike.
                for round in 0..reps {
                    let mut order: Vec<usize> = (0..modes.len()).collect();
                    if round % 2 == 1 {
                        order.reverse();
                    }
                    for m in order {
                        let (mode, cache) = &modes[m];
                        let rt = Runtime::builder()
                            .database(t.url.clone())
                            .store_options(t.options.clone())
                            .register("bench.rounds", rounds)
                            .executor(ExecutorConfig {
                                replay_cache: *cache,
                                ..ExecutorConfig::default()
                            })
                            .start()
                            .await
                            .unwrap();
                        // A warm-up task first: the runtime's connections
                        // and statements are ready before the measured one.
                        one_task(&rt, 3).await;
                        let s = one_task(&rt, k).await;
                        let (early, late) = tenths_us(&s.replays);
                        eprintln!(
                            "{db} k={k} cache {mode} round {round}: {:.3} s, {:.2} ms/wake, {} journal + {} inbox rows, drift {:.2}, replay {early:.0} -> {late:.0} us",
                            s.total.as_secs_f64(),
                            s.total.as_secs_f64() * 1e3 / k as f64,
                            s.journal_rows,
                            s.inbox_rows,
                            drift(&s.wakes)
                        );
                        rt.shutdown().await;
                        samples[m].push(s);
                    }
                }
                let mut totals = Vec::new();
                for ((mode, _), s) in modes.iter().zip(&samples) {
                    let total: Vec<f64> = s.iter().map(|s| s.total.as_secs_f64()).collect();
                    let per: Vec<f64> = total.iter().map(|t| t * 1e3 / k as f64).collect();
                    let per_wake = |rows: u64| rows as f64 / k as f64;
                    let journal: Vec<f64> = s.iter().map(|s| per_wake(s.journal_rows)).collect();
                    let inbox: Vec<f64> = s.iter().map(|s| per_wake(s.inbox_rows)).collect();
                    let drifts: Vec<f64> = s.iter().map(|s| drift(&s.wakes)).collect();
                    let early: Vec<f64> = s.iter().map(|s| tenths_us(&s.replays).0).collect();
                    let late: Vec<f64> = s.iter().map(|s| tenths_us(&s.replays).1).collect();
                    out += &format!(
                        "| {} | {k} | {mode} | {} | {} | {:.1} | {:.1} | {} | {:.0} → {:.0} |\n",
                        t.label,
                        spread(&total, |v| format!("{v:.3}")),
                        spread(&per, |v| format!("{v:.2}")),
                        median(&journal),
                        median(&inbox),
                        spread(&drifts, |v| format!("{v:.2}")),
                        median(&early),
                        median(&late),
                    );
                    totals.push(median(&total));
                }
                if totals.len() == 2 {
                    ratios += &format!(
                        "| {} | {k} | {:.2}× |\n",
                        t.label,
                        totals[0] / totals[1]
                    );
                }
            }
        }
        drop_schemas(&pg_url(), &schemas).await;
    });
    if !ratios.is_empty() {
        out += &format!(
            "\n| database | k | total time, cache off ÷ on (medians) |\n|---|---|---|\n{ratios}"
        );
    }
    println!("{out}");
}
