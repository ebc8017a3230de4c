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

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, PartialSchema, ToSchema};

use courier_actors::MAX_BATCH;
use courier_actors::{
    CatchUp, NewTask, QueueInfo, QueueUpdate, Schedule, ScheduleSpec, Task, TaskEvent, TaskFilter,
    TaskOptions, TaskState,
};

use crate::error::ApiError;
#[allow(unused_imports)] // named in the `utoipa::path` annotations
use crate::schema::{
    ErrorBody, EventList, ExecutorList, Health, History, Kind, KindList, MinuteCounts, QueueCounts,
    QueueList, QueueName, ScheduleList, ScheduleName, StateCounts, Stats, TaskBatch, TaskId,
    TaskPage, TaskWithSteps, WatchEvent,
};
use crate::WebState;

/// The body of createTask. Unknown fields are refused (422
/// invalid_field); an optional field given as null is the same as one left
/// out. Integer fields take whole numbers (3.0 counts as 3).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(
    json!({"kind": "thumbnail.render", "input": {"image": "s3://photos/cat.jpg", "width": 256}, "wait_ms": 5000, "idempotency_key": "render-cat-256"}),
    json!({"kind": "mail.send", "input": {"to": "alice@example.com"}, "queue": "mail", "priority": 10, "delay_ms": 60000, "max_attempts": 5, "backoff_ms": 2000, "timeout_ms": 30000})
))]
pub struct CreateTask {
    #[schema(value_type = Kind)]
    pub kind: String,
    /// The task's input: any JSON value with no U+0000 in its strings
    /// (422 invalid_field).
    #[serde(default)]
    pub input: Value,
    /// Wait up to this many milliseconds for the task to become final
    /// before answering. Must not exceed the server's cap (60000 by
    /// default; more is 422 invalid_field). Left out or null: answer 201 as
    /// soon as the task is committed.
    #[serde(default)]
    #[schema(examples(5000))]
    pub wait_ms: Option<u64>,
    /// 1 to 256 bytes, no U+0000. A later request with the same key
    /// returns the task the first request created, as it stands, whatever
    /// its own body says.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 256, pattern = "^[^\\x00]*$")]
    pub idempotency_key: Option<String>,
    /// The queue to wait in and run from: 1 to 64 characters of
    /// `[a-z0-9_.-]`. Default: the kind's, else `default`. Executors serve
    /// the queues they are started with (`--queues`).
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[a-z0-9_.-]{1,64}$",
        examples("mail")
    )]
    pub queue: Option<String>,
    /// -100 to 100; within a queue a higher priority starts first, FIFO
    /// among equals. Default: the kind's, else 0.
    #[serde(default)]
    #[schema(minimum = -100, maximum = 100)]
    pub priority: Option<i32>,
    /// Not before this time (RFC 3339): the task is scheduled until then. A
    /// time already past starts at once; one in 2100 or later is refused.
    /// Not with delay_ms.
    #[serde(default)]
    pub run_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Not before this many milliseconds from now (at most 31622400000, a
    /// year): the task is scheduled until then. Not with run_at.
    #[serde(default)]
    #[schema(maximum = 31_622_400_000_u64)]
    pub delay_ms: Option<u64>,
    /// Attempts allowed, 1 to 100: a failed attempt (an error, a panic, a
    /// timeout) with attempts left is retried. Default: the kind's, else 1.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<u32>,
    /// The base of the retry backoff, at most 31622400000: retry n waits a
    /// random time between 50 % and 100 % of min(backoff_ms × 2^(n-1), 1 h).
    /// Default: the kind's, else 1000.
    #[serde(default)]
    #[schema(maximum = 31_622_400_000_u64)]
    pub backoff_ms: Option<u64>,
    /// An attempt running longer (1 to 31622400000 ms) is aborted, its
    /// sub-tasks cancelled, and fails with error code timeout. Default: the
    /// kind's, else none.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 31_622_400_000_u64)]
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
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(mut body: Value) -> Result<T, ApiError> {
    object(&body)?;
    numbers(&mut body);
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

/// The API's own fields' numbers, read as serde reads numbers. JSON (and
/// JSON Schema) count `3.0` as the integer 3; serde's integers refuse it,
/// so an integral number written with a fraction becomes that integer
/// (schemathesis found `"concurrency": 3369.0` refused, and a worker's
/// `running[1].epoch` of `-12599.0`: nested fields too). Numbers are kept
/// as their text (serde_json's `arbitrary_precision`, see Cargo.toml), and a
/// float read as a double must be written as the double prints (`1e-3` is
/// `0.001`), so any other float is written so. The caller's data (a task's
/// `input`, an event's `payload`, a worker's `output` and progress `value`)
/// stays exactly as sent, at any depth.
fn numbers(body: &mut Value) {
    match body {
        Value::Object(fields) => {
            for (name, v) in fields.iter_mut() {
                if !matches!(name.as_str(), "input" | "payload" | "output" | "value") {
                    numbers(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(numbers),
        v => {
            let Some(f) = v.as_f64().filter(|_| v.is_f64()) else {
                return;
            };
            // Exactly integral, and within the range a double holds exactly.
            if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
                *v = if f < 0.0 {
                    Value::from(f as i64)
                } else {
                    Value::from(f as u64)
                };
            } else if f.is_finite() {
                *v = Value::from(f);
            }
        }
    }
}

/// The field serde names in "unknown field `x`, …" or "missing field `x`".
fn unknown_field(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

/// An entry of a batch: the body of createTask without `wait_ms` (given
/// and not null, it is refused with 422 invalid_field).
///
/// Spelled out as createTask's own object schema with `wait_ms` narrowed to
/// null, not as an `allOf` of `CreateTask` and `{"wait_ms": null}`: the two
/// say the same, but generators that merge the members of an `allOf` into
/// one model cannot merge `integer | null` with `null` (openapi-python-client
/// dropped `POST /api/v1/tasks/batch` from its client for it).
pub struct BatchEntry;

impl PartialSchema for BatchEntry {
    fn schema() -> RefOr<Schema> {
        let RefOr::T(Schema::Object(mut entry)) = CreateTask::schema() else {
            unreachable!("CreateTask's schema is an object");
        };
        entry.properties.insert(
            "wait_ms".to_string(),
            ObjectBuilder::new()
                .schema_type(Type::Null)
                .description(Some(
                    "Not taken in a batch, which answers at once: left out or null \
                     (any other value is refused with 422 invalid_field).",
                ))
                .into(),
        );
        entry.description = Some(
            "An entry of a batch: the body of createTask without wait_ms \
             (given and not null, it is refused with 422 invalid_field)."
                .to_string(),
        );
        for example in &mut entry.examples {
            if let Some(fields) = example.as_object_mut() {
                fields.remove("wait_ms");
            }
        }
        RefOr::T(Schema::Object(entry))
    }
}

impl ToSchema for BatchEntry {}

/// The body of createTasks. Unknown fields are refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBatch {
    /// At most 1000 tasks to create, all or none.
    #[schema(value_type = Vec<BatchEntry>, max_items = 1000)]
    pub tasks: Vec<Value>,
}

/// The body of sendEvent. Unknown fields are refused (422 invalid_field).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"name": "approved", "payload": {"by": "alice"}})))]
pub struct SendEvent {
    /// 1 to 128 bytes (UTF-8): a name of 128 characters or fewer may still
    /// be refused (422 invalid_field) if it is longer than 128 bytes.
    #[schema(min_length = 1, max_length = 128, pattern = "^[^\\x00]*$")]
    pub name: String,
    /// Any JSON value with no U+0000 in its strings.
    #[serde(default)]
    pub payload: Value,
}

/// Query of `GET /api/v1/tasks`. Each is read as text and checked here, so
/// a bad one is 400 invalid_query naming it.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only tasks in this state.
    #[param(value_type = Option<TaskState>)]
    pub state: Option<String>,
    /// Only tasks of this kind.
    pub kind: Option<String>,
    /// Only tasks of this queue.
    pub queue: Option<String>,
    /// Only tasks created by this schedule.
    pub schedule: Option<String>,
    /// Only tasks whose id starts with this: 1 to 32 hex digits, dashes
    /// ignored (a whole id finds that task).
    #[param(pattern = "^-*[0-9a-fA-F](-*[0-9a-fA-F]){0,31}-*$")]
    pub id: Option<String>,
    /// Only sub-tasks of this task.
    #[param(value_type = Option<Uuid>)]
    pub parent: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// The `next` of the previous page.
    #[param(value_type = Option<Uuid>)]
    pub after: Option<String>,
    /// Which fields each row has: `all`, or a comma-separated list of a
    /// task's fields (`id` always); by default every field but `input`
    /// and `output`.
    pub fields: Option<String>,
}

/// The paging of the executors.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// The `next` of the previous page.
    pub after: Option<String>,
}

/// The paging of a task's events and history: the cursor is a number (an
/// event's `seq`, a history line's `id`).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NumberedPageQuery {
    /// Page size, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// The `next` of the previous page.
    #[param(value_type = Option<i64>)]
    pub after: Option<String>,
}

/// The paging of a task's sub-tasks: as [`PageQuery`], and `fields`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ChildrenQuery {
    /// Page size, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// The `next` of the previous page.
    #[param(value_type = Option<Uuid>)]
    pub after: Option<String>,
    /// Which fields each row has, as for the task list.
    pub fields: Option<String>,
}

pub const DEFAULT_PAGE: u32 = 100;

/// The most a page's rows take, serialized: a page stops early (with
/// `next` set) before its body passes 8 MiB, so no answer holds more,
/// whatever the inputs and outputs in it (DESIGN, "HTTP API").
pub const MAX_PAGE_BYTES: usize = 8 << 20;

/// What a task row of a list holds (`fields`).
#[derive(Clone, Debug)]
enum Fields {
    /// Every field but `input` and `output`.
    Default,
    All,
    /// These (and `id`).
    Only(Vec<String>),
}

impl Fields {
    fn parse(given: Option<&str>) -> Result<Fields, ApiError> {
        match given.map(str::trim) {
            None | Some("") => Ok(Fields::Default),
            Some("all") => Ok(Fields::All),
            Some(list) => {
                let known = task_fields();
                let names: Vec<String> = list.split(',').map(|f| f.trim().to_string()).collect();
                if let Some(bad) = names.iter().find(|n| !known.contains(&n.as_str())) {
                    return Err(ApiError::InvalidQuery(format!(
                        "fields: {bad:?} is not a field of a task (all, or some of: {})",
                        known.join(", ")
                    )));
                }
                Ok(Fields::Only(names))
            }
        }
    }

    /// Whether rows need the tasks' `input` or `output`.
    fn bodies(&self) -> bool {
        match self {
            Fields::Default => false,
            Fields::All => true,
            Fields::Only(f) => f.iter().any(|n| n == "input" || n == "output"),
        }
    }

    fn project(&self, mut row: Value) -> Value {
        if let Value::Object(m) = &mut row {
            match self {
                Fields::All => {}
                Fields::Default => {
                    m.remove("input");
                    m.remove("output");
                }
                Fields::Only(keep) => m.retain(|k, _| k == "id" || keep.iter().any(|f| f == k)),
            }
        }
        row
    }
}

/// How many bytes `v` takes as JSON, counted without keeping them.
fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// A query parameter given with a value (`after=` is as good as none).
fn given(p: &Option<String>) -> Option<&str> {
    p.as_deref().filter(|s| !s.is_empty())
}

/// The rows to read for a page of `limit`: one more, which tells whether
/// another page follows (and is not shown).
fn one_more(limit: u32) -> u32 {
    limit + 1
}

/// The fields of a task as JSON, for `fields`.
pub(crate) fn task_fields() -> &'static [&'static str] {
    &[
        "id",
        "kind",
        "state",
        "input",
        "output",
        "error",
        "progress",
        "parent_id",
        "parent_attempt",
        "executor_id",
        "attempts",
        "cancel_requested",
        "idempotency_key",
        "trace_id",
        "created_at",
        "started_at",
        "finished_at",
        "updated_at",
        "queue",
        "priority",
        "run_at",
        "max_attempts",
        "backoff_ms",
        "timeout_ms",
        "errors",
        "schedule",
        "waiting",
        "timeout_at",
    ]
}

