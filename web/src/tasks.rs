//! Tasks: create one or a batch, read, list (with `fields`), their
//! sub-tasks, events, history, cancel, retry now, and watch
//! (`/api/v1/tasks…`, tags `tasks` and `events`).

use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::stream;
use serde::Deserialize;
use serde_json::Value;

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, PartialSchema, ToSchema};

use courier_actors::MAX_BATCH;
use courier_actors::{NewTask, Task, TaskEvent, TaskFilter, TaskOptions, TaskState};

use crate::error::ApiError;
use crate::page::{one_more, page, DEFAULT_PAGE, MAX_PAGE};
use crate::request::{object, parse_body, parse_id, query_number, trace_of, unknown_field};
#[allow(unused_imports)] // named in the `utoipa::path` annotations
use crate::responses::{BadJson, BadQuery, NoTask, TooLarge};
#[allow(unused_imports)] // named in the `utoipa::path` annotations
use crate::schema::{
    ErrorBody, EventList, History, Kind, TaskBatch, TaskId, TaskPage, TaskWithSteps, WatchEvent,
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
        BadJson,
        TooLarge,
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
        BadJson,
        TooLarge,
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
        BadQuery,
        NoTask,
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
        BadQuery,
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
        BadQuery,
        NoTask,
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
        NoTask,
        (status = 409, description = "conflict: the task is final and takes no more events.", body = ErrorBody),
        TooLarge,
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
        BadQuery,
        NoTask,
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
        BadQuery,
        NoTask,
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
        BadQuery,
        NoTask,
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
        BadQuery,
        NoTask,
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
        BadQuery,
        NoTask,
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
