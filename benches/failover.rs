//! Failover, measured the way `../shared/bench/peers/celery` measures Celery
//! (`bench.py failover`), so the two tables sit side by side: two executor
//! processes of capacity 2, 200 `demo.sleep` tasks of 200 ms, and executor
//! A killed with SIGKILL (or frozen with SIGSTOP) once 40% are done. Every
//! process is real; the database is the local PostgreSQL and the transport
//! the local RabbitMQ, as for Celery.
//!
//! ```text
//! cargo bench --bench failover            # RUNS=5 runs of every case
//! ```
//!
//! Cases (each with the default timeouts, heartbeat 2 s / dead after 8 s,
//! and the fastest, 300 ms / 3 s):
//!
//! - **kill, same host**: A and B share a pid namespace, so B's sweep sees
//!   A's process gone (no timeout involved).
//! - **kill, other host**: A runs in a pid namespace of its own (`unshare
//!   --pid`, as in another container or on another host): only the missing
//!   heartbeat tells.
//! - **freeze**: SIGSTOP on A until it is declared dead and its tasks run
//!   on B, then SIGCONT: the zombie finishes its runs, and every write of
//!   theirs must be refused.
//!
//! Figures per case, p50 over the runs: seconds from the signal until A was
//! declared dead, until its first task was taken over, until that task ran
//! again on B, and until every task was final; and summed over the runs:
//! completed, lost, started twice, finished twice, finished by a fenced
//! executor (all read back from the task histories).

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::time::{Duration, SystemTime};

use common::fleet::{count, executors, ready, secs_after, sleeps, time, Audit, Db, Fleet, Wire};
use common::procs::wait_for;
use support::env_usize;

const DEFAULT: &[&str] = &["--capacity", "2"];
const FASTEST: &[&str] = &[
    "--capacity",
    "2",
    "--heartbeat-ms",
    "300",
    "--dead-after-ms",
    "3000",
];
const OTHER_HOST: &[&str] = &["unshare", "--pid", "--fork", "--kill-child"];

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    KillSameHost,
    KillOtherHost,
    Freeze,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::KillSameHost => "SIGKILL, same host",
            Mode::KillOtherHost => "SIGKILL, other host",
            Mode::Freeze => "SIGSTOP past the timeout, then SIGCONT",
        }
    }
}

#[derive(Default)]
struct Run {
    completed: usize,
    lost: usize,
    started_twice: usize,
    finished_twice: usize,
    fenced: usize,
    declared_dead_s: f64,
    takeover_s: f64,
    rerun_s: f64,
    all_done_s: f64,
}

