//! The worker protocol over HTTP (`/api/v1/workers/…`, PROTOCOL.md
//! section 7): a worker process in any language registers, claims with a
//! long poll, renews its lease and writes its tasks' steps, suspensions,
//! spawns, progress and ends. Each handler checks its body and calls
//! [`courier_actors::workers::Workers`], which writes through the same
//! fenced store operations an executor uses.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use courier_actors::workers::{End, Registration, SuspendRequest, Suspended};
use courier_actors::{Error as CoreError, Step, Task, TaskEvent, TaskOptions};

use crate::error::ApiError;
use crate::request::{parse_body, parse_id};
#[allow(unused_imports)] // named in the `utoipa::path` annotations
use crate::responses::{
    Fenced, WorkerBadJson, WorkerBadRequest, WorkerInvalid, WorkerNoTask, WorkerNul,
};
#[allow(unused_imports)] // named in the `utoipa::path` annotations
use crate::schema::ErrorBody;
use crate::WebState;

/// The worker protocol's part of the OpenAPI document (merged into it).
#[derive(OpenApi)]
#[openapi(
    tags((name = "workers", description = "The worker protocol: processes in other languages that run task kinds (PROTOCOL.md, section 7).")),
    paths(register, stop, claim, renew, step, progress, spawn, suspend, finish, release),
    components(schemas(
        RegisterWorker, WorkerRegistered, ClaimRequest, ClaimAnswer, ClaimedTask, RenewRequest,
        HeldTask, RenewAnswer, StepRequest, ProgressRequest, SpawnRequest, SuspendBody,
        SuspendAnswer, FinishRequest, ReleaseRequest, StepState, FinishOutcome, FailureCode,
    )),
)]
pub struct WorkersDoc;

/// A worker's id in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct WorkerId {
    /// The id `registerWorker` gave.
    #[allow(dead_code)]
    pub worker: String,
}

/// A worker's id and one of its tasks in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct WorkerTask {
    /// The id `registerWorker` gave.
    #[allow(dead_code)]
    pub worker: String,
    /// The task's id (a UUID).
    #[allow(dead_code)]
    pub task: Uuid,
}

/// Maps the protocol's errors: a lost task is 409 `fenced`, a worker that
/// is known but not alive (dead, stopped) 410 `worker_gone`, an unknown
/// worker 404 `not_found` (by `ApiError::from`).
fn err(e: CoreError) -> ApiError {
    match e {
        CoreError::Fenced(id) => ApiError::Fenced(format!(
            "task {id} is no longer held by this worker at this epoch: stop its run"
        )),
        CoreError::WorkerGone(m) => ApiError::Gone(m),
        e => ApiError::from(e),
    }
}

/// The body of registerWorker.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "billing-1", "language": "python", "kinds": ["py.provision"], "queues": ["default"], "capacity": 16}))]
pub struct RegisterWorker {
    /// The worker's name: 1 to 64 of `[A-Za-z0-9_.-]`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    pub name: String,
    /// Its language (`python`, …): 1 to 64 of `[A-Za-z0-9_.-]`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    pub language: String,
    /// The kinds it runs (1 to 1000), each 1 to 128 characters of
    /// `[A-Za-z0-9._:-]`: each is known from now on.
    #[schema(min_items = 1, max_items = 1000, value_type = Vec<crate::schema::Kind>)]
    pub kinds: Vec<String>,
    /// The queues it serves (default `["default"]`), each 1 to 64
    /// characters of `[a-z0-9_.-]`.
    #[serde(default)]
    #[schema(min_items = 1, max_items = 100)]
    pub queues: Option<Vec<String>>,
    /// Tasks it runs at once, 1 to 10000 (default 16).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10000)]
    pub capacity: Option<u32>,
    /// Its host, for people (default: the caller's address).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 255, pattern = "^[^\\x00]*$")]
    pub host: Option<String>,
    /// Its process id, for people.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub pid: Option<i32>,
}

/// A registered worker and the lease it keeps.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerRegistered {
    /// Its id, in every later path.
    pub id: String,
    /// Renew at least this often (milliseconds).
    pub renew_ms: u64,
    /// A run may write only this long after the last renewal that
    /// succeeded (measured from when it was sent): past it the worker
    /// must stop every run and register again.
    pub lease_ms: u64,
    /// The longest `wait_ms` of a claim.
    pub max_wait_ms: u64,
}

