//! Reading a request: a JSON body as a type (the field at fault named in
//! any error, the API's numbers read as serde reads them), an id in the
//! path, a number in the query, the caller's trace. What every resource's
//! handlers share, the workers' included.

use actix_web::HttpRequest;
use serde_json::Value;
use uuid::Uuid;

use crate::error::ApiError;

/// Refuses a body that is not a JSON object (serde would read an array as
/// the fields in order).
pub(crate) fn object(body: &Value) -> Result<(), ApiError> {
    if body.is_object() {
        Ok(())
    } else {
        Err(ApiError::InvalidField {
            field: None,
            message: "the body must be a JSON object".into(),
        })
    }
}

/// Reads a JSON object body as `T`, naming the field at fault in any error
/// (422).
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(mut body: Value) -> Result<T, ApiError> {
    object(&body)?;
    numbers(&mut body);
    serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        let field = match path.as_str() {
            "." | "" => unknown_field(&message),
            _ => Some(path.clone()),
        };
        ApiError::InvalidField {
            message: match &field {
                Some(f) if !message.contains(f.as_str()) => format!("{f}: {message}"),
                _ => message,
            },
            field,
        }
    })
}

/// The API's own fields' numbers, read as serde reads numbers. JSON (and
/// JSON Schema) count `3.0` as the integer 3; serde's integers refuse it,
/// so an integral number written with a fraction becomes that integer
/// (schemathesis found `"concurrency": 3369.0` refused, and a worker's
/// `running[1].epoch` of `-12599.0`: nested fields too). Numbers are kept
/// as their text (serde_json's `arbitrary_precision`, see Cargo.toml), and a
/// float read as a double must be written as the double prints (`1e-3` is
/// `0.001`), so any other float is written so. The caller's data (a task's
/// `input`, an event's `payload`, a worker's `output` and progress `value`)
/// stays exactly as sent, at any depth.
fn numbers(body: &mut Value) {
    match body {
        Value::Object(fields) => {
            for (name, v) in fields.iter_mut() {
                if !matches!(name.as_str(), "input" | "payload" | "output" | "value") {
                    numbers(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(numbers),
        v => {
            let Some(f) = v.as_f64().filter(|_| v.is_f64()) else {
                return;
            };
            // Exactly integral, and within the range a double holds exactly.
            if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
                *v = if f < 0.0 {
                    Value::from(f as i64)
                } else {
                    Value::from(f as u64)
                };
            } else if f.is_finite() {
                *v = Value::from(f);
            }
        }
    }
}

/// The field serde names in "unknown field `x`, …" or "missing field `x`".
pub(crate) fn unknown_field(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

/// The query parameter `name`: a whole number from 1 to `max`, or
/// `default` when not given; 400 invalid_query naming it otherwise.
pub(crate) fn query_number(
    given: Option<&str>,
    name: &str,
    default: u32,
    max: u32,
) -> Result<u32, ApiError> {
    match given {
        None => Ok(default),
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::InvalidQuery(format!("{name} must be a whole number from 1 to {max}"))
            }),
    }
}

pub(crate) fn parse_id(s: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(s).map_err(|_| ApiError::InvalidQuery(format!("{what} {s:?} is not a UUID")))
}

/// A query parameter given with a value (`after=` is as good as none).
pub(crate) fn given(p: &Option<String>) -> Option<&str> {
    p.as_deref().filter(|s| !s.is_empty())
}

/// The trace id of an incoming W3C `traceparent` header, if valid: the task
/// then joins the caller's trace.
pub(crate) fn trace_of(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<courier_bus::TraceParent>().ok())
        .map(|t| t.trace_id_hex())
}
