//! Queues: their deployment-wide settings and counts, and the counts of
//! tasks by state, queue and minute (`/api/v1/queues…`, `/api/v1/stats`,
//! tag `queues`).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;

use courier_actors::{QueueInfo, QueueUpdate};

use crate::error::ApiError;
use crate::request::{parse_body, query_number};
#[allow(unused_imports)] // named in the `utoipa::path` annotations
use crate::responses::{BadJson, TooLarge};
#[allow(unused_imports)] // named in the `utoipa::path` annotations
use crate::schema::{
    ErrorBody, MinuteCounts, QueueCounts, QueueList, QueueName, StateCounts, Stats,
};
use crate::WebState;

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
        BadJson,
        TooLarge,
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