#[utoipa::path(
    post,
    path = "/api/v1/workers",
    operation_id = "registerWorker",
    tag = "workers",
    summary = "Register a worker",
    description = "A worker process registers the kinds and queues it serves and its capacity. It is an executor from then on (`GET /api/v1/executors` shows it, with its `language` and `name`): it must renew its lease every `renew_ms`, or it is declared dead and its tasks are taken over. Its kinds are known to creates from now on.",
    request_body = RegisterWorker,
    responses(
        (status = 201, description = "Registered.", body = WorkerRegistered),
        (status = 400, description = "malformed_json: the body is not JSON.", body = ErrorBody),
        (status = 413, description = "body_too_large.", body = ErrorBody),
        (status = 422, description = "invalid_field: a field fails validation.", body = ErrorBody),
    )
)]
pub async fn register(
    state: web::Data<WebState>,
    req: actix_web::HttpRequest,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let b: RegisterWorker = parse_body(body.into_inner())?;
    if b.pid.is_some_and(|p| p < 0) {
        return Err(ApiError::invalid("pid", "pid must be 0 or more"));
    }
    let host = b.host.unwrap_or_else(|| {
        req.peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_else(|| "unknown".into())
    });
    let r = Registration {
        name: b.name,
        language: b.language,
        kinds: b.kinds,
        queues: b.queues.unwrap_or_else(|| vec!["default".into()]),
        capacity: b.capacity.unwrap_or(16),
        host,
        pid: b.pid.unwrap_or(0),
    };
    let id = state.workers.register(&r).await.map_err(err)?;
    let c = state.workers.config();
    Ok(HttpResponse::Created().json(WorkerRegistered {
        id,
        renew_ms: c.renew_every.as_millis() as u64,
        lease_ms: c.lease().as_millis() as u64,
        max_wait_ms: courier_actors::workers::MAX_POLL.as_millis() as u64,
    }))
}

#[utoipa::path(
    delete,
    path = "/api/v1/workers/{worker}",
    operation_id = "stopWorker",
    tag = "workers",
    summary = "Stop a worker",
    description = "A clean stop: the worker is `stopped`. Release the tasks it holds first; any it still holds go back to their queues at the next sweep.",
    params(WorkerId),
    responses(
        (status = 204, description = "Stopped."),
        (status = 404, description = "not_found: no worker has this id (never registered, or its row deleted by retention).", body = ErrorBody),
        (status = 410, description = "worker_gone: the worker was declared dead or stopped already.", body = ErrorBody),
    )
)]
pub async fn stop(
    state: web::Data<WebState>,
    worker: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.workers.stop(&worker).await.map_err(err)?;
    Ok(HttpResponse::NoContent().finish())
}

/// The body of claimTasks.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// At most this many tasks (its free slots; capped by its capacity).
    #[schema(minimum = 1, maximum = 10000)]
    pub max: u32,
    /// Wait up to this long for a task (0 to 30000; default 30000).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 30000)]
    pub wait_ms: Option<u64>,
}

/// A claimed task with what its replay needs.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClaimedTask {
    pub task: Task,
    /// The epoch of this claim: every write about the task names it.
    pub epoch: i64,
    /// Every journaled step (by name; a replay returns `output` of a
    /// `succeeded` one instead of running it).
    pub journal: Vec<Step>,
    /// The task's inbox, in `seq` order.
    pub events: Vec<TaskEvent>,
    /// Its sub-tasks that are final.
    pub children: Vec<Task>,
    /// When this attempt times out (its `timeout_ms`); null: no limit.
    pub deadline: Option<DateTime<Utc>>,
}

/// What claimTasks answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClaimAnswer {
    pub tasks: Vec<ClaimedTask>,
}