/// Rows of a page as JSON, until `limit` of them or [`MAX_PAGE_BYTES`]:
/// the rows kept and the cursor of the next page (`cursor` of the last row
/// kept), `None` when this is the last. `rows` were read with one more
/// than `limit` (see [`one_more`]), so a full last page says so.
fn page<T: serde::Serialize, C>(
    mut rows: Vec<T>,
    limit: u32,
    project: impl Fn(Value) -> Value,
    cursor: impl Fn(&T) -> C,
) -> Result<(Vec<Value>, Option<C>), ApiError> {
    let full = rows.len() as u32 > limit;
    rows.truncate(limit as usize);
    let mut out = Vec::with_capacity(rows.len());
    let mut bytes = 0;
    let mut last = None;
    for row in rows {
        let v = project(serde_json::to_value(&row).map_err(|e| {
            tracing::error!(error = %e, "a row did not serialize");
            ApiError::Internal
        })?);
        let size = json_len(&v) + 1;
        // Always one row, so that a page makes progress.
        if !out.is_empty() && bytes + size > MAX_PAGE_BYTES {
            return Ok((out, last));
        }
        bytes += size;
        last = Some(cursor(&row));
        out.push(v);
    }
    Ok((out, if full { last } else { None }))
}
pub const MAX_PAGE: u32 = 1000;

