//! The API's JSON shapes that are not the models' own: the envelopes of
//! lists, the error body, path parameters, and the named string schemas
//! (`Kind`, …) the document refers to. Handlers build their answers from
//! these types, so the document generated from them (see
//! [`crate::openapi`]) says what the server sends.

use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, PartialSchema, ToSchema};
use uuid::Uuid;

use chrono::{DateTime, Utc};

use courier_actors::{
    ExecutorInfo, HistoryEntry, QueueInfo, Schedule, Step, Task, TaskEvent, TaskState,
};

/// A task kind: 1 to 128 characters of `[A-Za-z0-9._:-]`. The served
/// document lists the kinds this deployment's executors run (`enum`, see
/// [`crate::openapi::document`]).
pub struct Kind;

impl PartialSchema for Kind {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(128))
            .pattern(Some("^[A-Za-z0-9._:-]{1,128}$"))
            .description(Some(
                "A task kind: 1 to 128 characters of [A-Za-z0-9._:-]; the kinds \
                 this deployment runs, when any executor is alive.",
            ))
            .examples(["thumbnail.render"])
            .into()
    }
}

impl ToSchema for Kind {}

/// One server-sent event of a watch stream: `event: state` with the task
/// (JSON) as its data, as often as it changes; then `event: end` with data
/// `{}`. (Comments, `: keep-alive` every 15 s when idle, are no events.)
pub struct WatchEvent;

impl PartialSchema for WatchEvent {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .property(
                "event",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["state", "end"])),
            )
            .property(
                "data",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("For `state`, a Task as JSON; for `end`, `{}`.")),
            )
            .required("event")
            .required("data")
            .description(Some(
                "One server-sent event: `state` with the task as it now stands \
                 (the first is the task as it stood when the watch began), then \
                 one `end` after the final state.",
            ))
            .into()
    }
}

impl ToSchema for WatchEvent {}

/// Every error: `{"error": {"code", "message", "field"?}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: malformed_json (400), invalid_query (400),
    /// unauthorized (401), not_found (404), method_not_allowed (405),
    /// conflict (409), body_too_large (413), invalid_field (422),
    /// unknown_kind (422), internal (500), unavailable (503).
    #[schema(examples("invalid_field", "not_found"))]
    pub code: String,
    /// For a person.
    pub message: String,
    /// The field at fault, when one is (`priority`, `tasks[3].priority`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// A task with its journaled steps (getTask).
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskWithSteps {
    #[serde(flatten)]
    pub task: Task,
    /// Its durable steps, in the order they ended.
    pub steps: Vec<Step>,
}

/// A page of tasks, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskPage {
    /// The page's tasks: every field but `input` and `output`, unless the
    /// request's `fields` asks for them (`fields=all`, or a list).
    #[schema(value_type = Vec<Task>)]
    pub tasks: Vec<Value>,
    /// Cursor for the next page (pass it as `after`); null on the last page.
    pub next: Option<Uuid>,
}

/// The tasks a batch created (or found by idempotency key), in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskBatch {
    pub tasks: Vec<Task>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    /// In inbox order.
    #[schema(value_type = Vec<TaskEvent>)]
    pub events: Vec<Value>,
    /// Cursor for the next page (pass it as `after`); null on the last page.
    pub next: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct History {
    /// The state changes, oldest first.
    #[schema(value_type = Vec<HistoryEntry>)]
    pub history: Vec<Value>,
    /// Cursor for the next page (pass it as `after`); null on the last page.
    pub next: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutorList {
    /// Newest first.
    #[schema(value_type = Vec<ExecutorInfo>)]
    pub executors: Vec<Value>,
    /// Cursor for the next page (pass it as `after`); null on the last page.
    pub next: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueList {
    /// Every queue that has a setting, an unfinished task, or an alive
    /// executor serving it.
    pub queues: Vec<QueueInfo>,
}

/// How many tasks are in each state (every state, zeros included).
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct StateCounts {
    pub scheduled: i64,
    pub pending: i64,
    pub running: i64,
    pub suspended: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
}

impl StateCounts {
    /// Adds `n` tasks in `state`.
    pub fn add(&mut self, state: TaskState, n: i64) {
        let slot = match state {
            TaskState::Scheduled => &mut self.scheduled,
            TaskState::Pending => &mut self.pending,
            TaskState::Running => &mut self.running,
            TaskState::Suspended => &mut self.suspended,
            TaskState::Succeeded => &mut self.succeeded,
            TaskState::Failed => &mut self.failed,
            TaskState::Cancelled => &mut self.cancelled,
        };
        *slot += n;
    }
}

/// One queue's tasks by state.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueCounts {
    pub queue: String,
    pub states: StateCounts,
}

/// Tasks that became final in one minute.
#[derive(Debug, Serialize, ToSchema)]
pub struct MinuteCounts {
    /// The minute's start (UTC).
    pub at: DateTime<Utc>,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
}

/// Deployment-wide counts: tasks kept in each state, by queue, and tasks
/// finished each minute.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    /// Every task the store keeps, by state (finished ones until retention
    /// deletes them).
    pub states: StateCounts,
    /// The same by queue, queues with at least one task, by name.
    pub queues: Vec<QueueCounts>,
    /// Tasks that became final in each of the last `minutes` minutes,
    /// oldest first; the last is the minute under way.
    pub minutes: Vec<MinuteCounts>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<Schedule>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KindList {
    /// The kinds known: those some alive executor runs, and those workers
    /// registered.
    #[schema(value_type = Vec<Kind>)]
    pub kinds: Vec<String>,
}

/// How this process stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` when the database does not answer (503).
    #[schema(pattern = "^(ok|degraded)$")]
    pub status: &'static str,
    /// `ok`, or the error the database check ran into.
    pub database: String,
    /// This process's bus: its node and, per transport, the peers it is
    /// connected to; or `{"error": …}` if the bus does not answer.
    #[schema(value_type = Object)]
    pub bus: serde_json::Value,
}

/// A task's id in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TaskId {
    /// The task's id (a UUID).
    #[allow(dead_code)]
    pub id: Uuid,
}

/// A queue's name in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct QueueName {
    /// 1 to 64 characters of `[a-z0-9_.-]`.
    #[param(pattern = "^[a-z0-9_.-]{1,64}$", min_length = 1, max_length = 64)]
    #[allow(dead_code)]
    pub name: String,
}

/// A schedule's name in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ScheduleName {
    /// 1 to 64 characters of `[a-z0-9_.-]` (as a queue name).
    #[param(pattern = "^[a-z0-9_.-]{1,64}$", min_length = 1, max_length = 64)]
    #[allow(dead_code)]
    pub name: String,
}

/// A body's field of the caller's JSON becomes a `NulFreeJson`, keeping
/// its description.
pub(crate) fn nul_free(field: &mut Value) {
    let description = field["description"].clone();
    *field = serde_json::json!({"$ref": "#/components/schemas/NulFreeJson"});
    if !description.is_null() {
        field["description"] = description;
    }
}
