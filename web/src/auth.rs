//! The optional bearer-token check on `/api/v1`.
//!
//! With tokens configured, every API call needs `Authorization: Bearer
//! <token>`. The check compares SHA-256 digests of the given token and of
//! each accepted one (`subtle`'s constant-time equality over 32 bytes), so
//! its time tells neither a token's content nor its length, and no token is
//! ever logged.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, Error};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::error::ApiError;
use crate::WebState;

pub(crate) async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let tokens = req
        .app_data::<web::Data<WebState>>()
        .map(|s| s.config.tokens.clone())
        .unwrap_or_default();
    if !tokens.is_empty() && !bears_token(req.headers(), &tokens) {
        return Err(ApiError::Unauthorized.into());
    }
    next.call(req).await
}

/// Whether `headers` carry `Authorization: Bearer <t>` with `t` one of
/// `tokens` (false when there are none).
pub(crate) fn bears_token(headers: &actix_web::http::header::HeaderMap, tokens: &[String]) -> bool {
    let given = headers
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    // Check every token, so the time does not tell which one matched.
    let given = Sha256::digest(given.as_bytes());
    let ok = tokens.iter().fold(Choice::from(0), |ok, t| {
        ok | given.ct_eq(&Sha256::digest(t.as_bytes()))
    });
    bool::from(ok)
}