/// The query parameter `name`: a whole number from 1 to `max`, or
/// `default` when not given; 400 invalid_query naming it otherwise.
fn query_number(given: Option<&str>, name: &str, default: u32, max: u32) -> Result<u32, ApiError> {
    match given {
        None => Ok(default),
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::InvalidQuery(format!("{name} must be a whole number from 1 to {max}"))
            }),
    }
}

pub(crate) fn parse_id(s: &str, what: &str) -> Result<Uuid, ApiError> {
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

#[utoipa::path(
    post,
    path = "/api/v1/tasks",
    operation_id = "createTask",
    tag = "tasks",
    summary = "Create a task",
    description = "Commits a task of the given kind to its queue. Without wait_ms the answer is 201 as soon as the task is committed: pending, or scheduled if run_at or delay_ms puts its start later. With wait_ms the request waits for the task's completion, which is pushed to it: 200 if the task becomes final in time, 202 with the task as it stands if wait_ms runs out (retries and their backoffs count against wait_ms). Queue options left out (or null) take the kind's defaults, else the global ones: queue `default`, priority 0, start now, max_attempts 1, backoff_ms 1000, no timeout. Unknown fields are refused. The body is checked in full first; then, if an earlier request created a task with the same idempotency_key, that task is returned as it stands with 200, whatever this body says.",
    request_body = CreateTask,
    responses(
        (status = 200, description = "The task became final within wait_ms, or an earlier request with the same idempotency_key created it (returned as it stands).", body = Task),
        (status = 201, description = "The task was created (no wait_ms).", body = Task, headers(("Location" = String, description = "The task's path, /api/v1/tasks/{id}."))),
        (status = 202, description = "wait_ms ran out; the task as it stands.", body = Task),
        (status = 400, description = "malformed_json: the body is not JSON, or not sent as Content-Type: application/json. (JSON of the wrong shape or types is 422 invalid_field.)", body = ErrorBody),
        (status = 413, description = "body_too_large: the body is over the limit (1 MiB by default).", body = ErrorBody),
        (status = 422, description = "invalid_field: a field fails validation (a value out of range, of the wrong type, run_at given with delay_ms, wait_ms over the server's cap), a field is unknown, kind is missing, or the body is JSON but not an object; `field` names the field when one is at fault. unknown_kind: no alive executor runs this kind (`field` is \"kind\").", body = ErrorBody),
    )
)]
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
#[utoipa::path(
    post,
    path = "/api/v1/tasks/batch",
    operation_id = "createTasks",
    tag = "tasks",
    summary = "Create tasks in one transaction",
    description = "Commits up to 1000 tasks in one transaction: all of them or, if any entry is refused, none. Each entry is the body of createTask without wait_ms (a batch answers at once). The answer lists the tasks in the order of the entries; an entry whose idempotency_key names an existing task (or an earlier entry of the same batch) gives that task, as it stands.",
    request_body = CreateBatch,
    responses(
        (status = 201, description = "The tasks, in the order of the entries.", body = TaskBatch),
        (status = 400, description = "malformed_json: the body is not JSON, or not sent as Content-Type: application/json. (JSON of the wrong shape or types is 422 invalid_field.)", body = ErrorBody),
        (status = 413, description = "body_too_large: the body is over the limit (1 MiB by default).", body = ErrorBody),
        (status = 422, description = "invalid_field or unknown_kind, as for createTask, for the first bad entry: `field` names it as tasks[i].field (e.g. tasks[3].priority); or invalid_field for the batch itself (`field` \"tasks\": missing, not an array, or over 1000 entries). Nothing was created.", body = ErrorBody),
    )
)]
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
    Ok(HttpResponse::Created().json(TaskBatch { tasks }))
}