fn claimed(c: courier_actors::workers::ClaimedTask) -> ClaimedTask {
    ClaimedTask {
        epoch: c.task.epoch,
        task: c.task,
        journal: c.journal,
        events: c.events,
        children: c.children,
        deadline: c.deadline,
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/workers/{worker}/claim",
    operation_id = "claimTasks",
    tag = "workers",
    summary = "Claim tasks (long poll)",
    description = "Claims up to `max` pending tasks of the worker's kinds from its queues, in priority order within the queues' limits, as an executor claims. With none pending it waits up to `wait_ms`: a new task of one of its queues ends the wait at once. Each claimed task is `running`, held by this worker at `epoch`, with its journal, inbox and final sub-tasks for its replay.",
    request_body = ClaimRequest,
    params(WorkerId),
    responses(
        (status = 200, description = "Claimed tasks.", body = ClaimAnswer),
        (status = 204, description = "None came within `wait_ms`."),
        WorkerBadJson,
        (status = 404, description = "not_found: no worker has this id (never registered, or its row deleted by retention): register.", body = ErrorBody),
        (status = 410, description = "worker_gone: the worker was declared dead or stopped: register again.", body = ErrorBody),
        WorkerInvalid,
    )
)]
pub async fn claim(
    state: web::Data<WebState>,
    worker: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let b: ClaimRequest = parse_body(body.into_inner())?;
    if b.max == 0 || b.max > 10_000 {
        return Err(ApiError::invalid("max", "max must be 1 to 10000"));
    }
    let wait = b.wait_ms.unwrap_or(30_000);
    if wait > 30_000 {
        return Err(ApiError::invalid("wait_ms", "wait_ms must be 0 to 30000"));
    }
    let tasks = state
        .workers
        .claim(
            &worker,
            b.max,
            Duration::from_millis(wait),
            state.stopping(),
        )
        .await
        .map_err(err)?;
    if tasks.is_empty() {
        return Ok(HttpResponse::NoContent().finish());
    }
    Ok(HttpResponse::Ok().json(ClaimAnswer {
        tasks: tasks.into_iter().map(claimed).collect(),
    }))
}

/// A task the worker runs.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeldTask {
    pub task_id: Uuid,
    pub epoch: i64,
}

/// The body of renewLease.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// The tasks it is running now (at most 10000).
    #[serde(default)]
    #[schema(max_items = 10000)]
    pub running: Vec<HeldTask>,
}

/// What renewLease answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct RenewAnswer {
    /// Its tasks whose cancellation was requested: raise `Cancelled` in
    /// their runs, then finish them `cancelled`.
    pub cancel: Vec<Uuid>,
    /// Tasks it named that it no longer holds at that epoch: stop their
    /// runs, write nothing more for them.
    pub lost: Vec<Uuid>,
    /// As at registration.
    pub lease_ms: u64,
}

#[utoipa::path(
    post,
    path = "/api/v1/workers/{worker}/renew",
    operation_id = "renewLease",
    tag = "workers",
    summary = "Renew a worker's lease",
    description = "The worker's heartbeat: send it every `renew_ms`. The answer names its tasks to cancel and those it lost.",
    request_body = RenewRequest,
    params(WorkerId),
    responses(
        (status = 200, description = "Renewed.", body = RenewAnswer),
        WorkerBadJson,
        (status = 404, description = "not_found: no worker has this id (never registered, or its row deleted by retention): stop every run and register.", body = ErrorBody),
        (status = 410, description = "worker_gone: declared dead or stopped: stop every run and register again.", body = ErrorBody),
        WorkerInvalid,
    )
)]
pub async fn renew(
    state: web::Data<WebState>,
    worker: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let b: RenewRequest = parse_body(body.into_inner())?;
    if b.running.len() > 10_000 {
        return Err(ApiError::invalid("running", "at most 10000 tasks"));
    }
    let running: Vec<(Uuid, i64)> = b.running.iter().map(|h| (h.task_id, h.epoch)).collect();
    let r = state.workers.renew(&worker, &running).await.map_err(err)?;
    Ok(HttpResponse::Ok().json(RenewAnswer {
        cancel: r.cancel,
        lost: r.lost,
        lease_ms: state.workers.config().lease().as_millis() as u64,
    }))
}

fn task_path(p: &(String, String)) -> Result<Uuid, ApiError> {
    parse_id(&p.1, "task id")
}

/// A step's end.
#[derive(Debug, Deserialize, ToSchema, Clone, Copy, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Succeeded,
    Failed,
}

/// The body of recordStep.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepRequest {
    pub epoch: i64,
    /// 1 to 200 characters, unique within a run.
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00]*$")]
    pub name: String,
    pub state: StepState,
    /// A succeeded step's result: any JSON with no U+0000 in its strings
    /// (422 invalid_field).
    #[serde(default)]
    pub output: Value,
    /// A failed step's message.
    #[serde(default)]
    #[schema(pattern = "^[^\\x00]*$")]
    pub error: Option<String>,
    /// When the step began.
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
}

