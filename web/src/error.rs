//! API errors: one enum, each variant one status and one stable `code`.
//! Database detail never reaches a client; it is logged instead.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use courier_actors::Error as CoreError;

use crate::schema::{ErrorBody, ErrorDetail};

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
    /// A field has a value the API refuses; `field` names it (a path such
    /// as `tasks[3].priority` inside a batch) when one field is at fault.
    #[error("{message}")]
    InvalidField {
        field: Option<String>,
        message: String,
    },
    /// No executor runs this kind; `field` names where it was given.
    #[error("unknown task kind {kind:?}: no executor runs it")]
    UnknownKind { kind: String, field: String },
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    /// The path exists, not with this method; `allow` lists the methods it
    /// has (the `Allow` header).
    #[error("{method} is not allowed here; allowed: {allow}")]
    MethodNotAllowed { method: String, allow: &'static str },
    #[error("{0}")]
    Conflict(String),
    /// A worker's write about a task it no longer holds at that epoch.
    #[error("{0}")]
    Fenced(String),
    /// A worker that is not alive (declared dead, stopped, unknown).
    #[error("{0}")]
    Gone(String),
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
            ApiError::InvalidField { .. } => "invalid_field",
            ApiError::UnknownKind { .. } => "unknown_kind",
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::Fenced(_) => "fenced",
            ApiError::Gone(_) => "worker_gone",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::Unavailable => "unavailable",
            ApiError::Internal => "internal",
        }
    }
}

impl ApiError {
    /// A field refused with `message`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidField {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// The field at fault, if one is.
    fn field_name(&self) -> Option<&str> {
        match self {
            ApiError::InvalidField { field, .. } => field.as_deref(),
            ApiError::UnknownKind { field, .. } => Some(field),
            _ => None,
        }
    }

    /// The same error, with its field found at `prefix` (an entry of a
    /// batch: `tasks[3]` + `priority` = `tasks[3].priority`).
    pub fn within(self, prefix: &str) -> Self {
        let join = |f: &str| {
            if f.is_empty() {
                prefix.to_string()
            } else {
                format!("{prefix}.{f}")
            }
        };
        match self {
            ApiError::InvalidField { field, message } => ApiError::InvalidField {
                field: Some(join(field.as_deref().unwrap_or(""))),
                message: format!("{prefix}: {message}"),
            },
            ApiError::UnknownKind { kind, field } => ApiError::UnknownKind {
                kind,
                field: join(&field),
            },
            other => other,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_) | ApiError::InvalidQuery(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidField { .. } | ApiError::UnknownKind { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Fenced(_) => StatusCode::CONFLICT,
            ApiError::Gone(_) => StatusCode::GONE,
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
        if let ApiError::MethodNotAllowed { allow, .. } = self {
            r.insert_header(("Allow", *allow));
        }
        r.json(ErrorBody {
            error: ErrorDetail {
                code: self.code().into(),
                message: self.to_string(),
                field: self.field_name().map(Into::into),
            },
        })
    }
}

impl From<courier_actors::StoreError> for ApiError {
    /// A model's check refused a value: as the runtime's error would be.
    fn from(e: courier_actors::StoreError) -> Self {
        ApiError::from(CoreError::from(e))
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::NotFound(id) => ApiError::NotFound(format!("task {id} not found")),
            CoreError::NoSchedule(name) => {
                ApiError::NotFound(format!("no schedule named {name:?}"))
            }
            CoreError::NoWorker(w) => ApiError::NotFound(format!("no worker {w}: register")),
            CoreError::Conflict(m) => ApiError::Conflict(m),
            CoreError::Invalid(m) => ApiError::InvalidField {
                field: None,
                message: m,
            },
            CoreError::InvalidField { field, message } => ApiError::InvalidField {
                field: Some(field),
                message,
            },
            CoreError::UnknownKind(kind) => ApiError::UnknownKind {
                kind,
                field: "kind".into(),
            },
            CoreError::InBatch { index, error } => {
                ApiError::from(*error).within(&format!("tasks[{index}]"))
            }
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
