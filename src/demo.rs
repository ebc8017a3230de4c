//! The demo task kinds of the design (`courier serve --demo`), also used by
//! the tests and benchmarks. Each input is checked; a bad one fails the task
//! with a message that says what was expected.
//!
//! | kind               | input                                  | output                                 |
//! |--------------------|----------------------------------------|----------------------------------------|
//! | `demo.echo`        | any JSON                               | the input                              |
//! | `demo.sleep`       | `{"ms": N}`                            | `{"slept_ms": N}`; cancellable         |
//! | `demo.fail`        | `{"message": S}`                       | fails with S                           |
//! | `demo.await_event` | `{"name": S}`                          | the payload of event S                 |
//! | `demo.fanout`      | `{"n": N, "kind": K, "input": X}`      | `{"children": N, "outputs": [...]}`    |
//! | `demo.provision`   | `{"host": S}`                          | DNS, DHCP and certificate in parallel, then waits for `booted` |
//! | `demo.flaky`       | `{"fail_times": N}`                    | attempts 1…N fail with `flaky attempt K`; the next gives `{"attempt": K}` |
//!
//! No demo kind sets a default `max_attempts`: a task is retried only when
//! its request asks for it.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use courier_actors::{Registry, TaskContext, TaskError};

/// The most sub-tasks `demo.fanout` spawns.
pub const MAX_FANOUT: u64 = 10_000;
/// The longest `demo.sleep`.
pub const MAX_SLEEP_MS: u64 = 24 * 3600 * 1000;

/// Every demo kind, ready to register.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register("demo.echo", echo)
        .register("demo.sleep", sleep)
        .register("demo.fail", fail)
        .register("demo.await_event", await_event)
        .register("demo.fanout", fanout)
        .register("demo.provision", provision)
        .register("demo.flaky", flaky)
        .register("demo.provision.dns", provision_dns)
        .register("demo.provision.dhcp", provision_dhcp)
        .register("demo.provision.certificate", provision_certificate);
    r
}

async fn echo(ctx: TaskContext) -> Result<Value, TaskError> {
    Ok(ctx.input().clone())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SleepInput {
    ms: u64,
}

async fn sleep(ctx: TaskContext) -> Result<Value, TaskError> {
    let SleepInput { ms } = ctx.input_as()?;
    if ms > MAX_SLEEP_MS {
        return Err(TaskError::failed(format!(
            "ms must be at most {MAX_SLEEP_MS}"
        )));
    }
    ctx.pause(Duration::from_millis(ms)).await?;
    Ok(json!({ "slept_ms": ms }))
}

#[derive(Deserialize)]
struct FailInput {
    message: String,
}

async fn fail(ctx: TaskContext) -> Result<Value, TaskError> {
    let FailInput { message } = ctx.input_as()?;
    Err(TaskError::Failed(message))
}

#[derive(Deserialize)]
struct AwaitInput {
    name: String,
}

async fn await_event(ctx: TaskContext) -> Result<Value, TaskError> {
    let AwaitInput { name } = ctx.input_as()?;
    ctx.wait_event(&name).await
}

#[derive(Deserialize)]
struct FanoutInput {
    n: u64,
    kind: String,
    #[serde(default)]
    input: Value,
}

async fn fanout(ctx: TaskContext) -> Result<Value, TaskError> {
    let FanoutInput { n, kind, input } = ctx.input_as()?;
    if n > MAX_FANOUT {
        return Err(TaskError::failed(format!("n must be at most {MAX_FANOUT}")));
    }
    let mut children = Vec::with_capacity(n as usize);
    for _ in 0..n {
        children.push(ctx.spawn(&kind, input.clone()).await?);
    }
    let outputs = ctx.join_all(&children).await?;
    Ok(json!({ "children": n, "outputs": outputs }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlakyInput {
    fail_times: u32,
}

/// Fails its first `fail_times` attempts, then succeeds: retries, seen.
async fn flaky(ctx: TaskContext) -> Result<Value, TaskError> {
    let FlakyInput { fail_times } = ctx.input_as()?;
    let attempt = ctx.attempt();
    if attempt <= fail_times as i32 {
        return Err(TaskError::failed(format!("flaky attempt {attempt}")));
    }
    Ok(json!({ "attempt": attempt }))
}

#[derive(Deserialize)]
struct ProvisionInput {
    host: String,
}

/// Foreman-style host provisioning: the three network and security steps run
/// in parallel as sub-tasks (on any executor), then the task suspends until
/// the host reports `booted`.
async fn provision(ctx: TaskContext) -> Result<Value, TaskError> {
    let ProvisionInput { host } = ctx.input_as()?;
    if host.is_empty() || host.len() > 253 {
        return Err(TaskError::failed("host must be 1 to 253 characters"));
    }
    let steps = [
        ctx.spawn("demo.provision.dns", json!({ "host": host }))
            .await?,
        ctx.spawn("demo.provision.dhcp", json!({ "host": host }))
            .await?,
        ctx.spawn("demo.provision.certificate", json!({ "host": host }))
            .await?,
    ];
    ctx.progress(json!({ "step": "network and certificate" }))
        .await?;
    let out = ctx.join_all(&steps).await?;
    ctx.progress(json!({ "step": "waiting for booted" }))
        .await?;
    let booted = ctx.wait_event("booted").await?;
    Ok(json!({
        "host": host,
        "dns": out[0],
        "dhcp": out[1],
        "certificate": out[2],
        "booted": booted,
    }))
}

/// A stable small number from a host name, to make up plausible addresses.
fn host_hash(host: &str) -> u32 {
    host.bytes().fold(2166136261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16777619)
    })
}

async fn provision_dns(ctx: TaskContext) -> Result<Value, TaskError> {
    let ProvisionInput { host } = ctx.input_as()?;
    ctx.pause(Duration::from_millis(30)).await?;
    let h = host_hash(&host);
    Ok(
        json!({ "record": format!("{host}. A 10.{}.{}.{}", (h >> 16) & 0xff, (h >> 8) & 0xff, (h & 0xfd) + 2) }),
    )
}

async fn provision_dhcp(ctx: TaskContext) -> Result<Value, TaskError> {
    let ProvisionInput { host } = ctx.input_as()?;
    ctx.pause(Duration::from_millis(20)).await?;
    let h = host_hash(&host);
    Ok(
        json!({ "lease": format!("52:54:00:{:02x}:{:02x}:{:02x}", (h >> 16) & 0xff, (h >> 8) & 0xff, h & 0xff) }),
    )
}

async fn provision_certificate(ctx: TaskContext) -> Result<Value, TaskError> {
    let ProvisionInput { host } = ctx.input_as()?;
    ctx.pause(Duration::from_millis(40)).await?;
    Ok(json!({ "subject": format!("CN={host}"), "serial": format!("{:08x}", host_hash(&host)) }))
}