#[utoipa::path(
    post,
    path = "/api/v1/workers/{worker}/tasks/{task}/steps",
    operation_id = "recordStep",
    tag = "workers",
    summary = "Journal a step",
    description = "Journals a step of a task the worker holds (fenced by worker and epoch): a later run replays its result.",
    request_body = StepRequest,
    params(WorkerTask),
    responses(
        (status = 204, description = "Journaled."),
        WorkerBadRequest,
        WorkerNoTask,
        (status = 409, description = "fenced: the worker no longer holds the task at this epoch.", body = ErrorBody),
        WorkerNul,
    )
)]
pub async fn step(
    state: web::Data<WebState>,
    path: web::Path<(String, String)>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let task = task_path(&path)?;
    let b: StepRequest = parse_body(body.into_inner())?;
    let out = match b.state {
        StepState::Succeeded => Ok(b.output),
        StepState::Failed => Err(b.error.unwrap_or_default()),
    };
    state
        .workers
        .step(&path.0, task, b.epoch, &b.name, out, b.started_at)
        .await
        .map_err(err)?;
    Ok(HttpResponse::NoContent().finish())
}

/// The body of recordProgress.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressRequest {
    pub epoch: i64,
    /// Any JSON, shown with the task, with no U+0000 in its strings (keys
    /// included): one that holds it is refused, 422 invalid_field.
    pub value: Value,
}

#[utoipa::path(
    post,
    path = "/api/v1/workers/{worker}/tasks/{task}/progress",
    operation_id = "recordProgress",
    tag = "workers",
    summary = "Record progress",
    request_body = ProgressRequest,
    params(WorkerTask),
    responses(
        (status = 204, description = "Recorded."),
        WorkerBadRequest,
        WorkerNoTask,
        Fenced,
        (status = 422, description = "invalid_field: `value` holds U+0000 in a string (refused on both databases: PostgreSQL cannot store it).", body = ErrorBody),
    )
)]
pub async fn progress(
    state: web::Data<WebState>,
    path: web::Path<(String, String)>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let task = task_path(&path)?;
    let b: ProgressRequest = parse_body(body.into_inner())?;
    state
        .workers
        .progress(&path.0, task, b.epoch, &b.value)
        .await
        .map_err(err)?;
    Ok(HttpResponse::NoContent().finish())
}

/// The body of spawnTask: the sub-task, as a create's body (without
/// `wait_ms` and `idempotency_key`), plus the spawn's number.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpawnRequest {
    pub epoch: i64,
    /// The spawn's number in this run, from 0: the same number in a
    /// replay of the same attempt is the same sub-task.
    #[schema(minimum = 0)]
    pub seq: i32,
    #[schema(value_type = crate::schema::Kind)]
    pub kind: String,
    /// Any JSON with no U+0000 in its strings (422 invalid_field).
    #[serde(default)]
    pub input: Value,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64, pattern = "^[a-z0-9_.-]{1,64}$")]
    pub queue: Option<String>,
    #[serde(default)]
    #[schema(minimum = -100, maximum = 100)]
    pub priority: Option<i32>,
    #[serde(default)]
    pub run_at: Option<DateTime<Utc>>,
    #[serde(default)]
    #[schema(maximum = 31_622_400_000_u64)]
    pub delay_ms: Option<u64>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    #[schema(maximum = 31_622_400_000_u64)]
    pub backoff_ms: Option<u64>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 31_622_400_000_u64)]
    pub timeout_ms: Option<u64>,
}

