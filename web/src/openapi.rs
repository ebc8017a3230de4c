//! The OpenAPI 3.1 document `GET /api/v1/openapi.json` serves, generated
//! by utoipa from the handlers' `#[utoipa::path]` annotations and the
//! types they read and answer with (the models of courier-actors, with its
//! `openapi` feature, and [`crate::schema`]). Nothing of it is kept by
//! hand but the operations' prose, so its paths, methods and schemas
//! cannot drift from the code; `tests/http.rs` checks that
//! every path it names is routed with its methods, and schemathesis runs
//! it against a real server in CI.
//!
//! What JSON Schema can say and utoipa's derive cannot is added to the
//! generated JSON here: the answers every API operation may give (401, 500,
//! 503), said once; that `run_at` and `delay_ms` are not both given (in a
//! task's body and in a batch's entry), and that `run_at` is before 2100
//! (a pattern on its year); a list's task rows (`TaskRow`: `Task` with
//! only `id` required, the rest as `fields` asks);
//! the cron expressions a schedule takes, as a pattern built from the
//! fields' ranges ([`cron_pattern`]); the workers' bodies' names, JSON
//! free of U+0000 and what a suspension waits for
//! ([`crate::workers::amend`]); and, at serve time, this server's
//! cap on `wait_ms` and the kinds this deployment runs, as the `enum` of
//! `Kind` (a request naming another kind is refused, 422 unknown_kind, so
//! the document says which are accepted).

use std::sync::OnceLock;

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::ApiError;
use crate::schedules::PutSchedule;
use crate::schema::{
    ErrorBody, ErrorDetail, EventList, ExecutorList, Health, History, Kind, KindList, MinuteCounts,
    QueueCounts, QueueList, ScheduleList, StateCounts, Stats, TaskBatch, TaskPage, TaskWithSteps,
};
use crate::tasks::{BatchEntry, CreateBatch, CreateTask, SendEvent};
use crate::WebState;
use courier_actors::{
    AttemptError, CatchUp, ExecutorInfo, ExecutorState, HistoryEntry, QueueInfo, QueueUpdate,
    Schedule, Step, Task, TaskEvent, TaskState,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "courier HTTP API",
        version = "1.0.0",
        description = include_str!("../api.md"),
    ),
    tags(
        (name = "tasks", description = "Create, inspect, watch and cancel tasks."),
        (name = "events", description = "Send events to a task's durable inbox."),
        (name = "executors", description = "The executors that run tasks, and the kinds they run."),
        (name = "queues", description = "Queues: their deployment-wide settings (concurrency, rate, pause) and how many of their tasks wait and run."),
        (name = "schedules", description = "Schedules: recurring tasks, created at the times a cron expression (UTC) names."),
        (name = "meta", description = "Health, metrics, this document and the dashboard."),
    ),
    paths(
        crate::tasks::create_task,
        crate::tasks::list_tasks,
        crate::tasks::create_batch,
        crate::tasks::get_task,
        crate::tasks::children,
        crate::tasks::post_event,
        crate::tasks::events,
        crate::tasks::history,
        crate::tasks::cancel,
        crate::tasks::retry,
        crate::tasks::watch,
        crate::executors::executors,
        crate::queues::queues,
        crate::queues::get_queue,
        crate::queues::put_queue,
        crate::schedules::schedules,
        crate::schedules::get_schedule,
        crate::schedules::put_schedule,
        crate::schedules::delete_schedule,
        crate::queues::stats,
        crate::executors::kinds,
        serve,
        crate::meta::healthz,
        crate::metrics::metrics,
        crate::meta::dashboard,
    ),
    components(schemas(
        Task, TaskState, AttemptError, Step, TaskWithSteps, TaskPage, TaskBatch, TaskEvent,
        EventList, HistoryEntry, History, ExecutorInfo, ExecutorState, ExecutorList, QueueInfo,
        QueueUpdate, QueueList, Schedule, CatchUp, ScheduleList, Kind, KindList, CreateTask,
        BatchEntry, CreateBatch, SendEvent, PutSchedule, Health, ErrorBody, ErrorDetail,
        StateCounts, QueueCounts, MinuteCounts, Stats,
    )),
    modifiers(&BearerAuth),
    security((), ("bearerAuth" = [])),
)]
pub struct ApiDoc;

/// The optional bearer token.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.description = Some(
            "Optional. When the server is configured with a token, every /api/v1 path needs \
             `Authorization: Bearer <token>` and answers 401 unauthorized without it. \
             /healthz, /metrics and / never need it."
                .into(),
        );
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearerAuth", SecurityScheme::Http(http));
    }
}

