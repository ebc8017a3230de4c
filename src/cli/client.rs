//! The client commands: thin wrappers over the HTTP API.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

use super::{
    ClientArgs, EventArgs, IdArgs, Limit, ListArgs, NameArgs, QueueArgs, ScheduleArgs, SubmitArgs,
    TaskOptionArgs, TasksArgs,
};

/// `println!` that ends the program quietly when the reader of our output
/// has gone (`courier tasks | head`), like any Unix filter. (SIGPIPE stays
/// ignored, as Rust sets it: servers must survive peers that hang up.)
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out, $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

struct Api {
    base: String,
    token: Option<String>,
    http: awc::Client,
}

impl Api {
    fn new(c: &ClientArgs, timeout: Duration) -> Api {
        Api {
            base: c.url.trim_end_matches('/').to_string(),
            token: c.token.clone(),
            http: awc::Client::builder().timeout(timeout).finish(),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        self.call_with(method, path, &[], body).await
    }

    /// [`Api::call`] with a query, encoded by the HTTP client.
    async fn call_with(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}{}", self.base, path);
        let mut req = match method {
            "GET" => self.http.get(&url),
            "PUT" => self.http.put(&url),
            "DELETE" => self.http.delete(&url),
            _ => self.http.post(&url),
        };
        if !query.is_empty() {
            req = req.query(&query)?;
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let mut resp = match body {
            Some(b) => req.send_json(&b).await,
            None => req.send().await,
        }
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("calling {url} (is `courier serve` running there?)"))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .body()
            .limit(64 * 1024 * 1024)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status >= 400 {
            let msg = json["error"]["message"]
                .as_str()
                .unwrap_or("request failed");
            let code = json["error"]["code"].as_str().unwrap_or("error");
            bail!("{status} {code}: {msg}");
        }
        Ok((status, json))
    }
}

fn parse_json(what: &str, s: Option<&str>) -> anyhow::Result<Value> {
    match s {
        None => Ok(Value::Null),
        Some(s) => {
            serde_json::from_str(s).with_context(|| format!("{what} is not valid JSON: {s}"))
        }
    }
}

fn print_task(t: &Value) {
    let s = |k: &str| t[k].as_str().unwrap_or("-").to_string();
    outln!("task      {}", s("id"));
    outln!("kind      {}", s("kind"));
    outln!("state     {}", s("state"));
    outln!("queue     {} (priority {})", s("queue"), t["priority"]);
    outln!("attempts  {} of {}", t["attempts"], t["max_attempts"]);
    if !t["run_at"].is_null() {
        let label = if t["state"] == "suspended" {
            "wakes at"
        } else {
            "next run"
        };
        outln!("{label:<9} {}", s("run_at"));
    }
    if !t["waiting"].is_null() {
        outln!("waiting   {}", s("waiting"));
    }
    if !t["schedule"].is_null() {
        outln!("schedule  {}", s("schedule"));
    }
    outln!("executor  {}", s("executor_id"));
    if !t["parent_id"].is_null() {
        outln!("parent    {}", s("parent_id"));
    }
    outln!("created   {}", s("created_at"));
    if !t["finished_at"].is_null() {
        outln!("finished  {}", s("finished_at"));
    }
    outln!("input     {}", t["input"]);
    if !t["output"].is_null() {
        outln!("output    {}", t["output"]);
    }
    if !t["error"].is_null() {
        outln!("error     {}", s("error"));
    }
    if !t["progress"].is_null() {
        outln!("progress  {}", t["progress"]);
    }
    for e in t["errors"].as_array().into_iter().flatten() {
        outln!(
            "failed    attempt {} at {} ({}): {}",
            e["attempt"],
            e["at"].as_str().unwrap_or("-"),
            e["code"].as_str().unwrap_or("error"),
            e["error"].as_str().unwrap_or("")
        );
    }
}

