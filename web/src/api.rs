//! The HTTP API v1 handlers. Each one validates its input, calls the
//! [`Client`](courier_actors::Client) and maps the outcome to a status; the
//! runtime does the rest.

use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::stream;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use courier_actors::client::MAX_BATCH;
use courier_actors::{
    CatchUp, NewTask, QueueUpdate, ScheduleSpec, TaskFilter, TaskOptions, TaskState,
};

use crate::error::ApiError;
use crate::WebState;

/// Body of `POST /api/v1/tasks` (and an entry of a batch, without
/// `wait_ms`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    pub kind: String,
    #[serde(default)]
    pub input: Value,
    #[serde(default)]
    pub wait_ms: Option<u64>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub queue: Option<String>,
    #[serde(default)]
    pub priority: Option<i32>,
    #[serde(default)]
    pub run_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    pub delay_ms: Option<u64>,
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub backoff_ms: Option<u64>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

impl CreateTask {
    /// Reads a body, naming the field at fault in any error.
    fn parse(body: Value) -> Result<CreateTask, ApiError> {
        parse_body(body)
    }

    /// The task to create.
    fn into_new(self) -> NewTask {
        let mut t = NewTask::new(self.kind, self.input);
        t.idempotency_key = self.idempotency_key;
        t.options = TaskOptions {
            queue: self.queue,
            priority: self.priority,
            run_at: self.run_at,
            delay_ms: self.delay_ms,
            max_attempts: self.max_attempts,
            backoff_ms: self.backoff_ms,
            timeout_ms: self.timeout_ms,
        };
        t
    }
}

/// Refuses a body that is not a JSON object (serde would read an array as
/// the fields in order).
fn object(body: &Value) -> Result<(), ApiError> {
    if body.is_object() {
        Ok(())
    } else {
        Err(ApiError::InvalidField {
            field: None,
            message: "the body must be a JSON object".into(),
        })
    }
}

/// Reads a JSON object body as `T`, naming the field at fault in any error
/// (422).
fn parse_body<T: serde::de::DeserializeOwned>(mut body: Value) -> Result<T, ApiError> {
    object(&body)?;
    integral_fields(&mut body);
    serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        let field = match path.as_str() {
            "." | "" => unknown_field(&message),
            _ => Some(path.clone()),
        };
        ApiError::InvalidField {
            message: match &field {
                Some(f) if !message.contains(f.as_str()) => format!("{f}: {message}"),
                _ => message,
            },
            field,
        }
    })
}

/// JSON (and JSON Schema) count `3.0` as the integer 3; serde's integers
/// refuse it. The API's own fields take an integral number written with a
/// fraction (schemathesis found `"concurrency": 3369.0` refused); a task's
/// `input` and an event's `payload` are the caller's data and stay as sent.
fn integral_fields(body: &mut Value) {
    let Value::Object(fields) = body else {
        return;
    };
    for (name, v) in fields.iter_mut() {
        if name == "input" || name == "payload" {
            continue;
        }
        let Some(f) = v.as_f64().filter(|_| v.is_f64()) else {
            continue;
        };
        // Exactly integral, and within the range a double holds exactly.
        if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
            *v = if f < 0.0 {
                Value::from(f as i64)
            } else {
                Value::from(f as u64)
            };
        }
    }
}

/// The field serde names in "unknown field `x`, …" or "missing field `x`".
fn unknown_field(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

/// Body of `POST /api/v1/tasks/batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBatch {
    pub tasks: Vec<Value>,
}

/// Body of `POST /api/v1/tasks/{id}/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendEvent {
    pub name: String,
    #[serde(default)]
    pub payload: Value,
}

/// Query of `GET /api/v1/tasks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub state: Option<String>,
    pub kind: Option<String>,
    pub queue: Option<String>,
    pub schedule: Option<String>,
    pub parent: Option<String>,
    pub limit: Option<String>,
    pub after: Option<String>,
}

pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 1000;

fn parse_id(s: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(s).map_err(|_| ApiError::InvalidQuery(format!("{what} {s:?} is not a UUID")))
}

/// The trace id of an incoming W3C `traceparent` header, if valid: the task
/// then joins the caller's trace.
fn trace_of(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<courier_bus::TraceParent>().ok())
        .map(|t| t.trace_id_hex())
}

