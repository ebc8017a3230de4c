//! The optional bearer-token check on `/api/v1`.
//!
//! With tokens configured, every API call needs `Authorization: Bearer
//! <token>`; the comparison (`subtle`'s) takes the same time whatever the
//! token's content, and no token is ever logged.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, Error};
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
    if !tokens.is_empty() {
        let given = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        // Check every token, so the time does not tell which one matched.
        let ok = tokens.iter().fold(Choice::from(0), |ok, t| {
            ok | given.as_bytes().ct_eq(t.as_bytes())
        });
        if !bool::from(ok) {
            return Err(ApiError::Unauthorized.into());
        }
    }
    next.call(req).await
}
