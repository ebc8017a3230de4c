//! Meta: the health check (`/healthz`) and the dashboard (`/`). The
//! metrics (`/metrics`) are in `metrics`, the OpenAPI document in
//! `openapi`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::schema::Health;
use crate::{WebState, DASHBOARD};

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

#[utoipa::path(
    get,
    path = "/",
    operation_id = "dashboard",
    tag = "meta",
    summary = "Dashboard",
    description = "The live dashboard: an HTML page served from the binary (no build step).",
    responses((status = 200, description = "The dashboard.", content_type = "text/html", body = String))
)]
pub async fn dashboard() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; img-src 'self' data:"))
        .body(DASHBOARD)
}