pub async fn submit(a: SubmitArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.client, Duration::from_millis(a.wait_ms + 30_000));
    let mut body =
        serde_json::json!({"kind": a.kind, "input": parse_json("input", a.input.as_deref())?});
    if a.wait {
        body["wait_ms"] = a.wait_ms.into();
    }
    if let Some(k) = &a.idempotency_key {
        body["idempotency_key"] = k.clone().into();
    }
    if let Some(at) = &a.run_at {
        body["run_at"] = at.clone().into();
    }
    a.options.add_to(&mut body);
    let (status, task) = api.call("POST", "/api/v1/tasks", Some(body)).await?;
    if a.client.json {
        outln!("{task}");
    } else {
        match status {
            201 => outln!("created"),
            202 => outln!("still running after {} ms", a.wait_ms),
            _ if a.wait => outln!("finished"),
            _ => outln!("exists already (same idempotency key)"),
        }
        print_task(&task);
    }
    if a.wait && task["state"] == "failed" {
        bail!("the task failed");
    }
    Ok(())
}

pub async fn tasks(a: TasksArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.client, Duration::from_secs(30));
    let limit = a.limit.to_string();
    let mut q = vec![("limit", limit.as_str())];
    for (k, v) in [
        ("state", &a.state),
        ("kind", &a.kind),
        ("queue", &a.queue),
        ("schedule", &a.schedule),
        ("parent", &a.parent),
        ("after", &a.after),
    ] {
        if let Some(v) = v {
            q.push((k, v.as_str()));
        }
    }
    let (_, page) = api.call_with("GET", "/api/v1/tasks", &q, None).await?;
    if a.client.json {
        outln!("{page}");
        return Ok(());
    }
    let tasks = page["tasks"].as_array().cloned().unwrap_or_default();
    outln!(
        "{:<36}  {:<24}  {:<9}  {:<12}  {:>4}  {:>5}  CREATED",
        "ID",
        "KIND",
        "STATE",
        "QUEUE",
        "PRIO",
        "TRY"
    );
    for t in &tasks {
        outln!(
            "{:<36}  {:<24}  {:<9}  {:<12}  {:>4}  {:>5}  {}",
            t["id"].as_str().unwrap_or(""),
            t["kind"].as_str().unwrap_or(""),
            t["state"].as_str().unwrap_or(""),
            t["queue"].as_str().unwrap_or(""),
            t["priority"],
            format!("{}/{}", t["attempts"], t["max_attempts"]),
            t["created_at"].as_str().unwrap_or("")
        );
    }
    if let Some(next) = page["next"].as_str() {
        outln!("more: courier tasks --after {next}");
    }
    Ok(())
}

/// The most pages `all_pages` reads (of 1000 rows each).
const MAX_PAGES: usize = 100;

/// Every row of a paged list, following its `next` cursors.
async fn all_pages(api: &Api, path: &str, key: &str) -> anyhow::Result<Vec<Value>> {
    let mut rows = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut q = vec![("limit", "1000")];
        if let Some(a) = &after {
            q.push(("after", a.as_str()));
        }
        let (_, page) = api.call_with("GET", path, &q, None).await?;
        rows.extend(page[key].as_array().cloned().unwrap_or_default());
        match &page["next"] {
            Value::String(n) => after = Some(n.clone()),
            Value::Number(n) => after = Some(n.to_string()),
            _ => break,
        }
    }
    Ok(rows)
}

