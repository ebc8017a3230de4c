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
//! | `demo.provision`   | `{"host": S, "boot_timeout_ms"?: N, "log"?: PATH}` | durable steps around DNS, DHCP and certificate in parallel, then waits for `booted` (at most N ms, default an hour) |
//! | `demo.flaky`       | `{"fail_times": N}`                    | attempts 1…N fail with `flaky attempt K`; the next gives `{"attempt": K}` |
//! | `demo.steps`       | `{"n": N, "ms": M, "log"?: PATH}`      | N journaled steps `step 0`… in order, each sleeping M ms then appending `step I` to `log`; `{"steps": N}` |
//! | `demo.timer`       | `{"ms": N}`                            | a durable sleep (`suspended`, out of memory); `{"slept_ms": N}` |
//!
//! No demo kind sets a default `max_attempts`: a task is retried only when
//! its request asks for it.
//!
//! The demo kinds are for trying courier out, never for callers one does
//! not trust: a `log` is a file only under the directory the operator names
//! ([`DemoOptions::log_dir`], `--demo-log-dir`; without one a task that
//! gives `log` fails), and `demo.fanout` refuses to spawn `demo.fanout`
//! (nested, one request could make 10,000² tasks and more).

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use courier_actors::{Registry, TaskContext, TaskError};

/// The most sub-tasks `demo.fanout` spawns.
pub const MAX_FANOUT: u64 = 10_000;
/// The longest `demo.sleep`.
pub const MAX_SLEEP_MS: u64 = 24 * 3600 * 1000;
/// The longest `demo.timer` (a durable sleep): a year.
pub const MAX_TIMER_MS: u64 = 366 * 24 * 3600 * 1000;
/// The most steps of `demo.steps`.
pub const MAX_STEPS: u64 = 10_000;
/// `demo.provision`'s wait for `booted` when its input sets none: an hour.
pub const BOOT_TIMEOUT_MS: u64 = 3600 * 1000;

/// What the operator allows the demo kinds.
#[derive(Clone, Debug, Default)]
pub struct DemoOptions {
    /// The directory a task's `log` is written in (`--demo-log-dir`): a
    /// relative `log` is a path under it, an absolute one must lie in it,
    /// and `..` is refused. `None`: a task that gives `log` fails.
    pub log_dir: Option<PathBuf>,
}

/// Every demo kind, ready to register, with no log directory (a `log`
/// fails the task).
pub fn registry() -> Registry {
    registry_with(DemoOptions::default())
}

/// Every demo kind, ready to register, with the operator's `options`.
pub fn registry_with(options: DemoOptions) -> Registry {
    let logs = Logs(Arc::new(options.log_dir));
    let mut r = Registry::new();
    let (for_steps, for_provision) = (logs.clone(), logs);
    r.register("demo.echo", echo)
        .register("demo.sleep", sleep)
        .register("demo.fail", fail)
        .register("demo.await_event", await_event)
        .register("demo.fanout", fanout)
        .register("demo.provision", move |ctx| {
            provision(ctx, for_provision.clone())
        })
        .register("demo.flaky", flaky)
        .register("demo.steps", move |ctx| steps(ctx, for_steps.clone()))
        .register("demo.timer", timer)
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
    if kind == "demo.fanout" {
        return Err(TaskError::failed(
            "demo.fanout does not spawn demo.fanout (nested fan-outs multiply: one request could make 10,000² tasks)",
        ));
    }
    let children = ctx.spawn_all(&kind, (0..n).map(|_| input.clone())).await?;
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
#[serde(deny_unknown_fields)]
struct StepsInput {
    n: u64,
    ms: u64,
    #[serde(default)]
    log: Option<std::path::PathBuf>,
}

/// The operator's log directory, shared by the kinds that write a `log`.
#[derive(Clone, Debug)]
struct Logs(Arc<Option<PathBuf>>);

impl Logs {
    /// Where a task's `log` goes: under the log directory, or an error
    /// that says why not.
    fn confine(&self, log: &Path) -> Result<PathBuf, TaskError> {
        let Some(dir) = self.0.as_ref() else {
            return Err(TaskError::failed(
                "`log` needs an executor started with --demo-log-dir DIR: the demo kinds write files only there",
            ));
        };
        if log
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
        {
            return Err(TaskError::failed("`log` may not contain `..`"));
        }
        let path = if log.is_absolute() {
            log.to_path_buf()
        } else {
            dir.join(log)
        };
        if !path.starts_with(dir) {
            return Err(TaskError::failed(format!(
                "`log` must lie in the demo log directory {}",
                dir.display()
            )));
        }
        // A link placed in the directory could point anywhere.
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(TaskError::failed("`log` may not be a symbolic link"));
        }
        Ok(path)
    }
}

/// Appends `line` to the file at `path` (a side effect a test or a person
/// can count).
fn append_line(path: &std::path::Path, line: &str) -> Result<(), TaskError> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| writeln!(f, "{line}"))
        .map_err(|e| TaskError::failed(format!("cannot append to {}: {e}", path.display())))
}

