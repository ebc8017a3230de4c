//! API errors: one enum, each variant one status and one stable `code`.
//! Database detail never reaches a client; it is logged instead.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use courier_actors::Error as CoreError;

/// An error as the API reports it: `{"error": {"code", "message"}}`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The body is not JSON, or not an object of the expected shape.
    #[error("{0}")]
    MalformedJson(String),
    /// A path or query parameter is malformed.
    #[error("{0}")]
    InvalidQuery(String),
    /// A field has a value the API refuses.
    #[error("{0}")]
    InvalidField(String),
    /// No executor runs this kind.
    #[error("unknown task kind {0:?}: no executor runs it")]
    UnknownKind(String),
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("request body over the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// The database does not answer (it may come back).
    #[error("the database is unavailable; retry later")]
    Unavailable,
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::InvalidQuery(_) => "invalid_query",
            ApiError::InvalidField(_) => "invalid_field",
            ApiError::UnknownKind(_) => "unknown_kind",
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::Unavailable => "unavailable",
            ApiError::Internal => "internal",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_) | ApiError::InvalidQuery(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidField(_) | ApiError::UnknownKind(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status_code());
        if matches!(self, ApiError::Unauthorized) {
            r.insert_header(("WWW-Authenticate", "Bearer realm=\"courier\""));
        }
        r.json(json!({"error": {"code": self.code(), "message": self.to_string()}}))
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::NotFound(id) => ApiError::NotFound(format!("task {id} not found")),
            CoreError::Conflict(m) => ApiError::Conflict(m),
            CoreError::Invalid(m) => ApiError::InvalidField(m),
            CoreError::UnknownKind(k) => ApiError::UnknownKind(k),
            CoreError::Stopped => ApiError::Unavailable,
            e if e.is_transient() => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::Unavailable
            }
            e => {
                tracing::error!(error = %e, "request failed");
                ApiError::Internal
            }
        }
    }
}