pub async fn create_task(
    state: web::Data<WebState>,
    req: HttpRequest,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let body = CreateTask::parse(body.into_inner())?;
    let max = state.config.max_wait;
    let wait = match body.wait_ms {
        Some(ms) if ms > max.as_millis() as u64 => {
            return Err(ApiError::invalid(
                "wait_ms",
                format!(
                    "wait_ms must be at most {} (the server's cap)",
                    max.as_millis()
                ),
            ))
        }
        Some(ms) => Some(Duration::from_millis(ms)),
        None => None,
    };
    let mut new = body.into_new();
    new.trace_id = trace_of(&req);
    let client = &state.client;
    let (task, status) = match wait {
        Some(w) => {
            let r = client
                .submit_and_wait_until(new, w, state.stopping())
                .await?;
            let status = if r.finished || !r.created {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            (r.task, status)
        }
        None => {
            let r = client.submit(new).await?;
            let status = if r.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (r.task, status)
        }
    };
    let mut resp = HttpResponse::build(status);
    if status == StatusCode::CREATED {
        resp.insert_header((header::LOCATION, format!("/api/v1/tasks/{}", task.id)));
    }
    Ok(resp.json(task))
}

/// `POST /api/v1/tasks/batch`: every entry created in one transaction, or
/// none (422 naming the first bad entry's field).
pub async fn create_batch(
    state: web::Data<WebState>,
    req: HttpRequest,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    object(&body)?;
    let batch: CreateBatch = serde_path_to_error::deserialize(body).map_err(|e| {
        let message = e.inner().to_string();
        let field = match e.path().to_string().as_str() {
            "." | "" => unknown_field(&message).unwrap_or_else(|| "tasks".into()),
            path => path.to_string(),
        };
        ApiError::InvalidField {
            message: format!("{field}: {message}"),
            field: Some(field),
        }
    })?;
    if batch.tasks.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            "tasks",
            format!(
                "a batch holds at most {MAX_BATCH} tasks, not {}",
                batch.tasks.len()
            ),
        ));
    }
    let trace = trace_of(&req);
    let mut news = Vec::with_capacity(batch.tasks.len());
    for (i, entry) in batch.tasks.into_iter().enumerate() {
        let prefix = format!("tasks[{i}]");
        let t = CreateTask::parse(entry).map_err(|e| e.within(&prefix))?;
        if t.wait_ms.is_some() {
            return Err(ApiError::invalid(
                format!("{prefix}.wait_ms"),
                format!("{prefix}: wait_ms has no place in a batch (a batch answers at once)"),
            ));
        }
        let mut new = t.into_new();
        new.trace_id = trace.clone();
        news.push(new);
    }
    let created = state.client.submit_batch(news).await?;
    let tasks: Vec<_> = created.into_iter().map(|s| s.task).collect();
    Ok(HttpResponse::Created().json(json!({ "tasks": tasks })))
}

pub async fn get_task(
    state: web::Data<WebState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id, "task id")?;
    let task = state.client.get(id).await?;
    let steps = state.client.steps(id).await?;
    let mut body = serde_json::to_value(task).map_err(|_| ApiError::Internal)?;
    body["steps"] = serde_json::to_value(steps).map_err(|_| ApiError::Internal)?;
    Ok(HttpResponse::Ok().json(body))
}

pub async fn list_tasks(
    state: web::Data<WebState>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let limit = match &q.limit {
        None => DEFAULT_PAGE,
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::InvalidQuery(format!("limit must be a whole number from 1 to {MAX_PAGE}"))
            })?,
    };
    let filter = TaskFilter {
        state: q
            .state
            .as_deref()
            .map(|s| s.parse::<TaskState>())
            .transpose()
            .map_err(|e| ApiError::InvalidQuery(e.to_string()))?,
        kind: q.kind.filter(|k| !k.is_empty()),
        queue: q.queue.filter(|k| !k.is_empty()),
        schedule: q.schedule.filter(|k| !k.is_empty()),
        parent_id: q
            .parent
            .as_deref()
            .map(|p| parse_id(p, "parent"))
            .transpose()?,
        after: q
            .after
            .as_deref()
            .map(|a| parse_id(a, "after"))
            .transpose()?,
        limit,
    };
    let tasks = state.client.list(&filter).await?;
    let next = (tasks.len() as u32 == limit)
        .then(|| tasks.last().map(|t| t.id))
        .flatten();
    Ok(HttpResponse::Ok().json(json!({ "tasks": tasks, "next": next })))
}

pub async fn children(
    state: web::Data<WebState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id, "task id")?;
    let tasks = state.client.children(id).await?;
    Ok(HttpResponse::Ok().json(json!({ "tasks": tasks, "next": null })))
}

pub async fn post_event(
    state: web::Data<WebState>,
    id: web::Path<String>,
    body: web::Json<SendEvent>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id, "task id")?;
    let body = body.into_inner();
    let ev = state
        .client
        .send_event(id, &body.name, body.payload)
        .await?;
    Ok(HttpResponse::Accepted().json(ev))
}

pub async fn events(
    state: web::Data<WebState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id, "task id")?;
    Ok(HttpResponse::Ok().json(json!({ "events": state.client.events(id).await? })))
}

pub async fn history(
    state: web::Data<WebState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id, "task id")?;
    Ok(HttpResponse::Ok().json(json!({ "history": state.client.history(id).await? })))
}

pub async fn cancel(
    state: web::Data<WebState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id, "task id")?;
    Ok(HttpResponse::Accepted().json(state.client.cancel(id).await?))
}

