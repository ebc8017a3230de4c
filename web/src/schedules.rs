//! Schedules: recurring tasks, listed, read, put whole and deleted
//! (`/api/v1/schedules…`, tag `schedules`).

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use courier_actors::{CatchUp, Schedule, ScheduleSpec, TaskOptions};

use crate::error::ApiError;
use crate::request::parse_body;
#[allow(unused_imports)] // named in the `utoipa::path` annotations
use crate::responses::{BadJson, NoSchedule, TooLarge};
#[allow(unused_imports)] // named in the `utoipa::path` annotations
use crate::schema::{ErrorBody, Kind, ScheduleList, ScheduleName};
use crate::WebState;

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
        NoSchedule,
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
        BadJson,
        TooLarge,
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
        NoSchedule,
    )
)]
pub async fn delete_schedule(
    state: web::Data<WebState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.client.delete_schedule(&name).await?;
    Ok(HttpResponse::NoContent().finish())
}