/// The generated document as JSON, with what the derive cannot say.
fn generated() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut api = ApiDoc::openapi();
        api.merge(<crate::workers::WorkersDoc as OpenApi>::openapi());
        let mut doc = serde_json::to_value(api).expect("the document serializes");
        // The caller's JSON holds no U+0000 (PostgreSQL cannot store it;
        // both databases refuse it, 422 invalid_field): a recursive schema.
        doc["components"]["schemas"]["NulFreeJson"] = nul_free_json();
        for (body, field) in [
            ("CreateTask", "input"),
            ("BatchEntry", "input"),
            ("PutSchedule", "input"),
            ("SendEvent", "payload"),
        ] {
            crate::schema::nul_free(&mut doc["components"]["schemas"][body]["properties"][field]);
        }
        crate::workers::amend(&mut doc);
        // The kinds a list answers are those known when it answers (a
        // worker may have registered one since the document was read): no
        // `enum` there.
        doc["components"]["schemas"]["KindList"]["properties"]["kinds"]["items"] = json!({
            "type": "string", "minLength": 1, "maxLength": 128,
            "pattern": "^[A-Za-z0-9._:-]{1,128}$",
        });
        // A batch's entry (spelled out in full, see `BatchEntry`) too.
        for body in ["CreateTask", "BatchEntry"] {
            doc["components"]["schemas"][body]["not"] = json!({
                "description": "run_at and delay_ms are not both given (422 invalid_field, field delay_ms).",
                "required": ["run_at", "delay_ms"],
            });
            // Before 2100 (`courier_actors::options::run_at_limit`).
            doc["components"]["schemas"][body]["properties"]["run_at"]["pattern"] =
                json!("^(?:[01][0-9]{3}|20[0-9]{2})-");
        }
        doc["components"]["schemas"]["PutSchedule"]["properties"]["cron"]["pattern"] =
            json!(cron_pattern());
        // `fields` names a task's fields: the pattern lists them.
        let name = crate::tasks::task_fields().join("|");
        let fields = format!("^(all|({name})(,({name}))*)?$");
        for path in ["/api/v1/tasks", "/api/v1/tasks/{id}/children"] {
            if let Some(params) = doc["paths"][path]["get"]["parameters"].as_array_mut() {
                for p in params.iter_mut().filter(|p| p["name"] == "fields") {
                    p["schema"]["pattern"] = json!(fields);
                }
            }
        }
        // A list's task rows hold the fields asked for (`fields`): `id`
        // always, by default all but `input` and `output`.
        let mut row = doc["components"]["schemas"]["Task"].clone();
        row["required"] = json!(["id"]);
        row["description"] = json!("A task in a list: the fields the request's `fields` asks for (by default every field but `input` and `output`), `id` always.");
        doc["components"]["schemas"]["TaskRow"] = row;
        doc["components"]["schemas"]["TaskPage"]["properties"]["tasks"]["items"] =
            json!({"$ref": "#/components/schemas/TaskRow"});
        // What every API operation may answer, said once: 401 (a token is
        // configured and missing), 500 and 503 (the database away).
        let error = json!({"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}});
        doc["components"]["responses"] = json!({
            "Unauthorized": {"description": "unauthorized: the server has a token and the request did not present it.", "content": error},
            "Internal": {"description": "internal: an unexpected server error.", "content": error},
            "Unavailable": {"description": "unavailable: the database is unreachable.", "content": error},
        });
        if let Some(paths) = doc["paths"].as_object_mut() {
            for (_, item) in paths.iter_mut().filter(|(p, _)| p.starts_with("/api/v1/")) {
                for op in item.as_object_mut().into_iter().flat_map(|o| o.values_mut()) {
                    let responses = &mut op["responses"];
                    for (status, name) in [("401", "Unauthorized"), ("500", "Internal"), ("503", "Unavailable")] {
                        if responses.get(status).is_none() {
                            responses[status] = json!({"$ref": format!("#/components/responses/{name}")});
                        }
                    }
                }
            }
        }
        // Paths that never need the token say so.
        for path in ["/healthz", "/metrics", "/"] {
            doc["paths"][path]["get"]["security"] = json!([]);
        }
        doc
    })
}

/// `NulFreeJson`: any JSON value with no U+0000 in its strings, object
/// keys included, said recursively. With no `type`: each keyword applies
/// to the values of its own type only (`pattern` to strings, `items` to
/// arrays, `propertyNames` and `additionalProperties` to objects), so
/// every JSON value passes but one holding U+0000. Not an `anyOf` of the
/// types: client generators (openapi-python-client) cannot take a union
/// that refers to itself and drop every operation that uses it.
fn nul_free_json() -> Value {
    let no_nul = "^[^\\x00]*$";
    json!({
        "description": "Any JSON value with no U+0000 in its strings, object keys included (the databases cannot store it: 422 invalid_field).",
        "pattern": no_nul,
        "items": {"$ref": "#/components/schemas/NulFreeJson"},
        "propertyNames": {"pattern": no_nul},
        "additionalProperties": {"$ref": "#/components/schemas/NulFreeJson"},
    })
}