#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}",
    operation_id = "getTask",
    tag = "tasks",
    summary = "Get a task",
    description = "The task as it stands, with its journaled durable steps (`steps`, in the order they ended; only this endpoint gives them). A task deleted by retention is 404.",
    params(TaskId),
    responses(
        (status = 200, description = "The task, with its journaled steps.", body = TaskWithSteps),
        (status = 400, description = "invalid_query: a query parameter or the path id is invalid (e.g. not a uuid).", body = ErrorBody),
        (status = 404, description = "not_found: no such task (never created, or deleted by retention).", body = ErrorBody),
    )
)]
pub async fn get_task(
    state: web::Data<WebState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id, "task id")?;
    let task = state.client.get(id).await?;
    let steps = state.client.steps(id).await?;
    Ok(HttpResponse::Ok().json(TaskWithSteps { task, steps }))
}

#[utoipa::path(
    get,
    path = "/api/v1/tasks",
    operation_id = "listTasks",
    tag = "tasks",
    summary = "List tasks",
    description = "Tasks, newest first, a page at a time. Pass the previous page's `next` as `after` for the next page. An unknown query parameter is answered 400 invalid_query.",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of tasks.", body = TaskPage),
        (status = 400, description = "invalid_query: a query parameter or the path id is invalid (e.g. not a uuid).", body = ErrorBody),
    )
)]
pub async fn list_tasks(
    state: web::Data<WebState>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let limit = query_number(q.limit.as_deref(), "limit", DEFAULT_PAGE, MAX_PAGE)?;
    let fields = Fields::parse(q.fields.as_deref())?;
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
        id_prefix: q
            .id
            .as_deref()
            .map(|p| p.parse::<courier_actors::IdPrefix>())
            .transpose()
            .map_err(|e| ApiError::InvalidQuery(e.to_string()))?,
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
        limit: one_more(limit),
        without_bodies: !fields.bodies(),
    };
    let tasks = state.client.list(&filter).await?;
    let (tasks, next) = page(tasks, limit, |v| fields.project(v), |t| t.id)?;
    Ok(HttpResponse::Ok().json(TaskPage { tasks, next }))
}

#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}/children",
    operation_id = "listChildren",
    tag = "tasks",
    summary = "List a task's sub-tasks",
    description = "The tasks this task spawned, in spawn order, a page at a time (rows as in the task list: `fields`). Pass the previous page's `next` as `after` for the next page.",
    params(TaskId, ChildrenQuery),
    responses(
        (status = 200, description = "The sub-tasks.", body = TaskPage),
        (status = 400, description = "invalid_query: a query parameter or the path id is invalid (e.g. not a uuid).", body = ErrorBody),
        (status = 404, description = "not_found: no such task (never created, or deleted by retention).", body = ErrorBody),
    )
)]
pub async fn children(
    state: web::Data<WebState>,
    id: web::Path<String>,
    q: web::Query<ChildrenQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id, "task id")?;
    let limit = query_number(q.limit.as_deref(), "limit", DEFAULT_PAGE, MAX_PAGE)?;
    let fields = Fields::parse(q.fields.as_deref())?;
    let after = q
        .after
        .as_deref()
        .map(|a| parse_id(a, "after"))
        .transpose()?;
    let tasks = state
        .client
        .children_page(id, after, one_more(limit), fields.bodies())
        .await?;
    let (tasks, next) = page(tasks, limit, |v| fields.project(v), |t| t.id)?;
    Ok(HttpResponse::Ok().json(TaskPage { tasks, next }))
}