fn one_run(mode: Mode, timeouts: &[&str], n: usize, ms: u64) -> Run {
    let fleet = Fleet::new(Db::Postgres, Wire::Amqp);
    let wrapper: &[&str] = if mode == Mode::KillOtherHost {
        OTHER_HOST
    } else {
        &[]
    };
    let a = fleet.executor_under(wrapper, "exec-a", timeouts);
    let _b = fleet.executor("exec-b", timeouts);
    let web = fleet.web("web-1");
    ready(&web, Duration::from_secs(60));
    // Both executors are up and have run something before the clock starts.
    wait_for("both executors", Duration::from_secs(60), || {
        let ex = executors(&web);
        (ex.values().filter(|e| e["state"] == "alive").count() == 2).then_some(())
    });
    let victim = executors(&web)
        .into_values()
        .find(|e| e["node"] == "exec-a")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let base = count(&web, "succeeded");
    let ids = sleeps(&web, n, |_| ms);
    let at_40 = (n as u64 * 2) / 5;
    wait_for("40% done", Duration::from_secs(120), || {
        (count(&web, "succeeded") >= base + at_40).then_some(())
    });
    let t0 = SystemTime::now();
    let mut a = Some(a);
    match mode {
        Mode::KillSameHost | Mode::KillOtherHost => a.take().unwrap().kill9(),
        Mode::Freeze => {
            let a = a.as_ref().unwrap();
            a.signal("-STOP");
            wait_for("A declared dead", Duration::from_secs(120), || {
                (executors(&web)[&victim]["state"] == "dead").then_some(())
            });
            wait_for(
                "A's tasks running elsewhere",
                Duration::from_secs(120),
                || {
                    let (_, l) = web.get("/api/v1/tasks?state=running&limit=1000");
                    l["tasks"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .all(|t| t["executor_id"] != victim.as_str())
                        .then_some(())
                },
            );
            a.signal("-CONT");
        }
    }

    let audit = Audit::of(&web, &ids, "succeeded", Duration::from_secs(180));
    let ex = executors(&web);
    let declared = time(&ex[&victim]["ended_at"]);
    let mut last_final = None;
    for id in &ids {
        let (_, t) = web.get(&format!("/api/v1/tasks/{id}"));
        if let Some(f) = time(&t["finished_at"]) {
            last_final = last_final.max(Some(f));
        }
    }
    let first = |v: Vec<chrono::DateTime<chrono::Utc>>| v.into_iter().min();
    let run = Run {
        completed: audit.finished,
        lost: audit.lost.len(),
        started_twice: audit.rerun,
        finished_twice: audit.twice.len(),
        fenced: audit.fenced.len(),
        declared_dead_s: declared.map(|d| secs_after(t0, d)).unwrap_or(f64::NAN),
        takeover_s: first(audit.takeovers.iter().map(|t| t.3).collect())
            .map(|d| secs_after(t0, d))
            .unwrap_or(f64::NAN),
        rerun_s: first(audit.reruns_at.clone())
            .map(|d| secs_after(t0, d))
            .unwrap_or(f64::NAN),
        all_done_s: last_final.map(|d| secs_after(t0, d)).unwrap_or(f64::NAN),
    };
    drop(a); // the thawed zombie, if any
    run
}

fn p50(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[(v.len() - 1) / 2]
}

fn unshare_works() -> bool {
    std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "true"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn main() {
    let runs = env_usize("RUNS", 5);
    let n = env_usize("N", 200);
    let ms = env_usize("MS", 200) as u64;
    let mut cases = vec![
        (Mode::KillSameHost, "default (2 s / 8 s)", DEFAULT),
        (Mode::KillSameHost, "fastest (300 ms / 3 s)", FASTEST),
        (Mode::KillOtherHost, "default (2 s / 8 s)", DEFAULT),
        (Mode::KillOtherHost, "fastest (300 ms / 3 s)", FASTEST),
        (Mode::Freeze, "default (2 s / 8 s)", DEFAULT),
        (Mode::Freeze, "fastest (300 ms / 3 s)", FASTEST),
    ];
    if !unshare_works() {
        eprintln!("`unshare --pid` is not available here (it needs root): the other-host cases are left out");
        cases.retain(|c| c.0 != Mode::KillOtherHost);
    }
    let mut results: Vec<Vec<Run>> = cases.iter().map(|_| Vec::new()).collect();
    // Interleaved, so that a noisy minute spreads over every case.
    for r in 0..runs {
        for (i, (mode, t, flags)) in cases.iter().enumerate() {
            let run = one_run(*mode, flags, n, ms);
            eprintln!(
                "run {}/{runs} {} {t}: dead after {:.2} s, taken over {:.2} s, re-run {:.2} s, all done {:.2} s; completed {} lost {} started twice {} finished twice {} fenced {}",
                r + 1,
                mode.name(),
                run.declared_dead_s,
                run.takeover_s,
                run.rerun_s,
                run.all_done_s,
                run.completed,
                run.lost,
                run.started_twice,
                run.finished_twice,
                run.fenced
            );
            results[i].push(run);
        }
    }

    println!("#### Failover: 2 executors (capacity 2), {n} × sleep({ms} ms), executor A signalled at 40% done; {runs} runs per case\n");
    println!("| case | timeouts | runs | completed | lost | started twice | finished twice | finished by a fenced executor | s to declared dead (p50) | s to takeover (p50) | s to re-run began (p50) | s to every task final (p50) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for ((mode, t, _), rs) in cases.iter().zip(&results) {
        let sum = |f: fn(&Run) -> usize| rs.iter().map(f).sum::<usize>();
        let med = |f: fn(&Run) -> f64| p50(rs.iter().map(f).collect());
        println!(
            "| {} | {t} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            mode.name(),
            rs.len(),
            sum(|r| r.completed),
            sum(|r| r.lost),
            sum(|r| r.started_twice),
            sum(|r| r.finished_twice),
            sum(|r| r.fenced),
            med(|r| r.declared_dead_s),
            med(|r| r.takeover_s),
            med(|r| r.rerun_s),
            med(|r| r.all_done_s),
        );
    }
}