/// N journaled steps: a run resumed after a crash replays the steps that
/// completed (their lines are not written again) and runs the rest.
async fn steps(ctx: TaskContext, logs: Logs) -> Result<Value, TaskError> {
    let StepsInput { n, ms, log } = ctx.input_as()?;
    let log = log.map(|l| logs.confine(&l)).transpose()?;
    if n > MAX_STEPS || ms > MAX_SLEEP_MS {
        return Err(TaskError::failed(format!(
            "n must be at most {MAX_STEPS} and ms at most {MAX_SLEEP_MS}"
        )));
    }
    for i in 0..n {
        // A loop names each step with its index.
        ctx.step(&format!("step {i}"), async {
            ctx.pause(Duration::from_millis(ms)).await?;
            if let Some(path) = &log {
                append_line(path, &format!("step {i}"))?;
            }
            Ok(i)
        })
        .await?;
    }
    Ok(json!({ "steps": n }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TimerInput {
    ms: u64,
}

/// A durable sleep: the task is `suspended` meanwhile, in the database and
/// not in memory, and wakes on time across restarts and takeovers.
async fn timer(ctx: TaskContext) -> Result<Value, TaskError> {
    let TimerInput { ms } = ctx.input_as()?;
    if ms > MAX_TIMER_MS {
        return Err(TaskError::failed(format!(
            "ms must be at most {MAX_TIMER_MS}"
        )));
    }
    ctx.sleep(Duration::from_millis(ms)).await?;
    Ok(json!({ "slept_ms": ms }))
}

#[derive(Deserialize)]
struct ProvisionInput {
    host: String,
    #[serde(default)]
    boot_timeout_ms: Option<u64>,
    #[serde(default)]
    log: Option<std::path::PathBuf>,
}

/// Foreman-style host provisioning, durable: an address is allocated (a
/// journaled step), the three network and security steps run in parallel
/// as sub-tasks (on any executor), the machine is powered on (a journaled
/// step), then the task suspends until the host reports `booted` (at most
/// `boot_timeout_ms`) and registers it (a journaled step). Killed anywhere,
/// a replay repeats none of the completed steps (with `log`, each writes
/// its line once).
async fn provision(ctx: TaskContext, logs: Logs) -> Result<Value, TaskError> {
    let ProvisionInput {
        host,
        boot_timeout_ms,
        log,
    } = ctx.input_as()?;
    let log = log.map(|l| logs.confine(&l)).transpose()?;
    if host.is_empty() || host.len() > 253 {
        return Err(TaskError::failed("host must be 1 to 253 characters"));
    }
    let boot_timeout = boot_timeout_ms.unwrap_or(BOOT_TIMEOUT_MS);
    if boot_timeout > MAX_TIMER_MS {
        return Err(TaskError::failed(format!(
            "boot_timeout_ms must be at most {MAX_TIMER_MS}"
        )));
    }
    let note = |line: String| -> Result<(), TaskError> {
        match &log {
            Some(path) => append_line(path, &format!("{host}: {line}")),
            None => Ok(()),
        }
    };
    let address: String = ctx
        .step("allocate address", async {
            let h = host_hash(&host);
            let ip = format!(
                "10.{}.{}.{}",
                (h >> 16) & 0xff,
                (h >> 8) & 0xff,
                (h & 0xfd) + 2
            );
            note(format!("allocated {ip}"))?;
            Ok(ip)
        })
        .await?;
    let subtasks = [
        ctx.spawn("demo.provision.dns", json!({ "host": host }))
            .await?,
        ctx.spawn("demo.provision.dhcp", json!({ "host": host }))
            .await?,
        ctx.spawn("demo.provision.certificate", json!({ "host": host }))
            .await?,
    ];
    ctx.progress(json!({ "step": "network and certificate" }))
        .await?;
    let out = ctx.join_all(&subtasks).await?;
    let powered_on: String = ctx
        .step("power on", async {
            ctx.pause(Duration::from_millis(50)).await?;
            note("powered on".into())?;
            Ok(courier_actors::now().to_rfc3339())
        })
        .await?;
    ctx.progress(json!({ "step": "waiting for booted" }))
        .await?;
    let Some(booted) = ctx
        .wait_event_for("booted", Duration::from_millis(boot_timeout))
        .await?
    else {
        return Err(TaskError::failed(format!(
            "{host} did not report booted within {boot_timeout} ms"
        )));
    };
    ctx.step("register in inventory", async {
        note("registered".into())?;
        Ok(())
    })
    .await?;
    Ok(json!({
        "host": host,
        "address": address,
        "dns": out[0],
        "dhcp": out[1],
        "certificate": out[2],
        "powered_on_at": powered_on,
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
    let ProvisionInput { host, .. } = ctx.input_as()?;
    ctx.pause(Duration::from_millis(30)).await?;
    let h = host_hash(&host);
    Ok(
        json!({ "record": format!("{host}. A 10.{}.{}.{}", (h >> 16) & 0xff, (h >> 8) & 0xff, (h & 0xfd) + 2) }),
    )
}

async fn provision_dhcp(ctx: TaskContext) -> Result<Value, TaskError> {
    let ProvisionInput { host, .. } = ctx.input_as()?;
    ctx.pause(Duration::from_millis(20)).await?;
    let h = host_hash(&host);
    Ok(
        json!({ "lease": format!("52:54:00:{:02x}:{:02x}:{:02x}", (h >> 16) & 0xff, (h >> 8) & 0xff, h & 0xff) }),
    )
}

async fn provision_certificate(ctx: TaskContext) -> Result<Value, TaskError> {
    let ProvisionInput { host, .. } = ctx.input_as()?;
    ctx.pause(Duration::from_millis(40)).await?;
    Ok(json!({ "subject": format!("CN={host}"), "serial": format!("{:08x}", host_hash(&host)) }))
}