pub async fn show(a: IdArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.client, Duration::from_secs(30));
    let (_, task) = api
        .call("GET", &format!("/api/v1/tasks/{}", a.id), None)
        .await?;
    let history = all_pages(&api, &format!("/api/v1/tasks/{}/history", a.id), "history").await?;
    let events = all_pages(&api, &format!("/api/v1/tasks/{}/events", a.id), "events").await?;
    let children = all_pages(&api, &format!("/api/v1/tasks/{}/children", a.id), "tasks").await?;
    if a.client.json {
        outln!(
            "{}",
            serde_json::json!({"task": task, "history": history, "events": events, "children": children})
        );
        return Ok(());
    }
    print_task(&task);
    outln!("history");
    for h in &history {
        outln!(
            "  {}  {:>9} → {:<9}  by {}  (attempt {})",
            h["at"].as_str().unwrap_or(""),
            h["from_state"].as_str().unwrap_or("-"),
            h["to_state"].as_str().unwrap_or(""),
            h["changed_by"].as_str().unwrap_or("-"),
            h["attempt"]
        );
    }
    let steps = task["steps"].as_array().cloned().unwrap_or_default();
    if !steps.is_empty() {
        outln!("steps");
        for st in &steps {
            let result = match st["state"].as_str() {
                Some("succeeded") => st["output"].to_string(),
                _ => st["error"].as_str().unwrap_or("").to_string(),
            };
            outln!(
                "  {}  {:<9}  {}  (attempt {})  {}",
                st["finished_at"].as_str().unwrap_or(""),
                st["state"].as_str().unwrap_or(""),
                st["name"].as_str().unwrap_or(""),
                st["attempt"],
                result
            );
        }
    }
    let evs = events;
    if !evs.is_empty() {
        outln!("events");
        for e in &evs {
            outln!(
                "  #{} {} {}",
                e["seq"],
                e["name"].as_str().unwrap_or(""),
                e["payload"]
            );
        }
    }
    let ch = children;
    if !ch.is_empty() {
        outln!("sub-tasks");
        for c in &ch {
            outln!(
                "  {} {} {}",
                c["id"].as_str().unwrap_or(""),
                c["kind"].as_str().unwrap_or(""),
                c["state"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}

pub async fn event(a: EventArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.client, Duration::from_secs(30));
    let body = serde_json::json!({"name": a.name, "payload": parse_json("payload", a.payload.as_deref())?});
    let (_, ev) = api
        .call(
            "POST",
            &format!("/api/v1/tasks/{}/events", a.id),
            Some(body),
        )
        .await?;
    if a.client.json {
        outln!("{ev}");
    } else {
        outln!("event #{} {} sent to task {}", ev["seq"], a.name, a.id);
    }
    Ok(())
}

pub async fn cancel(a: IdArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.client, Duration::from_secs(30));
    let (_, task) = api
        .call("POST", &format!("/api/v1/tasks/{}/cancel", a.id), None)
        .await?;
    if a.client.json {
        outln!("{task}");
    } else {
        outln!(
            "cancellation requested; task {} is {}",
            a.id,
            task["state"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

fn print_queues(queues: &[Value]) {
    outln!(
        "{:<24}  {:<6}  {:>11}  {:>8}  {:>9}  {:>7}  {:>7}  {:>9}",
        "QUEUE",
        "PAUSED",
        "CONCURRENCY",
        "RATE/S",
        "SCHEDULED",
        "PENDING",
        "RUNNING",
        "SUSPENDED"
    );
    let limit = |v: &Value| match v {
        Value::Null => "-".to_string(),
        v => v.to_string(),
    };
    for q in queues {
        outln!(
            "{:<24}  {:<6}  {:>11}  {:>8}  {:>9}  {:>7}  {:>7}  {:>9}",
            q["name"].as_str().unwrap_or(""),
            if q["paused"] == true { "yes" } else { "no" },
            limit(&q["concurrency"]),
            limit(&q["rate_per_s"]),
            q["scheduled"],
            q["pending"],
            q["running"],
            q["suspended"]
        );
    }
}

pub async fn queues(a: ListArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.client, Duration::from_secs(30));
    let (_, page) = api.call("GET", "/api/v1/queues", None).await?;
    if a.client.json {
        outln!("{page}");
    } else {
        print_queues(page["queues"].as_array().map(Vec::as_slice).unwrap_or(&[]));
    }
    Ok(())
}

pub async fn queue(a: QueueArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.client, Duration::from_secs(30));
    let path = format!("/api/v1/queues/{}", segment(&a.name));
    let mut body = serde_json::Map::new();
    match a.concurrency {
        Some(Limit::Set(n)) => drop(body.insert("concurrency".into(), n.into())),
        Some(Limit::Lift) => drop(body.insert("concurrency".into(), Value::Null)),
        None => {}
    }
    match a.rate {
        Some(Limit::Set(x)) => drop(body.insert("rate_per_s".into(), x.into())),
        Some(Limit::Lift) => drop(body.insert("rate_per_s".into(), Value::Null)),
        None => {}
    }
    if a.pause || a.resume {
        body.insert("paused".into(), a.pause.into());
    }
    let (_, q) = if body.is_empty() {
        api.call("GET", &path, None).await?
    } else {
        api.call("PUT", &path, Some(Value::Object(body))).await?
    };
    if a.client.json {
        outln!("{q}");
    } else {
        print_queues(std::slice::from_ref(&q));
    }
    Ok(())
}

impl TaskOptionArgs {
    /// Sets the options given as flags on a request body.
    fn add_to(&self, body: &mut Value) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let options = [
            ("queue", self.queue.clone().map(Value::from)),
            ("priority", self.priority.map(Value::from)),
            ("delay_ms", self.delay.map(|d| ms(d).into())),
            ("max_attempts", self.max_attempts.map(Value::from)),
            ("backoff_ms", self.backoff.map(|d| ms(d).into())),
            ("timeout_ms", self.timeout.map(|d| ms(d).into())),
        ];
        for (field, value) in options {
            if let Some(v) = value {
                body[field] = v;
            }
        }
    }
}

fn print_schedules(schedules: &[Value]) {
    outln!(
        "{:<20}  {:<16}  {:<20}  {:<7}  {:<5}  {:<24}  LAST TASK",
        "SCHEDULE",
        "CRON",
        "KIND",
        "ENABLED",
        "CATCH",
        "NEXT RUN"
    );
    for sc in schedules {
        outln!(
            "{:<20}  {:<16}  {:<20}  {:<7}  {:<5}  {:<24}  {}",
            sc["name"].as_str().unwrap_or(""),
            sc["cron"].as_str().unwrap_or(""),
            sc["kind"].as_str().unwrap_or(""),
            if sc["enabled"] == true { "yes" } else { "no" },
            sc["catch_up"].as_str().unwrap_or(""),
            sc["next_run_at"].as_str().unwrap_or("-"),
            sc["last_task_id"].as_str().unwrap_or("-")
        );
    }
}

pub async fn schedules(a: ListArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.client, Duration::from_secs(30));
    let (_, page) = api.call("GET", "/api/v1/schedules", None).await?;
    if a.client.json {
        outln!("{page}");
    } else {
        print_schedules(
            page["schedules"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[]),
        );
    }
    Ok(())
}

pub async fn schedule(a: ScheduleArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.client, Duration::from_secs(30));
    let mut body = serde_json::json!({
        "cron": a.cron,
        "kind": a.kind,
        "input": parse_json("input", a.input.as_deref())?,
        "catch_up": a.catch_up,
        "enabled": !a.disabled,
    });
    a.options.add_to(&mut body);
    let path = format!("/api/v1/schedules/{}", segment(&a.name));
    let (status, sc) = api.call("PUT", &path, Some(body)).await?;
    if a.client.json {
        outln!("{sc}");
    } else {
        outln!("{}", if status == 201 { "created" } else { "replaced" });
        print_schedules(std::slice::from_ref(&sc));
        for t in sc["next_runs"].as_array().into_iter().flatten() {
            outln!("  next  {}", t.as_str().unwrap_or(""));
        }
    }
    Ok(())
}

pub async fn unschedule(a: NameArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.client, Duration::from_secs(30));
    let path = format!("/api/v1/schedules/{}", segment(&a.name));
    api.call("DELETE", &path, None).await?;
    if a.client.json {
        outln!("{}", serde_json::json!({"deleted": a.name}));
    } else {
        outln!("schedule {} deleted (the tasks it created stay)", a.name);
    }
    Ok(())
}

/// One segment of a path (a queue's or a schedule's name), its reserved
/// characters percent-encoded.
fn segment(s: &str) -> String {
    /// What RFC 3986 leaves unreserved stays as it is.
    const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, RESERVED).to_string()
}