#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/events",
    operation_id = "sendEvent",
    tag = "events",
    summary = "Send an event to a task",
    description = "Commits the event to the task's durable inbox, then delivers it to the task. An event sent to a scheduled or pending task is kept and delivered when it runs. Unknown body fields are refused (422).",
    request_body = SendEvent,
    params(TaskId),
    responses(
        (status = 202, description = "The event, committed to the task's inbox.", body = TaskEvent),
        (status = 400, description = "malformed_json (the body is not JSON, or not sent as Content-Type: application/json) or invalid_query (the path id is not a uuid).", body = ErrorBody),
        (status = 404, description = "not_found: no such task (never created, or deleted by retention).", body = ErrorBody),
        (status = 409, description = "conflict: the task is final and takes no more events.", body = ErrorBody),
        (status = 413, description = "body_too_large: the body is over the limit (1 MiB by default).", body = ErrorBody),
        (status = 422, description = "invalid_field: a field fails validation (or the body is JSON of the wrong shape, or has an unknown field).", body = ErrorBody),
    )
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}/events",
    operation_id = "listEvents",
    tag = "events",
    summary = "List a task's events",
    description = "The task's inbox, in order, a page at a time. Pass the previous page's `next` as `after` for the next page.",
    params(TaskId, NumberedPageQuery),
    responses(
        (status = 200, description = "The events.", body = EventList),
        (status = 400, description = "invalid_query: a query parameter or the path id is invalid (e.g. not a uuid).", body = ErrorBody),
        (status = 404, description = "not_found: no such task (never created, or deleted by retention).", body = ErrorBody),
    )
)]
pub async fn events(
    state: web::Data<WebState>,
    id: web::Path<String>,
    q: web::Query<NumberedPageQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id, "task id")?;
    let (limit, after) = number_page(&q)?;
    let events = state.client.events_page(id, after, one_more(limit)).await?;
    let (events, next) = page(events, limit, |v| v, |e| e.seq)?;
    Ok(HttpResponse::Ok().json(EventList { events, next }))
}

#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}/history",
    operation_id = "getHistory",
    tag = "tasks",
    summary = "Get a task's state history",
    description = "Every state change of the task, oldest first, a page at a time. Pass the previous page's `next` as `after` for the next page.",
    params(TaskId, NumberedPageQuery),
    responses(
        (status = 200, description = "The history.", body = History),
        (status = 400, description = "invalid_query: a query parameter or the path id is invalid (e.g. not a uuid).", body = ErrorBody),
        (status = 404, description = "not_found: no such task (never created, or deleted by retention).", body = ErrorBody),
    )
)]
pub async fn history(
    state: web::Data<WebState>,
    id: web::Path<String>,
    q: web::Query<NumberedPageQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id, "task id")?;
    let (limit, after) = number_page(&q)?;
    let history = state
        .client
        .history_page(id, after, one_more(limit))
        .await?;
    let (history, next) = page(history, limit, |v| v, |h| h.id)?;
    Ok(HttpResponse::Ok().json(History { history, next }))
}

/// `limit` and a numbered cursor (`after`: an event's `seq`, a history
/// line's `id`); `fields` has no place here.
fn number_page(q: &NumberedPageQuery) -> Result<(u32, Option<i64>), ApiError> {
    let limit = query_number(q.limit.as_deref(), "limit", DEFAULT_PAGE, MAX_PAGE)?;
    let after = q
        .after
        .as_deref()
        .map(|a| {
            a.parse::<i64>().map_err(|_| {
                ApiError::InvalidQuery("after must be the `next` of the previous page".into())
            })
        })
        .transpose()?;
    Ok((limit, after))
}

#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/cancel",
    operation_id = "cancelTask",
    tag = "tasks",
    summary = "Cancel a task",
    description = "Requests cancellation; it cascades to the task's sub-tasks. A scheduled or pending task is cancelled at once. Cancelling a final task is not an error: the answer is 202 with the task unchanged. Takes no body.",
    params(TaskId),
    responses(
        (status = 202, description = "Cancellation requested; the task as it stands.", body = Task),
        (status = 400, description = "invalid_query: a query parameter or the path id is invalid (e.g. not a uuid).", body = ErrorBody),
        (status = 404, description = "not_found: no such task (never created, or deleted by retention).", body = ErrorBody),
    )
)]
pub async fn cancel(
    state: web::Data<WebState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id, "task id")?;
    Ok(HttpResponse::Accepted().json(state.client.cancel(id).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/retry",
    operation_id = "retryTask",
    tag = "tasks",
    summary = "Retry a task now",
    description = "A scheduled task (waiting for its start time or for a retry's backoff) becomes pending at once. A failed or cancelled root task gets a new attempt now: pending again, one more attempt allowed if it had used them all; as for any retry, its errors and journaled steps stay (succeeded steps are not run again) and the attempt spawns its sub-tasks anew. Any other task, or a finished sub-task (its end was reported to its parent), is 409. Takes no body.",
    params(TaskId),
    responses(
        (status = 200, description = "The task, pending now.", body = Task),
        (status = 400, description = "invalid_query: a query parameter or the path id is invalid (e.g. not a uuid).", body = ErrorBody),
        (status = 404, description = "not_found: no such task (never created, or deleted by retention).", body = ErrorBody),
        (status = 409, description = "conflict: the task is pending, running, suspended or succeeded, or is a finished sub-task.", body = ErrorBody),
    )
)]
pub async fn retry(
    state: web::Data<WebState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id, "task id")?;
    Ok(HttpResponse::Ok().json(state.client.retry(id).await?))
}

