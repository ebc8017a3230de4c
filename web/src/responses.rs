//! The error answers that several operations of the OpenAPI document
//! give in the same words, declared once: a path names the type
//! (`responses((status = 200, …), NoTask, BadQuery)`) instead of
//! repeating the tuple. Each is one status with an [`ErrorBody`], its
//! description as the document has always said it. An answer said by one
//! operation alone stays in that operation's annotation, where it is read.
//! (401, 500 and 503, which every operation may give, are added to the
//! generated document once, in `openapi`.)

// The types are named by annotations only: never built, their field
// never read.
#![allow(dead_code)]

use utoipa::IntoResponses;

use crate::schema::ErrorBody;

/// A task operation's path id or query is not valid.
#[derive(IntoResponses)]
#[response(
    status = 400,
    description = "invalid_query: a query parameter or the path id is invalid (e.g. not a uuid)."
)]
pub struct BadQuery(ErrorBody);

/// A body that is not JSON.
#[derive(IntoResponses)]
#[response(
    status = 400,
    description = "malformed_json: the body is not JSON, or not sent as Content-Type: application/json. (JSON of the wrong shape or types is 422 invalid_field.)"
)]
pub struct BadJson(ErrorBody);

/// A body over the limit.
#[derive(IntoResponses)]
#[response(
    status = 413,
    description = "body_too_large: the body is over the limit (1 MiB by default)."
)]
pub struct TooLarge(ErrorBody);

/// No task has the id in the path.
#[derive(IntoResponses)]
#[response(
    status = 404,
    description = "not_found: no such task (never created, or deleted by retention)."
)]
pub struct NoTask(ErrorBody);

/// No schedule has the name in the path.
#[derive(IntoResponses)]
#[response(status = 404, description = "not_found: no schedule of this name.")]
pub struct NoSchedule(ErrorBody);

/// A worker's request whose body is not JSON or whose path is not valid.
#[derive(IntoResponses)]
#[response(status = 400, description = "malformed_json or invalid_query.")]
pub struct WorkerBadRequest(ErrorBody);

/// A worker's body that is not JSON.
#[derive(IntoResponses)]
#[response(status = 400, description = "malformed_json.")]
pub struct WorkerBadJson(ErrorBody);

/// A worker's field that fails validation.
#[derive(IntoResponses)]
#[response(status = 422, description = "invalid_field.")]
pub struct WorkerInvalid(ErrorBody);

/// A worker's output or error text that holds U+0000.
#[derive(IntoResponses)]
#[response(
    status = 422,
    description = "invalid_field: `output` or `error` holds U+0000 (refused on both databases: PostgreSQL cannot store it)."
)]
pub struct WorkerNul(ErrorBody);

/// The task a worker names no longer exists.
#[derive(IntoResponses)]
#[response(
    status = 404,
    description = "not_found: no task has this id (never created, or deleted by retention): drop its run."
)]
pub struct WorkerNoTask(ErrorBody);

/// The worker no longer holds the task at this epoch.
#[derive(IntoResponses)]
#[response(status = 409, description = "fenced.")]
pub struct Fenced(ErrorBody);
