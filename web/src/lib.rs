//! courier-web: the HTTP front end (actix-web).
//!
//! # Layout
//!
//! - this file: [`WebState`] (what every handler shares), [`WebConfig`], and
//!   [`WebState::configure`], which mounts the whole API, the dashboard and
//!   the metrics into any actix-web `App` — courier's own server or an
//!   embedding program's.
//! - The API v1 handlers, a private module per resource, each handler
//!   validating its input, calling the [`Client`] and mapping the outcome
//!   to a status:
//!   - `tasks`: create (one, a batch), read, list, sub-tasks, events,
//!     history, cancel, retry now, and the server-sent-events watch;
//!   - `queues`: queue settings and counts, and the deployment's counts
//!     (`/api/v1/stats`);
//!   - `schedules`: recurring tasks;
//!   - `executors`: the executors, and the kinds the deployment runs;
//!   - `meta`: `/healthz` and the dashboard (`/`);
//!   - [`workers`]: the worker protocol (`/api/v1/workers/…`).
//! - What the handlers share: `request` (a body read as a type, naming
//!   the field at fault; an id; a query number; the caller's trace),
//!   `page` (a page of rows, bounded in count and bytes, and its cursor)
//!   and `responses` (the error answers several operations give, declared
//!   once for the OpenAPI document).
//! - [`error`]: [`ApiError`], the one error type of the API, and its mapping
//!   to statuses and `{"error": {"code", "message"}}` bodies.
//! - [`auth`]: the optional bearer-token check.
//! - [`metrics`]: the Prometheus endpoint.
//! - [`schema`]: the JSON shapes of answers that are not models (list
//!   envelopes, the error body, path parameters), which handlers build.
//! - [`openapi`]: the OpenAPI document, generated (utoipa) from the
//!   handlers' annotations and the request, answer and model types.
//! - [`server`]: courier's own `HttpServer` (tracing, workers, binding).
//!
//! Web sessions are actors: a request that waits for a task (`wait_ms`) or
//! watches one registers a short-lived actor on the bus
//! (`web/<node>/<session>`) and the executor's messages are pushed to it.

pub mod auth;
pub mod error;
mod executors;
mod meta;
pub mod metrics;
pub mod openapi;
mod page;
mod queues;
mod request;
mod responses;
mod schedules;
pub mod schema;
pub mod server;
mod tasks;
pub mod workers;

use std::sync::Arc;
use std::time::Duration;

use actix_web::{error::JsonPayloadError, web, HttpRequest, HttpResponse};

use courier_actors::Client;

pub use error::ApiError;

/// Settings of the HTTP front end.
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// Largest request body accepted (413 above it).
    pub body_limit: usize,
    /// Largest `wait_ms` accepted (422 above it).
    pub max_wait: Duration,
    /// Bearer tokens that may call the API; empty means no authentication.
    pub tokens: Vec<String>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            body_limit: 1024 * 1024,
            max_wait: Duration::from_secs(60),
            tokens: Vec::new(),
        }
    }
}

/// What the handlers share. Build it once, outside `HttpServer::new`.
#[derive(Clone)]
pub struct WebState {
    pub client: Client,
    pub config: Arc<WebConfig>,
    /// The worker protocol's operations (`/api/v1/workers/…`).
    pub workers: courier_actors::workers::Workers,
    /// The accepted tokens' digests, computed once (`auth`).
    tokens: Arc<auth::Tokens>,
    /// Becomes `true` when the server begins to stop: waiting requests
    /// answer at once and watch streams end, so a graceful stop is quick.
    stopping: tokio::sync::watch::Receiver<bool>,
    stop: Arc<tokio::sync::watch::Sender<bool>>,
}

/// The dashboard, served from the binary.
pub const DASHBOARD: &str = include_str!("../assets/dashboard.html");

impl WebState {
    pub fn new(client: Client, config: WebConfig) -> Self {
        let (stop, stopping) = tokio::sync::watch::channel(false);
        WebState {
            workers: client.workers(Default::default()),
            client,
            tokens: Arc::new(auth::Tokens::new(&config.tokens)),
            config: Arc::new(config),
            stopping,
            stop: Arc::new(stop),
        }
    }

    /// The lease workers keep: the deployment's heartbeat interval and
    /// dead-after (the defaults, 2 s and 8 s, unless set here).
    pub fn with_worker_lease(mut self, lease: courier_actors::workers::WorkerConfig) -> Self {
        self.workers = self.client.workers(lease);
        self
    }