#[utoipa::path(
    post,
    path = "/api/v1/workers/{worker}/tasks/{task}/spawn",
    operation_id = "spawnTask",
    tag = "workers",
    summary = "Spawn a sub-task",
    description = "Creates the `seq`-th sub-task of this attempt (idempotent by `seq`), of any kind, Rust or not; its end is reported to the parent. Answers the sub-task as it stands (already final in a replay, perhaps).",
    request_body = SpawnRequest,
    params(WorkerTask),
    responses(
        (status = 200, description = "The sub-task.", body = Task),
        WorkerBadRequest,
        WorkerNoTask,
        Fenced,
        (status = 422, description = "invalid_field (a bad queue option, U+0000 in `input`) or unknown_kind.", body = ErrorBody),
    )
)]
pub async fn spawn(
    state: web::Data<WebState>,
    path: web::Path<(String, String)>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let task = task_path(&path)?;
    let b: SpawnRequest = parse_body(body.into_inner())?;
    if b.seq < 0 {
        return Err(ApiError::invalid("seq", "seq must be 0 or more"));
    }
    let options = TaskOptions {
        queue: b.queue,
        priority: b.priority,
        run_at: b.run_at,
        delay_ms: b.delay_ms,
        max_attempts: b.max_attempts,
        backoff_ms: b.backoff_ms,
        timeout_ms: b.timeout_ms,
    };
    let child = state
        .workers
        .spawn(&path.0, task, b.epoch, b.seq, &b.kind, b.input, &options)
        .await
        .map_err(err)?;
    Ok(HttpResponse::Ok().json(child))
}

/// The body of suspendTask: what the run waits for, at least one of
/// `event`, `until` and a sub-task in `children` (the document says so
/// with an `anyOf`; a body with none is 422 invalid_field).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuspendBody {
    pub epoch: i64,
    /// An event of this name past `seen_seq` wakes it.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00]*$")]
    pub event: Option<String>,
    /// The highest inbox `seq` the run has seen.
    #[serde(default)]
    pub seen_seq: i64,
    /// Sub-tasks it waits for, all of them.
    #[serde(default)]
    #[schema(max_items = 10000)]
    pub children: Vec<Uuid>,
    /// A durable timer: woken at this time.
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
    /// The attempt's deadline, as the claim gave it.
    #[serde(default)]
    pub deadline: Option<DateTime<Utc>>,
}

/// What suspendTask answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct SuspendAnswer {
    /// `true`: the task waits, held by nobody; the worker's run is over.
    /// `false`: what it waits for came meanwhile: the worker still holds
    /// it and runs it again from the top with `events` and `children`.
    pub suspended: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<TaskEvent>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub children: Option<Vec<Task>>,
}

#[utoipa::path(
    post,
    path = "/api/v1/workers/{worker}/tasks/{task}/suspend",
    operation_id = "suspendTask",
    tag = "workers",
    summary = "Suspend a task",
    description = "The run waits for what has not come: the task is `suspended` in the store, held by nobody, until an event, its sub-tasks' ends, its timer, a cancel or its deadline wakes it; then any executor or worker of its queue claims it and replays it.",
    request_body = SuspendBody,
    params(WorkerTask),
    responses(
        (status = 200, description = "Suspended, or woken at once.", body = SuspendAnswer),
        WorkerBadRequest,
        WorkerNoTask,
        Fenced,
        (status = 422, description = "invalid_field: it names none of `event`, `until` and a sub-task in `children`, or a bad field.", body = ErrorBody),
    )
)]
pub async fn suspend(
    state: web::Data<WebState>,
    path: web::Path<(String, String)>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let task = task_path(&path)?;
    let b: SuspendBody = parse_body(body.into_inner())?;
    let req = SuspendRequest {
        event: b.event,
        seen_seq: b.seen_seq,
        children: b.children,
        until: b.until,
        deadline: b.deadline,
    };
    let out = state
        .workers
        .suspend(&path.0, task, b.epoch, req)
        .await
        .map_err(err)?;
    Ok(HttpResponse::Ok().json(match out {
        Suspended::Suspended(t) => SuspendAnswer {
            suspended: true,
            task: Some(*t),
            events: None,
            children: None,
        },
        Suspended::Woken { events, children } => SuspendAnswer {
            suspended: false,
            task: None,
            events: Some(events),
            children: Some(children),
        },
    }))
}

/// How a run ended.
#[derive(Debug, Deserialize, ToSchema, Clone, Copy, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum FinishOutcome {
    Succeeded,
    Failed,
    Cancelled,
}

/// A failed attempt's code.
#[derive(Debug, Deserialize, ToSchema, Clone, Copy, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum FailureCode {
    Error,
    Timeout,
}

/// The body of finishTask.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishRequest {
    pub epoch: i64,
    pub outcome: FinishOutcome,
    /// The output of a succeeded run: any JSON with no U+0000 in its
    /// strings (422 invalid_field).
    #[serde(default)]
    pub output: Value,
    /// The message of a failed run.
    #[serde(default)]
    #[schema(pattern = "^[^\\x00]*$")]
    pub error: Option<String>,
    /// A failed run's code (default `error`; `timeout` also cancels its
    /// sub-tasks).
    #[serde(default)]
    pub code: Option<FailureCode>,
}