/// How often an idle watch stream sends a comment, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /api/v1/tasks/{id}/watch`: server-sent events, one per state change,
/// pushed by the task's executor to a follower actor of this request. The
/// stream ends after the final state, or when the server begins to stop.
pub async fn watch(
    state: web::Data<WebState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id, "task id")?;
    let w = state.client.watch(id).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<web::Bytes>(16);
    let stopping = state.stopping();
    actix_web::rt::spawn(async move {
        let mut w = w;
        tokio::pin!(stopping);
        loop {
            let frame = tokio::select! {
                _ = &mut stopping => break,
                r = tokio::time::timeout(KEEP_ALIVE, w.next()) => match r {
                    Err(_) => web::Bytes::from_static(b": keep-alive\n\n"),
                    Ok(None) => break,
                    Ok(Some(task)) => {
                        let data = serde_json::to_string(&task).unwrap_or_default();
                        web::Bytes::from(format!("event: state\ndata: {data}\n\n"))
                    }
                },
            };
            if tx.send(frame).await.is_err() {
                return; // the client went away; dropping `w` ends the watch
            }
        }
        let _ = tx
            .send(web::Bytes::from_static(b"event: end\ndata: {}\n\n"))
            .await;
    });
    let body = stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, actix_web::Error>(b), rx))
    });
    Ok(HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        ))
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-cache")))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

pub async fn executors(state: web::Data<WebState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(json!({ "executors": state.client.executors().await? })))
}

pub async fn queues(state: web::Data<WebState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(json!({ "queues": state.client.queues().await? })))
}

pub async fn get_queue(
    state: web::Data<WebState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.client.queue(&name).await?))
}

/// `PUT /api/v1/queues/{name}`: omitted fields keep their value, `null`
/// lifts a limit.
pub async fn put_queue(
    state: web::Data<WebState>,
    name: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let update: QueueUpdate = parse_body(body.into_inner())?;
    Ok(HttpResponse::Ok().json(state.client.update_queue(&name, &update).await?))
}

/// Body of `PUT /api/v1/schedules/{name}`: the whole schedule (a PUT
/// replaces it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutSchedule {
    pub cron: String,
    pub kind: String,
    #[serde(default)]
    pub input: Value,
    #[serde(default)]
    pub queue: Option<String>,
    #[serde(default)]
    pub priority: Option<i32>,
    #[serde(default)]
    pub run_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    pub delay_ms: Option<u64>,
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub backoff_ms: Option<u64>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub catch_up: Option<String>,
    #[serde(default = "enabled")]
    pub enabled: bool,
}

fn enabled() -> bool {
    true
}

impl PutSchedule {
    fn into_spec(self) -> Result<ScheduleSpec, ApiError> {
        let catch_up: CatchUp = match self.catch_up.as_deref() {
            None => CatchUp::default(),
            Some(c) => c.parse()?,
        };
        Ok(ScheduleSpec {
            cron: self.cron,
            kind: self.kind,
            input: self.input,
            options: TaskOptions {
                queue: self.queue,
                priority: self.priority,
                run_at: self.run_at,
                delay_ms: self.delay_ms,
                max_attempts: self.max_attempts,
                backoff_ms: self.backoff_ms,
                timeout_ms: self.timeout_ms,
            },
            catch_up,
            enabled: self.enabled,
        })
    }
}

/// `GET /api/v1/schedules`.
pub async fn schedules(state: web::Data<WebState>) -> Result<HttpResponse, ApiError> {
    let schedules = state.client.schedules().await?;
    Ok(HttpResponse::Ok().json(json!({ "schedules": schedules })))
}

/// `GET /api/v1/schedules/{name}`.
pub async fn get_schedule(
    state: web::Data<WebState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.client.schedule(&name).await?))
}

/// `PUT /api/v1/schedules/{name}`: 201 created, 200 replaced.
pub async fn put_schedule(
    state: web::Data<WebState>,
    name: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let spec = parse_body::<PutSchedule>(body.into_inner())?.into_spec()?;
    let (schedule, created) = state.client.put_schedule(&name, &spec).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(schedule))
}

/// `DELETE /api/v1/schedules/{name}`: 204; the tasks it created stay.
pub async fn delete_schedule(
    state: web::Data<WebState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.client.delete_schedule(&name).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn kinds(state: web::Data<WebState>) -> Result<HttpResponse, ApiError> {
    let kinds = state.client.store().known_kinds().await?;
    Ok(HttpResponse::Ok().json(json!({ "kinds": kinds })))
}

/// The OpenAPI document, kept in the repository as `web/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI)
}

/// `GET /healthz`: 200 when the database answers, 503 when it does not;
/// either way the body says how the database and each transport stand.
pub async fn healthz(state: web::Data<WebState>) -> HttpResponse {
    let bus = match state.client.bus().stats().await {
        Ok(s) => json!({
            "node": state.client.bus().node(),
            "transports": s.peers.iter().map(|(t, p)| (t.to_string(), json!({"peers": p}))).collect::<serde_json::Map<_, _>>(),
        }),
        Err(e) => json!({"error": e.to_string()}),
    };
    match state.client.store().ping().await {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "ok", "database": "ok", "bus": bus})),
        Err(e) => HttpResponse::ServiceUnavailable()
            .json(json!({"status": "degraded", "database": e.to_string(), "bus": bus})),
    }
}
