//! Executors: those known, a page at a time, and the kinds the
//! deployment runs (`/api/v1/executors`, `/api/v1/kinds`, tag
//! `executors`).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::ApiError;
use crate::page::{one_more, page, DEFAULT_PAGE, MAX_PAGE};
use crate::request::{given, query_number};
#[allow(unused_imports)] // named in the `utoipa::path` annotations
use crate::schema::{ErrorBody, ExecutorList, KindList};
use crate::WebState;

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