#[utoipa::path(
    post,
    path = "/api/v1/workers/{worker}/tasks/{task}/finish",
    operation_id = "finishTask",
    tag = "workers",
    summary = "Finish a task's run",
    description = "Records the end of the run: its output, its cancellation, or a failed attempt, which is retried after its backoff while `max_attempts` allows (the task is then `scheduled`). Watchers and a waiting parent are told. Answers the task as it now stands.",
    request_body = FinishRequest,
    params(WorkerTask),
    responses(
        (status = 200, description = "Recorded.", body = Task),
        WorkerBadRequest,
        WorkerNoTask,
        Fenced,
        WorkerNul,
    )
)]
pub async fn finish(
    state: web::Data<WebState>,
    path: web::Path<(String, String)>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let task = task_path(&path)?;
    let b: FinishRequest = parse_body(body.into_inner())?;
    let end = match b.outcome {
        FinishOutcome::Succeeded => End::Output(b.output),
        FinishOutcome::Cancelled => End::Cancelled,
        FinishOutcome::Failed => End::Failed {
            code: match b.code {
                Some(FailureCode::Timeout) => "timeout".into(),
                _ => "error".into(),
            },
            message: b.error.unwrap_or_else(|| "failed".into()),
        },
    };
    let t = state
        .workers
        .finish(&path.0, task, b.epoch, end)
        .await
        .map_err(err)?;
    Ok(HttpResponse::Ok().json(t))
}

/// The body of releaseTask.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    pub epoch: i64,
}

#[utoipa::path(
    post,
    path = "/api/v1/workers/{worker}/tasks/{task}/release",
    operation_id = "releaseTask",
    tag = "workers",
    summary = "Hand a task back",
    description = "Puts a task the worker holds back to `pending`, unfinished (a stopping worker): the same attempt runs again on any executor or worker of its queue.",
    request_body = ReleaseRequest,
    params(WorkerTask),
    responses(
        (status = 204, description = "Handed back."),
        WorkerBadRequest,
        WorkerNoTask,
        Fenced,
        WorkerInvalid,
    )
)]
pub async fn release(
    state: web::Data<WebState>,
    path: web::Path<(String, String)>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let task = task_path(&path)?;
    let b: ReleaseRequest = parse_body(body.into_inner())?;
    state
        .workers
        .release(&path.0, task, b.epoch)
        .await
        .map_err(err)?;
    Ok(HttpResponse::NoContent().finish())
}

/// What JSON Schema can say of the workers' bodies and utoipa's derive
/// cannot, added to the generated document (see [`crate::openapi`]): the
/// names a registration's `kinds` and `queues` take; that the caller's
/// JSON (a progress `value`, an `output`, a spawn's `input`) holds no
/// U+0000 in its strings (`NulFreeJson`, see [`crate::openapi`]); and that
/// a suspension waits for something (an `anyOf`). So that every request
/// the document allows is one the server takes.
pub(crate) fn amend(doc: &mut Value) {
    use serde_json::json;
    let schemas = &mut doc["components"]["schemas"];
    for (body, field) in [
        ("ProgressRequest", "value"),
        ("StepRequest", "output"),
        ("FinishRequest", "output"),
        ("SpawnRequest", "input"),
    ] {
        crate::schema::nul_free(&mut schemas[body]["properties"][field]);
    }
    let register = &mut schemas["RegisterWorker"]["properties"];
    register["kinds"]["items"] = json!({
        "type": "string", "minLength": 1, "maxLength": 128,
        "pattern": "^[A-Za-z0-9._:-]{1,128}$",
    });
    register["queues"]["items"] = json!({
        "type": "string", "minLength": 1, "maxLength": 64,
        "pattern": "^[a-z0-9_.-]{1,64}$",
    });
    schemas["SuspendBody"]["anyOf"] = json!([
        {"required": ["event"], "properties": {"event": {"type": "string"}}},
        {"required": ["until"], "properties": {"until": {"type": "string"}}},
        {"required": ["children"], "properties": {"children": {"minItems": 1}}},
    ]);
}
