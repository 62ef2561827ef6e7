//! [`GatewayError`]: every failure a client can see, with its HTTP status.
//! The body is always JSON, `{"error": {"code": "...", "message": "..."}}`,
//! the same shape as the receipts sink's API; a payload that breaks its
//! schema adds `"violations": [{"pointer", "message"}]`.
//!
//! [`StartError`] is what keeps the gateway from starting.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::net::SocketAddr;

/// A failure answered to the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// 400: the request is malformed or its payload breaks its schema.
    #[error("{0}")]
    BadRequest(String),
    /// 400: the payload breaks its capability's schema; each violation at
    /// its JSON pointer.
    #[error("{message}")]
    InvalidPayload {
        /// The schema error, one line.
        message: String,
        /// Every violation.
        violations: Vec<broker_topology::Violation>,
    },
    /// 401: no key, or not a key we know.
    #[error("{0}")]
    Unauthenticated(String),
    /// 403: a key without the scope for this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such task, route, or no queue for a task type.
    #[error("{0}")]
    NotFound(String),
    /// 405: a route that exists, with another method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409: an idempotency key reused with another request.
    #[error("{0}")]
    Conflict(String),
    /// 413: the body is over the size limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 429: the broker blocks publishing (memory or disk alarm).
    #[error("{0}")]
    BrokerBlocked(String),
    /// 503: the broker (or store) cannot be reached; try again.
    #[error("{0}")]
    Unavailable(String),
    /// 500: logged, answered with a generic message.
    #[error("{0}")]
    Internal(String),
}

/// Seconds a client is told to wait before trying a 429 or 503 again.
const RETRY_AFTER_SECS: &str = "5";

impl GatewayError {
    /// The status and the machine-readable code.
    pub fn status(&self) -> (StatusCode, &'static str) {
        match self {
            GatewayError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            GatewayError::InvalidPayload { .. } => (StatusCode::BAD_REQUEST, "invalid_payload"),
            GatewayError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            GatewayError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            GatewayError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            GatewayError::MethodNotAllowed(_) => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            }
            GatewayError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            GatewayError::PayloadTooLarge(_) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            GatewayError::BrokerBlocked(_) => (StatusCode::TOO_MANY_REQUESTS, "broker_blocked"),
            GatewayError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            GatewayError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// A body that could not be read: too large (413), or cut off (400).
    pub(crate) fn from_body(rejection: BytesRejection, limit: usize) -> GatewayError {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            GatewayError::PayloadTooLarge(format!(
                "the request body is larger than the limit of {limit} bytes"
            ))
        } else {
            GatewayError::BadRequest(format!(
                "cannot read the request body: {}",
                rejection.body_text()
            ))
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let (status, code) = self.status();
        let message = match &self {
            GatewayError::Internal(m) => {
                tracing::error!(error = %m, "gateway request failed");
                "internal error; see the gateway's log".to_owned()
            }
            other => other.to_string(),
        };
        let mut body = json!({"error": {"code": code, "message": message}});
        if let GatewayError::InvalidPayload { violations, .. } = &self {
            body["error"]["violations"] = json!(
                violations
                    .iter()
                    .map(|v| json!({"pointer": v.pointer, "message": v.message}))
                    .collect::<Vec<_>>()
            );
        }
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECS),
                );
            }
            _ => {}
        }
        response
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The store could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] receipts_sink::SinkError),
    /// The address to listen on is taken or not ours.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The management API URL given cannot be used.
    #[error(transparent)]
    Management(#[from] broker_link::management::ManagementError),
    /// Serving failed.
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
}
