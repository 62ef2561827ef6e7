//! `GET /healthz`: whether the gateway can take tasks. No key needed.

use crate::state::GatewayState;
use axum::extract::State;
use axum::response::Response;

/// 200 when the store answers and the broker is connected (or connected
/// but blocking publishers, which a restart would not cure), else 503.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses(
        (status = 200, description = "Store and broker are fine", body = receipts_sink::api::Health),
        (status = 503, description = "The store or the broker is not", body = receipts_sink::api::Health),
    )
)]
pub(crate) async fn healthz(State(state): State<GatewayState>) -> Response {
    receipts_sink::api::health(&state.store, state.broker_state()).await
}
