//! Host provisioning in the spirit of Foreman, on the embedded default
//! (one SQLite file, everything in this process, no server to install).
//!
//! For each host, a `provision.host` task:
//!   1. spawns three sub-tasks that run in parallel on the executor pool:
//!      a DNS record, a DHCP lease and a certificate;
//!   2. waits for all three (the task is suspended: no thread is held);
//!   3. waits for the host to report the event `booted` (here a simulated
//!      installer calls back after a while, as a real one would call the API);
//!   4. finishes with everything it learnt.
//!
//! One host asks for a lease from an exhausted DHCP range: its DHCP sub-task
//! fails, and so does its provisioning, with the reason.
//!
//! Run: `cargo run --example provisioning` (database `provisioning.db`, or
//! set `COURIER_DB`, e.g. `postgres://postgres@127.0.0.1:5432/test`).

use std::time::{Duration, Instant};

use courier::{NewTask, Runtime, TaskContext, TaskError, TaskState};

/// A stable address in the documentation range for a host name.
fn address_of(host: &str) -> String {
    let h = host
        .bytes()
        .fold(17u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    format!("192.0.2.{}", 10 + h % 240)
}
use serde_json::{json, Value};

fn stamp(start: Instant) -> String {
    format!("[{:>6.3}s]", start.elapsed().as_secs_f64())
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = std::env::var("COURIER_DB").unwrap_or_else(|_| "sqlite://provisioning.db".into());
    let t0 = Instant::now();
    println!("courier provisioning example — database {db}");

    let rt = Runtime::builder()
        .database(&db)
        .register("provision.host", move |ctx: TaskContext| async move {
            let host = ctx.input()["host"].as_str().unwrap_or_default().to_string();
            let range = ctx.input()["range"].clone();
            println!("{} {host}: provisioning (attempt {})", stamp(t0), ctx.attempt());
            let steps = [
                ctx.spawn("provision.dns", json!({ "host": host })).await?,
                ctx.spawn("provision.dhcp", json!({ "host": host, "range": range })).await?,
                ctx.spawn("provision.certificate", json!({ "host": host })).await?,
            ];
            println!("{} {host}: DNS, DHCP and certificate sub-tasks spawned", stamp(t0));
            let out = ctx.join_all(&steps).await?;
            println!("{} {host}: network ready, waiting for the host to boot", stamp(t0));
            ctx.progress(json!({ "step": "waiting for booted" })).await?;
            let booted = ctx.wait_event("booted").await?;
            println!("{} {host}: booted {booted}", stamp(t0));
            Ok::<Value, TaskError>(json!({
                "host": host, "dns": out[0], "dhcp": out[1], "certificate": out[2], "booted": booted,
            }))
        })
        .register("provision.dns", move |ctx: TaskContext| async move {
            let host = ctx.input()["host"].as_str().unwrap_or_default().to_string();
            ctx.pause(Duration::from_millis(120)).await?;
            let record = format!("{host}. 300 IN A {}", address_of(&host));
            println!("{}   dns: {record}", stamp(t0));
            Ok(json!({ "record": record }))
        })
        .register("provision.dhcp", move |ctx: TaskContext| async move {
            let host = ctx.input()["host"].as_str().unwrap_or_default().to_string();
            ctx.pause(Duration::from_millis(80)).await?;
            if ctx.input()["range"] == json!("exhausted") {
                println!("{}   dhcp: no free lease for {host}", stamp(t0));
                return Err(TaskError::failed(format!("DHCP range exhausted: no lease for {host}")));
            }
            let ip = address_of(&host);
            let last: u8 = ip.rsplit('.').next().and_then(|o| o.parse().ok()).unwrap_or(0);
            let lease = format!("52:54:00:00:00:{last:02x} -> {ip}");
            println!("{}   dhcp: {lease}", stamp(t0));
            Ok(json!({ "lease": lease }))
        })
        .register("provision.certificate", move |ctx: TaskContext| async move {
            let host = ctx.input()["host"].as_str().unwrap_or_default().to_string();
            ctx.pause(Duration::from_millis(150)).await?;
            println!("{}   certificate: CN={host} signed", stamp(t0));
            Ok(json!({ "subject": format!("CN={host}") }))
        })
        .start()
        .await?;
    let client = rt.client();

    let hosts = [
        ("web01.example.com", json!("lab")),
        ("web02.example.com", json!("lab")),
        ("db01.example.com", json!("exhausted")),
    ];
    let mut tasks = Vec::new();
    for (host, range) in &hosts {
        let t = client
            .submit(NewTask::new(
                "provision.host",
                json!({ "host": host, "range": range }),
            ))
            .await?
            .task;
        println!(
            "{} submitted provision.host for {host}: task {}",
            stamp(t0),
            t.id
        );
        tasks.push((host.to_string(), t.id));
    }

    // The installers: each host boots some time after its network is ready
    // and calls back with an event, as a real installer would call the API.
    for (i, (host, id)) in tasks.iter().cloned().enumerate() {
        let client = client.clone();
        actix::spawn(async move {
            loop {
                let t = client.get(id).await.expect("read task");
                if t.state.is_final() {
                    return;
                }
                if t.state == TaskState::Suspended
                    && t.progress == Some(json!({ "step": "waiting for booted" }))
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_millis(300 + 200 * i as u64)).await;
            println!("{} installer on {host}: reporting booted", stamp(t0));
            let _ = client
                .send_event(id, "booted", json!({ "kernel": "6.1.0", "uptime_s": 12 }))
                .await;
        });
    }

    let mut failed = 0;
    for (host, id) in &tasks {
        let (t, finished) = client.wait(*id, Duration::from_secs(30)).await?;
        match (finished, t.state) {
            (true, TaskState::Succeeded) => println!(
                "{} {host}: SUCCEEDED\n           {}",
                stamp(t0),
                serde_json::to_string(&t.output)?
            ),
            (true, state) => {
                failed += 1;
                println!(
                    "{} {host}: {state}: {}",
                    stamp(t0),
                    t.error.unwrap_or_default()
                )
            }
            (false, state) => {
                failed += 1;
                println!("{} {host}: still {state} after 30 s", stamp(t0))
            }
        }
        for child in client.children(*id).await? {
            println!("           └ {} {} ({})", child.kind, child.state, child.id);
        }
    }
    let history = client.history(tasks[0].1).await?;
    println!(
        "state history of {}: {}",
        tasks[0].0,
        history
            .iter()
            .map(|h| h.to_state.as_str())
            .collect::<Vec<_>>()
            .join(" → ")
    );
    let store = rt.store().clone();
    rt.shutdown().await;
    // Let the last database work finish before the actor system goes away.
    store.close().await;
    println!(
        "{} done: {} provisioned, {failed} failed",
        stamp(t0),
        tasks.len() - failed
    );
    Ok(())
}