/// `GET /api/v1/openapi.json`: the document, as this server and the
/// deployment stand now.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    operation_id = "getOpenApi",
    tag = "meta",
    summary = "This document",
    description = "The OpenAPI 3.1 description of this API.",
    responses(
        (status = 200, description = "The OpenAPI document.", body = Object),
    )
)]
pub async fn serve(state: web::Data<WebState>) -> Result<HttpResponse, ApiError> {
    let kinds = state.client.known_kinds().await?;
    let max_wait = state.config.max_wait.as_millis() as u64;
    Ok(HttpResponse::Ok().json(document(&kinds, max_wait)))
}

/// The document served: the generated one, with `Kind` enumerating
/// `kinds`, the kinds some alive executor runs (left open when none does).
pub fn document(kinds: &[String], max_wait_ms: u64) -> Value {
    let mut doc = generated().clone();
    doc["components"]["schemas"]["CreateTask"]["properties"]["wait_ms"]["maximum"] =
        json!(max_wait_ms);
    if let Some(first) = kinds.first() {
        let schemas = &mut doc["components"]["schemas"];
        schemas["Kind"]["enum"] = json!(kinds);
        schemas["Kind"]["examples"] = json!([first]);
        // The bodies' examples name kinds of their own: here they name one
        // this deployment runs, so that each example is a request it takes.
        for body in ["CreateTask", "BatchEntry", "PutSchedule"] {
            if let Some(examples) = schemas[body]["examples"].as_array_mut() {
                for e in examples {
                    e["kind"] = json!(first);
                }
            }
        }
    }
    doc
}

/// The numeric cron expressions a schedule takes: 5 fields (minute hour
/// day-of-month month day-of-week) or 6 with seconds first, each `*` (with
/// an optional `/step`) or a list of `N` and `N-M` (N ≤ M, with an optional
/// `/step`), within the field's range. (Names such as `MON` are taken too but not listed.) The
/// ordered ranges are spelled out digit by digit ([`at_least`]), since a
/// range that runs backwards (`5-3`) is refused.
pub fn cron_pattern() -> String {
    fn field(lo: u32, hi: u32) -> String {
        let value = between(lo, hi);
        let range = (lo..=hi)
            .map(|a| format!("{a}-(?:{})", between(a, hi)))
            .collect::<Vec<_>>()
            .join("|");
        let step = "(?:/[1-9][0-9]?)?";
        let element = format!("(?:(?:{range}){step}|{value})");
        format!("(?:\\*{step}|{element}(?:,{element})*)")
    }
    let (sec, min, hour, dom, month, dow) = (
        field(0, 59),
        field(0, 59),
        field(0, 23),
        field(1, 31),
        field(1, 12),
        field(0, 7),
    );
    format!("^(?:{sec} )?{min} {hour} {dom} {month} {dow}$")
}

/// A regex alternation of the whole numbers `lo..=hi` (no leading zeros),
/// by tens: `7..=59` is `[7-9]|[1-4][0-9]|5[0-9]`.
fn between(lo: u32, hi: u32) -> String {
    let mut parts = Vec::new();
    let mut n = lo;
    while n <= hi {
        let tens = n / 10;
        let top = (tens * 10 + 9).min(hi);
        let (a, b) = (n % 10, top % 10);
        let digit = if a == b {
            a.to_string()
        } else {
            format!("[{a}-{b}]")
        };
        parts.push(if tens == 0 {
            digit
        } else {
            format!("{tens}{digit}")
        });
        n = top + 1;
    }
    parts.join("|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cron_pattern_takes_ordered_ranges_only() {
        let re = regex_lite::Regex::new(&cron_pattern()).unwrap();
        for ok in [
            "0 3 * * *",
            "*/10 * * * * *",
            "0 9 * * 1-5",
            "0-0 0 1 1 0",
            "59 23 31 12 7",
            "0,15,30,45 8-18/2 * 1-6 *",
        ] {
            assert!(re.is_match(ok), "{ok}");
        }
        for bad in [
            "5-3 * * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 8",
            "* * * *",
            "*/0 * * * *",
            "10/20 * * * *",
            "* * * 1,* *",
        ] {
            assert!(!re.is_match(bad), "{bad}");
        }
    }
}