    /// Tells waiting requests and watch streams that the server is stopping.
    pub fn begin_shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Resolves once [`begin_shutdown`](Self::begin_shutdown) was called.
    pub fn stopping(&self) -> impl std::future::Future<Output = ()> + 'static {
        let mut rx = self.stopping.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// Mounts the API (`/api/v1/...`), `/healthz`, `/metrics` and the
    /// dashboard (`/`): `App::new().configure(|c| state.configure(c))`.
    pub fn configure(&self, cfg: &mut web::ServiceConfig) {
        let limit = self.config.body_limit;
        let json = web::JsonConfig::default()
            .limit(limit)
            .error_handler(move |e, _req| json_error(e, limit).into());
        let query = web::QueryConfig::default()
            .error_handler(|e, _req| ApiError::InvalidQuery(e.to_string()).into());
        let path = web::PathConfig::default()
            .error_handler(|e, _req| ApiError::InvalidQuery(e.to_string()).into());
        cfg.app_data(web::Data::new(self.clone()))
            .app_data(json)
            .app_data(query)
            .app_data(path)
            .service(
                web::scope("/api/v1")
                    // The worker protocol first, in a scope of its own, its
                    // hottest calls first: actix matches a request against
                    // each dynamic path in turn, a regex each (and again
                    // for the trace's route), and a worker's finish came
                    // after 18 of them: 12 % of the server's CPU for a
                    // Python no-op task went to that matching (perf, issue
                    // 26's figures).
                    .service(
                        web::scope("/workers")
                            .service(
                                resource("/{worker}/tasks/{task}/finish", "POST")
                                    .route(web::post().to(workers::finish)),
                            )
                            .service(
                                resource("/{worker}/claim", "POST")
                                    .route(web::post().to(workers::claim)),
                            )
                            .service(
                                resource("/{worker}/tasks/{task}/steps", "POST")
                                    .route(web::post().to(workers::step)),
                            )
                            .service(
                                resource("/{worker}/renew", "POST")
                                    .route(web::post().to(workers::renew)),
                            )
                            .service(
                                resource("/{worker}/tasks/{task}/spawn", "POST")
                                    .route(web::post().to(workers::spawn)),
                            )
                            .service(
                                resource("/{worker}/tasks/{task}/suspend", "POST")
                                    .route(web::post().to(workers::suspend)),
                            )
                            .service(
                                resource("/{worker}/tasks/{task}/progress", "POST")
                                    .route(web::post().to(workers::progress)),
                            )
                            .service(
                                resource("/{worker}/tasks/{task}/release", "POST")
                                    .route(web::post().to(workers::release)),
                            )
                            .service(
                                resource("/{worker}", "DELETE")
                                    .route(web::delete().to(workers::stop)),
                            )
                            .service(resource("", "POST").route(web::post().to(workers::register)))
                            .default_service(web::to(not_found)),
                    )
                    .wrap(actix_web::middleware::from_fn(auth::require_token))
                    .service(
                        resource("/tasks", "GET, POST")
                            .route(web::post().to(tasks::create_task))
                            .route(web::get().to(tasks::list_tasks)),
                    )
                    .service(
                        resource("/tasks/batch", "POST").route(web::post().to(tasks::create_batch)),
                    )
                    .service(resource("/tasks/{id}", "GET").route(web::get().to(tasks::get_task)))
                    .service(
                        resource("/tasks/{id}/children", "GET")
                            .route(web::get().to(tasks::children)),
                    )
                    .service(
                        resource("/tasks/{id}/events", "GET, POST")
                            .route(web::post().to(tasks::post_event))
                            .route(web::get().to(tasks::events)),
                    )
                    .service(
                        resource("/tasks/{id}/history", "GET").route(web::get().to(tasks::history)),
                    )
                    .service(
                        resource("/tasks/{id}/cancel", "POST").route(web::post().to(tasks::cancel)),
                    )
                    .service(
                        resource("/tasks/{id}/retry", "POST").route(web::post().to(tasks::retry)),
                    )
                    .service(
                        resource("/tasks/{id}/watch", "GET").route(web::get().to(tasks::watch)),
                    )
                    .service(
                        resource("/executors", "GET").route(web::get().to(executors::executors)),
                    )
                    .service(resource("/queues", "GET").route(web::get().to(queues::queues)))
                    .service(
                        resource("/queues/{name}", "GET, PUT")
                            .route(web::get().to(queues::get_queue))
                            .route(web::put().to(queues::put_queue)),
                    )
                    .service(
                        resource("/schedules", "GET").route(web::get().to(schedules::schedules)),
                    )
                    .service(
                        resource("/schedules/{name}", "GET, PUT, DELETE")
                            .route(web::get().to(schedules::get_schedule))
                            .route(web::put().to(schedules::put_schedule))
                            .route(web::delete().to(schedules::delete_schedule)),
                    )
                    .service(resource("/stats", "GET").route(web::get().to(queues::stats)))
                    .service(resource("/kinds", "GET").route(web::get().to(executors::kinds)))
                    .service(resource("/openapi.json", "GET").route(web::get().to(openapi::serve)))
                    .default_service(web::to(not_found)),
            )
            .service(resource("/", "GET").route(web::get().to(meta::dashboard)));
        self.configure_metrics(cfg);
    }

    /// Mounts `/metrics` and `/healthz` alone: what an executor without the
    /// web front end serves (`courier executor --metrics-listen`).
    pub fn configure_metrics(&self, cfg: &mut web::ServiceConfig) {
        cfg.app_data(web::Data::new(self.clone()))
            .service(resource("/healthz", "GET").route(web::get().to(meta::healthz)))
            .service(resource("/metrics", "GET").route(web::get().to(metrics::metrics)));
    }
}

/// Maps a JSON body failure to the API's statuses: over the limit → 413;
/// not JSON at all → 400; JSON of the wrong shape or type → 422.
fn json_error(e: JsonPayloadError, limit: usize) -> ApiError {
    match e {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::BodyTooLarge { limit }
        }
        JsonPayloadError::ContentType => {
            ApiError::MalformedJson("the body must be JSON (Content-Type: application/json)".into())
        }
        JsonPayloadError::Deserialize(e) if e.is_data() => ApiError::InvalidField {
            field: None,
            message: e.to_string(),
        },
        JsonPayloadError::Deserialize(e) => ApiError::MalformedJson(format!("malformed JSON: {e}")),
        other => ApiError::MalformedJson(other.to_string()),
    }
}

/// A resource at `path` whose methods are `allow` (its routes); any other
/// method is answered 405 with `Allow`, not 404: the path exists.
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move |req: HttpRequest| async move {
        Err::<HttpResponse, _>(ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            allow,
        })
    }))
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no such endpoint: {} {}",
        req.method(),
        req.path()
    )))
}