/// How often an idle watch stream sends a comment, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /api/v1/tasks/{id}/watch`: server-sent events, one per state change,
/// pushed by the task's executor to a follower actor of this request. The
/// stream ends after the final state, or when the server begins to stop.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}/watch",
    operation_id = "watchTask",
    tag = "tasks",
    summary = "Watch a task's state changes",
    description = "A server-sent event stream: one message per state change, with `event: state` and the task JSON as `data`. The first message is the task as it stands. After the final state, one `event: end` message (data `{}`) is sent and the stream ends. An idle stream gets a `: keep-alive` comment every 15 s. Errors (e.g. 404) are answered before the stream starts.",
    params(TaskId),
    responses(
        (status = 200, description = "The event stream.", content_type = "text/event-stream", body = WatchEvent),
        (status = 400, description = "invalid_query: a query parameter or the path id is invalid (e.g. not a uuid).", body = ErrorBody),
        (status = 404, description = "not_found: no such task (never created, or deleted by retention).", body = ErrorBody),
    )
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/executors",
    operation_id = "listExecutors",
    tag = "executors",
    summary = "List executors",
    description = "Every executor known (a dead or stopped one until its retention, `--retain executors=`), newest first, with the kinds it runs and the queues it serves, a page at a time. Pass the previous page's `next` as `after` for the next page.",
    params(PageQuery),
    responses(
        (status = 200, description = "The executors.", body = ExecutorList),
        (status = 400, description = "invalid_query: a query parameter is invalid.", body = ErrorBody),
    )
)]
pub async fn executors(
    state: web::Data<WebState>,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query_number(q.limit.as_deref(), "limit", DEFAULT_PAGE, MAX_PAGE)?;
    let executors = state
        .client
        .executors_page(given(&q.after), one_more(limit))
        .await?;
    let (executors, next) = page(executors, limit, |v| v, |e| e.id.clone())?;
    Ok(HttpResponse::Ok().json(ExecutorList { executors, next }))
}

#[utoipa::path(
    get,
    path = "/api/v1/queues",
    operation_id = "listQueues",
    tag = "queues",
    summary = "List queues",
    description = "Every queue that has a setting, a task scheduled, pending, running or suspended, or an alive executor serving it, by name.",
    responses(
        (status = 200, description = "The queues.", body = QueueList),
    )
)]
pub async fn queues(state: web::Data<WebState>) -> Result<HttpResponse, ApiError> {
    let queues = state.client.queues().await?;
    Ok(HttpResponse::Ok().json(QueueList { queues }))
}

/// Query of `GET /api/v1/stats`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// How many minutes of finished tasks, 1 to 180 (default 60).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 180)]
    pub minutes: Option<String>,
}

/// The most minutes `GET /api/v1/stats` gives (the counts are kept three hours).
pub const MAX_STATS_MINUTES: u32 = 180;

#[utoipa::path(
    get,
    path = "/api/v1/stats",
    operation_id = "getStats",
    tag = "queues",
    summary = "Counts of tasks",
    description = "Deployment-wide: the tasks the store keeps in each state, the same by queue, and how many tasks succeeded, failed and were cancelled in each of the last minutes. Read from counters the database keeps as tasks change, so it costs the same whatever the number of tasks.",
    params(StatsQuery),
    responses(
        (status = 200, description = "The counts.", body = Stats),
        (status = 400, description = "invalid_query: `minutes` is not a whole number from 1 to 180, or an unknown parameter.", body = ErrorBody),
    )
)]
pub async fn stats(
    state: web::Data<WebState>,
    q: web::Query<StatsQuery>,
) -> Result<HttpResponse, ApiError> {
    let minutes = query_number(q.minutes.as_deref(), "minutes", 60, MAX_STATS_MINUTES)?;
    let client = &state.client;
    let mut states = StateCounts::default();
    let mut queues: Vec<QueueCounts> = Vec::new();
    for (queue, st, n) in client.count_by_queue().await? {
        states.add(st, n);
        match queues.last_mut() {
            Some(q) if q.queue == queue => q.states.add(st, n),
            _ => {
                let mut counts = StateCounts::default();
                counts.add(st, n);
                queues.push(QueueCounts {
                    queue,
                    states: counts,
                });
            }
        }
    }
    let minutes = client
        .throughput(minutes)
        .await?
        .into_iter()
        .map(|m| MinuteCounts {
            at: chrono::DateTime::from_timestamp(m.minute * 60, 0).unwrap_or_default(),
            succeeded: m.succeeded,
            failed: m.failed,
            cancelled: m.cancelled,
        })
        .collect();
    Ok(HttpResponse::Ok().json(Stats {
        states,
        queues,
        minutes,
    }))
}

