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

/// The accepted tokens as SHA-256 digests, computed once when the state is
/// built rather than at every request.
pub(crate) struct Tokens(Vec<[u8; 32]>);

impl Tokens {
    pub(crate) fn new(tokens: &[String]) -> Tokens {
        Tokens(
            tokens
                .iter()
                .map(|t| Sha256::digest(t.as_bytes()).into())
                .collect(),
        )
    }

    /// Whether there are any: without, the API is open.
    pub(crate) fn any(&self) -> bool {
        !self.0.is_empty()
    }

    /// Whether `headers` carry `Authorization: Bearer <t>` with `t` one of
    /// these (false when there are none).
    pub(crate) fn borne_by(&self, headers: &actix_web::http::header::HeaderMap) -> bool {
        let given = headers
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        // Check every token, so the time does not tell which one matched.
        let ok = self
            .0
            .iter()
            .fold(Choice::from(0), |ok, t| ok | given.ct_eq(t));
        bool::from(ok)
    }
}

pub(crate) async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let tokens = req
        .app_data::<web::Data<WebState>>()
        .map(|s| s.tokens.clone());
    if let Some(tokens) = tokens.filter(|t| t.any()) {
        if !tokens.borne_by(req.headers()) {
            return Err(ApiError::Unauthorized.into());
        }
    }
    next.call(req).await
}
