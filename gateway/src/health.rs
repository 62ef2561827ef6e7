//! `GET /healthz`: whether the gateway can take tasks. No key needed.

use crate::state::GatewayState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The gateway's health.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    /// `ok`, or `unavailable` when the store does not answer.
    store: &'static str,
    /// The broker link: `connected`, `blocked` (publishing refused by a
    /// memory or disk alarm: submissions get 429), `connecting`,
    /// `reconnecting` or `stopped`.
    broker: &'static str,
    /// Why the broker link is blocked or reconnecting.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// 200 when the store answers and the broker is connected (or connected
/// but blocking publishers, which a restart would not cure), else 503.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses(
        (status = 200, description = "Store and broker are fine", body = Health),
        (status = 503, description = "The store or the broker is not", body = Health),
    )
)]
pub(crate) async fn healthz(State(state): State<GatewayState>) -> Response {
    let store_ok = match state.store.ping().await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "health check: store unavailable");
            false
        }
    };
    let broker = state.publishers.state();
    let code = if store_ok && broker.is_healthy() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        store: if store_ok { "ok" } else { "unavailable" },
        broker: broker.as_str(),
        detail: broker.detail().map(str::to_owned),
    };
    (code, Json(body)).into_response()
}