#[utoipa::path(
    get,
    path = "/api/v1/queues/{name}",
    operation_id = "getQueue",
    tag = "queues",
    summary = "Get a queue",
    description = "The queue's settings and counts. Any valid name answers: a queue nobody mentioned has no limits, is not paused and holds nothing.",
    params(QueueName),
    responses(
        (status = 200, description = "The queue.", body = QueueInfo),
        (status = 422, description = "invalid_field: the name in the path is not a queue name (`field` \"queue\").", body = ErrorBody),
    )
)]
pub async fn get_queue(
    state: web::Data<WebState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.client.queue(&name).await?))
}

/// `PUT /api/v1/queues/{name}`: omitted fields keep their value, `null`
/// lifts a limit.
#[utoipa::path(
    put,
    path = "/api/v1/queues/{name}",
    operation_id = "updateQueue",
    tag = "queues",
    summary = "Change a queue's settings",
    description = "Changes the queue's settings, which hold across every executor on every host: fields left out (and a null paused) keep their value; a null concurrency or rate_per_s lifts that limit. Tasks already running go on. A new or changed rate starts with a full bucket (bursts up to max(1, rate_per_s)). Unknown fields are refused. Answers the queue as it now stands.",
    request_body = QueueUpdate,
    params(QueueName),
    responses(
        (status = 200, description = "The queue, with its new settings.", body = QueueInfo),
        (status = 400, description = "malformed_json: the body is not JSON, or not sent as Content-Type: application/json. (JSON of the wrong shape or types is 422 invalid_field.)", body = ErrorBody),
        (status = 413, description = "body_too_large: the body is over the limit (1 MiB by default).", body = ErrorBody),
        (status = 422, description = "invalid_field: a value out of range or of the wrong type, an unknown field, or a name in the path that is not a queue name (`field` \"queue\"); `field` names the field at fault.", body = ErrorBody),
    )
)]
pub async fn put_queue(
    state: web::Data<WebState>,
    name: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let update: QueueUpdate = parse_body(body.into_inner())?;
    Ok(HttpResponse::Ok().json(state.client.update_queue(&name, &update).await?))
}

/// The body of putSchedule: the whole definition (fields left out take
/// their defaults; a PUT replaces the schedule). Unknown fields are refused
/// (422 invalid_field); an optional field given as null is the same as one
/// left out.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"cron": "0 3 * * *", "kind": "report.build", "input": {"format": "pdf"}, "queue": "reports", "max_attempts": 3, "timeout_ms": 600000, "catch_up": "one"})))]
pub struct PutSchedule {
    /// When to create a task, in UTC: 5 fields (minute hour day-of-month
    /// month day-of-week) or 6 (seconds first).
    #[schema(examples("0 3 * * *", "*/10 * * * * *"))]
    pub cron: String,
    #[schema(value_type = Kind)]
    pub kind: String,
    /// The input of every task it creates: any JSON value with no U+0000
    /// in its strings (422 invalid_field).
    #[serde(default)]
    pub input: Value,
    /// The queue of the tasks it creates; null: the kind's, else `default`.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64, pattern = "^[a-z0-9_.-]{1,64}$")]
    pub queue: Option<String>,
    /// The priority of the tasks it creates, -100 to 100; null: the
    /// kind's, else 0.
    #[serde(default)]
    #[schema(minimum = -100, maximum = 100)]
    pub priority: Option<i32>,
    /// Refused: a schedule's tasks start at their slot (use delay_ms).
    #[serde(default)]
    #[schema(ignore)]
    pub run_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Each task it creates starts this many milliseconds after its slot
    /// (scheduled until then); null: at once.
    #[serde(default)]
    #[schema(maximum = 31_622_400_000_u64)]
    pub delay_ms: Option<u64>,
    /// Attempts allowed to each task it creates, 1 to 100; null: the
    /// kind's, else 1.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<u32>,
    /// The retry backoff base of the tasks it creates; null: the kind's,
    /// else 1000.
    #[serde(default)]
    #[schema(maximum = 31_622_400_000_u64)]
    pub backoff_ms: Option<u64>,
    /// The attempt timeout of the tasks it creates; null: the kind's, else
    /// none.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 31_622_400_000_u64)]
    pub timeout_ms: Option<u64>,
    /// What becomes of slots missed while nothing could make them (every
    /// server down): `skip` (default), `one` task for all, or `all` (one
    /// each, at most the latest 100).
    #[serde(default)]
    #[schema(value_type = Option<CatchUp>)]
    pub catch_up: Option<String>,
    /// false: it creates no task until put again with true.
    #[serde(default = "enabled")]
    #[schema(default = true)]
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
#[utoipa::path(
    get,
    path = "/api/v1/schedules",
    operation_id = "listSchedules",
    tag = "schedules",
    summary = "List schedules",
    description = "Every schedule, by name, with its next runs.",
    responses(
        (status = 200, description = "The schedules.", body = ScheduleList),
    )
)]
pub async fn schedules(state: web::Data<WebState>) -> Result<HttpResponse, ApiError> {
    let schedules = state.client.schedules().await?;
    Ok(HttpResponse::Ok().json(ScheduleList { schedules }))
}

