//! Fan-out and fan-in: a parent spawns 100 sub-tasks and waits for all of
//! them, beside the same 101 tasks with no parent, in the same run.
//!
//! ```text
//! cargo bench --bench fanout            # SQLite and PostgreSQL
//! BENCH_DB=postgres BENCH_REPS=30 BENCH_FANOUT=100 cargo bench --bench fanout
//! ```
//!
//! - **fan-out**: `demo.fanout` with `{"n": 100, "kind": "demo.echo"}`
//!   submitted with a wait (`Client::submit_and_wait`): the parent runs,
//!   spawns its sub-tasks (`TaskContext::spawn_all`, one statement), is
//!   suspended until the last has ended, runs again and answers. Timed from
//!   the submit to the parent's answer: the figure Celery's peer benchmark
//!   calls fan-out/fan-in (a parent and 100 children, client-observed).
//! - **flat, the baseline**: 101 `demo.echo` tasks submitted at once with
//!   `Client::submit_batch` and awaited: the same number of tasks through
//!   the same runtime, with no parent to spawn them, wake or run again.
//!
//! One runtime in this process, one executor (default capacity), the demo
//! kinds; medians of `BENCH_REPS` after 3 warm-ups of each, interleaved.

mod support;

use std::time::{Duration, Instant};

use courier::{NewTask, Runtime};
use serde_json::json;
use support::{dbs_from_env, drop_schemas, env_usize, median, pg_url, target};

async fn fan_out(c: &courier::Client, n: usize) -> Duration {
    let t0 = Instant::now();
    let w = c
        .submit_and_wait(
            NewTask::new(
                "demo.fanout",
                json!({"n": n, "kind": "demo.echo", "input": 1}),
            ),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert!(w.finished, "fan-out not finished within 60 s");
    assert_eq!(w.task.output.as_ref().unwrap()["children"], json!(n));
    t0.elapsed()
}

async fn flat(c: &courier::Client, n: usize) -> Duration {
    let t0 = Instant::now();
    let batch = (0..=n)
        .map(|_| NewTask::new("demo.echo", json!(1)))
        .collect();
    let made = c.submit_batch(batch).await.unwrap();
    let waits = made
        .iter()
        .map(|m| c.wait(m.task.id, Duration::from_secs(60)));
    for w in futures_util::future::join_all(waits).await {
        assert!(w.unwrap().1, "flat batch not finished within 60 s");
    }
    t0.elapsed()
}

/// The median of `v`, in milliseconds.
fn median_ms(v: Vec<Duration>) -> f64 {
    let ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    median(&ms)
}

fn main() {
    let reps = env_usize("BENCH_REPS", 20);
    let n = env_usize("BENCH_FANOUT", 100);
    let mut out = format!(
        "### Fan-out of {n} sub-tasks and fan-in, beside {} flat tasks (medians of {reps}, ms)\n\n\
         | database | fan-out: parent + {n} sub-tasks, submit → answer | flat: {} tasks in one batch, submit → all finished | fan-out ÷ flat |\n\
         |---|---|---|---|\n",
        n + 1,
        n + 1
    );
    actix::System::new().block_on(async {
        let mut schemas = Vec::new();
        for db in dbs_from_env() {
            let t = target(&db, &mut schemas).await;
            let rt = Runtime::builder()
                .database(t.url.clone())
                .store_options(t.options.clone())
                .registry(courier::demo::registry())
                .start()
                .await
                .unwrap();
            let c = rt.client();
            for _ in 0..3 {
                fan_out(&c, n).await;
                flat(&c, n).await;
            }
            let (mut f, mut b) = (Vec::new(), Vec::new());
            for _ in 0..reps {
                f.push(fan_out(&c, n).await);
                b.push(flat(&c, n).await);
            }
            rt.shutdown().await;
            let (f, b) = (median_ms(f), median_ms(b));
            eprintln!("{db}: fan-out {f:.1} ms, flat {b:.1} ms");
            out += &format!("| {} | {f:.1} | {b:.1} | {:.2}× |\n", t.label, f / b);
        }
        drop_schemas(&pg_url(), &schemas).await;
    });
    println!("{out}");
}