/// `GET /api/v1/schedules/{name}`.
#[utoipa::path(
    get,
    path = "/api/v1/schedules/{name}",
    operation_id = "getSchedule",
    tag = "schedules",
    summary = "Get a schedule",
    description = "The schedule, with its next runs.",
    params(ScheduleName),
    responses(
        (status = 200, description = "The schedule.", body = Schedule),
        (status = 404, description = "not_found: no schedule of this name.", body = ErrorBody),
    )
)]
pub async fn get_schedule(
    state: web::Data<WebState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.client.schedule(&name).await?))
}

/// `PUT /api/v1/schedules/{name}`: 201 created, 200 replaced.
#[utoipa::path(
    put,
    path = "/api/v1/schedules/{name}",
    operation_id = "putSchedule",
    tag = "schedules",
    summary = "Create or replace a schedule",
    description = "Creates the schedule, or replaces its whole definition: fields left out take their defaults (input null, catch_up skip, enabled true, the task options the kind's defaults), not the values they had. To change one field (e.g. enabled), get the schedule and put its fields back with that one changed. Its next run is computed anew from now; tasks it already created are not touched. A disabled schedule creates no task and has no next run.",
    request_body = PutSchedule,
    params(ScheduleName),
    responses(
        (status = 200, description = "The schedule was replaced; as it now stands.", body = Schedule),
        (status = 201, description = "The schedule was created.", body = Schedule),
        (status = 400, description = "malformed_json: the body is not JSON, or not sent as Content-Type: application/json. (JSON of the wrong shape or types is 422 invalid_field.)", body = ErrorBody),
        (status = 413, description = "body_too_large: the body is over the limit (1 MiB by default).", body = ErrorBody),
        (status = 422, description = "invalid_field: the cron expression does not parse (`field` \"cron\"), a value is out of range or of the wrong type, or the name in the path is not a schedule name (`field` \"name\"); `field` names the field at fault. unknown_kind: no alive executor runs this kind (`field` \"kind\").", body = ErrorBody),
    )
)]
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
#[utoipa::path(
    delete,
    path = "/api/v1/schedules/{name}",
    operation_id = "deleteSchedule",
    tag = "schedules",
    summary = "Delete a schedule",
    description = "Deletes the schedule: it creates no more tasks. The tasks it already created stay, and keep its name in their `schedule`.",
    params(ScheduleName),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "not_found: no schedule of this name.", body = ErrorBody),
    )
)]
pub async fn delete_schedule(
    state: web::Data<WebState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.client.delete_schedule(&name).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    get,
    path = "/api/v1/kinds",
    operation_id = "listKinds",
    tag = "executors",
    summary = "List runnable kinds",
    description = "The kinds known to creates: those some alive executor runs, and every kind a worker registered (until retention deletes its row).",
    responses(
        (status = 200, description = "The kinds.", body = KindList),
    )
)]
pub async fn kinds(state: web::Data<WebState>) -> Result<HttpResponse, ApiError> {
    let kinds = state.client.known_kinds().await?;
    Ok(HttpResponse::Ok().json(KindList { kinds }))
}

/// `GET /healthz`: 200 when the database answers, 503 when it does not.
/// The body says how the database and each transport stand; why the
/// database does not answer (its error, which may name hosts and users)
/// only to a caller with a valid token, and in the log.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "meta",
    summary = "Health check",
    description = "Whether the server and its database answer. Never needs a token; the database's error text is shown only to a caller that sends a valid one.",
    responses(
        (status = 200, description = "Healthy.", body = Health),
        (status = 503, description = "Degraded: the database does not answer (`database` is `down`, or its error for a caller with a valid token).", body = Health),
    )
)]
pub async fn healthz(req: HttpRequest, state: web::Data<WebState>) -> HttpResponse {
    let trusted = state.tokens.borne_by(req.headers());
    let bus = match state.client.bus().stats().await {
        Ok(s) => json!({
            "node": state.client.bus().node(),
            "transports": s.peers.iter().map(|(t, p)| (t.to_string(), json!({"peers": p}))).collect::<serde_json::Map<_, _>>(),
        }),
        Err(e) if trusted => json!({"error": e.to_string()}),
        Err(_) => json!({"error": "down"}),
    };
    match state.client.ping().await {
        Ok(()) => HttpResponse::Ok().json(Health {
            status: "ok",
            database: "ok".into(),
            bus,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "health check: the database does not answer");
            HttpResponse::ServiceUnavailable().json(Health {
                status: "degraded",
                database: if trusted {
                    e.to_string()
                } else {
                    "down".into()
                },
                bus,
            })
        }
    }
}
